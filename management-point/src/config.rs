//! `dmmp.toml`: where the management point listens, its TLS identity, its storage and how it
//! treats devices. Documented in docs/management-point.md. Relative paths are relative to the
//! folder holding the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What to do with a device the management point has never seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownDevices {
    /// Register it on its first authenticated poll (trust on first use of its target token).
    Register,
    /// Refuse it (401) until an administrator adds it.
    Refuse,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The base URL devices reach this server at, for links in responses.
    #[serde(default)]
    pub public_url: Option<String>,
    /// PEM certificate chain of the server.
    pub tls_cert: PathBuf,
    /// PEM private key of the server.
    pub tls_key: PathBuf,
    /// PEM roots that issue the client certificates of the tenant `DEFAULT` (or, when one
    /// other tenant is served, of that one); enables certificate authentication. Several roots
    /// may be in the file (an old and a new device CA during a rotation). Other tenants' CAs
    /// are in `[tenant_client_ca]`: a certificate authenticates only in its CA's tenant.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Revocation lists (PEM or DER) of every tenant's device CAs, reloaded when a file
    /// changes.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
    /// Largest request body accepted (feedback, configData, status messages).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Seconds a TLS handshake may take.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
    /// Seconds from the handshake to the first complete request (HTTP/1 or HTTP/2).
    #[serde(default = "default_first_request")]
    pub first_request_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Seconds from a request's headers to the last byte of its body.
    #[serde(default = "default_body")]
    pub body_timeout_secs: u64,
    /// Seconds from a request's headers to the last byte of its response: generous, because a
    /// device downloads artifacts of any size (a cut download resumes with `Range`).
    #[serde(default = "default_request")]
    pub request_timeout_secs: u64,
    /// The most connections open at once (never more than the file descriptor limit allows).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); none when unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_first_request() -> u64 {
    10
}

fn default_idle() -> u64 {
    60
}

fn default_body() -> u64 {
    60
}

fn default_request() -> u64 {
    3600
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_body() -> usize {
    64 * 1024
}

fn default_handshake() -> u64 {
    10
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The SQLite database file, or a PostgreSQL URL (`postgres://user@host:port/db`).
    pub database: PathBuf,
    /// PEM roots that sign the PostgreSQL server's certificate: with them the connection uses
    /// TLS (`?sslmode=require` in the URL makes it mandatory); without them it is plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_ca: Option<PathBuf>,
    /// Where package content is kept.
    pub content: PathBuf,
}

/// `[devices]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// DDI tenants served.
    #[serde(default = "default_tenants")]
    pub tenants: Vec<String>,
    /// The poll interval devices are told (`config.polling.sleep`).
    #[serde(default = "default_sleep")]
    pub poll_sleep_secs: u64,
    /// Register or refuse unknown devices.
    #[serde(default = "default_unknown")]
    pub unknown_devices: UnknownDevices,
    /// Accept `Authorization: TargetToken`.
    #[serde(default = "default_true")]
    pub target_token: bool,
    /// Accept `Authorization: GatewayToken <this>`.
    #[serde(default)]
    pub gateway_token: Option<String>,
    /// Seconds between writes of devices' last-seen times (never one write per poll).
    #[serde(default = "default_flush")]
    pub last_seen_flush_secs: u64,
    /// With `unknown_devices = "register"`: the most devices registered in any minute.
    #[serde(default = "default_registrations_per_minute")]
    pub registrations_per_minute: u32,
    /// Seconds between evaluations of the running rollouts' gates (docs/rollouts.md).
    #[serde(default = "default_rollout_tick")]
    pub rollout_tick_secs: u64,
    /// With `unknown_devices = "register"`: the most devices the server holds; beyond it,
    /// unknown devices are refused.
    #[serde(default = "default_max_devices")]
    pub max_devices: u64,
    /// With `unknown_devices = "register"`: whether a device that registered itself with a
    /// client certificate counts as verified (receives client deployments, whose settings
    /// hold the fleet's secrets) without `dmmp device approve`. Only when the device CAs issue
    /// certificates to the fleet's own devices alone.
    #[serde(default)]
    pub trust_certificate_registrations: bool,
    /// Failed authentications (a wrong token, an unknown device) from one address in a minute
    /// before it is answered 429 until the minute ends.
    #[serde(default = "default_failed_auth")]
    pub failed_auth_per_minute: u32,
}

fn default_failed_auth() -> u32 {
    60
}

fn default_registrations_per_minute() -> u32 {
    60
}

fn default_max_devices() -> u64 {
    100_000
}

/// The tenant served when `[devices] tenants` does not say (hawkBit's default).
pub const DEFAULT_TENANT: &str = "DEFAULT";

