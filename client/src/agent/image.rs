//! System images: an artifact that is a SWUpdate image (a cpio archive whose first entry is
//! `sw-description`) or a RAUC bundle (a signed squashfs) is installed by the device's own
//! update engine, which checks the image's signature itself and writes the slot the device does
//! not run from. What the agent adds: it recognises the image by its first bytes before the
//! download, refuses when the engine is missing or would check no signature, hands the file to
//! the engine with a deadline, reports the engine's verdict in the engine's own words, and,
//! after the device restarted, asks the engine whether it runs the new system (RAUC: the booted
//! slot is the one installed, then marked good; SWUpdate: its update state variable in the
//! bootloader environment) before it reports success.
//!
//! The decisions ([`sniff`], [`judge_install`], [`judge_restart`]) are pure functions with
//! unit tests; the rest runs the engines' programs through [`super::tool`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dm_shared::StatusCode;
use dm_shared::fs as dmfs;
use dm_shared::message::MessageId;
use dm_shared::settings::SystemImages;
use serde::{Deserialize, Serialize};

use super::plan::Refusal;
use super::tool::{self, ToolRun};

/// The bytes read from the server to recognise an image before it is downloaded.
pub const SNIFF_BYTES: u64 = 512;
/// How long a status query of an engine may take.
const QUERY_DEADLINE: Duration = Duration::from_secs(60);
/// The engine's last lines kept in a report.
const EXCERPT_LINES: usize = 12;
/// The longest line of an excerpt.
const MAX_LINE: usize = 300;

/// An update engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// SWUpdate (`swupdate -i`).
    Swupdate,
    /// RAUC (`rauc install`).
    Rauc,
}

impl Engine {
    /// Its name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Swupdate => "SWUpdate",
            Engine::Rauc => "RAUC",
        }
    }
}

/// Which engine installs a file that starts with `head`, if it is an image at all: a cpio
/// archive (`070701` or `070702`) whose first entry is `sw-description` is SWUpdate's; a
/// squashfs (`hsqs`) is a RAUC bundle. Anything else is not an image.
pub fn sniff(head: &[u8]) -> Option<Engine> {
    if head.starts_with(b"hsqs") {
        return Some(Engine::Rauc);
    }
    if !(head.starts_with(b"070701") || head.starts_with(b"070702")) || head.len() < 110 {
        return None;
    }
    let hex = |range: std::ops::Range<usize>| {
        std::str::from_utf8(&head[range]).ok().and_then(|s| u32::from_str_radix(s, 16).ok())
    };
    let namesize = hex(94..102)? as usize;
    let name = head.get(110..110 + namesize)?;
    (name == b"sw-description\0").then_some(Engine::Swupdate)
}

/// The version a SWUpdate image's `sw-description` states (its first `version = "…"`), for the
/// log and the report: SWUpdate itself checks what it needs to.
pub fn swu_version(file: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(file).ok()?.take(64 * 1024).read_to_end(&mut head).ok()?;
    swu_version_of(&head)
}

/// [`swu_version`] of an image's first bytes: the first cpio entry's data, read as libconfig.
pub fn swu_version_of(head: &[u8]) -> Option<String> {
    let hex = |r: std::ops::Range<usize>| {
        std::str::from_utf8(head.get(r)?).ok().and_then(|s| u32::from_str_radix(s, 16).ok())
    };
    let size = hex(54..62)? as usize;
    let namesize = hex(94..102)? as usize;
    let start = 110usize.checked_add(namesize)?.next_multiple_of(4);
    let text = String::from_utf8_lossy(head.get(start..start.checked_add(size)?)?).into_owned();
    config_value(&text, "version")
}

/// The first `key = "value"` (or `key: "value"`) of a libconfig text, comments aside: how
/// SWUpdate's configuration names its public key and bootloader, and `sw-description` its
/// version.
pub fn config_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split("//").next().unwrap_or("").split('#').next().unwrap_or("");
        let at = line.find(key)?;
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return None;
        }
        let rest = line[at + key.len()..].trim_start();
        let rest = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?.trim_start();
        let value = rest.strip_prefix('"')?;
        Some(value[..value.find('"')?].to_string())
    })
}

