//! The PostgreSQL twin of every query of the SQLite store.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::PgStore;
use super::rows::{self, ACTION_COLS, DEVICE_COLS, Fail, STATUS_COLS, json};
use crate::error::{Error, Result};
use crate::model::*;
use crate::storage::interface::Storage;

/// Attempts at moving an action when other instances keep moving it first.
const FEEDBACK_ATTEMPTS: usize = 8;

fn one<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

impl PgStore {
    /// Runs one statement returning rows, each mapped with `map`.
    fn rows<T: Send + 'static>(
        &self,
        what: &str,
        sql: String,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
        map: fn(&tokio_postgres::Row) -> std::result::Result<T, Fail>,
    ) -> Result<Vec<T>> {
        let pool = self.pool.clone();
        self.run(what, async move {
            let c = pool.get().await?;
            let st = c.prepare_cached(&sql).await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as _).collect();
            c.query(&st, &refs).await?.iter().map(map).collect()
        })
    }

    /// Runs one statement and returns how many rows it changed.
    fn exec(
        &self,
        what: &str,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
    ) -> Result<u64> {
        let pool = self.pool.clone();
        self.run(what, async move {
            let c = pool.get().await?;
            let st = c.prepare_cached(sql).await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as _).collect();
            Ok(c.execute(&st, &refs).await?)
        })
    }
}

macro_rules! p {
    ($($x:expr),* $(,)?) => {
        vec![$(Box::new($x) as Box<dyn tokio_postgres::types::ToSql + Send + Sync>),*]
    };
}

fn id_of(r: &tokio_postgres::Row) -> std::result::Result<i64, Fail> {
    Ok(r.try_get(0)?)
}

fn text_of(r: &tokio_postgres::Row) -> std::result::Result<String, Fail> {
    Ok(r.try_get(0)?)
}

impl Storage for PgStore {
    fn data_version(&self) -> Result<i64> {
        self.listen_once();
        Ok(self.heard.version.load(Ordering::SeqCst))
    }

    fn changed(&self) -> crate::storage::interface::Changed {
        let mut c = std::mem::take(&mut *self.heard.rows.lock().unwrap_or_else(|p| p.into_inner()));
        for ids in [&mut c.actions, &mut c.devices] {
            ids.sort_unstable();
            ids.dedup();
        }
        c
    }

