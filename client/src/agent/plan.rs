//! The agent's decisions about an action, without touching the device or the network: what
//! the deployment is, whether this device meets the program's requirements, and when the
//! program runs. Each is a pure function of the deployment and the device's facts, so every
//! branch has a unit test.

use dm_shared::ddi::{self, Chunk, Deployment, Handling, WindowState};
use dm_shared::message::MessageId;
use dm_shared::vocab::{DeviceClass, PackageKind};
use dm_shared::{Platform, StatusCode};

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

/// The one package of a deployment and its kind.
pub fn classify(d: &Deployment) -> Result<(&Chunk, PackageKind), Refusal> {
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
    let kind = PackageKind::from_part(&chunk.part).ok_or_else(|| {
        Refusal::unsupported(format!("package kind {:?} is not supported", chunk.part))
    })?;
    Ok((chunk, kind))
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
        assert_eq!(classify(&one).unwrap().1, PackageKind::Configuration);
        let upgrade = deployment(
            Handling::Forced,
            Handling::Forced,
            None,
            vec![chunk("client-upgrade", &[])],
        );
        assert_eq!(classify(&upgrade).unwrap().1, PackageKind::ClientDeployment);
        for (chunks, why) in [
            (vec![], "no package"),
            (vec![chunk("configuration", &[]), chunk("configuration", &[])], "2 packages"),
            (vec![chunk("os", &[])], "\"os\" is not supported"),
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
