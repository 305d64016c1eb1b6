//! One device connection, from the TLS handshake to its close.
//!
//! A device polls every minute or so and keeps its connection open in between, so almost
//! every open connection is idle almost all the time. An idle HTTP/1 connection therefore
//! keeps only its TLS session: once a response is sent and no request is in flight, the HTTP
//! connection is put away (hyper's `graceful_shutdown` on an idle connection, without shutting
//! the socket) and its buffers freed. The first bytes of the next request bring up a fresh one,
//! which reads those bytes first. Nothing the client sent is lost in between: bytes the HTTP
//! connection had read but not parsed are handed to the next one.
//!
//! HTTP/2 (chosen by ALPN) is served by one connection for its life: browsers on the console
//! use it, devices do not.
//!
//! Deadlines (the handshake, the first request, idleness, a request's body and its whole
//! exchange) and the cap on open connections are the [`conns`](super::conns) registry's; a
//! request's body tells the registry when it was read to its end.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use super::conn_info::ConnInfo;
use super::conns::{Conn, Slot};
use super::fast_poll;
use super::state::AppState;

type Tls = TlsStream<TcpStream>;
type Response = hyper::Response<Answer>;
type H1 = hyper::server::conn::http1::Connection<TokioIo<Rewind>, Service>;
type Reply = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Bytes read to learn that the next request has begun.
const FIRST_READ: usize = 64;

/// How long each phase of a connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The TLS handshake.
    pub handshake: Duration,
    /// A request's headers, once its first byte arrived.
    pub header_read: Duration,
}

/// Serves one accepted TCP connection until the client leaves, fails, or the registry closes
/// it (by aborting this task).
///
/// The task's future holds every connection for its whole life, so it is kept small: the TLS
/// session is never borrowed in it (a borrowed local keeps its room in the future for good),
/// and functions that take the session return futures instead of being `async fn`s (an
/// `async fn` keeps a second copy of its arguments, rust-lang/rust#62958).
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: App,
    slot: Slot,
    limits: Limits,
) {
    let Some(tls) = handshake(acceptor, tcp, peer, limits.handshake).await else {
        return;
    };
    let (tls, svc, h2) = session(tls, peer, app, &slot);
    let ended = if h2 {
        serve_h2(tls, svc).await
    } else {
        serve_h1(tls, svc, &slot.conn, limits.header_read).await
    };
    if let Err(e) = ended {
        log::debug!("connection with {peer} ended: {e}");
    }
    drop(slot);
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Option<Tls> {
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            log::info!("TLS handshake with {peer} failed: {e}");
            None
        }
        Err(_) => {
            log::info!("TLS handshake with {peer} timed out");
            None
        }
    }
}

/// The connection's service (with the client's certificates) and whether it speaks HTTP/2.
fn session(tls: Tls, peer: SocketAddr, app: App, slot: &Slot) -> (Tls, Service, bool) {
    let (_, s) = tls.get_ref();
    let client_chain = s
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>().into());
    let h2 = s.alpn_protocol() == Some(b"h2");
    let svc = Service { app, info: ConnInfo { peer, client_chain }, conn: slot.conn.clone() };
    (tls, svc, h2)
}

/// HTTP/1: an HTTP connection while requests come, only the TLS session in between.
///
/// A function returning a future rather than an `async fn`: an `async fn` keeps a second copy
/// of its arguments (rust-lang/rust#62958), and the TLS session is 1.2 KB of every idle
/// connection.
fn serve_h1(
    mut tls: Tls,
    mut svc: Service,
    conn: &Conn,
    header_read: Duration,
) -> impl Future<Output = Result<(), String>> + '_ {
    let mut unread = Bytes::new();
    async move {
        loop {
            if unread.is_empty() {
                let mut first = [0u8; FIRST_READ];
                let n = tls.read(&mut first).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                unread = Bytes::copy_from_slice(&first[..n]);
            }
            let mut http = h1_connection(tls, unread, svc, header_read);
            let mut parking = false;
            // A notice left from before this HTTP connection served anything is stale.
            let served_before = conn.requests();
            loop {
                tokio::select! {
                    r = std::future::poll_fn(|cx| http.poll_without_shutdown(cx)) => {
                        r.map_err(|e| e.to_string())?;
                        break;
                    }
                    _ = conn.went_idle(), if !parking => {
                        if conn.is_idle() && conn.requests() > served_before {
                            Pin::new(&mut *http).graceful_shutdown();
                            parking = true;
                        }
                    }
                }
            }
            (tls, svc, unread) = take_apart(*http);
            if !parking || conn.client_closing() {
                // Not put away: hyper ended the connection itself (the client left or asked to
                // close, or keep-alive was off), so it closes as hyper would close it. The
                // client's `Connection: close` is checked too: it may coincide with parking.
                let _ = tls.shutdown().await;
                return Ok(());
            }
            conn.parked();
        }
    }
}

