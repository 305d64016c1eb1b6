//! `dmmp migrate --from sqlite:PATH --to postgres://…`: a fleet's state copied from its SQLite
//! file into an empty PostgreSQL database (the copy itself is
//! `crate::storage::PgStore::copy_from_sqlite`).

use super::Out;
use crate::error::{Error, Result};

/// `dmmp migrate`; `ca` (PEM roots of the database server's certificate) makes the
/// connection TLS, as `[storage] database_ca` does.
pub fn migrate(from: &str, to: &str, ca: Option<&std::path::Path>) -> Result<Out> {
    let path = from.strip_prefix("sqlite:").ok_or_else(|| {
        Error::Usage(format!("--from {from:?}: give the SQLite file as sqlite:PATH"))
    })?;
    if !crate::config::is_postgres_url(to) {
        return Err(Error::Usage(format!("--to: give a postgres:// URL, not {to:?}")));
    }
    let target = crate::storage::PgStore::connect_with(to, "migrate", ca)?;
    let counts = target.copy_from_sqlite(std::path::Path::new(path))?;
    let mut text = format!("copied {path} into {}:\n", target.url());
    for (t, n) in &counts {
        text.push_str(&format!("  {t:<28} {n:>9} rows\n"));
    }
    text.push_str("every table holds as many rows as the source: point [storage] database at it\n");
    let json: serde_json::Map<String, serde_json::Value> =
        counts.into_iter().map(|(t, n)| (t, n.into())).collect();
    Ok(Out::new(text, serde_json::json!({"target": target.url(), "rows": json})))
}
