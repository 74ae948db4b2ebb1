//! The engine driven by fakes ([`crate::testing`]) on tokio's paused clock:
//! the capacity invariant under random durations and failures, the
//! sliding window, canary, failure budget, Ctrl-C, the maintenance window
//! and resuming from every phase. Each runs in milliseconds.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use farm_inventory::{OnFailure, Strategy as Scheduling};
use farm_proto::domain::{NodeOutcome, OperationKind, Phase};
use proptest::prelude::*;
use tokio::time::Instant;

use super::engine::Run;
use super::reconcile::ResumePoint;
use crate::contract::{RunRequest, RunSettings};
use crate::operator::{AssumeYes, Operator};
use crate::report::{NodeReport, RunReport, Silent};
use crate::testing::{fake_farm, Behaviour, FakeClock, FakeFarm, What};
use crate::window::WindowGuard;

fn settings(ff: &FakeFarm) -> RunSettings {
    RunSettings::resolve(&ff.farm.inventory, &RunRequest::new(OperationKind::Recycle))
        .expect("settings")
}

fn nodes(n: usize) -> Vec<Behaviour> {
    (0..n).map(|_| Behaviour::default()).collect()
}

async fn run(ff: &FakeFarm, s: &RunSettings) -> RunReport {
    Run::new("r1", &ff.farm, s, &Silent, &AssumeYes)
        .unwrap()
        .execute()
        .await
}

fn outcomes(r: &RunReport) -> Vec<NodeOutcome> {
    r.nodes.iter().map(|n| n.outcome).collect()
}

use NodeOutcome::{Failed, Skipped, Succeeded};

/// Answers the canary question with `go_on`, counting the questions.
struct Canary {
    go_on: bool,
    asked: AtomicU32,
}

#[async_trait]
impl Operator for Canary {
    async fn confirm_run(&self, _: &str) -> bool {
        true
    }
    async fn confirm_canary(&self, _: &NodeReport) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.go_on
    }
}

#[tokio::test(start_paused = true)]
async fn every_node_is_drained_operated_returned_in_order() {
    let ff = fake_farm(nodes(3), "");
    let report = run(&ff, &settings(&ff)).await;
    assert!(report.succeeded(), "{report:#?}");
    for n in &ff.nodes {
        assert_eq!(
            ff.log.of(&n.name),
            [
                What::Drained,
                What::OperateStart,
                What::OperateEnd,
                What::Returned
            ]
        );
    }
    // One at a time: web02 drained after web01 returned.
    let all = ff.log.all();
    let back = all
        .iter()
        .position(|h| h.node == "web01" && h.what == What::Returned);
    let next = all
        .iter()
        .position(|h| h.node == "web02" && h.what == What::Drained);
    assert!(back < next, "{all:#?}");
    assert_eq!(ff.log.max_out(0), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dump_is_taken_out_of_rotation_before_the_recycle_of_the_pools_it_names() {
    let ff = fake_farm(nodes(2), "");
    let mut req = RunRequest::new(OperationKind::Recycle);
    req.nodes = vec!["web02".into()];
    req.diagnose = true;
    req.dump = true;
    req.node_pools = BTreeMap::from([("web02".to_string(), vec!["Shop".to_string()])]);
    let s = RunSettings::resolve(&ff.farm.inventory, &req).unwrap();
    let report = run(&ff, &s).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(
        ff.log.of("web02"),
        [
            What::Drained,
            What::Dumped,
            What::OperateStart,
            What::OperateEnd,
            What::Returned
        ]
    );
    assert!(ff.log.of("web01").is_empty());
    let dumps = &report.nodes[0].dumps;
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0].pool, "Shop");
    assert!(
        dumps[0].dumps[0].file.contains("r1.web02.dump"),
        "{dumps:?}"
    );
    // The worker dumped is the one the recycle then replaced.
    assert_eq!(report.nodes[0].pids_before["Shop"], [dumps[0].dumps[0].pid]);
    // Without `dump`, no dump is asked.
    let ff = fake_farm(nodes(1), "");
    let report = run(&ff, &settings(&ff)).await;
    assert!(report.nodes[0].dumps.is_empty());
    assert!(!ff.log.of("web01").contains(&What::Dumped));
}