/// The TLS session, the service and the bytes not read yet, from a finished HTTP connection.
/// (A function of its own, so that the parts are not kept in the connection's task.)
fn take_apart(http: H1) -> (Tls, Service, Bytes) {
    let parts = http.into_parts();
    let rewind = parts.io.into_inner();
    let unread = rewind.rest_then(parts.read_buf);
    (rewind.inner, parts.service, unread)
}

/// A fresh HTTP/1 connection over the TLS session, reading `unread` first. Boxed: it lives
/// only while requests come.
fn h1_connection(tls: Tls, unread: Bytes, svc: Service, header_read: Duration) -> Box<H1> {
    let io = TokioIo::new(Rewind { unread, inner: tls });
    Box::new(
        hyper::server::conn::http1::Builder::new()
            .writev(true)
            .max_buf_size(8192)
            .timer(TokioTimer::new())
            .header_read_timeout(header_read.max(Duration::from_secs(1)))
            .serve_connection(io, svc),
    )
}

/// HTTP/2, boxed: its connection is large and would size every connection's task.
fn serve_h2(tls: Tls, svc: Service) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
    let http = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tls), svc);
    Box::pin(async move { http.await.map_err(|e| e.to_string()) })
}

/// What answers a connection's requests: polls the view alone answers ([`fast_poll`]), and
/// the router for everything else.
#[derive(Clone)]
pub struct App {
    /// The server state, which polls are answered from.
    pub state: Arc<AppState>,
    /// The router.
    pub router: axum::Router,
}

/// One connection's HTTP service: each request carries the connection's identity and counts
/// as in flight until the last byte of its response is sent.
#[derive(Clone)]
struct Service {
    app: App,
    info: ConnInfo,
    conn: Arc<Conn>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Reply;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Reply {
        if asks_to_close(&req) {
            self.conn.client_closes();
        }
        let guard = InFlight::start(self.conn.clone());
        if let Some(r) = fast_poll::answer(&self.app.state, &self.info, &req) {
            // A poll has no body: it was read.
            guard.0.body_read(guard.1);
            let r = r.map(|b| Answer { body: Body::Bytes(Some(b)), _guard: guard });
            return Box::pin(std::future::ready(Ok(r)));
        }
        req.extensions_mut().insert(self.info.clone());
        let req = req.map(|b| axum::body::Body::new(Watched::new(b, &guard)));
        let resp = self.app.router.clone().oneshot(req);
        Box::pin(async move {
            resp.await.map(|r| r.map(|b| Answer { body: Body::Routed(b), _guard: guard }))
        })
    }
}

/// Whether the request ends its connection (HTTP/1.1 `Connection: close`, or HTTP/1.0 without
/// `keep-alive`).
fn asks_to_close<B>(req: &hyper::Request<B>) -> bool {
    let says = |word: &str| {
        req.headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(word))
    };
    match req.version() {
        hyper::Version::HTTP_10 | hyper::Version::HTTP_09 => !says("keep-alive"),
        hyper::Version::HTTP_11 => says("close"),
        _ => false,
    }
}

/// A response's body, which keeps its request in flight until it is sent (or dropped).
pub struct Answer {
    body: Body,
    _guard: InFlight,
}

