//! The device's client certificate while the agent runs (native mode, docs/certificates.md):
//!
//! - renewed before it expires: at start and about hourly, when the certificate is within
//!   `RenewDaysBeforeExpiry` of expiry (or there is no valid one) and `ScepUrl` is set, the
//!   agent runs `dmcertenroll --renew` in the background, with a deadline, and never polls
//!   less for it;
//! - rotated: once a renewal stored a new pair, the agent presents it; the first poll the
//!   management point answers settles the rotation (the old pair is removed). If the
//!   management point refuses the new one (a CA it does not trust yet), the agent goes back to
//!   the old pair while it is valid, and tries the new one again at the next hourly check;
//! - described in the inventory: `certificate_health` and `certificate_expires`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dm_shared::certstore::CertStore;
use dm_shared::fs as dmfs;
use dm_shared::settings::AuthMode;
use dm_shared::{Context, Settings, StoreName, clock};
use log::{error, info, warn};

use super::net::Net;
use super::timing;
use super::worker::Worker;
use crate::enroll::{self, Rotation};
use crate::error::{Error, Result};

/// How often the agent looks at its certificate's expiry.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// How long a renewal may take beyond the SCEP pending timeout.
const RENEWAL_SLACK: Duration = Duration::from_secs(120);

/// A running `dmcertenroll --renew`.
struct Renewal {
    child: Child,
    deadline: Instant,
}

/// Keeps the client certificate current: see the module docs.
pub struct Keeper {
    next_check: Instant,
    running: Option<Renewal>,
}

impl Default for Keeper {
    fn default() -> Self {
        Keeper { next_check: Instant::now(), running: None }
    }
}

/// Whether the device authenticates with its certificate.
fn native(settings: &Settings) -> bool {
    settings.communication.authentication == AuthMode::Certificate
}

/// The network client the agent starts with: the newest pair, or the old one of a rotation the
/// management point refused.
pub fn net(ctx: &Context, settings: &Settings) -> Result<Net> {
    let prefer = Rotation::load(ctx).filter(|r| r.refused).map(|r| r.old);
    Net::presenting(ctx, settings, prefer.as_deref())
}

/// Whether `e` is the management point refusing the certificate presented: a TLS alert or
/// verification failure, or 401/403.
fn refuses_certificate(e: &Error) -> bool {
    match e {
        Error::Http { status: 401 | 403, .. } => true,
        Error::Network { reason, .. } => {
            let r = reason.to_ascii_lowercase();
            ["certificate", "alert", "unknownca", "handshake"].iter().any(|w| r.contains(w))
        }
        _ => false,
    }
}

/// Whether a renewal should run now: `ScepUrl` is set, and there is no valid certificate or it
/// is due.
fn renewal_due(ctx: &Context, settings: &Settings) -> bool {
    let c = &settings.certificates;
    if c.scep_url.is_none() {
        return false;
    }
    let now = ctx.clock.now();
    match enroll::current(ctx) {
        Some((cert, _)) if cert.valid_at(now) => {
            enroll::renewal_due(&cert, c.renew_days_before_expiry, now)
        }
        _ => true,
    }
}

impl Keeper {
    /// Before a poll: takes the result of a finished renewal, and starts one when due.
    pub fn before_poll(&mut self, w: &mut Worker<'_>) {
        if !native(w.settings) {
            return;
        }
        self.reap(w);
        if self.running.is_some() || Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + timing::jittered(CHECK_EVERY);
        retry_refused(w);
        if renewal_due(w.ctx, w.settings) {
            match start(w.ctx, w.settings) {
                Ok(r) => self.running = Some(r),
                Err(e) => error!("cannot renew the client certificate: {e}"),
            }
        }
    }

    /// After a poll: settles a rotation the management point accepted, or goes back to the old
    /// pair when it refused the new one.
    pub fn after_poll(&mut self, w: &mut Worker<'_>, polled: std::result::Result<(), &Error>) {
        let Some(mut r) = Rotation::load(w.ctx) else { return };
        if r.refused || w.session.net.client_thumbprint() != Some(r.new.as_str()) {
            return;
        }
        match polled {
            Ok(()) => settle(w.ctx, &r),
            Err(e) if refuses_certificate(e) => {
                error!(
                    "the management point refused the renewed client certificate {}: {e}; presenting the old one {} again until the next check",
                    r.new, r.old
                );
                r.refused = true;
                if let Err(e) = r.save(w.ctx) {
                    warn!("{e}");
                }
                present(w, Some(&r.old));
            }
            Err(_) => {}
        }
    }

    /// Stops a renewal still running (the agent is exiting); its key is removed by the next run.
    pub fn stop(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }

