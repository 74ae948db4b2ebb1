//! `farmctl guard -i FILE`: a farm-aware auto-heal. Every `guard.interval`
//! it looks at the farm as `status` does (the outlier rule over
//! `guard.window`), asks [`decide::evaluate`] what to do, logs every
//! decision with the figures behind it, and — unless `--dry-run` — acts:
//! a pool confirmed sick is recycled alone on its node through the rolling
//! primitive (drain, diagnostics, recycle, verify, warm, return; journaled
//! as a run), a pool that keeps relapsing is quarantined (its node left
//! out of rotation when capacity allows) and paged.
//!
//! One guard per farm: it holds the guard seat (a lock file beside the
//! journals, or a key on a lease in etcd); another started stands by and
//! takes the seat when the first dies. Its history (actions, cool-downs,
//! relapses) is kept in the run state store, so a guard that takes over
//! does not act again on what the dead one did.
pub mod decide;
mod metrics;
mod seat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use farm_inventory::NotifyEvent;
use farm_proto::domain::OperationKind;
use serde::{Deserialize, Serialize};

use crate::cli::{GuardArgs, Output};
use crate::commands::status::NodeStatus;
use crate::commands::Settings;
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::farm::Farm;
use crate::store::{LockValue, Store};
use decide::{Act, Decision, Figures, History, Kind, NodeSeen, Seen};

/// What the store keeps for the farm's guard: who holds the seat, its
/// history and its last decision (`farmctl status` shows them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuardState {
    pub holder: Option<LockValue>,
    pub history: History,
    pub last: Option<serde_json::Value>,
}

/// One line of the decision log (and of `--output jsonl`).
#[derive(Serialize)]
struct Logged<'a> {
    time: String,
    farm: &'a str,
    #[serde(flatten)]
    decision: &'a Decision,
    /// Decided as usual, nothing done (`--dry-run`).
    dry_run: bool,
    /// The run that acted, and how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    /// Captured before the recycle, out of rotation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<crate::agent::Diagnostics>,
    /// Memory dumps taken before the recycle (`guard.dump`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dumps: Vec<crate::agent::DumpView>,
}

pub async fn run(args: &GuardArgs, settings: &Settings) -> CommandResult {
    let farm = settings.farm(&args.inv.inventory)?;
    // Ctrl-C: an action under way finishes, then the guard stops.
    crate::commands::with_ctrl_c(settings.reporter.clone(), |stop| {
        guard_farm(&farm, args, settings, stop)
    })
    .await
}

/// Guards `farm` until `stop` turns true (or `--count` evaluations).
pub async fn guard_farm(
    farm: &Farm,
    args: &GuardArgs,
    settings: &Settings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> CommandResult {
    let store = Store::open(
        settings.state_store.as_deref(),
        Some(&farm.inventory),
        &settings.state_dir(),
    )
    .await?;
    // A dry run keeps a log of its own: its "actions" never happened.
    let log_path = args.log.clone().unwrap_or_else(|| {
        settings.state_dir().join("guard").join(format!(
            "{}.{}decisions.jsonl",
            farm.inventory.farm,
            if args.dry_run { "dry-run." } else { "" }
        ))
    });
    let mut log = DecisionLog::open(&log_path)?;
    let metrics = Arc::new(metrics::Metrics::default());
    if let Some(addr) = &args.metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            CommandError::bad_input(format!("--metrics {addr}: cannot listen there: {e}"))
        })?;
        crate::errln!(
            "farmctl guard: metrics on http://{}/metrics",
            listener
                .local_addr()
                .map_or(addr.clone(), |a| a.to_string())
        );
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let notifier = crate::notify::Notifier::start(&farm.inventory, &crate::report::Silent);
    let quiet = settings.quiet;
    let say = |text: &str| {
        if !quiet {
            crate::errln!("farmctl guard: {text}");
        }
    };
    let mut guard = Guard {
        farm,
        settings,
        args,
        store: &store,
        notifier: notifier.as_ref(),
        metrics: metrics.clone(),
        stop: stop.clone(),
        resume_said: None,
    };
    let watched = format!(
        "farm {} ({} nodes, every {}, window {})",
        farm.inventory.farm,
        farm.inventory.nodes.len(),
        humantime::format_duration(farm.inventory.guard.interval),
        humantime::format_duration(farm.inventory.guard.window),
    );
    if args.dry_run {
        // Beside the acting guard, never in its place: no seat, and the
        // history (what it would have done) is kept in memory only — a
        // guard that acts later must not count actions that never were.
        say(&format!(
            "--dry-run on {watched}: deciding, acting on nothing, beside any guard that acts"
        ));
        guard.serve(None, &mut log).await;
    } else {
        guard_seated(&mut guard, &mut log, &watched, &say).await?;
    }
    if let Some(n) = notifier {
        n.finish().await;
    }
    Ok(ExitStatus::Done)
}

