//! The SQLite store's distribution point tables ([`DpStorage`]).

use rusqlite::params;

use super::SqliteStore;
use super::dps::DpStorage;
use super::rows::parsed;
use crate::distribution::{DistributionPoint, DpContent, DpHealth};
use crate::error::Result;

const DP_COLS: &str = "id, name, url, site, boundaries, pull_from, rate_limit_kib, copy_window, token_sha256, link_key, created, health";
const CONTENT_COLS: &str = "dp_id, package_id, state, source_version, last_copied, reason, since, refresh, validate, replaces";

fn dp_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DistributionPoint> {
    let id: i64 = r.get(0)?;
    let json = |col: usize| r.get::<_, String>(col);
    Ok(DistributionPoint {
        id,
        name: r.get(1)?,
        url: r.get(2)?,
        site: r.get(3)?,
        boundaries: parsed(
            "distribution_points",
            id,
            "boundaries",
            serde_json::from_str(&json(4)?),
        )?,
        pull_from: r.get(5)?,
        rate_limit_kib: r.get::<_, i64>(6)?.max(0) as u64,
        window: r.get(7)?,
        token_sha256: r.get(8)?,
        link_key: r.get(9)?,
        created: r.get(10)?,
        health: parsed("distribution_points", id, "health", serde_json::from_str(&json(11)?))?,
    })
}

fn content_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DpContent> {
    let dp_id: i64 = r.get(0)?;
    Ok(DpContent {
        dp_id,
        package_id: r.get(1)?,
        state: parsed("dp_content", dp_id, "state", r.get::<_, String>(2)?.parse())?,
        source_version: r.get(3)?,
        last_copied: r.get(4)?,
        reason: r.get(5)?,
        since: r.get(6)?,
        refresh: r.get(7)?,
        validate: r.get(8)?,
        replaces: r.get(9)?,
    })
}

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl DpStorage for SqliteStore {
    fn add_dp(&self, d: &DistributionPoint) -> Result<i64> {
        self.with("add a distribution point", |c| {
            c.execute(
                "INSERT INTO distribution_points (name, url, site, boundaries, pull_from, rate_limit_kib, copy_window, token_sha256, link_key, created, health) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![d.name, d.url, d.site, text(&d.boundaries), d.pull_from, d.rate_limit_kib as i64, d.window, d.token_sha256, d.link_key, d.created, text(&d.health)],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn dps(&self) -> Result<Vec<DistributionPoint>> {
        self.with("read distribution points", |c| {
            let mut st =
                c.prepare(&format!("SELECT {DP_COLS} FROM distribution_points ORDER BY id"))?;
            st.query_map([], dp_row)?.collect()
        })
    }

    fn set_dp_health(&self, id: i64, h: &DpHealth) -> Result<()> {
        self.with("record a distribution point's health", |c| {
            c.execute(
                "UPDATE distribution_points SET health = ?2 WHERE id = ?1",
                params![id, text(h)],
            )?;
            Ok(())
        })
    }

    fn dp_contents(&self) -> Result<Vec<DpContent>> {
        self.with("read distribution point content", |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CONTENT_COLS} FROM dp_content ORDER BY dp_id, package_id"
            ))?;
            st.query_map([], content_row)?.collect()
        })
    }

    fn put_dp_contents(&self, rows: &[DpContent]) -> Result<()> {
        self.with("record distribution point content", |c| {
            let tx = c.transaction()?;
            for r in rows {
                tx.execute(
                    &format!("INSERT INTO dp_content ({CONTENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (dp_id, package_id) DO UPDATE SET state = excluded.state, source_version = excluded.source_version, last_copied = excluded.last_copied, reason = excluded.reason, since = excluded.since, refresh = excluded.refresh, validate = excluded.validate, replaces = excluded.replaces"),
                    params![r.dp_id, r.package_id, r.state.as_str(), r.source_version, r.last_copied, r.reason, r.since, r.refresh, r.validate, r.replaces],
                )?;
            }
            tx.commit()
        })
    }

    fn swap_dp_contents(&self, swaps: &[(DpContent, Option<DpContent>)]) -> Result<usize> {
        self.with("record distribution point content", |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for (was, now) in swaps {
                let current = {
                    use rusqlite::OptionalExtension;
                    tx.query_row(
                        &format!("SELECT {CONTENT_COLS} FROM dp_content WHERE dp_id = ?1 AND package_id = ?2"),
                        params![was.dp_id, was.package_id],
                        content_row,
                    )
                    .optional()?
                };
                if current.as_ref() != Some(was) {
                    continue;
                }
                match now {
                    Some(r) => tx.execute(
                        "UPDATE dp_content SET state = ?3, source_version = ?4, last_copied = ?5, reason = ?6, since = ?7, refresh = ?8, validate = ?9, replaces = ?10 WHERE dp_id = ?1 AND package_id = ?2",
                        params![r.dp_id, r.package_id, r.state.as_str(), r.source_version, r.last_copied, r.reason, r.since, r.refresh, r.validate, r.replaces],
                    )?,
                    None => tx.execute(
                        "DELETE FROM dp_content WHERE dp_id = ?1 AND package_id = ?2",
                        params![was.dp_id, was.package_id],
                    )?,
                };
                n += 1;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn remove_dp(&self, id: i64) -> Result<()> {
        self.with("remove a distribution point", |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE distribution_points SET pull_from = NULL WHERE pull_from = ?1",
                [id],
            )?;
            tx.execute("DELETE FROM dp_content WHERE dp_id = ?1", [id])?;
            tx.execute("DELETE FROM distribution_points WHERE id = ?1", [id])?;
            tx.commit()
        })
    }
}
