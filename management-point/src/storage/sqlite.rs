//! The embedded SQLite store: one file, WAL, versioned migrations (`PRAGMA user_version`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::interface::Storage;
use super::rows::*;
use crate::error::{Error, Result};
use crate::model::*;

/// The schema, one migration per version (`PRAGMA user_version`), oldest first.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite-001-initial.sql"),
    include_str!("migrations/sqlite-002-signed-programs.sql"),
    include_str!("migrations/sqlite-003-report-ids.sql"),
    include_str!("migrations/sqlite-004-tenants-and-registration.sql"),
    include_str!("migrations/sqlite-005-confirmation.sql"),
    include_str!("migrations/sqlite-006-device-certificates.sql"),
    include_str!("migrations/sqlite-007-configuration-items.sql"),
    include_str!("migrations/sqlite-008-administrators.sql"),
    include_str!("migrations/sqlite-009-administrator-certificates.sql"),
    include_str!("migrations/sqlite-010-software-updates.sql"),
    include_str!("migrations/sqlite-011-collection-windows.sql"),
    include_str!("migrations/sqlite-012-rollouts.sql"),
    include_str!("migrations/sqlite-013-update-rollouts.sql"),
    include_str!("migrations/sqlite-014-api.sql"),
    include_str!("migrations/sqlite-015-distribution-points.sql"),
];

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file; it and its `-wal` and `-shm` are
    /// kept 0600.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            dm_shared::fs::create_dir_all(dir, dm_shared::fs::MODE_DIR_PRIVATE)?;
        }
        super::sqlite_files::keep_private(path)?;
        let conn = Connection::open(path).map_err(|source| Error::Database {
            what: format!("open {}", path.display()),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| db("open", e))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(|e| db("open", e))?;
        let store = SqliteStore { conn: Mutex::new(conn) };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `f` on the connection; errors say they happened while doing `what`.
    pub(super) fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).map_err(|e| db(what, e))
    }

    fn migrate(&self) -> Result<()> {
        self.with("migrate the schema", |c| {
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let version = usize::try_from(version).unwrap_or(0);
            if version > MIGRATIONS.len() {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(1),
                    Some(format!("the database is schema version {version}, newer than this dmmp knows ({}); upgrade dmmp", MIGRATIONS.len())),
                ));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
                let tx = c.transaction()?;
                tx.execute_batch(m)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.commit()?;
                log::info!("database migrated to schema version {}", i + 1);
            }
            Ok(())
        })
    }
}

