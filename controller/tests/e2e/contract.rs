//! A resumed run keeps the limits of the run it continues: real agent
//! processes, a controller killed with SIGKILL mid-run, `farmctl resume`,
//! and the agents' own event logs as the witness.

use std::time::Duration;

use crate::common::*;
use farm_proto::domain::NodeOutcome;
use farmctl::commands::Settings;
use farmctl::farm::Transport;
use farmctl::operator::AssumeYes;
use farmctl::report::Silent;
use farmctl::sandbox::SandboxSpec;

/// 8 nodes whose inventory allows half of them out at once.
fn eight(min_healthy: &str) -> SandboxSpec {
    SandboxSpec {
        nodes: 8,
        lb_kind: "health-file".into(),
        detection: Duration::from_millis(100),
        max_unavailable: "\"50%\"".into(),
        min_healthy: min_healthy.into(),
        pool_yaml: "    startup: 100ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    }
}

fn recycles(farm: &Farm, node: &str) -> usize {
    events(farm)
        .iter()
        .filter(|e| e.node == node && e.event == "recycle")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_its_max_unavailable() {
    let farm = farm(eight("1")).await;
    let state = farm.sandbox.dir.join("state");
    let inv = inventory(&farm);
    // Killed while web03 is mid-way (6 phase lines per node).
    kill_after(
        &state,
        &["recycle", "-i", &inv, "--yes", "--max-unavailable", "1"],
        14,
    )
    .await;
    let out = farmctl(&[
        "--state-dir",
        &state.display().to_string(),
        "resume",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("max_unavailable 1"),
        "{}",
        stderr(&out)
    );
    let ev = events(&farm);
    assert_eq!(max_drained_at_once(&ev), 1, "{ev:#?}");
    for i in 1..=8 {
        assert_eq!(recycles(&farm, &format!("web{i:02}")), 1, "web{i:02}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_counts_a_node_drained_by_hand() {
    // min_healthy 6 of 8, web08 drained by hand: one more node out at most,
    // though the run allows 3 at once.
    let farm = farm(eight("6")).await;
    let state = farm.sandbox.dir.join("state");
    let inv = inventory(&farm);
    let out = farmctl(&["drain", "-i", &inv, "web08"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let nodes = "web01,web02,web03,web04,web05,web06,web07";
    kill_after(
        &state,
        &[
            "recycle",
            "-i",
            &inv,
            "--yes",
            "--max-unavailable",
            "3",
            "--nodes",
            nodes,
        ],
        9,
    )
    .await;
    let out = farmctl(&["--state-dir", &state.display().to_string(), "resume"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ev = events(&farm);
    assert_eq!(max_drained_at_once(&ev), 2, "web08 and one other: {ev:#?}");
    for i in 1..=7 {
        assert_eq!(recycles(&farm, &format!("web{i:02}")), 1, "web{i:02}");
    }
    assert_eq!(recycles(&farm, "web08"), 0);
}

/// `HH:MM` of now plus `hours` (UTC).
fn hh_mm(hours: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(hours))
        .unwrap();
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%H:%M")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_the_window_finishes_the_node_caught_mid_way_and_starts_no_other() {
    let farm = farm(eight("1")).await;
    let state = farm.sandbox.dir.join("state");
    let inv = inventory(&farm);
    let window = format!("{}-{} UTC", hh_mm(-1), hh_mm(2));
    // Killed while web02 is mid-way (draining, quiescing recorded).
    kill_after(
        &state,
        &[
            "recycle",
            "-i",
            &inv,
            "--yes",
            "--max-unavailable",
            "1",
            "--window",
            &window,
        ],
        8,
    )
    .await;
    assert_eq!(recycles(&farm, "web03"), 0);
    // The resume comes three hours later: the window has closed.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(3))
        .unwrap();
    struct At(jiff::Timestamp);
    impl farmctl::window::Clock for At {
        fn now(&self) -> jiff::Timestamp {
            self.0
        }
    }
    let settings = Settings {
        quiet: true,
        insecure: false,
        state_dir: Some(state.clone()),
        state_store: None,
        clock: std::sync::Arc::new(At(later)),
        reporter: std::sync::Arc::new(Silent),
    };
    let loaded = farmctl::journal::find(&state, None).unwrap();
    let env = settings.run_env(&AssumeYes, None);
    let report = farmctl::run::resume(loaded, None, Transport::Tls, &env)
        .await
        .unwrap();
    let outcomes: Vec<NodeOutcome> = report.nodes.iter().map(|n| n.outcome).collect();
    use NodeOutcome::*;
    assert_eq!(
        outcomes,
        [Succeeded, Succeeded, Skipped, Skipped, Skipped, Skipped, Skipped, Skipped]
    );
    let halted = report.halted.unwrap();
    assert!(
        halted.contains("outside the maintenance window"),
        "{halted}"
    );
    assert_eq!(recycles(&farm, "web02"), 1, "finished, once");
    for i in 3..=8 {
        assert_eq!(recycles(&farm, &format!("web{i:02}")), 0, "web{i:02}");
    }
    let st = status(&farm).await;
    assert!((0..8).all(|i| st["nodes"][i]["drained"] == false), "{st:#}");
}
