//! A distribution point's two loops: the reporter tells the management point what it holds
//! (`POST /dp/v1/sync`) every `sync_secs`, and sooner when something changed, and takes the
//! assignment it answers; the worker carries the assignment out: removes what it no longer
//! holds, validates, and copies what it lacks, within its window and rate, each failing copy
//! tried again with a capped, jittered back-off.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::distribution::{self as dist, Assignment, ContentError, Failure, Hold, Report};
use crate::error::{Error, Result};

use super::copy::{self, MAX_JSON};
use super::holdings::Holdings;

/// The first wait after a failed copy; each failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between tries of a copy, or between reports the management point refused.
const MAX_BACKOFF: Duration = Duration::from_secs(900);
/// Headroom kept free beyond a copy's bytes.
const SPACE_MARGIN: u64 = 64 << 20;

/// What a distribution point needs to report and copy.
pub struct Syncer {
    /// The management point's URL.
    pub mp: String,
    /// Its credential.
    pub credential: String,
    /// Its HTTPS client.
    pub agent: ureq::Agent,
    /// What it holds.
    pub holdings: Arc<Holdings>,
    /// The publishers' roots.
    pub trust: dm_shared::pki::Trust,
}

/// What the two loops share.
#[derive(Default)]
struct Shared {
    assignment: Option<Assignment>,
    /// Bumped with each new assignment.
    generation: u64,
    /// Failing copies and removals, by package: the failure and when to try again.
    failures: HashMap<i64, (Failure, Instant, u32)>,
    /// Content errors not reported yet.
    content_errors: Vec<ContentError>,
    /// When everything held was last validated.
    last_validated: Option<i64>,
    /// Whether the reporter should report now.
    report_now: bool,
}

/// Jittered exponential back-off for the `n`th failure (1, 2, …).
fn backoff(n: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1u32 << n.saturating_sub(1).min(10)).min(MAX_BACKOFF);
    let mut b = [0u8; 2];
    let _ = crate::random::fill(&mut b, "jitter");
    let jitter = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    base.mul_f64(0.5 + jitter / 2.0)
}

fn now() -> i64 {
    crate::admin::now()
}

impl Syncer {
    /// Runs both loops; never returns.
    pub fn run(self) {
        let me = Arc::new(self);
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let (me2, shared2) = (me.clone(), shared.clone());
        let worker = std::thread::Builder::new()
            .name("dp-copy".into())
            .spawn(move || me2.work_loop(&shared2));
        if let Err(e) = worker {
            log::error!("cannot start the copying thread: {e}");
        }
        me.report_loop(&shared);
    }

    fn report_loop(&self, shared: &(Mutex<Shared>, Condvar)) {
        let (lock, cv) = shared;
        let mut refused = 0u32;
        loop {
            let (report, sent_errors) = {
                let s = lock.lock().unwrap_or_else(|p| p.into_inner());
                (self.report(&s), s.content_errors.len())
            };
            let wait = match self.exchange(&report) {
                Ok(a) => {
                    refused = 0;
                    let wait = Duration::from_secs(a.sync_secs.clamp(1, 3600));
                    let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let n = sent_errors.min(s.content_errors.len());
                    s.content_errors.drain(..n);
                    if s.assignment.as_ref() != Some(&a) {
                        s.assignment = Some(a);
                        s.generation += 1;
                        cv.notify_all();
                    }
                    wait
                }
                Err(e) => {
                    refused = refused.saturating_add(1);
                    let wait = backoff(refused);
                    log::warn!("cannot report to {}: {e}; again in {} s", self.mp, wait.as_secs());
                    wait
                }
            };
            let s = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (mut s, _) = cv
                .wait_timeout_while(s, wait, |s| !s.report_now)
                .unwrap_or_else(|p| p.into_inner());
            s.report_now = false;
        }
    }

