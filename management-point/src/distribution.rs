//! Distribution points (docs/distribution-points.md): `dmmp` in its distribution point role,
//! holding copies of packages near the devices. This module is the part without I/O: what
//! the management point records of each one and of each package it holds, the states the
//! source documents name and how a distribution point's report moves them, which distribution
//! points a device is sent to, and the short-lived signed links they serve.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A distribution point the management point knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionPoint {
    /// Row id.
    pub id: i64,
    /// Its name (unique).
    pub name: String,
    /// Where devices reach it (`https://host:port`).
    pub url: String,
    /// Its site code: devices whose `site_code` is this one use it.
    pub site: String,
    /// The address ranges (CIDR) of the devices that use it.
    pub boundaries: Vec<String>,
    /// The distribution point it copies from instead of the management point (a pull chain
    /// for remote sites), when it has the package.
    pub pull_from: Option<i64>,
    /// The most it copies, KiB per second (0: no limit).
    pub rate_limit_kib: u64,
    /// The daily window in UTC in which it copies (`22:00-06:00`); none: any time.
    pub window: Option<String>,
    /// SHA-256 of its credential.
    #[serde(skip)]
    pub token_sha256: String,
    /// The key its links are signed with (hex), derived from its credential.
    #[serde(skip)]
    pub link_key: String,
    /// When it was added.
    pub created: i64,
    /// What its last report said of it.
    pub health: DpHealth,
}

/// A distribution point's health, as its reports say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DpHealth {
    /// When it last reported (Unix seconds).
    pub last_contact: Option<i64>,
    /// Free bytes on its content folder's file system.
    pub free_bytes: Option<u64>,
    /// Content it found corrupt or missing at its last validations (newest first).
    #[serde(default)]
    pub content_errors: Vec<String>,
    /// When it last validated everything it holds.
    pub last_validated: Option<i64>,
}

impl DpHealth {
    /// Whether it reported within `silent_after` seconds of `now`.
    pub fn reachable(&self, now: i64, silent_after: i64) -> bool {
        self.last_contact.is_some_and(|t| now - t <= silent_after)
    }
}

/// The state of one package on one distribution point (the source documents' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpState {
    /// To be copied; the distribution point has not reported it yet.
    InstallPending,
    /// Copied and verified against the package's signature: served.
    Installed,
    /// A copy failed, or content went bad: copied again.
    InstallRetrying,
    /// Given up: the reason says why.
    InstallFailed,
    /// To be removed.
    RemovalPending,
    /// A removal failed: tried again.
    RemovalRetrying,
    /// Given up removing it.
    RemovalFailed,
}

impl DpState {
    /// Every state, in order.
    pub const ALL: [DpState; 7] = [
        DpState::InstallPending,
        DpState::Installed,
        DpState::InstallRetrying,
        DpState::InstallFailed,
        DpState::RemovalPending,
        DpState::RemovalRetrying,
        DpState::RemovalFailed,
    ];

    /// Its name, as the database and reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DpState::InstallPending => "install-pending",
            DpState::Installed => "installed",
            DpState::InstallRetrying => "install-retrying",
            DpState::InstallFailed => "install-failed",
            DpState::RemovalPending => "removal-pending",
            DpState::RemovalRetrying => "removal-retrying",
            DpState::RemovalFailed => "removal-failed",
        }
    }

    /// Whether the distribution point is to hold the package (not to remove it).
    pub fn holding(self) -> bool {
        !matches!(self, DpState::RemovalPending | DpState::RemovalRetrying | DpState::RemovalFailed)
    }
}

impl std::str::FromStr for DpState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DpState::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| format!("no state {s:?}"))
    }
}

impl std::fmt::Display for DpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One package on one distribution point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpContent {
    /// The distribution point.
    pub dp_id: i64,
    /// The package.
    pub package_id: i64,
    /// Its state.
    pub state: DpState,
    /// The package's version (the source version).
    pub source_version: String,
    /// When it was last copied there (and verified).
    pub last_copied: Option<i64>,
    /// Why it is retrying or failed.
    pub reason: Option<String>,
    /// When the current copy or removal began: past `fail_after`, retrying becomes failed.
    pub since: i64,
    /// Copies asked for: one more than the distribution point copied is a refresh.
    pub refresh: u32,
    /// Validations asked for.
    pub validate: u32,
    /// The package (an older version) this one replaces there (`dp update`): removed once
    /// this one is installed.
    #[serde(default)]
    pub replaces: Option<i64>,
}

