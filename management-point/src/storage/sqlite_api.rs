//! The SQLite store's management API tables ([`ApiStorage`]).

use rusqlite::params;

use super::SqliteStore;
use super::api::ApiStorage;
use super::rows::parsed;
use crate::api::{ApiToken, AuditEntry, Role};
use crate::error::Result;

const TOKEN_COLS: &str = "id, name, role, tenant, token_sha256, created, expires, revoked";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    let id: i64 = r.get(0)?;
    Ok(ApiToken {
        id,
        name: r.get(1)?,
        role: parsed("api_tokens", id, "role", r.get::<_, String>(2)?.parse())?,
        tenant: r.get(3)?,
        token_sha256: r.get(4)?,
        created: r.get(5)?,
        expires: r.get(6)?,
        revoked: r.get(7)?,
    })
}

impl ApiStorage for SqliteStore {
    fn add_api_token(&self, t: &ApiToken) -> Result<i64> {
        self.with("add an API token", |c| {
            c.execute(
                "INSERT INTO api_tokens (name, role, tenant, token_sha256, created, expires, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.name, t.role.as_str(), t.tenant, t.token_sha256, t.created, t.expires, t.revoked],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        self.with("read API tokens", |c| {
            let mut st = c.prepare(&format!("SELECT {TOKEN_COLS} FROM api_tokens ORDER BY id"))?;
            st.query_map([], token_row)?.collect()
        })
    }

    fn api_token_by_hash(&self, sha256: &str) -> Result<Option<ApiToken>> {
        use rusqlite::OptionalExtension;
        self.with("look up an API token", |c| {
            c.query_row(
                &format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE token_sha256 = ?1"),
                [sha256],
                token_row,
            )
            .optional()
        })
    }

    fn revoke_api_token(&self, name: &str, now: i64) -> Result<bool> {
        self.with("revoke an API token", |c| {
            Ok(c.execute(
                "UPDATE api_tokens SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
                params![name, now],
            )? == 1)
        })
    }

    fn add_audit(&self, e: &AuditEntry) -> Result<i64> {
        self.with("append to the audit trail", |c| {
            c.execute(
                "INSERT INTO audit (time, actor, source, action, target, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![e.time, e.actor, e.source, e.action, e.target, e.before, e.after],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn set_administrator_role(&self, name: &str, role: Role) -> Result<bool> {
        self.with("set an administrator's role", |c| {
            Ok(c.execute(
                "UPDATE administrators SET role = ?2 WHERE name = ?1",
                params![name, role.as_str()],
            )? == 1)
        })
    }

    fn administrator_roles(&self) -> Result<Vec<(String, Role)>> {
        self.with("read the administrators' roles", |c| {
            let mut st = c.prepare("SELECT name, role FROM administrators ORDER BY name")?;
            st.query_map([], |r| {
                let name: String = r.get(0)?;
                let role = parsed("administrators", &name, "role", r.get::<_, String>(1)?.parse())?;
                Ok((name, role))
            })?
            .collect()
        })
    }

    fn audit(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.with("read the audit trail", |c| {
            let mut st = c.prepare(
                "SELECT id, time, actor, source, action, target, before, after FROM audit WHERE time >= ?1 ORDER BY time DESC, id DESC LIMIT ?2",
            )?;
            // The newest `limit`, oldest first.
            let rows: rusqlite::Result<Vec<AuditEntry>> = st.query_map(params![since, limit as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    actor: r.get(2)?,
                    source: r.get(3)?,
                    action: r.get(4)?,
                    target: r.get(5)?,
                    before: r.get(6)?,
                    after: r.get(7)?,
                })
            })?
            .collect();
            rows.map(|mut v| {
                v.reverse();
                v
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Even a writer with the file open cannot change or remove what the trail holds.
    #[test]
    fn the_audit_trail_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dmmp.db");
        let store = SqliteStore::open(&path).unwrap();
        let e = AuditEntry {
            id: 0,
            time: 1,
            actor: "dmmp (root)".into(),
            source: "dmmp".into(),
            action: "advertise".into(),
            target: "advertisement a".into(),
            before: None,
            after: None,
        };
        store.add_audit(&e).unwrap();
        let c = rusqlite::Connection::open(&path).unwrap();
        for sql in ["UPDATE audit SET actor = 'nobody'", "DELETE FROM audit"] {
            let err = c.execute(sql, []).unwrap_err().to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
        assert_eq!(store.audit(0, 10).unwrap()[0].actor, "dmmp (root)");
    }
}
