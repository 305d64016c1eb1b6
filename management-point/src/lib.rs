//! The management point (`dmmp`) and the publisher's tools (`dmpack`).

#![forbid(unsafe_code)]

pub mod error;
pub mod pack;

pub use error::{Error, Result};
pub mod admin;
pub mod api;
pub mod config;
pub mod debrepo;
pub mod distribution;
pub mod dp;
pub mod model;
pub mod printable;
pub mod random;
pub mod reports;
pub mod rollout;
pub mod server;
pub mod storage;
