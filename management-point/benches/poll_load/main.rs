//! Load generator (a benchmark, not a test): simulated devices poll real `dmmp serve`
//! processes (one, or several on one database) over keep-alive TLS at a fixed total rate (open
//! loop: a slow answer does not slow the schedule), while others send feedback. It prints:
//!
//! - polls per second, and the latency the generator measured with how late it sent (its lag:
//!   a loaded generator on the same cores delays requests, which is not the server's latency);
//! - the latency a probe device sees: its own connection, driven from a thread of its own;
//! - feedback writes per second and their latency;
//! - the CPU of each `dmmp`, of PostgreSQL, and of the generator;
//! - each server's memory per open connection, and what is returned when they close.
//!
//! ```text
//! cargo bench -p dm-mp --bench poll_load -- --devices 100000 --rate 1700 --feedback 500 \
//!     --store postgres --instances 2 --seconds 20
//! ```
//!
//! With `--rollout-percent P`, a rollout over every device (docs/rollouts.md) is started before
//! the load with its first group P% of the fleet: that group's devices get their actions on
//! their polls during the run while the server evaluates the rollout's gates
//! (`rollout_tick_secs = 1`).
//!
//! With `--compare`, it measures instead what a poll costs: the same poll load (no feedback)
//! against one `dmmp` (SQLite), then against a bare hyper + rustls server ([`bare`]) that
//! answers every request with the answer `dmmp` gave an idle device, each alone on one core
//! (the generator on the others), and prints for both the requests per second, the CPU time
//! per request (the server's CPU time from /proc over the requests it answered) and the ratio.
//! `--dmmp PATH` measures another build of `dmmp` (another branch's) the same way.
//!
//! Devices share connections when there are more devices than connections (`--connections`,
//! bounded by the file descriptor limit), as devices behind one gateway do.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dm_mp::model::*;
use dm_mp::storage::Storage;

use self::client::{connect, request, timed, tls_connector};
use self::procs::{
    allowed_cpus, cpu_list, cpu_secs, pinned, postgres_pids, raise_fd_limit, rss_kib, started,
};

mod bare;
mod client;
mod procs;

/// A server's resident memory (KiB): before connecting, after the handshakes, right after the
/// traffic, two seconds later, after every connection closed.
#[derive(Debug, Clone, Copy)]
struct Rss {
    before: u64,
    connected: u64,
    polled: u64,
    idle: u64,
    closed: u64,
}

#[derive(Debug, Clone)]
struct Args {
    devices: usize,
    rate: f64,
    feedback: f64,
    seconds: u64,
    postgres: bool,
    instances: usize,
    connections: usize,
    /// Measure the cost of a poll against the bare server instead.
    compare: bool,
    /// Another build of `dmmp` to measure (another branch's, say), instead of this one's.
    dmmp: Option<PathBuf>,
    /// A rollout over every device whose first group is this percentage of them (0: none).
    rollout_percent: u8,
}

