//! Traffic health end to end: a sandbox farm behind a real HAProxy under
//! load, one node's pool failing 10% of its requests and 800 ms slower (its
//! sim file's pool faults, written while the farm runs). `status` reads every node's own logs through
//! its agent and flags exactly that node and pool; the others are like
//! their peers; no request routed to the healthy nodes failed.
use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use farmctl::traffic::Traffic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_flags_the_node_and_pool_whose_users_get_errors_and_latency() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        // The slow request below must still run when the recycle's
        // capture comes (status, outliers and preflight first: slow on a
        // loaded machine), and the drain waits for it.
        drain_timeout: Duration::from_secs(75),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    // Before any traffic: no data, nothing is recycled.
    let out = farmctl(&["recycle", "-i", &inv, "--outliers", "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no node is an outlier"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not enough data"), "{}", stderr(&out));
    let mut load = farm.sandbox.traffic_spec();
    // About 250 requests/s: a minute's window fills fast, and the other
    // tests running beside keep their share of the machine.
    load.workers = 5;
    load.pace = Duration::from_millis(20);
    load.slow_every = 0;
    load.max_duration = Duration::from_secs(300);
    let traffic = Traffic::start(load);
    // While the farm serves, web02's application goes bad: its sim file
    // is edited, and its agent applies the pool's new faults at once.
    farm.sandbox
        .set_pool_faults(
            "web02",
            "      error_rate: 0.10\n      extra_latency: 800ms\n",
        )
        .unwrap();
    // Until every node has enough user requests in the window to judge.
    let st = farm_proto::eventually!(
        Duration::from_secs(150),
        async {
            let st = status(&farm).await;
            st["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["traffic"]["requests"].as_u64().unwrap_or(0) >= 300)
                .then_some(st)
        },
        "every node to log enough user requests to tell 10% from chance"
    );
    // A slow request is running on web02 when the on-call recycle starts.
    // web02's pool answers 10% of its requests with a 500 after its extra
    // 800 ms, the slow one too: it counts once it has run past that (then
    // it is in its own 45 s); one answered with a 500 is sent again.
    let web02_port = farm.sandbox.nodes[1].http_port;
    let client = farmctl::farm::Farm::connect(
        farm_inventory::load(&farm.sandbox.inventory).unwrap(),
        farmctl::farm::Transport::Tls,
    )
    .unwrap();
    let mut slow = None;
    for _ in 0..10 {
        let request = tokio::spawn(async move {
            farmctl::probe::get(
                "127.0.0.1",
                web02_port,
                Some(farmctl::sandbox::SITE_HOST),
                "/slow?ms=45000",
                Duration::from_secs(90),
            )
            .await
        });
        let running = farm_proto::eventually!(
            Duration::from_secs(20),
            async {
                if request.is_finished() {
                    return Some(false);
                }
                client
                    .agent(1)
                    .diagnose("ShopPool", 1_500)
                    .await
                    .is_ok_and(|d| d.requests.iter().any(|r| r.url == "/slow?ms=45000"))
                    .then_some(true)
            },
            "web02 to be serving the slow request for 1.5 s, or to answer it"
        );
        if running {
            slow = Some(request);
            break;
        }
        let answer = request.await.unwrap();
        assert!(
            matches!(answer, Ok((500, _))),
            "the slow request ended early: {answer:?}"
        );
    }
    let slow = slow.expect("10 slow requests in a row answered with the injected 500");
    // On call: only the sick node's pool is recycled, under the same
    // drain/verify/return as any run, the load still going.
    let out = recycle_outliers_json(&inv).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = json(&out);
    crate::common::schema::check("report", &run);
    let recycled: Vec<&str> = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(recycled, ["web02"], "{run:#}");
    // What the sick pool was doing, captured before it was recycled: the
    // slow request, its worker, its state.
    let d = &run["nodes"][0]["diagnostics"][0];
    assert_eq!(d["pool"], "ShopPool", "{run:#}");
    let requests = d["requests"].as_array().unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r["url"] == "/slow?ms=45000" && r["elapsed_ms"].as_u64().unwrap() >= 500),
        "{d:#}"
    );
    assert_eq!(d["state"], "Running");
    assert!(d["workers"][0]["pid"].as_u64().unwrap() > 0, "{d:#}");
    assert_eq!(d["rapid_fail"], false);
    // Its users' figures before the recycle (the sick window), and since
    // it returned (the load goes on).
    let before = &run["nodes"][0]["traffic_before"];
    assert!(before["error_rate"].as_f64().unwrap() > 0.02, "{before:#}");
    let after = &run["nodes"][0]["traffic_after"];
    assert!(after["window_s"].as_u64().unwrap() >= 1, "{after:#}");
    let answer = slow.await.unwrap();
    assert!(matches!(answer, Ok((200, _))), "{answer:?}");
    let shown = farmctl(&["runs", "show", run["run_id"].as_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("web02: diagnostics of ShopPool: "), "{text}");
    assert!(text.contains("GET /slow?ms=45000"), "{text}");
    assert!(
        text.contains("web02: traffic before the recycle: ") && text.contains("; after it: "),
        "{text}"
    );
    assert!(stderr(&out).contains("pools: ShopPool"), "{}", stderr(&out));
    let per_node: Vec<usize> = ["web01", "web02", "web03", "web04"]
        .iter()
        .map(|n| {
            events(&farm)
                .iter()
                .filter(|e| e.node == *n && e.event == "recycle")
                .count()
        })
        .collect();
    assert_eq!(per_node, [0, 1, 0, 0]);
    let report = traffic.stop().await;
    assert!(
        st["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{st:#}"
    );
    crate::common::schema::check("status", &st);
    let nodes = st["nodes"].as_array().unwrap();
    let flags: Vec<&serde_json::Value> = nodes.iter().map(|n| &n["outlier"]).collect();
    assert_eq!(flags, [false, true, false, false], "{st:#}");
    let web02 = &nodes[1];
    let why = web02["outlier_reasons"].to_string();
    assert!(why.contains("5xx") && why.contains("p95"), "{why}");
    assert!(why.contains("pool ShopPool (site shop)"), "{why}");
    let t = &web02["traffic"];
    assert!(t["error_rate"].as_f64().unwrap() > 0.02, "{t:#}");
    assert!(t["latency_ms"]["p95"].as_f64().unwrap() >= 800.0, "{t:#}");
    assert!(
        t["checks"].as_u64().unwrap() > 0,
        "HAProxy's health checks counted apart"
    );
    // The pool's gauges beside the logs: the simulator serves every
    // request at once, so nothing waits in its queue.
    assert_eq!(t["queue"], 0, "{t:#}");
    assert!(t["active_requests"].is_u64(), "{t:#}");
    assert_eq!(t["pools"][0]["queue"], 0, "{t:#}");
    // The balancer's own counts: every node answered through it, and it
    // saw web02's 500s too.
    for n in nodes {
        assert!(n["lb_traffic"]["responses"].as_u64().unwrap() > 0, "{n:#}");
    }
    assert!(
        web02["lb_traffic"]["status_5xx"].as_u64().unwrap() > 0,
        "{web02:#}"
    );
    for n in [&nodes[0], &nodes[2], &nodes[3]] {
        assert_eq!(n["traffic"]["status_5xx"], 0, "{n:#}");
        assert!(
            n["traffic"]["latency_ms"]["p95"].as_f64().unwrap() < 200.0,
            "{n:#}"
        );
    }
    // Every failed request was one of web02's injected errors (500s,
    // until its recycle): none dropped, none refused. (Their count goes on
    // after the snapshot, until the recycle drains web02.)
    assert!(
        report.failures.keys().all(|k| k == "HTTP 500"),
        "{report:?}"
    );
}