/// The engine as this device has it set up, checked before anything is downloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// Which engine.
    pub engine: Engine,
    /// Its program.
    pub program: PathBuf,
    /// The arguments before the image (`-f`, `-k`, `-H` for SWUpdate).
    pub args: Vec<String>,
    /// SWUpdate's bootloader interface (`uboot`, `none`, …), where its update state is kept.
    pub bootloader: Option<String>,
}

fn refusal(code: StatusCode, text: String) -> Refusal {
    Refusal { message_id: MessageId::IMAGE_FAILED, code, text }
}

/// How the device's `engine` is set up, or why the image is refused before the download: the
/// engine is missing, or (SWUpdate) it has no public key and `AllowUnsignedImages` is off.
pub fn setup(engine: Engine, s: &SystemImages) -> Result<Setup, Refusal> {
    let (setting, command) = match engine {
        Engine::Swupdate => ("SWUpdateCommand", &s.swupdate_command),
        Engine::Rauc => ("RaucCommand", &s.rauc_command),
    };
    let Some(program) = tool::find_program(command) else {
        let text = format!(
            "the image is a {} image, and this device has no {} ({setting} = {command}: not found or not executable); nothing was downloaded",
            engine.name(),
            engine.name()
        );
        return Err(refusal(StatusCode::DM_E_IMAGE_ENGINE_MISSING, text));
    };
    if engine == Engine::Rauc {
        // RAUC always checks a bundle against the keyring of its system.conf.
        return Ok(Setup { engine, program, args: Vec::new(), bootloader: None });
    }
    let mut args = Vec::new();
    let config = Path::new(&s.swupdate_config);
    let text = match dmfs::read_optional(config, 256 * 1024) {
        Ok(Some(b)) => {
            args.extend(["-f".to_string(), s.swupdate_config.clone()]);
            String::from_utf8_lossy(&b).into_owned()
        }
        Ok(None) => String::new(),
        Err(e) => return Err(refusal(StatusCode::DM_E_IMAGE_UNVERIFIED, e.to_string())),
    };
    let key = s.swupdate_public_key.clone().or_else(|| config_value(&text, "public-key-file"));
    match key {
        Some(k) if Path::new(&k).is_file() => args.extend(["-k".to_string(), k]),
        Some(k) => {
            let text = format!(
                "SWUpdate's public key {k} does not exist: SWUpdate could not check the image's signature; nothing was downloaded"
            );
            return Err(refusal(StatusCode::DM_E_IMAGE_UNVERIFIED, text));
        }
        None if s.allow_unsigned => log::warn!(
            "SWUpdate has no public key (SWUpdatePublicKey, or public-key-file in {}): it checks no signature, and AllowUnsignedImages lets the image through",
            config.display()
        ),
        None => {
            let text = format!(
                "SWUpdate is set up without signature checking (no SWUpdatePublicKey, no public-key-file in {}); set one, or AllowUnsignedImages = true; nothing was downloaded",
                config.display()
            );
            return Err(refusal(StatusCode::DM_E_IMAGE_UNVERIFIED, text));
        }
    }
    if let Some(hw) = &s.swupdate_hardware {
        args.extend(["-H".to_string(), hw.clone()]);
    }
    let bootloader = config_value(&text, "bootloader");
    Ok(Setup { engine, program, args, bootloader })
}

/// What the agent remembers of an image it installed, until the restart confirms it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    /// The engine that installed it.
    pub engine: Engine,
    /// The boot it was installed in.
    pub boot_id: String,
    /// RAUC: the slot it went to (the primary after the install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// SWUpdate: its bootloader interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<String>,
    /// The image's version, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Why an engine did not install an image: a status code and the engine's words.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The status code.
    pub code: StatusCode,
    /// What happened.
    pub text: String,
    /// The engine's last lines.
    pub excerpt: Vec<String>,
}

