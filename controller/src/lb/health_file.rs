//! `kind: health-file`: the agent renames the health-check file the load
//! balancer's HTTP monitor requests. Works with any LB that monitors HTTP;
//! the LB notices within its detection time (check interval × fall/rise),
//! which the driver waits out because nothing else can tell it.
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{LbError, LoadBalancer, Target};
use crate::probe;

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
}

#[async_trait]
impl LoadBalancer for HealthFile {
    fn kind(&self) -> &'static str {
        "health-file"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        t.agent.drain(t.op_id).await.map_err(|e| {
            LbError(format!(
                "could not rename the health file on {}: {e}",
                t.node.name
            ))
        })?;
        // The monitor keeps sending until it has seen the check fail.
        tokio::time::sleep(self.detection).await;
        Ok(())
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        t.agent.undrain(t.op_id).await.map_err(|e| {
            LbError(format!(
                "could not restore the health file on {}: {e}",
                t.node.name
            ))
        })?;
        // Confirm the file answers as the monitor will see it, then give the
        // monitor its rise time.
        let deadline = start + timeout;
        loop {
            let got = probe::get(
                &t.node.address,
                t.node.http_port,
                self.host.as_deref(),
                &self.path,
                Duration::from_secs(5),
            )
            .await;
            match got {
                Ok((200, _)) => break,
                other if Instant::now() >= deadline => {
                    return Err(LbError(format!(
                        "{} health file {} does not answer 200 after undrain: {other:?}",
                        t.node.name, self.path
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tokio::time::sleep(self.detection).await;
        Ok(start.elapsed())
    }
}
