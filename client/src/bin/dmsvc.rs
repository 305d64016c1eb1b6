//! `dmsvc`: the device management agent.

use std::path::PathBuf;
use std::process::ExitCode;

use dm_client::agent::{self, Options};
use dm_shared::logging::{self, Program};
use dm_shared::{Context, cli};

const HELP: &str = "\
dmsvc: the device management agent

Usage: dmsvc [--device-root DIR] [--verbose] [--once]

Runs as a service (systemd's dmsvc.service, or started by dmclientsetup): one instance per
device. At start it finishes or rolls back a setup operation that a crash interrupted.
SIGTERM finishes the current step and exits.

Options:
  --device-root DIR   the device's root folder (default: /)
  --once              start, recover, report health, and exit
  --verbose           debug lines in the log
  -h, --help          print this help
  -V, --version       print the version

Logs: <device root>/var/log/dm/DMSvc<YYYYMMDD-HHMMSS>.log
";

fn main() -> ExitCode {
    use lexopt::Arg::{Long, Short};
    let mut device_root = PathBuf::from("/");
    let mut verbose = false;
    let mut once = false;
    let mut parser = lexopt::Parser::from_env();
    loop {
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
            Long("verbose") => verbose = true,
            Long("once") => once = true,
            other => return cli::usage_error("dmsvc", other.unexpected()),
        }
    }
    let ctx = Context::from_process(&device_root);
    logging::init_device(Program::Agent, &ctx.layout, ctx.clock.clone(), verbose);
    log::info!(
        "{} starting: device root {}",
        cli::version_line("dmsvc"),
        ctx.layout.root().display()
    );
    match agent::run(&ctx, &Options { once }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.code();
            log::error!("{code}: {e}");
            log::logger().flush();
            cli::exit(code)
        }
    }
}
