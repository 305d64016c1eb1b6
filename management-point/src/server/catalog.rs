//! The software update catalog as the management point serves it (docs/software-updates.md):
//! every update by id, and the catalog text of each architecture, made once per import.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dm_shared::updates::{self as wire, CatalogEntry};

use crate::model::updates::{Update, UpdateRepository};

/// A catalog text and its SHA-256.
#[derive(Debug)]
pub struct CatalogText {
    /// The text.
    pub bytes: Vec<u8>,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// The catalog as served, rebuilt when an import changes a repository.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The marker it was built for.
    pub marker: String,
    /// Every update, by id.
    pub by_id: HashMap<i64, Update>,
    /// The catalog text per architecture (with `all`), made on first use.
    pub texts: Mutex<HashMap<String, Arc<CatalogText>>>,
}

impl Catalog {
    /// The catalog text of `arch` and its SHA-256.
    pub fn text(&self, arch: &str) -> Arc<CatalogText> {
        let mut texts = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = texts.get(arch) {
            return t.clone();
        }
        let mut ids: Vec<&Update> =
            self.by_id.values().filter(|u| u.arch == arch || u.arch == "all").collect();
        ids.sort_by_key(|u| u.id);
        let mut text = wire::catalog_header(&self.marker).into_bytes();
        for u in ids {
            let e = CatalogEntry {
                id: u.id,
                package: u.package.clone(),
                arch: u.arch.clone(),
                version: u.version.clone(),
            };
            text.extend_from_slice(e.line().as_bytes());
        }
        let sha256 = dm_shared::pki::sha256_hex(&text);
        let t = Arc::new(CatalogText { bytes: text, sha256 });
        if texts.len() < 16 {
            texts.insert(arch.to_string(), t.clone());
        }
        t
    }
}

/// A marker that changes when a repository is imported again.
pub fn marker(repos: &[UpdateRepository]) -> Option<String> {
    if repos.is_empty() {
        return None;
    }
    let all: String =
        repos.iter().map(|r| format!("{}:{}:{};", r.id, r.generation, r.imported)).collect();
    Some(dm_shared::pki::sha256_hex(all.as_bytes())[..16].to_string())
}
