//! A fleet that outgrows one management point: several `dmmp serve` on one PostgreSQL
//! database (a private cluster, `initdb` and `pg_ctl` on loopback), behind HAProxy passing
//! TLS through, serving devices that run real agents. One instance killed mid-deployment, the
//! database restarted, an agent moving between instances, and a fleet migrated from SQLite.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dm_mp::storage::postgres::cluster::{self, Cluster};
use serde_json::Value;

use crate::mp::{Mp, advertise_package};
use crate::util::*;

/// A private PostgreSQL cluster in the world's folder and a database on it; `None` (the test
/// skips) when PostgreSQL is not installed, unless `DM_REQUIRE_POSTGRES` is set.
fn postgres(w: &World) -> Option<(Cluster, String)> {
    if !cluster::installed_for_tests().unwrap() {
        eprintln!("PostgreSQL is not installed: skipping");
        return None;
    }
    let c = Cluster::start(&w.path("pg")).unwrap();
    let url = c.database("fleet").unwrap();
    Some((c, url))
}

/// dmmp.toml edits: the database, a content folder every instance shares, and the public
/// URL devices are given links to (the balancer), if any.
fn on_postgres(text: &mut String, url: &str, content: &Path, public: Option<&str>) {
    *text = text
        .replace("database = \"dmmp.db\"", &format!("database = \"{url}\""))
        .replace("content = \"content\"", &format!("content = \"{}\"", content.display()));
    if let Some(p) = public {
        *text = text.replacen("[server]\n", &format!("[server]\npublic_url = \"{p}\"\n"), 1);
    }
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HAProxy on loopback in front of `backends`, TCP mode (TLS passes through, so mutual TLS
/// still works), each backend checked with `GET /healthz` every half second.
struct Balancer {
    child: Child,
    port: u16,
}

impl Balancer {
    fn start(dir: &Path, port: u16, backends: &[u16]) -> Balancer {
        let mut cfg = format!(
            "global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n\
             timeout server 60s\n    retries 3\n    option redispatch\nfrontend devices\n    bind 127.0.0.1:{port}\n\
             default_backend dmmp\nbackend dmmp\n    balance roundrobin\n    option httpchk GET /healthz\n\
             http-check expect status 200\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "    server mp{i} 127.0.0.1:{b} check check-ssl verify none inter 500ms fall 2 rise 1\n"
            ));
        }
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "haproxy did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Balancer { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Device roots with running agents, stopped when dropped.
pub struct Devices(pub Vec<(String, PathBuf)>);

impl Drop for Devices {
    fn drop(&mut self) {
        for (_, root) in &self.0 {
            kill_agent(root);
        }
    }
}

/// Registers and installs `n` devices (`dev-0`…) polling `points`, each in a root of its own.
pub fn devices(mp: &Mp, n: usize, points: &str) -> Devices {
    devices_from(mp, 0..n, points)
}

/// Registers and installs the devices numbered `ids` (`dev-<i>`) polling `points`.
pub fn devices_from(mp: &Mp, ids: std::ops::Range<usize>, points: &str) -> Devices {
    devices_with(mp, ids, points, |_| String::new())
}

/// [`devices_from`], with more settings for each device (`extra(i)`: lines of ini text under
/// `[Communication]`, then other sections).
pub fn devices_with(
    mp: &Mp,
    ids: std::ops::Range<usize>,
    points: &str,
    extra: impl Fn(usize) -> String,
) -> Devices {
    let bins = mp.w.bin_dir("bins", None);
    let mut out = Devices(Vec::new());
    for i in ids {
        let cid = format!("dev-{i}");
        let token = format!("tok-{cid}-0123456789");
        mp.admin(&["device", "add", "--id", &cid, "--token", &token]);
        let root = mp.w.path(&cid);
        let store = root.join("etc/dm/certs/root");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        std::fs::copy(mp.w.pki.join("root-ca.pem"), store.join("root-ca.pem")).unwrap();
        let ini = format!(
            "[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint={points}\n\
             ControllerId={cid}\n[Communication]\nTargetToken={token}\nPollInterval=10\nRetryMaxDelay=2\n\
             MinPollInterval=1\n{}",
            extra(i)
        );
        let folder = mp.w.folder(
            &format!("client-{cid}"),
            "1.0.0.0",
            &[(&host_platform(), &bins)],
            &[("DMCommonInstaller.ini", &ini)],
            None,
        );
        let installed = run(
            Command::new(folder.join(format!("dminstaller_{}", host_platform())))
                .arg("--device-root")
                .arg(&root),
            Duration::from_secs(120),
        );
        assert_eq!(installed.status.code(), Some(0), "{}", show(&installed));
        out.0.push((cid, root));
    }
    out
}

/// Waits up to `secs` for `f`, saying `what` if it never holds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what} (after {secs} s)");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(mp: &Mp, adv: &str) -> Value {
    mp.admin_json(&["advertisement", "status", adv])
}

/// The final reports (finished success or failure) stored for a device's actions.
fn finals(mp: &Mp, cid: &str) -> usize {
    let d = mp.admin_json(&["device", "show", cid]);
    d["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action_id"].is_i64() && s["finished"].is_string() && s["finished"] != "none")
        .count()
}

