//! The bodies of the fuzz targets of what the management point reads from devices and
//! browsers (`fuzz/`, `fuzz/README.md`), written once for the fuzz targets and the replay of
//! the committed corpora in the fast tier.
//!
//! Each body runs the parsing and the checks a handler applies before it touches the store,
//! and must return without panicking, whatever the bytes; a panic is a finding. The store's
//! writes are left out: they take only what these checks let through, and a database per
//! input would run a few hundred inputs a second instead of tens of thousands.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature only.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use dm_shared::ddi::{ActionFeedback, ActivateAutoConfirm, ConfigData, ConfirmationFeedback, Tags};
use dm_shared::message::StatusMessage;

use super::console::fuzzing::query;
use super::feedback::{check_config_data, check_details, check_status_messages, parse_json};
use super::http::parse_range;
use super::poll::HistoryQuery;
use crate::model::ActionStatus;

fn body(data: &[u8]) -> Result<Bytes, BytesRejection> {
    Ok(Bytes::copy_from_slice(data))
}

/// Feedback detail lines: the tags are read by key, and written again they read the same.
fn details(lines: &[String]) {
    if check_details(lines).is_err() {
        return;
    }
    let Ok((tags, people)) = Tags::split(lines) else { return };
    assert!(people.len() <= lines.len());
    match Tags::split(&tags.lines()) {
        Ok((again, rest)) => assert!(again == tags && rest.is_empty(), "tags changed: {lines:?}"),
        Err(e) => panic!("accepted tags, written again, are refused: {e}"),
    }
}

/// What a device sends to the DDI API, read as the handlers read it before they store it:
/// feedback on a deployment or a cancellation (then every state's move on it), a
/// confirmation, `configData`, status messages, auto-confirmation, and the `Range` header
/// and `actionHistory` query of its requests.
pub fn device_requests(data: &[u8]) {
    if let Ok(fb) = parse_json::<ActionFeedback>(body(data), "the feedback") {
        details(&fb.status.details);
        let (exec, finished) = (fb.status.execution, fb.status.result.finished);
        for cur in ActionStatus::ALL {
            let _ = (cur.on_feedback(exec, finished), cur.on_cancel_feedback(exec, finished));
        }
    }
    if let Ok(fb) = parse_json::<ConfirmationFeedback>(body(data), "the confirmation") {
        details(&fb.details);
    }
    if let Ok(cd) = parse_json::<ConfigData>(body(data), "the configData") {
        let _ = check_config_data(&cd);
    }
    if let Ok(msgs) = parse_json::<Vec<StatusMessage>>(body(data), "the status messages") {
        let _ = check_status_messages(&msgs);
    }
    let _ = parse_json::<ActivateAutoConfirm>(body(data), "the auto-confirmation");
    let Ok(text) = std::str::from_utf8(data) else { return };
    for size in [0, 1, 4096, u64::MAX] {
        if let Ok(Some(r)) = parse_range(Some(text), size) {
            assert!(r.start <= r.end && r.end < size, "range {r:?} of {size} bytes: {text:?}");
        }
    }
    let _ = query::<HistoryQuery>(text);
}

/// A Debian repository's files as `dmmp update import` reads them: a release file's signed
/// text (the first part), and a package index (the rest). An entry the index parser keeps
/// names a file inside the repository.
pub fn debian_repository(data: &[u8]) {
    let [release, index] = dm_shared::fuzzing::split_parts::<2>(data);
    let r = crate::debrepo::parse_release(&String::from_utf8_lossy(release));
    let _ = r.is_security();
    let (updates, _) = crate::debrepo::parse_index(index, "Packages", false);
    for u in updates {
        assert!(
            dm_shared::files::check_relative_path(&u.filename).is_ok(),
            "{:?} leaves the repository",
            u.filename
        );
        assert!(dm_shared::debian::is_valid_version(&u.version), "{:?}", u.version);
    }
}

/// This module's targets by name, for the replay.
pub const TARGETS: &[dm_shared::fuzzing::Target] = &[
    ("mp_device_requests", device_requests),
    ("console_forms", super::console::fuzzing::forms),
    ("debian_repository", debian_repository),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_corpus_replays() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(dm_shared::fuzzing::replay(&repo, TARGETS) > 0);
    }
}
