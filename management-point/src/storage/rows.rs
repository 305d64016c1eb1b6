//! How the SQLite store's rows map to the model: column lists, row readers that report a
//! value that does not parse as a corrupt row (never a silent default), JSON columns, and the
//! status record writer.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Error;
use crate::model::*;

/// A stored value that does not parse: carried through rusqlite's row mapping, then reported
/// as [`Error::CorruptRow`].
#[derive(Debug)]
pub(super) struct Corrupt {
    table: &'static str,
    row: String,
    reason: String,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}: {}", self.table, self.row, self.reason)
    }
}

impl std::error::Error for Corrupt {}

/// Parses a stored value of `table` row `row`, naming both when it does not parse.
pub(super) fn parsed<T, E: std::fmt::Display>(
    table: &'static str,
    row: impl std::fmt::Display,
    column: &str,
    value: std::result::Result<T, E>,
) -> rusqlite::Result<T> {
    value.map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(Corrupt { table, row: row.to_string(), reason: format!("{column}: {e}") }),
        )
    })
}

/// The project's error for a driver error while doing `what`.
pub(super) fn db(what: &str, e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::Conflict(msg.unwrap_or_else(|| format!("{what}: already exists")))
        }
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => match inner.downcast::<Corrupt>()
        {
            Ok(c) => Error::CorruptRow { table: c.table, row: c.row, reason: c.reason },
            Err(inner) => Error::Database {
                what: what.to_string(),
                source: rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Null,
                    inner,
                ),
            },
        },
        source => Error::Database { what: what.to_string(), source },
    }
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> rusqlite::Result<String> {
    serde_json::to_string(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    row: i64,
    column: &str,
    s: &str,
) -> rusqlite::Result<T> {
    parsed(table, row, column, serde_json::from_str(s))
}

pub(super) fn device_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let id: i64 = r.get(0)?;
    Ok(Device {
        id,
        tenant: r.get(1)?,
        controller_id: r.get(2)?,
        token_sha256: r.get(3)?,
        attributes: from_json("devices", id, "attributes", &r.get::<_, String>(4)?)?,
        created: r.get(5)?,
        last_seen: r.get(6)?,
        registered_by: r.get(7)?,
        auto_confirm: match r.get::<_, Option<String>>(8)? {
            Some(j) => Some(from_json("devices", id, "auto_confirm", &j)?),
            None => None,
        },
        cert_sha256: r.get(9)?,
    })
}

pub(crate) const DEVICE_COLS: &str = "id, tenant, controller_id, token_sha256, attributes, created, last_seen, registered_by, auto_confirm, cert_sha256";
pub(crate) const ACTION_COLS: &str =
    "id, advertisement_id, device_id, status, created, updated, last_code";
pub(crate) const STATUS_COLS: &str = "id, device_id, action_id, received, source, execution, finished, message_id, hresult, component, details, report_id";

pub(super) fn action_row(r: &Row<'_>) -> rusqlite::Result<Action> {
    let id: i64 = r.get(0)?;
    let status: String = r.get(3)?;
    Ok(Action {
        id,
        advertisement_id: r.get(1)?,
        device_id: r.get(2)?,
        status: parsed("actions", id, "status", status.parse())?,
        created: r.get(4)?,
        updated: r.get(5)?,
        last_code: r.get(6)?,
    })
}

pub(super) fn optional<T: std::str::FromStr<Err = String>>(
    id: i64,
    column: &str,
    v: Option<String>,
) -> rusqlite::Result<Option<T>> {
    v.map(|s| parsed("status", id, column, s.parse())).transpose()
}

pub(super) fn status_row(r: &Row<'_>) -> rusqlite::Result<StatusRecord> {
    let id: i64 = r.get(0)?;
    Ok(StatusRecord {
        id,
        device_id: r.get(1)?,
        action_id: r.get(2)?,
        received: r.get(3)?,
        source: r.get(4)?,
        execution: optional(id, "execution", r.get(5)?)?,
        finished: optional(id, "finished", r.get(6)?)?,
        message_id: r.get(7)?,
        hresult: r.get(8)?,
        component: r.get(9)?,
        details: from_json("status", id, "details", &r.get::<_, String>(10)?)?,
        report_id: r.get(11)?,
    })
}