impl DpContent {
    /// A package to copy to a distribution point.
    pub fn pending(dp_id: i64, package_id: i64, version: &str, now: i64) -> DpContent {
        DpContent {
            dp_id,
            package_id,
            state: DpState::InstallPending,
            source_version: version.to_string(),
            last_copied: None,
            reason: None,
            since: now,
            refresh: 0,
            validate: 0,
            replaces: None,
        }
    }
}

/// What a distribution point reports (`POST /dp/v1/sync`), and the management point answers
/// with its [`Assignment`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Free bytes where it keeps content.
    pub free_bytes: u64,
    /// The packages it holds, each verified.
    #[serde(default)]
    pub held: Vec<Held>,
    /// Copies and removals that failed.
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Content found corrupt or missing by a validation since the last report.
    #[serde(default)]
    pub content_errors: Vec<ContentError>,
    /// When it last finished validating everything it holds.
    #[serde(default)]
    pub last_validated: Option<i64>,
}

/// A package a distribution point holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    /// The package.
    pub package: i64,
    /// When it was copied (and verified).
    pub copied: i64,
    /// The refresh it was copied for.
    pub refresh: u32,
    /// The last validation asked for that it did.
    pub validated: u32,
}

/// A copy or removal that failed on a distribution point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The package.
    pub package: i64,
    /// Whether removing it failed (else copying it).
    pub removing: bool,
    /// Why.
    pub reason: String,
    /// Whether trying again cannot help (its disk is full; a file does not match the
    /// package's signature at the source).
    pub permanent: bool,
}

/// Content a validation found corrupt or missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentError {
    /// The package.
    pub package: i64,
    /// The file.
    pub file: String,
    /// What was wrong.
    pub reason: String,
}

/// What the management point tells a distribution point to hold, and how to copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Seconds until its next report.
    pub sync_secs: u64,
    /// The most it copies, KiB per second (0: no limit).
    pub rate_limit_kib: u64,
    /// The daily window in UTC in which it copies.
    pub window: Option<String>,
    /// Seconds between validations of everything it holds.
    pub validate_every_secs: u64,
    /// The packages it holds; anything else it removes.
    pub hold: Vec<Hold>,
}

/// A package a distribution point is to hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// The package's id (its folder's name there, and in links).
    pub package: i64,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether it is one `.dmpkg` bundle (its signature is inside it).
    pub bundle: bool,
    /// Whether its publisher signed a manifest of its files (else the management point's
    /// hashes are what it is checked against).
    pub signed: bool,
    /// Copy it again when this is above what it copied.
    pub refresh: u32,
    /// Validate it now when this is above what it validated.
    pub validate: u32,
    /// Its files.
    pub files: Vec<HoldFile>,
}

/// A file of a package to hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldFile {
    /// Its path in the package.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Where to copy it from, in order: another distribution point's signed link, then the
    /// management point (a path, on the management point as the distribution point reaches
    /// it).
    pub sources: Vec<String>,
}

/// A change to a package's row that a report makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The row becomes this.
    Put(DpContent),
    /// The row goes (the package was removed).
    Delete {
        /// The package.
        package_id: i64,
    },
}

