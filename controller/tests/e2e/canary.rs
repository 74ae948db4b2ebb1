//! Canary verdicts end to end: a sandbox farm behind a real HAProxy under
//! a bounded load, a deploy with `--soak` judging the canary on its own IIS
//! log against the nodes still on the old release. A release whose
//! `farm-sim.yaml` fails 5% of its requests is failed and rolled back by
//! itself — only the canary ever served it; a good one passes and reaches
//! every node; a good one with no traffic at all is not promoted.
use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::{faulty_release_package, release_package, SandboxSpec, FIRST_RELEASE};
use farmctl::traffic::Traffic;
use serde_json::Value;

/// The version each node's agent says its site serves.
async fn releases(farm: &Farm) -> Vec<String> {
    let st = status(farm).await;
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["releases"]["shop"].as_str().unwrap_or("-").to_string())
        .collect()
}

/// Switch calls farmctl made on each node, from the agents' audit logs.
fn switches(farm: &Farm) -> Vec<usize> {
    (0..farm.sandbox.nodes.len())
        .map(|i| {
            let path = farm
                .sandbox
                .dir
                .join(format!("web{:02}.audit.jsonl", i + 1));
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["call"] == "Switch")
                .filter(|v| {
                    !v["operation_id"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("sandbox.")
                })
                .count()
        })
        .collect()
}

async fn deploy(inv: &str, package: &std::path::Path, version: &str) -> std::process::Output {
    farmctl(&[
        "deploy",
        "-i",
        inv,
        "--site",
        "shop",
        "--package",
        &package.display().to_string(),
        "--version",
        version,
        "--soak",
        "20s",
        "--yes",
        "--output",
        "json",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_users_is_rolled_back_and_a_good_one_goes_on() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    // The sandbox's inventory judges every 5 s, 50 requests each side.

    // No traffic at all: a good release is not promoted on no data.
    let good = release_package(&farm.sandbox.dir, "2.0.0").unwrap();
    let out = deploy(&inv, &good, "2.0.0").await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["analysis"]["verdict"], "inconclusive", "{r:#}");
    assert!(
        r["analysis"]["reason"]
            .as_str()
            .unwrap()
            .contains("not enough data"),
        "{r:#}"
    );
    assert_eq!(r["rolled_back"], true, "{r:#}");
    assert_eq!(releases(&farm).await, [FIRST_RELEASE; 4]);
    assert_eq!(switches(&farm), [2, 0, 0, 0]);

    let mut load = farm.sandbox.traffic_spec();
    load.workers = 6;
    load.slow_every = 0;
    load.max_duration = Duration::from_secs(240);
    let traffic = Traffic::start(load);

    // 5% of the bad release's requests fail: caught on the canary.
    let bad = faulty_release_package(&farm.sandbox.dir, "2.0.1", "error_rate: 0.05\n").unwrap();
    let out = deploy(&inv, &bad, "2.0.1").await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    let a = &r["analysis"];
    assert_eq!(a["verdict"], "fail", "{r:#}");
    assert_eq!(a["canaries"], serde_json::json!(["web01"]));
    assert_eq!(a["rollback_to"], FIRST_RELEASE);
    let last = a["intervals"].as_array().unwrap().last().unwrap().clone();
    let errors = last["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "error_rate")
        .unwrap()
        .clone();
    assert_eq!(errors["result"], "fail", "{errors:#}");
    assert!(errors["canary"].as_f64().unwrap() > 0.02, "{errors:#}");
    assert_eq!(errors["baseline"].as_f64().unwrap(), 0.0, "{errors:#}");
    // A clear failure ends the soak early.
    assert!(last["elapsed_s"].as_f64().unwrap() < 19.0, "{a:#}");
    assert_eq!(r["rolled_back"], true);
    assert!(r["halted"].as_str().unwrap().contains("canary analysis"));
    for n in r["nodes"].as_array().unwrap() {
        assert_eq!(n["in_rotation"], true, "{n:#}");
    }
    assert_eq!(releases(&farm).await, [FIRST_RELEASE; 4]);
    // Only the canary ever served it (there and back).
    assert_eq!(switches(&farm), [4, 0, 0, 0]);

    // A good release under the same load passes and reaches every node.
    let out = deploy(&inv, &good, "2.0.0").await;
    let report = traffic.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["analysis"]["verdict"], "pass", "{r:#}");
    assert_eq!(r["rolled_back"], false);
    assert_eq!(releases(&farm).await, ["2.0.0"; 4]);
    // The only failed requests were the bad release's injected 500s (on
    // the canary): no drain, switch or rollback cut one.
    assert!(report.requests_sent > 500, "{report:?}");
    assert!(report.requests_failed > 0, "{report:?}");
    assert!(
        report.failures.keys().all(|k| k.contains("500")),
        "{report:?}"
    );
}
