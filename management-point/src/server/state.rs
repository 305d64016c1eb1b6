//! The server's state: the storage, and an in-memory view of it that answers polls without
//! touching the database. The view is reloaded when another process (the admin commands)
//! changed the database, and updated in place by the server's own writes. Last-seen times are
//! kept in memory and written in batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::trust::ClientTrust;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::*;
use crate::storage::Storage;

/// What is loaded from storage.
#[derive(Debug, Default)]
pub struct View {
    /// The storage's data version when loaded.
    pub version: i64,
    /// Devices by (tenant, controller id).
    pub devices: HashMap<(String, String), Device>,
    /// (tenant, controller id) by device id.
    pub device_keys: HashMap<i64, (String, String)>,
    /// Packages by id.
    pub packages: HashMap<i64, Package>,
    /// Programs by id.
    pub programs: HashMap<i64, Program>,
    /// Collections by id.
    pub collections: HashMap<i64, Collection>,
    /// Advertisements by id.
    pub advertisements: BTreeMap<i64, Advertisement>,
    /// Actions by id.
    pub actions: HashMap<i64, Action>,
    /// Action ids by device, oldest first.
    pub device_actions: HashMap<i64, Vec<i64>>,
    /// A marker that changes when the revocation lists change (none: there are none).
    pub crl_marker: Option<String>,
    /// The repositories of the software update catalog.
    pub update_repositories: Vec<crate::model::updates::UpdateRepository>,
    /// The update deployments.
    pub update_deployments: Vec<crate::model::updates::UpdateDeployment>,
    /// A marker that moves when a repository is imported (none: no catalog).
    pub updates_marker: Option<String>,
    /// Rollouts by what they release, with their members' groups: a device is offered such an
    /// advertisement, or held update deployment, only once its group is released.
    pub rollouts: HashMap<crate::rollout::Target, RolloutGate>,
    /// Certificates an administrator revoked (SHA-256 of their DER).
    pub revoked_certs: std::collections::HashSet<String>,
    /// The console's administrators, with the fingerprint of their password hash: a session
    /// lasts while its administrator's is the one they logged in with.
    pub administrators: HashMap<String, String>,
    /// The console's administrators' roles (one without a row, a pinned certificate's name
    /// alone, is an administrator).
    pub admin_roles: HashMap<String, crate::api::Role>,
    /// How many times the server changed the view itself (after writing the database): a
    /// reload that began before one of them must not replace the view.
    pub local_writes: u64,
}

impl View {
    /// Loads everything the view holds from the store.
    pub(crate) fn load(store: &dyn Storage) -> Result<View> {
        let version = store.data_version()?;
        let mut v = View { version, ..View::default() };
        for d in store.devices()? {
            v.device_keys.insert(d.id, (d.tenant.clone(), d.controller_id.clone()));
            v.devices.insert((d.tenant.clone(), d.controller_id.clone()), d);
        }
        v.packages = store.packages()?.into_iter().map(|p| (p.id, p)).collect();
        v.programs = store.programs()?.into_iter().map(|p| (p.id, p)).collect();
        v.collections = store.collections()?.into_iter().map(|c| (c.id, c)).collect();
        v.advertisements = store.advertisements()?.into_iter().map(|a| (a.id, a)).collect();
        for a in store.actions()? {
            v.device_actions.entry(a.device_id).or_default().push(a.id);
            v.actions.insert(a.id, a);
        }
        v.rollouts = RolloutGate::load(store)?;
        v.revoked_certs = store.revoked_certificates()?.into_iter().collect();
        v.update_repositories = store.update_repositories()?;
        v.update_deployments = store.update_deployments()?;
        v.updates_marker = super::catalog::marker(&v.update_repositories);
        v.admin_roles = store.administrator_roles()?.into_iter().collect();
        v.administrators = store
            .administrators()?
            .into_iter()
            .map(|a| (a.name, super::console::passwords::password_fingerprint(&a.hash)))
            .collect();
        let crls = store.crls()?;
        if !crls.is_empty() {
            let all: String = crls.iter().map(|(_, pem)| pem.as_str()).collect();
            v.crl_marker = Some(dm_shared::pki::sha256_hex(all.as_bytes())[..16].to_string());
        }
        Ok(v)
    }