/// Takes the guard seat (standing by while another guard holds it) and
/// guards while it is held, until stopped.
async fn guard_seated(
    guard: &mut Guard<'_>,
    log: &mut DecisionLog,
    watched: &str,
    say: &dyn Fn(&str),
) -> Result<(), CommandError> {
    let (farm, settings, store) = (guard.farm, guard.settings, guard.store);
    loop {
        let Some(seat) = seat::take(
            store,
            &farm.inventory.farm,
            &settings.state_dir(),
            guard.stop.clone(),
            say,
        )
        .await?
        else {
            return Ok(());
        };
        guard.metrics.leader(true);
        say(&format!("guarding {watched}"));
        let ended = guard.serve(Some(&seat), log).await;
        guard.metrics.leader(false);
        seat.release().await;
        match ended {
            Ended::Stopped => return Ok(()),
            Ended::SeatLost => {
                say("the guard seat was lost (the store did not answer): standing by")
            }
        }
    }
}

/// What became of an action a guard left unfinished.
enum Interrupted {
    /// There is none.
    None,
    /// Finished now.
    Finished(Box<(Decision, Done)>),
    /// There is one, not finished yet (its controller still runs, the
    /// store or the farm lock refused): tried again at the next evaluation.
    NotYet,
}

enum Ended {
    /// Ctrl-C, or `--count` evaluations done.
    Stopped,
    SeatLost,
}

struct Guard<'a> {
    farm: &'a Farm,
    settings: &'a Settings,
    args: &'a GuardArgs,
    store: &'a Store,
    notifier: Option<&'a crate::notify::Notifier>,
    metrics: Arc<metrics::Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// The last reason an interrupted action could not be finished (said
    /// once).
    resume_said: Option<String>,
}

