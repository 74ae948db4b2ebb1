//! Exit codes, a documented contract: scripts depend on them.
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the run finished, every node done.
    Done = 0,
    /// 1: the run failed or halted part-way.
    Failed = 1,
    /// 2: bad input (usage, inventory).
    BadInput = 2,
    /// 3: refused before acting (preflight, capacity, confirmation).
    Refused = 3,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An error that ends a command with a given exit status.
#[derive(Debug)]
pub struct CommandError {
    pub status: ExitStatus,
    pub message: String,
}

impl CommandError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::BadInput,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Refused,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Failed,
            message: message.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

impl From<farm_inventory::LoadError> for CommandError {
    fn from(e: farm_inventory::LoadError) -> Self {
        CommandError::bad_input(e.to_string())
    }
}

pub type CommandResult = Result<ExitStatus, CommandError>;

impl CommandError {
    /// The answer a pipeline gets on stdout (`--output json|jsonl`) when
    /// the command ends with this error: `outcome` (`refused`,
    /// `bad_input`, `failed`), `exit_code`, `reason`, and `problems` (the
    /// message's listed items, one per node or field, when it lists any).
    pub fn answer(&self) -> serde_json::Value {
        let outcome = match self.status {
            ExitStatus::Refused => "refused",
            ExitStatus::BadInput => "bad_input",
            _ => "failed",
        };
        let problems: Vec<String> = self
            .message
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("- ").map(str::to_string))
            .collect();
        serde_json::json!({
            "outcome": outcome,
            "exit_code": self.status.code(),
            "reason": self.message,
            "problems": problems,
        })
    }
}
