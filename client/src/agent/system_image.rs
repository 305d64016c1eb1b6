//! What the agent does with an action whose artifact is a system image, stage by stage:
//! recognise it ([`super::image::sniff`]) and check the engine before the download, download
//! it, hand it to the engine, report "pending reboot", optionally restart the device
//! (`RebootCommand`), and after the restart report what the engine says. Steps are reported as
//! DDI progress out of five steps: downloading, downloaded, installing, pending reboot,
//! confirmed.

use dm_shared::StatusCode;
use dm_shared::ddi::{Chunk, Execution};
use dm_shared::fs as dmfs;
use dm_shared::message::{MessageId, StatusMessage};
use log::{error, info, warn};

use super::content::{self, cache_dir};
use super::image::{self, Engine, Installed, Verdict};
use super::inventory;
use super::plan::When;
use super::state::{ActionRecord, Stage};
use super::tool;
use super::worker::Worker;
use crate::error::Result;

/// The steps of an image action reported as progress.
const STEPS: u32 = 5;

/// The package as people read it: the server's name, and its version unless that is the
/// same (a server that names the chunk and its version after the file).
fn label(rec: &ActionRecord) -> String {
    if rec.version.is_empty() || rec.version == rec.package {
        rec.package.clone()
    } else {
        format!("{} {}", rec.package, rec.version)
    }
}