impl Storage for SqliteStore {
    fn ping(&self) -> Result<std::time::Duration> {
        let t = std::time::Instant::now();
        self.with("reach the database", |c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))?;
        Ok(t.elapsed())
    }

    fn data_version(&self) -> Result<i64> {
        self.with("read the data version", |c| c.query_row("PRAGMA data_version", [], |r| r.get(0)))
    }

    fn add_device(
        &self,
        tenant: &str,
        controller_id: &str,
        token_sha256: Option<&str>,
        registered_by: &str,
        now: i64,
    ) -> Result<Device> {
        self.with("add a device", |c| {
            c.execute(
                "INSERT INTO devices (tenant, controller_id, token_sha256, created, registered_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, controller_id, token_sha256, now, registered_by],
            )?;
            let id = c.last_insert_rowid();
            c.query_row(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"), [id], device_row)
        })
    }

    fn import_devices(
        &self,
        devices: &[(String, String, Option<String>)],
        now: i64,
    ) -> Result<usize> {
        self.with("import devices", |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            {
                let mut st = tx.prepare(
                    "INSERT OR IGNORE INTO devices (tenant, controller_id, token_sha256, created, registered_by) VALUES (?1, ?2, ?3, ?4, 'admin')",
                )?;
                for (t, cid, tok) in devices {
                    n += st.execute(params![t, cid, tok, now])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn device_by_id(&self, id: i64) -> Result<Option<Device>> {
        self.with("read a device", |c| {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1");
            c.query_row(&sql, [id], device_row).optional()
        })
    }

    fn device(&self, tenant: &str, controller_id: &str) -> Result<Option<Device>> {
        self.with("read a device", |c| {
            c.query_row(
                &format!(
                    "SELECT {DEVICE_COLS} FROM devices WHERE tenant = ?1 AND controller_id = ?2"
                ),
                [tenant, controller_id],
                device_row,
            )
            .optional()
        })
    }

    fn devices_page(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Device>> {
        // Every device is after ("", ""): a controller id is never empty. The unique index on
        // (tenant, controller_id) serves the range, so a page costs its own rows.
        let (t, cid) = after.unwrap_or(("", ""));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with("read a page of devices", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE (tenant, controller_id) > (?1, ?2) \
                 ORDER BY tenant, controller_id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![t, cid, limit], device_row)?;
            rows.collect()
        })
    }

    fn devices(&self) -> Result<Vec<Device>> {
        self.with("read devices", |c| {
            let mut st = c.prepare(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id"))?;
            let rows = st.query_map([], device_row)?;
            rows.collect()
        })
    }

    fn set_device_token(&self, id: i64, token_sha256: Option<&str>) -> Result<()> {
        self.with("set a device token", |c| {
            c.execute(
                "UPDATE devices SET token_sha256 = ?2 WHERE id = ?1",
                params![id, token_sha256],
            )
            .map(|_| ())
        })
    }

    fn set_attributes(&self, id: i64, attributes: &BTreeMap<String, String>) -> Result<()> {
        self.with("store device attributes", |c| {
            c.execute(
                "UPDATE devices SET attributes = ?2 WHERE id = ?1",
                params![id, json(attributes)?],
            )
            .map(|_| ())
        })
    }

    fn set_auto_confirm(&self, id: i64, auto: Option<&AutoConfirm>) -> Result<()> {
        self.with("store auto-confirmation", |c| {
            let value = auto.map(json).transpose()?;
            c.execute("UPDATE devices SET auto_confirm = ?2 WHERE id = ?1", params![id, value])
                .map(|_| ())
        })
    }

    fn set_device_cert(&self, id: i64, sha256: &str) -> Result<()> {
        self.with("record a device certificate", |c| {
            c.execute("UPDATE devices SET cert_sha256 = ?2 WHERE id = ?1", params![id, sha256])
                .map(|_| ())
        })
    }

    fn revoke_certificate(
        &self,
        sha256: &str,
        device_id: i64,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        self.with("revoke a certificate", |c| {
            c.execute(
                "INSERT OR IGNORE INTO revoked_certificates (sha256, device_id, revoked, reason) VALUES (?1, ?2, ?3, ?4)",
                params![sha256, device_id, now, reason],
            )
            .map(|_| ())
        })
    }

    fn revoked_certificates(&self) -> Result<Vec<String>> {
        self.with("read revoked certificates", |c| {
            let mut st = c.prepare("SELECT sha256 FROM revoked_certificates ORDER BY sha256")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn set_registered_by(&self, id: i64, how: &str) -> Result<()> {
        self.with("approve a device", |c| {
            c.execute("UPDATE devices SET registered_by = ?2 WHERE id = ?1", params![id, how])
                .map(|_| ())
        })
    }

    fn flush_last_seen(&self, seen: &[(i64, i64)]) -> Result<()> {
        self.with("record last-seen times", |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare("UPDATE devices SET last_seen = ?2 WHERE id = ?1 AND (last_seen IS NULL OR last_seen < ?2)")?;
                for (id, t) in seen {
                    st.execute(params![id, t])?;
                }
            }
            tx.commit()
        })
    }

    fn add_package(&self, p: &Package) -> Result<i64> {
        self.with("add a package", |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO packages (name, version, kind, publisher, distribution_point, created, programs, config_items) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![p.name, p.version, p.kind.as_str(), p.publisher, p.distribution_point, p.created, json(&p.programs)?, json(&p.config_items)?],
            )?;
            let id = tx.last_insert_rowid();
            for a in &p.artifacts {
                tx.execute(
                    "INSERT INTO artifacts (package_id, filename, size, sha256, sha1, md5, path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![id, a.filename, a.size as i64, a.sha256, a.sha1, a.md5, a.path.as_ref().map(|p| p.to_string_lossy().into_owned())],
                )?;
            }
            tx.commit()?;
            Ok(id)
        })
    }

    fn packages(&self) -> Result<Vec<Package>> {
        self.with("read packages", read_packages)
    }

    fn add_config_item(&self, item: &ConfigItem, now: i64) -> Result<()> {
        let added = self.with("add a configuration item", |c| {
            c.execute(
                "INSERT OR IGNORE INTO config_items (name, version, item, created) VALUES (?1, ?2, ?3, ?4)",
                params![item.name, item.version, json(item)?, now],
            )
        })?;
        if added == 0 {
            return Err(Error::Conflict(format!(
                "configuration item {} version {} already exists",
                item.name, item.version
            )));
        }
        Ok(())
    }

    fn set_administrator(&self, name: &str, hash: &str, now: i64) -> Result<()> {
        self.with("store an administrator", |c| {
            c.execute(
                "INSERT INTO administrators (name, hash, created) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO UPDATE SET hash = excluded.hash",
                params![name, hash, now],
            )
            .map(|_| ())
        })
    }

    fn administrator_hash(&self, name: &str) -> Result<Option<String>> {
        self.with("read an administrator", |c| {
            c.query_row("SELECT hash FROM administrators WHERE name = ?1", [name], |r| r.get(0))
                .optional()
        })
    }

    fn add_administrator_certificate(&self, cert: &AdminCert, now: i64) -> Result<()> {
        self.with("store an administrator's certificate", |c| {
            c.execute(
                "INSERT INTO administrator_certificates (sha256, name, subject, not_before, not_after, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(sha256) DO UPDATE SET name = excluded.name",
                params![cert.sha256, cert.name, cert.subject, cert.not_before, cert.not_after, now],
            )
            .map(|_| ())
        })
    }

    fn administrator_by_certificate(&self, sha256: &str) -> Result<Option<AdminCert>> {
        self.with("read an administrator's certificate", |c| {
            c.query_row(
                "SELECT sha256, name, subject, not_before, not_after FROM administrator_certificates WHERE sha256 = ?1",
                [sha256],
                admin_cert_row,
            )
            .optional()
        })
    }

    fn administrators(&self) -> Result<Vec<Administrator>> {
        self.with("read the administrators", |c| {
            let mut st =
                c.prepare("SELECT name, hash, created FROM administrators ORDER BY name")?;
            let rows = st.query_map([], |r| {
                Ok(Administrator { name: r.get(0)?, hash: r.get(1)?, created: r.get(2)? })
            })?;
            rows.collect()
        })
    }

    fn administrator_certificates(&self) -> Result<Vec<AdminCert>> {
        self.with("read the administrators' certificates", |c| {
            let mut st = c.prepare(
                "SELECT sha256, name, subject, not_before, not_after FROM administrator_certificates ORDER BY name, sha256",
            )?;
            let rows = st.query_map([], admin_cert_row)?;
            rows.collect()
        })
    }

    fn remove_administrator(&self, name: &str) -> Result<bool> {
        self.with("remove an administrator", |c| {
            let tx = c.transaction()?;
            let certs =
                tx.execute("DELETE FROM administrator_certificates WHERE name = ?1", [name])?;
            let admins = tx.execute("DELETE FROM administrators WHERE name = ?1", [name])?;
            tx.commit()?;
            Ok(certs + admins > 0)
        })
    }

    fn remove_administrator_certificate(&self, sha256: &str) -> Result<bool> {
        self.with("unpin an administrator's certificate", |c| {
            c.execute("DELETE FROM administrator_certificates WHERE sha256 = ?1", [sha256])
                .map(|n| n > 0)
        })
    }

    fn config_items(&self) -> Result<Vec<(ConfigItem, i64)>> {
        self.with("read configuration items", |c| {
            let mut st =
                c.prepare("SELECT rowid, item, created FROM config_items ORDER BY name, version")?;
            let rows = st.query_map([], |r| {
                let id: i64 = r.get(0)?;
                Ok((from_json("config_items", id, "item", &r.get::<_, String>(1)?)?, r.get(2)?))
            })?;
            rows.collect()
        })
    }

    fn remove_package(&self, id: i64) -> Result<()> {
        let used: i64 = self.with("remove a package", |c| {
            c.query_row(
                "SELECT COUNT(*) FROM advertisements a JOIN programs p ON a.program_id = p.id WHERE p.package_id = ?1 AND a.canceled = 0",
                [id],
                |r| r.get(0),
            )
        })?;
        if used > 0 {
            return Err(Error::Conflict(format!(
                "package {id} is used by {used} advertisement(s); cancel them first"
            )));
        }
        self.with("remove a package", |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM status WHERE action_id IN (SELECT ac.id FROM actions ac JOIN advertisements a ON ac.advertisement_id = a.id JOIN programs p ON a.program_id = p.id WHERE p.package_id = ?1)", [id])?;
            tx.execute("DELETE FROM actions WHERE advertisement_id IN (SELECT a.id FROM advertisements a JOIN programs p ON a.program_id = p.id WHERE p.package_id = ?1)", [id])?;
            tx.execute("DELETE FROM advertisements WHERE program_id IN (SELECT id FROM programs WHERE package_id = ?1)", [id])?;
            tx.execute("DELETE FROM programs WHERE package_id = ?1", [id])?;
            let n = tx.execute("DELETE FROM packages WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(n)
        })
        .and_then(|n| if n == 0 { Err(Error::NotFound(format!("package {id}"))) } else { Ok(()) })
    }

    fn add_program(&self, p: &Program) -> Result<i64> {
        self.with("add a program", |c| {
            c.execute(
                "INSERT INTO programs (package_id, name, command, platforms, max_run_time, device_class, signed_program) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![p.package_id, p.name, p.command, json(&p.platforms)?, p.max_run_time as i64, p.device_class.to_string(), p.signed_program],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn programs(&self) -> Result<Vec<Program>> {
        self.with("read programs", |c| {
            let mut st = c.prepare("SELECT id, package_id, name, command, platforms, max_run_time, device_class, signed_program FROM programs ORDER BY id")?;
            let rows = st.query_map([], |r| {
                let id: i64 = r.get(0)?;
                let class: String = r.get(6)?;
                Ok(Program {
                    id,
                    package_id: r.get(1)?,
                    name: r.get(2)?,
                    command: r.get(3)?,
                    platforms: from_json("programs", id, "platforms", &r.get::<_, String>(4)?)?,
                    max_run_time: r.get::<_, i64>(5)? as u64,
                    device_class: parsed("programs", id, "device_class", class.parse())?,
                    signed_program: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    fn add_collection(&self, name: &str, tenant: &str, rule: &CollectionRule) -> Result<i64> {
        self.with("add a collection", |c| {
            c.execute(
                "INSERT INTO collections (name, tenant, rule) VALUES (?1, ?2, ?3)",
                params![name, tenant, json(rule)?],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn set_collection_window(&self, id: i64, window: Option<&MaintenanceWindow>) -> Result<bool> {
        self.with("set a collection's maintenance window", |c| {
            let n = c.execute(
                "UPDATE collections SET maintenance_window = ?2 WHERE id = ?1",
                params![id, window.map(|w| w.to_string())],
            )?;
            Ok(n > 0)
        })
    }

    fn add_member(&self, collection_id: i64, device_id: i64) -> Result<()> {
        self.with("add a collection member", |c| {
            c.execute("INSERT OR IGNORE INTO collection_members (collection_id, device_id) VALUES (?1, ?2)", params![collection_id, device_id])
                .map(|_| ())
        })
    }

    fn collections(&self) -> Result<Vec<Collection>> {
        self.with("read collections", read_collections)
    }

    fn add_advertisement(&self, a: &Advertisement) -> Result<i64> {
        self.with("add an advertisement", |c| {
            c.execute(
                "INSERT INTO advertisements (name, program_id, collection_id, kind, start_time, expires, maintenance_window, created, canceled, rerun, allow_downgrade)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
                params![a.name, a.program_id, a.collection_id, a.kind.as_str(), a.start_time, a.expires, a.window.map(|w| w.to_string()), a.created, a.rerun.as_str(), a.allow_downgrade],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn advertisements(&self) -> Result<Vec<Advertisement>> {
        self.with("read advertisements", |c| {
            let mut st = c.prepare(
                "SELECT id, name, program_id, collection_id, kind, start_time, expires, maintenance_window, created, canceled, rerun, allow_downgrade FROM advertisements ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                let id: i64 = r.get(0)?;
                let kind: String = r.get(4)?;
                let window: Option<String> = r.get(7)?;
                Ok(Advertisement {
                    id,
                    name: r.get(1)?,
                    program_id: r.get(2)?,
                    collection_id: r.get(3)?,
                    kind: parsed("advertisements", id, "kind", kind.parse())?,
                    start_time: r.get(5)?,
                    expires: r.get(6)?,
                    window: window
                        .map(|w| parsed("advertisements", id, "maintenance_window", MaintenanceWindow::parse(&w)))
                        .transpose()?,
                    created: r.get(8)?,
                    canceled: r.get::<_, i64>(9)? != 0,
                    rerun: parsed("advertisements", id, "rerun", r.get::<_, String>(10)?.parse())?,
                    allow_downgrade: r.get::<_, i64>(11)? != 0,
                })
            })?;
            rows.collect()
        })
    }

    fn cancel_advertisement(&self, id: i64, now: i64) -> Result<usize> {
        self.with("cancel an advertisement", |c| {
            let tx = c.transaction()?;
            let n = tx.execute("UPDATE advertisements SET canceled = 1 WHERE id = ?1", [id])?;
            if n == 0 {
                return Ok(None);
            }
            let moved = tx.execute(
                "UPDATE actions SET status = 'canceling', updated = ?2 WHERE advertisement_id = ?1 AND status IN ('waiting', 'scheduled', 'retrieved', 'running')",
                params![id, now],
            )?;
            tx.commit()?;
            Ok(Some(moved))
        })?
        .ok_or_else(|| Error::NotFound(format!("advertisement {id}")))
    }

    fn ensure_action(
        &self,
        advertisement_id: i64,
        device_id: i64,
        status: ActionStatus,
        now: i64,
    ) -> Result<Action> {
        self.with("create an action", |c| {
            c.execute(
                "INSERT OR IGNORE INTO actions (advertisement_id, device_id, status, created, updated) VALUES (?1, ?2, ?4, ?3, ?3)",
                params![advertisement_id, device_id, now, status.as_str()],
            )?;
            c.query_row(
                &format!("SELECT {ACTION_COLS} FROM actions WHERE advertisement_id = ?1 AND device_id = ?2"),
                params![advertisement_id, device_id],
                action_row,
            )
        })
    }

    fn actions(&self) -> Result<Vec<Action>> {
        self.with("read actions", |c| {
            let mut st = c.prepare(&format!("SELECT {ACTION_COLS} FROM actions ORDER BY id"))?;
            let rows = st.query_map([], action_row)?;
            rows.collect()
        })
    }

    fn actions_of_device(&self, device_id: i64) -> Result<Vec<Action>> {
        self.with("read a device's actions", |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ACTION_COLS} FROM actions WHERE device_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([device_id], action_row)?;
            rows.collect()
        })
    }

    fn action(&self, id: i64) -> Result<Option<Action>> {
        self.with("read an action", |c| {
            c.query_row(
                &format!("SELECT {ACTION_COLS} FROM actions WHERE id = ?1"),
                [id],
                action_row,
            )
            .optional()
        })
    }

    fn mark_retrieved(&self, id: i64, now: i64) -> Result<()> {
        self.with("mark an action retrieved", |c| {
            c.execute("UPDATE actions SET status = 'retrieved', updated = ?2 WHERE id = ?1 AND status = 'scheduled'", params![id, now]).map(|_| ())
        })
    }

    fn apply_feedback(
        &self,
        action_id: i64,
        record: &StatusRecord,
        decide: &dyn Fn(ActionStatus) -> Result<ActionStatus>,
    ) -> Result<Option<Action>> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // IMMEDIATE: concurrent feedback for one action is serialized, never interleaved.
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| db("store feedback", e))?;
        // Before the state machine: a resent final report finds its action closed.
        if seen_report(&tx, record).map_err(|e| db("store feedback", e))? {
            return Ok(None);
        }
        let current = tx
            .query_row(
                &format!("SELECT {ACTION_COLS} FROM actions WHERE id = ?1"),
                [action_id],
                action_row,
            )
            .optional()
            .map_err(|e| db("store feedback", e))?
            .ok_or_else(|| Error::NotFound(format!("action {action_id}")))?;
        let next = decide(current.status)?;
        insert_status(&tx, record).map_err(|e| db("store feedback", e))?;
        tx.execute(
            "UPDATE actions SET status = ?2, updated = ?3, last_code = COALESCE(?4, last_code) WHERE id = ?1",
            params![action_id, next.as_str(), record.received, record.message_id],
        )
        .map_err(|e| db("store feedback", e))?;
        let updated = tx
            .query_row(
                &format!("SELECT {ACTION_COLS} FROM actions WHERE id = ?1"),
                [action_id],
                action_row,
            )
            .map_err(|e| db("store feedback", e))?;
        tx.commit().map_err(|e| db("store feedback", e))?;
        Ok(Some(updated))
    }

    fn add_status(&self, record: &StatusRecord) -> Result<Option<i64>> {
        self.with("store a status message", |c| {
            if seen_report(c, record)? {
                return Ok(None);
            }
            insert_status(c, record).map(Some)
        })
    }

    fn statuses_for_device(&self, device_id: i64) -> Result<Vec<StatusRecord>> {
        self.with("read status records", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {STATUS_COLS} FROM status WHERE device_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([device_id], status_row)?;
            rows.collect()
        })
    }

    fn put_crl(&self, issuer: &str, pem: &str, this_update: i64, now: i64) -> Result<bool> {
        self.with("store a revocation list", |c| {
            let newer: Option<i64> = c
                .query_row("SELECT this_update FROM crls WHERE issuer = ?1", [issuer], |r| r.get(0))
                .optional()?;
            if newer.is_some_and(|t| t > this_update) {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO crls (issuer, pem, this_update, added) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (issuer) DO UPDATE SET pem = ?2, this_update = ?3, added = ?4",
                params![issuer, pem, this_update, now],
            )?;
            Ok(true)
        })
    }

    fn crls(&self) -> Result<Vec<(String, String)>> {
        self.with("read revocation lists", |c| {
            let mut st = c.prepare("SELECT issuer, pem FROM crls ORDER BY issuer")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn statuses_for_action(&self, action_id: i64) -> Result<Vec<StatusRecord>> {
        self.with("read status records", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {STATUS_COLS} FROM status WHERE action_id = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([action_id], status_row)?;
            rows.collect()
        })
    }
}
