//! HTTP pieces: error responses in hawkBit's `ExceptionInfo` shape, byte ranges, and URL
//! path segment encoding.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dm_shared::ddi::ExceptionInfo;

/// An error answered to a device: an HTTP status and an `ExceptionInfo` body. The handler that
/// returns it has logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable error code (`dm.auth.badToken`, …).
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// With 429: the seconds to wait (`Retry-After`); 60 when not said.
    pub retry_after: Option<i64>,
}

impl ApiError {
    /// An error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "dm.request.malformed", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "dm.auth.required", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "dm.auth.forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "dm.entity.notFound", message)
    }

    /// 429 for an address whose authentications failed too often: it may try again in
    /// `wait` seconds.
    pub fn throttled(message: impl Into<String>, wait: i64) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "dm.auth.throttled", message);
        e.retry_after = Some(wait.max(1));
        e
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dm.server.error", message)
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        use crate::Error as E;
        match e {
            E::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            E::Gone(m) => ApiError::new(StatusCode::GONE, "dm.action.closed", m),
            E::Conflict(m) | E::NotCanceling(m) => {
                ApiError::new(StatusCode::CONFLICT, "dm.entity.conflict", m)
            }
            E::BadRequest(m) => ApiError::bad_request(m),
            E::Throttled(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "dm.registration.throttled", m)
            }
            E::Refused(m) => ApiError::new(StatusCode::FORBIDDEN, "dm.registration.refused", m),
            E::Unauthorized(m) => ApiError::unauthorized(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ExceptionInfo {
            exception_class: self.status.canonical_reason().unwrap_or("Error").to_string(),
            error_code: self.code.into(),
            message: self.message,
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("TargetToken"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after.unwrap_or(60)));
        }
        r
    }
}

/// A satisfiable byte range `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

/// Parses a `Range` header against a file of `size` bytes. `Ok(None)`: serve it all (no header,
/// or a form we do not serve, such as several ranges, which RFC 9110 allows ignoring).
/// `Err(())`: unsatisfiable (416).
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix: the last n bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        ByteRange { start: size.saturating_sub(n), end: size - 1 }
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Err(());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_segment(&mut out, s);
    out
}

/// Appends `s` to `out` as [`encode_segment`] encodes it. (Every poll names its device in
/// links: this costs no allocation of its own.)
pub fn push_segment(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Ok(Some(ByteRange { start: 0, end: 4 })));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some(ByteRange { start: 5, end: 9 })));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some(ByteRange { start: 7, end: 9 })));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some(ByteRange { start: 8, end: 9 })));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn segments() {
        assert_eq!(encode_segment("docs/read me.txt"), "docs%2Fread%20me.txt");
        assert_eq!(encode_segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode_segment("dé\u{0}%"), "d%C3%A9%00%25");
    }
}