fn args() -> Args {
    let mut a = Args {
        devices: 1000,
        rate: 2000.0,
        feedback: 0.0,
        seconds: 15,
        postgres: false,
        instances: 1,
        connections: 0,
        compare: false,
        dmmp: None,
        rollout_percent: 0,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--devices" => a.devices = next().parse().expect("--devices N"),
            "--rate" => a.rate = next().parse().expect("--rate POLLS_PER_SECOND"),
            "--feedback" => a.feedback = next().parse().expect("--feedback PER_SECOND"),
            "--seconds" => a.seconds = next().parse().expect("--seconds S"),
            "--store" => a.postgres = next() == "postgres",
            "--instances" => a.instances = next().parse().expect("--instances N"),
            "--connections" => a.connections = next().parse().expect("--connections N"),
            "--dmmp" => a.dmmp = Some(PathBuf::from(next())),
            "--rollout-percent" => {
                a.rollout_percent = next().parse().expect("--rollout-percent 1..99")
            }
            "--compare" => {
                a.compare = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// The fleet's database: the devices, and an action for each device that sends feedback.
fn fill(store: &dyn Storage, a: &Args, feedback_devices: usize) -> Vec<i64> {
    let rows: Vec<(String, String, Option<String>)> = (0..a.devices)
        .map(|i| {
            (
                "DEFAULT".to_string(),
                format!("dev-{i:06}"),
                Some(dm_shared::pki::sha256_hex(format!("tok-{i:06}").as_bytes())),
            )
        })
        .collect();
    store.import_devices(&rows, 0).unwrap();
    if a.rollout_percent > 0 {
        rollout(store, a.rollout_percent);
    }
    if feedback_devices == 0 {
        return Vec::new();
    }
    let pkg = store
        .add_package(&Package {
            id: 0,
            name: "bench".into(),
            version: "1.0.0.0".into(),
            kind: PackageKind::SoftwareDistribution,
            publisher: None,
            distribution_point: None,
            created: 0,
            artifacts: Vec::new(),
            programs: Vec::new(),
            config_items: Vec::new(),
        })
        .unwrap();
    let prog = store
        .add_program(&Program {
            id: 0,
            package_id: pkg,
            name: "bench-run".into(),
            command: "./run".into(),
            platforms: Vec::new(),
            max_run_time: 3600,
            device_class: DeviceClass::Mobile,
            signed_program: None,
        })
        .unwrap();
    // Only the devices that send feedback have the deployment: the others poll as a fleet
    // does between deployments.
    let col = store.add_collection("bench", "DEFAULT", &CollectionRule::Explicit).unwrap();
    let adv = store
        .add_advertisement(&Advertisement {
            id: 0,
            name: "bench".into(),
            program_id: prog,
            collection_id: col,
            kind: AdvertisementKind::Mandatory,
            start_time: 0,
            expires: None,
            window: None,
            created: 0,
            canceled: false,
            rerun: Rerun::Never,
            allow_downgrade: false,
        })
        .unwrap();
    let mut actions = Vec::new();
    for i in 0..feedback_devices {
        let d = store.device("DEFAULT", &format!("dev-{i:06}")).unwrap().unwrap();
        store.add_member(col, d.id).unwrap();
        actions.push(store.ensure_action(adv, d.id, ActionStatus::Running, 0).unwrap().id);
    }
    actions
}

/// A started rollout over every device, its first group `percent`% of them.
fn rollout(store: &dyn Storage, percent: u8) {
    use dm_mp::admin::rollouts as r;
    let pkg = store
        .add_package(&Package {
            id: 0,
            name: "rolled".into(),
            version: "2.0.0.0".into(),
            kind: PackageKind::SoftwareDistribution,
            publisher: None,
            distribution_point: None,
            created: 0,
            artifacts: Vec::new(),
            programs: Vec::new(),
            config_items: Vec::new(),
        })
        .unwrap();
    store
        .add_program(&Program {
            id: 0,
            package_id: pkg,
            name: "rolled-run".into(),
            command: "./run".into(),
            platforms: Vec::new(),
            max_run_time: 3600,
            device_class: DeviceClass::Mobile,
            signed_program: None,
        })
        .unwrap();
    store.add_collection("everyone", "DEFAULT", &CollectionRule::All).unwrap();
    let spec = r::CreateSpec {
        name: "wave".into(),
        program: Some("rolled-run".into()),
        update_deployment: None,
        collection: Some("everyone".into()),
        groups: format!("{percent}%,100%"),
        gates: dm_mp::rollout::Gates { success_threshold: 95, error_threshold: 10 },
        soak: 600,
        silent_after: 3600,
        start: None,
        approval: false,
        joins_per_minute: 60,
        allow_downgrade: false,
        rollback_program: None,
        maintenance_window: None,
    };
    r::create(store, &spec, 1).unwrap();
    r::act(store, "wave", dm_mp::rollout::Command::Start, "the bench", 2).unwrap();
}

/// The database a run uses: a SQLite file, or a private PostgreSQL cluster.
enum Db {
    Sqlite,
    /// The cluster (kept running while the run lasts), its URL and data folder.
    Postgres {
        _cluster: dm_mp::storage::postgres::cluster::Cluster,
        url: String,
        data: PathBuf,
    },
}

fn config(dir: &Path, pki: &Path, db: &Db, fd_limit: u64) -> PathBuf {
    let mut cfg = dm_mp::config::Config::new(
        dir,
        "127.0.0.1:0".parse().unwrap(),
        pki.join("server.pem"),
        pki.join("server.key"),
    );
    cfg.devices.poll_sleep_secs = 60;
    cfg.devices.max_devices = 1_000_000;
    cfg.devices.rollout_tick_secs = 1;
    cfg.server.max_connections = fd_limit as usize;
    cfg.server.idle_timeout_secs = 600;
    cfg.server.first_request_timeout_secs = 600;
    if let Db::Postgres { url, .. } = db {
        cfg.storage.database = url.into();
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("dmmp.toml"), cfg.to_toml().unwrap()).unwrap();
    dir.join("dmmp.toml")
}

/// `dmmp serve` with the configuration `cfg`: the build `--dmmp` names, else this one's.
fn dmmp(a: &Args, cfg: &Path) -> Command {
    let bin = a.dmmp.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dmmp")));
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(cfg).arg("serve");
    cmd
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--bare-server") {
        let p = |k: usize| PathBuf::from(&argv[i + k]);
        return bare::main(&p(1), &p(2), &p(3));
    }
    let a = args();
    let fd_limit = raise_fd_limit();
    if a.compare {
        return compare(&a, fd_limit);
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    dm_mp::pack::dev_pki(&pki, 30, &["127.0.0.1".into()], SystemTime::now()).unwrap();
    let db = if a.postgres {
        let pg = dir.path().join("pg");
        let c = dm_mp::storage::postgres::cluster::Cluster::start(&pg).unwrap();
        let url = c.database("bench").unwrap();
        Db::Postgres { _cluster: c, url, data: pg.join("data") }
    } else {
        Db::Sqlite
    };
    let cfgs: Vec<PathBuf> = (0..a.instances)
        .map(|i| config(&dir.path().join(format!("mp{i}")), &pki, &db, fd_limit))
        .collect();
    // SQLite instances share the first one's file.
    if !a.postgres {
        for c in &cfgs[1..] {
            let text = std::fs::read_to_string(c).unwrap();
            let shared = dir.path().join("mp0/dmmp.db");
            let text = text
                .replace("database = \"dmmp.db\"", &format!("database = \"{}\"", shared.display()));
            std::fs::write(c, text).unwrap();
        }
    }
    let feedback_devices = if a.feedback > 0.0 { a.devices.min(5000) } else { 0 };
    let actions = {
        let cfg = dm_mp::config::Config::load(&cfgs[0]).unwrap();
        let store = dm_mp::storage::open(&cfg, "bench").unwrap();
        fill(store.as_ref(), &a, feedback_devices)
    };
    let servers: Vec<(Child, std::net::SocketAddr)> =
        cfgs.iter().map(|c| started(dmmp(&a, c))).collect();
    let pids: Vec<u32> = servers.iter().map(|(c, _)| c.id()).collect();
    let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    let pg_data = match &db {
        Db::Postgres { data, .. } => Some(data.clone()),
        Db::Sqlite => None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let connections = match a.connections {
        0 => a.devices.min((fd_limit as usize).saturating_sub(1000)).max(1),
        n => n,
    };
    let result = rt.block_on(generate(
        &a,
        &addrs,
        &pki.join("root-ca.pem"),
        &pids,
        pg_data.as_deref(),
        connections,
        actions,
    ));
    for (mut s, _) in servers {
        let _ = Command::new("kill").arg(s.id().to_string()).status();
        let _ = s.wait();
    }
    report(&a, result);
    drop(db);
}

/// What a poll costs `dmmp`, against what it costs the bare server: the same load (`a`'s
/// devices, connections, rate and seconds, polls only) against one, then the other, each
/// pinned to one core, the generator to the others.
fn compare(a: &Args, fd_limit: u64) {
    let a = Args { feedback: 0.0, postgres: false, instances: 1, ..a.clone() };
    let cpus = allowed_cpus();
    let server_cpu = *cpus.last().unwrap();
    let generator_cpus = if cpus.len() > 1 { &cpus[..cpus.len() - 1] } else { &cpus[..] };
    let own = std::process::id().to_string();
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu_list(generator_cpus), &own])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "taskset could not pin the generator");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    dm_mp::pack::dev_pki(&pki, 30, &["127.0.0.1".into()], SystemTime::now()).unwrap();
    let cfg = config(&dir.path().join("mp"), &pki, &Db::Sqlite, fd_limit);
    {
        let c = dm_mp::config::Config::load(&cfg).unwrap();
        fill(dm_mp::storage::open(&c, "bench").unwrap().as_ref(), &a, 0);
    }
    let connections = match a.connections {
        0 => a.devices.min((fd_limit as usize).saturating_sub(1000)).max(1),
        n => n,
    };
    let root = pki.join("root-ca.pem");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let run = |server: Command| {
        let (mut child, addr) = started(pinned(server, server_cpu));
        let o = rt.block_on(generate(&a, &[addr], &root, &[child.id()], None, connections, vec![]));
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
        o
    };
    // The answer to replay: dmmp's to a device that has nothing to do (the last one, which
    // polls last in the load).
    let answer = {
        let (mut child, addr) = started(dmmp(&a, &cfg));
        let got = rt.block_on(client::answer(addr, &root, a.devices - 1));
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
        got
    };
    let answer_file = dir.path().join("answer");
    answer.save(&answer_file);
    let mine = run(dmmp(&a, &cfg));
    let mut bare = Command::new(std::env::current_exe().unwrap());
    bare.arg("--bare-server")
        .arg(pki.join("server.pem"))
        .arg(pki.join("server.key"))
        .arg(&answer_file);
    let floor = run(bare);
    report_costs(&a, connections, server_cpu, generator_cpus, &answer, [mine, floor]);
}

/// Prints what a request cost `dmmp` and the bare server.
fn report_costs(
    a: &Args,
    connections: usize,
    server_cpu: usize,
    generator_cpus: &[usize],
    answer: &bare::Answer,
    mut runs: [Outcome; 2],
) {
    println!(
        "devices {}  connections {}  target {:.0} polls/s  {} s each  server on CPU {server_cpu}, \
         generator on CPU {}  answer {} bytes of body",
        a.devices,
        connections,
        a.rate,
        a.seconds,
        cpu_list(generator_cpus),
        answer.body.len()
    );
    let mut per_request = [0.0; 2];
    for (i, (name, o)) in ["dmmp", "bare hyper + rustls"].iter().zip(&mut runs).enumerate() {
        let secs = o.elapsed.as_secs_f64();
        let served = (o.polls_us.len() + o.probe_us.len()) as f64;
        per_request[i] = o.cpu[0].1 * 1e6 / served.max(1.0);
        println!(
            "  {name:<20} {:>6.0} requests/s  {:>5.1} µs CPU per request  p50 {:.2} ms  p99 {:.2} ms  errors {}  (generator {:.0}% of a core)",
            served / secs,
            per_request[i],
            pct(&mut o.polls_us, 0.5),
            pct(&mut o.polls_us, 0.99),
            o.errors,
            100.0 * o.cpu[1].1 / secs
        );
    }
    println!("  ratio dmmp / bare: {:.2}", per_request[0] / per_request[1].max(f64::MIN_POSITIVE));
}

struct Outcome {
    connections: usize,
    polls_us: Vec<u64>,
    lag_us: Vec<u64>,
    probe_us: Vec<u64>,
    feedback_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
    cpu: Vec<(String, f64)>,
    /// Per server.
    rss: Vec<Rss>,
    connect_secs: f64,
}

const FEEDBACK: &str =
    r#"{"status":{"execution":"proceeding","result":{"finished":"none"},"details":["bench"]}}"#;

/// A device on a thread of its own with a connection of its own, polling ten times a second:
/// the latency a device sees, whatever the generator's own lag.
fn probe(
    addr: std::net::SocketAddr,
    root: PathBuf,
    until: Instant,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut send = connect(&tls_connector(&root), addr).await;
            let mut lat = Vec::new();
            while Instant::now() < until {
                let r = request(
                    "GET",
                    "/DEFAULT/controller/v1/dev-000000",
                    "TargetToken tok-000000",
                    None,
                );
                lat.extend(timed(&mut send, r).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat
        })
    })
}

