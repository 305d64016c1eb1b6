//! The [`DpStorage`] part of the storage interface: distribution points and the packages
//! each holds (docs/distribution-points.md).

use crate::distribution::{DistributionPoint, DpContent, DpHealth};
use crate::error::Result;

/// What the management point stores of its distribution points.
pub trait DpStorage {
    /// Adds a distribution point (its name and credential unique). Returns its id.
    fn add_dp(&self, dp: &DistributionPoint) -> Result<i64>;
    /// Every distribution point, by id.
    fn dps(&self) -> Result<Vec<DistributionPoint>>;
    /// Records what a distribution point's report said of its health.
    fn set_dp_health(&self, id: i64, health: &DpHealth) -> Result<()>;
    /// Every package on every distribution point, by distribution point and package.
    fn dp_contents(&self) -> Result<Vec<DpContent>>;
    /// Adds or replaces rows (by distribution point and package), in one transaction.
    fn put_dp_contents(&self, rows: &[DpContent]) -> Result<()>;
    /// Replaces rows only where they are still as they were read: each `(was, now)` writes
    /// `now` (or removes the row, `None`) if the row of `was`'s distribution point and package
    /// is still `was`, in one transaction. Returns how many were written. A distribution
    /// point's report and the silence tick write so: an administrator's change made since they
    /// read is never undone by them.
    fn swap_dp_contents(&self, swaps: &[(DpContent, Option<DpContent>)]) -> Result<usize>;
    /// Removes a distribution point and its rows; those that copied from it copy from the
    /// management point from now on.
    fn remove_dp(&self, id: i64) -> Result<()>;
}
