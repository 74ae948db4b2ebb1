//! The rolling operation: the scheduler ([`engine`]) and the per-node
//! driver (`node`) over the pure per-node [`crate::machine`] and the one
//! [`crate::capacity`] check (modules of their own: the run contract and
//! reports use them without the engine), what an interrupted node needs
//! to resume ([`reconcile`]), and the static [`plan`] of a run.
pub use crate::{capacity, machine};

farm_proto::message_error! {
    /// Why a node's step outside the operation itself (staging its release, switching it back) failed, naming the node.
    StepError
}

pub mod engine;
mod node;

pub use node::RETURNED as node_returned;
pub mod plan;
pub mod reconcile;
mod restart;
#[cfg(test)]
mod tests;
