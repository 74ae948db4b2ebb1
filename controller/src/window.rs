//! Keeping a run inside its maintenance window ([`farm_inventory::Window`]):
//! refused outside it, and a node is not started when its estimated time
//! does not fit in what is left. Time comes from a [`Clock`], so tests pass
//! it in instead of sleeping through real time.
use std::sync::Arc;
use std::time::Duration;

use farm_inventory::Window;
use jiff::Timestamp;

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The window of a run: what it is, the clock, and how long a node takes.
#[derive(Clone)]
pub struct WindowGuard {
    pub window: Window,
    pub clock: Arc<dyn Clock>,
    pub per_node: Duration,
}

impl WindowGuard {
    /// Why a node may not start now, if it may not.
    pub fn refuse(&self) -> Option<String> {
        let now = self.clock.now();
        match self.window.remaining(now) {
            None => Some(format!(
                "outside the maintenance window {} (it is {})",
                self.window,
                self.window.local(now)
            )),
            Some(left) if left < self.per_node => Some(format!(
                "the maintenance window {} closes in {}, and a node takes about {}",
                self.window,
                humantime::format_duration(Duration::from_secs(left.as_secs())),
                humantime::format_duration(Duration::from_secs(self.per_node.as_secs()))
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct Fixed(Timestamp);
    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            self.0
        }
    }

    #[test]
    fn a_node_must_fit_in_what_is_left() {
        let guard = |now: &str| WindowGuard {
            window: Window::parse("02:00-05:00 UTC").unwrap(),
            clock: Arc::new(Fixed(at(now))),
            per_node: Duration::from_secs(120),
        };
        assert!(guard("2026-11-21T04:57:00Z").refuse().is_none());
        let why = guard("2026-11-21T04:59:00Z").refuse().unwrap();
        assert!(
            why.contains("closes in 1m") && why.contains("about 2m"),
            "{why}"
        );
        assert!(guard("2026-11-21T06:00:00Z")
            .refuse()
            .unwrap()
            .contains("outside"));
    }
}
