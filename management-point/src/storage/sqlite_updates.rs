//! The SQLite store's software update tables ([`UpdateStorage`]).

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::parsed;
use super::updates::UpdateStorage;
use crate::error::Result;
use crate::model::updates::*;
use dm_shared::updates::ScanReport;

const REPO_COLS: &str = "id, name, source, suite, codename, components, architectures, security, signed_by, metadata, release_date, generation, imported";
const UPDATE_COLS: &str = "id, repository_id, package, version, arch, source, section, priority, size, sha256, filename, security, superseded_by, approved, approved_by, added";
const SCAN_COLS: &str = "device_id, serial, catalog, scanned, required, installed, unknown, in_progress, failed, pending_reboot";
const STATE_COLS: &str = "device_id, update_id, state, installed, reason, updated";

fn json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    id: i64,
    column: &str,
    text: &str,
) -> rusqlite::Result<T> {
    parsed(table, id, column, serde_json::from_str(text))
}

fn repo_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UpdateRepository> {
    let id = r.get(0)?;
    Ok(UpdateRepository {
        id,
        name: r.get(1)?,
        source: r.get(2)?,
        suite: r.get(3)?,
        codename: r.get(4)?,
        components: json("update_repositories", id, "components", &r.get::<_, String>(5)?)?,
        architectures: json("update_repositories", id, "architectures", &r.get::<_, String>(6)?)?,
        security: r.get::<_, i64>(7)? != 0,
        signed_by: r.get(8)?,
        metadata: json("update_repositories", id, "metadata", &r.get::<_, String>(9)?)?,
        release_date: r.get(10)?,
        generation: r.get(11)?,
        imported: r.get(12)?,
    })
}

fn update_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Update> {
    Ok(Update {
        id: r.get(0)?,
        repository_id: r.get(1)?,
        package: r.get(2)?,
        version: r.get(3)?,
        arch: r.get(4)?,
        source: r.get(5)?,
        section: r.get(6)?,
        priority: r.get(7)?,
        size: r.get::<_, i64>(8)?.max(0) as u64,
        sha256: r.get(9)?,
        filename: r.get(10)?,
        security: r.get::<_, i64>(11)? != 0,
        superseded_by: r.get(12)?,
        approved: r.get(13)?,
        approved_by: r.get(14)?,
        added: r.get(15)?,
    })
}

fn state_of(table: &'static str, row: String, s: &str) -> rusqlite::Result<UpdateState> {
    parsed(table, row, "state", UpdateState::parse(s).ok_or_else(|| format!("{s:?} is no state")))
}

fn state_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceUpdateState> {
    let (device_id, update_id): (i64, i64) = (r.get(0)?, r.get(1)?);
    Ok(DeviceUpdateState {
        device_id,
        update_id,
        state: state_of(
            "update_states",
            format!("{device_id}/{update_id}"),
            &r.get::<_, String>(2)?,
        )?,
        installed: r.get(3)?,
        reason: r.get(4)?,
        updated: r.get(5)?,
    })
}

