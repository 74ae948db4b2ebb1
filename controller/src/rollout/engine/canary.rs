//! The canary phase of a run: the first nodes go alone; with an analysis
//! (`analysis.soak`) they then serve real traffic for the soak while the
//! pure [`crate::judge`] compares them, every interval, with the nodes
//! still on the old release over the same seconds. A pass lets the rollout
//! go on; a failure ends the soak at once and rolls every switched node
//! back — all together within the capacity rules, no soak on the way
//! back — under the run's lease and ids of its own.
use farm_inventory::OnInconclusive;
use farm_proto::domain::{NodeOutcome, OperationId, OperationKind, Phase};
use futures::future::join_all;
use tokio::time::Instant;

use super::{Progress, Run};
use crate::contract::{AnalysisSettings, DeploySettings, RunSettings};
use crate::journal::{Record, RolledBackRecord, VerdictAction, VerdictRecord};
use crate::judge::{self, Outcome, Sample};
use crate::report::{AnalysisReport, IntervalReport, NodeReport, Reporter, RunReport};

/// The Traffic window an agent keeps, in seconds.
const AGENT_WINDOW_S: u64 = 300;
/// How long past the soak a verdict may take before it is inconclusive.
const VERDICT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A node back on the new release, judged at `until` against `baseline`
/// (the nodes still on the old release when it came back).
#[derive(Debug, Clone)]
pub(super) struct Stabilizing {
    pub node: usize,
    pub until: Instant,
    pub baseline: Vec<usize>,
}

/// Where a run's analysis stands, from its journal when it is resumed.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisState {
    /// No verdict yet: the canaries are judged (again, after a resume —
    /// a soak that was cut never promotes them).
    Judge,
    /// The verdict let the rollout go on.
    Promoted,
    /// The verdict rolls the switched nodes back to this release.
    RollBack(Option<String>),
}

impl AnalysisState {
    /// From a journal's verdict record.
    pub fn from_verdict(v: Option<&crate::journal::VerdictRecord>) -> Self {
        match v {
            None => AnalysisState::Judge,
            Some(v) if v.action == VerdictAction::Promote => AnalysisState::Promoted,
            Some(v) => AnalysisState::RollBack(v.rollback_to.clone()),
        }
    }
}

