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

/// Waits until `window` opens (`--wait-for-window`), telling `say` how
/// long is left at most every `every` — each second on a terminal, each
/// minute in a log. `false` when `stop` was set first (Ctrl-C).
pub async fn wait_until_open(
    window: &Window,
    clock: &dyn Clock,
    every: Duration,
    mut stop: Option<tokio::sync::watch::Receiver<bool>>,
    say: &mut (dyn FnMut(Duration) + Send),
) -> bool {
    loop {
        let left = window.opens_in(clock.now());
        if left.is_zero() {
            return true;
        }
        say(left);
        // Sleep to the next whole step of the countdown, or to the opening.
        let nap = left.min(every);
        let stopped = async {
            match stop.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|v| *v).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stopped => return false,
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

#[cfg(test)]
mod wait_tests {
    use super::*;

    /// Time that moves with tokio's (paused) clock.
    struct Follows(Timestamp, tokio::time::Instant);
    impl Clock for Follows {
        fn now(&self) -> Timestamp {
            self.0 + jiff::SignedDuration::try_from(self.1.elapsed()).unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_started_early_waits_with_a_line_a_minute() {
        let w = Window::parse("02:00-05:00 UTC").unwrap();
        let clock = Follows(
            "2026-11-21T01:57:30Z".parse().unwrap(),
            tokio::time::Instant::now(),
        );
        let mut said = Vec::new();
        let t = tokio::time::Instant::now();
        let opened = wait_until_open(&w, &clock, Duration::from_secs(60), None, &mut |left| {
            said.push(left)
        })
        .await;
        assert!(opened);
        assert_eq!(t.elapsed(), Duration::from_secs(150));
        assert_eq!(
            said,
            [
                Duration::from_secs(150),
                Duration::from_secs(90),
                Duration::from_secs(30)
            ]
        );
        // Open already: no wait, nothing said.
        let mut said = Vec::new();
        assert!(
            wait_until_open(&w, &clock, Duration::from_secs(1), None, &mut |l| said
                .push(l))
            .await
        );
        assert!(said.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_while_waiting_stops_the_wait() {
        let w = Window::parse("02:00-05:00 UTC").unwrap();
        let clock = Follows(
            "2026-11-21T01:00:00Z".parse().unwrap(),
            tokio::time::Instant::now(),
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.send_replace(true);
        });
        let opened =
            wait_until_open(&w, &clock, Duration::from_secs(1), Some(rx), &mut |_| {}).await;
        assert!(!opened);
    }
}
