//! farm-agent's tests: the procedures on both backends (the behaviour
//! suite), the command backend against verbatim tool output, the gRPC
//! service and its security, deploys, LB members, and the agent process's
//! life. One test binary, a module per subject.
mod agent;
mod behaviour;
mod command_backend;
mod deploy;
mod dump;
mod lb_members;
mod lifecycle;
mod parsers;
mod patch;
mod security;
mod traffic;
