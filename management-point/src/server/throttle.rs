//! Failures counted per client address, in bounded memory: the console's failed logins and
//! devices' failed authentications. An address past its limit is answered 429 until its window
//! ends, with `Retry-After` saying exactly when; successes are never counted, so a correct
//! client behind the same NAT as a guesser waits only while the guesses go on.
//!
//! Each address has one window, opened by its first failure and `window` seconds long: at most
//! `limit` failures count in it. IPv6 addresses count by their /64 (what one host is usually
//! given). At most `cap` addresses are held: windows that ended are dropped at least once a
//! window, and when the map is full of open windows the oldest makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The failures of one address.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When its first failure came (Unix seconds).
    start: i64,
    /// Failures since.
    failures: u32,
}

#[derive(Debug, Default)]
struct Held {
    windows: HashMap<IpAddr, Window>,
    /// When windows that ended were last dropped.
    pruned: i64,
}

/// Failures per client address.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: i64,
    cap: usize,
    held: Mutex<Held>,
}

/// An attempt counted as a failure before it was checked: [`Throttle::forgive`] takes it back
/// when it succeeds.
#[derive(Debug)]
#[must_use]
pub struct Reservation {
    key: IpAddr,
    start: i64,
}

/// The key an address counts under: itself (IPv4, also as IPv4-mapped IPv6), or its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Throttle {
    /// At most `limit` failures per address in `window_secs`, for at most `cap` addresses.
    pub fn new(limit: u32, window_secs: i64, cap: usize) -> Throttle {
        Throttle {
            limit: limit.max(1),
            window: window_secs.max(1),
            cap: cap.max(1),
            held: Mutex::new(Held::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open window of `key` at `now`, dropping one that ended.
    fn open(&self, held: &mut Held, key: IpAddr, now: i64) -> Option<Window> {
        let w = *held.windows.get(&key)?;
        if now - w.start < self.window {
            return Some(w);
        }
        held.windows.remove(&key);
        None
    }

    /// Seconds until `ip` may try again, when it is at its limit at `now`.
    pub fn blocked(&self, ip: IpAddr, now: i64) -> Option<i64> {
        let mut held = self.lock();
        let w = self.open(&mut held, key(ip), now)?;
        (w.failures >= self.limit).then(|| (w.start + self.window - now).max(1))
    }

    /// Counts a failure of `ip` at `now`.
    pub fn fail(&self, ip: IpAddr, now: i64) {
        let mut held = self.lock();
        self.count(&mut held, key(ip), now);
    }

    /// Counts an attempt of `ip` as a failure before it is checked, so that attempts running
    /// at once cannot all pass a check made before any of them failed. `Err`: the seconds
    /// until `ip` may try again.
    pub fn reserve(&self, ip: IpAddr, now: i64) -> Result<Reservation, i64> {
        let key = key(ip);
        let mut held = self.lock();
        if let Some(w) = self.open(&mut held, key, now) {
            if w.failures >= self.limit {
                return Err((w.start + self.window - now).max(1));
            }
        }
        let start = self.count(&mut held, key, now);
        Ok(Reservation { key, start })
    }

    /// The reserved attempt succeeded: it does not count.
    pub fn forgive(&self, r: Reservation) {
        let mut held = self.lock();
        let emptied = match held.windows.get_mut(&r.key) {
            Some(w) if w.start == r.start => {
                w.failures = w.failures.saturating_sub(1);
                w.failures == 0
            }
            _ => false,
        };
        if emptied {
            held.windows.remove(&r.key);
        }
    }

    /// How many addresses are held.
    pub fn len(&self) -> usize {
        self.lock().windows.len()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a failure to `key`'s window (opening one); returns the window's start.
    fn count(&self, held: &mut Held, key: IpAddr, now: i64) -> i64 {
        if self.open(held, key, now).is_none() {
            self.make_room(held, now);
        }
        let w = held.windows.entry(key).or_insert(Window { start: now, failures: 0 });
        w.failures = w.failures.saturating_add(1);
        w.start
    }

    /// Drops the windows that ended (at least once a window, and whenever the map is full);
    /// when every held window is open, the oldest.
    fn make_room(&self, held: &mut Held, now: i64) {
        let window = self.window;
        if held.windows.len() >= self.cap || now - held.pruned >= window {
            held.windows.retain(|_, w| now - w.start < window);
            held.pruned = now;
        }
        if held.windows.len() >= self.cap {
            let oldest = held.windows.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k);
            if let Some(k) = oldest {
                held.windows.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_past_the_limit_block_until_the_window_ends() {
        let t = Throttle::new(3, 60, 100);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.blocked(a, 100), None);
            t.fail(a, 100);
        }
        assert_eq!(t.blocked(a, 100), Some(60));
        assert_eq!(t.blocked(a, 130), Some(30), "Retry-After says when exactly");
        assert_eq!(t.blocked(ip("192.0.2.2"), 130), None, "another address");
        assert_eq!(t.blocked(a, 160), None, "the window ended");
        assert!(t.is_empty(), "and was dropped");
    }

    #[test]
    fn reservations_count_before_the_check_and_successes_are_forgiven() {
        let t = Throttle::new(2, 60, 100);
        let a = ip("192.0.2.1");
        let r1 = t.reserve(a, 0).unwrap();
        let r2 = t.reserve(a, 0).unwrap();
        assert_eq!(t.reserve(a, 0).unwrap_err(), 60, "two in flight fill the limit");
        t.forgive(r1);
        let r3 = t.reserve(a, 1).unwrap();
        t.forgive(r2);
        t.forgive(r3);
        assert!(t.is_empty(), "nothing failed");
        // A reservation from a window that ended takes nothing from the next one.
        let old = t.reserve(a, 0).unwrap();
        t.fail(a, 70);
        t.forgive(old);
        t.fail(a, 70);
        assert_eq!(t.blocked(a, 70), Some(60));
    }

    #[test]
    fn memory_is_bounded_and_ipv6_counts_by_its_64() {
        let t = Throttle::new(1, 60, 3);
        for i in 0..10 {
            t.fail(ip(&format!("192.0.2.{i}")), i);
        }
        assert_eq!(t.len(), 3, "the oldest made room");
        assert!(t.blocked(ip("192.0.2.9"), 10).is_some());
        // Ended windows go at the next failure once a window has passed.
        t.fail(ip("198.51.100.1"), 200);
        assert_eq!(t.len(), 1);
        t.fail(ip("2001:db8:1:2::1"), 200);
        assert!(t.blocked(ip("2001:db8:1:2:ffff::7"), 201).is_some(), "the same /64");
        assert!(t.blocked(ip("2001:db8:1:3::1"), 201).is_none());
        t.fail(ip("::ffff:203.0.113.5"), 200);
        assert!(t.blocked(ip("203.0.113.5"), 201).is_some(), "IPv4-mapped is IPv4");
    }
}
