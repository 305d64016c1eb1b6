//! Distribution points: real `dmmp serve --role distribution-point` processes, three on
//! loopback (one copying from another: a pull chain) and one in a network namespace of its
//! own as a second site, reached over a veth link; real agents in two sites. A package is
//! distributed and reaches installed everywhere; each device downloads from its site's
//! distribution point; one is killed mid-download and the device finishes from the next
//! source at the same offset; a file corrupted on one is refused by the device (it fails the
//! signed hash) and replaced by a validation; a new version reaches every distribution point
//! holding the old one, which goes; a removed package is gone; forged and expired links are
//! refused with 403.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::instances::{devices_with, free_port, now};
use crate::mp::{Mp, curl};
use crate::util::*;

/// A second site: a network namespace joined to this one by a veth link
/// (`10.231.N.1` here, `10.231.N.2` there); the namespace resolves `localhost` to this side,
/// where a relay forwards to the management point on loopback (its certificate names
/// `localhost`), as a site's WAN link would.
struct Site {
    ns: String,
    net: u32,
    relay_port: u16,
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

impl Site {
    fn new(mp_port: u16) -> Site {
        let pid = std::process::id();
        let (ns, net) = (format!("dmt{pid}"), 20 + pid % 200);
        let (host, guest) = (format!("{ns}h"), format!("{ns}g"));
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &guest]);
        ip(&["link", "set", &guest, "netns", &ns]);
        ip(&["addr", "add", &format!("10.231.{net}.1/24"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("10.231.{net}.2/24"), "dev", &guest]);
        inside(&["link", "set", &guest, "up"]);
        inside(&["link", "set", "lo", "up"]);
        let etc = PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hosts"), format!("10.231.{net}.1 localhost\n")).unwrap();
        let relay_port = relay(&format!("10.231.{net}.1"), mp_port);
        Site { ns, net, relay_port }
    }

