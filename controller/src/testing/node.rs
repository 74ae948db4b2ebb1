//! A fake node: its agent, its load balancer member and its sites, with a
//! [`Behaviour`] that says how long each step takes and what fails.
use farm_proto::domain::{LbMemberAction, LbMemberKind};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use farm_proto::domain::{PoolState, ServiceState};
use tokio::time::Instant;

use super::{Log, What};
use crate::agent::{
    AgentApi, AgentError, LbMemberCall, LbMemberView, LeaseClaim, NodeView, OperationReport,
    OperationRequest, Package, PoolChange, PoolView, ProgressFn, ReleaseView, Staged, SwitchTo,
    Switched,
};
use crate::lb::LbState;

/// W3SVC and WAS running.
fn iis_running() -> std::collections::BTreeMap<String, ServiceState> {
    [
        ("W3SVC", ServiceState::Running),
        ("WAS", ServiceState::Running),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect()
}

/// How a fake node behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Until the LB has no session on the node after a drain.
    pub sessions_time: Duration,
    /// Until the node has no request in flight.
    pub quiesce_time: Duration,
    pub operate_time: Duration,
    /// After the operation, until the sites answer well.
    pub warm_time: Duration,
    /// The operation reports failure.
    pub operate_fails: bool,
    /// After the operation the sites never answer well again.
    pub never_healthy: bool,
    /// The agent does not answer at all.
    pub unreachable: bool,
    /// The LB has the node out (DOWN) from the start.
    pub out_from_start: bool,
    /// Uploading a package takes this long...
    pub stage_time: Duration,
    /// ...or fails.
    pub stage_fails: bool,
    /// After a switch the site never answers with the new version.
    pub bad_version: bool,
    /// This long after the first drain the LB puts the node back on its
    /// own (a reload without server state, a config sync).
    pub lb_forgets_drain_after: Option<Duration>,
    /// User requests a second its IIS log shows (0: the agent cannot say).
    pub rps: u64,
    /// The share of them answered 500 while the site serves a release
    /// other than 1.0.0.
    pub new_release_errors: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            sessions_time: Duration::from_millis(10),
            quiesce_time: Duration::from_millis(10),
            operate_time: Duration::from_millis(200),
            warm_time: Duration::from_millis(100),
            operate_fails: false,
            never_healthy: false,
            unreachable: false,
            out_from_start: false,
            stage_time: Duration::from_millis(100),
            stage_fails: false,
            bad_version: false,
            lb_forgets_drain_after: None,
            rps: 0,
            new_release_errors: 0.0,
        }
    }
}

struct NodeState {
    lb: LbState,
    pids: Vec<u32>,
    next_pid: u32,
    /// When the sites answer well; `None`: never.
    healthy_from: Option<Instant>,
    /// Results by operation id.
    results: HashMap<String, OperationReport>,
    /// Releases staged (version, sha256), the one served, the one before.
    releases: Vec<(String, String)>,
    serving: String,
    previous: Option<String>,
    /// As an ARR server or NLB node: out or in, and how many state reads
    /// until a drain or a return has settled.
    member_out: bool,
    member_settle: u32,
}

/// One fake node: its agent, its LB member and its sites.
pub struct FakeNode {
    pub name: String,
    behaviour: Mutex<Behaviour>,
    state: Mutex<NodeState>,
    log: Log,
}

impl FakeNode {
    pub(super) fn new(name: &str, i: usize, behaviour: Behaviour, log: Log) -> Self {
        let lb = if behaviour.out_from_start {
            LbState::Down
        } else {
            LbState::Up
        };
        let pid = 1000 + i as u32 * 100;
        Self {
            name: name.into(),
            behaviour: Mutex::new(behaviour),
            state: Mutex::new(NodeState {
                lb,
                pids: vec![pid],
                next_pid: pid,
                healthy_from: Some(Instant::now()),
                results: HashMap::new(),
                releases: vec![("1.0.0".into(), "0".repeat(64))],
                serving: "1.0.0".into(),
                previous: None,
                member_out: false,
                member_settle: 0,
            }),
            log,
        }
    }

