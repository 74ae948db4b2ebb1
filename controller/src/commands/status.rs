//! `farmctl status -i FILE`: every agent queried concurrently, every node
//! probed, the load balancer read. Exit 0 when every node is reachable,
//! healthy and in rotation (unless a run holds it), 1 otherwise.
use std::collections::BTreeMap;

use farm_proto::domain::ServiceState;
use serde::Serialize;

use crate::agent::{LeaseView, PoolView};
use crate::cli::{Output, StatusArgs};
use crate::commands::{print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};
use crate::observe::{self, Observation};

/// One node in `status --output json` (keys are a documented contract).
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub agent: String,
    pub reachable: bool,
    /// Taken out of rotation on the node (health file) or by the LB.
    pub drained: Option<bool>,
    /// The load balancer's status for the node (`UP`, `DRAIN`, `MAINT`,
    /// `DOWN`, ...), when the driver can see it.
    pub lb_state: Option<String>,
    pub healthy: bool,
    pub in_flight: Option<u64>,
    pub services: BTreeMap<String, ServiceState>,
    pub pools: Vec<PoolView>,
    pub error: Option<String>,
    /// `holder`, `run_id`, `reason`, when a run holds the node.
    pub lease: Option<LeaseView>,
    /// What the agent did on its own (expired lease).
    pub notice: Option<String>,
    /// The release each site serves (sites on one of the agent's releases).
    pub releases: BTreeMap<String, String>,
    /// While a run holds the node's lease: the phase its journal (in this
    /// state directory) last recorded for the node.
    pub run_phase: Option<String>,
    /// What users got over the last minute, from the node's own logs
    /// (`null` when its agent cannot say).
    pub traffic: Option<crate::health::NodeTraffic>,
    /// Far from its peers on the same window (`null`: not enough data).
    pub outlier: Option<bool>,
    pub outlier_reasons: Vec<String>,
    /// The pools whose own figures make it an outlier (empty: the node
    /// as a whole, or none).
    pub outlier_pools: Vec<String>,
    /// The node's traffic as the load balancer counts it (counters since
    /// the LB started; `null` when the driver cannot say).
    pub lb_traffic: Option<crate::lb::LbTraffic>,
    /// The LB saw failures the node's log cannot show (failed connections
    /// and responses) since the previous reading of `--watch`; `null`
    /// without two readings or an LB that counts.
    pub lb_disagrees: Option<bool>,
    pub lb_disagree_reason: Option<String>,
    /// The node's weight in the load balancer now and as configured
    /// (`null` for drivers without weights): a canary soak changes it, a
    /// run killed mid-soak may leave it changed.
    pub lb_weight: Option<crate::lb::weights::Weight>,
    /// The server's boot: an id that changes at every restart, and when
    /// it started (RFC 3339; `null` when the agent cannot tell).
    pub boot_id: Option<String>,
    pub boot_time: Option<String>,
    /// The server waits for a restart to finish installing (`null`:
    /// unknown), and which signals say so.
    pub reboot_pending: Option<bool>,
    pub reboot_pending_reasons: Vec<String>,
    /// Updates that applied at the agent's last search (`null`: never
    /// searched).
    pub updates_pending: Option<u32>,
    /// How the agent's service starts with Windows (`auto`, ...).
    pub agent_start: Option<String>,
}

/// Failures only the LB saw, between two readings, that flag a node:
/// at least this many...
const DISAGREE_MIN: u64 = 5;
/// ...and this share of the requests it sent the node.
const DISAGREE_SHARE: f64 = 0.01;

/// Whether the LB saw failures the node cannot have logged between two
/// readings (`then`, `now`), and what.
pub fn lb_disagreement(
    then: &crate::lb::LbTraffic,
    now: &crate::lb::LbTraffic,
    seconds: f64,
) -> (bool, Option<String>) {
    let d = now.since(then);
    let unseen = d.connect_errors.unwrap_or(0) + d.response_errors.unwrap_or(0);
    let sent = d.requests().max(1);
    if unseen >= DISAGREE_MIN && unseen as f64 >= DISAGREE_SHARE * sent as f64 {
        (
            true,
            Some(format!(
                "the load balancer saw {} failed connection(s) and {} failed response(s) in {} request(s) over the last {seconds:.0}s that never reach the node's log",
                d.connect_errors.unwrap_or(0),
                d.response_errors.unwrap_or(0),
                d.requests()
            )),
        )
    } else {
        (false, None)
    }
}

