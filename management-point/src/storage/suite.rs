//! One suite for every store: what the server and admin commands rely on, run against each
//! implementation of [`Storage`]; and what the SQLite store alone promises (private files).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::postgres::cluster::{self, Cluster};
use super::sqlite_files::files_of;
use super::{PgStore, SqliteStore, Storage};
use crate::error::Error;
use crate::model::*;

/// A store to test, and what keeps it alive.
struct Under {
    _dir: tempfile::TempDir,
    store: Box<dyn Storage>,
}

/// The test process's PostgreSQL cluster, if PostgreSQL is installed. `DM_REQUIRE_POSTGRES`
/// (set by scripts/test-all.sh) makes its absence a failure rather than a skip.
fn cluster() -> Option<&'static Cluster> {
    static C: std::sync::OnceLock<Option<Cluster>> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        if !cluster::installed_for_tests().unwrap() {
            eprintln!("PostgreSQL is not installed: the store suite runs against SQLite only");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("dm-pg-").tempdir().unwrap().keep();
        Some(Cluster::start(&dir).unwrap())
    })
    .as_ref()
}

/// Every store this suite runs against: SQLite, and PostgreSQL (a new database each time).
fn stores() -> Vec<Under> {
    let dir = tempfile::tempdir().unwrap();
    let store = Box::new(SqliteStore::open(&dir.path().join("db/dmmp.db")).unwrap());
    let mut all = vec![Under { _dir: dir, store: store as Box<dyn Storage> }];
    if let Some(c) = cluster() {
        let url = c.database("suite").unwrap();
        let store = Box::new(PgStore::connect(&url, "suite").unwrap());
        all.push(Under { _dir: tempfile::tempdir().unwrap(), store });
    }
    all
}

/// Runs `test` against every store.
fn each(test: impl Fn(&dyn Storage)) {
    for u in stores() {
        test(u.store.as_ref());
    }
}

fn update(repo: i64, package: &str, version: &str) -> updates::Update {
    updates::Update {
        id: 0,
        repository_id: repo,
        package: package.into(),
        version: version.into(),
        arch: "arm64".into(),
        source: package.into(),
        section: "admin".into(),
        priority: "optional".into(),
        size: 10,
        sha256: "0".repeat(64),
        filename: format!("pool/{package}_{version}.deb"),
        security: false,
        superseded_by: None,
        approved: None,
        approved_by: None,
        added: 5,
    }
}