fn rule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UpdateRule> {
    let id = r.get(0)?;
    Ok(UpdateRule {
        id,
        name: r.get(1)?,
        repository: r.get(2)?,
        security_only: r.get::<_, i64>(3)? != 0,
        sections: json("update_rules", id, "sections", &r.get::<_, String>(4)?)?,
        created: r.get(5)?,
    })
}

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UpdateDeployment> {
    let id = r.get(0)?;
    let reboot: String = r.get(7)?;
    Ok(UpdateDeployment {
        id,
        name: r.get(1)?,
        collection_id: r.get(2)?,
        updates: json("update_deployments", id, "updates", &r.get::<_, String>(3)?)?,
        available: r.get(4)?,
        deadline: r.get(5)?,
        spread: r.get(6)?,
        reboot: parsed("update_deployments", id, "reboot", RebootPolicy::parse(&reboot))?,
        created: r.get(8)?,
        held: r.get::<_, i64>(10)? != 0,
        window: match r.get::<_, Option<String>>(9)? {
            Some(w) => Some(parsed(
                "update_deployments",
                id,
                "maintenance_window",
                crate::model::MaintenanceWindow::parse(&w),
            )?),
            None => None,
        },
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl UpdateStorage for SqliteStore {
    fn put_update_repository(&self, r: &UpdateRepository) -> Result<i64> {
        self.with("store an update repository", |c| {
            c.execute(
                "INSERT INTO update_repositories (name, source, suite, codename, components, architectures, security, signed_by, metadata, release_date, generation, imported) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (name) DO UPDATE SET source = excluded.source, suite = excluded.suite, codename = excluded.codename, \
                 components = excluded.components, architectures = excluded.architectures, security = excluded.security, \
                 signed_by = excluded.signed_by, metadata = excluded.metadata, release_date = excluded.release_date, generation = excluded.generation, imported = excluded.imported",
                params![
                    r.name,
                    r.source,
                    r.suite,
                    r.codename,
                    to_json(&r.components),
                    to_json(&r.architectures),
                    i64::from(r.security),
                    r.signed_by,
                    to_json(&r.metadata),
                    r.release_date,
                    r.generation,
                    r.imported
                ],
            )?;
            c.query_row("SELECT id FROM update_repositories WHERE name = ?1", [&r.name], |r| r.get(0))
        })
    }

    fn update_repositories(&self) -> Result<Vec<UpdateRepository>> {
        self.with("read update repositories", |c| {
            let mut st =
                c.prepare(&format!("SELECT {REPO_COLS} FROM update_repositories ORDER BY name"))?;
            st.query_map([], repo_row)?.collect()
        })
    }

    fn add_updates(&self, updates: &[Update]) -> Result<usize> {
        self.with("add updates", |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            {
                let mut st = tx.prepare(
                    "INSERT OR IGNORE INTO updates (repository_id, package, version, arch, source, section, priority, size, sha256, filename, security, approved, approved_by, added) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?;
                for u in updates {
                    n += st.execute(params![
                        u.repository_id,
                        u.package,
                        u.version,
                        u.arch,
                        u.source,
                        u.section,
                        u.priority,
                        u.size as i64,
                        u.sha256,
                        u.filename,
                        i64::from(u.security),
                        u.approved,
                        u.approved_by,
                        u.added
                    ])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn updates(&self) -> Result<Vec<Update>> {
        self.with("read updates", |c| {
            let mut st = c.prepare(&format!("SELECT {UPDATE_COLS} FROM updates ORDER BY id"))?;
            st.query_map([], update_row)?.collect()
        })
    }

    fn set_superseded(&self, changes: &[(i64, Option<i64>)]) -> Result<()> {
        self.with("mark superseded updates", |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare("UPDATE updates SET superseded_by = ?2 WHERE id = ?1")?;
                for (id, by) in changes {
                    st.execute(params![id, by])?;
                }
            }
            tx.commit()
        })
    }

    fn approve_updates(&self, ids: &[i64], by: &str, now: i64) -> Result<usize> {
        self.with("approve updates", |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            {
                let mut st = tx.prepare(
                    "UPDATE updates SET approved = ?2, approved_by = ?3 WHERE id = ?1 AND approved IS NULL",
                )?;
                for id in ids {
                    n += st.execute(params![id, now, by])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn add_update_rule(&self, r: &UpdateRule) -> Result<i64> {
        self.with("add an approval rule", |c| {
            c.execute(
                "INSERT INTO update_rules (name, repository, security_only, sections, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.name, r.repository, i64::from(r.security_only), to_json(&r.sections), r.created],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn update_rules(&self) -> Result<Vec<UpdateRule>> {
        self.with("read approval rules", |c| {
            let mut st = c.prepare(
                "SELECT id, name, repository, security_only, sections, created FROM update_rules ORDER BY id",
            )?;
            st.query_map([], rule_row)?.collect()
        })
    }

    fn add_update_deployment(&self, d: &UpdateDeployment) -> Result<i64> {
        self.with("add an update deployment", |c| {
            c.execute(
                "INSERT INTO update_deployments (name, collection_id, updates, available, deadline, spread, reboot, maintenance_window, created, held) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    d.name,
                    d.collection_id,
                    to_json(&d.updates),
                    d.available,
                    d.deadline,
                    d.spread,
                    d.reboot.as_str(),
                    d.window.map(|w| w.to_string()),
                    d.created,
                    d.held
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn update_deployments(&self) -> Result<Vec<UpdateDeployment>> {
        self.with("read update deployments", |c| {
            let mut st = c.prepare(
                "SELECT id, name, collection_id, updates, available, deadline, spread, reboot, created, maintenance_window, held FROM update_deployments ORDER BY id",
            )?;
            st.query_map([], deployment_row)?.collect()
        })
    }

    fn apply_update_scan(
        &self,
        device_id: i64,
        report: &ScanReport,
        now: i64,
    ) -> Result<Option<u64>> {
        self.with("store a device's scan", |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let serial: Option<i64> = tx
                .query_row("SELECT serial FROM update_scans WHERE device_id = ?1", [device_id], |r| r.get(0))
                .optional()?;
            let serial = serial.unwrap_or(0).max(0) as u64;
            if report.base != 0 && report.base != serial {
                return Ok(None);
            }
            if report.base == 0 {
                tx.execute("DELETE FROM update_states WHERE device_id = ?1", [device_id])?;
            }
            {
                let mut del = tx.prepare("DELETE FROM update_states WHERE device_id = ?1 AND update_id = ?2")?;
                for id in &report.removed {
                    del.execute(params![device_id, id])?;
                }
                let mut put = tx.prepare(
                    "INSERT INTO update_states (device_id, update_id, state, installed, reason, updated) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM updates WHERE id = ?2) \
                     ON CONFLICT (device_id, update_id) DO UPDATE SET state = excluded.state, installed = excluded.installed, \
                     reason = excluded.reason, updated = excluded.updated",
                )?;
                for r in &report.rows {
                    put.execute(params![device_id, r.id, r.state.as_str(), r.installed, r.reason, now])?;
                }
            }
            let next = serial + 1;
            tx.execute(
                "INSERT INTO update_scans (device_id, serial, catalog, scanned) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (device_id) DO UPDATE SET serial = excluded.serial, catalog = excluded.catalog, scanned = excluded.scanned",
                params![device_id, next as i64, report.catalog, now],
            )?;
            tx.execute(&COUNT_STATES_SQL.replace("$1", "?1"), [device_id])?;
            tx.commit()?;
            Ok(Some(next))
        })
    }

    fn update_states(&self, device_id: Option<i64>) -> Result<Vec<DeviceUpdateState>> {
        self.with("read update states", |c| match device_id {
            Some(d) => {
                let mut st = c.prepare(&format!(
                    "SELECT {STATE_COLS} FROM update_states WHERE device_id = ?1 ORDER BY update_id"
                ))?;
                st.query_map([d], state_row)?.collect()
            }
            None => {
                let mut st = c.prepare(&format!(
                    "SELECT {STATE_COLS} FROM update_states ORDER BY device_id, update_id"
                ))?;
                st.query_map([], state_row)?.collect()
            }
        })
    }

    fn update_progress(&self, devices: &[i64], updates: &[i64]) -> Result<UpdateProgress> {
        let (devices, updates) = (to_json(&devices), to_json(&updates));
        self.with("read update progress", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {STATE_COLS} FROM update_states WHERE device_id IN (SELECT value FROM json_each(?1)) AND update_id IN (SELECT value FROM json_each(?2)) ORDER BY device_id, update_id"
            ))?;
            let states = st.query_map([&devices, &updates], state_row)?.collect::<rusqlite::Result<_>>()?;
            let mut st = c.prepare(
                "SELECT device_id, scanned FROM update_scans WHERE device_id IN (SELECT value FROM json_each(?1)) ORDER BY device_id",
            )?;
            let scanned = st.query_map([&devices], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            Ok(UpdateProgress { states, scanned })
        })
    }

    fn update_state_counts(&self) -> Result<Vec<(i64, UpdateState, i64)>> {
        self.with("count update states", |c| {
            let mut st = c.prepare(
                "SELECT update_id, state, count(*) FROM update_states GROUP BY update_id, state ORDER BY update_id, state",
            )?;
            st.query_map([], |r| {
                let id: i64 = r.get(0)?;
                Ok((id, state_of("update_states", id.to_string(), &r.get::<_, String>(1)?)?, r.get(2)?))
            })?
            .collect()
        })
    }

    fn device_count(&self) -> Result<i64> {
        self.with("count devices", |c| {
            c.query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
        })
    }

    fn update_scans(&self) -> Result<Vec<UpdateScan>> {
        self.with("read scans", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SCAN_COLS} FROM update_scans WHERE serial > 0 ORDER BY device_id"
            ))?;
            st.query_map([], |r| {
                Ok(UpdateScan {
                    device_id: r.get(0)?,
                    serial: r.get::<_, i64>(1)?.max(0) as u64,
                    catalog: r.get(2)?,
                    scanned: r.get(3)?,
                    counts: StateCounts {
                        required: r.get(4)?,
                        installed: r.get(5)?,
                        unknown: r.get(6)?,
                        in_progress: r.get(7)?,
                        failed: r.get(8)?,
                        pending_reboot: r.get(9)?,
                    },
                })
            })?
            .collect()
        })
    }
}
