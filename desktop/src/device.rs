//! One tethered device: look at it (probe), decide what to do (plan), do it (copy the
//! deployment, run its installer, fetch its logs), and record what happened (report).

use std::path::PathBuf;
use std::time::Duration;

use dm_shared::fs as dmfs;
use dm_shared::logging::{self, Program};
use dm_shared::tether::{SshTarget, TetherOutcome, TetheredDevice};
use dm_shared::{ClientVersion, Context, Platform, StatusCode, clock};
use log::{info, warn};

use crate::copy;
use crate::error::{Error, Result};
use crate::ssh::{Ssh, quote};
use crate::staged::Deployment;

/// Where a deployment waits on the device: a memory card's layout (the installer beside the
/// one bundle), in the client's state folder under the device root (root's, `0700`).
pub const REMOTE_DIR: &str = "var/lib/dm/incoming";

/// What a device says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `uname -m`.
    pub arch: String,
    /// Its platform, when `uname -m` names one this product knows.
    pub platform: Option<Platform>,
    /// Its installed client version.
    pub version: Option<ClientVersion>,
    /// Its controller id, once it has a client.
    pub controller_id: Option<String>,
}

/// The platform of a `uname -m`.
pub fn platform_of(arch: &str) -> Option<Platform> {
    let name = match arch {
        "aarch64" | "arm64" => "aarch64",
        "armv7l" | "armv7" | "armv8l" | "armhf" => "armv7",
        "x86_64" | "amd64" => "x86_64",
        _ => return None,
    };
    Platform::parse(&format!("linux-{name}")).ok()
}

/// Reads the probe script's output: `key=value` lines.
pub fn parse_facts(text: &str) -> Facts {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let arch = get("arch").unwrap_or("unknown").chars().take(32).collect::<String>();
    let version = get("client").and_then(|t| t.rsplit('/').next()?.parse().ok());
    let controller_id = get("identity")
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|v| v.get("controller_id")?.as_str().map(str::to_string))
        .filter(|id| id.len() <= 64 && id.chars().all(|c| c.is_ascii_graphic()));
    Facts { platform: platform_of(&arch), arch, version, controller_id }
}

/// Looks at the device: its architecture, client version and identity. Fails quickly when
/// the device is not connected.
pub fn probe(ssh: &Ssh, t: &SshTarget) -> Result<Facts> {
    let script = format!(
        "echo arch=$(uname -m); echo client=$(readlink {} 2>/dev/null); \
         echo identity=$(head -c 4096 {} 2>/dev/null | tr -d '\\n')",
        quote(&t.remote_path("opt/dm/current")),
        quote(&t.remote_path("var/lib/dm/identity.json")),
    );
    let out = ssh.run(t, &script, None, ssh.connect_timeout + Duration::from_secs(10))?;
    Ok(parse_facts(&out.text()))
}

/// What to do with a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Copy the deployment and run its installer.
    Install,
    /// Nothing, and say so once: a newer client is there.
    NoAction(String),
    /// Nothing to do or to say.
    Nothing(String),
}

/// Decides what to do with a device of `facts`, given the deployment's version and what was
/// done with the device before. `reconnected`: the device was not connected at the last look.
pub fn plan(
    facts: &Facts,
    bundle: ClientVersion,
    last: Option<&TetherOutcome>,
    reconnected: bool,
) -> Plan {
    let same_bundle = |o: &&TetherOutcome| o.bundle_version == Some(bundle.to_string());
    let last = last.filter(same_bundle);
    match facts.version {
        Some(v) if v > bundle => {
            let why = format!("a newer client {v} is installed than the deployment's {bundle}");
            if last.is_some_and(|o| o.result == "no-action") {
                Plan::Nothing(why)
            } else {
                Plan::NoAction(why)
            }
        }
        Some(v) if v == bundle && last.is_some_and(|o| !o.code.is_failure()) => {
            Plan::Nothing(format!("client {v} is installed"))
        }
        // Done with this deployment, yet the device does not show it (an installer that
        // exited 0 without installing): not again and again, only at the next connection.
        _ if last.is_some_and(|o| !o.code.is_failure()) && !reconnected => {
            Plan::Nothing(format!("{bundle} was installed at the last connection"))
        }
        _ => match last {
            Some(o) if o.code.is_failure() && o.result != "interrupted" && !reconnected => {
                Plan::Nothing(format!(
                    "the last install of {bundle} failed ({}); it is tried again when the device next connects",
                    o.code
                ))
            }
            _ => Plan::Install,
        },
    }
}

