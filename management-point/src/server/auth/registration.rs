//! A device's registration as authentication needs it: found in the view (else, added a
//! moment ago by an administrator or unknown, in the database), or made for a device the
//! server does not know when the configuration allows it.

use std::sync::atomic::Ordering;

use crate::config::UnknownDevices;
use crate::model::Device;
use crate::server::http::ApiError;
use crate::server::state::AppState;

/// The device's registration: from the view, else (added a moment ago by an administrator,
/// or unknown) from the database.
pub(super) fn lookup(
    state: &AppState,
    tenant: &str,
    cid: &str,
) -> Result<Option<Device>, ApiError> {
    let cached = state.read().devices.get(&(tenant.to_string(), cid.to_string())).cloned();
    if cached.is_some() {
        return Ok(cached);
    }
    state.metrics.device_lookups.fetch_add(1, Ordering::Relaxed);
    state.store.device(tenant, cid).map_err(ApiError::from)
}

/// Registers an unknown device, when the configuration allows it.
pub(super) fn register(
    state: &AppState,
    tenant: &str,
    cid: &str,
    token: Option<&str>,
    how: &str,
) -> Result<Device, ApiError> {
    if state.config.devices.unknown_devices == UnknownDevices::Refuse {
        return Err(ApiError::unauthorized(format!(
            "device {cid} is not registered and this server does not register unknown devices"
        )));
    }
    state.register(tenant, cid, token, how).map_err(ApiError::from)
}
