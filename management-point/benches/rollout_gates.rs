//! Benchmark of a rollout's gate evaluation (docs/rollouts.md) as `dmmp serve` runs it every
//! `rollout_tick_secs`: 100,000 devices in the server's in-memory view, a rollout over all of
//! them in groups of 1%, 10%, 50% and 100%, its third group (50,000 devices) just released
//! with half of them installed. Prints how long one evaluation takes at a tick (target: at
//! most 10 ms), how long reading the whole group afresh takes (done only before a rollout
//! moves), where that time goes, and how long a device's poll spends on the rollout's gate
//! (the view's check whether its group is released), which never grows with the fleet.
//!
//! ```text
//! cargo bench -p dm-mp --bench rollout_gates -- [--devices 100000] [--rounds 50]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use dm_mp::model::*;
use dm_mp::rollout::{self, Gates, Member, OnError, Rollout, RolloutState, Spec, Split};
use dm_mp::server::rollouts::{Cached, evaluate};
use dm_mp::server::state::{RolloutGate, View};
use dm_shared::vocab::{DeviceClass, PackageKind};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = arg("--devices", 100_000);
    let rounds = arg("--rounds", 50);
    let now = 1_000_000;
    let mut v = View::default();
    let pkg = Package {
        id: 1,
        name: "tool".into(),
        version: "2.0.0.0".into(),
        kind: PackageKind::SoftwareDistribution,
        publisher: None,
        distribution_point: None,
        created: 0,
        artifacts: Vec::new(),
        programs: Vec::new(),
        config_items: Vec::new(),
    };
    v.packages.insert(1, pkg);
    v.programs.insert(
        1,
        Program {
            id: 1,
            package_id: 1,
            name: "run".into(),
            command: "./run".into(),
            platforms: Vec::new(),
            max_run_time: 60,
            device_class: DeviceClass::Mobile,
            signed_program: Some("run".into()),
        },
    );
    v.advertisements.insert(
        1,
        Advertisement {
            id: 1,
            name: "r1".into(),
            program_id: 1,
            collection_id: 1,
            kind: AdvertisementKind::Mandatory,
            start_time: 0,
            expires: None,
            window: None,
            created: 0,
            canceled: false,
            rerun: Rerun::Never,
            allow_downgrade: false,
        },
    );
    let split: Split = "1%,10%,50%,100%".parse().unwrap();
    let ids: Vec<i64> = (1..=n as i64).collect();
    let groups = split.groups_of(ids.len());
    let mut members = Vec::with_capacity(n);
    for (i, (id, g)) in ids.iter().zip(&groups).enumerate() {
        let installed = *g < 2 || (*g == 2 && i % 2 == 0);
        let mut attributes = BTreeMap::new();
        attributes.insert("client_health".to_string(), "healthy".to_string());
        if installed {
            attributes.insert("installed_packages".to_string(), "other 1.0, tool 2.0.0.0".into());
        }
        let d = Device {
            id: *id,
            tenant: "DEFAULT".into(),
            controller_id: format!("dev-{id:06}"),
            token_sha256: None,
            attributes,
            created: 0,
            last_seen: Some(now - 10),
            registered_by: "admin".into(),
            auto_confirm: None,
            cert_sha256: None,
        };
        v.device_keys.insert(d.id, (d.tenant.clone(), d.controller_id.clone()));
        v.devices.insert((d.tenant.clone(), d.controller_id.clone()), d);
        if *g <= 2 {
            let status = if installed { ActionStatus::Finished } else { ActionStatus::Running };
            let a = Action {
                id: *id,
                advertisement_id: 1,
                device_id: *id,
                status,
                created: now - 900,
                updated: now - 600,
                last_code: None,
            };
            v.put_action(a);
        }
        members.push(Member {
            rollout_id: 1,
            device_id: *id,
            group: *g as i64,
            acknowledged: false,
        });
    }
    let r = Rollout {
        id: 1,
        name: "r1".into(),
        target: rollout::Target::Advertisement(1),
        spec: Spec {
            split,
            gates: Gates { success_threshold: 95, error_threshold: 10 },
            soak: 300,
            silent_after: 3600,
            start_at: None,
            joins_per_minute: 60,
            on_error: OnError::Pause,
        },
        state: RolloutState::Running,
        current_group: 2,
        reason: None,
        created: 0,
        updated: 0,
    };
    let groups_of = members.iter().map(|m| (m.device_id, m.group)).collect();
    v.rollouts.insert(
        rollout::Target::Advertisement(1),
        RolloutGate { rollout: r.clone(), members, groups: groups_of },
    );
    let last_seen: HashMap<i64, i64> = (1..=3_000).map(|i| (i, now - 1)).collect();

    // A program's rollout reads the view alone; the store (empty) is for update deployments'.
    let dir = tempfile::tempdir().unwrap();
    let store = dm_mp::storage::SqliteStore::open(&dir.path().join("db")).unwrap();
    let (counts, _) = evaluate(&v, &store, &last_seen, &r, now, None).unwrap();
    let time = |f: &mut dyn FnMut()| {
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        (times[times.len() / 2], times[times.len() - 1])
    };
    let full = time(&mut || {
        let (c, failed) = evaluate(&v, &store, &last_seen, &r, now, None).unwrap();
        std::hint::black_box((rollout::tick(&r, &c, now), failed));
    });
    let mut cache = Cached::default();
    evaluate(&v, &store, &last_seen, &r, now, Some(&mut cache)).unwrap();
    let tick = time(&mut || {
        let (c, failed) = evaluate(&v, &store, &last_seen, &r, now, Some(&mut cache)).unwrap();
        std::hint::black_box((rollout::tick(&r, &c, now), failed));
    });
    let g = counts[2];
    println!(
        "rollout gates over {n} devices in {} groups; group 3: {} devices, {} succeeded, {} installing",
        counts.len(),
        g.size,
        g.succeeded,
        g.installing
    );
    println!(
        "one evaluation (a tick: {} members read afresh, the rest judged on what was read): median {:.2} ms, worst {:.2} ms over {rounds} rounds (target: at most 10 ms)",
        dm_mp::server::rollouts::SLICE,
        tick.0,
        tick.1
    );
    println!(
        "the whole group read afresh (before a rollout moves): median {:.2} ms, worst {:.2} ms",
        full.0, full.1
    );
    // Where the time goes: the lookups alone.
    let members = &v.rollouts[&rollout::Target::Advertisement(1)].members;
    let t = Instant::now();
    let mut found = 0usize;
    for m in members.iter().filter(|m| m.group == 2) {
        let d = v.device_keys.get(&m.device_id).and_then(|k| v.devices.get(k));
        found += usize::from(d.is_some());
    }
    let devices_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    for m in members.iter().filter(|m| m.group == 2) {
        found += v.actions_of(m.device_id).filter(|a| a.advertisement_id == 1).count();
    }
    println!(
        "of which device lookups {devices_ms:.2} ms, action lookups {:.2} ms ({found})",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let gate = &v.rollouts[&rollout::Target::Advertisement(1)];
    let t = Instant::now();
    let mut released = 0usize;
    for id in 1..=n as i64 {
        released += usize::from(gate.releases(id));
    }
    let per = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("a poll's gate check: {per:.0} ns per device ({released} of {n} released)");
}
