//! How the SQLite store's rows map to the model: column lists, row readers that report a
//! value that does not parse as a corrupt row (never a silent default), JSON columns, and the
//! status record writer.

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
