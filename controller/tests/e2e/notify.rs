//! Webhooks: a local receiver gets a run's start, its failed node, the
//! halt and the end, in each webhook's format; a webhook that never
//! answers does not slow the run down, and holds up its end by at most
//! its timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::https::{serve_plain, Resp};
use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use serde_json::Value;

fn spec(nodes: usize) -> SandboxSpec {
    SandboxSpec {
        nodes,
        releases: false,
        healthy_timeout: Duration::from_secs(2),
        pool_yaml: "    startup: 100ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    }
}

fn add_notify(farm: &Farm, yaml: &str) {
    let path = &farm.sandbox.inventory;
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{text}notify:\n{yaml}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_is_told_to_each_webhook_in_its_format() {
    let mut s = spec(3);
    s.sim_extra
        .insert(1, "faults:\n  never_healthy: true\n".into());
    let farm = farm(s).await;
    let posts: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let p = posts.clone();
    let (url, _task) = serve_plain(Arc::new(move |req| {
        p.lock().unwrap().push((req.path.clone(), req.json()));
        Resp::json(200, serde_json::json!({"ok": true}))
    }))
    .await;
    add_notify(
        &farm,
        "  - url_env: FARMCTL_TEST_HOOK\n  - url_env: FARMCTL_TEST_SLACK\n    format: slack\n    events: [finished]\n  - url_env: FARMCTL_TEST_TEAMS\n    format: teams\n    events: [node_failed]\n",
    );
    let hook = format!("{url}/hooks/json");
    let slack = format!("{url}/hooks/slack");
    let teams = format!("{url}/hooks/teams");
    let out = farmctl_env(
        &["-vv", "recycle", "-i", &inventory(&farm), "--yes"],
        &[
            ("FARMCTL_TEST_HOOK", &hook),
            ("FARMCTL_TEST_SLACK", &slack),
            ("FARMCTL_TEST_TEAMS", &teams),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The URLs are secrets: never printed.
    assert!(!stderr(&out).contains("/hooks/"), "{}", stderr(&out));
    let posts = posts.lock().unwrap().clone();
    let json: Vec<&Value> = posts
        .iter()
        .filter(|(p, _)| p == "/hooks/json")
        .map(|(_, b)| b)
        .collect();
    let kinds: Vec<&str> = json.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "node_failed", "halted", "finished"]);
    assert!(json.iter().all(|b| b["farm"] == "demo"
        && b["action"] == "recycle"
        && b["run_id"] == json[0]["run_id"]));
    assert_eq!(json[1]["node"], "web02");
    assert!(json[1]["error"].as_str().unwrap().contains("healthy"));
    assert_eq!(json[3]["outcome"], "failed");
    assert_eq!(json[3]["failed_nodes"], serde_json::json!(["web02"]));
    let slack: Vec<&Value> = posts
        .iter()
        .filter(|(p, _)| p == "/hooks/slack")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(slack.len(), 1);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(
        text.contains("recycle of farm demo") && text.contains("failed: web02"),
        "{text}"
    );
    let teams: Vec<&Value> = posts
        .iter()
        .filter(|(p, _)| p == "/hooks/teams")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0]["@type"], "MessageCard");
    assert!(teams[0]["text"].as_str().unwrap().contains("web02 FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_costs_a_run_at_most_its_timeout() {
    let farm = farm(spec(2)).await;
    let inv = inventory(&farm);
    let timed = |env: Vec<(&'static str, String)>| {
        let inv = inv.clone();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = Instant::now();
            let out =
                farmctl_env(&["recycle", "-i", &inv, "--yes", "--output", "json"], &env).await;
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            (
                t.elapsed(),
                Duration::from_millis(json(&out)["duration_ms"].as_u64().unwrap()),
            )
        }
    };
    let (wall_before, run_before) = timed(vec![]).await;
    // A receiver that takes the connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _sink = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    add_notify(&farm, "  - url_env: FARMCTL_TEST_DEAD\n    timeout: 1s\n");
    let (wall, run) = timed(vec![(
        "FARMCTL_TEST_DEAD",
        format!("http://127.0.0.1:{port}/hook"),
    )])
    .await;
    // Posts are tried three times, 1 s each: waiting on them would add
    // several seconds to the run and to its end.
    assert!(
        run < run_before + Duration::from_millis(1500),
        "the run took {run:?} with a dead webhook, {run_before:?} without"
    );
    assert!(
        wall < wall_before + Duration::from_secs(1) + Duration::from_millis(1500),
        "farmctl took {wall:?} with a dead webhook, {wall_before:?} without"
    );
}
