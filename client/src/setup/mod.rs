//! DMClientSetup: installs, upgrades, reconfigures, uninstalls and repairs the client from a
//! verified deployment folder, crash-safely.
//!
//! A run is: recover an interrupted operation; verify the folder and read its settings
//! ([`prepare`]); decide what to do from the source documents' table and plan its journal
//! steps ([`plan`]); carry them out ([`engine`]); record the result. A kill or power loss at
//! any step is finished or rolled back by the next setup run or agent start. Every run leaves
//! `var/lib/dm/setup-result.json` and a status message in the outbox for the agent to report.

pub mod engine;
pub mod journal;
pub mod options;
pub mod plan;
pub mod prepare;

use std::path::Path;
use std::time::Duration;

use dm_shared::fs as dmfs;
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::outbox::Outbox;
use dm_shared::{ClientVersion, Context, StatusCode, clock};
use log::{info, warn};

use self::engine::{Actor, Ending, Engine};
use self::journal::{Journal, Op};
pub use self::options::Options;
pub use self::plan::{Decision, decide};
use self::prepare::{Change, Staged};
use crate::error::{Error, Result};
use crate::installed::{self, SetupResult, installed_version};

/// What a setup run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The status to exit with.
    pub code: StatusCode,
    /// A sentence for the log and the result record.
    pub message: String,
}

fn v(v: Option<ClientVersion>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// One setup result, for the result record and the status message.
struct Record<'a> {
    op: &'a str,
    result: installed::Outcome,
    code: StatusCode,
    from: Option<ClientVersion>,
    to: Option<ClientVersion>,
    message_id: MessageId,
    message: String,
    log_file: Option<&'a Path>,
}

/// Writes the result record and queues the status message (logging, never failing: the
/// operation's outcome stands either way).
fn record(ctx: &Context, r: Record<'_>) {
    // The record is for the agent to report; without a client there is none (the log stays).
    if r.from.is_none() && installed_version(ctx).is_none() {
        return;
    }
    let time = clock::rfc3339(ctx.clock.now());
    let result = SetupResult {
        op: r.op.to_string(),
        result: r.result,
        code: r.code,
        from: r.from,
        to: r.to,
        time: time.clone(),
        message: r.message.clone(),
        log_file: r.log_file.map(Path::to_path_buf),
    };
    if let Err(e) = result.save(ctx) {
        warn!("could not write the setup result {}: {e}", ctx.layout.setup_result().display());
    }
    // Only a device with a client has an agent to send it.
    if installed_version(ctx).is_some() {
        let mut msg = StatusMessage::event(
            "DMClientSetup",
            r.message_id,
            r.code,
            time,
            format!("{}: {}", r.code, r.message),
        );
        msg.details = r.log_file.map(|p| vec![format!("log: {}", p.display())]).unwrap_or_default();
        if let Err(e) = Outbox::open(&ctx.layout).push(&msg) {
            warn!("could not queue the status message: {e}");
        }
    }
}

fn cleanup_after_uninstall(ctx: &Context) {
    let _ = dmfs::remove_dir(&ctx.layout.state_dir());
    for f in [
        ctx.layout.agent_pid_file(),
        ctx.layout.agent_health_file(),
        ctx.layout.agent_lock_file(),
        ctx.layout.setup_lock(),
    ] {
        let _ = dmfs::remove_file(&f);
    }
    let _ = dmfs::remove_dir(&ctx.layout.run_dir());
}

