//! `dmmp serve --role distribution-point`: the same binary holding copies of packages near the
//! devices, with no device database (docs/distribution-points.md). It reports to its
//! management point and copies what it is told to hold ([`sync`]), keeps only content verified
//! against the package's signature ([`holdings`]), and serves it to whoever presents a link the
//! management point signed ([`serve`]).

pub mod copy;
pub mod holdings;
pub mod serve;
pub mod sync;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// A distribution point's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpConfig {
    /// `[server]`: where devices reach it.
    pub server: DpServer,
    /// `[distribution_point]`.
    pub distribution_point: DpSection,
    #[serde(skip)]
    dir: PathBuf,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpServer {
    /// The address it listens on.
    pub listen: SocketAddr,
    /// Its TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Its TLS key (PEM).
    pub tls_key: PathBuf,
}

/// `[distribution_point]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSection {
    /// The management point's URL (`https://host:port`).
    pub management_point: String,
    /// The roots (PEM) the management point's and other distribution points' certificates
    /// chain to; default the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The file holding its credential (`dmmp dp add` printed it).
    pub credential: PathBuf,
    /// The folder it keeps content in.
    pub content: PathBuf,
    /// The roots (PEM) publishers' signatures chain to: a package is served only once its
    /// signed manifest (or bundle) verifies against them.
    pub package_roots: PathBuf,
}

impl DpConfig {
    /// Reads and checks a configuration file; relative paths are the file's folder's.
    pub fn load(path: &Path) -> Result<DpConfig> {
        let bytes = dm_shared::fs::read_capped(path, MAX_CONFIG_BYTES)?;
        let bad = |reason: String| Error::Config { path: path.to_path_buf(), reason };
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let mut c: DpConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        c.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if !c.distribution_point.management_point.starts_with("https://") {
            return Err(
                bad("[distribution_point] management_point must be an https:// URL".into()),
            );
        }
        Ok(c)
    }

    /// `p` relative to the configuration file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.dir.join(p) }
    }

    /// The credential, read from its file.
    pub fn credential(&self) -> Result<String> {
        let f = self.resolve(&self.distribution_point.credential);
        let bytes = dm_shared::fs::read_capped(&f, 4096)?;
        let c = String::from_utf8_lossy(&bytes).trim().to_string();
        if !c.starts_with(crate::admin::dps::CREDENTIAL_PREFIX) {
            return Err(Error::Config {
                path: f,
                reason: "holds no distribution point credential (dmdp_…)".into(),
            });
        }
        Ok(c)
    }
}

/// Runs a distribution point until SIGTERM or SIGINT, printing `listening https://ADDR` on
/// stdout when it accepts connections.
pub fn run(config_path: &Path) -> Result<()> {
    let cfg = DpConfig::load(config_path)?;
    let credential = cfg.credential()?;
    let content = cfg.resolve(&cfg.distribution_point.content);
    let roots = cfg.resolve(&cfg.distribution_point.package_roots);
    let trust = dm_shared::pki::Trust::roots(dm_shared::cert::Cert::load_pem(&roots)?);
    let holdings = std::sync::Arc::new(holdings::Holdings::open(&content)?);
    let link_key = crate::distribution::link_key(&credential);
    let agent = copy::agent(cfg.distribution_point.ca.as_ref().map(|p| cfg.resolve(p)).as_deref())?;
    let syncer = sync::Syncer {
        mp: cfg.distribution_point.management_point.trim_end_matches('/').to_string(),
        credential,
        agent,
        holdings: holdings.clone(),
        trust,
    };
    std::thread::Builder::new()
        .name("dp-sync".into())
        .spawn(move || syncer.run())
        .map_err(|e| Error::Usage(format!("cannot start the copying thread: {e}")))?;
    serve::run(&cfg, holdings, link_key)
}