    /// The address of the namespace's side.
    fn guest(&self) -> String {
        format!("10.231.{}.2", self.net)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &format!("{}h", self.ns)]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

/// Forwards connections to `addr`:(a free port) to the management point's loopback port;
/// returns the port.
fn relay(addr: &str, to: u16) -> u16 {
    let l = std::net::TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", to)) else { continue };
            let (mut a, mut b) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            let (mut a, mut b) = (up, c);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A running distribution point.
struct Dp {
    name: String,
    dir: PathBuf,
    credential: String,
    netns: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Dp {
    /// Registers distribution point `name` at `url` (`dp add` with `args`), writes its
    /// configuration (listening on `listen`, reaching the management point at `mp_url`, with
    /// the TLS identity `tls`) and starts it, in `netns` when given.
    #[allow(clippy::too_many_arguments)]
    fn start(
        mp: &Mp,
        name: &str,
        url: &str,
        listen: &str,
        mp_url: &str,
        tls: (&Path, &Path),
        netns: Option<&str>,
        args: &[&str],
    ) -> Dp {
        let mut all = vec!["dp", "add", "--name", name, "--url", url];
        all.extend_from_slice(args);
        let added = mp.admin_json(&all);
        let credential = added["credential"].as_str().unwrap().to_string();
        let dir = mp.w.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_private(&dir.join("credential"), credential.as_bytes());
        let roots = mp.w.pki.join("root-ca.pem");
        let cfg = format!(
            "[server]\nlisten = \"{listen}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [distribution_point]\nmanagement_point = \"{mp_url}\"\nca = \"{}\"\n\
             credential = \"credential\"\ncontent = \"content\"\npackage_roots = \"{}\"\n",
            tls.0.display(),
            tls.1.display(),
            roots.display(),
            roots.display()
        );
        std::fs::write(dir.join("dp.toml"), cfg).unwrap();
        let mut dp = Dp {
            name: name.into(),
            dir,
            credential,
            netns: netns.map(str::to_string),
            child: None,
            log: PathBuf::new(),
        };
        dp.spawn();
        dp
    }

    fn spawn(&mut self) {
        // One log across restarts.
        self.log = self.dir.join("serve.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("dmmp"));
                c
            }
            None => Command::new(bin("dmmp")),
        };
        let mut child = cmd
            .arg("--config")
            .arg(self.dir.join("dp.toml"))
            .args(["serve", "--role", "distribution-point"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("listening https://"),
            "{}: {line:?}\n{}",
            self.name,
            self.log_text()
        );
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The folder it keeps package `id` in.
    fn package_dir(&self, id: i64) -> PathBuf {
        self.dir.join("content").join(id.to_string())
    }
}

impl Drop for Dp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small tmpfs mounted at a folder (made), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(at),
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn write_private(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

/// Waits up to `secs` for `f`; on timeout says `what` and `context()`.
fn eventually(secs: u64, what: &str, context: impl Fn() -> String, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} (after {secs} s)\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The states of package `pkg` by distribution point.
fn states(mp: &Mp, pkg: &str) -> Vec<(String, String)> {
    let s = mp.admin_json(&["dp", "status", "--package", pkg]);
    let mut v: Vec<(String, String)> = s["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["distribution_point"].as_str().unwrap().into(), r["state"].as_str().unwrap().into())
        })
        .collect();
    v.sort();
    v
}

fn all_installed(mp: &Mp, pkg: &str, dps: &[&str]) -> bool {
    let want: Vec<(String, String)> =
        dps.iter().map(|d| (d.to_string(), "installed".to_string())).collect();
    states(mp, pkg) == want
}

/// `n` bytes that do not compress (a payload worth cutting mid-download).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Signs and adds package `big` `version` (a program and an 8 MiB payload); returns its id.
fn big(mp: &Mp, version: &str, seed: u64) -> i64 {
    let src = mp.w.path(&format!("big-{version}-src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho big ran >> \"$DM_DEVICE_ROOT/runs\"\n")
        .unwrap();
    std::fs::write(src.join("payload.bin"), noise(8 << 20, seed)).unwrap();
    let out = mp.w.path(&format!("big-{version}-pkg"));
    sign_package_as(&mp.w, &src, &out, ("big", version), "run.sh", None);
    mp.add_package(&out);
    let p = mp.admin_json(&["package", "list"]);
    p.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "big" && p["version"] == version)
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn packages_are_copied_to_distribution_points_and_devices_download_from_the_nearest() {
    let mp = Mp::start(|t| *t = t.replace("sync_secs = 60", "sync_secs = 1"));
    let site = Site::new(mp.port);
    let pki = &mp.w.pki;
    let (cert, key) = (pki.join("server.pem"), pki.join("server.key"));
    // The second site's distribution point has a certificate for its address there.
    let b_dir = mp.w.path("dp-b-tls");
    std::fs::create_dir_all(&b_dir).unwrap();
    run_ok(
        Command::new(bin("dmpack"))
            .args(["cert", "--ca-dir"])
            .arg(pki)
            .args(["--cn", "dp-b", "--purpose", "server", "--server-name", &site.guest()])
            .arg("--out-cert")
            .arg(b_dir.join("cert.pem"))
            .arg("--out-key")
            .arg(b_dir.join("key.pem")),
    );
    let (pa, pc) = (free_port(), free_port());
    let mp_url = mp.url();
    let mut dp_a = Dp::start(
        &mp,
        "dp-a",
        &format!("https://127.0.0.1:{pa}"),
        &format!("127.0.0.1:{pa}"),
        &mp_url,
        (&cert, &key),
        None,
        &["--site", "A"],
    );
    let b_url = format!("https://{}:4443", site.guest());
    let relay = format!("https://localhost:{}", site.relay_port);
    let (b_cert, b_key) = (b_dir.join("cert.pem"), b_dir.join("key.pem"));
    let dp_b = Dp::start(
        &mp,
        "dp-b",
        &b_url,
        &format!("{}:4443", site.guest()),
        &relay,
        (&b_cert, &b_key),
        Some(&site.ns),
        &["--site", "B", "--boundary", &format!("{}/24", site.guest())],
    );
    let dp_c = Dp::start(
        &mp,
        "dp-c",
        &format!("https://127.0.0.1:{pc}"),
        &format!("127.0.0.1:{pc}"),
        &mp_url,
        (&cert, &key),
        None,
        &["--site", "C", "--pull-from", "dp-a"],
    );
    let dp_logs = [dp_a.log.clone(), dp_b.log.clone(), dp_c.log.clone()];
    let logs = || {
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- dp-a:\n{}\n--- dp-b:\n{}\n--- dp-c:\n{}\n--- mp:\n{}",
            read(&dp_logs[0]),
            read(&dp_logs[1]),
            read(&dp_logs[2]),
            mp.log_text()
        )
    };

    // Distributed to all three: each reaches installed, dp-c by way of dp-a.
    let v1 = big(&mp, "1.0.0.0", 1);
    mp.admin(&["dp", "distribute", "big@1.0.0.0", "--dp", "dp-a", "--dp", "dp-b"]);
    eventually(60, "dp-a and dp-b hold big 1.0", logs, || {
        all_installed(&mp, "big@1.0.0.0", &["dp-a", "dp-b"])
    });
    mp.admin(&["dp", "distribute", "big@1.0.0.0", "--dp", "dp-c"]);
    eventually(60, "dp-c holds big 1.0", logs, || {
        all_installed(&mp, "big@1.0.0.0", &["dp-a", "dp-b", "dp-c"])
    });
    assert!(
        dp_a.log_text().contains(&format!("serving package {v1} \"payload.bin\" to dp:dp-c")),
        "{}",
        logs()
    );
    let report = mp.admin(&["report", "dp-packages", "--csv"]);
    assert!(report.contains("big,1.0.0.0,3,3,0,0"), "{report}");
    let report = mp.admin(&["report", "distribution-points", "--csv"]);
    assert_eq!(report.lines().filter(|l| l.ends_with(",1,1,0,0")).count(), 3, "{report}");
    let status = mp.admin(&["dp", "status"]);
    assert!(status.contains("TARGETED") && status.contains("installed"), "{status}");
    let h = mp.health();
    let names: Vec<&str> = h["distribution_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dp-a", "dp-b", "dp-c"], "{h}");
    assert!(
        h["distribution_points"][1]["reachable"] == true
            && h["distribution_points"][1]["free_bytes"].as_u64().unwrap() > 0,
        "{h}"
    );

    // Links: forged and expired ones are refused, and nothing is listed.
    let link = |key: &str, dev: &str, expires: i64| {
        format!(
            "https://127.0.0.1:{pa}{}",
            dm_mp::distribution::link(key, v1, "payload.bin", dev, expires)
        )
    };
    let key_a = dm_mp::distribution::link_key(&dp_a.credential);
    let now = now();
    assert_eq!(
        curl(&mp, &["-H", "Range: bytes=0-15", &link(&key_a, "dev-9", now + 60)]).status,
        206
    );
    assert_eq!(curl(&mp, &[&link(&key_a, "dev-9", now - 1)]).status, 403, "expired");
    assert_eq!(
        curl(&mp, &[&link(&dm_mp::distribution::link_key("dmdp_forged"), "dev-9", now + 60)])
            .status,
        403,
        "forged"
    );
    assert_eq!(
        curl(&mp, &[&format!("https://127.0.0.1:{pa}/content/{v1}/")]).status,
        404,
        "no listing"
    );
    assert!(dp_a.log_text().contains("refused (403): it expired"), "{}", logs());

    // Two devices: dev-0 in site A (its downloads slowed, to be cut), dev-1 in site B.
    let fleet = devices_with(&mp, 0..2, &mp_url, |i| {
        if i == 0 {
            "BandwidthLimit=1024\n[Environment]\nSiteCode=A\n".into()
        } else {
            "[Environment]\nSiteCode=B\n".into()
        }
    });
    let root = |i: usize| fleet.0[i].1.clone();
    mp.admin(&[
        "program",
        "add",
        "--package",
        "big@1.0.0.0",
        "--name",
        "big-1",
        "--program",
        "run",
    ]);
    mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    mp.admin(&["advertise", "--name", "big-1", "--program", "big-1", "--collection", "everyone"]);
    // dev-0 downloads from dp-a; dp-a is killed mid-download; dev-0 resumes from the
    // management point at the offset it had reached.
    eventually(60, "dev-0 downloads from dp-a", logs, || {
        dp_a.log_text().contains(&format!("serving package {v1} \"payload.bin\" to dev-0"))
    });
    // Killed once dev-0 holds a good part of it (its download is slowed to 1 MiB/s).
    let partial_len = || {
        let cache = root(0).join("var/lib/dm/cache");
        let actions = std::fs::read_dir(cache).into_iter().flatten().flatten();
        actions
            .filter_map(|a| std::fs::metadata(a.path().join(".payload.bin.partial")).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    eventually(30, "dev-0 has 1 MiB of the payload", logs, || partial_len() >= 1 << 20);
    dp_a.kill();
    let done = |adv: &str, n: usize| {
        let s = mp.admin_json(&["advertisement", "status", adv]);
        s["counts"]["finished"].as_u64() == Some(n as u64)
    };
    let devlogs = || {
        format!(
            "--- dev-0:\n{}\n--- dev-1:\n{}\n{}",
            log_text(&root(0), "DMSvc"),
            log_text(&root(1), "DMSvc"),
            logs()
        )
    };
    eventually(90, "both devices ran big 1.0", devlogs, || done("big-1", 2));
    let d0 = log_text(&root(0), "DMSvc");
    let resumed = d0
        .lines()
        .find(|l| l.contains("resuming payload.bin from byte"))
        .unwrap_or_else(|| panic!("{d0}"));
    let offset: u64 =
        resumed.split("from byte ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(offset > 0 && offset < 8 << 20, "{resumed}");
    assert!(
        d0.contains("trying the next source")
            && d0.contains("downloaded payload.bin from source 2 of 2"),
        "{d0}"
    );
    assert!(
        mp.log_text().contains(&format!("bytes={offset}-"))
            || d0.contains(&format!("from byte {offset}")),
        "{}",
        devlogs()
    );
    assert!(
        dp_b.log_text().contains(&format!("serving package {v1} \"payload.bin\" to dev-1")),
        "{}",
        devlogs()
    );
    assert!(!log_text(&root(1), "DMSvc").contains("trying the next source"), "{}", devlogs());

    // dp-a is back; a new version reaches every distribution point holding the old one, and
    // the old one goes.
    dp_a.spawn();
    let v2 = big(&mp, "1.1.0.0", 2);
    mp.admin(&["dp", "update", "big"]);
    eventually(90, "every distribution point holds big 1.1 and not 1.0", logs, || {
        all_installed(&mp, "big@1.1.0.0", &["dp-a", "dp-b", "dp-c"])
            && states(&mp, "big@1.0.0.0").is_empty()
    });
    for d in [&dp_a, &dp_b, &dp_c] {
        assert!(!d.package_dir(v1).exists() && d.package_dir(v2).exists(), "{}", d.name);
    }

    // dp-b's copy is corrupted: dev-1 refuses it, downloads from the management point, and
    // a validation reports it and copies it again.
    let payload = dp_b.package_dir(v2).join("payload.bin");
    let good = std::fs::read(&payload).unwrap();
    let mut bad = good.clone();
    bad[4096] ^= 0xff;
    std::fs::write(&payload, &bad).unwrap();
    mp.admin(&[
        "program",
        "add",
        "--package",
        "big@1.1.0.0",
        "--name",
        "big-2",
        "--program",
        "run",
    ]);
    mp.admin(&["advertise", "--name", "big-2", "--program", "big-2", "--collection", "everyone"]);
    eventually(90, "both devices ran big 1.1", devlogs, || done("big-2", 2));
    let d1 = log_text(&root(1), "DMSvc");
    assert!(
        d1.contains(&format!("from {b_url}/content/{v2}/payload.bin failed"))
            && d1.contains("SHA-256"),
        "{d1}"
    );
    mp.admin(&["dp", "validate", "big@1.1.0.0", "--dp", "dp-b"]);
    eventually(60, "dp-b reports the corrupt file and copies it again", logs, || {
        let h = mp.health();
        let errors = h["distribution_points"][1]["content_errors"].to_string();
        errors.contains("payload.bin")
            && all_installed(&mp, "big@1.1.0.0", &["dp-a", "dp-b", "dp-c"])
            && std::fs::read(&payload).is_ok_and(|b| sha256_hex(&b) == sha256_hex(&good))
    });
    assert!(
        mp.log_text().contains("distribution point dp-b: package")
            && mp.log_text().contains("install-retrying"),
        "{}",
        logs()
    );

    // A distribution point whose disk is too small for the package: install-failed, and
    // the reason says so.
    let full_dir = mp.w.path("dp-full");
    let _mount = Tmpfs::mount(&full_dir.join("content"), "16m");
    let pf = free_port();
    let _dp_full = Dp::start(
        &mp,
        "dp-full",
        &format!("https://127.0.0.1:{pf}"),
        &format!("127.0.0.1:{pf}"),
        &mp_url,
        (&cert, &key),
        None,
        &[],
    );
    mp.admin(&["dp", "distribute", "big@1.1.0.0", "--dp", "dp-full"]);
    eventually(60, "dp-full reports that it is full", logs, || {
        let s = mp.admin_json(&["dp", "status", "--dp", "dp-full"]);
        let r = &s["content"][0];
        r["state"] == "install-failed"
            && r["reason"].as_str().is_some_and(|t| t.contains("the distribution point is full"))
    });

    // Removed: gone from every distribution point.
    mp.admin(&["dp", "remove", "big@1.1.0.0", "--dp", "all"]);
    eventually(60, "big 1.1 removed everywhere", logs, || states(&mp, "big@1.1.0.0").is_empty());
    for d in [&dp_a, &dp_b, &dp_c] {
        assert!(!d.package_dir(v2).exists(), "{}", d.name);
    }
    // Retired: its credential stops working at once.
    mp.admin(&["dp", "retire", "dp-c"]);
    eventually(30, "dp-c is refused", logs, || dp_c.log_text().contains("HTTP 401"));
    let key_b = dm_mp::distribution::link_key(&dp_a.credential);
    assert_eq!(
        curl(
            &mp,
            &[&format!(
                "https://127.0.0.1:{pa}{}",
                dm_mp::distribution::link(&key_b, v2, "payload.bin", "dev-9", now + 60)
            )]
        )
        .status,
        404
    );
}
