//! Every open device connection, with a deadline on each phase of its life, so that clients
//! that connect and never ask, or stop mid-request, cannot hold the server's file descriptors:
//!
//! - the TLS handshake: `handshake_timeout_secs`;
//! - the first complete request after it (HTTP/1 headers, or an HTTP/2 stream's headers):
//!   `first_request_timeout_secs`, for both protocols;
//! - silence between requests on a kept-alive connection (HTTP/1 or HTTP/2, no request in
//!   flight): `idle_timeout_secs`;
//! - a request's body, from its headers to its last byte: `body_timeout_secs` (a client that
//!   announces `Content-Length: 65536` and sends nothing holds its connection no longer);
//! - a whole request, from its headers to the last byte of its response:
//!   `request_timeout_secs`, generous because devices download large artifacts (a cut
//!   download resumes with `Range`).
//!
//! The sweep checks every deadline; no connection or request has a timer of its own.
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
    /// From a request's headers to the last byte of its body.
    pub body: Duration,
    /// From a request's headers to the last byte of its response.
    pub request: Duration,
}

/// A request in flight on a connection.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Its number on the connection.
    id: u64,
    /// Milliseconds since the connection opened when its headers came.
    started_ms: u64,
    /// Whether its body was read to its end (or given up).
    body_read: bool,
}

/// What the server knows about one connection.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    opened: Instant,
    /// Milliseconds since `opened` of the last request start or end.
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// The requests in flight (one on HTTP/1; HTTP/2 streams at once).
    pending: Mutex<Vec<Pending>>,
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
            pending: Mutex::new(Vec::new()),
            started: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            idle: Notify::new(),
            parked: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_activity_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request started on it (its headers came); returns its number on the connection.
    pub fn request_started(&self) -> u64 {
        let id = self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        let started_ms = self.now_ms();
        self.pending().push(Pending { id, started_ms, body_read: false });
        id
    }

    /// Request `id`'s body was read to its end, or will not be read.
    pub fn body_read(&self, id: u64) {
        if let Some(p) = self.pending().iter_mut().find(|p| p.id == id) {
            p.body_read = true;
        }
    }

    /// Request `id`'s response was sent (or given up).
    pub fn request_ended(&self, id: u64) {
        self.pending().retain(|p| p.id != id);
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
        let now = self.now_ms();
        let age = |p: &Pending| Duration::from_millis(now.saturating_sub(p.started_ms));
        for p in self.pending().iter() {
            if !p.body_read && age(p) > d.body {
                return Some("request body not received in time");
            }
            if age(p) > d.request {
                return Some("request not answered in time");
            }
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
    const D: Deadlines = Deadlines {
        first_request: Duration::from_millis(50),
        idle: Duration::from_millis(50),
        body: Duration::from_millis(50),
        request: Duration::from_millis(150),
    };

    #[test]
    fn deadlines_by_phase() {
        let c = Conn::new(PEER);
        assert_eq!(c.overdue(D), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.overdue(D), Some("no request"));
        let id = c.request_started();
        c.body_read(id);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.overdue(D), None, "a request in flight is never idle");
        c.request_ended(id);
        assert_eq!(c.overdue(D), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.overdue(D), Some("idle"));
    }

    /// The attack: a request whose body never comes (`Content-Length: 65536`, then nothing)
    /// counted as in flight forever, and a connection in flight is never closed nor evicted.
    #[test]
    fn a_body_that_never_comes_and_a_request_that_never_ends_are_overdue() {
        let d = Deadlines {
            body: Duration::from_millis(300),
            request: Duration::from_millis(900),
            ..D
        };
        let c = Conn::new(PEER);
        let slow = c.request_started();
        assert_eq!(c.overdue(d), None);
        std::thread::sleep(Duration::from_millis(320));
        assert_eq!(c.overdue(d), Some("request body not received in time"));
        c.body_read(slow);
        assert_eq!(c.overdue(d), None, "the body came: the request deadline is longer");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(c.overdue(d), Some("request not answered in time"));
        c.request_ended(slow);
        assert_eq!(c.overdue(d), None);
        // HTTP/2: each stream is timed from its own headers.
        let a = c.request_started();
        std::thread::sleep(Duration::from_millis(200));
        let b = c.request_started();
        c.body_read(a);
        assert_eq!(c.overdue(d), None);
        std::thread::sleep(Duration::from_millis(320));
        assert_eq!(c.overdue(d), Some("request body not received in time"), "b's body");
        c.request_ended(b);
        c.request_ended(a);
        assert!(c.is_idle());
    }

    #[test]
    fn a_full_server_closes_the_silent_first_then_the_idle_then_turns_away() {
        let r = Registry::new(2);
        let silent = r.admit(PEER).unwrap();
        let busy = r.admit(PEER).unwrap();
        let _ = busy.conn.request_started();
        let third = r.admit(PEER).expect("the silent one makes room");
        assert_eq!(r.len(), 2);
        assert!(!r.lock().contains_key(&silent.id));
        let id = third.conn.request_started();
        assert!(r.admit(PEER).is_none(), "every connection busy: turned away");
        third.conn.request_ended(id);
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
