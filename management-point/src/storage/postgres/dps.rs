//! The PostgreSQL twin of the SQLite store's distribution point tables ([`DpStorage`]).

use super::PgStore;
use super::rows::parsed;
use crate::distribution::{DistributionPoint, DpContent, DpHealth};
use crate::error::Result;
use crate::storage::dps::DpStorage;

const DP_COLS: &str = "id, name, url, site, boundaries, pull_from, rate_limit_kib, copy_window, token_sha256, link_key, created, health";
const CONTENT_COLS: &str = "dp_id, package_id, state, source_version, last_copied, reason, since, refresh, validate, replaces";

fn dp_row(r: &tokio_postgres::Row) -> Result<DistributionPoint, super::rows::Fail> {
    let id: i64 = r.try_get(0)?;
    let json = |col: usize| r.try_get::<_, String>(col);
    Ok(DistributionPoint {
        id,
        name: r.try_get(1)?,
        url: r.try_get(2)?,
        site: r.try_get(3)?,
        boundaries: parsed(
            "distribution_points",
            id,
            "boundaries",
            serde_json::from_str(&json(4)?),
        )?,
        pull_from: r.try_get(5)?,
        rate_limit_kib: r.try_get::<_, i64>(6)?.max(0) as u64,
        window: r.try_get(7)?,
        token_sha256: r.try_get(8)?,
        link_key: r.try_get(9)?,
        created: r.try_get(10)?,
        health: parsed("distribution_points", id, "health", serde_json::from_str(&json(11)?))?,
    })
}

fn content_row(r: &tokio_postgres::Row) -> Result<DpContent, super::rows::Fail> {
    let dp_id: i64 = r.try_get(0)?;
    Ok(DpContent {
        dp_id,
        package_id: r.try_get(1)?,
        state: parsed("dp_content", dp_id, "state", r.try_get::<_, String>(2)?.parse())?,
        source_version: r.try_get(3)?,
        last_copied: r.try_get(4)?,
        reason: r.try_get(5)?,
        since: r.try_get(6)?,
        refresh: r.try_get::<_, i64>(7)?.clamp(0, u32::MAX.into()) as u32,
        validate: r.try_get::<_, i64>(8)?.clamp(0, u32::MAX.into()) as u32,
        replaces: r.try_get(9)?,
    })
}

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl DpStorage for PgStore {
    fn add_dp(&self, d: &DistributionPoint) -> Result<i64> {
        let d = d.clone();
        let pool = self.pool.clone();
        self.run("add a distribution point", async move {
            let c = pool.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO distribution_points (name, url, site, boundaries, pull_from, rate_limit_kib, copy_window, token_sha256, link_key, created, health) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                    &[&d.name, &d.url, &d.site, &text(&d.boundaries), &d.pull_from, &(d.rate_limit_kib as i64), &d.window, &d.token_sha256, &d.link_key, &d.created, &text(&d.health)],
                )
                .await?;
            Ok(row.try_get(0)?)
        })
    }

    fn dps(&self) -> Result<Vec<DistributionPoint>> {
        let pool = self.pool.clone();
        self.run("read distribution points", async move {
            let c = pool.get().await?;
            let sql = format!("SELECT {DP_COLS} FROM distribution_points ORDER BY id");
            c.query(&sql, &[]).await?.iter().map(dp_row).collect()
        })
    }

    fn set_dp_health(&self, id: i64, h: &DpHealth) -> Result<()> {
        let h = text(h);
        let pool = self.pool.clone();
        self.run("record a distribution point's health", async move {
            let c = pool.get().await?;
            c.execute("UPDATE distribution_points SET health = $2 WHERE id = $1", &[&id, &h])
                .await?;
            Ok(())
        })
    }

    fn dp_contents(&self) -> Result<Vec<DpContent>> {
        let pool = self.pool.clone();
        self.run("read distribution point content", async move {
            let c = pool.get().await?;
            let sql = format!("SELECT {CONTENT_COLS} FROM dp_content ORDER BY dp_id, package_id");
            c.query(&sql, &[]).await?.iter().map(content_row).collect()
        })
    }

    fn put_dp_contents(&self, rows: &[DpContent]) -> Result<()> {
        let rows = rows.to_vec();
        let pool = self.pool.clone();
        self.run("record distribution point content", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let sql = format!("INSERT INTO dp_content ({CONTENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (dp_id, package_id) DO UPDATE SET state = excluded.state, source_version = excluded.source_version, last_copied = excluded.last_copied, reason = excluded.reason, since = excluded.since, refresh = excluded.refresh, validate = excluded.validate, replaces = excluded.replaces");
            for r in &rows {
                tx.execute(
                    &sql,
                    &[&r.dp_id, &r.package_id, &r.state.as_str(), &r.source_version, &r.last_copied, &r.reason, &r.since, &i64::from(r.refresh), &i64::from(r.validate), &r.replaces],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn swap_dp_contents(&self, swaps: &[(DpContent, Option<DpContent>)]) -> Result<usize> {
        let swaps = swaps.to_vec();
        let pool = self.pool.clone();
        self.run("record distribution point content", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let read = format!(
                "SELECT {CONTENT_COLS} FROM dp_content WHERE dp_id = $1 AND package_id = $2 FOR UPDATE"
            );
            let mut n = 0;
            for (was, now) in &swaps {
                let current = tx.query_opt(&read, &[&was.dp_id, &was.package_id]).await?;
                let current = current.as_ref().map(content_row).transpose()?;
                if current.as_ref() != Some(was) {
                    continue;
                }
                match now {
                    Some(r) => tx.execute(
                        "UPDATE dp_content SET state = $3, source_version = $4, last_copied = $5, reason = $6, since = $7, refresh = $8, validate = $9, replaces = $10 WHERE dp_id = $1 AND package_id = $2",
                        &[&r.dp_id, &r.package_id, &r.state.as_str(), &r.source_version, &r.last_copied, &r.reason, &r.since, &i64::from(r.refresh), &i64::from(r.validate), &r.replaces],
                    )
                    .await?,
                    None => tx.execute(
                        "DELETE FROM dp_content WHERE dp_id = $1 AND package_id = $2",
                        &[&was.dp_id, &was.package_id],
                    )
                    .await?,
                };
                n += 1;
            }
            tx.commit().await?;
            Ok(n)
        })
    }

    fn remove_dp(&self, id: i64) -> Result<()> {
        let pool = self.pool.clone();
        self.run("remove a distribution point", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE distribution_points SET pull_from = NULL WHERE pull_from = $1",
                &[&id],
            )
            .await?;
            tx.execute("DELETE FROM dp_content WHERE dp_id = $1", &[&id]).await?;
            tx.execute("DELETE FROM distribution_points WHERE id = $1", &[&id]).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
