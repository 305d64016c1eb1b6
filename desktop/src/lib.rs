//! The desktop side of device management: `dmtether` installs the client on devices tethered
//! to a desktop (USB networking with SSH), the ARM Linux form of the source documents'
//! ActiveSync path. The desktop's agent stages a client deployment advertised to it; `dmtether`
//! copies it to each device that connects, runs its installer, brings the logs back, and
//! records the outcome, which the agent reports to the management point (docs/tether.md).

#![forbid(unsafe_code)]

pub mod copy;
pub mod device;
pub mod error;
pub mod keys;
pub mod scan;
pub mod ssh;
pub mod staged;

pub use error::{Error, Result};
