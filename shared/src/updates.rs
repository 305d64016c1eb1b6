//! Software updates between the management point and the agent (docs/software-updates.md):
//! the catalog a device scans (one line per update), the scan itself against dpkg's status
//! database, the states it reports as changes only, and the update deployments the device
//! installs through apt.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::debian::{self, InstalledPackage};

/// The first word of a catalog's first line.
pub const CATALOG_MAGIC: &str = "#dm-update-catalog";
/// The longest catalog line read.
const MAX_CATALOG_LINE: u64 = 1024;
/// The most rows one scan report carries; a device with more sends them over several polls.
pub const MAX_REPORT_ROWS: usize = 20_000;
/// The device API path of the updates document, below a device's base URL.
pub const UPDATES_PATH: &str = "dm/updates";

/// What the scan found for one update on one device (CM2007's states, and a deployment's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// An installed package has an older version.
    Required,
    /// This version is installed.
    Installed,
    /// Not installed, or a newer version is installed (never stored: the absence of a row).
    NotRequired,
    /// The scan could not tell (the reason says why).
    Unknown,
    /// A deployment is installing it now.
    InProgress,
    /// A deployment tried to install it and apt or dpkg refused (the reason says why).
    Failed,
    /// Installed; the device must restart for it to take effect.
    PendingReboot,
}

impl UpdateState {
    /// The name used in reports and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Required => "required",
            UpdateState::Installed => "installed",
            UpdateState::NotRequired => "not_required",
            UpdateState::Unknown => "unknown",
            UpdateState::InProgress => "in_progress",
            UpdateState::Failed => "failed",
            UpdateState::PendingReboot => "pending_reboot",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<UpdateState> {
        [
            UpdateState::Required,
            UpdateState::Installed,
            UpdateState::NotRequired,
            UpdateState::Unknown,
            UpdateState::InProgress,
            UpdateState::Failed,
            UpdateState::PendingReboot,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One update's state on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRow {
    /// The update's id in the catalog.
    pub id: i64,
    /// Its state.
    pub state: UpdateState,
    /// The version of the package installed now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
    /// Why, for `unknown` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST …/dm/updates/scan`: what changed since the report the server acknowledged with
/// `base` (0: a full report, replacing everything the server holds for the device).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScanReport {
    /// The catalog version scanned.
    pub catalog: String,
    /// The serial of the report these changes follow, 0 for a full report.
    pub base: u64,
    /// Updates whose state is new or changed.
    pub rows: Vec<StateRow>,
    /// Updates that are now not required (their rows go).
    #[serde(default)]
    pub removed: Vec<i64>,
}

/// The server's answer to a [`ScanReport`]: the serial the next report's changes follow. A
/// server that lost track answers 409, and the device sends a full report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanAck {
    /// The serial to send as the next report's `base`.
    pub serial: u64,
}

/// A file the device fetches: where, how big, its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The path inside the repository (or the catalog's name).
    pub path: String,
    /// The URL to fetch it from.
    pub href: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// A Debian repository the management point serves, as the device stages it for apt: the
/// vendor's signed metadata, unmodified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// The repository's name on the management point.
    pub name: String,
    /// The suite (`dists/{suite}`).
    pub suite: String,
    /// The components imported.
    pub components: Vec<String>,
    /// `InRelease` and the package indices of the device's architectures.
    pub metadata: Vec<FileRef>,
}

/// One update of a deployment: the package version to install and where its file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedUpdate {
    /// The update's id.
    pub id: i64,
    /// The repository it comes from.
    pub repository: String,
    /// The package name.
    pub package: String,
    /// The package's architecture.
    pub arch: String,
    /// The version to install.
    pub version: String,
    /// The `.deb`, as its `Filename` in the index names it.
    pub file: FileRef,
}

/// What to do when an update asks for a restart (`/run/reboot-required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootPolicy {
    /// Restart the device after the deadline's installs.
    Allow,
    /// Do not restart; report the update pending a reboot.
    Suppress,
}

impl RebootPolicy {
    /// The policy's name on the command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootPolicy::Allow => "allow",
            RebootPolicy::Suppress => "suppress",
        }
    }

    /// The policy named `s`.
    pub fn parse(s: &str) -> Result<RebootPolicy, String> {
        match s {
            "allow" => Ok(RebootPolicy::Allow),
            "suppress" => Ok(RebootPolicy::Suppress),
            other => Err(format!("{other:?} is no reboot policy (allow or suppress)")),
        }
    }
}

