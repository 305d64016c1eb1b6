//! `dmmp serve`: the HTTPS server devices poll.
//!
//! One TLS listener (rustls, ring) serves the DDI device API with keep-alive over HTTP/1.1 and
//! HTTP/2. Polls are answered from memory; the database is written for registrations, actions,
//! feedback and inventory, and for last-seen times in batches.

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod catalog;
pub mod confirm;
pub mod conn_info;
pub mod connection;
pub mod conns;
pub mod console;
pub mod dp_cache;
pub mod dps;
pub mod fast_poll;
pub mod feedback;
pub mod files;
#[cfg(test)]
pub mod fixture;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod poll;
pub mod rollouts;
pub mod router;
pub mod routes;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod trust;
pub mod update_link;
pub mod updates;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use self::state::AppState;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Opens the storage and builds the server state.
pub fn prepare(config: Config) -> Result<Arc<AppState>> {
    let store: Arc<dyn Storage> = Arc::from(crate::storage::open(&config, "serve")?);
    let trust = trust::ClientTrust::load(&config)?;
    Ok(Arc::new(AppState::new(config, store, trust)?))
}

/// Serves until `shutdown` completes. `ready` receives the bound address.
pub async fn serve(
    state: Arc<AppState>,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let cfg = &state.config;
    let tls_cfg =
        tls::server_config(&cfg.resolve(&cfg.server.tls_cert), &cfg.resolve(&cfg.server.tls_key))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_cfg));
    let listener = TcpListener::bind(cfg.server.listen).await.map_err(|e| Error::Config {
        path: "dmmp.toml".into(),
        reason: format!("[server] listen {}: {e}", cfg.server.listen),
    })?;
    let addr = listener.local_addr().map_err(|e| Error::tls("the listener", e))?;
    let _ = state.public_url.set(format!("https://{addr}"));
    log::info!(
        "dmmp listening on https://{addr} (tenants {}); links use {}",
        cfg.devices.tenants.join(", "),
        state.public_url()
    );
    ready(addr);

    // Another process (the admin commands) changes the database, or an administrator the
    // device CAs or their revocation lists: pick it up.
    state.reload_client_trust();
    let refresher = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let st2 = st.clone();
                let st = st.clone();
                let r = tokio::task::spawn_blocking(move || {
                    st.reload_client_trust();
                    st.refresh_if_changed()
                })
                .await;
                if let Ok(Err(e)) = r {
                    log::error!("cannot reload from the database: {e}");
                    st2.metrics.refresh_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let flusher = {
        let st = state.clone();
        let every = Duration::from_secs(st.config.devices.last_seen_flush_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let st = st.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || st.flush_last_seen()).await
                {
                    log::error!("cannot record last-seen times: {e}");
                }
            }
        })
    };

    let gates = {
        let st = state.clone();
        let every = Duration::from_secs(st.config.devices.rollout_tick_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let memory = Arc::new(std::sync::Mutex::new(rollouts::Memory::default()));
            loop {
                tick.tick().await;
                let (st, memory) = (st.clone(), memory.clone());
                let r = tokio::task::spawn_blocking(move || {
                    let mut memory = memory.lock().unwrap_or_else(|p| p.into_inner());
                    rollouts::tick(&st, &mut memory)
                })
                .await;
                if let Ok(Err(e)) = r {
                    log::error!("cannot evaluate the rollouts' gates: {e}");
                }
            }
        })
    };

    let dp_ticker = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let st = st.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || dps::tick(&st)).await {
                    log::error!("cannot check the distribution points: {e}");
                }
            }
        })
    };

    let app = connection::App { state: state.clone(), router: router::router(state.clone()) };
    let deadlines = conns::Deadlines {
        first_request: Duration::from_secs(cfg.server.first_request_timeout_secs),
        idle: Duration::from_secs(cfg.server.idle_timeout_secs),
        body: Duration::from_secs(cfg.server.body_timeout_secs),
        request: Duration::from_secs(cfg.server.request_timeout_secs),
    };
    let limits = connection::Limits {
        handshake: Duration::from_secs(cfg.server.handshake_timeout_secs),
        header_read: deadlines.first_request,
    };
    let cap = conns::effective_cap(cfg.server.max_connections);
    log::info!("at most {cap} connections at once (max_connections and the file descriptor limit)");
    let registry = conns::Registry::new(cap);
    let metrics_server = match cfg.server.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, state.clone(), registry.clone()).await?),
        None => None,
    };
    let pressure = spawn_pressure_log(registry.clone());
    let sweeper = spawn_sweeper(registry.clone(), deadlines);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            x = accept(&listener) => x,
        };
        let _ = tcp.set_nodelay(true);
        // Full: the oldest silent connection (else the oldest idle one) makes room.
        let Some(slot) = registry.admit(peer) else {
            drop(tcp);
            continue;
        };
        let id = slot.id();
        let task =
            tokio::spawn(connection::serve(tcp, peer, acceptor.clone(), app.clone(), slot, limits));
        registry.set_abort(id, task.abort_handle());
    }
    pressure.abort();
    sweeper.abort();
    refresher.abort();
    flusher.abort();
    gates.abort();
    dp_ticker.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    let st = state.clone();
    match tokio::task::spawn_blocking(move || st.flush_last_seen()).await {
        Ok(Ok(n)) => log::info!("stopped; recorded {n} last-seen times"),
        Ok(Err(e)) => log::error!("stopped; cannot record last-seen times: {e}"),
        Err(e) => log::error!("stopped; {e}"),
    }
    Ok(())
}

