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

/// Every package's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// By package name.
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

    /// The highest version of `name` installed.
    pub fn highest(&self, name: &str) -> Option<ClientVersion> {
        self.packages.get(name).and_then(|p| p.highest)
    }

    /// Whether `program` of `name` `version` succeeded the last time it ran (`None`: never ran).
    pub fn last_run(&self, name: &str, version: ClientVersion, program: &str) -> Option<bool> {
        self.packages.get(name)?.runs.get(&run_key(version, program)).map(|r| r.succeeded)
    }

    /// Records a run; a success installs the version (raising the highest).
    pub fn record_run(
        ctx: &Context,
        name: &str,
        version: ClientVersion,
        program: &str,
        succeeded: bool,
    ) -> Result<()> {
        let mut ledger = Ledger::load(ctx)?;
        let entry = ledger
            .packages
            .entry(name.to_string())
            .or_insert(PackageHistory { highest: None, runs: BTreeMap::new() });
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

    #[test]
    fn runs_raise_the_highest_version_only_when_they_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), Arc::new(dm_shared::clock::FixedClock::at_unix(0)));
        let v = |s: &str| s.parse::<ClientVersion>().unwrap();
        assert_eq!(Ledger::load(&ctx).unwrap().highest("tools"), None);
        Ledger::record_run(&ctx, "tools", v("2.0.0.0"), "install", false).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!(
            (l.highest("tools"), l.last_run("tools", v("2.0.0.0"), "install")),
            (None, Some(false))
        );
        Ledger::record_run(&ctx, "tools", v("1.0.0.0"), "install", true).unwrap();
        Ledger::record_run(&ctx, "tools", v("0.5.0.0"), "install", true).unwrap();
        let l = Ledger::load(&ctx).unwrap();
        assert_eq!(l.highest("tools"), Some(v("1.0.0.0")));
        assert_eq!(l.last_run("tools", v("1.0.0.0"), "uninstall"), None);
        std::fs::write(ctx.layout.package_ledger(), b"{").unwrap();
        let err = Ledger::load(&ctx).unwrap_err();
        assert!(err.to_string().contains("package-ledger.json"), "{err}");
    }
}
