//! Operation ids: a repeated id returns the first call's result instead of
//! acting twice (a controller that lost a reply can safely ask again).
//!
//! With a state directory the ids outlive the process: a finished
//! operation is answered from its record after a restart, and a recycle
//! or reset that was under way when the agent stopped is answered as
//! interrupted — never run a second time under the same id.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::state::{unix_ms, OpRecord, StateDir};

use farm_proto::domain::CallKind;
use farm_proto::v1 as pb;
use prost::Message;
use tokio::sync::watch;

farm_proto::message_error! {
    /// An operation id already used for another kind of call.
    ReusedId
}

/// How many finished operations are remembered: past it the oldest
/// finished one goes, but not one of a run that holds or recently held
/// the node's lease (what a resume after an agent restart relies on),
/// unless there are [`HARD_CAP`].
const REMEMBERED: usize = 1024;
const HARD_CAP: usize = 4096;
/// How long after its last lease call a run's records are kept first,
/// and how many such runs are remembered.
const RUN_KEPT_MS: u64 = 24 * 3600 * 1000;
const RUNS_KEPT: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Drain(pb::DrainReply),
    Operation(pb::OperationResult),
    Stage(pb::StageReply),
    Switch(pb::SwitchReply),
    Prune(pb::PruneReply),
    /// A restart asked: the boot it was asked on.
    Reboot(pb::RebootReply),
}

/// The codec of a record's result: `<kind>:<protobuf in hex>`, kept here
/// with what it encodes (the state directory stores records, blind to
/// their results).
impl OpRecord {
    pub fn stored(&self) -> Option<Stored> {
        let (tag, hexed) = self.result.as_deref()?.split_once(':')?;
        let bytes = hex::decode(hexed).ok()?;
        let bytes = bytes.as_slice();
        Some(match tag {
            "drain" => Stored::Drain(pb::DrainReply::decode(bytes).ok()?),
            "operation" => Stored::Operation(pb::OperationResult::decode(bytes).ok()?),
            "stage" => Stored::Stage(pb::StageReply::decode(bytes).ok()?),
            "switch" => Stored::Switch(pb::SwitchReply::decode(bytes).ok()?),
            "prune" => Stored::Prune(pb::PruneReply::decode(bytes).ok()?),
            "reboot" => Stored::Reboot(pb::RebootReply::decode(bytes).ok()?),
            _ => return None,
        })
    }

    pub fn set_stored(&mut self, stored: &Stored) {
        let (tag, bytes) = match stored {
            Stored::Drain(r) => ("drain", r.encode_to_vec()),
            Stored::Operation(r) => ("operation", r.encode_to_vec()),
            Stored::Stage(r) => ("stage", r.encode_to_vec()),
            Stored::Switch(r) => ("switch", r.encode_to_vec()),
            Stored::Prune(r) => ("prune", r.encode_to_vec()),
            Stored::Reboot(r) => ("reboot", r.encode_to_vec()),
        };
        self.result = Some(format!("{tag}:{}", hex::encode(bytes)));
    }
}

/// The result of an operation, once it is known.
pub type ResultFeed = watch::Receiver<Option<Stored>>;

pub enum Begin {
    /// First time this id is seen: act, then [`Operations::finish`].
    New(watch::Sender<Option<Stored>>),
    /// Seen before: wait on this for the first result.
    Repeat(ResultFeed),
}

#[derive(Default)]
pub struct Operations {
    inner: Mutex<Inner>,
    state: Option<Arc<StateDir>>,
}

#[derive(Default)]
struct Inner {
    /// Kind, result feed, and when it started (Unix ms, for its record).
    by_id: HashMap<String, (CallKind, ResultFeed, u64)>,
    order: VecDeque<String>,
    /// Runs that held the lease, with when they last did (Unix ms).
    leased_runs: VecDeque<(String, u64)>,
}

impl Inner {
    /// An operation id `{run}.{node}.{step}` of a run whose records are
    /// kept first.
    fn kept(&self, id: &str) -> bool {
        let run = farm_proto::domain::OperationId::run_of(id);
        let now = unix_ms();
        self.leased_runs
            .iter()
            .any(|(r, t)| r == run && now.saturating_sub(*t) < RUN_KEPT_MS)
    }

    fn finished(&self, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|(_, f, _)| f.borrow().is_some())
    }
}

