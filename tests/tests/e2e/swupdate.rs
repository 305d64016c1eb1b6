//! A DDI client no one here wrote: SWUpdate's suricatta (Debian `swupdate`) polls `dmmp`,
//! receives an advertisement of a signed `.swu`, downloads and installs it, and its feedback
//! reaches the advertisement's status.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mp::Mp;
use crate::util::*;

/// Builds a `.swu` installing `payload` as `target`, signed (CMS) by the world's publisher.
fn signed_swu(mp: &Mp, payload: &[u8], target: &Path) -> std::path::PathBuf {
    let dir = mp.w.path("swu-build");
    std::fs::create_dir_all(&dir).unwrap();
    let sha: String = ring::digest::digest(&ring::digest::SHA256, payload)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let desc = format!(
        "software =\n{{\n\tversion = \"1.0.0\";\n\tdescription = \"dm end-to-end test image\";\n\thardware-compatibility: [ \"1.0\" ];\n\
         \tfiles: (\n\t\t{{\n\t\t\tfilename = \"payload.txt\";\n\t\t\tpath = \"{}\";\n\t\t\tsha256 = \"{sha}\";\n\t\t}}\n\t);\n}}\n",
        target.display()
    );
    std::fs::write(dir.join("sw-description"), &desc).unwrap();
    run_ok(
        Command::new("openssl")
            .args(["cms", "-sign", "-in"])
            .arg(dir.join("sw-description"))
            .arg("-out")
            .arg(dir.join("sw-description.sig"))
            .arg("-signer")
            .arg(mp.w.pki.join("publisher.pem"))
            .arg("-inkey")
            .arg(mp.w.pki.join("publisher.key"))
            .args(["-outform", "DER", "-nosmimecap", "-binary"]),
    );
    let swu = cpio_crc(&[
        ("sw-description", desc.into_bytes()),
        ("sw-description.sig", std::fs::read(dir.join("sw-description.sig")).unwrap()),
        ("payload.txt", payload.to_vec()),
    ]);
    let path = mp.w.path("firmware-1.0.0.swu");
    std::fs::write(&path, swu).unwrap();
    path
}

/// Runs swupdate in suricatta mode in its own process group (it forks helpers).
fn suricatta(mp: &Mp, cfg: &Path, extra: &str, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let tmp = mp.w.path("swu-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Command::new("swupdate")
        .arg("-f")
        .arg(cfg)
        .args(["-H", "dmtest:1.0", "-k"])
        .arg(mp.w.pki.join("root-ca.pem"))
        .args(["--cert-purpose", "codeSigning", "-u", extra])
        // Its IPC sockets go in TMPDIR: keep them in the test's folder.
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("swupdate is installed by scripts/setup-peers.sh")
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", child.id())]).status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(5) {
            let _ =
                Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn swupdate_suricatta_installs_an_advertised_signed_swu() {
    let mp = Mp::start(|_| {});
    let target = mp.w.path("installed/payload.txt");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let swu = signed_swu(&mp, b"firmware 1.0.0 from dmmp\n", &target);

    mp.admin(&[
        "package",
        "add",
        "--raw",
        swu.to_str().unwrap(),
        "--name",
        "firmware",
        "--package-version",
        "1.0.0",
    ]);
    mp.admin(&[
        "program",
        "add",
        "--package",
        "firmware",
        "--name",
        "flash",
        "--command",
        "swupdate",
    ]);
    mp.admin(&["collection", "add", "--name", "swupdate-devices", "--rule", "explicit"]);
    let token = mp.admin(&["device", "add", "--id", "swu-dev-1"]).trim().to_string();
    mp.admin(&["collection", "members", "swupdate-devices", "--add", "swu-dev-1"]);
    mp.admin(&[
        "advertise",
        "--name",
        "firmware-1",
        "--program",
        "flash",
        "--collection",
        "swupdate-devices",
        "--mandatory",
    ]);

    let cfg = mp.w.path("swupdate.cfg");
    std::fs::write(
        &cfg,
        format!(
            "globals :\n{{\n\tverbose = true;\n\tloglevel = 5;\n}};\nsuricatta :\n{{\n\ttenant = \"DEFAULT\";\n\tid = \"swu-dev-1\";\n\
             \turl = \"{}\";\n\tcafile = \"{}\";\n\ttargettoken = \"{token}\";\n\tpolldelay = 2;\n}};\n",
            mp.url(),
            mp.w.pki.join("root-ca.pem").display()
        ),
    )
    .unwrap();

    // First run: it polls, downloads, verifies the signature, installs, and reports progress.
    let log1 = mp.w.path("suricatta-1.log");
    let mut sw = suricatta(&mp, &cfg, "", &log1);
    let st = mp.wait_status(
        "firmware-1",
        "the installation",
        |st| st["devices"][0]["last_details"].to_string().contains("All Chunks Installed"),
        || std::fs::read_to_string(&log1).unwrap_or_default(),
    );
    stop(&mut sw);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "firmware 1.0.0 from dmmp\n");
    assert_eq!(st["counts"]["running"], 1, "{st}");

    // After the "reboot", SWUpdate confirms the update: the advertisement's status is finished.
    let log2 = mp.w.path("suricatta-2.log");
    let mut sw = suricatta(&mp, &cfg, "-c 2", &log2);
    let st = mp.wait_status(
        "firmware-1",
        "the confirmation",
        |st| st["counts"]["finished"] == 1,
        || std::fs::read_to_string(&log2).unwrap_or_default(),
    );
    stop(&mut sw);
    assert_eq!(st["devices"][0]["device"], "swu-dev-1");
    let history = mp.admin_json(&["device", "show", "swu-dev-1"])["history"].clone();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["execution"] == "closed" && r["finished"] == "success"),
        "{history}"
    );
    let log = mp.log_text();
    assert!(log.contains("device swu-dev-1 retrieved action"), "{log}");
}
