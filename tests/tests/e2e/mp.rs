//! The management point: a real `dmmp serve` on loopback, driven by its admin commands and by
//! real HTTP clients (curl; SWUpdate's suricatta in swupdate.rs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// A running `dmmp serve` with its own folder, PKI and database.
pub struct Mp {
    pub w: World,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    pub log: PathBuf,
    /// The file descriptor limit `dmmp serve` runs with, when set.
    pub fd_limit: Option<u32>,
}

impl Mp {
    /// Starts a management point; `tweak` edits dmmp.toml before it starts.
    pub fn start(tweak: impl FnOnce(&mut String)) -> Mp {
        let w = World::new();
        let dir = w.path("mp");
        run_ok(
            Command::new(bin("dmmp"))
                .arg("init")
                .arg("--dir")
                .arg(&dir)
                .args(["--listen", "127.0.0.1:0", "--poll-sleep", "2"])
                // These tests drive devices that register themselves on their first poll.
                .args(["--unknown-devices", "register", "--tls-cert"])
                .arg(w.pki.join("server.pem"))
                .arg("--tls-key")
                .arg(w.pki.join("server.key"))
                .arg("--client-ca")
                .arg(w.pki.join("root-ca.pem")),
        );
        let cfg = dir.join("dmmp.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text = text.replace("last_seen_flush_secs = 10", "last_seen_flush_secs = 1");
        tweak(&mut text);
        std::fs::write(&cfg, text).unwrap();
        let mut mp = Mp { w, dir, port: 0, child: None, log: PathBuf::new(), fd_limit: None };
        mp.spawn();
        mp
    }

    fn spawn(&mut self) {
        self.log = self.dir.join(format!("serve-{}.log", rand_u64()));
        let log = std::fs::File::create(&self.log).unwrap();
        let mut cmd = match self.fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
                    .arg(n.to_string())
                    .arg(bin("dmmp"));
                c
            }
            None => Command::new(bin("dmmp")),
        };
        let mut child = cmd
            .arg("--config")
            .arg(self.dir.join("dmmp.toml"))
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening https://").unwrap_or_else(|| {
            panic!(
                "dmmp serve said {line:?}; log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        });
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    /// Another instance of `first`'s fleet: its configuration (TLS identity, database,
    /// content folder) with a port of its own, in a folder of its own.
    pub fn join(first: &Mp) -> Mp {
        let mut w = World::new();
        // The same PKI: this process's HTTPS client trusts the first's root CA.
        w.pki = first.w.pki.clone();
        let dir = w.path("mp");
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(first.dir.join("dmmp.toml")).unwrap();
        std::fs::write(dir.join("dmmp.toml"), with_listen(&text, 0)).unwrap();
        let mut mp = Mp { w, dir, port: 0, child: None, log: PathBuf::new(), fd_limit: None };
        mp.spawn();
        mp
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (SIGTERM, as a service manager would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let cfg = self.dir.join("dmmp.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, with_listen(&text, self.port)).unwrap();
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn base(&self, cid: &str) -> String {
        format!("{}/DEFAULT/controller/v1/{cid}", self.url())
    }

    /// Runs an admin command; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = run_ok(
            Command::new(bin("dmmp")).arg("--config").arg(self.dir.join("dmmp.toml")).args(args),
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `dmmp package add` of a signed folder, its chain checked against the world's root.
    pub fn add_package(&self, folder: &Path) -> String {
        let roots = self.w.pki.join("root-ca.pem");
        let (folder, roots) = (folder.to_str().unwrap(), roots.to_str().unwrap());
        self.admin(&["package", "add", "--source", folder, "--roots", roots])
    }

    /// Runs an admin command that must fail; returns what it said (stderr).
    pub fn admin_fails(&self, args: &[&str]) -> String {
        let out = Command::new(bin("dmmp"))
            .arg("--config")
            .arg(self.dir.join("dmmp.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "dmmp {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs an admin command with --json.
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let out = run_ok(
            Command::new(bin("dmmp"))
                .arg("--config")
                .arg(self.dir.join("dmmp.toml"))
                .arg("--json")
                .args(args),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Value {
        let r = curl(self, &[&format!("{}/healthz", self.url())]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Runs an admin command that changes the database and waits until the server's view
    /// holds the change: the readiness signal, instead of sleeping and hoping.
    pub fn admin_seen(&self, args: &[&str]) -> String {
        let fresh = |h: &Value| h["view"]["fresh"] == true;
        let reloads = |h: &Value| h["view"]["reloads"].as_u64().unwrap();
        let start = Instant::now();
        let mut h = self.health();
        while !fresh(&h) {
            assert!(start.elapsed() < Duration::from_secs(20), "the view never settled: {h}");
            std::thread::sleep(Duration::from_millis(20));
            h = self.health();
        }
        let before = reloads(&h);
        let out = self.admin(args);
        loop {
            let h = self.health();
            if fresh(&h) && reloads(&h) > before {
                return out;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the server never saw {args:?}: {h}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server's log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "server log never said {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// dmmp.toml `text` listening on loopback port `port` (0: any).
fn with_listen(text: &str, port: u16) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Mp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
    /// Response headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTPS request from this process (ureq, trusting the world's root CA), described with
/// curl's flags so tests read like the command lines an administrator would try: `-X METHOD`,
/// `-H 'Name: value'`, `--data-binary BODY`, `--cert FILE --key FILE`, `--path-as-is`, then
/// the URL.
pub fn curl(mp: &Mp, args: &[&str]) -> Resp {
    let (mut method, mut headers, mut body, mut cert, mut key, mut url) =
        ("GET", Vec::new(), None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-X" => method = it.next().unwrap(),
            "-H" => headers.push(it.next().unwrap().split_once(':').unwrap()),
            "--data-binary" => body = Some(*it.next().unwrap()),
            "--cert" => cert = Some(*it.next().unwrap()),
            "--key" => key = Some(*it.next().unwrap()),
            // ureq sends the path as given, dot segments and all.
            "--path-as-is" => {}
            u if !u.starts_with('-') => url = Some(u),
            other => panic!("curl flag {other} is not supported by this test client"),
        }
    }
    let agent = https_agent(&mp.w.pki.join("root-ca.pem"), cert.zip(key));
    let url = url.expect("a URL");
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.trim(), v.trim());
    }
    let result = match body {
        Some(b) => agent.run(req.body(b.as_bytes().to_vec()).unwrap()),
        None => agent.run(req.body(()).unwrap()),
    };
    match result {
        Ok(mut resp) => Resp {
            headers: resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            status: resp.status().as_u16(),
            body: resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap_or_default(),
        },
        // A refused handshake or a broken connection: curl's status 0.
        Err(_) => Resp { status: 0, body: Vec::new(), headers: Vec::new() },
    }
}

/// An HTTPS client trusting `root` (and presenting a client certificate when given).
pub fn https_agent(root: &Path, client: Option<(&str, &str)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let pem = std::fs::read(root).unwrap();
    let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(RootCerts::new_with_certs(&roots));
    if let Some((cert, key)) = client {
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&std::fs::read(cert).unwrap())
            .filter_map(|i| match i.unwrap() {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let key = PrivateKey::from_pem(&std::fs::read(key).unwrap()).unwrap().to_owned();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// curl as a device with a target token.
pub fn as_device(mp: &Mp, token: &str, args: &[&str]) -> Resp {
    let auth = format!("Authorization: TargetToken {token}");
    let mut all = vec!["-H", &auth];
    all.extend_from_slice(args);
    curl(mp, &all)
}

/// Makes and signs a software distribution package with dmpack, adds it, a program, an
/// all-devices collection (once) and a mandatory advertisement. Returns the advertisement name.
pub fn advertise_package(
    mp: &Mp,
    name: &str,
    files: &[(&str, &[u8])],
    extra_adv: &[&str],
) -> String {
    let src = mp.w.path(&format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    for (f, data) in files {
        std::fs::write(src.join(f), data).unwrap();
    }
    let out = mp.w.path(&format!("{name}-pkg"));
    sign_package(&mp.w, &src, &out, name, "run.sh", None);
    mp.admin(&[
        "package",
        "add",
        "--source",
        out.to_str().unwrap(),
        "--roots",
        mp.w.pki.join("root-ca.pem").to_str().unwrap(),
    ]);
    mp.admin(&[
        "program",
        "add",
        "--package",
        name,
        "--name",
        &format!("{name}-run"),
        "--program",
        "run",
    ]);
    if !mp.admin(&["collection", "list"]).contains("everyone") {
        mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    }
    let adv = format!("{name}-ad");
    let prog = format!("{name}-run");
    let mut args =
        vec!["advertise", "--name", &adv, "--program", &prog, "--collection", "everyone"];
    args.extend_from_slice(extra_adv);
    mp.admin(&args);
    adv
}

impl Mp {
    /// Waits until the advertisement's status satisfies `pred`; on timeout the message
    /// includes `context()` (a client's log) and the server's log.
    pub fn wait_status(
        &self,
        adv: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        context: impl Fn() -> String,
    ) -> Value {
        let start = Instant::now();
        loop {
            let st = self.admin_json(&["advertisement", "status", adv]);
            if pred(&st) {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{what} never happened: {st}\n--- client:\n{}\n--- server log:\n{}",
                context(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Polls until the server (which reloads admin changes within a second) offers `link`.
pub fn poll_until_link(mp: &Mp, token: &str, cid: &str, link: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = as_device(mp, token, &[&mp.base(cid)]);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if v["_links"].get(link).is_some() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no {link} link: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn feedback(execution: &str, finished: &str, code: i32, details: &[&str]) -> String {
    serde_json::json!({"status": {"execution": execution, "result": {"finished": finished}, "code": code, "details": details}}).to_string()
}

fn post(mp: &Mp, token: &str, url: &str, body: &str) -> Resp {
    as_device(
        mp,
        token,
        &["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body, url],
    )
}

fn history_len(mp: &Mp, cid: &str) -> usize {
    mp.admin_json(&["device", "show", cid])["history"].as_array().unwrap().len()
}

#[test]
fn a_device_registers_polls_receives_an_advertisement_and_reports() {
    let mp = Mp::start(|_| {});
    let r = as_device(&mp, "tok-0001", &[&mp.base("dev-1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["config"]["polling"]["sleep"], "00:00:02");
    assert!(
        v["_links"]["configData"]["href"].as_str().unwrap().starts_with(&mp.base("dev-1")),
        "links use the bound port: {v}"
    );
    let r = as_device(
        &mp,
        "tok-0001",
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"data":{"platform":"linux-x86_64","client_version":"1.0.0.0"}}"#,
            &format!("{}/configData", mp.base("dev-1")),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let adv =
        advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\necho hi\n")], &["--mandatory"]);
    let v = poll_until_link(&mp, "tok-0001", "dev-1", "deploymentBase");
    let href = v["_links"]["deploymentBase"]["href"].as_str().unwrap().to_string();
    let d = as_device(&mp, "tok-0001", &[&href]).json();
    let chunk = &d["deployment"]["chunks"][0];
    assert_eq!(
        (d["deployment"]["download"].as_str(), d["deployment"]["update"].as_str()),
        (Some("forced"), Some("forced"))
    );
    assert_eq!(chunk["part"], "software-distribution");
    let files: Vec<&str> = chunk["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["filename"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["manifest.json", "manifest.sig", "publisher.pem", "run.sh"]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    let meta: std::collections::BTreeMap<&str, &str> = chunk["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["key"].as_str().unwrap(), m["value"].as_str().unwrap()))
        .collect();
    // The signed command, for people: the agent runs what the manifest signs.
    assert_eq!(meta["dm.command"], r#"["run.sh"]"#);
    assert_eq!(meta["dm.program"], "run");
    assert_eq!(meta["dm.advertisement-kind"], "mandatory");

    // The artifact, whole, ranged and its MD5SUM.
    let run_sh =
        chunk["artifacts"].as_array().unwrap().iter().find(|a| a["filename"] == "run.sh").unwrap();
    let url = run_sh["_links"]["download"]["href"].as_str().unwrap();
    let whole = as_device(&mp, "tok-0001", &[url]);
    assert_eq!((whole.status, whole.text().as_str()), (200, "#!/bin/sh\necho hi\n"));
    let part = as_device(&mp, "tok-0001", &["-H", "Range: bytes=10-", url]);
    assert_eq!((part.status, part.text().as_str()), (206, "echo hi\n"));
    let bad = as_device(&mp, "tok-0001", &["-H", "Range: bytes=100-", url]);
    assert_eq!(bad.status, 416);
    let md5 = as_device(&mp, "tok-0001", &[run_sh["_links"]["md5sum"]["href"].as_str().unwrap()]);
    assert_eq!(md5.text(), format!("{}  run.sh\n", run_sh["hashes"]["md5"].as_str().unwrap()));

    let fb = format!("{}/deploymentBase/{}/feedback", mp.base("dev-1"), d["id"].as_str().unwrap());
    // Each report twice, as a device resends one whose acknowledgement was lost: stored once,
    // and the resent final report is acknowledged, not refused as feedback on a closed action.
    let started = feedback("proceeding", "none", 10005, &["started ./run.sh", "dm.report=r-1"]);
    let done = feedback(
        "closed",
        "success",
        10008,
        &["exit code 0", "status 0x00000000", "dm.report=r-2"],
    );
    for body in [&started, &started, &done, &done] {
        assert_eq!(post(&mp, "tok-0001", &fb, body).status, 200);
    }
    let history = mp.admin_json(&["device", "show", "dev-1"])["history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert!(mp.log_text().contains("report r-2 again"));
    // A report without an id is a new report: on a closed action it is refused.
    let bare = feedback("closed", "success", 10008, &["exit code 0"]);
    assert_eq!(post(&mp, "tok-0001", &fb, &bare).status, 410);
    let st = mp.admin_json(&["advertisement", "status", &adv]);
    assert_eq!(st["counts"]["finished"], 1, "{st}");
    assert_eq!(st["devices"][0]["last_code"], 10008);
    let text = mp.admin(&["status", &adv]);
    assert!(text.contains("finished: 1") && text.contains("dev-1"), "{text}");
    let v = poll_until_link(&mp, "tok-0001", "dev-1", "installedBase");
    assert!(
        v["_links"].get("deploymentBase").is_none(),
        "a finished action is not offered again: {v}"
    );
}

#[test]
fn authentication_by_token_gateway_and_certificate() {
    let mp = Mp::start(|t| {
        *t = t.replace(
            "target_token = true",
            "target_token = true\ngateway_token = \"gateway-secret-0123456789\"",
        )
    });
    // A registered device with an admin-issued token.
    let token = mp.admin(&["device", "add", "--id", "scanner-7"]).trim().to_string();
    assert_eq!(as_device(&mp, &token, &[&mp.base("scanner-7")]).status, 200);
    let wrong = as_device(&mp, "not-the-token", &[&mp.base("scanner-7")]);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["errorCode"], "dm.auth.required");
    mp.wait_log("the target token of device scanner-7 does not match");
    assert_eq!(curl(&mp, &[&mp.base("scanner-7")]).status, 401, "no credentials");
    // Gateway token acts for any device.
    let gw = curl(
        &mp,
        &["-H", "Authorization: GatewayToken gateway-secret-0123456789", &mp.base("behind-gw-1")],
    );
    assert_eq!(gw.status, 200, "{}", gw.text());
    assert_eq!(
        curl(&mp, &["-H", "Authorization: GatewayToken nope", &mp.base("behind-gw-1")]).status,
        401
    );

    // Client certificates issued by the configured client CA: the CN is the controller id.
    let (cert, key) = mp.w.cert("cert-dev-1", "client", &[]);
    let with_cert = |cid: &str, c: &Path, k: &Path| {
        curl(&mp, &["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap(), &mp.base(cid)])
    };
    assert_eq!(with_cert("cert-dev-1", &cert, &key).status, 200);
    let other = with_cert("someone-else", &cert, &key);
    assert_eq!(other.status, 403);
    assert!(
        other.text().contains("is for \\\"cert-dev-1\\\"") || other.text().contains("cert-dev-1"),
        "{}",
        other.text()
    );
    let (old_c, old_k) = mp.w.cert(
        "cert-dev-2",
        "client",
        &["--valid-from", "2020-01-01T00:00:00Z", "--valid-until", "2021-01-01T00:00:00Z"],
    );
    let expired = with_cert("cert-dev-2", &old_c, &old_k);
    assert_eq!(expired.status, 403);
    assert!(expired.text().contains("expired"), "{}", expired.text());
    let foreign = World::new();
    let (fc, fk) = foreign.cert("cert-dev-3", "client", &[]);
    let r = with_cert("cert-dev-3", &fc, &fk);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not issued by this server's client CA"), "{}", r.text());
    mp.wait_log("403 the client certificate is expired");
    // A certificate naming a device registered with a token is refused until pinned: the
    // device presents it once with its token.
    let (sc, sk) = mp.w.cert("scanner-7", "client", &[]);
    let r = with_cert("scanner-7", &sc, &sk);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not pinned"), "{}", r.text());
    let auth = format!("Authorization: TargetToken {token}");
    let (sc_s, sk_s) = (sc.to_str().unwrap(), sk.to_str().unwrap());
    let both = curl(&mp, &["-H", &auth, "--cert", sc_s, "--key", sk_s, &mp.base("scanner-7")]);
    assert_eq!(both.status, 200, "{}", both.text());
    assert_eq!(with_cert("scanner-7", &sc, &sk).status, 200, "pinned");
    let devices = mp.admin(&["device", "list"]);
    assert!(
        devices.contains("cert-dev-1")
            && !devices.contains("cert-dev-2")
            && !devices.contains("cert-dev-3"),
        "{devices}"
    );
}

#[test]
fn unknown_devices_are_refused_when_configured() {
    let mp = Mp::start(|t| {
        *t = t.replace("unknown_devices = \"register\"", "unknown_devices = \"refuse\"")
    });
    let r = as_device(&mp, "tok", &[&mp.base("stranger")]);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("not registered"), "{}", r.text());
    assert!(!mp.admin(&["device", "list"]).contains("stranger"));
    let token = mp.admin(&["device", "add", "--id", "known"]).trim().to_string();
    assert_eq!(as_device(&mp, &token, &[&mp.base("known")]).status, 200);
}

#[test]
fn bad_requests_get_the_right_status_and_store_nothing() {
    let mp = Mp::start(|_| {});
    as_device(&mp, "tok-a", &[&mp.base("dev-a")]);
    as_device(&mp, "tok-b", &[&mp.base("dev-b")]);
    advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\n")], &["--mandatory"]);
    let va = poll_until_link(&mp, "tok-a", "dev-a", "deploymentBase");
    poll_until_link(&mp, "tok-b", "dev-b", "deploymentBase");
    let href_a = va["_links"]["deploymentBase"]["href"].as_str().unwrap();
    let action_a = href_a.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let before = (history_len(&mp, "dev-a"), history_len(&mp, "dev-b"));

    let fb_a = format!("{}/deploymentBase/{action_a}/feedback", mp.base("dev-a"));
    let cases: Vec<(Resp, u16, &str)> = vec![
        (post(&mp, "tok-a", &fb_a, "{\"status\": {\"execution\": "), 400, "malformed JSON"),
        (
            post(
                &mp,
                "tok-a",
                &fb_a,
                r#"{"status":{"execution":"exploded","result":{"finished":"success"}}}"#,
            ),
            400,
            "unknown execution",
        ),
        (
            post(
                &mp,
                "tok-a",
                &format!("{}/deploymentBase/999999/feedback", mp.base("dev-a")),
                &feedback("proceeding", "none", 1, &[]),
            ),
            404,
            "unknown action",
        ),
        (
            post(
                &mp,
                "tok-b",
                &format!("{}/deploymentBase/{action_a}/feedback", mp.base("dev-b")),
                &feedback("closed", "success", 1, &[]),
            ),
            404,
            "another device's action",
        ),
        (
            post(&mp, "tok-a", &fb_a, &feedback("proceeding", "none", 1, &[&"x".repeat(70_000)])),
            413,
            "oversized body",
        ),
        (
            post(&mp, "tok-a", &fb_a, &feedback("proceeding", "none", 1, &vec!["line"; 101])),
            400,
            "too many detail lines",
        ),
        (
            as_device(
                &mp,
                "tok-a",
                &[&format!(
                    "{}/softwaremodules/1/artifacts/..%2F..%2F..%2Fetc%2Fpasswd",
                    mp.base("dev-a")
                )],
            ),
            404,
            "path traversal",
        ),
        (
            as_device(
                &mp,
                "tok-a",
                &[
                    &format!(
                        "{}/softwaremodules/1/artifacts/../../../../etc/passwd",
                        mp.base("dev-a")
                    ),
                    "--path-as-is",
                ],
            ),
            404,
            "raw dot segments",
        ),
        (
            as_device(
                &mp,
                "tok-a",
                &[&format!("{}/softwaremodules/999/artifacts/run.sh", mp.base("dev-a"))],
            ),
            404,
            "unassigned module",
        ),
        (
            as_device(&mp, "tok-a", &[&format!("{}/cancelAction/{action_a}", mp.base("dev-a"))]),
            404,
            "no cancellation",
        ),
        (
            as_device(
                &mp,
                "tok-a",
                &[
                    "-X",
                    "PUT",
                    "--data-binary",
                    "[1,2]",
                    &format!("{}/configData", mp.base("dev-a")),
                ],
            ),
            400,
            "configData not an object",
        ),
        (
            as_device(
                &mp,
                "tok-a",
                &[&format!("{}/controller/v1/dev-a", mp.url())
                    .replace("/controller", "/OTHER/controller")],
            ),
            404,
            "unknown tenant",
        ),
        (
            as_device(&mp, "tok-a", &[&format!("{}/DEFAULT/controller/v1/bad%20id", mp.url())]),
            400,
            "bad controller id",
        ),
    ];
    for (resp, want, what) in cases {
        assert_eq!(resp.status, want, "{what}: {}", resp.text());
        if want != 413 {
            assert!(
                resp.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: no ExceptionInfo message"
            );
        }
    }
    assert_eq!(
        (history_len(&mp, "dev-a"), history_len(&mp, "dev-b")),
        before,
        "a refused request stored something"
    );
    mp.wait_log("404 action 999999 is not an action of device dev-a");
    assert_eq!(
        mp.admin_json(&["advertisement", "status", "tools-ad"])["counts"]["scheduled"],
        2,
        "the actions did not move"
    );

    // Closed actions take no more feedback: 410.
    assert_eq!(
        post(&mp, "tok-a", &fb_a, &feedback("closed", "failure", 10006, &["exit code 3"])).status,
        200
    );
    let gone = post(&mp, "tok-a", &fb_a, &feedback("proceeding", "none", 1, &[]));
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(history_len(&mp, "dev-a"), before.0 + 1);
}

#[test]
fn concurrent_feedback_for_one_action_is_consistent() {
    let mp = Mp::start(|_| {});
    as_device(&mp, "tok", &[&mp.base("dev-c")]);
    advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\n")], &["--mandatory"]);
    let v = poll_until_link(&mp, "tok", "dev-c", "deploymentBase");
    let id = v["_links"]["deploymentBase"]["href"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let fb = format!("{}/deploymentBase/{id}/feedback", mp.base("dev-c"));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (mp, fb) = (&mp, &fb);
                s.spawn(move || {
                    let body = if i == 12 {
                        feedback("closed", "success", 10008, &["done"])
                    } else {
                        feedback("proceeding", "none", 10005, &[&format!("step {i}")])
                    };
                    post(mp, "tok", fb, &body).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    let gone = statuses.iter().filter(|s| **s == 410).count();
    assert_eq!(accepted + gone, statuses.len(), "{statuses:?}");
    let st = mp.admin_json(&["advertisement", "status", "tools-ad"]);
    assert_eq!(st["counts"]["finished"], 1, "the close wins and sticks: {st}");
    assert_eq!(
        history_len(&mp, "dev-c"),
        accepted,
        "every accepted feedback stored once, every refused one not at all"
    );
    let history = mp.admin_json(&["device", "show", "dev-c"])["history"].clone();
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["execution"],
        "closed",
        "nothing was accepted after the close"
    );
}

#[test]
fn cancel_before_start_and_cancel_rejected() {
    let mp = Mp::start(|_| {});
    as_device(&mp, "tok1", &[&mp.base("dev-1")]);
    as_device(&mp, "tok2", &[&mp.base("dev-2")]);
    advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\n")], &["--mandatory"]);
    for (t, d) in [("tok1", "dev-1"), ("tok2", "dev-2")] {
        poll_until_link(&mp, t, d, "deploymentBase");
    }
    let out = mp.admin_seen(&["advertisement", "cancel", "tools-ad"]);
    assert!(out.contains("2 device(s) told to cancel"), "{out}");
    for (t, d, confirm, want) in
        [("tok1", "dev-1", "canceled", "canceled"), ("tok2", "dev-2", "rejected", "running")]
    {
        let v = poll_until_link(&mp, t, d, "cancelAction");
        let href = v["_links"]["cancelAction"]["href"].as_str().unwrap();
        let c = as_device(&mp, t, &[href]).json();
        assert_eq!(c["cancelAction"]["stopId"], c["id"]);
        let r =
            post(&mp, t, &format!("{href}/feedback"), &feedback(confirm, "success", 10010, &[]));
        assert_eq!(r.status, 200, "{}", r.text());
        let st = mp.admin_json(&["device", "show", d]);
        assert_eq!(st["actions"][0]["status"], want, "{st}");
    }
    let st = mp.admin_json(&["advertisement", "status", "tools-ad"]);
    assert_eq!(
        (st["counts"]["canceled"].as_u64(), st["counts"]["running"].as_u64()),
        (Some(1), Some(1)),
        "{st}"
    );
    // A canceled advertisement reaches no new device.
    as_device(&mp, "tok3", &[&mp.base("dev-3")]);
    let v = as_device(&mp, "tok3", &[&mp.base("dev-3")]).json();
    assert!(v["_links"].get("deploymentBase").is_none(), "{v}");
}

#[test]
fn collections_by_platform_start_times_and_maintenance_windows() {
    let mp = Mp::start(|_| {});
    for (tok, cid, platform) in [("t1", "arm-1", "linux-aarch64"), ("t2", "x86-1", "linux-x86_64")]
    {
        as_device(&mp, tok, &[&mp.base(cid)]);
        let body = format!(r#"{{"data":{{"platform":"{platform}"}}}}"#);
        assert_eq!(
            as_device(
                &mp,
                tok,
                &["-X", "PUT", "--data-binary", &body, &format!("{}/configData", mp.base(cid))]
            )
            .status,
            200
        );
    }
    mp.admin(&["collection", "add", "--name", "arm", "--rule", "platform=linux-aarch64"]);
    let members = mp.admin(&["collection", "members", "arm"]);
    assert!(members.contains("arm-1") && !members.contains("x86-1"), "{members}");
    advertise_package(&mp, "fw", &[("run.sh", b"#!/bin/sh\n")], &["--mandatory"]);
    poll_until_link(&mp, "t1", "arm-1", "deploymentBase");
    // Re-point the advertisement's audience: a second advertisement of the same program.
    let now = std::time::SystemTime::now();
    let closed_window = {
        let h = (dm_shared::clock::unix_secs(now) / 3600 + 2) % 24;
        format!("{:02}:00-{:02}:00", h, (h + 1) % 24)
    };
    mp.admin(&[
        "advertise",
        "--name",
        "arm-only",
        "--program",
        "fw-run",
        "--collection",
        "arm",
        "--mandatory",
        "--maintenance-window",
        &closed_window,
    ]);
    mp.admin_seen(&["advertisement", "cancel", "fw-ad"]);
    // x86-1: only the canceled advertisement; arm-1 gets arm-only too.
    let v = poll_until_link(&mp, "t1", "arm-1", "cancelAction");
    let href = v["_links"]["cancelAction"]["href"].as_str().unwrap();
    post(&mp, "t1", &format!("{href}/feedback"), &feedback("canceled", "success", 1, &[]));
    let v = poll_until_link(&mp, "t1", "arm-1", "deploymentBase");
    let d = as_device(&mp, "t1", &[v["_links"]["deploymentBase"]["href"].as_str().unwrap()]).json();
    assert_eq!(d["deployment"]["maintenanceWindow"], "unavailable", "{d}");
    assert_eq!(
        d["deployment"]["update"], "skip",
        "outside its window a mandatory program does not run: {d}"
    );
    // A future start time: not offered yet.
    let later = dm_shared::clock::rfc3339(now + Duration::from_secs(3600));
    mp.admin_seen(&[
        "advertise",
        "--name",
        "later",
        "--program",
        "fw-run",
        "--collection",
        "everyone",
        "--start",
        &later,
    ]);
    let v = as_device(&mp, "t2", &[&mp.base("x86-1")]).json();
    assert!(v["_links"].get("deploymentBase").is_none(), "{v}");
    let list = mp.admin(&["advertisement", "list"]);
    assert!(list.contains("pending") && list.contains("canceled"), "{list}");
    // An advertisement without a window of its own takes its collection's.
    mp.admin(&["collection", "add", "--name", "x86", "--rule", "platform=linux-x86_64"]);
    mp.admin(&["collection", "window", "x86", &closed_window]);
    mp.admin_seen(&[
        "advertise",
        "--name",
        "x86-fw",
        "--program",
        "fw-run",
        "--collection",
        "x86",
        "--mandatory",
    ]);
    let v = poll_until_link(&mp, "t2", "x86-1", "deploymentBase");
    let d = as_device(&mp, "t2", &[v["_links"]["deploymentBase"]["href"].as_str().unwrap()]).json();
    assert_eq!(d["deployment"]["maintenanceWindow"], "unavailable", "{d}");
    assert_eq!(d["deployment"]["update"], "skip", "the collection's window is closed: {d}");
}

#[test]
fn last_seen_is_batched_and_survives_a_restart() {
    let mut mp =
        Mp::start(|t| *t = t.replace("last_seen_flush_secs = 1", "last_seen_flush_secs = 3600"));
    for _ in 0..20 {
        assert_eq!(as_device(&mp, "tok", &[&mp.base("busy-1")]).status, 200);
    }
    let d = mp.admin_json(&["device", "show", "busy-1"]);
    assert!(d["device"]["last_seen"].is_null(), "20 polls wrote last-seen to disk: {d}");
    // A clean stop writes what it kept in memory, in one batch.
    let first_log = mp.log.clone();
    mp.restart();
    let d = mp.admin_json(&["device", "show", "busy-1"]);
    assert!(d["device"]["last_seen"].as_i64().is_some(), "{d}");
    let log = std::fs::read_to_string(first_log).unwrap();
    assert!(log.contains("stopped; recorded 1 last-seen times"), "{log}");
}

#[test]
fn packages_on_an_external_distribution_point_link_there() {
    let mp = Mp::start(|_| {});
    as_device(&mp, "tok", &[&mp.base("dev-x")]);
    let src = mp.w.path("ext-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), vec![7u8; 1000]).unwrap();
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\ntrue\n").unwrap();
    let pkg = mp.w.path("ext-pkg");
    sign_package(&mp.w, &src, &pkg, "ext", "run.sh", None);
    mp.admin(&[
        "package",
        "add",
        "--source",
        pkg.to_str().unwrap(),
        "--roots",
        mp.w.pki.join("root-ca.pem").to_str().unwrap(),
        "--distribution-point",
        "https://dp.example.com:8444/pkgs/ext/",
    ]);
    mp.admin(&["program", "add", "--package", "ext", "--name", "ext-run", "--program", "run"]);
    mp.admin(&["collection", "add", "--name", "all", "--rule", "all"]);
    mp.admin(&["advertise", "--name", "ext-ad", "--program", "ext-run", "--collection", "all"]);
    let v = poll_until_link(&mp, "tok", "dev-x", "deploymentBase");
    let d =
        as_device(&mp, "tok", &[v["_links"]["deploymentBase"]["href"].as_str().unwrap()]).json();
    let a = d["deployment"]["chunks"][0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["filename"] == "big.bin")
        .unwrap()
        .clone();
    assert_eq!(a["_links"]["download"]["href"], "https://dp.example.com:8444/pkgs/ext/big.bin");
    assert_eq!(a["size"], 1000);
    let listed = mp.admin(&["package", "list"]);
    assert!(listed.contains("https://dp.example.com:8444/pkgs/ext/"), "{listed}");
    // A package whose publisher the server does not trust is refused at import.
    let other = World::new();
    let untrusted = mp.w.path("untrusted-pkg");
    sign_package(
        &mp.w,
        &src,
        &untrusted,
        "bad",
        "run.sh",
        Some((&other.pki.join("publisher.pem"), &other.pki.join("publisher.key"))),
    );
    let out = run(
        Command::new(bin("dmmp"))
            .arg("--config")
            .arg(mp.dir.join("dmmp.toml"))
            .args(["package", "add", "--source"])
            .arg(&untrusted)
            .arg("--roots")
            .arg(mp.w.pki.join("root-ca.pem")),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(32), "{}", show(&out));
}

#[test]
fn registration_is_refused_by_default_capped_and_scoped_by_tenant() {
    // A new installation refuses devices nobody added.
    let w = World::new();
    run_ok(
        Command::new(bin("dmmp"))
            .args(["init", "--dir"])
            .arg(w.path("fresh"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(w.pki.join("server.pem"))
            .arg("--tls-key")
            .arg(w.pki.join("server.key")),
    );
    let fresh = std::fs::read_to_string(w.path("fresh/dmmp.toml")).unwrap();
    assert!(fresh.contains("unknown_devices = \"refuse\""), "{fresh}");

    // With registration on: two tenants, and at most 3 registrations a minute.
    let mp = Mp::start(|t| {
        *t = t
            .replace("tenants = [\"DEFAULT\"]", "tenants = [\"DEFAULT\", \"B\"]")
            .replace("registrations_per_minute = 60", "registrations_per_minute = 3");
    });
    let poll = |tenant: &str, cid: &str| {
        let url = format!("{}/{tenant}/controller/v1/{cid}", mp.url());
        as_device(&mp, "tok-same", &[&url])
    };
    for (tenant, cid) in [("DEFAULT", "a-1"), ("B", "b-1"), ("B", "b-2")] {
        assert_eq!(poll(tenant, cid).status, 200, "{tenant}/{cid}");
    }
    let over = poll("DEFAULT", "a-2");
    assert_eq!(over.status, 429, "{}", over.text());
    assert_eq!(over.json()["errorCode"], "dm.registration.throttled");
    assert!(mp.log_text().contains("registrations_per_minute"));

    // Tenant A's advertisement reaches tenant A's device only.
    advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\necho hi\n")], &["--mandatory"]);
    poll_until_link(&mp, "tok-same", "a-1", "deploymentBase");
    for cid in ["b-1", "b-2"] {
        let v = poll("B", cid).json();
        assert!(v["_links"].get("deploymentBase").is_none(), "tenant B got A's action: {v}");
    }
    // Nor can an administrator put a device of B into A's collection by hand.
    let out = run(
        Command::new(bin("dmmp")).arg("--config").arg(mp.dir.join("dmmp.toml")).args([
            "collection",
            "members",
            "everyone",
            "--add",
            "B/b-1",
        ]),
        Duration::from_secs(30),
    );
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(show(&out).contains("is not of tenant DEFAULT"), "{}", show(&out));
}

#[test]
fn a_self_registered_device_gets_no_client_deployment_until_approved() {
    let mp = Mp::start(|_| {});
    let bins = mp.w.bin_dir("bins", Some(0));
    let settings =
        "[Installation]\nClientInstallAction=Install\n[Communication]\nTargetToken=fleet-secret\n";
    let folder = mp.w.folder(
        "client",
        "1.0.0.1",
        &[(&host_platform(), &bins)],
        &[("DMCommonInstaller.ini", settings)],
        None,
    );
    mp.add_package(&folder);
    mp.admin(&["program", "add", "--package", "dm-client", "--name", "up"]);
    mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    mp.admin(&[
        "advertise",
        "--name",
        "up",
        "--program",
        "up",
        "--collection",
        "everyone",
        "--mandatory",
    ]);
    // Anyone can be the first to poll as "stranger": it gets no client deployment, whose
    // settings hold the fleet's secrets.
    assert_eq!(as_device(&mp, "tok-x", &[&mp.base("stranger")]).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let v = as_device(&mp, "tok-x", &[&mp.base("stranger")]).json();
    assert!(v["_links"].get("deploymentBase").is_none(), "{v}");
    assert!(mp.log_text().contains("dmmp device approve DEFAULT/stranger"));
    mp.admin(&["device", "approve", "stranger"]);
    poll_until_link(&mp, "tok-x", "stranger", "deploymentBase");
}

/// A TLS connection to `mp` that then sends `hello` (nothing, or the start of an HTTP/2
/// conversation) and keeps quiet.
fn silent_connection(
    mp: &Mp,
    cfg: &std::sync::Arc<rustls::ClientConfig>,
    hello: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use std::io::Write;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", mp.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    if !hello.is_empty() {
        tls.write_all(hello).unwrap();
        tls.flush().unwrap();
    }
    tls
}

#[test]
fn a_flood_of_idle_connections_never_stops_a_device() {
    use rustls_pki_types::pem::PemObject;
    let mut mp = Mp::start(|t| {
        *t = t
            .replace("first_request_timeout_secs = 10", "first_request_timeout_secs = 3")
            .replace("idle_timeout_secs = 60", "idle_timeout_secs = 3");
    });
    // 256 file descriptors: room for about 190 connections.
    mp.fd_limit = Some(256);
    mp.restart();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(mp.w.pki.join("root-ca.pem")).unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = std::sync::Arc::new(cfg);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    // A HEADERS frame (stream 1) without END_HEADERS: a request that never completes.
    let mut headers = preface.clone();
    headers.extend_from_slice(b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82");
    // 300 connections: TLS and nothing more, an HTTP/2 preface and SETTINGS only, and an
    // HTTP/2 request that never ends its headers.
    let mut flood = Vec::new();
    for i in 0..300 {
        let hello: &[u8] = match i % 3 {
            0 => b"",
            1 => &preface,
            _ => &headers,
        };
        flood.push(silent_connection(&mp, &cfg, hello));
    }
    // A device polls through it all.
    let r = as_device(&mp, "tok-flood", &[&mp.base("dev-1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    mp.wait_log("connections full");
    // And the silent ones are closed within their deadline.
    std::thread::sleep(Duration::from_secs(5));
    let mut closed = 0;
    for s in flood.iter_mut() {
        s.sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // What the server sent first (HTTP/2 SETTINGS), then its end, or a timeout.
        let mut b = [0u8; 256];
        loop {
            match std::io::Read::read(s, &mut b) {
                Ok(0) => break closed += 1,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(_) => break closed += 1,
            }
        }
    }
    assert_eq!(closed, flood.len(), "connections still open");
    let r = as_device(&mp, "tok-flood", &[&mp.base("dev-1")]);
    assert_eq!(r.status, 200);
}

#[test]
fn packages_whose_names_run_together_keep_their_own_files() {
    let mp = Mp::start(|_| {});
    let src = mp.w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\necho one\n").unwrap();
    let pkg = mp.w.path("pkg");
    sign_package_as(&mp.w, &src, &pkg, ("dm-client", "1.2.0.345"), "run.sh", None);
    let roots = mp.w.pki.join("root-ca.pem");
    mp.admin(&[
        "package",
        "add",
        "--source",
        pkg.to_str().unwrap(),
        "--roots",
        roots.to_str().unwrap(),
    ]);
    // A raw package whose name and version, joined with '-', read the same.
    let raw = mp.w.path("fw.swu");
    std::fs::write(&raw, b"firmware").unwrap();
    mp.admin(&[
        "package",
        "add",
        "--raw",
        raw.to_str().unwrap(),
        "--name",
        "dm",
        "--package-version",
        "client-1.2.0.345",
    ]);
    let content: Vec<String> = std::fs::read_dir(mp.dir.join("content"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(content.len(), 2, "{content:?}");
    let first = mp.dir.join("content").join("dm%2Dclient-1.2.0.345");
    assert_eq!(std::fs::read(first.join("run.sh")).unwrap(), b"#!/bin/sh\necho one\n");
}