/// The result of an install on a device.
#[derive(Debug)]
pub struct Installed {
    /// What the device says now.
    pub facts: Facts,
    /// The installer's status.
    pub code: StatusCode,
    /// Its last words.
    pub text: String,
    /// The logs copied back to the desktop.
    pub logs: Vec<PathBuf>,
}

/// Where a deployment was copied on the device.
struct Copied {
    dir: String,
    installer: String,
    installer_sha: String,
    /// The first argument that makes the copied program the installer.
    subcommand: Option<&'static str>,
    bundle: String,
}

/// Copies the deployment to the device, runs its installer, and copies its logs back.
pub fn install(
    ctx: &Context,
    ssh: &Ssh,
    t: &SshTarget,
    facts: &Facts,
    d: &Deployment,
    deadline: Duration,
) -> Result<Installed> {
    let c = copy_deployment(ssh, t, facts, d, deadline)?;
    info!("{t}: running {} for {} {}", c.installer, d.manifest.name, d.manifest.version);
    let (code, text) = run_installer(ssh, t, &c, deadline)?;
    let logs = fetch_logs(ctx, ssh, t, deadline).unwrap_or_else(|e| {
        warn!("{t}: the device's logs were not copied back: {e}");
        Vec::new()
    });
    if code == StatusCode::S_OK || bundle_refused(code) {
        // Done, or a copy the device refused: the next connection starts from nothing.
        let clean = format!("rm -rf {}", quote(&c.dir));
        if let Err(e) = ssh.run(t, &clean, None, deadline) {
            warn!("{t}: {} was not removed: {e}", c.dir);
        }
    }
    let facts = probe(ssh, t).unwrap_or_else(|_| facts.clone());
    Ok(Installed { facts, code, text, logs })
}

/// Copies the installer for the device's platform and the bundle into [`REMOTE_DIR`].
fn copy_deployment(
    ssh: &Ssh,
    t: &SshTarget,
    facts: &Facts,
    d: &Deployment,
    deadline: Duration,
) -> Result<Copied> {
    let platform = facts
        .platform
        .clone()
        .ok_or_else(|| Error::Platform { target: t.to_string(), platform: facts.arch.clone() })?;
    let installer = d
        .installer(&platform)
        .ok_or_else(|| Error::Platform { target: t.to_string(), platform: platform.to_string() })?;
    let dir = t.remote_path(REMOTE_DIR);
    let c = Copied {
        installer: format!("{dir}/{}", installer.name),
        bundle: format!("{dir}/{}", d.file_name()),
        installer_sha: installer.sha256,
        subcommand: installer.subcommand,
        dir,
    };
    copy::push(ssh, t, &installer.local, &c.installer, Some(&c.installer_sha), deadline)?;
    copy::push(ssh, t, &d.bundle, &c.bundle, Some(&d.sha256), deadline)?;
    Ok(c)
}

