//! Test fixtures: a demo PKI and signed folders, for the library's own unit tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::devpki::{self, Purpose, Spec};
use crate::manifest::{PackageKind, SignRequest, sign_folder};
use crate::pki::{Cert, Trust};
use crate::programs::SignedProgram;
use crate::version::ClientVersion;

/// A signed folder in a temp dir, and what it takes to trust it.
pub struct Signed {
    /// Keeps the folder alive.
    pub tmp: tempfile::TempDir,
    /// The signed folder.
    pub dir: PathBuf,
    /// Trust in the root.
    pub trust: Trust,
    /// When it was signed.
    pub now: SystemTime,
}

/// A certificate spec valid from an hour ago for a day.
pub fn spec(cn: &str, purpose: Purpose, now: SystemTime) -> Spec {
    Spec {
        common_name: cn.into(),
        purpose,
        not_before: now - Duration::from_secs(3600),
        not_after: now + Duration::from_secs(86_400),
    }
}

/// Certificates of a PEM text.
pub fn certs(pem: &str) -> Vec<Cert> {
    Cert::parse_pem(pem.as_bytes(), Path::new("test.pem")).unwrap()
}

/// A signed software distribution package `tools` 1.0.0.1 with `setup.sh` (executable),
/// `ClientSettings.ini` and `docs/readme.txt`, carrying `programs`.
pub fn signed_folder(programs: Vec<SignedProgram>) -> Signed {
    let now = SystemTime::now();
    let root = devpki::root_ca(&spec("Root", Purpose::Ca, now)).unwrap();
    let publisher = devpki::issue(&root, &spec("Publisher", Purpose::CodeSigning, now)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("card");
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(dir.join("setup.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("setup.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("ClientSettings.ini"),
        b"[Installation]\nClientInstallAction=Install\n",
    )
    .unwrap();
    std::fs::write(dir.join("docs/readme.txt"), b"hello").unwrap();
    let chain = certs(&publisher.cert_pem);
    let req = SignRequest {
        kind: PackageKind::SoftwareDistribution,
        name: "tools".into(),
        version: ClientVersion::new(1, 0, 0, 1),
        platforms: vec![],
        metadata: None,
        programs,
        now,
    };
    sign_folder(&dir, &req, publisher.key_pem.as_bytes(), Path::new("publisher.key"), &chain)
        .unwrap();
    let trust = Trust::roots(certs(&root.cert_pem));
    Signed { tmp, dir, trust, now }
}

/// A program running `setup.sh`.
pub fn setup_program() -> SignedProgram {
    SignedProgram {
        name: "install".into(),
        command: vec!["setup.sh".into(), "--quiet".into()],
        max_run_time: 600,
        platforms: vec![],
        device_class: crate::vocab::DeviceClass::Mobile,
        environment: Default::default(),
        default: false,
        health_check: false,
    }
}