/// Closes, twice a second, the connections past one of their deadlines.
fn spawn_sweeper(
    registry: Arc<conns::Registry>,
    d: conns::Deadlines,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            for (peer, why) in registry.close_overdue(d) {
                if why.starts_with("request") {
                    log::info!("closing the connection with {peer}: {why}");
                } else {
                    log::debug!("closing the connection with {peer}: {why}");
                }
            }
        }
    })
}

/// Logs, at most every 10 s, how many connections were closed to make room or turned away.
fn spawn_pressure_log(registry: Arc<conns::Registry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (0, 0);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let now = registry.pressure();
            if now != last {
                log::warn!(
                    "connections full ({} open): closed {} silent or idle connections to make room, turned away {} (max_connections)",
                    registry.len(),
                    now.0 - last.0,
                    now.1 - last.1
                );
                last = now;
            }
        }
    })
}

/// Runs the server until SIGTERM or SIGINT, printing `listening https://ADDR` on stdout when
/// it accepts connections.
pub fn run(config: Config) -> Result<()> {
    let state = prepare(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::tls("the async runtime", e))?;
    rt.block_on(async move { serve(state, announce, shutdown_signal()).await })
}

/// Says on stdout that the server accepts connections at `addr` (`listening https://ADDR`,
/// the line scripts and tests wait for).
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening https://{addr}");
    let _ = out.flush();
}

/// The next connection of `listener`; a failed accept (out of file descriptors, a connection
/// reset before it was taken) is logged and tried again after 50 ms.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(x) => return x,
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Completes at SIGTERM (a service manager's stop) or SIGINT, logging which.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: stopping"),
    }
}

