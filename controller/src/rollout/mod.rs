//! The rolling operation: the pure per-node [`machine`], batch planning in
//! [`plan`], and the [`engine`] that does the I/O.
pub mod engine;
pub mod machine;
pub mod plan;
pub mod resume;
