//! The body of the fuzz target of what a browser sends the console (`fuzz/`,
//! `fuzz/README.md`): the login form and the session cookie, which anyone can send, and the
//! query strings of the reports and the search, written once for the fuzz target and the
//! replay of the committed corpus in the fast tier.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature only.

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Uri, header};

use super::pages::{ReportQuery, SearchQuery};
use super::{cookie_token, esc, form_decode, parse_form, url};

/// A query string as the device API and the console read it: the URI hyper accepts, then
/// axum's `Query`. (The device requests' target reads the `actionHistory` query with it.)
pub(crate) fn query<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    let uri = Uri::try_from(format!("/q?{text}")).ok()?;
    Query::<T>::try_from_uri(&uri).ok().map(|q| q.0)
}

/// The login form, the cookie header and the query strings, read as the console reads them;
/// what [`url`] encodes, [`form_decode`] decodes to the same text, and [`esc`] leaves no
/// character that opens markup or an attribute.
pub fn forms(data: &[u8]) {
    if let Some(form) = parse_form(data) {
        assert!(form.name.len() + form.password.len() <= 3 * data.len());
    }
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, v);
        let _ = cookie_token(&headers);
    }
    let text = String::from_utf8_lossy(data);
    assert_eq!(form_decode(&url(&text)), text, "url() and form_decode() disagree");
    assert!(!esc(&text).contains(['<', '>', '"', '\'']), "esc() left markup in {text:?}");
    if let Some(q) = query::<ReportQuery>(&text) {
        let _ = (q.options(), q.keep("format=csv"), q.sorting());
    }
    let _ = query::<SearchQuery>(&text);
}
