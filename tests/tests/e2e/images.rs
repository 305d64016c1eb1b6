//! System images from a server that accepts only images (`tests/peers/ddi_server.py
//! --images-only`: the chunk named after the file, SHA-1 only, no `dm.*` metadata), installed
//! by the real SWUpdate from Debian: a `.swu` signed with a key the test makes, whose `raw`
//! handler writes a file that stands for the other slot. The agent recognises the image by its
//! first bytes, refuses before the download when SWUpdate is missing or would check no
//! signature, hands the file to SWUpdate and reports its verdict in its words, each failure
//! with its own status code. The same for RAUC bundles made by `rauc bundle` and installed by
//! the real RAUC service (on a private D-Bus, its slots files, its bootloader a script that
//! keeps its state in files). The restart and its confirmation run in the virtual machine
//! (tests/vm/guest-ota.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rauc::{Kill, private_bus};
use crate::thirdparty::{Ddi, TOKEN};
use crate::util::*;

/// A key and self-signed certificate that sign images (SWUpdate's `-k` takes the certificate).
struct Signer {
    cert: PathBuf,
    key: PathBuf,
}

fn signer(w: &World, name: &str) -> Signer {
    let (cert, key) = (w.path(&format!("{name}.pem")), w.path(&format!("{name}.key")));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "30", "-subj", &format!("/CN=dm test {name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    Signer { cert, key }
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `.swu` for hardware `1.0` writing `payload` raw into `slot`, with a preinstall `script`
/// when given, signed by `by`.
fn swu(w: &World, by: &Signer, payload: &[u8], slot: &Path, script: Option<&str>) -> PathBuf {
    let mut desc = format!(
        "software =\n{{\n\tversion = \"2.0.0\";\n\thardware-compatibility: [ \"1.0\" ];\n\timages: (\n\t\t{{\n\
         \t\t\tfilename = \"rootfs.img\";\n\t\t\tdevice = \"{}\";\n\t\t\ttype = \"raw\";\n\t\t\tsha256 = \"{}\";\n\t\t}}\n\t);\n",
        slot.display(),
        sha256_hex(payload)
    );
    if let Some(s) = script {
        desc.push_str(&format!(
            "\tscripts: (\n\t\t{{\n\t\t\tfilename = \"pre.sh\";\n\t\t\ttype = \"shellscript\";\n\t\t\tsha256 = \"{}\";\n\t\t}}\n\t);\n",
            sha256_hex(s.as_bytes())
        ));
    }
    desc.push_str("}\n");
    let d = w.path("swu-build");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("sw-description"), &desc).unwrap();
    run_ok(
        Command::new("openssl")
            .args(["cms", "-sign", "-in"])
            .arg(d.join("sw-description"))
            .arg("-out")
            .arg(d.join("sw-description.sig"))
            .arg("-signer")
            .arg(&by.cert)
            .arg("-inkey")
            .arg(&by.key)
            .args(["-outform", "DER", "-nosmimecap", "-binary"]),
    );
    let mut files = vec![
        ("sw-description", desc.into_bytes()),
        ("sw-description.sig", std::fs::read(d.join("sw-description.sig")).unwrap()),
        ("rootfs.img", payload.to_vec()),
    ];
    if let Some(s) = script {
        files.push(("pre.sh", s.as_bytes().to_vec()));
    }
    let path = w.path("system-2.0.0.swu");
    std::fs::write(&path, cpio_crc(&files)).unwrap();
    path
}

/// A device's agent with `[SystemImages]` settings, polling `ddi`.
fn device(w: &World, ddi: &Ddi, images: &str) {
    let extra = format!("RetryMaxDelay=4\n[SystemImages]\n{images}");
    install_client_polling(w, &ddi.url, "dev-img", TOKEN, &extra);
}

/// Waits for a feedback that `done` accepts; returns every feedback.
fn wait_feedback(w: &World, ddi: &Ddi, what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let fb = ddi.feedback();
        if fb.iter().any(&done) {
            return fb;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no {what}: {fb:#?}\n{}",
            log_text(&w.device, "DMSvc")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn details(f: &Value) -> String {
    f["status"]["details"].to_string()
}

fn payload() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

#[test]
fn a_swupdate_image_from_an_images_only_server_is_installed_and_waits_for_the_restart() {
    let w = World::new();
    let by = signer(&w, "image-signer");
    let slot = w.path("slot-b.img");
    std::fs::write(&slot, b"").unwrap();
    let payload = payload();
    // The running system says what image it is (systemd's os-release fields).
    let os_release = w.device.join("etc/os-release");
    std::fs::create_dir_all(os_release.parent().unwrap()).unwrap();
    std::fs::write(&os_release, "ID=debian\nIMAGE_ID=dmtest\nIMAGE_VERSION=1.0.0\n").unwrap();
    let ddi = Ddi::start_with(&w, &swu(&w, &by, &payload, &slot, None), &["--images-only"]);
    let settings = format!(
        "SWUpdatePublicKey={}\nSWUpdateHardware=dmtest:1.0\nSWUpdateConfig={}\n",
        by.cert.display(),
        w.path("swupdate.cfg").display()
    );
    device(&w, &ddi, &settings);
    let fb = wait_feedback(&w, &ddi, "pending reboot", |f| details(f).contains("pending reboot"));
    assert_eq!(std::fs::read(&slot).unwrap(), payload, "SWUpdate wrote the slot");
    let pending = fb.iter().find(|f| details(f).contains("pending reboot")).unwrap();
    assert_eq!(pending["status"]["execution"], "proceeding", "{pending}");
    assert_eq!(pending["status"]["result"]["progress"], serde_json::json!({"cnt": 4, "of": 5}));
    assert!(details(pending).contains("SWUPDATE successful"), "the engine's words: {pending}");
    let all: String = fb.iter().map(details).collect();
    assert!(all.contains("is a SWUpdate image") || all.contains("SWUpdate image"), "{all}");
    assert!(all.contains("image version 2.0.0"), "{all}");
    // Recognised by its first bytes, then downloaded once.
    assert_eq!(ddi.downloads(), ["bytes=0-511", "full"]);
    // Not confirmed without a restart: the action stays open.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!ddi.feedback().iter().any(|f| f["status"]["execution"] == "closed"));
    let log = log_text(&w.device, "DMSvc");
    assert!(log.contains("swupdate | [INFO ] : SWUPDATE successful"), "{log}");
    let versions = || -> Vec<String> {
        ddi.inventories()
            .iter()
            .filter_map(|i| i["data"]["sw_version"].as_str().map(str::to_string))
            .collect()
    };
    let before = versions();
    assert!(!before.is_empty() && before.iter().all(|v| v == "1.0.0"), "{before:?}");

    // The agent starts again (as after a restart): it sends its inventory, the running
    // system's version read again; and at the start after that, unchanged, again.
    std::fs::write(&os_release, "ID=debian\nIMAGE_ID=dmtest\nIMAGE_VERSION=2.0.0\n").unwrap();
    for start in 1..=2 {
        let sent = versions().len();
        kill_agent(&w.device);
        start_agent(&w.device);
        let waited = Instant::now();
        while versions().len() == sent {
            assert!(waited.elapsed() < Duration::from_secs(30), "no inventory at start {start}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(versions().last().map(String::as_str), Some("2.0.0"));
    }
    // Same boot: the image still waits for the restart.
    assert!(!ddi.feedback().iter().any(|f| f["status"]["execution"] == "closed"));
}

/// Runs one image the engine must refuse; returns the closing feedback and the slot.
fn refused(
    w: &World,
    settings: &str,
    sign_with: &str,
    script: Option<&str>,
) -> (Value, Ddi, Vec<u8>) {
    let by = signer(w, "image-signer");
    let other = (sign_with != "image-signer").then(|| signer(w, sign_with));
    let slot = w.path("slot-b.img");
    std::fs::write(&slot, b"old system").unwrap();
    let signing = other.as_ref().unwrap_or(&by);
    let ddi = Ddi::start_with(w, &swu(w, signing, &payload(), &slot, script), &["--images-only"]);
    let settings = format!(
        "SWUpdatePublicKey={}\nSWUpdateConfig={}\n{settings}",
        by.cert.display(),
        w.path("swupdate.cfg").display()
    );
    device(w, &ddi, &settings);
    let fb = ddi.closed(w);
    let last = fb.last().unwrap().clone();
    assert_eq!(last["status"]["result"]["finished"], "failure", "{fb:#?}");
    (last, ddi, std::fs::read(&slot).unwrap())
}

#[test]
fn an_image_signed_by_another_key_is_rejected_by_swupdate_and_the_slot_kept() {
    let w = World::new();
    let (last, _ddi, slot) = refused(&w, "SWUpdateHardware=dmtest:1.0\n", "stranger", None);
    assert!(details(&last).contains("dm.status=0x8004023B"), "{last}");
    assert!(details(&last).contains("Authentication of all signatures failed"), "{last}");
    assert_eq!(slot, b"old system");
}

#[test]
fn an_image_for_other_hardware_is_rejected_by_swupdate_and_the_slot_kept() {
    let w = World::new();
    let (last, _ddi, slot) = refused(&w, "SWUpdateHardware=dmtest:2.0\n", "image-signer", None);
    assert!(details(&last).contains("dm.status=0x8004023C"), "{last}");
    assert!(details(&last).contains("SW not compatible with hardware"), "{last}");
    assert_eq!(slot, b"old system");
}

#[test]
fn swupdate_crashing_mid_install_is_its_own_failure() {
    let w = World::new();
    // Its preinstall script sends SIGSEGV to SWUpdate's process group.
    let crash = "#!/bin/sh\nif [ \"$1\" = preinst ]; then kill -SEGV -$(cut -d' ' -f5 /proc/$$/stat); sleep 5; fi\n";
    let (last, _ddi, _) = refused(&w, "SWUpdateHardware=dmtest:1.0\n", "image-signer", Some(crash));
    assert!(details(&last).contains("dm.status=0x8004023E"), "{last}");
    assert!(details(&last).contains("signal: 11"), "{last}");
}

#[test]
fn a_device_without_swupdate_or_its_key_refuses_before_downloading() {
    for (settings, code, says) in [
        ("SWUpdateCommand=/nonexistent/swupdate\n", "0x80040239", "/nonexistent/swupdate"),
        ("", "0x8004023A", "without signature checking"),
    ] {
        let w = World::new();
        let by = signer(&w, "image-signer");
        let ddi =
            Ddi::start_with(&w, &swu(&w, &by, b"x", &w.path("slot"), None), &["--images-only"]);
        let cfg = format!("SWUpdateConfig={}\n{settings}", w.path("none.cfg").display());
        device(&w, &ddi, &cfg);
        let fb = ddi.closed(&w);
        let last = fb.last().unwrap();
        assert!(details(last).contains(&format!("dm.status={code}")), "{last}");
        assert!(details(last).contains(says), "{last}");
        assert_eq!(ddi.downloads(), ["bytes=0-511"], "only its first bytes were fetched");
    }
}

#[test]
fn the_images_only_server_refuses_anything_else() {
    let w = World::new();
    let junk = w.path("tool.dmpkg");
    std::fs::write(&junk, b"not an image").unwrap();
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/peers/ddi_server.py"))
        .args([
            "--images-only",
            "--cert",
            "c",
            "--key",
            "k",
            "--token",
            "t",
            "--log",
            "l",
            "--file",
        ])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only images are accepted"));
}

/// The real RAUC service for one test: on a private D-Bus, two raw slots that are files, a
/// custom bootloader backend keeping its state in files, the booted slot `A`. `wrapper` runs
/// `rauc` against that bus (the agent's `RaucCommand`).
struct Rauc {
    _children: Kill,
    wrapper: PathBuf,
    log: PathBuf,
}

const BOOTLOADER: &str = "#!/bin/sh\n# RAUC's custom bootloader backend: its state in files beside it.\n\
    d=$(dirname \"$0\")/boot\nmkdir -p \"$d\"\ncase \"$1\" in\n\
    get-primary) cat \"$d/primary\" 2>/dev/null || echo A ;;\n\
    set-primary) echo \"$2\" > \"$d/primary\"; echo good > \"$d/state.$2\" ;;\n\
    get-state) cat \"$d/state.$2\" 2>/dev/null || echo good ;;\n\
    set-state) echo \"$3\" > \"$d/state.$2\" ;;\n\
    *) exit 1 ;;\nesac\n";

impl Rauc {
    fn start(w: &World, keyring: &Path) -> Rauc {
        use std::os::unix::fs::PermissionsExt;
        let dir = w.path("rauc");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        for slot in ["slot-a.img", "slot-b.img"] {
            std::fs::write(dir.join(slot), b"old system").unwrap();
        }
        let backend = dir.join("bootloader.sh");
        std::fs::write(&backend, BOOTLOADER).unwrap();
        std::fs::set_permissions(&backend, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("system.conf");
        std::fs::write(
            &conf,
            format!(
                "[system]\ncompatible=dm-test\nbootloader=custom\ndata-directory={d}/data\n\
                 [handlers]\nbootloader-custom-backend={b}\n[keyring]\npath={k}\n\
                 [slot.rootfs.0]\ndevice={d}/slot-a.img\ntype=raw\nbootname=A\n\
                 [slot.rootfs.1]\ndevice={d}/slot-b.img\ntype=raw\nbootname=B\n",
                d = dir.display(),
                b = backend.display(),
                k = keyring.display()
            ),
        )
        .unwrap();
        let (bus, address) = private_bus();
        let log = dir.join("service.log");
        let service = Command::new("rauc")
            .arg(format!("--conf={}", conf.display()))
            .arg(format!("--mount={}", dir.join("mnt").display()))
            .args(["--override-boot-slot=A", "service"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("service.err")).unwrap())
            .spawn()
            .expect("rauc is installed by scripts/setup-peers.sh");
        let wrapper = dir.join("rauc.sh");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nDBUS_SYSTEM_BUS_ADDRESS='{address}' exec rauc \"$@\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let start = Instant::now();
        while !Command::new(&wrapper).arg("status").output().unwrap().status.success() {
            assert!(start.elapsed() < Duration::from_secs(20), "the RAUC service did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Rauc { _children: Kill(vec![bus, service]), wrapper, log: dir }
    }
}

/// A RAUC bundle (plain: this machine has no device mapper for verity) of `payload` for
/// `compatible`, signed by `by`.
fn rauc_bundle(w: &World, by: &Signer, compatible: &str, payload: &[u8]) -> PathBuf {
    let content = w.path("bundle-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("rootfs.img"), payload).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        format!(
            "[update]\ncompatible={compatible}\nversion=2.0.0\n[bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.img\n"
        ),
    )
    .unwrap();
    let out = w.path("system-2.0.0.raucb");
    run_ok(
        Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", by.cert.display()))
            .arg(format!("--key={}", by.key.display()))
            .arg(&content)
            .arg(&out),
    );
    out
}

/// Installs a bundle for `compatible` signed by `sign_with` through the agent and RAUC;
/// returns the feedback that ends the test's wait and the service's folder.
fn rauc_install(w: &World, compatible: &str, stranger: bool) -> (Vec<Value>, Rauc) {
    let by = signer(w, "bundle-signer");
    let other = stranger.then(|| signer(w, "stranger"));
    let rauc = Rauc::start(w, &by.cert);
    let bundle = rauc_bundle(w, other.as_ref().unwrap_or(&by), compatible, &payload());
    let ddi = Ddi::start_with(w, &bundle, &["--images-only"]);
    device(w, &ddi, &format!("RaucCommand={}\n", rauc.wrapper.display()));
    let fb = wait_feedback(w, &ddi, "a pending reboot or a failure", |f| {
        details(f).contains("pending reboot") || f["status"]["execution"] == "closed"
    });
    assert_eq!(ddi.downloads(), ["bytes=0-511", "full"]);
    (fb, rauc)
}

#[test]
fn a_rauc_bundle_is_installed_by_rauc_into_the_other_slot_and_waits_for_the_restart() {
    let w = World::new();
    let (fb, rauc) = rauc_install(&w, "dm-test", false);
    let last = fb.last().unwrap();
    assert!(details(last).contains("into slot rootfs.1; pending reboot"), "{fb:#?}");
    assert!(details(last).contains("Installing done."), "RAUC's words: {last}");
    let slot = std::fs::read(rauc.log.join("slot-b.img")).unwrap();
    assert_eq!(slot, payload(), "RAUC wrote slot B");
    assert_eq!(std::fs::read(rauc.log.join("slot-a.img")).unwrap(), b"old system");
    assert_eq!(std::fs::read_to_string(rauc.log.join("boot/primary")).unwrap().trim(), "B");
}

#[test]
fn rauc_rejects_a_bundle_of_another_signer_or_for_other_hardware() {
    for (compatible, stranger, code, says) in [
        ("dm-test", true, "0x8004023B", "signature verification failed"),
        ("other-board", false, "0x8004023C", "Compatible mismatch"),
    ] {
        let w = World::new();
        let (fb, rauc) = rauc_install(&w, compatible, stranger);
        let last = fb.last().unwrap();
        assert_eq!(last["status"]["result"]["finished"], "failure", "{fb:#?}");
        assert!(details(last).contains(&format!("dm.status={code}")), "{last}");
        assert!(details(last).contains(says), "{last}");
        assert_eq!(std::fs::read(rauc.log.join("slot-b.img")).unwrap(), b"old system");
    }
}