#[tokio::test(start_paused = true)]
async fn a_slow_node_does_not_hold_up_the_window_but_holds_up_a_batch() {
    // 6 nodes, 2 at a time; web01 takes 10 s, the others 1 s.
    let build = || {
        let mut b = nodes(6);
        b[0].operate_time = Duration::from_secs(10);
        for x in &mut b[1..] {
            x.operate_time = Duration::from_secs(1);
        }
        fake_farm(b, "rollout: {max_unavailable: 2}\n")
    };
    let ff = build();
    let t = Instant::now();
    let report = run(&ff, &settings(&ff)).await;
    let window = t.elapsed();
    assert!(report.succeeded());
    // web02..web06 went through the other slot while web01 worked.
    assert!(window < Duration::from_secs(11), "window: {window:?}");
    assert_eq!(ff.log.max_out(0), 2);

    let ff = build();
    let mut s = settings(&ff);
    s.strategy = Scheduling::Batch;
    let t = Instant::now();
    run(&ff, &s).await;
    let batch = t.elapsed();
    assert!(batch > Duration::from_secs(12), "batch: {batch:?}");
}

#[tokio::test(start_paused = true)]
async fn a_ramp_grows_after_successes() {
    let ff = fake_farm(nodes(8), "rollout: {max_unavailable: [1, 2, 4]}\n");
    let report = run(&ff, &settings(&ff)).await;
    assert!(report.succeeded());
    // The first node alone: nothing else drained before it was back.
    assert_eq!(ff.log.drained_before_first_return(), 1);
    assert_eq!(ff.log.max_out(0), 4);
}

/// A canary run over 4 nodes, 2 at a time, with the operator answering
/// `go_on`; the farm, the report and how often the question came.
async fn canary_run(go_on: bool) -> (FakeFarm, RunReport, u32) {
    let ff = fake_farm(nodes(4), "rollout: {max_unavailable: 2}\n");
    let mut s = settings(&ff);
    s.canary = true;
    let operator = Canary {
        go_on,
        asked: AtomicU32::new(0),
    };
    let report = Run::new("r1", &ff.farm, &s, &Silent, &operator)
        .unwrap()
        .execute()
        .await;
    let asked = operator.asked.load(Ordering::SeqCst);
    (ff, report, asked)
}

#[tokio::test(start_paused = true)]
async fn the_canary_goes_alone_and_a_no_stops_the_run() {
    let (_, report, asked) = canary_run(false).await;
    assert_eq!(asked, 1);
    assert_eq!(outcomes(&report), [Succeeded, Skipped, Skipped, Skipped]);
    assert_eq!(report.outcome, crate::report::RunOutcome::Stopped);
    assert!(report.halted.unwrap().contains("canary web01"));

    let (ff, report, asked) = canary_run(true).await;
    assert!(report.succeeded());
    assert_eq!(asked, 1);
    // Alone until confirmed, then two at a time.
    assert_eq!(ff.log.drained_before_first_return(), 1);
    assert_eq!(ff.log.max_out(0), 2);
}

#[tokio::test(start_paused = true)]
async fn beyond_the_failure_budget_the_run_halts_and_leaves_the_failed_node_out() {
    let mut b = nodes(5);
    b[1].never_healthy = true;
    let ff = fake_farm(b, "");
    let report = run(&ff, &settings(&ff)).await;
    assert_eq!(
        outcomes(&report),
        [Succeeded, Failed, Skipped, Skipped, Skipped]
    );
    assert!(!report.nodes[1].in_rotation);
    assert!(report.halted.unwrap().contains("max_failures=0"));
    assert!(ff.log.of("web03").is_empty(), "web03 was touched");
}

