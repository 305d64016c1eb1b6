//! The agent's decisions about an action, without touching the device or the network: what
//! the deployment is, whether the advertisement matches what the publisher signed, whether
//! this device meets the program's requirements, whether its version may be installed, and
//! when and whether the program runs. Each is a pure function of the deployment, the signed
//! manifest and the device's facts, so every branch has a unit test.

use dm_shared::ddi::{self, Chunk, Deployment, Handling, WindowState};
use dm_shared::manifest::Manifest;
use dm_shared::message::MessageId;
use dm_shared::programs::SignedProgram;
use dm_shared::vocab::{DeviceClass, PackageKind};
use dm_shared::{ClientVersion, Platform, StatusCode};

/// Why an action ends before anything is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status message reporting it.
    pub message_id: MessageId,
    /// The status code.
    pub code: StatusCode,
    /// What is wrong, for people.
    pub text: String,
}

impl Refusal {
    fn unsupported(text: String) -> Refusal {
        Refusal {
            message_id: MessageId::UNSUPPORTED_PACKAGE,
            code: StatusCode::DM_E_UNSUPPORTED_PACKAGE,
            text,
        }
    }
}

/// The one package of a deployment and its kind: from the chunk's `part`, or, for a part of
/// another server's vocabulary (`os`, `application`, …) whose one artifact is a `.dmpkg`
/// bundle, `None`: the signed manifest says.
pub fn classify(d: &Deployment) -> Result<(&Chunk, Option<PackageKind>), Refusal> {
    let chunk = match d.chunks.as_slice() {
        [] => return Err(Refusal::unsupported("the deployment has no package".into())),
        [one] => one,
        many => {
            return Err(Refusal::unsupported(format!(
                "the deployment has {} packages; one per advertisement is supported",
                many.len()
            )));
        }
    };
    if let Some(kind) = PackageKind::from_part(&chunk.part) {
        return Ok((chunk, Some(kind)));
    }
    match chunk.artifacts.as_slice() {
        [_] if bundle_candidate(chunk) => Ok((chunk, None)),
        _ => Err(Refusal::unsupported(format!(
            "package kind {:?} is not one this client knows, and the package is not one signed .dmpkg bundle",
            chunk.part
        ))),
    }
}

/// Whether the server sent any of this project's metadata (`dm.*`): `dmmp` always does;
/// another DDI server does not, and then the signed bundle is the whole truth.
pub fn has_server_metadata(chunk: &Chunk) -> bool {
    chunk.metadata.iter().any(|m| m.key.starts_with(ddi::meta::PREFIX))
}

/// Whether a chunk of one artifact is taken as a bundle: named `.dmpkg`, or from a server
/// that knows nothing of this project (its content then says whether it is one: the bundle
/// reader refuses anything else).
pub fn bundle_candidate(chunk: &Chunk) -> bool {
    let suffix = format!(".{}", dm_shared::bundle::EXTENSION);
    match chunk.artifacts.as_slice() {
        [one] => one.filename.ends_with(&suffix) || !has_server_metadata(chunk),
        _ => false,
    }
}

/// Whether `s`, a chunk's name or version, is only its artifact's file name (with or without
/// its extension) or nothing: what a server that knows nothing of the package says.
fn only_file_name(chunk: &Chunk, s: &str) -> bool {
    s.is_empty()
        || chunk.artifacts.iter().any(|a| {
            s == a.filename || a.filename.rsplit_once('.').is_some_and(|(stem, _)| s == stem)
        })
}

impl Refusal {
    fn mismatch(text: String) -> Refusal {
        Refusal {
            message_id: MessageId::ADVERTISEMENT_MISMATCH,
            code: StatusCode::DM_E_ADVERTISEMENT_MISMATCH,
            text,
        }
    }
}

