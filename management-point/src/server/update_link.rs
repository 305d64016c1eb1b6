//! The poll's `dmUpdates` link (docs/software-updates.md): which update deployments hold a
//! device, and the marker that makes the device look again when the catalog, its deployments
//! or their windows change.

use dm_shared::updates as wire;

use super::state::View;
use crate::model::updates::UpdateDeployment;
use crate::model::{Device, MaintenanceWindow};

/// The update deployments whose collection holds the device; a held one only once its
/// rollout released the device's group.
pub fn deployments_of<'v>(view: &'v View, d: &Device) -> Vec<&'v UpdateDeployment> {
    let released = |x: &UpdateDeployment| {
        !x.held
            || view
                .rollouts
                .get(&crate::rollout::Target::UpdateDeployment(x.id))
                .is_some_and(|g| g.releases(d.id))
    };
    view.update_deployments
        .iter()
        .filter(|x| view.collections.get(&x.collection_id).is_some_and(|c| c.contains(d)))
        .filter(|x| released(x))
        .collect()
}

/// The poll's `dmUpdates` link: present once a repository is imported; its marker moves
/// with the catalog and with the device's deployments.
pub fn link(view: &View, base: &str, d: &Device, now: i64) -> Option<String> {
    let m = view.updates_marker.as_ref()?;
    // A window opening or closing moves it too: the device looks again then.
    let ids: Vec<i64> = deployments_of(view, d)
        .iter()
        .map(|x| if window_open(view, x, d.id, now) { x.id } else { -x.id })
        .collect();
    let h = crate::model::fnv1a(ids.iter().flat_map(|i| i.to_le_bytes()));
    Some(format!("{base}/{}?v={m}-{h:x}", wire::UPDATES_PATH))
}

/// The window a deployment's devices install in: its own, else its collection's.
pub fn window_of(view: &View, x: &UpdateDeployment) -> Option<MaintenanceWindow> {
    x.window.or_else(|| view.collections.get(&x.collection_id).and_then(|c| c.window))
}

/// Whether the deployment's window is open for device `device_id` at `now` (each device at
/// its own offset into it); always without a window.
pub fn window_open(view: &View, x: &UpdateDeployment, device_id: i64, now: i64) -> bool {
    window_of(view, x).is_none_or(|w| {
        w.is_open_for(
            now,
            MaintenanceWindow::spread(device_id, &format!("update deployment {}", x.id)),
        )
    })
}
