//! The library every dm program shares: settings, versions, the device layout, the file
//! system rules, dated logging, status codes, certificate stores and publisher trust.
//!
//! Library code logs only through the `log` facade and returns [`Error`]; the programs decide
//! what to print and which exit code to use.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod cert;
pub mod certstore;
pub mod cli;
pub mod clock;
pub mod config_item;
pub mod context;
pub mod crl;
pub mod ddi;
pub mod debian;
pub mod deployment;
#[cfg(feature = "devpki")]
pub mod devpki;
pub mod digest;
pub mod encoding;
pub mod error;
pub mod failpoint;
pub mod files;
pub mod fs;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod ini;
pub mod layout;
pub mod logging;
pub mod manifest;
pub mod message;
pub mod outbox;
pub mod pki;
pub mod platform;
pub mod policy;
pub mod programs;
pub mod settings;
pub mod status;
#[cfg(test)]
mod testing;
pub mod tether;
pub mod updates;
pub mod version;
pub mod vocab;
pub mod x509;

pub use context::{Context, Env};
pub use error::{Error, Result};
pub use layout::{DeviceLayout, StoreName};
pub use platform::Platform;
pub use settings::Settings;
pub use status::StatusCode;
pub use version::ClientVersion;
