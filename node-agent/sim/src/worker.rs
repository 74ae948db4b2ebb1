//! A simulated w3wp.exe: a PID, a warm-up time, and the requests it serves.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) struct Worker {
    pub pid: u32,
    pub started_unix_ms: u64,
    warm_at: Mutex<Instant>,
    in_flight: watch::Sender<u64>,
    killed: watch::Sender<bool>,
    total: AtomicU64,
}

impl Worker {
    pub fn new(pid: u32, warm_at: Instant) -> Arc<Worker> {
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Arc::new(Worker {
            pid,
            started_unix_ms,
            warm_at: Mutex::new(warm_at),
            in_flight: watch::channel(0).0,
            killed: watch::channel(false).0,
            total: AtomicU64::new(0),
        })
    }

    pub fn warm_at(&self) -> Instant {
        *self.warm_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_warm_at(&self, at: Instant) {
        *self.warm_at.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn kill(&self) {
        self.killed.send_replace(true);
    }

    pub fn is_killed(&self) -> bool {
        *self.killed.borrow()
    }

    /// Resolves when the worker is killed; its requests are cut then.
    pub async fn killed(&self) {
        let mut rx = self.killed.subscribe();
        let _ = rx.wait_for(|k| *k).await;
    }

    /// Resolves when no request is in flight on this worker.
    pub async fn idle(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Requests it is serving now.
    pub fn active(&self) -> u64 {
        *self.in_flight.borrow()
    }

    pub fn begin(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.in_flight.send_modify(|n| *n += 1);
    }

    pub fn end(&self) {
        self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}