fn default_tenants() -> Vec<String> {
    vec![DEFAULT_TENANT.into()]
}

fn default_sleep() -> u64 {
    300
}

fn default_unknown() -> UnknownDevices {
    UnknownDevices::Refuse
}

fn default_true() -> bool {
    true
}

fn default_flush() -> u64 {
    10
}

fn default_rollout_tick() -> u64 {
    5
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[devices]`.
    pub devices: Devices,
    /// `[health]`: the thresholds of the health rules (docs/health.md).
    #[serde(default)]
    pub health: Health,
    /// `[api]`: the management API (docs/management-api.md).
    #[serde(default)]
    pub api: Api,
    /// `[distribution]`: distribution points (docs/distribution-points.md).
    #[serde(default)]
    pub distribution: Distribution,
    /// `[tenant_client_ca]`: the device CAs (a PEM file) of each tenant other than the one
    /// `[server] client_ca` serves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenant_client_ca: BTreeMap<String, PathBuf>,
    #[serde(skip)]
    dir: PathBuf,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Requests one token may make a minute; more are answered 429.
    #[serde(default = "default_api_requests_per_minute")]
    pub requests_per_minute: u32,
    /// The largest package bundle uploaded (bytes).
    #[serde(default = "default_api_max_upload")]
    pub max_upload_bytes: u64,
    /// PEM roots an uploaded package's publisher must chain to; none: uploads are refused.
    #[serde(default)]
    pub package_roots: Option<PathBuf>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            requests_per_minute: default_api_requests_per_minute(),
            max_upload_bytes: default_api_max_upload(),
            package_roots: None,
        }
    }
}

fn default_api_requests_per_minute() -> u32 {
    600
}

fn default_api_max_upload() -> u64 {
    2 << 30
}

/// `[distribution]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// Seconds between a distribution point's reports; one silent for three of them is
    /// skipped in devices' links, and its pending copies are retrying.
    #[serde(default = "default_dp_sync")]
    pub sync_secs: u64,
    /// Seconds between validations of everything a distribution point holds.
    #[serde(default = "default_dp_validate")]
    pub validate_every_secs: u64,
    /// Seconds a link to a distribution point is good for.
    #[serde(default = "default_dp_link")]
    pub link_lifetime_secs: u64,
    /// Seconds a copy or removal may keep failing before it is given up (failed).
    #[serde(default = "default_dp_fail")]
    pub fail_after_secs: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            sync_secs: default_dp_sync(),
            validate_every_secs: default_dp_validate(),
            link_lifetime_secs: default_dp_link(),
            fail_after_secs: default_dp_fail(),
        }
    }
}

impl Distribution {
    /// Seconds after which a distribution point that has not reported is silent: skipped in
    /// devices' links, its pending copies retrying (three sync intervals).
    pub fn silent_after(&self) -> i64 {
        3 * self.sync_secs as i64
    }
}

fn default_dp_sync() -> u64 {
    60
}

fn default_dp_validate() -> u64 {
    86_400
}

fn default_dp_link() -> u64 {
    4 * 3600
}

fn default_dp_fail() -> u64 {
    3 * 86_400
}

/// `[health]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// A device that has not polled for more than this many poll intervals
    /// (`poll_sleep_secs`) has a communication issue.
    #[serde(default = "default_silent_polls")]
    pub silent_polls: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health { silent_polls: default_silent_polls() }
    }
}