/// Checks the advertisement against the signed manifest: the same package name, version and
/// kind; the program it names is one the publisher signed (client deployments carry none), and
/// a command it states is exactly the signed one. Returns the signed program to run.
pub fn match_advertisement<'m>(
    chunk: &Chunk,
    kind: PackageKind,
    m: &'m Manifest,
) -> Result<Option<&'m SignedProgram>, Refusal> {
    // A server without this project's metadata names the chunk after its file: that is no
    // claim about the package, and the signed manifest says what it is.
    let bare = !has_server_metadata(chunk);
    let name_ok = chunk.name == m.name || (bare && only_file_name(chunk, &chunk.name));
    let version_ok =
        chunk.version == m.version.to_string() || (bare && only_file_name(chunk, &chunk.version));
    if !name_ok || !version_ok || kind != m.kind {
        return Err(Refusal::mismatch(format!(
            "the advertisement says {} {} ({}) but the signed package is {} {} ({}); nothing ran",
            chunk.name, chunk.version, kind, m.name, m.version, m.kind
        )));
    }
    // A client deployment, and a configuration package of items, carry no program: what
    // the device does with them is its own.
    let itemized = kind == PackageKind::Configuration
        && m.metadata
            .as_ref()
            .is_some_and(|md| md.get(dm_shared::config_item::MANIFEST_KEY).is_some());
    if kind == PackageKind::ClientDeployment || itemized {
        return Ok(None);
    }
    let Some(name) = chunk.meta(ddi::meta::PROGRAM) else {
        return m.default_program().map(Some).ok_or_else(|| {
            let signed: Vec<&str> = m.programs.iter().map(|p| p.name.as_str()).collect();
            Refusal {
                message_id: MessageId::ADVERTISEMENT_MISMATCH,
                code: StatusCode::DM_E_PROGRAM_NOT_SIGNED,
                text: format!(
                    "the server names no program, and {} {} signs {} with none marked default (dmpack --default-program); nothing ran",
                    m.name,
                    m.version,
                    if signed.is_empty() { "none".into() } else { signed.join(", ") }
                ),
            }
        });
    };
    let Some(program) = m.program(name) else {
        let signed: Vec<&str> = m.programs.iter().map(|p| p.name.as_str()).collect();
        return Err(Refusal {
            message_id: MessageId::ADVERTISEMENT_MISMATCH,
            code: StatusCode::DM_E_PROGRAM_NOT_SIGNED,
            text: format!(
                "the advertisement names program {name:?}, which {} {} does not sign (it signs {}); nothing ran",
                m.name,
                m.version,
                if signed.is_empty() { "none".into() } else { signed.join(", ") }
            ),
        });
    };
    if let Some(stated) = chunk.meta(ddi::meta::COMMAND) {
        let same = serde_json::from_str::<Vec<String>>(stated).is_ok_and(|c| c == program.command);
        if !same {
            return Err(Refusal::mismatch(format!(
                "the advertisement states the command {:?}, but program {} is signed to run {}; nothing ran",
                stated.chars().take(200).collect::<String>(),
                program.name,
                program.display()
            )));
        }
    }
    Ok(Some(program))
}

/// The maximum run time: the signed one, shortened by the advertisement's when it says less.
pub fn max_run_time(chunk: &Chunk, program: &SignedProgram) -> u64 {
    let asked = chunk.meta(ddi::meta::MAX_RUN_TIME).and_then(|s| s.parse::<u64>().ok());
    asked.map_or(program.max_run_time, |a| a.clamp(1, program.max_run_time))
}

/// The longest soak a server may ask for (30 days, as `dmmp rollout create` allows).
pub const MAX_SOAK: u64 = 30 * 86_400;

/// The soak a rollout asks for (`dm.soak`), capped at [`MAX_SOAK`]; 0 when the server says
/// none or nothing readable.
pub fn soak(chunk: &Chunk) -> u64 {
    chunk.meta(ddi::meta::SOAK).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0).min(MAX_SOAK)
}

