//! Never hangs: a stopped agent (SIGSTOP: its kernel still accepts TCP
//! connections, nothing answers) costs `farmctl status` and a run their
//! own deadlines, not forever.
#![cfg(unix)]

use std::time::{Duration, Instant};

use crate::common::*;
use farmctl::sandbox::SandboxSpec;

/// SIGSTOP / SIGCONT an agent process by PID.
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The sandbox's inventory with a short agent request timeout.
fn short_timeouts(farm: &Farm, request_timeout: &str) {
    let path = &farm.sandbox.inventory;
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replacen(
        "agent:\n  tls:",
        &format!("agent:\n  request_timeout: {request_timeout}\n  tls:"),
        1,
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_costs_status_its_request_timeout_not_forever() {
    let farm = farm(SandboxSpec {
        nodes: 3,
        releases: false,
        ..SandboxSpec::default()
    })
    .await;
    short_timeouts(&farm, "3s");
    let pid = farm.sandbox.agent_pid(1).expect("web02 runs");
    signal(pid, "-STOP");
    let start = Instant::now();
    let out = farmctl(&["status", "-i", &inventory(&farm), "--output", "json"]).await;
    let took = start.elapsed();
    signal(pid, "-CONT");
    println!("status with one agent stopped: {took:?}");
    // 3 s of request timeout, 1 s of margin, at most 2 s to look at the port.
    assert!(
        took < Duration::from_secs(8),
        "status took {took:?}: {}",
        stderr(&out)
    );
    let st = json(&out);
    let nodes = st["nodes"].as_array().unwrap();
    let web02 = nodes.iter().find(|n| n["name"] == "web02").unwrap();
    let text = web02.to_string();
    assert!(
        text.contains("no answer within 3s") && text.contains("accepted the connection"),
        "{text}"
    );
    for other in ["web01", "web03"] {
        let n = nodes.iter().find(|n| n["name"] == other).unwrap();
        assert_eq!(n["reachable"], true, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_mid_run_fails_its_node_and_the_run_ends_within_its_bounds() {
    let farm = farm(SandboxSpec {
        nodes: 3,
        releases: false,
        drain_timeout: Duration::from_secs(5),
        healthy_timeout: Duration::from_secs(5),
        ..SandboxSpec::default()
    })
    .await;
    short_timeouts(&farm, "3s");
    let path = &farm.sandbox.inventory;
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(
        path,
        text.replace("operation_timeout: 60s", "operation_timeout: 5s"),
    )
    .unwrap();
    let inv = inventory(&farm);
    let mut run = tokio::spawn(async move {
        farmctl(&["recycle", "-i", &inv, "--yes", "--output", "json"]).await
    });
    // web01 goes first: stop its agent once it is drained, mid-run.
    let drained = async {
        loop {
            if events(&farm)
                .iter()
                .any(|e| e.node == "web01" && e.event == "drain")
            {
                return;
            }
            if run.is_finished() {
                let out = (&mut run).await.unwrap();
                panic!("the run ended before web01 was drained: {}", stderr(&out));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .is_err()
    {
        panic!("web01 not drained within 30s");
    }
    let pid = farm.sandbox.agent_pid(0).expect("web01 runs");
    signal(pid, "-STOP");
    let stopped = Instant::now();
    let out = (&mut run).await.unwrap();
    let took = stopped.elapsed();
    signal(pid, "-CONT");
    println!("the run ended {took:?} after web01's agent stopped");
    // Its bounds: the drain's 5 s (+ the 3 s request timeout), the 5 s
    // health wait before it is left out, the 3 s calls of the return and
    // the lease release (+1 s margin each) — never "when the agent comes
    // back".
    assert!(
        took < Duration::from_secs(35),
        "the run ended {took:?} after the agent stopped: {}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let web01 = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "web01")
        .unwrap()
        .clone();
    assert_ne!(web01["outcome"], "done", "{web01}");
}
