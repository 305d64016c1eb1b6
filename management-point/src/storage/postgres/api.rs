//! The PostgreSQL twin of the SQLite store's management API tables ([`ApiStorage`]).

use super::PgStore;
use super::rows::parsed;
use crate::api::{ApiToken, AuditEntry, Role};
use crate::error::Result;
use crate::storage::api::ApiStorage;

const TOKEN_COLS: &str = "id, name, role, tenant, token_sha256, created, expires, revoked";

fn token_row(r: &tokio_postgres::Row) -> Result<ApiToken, super::rows::Fail> {
    let id: i64 = r.try_get(0)?;
    Ok(ApiToken {
        id,
        name: r.try_get(1)?,
        role: parsed("api_tokens", id, "role", r.try_get::<_, String>(2)?.parse())?,
        tenant: r.try_get(3)?,
        token_sha256: r.try_get(4)?,
        created: r.try_get(5)?,
        expires: r.try_get(6)?,
        revoked: r.try_get(7)?,
    })
}

impl ApiStorage for PgStore {
    fn add_api_token(&self, t: &ApiToken) -> Result<i64> {
        let t = t.clone();
        let pool = self.pool.clone();
        self.run("add an API token", async move {
            let c = pool.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO api_tokens (name, role, tenant, token_sha256, created, expires, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&t.name, &t.role.as_str(), &t.tenant, &t.token_sha256, &t.created, &t.expires, &t.revoked],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let pool = self.pool.clone();
        self.run("read API tokens", async move {
            let c = pool.get().await?;
            let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens ORDER BY id");
            c.query(&sql, &[]).await?.iter().map(token_row).collect()
        })
    }

    fn api_token_by_hash(&self, sha256: &str) -> Result<Option<ApiToken>> {
        let sha256 = sha256.to_string();
        let pool = self.pool.clone();
        self.run("look up an API token", async move {
            let c = pool.get().await?;
            let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE token_sha256 = $1");
            c.query_opt(&sql, &[&sha256]).await?.as_ref().map(token_row).transpose()
        })
    }

    fn revoke_api_token(&self, name: &str, now: i64) -> Result<bool> {
        let name = name.to_string();
        let pool = self.pool.clone();
        self.run("revoke an API token", async move {
            let c = pool.get().await?;
            let n = c
                .execute(
                    "UPDATE api_tokens SET revoked = $2 WHERE name = $1 AND revoked IS NULL",
                    &[&name, &now],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn add_audit(&self, e: &AuditEntry) -> Result<i64> {
        let e = e.clone();
        let pool = self.pool.clone();
        self.run("append to the audit trail", async move {
            let c = pool.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO audit (time, actor, source, action, target, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&e.time, &e.actor, &e.source, &e.action, &e.target, &e.before, &e.after],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn audit(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let pool = self.pool.clone();
        self.run("read the audit trail", async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT id, time, actor, source, action, target, before, after FROM audit WHERE time >= $1 ORDER BY time DESC, id DESC LIMIT $2",
                    &[&since, &(limit as i64)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditEntry {
                        id: r.try_get(0)?,
                        time: r.try_get(1)?,
                        actor: r.try_get(2)?,
                        source: r.try_get(3)?,
                        action: r.try_get(4)?,
                        target: r.try_get(5)?,
                        before: r.try_get(6)?,
                        after: r.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<AuditEntry>, _>>()
                .map(|mut v| {
                    // The newest `limit`, oldest first.
                    v.reverse();
                    v
                })
        })
    }

    fn set_administrator_role(&self, name: &str, role: Role) -> Result<bool> {
        let name = name.to_string();
        let pool = self.pool.clone();
        self.run("set an administrator's role", async move {
            let c = pool.get().await?;
            let n = c
                .execute(
                    "UPDATE administrators SET role = $2 WHERE name = $1",
                    &[&name, &role.as_str()],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn administrator_roles(&self) -> Result<Vec<(String, Role)>> {
        let pool = self.pool.clone();
        self.run("read the administrators' roles", async move {
            let c = pool.get().await?;
            let rows = c.query("SELECT name, role FROM administrators ORDER BY name", &[]).await?;
            rows.iter()
                .map(|r| {
                    let name: String = r.try_get(0)?;
                    let role = r.try_get::<_, String>(1)?.parse().map_err(|e: String| {
                        super::rows::corrupt("administrators", &name, format!("role: {e}"))
                    })?;
                    Ok((name, role))
                })
                .collect()
        })
    }
}
