//! The per-node state machine of a rolling operation. Pure: the engine
//! feeds it events (with the time) and performs the actions it returns.
//!
//! ```text
//! Pending → Draining → Quiescing → Operating → Verifying → Returning → Done
//!                 ╲         ╲           ╲            ╲           ╲
//!                  ╰─────────┴───────────┴────────────┴───────────┴→ Failed
//! ```
//! Without a draining load balancer (`kind: none`) Draining, Quiescing and
//! Returning are skipped.
use std::time::Duration;

use farm_inventory::OnDrainTimeout;
pub use farm_proto::domain::Phase;
use farm_proto::domain::{OperationKind, PoolState, ServiceState};
use tokio::time::Instant;

use crate::agent::OperationReport;

farm_proto::named_enum! {
    /// Where a node failed (`failed_step` in reports).
    FailedStep {
        Drain = "drain",
        Quiesce = "quiesce",
        Operate = "operate",
        Verify = "verify",
        Return = "return",
        /// Deploy: uploading the release to the node (still in rotation).
        Stage = "stage",
        /// Deploy: pointing the site at the new release (or a hook failed).
        Switch = "switch",
        /// Deploy: switching back after a version that was not proven.
        Revert = "revert",
        /// The run journal could not be written: stopped before acting.
        Journal = "journal",
        /// Patch, reboot: the node's users fared worse than the others'
        /// after its return (it was taken out again).
        Bake = "bake",
        /// An event the machine does not expect in that phase.
        Engine = "engine",
    }
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: FailedStep,
    pub reason: String,
    /// The node is unchanged (the operation never ran): it may be returned
    /// to rotation if healthy.
    pub restore: bool,
}

/// A node's place in the machine, with what a failure carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Pending,
    /// Being taken out of the load balancer.
    Draining,
    /// Out of rotation; waiting for its in-flight requests to finish.
    Quiescing,
    /// Deploy: the site is being pointed at the new release.
    Switching,
    /// The recycle or reset is running on the node.
    Operating,
    /// The operation was proven (new PIDs, services running); probing until
    /// the node is healthy and warm.
    Verifying,
    /// Being put back and confirmed up by the load balancer.
    Returning,
    /// Deploy: the new release failed (`why`); the site is being switched
    /// back and its pool recycled before the node may be returned.
    Reverting(Box<Failure>),
    /// Back in rotation with the operation done.
    Done,
    /// Stopped; see the failure.
    Failed(Failure),
}

impl State {
    /// The phase the journal records.
    pub fn phase(&self) -> Phase {
        match self {
            State::Pending => Phase::Pending,
            State::Draining => Phase::Draining,
            State::Quiescing => Phase::Quiescing,
            State::Switching => Phase::Switching,
            State::Operating => Phase::Operating,
            State::Verifying => Phase::Verifying,
            State::Returning => Phase::Returning,
            State::Reverting(_) => Phase::Reverting,
            State::Done => Phase::Done,
            State::Failed(_) => Phase::Failed,
        }
    }
}

/// What happened, as the engine observed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Begin,
    Drained,
    DrainFailed(String),
    /// The node reports no request in flight.
    Idle,
    /// drain_timeout passed with requests still in flight.
    DrainTimedOut,
    LoadUnknown(String),
    Operated(OperationReport),
    OperationFailed(String),
    Healthy,
    Unhealthy(String),
    Returned,
    ReturnFailed(String),
    Switched,
    SwitchFailed(String),
    Reverted,
    RevertFailed(String),
}

/// What the engine must do next. Deadlines are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Drain,
    Quiesce { deadline: Instant },
    Operate { deadline: Instant },
    Probe { deadline: Instant },
    Return { deadline: Instant },
    Switch { deadline: Instant },
    Revert { deadline: Instant },
}

/// The knobs the machine decides with.
#[derive(Debug, Clone)]
pub struct Policy {
    pub operation: OperationKind,
    pub drains: bool,
    pub drain_timeout: Duration,
    pub on_drain_timeout: OnDrainTimeout,
    pub operation_timeout: Duration,
    pub healthy_timeout: Duration,
    pub return_timeout: Duration,
    /// A deploy or rollback: the site is switched to a release before the
    /// operation, and switched back when the node fails after it.
    pub deploy: bool,
}

/// A node's machine state and when it entered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub state: State,
    pub since: Instant,
}

