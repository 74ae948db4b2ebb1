//! The vocabulary both sides share: IIS service and pool states, what an
//! operation is, how a node ended, where a node is in a run, and the
//! operation id. The wire enums of [`crate::v1`] convert into these (and
//! back) here, next to the generated code, so the controller and the agent
//! never compare a state as a string.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// A Windows service's state, as `sc query` numbers it (the text is
/// localized; the number is not). Serialized as `sc` spells it: `RUNNING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceState {
    Stopped,
    StartPending,
    StopPending,
    Running,
    ContinuePending,
    PausePending,
    Paused,
    /// `OpenService FAILED 1060`: the service does not exist.
    NotInstalled,
    /// The agent could not tell (an unknown wire value).
    Unknown,
}

impl ServiceState {
    /// The numeric `STATE` of `sc query` (1 STOPPED ... 7 PAUSED).
    pub fn from_sc_code(n: u8) -> Option<ServiceState> {
        Some(match n {
            1 => ServiceState::Stopped,
            2 => ServiceState::StartPending,
            3 => ServiceState::StopPending,
            4 => ServiceState::Running,
            5 => ServiceState::ContinuePending,
            6 => ServiceState::PausePending,
            7 => ServiceState::Paused,
            _ => return None,
        })
    }

    /// A wire value; numbers this side does not know are `Unknown`.
    pub fn from_wire(v: i32) -> ServiceState {
        pb::ServiceState::try_from(v).map_or(ServiceState::Unknown, Into::into)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Stopped => "STOPPED",
            ServiceState::StartPending => "START_PENDING",
            ServiceState::StopPending => "STOP_PENDING",
            ServiceState::Running => "RUNNING",
            ServiceState::ContinuePending => "CONTINUE_PENDING",
            ServiceState::PausePending => "PAUSE_PENDING",
            ServiceState::Paused => "PAUSED",
            ServiceState::NotInstalled => "NOT_INSTALLED",
            ServiceState::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<pb::ServiceState> for ServiceState {
    fn from(s: pb::ServiceState) -> Self {
        match s {
            pb::ServiceState::Stopped => ServiceState::Stopped,
            pb::ServiceState::StartPending => ServiceState::StartPending,
            pb::ServiceState::StopPending => ServiceState::StopPending,
            pb::ServiceState::Running => ServiceState::Running,
            pb::ServiceState::ContinuePending => ServiceState::ContinuePending,
            pb::ServiceState::PausePending => ServiceState::PausePending,
            pb::ServiceState::Paused => ServiceState::Paused,
            pb::ServiceState::NotInstalled => ServiceState::NotInstalled,
            pb::ServiceState::Unspecified => ServiceState::Unknown,
        }
    }
}

impl From<ServiceState> for pb::ServiceState {
    fn from(s: ServiceState) -> Self {
        match s {
            ServiceState::Stopped => pb::ServiceState::Stopped,
            ServiceState::StartPending => pb::ServiceState::StartPending,
            ServiceState::StopPending => pb::ServiceState::StopPending,
            ServiceState::Running => pb::ServiceState::Running,
            ServiceState::ContinuePending => pb::ServiceState::ContinuePending,
            ServiceState::PausePending => pb::ServiceState::PausePending,
            ServiceState::Paused => pb::ServiceState::Paused,
            ServiceState::NotInstalled => pb::ServiceState::NotInstalled,
            ServiceState::Unknown => pb::ServiceState::Unspecified,
        }
    }
}

/// An application pool's state, as appcmd spells it (`Started`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PoolState {
    Starting,
    Started,
    Stopping,
    Stopped,
    Unknown,
}

impl PoolState {
    /// appcmd's `state:` value, case-insensitively; anything else is
    /// `Unknown`.
    pub fn parse(s: &str) -> PoolState {
        match s.trim().to_ascii_lowercase().as_str() {
            "started" => PoolState::Started,
            "starting" => PoolState::Starting,
            "stopped" => PoolState::Stopped,
            "stopping" => PoolState::Stopping,
            _ => PoolState::Unknown,
        }
    }