/// An update deployment as one device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The deployment's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The approved updates it deploys (the device installs those it requires).
    pub updates: Vec<DeployedUpdate>,
    /// From when the device may download (Unix seconds).
    pub available: i64,
    /// When this device installs (Unix seconds; randomised per device by the server).
    pub deadline: i64,
    /// Whether to restart when an update asks for it.
    pub reboot: RebootPolicy,
    /// The daily window in UTC devices install in (`22:00-04:00`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Whether the window is open now (the server's clock); always true without one.
    #[serde(default = "yes")]
    pub window_open: bool,
}

fn yes() -> bool {
    true
}

/// `GET …/dm/updates`: the catalog to scan, the repositories, and the deployments of the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesDocument {
    /// The catalog's version (it changes whenever an import adds updates).
    pub catalog_version: String,
    /// The catalog of the device's architectures, one line per update.
    pub catalog: FileRef,
    /// The repositories deployments install from.
    #[serde(default)]
    pub repositories: Vec<Repository>,
    /// The device's update deployments.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
}

/// One catalog line: `{id}\t{package}\t{arch}\t{version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The update's id.
    pub id: i64,
    /// The package name.
    pub package: String,
    /// Its architecture (`all` or a dpkg architecture).
    pub arch: String,
    /// Its version.
    pub version: String,
}

impl CatalogEntry {
    /// The entry as a catalog line, with its newline.
    pub fn line(&self) -> String {
        format!("{}\t{}\t{}\t{}\n", self.id, self.package, self.arch, self.version)
    }
}

/// The catalog's first line.
pub fn catalog_header(version: &str) -> String {
    format!("{CATALOG_MAGIC} 1 {version}\n")
}

/// The state of one catalog entry against the installed packages.
pub fn evaluate(
    e: &CatalogEntry,
    installed: &HashMap<(String, String), InstalledPackage>,
    native: &str,
) -> StateRow {
    let row = |state, installed: Option<&str>, reason: Option<String>| StateRow {
        id: e.id,
        state,
        installed: installed.map(str::to_string),
        reason,
    };
    let key = (e.package.clone(), debian::arch_key(&e.arch, native).to_string());
    let Some(have) = installed.get(&key) else {
        return row(UpdateState::NotRequired, None, None);
    };
    if !debian::is_valid_version(&e.version) {
        return row(
            UpdateState::Unknown,
            Some(&have.version),
            Some(format!("the catalog's version {:?} is not a Debian version", e.version)),
        );
    }
    if have.state != "installed" {
        return row(
            UpdateState::Unknown,
            Some(&have.version),
            Some(format!("dpkg holds {} {} {}", e.package, have.version, have.state)),
        );
    }
    match debian::compare_versions(&have.version, &e.version) {
        std::cmp::Ordering::Less => row(UpdateState::Required, Some(&have.version), None),
        std::cmp::Ordering::Equal => row(UpdateState::Installed, Some(&have.version), None),
        std::cmp::Ordering::Greater => row(UpdateState::NotRequired, Some(&have.version), None),
    }
}

/// A scan's result: the rows of every update not "not required", by id, and the catalog
/// version scanned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The catalog version.
    pub catalog_version: String,
    /// Every update that is not "not required", by id.
    pub rows: BTreeMap<i64, StateRow>,
    /// How many catalog entries were read.
    pub entries: u64,
}

/// Scans a catalog against dpkg's installed packages. Lines of other architectures are
/// skipped (the server sends the device's own); an unreadable line is an error naming it.
pub fn scan<R: BufRead>(
    catalog: R,
    installed: &HashMap<(String, String), InstalledPackage>,
    native: &str,
) -> Result<Scan, String> {
    let mut out = Scan::default();
    let mut buf = Vec::with_capacity(128);
    let mut reader = catalog;
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = std::io::Read::take(&mut reader, MAX_CATALOG_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading the catalog: {e}"))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() as u64 > MAX_CATALOG_LINE {
            return Err(format!("catalog line {line_no} is longer than {MAX_CATALOG_LINE} bytes"));
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|_| format!("catalog line {line_no} is not UTF-8"))?
            .trim_end_matches(['\n', '\r']);
        if line_no == 1 {
            let mut w = text.split(' ');
            if w.next() != Some(CATALOG_MAGIC) || w.next() != Some("1") {
                return Err("the catalog does not start with its header".into());
            }
            out.catalog_version = w.next().unwrap_or_default().to_string();
            continue;
        }
        let e = parse_entry(text).ok_or_else(|| format!("catalog line {line_no} is unreadable"))?;
        out.entries += 1;
        let row = evaluate(&e, installed, native);
        if row.state != UpdateState::NotRequired {
            out.rows.insert(e.id, row);
        }
    }
    if line_no == 0 {
        return Err("the catalog is empty".into());
    }
    Ok(out)
}