impl NodeState {
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Pending,
            since: now,
        }
    }

    pub fn phase(&self) -> Phase {
        self.state.phase()
    }
}

/// The action a node performs on entering `state`, with its deadline;
/// `None` for states that do nothing (pending, done, failed).
fn action_of(state: &State, policy: &Policy, now: Instant) -> Option<Action> {
    Some(match state {
        State::Draining => Action::Drain,
        State::Quiescing => Action::Quiesce {
            deadline: now + policy.drain_timeout,
        },
        State::Operating => Action::Operate {
            deadline: now + policy.operation_timeout,
        },
        State::Verifying => Action::Probe {
            deadline: now + policy.healthy_timeout,
        },
        State::Returning => Action::Return {
            deadline: now + policy.return_timeout,
        },
        State::Switching => Action::Switch {
            deadline: now + policy.operation_timeout,
        },
        State::Reverting(_) => Action::Revert {
            deadline: now + policy.operation_timeout,
        },
        State::Pending | State::Done | State::Failed(_) => return None,
    })
}

/// Enters `state` now, with its action.
fn enter(state: State, policy: &Policy, now: Instant) -> (NodeState, Option<Action>) {
    let action = action_of(&state, policy, now);
    (NodeState { state, since: now }, action)
}

fn fail(
    step: FailedStep,
    reason: impl Into<String>,
    restore: bool,
    now: Instant,
) -> (NodeState, Option<Action>) {
    (
        NodeState {
            state: State::Failed(Failure {
                step,
                reason: reason.into(),
                restore,
            }),
            since: now,
        },
        None,
    )
}

/// The transition function.
pub fn next(
    policy: &Policy,
    node: &NodeState,
    event: Event,
    now: Instant,
) -> (NodeState, Option<Action>) {
    use Event as E;
    use FailedStep as F;
    use State as S;
    let enter = |state| enter(state, policy, now);
    // Once the node is out of rotation and quiet: switch first in a deploy.
    let work = || {
        if policy.deploy {
            S::Switching
        } else {
            S::Operating
        }
    };
    // After the site was switched, a failure switches it back first.
    let failed_after_switch = |step: FailedStep, reason: String| {
        if policy.deploy {
            enter(S::Reverting(Box::new(Failure {
                step,
                reason,
                restore: true,
            })))
        } else {
            fail(step, reason, false, now)
        }
    };
    match (&node.state, event) {
        (S::Pending, E::Begin) if policy.drains => enter(S::Draining),
        (S::Pending, E::Begin) => enter(work()),

        (S::Draining, E::Drained) => enter(S::Quiescing),
        // The drain may have half-happened: try to put the node back.
        (S::Draining, E::DrainFailed(e)) => fail(F::Drain, e, true, now),

        (S::Quiescing, E::Idle) => enter(work()),
        (S::Quiescing, E::DrainTimedOut) => match policy.on_drain_timeout {
            OnDrainTimeout::Proceed => enter(work()),
            OnDrainTimeout::Fail => fail(
                F::Quiesce,
                format!(
                    "requests still in flight after drain_timeout ({})",
                    crate::human::duration(policy.drain_timeout)
                ),
                true,
                now,
            ),
        },
        (S::Quiescing, E::LoadUnknown(e)) => fail(F::Quiesce, e, true, now),

        (S::Switching, E::Switched) => enter(S::Operating),
        // The agent switches back itself when a hook fails: unchanged.
        (S::Switching, E::SwitchFailed(e)) => fail(F::Switch, e, true, now),

        (S::Operating, E::Operated(report)) => match verify(policy.operation, &report) {
            Ok(()) => enter(S::Verifying),
            Err((step, reason)) => failed_after_switch(step, reason),
        },
        (S::Operating, E::OperationFailed(e)) => failed_after_switch(F::Operate, e),

        (S::Verifying, E::Healthy) if policy.drains => enter(S::Returning),
        (S::Verifying, E::Healthy) => enter(S::Done),
        (S::Verifying, E::Unhealthy(e)) => failed_after_switch(F::Verify, e),

        (S::Returning, E::Returned) => enter(S::Done),
        (S::Returning, E::ReturnFailed(e)) => fail(F::Return, e, false, now),

        // Switched back and recycled: as it was before, so it may go back
        // into rotation if healthy; the node still failed.
        (S::Reverting(why), E::Reverted) => fail(
            why.step,
            format!("{}; switched back", why.reason),
            true,
            now,
        ),
        (S::Reverting(why), E::RevertFailed(e)) => fail(
            F::Revert,
            format!("{}; switching back failed: {e}", why.reason),
            false,
            now,
        ),

        (state, event) => fail(
            F::Engine,
            format!("unexpected event {event:?} in phase {}", state.phase()),
            false,
            now,
        ),
    }
}

