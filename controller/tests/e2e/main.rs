//! farmctl end to end: real agent processes (the simulator), the real
//! `farmctl` binary, real HAProxy, etcd and moto where the drivers need
//! them. One test binary, a module per subject (the Windows run under Wine
//! and the AWS driver's tests, which set process-wide credentials, are
//! binaries of their own).
mod common;

mod canary;
mod cli;
mod contract;
mod decisions;
mod deploy;
mod errors;
mod etcd;
mod guard;
mod hangs;
mod haproxy;
mod lb_drivers;
mod logs;
mod metrics;
mod notify;
mod patch;
mod refusals;
mod resume;
mod rolling;
mod safety;
mod schemas;
mod terminal;
mod timeline;
mod traffic_health;
mod watch;
mod window;
