//! The trust chain end to end: what runs on a device is exactly what a publisher signed. Each
//! test plays attacks from Uptane's list (mix-and-match, rollback, endless data, a compromised
//! server, a swapped memory card, a revoked or disallowed publisher, hostile archives) against
//! the real programs, and checks the distinct status code the device reports and that nothing
//! the attacker chose ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::Fleet;
use crate::hostile::{self, Hostile, Phase};
use crate::util::*;

const SOFTWARE: &str = "software-distribution";

/// A program that leaves one mark per action: `ran-<action id>` in the device root.
const MARK: &[u8] = b"#!/bin/sh\ntouch \"$DM_DEVICE_ROOT/ran-$DM_ACTION_ID\"\n";

/// The files of a flat signed folder, by name.
pub fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Package `tools` at `version`, signed by the world's publisher, its program `run` = [`MARK`].
pub fn tools(w: &World, version: &str) -> PathBuf {
    let src = w.path(&format!("tools-{version}-src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("run.sh"), MARK).unwrap();
    let out = w.path(&format!("tools-{version}"));
    sign_package_as(w, &src, &out, ("tools", version), "run.sh", None);
    out
}

/// `pkg` signed the way dmpack signed packages before programs were signed: manifest format
/// 1, no programs, a valid signature by the same publisher.
fn first_format(w: &World, pkg: &Path, out: &Path) -> PathBuf {
    run_ok(Command::new("cp").arg("-a").arg(pkg).arg(out));
    let path = out.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["format"] = "dm-manifest/1".into();
    m.as_object_mut().unwrap().remove("programs");
    let bytes = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let key = w.pki.join("publisher.key");
    let sig = dm_shared::pki::sign(&std::fs::read(&key).unwrap(), &bytes, &key).unwrap();
    std::fs::write(out.join("manifest.sig"), sig).unwrap();
    out.to_path_buf()
}

fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    if kind == tar::EntryType::Symlink {
        h.set_link_name("/bin/sh").unwrap();
    }
    b.append_data(&mut h, name, data).unwrap();
}

/// A bundle made by hand: `pkg`'s genuine signature entries, then `rest` (name, kind, bytes).
fn hostile_bundle(pkg: &Path, rest: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for name in ["manifest.json", "manifest.sig", "publisher.pem"] {
        entry(&mut b, name, tar::EntryType::Regular, &std::fs::read(pkg.join(name)).unwrap());
    }
    for (name, kind, data) in rest {
        entry(&mut b, name, *kind, data);
    }
    b.into_inner().unwrap()
}

/// The action's closed feedback, required to be a failure carrying `hresult`.
fn refused(h: &Hostile, action: u32, hresult: &str) -> Value {
    let fb = hostile::closed_feedback(h, action);
    assert_eq!(fb["status"]["result"]["finished"], "failure", "action {action}: {fb}");
    assert!(fb.to_string().contains(hresult), "action {action} lacks {hresult}: {fb}");
    fb
}

/// The `ran-*` marks in the device root: which actions ran a program.
fn marks(device: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(device)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ran-") || n == "evil")
        .collect();
    v.sort();
    v
}

#[test]
fn a_compromised_server_cannot_change_what_runs() {
    let w = World::new();
    let h = hostile::start(&w);
    hostile::install_client(&w, &h);
    hostile::wait_log(&w.device, "inventory sent", 0);
    let new = tools(&w, "2.0.0.0");
    let old = tools(&w, "1.0.0.0");
    let legacy = first_format(&w, &new, &w.path("tools-first-format"));
    let (files, old_files) = (files_of(&new), files_of(&old));
    let honest: &[(&str, &str)] = &[("dm.program", "run"), ("dm.command", r#"["run.sh"]"#)];
    let tools2 = ("tools", "2.0.0.0");
    let as_bundle = |bytes: Vec<u8>| vec![("tools-2.0.0.0.dmpkg".to_string(), bytes)];
    let genuine = std::fs::read(w.bundle(&new, &w.path("bundle"))).unwrap();
    let script = std::fs::read(new.join("run.sh")).unwrap();
    use tar::EntryType::{Fifo, Regular, Symlink};

    // The server states another command for the signed program.
    let evil = r#"["/bin/sh","-c","touch \"$DM_DEVICE_ROOT/evil\""]"#;
    h.offer(11, SOFTWARE, tools2, &files, &[("dm.program", "run"), ("dm.command", evil)]);
    // It names a program the publisher never signed.
    h.offer(12, SOFTWARE, tools2, &files, &[("dm.program", "shell")]);
    // Mix and match: a genuine package under another package's name.
    h.offer(13, SOFTWARE, ("tools-extra", "2.0.0.0"), &files, honest);
    // A package signed before programs were signed.
    h.offer(14, SOFTWARE, tools2, &files_of(&legacy), honest);
    // Bundles that attack their unpacker: a link, a FIFO, a second copy, a cut archive.
    h.offer(
        15,
        SOFTWARE,
        tools2,
        &as_bundle(hostile_bundle(&new, &[("run.sh", Symlink, b"")])),
        honest,
    );
    h.offer(
        16,
        SOFTWARE,
        tools2,
        &as_bundle(hostile_bundle(&new, &[("run.sh", Fifo, b"")])),
        honest,
    );
    let twice = hostile_bundle(&new, &[("run.sh", Regular, &script), ("run.sh", Regular, &script)]);
    h.offer(17, SOFTWARE, tools2, &as_bundle(twice), honest);
    h.offer(18, SOFTWARE, tools2, &as_bundle(genuine[..genuine.len() / 2].to_vec()), honest);
    // Endless data: the artifact keeps coming past its stated size.
    h.offer(19, SOFTWARE, tools2, &files, honest);
    let mut endless = script.clone();
    endless.extend(std::iter::repeat_n(b'#', 8 << 20));
    h.files.lock().unwrap().insert("/art/offer/19/run.sh".into(), endless);
    // The honest advertisement runs; the genuine bundle too.
    h.offer(20, SOFTWARE, tools2, &files, honest);
    h.offer(
        21,
        SOFTWARE,
        tools2,
        &as_bundle(genuine.clone()),
        &[("dm.program", "run"), ("dm.rerun", "always")],
    );
    // Rollback: the older version is refused, unless the advertisement allows it.
    h.offer(22, SOFTWARE, ("tools", "1.0.0.0"), &old_files, honest);
    let downgrade = [("dm.program", "run"), ("dm.allow-downgrade", "true")];
    h.offer(23, SOFTWARE, ("tools", "1.0.0.0"), &old_files, &downgrade);
    h.set(Phase::Deploy(11));

    let fb = refused(&h, 11, "0x8004020D");
    assert_eq!(fb["status"]["code"], 10036);
    assert!(fb.to_string().contains("is signed to run run.sh"), "{fb}");
    let fb = refused(&h, 12, "0x8004020E");
    assert!(fb.to_string().contains("signs run"), "{fb}");
    let fb = refused(&h, 13, "0x8004020D");
    assert!(fb.to_string().contains("tools-extra"), "{fb}");
    let fb = refused(&h, 14, "0x8004020F");
    assert_eq!(fb["status"]["code"], 10035);
    for (action, code) in [(15, "0x80040211"), (16, "0x80040212"), (17, "0x80040213")] {
        let fb = refused(&h, action, code);
        assert_eq!(fb["status"]["code"], 10034, "{fb}");
    }
    refused(&h, 18, "0x80040216");
    // Read no further than the stated size, and said so.
    let fb = refused(&h, 19, "0x80091007");
    assert!(fb.to_string().contains("size is more than 52 bytes"), "{fb}");
    for action in [20, 21] {
        let fb = hostile::closed_feedback(&h, action);
        assert_eq!(fb["status"]["result"]["finished"], "success", "{fb}");
    }
    let fb = refused(&h, 22, "0x80040210");
    assert_eq!(fb["status"]["code"], 10073);
    let fb = hostile::closed_feedback(&h, 23);
    assert_eq!(fb["status"]["result"]["finished"], "success", "{fb}");

    assert_eq!(marks(&w.device), ["ran-20", "ran-21", "ran-23"], "only the honest actions ran");
    let log = log_text(&w.device, "DMSvc");
    assert!(log.contains("allows the downgrade"), "{log}");
    // Nothing a hostile bundle held was left behind as a link or a FIFO.
    let cache = w.device.join("var/lib/dm");
    let odd = walk(&cache).into_iter().filter(|p| {
        let t = std::fs::symlink_metadata(p).unwrap().file_type();
        !t.is_file() && !t.is_dir()
    });
    assert_eq!(odd.collect::<Vec<_>>(), Vec::<PathBuf>::new());
}

/// The management point chooses neither the package name nor the version a program is told:
/// a first offer of an action under another name (not to be downloaded yet), then the honest
/// one, runs the program with the signed manifest's.
#[test]
fn the_server_cannot_choose_the_package_name_a_program_is_told() {
    let w = World::new();
    let h = hostile::start(&w);
    hostile::install_client(&w, &h);
    hostile::wait_log(&w.device, "inventory sent", 0);
    let src = w.path("told-src");
    std::fs::create_dir_all(&src).unwrap();
    let script = b"#!/bin/sh\nprintf '%s %s' \"$DM_PACKAGE_NAME\" \"$DM_PACKAGE_VERSION\" > \"$DM_DEVICE_ROOT/told\"\n";
    std::fs::write(src.join("run.sh"), script).unwrap();
    let pkg = w.path("told");
    sign_package_as(&w, &src, &pkg, ("tools", "2.0.0.0"), "run.sh", None);
    let honest: &[(&str, &str)] = &[("dm.program", "run")];
    h.offer(40, SOFTWARE, ("evil", "9.9.9.9"), &files_of(&pkg), honest);
    h.offers.lock().unwrap().get_mut(&40).unwrap()["deployment"]["download"] = "skip".into();
    h.set(Phase::Deploy(40));
    let record = w.device.join("var/lib/dm/actions/40.json");
    let start = Instant::now();
    while !std::fs::read_to_string(&record).is_ok_and(|r| r.contains("evil")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the first offer was not recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    h.offer(40, SOFTWARE, ("tools", "2.0.0.0"), &files_of(&pkg), honest);
    let fb = hostile::closed_feedback(&h, 40);
    assert_eq!(fb["status"]["result"]["finished"], "success", "{fb}");
    assert_eq!(std::fs::read_to_string(w.device.join("told")).unwrap(), "tools 2.0.0.0");
}

/// Every path under `root`.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A deployment folder whose setup is a script double that records its call.
fn client_folder(w: &World, name: &str, version: &str) -> PathBuf {
    let bins = w.bin_dir(&format!("{name}-bins"), Some(0));
    w.folder(
        name,
        version,
        &[(&host_platform(), &bins)],
        &[("DMCommonInstaller.ini", "[Installation]\nClientInstallAction=Install\n")],
        None,
    )
}

fn installer(w: &World, folder: &Path) -> Command {
    let mut cmd = Command::new(bin("dminstaller"));
    cmd.arg("--source").arg(folder).arg("--device-root").arg(&w.device);
    cmd
}

fn spc_store(w: &World) -> usize {
    std::fs::read_dir(w.device.join("etc/dm/certs/spc")).map_or(0, |rd| rd.count())
}

#[test]
fn a_revoked_or_disallowed_publisher_is_refused_at_install() {
    // (what the device holds, the installer's exit code, the status code it names)
    let cases: [(&str, i32, &str); 4] = [
        ("a list revoking nothing", 0, ""),
        ("a list revoking the publisher", 52, "0x800B010C"),
        ("a list forged by another CA of the same name", 54, "0x80092012"),
        ("the publisher in the disallowed store", 53, "0x800B0111"),
    ];
    for (what, code, status) in cases {
        let w = World::new();
        let folder = client_folder(&w, "folder", "1.2.0.345");
        let crl = w.device.join("etc/dm/crl/root.pem");
        std::fs::create_dir_all(crl.parent().unwrap()).unwrap();
        let crl_of = |ca: &Path, revoke: &[&Path]| {
            let mut cmd = Command::new(bin("dmpack"));
            cmd.arg("crl").arg("--ca-dir").arg(ca).arg("--out").arg(&crl);
            for r in revoke {
                cmd.arg("--revoke").arg(r);
            }
            run_ok(&mut cmd);
        };
        let publisher = w.pki.join("publisher.pem");
        match code {
            0 => crl_of(&w.pki, &[]),
            52 => crl_of(&w.pki, &[&publisher]),
            54 => crl_of(&World::new().pki, &[&publisher]),
            _ => {
                let store = w.device.join("etc/dm/certs/disallowed");
                std::fs::create_dir_all(&store).unwrap();
                std::fs::copy(&publisher, store.join("publisher.pem")).unwrap();
            }
        }
        let before = tree_hash(&w.device, &["var/log/dm", "run"]);
        let out = run(&mut installer(&w, &folder), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(code), "{what}: {}", show(&out));
        if code == 0 {
            assert_eq!(spc_store(&w), 1, "{what}");
            continue;
        }
        let log = log_text(&w.device, "DMInstaller");
        assert!(log.contains(status), "{what}: {log}");
        assert!(log.contains("dm Demo Publisher"), "{what} names the certificate: {log}");
        assert_eq!(spc_store(&w), 0, "{what}: the publisher was trusted");
        assert!(!w.device.join("fake-setup-args").exists(), "{what}: setup ran");
        assert_eq!(tree_hash(&w.device, &["var/log/dm", "run"]), before, "{what}");
    }
}

/// How the card changes while the installer waits at a failpoint.
#[derive(Debug, Clone, Copy)]
enum Swap {
    /// Setup and the settings are replaced by the attacker's (not signed).
    Tampered,
    /// The whole folder is replaced by another validly signed one.
    Resigned,
}

/// In every byte an attacker swaps onto the card.
const SWAPPED: &str = "SWAPPED-BYTES";

fn executable(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn swap(w: &World, card: &Path, how: Swap) {
    let setup = format!("dmclientsetup_{}", host_platform());
    let evil = format!("#!/bin/sh\n# {SWAPPED}\ntouch '{}'\n", w.device.join("evil").display());
    let settings = format!(
        "[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint=https://{SWAPPED}.example\n"
    );
    match how {
        Swap::Tampered => {
            executable(&card.join(&setup), &evil);
            std::fs::write(card.join("DMCommonInstaller.ini"), settings).unwrap();
        }
        Swap::Resigned => {
            let bins = w.path("other-bins");
            std::fs::create_dir_all(&bins).unwrap();
            for p in ["dminstaller", "dmsvc", "dmcertenroll"] {
                std::fs::copy(card.join(format!("{p}_{}", host_platform())), bins.join(p)).unwrap();
            }
            executable(&bins.join("dmclientsetup"), &evil);
            let signed = w.folder(
                "other-signed",
                "9.9.9.9",
                &[(&host_platform(), &bins)],
                &[("DMCommonInstaller.ini", &settings)],
                None,
            );
            std::fs::remove_dir_all(card).unwrap();
            run_ok(Command::new("cp").arg("-a").arg(&signed).arg(card));
        }
    }
}

/// Files under `root` holding `needle`.
fn holding(root: &Path, needle: &str) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|p| {
            p.is_file()
                && std::fs::read(p)
                    .is_ok_and(|b| b.windows(needle.len()).any(|x| x == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn a_card_swapped_during_install_runs_nothing_it_did_not_verify() {
    // Each step of the installer, and whether it comes before the staging copy.
    let steps = [
        ("installer-verified", true),
        ("installer-policy-checked", true),
        ("installer-staged", false),
        ("installer-trusted", false),
    ];
    for (point, before_staging) in steps {
        for how in [Swap::Tampered, Swap::Resigned] {
            // (the exit code, what the log says)
            let (code, says) = match (before_staging, how) {
                (true, Swap::Tampered) => (36, "0x80091007"),
                (true, Swap::Resigned) => (37, "changed while it was copied"),
                (false, _) => (0, "setup finished successfully"),
            };
            let w = World::new();
            let card = client_folder(&w, "card", "1.2.0.345");
            let pause = w.path("pause");
            std::fs::create_dir_all(&pause).unwrap();
            let child = installer(&w, &card)
                .env("DM_FAILPOINTS", format!("{point}=pause"))
                .env("DM_FAILPOINT_PAUSE_DIR", &pause)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while !pause.join(format!("{point}.paused")).exists() {
                assert!(start.elapsed() < Duration::from_secs(60), "{point}: never paused");
                std::thread::sleep(Duration::from_millis(20));
            }
            swap(&w, &card, how);
            std::fs::write(pause.join(format!("{point}.go")), b"").unwrap();
            let out = child.wait_with_output().unwrap();
            let case = format!("{point} {how:?}");
            assert_eq!(out.status.code(), Some(code), "{case}: {}", show(&out));
            let log = log_text(&w.device, "DMInstaller");
            assert!(log.contains(says), "{case}: {log}");
            assert!(!w.device.join("evil").exists(), "{case}: the swapped setup ran");
            // Not a byte of the swap reached the device, its logs included.
            assert_eq!(holding(&w.device, SWAPPED), Vec::<PathBuf>::new(), "{case}");
            if code == 0 {
                let args = std::fs::read_to_string(w.device.join("fake-setup-args")).unwrap();
                assert!(args.contains("var/lib/dm/staging/deployment"), "{case}: {args}");
                assert!(w.device.join("fake-setup-settings").is_file(), "{case}: no settings");
            } else {
                assert_eq!(spc_store(&w), 0, "{case}: the publisher was trusted");
                assert!(!w.device.join("fake-setup-args").exists(), "{case}: setup ran");
            }
        }
    }
}

#[test]
fn rerun_policies_and_versions_never_go_backwards() {
    let f = Fleet::new("");
    let w = &f.mp.w;
    let log = w.device.join("runs");
    let script = format!("#!/bin/sh\necho \"$DM_ACTION_ID\" >> '{}'\n", log.display());
    let runs = || std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    let v2 = f.package("tools", &[("run.sh", script.as_bytes())], None);
    let roots = w.pki.join("root-ca.pem");
    let first = f.advertise("tools", &v2, &roots, &["--program", "run"], &["--mandatory"], None);
    f.wait_status(&first, "the first run", |s| s["counts"]["finished"] == 1);
    assert_eq!(runs(), 1);
    // Each later advertisement of the same program, with its rerun policy.
    let mut n = 0;
    let mut advertise = |rerun: Option<&str>| {
        n += 1;
        let name = format!("again-{n}");
        let mut args = vec!["advertise", "--name", &name, "--program", "tools-run", "--collection"];
        args.extend_from_slice(&["everyone", "--mandatory"]);
        if let Some(r) = rerun {
            args.extend_from_slice(&["--rerun", r]);
        }
        f.mp.admin(&args);
        f.wait_status(&name, "the advertisement", |s| s["counts"]["finished"] == 1)
    };
    for (rerun, ran, total) in [
        (None, false, 1),
        (Some("if-failed"), false, 1),
        (Some("always"), true, 2),
        (Some("if-succeeded"), true, 3),
    ] {
        let st = advertise(rerun);
        assert_eq!(runs(), total, "rerun {rerun:?}: {st}");
        let code = st["devices"][0]["last_code"].as_i64();
        assert_eq!(code == Some(10072), !ran, "rerun {rerun:?}: {st}");
    }

    // An older version, signed by the same publisher: refused, then allowed explicitly.
    let src = w.path("tools-old-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("run.sh"), &script).unwrap();
    let v0 = w.path("tools-old");
    sign_package_as(w, &src, &v0, ("tools", "0.9.0.0"), "run.sh", None);
    let (v0, roots) = (v0.to_str().unwrap(), roots.to_str().unwrap());
    f.mp.admin(&["package", "add", "--source", v0, "--roots", roots]);
    f.mp.admin(&[
        "program",
        "add",
        "--package",
        "tools@0.9.0.0",
        "--name",
        "old-run",
        "--program",
        "run",
    ]);
    for (name, extra, code) in
        [("old", None, Some(10073)), ("old-allowed", Some("--allow-downgrade"), Some(10008))]
    {
        let mut args =
            vec!["advertise", "--name", name, "--program", "old-run", "--collection", "everyone"];
        args.push("--mandatory");
        args.extend(extra);
        f.mp.admin(&args);
        let st = f.wait_status(name, "the older version", |s| {
            s["counts"]["finished"] == 1 || s["counts"]["error"] == 1
        });
        assert_eq!(st["devices"][0]["last_code"].as_i64(), code, "{name}: {st}");
    }
    assert_eq!(runs(), 4, "the refused downgrade ran");
    assert!(f.history().iter().any(|r| r["hresult"] == "0x80040210"), "downgrade code");

    // This device had only the root store: its roots were copied into tls-root once.
    let tls = std::fs::read_dir(w.device.join("etc/dm/certs/tls-root")).unwrap().count();
    assert_eq!(tls, 1);
    let logs = format!("{}{}", log_text(&w.device, "DMSvc"), log_text(&w.device, "DMClientSetup"));
    assert!(logs.contains("the tls-root store did not exist"), "{logs}");
}

#[test]
fn a_publisher_revoked_later_is_refused_and_reported() {
    let f = Fleet::new("");
    let w = &f.mp.w;
    let roots = w.pki.join("root-ca.pem");
    let pkg = f.package("tools", &[("run.sh", MARK)], None);
    let first = f.advertise("tools", &pkg, &roots, &["--program", "run"], &["--mandatory"], None);
    f.wait_status(&first, "the first run", |s| s["counts"]["finished"] == 1);

    // The CA revokes the publisher; the administrator gives dmmp its list.
    let crl = w.path("root.crl.pem");
    run_ok(
        Command::new(bin("dmpack"))
            .args(["crl", "--ca-dir"])
            .arg(&w.pki)
            .arg("--revoke")
            .arg(w.pki.join("publisher.pem"))
            .args(["--number", "2", "--out"])
            .arg(&crl),
    );
    f.mp.admin(&["crl", "add", crl.to_str().unwrap()]);
    let start = Instant::now();
    while !f.history().iter().any(|r| r["message_id"] == 10074) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no revocation report:\n{}",
            f.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = f.history().into_iter().find(|r| r["message_id"] == 10074).unwrap();
    assert_eq!(report["hresult"], "0x800B010C", "{report}");
    assert!(report.to_string().contains("tools 1.0.0.0"), "{report}");
    let start = Instant::now();
    loop {
        let d = f.mp.admin_json(&["device", "show", "dev-1"]);
        if d["device"]["attributes"]["revoked_packages"] == "tools 1.0.0.0" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "inventory: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(w.device.join("etc/dm/crl").read_dir().unwrap().count() == 1);

    // The same package, advertised again, is refused: the device checks every time.
    let marks_before = marks(&w.device);
    let args = ["advertise", "--name", "again", "--program", "tools-run", "--collection"];
    f.mp.admin(&[&args[..], &["everyone", "--mandatory", "--rerun", "always"]].concat());
    let st = f.wait_status("again", "the refusal", |s| s["counts"]["error"] == 1);
    assert_eq!(st["devices"][0]["last_code"], 10035, "{st}");
    assert_eq!(marks(&w.device), marks_before, "a revoked publisher's program ran");

    // A management point that sends a forged, far newer list in the CA's name (another key,
    // the same name, revoking nothing) un-revokes nothing: the device refuses the list and
    // keeps the real one.
    let forger = World::new();
    let forged = w.path("forged.crl.pem");
    run_ok(
        Command::new(bin("dmpack"))
            .args(["crl", "--ca-dir"])
            .arg(&forger.pki)
            .args(["--number", "1000", "--days", "3650", "--out"])
            .arg(&forged),
    );
    let kept: Vec<_> = w.device.join("etc/dm/crl").read_dir().unwrap().flatten().collect();
    f.mp.admin(&["crl", "add", forged.to_str().unwrap()]);
    let start = Instant::now();
    while !f.agent_log().contains("is not signed by a CA the device trusts") {
        assert!(start.elapsed() < Duration::from_secs(60), "forged list taken:\n{}", f.agent_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let now: Vec<_> = w.device.join("etc/dm/crl").read_dir().unwrap().flatten().collect();
    assert_eq!(
        now.iter().map(|e| e.file_name()).collect::<Vec<_>>(),
        kept.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
    let args = ["advertise", "--name", "after-forgery", "--program", "tools-run", "--collection"];
    f.mp.admin(&[&args[..], &["everyone", "--mandatory", "--rerun", "always"]].concat());
    let st = f.wait_status("after-forgery", "the refusal", |s| s["counts"]["error"] == 1);
    assert_eq!(st["devices"][0]["last_code"], 10035, "{st}");
    assert_eq!(marks(&w.device), marks_before, "the forged list un-revoked the publisher");
}

#[test]
fn a_tls_root_never_vouches_for_code() {
    // A public web CA the device trusts for its management point's TLS, with a publisher of
    // its own: the device reaches the server, and refuses the publisher's code.
    let web = World::new();
    let f = Fleet::new_with("", |mp| {
        let store = mp.w.device.join("etc/dm/certs/tls-root");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::copy(mp.w.pki.join("root-ca.pem"), store.join("dm-root.pem")).unwrap();
        std::fs::copy(web.pki.join("root-ca.pem"), store.join("web-ca.pem")).unwrap();
        let spc = mp.w.device.join("etc/dm/certs/spc");
        std::fs::create_dir_all(&spc).unwrap();
        std::fs::copy(web.pki.join("publisher.pem"), spc.join("web-publisher.pem")).unwrap();
    });
    let pkg = f.package(
        "web",
        &[("run.sh", MARK)],
        Some((&web.pki.join("publisher.pem"), &web.pki.join("publisher.key"))),
    );
    let ad = f.advertise(
        "web",
        &pkg,
        &web.pki.join("root-ca.pem"),
        &["--program", "run"],
        &["--mandatory"],
        None,
    );
    let st = f.wait_status(&ad, "the refusal", |s| s["counts"]["error"] == 1);
    assert_eq!(st["devices"][0]["last_code"], 10035, "{st}");
    assert!(f.history().iter().any(|r| r["hresult"] == "0x800B0109"), "untrusted root code");
    assert_eq!(marks(f.device()), Vec::<String>::new());
    assert!(!f.agent_log().contains("the tls-root store did not exist"));
}
