//! The [`UpdateStorage`] part of the storage interface: the software update catalog,
//! approvals, update deployments and devices' scan results (docs/software-updates.md).

use crate::error::Result;
use crate::model::updates::*;

/// What the management point stores for software updates.
pub trait UpdateStorage {
    /// Adds a repository to the update catalog, or replaces the one of that name (its id
    /// kept). Returns its id.
    fn put_update_repository(&self, r: &UpdateRepository) -> Result<i64>;
    /// The repositories of the update catalog, by name.
    fn update_repositories(&self) -> Result<Vec<UpdateRepository>>;
    /// Adds updates in one transaction; one already there (same repository, package,
    /// architecture and version) is left alone. Returns how many were added.
    fn add_updates(&self, updates: &[Update]) -> Result<usize>;
    /// Every update of the catalog, by id.
    fn updates(&self) -> Result<Vec<Update>>;
    /// Sets which update supersedes each (none: it is the newest), in one transaction.
    fn set_superseded(&self, changes: &[(i64, Option<i64>)]) -> Result<()>;
    /// Approves updates not approved yet, in one transaction. Returns how many were.
    fn approve_updates(&self, ids: &[i64], by: &str, now: i64) -> Result<usize>;
    /// Adds an approval rule.
    fn add_update_rule(&self, r: &UpdateRule) -> Result<i64>;
    /// The approval rules, by id.
    fn update_rules(&self) -> Result<Vec<UpdateRule>>;
    /// Adds an update deployment.
    fn add_update_deployment(&self, d: &UpdateDeployment) -> Result<i64>;
    /// The update deployments, by id.
    fn update_deployments(&self) -> Result<Vec<UpdateDeployment>>;
    /// Applies a device's scan report atomically: its changes when they follow the report
    /// the server acknowledged last (`report.base` is that serial; 0 replaces everything).
    /// Returns the new serial, or `None` when `base` is not the last serial (the device then
    /// sends a full report) and nothing changed.
    fn apply_update_scan(
        &self,
        device_id: i64,
        report: &dm_shared::updates::ScanReport,
        now: i64,
    ) -> Result<Option<u64>>;
    /// The stored update states of one device, or of every device, by device then update.
    fn update_states(&self, device_id: Option<i64>) -> Result<Vec<DeviceUpdateState>>;
    /// Where `devices` are with `updates` (a rollout of an update deployment reads a slice of
    /// its group at a time): one query each for the states and the scans.
    fn update_progress(&self, devices: &[i64], updates: &[i64]) -> Result<UpdateProgress>;
    /// How many devices hold each update in each stored state: (update, state, devices).
    fn update_state_counts(&self) -> Result<Vec<(i64, UpdateState, i64)>>;
    /// How many devices are registered (the compliance summary's whole).
    fn device_count(&self) -> Result<i64>;
    /// Every device's last accepted scan.
    fn update_scans(&self) -> Result<Vec<UpdateScan>>;
}
