//! A run's picture: `runs show` from a real run's journal, its HTML page
//! rendered by a real headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs; skipped with a message where it is missing), and
//! the `--output jsonl` event stream of the same run.

use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use serde_json::Value;

fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// A recycle of 3 nodes where web02 never gets healthy: streamed as
/// jsonl, journaled in the farm's state dir.
async fn failing_run(farm: &Farm) -> Vec<Value> {
    let state = farm.sandbox.dir.join("state").display().to_string();
    let out = farmctl(&[
        "--state-dir",
        &state,
        "recycle",
        "-i",
        &inventory(farm),
        "--yes",
        "--output",
        "jsonl",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect()
}

fn spec() -> SandboxSpec {
    let mut s = SandboxSpec {
        nodes: 3,
        releases: false,
        healthy_timeout: Duration::from_secs(2),
        pool_yaml: "    startup: 100ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    };
    s.sim_extra
        .insert(1, "faults:\n  never_healthy: true\n".into());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_events_and_draws_its_picture() {
    let farm = farm(spec()).await;
    let events = failing_run(&farm).await;

    // jsonl: started first, finished last with the whole report, every
    // phase change in between in order, each line with its keys.
    // (notes, such as preflight's, may come before the run has an id)
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|k| *k != "note")
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    let started = events
        .iter()
        .position(|e| e["event"] == "run_started")
        .unwrap();
    let run_id = events[started]["run_id"].as_str().unwrap();
    assert!(events[started..]
        .iter()
        .all(|e| e["run_id"] == run_id && e["time"].is_string()));
    assert_eq!(
        events[started]["nodes"],
        serde_json::json!(["web01", "web02", "web03"])
    );
    let phases = |node: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == "phase" && e["node"] == node)
            .map(|e| e["phase"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        phases("web01"),
        [
            "draining",
            "quiescing",
            "operating",
            "verifying",
            "returning",
            "done"
        ]
    );
    assert_eq!(phases("web02").last().map(String::as_str), Some("failed"));
    assert!(phases("web03").is_empty(), "the run halted before web03");
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "node_finished")
        .collect();
    assert_eq!(finished[0]["node"], "web01");
    assert_eq!(finished[1]["outcome"], "failed");
    assert!(finished[1]["error"].as_str().unwrap().contains("healthy"));
    let last = events.last().unwrap();
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["report"]["nodes"][1]["outcome"], "failed");
    // Done before web02 started, in stream order.
    let pos = |node: &str, phase: &str| {
        events
            .iter()
            .position(|e| e["node"] == node && e["phase"] == phase)
            .unwrap()
    };
    assert!(pos("web01", "done") < pos("web02", "draining"));

    // runs show: the same run, phase by phase, and the error.
    let state = farm.sandbox.dir.join("state").display().to_string();
    let html = farm.sandbox.dir.join("run.html");
    let html_arg = html.display().to_string();
    let out = farmctl(&[
        "--state-dir",
        &state,
        "runs",
        "show",
        run_id,
        "--html",
        &html_arg,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("run {run_id}: recycle")), "{text}");
    assert!(text.contains("    operating"), "{text}");
    assert!(text.contains("FAILED at +"), "{text}");
    // The same in JSON: each node's result under `outcome`, as in reports.
    let shown = json(
        &farmctl(&[
            "--state-dir",
            &state,
            "runs",
            "show",
            run_id,
            "--output",
            "json",
        ])
        .await,
    );
    assert_eq!(shown["nodes"][1]["outcome"], "failed", "{shown:#}");
    assert_eq!(shown["nodes"][0]["outcome"], "succeeded", "{shown:#}");
    // An unknown run: the newest ones are named.
    let out = farmctl(&[
        "--state-dir",
        &state,
        "runs",
        "show",
        "20990101T000000-abcdef",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("the newest: {run_id} (recycle, failed)")),
        "{}",
        stderr(&out)
    );

    let Some(browser) = chromium() else {
        eprintln!("SKIPPED the browser half: no chromium on PATH (apt-get install -y chromium; .ci/run does)");
        return;
    };
    // The page as a real browser parses it: no script, no fetch.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"));
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::process::Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("<svg id=\"timeline\""), "{dom}");
    for n in ["web01", "web02", "web03"] {
        assert!(
            dom.contains(&format!("<g class=\"node\" data-node=\"{n}\"")),
            "{n}"
        );
    }
    let bars = dom.matches("class=\"phase phase-").count();
    assert!(bars >= 6, "{bars} phase bars");
    assert!(dom.contains("class=\"phase phase-operating\""));
    assert_eq!(dom.matches("<circle class=\"error\"").count(), 1);
    assert!(dom.contains("<svg id=\"capacity\"") && dom.contains("class=\"in-rotation\""));
    assert!(dom.contains("class=\"min-healthy\""));
    assert!(dom.contains("<ul id=\"errors\"><li><b>web02</b>"), "{dom}");
    // And it draws: a screenshot of it is a real picture.
    let shot = farm.sandbox.dir.join("run.png");
    let out = tokio::process::Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[1..4], b"PNG");
    assert!(png.len() > 10_000, "{} bytes", png.len());
}