    pub fn from_wire(v: i32) -> PoolState {
        pb::PoolState::try_from(v).map_or(PoolState::Unknown, Into::into)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Starting => "Starting",
            PoolState::Started => "Started",
            PoolState::Stopping => "Stopping",
            PoolState::Stopped => "Stopped",
            PoolState::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<pb::PoolState> for PoolState {
    fn from(s: pb::PoolState) -> Self {
        match s {
            pb::PoolState::Starting => PoolState::Starting,
            pb::PoolState::Started => PoolState::Started,
            pb::PoolState::Stopping => PoolState::Stopping,
            pb::PoolState::Stopped => PoolState::Stopped,
            pb::PoolState::Unknown => PoolState::Unknown,
        }
    }
}

impl From<PoolState> for pb::PoolState {
    fn from(s: PoolState) -> Self {
        match s {
            PoolState::Starting => pb::PoolState::Starting,
            PoolState::Started => pb::PoolState::Started,
            PoolState::Stopping => pb::PoolState::Stopping,
            PoolState::Stopped => pb::PoolState::Stopped,
            PoolState::Unknown => pb::PoolState::Unknown,
        }
    }
}

/// A word that is not one of a vocabulary's (a [`named_enum!`]'s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not one of {expected}")]
pub struct UnknownName {
    pub given: String,
    /// The words there are, quoted and comma-separated.
    pub expected: String,
}

/// A string that is not an operation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationIdError {
    #[error("`{0}` is not an operation id like `<run>.<node>.<step>`")]
    Shape(String),
    #[error(transparent)]
    Step(#[from] UnknownName),
}

/// Defines a plain enum whose variants have one name each (their serde
/// name, `Display` and `FromStr`), from one list:
/// `named_enum! { /// doc  Name { /// doc  Variant = "variant", ... } }`.
#[macro_export]
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::UnknownName;
            fn from_str(s: &str) -> Result<Self, $crate::domain::UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::domain::UnknownName {
                        given: other.to_string(),
                        expected: [$(concat!("`", $text, "`")),+].join(", "),
                    }),
                }
            }
        }
    };
}

named_enum! {
    /// What a rolling run does to each node.
    OperationKind {
        /// Recycle application pools (overlapped: no connection loss).
        Recycle = "recycle",
        /// Full IIS reset (stop, force if needed, start, verify).
        Reset = "reset",
        /// Stage a new release, switch the site to it, recycle its pool,
        /// prove the new version answers.
        Deploy = "deploy",
        /// Switch the site back to a release still kept on the node.
        Rollback = "rollback",
        /// Install the server's Windows updates and restart it when they
        /// need it.
        Patch = "patch",
        /// Restart the server.
        Reboot = "reboot",
    }
}

impl OperationKind {
    /// A deploy or a rollback: the site's content changes.
    pub fn switches_release(self) -> bool {
        matches!(self, OperationKind::Deploy | OperationKind::Rollback)
    }

    /// A patch or a reboot: the server itself restarts.
    pub fn restarts_server(self) -> bool {
        matches!(self, OperationKind::Patch | OperationKind::Reboot)
    }
}

named_enum! {
    /// The agent calls that take an operation id, as the agent records
    /// them (the record's `kind`; the wire's `OperationRecord.kind`).
    CallKind {
        Recycle = "recycle",
        Reset = "reset",
        Drain = "drain",
        Undrain = "undrain",
        Stage = "stage",
        Switch = "switch",
        Prune = "prune",
        InstallUpdates = "install-updates",
        Reboot = "reboot",
    }
}

impl CallKind {
    /// Recorded when it starts: it acts on IIS, and one cut by a restart
    /// must not run again under the same id. The others converge on a
    /// state (drained, staged, switched) and may simply be asked again.
    pub fn recorded_at_start(self) -> bool {
        matches!(
            self,
            CallKind::Recycle | CallKind::Reset | CallKind::InstallUpdates | CallKind::Reboot
        )
    }
}

named_enum! {
    /// The load balancers whose members a node's agent drives (their
    /// runtime controls are local to a Windows server).
    LbMemberKind {
        Arr = "arr",
        Nlb = "nlb",
    }
}

named_enum! {
    /// What an LbMember call does.
    LbMemberAction {
        /// Only read the member's state.
        State = "state",
        Drain = "drain",
        Return = "return",
    }
}

impl LbMemberAction {
    /// Drain and return change the member (an operation id, a lease).
    pub fn changes(self) -> bool {
        self != LbMemberAction::State
    }
}

named_enum! {
    /// ARR's `SetState` for a drain: `GracefulStop` (requests in flight
    /// finish, nothing new) or `Drain` (affinitized clients keep coming).
    ArrDrainState {
        GracefulStop = "GracefulStop",
        Drain = "Drain",
    }
}

