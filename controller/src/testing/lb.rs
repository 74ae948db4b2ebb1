//! The fake load balancer and prober in front of the fake nodes.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use farm_inventory::{Node, Site};

use super::node::FakeNode;
use super::{Log, What};
use crate::lb::{LbError, LbState, LoadBalancer, Member, MemberState, Target};
use crate::probe::{ProbeError, Prober};

/// A load balancer in front of the fake nodes.
pub struct FakeLb {
    pub(super) nodes: Vec<Arc<FakeNode>>,
    pub(super) log: Log,
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
            let first = !self.log.of(&n.name).contains(&What::Drained);
            n.set_lb(LbState::Draining);
            self.log.push(&n.name, What::Drained);
            if let (true, Some(after)) = (first, n.behaviour().lb_forgets_drain_after) {
                let (n, log) = (n.clone(), self.log.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    n.set_lb(LbState::Up);
                    log.push(&n.name, What::Forgot);
                });
            }
        }
        Ok(())
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        Ok(Some(
            self.node(&t.node.name)?.lb_state() == LbState::Draining,
        ))
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
    pub(super) nodes: Vec<Arc<FakeNode>>,
}

impl FakeProber {
    fn node(&self, name: &str) -> Option<&Arc<FakeNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[async_trait]
impl Prober for FakeProber {
    async fn once(&self, node: &Node, _sites: &[Site]) -> Result<(), ProbeError> {
        match self.node(&node.name) {
            Some(n) if n.healthy() => Ok(()),
            _ => Err(ProbeError::Status {
                site: "shop".into(),
                path: "/".into(),
                status: 500,
                expected: 200,
            }),
        }
    }

    async fn until_healthy(
        &self,
        node: &Node,
        sites: &[Site],
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let healthy = farm_proto::poll::until(timeout, Duration::from_millis(10), || async {
            self.once(node, sites).await.ok()
        })
        .await;
        match healthy {
            Ok(()) => Ok(()),
            Err(()) => Err(ProbeError::NotHealthy {
                within: timeout,
                last: Box::new(
                    self.once(node, sites)
                        .await
                        .err()
                        .unwrap_or(ProbeError::NotProbed),
                ),
            }),
        }
    }

    async fn until_serves(
        &self,
        node: &Node,
        _site: &Site,
        path: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let serves = farm_proto::poll::until(timeout, Duration::from_millis(10), || async {
            self.node(&node.name)
                .is_some_and(|n| n.serves(expect))
                .then_some(())
        })
        .await;
        serves.map_err(|()| ProbeError::NotServing {
            site: "shop".into(),
            path: path.into(),
            expect: expect.into(),
            within: timeout,
            seen: "the fake node serves another release".into(),
        })
    }
}