    pub(super) fn behaviour(&self) -> Behaviour {
        self.behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes how the node behaves from now on.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn st(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.st().pids.clone()
    }

    pub fn lb_state(&self) -> LbState {
        self.st().lb
    }

    /// Takes the node out of the LB as if by hand.
    pub fn set_lb(&self, state: LbState) {
        self.st().lb = state;
    }

    /// The release the site serves.
    pub fn serving(&self) -> String {
        self.st().serving.clone()
    }

    /// Whether the site answers with `expect` (a version probe).
    pub(super) fn serves(&self, expect: &str) -> bool {
        self.healthy() && !self.behaviour().bad_version && self.st().serving == expect
    }

    pub(super) fn healthy(&self) -> bool {
        self.st().healthy_from.is_some_and(|t| Instant::now() >= t)
    }

    fn reachable(&self) -> Result<(), AgentError> {
        if self.behaviour().unreachable {
            Err(AgentError::Unreachable {
                addr: format!("{}:7443", self.name),
                detail: "connection refused".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl AgentApi for FakeNode {
    async fn status(&self) -> Result<NodeView, AgentError> {
        self.reachable()?;
        let st = self.st();
        Ok(NodeView {
            node: self.name.clone(),
            backend: "fake".into(),
            services: iis_running(),
            pools: vec![PoolView {
                stopped_by: None,
                name: "Shop".into(),
                state: PoolState::Started,
                pids: st.pids.clone(),
            }],
            sites: vec![crate::agent::SiteView {
                name: "shop".into(),
                pool: "Shop".into(),
                physical_path: format!("/releases/shop/{}", st.serving),
                release: Some(st.serving.clone()),
            }],
            in_flight: Some(0),
            drained: false,
            lease: None,
            notice: None,
            boot: None,
            reboot_pending: None,
            updates_pending: None,
            service_start: None,
        })
    }

    async fn drain(&self, _op_id: &str) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn dump(
        &self,
        op_id: &str,
        pool: &str,
        _timeout: Duration,
    ) -> Result<crate::agent::DumpView, AgentError> {
        self.reachable()?;
        self.log.push(&self.name, What::Dumped);
        let pid = self.st().pids.first().copied().unwrap_or_default();
        Ok(crate::agent::DumpView {
            pool: pool.to_string(),
            dumps: vec![crate::agent::DumpTakenView {
                pid,
                file: format!(r"D:\dumps\{pool}_{pid}_{op_id}.dmp"),
                bytes: 1 << 20,
                elapsed_ms: 1,
            }],
            refused: Vec::new(),
            left_today: Some(1),
        })
    }

    async fn undrain(&self, _op_id: &str) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn wait_idle(&self, timeout: Duration) -> Result<bool, AgentError> {
        self.reachable()?;
        let t = self.behaviour().quiesce_time;
        tokio::time::sleep(t.min(timeout)).await;
        Ok(t <= timeout)
    }

    async fn finished_operation(&self, op_id: &str) -> Result<Option<OperationReport>, AgentError> {
        self.reachable()?;
        let found = self.st().results.get(op_id).cloned();
        if found.is_some() {
            self.log.push(&self.name, What::Replayed);
        }
        Ok(found.map(|r| OperationReport {
            replayed: true,
            ..r
        }))
    }

    async fn operate(
        &self,
        op_id: &str,
        _request: &OperationRequest,
        timeout: Duration,
        _progress: ProgressFn<'_>,
    ) -> Result<OperationReport, AgentError> {
        self.reachable()?;
        if let Some(r) = self.st().results.get(op_id).cloned() {
            self.log.push(&self.name, What::Replayed);
            return Ok(OperationReport {
                replayed: true,
                ..r
            });
        }
        let b = self.behaviour();
        self.log.push(&self.name, What::OperateStart);
        if b.operate_time > timeout {
            tokio::time::sleep(timeout).await;
            return Err(AgentError::Timeout(timeout));
        }
        tokio::time::sleep(b.operate_time).await;
        let mut st = self.st();
        let before = st.pids.clone();
        st.next_pid += 4;
        st.pids = vec![st.next_pid];
        st.healthy_from = (!b.never_healthy).then(|| Instant::now() + b.warm_time);
        let report = OperationReport {
            success: !b.operate_fails,
            error: if b.operate_fails {
                "the fake was told to fail".into()
            } else {
                String::new()
            },
            failed_step: if b.operate_fails {
                "recycle".into()
            } else {
                String::new()
            },
            pools: vec![PoolChange {
                name: "Shop".into(),
                pids_before: before,
                pids_after: st.pids.clone(),
                state_after: PoolState::Started,
                had_no_worker: false,
            }],
            services: iis_running(),
            replayed: false,
            ..Default::default()
        };
        st.results.insert(op_id.to_string(), report.clone());
        drop(st);
        self.log.push(&self.name, What::OperateEnd);
        Ok(report)
    }

    async fn acquire_lease(&self, _: &LeaseClaim<'_>) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn renew_lease(&self, _: &str, _: Duration) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn release_lease(&self, _: &str) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn stage(
        &self,
        _op_id: &str,
        _site: &str,
        version: &str,
        package: &Package,
        _timeout: Duration,
    ) -> Result<Staged, AgentError> {
        self.reachable()?;
        let b = self.behaviour();
        if let Some((_, sha)) = self.st().releases.iter().find(|(v, _)| v == version) {
            return if *sha == package.sha256 {
                Ok(Staged {
                    already: true,
                    files: 1,
                    bytes: 1,
                })
            } else {
                Err(AgentError::Refused(format!(
                    "release {version} is already staged from another package"
                )))
            };
        }
        tokio::time::sleep(b.stage_time).await;
        if b.stage_fails {
            return Err(AgentError::Refused(
                "not enough free disk (the fake was told to fail)".into(),
            ));
        }
        self.st()
            .releases
            .push((version.into(), package.sha256.clone()));
        self.log.push(&self.name, What::Uploaded);
        Ok(Staged {
            already: false,
            files: 1,
            bytes: package.size,
        })
    }

    async fn traffic(&self, last_s: u32) -> Result<crate::agent::TrafficView, AgentError> {
        self.reachable()?;
        let b = self.behaviour();
        if b.rps == 0 {
            return Ok(crate::agent::TrafficView {
                unavailable: Some("no traffic figures".into()),
                ..Default::default()
            });
        }
        let requests = b.rps * u64::from(last_s);
        let errors = if self.st().serving == "1.0.0" {
            0
        } else {
            (requests as f64 * b.new_release_errors).round() as u64
        };
        let mut latency = farm_proto::latency::Histogram::default();
        for k in 0..requests {
            latency.record(10 + k % 7);
        }
        Ok(crate::agent::TrafficView {
            sites: vec![crate::agent::SiteTrafficView {
                site: "shop".into(),
                pool: "ShopPool".into(),
                covered_s: u64::from(last_s),
                requests,
                checks: 0,
                classes: [0, requests - errors, 0, 0, errors],
                errors: Default::default(),
                httperr: Default::default(),
                p50_ms: latency.quantile(0.5),
                p95_ms: latency.quantile(0.95),
                p99_ms: latency.quantile(0.99),
                missing: Vec::new(),
                latency,
                since: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn releases(&self, _site: &str) -> Result<Vec<ReleaseView>, AgentError> {
        self.reachable()?;
        let st = self.st();
        Ok(st
            .releases
            .iter()
            .map(|(v, sha)| ReleaseView {
                version: v.clone(),
                sha256: sha.clone(),
                active: *v == st.serving,
                previous: st.previous.as_deref() == Some(v.as_str()),
            })
            .collect())
    }

    async fn switch(&self, _op_id: &str, to: &SwitchTo) -> Result<Switched, AgentError> {
        self.reachable()?;
        let mut st = self.st();
        let previous = st.serving.clone();
        let target = if to.back {
            match (&st.previous, st.serving == to.version) {
                (Some(p), true) => p.clone(),
                _ => previous.clone(),
            }
        } else {
            if !st.releases.iter().any(|(v, _)| *v == to.version) {
                return Err(AgentError::Refused(format!(
                    "release {} is not staged",
                    to.version
                )));
            }
            to.version.clone()
        };
        if target == previous {
            return Ok(Switched {
                previous: previous.clone(),
                version: previous,
                unchanged: true,
                hooks: vec![],
            });
        }
        st.previous = Some(previous.clone());
        st.serving = target.clone();
        drop(st);
        self.log.push(&self.name, What::Switched);
        Ok(Switched {
            previous,
            version: target,
            unchanged: false,
            hooks: vec![],
        })
    }

    async fn prune(&self, _op_id: &str, _site: &str) -> Result<Vec<String>, AgentError> {
        self.reachable()?;
        Ok(Vec::new())
    }

    /// An ARR server (`Drain` with requests running down over three reads)
    /// or an NLB node (`Draining` two reads, then `Stopped`; `Converging`
    /// one read after a return).
    async fn lb_member(&self, call: &LbMemberCall) -> Result<LbMemberView, AgentError> {
        self.reachable()?;
        let mut st = self.st();
        match call.action {
            LbMemberAction::Drain if !st.member_out => {
                st.member_out = true;
                st.member_settle = 3;
                self.log.push(&self.name, What::Drained);
            }
            LbMemberAction::Return if st.member_out => {
                st.member_out = false;
                st.member_settle = 1;
                self.log.push(&self.name, What::Returned);
            }
            _ => {}
        }
        let (out, left) = (st.member_out, st.member_settle);
        if call.action == LbMemberAction::State {
            st.member_settle = st.member_settle.saturating_sub(1);
        }
        let (state, requests) = match (call.kind, out) {
            (LbMemberKind::Arr, true) => ("Drain", Some(u64::from(left))),
            (LbMemberKind::Arr, false) => ("Available", Some(2)),
            (_, true) if left > 1 => ("Draining", None),
            (_, true) => ("Stopped", None),
            (_, false) if left > 0 => ("Converging", None),
            (_, false) => ("Converged", None),
        };
        Ok(LbMemberView {
            state: state.into(),
            healthy: true,
            current_requests: requests,
            detail: format!("{} {state}", self.name),
        })
    }
}
