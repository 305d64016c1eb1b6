//! Polls answered on the connection's own task. Almost every request a fleet sends is a poll
//! from a device the view holds, with nothing new for it: answering it needs no router, no
//! blocking thread and no database, only the view. Such a poll is answered here, with the
//! bytes the router would have answered ([`super::routes::poll`]: the same
//! `poll::controller_base`, serialized the same way, counted the same way).
//!
//! Every other request goes to the router, and so does every poll that needs more than the
//! view or might be read differently by it: another credential or a client certificate, a
//! device the view does not hold, a wrong token, an address held back, an advertisement that
//! newly applies (its action is written first), a path with anything percent-encoded.

use axum::http::{HeaderValue, Method, header};
use bytes::Bytes;

use super::auth;
use super::conn_info::ConnInfo;
use super::metrics::Counted;
use super::poll;
use super::state::AppState;

/// The answer to `req` when it is a poll the view alone answers; `None` sends it to the router.
pub fn answer<B: hyper::body::Body>(
    state: &AppState,
    conn: &ConnInfo,
    req: &hyper::Request<B>,
) -> Option<hyper::Response<Bytes>> {
    if req.method() != Method::GET || !req.body().is_end_stream() {
        return None;
    }
    let (tenant, cid) = poll_path(req.uri().path())?;
    let view = state.read();
    let d = auth::known_by_token(state, &view, req.headers(), conn, tenant, cid)?;
    let now = state.now();
    let trust_certs = state.config.devices.trust_certificate_registrations;
    if !view.new_advertisements_for(d, now, trust_certs).is_empty() {
        return None;
    }
    state.seen(d.id, now);
    let base = poll::controller_base(state, &view, d, d, now);
    drop(view);
    // An idle device's answer is about 150 bytes.
    let mut body = Vec::with_capacity(256);
    serde_json::to_writer(&mut body, &base).ok()?;
    state.metrics.answered(Some(Counted::Poll), 200);
    let mut r = hyper::Response::new(Bytes::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Some(r)
}

/// The tenant and controller id in a poll's path (`/{tenant}/controller/v1/{cid}`), when the
/// router would read the same: both plain (letters, digits, `.`, `_`, `-`: nothing to
/// percent-decode), and the tenant not one of the router's own first segments.
fn poll_path(path: &str) -> Option<(&str, &str)> {
    let (tenant, rest) = path.strip_prefix('/')?.split_once('/')?;
    let cid = rest.strip_prefix("controller/v1/")?;
    let plain = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let routers_own = matches!(tenant, "console" | "healthz");
    (plain(tenant) && plain(cid) && !routers_own).then_some((tenant, cid))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::model::AdvertisementKind;
    use crate::server::fixture::Fixture;

    fn request(method: &str, path: &str, auth: Option<&str>) -> hyper::Request<Body> {
        let mut r = hyper::Request::builder().method(method).uri(path).header("host", "mp");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::empty()).unwrap()
    }

    /// The router's answer: status, content type, body.
    async fn routed(f: &Fixture, mut req: hyper::Request<Body>) -> (u16, Option<String>, Bytes) {
        req.extensions_mut().insert(Fixture::conn());
        let r = crate::server::router::router(f.state.clone()).oneshot(req).await.unwrap();
        let ctype = r.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().into());
        let status = r.status().as_u16();
        (status, ctype, r.into_body().collect().await.unwrap().to_bytes())
    }

    /// Polls answered from the view are answered as the router answers them (byte for byte,
    /// and counted alike), in every state a device's poll can show; the others go to the
    /// router.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_view_answers_polls_as_the_router_does() {
        let f = Fixture::new(|c| {
            c.devices.tenants = vec!["DEFAULT".into(), "console".into()];
            c.devices.failed_auth_per_minute = 1;
            c.devices.gateway_token = Some("gateway-secret-0123".into());
        });
        let _ = f.state.public_url.set("https://mp.example:8443".into());
        let conn = Fixture::conn();
        let poll = |cid: &str, token: &str| {
            request(
                "GET",
                &format!("/DEFAULT/controller/v1/{cid}"),
                Some(&format!("TargetToken {token}")),
            )
        };
        let same = async |cid: &str, token: &str| {
            let polls = f.state.metrics.polls.load(std::sync::atomic::Ordering::Relaxed);
            let fast = answer(&f.state, &conn, &poll(cid, token)).expect("answered from the view");
            let ctype =
                fast.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().into());
            let routed = routed(&f, poll(cid, token)).await;
            assert_eq!((200, ctype, fast.into_body()), routed, "{cid}");
            let counted = f.state.metrics.polls.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(counted, polls + 2, "both counted");
        };
        f.device("idle", "t");
        same("idle", "t").await;
        let d = f.device("inventoried", "t");
        let attributes = BTreeMap::from([("os".to_string(), "linux".to_string())]);
        f.state.store.set_attributes(d.id, &attributes).unwrap();
        f.reload();
        same("inventoried", "t").await;

        // An advertisement newly applies: its action is the router's to write; then the view
        // answers with the deployment.
        f.advertise("tools", AdvertisementKind::Mandatory);
        assert!(answer(&f.state, &conn, &poll("idle", "t")).is_none());
        let (status, _, body) = routed(&f, poll("idle", "t")).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("deploymentBase"), "{body:?}");
        same("idle", "t").await;
        f.state.store.put_crl("CN=fixture CA", "a list", 1, 1).unwrap();
        f.reload();
        same("idle", "t").await;

        // Everything else goes to the router.
        let gateway = Some("GatewayToken gateway-secret-0123");
        let with_cert = ConnInfo {
            client_chain: Some(vec![f.client_cert("idle", None, 30)].into()),
            ..Fixture::conn()
        };
        for (req, conn) in [
            (poll("idle", "wrong"), &conn),
            (poll("unknown", "t"), &conn),
            (poll("idle", "t"), &with_cert),
            (request("GET", "/DEFAULT/controller/v1/idle", gateway), &conn),
            (request("GET", "/DEFAULT/controller/v1/idle", None), &conn),
            (request("GET", "/OTHER/controller/v1/idle", Some("TargetToken t")), &conn),
            (request("GET", "/DEFAULT/controller/v1/%69dle", Some("TargetToken t")), &conn),
            (request("GET", "/console/controller/v1/idle", Some("TargetToken t")), &conn),
            (request("HEAD", "/DEFAULT/controller/v1/idle", Some("TargetToken t")), &conn),
            (
                request("GET", "/DEFAULT/controller/v1/idle/configData", Some("TargetToken t")),
                &conn,
            ),
        ] {
            assert!(answer(&f.state, conn, &req).is_none(), "{} {}", req.method(), req.uri());
        }
        // An address held back is answered 429 by the router, never from the view.
        assert_eq!(routed(&f, poll("idle", "wrong")).await.0, 401);
        assert_eq!(routed(&f, poll("idle", "t")).await.0, 429);
        assert!(answer(&f.state, &conn, &poll("idle", "t")).is_none());
    }

    #[test]
    fn which_paths_are_polls() {
        assert_eq!(poll_path("/DEFAULT/controller/v1/dev-1"), Some(("DEFAULT", "dev-1")));
        assert_eq!(poll_path("/t.1/controller/v1/a_b.c-d"), Some(("t.1", "a_b.c-d")));
        for not in [
            "/DEFAULT/controller/v1/dev-1/",
            "/DEFAULT/controller/v1/dev-1/configData",
            "/DEFAULT/controller/v1/",
            "//controller/v1/dev-1",
            "/DEFAULT/controller/v2/dev-1",
            "/DEFAULT/controller/v1/dev%2D1",
            "/DEFAULT/controller/v1/dev 1",
            "/console/controller/v1/dev-1",
            "/healthz/controller/v1/dev-1",
            "DEFAULT/controller/v1/dev-1",
        ] {
            assert_eq!(poll_path(not), None, "{not}");
        }
    }
}