/// Finishes or rolls back an operation a crash interrupted, if there is one. The caller holds
/// the setup lock.
pub fn recover(ctx: &Context, actor: Actor, health_timeout: Duration) -> Result<Option<Ending>> {
    let Some(mut j) = Journal::load(ctx)? else { return Ok(None) };
    let ending = Engine::new(ctx, actor, health_timeout).recover(&mut j)?;
    let what = format!("an interrupted {} ({} -> {})", j.op.as_str(), v(j.from), v(j.to));
    let (message, result, code, to) = match ending {
        Ending::Completed => {
            (format!("finished {what}"), installed::Outcome::Success, StatusCode::S_OK, j.to)
        }
        Ending::RolledBack => (
            format!("rolled back {what}; the client is as it was"),
            installed::Outcome::Failure,
            StatusCode::ERROR_INSTALL_FAILURE,
            j.from,
        ),
    };
    info!("{message}");
    if ending == Ending::Completed && j.op == Op::Uninstall {
        cleanup_after_uninstall(ctx);
    } else {
        let op = j.op.as_str();
        let message_id = MessageId::SETUP_RECOVERED;
        let r = Record { op, result, code, from: j.from, to, message_id, message, log_file: None };
        record(ctx, r);
    }
    Ok(Some(ending))
}

/// Runs setup: recover, verify, decide, carry out, record. `log_file` names this run's log in
/// the result record.
pub fn run(ctx: &Context, opts: &Options, log_file: Option<&Path>) -> Result<Outcome> {
    let lock_path = ctx.layout.setup_lock();
    let _lock = dmfs::try_lock(&lock_path)?
        .ok_or(Error::AlreadyRunning { what: "dmclientsetup", lock: lock_path.clone() })?;
    if let Some(ending) = recover(ctx, Actor::Setup, opts.health_timeout)? {
        info!("recovery: {ending:?}; continuing with this run");
    }

    let staged = Staged::load(ctx, opts)?;
    let action = staged.settings.installation.client_install_action;
    let installed = installed_version(ctx);
    let problems = installed::inspect(ctx).problems;
    if installed.is_some() && !problems.is_empty() && !opts.repair {
        warn!(
            "the installed client has problems: {}; run dmclientsetup --repair to fix them",
            problems.join("; ")
        );
    }
    let decision = decide(action, installed, staged.version(), opts.repair);
    info!(
        "ClientInstallAction={action:?}, installed client {}, staged client {}: {decision:?}",
        v(installed),
        staged.version()
    );
    let op = match &decision {
        Decision::Run(op) => *op,
        Decision::NoAction(msg) => {
            info!("{msg}");
            record(
                ctx,
                Record {
                    op: "none",
                    result: installed::Outcome::NoAction,
                    code: StatusCode::S_FALSE,
                    from: installed,
                    to: installed,
                    message_id: MessageId::SETUP_NO_ACTION,
                    message: msg.clone(),
                    log_file,
                },
            );
            let message = msg.clone();
            return Ok(Outcome { decision, code: StatusCode::S_FALSE, message });
        }
        Decision::Nothing(msg) => {
            info!("{msg}");
            let message = msg.clone();
            return Ok(Outcome { decision, code: StatusCode::S_FALSE, message });
        }
    };

    refuse_if_locked(ctx, op, installed, log_file)?;
    let change = Change::new(ctx, &staged, op)?;
    if op == Op::Reconfigure {
        if change.is_noop() {
            return already_configured(ctx, opts, installed, decision, log_file);
        }
        info!("{} settings change; the agent restarts to read them", change.overwrites);
    }
    let mut j = change.into_journal(ctx, opts, &staged, op, installed)?;
    if let Some(id) = &j.new_identity {
        info!("controller id: {}", id.trim());
    }
    let result = Engine::new(ctx, Actor::Setup, opts.health_timeout).execute(&mut j);
    let outcome = finish(ctx, &j, result, decision, log_file)?;
    Ok(outcome)
}

