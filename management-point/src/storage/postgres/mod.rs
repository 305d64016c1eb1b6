//! The PostgreSQL store, for fleets that outgrow one machine: several `dmmp` instances (and the
//! admin commands) on one database (docs/management-point.md, "PostgreSQL and several
//! instances").
//!
//! - `tokio-postgres` with a `deadpool-postgres` pool, on a small runtime of the store's own,
//!   so the [`Storage`](crate::storage::Storage) calls stay synchronous for the server (which
//!   calls them off its async workers) and for the admin commands (which have no runtime).
//!   Every call has a deadline.
//! - The same versioned migrations as SQLite (`postgres-NNN-*.sql`, twins of `sqlite-NNN-*.sql`),
//!   recorded in `dm_schema` and applied under an advisory lock, so instances starting
//!   together migrate once.
//! - Triggers notify channel `dm_changes` of every change a server's view holds, with the
//!   writer's `application_name`. The listener turns the others' notifications into the
//!   actions and devices they name, or into a new
//!   [`data_version`](crate::storage::Storage::data_version) (a full reload), as it does a
//!   lost connection.
//! - Feedback moves an action by compare-and-set on its status, retried: two instances that
//!   receive feedback for one action at once never interleave.

mod api;
pub mod cluster;
mod dps;
mod listen;
mod migrate;
mod queries;
mod rollouts;
mod rows;
mod updates;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::{Error, Result};
use rows::{Fail, named};

/// The schema, one migration per version, oldest first: the twins of the SQLite store's.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres-001-initial.sql"),
    include_str!("../migrations/postgres-002-signed-programs.sql"),
    include_str!("../migrations/postgres-003-report-ids.sql"),
    include_str!("../migrations/postgres-004-tenants-and-registration.sql"),
    include_str!("../migrations/postgres-005-confirmation.sql"),
    include_str!("../migrations/postgres-006-device-certificates.sql"),
    include_str!("../migrations/postgres-007-configuration-items.sql"),
    include_str!("../migrations/postgres-008-administrators.sql"),
    include_str!("../migrations/postgres-009-administrator-certificates.sql"),
    include_str!("../migrations/postgres-010-software-updates.sql"),
    include_str!("../migrations/postgres-011-collection-windows.sql"),
    include_str!("../migrations/postgres-012-rollouts.sql"),
    include_str!("../migrations/postgres-013-update-rollouts.sql"),
    include_str!("../migrations/postgres-014-api.sql"),
    include_str!("../migrations/postgres-015-distribution-points.sql"),
];

/// The change notifications, installed at every start after the migrations.
const NOTIFY: &str = include_str!("../migrations/postgres-notify.sql");

/// The longest a store call may take, connection included.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The most connections one process holds in its pool.
const POOL_SIZE: usize = 16;

/// A URL with its password, if any (after the user name, or as `password=` in the query),
/// replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let rest = match rest.split_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => rest.to_string(),
        },
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> =
                query
                    .split('&')
                    .map(|kv| {
                        if kv.starts_with("password=") { "password=***".into() } else { kv.into() }
                    })
                    .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

/// The PostgreSQL store.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    config: tokio_postgres::Config,
    /// TLS to the server, when `[storage] database_ca` is set.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// This process's `application_name`: its own notifications are not changes to it.
    me: String,
    /// What the listener heard from other writers.
    heard: Arc<listen::Heard>,
    listener: std::sync::Once,
    url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.url).field("me", &self.me).finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed (a server shutting down).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A TLS connector that trusts the PEM roots in `ca` only.
