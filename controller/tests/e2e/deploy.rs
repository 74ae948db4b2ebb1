//! Rolling deployments end to end: real agents staging real packages into
//! their release folders, the simulator serving the files of the release
//! its site points at, HTTP load through a real HAProxy, and the version
//! every node serves as the witness.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use farm_proto::domain::{NodeOutcome, OperationKind};
use farmctl::commands::Settings;
use farmctl::farm::{Farm as FarmClient, Transport};
use farmctl::operator::AssumeYes;
use farmctl::report::Silent;
use farmctl::run::{self, DeployRequest, RunRequest, RunSettings};
use farmctl::sandbox::{release_package, SandboxSpec, FIRST_RELEASE, SITE_HOST, VERSION_FILE};
use farmctl::traffic::Traffic;
use serde_json::Value;

/// What `node` serves at the version file, straight from the node.
async fn served(farm: &Farm, node: usize) -> String {
    let port = farm.sandbox.nodes[node].http_port;
    match farmctl::probe::get(
        "127.0.0.1",
        port,
        Some(SITE_HOST),
        VERSION_FILE,
        Duration::from_secs(5),
    )
    .await
    {
        Ok((200, body)) => body.trim().to_string(),
        other => panic!("web{:02} {VERSION_FILE}: {other:?}", node + 1),
    }
}

async fn all_served(farm: &Farm) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..farm.sandbox.nodes.len() {
        out.push(served(farm, i).await);
    }
    out
}

fn package(farm: &Farm, version: &str) -> String {
    release_package(&farm.sandbox.dir, version)
        .unwrap()
        .display()
        .to_string()
}

/// `farmctl deploy` of release `version` of the sandbox site.
async fn deploy(farm: &Farm, version: &str, extra: &[&str]) -> std::process::Output {
    let inv = inventory(farm);
    let pkg = package(farm, version);
    let mut args = vec![
        "deploy",
        "-i",
        &inv,
        "--site",
        "shop",
        "--package",
        &pkg,
        "--version",
        version,
        "--yes",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    farmctl(&args).await
}

fn versions(report: &Value) -> Vec<String> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["version"].as_str().unwrap_or("-").to_string())
        .collect()
}

fn outcomes(report: &Value) -> Vec<String> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["outcome"].as_str().unwrap().to_string())
        .collect()
}

fn count(farm: &Farm, node: &str, event: &str) -> usize {
    events(farm)
        .iter()
        .filter(|e| e.node == node && e.event == event)
        .count()
}

