//! Hashing while reading, with a size cap: the one way bytes that must match a signed size and
//! SHA-256 are read (folder verification, copies into the install folder, downloads).
//!
//! [`HashingReader`] wraps any reader, feeds every byte it passes on into SHA-256, and reads
//! at most one byte past its cap, so an endless or oversized stream is noticed after `cap + 1`
//! bytes instead of being read to its end. [`Hashed::check`] turns the result into the
//! project's error for a mismatch, naming the file.

use std::io::{self, Read};
use std::path::Path;

use ring::digest::{Context, SHA256};

use crate::error::{Error, Result};
use crate::pki::to_hex;

/// A SHA-256 in progress and the bytes it has seen, to continue later (a resumed download
/// hashes what its `.partial` file holds, then the rest from the network).
#[derive(Clone)]
pub struct Sha256State {
    ctx: Context,
    count: u64,
}

impl Sha256State {
    /// Nothing hashed yet.
    pub fn new() -> Sha256State {
        Sha256State { ctx: Context::new(&SHA256), count: 0 }
    }

    /// Bytes hashed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The size and SHA-256 of everything hashed.
    pub fn finish(self) -> Hashed {
        Hashed { size: self.count, sha256: to_hex(self.ctx.finish().as_ref()) }
    }
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State::new()
    }
}

impl std::fmt::Debug for Sha256State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256State").field("count", &self.count).finish()
    }
}

/// A reader that hashes what it reads and never reads more than `cap + 1` bytes.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    state: Sha256State,
    cap: u64,
}

impl<R: Read> HashingReader<R> {
    /// Hashes `inner`, which should hold at most `cap` bytes.
    pub fn new(inner: R, cap: u64) -> HashingReader<R> {
        HashingReader::resume(inner, cap, Sha256State::new())
    }

    /// Continues `state` with `inner`; the bytes already hashed count toward `cap`.
    pub fn resume(inner: R, cap: u64, state: Sha256State) -> HashingReader<R> {
        HashingReader { inner, state, cap }
    }

    /// Bytes hashed so far (including those of a resumed state).
    pub fn count(&self) -> u64 {
        self.state.count
    }

    /// Whether more bytes than the cap were seen.
    pub fn over_cap(&self) -> bool {
        self.state.count > self.cap
    }

    /// The state, to continue with another reader.
    pub fn into_state(self) -> Sha256State {
        self.state
    }

    /// The size and SHA-256 of everything read.
    pub fn finish(self) -> Hashed {
        self.state.finish()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.cap.saturating_add(1).saturating_sub(self.state.count);
        if room == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = usize::try_from(room).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..max])?;
        self.state.ctx.update(&buf[..n]);
        self.state.count += n as u64;
        Ok(n)
    }
}

/// The size and SHA-256 (lowercase hex) of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// Bytes read (at most one past the cap).
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

impl Hashed {
    /// Checks the stream against what the signed manifest says it is: [`Error::HashMismatch`]
    /// naming `path` otherwise.
    pub fn check(&self, path: &Path, size: u64, sha256: &str) -> Result<()> {
        self.check_against(path, size, sha256, "the signed manifest")
    }

    /// Checks the stream against what `by` (who said so, for the message) says it is.
    pub fn check_against(
        &self,
        path: &Path,
        size: u64,
        sha256: &str,
        by: &'static str,
    ) -> Result<()> {
        if self.size != size {
            let actual = if self.size > size {
                format!("more than {size} bytes")
            } else {
                format!("{} bytes", self.size)
            };
            return Err(Error::HashMismatch {
                path: path.to_path_buf(),
                what: "size",
                by,
                expected: format!("{size} bytes"),
                actual,
            });
        }
        if !self.sha256.eq_ignore_ascii_case(sha256) {
            return Err(Error::HashMismatch {
                path: path.to_path_buf(),
                what: "SHA-256",
                by,
                expected: sha256.to_string(),
                actual: self.sha256.clone(),
            });
        }
        Ok(())
    }
}

/// Hashes a file, reading at most `cap + 1` bytes of it.
pub fn hash_file(path: &Path, cap: u64) -> Result<Hashed> {
    let file = crate::fs::open_regular(path)?;
    let mut r = HashingReader::new(file, cap);
    io::copy(&mut r, &mut io::sink()).map_err(crate::fs::io_err("read", path))?;
    Ok(r.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::sha256_hex;

    #[test]
    fn hashes_what_it_passes_on() {
        let mut r = HashingReader::new(&b"hello world"[..], 100);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
        let h = r.finish();
        assert_eq!(h, Hashed { size: 11, sha256: sha256_hex(b"hello world") });
        h.check(Path::new("f"), 11, &sha256_hex(b"hello world")).unwrap();
    }

    #[test]
    fn endless_streams_stop_one_byte_past_the_cap() {
        let mut r = HashingReader::new(io::repeat(b'x'), 1000);
        let n = io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(n, 1001);
        assert!(r.over_cap());
        let err = r.finish().check(Path::new("big"), 1000, "00").unwrap_err();
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
    }

    #[test]
    fn resumed_hashes_equal_whole_ones() {
        let mut first = HashingReader::new(&b"hello "[..], 11);
        io::copy(&mut first, &mut io::sink()).unwrap();
        let mut rest = HashingReader::resume(&b"world"[..], 11, first.into_state());
        io::copy(&mut rest, &mut io::sink()).unwrap();
        assert_eq!(rest.finish().sha256, sha256_hex(b"hello world"));
    }

    #[test]
    fn mismatches_name_the_file_and_what_differs() {
        let h = Hashed { size: 5, sha256: sha256_hex(b"hello") };
        let err = h.check(Path::new("dir/f"), 4, "x").unwrap_err();
        assert!(matches!(err, Error::HashMismatch { what: "size", .. }), "{err}");
        let err = h.check(Path::new("dir/f"), 5, &sha256_hex(b"jello")).unwrap_err();
        assert!(matches!(err, Error::HashMismatch { what: "SHA-256", .. }), "{err}");
        assert!(err.to_string().starts_with("dir/f:"), "{err}");
        assert!(err.to_string().contains("the signed manifest says"), "{err}");
        // A server's hash is the server's, never called the signed manifest.
        let err = h.check_against(Path::new("f"), 5, "00", "the server's artifact list");
        let err = err.unwrap_err().to_string();
        assert!(err.contains("the server's artifact list says 00"), "{err}");
    }
}
