//! The PostgreSQL twin of the SQLite store's software update tables ([`UpdateStorage`]).

use tokio_postgres::Row;

use super::PgStore;
use super::rows::{Fail, corrupt, from_json, json};
use crate::error::Result;
use crate::model::updates::*;
use crate::storage::updates::UpdateStorage;
use dm_shared::updates::ScanReport;

const REPO_COLS: &str = "id, name, source, suite, codename, components, architectures, security, signed_by, metadata, release_date, generation, imported";
const UPDATE_COLS: &str = "id, repository_id, package, version, arch, source, section, priority, size, sha256, filename, security, superseded_by, approved, approved_by, added";
const STATE_COLS: &str = "device_id, update_id, state, installed, reason, updated";

fn repo_row(r: &Row) -> Result<UpdateRepository, Fail> {
    let id: i64 = r.try_get(0)?;
    let t = "update_repositories";
    Ok(UpdateRepository {
        id,
        name: r.try_get(1)?,
        source: r.try_get(2)?,
        suite: r.try_get(3)?,
        codename: r.try_get(4)?,
        components: from_json(t, id, "components", r.try_get(5)?)?,
        architectures: from_json(t, id, "architectures", r.try_get(6)?)?,
        security: r.try_get::<_, i64>(7)? != 0,
        signed_by: r.try_get(8)?,
        metadata: from_json(t, id, "metadata", r.try_get(9)?)?,
        release_date: r.try_get(10)?,
        generation: r.try_get(11)?,
        imported: r.try_get(12)?,
    })
}

fn update_row(r: &Row) -> Result<Update, Fail> {
    Ok(Update {
        id: r.try_get(0)?,
        repository_id: r.try_get(1)?,
        package: r.try_get(2)?,
        version: r.try_get(3)?,
        arch: r.try_get(4)?,
        source: r.try_get(5)?,
        section: r.try_get(6)?,
        priority: r.try_get(7)?,
        size: r.try_get::<_, i64>(8)?.max(0) as u64,
        sha256: r.try_get(9)?,
        filename: r.try_get(10)?,
        security: r.try_get::<_, i64>(11)? != 0,
        superseded_by: r.try_get(12)?,
        approved: r.try_get(13)?,
        approved_by: r.try_get(14)?,
        added: r.try_get(15)?,
    })
}

fn state_of(row: impl std::fmt::Display, s: &str) -> Result<UpdateState, Fail> {
    UpdateState::parse(s)
        .ok_or_else(|| corrupt("update_states", row, format!("state: {s:?} is no state")))
}

fn state_row(r: &Row) -> Result<DeviceUpdateState, Fail> {
    let (device_id, update_id): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    Ok(DeviceUpdateState {
        device_id,
        update_id,
        state: state_of(format!("{device_id}/{update_id}"), r.try_get(2)?)?,
        installed: r.try_get(3)?,
        reason: r.try_get(4)?,
        updated: r.try_get(5)?,
    })
}

fn reboot_of(id: i64, s: &str) -> Result<RebootPolicy, Fail> {
    RebootPolicy::parse(s).map_err(|e| corrupt("update_deployments", id, format!("reboot: {e}")))
}

impl PgStore {
    /// Runs `sql` with `params` and maps each row.
    fn query_map<T: Send + 'static>(
        &self,
        what: &str,
        sql: String,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T, Fail>,
    ) -> Result<Vec<T>> {
        let pool = self.pool.clone();
        self.run(what, async move {
            let c = pool.get().await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as _).collect();
            c.query(&sql, &refs).await?.iter().map(map).collect()
        })
    }
}

macro_rules! params {
    ($($x:expr),* $(,)?) => {
        vec![$(Box::new($x) as Box<dyn tokio_postgres::types::ToSql + Send + Sync>),*]
    };
}

