//! Fakes for the engine's boundaries — the agent, the load balancer, the
//! prober and the clock — so the scheduler and the state machine run in
//! milliseconds on tokio's paused clock. Every fake writes to one shared
//! [`Log`], from which tests read the order of events and how many nodes
//! were out of rotation or operated on at any moment.
//!
//! Compiled for the crate's own tests and with the `test-util` feature.
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::agent::AgentApi;
use crate::farm::Farm;
use crate::window::Clock;

mod lb;
mod node;

pub use lb::{FakeLb, FakeProber};
pub use node::{Behaviour, FakeNode};

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
    /// A package was uploaded (not answered as already there).
    Uploaded,
    /// The site was pointed at another release.
    Switched,
    /// The load balancer put the node back on its own.
    Forgot,
    /// A memory dump of a pool was asked.
    Dumped,
}

/// The shared event log.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Happened>>>);

impl Log {
    pub(crate) fn push(&self, node: &str, what: What) {
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

    /// How many nodes were drained before the first one came back.
    pub fn drained_before_first_return(&self) -> usize {
        self.all()
            .iter()
            .take_while(|h| h.what != What::Returned)
            .filter(|h| h.what == What::Drained)
            .count()
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
