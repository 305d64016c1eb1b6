//! DMClientSetup from real deployment folders built by dmpack, through the real installer:
//! every cell of the install/upgrade/reconfigure/uninstall table, idempotence, repair,
//! enrollment, a new agent that never becomes healthy, and a full disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// A world with the client's binaries ready to package.
pub struct Client {
    pub w: World,
    pub bins: PathBuf,
}

pub fn settings(action: &str, extra: &str) -> String {
    format!(
        "[Installation]\nClientInstallAction={action}\n\n[Environment]\nManagementPoint=https://127.0.0.1:9\nControllerId=dev-0001\n\n\
         [Communication]\nTargetToken=tok-secret-1\n{extra}"
    )
}

impl Client {
    pub fn new() -> Client {
        let w = World::new();
        let bins = w.bin_dir("bins", None);
        Client { w, bins }
    }

    /// A signed deployment folder of `version` with `DMCommonInstaller.ini` = `ini`.
    pub fn folder(&self, name: &str, version: &str, ini: &str) -> PathBuf {
        self.w.folder(
            name,
            version,
            &[(&host_platform(), &self.bins)],
            &[("DMCommonInstaller.ini", ini)],
            None,
        )
    }

    /// Runs the folder's dminstaller (which runs its setup) on the device.
    pub fn install(&self, folder: &Path) -> Output {
        self.w.install_from(folder)
    }

    pub fn install_ok(&self, folder: &Path) -> Output {
        self.w.install_from_ok(folder)
    }

    /// Runs the folder's dmclientsetup directly.
    pub fn setup(&self, folder: &Path, extra: &[&str], env: &[(&str, String)]) -> Output {
        let mut cmd = Command::new(folder.join(format!("dmclientsetup_{}", host_platform())));
        cmd.arg("--source").arg(folder).arg("--device-root").arg(&self.w.device).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd, Duration::from_secs(120))
    }

    /// `dmclientsetup --status` as JSON.
    pub fn status(&self) -> Value {
        let out = run(
            Command::new(bin("dmclientsetup"))
                .arg("--status")
                .arg("--device-root")
                .arg(&self.w.device),
            Duration::from_secs(30),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)))
    }

    pub fn device(&self) -> &Path {
        &self.w.device
    }
}

fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that the device has exactly `version` from `folder`, complete: pointer, binaries
/// identical to the folder's, settings holding the folder's values, unit, identity, no journal
/// or leftovers, and an agent binary that runs.
pub fn check_complete(device: &Path, version: &str, folder: &Path) -> Result<(), String> {
    let target = std::fs::read_link(device.join("opt/dm/current"))
        .map_err(|e| format!("no active pointer: {e}"))?;
    if target != Path::new(&format!("versions/{version}")) {
        return Err(format!("the pointer is {}, not versions/{version}", target.display()));
    }
    let versions: Vec<String> = std::fs::read_dir(device.join("opt/dm/versions"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if versions != [version.to_string()] {
        return Err(format!("version folders {versions:?}, expected exactly [{version}]"));
    }
    let dir = device.join(format!("opt/dm/versions/{version}"));
    let one = folder.join(format!("dm_{}", host_platform()));
    for prog in DEVICE_PROGRAMS {
        let installed = dir.join(prog);
        // The client's one program, with a link by each program's name; or, from a folder of
        // four programs, each program.
        let (file, shipped) = if one.is_file() {
            if std::fs::read_link(&installed).ok() != Some(PathBuf::from("dm")) {
                return Err(format!("{prog} is not a link to dm"));
            }
            (dir.join("dm"), one.clone())
        } else {
            (installed, folder.join(format!("{prog}_{}", host_platform())))
        };
        if !file.is_file() || sha256_file(&file) != sha256_file(&shipped) {
            return Err(format!("{prog} is missing or differs from the deployment folder's"));
        }
    }
    let staged = dm_shared::Settings::load(&folder.join("DMCommonInstaller.ini"))
        .map_err(|e| e.to_string())?;
    let installed = dm_shared::Settings::load(&device.join("etc/dm/ClientSettings.ini"))
        .map_err(|e| e.to_string())?;
    if installed.environment != staged.environment
        || installed.communication != staged.communication
    {
        return Err("the settings are not the deployment's".into());
    }
    for p in ["etc/systemd/system/dmsvc.service", "var/lib/dm/identity.json"] {
        if !device.join(p).is_file() {
            return Err(format!("{p} is missing"));
        }
    }
    if device.join("var/lib/dm/setup-journal.json").exists() {
        return Err("the journal is left behind".into());
    }
    let out = run(
        Command::new(device.join("opt/dm/current/dmsvc")).arg("--version"),
        Duration::from_secs(10),
    );
    if !out.status.success() {
        return Err(format!("the installed agent does not run: {}", show(&out)));
    }
    Ok(())
}

pub fn assert_complete(device: &Path, version: &str, folder: &Path) {
    if let Err(e) = check_complete(device, version, folder) {
        panic!("client {version} is not complete: {e}\n{}", tree_listing(device));
    }
}

/// Checks there is no client at all.
pub fn check_no_client(device: &Path) -> Result<(), String> {
    for p in [
        "opt/dm/current",
        "opt/dm/versions",
        "etc/dm/ClientSettings.ini",
        "etc/systemd/system/dmsvc.service",
        "var/lib/dm/setup-journal.json",
    ] {
        if std::fs::symlink_metadata(device.join(p)).is_ok() {
            return Err(format!("{p} exists"));
        }
    }
    Ok(())
}

/// No client: no pointer, binaries, settings, unit or journal.
pub fn assert_no_client(device: &Path) {
    if let Err(e) = check_no_client(device) {
        panic!("{e}:\n{}", tree_listing(device));
    }
}

fn result_record(device: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(device.join("var/lib/dm/setup-result.json")).unwrap())
        .unwrap()
}

fn agent_pid(device: &Path) -> Option<u32> {
    std::fs::read_to_string(device.join("run/dm/dmsvc.pid")).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
}

/// Puts the device in the state "client `version` installed" for the table's rows.
fn with_installed(c: &Client, version: &str) -> PathBuf {
    let f = c.folder(&format!("installed-{version}"), version, &settings("Install", ""));
    c.install_ok(&f);
    assert_complete(c.device(), version, &f);
    f
}

// --- The table: rows are the installed client, columns ClientInstallAction. -------------

#[test]
fn no_client_install_installs() {
    let c = Client::new();
    let f = c.folder("f", "1.2.0.0", &settings("Install", ""));
    c.install_ok(&f);
    assert_complete(c.device(), "1.2.0.0", &f);
    let pid = agent_pid(c.device()).expect("agent pid");
    assert!(alive(pid), "the agent is not running");
    let r = result_record(c.device());
    assert_eq!(
        (r["op"].as_str(), r["result"].as_str(), r["to"].as_str()),
        (Some("install"), Some("success"), Some("1.2.0.0"))
    );
    let st = c.status();
    assert_eq!(st["complete"], true, "{st}");
    assert_eq!(st["controller_id"], "dev-0001");
    let log = log_text(c.device(), "DMClientSetup");
    assert!(log.contains("ClientInstallAction=Install, installed client none, staged client 1.2.0.0: Run(Install)"), "{log}");
    assert!(!log.contains("tok-secret-1"), "a secret reached the log");
    assert_eq!(logs(c.device(), "DMSvc").len(), 1, "the agent writes its own dated log");
}

#[test]
fn no_client_none_says_nothing_to_reconfigure() {
    let c = Client::new();
    let f = c.folder("f", "1.2.0.0", &settings("None", ""));
    c.install_ok(&f);
    assert_no_client(c.device());
    assert!(
        log_text(c.device(), "DMClientSetup")
            .contains("no client is installed, so there is nothing to reconfigure")
    );
}

#[test]
fn no_client_uninstall_says_nothing_to_remove() {
    let c = Client::new();
    let f = c.folder("f", "1.2.0.0", &settings("Uninstall", ""));
    c.install_ok(&f);
    assert_no_client(c.device());
    assert!(log_text(c.device(), "DMClientSetup").contains("nothing to remove"));
}

#[test]
fn older_client_install_upgrades_and_keeps_identity_outbox_and_cache() {
    let c = Client::new();
    with_installed(&c, "1.0.0.0");
    let old_pid = agent_pid(c.device()).unwrap();
    let identity = std::fs::read(c.device().join("var/lib/dm/identity.json")).unwrap();
    std::fs::create_dir_all(c.device().join("var/lib/dm/cache")).unwrap();
    std::fs::write(c.device().join("var/lib/dm/cache/pkg.partial"), b"half a download").unwrap();
    let outbox_before: Vec<_> = std::fs::read_dir(c.device().join("var/lib/dm/outbox"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let f = c.folder("f", "1.2.0.0", &settings("Install", "PollInterval=60\n"));
    c.install_ok(&f);
    assert_complete(c.device(), "1.2.0.0", &f);
    assert_eq!(std::fs::read(c.device().join("var/lib/dm/identity.json")).unwrap(), identity);
    assert_eq!(
        std::fs::read(c.device().join("var/lib/dm/cache/pkg.partial")).unwrap(),
        b"half a download"
    );
    for name in outbox_before {
        assert!(
            c.device().join("var/lib/dm/outbox").join(name).exists(),
            "outbox entry lost in the upgrade"
        );
    }
    assert!(!alive(old_pid), "the old agent still runs");
    assert!(alive(agent_pid(c.device()).unwrap()));
    let log = log_text(c.device(), "DMClientSetup");
    assert!(log.contains("client upgraded from 1.0.0.0 to 1.2.0.0"), "{log}");
    assert!(log.contains("settings: [Communication] PollInterval set to \"60\""), "{log}");
}

#[test]
fn older_client_none_reconfigures() {
    let c = Client::new();
    with_installed(&c, "1.0.0.0");
    let f = c.folder("f", "1.2.0.0", &settings("None", "PollInterval=60\n"));
    c.install_ok(&f);
    assert_eq!(c.status()["installed"], "1.0.0.0");
    let s = dm_shared::Settings::load(&c.device().join("etc/dm/ClientSettings.ini")).unwrap();
    assert_eq!(s.communication.poll_interval, Duration::from_secs(60));
    assert_eq!(s.installation.client_install_action, dm_shared::settings::InstallAction::None);
}

#[test]
fn older_client_uninstall_removes_it_and_keeps_logs_and_certificates() {
    let c = Client::new();
    with_installed(&c, "1.0.0.0");
    let pid = agent_pid(c.device()).unwrap();
    let f = c.folder("f", "1.2.0.0", &settings("Uninstall", ""));
    c.install_ok(&f);
    assert_no_client(c.device());
    assert!(!alive(pid), "the agent still runs");
    assert!(
        !c.device().join("var/lib/dm").exists(),
        "client state left:\n{}",
        tree_listing(c.device())
    );
    assert!(
        !logs(c.device(), "DMSvc").is_empty() && !logs(c.device(), "DMClientSetup").is_empty(),
        "logs removed"
    );
    assert_eq!(
        std::fs::read_dir(c.device().join("etc/dm/certs/spc")).unwrap().count(),
        1,
        "certificates removed"
    );
}

#[test]
fn same_client_install_reconfigures_and_overwrites_user_changes() {
    let c = Client::new();
    let f0 = with_installed(&c, "1.2.0.0");
    let _ = f0;
    // The user changed a setting on the device.
    let path = c.device().join("etc/dm/ClientSettings.ini");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("ControllerId=dev-0001", "ControllerId=dev-0001\nSiteCode=USR");
    std::fs::write(&path, text.replace("TargetToken=tok-secret-1", "TargetToken=user-token"))
        .unwrap();
    let pid = agent_pid(c.device()).unwrap();
    let f = c.folder("f", "1.2.0.0", &settings("Install", ""));
    c.install_ok(&f);
    assert_complete(c.device(), "1.2.0.0", &f);
    let log = log_text(c.device(), "DMClientSetup");
    assert!(log.contains("Run(Reconfigure)"), "{log}");
    assert!(log.contains("settings: [Environment] SiteCode removed (was \"USR\")"), "{log}");
    assert!(
        log.contains("settings: [Communication] TargetToken overwritten: <redacted> -> <redacted>"),
        "{log}"
    );
    assert!(
        !log.contains("user-token") && !log.contains("tok-secret-1"),
        "a secret reached the log"
    );
    assert_ne!(
        agent_pid(c.device()),
        Some(pid),
        "the agent was not restarted to read its settings"
    );
}

#[test]
fn same_client_none_reconfigures() {
    let c = Client::new();
    with_installed(&c, "1.2.0.0");
    let f = c.folder("f", "1.2.0.0", &settings("None", "BandwidthLimit=64\n"));
    c.install_ok(&f);
    let s = dm_shared::Settings::load(&c.device().join("etc/dm/ClientSettings.ini")).unwrap();
    assert_eq!(s.communication.bandwidth_limit_kib, 64);
    assert_eq!(result_record(c.device())["op"], "reconfigure");
}

#[test]
fn same_client_uninstall_removes_it() {
    let c = Client::new();
    with_installed(&c, "1.2.0.0");
    let f = c.folder("f", "1.2.0.0", &settings("Uninstall", ""));
    c.install_ok(&f);
    assert_no_client(c.device());
}

/// A stand-in `systemctl` (debug builds honour DM_TEST_SYSTEMCTL) that records every call and
/// answers that the agent is not active.
fn fake_systemctl(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("systemctl.log");
    let prog = dir.join("systemctl");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncase \"$1\" in is-active) exit 3;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, log)
}

#[test]
fn uninstall_under_systemd_disables_the_unit() {
    let c = Client::new();
    with_installed(&c, "1.2.0.0");
    kill_agent(c.device());
    let (systemctl, calls) = fake_systemctl(&c.w.path(""));
    let f = c.folder("f", "1.2.0.0", &settings("Uninstall", ""));
    let out = c.setup(&f, &[], &[("DM_TEST_SYSTEMCTL", systemctl.display().to_string())]);
    assert!(out.status.success(), "{}", show(&out));
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        calls.lines().any(|l| l == "disable --now dmsvc.service"),
        "uninstall left the unit enabled for the next boot; systemctl saw:\n{calls}"
    );
    assert_no_client(c.device());
}

#[test]
fn newer_client_install_is_no_action() {
    let c = Client::new();
    with_installed(&c, "2.0.0.0");
    let before = tree_hash(
        c.device(),
        &["var/log/dm", "run", "var/lib/dm/setup-result.json", "var/lib/dm/outbox"],
    );
    let f = c.folder("f", "1.2.0.0", &settings("Install", "PollInterval=60\n"));
    c.install_ok(&f);
    assert_eq!(
        tree_hash(
            c.device(),
            &["var/log/dm", "run", "var/lib/dm/setup-result.json", "var/lib/dm/outbox"]
        ),
        before
    );
    assert!(log_text(c.device(), "DMClientSetup").contains(
        "the installed client 2.0.0.0 is newer than the staged 1.2.0.0; nothing was changed"
    ));
    assert_eq!(result_record(c.device())["result"], "no-action");
}

#[test]
fn newer_client_none_reconfigures() {
    let c = Client::new();
    with_installed(&c, "2.0.0.0");
    let f = c.folder("f", "1.2.0.0", &settings("None", "PollInterval=90\n"));
    c.install_ok(&f);
    assert_eq!(c.status()["installed"], "2.0.0.0");
    let s = dm_shared::Settings::load(&c.device().join("etc/dm/ClientSettings.ini")).unwrap();
    assert_eq!(s.communication.poll_interval, Duration::from_secs(90));
}

#[test]
fn newer_client_uninstall_removes_it() {
    let c = Client::new();
    with_installed(&c, "2.0.0.0");
    let f = c.folder("f", "1.2.0.0", &settings("Uninstall", ""));
    c.install_ok(&f);
    assert_no_client(c.device());
}

// --- Beyond the table. ---------------------------------------------------------------------

#[test]
fn running_the_same_setup_twice_changes_nothing_the_second_time() {
    let c = Client::new();
    let f = c.folder("f", "1.2.0.0", &settings("Install", ""));
    c.install_ok(&f);
    let pid = agent_pid(c.device());
    let skip = ["var/log/dm", "run", "var/lib/dm/setup-result.json", "var/lib/dm/outbox"];
    let before = tree_hash(c.device(), &skip);
    c.install_ok(&f);
    assert_eq!(tree_hash(c.device(), &skip), before, "{}", tree_listing(c.device()));
    assert_eq!(agent_pid(c.device()), pid, "the agent was restarted for nothing");
    assert!(
        log_text(c.device(), "DMClientSetup")
            .contains("already has these settings; nothing was changed")
    );
}

#[test]
fn repair_restores_a_client_whose_binary_was_deleted() {
    let c = Client::new();
    let f = with_installed(&c, "1.2.0.0");
    kill_agent(c.device());
    std::fs::remove_file(c.device().join("opt/dm/versions/1.2.0.0/dmsvc")).unwrap();
    let st = c.status();
    assert_eq!(st["complete"], false, "{st}");
    assert!(st["problems"].to_string().contains("dmsvc"), "{st}");
    let identity = std::fs::read(c.device().join("var/lib/dm/identity.json")).unwrap();
    let out = c.setup(&f, &["--repair"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        log_text(c.device(), "DMClientSetup")
    );
    assert_complete(c.device(), "1.2.0.0", &f);
    assert!(alive(agent_pid(c.device()).unwrap()));
    assert_eq!(
        std::fs::read(c.device().join("var/lib/dm/identity.json")).unwrap(),
        identity,
        "repair keeps the device identity"
    );
    assert_eq!(result_record(c.device())["op"], "repair");
}

#[test]
fn repair_works_when_the_settings_are_unreadable() {
    let c = Client::new();
    let f = with_installed(&c, "1.2.0.0");
    std::fs::write(c.device().join("etc/dm/ClientSettings.ini"), [0xde, 0xad, 0xbe, 0xef, 0, 1, 2])
        .unwrap();
    assert_eq!(c.status()["complete"], false);
    let out = c.setup(&f, &["--repair"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        log_text(c.device(), "DMClientSetup")
    );
    assert_complete(c.device(), "1.2.0.0", &f);
}

#[test]
fn uninstall_can_remove_the_certificates_too() {
    let c = Client::new();
    with_installed(&c, "1.2.0.0");
    let f = c.folder("f", "1.2.0.0", &settings("Uninstall", ""));
    let out = c.setup(&f, &["--remove-certificates"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_no_client(c.device());
    for store in ["privileged", "spc"] {
        assert_eq!(
            std::fs::read_dir(c.device().join("etc/dm/certs").join(store)).unwrap().count(),
            0,
            "{store} store not emptied"
        );
    }
    assert_eq!(
        std::fs::read_dir(c.device().join("etc/dm/certs/root")).unwrap().count(),
        1,
        "the root store is the device's, not ours"
    );
}

#[test]
fn enrollment_without_a_scep_server_is_refused_before_any_change() {
    let c = Client::new();
    let f = c.folder(
        "f",
        "1.2.0.0",
        &settings("Install", "")
            .replace("[Environment]", "CertEnrollAction=Enroll\n\n[Environment]"),
    );
    let before = tree_hash(c.device(), &["var/log/dm", "run", "etc/dm/certs"]);
    let out = c.install(&f);
    assert_eq!(out.status.code(), Some(11), "{}", show(&out));
    let log = log_text(c.device(), "DMClientSetup");
    assert!(
        log.contains("[Certificates] ScepUrl is required with CertEnrollAction=Enroll"),
        "{log}"
    );
    assert!(logs(c.device(), "DMCertEnroll").is_empty(), "nothing to enroll with");
    assert_eq!(tree_hash(c.device(), &["var/log/dm", "run", "etc/dm/certs"]), before);
}

#[test]
fn settings_without_a_management_point_are_refused_before_any_change() {
    let c = Client::new();
    let f = c.folder("f", "1.2.0.0", "[Installation]\nClientInstallAction=Install\n");
    let before = tree_hash(c.device(), &["var/log/dm", "run", "etc/dm/certs"]);
    let out = c.install(&f);
    assert_eq!(out.status.code(), Some(11), "{}", show(&out));
    assert!(
        log_text(c.device(), "DMClientSetup")
            .contains("DMCommonInstaller.ini [Environment] ManagementPoint is required")
    );
    assert_eq!(tree_hash(c.device(), &["var/log/dm", "run", "etc/dm/certs"]), before);
}

#[test]
fn an_upgrade_whose_agent_never_becomes_healthy_is_rolled_back() {
    let c = Client::new();
    let old = with_installed(&c, "1.0.0.0");
    // 1.1's agent dies at once.
    let bad_bins = c.w.path("bad-bins");
    std::fs::create_dir_all(&bad_bins).unwrap();
    // A build of four programs, whose agent is a script that fails.
    for prog in ["dminstaller", "dmclientsetup", "dmcertenroll"] {
        std::fs::copy(c.bins.join("dm"), bad_bins.join(prog)).unwrap();
    }
    std::fs::write(bad_bins.join("dmsvc"), "#!/bin/sh\necho broken >&2\nexit 3\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(bad_bins.join("dmsvc")).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(
        bad_bins.join("dmsvc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let f = c.w.folder(
        "bad",
        "1.1.0.0",
        &[(&host_platform(), &bad_bins)],
        &[("DMCommonInstaller.ini", &settings("Install", ""))],
        None,
    );
    let out = c.install(&f);
    assert_eq!(out.status.code(), Some(22), "{}", show(&out));
    assert_complete(c.device(), "1.0.0.0", &old);
    assert!(alive(agent_pid(c.device()).unwrap()), "the old agent was not restarted");
    let log = log_text(c.device(), "DMClientSetup");
    assert!(log.contains("the agent 1.1.0.0: it exited ("), "{log}");
    assert!(log.contains("rolled back"), "{log}");
    let r = result_record(c.device());
    assert_eq!((r["result"].as_str(), r["to"].as_str()), (Some("failure"), Some("1.0.0.0")));
}

/// Runs `script` in a private mount namespace where `<device>/opt` is a tmpfs of `size` bytes.
fn in_small_opt(c: &Client, size: u64, script: &str) -> Output {
    let opt = c.device().join("opt");
    std::fs::create_dir_all(&opt).unwrap();
    let full = format!("mount -t tmpfs -o size={size} tmpfs {} && {script}", opt.display());
    let out = run(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &full]),
        Duration::from_secs(120),
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("unshare failed"),
        "cannot make a mount namespace (the tests need root): {}",
        show(&out)
    );
    out
}

fn bins_size(c: &Client) -> u64 {
    std::fs::read_dir(&c.bins).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn disk_full_mid_install_rolls_back_with_a_clear_error() {
    let c = Client::new();
    let f = c.folder("f", "1.2.0.0", &settings("Install", ""));
    let setup = f.join(format!("dmclientsetup_{}", host_platform()));
    let before = tree_hash(c.device(), &["var/log/dm", "run", "etc/dm/certs", "opt"]);
    // Room for about half the binaries: the copy fails part-way.
    let script = format!(
        "{inst} --device-root {d} ; echo \"exit=$?\"; ls -A {d}/opt",
        inst = f.join(format!("dminstaller_{}", host_platform())).display(),
        d = c.device().display()
    );
    let _ = setup;
    let out = in_small_opt(&c, bins_size(&c) / 2, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exit=13"), "{}", show(&out));
    assert!(
        stdout.lines().skip(1).all(|l| l.trim().is_empty()),
        "opt not empty after rollback: {}",
        show(&out)
    );
    let log = log_text(c.device(), "DMClientSetup");
    assert!(log.contains("There is not enough space on the disk (0x80070070)"), "{log}");
    assert!(log.contains("rolled back"), "{log}");
    assert_eq!(
        tree_hash(c.device(), &["var/log/dm", "run", "etc/dm/certs", "opt"]),
        before,
        "{}",
        tree_listing(c.device())
    );
}

#[test]
fn disk_full_mid_upgrade_keeps_the_old_client() {
    let c = Client::new();
    let v1 = c.folder("v1", "1.0.0.0", &settings("Install", ""));
    let v2 = c.folder("v2", "1.1.0.0", &settings("Install", ""));
    let inst = |f: &Path| f.join(format!("dminstaller_{}", host_platform())).display().to_string();
    let d = c.device().display().to_string();
    let script = format!(
        "{i1} --device-root {d} >/dev/null 2>&1; echo \"first=$?\"; {i2} --device-root {d} >/dev/null 2>&1; echo \"second=$?\"; \
         {status} --status --device-root {d}; cat {d}/run/dm/dmsvc.pid; sha256sum {d}/opt/dm/current/dmsvc",
        i1 = inst(&v1),
        i2 = inst(&v2),
        status = bin("dmclientsetup").display()
    );
    let out = in_small_opt(&c, bins_size(&c) * 3 / 2, &script);
    kill_agent(c.device());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("first=0") && stdout.contains("second=13"), "{}", show(&out));
    assert!(
        stdout.contains("\"installed\": \"1.0.0.0\"") && stdout.contains("\"complete\": true"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains(&sha256_file(&v1.join(format!("dm_{}", host_platform())))),
        "{}",
        show(&out)
    );
    assert!(
        log_text(c.device(), "DMClientSetup")
            .contains("There is not enough space on the disk (0x80070070)")
    );
}

#[test]
fn aarch64_installer_chains_to_aarch64_setup_under_qemu() {
    let Some((runner, _)) = cross_bin("aarch64-unknown-linux-gnu", "dminstaller") else { return };
    let c = Client::new();
    let arm = c.w.path("arm-bins");
    std::fs::create_dir_all(&arm).unwrap();
    for prog in ["dminstaller", "dmclientsetup", "dmsvc", "dmcertenroll"] {
        std::fs::copy(cross_bin("aarch64-unknown-linux-gnu", prog).unwrap().1, arm.join(prog))
            .unwrap();
    }
    let f = c.w.folder(
        "card/DMClient",
        "1.2.0.345",
        &[("linux-aarch64", &arm)],
        &[("DMCommonInstaller.ini", &settings("Install", ""))],
        None,
    );
    let out = run(
        Command::new(&runner[0])
            .args(&runner[1..])
            .arg(f.join("dminstaller_linux-aarch64"))
            .arg("--device-root")
            .arg(c.device())
            .env("DM_RUNNER", runner.join(" ")),
        Duration::from_secs(300),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        log_text(c.device(), "DMClientSetup")
    );
    let log = log_text(c.device(), "DMClientSetup");
    assert!(log.contains("dmclientsetup 0.1.0 (linux-aarch64) starting"), "{log}");
    assert!(log.contains("client 1.2.0.345 installed"), "{log}");
    assert!(log_text(c.device(), "DMSvc").contains("dmsvc 0.1.0 (linux-aarch64) starting"));
    let target = std::fs::read_link(c.device().join("opt/dm/current")).unwrap();
    assert_eq!(target, Path::new("versions/1.2.0.345"));
    assert_eq!(
        sha256_file(&c.device().join("opt/dm/current/dmsvc")),
        sha256_file(&f.join("dmsvc_linux-aarch64"))
    );
}