#[derive(Debug, Serialize)]
struct StatusReport<'a> {
    farm: String,
    /// When the snapshot was taken (RFC 3339, UTC): each `--watch` line
    /// says its own moment.
    time: String,
    nodes: Vec<&'a NodeStatus>,
    /// Sites whose nodes serve different releases: the versions seen.
    mixed_versions: BTreeMap<String, Vec<String>>,
    /// Who guards the farm (`farmctl guard`) and its last decision;
    /// `null` when it never had a guard.
    guard: Option<&'a crate::guard::GuardView>,
}

/// `guard: ...` — who guards the farm and what it last decided.
fn guard_line(g: Option<&crate::guard::GuardView>) -> String {
    let Some(g) = g else { return String::new() };
    let who = match (&g.holder, &g.since) {
        (Some(h), Some(s)) => format!("guarded by {h} since {s}"),
        (Some(h), None) => format!("guarded by {h}"),
        _ => "no guard running".to_string(),
    };
    let last = g.last.as_ref().map_or(String::new(), |l| {
        let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
        format!(
            "; last decision at {}: {}{} — {}",
            s("time"),
            s("decision"),
            if s("decision") == "held" {
                format!(" ({})", s("reason"))
            } else {
                String::new()
            },
            s("detail")
        )
    });
    format!("guard: {who}{last}\n")
}

/// Sites served at more than one release across the nodes.
fn mixed(nodes: &[NodeStatus]) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for n in nodes {
        for (site, v) in &n.releases {
            seen.entry(site.clone()).or_default().insert(v.clone());
        }
    }
    seen.into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(s, v)| (s, v.into_iter().collect()))
        .collect()
}

fn node_status(o: &Observation, name: &str, agent: &str, drains: bool) -> NodeStatus {
    let lb_state = o.member.as_ref().map(|m| {
        m.state
            .as_ref()
            .map_or_else(|| "MISSING".to_string(), |s| s.raw.clone())
    });
    let mut s = NodeStatus {
        name: name.to_string(),
        agent: agent.to_string(),
        reachable: o.view.is_ok(),
        drained: None,
        lb_state,
        healthy: o.health.is_ok(),
        in_flight: None,
        services: BTreeMap::new(),
        pools: Vec::new(),
        error: None,
        lease: None,
        notice: None,
        releases: BTreeMap::new(),
        run_phase: None,
        traffic: None,
        outlier: None,
        outlier_reasons: Vec::new(),
        outlier_pools: Vec::new(),
        lb_traffic: None,
        lb_disagrees: None,
        lb_disagree_reason: None,
        lb_weight: None,
        boot_id: None,
        boot_time: None,
        reboot_pending: None,
        reboot_pending_reasons: Vec::new(),
        updates_pending: None,
        agent_start: None,
    };
    match &o.view {
        Ok(v) => {
            s.drained = Some(o.drained(drains));
            s.in_flight = v.in_flight;
            s.services = v.services.clone();
            s.pools = v.pools.clone();
            s.lease = v.lease.clone();
            s.notice = v.notice.clone();
            s.releases = v
                .sites
                .iter()
                .filter_map(|x| Some((x.name.clone(), x.release.clone()?)))
                .collect();
            s.error = o.health.as_ref().err().map(ToString::to_string);
            s.boot_id = v.boot.as_ref().map(|b| b.id.clone());
            s.boot_time = v.boot.as_ref().and_then(|b| b.time());
            s.reboot_pending = v.reboot_pending.as_ref().map(|p| p.pending);
            s.reboot_pending_reasons = v
                .reboot_pending
                .as_ref()
                .map(|p| p.reasons.clone())
                .unwrap_or_default();
            s.updates_pending = v.updates_pending;
            s.agent_start = v.service_start.clone();
        }
        Err(e) => s.error = Some(e.to_string()),
    }
    s
}

/// The farm at one moment.
pub struct Snapshot {
    pub farm: String,
    pub nodes: Vec<NodeStatus>,
    mixed_versions: BTreeMap<String, Vec<String>>,
    lb_error: Option<String>,
    pub guard: Option<crate::guard::GuardView>,
}

