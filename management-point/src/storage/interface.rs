//! The [`Storage`] interface: everything the management point stores, whichever database
//! holds it, and what a store tells a server about other writers' changes.

use std::collections::BTreeMap;

pub use super::rollouts::RolloutStorage;
pub use super::updates::UpdateStorage;
use crate::error::Result;
use crate::model::*;

/// Rows another writer changed: what a server reads into its view instead of reloading it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Actions made or moved.
    pub actions: Vec<i64>,
    /// Devices registered or changed (not their last-seen times).
    pub devices: Vec<i64>,
}

/// Everything the management point stores.
pub trait Storage:
    UpdateStorage + RolloutStorage + super::api::ApiStorage + super::dps::DpStorage + Send + Sync
{
    /// A number that changes whenever another connection committed a change.
    fn data_version(&self) -> Result<i64>;
    /// The actions and devices other writers made or changed since the last call, when the
    /// store can name them (PostgreSQL); their changes do not move [`Storage::data_version`].
    /// Other stores name none, and move the data version.
    fn changed(&self) -> Changed {
        Changed::default()
    }
    /// A device by its row id.
    fn device_by_id(&self, id: i64) -> Result<Option<Device>>;
    /// How long a trivial query takes now: the health check and the metrics.
    fn ping(&self) -> Result<std::time::Duration>;
    /// Whether the store hears other writers' changes now (PostgreSQL: its notification
    /// connection is up). A server that does not may serve a stale view.
    fn hears_others(&self) -> bool {
        true
    }

    /// Registers a device.
    fn add_device(
        &self,
        tenant: &str,
        controller_id: &str,
        token_sha256: Option<&str>,
        registered_by: &str,
        now: i64,
    ) -> Result<Device>;
    /// Registers many devices in one transaction: (tenant, controller id, token SHA-256).
    /// Devices that already exist are left alone. Returns how many were added.
    fn import_devices(
        &self,
        devices: &[(String, String, Option<String>)],
        now: i64,
    ) -> Result<usize>;
    /// A device by tenant and controller id.
    fn device(&self, tenant: &str, controller_id: &str) -> Result<Option<Device>>;
    /// Every device.
    fn devices(&self) -> Result<Vec<Device>>;
    /// At most `limit` devices in (tenant, controller id) order, after `after` when given: the
    /// reports page through a fleet with this, never holding it all.
    fn devices_page(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<Device>>;
    /// Replaces a device's token.
    fn set_device_token(&self, id: i64, token_sha256: Option<&str>) -> Result<()>;
    /// Replaces a device's inventory attributes.
    fn set_attributes(&self, id: i64, attributes: &BTreeMap<String, String>) -> Result<()>;
    /// Records the certificate (SHA-256 of its DER) a device authenticated with.
    fn set_device_cert(&self, id: i64, sha256: &str) -> Result<()>;
    /// Adds a certificate to the refusal list.
    fn revoke_certificate(
        &self,
        sha256: &str,
        device_id: i64,
        reason: &str,
        now: i64,
    ) -> Result<()>;
    /// The refused certificates (SHA-256 of their DER).
    fn revoked_certificates(&self) -> Result<Vec<String>>;
    /// Turns a device's auto-confirmation on (`Some`) or off.
    fn set_auto_confirm(&self, id: i64, auto: Option<&AutoConfirm>) -> Result<()>;
    /// Records how a device came to be trusted (`registered_by`), as an approval does.
    fn set_registered_by(&self, id: i64, how: &str) -> Result<()>;
    /// Records last-seen times in one transaction.
    fn flush_last_seen(&self, seen: &[(i64, i64)]) -> Result<()>;

    /// Adds a package and its artifacts.
    fn add_package(&self, p: &Package) -> Result<i64>;
    /// Every package.
    fn packages(&self) -> Result<Vec<Package>>;
    /// Adds an item to the configuration item catalog; the same name and version twice is a
    /// conflict.
    fn add_config_item(&self, item: &ConfigItem, now: i64) -> Result<()>;
    /// Adds an administrator of the console, or sets the password hash of one.
    fn set_administrator(&self, name: &str, hash: &str, now: i64) -> Result<()>;
    /// An administrator's password hash (a PHC string), if there is one of that name.
    fn administrator_hash(&self, name: &str) -> Result<Option<String>>;
    /// Pins an administrator's client certificate (by the SHA-256 of its DER).
    fn add_administrator_certificate(&self, cert: &AdminCert, now: i64) -> Result<()>;
    /// The administrator certificate with this SHA-256, if one is pinned.
    fn administrator_by_certificate(&self, sha256: &str) -> Result<Option<AdminCert>>;
    /// The administrators who log in with a password, by name.
    fn administrators(&self) -> Result<Vec<Administrator>>;
    /// The pinned administrator certificates, by name then SHA-256.
    fn administrator_certificates(&self) -> Result<Vec<AdminCert>>;
    /// Removes an administrator: their password and their pinned certificates, in one
    /// transaction. Returns whether there was anything to remove.
    fn remove_administrator(&self, name: &str) -> Result<bool>;
    /// Unpins the administrator certificate with this SHA-256. Returns whether one was pinned.
    fn remove_administrator_certificate(&self, sha256: &str) -> Result<bool>;
    /// The catalog's items with when they were added, by name and version.
    fn config_items(&self) -> Result<Vec<(ConfigItem, i64)>>;
    /// Removes a package that no advertisement uses.
    fn remove_package(&self, id: i64) -> Result<()>;

    /// Adds a program.
    fn add_program(&self, p: &Program) -> Result<i64>;
    /// Every program.
    fn programs(&self) -> Result<Vec<Program>>;

    /// Adds a collection.
    fn add_collection(&self, name: &str, tenant: &str, rule: &CollectionRule) -> Result<i64>;
    /// Sets (or, with `None`, clears) a collection's maintenance window. Returns whether the
    /// collection exists.
    fn set_collection_window(&self, id: i64, window: Option<&MaintenanceWindow>) -> Result<bool>;
    /// Adds an explicit member.
    fn add_member(&self, collection_id: i64, device_id: i64) -> Result<()>;
    /// Every collection.
    fn collections(&self) -> Result<Vec<Collection>>;

    /// Adds an advertisement.
    fn add_advertisement(&self, a: &Advertisement) -> Result<i64>;
    /// Every advertisement.
    fn advertisements(&self) -> Result<Vec<Advertisement>>;
    /// Cancels an advertisement: open actions go to `canceling` (the device confirms).
    fn cancel_advertisement(&self, id: i64, now: i64) -> Result<usize>;

    /// Creates the action of an advertisement for a device (or returns the existing one).
    fn ensure_action(
        &self,
        advertisement_id: i64,
        device_id: i64,
        status: ActionStatus,
        now: i64,
    ) -> Result<Action>;
    /// Every action.
    fn actions(&self) -> Result<Vec<Action>>;
    /// A device's actions, oldest first.
    fn actions_of_device(&self, device_id: i64) -> Result<Vec<Action>>;
    /// One action.
    fn action(&self, id: i64) -> Result<Option<Action>>;
    /// Marks a scheduled action retrieved.
    fn mark_retrieved(&self, id: i64, now: i64) -> Result<()>;
    /// Stores feedback and moves the action, atomically: `decide` sees the current status and
    /// returns the new one, or an error (nothing is stored then). `None`: the device sent
    /// this report (its `report_id`) before, and nothing changed.
    fn apply_feedback(
        &self,
        action_id: i64,
        record: &StatusRecord,
        decide: &dyn Fn(ActionStatus) -> Result<ActionStatus>,
    ) -> Result<Option<Action>>;

    /// Stores a status message that belongs to no action; `None` when the device sent this
    /// report before.
    fn add_status(&self, record: &StatusRecord) -> Result<Option<i64>>;
    /// Status records of a device, oldest first.
    fn statuses_for_device(&self, device_id: i64) -> Result<Vec<StatusRecord>>;
    /// Stores a CA's revocation list (PEM), unless a newer one of that issuer is stored.
    /// Returns whether it was stored.
    fn put_crl(&self, issuer: &str, pem: &str, this_update: i64, now: i64) -> Result<bool>;
    /// Every CA's revocation list: (issuer, PEM).
    fn crls(&self) -> Result<Vec<(String, String)>>;

    /// Status records of an action, oldest first.
    fn statuses_for_action(&self, action_id: i64) -> Result<Vec<StatusRecord>>;
}
