//! The gRPC contract between `farmctl` and `farm-agent` (`farm.agent.v1`).
//!
//! The code is generated at build time from `proto/agent.proto` by `protox`
//! (a pure-Rust protobuf compiler), so no system `protoc` is needed.
#![forbid(unsafe_code)]

/// Generated messages, client and server for `farm.agent.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("farm.agent.v1");
}

pub mod domain;
pub mod http;
pub mod names;
pub mod package;
pub mod pki;
pub mod poll;

pub use v1::node_agent_client::NodeAgentClient;
pub use v1::node_agent_server::{NodeAgent, NodeAgentServer};