impl Snapshot {
    /// Every node reachable, healthy and — unless a run holds it — in
    /// rotation: a node left drained by hand or by a dead run is not well.
    fn all_well(&self) -> bool {
        self.lb_error.is_none()
            && self
                .nodes
                .iter()
                .all(|n| n.reachable && n.healthy && (n.drained != Some(true) || n.lease.is_some()))
            // A weight a run changed and no run holds: left by a dead run.
            && self
                .nodes
                .iter()
                .all(|n| n.lease.is_some() || !n.lb_weight.is_some_and(|w| w.changed()))
    }

    fn text(&self) -> String {
        let mut out = table(&self.nodes) + &traffic_table(&self.nodes) + &servers(&self.nodes);
        out.push_str(&releases(&self.nodes, &self.mixed_versions));
        out.push_str(&guard_line(self.guard.as_ref()));
        if let Some(e) = &self.lb_error {
            out.push_str(&format!("load balancer: {e}\n"));
        }
        out
    }

    fn json(&self, output: Output) {
        print_json(
            output,
            &StatusReport {
                farm: self.farm.clone(),
                time: crate::clock::now(),
                nodes: self.nodes.iter().collect(),
                mixed_versions: self.mixed_versions.clone(),
                guard: self.guard.as_ref(),
            },
        );
    }
}

/// The farm now, as `status` shows it (agents, probes, LB, traffic).
pub async fn snapshot(farm: &crate::farm::Farm, settings: &Settings) -> Snapshot {
    snapshot_over(farm, settings, TRAFFIC_WINDOW_S).await
}

