//! Load balancer members this agent drives with local Windows tools, for
//! the controller's `arr` and `nlb` drivers: a server of an IIS ARR web
//! farm (this agent runs on the ARR server) or this node in its Windows
//! NLB cluster. Everything runs through the [`CommandRunner`]: PowerShell
//! with a fixed script or cmdlet, argv only.
pub mod arr;
pub mod nlb;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_proto::v1 as pb;

use crate::runner::{CommandRunner, Output};

#[derive(Debug, thiserror::Error)]
pub enum LbMemberError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

pub struct LbMembers {
    runner: Arc<dyn CommandRunner>,
    powershell: String,
    /// One PowerShell call (a drain's own -Timeout comes on top).
    timeout: Duration,
    /// This node's name in its NLB cluster.
    node: String,
    /// How the last background `Stop-NlbClusterNode -Drain` ended, when it
    /// failed: reported by the next state call.
    nlb_drain_error: Arc<Mutex<Option<String>>>,
}

impl LbMembers {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        powershell: impl Into<String>,
        timeout: Duration,
        node: impl Into<String>,
    ) -> Self {
        Self {
            runner,
            powershell: powershell.into(),
            timeout,
            node: node.into(),
            nlb_drain_error: Arc::default(),
        }
    }

    fn args(command: String) -> Vec<String> {
        vec![
            "-NoProfile".into(),
            "-NonInteractive".into(),
            "-ExecutionPolicy".into(),
            "Bypass".into(),
            "-Command".into(),
            command,
        ]
    }

    async fn powershell(
        &self,
        command: String,
        timeout: Duration,
    ) -> Result<Output, LbMemberError> {
        self.runner
            .run(&self.powershell, &Self::args(command), timeout)
            .await
            .map_err(|e| LbMemberError::Failed(e.to_string()))
    }

    pub async fn handle(
        &self,
        req: &pb::LbMemberRequest,
    ) -> Result<pb::LbMemberReply, LbMemberError> {
        match req.kind.as_str() {
            "arr" => self.arr(req).await,
            "nlb" => self.nlb(req).await,
            other => Err(LbMemberError::Invalid(format!(
                "load balancer kind {other:?}: `arr` or `nlb`"
            ))),
        }
    }

    async fn arr(&self, req: &pb::LbMemberRequest) -> Result<pb::LbMemberReply, LbMemberError> {
        arr::check_farm(&req.farm)?;
        arr::check_server(&req.server)?;
        let set = arr::new_state(&req.action, &req.mode)?;
        let out = self
            .powershell(arr::script(&req.farm, &req.server, set), self.timeout)
            .await?;
        // Exit 3/4 still print their line; any other failure is PowerShell's.
        if !matches!(out.code, Some(0 | 3 | 4)) {
            return Err(LbMemberError::Failed(format!(
                "the ARR script exited with {}: {}",
                out.code.map_or("no code".into(), |c| c.to_string()),
                first_error(&out)
            )));
        }
        let c = arr::parse(&out.stdout, &req.farm, &req.server)?;
        Ok(pb::LbMemberReply {
            state: c.state,
            healthy: c.healthy,
            current_requests: c.current_requests,
            detail: out.stdout.trim().lines().last().unwrap_or("").to_string(),
        })
    }

    async fn nlb(&self, req: &pb::LbMemberRequest) -> Result<pb::LbMemberReply, LbMemberError> {
        match req.action.as_str() {
            "state" => {}
            "drain" => {
                // It returns when the drain is done or its timeout ran out,
                // so it runs on while the controller watches the state.
                *self
                    .nlb_drain_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                let secs = req.drain_timeout_s.max(1);
                let command = format!("Stop-NlbClusterNode -Drain -Timeout {secs}");
                let runner = self.runner.clone();
                let (program, args) = (self.powershell.clone(), Self::args(command));
                let errors = self.nlb_drain_error.clone();
                let limit = Duration::from_secs(u64::from(secs)) + self.timeout;
                tokio::spawn(async move {
                    let failed = match runner.run(&program, &args, limit).await {
                        Ok(out) if out.code == Some(0) => None,
                        Ok(out) => {
                            Some(format!("Stop-NlbClusterNode failed: {}", first_error(&out)))
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = failed {
                        tracing::warn!("{e}");
                        *errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                });
            }
            "return" => {
                let out = self
                    .powershell("Start-NlbClusterNode".into(), self.timeout)
                    .await?;
                if out.code != Some(0) {
                    return Err(LbMemberError::Failed(format!(
                        "Start-NlbClusterNode failed: {}",
                        first_error(&out)
                    )));
                }
            }
            other => {
                return Err(LbMemberError::Invalid(format!(
                    "action {other:?}: `state`, `drain` or `return`"
                )))
            }
        }
        let out = self
            .powershell("Get-NlbClusterNode".into(), self.timeout)
            .await?;
        if out.code != Some(0) {
            return Err(LbMemberError::Failed(format!(
                "Get-NlbClusterNode failed: {}",
                first_error(&out)
            )));
        }
        let nodes = nlb::parse_nodes(&out.stdout)?;
        let me = nlb::this_node(&nodes, &self.node)?;
        let drain_error = self
            .nlb_drain_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(pb::LbMemberReply {
            state: me.state.clone(),
            healthy: true,
            current_requests: -1,
            detail: match drain_error {
                Some(e) => format!("{} {} ({e})", me.name, me.state),
                None => format!("{} {}", me.name, me.state),
            },
        })
    }
}

/// The first line of stderr (PowerShell's error record), else of stdout.
fn first_error(out: &Output) -> String {
    out.stderr
        .lines()
        .chain(out.stdout.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}
