//! The guard's decision: what one evaluation saw and the guard's history
//! in, the decisions and at most one thing to do out. No I/O and no clock
//! of its own (`now` is given), so every guardrail is tested on a paused
//! clock.
//!
//! The order of the questions is the order of their precedence: a run
//! holding the farm, too few fresh reports, a sick farm, then per pool:
//! quarantine, relapse, cool-down, one action at a time, the budget, the
//! capacity floor. Any doubt resolves to acting on nothing.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use farm_inventory::Guard as Rules;
use serde::{Deserialize, Serialize};

use crate::health::median;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

const HOUR: Millis = 3_600_000;
const DAY: Millis = 24 * HOUR;

/// A farm is far above its own recent past when its healthy nodes'
/// median 5xx rate is this many times its past one and at least
/// [`FARM_ERROR_MARGIN`] above it...
const FARM_FACTOR: f64 = 3.0;
const FARM_ERROR_MARGIN: f64 = 0.02;
/// ...or their median p95 this many times and this much above.
const FARM_LATENCY_MARGIN_MS: f64 = 300.0;
/// The past is the last hour's evaluations that ended a window ago or
/// more; at least this many of them.
const PAST_MIN: usize = 3;

/// What users got from one node or pool over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub error_rate: Option<f64>,
    pub p95_ms: Option<f64>,
    pub in_flight: Option<u64>,
}

/// One node as one evaluation saw it.
#[derive(Debug, Clone, Default)]
pub struct NodeSeen {
    pub name: String,
    /// Reachable, healthy and in rotation.
    pub serving: bool,
    /// In rotation (its probe may fail: a sick node's often does).
    pub in_rotation: bool,
    /// The outlier rule's verdict over the window (`None`: unknown —
    /// unreachable, stale or too little data; never sick).
    pub outlier: Option<bool>,
    /// Its sick pools (empty: the node as a whole).
    pub pools: Vec<String>,
    pub reasons: Vec<String>,
    pub figures: Figures,
    /// Each pool's own figures.
    pub pool_figures: BTreeMap<String, Figures>,
}

/// One evaluation of the farm.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub nodes: Vec<NodeSeen>,
    /// A run holding the farm or one of its nodes (who, which run).
    pub run: Option<String>,
    /// Fewest nodes that must stay serving (the runs' `min_healthy`).
    pub min_healthy: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Nothing sick.
    Ok,
    /// An outlier not yet confirmed.
    Watching,
    Acted,
    Held,
    Quarantined,
    /// A pool acted on is like its peers again.
    Healed,
    /// A pool acted on is sick again within `relapse`.
    Relapsed,
    /// An action a guard left unfinished (killed mid-run) was finished
    /// from its journal.
    Finished,
}

/// One line of the decision log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub decision: Kind,
    /// `outlier`, `farm sick`, `budget spent`, `cool-down`, `capacity`,
    /// `data missing`, `run in progress`, `one at a time`, `relapse`,
    /// `relapses`, `like its peers`, `confirming`.
    pub reason: String,
    pub node: Option<String>,
    pub pool: Option<String>,
    /// In words, with the figures behind it.
    pub detail: String,
    /// The node's (or pool's) figures now.
    pub figures: Option<Figures>,
    /// Its figures when it was acted on (`healed`, `relapsed`).
    pub before: Option<Figures>,
    /// The healthy nodes' medians now.
    #[serde(rename = "farm_figures")]
    pub farm: Figures,
    /// Worth a page (webhook): an action, a quarantine, the first
    /// evaluation of a hold on the farm.
    #[serde(skip)]
    pub page: bool,
}

/// What the caller is to do after an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Drain, diagnose, recycle this pool (`None`: the node's pools),
    /// verify, warm, return.
    Recycle { node: String, pool: Option<String> },
    /// Stop acting on it; take the node out if capacity allows.
    Quarantine { node: String, pool: Option<String> },
}

/// One pool on one node, as the guard remembers it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Unit {
    pub node: String,
    pub pool: Option<String>,
    pub last_action: Option<Millis>,
    pub relapses: u32,
    /// This sickness was counted as a relapse already.
    pub relapse_counted: bool,
    pub quarantined: bool,
    /// Its figures when last acted on, until it is proven healed.
    pub before: Option<Figures>,
    /// Like its peers since (resets the back-off after `relapse`).
    pub healthy_since: Option<Millis>,
}

/// What the guard remembers between evaluations (and across a takeover:
/// it is saved in the run state store).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// Consecutive evaluations each unit (`node/pool`) was an outlier.
    pub streak: BTreeMap<String, u32>,
    pub units: BTreeMap<String, Unit>,
    /// When each action of the last day was taken.
    pub actions: VecDeque<Millis>,
    /// The healthy nodes' medians at each evaluation of the last hour.
    pub farm: VecDeque<(Millis, Figures)>,
    /// The hold that was paged, until it clears (one page per episode).
    pub paged: Option<String>,
}