/// The shell command that runs the copied installer on the device: its hash is checked again
/// just before it runs, then its exit code is printed (`exit=N`), then its last output
/// (capped).
fn installer_command(t: &SshTarget, c: &Copied) -> String {
    format!(
        "if [ \"$(sha256sum < {i} | cut -d' ' -f1)\" != {sha} ]; then \
         echo exit={bad}; echo \"{i} changed on the device after it was copied\"; exit 0; fi; \
         chmod 0755 {i} && {{ {i} {sub}--source {b} --device-root {r} > {o} 2>&1; echo \"exit=$?\"; }}; tail -c 16384 {o}; rm -f {o}",
        i = quote(&c.installer),
        sub = c.subcommand.map(|s| format!("{s} ")).unwrap_or_default(),
        sha = c.installer_sha,
        b = quote(&c.bundle),
        r = quote(&t.root),
        o = quote(&format!("{}/installer.out", c.dir)),
        bad = StatusCode::CRYPT_E_HASH_VALUE.exit_code(),
    )
}

/// The installer's status and last words from what [`installer_command`] printed; `None`
/// when it printed no exit code (the shell itself failed).
fn installer_outcome(text: &str) -> Option<(StatusCode, String)> {
    let exit: i32 =
        text.lines().find_map(|l| l.strip_prefix("exit=")).and_then(|v| v.trim().parse().ok())?;
    let code = if exit == 0 {
        StatusCode::S_OK
    } else {
        StatusCode::from_exit_code(exit).unwrap_or(StatusCode::ERROR_INSTALL_FAILURE)
    };
    let last_words = text
        .lines()
        .filter(|l| !l.starts_with("exit="))
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(500)
        .collect();
    Some((code, last_words))
}

/// Runs the copied installer (checked again just before it runs) and reads its status and
/// last words.
fn run_installer(
    ssh: &Ssh,
    t: &SshTarget,
    c: &Copied,
    deadline: Duration,
) -> Result<(StatusCode, String)> {
    let running = || format!("running {}", c.installer);
    // A connection lost while the installer runs leaves it running on the device: that is a
    // failure to report (tried again at the next connection, where setup's own lock and the
    // ClientInstallAction table make a second run safe), not a copy to resume.
    let out = ssh.run(t, &installer_command(t, c), None, deadline).map_err(|e| match e {
        Error::Connection { target, reason } => Error::Remote {
            target,
            what: running(),
            reason: format!(
                "the connection was lost while it ran ({reason}); its result is not known"
            ),
        },
        other => other,
    })?;
    installer_outcome(&out.text()).ok_or_else(|| Error::Remote {
        target: t.to_string(),
        what: running(),
        reason: format!("exit {}: {}", out.code, out.stderr.trim()),
    })
}

/// Whether the device's installer refused the copied bundle itself (its bytes or signature).
fn bundle_refused(code: StatusCode) -> bool {
    let c = code.0;
    code == StatusCode::CRYPT_E_HASH_VALUE
        || (0x8004_0211..=0x8004_0216).contains(&c)
        || code == StatusCode::DM_E_MISSING_FILE
        || code == StatusCode::DM_E_UNEXPECTED_FILE
        || code == StatusCode::DM_E_NOT_A_FILE
        || code == StatusCode::TRUST_E_NOSIGNATURE
        || code == StatusCode::TRUST_E_BAD_DIGEST
}

/// Copies the device's newest DMInstaller and DMClientSetup logs into the desktop's
/// `var/log/dm/tether/<host>_<port>/`.
fn fetch_logs(ctx: &Context, ssh: &Ssh, t: &SshTarget, deadline: Duration) -> Result<Vec<PathBuf>> {
    let log_dir = t.remote_path("var/log/dm");
    let out = ssh.run(t, &format!("ls -1 {}", quote(&log_dir)), None, deadline)?;
    let names: Vec<String> = out.text().lines().map(str::to_string).collect();
    let local_dir = ctx.layout.log_dir().join("tether").join(device_folder(t));
    dmfs::create_dir_all(&local_dir, dmfs::MODE_DIR)?;
    let mut fetched = Vec::new();
    for program in [Program::Installer, Program::ClientSetup] {
        let newest = names
            .iter()
            .filter_map(|n| Some((logging::parse_log_file_name(program, n)?, n)))
            .max()
            .map(|(_, n)| n.clone());
        let Some(name) = newest else { continue };
        let cat = format!("head -c 1048576 {}", quote(&format!("{log_dir}/{name}")));
        let out = ssh.run(t, &cat, None, deadline)?;
        let path = local_dir.join(&name);
        dmfs::write_atomic(&path, &out.stdout, dmfs::MODE_LOG)?;
        fetched.push(path);
    }
    Ok(fetched)
}