#[allow(clippy::too_many_arguments)]
async fn generate(
    a: &Args,
    addrs: &[std::net::SocketAddr],
    root: &Path,
    pids: &[u32],
    pg_data: Option<&Path>,
    connections: usize,
    actions: Vec<i64>,
) -> Outcome {
    let connector = tls_connector(root);
    // Let the servers return what loading their view took (jemalloc purges after a second).
    // (Comparing costs measures no memory.)
    let settle = |secs: u64| Duration::from_secs(if a.compare { 0 } else { secs });
    tokio::time::sleep(settle(3)).await;
    let rss_before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    // Connect first (as a fleet does over its first minutes), spread over the instances.
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::new();
    for c in 0..connections {
        let (connector, sem, addr) = (connector.clone(), sem.clone(), addrs[c % addrs.len()]);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            connect(&connector, addr).await
        }));
    }
    let mut senders = Vec::with_capacity(connections);
    for h in handles {
        senders.push(h.await.unwrap());
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pg = pg_data.map(postgres_pids).unwrap_or_default();
    let cpu0: Vec<f64> = pids.iter().chain(&[std::process::id()]).map(|p| cpu_secs(*p)).collect();
    let pg0: f64 = pg.iter().map(|p| cpu_secs(*p)).sum();
    let start = Instant::now() + Duration::from_millis(200);
    let run_for = Duration::from_secs(a.seconds);
    let probe = probe(addrs[0], root.to_path_buf(), start + run_for);
    // Each connection carries the polls of devices c, c + C, c + 2C…, evenly spread.
    let per_conn_rate = a.rate / connections as f64;
    let period = Duration::from_secs_f64(1.0 / per_conn_rate);
    let mut tasks = Vec::new();
    for (c, mut send) in senders.into_iter().enumerate() {
        let (errors, devices, conns) = (errors.clone(), a.devices, connections);
        let offset = period.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut lag) = (Vec::new(), Vec::new());
            let mut next = start + offset;
            let mut k = 0usize;
            while next < start + run_for {
                tokio::time::sleep_until(next.into()).await;
                lag.push(next.elapsed().as_micros() as u64);
                let i = (c + k * conns) % devices;
                k += 1;
                let auth = format!("TargetToken tok-{i:06}");
                let r = request("GET", &format!("/DEFAULT/controller/v1/dev-{i:06}"), &auth, None);
                match timed(&mut send, r).await {
                    Some(us) => lat.push(us),
                    None => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                next += period;
            }
            (lat, lag, send)
        }));
    }
    let feedback =
        feedback_load(a, addrs, &connector, &actions, start, run_for, errors.clone()).await;
    let (mut polls_us, mut lag_us, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let (l, g, send) = t.await.unwrap();
        polls_us.extend(l);
        lag_us.extend(g);
        open.push(send);
    }
    let mut feedback_us = Vec::new();
    for t in feedback {
        feedback_us.extend(t.await.unwrap());
    }
    let probe_us = probe.join().unwrap();
    let elapsed = start.elapsed().min(run_for + Duration::from_secs(5));
    let mut cpu: Vec<(String, f64)> = pids
        .iter()
        .chain(&[std::process::id()])
        .zip(&cpu0)
        .enumerate()
        .map(|(i, (p, c0))| {
            let name = if i < pids.len() { format!("dmmp {i}") } else { "generator".to_string() };
            (name, cpu_secs(*p) - c0)
        })
        .collect();
    if !pg.is_empty() {
        cpu.push(("postgres".into(), pg.iter().map(|p| cpu_secs(*p)).sum::<f64>() - pg0));
    }
    // Memory with every connection open: right after the traffic, and idle two seconds later
    // (a device's connection between polls); then every connection closes: what do the
    // servers give back?
    let rss_polled: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    tokio::time::sleep(settle(2)).await;
    let rss_idle: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    drop(open);
    tokio::time::sleep(settle(3)).await;
    let rss_closed: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let rss = (0..pids.len())
        .map(|i| Rss {
            before: rss_before[i],
            connected: rss_connected[i],
            polled: rss_polled[i],
            idle: rss_idle[i],
            closed: rss_closed[i],
        })
        .collect();
    Outcome {
        connections,
        polls_us,
        lag_us,
        probe_us,
        feedback_us,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
        cpu,
        rss,
        connect_secs,
    }
}