named_enum! {
    /// The steps of the agent's verified procedures (recycle, reset), as
    /// progress events and a failed result name them (`failed_step`).
    ProcedureStep {
        /// Which pools, from the node's own configuration.
        Resolve = "resolve",
        /// IIS's services and pools as they are before.
        Status = "status",
        Recycle = "recycle",
        Stop = "stop",
        /// `iisreset /stop` ran out: its services are killed.
        ForceStop = "force-stop",
        Start = "start",
        /// New workers and running services seen, within the verify timeout.
        Verify = "verify",
        /// Windows updates searched, downloaded and installed.
        Install = "install",
    }
}

named_enum! {
    /// How a node ended in a run.
    NodeOutcome {
        Succeeded = "succeeded",
        Failed = "failed",
        /// Not started (halted run, window closed, stopped by the operator).
        Skipped = "skipped",
    }
}

named_enum! {
    /// Where a node is in a run, as the run journal records it. A phase
    /// this list does not know is an error, never a default.
    Phase {
        /// Not started yet.
        Pending = "pending",
        /// Deploy: the package is being uploaded, the node still serves.
        Staging = "staging",
        /// Deploy: the release is on the node, waiting for its turn.
        Staged = "staged",
        /// Being taken out of the load balancer.
        Draining = "draining",
        /// Out of rotation; waiting for the LB's sessions and the node's
        /// own in-flight requests to be gone.
        Quiescing = "quiescing",
        /// Deploy: the site is being pointed at the new release.
        Switching = "switching",
        /// The recycle or reset is running on the node.
        Operating = "operating",
        /// The operation was proven; probing until healthy and warm.
        Verifying = "verifying",
        /// Being put back and confirmed up by the load balancer.
        Returning = "returning",
        /// Deploy: the new version was not proven; switching the site back
        /// to the release it served before, and recycling.
        Reverting = "reverting",
        /// Back in rotation with the operation done.
        Done = "done",
        /// Stopped at a step; see the record's detail.
        Failed = "failed",
    }
}

impl Phase {
    /// The node is finished in this run (done or failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }

    /// The node may be out of rotation because of the run: between the
    /// drain and the confirmed return.
    pub fn is_mid_way(self) -> bool {
        !matches!(
            self,
            Phase::Pending | Phase::Staging | Phase::Staged | Phase::Done | Phase::Failed
        )
    }
}

named_enum! {
    /// The step an operation id names.
    OpStep {
        Drain = "drain",
        Undrain = "undrain",
        /// Putting back a node whose operation never ran.
        Restore = "restore",
        Recycle = "recycle",
        Reset = "reset",
        Stage = "stage",
        Switch = "switch",
        /// Switching back after a version that was not proven...
        Revert = "revert",
        /// ...and recycling the pool after it.
        RevertRecycle = "revert-recycle",
        Prune = "prune",
        /// Installing the server's updates.
        Install = "install",
        /// Restarting the server.
        Reboot = "reboot",
        /// Memory dumps of the pools' workers (one id per node: the agent
        /// answers it again per pool).
        Dump = "dump",
    }
}

impl From<OperationKind> for OpStep {
    /// The step of the operation proper: a deploy's or a rollback's is the
    /// recycle of the site's pool.
    fn from(k: OperationKind) -> Self {
        match k {
            OperationKind::Recycle | OperationKind::Deploy | OperationKind::Rollback => {
                OpStep::Recycle
            }
            OperationKind::Reset => OpStep::Reset,
            OperationKind::Patch => OpStep::Install,
            OperationKind::Reboot => OpStep::Reboot,
        }
    }
}

/// An operation id, `{run}.{node}.{step}`: every mutating call carries
/// one, and the agent answers a repeated id with its first result. The run
/// id has no dot; a node name may have some, so the node is what lies
/// between the first and the last dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperationId {
    pub run: String,
    pub node: String,
    pub step: OpStep,
}

impl OperationId {
    pub fn new(run: &str, node: &str, step: OpStep) -> Self {
        Self {
            run: run.to_string(),
            node: node.to_string(),
            step,
        }
    }

    /// The ids of attempt `attempt` at a node: the first is the run's own,
    /// a retry (a resume doing a failed node again) is `{run}_retry{n}`, so
    /// the agent does not answer it with the first attempt's result and
    /// still counts it as the run's under its lease.
    pub fn attempt(run: &str, node: &str, step: OpStep, attempt: u32) -> Self {
        match attempt {
            0 | 1 => Self::new(run, node, step),
            n => Self::new(&format!("{run}{RETRY_MARK}{n}"), node, step),
        }
    }