impl UpdateStorage for PgStore {
    fn put_update_repository(&self, r: &UpdateRepository) -> Result<i64> {
        let r = r.clone();
        let pool = self.pool.clone();
        self.run("store an update repository", async move {
            let c = pool.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO update_repositories (name, source, suite, codename, components, architectures, security, signed_by, metadata, release_date, generation, imported) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (name) DO UPDATE SET source = excluded.source, suite = excluded.suite, codename = excluded.codename, \
                     components = excluded.components, architectures = excluded.architectures, security = excluded.security, \
                     signed_by = excluded.signed_by, metadata = excluded.metadata, release_date = excluded.release_date, generation = excluded.generation, imported = excluded.imported \
                     RETURNING id",
                    &[
                        &r.name,
                        &r.source,
                        &r.suite,
                        &r.codename,
                        &json(&r.components)?,
                        &json(&r.architectures)?,
                        &i64::from(r.security),
                        &r.signed_by,
                        &json(&r.metadata)?,
                        &r.release_date,
                        &r.generation,
                        &r.imported,
                    ],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn update_repositories(&self) -> Result<Vec<UpdateRepository>> {
        let sql = format!("SELECT {REPO_COLS} FROM update_repositories ORDER BY name");
        self.query_map("read update repositories", sql, params![], repo_row)
    }

    fn add_updates(&self, updates: &[Update]) -> Result<usize> {
        let updates = updates.to_vec();
        let pool = self.pool.clone();
        self.run("add updates", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let st = tx
                .prepare(
                    "INSERT INTO updates (repository_id, package, version, arch, source, section, priority, size, sha256, filename, security, approved, approved_by, added) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (repository_id, package, arch, version) DO NOTHING",
                )
                .await?;
            let mut n = 0u64;
            for u in &updates {
                n += tx
                    .execute(
                        &st,
                        &[
                            &u.repository_id,
                            &u.package,
                            &u.version,
                            &u.arch,
                            &u.source,
                            &u.section,
                            &u.priority,
                            &(u.size as i64),
                            &u.sha256,
                            &u.filename,
                            &i64::from(u.security),
                            &u.approved,
                            &u.approved_by,
                            &u.added,
                        ],
                    )
                    .await?;
            }
            tx.commit().await?;
            Ok(n as usize)
        })
    }

    fn updates(&self) -> Result<Vec<Update>> {
        let sql = format!("SELECT {UPDATE_COLS} FROM updates ORDER BY id");
        self.query_map("read updates", sql, params![], update_row)
    }

    fn set_superseded(&self, changes: &[(i64, Option<i64>)]) -> Result<()> {
        let changes = changes.to_vec();
        let pool = self.pool.clone();
        self.run("mark superseded updates", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let st = tx.prepare("UPDATE updates SET superseded_by = $2 WHERE id = $1").await?;
            for (id, by) in &changes {
                tx.execute(&st, &[id, by]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn approve_updates(&self, ids: &[i64], by: &str, now: i64) -> Result<usize> {
        let (ids, by) = (ids.to_vec(), by.to_string());
        let pool = self.pool.clone();
        self.run("approve updates", async move {
            let c = pool.get().await?;
            let n = c
                .execute(
                    "UPDATE updates SET approved = $2, approved_by = $3 WHERE id = ANY($1) AND approved IS NULL",
                    &[&ids, &now, &by],
                )
                .await?;
            Ok(n as usize)
        })
    }

    fn add_update_rule(&self, r: &UpdateRule) -> Result<i64> {
        let r = r.clone();
        let pool = self.pool.clone();
        self.run("add an approval rule", async move {
            let c = pool.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO update_rules (name, repository, security_only, sections, created) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[&r.name, &r.repository, &i64::from(r.security_only), &json(&r.sections)?, &r.created],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn update_rules(&self) -> Result<Vec<UpdateRule>> {
        let sql = "SELECT id, name, repository, security_only, sections, created FROM update_rules ORDER BY id";
        self.query_map("read approval rules", sql.into(), params![], |r| {
            let id: i64 = r.try_get(0)?;
            Ok(UpdateRule {
                id,
                name: r.try_get(1)?,
                repository: r.try_get(2)?,
                security_only: r.try_get::<_, i64>(3)? != 0,
                sections: from_json("update_rules", id, "sections", r.try_get(4)?)?,
                created: r.try_get(5)?,
            })
        })
    }

    fn add_update_deployment(&self, d: &UpdateDeployment) -> Result<i64> {
        let d = d.clone();
        let pool = self.pool.clone();
        self.run("add an update deployment", async move {
            let c = pool.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO update_deployments (name, collection_id, updates, available, deadline, spread, reboot, created, maintenance_window, held) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    &[
                        &d.name,
                        &d.collection_id,
                        &json(&d.updates)?,
                        &d.available,
                        &d.deadline,
                        &d.spread,
                        &d.reboot.as_str(),
                        &d.created,
                        &d.window.map(|w| w.to_string()),
                        &i64::from(d.held),
                    ],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn update_deployments(&self) -> Result<Vec<UpdateDeployment>> {
        let sql = "SELECT id, name, collection_id, updates, available, deadline, spread, reboot, created, maintenance_window, held FROM update_deployments ORDER BY id";
        self.query_map("read update deployments", sql.into(), params![], |r| {
            let id: i64 = r.try_get(0)?;
            Ok(UpdateDeployment {
                id,
                name: r.try_get(1)?,
                collection_id: r.try_get(2)?,
                updates: from_json("update_deployments", id, "updates", r.try_get(3)?)?,
                available: r.try_get(4)?,
                deadline: r.try_get(5)?,
                spread: r.try_get(6)?,
                reboot: reboot_of(id, r.try_get(7)?)?,
                created: r.try_get(8)?,
                held: r.try_get::<_, i64>(10)? != 0,
                window: match r.try_get::<_, Option<String>>(9)? {
                    Some(w) => Some(crate::model::MaintenanceWindow::parse(&w).map_err(|e| {
                        corrupt("update_deployments", id, format!("maintenance_window: {e}"))
                    })?),
                    None => None,
                },
            })
        })
    }

    fn apply_update_scan(
        &self,
        device_id: i64,
        report: &ScanReport,
        now: i64,
    ) -> Result<Option<u64>> {
        let report = report.clone();
        let pool = self.pool.clone();
        self.run("store a device's scan", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            // The device's scan row, locked: two reports of one device are applied in turn.
            tx.execute(
                "INSERT INTO update_scans (device_id, serial, catalog, scanned) VALUES ($1, 0, '', $2) ON CONFLICT (device_id) DO NOTHING",
                &[&device_id, &now],
            )
            .await?;
            let serial: i64 = tx
                .query_one("SELECT serial FROM update_scans WHERE device_id = $1 FOR UPDATE", &[&device_id])
                .await?
                .try_get(0)?;
            let serial = serial.max(0) as u64;
            if report.base != 0 && report.base != serial {
                return Ok(None);
            }
            if report.base == 0 {
                tx.execute("DELETE FROM update_states WHERE device_id = $1", &[&device_id]).await?;
            }
            if !report.removed.is_empty() {
                tx.execute(
                    "DELETE FROM update_states WHERE device_id = $1 AND update_id = ANY($2)",
                    &[&device_id, &report.removed],
                )
                .await?;
            }
            let put = tx
                .prepare(
                    "INSERT INTO update_states (device_id, update_id, state, installed, reason, updated) \
                     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM updates WHERE id = $2) \
                     ON CONFLICT (device_id, update_id) DO UPDATE SET state = excluded.state, installed = excluded.installed, \
                     reason = excluded.reason, updated = excluded.updated",
                )
                .await?;
            for r in &report.rows {
                tx.execute(&put, &[&device_id, &r.id, &r.state.as_str(), &r.installed, &r.reason, &now])
                    .await?;
            }
            let next = serial + 1;
            tx.execute(
                "UPDATE update_scans SET serial = $2, catalog = $3, scanned = $4 WHERE device_id = $1",
                &[&device_id, &(next as i64), &report.catalog, &now],
            )
            .await?;
            tx.execute(COUNT_STATES_SQL, &[&device_id]).await?;
            tx.commit().await?;
            Ok(Some(next))
        })
    }

    fn update_states(&self, device_id: Option<i64>) -> Result<Vec<DeviceUpdateState>> {
        match device_id {
            Some(d) => self.query_map(
                "read update states",
                format!(
                    "SELECT {STATE_COLS} FROM update_states WHERE device_id = $1 ORDER BY update_id"
                ),
                params![d],
                state_row,
            ),
            None => self.query_map(
                "read update states",
                format!("SELECT {STATE_COLS} FROM update_states ORDER BY device_id, update_id"),
                params![],
                state_row,
            ),
        }
    }

    fn update_progress(&self, devices: &[i64], updates: &[i64]) -> Result<UpdateProgress> {
        let states = self.query_map(
            "read update progress",
            format!("SELECT {STATE_COLS} FROM update_states WHERE device_id = ANY($1) AND update_id = ANY($2) ORDER BY device_id, update_id"),
            params![devices.to_vec(), updates.to_vec()],
            state_row,
        )?;
        let scanned = self.query_map(
            "read update progress",
            "SELECT device_id, scanned FROM update_scans WHERE device_id = ANY($1) ORDER BY device_id".into(),
            params![devices.to_vec()],
            |r| Ok((r.try_get(0)?, r.try_get(1)?)),
        )?;
        Ok(UpdateProgress { states, scanned })
    }

    fn update_state_counts(&self) -> Result<Vec<(i64, UpdateState, i64)>> {
        let sql = "SELECT update_id, state, count(*) FROM update_states GROUP BY update_id, state ORDER BY update_id, state";
        self.query_map("count update states", sql.into(), params![], |r| {
            let id: i64 = r.try_get(0)?;
            Ok((id, state_of(id, r.try_get(1)?)?, r.try_get(2)?))
        })
    }

    fn device_count(&self) -> Result<i64> {
        let v = self.query_map(
            "count devices",
            "SELECT count(*) FROM devices".into(),
            params![],
            |r| Ok(r.try_get::<_, i64>(0)?),
        )?;
        Ok(v.first().copied().unwrap_or(0))
    }

    fn update_scans(&self) -> Result<Vec<UpdateScan>> {
        let sql = "SELECT device_id, serial, catalog, scanned, required, installed, unknown, in_progress, failed, pending_reboot \
                   FROM update_scans WHERE serial > 0 ORDER BY device_id";
        self.query_map("read scans", sql.into(), params![], |r| {
            Ok(UpdateScan {
                device_id: r.try_get(0)?,
                serial: r.try_get::<_, i64>(1)?.max(0) as u64,
                catalog: r.try_get(2)?,
                scanned: r.try_get(3)?,
                counts: StateCounts {
                    required: r.try_get(4)?,
                    installed: r.try_get(5)?,
                    unknown: r.try_get(6)?,
                    in_progress: r.try_get(7)?,
                    failed: r.try_get(8)?,
                    pending_reboot: r.try_get(9)?,
                },
            })
        })
    }
}
