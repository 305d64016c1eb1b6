//! Phased rollouts with 20 real agents on loopback in four groups: nothing reaches a device
//! before its group is released; a group counts only confirmed successes (the new version in
//! the device's inventory, and the package's signed health check passed after the install and
//! again at the end of the soak, the action open until then); a package whose health check
//! fails on a chosen third of the devices pauses the rollout at the group that crosses the
//! error threshold with the exact counts and the devices named; a device that joins the
//! collection while the rollout waits joins the running group; resuming with a fixed version
//! puts it on every released device and the rollout finishes. A rollout set to roll back
//! advertises the previous version to the group that failed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::instances::{Devices, devices, devices_from};
use crate::mp::Mp;
use crate::util::*;

/// Waits up to `secs` for the rollout's JSON to satisfy `done`.
fn wait_rollout(mp: &Mp, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = mp.admin_json(&["rollout", "show", "r1"]);
        if done(&r) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: {r:#}\n{}",
            mp.admin(&["rollout", "show", "r1"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn group(r: &Value, i: usize) -> &Value {
    &r["groups"][i]
}

/// A management point evaluating the gates every second, and `n` devices polling it.
fn fleet(n: usize) -> (Mp, Devices) {
    let mp = Mp::start(|t| *t = t.replace("rollout_tick_secs = 5", "rollout_tick_secs = 1"));
    let devices = devices(&mp, n, &mp.url());
    mp.admin(&["collection", "add", "--name", "fleet", "--rule", "all"]);
    (mp, devices)
}

/// The device root of `cid`.
fn root_of(fleet: &Devices, cid: &str) -> PathBuf {
    fleet.0.iter().find(|(c, _)| c == cid).map(|(_, r)| r.clone()).unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect()
}

#[test]
fn a_rollout_releases_group_by_group_on_confirmed_success_and_pauses_at_the_error_threshold() {
    let (mp, fleet) = fleet(20);
    // Version 1's signed health check fails where the device is "sick"; 1.0.1's is fixed.
    checked_tool(&mp, "1.0.0.0", "v1", "tool-run", true);
    checked_tool(&mp, "1.0.1.0", "fixed", "tool-fixed", false);
    mp.admin(&[
        "rollout",
        "create",
        "--name",
        "r1",
        "--program",
        "tool-run",
        "--collection",
        "fleet",
        "--groups",
        "25%,50%,75%,100%",
        "--success-threshold",
        "80",
        "--error-threshold",
        "40",
        "--soak",
        "3",
        "--silent-after",
        "120",
        "--approval",
    ]);

    // Created, waiting for approval: nothing reaches a device, and it cannot start yet.
    let refused = mp.admin_fails(&["rollout", "start", "r1"]);
    assert!(refused.contains("approve"), "{refused}");
    std::thread::sleep(Duration::from_secs(3));
    let st = mp.admin_json(&["advertisement", "status", "r1"]);
    assert_eq!(st["devices"].as_array().unwrap().len(), 0, "{st}");
    mp.admin(&["rollout", "approve", "r1"]);
    mp.admin(&["rollout", "start", "r1"]);

    let r = mp.admin_json(&["rollout", "show", "r1"]);
    assert_eq!(r["groups"].as_array().unwrap().len(), 4, "{r}");
    for i in 0..4 {
        assert_eq!(names(&group(&r, i)["devices"]).len(), 5, "{r}");
    }
    // A chosen third of the devices is sick: one of the first group, two of each other.
    let groups: Vec<Vec<String>> = (0..4).map(|i| names(&group(&r, i)["devices"])).collect();
    let sick: Vec<&String> =
        groups.iter().enumerate().flat_map(|(i, g)| &g[..if i == 0 { 1 } else { 2 }]).collect();
    assert_eq!(sick.len(), 7);
    for cid in &sick {
        std::fs::write(root_of(&fleet, cid).join("sick"), b"").unwrap();
    }

    // Group 1 passes with 4 of 5 confirmed (80%); group 2 cannot (2 of 5 failed, 40%).
    let r =
        wait_rollout(&mp, 120, "the rollout never paused", |r| r["rollout"]["state"] == "paused");
    let (g1, g2) = (group(&r, 0), group(&r, 1));
    assert_eq!(g1["state"], "succeeded", "{r:#}");
    assert_eq!(
        (g1["counts"]["succeeded"].as_u64(), g1["counts"]["failed"].as_u64()),
        (Some(4), Some(1)),
        "{r:#}"
    );
    assert_eq!(g2["state"], "failed", "{r:#}");
    assert_eq!(g2["counts"]["failed"], 2, "{r:#}");
    assert_eq!(g2["counts"]["size"], 5, "{r:#}");
    for i in 2..4 {
        assert_eq!(group(&r, i)["state"], "scheduled", "{r:#}");
    }
    let reason = r["rollout"]["reason"].as_str().unwrap();
    assert_eq!(reason, "group 2 of 4: 2 of 5 devices failed (error threshold 40%)");
    // The gates recorded each group's progress as its counts changed, for the console's plots.
    let samples = r["progress"].as_array().unwrap();
    let last_of = |g: i64| samples.iter().rev().find(|s| s["group"] == g).map(|s| &s["counts"]);
    assert_eq!(last_of(0).unwrap()["succeeded"], 4, "{samples:?}");
    assert_eq!(last_of(1).unwrap()["failed"], 2, "{samples:?}");
    assert!(samples.len() >= 4, "{samples:?}");
    let log = r["log"].to_string();
    for cid in &sick[1..3] {
        assert!(log.contains(&format!("{cid} (its health check failed)")), "{log}");
    }
    // The install itself ran on the sick devices: only their health check failed.
    let runs = std::fs::read_to_string(root_of(&fleet, sick[1]).join("runs")).unwrap();
    assert_eq!(runs, "v1\n");
    // A healthy device of group 1 closed its action only after the soak, with its health
    // check's second pass.
    let well = groups[0].iter().find(|c| !sick.contains(c)).unwrap();
    let agent_log = log_text(&root_of(&fleet, well), "DMSvc");
    assert!(agent_log.contains("runs again at the end of the 3 s soak"), "{agent_log}");
    assert!(
        agent_log.contains("its health check check passed again at the end of the soak"),
        "{agent_log}"
    );
    // Groups 3 and 4 were never offered it.
    let st = mp.admin_json(&["advertisement", "status", "r1"]);
    let reached: Vec<String> = st["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap().to_string())
        .collect();
    // (A device of the second group may not have polled yet: the pause came at 2 failures.)
    assert!((7..=10).contains(&reached.len()), "{st}");
    for cid in groups[2].iter().chain(&groups[3]) {
        assert!(!reached.contains(cid), "{cid} of a later group got it: {st}");
    }

    // A device that joins the collection while the rollout waits joins the running group.
    let _joiner = devices_from(&mp, 20..21, &mp.url());
    // Resumed with the fixed version: the released groups get it, the sick devices too, and
    // the rollout goes on to the end on it.
    mp.admin(&["rollout", "resume", "r1", "--program", "tool-fixed"]);
    wait_rollout(&mp, 180, "the rollout never finished", |r| r["rollout"]["state"] == "finished");
    // The last group finished the rollout at 80%; every device is confirmed soon after.
    let r = wait_rollout(&mp, 60, "not every device was confirmed", |r| {
        (0..4).map(|i| group(r, i)["counts"]["succeeded"].as_u64().unwrap_or(0)).sum::<u64>() == 21
    });
    let g2 = group(&r, 1);
    assert!(names(&g2["devices"]).contains(&"dev-20".to_string()), "the joiner: {r:#}");
    assert_eq!(g2["counts"]["succeeded"], 6, "the group, its sick devices and the joiner: {r:#}");
    for cid in &sick {
        let runs = std::fs::read_to_string(root_of(&fleet, cid).join("runs")).unwrap();
        assert!(runs.ends_with("fixed\n"), "{cid} runs the fixed version: {runs:?}");
    }
    let log = mp.admin(&["rollout", "show", "r1"]);
    assert!(log.contains("resumed by"), "{log}");
    assert!(log.contains("with tool-fixed (tool 1.0.1.0)"), "{log}");
    assert!(log.contains("the rollout finished"), "{log}");
    assert!(mp.log_text().contains("rollout r1 paused: group 2 of 4"), "the server's log");
}

/// A signed package `tool` `version` of two programs: `run`, which appends `tag` to `runs` on
/// its device, and `check`, its health check, which fails on a device left `sick` when
/// `fails_when_sick`; its program `prog` runs `run`.
fn checked_tool(mp: &Mp, version: &str, tag: &str, prog: &str, fails_when_sick: bool) {
    use std::os::unix::fs::PermissionsExt;
    let src = mp.w.path(&format!("tool-{tag}-src"));
    std::fs::create_dir_all(&src).unwrap();
    let check = if fails_when_sick {
        "if [ -e \"$DM_DEVICE_ROOT/sick\" ]; then echo 'check: the service does not answer' >&2; exit 1; fi\n"
    } else {
        ""
    };
    for (file, body) in [
        ("run.sh", format!("echo {tag} >> \"$DM_DEVICE_ROOT/runs\"\n")),
        ("check.sh", format!("{check}echo check: well\n")),
    ] {
        std::fs::write(src.join(file), format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(src.join(file), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let pkg = mp.w.path(&format!("tool-{tag}-pkg"));
    run_ok(
        std::process::Command::new(bin("dmpack"))
            .args(["package", "--source"])
            .arg(&src)
            .arg("--out")
            .arg(&pkg)
            .args(["--name", "tool", "--package-version", version, "--key"])
            .arg(mp.w.pki.join("publisher.key"))
            .arg("--cert")
            .arg(mp.w.pki.join("publisher.pem"))
            .args(["--program", "run=run.sh", "--program", "check=check.sh"])
            .args(["--default-program", "run", "--health-check", "check"]),
    );
    add_tool(mp, &pkg, version, prog);
}

/// Adds the signed package `tool` `version` in `pkg` and its program `run` as `prog`.
fn add_tool(mp: &Mp, pkg: &std::path::Path, version: &str, prog: &str) {
    mp.add_package(pkg);
    let package = format!("tool@{version}");
    mp.admin(&["program", "add", "--package", &package, "--name", prog, "--program", "run"]);
}

/// A signed package `tool` `version` whose program appends `tag` to `runs` on its device,
/// and fails where the test left a marker `fail-<tag>`; its program `prog`.
fn tool(mp: &Mp, version: &str, tag: &str, prog: &str) {
    let src = mp.w.path(&format!("tool-{tag}-src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("run.sh"),
        format!(
            "#!/bin/sh\nif [ -e \"$DM_DEVICE_ROOT/fail-{tag}\" ]; then echo 'tool: broken here' >&2; exit 3; fi\necho {tag} >> \"$DM_DEVICE_ROOT/runs\"\n"
        ),
    )
    .unwrap();
    let pkg = mp.w.path(&format!("tool-{tag}-pkg"));
    sign_package_as(&mp.w, &src, &pkg, ("tool", version), "run.sh", None);
    add_tool(mp, &pkg, version, prog);
}

#[test]
fn a_rollout_that_reaches_its_error_threshold_rolls_the_group_back_to_the_previous_version() {
    let (mp, fleet) = fleet(6);
    // Version 1 everywhere first.
    tool(&mp, "1.0.0.0", "v1", "tool-v1");
    mp.admin(&[
        "advertise",
        "--name",
        "v1",
        "--program",
        "tool-v1",
        "--collection",
        "fleet",
        "--mandatory",
    ]);
    mp.wait_status("v1", "version 1 everywhere", |st| st["counts"]["finished"] == 6, String::new);

    tool(&mp, "2.0.0.0", "v2", "tool-v2");
    mp.admin(&[
        "rollout",
        "create",
        "--name",
        "r1",
        "--program",
        "tool-v2",
        "--collection",
        "fleet",
        "--groups",
        "50%,100%",
        "--success-threshold",
        "100",
        "--error-threshold",
        "60",
        "--soak",
        "1",
        "--rollback-program",
        "tool-v1",
    ]);
    mp.admin(&["rollout", "start", "r1"]);
    let r = mp.admin_json(&["rollout", "show", "r1"]);
    let first = names(&group(&r, 0)["devices"]);
    let second = names(&group(&r, 1)["devices"]);
    assert_eq!((first.len(), second.len()), (3, 3), "{r:#}");
    for cid in &first[..2] {
        std::fs::write(root_of(&fleet, cid).join("fail-v2"), b"").unwrap();
    }
    let r =
        wait_rollout(&mp, 120, "the rollout never paused", |r| r["rollout"]["state"] == "paused");
    assert_eq!(group(&r, 0)["counts"]["failed"], 2, "{r:#}");
    assert!(r["log"].to_string().contains("rolled back: advertisement r1-rollback-1-"), "{r:#}");

    // The group's devices get version 1 again, the failed ones too.
    let ads = mp.admin_json(&["advertisement", "list"]);
    let back = ads
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .find(|n| n.starts_with("r1-rollback-1-"))
        .expect("the rollback advertisement");
    mp.wait_status(&back, "the rollback", |st| st["counts"]["finished"] == 3, String::new);
    for cid in &first {
        let runs = std::fs::read_to_string(root_of(&fleet, cid).join("runs")).unwrap();
        assert!(runs.ends_with("v1\n"), "{cid} runs the previous version again: {runs:?}");
    }
    for cid in &second {
        let runs = std::fs::read_to_string(root_of(&fleet, cid).join("runs")).unwrap();
        assert_eq!(runs, "v1\n", "{cid} of the next group never got version 2");
    }
}

/// A client upgrade whose new agent cannot reach the server (a token the server does not know)
/// is rolled back by setup on the device, and the rollout counts the device failed, never
/// succeeded: it pauses.
#[test]
fn a_client_upgrade_the_new_agent_cannot_use_counts_as_failed_and_is_rolled_back() {
    use crate::agent::{Fleet, TOKEN, device_settings};
    // The gates at the default tick (5 s).
    let f = Fleet::new("");
    let settings = device_settings(&f.mp, "").replace(TOKEN, "tok-wrong");
    let upgrade = f.client_folder("client-1.1.0.0", "1.1.0.0", &settings);
    f.mp.add_package(&upgrade);
    f.mp.admin(&["program", "add", "--package", "dm-client", "--name", "upgrade-client"]);
    f.mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    f.mp.admin(&[
        "rollout",
        "create",
        "--name",
        "r1",
        "--program",
        "upgrade-client",
        "--collection",
        "everyone",
        "--groups",
        "100%",
        "--success-threshold",
        "100",
        "--error-threshold",
        "50",
        "--soak",
        "2",
    ]);
    f.mp.admin(&["rollout", "start", "r1"]);
    let r =
        wait_rollout(&f.mp, 120, "the rollout never paused", |r| r["rollout"]["state"] == "paused");
    assert_eq!(group(&r, 0)["counts"]["failed"], 1, "{r:#}");
    assert_eq!(group(&r, 0)["counts"]["succeeded"], 0, "{r:#}");
    assert_eq!(
        std::fs::read_link(f.device().join("opt/dm/current")).unwrap(),
        std::path::Path::new("versions/1.0.0.0"),
        "setup rolled the refused version back"
    );
    assert!(log_text(f.device(), "DMClientSetup").contains("rolled back"));
}
