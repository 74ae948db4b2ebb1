//! The rolling operation: the scheduler ([`engine`]) and the per-node
//! driver (`node`) over the pure per-node [`crate::machine`] and the one
//! [`crate::capacity`] check (modules of their own: the run contract and
//! reports use them without the engine), what an interrupted node needs
//! to resume ([`reconcile`]), and the static [`plan`] of a run.
pub use crate::{capacity, machine};

/// Why a node's step outside the operation itself (staging its release, switching it back) failed, naming the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl From<String> for StepError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// The message, where a caller composes its own.
impl From<StepError> for String {
    fn from(e: StepError) -> Self {
        e.0
    }
}

pub mod engine;
mod node;

pub use node::RETURNED as node_returned;
pub mod plan;
pub mod reconcile;
#[cfg(test)]
mod tests;
