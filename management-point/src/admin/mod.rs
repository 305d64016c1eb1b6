//! The admin commands of `dmmp`: packages, programs, collections, advertisements, devices and
//! status. They write the same database the server reads (the server notices within a second).
//! Each command returns an [`Out`]: text for people, or JSON with `--json`. The `dmmp` binary
//! only parses the command line and calls one function here.

pub mod administrators;
pub mod config;
pub mod crl;
pub mod devices;
pub mod dps;
pub mod init;
pub mod migrate;
pub mod packages;
pub mod rollouts;
pub mod targeting;
pub mod update_compliance;
pub mod updates;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::*;
use crate::printable::printable;
use crate::storage::Storage;

/// What a command prints: text for people, JSON for scripts.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    /// For people.
    pub text: String,
    /// For scripts (`--json`).
    pub json: Value,
}

impl Out {
    /// Output of text and JSON.
    pub fn new(text: impl Into<String>, json: Value) -> Out {
        Out { text: text.into(), json }
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An RFC 3339 time argument, in Unix seconds.
pub fn time_arg(s: &str, flag: &str) -> Result<i64> {
    dm_shared::clock::parse_rfc3339(s)
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))
        .ok_or_else(|| {
            Error::Usage(format!("--{flag} {s:?}: expected RFC 3339 such as 2026-11-24T13:20:01Z"))
        })
}

/// Formats Unix seconds for people.
pub fn when(t: Option<i64>) -> String {
    match t {
        Some(t) => dm_shared::clock::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
        ),
        None => "never".into(),
    }
}

/// Prints rows as aligned columns. Every cell goes through [`printable`]: cells hold what
/// devices sent (inventory, details), which must not reach the terminal raw.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|c| printable(c).into_owned()).collect()).collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// Finds a package by id, `name` (when only one version) or `name@version`.
pub fn find_package(store: &dyn Storage, r: &str) -> Result<Package> {
    let all = store.packages()?;
    if let Ok(id) = r.parse::<i64>() {
        if let Some(p) = all.iter().find(|p| p.id == id) {
            return Ok(p.clone());
        }
    }
    let (name, version) = r.split_once('@').map_or((r, None), |(n, v)| (n, Some(v)));
    let mut hits: Vec<_> = all
        .into_iter()
        .filter(|p| p.name == name && version.is_none_or(|v| p.version == v))
        .collect();
    match (hits.len(), hits.pop()) {
        (1, Some(p)) => Ok(p),
        (0, _) | (_, None) => Err(Error::NotFound(format!("package {r}"))),
        (n, _) => Err(Error::Usage(format!(
            "{n} versions of package {name}: say which with {name}@VERSION"
        ))),
    }
}

fn find_by<T: Clone>(
    items: Vec<T>,
    r: &str,
    what: &str,
    id: impl Fn(&T) -> i64,
    name: impl Fn(&T) -> &str,
) -> Result<T> {
    let by_id = r.parse::<i64>().ok();
    items
        .iter()
        .find(|i| Some(id(i)) == by_id || name(i) == r)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("{what} {r}")))
}

/// Finds a program by id or name.
pub fn find_program(store: &dyn Storage, r: &str) -> Result<Program> {
    find_by(store.programs()?, r, "program", |p| p.id, |p| &p.name)
}

/// Finds a collection by id or name.
pub fn find_collection(store: &dyn Storage, r: &str) -> Result<Collection> {
    find_by(store.collections()?, r, "collection", |c| c.id, |c| &c.name)
}

/// Finds an advertisement by id or name.
pub fn find_advertisement(store: &dyn Storage, r: &str) -> Result<Advertisement> {
    find_by(store.advertisements()?, r, "advertisement", |a| a.id, |a| &a.name)
}

/// Finds a device by controller id (in any tenant, when unique) or `tenant/controller-id`.
pub fn find_device(store: &dyn Storage, r: &str) -> Result<Device> {
    let (tenant, cid) = r.split_once('/').map_or((None, r), |(t, c)| (Some(t), c));
    let hits: Vec<Device> = store
        .devices()?
        .into_iter()
        .filter(|d| d.controller_id == cid && tenant.is_none_or(|t| d.tenant == t))
        .collect();
    match hits.len() {
        1 => Ok(hits[0].clone()),
        0 => Err(Error::NotFound(format!("device {r}"))),
        _ => Err(Error::Usage(format!("device {cid} exists in several tenants: say TENANT/{cid}"))),
    }
}

/// A fresh random token (for `device add`); an error when the system's generator fails.
pub fn new_token() -> Result<String> {
    crate::random::hex(24, "a target token")
}
