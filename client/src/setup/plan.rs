//! Deciding and planning, without touching the device: the source documents' table (installed
//! client against staged client and `ClientInstallAction`) picks an operation, and each
//! operation is a fixed list of journal steps with a commit point.

use dm_shared::ClientVersion;
use dm_shared::settings::InstallAction;

use super::journal::{Op, Step};

/// What setup decided to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Carry out an operation.
    Run(Op),
    /// A newer client is installed: nothing changes.
    NoAction(String),
    /// Nothing to do (nothing to reconfigure or remove).
    Nothing(String),
}

/// The table of the source documents: the installed client against the staged one and
/// `ClientInstallAction`.
pub fn decide(
    action: InstallAction,
    installed: Option<ClientVersion>,
    staged: ClientVersion,
    repair: bool,
) -> Decision {
    if repair {
        return Decision::Run(Op::Repair);
    }
    match (action, installed) {
        (InstallAction::Install, None) => Decision::Run(Op::Install),
        (InstallAction::Install, Some(v)) if v < staged => Decision::Run(Op::Upgrade),
        (InstallAction::Install, Some(v)) if v == staged => Decision::Run(Op::Reconfigure),
        (InstallAction::Install, Some(v)) => Decision::NoAction(format!(
            "the installed client {v} is newer than the staged {staged}; nothing was changed"
        )),
        (InstallAction::None, None) => {
            Decision::Nothing("no client is installed, so there is nothing to reconfigure".into())
        }
        (InstallAction::None, Some(_)) => Decision::Run(Op::Reconfigure),
        (InstallAction::Uninstall, None) => {
            Decision::Nothing("no client is installed, so there is nothing to remove".into())
        }
        (InstallAction::Uninstall, Some(_)) => Decision::Run(Op::Uninstall),
    }
}

/// An operation's steps and the two points that decide what a failure or a crash does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Once this many steps are done, recovery rolls forward instead of back.
    pub commit: usize,
    /// A failure at or after this step does not roll back: the step is retried later.
    pub no_return: usize,
}

