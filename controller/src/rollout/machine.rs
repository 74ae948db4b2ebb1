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
use std::time::{Duration, Instant};

use farm_inventory::OnDrainTimeout;

use crate::agent::ops_summary;
use crate::agent::{Operation, OperationReport};

/// Where a node is in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Pending,
    /// Being taken out of the load balancer.
    Draining,
    /// Out of rotation; waiting for its in-flight requests to finish.
    Quiescing,
    /// The recycle or reset is running on the node.
    Operating,
    /// The operation was proven (new PIDs, services running); probing until
    /// the node is healthy and warm.
    Verifying,
    /// Being put back and confirmed up by the load balancer.
    Returning,
    /// Back in rotation with the operation done.
    Done,
    /// Stopped at `step`. `restore` says the node is unchanged (the
    /// operation never ran) and may be returned to rotation if healthy.
    Failed {
        step: &'static str,
        reason: String,
        restore: bool,
    },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Draining => "draining",
            Phase::Quiescing => "quiescing",
            Phase::Operating => "operating",
            Phase::Verifying => "verifying",
            Phase::Returning => "returning",
            Phase::Done => "done",
            Phase::Failed { .. } => "failed",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Done | Phase::Failed { .. })
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
}

/// What the engine must do next. Deadlines are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Drain,
    Quiesce { deadline: Instant },
    Operate { deadline: Instant },
    Probe { deadline: Instant },
    Return { deadline: Instant },
}

/// The knobs the machine decides with.
#[derive(Debug, Clone)]
pub struct Policy {
    pub operation: Operation,
    pub drains: bool,
    pub drain_timeout: Duration,
    pub on_drain_timeout: OnDrainTimeout,
    pub operation_timeout: Duration,
    pub healthy_timeout: Duration,
    pub return_timeout: Duration,
}

/// A node's machine state: its phase and when it entered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub phase: Phase,
    pub since: Instant,
}

impl NodeState {
    pub fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Pending,
            since: now,
        }
    }
}

/// The action a node performs on entering `phase`, with its deadline;
/// `None` for phases that do nothing (pending, done, failed).
fn action_of(phase: &Phase, policy: &Policy, now: Instant) -> Option<Action> {
    Some(match phase {
        Phase::Draining => Action::Drain,
        Phase::Quiescing => Action::Quiesce {
            deadline: now + policy.drain_timeout,
        },
        Phase::Operating => Action::Operate {
            deadline: now + policy.operation_timeout,
        },
        Phase::Verifying => Action::Probe {
            deadline: now + policy.healthy_timeout,
        },
        Phase::Returning => Action::Return {
            deadline: now + policy.return_timeout,
        },
        Phase::Pending | Phase::Done | Phase::Failed { .. } => return None,
    })
}

/// Enters `phase` now, with its action.
fn enter(phase: Phase, policy: &Policy, now: Instant) -> (NodeState, Option<Action>) {
    let action = action_of(&phase, policy, now);
    (NodeState { phase, since: now }, action)
}

fn fail(
    step: &'static str,
    reason: impl Into<String>,
    restore: bool,
    now: Instant,
) -> (NodeState, Option<Action>) {
    (
        NodeState {
            phase: Phase::Failed {
                step,
                reason: reason.into(),
                restore,
            },
            since: now,
        },
        None,
    )
}