impl Guard<'_> {
    /// Evaluates and acts while the seat is ours (`None`: a dry run,
    /// which holds no seat and saves nothing).
    async fn serve(&mut self, seat: Option<&seat::Seat>, log: &mut DecisionLog) -> Ended {
        let rules = self.farm.inventory.guard.clone();
        let mut state = state::load(self.store, self.farm, &self.settings.state_dir()).await;
        state.holder = seat.map(seat::Seat::value);
        let mut evaluations = 0u64;
        // Once the seat is taken (and again while it could not be done):
        // an action the last guard left unfinished.
        let mut look_for_interrupted = seat.is_some();
        loop {
            if *self.stop.borrow() {
                return Ended::Stopped;
            }
            if seat.is_some_and(seat::Seat::lost) {
                return Ended::SeatLost;
            }
            if look_for_interrupted {
                match self.finish_interrupted().await {
                    Interrupted::None => look_for_interrupted = false,
                    Interrupted::Finished(finished) => {
                        let (d, done) = *finished;
                        look_for_interrupted = false;
                        self.record(&d, Some(&done), log, &mut state);
                        self.save(seat, &state).await;
                    }
                    Interrupted::NotYet => {}
                }
            }
            let seen = look(self.farm, self.settings, self.store).await;
            let now = crate::clock::now_unix_ms();
            let (decisions, act) = decide::evaluate(&rules, &mut state.history, &seen, now);
            // The history is saved before anything is done: a guard that
            // takes over never does it again.
            self.save(seat, &state).await;
            let done = match (&act, self.args.dry_run) {
                (Some(act), false) => Some(self.act(act, &seen).await),
                _ => None,
            };
            for d in &decisions {
                let acted_here = matches!(d.decision, Kind::Acted | Kind::Quarantined);
                self.record(d, done.as_ref().filter(|_| acted_here), log, &mut state);
            }
            if done.is_some() {
                self.metrics.acted();
            }
            self.metrics.evaluated(now);
            self.save(seat, &state).await;
            evaluations += 1;
            if self.args.count.is_some_and(|c| evaluations >= c) {
                return Ended::Stopped;
            }
            let mut stop = self.stop.clone();
            let lost = async {
                match seat {
                    Some(s) => s.wait_lost().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(rules.interval) => {}
                _ = stop.wait_for(|s| *s) => return Ended::Stopped,
                () = lost => return Ended::SeatLost,
            }
        }
    }

    /// One decision: logged, shown, counted, paged when worth it, kept as
    /// the last one.
    fn record(
        &self,
        d: &Decision,
        done: Option<&Done>,
        log: &mut DecisionLog,
        state: &mut GuardState,
    ) {
        let line = Logged {
            time: crate::clock::now(),
            farm: &self.farm.inventory.farm,
            decision: d,
            dry_run: self.args.dry_run,
            run_id: done.and_then(|d| d.run_id.clone()),
            outcome: done.map(|d| d.outcome.clone()),
            diagnostics: done.map(|d| d.diagnostics.clone()).unwrap_or_default(),
            dumps: done.map(|d| d.dumps.clone()).unwrap_or_default(),
        };
        let value = serde_json::to_value(&line).unwrap_or_default();
        log.write(&value);
        self.show(d, &value);
        self.metrics.decided(d);
        // A dry run pages nobody: its actions never happened.
        if d.page && !self.args.dry_run {
            self.page(d, &value);
        }
        state.last = Some(value);
    }

    /// A guard's action cut short (its guard killed mid-run, the node
    /// perhaps still out of rotation) is finished from its journal, as
    /// `farmctl resume` would: the farm is never left as a dead guard left
    /// it. A run another controller still drives is left to it (resume
    /// refuses it), and so are halted runs and people's runs.
    async fn finish_interrupted(&mut self) -> Interrupted {
        let runs = match self.store.list(Some(&self.farm.inventory.farm)).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!("the guard could not list the farm's runs: {e}");
                return Interrupted::NotYet;
            }
        };
        let Some((run, settings)) = runs.into_iter().rev().find_map(|r| {
            let s = r.header.settings.clone().filter(|s| s.by_guard)?;
            r.end.is_none().then_some((r, s))
        }) else {
            return Interrupted::None;
        };
        if crate::journal::still_running(&run).is_some() {
            return Interrupted::NotYet;
        }
        let run_id = run.run_id().to_string();
        let node = settings.nodes.first().cloned();
        let pool = node
            .as_ref()
            .and_then(|n| settings.node_pools.get(n))
            .and_then(|p| p.first().cloned());
        let run_settings = self.run_settings();
        let env = run_settings.run_env(&crate::operator::AssumeYes, Some(self.stop.clone()));
        let resumed = crate::run::resume(
            run,
            Some(&self.args.inv.inventory),
            self.settings.transport(),
            &env,
        )
        .await;
        let done = match resumed {
            Ok(report) => Done::of(&report),
            Err(e) => {
                // Said once per run and reason; tried again each evaluation.
                let why = format!("{run_id}: {e}");
                if self.resume_said.as_deref() != Some(why.as_str()) {
                    crate::errln!(
                        "farmctl guard: the interrupted action {why} (tried again at the next evaluation)"
                    );
                    self.resume_said = Some(why);
                }
                return Interrupted::NotYet;
            }
        };
        let d = Decision {
            decision: Kind::Finished,
            reason: "interrupted".into(),
            detail: format!(
                "run {run_id}, an action of a guard that stopped before it ended, resumed from its journal: {}",
                done.outcome
            ),
            node,
            pool,
            figures: None,
            before: None,
            farm: decide::Figures::default(),
            page: true,
        };
        Interrupted::Finished(Box::new((d, done)))
    }

    /// The settings of a run the guard starts: its progress as lines on
    /// stderr (stdout is the decisions'), none with --quiet.
    fn run_settings(&self) -> Settings {
        let mut run_settings = self.settings.clone();
        run_settings.reporter = if self.settings.quiet {
            Arc::new(crate::report::Silent)
        } else {
            Arc::new(crate::report::Lines::new())
        };
        run_settings
    }

    async fn save(&self, seat: Option<&seat::Seat>, state: &GuardState) {
        let Some(seat) = seat else { return };
        state::save(
            self.store,
            self.farm,
            &self.settings.state_dir(),
            seat,
            state,
        )
        .await;
    }

    /// Prints one decision as the output asks.
    fn show(&self, d: &Decision, value: &serde_json::Value) {
        match self.args.inv.output {
            Output::Jsonl | Output::Json => {
                crate::outln!("{}", serde_json::to_string(value).unwrap_or_default())
            }
            Output::Text => {
                let what = match (&d.node, &d.pool) {
                    (Some(n), Some(p)) => format!(" {p} on {n}"),
                    (Some(n), None) => format!(" {n}"),
                    _ => String::new(),
                };
                crate::outln!(
                    "{} {}{}{what}: {}{}",
                    crate::clock::now(),
                    serde_json::to_value(d.decision)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if matches!(d.decision, Kind::Held) {
                        format!(" ({})", d.reason)
                    } else {
                        String::new()
                    },
                    d.detail,
                    if self.args.dry_run && matches!(d.decision, Kind::Acted | Kind::Quarantined) {
                        " [dry run: nothing done]"
                    } else {
                        ""
                    }
                );
            }
        }
    }

    fn page(&self, d: &Decision, value: &serde_json::Value) {
        let Some(n) = self.notifier else { return };
        let event = match d.decision {
            Kind::Acted | Kind::Finished => NotifyEvent::GuardActed,
            Kind::Quarantined => NotifyEvent::GuardQuarantined,
            _ => NotifyEvent::GuardHeld,
        };
        let text = format!(
            "farmctl guard of farm {}: {}",
            self.farm.inventory.farm, d.detail
        );
        n.send_event(event, value.clone(), text);
    }

    /// Does what the decision asks: the rolling recycle of one pool on one
    /// node, or the quarantine of a node.
    async fn act(&self, act: &Act, seen: &Seen) -> Done {
        match act {
            Act::Recycle { node, pool } => self.recycle(node, pool.as_deref()).await,
            Act::Quarantine { node, .. } => self.quarantine(node, seen).await,
        }
    }

    async fn recycle(&self, node: &str, pool: Option<&str>) -> Done {
        let mut req = crate::run::RunRequest::new(OperationKind::Recycle);
        req.nodes = vec![node.to_string()];
        req.diagnose = true;
        req.dump = self.farm.inventory.guard.dump;
        req.node_pools = pool
            .map(|p| BTreeMap::from([(node.to_string(), vec![p.to_string()])]))
            .unwrap_or_default();
        let mut settings = match crate::run::RunSettings::resolve(&self.farm.inventory, &req) {
            Ok(s) => s,
            Err(e) => return Done::failed(e.to_string()),
        };
        // A guard that takes the seat after this one died finishes it.
        settings.by_guard = true;
        let run_settings = self.run_settings();
        let env = run_settings.run_env(&crate::operator::AssumeYes, Some(self.stop.clone()));
        match crate::run::start(self.farm, &self.args.inv.inventory, settings, &env).await {
            Ok(report) => Done::of(&report),
            Err(e) => Done::failed(e.to_string()),
        }
    }

    /// Takes the node out of rotation when the others can carry the farm;
    /// else leaves it serving and says so.
    async fn quarantine(&self, node: &str, seen: &Seen) -> Done {
        let this = seen.nodes.iter().find(|n| n.name == node);
        if !this.is_some_and(|n| n.in_rotation) {
            return Done::said("left as it is: already out of rotation");
        }
        // The others must carry the farm (the node itself, sick, may fail
        // its probe and not count as serving).
        let others = seen
            .nodes
            .iter()
            .filter(|n| n.serving && n.name != node)
            .count();
        if others < seen.min_healthy.max(1) {
            return Done::said(&format!(
                "left in rotation: taking it out would leave {others} nodes serving, fewer than min_healthy {}",
                seen.min_healthy
            ));
        }
        match crate::commands::drain::quarantine(self.farm, node).await {
            Ok(()) => Done::said(&format!(
                "taken out of rotation; `farmctl undrain -i {} {node}` returns it",
                self.args.inv.inventory.display()
            )),
            Err(e) => Done::failed(format!("could not take it out of rotation: {e}")),
        }
    }
}

