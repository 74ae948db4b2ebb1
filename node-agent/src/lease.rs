//! Leases: one controller run at a time per node, and the dead-man switch.
//!
//! While a lease is held, a mutating call must carry an operation id of
//! that run (`<run_id>.…`): another controller, or a hand-run `farmctl
//! drain`, cannot act on a node in the middle of someone's run. If the
//! controller dies, its lease expires; if the node was drained by that run,
//! the agent checks its own sites and returns itself to rotation when they
//! are healthy, or stays drained and says why.
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use farm_proto::v1 as pb;
use tokio::time::Instant;

use crate::iis::Iis;
use crate::state::{HeldRecord, LeaseRecord, StateDir};

pub const MIN_TTL: Duration = Duration::from_millis(500);
pub const MAX_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Held {
    holder: String,
    run_id: String,
    reason: String,
    acquired: SystemTime,
    expires: Instant,
    expires_at: SystemTime,
    /// Bumped on every acquire/renew, so a stale expiry timer does nothing.
    generation: u64,
}

#[derive(Default)]
struct State {
    held: Option<Held>,
    generation: u64,
    /// The run whose operation drained the node, if any.
    drained_by: Option<String>,
    notice: String,
}

#[derive(Clone, Default)]
pub struct Leases {
    state: Arc<Mutex<State>>,
    /// Where the lease is recorded, if anywhere.
    store: Option<Arc<StateDir>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    Held(String),
    #[error("{0}")]
    Invalid(String),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn run_of(op_id: &str) -> &str {
    farm_proto::domain::OperationId::run_of(op_id)
}

impl Held {
    fn wire(&self) -> pb::Lease {
        pb::Lease {
            holder: self.holder.clone(),
            run_id: self.run_id.clone(),
            expires_unix_ms: unix_ms(self.expires_at),
            reason: self.reason.clone(),
            acquired_unix_ms: unix_ms(self.acquired),
        }
    }

    fn describe(&self) -> String {
        let age = SystemTime::now()
            .duration_since(self.acquired)
            .unwrap_or_default();
        format!(
            "node is leased to {} for run {} ({}), acquired {} ago",
            self.holder,
            self.run_id,
            if self.reason.is_empty() {
                "no reason given"
            } else {
                &self.reason
            },
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        )
    }
}

impl Leases {
    /// Leases recorded in `store`, starting from the record there.
    pub fn with_state(store: Arc<StateDir>) -> Self {
        let rec = store.load_lease();
        let mut st = State {
            drained_by: rec.drained_by,
            ..State::default()
        };
        if let Some(h) = rec.lease {
            let now_ms = unix_ms(SystemTime::now());
            // A lease that ran out while the agent was down expires at
            // once: its dead-man switch fires as soon as it is armed.
            let left = Duration::from_millis(h.expires_unix_ms.saturating_sub(now_ms)).min(MAX_TTL);
            st.generation = 1;
            st.held = Some(Held {
                holder: h.holder,
                run_id: h.run_id,
                reason: h.reason,
                acquired: UNIX_EPOCH + Duration::from_millis(h.acquired_unix_ms),
                expires: Instant::now() + left,
                expires_at: UNIX_EPOCH + Duration::from_millis(h.expires_unix_ms),
                generation: 1,
            });
        }
        Self {
            state: Arc::new(Mutex::new(st)),
            store: Some(store),
        }
    }