/// Where a resumed node picks up: the phase it was in when the controller
/// stopped, and the action of that phase, done again. Every action is safe
/// to repeat: drain and return are idempotent, the operation carries the
/// same operation id (the agent answers with its first result), probes
/// only look. `None` for a node that had not started or had finished.
///
/// A node caught reverting (`detail`: why) reverts again: the switch back
/// names the release it leaves, so it is a no-op once done.
pub fn resume_at(
    phase: Phase,
    detail: Option<&str>,
    policy: &Policy,
    now: Instant,
) -> Option<(NodeState, Action)> {
    let state = match phase {
        Phase::Draining => State::Draining,
        Phase::Quiescing => State::Quiescing,
        Phase::Switching => State::Switching,
        Phase::Operating => State::Operating,
        Phase::Verifying => State::Verifying,
        Phase::Returning => State::Returning,
        Phase::Reverting => State::Reverting(Box::new(Failure {
            step: FailedStep::Verify,
            reason: detail
                .unwrap_or("the new release failed before the controller stopped")
                .to_string(),
            restore: true,
        })),
        Phase::Pending | Phase::Staging | Phase::Staged | Phase::Done | Phase::Failed => {
            return None
        }
    };
    let (node, action) = enter(state, policy, now);
    Some((node, action?))
}