    /// The report: what is held, what failed, what validations found.
    fn report(&self, s: &Shared) -> Report {
        let held = self
            .holdings
            .held()
            .values()
            .map(|p| dist::Held {
                package: p.package,
                copied: p.copied,
                refresh: p.refresh,
                validated: p.validated,
            })
            .collect();
        Report {
            free_bytes: dm_shared::fs::available_space(self.holdings.root()).unwrap_or(0),
            held,
            failures: s.failures.values().map(|(f, _, _)| f.clone()).collect(),
            content_errors: s.content_errors.clone(),
            last_validated: s.last_validated,
        }
    }

    /// Sends a report; returns the assignment.
    fn exchange(&self, r: &Report) -> Result<Assignment> {
        let url = format!("{}/dp/v1/sync", self.mp);
        let body = serde_json::to_vec(r).unwrap_or_default();
        let mut resp = self
            .agent
            .post(&url)
            .header("Authorization", &format!("DpToken {}", self.credential))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| Error::Usage(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_vec()
            .map_err(|e| Error::Usage(format!("{url}: {e}")))?;
        if status != 200 {
            let msg: String = String::from_utf8_lossy(&bytes)
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect();
            return Err(Error::Usage(format!("{url}: HTTP {status} {msg}")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Usage(format!("{url}: the assignment: {e}")))
    }

    fn work_loop(&self, shared: &(Mutex<Shared>, Condvar)) {
        let (lock, cv) = shared;
        loop {
            let (a, generation) = {
                let s = lock.lock().unwrap_or_else(|p| p.into_inner());
                (s.assignment.clone(), s.generation)
            };
            if let Some(a) = a {
                // A bug in one pass must not stop copying for good: it is logged, and the
                // next pass runs.
                let pass =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work(&a, lock)));
                let changed = pass.unwrap_or_else(|_| {
                    log::error!("a copying pass failed unexpectedly; the next one starts in 2 s");
                    false
                });
                if changed {
                    let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                    s.report_now = true;
                    cv.notify_all();
                }
            }
            // Until a new assignment comes, or back-offs and the schedule come due.
            let s = lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ =
                cv.wait_timeout_while(s, Duration::from_secs(2), |s| s.generation == generation);
        }
    }

    /// One pass over the assignment; whether anything changed.
    fn work(&self, a: &Assignment, lock: &Mutex<Shared>) -> bool {
        let mut changed = false;
        let set_failure = |package: i64, removing: bool, reason: String, permanent: bool| {
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            let n = s.failures.get(&package).map_or(0, |(_, _, n)| *n) + 1;
            let f = Failure { package, removing, reason, permanent };
            s.failures.insert(package, (f, Instant::now() + backoff(n), n));
        };
        let clear_failure = |package: i64| {
            lock.lock().unwrap_or_else(|p| p.into_inner()).failures.remove(&package);
        };
        let due = |package: i64| {
            lock.lock()
                .unwrap_or_else(|p| p.into_inner())
                .failures
                .get(&package)
                .is_none_or(|(_, at, _)| Instant::now() >= *at)
        };
        // Failures of what is neither assigned nor held any more are over.
        {
            let held = self.holdings.held();
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            s.failures
                .retain(|id, _| held.contains_key(id) || a.hold.iter().any(|h| h.package == *id));
        }
        let keep: Vec<(i64, u32)> = a.hold.iter().map(|h| (h.package, h.refresh)).collect();
        if let Err(e) = self.holdings.sweep(&keep) {
            log::warn!("cannot clear leftovers in {}: {e}", self.holdings.root().display());
        }
        // Removals first: they make room.
        for id in self.holdings.held().keys() {
            if a.hold.iter().any(|h| h.package == *id) || !due(*id) {
                continue;
            }
            match self.holdings.remove(*id) {
                Ok(()) => {
                    log::info!("removed package {id}");
                    clear_failure(*id);
                }
                Err(e) => set_failure(*id, true, e.to_string(), false),
            }
            changed = true;
        }
        changed |= self.validate(a, lock);
        if !dist::in_window(a.window.as_deref(), now()) {
            return changed;
        }
        for h in &a.hold {
            let held = self.holdings.held().get(&h.package).map(|p| p.refresh);
            if held.is_some_and(|r| r >= h.refresh) || !due(h.package) {
                continue;
            }
            changed = true;
            match self.copy(h, a.rate_limit_kib.saturating_mul(1024), a.window.as_deref()) {
                Ok(()) => {
                    log::info!(
                        "holds package {} {} {} (copied and verified)",
                        h.package,
                        h.name,
                        h.version
                    );
                    clear_failure(h.package);
                }
                Err((e, _)) if e.ends_with(copy::WINDOW_CLOSED) => {
                    let p = (h.package, &h.name, &h.version);
                    log::info!("package {} {} {}: {e}; going on in the next window", p.0, p.1, p.2);
                }
                Err((e, permanent)) => {
                    log::warn!("package {} {} {}: {e}", h.package, h.name, h.version);
                    set_failure(h.package, false, e, permanent);
                }
            }
        }
        changed
    }

    /// Validations asked for, and the scheduled one of everything.
    fn validate(&self, a: &Assignment, lock: &Mutex<Shared>) -> bool {
        let last = lock.lock().unwrap_or_else(|p| p.into_inner()).last_validated;
        let all = last.is_none_or(|t| now() - t >= a.validate_every_secs as i64);
        let mut changed = false;
        for h in &a.hold {
            let Some(p) = self.holdings.held().get(&h.package).cloned() else { continue };
            if !all && p.validated >= h.validate {
                continue;
            }
            changed |= p.validated < h.validate;
            match self.holdings.validate(h.package, h.validate, now()) {
                Ok(errors) if !errors.is_empty() => {
                    lock.lock().unwrap_or_else(|p| p.into_inner()).content_errors.extend(errors);
                    changed = true;
                }
                Ok(_) => {}
                Err(e) => log::error!("cannot validate package {}: {e}", h.package),
            }
        }
        if all {
            lock.lock().unwrap_or_else(|p| p.into_inner()).last_validated = Some(now());
        }
        changed
    }

    /// Copies a package into its staging folder and installs it; the error says whether
    /// trying again could help.
    fn copy(
        &self,
        h: &Hold,
        rate: u64,
        window: Option<&str>,
    ) -> std::result::Result<(), (String, bool)> {
        let staged = self.holdings.staging_of(h.package, h.refresh);
        for f in &h.files {
            dm_shared::manifest::check_relative_path(&f.name).map_err(|e| (e.to_string(), true))?;
        }
        let have =
            |f: &dist::HoldFile| std::fs::metadata(staged.join(&f.name)).map_or(0, |m| m.len());
        let needed: u64 = h.files.iter().map(|f| f.size.saturating_sub(have(f))).sum();
        let free = dm_shared::fs::available_space(self.holdings.root())
            .map_err(|e| (e.to_string(), false))?;
        if free < needed.saturating_add(SPACE_MARGIN) {
            return Err((
                format!(
                    "the distribution point is full: {needed} bytes to copy but {free} bytes free (and {SPACE_MARGIN} kept)"
                ),
                true,
            ));
        }
        for f in &h.files {
            let to = copy::To { mp: &self.mp, credential: &self.credential, rate, window };
            copy::copy_file(&self.agent, f, &staged.join(&f.name), &to)
                .map_err(|e| (e.to_string(), false))?;
        }
        let r = self.holdings.install(h, &staged, &self.trust, now());
        if let Err(e) = r {
            // What was copied (every file as the management point's list says) is not the
            // package its publisher signed, or not one these roots trust: copying it again
            // cannot help. It goes; an administrator's refresh tries again.
            let _ = dm_shared::fs::remove_dir_all(&staged);
            return Err((e.to_string(), true));
        }
        Ok(())
    }
}
