//! Certificate revocation lists from the management point: fetched when the poll offers the
//! `dmCrls` link with a marker the device has not seen, each list parsed and kept in
//! `etc/dm/crl/` when a CA the device trusts signed it. The lists are signed by their CAs and
//! checked again when a chain is verified, so the management point is only their courier: it
//! cannot forge a list, nor make the device drop a genuine one.

use std::path::Path;

use dm_shared::ddi::CrlList;
use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::pki::{Cert, Crl};
use dm_shared::{Context, certstore, clock};

use super::inventory;
use super::session::Session;
use crate::error::Result;

/// The most lists taken from one answer.
const MAX_LISTS: usize = 64;

fn seen_file(ctx: &Context) -> std::path::PathBuf {
    ctx.layout.state_dir().join("crl-seen.txt")
}

fn reported_file(ctx: &Context) -> std::path::PathBuf {
    ctx.layout.state_dir().join("revoked-reported.txt")
}

/// Fetches and keeps the lists behind `href`, unless they were fetched already. Each list is
/// kept only when a CA the device trusts signed it ([`certstore::crl_signers`]): a forged
/// list is logged and changes nothing. Returns how many lists were new.
pub fn update(ctx: &Context, session: &Session, href: &str) -> Result<usize> {
    let seen = dmfs::read_optional(&seen_file(ctx), 4096)?.unwrap_or_default();
    if seen == href.as_bytes() {
        return Ok(0);
    }
    let list: CrlList = session.get(href)?;
    let now = ctx.clock.now();
    let signers = certstore::crl_signers(&ctx.layout, &installed_chains(ctx))?;
    let mut stored = 0;
    for pem in list.crls.iter().take(MAX_LISTS) {
        let crls = match Crl::parse(pem.as_bytes(), Path::new(href)) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("a revocation list from the management point is unusable: {e}");
                continue;
            }
        };
        for c in crls {
            match certstore::store_crl(&ctx.layout, &c, &signers, now) {
                Ok(true) => {
                    log::info!("new revocation list of {}", c.issuer());
                    stored += 1;
                }
                Ok(false) => {}
                Err(e @ dm_shared::Error::CrlUntrusted { .. }) => log::warn!("{e}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    log::info!("revocation lists checked: {stored} new of {}", list.crls.len());
    dmfs::write_atomic(&seen_file(ctx), href.as_bytes(), MODE_PRIVATE)?;
    Ok(stored)
}

/// The publisher chains of the installed packages: their intermediate CAs may publish lists.
fn installed_chains(ctx: &Context) -> Vec<Vec<Cert>> {
    inventory::installed_packages(ctx)
        .iter()
        .filter_map(|p| p.dir.as_ref())
        .filter_map(|d| Cert::load_pem(&d.join(dm_shared::manifest::PUBLISHER_FILE)).ok())
        .collect()
}

/// Status messages (10074) for installed packages whose publisher is now revoked or
/// disallowed, each package once: the administrator learns which devices hold software that
/// would no longer be allowed to run.
pub fn newly_revoked(ctx: &Context) -> Result<Vec<StatusMessage>> {
    let path = reported_file(ctx);
    let before = dmfs::read_optional(&path, 64 * 1024)?.unwrap_or_default();
    let before = String::from_utf8_lossy(&before).into_owned();
    let mut reported: Vec<&str> = before.lines().collect();
    let mut out = Vec::new();
    let revoked = inventory::revoked_packages(ctx);
    for (package, e) in &revoked {
        if reported.contains(&package.as_str()) {
            continue;
        }
        log::warn!("installed package {package}: {e}");
        out.push(StatusMessage::event(
            "DMSvc",
            MessageId::PUBLISHER_REVOKED,
            e.code(),
            clock::rfc3339(ctx.clock.now()),
            format!("installed package {package}: {e}"),
        ));
        reported.push(package);
    }
    if !out.is_empty() {
        dmfs::write_atomic(&path, reported.join("\n").as_bytes(), MODE_PRIVATE)?;
    }
    Ok(out)
}