    /// Records an action (new or changed).
    pub fn put_action(&mut self, a: Action) {
        let list = self.device_actions.entry(a.device_id).or_default();
        if !list.contains(&a.id) {
            list.push(a.id);
        }
        self.actions.insert(a.id, a);
    }

    /// The device's actions, oldest first.
    pub fn actions_of(&self, device_id: i64) -> impl Iterator<Item = &Action> {
        self.device_actions
            .get(&device_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.actions.get(id))
    }

    /// The advertisement, program and package of an action.
    pub fn deployment_of(&self, a: &Action) -> Option<(&Advertisement, &Program, &Package)> {
        let adv = self.advertisements.get(&a.advertisement_id)?;
        let prog = self.programs.get(&adv.program_id)?;
        let pkg = self.packages.get(&prog.package_id)?;
        Some((adv, prog, pkg))
    }

    /// Whether an advertisement's package is a client deployment.
    fn is_client_deployment(&self, a: &Advertisement) -> bool {
        self.programs
            .get(&a.program_id)
            .and_then(|p| self.packages.get(&p.package_id))
            .is_some_and(|p| p.kind == dm_shared::vocab::PackageKind::ClientDeployment)
    }

    /// Advertisements that apply to the device now and have no action for it yet. A device
    /// that only registered itself gets no client deployment (one that registered with a
    /// certificate does when `trust_certs`: `[devices] trust_certificate_registrations`).
    pub fn new_advertisements_for(&self, d: &Device, now: i64, trust_certs: bool) -> Vec<i64> {
        self.advertisements
            .values()
            .filter(|a| a.is_active(now))
            .filter(|a| self.collections.get(&a.collection_id).is_some_and(|c| c.contains(d)))
            .filter(|a| d.is_verified(trust_certs) || !self.is_client_deployment(a))
            .filter(|a| {
                let gate = self.rollouts.get(&crate::rollout::Target::Advertisement(a.id));
                gate.is_none_or(|g| g.releases(d.id))
            })
            .filter(|a| !self.actions_of(d.id).any(|ac| ac.advertisement_id == a.id))
            .map(|a| a.id)
            .collect()
    }
}

impl View {
    /// The collection a rollout's target goes to.
    pub fn rollout_collection(&self, t: crate::rollout::Target) -> Option<&Collection> {
        use crate::rollout::Target;
        let id = match t {
            Target::Advertisement(a) => self.advertisements.get(&a)?.collection_id,
            Target::UpdateDeployment(u) => {
                self.update_deployments.iter().find(|x| x.id == u)?.collection_id
            }
        };
        self.collections.get(&id)
    }
}

/// A rollout as the view holds it: the rollout and its members' groups.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutGate {
    /// The rollout.
    pub rollout: crate::rollout::Rollout,
    /// Its members.
    pub members: Vec<crate::rollout::Member>,
    /// Each member's group, by device.
    pub groups: HashMap<i64, i64>,
}

impl RolloutGate {
    /// Every rollout and its members, by what each releases.
    pub fn load(store: &dyn Storage) -> Result<HashMap<crate::rollout::Target, RolloutGate>> {
        let mut members: HashMap<i64, Vec<crate::rollout::Member>> = HashMap::new();
        for m in store.rollout_members()? {
            members.entry(m.rollout_id).or_default().push(m);
        }
        Ok(store
            .rollouts()?
            .into_iter()
            .map(|r| {
                let members = members.remove(&r.id).unwrap_or_default();
                let groups = members.iter().map(|m| (m.device_id, m.group)).collect();
                (r.target, RolloutGate { rollout: r, members, groups })
            })
            .collect())
    }