fn parse_entry(text: &str) -> Option<CatalogEntry> {
    let mut f = text.split('\t');
    let e = CatalogEntry {
        id: f.next()?.parse().ok()?,
        package: f.next()?.to_string(),
        arch: f.next()?.to_string(),
        version: f.next()?.to_string(),
    };
    (f.next().is_none() && !e.package.is_empty()).then_some(e)
}

/// The changes from `before` (what the server acknowledged) to `now`: rows new or changed,
/// and ids gone.
pub fn changes(
    before: &BTreeMap<i64, StateRow>,
    now: &BTreeMap<i64, StateRow>,
) -> (Vec<StateRow>, Vec<i64>) {
    let rows = now.values().filter(|r| before.get(&r.id) != Some(r)).cloned().collect();
    let removed = before.keys().filter(|id| !now.contains_key(id)).copied().collect();
    (rows, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(list: &[(&str, &str, &str, &str)]) -> HashMap<(String, String), InstalledPackage> {
        list.iter()
            .map(|(n, a, v, s)| {
                (
                    (n.to_string(), a.to_string()),
                    InstalledPackage { version: v.to_string(), state: s.to_string() },
                )
            })
            .collect()
    }

    #[test]
    fn each_state_of_the_scan() {
        let have = installed(&[
            ("a", "arm64", "1.0", "installed"),
            ("b", "arm64", "2.0", "installed"),
            ("c", "arm64", "1:1.0", "installed"),
            ("d", "arm64", "1.0", "half-configured"),
        ]);
        let cat = format!(
            "{}1\ta\tarm64\t1.1\n2\ta\tall\t1.0\n3\tb\tarm64\t2.0~rc1\n4\tc\tarm64\t2.0\n5\td\tarm64\t1.1\n6\te\tarm64\t1\n7\ta\tarm64\tx1\n",
            catalog_header("v9")
        );
        let s = scan(cat.as_bytes(), &have, "arm64").unwrap();
        assert_eq!(s.catalog_version, "v9");
        assert_eq!(s.entries, 7);
        let st: Vec<(i64, UpdateState)> = s.rows.values().map(|r| (r.id, r.state)).collect();
        assert_eq!(
            st,
            vec![
                (1, UpdateState::Required),
                (2, UpdateState::Installed),
                (5, UpdateState::Unknown),
                (7, UpdateState::Unknown)
            ]
        );
        assert_eq!(s.rows[&1].installed.as_deref(), Some("1.0"));
    }

    #[test]
    fn a_damaged_catalog_is_refused_with_the_line() {
        let have = installed(&[]);
        assert!(scan(&b""[..], &have, "arm64").unwrap_err().contains("empty"));
        assert!(scan(&b"nope\n"[..], &have, "arm64").unwrap_err().contains("header"));
        let cat = format!("{}x\ta\n", catalog_header("1"));
        assert!(scan(cat.as_bytes(), &have, "arm64").unwrap_err().contains("line 2"));
        let long = format!("{}1\ta\tarm64\t{}\n", catalog_header("1"), "1".repeat(2000));
        assert!(scan(long.as_bytes(), &have, "arm64").unwrap_err().contains("longer"));
    }

    #[test]
    fn changes_name_only_what_moved() {
        let r = |id, state| StateRow { id, state, installed: None, reason: None };
        let before: BTreeMap<_, _> =
            [(1, r(1, UpdateState::Required)), (2, r(2, UpdateState::Required))].into();
        let now: BTreeMap<_, _> =
            [(1, r(1, UpdateState::Required)), (3, r(3, UpdateState::Installed))].into();
        let (rows, removed) = changes(&before, &now);
        assert_eq!(rows, vec![r(3, UpdateState::Installed)]);
        assert_eq!(removed, vec![2]);
    }
}
