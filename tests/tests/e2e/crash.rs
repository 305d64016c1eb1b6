//! Crash safety of setup: for install, upgrade, reconfigure and uninstall, kill setup with
//! SIGKILL at every failpoint it passes (each journal step, each undo, and every atomic write,
//! rename and folder creation inside them), then let the next setup run or agent start recover,
//! and check the device holds either the old client or the new one, complete. Never a mix,
//! never no client where there was one. Then the interrupted setup, run again, finishes.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::setup::{Client, check_complete, check_no_client, settings};
use crate::util::*;

/// A client state a device can be in.
#[derive(Clone)]
enum State {
    None,
    Installed { version: &'static str, folder: PathBuf },
}

impl State {
    fn check(&self, device: &Path) -> Result<(), String> {
        match self {
            State::None => check_no_client(device),
            State::Installed { version, folder } => check_complete(device, version, folder),
        }
    }

    fn describe(&self) -> String {
        match self {
            State::None => "no client".into(),
            State::Installed { version, folder } => {
                format!("{version} from {}", folder.file_name().unwrap().to_string_lossy())
            }
        }
    }
}

fn copy_device(template: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    run_ok(Command::new("cp").arg("-a").arg(template).arg(to));
}

fn setup_cmd(folder: &Path, device: &Path) -> Command {
    let mut cmd = Command::new(folder.join(format!("dmclientsetup_{}", host_platform())));
    cmd.arg("--source")
        .arg(folder)
        .arg("--device-root")
        .arg(device)
        .args(["--health-timeout", "20"]);
    cmd
}

/// The failpoints setup passes for this operation, each with how many times it is hit.
fn trace_points(
    template: &Path,
    scratch: &Path,
    folder: &Path,
    inject: Option<&str>,
) -> Vec<(String, usize)> {
    let device = scratch.join("trace-device");
    copy_device(template, &device);
    start_agent(&device);
    let trace = scratch.join("trace.txt");
    let mut cmd = setup_cmd(folder, &device);
    cmd.env("DM_FAILPOINT_TRACE", &trace);
    if let Some(spec) = inject {
        cmd.env("DM_FAILPOINTS", spec);
    }
    let out = run(&mut cmd, Duration::from_secs(120));
    kill_agent(&device);
    let want = if inject.is_some() { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "the traced run: {}", show(&out));
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut points = Vec::new();
    for name in text.lines() {
        let n = seen.entry(name).or_insert(0);
        *n += 1;
        points.push((name.to_string(), *n));
    }
    points
}

fn crash_at_every_failpoint(
    op: &str,
    start: State,
    target: State,
    build: impl FnOnce(&Client) -> (Option<PathBuf>, PathBuf),
) {
    crash_at_every_failpoint_with(op, start, target, None, build)
}

/// `inject` makes one step fail (`name=error`) so the operation rolls back: the kill points are
/// then those of the rollback, and the operation must end in the old state.
fn crash_at_every_failpoint_with(
    op: &str,
    start: State,
    target: State,
    inject: Option<&str>,
    build: impl FnOnce(&Client) -> (Option<PathBuf>, PathBuf),
) {
    let c = Client::new();
    let (start_folder, folder) = build(&c);
    let start = match (start, start_folder) {
        (State::Installed { version, .. }, Some(f)) => State::Installed { version, folder: f },
        (s, _) => s,
    };
    let target = match target {
        State::Installed { version, .. } => State::Installed { version, folder: folder.clone() },
        s => s,
    };
    // The template device: the start state, with its agent stopped (each copy starts its own).
    if let State::Installed { folder: f, .. } = &start {
        c.install_ok(f);
        kill_agent(c.device());
        let _ = std::fs::remove_dir_all(c.device().join("run"));
    }
    // Setup runs after DMInstaller trusted the publisher: do what the installer does.
    let privileged = c.device().join("etc/dm/certs/privileged");
    std::fs::create_dir_all(&privileged).unwrap();
    std::fs::copy(c.w.pki.join("publisher.pem"), privileged.join("publisher.pem")).unwrap();
    start.check(c.device()).unwrap_or_else(|e| panic!("bad start state: {e}"));
    let scratch = c.w.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    let mut points = trace_points(c.device(), &scratch, &folder, inject);
    if let Some(spec) = inject {
        // Only the points after the injected failure: those of the rollback.
        let name = spec.split('=').next().unwrap_or_default();
        let at =
            points.iter().position(|(n, _)| n == name).expect("the injected point was reached");
        points.drain(..=at);
    }
    let setup_points = points.iter().filter(|(n, _)| n.starts_with("setup-")).count();
    assert!(setup_points >= 3, "{op}: too few setup failpoints traced: {points:?}");
    eprintln!("{op}: {} failpoints ({setup_points} journal steps)", points.len());

    // Once the first undo step is reached the rollback decision is on disk: from there on a
    // recovered device must end in the old state. Before it, finishing forward is also right.
    let first_undo = points.iter().position(|(n, _)| n.contains("-undo-")).unwrap_or(points.len());
    let device = scratch.join("device");
    let mut failures = Vec::new();
    for (i, (name, nth)) in points.iter().enumerate() {
        copy_device(c.device(), &device);
        start_agent(&device);
        let spec = match inject {
            Some(inj) => format!("{inj},{name}=kill@{nth}"),
            None => format!("{name}=kill@{nth}"),
        };
        let out =
            run(setup_cmd(&folder, &device).env("DM_FAILPOINTS", &spec), Duration::from_secs(120));
        if out.status.signal() != Some(9) {
            failures.push(format!("{spec}: setup was not killed there: {}", show(&out)));
            kill_agent(&device);
            continue;
        }
        // Recovery: alternately the next setup run and the next agent start. An agent setup
        // started before it died may hold a lock (exit 23, "already running") while it
        // recovers by itself: kill it (one more crash, mid-recovery) and try again.
        let agent = device.join("opt/dm/current/dmsvc");
        let by_agent = i % 2 == 1 && agent.exists();
        let mut attempt = 0;
        let rec = loop {
            kill_agent(&device);
            let out = if by_agent && agent.exists() {
                run(
                    Command::new(&agent).arg("--device-root").arg(&device).arg("--once"),
                    Duration::from_secs(60),
                )
            } else {
                run(
                    Command::new(bin("dmclientsetup"))
                        .arg("--recover")
                        .arg("--device-root")
                        .arg(&device),
                    Duration::from_secs(120),
                )
            };
            attempt += 1;
            if out.status.code() != Some(23) || attempt == 100 {
                break out;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let recovered_by = if by_agent { "agent start" } else { "setup --recover" };
        if !rec.status.success() {
            failures.push(format!("{spec}: {recovered_by} failed: {}", show(&rec)));
        } else if let (Some(_), true, Err(old)) = (inject, i >= first_undo, start.check(&device)) {
            failures.push(format!("{spec}: a rollback interrupted and recovered must end in the old state ({}): {old}\n{}", start.describe(), tree_listing(&device)));
        } else if let (Err(old), Err(new)) = (start.check(&device), target.check(&device)) {
            failures.push(format!(
                "{spec}: after {recovered_by} the device has neither the old client ({}: {old}) nor the new ({}: {new})\n{}",
                start.describe(),
                target.describe(),
                tree_listing(&device)
            ));
        }
        // The interrupted setup, run again, finishes the job.
        let again = run(&mut setup_cmd(&folder, &device), Duration::from_secs(120));
        if again.status.code() != Some(0) {
            let agent = log_text(&device, "DMSvc");
            let tail = &agent[agent.len().saturating_sub(3000)..];
            failures
                .push(format!("{spec}: the rerun failed: {}\nagent log:\n{tail}", show(&again)));
        } else if let Err(e) = target.check(&device) {
            failures.push(format!(
                "{spec}: after the rerun the new state ({}) is not complete: {e}",
                target.describe()
            ));
        }
        kill_agent(&device);
    }
    assert!(
        failures.is_empty(),
        "{op}: {} of {} crash points failed:\n{}",
        failures.len(),
        points.len(),
        failures.join("\n\n")
    );
}

#[test]
fn install_survives_a_kill_at_every_failpoint() {
    crash_at_every_failpoint(
        "install",
        State::None,
        State::Installed { version: "1.0.0.0", folder: PathBuf::new() },
        |c| (None, c.folder("v1", "1.0.0.0", &settings("Install", ""))),
    );
}

#[test]
fn upgrade_survives_a_kill_at_every_failpoint() {
    crash_at_every_failpoint(
        "upgrade",
        State::Installed { version: "1.0.0.0", folder: PathBuf::new() },
        State::Installed { version: "1.1.0.0", folder: PathBuf::new() },
        |c| {
            (
                Some(c.folder("v1", "1.0.0.0", &settings("Install", ""))),
                c.folder("v2", "1.1.0.0", &settings("Install", "PollInterval=60\n")),
            )
        },
    );
}

#[test]
fn an_upgrade_rollback_survives_a_kill_at_every_failpoint() {
    // The new agent "fails its health check": the upgrade rolls back, and is killed at each
    // point of the rollback in turn.
    crash_at_every_failpoint_with(
        "upgrade rollback",
        State::Installed { version: "1.0.0.0", folder: PathBuf::new() },
        State::Installed { version: "1.1.0.0", folder: PathBuf::new() },
        Some("setup-upgrade-await-health=error"),
        |c| {
            (
                Some(c.folder("v1", "1.0.0.0", &settings("Install", ""))),
                c.folder("v2", "1.1.0.0", &settings("Install", "PollInterval=60\n")),
            )
        },
    );
}

#[test]
fn reconfigure_survives_a_kill_at_every_failpoint() {
    crash_at_every_failpoint(
        "reconfigure",
        State::Installed { version: "1.0.0.0", folder: PathBuf::new() },
        State::Installed { version: "1.0.0.0", folder: PathBuf::new() },
        |c| {
            (
                Some(c.folder("v1", "1.0.0.0", &settings("Install", ""))),
                c.folder("v1-reconf", "1.0.0.0", &settings("None", "PollInterval=45\n")),
            )
        },
    );
}

#[test]
fn uninstall_survives_a_kill_at_every_failpoint() {
    crash_at_every_failpoint(
        "uninstall",
        State::Installed { version: "1.0.0.0", folder: PathBuf::new() },
        State::None,
        |c| {
            (
                Some(c.folder("v1", "1.0.0.0", &settings("Install", ""))),
                c.folder("v1-remove", "1.0.0.0", &settings("Uninstall", "")),
            )
        },
    );
}