    /// The generation of a lease read back from the state directory, whose
    /// dead-man switch is to be armed.
    pub fn restored(&self) -> Option<u64> {
        self.lock().held.as_ref().map(|h| h.generation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the lease and who drained the node to the state directory.
    fn save(&self, st: &State) {
        if let Some(store) = &self.store {
            store.save_lease(&LeaseRecord {
                lease: st.held.as_ref().map(|h| HeldRecord {
                    holder: h.holder.clone(),
                    run_id: h.run_id.clone(),
                    reason: h.reason.clone(),
                    acquired_unix_ms: unix_ms(h.acquired),
                    expires_unix_ms: unix_ms(h.expires_at),
                }),
                drained_by: st.drained_by.clone(),
            });
        }
    }

    /// The live lease (an expired one is not returned).
    fn live(st: &State) -> Option<&Held> {
        st.held.as_ref().filter(|h| h.expires > Instant::now())
    }

    pub fn current(&self) -> Option<pb::Lease> {
        Self::live(&self.lock()).map(Held::wire)
    }

    pub fn notice(&self) -> String {
        self.lock().notice.clone()
    }

    /// Takes (or renews, for the same run) the lease. Returns the lease and
    /// the generation its expiry timer must carry.
    pub fn acquire(
        &self,
        holder: &str,
        run_id: &str,
        reason: &str,
        ttl: Duration,
    ) -> Result<(pb::Lease, u64), LeaseError> {
        farm_proto::names::check_operation_id(run_id)
            .map_err(|e| LeaseError::Invalid(format!("run id: {e}")))?;
        if holder.is_empty() || holder.len() > 128 || holder.chars().any(char::is_control) {
            return Err(LeaseError::Invalid(
                "holder must be 1-128 printable characters".into(),
            ));
        }
        if reason.len() > 256 || reason.chars().any(char::is_control) {
            return Err(LeaseError::Invalid(
                "reason must be at most 256 printable characters".into(),
            ));
        }
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        let mut st = self.lock();
        let acquired = match Self::live(&st) {
            Some(h) if h.run_id != run_id => return Err(LeaseError::Held(h.describe())),
            Some(h) => h.acquired,
            None => SystemTime::now(),
        };
        st.generation += 1;
        let held = Held {
            holder: holder.into(),
            run_id: run_id.into(),
            reason: reason.into(),
            acquired,
            expires: Instant::now() + ttl,
            expires_at: SystemTime::now() + ttl,
            generation: st.generation,
        };
        let wire = held.wire();
        st.held = Some(held);
        self.save(&st);
        Ok((wire, st.generation))
    }

    pub fn renew(&self, run_id: &str, ttl: Duration) -> Result<(pb::Lease, u64), LeaseError> {
        let st = self.lock();
        let (holder, reason) = match Self::live(&st) {
            Some(h) if h.run_id == run_id => (h.holder.clone(), h.reason.clone()),
            Some(h) => return Err(LeaseError::Held(h.describe())),
            None => {
                return Err(LeaseError::Held(format!(
                    "run {run_id} holds no lease here (it expired or was never taken)"
                )))
            }
        };
        drop(st);
        self.acquire(&holder, run_id, &reason, ttl)
    }

    pub fn release(&self, run_id: &str) -> Result<(), LeaseError> {
        let mut st = self.lock();
        match Self::live(&st) {
            Some(h) if h.run_id != run_id => Err(LeaseError::Held(h.describe())),
            _ => {
                st.held = None;
                st.generation += 1;
                self.save(&st);
                Ok(())
            }
        }
    }

    /// A mutating call with `op_id` may go ahead: no live lease, or the
    /// lease of the run the id belongs to.
    pub fn check_op(&self, op_id: &str) -> Result<(), LeaseError> {
        match Self::live(&self.lock()) {
            Some(h) if h.run_id != run_of(op_id) => Err(LeaseError::Held(format!(
                "{}; operation {op_id} is not part of that run",
                h.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// Records who drained (`Some(op_id)`) or undrained (`None`) the node.
    pub fn note_drain(&self, op_id: Option<&str>) {
        let mut st = self.lock();
        st.drained_by = op_id.map(|id| run_of(id).to_string());
        self.save(&st);
    }

    /// Arms the dead-man switch for lease `generation`. `busy` is held
    /// while a recycle or reset runs: the switch waits for it, so a node is
    /// never returned to rotation half-way through an operation.
    pub fn arm(&self, generation: u64, iis: Arc<dyn Iis>, busy: Arc<tokio::sync::Mutex<String>>) {
        let leases = self.clone();
        tokio::spawn(async move {
            let Some(deadline) = leases
                .lock()
                .held
                .as_ref()
                .filter(|h| h.generation == generation)
                .map(|h| h.expires)
            else {
                return;
            };
            tokio::time::sleep_until(deadline).await;
            let expired = {
                let mut st = leases.lock();
                match &st.held {
                    Some(h) if h.generation == generation => {
                        let h = st.held.take();
                        leases.save(&st);
                        h
                    }
                    _ => None, // renewed or released meanwhile
                }
            };
            if let Some(h) = expired {
                let operation = busy.lock().await;
                // A controller that took the node over while the operation
                // finished (resume) decides from here on.
                if Self::live(&leases.lock()).is_none() {
                    leases.expired(h, &*iis).await;
                }
                drop(operation);
            }
        });
    }

    async fn expired(&self, h: Held, iis: &dyn Iis) {
        let drained_by_run = self.lock().drained_by.as_deref() == Some(h.run_id.as_str());
        let drained = !iis.health_file_present().await.unwrap_or(true);
        let notice = if !(drained && drained_by_run) {
            // The agent sees only its own health file: a drain the run
            // made in the load balancer (HAProxy, F5, ...) is not visible
            // here, and is not undone by the agent.
            format!(
                "lease of run {} ({}) expired; the node's health file was not taken away by it, \
                 so the agent left the node as it is — a drain that run made in the load \
                 balancer stays until `farmctl resume {}` or `farmctl undrain`",
                h.run_id, h.holder, h.run_id
            )
        } else {
            match crate::selfprobe::sites_healthy(iis).await {
                Ok(()) => match iis.set_health_file(true).await {
                    Ok(()) => {
                        self.note_drain(None);
                        format!(
                            "lease of run {} ({}) expired while it had the node drained; the sites are healthy: returned to rotation",
                            h.run_id, h.holder
                        )
                    }
                    Err(e) => format!(
                        "lease of run {} ({}) expired while it had the node drained; could not return it: {e}",
                        h.run_id, h.holder
                    ),
                },
                Err(why) => format!(
                    "lease of run {} ({}) expired while it had the node drained; left drained: {why}",
                    h.run_id, h.holder
                ),
            }
        };
        tracing::warn!("{notice}");
        self.lock().notice = notice;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease outlives the agent process: a restarted agent still refuses
    /// another run, and a lease that ran out while it was down is expired
    /// at once (its dead-man switch fires as soon as it is armed).
    #[tokio::test]
    async fn a_lease_survives_a_restart_and_a_stale_one_expires_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateDir::open(dir.path()).unwrap());
        let leases = Leases::with_state(store.clone());
        leases
            .acquire("ops@ctl", "run1", "patch", Duration::from_secs(600))
            .unwrap();
        leases.note_drain(Some("run1.web01.drain"));
        drop(leases);

        let again = Leases::with_state(store.clone());
        assert_eq!(again.current().map(|l| l.run_id), Some("run1".into()));
        assert!(again.restored().is_some());
        assert!(matches!(
            again.check_op("run2.web01.drain"),
            Err(LeaseError::Held(_))
        ));
        assert!(again.check_op("run1.web01.recycle").is_ok());
        assert_eq!(again.lock().drained_by.as_deref(), Some("run1"));

        // Ran out while the agent was down.
        let mut rec = store.load_lease();
        rec.lease.as_mut().unwrap().expires_unix_ms = 1;
        store.save_lease(&rec);
        let stale = Leases::with_state(store);
        assert!(stale.restored().is_some(), "armed, to fire the switch");
        assert!(stale.current().is_none(), "not live");
        assert!(stale.check_op("run2.web01.drain").is_ok());
    }
}
