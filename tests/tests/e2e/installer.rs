//! DMInstaller from real signed deployment folders: the trusted path, every refusal leaving
//! the device untouched, and locked devices (by policy and by a read-only file system).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;

/// Paths any run may write: the logs, and runtime files under run/ (a tmpfs on a device).
const LOGS: &[&str] = &["var/log/dm", "run"];

fn install(w: &World, folder: &Path) -> Output {
    run(
        Command::new(bin("dminstaller"))
            .arg("--source")
            .arg(folder)
            .arg("--device-root")
            .arg(&w.device),
        Duration::from_secs(60),
    )
}

fn store_files(w: &World, store: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.device.join("etc/dm/certs").join(store))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn thumbprint_of_pem(pem: &Path) -> String {
    let certs = dm_shared::pki::Cert::load_pem(pem).unwrap();
    certs[0].thumbprint().to_string()
}

fn trusted_folder(w: &World, setup_exit: i32) -> PathBuf {
    let bins = w.bin_dir("bins", Some(setup_exit));
    w.folder(
        "folder",
        "1.2.0.345",
        &[(&host_platform(), &bins)],
        &[("DMCommonInstaller.ini", "[Installation]\nClientInstallAction=Install\n")],
        None,
    )
}

#[test]
fn trusted_folder_installs_the_publisher_and_runs_setup() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    let out = install(&w, &folder);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let thumb = thumbprint_of_pem(&w.pki.join("publisher.pem"));
    assert_eq!(store_files(&w, "privileged"), [format!("{thumb}.pem")]);
    assert_eq!(store_files(&w, "spc"), [format!("{thumb}.pem")]);
    let mode = std::fs::metadata(w.device.join(format!("etc/dm/certs/spc/{thumb}.pem"))).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);

    // Setup ran from the staged copy of the verified bytes, never from the card.
    let args = std::fs::read_to_string(w.device.join("fake-setup-args")).unwrap();
    let staged = w.device.join("var/lib/dm/staging/deployment");
    assert!(args.contains(&format!("--source {}", staged.display())), "{args}");
    assert!(args.contains(&format!("--device-root {}", w.device.display())), "{args}");
    assert!(
        args.contains(&format!("--settings {}", staged.join("DMCommonInstaller.ini").display())),
        "{args}"
    );
    assert!(!staged.exists(), "the staging folder is removed when the installer ends");

    let logs = logs(&w.device, "DMInstaller");
    assert_eq!(logs.len(), 1);
    let name = logs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.len() == "DMInstaller20261124-132001.log".len() && name.ends_with(".log"),
        "{name}"
    );
    let text = log_text(&w.device, "DMInstaller");
    for step in [
        "step 1/6",
        "step 2/6",
        "step 3/6",
        "step 4/6",
        "step 5/6",
        "step 6/6",
        "dm Demo Publisher",
        "setup finished successfully",
    ] {
        assert!(text.contains(step), "log lacks {step:?}:\n{text}");
    }

    // Idempotent: a second run finds the certificate in place and changes nothing in the stores.
    let before = tree_hash(&w.device.join("etc"), &[]);
    let out = install(&w, &folder);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(tree_hash(&w.device.join("etc"), &[]), before);
    assert!(log_text(&w.device, "DMInstaller").contains("already has"));
}

#[test]
fn setup_exit_code_is_the_installer_exit_code() {
    let w = World::new();
    let folder = trusted_folder(&w, 22);
    let out = install(&w, &folder);
    assert_eq!(out.status.code(), Some(22), "{}", show(&out));
    assert!(
        log_text(&w.device, "DMInstaller")
            .contains("setup exited with code 22: Fatal error during installation (0x80070643)")
    );
}

/// Runs the installer on a folder that must be refused and checks: the exit code, the log
/// line, setup never ran, and the device (logs aside) is byte-for-byte unchanged.
fn assert_refused(w: &World, folder: &Path, exit: i32, log_needle: &str) {
    let before = tree_hash(&w.device, LOGS);
    let out = install(w, folder);
    assert_eq!(out.status.code(), Some(exit), "{}", show(&out));
    let text = log_text(&w.device, "DMInstaller");
    assert!(text.contains(log_needle), "log lacks {log_needle:?}:\n{text}");
    let status = dm_shared::StatusCode::from_exit_code(exit).unwrap();
    assert!(
        text.contains(&format!("[ERROR] {status}: ")),
        "log lacks the status {status}:\n{text}"
    );
    assert!(!w.device.join("fake-setup-args").exists(), "setup ran");
    assert_eq!(
        tree_hash(&w.device, LOGS),
        before,
        "the device changed:\n{}",
        tree_listing(&w.device)
    );
}

