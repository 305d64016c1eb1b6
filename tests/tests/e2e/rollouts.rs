//! Phased rollouts with 20 real agents on loopback in four groups: nothing reaches a device
//! before its group is released; a group counts only confirmed successes (the action finished,
//! the new version in the device's inventory, the soak time passed); a package that fails on
//! chosen devices of the second group pauses the rollout there with the exact counts and the
//! devices named; a device that joins the collection while the rollout waits joins the running
//! group; resuming sets the failures aside and the rollout finishes. A rollout set to roll
//! back advertises the previous version to the group that failed.

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
    // A package whose program fails where the test leaves a marker.
    tool(&mp, "1.0.0.0", "v1", "tool-run");
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
        "100",
        "--error-threshold",
        "40",
        "--soak",
        "2",
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
    // Two of the second group's five devices will fail: 40%, the error threshold.
    let second = names(&group(&r, 1)["devices"]);
    let failing = &second[..2];
    for cid in failing {
        std::fs::write(root_of(&fleet, cid).join("fail-v1"), b"").unwrap();
    }

    let r =
        wait_rollout(&mp, 120, "the rollout never paused", |r| r["rollout"]["state"] == "paused");
    let (g1, g2) = (group(&r, 0), group(&r, 1));
    assert_eq!(g1["state"], "succeeded", "{r:#}");
    assert_eq!(g1["counts"]["succeeded"], 5, "{r:#}");
    assert_eq!(g2["state"], "failed", "{r:#}");
    assert_eq!(g2["counts"]["failed"], 2, "{r:#}");
    assert_eq!(g2["counts"]["size"], 5, "{r:#}");
    for i in 2..4 {
        assert_eq!(group(&r, i)["state"], "scheduled", "{r:#}");
    }
    let reason = r["rollout"]["reason"].as_str().unwrap();
    assert_eq!(reason, "group 2 of 4: 2 of 5 devices failed (error threshold 40%)");
    let log = r["log"].to_string();
    for cid in failing {
        assert!(log.contains(&format!("{cid} (the install failed)")), "{log}");
    }
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
    for cid in names(&group(&r, 2)["devices"]).iter().chain(&names(&group(&r, 3)["devices"])) {
        assert!(!reached.contains(cid), "{cid} of a later group got it: {st}");
    }

    // A device that joins the collection while the rollout waits joins the running group.
    let _joiner = devices_from(&mp, 20..21, &mp.url());
    // Resume: the failures counted so far are set aside.
    mp.admin(&["rollout", "resume", "r1"]);
    let r = wait_rollout(&mp, 180, "the rollout never finished", |r| {
        r["rollout"]["state"] == "finished"
    });
    let g2 = group(&r, 1);
    assert!(names(&g2["devices"]).contains(&"dev-20".to_string()), "the joiner: {r:#}");
    assert_eq!(names(&g2["acknowledged"]).len(), 2, "{r:#}");
    assert_eq!(g2["counts"]["succeeded"], 4, "three of the group and the joiner: {r:#}");
    for i in 2..4 {
        assert_eq!(group(&r, i)["counts"]["succeeded"], 5, "{r:#}");
    }
    let log = mp.admin(&["rollout", "show", "r1"]);
    assert!(log.contains("resumed by"), "{log}");
    assert!(log.contains("the rollout finished"), "{log}");
    assert!(mp.log_text().contains("rollout r1 paused: group 2 of 4"), "the server's log");
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
    mp.add_package(&pkg);
    mp.admin(&[
        "program",
        "add",
        "--package",
        &format!("tool@{version}"),
        "--name",
        prog,
        "--program",
        "run",
    ]);
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
