//! Every program answers --help and --version and refuses bad options with the usage code.

use std::process::Command;
use std::time::Duration;

use crate::util::{bin, run, show};

/// The programs that act on a device root (`dmtether` on the desktop's).
const DEVICE_PROGRAMS: [&str; 5] =
    ["dminstaller", "dmclientsetup", "dmsvc", "dmcertenroll", "dmtether"];
const ALL_PROGRAMS: [&str; 7] =
    ["dminstaller", "dmclientsetup", "dmsvc", "dmcertenroll", "dmmp", "dmpack", "dmtether"];

#[test]
fn every_program_has_help_and_version() {
    for name in ALL_PROGRAMS {
        let out = run(Command::new(bin(name)).arg("--help"), Duration::from_secs(10));
        assert!(out.status.success(), "{name} --help: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(name),
            "{name} --help: {}",
            show(&out)
        );
        let out = run(Command::new(bin(name)).arg("--version"), Duration::from_secs(10));
        assert!(out.status.success(), "{name} --version: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn device_programs_take_a_device_root_and_refuse_bad_options() {
    for name in DEVICE_PROGRAMS {
        let out = run(Command::new(bin(name)).arg("--help"), Duration::from_secs(10));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--device-root DIR"),
            "{name}: {}",
            show(&out)
        );
        let out = run(Command::new(bin(name)).arg("--no-such-option"), Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--help"), "{name}: {}", show(&out));
    }
}
