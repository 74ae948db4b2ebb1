//! Decisions that hold up, end to end through a real HAProxy under load:
//! a release that hangs requests (no error logged anywhere) is failed and
//! its rollback finishes; a canary at 10% weight really gets a tenth of a
//! node's traffic and a good release passes on it; a controller killed
//! mid-soak leaves the weights changed until the next run (its resume)
//! puts them back; two nodes sick in different pools get each their own
//! pool recycled, nothing else.
use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::{faulty_release_package, release_package, SandboxSpec, FIRST_RELEASE};
use farmctl::traffic::Traffic;
use serde_json::Value;

/// Each node's weight in HAProxy as `status` shows it: (current, initial).
async fn weights(farm: &Farm) -> Vec<(u64, u64)> {
    status(farm).await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let w = &n["lb_weight"];
            (
                w["current"].as_u64().unwrap(),
                w["initial"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_requests_fail_a_canary_and_a_canary_weight_is_real_and_put_back() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        drain_timeout: Duration::from_secs(8),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let mut load = farm.sandbox.traffic_spec();
    load.workers = 8;
    load.pace = Duration::from_millis(25);
    load.slow_every = 0;
    load.max_duration = Duration::from_secs(600);
    // Users give up on a hung request after a few seconds: the load's
    // workers are not all held by hung requests.
    load.timeout = Duration::from_secs(3);
    let traffic = Traffic::start(load);

    // 5% of the release's requests hang: IIS logs none of them, HAProxy
    // answers none. Seen as requests the LB sent that never answered, and
    // as requests hung on the canary.
    let hangs = faulty_release_package(&farm.sandbox.dir, "2.1.0", "hang_rate: 0.05\n").unwrap();
    let out = deploy_soaking(&inv, &hangs, "2.1.0", "40s").await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    crate::common::schema::check("report", &r);
    let a = &r["analysis"];
    assert_eq!(a["verdict"], "fail", "{r:#}");
    let last = a["intervals"].as_array().unwrap().last().unwrap();
    let failed: Vec<&str> = last["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["result"] == "fail")
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| *m == "unanswered_rate" || *m == "hung"),
        "{last:#}"
    );
    // No error was logged: the logs alone would have passed it.
    assert_ne!(
        metric(last, "error_rate").unwrap()["result"],
        "fail",
        "{last:#}"
    );
    // The rollback did not wait for the hung requests: it finished.
    assert_eq!(r["rolled_back"], true, "{r:#}");
    for n in r["nodes"].as_array().unwrap() {
        assert_eq!(n["in_rotation"], true, "{n:#}");
    }
    let st = status(&farm).await;
    for n in st["nodes"].as_array().unwrap() {
        assert_eq!(n["releases"]["shop"], FIRST_RELEASE, "{n:#}");
    }

    // A tenth of a node's traffic for the canary: HAProxy's weights are 1
    // by default, where `weight 10%` is 0.
    let mut text = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    assert!(
        text.trim_end().ends_with("max_increase: \"1%\"}"),
        "analysis is the last section:\n{text}"
    );
    // A canary at a tenth of the traffic has little data: the limit is
    // 2 points here, so a pass is proven on a few hundred requests.
    text = text.replace("max_increase: \"1%\"", "max_increase: \"2%\"");
    text.push_str("  canary_weight: \"10%\"\n");
    std::fs::write(&farm.sandbox.inventory, text).unwrap();
    let good = release_package(&farm.sandbox.dir, "2.0.0").unwrap();
    let out = deploy_soaking(&inv, &good, "2.0.0", "80s").await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    let a = &r["analysis"];
    assert_eq!(a["verdict"], "pass", "{r:#}");
    let last = a["intervals"].as_array().unwrap().last().unwrap();
    let e = metric(last, "error_rate").unwrap();
    let canary = e["canary_requests"].as_f64().unwrap();
    let per_baseline_node = e["baseline_requests"].as_f64().unwrap() / 3.0;
    let share = canary / per_baseline_node;
    assert!((0.05..=0.2).contains(&share), "share {share:.3}: {e:#}");
    // Every weight back to its initial value after the soak.
    assert!(
        weights(&farm).await.iter().all(|(c, i)| c == i),
        "{:?}",
        weights(&farm).await
    );

    // Killed mid-soak: the weights stay changed (a run still holds the
    // nodes until its leases lapse); its resume puts them back first.
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let next = release_package(&farm.sandbox.dir, "2.0.1").unwrap();
    let mut child = spawn_deploy(state.path(), &inv, &next, "2.0.1", "60s");
    farm_proto::assert_eventually!(
        Duration::from_secs(90),
        async { weights(&farm).await.iter().any(|(c, i)| c != i) },
        "the canary's weight to be set"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let w = weights(&farm).await;
    assert!(w.iter().any(|(c, i)| c != i), "{w:?}");
    let st = farmctl(&["status", "-i", &inv]).await;
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("LB WEIGHT"),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    let out = farmctl(&["--state-dir", &state_arg, "resume", "--output", "json"]).await;
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    assert!(
        weights(&farm).await.iter().all(|(c, i)| c == i),
        "after the resume: {:?}\n{}",
        weights(&farm).await,
        stderr(&out)
    );
    let st = farmctl(&["status", "-i", &inv]).await;
    assert!(!String::from_utf8_lossy(&st.stdout).contains("LB WEIGHT"));
    traffic.stop().await;
}

/// web01's shop pool and web02's reports pool fail their users:
/// `recycle --outliers` recycles ShopPool on web01 and ReportsPool on
/// web02 — never the healthy pool of either, nor another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sick_node_recycles_only_its_own_sick_pool() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        second_site: true,
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let sick = |node: &str, pool: &str| {
        let path = farm.sandbox.dir.join(format!("{node}.sim.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let from = format!("  - name: {pool}\n");
        assert!(text.contains(&from), "{text}");
        let text = text.replace(
            &from,
            &format!("{from}    faults:\n      error_rate: 0.2\n"),
        );
        let edited = path.with_extension("new");
        std::fs::write(&edited, text).unwrap();
        std::fs::rename(&edited, &path).unwrap();
    };
    sick("web01", farmctl::sandbox::POOL);
    sick("web02", farmctl::sandbox::SECOND_POOL);
    let spec = |host: &str| {
        let mut s = farm.sandbox.traffic_spec();
        for b in &mut s.backends {
            b.host = Some(host.into());
        }
        s.workers = 3;
        s.pace = Duration::from_millis(20);
        s.slow_every = 0;
        s.max_duration = Duration::from_secs(180);
        s
    };
    let shop = Traffic::start(spec(farmctl::sandbox::SITE_HOST));
    let reports = Traffic::start(spec(farmctl::sandbox::SECOND_SITE_HOST));
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            let st = status(&farm).await;
            let flags: Vec<Value> = st["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["outlier"].clone())
                .collect();
            flags
                == [
                    Value::Bool(true),
                    Value::Bool(true),
                    Value::Bool(false),
                    Value::Bool(false),
                ]
        },
        "web01 and web02, and only they, to be outliers"
    );
    let out = recycle_outliers_json(&inv).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    let recycled: Vec<&str> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(recycled, ["web01", "web02"], "{r:#}");
    // What each agent was asked to recycle, from its own audit log.
    let pools = |i: usize| -> Vec<String> {
        audited(&farm, i, "Recycle")
            .iter()
            .flat_map(|v| v["pools"].as_array().cloned().unwrap_or_default())
            .map(|p| p.as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(pools(0), [farmctl::sandbox::POOL]);
    assert_eq!(pools(1), [farmctl::sandbox::SECOND_POOL]);
    assert!(pools(2).is_empty() && pools(3).is_empty());
    shop.stop().await;
    reports.stop().await;
}