    /// The run an operation id belongs to: what comes before its first
    /// dot (the whole id when it has none, as simple clients send), less a
    /// retry's `_retryN`.
    pub fn run_of(id: &str) -> &str {
        let run = id.split_once('.').map_or(id, |(run, _)| run);
        let run = match run.rsplit_once(RETRY_MARK) {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => run,
        };
        run.strip_suffix(ROLLBACK_MARK).unwrap_or(run)
    }

    /// The run id under which a run's automatic rollback (a failed canary
    /// analysis) acts: its ids differ from the deploy's at the same node,
    /// and still count as the run's under its lease.
    pub fn rollback_run(run: &str) -> String {
        format!("{run}{ROLLBACK_MARK}")
    }
}

/// Between a run id and a retry's attempt number in operation ids (run
/// ids never hold `_`).
const RETRY_MARK: &str = "_retry";
/// After a run id in the ids of its automatic rollback.
const ROLLBACK_MARK: &str = "_rollback";

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.run, self.node, self.step)
    }
}

impl FromStr for OperationId {
    type Err = OperationIdError;
    fn from_str(s: &str) -> Result<Self, OperationIdError> {
        let bad = || OperationIdError::Shape(s.to_string());
        let (run, rest) = s.split_once('.').ok_or_else(bad)?;
        let (node, step) = rest.rsplit_once('.').ok_or_else(bad)?;
        if run.is_empty() || node.is_empty() {
            return Err(bad());
        }
        Ok(OperationId {
            run: run.into(),
            node: node.into(),
            step: step.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_round_trip_with_dotted_node_names() {
        let id = OperationId::new("20261121T105500-1a2b3c", "web01.corp", OpStep::Recycle);
        let text = id.to_string();
        assert_eq!(text, "20261121T105500-1a2b3c.web01.corp.recycle");
        assert_eq!(text.parse::<OperationId>().unwrap(), id);
        assert_eq!(OperationId::run_of(&text), "20261121T105500-1a2b3c");
        assert_eq!(OperationId::run_of("r1"), "r1");
        let retry = OperationId::attempt("20261121T105500-1a2b3c", "web01", OpStep::Drain, 2);
        assert_eq!(
            retry.to_string(),
            "20261121T105500-1a2b3c_retry2.web01.drain"
        );
        assert_eq!(
            OperationId::run_of(&retry.to_string()),
            "20261121T105500-1a2b3c"
        );
        assert_eq!(OperationId::run_of("r_retryx.web01.drain"), "r_retryx");
        let back =
            OperationId::attempt(&OperationId::rollback_run("r1"), "web01", OpStep::Drain, 2);
        assert_eq!(back.to_string(), "r1_rollback_retry2.web01.drain");
        assert_eq!(OperationId::run_of(&back.to_string()), "r1");
        for bad in [
            "r1",
            "r1.web01",
            ".web01.drain",
            "r1..drain",
            "r1.web01.explode",
        ] {
            assert!(bad.parse::<OperationId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn states_convert_both_ways_and_unknown_wire_values_are_unknown() {
        for s in [ServiceState::Running, ServiceState::NotInstalled] {
            assert_eq!(ServiceState::from(pb::ServiceState::from(s)), s);
        }
        assert_eq!(ServiceState::from_wire(99), ServiceState::Unknown);
        assert_eq!(
            PoolState::from_wire(pb::PoolState::Started as i32),
            PoolState::Started
        );
        assert_eq!(PoolState::parse(" STARTED "), PoolState::Started);
        assert_eq!(
            serde_json::to_string(&ServiceState::StopPending).unwrap(),
            "\"STOP_PENDING\""
        );
        assert_eq!(
            serde_json::to_string(&PoolState::Started).unwrap(),
            "\"Started\""
        );
    }

    #[test]
    fn an_unknown_phase_is_an_error_not_a_default() {
        assert_eq!("quiescing".parse::<Phase>().unwrap(), Phase::Quiescing);
        assert!(serde_json::from_str::<Phase>("\"exploding\"").is_err());
        assert!("exploding".parse::<Phase>().is_err());
        assert_eq!(
            serde_json::to_string(&NodeOutcome::Skipped).unwrap(),
            "\"skipped\""
        );
    }
}
