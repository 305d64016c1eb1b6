//! What a hostile server, a runaway program, a lost acknowledgement or a damaged device state
//! once did to the agent, each played against the real programs: nothing is lost, nothing is
//! stuck, nothing hangs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent::Fleet;
use crate::util::*;

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    run_ok(Command::new("mkfifo").arg(path));
}

/// Waits until the agent's log holds `needle` (a minute at most).
fn wait_agent_log(f: &Fleet, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = f.agent_log();
        if log.contains(needle) {
            return log;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no {needle:?} in:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_fifo_in_place_of_a_file_never_hangs_the_agent() {
    let f = Fleet::new("");
    kill_agent(f.device());
    let settings = f.device().join("etc/dm/ClientSettings.ini");
    let saved = std::fs::read(&settings).unwrap();
    mkfifo(&settings);
    let out = run(
        Command::new(f.device().join("opt/dm/current/dmsvc")).arg("--device-root").arg(f.device()),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(39), "{}", show(&out));
    assert!(show(&out).contains("not a regular file"), "{}", show(&out));

    // A FIFO among the outbox entries is skipped; the agent polls on.
    std::fs::remove_file(&settings).unwrap();
    std::fs::write(&settings, saved).unwrap();
    let outbox = f.device().join("var/lib/dm/outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    mkfifo(&outbox.join("00000000000000000001.json"));
    f.start_agent();
    let log = wait_agent_log(&f, "outbox: skipping");
    assert!(log.contains("not a regular file"), "{log}");
    wait_agent_log(&f, "inventory sent");
}

#[test]
fn a_run_request_while_the_server_is_down_waits_for_the_backoff() {
    let mut f = Fleet::new("");
    let pkg =
        f.package("optional", &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")], None);
    let roots = f.mp.w.pki.join("root-ca.pem");
    f.advertise("optional", &pkg, &roots, &["--program", "run"], &["--available"], None);
    let start = Instant::now();
    let id = loop {
        let out = run(
            Command::new(bin("dmsvc")).arg("available").arg("--device-root").arg(f.device()),
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("optional 1.0.0.0") {
            break text.split('\t').next().unwrap().trim().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never listed\n{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(250));
    };
    f.mp.stop();
    // The user's request, and a temporary file a crash left beside it.
    let requests = f.device().join("var/lib/dm/requests");
    std::fs::create_dir_all(&requests).unwrap();
    std::fs::write(requests.join(".17.tmp"), b"").unwrap();
    std::fs::write(requests.join(&id), b"2026-11-28T00:00:00Z").unwrap();
    let before = f.agent_log().len();
    std::thread::sleep(Duration::from_secs(8));
    let log = f.agent_log()[before..].to_string();
    // The backoff (1, 2, 4, 4 s) paces both the retries and the polls.
    let retries = log.matches("tried again after the next poll").count();
    let polls = log.matches("poll failed").count();
    assert!((1..=5).contains(&retries), "{retries} retries in 8 s:\n{log}");
    assert!(polls <= 6, "{polls} polls in 8 s:\n{log}");
    // Once the server is back, the request runs.
    f.mp.restart();
    let start = Instant::now();
    while !f.device().join("ran").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "never ran:\n{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = Instant::now();
    while requests.join(&id).exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "the request stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
