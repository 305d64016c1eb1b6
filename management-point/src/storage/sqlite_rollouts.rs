//! The SQLite store's rollout tables ([`RolloutStorage`]).

use rusqlite::params;

use super::SqliteStore;
use super::rollouts::RolloutStorage;
use super::rows::parsed;
use crate::error::Result;
use crate::model::Advertisement;
use crate::rollout::{Counts, Event, Member, Rollout, Sample, Target};

const COLS: &str = "id, name, advertisement_id, spec, state, current_group, reason, created, updated, update_deployment_id";

fn rollout_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Rollout> {
    let id = r.get(0)?;
    let state: String = r.get(4)?;
    Ok(Rollout {
        id,
        name: r.get(1)?,
        target: parsed(
            "rollouts",
            id,
            "advertisement_id",
            Target::of_row(r.get(2)?, r.get(9)?).ok_or("neither or both of its targets"),
        )?,
        spec: parsed("rollouts", id, "spec", serde_json::from_str(&r.get::<_, String>(3)?))?,
        state: parsed("rollouts", id, "state", state.parse())?,
        current_group: r.get(5)?,
        reason: r.get(6)?,
        created: r.get(7)?,
        updated: r.get(8)?,
    })
}

/// Inserts a rollout's advertisement; its id.
fn insert_advertisement(
    tx: &rusqlite::Transaction<'_>,
    a: &Advertisement,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO advertisements (name, program_id, collection_id, kind, start_time, expires, maintenance_window, created, canceled, rerun, allow_downgrade)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
        params![a.name, a.program_id, a.collection_id, a.kind.as_str(), a.start_time, a.expires, a.window.map(|w| w.to_string()), a.created, a.rerun.as_str(), a.allow_downgrade],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Moves a rollout from `b` to `r` if it is still where `b` says (state, group,
/// advertisement), logging `event`; whether it moved.
fn move_rollout(
    tx: &rusqlite::Transaction<'_>,
    b: &Rollout,
    r: &Rollout,
    event: &str,
) -> rusqlite::Result<bool> {
    let moved = tx.execute(
        "UPDATE rollouts SET state = ?2, current_group = ?3, reason = ?4, updated = ?5 WHERE id = ?1 AND state = ?6 AND current_group = ?7 AND advertisement_id IS ?8",
        params![r.id, r.state.as_str(), r.current_group, r.reason, r.updated, b.state.as_str(), b.current_group, b.target.advertisement()],
    )? == 1;
    if moved {
        tx.execute(
            "INSERT INTO rollout_events (rollout_id, time, text) VALUES (?1, ?2, ?3)",
            params![r.id, r.updated, event],
        )?;
    }
    Ok(moved)
}

impl RolloutStorage for SqliteStore {
    fn add_rollout(&self, adv: Option<&Advertisement>, r: &Rollout) -> Result<Rollout> {
        let spec = serde_json::to_string(&r.spec).unwrap_or_default();
        self.with("add a rollout", |c| {
            let tx = c.transaction()?;
            let target = match adv {
                Some(a) => Target::Advertisement(insert_advertisement(&tx, a)?),
                None => r.target,
            };
            tx.execute(
                "INSERT INTO rollouts (name, advertisement_id, update_deployment_id, spec, state, current_group, reason, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![r.name, target.advertisement(), target.update_deployment(), spec, r.state.as_str(), r.current_group, r.reason, r.created, r.updated],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO rollout_events (rollout_id, time, text) VALUES (?1, ?2, ?3)",
                params![id, r.created, format!("created ({})", r.state.as_str())],
            )?;
            tx.commit()?;
            Ok(Rollout { id, target, ..r.clone() })
        })
    }

    fn rollouts(&self) -> Result<Vec<Rollout>> {
        self.with("read rollouts", |c| {
            let mut st = c.prepare(&format!("SELECT {COLS} FROM rollouts ORDER BY id"))?;
            st.query_map([], rollout_row)?.collect()
        })
    }

    fn update_rollout(&self, before: &Rollout, r: &Rollout, event: &str) -> Result<bool> {
        self.with("update a rollout", |c| {
            let tx = c.transaction()?;
            let moved = move_rollout(&tx, before, r, event)?;
            tx.commit()?;
            Ok(moved)
        })
    }

    fn replace_rollout_advertisement(
        &self,
        before: &Rollout,
        r: &Rollout,
        a: &Advertisement,
        event: &str,
    ) -> Result<Option<i64>> {
        let Some(old) = before.target.advertisement() else { return Ok(None) };
        self.with("give a rollout a new version", |c| {
            let tx = c.transaction()?;
            if !move_rollout(&tx, before, r, event)? {
                return Ok(None);
            }
            let adv = insert_advertisement(&tx, a)?;
            tx.execute("UPDATE rollouts SET advertisement_id = ?2 WHERE id = ?1", params![r.id, adv])?;
            tx.execute("UPDATE rollout_members SET acknowledged = 0 WHERE rollout_id = ?1", [r.id])?;
            tx.execute("UPDATE advertisements SET canceled = 1 WHERE id = ?1", [old])?;
            tx.execute(
                "UPDATE actions SET status = 'canceling', updated = ?2 WHERE advertisement_id = ?1 AND status IN ('waiting', 'scheduled', 'retrieved', 'running')",
                params![old, r.updated],
            )?;
            tx.commit()?;
            Ok(Some(adv))
        })
    }

    fn add_rollout_members(&self, rollout_id: i64, members: &[(i64, i64)]) -> Result<usize> {
        self.with("add rollout members", |c| {
            let tx = c.transaction()?;
            let mut added = 0;
            {
                let mut st = tx.prepare(
                    "INSERT OR IGNORE INTO rollout_members (rollout_id, device_id, group_index) VALUES (?1, ?2, ?3)",
                )?;
                for (device, group) in members {
                    added += st.execute(params![rollout_id, device, group])?;
                }
            }
            tx.commit()?;
            Ok(added)
        })
    }

    fn rollout_members(&self) -> Result<Vec<Member>> {
        self.with("read rollout members", |c| {
            let mut st = c.prepare(
                "SELECT rollout_id, device_id, group_index, acknowledged FROM rollout_members ORDER BY rollout_id, group_index, device_id",
            )?;
            st.query_map([], |r| {
                Ok(Member {
                    rollout_id: r.get(0)?,
                    device_id: r.get(1)?,
                    group: r.get(2)?,
                    acknowledged: r.get::<_, i64>(3)? != 0,
                })
            })?
            .collect()
        })
    }

    fn acknowledge_rollout_members(&self, rollout_id: i64, devices: &[i64]) -> Result<()> {
        self.with("acknowledge rollout members", |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "UPDATE rollout_members SET acknowledged = 1 WHERE rollout_id = ?1 AND device_id = ?2",
                )?;
                for d in devices {
                    st.execute(params![rollout_id, d])?;
                }
            }
            tx.commit()
        })
    }

    fn add_rollout_sample(&self, rollout_id: i64, s: &Sample) -> Result<()> {
        let c = &s.counts;
        let n = |v: u64| v as i64;
        self.with("record a rollout's progress", |conn| {
            conn.execute(
                "INSERT INTO rollout_samples (rollout_id, time, group_index, size, installing, soaking, succeeded, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![rollout_id, s.time, s.group, n(c.size), n(c.installing), n(c.soaking), n(c.succeeded), n(c.failed)],
            )?;
            Ok(())
        })
    }

    fn rollout_samples(&self, rollout_id: i64) -> Result<Vec<Sample>> {
        self.with("read a rollout's progress", |c| {
            let mut st = c.prepare(
                "SELECT time, group_index, size, installing, soaking, succeeded, failed FROM rollout_samples WHERE rollout_id = ?1 ORDER BY time, group_index",
            )?;
            let n = |r: &rusqlite::Row<'_>, i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            st.query_map([rollout_id], |r| {
                Ok(Sample {
                    time: r.get(0)?,
                    group: r.get(1)?,
                    counts: Counts {
                        size: n(r, 2)?,
                        installing: n(r, 3)?,
                        soaking: n(r, 4)?,
                        succeeded: n(r, 5)?,
                        failed: n(r, 6)?,
                    },
                })
            })?
            .collect()
        })
    }

    fn rollout_events(&self, rollout_id: i64) -> Result<Vec<Event>> {
        self.with("read a rollout's log", |c| {
            let mut st = c.prepare(
                "SELECT time, text FROM rollout_events WHERE rollout_id = ?1 ORDER BY id",
            )?;
            st.query_map([rollout_id], |r| Ok(Event { time: r.get(0)?, text: r.get(1)? }))?
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::sqlite::MIGRATIONS;
    use super::*;
    use crate::rollout::RolloutState;

    /// Migration 13 makes the rollout tables again: a database of version 12 holding a
    /// running rollout keeps it, its members and its log, every foreign key whole.
    #[test]
    fn a_version_12_database_keeps_its_rollouts_through_migration_13() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dmmp.db");
        let spec = crate::rollout::test_spec();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA foreign_keys=ON;").unwrap();
            for m in &MIGRATIONS[..12] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 12).unwrap();
            c.execute_batch(
                "INSERT INTO devices (id, tenant, controller_id, created, registered_by) VALUES (1, 'DEFAULT', 'd1', 1, 'admin');
                 INSERT INTO packages (id, name, version, kind, created) VALUES (1, 'p', '1.0.0.0', 'software-distribution', 1);
                 INSERT INTO programs (id, package_id, name, command, platforms, max_run_time, device_class) VALUES (1, 1, 'run', './r', '[]', 60, 'mobile');
                 INSERT INTO collections (id, name, rule) VALUES (1, 'all', 'all');
                 INSERT INTO advertisements (id, name, program_id, collection_id, kind, start_time, created) VALUES (1, 'r1', 1, 1, 'mandatory', 1, 1);",
            )
            .unwrap();
            c.execute(
                "INSERT INTO rollouts (id, name, advertisement_id, spec, state, current_group, created, updated) VALUES (1, 'r1', 1, ?1, 'running', 0, 1, 2)",
                [serde_json::to_string(&spec).unwrap()],
            )
            .unwrap();
            c.execute_batch(
                "INSERT INTO rollout_members VALUES (1, 1, 0, 1);
                 INSERT INTO rollout_events (rollout_id, time, text) VALUES (1, 1, 'created (ready)');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let r = store.rollouts().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].target, r[0].state, &r[0].spec),
            (Target::Advertisement(1), RolloutState::Running, &spec)
        );
        let m = store.rollout_members().unwrap();
        assert_eq!((m[0].rollout_id, m[0].device_id, m[0].acknowledged), (1, 1, true));
        assert_eq!(store.rollout_events(1).unwrap()[0].text, "created (ready)");
        drop(store);
        let c = Connection::open(&path).unwrap();
        let broken: i64 =
            c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
        assert_eq!(broken, 0);
        let held: i64 = c
            .query_row(
                "SELECT count(*) FROM pragma_table_info('update_deployments') WHERE name = 'held'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(held, 1);
    }
}
