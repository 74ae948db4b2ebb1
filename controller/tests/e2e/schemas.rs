//! Every `--output json|jsonl` answer matches its JSON Schema in
//! `docs/schemas/` — checked on the real binary's outputs, so a key that
//! is renamed, dropped or changes type fails here before a pipeline
//! notices. (The canary, traffic-health and resume tests check the
//! reports only they produce: analysis, diagnostics, a resumed run.)
use crate::common::schema::{check, check_lines};
use crate::common::*;
use farmctl::sandbox::SandboxSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_output_matches_its_schema() {
    let farm = farm(SandboxSpec {
        nodes: 2,
        lb_kind: "haproxy".into(),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let state = tempfile::tempdir().unwrap();
    let st = state.path().display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--state-dir", st.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        farmctl(&args).await
    };

    let out = run(ctl(&["validate", "-i", &inv, "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("validate", &json(&out));
    let bad = state.path().join("bad.yaml");
    std::fs::write(&bad, "farm: [1\n").unwrap();
    let bad = bad.display().to_string();
    let out = run(ctl(&["validate", "-i", &bad, "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(2));
    check("validate", &json(&out));

    let out = run(ctl(&["plan", "recycle", "-i", &inv, "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("plan", &json(&out));
    let out = run(ctl(&["plan", "recycle", "-i", &bad, "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(2));
    check("refusal", &json(&out));

    let out = run(ctl(&["recycle", "-i", &inv, "--yes", "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    check("report", &report);
    let out = run(ctl(&["recycle", "-i", &inv, "--yes", "-o", "jsonl"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check_lines("event", &String::from_utf8_lossy(&out.stdout));
    let out = run(ctl(&[
        "recycle", "-i", &inv, "--pool", "Nope", "--yes", "-o", "jsonl",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3));
    check_lines("event", &String::from_utf8_lossy(&out.stdout));
    let out = run(ctl(&[
        "recycle", "-i", &inv, "--pool", "Nope", "--yes", "-o", "json",
    ]))
    .await;
    check("refusal", &json(&out));

    let out = run(ctl(&["status", "-i", &inv, "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("status", &json(&out));
    let out = run(ctl(&[
        "status",
        "-i",
        &inv,
        "--watch",
        "--count",
        "2",
        "--interval",
        "1s",
        "-o",
        "jsonl",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let watched = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(watched.lines().count(), 2, "{watched}");
    check_lines("status", &watched);

    let out = run(ctl(&["runs", "-o", "json"])).await;
    check("runs", &json(&out));
    let run_id = report["run_id"].as_str().unwrap();
    let out = run(ctl(&["runs", "show", run_id, "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("runs-show", &json(&out));

    for action in ["drain", "undrain"] {
        let out = run(ctl(&[action, "-i", &inv, "web01", "-o", "json"])).await;
        assert_eq!(out.status.code(), Some(0), "{action}: {}", stderr(&out));
        check("drain", &json(&out));
    }
    let out = run(ctl(&["resume", "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("refusal", &json(&out));
}

/// The schemas themselves are strict enough to catch a renamed or retyped
/// key: a real report with one key renamed, or a number made a string,
/// fails.
#[test]
fn a_renamed_or_retyped_key_fails_its_schema() {
    let report = serde_json::json!({
        "run_id": "r", "action": "recycle", "farm": "f", "outcome": "succeeded",
        "started_at": "2026-12-06T10:00:00Z", "duration_ms": 5, "halted": null,
        "nodes": [{"name": "web01", "outcome": "succeeded", "phase_ms": {"draining": 1},
                   "pids_before": {"P": [1]}, "pids_after": {"P": [2]}, "error": null,
                   "failed_step": null, "in_rotation": true, "lb_redrains": 0}]
    });
    check("report", &report);
    let mut renamed = report.clone();
    let node = renamed["nodes"][0].as_object_mut().unwrap();
    let v = node.remove("outcome").unwrap();
    node.insert("result".into(), v);
    assert!(std::panic::catch_unwind(|| check("report", &renamed)).is_err());
    let mut retyped = report.clone();
    retyped["duration_ms"] = "5".into();
    assert!(std::panic::catch_unwind(|| check("report", &retyped)).is_err());
}
