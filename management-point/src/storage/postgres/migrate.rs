//! `dmmp migrate`: a fleet's state copied from a SQLite file into an empty PostgreSQL
//! database, row for row with its ids, in one transaction (a failure leaves the target empty),
//! with every table's count compared at the end.

use std::path::Path;

use rusqlite::types::Value;

use super::PgStore;
use super::rows::Fail;
use crate::error::{Error, Result};
use crate::storage::SqliteStore;
use crate::storage::rows::db;

/// Every table, parents before children.
const TABLES: &[&str] = &[
    "devices",
    "packages",
    "artifacts",
    "programs",
    "collections",
    "collection_members",
    "advertisements",
    "actions",
    "status",
    "crls",
    "revoked_certificates",
    "config_items",
    "administrators",
    "administrator_certificates",
    "update_repositories",
    "updates",
    "update_rules",
    "update_deployments",
    "update_states",
    "update_scans",
    "distribution_points",
    "dp_content",
];

/// Tables whose `id` a sequence hands out.
const SERIAL: &[&str] = &[
    "devices",
    "packages",
    "programs",
    "collections",
    "advertisements",
    "actions",
    "status",
    "update_repositories",
    "updates",
    "update_rules",
    "update_deployments",
    "distribution_points",
];

/// Rows read and written at a time.
const BATCH: usize = 500;

/// A table's rows as SQLite holds them.
struct Table {
    name: &'static str,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// Reads one table of the SQLite file. Tables are read whole, a batch at a time: a fleet's
/// state fits in memory where its database runs.
fn read_table(c: &rusqlite::Connection, name: &'static str) -> Result<Table> {
    let what = format!("read {name}");
    let mut columns = Vec::new();
    let mut st = c.prepare(&format!("PRAGMA table_info({name})")).map_err(|e| db(&what, e))?;
    for col in st.query_map([], |r| r.get::<_, String>(1)).map_err(|e| db(&what, e))? {
        columns.push(col.map_err(|e| db(&what, e))?);
    }
    let mut rows = Vec::new();
    let mut last = i64::MIN;
    loop {
        let sql = format!(
            "SELECT rowid, {} FROM {name} WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}",
            columns.join(", ")
        );
        let mut st = c.prepare(&sql).map_err(|e| db(&what, e))?;
        let batch: Vec<(i64, Vec<Value>)> = st
            .query_map([last], |r| {
                let values = (1..=columns.len())
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<rusqlite::Result<_>>()?;
                Ok((r.get(0)?, values))
            })
            .map_err(|e| db(&what, e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| db(&what, e))?;
        let n = batch.len();
        for (rowid, values) in batch {
            last = rowid;
            rows.push(values);
        }
        if n < BATCH {
            return Ok(Table { name, columns, rows });
        }
    }
}

/// A SQLite value as a parameter of a PostgreSQL `bigint` or `text` column.
fn param(v: &Value, bigint: bool) -> Box<dyn tokio_postgres::types::ToSql + Send + Sync> {
    match (v, bigint) {
        (Value::Integer(i), true) => Box::new(Some(*i)),
        (Value::Real(f), true) => Box::new(Some(*f as i64)),
        (Value::Null, true) => Box::new(None::<i64>),
        (Value::Null, false) => Box::new(None::<String>),
        (Value::Integer(i), false) => Box::new(Some(i.to_string())),
        (Value::Real(f), false) => Box::new(Some(f.to_string())),
        (Value::Text(t), true) => Box::new(t.parse::<i64>().ok()),
        (Value::Text(t), false) => Box::new(Some(t.clone())),
        (Value::Blob(b), _) => Box::new(Some(String::from_utf8_lossy(b).into_owned())),
    }
}

impl PgStore {
    /// Copies the SQLite file `from` into this (empty) database; returns each table with its
    /// row count, the same on both sides.
    pub fn copy_from_sqlite(&self, from: &Path) -> Result<Vec<(String, i64)>> {
        if !from.exists() {
            return Err(Error::NotFound(format!("SQLite database {}", from.display())));
        }
        // Opening migrates it to the schema version this dmmp knows, as the target is.
        drop(SqliteStore::open(from)?);
        let c =
            rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| db(&format!("open {}", from.display()), e))?;
        let tables: Vec<Table> = TABLES.iter().map(|t| read_table(&c, t)).collect::<Result<_>>()?;
        let pool = self.pool.clone();
        self.run("copy the SQLite database", async move {
            let mut conn = pool.get().await?;
            let tx = conn.transaction().await?;
            for t in TABLES {
                let n: i64 = tx.query_one(&format!("SELECT COUNT(*) FROM {t}"), &[]).await?.try_get(0)?;
                if n > 0 {
                    return Err(Fail::Mine(Error::Conflict(format!(
                        "the target database is not empty ({t} has {n} rows): dmmp migrate writes only into an empty one"
                    ))));
                }
            }
            let mut counts = Vec::new();
            for t in &tables {
                copy_table(&tx, t).await?;
                let n: i64 =
                    tx.query_one(&format!("SELECT COUNT(*) FROM {}", t.name), &[]).await?.try_get(0)?;
                if n != t.rows.len() as i64 {
                    return Err(Fail::Mine(Error::Conflict(format!(
                        "{}: {} rows read, {n} written; nothing was kept",
                        t.name,
                        t.rows.len()
                    ))));
                }
                counts.push((t.name.to_string(), n));
            }
            for t in SERIAL {
                tx.execute(
                    &format!("SELECT setval(pg_get_serial_sequence('{t}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {t}"),
                    &[],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(counts)
        })
    }
}

/// Writes one table's rows, a batch per statement.
async fn copy_table(
    tx: &deadpool_postgres::Transaction<'_>,
    t: &Table,
) -> std::result::Result<(), Fail> {
    let types = tx
        .query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1",
            &[&t.name],
        )
        .await?;
    let mut bigint = Vec::new();
    for col in &t.columns {
        let ty = types
            .iter()
            .find(|r| r.try_get::<_, &str>(0).is_ok_and(|c| c == col))
            .and_then(|r| r.try_get::<_, String>(1).ok())
            .ok_or_else(|| {
                Fail::Mine(Error::Conflict(format!(
                    "{}.{col} is not in the PostgreSQL schema",
                    t.name
                )))
            })?;
        bigint.push(ty == "bigint");
    }
    for chunk in t.rows.chunks(BATCH) {
        let width = t.columns.len();
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            t.name,
            t.columns.join(", "),
            values.join(", ")
        );
        let params: Vec<_> = chunk
            .iter()
            .flat_map(|row| row.iter().zip(&bigint).map(|(v, b)| param(v, *b)))
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref() as _).collect();
        tx.execute(&sql, &refs).await?;
    }
    Ok(())
}
