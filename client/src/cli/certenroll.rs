//! `dmcertenroll`: enroll and renew the device's client authentication certificate (SCEP).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::enroll::{self, Options, Outcome};
use dm_shared::logging::{self, Program};
use dm_shared::{Context, StatusCode, cli};

const HELP: &str = "\
dmcertenroll: enroll the device's client authentication certificate

Usage: dmcertenroll [--device-root DIR] [--renew] [--force]

Enrolls a client authentication certificate for native mode with SCEP (RFC 8894), from the
[Certificates] settings of the installed client (ScepUrl, ScepChallenge, CertificateSubject,
KeySize, ScepCaThumbprint, ScepPendingTimeout). The key is made on the device and kept in its
my store. Without options, a device that has a valid certificate keeps it. Setup runs it
when CertEnrollAction=Enroll; the agent runs it with --renew before the certificate expires.

Options:
  --device-root DIR   the device's root folder (default: /)
  --renew             renew the certificate if it is within RenewDaysBeforeExpiry of expiry
  --force             enroll (or renew) whatever the current certificate's state
  -h, --help          print this help
  -V, --version       print the version

Logs: <device root>/var/log/dm/DMCertEnroll<YYYYMMDD-HHMMSS>.log
";

fn parse_args(args: Vec<std::ffi::OsString>) -> Result<(PathBuf, Options), ExitCode> {
    use lexopt::Arg::Long;
    let mut device_root = PathBuf::from("/");
    let mut opts = Options::default();
    let mut p = cli::Parser::from_args("dmcertenroll", HELP, args);
    while let Some(arg) = p.next_arg()? {
        match arg {
            Long("device-root") => device_root = p.value()?.into(),
            Long("renew") => opts.renew = true,
            Long("force") => opts.force = true,
            other => return Err(cli::usage_error("dmcertenroll", other.unexpected())),
        }
    }
    Ok((device_root, opts))
}

/// Runs `dmcertenroll` with these arguments (its own name not among them).
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let (device_root, opts) = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let ctx = Context::from_process(&device_root);
    logging::init_device(Program::CertEnroll, &ctx.layout, ctx.clock.clone(), false);
    log::info!(
        "{} starting: device root {}",
        cli::version_line("dmcertenroll"),
        ctx.layout.root().display()
    );
    let code = match enroll::run(&ctx, &opts) {
        Ok(Outcome::Enrolled { thumbprint, subject, not_after, renewed }) => {
            let what = if renewed { "renewed" } else { "enrolled" };
            let text =
                format!("{what} {subject} (thumbprint {thumbprint}), valid until {not_after}");
            enroll::write_record(&ctx, what, StatusCode::S_OK, &text);
            cli::out(&format!("{text}\n"));
            StatusCode::S_OK
        }
        Ok(Outcome::Current { thumbprint, not_after }) => {
            let text = format!("the certificate {thumbprint} is valid until {not_after}");
            enroll::write_record(&ctx, "current", StatusCode::S_OK, &text);
            cli::out(&format!("{text}\n"));
            StatusCode::S_OK
        }
        Err(e) => {
            let code = e.code();
            log::error!("{code}: {e}");
            enroll::write_record(&ctx, "failed", code, &e.to_string());
            code
        }
    };
    log::logger().flush();
    if code == StatusCode::S_OK { ExitCode::SUCCESS } else { cli::exit(code) }
}