/// How a distribution point's report moves the rows of its packages. `fail_after`: seconds a
/// copy or removal may keep failing before it is given up.
pub fn reconcile(rows: &[DpContent], r: &Report, now: i64, fail_after: i64) -> Vec<Change> {
    let mut out = Vec::new();
    for row in rows {
        let held = r.held.iter().find(|h| h.package == row.package_id);
        let failed = r
            .failures
            .iter()
            .find(|f| f.package == row.package_id && f.removing != row.state.holding());
        let corrupt = r.content_errors.iter().find(|e| e.package == row.package_id);
        let mut next = row.clone();
        if row.state.holding() {
            match (held, failed, corrupt) {
                (_, _, Some(e)) => {
                    next.state = DpState::InstallRetrying;
                    next.reason = Some(format!("{}: {}; copying it again", e.file, e.reason));
                    next.since = now;
                }
                (Some(h), _, None) if h.refresh >= row.refresh => {
                    next.state = DpState::Installed;
                    next.last_copied = Some(h.copied);
                    next.reason = None;
                }
                (_, Some(f), None) => {
                    let over = now - row.since > fail_after;
                    next.state = if f.permanent || over {
                        DpState::InstallFailed
                    } else {
                        DpState::InstallRetrying
                    };
                    next.reason = Some(f.reason.clone());
                }
                (None, None, None) if row.state == DpState::Installed => {
                    next.state = DpState::InstallRetrying;
                    next.reason = Some("the distribution point no longer holds it".into());
                    next.since = now;
                }
                _ => {}
            }
        } else if held.is_none() {
            out.push(Change::Delete { package_id: row.package_id });
            continue;
        } else if let Some(f) = failed {
            let over = now - row.since > fail_after;
            next.state =
                if f.permanent || over { DpState::RemovalFailed } else { DpState::RemovalRetrying };
            next.reason = Some(f.reason.clone());
        }
        if next.state == DpState::Installed && row.state != DpState::Installed {
            // An update's new version is there: the version it replaces goes now.
            if let Some(old) = next.replaces.take() {
                if let Some(o) = rows.iter().find(|o| o.package_id == old && o.state.holding()) {
                    let removal = DpContent {
                        state: DpState::RemovalPending,
                        since: now,
                        reason: Some(format!("replaced by {}", next.source_version)),
                        ..o.clone()
                    };
                    out.retain(|c| !matches!(c, Change::Put(x) if x.package_id == old));
                    out.push(Change::Put(removal));
                }
            }
        }
        if next != *row {
            out.push(Change::Put(next));
        }
    }
    out
}

/// How silence moves the rows of a distribution point last in contact at `last_contact`:
/// a copy or removal not done after `retry_after` seconds of silence is retrying, after
/// `fail_after` failed. Installed content stays installed (devices skip a silent distribution
/// point: [`sources`]).
pub fn silence(
    rows: &[DpContent],
    last_contact: Option<i64>,
    now: i64,
    retry_after: i64,
    fail_after: i64,
) -> Vec<DpContent> {
    let quiet_since = |row: &DpContent| last_contact.unwrap_or(row.since).max(row.since);
    let mut out = Vec::new();
    for row in rows {
        let quiet = now - quiet_since(row);
        let why = || match last_contact {
            Some(t) => format!(
                "the distribution point has not been in contact for {}",
                crate::reports::health::human((now - t).max(0) as u64)
            ),
            None => "the distribution point has never been in contact".to_string(),
        };
        let (retrying, failed) = match row.state {
            DpState::InstallPending | DpState::InstallRetrying => {
                (DpState::InstallRetrying, DpState::InstallFailed)
            }
            DpState::RemovalPending | DpState::RemovalRetrying => {
                (DpState::RemovalRetrying, DpState::RemovalFailed)
            }
            _ => continue,
        };
        let state = if now - row.since > fail_after && quiet > retry_after {
            failed
        } else if quiet > retry_after {
            retrying
        } else {
            continue;
        };
        if state != row.state {
            let mut next = row.clone();
            next.state = state;
            next.reason = Some(why());
            out.push(next);
        }
    }
    out
}

/// An address range (`10.1.0.0/16`, `fd00::/8`; a bare address is its own range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses one.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr =
            a.trim().parse().map_err(|_| format!("{s:?} is not an address range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match p {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    format!("{s:?}: the prefix length is a number from 0 to {max}")
                })?,
            };
        Ok(Cidr { addr, prefix })
    }

    /// Its prefix length (the longer, the nearer).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)),
                IpAddr::V6(v) => u128::from(v),
            }
        };
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v)) => match v.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
            _ => ip,
        };
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == 0 {
            return true;
        }
        let shift = width - u32::from(self.prefix);
        bits(ip) >> shift == bits(self.addr) >> shift
    }
}