/// The desktop folder a device's logs go to: `host_port`, with anything unusual replaced.
pub fn device_folder(t: &SshTarget) -> String {
    let host: String = t
        .host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
        .collect();
    format!("{host}_{}", t.port)
}

/// The record's outcome for an install's result.
pub fn outcome(
    ctx: &Context,
    before: Option<ClientVersion>,
    r: &Installed,
    bundle: ClientVersion,
) -> TetherOutcome {
    let result = if r.code.is_failure() {
        "failed"
    } else {
        match (before, r.facts.version) {
            (_, Some(now)) if now > bundle => "no-action",
            (None, _) => "installed",
            (Some(b), _) if b < bundle => "upgraded",
            _ => "reconfigured",
        }
    };
    TetherOutcome {
        time: clock::rfc3339(ctx.clock.now()),
        result: result.into(),
        bundle_version: Some(bundle.to_string()),
        code: r.code,
        text: if r.code.is_failure() { format!("{}: {}", r.code, r.text) } else { r.text.clone() },
    }
}

/// The record's outcome for an error.
pub fn failure(ctx: &Context, e: &Error, bundle: Option<ClientVersion>) -> TetherOutcome {
    let result = match e {
        Error::HostKeyUnknown { .. } | Error::HostKeyChanged { .. } | Error::AuthFailed { .. } => {
            "refused"
        }
        Error::Connection { .. } => "interrupted",
        _ => "failed",
    };
    TetherOutcome {
        time: clock::rfc3339(ctx.clock.now()),
        result: result.into(),
        bundle_version: bundle.map(|b| b.to_string()),
        code: e.code(),
        text: e.to_string(),
    }
}

