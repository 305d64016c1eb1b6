//! Health and metrics: what `GET /healthz` tells a load balancer (the database answers, the
//! view is fresh and hears the other instances), and the Prometheus text a scraper reads from
//! `[server] metrics_listen` (a plain-HTTP listener of its own, off the devices' port):
//! polls, feedback, responses by status, view reloads and the database's latency.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// How long the view may go without a successful refresh and still be fresh.
pub const FRESH_SECS: i64 = 5;

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Polls answered (any status).
    pub polls: AtomicU64,
    /// Feedback and status messages answered (any status).
    pub feedback: AtomicU64,
    /// Responses by HTTP status.
    pub responses: ByStatus,
    /// When the view was last refreshed (or found current), Unix seconds.
    pub last_refresh: AtomicI64,
    /// Failed refreshes.
    pub refresh_errors: AtomicU64,
    /// The database's latency at the last check, in microseconds (-1: it did not answer).
    pub db_latency_us: AtomicI64,
    /// Database reads for a device the view did not hold (added a moment ago, or unknown).
    pub device_lookups: AtomicU64,
}

/// The requests counted apart from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// A poll.
    Poll,
    /// Feedback or status messages.
    Feedback,
}

impl Counted {
    /// What the route `pattern` (as the router names it) answers, if it is counted apart.
    pub fn of(pattern: &str) -> Option<Counted> {
        if pattern.ends_with("/controller/v1/{cid}") {
            Some(Counted::Poll)
        } else if pattern.ends_with("/feedback")
            || pattern.ends_with(dm_shared::ddi::STATUS_MESSAGES_PATH)
        {
            Some(Counted::Feedback)
        } else {
            None
        }
    }
}

/// The statuses counted: all that HTTP allows (100 to 999).
const STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

/// Responses by HTTP status: a counter for each, so that counting a response takes no lock.
pub struct ByStatus([AtomicU64; 900]);

impl Default for ByStatus {
    fn default() -> ByStatus {
        ByStatus(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::fmt::Debug for ByStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.counts()).finish()
    }
}

impl ByStatus {
    /// Counts a response with `status`.
    pub fn add(&self, status: u16) {
        if let Some(c) = self.0.get(usize::from(status.wrapping_sub(*STATUSES.start()))) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The statuses answered so far, lowest first, with their counts.
    pub fn counts(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        STATUSES.zip(&self.0).filter_map(|(status, c)| {
            let n = c.load(Ordering::Relaxed);
            (n > 0).then_some((status, n))
        })
    }
}

impl Metrics {
    /// Counts a request of `kind` answered with `status`.
    pub fn answered(&self, kind: Option<Counted>, status: u16) {
        match kind {
            Some(Counted::Poll) => self.polls.fetch_add(1, Ordering::Relaxed),
            Some(Counted::Feedback) => self.feedback.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        self.responses.add(status);
    }

    /// Notes a check of the database: its latency, or that it did not answer.
    pub fn database(&self, latency: Option<Duration>) {
        let us = latency.map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.db_latency_us.store(us, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, reloads: u64, view_devices: usize, connections: usize) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in lines {
                s.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        let one = |v: u64| vec![(String::new(), v.to_string())];
        metric(
            "dmmp_polls_total",
            "counter",
            "Device polls answered.",
            one(self.polls.load(Ordering::Relaxed)),
        );
        metric(
            "dmmp_feedback_total",
            "counter",
            "Feedback and status messages answered.",
            one(self.feedback.load(Ordering::Relaxed)),
        );
        let by_status: Vec<_> = self
            .responses
            .counts()
            .map(|(code, n)| (format!("{{status=\"{code}\"}}"), n.to_string()))
            .collect();
        metric("dmmp_responses_total", "counter", "Responses by HTTP status.", by_status);
        metric(
            "dmmp_view_reloads_total",
            "counter",
            "Reloads of the in-memory view after another writer's change.",
            one(reloads),
        );
        metric(
            "dmmp_view_refresh_errors_total",
            "counter",
            "Failed checks or reloads of the view.",
            one(self.refresh_errors.load(Ordering::Relaxed)),
        );
        metric(
            "dmmp_device_lookups_total",
            "counter",
            "Database reads for a device the view did not hold (added a moment ago, or unknown).",
            one(self.device_lookups.load(Ordering::Relaxed)),
        );
        metric(
            "dmmp_view_devices",
            "gauge",
            "Devices in the in-memory view.",
            one(view_devices as u64),
        );
        metric(
            "dmmp_open_connections",
            "gauge",
            "Open device connections.",
            one(connections as u64),
        );
        let us = self.db_latency_us.load(Ordering::Relaxed);
        let latency = if us < 0 { "NaN".to_string() } else { format!("{:.6}", us as f64 / 1e6) };
        metric(
            "dmmp_database_latency_seconds",
            "gauge",
            "The database's answer time at the last check (NaN: no answer).",
            vec![(String::new(), latency)],
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_prometheus_text() {
        let m = Metrics::default();
        m.polls.fetch_add(3, Ordering::Relaxed);
        m.responses.add(401);
        m.responses.add(200);
        m.responses.add(401);
        m.responses.add(99);
        m.responses.add(1000);
        m.database(Some(Duration::from_micros(1500)));
        let t = m.render(4, 10, 2);
        assert!(t.contains("# TYPE dmmp_polls_total counter\ndmmp_polls_total 3\n"), "{t}");
        assert!(
            t.contains(
                "dmmp_responses_total{status=\"200\"} 1\ndmmp_responses_total{status=\"401\"} 2\n"
            ),
            "{t}"
        );
        assert!(t.contains("dmmp_view_reloads_total 4\n"), "{t}");
        assert!(t.contains("dmmp_database_latency_seconds 0.001500\n"), "{t}");
        m.database(None);
        assert!(m.render(0, 0, 0).contains("dmmp_database_latency_seconds NaN\n"));
    }
}