/// The engine's last lines, each cut to a readable length.
pub fn excerpt(run: &ToolRun) -> Vec<String> {
    run.tail(EXCERPT_LINES).into_iter().map(|l| l.chars().take(MAX_LINE).collect()).collect()
}

/// The lines in which an engine says what went wrong: SWUpdate's `ERROR` lines, RAUC's
/// `LastError:` (not its progress lines, which name every step, "Verifying signature" too).
fn error_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("ERROR") || l.starts_with("LastError:") || l.starts_with("error:"))
        .collect()
}

/// Judges an engine's install run: `Ok` when it exited 0, else the failure with the code that
/// says why: a signal or the deadline, the engine crashed; its error lines naming a signature,
/// or other hardware; anything else, the install failed.
pub fn judge_install(engine: Engine, run: &ToolRun) -> Result<(), Failure> {
    if run.succeeded() {
        return Ok(());
    }
    let errors = error_lines(&run.output);
    let lower = errors.join("\n").to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let code = if run.status.is_none() || run.signal().is_some() {
        StatusCode::DM_E_IMAGE_ENGINE_CRASHED
    } else if says(&["signature", "not signed"]) {
        StatusCode::DM_E_IMAGE_SIGNATURE
    } else if says(&[
        "not compatible with hardware",
        "hardware compatibility",
        "compatible mismatch",
    ]) {
        StatusCode::DM_E_IMAGE_HARDWARE
    } else {
        StatusCode::DM_E_IMAGE_INSTALL
    };
    let ex = excerpt(run);
    // The first error line says why; those after it say that the install failed.
    let why = errors.first().copied().or(ex.last().map(String::as_str)).unwrap_or("no output");
    let text = format!(
        "{} did not install the image ({}): {}",
        engine.name(),
        run.end(),
        why.chars().take(MAX_LINE).collect::<String>()
    );
    Err(Failure { code, text, excerpt: ex })
}

/// What the engine says about the system after a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineState {
    /// SWUpdate's update state variable (`ustate`): `0` ok, `1` installed, `2` testing,
    /// `3` failed, …; `None`: not set.
    Swupdate(Option<String>),
    /// SWUpdate with no bootloader environment: it keeps no state across a restart.
    SwupdateStateless,
    /// RAUC: the slot booted (its name), and whether it is the one installed.
    Rauc {
        /// The booted slot's name, as `rauc status` says.
        booted: Option<String>,
    },
}

/// Whether an installed image is confirmed, failed, or still waits for the restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The device has not restarted since the install.
    Waiting,
    /// Runs the new system; the engine is to be told it is good (`confirm` is `true`) or
    /// already says so.
    Confirmed {
        /// Whether the engine must be told the system is good.
        confirm: bool,
        /// What happened.
        text: String,
    },
    /// Fell back to the previous system, or the engine says the update failed.
    FellBack(String),
}

/// Judges an installed image after a look at the boot and the engine.
pub fn judge_restart(rec: &Installed, boot_now: &str, state: &EngineState) -> Verdict {
    if boot_now == rec.boot_id {
        return Verdict::Waiting;
    }
    let confirmed = |confirm, text: String| Verdict::Confirmed { confirm, text };
    match state {
        EngineState::SwupdateStateless => confirmed(
            false,
            "the device restarted; SWUpdate keeps no update state without a bootloader environment, so the restart is the confirmation".into(),
        ),
        EngineState::Swupdate(Some(s)) if s == "1" || s == "2" => confirmed(
            true,
            format!("the device restarted into the new system (SWUpdate's update state: {})", state_name(s)),
        ),
        EngineState::Swupdate(Some(s)) if s == "0" => {
            confirmed(false, "the device restarted and SWUpdate's update state says ok".into())
        }
        EngineState::Swupdate(s) => Verdict::FellBack(format!(
            "after the restart SWUpdate's update state is {}: the new system did not take",
            s.as_deref().map_or("not set".to_string(), |s| format!("{s} ({})", state_name(s)))
        )),
        EngineState::Rauc { booted } => match (booted, &rec.slot) {
            (Some(b), Some(want)) if b == want => {
                confirmed(true, format!("the device restarted into slot {b}, the one installed"))
            }
            (b, want) => Verdict::FellBack(format!(
                "after the restart the device runs slot {}, not {}, where the image went: it fell back to its previous system",
                b.as_deref().unwrap_or("(unknown)"),
                want.as_deref().unwrap_or("(unknown)")
            )),
        },
    }
}

