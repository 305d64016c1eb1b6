//! `dmsvc`: the device management agent.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::agent::{self, Options};
use dm_shared::logging::{self, Program};
use dm_shared::{Context, StatusCode, cli};

const HELP: &str = "\
dmsvc: the device management agent

Usage: dmsvc [--device-root DIR] [--verbose] [--once]
       dmsvc available [--device-root DIR]
       dmsvc run ACTION [--device-root DIR] [--no-wait]
       dmsvc scan-updates [--device-root DIR] [--catalog FILE] [--arch ARCH]

Runs as a service (systemd's dmsvc.service, or started by dmclientsetup): one instance per
device. It polls the management point, runs advertised programs and reports their status.
At start it finishes or rolls back a setup operation that a crash interrupted. SIGTERM
finishes the current step and exits.

  available       list the programs advertised as available, waiting for the user
  run ACTION      ask the running agent to run an available program now, and wait for the
                  result (exit 0 on success, 48 when the program failed)
  scan-updates    scan dpkg's status database against the software update catalog the agent
                  fetched last (or FILE), and print each update that applies

Options:
  --device-root DIR   the device's root folder (default: /)
  --once              start, recover, report health, and exit
  --no-wait           with run: ask and return at once
  --catalog FILE      with scan-updates: this catalog instead of the agent's
  --arch ARCH         with scan-updates: this dpkg architecture instead of the device's
  --verbose           debug lines in the log
  -h, --help          print this help
  -V, --version       print the version

Logs: <device root>/var/log/dm/DMSvc<YYYYMMDD-HHMMSS>.log
";

fn available(ctx: &Context) -> ExitCode {
    use crate::agent::state::{ActionRecord, Stage};
    let list: Vec<ActionRecord> =
        ActionRecord::all(ctx).into_iter().filter(|r| r.stage == Stage::Available).collect();
    if list.is_empty() {
        eprintln!("no programs are waiting to be run");
    }
    for r in list {
        dm_shared::cli::out(&format!(
            "{}\t{} {}\t{}\t{}\n",
            r.id, r.package, r.version, r.program, r.command
        ));
    }
    ExitCode::SUCCESS
}

fn run(ctx: &Context, id: u64, no_wait: bool) -> ExitCode {
    use crate::agent::state::{self, ActionRecord, Stage};
    match ActionRecord::load(ctx, id) {
        Some(r) if matches!(r.stage, Stage::Available | Stage::Downloaded) => {}
        Some(r) => {
            return cli::usage_error(
                "dmsvc",
                format!("action {id} is {:?}, not waiting to run", r.stage),
            );
        }
        None => {
            return cli::usage_error(
                "dmsvc",
                format!("no action {id} on this device (see dmsvc available)"),
            );
        }
    }
    if let Err(e) = state::request_run(ctx, id) {
        eprintln!("dmsvc: {e}");
        return cli::exit(e.code());
    }
    eprintln!("dmsvc: asked the agent to run action {id}");
    if no_wait {
        return ExitCode::SUCCESS;
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        if let Some(r) =
            ActionRecord::load(ctx, id).filter(|r| matches!(r.stage, Stage::Done | Stage::Canceled))
        {
            dm_shared::cli::out(&format!("{}\n", r.result.clone().unwrap_or_default()));
            return if r.success == Some(true) {
                ExitCode::SUCCESS
            } else {
                cli::exit(StatusCode::DM_E_PROGRAM_FAILED)
            };
        }
    }
}

/// `dmsvc scan-updates`: the scan the agent makes, printed (docs/software-updates.md).
fn scan_updates(ctx: &Context, catalog: Option<PathBuf>, arch: Option<String>) -> ExitCode {
    let catalog = catalog.unwrap_or_else(|| agent::updates::catalog_file(ctx));
    let arch = arch.unwrap_or_else(|| agent::updates::architecture(ctx));
    let started = std::time::Instant::now();
    match agent::updates::scan_file(ctx, &catalog, &arch) {
        Ok(scan) => {
            let mut out = format!(
                "catalog {} ({arch}): {} entries scanned in {} ms\n",
                scan.catalog_version,
                scan.entries,
                started.elapsed().as_millis()
            );
            for r in scan.rows.values() {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    r.id,
                    r.state.as_str(),
                    r.installed.as_deref().unwrap_or("-"),
                    r.reason.as_deref().unwrap_or("")
                ));
            }
            dm_shared::cli::out(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dmsvc: {e}");
            cli::exit(e.code())
        }
    }
}

#[derive(Default)]
struct Args {
    device_root: Option<PathBuf>,
    verbose: bool,
    once: bool,
    no_wait: bool,
    command: Option<String>,
    action: Option<u64>,
    catalog: Option<PathBuf>,
    arch: Option<String>,
}

fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Args, ExitCode> {
    use lexopt::Arg::{Long, Value};
    let mut a = Args::default();
    let mut p = cli::Parser::from_args("dmsvc", HELP, args);
    while let Some(arg) = p.next_arg()? {
        match arg {
            Long("device-root") => a.device_root = Some(p.value()?.into()),
            Long("verbose") => a.verbose = true,
            Long("once") => a.once = true,
            Long("no-wait") => a.no_wait = true,
            Long("catalog") => a.catalog = Some(p.value()?.into()),
            Long("arch") => a.arch = Some(p.value()?.to_string_lossy().into_owned()),
            Value(v) if a.command.is_none() => a.command = Some(v.to_string_lossy().into_owned()),
            Value(v) if a.command.as_deref() == Some("run") && a.action.is_none() => {
                match v.to_string_lossy().parse() {
                    Ok(id) => a.action = Some(id),
                    Err(_) => {
                        return Err(cli::usage_error(
                            "dmsvc",
                            format!("run: {v:?} is not an action id"),
                        ));
                    }
                }
            }
            other => return Err(cli::usage_error("dmsvc", other.unexpected())),
        }
    }
    Ok(a)
}

/// Runs `dmsvc` with these arguments (its own name not among them).
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    // The program launcher (agent::contain): no parsing, no logging, only exec.
    if args.first().is_some_and(|a| a == agent::contain::LAUNCH_ARG) {
        let e = agent::contain::launch(&args[1..]);
        eprintln!("dmsvc: cannot start the program: {e}");
        return ExitCode::from(127);
    }
    let Args { device_root, verbose, once, no_wait, command, action, catalog, arch } =
        match parse_args(args) {
            Ok(a) => a,
            Err(code) => return code,
        };
    let device_root = device_root.unwrap_or_else(|| PathBuf::from("/"));
    let ctx = Context::from_process(&device_root);
    match (command.as_deref(), action) {
        (None, _) => {}
        (Some("available"), _) => return available(&ctx),
        (Some("scan-updates"), _) => return scan_updates(&ctx, catalog, arch),
        (Some("run"), Some(id)) => return run(&ctx, id, no_wait),
        (Some("run"), None) => {
            return cli::usage_error("dmsvc", "run needs an action id (see dmsvc available)");
        }
        (Some(other), _) => return cli::usage_error("dmsvc", format!("unknown command {other:?}")),
    }
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
