//! Load generator (a benchmark, not a test): N simulated devices, each on its own keep-alive TLS
//! connection, poll a real `dmmp serve` process at a fixed total rate (open loop: a slow
//! answer does not slow the schedule). Prints polls per second, latency percentiles and the CPU
//! share of the server and of this generator (they share the machine's cores).
//!
//! ```text
//! cargo bench -p dm-mp --bench poll_load -- --devices 10000 --rate 2000 --seconds 20
//! ```
//! Target: at least 2,000 polls/s at p99 under 50 ms with 10,000 devices.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dm_mp::storage::{SqliteStore, Storage};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

struct Args {
    devices: usize,
    rate: f64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args { devices: 1000, rate: 2000.0, seconds: 15 };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--devices" => a.devices = next().parse().expect("--devices N"),
            "--rate" => a.rate = next().parse().expect("--rate POLLS_PER_SECOND"),
            "--seconds" => a.seconds = next().parse().expect("--seconds S"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(max) = l.maximum {
        l.current = Some(max.min(1 << 20));
        let _ = setrlimit(Resource::Nofile, l);
    }
}

fn main() {
    let a = args();
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    dm_mp::pack::dev_pki(&pki, 30, &["127.0.0.1".into()], SystemTime::now()).unwrap();
    let mpdir = dir.path().join("mp");
    let mut cfg = dm_mp::config::Config::new(
        &mpdir,
        "127.0.0.1:0".parse().unwrap(),
        pki.join("server.pem"),
        pki.join("server.key"),
    );
    cfg.devices.poll_sleep_secs = 60;
    std::fs::create_dir_all(&mpdir).unwrap();
    std::fs::write(mpdir.join("dmmp.toml"), cfg.to_toml().unwrap()).unwrap();
    let cfg = dm_mp::config::Config::load(&mpdir.join("dmmp.toml")).unwrap();
    let store = SqliteStore::open(&cfg.database()).unwrap();
    let rows: Vec<(String, String, Option<String>)> = (0..a.devices)
        .map(|i| {
            (
                "DEFAULT".to_string(),
                format!("dev-{i:05}"),
                Some(dm_shared::pki::sha256_hex(format!("tok-{i:05}").as_bytes())),
            )
        })
        .collect();
    store.import_devices(&rows, 0).unwrap();
    drop(store);

    let mut server = Command::new(env!("CARGO_BIN_EXE_dmmp"))
        .arg("--config")
        .arg(mpdir.join("dmmp.toml"))
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr =
        line.trim().strip_prefix("listening https://").unwrap().parse().unwrap();
    let server_pid = server.id();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let result = rt.block_on(generate(&a, addr, &pki.join("root-ca.pem"), server_pid));
    let _ = Command::new("kill").arg(server_pid.to_string()).status();
    let _ = server.wait();
    report(&a, result);
}

struct Outcome {
    latencies_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
    server_cpu: f64,
    own_cpu: f64,
    connect_secs: f64,
}

async fn generate(a: &Args, addr: std::net::SocketAddr, root: &Path, server_pid: u32) -> Outcome {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));

    // Connect every device first (as a fleet does over its first minutes).
    let t0 = Instant::now();
    let mut senders = Vec::with_capacity(a.devices);
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::new();
    for i in 0..a.devices {
        let (connector, sem) = (connector.clone(), sem.clone());
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let tls =
                connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
            let (send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            (i, send)
        }));
    }
    for h in handles {
        senders.push(h.await.unwrap());
    }
    let connect_secs = t0.elapsed().as_secs_f64();

    let errors = Arc::new(AtomicU64::new(0));
    let (srv0, own0) = (cpu_secs(server_pid), cpu_secs(std::process::id()));
    let start = Instant::now() + Duration::from_millis(200);
    let run_for = Duration::from_secs(a.seconds);
    let period = Duration::from_secs_f64(a.devices as f64 / a.rate);
    let mut tasks = Vec::new();
    for (i, mut send) in senders {
        let errors = errors.clone();
        // Spread the devices evenly over one period.
        let offset = period.mul_f64(i as f64 / a.devices as f64);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut next = start + offset;
            let auth = format!("TargetToken tok-{i:05}");
            let uri = format!("/DEFAULT/controller/v1/dev-{i:05}");
            while next < start + run_for {
                tokio::time::sleep_until(next.into()).await;
                let req = hyper::Request::get(&uri)
                    .header("host", "127.0.0.1")
                    .header("authorization", &auth)
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let sent = Instant::now();
                match send.send_request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                        lat.push(sent.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += period;
            }
            lat
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().min(run_for + Duration::from_secs(5));
    Outcome {
        latencies_us,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        server_cpu: cpu_secs(server_pid) - srv0,
        own_cpu: cpu_secs(std::process::id()) - own0,
        connect_secs,
    }
}

fn report(a: &Args, mut o: Outcome) {
    o.latencies_us.sort_unstable();
    let pct = |p: f64| {
        o.latencies_us
            .get(
                ((o.latencies_us.len() as f64 * p) as usize)
                    .min(o.latencies_us.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let secs = o.elapsed.as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "devices {}  target rate {:.0}/s  duration {:.1} s  (connecting them took {:.1} s)",
        a.devices, a.rate, secs, o.connect_secs
    );
    println!(
        "polls {}  ({:.0} polls/s)  errors {}",
        o.latencies_us.len(),
        o.latencies_us.len() as f64 / secs,
        o.errors
    );
    println!(
        "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "cpu  server {:.0}% of one core, generator {:.0}% of one core ({} cores shared)",
        100.0 * o.server_cpu / secs,
        100.0 * o.own_cpu / secs,
        cores
    );
    let ok =
        o.latencies_us.len() as f64 / secs >= a.rate * 0.97 && pct(0.99) < 50.0 && o.errors == 0;
    println!(
        "target (>= {:.0} polls/s at p99 < 50 ms): {}",
        a.rate,
        if ok { "met" } else { "NOT met" }
    );
}
