//! How the PostgreSQL store's rows map to the model: the same columns and JSON text as the
//! SQLite store's (so `dmmp migrate` copies values as they are), a value that does not parse
//! reported as a corrupt row, and the driver's errors as the project's.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::error::Error;
use crate::model::*;

pub(super) use crate::storage::rows::{ACTION_COLS, DEVICE_COLS, STATUS_COLS};

/// What goes wrong inside a store call, before it is named with what was being done.
#[derive(Debug)]
pub(super) enum Fail {
    /// The driver or the server.
    Pg(tokio_postgres::Error),
    /// No connection from the pool.
    Pool(String),
    /// The project's own error (a conflict, a corrupt row, a refusal by the caller).
    Mine(Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Fail {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Fail::Pg(e),
            other => Fail::Pool(other.to_string()),
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Mine(e)
    }
}

/// The project's error for a failure while doing `what`: a unique violation is a conflict.
pub(super) fn named(what: &str, f: Fail) -> Error {
    match f {
        Fail::Mine(e) => e,
        Fail::Pool(reason) => Error::Postgres { what: what.to_string(), reason },
        Fail::Pg(e) => match e.as_db_error() {
            Some(d) if *d.code() == SqlState::UNIQUE_VIOLATION => {
                Error::Conflict(format!("{what}: {}", d.message()))
            }
            Some(d) => Error::Postgres {
                what: what.to_string(),
                reason: format!("{} (SQLSTATE {})", d.message(), d.code().code()),
            },
            None => Error::Postgres { what: what.to_string(), reason: e.to_string() },
        },
    }
}

/// A stored value of `table` row `row` that does not parse.
pub(super) fn corrupt(table: &'static str, row: impl std::fmt::Display, why: String) -> Fail {
    Fail::Mine(Error::CorruptRow { table, row: row.to_string(), reason: why })
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    row: i64,
    column: &str,
    s: &str,
) -> Result<T, Fail> {
    serde_json::from_str(s).map_err(|e| corrupt(table, row, format!("{column}: {e}")))
}

pub(super) fn parsed<T, E: std::fmt::Display>(
    table: &'static str,
    row: i64,
    column: &str,
    v: Result<T, E>,
) -> Result<T, Fail> {
    v.map_err(|e| corrupt(table, row, format!("{column}: {e}")))
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> Result<String, Fail> {
    serde_json::to_string(v)
        .map_err(|e| Fail::Mine(Error::Usage(format!("cannot store as JSON: {e}"))))
}

/// A column that may hold a value that needs more than an `i32`, read as one.
fn int(r: &Row, i: usize) -> Result<Option<i32>, Fail> {
    let v: Option<i64> = r.try_get(i)?;
    Ok(v.and_then(|v| i32::try_from(v).ok()))
}

pub(super) fn device(r: &Row) -> Result<Device, Fail> {
    let id: i64 = r.try_get(0)?;
    Ok(Device {
        id,
        tenant: r.try_get(1)?,
        controller_id: r.try_get(2)?,
        token_sha256: r.try_get(3)?,
        attributes: from_json("devices", id, "attributes", r.try_get(4)?)?,
        created: r.try_get(5)?,
        last_seen: r.try_get(6)?,
        registered_by: r.try_get(7)?,
        auto_confirm: match r.try_get::<_, Option<&str>>(8)? {
            Some(j) => Some(from_json("devices", id, "auto_confirm", j)?),
            None => None,
        },
        cert_sha256: r.try_get(9)?,
    })
}

pub(super) fn action(r: &Row) -> Result<Action, Fail> {
    let id: i64 = r.try_get(0)?;
    let status: &str = r.try_get(3)?;
    Ok(Action {
        id,
        advertisement_id: r.try_get(1)?,
        device_id: r.try_get(2)?,
        status: parsed("actions", id, "status", status.parse())?,
        created: r.try_get(4)?,
        updated: r.try_get(5)?,
        last_code: int(r, 6)?,
    })
}

fn optional<T: std::str::FromStr<Err = String>>(
    id: i64,
    column: &str,
    v: Option<&str>,
) -> Result<Option<T>, Fail> {
    v.map(|s| parsed("status", id, column, s.parse())).transpose()
}

pub(super) fn status(r: &Row) -> Result<StatusRecord, Fail> {
    let id: i64 = r.try_get(0)?;
    Ok(StatusRecord {
        id,
        device_id: r.try_get(1)?,
        action_id: r.try_get(2)?,
        received: r.try_get(3)?,
        source: r.try_get(4)?,
        execution: optional(id, "execution", r.try_get(5)?)?,
        finished: optional(id, "finished", r.try_get(6)?)?,
        message_id: int(r, 7)?,
        hresult: r.try_get(8)?,
        component: r.try_get(9)?,
        details: from_json("status", id, "details", r.try_get(10)?)?,
        report_id: r.try_get(11)?,
    })
}

pub(super) fn administrator(r: &Row) -> Result<Administrator, Fail> {
    Ok(Administrator { name: r.try_get(0)?, hash: r.try_get(1)?, created: r.try_get(2)? })
}

pub(super) fn admin_cert(r: &Row) -> Result<AdminCert, Fail> {
    Ok(AdminCert {
        sha256: r.try_get(0)?,
        name: r.try_get(1)?,
        subject: r.try_get(2)?,
        not_before: r.try_get(3)?,
        not_after: r.try_get(4)?,
    })
}

pub(super) fn program(r: &Row) -> Result<Program, Fail> {
    let id: i64 = r.try_get(0)?;
    let class: &str = r.try_get(6)?;
    Ok(Program {
        id,
        package_id: r.try_get(1)?,
        name: r.try_get(2)?,
        command: r.try_get(3)?,
        platforms: from_json("programs", id, "platforms", r.try_get(4)?)?,
        max_run_time: u64::try_from(r.try_get::<_, i64>(5)?).unwrap_or(0),
        device_class: parsed("programs", id, "device_class", class.parse())?,
        signed_program: r.try_get(7)?,
    })
}

pub(super) fn advertisement(r: &Row) -> Result<Advertisement, Fail> {
    let id: i64 = r.try_get(0)?;
    let kind: &str = r.try_get(4)?;
    let window: Option<&str> = r.try_get(7)?;
    let rerun: &str = r.try_get(10)?;
    Ok(Advertisement {
        id,
        name: r.try_get(1)?,
        program_id: r.try_get(2)?,
        collection_id: r.try_get(3)?,
        kind: parsed("advertisements", id, "kind", kind.parse())?,
        start_time: r.try_get(5)?,
        expires: r.try_get(6)?,
        window: window
            .map(|w| {
                parsed("advertisements", id, "maintenance_window", MaintenanceWindow::parse(w))
            })
            .transpose()?,
        created: r.try_get(8)?,
        canceled: r.try_get::<_, i64>(9)? != 0,
        rerun: parsed("advertisements", id, "rerun", rerun.parse())?,
        allow_downgrade: r.try_get::<_, i64>(11)? != 0,
    })
}

pub(super) fn package(r: &Row) -> Result<Package, Fail> {
    let id: i64 = r.try_get(0)?;
    let kind: &str = r.try_get(3)?;
    Ok(Package {
        id,
        name: r.try_get(1)?,
        version: r.try_get(2)?,
        kind: parsed("packages", id, "kind", kind.parse())?,
        publisher: r.try_get(4)?,
        distribution_point: r.try_get(5)?,
        created: r.try_get(6)?,
        artifacts: Vec::new(),
        programs: from_json("packages", id, "programs", r.try_get(7)?)?,
        config_items: from_json("packages", id, "config_items", r.try_get(8)?)?,
    })
}

pub(super) fn artifact(r: &Row) -> Result<(i64, ArtifactRecord), Fail> {
    Ok((
        r.try_get(0)?,
        ArtifactRecord {
            filename: r.try_get(1)?,
            size: u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0),
            sha256: r.try_get(3)?,
            sha1: r.try_get(4)?,
            md5: r.try_get(5)?,
            path: r.try_get::<_, Option<String>>(6)?.map(Into::into),
        },
    ))
}

pub(super) fn collection(r: &Row) -> Result<Collection, Fail> {
    let id: i64 = r.try_get(0)?;
    Ok(Collection {
        id,
        name: r.try_get(1)?,
        tenant: r.try_get(3)?,
        rule: from_json("collections", id, "rule", r.try_get(2)?)?,
        members: Vec::new(),
        window: match r.try_get::<_, Option<String>>(4)? {
            Some(w) => {
                Some(parsed("collections", id, "maintenance_window", MaintenanceWindow::parse(&w))?)
            }
            None => None,
        },
    })
}