#[test]
fn the_update_catalog_and_scans_follow_their_serial() {
    use dm_shared::updates::{ScanReport, StateRow, UpdateState};
    each(|s| {
        let d = s.add_device("DEFAULT", "dev-1", Some("abc"), "admin", 1).unwrap();
        let mut repo = updates::UpdateRepository {
            id: 0,
            name: "fleet".into(),
            source: "/srv/repo".into(),
            suite: "stable".into(),
            codename: "stable".into(),
            components: vec!["main".into()],
            architectures: vec!["arm64".into()],
            security: false,
            signed_by: "ABCD".into(),
            metadata: vec![updates::RepoFile {
                path: "dists/stable/InRelease".into(),
                size: 3,
                sha256: "f".repeat(64),
            }],
            release_date: 100,
            generation: 1,
            imported: 5,
        };
        let id = s.put_update_repository(&repo).unwrap();
        repo.generation = 2;
        assert_eq!(s.put_update_repository(&repo).unwrap(), id, "the same name keeps its id");
        assert_eq!(s.update_repositories().unwrap()[0].generation, 2);
        let list = [update(id, "a", "1.0"), update(id, "a", "1.1"), update(id, "b", "2")];
        assert_eq!(s.add_updates(&list).unwrap(), 3);
        assert_eq!(s.add_updates(&list[..1]).unwrap(), 0, "the same version twice is one update");
        let all = s.updates().unwrap();
        let (a0, a1, b) = (all[0].id, all[1].id, all[2].id);
        s.set_superseded(&[(a0, Some(a1))]).unwrap();
        assert_eq!(s.approve_updates(&[a1, b], "admin", 9).unwrap(), 2);
        assert_eq!(s.approve_updates(&[a1], "admin", 9).unwrap(), 0);
        let all = s.updates().unwrap();
        assert_eq!(all[0].superseded_by, Some(a1));
        assert_eq!(all[1].approved_by.as_deref(), Some("admin"));

        let row = |id, state| StateRow { id, state, installed: Some("1.0".into()), reason: None };
        let full = ScanReport {
            catalog: "c1".into(),
            base: 0,
            rows: vec![row(a0, UpdateState::Required), row(a1, UpdateState::Required)],
            removed: vec![],
        };
        assert_eq!(s.apply_update_scan(d.id, &full, 10).unwrap(), Some(1));
        let stale = ScanReport { base: 7, ..full.clone() };
        assert_eq!(
            s.apply_update_scan(d.id, &stale, 11).unwrap(),
            None,
            "changes after a report not held"
        );
        let next = ScanReport {
            catalog: "c2".into(),
            base: 1,
            rows: vec![
                row(a1, UpdateState::Installed),
                row(b, UpdateState::Unknown),
                row(9999, UpdateState::Required),
            ],
            removed: vec![a0],
        };
        assert_eq!(s.apply_update_scan(d.id, &next, 12).unwrap(), Some(2));
        let states: Vec<(i64, UpdateState)> =
            s.update_states(Some(d.id)).unwrap().iter().map(|x| (x.update_id, x.state)).collect();
        assert_eq!(
            states,
            vec![(a1, UpdateState::Installed), (b, UpdateState::Unknown)],
            "an unknown update id is dropped"
        );
        assert_eq!(s.update_state_counts().unwrap().len(), 2);
        // A rollout's reading of some devices and some updates: those rows and scans only.
        let p = s.update_progress(&[d.id, d.id + 100], &[a1]).unwrap();
        let rows: Vec<(i64, i64, UpdateState)> =
            p.states.iter().map(|x| (x.device_id, x.update_id, x.state)).collect();
        assert_eq!((rows, p.scanned), (vec![(d.id, a1, UpdateState::Installed)], vec![(d.id, 12)]));
        assert_eq!(s.update_progress(&[d.id + 100], &[a1, b]).unwrap(), Default::default());
        let scans = s.update_scans().unwrap();
        assert_eq!((scans[0].serial, scans[0].catalog.as_str()), (2, "c2"));
        // A full report replaces everything.
        assert_eq!(
            s.apply_update_scan(
                d.id,
                &ScanReport { catalog: "c2".into(), ..Default::default() },
                13
            )
            .unwrap(),
            Some(3)
        );
        assert!(s.update_states(None).unwrap().is_empty());

        let c = s.add_collection("all", "DEFAULT", &CollectionRule::All).unwrap();
        let night = MaintenanceWindow::parse("01:00-03:00").unwrap();
        assert!(s.set_collection_window(c, Some(&night)).unwrap());
        assert_eq!(s.collections().unwrap()[0].window, Some(night));
        assert!(s.set_collection_window(c, None).unwrap());
        assert_eq!(s.collections().unwrap()[0].window, None);
        assert!(!s.set_collection_window(c + 100, None).unwrap(), "no such collection");
        let dep = updates::UpdateDeployment {
            id: 0,
            name: "wave".into(),
            collection_id: c,
            updates: vec![a1, b],
            available: 1,
            deadline: 2,
            spread: 3600,
            reboot: updates::RebootPolicy::Allow,
            window: Some(MaintenanceWindow::parse("22:00-04:00").unwrap()),
            created: 1,
            held: true,
        };
        s.add_update_deployment(&dep).unwrap();
        let got = &s.update_deployments().unwrap()[0];
        assert_eq!((got.updates.clone(), got.reboot), (vec![a1, b], updates::RebootPolicy::Allow));
        assert_eq!((got.window, got.held), (dep.window, true));
        assert!(got.window_open(23 * 3600) && !got.window_open(12 * 3600));
        assert!((2..=3602).contains(&got.deadline_of(d.id)));
        assert_eq!(
            got.deadline_of(d.id),
            got.deadline_of(d.id),
            "the same for a device at every poll"
        );
        let rule = updates::UpdateRule {
            id: 0,
            name: "sec".into(),
            repository: None,
            security_only: true,
            sections: vec!["admin".into()],
            created: 1,
        };
        s.add_update_rule(&rule).unwrap();
        assert_eq!(s.update_rules().unwrap()[0].sections, vec!["admin".to_string()]);
    });
}

fn record(device_id: i64, action_id: Option<i64>) -> StatusRecord {
    StatusRecord {
        id: 0,
        device_id,
        action_id,
        received: 10,
        source: "feedback".into(),
        execution: Some(dm_shared::ddi::Execution::Closed),
        finished: Some(dm_shared::ddi::Finished::Success),
        message_id: Some(10008),
        hresult: None,
        component: None,
        details: vec!["ok".into()],
        report_id: None,
    }
}

fn setup(s: &dyn Storage) -> (Device, Advertisement) {
    let d = s.add_device("DEFAULT", "dev-1", Some("abc"), "admin", 1).unwrap();
    let pkg = Package {
        config_items: Vec::new(),
        id: 0,
        name: "tools".into(),
        version: "1.0.0.0".into(),
        kind: PackageKind::SoftwareDistribution,
        publisher: Some("CN=p".into()),
        distribution_point: None,
        created: 1,
        artifacts: vec![ArtifactRecord {
            filename: "a".into(),
            size: 1,
            sha256: "s".into(),
            sha1: "1".into(),
            md5: "m".into(),
            path: None,
        }],
        programs: vec![],
    };
    let pid = s.add_package(&pkg).unwrap();
    let prog = s
        .add_program(&Program {
            id: 0,
            package_id: pid,
            name: "install".into(),
            command: "./a".into(),
            platforms: vec![],
            max_run_time: 60,
            device_class: DeviceClass::Mobile,
            signed_program: Some("install".into()),
        })
        .unwrap();
    let col = s.add_collection("all", "DEFAULT", &CollectionRule::All).unwrap();
    let mut adv = Advertisement {
        id: 0,
        name: "ad".into(),
        program_id: prog,
        collection_id: col,
        kind: AdvertisementKind::Mandatory,
        start_time: 0,
        expires: None,
        window: MaintenanceWindow::parse("22:00-04:00").ok(),
        created: 1,
        canceled: false,
        rerun: Rerun::IfFailed,
        allow_downgrade: true,
    };
    adv.id = s.add_advertisement(&adv).unwrap();
    (d, adv)
}