fn default_silent_polls() -> u64 {
    3
}

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Whether `database` (the `[storage] database` setting) names a PostgreSQL database.
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes = dm_shared::fs::read_capped(path, MAX_CONFIG_BYTES)?;
        let bad = |reason: String| Error::Config { path: path.to_path_buf(), reason };
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        cfg.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    /// A configuration with the given essentials and defaults for the rest.
    pub fn new(dir: &Path, listen: SocketAddr, tls_cert: PathBuf, tls_key: PathBuf) -> Config {
        Config {
            server: Server {
                listen,
                public_url: None,
                tls_cert,
                tls_key,
                client_ca: None,
                client_crls: Vec::new(),
                max_body_bytes: default_max_body(),
                handshake_timeout_secs: default_handshake(),
                first_request_timeout_secs: default_first_request(),
                idle_timeout_secs: default_idle(),
                body_timeout_secs: default_body(),
                request_timeout_secs: default_request(),
                max_connections: default_max_connections(),
                metrics_listen: None,
            },
            storage: StorageConfig {
                database: "dmmp.db".into(),
                database_ca: None,
                content: "content".into(),
            },
            devices: Devices {
                tenants: default_tenants(),
                poll_sleep_secs: default_sleep(),
                unknown_devices: default_unknown(),
                target_token: true,
                gateway_token: None,
                last_seen_flush_secs: default_flush(),
                registrations_per_minute: default_registrations_per_minute(),
                rollout_tick_secs: default_rollout_tick(),
                max_devices: default_max_devices(),
                trust_certificate_registrations: false,
                failed_auth_per_minute: default_failed_auth(),
            },
            health: Health::default(),
            api: Api::default(),
            distribution: Distribution::default(),
            tenant_client_ca: BTreeMap::new(),
            dir: dir.to_path_buf(),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if !(1..=100_000).contains(&self.api.requests_per_minute) {
            return Err("[api] requests_per_minute must be 1 to 100000".into());
        }
        if !(1..=16 << 30).contains(&self.api.max_upload_bytes) {
            return Err("[api] max_upload_bytes must be 1 to 16 GiB".into());
        }
        let d = &self.distribution;
        if !(1..=3600).contains(&d.sync_secs) {
            return Err("[distribution] sync_secs must be 1 to 3600".into());
        }
        if !(60..=90 * 86_400).contains(&d.validate_every_secs) {
            return Err("[distribution] validate_every_secs must be 60 to 7776000 (90 days)".into());
        }
        if !(60..=7 * 86_400).contains(&d.link_lifetime_secs) {
            return Err("[distribution] link_lifetime_secs must be 60 to 604800 (7 days)".into());
        }
        if !(60..=90 * 86_400).contains(&d.fail_after_secs) {
            return Err("[distribution] fail_after_secs must be 60 to 7776000 (90 days)".into());
        }
        if !(1..=1000).contains(&self.health.silent_polls) {
            return Err("[health] silent_polls must be 1 to 1000".into());
        }
        if self.devices.tenants.is_empty() {
            return Err("[devices] tenants must name at least one tenant".into());
        }
        for t in &self.devices.tenants {
            if t.is_empty()
                || t.len() > 64
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!(
                    "[devices] tenant {t:?}: 1 to 64 letters, digits, '.', '_' or '-'"
                ));
            }
        }
        if !(1..=86_400 * 7).contains(&self.devices.poll_sleep_secs) {
            return Err("[devices] poll_sleep_secs must be 1 to 604800".into());
        }
        if let Some(t) = &self.devices.gateway_token {
            if t.len() < 16 {
                return Err("[devices] gateway_token must be at least 16 characters".into());
            }
        }
        if let Some(u) = &self.server.public_url {
            if !u.starts_with("https://") {
                return Err(format!("[server] public_url {u:?} must be an https:// URL"));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err("[server] max_body_bytes must be at least 1024".into());
        }
        if !(1..=3600).contains(&self.server.body_timeout_secs) {
            return Err("[server] body_timeout_secs must be 1 to 3600".into());
        }
        if !(1..=86_400 * 7).contains(&self.server.request_timeout_secs) {
            return Err("[server] request_timeout_secs must be 1 to 604800".into());
        }
        if self.devices.failed_auth_per_minute == 0 {
            return Err("[devices] failed_auth_per_minute must be at least 1".into());
        }
        self.check_tenant_cas()
    }

    /// Each tenant has at most one device CA file, and `[server] client_ca` names whose it is.
    fn check_tenant_cas(&self) -> std::result::Result<(), String> {
        let tenants = &self.devices.tenants;
        for t in self.tenant_client_ca.keys() {
            if !tenants.contains(t) {
                return Err(format!(
                    "[tenant_client_ca] {t}: not a tenant of [devices] tenants ({})",
                    tenants.join(", ")
                ));
            }
        }
        if self.server.client_ca.is_some() {
            let Some(t) = self.client_ca_tenant() else {
                return Err(format!(
                    "[server] client_ca holds the device CAs of the tenant {DEFAULT_TENANT} (or of the only tenant served), and {DEFAULT_TENANT} is not among the tenants {}: give each tenant its CAs in [tenant_client_ca]",
                    tenants.join(", ")
                ));
            };
            if self.tenant_client_ca.contains_key(t) {
                return Err(format!(
                    "[tenant_client_ca] {t}: its device CAs are [server] client_ca already; name them once"
                ));
            }
        }
        Ok(())
    }

    /// The tenant whose device CAs `[server] client_ca` holds: `DEFAULT` when it is served,
    /// else the only tenant served.
    fn client_ca_tenant(&self) -> Option<&str> {
        let tenants = &self.devices.tenants;
        if tenants.iter().any(|t| t == DEFAULT_TENANT) {
            return Some(DEFAULT_TENANT);
        }
        match tenants.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        }
    }

    /// The device CA file of each tenant that takes client certificates, resolved.
    pub fn client_cas(&self) -> Vec<(String, PathBuf)> {
        let main = self
            .server
            .client_ca
            .as_ref()
            .zip(self.client_ca_tenant())
            .map(|(p, t)| (t.to_string(), self.resolve(p)));
        main.into_iter()
            .chain(self.tenant_client_ca.iter().map(|(t, p)| (t.clone(), self.resolve(p))))
            .collect()
    }

    /// The file as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config {
            path: self.dir.join("dmmp.toml"),
            reason: format!("cannot be written as TOML: {e}"),
        })
    }

    /// A path from the file, resolved against the file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.dir.join(p) }
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.resolve(&self.storage.database)
    }

    /// The PostgreSQL URL `[storage] database` holds, if it holds one.
    pub fn database_url(&self) -> Option<String> {
        let s = self.storage.database.to_str()?;
        is_postgres_url(s).then(|| s.to_string())
    }

    /// The content folder.
    pub fn content(&self) -> PathBuf {
        self.resolve(&self.storage.content)
    }

    /// The base URL for links.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{}", self.server.listen),
        }
    }

    /// The poll sleep.
    pub fn poll_sleep(&self) -> Duration {
        Duration::from_secs(self.devices.poll_sleep_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dmmp.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = load(
            "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"s.pem\"\ntls_key = \"s.key\"\n[storage]\ndatabase = \"db\"\ncontent = \"c\"\n[devices]\n",
        )
        .unwrap();
        assert_eq!(c.devices.tenants, ["DEFAULT"]);
        assert_eq!(c.devices.unknown_devices, UnknownDevices::Refuse);
        assert_eq!(c.public_url(), "https://127.0.0.1:8443");
        assert!(c.database().ends_with("db") && c.database().is_absolute());
    }

    #[test]
    fn errors_name_the_file_and_problem() {
        let err = load("[server]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("dmmp.toml") && err.contains("listen"), "{err}");
        let err = load("[server]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"a\"\ntls_key = \"b\"\ncolour = 1\n[storage]\ndatabase = \"d\"\ncontent = \"c\"\n[devices]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let err = load("[server]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"a\"\ntls_key = \"b\"\n[storage]\ndatabase = \"d\"\ncontent = \"c\"\n[devices]\ngateway_token = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway_token"), "{err}");
    }

    fn with_tenants(tenants: &str, cas: &str) -> Result<Config> {
        load(&format!(
            "[server]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"a\"\ntls_key = \"b\"\nclient_ca = \"ca.pem\"\n[storage]\ndatabase = \"d\"\ncontent = \"c\"\n[devices]\ntenants = {tenants}\n{cas}"
        ))
    }

    #[test]
    fn each_tenant_has_its_own_device_cas() {
        // One tenant: client_ca is its CA, as before tenants had CAs of their own.
        let c = with_tenants("[\"DEFAULT\"]", "").unwrap();
        let cas = c.client_cas();
        assert_eq!(cas.len(), 1);
        assert_eq!(cas[0].0, "DEFAULT");
        assert!(cas[0].1.ends_with("ca.pem") && cas[0].1.is_absolute());
        let c = with_tenants("[\"acme\"]", "").unwrap();
        assert_eq!(c.client_cas()[0].0, "acme");
        // Several: client_ca is DEFAULT's; the others name theirs.
        let c = with_tenants(
            "[\"DEFAULT\", \"acme\", \"other\"]",
            "[tenant_client_ca]\nacme = \"acme-ca.pem\"\n",
        )
        .unwrap();
        let cas: Vec<_> = c.client_cas().into_iter().map(|(t, _)| t).collect();
        assert_eq!(cas, ["DEFAULT", "acme"], "other takes no certificates");
        for (tenants, cas, wrong) in [
            ("[\"acme\", \"other\"]", "", "client_ca"),
            ("[\"DEFAULT\"]", "[tenant_client_ca]\nacme = \"a.pem\"\n", "acme"),
            ("[\"DEFAULT\"]", "[tenant_client_ca]\nDEFAULT = \"a.pem\"\n", "once"),
        ] {
            let err = with_tenants(tenants, cas).unwrap_err().to_string();
            assert!(err.contains(wrong) && err.contains("dmmp.toml"), "{err}");
        }
    }

    #[test]
    fn written_config_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let c =
            Config::new(dir.path(), "127.0.0.1:0".parse().unwrap(), "s.pem".into(), "s.key".into());
        let p = dir.path().join("dmmp.toml");
        std::fs::write(&p, c.to_toml().unwrap()).unwrap();
        let back = Config::load(&p).unwrap();
        assert_eq!(back.server.listen, c.server.listen);
    }
}