/// What a response's body is.
enum Body {
    /// The router's.
    Routed(axum::body::Body),
    /// Bytes answered without the router, until they are sent.
    Bytes(Option<Bytes>),
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        match &mut self.body {
            Body::Routed(b) => Pin::new(b).poll_frame(cx),
            Body::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(hyper::body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Body::Routed(b) => b.is_end_stream(),
            Body::Bytes(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.body {
            Body::Routed(b) => b.size_hint(),
            Body::Bytes(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A request in flight on a connection, until dropped.
struct InFlight(Arc<Conn>, u64);

impl InFlight {
    fn start(c: Arc<Conn>) -> InFlight {
        let id = c.request_started();
        InFlight(c, id)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended(self.1);
    }
}

/// Marks a request's body read when dropped.
struct BodyRead(Arc<Conn>, u64);

impl Drop for BodyRead {
    fn drop(&mut self) {
        self.0.body_read(self.1);
    }
}

/// A request's body that tells its connection when it was read to its end (or failed, or was
/// dropped unread): until then the body deadline runs.
struct Watched<B> {
    inner: B,
    reading: Option<BodyRead>,
}

impl<B: hyper::body::Body + Unpin> Watched<B> {
    /// Watches `inner`, the body of request `req`. A request without a body (a poll, a
    /// download) has read it already: only its whole-request deadline runs.
    fn new(inner: B, req: &InFlight) -> Watched<B> {
        if hyper::body::Body::is_end_stream(&inner) {
            req.0.body_read(req.1);
            return Watched { inner, reading: None };
        }
        Watched { inner, reading: Some(BodyRead(req.0.clone(), req.1)) }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_))));
        if ended || hyper::body::Body::is_end_stream(&self.inner) {
            self.reading = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that yields `unread` before what `inner` reads.
struct Rewind {
    unread: Bytes,
    inner: Tls,
}

impl Rewind {
    /// What was not read yet: the rest of `unread`, then `more`, in a buffer of its own.
    /// (`more` is a view into the HTTP connection's read buffer: kept, even empty, it would
    /// keep that whole buffer for as long as the connection idles.)
    fn rest_then(&self, more: Bytes) -> Bytes {
        if self.unread.is_empty() && more.is_empty() {
            return Bytes::new();
        }
        let mut all = BytesMut::with_capacity(self.unread.len() + more.len());
        all.extend_from_slice(&self.unread);
        all.extend_from_slice(&more);
        all.freeze()
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.unread.has_remaining() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: hyper::Version, connection: Option<&str>) -> hyper::Request<()> {
        let mut b = hyper::Request::builder().version(version);
        if let Some(c) = connection {
            b = b.header("connection", c);
        }
        b.body(()).unwrap()
    }

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    /// A real TLS client on loopback against [`serve`], with the server's record of the
    /// connection.
    async fn connect(fx: &crate::server::fixture::Fixture) -> (Client, Arc<Conn>) {
        use rustls_pki_types::pem::PemObject;
        let dir = fx.dir.path();
        let tls =
            super::super::tls::server_config(&dir.join("server.pem"), &dir.join("server.key"))
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app =
            App { state: fx.state.clone(), router: super::super::router::router(fx.state.clone()) };
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let registry = super::super::conns::Registry::new(1);
            let slot = registry.admit(peer).unwrap();
            tx.send(slot.conn.clone()).unwrap();
            let limits =
                Limits { handshake: Duration::from_secs(5), header_read: Duration::from_secs(5) };
            serve(tcp, peer, TlsAcceptor::from(Arc::new(tls)), app, slot, limits).await;
        });
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(dir.join("root-ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let client =
            tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
        (client, rx.await.unwrap())
    }

    const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: mp\r\n\r\n";

    /// Reads one response (headers and a `content-length` body) from `buf` then `c`; returns
    /// its status line.
    async fn response(c: &mut Client, buf: &mut Vec<u8>) -> String {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    return head.lines().next().unwrap().to_string();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the server closed mid-response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn parks(conn: &Conn, n: u64) {
        for _ in 0..500 {
            if conn.times_parked() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection was put away {} times, not {n}", conn.times_parked());
    }

    /// An idle HTTP/1 connection keeps only its TLS session, and loses nothing the client sent:
    /// a request split across the pause, two requests in one write, and `Connection: close`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_is_put_away_and_serves_the_next_request() {
        let fx = crate::server::fixture::Fixture::new(|_| {});
        let (mut c, conn) = connect(&fx).await;
        let mut buf = Vec::new();
        c.write_all(HEALTH).await.unwrap();
        assert_eq!(response(&mut c, &mut buf).await, "HTTP/1.1 200 OK");
        parks(&conn, 1).await;

        // Split: the first bytes wake the connection, the rest follow later.
        c.write_all(&HEALTH[..9]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.write_all(&HEALTH[9..]).await.unwrap();
        assert_eq!(response(&mut c, &mut buf).await, "HTTP/1.1 200 OK");
        parks(&conn, 2).await;

        // Pipelined: two requests in one write, both answered.
        c.write_all(&[HEALTH, HEALTH].concat()).await.unwrap();
        assert_eq!(response(&mut c, &mut buf).await, "HTTP/1.1 200 OK");
        assert_eq!(response(&mut c, &mut buf).await, "HTTP/1.1 200 OK");
        parks(&conn, 3).await;
        assert!(buf.is_empty());
        // (The second may have been served after a pause of its own: let that settle.)
        tokio::time::sleep(Duration::from_millis(300)).await;
        let parked = conn.times_parked();

        // The client asks to close: answered, then closed.
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: mp\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c, &mut buf).await, "HTTP/1.1 200 OK");
        let mut rest = Vec::new();
        let n =
            tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await.unwrap();
        assert!(n.is_ok() && rest.is_empty(), "closed after the response: {n:?} {rest:?}");
        assert_eq!(conn.times_parked(), parked, "closing is not parking");
    }

    /// Every open connection holds its task's future: keep it small (see [`serve`]).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let fx = crate::server::fixture::Fixture::new(|_| {});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let dir = fx.dir.path();
        let tls =
            super::super::tls::server_config(&dir.join("server.pem"), &dir.join("server.key"))
                .unwrap();
        let registry = super::super::conns::Registry::new(1);
        let slot = registry.admit(peer).unwrap();
        let limits =
            Limits { handshake: Duration::from_secs(1), header_read: Duration::from_secs(1) };
        let app =
            App { state: fx.state.clone(), router: super::super::router::router(fx.state.clone()) };
        let task = serve(tcp, peer, TlsAcceptor::from(Arc::new(tls)), app, slot, limits);
        let size = std::mem::size_of_val(&task);
        assert!(size < 2048, "a connection's future takes {size} bytes");
    }

    /// A request's body deadline runs until its body was read to its end, and never for a
    /// request without a body (a download slower than the body deadline is not cut).
    #[tokio::test]
    async fn the_body_deadline_runs_until_the_body_is_read() {
        use http_body_util::BodyExt;
        let d = super::super::conns::Deadlines {
            first_request: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            body: Duration::from_millis(1),
            request: Duration::from_secs(60),
        };
        let registry = super::super::conns::Registry::new(1);
        let slot = registry.admit("127.0.0.1:1".parse().unwrap()).unwrap();
        let conn = slot.conn.clone();
        let get = InFlight::start(conn.clone());
        let none = Watched::new(http_body_util::Empty::<Bytes>::new(), &get);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(conn.overdue(d), None, "no body: nothing to wait for");
        drop((none, get));
        let post = InFlight::start(conn.clone());
        let body = Watched::new(http_body_util::Full::new(Bytes::from_static(b"{}")), &post);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(conn.overdue(d), Some("request body not received in time"));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"{}");
        assert_eq!(conn.overdue(d), None, "read to its end");
        drop(post);
        assert!(conn.is_idle());
    }

    #[test]
    fn which_requests_end_their_connection() {
        use hyper::Version as V;
        assert!(!asks_to_close(&req(V::HTTP_11, None)));
        assert!(asks_to_close(&req(V::HTTP_11, Some("close"))));
        assert!(asks_to_close(&req(V::HTTP_11, Some("TE, Close"))));
        assert!(!asks_to_close(&req(V::HTTP_11, Some("keep-alive"))));
        assert!(asks_to_close(&req(V::HTTP_10, None)));
        assert!(!asks_to_close(&req(V::HTTP_10, Some("Keep-Alive"))));
        assert!(!asks_to_close(&req(V::HTTP_2, Some("close"))));
    }
}