/// Serves `GET /metrics` (Prometheus text) on `addr`, plain HTTP: a scraper's port, never the
/// devices'.
async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<AppState>,
    registry: Arc<conns::Registry>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.map_err(|e| Error::Config {
        path: "dmmp.toml".into(),
        reason: format!("[server] metrics_listen {addr}: {e}"),
    })?;
    let bound = listener.local_addr().map_err(|e| Error::tls("the metrics listener", e))?;
    log::info!("metrics at http://{bound}/metrics");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let st = state.clone();
            let open = registry.len();
            async move {
                let st2 = st.clone();
                let latency =
                    tokio::task::spawn_blocking(move || st2.store.ping().ok()).await.ok().flatten();
                st.metrics.database(latency);
                let reloads = st.reloads.load(std::sync::atomic::Ordering::Relaxed);
                let devices = st.read().devices.len();
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    st.metrics.render(reloads, devices, open) + &dps::metrics(&st),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("the metrics listener stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;

    /// The real router and TLS listener on loopback, in this process, with an HTTPS client.
    fn serving(f: &Fixture) -> (tokio::runtime::Runtime, SocketAddr, ureq::Agent) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let state = f.state.clone();
        rt.spawn(async move {
            let _ = serve(state, move |a| tx.send(a).unwrap(), std::future::pending()).await;
        });
        let addr = rx.recv().unwrap();
        let pem = std::fs::read(f.dir.path().join("root-ca.pem")).unwrap();
        let roots: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i.unwrap() {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .build()
            .new_agent();
        (rt, addr, agent)
    }

    /// A TLS connection to `addr` that sends `bytes` and then nothing.
    async fn stalled(addr: SocketAddr, roots: &rustls::RootCertStore, bytes: &[u8]) -> TlsClient {
        use tokio::io::AsyncWriteExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut c =
            tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
        c.write_all(bytes).await.unwrap();
        c.flush().await.unwrap();
        c
    }

    type TlsClient = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    /// The attack: `max_connections` connections, each sending a POST with `Content-Length:
    /// 65536` and then nothing, with no credentials, held every connection slot for good, and
    /// every device was turned away.
    #[test]
    fn requests_whose_body_never_comes_cannot_hold_every_connection() {
        use rustls_pki_types::pem::PemObject;
        use tokio::io::AsyncReadExt;
        let f = Fixture::new(|c| {
            c.server.max_connections = 4;
            c.server.body_timeout_secs = 1;
        });
        let (rt, addr, agent) = serving(&f);
        let mut roots = rustls::RootCertStore::empty();
        let ca = f.dir.path().join("root-ca.pem");
        roots.add(rustls_pki_types::CertificateDer::from_pem_file(ca).unwrap()).unwrap();
        let head = b"POST /DEFAULT/controller/v1/dev-1/deploymentBase/1/feedback HTTP/1.1\r\n\
                     Host: mp\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{";
        let closed_by_server = rt.block_on(async {
            let mut attackers = Vec::new();
            for _ in 0..4 {
                attackers.push(stalled(addr, &roots, head).await);
            }
            // Each is closed by the server, its body never having come (the signal waited
            // for; the bound only stops a failing test).
            let mut closed = 0;
            let all = async {
                for mut a in attackers {
                    let mut rest = Vec::new();
                    let _ = a.read_to_end(&mut rest).await;
                    closed += 1;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(20), all).await;
            closed
        });
        assert_eq!(closed_by_server, 4, "connections with unfinished bodies were kept open");
        let r = agent
            .get(&format!("https://{addr}/DEFAULT/controller/v1/dev-1"))
            .header("Authorization", "TargetToken t")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "a device polls again");
    }

    #[test]
    fn refusals_are_exception_info_and_health_needs_no_credentials() {
        let f = Fixture::new(|_| {});
        let (_rt, addr, agent) = serving(&f);
        let get = |path: &str| {
            let mut r = agent.get(&format!("https://{addr}{path}")).call().unwrap();
            let status = r.status().as_u16();
            let auth = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value =
                serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
            (status, auth, body)
        };
        let (status, _, body) = get("/healthz");
        assert_eq!((status, body["database"].as_str()), (200, Some("ok")), "{body}");
        let (status, auth, body) = get("/DEFAULT/controller/v1/dev-1");
        assert_eq!((status, auth.as_deref()), (401, Some("TargetToken")));
        assert_eq!(body["errorCode"], "dm.auth.required", "{body}");
        assert!(body["message"].as_str().unwrap().contains("no credentials"), "{body}");
        let (status, _, body) = get("/no/such/thing");
        assert_eq!((status, body["exceptionClass"].as_str()), (404, Some("Not Found")), "{body}");
        let r = agent
            .get(&format!("https://{addr}/DEFAULT/controller/v1/dev-1"))
            .header("Authorization", "TargetToken t")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // Malformed queries and paths: the same shape, never axum's plain text.
        for bad in [
            "/DEFAULT/controller/v1/dev-1/deploymentBase/1?actionHistory=1&actionHistory=2",
            "/DEFAULT/controller/v1/dev-1/deploymentBase/1?actionHistory=",
            "/DEFAULT/controller/v1/dev-%FF/deploymentBase/1",
        ] {
            let (status, _, body) = get(bad);
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["errorCode"], "dm.request.malformed", "{bad}: {body}");
        }
    }
}