/// SWUpdate's names of its update states.
fn state_name(s: &str) -> &'static str {
    match s {
        "0" => "ok",
        "1" => "installed",
        "2" => "testing",
        "3" => "failed",
        "4" => "not available",
        "5" => "error",
        "6" => "wait",
        "7" => "in progress",
        _ => "unknown",
    }
}

/// Runs `setup`'s engine on `file` within `deadline`, its output in `log`. SWUpdate's IPC
/// sockets go in `tmp`, the agent's own, so that a SWUpdate daemon on the device (or another
/// agent's run) never shares them.
pub fn install(
    setup: &Setup,
    file: &Path,
    deadline: Duration,
    log: &Path,
    tmp: &Path,
) -> Result<ToolRun, String> {
    let mut c = Command::new(&setup.program);
    match setup.engine {
        Engine::Swupdate => c.args(&setup.args).arg("-i").arg(file).env("TMPDIR", tmp),
        Engine::Rauc => c.arg("install").arg(file),
    };
    c.env("LC_ALL", "C");
    tool::run(&mut c, deadline, log)
}

/// RAUC's `status` as JSON.
fn rauc_status(program: &Path, log: &Path) -> Result<serde_json::Value, String> {
    let mut c = Command::new(program);
    c.args(["status", "--output-format=json"]);
    let run = tool::run(&mut c, QUERY_DEADLINE, log)?;
    if !run.succeeded() {
        return Err(format!("rauc status failed ({}): {}", run.end(), run.tail(3).join("; ")));
    }
    let json = run.output.lines().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(json).map_err(|e| format!("rauc status: not JSON: {e}"))
}

/// The slot RAUC will boot next (after an install, the one it wrote).
pub fn rauc_primary(program: &Path, log: &Path) -> Result<String, String> {
    primary_slot(&rauc_status(program, log)?)
        .ok_or_else(|| "rauc status names no primary slot".into())
}

/// The slot RAUC says the device booted from.
pub fn rauc_booted(program: &Path, log: &Path) -> Result<Option<String>, String> {
    Ok(booted_slot(&rauc_status(program, log)?))
}

/// `boot_primary` of `rauc status --output-format=json`.
pub fn primary_slot(status: &serde_json::Value) -> Option<String> {
    status["boot_primary"].as_str().map(str::to_string)
}

/// The name of the slot `rauc status --output-format=json` says is booted: the one whose
/// `bootname` is `booted` (or whose state is `booted`).
pub fn booted_slot(status: &serde_json::Value) -> Option<String> {
    let bootname = status["booted"].as_str()?;
    let slots = status["slots"].as_array()?;
    slots.iter().filter_map(|s| s.as_object()).flat_map(|o| o.iter()).find_map(|(name, slot)| {
        (slot["bootname"].as_str() == Some(bootname) || slot["state"].as_str() == Some("booted"))
            .then(|| name.clone())
    })
}

/// SWUpdate's update state variable, read from the bootloader environment.
fn swupdate_state(log: &Path) -> Result<Option<String>, String> {
    let program = tool::find_program("fw_printenv").ok_or(
        "fw_printenv (libubootenv-tool) is not installed: SWUpdate's update state cannot be read",
    )?;
    let mut c = Command::new(program);
    c.args(["-n", "ustate"]);
    let run = tool::run(&mut c, QUERY_DEADLINE, log)?;
    let value = run.output.lines().next().unwrap_or("").trim().to_string();
    Ok((run.succeeded() && !value.is_empty()).then_some(value))
}