impl Operations {
    /// Operation ids kept in `state`, with the records already there.
    pub fn with_state(state: Arc<StateDir>) -> Self {
        let ops = Self {
            inner: Mutex::default(),
            state: Some(state.clone()),
        };
        {
            let mut inner = ops.lock();
            for mut rec in state.load_ops() {
                let kind = rec.kind;
                let stored = match rec.stored() {
                    Some(s) => s,
                    // A restart is recorded with its boot before it is
                    // asked: one without is one never asked.
                    None if kind == CallKind::Reboot => {
                        state.remove_op(&rec.id);
                        continue;
                    }
                    None if kind.recorded_at_start() => {
                        let interrupted = Stored::Operation(interrupted(&rec));
                        tracing::warn!(
                            "operation {} ({kind}) was under way when the agent stopped; it will not be run again under that id",
                            rec.id
                        );
                        rec.set_stored(&interrupted);
                        rec.finished_unix_ms = Some(unix_ms());
                        state.save_op(&rec);
                        interrupted
                    }
                    None => {
                        state.remove_op(&rec.id);
                        continue;
                    }
                };
                let (_tx, rx) = watch::channel(Some(stored));
                inner
                    .by_id
                    .insert(rec.id.clone(), (kind, rx, rec.started_unix_ms));
                inner.order.push_back(rec.id);
            }
        }
        ops
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the result of `id` and hands it to those waiting.
    pub fn finish(
        &self,
        id: &str,
        kind: CallKind,
        tx: &watch::Sender<Option<Stored>>,
        result: Stored,
    ) {
        if let Some(state) = &self.state {
            let started = self.lock().by_id.get(id).map_or_else(unix_ms, |e| e.2);
            let mut rec = OpRecord {
                id: id.into(),
                kind,
                started_unix_ms: started,
                finished_unix_ms: Some(unix_ms()),
                result: None,
            };
            rec.set_stored(&result);
            state.save_op(&rec);
        }
        tx.send_replace(Some(result));
    }

    /// `run_id` holds (took or renewed) the node's lease: its records are
    /// kept before anyone else's.
    pub fn lease_seen(&self, run_id: &str) {
        let mut inner = self.lock();
        let now = unix_ms();
        inner.leased_runs.retain(|(r, _)| r != run_id);
        inner.leased_runs.push_back((run_id.to_string(), now));
        while inner.leased_runs.len() > RUNS_KEPT {
            inner.leased_runs.pop_front();
        }
    }

    /// Registers `id` for an operation of `kind` (`recycle`, `drain`, ...).
    /// Reusing an id for another kind of call is an error.
    pub fn begin(&self, id: &str, kind: CallKind) -> Result<Begin, ReusedId> {
        let mut inner = self.lock();
        if let Some((k, feed, _)) = inner.by_id.get(id) {
            return if *k == kind {
                Ok(Begin::Repeat(feed.clone()))
            } else {
                Err(ReusedId(format!(
                    "operation id `{id}` was already used for a {k} call"
                )))
            };
        }
        let (tx, rx) = watch::channel(None);
        let started = unix_ms();
        inner.by_id.insert(id.to_string(), (kind, rx, started));
        inner.order.push_back(id.to_string());
        if let (Some(state), true) = (&self.state, kind.recorded_at_start()) {
            state.save_op(&OpRecord {
                id: id.into(),
                kind,
                started_unix_ms: started,
                finished_unix_ms: None,
                result: None,
            });
        }
        while inner.order.len() > REMEMBERED {
            // Forget the oldest finished one, another caller's before a
            // leased run's; keep running ones.
            let other = inner
                .order
                .iter()
                .position(|old| inner.finished(old) && !inner.kept(old));
            let any = || {
                (inner.order.len() > HARD_CAP)
                    .then(|| inner.order.iter().position(|old| inner.finished(old)))
                    .flatten()
            };
            let Some(pos) = other.or_else(any) else {
                break;
            };
            if let Some(old) = inner.order.remove(pos) {
                inner.by_id.remove(&old);
                if let Some(state) = &self.state {
                    state.remove_op(&old);
                }
            }
        }
        Ok(Begin::New(tx))
    }

    /// What is known of `id`: its kind, whether it finished and, for a
    /// recycle or reset, its result.
    pub fn lookup(&self, id: &str) -> Option<pb::OperationRecord> {
        let inner = self.lock();
        let (kind, feed, _) = inner.by_id.get(id)?;
        let stored = feed.borrow().clone();
        Some(pb::OperationRecord {
            operation_id: id.into(),
            kind: kind.to_string(),
            finished: stored.is_some(),
            result: match stored {
                Some(Stored::Operation(r)) => Some(r),
                _ => None,
            },
        })
    }

    /// Forgets an id whose call was refused before acting, so it may be retried.
    pub fn abandon(&self, id: &str) {
        let mut inner = self.lock();
        inner.by_id.remove(id);
        inner.order.retain(|o| o != id);
        if let Some(state) = &self.state {
            state.remove_op(id);
        }
    }
}

/// The answer for a recycle or reset cut by a restart of the agent.
fn interrupted(rec: &OpRecord) -> pb::OperationResult {
    pb::OperationResult {
        success: false,
        failed_step: "agent".into(),
        error: format!(
            "the agent stopped while this {} was under way (started at Unix ms {}); it is not run again under the same operation id: check the node with `farmctl status`",
            rec.kind, rec.started_unix_ms
        ),
        ..Default::default()
    }
}

/// Waits for the result of an operation that is (or was) running.
pub async fn wait(mut feed: ResultFeed) -> Option<Stored> {
    feed.wait_for(|r| r.is_some())
        .await
        .ok()
        .and_then(|r| r.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Stored {
        Stored::Operation(pb::OperationResult {
            success: true,
            ..Default::default()
        })
    }

    /// A flood of other callers' ids does not push out the records of the
    /// run that holds the lease.
    #[test]
    fn a_leased_runs_records_outlast_a_flood_of_other_ids() {
        let ops = Operations::default();
        ops.lease_seen("run1");
        let Begin::New(tx) = ops.begin("run1.web01.recycle", CallKind::Recycle).unwrap() else {
            panic!("new id")
        };
        ops.finish("run1.web01.recycle", CallKind::Recycle, &tx, ok());
        for i in 0..2000 {
            let id = format!("spam{i}.web01.drain");
            let Begin::New(tx) = ops.begin(&id, CallKind::Drain).unwrap() else {
                panic!("new id")
            };
            ops.finish(&id, CallKind::Drain, &tx, ok());
        }
        assert!(ops.lookup("run1.web01.recycle").is_some());
        assert!(ops.lookup("spam0.web01.drain").is_none());
        assert!(ops.lock().order.len() <= REMEMBERED);
    }

    /// A restarted agent answers a finished id from its record, reports a
    /// recycle cut by the restart as interrupted (never runs it again), and
    /// lets a drain that was cut be asked again.
    #[tokio::test]
    async fn ids_outlive_a_restart_of_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateDir::open(dir.path()).unwrap());
        {
            let ops = Operations::with_state(state.clone());
            let Begin::New(tx) = ops.begin("r1:web01.recycle", CallKind::Recycle).unwrap() else {
                panic!("new id")
            };
            ops.finish("r1:web01.recycle", CallKind::Recycle, &tx, ok());
            let Begin::New(_cut) = ops.begin("r1:web02.recycle", CallKind::Recycle).unwrap() else {
                panic!("new id")
            };
            let Begin::New(_cut) = ops.begin("r1:web03.drain", CallKind::Drain).unwrap() else {
                panic!("new id")
            };
            // The process stops here.
        }
        let ops = Operations::with_state(state);
        let Begin::Repeat(feed) = ops.begin("r1:web01.recycle", CallKind::Recycle).unwrap() else {
            panic!("a finished id is remembered")
        };
        assert_eq!(wait(feed).await, Some(ok()));
        let Begin::Repeat(feed) = ops.begin("r1:web02.recycle", CallKind::Recycle).unwrap() else {
            panic!("an interrupted recycle is remembered")
        };
        let Some(Stored::Operation(r)) = wait(feed).await else {
            panic!("a result")
        };
        assert!(!r.success);
        assert!(
            r.error.contains("agent stopped while this recycle"),
            "{}",
            r.error
        );
        let rec = ops.lookup("r1:web02.recycle").unwrap();
        assert!(rec.finished && rec.result.is_some_and(|r| !r.success));
        assert!(matches!(
            ops.begin("r1:web03.drain", CallKind::Drain),
            Ok(Begin::New(_))
        ));
        assert!(ops.lookup("r9:web01.recycle").is_none());
    }
}
