//! One behaviour suite, two backends: the simulator directly, and the
//! Windows command backend through a runner that plays IIS. Both must give
//! the same outcome for the same situation, so the simulator cannot drift
//! from what the real backend does.
use std::sync::Arc;
use std::time::Duration;

use farm_agent::iis::{Iis, PoolState, ServiceState};
use farm_agent::iiscmd::config::{Timeouts, Tools};
use farm_agent::iiscmd::fake::{FakeFaults, FakeIis};
use farm_agent::iiscmd::CommandBackend;
use farm_agent::ops::{self, OpResult, OpsConfig, ProgressSink};
use farm_agent::sim::{config, Simulator};

/// A situation both backends are put in.
#[derive(Clone, Copy, Default)]
struct Situation {
    stop_hangs: bool,
    start_fails: u32,
    stopped_pool: bool,
}

async fn sim(s: Situation) -> Box<dyn Iis> {
    let text = format!(
        "node: b\ntimings:\n  iis_stop: 20ms\n  iis_start: 20ms\nsites:\n  - name: shop\n    app_pool: Shop\napp_pools:\n  - name: Shop\n    startup: 20ms\n    warmup: 0ms\n  - name: Off\n    state: {}\nfaults:\n  stop_hangs: {}\n  start_fails: {}\n",
        if s.stopped_pool { "stopped" } else { "started" },
        s.stop_hangs,
        s.start_fails
    );
    Box::new(
        Simulator::start(config::parse(&text).unwrap())
            .await
            .unwrap(),
    )
}

fn commands(s: Situation) -> Box<dyn Iis> {
    let faults = FakeFaults {
        stop_hangs: s.stop_hangs,
        start_fails: s.start_fails,
        ..Default::default()
    };
    let fake = FakeIis::new(&["Shop"], faults);
    let fake = Arc::new(if s.stopped_pool {
        fake.with_idle_pool("Off", false)
    } else {
        fake.with_idle_pool("Off", true)
    });
    let tools = Tools::on_path();
    Box::new(CommandBackend::new(
        fake,
        tools,
        Timeouts::default(),
        Vec::new(),
    ))
}

fn cfg() -> OpsConfig {
    OpsConfig {
        verify_timeout: Duration::from_secs(5),
        start_attempts: 3,
        start_retry_delay: Duration::from_millis(5),
        poll_interval: Duration::from_millis(5),
        autostart_grace: Duration::from_millis(50),
        stop_timeout: Duration::from_secs(60),
    }
}

/// What must be the same whichever backend ran.
#[derive(Debug, PartialEq)]
struct Outcome {
    success: bool,
    failed_step: Option<&'static str>,
    services_running: bool,
    pools_replaced: bool,
    pools_started: bool,
}

fn outcome(r: &OpResult) -> Outcome {
    Outcome {
        success: r.success,
        failed_step: r.failed_step.map(|s| s.as_str()),
        services_running: !r.services.is_empty()
            && r.services.iter().all(|s| s.state == ServiceState::Running),
        pools_replaced: r.pools.iter().filter(|p| !p.had_no_worker).all(|p| {
            !p.pids_after.is_empty() && p.pids_after.iter().all(|x| !p.pids_before.contains(x))
        }),
        pools_started: r.pools.iter().all(|p| p.state_after == PoolState::Started),
    }
}

/// A procedure run on a backend.
type Op = std::pin::Pin<Box<dyn std::future::Future<Output = OpResult>>>;

async fn both(s: Situation, op: impl Fn(Box<dyn Iis>) -> Op) -> Outcome {
    let a = outcome(&op(sim(s).await).await);
    let b = outcome(&op(commands(s)).await);
    assert_eq!(a, b, "the simulator and the command backend disagree");
    a
}

fn recycle(pools: &'static [&'static str]) -> impl Fn(Box<dyn Iis>) -> Op {
    move |iis| {
        Box::pin(async move {
            let pools: Vec<String> = pools.iter().map(|p| p.to_string()).collect();
            ops::recycle(&*iis, &pools, false, &cfg(), &ProgressSink::discard()).await
        })
    }
}

fn reset() -> impl Fn(Box<dyn Iis>) -> Op {
    |iis| {
        Box::pin(async move {
            ops::reset(
                &*iis,
                Duration::from_secs(1),
                &cfg(),
                &ProgressSink::discard(),
            )
            .await
        })
    }
}

#[tokio::test]
async fn recycle_replaces_the_workers() {
    let o = both(Situation::default(), recycle(&["Shop"])).await;
    assert!(o.success && o.pools_replaced && o.pools_started, "{o:?}");
}

#[tokio::test]
async fn recycle_of_a_stopped_pool_fails_before_acting() {
    let o = both(
        Situation {
            stopped_pool: true,
            ..Default::default()
        },
        recycle(&["Shop", "Off"]),
    )
    .await;
    assert_eq!(o.failed_step, Some("recycle"));
}

#[tokio::test]
async fn recycle_of_an_unknown_pool_fails_at_resolve() {
    let o = both(Situation::default(), recycle(&["Nope"])).await;
    assert_eq!(o.failed_step, Some("resolve"));
}

#[tokio::test]
async fn reset_brings_everything_back() {
    let o = both(Situation::default(), reset()).await;
    assert!(o.success && o.services_running && o.pools_started, "{o:?}");
}

#[tokio::test]
async fn reset_with_a_hanging_stop_is_forced_and_succeeds() {
    let o = both(
        Situation {
            stop_hangs: true,
            ..Default::default()
        },
        reset(),
    )
    .await;
    assert!(o.success && o.services_running, "{o:?}");
}

#[tokio::test]
async fn reset_survives_two_failed_starts() {
    let o = both(
        Situation {
            start_fails: 2,
            ..Default::default()
        },
        reset(),
    )
    .await;
    assert!(o.success && o.services_running, "{o:?}");
}

#[tokio::test]
async fn reset_whose_start_never_works_fails_at_start_with_iis_stopped() {
    let o = both(
        Situation {
            start_fails: 9,
            ..Default::default()
        },
        reset(),
    )
    .await;
    assert_eq!(o.failed_step, Some("start"));
    assert!(!o.success && !o.services_running, "{o:?}");
}
