//! Streaming a file to a client with byte ranges (resumable downloads): package artifacts,
//! repository files, and a distribution point's content.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::http::{ApiError, parse_range};

/// Streams the file at `path` (`size` bytes, named `name` in messages) to device `who`,
/// the byte range the request asks for when it asks for one.
pub async fn serve_file(
    path: &std::path::Path,
    size: u64,
    sha256: &str,
    name: &str,
    who: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "dm.request.range",
                format!("range {range_header:?} is outside the {} bytes of {}", size, name),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes */{}", size).parse().map_err(|_| ApiError::internal("header"))?,
            );
            return Ok(r);
        }
    };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let (status, start, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        None => (StatusCode::OK, 0, size),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", sha256));
    if let Some(r) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, size));
    }
    if start > 0 {
        log::info!("device {} resumes {} from byte {start} ({len} bytes left)", who, name);
    } else {
        log::debug!("device {} downloads {} ({len} bytes)", who, name);
    }
    resp.body(Body::from_stream(stream)).map_err(|e| ApiError::internal(e.to_string()))
}
