//! The bare server the load bench measures `dmmp` against: hyper 1 and tokio-rustls (ring)
//! with `dmmp`'s own TLS settings and certificate, on the same kind of runtime, answering every
//! request with one fixed answer (the headers and body `dmmp` sent a polling idle device). It
//! does no routing, no authentication and no bookkeeping: what is left is the floor a poll
//! over keep-alive TLS costs, which `dmmp`'s cost per poll is compared with.
//!
//! It runs as a process of its own (the bench binary started with `--bare-server`), so that it
//! can be pinned to a core and its CPU time read from /proc like `dmmp`'s.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;

/// An answer to replay: its headers (without `content-length` and `date`, which hyper
/// writes) and its body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Answer {
    /// Writes the answer to `path`: a header a line (`name: value`), a blank line, the body.
    pub fn save(&self, path: &Path) {
        let mut text = Vec::new();
        for (n, v) in &self.headers {
            writeln!(text, "{n}: {v}").unwrap();
        }
        text.push(b'\n');
        text.extend_from_slice(&self.body);
        std::fs::write(path, text).unwrap();
    }

    /// Reads what [`Answer::save`] wrote.
    fn load(path: &Path) -> Answer {
        let text = std::fs::read(path).unwrap();
        let end =
            text.windows(2).position(|w| w == b"\n\n").expect("a blank line ends the headers");
        let head = std::str::from_utf8(&text[..end]).unwrap();
        let headers = head
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Answer { headers, body: Bytes::copy_from_slice(&text[end + 2..]) }
    }

    /// The headers, parsed once.
    fn parsed(&self) -> Vec<(HeaderName, HeaderValue)> {
        let h = |(n, v): &(String, String)| (n.parse().unwrap(), v.parse().unwrap());
        self.headers.iter().map(h).collect()
    }
}

/// The fixed answer, ready to send.
struct Fixed {
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Fixed {
    fn response(&self) -> hyper::Response<Full<Bytes>> {
        let mut r = hyper::Response::new(Full::new(self.body.clone()));
        for (n, v) in &self.headers {
            r.headers_mut().insert(n.clone(), v.clone());
        }
        r
    }
}

/// `--bare-server CERT KEY ANSWER`: serves on 127.0.0.1 (a port of its own) until killed,
/// printing `listening https://ADDR` once it accepts connections.
pub fn main(cert: &Path, key: &Path, answer: &Path) {
    let tls = dm_mp::server::tls::server_config(cert, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let answer = Answer::load(answer);
    let answer = Arc::new(Fixed { headers: answer.parsed(), body: answer.body });
    // The runtime dmmp runs on: one worker per core it may use.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut out = std::io::stdout();
        writeln!(out, "listening https://{}", listener.local_addr().unwrap()).unwrap();
        out.flush().unwrap();
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |_: hyper::Request<Incoming>| {
                    let r = answer.response();
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
}
