//! A hostile management point: malformed JSON, a 2 GB body, one byte every 10 s, 500 and 429
//! with Retry-After, a redirect to plain http, an artifact whose hash does not match, a
//! filename with `../`. Each must end in a clear log line and the right feedback, with the
//! agent still polling afterwards.
//!
//! The server is written by hand over rustls so every byte it sends is under the test's control.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::util::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    MalformedJson,
    HugeBody,
    Slow,
    Error500,
    TooMany,
    /// A poll interval of about 456 billion years.
    AbsurdSleep,
    /// Offer the deployment with this action id.
    Deploy(u32),
}

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    body: Vec<u8>,
}

pub struct Hostile {
    phase: Mutex<Phase>,
    seen: Mutex<Vec<Seen>>,
    port: u16,
    /// Deployments other tests offer, by action id (ids 1 to 3 are this file's own).
    pub offers: Mutex<HashMap<u32, Value>>,
    /// Artifacts those deployments link to, by URL path.
    pub files: Mutex<HashMap<String, Vec<u8>>>,
}

const GOOD: &[u8] = b"#!/bin/sh\necho never runs\n";

fn sha(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl Hostile {
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
    }

    /// Offers action `id`: a chunk of `kind` named `name` `version` whose artifacts are
    /// `files` (name, bytes), with `metadata`. Set `Phase::Deploy(id)` to send it; after its
    /// closed feedback the server moves on to `id + 1` if offered, else goes idle.
    pub fn offer(
        &self,
        id: u32,
        kind: &str,
        (name, version): (&str, &str),
        files: &[(String, Vec<u8>)],
        metadata: &[(&str, &str)],
    ) {
        let mut artifacts = Vec::new();
        for (file, bytes) in files {
            let path = format!("/art/offer/{id}/{file}");
            artifacts.push(
                json!({"filename": file, "hashes": {"sha256": sha(bytes)}, "size": bytes.len(),
                "_links": {"download": {"href": format!("{}{path}", self.base())}}}),
            );
            self.files.lock().unwrap().insert(path, bytes.clone());
        }
        let metadata: Vec<Value> =
            metadata.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let d = json!({"id": id.to_string(), "deployment": {"download": "forced", "update": "forced", "chunks": [{
            "part": kind, "version": version, "name": name, "artifacts": artifacts, "metadata": metadata}]}});
        self.offers.lock().unwrap().insert(id, d);
    }

    /// The phase after action `n` closed.
    fn after(&self, n: u32) -> Phase {
        if self.offers.lock().unwrap().contains_key(&(n + 1)) || n < 3 {
            Phase::Deploy(n + 1)
        } else {
            Phase::Idle
        }
    }

    fn deployment(&self, action: u32) -> Value {
        if let Some(d) = self.offers.lock().unwrap().get(&action) {
            return d.clone();
        }
        let art = |name: &str, href: String, sha256: String, size: usize| json!({"filename": name, "hashes": {"sha256": sha256}, "size": size, "_links": {"download": {"href": href}}});
        let artifacts = match action {
            // A link that redirects to plain http.
            1 => {
                vec![art("run.sh", format!("{}/art/redirect", self.base()), sha(GOOD), GOOD.len())]
            }
            // Content that does not match its hash.
            2 => {
                vec![art("run.sh", format!("{}/art/tampered", self.base()), sha(GOOD), GOOD.len())]
            }
            // A filename that climbs out of the download folder.
            _ => vec![art(
                "../../../../etc/evil.sh",
                format!("{}/art/good", self.base()),
                sha(GOOD),
                GOOD.len(),
            )],
        };
        json!({"id": action.to_string(), "deployment": {"download": "forced", "update": "forced", "chunks": [{
            "part": "software-distribution", "version": "1.0.0.0", "name": format!("hostile-{action}"), "artifacts": artifacts,
            "metadata": [{"key": "dm.command", "value": "./run.sh"}, {"key": "dm.program", "value": "hostile"}]
        }]}})
    }
}

