//! `dmmp init`: a new management point's configuration file and empty database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::Out;
use crate::config::{Config, UnknownDevices};
use crate::error::{Error, Result};

/// What `dmmp init` is given.
#[derive(Debug, Clone)]
pub struct InitSpec {
    /// Folder for dmmp.toml, the database and package content.
    pub dir: PathBuf,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The base URL devices reach the server at.
    pub public_url: Option<String>,
    /// The server's PEM certificate chain.
    pub tls_cert: PathBuf,
    /// The server's PEM private key.
    pub tls_key: PathBuf,
    /// PEM roots of device client certificates.
    pub client_ca: Option<PathBuf>,
    /// Register or refuse devices it has never seen.
    pub unknown_devices: UnknownDevices,
    /// A gateway token accepted for any device.
    pub gateway_token: Option<String>,
    /// Seconds devices are told to sleep between polls.
    pub poll_sleep: u64,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Writes `dmmp.toml` (0600: it may hold the gateway token) and creates the database.
pub fn init(spec: &InitSpec) -> Result<Out> {
    let path = spec.dir.join("dmmp.toml");
    if path.exists() {
        return Err(Error::OutputExists { path });
    }
    dm_shared::fs::create_dir_all(&spec.dir, dm_shared::fs::MODE_DIR_PRIVATE)?;
    let mut cfg =
        Config::new(&spec.dir, spec.listen, absolute(&spec.tls_cert), absolute(&spec.tls_key));
    cfg.server.public_url = spec.public_url.clone();
    cfg.server.client_ca = spec.client_ca.as_deref().map(absolute);
    cfg.devices.unknown_devices = spec.unknown_devices;
    cfg.devices.gateway_token = spec.gateway_token.clone();
    cfg.devices.poll_sleep_secs = spec.poll_sleep;
    dm_shared::fs::write_atomic(&path, cfg.to_toml()?.as_bytes(), dm_shared::fs::MODE_PRIVATE)?;
    let cfg = Config::load(&path)?;
    crate::storage::open(&cfg, "init")?;
    Ok(Out::new(format!("{}\n", path.display()), json!({"config": path})))
}
