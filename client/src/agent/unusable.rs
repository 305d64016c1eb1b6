//! Deployment links whose answer cannot be used: an action id that is not a number, an
//! answer larger than allowed, JSON that does not parse. Asking again at every poll would
//! change nothing and say nothing, so each is reported once (status message 10051, with the
//! link and the reason) and not fetched again while the server keeps offering the same link,
//! for a day at most (a server fixed meanwhile is heard from again). Kept in
//! `var/lib/dm/unusable-deployments.json`.

use std::path::PathBuf;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::{Context, clock};
use log::error;

use super::worker::Worker;
use crate::error::{Error, Result};

/// How long a link stays unasked.
const QUIET_SECS: u64 = 86_400;
/// The most links remembered.
const MAX_LINKS: usize = 32;

/// One link and when its answer was found unusable (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Unusable {
    href: String,
    since: u64,
}

fn path(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("unusable-deployments.json")
}

fn load(ctx: &Context) -> Vec<Unusable> {
    dmfs::read_json(&path(ctx), 64 * 1024).ok().flatten().unwrap_or_default()
}

/// Whether the answer behind `href` was found unusable less than a day ago.
pub fn known(ctx: &Context, href: &str) -> bool {
    let now = clock::unix_secs(ctx.clock.now());
    load(ctx).iter().any(|u| u.href == href && now.saturating_sub(u.since) < QUIET_SECS)
}

/// Whether an error says the answer itself is unusable (asking again would not change it).
fn is_unusable(e: &Error) -> bool {
    matches!(e, Error::Malformed { .. } | Error::TooLarge { .. })
}

/// Settles the outcome of working on the deployment at `href`: an unusable answer is logged,
/// reported once and remembered (`Ok`); any other error is returned for the next poll.
pub fn settle(w: &Worker<'_>, href: &str, outcome: Result<()>) -> Result<()> {
    let e = match outcome {
        Err(e) if is_unusable(&e) => e,
        other => return other,
    };
    error!(
        "{e} ({}); this deployment is not fetched again for a day while the management point offers it",
        e.code()
    );
    let now = clock::unix_secs(w.ctx.clock.now());
    let mut all: Vec<Unusable> =
        load(w.ctx).into_iter().filter(|u| u.href != href && now - u.since < QUIET_SECS).collect();
    all.push(Unusable { href: href.to_string(), since: now });
    let excess = all.len().saturating_sub(MAX_LINKS);
    all.drain(..excess);
    dmfs::create_dir_all(&w.ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
    dmfs::write_json(&path(w.ctx), &all, MODE_PRIVATE)?;
    w.report(&StatusMessage::event(
        "DMSvc",
        MessageId::DEPLOYMENT_UNUSABLE,
        e.code(),
        w.now(),
        format!("{e}; not fetched again for a day"),
    ));
    Ok(())
}