    /// Whether the device is offered the rollout's advertisement now.
    pub fn releases(&self, device_id: i64) -> bool {
        let r = &self.rollout;
        self.groups
            .get(&device_id)
            .is_some_and(|g| crate::rollout::released(r.state, r.current_group, *g))
    }
}

/// Locks that serialize feedback per action (an action always takes the same one).
const FEEDBACK_LOCKS: usize = 64;

/// Addresses whose failed device authentications are remembered at most (about 50 bytes
/// each; the oldest make room).
const AUTH_FAILURE_ADDRESSES: usize = 65_536;

/// Shared state of the running server.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The storage.
    pub store: Arc<dyn Storage>,
    /// The in-memory view.
    pub view: RwLock<View>,
    /// Last-seen times not yet written.
    pub last_seen: Mutex<HashMap<i64, i64>>,
    /// The time, injectable for tests.
    pub clock: Arc<dyn dm_shared::clock::Clock>,
    /// Serialize feedback for one action, so the view's order of its changes is the
    /// database's; feedback for different actions runs at once.
    feedback_locks: [Mutex<()>; FEEDBACK_LOCKS],
    /// The base URL for links, known once the listener is bound.
    pub public_url: std::sync::OnceLock<String>,
    /// How many times the view was reloaded because another process changed the database.
    pub reloads: std::sync::atomic::AtomicU64,
    /// When devices registered themselves in the last minute (the rate cap).
    pub registrations: Mutex<std::collections::VecDeque<i64>>,
    /// The device CAs of each tenant and their revocation lists, as last read.
    pub client_trust: RwLock<ClientTrust>,
    /// Devices' failed authentications per address (`[devices] failed_auth_per_minute`).
    pub auth_failures: super::throttle::Throttle,
    /// The web console's sessions and failed logins.
    pub console: super::console::sessions::Console,
    /// Counters for the health check and the metrics.
    pub metrics: super::metrics::Metrics,
    /// The poll interval as polls tell devices (`HH:MM:SS`), formatted once.
    pub poll_sleep: String,
    /// The software update catalog as served, rebuilt when an import moves its marker.
    pub catalog: Mutex<Option<Arc<super::catalog::Catalog>>>,
    /// The management API's requests this minute, by token: (minute, count).
    pub api_requests: Mutex<HashMap<String, (i64, u32)>>,
    /// The distribution points, and where devices are.
    pub dist: super::dp_cache::Distribution,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("listen", &self.config.server.listen).finish()
    }
}

impl AppState {
    /// Loads the view.
    pub fn new(
        config: Config,
        store: Arc<dyn Storage>,
        client_trust: ClientTrust,
    ) -> Result<AppState> {
        let view = View::load(store.as_ref())?;
        let auth_failures = super::throttle::Throttle::new(
            config.devices.failed_auth_per_minute,
            60,
            AUTH_FAILURE_ADDRESSES,
        );
        let poll_sleep = dm_shared::ddi::format_sleep(config.poll_sleep());
        let state = AppState {
            config,
            store,
            view: RwLock::new(view),
            last_seen: Mutex::new(HashMap::new()),
            clock: Arc::new(dm_shared::clock::SystemClock),
            feedback_locks: std::array::from_fn(|_| Mutex::new(())),
            public_url: std::sync::OnceLock::new(),
            reloads: std::sync::atomic::AtomicU64::new(0),
            registrations: Mutex::new(std::collections::VecDeque::new()),
            auth_failures,
            client_trust: RwLock::new(client_trust),
            console: super::console::sessions::Console::default(),
            metrics: super::metrics::Metrics::default(),
            poll_sleep,
            catalog: Mutex::new(None),
            api_requests: Mutex::new(HashMap::new()),
            dist: super::dp_cache::Distribution::default(),
        };
        state.dist.reload(state.store.as_ref())?;
        state.refreshed();
        Ok(state)
    }

