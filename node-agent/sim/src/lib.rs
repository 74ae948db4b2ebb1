//! A simulated IIS server that serves real HTTP on loopback.
//!
//! It models what matters for a rolling operation: worker processes whose
//! PIDs change on recycle, overlapped rotation (the new worker takes new
//! requests while the old one finishes its own, cut at shutdownTimeLimit),
//! non-overlapped rotation and stopped pools (503), `iisreset` closing the
//! listeners (connection refused) for the stop+start time, cold starts, the
//! health-check file that drain renames, and injected faults. Timings come
//! from the sim file ([`config`]).
mod backend;
pub mod config;
pub mod host;
mod http;
pub mod logs;
mod worker;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use config::{InitialState, SimFile, SimPool, StartMode};
use farm_iis::*;
pub(crate) use worker::Worker;

pub use http::BoundSite;

/// One simulated IIS server.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SimFile,
    state: Mutex<State>,
    /// Requests in flight on the whole node.
    in_flight: watch::Sender<u64>,
    /// Ticks on every change of what `status` reports.
    changed: watch::Sender<u64>,
    /// Whether the sites' listeners are open (IIS running).
    listening: watch::Sender<bool>,
    /// Bumped when IIS stops: every open connection is closed.
    conn_epoch: watch::Sender<u64>,
    /// Set when the simulator shuts down.
    shutdown: watch::Sender<bool>,
    events: Option<Mutex<std::fs::File>>,
    /// IIS's traffic records, when the sim file asks for them.
    pub(crate) logs: Option<logs::Logs>,
    /// Requests served per pool, for its faults' error rate.
    served: Mutex<std::collections::HashMap<String, u64>>,
    /// Each pool's faults, as the sim file says now (re-read on change).
    pool_faults: Mutex<std::collections::HashMap<String, config::PoolFaults>>,
    /// When each pool was last recycled, for faults a recycle heals.
    recycled_at: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The requests running now, for `diagnose` (what `appcmd list
    /// requests` shows on IIS).
    running: Mutex<std::collections::HashMap<u64, RunningEntry>>,
    next_request: std::sync::atomic::AtomicU64,
    /// WAS's events (newest last), as IIS writes them to the System log.
    was_events: Mutex<Vec<crate::WasEvent>>,
    /// Each release folder's own faults (`farm-sim.yaml`), read once.
    release_faults:
        Mutex<std::collections::HashMap<std::path::PathBuf, Option<config::PoolFaults>>>,
}

struct State {
    w3svc: ServiceState,
    was: ServiceState,
    health_file: bool,
    pools: Vec<PoolSim>,
    next_pid: u32,
    start_fails_left: u32,
    /// The never-healthy fault has fired.
    unhealthy: bool,
    sites: Vec<BoundSite>,
    /// Each site's root folder (by site name), where it has one.
    roots: std::collections::HashMap<String, std::path::PathBuf>,
    /// Paths set but not served (the `switch_ignored` fault).
    ignored: std::collections::HashMap<String, std::path::PathBuf>,
}

struct PoolSim {
    cfg: SimPool,
    state: PoolState,
    /// Takes new requests.
    active: Option<Arc<Worker>>,
    /// Overlapped recycle: the new worker, not yet ready.
    starting: Option<Arc<Worker>>,
    /// Old workers finishing their requests.
    retiring: Vec<Arc<Worker>>,
    /// Non-overlapped rotation in progress: requests get 503.
    rotating: bool,
}

impl PoolSim {
    fn workers(&self) -> impl Iterator<Item = &Arc<Worker>> {
        self.active
            .iter()
            .chain(self.starting.iter())
            .chain(self.retiring.iter())
    }

    fn kill_all(&mut self) {
        for w in self.workers() {
            w.kill();
        }
        self.active = None;
        self.starting = None;
        self.retiring.clear();
        self.rotating = false;
    }
}

/// A request being served, as `appcmd list requests` would show it.
#[derive(Debug, Clone)]
pub(crate) struct RunningEntry {
    pub pool: String,
    pub verb: String,
    pub url: String,
    pub client: Option<String>,
    pub started: Instant,
}

