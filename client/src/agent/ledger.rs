//! What the agent remembers about packages across actions, in
//! `var/lib/dm/package-ledger.json`: the highest version of each package it has installed
//! (versions never go backwards) and how each program's last run went (the advertisements'
//! rerun policies). A damaged ledger is an error naming the file, never an empty one: an empty
//! ledger would let an old version back in.

use std::collections::BTreeMap;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::{ClientVersion, Context, clock};

use crate::error::Result;

/// The largest ledger read back.
const MAX_LEDGER_BYTES: u64 = 4 * 1024 * 1024;

/// How a program's last run went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    /// Whether it succeeded.
    pub succeeded: bool,
    /// When it ended (RFC 3339).
    pub time: String,
}

/// One package's history on this device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageHistory {
    /// The highest version installed.
    pub highest: Option<ClientVersion>,
    /// The last run of each program, by `<version>/<program>`.
    #[serde(default)]
    pub runs: BTreeMap<String, LastRun>,
}

/// Which package: its name, as signed by which publisher (the subject of the certificate that
/// signed it, which stays the same when the publisher's certificate is renewed). Two
/// publishers' packages of the same name have separate histories: one publisher's version 9
/// never blocks another's version 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageId<'a> {
    /// The publisher certificate's subject.
    pub publisher: &'a str,
    /// The package name of the signed manifest.
    pub name: &'a str,
}

impl<'a> PackageId<'a> {
    /// The package of a verified folder.
    pub fn of(folder: &'a dm_shared::manifest::VerifiedFolder) -> PackageId<'a> {
        PackageId { publisher: folder.publisher.subject(), name: &folder.manifest.name }
    }
}

/// Every package's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// By publisher, then package name.
    #[serde(default)]
    pub publishers: BTreeMap<String, BTreeMap<String, PackageHistory>>,
    /// By package name alone, as agents wrote it before histories were kept per publisher.
    /// Such an entry still holds for every publisher (its highest version is never passed
    /// over), until the first publisher to run the package takes it over.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, PackageHistory>,
}

fn run_key(version: ClientVersion, program: &str) -> String {
    format!("{version}/{program}")
}

impl Ledger {
    /// The device's ledger (empty when there is none yet).
    pub fn load(ctx: &Context) -> Result<Ledger> {
        Ok(dmfs::read_json(&ctx.layout.package_ledger(), MAX_LEDGER_BYTES)?.unwrap_or_default())
    }

    fn history(&self, id: PackageId<'_>) -> Option<&PackageHistory> {
        self.publishers.get(id.publisher)?.get(id.name)
    }

    /// The highest version of the package installed.
    pub fn highest(&self, id: PackageId<'_>) -> Option<ClientVersion> {
        let own = self.history(id).and_then(|p| p.highest);
        let legacy = self.packages.get(id.name).and_then(|p| p.highest);
        own.max(legacy)
    }

    /// Whether `program` of the package's `version` succeeded the last time it ran (`None`:
    /// never ran).
    pub fn last_run(
        &self,
        id: PackageId<'_>,
        version: ClientVersion,
        program: &str,
    ) -> Option<bool> {
        let key = run_key(version, program);
        self.history(id)
            .and_then(|h| h.runs.get(&key))
            .or_else(|| self.packages.get(id.name)?.runs.get(&key))
            .map(|r| r.succeeded)
    }

    /// Records a run; a success installs the version (raising the highest).
    pub fn record_run(
        ctx: &Context,
        id: PackageId<'_>,
        version: ClientVersion,
        program: &str,
        succeeded: bool,
    ) -> Result<()> {
        let mut ledger = Ledger::load(ctx)?;
        let legacy = ledger.packages.remove(id.name);
        let entry = ledger
            .publishers
            .entry(id.publisher.to_string())
            .or_default()
            .entry(id.name.to_string())
            .or_insert(PackageHistory { highest: None, runs: BTreeMap::new() });
        if let Some(old) = legacy {
            entry.highest = entry.highest.max(old.highest);
            for (k, r) in old.runs {
                entry.runs.entry(k).or_insert(r);
            }
        }
        let time = clock::rfc3339(ctx.clock.now());
        entry.runs.insert(run_key(version, program), LastRun { succeeded, time });
        if succeeded && entry.highest.is_none_or(|h| h < version) {
            entry.highest = Some(version);
        }
        dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
        Ok(dmfs::write_json(&ctx.layout.package_ledger(), &ledger, MODE_PRIVATE)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const A: PackageId<'static> = PackageId { publisher: "CN=A", name: "tools" };
    const B: PackageId<'static> = PackageId { publisher: "CN=B", name: "tools" };

    fn ctx(dir: &std::path::Path) -> Context {
        Context::for_test(dir, Arc::new(dm_shared::clock::FixedClock::at_unix(0)))
    }

    fn v(s: &str) -> ClientVersion {
        s.parse().unwrap()
    }

    #[test]
    fn runs_raise_the_highest_version_only_when_they_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        assert_eq!(Ledger::load(&ctx).unwrap().highest(A), None);
        Ledger::record_run(&ctx, A, v("2.0.0.0"), "install", false).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!((l.highest(A), l.last_run(A, v("2.0.0.0"), "install")), (None, Some(false)));
        Ledger::record_run(&ctx, A, v("1.0.0.0"), "install", true).unwrap();
        Ledger::record_run(&ctx, A, v("0.5.0.0"), "install", true).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!(l.highest(A), Some(v("1.0.0.0")));
        assert_eq!(l.last_run(A, v("1.0.0.0"), "uninstall"), None);
        std::fs::write(ctx.layout.package_ledger(), b"{").unwrap();
        let err = Ledger::load(&ctx).unwrap_err();
        assert!(err.to_string().contains("package-ledger.json"), "{err}");
    }

    /// One publisher's package cannot freeze another's of the same name: a version 9 of
    /// `tools` from publisher B leaves publisher A's `tools` at its own highest version.
    #[test]
    fn histories_are_kept_per_publisher() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        Ledger::record_run(&ctx, A, v("2.0.0.0"), "install", true).unwrap();
        Ledger::record_run(&ctx, B, v("9.0.0.0"), "install", true).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!(l.highest(A), Some(v("2.0.0.0")));
        assert_eq!(l.highest(B), Some(v("9.0.0.0")));
        assert_eq!(l.last_run(A, v("9.0.0.0"), "install"), None);
    }

    /// A ledger written before publishers were told apart keeps holding: its highest
    /// version applies to every publisher until the first one to run the package takes it.
    #[test]
    fn a_ledger_by_name_alone_still_prevents_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE).unwrap();
        let old = r#"{"packages":{"tools":{"highest":"3.0.0.0","runs":{"3.0.0.0/install":{"succeeded":true,"time":"t"}}}}}"#;
        std::fs::write(ctx.layout.package_ledger(), old).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!((l.highest(A), l.highest(B)), (Some(v("3.0.0.0")), Some(v("3.0.0.0"))));
        assert_eq!(l.last_run(A, v("3.0.0.0"), "install"), Some(true));
        Ledger::record_run(&ctx, A, v("3.1.0.0"), "install", true).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!(l.highest(A), Some(v("3.1.0.0")));
        assert_eq!(l.last_run(A, v("3.0.0.0"), "install"), Some(true), "history taken over");
        assert_eq!(l.highest(B), None, "the legacy entry went to the publisher that ran it");
    }
}
