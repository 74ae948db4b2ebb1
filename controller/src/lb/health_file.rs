//! `kind: health-file`: the agent renames the health-check file the load
//! balancer's HTTP monitor requests. Works with any LB that monitors HTTP;
//! the LB notices within its detection time (check interval × fall/rise),
//! which the driver waits out because nothing else can tell it.
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{LbError, LoadBalancer, Target};
use crate::probe;

/// How often the health file is requested while waiting for it to answer.
const POLL: Duration = Duration::from_millis(100);

pub struct HealthFile {
    path: String,
    detection: Duration,
    host: Option<String>,
}

impl HealthFile {
    pub fn new(path: String, detection: Duration, host: Option<String>) -> Self {
        Self {
            path,
            detection,
            host,
        }
    }

    fn agent_error(&self, t: &Target<'_>, what: &'static str, e: impl ToString) -> LbError {
        LbError::Agent {
            lb: self.name(),
            node: t.node.name.clone(),
            what,
            detail: e.to_string(),
        }
    }
}

#[async_trait]
impl LoadBalancer for HealthFile {
    fn name(&self) -> String {
        format!("health file {}", self.path)
    }

    fn kind(&self) -> &'static str {
        "health-file"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        t.agent
            .drain(t.op_id)
            .await
            .map_err(|e| self.agent_error(t, "rename the health file", e))?;
        // The monitor keeps sending until it has seen the check fail.
        tokio::time::sleep(self.detection).await;
        Ok(())
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let view = t
            .agent
            .status()
            .await
            .map_err(|e| self.agent_error(t, "say whether the health file is away", e))?;
        Ok(Some(view.drained))
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        t.agent
            .undrain(t.op_id)
            .await
            .map_err(|e| self.agent_error(t, "restore the health file", e))?;
        // Confirm the file answers as the monitor will see it, then give the
        // monitor its rise time.
        let get = || {
            probe::get(
                &t.node.address,
                t.node.http_port,
                self.host.as_deref(),
                &self.path,
                Duration::from_secs(5),
            )
        };
        let answered = farm_proto::poll::until(timeout, POLL, || async {
            matches!(get().await, Ok((200, _))).then_some(())
        })
        .await;
        if answered.is_err() {
            let last = match get().await {
                Ok((status, _)) => format!("HTTP {status}"),
                Err(e) => e.to_string(),
            };
            return Err(LbError::NotYet {
                lb: self.name(),
                node: t.node.name.clone(),
                wanted: "answering 200",
                after: timeout,
                state: last,
            });
        }
        tokio::time::sleep(self.detection).await;
        Ok(start.elapsed())
    }
}