/// Updates a device's record with what it said about itself.
pub fn remember(rec: &mut TetheredDevice, facts: &Facts, now: &str) {
    rec.platform = facts.platform.as_ref().map(|p| p.to_string()).or(Some(facts.arch.clone()));
    rec.client_version = facts.version.map(|v| v.to_string());
    if facts.controller_id.is_some() {
        rec.controller_id = facts.controller_id.clone();
    }
    rec.last_seen = Some(now.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installers_status_and_last_words_come_from_its_output() {
        let ok = installer_outcome("step 6/6: running setup\nexit=0\nDMInstaller finished\n\n");
        assert_eq!(ok, Some((StatusCode::S_OK, "DMInstaller finished".to_string())));
        let (code, words) = installer_outcome("exit=5\nAccess Denied (0x80070005)\n").unwrap();
        assert_eq!(code, StatusCode::E_ACCESSDENIED);
        assert_eq!(words, "Access Denied (0x80070005)");
        assert_eq!(installer_outcome("exit=250\n").unwrap().0, StatusCode::ERROR_INSTALL_FAILURE);
        assert_eq!(installer_outcome("sh: 1: sha256sum: not found\n"), None);
    }

    #[test]
    fn the_installer_runs_as_the_one_program_with_its_subcommand() {
        let t: SshTarget = "ssh://dev@127.0.0.1:22/".parse().unwrap();
        let c = Copied {
            dir: "/var/lib/dm/incoming".into(),
            installer: "/var/lib/dm/incoming/dm_linux-aarch64".into(),
            installer_sha: "ab".repeat(32),
            subcommand: Some("installer"),
            bundle: "/var/lib/dm/incoming/dm-client-1.0.0.0.dmpkg".into(),
        };
        let cmd = installer_command(&t, &c);
        assert!(cmd.contains("dm_linux-aarch64' installer --source "), "{cmd}");
        let older = Copied { subcommand: None, ..c };
        assert!(installer_command(&t, &older).contains("dm_linux-aarch64' --source "));
    }

    fn v(s: &str) -> ClientVersion {
        s.parse().unwrap()
    }

    fn facts(version: Option<&str>) -> Facts {
        Facts {
            arch: "aarch64".into(),
            platform: platform_of("aarch64"),
            version: version.map(v),
            controller_id: None,
        }
    }

    fn done(result: &str, code: StatusCode, bundle: &str) -> TetherOutcome {
        TetherOutcome {
            time: "t".into(),
            result: result.into(),
            bundle_version: Some(bundle.into()),
            code,
            text: String::new(),
        }
    }

    #[test]
    fn the_probe_output_is_read_defensively() {
        let f = parse_facts(
            "arch=aarch64\nclient=/opt/dm/versions/1.2.0.0\nidentity={\"controller_id\": \"dev-7\"}\n",
        );
        assert_eq!(f.platform.unwrap().as_str(), "linux-aarch64");
        assert_eq!(f.version, Some(v("1.2.0.0")));
        assert_eq!(f.controller_id.as_deref(), Some("dev-7"));
        let f = parse_facts("arch=armv7l\nclient=\nidentity=\n");
        assert_eq!(f.platform.unwrap().as_str(), "linux-armv7");
        assert_eq!((f.version, f.controller_id), (None, None));
        let f =
            parse_facts("arch=mips\nclient=garbage\nidentity={\"controller_id\": \"a\\u0007b\"}");
        assert_eq!((f.platform, f.version, f.controller_id), (None, None, None));
        assert_eq!(parse_facts("").arch, "unknown");
    }

    #[test]
    fn plans_follow_versions_and_history() {
        let b = v("1.2.0.0");
        assert_eq!(plan(&facts(None), b, None, false), Plan::Install);
        assert_eq!(plan(&facts(Some("1.1.0.0")), b, None, false), Plan::Install);
        // The same version: reconfigured once, then nothing.
        assert_eq!(plan(&facts(Some("1.2.0.0")), b, None, false), Plan::Install);
        let ok = done("reconfigured", StatusCode::S_OK, "1.2.0.0");
        assert!(matches!(plan(&facts(Some("1.2.0.0")), b, Some(&ok), true), Plan::Nothing(_)));
        // An outcome for another bundle does not count.
        let old = done("installed", StatusCode::S_OK, "1.1.0.0");
        assert_eq!(plan(&facts(Some("1.2.0.0")), b, Some(&old), false), Plan::Install);
        // Newer: said once.
        assert!(matches!(plan(&facts(Some("2.0.0.0")), b, None, false), Plan::NoAction(_)));
        let said = done("no-action", StatusCode::S_OK, "1.2.0.0");
        assert!(matches!(plan(&facts(Some("2.0.0.0")), b, Some(&said), true), Plan::Nothing(_)));
        // A failure waits for the next connection; an interrupted copy resumes at once.
        let failed = done("failed", StatusCode::ERROR_INSTALL_FAILURE, "1.2.0.0");
        assert!(matches!(plan(&facts(None), b, Some(&failed), false), Plan::Nothing(_)));
        assert_eq!(plan(&facts(None), b, Some(&failed), true), Plan::Install);
        let cut = done("interrupted", StatusCode::DM_E_TETHER_CONNECTION, "1.2.0.0");
        assert_eq!(plan(&facts(None), b, Some(&cut), false), Plan::Install);
    }

    #[test]
    fn device_folders_are_plain_names() {
        let t: SshTarget = "ssh://root@fe80::1%eth0:22"
            .parse()
            .unwrap_or_else(|_| "ssh://root@[fe80::1]:2222".parse().unwrap());
        assert!(device_folder(&t).chars().all(|c| c.is_ascii_alphanumeric() || "._".contains(c)));
    }
}
