//! Waiting on a condition with a bound, the one way this project polls
//! state nothing pushes (a load balancer's stats, IIS through appcmd, a
//! file another process writes). Tests use the macros, production code
//! [`until`].
use std::future::Future;
use std::time::Duration;

/// Calls `check` every `interval` until it returns `Some`, or `timeout`
/// passes: `Ok(value)`, or `Err(())` when time ran out. `check` runs at
/// least once, and once more at the deadline.
pub async fn until<T, F, Fut>(timeout: Duration, interval: Duration, mut check: F) -> Result<T, ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(());
        }
        tokio::time::sleep_until((now + interval).min(deadline)).await;
    }
}

/// The deadline of a wait that starts now (for the macros).
#[doc(hidden)]
pub fn __deadline(timeout: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + timeout
}

/// Sleeps one polling interval; `false` once `deadline` has passed (for
/// the macros).
#[doc(hidden)]
pub async fn __tick(deadline: tokio::time::Instant) -> bool {
    if tokio::time::Instant::now() >= deadline {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    true
}

/// Waits (bounded) until an async condition holds, else panics with the
/// message: `assert_eventually!(Duration::from_secs(20), async { .. }, "what {}", x)`.
/// The condition expression is evaluated afresh on every try, and may
/// borrow what is around it mutably.
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $cond:expr, $($msg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let deadline = $crate::poll::__deadline(timeout);
        loop {
            if $cond.await {
                break;
            }
            if !$crate::poll::__tick(deadline).await {
                panic!("not within {:?}: {}", timeout, format!($($msg)+));
            }
        }
    }};
}

/// Waits (bounded) until an async expression gives `Some(value)` and
/// returns the value, else panics with the message.
#[macro_export]
macro_rules! eventually {
    ($timeout:expr, $check:expr, $($msg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        let deadline = $crate::poll::__deadline(timeout);
        loop {
            if let Some(v) = $check.await {
                break v;
            }
            if !$crate::poll::__tick(deadline).await {
                panic!("not within {:?}: {}", timeout, format!($($msg)+));
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn until_gives_the_value_or_runs_out() {
        let n = AtomicU32::new(0);
        let v = until(
            Duration::from_secs(1),
            Duration::from_millis(10),
            || async { (n.fetch_add(1, Ordering::SeqCst) == 3).then_some(7) },
        )
        .await;
        assert_eq!(v, Ok(7));
        let never = until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { None::<()> },
        )
        .await;
        assert_eq!(never, Err(()));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "the sky to fall")]
    async fn the_macro_names_what_it_waited_for() {
        assert_eventually!(
            Duration::from_millis(50),
            async { false },
            "the sky to {}",
            "fall"
        );
    }
}
