//! A pipeline gets its answer on stdout whatever the outcome: a refusal
//! with `--output json` is a JSON object, with `--output jsonl` the last
//! line is `run_finished`.
use crate::common::*;
use farmctl::sandbox::SandboxSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_answer_on_stdout_in_json_and_jsonl() {
    let farm = farm(SandboxSpec {
        nodes: 2,
        releases: false,
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let out = farmctl(&[
        "recycle", "-i", &inv, "--pool", "Nope", "--yes", "--output", "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let answer = json(&out);
    assert_eq!(answer["outcome"], "refused", "{answer:#}");
    assert_eq!(answer["exit_code"], 3);
    assert!(
        answer["reason"].as_str().unwrap().contains("Nope"),
        "{answer:#}"
    );
    assert!(answer["problems"].is_array());

    let out = farmctl(&[
        "recycle", "-i", &inv, "--pool", "Nope", "--yes", "--output", "jsonl",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "run_finished", "{text}");
    assert_eq!(last["outcome"], "refused", "{text}");
    assert!(last["time"].is_string());

    // Bad input: the same shape, its own outcome word.
    let out = farmctl(&[
        "recycle",
        "-i",
        &inv,
        "--max-unavailable",
        "0",
        "--yes",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(json(&out)["outcome"], "bad_input");
}