fn respond(
    out: &mut impl Write,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn serve_connection(h: Arc<Hostile>, tcp: TcpStream, cfg: Arc<rustls::ServerConfig>) {
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    loop {
        // Request head.
        let mut head = Vec::new();
        let mut reader = BufReader::new(&mut tls);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == b"\r\n" {
                break;
            }
            head.extend_from_slice(&line);
            if head.len() > 64 * 1024 {
                return;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, path) =
            (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
        let len: usize = lines
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        drop(reader);
        h.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        let phase = *h.phase.lock().unwrap();
        let json_ok = |v: &Value| {
            (vec![("Content-Type", "application/json".to_string())], serde_json::to_vec(v).unwrap())
        };
        let result = if path.starts_with("/art/") {
            match path.as_str() {
                "/art/redirect" => respond(
                    &mut tls,
                    "302 Found",
                    &[("Location", format!("http://127.0.0.1:{}/art/good", h.port))],
                    b"",
                ),
                "/art/tampered" => {
                    respond(&mut tls, "200 OK", &[], b"#!/bin/sh\nrm -rf /tmp/x #\n")
                }
                other => match h.files.lock().unwrap().get(other).cloned() {
                    Some(bytes) => respond(&mut tls, "200 OK", &[], &bytes),
                    None => respond(&mut tls, "200 OK", &[], GOOD),
                },
            }
        } else if path.ends_with("/dm/statusMessages") {
            // Like any DDI server that is not dmmp: no such endpoint.
            respond(&mut tls, "404 Not Found", &[], b"")
        } else if method == "POST" || method == "PUT" {
            if let (Phase::Deploy(n), true) = (phase, path.contains("/feedback")) {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["status"]["execution"] == "closed" {
                    let next = h.after(n);
                    *h.phase.lock().unwrap() = next;
                }
            }
            respond(&mut tls, "200 OK", &[], b"")
        } else if path.contains("/deploymentBase/") {
            let id: u32 = path
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("")
                .parse()
                .unwrap_or(0);
            let (hd, b) = json_ok(&h.deployment(id));
            respond(&mut tls, "200 OK", &hd, &b)
        } else {
            match phase {
                Phase::MalformedJson => respond(
                    &mut tls,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    b"{\"config\": {\"polling\": ",
                ),
                Phase::Error500 => respond(&mut tls, "500 Internal Server Error", &[], b"oops"),
                Phase::TooMany => respond(
                    &mut tls,
                    "429 Too Many Requests",
                    &[("Retry-After", "3".into())],
                    b"slow down",
                ),
                Phase::HugeBody => {
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n");
                    let chunk = vec![b' '; 64 * 1024];
                    for _ in 0..(2_000_000_000 / chunk.len()) {
                        if tls.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    return;
                }
                Phase::Slow => {
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n");
                    let _ = tls.flush();
                    for _ in 0..10 {
                        std::thread::sleep(Duration::from_secs(10));
                        if tls.write_all(b" ").and_then(|()| tls.flush()).is_err() {
                            break;
                        }
                    }
                    return;
                }
                Phase::AbsurdSleep => {
                    let (hd, b) = json_ok(
                        &json!({"config": {"polling": {"sleep": "4000000000000000:00:00"}}, "_links": {}}),
                    );
                    respond(&mut tls, "200 OK", &hd, &b)
                }
                Phase::Idle => {
                    let (hd, b) = json_ok(
                        &json!({"config": {"polling": {"sleep": "00:00:01"}}, "_links": {}}),
                    );
                    respond(&mut tls, "200 OK", &hd, &b)
                }
                Phase::Deploy(n) => {
                    let (hd, b) = json_ok(
                        &json!({"config": {"polling": {"sleep": "00:00:01"}}, "_links": {"deploymentBase": {"href": format!("{}/DEFAULT/controller/v1/dev-1/deploymentBase/{n}", h.base())}}}),
                    );
                    respond(&mut tls, "200 OK", &hd, &b)
                }
            }
        };
        if result.is_err() {
            return;
        }
    }
}

pub fn start(w: &World) -> Arc<Hostile> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(w.pki.join("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(w.pki.join("server.key")).unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = Arc::new(Hostile {
        phase: Mutex::new(Phase::Idle),
        seen: Mutex::new(Vec::new()),
        port: listener.local_addr().unwrap().port(),
        offers: Mutex::new(HashMap::new()),
        files: Mutex::new(HashMap::new()),
    });
    let h2 = h.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (h, cfg) = (h2.clone(), cfg.clone());
            std::thread::spawn(move || serve_connection(h, tcp, cfg));
        }
    });
    h
}