fn key(node: &str, pool: Option<&str>) -> String {
    format!("{node}/{}", pool.unwrap_or("*"))
}

/// The medians of the nodes that are not outliers (those like their
/// peers, and those with too little data to judge but some): the farm as
/// its majority serves it.
fn farm_now(seen: &Seen) -> Figures {
    let like: Vec<&NodeSeen> = seen
        .nodes
        .iter()
        .filter(|n| n.outlier != Some(true) && n.figures.requests > 0)
        .collect();
    Figures {
        requests: like.iter().map(|n| n.figures.requests).sum(),
        error_rate: median(like.iter().filter_map(|n| n.figures.error_rate).collect()),
        p95_ms: median(like.iter().filter_map(|n| n.figures.p95_ms).collect()),
        in_flight: None,
    }
}

/// Why the farm is far above its own recent past, if it is.
fn farm_worse(hist: &History, now: Millis, window: Millis, farm: &Figures) -> Option<String> {
    let past: Vec<&Figures> = hist
        .farm
        .iter()
        .filter(|(t, _)| t + window <= now)
        .map(|(_, f)| f)
        .collect();
    if past.len() < PAST_MIN {
        return None;
    }
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    if let (Some(e), Some(p)) = (
        farm.error_rate,
        median(past.iter().filter_map(|f| f.error_rate).collect()),
    ) {
        if e > (p * FARM_FACTOR).max(p + FARM_ERROR_MARGIN) {
            return Some(format!(
                "the farm's 5xx rate is {} against {} over the last hour",
                pct(e),
                pct(p)
            ));
        }
    }
    if let (Some(l), Some(p)) = (
        farm.p95_ms,
        median(past.iter().filter_map(|f| f.p95_ms).collect()),
    ) {
        if l > (p * FARM_FACTOR).max(p + FARM_LATENCY_MARGIN_MS) {
            return Some(format!(
                "the farm's p95 is {l:.0} ms against {p:.0} ms over the last hour"
            ));
        }
    }
    None
}

struct Out {
    decisions: Vec<Decision>,
    farm: Figures,
}

impl Out {
    fn say(
        &mut self,
        decision: Kind,
        reason: &str,
        unit: Option<(&str, Option<&str>)>,
        detail: String,
        figures: Option<Figures>,
        before: Option<Figures>,
    ) {
        self.decisions.push(Decision {
            decision,
            reason: reason.into(),
            node: unit.map(|u| u.0.to_string()),
            pool: unit.and_then(|u| u.1.map(str::to_string)),
            detail,
            figures,
            before,
            farm: self.farm.clone(),
            page: matches!(decision, Kind::Acted | Kind::Quarantined),
        });
    }

    /// A hold on the whole farm, paged once per episode.
    fn hold(mut self, hist: &mut History, reason: &str, detail: String) -> Vec<Decision> {
        self.say(Kind::Held, reason, None, detail, None, None);
        if hist.paged.as_deref() != Some(reason) {
            hist.paged = Some(reason.to_string());
            if let Some(d) = self.decisions.last_mut() {
                d.page = true;
            }
        }
        self.decisions
    }
}

fn ms(d: Duration) -> Millis {
    d.as_millis() as Millis
}

fn when(d: Millis) -> String {
    humantime::format_duration(Duration::from_secs(d.div_ceil(1000))).to_string()
}