#[tokio::test(start_paused = true)]
async fn within_the_budget_or_with_continue_the_run_goes_around_the_failed_node() {
    for (budget, on_failure) in [(1, OnFailure::Halt), (0, OnFailure::Continue)] {
        // web02's recycle fails while web01 is still at work.
        let mut b = nodes(5);
        b[1].operate_fails = true;
        let ff = fake_farm(b, "rollout: {max_unavailable: 2}\n");
        let mut s = settings(&ff);
        s.max_failures = budget;
        s.on_failure = on_failure;
        let report = run(&ff, &s).await;
        assert_eq!(
            outcomes(&report),
            [Succeeded, Failed, Succeeded, Succeeded, Succeeded],
            "{on_failure:?}"
        );
        assert!(!report.succeeded());
        // web02 stayed out, so only one more node at a time after it.
        assert_eq!(ff.log.max_out(0), 2, "{on_failure:?}");
        let all = ff.log.all();
        let failed_at = all
            .iter()
            .position(|h| h.node == "web02" && h.what == What::OperateEnd)
            .unwrap();
        // From then on one slot is taken by the failed node.
        let mut out = 1;
        for h in &all[failed_at..] {
            match h.what {
                What::Drained => out += 1,
                What::Returned => out -= 1,
                _ => {}
            }
            assert!(out <= 2, "{on_failure:?}: {all:#?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_stop_finishes_the_nodes_at_work_and_starts_no_other() {
    let ff = fake_farm(nodes(6), "rollout: {max_unavailable: 2}\n");
    let s = settings(&ff);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run = Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .stop(rx);
    let stopper = async {
        // Stop while the first two are being operated on.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_replace(true);
    };
    let (report, ()) = tokio::join!(run.execute(), stopper);
    assert_eq!(
        outcomes(&report),
        [Succeeded, Succeeded, Skipped, Skipped, Skipped, Skipped]
    );
    assert_eq!(report.outcome, crate::report::RunOutcome::Stopped);
    assert!(report.halted.unwrap().contains("stopped by the operator"));
    assert!(report.nodes.iter().all(|n| n.in_rotation));
    assert_eq!(ff.log.max_out(0), 2);
}

#[tokio::test(start_paused = true)]
async fn no_node_starts_that_would_not_finish_before_the_window_closes() {
    // Each node takes ~1 s of operation; estimate 20 s per node; the
    // window closes 50 s after the start: two nodes fit.
    let mut b = nodes(4);
    for x in &mut b {
        x.operate_time = Duration::from_secs(20);
    }
    let ff = fake_farm(b, "");
    let s = settings(&ff);
    let guard = WindowGuard {
        window: farm_inventory::Window::parse("02:00-03:00 UTC").unwrap(),
        clock: FakeClock::starting("2026-11-21T02:59:10Z"),
        per_node: Duration::from_secs(20),
    };
    let report = Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .window(Some(guard))
        .execute()
        .await;
    assert_eq!(outcomes(&report), [Succeeded, Succeeded, Skipped, Skipped]);
    let halted = report.halted.unwrap();
    assert!(
        halted.contains("closes in") && halted.contains("not started"),
        "{halted}"
    );
}

#[tokio::test(start_paused = true)]
async fn nodes_out_before_the_run_count_against_capacity() {
    // 5 nodes, web05 down before the run and not part of it; min_healthy
    // 3 and max_unavailable 3: only one of ours may go at a time.
    let mut b = nodes(5);
    b[4].out_from_start = true;
    let ff = fake_farm(b, "rollout: {max_unavailable: 3, min_healthy: 3}\n");
    let mut s = settings(&ff);
    s.nodes.retain(|n| n != "web05");
    let report = Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .out_before(1)
        .execute()
        .await;
    assert!(report.succeeded());
    assert_eq!(ff.log.max_out(1), 2, "1 down + 1 of ours");
    // Two down: nothing may start, and the report says why.
    let ff = fake_farm(nodes(5), "rollout: {max_unavailable: 3, min_healthy: 3}\n");
    let report = Run::new("r1", &ff.farm, &settings(&ff), &Silent, &AssumeYes)
        .unwrap()
        .out_before(2)
        .execute()
        .await;
    assert!(outcomes(&report).iter().all(|o| *o == Skipped));
    assert!(report.halted.unwrap().contains("min_healthy=3"));
    assert!(ff.log.all().is_empty());
}

/// Resumes a one-node run whose node was in `phase`, with the PIDs the
/// journal recorded entering `operating`.
async fn resume_from(ff: &FakeFarm, phase: Phase, pids: Option<Vec<u32>>) -> RunReport {
    let mut s = settings(ff);
    s.nodes = vec!["web01".into()];
    let point = ResumePoint {
        failed_step: None,
        attempt: 1,
        boot_before: None,
        phase,
        pids: pids.map(|p| BTreeMap::from([("Shop".to_string(), p)])),
        pids_after: None,
        phase_ms: BTreeMap::new(),
        detail: None,
    };
    if phase.is_mid_way() {
        ff.nodes[0].set_lb(crate::lb::LbState::Draining);
    }
    Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .resuming(HashMap::from([(0, point)]), 0)
        .execute()
        .await
}

#[tokio::test(start_paused = true)]
async fn resume_repeats_only_the_phase_it_stopped_in() {
    use What::*;
    let before = || fake_farm(nodes(1), "").nodes[0].pids();
    let cases: Vec<(Phase, Option<Vec<u32>>, Vec<What>)> = vec![
        (
            Phase::Draining,
            None,
            vec![OperateStart, OperateEnd, Returned],
        ),
        (
            Phase::Quiescing,
            None,
            vec![OperateStart, OperateEnd, Returned],
        ),
        // Operating, and the PIDs show it had not happened: asked again.
        (
            Phase::Operating,
            Some(before()),
            vec![OperateStart, OperateEnd, Returned],
        ),
        (Phase::Verifying, None, vec![Returned]),
        (Phase::Returning, None, vec![Returned]),
        (Phase::Done, None, vec![]),
        (Phase::Failed, None, vec![]),
        (
            Phase::Pending,
            None,
            vec![Drained, OperateStart, OperateEnd, Returned],
        ),
    ];
    for (phase, pids, expected) in cases {
        let ff = fake_farm(nodes(1), "");
        let report = resume_from(&ff, phase, pids).await;
        assert_eq!(ff.log.of("web01"), expected, "resumed at {phase}");
        let want = if phase == Phase::Failed {
            Failed
        } else {
            Succeeded
        };
        assert_eq!(outcomes(&report), [want], "resumed at {phase}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_operation_that_already_happened_is_not_asked_for_again() {
    let ff = fake_farm(nodes(1), "");
    // The journal recorded PIDs that the node no longer runs.
    let report = resume_from(&ff, Phase::Operating, Some(vec![1])).await;
    assert!(report.succeeded());
    assert_eq!(ff.log.of("web01"), [What::Returned]);
    assert_eq!(ff.log.count(What::OperateStart), 0);
}

#[tokio::test(start_paused = true)]
async fn an_operation_asked_again_under_its_id_is_answered_not_repeated() {
    let ff = fake_farm(nodes(1), "");
    let mut s = settings(&ff);
    s.nodes = vec!["web01".into()];
    // The first controller's run got as far as the operation.
    run(&ff, &s).await;
    // The journal says operating but holds no PIDs (the agent did not
    // answer Status then): the agent's record of the operation id says
    // it ran, and its result is taken from there.
    let report = resume_from(&ff, Phase::Operating, None).await;
    assert!(report.succeeded());
    assert_eq!(ff.log.count(What::OperateStart), 1, "operated once in all");
    assert_eq!(ff.log.count(What::Replayed), 1);
}

/// One random node of the property test.
fn behaviour() -> impl Strategy<Value = Behaviour> {
    (
        0u64..200,
        0u64..200,
        1u64..800,
        0u64..300,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(sessions, quiesce, operate, warm, fails, never, out)| Behaviour {
                sessions_time: Duration::from_millis(sessions),
                quiesce_time: Duration::from_millis(quiesce),
                operate_time: Duration::from_millis(operate),
                warm_time: Duration::from_millis(warm),
                operate_fails: fails,
                never_healthy: never,
                out_from_start: out,
                ..Behaviour::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the durations and failures, the run never has more nodes
    /// out of rotation than max_unavailable nor fewer serving than
    /// min_healthy — counting nodes out from the start and failed nodes
    /// left out — never operates a node twice, and leaves every node it
    /// did not fail in rotation.
    #[test]
    fn capacity_is_never_exceeded(
        behaviours in prop::collection::vec(behaviour(), 3..12),
        ramp in prop::collection::vec(1usize..4, 1..3),
        min_frac in 0usize..=100,
        max_failures in 0u32..3,
        go_on in any::<bool>(),
        batch in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let n = behaviours.len();
            let out_from_start = behaviours.iter().filter(|b| b.out_from_start).count();
            let ff = fake_farm(behaviours.clone(), "");
            let mut s = settings(&ff);
            s.timeouts.healthy = Duration::from_secs(1);
            s.max_unavailable_steps = ramp.iter().map(|&x| x.min(n)).collect();
            s.min_healthy = n * min_frac / 100;
            s.max_failures = max_failures;
            s.on_failure = if go_on { OnFailure::Continue } else { OnFailure::Halt };
            s.strategy = if batch { Scheduling::Batch } else { Scheduling::Window };
            s.nodes = ff.nodes.iter().zip(&behaviours)
                .filter(|(_, b)| !b.out_from_start)
                .map(|(f, _)| f.name.clone())
                .collect();
            let report = Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
                .unwrap()
                .out_before(out_from_start)
                .execute()
                .await;
            let limit = *s.max_unavailable_steps.iter().max().unwrap();
            let mut out = out_from_start;
            for h in ff.log.all() {
                match h.what {
                    What::Drained => out += 1,
                    What::Returned => out -= 1,
                    _ => {}
                }
                if h.what == What::Drained {
                    prop_assert!(out <= limit, "{out} out, limit {limit}: {:#?}", ff.log.all());
                    prop_assert!(n - out >= s.min_healthy, "{out} out of {n}, min {}", s.min_healthy);
                }
            }
            for node in &ff.nodes {
                prop_assert!(ff.log.of(&node.name).iter().filter(|w| **w == What::OperateStart).count() <= 1);
            }
            for r in &report.nodes {
                if r.outcome != Failed {
                    prop_assert!(r.in_rotation, "{r:?}");
                }
            }
            Ok(())
        })?;
    }
}

/// A deploy of 2.0.0 to every node of `ff`.
fn deploy(ff: &FakeFarm, package: bool) -> RunSettings {
    let mut s = settings(ff);
    s.operation = OperationKind::Deploy;
    s.deploy = Some(crate::contract::DeploySettings {
        site: "shop".into(),
        version: "2.0.0".into(),
        package: package.then(|| crate::agent::Package {
            path: "/nowhere/shop-2.0.0.zip".into(),
            sha256: "ab".repeat(32),
            size: 1000,
        }),
        hooks: vec![],
        version_path: "/version.txt".into(),
        version_expect: "2.0.0".into(),
        staging_concurrency: 2,
    });
    s
}

fn versions(r: &RunReport) -> Vec<Option<&str>> {
    r.nodes.iter().map(|n| n.version.as_deref()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_deploy_stages_ahead_and_switches_every_node() {
    let ff = fake_farm(nodes(4), "");
    let s = deploy(&ff, true);
    let report = run(&ff, &s).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(versions(&report), [Some("2.0.0"); 4]);
    for n in &ff.nodes {
        assert_eq!(
            ff.log.of(&n.name),
            [
                What::Uploaded,
                What::Drained,
                What::Switched,
                What::OperateStart,
                What::OperateEnd,
                What::Returned
            ]
        );
    }
    // Staged while the node before was still out: transfer time is not
    // out-of-rotation time.
    let all = ff.log.all();
    let web02_up = all
        .iter()
        .position(|h| h.node == "web02" && h.what == What::Uploaded)
        .unwrap();
    let web01_back = all
        .iter()
        .position(|h| h.node == "web01" && h.what == What::Returned)
        .unwrap();
    assert!(web02_up < web01_back, "{all:#?}");
    assert!(report
        .nodes
        .iter()
        .all(|n| n.phase_ms.contains_key("staging")));
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_release_cannot_be_staged_is_never_drained() {
    let mut b = nodes(4);
    b[1].stage_fails = true;
    let ff = fake_farm(b, "");
    let report = run(&ff, &deploy(&ff, true)).await;
    assert_eq!(outcomes(&report), [Succeeded, Failed, Skipped, Skipped]);
    let web02 = &report.nodes[1];
    assert_eq!(web02.failed_step, Some(crate::machine::FailedStep::Stage));
    assert!(web02.in_rotation);
    assert!(web02.error.as_deref().unwrap().contains("free disk"));
    assert!(!ff.log.of("web02").contains(&What::Drained));
    assert!(!ff.log.of("web03").contains(&What::Drained));
}

#[tokio::test(start_paused = true)]
async fn an_unproven_version_is_switched_back_and_the_node_returned() {
    let mut b = nodes(3);
    b[1].bad_version = true;
    let ff = fake_farm(b, "rollout: {healthy_timeout: 2s}\n");
    let report = run(&ff, &deploy(&ff, true)).await;
    assert_eq!(outcomes(&report), [Succeeded, Failed, Skipped]);
    assert_eq!(versions(&report), [Some("2.0.0"), Some("1.0.0"), None]);
    let web02 = &report.nodes[1];
    assert!(web02.in_rotation, "back in rotation on its old release");
    assert!(
        web02.error.as_deref().unwrap().contains("switched back"),
        "{web02:?}"
    );
    assert_eq!(
        ff.log.of("web02"),
        [
            What::Uploaded,
            What::Drained,
            What::Switched,
            What::OperateStart,
            What::OperateEnd,
            What::Switched,
            What::OperateStart,
            What::OperateEnd,
            What::Returned
        ]
    );
    assert_eq!(ff.nodes[1].serving(), "1.0.0");
}

#[tokio::test(start_paused = true)]
async fn a_rollback_switches_without_uploading() {
    let ff = fake_farm(nodes(3), "");
    // Every node on 2.0.0, with 1.0.0 kept.
    run(&ff, &deploy(&ff, true)).await;
    let mut s = deploy(&ff, false);
    s.operation = OperationKind::Rollback;
    let d = s.deploy.as_mut().unwrap();
    d.version = "1.0.0".into();
    d.version_expect = "1.0.0".into();
    let uploads = ff.log.count(What::Uploaded);
    let report = run(&ff, &s).await;
    assert!(report.succeeded(), "{report:#?}");
    assert_eq!(versions(&report), [Some("1.0.0"); 3]);
    assert_eq!(ff.log.count(What::Uploaded), uploads, "nothing uploaded");
}

#[tokio::test(start_paused = true)]
async fn a_deploy_resumed_mid_switch_or_mid_revert_switches_once() {
    // Killed after the switch was asked for: asked again, the agent
    // answers it is already there.
    let ff = fake_farm(nodes(1), "");
    let mut s = deploy(&ff, true);
    s.nodes = vec!["web01".into()];
    run(&ff, &s).await;
    let switches = ff.log.count(What::Switched);
    let point = ResumePoint {
        failed_step: None,
        attempt: 1,
        boot_before: None,
        phase: Phase::Switching,
        pids: None,
        pids_after: None,
        phase_ms: BTreeMap::new(),
        detail: None,
    };
    let report = Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .resuming(HashMap::from([(0, point)]), 0)
        .execute()
        .await;
    assert!(report.succeeded());
    assert_eq!(
        ff.log.count(What::Switched),
        switches,
        "switched once in all"
    );
    assert_eq!(ff.log.count(What::Uploaded), 1, "uploaded once in all");
    // Killed while reverting after the switch back: reverting again does
    // not switch forward or back a second time.
    ff.nodes[0].set(|b| b.bad_version = true);
    let report = Run::new("r2", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .resuming(
            HashMap::from([(
                0,
                ResumePoint {
                    failed_step: None,
                    attempt: 1,
                    boot_before: None,
                    phase: Phase::Reverting,
                    pids: None,
                    pids_after: None,
                    phase_ms: BTreeMap::new(),
                    detail: Some("GET /version.txt did not answer 2.0.0".into()),
                },
            )]),
            0,
        )
        .execute()
        .await;
    assert_eq!(outcomes(&report), [Failed]);
    assert_eq!(ff.nodes[0].serving(), "1.0.0");
    let again = Run::new("r3", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .resuming(
            HashMap::from([(
                0,
                ResumePoint {
                    failed_step: None,
                    attempt: 1,
                    boot_before: None,
                    phase: Phase::Reverting,
                    pids: None,
                    pids_after: None,
                    phase_ms: BTreeMap::new(),
                    detail: None,
                },
            )]),
            0,
        )
        .execute()
        .await;
    assert_eq!(outcomes(&again), [Failed]);
    assert_eq!(ff.nodes[0].serving(), "1.0.0", "a second revert is a no-op");
}

#[tokio::test(start_paused = true)]
async fn a_drain_the_load_balancer_forgets_is_made_again_while_the_node_is_out() {
    let mut b = nodes(2);
    b[0].operate_time = Duration::from_secs(3);
    b[0].lb_forgets_drain_after = Some(Duration::from_secs(1));
    let ff = fake_farm(b, "");
    let report = run(&ff, &settings(&ff)).await;
    assert!(report.succeeded(), "{report:#?}");
    let web01 = ff.log.of("web01");
    assert_eq!(
        web01,
        [
            What::Drained,
            What::OperateStart,
            What::Forgot,
            What::Drained,
            What::OperateEnd,
            What::Returned
        ]
    );
    // Put back at 1 s, out again within the watch's half second.
    let all = ff.log.all();
    let at = |what: What, nth: usize| {
        all.iter()
            .filter(|h| h.node == "web01" && h.what == what)
            .nth(nth)
            .map(|h| h.at)
            .unwrap()
    };
    assert!(at(What::Drained, 1) - at(What::Forgot, 0) <= Duration::from_millis(600));
    assert_eq!(report.nodes[0].lb_redrains, 1);
    assert_eq!(report.nodes[1].lb_redrains, 0);
}

/// The fake farm with the real `nlb` or `arr` driver in front: the nodes'
/// own agents (NLB) or the first node's agent standing in for the ARR
/// server's.
fn through_agents(kind: &str) -> crate::testing::FakeFarm {
    let mut ff = fake_farm(nodes(3), "");
    let agents: std::collections::HashMap<String, std::sync::Arc<dyn crate::agent::AgentApi>> = ff
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.clone() as std::sync::Arc<dyn crate::agent::AgentApi>,
            )
        })
        .collect();
    ff.farm.lb = match kind {
        "nlb" => std::sync::Arc::new(crate::lb::Nlb::new(agents, Duration::from_secs(60))),
        _ => {
            let cfg = farm_inventory::Arr {
                agent: "arr01:7443".into(),
                farm: "shop".into(),
                drain_mode: farm_inventory::ArrDrainMode::GracefulStop,
            };
            std::sync::Arc::new(crate::lb::Arr::new(&cfg, ff.nodes[0].clone()))
        }
    };
    ff
}

#[tokio::test(start_paused = true)]
async fn nlb_nodes_are_stopped_with_drain_operated_and_converged_again_one_by_one() {
    let ff = through_agents("nlb");
    let report = run(&ff, &settings(&ff)).await;
    assert!(report.succeeded(), "{report:#?}");
    for n in &ff.nodes {
        assert_eq!(
            ff.log.of(&n.name),
            [
                What::Drained,
                What::OperateStart,
                What::OperateEnd,
                What::Returned
            ]
        );
    }
    assert_eq!(ff.log.max_out(0), 1);
}

#[tokio::test(start_paused = true)]
async fn arr_servers_are_drained_until_no_request_is_left() {
    let ff = through_agents("arr");
    let report = run(&ff, &settings(&ff)).await;
    assert!(report.succeeded(), "{report:#?}");
    // The ARR server (web01's fake agent) saw each drain and return.
    let arr = ff.log.of("web01");
    assert_eq!(arr.iter().filter(|w| **w == What::Drained).count(), 3);
    assert_eq!(arr.iter().filter(|w| **w == What::Returned).count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_step_without_progress_fails_at_the_progress_deadline() {
    // web01's recycle never ends (the agent holds the call for an hour);
    // the operation's own bound is longer still.
    let mut b = nodes(3);
    b[0].operate_time = Duration::from_secs(3_600);
    let ff = fake_farm(
        b,
        "rollout: {operation_timeout: 2h, progress_deadline: 30s}\n",
    );
    let s = settings(&ff);
    let started = Instant::now();
    let report = run(&ff, &s).await;
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcomes(&report), [Failed, Skipped, Skipped]);
    let error = report.nodes[0].error.as_deref().unwrap();
    assert!(
        error.contains("no progress in the operation within rollout.progress_deadline (30s)"),
        "{error}"
    );
    assert!(report.halted.is_some());
}

fn analysed(ff: &FakeFarm, stabilize: Option<Duration>) -> RunSettings {
    let mut s = deploy(ff, true);
    s.analysis = Some(crate::contract::AnalysisSettings {
        canaries: 1,
        soak: Duration::from_secs(60),
        interval: Duration::from_secs(20),
        min_requests: 100,
        errors_max_increase: 0.005,
        latency_quantile: farm_inventory::LatencyQuantile::P95,
        latency_max_increase: 0.2,
        on_inconclusive: farm_inventory::OnInconclusive::Fail,
        stabilize,
        canary_weight: None,
    });
    s
}

fn serving(ff: &FakeFarm) -> Vec<String> {
    ff.nodes.iter().map(|n| n.serving()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_ends_its_soak_early_and_is_rolled_back_alone() {
    let b: Vec<Behaviour> = (0..4)
        .map(|_| Behaviour {
            rps: 20,
            new_release_errors: 0.05,
            ..Behaviour::default()
        })
        .collect();
    let ff = fake_farm(b, "");
    let s = analysed(&ff, None);
    let started = Instant::now();
    let report = run(&ff, &s).await;
    let a = report.analysis.as_ref().unwrap();
    assert_eq!(a.verdict, Some(crate::judge::Outcome::Fail), "{a:?}");
    assert_eq!(a.intervals.len(), 1, "the first judgement fails it");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(report.rolled_back, Some(true));
    assert_eq!(serving(&ff), ["1.0.0"; 4]);
    // Only the canary was ever drained (there and back); the others had
    // the release staged ahead, never switched to it.
    for n in ["web02", "web03", "web04"] {
        assert_eq!(ff.log.of(n), [What::Uploaded], "{n}");
    }
    assert!(report.nodes.iter().all(|n| n.in_rotation));
    assert!(!report.succeeded());
}

#[tokio::test(start_paused = true)]
async fn a_release_that_breaks_on_a_later_node_stops_at_its_stabilization() {
    // Only web03 fails on the new release (a node-specific load).
    let b: Vec<Behaviour> = (0..5)
        .map(|i| Behaviour {
            rps: 20,
            new_release_errors: if i == 2 { 0.2 } else { 0.0 },
            ..Behaviour::default()
        })
        .collect();
    let ff = fake_farm(b, "");
    let s = analysed(&ff, Some(Duration::from_secs(30)));
    let report = run(&ff, &s).await;
    let a = report.analysis.as_ref().unwrap();
    assert_eq!(a.verdict, Some(crate::judge::Outcome::Fail), "{a:?}");
    assert!(
        a.reason.starts_with("web03 after its stabilization"),
        "{}",
        a.reason
    );
    assert!(report
        .halted
        .as_deref()
        .unwrap()
        .contains("under more traffic"));
    assert_eq!(report.rolled_back, Some(true));
    assert_eq!(serving(&ff), ["1.0.0"; 5]);
    // web04 and web05 never got it: the stabilization held the slot.
    assert_eq!(ff.log.of("web04"), [What::Uploaded]);
    assert_eq!(ff.log.of("web05"), [What::Uploaded]);
}

#[tokio::test(start_paused = true)]
async fn a_good_release_passes_its_soak_and_every_node_its_stabilization() {
    let b: Vec<Behaviour> = (0..4)
        .map(|_| Behaviour {
            rps: 20,
            ..Behaviour::default()
        })
        .collect();
    let ff = fake_farm(b, "");
    let s = analysed(&ff, Some(Duration::from_secs(10)));
    let report = run(&ff, &s).await;
    assert!(report.succeeded(), "{report:?}");
    let a = report.analysis.as_ref().unwrap();
    assert_eq!(a.verdict, Some(crate::judge::Outcome::Pass));
    assert_eq!(a.intervals.len(), 3, "a judgement every 20s of 60s");
    assert_eq!(report.rolled_back, Some(false));
    assert_eq!(serving(&ff), ["2.0.0"; 4]);
}

/// `resume --skip-failed`: a node that failed before the resume keeps,
/// in the summary, where it failed and the PIDs it ran after its
/// operation (the journal has both).
#[tokio::test(start_paused = true)]
async fn a_skipped_failed_node_keeps_its_failed_step_and_pids_after() {
    let ff = fake_farm(nodes(2), "");
    let s = settings(&ff);
    let failed = ResumePoint {
        failed_step: Some(crate::machine::FailedStep::Verify),
        attempt: 1,
        boot_before: None,
        phase: Phase::Failed,
        pids: Some(BTreeMap::from([("ShopPool".to_string(), vec![10])])),
        pids_after: Some(BTreeMap::from([("ShopPool".to_string(), vec![11])])),
        phase_ms: BTreeMap::from([("operating".to_string(), 1200)]),
        detail: Some("verify: the pool's new worker did not start".into()),
    };
    let report = Run::new("r1", &ff.farm, &s, &Silent, &AssumeYes)
        .unwrap()
        .resuming(HashMap::from([(0, failed)]), 0)
        .failures_accepted(true)
        .execute()
        .await;
    let web01 = &report.nodes[0];
    assert_eq!(web01.outcome, NodeOutcome::Failed);
    assert_eq!(web01.failed_step, Some(crate::machine::FailedStep::Verify));
    assert_eq!(web01.pids_after.get("ShopPool"), Some(&vec![11]));
    assert_eq!(report.nodes[1].outcome, NodeOutcome::Succeeded);
}
