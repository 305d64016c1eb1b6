//! hawkBit's confirmation flow on the device: an action the management point offers as
//! `confirmationBase` waits for the device's user. The agent records it as available (`dmsvc
//! available` lists it), reports that once, and when the user runs it (`dmsvc run`) answers
//! `confirmed`; the server then offers it as a deployment, which runs as any other. An action
//! the device cannot run is refused at once, as a deployment would be.

use dm_shared::ddi::{self, Confirmation, ConfirmationBaseAction, ConfirmationFeedback, Execution};
use dm_shared::message::MessageId;
use dm_shared::{Platform, clock};
use log::info;

use super::plan::{self, Requirements};
use super::state::{ActionRecord, Stage};
use super::worker::Worker;
use crate::error::{Error, Result};

/// The action id of a `confirmationBase/{id}` link.
fn action_of(href: &str) -> Option<u64> {
    href.split('?').next()?.rsplit('/').next()?.parse().ok()
}

impl Worker<'_> {
    /// The server offers an action for the user's consent at `href`.
    pub fn confirmation(&mut self, href: &str) -> Result<()> {
        if let Some(id) = action_of(href) {
            if ActionRecord::load(self.ctx, id).is_some_and(|r| r.waiting_reported) {
                log::debug!("action {id} waits for its user");
                return Ok(());
            }
        }
        let c: ConfirmationBaseAction = self.session.get(href)?;
        let action: u64 = c.id.parse().map_err(|_| Error::Malformed {
            url: href.into(),
            reason: format!("action id {:?} is not a number", c.id),
        })?;
        let mut rec = ActionRecord::load(self.ctx, action)
            .unwrap_or_else(|| ActionRecord::new(action, href.to_string()));
        rec.href = href.to_string();
        let (chunk, _) = match plan::classify(&c.confirmation) {
            Ok(c) => c,
            Err(r) => return self.refuse_action(&mut rec, r),
        };
        rec.package = chunk.name.clone();
        rec.version = chunk.version.clone();
        rec.program = chunk.meta(ddi::meta::PROGRAM).unwrap_or_default().to_string();
        rec.kind = "available".into();
        let class = self.settings.environment.device_class;
        if let Err(r) = Requirements::of_chunk(chunk).check(&Platform::current(), class) {
            return self.refuse_action(&mut rec, r);
        }
        rec.stage = Stage::Available;
        let text = format!(
            "{} of {} {} waits for the device's user to consent: `dmsvc run {action}`",
            rec.program, rec.package, rec.version
        );
        info!("action {action}: {text}");
        self.progress(action, Execution::Scheduled, MessageId::PROGRAM_AVAILABLE, text)?;
        rec.waiting_reported = true;
        rec.save(self.ctx)
    }

    /// The user asked to run an action that waits for consent: tells the server so. The next
    /// poll offers it as a deployment, which runs.
    pub fn confirm(&mut self, rec: &mut ActionRecord) -> Result<()> {
        let url = format!("{}/feedback", rec.href.split('?').next().unwrap_or(&rec.href));
        let body = ConfirmationFeedback {
            confirmation: Confirmation::Confirmed,
            code: None,
            details: vec![format!(
                "the device's user asked to run it at {}",
                clock::rfc3339(self.ctx.clock.now())
            )],
        };
        self.session.net.send_json("POST", &url, &body)?;
        info!("action {}: confirmed; it runs once the management point offers it", rec.id);
        rec.stage = Stage::Downloading;
        rec.waiting_reported = false;
        rec.save(self.ctx)
    }
}

/// Whether the record waits for consent through `confirmationBase` (rather than as an
/// `attempt` deployment).
pub fn awaits_confirmation(rec: &ActionRecord) -> bool {
    rec.stage == Stage::Available && rec.href.contains("/confirmationBase/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_come_from_the_link() {
        assert_eq!(action_of("https://h/T/controller/v1/d/confirmationBase/42?c=-7"), Some(42));
        assert_eq!(action_of("https://h/T/controller/v1/d/confirmationBase/x"), None);
    }
}
