//! The device management client: setup (install, upgrade, reconfigure, uninstall, repair,
//! crash-safe), the agent's service life cycle, certificate enrollment, and the pieces they
//! share (identity, health).

#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod identity;
pub mod installed;
pub mod service;
pub mod setup;

pub use error::{Error, Result};
