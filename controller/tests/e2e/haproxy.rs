//! End to end through a real HAProxy (Debian package; `.ci/run` installs
//! it) in front of real agent processes, with HTTP load throughout.

use std::time::Duration;

use crate::common::*;
use farmctl::lb::Haproxy;
use farmctl::sandbox::SandboxSpec;
use farmctl::traffic::{Traffic, TrafficSpec};

/// iisreset's graceful stop (`rollout.stop_timeout`), shorter than the
/// long requests below: what a reset does to requests still in flight
/// when the stop runs out is what a drain has to prevent.
const STOP_TIMEOUT: &str = "  stop_timeout: 1s\n";

fn spec() -> SandboxSpec {
    SandboxSpec {
        lb_kind: "haproxy".into(),
        rollout_extra: STOP_TIMEOUT.into(),
        ..SandboxSpec::default()
    }
}

async fn rolling_run_under_load(
    farm: &Farm,
    action: &str,
    load: TrafficSpec,
) -> farmctl::report::TrafficReport {
    let monitor = StatsMonitor::start(farm);
    let traffic = Traffic::start(load);
    let out = farmctl(&[action, "-i", &inventory(farm), "--yes", "--output", "json"]).await;
    let load = traffic.stop().await;
    let changes = monitor.finish().await;
    assert_eq!(out.status.code(), Some(0), "{action}: {}", stderr(&out));
    assert_eq!(json(&out)["outcome"], "succeeded");
    assert_drained_in_order(&changes);
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_during_a_rolling_recycle_and_a_rolling_reset() {
    let farm = farm(spec()).await;
    let load = rolling_run_under_load(&farm, "recycle", farm.sandbox.traffic_spec()).await;
    assert!(load.requests_sent > 200, "recycle: {load:?}");
    assert_eq!(load.requests_failed, 0, "recycle: {load:?}");
    // The reset under the load the no-drain baseline below fails with.
    let load = rolling_run_under_load(&farm, "reset", long_requests(&farm)).await;
    assert!(load.requests_sent > 100, "reset: {load:?}");
    assert_eq!(load.requests_failed, 0, "reset: {load:?}");
    let st = status(&farm).await;
    assert!((0..4).all(|i| st["nodes"][i]["healthy"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_drain_a_rolling_reset_fails_requests() {
    // Same harness and load, but the inventory does not drive the load
    // balancer: HAProxy retries refused connections elsewhere
    // (redispatch), but the requests in flight when the stop runs out are
    // cut, and a request already sent cannot be retried.
    let farm = farm(SandboxSpec {
        lb_kind: "none".into(),
        haproxy: true,
        ..spec()
    })
    .await;
    let traffic = Traffic::start(long_requests(&farm));
    let out = farmctl(&["reset", "-i", &inventory(&farm), "--yes", "-q"]).await;
    let load = traffic.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    eprintln!("no-drain baseline: {load:?}");
    assert!(
        load.requests_failed > 0,
        "the baseline lost nothing, so the test could not fail: {load:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_backend_is_refused_before_anything_is_touched() {
    let farm = farm(spec()).await;
    let text = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    let path = farm.sandbox.dir.join("wrong-backend.yaml");
    std::fs::write(&path, text.replace("backend: shop", "backend: nosuch")).unwrap();
    let out = farmctl(&["recycle", "-i", &path.display().to_string(), "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no backend `nosuch`"),
        "{}",
        stderr(&out)
    );
    assert!(events(&farm).is_empty());
    let h = farm.sandbox.haproxy.as_ref().unwrap();
    let servers = Haproxy::new(h.admin.clone(), h.backend.clone())
        .servers()
        .await
        .unwrap();
    assert!(servers.iter().all(|s| s.status == "UP"), "{servers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_runtime_api_mid_run_halts_and_reports_the_node() {
    let mut farm = farm(spec()).await;
    let inv = inventory(&farm);
    let run = tokio::spawn(async move {
        farmctl(&["recycle", "-i", &inv, "--yes", "--output", "json"]).await
    });
    // Kill HAProxy while web02 is being recycled.
    let web02_log = farm.sandbox.nodes[1].event_log.clone();
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            std::fs::read_to_string(&web02_log)
                .unwrap_or_default()
                .contains("\"recycle\"")
        },
        "web02 to be recycled"
    );
    farm.sandbox.kill_haproxy().await;
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let outcomes: Vec<&str> = (0..4)
        .map(|i| report["nodes"][i]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["succeeded", "failed", "skipped", "skipped"]);
    let err = report["nodes"][1]["error"].as_str().unwrap();
    assert!(err.contains("unreachable"), "{err}");
    assert!(events(&farm)
        .iter()
        .all(|e| e.node != "web03" && e.node != "web04"));
    // Nothing is left drained on the nodes themselves.
    let st = status(&farm).await;
    assert!((0..4).all(|i| st["nodes"][i]["drained"] == false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_never_completes_fails_the_node_and_returns_it() {
    let farm = farm(SandboxSpec {
        drain_timeout: Duration::from_secs(1),
        ..spec()
    })
    .await;
    // A long request straight to web01: HAProxy has no session on it, the
    // node itself has one in flight, so the drain is not complete.
    let port = farm.sandbox.nodes[0].http_port;
    let long = tokio::spawn(async move {
        farmctl::probe::get(
            "127.0.0.1",
            port,
            Some("shop.example.com"),
            "/slow?ms=30000",
            Duration::from_secs(60),
        )
        .await
    });
    farm_proto::assert_eventually!(
        Duration::from_secs(20),
        async { status(&farm).await["nodes"][0]["in_flight"] == 1 },
        "the long request to start"
    );
    let out = recycle_json(&farm).await;
    long.abort();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["nodes"][0]["outcome"], "failed");
    assert_eq!(report["nodes"][0]["failed_step"], "quiesce");
    assert_eq!(report["nodes"][0]["in_rotation"], true);
    assert_eq!(report["nodes"][1]["outcome"], "skipped");
    assert!(
        events(&farm).iter().all(|e| e.event != "recycle"),
        "something was recycled"
    );
    let h = farm.sandbox.haproxy.as_ref().unwrap();
    let web01 = Haproxy::new(h.admin.clone(), h.backend.clone())
        .server("web01", "web01")
        .await
        .unwrap();
    assert_eq!(web01.status, "UP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_drain_and_undrain_respect_min_healthy() {
    let farm = farm(spec()).await;
    let inv = inventory(&farm);
    let h = farm.sandbox.haproxy.as_ref().unwrap();
    let api = Haproxy::new(h.admin.clone(), h.backend.clone());

    // The plan of a recycle: one node a time, 3 of 4 serving throughout.
    let out = farmctl(&["plan", "recycle", "-i", &inv, "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(plan["steps"].as_array().unwrap().len(), 4);
    assert!(plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["in_rotation"] == 3));
    let out = farmctl(&[
        "plan",
        "reset",
        "-i",
        &inv,
        "--max-unavailable",
        "1,2",
        "--output",
        "json",
    ])
    .await;
    let sizes: Vec<usize> = json(&out)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["batch"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [1, 2, 1]);
    // Numbers as numbers, counts as `*_count`, times in ms (beside the
    // older keys).
    let plan = json(&out);
    assert_eq!(
        plan["max_unavailable_steps"],
        serde_json::json!([1, 2]),
        "{plan:#}"
    );
    assert_eq!(plan["nodes_count"], 4);
    assert!(plan["estimate_ms"].as_u64().unwrap() >= 1000, "{plan:#}");

    for node in ["web02", "web03"] {
        let out = farmctl(&["drain", "-i", &inv, node, "--output", "json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(json(&out)["quiesced"], true);
        assert_eq!(api.server(node, node).await.unwrap().status, "DRAIN");
    }
    let st = status(&farm).await;
    assert_eq!(st["nodes"][1]["lb_state"], "DRAIN");
    assert_eq!(st["nodes"][1]["drained"], true);
    // min_healthy is 50% of 4: a third node may not go.
    let out = farmctl(&["drain", "-i", &inv, "web04"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("min_healthy"), "{}", stderr(&out));
    assert_eq!(api.server("web04", "web04").await.unwrap().status, "UP");
    // A rolling run refuses while the LB has nodes out that it would take.
    let out = farmctl(&["recycle", "-i", &inv, "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // ...and so does the plan of the others: two are out, two must serve.
    let out = farmctl(&["plan", "recycle", "-i", &inv, "--nodes", "web01,web04"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already out of rotation"),
        "{}",
        stderr(&out)
    );

    for node in ["web02", "web03"] {
        let out = farmctl(&["undrain", "-i", &inv, node]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(api.server(node, node).await.unwrap().status, "UP");
    }
    let out = farmctl(&["drain", "-i", &inv, "web09"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(events(&farm).iter().all(|e| e.event != "recycle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_haproxy_forgets_mid_recycle_is_made_again() {
    // A slow start-up keeps web02 out long enough to be "reloaded".
    let mut s = spec();
    s.pool_yaml = "    startup: 2s\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into();
    let farm = farm(s).await;
    let h = farm.sandbox.haproxy.as_ref().unwrap();
    let api = Haproxy::new(h.admin.clone(), h.backend.clone());
    let inv = inventory(&farm);
    let run = tokio::spawn(async move {
        farmctl(&["recycle", "-i", &inv, "--yes", "--output", "json"]).await
    });
    let web02_log = farm.sandbox.nodes[1].event_log.clone();
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            std::fs::read_to_string(&web02_log)
                .unwrap_or_default()
                .contains("\"recycle\"")
        },
        "web02 to be recycled"
    );
    // What a reload without a server-state file does to it.
    api.set_state("web02", "ready").await.unwrap();
    assert_eq!(api.admin_state("web02", "web02").await.unwrap(), 0);
    farm_proto::assert_eventually!(
        Duration::from_secs(5),
        async { api.admin_state("web02", "web02").await.unwrap() != 0 },
        "web02 drained again"
    );
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["nodes"][1]["lb_redrains"], 1);
    assert_eq!(report["nodes"][0]["lb_redrains"], 0);
}

/// A run that holds a node (here: its controller was killed, its lease
/// still runs) keeps on-call `drain` and `undrain` off it, `--force` or
/// not: with HAProxy the controller drives the LB itself, so it must ask
/// the agent's lease first. Nothing is touched in HAProxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_undrain_refuse_a_node_another_run_holds() {
    use farmctl::agent::LeaseClaim;
    let farm = farm(spec()).await;
    let web03 = agent(&farm, 2);
    web03
        .acquire_lease(&LeaseClaim {
            holder: "ops@gone",
            run_id: "r-killed",
            reason: "recycle",
            ttl: Duration::from_secs(120),
        })
        .await
        .unwrap();
    let before = haproxy_states(&farm).await;
    for args in [
        vec!["drain", "-i", &inventory(&farm), "web03"],
        vec!["drain", "-i", &inventory(&farm), "web03", "--force"],
        vec!["undrain", "-i", &inventory(&farm), "web03", "--force"],
    ] {
        let out = farmctl(&args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("leased to ops@gone for run r-killed")
                && err.contains("ago")
                && err.contains("farmctl resume r-killed"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(haproxy_states(&farm).await, before, "HAProxy was touched");
    // Once the run lets go, the drain goes through.
    web03.release_lease("r-killed").await.unwrap();
    let out = farmctl(&["drain", "-i", &inventory(&farm), "web03"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Every server's name and status in the sandbox's HAProxy.
async fn haproxy_states(farm: &Farm) -> Vec<(String, String)> {
    let h = farm.sandbox.haproxy.as_ref().unwrap();
    Haproxy::new(h.admin.clone(), h.backend.clone())
        .servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.status))
        .collect()
}

/// A node drained on the node itself (a Drain call straight to its agent:
/// its health file away, so HAProxy's check marks it DOWN) is returned by
/// `farmctl undrain`, and `status` exits 1 while it is out with no run
/// holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undrain_returns_a_node_drained_on_the_node_itself() {
    let farm = farm(spec()).await;
    let web04 = agent(&farm, 3);
    web04.drain("by-hand.web04.drain").await.unwrap();
    farm_proto::eventually!(
        Duration::from_secs(20),
        async {
            let st = haproxy_states(&farm).await;
            st.iter()
                .any(|(name, s)| name == "web04" && s.starts_with("DOWN"))
                .then_some(())
        },
        "HAProxy sees web04 down"
    );
    let out = farmctl(&["status", "-i", &inventory(&farm)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = farmctl(&["undrain", "-i", &inventory(&farm), "web04"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("drained on the node itself"),
        "{}",
        stderr(&out)
    );
    let st = haproxy_states(&farm).await;
    assert!(st.iter().all(|(_, s)| s == "UP"), "{st:?}");
    let out = farmctl(&["status", "-i", &inventory(&farm)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
