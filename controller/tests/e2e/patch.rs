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

/// Whether `state`'s journal holds a restart of `node` asked.
fn restart_journaled(state: &std::path::Path, node: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(state.join("runs")) else {
        return false;
    };
    dir.flatten().any(|f| {
        std::fs::read_to_string(f.path()).is_ok_and(|t| {
            t.lines().any(|l| {
                l.contains("\"type\":\"reboot\"") && l.contains(&format!("\"node\":\"{node}\""))
            })
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_while_a_node_restarts_is_resumed_without_restarting_it_again() {
    let farm = farm(SandboxSpec {
        boot_time: std::time::Duration::from_secs(6),
        ..spec()
    })
    .await;
    let inv = inventory(&farm);
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let traffic = Traffic::start(farm.sandbox.traffic_spec());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args([
            "--state-dir",
            &state_arg,
            "-q",
            "patch",
            "-i",
            &inv,
            "--yes",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Killed once web02's restart is asked (and before it is back).
    farm_proto::assert_eventually!(
        std::time::Duration::from_secs(120),
        async {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("the patch finished ({s}) before it was killed");
            }
            restart_journaled(state.path(), "web02")
        },
        "web02's restart to be journaled"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    // Resumed at once, web02 still down: its restart is waited for, never
    // asked again; the others are done, each once.
    let out = farmctl(&["--state-dir", &state_arg, "resume", "--output", "json"]).await;
    let load = traffic.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in ["web01", "web02", "web03", "web04"] {
        assert_eq!(boots(&farm, n), 1, "{n} restarted once");
    }
    let reboots = events(&farm).iter().filter(|e| e.event == "reboot").count();
    assert_eq!(reboots, 4, "one restart asked per node");
    let r = json(&out);
    assert!(
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["outcome"] == "succeeded"),
        "{r:#}"
    );
    assert_eq!(load.requests_failed, 0, "{load:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_comes_back_halts_the_run_drained_and_named() {
    let farm = farm(SandboxSpec {
        sim_extra: [(1, "patch_faults:\n  never_returns: true\n".to_string())].into(),
        patch_yaml: "patch:\n  reboot_delay: 1s\n  reboot_timeout: 12s\n  bake: 0s\n".into(),
        ..spec()
    })
    .await;
    let inv = inventory(&farm);
    let traffic = Traffic::start(farm.sandbox.traffic_spec());
    let out = farmctl(&["patch", "-i", &inv, "--yes", "--output", "json"]).await;
    let load = traffic.stop().await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    let web02 = &r["nodes"][1];
    assert_eq!(web02["outcome"], "failed", "{r:#}");
    assert_eq!(web02["failed_step"], "operate");
    assert_eq!(web02["in_rotation"], false);
    let why = web02["error"].as_str().unwrap();
    assert!(
        why.contains("web02 did not come back within patch.reboot_timeout"),
        "{why}"
    );
    assert!(why.contains("farmctl undrain"), "{why}");
    assert!(
        r["halted"]
            .as_str()
            .is_some_and(|h| h.contains("later nodes were not touched")),
        "{r:#}"
    );
    // No other node restarted beyond the budget (max_failures 0).
    assert_eq!(boots(&farm, "web01"), 1);
    assert_eq!(r["nodes"][2]["outcome"], "skipped");
    assert_eq!(r["nodes"][3]["outcome"], "skipped");
    assert_eq!(
        events(&farm).iter().filter(|e| e.event == "reboot").count(),
        2
    );
    // HAProxy still has it out: no user was sent to a dead server.
    assert_eq!(load.requests_failed, 0, "{load:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_application_fails_after_its_restart_halts_the_run_before_the_next() {
    let farm = farm(SandboxSpec {
        sim_extra: [(
            0,
            "patch_faults:\n  after_reboot:\n    error_rate: 0.05\n".to_string(),
        )]
        .into(),
        patch_yaml: "patch:\n  reboot_delay: 1s\n  reboot_timeout: 2m\n  bake: 20s\n".into(),
        ..spec()
    })
    .await;
    let inv = inventory(&farm);
    let mut load = farm.sandbox.traffic_spec();
    load.workers = 4;
    load.pace = std::time::Duration::from_millis(20);
    load.slow_every = 0;
    let traffic = Traffic::start(load);
    let out = farmctl(&["patch", "-i", &inv, "--yes", "--output", "json"]).await;
    let _ = traffic.stop().await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    crate::common::schema::check("report", &r);
    let web01 = &r["nodes"][0];
    assert_eq!(web01["outcome"], "failed", "{r:#}");
    assert_eq!(web01["failed_step"], "bake");
    assert_eq!(web01["in_rotation"], false, "taken out again: {web01:#}");
    assert!(
        r["halted"]
            .as_str()
            .is_some_and(|h| h.contains("web01 failed its bake") && h.contains("farmctl undrain")),
        "{r:#}"
    );
    assert_eq!(r["analysis"]["verdict"], "fail", "{r:#}");
    // Judged before the next node started: nothing else restarted.
    for n in ["web02", "web03", "web04"] {
        assert_eq!(boots(&farm, n), 0, "{n}");
    }
    let st = status(&farm).await;
    assert_eq!(st["nodes"][0]["drained"], true, "{st:#}");
}
