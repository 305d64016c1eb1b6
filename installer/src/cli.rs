//! `dminstaller`'s command line: run from a client deployment folder on the device, as the
//! client's one program started by that name (or as `dm installer`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Options;
use dm_shared::logging::{self, Program};
use dm_shared::{Context, Platform, cli};

const HELP: &str = "\
dminstaller: install the device management client from a deployment folder

Usage: dminstaller [--source DIR] [--device-root DIR] [--verbose]

Checks that the deployment folder is signed by a publisher the device trusts, installs the
publisher's certificate into the device's privileged and software-publisher stores, then runs
the folder's dmclientsetup for this device's platform and exits with its exit code.
A locked device refuses the certificate: Access Denied (0x80070005), exit code 5.

Options:
  --source DIR        the deployment folder (default: the folder holding this program)
  --device-root DIR   the device's root folder (default: /)
  --verbose           debug lines in the log
  -h, --help          print this help
  -V, --version       print the version

Logs: <device root>/var/log/dm/DMInstaller<YYYYMMDD-HHMMSS>.log
";

#[derive(Default)]
struct Args {
    source: Option<PathBuf>,
    device_root: Option<PathBuf>,
    verbose: bool,
}

fn parse_args(args: Vec<OsString>) -> Result<Args, ExitCode> {
    use lexopt::Arg::Long;
    let mut a = Args::default();
    let mut p = cli::Parser::from_args("dminstaller", HELP, args);
    while let Some(arg) = p.next_arg()? {
        match arg {
            Long("source") => a.source = Some(p.value()?.into()),
            Long("device-root") => a.device_root = Some(p.value()?.into()),
            Long("verbose") => a.verbose = true,
            other => return Err(cli::usage_error("dminstaller", other.unexpected())),
        }
    }
    Ok(a)
}

/// Runs `dminstaller` with these arguments (its own name not among them).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let source = match args.source {
        Some(s) => s,
        // Run from a memory card: the folder holding this program is the deployment folder.
        None => match std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)) {
            Some(dir) => dir,
            None => {
                return cli::usage_error(
                    "dminstaller",
                    "cannot tell which folder this program is in; pass --source DIR",
                );
            }
        },
    };
    let ctx = Context::from_process(args.device_root.unwrap_or_else(|| "/".into()));
    let handle =
        logging::init_device(Program::Installer, &ctx.layout, ctx.clock.clone(), args.verbose);
    log::info!(
        "{} starting: deployment folder {}, device root {}",
        cli::version_line("dminstaller"),
        source.display(),
        ctx.layout.root().display()
    );
    if let Some(p) = &handle.path {
        log::info!("log file: {}", p.display());
    }
    let opts = Options { source, platform: Platform::current() };
    match crate::run(&ctx, &opts) {
        Ok(code) => {
            log::info!("DMInstaller finished; setup exit code {code}");
            log::logger().flush();
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            let code = e.code();
            log::error!("{code}: {e}");
            log::error!("DMInstaller failed; exit code {}", code.exit_code());
            log::logger().flush();
            cli::exit(code)
        }
    }
}