pub fn wait_log(device: &Path, needle: &str, from: usize) -> usize {
    let start = Instant::now();
    loop {
        let text = log_text(device, "DMSvc");
        if let Some(pos) = text[from.min(text.len())..].find(needle) {
            return from + pos + needle.len();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent never logged {needle:?}:\n{}",
            &text[from.min(text.len())..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn polls_since(h: &Hostile, t: Instant) -> Vec<Instant> {
    h.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.at >= t && s.method == "GET" && s.path.ends_with("/controller/v1/dev-1"))
        .map(|s| s.at)
        .collect()
}

/// Every closed feedback for `action`, in order.
pub fn closed_feedbacks(h: &Hostile, action: u32) -> Vec<Value> {
    h.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.ends_with(&format!("/deploymentBase/{action}/feedback")))
        .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok())
        .filter(|v| v["status"]["execution"] == "closed")
        .collect()
}

/// Every feedback for `action`, in order.
pub fn feedbacks(h: &Hostile, action: u32) -> Vec<Value> {
    h.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.ends_with(&format!("/deploymentBase/{action}/feedback")))
        .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok())
        .collect()
}

pub fn closed_feedback(h: &Hostile, action: u32) -> Value {
    let start = Instant::now();
    loop {
        let found = h
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with(&format!("/deploymentBase/{action}/feedback")))
            .find_map(|s| {
                let v: Value = serde_json::from_slice(&s.body).ok()?;
                (v["status"]["execution"] == "closed").then_some(v)
            });
        if let Some(v) = found {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no closed feedback for action {action}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Installs a client on the world's device that polls `h` (every second, short deadlines).
pub fn install_client(w: &World, h: &Hostile) {
    let timeouts = "ConnectTimeout=2\nReadTimeout=2\nRequestTimeout=5\nRetryMaxDelay=2\n";
    install_client_polling(w, &h.base(), "dev-1", "tok-1", timeouts);
}

#[test]
fn a_hostile_management_point_never_stops_the_agent() {
    let w = World::new();
    let h = start(&w);
    install_client(&w, &h);
    let dev = w.device.clone();
    let mut at = wait_log(&dev, "inventory sent", 0);

    h.set(Phase::MalformedJson);
    at = wait_log(&dev, "malformed answer", at);
    h.set(Phase::HugeBody);
    at = wait_log(&dev, "larger than the 1048576 bytes allowed", at);
    h.set(Phase::Slow);
    at = wait_log(&dev, "timed out", at);
    h.set(Phase::Error500);
    at = wait_log(&dev, "HTTP 500", at);
    // The server's own words are kept, whatever shape its error has.
    at = wait_log(&dev, "oops", at);
    h.set(Phase::TooMany);
    at = wait_log(&dev, "the server asked to retry after 3 s", at);
    let asked = Instant::now();
    h.set(Phase::Idle);
    let start = Instant::now();
    while polls_since(&h, asked).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "no poll after the 429");
        std::thread::sleep(Duration::from_millis(50));
    }
    let next = polls_since(&h, asked)[0];
    assert!(
        next.duration_since(asked) >= Duration::from_millis(2500),
        "the agent came back after {:?}, before Retry-After",
        next.duration_since(asked)
    );

    // Deployments: a redirect to http, a tampered artifact, a path out of the folder.
    h.set(Phase::Deploy(1));
    let fb = closed_feedback(&h, 1);
    assert_eq!(fb["status"]["result"]["finished"], "failure");
    assert_eq!(fb["status"]["code"], 10034);
    assert!(fb.to_string().contains("0x80040209"), "insecure transport code: {fb}");
    at = wait_log(&dev, "plain HTTP is never used", at);
    let fb = closed_feedback(&h, 2);
    assert_eq!(fb["status"]["code"], 10034);
    assert!(fb.to_string().contains("0x80091007"), "hash mismatch code: {fb}");
    at = wait_log(&dev, "the file was altered or damaged in transit", at);
    let fb = closed_feedback(&h, 3);
    assert_eq!(fb["status"]["code"], 10034);
    assert!(fb.to_string().contains("0x80040202"), "unsafe path code: {fb}");
    wait_log(&dev, "unsafe path", at);
    assert!(
        !w.device.join("etc/evil.sh").exists()
            && !w.device.parent().unwrap().join("etc/evil.sh").exists()
    );
    assert!(!log_text(&dev, "DMSvc").contains("never runs"), "a hostile program ran");

    // Status messages without an action (setup's result) arrived as configData attributes.
    let via_config_data = h.seen.lock().unwrap().iter().any(|s| {
        s.method == "PUT"
            && s.path.ends_with("/configData")
            && String::from_utf8_lossy(&s.body).contains("dm.status.")
            && String::from_utf8_lossy(&s.body).contains("DMClientSetup")
    });
    assert!(via_config_data, "setup's status message did not reach a non-dmmp server");
    assert!(log_text(&dev, "DMSvc").contains("sending status messages as configData attributes"));

    // And it still polls.
    let after = Instant::now();
    let start = Instant::now();
    while polls_since(&h, after).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "the agent stopped polling");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A poll interval beyond any timer: it once panicked the agent (a crash loop under
    // systemd); now it is cut to a day, said in the log, and the agent lives on.
    let at = log_text(&dev, "DMSvc").len();
    h.set(Phase::AbsurdSleep);
    wait_log(&dev, "polling after 86400 s instead", at);
    std::thread::sleep(Duration::from_secs(1));
    let pid: u32 = std::fs::read_to_string(w.device.join("run/dm/dmsvc.pid"))
        .expect("the agent is still running (pid file)")
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the agent died after the absurd sleep");
    assert!(!log_text(&dev, "DMSvc").contains("panicked"));
    kill_agent(&w.device);
}

