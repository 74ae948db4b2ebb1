//! A real controller run against real agent processes (IIS simulator).

use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use farmctl::traffic::Traffic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_recycle_goes_node_by_node_and_replaces_every_worker() {
    let farm = farm(SandboxSpec::default()).await;
    let traffic = Traffic::start(farm.sandbox.traffic_spec());
    let before = status(&farm).await;

    let out = recycle_json(&farm).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["outcome"], "succeeded");

    // Order: each node drained, recycled and returned before the next is drained.
    let seen: Vec<(String, String)> = events(&farm)
        .into_iter()
        .map(|e| (e.node, e.event))
        .collect();
    let mut expected = Vec::new();
    for n in ["web01", "web02", "web03", "web04"] {
        for ev in ["drain", "recycle", "undrain"] {
            expected.push((n.to_string(), ev.to_string()));
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(max_drained_at_once(&events(&farm)), 1);

    // Every node's workers were replaced, seen from outside the run too.
    let after = status(&farm).await;
    for (i, node) in report["nodes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(node["outcome"], "succeeded");
        let old = &before["nodes"][i]["pools"][0]["pids"];
        let new = &after["nodes"][i]["pools"][0]["pids"];
        assert_eq!(&node["pids_before"]["ShopPool"], old);
        assert_eq!(&node["pids_after"]["ShopPool"], new);
        assert_ne!(old, new, "{} kept its worker", node["name"]);
        assert_eq!(after["nodes"][i]["drained"], false);
        assert_eq!(after["nodes"][i]["healthy"], true);
    }
    // Drained first, so the load never hit a recycling node.
    assert!(traffic.requests_sent > 100, "{traffic:?}");
    assert_eq!(traffic.requests_failed, 0, "{traffic:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_never_exceed_max_unavailable() {
    let farm = farm(SandboxSpec::default()).await;
    let out = farmctl(&[
        "recycle",
        "-i",
        &inventory(&farm),
        "--yes",
        "--max-unavailable",
        "50%",
        "-q",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let events = events(&farm);
    assert_eq!(max_drained_at_once(&events), 2);
    // The second batch starts only after the first is back.
    let last_undrain_of_first = events
        .iter()
        .filter(|e| e.event == "undrain" && (e.node == "web01" || e.node == "web02"))
        .map(|e| e.t_us)
        .max()
        .unwrap();
    let first_drain_of_second = events
        .iter()
        .filter(|e| e.event == "drain" && (e.node == "web03" || e.node == "web04"))
        .map(|e| e.t_us)
        .min()
        .unwrap();
    assert!(last_undrain_of_first < first_drain_of_second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_gets_healthy_halts_the_run_there() {
    let mut spec = SandboxSpec {
        healthy_timeout: Duration::from_secs(2),
        ..SandboxSpec::default()
    };
    spec.sim_extra
        .insert(2, "faults:\n  never_healthy: true\n".into());
    let farm = farm(spec).await;

    let out = recycle_json(&farm).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["outcome"], "failed");
    let outcomes: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "failed", "skipped"]);
    assert_eq!(report["nodes"][2]["failed_step"], "verify");
    assert_eq!(report["nodes"][2]["in_rotation"], false);
    assert!(report["halted"].is_string());

    let st = status(&farm).await;
    let drained: Vec<bool> = (0..4)
        .map(|i| st["nodes"][i]["drained"].as_bool().unwrap())
        .collect();
    assert_eq!(drained, [false, false, true, false]);
    assert!(
        events(&farm).iter().all(|e| e.node != "web04"),
        "web04 was touched"
    );
}

/// Writes an inventory variant next to the farm's and runs `validate` and
/// `recycle` on it.
async fn run_variant(
    farm: &Farm,
    name: &str,
    text: &str,
) -> (std::process::Output, std::process::Output) {
    let path = farm.sandbox.dir.join(name);
    std::fs::write(&path, text).unwrap();
    let p = path.display().to_string();
    (
        farmctl(&["validate", "-i", &p]).await,
        farmctl(&["recycle", "-i", &p, "--yes"]).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_names_the_place_and_touches_nothing() {
    let farm = farm(SandboxSpec::default()).await;
    let good = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    let first_node = good.find("  - name: web01").unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", good.replace("nodes:\n", "nodes: [\n"), "line "),
        (
            "unknown-key",
            good.replacen("    http_port:", "    htp_port:", 1),
            "unknown field `htp_port`",
        ),
        (
            "duplicate",
            good.replace("name: web02", "name: web01"),
            "nodes[1].name: duplicate node name",
        ),
        (
            "empty-nodes",
            format!(
                "{}nodes: []\n{}",
                &good[..good.find("nodes:").unwrap()],
                &good[good.find("load_balancer:").unwrap()..]
            ),
            "nodes: the farm has no nodes",
        ),
        (
            "zero",
            good.replace("max_unavailable: 1", "max_unavailable: 0"),
            "rollout.max_unavailable: must be at least 1",
        ),
        (
            "too-many",
            good.replace("max_unavailable: 1", "max_unavailable: 9"),
            "more than the farm's 4",
        ),
        (
            "duration",
            good.replace("drain_timeout: 30s", "drain_timeout: 30 parsecs"),
            "rollout.drain_timeout",
        ),
        ("not-a-map", "- just\n- a list\n".into(), "invalid type"),
        (
            "control-chars",
            String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2, 3]).into_owned(),
            "control characters are not allowed",
        ),
    ];
    assert!(first_node > 0);
    for (name, text, needle) in &cases {
        let (validate, recycle) = run_variant(&farm, &format!("{name}.yaml"), text).await;
        for out in [&validate, &recycle] {
            assert_eq!(
                out.status.code(),
                Some(2),
                "{name}: stderr:\n{}",
                stderr(out)
            );
            let err = stderr(out);
            assert!(
                err.contains(needle),
                "{name}: expected {needle:?} in:\n{err}"
            );
            assert!(!err.contains("panicked"), "{name}: {err}");
        }
    }
    // Not UTF-8 at all.
    let raw = farm.sandbox.dir.join("raw.yaml");
    std::fs::write(&raw, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let out = farmctl(&["recycle", "-i", &raw.display().to_string(), "--yes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("valid UTF-8"), "{}", stderr(&out));

    let inv = inventory(&farm);
    for args in [
        vec!["recycle", "-i", &inv, "--yes", "--max-unavailable", "0"],
        vec!["recycle", "-i", &inv, "--yes", "--max-unavailable", "5"],
        vec!["recycle", "-i", &inv, "--yes", "--nodes", "web09"],
        vec!["recycle", "-i", &inv, "--yes", "--pool", "a\"b"],
        vec!["recycle", "-i", "/nonexistent/inventory.yaml", "--yes"],
        vec!["recycle", "--bogus-flag"],
    ] {
        let out = farmctl(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
    }

    // An unknown pool is found by preflight: refused, exit 3.
    let out = farmctl(&["recycle", "-i", &inv, "--yes", "--pool", "NoSuchPool"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("application pool `NoSuchPool` not found (there are: ShopPool)"),
        "{}",
        stderr(&out)
    );
    // A near miss is suggested; so is a node's.
    let out = farmctl(&["recycle", "-i", &inv, "--yes", "--pool", "ShopPol"]).await;
    assert!(
        stderr(&out).contains("(did you mean ShopPool?)"),
        "{}",
        stderr(&out)
    );
    let out = farmctl(&["recycle", "-i", &inv, "--yes", "--nodes", "web1"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("web1 (did you mean web01?)"),
        "{}",
        stderr(&out)
    );

    // No TLS in the inventory: refused unless --insecure is explicit.
    let start = good.find("agent:\n").unwrap();
    let end = good.find("nodes:\n").unwrap();
    let plain = farm.sandbox.dir.join("plain.yaml");
    std::fs::write(&plain, format!("{}{}", &good[..start], &good[end..])).unwrap();
    let out = farmctl(&["status", "-i", &plain.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("agent.tls is not set"),
        "{}",
        stderr(&out)
    );
    // ...and plaintext does not get through to a TLS agent.
    let out = farmctl(&["--insecure", "status", "-i", &plain.display().to_string()]).await;
    assert!(
        stderr(&out).contains("WARNING: --insecure"),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Without --yes and without a terminal nothing happens either.
    let out = farmctl(&["recycle", "-i", &inv]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    assert!(
        events(&farm).is_empty(),
        "a bad input touched a node: {:?}",
        events(&farm)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_is_refused_before_anything_is_touched() {
    let mut farm = farm(SandboxSpec::default()).await;
    farm.sandbox.kill_node(1).await;
    let out = farmctl(&["recycle", "-i", &inventory(&farm), "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("web02") && err.contains("unreachable"),
        "{err}"
    );
    assert!(events(&farm).is_empty());

    // status still answers for the others, and says which one is down.
    let st = status(&farm).await;
    assert_eq!(st["nodes"][1]["reachable"], false);
    assert_eq!(st["nodes"][0]["reachable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_failure_budget_the_run_goes_on_around_the_failed_node() {
    let mut spec = SandboxSpec {
        healthy_timeout: Duration::from_secs(2),
        max_unavailable: "2".into(),
        rollout_extra: "  max_failures: 1\n".into(),
        ..SandboxSpec::default()
    };
    spec.sim_extra
        .insert(1, "faults:\n  never_healthy: true\n".into());
    let farm = farm(spec).await;
    let out = recycle_json(&farm).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let outcomes: Vec<&str> = (0..4)
        .map(|i| report["nodes"][i]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["succeeded", "failed", "succeeded", "succeeded"]);
    assert!(report["halted"].is_null(), "{report:#}");
    assert_eq!(report["nodes"][1]["in_rotation"], false);
    // web02 stayed out, so only one more node could go at a time.
    assert_eq!(max_drained_at_once(&events(&farm)), 2);
    let st = status(&farm).await;
    let drained: Vec<bool> = (0..4)
        .map(|i| st["nodes"][i]["drained"].as_bool().unwrap())
        .collect();
    assert_eq!(drained, [false, true, false, false]);
}
