//! When the agent talks to the management point next: the server's sleep, bounded, with
//! jitter so a fleet does not poll in lockstep; and capped exponential backoff after failures.

use std::time::Duration;

use dm_shared::ddi::{self, MAX_SERVER_DELAY};

/// A uniformly random fraction in [0, 1).
pub fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// `d` scaled by a random factor in [low, high), never longer than [`MAX_SERVER_DELAY`]
/// (checked arithmetic: no input can overflow the timer).
fn scaled(d: Duration, low: f64, high: f64) -> Duration {
    let d = d.min(MAX_SERVER_DELAY);
    d.mul_f64(low + (high - low) * random_fraction()).min(MAX_SERVER_DELAY)
}

/// The server's sleep with ±20% jitter.
pub fn jittered(sleep: Duration) -> Duration {
    scaled(sleep, 0.8, 1.2)
}

/// The last poll interval raised to the floor, so the log says so once per value, not at every
/// poll.
static LAST_RAISED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// The sleep between polls: the server's `config.polling.sleep` when it is a valid `HH:MM:SS`,
/// bounded both ways, with a log line when it is: raised to `floor` (`MinPollInterval`), cut
/// to [`MAX_SERVER_DELAY`]. Else `default`, and an unreadable value is logged.
pub fn poll_sleep(server: &str, default: Duration, floor: Duration) -> Duration {
    match ddi::parse_sleep(server) {
        Some(d) if d.is_zero() => default.max(floor),
        Some(d) if d < floor => {
            let secs = d.as_secs();
            if LAST_RAISED.swap(secs, std::sync::atomic::Ordering::Relaxed) != secs {
                log::warn!(
                    "the management point asked for a poll interval of {server}; polling every {} s instead, the shortest MinPollInterval allows",
                    floor.as_secs()
                );
            }
            floor
        }
        Some(d) if d > MAX_SERVER_DELAY => {
            log::warn!(
                "the management point asked for a poll interval of {server}; polling after {} s instead, the longest this client waits",
                MAX_SERVER_DELAY.as_secs()
            );
            MAX_SERVER_DELAY
        }
        Some(d) => d,
        None => {
            if !server.is_empty() {
                log::warn!(
                    "the management point's poll interval {:?} is not HH:MM:SS; using {} s",
                    server.chars().take(40).collect::<String>(),
                    default.as_secs()
                );
            }
            default
        }
    }
}

/// The wait after `failures` consecutive failures: exponential from 2 s, capped at `cap`,
/// with jitter (between half and all of it), and never shorter than the server's Retry-After
/// (itself cut to [`MAX_SERVER_DELAY`]).
pub fn backoff(failures: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
    let exp =
        Duration::from_secs(2).saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(cap);
    let jittered = scaled(exp, 0.5, 1.0);
    match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_SERVER_DELAY)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn server_sleeps_are_bounded_both_ways() {
        let default = Duration::from_secs(300);
        let floor = Duration::from_secs(10);
        // Once a panic in Duration::mul_f64 and a crash loop; then a device silenced for good.
        for s in ["4000000000000000:00:00", "9999999:00:00", "18446744073709551:00:00"] {
            let d = poll_sleep(s, default, floor);
            assert_eq!(d, DAY, "{s}");
            assert!(jittered(d) <= DAY);
        }
        assert_eq!(poll_sleep("00:05:00", default, floor), Duration::from_secs(300));
        // Once 65 polls a minute from every device.
        assert_eq!(poll_sleep("00:00:01", default, floor), floor);
        assert_eq!(poll_sleep("00:00:00", default, floor), default);
        assert_eq!(poll_sleep("00:00:00", Duration::from_secs(5), floor), floor);
        assert_eq!(poll_sleep("soon", default, floor), default);
        assert_eq!(poll_sleep("", default, floor), default);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..200 {
            let d = jittered(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(80) && d < Duration::from_secs(120), "{d:?}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let cap = Duration::from_secs(900);
        for _ in 0..50 {
            let first = backoff(1, cap, None);
            assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
            let tenth = backoff(10, cap, None);
            assert!(tenth >= cap / 2 && tenth <= cap, "{tenth:?}");
            assert!(backoff(u32::MAX, cap, None) <= cap);
        }
        assert!(backoff(1, cap, Some(Duration::from_secs(120))) >= Duration::from_secs(120));
        assert_eq!(backoff(1, cap, Some(Duration::from_secs(u64::MAX))), DAY);
    }
}
