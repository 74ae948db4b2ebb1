//! Fakes for the engine's boundaries — the agent, the load balancer, the
//! prober and the clock — so the scheduler and the state machine run in
//! milliseconds on tokio's paused clock. Every fake writes to one shared
//! [`Log`], from which tests read the order of events and how many nodes
//! were out of rotation or operated on at any moment.
//!
//! Compiled for the crate's own tests and with the `test-util` feature.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use farm_inventory::{Node, Site};
use farm_proto::domain::{PoolState, ServiceState};
use tokio::time::Instant;

use crate::agent::{
    AgentApi, AgentError, NodeView, OperationReport, OperationRequest, PoolChange, PoolView,
    ProgressFn,
};
use crate::farm::Farm;
use crate::lb::{LbError, LbState, LoadBalancer, Member, MemberState, Target};
use crate::probe::Prober;
use crate::window::Clock;

/// What happened, when, to which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Happened {
    pub at: Instant,
    pub node: String,
    pub what: What,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// The load balancer took the node out.
    Drained,
    /// The load balancer took it back.
    Returned,
    /// The operation started (not a replay).
    OperateStart,
    OperateEnd,
    /// The agent answered a repeated operation id with its first result.
    Replayed,
}

/// The shared event log.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Happened>>>);

impl Log {
    fn push(&self, node: &str, what: What) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Happened {
                at: Instant::now(),
                node: node.into(),
                what,
            });
    }

    pub fn all(&self) -> Vec<Happened> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every `what` of `node`, in order.
    pub fn of(&self, node: &str) -> Vec<What> {
        self.all()
            .into_iter()
            .filter(|h| h.node == node)
            .map(|h| h.what)
            .collect()
    }

    pub fn count(&self, what: What) -> usize {
        self.all().iter().filter(|h| h.what == what).count()
    }

    /// The most nodes out of rotation at once, counting `out_from_start`
    /// that were out before anything happened.
    pub fn max_out(&self, out_from_start: usize) -> usize {
        self.max_open(What::Drained, What::Returned, out_from_start)
    }

    /// The most operations running at once.
    pub fn max_operating(&self) -> usize {
        self.max_open(What::OperateStart, What::OperateEnd, 0)
    }

    fn max_open(&self, open: What, close: What, start: usize) -> usize {
        let mut now = start;
        let mut max = start;
        for h in self.all() {
            if h.what == open {
                now += 1;
            } else if h.what == close {
                now = now.saturating_sub(1);
            }
            max = max.max(now);
        }
        max
    }
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
}

/// One fake node: its agent, its LB member and its sites.
pub struct FakeNode {
    pub name: String,
    behaviour: Mutex<Behaviour>,
    state: Mutex<NodeState>,
    log: Log,
}

impl FakeNode {
    fn new(name: &str, i: usize, behaviour: Behaviour, log: Log) -> Self {
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
            }),
            log,
        }
    }

    fn behaviour(&self) -> Behaviour {
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

    fn healthy(&self) -> bool {
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
            services: [
                ("W3SVC", ServiceState::Running),
                ("WAS", ServiceState::Running),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
            pools: vec![PoolView {
                name: "Shop".into(),
                state: PoolState::Started,
                pids: st.pids.clone(),
            }],
            in_flight: Some(0),
            drained: false,
            lease: None,
            notice: None,
        })
    }

    async fn drain(&self, _op_id: &str) -> Result<(), AgentError> {
        self.reachable()
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
            services: [
                ("W3SVC", ServiceState::Running),
                ("WAS", ServiceState::Running),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
            replayed: false,
        };
        st.results.insert(op_id.to_string(), report.clone());
        drop(st);
        self.log.push(&self.name, What::OperateEnd);
        Ok(report)
    }

    async fn acquire_lease(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Duration,
    ) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn renew_lease(&self, _: &str, _: Duration) -> Result<(), AgentError> {
        self.reachable()
    }

    async fn release_lease(&self, _: &str) -> Result<(), AgentError> {
        self.reachable()
    }
}

/// A load balancer in front of the fake nodes.
pub struct FakeLb {
    nodes: Vec<Arc<FakeNode>>,
    log: Log,
}

impl FakeLb {
    fn node(&self, name: &str) -> Result<&Arc<FakeNode>, LbError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LbError::NoMember {
                lb: self.name(),
                node: name.into(),
                member: format!("member `{name}`"),
            })
    }
}

