//! HTTPS for the agent (ureq, rustls with ring): trust only the device's roots (or the
//! `ServerRootCertificate` file), never a proxy from the environment, every timeout set,
//! https only (a redirect to plain HTTP is an error), bodies capped, and downloads that resume
//! from their `.partial` file, hashed while streaming.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dm_shared::digest::{HashingReader, Sha256State};
use dm_shared::fs as dmfs;
use dm_shared::pki::{self, Cert};
use dm_shared::settings::{AuthMode, Settings};
use dm_shared::{Context, StoreName};

use crate::error::{Error, Result};

/// The largest JSON answer read from a management point.
pub const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// How the agent proves who it is.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: TargetToken …`.
    Target(String),
    /// `Authorization: GatewayToken …`.
    Gateway(String),
    /// A client certificate (mutual TLS).
    Certificate,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Target(_) => "TargetToken(<redacted>)",
            Auth::Gateway(_) => "GatewayToken(<redacted>)",
            Auth::Certificate => "Certificate",
        })
    }
}

/// The HTTP client of the agent.
#[derive(Debug, Clone)]
pub struct Net {
    api: ureq::Agent,
    download: ureq::Agent,
    auth: Auth,
    /// The management point's origin: the only one credentials are sent to.
    origins: Vec<Origin>,
    bandwidth: u64,
    /// The thumbprint of the client certificate presented, in native mode.
    client_thumbprint: Option<String>,
}

/// Scheme, host and port of a URL, as browsers compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin(String, String, u16);

impl Origin {
    fn of(url: &str) -> Option<Origin> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Origin(scheme, uri.host()?.to_ascii_lowercase(), port))
    }
}

