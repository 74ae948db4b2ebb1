//! Patch night end to end: real agents whose simulated servers install
//! updates and restart (the agent process ends and comes back after the
//! boot time, as a new boot), behind a real HAProxy under load.
use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use farmctl::traffic::Traffic;
use serde_json::Value;

fn spec() -> SandboxSpec {
    SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        ..SandboxSpec::default()
    }
}

/// Each node's boot ids in order, from its `boot` events (a restart that
/// came back).
fn boots(farm: &Farm, node: &str) -> usize {
    events(farm)
        .iter()
        .filter(|e| e.node == node && e.event == "boot")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_under_load_restarts_each_node_once_and_fails_no_request() {
    let farm = farm(spec()).await;
    let inv = inventory(&farm);
    let before = status(&farm).await;
    let boot_ids = |st: &Value| -> Vec<String> {
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["boot_id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let first = boot_ids(&before);
    assert!(first.iter().all(|b| !b.is_empty()), "{before:#}");
    let traffic = Traffic::start(farm.sandbox.traffic_spec());
    let out = farmctl(&["patch", "-i", &inv, "--yes", "--output", "json"]).await;
    let load = traffic.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    crate::common::schema::check("report", &r);
    assert_eq!(r["action"], "patch");
    assert!(load.requests_sent > 200, "{load:?}");
    assert_eq!(load.requests_failed, 0, "{load:?}");
    for n in r["nodes"].as_array().unwrap() {
        assert_eq!(n["outcome"], "succeeded", "{n:#}");
        assert_eq!(n["in_rotation"], true);
        let kbs: Vec<&str> = n["updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["kb"].as_str().unwrap())
            .collect();
        assert_eq!(kbs, ["KB5046616", "KB890830"], "{n:#}");
        let reboot = &n["reboot"];
        assert!(
            reboot["back_after_ms"].as_u64().unwrap() >= 3000,
            "{reboot:#}"
        );
        assert_ne!(reboot["boot_before"], reboot["boot_after"]);
    }
    // Each node restarted exactly once, one at a time, and runs a new boot.
    for n in ["web01", "web02", "web03", "web04"] {
        assert_eq!(boots(&farm, n), 1, "{n}");
    }
    let after = status(&farm).await;
    let second = boot_ids(&after);
    for (a, b) in first.iter().zip(&second) {
        assert_ne!(a, b);
    }
    for n in after["nodes"].as_array().unwrap() {
        assert_eq!(n["reboot_pending"], false, "{n:#}");
        assert_eq!(n["healthy"], true, "{n:#}");
    }
    let reboots: Vec<(u64, String)> = events(&farm)
        .into_iter()
        .filter(|e| e.event == "reboot" || e.event == "boot")
        .map(|e| (e.t_us, format!("{} {}", e.node, e.event)))
        .collect();
    let order: Vec<&str> = reboots.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        order,
        [
            "web01 reboot",
            "web01 boot",
            "web02 reboot",
            "web02 boot",
            "web03 reboot",
            "web03 boot",
            "web04 reboot",
            "web04 boot"
        ]
    );
    // A second patch finds nothing to install: nothing is drained or
    // restarted.
    let again = farmctl(&["patch", "-i", &inv, "--yes", "--output", "json"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    for n in ["web01", "web02", "web03", "web04"] {
        assert_eq!(boots(&farm, n), 1, "{n}");
    }
    for n in json(&again)["nodes"].as_array().unwrap() {
        assert_eq!(n["outcome"], "succeeded", "{n:#}");
        assert_eq!(n["phase_ms"], serde_json::json!({}), "never drained: {n:#}");
    }
}
