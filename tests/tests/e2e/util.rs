//! Test harness helpers: finding the real binaries (host and cross-built ARM ones, with their
//! qemu runner), a temp folder per test, and running commands with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The folder cargo put this test binary's sibling binaries in (`target/debug`).
fn host_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/e2e-<hash> -> target/debug
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// A host-built workspace binary. `cargo test --workspace` builds every binary first.
pub fn bin(name: &str) -> PathBuf {
    let p = host_bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        p.display()
    );
    p
}

/// An ARM release binary built by `targets/build.sh`, with the qemu command that runs it.
/// `None` (the test skips) when it was not built, unless `DM_REQUIRE_CROSS` is set, as in CI.
pub fn cross_bin(triple: &str, name: &str) -> Option<(Vec<String>, PathBuf)> {
    let dir = std::env::var_os("DM_CROSS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/cross"));
    let p = dir.join(triple).join("release").join(name);
    let runner: Vec<String> = match triple {
        "aarch64-unknown-linux-gnu" => {
            vec!["qemu-aarch64".into(), "-L".into(), "/usr/aarch64-linux-gnu".into()]
        }
        "armv7-unknown-linux-gnueabihf" => {
            vec!["qemu-arm".into(), "-L".into(), "/usr/arm-linux-gnueabihf".into()]
        }
        other => panic!("no runner for {other}"),
    };
    let have_runner =
        Command::new(&runner[0]).arg("--version").output().is_ok_and(|o| o.status.success());
    if p.exists() && have_runner {
        return Some((runner, p));
    }
    if std::env::var_os("DM_REQUIRE_CROSS").is_some() {
        panic!(
            "{} (or {}) is missing; run targets/setup-toolchain.sh and targets/build.sh",
            p.display(),
            runner[0]
        );
    }
    eprintln!("skipping: {} not built (targets/build.sh)", p.display());
    None
}

/// Runs a command to completion with a deadline; kills it and panics if it overruns.
pub fn run(cmd: &mut Command, deadline: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} overran {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// stdout and stderr as text, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