fn edit_manifest(folder: &Path, f: impl FnOnce(String) -> String) {
    let p = folder.join("manifest.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, f(text)).unwrap();
}

#[test]
fn untrusted_publisher_is_refused() {
    let w = World::new();
    let other = World::new();
    let bins = w.bin_dir("bins", Some(0));
    let folder = w.folder(
        "f",
        "1.0.0.0",
        &[(&host_platform(), &bins)],
        &[],
        Some((&other.pki.join("publisher.pem"), &other.pki.join("publisher.key"))),
    );
    assert_refused(&w, &folder, 32, "does not chain to a root certificate this device trusts");
}

#[test]
fn expired_publisher_is_refused() {
    let w = World::new();
    let (cert, key) = w.cert(
        "Expired Publisher",
        "code-signing",
        &["--valid-from", "2020-01-01T00:00:00Z", "--valid-until", "2021-01-01T00:00:00Z"],
    );
    let bins = w.bin_dir("bins", Some(0));
    let folder = w.folder("f", "1.0.0.0", &[(&host_platform(), &bins)], &[], Some((&cert, &key)));
    assert_refused(&w, &folder, 33, "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z");
}

#[test]
fn publisher_without_code_signing_usage_is_refused() {
    let w = World::new();
    let (cert, key) = w.cert("TLS Server", "server-auth-only", &[]);
    let bins = w.bin_dir("bins", Some(0));
    let folder = w.folder("f", "1.0.0.0", &[(&host_platform(), &bins)], &[], Some((&cert, &key)));
    assert_refused(&w, &folder, 34, "is not valid for code signing");
}

#[test]
fn altered_binary_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    let target = folder.join(format!("dmsvc_{}", host_platform()));
    let mut bytes = std::fs::read(&target).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&target, bytes).unwrap();
    assert_refused(&w, &folder, 36, "SHA-256 is");
}

#[test]
fn missing_executable_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    std::fs::remove_file(folder.join(format!("dmcertenroll_{}", host_platform()))).unwrap();
    assert_refused(&w, &folder, 38, "listed in the signed manifest but missing");
}

#[test]
fn extra_executable_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    std::fs::copy(bin("dmsvc"), folder.join("dmsvc_linux-armv7")).unwrap();
    assert_refused(
        &w,
        &folder,
        39,
        "dmsvc_linux-armv7: an executable that is not in the signed manifest",
    );
}

#[test]
fn unsigned_settings_file_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    std::fs::write(
        folder.join("ClientSettings.ini"),
        "[Installation]\nClientInstallAction=Uninstall\n",
    )
    .unwrap();
    assert_refused(&w, &folder, 39, "a settings file that is not in the signed manifest");
}

#[test]
fn truncated_manifest_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    edit_manifest(&folder, |t| t[..t.len() / 3].to_string());
    assert_refused(&w, &folder, 37, "the manifest is malformed or truncated");
}

#[test]
fn tampered_manifest_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    edit_manifest(&folder, |t| t.replace("1.2.0.345", "9.9.9.9"));
    assert_refused(&w, &folder, 31, "the signature does not match the manifest");
}

#[test]
fn folder_without_signature_is_refused() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    std::fs::remove_file(folder.join("manifest.sig")).unwrap();
    assert_refused(&w, &folder, 30, "is not signed: manifest.sig is missing");
}

#[test]
fn other_platform_is_refused() {
    let w = World::new();
    let bins = w.bin_dir("bins", Some(0));
    let folder = w.folder("f", "1.0.0.0", &[("linux-riscv64", &bins)], &[], None);
    assert_refused(
        &w,
        &folder,
        20,
        &format!(
            "this device is {}, but the folder only has binaries for linux-riscv64",
            host_platform()
        ),
    );
}

/// Makes the device look managed: an active-version pointer and an agent state folder.
fn fake_installed_client(w: &World) {
    std::fs::create_dir_all(w.device.join("opt/dm/versions/1.0.0.0")).unwrap();
    std::fs::create_dir_all(w.device.join("var/lib/dm")).unwrap();
    std::os::unix::fs::symlink("versions/1.0.0.0", w.device.join("opt/dm/current")).unwrap();
}

fn lock_by_policy(w: &World) {
    std::fs::create_dir_all(w.device.join("etc/dm")).unwrap();
    std::fs::write(
        w.device.join("etc/dm/security-policy.ini"),
        "[DeviceSecurity]\nLocked=true\nReason=carrier lock\n",
    )
    .unwrap();
}

#[test]
fn device_locked_by_policy_refuses_without_changes() {
    let w = World::new();
    lock_by_policy(&w);
    let folder = trusted_folder(&w, 0);
    assert_refused(
        &w,
        &folder,
        5,
        "Access Denied (0x80070005): the device refused the publisher certificate: carrier lock",
    );
    assert!(log_text(&w.device, "DMInstaller").contains("no managed client is installed"));
    assert!(!w.device.join("var/lib/dm/outbox").exists());
}

