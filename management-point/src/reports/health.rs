//! Device client health (docs/health.md): each rule defined once, here, from what the device
//! reports (its inventory: `client_health`, `certificate_health`) and what the management
//! point observes itself (when it last polled, whether its certificate is revoked here).

use crate::model::Device;
use dm_shared::vocab::inventory as key;

/// Why a device is unhealthy: the source documents' three report groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Enrollment failed, the certificate expired, is expiring or revoked, trust failures.
    Certificate,
    /// No poll for too long, or repeated TLS or HTTP failures the device reported.
    Communication,
    /// The agent's self-check: damaged files, failed setup, and what else it reports.
    Local,
}

impl Cause {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Certificate => "certificate",
            Cause::Communication => "communication",
            Cause::Local => "local",
        }
    }
}

/// The thresholds (dmmp.toml `[health]`).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// The poll interval devices are told, in seconds.
    pub poll_secs: u64,
    /// A device silent for more than this many poll intervals has a communication issue.
    pub silent_polls: u64,
}

/// A device's health: healthy, or each cause with its reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Why it is unhealthy (empty: healthy), worst first.
    pub causes: Vec<(Cause, String)>,
}

impl Verdict {
    /// Whether no rule found a problem.
    pub fn healthy(&self) -> bool {
        self.causes.is_empty()
    }

    /// `healthy`, or the causes joined: `certificate, communication`.
    pub fn label(&self) -> String {
        if self.healthy() {
            return "healthy".into();
        }
        self.causes.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The reasons, joined.
    pub fn reasons(&self) -> String {
        self.causes.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>().join("; ")
    }
}

/// Certificate states a device reports that make it unhealthy.
const BAD_CERTIFICATE: [&str; 4] = ["expired", "expiring", "enrollment-failed", "revoked"];

/// Judges one device at `now` (Unix seconds). `revoked_here`: the management point refuses
/// the certificate it last presented.
pub fn judge(d: &Device, now: i64, t: Thresholds, revoked_here: bool) -> Verdict {
    let mut causes = Vec::new();
    let reported = d.attr(key::CLIENT_HEALTH).unwrap_or("");
    let reason = d.attr(key::CLIENT_HEALTH_REASON).unwrap_or("").to_string();
    // Certificate.
    if let Some(state) = d.attr(key::CERTIFICATE_HEALTH).filter(|s| BAD_CERTIFICATE.contains(s)) {
        let when = d.attr(key::CERTIFICATE_EXPIRES).map(|e| format!(" ({e})")).unwrap_or_default();
        causes.push((Cause::Certificate, format!("client certificate {state}{when}")));
    }
    if revoked_here {
        causes.push((
            Cause::Certificate,
            "its certificate is revoked on the management point".into(),
        ));
    }
    if reported == "unhealthy-certificate" {
        causes.push((
            Cause::Certificate,
            or(reason.clone(), "the device reports a certificate problem"),
        ));
    }
    // Communication: observed here, and reported by the device after it recovered.
    let limit = t.poll_secs.saturating_mul(t.silent_polls);
    match d.last_seen {
        None => causes.push((Cause::Communication, "it never polled".into())),
        Some(seen) if now.saturating_sub(seen) as u64 > limit => causes.push((
            Cause::Communication,
            format!(
                "no poll for {} (more than {} polls of {} s)",
                human(now.saturating_sub(seen) as u64),
                t.silent_polls,
                t.poll_secs
            ),
        )),
        Some(_) => {}
    }
    if reported == "unhealthy-communication" {
        causes.push((Cause::Communication, or(reason.clone(), "the device reports failed polls")));
    }
    // Local: the agent's self-check.
    if reported == "unhealthy-local" {
        causes.push((Cause::Local, or(reason, "the device reports a local problem")));
    }
    causes.sort_by_key(|(c, _)| *c);
    Verdict { causes }
}

fn or(reason: String, default: &str) -> String {
    if reason.is_empty() { default.to_string() } else { reason }
}

/// `3 h 20 min`, `5 min`, `40 s`.
pub fn human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { poll_secs: 60, silent_polls: 3 };

    fn device(attrs: &[(&str, &str)], last_seen: Option<i64>) -> Device {
        Device {
            id: 1,
            tenant: "DEFAULT".into(),
            controller_id: "dev-1".into(),
            token_sha256: None,
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            created: 0,
            last_seen,
            registered_by: "admin".into(),
            auto_confirm: None,
            cert_sha256: None,
        }
    }

    #[test]
    fn a_device_that_polls_and_reports_healthy_is_healthy() {
        let d =
            device(&[("client_health", "healthy"), ("certificate_health", "valid")], Some(1000));
        let v = judge(&d, 1100, T, false);
        assert!(v.healthy(), "{v:?}");
        assert_eq!(v.label(), "healthy");
    }

    #[test]
    fn certificate_rules() {
        for state in ["expired", "expiring", "enrollment-failed", "revoked"] {
            let d = device(&[("certificate_health", state)], Some(1000));
            let v = judge(&d, 1000, T, false);
            assert_eq!(v.causes[0].0, Cause::Certificate, "{state}");
            assert!(v.causes[0].1.contains(state));
        }
        let v = judge(&device(&[], Some(1000)), 1000, T, true);
        assert_eq!(v.label(), "certificate");
        let d = device(
            &[
                ("client_health", "unhealthy-certificate"),
                ("client_health_reason", "unknown issuer"),
            ],
            Some(1000),
        );
        assert_eq!(judge(&d, 1000, T, false).reasons(), "unknown issuer");
    }

    #[test]
    fn communication_rules_use_the_poll_interval() {
        let d = device(&[("client_health", "healthy")], Some(1000));
        assert!(judge(&d, 1000 + 180, T, false).healthy(), "three polls late is the limit");
        let v = judge(&d, 1000 + 181, T, false);
        assert_eq!(v.label(), "communication");
        assert!(v.reasons().contains("no poll for 3 min (more than 3 polls of 60 s)"), "{v:?}");
        assert_eq!(judge(&device(&[], None), 0, T, false).reasons(), "it never polled");
        let d = device(
            &[
                ("client_health", "unhealthy-communication"),
                ("client_health_reason", "5 failed polls: TLS handshake"),
            ],
            Some(1000),
        );
        assert!(judge(&d, 1000, T, false).reasons().contains("TLS handshake"));
    }

    #[test]
    fn local_rules_and_several_causes_at_once() {
        let d = device(
            &[
                ("client_health", "unhealthy-local"),
                ("client_health_reason", "dmsvc does not match its hash"),
                ("certificate_health", "expired"),
            ],
            None,
        );
        let v = judge(&d, 10_000, T, false);
        assert_eq!(v.label(), "certificate, communication, local");
        assert!(v.reasons().contains("dmsvc does not match its hash"));
    }
}