/// Checks that `version` does not take the package below the highest version the device has
/// had, unless the advertisement allows it.
pub fn check_version(
    name: &str,
    version: ClientVersion,
    highest: Option<ClientVersion>,
    allow_downgrade: bool,
) -> Result<(), Refusal> {
    match highest {
        Some(h) if version < h && !allow_downgrade => Err(Refusal {
            message_id: MessageId::DOWNGRADE_REFUSED,
            code: StatusCode::DM_E_DOWNGRADE,
            text: format!(
                "{name} {version} is older than {h}, which this device has had; versions never go backwards unless the advertisement allows a downgrade"
            ),
        }),
        _ => Ok(()),
    }
}

/// What a program asks of the device it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// The platforms it runs on; empty means any.
    pub platforms: Vec<String>,
    /// The class of device it is for (`None`: a class this client does not know).
    pub device_class: Result<DeviceClass, String>,
}

impl Requirements {
    /// The requirements the chunk's metadata states (`dm.platforms`, `dm.device-class`).
    pub fn of_chunk(chunk: &Chunk) -> Requirements {
        let platforms = chunk.meta(ddi::meta::PLATFORMS).unwrap_or("any");
        let platforms = if platforms == "any" {
            Vec::new()
        } else {
            platforms.split(',').map(|p| p.trim().to_string()).collect()
        };
        let class = chunk.meta(ddi::meta::DEVICE_CLASS).unwrap_or("mobile");
        Requirements { platforms, device_class: class.parse().map_err(|_| class.to_string()) }
    }

    /// The requirements the publisher signed.
    pub fn of_program(p: &SignedProgram) -> Requirements {
        Requirements {
            platforms: p.platforms.iter().map(|p| p.to_string()).collect(),
            device_class: Ok(p.device_class),
        }
    }

    /// Whether this device (its platform and class) may run the program.
    pub fn check(&self, platform: &Platform, class: DeviceClass) -> Result<(), Refusal> {
        if !self.platforms.is_empty() && !self.platforms.iter().any(|p| p == platform.as_str()) {
            return Err(Refusal {
                message_id: MessageId::WRONG_PLATFORM,
                code: StatusCode::ERROR_INSTALL_PLATFORM_UNSUPPORTED,
                text: format!(
                    "requirements not met: the program is for {}; this device is {platform}",
                    self.platforms.join(",")
                ),
            });
        }
        let wanted = match &self.device_class {
            Ok(c) if *c == class => return Ok(()),
            Ok(c) => c.as_str().to_string(),
            Err(other) => other.clone(),
        };
        Err(Refusal {
            message_id: MessageId::WRONG_DEVICE_CLASS,
            code: StatusCode::DM_E_WRONG_DEVICE_CLASS,
            text: format!(
                "requirements not met: the program is for {wanted} devices; this is a {class} device"
            ),
        })
    }
}

/// When the program of a deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The server says not to download yet: nothing happens this time.
    NotYet,
    /// Download (if not done) and run it now.
    Now,
    /// A download-only advertisement: done once the content is on the device.
    DownloadOnly,
    /// An available program: it waits for the device's user (`dmsvc run`).
    WaitForUser,
    /// A mandatory program outside its maintenance window.
    WaitForWindow,
}

