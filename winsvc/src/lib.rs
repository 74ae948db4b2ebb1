//! A program as a native Windows service (Service Control Manager,
//! through `windows-service`), with its lifecycle in the Windows Event
//! Log: what `farm-agent service ...` and `farmctl service ...` share.
//!
//! [`install`] registers `PROGRAM.exe ARGS`: start type automatic
//! (delayed), LocalSystem unless an account is given, restart on failure
//! (after 5 s, 30 s, then 60 s; the count resets after a day). [`run`] is
//! what the SCM starts: it reports start-pending, running (when the
//! program says it is ready), stop-pending (with a bounded wait hint) and
//! stopped, and on Stop or Shutdown tells the program to stop and waits
//! for it.
//!
//! Elsewhere than on Windows the crate is empty.
#[cfg(windows)]
mod service;
#[cfg(windows)]
pub use service::*;
