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

/// The device programs: the client's one program `dm` by the name it is started with.
pub const DEVICE_PROGRAMS: [&str; 4] = ["dminstaller", "dmclientsetup", "dmsvc", "dmcertenroll"];

/// A host-built workspace binary. `cargo test --workspace` builds every binary first. A device
/// program is a link by its name to `dm`, as on a device.
pub fn bin(name: &str) -> PathBuf {
    if DEVICE_PROGRAMS.contains(&name) {
        return device_link(name);
    }
    let p = host_bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        p.display()
    );
    p
}

/// `target/debug/dm-links/<name>`, a link to the host's `dm`: made once, atomically, so tests
/// running at once never see it half made.
fn device_link(name: &str) -> PathBuf {
    let dm = bin("dm");
    let dir = host_bin_dir().join("dm-links");
    let link = dir.join(name);
    if std::fs::read_link(&link).is_ok_and(|t| t == dm) {
        return link;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let temp =
        dir.join(format!(".{name}.{}.{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(&dm, &temp).unwrap();
    std::fs::rename(&temp, &link).unwrap();
    link
}

/// An ARM release binary built by `targets/build.sh`, with the qemu command that runs it.
/// `None` (the test skips) when it was not built, unless `DM_REQUIRE_CROSS` is set, as in CI.
pub fn cross_bin(triple: &str, name: &str) -> Option<(Vec<String>, PathBuf)> {
    let dir = std::env::var_os("DM_CROSS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/cross"));
    let p = dir.join(triple).join("device").join(name);
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
        // The host binary is rebuilt by every `cargo test`; an ARM binary older than it was
        // built from older sources and would test stale code.
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let host = bin(name);
        if let (Some(cross_time), Some(host_time)) = (mtime(&p), mtime(&host)) {
            assert!(
                cross_time >= host_time,
                "{} is older than {}: run targets/build.sh",
                p.display(),
                host.display()
            );
        }
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

/// Runs a command, asserting it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", show(&out));
    out
}

/// A SHA-256 over a folder tree: every path, type, mode, size, content and symlink target,
/// skipping `exclude` (relative paths). Equal hashes mean byte-for-byte equal trees.
pub fn tree_hash(root: &Path, exclude: &[&str]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut stack = vec![root.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if exclude.iter().any(|x| rel == *x || rel.starts_with(&format!("{x}/"))) {
                continue;
            }
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            entries.push((rel, e.path(), meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, path, meta) in entries {
        ctx.update(rel.as_bytes());
        ctx.update(format!("|{:o}|{}|", meta.permissions().mode(), meta.len()).as_bytes());
        if meta.file_type().is_symlink() {
            ctx.update(std::fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            ctx.update(&std::fs::read(&path).unwrap());
        }
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Lists a tree's paths, for assertion messages.
pub fn tree_listing(root: &Path) -> String {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out.join("\n")
}

/// The dated log files of a program under a device root (`prefix` is its log prefix, as
/// `DMSvc`), oldest first, as the programs themselves order them: `DMSvc…-120001-2.log`
/// after `DMSvc…-120001.log`. An empty prefix lists every log, by name.
pub fn logs(device: &Path, prefix: &str) -> Vec<PathBuf> {
    use dm_shared::logging::{Program, list_log_files};
    let dir = device.join("var/log/dm");
    let programs = [
        Program::Installer,
        Program::ClientSetup,
        Program::Agent,
        Program::CertEnroll,
        Program::ManagementPoint,
        Program::Tether,
    ];
    if let Some(program) = programs.into_iter().find(|p| p.log_prefix() == prefix) {
        return list_log_files(&dir, program);
    }
    assert!(prefix.is_empty(), "{prefix} is no program's log prefix");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// All of a program's log text under a device root.
pub fn log_text(device: &Path, prefix: &str) -> String {
    logs(device, prefix)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One test's world: a temp folder with a demo PKI (made by the real `dmpack dev-pki`) and a
/// device root whose root store trusts the demo root CA.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub pki: PathBuf,
    pub device: PathBuf,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        run_ok(Command::new(bin("dmpack")).args(["dev-pki", "--out"]).arg(&pki));
        let device = tmp.path().join("device");
        // A device image has a log folder; the programs' own logs are the one thing every
        // run may add, and the tests leave them out of "the device is unchanged".
        std::fs::create_dir_all(device.join("var/log")).unwrap();
        let w = World { tmp, pki, device };
        w.trust(&w.pki.join("root-ca.pem"));
        w
    }

    /// A path in the world's temp folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Adds a root certificate to the device's root store.
    pub fn trust(&self, root_pem: &Path) {
        let store = self.device.join("etc/dm/certs/root");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::copy(
            root_pem,
            store.join(format!("{}.pem", root_pem.file_stem().unwrap().to_string_lossy())),
        )
        .unwrap();
    }

    /// Issues another certificate from the world's CA with `dmpack cert`.
    pub fn cert(&self, name: &str, purpose: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
        let (c, k) = (self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")));
        run_ok(
            Command::new(bin("dmpack"))
                .args(["cert", "--ca-dir"])
                .arg(&self.pki)
                .args(["--cn", name, "--purpose", purpose])
                .args(extra)
                .arg("--out-cert")
                .arg(&c)
                .arg("--out-key")
                .arg(&k),
        );
        (c, k)
    }

    /// A folder of the four client programs for a platform: real host binaries, with setup
    /// optionally replaced by a shell-script double that records how it was called.
    /// A build of the client for `dmpack folder`: the one program `dm`, stripped (the same
    /// program at a fifth of the size, so the many installs of the crash tests copy less).
    /// With `fake_setup_exit`, a build as the client was before it was one program: the four
    /// programs, each a copy of `dm` by its name, setup a test double exiting with that code.
    pub fn bin_dir(&self, name: &str, fake_setup_exit: Option<i32>) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        run_ok(Command::new("strip").arg("-o").arg(dir.join("dm")).arg(bin("dm")));
        if let Some(code) = fake_setup_exit {
            for prog in DEVICE_PROGRAMS {
                std::fs::copy(dir.join("dm"), dir.join(prog)).unwrap();
            }
            std::fs::remove_file(dir.join("dm")).unwrap();
            write_fake_setup(&dir.join("dmclientsetup"), code);
        }
        dir
    }

    /// Builds and signs a deployment folder with the real `dmpack folder`.
    pub fn folder(
        &self,
        name: &str,
        version: &str,
        platform_bins: &[(&str, &Path)],
        settings: &[(&str, &str)],
        signer: Option<(&Path, &Path)>,
    ) -> PathBuf {
        let out = self.path(name);
        let mut cmd = Command::new(bin("dmpack"));
        cmd.args(["folder", "--out"]).arg(&out).args(["--client-version", version]);
        for (platform, dir) in platform_bins {
            cmd.arg("--platform-bin").arg(format!("{platform}={}", dir.display()));
        }
        let sdir = self.path(&format!("{name}-settings"));
        for (file, text) in settings {
            std::fs::create_dir_all(&sdir).unwrap();
            std::fs::write(sdir.join(file), text).unwrap();
            cmd.arg("--settings").arg(sdir.join(file));
        }
        let (cert, key) = signer
            .map(|(c, k)| (c.to_path_buf(), k.to_path_buf()))
            .unwrap_or((self.pki.join("publisher.pem"), self.pki.join("publisher.key")));
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        run_ok(&mut cmd);
        out
    }
}

impl World {
    /// Writes a signed folder as one `.dmpkg` bundle into `out_dir` with the real
    /// `dmpack bundle`, and returns the bundle's path.
    pub fn bundle(&self, folder: &Path, out_dir: &Path) -> PathBuf {
        std::fs::create_dir_all(out_dir).unwrap();
        run_ok(
            Command::new(bin("dmpack"))
                .args(["bundle", "--source"])
                .arg(folder)
                .arg("--roots")
                .arg(self.pki.join("root-ca.pem"))
                .arg("--out")
                .arg(out_dir),
        );
        let mut found: Vec<PathBuf> = std::fs::read_dir(out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dmpkg"))
            .collect();
        assert_eq!(found.len(), 1, "one bundle in {}", out_dir.display());
        found.pop().unwrap()
    }

    /// Runs a deployment folder's own dminstaller on the world's device, as from a card.
    pub fn install_from(&self, folder: &Path) -> Output {
        run(
            Command::new(folder.join(format!("dminstaller_{}", host_platform())))
                .arg("--device-root")
                .arg(&self.device),
            Duration::from_secs(120),
        )
    }

    /// [`World::install_from`], requiring success (the setup log explains a failure).
    pub fn install_from_ok(&self, folder: &Path) -> Output {
        let out = self.install_from(folder);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}\nagent:\n{}",
            show(&out),
            log_text(&self.device, "DMClientSetup"),
            log_text(&self.device, "DMSvc")
        );
        out
    }
}

impl Drop for World {
    /// Stops an agent the test started on its device, so none outlives the test.
    fn drop(&mut self) {
        kill_agent(&self.device);
    }
}

/// Kills the agent of a device root (from its pid file), if one runs.
pub fn kill_agent(device: &Path) {
    if let Ok(pid) = std::fs::read_to_string(device.join("run/dm/dmsvc.pid")) {
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&*device.to_string_lossy()) {
            let _ = Command::new("kill").args(["-9", pid]).status();
            // SIGKILL is delivered later than `kill` returns: wait until the process is gone
            // (or a zombie, whose locks are already released), so an agent started next
            // never finds the old one's lock still held.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next());
                if state.is_none_or(|s| s == "Z" || s == "X") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // A leader shows as a zombie while its other threads still exit; the agent's lock
            // is free only once the last one has: wait for that, the real condition.
            let lock = device.join("run/dm/dmsvc.lock");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                let Ok(f) = std::fs::File::open(&lock) else { break };
                let free =
                    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive);
                if free.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Writes a shell-script stand-in for dmclientsetup: it records its arguments in
/// `<device root>/fake-setup-args` and exits with `code`.
pub fn write_fake_setup(path: &Path, code: i32) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\n# test double of dmclientsetup\nargs=\"$*\"\nroot=\nsettings=\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --device-root ]; then root=\"$2\"; fi\n  if [ \"$1\" = --settings ]; then settings=\"$2\"; fi\n  shift\ndone\necho \"$args\" > \"$root/fake-setup-args\"\n[ -n \"$settings\" ] && cat \"$settings\" > \"$root/fake-setup-settings\"\nexit {code}\n"
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The host's platform name.
pub fn host_platform() -> String {
    dm_shared::Platform::current().to_string()
}

/// Starts a device's installed agent in its own process group and waits until it reports its
/// pid and health. The child is reaped whenever it ends.
pub fn start_agent(device: &Path) {
    let agent = device.join("opt/dm/current/dmsvc");
    if !agent.exists() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&agent)
        .arg("--device-root")
        .arg(device)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::spawn(move || child.wait());
    let start = Instant::now();
    while !device.join("run/dm/agent-health.json").exists()
        || !device.join("run/dm/dmsvc.pid").exists()
    {
        assert!(start.elapsed() < Duration::from_secs(20), "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signs `src` as package `name` 1.0.0.0 into `out` with the real `dmpack package`, by the
/// world's publisher or `signer` (certificate, key). `program`, a file of `src` (made
/// executable), is the package's one signed program, `run`.
pub fn sign_package(
    w: &World,
    src: &Path,
    out: &Path,
    name: &str,
    program: &str,
    signer: Option<(&Path, &Path)>,
) {
    sign_package_as(w, src, out, (name, "1.0.0.0"), program, signer);
}

/// [`sign_package`] for any version.
pub fn sign_package_as(
    w: &World,
    src: &Path,
    out: &Path,
    (name, version): (&str, &str),
    program: &str,
    signer: Option<(&Path, &Path)>,
) {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = signer
        .map(|(c, k)| (c.to_path_buf(), k.to_path_buf()))
        .unwrap_or((w.pki.join("publisher.pem"), w.pki.join("publisher.key")));
    std::fs::set_permissions(src.join(program), std::fs::Permissions::from_mode(0o755)).unwrap();
    run_ok(
        Command::new(bin("dmpack"))
            .args(["package", "--source"])
            .arg(src)
            .arg("--out")
            .arg(out)
            .args(["--name", name, "--package-version", version, "--key"])
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .arg("--program")
            .arg(format!("run={program}")),
    );
}

/// Installs a client on the world's device that polls `url` (its base, as `ManagementPoint`)
/// as `controller_id` with `token`, every second; `extra` adds `[Communication]` lines.
pub fn install_client_polling(w: &World, url: &str, controller_id: &str, token: &str, extra: &str) {
    let bins = w.bin_dir("bins", None);
    let ini = format!(
        "[Installation]\nClientInstallAction=Install\n[Environment]\nManagementPoint={url}\nControllerId={controller_id}\n\
         [Communication]\nTargetToken={token}\nPollInterval=10\nMinPollInterval=1\n{extra}"
    );
    let folder = w.folder(
        "client",
        "1.0.0.0",
        &[(&host_platform(), &bins)],
        &[("DMCommonInstaller.ini", &ini)],
        None,
    );
    w.install_from_ok(&folder);
}

/// A cpio archive in the "crc" (070702) format SWUpdate reads.
pub fn cpio_crc(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let entries = files
        .iter()
        .map(|(n, d)| (n.to_string(), d.clone(), 0o100644u32))
        .chain(std::iter::once(("TRAILER!!!".to_string(), Vec::new(), 0)));
    for (ino, (name, data, mode)) in entries.enumerate() {
        let check: u32 = data.iter().fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
        let name_z = format!("{name}\0");
        let fields = [
            ino as u32 + 1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name_z.len() as u32,
            check,
        ];
        out.extend_from_slice(b"070702");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name_z.as_bytes());
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(&data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}
