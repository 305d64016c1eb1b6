//! A distribution point's HTTPS listener: `GET /content/{package}/{file}` for a link the
//! management point signed (HMAC over the package, file, device and expiry; 403 when forged or
//! expired, logged), byte ranges included, of content it holds verified; `GET /healthz`. It
//! lists nothing: any other path is 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::DpConfig;
use super::holdings::Holdings;
use crate::distribution::{LinkRefusal, check_link};
use crate::error::{Error, Result};
use crate::server::http::ApiError;

/// The most connections served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 1024;
/// The most connections one address holds at once: no one client can take every slot.
const MAX_PER_ADDRESS: usize = 128;
/// An HTTP/2 connection is pinged this often, and closed when a ping is not answered in time.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// A TLS handshake, and a request's head, each within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct Dp {
    holdings: Arc<Holdings>,
    link_key: Arc<String>,
}

/// A link's query.
#[derive(Debug, Deserialize)]
struct LinkQuery {
    device: String,
    expires: i64,
    sig: String,
}

/// The peer of a request, for logs.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

fn router(dp: Dp) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/content/{package}/{file}", get(content))
        .fallback(|| async { ApiError::not_found("nothing here").into_response() })
        .with_state(dp)
}

async fn healthz(State(dp): State<Dp>) -> Response {
    axum::Json(serde_json::json!({"status": "ok", "packages": dp.holdings.held().len()}))
        .into_response()
}

async fn content(
    State(dp): State<Dp>,
    peer: Option<axum::Extension<Peer>>,
    Path((package, file)): Path<(i64, String)>,
    q: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let peer = peer.map_or_else(|| "unknown".into(), |p| p.0.0.ip().to_string());
    let Ok(Query(q)) = q else {
        log::warn!("{peer}: GET /content/{package}/{file:?} without a signed link: 403");
        return ApiError::forbidden("a signed link is needed").into_response();
    };
    let now = crate::admin::now();
    if let Err(why) = check_link(&dp.link_key, package, &file, &q.device, q.expires, &q.sig, now) {
        let why = match why {
            LinkRefusal::Forged => "its signature is not the management point's",
            LinkRefusal::Expired => "it expired",
        };
        log::warn!(
            "{peer}: link to package {package} {file:?} for {:?} refused (403): {why}",
            q.device
        );
        return ApiError::forbidden(format!("the link is refused: {why}")).into_response();
    }
    let Some(s) = dp.holdings.served(package, &file) else {
        log::info!("{peer}: package {package} {file:?} is not held here (404)");
        return ApiError::not_found(format!("package {package} {file:?} is not held here"))
            .into_response();
    };
    log::info!("{peer}: serving package {package} {file:?} to {}", q.device);
    crate::server::files::serve_file(&s.path, s.size, &s.sha256, &file, &q.device, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Serves until SIGTERM or SIGINT.
pub fn run(cfg: &DpConfig, holdings: Arc<Holdings>, link_key: String) -> Result<()> {
    let tls = crate::server::tls::server_config(
        &cfg.resolve(&cfg.server.tls_cert),
        &cfg.resolve(&cfg.server.tls_key),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::tls("the async runtime", e))?;
    let app = router(Dp { holdings, link_key: Arc::new(link_key) });
    let listen = cfg.server.listen;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.map_err(|e| Error::Config {
            path: "dp.toml".into(),
            reason: format!("[server] listen {listen}: {e}"),
        })?;
        let addr = listener.local_addr().map_err(|e| Error::tls("the listener", e))?;
        log::info!("distribution point listening on https://{addr}");
        crate::server::announce(addr);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let per_address = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let stop = crate::server::shutdown_signal();
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut stop => break,
                x = crate::server::accept(&listener) => x,
            };
            let Some(mine) = PerAddress::take(&per_address, peer.ip()) else {
                log::warn!(
                    "{peer}: {MAX_PER_ADDRESS} connections from this address already; closing"
                );
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let _ = tcp.set_nodelay(true);
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let (_slot, _mine) = (slot, mine);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => return log::debug!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => return log::debug!("TLS handshake with {peer} timed out"),
                };
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(Peer(peer));
                        let app = app.clone();
                        async move {
                            use tower::ServiceExt;
                            app.oneshot(req.map(axum::body::Body::new)).await
                        }
                    },
                );
                let mut b = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                b.http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT);
                b.http2()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive_interval(Some(H2_KEEPALIVE))
                    .keep_alive_timeout(HANDSHAKE_TIMEOUT);
                if let Err(e) = b.serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await {
                    log::debug!("connection with {peer} ended: {e}");
                }
            });
        }
        Ok::<(), Error>(())
    })?;
    Ok(())
}

/// The connections of each address.
type Counts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One connection of an address, counted while it lives.
struct PerAddress {
    counts: Counts,
    ip: std::net::IpAddr,
}

impl PerAddress {
    /// Counts a connection of `ip`, unless it holds [`MAX_PER_ADDRESS`] already.
    fn take(counts: &Counts, ip: std::net::IpAddr) -> Option<PerAddress> {
        let mut m = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(PerAddress { counts: counts.clone(), ip })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
