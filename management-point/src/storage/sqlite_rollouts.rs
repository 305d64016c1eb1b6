//! The SQLite store's rollout tables ([`RolloutStorage`]).

use rusqlite::params;

use super::SqliteStore;
use super::rollouts::RolloutStorage;
use super::rows::parsed;
use crate::error::Result;
use crate::model::Advertisement;
use crate::rollout::{Event, Member, Rollout};

const COLS: &str =
    "id, name, advertisement_id, spec, state, current_group, reason, created, updated";

fn rollout_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Rollout> {
    let id = r.get(0)?;
    let state: String = r.get(4)?;
    Ok(Rollout {
        id,
        name: r.get(1)?,
        advertisement_id: r.get(2)?,
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
        "UPDATE rollouts SET state = ?2, current_group = ?3, reason = ?4, updated = ?5 WHERE id = ?1 AND state = ?6 AND current_group = ?7 AND advertisement_id = ?8",
        params![r.id, r.state.as_str(), r.current_group, r.reason, r.updated, b.state.as_str(), b.current_group, b.advertisement_id],
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
    fn add_rollout(&self, a: &Advertisement, r: &Rollout) -> Result<(i64, i64)> {
        let spec = serde_json::to_string(&r.spec).unwrap_or_default();
        self.with("add a rollout", |c| {
            let tx = c.transaction()?;
            let adv = insert_advertisement(&tx, a)?;
            tx.execute(
                "INSERT INTO rollouts (name, advertisement_id, spec, state, current_group, reason, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.name, adv, spec, r.state.as_str(), r.current_group, r.reason, r.created, r.updated],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO rollout_events (rollout_id, time, text) VALUES (?1, ?2, ?3)",
                params![id, r.created, format!("created ({})", r.state.as_str())],
            )?;
            tx.commit()?;
            Ok((adv, id))
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
        self.with("give a rollout a new version", |c| {
            let tx = c.transaction()?;
            if !move_rollout(&tx, before, r, event)? {
                return Ok(None);
            }
            let adv = insert_advertisement(&tx, a)?;
            tx.execute("UPDATE rollouts SET advertisement_id = ?2 WHERE id = ?1", params![r.id, adv])?;
            tx.execute("UPDATE rollout_members SET acknowledged = 0 WHERE rollout_id = ?1", [r.id])?;
            let old = before.advertisement_id;
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
