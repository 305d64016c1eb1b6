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
    assert_eq!(out.status.code(), Some(92), "{}", show(&out));
    assert!(show(&out).contains("not a regular file"), "{}", show(&out));

    // A FIFO among the outbox entries is moved aside, once; the agent polls on.
    std::fs::remove_file(&settings).unwrap();
    std::fs::write(&settings, saved).unwrap();
    let outbox = f.device().join("var/lib/dm/outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    mkfifo(&outbox.join("00000000000000000001.json"));
    f.start_agent();
    let log = wait_agent_log(&f, "and not sent");
    assert!(log.contains("not a regular file"), "{log}");
    assert!(outbox.join("damaged/00000000000000000001.json").exists());
    wait_agent_log(&f, "inventory sent");
}

#[test]
fn a_run_request_while_the_server_is_down_waits_for_the_backoff() {
    let mut f = Fleet::new("");
    let pkg =
        f.package("optional", &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")], None);
    let roots = f.mp.w.pki.join("root-ca.pem");
    f.advertise("optional", &pkg, &roots, &["--program", "run"], &["--available"], None);
    let id = f.wait_available("optional");
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

/// Whether process `pid` lives (a zombie does not count).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

/// The pid a program wrote into `file` of the device root (waits for it).
fn pid_in(device: &Path, file: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(device.join(file)) {
            if let Ok(pid) = t.trim().parse() {
                return pid;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no {file}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn agent_pid(device: &Path) -> i32 {
    std::fs::read_to_string(device.join("run/dm/dmsvc.pid")).unwrap().trim().parse().unwrap()
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn programs_are_contained_for_their_whole_life() {
    let f = Fleet::new("");
    let roots = f.mp.w.pki.join("root-ca.pem");
    let finished = |n: i64| move |s: &serde_json::Value| s["counts"]["finished"] == n;
    let failed = |s: &serde_json::Value| s["counts"]["error"] == 1;

    // 200 MB of output without a newline, NULs included: the agent's memory stays small and
    // its log holds no raw NUL.
    let flood = b"#!/bin/sh\nhead -c 200000000 /dev/zero\necho\necho done\n";
    let pkg = f.package("flood", &[("run.sh", flood)], None);
    let ad = f.advertise("flood", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    f.wait_status(&ad, "the flood", finished(1));
    let peak = peak_rss_kib(agent_pid(f.device()));
    println!("agent peak RSS after 200 MB of output without a newline: {peak} KiB");
    assert!(peak < 64 * 1024, "the agent grew to {peak} KiB");
    let log = f.agent_log();
    assert!(!log.contains('\0'), "a raw NUL in the log");
    assert!(log.contains("…(line cut)") && log.contains("\\x00"), "the cut line is said");

    // A background child that ignores SIGTERM outlives the main process: it is stopped.
    let leaver =
        b"#!/bin/sh\n(trap '' TERM; sleep 300) &\necho $! > \"$DM_DEVICE_ROOT/left.pid\"\nexit 0\n";
    let pkg = f.package("leaver", &[("run.sh", leaver)], None);
    let ad = f.advertise("leaver", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    f.wait_status(&ad, "the leaver", finished(1));
    assert!(!alive(pid_in(f.device(), "left.pid")), "the background child outlived its program");
    assert!(f.agent_log().contains("left 1 process(es) running"));

    // At the maximum run time, every process of the program goes, those ignoring SIGTERM too.
    let stubborn = b"#!/bin/sh\ntrap '' TERM\n(trap '' TERM; sleep 300) &\necho $! > \"$DM_DEVICE_ROOT/stubborn.pid\"\nsleep 300\n";
    let pkg = f.package("stubborn", &[("run.sh", stubborn)], None);
    let ad = f.advertise(
        "stubborn",
        &pkg,
        &roots,
        &["--program", "run", "--max-run-time", "2"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "the timeout", failed);
    assert_eq!(st["devices"][0]["last_code"], 10070, "{st}");
    assert!(!alive(pid_in(f.device(), "stubborn.pid")), "a process outlived the maximum run time");

    // The agent killed while its program runs: the next agent stops what is left, then says
    // the program was interrupted.
    let long = b"#!/bin/sh\n(sleep 300) &\necho $! > \"$DM_DEVICE_ROOT/long.pid\"\nsleep 300\n";
    let pkg = f.package("long", &[("run.sh", long)], None);
    let ad = f.advertise("long", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    let child = pid_in(f.device(), "long.pid");
    kill_agent(f.device());
    assert!(alive(child), "the program lives on after the agent died");
    f.start_agent();
    let st = f.wait_status(&ad, "the interruption", failed);
    assert_eq!(st["devices"][0]["last_code"], 10071, "{st}");
    assert!(!alive(child), "what the killed agent left running was not stopped");
    assert!(f.agent_log().contains("was still running after the agent stopped"));
}

#[test]
fn a_server_cannot_make_devices_poll_faster_than_their_floor() {
    // The test server asks for a poll every 2 s; the device's floor is the default, 10 s.
    let f = Fleet::new("MinPollInterval=10\n");
    let log = wait_agent_log(&f, "polling every 10 s instead");
    assert!(log.contains("poll interval of 00:00:02"), "{log}");
    // Said once, not at every poll.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(f.agent_log().matches("polling every 10 s instead").count(), 1);
}

/// The database files of a management point (the SQLite file and its WAL), by path.
fn database_files(mp: &crate::mp::Mp) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![mp.dir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().contains(".db") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_server_that_lost_a_final_result_gets_it_again() {
    let mut f = Fleet::new("");
    let script = b"#!/bin/sh\nsleep 3\necho \"$DM_ACTION_ID\" >> \"$DM_DEVICE_ROOT/runs\"\n";
    let pkg = f.package("slow", &[("run.sh", script)], None);
    let roots = f.mp.w.pki.join("root-ca.pem");
    let ad = f.advertise("slow", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    // While the program runs, a backup of the server's database.
    wait_agent_log(&f, "running run.sh");
    f.mp.stop();
    let backup: Vec<(std::path::PathBuf, Vec<u8>)> = database_files(&f.mp)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    f.mp.restart();
    f.wait_status(&ad, "the result", |s| s["counts"]["finished"] == 1);
    // The server is restored from the backup: it has forgotten the result and offers the
    // action again. The device sends the result again; the program does not run again.
    f.mp.stop();
    for p in database_files(&f.mp) {
        std::fs::remove_file(p).unwrap();
    }
    for (p, bytes) in &backup {
        std::fs::write(p, bytes).unwrap();
    }
    f.mp.restart();
    let st = f.mp.admin_json(&["advertisement", "status", &ad]);
    assert_eq!(st["counts"]["finished"], 0, "restored: {st}");
    f.wait_status(&ad, "the result sent again", |s| s["counts"]["finished"] == 1);
    assert!(f.agent_log().contains("sending its final result again"));
    let runs = std::fs::read_to_string(f.device().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the program ran again: {runs}");
}

#[test]
fn a_resumed_download_that_does_not_match_starts_over() {
    let f = Fleet::new("");
    // What an earlier try of the first action left: bytes that are not the server's.
    let cache = f.device().join("var/lib/dm/cache/action-1");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(".blob.bin.partial"), vec![0xFFu8; 100_000]).unwrap();
    let pkg = f.package(
        "blob",
        &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n"), ("blob.bin", &[7u8; 300_000])],
        None,
    );
    let roots = f.mp.w.pki.join("root-ca.pem");
    let ad = f.advertise("blob", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    f.wait_status(&ad, "the run", |s| s["counts"]["finished"] == 1);
    let log = f.agent_log();
    assert!(log.contains("resuming blob.bin from byte 100000"), "{log}");
    assert!(log.contains("downloading it again from the start"), "{log}");
    assert!(f.device().join("ran").exists());
}

#[test]
fn repair_keeps_what_is_not_yet_sent() {
    let mut f = Fleet::new("");
    let script = b"#!/bin/sh\nsleep 2\necho \"$DM_ACTION_ID\" >> \"$DM_DEVICE_ROOT/runs\"\n";
    let pkg = f.package("slow", &[("run.sh", script)], None);
    let roots = f.mp.w.pki.join("root-ca.pem");
    let ad = f.advertise("slow", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    // The server goes away while the program runs: its result waits in the outbox.
    wait_agent_log(&f, "running run.sh");
    f.mp.stop();
    wait_agent_log(&f, "run completed successfully");
    let outbox = f.device().join("var/lib/dm/outbox");
    let waiting = || std::fs::read_dir(&outbox).map_or(0, |d| d.count());
    assert!(waiting() > 0, "the result is not waiting");
    // The client is repaired meanwhile.
    let folder = f.mp.w.path("client-1.0.0.0");
    let out = run(
        Command::new(folder.join(format!("dmclientsetup_{}", host_platform())))
            .arg("--repair")
            .arg("--source")
            .arg(&folder)
            .arg("--device-root")
            .arg(f.device()),
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(waiting() > 0, "the repair dropped the unsent result");
    // The server is back: the result arrives, and the program did not run twice.
    f.mp.restart();
    f.wait_status(&ad, "the result", |s| s["counts"]["finished"] == 1);
    let runs = std::fs::read_to_string(f.device().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");
}

#[test]
fn an_upgrade_the_server_refuses_is_rolled_back() {
    let f = Fleet::new("");
    let health = || {
        let text = std::fs::read_to_string(f.device().join("run/dm/agent-health.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    assert_eq!(health()["checked"], "the management point answered its first poll");
    // 1.1.0.0 comes with a token the management point does not know for this device.
    let settings =
        crate::agent::device_settings(&f.mp, "").replace(crate::agent::TOKEN, "tok-wrong");
    let upgrade = f.client_folder("client-1.1.0.0", "1.1.0.0", &settings);
    f.mp.add_package(&upgrade);
    f.mp.admin(&["program", "add", "--package", "dm-client", "--name", "upgrade-client"]);
    f.mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    let args = ["advertise", "--name", "up", "--program", "upgrade-client", "--collection"];
    f.mp.admin(&[&args[..], &["everyone", "--mandatory"]].concat());
    let st = f.wait_status("up", "the rollback", |s| s["counts"]["error"] == 1);
    assert_eq!(st["devices"][0]["last_code"], 11021, "{st}");
    assert_eq!(
        std::fs::read_link(f.device().join("opt/dm/current")).unwrap(),
        Path::new("versions/1.0.0.0"),
        "the refused version stayed"
    );
    let setup = log_text(f.device(), "DMClientSetup");
    assert!(setup.contains("rolled back"), "{setup}");
    assert!(f.agent_log().contains("refuses this device"));
    // The old agent runs again, with its own settings, and is healthy by its poll.
    let start = Instant::now();
    while health()["version"] != "1.0.0.0" || health()["state"] != "running" {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", health());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn any_hawkbit_server_speaks_to_the_agent() {
    use crate::hostile::{self, Phase};
    use serde_json::Value;
    let w = World::new();
    let h = hostile::start(&w);
    hostile::install_client(&w, &h);
    hostile::wait_log(&w.device, "inventory sent", 0);
    let bundle_of = |version: &str| {
        let pkg = crate::trust::tools(&w, version);
        let file = w.bundle(&pkg, &w.path(&format!("bundle-{version}")));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        vec![(name, std::fs::read(&file).unwrap())]
    };
    let meta: &[(&str, &str)] = &[("dm.program", "run")];
    // A module type of another server, one signed bundle, and only SHA-1 and MD5 for it.
    h.offer(31, "os", ("tools", "3.0.0.0"), &bundle_of("3.0.0.0"), meta);
    {
        let mut offers = h.offers.lock().unwrap();
        let a = &mut offers.get_mut(&31).unwrap()["deployment"]["chunks"][0]["artifacts"][0];
        a["hashes"] = serde_json::json!({"sha1": "0".repeat(40), "md5": "0".repeat(32)});
    }
    // A module type of another server with plain files: refused before any download.
    let plain = crate::trust::files_of(&crate::trust::tools(&w, "3.0.0.5"));
    h.offer(32, "application", ("tools", "3.0.0.5"), &plain, meta);
    // The server reuses action id 31 for another deployment.
    h.offer(33, "os", ("tools", "3.0.0.7"), &bundle_of("3.0.0.7"), meta);
    h.offers.lock().unwrap().get_mut(&33).unwrap()["id"] = "31".into();
    h.set(Phase::Deploy(31));

    let fb = hostile::closed_feedback(&h, 31);
    assert_eq!(fb["status"]["result"]["finished"], "success", "{fb}");
    let log = wait_agent_log_of(&w.device, "the signed manifest says software-distribution");
    assert!(log.contains("gives no SHA-256 for tools-3.0.0.0.dmpkg"), "{log}");
    let fb = hostile::closed_feedback(&h, 32);
    assert_eq!(fb["status"]["code"], 10050, "{fb}");
    let announced =
        hostile::feedbacks(&h, 32).iter().any(|f| f["status"]["execution"] == "download");
    assert!(!announced, "a download was announced before the refusal");
    let start = Instant::now();
    while hostile::closed_feedbacks(&h, 31).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "the reused id never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second: Value = hostile::closed_feedbacks(&h, 31).pop().unwrap();
    assert_eq!(second["status"]["result"]["finished"], "success", "{second}");
    assert!(log_text(&w.device, "DMSvc").contains("reuses action ids"));
}

/// Waits until the agent log of `device` holds `needle` (a minute at most).
fn wait_agent_log_of(device: &Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = log_text(device, "DMSvc");
        if log.contains(needle) {
            return log;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no {needle:?} in:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
