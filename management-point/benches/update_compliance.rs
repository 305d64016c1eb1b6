//! Benchmark of `dmmp update compliance` (docs/software-updates.md) on SQLite: a fleet of
//! 100,000 devices that each scanned and require 20 updates (2,000,000 stored states), and a
//! catalog of 60,000 updates. Prints how long the compliance report takes, whole and for one
//! update, one device and one collection (target: the first page under 300 ms).
//!
//! ```text
//! cargo bench -p dm-mp --bench update_compliance -- [--devices 100000] [--required 20]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use dm_mp::admin::update_compliance::compliance;
use dm_mp::model::CollectionRule;
use dm_mp::storage::{SqliteStore, Storage};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let devices = arg("--devices", 100_000);
    let required = arg("--required", 20);
    let catalog = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmmp.db");
    let store = SqliteStore::open(&path).unwrap();
    let t = Instant::now();
    let list: Vec<(String, String, Option<String>)> =
        (0..devices).map(|i| ("DEFAULT".to_string(), format!("dev-{i:06}"), None)).collect();
    store.import_devices(&list, 1).unwrap();
    store
        .add_collection("half", "DEFAULT", &CollectionRule::parse("attribute:half=yes").unwrap())
        .unwrap();
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute(
            "INSERT INTO update_repositories (name, source, suite, codename, components, architectures, security, signed_by, metadata, release_date, generation, imported) \
             VALUES ('debian', '/srv', 'bookworm', 'bookworm', '[\"main\"]', '[\"arm64\"]', 0, 'X', '[]', 1, 1, 1)",
            [],
        )
        .unwrap();
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO updates (repository_id, package, version, arch, source, section, priority, size, sha256, filename, security, added) \
                     VALUES (1, ?1, '1.0', 'arm64', ?1, 'admin', 'optional', 1, '', ?2, 0, 1)",
                )
                .unwrap();
            for i in 0..catalog {
                st.execute(rusqlite::params![format!("pkg{i}"), format!("pool/p{i}.deb")]).unwrap();
            }
            let mut st = tx
                .prepare("INSERT INTO update_states (device_id, update_id, state, installed, reason, updated) VALUES (?1, ?2, 'required', '0.9', NULL, 1)")
                .unwrap();
            let mut scan =
                tx.prepare("INSERT INTO update_scans (device_id, serial, catalog, scanned, required) VALUES (?1, 1, 'c', 1, ?2)").unwrap();
            for d in 1..=devices as i64 {
                scan.execute([d, required as i64]).unwrap();
                for u in 0..required as i64 {
                    st.execute([d, 1 + (u * 997 + d % 7) % catalog as i64]).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    println!(
        "fleet: {devices} devices, {} stored states, {catalog} updates (made in {:.1} s)",
        devices * required,
        t.elapsed().as_secs_f64()
    );
    let time = |label: &str, f: &dyn Fn() -> dm_mp::admin::Out| {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let out = f();
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
            assert!(!out.text.is_empty());
        }
        println!("{label:<44} {best:>8.1} ms");
    };
    let s: &dyn Storage = &store;
    time("compliance (summary and every update)", &|| compliance(s, None, None, None).unwrap());
    time("compliance --update pkg997", &|| compliance(s, Some("pkg997"), None, None).unwrap());
    time("compliance --device dev-050000", &|| {
        compliance(s, None, Some("dev-050000"), None).unwrap()
    });
    time("compliance --collection half", &|| compliance(s, None, None, Some("half")).unwrap());
}