/// The distribution points a device downloads a package from, nearest first: those whose
/// boundaries hold its address (the longest prefix first), then those of its site code;
/// only those that have the package installed and reported within `fresh_after` seconds.
/// The management point comes after them (the caller adds it).
pub fn sources<'a>(
    dps: &'a [DistributionPoint],
    rows: &[DpContent],
    package_id: i64,
    addr: Option<IpAddr>,
    site: Option<&str>,
    now: i64,
    fresh_after: i64,
) -> Vec<&'a DistributionPoint> {
    let mut ranked: Vec<(u16, &DistributionPoint)> = dps
        .iter()
        .filter(|dp| {
            rows.iter().any(|r| {
                r.dp_id == dp.id && r.package_id == package_id && r.state == DpState::Installed
            }) && dp.health.reachable(now, fresh_after)
        })
        .filter_map(|dp| {
            let by_addr = addr.and_then(|ip| {
                dp.boundaries
                    .iter()
                    .filter_map(|b| Cidr::parse(b).ok())
                    .filter(|c| c.contains(ip))
                    .map(|c| c.prefix())
                    .max()
            });
            match (by_addr, site) {
                (Some(p), _) => Some((200 + u16::from(p), dp)),
                (None, Some(s)) if !s.is_empty() && dp.site == s => Some((100, dp)),
                _ => None,
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    ranked.into_iter().map(|(_, dp)| dp).collect()
}

/// The key a distribution point's links are signed with, from its credential: the
/// management point keeps this and the credential's hash, never the credential.
pub fn link_key(credential: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, credential.as_bytes());
    hex(ring::hmac::sign(&k, b"dm distribution point links v1").as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn link_mac(
    key_hex: &str,
    package: i64,
    file: &str,
    device: &str,
    expires: i64,
) -> ring::hmac::Tag {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key_hex.as_bytes());
    ring::hmac::sign(&k, format!("{package}\n{file}\n{device}\n{expires}").as_bytes())
}

/// The path and query of a link to `file` of `package` for `device`, good until `expires`.
pub fn link(key_hex: &str, package: i64, file: &str, device: &str, expires: i64) -> String {
    let sig = hex(link_mac(key_hex, package, file, device, expires).as_ref());
    let enc = crate::server::http::encode_segment;
    format!("/content/{package}/{}?device={}&expires={expires}&sig={sig}", enc(file), enc(device))
}

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Its signature is not the key's.
    Forged,
    /// It expired.
    Expired,
}

/// Checks a link's signature and expiry (the signature compared in constant time).
pub fn check_link(
    key_hex: &str,
    package: i64,
    file: &str,
    device: &str,
    expires: i64,
    sig: &str,
    now: i64,
) -> Result<(), LinkRefusal> {
    let Some(sig) = unhex(sig) else { return Err(LinkRefusal::Forged) };
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key_hex.as_bytes());
    ring::hmac::verify(&k, format!("{package}\n{file}\n{device}\n{expires}").as_bytes(), &sig)
        .map_err(|_| LinkRefusal::Forged)?;
    if now > expires {
        return Err(LinkRefusal::Expired);
    }
    Ok(())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Checks a daily window (`22:00-06:00`, UTC).
pub fn parse_window(s: &str) -> Result<(u32, u32), String> {
    let minute = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let bad = || format!("window {s:?} is HH:MM-HH:MM (UTC)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
    if a == b {
        return Err(format!("window {s:?} is empty"));
    }
    Ok((a, b))
}

/// Whether Unix time `now` is within the daily window `w` (none: always).
pub fn in_window(w: Option<&str>, now: i64) -> bool {
    let Some((a, b)) = w.and_then(|w| parse_window(w).ok()) else { return true };
    let m = (now.rem_euclid(86_400) / 60) as u32;
    if a < b { (a..b).contains(&m) } else { m >= a || m < b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: DpState) -> DpContent {
        DpContent { state, ..DpContent::pending(1, 7, "1.0", 1000) }
    }

    fn held(refresh: u32) -> Held {
        Held { package: 7, copied: 1500, refresh, validated: 0 }
    }

    fn failure(removing: bool, permanent: bool) -> Failure {
        Failure { package: 7, removing, reason: "disk full".into(), permanent }
    }

    fn one(rows: &[DpContent], r: &Report, now: i64) -> Option<Change> {
        let mut c = reconcile(rows, r, now, 3600);
        assert!(c.len() <= 1);
        c.pop()
    }

    fn state_of(c: Option<Change>) -> Option<DpState> {
        match c {
            Some(Change::Put(r)) => Some(r.state),
            _ => None,
        }
    }

    #[test]
    fn copies_become_installed_retrying_or_failed() {
        let r = Report { held: vec![held(0)], ..Report::default() };
        let c = one(&[row(DpState::InstallPending)], &r, 1600);
        assert!(
            matches!(&c, Some(Change::Put(x)) if x.state == DpState::Installed && x.last_copied == Some(1500))
        );
        // A refresh is installed only once the copy it asked for is reported.
        let mut asked = row(DpState::InstallPending);
        asked.refresh = 1;
        assert_eq!(one(&[asked.clone()], &r, 1600), None);
        let r1 = Report { held: vec![held(1)], ..Report::default() };
        assert_eq!(state_of(one(&[asked], &r1, 1600)), Some(DpState::Installed));
        // Failures: retrying, failed when nothing can help or for too long.
        let f = |p| Report { failures: vec![failure(false, p)], ..Report::default() };
        assert_eq!(
            state_of(one(&[row(DpState::InstallPending)], &f(false), 1600)),
            Some(DpState::InstallRetrying)
        );
        assert_eq!(
            state_of(one(&[row(DpState::InstallPending)], &f(true), 1600)),
            Some(DpState::InstallFailed)
        );
        assert_eq!(
            state_of(one(&[row(DpState::InstallRetrying)], &f(false), 9000)),
            Some(DpState::InstallFailed)
        );
    }

    #[test]
    fn corrupt_or_lost_content_is_copied_again() {
        let r = Report {
            held: vec![held(0)],
            content_errors: vec![ContentError {
                package: 7,
                file: "a".into(),
                reason: "SHA-256 differs".into(),
            }],
            ..Report::default()
        };
        let c = one(&[row(DpState::Installed)], &r, 1600);
        assert!(
            matches!(&c, Some(Change::Put(x)) if x.state == DpState::InstallRetrying && x.reason.as_deref().unwrap().contains("SHA-256 differs"))
        );
        assert_eq!(
            state_of(one(&[row(DpState::Installed)], &Report::default(), 1600)),
            Some(DpState::InstallRetrying)
        );
        let installed = DpContent { last_copied: Some(1500), ..row(DpState::Installed) };
        assert_eq!(
            one(&[installed], &Report { held: vec![held(0)], ..Report::default() }, 1600),
            None
        );
    }

    #[test]
    fn removals_end_in_the_row_going() {
        assert_eq!(
            one(&[row(DpState::RemovalPending)], &Report::default(), 1600),
            Some(Change::Delete { package_id: 7 })
        );
        let r = Report {
            held: vec![held(0)],
            failures: vec![failure(true, false)],
            ..Report::default()
        };
        assert_eq!(
            state_of(one(&[row(DpState::RemovalPending)], &r, 1600)),
            Some(DpState::RemovalRetrying)
        );
        assert_eq!(
            state_of(one(&[row(DpState::RemovalRetrying)], &r, 99_000)),
            Some(DpState::RemovalFailed)
        );
        // A copy's failure does not touch a removal.
        let r = Report {
            held: vec![held(0)],
            failures: vec![failure(false, true)],
            ..Report::default()
        };
        assert_eq!(one(&[row(DpState::RemovalPending)], &r, 1600), None);
    }

    #[test]
    fn an_update_removes_the_version_it_replaces_only_once_it_is_installed() {
        let old = DpContent { package_id: 6, last_copied: Some(1500), ..row(DpState::Installed) };
        let new = DpContent { replaces: Some(6), ..row(DpState::InstallPending) };
        let rows = [old.clone(), new.clone()];
        let copying = Report { held: vec![Held { package: 6, ..held(0) }], ..Report::default() };
        assert!(reconcile(&rows, &copying, 1600, 3600).is_empty(), "the old one stays meanwhile");
        let done =
            Report { held: vec![Held { package: 6, ..held(0) }, held(0)], ..Report::default() };
        let c = reconcile(&rows, &done, 1600, 3600);
        let put: Vec<(i64, DpState, Option<i64>)> = c
            .iter()
            .filter_map(|c| match c {
                Change::Put(r) => Some((r.package_id, r.state, r.replaces)),
                Change::Delete { .. } => None,
            })
            .collect();
        assert_eq!(put, [(6, DpState::RemovalPending, None), (7, DpState::Installed, None)]);
    }

    #[test]
    fn silence_makes_pending_work_retrying_then_failed() {
        let rows =
            [row(DpState::InstallPending), row(DpState::Installed), row(DpState::RemovalPending)];
        assert!(silence(&rows, Some(1000), 1100, 300, 86_400).is_empty());
        let s = silence(&rows, Some(1000), 2000, 300, 86_400);
        let states: Vec<_> = s.iter().map(|r| r.state).collect();
        assert_eq!(states, [DpState::InstallRetrying, DpState::RemovalRetrying]);
        assert!(s[0].reason.as_deref().unwrap().contains("not been in contact"));
        let s = silence(&rows, None, 100_000, 300, 86_400);
        let states: Vec<_> = s.iter().map(|r| r.state).collect();
        assert_eq!(states, [DpState::InstallFailed, DpState::RemovalFailed]);
    }

    fn dp(id: i64, site: &str, b: &[&str], contact: i64) -> DistributionPoint {
        DistributionPoint {
            id,
            name: format!("dp{id}"),
            url: format!("https://dp{id}"),
            site: site.into(),
            boundaries: b.iter().map(|s| s.to_string()).collect(),
            pull_from: None,
            rate_limit_kib: 0,
            window: None,
            token_sha256: String::new(),
            link_key: String::new(),
            created: 0,
            health: DpHealth { last_contact: Some(contact), ..DpHealth::default() },
        }
    }

    #[test]
    fn devices_use_the_nearest_fresh_distribution_points_that_have_the_package() {
        let dps = [
            dp(1, "A", &["10.0.0.0/8"], 1000),
            dp(2, "B", &["10.1.0.0/16"], 1000),
            dp(3, "A", &[], 1000),
            dp(4, "A", &["10.0.0.0/8"], 100),
            dp(5, "C", &["10.0.0.0/8"], 1000),
        ];
        let mut rows: Vec<DpContent> =
            (1..=4).map(|i| DpContent { dp_id: i, ..row(DpState::Installed) }).collect();
        rows.push(DpContent { dp_id: 5, ..row(DpState::InstallRetrying) });
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let ids = |v: Vec<&DistributionPoint>| v.iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(ids(sources(&dps, &rows, 7, Some(ip), Some("A"), 1010, 300)), [2, 1, 3]);
        assert_eq!(
            ids(sources(&dps, &rows, 7, Some("192.0.2.1".parse().unwrap()), None, 1010, 300)),
            Vec::<i64>::new()
        );
        assert_eq!(ids(sources(&dps, &rows, 8, Some(ip), Some("A"), 1010, 300)), Vec::<i64>::new());
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
        assert_eq!(ids(sources(&dps, &rows, 7, Some(mapped), None, 1010, 300)), [1]);
    }

    #[test]
    fn address_ranges() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(
            c.contains("10.1.255.1".parse().unwrap()) && !c.contains("10.2.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x/8", "10.0.0.0/", "fd00::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_are_refused_when_forged_expired_or_for_another_file() {
        let key = link_key("secret");
        assert_ne!(key, link_key("other"));
        let l = link(&key, 7, "dir/a b", "dev-1", 2000);
        assert!(l.starts_with("/content/7/dir%2Fa%20b?device=dev-1&expires=2000&sig="), "{l}");
        let sig = l.rsplit_once("sig=").unwrap().1;
        assert_eq!(check_link(&key, 7, "dir/a b", "dev-1", 2000, sig, 1999), Ok(()));
        assert_eq!(
            check_link(&key, 7, "dir/a b", "dev-1", 2000, sig, 2001),
            Err(LinkRefusal::Expired)
        );
        assert_eq!(
            check_link(&key, 7, "dir/a b", "dev-1", 3000, sig, 1999),
            Err(LinkRefusal::Forged)
        );
        assert_eq!(
            check_link(&key, 7, "other", "dev-1", 2000, sig, 1999),
            Err(LinkRefusal::Forged)
        );
        assert_eq!(
            check_link(&key, 8, "dir/a b", "dev-1", 2000, sig, 1999),
            Err(LinkRefusal::Forged)
        );
        assert_eq!(
            check_link(&key, 7, "dir/a b", "dev-2", 2000, sig, 1999),
            Err(LinkRefusal::Forged)
        );
        assert_eq!(
            check_link(&link_key("other"), 7, "dir/a b", "dev-1", 2000, sig, 1999),
            Err(LinkRefusal::Forged)
        );
        assert_eq!(
            check_link(&key, 7, "dir/a b", "dev-1", 2000, "zz", 1999),
            Err(LinkRefusal::Forged)
        );
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("22:00-06:00"), Ok((1320, 360)));
        assert!(parse_window("25:00-06:00").is_err() && parse_window("10:00-10:00").is_err());
        assert!(in_window(Some("22:00-06:00"), 23 * 3600) && in_window(Some("22:00-06:00"), 3600));
        assert!(!in_window(Some("22:00-06:00"), 12 * 3600) && in_window(None, 0));
        assert!(in_window(Some("08:00-17:00"), 86_400 + 9 * 3600));
    }
}