impl Worker<'_> {
    /// The engine the action's artifact is an image for, if it is one: an action of one
    /// artifact (not a `.dmpkg`) has its first bytes looked at once, before any download.
    pub(super) fn image_engine(
        &self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
    ) -> Result<Option<Engine>> {
        if rec.engine.is_some() || rec.sniffed {
            return Ok(rec.engine);
        }
        let suffix = format!(".{}", dm_shared::bundle::EXTENSION);
        let [a] = chunk.artifacts.as_slice() else { return Ok(None) };
        let href = a.links.get("download").map(|l| l.href.as_str()).unwrap_or("");
        if rec.stage != Stage::Downloading
            || a.filename.ends_with(&suffix)
            || !href.starts_with("https://")
        {
            return Ok(None);
        }
        let head = self.session.net.peek(href, image::SNIFF_BYTES)?;
        rec.engine = image::sniff(&head);
        rec.sniffed = true;
        rec.save(self.ctx)?;
        if let Some(e) = rec.engine {
            info!("action {}: {} is a {} image", rec.id, a.filename, e.name());
        }
        Ok(rec.engine)
    }

    /// Works on an image action: refused before the download when the engine is missing or
    /// would check no signature; downloaded; installed when its schedule says so.
    pub(super) fn image(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        engine: Engine,
        when: When,
    ) -> Result<()> {
        let setup = match image::setup(engine, &self.settings.system_images) {
            Ok(s) => s,
            Err(r) => return self.refuse_action(rec, r),
        };
        if rec.stage == Stage::Downloading {
            if !rec.announced {
                let text =
                    format!("received the {} image {}; downloading", engine.name(), label(rec));
                self.step(
                    rec.id,
                    Execution::Download,
                    MessageId::PROGRAM_RECEIVED,
                    text,
                    1,
                    vec![],
                )?;
                rec.announced = true;
                rec.save(self.ctx)?;
            }
            let net = &self.session.net;
            if let Err(e) =
                content::download_image(self.ctx, net, rec.id, chunk, &rec.href, &self.stop)
            {
                return self.download_failed(rec, e);
            }
            rec.stage = Stage::Downloaded;
            rec.save(self.ctx)?;
            let text = format!("{} downloaded; {} checks its signature", label(rec), engine.name());
            self.step(
                rec.id,
                Execution::Downloaded,
                MessageId::CONTENT_DOWNLOADED,
                text,
                2,
                vec![],
            )?;
        }
        match when {
            When::Now => self.install_image(rec, chunk, &setup),
            When::DownloadOnly => {
                let text = format!(
                    "the {} image {} is on the device (download only; not installed)",
                    engine.name(),
                    label(rec)
                );
                self.finish(rec, MessageId::DOWNLOAD_ONLY_DONE, StatusCode::S_OK, text, vec![])
            }
            other => self.wait(rec, other),
        }
    }

    /// Hands the downloaded image to its engine and reports the engine's verdict: failed, or
    /// pending the restart (then restarts the device when `RebootCommand` says how).
    fn install_image(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        setup: &image::Setup,
    ) -> Result<()> {
        let engine = setup.engine;
        let file = cache_dir(self.ctx, rec.id).join(&chunk.artifacts[0].filename);
        let version = match engine {
            Engine::Swupdate => image::swu_version(&file),
            Engine::Rauc => None,
        };
        rec.stage = Stage::ImageInstalling;
        rec.save(self.ctx)?;
        let text = format!(
            "{} installs {}{} (at most {} s)",
            engine.name(),
            label(rec),
            version.as_deref().map(|v| format!(" (image version {v})")).unwrap_or_default(),
            self.settings.system_images.install_timeout.as_secs()
        );
        self.step(rec.id, Execution::Proceeding, MessageId::IMAGE_INSTALLING, text, 3, vec![])?;
        if let Err(e) = self.session.flush(&self.outbox) {
            log::debug!("reports wait: {e}");
        }
        let log = self.ctx.layout.state_dir().join("images");
        dmfs::create_dir_all(&log, dmfs::MODE_DIR_PRIVATE)?;
        let tmp = log.join("tmp");
        dmfs::remove_dir_all(&tmp)?;
        dmfs::create_dir_all(&tmp, dmfs::MODE_DIR_PRIVATE)?;
        let timeout = self.settings.system_images.install_timeout;
        let run = image::install(setup, &file, timeout, &log.join("install.log"), &tmp);
        let _ = dmfs::remove_dir_all(&cache_dir(self.ctx, rec.id));
        let run = match run {
            Ok(r) => r,
            Err(why) => {
                let code = StatusCode::DM_E_IMAGE_ENGINE_MISSING;
                return self.finish(rec, MessageId::IMAGE_FAILED, code, why, vec![]);
            }
        };
        if let Err(f) = image::judge_install(engine, &run) {
            return self.finish(rec, MessageId::IMAGE_FAILED, f.code, f.text, f.excerpt);
        }
        let slot = match engine {
            Engine::Rauc => match image::rauc_primary(&setup.program, &log.join("status.log")) {
                Ok(s) => Some(s),
                Err(why) => {
                    let text = format!(
                        "RAUC installed the image, but which slot it went to is unknown: {why}"
                    );
                    return self.finish(
                        rec,
                        MessageId::IMAGE_FAILED,
                        StatusCode::DM_E_IMAGE_INSTALL,
                        text,
                        image::excerpt(&run),
                    );
                }
            },
            Engine::Swupdate => None,
        };
        rec.image = Some(Installed {
            engine,
            boot_id: tool::boot_id(),
            slot: slot.clone(),
            bootloader: setup.bootloader.clone(),
            version,
        });
        rec.stage = Stage::PendingReboot;
        rec.save(self.ctx)?;
        let reboot = &self.settings.system_images.reboot_command;
        let text = format!(
            "{} installed {}{}; pending reboot: {}",
            engine.name(),
            label(rec),
            slot.map(|s| format!(" into slot {s}")).unwrap_or_default(),
            if reboot.is_empty() {
                "the device runs it after its next restart".to_string()
            } else {
                format!("restarting the device ({})", reboot.join(" "))
            }
        );
        self.step(
            rec.id,
            Execution::Proceeding,
            MessageId::IMAGE_PENDING_REBOOT,
            text,
            4,
            image::excerpt(&run),
        )?;
        if !reboot.is_empty() {
            self.restart_device(reboot);
        }
        Ok(())
    }

    /// Runs `RebootCommand` once the reports are out (as far as the network lets them).
    fn restart_device(&mut self, command: &[String]) {
        if let Err(e) = self.session.flush(&self.outbox) {
            warn!("the pending-reboot report waits for after the restart: {e}");
        }
        info!("restarting the device into the new system: {}", command.join(" "));
        let log = self.ctx.layout.state_dir().join("images/reboot.log");
        let mut c = std::process::Command::new(&command[0]);
        c.args(&command[1..]);
        match tool::run(&mut c, std::time::Duration::from_secs(120), &log) {
            Ok(r) if r.succeeded() => {}
            Ok(r) => error!(
                "the restart command {} failed ({}): {}",
                command.join(" "),
                r.end(),
                r.tail(3).join("; ")
            ),
            Err(e) => error!("the device cannot be restarted: {e}"),
        }
    }

    /// Looks at every image waiting for its restart (at start, and when its action is offered
    /// again).
    pub fn check_images(&self) -> Result<()> {
        for mut rec in ActionRecord::all(self.ctx) {
            match rec.stage {
                Stage::PendingReboot => self.check_restart(&mut rec)?,
                Stage::ImageInstalling => {
                    let text = "the agent stopped while the update engine installed the image; it is not installed again, and the engine's own state decides what the device boots".to_string();
                    self.finish(
                        &mut rec,
                        MessageId::IMAGE_FAILED,
                        StatusCode::DM_E_IMAGE_ENGINE_CRASHED,
                        text,
                        vec![],
                    )?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// After a restart, asks the engine whether the device runs the new system and reports
    /// it; before the restart, nothing.
    pub(super) fn check_restart(&self, rec: &mut ActionRecord) -> Result<()> {
        let Some(installed) = rec.image.clone() else { return Ok(()) };
        let s = &self.settings.system_images;
        let log = self.ctx.layout.state_dir().join("images/status.log");
        let boot = tool::boot_id();
        if boot == installed.boot_id {
            log::debug!("action {}: the image waits for the device's restart", rec.id);
            return Ok(());
        }
        let state = match image::engine_state(&installed, s, &log) {
            Ok(st) => st,
            Err(why) => {
                warn!(
                    "action {}: the device restarted, but {} cannot tell yet whether it runs the new system: {why}; asking again at the next poll",
                    rec.id,
                    installed.engine.name()
                );
                return Ok(());
            }
        };
        let running = inventory::system_version(self.ctx);
        match image::judge_restart(&installed, &boot, &state) {
            Verdict::Waiting => Ok(()),
            Verdict::Confirmed { confirm, text } => {
                if confirm {
                    if let Err(why) = image::mark_good(&installed, s, &log) {
                        return self.finish(
                            rec,
                            MessageId::IMAGE_FAILED,
                            StatusCode::DM_E_IMAGE_INSTALL,
                            why,
                            vec![],
                        );
                    }
                }
                let text = if confirm {
                    format!(
                        "{text}; {} now marks it good; the system runs version {running}",
                        installed.engine.name()
                    )
                } else {
                    format!("{text}; the system runs version {running}")
                };
                let _ = inventory::record_installed(self.ctx, &rec.package, &rec.version, None);
                self.finish(rec, MessageId::IMAGE_CONFIRMED, StatusCode::S_OK, text, vec![])
            }
            Verdict::FellBack(text) => {
                let text = format!("{text} (the system runs version {running})");
                self.finish(
                    rec,
                    MessageId::IMAGE_FELL_BACK,
                    StatusCode::DM_E_IMAGE_FELL_BACK,
                    text,
                    vec![],
                )
            }
        }
    }

    /// Queues a progress report that counts steps of [`STEPS`].
    fn step(
        &self,
        action: u64,
        exec: Execution,
        id: MessageId,
        text: String,
        cnt: u32,
        details: Vec<String>,
    ) -> Result<()> {
        info!("action {action}: {text}");
        let mut m =
            StatusMessage::feedback(action, exec, id, StatusCode::S_OK, self.now(), text, false);
        m.progress = Some((cnt, STEPS));
        m.details = details;
        self.queue(&m)
    }
}
