//! The ARM builds are real ARM binaries and run under qemu: the client's one program, and each
//! program by its name.

use std::process::Command;
use std::time::Duration;

use crate::util::{cross_bin, run, show};

fn check(triple: &str, file_says: &str, platform: &str) {
    // The one program, and each program by its name (a link to it, as on a device).
    for name in ["dm", "dminstaller", "dmclientsetup", "dmsvc", "dmcertenroll"] {
        let Some((runner, path)) = cross_bin(triple, name) else { return };
        let out = run(Command::new("file").arg("-bL").arg(&path), Duration::from_secs(10));
        let desc = String::from_utf8_lossy(&out.stdout);
        assert!(desc.contains(file_says), "{}: file says {desc}", path.display());
        let out = run(
            Command::new(&runner[0]).args(&runner[1..]).arg(&path).arg("--version"),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("({platform})")),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn aarch64_binaries_are_arm64_and_run_under_qemu() {
    check("aarch64-unknown-linux-gnu", "ARM aarch64", "linux-aarch64");
}

#[test]
fn armv7_binaries_are_arm_and_run_under_qemu() {
    check("armv7-unknown-linux-gnueabihf", "32-bit LSB pie executable, ARM, EABI5", "linux-armv7");
}
