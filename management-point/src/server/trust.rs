//! What a device's client certificate is checked against: the device CAs of each tenant
//! (`[server] client_ca` for the tenant `DEFAULT`, `[tenant_client_ca]` for the others) and
//! the revocation lists of them all (`[server] client_crls`). A certificate authenticates only
//! in the tenant whose CA issued it, so one CA in two tenants' files is refused.
//!
//! The files are read again within a second of one changing (a CA rotation); a file that does
//! not parse is logged and the previous trust kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use crate::config::Config;
use crate::error::{Error, Result};

/// The device CAs per tenant and their revocation lists, with the files' modification times
/// when read.
#[derive(Debug, Default)]
pub struct ClientTrust {
    /// The device CAs of each tenant that takes client certificates.
    pub roots: HashMap<String, Vec<CertificateDer<'static>>>,
    /// DER of every revocation list.
    pub lists: Vec<Vec<u8>>,
    seen: Vec<Option<SystemTime>>,
}

impl ClientTrust {
    /// Reads every tenant's device CAs (not the revocation lists: the first
    /// [`ClientTrust::reload`] reads everything again, as a change would).
    pub fn load(cfg: &Config) -> Result<ClientTrust> {
        let mut roots = HashMap::new();
        for (tenant, file) in cfg.client_cas() {
            roots.insert(tenant, super::tls::load_client_roots(&file)?);
        }
        one_tenant_per_ca(&roots, cfg)?;
        Ok(ClientTrust { roots, ..ClientTrust::default() })
    }

    /// The device CAs of `tenant` (none: it takes no client certificates).
    pub fn roots_of(&self, tenant: &str) -> &[CertificateDer<'static>] {
        self.roots.get(tenant).map_or(&[], Vec::as_slice)
    }

    /// Whether any tenant takes client certificates.
    pub fn any(&self) -> bool {
        self.roots.values().any(|r| !r.is_empty())
    }

    /// Reads the device CAs and their revocation lists again into `trust` if a file changed
    /// (or at the first call). A file that does not parse is logged and the previous trust
    /// kept.
    pub fn reload(cfg: &Config, trust: &RwLock<ClientTrust>) {
        let cas = cfg.client_cas();
        let crls: Vec<PathBuf> = cfg.server.client_crls.iter().map(|p| cfg.resolve(p)).collect();
        let seen: Vec<Option<SystemTime>> = cas
            .iter()
            .map(|(_, f)| f)
            .chain(&crls)
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect();
        if seen.is_empty() || trust.read().map(|t| t.seen == seen).unwrap_or(false) {
            return;
        }
        let mut roots = HashMap::new();
        for (tenant, f) in &cas {
            match super::tls::load_client_roots(f) {
                Ok(r) => {
                    roots.insert(tenant.clone(), r);
                }
                Err(e) => {
                    log::error!("device CAs not reloaded: {e}; keeping the previous ones");
                    return;
                }
            }
        }
        if let Err(e) = one_tenant_per_ca(&roots, cfg) {
            log::error!("device CAs not reloaded: {e}; keeping the previous ones");
            return;
        }
        let mut lists = Vec::new();
        for f in &crls {
            match dm_shared::pki::Crl::load(f) {
                Ok(l) => lists.extend(l.iter().map(|c| c.der().to_vec())),
                Err(e) => {
                    log::error!(
                        "device revocation list not (re)loaded: {e}; keeping the previous lists"
                    );
                    return;
                }
            }
        }
        for (tenant, f) in &cas {
            let n = roots.get(tenant).map_or(0, Vec::len);
            log::info!("device CAs loaded: {n} from {} (tenant {tenant})", f.display());
        }
        if !crls.is_empty() {
            log::info!(
                "device revocation lists loaded: {} from {} file(s)",
                lists.len(),
                crls.len()
            );
        }
        let mut t = trust.write().unwrap_or_else(|p| p.into_inner());
        *t = ClientTrust { roots, lists, seen };
    }
}

/// Refuses a CA certificate in the files of two tenants: what it issues would authenticate in
/// both.
fn one_tenant_per_ca(
    roots: &HashMap<String, Vec<CertificateDer<'static>>>,
    cfg: &Config,
) -> Result<()> {
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut tenants: Vec<&String> = roots.keys().collect();
    tenants.sort();
    for tenant in tenants {
        for root in &roots[tenant] {
            let sha = dm_shared::pki::sha256_hex(root.as_ref());
            if let Some(other) = owner.insert(sha.clone(), tenant) {
                if other != tenant {
                    return Err(Error::Config {
                        path: cfg.resolve(std::path::Path::new("dmmp.toml")),
                        reason: format!(
                            "the device CA with SHA-256 {sha} is among the CAs of both tenants {other} and {tenant}: a certificate it issues would authenticate in both; give each tenant a CA of its own"
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}
