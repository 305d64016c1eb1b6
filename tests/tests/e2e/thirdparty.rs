//! The agent against a DDI server that knows nothing of this project
//! (`tests/peers/ddi_server.py`): a chunk named after the uploaded file, a part of its own, a
//! SHA-1 only, no `dm.*` metadata, no status message endpoint. The signed bundle is then the
//! whole truth: recognised by its content whatever its file name, its manifest naming the
//! package and the program to run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// The third-party server, serving one file.
pub struct Ddi {
    child: Child,
    /// Its address.
    pub url: String,
    log: PathBuf,
}

pub const TOKEN: &str = "tok-thirdparty";

impl Ddi {
    fn start(w: &World, file: &Path) -> Ddi {
        Ddi::start_with(w, file, &[])
    }

    /// The server serving `file`, with more of its options (`--images-only`).
    pub fn start_with(w: &World, file: &Path, options: &[&str]) -> Ddi {
        let log = w.path("feedback.jsonl");
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/peers/ddi_server.py"))
            .args(options)
            .arg("--cert")
            .arg(w.pki.join("server.pem"))
            .arg("--key")
            .arg(w.pki.join("server.key"))
            .args(["--token", TOKEN, "--file"])
            .arg(file)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url =
            line.trim().strip_prefix("listening ").expect("the server did not start").to_string();
        Ddi { child, url, log }
    }

    /// Every feedback so far.
    pub fn feedback(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every inventory (`configData` body) so far.
    pub fn inventories(&self) -> Vec<Value> {
        let p = format!("{}.config", self.log.display());
        let text = std::fs::read_to_string(p).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The downloads of the file so far: the Range asked for, or `full`.
    pub fn downloads(&self) -> Vec<String> {
        let p = format!("{}.downloads", self.log.display());
        std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Waits for the closing feedback; returns every feedback.
    pub fn closed(&self, w: &World) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let fb = self.feedback();
            if fb.iter().any(|f| f["status"]["execution"] == "closed") {
                return fb;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no closing feedback: {fb:?}\n{}",
                log_text(&w.device, "DMSvc")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Ddi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device whose agent polls `ddi`.
pub fn device(w: &World, ddi: &Ddi) {
    install_client_polling(w, &ddi.url, "dev-3p", TOKEN, "RetryMaxDelay=4\n");
}

/// A signed bundle of `programs` (NAME=SCRIPT), copied to `file_name`.
fn bundle(w: &World, programs: &[(&str, &str)], default: Option<&str>, file_name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = w.path("pkg-src");
    std::fs::create_dir_all(&src).unwrap();
    let mut cmd = Command::new(bin("dmpack"));
    cmd.args(["package", "--source"]).arg(&src).arg("--out").arg(w.path("pkg"));
    cmd.args(["--name", "tool", "--package-version", "2.1.0.0", "--key"])
        .arg(w.pki.join("publisher.key"));
    cmd.arg("--cert").arg(w.pki.join("publisher.pem"));
    for (name, script) in programs {
        let f = src.join(format!("{name}.sh"));
        std::fs::write(&f, script).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.arg("--program").arg(format!("{name}={name}.sh"));
    }
    if let Some(d) = default {
        cmd.args(["--default-program", d]);
    }
    run_ok(&mut cmd);
    let b = w.bundle(&w.path("pkg"), &w.path("bundle"));
    let dest = w.path(file_name);
    std::fs::copy(b, &dest).unwrap();
    dest
}

fn last_details(fb: &[Value]) -> String {
    fb.last().map(|f| f["status"]["details"].to_string()).unwrap_or_default()
}

#[test]
fn a_signed_bundle_from_a_server_without_our_metadata_runs_its_default_program() {
    let w = World::new();
    let script = |tag: &str| {
        format!(
            "#!/bin/sh\necho {tag} > \"$DM_DEVICE_ROOT/ran-{tag}\"\necho \"$DM_PACKAGE_NAME $DM_PACKAGE_VERSION\"\n"
        )
    };
    let (a, b) = (script("install"), script("repair"));
    // Not named .dmpkg: its content says what it is.
    let file = bundle(&w, &[("install", &a), ("repair", &b)], Some("repair"), "tool-update.bin");
    let ddi = Ddi::start(&w, &file);
    device(&w, &ddi);
    let fb = ddi.closed(&w);
    let last = fb.last().unwrap();
    assert_eq!(
        last["status"]["result"]["finished"],
        "success",
        "{fb:?}\n{}",
        log_text(&w.device, "DMSvc")
    );
    assert!(w.device.join("ran-repair").exists(), "the default program did not run");
    assert!(!w.device.join("ran-install").exists());
    let all: String = fb.iter().map(|f| f["status"]["details"].to_string()).collect();
    assert!(
        all.contains("tool 2.1.0.0 downloaded and verified"),
        "the signed name and version: {all}"
    );
}

#[test]
fn several_programs_and_none_default_or_no_bundle_at_all_are_refused_with_the_reason() {
    let w = World::new();
    let file = bundle(
        &w,
        &[("install", "#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran\"\n"), ("repair", "#!/bin/sh\n")],
        None,
        "tool.dmpkg",
    );
    let ddi = Ddi::start(&w, &file);
    device(&w, &ddi);
    let fb = ddi.closed(&w);
    assert_eq!(fb.last().unwrap()["status"]["result"]["finished"], "failure", "{fb:?}");
    assert!(last_details(&fb).contains("none marked default"), "{}", last_details(&fb));
    assert!(!w.device.join("ran").exists());
    drop(ddi);

    // Something that is not a bundle, whatever it is called.
    let w = World::new();
    let junk = w.path("firmware.dmpkg");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let ddi = Ddi::start(&w, &junk);
    device(&w, &ddi);
    let fb = ddi.closed(&w);
    assert_eq!(fb.last().unwrap()["status"]["result"]["finished"], "failure", "{fb:?}");
}