/// On a device its security policy locks, setup installs, upgrades, repairs and reconfigures
/// nothing, however it was started (by `dminstaller`, which refuses first, by the agent for
/// an upgrade over the air, or by hand): `Access Denied (0x80070005)`, recorded for the agent
/// to report. Uninstalling, which takes privileges away, stays possible.
fn refuse_if_locked(
    ctx: &Context,
    op: Op,
    installed: Option<ClientVersion>,
    log_file: Option<&Path>,
) -> Result<()> {
    let policy = dm_shared::policy::SecurityPolicy::load(&ctx.layout);
    if !policy.locked || op == Op::Uninstall {
        return Ok(());
    }
    let e: Error = dm_shared::Error::Locked {
        reason: format!("{} ({})", policy.reason, policy.source.display()),
    }
    .into();
    let message = format!("{} refused: {e}; nothing was changed", op.as_str());
    warn!("{message}");
    let (result, code) = (installed::Outcome::Failure, e.code());
    let message_id = MessageId::SETUP_FAILED;
    let (from, to) = (installed, installed);
    record(ctx, Record { op: op.as_str(), result, code, from, to, message_id, message, log_file });
    Err(e)
}

/// A reconfigure that changes nothing: the agent is started if it was not running.
fn already_configured(
    ctx: &Context,
    opts: &Options,
    installed: Option<ClientVersion>,
    decision: Decision,
    log_file: Option<&Path>,
) -> Result<Outcome> {
    let message =
        format!("the client {} already has these settings; nothing was changed", v(installed));
    info!("{message}");
    if !crate::service::is_running(ctx) {
        info!("the agent is not running: starting it");
        let mut started = crate::service::start(ctx)?;
        if let Some(version) = installed {
            crate::health::await_healthy(ctx, version, opts.health_timeout, || started.exited())?;
        }
    }
    record(
        ctx,
        Record {
            op: Op::Reconfigure.as_str(),
            result: installed::Outcome::Success,
            code: StatusCode::S_OK,
            from: installed,
            to: installed,
            message_id: MessageId::CLIENT_RECONFIGURED,
            message: message.clone(),
            log_file,
        },
    );
    Ok(Outcome { decision, code: StatusCode::S_OK, message })
}

/// Records how the journal's operation ended.
fn finish(
    ctx: &Context,
    j: &Journal,
    result: Result<Ending>,
    decision: Decision,
    log_file: Option<&Path>,
) -> Result<Outcome> {
    let (op, from, to) = (j.op, j.from, j.to);
    if let Err(e) = result {
        let code = e.code();
        let message = format!("{} {} -> {} failed: {e}", op.as_str(), v(from), v(to));
        let to = installed_version(ctx);
        let message_id = match e {
            Error::Enrollment { .. } => MessageId::ENROLL_FAILED,
            _ => MessageId::SETUP_FAILED,
        };
        let result = installed::Outcome::Failure;
        record(
            ctx,
            Record { op: op.as_str(), result, code, from, to, message_id, message, log_file },
        );
        return Err(e);
    }
    let message = match op {
        Op::Upgrade => format!("client upgraded from {} to {}", v(from), v(to)),
        Op::Uninstall => format!(
            "client {} uninstalled; logs kept in {}",
            v(from),
            ctx.layout.log_dir().display()
        ),
        Op::Install => format!("client {} installed", v(to)),
        Op::Reconfigure => format!("client {} reconfigured", v(to)),
        Op::Repair => format!("client {} repaired", v(to)),
    };
    info!("{message}");
    let message_id = match op {
        Op::Install => MessageId::CLIENT_INSTALLED,
        Op::Upgrade => MessageId::CLIENT_UPGRADED,
        Op::Reconfigure => MessageId::CLIENT_RECONFIGURED,
        Op::Repair => MessageId::CLIENT_REPAIRED,
        Op::Uninstall => {
            cleanup_after_uninstall(ctx);
            return Ok(Outcome { decision, code: StatusCode::S_OK, message });
        }
    };
    let result = installed::Outcome::Success;
    let r = Record {
        op: op.as_str(),
        result,
        code: StatusCode::S_OK,
        from,
        to,
        message_id,
        message: message.clone(),
        log_file,
    };
    record(ctx, r);
    Ok(Outcome { decision, code: StatusCode::S_OK, message })
}
