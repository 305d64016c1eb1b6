//! End-to-end tests: the real binaries, real deployment folders, real peers on loopback.
//! One test binary for the whole suite (as ripgrep does); each test works in its own temp dir.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod agent;
mod api;
mod browser;
mod cli;
mod config;
mod console;
mod crash;
mod cross;
mod distribution;
mod enroll;
mod hostile;
mod images;
mod installer;
mod instances;
mod mp;
mod rauc;
mod reports;
mod robust;
mod rollouts;
mod setup;
mod swupdate;
mod tether;
mod thirdparty;
mod trust;
mod updates;
mod util;
