//! The maintenance window with an injected clock: the run is refused
//! outside it, and a node whose estimated time does not fit in what is
//! left is not started. The clock is read once before the run and once
//! before each node is started.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::common::*;
use farm_proto::domain::{NodeOutcome, OperationKind};
use farmctl::commands::Settings;
use farmctl::exit::{CommandError, ExitStatus};
use farmctl::farm::{Farm, Transport};
use farmctl::operator::AssumeYes;
use farmctl::report::{RunReport, Silent};
use farmctl::run::{self, RunRequest, RunSettings};
use farmctl::sandbox::SandboxSpec;
use farmctl::window::Clock;
use jiff::Timestamp;

/// Hands out the given times in order, then keeps the last one.
struct Scripted(Mutex<VecDeque<Timestamp>>);

impl Clock for Scripted {
    fn now(&self) -> Timestamp {
        let mut q = self.0.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            *q.front().unwrap()
        }
    }
}

fn settings(farm: &crate::common::Farm, times: &[&str]) -> Settings {
    Settings {
        quiet: true,
        insecure: false,
        reporter: Arc::new(Silent),
        state_dir: Some(farm.sandbox.dir.join("state")),
        state_store: None,
        clock: Arc::new(Scripted(Mutex::new(
            times.iter().map(|t| t.parse().unwrap()).collect(),
        ))),
    }
}

/// A recycle of the sandbox farm in the window 02:00-05:00 UTC, with the
/// clock handing out `times`.
async fn recycle(farm: &crate::common::Farm, times: &[&str]) -> Result<RunReport, CommandError> {
    let f = Farm::connect(
        farm_inventory::load(&farm.sandbox.inventory).unwrap(),
        Transport::Tls,
    )
    .unwrap();
    let mut req = RunRequest::new(OperationKind::Recycle);
    req.window = Some("02:00-05:00 UTC".into());
    let run_settings = RunSettings::resolve(&f.inventory, &req).unwrap();
    let s = settings(farm, times);
    let env = s.run_env(&AssumeYes, None);
    run::start(&f, &farm.sandbox.inventory, run_settings, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_nothing_is_touched() {
    let farm = farm(SandboxSpec::default()).await;
    let e = recycle(&farm, &["2026-11-21T06:00:00Z"])
        .await
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(e.status, ExitStatus::Refused);
    assert!(
        e.message
            .contains("outside the maintenance window 02:00-05:00 UTC"),
        "{}",
        e.message
    );
    assert!(events(&farm).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_is_started_that_would_not_finish_in_the_window() {
    let farm = farm(SandboxSpec::default()).await;
    // Before the run, then before each of the four nodes. A node is
    // estimated at 2 minutes (no past runs).
    let report = recycle(
        &farm,
        &[
            "2026-11-21T04:50:00Z",
            "2026-11-21T04:50:00Z",
            "2026-11-21T04:53:00Z",
            "2026-11-21T04:59:00Z",
        ],
    )
    .await
    .unwrap();
    let outcomes: Vec<NodeOutcome> = report.nodes.iter().map(|n| n.outcome).collect();
    use NodeOutcome::*;
    assert_eq!(outcomes, [Succeeded, Succeeded, Skipped, Skipped]);
    let halted = report.halted.unwrap();
    assert!(
        halted.contains("closes in 1m") && halted.contains("not started"),
        "{halted}"
    );
    let st = status(&farm).await;
    assert!((0..4).all(|i| st["nodes"][i]["drained"] == false));
}