#[async_trait]
impl LoadBalancer for FakeLb {
    fn name(&self) -> String {
        "fake load balancer".into()
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        Ok(nodes
            .iter()
            .map(|n| Member {
                node: n.name.clone(),
                state: self.node(&n.name).ok().map(|f| {
                    let state = f.lb_state();
                    MemberState {
                        state,
                        raw: format!("{state:?}").to_uppercase(),
                    }
                }),
            })
            .collect())
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        let t = self.node(&node.name)?.behaviour().sessions_time;
        tokio::time::sleep(t.min(timeout)).await;
        Ok(t <= timeout)
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        let n = self.node(&t.node.name)?;
        if n.lb_state() != LbState::Draining {
            n.set_lb(LbState::Draining);
            self.log.push(&n.name, What::Drained);
        }
        Ok(())
    }

    async fn undrain(&self, t: &Target<'_>, _timeout: Duration) -> Result<Duration, LbError> {
        let n = self.node(&t.node.name)?;
        if n.lb_state() != LbState::Up {
            n.set_lb(LbState::Up);
            self.log.push(&n.name, What::Returned);
        }
        Ok(Duration::from_millis(1))
    }
}

/// Probes that ask the fake nodes.
pub struct FakeProber {
    nodes: Vec<Arc<FakeNode>>,
}

impl FakeProber {
    fn node(&self, name: &str) -> Option<&Arc<FakeNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[async_trait]
impl Prober for FakeProber {
    async fn once(&self, node: &Node, _sites: &[Site]) -> Result<(), String> {
        match self.node(&node.name) {
            Some(n) if n.healthy() => Ok(()),
            _ => Err("site shop: GET / answered 500, expected 200".into()),
        }
    }

    async fn until_healthy(
        &self,
        node: &Node,
        sites: &[Site],
        timeout: Duration,
    ) -> Result<(), String> {
        let healthy = farm_proto::poll::until(timeout, Duration::from_millis(10), || async {
            self.once(node, sites).await.ok()
        })
        .await;
        healthy.map_err(|()| format!("not healthy within {timeout:?}"))
    }
}

/// "Now" moving with tokio's (paused) clock from `start`.
pub struct FakeClock {
    pub start: jiff::Timestamp,
    pub at: Instant,
}

impl FakeClock {
    pub fn starting(start: &str) -> Arc<FakeClock> {
        Arc::new(FakeClock {
            start: start
                .parse()
                .expect("a timestamp like 2026-11-21T02:00:00Z"),
            at: Instant::now(),
        })
    }
}

impl Clock for FakeClock {
    fn now(&self) -> jiff::Timestamp {
        let passed = jiff::SignedDuration::try_from(Instant::now() - self.at).unwrap_or_default();
        self.start.saturating_add(passed).unwrap_or(self.start)
    }
}

/// A farm of `behaviours.len()` fake nodes (`web01`, ...), its log, and the
/// inventory with `rollout` as its rollout section.
pub struct FakeFarm {
    pub farm: Farm,
    pub nodes: Vec<Arc<FakeNode>>,
    pub log: Log,
}

pub fn fake_farm(behaviours: Vec<Behaviour>, rollout: &str) -> FakeFarm {
    let log = Log::default();
    let mut yaml = String::from("farm: fake\nnodes:\n");
    for i in 0..behaviours.len() {
        yaml.push_str(&format!(
            "  - {{name: web{:02}, address: 127.0.0.{}}}\n",
            i + 1,
            i + 1
        ));
    }
    yaml.push_str("load_balancer: {kind: none}\nsites:\n  - name: shop\n    probe: {successes: 1}\napp_pools: [Shop]\n");
    yaml.push_str(rollout);
    let inventory =
        farm_inventory::parse(&yaml).unwrap_or_else(|e| panic!("fake inventory:\n{yaml}\n{e:?}"));
    let nodes: Vec<Arc<FakeNode>> = behaviours
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            Arc::new(FakeNode::new(
                &format!("web{:02}", i + 1),
                i,
                b,
                log.clone(),
            ))
        })
        .collect();
    let farm = Farm {
        inventory,
        agents: nodes
            .iter()
            .map(|n| n.clone() as Arc<dyn AgentApi>)
            .collect(),
        lb: Arc::new(FakeLb {
            nodes: nodes.clone(),
            log: log.clone(),
        }),
        prober: Arc::new(FakeProber {
            nodes: nodes.clone(),
        }),
    };
    FakeFarm { farm, nodes, log }
}