/// Requests of `method` whose path ends with `suffix`.
fn requests(h: &Hostile, method: &str, suffix: &str) -> usize {
    h.seen.lock().unwrap().iter().filter(|s| s.method == method && s.path.ends_with(suffix)).count()
}

/// Answers the agent cannot use (an action id that is not a number, a deployment larger than
/// allowed) are reported once (10051) and not fetched again at every poll.
#[test]
fn an_unusable_deployment_is_reported_once_and_not_fetched_at_every_poll() {
    let w = World::new();
    let h = start(&w);
    install_client(&w, &h);
    let dev = w.device.clone();
    let mut at = wait_log(&dev, "inventory sent", 0);
    let files = [("run.sh".to_string(), GOOD.to_vec())];
    h.offer(50, "software-distribution", ("tools", "1.0.0.0"), &files, &[]);
    h.offers.lock().unwrap().get_mut(&50).unwrap()["id"] = "fifty".into();
    h.offer(51, "software-distribution", ("tools", "1.0.0.0"), &files, &[]);
    let huge = json!([{"key": "padding", "value": "x".repeat(1_200_000)}]);
    h.offers.lock().unwrap().get_mut(&51).unwrap()["deployment"]["chunks"][0]["metadata"] = huge;
    for (action, why) in [(50, "is not a number"), (51, "larger than the")] {
        h.set(Phase::Deploy(action));
        at = wait_log(&dev, why, at);
        at = wait_log(&dev, "not fetched again for a day", at);
        let start = Instant::now();
        while !h.seen.lock().unwrap().iter().any(|s| {
            s.path.ends_with("/configData") && String::from_utf8_lossy(&s.body).contains("10051")
        }) {
            assert!(start.elapsed() < Duration::from_secs(30), "10051 never reported");
            std::thread::sleep(Duration::from_millis(100));
        }
        let link = format!("/deploymentBase/{action}");
        let fetched = requests(&h, "GET", &link);
        let after = Instant::now();
        let start = Instant::now();
        while polls_since(&h, after).len() < 3 {
            assert!(start.elapsed() < Duration::from_secs(30), "the agent stopped polling");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(requests(&h, "GET", &link), fetched, "action {action} fetched again");
    }
    let log = log_text(&dev, "DMSvc");
    assert_eq!(log.matches("not fetched again for a day").count(), 2, "{log}");
    kill_agent(&w.device);
}