    /// Takes the result of a renewal that finished, or stops one past its deadline.
    fn reap(&mut self, w: &mut Worker<'_>) {
        let Some(r) = self.running.as_mut() else { return };
        let status = match r.child.try_wait() {
            Ok(None) if Instant::now() < r.deadline => return,
            Ok(None) => {
                warn!("dmcertenroll --renew ran past its deadline: stopped it");
                self.stop();
                return;
            }
            Ok(Some(status)) => status,
            Err(e) => {
                warn!("dmcertenroll --renew: {e}");
                self.stop();
                return;
            }
        };
        self.running = None;
        let record = enroll::last_record(w.ctx);
        let text = record.as_ref().map_or_else(|| status.to_string(), |r| r.text.clone());
        if !status.success() {
            let code = record.map_or_else(|| "?".into(), |r| r.code);
            error!("certificate renewal failed ({code}): {text}; tried again in about an hour");
            return;
        }
        info!("dmcertenroll --renew: {text}");
        if let Some(r) = Rotation::load(w.ctx).filter(|r| !r.refused) {
            if w.session.net.client_thumbprint() != Some(r.new.as_str()) {
                info!("presenting the renewed client certificate {} from the next poll", r.new);
                present(w, Some(&r.new));
            }
        }
    }
}

/// Starts `dmcertenroll --renew` from the running version's folder.
fn start(ctx: &Context, settings: &Settings) -> Result<Renewal> {
    let program = ctx.layout.active_pointer().join("dmcertenroll");
    info!("the client certificate is due for renewal: running {} --renew", program.display());
    let child = ctx
        .command(&program)
        .arg("--device-root")
        .arg(ctx.layout.root())
        .arg("--renew")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Enrollment {
            code: dm_shared::StatusCode::DM_E_CHILD_FAILED,
            reason: format!("cannot run {}: {e}", program.display()),
        })?;
    let limit = settings.certificates.scep_pending_timeout + RENEWAL_SLACK;
    Ok(Renewal { child, deadline: Instant::now() + limit })
}

/// A refused rotation is tried again: the new pair is presented from the next poll.
fn retry_refused(w: &mut Worker<'_>) {
    let Some(mut r) = Rotation::load(w.ctx).filter(|r| r.refused) else { return };
    r.refused = false;
    if let Err(e) = r.save(w.ctx) {
        warn!("{e}");
        return;
    }
    info!("trying the renewed client certificate {} again", r.new);
    present(w, Some(&r.new));
}

/// Rebuilds the session's network client presenting `thumbprint`.
fn present(w: &mut Worker<'_>, thumbprint: Option<&str>) {
    match Net::presenting(w.ctx, w.settings, thumbprint) {
        Ok(net) => w.session.net = net,
        Err(e) => error!("cannot present the client certificate {thumbprint:?}: {e}"),
    }
}

/// The management point accepted the new pair: the old one goes.
fn settle(ctx: &Context, r: &Rotation) {
    let store = CertStore::open(&ctx.layout, StoreName::My);
    let key = store.dir().join(format!("{}.key", r.old));
    let removed = store.remove(&r.old).and_then(|_| dmfs::remove_file(&key));
    if let Err(e) = removed {
        warn!("the old client certificate {} stays: {e}", r.old);
        return;
    }
    match dmfs::remove_file(&enroll::rotation_path(ctx)) {
        Ok(_) => info!(
            "the management point accepted the renewed client certificate {}; removed the old one {}",
            r.new, r.old
        ),
        Err(e) => warn!("{e}"),
    }
}

/// The inventory's `certificate_health` and `certificate_expires`, in native mode or when the
/// `my` store has a certificate.
pub fn inventory(ctx: &Context, settings: &Settings) -> Option<(String, Option<String>)> {
    let current = enroll::current(ctx);
    if !native(settings) && current.is_none() {
        return None;
    }
    let now = ctx.clock.now();
    let failed = enroll::last_record(ctx).is_some_and(|r| r.result == "failed");
    let Some((cert, _)) = current else {
        let health = if failed { "enrollment-failed" } else { "none" };
        return Some((health.into(), None));
    };
    let expires = format!("{} {}", clock::rfc3339(cert.not_after()), cert.thumbprint());
    let revoked = dm_shared::certstore::crls_quietly(&ctx.layout)
        .is_ok_and(|lists| lists.iter().any(|l| l.revokes(&cert)));
    let health = if revoked {
        "revoked"
    } else if !cert.valid_at(now) {
        "expired"
    } else if enroll::renewal_due(&cert, settings.certificates.renew_days_before_expiry, now) {
        if failed { "enrollment-failed" } else { "expiring" }
    } else {
        "valid"
    };
    Some((health.into(), Some(expires)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_the_certificate_are_told_from_outages() {
        let http = |status| Error::Http {
            url: "u".into(),
            status,
            retry_after: None,
            message: String::new(),
        };
        assert!(refuses_certificate(&http(403)));
        assert!(refuses_certificate(&http(401)));
        assert!(!refuses_certificate(&http(503)));
        let net = |reason: &str| Error::Network {
            url: "u".into(),
            reason: reason.into(),
            timeout: false,
        };
        assert!(refuses_certificate(&net("received fatal alert: UnknownCA")));
        assert!(refuses_certificate(&net("invalid peer certificate: UnknownIssuer")));
        assert!(!refuses_certificate(&net("Connection refused (os error 111)")));
    }
}
