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
pub mod gauges;
pub mod http;
pub mod latency;
pub mod names;
pub mod package;
pub mod pki;
pub mod poll;
pub mod simhost;
pub mod updates;

pub use v1::node_agent_client::NodeAgentClient;
pub use v1::node_agent_server::{NodeAgent, NodeAgentServer};

/// An error that is one message, composed where it is made (naming the
/// node, pool, file or field): a type of its own per module, convertible
/// from and to its text.
/// `message_error! { /// doc  Name }`.
#[macro_export]
macro_rules! message_error {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, ::thiserror::Error)]
        #[error("{0}")]
        pub struct $name(pub String);

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        /// The message, where a caller composes its own.
        impl From<$name> for String {
            fn from(e: $name) -> Self {
                e.0
            }
        }
    };
}