/// Feedback at `a.feedback` per second from 50 connections, cycling through the actions.
async fn feedback_load(
    a: &Args,
    addrs: &[std::net::SocketAddr],
    connector: &tokio_rustls::TlsConnector,
    actions: &[i64],
    start: Instant,
    run_for: Duration,
    errors: Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<u64>>> {
    if a.feedback <= 0.0 || actions.is_empty() {
        return Vec::new();
    }
    let conns = 50usize;
    let period = Duration::from_secs_f64(conns as f64 / a.feedback);
    let actions = Arc::new(actions.to_vec());
    let mut tasks = Vec::new();
    for c in 0..conns {
        let mut send = connect(connector, addrs[c % addrs.len()]).await;
        let (actions, errors) = (actions.clone(), errors.clone());
        let offset = period.mul_f64(c as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut next = start + offset;
            let mut k = c;
            while next < start + run_for {
                tokio::time::sleep_until(next.into()).await;
                let i = k % actions.len();
                k += conns;
                let uri = format!(
                    "/DEFAULT/controller/v1/dev-{i:06}/deploymentBase/{}/feedback",
                    actions[i]
                );
                let r = request("POST", &uri, &format!("TargetToken tok-{i:06}"), Some(FEEDBACK));
                match timed(&mut send, r).await {
                    Some(us) => lat.push(us),
                    None => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                next += period;
            }
            lat
        }));
    }
    tasks
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0)
        as f64
        / 1000.0
}

