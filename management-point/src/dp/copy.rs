//! Copying one file to a distribution point: into a `.partial` file, resumed from what it
//! holds (from whichever source answers next), hashed while streaming, within the rate limit;
//! renamed into place only when its size and SHA-256 are the management point's.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use dm_shared::digest::Sha256State;
use dm_shared::fs as dmfs;

use crate::distribution::HoldFile;
use crate::error::{Error, Result};

/// Connecting, and the answer's head, each within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// One request's whole transfer: past it, the copy resumes at the next round.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);
/// What a copy that stops at the end of its window says (not a failure).
pub const WINDOW_CLOSED: &str = "the copy window closed";
/// The largest JSON answer (an assignment) read.
pub const MAX_JSON: u64 = 16 << 20;

/// The HTTPS client a distribution point copies and reports with, trusting `ca`'s roots
/// (or the system's).
pub fn agent(ca: Option<&Path>) -> Result<ureq::Agent> {
    let tls = crate::debrepo::tls_trusting(ca)?;
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(CONNECT_TIMEOUT * 2))
        .timeout_global(Some(TRANSFER_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into())
}

/// A URL for logs: its query (a signed link's signature) left out.
pub fn shown(url: &str) -> &str {
    url.split_once('?').map_or(url, |(u, _)| u)
}

/// Where and how a copy goes.
pub struct To<'a> {
    /// The management point's URL: paths are on it, and only it gets the credential.
    pub mp: &'a str,
    /// The distribution point's credential.
    pub credential: &'a str,
    /// Bytes per second at most (0: no limit).
    pub rate: u64,
    /// The daily window it copies in: past its end, the copy stops (kept to resume).
    pub window: Option<&'a str>,
}

/// Copies `f` to `dest` from its sources in order, resuming from `dest`'s `.partial` file.
/// An error says what each source answered.
pub fn copy_file(agent: &ureq::Agent, f: &HoldFile, dest: &Path, to: &To<'_>) -> Result<()> {
    let (mp, credential) = (to.mp, to.credential);
    if dest.metadata().is_ok_and(|m| m.len() == f.size) {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        dmfs::create_dir_all(parent, dmfs::MODE_DIR_PRIVATE)?;
    }
    let partial = dmfs::partial_of(dest);
    let mut why = Vec::new();
    for src in &f.sources {
        // A path is the management point's; only it sees the credential.
        let (url, auth) = match src.strip_prefix('/') {
            Some(path) => (format!("{mp}/{path}"), Some(credential)),
            None if src.starts_with("https://") => (src.clone(), None),
            None => {
                why.push(format!("{}: not an https:// URL", shown(src)));
                continue;
            }
        };
        let src = &url;
        // Twice at most: once more from byte zero when a resumed copy fails the hash (the
        // bytes kept may be what was wrong).
        for _ in 0..2 {
            let resumed = partial.metadata().is_ok_and(|m| m.len() > 0);
            match fetch(agent, src, auth, &partial, f, to) {
                Ok(state) => {
                    let got = state.finish();
                    if got.size == f.size && got.sha256.eq_ignore_ascii_case(&f.sha256) {
                        return dmfs::rename(&partial, dest).map_err(Error::from);
                    }
                    dmfs::remove_file(&partial)?;
                    why.push(format!(
                        "{}: the {} bytes do not have the SHA-256 of the management point's list",
                        shown(src),
                        got.size
                    ));
                    if resumed {
                        continue;
                    }
                }
                Err(e) if e == WINDOW_CLOSED => return Err(Error::Usage(WINDOW_CLOSED.into())),
                Err(e) => why.push(format!("{}: {e}", shown(src))),
            }
            break;
        }
        log::warn!("copying {}: {}", f.name, why.last().map_or("", String::as_str));
    }
    Err(Error::Usage(format!("cannot copy {}: {}", f.name, why.join("; "))))
}

/// Fetches what `partial` lacks of `f` from `url`; returns the hash of the whole.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    credential: Option<&str>,
    partial: &Path,
    f: &HoldFile,
    to: &To<'_>,
) -> std::result::Result<Sha256State, String> {
    let mut state = Sha256State::new();
    let have = partial.metadata().map_or(0, |m| m.len());
    if have > f.size {
        dmfs::remove_file(partial).map_err(|e| e.to_string())?;
    } else if have > 0 {
        let file = dmfs::open_regular(partial).map_err(|e| e.to_string())?;
        let mut r = dm_shared::digest::HashingReader::new(file, f.size);
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| e.to_string())?;
        state = r.into_state();
    }
    if state.count() == f.size {
        return Ok(state);
    }
    let mut req = agent.get(url);
    if let Some(c) = credential {
        req = req.header("Authorization", &format!("DpToken {c}"));
    }
    let from = state.count();
    if from > 0 {
        req = req.header("Range", &format!("bytes={from}-"));
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut out = std::fs::OpenOptions::new();
    out.create(true).write(true);
    use std::os::unix::fs::OpenOptionsExt;
    out.mode(dmfs::MODE_PRIVATE);
    let file = match status {
        206 => {
            // The bytes must be the ones asked for, or the hash fails only at the end.
            let range = resp.headers().get("content-range").and_then(|v| v.to_str().ok());
            if !range.is_some_and(|r| r.starts_with(&format!("bytes {from}-"))) {
                return Err(format!("it answered the range from byte {from} with {range:?}"));
            }
            out.append(true).open(partial)
        }
        200 => {
            state = Sha256State::new();
            out.truncate(true).open(partial)
        }
        s => {
            let body =
                resp.body_mut().with_config().limit(2048).read_to_string().unwrap_or_default();
            let msg: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
            return Err(format!("HTTP {s} {msg}"));
        }
    };
    let mut file = file.map_err(|e| format!("{}: {e}", partial.display()))?;
    let body = resp.body_mut().with_config().limit(f.size - state.count() + 1).reader();
    let mut r = dm_shared::digest::HashingReader::resume(body, f.size, state);
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let base = r.count();
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("after {} bytes: {e}", r.count()))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", partial.display()))?;
        throttle(to.rate, r.count() - base, start);
        if !crate::distribution::in_window(to.window, crate::admin::now()) {
            let _ = file.sync_all();
            return Err(WINDOW_CLOSED.into());
        }
    }
    file.sync_all().map_err(|e| format!("{}: {e}", partial.display()))?;
    if r.over_cap() {
        return Err(format!("it sends more than the {} bytes of {}", f.size, f.name));
    }
    Ok(r.into_state())
}

/// Sleeps as long as copying `got` bytes since `started` was faster than `rate` per second.
fn throttle(rate: u64, got: u64, started: Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(got as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait.min(Duration::from_secs(5)));
    }
}