/// The HTTP client for a SCEP server: TLS trusting the same roots as the management point's
/// when the URL is https (a plain http SCEP server is allowed: its messages are signed and
/// encrypted, and `ScepCaThumbprint` pins its CA), the configured proxy, every timeout, no
/// redirects.
pub(crate) fn scep_agent(ctx: &Context, settings: &Settings) -> Result<ureq::Agent> {
    let https =
        settings.certificates.scep_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let roots: Vec<ureq::tls::Certificate<'static>> = if https {
        roots(ctx, settings)?
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.der()).to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .build();
    let c = &settings.communication;
    let proxy = configured_proxy(settings)?;
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .proxy(proxy)
        .max_redirects(0)
        .timeout_connect(Some(c.connect_timeout))
        .timeout_per_read(Some(c.read_timeout))
        .timeout_global(Some(c.request_timeout))
        .max_response_header_size(16 * 1024)
        .user_agent(format!("dmcertenroll/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

fn roots(ctx: &Context, settings: &Settings) -> Result<Vec<Cert>> {
    let certs = match &settings.communication.server_root_certificate {
        Some(p) => {
            let path = if Path::new(p).is_absolute() {
                ctx.layout.root().join(p.trim_start_matches('/'))
            } else {
                ctx.layout.root().join(p)
            };
            Cert::load_pem(&path)?
        }
        None => dm_shared::certstore::tls_roots(&ctx.layout)?,
    };
    if certs.is_empty() {
        return Err(Error::BadSettings(format!(
            "no root certificates to check the management point's TLS with: the device's tls-root store {} is empty and [Communication] ServerRootCertificate is not set",
            ctx.layout.cert_store_dir(StoreName::TlsRoot).display()
        )));
    }
    Ok(certs)
}

/// The device's client certificate and key from the `my` store: `prefer` when it is there
/// with its key, else the pair that is valid and expires last, else any pair; a key that does
/// not belong to its certificate is skipped (ureq would panic otherwise). Returns the pair and
/// its thumbprint.
fn client_cert(ctx: &Context, prefer: Option<&str>) -> Result<(ureq::tls::ClientCert, String)> {
    let store = dm_shared::certstore::CertStore::open(&ctx.layout, StoreName::My);
    let now = ctx.clock.now();
    let mut certs = store.list()?;
    // The thumbprint last: the same choice every time among otherwise equal certificates.
    let rank = |c: &Cert| {
        (Some(c.thumbprint()) != prefer, !c.valid_at(now), std::cmp::Reverse(c.not_after_unix()))
    };
    certs.sort_unstable_by(|a, b| {
        rank(a).cmp(&rank(b)).then_with(|| a.thumbprint().cmp(b.thumbprint()))
    });
    for c in certs {
        let key_path = store.dir().join(format!("{}.key", c.thumbprint()));
        let Ok(key) = dmfs::read_capped(&key_path, 64 * 1024) else { continue };
        let probe = b"dm client certificate pair check";
        let matches = pki::sign(&key, probe, &key_path)
            .and_then(|sig| pki::verify_signature(&c, probe, &sig, &key_path))
            .is_ok();
        if !matches {
            log::warn!(
                "{}: the key does not belong to {}; skipping it",
                key_path.display(),
                c.describe()
            );
            continue;
        }
        let pk = ureq::tls::PrivateKey::from_pem(&key)
            .map_err(|e| Error::BadSettings(format!("{}: {e}", key_path.display())))?;
        let chain = vec![ureq::tls::Certificate::from_der(c.der()).to_owned()];
        log::debug!("client certificate: {}", c.describe());
        return Ok((ureq::tls::ClientCert::new_with_certs(&chain, pk), c.thumbprint().to_string()));
    }
    Err(Error::BadSettings(format!(
        "Authentication=Certificate but the device's my store {} has no certificate with its key; enroll first",
        store.dir().display()
    )))
}

/// What an agent is for: small API calls kept alive, or downloads with big buffers that are
/// not kept between downloads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Api,
    Download,
}

/// Checks a finished download: its size, and its SHA-256 when the server gave one.
fn checked(state: Sha256State, dest: &Path, size: u64, sha256: &str) -> Result<()> {
    let hashed = state.finish();
    let expected = if sha256.is_empty() { hashed.sha256.clone() } else { sha256.to_string() };
    hashed.check_against(dest, size, &expected, SERVER).map_err(Into::into)
}

/// Who states an artifact's size and hash before the signed manifest is read.
const SERVER: &str = "the server's artifact list";

/// A URL for the log: any user and password replaced.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The proxy of `[Communication] Proxy`, the only one ever used (never the environment's).
fn configured_proxy(settings: &Settings) -> Result<Option<ureq::Proxy>> {
    settings
        .communication
        .proxy
        .as_deref()
        .map(|p| {
            ureq::Proxy::new(p).map_err(|e| {
                Error::BadSettings(format!("[Communication] Proxy {}: {e}", redact_url(p)))
            })
        })
        .transpose()
}

fn agent(
    tls: ureq::tls::TlsConfig,
    settings: &Settings,
    global: Duration,
    purpose: Purpose,
) -> Result<ureq::Agent> {
    let c = &settings.communication;
    let proxy = configured_proxy(settings)?;
    let (buffer, idle) = match purpose {
        Purpose::Api => (16 * 1024, 1),
        Purpose::Download => (128 * 1024, 0),
    };
    let config = ureq::Agent::config_builder()
        .input_buffer_size(buffer)
        .output_buffer_size(buffer)
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .tls_config(tls)
        .https_only(true)
        .http_status_as_error(false)
        // The environment's proxy variables are never used; only the configured one.
        .proxy(proxy)
        .max_redirects(5)
        .timeout_connect(Some(c.connect_timeout))
        .timeout_per_read(Some(c.read_timeout))
        .timeout_per_write(Some(c.read_timeout))
        .timeout_global(Some(global))
        .max_response_header_size(16 * 1024)
        .user_agent(format!("dmsvc/{}", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(config.new_agent())
}

fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(86_400)))
}