/// The transition function.
pub fn next(
    policy: &Policy,
    state: &NodeState,
    event: Event,
    now: Instant,
) -> (NodeState, Option<Action>) {
    use Event as E;
    use Phase as P;
    let enter = |phase| enter(phase, policy, now);
    match (&state.phase, event) {
        (P::Pending, E::Begin) if policy.drains => enter(P::Draining),
        (P::Pending, E::Begin) => enter(P::Operating),

        (P::Draining, E::Drained) => enter(P::Quiescing),
        // The drain may have half-happened: try to put the node back.
        (P::Draining, E::DrainFailed(e)) => fail("drain", e, true, now),

        (P::Quiescing, E::Idle) => enter(P::Operating),
        (P::Quiescing, E::DrainTimedOut) => match policy.on_drain_timeout {
            OnDrainTimeout::Proceed => enter(P::Operating),
            OnDrainTimeout::Fail => fail(
                "quiesce",
                format!(
                    "requests still in flight after drain_timeout ({})",
                    humantime::format_duration(policy.drain_timeout)
                ),
                true,
                now,
            ),
        },
        (P::Quiescing, E::LoadUnknown(e)) => fail(
            "quiesce",
            format!("could not read in-flight requests: {e}"),
            true,
            now,
        ),

        (P::Operating, E::Operated(report)) => match verify(policy.operation, &report) {
            Ok(()) => enter(P::Verifying),
            Err((step, reason)) => fail(step, reason, false, now),
        },
        (P::Operating, E::OperationFailed(e)) => fail("operate", e, false, now),

        (P::Verifying, E::Healthy) if policy.drains => enter(P::Returning),
        (P::Verifying, E::Healthy) => enter(P::Done),
        (P::Verifying, E::Unhealthy(e)) => fail("verify", e, false, now),

        (P::Returning, E::Returned) => enter(P::Done),
        (P::Returning, E::ReturnFailed(e)) => fail("return", e, false, now),

        (phase, event) => fail(
            "engine",
            format!("unexpected event {event:?} in phase {}", phase.name()),
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
pub fn resume_at(phase: &str, policy: &Policy, now: Instant) -> Option<(NodeState, Action)> {
    let phase = match phase {
        "draining" => Phase::Draining,
        "quiescing" => Phase::Quiescing,
        "operating" => Phase::Operating,
        "verifying" => Phase::Verifying,
        "returning" => Phase::Returning,
        _ => return None,
    };
    let (state, action) = enter(phase, policy, now);
    Some((state, action?))
}

/// Proof that the operation happened, from the agent's own report: new
/// worker PIDs for every pool that had one, or IIS services running.
pub fn verify(op: Operation, r: &OperationReport) -> Result<(), (&'static str, String)> {
    if !r.success {
        let step = if r.failed_step.is_empty() {
            "?"
        } else {
            r.failed_step.as_str()
        };
        return Err((
            "operate",
            format!("{} failed at step `{step}`: {}", op.as_str(), r.error),
        ));
    }
    for p in &r.pools {
        if p.state_after != "Started" {
            return Err((
                "verify",
                format!(
                    "pool {} is {} after the {}",
                    p.name,
                    p.state_after,
                    op.as_str()
                ),
            ));
        }
        if op == Operation::Recycle && !p.had_no_worker {
            let replaced = !p.pids_after.is_empty()
                && p.pids_after.iter().all(|pid| !p.pids_before.contains(pid));
            if !replaced {
                return Err((
                    "verify",
                    format!("pool {}: workers not replaced ({})", p.name, ops_summary(p)),
                ));
            }
        }
    }
    if op == Operation::Reset {
        for svc in ["W3SVC", "WAS"] {
            let state = r.services.get(svc).map(String::as_str).unwrap_or("missing");
            if state != "RUNNING" {
                return Err(("verify", format!("{svc} is {state} after the reset")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::PoolChange;

    fn policy(drains: bool) -> Policy {
        Policy {
            operation: Operation::Recycle,
            drains,
            drain_timeout: Duration::from_secs(60),
            on_drain_timeout: OnDrainTimeout::Fail,
            operation_timeout: Duration::from_secs(300),
            healthy_timeout: Duration::from_secs(120),
            return_timeout: Duration::from_secs(30),
        }
    }

    fn report(before: &[u32], after: &[u32]) -> OperationReport {
        OperationReport {
            success: true,
            pools: vec![PoolChange {
                name: "Shop".into(),
                pids_before: before.to_vec(),
                pids_after: after.to_vec(),
                state_after: "Started".into(),
                had_no_worker: before.is_empty(),
            }],
            ..Default::default()
        }
    }

    /// Runs events through the machine, returning the phases and actions.
    fn drive(
        p: &Policy,
        events: Vec<Event>,
    ) -> (Vec<&'static str>, Vec<Option<Action>>, NodeState) {
        let t0 = Instant::now();
        let mut s = NodeState::new(t0);
        let (mut phases, mut actions) = (vec![], vec![]);
        for (i, e) in events.into_iter().enumerate() {
            let (n, a) = next(p, &s, e, t0 + Duration::from_secs(i as u64));
            phases.push(n.phase.name());
            actions.push(a);
            s = n;
        }
        (phases, actions, s)
    }

    #[test]
    fn happy_path_goes_through_every_phase_in_order() {
        let (phases, actions, _) = drive(
            &policy(true),
            vec![
                E::Begin,
                E::Drained,
                E::Idle,
                E::Operated(report(&[1], &[2])),
                E::Healthy,
                E::Returned,
            ],
        );
        assert_eq!(
            phases,
            [
                "draining",
                "quiescing",
                "operating",
                "verifying",
                "returning",
                "done"
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
            phase: Phase::Draining,
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
        assert_eq!(phases, ["operating", "verifying", "done"]);
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
        match s.phase {
            Phase::Failed {
                step,
                reason,
                restore,
            } => {
                assert_eq!(step, "verify");
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
        assert_eq!(phases.last(), Some(&"done"));
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
            matches!(s.phase, Phase::Failed { step: "operate", ref reason, .. } if reason.contains("`start`"))
        );
    }

    #[test]
    fn reset_needs_services_running() {
        let mut p = policy(false);
        p.operation = Operation::Reset;
        let mut r = report(&[1], &[]);
        r.services.insert("W3SVC".into(), "RUNNING".into());
        r.services.insert("WAS".into(), "STOPPED".into());
        let (_, _, s) = drive(&p, vec![E::Begin, E::Operated(r.clone())]);
        assert!(matches!(s.phase, Phase::Failed { step: "verify", .. }));
        r.services.insert("WAS".into(), "RUNNING".into());
        let (phases, _, _) = drive(&p, vec![E::Begin, E::Operated(r)]);
        assert_eq!(phases.last(), Some(&"verifying"));
    }

    #[test]
    fn drain_timeout_fails_by_default_and_restores_the_node() {
        let (_, _, s) = drive(&policy(true), vec![E::Begin, E::Drained, E::DrainTimedOut]);
        assert!(matches!(
            s.phase,
            Phase::Failed {
                step: "quiesce",
                restore: true,
                ..
            }
        ));
    }

    #[test]
    fn drain_timeout_may_proceed_by_policy() {
        let mut p = policy(true);
        p.on_drain_timeout = OnDrainTimeout::Proceed;
        let (phases, _, _) = drive(&p, vec![E::Begin, E::Drained, E::DrainTimedOut]);
        assert_eq!(phases.last(), Some(&"operating"));
    }

    #[test]
    fn never_healthy_fails_at_verify_and_stays_out() {
        let (_, _, s) = drive(
            &policy(true),
            vec![
                E::Begin,
                E::Drained,
                E::Idle,
                E::Operated(report(&[1], &[2])),
                E::Unhealthy("500".into()),
            ],
        );
        assert!(matches!(
            s.phase,
            Phase::Failed {
                step: "verify",
                restore: false,
                ..
            }
        ));
    }

    #[test]
    fn resume_repeats_the_action_of_the_phase_it_stopped_in() {
        let p = policy(true);
        let now = Instant::now();
        let (s, a) = resume_at("operating", &p, now).unwrap();
        assert_eq!(s.phase, Phase::Operating);
        assert_eq!(
            a,
            Action::Operate {
                deadline: now + p.operation_timeout
            }
        );
        assert_eq!(
            resume_at("returning", &p, now).unwrap().1,
            Action::Return {
                deadline: now + p.return_timeout
            }
        );
        assert_eq!(resume_at("draining", &p, now).unwrap().1, Action::Drain);
        for not_mid_run in ["pending", "done", "failed", "nonsense"] {
            assert!(resume_at(not_mid_run, &p, now).is_none());
        }
        // A resumed node then goes on as usual.
        let (s, _) = resume_at("verifying", &p, now).unwrap();
        assert_eq!(next(&p, &s, Event::Healthy, now).0.phase, Phase::Returning);
    }

    #[test]
    fn unexpected_events_fail_instead_of_guessing() {
        let (_, _, s) = drive(&policy(true), vec![E::Begin, E::Healthy]);
        assert!(matches!(s.phase, Phase::Failed { step: "engine", .. }));
    }
}
