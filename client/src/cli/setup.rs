//! `dmclientsetup`: install, upgrade, reconfigure, uninstall or repair the device management
//! client from a deployment folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::setup::{self, Options};
use dm_shared::logging::{self, Program};
use dm_shared::{Context, Platform, cli};

const HELP: &str = "\
dmclientsetup: install, upgrade, reconfigure or uninstall the device management client

Usage: dmclientsetup [--source DIR] [--device-root DIR] [--settings FILE] [--repair]
                     [--remove-certificates] [--verbose]
       dmclientsetup --status [--device-root DIR]
       dmclientsetup --recover [--device-root DIR]

Reads ClientInstallAction from the folder's ClientSettings.ini (or DMCommonInstaller.ini) and
compares the installed client with the staged one: no client: install; older: upgrade; same:
reconfigure; newer: no action. None reconfigures, Uninstall removes the client (logs and
certificates stay). Every step is journaled: a kill or power loss is finished or rolled back by
the next run of setup or start of the agent.

Options:
  --source DIR            the deployment folder (default: the folder holding this program)
  --device-root DIR       the device's root folder (default: /)
  --settings FILE         the folder's settings file to use (default: ClientSettings.ini, else
                          DMCommonInstaller.ini)
  --repair                uninstall the damaged client and install the staged one
  --remove-certificates   on uninstall, also remove the publisher and device certificates
  --health-timeout SECS   how long a new agent gets to report healthy (default: 30)
  --status                print the installed client's state as JSON and change nothing
  --recover               only finish or roll back an interrupted operation
  --verbose               debug lines in the log
  -h, --help              print this help
  -V, --version           print the version

Logs: <device root>/var/log/dm/DMClientSetup<YYYYMMDD-HHMMSS>.log
";

struct Args {
    source: Option<PathBuf>,
    device_root: PathBuf,
    settings: Option<PathBuf>,
    repair: bool,
    remove_certificates: bool,
    health_timeout: u64,
    status: bool,
    recover: bool,
    verbose: bool,
}

fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Args, ExitCode> {
    use lexopt::Arg::Long;
    let defaults = Args {
        source: None,
        device_root: PathBuf::from("/"),
        settings: None,
        repair: false,
        remove_certificates: false,
        health_timeout: 30,
        status: false,
        recover: false,
        verbose: false,
    };
    let mut a = defaults;
    let mut p = cli::Parser::from_args("dmclientsetup", HELP, args);
    while let Some(arg) = p.next_arg()? {
        match arg {
            Long("source") => a.source = Some(p.value()?.into()),
            Long("device-root") => a.device_root = p.value()?.into(),
            Long("settings") => a.settings = Some(p.value()?.into()),
            Long("repair") => a.repair = true,
            Long("remove-certificates") => a.remove_certificates = true,
            Long("health-timeout") => a.health_timeout = p.parse_value()?,
            Long("status") => a.status = true,
            Long("recover") => a.recover = true,
            Long("verbose") => a.verbose = true,
            other => return Err(cli::usage_error("dmclientsetup", other.unexpected())),
        }
    }
    Ok(a)
}

/// Runs `dmclientsetup` with these arguments (its own name not among them).
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let ctx = Context::from_process(&args.device_root);
    if args.status {
        let state = crate::installed::inspect(&ctx);
        if let Err(e) = cli::out_json(&state) {
            eprintln!("dmclientsetup: {e}");
            return cli::exit(dm_shared::StatusCode::E_FAIL);
        }
        return if state.complete || state.installed.is_none() && state.interrupted.is_none() {
            ExitCode::SUCCESS
        } else {
            cli::exit(dm_shared::StatusCode::DM_E_CLIENT_DAMAGED)
        };
    }
    let handle =
        logging::init_device(Program::ClientSetup, &ctx.layout, ctx.clock.clone(), args.verbose);
    log::info!(
        "{} starting: device root {}",
        cli::version_line("dmclientsetup"),
        ctx.layout.root().display()
    );
    let timeout = Duration::from_secs(args.health_timeout);

    if args.recover {
        let result = dm_shared::fs::try_lock(&ctx.layout.setup_lock())
            .map_err(crate::Error::from)
            .and_then(|lock| match lock {
                Some(_l) => setup::recover(&ctx, setup::engine::Actor::Setup, timeout),
                None => Err(crate::Error::AlreadyRunning {
                    what: "dmclientsetup",
                    lock: ctx.layout.setup_lock(),
                }),
            });
        return match result {
            Ok(None) => {
                log::info!("no interrupted operation");
                ExitCode::SUCCESS
            }
            Ok(Some(ending)) => {
                log::info!("recovery: {ending:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                log::error!("{}: {e}", e.code());
                cli::exit(e.code())
            }
        };
    }

    let source = match args.source {
        Some(s) => s,
        None => match std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)) {
            Some(d) => d,
            None => {
                return cli::usage_error(
                    "dmclientsetup",
                    "cannot tell which folder this program is in; pass --source DIR",
                );
            }
        },
    };
    let opts = Options {
        source,
        settings: args.settings,
        repair: args.repair,
        remove_certificates: args.remove_certificates,
        platform: Platform::current(),
        health_timeout: timeout,
    };
    match setup::run(&ctx, &opts, handle.path.as_deref()) {
        Ok(outcome) => {
            log::info!("DMClientSetup finished: {} ({})", outcome.message, outcome.code);
            log::logger().flush();
            cli::exit(outcome.code)
        }
        Err(e) => {
            let code = e.code();
            log::error!("{code}: {e}");
            log::error!("DMClientSetup failed; exit code {}", code.exit_code());
            log::logger().flush();
            cli::exit(code)
        }
    }
}
