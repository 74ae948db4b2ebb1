//! The person (or pipeline) a run asks: whether to go ahead after
//! preflight, and whether to go on after the canary node. A trait, so
//! tests, the demo and `--yes` answer without a terminal.
use std::io::IsTerminal;

use async_trait::async_trait;

use crate::report::NodeReport;

#[async_trait]
pub trait Operator: Send + Sync {
    /// Go ahead with what `question` describes?
    async fn confirm_run(&self, question: &str) -> bool;
    /// The canary is back in rotation: go on with the other nodes?
    async fn confirm_canary(&self, canary: &NodeReport) -> bool;
    /// The canary analysis reached no verdict (`on_inconclusive: pause`):
    /// promote the release anyway? Never yes without a person to ask.
    async fn promote_inconclusive(&self, _why: &str) -> bool {
        false
    }
}

/// Says yes to everything (`--yes`, the demo, tests).
pub struct AssumeYes;

#[async_trait]
impl Operator for AssumeYes {
    async fn confirm_run(&self, _: &str) -> bool {
        true
    }
    async fn confirm_canary(&self, _: &NodeReport) -> bool {
        true
    }
}

/// Asks on the terminal (stdin). Not a terminal, or Ctrl-C at the prompt,
/// is a "no".
pub struct Terminal {
    /// Whether the run itself was already confirmed (`--yes`).
    pub yes: bool,
}

impl Terminal {
    async fn ask(question: String) -> bool {
        if !std::io::stdin().is_terminal() {
            return false;
        }
        crate::err!("{question} [y/N] ");
        let read = tokio::task::spawn_blocking(|| {
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).map(|_| answer)
        });
        let answer = tokio::select! {
            a = read => a.ok().and_then(Result::ok).unwrap_or_default(),
            _ = tokio::signal::ctrl_c() => String::new(),
        };
        matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

#[async_trait]
impl Operator for Terminal {
    async fn confirm_run(&self, question: &str) -> bool {
        self.yes || Self::ask(question.to_string()).await
    }

    async fn confirm_canary(&self, canary: &NodeReport) -> bool {
        let pids: Vec<String> = canary
            .pids_after
            .iter()
            .map(|(pool, p)| format!("{pool} {p:?}"))
            .collect();
        Self::ask(format!(
            "canary {} is back in rotation ({}). Go on with the other nodes?",
            canary.name,
            pids.join(", ")
        ))
        .await
    }

    async fn promote_inconclusive(&self, why: &str) -> bool {
        Self::ask(format!(
            "the canary analysis reached no verdict ({why}). Promote the release to the other nodes anyway?"
        ))
        .await
    }
}