    /// The base URL devices reach this server at: the configured one, else the bound address.
    pub fn public_url(&self) -> String {
        match &self.config.server.public_url {
            Some(_) => self.config.public_url(),
            None => self.public_url.get().cloned().unwrap_or_else(|| self.config.public_url()),
        }
    }

    /// Holds while feedback for `action_id` is stored and put into the view.
    pub fn feedback_lock(&self, action_id: i64) -> std::sync::MutexGuard<'_, ()> {
        let i = action_id.rem_euclid(FEEDBACK_LOCKS as i64) as usize;
        self.feedback_locks[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    }

    /// Now as a time.
    pub fn now_time(&self) -> SystemTime {
        self.clock.now()
    }

    /// Reads the view.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the view, counted as a local write (see [`View::local_writes`]).
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
        v.local_writes += 1;
        v
    }

    /// A device asked about an action or package its view does not hold: another instance on
    /// the same database may have just made it (an action, on a poll that instance answered),
    /// before this one heard of it. Reads the device's actions from the database and adds the
    /// new ones; reloads the whole view when one belongs to an advertisement it does not know.
    /// Returns whether anything was new.
    pub fn catch_up(&self, device_id: i64) -> bool {
        let read = || {
            let all = self.store.actions_of_device(device_id)?;
            let v = self.read();
            Ok(all.into_iter().filter(|a| v.actions.get(&a.id) != Some(a)).collect())
        };
        self.put_fresh(&read, &|v, a| v.deployment_of(a).is_some(), &|v, a| v.put_action(a))
            .unwrap_or_else(|e| {
                log::warn!("cannot read the actions of device {device_id}: {e}");
                false
            })
    }

    /// Reloads the view if another process changed the database. A reload reads the database
    /// while the server goes on: if the server changed the view meanwhile (feedback closing an
    /// action, a registration), what was read may predate that change, so it is read again
    /// rather than installed over it.
    pub fn refresh_if_changed(&self) -> Result<bool> {
        let changed = self.store.changed();
        let version = self.store.data_version()?;
        if version == self.read().version {
            let devices = self.take_devices(&changed.devices)?;
            let actions = self.take_actions(&changed.actions)?;
            self.refreshed();
            return Ok(devices || actions);
        }
        for _ in 0..3 {
            let seen = self.read().local_writes;
            let fresh = View::load(self.store.as_ref())?;
            if self.install_if_unchanged(fresh, seen) {
                self.refreshed();
                self.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::debug!("reloaded the device and advertisement view (data version {version})");
                return Ok(true);
            }
        }
        log::debug!("the view was changed during three reloads in a row; trying at the next tick");
        Ok(false)
    }

    /// Reads the actions another writer made or moved into the view.
    fn take_actions(&self, ids: &[i64]) -> Result<bool> {
        let read = || read_each(ids, |id| self.store.action(id));
        self.put_fresh(&read, &|v, a| v.deployment_of(a).is_some(), &|v, a| v.put_action(a))
    }

    /// Reads the devices another writer registered or changed into the view.
    fn take_devices(&self, ids: &[i64]) -> Result<bool> {
        let read = || read_each(ids, |id| self.store.device_by_id(id));
        self.put_fresh(&read, &|_, _| true, &|v, d: Device| {
            let key = (d.tenant.clone(), d.controller_id.clone());
            v.device_keys.insert(d.id, key.clone());
            v.devices.insert(key, d);
        })
    }

    /// Puts the rows `read` reads from the database into the view with `put`, unless the
    /// server changed the view meanwhile (what was read may then predate its own write: read
    /// again). Reloads the whole view when a row does not `fit` it (an action of an
    /// advertisement it does not know). Returns whether anything was read.
    fn put_fresh<T>(
        &self,
        read: &dyn Fn() -> Result<Vec<T>>,
        fits: &dyn Fn(&View, &T) -> bool,
        put: &dyn Fn(&mut View, T),
    ) -> Result<bool> {
        for _ in 0..3 {
            let seen = self.read().local_writes;
            let fresh = read()?;
            if fresh.is_empty() {
                return Ok(false);
            }
            let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
            if v.local_writes != seen {
                continue;
            }
            if !fresh.iter().all(|x| fits(&v, x)) {
                drop(v);
                let view = View::load(self.store.as_ref())?;
                return Ok(self.install_if_unchanged(view, seen));
            }
            v.local_writes += 1;
            for x in fresh {
                put(&mut v, x);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Notes that the view holds every change the database had a moment ago.
    fn refreshed(&self) {
        self.metrics.last_refresh.store(self.now(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Installs `fresh` unless the server changed the view since `seen` local writes.
    pub(crate) fn install_if_unchanged(&self, mut fresh: View, seen: u64) -> bool {
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        if view.local_writes != seen {
            return false;
        }
        fresh.local_writes = seen;
        *view = fresh;
        true
    }

    /// What `GET /healthz` says: whether the database answers, and whether the view holds
    /// every change another process made to it (and how often it was reloaded).
    pub fn health(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering;
        let reloads = self.reloads.load(Ordering::Relaxed);
        let ping = self.store.ping();
        self.metrics.database(ping.as_ref().ok().copied());
        let age = self.now() - self.metrics.last_refresh.load(Ordering::Relaxed);
        let hears = self.store.hears_others();
        let fresh = age <= super::metrics::FRESH_SECS && hears;
        let (status, database) = match &ping {
            Ok(_) if fresh => ("ok", "ok".to_string()),
            Ok(_) if !hears => ("unavailable", "ok, but the change notifications are down".into()),
            Ok(_) => ("unavailable", format!("ok, but the view was last refreshed {age} s ago")),
            Err(e) => ("unavailable", e.to_string()),
        };
        serde_json::json!({
            "status": status,
            "database": database,
            "latency_ms": ping.ok().map(|d| d.as_secs_f64() * 1000.0),
            "view": {"fresh": fresh, "refreshed_secs_ago": age, "reloads": reloads},
            "distribution_points": self.dist.health(self.now(), self.config.distribution.silent_after()),
        })
    }

    /// Notes that a device polled.
    pub fn seen(&self, device_id: i64, now: i64) {
        self.last_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(device_id, now);
    }

    /// Writes the pending last-seen times in one transaction.
    pub fn flush_last_seen(&self) -> Result<usize> {
        let batch: Vec<(i64, i64)> = {
            let mut m = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            m.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        self.store.flush_last_seen(&batch)?;
        let mut view = self.write();
        for (id, t) in &batch {
            if let Some(key) = view.device_keys.get(id).cloned() {
                if let Some(d) = view.devices.get_mut(&key) {
                    d.last_seen = Some(*t);
                }
            }
        }
        Ok(batch.len())
    }

    /// Registers a device and adds it to the view.
    pub fn register(
        &self,
        tenant: &str,
        controller_id: &str,
        token_sha256: Option<&str>,
        how: &str,
    ) -> Result<Device> {
        self.may_register(tenant, controller_id)?;
        let d = match self.store.add_device(tenant, controller_id, token_sha256, how, self.now()) {
            Ok(d) => d,
            // Registered a moment ago by a concurrent request: it is this device only if it
            // presented the same token.
            Err(Error::Conflict(_)) => {
                let d = self
                    .store
                    .device(tenant, controller_id)?
                    .ok_or_else(|| Error::NotFound(format!("device {tenant}/{controller_id}")))?;
                if token_sha256.is_some() && d.token_sha256.as_deref() != token_sha256 {
                    log::warn!(
                        "device {tenant}/{controller_id} was registered a moment ago with another token; refusing this one"
                    );
                    return Err(Error::Unauthorized(format!(
                        "the target token of device {controller_id} does not match"
                    )));
                }
                return Ok(d);
            }
            Err(e) => return Err(e),
        };
        log::info!("registered device {tenant}/{controller_id} (id {}) by {how}", d.id);
        if !d.is_verified(self.config.devices.trust_certificate_registrations) {
            log::info!(
                "device {tenant}/{controller_id} registered itself: it gets no client deployment (their settings hold the fleet's secrets) until an administrator runs dmmp device approve {tenant}/{controller_id}"
            );
        }
        let mut view = self.write();
        view.device_keys.insert(d.id, (d.tenant.clone(), d.controller_id.clone()));
        view.devices.insert((d.tenant.clone(), d.controller_id.clone()), d.clone());
        Ok(d)
    }

    /// Reads the device CAs and their revocation lists again if a file changed (or at the
    /// first call); see [`ClientTrust::reload`].
    pub fn reload_client_trust(&self) {
        ClientTrust::reload(&self.config, &self.client_trust);
    }

    /// Checks the registration caps (`registrations_per_minute`, `max_devices`) and counts this
    /// registration.
    fn may_register(&self, tenant: &str, controller_id: &str) -> Result<()> {
        let cfg = &self.config.devices;
        let now = self.now();
        let mut recent = self.registrations.lock().unwrap_or_else(|p| p.into_inner());
        while recent.front().is_some_and(|t| *t <= now - 60) {
            recent.pop_front();
        }
        if recent.len() >= cfg.registrations_per_minute as usize {
            log::warn!(
                "not registering device {tenant}/{controller_id}: {} devices registered in the last minute, the most registrations_per_minute allows",
                recent.len()
            );
            return Err(Error::Throttled(format!(
                "this server registers at most {} devices a minute; try again later",
                cfg.registrations_per_minute
            )));
        }
        let held = self.read().devices.len() as u64;
        if held >= cfg.max_devices {
            log::warn!(
                "not registering device {tenant}/{controller_id}: the server holds {held} devices, the most max_devices allows"
            );
            return Err(Error::Refused(format!(
                "this server registers no more devices (it holds {held}, its most)"
            )));
        }
        recent.push_back(now);
        Ok(())
    }

    /// Creates the actions of advertisements that newly apply to a device. An available
    /// program's waits for its user's consent, unless the device confirms automatically.
    pub fn ensure_actions(&self, d: &Device) -> Result<()> {
        let now = self.now();
        let (new, auto) = {
            let view = self.read();
            let current = view.devices.get(&(d.tenant.clone(), d.controller_id.clone()));
            let auto = current.unwrap_or(d).auto_confirm.is_some();
            let new: Vec<(i64, bool)> = view
                .new_advertisements_for(d, now, self.config.devices.trust_certificate_registrations)
                .into_iter()
                .map(|id| {
                    let available = view
                        .advertisements
                        .get(&id)
                        .is_some_and(|a| a.kind == AdvertisementKind::Available);
                    (id, available)
                })
                .collect();
            (new, auto)
        };
        for (adv, available) in new {
            let status =
                if available && !auto { ActionStatus::Waiting } else { ActionStatus::Scheduled };
            let a = self.store.ensure_action(adv, d.id, status, now)?;
            log::info!("advertisement {adv} reaches device {} as action {}", d.controller_id, a.id);
            self.write().put_action(a);
        }
        Ok(())
    }
}

/// Reads each of `ids` with `one`, leaving out the ones gone since.
fn read_each<T>(ids: &[i64], one: impl Fn(i64) -> Result<Option<T>>) -> Result<Vec<T>> {
    ids.iter().filter_map(|id| one(*id).transpose()).collect()
}

/// Loads the view afresh and installs it, after the server wrote the database itself (its own
/// writes do not move the data version it watches): what it wrote is served now. Gives up,
/// logged, after five tries that each saw the view change meanwhile; the next reload has it.
pub fn reload_now(state: &AppState) -> Result<()> {
    for _ in 0..5 {
        let seen = state.read().local_writes;
        let fresh = View::load(state.store.as_ref())?;
        if state.install_if_unchanged(fresh, seen) {
            return Ok(());
        }
    }
    log::warn!(
        "the view changed during five reloads; the server's own change is served after the next"
    );
    Ok(())
}
