//! The clock, injected so tests can pin or move time, and the timestamp formats used in file
//! names and logs.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::macros::format_description;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct FixedClock(Mutex<SystemTime>);

impl FixedClock {
    /// A clock stopped at `t`.
    pub fn new(t: SystemTime) -> Self {
        FixedClock(Mutex::new(t))
    }

    /// A clock stopped at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn utc(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// `YYYYMMDD-HHMMSS` in UTC, as used in log file names (`DMSvc20261124-132001.log`).
pub fn compact(t: SystemTime) -> String {
    let fmt = format_description!("[year][month][day]-[hour][minute][second]");
    utc(t).format(fmt).unwrap_or_else(|_| "00000000-000000".into())
}

/// RFC 3339 in UTC with seconds, such as `2026-11-24T13:20:01Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    utc(t).format(fmt).unwrap_or_else(|_| "0000-00-00T00:00:00Z".into())
}

/// Parses the RFC 3339 form [`rfc3339`] writes (any offset accepted).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        // 2026-11-24 13:20:01 UTC
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_526_401);
        assert_eq!(compact(t), "20261124-132001");
        assert_eq!(rfc3339(t), "2026-11-24T13:20:01Z");
        assert_eq!(parse_rfc3339("2026-11-24T13:20:01Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-24T14:20:01+01:00"), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn fixed_clock_advances() {
        let c = FixedClock::at_unix(100);
        c.advance(Duration::from_secs(5));
        assert_eq!(unix_secs(c.now()), 105);
    }
}
