//! The agent end to end: a device installed from a real deployment folder by the real
//! installer, its agent polling a real `dmmp` on loopback, programs advertised, run and
//! reported; failures, refusals, interrupted downloads, nginx as a distribution point, an
//! outage of the management point, and an upgrade of the client over the air.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mp::Mp;
use crate::util::*;

/// A management point and one device managed by it.
pub struct Fleet {
    pub mp: Mp,
    pub bins: PathBuf,
}

pub const TOKEN: &str = "tok-device-0001";

/// Device settings pointing at `mp`, taking the test server's short poll interval (unless
/// `extra` sets `MinPollInterval`).
pub fn device_settings(mp: &Mp, extra: &str) -> String {
    let floor = if extra.contains("MinPollInterval") { "" } else { "MinPollInterval=1\n" };
    format!(
        "[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint={}\nControllerId=dev-1\n\
         [Communication]\nTargetToken={TOKEN}\nPollInterval=10\nRetryMaxDelay=4\n{floor}{extra}",
        mp.url()
    )
}

impl Fleet {
    /// A management point and a device installed from a deployment folder, its agent running.
    pub fn new(extra_settings: &str) -> Fleet {
        Fleet::new_with(extra_settings, |_| {})
    }

    /// Like [`Fleet::new`], with `prepare` run on the device before the client is installed.
    pub fn new_with(extra_settings: &str, prepare: impl FnOnce(&Mp)) -> Fleet {
        let mp = Mp::start(|_| {});
        // Registered ahead by the administrator, as a fleet is: a device that only registered
        // itself would get no client deployment. A certificate speaks for itself.
        if !extra_settings.contains("Authentication=Certificate") {
            mp.admin(&["device", "add", "--id", "dev-1", "--token", TOKEN]);
        }
        prepare(&mp);
        let bins = mp.w.bin_dir("bins", None);
        let f = Fleet { mp, bins };
        let folder =
            f.client_folder("client-1.0.0.0", "1.0.0.0", &device_settings(&f.mp, extra_settings));
        f.mp.w.install_from_ok(&folder);
        f
    }

    pub fn client_folder(&self, name: &str, version: &str, ini: &str) -> PathBuf {
        self.mp.w.folder(
            name,
            version,
            &[(&host_platform(), &self.bins)],
            &[("DMCommonInstaller.ini", ini)],
            None,
        )
    }

    pub fn device(&self) -> &Path {
        &self.mp.w.device
    }

    pub fn agent_log(&self) -> String {
        log_text(self.device(), "DMSvc")
    }