/// Everything under a node's releases folder, relative to it.
fn release_tree(farm: &Farm, i: usize) -> Vec<String> {
    let root = farm.sandbox.dir.join(format!("web{:02}", i + 1));
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(&root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Asks for `VERSION_FILE` through HAProxy until stopped: every answer.
fn watch_versions(
    farm: &Farm,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Vec<String>>,
) {
    let port = farm.sandbox.haproxy.as_ref().unwrap().frontend;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let answer = farmctl::probe::get(
                "127.0.0.1",
                port,
                Some(SITE_HOST),
                VERSION_FILE,
                Duration::from_secs(10),
            )
            .await;
            seen.push(match answer {
                Ok((200, body)) => body.trim().to_string(),
                other => format!("{other:?}"),
            });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = stopped.changed() => return seen,
            }
        }
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_and_its_rollback_fail_no_request() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        ..SandboxSpec::default()
    })
    .await;
    assert_eq!(all_served(&farm).await, ["1.0.0"; 4]);
    let inv = inventory(&farm);

    // What it would do, first: four steps, nothing touched.
    let pkg = package(&farm, "2.0.0");
    let out = farmctl(&[
        "plan",
        "deploy",
        "-i",
        &inv,
        "--site",
        "shop",
        "--version",
        "2.0.0",
        "--package",
        &pkg,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["steps"].as_array().unwrap().len(), 4);
    assert_eq!(json(&out)["action"], "deploy");
    let out = farmctl(&["plan", "deploy", "-i", &inv, "--site", "shop"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs --version"), "{}", stderr(&out));

    // Deploy 2.0.0 under load, requests in flight on every node.
    let monitor = StatsMonitor::start(&farm);
    let (stop, versions_seen) = watch_versions(&farm);
    let traffic = Traffic::start(long_requests(&farm));
    let out = deploy(&farm, "2.0.0", &[]).await;
    let load = traffic.stop().await;
    stop.send_replace(true);
    let seen = versions_seen.await.unwrap();
    let changes = monitor.finish().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    crate::common::schema::check("report", &report);
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(versions(&report), ["2.0.0"; 4]);
    assert!(load.requests_sent > 100, "{load:?}");
    assert_eq!(load.requests_failed, 0, "{load:?}");
    assert_drained_in_order(&changes);
    // Through the balancer, only ever one of the two releases, and the
    // new one for good once it is out.
    assert!(
        seen.iter().all(|v| v == "1.0.0" || v == "2.0.0"),
        "{seen:?}"
    );
    let first_new = seen
        .iter()
        .position(|v| v == "2.0.0")
        .expect("2.0.0 served");
    assert!(seen.len() > first_new + 1, "{seen:?}");
    assert_eq!(all_served(&farm).await, ["2.0.0"; 4]);
    for (i, node) in report["nodes"].as_array().unwrap().iter().enumerate() {
        assert_ne!(
            node["pids_before"],
            node["pids_after"],
            "web{:02} was not recycled",
            i + 1
        );
        assert_eq!(audited(&farm, i, "Stage").len(), 1, "web{:02}", i + 1);
    }
    let st = status(&farm).await;
    assert!(
        (0..4).all(|i| st["nodes"][i]["releases"]["shop"] == "2.0.0"),
        "{st}"
    );
    assert_eq!(st["mixed_versions"], serde_json::json!({}));

    // The same deploy again has nothing to do: no node is drained.
    let drains_before = count(&farm, "web01", "drain");
    let again = deploy(&farm, "2.0.0", &[]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(outcomes(&json(&again)), ["skipped"; 4]);
    assert_eq!(count(&farm, "web01", "drain"), drains_before);

    // The rollback's plan names the release it goes back to.
    let out = farmctl(&[
        "plan", "rollback", "-i", &inv, "--site", "shop", "--output", "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["steps"].as_array().unwrap().len(), 4);

    // Back to what the nodes served before, no upload, under load.
    let traffic = Traffic::start(long_requests(&farm));
    let out = farmctl(&[
        "rollback", "-i", &inv, "--site", "shop", "--yes", "--output", "json",
    ])
    .await;
    let load = traffic.stop().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(versions(&json(&out)), [FIRST_RELEASE; 4]);
    assert_eq!(load.requests_failed, 0, "{load:?}");
    assert_eq!(all_served(&farm).await, [FIRST_RELEASE; 4]);
    assert!((0..4).all(|i| audited(&farm, i, "Stage").len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_does_not_take_is_reverted_and_the_node_returned() {
    // web02's IIS takes the new path but keeps serving the old files.
    let farm = farm(SandboxSpec {
        sim_extra: [(1, "faults:\n  switch_ignored: true\n".to_string())].into(),
        ..SandboxSpec::default()
    })
    .await;
    let out = deploy(&farm, "2.0.0", &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(
        outcomes(&report),
        ["succeeded", "failed", "skipped", "skipped"]
    );
    assert_eq!(versions(&report), ["2.0.0", "1.0.0", "1.0.0", "1.0.0"]);
    let web02 = &report["nodes"][1];
    assert_eq!(web02["in_rotation"], true);
    let err = web02["error"].as_str().unwrap();
    assert!(
        err.contains("\"2.0.0\"") && err.contains("served \"1.0.0\""),
        "{err}"
    );
    // Switched, found wrong, switched back and recycled: serving, drained
    // no more, the others untouched.
    assert_eq!(count(&farm, "web02", "switch"), 2);
    assert_eq!(count(&farm, "web02", "recycle"), 2);
    assert_eq!(count(&farm, "web02", "undrain"), 1);
    assert!(events(&farm)
        .iter()
        .all(|e| e.node != "web03" && e.node != "web04"));
    assert_eq!(
        all_served(&farm).await,
        ["2.0.0", "1.0.0", "1.0.0", "1.0.0"]
    );
    let st = status(&farm).await;
    assert_eq!(
        st["mixed_versions"]["shop"],
        serde_json::json!(["1.0.0", "2.0.0"])
    );
    assert!((0..4).all(|i| st["nodes"][i]["drained"] == false));

    // The nodes did not all serve one release before: rollback asks.
    let inv = inventory(&farm);
    let out = farmctl(&["rollback", "-i", &inv, "--site", "shop", "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--to"), "{}", stderr(&out));
    // Named, it touches only the node not on it.
    let out = farmctl(&[
        "rollback", "-i", &inv, "--site", "shop", "--to", "1.0.0", "--yes", "--output", "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        outcomes(&json(&out)),
        ["succeeded", "skipped", "skipped", "skipped"]
    );
    assert_eq!(all_served(&farm).await, ["1.0.0"; 4]);
    assert_eq!(count(&farm, "web02", "recycle"), 2);
    assert_eq!(status(&farm).await["mixed_versions"], serde_json::json!({}));
}

/// A zip of `entries`, written as the `zip` crate writes any name.
fn zip_with(dir: &Path, name: &str, entries: &[(&str, &[u8])]) -> String {
    farmctl::release::write_package(&dir.join(name), entries)
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packages_and_requests_touch_nothing() {
    let farm = farm(SandboxSpec {
        nodes: 2,
        ..SandboxSpec::default()
    })
    .await;
    let dir = farm.sandbox.dir.clone();
    let inv = inventory(&farm);
    let good = package(&farm, "2.0.0");
    let not_zip = dir.join("not-a.zip");
    std::fs::write(&not_zip, b"PK but not really").unwrap();
    let empty = dir.join("empty.zip");
    std::fs::write(&empty, b"").unwrap();
    let no_probe = dir.join("no-version-probe.yaml");
    let text = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    let without: String = text
        .lines()
        .filter(|l| {
            !l.contains("version_probe") && !l.contains(VERSION_FILE) && !l.contains("{version}")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&no_probe, without).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                zip_with(&dir, "up.zip", &[("../escape.txt", b"x")]),
                "2.0.0".into(),
            ],
            "../escape.txt",
        ),
        (
            vec![
                zip_with(&dir, "abs.zip", &[("/etc/cron.d/x", b"x")]),
                "2.0.0".into(),
            ],
            "/etc/cron.d/x",
        ),
        (
            vec![
                zip_with(&dir, "drive.zip", &[("C:/Windows/x.dll", b"x")]),
                "2.0.0".into(),
            ],
            "C:/Windows/x.dll",
        ),
        (
            vec![
                zip_with(&dir, "ads.zip", &[("web.config:evil", b"x")]),
                "2.0.0".into(),
            ],
            "web.config:evil",
        ),
        (
            vec![not_zip.display().to_string(), "2.0.0".into()],
            "not a zip",
        ),
        (vec![empty.display().to_string(), "2.0.0".into()], "empty"),
        (
            vec![
                dir.join("missing.zip").display().to_string(),
                "2.0.0".into(),
            ],
            "missing.zip",
        ),
        (vec![good.clone(), "../2.0.0".into()], "version"),
        (vec![good.clone(), "2.0.0/x".into()], "version"),
    ];
    for (case, expect) in &cases {
        let out = farmctl(&[
            "deploy",
            "-i",
            &inv,
            "--site",
            "shop",
            "--package",
            &case[0],
            "--version",
            &case[1],
            "--yes",
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{case:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{case:?}: {}", stderr(&out));
    }
    let other = [
        (vec!["--site", "nosuch"], inv.clone(), "nosuch"),
        (
            vec!["--site", "shop"],
            no_probe.display().to_string(),
            "version_probe",
        ),
    ];
    for (site, inventory, expect) in &other {
        let mut args = vec![
            "deploy",
            "-i",
            inventory,
            "--package",
            &good,
            "--version",
            "2.0.0",
            "--yes",
        ];
        args.extend_from_slice(site);
        let out = farmctl(&args).await;
        assert_eq!(out.status.code(), Some(2), "{site:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{site:?}: {}", stderr(&out));
    }
    let trees: Vec<Vec<String>> = (0..2).map(|i| release_tree(&farm, i)).collect();

    // The package changes after the run read it: the upload is refused
    // (size and sha256 end to end), the error says why, no node is drained.
    let f = FarmClient::connect(
        farm_inventory::load(&farm.sandbox.inventory).unwrap(),
        Transport::Tls,
    )
    .unwrap();
    let swapped = dir.join("swapped.zip");
    std::fs::copy(&good, &swapped).unwrap();
    let mut req = RunRequest::new(OperationKind::Deploy);
    req.deploy = Some(DeployRequest {
        site: "shop".into(),
        version: "2.0.0".into(),
        package: Some(swapped.clone()),
    });
    let run_settings = RunSettings::resolve(&f.inventory, &req).unwrap();
    farmctl::release::write_package(&swapped, &[("version.txt", b"6.6.6")]).unwrap();
    let settings = Settings {
        quiet: true,
        insecure: false,
        state_dir: Some(dir.join("state")),
        state_store: None,
        clock: std::sync::Arc::new(farmctl::window::SystemClock),
        reporter: std::sync::Arc::new(Silent),
    };
    let env = settings.run_env(&AssumeYes, None);
    let report = run::start(&f, &farm.sandbox.inventory, run_settings, &env)
        .await
        .unwrap();
    assert!(!report.succeeded());
    let failed: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.outcome == NodeOutcome::Failed)
        .map(|n| n.error.as_deref().unwrap_or(""))
        .collect();
    assert!(
        !failed.is_empty()
            && failed
                .iter()
                .all(|e| e.contains("changed since the run read it")),
        "{report:?}"
    );
    assert!(report.nodes.iter().all(|n| n.in_rotation));

    assert!(events(&farm).is_empty(), "{:?}", events(&farm));
    assert_eq!(all_served(&farm).await, ["1.0.0"; 2]);
    for (i, tree) in trees.iter().enumerate() {
        assert_eq!(&release_tree(&farm, i), tree, "web{:02}", i + 1);
        assert!(audited(&farm, i, "Switch").is_empty() && audited(&farm, i, "Drain").is_empty());
        assert!(
            !tree
                .iter()
                .any(|p| p.contains("2.0.0") || p.contains("upload")),
            "{tree:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_anywhere_resumes_to_the_release() {
    let farm = farm(SandboxSpec {
        detection: Duration::from_millis(100),
        pool_yaml: "    startup: 100ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let state = farm.sandbox.dir.join("state");
    let state_arg = state.display().to_string();
    let inv = inventory(&farm);
    // Killed while staging, about web01's switch, about web03's recycle
    // (phase records: 4 staging, 4 staged, then 7 per node).
    for (version, k) in [("2.0.0", 2), ("3.0.0", 11), ("4.0.0", 26)] {
        let pkg = package(&farm, version);
        let before = |event: &str| -> Vec<usize> {
            (1..=4)
                .map(|n| count(&farm, &format!("web{n:02}"), event))
                .collect()
        };
        let (recycles, switches) = (before("recycle"), before("switch"));
        let args = [
            "deploy",
            "-i",
            &inv,
            "--site",
            "shop",
            "--package",
            &pkg,
            "--version",
            version,
            "--yes",
        ];
        kill_after(&state, &args, k).await;
        let out = farmctl(&["--state-dir", &state_arg, "resume", "--output", "json"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{version} killed at {k}: {}",
            stderr(&out)
        );
        assert_eq!(all_served(&farm).await, [version; 4], "killed at {k}");
        for n in 1..=4 {
            let node = format!("web{n:02}");
            assert_eq!(
                count(&farm, &node, "recycle"),
                recycles[n - 1] + 1,
                "{node} recycled once for {version} (killed at {k})"
            );
            assert_eq!(
                count(&farm, &node, "switch"),
                switches[n - 1] + 1,
                "{node} switched once to {version} (killed at {k})"
            );
        }
        assert!(max_drained_at_once(&events(&farm)) <= 1);
        // Each node took the package's bytes once, whether the call that
        // took them was then cut off by the kill or not (an upload cut off
        // half-way was not kept, so it may have been sent again).
        for i in 0..4 {
            let uploads = audited(&farm, i, "Stage")
                .iter()
                .filter(|a| {
                    let d = a["detail"].as_str().unwrap_or("");
                    d.contains(&format!("version {version} ")) && d.contains("received all bytes")
                })
                .count();
            assert_eq!(
                uploads,
                1,
                "web{:02} {version} (killed at {k}): {:#?}",
                i + 1,
                audited(&farm, i, "Stage")
            );
        }
        let st = status(&farm).await;
        assert!(
            (0..4).all(|i| st["nodes"][i]["drained"] == false && st["nodes"][i]["healthy"] == true)
        );
    }
    // Old releases were pruned (keep 3) and no upload is left behind.
    for i in 0..4 {
        let tree = release_tree(&farm, i);
        assert!(
            !tree
                .iter()
                .any(|p| p.ends_with("/1.0.0") || p.contains("upload")),
            "{tree:?}"
        );
        assert!(tree.iter().any(|p| p.ends_with("/2.0.0")), "{tree:?}");
    }
}