fn tls_connector(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| Error::Postgres { what: format!("read {}", ca.display()), reason };
    let pem = dm_shared::fs::read_capped(ca, 1024 * 1024)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block in the PEM file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl PgStore {
    /// Connects to `url` as `role` (`serve`, or an admin command's name), migrating the schema
    /// and installing the change notifications; the connection is plain.
    pub fn connect(url: &str, role: &str) -> Result<PgStore> {
        PgStore::connect_with(url, role, None)
    }

    /// [`PgStore::connect`], over TLS when `ca` (PEM roots that sign the server's certificate)
    /// is given.
    pub fn connect_with(url: &str, role: &str, ca: Option<&std::path::Path>) -> Result<PgStore> {
        let bad = |reason: String| Error::Postgres {
            what: format!("connect to {}", redact(url)),
            reason,
        };
        let tls = ca.map(tls_connector).transpose()?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| bad(format!("{e}")))?;
        let me = format!("dmmp-{role}-{}-{}", std::process::id(), random_suffix());
        config.application_name(&me);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dm-postgres")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("no runtime: {e}")))?;
        let mc = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match &tls {
            Some(t) => Manager::from_config(config.clone(), t.clone(), mc),
            None => Manager::from_config(config.clone(), NoTls, mc),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_DEADLINE))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let store = PgStore {
            rt: Some(rt),
            pool,
            config,
            tls,
            me,
            heard: Arc::new(listen::Heard::default()),
            listener: std::sync::Once::new(),
            url: redact(url),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The URL, its password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the notification connection is up (the server's view hears other writers).
    pub fn listening(&self) -> bool {
        self.heard.listening.load(Ordering::Relaxed)
    }

    /// Runs `fut` on the store's runtime within [`CALL_DEADLINE`] and waits for it; failures
    /// say they happened while doing `what`.
    fn run<T: Send + 'static>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, Fail>> + Send + 'static,
    ) -> Result<T> {
        let stopped =
            || Error::Postgres { what: what.to_string(), reason: "the store stopped".into() };
        let rt = self.rt.as_ref().ok_or_else(stopped)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let r = match tokio::time::timeout(CALL_DEADLINE, fut).await {
                Ok(r) => r,
                Err(_) => {
                    Err(Fail::Pool(format!("no answer within {} s", CALL_DEADLINE.as_secs())))
                }
            };
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| stopped())?.map_err(|f| named(what, f))
    }

    fn migrate(&self) -> Result<()> {
        let pool = self.pool.clone();
        let applied = self.run("migrate the schema", async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            // One instance migrates; the others wait here, then find nothing to do.
            tx.batch_execute(
                "SELECT pg_advisory_xact_lock(7370001); \
                 CREATE TABLE IF NOT EXISTS dm_schema (version BIGINT NOT NULL); \
                 INSERT INTO dm_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM dm_schema);",
            )
            .await?;
            let version: i64 = tx.query_one("SELECT version FROM dm_schema", &[]).await?.try_get(0)?;
            let version = usize::try_from(version).unwrap_or(0);
            if version > MIGRATIONS.len() {
                return Err(Fail::Mine(Error::Postgres {
                    what: "migrate the schema".into(),
                    reason: format!(
                        "the database is schema version {version}, newer than this dmmp knows ({}); upgrade dmmp",
                        MIGRATIONS.len()
                    ),
                }));
            }
            for m in MIGRATIONS.iter().skip(version) {
                tx.batch_execute(m).await?;
            }
            tx.execute("UPDATE dm_schema SET version = $1", &[&(MIGRATIONS.len() as i64)]).await?;
            // The triggers are replaced only when this dmmp's differ from the installed ones:
            // replacing a trigger locks its table against writes, and admin commands connect
            // all day.
            tx.batch_execute("CREATE TABLE IF NOT EXISTS dm_notify (sha256 TEXT NOT NULL)").await?;
            let want = dm_shared::pki::sha256_hex(NOTIFY.as_bytes());
            let have: Option<String> =
                tx.query_opt("SELECT sha256 FROM dm_notify", &[]).await?.map(|r| r.try_get(0)).transpose()?;
            if have.as_deref() != Some(want.as_str()) {
                tx.batch_execute(NOTIFY).await?;
                tx.execute("DELETE FROM dm_notify", &[]).await?;
                tx.execute("INSERT INTO dm_notify (sha256) VALUES ($1)", &[&want]).await?;
            }
            tx.commit().await?;
            Ok((version, MIGRATIONS.len()))
        })?;
        if applied.0 != applied.1 {
            log::info!("database {} migrated to schema version {}", self.url, applied.1);
        }
        Ok(())
    }

    /// Starts the notification listener, once.
    fn listen_once(&self) {
        self.listener.call_once(|| {
            if let Some(rt) = &self.rt {
                rt.spawn(listen::listen(
                    self.config.clone(),
                    self.tls.clone(),
                    self.me.clone(),
                    self.heard.clone(),
                ));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_apart_and_passwords_never_shown() {
        assert!(crate::config::is_postgres_url("postgres://dm@127.0.0.1:5432/dm"));
        assert!(crate::config::is_postgres_url("postgresql:///dm?host=/tmp"));
        assert!(!crate::config::is_postgres_url("var/dmmp.db"));
        assert_eq!(redact("postgres://dm:s3cret@db:5432/dm"), "postgres://dm:***@db:5432/dm");
        assert_eq!(redact("postgres://dm@db/dm"), "postgres://dm@db/dm");
        assert_eq!(redact("postgresql:///dm?host=/tmp"), "postgresql:///dm?host=/tmp");
        assert_eq!(
            redact("postgres://dm@db/dm?sslmode=disable&password=s3cret"),
            "postgres://dm@db/dm?sslmode=disable&password=***"
        );
    }
}