/// One evaluation: the decisions to log, and what to do (at most one
/// action farm-wide). The history is updated as if the action were done
/// (a dry run decides the same from then on).
pub fn evaluate(
    rules: &Rules,
    hist: &mut History,
    seen: &Seen,
    now: Millis,
) -> (Vec<Decision>, Option<Act>) {
    let window = ms(rules.window);
    let farm = farm_now(seen);
    let mut out = Out {
        decisions: Vec::new(),
        farm: farm.clone(),
    };
    while hist.actions.front().is_some_and(|t| t + DAY <= now) {
        hist.actions.pop_front();
    }
    while hist.farm.front().is_some_and(|(t, _)| t + HOUR <= now) {
        hist.farm.pop_front();
    }
    let worse = farm_worse(hist, now, window, &farm);

    // A run holds the farm: it decides, the guard waits.
    if let Some(run) = &seen.run {
        hist.streak.clear();
        out.say(
            Kind::Held,
            "run in progress",
            None,
            format!("{run} holds the farm: the guard acts on nothing until it ends"),
            None,
            None,
        );
        return (out.decisions, None);
    }

    // Far above its own past (a release, a dependency, a spike — and the
    // slower the farm, the fewer requests each node logs): held before
    // anything else is judged.
    if let Some(why) = worse {
        hist.streak.clear();
        return (out.hold(hist, "farm sick", why), None);
    }

    // Missing or stale data is unknown, never sick: too little of it and
    // nothing is judged.
    let total = seen.nodes.len();
    let known = seen.nodes.iter().filter(|n| n.outlier.is_some()).count();
    let quorum = (total / 2 + 1).max(2);
    if known < quorum {
        let unknown: Vec<String> = seen
            .nodes
            .iter()
            .filter(|n| n.outlier.is_none())
            .map(|n| format!("{}: {}", n.name, n.reasons.join("; ")))
            .collect();
        hist.streak.clear();
        let detail = format!(
            "{known} of {total} nodes have figures to judge, {quorum} needed ({})",
            unknown.join(", ")
        );
        return (out.hold(hist, "data missing", detail), None);
    }
    hist.farm.push_back((now, farm.clone()));

    // A sick farm is not healed by recycling one pool.
    let sick: Vec<&NodeSeen> = seen
        .nodes
        .iter()
        .filter(|n| n.outlier == Some(true))
        .collect();
    let max_sick = rules.max_sick.of(total).max(1);
    if sick.len() > max_sick {
        let why = format!(
            "{} of {total} nodes are outliers ({}), more than max_sick {max_sick}: a farm-wide cause (a release, a dependency, a spike) is not healed by recycling",
            sick.len(),
            sick.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        hist.streak.clear();
        return (out.hold(hist, "farm sick", why), None);
    }

    // Each sick unit's streak; every other unit's is over.
    let mut now_sick: Vec<(&NodeSeen, Option<String>)> = Vec::new();
    for n in &sick {
        if n.pools.is_empty() {
            now_sick.push((n, None));
        } else {
            now_sick.extend(n.pools.iter().map(|p| (*n, Some(p.clone()))));
        }
    }
    let sick_keys: BTreeSet<String> = now_sick
        .iter()
        .map(|(n, p)| key(&n.name, p.as_deref()))
        .collect();
    hist.streak.retain(|k, _| sick_keys.contains(k));
    for k in &sick_keys {
        *hist.streak.entry(k.clone()).or_default() += 1;
    }

    // Units acted on that are like their peers now: healed; healthy for
    // `relapse`, their back-off starts over.
    let relapse = ms(rules.relapse);
    for (k, u) in hist.units.iter_mut() {
        let Some(node) = seen.nodes.iter().find(|n| n.name == u.node) else {
            continue;
        };
        if node.outlier != Some(false) || sick_keys.contains(k) {
            continue;
        }
        let since = *u.healthy_since.get_or_insert(now);
        if let Some(before) = u.before.take() {
            let after = figures_of(node, u.pool.as_deref());
            out.say(
                Kind::Healed,
                "like its peers",
                Some((&u.node, u.pool.as_deref())),
                format!(
                    "{} is like its peers again: {} before, {} now",
                    unit_name(&u.node, u.pool.as_deref()),
                    said(&before),
                    said(&after)
                ),
                Some(after),
                Some(before),
            );
        }
        if now >= since + relapse && (u.relapses > 0 || u.relapse_counted) {
            u.relapses = 0;
            u.relapse_counted = false;
        }
    }

    // The confirmed ones, longest sick first; at most one action.
    let mut confirmed: Vec<&(&NodeSeen, Option<String>)> = Vec::new();
    for s in &now_sick {
        let k = key(&s.0.name, s.1.as_deref());
        let streak = hist.streak[&k];
        if streak < rules.confirm {
            out.say(
                Kind::Watching,
                "confirming",
                Some((&s.0.name, s.1.as_deref())),
                format!(
                    "an outlier in {streak} of the {} consecutive evaluations needed: {}",
                    rules.confirm,
                    s.0.reasons.join("; ")
                ),
                Some(figures_of(s.0, s.1.as_deref())),
                None,
            );
        } else {
            confirmed.push(s);
        }
    }
    confirmed.sort_by_key(|s| std::cmp::Reverse(hist.streak[&key(&s.0.name, s.1.as_deref())]));
    let serving = seen.nodes.iter().filter(|n| n.serving).count();
    let mut act: Option<Act> = None;
    for (node, pool) in confirmed {
        let k = key(&node.name, pool.as_deref());
        let name = unit_name(&node.name, pool.as_deref());
        let figures = figures_of(node, pool.as_deref());
        let unit = (node.name.as_str(), pool.as_deref());
        let reasons = node.reasons.join("; ");
        let u = hist.units.entry(k.clone()).or_insert_with(|| Unit {
            node: node.name.clone(),
            pool: pool.clone(),
            ..Unit::default()
        });
        u.healthy_since = None;
        if u.quarantined {
            out.say(
                Kind::Held,
                "quarantined",
                Some(unit),
                format!("{name} is quarantined after {} relapses: the guard no longer acts on it ({reasons})", u.relapses),
                Some(figures),
                None,
            );
            continue;
        }
        if let Some(last) = u.last_action.filter(|t| now < t + relapse) {
            if !u.relapse_counted {
                u.relapse_counted = true;
                u.relapses += 1;
                out.say(
                    Kind::Relapsed,
                    "relapse",
                    Some(unit),
                    format!(
                        "{name} is sick again {} after it was recycled (relapse {} of {}): {reasons}",
                        when(now - last),
                        u.relapses,
                        rules.quarantine_after
                    ),
                    Some(figures.clone()),
                    u.before.clone(),
                );
            }
        }
        // Counted once (above), so it is quarantined at the next
        // evaluation when another action comes first.
        if u.relapses >= rules.quarantine_after {
            if act.is_some() {
                out.say(
                    Kind::Held,
                    "one at a time",
                    Some(unit),
                    format!("{name} is to be quarantined once the action under way is over"),
                    Some(figures),
                    None,
                );
                continue;
            }
            u.quarantined = true;
            out.say(
                Kind::Quarantined,
                "relapses",
                Some(unit),
                format!(
                    "{name} relapsed {} times within {} of being recycled: recycling does not heal it, a person must look ({reasons})",
                    u.relapses,
                    when(relapse)
                ),
                Some(figures),
                u.before.clone(),
            );
            act = Some(Act::Quarantine {
                node: node.name.clone(),
                pool: pool.clone(),
            });
            continue;
        }
        if let Some(last) = u.last_action {
            let cool = ms(rules.cooldown).saturating_mul(1 << u.relapses.min(16));
            if now < last + cool {
                out.say(
                    Kind::Held,
                    "cool-down",
                    Some(unit),
                    format!(
                        "{name} was recycled {} ago; its cool-down ({} after {} relapse(s)) ends in {}",
                        when(now - last),
                        when(cool),
                        u.relapses,
                        when(last + cool - now)
                    ),
                    Some(figures),
                    None,
                );
                continue;
            }
        }
        if act.is_some() {
            out.say(
                Kind::Held,
                "one at a time",
                Some(unit),
                format!("another action is taken in this evaluation: {name} waits for the next"),
                Some(figures),
                None,
            );
            continue;
        }
        let last_hour = hist.actions.iter().filter(|t| *t + HOUR > now).count();
        if last_hour >= rules.per_hour as usize || hist.actions.len() >= rules.per_day as usize {
            out.say(
                Kind::Held,
                "budget spent",
                Some(unit),
                format!(
                    "{last_hour} action(s) in the last hour (at most {}), {} in the last day (at most {}): {name} is left as it is",
                    rules.per_hour,
                    hist.actions.len(),
                    rules.per_day
                ),
                Some(figures),
                None,
            );
            continue;
        }
        let left = serving - usize::from(node.serving);
        if left < seen.min_healthy {
            out.say(
                Kind::Held,
                "capacity",
                Some(unit),
                format!(
                    "taking {} out would leave {left} of {total} nodes serving, fewer than min_healthy {}",
                    node.name, seen.min_healthy
                ),
                Some(figures),
                None,
            );
            continue;
        }
        u.last_action = Some(now);
        u.relapse_counted = false;
        u.before = Some(figures.clone());
        hist.actions.push_back(now);
        hist.streak.remove(&k);
        out.say(
            Kind::Acted,
            "outlier",
            Some(unit),
            format!(
                "{name} an outlier in {} consecutive evaluations: {reasons}",
                rules.confirm
            ),
            Some(figures),
            None,
        );
        act = Some(Act::Recycle {
            node: node.name.clone(),
            pool: pool.clone(),
        });
    }
    if out.decisions.is_empty() {
        out.say(
            Kind::Ok,
            "like its peers",
            None,
            format!("{known} of {total} nodes judged, none an outlier"),
            None,
            None,
        );
    }
    // The farm-wide hold is over: the next one pages again.
    hist.paged = None;
    (out.decisions, act)
}

fn figures_of(node: &NodeSeen, pool: Option<&str>) -> Figures {
    pool.and_then(|p| node.pool_figures.get(p))
        .cloned()
        .unwrap_or_else(|| node.figures.clone())
}

fn unit_name(node: &str, pool: Option<&str>) -> String {
    match pool {
        Some(p) => format!("{p} on {node}"),
        None => format!("{node} (all its pools)"),
    }
}

/// `2.0% 5xx, p95 120 ms over 600 requests`.
pub fn said(f: &Figures) -> String {
    let mut parts = Vec::new();
    if let Some(e) = f.error_rate {
        parts.push(format!("{:.1}% 5xx", e * 100.0));
    }
    if let Some(p) = f.p95_ms {
        parts.push(format!("p95 {p:.0} ms"));
    }
    format!("{} over {} requests", parts.join(", "), f.requests)
}

#[cfg(test)]
mod tests;