/// Removes a running request from the table when it ends.
pub(crate) struct RunningGuard<'a> {
    sim: &'a Simulator,
    id: u64,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.sim
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// How often the sim file is looked at for changes.
const FILE_WATCH: Duration = Duration::from_millis(250);

/// Why a request cannot be served by a worker.
pub(crate) enum Refusal {
    /// 503: pool stopped, rotating, or IIS stopping.
    Unavailable,
    /// The site's pool does not exist (misconfigured sim).
    NoPool,
}

impl Simulator {
    /// Builds the simulator and opens its sites' listeners. Returns once
    /// every listener is bound, so the ports are known.
    pub async fn start(cfg: SimFile) -> std::io::Result<Simulator> {
        let events = match &cfg.event_log {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        let pools = cfg
            .app_pools
            .iter()
            .map(|p| PoolSim {
                cfg: p.clone(),
                state: match p.state {
                    InitialState::Started => PoolState::Started,
                    InitialState::Stopped => PoolState::Stopped,
                },
                active: None,
                starting: None,
                retiring: Vec::new(),
                rotating: false,
            })
            .collect();
        let sim = Simulator {
            inner: Arc::new(Inner {
                logs: cfg.logs.as_deref().map(logs::Logs::new),
                served: Mutex::default(),
                pool_faults: Mutex::new(
                    cfg.app_pools
                        .iter()
                        .map(|p| (p.name.clone(), p.faults.clone()))
                        .collect(),
                ),
                release_faults: Mutex::default(),
                recycled_at: Mutex::default(),
                running: Mutex::default(),
                next_request: std::sync::atomic::AtomicU64::new(0xfb00_0000_8000_0000),
                was_events: Mutex::default(),
                state: Mutex::new(State {
                    w3svc: ServiceState::Running,
                    was: ServiceState::Running,
                    health_file: true,
                    pools,
                    next_pid: 4000 + (std::process::id() % 1000) * 16,
                    start_fails_left: cfg.faults.start_fails,
                    unhealthy: false,
                    sites: Vec::new(),
                    roots: cfg
                        .sites
                        .iter()
                        .filter_map(|s| Some((s.name.clone(), s.physical_path.clone()?)))
                        .collect(),
                    ignored: Default::default(),
                }),
                cfg,
                in_flight: watch::channel(0).0,
                changed: watch::channel(0).0,
                listening: watch::channel(true).0,
                conn_epoch: watch::channel(0).0,
                shutdown: watch::channel(false).0,
                events,
            }),
        };
        {
            let mut st = sim.lock();
            let now = Instant::now();
            for i in 0..st.pools.len() {
                if st.pools[i].state == PoolState::Started
                    && st.pools[i].cfg.start_mode == StartMode::AlwaysRunning
                {
                    // Already warm at start: the farm was serving before us.
                    let w = sim.new_worker(&mut st, now, Duration::ZERO);
                    st.pools[i].active = Some(w);
                }
            }
        }
        let bound = http::bind_sites(&sim).await?;
        sim.lock().sites = bound;
        Ok(sim)
    }

    pub fn node(&self) -> &str {
        &self.inner.cfg.node
    }

    /// Every pool's faults become `faults` (a server that came back from
    /// a restart with its application broken).
    pub fn set_every_pool_faults(&self, faults: &config::PoolFaults) {
        let mut all = self
            .inner
            .pool_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for f in all.values_mut() {
            *f = faults.clone();
        }
    }

    /// IIS as it comes up with the server: every running pool's worker is
    /// new and cold (its startup, then its warm-up).
    pub fn cold_start(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        for i in 0..st.pools.len() {
            if st.pools[i].active.is_some() {
                let cfg = st.pools[i].cfg.clone();
                let w = self.new_worker(&mut st, now + cfg.startup, cfg.warmup);
                st.pools[i].active = Some(w);
            }
        }
        drop(st);
        self.inner.changed.send_modify(|c| *c += 1);
    }

    /// The sites and the ports they were bound to.
    pub fn sites(&self) -> Vec<BoundSite> {
        self.lock().sites.clone()
    }

    /// Closes the listeners and every connection.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.conn_epoch.send_modify(|e| *e += 1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the simulator;
        // keep serving with whatever state it left rather than poisoning.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cfg(&self) -> &SimFile {
        &self.inner.cfg
    }

