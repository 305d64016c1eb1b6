//! The PostgreSQL twin of the SQLite store's rollout tables ([`RolloutStorage`]).

use tokio_postgres::Row;

use super::PgStore;
use super::rows::{Fail, from_json, json, parsed};
use crate::error::Result;
use crate::model::Advertisement;
use crate::rollout::{Counts, Event, Member, Rollout, Sample, Target};
use crate::storage::rollouts::RolloutStorage;

const COLS: &str = "id, name, advertisement_id, spec, state, current_group, reason, created, updated, update_deployment_id";

fn rollout_row(r: &Row) -> Result<Rollout, Fail> {
    let id: i64 = r.try_get(0)?;
    let state: String = r.try_get(4)?;
    Ok(Rollout {
        id,
        name: r.try_get(1)?,
        target: parsed(
            "rollouts",
            id,
            "advertisement_id",
            Target::of_row(r.try_get(2)?, r.try_get(9)?).ok_or("neither or both of its targets"),
        )?,
        spec: from_json("rollouts", id, "spec", r.try_get(3)?)?,
        state: parsed("rollouts", id, "state", state.parse())?,
        current_group: r.try_get(5)?,
        reason: r.try_get(6)?,
        created: r.try_get(7)?,
        updated: r.try_get(8)?,
    })
}

/// Inserts a rollout's advertisement; its id.
async fn insert_advertisement(
    tx: &tokio_postgres::Transaction<'_>,
    a: &Advertisement,
) -> Result<i64, Fail> {
    Ok(tx
        .query_one(
            "INSERT INTO advertisements (name, program_id, collection_id, kind, start_time, expires, maintenance_window, created, canceled, rerun, allow_downgrade) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10) RETURNING id",
            &[
                &a.name,
                &a.program_id,
                &a.collection_id,
                &a.kind.as_str(),
                &a.start_time,
                &a.expires,
                &a.window.map(|w| w.to_string()),
                &a.created,
                &a.rerun.as_str(),
                &i64::from(a.allow_downgrade),
            ],
        )
        .await?
        .try_get(0)?)
}

/// Moves a rollout from `b` to `r` if it is still where `b` says (state, group,
/// advertisement), logging `event`; whether it moved.
async fn move_rollout(
    tx: &tokio_postgres::Transaction<'_>,
    b: &Rollout,
    r: &Rollout,
    event: &str,
) -> Result<bool, Fail> {
    let moved = tx
        .execute(
            "UPDATE rollouts SET state = $2, current_group = $3, reason = $4, updated = $5 WHERE id = $1 AND state = $6 AND current_group = $7 AND advertisement_id IS NOT DISTINCT FROM $8",
            &[&r.id, &r.state.as_str(), &r.current_group, &r.reason, &r.updated, &b.state.as_str(), &b.current_group, &b.target.advertisement()],
        )
        .await?
        == 1;
    if moved {
        tx.execute(
            "INSERT INTO rollout_events (rollout_id, time, text) VALUES ($1, $2, $3)",
            &[&r.id, &r.updated, &event],
        )
        .await?;
    }
    Ok(moved)
}

