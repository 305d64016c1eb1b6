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

fn parse_args() -> Result<PathBuf, ExitCode> {
    use lexopt::Arg::Long;
    let mut device_root = PathBuf::from("/");
    let mut p = cli::Parser::from_env("dmcertenroll", HELP);
    while let Some(arg) = p.next_arg()? {
        match arg {
            Long("device-root") => device_root = p.value()?.into(),
            other => return Err(cli::usage_error("dmcertenroll", other.unexpected())),
        }
    }
    Ok(device_root)
}

fn main() -> ExitCode {
    let device_root = match parse_args() {
        Ok(root) => root,
        Err(code) => return code,
    };
    let ctx = Context::from_process(&device_root);
    logging::init_device(Program::CertEnroll, &ctx.layout, ctx.clock.clone(), false);
    let code = StatusCode::DM_E_NOT_AVAILABLE;
    log::error!(
        "{code}: certificate enrollment (SCEP) is not available in this build; no certificate was enrolled"
    );
    log::logger().flush();
    cli::exit(code)
}