/// Whether the device already sent the report `s` names.
pub(super) fn seen_report(c: &Connection, s: &StatusRecord) -> rusqlite::Result<bool> {
    let Some(id) = &s.report_id else { return Ok(false) };
    c.query_row(
        "SELECT 1 FROM status WHERE device_id = ?1 AND report_id = ?2",
        params![s.device_id, id],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

pub(super) fn insert_status(c: &Connection, s: &StatusRecord) -> rusqlite::Result<i64> {
    c.execute(
        "INSERT INTO status (device_id, action_id, received, source, execution, finished, message_id, hresult, component, details, report_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            s.device_id,
            s.action_id,
            s.received,
            s.source,
            s.execution.map(|e| e.as_str()),
            s.finished.map(|f| f.as_str()),
            s.message_id,
            s.hresult,
            s.component,
            json(&s.details)?,
            s.report_id
        ],
    )?;
    Ok(c.last_insert_rowid())
}

pub(super) fn admin_cert_row(r: &Row<'_>) -> rusqlite::Result<AdminCert> {
    Ok(AdminCert {
        sha256: r.get(0)?,
        name: r.get(1)?,
        subject: r.get(2)?,
        not_before: r.get(3)?,
        not_after: r.get(4)?,
    })
}

/// Every package with its artifacts.
pub(super) fn read_packages(c: &mut Connection) -> rusqlite::Result<Vec<Package>> {
    let mut artifacts: BTreeMap<i64, Vec<ArtifactRecord>> = BTreeMap::new();
    let mut st = c.prepare("SELECT package_id, filename, size, sha256, sha1, md5, path FROM artifacts ORDER BY package_id, filename")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            ArtifactRecord {
                filename: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                sha256: r.get(3)?,
                sha1: r.get(4)?,
                md5: r.get(5)?,
                path: r.get::<_, Option<String>>(6)?.map(Into::into),
            },
        ))
    })?;
    for row in rows {
        let (pid, a) = row?;
        artifacts.entry(pid).or_default().push(a);
    }
    let mut st = c.prepare("SELECT id, name, version, kind, publisher, distribution_point, created, programs, config_items FROM packages ORDER BY id")?;
    let rows = st.query_map([], |r| {
        let id: i64 = r.get(0)?;
        let kind: String = r.get(3)?;
        Ok(Package {
            id,
            name: r.get(1)?,
            version: r.get(2)?,
            kind: parsed("packages", id, "kind", kind.parse())?,
            publisher: r.get(4)?,
            distribution_point: r.get(5)?,
            created: r.get(6)?,
            artifacts: Vec::new(),
            programs: from_json("packages", id, "programs", &r.get::<_, String>(7)?)?,
            config_items: from_json("packages", id, "config_items", &r.get::<_, String>(8)?)?,
        })
    })?;
    let mut out: Vec<Package> = rows.collect::<rusqlite::Result<_>>()?;
    for p in &mut out {
        p.artifacts = artifacts.remove(&p.id).unwrap_or_default();
    }
    Ok(out)
}

/// Every collection with its explicit members.
pub(super) fn read_collections(c: &mut Connection) -> rusqlite::Result<Vec<Collection>> {
    let mut members: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut st =
        c.prepare("SELECT collection_id, device_id FROM collection_members ORDER BY device_id")?;
    for row in st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (cid, did) = row?;
        members.entry(cid).or_default().push(did);
    }
    let mut st = c.prepare(
        "SELECT id, name, rule, tenant, maintenance_window FROM collections ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        let id: i64 = r.get(0)?;
        let rule: String = r.get(2)?;
        Ok(Collection {
            id,
            name: r.get(1)?,
            tenant: r.get(3)?,
            rule: from_json("collections", id, "rule", &rule)?,
            members: Vec::new(),
            window: match r.get::<_, Option<String>>(4)? {
                Some(w) => Some(parsed(
                    "collections",
                    id,
                    "maintenance_window",
                    MaintenanceWindow::parse(&w),
                )?),
                None => None,
            },
        })
    })?;
    let mut out: Vec<Collection> = rows.collect::<rusqlite::Result<_>>()?;
    for col in &mut out {
        col.members = members.remove(&col.id).unwrap_or_default();
    }
    Ok(out)
}