impl RolloutStorage for PgStore {
    fn add_rollout(&self, adv: Option<&Advertisement>, r: &Rollout) -> Result<Rollout> {
        let (a, r) = (adv.cloned(), r.clone());
        let pool = self.pool.clone();
        self.run("add a rollout", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let target = match &a {
                Some(a) => Target::Advertisement(insert_advertisement(&tx, a).await?),
                None => r.target,
            };
            let id: i64 = tx
                .query_one(
                    "INSERT INTO rollouts (name, advertisement_id, update_deployment_id, spec, state, current_group, reason, created, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    &[&r.name, &target.advertisement(), &target.update_deployment(), &json(&r.spec)?, &r.state.as_str(), &r.current_group, &r.reason, &r.created, &r.updated],
                )
                .await?
                .try_get(0)?;
            tx.execute(
                "INSERT INTO rollout_events (rollout_id, time, text) VALUES ($1, $2, $3)",
                &[&id, &r.created, &format!("created ({})", r.state.as_str())],
            )
            .await?;
            tx.commit().await?;
            Ok(Rollout { id, target, ..r })
        })
    }

    fn rollouts(&self) -> Result<Vec<Rollout>> {
        let pool = self.pool.clone();
        self.run("read rollouts", async move {
            let c = pool.get().await?;
            let sql = format!("SELECT {COLS} FROM rollouts ORDER BY id");
            c.query(&sql, &[]).await?.iter().map(rollout_row).collect()
        })
    }

    fn update_rollout(&self, before: &Rollout, r: &Rollout, event: &str) -> Result<bool> {
        let (b, r, event) = (before.clone(), r.clone(), event.to_string());
        let pool = self.pool.clone();
        self.run("update a rollout", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let moved = move_rollout(&tx, &b, &r, &event).await?;
            tx.commit().await?;
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
        let (b, r, a, event) = (before.clone(), r.clone(), a.clone(), event.to_string());
        let pool = self.pool.clone();
        self.run("give a rollout a new version", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            if !move_rollout(&tx, &b, &r, &event).await? {
                return Ok(None);
            }
            let adv = insert_advertisement(&tx, &a).await?;
            tx.execute("UPDATE rollouts SET advertisement_id = $2 WHERE id = $1", &[&r.id, &adv])
                .await?;
            tx.execute("UPDATE rollout_members SET acknowledged = 0 WHERE rollout_id = $1", &[&r.id])
                .await?;
            tx.execute("UPDATE advertisements SET canceled = 1 WHERE id = $1", &[&old]).await?;
            tx.execute(
                "UPDATE actions SET status = 'canceling', updated = $2 WHERE advertisement_id = $1 AND status IN ('waiting', 'scheduled', 'retrieved', 'running')",
                &[&old, &r.updated],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(adv))
        })
    }

    fn add_rollout_members(&self, rollout_id: i64, members: &[(i64, i64)]) -> Result<usize> {
        let members = members.to_vec();
        let pool = self.pool.clone();
        self.run("add rollout members", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let st = tx
                .prepare(
                    "INSERT INTO rollout_members (rollout_id, device_id, group_index) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .await?;
            let mut added = 0;
            for (device, group) in &members {
                added += tx.execute(&st, &[&rollout_id, device, group]).await? as usize;
            }
            tx.commit().await?;
            Ok(added)
        })
    }

    fn rollout_members(&self) -> Result<Vec<Member>> {
        let pool = self.pool.clone();
        self.run("read rollout members", async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT rollout_id, device_id, group_index, acknowledged FROM rollout_members ORDER BY rollout_id, group_index, device_id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Member {
                        rollout_id: r.try_get(0)?,
                        device_id: r.try_get(1)?,
                        group: r.try_get(2)?,
                        acknowledged: r.try_get::<_, i64>(3)? != 0,
                    })
                })
                .collect()
        })
    }

    fn acknowledge_rollout_members(&self, rollout_id: i64, devices: &[i64]) -> Result<()> {
        let devices = devices.to_vec();
        let pool = self.pool.clone();
        self.run("acknowledge rollout members", async move {
            let c = pool.get().await?;
            c.execute(
                "UPDATE rollout_members SET acknowledged = 1 WHERE rollout_id = $1 AND device_id = ANY($2)",
                &[&rollout_id, &devices],
            )
            .await?;
            Ok(())
        })
    }

    fn rollout_events(&self, rollout_id: i64) -> Result<Vec<Event>> {
        let pool = self.pool.clone();
        self.run("read a rollout's log", async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT time, text FROM rollout_events WHERE rollout_id = $1 ORDER BY id",
                    &[&rollout_id],
                )
                .await?;
            rows.iter().map(|r| Ok(Event { time: r.try_get(0)?, text: r.try_get(1)? })).collect()
        })
    }

    fn add_rollout_sample(&self, rollout_id: i64, s: &Sample) -> Result<()> {
        let s = *s;
        let pool = self.pool.clone();
        self.run("record a rollout's progress", async move {
            let c = pool.get().await?;
            let n = |v: u64| v as i64;
            let k = &s.counts;
            c.execute(
                "INSERT INTO rollout_samples (rollout_id, time, group_index, size, installing, soaking, succeeded, failed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&rollout_id, &s.time, &s.group, &n(k.size), &n(k.installing), &n(k.soaking), &n(k.succeeded), &n(k.failed)],
            )
            .await?;
            Ok(())
        })
    }

    fn rollout_samples(&self, rollout_id: i64) -> Result<Vec<Sample>> {
        let pool = self.pool.clone();
        self.run("read a rollout's progress", async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT time, group_index, size, installing, soaking, succeeded, failed FROM rollout_samples WHERE rollout_id = $1 ORDER BY time, group_index",
                    &[&rollout_id],
                )
                .await?;
            let n = |r: &Row, i: usize| r.try_get::<_, i64>(i).map(|v| v.max(0) as u64);
            rows.iter()
                .map(|r| {
                    Ok(Sample {
                        time: r.try_get(0)?,
                        group: r.try_get(1)?,
                        counts: Counts {
                            size: n(r, 2)?,
                            installing: n(r, 3)?,
                            soaking: n(r, 4)?,
                            succeeded: n(r, 5)?,
                            failed: n(r, 6)?,
                        },
                    })
                })
                .collect()
        })
    }
}