#[test]
fn the_item_catalog_keeps_each_version_once() {
    each(|s| {
        let item = ConfigItem::from_json(
            r#"{"name":"motd","version":1,"settings":[{"name":"m","target":{"provider":"file","path":"etc/motd"},"value":"x"}]}"#,
        )
        .unwrap();
        s.add_config_item(&item, 5).unwrap();
        let e = s.add_config_item(&item, 6).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        let v2 = ConfigItem { version: 2, ..item.clone() };
        s.add_config_item(&v2, 7).unwrap();
        let all = s.config_items().unwrap();
        assert_eq!(all, vec![(item, 5), (v2, 7)]);
    });
}

#[test]
fn round_trips_the_model() {
    each(|s| {
        let (dev, adv) = setup(s);
        assert_eq!(s.device("DEFAULT", "dev-1").unwrap().unwrap(), dev);
        assert_eq!(s.device_by_id(dev.id).unwrap().unwrap(), dev);
        assert_eq!(s.device_by_id(dev.id + 1000).unwrap(), None);
        assert!(matches!(
            s.add_device("DEFAULT", "dev-1", None, "admin", 2),
            Err(Error::Conflict(_))
        ));
        let mut attrs = BTreeMap::new();
        attrs.insert("platform".to_string(), "linux-aarch64".to_string());
        s.set_attributes(dev.id, &attrs).unwrap();
        s.flush_last_seen(&[(dev.id, 99)]).unwrap();
        let d = &s.devices().unwrap()[0];
        assert_eq!((d.attr("platform"), d.last_seen), (Some("linux-aarch64"), Some(99)));
        assert_eq!(s.packages().unwrap()[0].artifacts.len(), 1);
        assert_eq!(s.advertisements().unwrap(), vec![adv.clone()]);
        let a1 = s.ensure_action(adv.id, dev.id, ActionStatus::Scheduled, 5).unwrap();
        let a2 = s.ensure_action(adv.id, dev.id, ActionStatus::Scheduled, 6).unwrap();
        assert_eq!(a1, a2, "one action per device and advertisement");
        assert_eq!(a1.status, ActionStatus::Scheduled);
    });
}

#[test]
fn feedback_is_atomic_and_refusals_store_nothing() {
    each(|s| {
        let (dev, adv) = setup(s);
        let a = s.ensure_action(adv.id, dev.id, ActionStatus::Scheduled, 5).unwrap();
        let report = StatusRecord { report_id: Some("r-1".into()), ..record(dev.id, Some(a.id)) };
        let done =
            s.apply_feedback(a.id, &report, &|_| Ok(ActionStatus::Finished)).unwrap().unwrap();
        assert_eq!((done.status, done.last_code), (ActionStatus::Finished, Some(10008)));
        let err = s.apply_feedback(a.id, &record(dev.id, Some(a.id)), &|st| {
            Err(Error::Gone(format!("action is {}", st.as_str())))
        });
        assert!(matches!(err, Err(Error::Gone(_))));
        assert_eq!(s.statuses_for_action(a.id).unwrap().len(), 1);
        // The same report again (its acknowledgement was lost): stored once, no refusal.
        let again = s.apply_feedback(a.id, &report, &|_| Err(Error::Gone("closed".into())));
        assert!(matches!(again, Ok(None)), "{again:?}");
        assert_eq!(s.statuses_for_action(a.id).unwrap().len(), 1);
        let event = StatusRecord { action_id: None, ..report.clone() };
        assert_eq!(s.add_status(&event).unwrap(), None, "report ids are per device");
        let other = StatusRecord { report_id: Some("r-2".into()), ..event };
        assert!(s.add_status(&other).unwrap().is_some());
        assert_eq!(s.add_status(&other).unwrap(), None);
    });
}

#[test]
fn cancel_moves_open_actions_and_packages_in_use_stay() {
    each(|s| {
        let (dev, adv) = setup(s);
        s.ensure_action(adv.id, dev.id, ActionStatus::Scheduled, 5).unwrap();
        let pkg = s.packages().unwrap()[0].id;
        assert!(matches!(s.remove_package(pkg), Err(Error::Conflict(_))));
        assert_eq!(s.cancel_advertisement(adv.id, 6).unwrap(), 1);
        assert_eq!(s.actions().unwrap()[0].status, ActionStatus::Canceling);
        assert!(matches!(s.cancel_advertisement(999, 6), Err(Error::NotFound(_))));
        s.remove_package(pkg).unwrap();
        assert!(s.packages().unwrap().is_empty());
    });
}

