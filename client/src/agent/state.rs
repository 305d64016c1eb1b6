//! What the agent remembers about actions across restarts (`var/lib/dm/actions/<id>.json`),
//! and requests from `dmsvc run` (`var/lib/dm/requests/<id>`).

use std::path::PathBuf;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::{Context, clock};

use crate::error::Result;

/// Where an action is on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Seen, content downloading.
    Downloading,
    /// Content downloaded and verified, not run (waiting for its window or the user).
    Downloaded,
    /// An available program waiting for `dmsvc run`.
    Available,
    /// The program is running.
    Running,
    /// A client upgrade was handed to setup.
    Upgrading,
    /// A system image is with its update engine.
    ImageInstalling,
    /// A system image is installed; the restart into it, and the engine's word on it, are
    /// awaited.
    PendingReboot,
    /// Installed, and the package's health check passed; it runs again at the end of the
    /// rollout's soak time (`soak_until`).
    Soaking,
    /// Over: its final result is in the outbox or sent.
    Done,
    /// Canceled before it started.
    Canceled,
}

/// One action as the agent sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionRecord {
    /// The DDI action id.
    pub id: u64,
    /// The deploymentBase link.
    pub href: String,
    /// Package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// Program name.
    pub program: String,
    /// Command line.
    pub command: String,
    /// `mandatory`, `available` or `download-only`.
    pub kind: String,
    /// Where it is.
    pub stage: Stage,
    /// The final status text, when done.
    pub result: Option<String>,
    /// Whether the final result was a success.
    pub success: Option<bool>,
    /// Last change (RFC 3339).
    pub updated: String,
    /// Whether a waiting message (window, user) was already reported.
    #[serde(default)]
    pub waiting_reported: bool,
    /// Whether its download was announced (`download` feedback): only once nothing refused it.
    #[serde(default)]
    pub announced: bool,
    /// The final report, kept to send again to a server that lost it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_report: Option<dm_shared::message::StatusMessage>,
    /// How many times the final report was sent again.
    #[serde(default)]
    pub resent: u32,
    /// How the running program is contained, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contained: Option<super::contain::Contained>,
    /// Whether its one artifact was looked at for a system image (its first bytes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sniffed: bool,
    /// The update engine its system image is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<super::image::Engine>,
    /// The system image it installed, until the restart confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<super::image::Installed>,
    /// When a soaking action's health check runs again (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<i64>,
}

fn dir(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("actions")
}

/// Where `dmsvc run` leaves its requests.
pub fn requests_dir(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("requests")
}

/// The largest action record read back.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

impl ActionRecord {
    /// A new record of an action seen at `href`: downloading, nothing known yet.
    pub fn new(id: u64, href: String) -> ActionRecord {
        ActionRecord {
            id,
            href,
            package: String::new(),
            version: String::new(),
            program: String::new(),
            command: String::new(),
            kind: String::new(),
            stage: Stage::Downloading,
            result: None,
            success: None,
            updated: String::new(),
            waiting_reported: false,
            announced: false,
            final_report: None,
            resent: 0,
            contained: None,
            sniffed: false,
            engine: None,
            image: None,
            soak_until: None,
        }
    }

    /// Forgets a record (an action id a server reused for another deployment).
    pub fn forget(ctx: &Context, id: u64) -> Result<()> {
        dmfs::remove_file(&dir(ctx).join(format!("{id}.json")))?;
        Ok(())
    }

    /// Reads one record. A damaged record is logged and counts as none.
    pub fn load(ctx: &Context, id: u64) -> Option<ActionRecord> {
        dmfs::read_json(&dir(ctx).join(format!("{id}.json")), MAX_RECORD_BYTES)
            .inspect_err(|e| log::warn!("ignoring the record of action {id}: {e}"))
            .ok()
            .flatten()
    }

    /// Every record, by id.
    pub fn all(ctx: &Context) -> Vec<ActionRecord> {
        let mut v: Vec<ActionRecord> = std::fs::read_dir(dir(ctx))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok()
                    })
                    .filter_map(|id| ActionRecord::load(ctx, id))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable_by_key(|r| r.id);
        v
    }

    /// Writes it (durably).
    pub fn save(&mut self, ctx: &Context) -> Result<()> {
        self.updated = clock::rfc3339(ctx.clock.now());
        dmfs::create_dir_all(&dir(ctx), dmfs::MODE_DIR_PRIVATE)?;
        Ok(dmfs::write_json(&dir(ctx).join(format!("{}.json", self.id)), self, MODE_PRIVATE)?)
    }
}

/// Asks the running agent to run an available program (`dmsvc run <id>`).
pub fn request_run(ctx: &Context, id: u64) -> Result<()> {
    dmfs::create_dir_all(&requests_dir(ctx), dmfs::MODE_DIR_PRIVATE)?;
    dmfs::write_atomic(
        &requests_dir(ctx).join(id.to_string()),
        clock::rfc3339(ctx.clock.now()).as_bytes(),
        MODE_PRIVATE,
    )?;
    Ok(())
}

/// The pending run requests (files named by an action id; anything else, such as a
/// leftover temporary file, is not a request).
pub fn requests(ctx: &Context) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(requests_dir(ctx)) else { return Vec::new() };
    let mut ids: Vec<u64> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
        .collect();
    ids.sort_unstable();
    ids
}

/// Removes a run request once it ran or cannot run.
pub fn request_done(ctx: &Context, id: u64) {
    if let Err(e) = dmfs::remove_file(&requests_dir(ctx).join(id.to_string())) {
        log::warn!("run request {id} stays: {e}");
    }
}