    fn new_worker(&self, st: &mut State, ready_at: Instant, warmup: Duration) -> Arc<Worker> {
        st.next_pid += 4;
        Worker::new(st.next_pid, ready_at + warmup)
    }

    /// Appends one line to the sim's event log, for tests that check the
    /// order of operations across nodes.
    pub(crate) fn event(&self, event: &str, detail: &str) {
        let Some(file) = &self.inner.events else {
            return;
        };
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let line = serde_json::json!({"t_us": t as u64, "node": self.node(), "event": event, "detail": detail});
        use std::io::Write;
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{line}");
        let _ = f.flush();
    }

    /// Picks the worker for a new request on `pool`, starting one on demand.
    pub(crate) fn admit(&self, pool: &str) -> Result<Arc<Worker>, Refusal> {
        let mut st = self.lock();
        if st.w3svc != ServiceState::Running {
            return Err(Refusal::Unavailable);
        }
        let idx = st
            .pools
            .iter()
            .position(|p| p.cfg.name == pool)
            .ok_or(Refusal::NoPool)?;
        let p = &st.pools[idx];
        if p.state != PoolState::Started || p.rotating {
            return Err(Refusal::Unavailable);
        }
        if let Some(w) = &p.active {
            return Ok(w.clone());
        }
        // On-demand start: this request pays for the cold start.
        let (startup, warmup) = (p.cfg.startup, p.cfg.warmup);
        let w = self.new_worker(&mut st, Instant::now() + startup, warmup);
        st.pools[idx].active = Some(w.clone());
        self.state_changed();
        Ok(w)
    }

    pub(crate) fn unhealthy(&self) -> bool {
        self.lock().unhealthy
    }