/// Proof that the operation happened, from the agent's own report: new
/// worker PIDs for every pool that had one, or IIS services running.
pub fn verify(op: OperationKind, r: &OperationReport) -> Result<(), (FailedStep, String)> {
    if !r.success {
        let step = if r.failed_step.is_empty() {
            "?"
        } else {
            r.failed_step.as_str()
        };
        return Err((
            FailedStep::Operate,
            format!("{op} failed at step `{step}`: {}", r.error),
        ));
    }
    for p in &r.pools {
        if p.state_after != PoolState::Started {
            return Err((
                FailedStep::Verify,
                format!("pool {} is {} after the {op}", p.name, p.state_after),
            ));
        }
        if op == OperationKind::Recycle && !p.replaced() {
            return Err((
                FailedStep::Verify,
                format!("pool {}: workers not replaced ({})", p.name, p.summary()),
            ));
        }
    }
    // A reset, and a patch or reboot (the server restarted): IIS runs.
    if op == OperationKind::Reset || op.restarts_server() {
        for svc in ["W3SVC", "WAS"] {
            match r.services.get(svc) {
                Some(ServiceState::Running) => {}
                Some(other) => {
                    return Err((
                        FailedStep::Verify,
                        format!("{svc} is {other} after the {op}"),
                    ))
                }
                None => {
                    return Err((
                        FailedStep::Verify,
                        format!("{svc} is missing after the {op}"),
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::PoolChange;
    use farm_proto::domain::{PoolState, ServiceState};

    fn policy(drains: bool) -> Policy {
        Policy {
            operation: OperationKind::Recycle,
            drains,
            drain_timeout: Duration::from_secs(60),
            on_drain_timeout: OnDrainTimeout::Fail,
            operation_timeout: Duration::from_secs(300),
            healthy_timeout: Duration::from_secs(120),
            return_timeout: Duration::from_secs(30),
            deploy: false,
        }
    }

    fn report(before: &[u32], after: &[u32]) -> OperationReport {
        OperationReport {
            success: true,
            pools: vec![PoolChange {
                name: "Shop".into(),
                pids_before: before.to_vec(),
                pids_after: after.to_vec(),
                state_after: PoolState::Started,
                had_no_worker: before.is_empty(),
            }],
            ..Default::default()
        }
    }

    /// A drained node's events up to a good recycle.
    fn up_to_operated() -> Vec<Event> {
        vec![
            Event::Begin,
            Event::Drained,
            Event::Idle,
            Event::Operated(report(&[1], &[2])),
        ]
    }

    /// Runs events through the machine, returning the phases and actions.
    fn drive(p: &Policy, events: Vec<Event>) -> (Vec<Phase>, Vec<Option<Action>>, NodeState) {
        let t0 = Instant::now();
        let mut s = NodeState::new(t0);
        let (mut phases, mut actions) = (vec![], vec![]);
        for (i, e) in events.into_iter().enumerate() {
            let (n, a) = next(p, &s, e, t0 + Duration::from_secs(i as u64));
            phases.push(n.phase());
            actions.push(a);
            s = n;
        }
        (phases, actions, s)
    }

    #[test]
    fn happy_path_goes_through_every_phase_in_order() {
        let mut events = up_to_operated();
        events.extend([E::Healthy, E::Returned]);
        let (phases, actions, _) = drive(&policy(true), events);
        assert_eq!(
            phases,
            [
                Phase::Draining,
                Phase::Quiescing,
                Phase::Operating,
                Phase::Verifying,
                Phase::Returning,
                Phase::Done
            ]
        );
        assert_eq!(actions[0], Some(Action::Drain));
        assert!(matches!(actions[1], Some(Action::Quiesce { .. })));
        assert!(matches!(actions[2], Some(Action::Operate { .. })));
        assert!(matches!(actions[3], Some(Action::Probe { .. })));
        assert!(matches!(actions[4], Some(Action::Return { .. })));
        assert_eq!(actions[5], None);
    }

    use Event as E;

    #[test]
    fn deadlines_come_from_the_time_passed_in() {
        let p = policy(true);
        let t0 = Instant::now();
        let s = NodeState {
            state: State::Draining,
            since: t0,
        };
        let now = t0 + Duration::from_secs(7);
        let (n, a) = next(&p, &s, E::Drained, now);
        assert_eq!(n.since, now);
        assert_eq!(
            a,
            Some(Action::Quiesce {
                deadline: now + Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn without_drain_the_lb_phases_are_skipped() {
        let (phases, _, _) = drive(
            &policy(false),
            vec![E::Begin, E::Operated(report(&[1], &[2])), E::Healthy],
        );
        assert_eq!(phases, [Phase::Operating, Phase::Verifying, Phase::Done]);
    }

    #[test]
    fn same_pids_after_recycle_fail_verification_and_keep_node_out() {
        let (_, _, s) = drive(
            &policy(true),
            vec![
                E::Begin,
                E::Drained,
                E::Idle,
                E::Operated(report(&[1, 2], &[2, 3])),
            ],
        );
        match s.state {
            State::Failed(Failure {
                step,
                reason,
                restore,
            }) => {
                assert_eq!(step, FailedStep::Verify);
                assert!(reason.contains("not replaced"), "{reason}");
                assert!(!restore);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pool_without_worker_is_not_a_failure() {
        let (phases, _, _) = drive(
            &policy(false),
            vec![E::Begin, E::Operated(report(&[], &[])), E::Healthy],
        );
        assert_eq!(phases.last(), Some(&Phase::Done));
    }

    #[test]
    fn agent_reported_failure_names_the_step() {
        let r = OperationReport {
            success: false,
            failed_step: "start".into(),
            error: "IIS is STOPPED".into(),
            ..Default::default()
        };
        let (_, _, s) = drive(&policy(false), vec![E::Begin, E::Operated(r)]);
        assert!(
            matches!(s.state, State::Failed(Failure { step: FailedStep::Operate, ref reason, .. }) if reason.contains("`start`"))
        );
    }

    #[test]
    fn reset_needs_services_running() {
        let mut p = policy(false);
        p.operation = OperationKind::Reset;
        let mut r = report(&[1], &[]);
        r.services.insert("W3SVC".into(), ServiceState::Running);
        r.services.insert("WAS".into(), ServiceState::Stopped);
        let (_, _, s) = drive(&p, vec![E::Begin, E::Operated(r.clone())]);
        assert!(matches!(
            s.state,
            State::Failed(Failure {
                step: FailedStep::Verify,
                ..
            })
        ));
        r.services.insert("WAS".into(), ServiceState::Running);
        let (phases, _, _) = drive(&p, vec![E::Begin, E::Operated(r)]);
        assert_eq!(phases.last(), Some(&Phase::Verifying));
    }

    #[test]
    fn drain_timeout_fails_by_default_and_restores_the_node() {
        let (_, _, s) = drive(&policy(true), vec![E::Begin, E::Drained, E::DrainTimedOut]);
        assert!(matches!(
            s.state,
            State::Failed(Failure {
                step: FailedStep::Quiesce,
                restore: true,
                ..
            })
        ));
    }

    #[test]
    fn drain_timeout_may_proceed_by_policy() {
        let mut p = policy(true);
        p.on_drain_timeout = OnDrainTimeout::Proceed;
        let (phases, _, _) = drive(&p, vec![E::Begin, E::Drained, E::DrainTimedOut]);
        assert_eq!(phases.last(), Some(&Phase::Operating));
    }

    #[test]
    fn never_healthy_fails_at_verify_and_stays_out() {
        let mut events = up_to_operated();
        events.push(E::Unhealthy("500".into()));
        let (_, _, s) = drive(&policy(true), events);
        assert!(matches!(
            s.state,
            State::Failed(Failure {
                step: FailedStep::Verify,
                restore: false,
                ..
            })
        ));
    }

    #[test]
    fn resume_repeats_the_action_of_the_phase_it_stopped_in() {
        let p = policy(true);
        let now = Instant::now();
        let (s, a) = resume_at(Phase::Operating, None, &p, now).unwrap();
        assert_eq!(s.state, State::Operating);
        assert_eq!(
            a,
            Action::Operate {
                deadline: now + p.operation_timeout
            }
        );
        assert_eq!(
            resume_at(Phase::Returning, None, &p, now).unwrap().1,
            Action::Return {
                deadline: now + p.return_timeout
            }
        );
        assert_eq!(
            resume_at(Phase::Draining, None, &p, now).unwrap().1,
            Action::Drain
        );
        for not_mid_run in [Phase::Pending, Phase::Done, Phase::Failed] {
            assert!(resume_at(not_mid_run, None, &p, now).is_none());
        }
        // A resumed node then goes on as usual.
        let (s, _) = resume_at(Phase::Verifying, None, &p, now).unwrap();
        assert_eq!(next(&p, &s, Event::Healthy, now).0.state, State::Returning);
    }

    #[test]
    fn a_deploy_switches_before_operating_and_reverts_an_unproven_version() {
        let mut p = policy(true);
        p.deploy = true;
        let mut events = up_to_operated();
        events.insert(3, E::Switched);
        events.push(E::Healthy);
        events.push(E::Returned);
        let (phases, actions, _) = drive(&p, events);
        assert_eq!(
            phases,
            [
                Phase::Draining,
                Phase::Quiescing,
                Phase::Switching,
                Phase::Operating,
                Phase::Verifying,
                Phase::Returning,
                Phase::Done
            ]
        );
        assert!(matches!(actions[2], Some(Action::Switch { .. })));
        // The new version is not proven: switched back, then failed and
        // free to go back into rotation if healthy.
        let mut events = up_to_operated();
        events.insert(3, E::Switched);
        events.push(E::Unhealthy("/version.txt does not say 2.0.0".into()));
        let (phases, actions, s) = drive(&p, events.clone());
        assert_eq!(phases.last(), Some(&Phase::Reverting));
        assert!(matches!(actions.last(), Some(Some(Action::Revert { .. }))));
        let (s, _) = next(&p, &s, E::Reverted, Instant::now());
        match s.state {
            State::Failed(Failure {
                step: FailedStep::Verify,
                restore: true,
                reason,
            }) => assert!(
                reason.contains("2.0.0") && reason.contains("switched back"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // A failed switch leaves the node as it was (the agent switches
        // back itself when a hook fails).
        let (_, _, s) = drive(
            &p,
            vec![
                E::Begin,
                E::Drained,
                E::Idle,
                E::SwitchFailed("hook".into()),
            ],
        );
        assert!(matches!(
            s.state,
            State::Failed(Failure {
                step: FailedStep::Switch,
                restore: true,
                ..
            })
        ));
        // Switching back that fails keeps the node out.
        let (_, _, s) = drive(&p, events);
        let (s, _) = next(&p, &s, E::RevertFailed("agent gone".into()), Instant::now());
        assert!(matches!(
            s.state,
            State::Failed(Failure {
                step: FailedStep::Revert,
                restore: false,
                ..
            })
        ));
    }

    #[test]
    fn unexpected_events_fail_instead_of_guessing() {
        let (_, _, s) = drive(&policy(true), vec![E::Begin, E::Healthy]);
        assert!(matches!(
            s.state,
            State::Failed(Failure {
                step: FailedStep::Engine,
                ..
            })
        ));
    }
}
