//! What the server knows of its distribution points (docs/distribution-points.md), in
//! memory: their rows as last read, and the address each device last authenticated from (its
//! boundary). The handlers and the tick are [`super::dps`]'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::distribution::{DistributionPoint, DpContent};
use crate::error::Result;

/// What the server knows of its distribution points, re-read every few seconds and after each
/// report (administrators change it from other processes).
#[derive(Debug, Default)]
pub struct Distribution {
    cache: RwLock<Arc<Cache>>,
    /// The address each device last authenticated from: its boundary.
    peers: Mutex<HashMap<i64, IpAddr>>,
    /// When an unknown credential last made it reload.
    last_miss: std::sync::atomic::AtomicI64,
}

/// The distribution points and their rows, as last read.
#[derive(Debug, Default)]
pub struct Cache {
    /// Every distribution point.
    pub points: Vec<DistributionPoint>,
    /// Every package on every one.
    pub rows: Vec<DpContent>,
}

impl Distribution {
    /// The cache.
    pub fn cache(&self) -> Arc<Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether an unknown credential may make it reload now (at most once a second).
    pub fn may_reload(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last_miss.load(Ordering::Relaxed);
        now > last
            && self
                .last_miss
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Notes the address a device authenticated from.
    pub fn note_peer(&self, device: i64, ip: IpAddr) {
        let mut m = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&device) != Some(&ip) {
            m.insert(device, ip);
        }
    }

    /// The address device `device` last authenticated from.
    pub fn peer(&self, device: i64) -> Option<IpAddr> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).get(&device).copied()
    }

    /// Reads the distribution points and their rows again.
    pub fn reload(&self, store: &dyn crate::storage::Storage) -> Result<()> {
        let fresh = Cache { points: store.dps()?, rows: store.dp_contents()? };
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

impl Distribution {
    /// Each distribution point's health for `GET /healthz`: whether it reported within
    /// `fresh_after` seconds of `now`, its free space, its last content errors, and its
    /// packages by state.
    pub fn health(&self, now: i64, fresh_after: i64) -> serde_json::Value {
        let cache = self.cache();
        let points: Vec<serde_json::Value> = cache
            .points
            .iter()
            .map(|dp| {
                let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
                for r in cache.rows.iter().filter(|r| r.dp_id == dp.id) {
                    *states.entry(r.state.as_str()).or_default() += 1;
                }
                serde_json::json!({
                    "name": dp.name,
                    "reachable": dp.health.reachable(now, fresh_after),
                    "last_contact_secs_ago": dp.health.last_contact.map(|t| now - t),
                    "free_bytes": dp.health.free_bytes,
                    "content_errors": dp.health.content_errors,
                    "packages": states,
                })
            })
            .collect();
        serde_json::Value::Array(points)
    }
}
