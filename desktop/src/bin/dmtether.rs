//! `dmtether`: install the device management client on devices tethered to this desktop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dm_desktop::{Error, keys, scan};
use dm_shared::logging::{self, Program};
use dm_shared::tether::{SshTarget, TetherRecord};
use dm_shared::{Context, Settings, StatusCode, cli};

const HELP: &str = "\
dmtether: install the device management client on tethered devices

Usage: dmtether COMMAND [--device-root DIR] [options]

Commands:
  scan                      look at every device of [Tether] Devices once: copy the staged
                            client deployment to each one that needs it and run its installer
  watch                     scan every [Tether] ScanInterval until stopped
  install --device URL [--bundle FILE]
                            install on one device now (the staged deployment, or FILE)
  devices [--json]          list the devices seen, with their client and the last outcome
  trust --device URL --host-key KEY [--replace]
                            trust the device's SSH host key (TYPE BASE64, as in its
                            /etc/ssh/ssh_host_ed25519_key.pub); a changed key needs --replace
  key                       print this desktop's public key, for the devices' authorized_keys

URL: ssh://user@host[:port][/device-root]

Options:
  --device-root DIR   the desktop's root folder (default: /)
  -h, --help          print this help
  -V, --version       print the version

Logs: <desktop root>/var/log/dm/DMTether<YYYYMMDD-HHMMSS>.log; each device's installer and
setup logs are copied to <desktop root>/var/log/dm/tether/<host>_<port>/.
";

#[derive(Default)]
struct Args {
    command: String,
    device_root: Option<PathBuf>,
    device: Option<String>,
    bundle: Option<PathBuf>,
    host_key: Option<String>,
    replace: bool,
    json: bool,
}

fn parse_args() -> Result<Args, ExitCode> {
    use lexopt::Arg::{Long, Value};
    let mut a = Args::default();
    let mut p = cli::Parser::from_env("dmtether", HELP);
    while let Some(arg) = p.next_arg()? {
        match arg {
            Value(v) if a.command.is_empty() => a.command = v.to_string_lossy().into_owned(),
            Long("device-root") => a.device_root = Some(p.value()?.into()),
            Long("device") => a.device = Some(p.value()?.to_string_lossy().into_owned()),
            Long("bundle") => a.bundle = Some(p.value()?.into()),
            Long("host-key") => a.host_key = Some(p.value()?.to_string_lossy().into_owned()),
            Long("replace") => a.replace = true,
            Long("json") => a.json = true,
            other => return Err(cli::usage_error("dmtether", other.unexpected())),
        }
    }
    let known = ["scan", "watch", "install", "devices", "trust", "key"];
    if !known.contains(&a.command.as_str()) {
        let what = if a.command.is_empty() { "a command".into() } else { a.command.clone() };
        return Err(cli::usage_error(
            "dmtether",
            format!("expected {}, found {what}", known.join(", ")),
        ));
    }
    Ok(a)
}

fn target(a: &Args) -> dm_desktop::Result<SshTarget> {
    let url = a.device.as_deref().ok_or_else(|| Error::Usage("--device URL is required".into()))?;
    url.parse().map_err(Error::Usage)
}

fn settings(ctx: &Context) -> dm_desktop::Result<Settings> {
    let path = ctx.layout.settings_file();
    if path.exists() { Ok(Settings::load(&path)?) } else { Ok(Settings::defaults()) }
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let ctx = Context::from_process(a.device_root.clone().unwrap_or_else(|| "/".into()));
    if matches!(a.command.as_str(), "scan" | "watch" | "install" | "trust") {
        logging::init_device(Program::Tether, &ctx.layout, ctx.clock.clone(), false);
        log::info!(
            "{} {}: desktop root {}",
            cli::version_line("dmtether"),
            a.command,
            ctx.layout.root().display()
        );
    }
    let code = match run(&ctx, &a) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{}: {e}", e.code());
            cli::out("");
            eprintln!("dmtether: {e}");
            e.code()
        }
    };
    log::logger().flush();
    if code == StatusCode::S_OK { ExitCode::SUCCESS } else { cli::exit(code) }
}

fn run(ctx: &Context, a: &Args) -> dm_desktop::Result<StatusCode> {
    match a.command.as_str() {
        "scan" => {
            let s = scan::scan(ctx, &settings(ctx)?, &mut scan::Deployments::default())?;
            cli::out(&format!("{} connected, {} installs\n", s.connected, s.installed));
            Ok(s.failure.unwrap_or(StatusCode::S_OK))
        }
        "watch" => watch(ctx),
        "install" => {
            let o = scan::install_one(ctx, &settings(ctx)?, &target(a)?, a.bundle.as_deref())?;
            cli::out(&format!("{}: {} ({})\n", target(a)?, o.result, o.text));
            Ok(o.code)
        }
        "devices" => devices(ctx, a.json),
        "trust" => {
            let key = a
                .host_key
                .as_deref()
                .ok_or_else(|| Error::Usage("--host-key KEY is required".into()))?;
            let t = target(a)?;
            let done = keys::trust(ctx, &t, key, a.replace)?;
            cli::out(&format!("{}: {done:?}\n", t.known_hosts_name()));
            Ok(StatusCode::S_OK)
        }
        _ => {
            cli::out(&format!("{}\n", keys::public_key(ctx)?));
            Ok(StatusCode::S_OK)
        }
    }
}

/// Scans until SIGTERM or SIGINT, reading the settings afresh each time.
fn watch(ctx: &Context) -> dm_desktop::Result<StatusCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::Usage(format!("cannot handle signals: {e}")))?;
    }
    let mut good = settings(ctx)?;
    let mut deployments = scan::Deployments::default();
    while !stop.load(Ordering::Relaxed) {
        // A settings file caught mid-edit, or wrong: said, and the last good ones kept.
        match settings(ctx) {
            Ok(s) => good = s,
            Err(e) => log::error!("{}: {e}; keeping the previous settings", e.code()),
        }
        let s = &good;
        if let Err(e) = scan::scan(ctx, s, &mut deployments) {
            log::error!("{}: {e}", e.code());
        }
        let until = Instant::now() + s.tether.scan_interval;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    log::info!("stop requested; exiting");
    Ok(StatusCode::S_OK)
}

fn devices(ctx: &Context, json: bool) -> dm_desktop::Result<StatusCode> {
    let r = TetherRecord::load(&ctx.layout)?;
    if json {
        cli::out_json(&r).map_err(Error::Usage)?;
        return Ok(StatusCode::S_OK);
    }
    let mut text = String::new();
    for d in r.devices.values() {
        let o = d.outcome.as_ref();
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            d.url,
            d.controller_id.as_deref().unwrap_or("-"),
            d.client_version.as_deref().unwrap_or("no client"),
            if d.connected { "connected" } else { "not connected" },
            o.map_or("-", |o| o.result.as_str()),
            o.map_or(String::new(), |o| format!("{} {} {}", o.code.hex(), o.time, o.text)),
        ));
    }
    if text.is_empty() {
        text = "no tethered device seen yet\n".into();
    }
    cli::out(&text);
    Ok(StatusCode::S_OK)
}
