//! `dmcertenroll`: enroll the device's client authentication certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use dm_shared::logging::{self, Program};
use dm_shared::{Context, StatusCode, cli};

const HELP: &str = "\
dmcertenroll: enroll the device's client authentication certificate

Usage: dmcertenroll [--device-root DIR]

Certificate enrollment (SCEP) is not part of this build: the program says so in its log
(DMCertEnroll<date-time>.log) and exits with status 0x80040205 (exit code 43).

Options:
  --device-root DIR   the device's root folder (default: /)
  -h, --help          print this help
  -V, --version       print the version
";

fn main() -> ExitCode {
    use lexopt::Arg::{Long, Short};
    let mut device_root = PathBuf::from("/");
    let mut parser = lexopt::Parser::from_env();
    loop {
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return cli::usage_error("dmcertenroll", e),
        };
        match arg {
            Short('h') | Long("help") => {
                dm_shared::cli::out(HELP);
                return ExitCode::SUCCESS;
            }
            Short('V') | Long("version") => {
                dm_shared::cli::out(&format!("{}\n", cli::version_line("dmcertenroll")));
                return ExitCode::SUCCESS;
            }
            Long("device-root") => match parser.value() {
                Ok(v) => device_root = PathBuf::from(v),
                Err(e) => return cli::usage_error("dmcertenroll", e),
            },
            other => return cli::usage_error("dmcertenroll", other.unexpected()),
        }
    }
    let ctx = Context::from_process(&device_root);
    logging::init_device(Program::CertEnroll, &ctx.layout, ctx.clock.clone(), false);
    let code = StatusCode::DM_E_NOT_AVAILABLE;
    log::error!(
        "{code}: certificate enrollment (SCEP) is not available in this build; no certificate was enrolled"
    );
    log::logger().flush();
    cli::exit(code)
}