fn last_seen(mp: &Mp, cid: &str) -> i64 {
    mp.admin_json(&["device", "show", cid])["device"]["last_seen"].as_i64().unwrap_or(0)
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn two_instances_behind_haproxy_lose_nothing_when_one_is_killed_or_the_database_restarts() {
    let w = World::new();
    let Some((pg, url)) = postgres(&w) else { return };
    let lb_port = free_port();
    let lb_url = format!("https://127.0.0.1:{lb_port}");
    let content = w.path("content");
    let mut a = Mp::start(|t| on_postgres(t, &url, &content, Some(&lb_url)));
    let b = Mp::join(&a);
    let lb = Balancer::start(&w.path(""), lb_port, &[a.port, b.port]);
    assert_eq!(lb.url(), lb_url);
    let fleet = devices(&a, 3, &lb_url);

    // A deployment whose program runs for a while; instance a is killed while it runs.
    let script: &[u8] = b"#!/bin/sh\nsleep 4\necho deployed\n";
    let adv = advertise_package(&a, "slow", &[("run.sh", script)], &["--mandatory"]);
    let diag = |what: &str| {
        let logs: Vec<String> =
            fleet.0.iter().map(|(c, r)| format!("{c}:\n{}", log_text(r, "DMSvc"))).collect();
        format!("{what}: {}\n{}\nb:\n{}", status(&b, &adv), logs.join("\n"), b.log_text())
    };
    let start = Instant::now();
    loop {
        let s = status(&b, &adv);
        let c = &s["counts"];
        if c["running"].as_u64().unwrap_or(0) + c["retrieved"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{}", diag("no device started"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed_at = now();
    a.kill();
    let done = || status(&b, &adv)["counts"]["finished"] == 3;
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(90), "{}", diag("not finished everywhere"));
        std::thread::sleep(Duration::from_millis(200));
    }
    for (cid, _) in &fleet.0 {
        assert_eq!(finals(&b, cid), 1, "{cid}: its final report was not stored exactly once");
    }
    eventually(30, "devices stopped polling after the kill", || {
        fleet.0.iter().all(|(cid, _)| last_seen(&b, cid) > killed_at)
    });

    // The database goes away: the instance says so to the balancer, then reconnects, reloads,
    // and serves the next deployment.
    pg.stop().unwrap();
    eventually(20, "healthz stayed 200 without a database", || {
        let r = crate::mp::curl(&b, &[&format!("{}/healthz", b.url())]);
        r.status == 503 && r.json()["database"].as_str().unwrap().contains("reach the database")
    });
    pg.restart().unwrap();
    eventually(30, "the instance did not recover after the database restarted", || {
        let r = crate::mp::curl(&b, &[&format!("{}/healthz", b.url())]);
        r.status == 200
    });
    // Admin commands work through any instance's configuration, a's too: the database is one.
    let adv2 =
        advertise_package(&a, "after", &[("run.sh", b"#!/bin/sh\necho again\n")], &["--mandatory"]);
    eventually(90, "the deployment after the restart did not finish", || {
        status(&b, &adv2)["counts"]["finished"] == 3
    });
    assert!(
        b.log_text().contains("listening for changes by other dmmp instances"),
        "{}",
        b.log_text()
    );
}

#[test]
fn an_agent_moves_to_the_next_management_point_when_one_stops_answering() {
    let w = World::new();
    let Some((_pg, url)) = postgres(&w) else { return };
    let content = w.path("content");
    let mut a = Mp::start(|t| on_postgres(t, &url, &content, None));
    let b = Mp::join(&a);
    let fleet = devices(&a, 1, &format!("{}, {}", a.url(), b.url()));
    let (cid, root) = &fleet.0[0];
    eventually(30, "the device never polled", || last_seen(&b, cid) > 0);
    a.stop();
    let stopped = now();
    let adv =
        advertise_package(&a, "tools", &[("run.sh", b"#!/bin/sh\necho hi\n")], &["--mandatory"]);
    eventually(60, "the device did not reach the second instance", || {
        status(&b, &adv)["counts"]["finished"] == 1
    });
    eventually(10, "the second instance did not record the device's polls", || {
        last_seen(&b, cid) >= stopped
    });
    let log = log_text(root, "DMSvc");
    assert!(log.contains(&format!("the next poll goes to {}", b.url())), "{log}");
}

#[test]
fn a_fleet_migrated_from_sqlite_is_served_the_same_from_postgresql() {
    let w = World::new();
    let Some((_pg, url)) = postgres(&w) else { return };
    let mut mp = Mp::start(|_| {});
    let fleet = devices(&mp, 2, &mp.url());
    let adv =
        advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\necho hi\n")], &["--mandatory"]);
    eventually(60, "the first deployment did not finish", || {
        status(&mp, &adv)["counts"]["finished"] == 2
    });
    let before: Vec<Value> =
        fleet.0.iter().map(|(cid, _)| mp.admin_json(&["device", "show", cid])).collect();
    mp.stop();

    let out = mp.admin(&[
        "migrate",
        "--from",
        &format!("sqlite:{}", mp.dir.join("dmmp.db").display()),
        "--to",
        &url,
    ]);
    assert!(out.contains("devices") && out.contains("every table holds as many rows"), "{out}");
    let again = run(
        Command::new(bin("dmmp")).arg("--config").arg(mp.dir.join("dmmp.toml")).args([
            "migrate",
            "--from",
            &format!("sqlite:{}", mp.dir.join("dmmp.db").display()),
            "--to",
            &url,
        ]),
        Duration::from_secs(60),
    );
    assert_ne!(again.status.code(), Some(0), "migrated into a database that holds a fleet");
    assert!(show(&again).contains("not empty"), "{}", show(&again));

    let cfg = mp.dir.join("dmmp.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("database = \"dmmp.db\"", &format!("database = \"{url}\"")))
        .unwrap();
    mp.restart();
    for ((cid, _), old) in fleet.0.iter().zip(&before) {
        let new = mp.admin_json(&["device", "show", cid]);
        assert_eq!(new["actions"], old["actions"], "{cid}");
        assert_eq!(new["history"], old["history"], "{cid}");
    }
    // The finished deployment stays finished; a new one reaches both devices.
    let adv2 =
        advertise_package(&mp, "more", &[("run.sh", b"#!/bin/sh\necho more\n")], &["--mandatory"]);
    eventually(60, "the deployment after the migration did not finish", || {
        status(&mp, &adv2)["counts"]["finished"] == 2
    });
    assert_eq!(status(&mp, &adv)["counts"]["finished"], 2);
}