    /// The folder `site` serves its files from now.
    /// What a request of `site` (in `pool`) suffers: the faults of the
    /// release the site serves (its `farm-sim.yaml`), else its pool's.
    pub(crate) fn faults(&self, site: &str, pool: &str) -> Option<config::PoolFaults> {
        if let Some(f) = self
            .site_root(site)
            .and_then(|root| self.release_faults(&root))
        {
            return Some(f);
        }
        let f = self
            .inner
            .pool_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pool)
            .cloned()
            .filter(config::PoolFaults::any)?;
        if f.healed_by_recycle {
            let recycled = self
                .inner
                .recycled_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(pool)
                .copied();
            if let Some(at) = recycled {
                let back = f.relapse_after.map(|d| at + d);
                if back.is_none_or(|b| std::time::Instant::now() < b) {
                    return None;
                }
            }
        }
        Some(f)
    }

    /// A pool's worker was replaced: faults a recycle heals are gone.
    pub(crate) fn recycled(&self, pool: &str) {
        self.inner
            .recycled_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pool.to_string(), std::time::Instant::now());
    }

    /// "rapid-fail protection (...)" when WAS disabled `pool` (its last
    /// event about it is 5002).
    pub(crate) fn rapid_fail_of(&self, pool: &str) -> Option<String> {
        self.inner
            .was_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|e| {
                e.pool
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(pool))
            })
            .filter(|e| e.rapid_fail())
            .map(|e| format!("rapid-fail protection (WAS event 5002 at {})", e.date))
    }

    /// Books a request running in `pool` until the guard drops.
    pub(crate) fn running(&self, entry: RunningEntry) -> RunningGuard<'_> {
        let id = self
            .inner
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry);
        RunningGuard { sim: self, id }
    }

    fn was_event(&self, id: u32, level: &str, pool: &str, pid: Option<u32>, message: String) {
        let date = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.3f")
            .to_string();
        let mut events = self
            .inner
            .was_events
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        events.push(crate::WasEvent {
            id,
            level: level.into(),
            date,
            pool: Some(pool.into()),
            pid,
            message,
        });
        let excess = events.len().saturating_sub(100);
        events.drain(..excess);
    }

    /// What `diagnose` tells of `pool`: its running requests (at least
    /// `min_elapsed_ms` old, longest first), its worker, its WAS events.
    /// Every pool's gauges: the requests it runs now; its queue is 0 (the
    /// simulator serves each request at once, nothing waits); no worker
    /// processes to measure CPU or memory of.
    pub(crate) fn gauges(&self) -> Vec<crate::PoolGauges> {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.pool.to_ascii_lowercase())
            .collect::<Vec<_>>();
        self.lock()
            .pools
            .iter()
            .map(|p| crate::PoolGauges {
                pool: p.cfg.name.clone(),
                queue: Some(0),
                rejected: Some(0),
                active_requests: Some(
                    running
                        .iter()
                        .filter(|r| **r == p.cfg.name.to_ascii_lowercase())
                        .count() as u64,
                ),
                cpu_percent: None,
                private_bytes: None,
            })
            .collect()
    }

    /// How long each request running now has run (ms).
    pub(crate) fn running_ms(&self) -> Vec<u64> {
        let now = Instant::now();
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| now.duration_since(r.started).as_millis() as u64)
            .collect()
    }

    pub(crate) fn diagnostics(&self, pool: &str, min_elapsed_ms: u64) -> crate::PoolDiagnostics {
        let now = Instant::now();
        let mut requests: Vec<(u64, crate::RunningRequest)> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, r)| r.pool.eq_ignore_ascii_case(pool))
            .map(|(id, r)| {
                let ms = now.duration_since(r.started).as_millis() as u64;
                (
                    ms,
                    crate::RunningRequest {
                        id: format!("{id:016x}"),
                        verb: r.verb.clone(),
                        url: r.url.clone(),
                        elapsed_ms: Some(ms),
                        client: r.client.clone(),
                        stage: Some("ExecuteRequestHandler".into()),
                        module: Some("ManagedPipelineHandler".into()),
                    },
                )
            })
            .filter(|(ms, _)| *ms >= min_elapsed_ms)
            .collect();
        requests.sort_by_key(|r| std::cmp::Reverse(r.0));
        let st = self.lock();
        let p = st
            .pools
            .iter()
            .find(|p| p.cfg.name.eq_ignore_ascii_case(pool));
        let workers = p
            .and_then(|p| p.active.as_ref())
            .map(|w| crate::WorkerFigures {
                pid: w.pid,
                cpu_percent: None,
                private_bytes: None,
                active_requests: Some(w.active()),
            })
            .into_iter()
            .collect();
        let state = p.map(|p| {
            match p.state {
                PoolState::Started => "Running",
                _ => "Disabled",
            }
            .to_string()
        });
        drop(st);
        let mut events: Vec<crate::WasEvent> = self
            .inner
            .was_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| {
                e.pool
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(pool))
            })
            .cloned()
            .collect();
        events.reverse();
        crate::PoolDiagnostics {
            pool: pool.to_string(),
            requests: requests.into_iter().map(|(_, r)| r).take(50).collect(),
            workers,
            queue: None,
            rejected: None,
            state,
            events,
            notes: vec![
                "the simulator has no worker processes to measure: CPU and private bytes are not known".into(),
            ],
        }
    }

    /// Watches the sim file: when it changes on disk, its pools' `faults`
    /// take effect at once (a test or an operator makes one node sick
    /// while the farm runs); other changes need a restart, said so. A
    /// file that no longer parses keeps the faults in force, said so.
    pub fn watch_file(&self, path: std::path::PathBuf) {
        let sim = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let stamp = |p: &std::path::Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()))
            };
            let mut seen = stamp(&path);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FILE_WATCH) => {}
                    _ = shutdown.changed() => return,
                }
                let now = stamp(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                sim.reload_faults(&path);
            }
        });
    }

    fn reload_faults(&self, path: &std::path::Path) {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| config::parse(&t).map_err(|e| e.to_string()));
        let file = match parsed {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(
                    "sim file {} changed but cannot be used ({e}); the faults in force stay",
                    path.display()
                );
                return;
            }
        };
        let mut faults = self
            .inner
            .pool_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for p in &file.app_pools {
            if let Some(f) = faults.get_mut(&p.name) {
                if *f != p.faults {
                    tracing::info!(pool = %p.name, faults = ?p.faults, "sim file changed: the pool's faults take effect");
                    *f = p.faults.clone();
                    // New faults are the running worker's from now on.
                    self.inner
                        .recycled_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&p.name);
                }
            }
        }
        tracing::info!(
            "sim file {} re-read: only app_pools[].faults take effect while the agent runs",
            path.display()
        );
    }

    /// A release folder's `farm-sim.yaml`, read once (a release's files
    /// do not change once staged). A bad file is said once and ignored.
    fn release_faults(&self, root: &std::path::Path) -> Option<config::PoolFaults> {
        let mut cache = self
            .inner
            .release_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(root) {
            return f.clone();
        }
        let path = root.join(config::RELEASE_FAULTS_FILE);
        let faults = match std::fs::read_to_string(&path) {
            Err(_) => None,
            Ok(text) => match serde_yaml::from_str::<config::PoolFaults>(&text)
                .map_err(|e| e.to_string())
                .and_then(|f| f.check(config::RELEASE_FAULTS_FILE).map(|()| f))
            {
                Ok(f) => Some(f).filter(config::PoolFaults::any),
                Err(e) => {
                    tracing::warn!("{}: ignored: {e}", path.display());
                    None
                }
            },
        };
        cache.insert(root.to_path_buf(), faults.clone());
        faults
    }

    /// Whether this request of `pool` is one of its `rate` errors: spread
    /// evenly (the n-th request fails when ⌊n·rate⌋ grows), so a test
    /// knows how many to expect.
    pub(crate) fn fault_hit(&self, pool: &str, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let mut served = self.inner.served.lock().unwrap_or_else(|e| e.into_inner());
        let n = served.entry(pool.to_string()).or_default();
        *n += 1;
        let rate = rate.min(1.0);
        ((*n as f64) * rate).floor() > (((*n - 1) as f64) * rate).floor()
    }

    pub(crate) fn site_root(&self, site: &str) -> Option<std::path::PathBuf> {
        self.lock().roots.get(site).cloned()
    }

    pub(crate) fn health_file(&self) -> bool {
        self.lock().health_file
    }

    pub(crate) fn request_started(&self) {
        self.inner.in_flight.send_modify(|n| *n += 1);
    }

    pub(crate) fn request_finished(&self) {
        self.inner
            .in_flight
            .send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Waits until `worker` has no request in flight or `limit` passes; then
    /// kills it (cutting what is left) and removes it from its pool.
    fn retire(&self, pool: String, worker: Arc<Worker>, limit: Duration) {
        let sim = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(limit, worker.idle()).await;
            worker.kill();
            let mut st = sim.lock();
            if let Some(p) = st.pools.iter_mut().find(|p| p.cfg.name == pool) {
                p.retiring.retain(|w| !Arc::ptr_eq(w, &worker));
            }
            sim.state_changed();
        });
    }

    fn crash_later(&self, pool: String, worker: Arc<Worker>) {
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(worker.warm_at() + Duration::from_millis(50)).await;
            let mut st = sim.lock();
            if let Some(p) = st.pools.iter_mut().find(|p| p.cfg.name == pool) {
                if p.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, &worker)) {
                    // Five crashes in a row: rapid-fail protection stops the pool.
                    let pid = worker.pid;
                    p.kill_all();
                    p.state = PoolState::Stopped;
                    drop(st);
                    sim.was_event(5009, "Warning", &pool, Some(pid), format!(
                        "A process serving application pool '{pool}' terminated unexpectedly. The process id was '{pid}'. The process exit code was '0xc0000005'."
                    ));
                    sim.was_event(5002, "Error", &pool, None, format!(
                        "Application pool '{pool}' is being automatically disabled due to a series of failures in the process(es) serving that application pool."
                    ));
                    sim.state_changed();
                    sim.event("pool_crashed", &pool);
                }
            }
        });
    }

    fn stop_everything(&self, st: &mut State) {
        for p in &mut st.pools {
            p.kill_all();
        }
        st.w3svc = ServiceState::Stopped;
        st.was = ServiceState::Stopped;
        self.inner.listening.send_replace(false);
        self.inner.conn_epoch.send_modify(|e| *e += 1);
        self.state_changed();
    }

    /// What `status` reports may have changed (the agent's procedures
    /// wait on this instead of polling).
    fn state_changed(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn fire_never_healthy(&self, st: &mut State) {
        if self.cfg().faults.never_healthy {
            st.unhealthy = true;
        }
    }
}