#[test]
fn locked_device_with_a_client_queues_a_status_message() {
    let w = World::new();
    lock_by_policy(&w);
    fake_installed_client(&w);
    let folder = trusted_folder(&w, 0);
    // Everything but the logs and the outbox stays as it was.
    let before = tree_hash(&w.device, &["var/log/dm", "run", "var/lib/dm/outbox"]);
    let out = install(&w, &folder);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert_eq!(tree_hash(&w.device, &["var/log/dm", "run", "var/lib/dm/outbox"]), before);
    assert!(!w.device.join("fake-setup-args").exists());
    let entries: Vec<_> =
        std::fs::read_dir(w.device.join("var/lib/dm/outbox")).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1);
    let msg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entries[0].path()).unwrap()).unwrap();
    assert_eq!(msg["code"], "0x80070005");
    assert_eq!(msg["message_id"], 11001);
    assert_eq!(msg["component"], "DMInstaller");
    assert!(msg["text"].as_str().unwrap().starts_with("Access Denied (0x80070005)"), "{msg}");
}

/// Runs the installer in a private mount namespace where the certificate stores are a
/// read-only bind mount: the file system itself refuses, as on a locked device. (Running as
/// root, chmod would not stop anything.)
fn install_with_readonly_stores(w: &World, folder: &Path) -> Output {
    let certs = w.device.join("etc/dm/certs");
    let script = format!(
        "mount --bind {c} {c} && mount -o remount,bind,ro {c} && exec {bin} --source {f} --device-root {d}",
        c = certs.display(),
        bin = bin("dminstaller").display(),
        f = folder.display(),
        d = w.device.display()
    );
    let out = run(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("unshare failed"),
        "cannot make a private mount namespace (the tests need root): {}",
        show(&out)
    );
    out
}

#[test]
fn read_only_certificate_stores_refuse_like_a_locked_device() {
    let w = World::new();
    let folder = trusted_folder(&w, 0);
    let before = tree_hash(&w.device, LOGS);
    let out = install_with_readonly_stores(&w, &folder);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let text = log_text(&w.device, "DMInstaller");
    assert!(text.contains("Access Denied (0x80070005)"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(!w.device.join("fake-setup-args").exists());
    assert_eq!(tree_hash(&w.device, LOGS), before, "{}", tree_listing(&w.device));
}

#[test]
fn aarch64_installer_runs_from_a_memory_card_under_qemu() {
    let Some((runner, installer)) = cross_bin("aarch64-unknown-linux-gnu", "dminstaller") else {
        return;
    };
    let w = World::new();
    // The card's programs for linux-aarch64: the real ARM installer, setup as a script double.
    let bins = w.path("arm-bins");
    std::fs::create_dir_all(&bins).unwrap();
    std::fs::copy(&installer, bins.join("dminstaller")).unwrap();
    for prog in ["dmsvc", "dmcertenroll"] {
        std::fs::copy(cross_bin("aarch64-unknown-linux-gnu", prog).unwrap().1, bins.join(prog))
            .unwrap();
    }
    write_fake_setup(&bins.join("dmclientsetup"), 0);
    let folder = w.folder(
        "DMClient",
        "1.2.0.345",
        &[("linux-aarch64", &bins)],
        &[("DMCommonInstaller.ini", "[Installation]\nClientInstallAction=Install\n")],
        None,
    );
    // Laid out like a memory card: the installer beside the one signed bundle, and the litter a
    // desktop leaves on a card.
    let card = w.path("card");
    std::fs::create_dir_all(card.join(".Trashes")).unwrap();
    let bundle = w.bundle(&folder, &card);
    std::fs::copy(folder.join("dminstaller_linux-aarch64"), card.join("dminstaller_linux-aarch64"))
        .unwrap();
    let card_before = tree_hash(&card, &[]);
    // No --source: the installer finds the bundle beside itself.
    let out = run(
        Command::new(&runner[0])
            .args(&runner[1..])
            .arg(card.join("dminstaller_linux-aarch64"))
            .arg("--device-root")
            .arg(&w.device),
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let thumb = thumbprint_of_pem(&w.pki.join("publisher.pem"));
    assert_eq!(store_files(&w, "spc"), [format!("{thumb}.pem")]);
    // Setup ran from the bytes the installer verified and staged, never from the card.
    let staged = w.device.join("var/lib/dm/staging/deployment");
    let args = std::fs::read_to_string(w.device.join("fake-setup-args")).unwrap();
    assert!(args.contains(&format!("--source {}", staged.display())), "{args}");
    assert!(!staged.exists(), "the staging folder is removed when the installer ends");
    assert_eq!(tree_hash(&card, &[]), card_before, "the card is read, never written");
    let text = log_text(&w.device, "DMInstaller");
    assert!(text.contains(&bundle.display().to_string()), "{text}");
    assert!(log_text(&w.device, "DMInstaller").contains("(linux-aarch64) starting"));
}