#[test]
fn devices_come_in_pages_in_key_order_each_once() {
    each(|s| {
        let mut want = Vec::new();
        for t in ["B", "A"] {
            for i in (0..25).rev() {
                let cid = format!("dev-{i:02}");
                s.add_device(t, &cid, None, "admin", 1).unwrap();
                want.push((t.to_string(), cid));
            }
        }
        want.sort();
        let mut got = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page =
                s.devices_page(after.as_ref().map(|(t, c)| (t.as_str(), c.as_str())), 7).unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            after = Some((last.tenant.clone(), last.controller_id.clone()));
            got.extend(page.into_iter().map(|d| (d.tenant, d.controller_id)));
        }
        assert_eq!(got, want);
        assert!(s.devices_page(None, 0).unwrap().is_empty());
    });
}

#[test]
fn a_devices_actions_and_administrator_certificates() {
    each(|s| {
        let (dev, adv) = setup(s);
        let other = s.add_device("DEFAULT", "dev-2", None, "admin", 1).unwrap();
        let a = s.ensure_action(adv.id, dev.id, ActionStatus::Scheduled, 5).unwrap();
        s.ensure_action(adv.id, other.id, ActionStatus::Scheduled, 5).unwrap();
        assert_eq!(s.actions_of_device(dev.id).unwrap(), vec![a]);
        assert!(s.actions_of_device(999).unwrap().is_empty());

        let cert = AdminCert {
            sha256: "ab".repeat(32),
            name: "ops".into(),
            subject: "CN=ops".into(),
            not_before: 10,
            not_after: 20,
        };
        assert_eq!(s.administrator_by_certificate(&cert.sha256).unwrap(), None);
        s.add_administrator_certificate(&cert, 5).unwrap();
        assert_eq!(s.administrator_by_certificate(&cert.sha256).unwrap(), Some(cert.clone()));
        let moved = AdminCert { name: "root".into(), ..cert.clone() };
        s.add_administrator_certificate(&moved, 6).unwrap();
        assert_eq!(s.administrator_by_certificate(&cert.sha256).unwrap().unwrap().name, "root");
    });
}

#[test]
fn administrators_are_listed_removed_and_unpinned() {
    each(|s| {
        s.set_administrator("root", "$argon2id$r", 1).unwrap();
        s.set_administrator("ops", "$argon2id$o", 2).unwrap();
        let pin = |sha: &str, name: &str| AdminCert {
            sha256: sha.repeat(32),
            name: name.into(),
            subject: format!("CN={name}"),
            not_before: 10,
            not_after: 20,
        };
        for (sha, name) in [("aa", "ops"), ("bb", "ops"), ("cc", "root")] {
            s.add_administrator_certificate(&pin(sha, name), 3).unwrap();
        }
        let names: Vec<_> = s.administrators().unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["ops", "root"]);
        assert_eq!(s.administrators().unwrap()[0].hash, "$argon2id$o");
        assert_eq!(s.administrator_certificates().unwrap().len(), 3);

        assert!(s.remove_administrator_certificate(&"cc".repeat(32)).unwrap());
        assert!(!s.remove_administrator_certificate(&"cc".repeat(32)).unwrap());
        assert_eq!(s.administrator_hash("root").unwrap().as_deref(), Some("$argon2id$r"));

        // Removing an administrator takes their pinned certificates with them.
        assert!(s.remove_administrator("ops").unwrap());
        assert_eq!(s.administrator_hash("ops").unwrap(), None);
        assert_eq!(s.administrator_by_certificate(&"aa".repeat(32)).unwrap(), None);
        assert!(s.administrator_certificates().unwrap().is_empty());
        assert!(!s.remove_administrator("ops").unwrap());
        // A certificate-only administrator (no password) is removed too.
        s.add_administrator_certificate(&pin("dd", "brief"), 4).unwrap();
        assert!(s.remove_administrator("brief").unwrap());
        assert!(s.administrator_certificates().unwrap().is_empty());
    });
}

#[test]
fn sqlite_another_connection_changes_the_data_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmmp.db");
    let server = SqliteStore::open(&path).unwrap();
    let admin = SqliteStore::open(&path).unwrap();
    let v1 = server.data_version().unwrap();
    server.add_collection("mine", "DEFAULT", &CollectionRule::All).unwrap();
    assert_eq!(server.data_version().unwrap(), v1, "own writes do not count");
    admin.add_collection("theirs", "DEFAULT", &CollectionRule::All).unwrap();
    assert_ne!(server.data_version().unwrap(), v1);
}