/// When the deployment's program runs: mandatory ones at once unless their maintenance window
/// is closed, available ones when the device's user asks (`run_requested`), download-only ones
/// never.
pub fn schedule(d: &Deployment, run_requested: bool) -> When {
    if run_requested {
        return When::Now;
    }
    if d.download == Handling::Skip {
        return When::NotYet;
    }
    let window_closed = d.maintenance_window == Some(WindowState::Unavailable);
    match d.update {
        Handling::Forced if !window_closed => When::Now,
        Handling::Attempt => When::WaitForUser,
        Handling::Skip if !window_closed && d.maintenance_window.is_none() => When::DownloadOnly,
        Handling::Forced | Handling::Skip => When::WaitForWindow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_shared::ddi::Metadata;

    fn chunk(part: &str, meta: &[(&str, &str)]) -> Chunk {
        Chunk {
            part: part.into(),
            version: "1.0.0.0".into(),
            name: "tools".into(),
            artifacts: vec![],
            metadata: meta
                .iter()
                .map(|(k, v)| Metadata { key: k.to_string(), value: v.to_string() })
                .collect(),
        }
    }

    fn deployment(
        download: Handling,
        update: Handling,
        window: Option<WindowState>,
        chunks: Vec<Chunk>,
    ) -> Deployment {
        Deployment { download, update, chunks, maintenance_window: window }
    }

    #[test]
    fn classify_takes_exactly_one_known_package() {
        let one =
            deployment(Handling::Forced, Handling::Forced, None, vec![chunk("configuration", &[])]);
        assert_eq!(classify(&one).unwrap().1, Some(PackageKind::Configuration));
        let upgrade = deployment(
            Handling::Forced,
            Handling::Forced,
            None,
            vec![chunk("client-upgrade", &[])],
        );
        assert_eq!(classify(&upgrade).unwrap().1, Some(PackageKind::ClientDeployment));
        // Another server's part, holding one signed bundle: the manifest will say.
        let bundle = |name: &str| dm_shared::ddi::Artifact {
            filename: name.into(),
            hashes: Default::default(),
            size: 1,
            links: Default::default(),
        };
        let os = Chunk { artifacts: vec![bundle("tools-1.0.0.0.dmpkg")], ..chunk("os", &[]) };
        let d = deployment(Handling::Forced, Handling::Forced, None, vec![os]);
        assert_eq!(classify(&d).unwrap().1, None);
        // Without this project's metadata, one artifact of any name may be a bundle: its content
        // says (the bundle reader refuses anything else).
        let any_name = Chunk { artifacts: vec![bundle("rootfs.bin")], ..chunk("os", &[]) };
        let d = deployment(Handling::Forced, Handling::Forced, None, vec![any_name]);
        assert_eq!(classify(&d).unwrap().1, None);
        let raw = Chunk {
            artifacts: vec![bundle("rootfs.swu")],
            ..chunk("os", &[("dm.advertisement", "7")])
        };
        for (chunks, why) in [
            (vec![], "no package"),
            (vec![chunk("configuration", &[]), chunk("configuration", &[])], "2 packages"),
            (vec![chunk("os", &[])], "\"os\" is not one this client knows"),
            (vec![raw], "not one signed .dmpkg bundle"),
        ] {
            let r = classify(&deployment(Handling::Forced, Handling::Forced, None, chunks))
                .unwrap_err();
            assert_eq!(r.message_id, MessageId::UNSUPPORTED_PACKAGE);
            assert!(r.text.contains(why), "{}", r.text);
        }
    }

    #[test]
    fn requirements_check_platform_then_class() {
        let here = Platform::parse("linux-aarch64").unwrap();
        let any = Requirements::of_chunk(&chunk("software-distribution", &[]));
        assert_eq!(any.platforms, Vec::<String>::new());
        assert!(any.check(&here, DeviceClass::Mobile).is_ok());
        let desktop = any.check(&here, DeviceClass::Desktop).unwrap_err();
        assert_eq!(desktop.message_id, MessageId::WRONG_DEVICE_CLASS);
        assert!(desktop.text.contains("for mobile devices; this is a desktop device"));

        let arm = Requirements::of_chunk(&chunk(
            "software-distribution",
            &[("dm.platforms", "linux-armv7, linux-aarch64"), ("dm.device-class", "Desktop")],
        ));
        assert!(arm.check(&here, DeviceClass::Desktop).is_ok());
        let other = Platform::parse("linux-x86_64").unwrap();
        let r = arm.check(&other, DeviceClass::Desktop).unwrap_err();
        assert_eq!(
            (r.message_id, r.code),
            (MessageId::WRONG_PLATFORM, StatusCode::ERROR_INSTALL_PLATFORM_UNSUPPORTED)
        );

        let odd = Requirements::of_chunk(&chunk(
            "software-distribution",
            &[("dm.device-class", "tablet")],
        ));
        let r = odd.check(&here, DeviceClass::Mobile).unwrap_err();
        assert!(r.text.contains("for tablet devices"), "{}", r.text);
    }

    fn signed() -> Manifest {
        let program = SignedProgram {
            name: "install".into(),
            command: vec!["install.sh".into(), "--quiet".into()],
            max_run_time: 600,
            platforms: vec![],
            device_class: DeviceClass::Mobile,
            environment: Default::default(),
            default: false,
            health_check: false,
        };
        Manifest {
            format: dm_shared::manifest::FORMAT.into(),
            kind: PackageKind::SoftwareDistribution,
            name: "tools".into(),
            version: ClientVersion::new(1, 0, 0, 0),
            platforms: vec![],
            created: String::new(),
            files: vec![],
            programs: vec![program],
            metadata: None,
        }
    }

    fn bare(name: &str, version: &str, file: &str) -> Chunk {
        let mut c = chunk("os", &[]);
        c.name = name.into();
        c.version = version.into();
        c.artifacts = vec![dm_shared::ddi::Artifact {
            filename: file.into(),
            hashes: Default::default(),
            size: 1,
            links: Default::default(),
        }];
        c
    }

    #[test]
    fn a_server_without_our_metadata_leaves_the_signed_bundle_the_whole_truth() {
        let mut m = signed();
        let kind = PackageKind::SoftwareDistribution;
        // Named after its file (any extension: the content says it is a bundle).
        let c = bare("tools-1.0.bin", "tools-1.0.bin", "tools-1.0.bin");
        let d = Deployment {
            download: dm_shared::ddi::Handling::Forced,
            update: dm_shared::ddi::Handling::Forced,
            chunks: vec![c.clone()],
            maintenance_window: None,
        };
        assert_eq!(classify(&d).unwrap().1, None);
        assert!(bundle_candidate(&c));
        assert_eq!(
            match_advertisement(&c, kind, &m).unwrap().unwrap().name,
            "install",
            "the only program"
        );
        assert!(match_advertisement(&bare("tools-1.0", "", "tools-1.0.dmpkg"), kind, &m).is_ok());
        // What the server does say must still be the signed truth.
        let r = match_advertisement(&bare("other", "1.0.0.0", "tools.bin"), kind, &m).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_ADVERTISEMENT_MISMATCH);
        let r = match_advertisement(&bare("tools", "2.0.0.0", "tools.bin"), kind, &m).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_ADVERTISEMENT_MISMATCH);
        assert!(match_advertisement(&bare("tools", "1.0.0.0", "tools.bin"), kind, &m).is_ok());
        // Several programs: the default one, or a clear refusal.
        let mut second = m.programs[0].clone();
        second.name = "remove".into();
        m.programs.push(second);
        let r = match_advertisement(&c, kind, &m).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_PROGRAM_NOT_SIGNED);
        assert!(
            r.text.contains("names no program") && r.text.contains("install, remove"),
            "{}",
            r.text
        );
        // A health check is never the program a bare server's chunk runs.
        m.programs[1].health_check = true;
        assert_eq!(match_advertisement(&c, kind, &m).unwrap().unwrap().name, "install");
        assert_eq!(m.health_check().unwrap().name, "remove");
        m.programs[1].health_check = false;
        m.programs[1].default = true;
        assert_eq!(match_advertisement(&c, kind, &m).unwrap().unwrap().name, "remove");
        // dmmp's chunks name their program, and are compared as before.
        let named = chunk("software-distribution", &[("dm.program", "install")]);
        assert_eq!(match_advertisement(&named, kind, &m).unwrap().unwrap().name, "install");
        assert!(!bundle_candidate(&named), "no artifact");
    }

    #[test]
    fn the_advertisement_must_match_what_was_signed() {
        let m = signed();
        let kind = PackageKind::SoftwareDistribution;
        let ok = chunk("software-distribution", &[("dm.program", "install")]);
        assert_eq!(match_advertisement(&ok, kind, &m).unwrap().unwrap().name, "install");
        let with_command = chunk(
            "software-distribution",
            &[("dm.program", "install"), ("dm.command", r#"["install.sh","--quiet"]"#)],
        );
        assert!(match_advertisement(&with_command, kind, &m).is_ok());

        let changed = chunk(
            "software-distribution",
            &[("dm.program", "install"), ("dm.command", "rm -rf /")],
        );
        let r = match_advertisement(&changed, kind, &m).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_ADVERTISEMENT_MISMATCH);
        assert!(r.text.contains("signed to run install.sh --quiet"), "{}", r.text);

        let unknown = chunk("software-distribution", &[("dm.program", "wipe")]);
        let r = match_advertisement(&unknown, kind, &m).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_PROGRAM_NOT_SIGNED);
        assert!(r.text.contains("it signs install"), "{}", r.text);

        let mut other = ok.clone();
        other.version = "2.0.0.0".into();
        let r = match_advertisement(&other, kind, &m).unwrap_err();
        assert_eq!(r.code, StatusCode::DM_E_ADVERTISEMENT_MISMATCH);
        let mut renamed = ok.clone();
        renamed.name = "toolz".into();
        assert!(match_advertisement(&renamed, kind, &m).is_err());
        assert!(match_advertisement(&ok, PackageKind::Configuration, &m).is_err());
    }

    #[test]
    fn servers_narrow_and_never_widen() {
        let m = signed();
        let p = &m.programs[0];
        let c = |v: &str| chunk("software-distribution", &[("dm.max-run-time", v)]);
        assert_eq!(max_run_time(&c("60"), p), 60);
        assert_eq!(max_run_time(&c("999999"), p), 600, "never longer than signed");
        assert_eq!(max_run_time(&c("0"), p), 1);
        assert_eq!(max_run_time(&chunk("software-distribution", &[]), p), 600);
        let soaked = |v: &str| soak(&chunk("software-distribution", &[("dm.soak", v)]));
        assert_eq!((soaked("600"), soaked("-1"), soaked("x")), (600, 0, 0));
        assert_eq!(soaked("99999999999"), MAX_SOAK, "capped");
        let r = Requirements::of_program(p);
        assert!(r.check(&Platform::current(), DeviceClass::Mobile).is_ok());
        assert!(r.check(&Platform::current(), DeviceClass::Desktop).is_err());
    }

    #[test]
    fn versions_never_go_backwards_unless_allowed() {
        let v = |s: &str| s.parse::<ClientVersion>().unwrap();
        assert!(check_version("tools", v("1.0.0.0"), None, false).is_ok());
        assert!(check_version("tools", v("1.0.0.0"), Some(v("1.0.0.0")), false).is_ok());
        assert!(check_version("tools", v("1.1.0.0"), Some(v("1.0.0.0")), false).is_ok());
        let r = check_version("tools", v("0.9.0.0"), Some(v("1.0.0.0")), false).unwrap_err();
        assert_eq!(
            (r.code, r.message_id),
            (StatusCode::DM_E_DOWNGRADE, MessageId::DOWNGRADE_REFUSED)
        );
        assert!(check_version("tools", v("0.9.0.0"), Some(v("1.0.0.0")), true).is_ok());
    }

    #[test]
    fn schedule_follows_the_advertisement_kind_and_window() {
        use Handling::*;
        use WindowState::*;
        let s = |download, update, window, asked| {
            schedule(&deployment(download, update, window, vec![]), asked)
        };
        // Mandatory.
        assert_eq!(s(Forced, Forced, None, false), When::Now);
        assert_eq!(s(Forced, Forced, Some(Available), false), When::Now);
        assert_eq!(s(Forced, Skip, Some(Unavailable), false), When::WaitForWindow);
        assert_eq!(s(Forced, Forced, Some(Unavailable), false), When::WaitForWindow);
        // Available.
        assert_eq!(s(Attempt, Attempt, None, false), When::WaitForUser);
        assert_eq!(s(Attempt, Attempt, None, true), When::Now);
        // Download only.
        assert_eq!(s(Forced, Skip, None, false), When::DownloadOnly);
        // Not yet: nothing is downloaded unless the user asks.
        assert_eq!(s(Skip, Forced, None, false), When::NotYet);
        assert_eq!(s(Skip, Attempt, None, true), When::Now);
    }
}
