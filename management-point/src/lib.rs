//! The management point (`dmmp`) and the publisher's tools (`dmpack`).

#![forbid(unsafe_code)]

pub mod error;
pub mod pack;

pub use error::{Error, Result};