/// Waits up to five seconds for `f` to hold.
fn within_seconds(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn postgres_another_instance_changes_the_data_version_and_last_seen_does_not() {
    let Some(c) = cluster() else { return };
    let url = c.database("notify").unwrap();
    let server = PgStore::connect(&url, "serve").unwrap();
    let other = PgStore::connect(&url, "serve").unwrap();
    let v1 = server.data_version().unwrap();
    assert!(within_seconds(|| server.listening()), "the listener never connected");
    let v1 = server.data_version().unwrap().max(v1);
    server.add_collection("mine", "DEFAULT", &CollectionRule::All).unwrap();
    let (d, adv) = setup(&server);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(server.data_version().unwrap(), v1, "own writes do not count");
    other.flush_last_seen(&[(d.id, 50)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(server.data_version().unwrap(), v1, "last-seen times are no change to a view");
    other.add_collection("theirs", "DEFAULT", &CollectionRule::All).unwrap();
    assert!(within_seconds(|| server.data_version().unwrap() != v1), "no notification");
    assert_eq!(server.devices().unwrap()[0].last_seen, Some(50));
    // An action another instance makes or moves is named, not a reason to reload everything.
    let v2 = server.data_version().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let v2 = server.data_version().unwrap().max(v2);
    server.changed();
    let a = other.ensure_action(adv.id, d.id, ActionStatus::Scheduled, 5).unwrap();
    other.mark_retrieved(a.id, 6).unwrap();
    let attrs = BTreeMap::from([("platform".to_string(), "linux-armv7".to_string())]);
    other.set_attributes(d.id, &attrs).unwrap();
    let mut heard = crate::storage::Changed::default();
    assert!(within_seconds(|| {
        let c = server.changed();
        heard.actions.extend(c.actions);
        heard.devices.extend(c.devices);
        heard.actions.contains(&a.id) && heard.devices.contains(&d.id)
    }));
    assert_eq!(server.data_version().unwrap(), v2, "an action or inventory moved the data version");
}

#[test]
fn postgres_feedback_for_one_action_from_two_instances_is_stored_once_and_in_order() {
    let Some(c) = cluster() else { return };
    let url = c.database("race").unwrap();
    let a = PgStore::connect(&url, "serve").unwrap();
    let b = PgStore::connect(&url, "serve").unwrap();
    let (dev, adv) = setup(&a);
    let action = a.ensure_action(adv.id, dev.id, ActionStatus::Running, 5).unwrap();
    // 40 progress reports (running stays running) from each instance at once, then a final
    // report sent to both (a resend after a lost acknowledgement).
    std::thread::scope(|s| {
        for (store, tag) in [(&a, "a"), (&b, "b")] {
            s.spawn(move || {
                for i in 0..40 {
                    let r = StatusRecord {
                        report_id: Some(format!("{tag}-{i}")),
                        execution: Some(dm_shared::ddi::Execution::Proceeding),
                        finished: None,
                        ..record(dev.id, Some(action.id))
                    };
                    store
                        .apply_feedback(action.id, &r, &|st| match st {
                            ActionStatus::Running => Ok(ActionStatus::Running),
                            other => Err(Error::Gone(other.as_str().into())),
                        })
                        .unwrap();
                }
            });
        }
    });
    let last = StatusRecord { report_id: Some("final".into()), ..record(dev.id, Some(action.id)) };
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = [&a, &b]
            .into_iter()
            .map(|store| {
                let last = last.clone();
                s.spawn(move || {
                    store.apply_feedback(action.id, &last, &|st| match st {
                        ActionStatus::Running => Ok(ActionStatus::Finished),
                        other => Err(Error::Gone(other.as_str().into())),
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One instance stored it; the other found it stored (or the action already closed).
    let stored = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert_eq!(stored, 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(Error::Gone(_)))), "{results:?}");
    assert_eq!(a.statuses_for_action(action.id).unwrap().len(), 81);
    assert_eq!(b.action(action.id).unwrap().unwrap().status, ActionStatus::Finished);
}

#[test]
fn postgres_migrate_copies_a_fleet_row_for_row_into_an_empty_database_only() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmmp.db");
    let src = SqliteStore::open(&path).unwrap();
    let (dev, adv) = setup(&src);
    src.add_device("OTHER", "dev-2", Some("t"), "target-token", 3).unwrap();
    src.flush_last_seen(&[(dev.id, 77)]).unwrap();
    let a = src.ensure_action(adv.id, dev.id, ActionStatus::Scheduled, 5).unwrap();
    let fb = StatusRecord { report_id: Some("r-1".into()), ..record(dev.id, Some(a.id)) };
    src.apply_feedback(a.id, &fb, &|_| Ok(ActionStatus::Finished)).unwrap();
    src.set_administrator("admin", "$argon2id$x", 9).unwrap();
    src.put_crl("CN=ca", "PEM", 1, 2).unwrap();

    let url = c.database("migrate").unwrap();
    let pg = PgStore::connect(&url, "migrate").unwrap();
    let counts = pg.copy_from_sqlite(&path).unwrap();
    let n = |t: &str| counts.iter().find(|(x, _)| x == t).unwrap().1;
    assert_eq!((n("devices"), n("actions"), n("status"), n("artifacts")), (2, 1, 1, 1));
    assert_eq!(pg.devices().unwrap(), src.devices().unwrap());
    assert_eq!(pg.actions().unwrap(), src.actions().unwrap());
    assert_eq!(pg.packages().unwrap(), src.packages().unwrap());
    assert_eq!(pg.programs().unwrap(), src.programs().unwrap());
    assert_eq!(pg.advertisements().unwrap(), src.advertisements().unwrap());
    assert_eq!(pg.collections().unwrap(), src.collections().unwrap());
    assert_eq!(pg.statuses_for_action(a.id).unwrap(), src.statuses_for_action(a.id).unwrap());
    assert_eq!(pg.administrator_hash("admin").unwrap().as_deref(), Some("$argon2id$x"));
    assert_eq!(pg.crls().unwrap(), src.crls().unwrap());
    // The sequences continue after the copied ids; the report id is still known.
    let d3 = pg.add_device("DEFAULT", "dev-3", None, "admin", 10).unwrap();
    assert!(d3.id > dev.id && d3.id > 2, "{d3:?}");
    assert_eq!(pg.apply_feedback(a.id, &fb, &|_| Err(Error::Gone("closed".into()))).unwrap(), None);
    // Never into a database that holds anything.
    let e = pg.copy_from_sqlite(&path).unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("not empty")), "{e}");
}

#[test]
fn postgres_over_tls_with_the_database_ca_and_never_without() {
    use dm_shared::devpki::{self, Purpose, Spec};
    if cluster().is_none() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("dm-pg-tls-").tempdir().unwrap().keep();
    let c = Cluster::start(&dir).unwrap();
    let url = c.database("tls").unwrap();
    let now = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let day = std::time::Duration::from_secs(86_400);
    let spec = |cn: &str, purpose| Spec {
        common_name: cn.into(),
        purpose,
        not_before: now,
        not_after: now + day,
    };
    let ca = devpki::root_ca(&spec("database CA", Purpose::Ca)).unwrap();
    let server =
        devpki::issue(&ca, &spec("db", Purpose::Server(vec!["127.0.0.1".into()]))).unwrap();
    let stranger = devpki::root_ca(&spec("another CA", Purpose::Ca)).unwrap();
    c.require_tls(&server.cert_pem, &server.key_pem).unwrap();
    let (ca_file, stranger_file) = (dir.join("ca.pem"), dir.join("stranger.pem"));
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    std::fs::write(&stranger_file, &stranger.cert_pem).unwrap();
    let tls_url = format!("{url}?sslmode=require");

    let s = PgStore::connect_with(&tls_url, "serve", Some(&ca_file)).unwrap();
    s.add_device("DEFAULT", "dev-1", None, "admin", 1).unwrap();
    s.data_version().unwrap();
    assert!(within_seconds(|| s.hears_others()), "the listener did not connect over TLS");
    let e = PgStore::connect(&url, "serve").unwrap_err();
    assert!(matches!(e, Error::Postgres { .. }), "plain was accepted: {e}");
    let e = PgStore::connect_with(&tls_url, "serve", Some(&stranger_file)).unwrap_err();
    assert!(matches!(e, Error::Postgres { .. }), "a server another CA signed was trusted: {e}");
}

// The SQLite store alone.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The attack: a local user reads the token and password hashes from a database that an
/// administrator with a permissive umask created world-readable, and guesses them offline.
#[test]
fn database_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dmmp.db");
    // umask is the process's: other tests running now may create files with more bits for
    // a moment, never with fewer.
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let opened = SqliteStore::open(&db);
    rustix::process::umask(old);
    let store = opened.unwrap();
    store.set_administrator("root", "$argon2id$x", 1).unwrap();
    for f in files_of(&db) {
        assert!(f.exists(), "{} (WAL mode keeps -wal and -shm while open)", f.display());
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    drop(store);

    // A database made world-readable before this version is made private at the next open.
    let loose = dir.path().join("old.db");
    drop(SqliteStore::open(&loose).unwrap());
    dm_shared::fs::set_mode(&loose, 0o644).unwrap();
    let store = SqliteStore::open(&loose).unwrap();
    store.set_administrator("root", "$argon2id$x", 1).unwrap();
    for f in files_of(&loose) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn rollouts_move_once_by_compare_and_set_with_their_members_and_log() {
    use crate::rollout::{Rollout, RolloutState, Spec, Target};
    each(|s| {
        let (dev, adv) = setup(s);
        let spec = Spec {
            on_error: crate::rollout::OnError::Rollback { program_id: 7 },
            ..crate::rollout::test_spec()
        };
        let r = Rollout {
            id: 0,
            name: "r1".into(),
            target: Target::Advertisement(0),
            spec,
            state: RolloutState::Ready,
            current_group: 0,
            reason: None,
            created: 10,
            updated: 10,
        };
        let ad = Advertisement { name: "r1".into(), ..adv };
        let added = s.add_rollout(Some(&ad), &r).unwrap();
        let (id, Target::Advertisement(adv_id)) = (added.id, added.target) else { panic!() };
        let stored = s.rollouts().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0], added);
        assert_eq!(stored[0].spec, r.spec);
        assert!(s.advertisements().unwrap().iter().any(|a| a.id == adv_id && a.name == "r1"));
        let before = stored[0].clone();
        let next = Rollout { state: RolloutState::Running, updated: 20, ..before.clone() };
        assert!(s.update_rollout(&before, &next, "started").unwrap());
        // A second writer that read the same rollout moves nothing.
        let other = Rollout { state: RolloutState::Stopped, updated: 21, ..before.clone() };
        assert!(!s.update_rollout(&before, &other, "stopped").unwrap());
        assert_eq!(s.rollouts().unwrap()[0].state, RolloutState::Running);
        assert_eq!(s.add_rollout_members(id, &[(dev.id, 0)]).unwrap(), 1);
        assert_eq!(s.add_rollout_members(id, &[(dev.id, 1)]).unwrap(), 0, "a member stays");
        s.acknowledge_rollout_members(id, &[dev.id]).unwrap();
        let m = s.rollout_members().unwrap();
        assert_eq!((m.len(), m[0].group, m[0].acknowledged), (1, 0, true));
        let log: Vec<String> = s.rollout_events(id).unwrap().into_iter().map(|e| e.text).collect();
        assert_eq!(log, ["created (ready)", "started"]);
        // The progress samples, oldest first.
        let counts =
            |succeeded| crate::rollout::Counts { size: 4, succeeded, ..Default::default() };
        for (time, n) in [(30, 2), (20, 1)] {
            let sample = crate::rollout::Sample { time, group: 0, counts: counts(n) };
            s.add_rollout_sample(id, &sample).unwrap();
        }
        let got: Vec<(i64, u64)> =
            s.rollout_samples(id).unwrap().iter().map(|x| (x.time, x.counts.succeeded)).collect();
        assert_eq!(got, [(20, 1), (30, 2)]);
        assert!(s.rollout_samples(id + 1).unwrap().is_empty());

        // Resumed with a fixed version: a new advertisement, the old one canceled with its
        // open actions, the failures counted again; once only.
        let act = s.ensure_action(adv_id, dev.id, ActionStatus::Running, 25).unwrap();
        let paused = Rollout { state: RolloutState::Paused, updated: 30, ..next.clone() };
        assert!(s.update_rollout(&next, &paused, "paused").unwrap());
        let resumed = Rollout { state: RolloutState::Running, updated: 40, ..paused.clone() };
        let fixed = Advertisement { name: "r1-fixed".into(), ..ad.clone() };
        let new_id =
            s.replace_rollout_advertisement(&paused, &resumed, &fixed, "resumed").unwrap().unwrap();
        assert_ne!(new_id, adv_id);
        let stored = &s.rollouts().unwrap()[0];
        assert_eq!(
            (stored.state, stored.target),
            (RolloutState::Running, Target::Advertisement(new_id))
        );
        let ads = s.advertisements().unwrap();
        assert!(ads.iter().any(|a| a.id == adv_id && a.canceled));
        assert!(ads.iter().any(|a| a.id == new_id && !a.canceled && a.name == "r1-fixed"));
        let a = s.actions().unwrap().into_iter().find(|a| a.id == act.id).unwrap();
        assert_eq!(a.status, ActionStatus::Canceling);
        assert!(!s.rollout_members().unwrap()[0].acknowledged);
        let again = Advertisement { name: "r1-fixed-2".into(), ..ad.clone() };
        assert_eq!(s.replace_rollout_advertisement(&paused, &resumed, &again, "x").unwrap(), None);
        assert!(!s.advertisements().unwrap().iter().any(|a| a.name == "r1-fixed-2"));

        // A rollout of a held update deployment: no advertisement of its own, and it moves by
        // compare-and-set as well.
        let dep = updates::UpdateDeployment {
            id: 0,
            name: "wave".into(),
            collection_id: ad.collection_id,
            updates: vec![],
            available: 1,
            deadline: 1,
            spread: 0,
            reboot: updates::RebootPolicy::Suppress,
            window: None,
            created: 1,
            held: true,
        };
        let dep_id = s.add_update_deployment(&dep).unwrap();
        let ads_before = s.advertisements().unwrap().len();
        let u =
            Rollout { name: "r2".into(), target: Target::UpdateDeployment(dep_id), ..r.clone() };
        let u = s.add_rollout(None, &u).unwrap();
        assert_eq!(u.target, Target::UpdateDeployment(dep_id));
        assert_eq!(s.advertisements().unwrap().len(), ads_before);
        assert!(s.rollouts().unwrap().contains(&u));
        let running = Rollout { state: RolloutState::Running, updated: 50, ..u.clone() };
        assert!(s.update_rollout(&u, &running, "started").unwrap());
        assert!(!s.update_rollout(&u, &running, "started").unwrap(), "once");
        let fixed = Advertisement { name: "r2-x".into(), ..ad.clone() };
        assert_eq!(s.replace_rollout_advertisement(&running, &u, &fixed, "x").unwrap(), None);
    });
}

#[test]
fn api_tokens_are_kept_hashed_and_revoked_once_and_the_audit_trail_is_read_in_order() {
    use crate::api::{ApiToken, AuditEntry, Role, token_hash};
    each(|s| {
        let t = ApiToken {
            id: 0,
            name: "ci".into(),
            role: Role::Operator,
            tenant: None,
            token_sha256: token_hash("dmt_secret"),
            created: 5,
            expires: Some(100),
            revoked: None,
        };
        let id = s.add_api_token(&t).unwrap();
        assert!(s.add_api_token(&t).is_err(), "names and hashes are unique");
        let got = s.api_tokens().unwrap();
        assert_eq!(got, vec![ApiToken { id, ..t.clone() }]);
        assert_eq!(s.api_token_by_hash(&t.token_sha256).unwrap(), Some(got[0].clone()));
        assert_eq!(s.api_token_by_hash(&token_hash("dmt_other")).unwrap(), None);
        assert!(s.revoke_api_token("ci", 50).unwrap());
        assert!(!s.revoke_api_token("ci", 60).unwrap(), "once");
        assert_eq!(s.api_tokens().unwrap()[0].revoked, Some(50));
        let entry = |time, action: &str| AuditEntry {
            id: 0,
            time,
            actor: "token ci".into(),
            source: "127.0.0.1".into(),
            action: action.into(),
            target: "advertisement a".into(),
            before: None,
            after: Some("{}".into()),
        };
        s.add_audit(&entry(20, "second")).unwrap();
        s.add_audit(&entry(10, "first")).unwrap();
        let all: Vec<String> = s.audit(0, 10).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(all, ["first", "second"]);
        assert_eq!(s.audit(15, 10).unwrap().len(), 1);
        let newest = s.audit(0, 1).unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].action, "second", "a limit keeps the newest");
    });
}

#[test]
fn distribution_points_and_their_content_are_kept_by_package() {
    use crate::distribution::{DistributionPoint, DpContent, DpHealth, DpState};
    each(|s| {
        let (_, ad) = setup(s);
        let pid = s.programs().unwrap().iter().find(|p| p.id == ad.program_id).unwrap().package_id;
        let dp = DistributionPoint {
            id: 0,
            name: "site-a".into(),
            url: "https://dp-a:8443".into(),
            site: "A".into(),
            boundaries: vec!["10.1.0.0/16".into()],
            pull_from: None,
            rate_limit_kib: 512,
            window: Some("22:00-06:00".into()),
            token_sha256: "h".into(),
            link_key: "k".into(),
            created: 3,
            health: DpHealth::default(),
        };
        let id = s.add_dp(&dp).unwrap();
        assert!(s.add_dp(&dp).is_err(), "names and credentials are unique");
        let health = DpHealth {
            last_contact: Some(9),
            free_bytes: Some(1 << 40),
            content_errors: vec!["a: missing".into()],
            last_validated: Some(8),
        };
        s.set_dp_health(id, &health).unwrap();
        let got = s.dps().unwrap();
        assert_eq!(got, vec![DistributionPoint { id, health, ..dp }]);
        assert_eq!((got[0].token_sha256.as_str(), got[0].link_key.as_str()), ("h", "k"));
        let row = DpContent::pending(id, pid, "1.0.0.0", 10);
        s.put_dp_contents(std::slice::from_ref(&row)).unwrap();
        let installed = DpContent {
            state: DpState::Installed,
            last_copied: Some(12),
            refresh: 2,
            validate: 1,
            ..row.clone()
        };
        s.put_dp_contents(std::slice::from_ref(&installed)).unwrap();
        assert_eq!(s.dp_contents().unwrap(), vec![installed.clone()]);
        // A swap from what is no longer there writes nothing; from what is, writes.
        let failed = DpContent { state: DpState::InstallFailed, ..installed.clone() };
        assert_eq!(s.swap_dp_contents(&[(row.clone(), Some(failed.clone()))]).unwrap(), 0);
        assert_eq!(s.swap_dp_contents(&[(installed.clone(), Some(failed.clone()))]).unwrap(), 1);
        assert_eq!(s.dp_contents().unwrap(), vec![failed.clone()]);
        assert_eq!(s.swap_dp_contents(&[(installed, None)]).unwrap(), 0, "not deleted");
        assert_eq!(s.swap_dp_contents(&[(failed, None)]).unwrap(), 1);
        assert!(s.dp_contents().unwrap().is_empty());
        let other = DistributionPoint {
            name: "site-b".into(),
            token_sha256: "h2".into(),
            pull_from: Some(id),
            ..s.dps().unwrap()[0].clone()
        };
        let other = s.add_dp(&other).unwrap();
        s.put_dp_contents(std::slice::from_ref(&row)).unwrap();
        s.remove_dp(id).unwrap();
        let left = s.dps().unwrap();
        assert_eq!((left.len(), left[0].id, left[0].pull_from), (1, other, None));
        assert!(s.dp_contents().unwrap().is_empty(), "its rows go with it");
    });
}