impl Run<'_> {
    /// The run's canaries: its first nodes (one without an analysis, for
    /// `--canary`), unless the journal says they were judged already.
    pub(super) fn canary_set(&self, p: &Progress) -> Option<Vec<usize>> {
        match (&self.settings.analysis, &self.analysis_state) {
            (Some(a), AnalysisState::Judge) => {
                Some(self.nodes.iter().copied().take(a.canaries).collect())
            }
            (Some(_), _) => None,
            (None, _) => (self.settings.canary && p.succeeded == 0 && p.failures == 0)
                .then(|| self.nodes.iter().copied().take(1).collect()),
        }
    }

    /// Every canary is back: confirm (`--canary`) or judge (analysis).
    pub(super) async fn canaries_back(&self, p: &mut Progress, canaries: Vec<usize>) {
        let ok = Self::succeeded(p, canaries);
        let Some(a) = &self.settings.analysis else {
            self.confirm_canary(p, &ok).await;
            return;
        };
        if ok.is_empty() {
            p.halted = Some(
                "the canaries failed: no node serves the release to judge it; later nodes were not touched"
                    .into(),
            );
            return;
        }
        let baseline: Vec<usize> = p.queue.iter().copied().collect();
        self.weigh(&ok, a.canary_weight).await;
        let mut report = self.soak(a, &ok, &baseline).await;
        if a.canary_weight.is_some() {
            self.unweigh().await;
        }
        let Some(verdict) = report.verdict else {
            p.halted = Some(format!(
                "{}; `farmctl resume {}` judges the canaries again",
                report.reason, self.id
            ));
            p.analysis = Some(report);
            return;
        };
        let action = match (verdict, a.on_inconclusive) {
            (Outcome::Pass, _) | (Outcome::Inconclusive, OnInconclusive::Promote) => {
                VerdictAction::Promote
            }
            (Outcome::Fail, _) | (Outcome::Inconclusive, OnInconclusive::Fail) => {
                VerdictAction::RollBack
            }
            (Outcome::Inconclusive, OnInconclusive::Pause) => {
                if self.operator.promote_inconclusive(&report.reason).await {
                    VerdictAction::Promote
                } else {
                    VerdictAction::RollBack
                }
            }
        };
        if action == VerdictAction::RollBack {
            report.rollback_to = self.previous_release(&ok).await;
        }
        let record = Record::Verdict(VerdictRecord {
            t: crate::clock::now(),
            verdict,
            action,
            reason: report.reason.clone(),
            canaries: report.canaries.clone(),
            rollback_to: report.rollback_to.clone(),
        });
        if let Some(j) = self.journal {
            if let Err(e) = j.append(&record).await {
                // Without the verdict on disk a resume would judge again:
                // safe, so the run goes on with what it decided.
                tracing::error!("could not write the canary verdict to the journal: {e}");
            }
        }
        self.reporter.analysis_verdict(
            &report,
            match action {
                VerdictAction::Promote => "promote",
                VerdictAction::RollBack => "roll_back",
            },
        );
        match action {
            VerdictAction::Promote => {}
            VerdictAction::RollBack => {
                p.halted = Some(format!(
                    "the canary analysis found the release {}: {}",
                    match verdict {
                        Outcome::Fail => "worse than the old one",
                        _ => "not proven (inconclusive)",
                    },
                    report.reason
                ));
                p.rollback = Some(report.rollback_to.clone());
            }
        }
        p.analysis = Some(report);
        if action == VerdictAction::Promote && self.settings.canary {
            self.confirm_canary(p, &ok).await;
        }
    }

    /// `--canary`: the operator's yes after the first canary is back, or
    /// the run stops (an operator's stop, not a failure).
    async fn confirm_canary(&self, p: &mut Progress, ok: &[usize]) {
        let Some(first) = ok.first().and_then(|i| p.reports.get(i)) else {
            return;
        };
        if !p.queue.is_empty() && !self.operator.confirm_canary(first).await {
            p.stopped = true;
            p.halted = Some(format!(
                "stopped after the canary {} (not confirmed)",
                first.name
            ));
        }
    }

    /// Those of `nodes` this run switched successfully.
    fn succeeded(p: &Progress, nodes: impl IntoIterator<Item = usize>) -> Vec<usize> {
        nodes
            .into_iter()
            .filter(|i| {
                p.reports
                    .get(i)
                    .is_some_and(|r| r.outcome == NodeOutcome::Succeeded)
            })
            .collect()
    }

    /// Whether node `i`, just back, is judged after `analysis.stabilize`
    /// (not a canary: they had their soak); if so it is booked.
    pub(super) fn stabilizes(&self, p: &mut Progress, i: usize) -> bool {
        let Some((d, _)) = self.after_return() else {
            return false;
        };
        if p.canary.is_some() || p.rollback.is_some() || p.halted.is_some() {
            return false;
        }
        p.stabilizing.push(Stabilizing {
            node: i,
            until: Instant::now() + d,
            baseline: p.queue.iter().copied().collect(),
        });
        self.reporter.detail(
            self.name(i),
            &format!(
                "{}: judged in {} against the nodes {}",
                if self.patching() {
                    "baking"
                } else {
                    "stabilizing"
                },
                crate::human::duration(d),
                if self.patching() {
                    "not yet done"
                } else {
                    "still on the old release"
                }
            ),
        );
        true
    }

    /// A patch or reboot (judged after each node's return, never rolled
    /// back).
    fn patching(&self) -> bool {
        self.settings.operation.restarts_server()
    }

    /// How long each node is judged after its return, and by what limits:
    /// a patch's bake, a deploy's stabilization.
    fn after_return(&self) -> Option<(std::time::Duration, judge::Limits)> {
        match (&self.settings.patch, &self.settings.analysis) {
            (Some(p), _) => Some((p.bake?, p.limits())),
            (None, Some(a)) => Some((a.stabilize?, a.limits())),
            (None, None) => None,
        }
    }

    /// Judges every node whose stabilization is over: itself against the
    /// nodes still on the old release over the period. A failure halts
    /// the run and rolls every switched node back; not enough data (or
    /// no node left to compare with) lets it go on, said so.
    pub(super) async fn stabilized(&self, p: &mut Progress) {
        let Some((period, limits)) = self.after_return() else {
            return;
        };
        let now = Instant::now();
        let (due, rest): (Vec<Stabilizing>, Vec<Stabilizing>) = std::mem::take(&mut p.stabilizing)
            .into_iter()
            .partition(|s| s.until <= now);
        p.stabilizing = rest;
        for s in due {
            p.out.at_work -= 1;
            if p.rollback.is_some() {
                continue;
            }
            let name = self.name(s.node).to_string();
            let mut baseline: Vec<usize> = s
                .baseline
                .iter()
                .copied()
                .filter(|b| p.queue.contains(b))
                .collect();
            if baseline.is_empty() && self.patching() {
                // The last nodes: against those already done and judged.
                baseline = Self::succeeded(p, self.nodes.iter().copied())
                    .into_iter()
                    .filter(|&b| b != s.node && !p.stabilizing.iter().any(|x| x.node == b))
                    .collect();
            }
            let what = if self.patching() {
                "bake"
            } else {
                "stabilization"
            };
            if baseline.is_empty() {
                self.reporter.detail(
                    &name,
                    &format!("{what} not judged: no node is left to compare with"),
                );
                continue;
            }
            let last_s = period.as_secs().clamp(1, AGENT_WINDOW_S) as u32;
            let node = [s.node];
            let (c, b) = tokio::join!(self.sample(&node, last_s), self.sample(&baseline, last_s));
            let j = judge::judge(&c, &b, &limits);
            self.reporter
                .detail(&name, &format!("{what}: {} — {}", j.result, j.reason()));
            if j.result != Outcome::Fail {
                continue;
            }
            if self.patching() {
                self.bake_failed(p, s.node, &j).await;
                continue;
            }
            let reason = format!("{name} after its stabilization: {}", j.reason());
            let rollback_to = self.previous_release(&[s.node]).await;
            let record = Record::Verdict(VerdictRecord {
                t: crate::clock::now(),
                verdict: Outcome::Fail,
                action: VerdictAction::RollBack,
                reason: reason.clone(),
                canaries: vec![name.clone()],
                rollback_to: rollback_to.clone(),
            });
            if let Some(jn) = self.journal {
                if let Err(e) = jn.append(&record).await {
                    tracing::error!("could not journal the stabilization verdict: {e}");
                }
            }
            let analysis = p.analysis.get_or_insert_with(|| AnalysisReport {
                verdict: None,
                reason: String::new(),
                canaries: Vec::new(),
                baseline: Vec::new(),
                soak_s: 0.0,
                intervals: Vec::new(),
                rollback_to: None,
            });
            analysis.verdict = Some(Outcome::Fail);
            analysis.reason = reason.clone();
            analysis.rollback_to = rollback_to.clone();
            analysis.intervals.push(IntervalReport {
                at: crate::clock::now(),
                elapsed_s: period.as_secs_f64(),
                result: j.result,
                metrics: j.metrics,
            });
            self.reporter.analysis_verdict(analysis, "roll_back");
            p.halted = Some(format!("the release failed under more traffic: {reason}"));
            p.queue.clear();
            p.rollback = Some(rollback_to);
        }
        if p.rollback.is_some() {
            // Nothing more is judged: every switched node goes back.
            p.out.at_work -= p.stabilizing.len();
            p.stabilizing.clear();
        }
    }

    /// A patched node whose users fared worse than the others' after its
    /// return: taken out of rotation again (no wait: its users suffer),
    /// failed, and the run halted. Updates are not rolled back: the
    /// operator looks, then returns it (`farmctl undrain`) or not.
    async fn bake_failed(&self, p: &mut Progress, i: usize, j: &judge::Judgement) {
        let name = self.name(i).to_string();
        let node = self.farm.node(i);
        let agent = self.farm.agent(i);
        let op_id =
            OperationId::new(&self.id, &name, farm_proto::domain::OpStep::Drain).to_string();
        let target = crate::lb::Target {
            node,
            agent,
            op_id: &op_id,
        };
        let drained = self.farm.lb.drain(&target).await;
        let out = drained.is_ok() || !self.farm.lb.drains();
        let reason = format!(
            "its users fared worse than the other nodes' after the {}: {}",
            self.settings.operation,
            j.reason()
        );
        let place = match &drained {
            Ok(()) if self.farm.lb.drains() => format!(
                "taken out of rotation again; after a look, `farmctl undrain -i <inventory> {name}` returns it"
            ),
            Ok(()) => "the load balancer cannot drain it: it serves".to_string(),
            Err(e) => format!("it could not be taken out of rotation ({e}): it still serves"),
        };
        self.reporter
            .detail(&name, &format!("bake failed: {reason}; {place}"));
        if let Some(r) = p.reports.get_mut(&i) {
            if r.outcome == NodeOutcome::Succeeded {
                p.succeeded = p.succeeded.saturating_sub(1);
            }
            r.outcome = NodeOutcome::Failed;
            r.failed_step = Some(crate::machine::FailedStep::Bake);
            r.error = Some(format!("{name} at bake: {reason}"));
            r.in_rotation = !(out && self.farm.lb.drains());
        }
        p.failures += 1;
        if !p.reports.get(&i).is_some_and(|r| r.in_rotation) {
            p.out.failed += 1;
        }
        if let Some(r) = p.reports.get(&i) {
            // Said again as failed (the webhook's node_failed too).
            self.reporter.node_finished(r);
        }
        if let Some(jn) = self.journal {
            let record = crate::journal::PhaseRecord {
                t: crate::clock::now(),
                node: name.clone(),
                phase: Phase::Failed,
                pids: None,
                detail: Some(format!("bake: {reason}")),
                pids_after: None,
                failed_step: Some("bake".into()),
            };
            if let Err(e) = jn.phase_record(record).await {
                tracing::error!("could not journal the failed bake of {name}: {e}");
            }
        }
        let analysis = p.analysis.get_or_insert_with(|| AnalysisReport {
            verdict: None,
            reason: String::new(),
            canaries: Vec::new(),
            baseline: Vec::new(),
            soak_s: 0.0,
            intervals: Vec::new(),
            rollback_to: None,
        });
        analysis.verdict = Some(Outcome::Fail);
        analysis.reason = format!("{name}: {reason}");
        analysis.canaries = vec![name.clone()];
        analysis.intervals.push(IntervalReport {
            at: crate::clock::now(),
            elapsed_s: self.after_return().map_or(0.0, |(d, _)| d.as_secs_f64()),
            result: j.result,
            metrics: j.metrics.clone(),
        });
        p.halted = Some(format!(
            "{name} failed its bake: {reason}; {place}; later nodes were not touched"
        ));
        p.queue.clear();
    }

    /// The canaries serve real traffic for the soak; a judgement every
    /// interval over the soak so far; a failure ends it at once.
    async fn soak(
        &self,
        a: &AnalysisSettings,
        canaries: &[usize],
        baseline: &[usize],
    ) -> AnalysisReport {
        let names = |v: &[usize]| {
            v.iter()
                .map(|&i| self.name(i).to_string())
                .collect::<Vec<_>>()
        };
        let mut report = AnalysisReport {
            verdict: None,
            reason: String::new(),
            canaries: names(canaries),
            baseline: names(baseline),
            soak_s: a.soak.as_secs_f64(),
            intervals: Vec::new(),
            rollback_to: None,
        };
        self.reporter.note(&format!(
            "canary analysis: {} serve(s) the release; judging against {} for {} (every {})",
            report.canaries.join(", "),
            if baseline.is_empty() {
                "no baseline".to_string()
            } else {
                report.baseline.join(", ")
            },
            crate::human::duration(a.soak),
            crate::human::duration(a.interval)
        ));
        let limits = a.limits();
        // The LB's counters at the start of the soak, when it counts, and
        // right after them the agents' (requests read, requests running):
        // what the LB sends from here on is either read, running, or
        // never answered.
        let lb_start = self.lb_traffic().await;
        let counters_start = tokio::join!(self.sample(canaries, 1), self.sample(baseline, 1));
        let started = Instant::now();
        let end = started + a.soak;
        let mut next = started + a.interval;
        let mut stop = self.stop.clone();
        loop {
            let at = next.min(end);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                _ = async { if let Some(s) = &mut stop { let _ = s.wait_for(|s| *s).await; } },
                    if stop.as_ref().is_some_and(|s| !*s.borrow()) => {
                    report.reason = "the soak was cut short by the operator's stop".into();
                    return report;
                }
            }
            let elapsed = started.elapsed();
            let last_s = elapsed
                .as_secs_f64()
                .ceil()
                .clamp(1.0, AGENT_WINDOW_S as f64) as u32;
            // The LB first, the agents right after: they can only have read
            // more than the LB had sent.
            let lb_now = self.lb_traffic().await;
            // A verdict within the soak plus a bound, or none: figures
            // that do not come make the analysis inconclusive, not stuck.
            let figures = tokio::time::timeout_at(end + VERDICT_GRACE.max(a.interval), async {
                tokio::join!(self.sample(canaries, last_s), self.sample(baseline, last_s))
            })
            .await;
            let Ok((c, b)) = figures else {
                report.verdict = Some(Outcome::Inconclusive);
                report.reason = format!(
                    "no verdict within the soak plus {}: the agents' traffic figures did not come",
                    crate::human::duration(VERDICT_GRACE.max(a.interval))
                );
                return report;
            };
            let lb = match (&lb_start, lb_now) {
                (Some(then), Some(now)) => Some((
                    lb_sample(canaries, then, &now),
                    lb_sample(baseline, then, &now),
                )),
                _ => None,
            };
            // What the LB sent each side, against what they answered:
            // requests that never answered (hung, cut) log no error.
            let (c0, b0) = &counters_start;
            let sent = lb.as_ref().and_then(|(lc, lbase)| {
                Some((
                    judge::Sent::between(lc.requests, c0, &c)?,
                    judge::Sent::between(lbase.requests, b0, &b)?,
                ))
            });
            let j = judge::judge_all(&c, &b, lb.as_ref().map(|(c, b)| (c, b)), sent, &limits);
            let interval = IntervalReport {
                at: crate::clock::now(),
                elapsed_s: elapsed.as_secs_f64(),
                result: j.result,
                metrics: j.metrics.clone(),
            };
            self.reporter.analysis_interval(&interval);
            if let Some(jn) = self.journal {
                if let Err(e) = jn.append(&Record::Interval(interval.clone())).await {
                    tracing::warn!("could not journal a canary judgement: {e}");
                }
            }
            report.intervals.push(interval);
            if j.result == Outcome::Fail || Instant::now() >= end {
                report.verdict = Some(j.result);
                report.reason = j.reason();
                return report;
            }
            next += a.interval;
        }
    }

    /// The deployed site's traffic on `nodes` over the last `last_s`
    /// seconds, pooled. A node that cannot say is left out (and said so).
    async fn sample(&self, nodes: &[usize], last_s: u32) -> Sample {
        // A deploy's site; every site for a patch or reboot.
        let site = self.settings.deploy.as_ref().map(|d| d.site.as_str());
        let views = join_all(nodes.iter().map(|&i| self.farm.agent(i).traffic(last_s))).await;
        let mut total = Sample::default();
        for (&i, view) in nodes.iter().zip(views) {
            match view {
                Ok(v) if v.unavailable.is_none() => {
                    let mut node = Sample {
                        hung: v.hung,
                        in_flight: v.in_flight,
                        requests_total: Some(0),
                        nodes: 1,
                        ..Sample::default()
                    };
                    for s in v
                        .sites
                        .iter()
                        .filter(|s| site.is_none_or(|x| s.site.eq_ignore_ascii_case(x)))
                    {
                        node.requests += s.requests;
                        node.errors += s.classes[4];
                        node.latency.merge(&s.latency);
                        node.requests_total = node.requests_total.map(|t| t + s.requests_total);
                    }
                    total.add(&node);
                }
                Ok(v) => self.reporter.detail(
                    self.name(i),
                    &format!(
                        "no traffic figures for the canary analysis: {}",
                        v.unavailable.unwrap_or_default()
                    ),
                ),
                Err(e) => self.reporter.detail(
                    self.name(i),
                    &format!("no traffic figures for the canary analysis: {e}"),
                ),
            }
        }
        total
    }

    /// Gives each canary `percent` of a normal node's traffic, with whole
    /// weights (the other servers' scaled up: a percentage of a weight of
    /// 1 is 0), read back after setting. A failure is said and the soak
    /// goes on at full weight.
    async fn weigh(&self, canaries: &[usize], percent: Option<u32>) {
        let Some(percent) = percent else { return };
        let nodes = &self.farm.inventory.nodes;
        let say = |m: String| self.reporter.note(&m);
        let known = match self.farm.lb.weights(nodes).await {
            Ok(Some(w)) if w.iter().all(Option::is_some) => w.into_iter().flatten().collect::<Vec<_>>(),
            Ok(Some(_)) => return say("canary weight: not every node is a server of the load balancer; the canaries keep a normal node's share".into()),
            Ok(None) => return say(format!("canary weight: {} has no weights; the canaries keep a normal node's share", self.farm.lb.name())),
            Err(e) => return say(format!("canary weight: could not read the weights ({e}); the canaries keep a normal node's share")),
        };
        let (cw, ow): (Vec<_>, Vec<_>) = (0..nodes.len()).partition(|i| canaries.contains(i));
        let pick = |idx: &[usize]| idx.iter().map(|&i| known[i]).collect::<Vec<_>>();
        let (c, o, made) =
            crate::lb::weights::shares(&pick(&cw), &pick(&ow), f64::from(percent) / 100.0);
        let set: Vec<(&farm_inventory::Node, u32)> = cw
            .iter()
            .zip(&c)
            .chain(ow.iter().zip(&o))
            .map(|(&i, &w)| (&nodes[i], w))
            .collect();
        match self.farm.lb.set_weights(&set).await {
            Ok(()) => {
                for (&i, w) in cw.iter().zip(&c) {
                    self.reporter.detail(
                        &nodes[i].name,
                        &format!(
                            "weight {w} against {} for the others in {}: {:.0}% of a normal node's traffic ({percent}% asked)",
                            o.iter().map(u32::to_string).collect::<Vec<_>>().join("/"),
                            self.farm.lb.name(),
                            made * 100.0
                        ),
                    );
                }
            }
            Err(e) => {
                say(format!(
                    "canary weight: could not set {percent}%: {e}; putting the weights back"
                ));
                self.unweigh().await;
            }
        }
    }

    /// Every weight back to its initial value (after the soak, on a
    /// verdict; a run started later does the same for a run killed
    /// mid-soak).
    pub(super) async fn unweigh(&self) {
        match crate::lb::weights::restore(&*self.farm.lb, &self.farm.inventory.nodes).await {
            Ok(done) => {
                for d in done {
                    self.reporter.note(&d);
                }
            }
            Err(e) => self.reporter.note(&format!(
                "the load balancer's weights could not be put back: {e}; `farmctl status` shows them"
            )),
        }
    }

    /// Every node's counters as the load balancer keeps them; `None` when
    /// it does not count (or cannot be read: the node-side judgement
    /// stands alone, said in a detail).
    async fn lb_traffic(&self) -> Option<Vec<Option<crate::lb::LbTraffic>>> {
        match self.farm.lb.traffic(&self.farm.inventory.nodes).await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!("the load balancer's counters could not be read: {e}");
                None
            }
        }
    }

    /// The release the canaries served before this one.
    async fn previous_release(&self, canaries: &[usize]) -> Option<String> {
        let d = self.settings.deploy.as_ref()?;
        for &i in canaries {
            if let Ok(kept) = self.farm.agent(i).releases(&d.site).await {
                if let Some(r) = kept.into_iter().find(|r| r.previous) {
                    return Some(r.version);
                }
            }
        }
        None
    }

    /// Rolls every node this run switched back to `to`, through the same
    /// engine (drain, switch, prove the version, return) with no soak;
    /// their reports say where they ended. Whether all are back.
    pub(super) async fn roll_back(&self, p: &mut Progress, to: Option<String>) -> bool {
        let switched = Self::succeeded(p, self.nodes.iter().copied());
        let (Some(to), Some(d)) = (to, self.settings.deploy.as_ref()) else {
            self.reporter.note(
                "cannot roll back: no node keeps an earlier release of the site; the switched nodes stay on the new one",
            );
            return false;
        };
        if switched.is_empty() {
            return true;
        }
        let expect = self
            .farm
            .inventory
            .sites
            .iter()
            .find(|s| s.name == d.site)
            .and_then(|s| s.version_probe.as_ref())
            .map_or_else(|| to.clone(), |v| v.expected(&to));
        let settings = RunSettings {
            operation: OperationKind::Rollback,
            nodes: switched.iter().map(|&i| self.name(i).to_string()).collect(),
            deploy: Some(DeploySettings {
                version: to.clone(),
                package: None,
                version_expect: expect,
                ..d.clone()
            }),
            analysis: None,
            canary: false,
            pause: None,
            // Requests hung in the bad release never finish by themselves:
            // they must not hold its rollback (the recycle ends them).
            timeouts: crate::contract::RunTimeouts {
                on_drain_timeout: farm_inventory::OnDrainTimeout::Proceed,
                ..self.settings.timeouts.clone()
            },
            ..self.settings.clone()
        };
        self.reporter.note(&format!(
            "rolling {} back to release {to} (requests still in flight after drain_timeout do not hold it)",
            settings.nodes.join(", ")
        ));
        let quiet = Nested(self.reporter);
        let id = OperationId::rollback_run(&self.id);
        let back = match Run::new(&id, self.farm, &settings, &quiet, self.operator) {
            Ok(run) => {
                let run = run.out_before(self.out_before + p.out.failed);
                Box::pin(run.execute()).await
            }
            Err(e) => {
                self.reporter.note(&format!("cannot roll back: {e}"));
                return false;
            }
        };
        let ok = back.succeeded();
        self.merge_rollback(p, &back);
        if let Some(j) = self.journal {
            let record = Record::RolledBack(RolledBackRecord {
                t: crate::clock::now(),
                ok,
            });
            if let Err(e) = j.append(&record).await {
                tracing::error!("could not journal the end of the rollback: {e}");
            }
        }
        ok
    }

    /// Each rolled-back node's report says where it ended.
    fn merge_rollback(&self, p: &mut Progress, back: &RunReport) {
        for n in &back.nodes {
            let Some(i) = self.farm.index_of(&n.name) else {
                continue;
            };
            let Some(r) = p.reports.get_mut(&i) else {
                continue;
            };
            r.in_rotation = n.in_rotation;
            if n.version.is_some() {
                r.version = n.version.clone();
            }
            for (k, ms) in &n.phase_ms {
                *r.phase_ms.entry(format!("rollback_{k}")).or_default() += ms;
            }
            if n.outcome == NodeOutcome::Failed {
                r.outcome = NodeOutcome::Failed;
                r.error = Some(format!(
                    "rollback: {}",
                    n.error.as_deref().unwrap_or("failed")
                ));
            }
        }
    }
}