/// [`snapshot`] with the traffic judged over the last `window_s` seconds.
pub async fn snapshot_over(
    farm: &crate::farm::Farm,
    settings: &Settings,
    window_s: u32,
) -> Snapshot {
    let (members, lb_error) = match observe::members(farm).await {
        Ok(m) => (m, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // Each agent answers its status and its traffic in one call.
    let ((observed, views), lb_traffic, weights) = tokio::join!(
        observe::observe_with_traffic(farm, &members, window_s),
        farm.lb.traffic(&farm.inventory.nodes),
        farm.lb.weights(&farm.inventory.nodes)
    );
    let lb_traffic = lb_traffic.ok().flatten().unwrap_or_default();
    let (traffic, verdicts) = crate::health::judged(&views, &crate::health::rtimes(&lb_traffic));
    let drains = farm.lb.drains();
    let mut nodes: Vec<NodeStatus> = observed
        .iter()
        .map(|o| {
            let n = farm.node(o.node);
            node_status(o, &n.name, &n.agent, drains)
        })
        .collect();
    for (n, t) in nodes.iter_mut().zip(lb_traffic) {
        n.lb_traffic = t;
    }
    for (n, w) in nodes
        .iter_mut()
        .zip(weights.ok().flatten().unwrap_or_default())
    {
        n.lb_weight = w;
    }
    for ((n, t), v) in nodes.iter_mut().zip(&traffic).zip(verdicts) {
        n.traffic = t.clone();
        n.outlier = v.outlier;
        n.outlier_reasons = v.reasons;
        n.outlier_pools = v.pools;
    }
    // The phase a run has each leased node in, from its journal where
    // this host can read it (the journal directory, or the shared store).
    if nodes.iter().any(|n| n.lease.is_some()) {
        let store = crate::store::Store::open(
            settings.state_store.as_deref(),
            Some(&farm.inventory),
            &settings.state_dir(),
        )
        .await
        .ok();
        let mut runs: BTreeMap<String, Option<crate::journal::LoadedRun>> = BTreeMap::new();
        for s in &mut nodes {
            let (Some(lease), Some(store)) = (&s.lease, &store) else {
                continue;
            };
            if !runs.contains_key(&lease.run_id) {
                let found = store
                    .find(Some(&farm.inventory.farm), Some(&lease.run_id))
                    .await
                    .ok();
                let found = match found {
                    Some(r) => Some(r),
                    // Runs from before run contracts name no farm.
                    None => store.find(None, Some(&lease.run_id)).await.ok(),
                };
                runs.insert(lease.run_id.clone(), found);
            }
            s.run_phase = runs[&lease.run_id]
                .as_ref()
                .map(|r| r.phase_of(&s.name).to_string());
        }
    }
    // A node its run has out of rotation and is working on: its sites not
    // answering is expected (an IIS reset stops them), said as such.
    for n in &mut nodes {
        let working = matches!(
            n.run_phase.as_deref(),
            Some("quiescing" | "switching" | "operating" | "verifying" | "reverting")
        );
        if let (true, Some(e), Some(l)) = (working, &n.error, &n.lease) {
            if n.reachable {
                n.error = Some(format!(
                    "expected while run {} works on it ({}): {e}",
                    l.run_id,
                    n.run_phase.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let mixed_versions = mixed(&nodes);
    Snapshot {
        farm: farm.inventory.farm.clone(),
        nodes,
        mixed_versions,
        lb_error,
        guard: None,
    }
}

pub async fn run(args: &StatusArgs, settings: &Settings) -> CommandResult {
    let farm = settings.farm(&args.inv.inventory)?;
    let output = args.inv.output;
    if !args.watch {
        let mut snap = snapshot(&farm, settings).await;
        snap.guard = crate::guard::view(&farm, settings).await;
        if let Some(e) = &snap.lb_error {
            crate::errln!("farmctl: load balancer: {e}");
        }
        match output {
            o @ (Output::Json | Output::Jsonl) => snap.json(o),
            Output::Text => crate::out!(
                "{}",
                crate::human::paint(
                    &crate::human::fit(
                        &(table(&snap.nodes)
                            + &traffic_table(&snap.nodes)
                            + &servers(&snap.nodes)
                            + &releases(&snap.nodes, &snap.mixed_versions)
                            + &guard_line(snap.guard.as_ref())),
                        crate::human::stdout_width()
                    ),
                    crate::human::colour_stdout()
                )
            ),
        }
        return Ok(if snap.all_well() {
            ExitStatus::Done
        } else {
            ExitStatus::Failed
        });
    }
    watch(&farm, args, settings).await
}

/// `status --watch`: a redraw in place on a terminal, one snapshot after
/// another otherwise, until Ctrl-C (or `--count`).
async fn watch(farm: &crate::farm::Farm, args: &StatusArgs, settings: &Settings) -> CommandResult {
    use std::io::{IsTerminal, Write};
    let output = args.inv.output;
    let terminal = output == Output::Text && std::io::stdout().is_terminal();
    let mut shown = 0u64;
    let mut previous: Option<(std::time::Instant, Vec<Option<crate::lb::LbTraffic>>)> = None;
    loop {
        let mut snap = snapshot(farm, settings).await;
        snap.guard = crate::guard::view(farm, settings).await;
        let now = std::time::Instant::now();
        if let Some((at, before)) = &previous {
            let seconds = now.duration_since(*at).as_secs_f64();
            for (n, then) in snap.nodes.iter_mut().zip(before) {
                if let (Some(then), Some(lb)) = (then, &n.lb_traffic) {
                    let (flag, why) = lb_disagreement(then, lb, seconds);
                    n.lb_disagrees = Some(flag);
                    n.lb_disagree_reason = why;
                }
            }
        }
        previous = Some((
            now,
            snap.nodes.iter().map(|n| n.lb_traffic.clone()).collect(),
        ));
        let when = crate::clock::now();
        let mut out = std::io::stdout().lock();
        match output {
            o @ (Output::Json | Output::Jsonl) => {
                drop(out);
                snap.json(o);
            }
            Output::Text if terminal => {
                // Home, clear: the view redraws in place.
                let _ = write!(
                    out,
                    "\x1b[H\x1b[2Jfarm {} at {when}, every {} (Ctrl-C to leave)\n\n{}",
                    snap.farm,
                    crate::human::duration(args.interval),
                    crate::human::paint(
                        &crate::human::fit(&snap.text(), crate::human::stdout_width()),
                        crate::human::colour_stdout()
                    )
                );
            }
            Output::Text => {
                let _ = write!(
                    out,
                    "--- farm {} at {when} ---\n{}\n",
                    snap.farm,
                    snap.text()
                );
            }
        }
        let _ = std::io::stdout().flush();
        shown += 1;
        if args.count.is_some_and(|c| shown >= c) {
            return Ok(ExitStatus::Done);
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => {
                if terminal {
                    crate::outln!();
                }
                return Ok(ExitStatus::Done);
            }
        }
    }
}

/// One line per site with releases: which nodes serve which version.
fn releases(nodes: &[NodeStatus], mixed: &BTreeMap<String, Vec<String>>) -> String {
    let mut by_site: BTreeMap<&str, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for n in nodes {
        for (site, v) in &n.releases {
            by_site
                .entry(site)
                .or_default()
                .entry(v)
                .or_default()
                .push(&n.name);
        }
    }
    by_site
        .into_iter()
        .map(|(site, versions)| {
            let list: Vec<String> = versions
                .iter()
                .map(|(v, nodes)| format!("{v} on {}", nodes.join(", ")))
                .collect();
            let flag = if mixed.contains_key(site) {
                "  <- MIXED VERSIONS"
            } else {
                ""
            };
            format!("site {site}: {}{flag}\n", list.join("; "))
        })
        .collect::<Vec<_>>()
        .concat()
}

/// The window `status` (and `recycle --outliers`) asks the agents for.
pub const TRAFFIC_WINDOW_S: u32 = 60;
/// The window `validate --connect` reads the logs' unreadable share over.
pub const LOG_CHECK_WINDOW_S: u32 = 300;

/// What users got per node, when any agent can say.
fn traffic_table(nodes: &[NodeStatus]) -> String {
    if nodes.iter().all(|n| n.traffic.is_none()) {
        return String::new();
    }
    let mut out = format!(
        "\n{:<12} {:>7} {:>6} {:>7} {:>7} {:>7} {:>6} {:>7} {:<18} {}\n",
        "NODE",
        "REQ/S",
        "5XX",
        "P95 MS",
        "P99 MS",
        "QUEUE",
        "CPU %",
        "MEM MB",
        "HTTP.SYS",
        "OUTLIER"
    );
    for n in nodes {
        let Some(t) = &n.traffic else {
            out.push_str(&format!("{:<12} {:>7}\n", n.name, "-"));
            continue;
        };
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let httperr = t
            .httperr
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Now, and the most over the window when it was more.
        let queue = match (t.queue, t.queue_max) {
            (Some(q), Some(m)) if m > q => format!("{q}/{m}"),
            (Some(q), _) => q.to_string(),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<12} {:>7.1} {:>6} {:>7} {:>7} {:>7} {:>6} {:>7} {:<18} {}\n",
            n.name,
            t.rps,
            t.error_rate
                .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0)),
            ms(t.latency_ms.p95),
            ms(t.latency_ms.p99),
            queue,
            ms(t.cpu_percent),
            t.private_bytes
                .map_or("-".to_string(), |b| format!("{}", b / (1024 * 1024))),
            if httperr.is_empty() {
                "-".to_string()
            } else {
                httperr
            },
            match n.outlier {
                Some(true) => format!("YES: {}", n.outlier_reasons.join("; ")),
                Some(false) => "no".to_string(),
                None => n.outlier_reasons.join("; "),
            }
        ));
    }
    // What the figures do not cover: a log that cannot be followed,
    // lines that could not be read, a watch younger than the window.
    for n in nodes {
        let Some(t) = &n.traffic else { continue };
        if let Some(p) = &t.problem {
            out.push_str(&format!("{}: LOGS NOT READ: {p}\n", n.name));
        }
        if t.malformed > 0 {
            let reasons: Vec<String> = t
                .malformed_reasons
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!(
                "{}: {} log line(s) could not be read ({})\n",
                n.name,
                t.malformed,
                reasons.join(", ")
            ));
        }
        if t.window_s < u64::from(TRAFFIC_WINDOW_S) {
            if let Some(since) = &t.since {
                out.push_str(&format!(
                    "{}: figures since {since} only ({}s of {TRAFFIC_WINDOW_S}s): its agent started then\n",
                    n.name, t.window_s
                ));
            }
        }
    }
    for n in nodes {
        if let Some(w) = n.lb_weight.filter(|w| w.changed()) {
            out.push_str(&format!(
                "{}: LB WEIGHT {} (initial {}){}\n",
                n.name,
                w.current,
                w.initial,
                if n.lease.is_some() {
                    " while a run holds it"
                } else {
                    ": no run holds it — left by a run that stopped; the next run puts it back"
                }
            ));
        }
    }
    for n in nodes.iter().filter(|n| n.lb_disagrees == Some(true)) {
        out.push_str(&format!(
            "{}: LB DISAGREES: {}\n",
            n.name,
            n.lb_disagree_reason.as_deref().unwrap_or("")
        ));
    }
    out
}

/// Patch night's view of the servers: a restart pending, updates that
/// applied at the last search, an agent that would not come back after
/// a restart. Nothing when there is nothing to say.
fn servers(nodes: &[NodeStatus]) -> String {
    let mut out = String::new();
    for n in nodes {
        let mut said = Vec::new();
        if n.reboot_pending == Some(true) {
            said.push(format!(
                "restart pending ({})",
                n.reboot_pending_reasons.join(", ")
            ));
        }
        if let Some(u) = n.updates_pending.filter(|u| *u > 0) {
            said.push(format!("{u} update(s) at the last search"));
        }
        if let Some(start) = n
            .agent_start
            .as_deref()
            .filter(|s| !matches!(*s, "auto" | "delayed-auto"))
        {
            said.push(format!(
                "the agent's service starts `{start}`: it would not come back after a restart"
            ));
        }
        if !said.is_empty() {
            let booted = n
                .boot_time
                .as_deref()
                .map(|t| format!(" (up since {t})"))
                .unwrap_or_default();
            out.push_str(&format!("{}{booted}: {}\n", n.name, said.join("; ")));
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("\n{out}")
    }
}

fn table(nodes: &[NodeStatus]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:<8} {:<8} {:<8} {:<8} {:<9} {}\n",
        "NODE", "REACHABLE", "DRAINED", "LB", "W3SVC", "WAS", "IN-FLIGHT", "POOLS / HEALTH"
    );
    for n in nodes {
        let pools = n
            .pools
            .iter()
            .map(|p| {
                let pids: Vec<String> = p.pids.iter().map(u32::to_string).collect();
                format!(
                    "{} {} [{}]{}",
                    p.name,
                    p.state,
                    pids.join(","),
                    p.stopped_by
                        .as_ref()
                        .map(|r| format!(" (stopped by {r})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let svc = |name: &str| {
            n.services
                .get(name)
                .map_or_else(|| "-".to_string(), ToString::to_string)
        };
        out.push_str(&format!(
            "{:<12} {:<9} {:<8} {:<8} {:<8} {:<8} {:<9} {}{}\n",
            n.name,
            if n.reachable { "yes" } else { "NO" },
            n.drained.map_or("-", |d| if d { "YES" } else { "no" }),
            n.lb_state.as_deref().unwrap_or("-"),
            svc("W3SVC"),
            svc("WAS"),
            n.in_flight.map_or("?".to_string(), |v| v.to_string()),
            pools,
            match (&n.error, n.healthy) {
                (Some(e), _) => format!(" | {e}"),
                (None, true) => " | healthy".to_string(),
                (None, false) => " | unhealthy".to_string(),
            } + &n
                .lease
                .as_ref()
                .map(|l| {
                    format!(
                        " | leased: {}{}",
                        l.describe(crate::clock::now_unix_ms()),
                        n.run_phase
                            .as_ref()
                            .map(|p| format!("; its journal: {p}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::lb_disagreement;
    use crate::lb::LbTraffic;

    fn counts(responses: u64, econ: u64, eresp: u64) -> LbTraffic {
        LbTraffic {
            responses: Some(responses),
            status_5xx: Some(0),
            connect_errors: Some(econ),
            response_errors: Some(eresp),
            ..Default::default()
        }
    }

    #[test]
    fn failures_only_the_balancer_saw_are_flagged() {
        let then = counts(1_000, 2, 0);
        // 200 more requests, 9 more failed connections, 3 cut responses.
        let (flag, why) = lb_disagreement(&then, &counts(1_200, 11, 3), 2.0);
        assert!(flag);
        assert!(why
            .unwrap()
            .contains("9 failed connection(s) and 3 failed response(s)"));
        // A few in many: noise, not a disagreement.
        assert!(!lb_disagreement(&then, &counts(5_000, 4, 0), 2.0).0);
        // Counters that went back (the LB restarted): counted from zero.
        assert!(!lb_disagreement(&then, &counts(10, 0, 0), 2.0).0);
    }
}