    /// A signed package from `files` (the first file is the program, made executable).
    pub fn package(
        &self,
        name: &str,
        files: &[(&str, &[u8])],
        signer: Option<(&Path, &Path)>,
    ) -> PathBuf {
        let src = self.mp.w.path(&format!("{name}-src"));
        std::fs::create_dir_all(&src).unwrap();
        for (i, (f, data)) in files.iter().enumerate() {
            std::fs::write(src.join(f), data).unwrap();
            if i == 0 {
                std::fs::set_permissions(
                    src.join(f),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
            }
        }
        let out = self.mp.w.path(&format!("{name}-pkg"));
        sign_package(&self.mp.w, &src, &out, name, files[0].0, signer);
        out
    }

    /// Adds a package, a program and an advertisement to every device.
    pub fn advertise(
        &self,
        name: &str,
        pkg: &Path,
        roots: &Path,
        program: &[&str],
        adv: &[&str],
        dp: Option<&str>,
    ) -> String {
        let mut add = vec![
            "package",
            "add",
            "--source",
            pkg.to_str().unwrap(),
            "--roots",
            roots.to_str().unwrap(),
        ];
        if let Some(dp) = dp {
            add.extend_from_slice(&["--distribution-point", dp]);
        }
        self.mp.admin(&add);
        let prog = format!("{name}-run");
        let mut p = vec!["program", "add", "--package", name, "--name", &prog];
        p.extend_from_slice(program);
        self.mp.admin(&p);
        if !self.mp.admin(&["collection", "list"]).contains("everyone") {
            self.mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
        }
        let ad = format!("{name}-ad");
        let mut a =
            vec!["advertise", "--name", &ad, "--program", &prog, "--collection", "everyone"];
        a.extend_from_slice(adv);
        self.mp.admin(&a);
        ad
    }

    /// Waits until the advertisement's status satisfies `pred`.
    pub fn wait_status(&self, adv: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.mp.wait_status(adv, what, pred, || self.agent_log())
    }

    /// The device's status history for one action: (execution, message id, details).
    pub fn history(&self) -> Vec<Value> {
        self.mp.admin_json(&["device", "show", "dev-1"])["history"].as_array().unwrap().clone()
    }

    pub fn action_history(&self) -> Vec<(String, i64)> {
        self.history()
            .iter()
            .filter(|r| r["action_id"].is_i64())
            .map(|r| {
                (
                    r["execution"].as_str().unwrap_or("").to_string(),
                    r["message_id"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until `dmsvc available` lists package `name` 1.0.0.0; returns its action id.
    pub fn wait_available(&self, name: &str) -> String {
        let start = Instant::now();
        loop {
            let out = run(
                Command::new(bin("dmsvc")).arg("available").arg("--device-root").arg(self.device()),
                Duration::from_secs(10),
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains(&format!("{name} 1.0.0.0")) {
                return text.split('\t').next().unwrap().trim().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never listed\n{}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts the installed agent again (after a kill).
    pub fn start_agent(&self) {
        start_agent(self.device());
    }

    /// Waits up to a minute for `ok`; fails naming `what`, with the agent's log.
    pub fn wait_until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what} never happened:\n{}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn finished(st: &Value) -> bool {
    st["counts"]["finished"] == 1
}

fn errored(st: &Value) -> bool {
    st["counts"]["error"] == 1
}

#[test]
fn an_advertised_program_runs_and_its_success_is_reported() {
    let f = Fleet::new("");
    let script = b"#!/bin/sh\necho \"ran $DM_PACKAGE_NAME $DM_PACKAGE_VERSION as action $DM_ACTION_ID\"\nprintf '%s %s' \"$PWD\" \"$DM_CONTROLLER_ID\" > \"$DM_DEVICE_ROOT/ran\"\n";
    // An empty file is a file like any other (it once failed every download: 10034).
    let files: &[(&str, &[u8])] =
        &[("install.sh", script), ("data.txt", b"payload"), ("empty.txt", b"")];
    let pkg = f.package("tools", files, None);
    let ad = f.advertise(
        "tools",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "success", finished);
    assert_eq!(st["devices"][0]["last_code"], 10008);
    let ran = std::fs::read_to_string(f.device().join("ran")).unwrap();
    assert!(ran.contains("var/lib/dm/packages/tools-1.0.0.0-") && ran.ends_with(" dev-1"), "{ran}");
    assert_eq!(
        f.action_history(),
        [
            ("download".into(), 10002),
            ("downloaded".into(), 10003),
            ("proceeding".into(), 10005),
            ("closed".into(), 10008)
        ]
    );
    let log = f.agent_log();
    assert!(log.contains("program run [out]: ran tools 1.0.0.0 as action"), "{log}");
    // Inventory reached the management point.
    let d = f.mp.admin_json(&["device", "show", "dev-1"]);
    assert_eq!(d["device"]["attributes"]["platform"], host_platform());
    assert_eq!(d["device"]["attributes"]["client_version"], "1.0.0.0");
    assert!(
        d["device"]["attributes"]["installed_packages"].as_str().unwrap().contains("tools 1.0.0.0"),
        "{d}"
    );
    assert_eq!(d["device"]["attributes"]["client_health"], "healthy");
    // The setup result DMClientSetup queued reached it too, through the extension endpoint.
    assert!(
        f.history().iter().any(|r| r["component"] == "DMClientSetup" && r["message_id"] == 11010),
        "{:?}",
        f.history()
    );
}

#[test]
fn native_mode_authenticates_with_a_client_certificate() {
    // The device vendor put a client certificate for dev-1 and its key in the my store.
    let f = Fleet::new_with("Authentication=Certificate\n", |mp| {
        let (cert, key) = mp.w.cert("dev-1", "client", &[]);
        let thumb = dm_shared::pki::Cert::load_pem(&cert).unwrap()[0].thumbprint().to_string();
        let my = mp.w.device.join("etc/dm/certs/my");
        std::fs::create_dir_all(&my).unwrap();
        std::fs::copy(&cert, my.join(format!("{thumb}.pem"))).unwrap();
        std::fs::copy(&key, my.join(format!("{thumb}.key"))).unwrap();
    });
    let pkg = f.package("mtls", &[("run.sh", b"#!/bin/sh\ntrue\n")], None);
    let ad = f.advertise(
        "mtls",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    f.wait_status(&ad, "success", finished);
    let d = f.mp.admin_json(&["device", "show", "dev-1"]);
    assert_eq!(d["device"]["registered_by"], "certificate", "{d}");
}

#[test]
fn program_failure_and_timeout_are_reported() {
    let f = Fleet::new("");
    let pkg =
        f.package("fails", &[("run.sh", b"#!/bin/sh\necho 'disk not found' >&2\nexit 3\n")], None);
    let ad = f.advertise(
        "fails",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "the failure", errored);
    assert_eq!(st["devices"][0]["last_code"], 10006);
    assert!(st["devices"][0]["last_details"].to_string().contains("exit code 3"), "{st}");
    assert!(f.agent_log().contains("program run [err]: disk not found"));

    let pkg = f.package("hangs", &[("run.sh", b"#!/bin/sh\nsleep 600\n")], None);
    let ad = f.advertise(
        "hangs",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run", "--max-run-time", "2"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "the timeout", errored);
    assert_eq!(st["devices"][0]["last_code"], 10070);
    assert!(f.history().iter().any(|r| r["hresult"] == "0x800705B4"), "the timeout code");
}

#[test]
fn a_program_for_another_platform_is_refused_and_not_run() {
    let f = Fleet::new("");
    let pkg =
        f.package("riscv", &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")], None);
    let ad = f.advertise(
        "riscv",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run", "--platform", "linux-riscv64"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "the refusal", errored);
    assert_eq!(st["devices"][0]["last_code"], 10018);
    assert!(st["devices"][0]["last_details"].to_string().contains("requirements not met"), "{st}");
    assert!(!f.device().join("ran").exists());
}

#[test]
fn packages_from_untrusted_publishers_are_refused_and_nothing_runs() {
    let f = Fleet::new("");
    // Signed by a publisher of another PKI (the management point trusts it, the device not).
    let other = World::new();
    let pkg = f.package(
        "foreign",
        &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")],
        Some((&other.pki.join("publisher.pem"), &other.pki.join("publisher.key"))),
    );
    let ad = f.advertise(
        "foreign",
        &pkg,
        &other.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "the refusal", errored);
    assert_eq!(st["devices"][0]["last_code"], 10035);
    assert!(f.history().iter().any(|r| r["hresult"] == "0x800B0109"), "untrusted root code");
    // Chains to the device's root, but the publisher was never put in its spc store.
    let (cert, key) = f.mp.w.cert("Other Publisher", "code-signing", &[]);
    let pkg = f.package(
        "not-spc",
        &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")],
        Some((&cert, &key)),
    );
    let ad = f.advertise(
        "not-spc",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    f.wait_status(&ad, "the refusal", errored);
    assert!(f.history().iter().any(|r| r["hresult"] == "0x80040203"), "publisher not in spc");
    assert!(!f.device().join("ran").exists(), "an untrusted program ran");
    assert!(f.agent_log().contains("the package is not trusted; nothing was run"));
}

#[test]
fn an_available_program_waits_for_the_user_and_runs_on_request() {
    let f = Fleet::new("");
    let pkg =
        f.package("optional", &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")], None);
    let ad = f.advertise(
        "optional",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--available"],
        None,
    );
    let id = f.wait_available("optional");
    assert!(!f.device().join("ran").exists(), "an available program ran unasked");
    assert!(f.action_history().contains(&("scheduled".into(), 10037)), "{:?}", f.action_history());
    // hawkBit's confirmation flow: the server waits for the user's consent.
    let st = f.mp.admin_json(&["advertisement", "status", &ad]);
    assert_eq!(st["counts"]["waiting"], 1, "{st}");
    let out = run(
        Command::new(bin("dmsvc")).args(["run", &id, "--device-root"]).arg(f.device()),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), f.agent_log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed successfully"));
    assert!(f.device().join("ran").exists());
    f.wait_status(&ad, "success", finished);
    let consent = f.history().into_iter().find(|r| r["source"] == "confirmation");
    assert!(consent.is_some_and(|r| r["details"][0] == "confirmed"), "{:?}", f.history());
}

#[test]
fn cancel_before_start_is_honoured() {
    let f = Fleet::new("");
    let pkg =
        f.package("later", &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n")], None);
    let ad = f.advertise(
        "later",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--available"],
        None,
    );
    // Offered to the device's user for consent.
    f.wait_status(&ad, "delivery", |st| st["counts"]["waiting"] == 1);
    let start = Instant::now();
    while !f.agent_log().contains("waits for the device's user to consent") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    f.mp.admin(&["advertisement", "cancel", &ad]);
    let st = f.wait_status(&ad, "the cancellation", |st| st["counts"]["canceled"] == 1);
    assert_eq!(st["devices"][0]["last_code"], 10040);
    assert!(!f.device().join("ran").exists());
    assert!(f.agent_log().contains("was canceled before its program started"));
}

#[test]
fn an_interrupted_download_resumes_from_its_partial_file() {
    // 1 MiB/s: the 6 MiB artifact takes long enough to kill the agent half way.
    let f = Fleet::new("BandwidthLimit=1024\n");
    let big: Vec<u8> =
        (0..6u32 * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let pkg = f.package("big", &[("run.sh", b"#!/bin/sh\ncmp -s big.bin \"$DM_DEVICE_ROOT/../expected.bin\" && touch \"$DM_DEVICE_ROOT/ran\"\n"), ("big.bin", &big)], None);
    std::fs::write(f.device().parent().unwrap().join("expected.bin"), &big).unwrap();
    let ad = f.advertise(
        "big",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    let start = Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(f.device().join("var/lib/dm/cache")).ok().and_then(|rd| {
            rd.flatten().find_map(|d| {
                let p = d.path().join(".big.bin.partial");
                std::fs::metadata(&p).ok().filter(|m| m.len() > 1024 * 1024).map(|_| p)
            })
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no partial download\n{}",
            f.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    kill_agent(f.device());
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < big.len() as u64);
    f.start_agent();
    f.wait_status(&ad, "success", finished);
    assert!(f.device().join("ran").exists(), "the resumed file differs from the original");
    assert!(f.agent_log().contains("resuming big.bin from byte"), "{}", f.agent_log());
    assert!(f.mp.log_text().contains("resumes big.bin"), "the server saw no range request");
}

/// nginx serving a folder over TLS on loopback, as an external distribution point.
pub struct Nginx {
    child: std::process::Child,
    pub port: u16,
    prefix: PathBuf,
}

impl Nginx {
    pub fn start(w: &World, root: &Path) -> Nginx {
        let prefix = w.path("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  log_format withauth '$request $status auth=\"$http_authorization\"';\n  access_log {p}/logs/access.log withauth;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             \n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {root};\n  }}\n}}\n",
            p = prefix.display(),
            cert = w.pki.join("server.pem").display(),
            key = w.pki.join("server.key").display(),
            root = root.display()
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed by scripts/setup-peers.sh");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, port, prefix }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_same_package_from_nginx_as_an_external_distribution_point() {
    let f = Fleet::new("");
    let pkg = f.package(
        "from-dp",
        &[("run.sh", b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n"), ("blob.bin", &[9u8; 300_000])],
        None,
    );
    let htdocs = f.mp.w.path("htdocs");
    std::fs::create_dir_all(htdocs.join("pkgs")).unwrap();
    run_ok(Command::new("cp").arg("-a").arg(&pkg).arg(htdocs.join("pkgs/from-dp")));
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(f.mp.w.tmp.path()));
    let nginx = Nginx::start(&f.mp.w, &htdocs);
    let dp = format!("https://127.0.0.1:{}/pkgs/from-dp/", nginx.port);
    let ad = f.advertise(
        "from-dp",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        Some(&dp),
    );
    f.wait_status(&ad, "success", finished);
    assert!(f.device().join("ran").exists());
    let access = nginx.access_log();
    for file in ["run.sh", "blob.bin", "manifest.json", "manifest.sig", "publisher.pem"] {
        assert!(
            access.contains(&format!("GET /pkgs/from-dp/{file} ")),
            "nginx did not serve {file}:\n{access}"
        );
    }
    // The device's token goes to its management point only, never to a distribution point.
    assert!(!access.contains(TOKEN), "the token reached the distribution point:\n{access}");
    assert!(access.lines().all(|l| l.ends_with("auth=\"-\"")), "{access}");
}

#[test]
fn nothing_is_lost_while_the_management_point_is_down() {
    let mut f = Fleet::new("");
    let pkg = f.package("slow", &[("run.sh", b"#!/bin/sh\nsleep 3\necho done\n")], None);
    let ad = f.advertise(
        "slow",
        &pkg,
        &f.mp.w.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    f.wait_status(&ad, "the start", |st| st["devices"][0]["last_code"] == 10005);
    // The server goes away while the program runs; its final report waits in the outbox.
    f.mp.stop();
    let outbox = f.device().join("var/lib/dm/outbox");
    let start = Instant::now();
    while !f.agent_log().contains("run completed successfully") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::read_dir(&outbox).unwrap().count() >= 1,
        "the final report is not in the outbox"
    );
    // The agent is killed outright, and starts again while the server is still down.
    kill_agent(f.device());
    f.start_agent();
    std::thread::sleep(Duration::from_secs(2));
    assert!(f.agent_log().contains("poll failed"), "{}", f.agent_log());
    f.mp.restart();
    f.wait_status(&ad, "the delayed report", finished);
    let h = f.action_history();
    assert_eq!(
        h,
        [
            ("download".into(), 10002),
            ("downloaded".into(), 10003),
            ("proceeding".into(), 10005),
            ("closed".into(), 10008)
        ],
        "every report, once, in order"
    );
    let start = Instant::now();
    while std::fs::read_dir(&outbox).unwrap().count() > 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the outbox did not drain");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Advertises client 1.1.0.0 to every device as `client-1.1`; returns its folder.
fn advertise_client_upgrade(f: &Fleet) -> PathBuf {
    let upgrade = f.client_folder("client-1.1.0.0", "1.1.0.0", &device_settings(&f.mp, ""));
    f.mp.admin(&[
        "package",
        "add",
        "--source",
        upgrade.to_str().unwrap(),
        "--roots",
        f.mp.w.pki.join("root-ca.pem").to_str().unwrap(),
    ]);
    f.mp.admin(&["program", "add", "--package", "dm-client", "--name", "upgrade-client"]);
    f.mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    f.mp.admin(&[
        "advertise",
        "--name",
        "client-1.1",
        "--program",
        "upgrade-client",
        "--collection",
        "everyone",
        "--mandatory",
    ]);
    upgrade
}

/// A device locked by its security policy after its client was installed upgrades neither
/// over the air nor by hand: setup refuses, whoever starts it, and changes nothing.
#[test]
fn a_locked_device_refuses_upgrades_over_the_air_and_by_hand() {
    let f = Fleet::new("");
    std::fs::write(
        f.device().join("etc/dm/security-policy.ini"),
        "[DeviceSecurity]\nLocked=true\nReason=carrier lock\n",
    )
    .unwrap();
    let upgrade = advertise_client_upgrade(&f);
    f.wait_status("client-1.1", "the refusal", errored);
    assert!(f.history().iter().any(|r| r["hresult"] == "0x80070005"), "{:?}", f.history());
    let current = || std::fs::read_link(f.device().join("opt/dm/current")).unwrap();
    assert_eq!(current(), Path::new("versions/1.0.0.0"));
    let out = Command::new(f.device().join("opt/dm/current/dmclientsetup"))
        .arg("--source")
        .arg(&upgrade)
        .arg("--device-root")
        .arg(f.device())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrier lock"));
    assert_eq!(current(), Path::new("versions/1.0.0.0"));
}

#[test]
fn the_client_upgrades_itself_over_the_air() {
    let f = Fleet::new("");
    advertise_client_upgrade(&f);
    let st = f.wait_status("client-1.1", "the upgrade", finished);
    assert_eq!(st["devices"][0]["last_code"], 11021);
    assert_eq!(
        std::fs::read_link(f.device().join("opt/dm/current")).unwrap(),
        Path::new("versions/1.1.0.0")
    );
    let start = Instant::now();
    loop {
        let d = f.mp.admin_json(&["device", "show", "dev-1"]);
        if d["device"]["attributes"]["client_version"] == "1.1.0.0" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the new client's inventory never arrived: {d}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        f.history().iter().any(|r| r["component"] == "DMClientSetup" && r["message_id"] == 11011),
        "setup's upgrade message"
    );
}

/// Context switches of every thread of process `pid`: how often it was scheduled.
fn switches(pid: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Between polls the agent sleeps until its next poll, a signal, or a change it watches: with
/// a poll every five minutes it is not scheduled at all in three quiet seconds (it woke every
/// 200 ms before), and a `dmsvc run` request still wakes it at once.
#[test]
fn an_idle_agent_sleeps_until_it_has_work() {
    let f = Fleet::new("MinPollInterval=300\n");
    let start = Instant::now();
    while !f.agent_log().contains("inventory sent") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = std::fs::read_to_string(f.device().join("run/dm/dmsvc.pid")).unwrap();
    let pid = pid.trim().to_string();
    // Let the first poll's work end (its last writes wake it once), then count.
    std::thread::sleep(Duration::from_secs(1));
    let before = switches(&pid);
    std::thread::sleep(Duration::from_secs(3));
    let woke = switches(&pid) - before;
    assert!(woke <= 1, "the idle agent was scheduled {woke} times in 3 s");
    // Before it slept it unmapped the code it does not need asleep (device/src/trim.rs).
    let (resident, size) = program_code(&pid);
    assert!(
        resident * 4 < size,
        "the idle agent keeps {resident} KiB of its {size} KiB of code resident"
    );

    // A request of `dmsvc run` (for an action it does not have) is seen at once.
    let requests = f.device().join("var/lib/dm/requests");
    std::fs::write(requests.join("424242"), b"2026-12-07T00:00:00Z").unwrap();
    let start = Instant::now();
    while !f.agent_log().contains("dmsvc run 424242: no such action") {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The resident and total KiB of the executable code of process `pid`'s own program (its
/// `r-xp` mappings of `/proc/PID/exe`), from `/proc/PID/smaps`.
fn program_code(pid: &str) -> (u64, u64) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let exe = exe.to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut resident, mut size, mut ours) = (0, 0, false);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            ours = fields.get(1) == Some(&"r-xp") && fields.get(5) == Some(&exe.as_str());
        } else if ours {
            let kib = || fields.get(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            match fields.first() {
                Some(&"Size:") => size += kib(),
                Some(&"Rss:") => resident += kib(),
                _ => {}
            }
        }
    }
    assert!(size > 0, "no code of {exe} in /proc/{pid}/smaps");
    (resident, size)
}