impl Op {
    /// The steps of this operation. `remove_certificates` adds the certificate removal to an
    /// uninstall; `enroll` the certificate enrollment to an install or upgrade, before the
    /// pointer switches (a failed enrollment rolls the operation back), and to a repair.
    pub fn plan(self, remove_certificates: bool, enroll: bool) -> Plan {
        use Step::*;
        let steps = match self {
            Op::Install => vec![
                StageBinaries,
                PromoteBinaries,
                WriteSettings,
                WriteIdentity,
                WriteUnit,
                SwitchPointer,
                StartAgent,
                AwaitHealth,
            ],
            // The agent stops before its settings and unit change, so that a rollback restores
            // them before it restarts the old agent (undo runs backwards).
            Op::Upgrade => vec![
                StageBinaries,
                PromoteBinaries,
                StopAgent,
                WriteSettings,
                WriteIdentity,
                WriteUnit,
                SwitchPointer,
                StartAgent,
                AwaitHealth,
                RemoveOldVersion,
            ],
            Op::Reconfigure => {
                vec![WriteSettings, WriteIdentity, WriteUnit, StartAgent, AwaitHealth]
            }
            Op::Uninstall => {
                let mut s = vec![
                    UnregisterAgent,
                    RemovePointer,
                    RemoveBinaries,
                    RemoveUnit,
                    RemoveSettings,
                    RemoveState,
                ];
                if remove_certificates {
                    s.push(RemoveCertificates);
                }
                s
            }
            Op::Repair => vec![
                StageBinaries,
                StopAgent,
                RemoveDamaged,
                PromoteBinaries,
                WriteSettings,
                WriteIdentity,
                WriteUnit,
                SwitchPointer,
                StartAgent,
                AwaitHealth,
            ],
        };
        let mut steps = steps;
        let switch = steps.iter().position(|s| *s == SwitchPointer).unwrap_or(steps.len());
        match self {
            // Before the pointer switches: a failed enrollment leaves the device as it was.
            Op::Install | Op::Upgrade if enroll => steps.insert(switch, EnrollCertificate),
            // A repair is past its point of no return: once the pointer is back, the agent's
            // start finishes the repair, enrolling again until it succeeds.
            Op::Repair if enroll => steps.insert(switch + 1, EnrollCertificate),
            _ => {}
        }
        let after =
            |step: Step| steps.iter().position(|s| *s == step).map_or(steps.len(), |i| i + 1);
        let (commit, no_return) = match self {
            // The new version is active: a crash finishes the upgrade; only a failed health
            // check still rolls back.
            Op::Install | Op::Upgrade => (after(SwitchPointer), after(AwaitHealth)),
            Op::Reconfigure => (after(WriteUnit), steps.len()),
            // Once the client is gone, or the damaged one removed, there is no way back.
            Op::Uninstall => (after(RemovePointer), after(RemovePointer)),
            Op::Repair => (after(StopAgent), after(StopAgent)),
        };
        Plan { steps, commit, no_return }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ClientVersion {
        s.parse().unwrap()
    }

    #[test]
    fn the_table_of_the_source_documents() {
        use InstallAction as IA;
        let staged = v("1.2.0.0");
        let older = Some(v("1.1.9.9"));
        let same = Some(staged);
        let newer = Some(v("1.2.0.1"));
        assert_eq!(decide(IA::Install, None, staged, false), Decision::Run(Op::Install));
        assert_eq!(decide(IA::Install, older, staged, false), Decision::Run(Op::Upgrade));
        assert_eq!(decide(IA::Install, same, staged, false), Decision::Run(Op::Reconfigure));
        assert!(matches!(decide(IA::Install, newer, staged, false), Decision::NoAction(_)));
        assert!(
            matches!(decide(IA::None, None, staged, false), Decision::Nothing(m) if m.contains("nothing to reconfigure"))
        );
        for installed in [older, same, newer] {
            assert_eq!(decide(IA::None, installed, staged, false), Decision::Run(Op::Reconfigure));
            assert_eq!(
                decide(IA::Uninstall, installed, staged, false),
                Decision::Run(Op::Uninstall)
            );
        }
        assert!(
            matches!(decide(IA::Uninstall, None, staged, false), Decision::Nothing(m) if m.contains("nothing to remove"))
        );
        assert_eq!(decide(IA::Uninstall, newer, staged, true), Decision::Run(Op::Repair));
    }

    #[test]
    fn installs_commit_when_the_pointer_switches_and_stay_reversible_until_healthy() {
        for op in [Op::Install, Op::Upgrade] {
            let p = op.plan(false, false);
            assert_eq!(p.steps[p.commit - 1], Step::SwitchPointer, "{op:?}");
            assert_eq!(p.steps[p.no_return - 1], Step::AwaitHealth, "{op:?}");
            assert!(p.steps.starts_with(&[Step::StageBinaries, Step::PromoteBinaries]));
        }
        let up = Op::Upgrade.plan(false, false);
        let stop = up.steps.iter().position(|s| *s == Step::StopAgent).unwrap();
        let switch = up.steps.iter().position(|s| *s == Step::SwitchPointer).unwrap();
        assert!(stop < switch, "the old agent stops before the pointer moves");
        assert_eq!(up.steps.last(), Some(&Step::RemoveOldVersion));
    }

    #[test]
    fn reconfigure_commits_once_its_files_are_written() {
        let p = Op::Reconfigure.plan(false, false);
        assert_eq!(p.steps[p.commit - 1], Step::WriteUnit);
        assert_eq!(p.no_return, p.steps.len());
        assert!(!p.steps.contains(&Step::StageBinaries));
    }

    #[test]
    fn uninstall_unregisters_the_service_and_certificates_go_only_when_asked() {
        let p = Op::Uninstall.plan(false, false);
        assert_eq!(p.steps[0], Step::UnregisterAgent);
        assert_eq!(p.steps[p.commit - 1], Step::RemovePointer);
        assert_eq!(p.commit, p.no_return);
        assert!(!p.steps.contains(&Step::RemoveCertificates));
        assert_eq!(Op::Uninstall.plan(true, false).steps.last(), Some(&Step::RemoveCertificates));
    }

    #[test]
    fn repair_stages_before_it_removes_anything() {
        let p = Op::Repair.plan(false, false);
        assert_eq!(&p.steps[..3], &[Step::StageBinaries, Step::StopAgent, Step::RemoveDamaged]);
        assert_eq!(p.steps[p.commit - 1], Step::StopAgent);
    }

    #[test]
    fn a_rollback_restores_settings_and_unit_before_the_old_agent_restarts() {
        // Undo runs backwards: the agent must stop before anything it reads changes.
        for op in [Op::Install, Op::Upgrade, Op::Reconfigure, Op::Uninstall, Op::Repair] {
            let p = op.plan(false, false);
            let at = |step| p.steps.iter().position(|s| *s == step);
            let Some(stop) = at(Step::StopAgent) else { continue };
            for file in [Step::WriteSettings, Step::WriteIdentity, Step::WriteUnit] {
                if let Some(write) = at(file) {
                    assert!(stop < write, "{op:?}: {file:?} before the agent stops");
                }
            }
        }
    }

    #[test]
    fn enrollment_comes_before_the_agent_and_a_failed_one_rolls_back() {
        for op in [Op::Install, Op::Upgrade, Op::Repair] {
            let p = op.plan(false, true);
            let at = |step| p.steps.iter().position(|s| *s == step).unwrap();
            assert!(
                at(Step::WriteIdentity) < at(Step::EnrollCertificate),
                "the subject needs the id"
            );
            assert!(at(Step::EnrollCertificate) < at(Step::StartAgent), "{op:?}: before the agent");
            if op == Op::Repair {
                // Past the point of no return: the agent started through the pointer finishes it.
                assert_eq!(at(Step::EnrollCertificate), at(Step::SwitchPointer) + 1);
            } else {
                assert_eq!(at(Step::EnrollCertificate) + 1, at(Step::SwitchPointer), "{op:?}");
                assert!(at(Step::EnrollCertificate) < p.commit, "{op:?}: a failure rolls back");
            }
        }
        for op in [Op::Reconfigure, Op::Uninstall] {
            assert!(!op.plan(false, true).steps.contains(&Step::EnrollCertificate), "{op:?}");
        }
    }

    #[test]
    fn every_plan_is_consistent() {
        for op in [Op::Install, Op::Upgrade, Op::Reconfigure, Op::Uninstall, Op::Repair] {
            for certs in [false, true] {
                let p = op.plan(certs, false);
                assert!(p.commit <= p.no_return && p.no_return <= p.steps.len(), "{op:?}");
                let mut seen = std::collections::HashSet::new();
                assert!(p.steps.iter().all(|s| seen.insert(*s)), "{op:?} repeats a step");
            }
        }
    }
}
