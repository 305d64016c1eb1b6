//! The tethered-desktop path end to end (docs/tether.md): a real OpenSSH server on loopback is
//! the device (its root a temp folder), the real `dmtether` with the system OpenSSH client is
//! the desktop, and a real `dmmp` hears about it from the desktop's agent.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mp::Mp;
use crate::util::*;

/// An OpenSSH server on a loopback port, playing a tethered device.
struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    /// A server with its own host key, letting in whoever holds a key in `authorized_keys`.
    fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = Sshd { dir: dir.to_path_buf(), port, child: None };
        s.new_host_key();
        std::fs::write(dir.join("authorized_keys"), "").unwrap();
        // The sessions' shell reads $HOME/.bashrc: an empty home keeps the test machine's
        // own profile (slow tool managers) out of the device.
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nLogLevel VERBOSE\n\
             SetEnv HOME={d}/home\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        s.resume();
        s
    }

    /// Makes a new host key (the device was re-imaged, or another machine took its address).
    fn new_host_key(&mut self) {
        let key = self.dir.join("host_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    }

    fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.join("host_key.pub")).unwrap().trim().to_string()
    }

    fn authorize(&self, public_key: &str) {
        std::fs::write(self.dir.join("authorized_keys"), format!("{public_key}\n")).unwrap();
    }

    /// Starts the server (again), on the same port.
    fn resume(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd (scripts/setup-peers.sh installs openssh-server)");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and every session it runs: the device goes away.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_tree(c.id());
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills `pid` and all its descendants (sshd's sessions, and what they started).
fn kill_tree(pid: u32) {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut doomed = vec![pid];
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i];
        doomed.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    for p in doomed {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
}

/// A desktop root (the world's device), a tethered device root, and the server in between.
struct Tether {
    mp: Mp,
    sshd: Sshd,
    /// The tethered device's root, on the "device".
    device: PathBuf,
}

const DEVICE_TOKEN: &str = "tok-tethered-7";
const DESKTOP_TOKEN: &str = "tok-desktop-1";

impl Tether {
    fn new() -> Tether {
        let mp = Mp::start(|_| {});
        let sshd = Sshd::start(&mp.w.path("sshd"));
        let device = mp.w.path("tethered");
        std::fs::create_dir_all(device.join("var/log")).unwrap();
        let store = device.join("etc/dm/certs/root");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::copy(mp.w.pki.join("root-ca.pem"), store.join("root-ca.pem")).unwrap();
        Tether { mp, sshd, device }
    }

    fn desktop(&self) -> &Path {
        &self.mp.w.device
    }

    fn url(&self) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.sshd.port, self.device.display())
    }

    /// A client deployment for the tethered device, polling the test's management point.
    fn client_folder(&self, name: &str, version: &str) -> PathBuf {
        let bins = self.mp.w.path("bins");
        if !bins.exists() {
            self.mp.w.bin_dir("bins", None);
        }
        let ini = format!(
            "[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint={}\nControllerId=dev-7\n\
             [Communication]\nTargetToken={DEVICE_TOKEN}\nPollInterval=10\nRetryMaxDelay=4\nMinPollInterval=1\n",
            self.mp.url()
        );
        self.mp.w.folder(
            name,
            version,
            &[(&host_platform(), &bins)],
            &[("DMCommonInstaller.ini", &ini)],
            None,
        )
    }

    /// A desktop root that trusts the demo publisher, as an installed desktop client does,
    /// with `[Tether]` pointing at the device.
    fn bare_desktop(&self) {
        let spc = self.desktop().join("etc/dm/certs/spc");
        std::fs::create_dir_all(&spc).unwrap();
        std::fs::copy(self.mp.w.pki.join("publisher.pem"), spc.join("publisher.pem")).unwrap();
        let settings = self.desktop().join("etc/dm/ClientSettings.ini");
        std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
        std::fs::write(&settings, self.tether_settings()).unwrap();
        self.mp.admin(&["device", "add", "--id", "dev-7", "--token", DEVICE_TOKEN]);
    }

    fn tether_settings(&self) -> String {
        format!("[Tether]\nDevices={}\nProbeTimeout=3\n", self.url())
    }

    /// Runs `dmtether` on the desktop.
    fn dmtether(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(bin("dmtether"));
        cmd.args(args).arg("--device-root").arg(self.desktop());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd, Duration::from_secs(180))
    }

    fn dmtether_ok(&self, args: &[&str]) -> String {
        let out = self.dmtether(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "dmtether {args:?}: {}\n{}",
            show(&out),
            self.sshd.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Lets the desktop in, and trusts the device's host key.
    fn pair(&self) {
        let public = self.dmtether_ok(&["key"]);
        self.sshd.authorize(public.trim());
        self.dmtether_ok(&["trust", "--device", &self.url(), "--host-key", &self.sshd.host_key()]);
    }

    fn record(&self) -> Value {
        let out = self.dmtether_ok(&["devices", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["devices"][self.url()].clone()
    }

    fn installed_version(&self) -> Option<String> {
        let link = std::fs::read_link(self.device.join("opt/dm/current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        kill_agent(&self.device);
    }
}

/// Waits until `cid`'s inventory on `mp` has `key` containing `needle`.
fn wait_attribute(mp: &Mp, cid: &str, key: &str, needle: &str) -> Value {
    let start = Instant::now();
    loop {
        let d = mp.admin_json(&["device", "show", cid]);
        if d["device"]["attributes"][key].as_str().is_some_and(|v| v.contains(needle)) {
            return d;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{cid} {key} never held {needle}: {d}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_desktop_stages_the_client_and_installs_it_on_a_tethered_device() {
    let t = Tether::new();
    let mp = &t.mp;
    mp.admin(&["device", "add", "--id", "desk-1", "--token", DESKTOP_TOKEN]);
    mp.admin(&["device", "add", "--id", "dev-7", "--token", DEVICE_TOKEN]);
    // The desktop runs the agent as a desktop-class client, with [Tether] settings.
    let desktop_ini = format!(
        "[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint={}\nControllerId=desk-1\nDeviceClass=Desktop\n\
         [Communication]\nTargetToken={DESKTOP_TOKEN}\nPollInterval=10\nRetryMaxDelay=4\nMinPollInterval=1\n{}",
        mp.url(),
        t.tether_settings()
    );
    let bins = mp.w.bin_dir("bins", None);
    let desktop_client = mp.w.folder(
        "desktop-client",
        "1.0.0.0",
        &[(&host_platform(), &bins)],
        &[("DMCommonInstaller.ini", &desktop_ini)],
        None,
    );
    mp.w.install_from_ok(&desktop_client);

    // 1. A client deployment advertised to desktops is staged, not installed on the desktop.
    let deployment = t.client_folder("tethered-client", "1.2.0.0");
    let roots = mp.w.pki.join("root-ca.pem");
    mp.admin(&[
        "package",
        "add",
        "--source",
        deployment.to_str().unwrap(),
        "--roots",
        roots.to_str().unwrap(),
    ]);
    mp.admin(&["program", "add", "--package", "dm-client", "--name", "tethered-client"]);
    mp.admin(&[
        "collection",
        "add",
        "--name",
        "desktops",
        "--rule",
        "attribute:device_class=desktop",
    ]);
    mp.admin(&[
        "advertise",
        "--name",
        "stage",
        "--program",
        "tethered-client",
        "--collection",
        "desktops",
        "--mandatory",
    ]);
    let staged = t.desktop().join("var/lib/dm/tether/staged/dm-client-1.2.0.0.dmpkg");
    let st = mp.wait_status(
        "stage",
        "the staging",
        |s| s["devices"][0]["last_code"] == 11030,
        || log_text(t.desktop(), "DMSvc"),
    );
    assert!(staged.is_file(), "{st}");
    assert_eq!(
        std::fs::read_link(t.desktop().join("opt/dm/current")).unwrap(),
        Path::new("versions/1.0.0.0"),
        "the desktop's own client is unchanged"
    );

    // 2. An unknown host key is refused: nothing reaches the device.
    let public = t.dmtether_ok(&["key"]);
    t.sshd.authorize(public.trim());
    let out = t.dmtether(&["scan"], &[]);
    assert_eq!(out.status.code(), Some(68), "{}", show(&out));
    assert!(
        !t.device.join("var/lib/dm/incoming").exists(),
        "something was copied to an untrusted host"
    );
    assert_eq!(t.record()["outcome"]["result"], "refused");
    assert!(log_text(t.desktop(), "DMTether").contains("host key is not trusted"));

    // 3. Trusted: the device gets the client, and its logs come back.
    t.dmtether_ok(&["trust", "--device", &t.url(), "--host-key", &t.sshd.host_key()]);
    t.dmtether_ok(&["scan"]);
    assert_eq!(t.installed_version().as_deref(), Some("1.2.0.0"));
    let r = t.record();
    assert_eq!(r["outcome"]["result"], "installed", "{r}");
    assert_eq!(
        (r["controller_id"].as_str(), r["client_version"].as_str()),
        (Some("dev-7"), Some("1.2.0.0"))
    );
    let copied = t.desktop().join(format!("var/log/dm/tether/127.0.0.1_{}", t.sshd.port));
    let names: Vec<String> = std::fs::read_dir(&copied)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("DMInstaller"))
            && names.iter().any(|n| n.starts_with("DMClientSetup")),
        "{names:?}"
    );
    assert!(!t.device.join("var/lib/dm/incoming").exists(), "the copy is removed once installed");

    // 4. The management point sees the device itself, and the desktop reporting it.
    wait_attribute(mp, "dev-7", "client_version", "1.2.0.0");
    wait_attribute(mp, "desk-1", "tethered_devices", "dev-7 1.2.0.0");
    let d = wait_attribute(mp, "desk-1", "tethered_last", "dev-7: installed (0x00000000)");
    assert_eq!(d["device"]["attributes"]["tethered"], "yes");
    mp.admin(&["collection", "add", "--name", "tethering", "--rule", "attribute:tethered=yes"]);

    // 5. The next look does nothing: the device has this client.
    let installs = logs(&t.device, "DMInstaller").len();
    t.dmtether_ok(&["scan"]);
    assert_eq!(logs(&t.device, "DMInstaller").len(), installs);

    // 6. The same version again, by hand: reconfigured, per the ClientInstallAction table.
    let out = t.dmtether_ok(&["install", "--device", &t.url()]);
    assert!(out.contains("reconfigured"), "{out}");
    assert_eq!(logs(&t.device, "DMInstaller").len(), installs + 1);

    // 7. A newer client is already there: no action, nothing copied.
    let older = mp.w.bundle(&t.client_folder("older-client", "1.1.0.0"), &mp.w.path("older"));
    let out =
        t.dmtether_ok(&["install", "--device", &t.url(), "--bundle", older.to_str().unwrap()]);
    assert!(out.contains("no-action") && out.contains("a newer client 1.2.0.0"), "{out}");
    assert_eq!(logs(&t.device, "DMInstaller").len(), installs + 1);
    assert!(!t.device.join("var/lib/dm/incoming").exists());
}

#[test]
fn a_changed_host_key_is_refused_and_a_tampered_bundle_never_leaves_the_desktop() {
    let mut t = Tether::new();
    t.bare_desktop();
    t.pair();
    let good = t.mp.w.bundle(&t.client_folder("client", "1.2.0.0"), &t.mp.w.path("good"));

    // A bundle that does not verify on the desktop is never copied.
    let bad = t.mp.w.path("bad/dm-client-1.2.0.0.dmpkg");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n - 4096] ^= 0x55;
    std::fs::write(&bad, bytes).unwrap();
    let out =
        t.dmtether(&["install", "--device", &t.url(), "--bundle", bad.to_str().unwrap()], &[]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !t.device.join("var/lib/dm/incoming").exists(),
        "a bundle that failed verification was copied"
    );
    assert_eq!(t.record()["outcome"]["result"], "failed");

    // The device is re-imaged (or another machine answers in its place): refused.
    t.sshd.stop();
    t.sshd.new_host_key();
    t.sshd.resume();
    let out =
        t.dmtether(&["install", "--device", &t.url(), "--bundle", good.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(69), "{}", show(&out));
    assert!(!t.device.join("var/lib/dm/incoming").exists());
    assert_eq!(t.record()["outcome"]["result"], "refused");
    assert!(log_text(t.desktop(), "DMTether").contains("host key has CHANGED"));
    // Trusting the new key takes a decision: --replace.
    let out = t.dmtether(&["trust", "--device", &t.url(), "--host-key", &t.sshd.host_key()], &[]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    t.dmtether_ok(&["trust", "--device", &t.url(), "--host-key", &t.sshd.host_key(), "--replace"]);
    t.dmtether_ok(&["install", "--device", &t.url(), "--bundle", good.to_str().unwrap()]);
    assert_eq!(t.installed_version().as_deref(), Some("1.2.0.0"));
}

#[test]
fn a_copy_cut_by_the_device_going_away_resumes_at_its_next_connection() {
    let mut t = Tether::new();
    t.bare_desktop();
    t.pair();
    let bundle = t.mp.w.bundle(&t.client_folder("client", "1.2.0.0"), &t.mp.w.path("b"));
    let pause = t.mp.w.path("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let mut cmd = Command::new(bin("dmtether"));
    cmd.args([
        "install",
        "--device",
        &t.url(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--device-root",
    ])
    .arg(t.desktop())
    .env("DM_FAILPOINTS", "tether-copy-half=pause")
    .env("DM_FAILPOINT_PAUSE_DIR", &pause)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !pause.join("tether-copy-half.paused").exists() {
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the copy never reached its middle: {}\n{}", show(&out), t.sshd.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Halfway through the installer's copy (once the device has written some of it), the
    // device goes away.
    let incoming = t.device.join("var/lib/dm/incoming");
    // The installer the desktop copies is the client's one program.
    let installer = format!("dm_{}.", host_platform());
    let partial = || {
        std::fs::read_dir(&incoming).into_iter().flatten().flatten().map(|e| e.path()).find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&installer) && n.ends_with(".partial")
        })
    };
    let size = || partial().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
    while size() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the device never wrote the copy");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.sshd.stop();
    std::fs::write(pause.join("tether-copy-half.go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(70), "{}", show(&out));
    let full = std::fs::metadata(t.mp.w.path("bins/dm")).unwrap().len();
    let copied = size();
    assert!(copied > 0 && copied < full, "{copied} of {full} bytes copied before the cut");
    assert_eq!(t.record()["outcome"]["result"], "interrupted");
    assert!(t.installed_version().is_none());

    // `dmtether watch` runs; the device comes back: the copy goes on from where it stopped,
    // and the install completes (the desktop's staged deployment, as its agent leaves it).
    let staged = t.desktop().join("var/lib/dm/tether/staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::copy(&bundle, staged.join(bundle.file_name().unwrap())).unwrap();
    let settings = t.desktop().join("etc/dm/ClientSettings.ini");
    std::fs::write(&settings, t.tether_settings() + "ScanInterval=5\n").unwrap();
    let mut watch = Command::new(bin("dmtether"))
        .arg("watch")
        .arg("--device-root")
        .arg(t.desktop())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    t.sshd.resume();
    let start = Instant::now();
    while t.record()["outcome"]["result"] != "installed" {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = watch.kill();
            panic!(
                "watch never finished the install: {}",
                show(&watch.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill").args(["-TERM", &watch.id().to_string()]).status();
    let out = watch.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop requested"), "{}", show(&out));
    assert_eq!(t.installed_version().as_deref(), Some("1.2.0.0"));
    let log = log_text(t.desktop(), "DMTether");
    assert!(log.contains("resuming the copy of"), "{log}");
    assert_eq!(t.record()["outcome"]["result"], "installed");
}
