//! The maintenance window with an injected clock: the run is refused
//! outside it, and a node whose estimated time does not fit in what is
//! left is not started. The clock is read once before the run and once
//! before each batch.
mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use common::*;
use farmctl::agent::Operation;
use farmctl::cli::{InventoryArgs, Output, RolloutArgs};
use farmctl::commands::rollout::execute;
use farmctl::commands::Settings;
use farmctl::exit::ExitStatus;
use farmctl::report::Silent;
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

fn settings(farm: &Farm, times: &[&str]) -> Settings {
    Settings {
        quiet: true,
        insecure: false,
        bars: false,
        state_dir: Some(farm.sandbox.dir.join("state")),
        clock: Arc::new(Scripted(Mutex::new(
            times.iter().map(|t| t.parse().unwrap()).collect(),
        ))),
    }
}

fn args(farm: &Farm) -> RolloutArgs {
    RolloutArgs {
        inv: InventoryArgs {
            inventory: farm.sandbox.inventory.clone(),
            output: Output::Json,
        },
        nodes: Vec::new(),
        max_unavailable: None,
        yes: true,
        canary: false,
        window: Some("02:00-05:00 UTC".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_nothing_is_touched() {
    let farm = farm(SandboxSpec::default()).await;
    let inv = farm_inventory::load(&farm.sandbox.inventory).unwrap();
    let s = settings(&farm, &["2026-11-21T06:00:00Z"]);
    let e = execute(&inv, &args(&farm), Operation::Recycle, vec![], &s, &Silent)
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
    let inv = farm_inventory::load(&farm.sandbox.inventory).unwrap();
    // Before the run, then before each of the four one-node batches. A
    // node is estimated at 2 minutes (no past runs).
    let s = settings(
        &farm,
        &[
            "2026-11-21T04:50:00Z",
            "2026-11-21T04:50:00Z",
            "2026-11-21T04:53:00Z",
            "2026-11-21T04:59:00Z",
        ],
    );
    let report = execute(&inv, &args(&farm), Operation::Recycle, vec![], &s, &Silent)
        .await
        .unwrap();
    let outcomes: Vec<&str> = report.nodes.iter().map(|n| n.outcome.as_str()).collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "skipped", "skipped"]);
    let halted = report.halted.unwrap();
    assert!(
        halted.contains("closes in 1m") && halted.contains("not started"),
        "{halted}"
    );
    let st = status(&farm).await;
    assert!((0..4).all(|i| st["nodes"][i]["drained"] == false));
}
