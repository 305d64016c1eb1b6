//! What the console keeps in memory: administrators' sessions, failed logins per address, and
//! the password checks running at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::server::throttle::Throttle;

/// How long a session lasts.
pub(super) const SESSION_SECS: i64 = 8 * 3600;

/// Failed logins from one address in a minute before it is answered 429.
pub(super) const MAX_FAILURES: u32 = 5;

/// Addresses whose failed logins are remembered at most (the oldest make room).
const FAILURE_ADDRESSES: usize = 4096;

/// Password checks (Argon2id, about 19 MiB and tens of milliseconds each) running at most at
/// once, whatever the number of logins: the blocking threads devices' requests use are never
/// all hashing.
pub(super) const HASHERS: usize = 2;

/// A logged-in administrator.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) name: String,
    /// The fingerprint of the password hash they logged in with: a new password (or the
    /// administrator's removal) ends the session.
    pub(super) password: String,
    pub(super) expires: i64,
}

/// Sessions and failed logins, in memory.
#[derive(Debug)]
pub struct Console {
    pub(super) sessions: Mutex<HashMap<String, Session>>,
    pub(super) failures: Throttle,
    pub(super) hashing: tokio::sync::Semaphore,
    /// Password checks made since the start.
    pub(super) checks: AtomicU64,
    /// The key of the forms' CSRF tokens, drawn at the first use (none: the random source
    /// failed, and no form is accepted).
    csrf: std::sync::OnceLock<Option<[u8; 32]>>,
}

impl Console {
    /// The key of the forms' CSRF tokens ([`super::forms::csrf_token`]).
    pub fn csrf_key(&self) -> Option<&[u8]> {
        self.csrf
            .get_or_init(|| {
                let mut k = [0u8; 32];
                match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k) {
                    Ok(()) => Some(k),
                    Err(_) => {
                        log::error!("console: no random bytes for the CSRF key; forms are refused");
                        None
                    }
                }
            })
            .as_ref()
            .map(|k| k.as_slice())
    }
}

impl Default for Console {
    fn default() -> Console {
        Console {
            sessions: Mutex::new(HashMap::new()),
            failures: Throttle::new(MAX_FAILURES, 60, FAILURE_ADDRESSES),
            hashing: tokio::sync::Semaphore::new(HASHERS),
            checks: AtomicU64::new(0),
            csrf: std::sync::OnceLock::new(),
        }
    }
}
