//! Benchmark of a distribution point serving one large package file (docs/distribution-
//! points.md): `dmmp serve --role distribution-point` (the release build) and nginx, side by
//! side in one run on this machine, each serving the same file over TLS (the same certificate
//! and key) to the same number of concurrent downloads, one after the other. Prints each
//! server's aggregate throughput, their ratio (target: the distribution point at least 0.8 of
//! nginx's), and the distribution point's peak resident memory (target: under 100 MB).
//!
//! ```text
//! cargo build --release -p dm-mp --bins
//! cargo bench -p dm-mp --bench dp_serve -- [--size-mib 1024] [--clients 50]
//! ```
//!
//! The clients (threads with rustls, in this process) share the machine with the server
//! measured: both servers pay the same for them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/dp_serve-<hash> -> target/release/<name>
    let p = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(p.exists(), "{} is missing: cargo build --release -p dm-mp --bins", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `size` bytes that do not compress.
fn write_payload(path: &Path, size: u64) -> String {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        ctx.update(&block[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `clients` concurrent downloads of `url` to the end; returns (bytes, seconds).
fn download_all(url: &str, clients: usize, roots: &Path, size: u64) -> (u64, f64) {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(roots).unwrap();
    let certs: Vec<ureq::tls::Certificate<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .filter_map(|c| c.ok())
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    let barrier = Arc::new(std::sync::Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (url, tls, barrier) = (url.to_string(), tls.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().tls_config(tls).build().into();
                barrier.wait();
                let mut resp = agent.get(&url).call().unwrap();
                let mut body = resp.body_mut().with_config().limit(u64::MAX).reader();
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0u64;
                loop {
                    let n = body.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                assert_eq!(got, size, "{url}: a short download");
                got
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (bytes, start.elapsed().as_secs_f64())
}

/// The peak resident memory of process `pid` so far, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn stop(mut c: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
    std::thread::sleep(Duration::from_millis(300));
    let _ = c.kill();
    let _ = c.wait();
}

fn main() {
    let size = arg("--size-mib", 1024) as u64 * 1024 * 1024;
    let clients = arg("--clients", 50);
    let dir = tempfile::Builder::new().prefix("dm-dp-bench-").tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    let ok = Command::new(release_bin("dmpack")).args(["dev-pki", "--out"]).arg(&pki).status();
    assert!(ok.unwrap().success());
    let content = d.join("content");
    std::fs::create_dir_all(content.join("1")).unwrap();
    let file = content.join("1").join("payload.bin");
    let sha256 = write_payload(&file, size);
    let held = serde_json::json!([{
        "package": 1, "name": "bench", "version": "1.0.0.0", "copied": 0, "refresh": 0,
        "validated": 0, "checked": 0,
        "files": [{"name": "payload.bin", "size": size, "sha256": sha256, "sources": []}],
    }]);
    std::fs::write(content.join("held.json"), held.to_string()).unwrap();
    let credential = "dmdp_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(d.join("credential"), credential).unwrap();
    let (cert, key) = (pki.join("server.pem"), pki.join("server.key"));
    let dp_port = free_port();
    // Its management point does not answer: it serves what it holds, and backs off.
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{dp_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [distribution_point]\nmanagement_point = \"https://127.0.0.1:1\"\nca = \"{}\"\n\
         credential = \"credential\"\ncontent = \"content\"\npackage_roots = \"{}\"\n",
        cert.display(),
        key.display(),
        pki.join("root-ca.pem").display(),
        pki.join("root-ca.pem").display(),
    );
    std::fs::write(d.join("dp.toml"), cfg).unwrap();
    let key_hex = dm_mp::distribution::link_key(credential);
    let link = dm_mp::distribution::link(&key_hex, 1, "payload.bin", "bench", i64::MAX / 2);
    let dp_url = format!("https://127.0.0.1:{dp_port}{link}");

    let nginx_port = free_port();
    let prefix = d.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = format!(
        "daemon off;\nworker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
         events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  sendfile on;\n\
         client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
         uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  server {{\n    listen 127.0.0.1:{nginx_port} ssl;\n\
         ssl_certificate {c};\n    ssl_certificate_key {k};\n    root {root};\n  }}\n}}\n",
        p = prefix.display(),
        c = cert.display(),
        k = key.display(),
        root = content.display(),
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let roots = pki.join("root-ca.pem");
    let gib = size as f64 * clients as f64 / (1u64 << 30) as f64;
    println!(
        "{clients} concurrent downloads of a {} MiB file over TLS ({gib:.1} GiB per server)",
        size >> 20
    );

    let mut dp = Command::new(release_bin("dmmp"))
        .arg("--config")
        .arg(d.join("dp.toml"))
        .args(["serve", "--role", "distribution-point"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(dp.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening"), "the distribution point said {line:?}");
    let (dp_bytes, dp_secs) = download_all(&dp_url, clients, &roots, size);
    let dp_rss = peak_rss_mb(dp.id());
    stop(dp);

    let nginx = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed by scripts/setup-peers.sh");
    wait_port(nginx_port, "nginx");
    let nginx_url = format!("https://127.0.0.1:{nginx_port}/1/payload.bin");
    let (ng_bytes, ng_secs) = download_all(&nginx_url, clients, &roots, size);
    stop(nginx);

    let mbps = |b: u64, s: f64| b as f64 / s / 1e6;
    let (dp_rate, ng_rate) = (mbps(dp_bytes, dp_secs), mbps(ng_bytes, ng_secs));
    println!(
        "distribution point  {dp_rate:8.0} MB/s aggregate  ({dp_secs:.1} s), peak RSS {dp_rss:.1} MB"
    );
    println!("nginx               {ng_rate:8.0} MB/s aggregate  ({ng_secs:.1} s)");
    println!(
        "ratio               {:8.2}  (target at least 0.80); RSS target under 100 MB",
        dp_rate / ng_rate
    );
}