/// `nodes`' traffic through the load balancer between two readings.
fn lb_sample(
    nodes: &[usize],
    then: &[Option<crate::lb::LbTraffic>],
    now: &[Option<crate::lb::LbTraffic>],
) -> Sample {
    let mut s = Sample::default();
    for &i in nodes {
        if let (Some(Some(a)), Some(Some(b))) = (then.get(i), now.get(i)) {
            let d = b.since(a);
            s.requests += d.requests();
            s.errors += d.failures();
        }
    }
    s
}

/// The rollback run's events, inside the run that started it: its nodes'
/// phases and details, not a second start and end.
struct Nested<'a>(&'a dyn Reporter);

impl Reporter for Nested<'_> {
    fn phase(&self, node: &str, phase: Phase) {
        self.0.phase(node, phase);
    }
    fn detail(&self, node: &str, message: &str) {
        self.0.detail(node, message);
    }
    fn node_finished(&self, node: &NodeReport) {
        let how = match node.outcome {
            NodeOutcome::Succeeded => format!(
                "rolled back: serves {} and is in rotation",
                node.version.as_deref().unwrap_or("the earlier release")
            ),
            _ => format!(
                "rollback FAILED: {}",
                node.error.as_deref().unwrap_or("no reason given")
            ),
        };
        self.0.detail(&node.name, &how);
    }
    fn note(&self, message: &str) {
        self.0.note(message);
    }
    fn analysis_interval(&self, interval: &IntervalReport) {
        self.0.analysis_interval(interval);
    }
    fn analysis_verdict(&self, a: &AnalysisReport, action: &str) {
        self.0.analysis_verdict(a, action);
    }
}
