//! Failpoints for crash-safety tests, compiled into debug builds only.
//!
//! `DM_FAILPOINTS="name=action[,name=action…]"` where action is `error` (the step fails with an
//! injected error), `kill` (the process kills itself with SIGKILL: no destructors, no flushing,
//! as a power cut would), `pause` (the process creates `<name>.paused` in the folder
//! `DM_FAILPOINT_PAUSE_DIR` and waits, at most a minute, until the test creates `<name>.go`:
//! the test acts while the process stands at that point), or any of them followed by `@N` to
//! act on the N-th hit only. Release builds, which are what ships to devices, never read the
//! variables.
//!
//! `DM_FAILPOINT_TRACE=<file>` appends the name of every failpoint reached, in order, so a
//! test can enumerate the points of an operation and then kill it at each one in turn.

use crate::error::{Error, Result};

/// The prefix of the failpoint variables (`DM_FAILPOINTS`, `DM_FAILPOINT_TRACE`).
pub const ENV_PREFIX: &str = "DM_FAILPOINT";

/// Names a point in a step. Returns an error when a test asked this point to fail, kills the
/// process when a test asked it to die, and does nothing otherwise (always, in release builds).
pub fn hit(name: &str) -> Result<()> {
    if cfg!(debug_assertions) { debug::hit(name) } else { Ok(()) }
}

mod debug {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    #[derive(Clone, Copy)]
    enum Action {
        Error,
        Kill,
        Pause,
    }

    struct Point {
        action: Action,
        on_hit: Option<u64>,
    }

    fn config() -> &'static HashMap<String, Point> {
        static CONFIG: OnceLock<HashMap<String, Point>> = OnceLock::new();
        CONFIG.get_or_init(|| {
            let raw = std::env::var("DM_FAILPOINTS").unwrap_or_default();
            parse(&raw)
        })
    }

    fn parse(raw: &str) -> HashMap<String, Point> {
        let mut map = HashMap::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((name, spec)) = item.split_once('=') else { continue };
            let (action, on_hit) = match spec.split_once('@') {
                Some((a, n)) => (a, n.parse().ok()),
                None => (spec, None),
            };
            let action = match action {
                "error" => Action::Error,
                "kill" => Action::Kill,
                "pause" => Action::Pause,
                _ => continue,
            };
            map.insert(name.to_string(), Point { action, on_hit });
        }
        map
    }

    fn trace(name: &str) {
        static TRACE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
        let Some(path) =
            TRACE.get_or_init(|| std::env::var_os("DM_FAILPOINT_TRACE").map(Into::into))
        else {
            return;
        };
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{name}");
        }
    }

    pub(super) fn hit(name: &str) -> Result<()> {
        trace(name);
        let Some(point) = config().get(name) else { return Ok(()) };
        static HITS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
        let count = {
            let mut hits =
                HITS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
            let c = hits.entry(name.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        if point.on_hit.is_some_and(|n| n != count) {
            return Ok(());
        }
        match point.action {
            Action::Error => Err(Error::Injected { name: name.to_string() }),
            Action::Kill => {
                log::logger().flush();
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                // SIGKILL cannot be caught; if it somehow returned, fail the step instead.
                Err(Error::Injected { name: name.to_string() })
            }
            Action::Pause => {
                pause(name);
                Ok(())
            }
        }
    }

    /// Stands at `name` until the test says go (or a minute passes).
    fn pause(name: &str) {
        let Some(dir) = std::env::var_os("DM_FAILPOINT_PAUSE_DIR").map(std::path::PathBuf::from)
        else {
            return;
        };
        let _ = std::fs::write(dir.join(format!("{name}.paused")), b"");
        let go = dir.join(format!("{name}.go"));
        let start = std::time::Instant::now();
        while !go.exists() && start.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_actions_and_counts() {
            let m = parse("a=error, b=kill@3,bad,c=explode,d=error@x,e=pause");
            assert!(matches!(m.get("e"), Some(Point { action: Action::Pause, on_hit: None })));
            assert!(matches!(m.get("a"), Some(Point { action: Action::Error, on_hit: None })));
            assert!(matches!(m.get("b"), Some(Point { action: Action::Kill, on_hit: Some(3) })));
            assert!(!m.contains_key("bad") && !m.contains_key("c"));
            assert!(matches!(m.get("d"), Some(Point { on_hit: None, .. })));
        }

        #[test]
        fn unknown_points_do_nothing() {
            assert!(hit("no-such-point-configured").is_ok());
        }
    }
}