/// What the engine says after a restart.
pub fn engine_state(rec: &Installed, s: &SystemImages, log: &Path) -> Result<EngineState, String> {
    match rec.engine {
        Engine::Swupdate if rec.bootloader.as_deref().is_none_or(|b| b == "none") => {
            Ok(EngineState::SwupdateStateless)
        }
        Engine::Swupdate => swupdate_state(log).map(EngineState::Swupdate),
        Engine::Rauc => {
            let program =
                tool::find_program(&s.rauc_command).ok_or("RAUC is no longer on the device")?;
            Ok(EngineState::Rauc { booted: rauc_booted(&program, log)? })
        }
    }
}

/// Tells the engine the running system is good: SWUpdate's state back to `0` (ok); RAUC's
/// booted slot marked good.
pub fn mark_good(rec: &Installed, s: &SystemImages, log: &Path) -> Result<(), String> {
    let mut c = match rec.engine {
        Engine::Swupdate => {
            let mut c =
                Command::new(tool::find_program("fw_setenv").ok_or("fw_setenv is not installed")?);
            c.args(["ustate", "0"]);
            c
        }
        Engine::Rauc => {
            let mut c = Command::new(
                tool::find_program(&s.rauc_command).ok_or("RAUC is no longer on the device")?,
            );
            c.args(["status", "mark-good", "booted"]);
            c
        }
    };
    let run = tool::run(&mut c, QUERY_DEADLINE, log)?;
    if run.succeeded() {
        Ok(())
    } else {
        Err(format!(
            "{} could not be told the system is good ({}): {}",
            rec.engine.name(),
            run.end(),
            run.tail(3).join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn cpio_head(name: &str) -> Vec<u8> {
        let mut h = b"070702".to_vec();
        for f in [1u32, 0o100644, 0, 0, 1, 0, 5, 0, 0, 0, 0, name.len() as u32 + 1, 0] {
            h.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        h
    }

    #[test]
    fn images_are_recognised_by_their_first_bytes() {
        assert_eq!(sniff(&cpio_head("sw-description")), Some(Engine::Swupdate));
        assert_eq!(sniff(&cpio_head("sw-description.sig")), None);
        assert_eq!(sniff(&cpio_head("rootfs.img")), None);
        assert_eq!(sniff(b"hsqs\x10\x00\x00\x00"), Some(Engine::Rauc));
        assert_eq!(sniff(b"manifest.json\0\0\0"), None);
        assert_eq!(sniff(b"070702"), None);
        let mut bad = cpio_head("sw-description");
        bad[94..102].copy_from_slice(b"FFFFFFFF");
        assert_eq!(sniff(&bad), None);
        bad[94..102].copy_from_slice(b"zzzzzzzz");
        assert_eq!(sniff(&bad), None);
    }

    #[test]
    fn the_version_comes_from_the_first_entry_sw_description() {
        let dir = tempfile::tempdir().unwrap();
        let desc = b"software =\n{\n\tversion = \"2.0.0\";\n}\n";
        let mut swu = cpio_head("sw-description");
        swu[54..62].copy_from_slice(format!("{:08X}", desc.len()).as_bytes());
        while swu.len() % 4 != 0 {
            swu.push(0);
        }
        swu.extend_from_slice(desc);
        swu.extend(std::iter::repeat_n(0u8, 100_000));
        let f = dir.path().join("a.swu");
        std::fs::write(&f, &swu).unwrap();
        assert_eq!(swu_version(&f).as_deref(), Some("2.0.0"));
        std::fs::write(&f, &swu[..60]).unwrap();
        assert_eq!(swu_version(&f), None);
    }

    #[test]
    fn rauc_status_names_the_primary_and_the_booted_slot() {
        // As RAUC 1.8 prints it.
        let v: serde_json::Value = serde_json::from_str(
            r#"{"compatible":"dm-test","variant":"","booted":"A","boot_primary":"rootfs.1","slots":[{"rootfs.1":{"class":"rootfs","device":"/s/b","type":"raw","bootname":"B","state":"inactive","boot_status":"good"}},{"rootfs.0":{"class":"rootfs","device":"/s/a","type":"raw","bootname":"A","state":"booted","boot_status":"good"}}]}"#,
        )
        .unwrap();
        assert_eq!(primary_slot(&v).as_deref(), Some("rootfs.1"));
        assert_eq!(booted_slot(&v).as_deref(), Some("rootfs.0"));
        assert_eq!(booted_slot(&serde_json::json!({"booted": "A", "slots": 3})), None);
        assert_eq!(booted_slot(&serde_json::json!([])), None);
    }

    #[test]
    fn config_values_are_read_as_libconfig_writes_them() {
        let cfg = "globals :\n{\n  # public-key-file = \"/commented\";\n  bootloader = \"uboot\";\n  public-key-file = \"/etc/swupdate/public.pem\"; // the key\n};\nsoftware = { version = \"2.0.1\"; };";
        assert_eq!(
            config_value(cfg, "public-key-file").as_deref(),
            Some("/etc/swupdate/public.pem")
        );
        assert_eq!(config_value(cfg, "bootloader").as_deref(), Some("uboot"));
        assert_eq!(config_value(cfg, "version").as_deref(), Some("2.0.1"));
        assert_eq!(
            config_value("x-version = \"1\";\nversion: \"2\"", "version").as_deref(),
            Some("2")
        );
        assert_eq!(config_value(cfg, "aes-key-file"), None);
        assert_eq!(config_value("version = 3;", "version"), None);
        assert_eq!(config_value("version = \"open", "version"), None);
    }

    fn run(status: Option<i32>, output: &str) -> ToolRun {
        ToolRun {
            status: status.map(std::process::ExitStatus::from_raw),
            output: output.into(),
            deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn install_runs_are_judged_by_exit_signal_and_words() {
        assert!(judge_install(Engine::Swupdate, &run(Some(0), "done")).is_ok());
        let code = |r: ToolRun| judge_install(Engine::Swupdate, &r).unwrap_err().code;
        assert_eq!(code(run(Some(11), "[INFO] installing")), StatusCode::DM_E_IMAGE_ENGINE_CRASHED);
        // RAUC names every step, "Verifying signature" too: only its error line counts.
        let compat = " 20% Verifying signature\n 40% Verifying signature done.\n100% Installing failed.\n\
                      LastError: Installation error: Compatible mismatch: Expected 'a' but bundle manifest has 'b'";
        assert_eq!(code(run(Some(256), compat)), StatusCode::DM_E_IMAGE_HARDWARE);
        let sig = " 20% Verifying signature\n 40% Verifying signature failed.\n\
                   LastError: signature verification failed: Verify error: self-signed certificate";
        assert_eq!(code(run(Some(256), sig)), StatusCode::DM_E_IMAGE_SIGNATURE);
        assert_eq!(code(run(None, "")), StatusCode::DM_E_IMAGE_ENGINE_CRASHED);
        let sig = "[ERROR] : SWUPDATE failed [0] ERROR : Signature verification failed";
        assert_eq!(code(run(Some(256), sig)), StatusCode::DM_E_IMAGE_SIGNATURE);
        let hw = "[ERROR] : SWUPDATE failed [0] ERROR : SW not compatible with hardware";
        assert_eq!(code(run(Some(256), hw)), StatusCode::DM_E_IMAGE_HARDWARE);
        assert_eq!(
            code(run(Some(256), "[ERROR] : SWUPDATE failed [0] ERROR : no space left")),
            StatusCode::DM_E_IMAGE_INSTALL
        );
        let f =
            judge_install(Engine::Rauc, &run(Some(256), "a\nLastError: oops\nerror: it failed"))
                .unwrap_err();
        assert!(f.text.contains("RAUC") && f.text.contains("LastError: oops"), "{}", f.text);
        assert_eq!(f.excerpt.len(), 3);
    }

    #[test]
    fn a_restart_is_confirmed_by_the_engine_or_is_a_fall_back() {
        let swu = Installed {
            engine: Engine::Swupdate,
            boot_id: "boot-1".into(),
            slot: None,
            bootloader: Some("uboot".into()),
            version: None,
        };
        let st = |s: &str| EngineState::Swupdate(Some(s.into()));
        assert_eq!(judge_restart(&swu, "boot-1", &st("1")), Verdict::Waiting);
        assert!(matches!(
            judge_restart(&swu, "boot-2", &st("1")),
            Verdict::Confirmed { confirm: true, .. }
        ));
        assert!(matches!(
            judge_restart(&swu, "boot-2", &st("2")),
            Verdict::Confirmed { confirm: true, .. }
        ));
        assert!(matches!(
            judge_restart(&swu, "boot-2", &st("0")),
            Verdict::Confirmed { confirm: false, .. }
        ));
        assert!(
            matches!(judge_restart(&swu, "boot-2", &st("3")), Verdict::FellBack(t) if t.contains("failed"))
        );
        assert!(matches!(
            judge_restart(&swu, "boot-2", &EngineState::Swupdate(None)),
            Verdict::FellBack(_)
        ));
        assert!(matches!(
            judge_restart(&swu, "boot-2", &EngineState::SwupdateStateless),
            Verdict::Confirmed { confirm: false, .. }
        ));
        let rauc = Installed { engine: Engine::Rauc, slot: Some("rootfs.1".into()), ..swu };
        let booted = |b: Option<&str>| EngineState::Rauc { booted: b.map(str::to_string) };
        assert_eq!(judge_restart(&rauc, "boot-1", &booted(Some("rootfs.0"))), Verdict::Waiting);
        assert!(matches!(
            judge_restart(&rauc, "boot-2", &booted(Some("rootfs.1"))),
            Verdict::Confirmed { confirm: true, .. }
        ));
        assert!(
            matches!(judge_restart(&rauc, "boot-2", &booted(Some("rootfs.0"))), Verdict::FellBack(t) if t.contains("rootfs.0"))
        );
        assert!(matches!(judge_restart(&rauc, "boot-2", &booted(None)), Verdict::FellBack(_)));
    }

    #[test]
    fn a_missing_engine_or_key_refuses_before_the_download() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = dm_shared::Settings::defaults().system_images;
        s.swupdate_command = "/nonexistent/swupdate".into();
        let r = setup(Engine::Swupdate, &s).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_IMAGE_ENGINE_MISSING);
        assert!(r.text.contains("/nonexistent/swupdate"), "{}", r.text);
        s.rauc_command = "no-such-rauc".into();
        assert_eq!(
            setup(Engine::Rauc, &s).unwrap_err().code,
            StatusCode::DM_E_IMAGE_ENGINE_MISSING
        );
        // A stand-in program: only its presence matters here.
        s.swupdate_command = "/bin/sh".into();
        s.swupdate_config = dir.path().join("none.cfg").display().to_string();
        assert_eq!(
            setup(Engine::Swupdate, &s).unwrap_err().code,
            StatusCode::DM_E_IMAGE_UNVERIFIED
        );
        s.allow_unsigned = true;
        assert!(setup(Engine::Swupdate, &s).unwrap().args.is_empty());
        let key = dir.path().join("public.pem");
        let cfg = dir.path().join("swupdate.cfg");
        std::fs::write(
            &cfg,
            format!(
                "globals: {{ public-key-file = \"{}\"; bootloader = \"uboot\"; }};",
                key.display()
            ),
        )
        .unwrap();
        s.swupdate_config = cfg.display().to_string();
        s.allow_unsigned = false;
        assert_eq!(
            setup(Engine::Swupdate, &s).unwrap_err().code,
            StatusCode::DM_E_IMAGE_UNVERIFIED
        );
        std::fs::write(&key, "key").unwrap();
        s.swupdate_hardware = Some("board:1.0".into());
        let ok = setup(Engine::Swupdate, &s).unwrap();
        let want = ["-f", cfg.to_str().unwrap(), "-k", key.to_str().unwrap(), "-H", "board:1.0"];
        assert_eq!(ok.args, want);
        assert_eq!(ok.bootloader.as_deref(), Some("uboot"));
    }
}
