//! A bounded HTTP load generator. With `Routing::HealthChecked` it acts as
//! a minimal load balancer: a monitor per backend requests the health file
//! and only backends that answer 200 get traffic, the way an LB with an
//! HTTP monitor (interval, fall 1) behaves.
/// The load generator's `User-Agent`: user traffic to the nodes' logs
/// (farmctl's probes are counted apart as checks).
pub const LOAD_AGENT: &str = "farmctl-load (sandbox traffic)";

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::report::TrafficReport;

#[derive(Debug, Clone)]
pub struct Backend {
    pub address: String,
    pub port: u16,
    pub host: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Routing {
    /// Round robin over every backend, drained or not.
    Direct,
    /// Only backends whose health file answers 200.
    HealthChecked { path: String, interval: Duration },
}

#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub backends: Vec<Backend>,
    pub routing: Routing,
    pub workers: usize,
    /// Pause between a worker's requests.
    pub pace: Duration,
    /// One request in N, at random, is `/slow?ms=slow_ms` (0: never). At
    /// random: a fixed every-Nth pattern behind a round-robin balancer
    /// sends all the slow requests to the same servers.
    pub slow_every: u64,
    pub slow_ms: u64,
    /// Hard bounds: the generator stops by itself.
    pub max_requests: u64,
    pub max_duration: Duration,
    /// How long a request is waited for before the client gives up (as
    /// users do: a hung request does not hold a worker for ever).
    pub timeout: Duration,
}

impl TrafficSpec {
    pub fn new(backends: Vec<Backend>, routing: Routing) -> Self {
        Self {
            backends,
            routing,
            workers: 4,
            pace: Duration::from_millis(5),
            slow_every: 10,
            slow_ms: 250,
            max_requests: 2_000_000,
            max_duration: Duration::from_secs(600),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn fail(&self, kind: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

pub struct Traffic {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Traffic {
    pub fn start(spec: TrafficSpec) -> Traffic {
        let (stop, _) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let up: Arc<Vec<AtomicBool>> = Arc::new(
            spec.backends
                .iter()
                .map(|_| AtomicBool::new(true))
                .collect(),
        );
        let mut tasks = Vec::new();
        if let Routing::HealthChecked { path, interval } = &spec.routing {
            for (i, b) in spec.backends.iter().cloned().enumerate() {
                let (up, path, interval, mut stop_rx) =
                    (up.clone(), path.clone(), *interval, stop.subscribe());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let ok = matches!(
                            farm_proto::http::get_as(
                                LOAD_AGENT,
                                &b.address,
                                b.port,
                                b.host.as_deref(),
                                &path,
                                Duration::from_secs(2)
                            )
                            .await,
                            Ok((200, _))
                        );
                        up[i].store(ok, Ordering::Relaxed);
                        tokio::select! {
                            _ = tokio::time::sleep(interval) => {}
                            _ = stop_rx.wait_for(|s| *s) => return,
                        }
                    }
                }));
            }
        }
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = tokio::time::Instant::now() + spec.max_duration;
        for _ in 0..spec.workers {
            let (spec, up, next, counters, mut stop_rx) = (
                spec.clone(),
                up.clone(),
                next.clone(),
                counters.clone(),
                stop.subscribe(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    if *stop_rx.borrow() || tokio::time::Instant::now() >= deadline {
                        return;
                    }
                    let n = counters.sent.fetch_add(1, Ordering::Relaxed) + 1;
                    if n > spec.max_requests {
                        counters.sent.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    let count = spec.backends.len();
                    let pick = (0..count)
                        .map(|k| (start + k) % count)
                        .find(|&i| up[i].load(Ordering::Relaxed));
                    match pick {
                        None => counters.fail("no backend up".into()),
                        Some(i) => {
                            let b = &spec.backends[i];
                            // Each server gets the same mix of URLs, behind
                            // any balancer.
                            let path =
                                if spec.slow_every > 0 && fastrand::u64(..spec.slow_every) == 0 {
                                    format!("/slow?ms={}", spec.slow_ms)
                                } else {
                                    "/".to_string()
                                };
                            match farm_proto::http::get_as(
                                LOAD_AGENT,
                                &b.address,
                                b.port,
                                b.host.as_deref(),
                                &path,
                                spec.timeout,
                            )
                            .await
                            {
                                Ok((s, _)) if (200..300).contains(&s) => {}
                                Ok((s, _)) => counters.fail(format!("HTTP {s}")),
                                Err(e) => counters.fail(classify(&e.to_string())),
                            }
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(spec.pace) => {}
                        _ = stop_rx.wait_for(|s| *s) => return,
                    }
                }
            }));
        }
        Traffic {
            stop,
            tasks,
            counters,
        }
    }

    /// Stops the generator, waiting for requests in flight.
    pub async fn stop(self) -> TrafficReport {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        TrafficReport {
            requests_sent: self.counters.sent.load(Ordering::Relaxed),
            requests_failed: self.counters.failed.load(Ordering::Relaxed),
            failures: self
                .counters
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

fn classify(e: &str) -> String {
    if e.contains("refused") {
        "connection refused".into()
    } else if e.contains("no answer within") {
        "timeout".into()
    } else if e.contains("connect") {
        "connect error".into()
    } else {
        "connection closed".into()
    }
}
