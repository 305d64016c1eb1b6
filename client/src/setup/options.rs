//! What setup is asked to do: the deployment folder, the settings to use, and how. Below the
//! planner and the preparation that read it.

use std::path::PathBuf;
use std::time::Duration;

use dm_shared::Platform;

/// How to run setup.
#[derive(Debug, Clone)]
pub struct Options {
    /// The deployment folder.
    pub source: PathBuf,
    /// The settings file to use (must be a signed file of the folder).
    pub settings: Option<PathBuf>,
    /// Uninstall the damaged client and install the staged one.
    pub repair: bool,
    /// Uninstall also removes the certificates DMInstaller installed and the device's own.
    pub remove_certificates: bool,
    /// This device's platform.
    pub platform: Platform,
    /// How long to wait for a new agent to report healthy.
    pub health_timeout: Duration,
}
