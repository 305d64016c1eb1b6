//! The clock, injected so tests can pin or move time, and the timestamp formats used in file
//! names, records and logs: UTC only, converted with Howard Hinnant's civil-date algorithms
//! (checked against the `time` crate by a property test), so the device needs no date library.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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

/// Year, month, day of the day `days` after 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Days from 1970-01-01 to a date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date and time of `t` in UTC: (year, month, day, hour, minute, second, nanosecond).
/// Times before 1970 are 1970-01-01T00:00:00.
fn utc(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    let (y, mo, day) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400) as u32;
    (y, mo, day, s / 3600, s / 60 % 60, s % 60, d.subsec_nanos())
}

/// `YYYYMMDD-HHMMSS` in UTC, as used in log file names (`DMSvc20261124-132001.log`).
pub fn compact(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = utc(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// RFC 3339 in UTC with seconds, such as `2026-11-24T13:20:01Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = utc(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// RFC 3339 in UTC with nanoseconds, as log lines begin: `2026-11-24T13:20:01.000000042Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, n) = utc(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{n:09}Z")
}

/// Parses RFC 3339 (`2026-11-24T13:20:01Z`, with any fraction of a second and any offset):
/// the form [`rfc3339`] writes, and what a person or another program may write in its place.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i + 1..i + 1 + digits].iter().enumerate().take(9) {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - k as u32);
        }
        i += 1 + digits;
    }
    let offset: i64 = match b.get(i..) {
        Some(b"Z" | b"z") => 0,
        Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(i64::from(year), month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second.min(59))
        - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
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

    proptest::proptest! {
        /// The formats and the parser agree with the `time` crate for any instant from 1970
        /// to 9999, and parsing what is written gives the instant back.
        #[test]
        fn dates_agree_with_the_time_crate(secs in 0u64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            use time::macros::format_description;
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            let theirs = time::OffsetDateTime::from(t);
            let f = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
            proptest::prop_assert_eq!(rfc3339(t), theirs.format(f).unwrap());
            let c = format_description!("[year][month][day]-[hour][minute][second]");
            proptest::prop_assert_eq!(compact(t), theirs.format(c).unwrap());
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            proptest::prop_assert_eq!(parse_rfc3339(&rfc3339(t)), Some(whole));
            proptest::prop_assert_eq!(parse_rfc3339(&rfc3339_nanos(t)), Some(t));
            let rfc = time::format_description::well_known::Rfc3339;
            let offset = theirs.to_offset(time::UtcOffset::from_hms(-7, -30, 0).unwrap());
            proptest::prop_assert_eq!(parse_rfc3339(&offset.format(&rfc).unwrap()), Some(t));
        }

        /// Anything at all parses to a time or to nothing, never a panic.
        #[test]
        fn any_text_parses_or_not(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        for s in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+25:00",
            "１９７０-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
        assert!(parse_rfc3339("2024-02-29T23:59:60Z").is_some(), "a leap second is read as :59");
    }

    #[test]
    fn fixed_clock_advances() {
        let c = FixedClock::at_unix(100);
        c.advance(Duration::from_secs(5));
        assert_eq!(unix_secs(c.now()), 105);
    }
}
