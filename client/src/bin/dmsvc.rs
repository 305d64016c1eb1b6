//! `dmsvc`: the device management agent.

use std::path::PathBuf;
use std::process::ExitCode;

use dm_shared::cli;

const HELP: &str = "\
dmsvc: the device management agent

Usage: dmsvc [--device-root DIR]

Options:
  --device-root DIR   the device's root folder (default: /)
  -h, --help          print this help
  -V, --version       print the version
";

fn main() -> ExitCode {
    let mut device_root = PathBuf::from("/");
    let mut parser = lexopt::Parser::from_env();
    loop {
        use lexopt::Arg::{Long, Short};
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return cli::usage_error("dmsvc", e),
        };
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            Short('V') | Long("version") => {
                println!("{}", cli::version_line("dmsvc"));
                return ExitCode::SUCCESS;
            }
            Long("device-root") => match parser.value() {
                Ok(v) => device_root = PathBuf::from(v),
                Err(e) => return cli::usage_error("dmsvc", e),
            },
            other => return cli::usage_error("dmsvc", other.unexpected()),
        }
    }
    let _ = device_root;
    ExitCode::SUCCESS
}
