//! Storage: the [`Storage`] interface the server and the admin commands use, and its
//! implementations: [`sqlite::SqliteStore`], the embedded default (one file, WAL, versioned
//! migrations), and [`postgres::PgStore`] for several `dmmp` instances on one database.
//! `[storage] database` chooses: a `postgres://` URL, or a file.
//!
//! The server and admin commands may run at once: the admin commands write through their own
//! connection and the server notices through [`Storage::data_version`].

mod api;
mod dps;
mod interface;
pub mod postgres;
mod rollouts;
mod rows;
pub mod sqlite;
mod sqlite_api;
mod sqlite_dps;
mod sqlite_files;
mod sqlite_rollouts;
mod sqlite_updates;
#[cfg(test)]
mod suite;
mod updates;

pub use self::api::ApiStorage;
pub use self::dps::DpStorage;
pub use self::interface::{Changed, RolloutStorage, Storage, UpdateStorage};
pub use self::postgres::PgStore;
pub use self::sqlite::SqliteStore;
use crate::config::Config;
use crate::error::Result;

/// Opens the store `[storage] database` names, as `role` (`serve`, or the admin command:
/// PostgreSQL shows it in `application_name`).
pub fn open(cfg: &Config, role: &str) -> Result<Box<dyn Storage>> {
    Ok(match cfg.database_url() {
        Some(url) => {
            let ca = cfg.storage.database_ca.as_ref().map(|p| cfg.resolve(p));
            Box::new(PgStore::connect_with(&url, role, ca.as_deref())?)
        }
        None => Box::new(SqliteStore::open(&cfg.database())?),
    })
}