/// What an action came to.
struct Done {
    run_id: Option<String>,
    outcome: String,
    diagnostics: Vec<crate::agent::Diagnostics>,
    dumps: Vec<crate::agent::DumpView>,
}

impl Done {
    /// What a run of the guard's came to.
    fn of(report: &crate::report::RunReport) -> Done {
        Done {
            run_id: Some(report.run_id.clone()),
            outcome: if report.succeeded() {
                "done".into()
            } else {
                format!(
                    "failed: {}",
                    report
                        .nodes
                        .iter()
                        .filter_map(|n| n.error.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
            diagnostics: report
                .nodes
                .iter()
                .flat_map(|n| n.diagnostics.clone())
                .collect(),
            dumps: report.nodes.iter().flat_map(|n| n.dumps.clone()).collect(),
        }
    }

    fn failed(why: String) -> Done {
        Done::said(&format!("failed: {why}"))
    }
    fn said(what: &str) -> Done {
        Done {
            run_id: None,
            outcome: what.to_string(),
            diagnostics: Vec::new(),
            dumps: Vec::new(),
        }
    }
}

/// The farm as the guard judges it: `status`'s view over `guard.window`.
pub async fn look(farm: &Farm, settings: &Settings, store: &Store) -> Seen {
    let window = farm
        .inventory
        .guard
        .window
        .as_secs()
        .clamp(1, u32::MAX as u64) as u32;
    let snap = crate::commands::status::snapshot_over(farm, settings, window).await;
    let mut run = snap
        .nodes
        .iter()
        .find_map(|n| n.lease.as_ref())
        .map(|l| format!("run {} of {}", l.run_id, l.holder));
    if run.is_none() {
        if let Store::Etcd(e) = store {
            match e.lock_holder(&farm.inventory.farm).await {
                Ok(Some(h)) => run = Some(format!("run {} of {}", h.run_id, h.holder)),
                Ok(None) => {}
                // Cannot tell: as good as a run; nothing is done blind.
                Err(err) => {
                    run = Some(format!(
                        "an unknown run (the farm lock cannot be read: {err})"
                    ))
                }
            }
        }
    }
    let total = farm.inventory.nodes.len();
    Seen {
        nodes: snap.nodes.iter().map(node_seen).collect(),
        run,
        min_healthy: farm.inventory.rollout.min_healthy.of(total),
    }
}

fn figures(
    requests: u64,
    error_rate: Option<f64>,
    p95: Option<f64>,
    in_flight: Option<u64>,
) -> Figures {
    Figures {
        requests,
        error_rate,
        p95_ms: p95,
        in_flight,
    }
}

fn node_seen(n: &NodeStatus) -> NodeSeen {
    let serving = n.reachable && n.healthy && n.drained != Some(true);
    let t = n.traffic.as_ref();
    NodeSeen {
        name: n.name.clone(),
        serving,
        in_rotation: n.reachable && n.drained != Some(true),
        // A node out of rotation or unreachable has nothing to judge.
        outlier: if n.reachable { n.outlier } else { None },
        pools: n.outlier_pools.clone(),
        reasons: if n.outlier_reasons.is_empty() {
            n.error.iter().cloned().collect()
        } else {
            n.outlier_reasons.clone()
        },
        figures: t.map_or_else(Figures::default, |t| {
            figures(t.requests, t.error_rate, t.latency_ms.p95, n.in_flight)
        }),
        pool_figures: t
            .map(|t| {
                t.pools
                    .iter()
                    .filter(|p| !p.pool.is_empty())
                    .map(|p| {
                        (
                            p.pool.clone(),
                            figures(p.requests, p.error_rate, p.latency_ms.p95, None),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The decision log: one JSON object per line, appended.
struct DecisionLog {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl DecisionLog {
    fn open(path: &Path) -> Result<DecisionLog, CommandError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                CommandError::bad_input(format!("decision log {}: {e}", path.display()))
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                CommandError::bad_input(format!("decision log {}: {e}", path.display()))
            })?;
        Ok(DecisionLog {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    fn write(&mut self, value: &serde_json::Value) {
        use std::io::Write;
        let Some(f) = self.file.as_mut() else { return };
        let mut line = serde_json::to_string(value).unwrap_or_default();
        line.push('\n');
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
            tracing::warn!(
                "decision log {}: {e}; decisions go on stdout only",
                self.path.display()
            );
            self.file = None;
        }
    }
}

pub mod state {
    //! Where the guard's state lives: beside the journals, or in etcd.
    use super::*;

    pub fn file(state_dir: &Path, farm: &str) -> PathBuf {
        state_dir.join("guard").join(format!("{farm}.json"))
    }

    /// The farm's guard state as last saved (empty when none or unreadable).
    pub async fn read(store: &Store, farm: &str, state_dir: &Path) -> Option<GuardState> {
        let text = match store {
            Store::Files(_) => std::fs::read_to_string(file(state_dir, farm)).ok()?,
            Store::Etcd(e) => e.get_farm(farm, "guard-state").await.ok()??,
        };
        serde_json::from_str(&text).ok()
    }

    pub async fn load(store: &Store, farm: &Farm, state_dir: &Path) -> GuardState {
        read(store, &farm.inventory.farm, state_dir)
            .await
            .unwrap_or_default()
    }

    pub async fn save(
        store: &Store,
        farm: &Farm,
        state_dir: &Path,
        seat: &seat::Seat,
        state: &GuardState,
    ) {
        let Ok(text) = serde_json::to_string(state) else {
            return;
        };
        let name = &farm.inventory.farm;
        let saved = match (store, seat) {
            (Store::Etcd(e), seat::Seat::Etcd(lock)) => e
                .put_farm(name, "guard-state", text, lock)
                .await
                .map_err(|e| e.to_string()),
            _ => {
                let path = file(state_dir, name);
                let tmp = path.with_extension("json.new");
                std::fs::write(&tmp, text)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
        };
        if let Err(e) = saved {
            tracing::warn!("the guard's state could not be saved: {e}");
        }
    }
}

/// How long `status` waits for the guard's state.
pub const STATUS_READ: Duration = Duration::from_secs(2);

/// Who guards the farm and its last decision, for `farmctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct GuardView {
    /// The guard holding the seat (`null`: none running).
    pub holder: Option<String>,
    pub since: Option<String>,
    pub last: Option<serde_json::Value>,
}

/// What `status` shows of the guard (`None`: the farm never had one).
pub async fn view(farm: &Farm, settings: &Settings) -> Option<GuardView> {
    let store = Store::open(
        settings.state_store.as_deref(),
        Some(&farm.inventory),
        &settings.state_dir(),
    )
    .await
    .ok()?;
    let name = &farm.inventory.farm;
    let read = async {
        let state = state::read(&store, name, &settings.state_dir()).await?;
        let running = seat::holder(&store, name, &settings.state_dir()).await;
        Some(GuardView {
            holder: running
                .as_ref()
                .map(|h| format!("{} (pid {})", h.holder, h.pid)),
            since: running.map(|h| h.since),
            last: state.last,
        })
    };
    tokio::time::timeout(STATUS_READ, read).await.ok().flatten()
}
