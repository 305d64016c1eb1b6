//! The [`RolloutStorage`] part of the storage interface: phased rollouts, their members and
//! their log (docs/rollouts.md).

use crate::error::Result;
use crate::model::Advertisement;
use crate::rollout::{Event, Member, Rollout, Sample};

/// What the management point stores for phased rollouts.
pub trait RolloutStorage {
    /// Adds a rollout, and with `adv` the advertisement it releases, in one transaction: no
    /// device is ever offered the advertisement without its rollout's gate (`r.target` is
    /// then ignored; without, it names a held update deployment). Returns the rollout as
    /// stored, its id and target set.
    fn add_rollout(&self, adv: Option<&Advertisement>, r: &Rollout) -> Result<Rollout>;
    /// Every rollout, by id.
    fn rollouts(&self) -> Result<Vec<Rollout>>;
    /// Moves a rollout from `before` to `after` (state, current group, reason, time) and adds
    /// `event` to its log, in one transaction, only if it is still where `before` says (its
    /// state and current group): another instance or an administrator may have moved it.
    /// Returns whether it moved.
    fn update_rollout(&self, before: &Rollout, after: &Rollout, event: &str) -> Result<bool>;
    /// Moves a rollout from `before` to `after` as [`RolloutStorage::update_rollout`] does and
    /// gives it a new advertisement `adv` (a fixed version), in one transaction: the old
    /// advertisement is canceled (its open actions canceling), every member's failure counts
    /// again (they are judged on the new version), and `event` is logged. Returns the new
    /// advertisement's id, or none when the rollout was not where `before` says.
    fn replace_rollout_advertisement(
        &self,
        before: &Rollout,
        after: &Rollout,
        adv: &Advertisement,
        event: &str,
    ) -> Result<Option<i64>>;
    /// Adds members (device, group) to a rollout; a device already in it stays where it is.
    /// Returns how many were added.
    fn add_rollout_members(&self, rollout_id: i64, members: &[(i64, i64)]) -> Result<usize>;
    /// The members of every rollout.
    fn rollout_members(&self) -> Result<Vec<Member>>;
    /// Marks members' failures as acknowledged (a resume past them).
    fn acknowledge_rollout_members(&self, rollout_id: i64, devices: &[i64]) -> Result<()>;
    /// A rollout's log, oldest first.
    fn rollout_events(&self, rollout_id: i64) -> Result<Vec<Event>>;
    /// Records a group's counts at a moment (the gates do when they change).
    fn add_rollout_sample(&self, rollout_id: i64, s: &Sample) -> Result<()>;
    /// A rollout's samples, oldest first.
    fn rollout_samples(&self, rollout_id: i64) -> Result<Vec<Sample>>;
}
