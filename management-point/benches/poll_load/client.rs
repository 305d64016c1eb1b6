//! The generator's HTTPS client: keep-alive TLS connections to a server and the requests a
//! device sends, timed.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::bare;

/// The headers and body of `dmmp`'s answer to a device's poll.
pub async fn answer(addr: std::net::SocketAddr, root: &Path, device: usize) -> bare::Answer {
    let mut send = connect(&tls_connector(root), addr).await;
    let (uri, auth) =
        (format!("/DEFAULT/controller/v1/dev-{device:06}"), format!("TargetToken tok-{device:06}"));
    let resp = send.send_request(request("GET", &uri, &auth, None)).await.unwrap();
    assert!(resp.status().is_success(), "the poll was answered {}", resp.status());
    let headers = resp
        .headers()
        .iter()
        .filter(|(n, _)| *n != hyper::header::CONTENT_LENGTH && *n != hyper::header::DATE)
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    bare::Answer { headers, body: resp.into_body().collect().await.unwrap().to_bytes() }
}

pub fn tls_connector(root: &Path) -> tokio_rustls::TlsConnector {
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
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

pub type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

pub async fn connect(connector: &tokio_rustls::TlsConnector, addr: std::net::SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    send
}

pub fn request(
    method: &str,
    uri: &str,
    auth: &str,
    body: Option<&'static str>,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut r = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .header("authorization", auth);
    if body.is_some() {
        r = r.header("content-type", "application/json");
    }
    r.body(http_body_util::Full::new(bytes::Bytes::from_static(body.unwrap_or("").as_bytes())))
        .unwrap()
}

/// Sends `req` and returns its latency in µs, or `None` when it failed.
pub async fn timed(
    send: &mut Sender,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Option<u64> {
    let sent = Instant::now();
    match send.send_request(req).await {
        Ok(resp) if resp.status().is_success() => {
            let _ = resp.into_body().collect().await;
            Some(sent.elapsed().as_micros() as u64)
        }
        _ => None,
    }
}
