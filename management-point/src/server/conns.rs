//! Every open device connection, with a deadline on each phase of its life, so that clients
//! that connect and never ask, or stop mid-request, cannot hold the server's file descriptors:
//!
//! - the TLS handshake: `handshake_timeout_secs`;
//! - the first complete request after it (HTTP/1 headers, or an HTTP/2 stream's headers):
//!   `first_request_timeout_secs`, for both protocols;
//! - silence between requests on a kept-alive connection (HTTP/1 or HTTP/2, no request in
//!   flight): `idle_timeout_secs`.
//!
//! At most `max_connections` are open (by default the process's file descriptor limit less a
//! reserve). When a new connection would pass it, the oldest connection that never completed
//! a request is closed for it, else the oldest idle one; only when every connection is busy is
//! the new one turned away. A flood of idle connections thus costs a real device at most a
//! reconnection, never its poll.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// File descriptors kept free for the database, package files and logs.
pub const FD_RESERVE: u64 = 64;

/// The connection cap to use: the configured one, never more than the descriptors the process
/// may open less [`FD_RESERVE`].
pub fn effective_cap(configured: usize) -> usize {
    let limit =
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let by_fds = usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    configured.min(by_fds).max(1)
}

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the first complete request after the handshake.
    pub first_request: Duration,
    /// For silence with no request in flight.
    pub idle: Duration,
}

/// What the server knows about one connection.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    opened: Instant,
    /// Milliseconds since `opened` of the last request start or end.
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests started on it so far.
    started: AtomicU64,
    /// The client asked to close the connection after this response.
    closing: AtomicBool,
    /// Told when the last request in flight ends.
    idle: Notify,
    /// How many times its HTTP connection was put away while idle.
    parked: AtomicU64,
}

impl Conn {
    fn new(peer: SocketAddr) -> Conn {
        Conn {
            peer,
            opened: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            idle: Notify::new(),
            parked: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started on it.
    pub fn request_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A request's response was sent (or given up).
    pub fn request_ended(&self) {
        let was = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
        if was == 1 {
            self.idle.notify_one();
        }
    }

    /// Resolves after the last request in flight ended (at once if that happened since the
    /// last call); check [`Conn::is_idle`], as another request may have started since.
    pub fn went_idle(&self) -> tokio::sync::futures::Notified<'_> {
        self.idle.notified()
    }

    /// How many requests started on it.
    pub fn requests(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Its HTTP connection was put away: it holds only its TLS session now.
    pub fn parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times its HTTP connection was put away.
    pub fn times_parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    /// The client asked to close the connection once this response is sent.
    pub fn client_closes(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether the client asked to close the connection.
    pub fn client_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Why it should be closed now, if it should.
    pub fn overdue(&self, d: Deadlines) -> Option<&'static str> {
        if self.requests() == 0 {
            return (self.opened.elapsed() > d.first_request).then_some("no request");
        }
        (self.is_idle() && self.idle_for() > d.idle).then_some("idle")
    }
}

/// The open connections by number, each with the handle that closes it.
type Open = HashMap<u64, (Arc<Conn>, Option<AbortHandle>)>;

/// The open connections.
#[derive(Debug)]
pub struct Registry {
    cap: usize,
    next: AtomicU64,
    open: Mutex<Open>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

/// A connection's place in the registry; leaving it (drop) removes it.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    registry: Arc<Registry>,
    /// The connection.
    pub conn: Arc<Conn>,
}

impl Slot {
    /// The connection's number.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    /// A registry for at most `cap` connections.
    pub fn new(cap: usize) -> Arc<Registry> {
        Arc::new(Registry {
            cap,
            next: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (closed to make room, turned away) since the start.
    pub fn pressure(&self) -> (u64, u64) {
        (self.evicted.load(Ordering::Relaxed), self.refused.load(Ordering::Relaxed))
    }

    /// Takes a place for a new connection, closing the oldest connection that never asked
    /// anything (else the oldest idle one) when the server is full. `None`: every connection
    /// is busy; turn this one away.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let mut open = self.lock();
        if open.len() >= self.cap {
            let victim =
                oldest(&open, |c| c.requests() == 0).or_else(|| oldest(&open, Conn::is_idle));
            match victim {
                Some(id) => {
                    close(&mut open, id);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(peer));
        open.insert(id, (conn.clone(), None));
        Some(Slot { id, registry: self.clone(), conn })
    }

    /// Records how to close connection `id` (its task).
    pub fn set_abort(&self, id: u64, h: AbortHandle) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.1 = Some(h);
        }
    }

    /// Closes every connection past one of its deadlines, returning each one's peer and why.
    /// One sweep over the registry replaces a timer per connection.
    pub fn close_overdue(&self, d: Deadlines) -> Vec<(SocketAddr, &'static str)> {
        let mut open = self.lock();
        let due: Vec<(u64, SocketAddr, &'static str)> =
            open.iter().filter_map(|(id, (c, _))| Some((*id, c.peer, c.overdue(d)?))).collect();
        for (id, _, _) in &due {
            close(&mut open, *id);
        }
        due.into_iter().map(|(_, peer, why)| (peer, why)).collect()
    }
}

/// Takes connection `id` out of the registry and ends its task.
fn close(open: &mut Open, id: u64) {
    if let Some((_, Some(h))) = open.remove(&id) {
        h.abort();
    }
}

fn oldest(open: &Open, pick: impl Fn(&Conn) -> bool) -> Option<u64> {
    open.iter().filter(|(_, (c, _))| pick(c)).min_by_key(|(_, (c, _))| c.opened).map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr =
        SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1));
    const D: Deadlines =
        Deadlines { first_request: Duration::from_millis(50), idle: Duration::from_millis(50) };

    #[test]
    fn deadlines_by_phase() {
        let c = Conn::new(PEER);
        assert_eq!(c.overdue(D), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.overdue(D), Some("no request"));
        c.request_started();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.overdue(D), None, "a request in flight is never idle");
        c.request_ended();
        assert_eq!(c.overdue(D), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.overdue(D), Some("idle"));
    }

    #[test]
    fn a_full_server_closes_the_silent_first_then_the_idle_then_turns_away() {
        let r = Registry::new(2);
        let silent = r.admit(PEER).unwrap();
        let busy = r.admit(PEER).unwrap();
        busy.conn.request_started();
        let third = r.admit(PEER).expect("the silent one makes room");
        assert_eq!(r.len(), 2);
        assert!(!r.lock().contains_key(&silent.id));
        third.conn.request_started();
        assert!(r.admit(PEER).is_none(), "every connection busy: turned away");
        third.conn.request_ended();
        let fourth = r.admit(PEER).expect("an idle one makes room");
        assert!(!r.lock().contains_key(&third.id));
        assert_eq!(r.pressure(), (2, 1));
        drop(busy);
        assert_eq!(r.len(), 1);
        drop(fourth);
        assert!(r.is_empty());
        assert!(effective_cap(usize::MAX) < usize::MAX);
    }
}