fn transport_error(url: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::RequireHttpsOnly(why) => Error::Insecure { url: url.to_string(), reason: why },
        ureq::Error::Timeout(t) => Error::Network {
            url: url.to_string(),
            reason: format!("timed out ({t})"),
            timeout: true,
        },
        ureq::Error::BodyExceedsLimit(n) => Error::TooLarge { url: url.to_string(), limit: n },
        other => Error::Network { url: url.to_string(), reason: other.to_string(), timeout: false },
    }
}

/// The result of a GET: the body, or a status the caller handles.
pub enum Got<T> {
    /// 2xx with a parsed body.
    Ok(T),
    /// Another status.
    Status(u16),
}

impl Net {
    /// The client for this device's settings.
    pub fn new(ctx: &Context, settings: &Settings) -> Result<Net> {
        Net::presenting(ctx, settings, None)
    }

    /// The client for this device's settings, presenting the client certificate `prefer` (a
    /// thumbprint) when it is in the `my` store (see [`Net::new`]).
    pub fn presenting(ctx: &Context, settings: &Settings, prefer: Option<&str>) -> Result<Net> {
        let roots: Vec<ureq::tls::Certificate<'static>> = roots(ctx, settings)?
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.der()).to_owned())
            .collect();
        let auth = match settings.communication.authentication {
            AuthMode::TargetToken => Auth::Target(
                settings
                    .communication
                    .target_token
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .ok_or_else(|| {
                        Error::BadSettings("[Communication] TargetToken is not set".into())
                    })?,
            ),
            AuthMode::GatewayToken => Auth::Gateway(
                settings
                    .communication
                    .gateway_token
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .ok_or_else(|| {
                        Error::BadSettings("[Communication] GatewayToken is not set".into())
                    })?,
            ),
            AuthMode::Certificate => Auth::Certificate,
        };
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        let mut client_thumbprint = None;
        if matches!(auth, Auth::Certificate) {
            let (cert, thumbprint) = client_cert(ctx, prefer)?;
            tls = tls.client_cert(Some(cert));
            client_thumbprint = Some(thumbprint);
        }
        let tls = tls.build();
        let c = &settings.communication;
        Ok(Net {
            api: agent(tls.clone(), settings, c.request_timeout, Purpose::Api)?,
            download: agent(tls, settings, c.download_timeout, Purpose::Download)?,
            auth,
            origins: settings
                .environment
                .management_points
                .iter()
                .filter_map(|p| Origin::of(p))
                .collect(),
            bandwidth: c.bandwidth_limit_kib * 1024,
            client_thumbprint,
        })
    }

    /// The thumbprint of the client certificate this client presents (native mode).
    pub fn client_thumbprint(&self) -> Option<&str> {
        self.client_thumbprint.as_deref()
    }

    /// Adds the device's token to a request for `url`, when `url` is on one of the management
    /// points: a distribution point elsewhere (its access logs, its operator) never sees it.
    fn authorize<B>(&self, url: &str, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match Origin::of(url) {
            Some(o) if self.origins.contains(&o) => {}
            _ => return req,
        }
        match &self.auth {
            Auth::Target(t) => req.header("Authorization", format!("TargetToken {t}")),
            Auth::Gateway(t) => req.header("Authorization", format!("GatewayToken {t}")),
            Auth::Certificate => req,
        }
    }

    fn check_status(
        url: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let ra = retry_after(&resp);
        let body = resp.body_mut().with_config().limit(16 * 1024).read_to_vec().unwrap_or_default();
        let message = serde_json::from_slice::<dm_shared::ddi::ExceptionInfo>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| {
                String::from_utf8_lossy(&body)
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect()
            });
        Err(Error::Http { url: url.to_string(), status, retry_after: ra, message })
    }

    /// GETs JSON (capped at [`MAX_JSON_BYTES`]).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let resp = self
            .authorize(url, self.api.get(url))
            .header("Accept", "application/json")
            .call()
            .map_err(|e| transport_error(url, e))?;
        let mut resp = Self::check_status(url, resp)?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON_BYTES)
            .read_to_vec()
            .map_err(|e| transport_error(url, e))?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Malformed { url: url.to_string(), reason: e.to_string() })
    }

    /// Sends JSON with `POST` or `PUT`; any 2xx is success.
    pub fn send_json<T: serde::Serialize>(&self, method: &str, url: &str, body: &T) -> Result<()> {
        self.exchange(method, url, body).map(|_| ())
    }

    /// POSTs JSON and reads the JSON answer (capped at [`MAX_JSON_BYTES`]).
    pub fn post_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &T,
    ) -> Result<R> {
        let answer = self.exchange("POST", url, body)?;
        serde_json::from_slice(&answer)
            .map_err(|e| Error::Malformed { url: url.to_string(), reason: e.to_string() })
    }

    /// Sends JSON with `POST` or `PUT`; returns the answer's body of a 2xx.
    fn exchange<T: serde::Serialize>(&self, method: &str, url: &str, body: &T) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::Malformed { url: url.to_string(), reason: e.to_string() })?;
        let req = if method == "PUT" { self.api.put(url) } else { self.api.post(url) };
        let resp = self
            .authorize(url, req)
            .header("Content-Type", "application/json")
            .send(&bytes[..])
            .map_err(|e| transport_error(url, e))?;
        let mut resp = Self::check_status(url, resp)?;
        Ok(resp.body_mut().with_config().limit(MAX_JSON_BYTES).read_to_vec().unwrap_or_default())
    }

    /// Downloads `url` into `partial`, resuming from what it holds, checking the size and
    /// SHA-256 while streaming; on success renames it to `dest`. `stop` interrupts it (the
    /// partial file is kept for the next attempt).
    pub fn download(
        &self,
        url: &str,
        partial: &Path,
        dest: &Path,
        size: u64,
        sha256: &str,
        stop: &AtomicBool,
    ) -> Result<()> {
        let mut state = resume_state(partial, size)?;
        let resumed = state.count() > 0;
        if size == 0 && !partial.exists() {
            // An empty file has nothing to fetch; its hash is still checked below.
            dmfs::write_atomic(partial, b"", dmfs::MODE_PRIVATE)?;
        }
        if state.count() < size {
            state = self.fetch_rest(url, partial, dest, size, state, stop)?;
        }
        if state.count() != size {
            return Err(Error::Network {
                url: url.to_string(),
                reason: format!("the download ended after {} of {size} bytes", state.count()),
                timeout: false,
            });
        }
        if let Err(e) = checked(state, dest, size, sha256) {
            dmfs::remove_file(partial)?;
            if !resumed {
                return Err(e);
            }
            // The bytes kept from before may be what was wrong (a file changed on the server
            // between the two tries, a damaged partial file): once more, from byte zero.
            log::warn!("{e}; the download was resumed: downloading it again from the start");
            let state = self.fetch_rest(url, partial, dest, size, Sha256State::new(), stop)?;
            if let Err(e) = checked(state, dest, size, sha256) {
                dmfs::remove_file(partial)?;
                return Err(e);
            }
        }
        dmfs::rename(partial, dest)?;
        Ok(())
    }

    /// The first `n` bytes of the file at `url` (fewer when it is shorter): a `Range` request,
    /// read no further than `n` bytes whether or not the server honours it.
    pub fn peek(&self, url: &str, n: u64) -> Result<Vec<u8>> {
        let req = self
            .authorize(url, self.download.get(url))
            .header("Range", format!("bytes=0-{}", n.saturating_sub(1)));
        let resp = Self::check_status(url, req.call().map_err(|e| transport_error(url, e))?)?;
        let mut head = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader()
            .take(n)
            .read_to_end(&mut head)
            .map_err(|e| read_error(url, e))?;
        Ok(head)
    }

    /// Fetches what `partial` lacks (all of it when the server does not resume), appending to
    /// it and hashing on from `state`. Returns the hash of the whole file so far.
    fn fetch_rest(
        &self,
        url: &str,
        partial: &Path,
        dest: &Path,
        size: u64,
        mut state: Sha256State,
        stop: &AtomicBool,
    ) -> Result<Sha256State> {
        let mut req = self.authorize(url, self.download.get(url));
        let have = state.count();
        if have > 0 {
            let name = dest.file_name().unwrap_or_default().to_string_lossy();
            log::info!("resuming {name} from byte {have} of {size}");
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = Self::check_status(url, req.call().map_err(|e| transport_error(url, e))?)?;
        if have > 0 && resp.status().as_u16() != 206 {
            log::warn!(
                "{url} does not resume (HTTP {}); downloading again from the start",
                resp.status().as_u16()
            );
            dmfs::remove_file(partial)?;
            state = Sha256State::new();
        }
        let (mut file, _) = dmfs::open_resumable(partial, dmfs::MODE_PRIVATE)?;
        let body = resp.into_body().into_with_config().limit(size - state.count() + 1).reader();
        let mut body = HashingReader::resume(body, size, state);
        let mut buf = vec![0u8; 256 * 1024];
        let (started, from) = (Instant::now(), body.count());
        loop {
            if stop.load(Ordering::Relaxed) {
                file.sync_all().map_err(dmfs::io_err("sync", partial))?;
                return Err(Error::Stopped);
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = file.sync_all();
                    return Err(read_error(url, e));
                }
            };
            if body.over_cap() {
                drop(file);
                dmfs::remove_file(partial)?;
                return Err(dm_shared::Error::HashMismatch {
                    path: dest.to_path_buf(),
                    what: "size",
                    by: SERVER,
                    expected: format!("{size} bytes"),
                    actual: format!("more than {size} bytes"),
                }
                .into());
            }
            file.write_all(&buf[..n]).map_err(dmfs::io_err("write", partial))?;
            self.throttle(body.count() - from, started);
        }
        file.sync_all().map_err(dmfs::io_err("sync", partial))?;
        Ok(body.into_state())
    }

    /// Sleeps as long as `BandwidthLimit` asks after `got` bytes since `started`.
    fn throttle(&self, got: u64, started: Instant) {
        if self.bandwidth > 0 {
            let due = Duration::from_secs_f64(got as f64 / self.bandwidth as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// The hash of what a `.partial` file already holds, so a resumed download is checked whole;
/// a file longer than the artifact is started over.
fn resume_state(partial: &Path, size: u64) -> Result<Sha256State> {
    let Ok(file) = std::fs::File::open(partial) else { return Ok(Sha256State::new()) };
    let mut r = HashingReader::new(file, size);
    std::io::copy(&mut r, &mut std::io::sink()).map_err(dmfs::io_err("read", partial))?;
    if r.over_cap() {
        log::warn!("{} is longer than the artifact; starting over", partial.display());
        dmfs::remove_file(partial)?;
        return Ok(Sha256State::new());
    }
    Ok(r.into_state())
}

/// The error for a body read that failed.
fn read_error(url: &str, e: std::io::Error) -> Error {
    match e.into_inner().and_then(|i| i.downcast::<ureq::Error>().ok()) {
        Some(ue) => transport_error(url, *ue),
        None => Error::Network {
            url: url.to_string(),
            reason: "the connection broke".into(),
            timeout: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let mp = Origin::of("https://MP.example.com/DEFAULT/controller/v1/d");
        assert_eq!(mp, Origin::of("https://mp.example.com:443/x"));
        assert_ne!(mp, Origin::of("http://mp.example.com/x"));
        assert_ne!(mp, Origin::of("https://mp.example.com:8443/x"));
        assert_ne!(mp, Origin::of("https://dp.example.com/x"));
        assert_eq!(Origin::of("not a url"), None);
    }

    #[test]
    fn passwords_in_urls_never_reach_the_log() {
        assert_eq!(redact_url("http://user:pw@proxy:3128/x"), "http://<redacted>@proxy:3128/x");
        assert_eq!(redact_url("http://proxy:3128/a@b"), "http://proxy:3128/a@b");
        assert_eq!(redact_url("proxy:3128"), "proxy:3128");
    }
}