    fn device_by_id(&self, id: i64) -> Result<Option<Device>> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1");
        Ok(one(self.rows("read a device", sql, p![id], rows::device)?))
    }

    fn ping(&self) -> Result<std::time::Duration> {
        let pool = self.pool.clone();
        self.run("reach the database", async move {
            let t = std::time::Instant::now();
            let c = pool.get().await?;
            c.simple_query("SELECT 1").await?;
            Ok(t.elapsed())
        })
    }

    fn hears_others(&self) -> bool {
        self.listening()
    }

    fn add_device(
        &self,
        tenant: &str,
        controller_id: &str,
        token_sha256: Option<&str>,
        registered_by: &str,
        now: i64,
    ) -> Result<Device> {
        let sql = format!(
            "INSERT INTO devices (tenant, controller_id, token_sha256, created, registered_by) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {DEVICE_COLS}"
        );
        let p = p![
            tenant.to_string(),
            controller_id.to_string(),
            token_sha256.map(str::to_string),
            now,
            registered_by.to_string()
        ];
        one(self.rows("add a device", sql, p, rows::device)?)
            .ok_or_else(|| Error::NotFound(format!("device {tenant}/{controller_id}")))
    }

    fn import_devices(
        &self,
        devices: &[(String, String, Option<String>)],
        now: i64,
    ) -> Result<usize> {
        let (mut t, mut c, mut k) = (Vec::new(), Vec::new(), Vec::new());
        for (tenant, cid, tok) in devices {
            t.push(tenant.clone());
            c.push(cid.clone());
            k.push(tok.clone());
        }
        let pool = self.pool.clone();
        self.run("import devices", async move {
            let mut conn = pool.get().await?;
            let tx = conn.transaction().await?;
            let mut n = 0u64;
            // In slices, so one statement's arrays stay a sensible size.
            for i in (0..t.len()).step_by(10_000) {
                let j = (i + 10_000).min(t.len());
                n += tx
                    .execute(
                        "INSERT INTO devices (tenant, controller_id, token_sha256, created, registered_by) \
                         SELECT t, c, k, $4, 'admin' FROM unnest($1::text[], $2::text[], $3::text[]) AS v(t, c, k) \
                         ON CONFLICT (tenant, controller_id) DO NOTHING",
                        &[&&t[i..j], &&c[i..j], &&k[i..j], &now],
                    )
                    .await?;
            }
            tx.commit().await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn device(&self, tenant: &str, controller_id: &str) -> Result<Option<Device>> {
        let sql =
            format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant = $1 AND controller_id = $2");
        let p = p![tenant.to_string(), controller_id.to_string()];
        Ok(one(self.rows("read a device", sql, p, rows::device)?))
    }

    fn devices(&self) -> Result<Vec<Device>> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id");
        self.rows("read devices", sql, p![], rows::device)
    }

    fn devices_page(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Device>> {
        let (t, cid) = after.unwrap_or(("", ""));
        let sql = format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE (tenant, controller_id) > ($1, $2) \
             ORDER BY tenant, controller_id LIMIT $3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rows(
            "read a page of devices",
            sql,
            p![t.to_string(), cid.to_string(), limit],
            rows::device,
        )
    }

    fn set_device_token(&self, id: i64, token_sha256: Option<&str>) -> Result<()> {
        let sql = "UPDATE devices SET token_sha256 = $2 WHERE id = $1";
        self.exec("set a device token", sql, p![id, token_sha256.map(str::to_string)]).map(|_| ())
    }

    fn set_attributes(&self, id: i64, attributes: &BTreeMap<String, String>) -> Result<()> {
        let value = json(attributes).map_err(|f| rows::named("store device attributes", f))?;
        let sql = "UPDATE devices SET attributes = $2 WHERE id = $1";
        self.exec("store device attributes", sql, p![id, value]).map(|_| ())
    }

    fn set_device_cert(&self, id: i64, sha256: &str) -> Result<()> {
        let sql = "UPDATE devices SET cert_sha256 = $2 WHERE id = $1";
        self.exec("record a device certificate", sql, p![id, sha256.to_string()]).map(|_| ())
    }

    fn revoke_certificate(
        &self,
        sha256: &str,
        device_id: i64,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO revoked_certificates (sha256, device_id, revoked, reason) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        let p = p![sha256.to_string(), device_id, now, reason.to_string()];
        self.exec("revoke a certificate", sql, p).map(|_| ())
    }

    fn revoked_certificates(&self) -> Result<Vec<String>> {
        let sql = "SELECT sha256 FROM revoked_certificates ORDER BY sha256".to_string();
        self.rows("read revoked certificates", sql, p![], text_of)
    }

    fn set_auto_confirm(&self, id: i64, auto: Option<&AutoConfirm>) -> Result<()> {
        let value =
            auto.map(json).transpose().map_err(|f| rows::named("store auto-confirmation", f))?;
        let sql = "UPDATE devices SET auto_confirm = $2 WHERE id = $1";
        self.exec("store auto-confirmation", sql, p![id, value]).map(|_| ())
    }

    fn set_registered_by(&self, id: i64, how: &str) -> Result<()> {
        let sql = "UPDATE devices SET registered_by = $2 WHERE id = $1";
        self.exec("approve a device", sql, p![id, how.to_string()]).map(|_| ())
    }

    fn flush_last_seen(&self, seen: &[(i64, i64)]) -> Result<()> {
        let ids: Vec<i64> = seen.iter().map(|(id, _)| *id).collect();
        let times: Vec<i64> = seen.iter().map(|(_, t)| *t).collect();
        let sql = "UPDATE devices d SET last_seen = v.t FROM unnest($1::bigint[], $2::bigint[]) AS v(id, t) \
                   WHERE d.id = v.id AND (d.last_seen IS NULL OR d.last_seen < v.t)";
        self.exec("record last-seen times", sql, p![ids, times]).map(|_| ())
    }

    fn add_package(&self, p: &Package) -> Result<i64> {
        let pkg = p.clone();
        let pool = self.pool.clone();
        self.run("add a package", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO packages (name, version, kind, publisher, distribution_point, created, programs, config_items) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    &[&pkg.name, &pkg.version, &pkg.kind.as_str(), &pkg.publisher, &pkg.distribution_point,
                      &pkg.created, &json(&pkg.programs)?, &json(&pkg.config_items)?],
                )
                .await?
                .try_get(0)?;
            for a in &pkg.artifacts {
                let path = a.path.as_ref().map(|p| p.to_string_lossy().into_owned());
                tx.execute(
                    "INSERT INTO artifacts (package_id, filename, size, sha256, sha1, md5, path) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&id, &a.filename, &(a.size as i64), &a.sha256, &a.sha1, &a.md5, &path],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(id)
        })
    }

    fn packages(&self) -> Result<Vec<Package>> {
        let mut artifacts: BTreeMap<i64, Vec<ArtifactRecord>> = BTreeMap::new();
        let sql = "SELECT package_id, filename, size, sha256, sha1, md5, path FROM artifacts ORDER BY package_id, filename";
        for (pid, a) in self.rows("read packages", sql.to_string(), p![], rows::artifact)? {
            artifacts.entry(pid).or_default().push(a);
        }
        let sql = "SELECT id, name, version, kind, publisher, distribution_point, created, programs, config_items FROM packages ORDER BY id";
        let mut out = self.rows("read packages", sql.to_string(), p![], rows::package)?;
        for p in &mut out {
            p.artifacts = artifacts.remove(&p.id).unwrap_or_default();
        }
        Ok(out)
    }

    fn add_config_item(&self, item: &ConfigItem, now: i64) -> Result<()> {
        let value = json(item).map_err(|f| rows::named("add a configuration item", f))?;
        let sql = "INSERT INTO config_items (name, version, item, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        let p = p![item.name.clone(), i64::from(item.version), value, now];
        if self.exec("add a configuration item", sql, p)? == 0 {
            return Err(Error::Conflict(format!(
                "configuration item {} version {} already exists",
                item.name, item.version
            )));
        }
        Ok(())
    }

    fn set_administrator(&self, name: &str, hash: &str, now: i64) -> Result<()> {
        let sql = "INSERT INTO administrators (name, hash, created) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET hash = excluded.hash";
        self.exec("store an administrator", sql, p![name.to_string(), hash.to_string(), now])
            .map(|_| ())
    }

    fn administrator_hash(&self, name: &str) -> Result<Option<String>> {
        let sql = "SELECT hash FROM administrators WHERE name = $1".to_string();
        Ok(one(self.rows("read an administrator", sql, p![name.to_string()], text_of)?))
    }

    fn add_administrator_certificate(&self, cert: &AdminCert, now: i64) -> Result<()> {
        let sql = "INSERT INTO administrator_certificates (sha256, name, subject, not_before, not_after, created) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO UPDATE SET name = excluded.name";
        let c = cert.clone();
        let p = p![c.sha256, c.name, c.subject, c.not_before, c.not_after, now];
        self.exec("store an administrator's certificate", sql, p).map(|_| ())
    }

    fn administrator_by_certificate(&self, sha256: &str) -> Result<Option<AdminCert>> {
        let sql = "SELECT sha256, name, subject, not_before, not_after FROM administrator_certificates WHERE sha256 = $1";
        let found = self.rows(
            "read an administrator's certificate",
            sql.to_string(),
            p![sha256.to_string()],
            rows::admin_cert,
        )?;
        Ok(one(found))
    }

    fn administrators(&self) -> Result<Vec<Administrator>> {
        let sql = "SELECT name, hash, created FROM administrators ORDER BY name";
        self.rows("read the administrators", sql.to_string(), p![], rows::administrator)
    }

    fn administrator_certificates(&self) -> Result<Vec<AdminCert>> {
        let sql = "SELECT sha256, name, subject, not_before, not_after FROM administrator_certificates ORDER BY name, sha256";
        self.rows("read the administrators' certificates", sql.to_string(), p![], rows::admin_cert)
    }

    fn remove_administrator(&self, name: &str) -> Result<bool> {
        // One statement, so one transaction: the certificates go with the password.
        let sql = "WITH certs AS (DELETE FROM administrator_certificates WHERE name = $1 RETURNING 1), \
                   admins AS (DELETE FROM administrators WHERE name = $1 RETURNING 1) \
                   SELECT (SELECT count(*) FROM certs) + (SELECT count(*) FROM admins)";
        let n =
            self.rows("remove an administrator", sql.to_string(), p![name.to_string()], id_of)?;
        Ok(n.first().is_some_and(|n| *n > 0))
    }

    fn remove_administrator_certificate(&self, sha256: &str) -> Result<bool> {
        let sql = "DELETE FROM administrator_certificates WHERE sha256 = $1";
        let n = self.exec("unpin an administrator's certificate", sql, p![sha256.to_string()])?;
        Ok(n > 0)
    }

    fn config_items(&self) -> Result<Vec<(ConfigItem, i64)>> {
        let sql = "SELECT version, item, created FROM config_items ORDER BY name, version";
        self.rows("read configuration items", sql.to_string(), p![], |r| {
            let version: i64 = r.try_get(0)?;
            Ok((rows::from_json("config_items", version, "item", r.try_get(1)?)?, r.try_get(2)?))
        })
    }

    fn remove_package(&self, id: i64) -> Result<()> {
        let pool = self.pool.clone();
        self.run("remove a package", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let used: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM advertisements a JOIN programs p ON a.program_id = p.id \
                     WHERE p.package_id = $1 AND a.canceled = 0",
                    &[&id],
                )
                .await?
                .try_get(0)?;
            if used > 0 {
                return Err(Fail::Mine(Error::Conflict(format!(
                    "package {id} is used by {used} advertisement(s); cancel them first"
                ))));
            }
            tx.execute("DELETE FROM status WHERE action_id IN (SELECT ac.id FROM actions ac JOIN advertisements a ON ac.advertisement_id = a.id JOIN programs p ON a.program_id = p.id WHERE p.package_id = $1)", &[&id]).await?;
            tx.execute("DELETE FROM actions WHERE advertisement_id IN (SELECT a.id FROM advertisements a JOIN programs p ON a.program_id = p.id WHERE p.package_id = $1)", &[&id]).await?;
            tx.execute("DELETE FROM advertisements WHERE program_id IN (SELECT id FROM programs WHERE package_id = $1)", &[&id]).await?;
            tx.execute("DELETE FROM programs WHERE package_id = $1", &[&id]).await?;
            let n = tx.execute("DELETE FROM packages WHERE id = $1", &[&id]).await?;
            if n == 0 {
                return Err(Fail::Mine(Error::NotFound(format!("package {id}"))));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn add_program(&self, p: &Program) -> Result<i64> {
        let platforms = json(&p.platforms).map_err(|f| rows::named("add a program", f))?;
        let sql = "INSERT INTO programs (package_id, name, command, platforms, max_run_time, device_class, signed_program) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
        let params = p![
            p.package_id,
            p.name.clone(),
            p.command.clone(),
            platforms,
            p.max_run_time as i64,
            p.device_class.to_string(),
            p.signed_program.clone()
        ];
        one(self.rows("add a program", sql.to_string(), params, id_of)?)
            .ok_or_else(|| Error::NotFound("the new program".into()))
    }

    fn programs(&self) -> Result<Vec<Program>> {
        let sql = "SELECT id, package_id, name, command, platforms, max_run_time, device_class, signed_program FROM programs ORDER BY id";
        self.rows("read programs", sql.to_string(), p![], rows::program)
    }

    fn add_collection(&self, name: &str, tenant: &str, rule: &CollectionRule) -> Result<i64> {
        let rule = json(rule).map_err(|f| rows::named("add a collection", f))?;
        let sql = "INSERT INTO collections (name, tenant, rule) VALUES ($1, $2, $3) RETURNING id";
        let p = p![name.to_string(), tenant.to_string(), rule];
        one(self.rows("add a collection", sql.to_string(), p, id_of)?)
            .ok_or_else(|| Error::NotFound("the new collection".into()))
    }

    fn add_member(&self, collection_id: i64, device_id: i64) -> Result<()> {
        let sql = "INSERT INTO collection_members (collection_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        self.exec("add a collection member", sql, p![collection_id, device_id]).map(|_| ())
    }

    fn set_collection_window(&self, id: i64, window: Option<&MaintenanceWindow>) -> Result<bool> {
        let sql = "UPDATE collections SET maintenance_window = $2 WHERE id = $1";
        Ok(self.exec(
            "set a collection's maintenance window",
            sql,
            p![id, window.map(|w| w.to_string())],
        )? > 0)
    }

    fn collections(&self) -> Result<Vec<Collection>> {
        let mut members: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let sql = "SELECT collection_id, device_id FROM collection_members ORDER BY device_id";
        let pairs = self.rows("read collections", sql.to_string(), p![], |r| {
            Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?))
        })?;
        for (c, d) in pairs {
            members.entry(c).or_default().push(d);
        }
        let sql = "SELECT id, name, rule, tenant, maintenance_window FROM collections ORDER BY id";
        let mut out = self.rows("read collections", sql.to_string(), p![], rows::collection)?;
        for c in &mut out {
            c.members = members.remove(&c.id).unwrap_or_default();
        }
        Ok(out)
    }

    fn add_advertisement(&self, a: &Advertisement) -> Result<i64> {
        let sql = "INSERT INTO advertisements (name, program_id, collection_id, kind, start_time, expires, maintenance_window, created, canceled, rerun, allow_downgrade) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10) RETURNING id";
        let p = p![
            a.name.clone(),
            a.program_id,
            a.collection_id,
            a.kind.as_str().to_string(),
            a.start_time,
            a.expires,
            a.window.map(|w| w.to_string()),
            a.created,
            a.rerun.as_str().to_string(),
            i64::from(a.allow_downgrade)
        ];
        one(self.rows("add an advertisement", sql.to_string(), p, id_of)?)
            .ok_or_else(|| Error::NotFound("the new advertisement".into()))
    }

    fn advertisements(&self) -> Result<Vec<Advertisement>> {
        let sql = "SELECT id, name, program_id, collection_id, kind, start_time, expires, maintenance_window, created, canceled, rerun, allow_downgrade FROM advertisements ORDER BY id";
        self.rows("read advertisements", sql.to_string(), p![], rows::advertisement)
    }

    fn cancel_advertisement(&self, id: i64, now: i64) -> Result<usize> {
        let pool = self.pool.clone();
        self.run("cancel an advertisement", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            if tx.execute("UPDATE advertisements SET canceled = 1 WHERE id = $1", &[&id]).await? == 0 {
                return Err(Fail::Mine(Error::NotFound(format!("advertisement {id}"))));
            }
            let moved = tx
                .execute(
                    "UPDATE actions SET status = 'canceling', updated = $2 WHERE advertisement_id = $1 \
                     AND status IN ('waiting', 'scheduled', 'retrieved', 'running')",
                    &[&id, &now],
                )
                .await?;
            tx.commit().await?;
            Ok(usize::try_from(moved).unwrap_or(usize::MAX))
        })
    }

    fn ensure_action(
        &self,
        advertisement_id: i64,
        device_id: i64,
        status: ActionStatus,
        now: i64,
    ) -> Result<Action> {
        let pool = self.pool.clone();
        self.run("create an action", async move {
            let c = pool.get().await?;
            let insert = c
                .prepare_cached(
                    "INSERT INTO actions (advertisement_id, device_id, status, created, updated) \
                     VALUES ($1, $2, $4, $3, $3) ON CONFLICT (advertisement_id, device_id) DO NOTHING",
                )
                .await?;
            c.execute(&insert, &[&advertisement_id, &device_id, &now, &status.as_str()]).await?;
            let select = c
                .prepare_cached(&format!(
                    "SELECT {ACTION_COLS} FROM actions WHERE advertisement_id = $1 AND device_id = $2"
                ))
                .await?;
            rows::action(&c.query_one(&select, &[&advertisement_id, &device_id]).await?)
        })
    }

    fn actions(&self) -> Result<Vec<Action>> {
        let sql = format!("SELECT {ACTION_COLS} FROM actions ORDER BY id");
        self.rows("read actions", sql, p![], rows::action)
    }

    fn actions_of_device(&self, device_id: i64) -> Result<Vec<Action>> {
        let sql = format!("SELECT {ACTION_COLS} FROM actions WHERE device_id = $1 ORDER BY id");
        self.rows("read a device's actions", sql, p![device_id], rows::action)
    }

    fn action(&self, id: i64) -> Result<Option<Action>> {
        let sql = format!("SELECT {ACTION_COLS} FROM actions WHERE id = $1");
        Ok(one(self.rows("read an action", sql, p![id], rows::action)?))
    }

    fn mark_retrieved(&self, id: i64, now: i64) -> Result<()> {
        let sql = "UPDATE actions SET status = 'retrieved', updated = $2 WHERE id = $1 AND status = 'scheduled'";
        self.exec("mark an action retrieved", sql, p![id, now]).map(|_| ())
    }

    fn apply_feedback(
        &self,
        action_id: i64,
        record: &StatusRecord,
        decide: &dyn Fn(ActionStatus) -> Result<ActionStatus>,
    ) -> Result<Option<Action>> {
        for _ in 0..FEEDBACK_ATTEMPTS {
            // Before the state machine: a resent final report finds its action closed.
            let Some((current, seen)) = self.action_and_report(action_id, record)? else {
                return Err(Error::NotFound(format!("action {action_id}")));
            };
            if seen {
                return Ok(None);
            }
            let next = decide(current.status)?;
            match self.move_action(action_id, current.status, next, record)? {
                Moved::Done(a) => return Ok(Some(a)),
                Moved::Seen => return Ok(None),
                // Another instance moved it between the read and the write: decide again.
                Moved::Raced => continue,
            }
        }
        Err(Error::Conflict(format!(
            "action {action_id} kept changing while feedback was stored; the device will resend it"
        )))
    }

    fn add_status(&self, record: &StatusRecord) -> Result<Option<i64>> {
        let r = record.clone();
        let pool = self.pool.clone();
        self.run("store a status message", async move {
            let c = pool.get().await?;
            insert_status(&c, &r).await
        })
    }

    fn statuses_for_device(&self, device_id: i64) -> Result<Vec<StatusRecord>> {
        let sql = format!("SELECT {STATUS_COLS} FROM status WHERE device_id = $1 ORDER BY id");
        self.rows("read status records", sql, p![device_id], rows::status)
    }

    fn put_crl(&self, issuer: &str, pem: &str, this_update: i64, now: i64) -> Result<bool> {
        let sql = "INSERT INTO crls (issuer, pem, this_update, added) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (issuer) DO UPDATE SET pem = excluded.pem, this_update = excluded.this_update, added = excluded.added \
                   WHERE crls.this_update <= excluded.this_update";
        let p = p![issuer.to_string(), pem.to_string(), this_update, now];
        Ok(self.exec("store a revocation list", sql, p)? > 0)
    }

    fn crls(&self) -> Result<Vec<(String, String)>> {
        let sql = "SELECT issuer, pem FROM crls ORDER BY issuer";
        self.rows("read revocation lists", sql.to_string(), p![], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }

    fn statuses_for_action(&self, action_id: i64) -> Result<Vec<StatusRecord>> {
        let sql = format!("SELECT {STATUS_COLS} FROM status WHERE action_id = $1 ORDER BY id");
        self.rows("read status records", sql, p![action_id], rows::status)
    }
}

/// How an attempt to move an action went.
enum Moved {
    Done(Action),
    Seen,
    Raced,
}

/// Inserts a status record; `None` when the device sent this report before.
async fn insert_status(
    c: &impl deadpool_postgres::GenericClient,
    s: &StatusRecord,
) -> std::result::Result<Option<i64>, Fail> {
    let st = c
        .prepare_cached(
            "INSERT INTO status (device_id, action_id, received, source, execution, finished, message_id, hresult, component, details, report_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (device_id, report_id) WHERE report_id IS NOT NULL DO NOTHING RETURNING id",
        )
        .await?;
    let rows = c
        .query(
            &st,
            &[
                &s.device_id,
                &s.action_id,
                &s.received,
                &s.source,
                &s.execution.map(|e| e.as_str()),
                &s.finished.map(|f| f.as_str()),
                &s.message_id.map(i64::from),
                &s.hresult,
                &s.component,
                &json(&s.details)?,
                &s.report_id,
            ],
        )
        .await?;
    rows.first().map(id_of).transpose()
}

impl PgStore {
    /// An action, and whether the device sent the report `s` names before: one round trip.
    fn action_and_report(&self, id: i64, s: &StatusRecord) -> Result<Option<(Action, bool)>> {
        let sql = format!(
            "SELECT {ACTION_COLS}, EXISTS (SELECT 1 FROM status WHERE device_id = $2 AND report_id = $3) \
             FROM actions WHERE id = $1"
        );
        let p = p![id, s.device_id, s.report_id.clone()];
        let found =
            self.rows("store feedback", sql, p, |r| Ok((rows::action(r)?, r.try_get(7)?)))?;
        Ok(one(found))
    }

    /// Moves action `id` from `from` to `to` and stores `record`, in one transaction, if the
    /// action is still in `from` and the report is new.
    fn move_action(
        &self,
        id: i64,
        from: ActionStatus,
        to: ActionStatus,
        record: &StatusRecord,
    ) -> Result<Moved> {
        let r = record.clone();
        let pool = self.pool.clone();
        self.run("store feedback", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let sql = format!(
                "UPDATE actions SET status = $3, updated = $4, last_code = COALESCE($5, last_code) \
                 WHERE id = $1 AND status = $2 RETURNING {ACTION_COLS}"
            );
            let st = tx.prepare_cached(&sql).await?;
            let moved = tx
                .query(
                    &st,
                    &[&id, &from.as_str(), &to.as_str(), &r.received, &r.message_id.map(i64::from)],
                )
                .await?;
            let Some(row) = moved.first() else { return Ok(Moved::Raced) };
            let action = rows::action(row)?;
            if insert_status(&tx, &r).await?.is_none() {
                // Resent, and stored by another instance meanwhile: nothing changes.
                return Ok(Moved::Seen);
            }
            tx.commit().await?;
            Ok(Moved::Done(action))
        })
    }
}