fn report(a: &Args, mut o: Outcome) {
    let secs = o.elapsed.as_secs_f64();
    println!(
        "store {}  instances {}  devices {}  connections {}  target {:.0} polls/s + {:.0} feedback/s  {:.1} s  (connecting took {:.1} s)",
        if a.postgres { "postgres" } else { "sqlite" },
        a.instances,
        a.devices,
        o.connections,
        a.rate,
        a.feedback,
        secs,
        o.connect_secs
    );
    let polls = o.polls_us.len() as f64 / secs;
    println!("polls {:.0}/s  errors {}", polls, o.errors);
    println!(
        "  generator's view   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (its lag sending: p50 {:.2} ms  p99 {:.2} ms)",
        pct(&mut o.polls_us, 0.5),
        pct(&mut o.polls_us, 0.99),
        pct(&mut o.polls_us, 1.0),
        pct(&mut o.lag_us, 0.5),
        pct(&mut o.lag_us, 0.99)
    );
    println!(
        "  a device's view    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (probe: own thread, own connection, {} polls)",
        pct(&mut o.probe_us, 0.5),
        pct(&mut o.probe_us, 0.99),
        pct(&mut o.probe_us, 1.0),
        o.probe_us.len()
    );
    if a.feedback > 0.0 {
        println!(
            "feedback {:.0}/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            o.feedback_us.len() as f64 / secs,
            pct(&mut o.feedback_us, 0.5),
            pct(&mut o.feedback_us, 0.99),
            pct(&mut o.feedback_us, 1.0)
        );
    }
    let cpu: Vec<String> =
        o.cpu.iter().map(|(n, c)| format!("{n} {:.0}%", 100.0 * c / secs)).collect();
    println!("cpu (% of one core)  {}", cpu.join("  "));
    let conns = (o.connections / o.rss.len()).max(1) as f64;
    for (i, m) in o.rss.iter().enumerate() {
        let per = |kib: u64| kib.saturating_sub(m.before) as f64 * 1.024 / conns;
        println!(
            "memory dmmp {i}: {} MiB before connecting; per open connection: {:.1} KB after the \
             handshake, {:.1} KB right after the traffic, {:.1} KB idle 2 s later; {} MiB after \
             they closed",
            m.before / 1024,
            per(m.connected),
            per(m.polled),
            per(m.idle),
            m.closed / 1024
        );
    }
}
