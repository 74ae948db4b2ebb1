//! The rolling operation: the pure per-node [`machine`], the one
//! [`capacity`] check, the scheduler ([`engine`]) and the per-node driver
//! (`node`), what an interrupted node needs to resume ([`reconcile`]), and
//! the static [`plan`] of a run.
pub mod capacity;
pub mod engine;
pub mod machine;
mod node;

pub use node::RETURNED as node_returned;
pub mod plan;
pub mod reconcile;
#[cfg(test)]
mod tests;
