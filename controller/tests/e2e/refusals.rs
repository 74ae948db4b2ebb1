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

/// Without USER (a service, a container), the holder a run records is the
/// OS account's name, not `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_the_holder_is_the_os_account() {
    let farm = farm(SandboxSpec {
        nodes: 1,
        releases: false,
        ..SandboxSpec::default()
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args([
            "--state-dir",
            &state.path().display().to_string(),
            "recycle",
            "-i",
        ])
        .arg(&farm.sandbox.inventory)
        .args(["--yes", "-q"])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("USERNAME")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = std::fs::read_dir(state.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(journal)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let holder = header["holder"].as_str().unwrap();
    assert!(!holder.starts_with("unknown@"), "{holder}");
}

/// `resume` with nothing to resume answers so and exits 0.
#[tokio::test]
async fn resume_with_nothing_to_resume_exits_0() {
    let state = tempfile::tempdir().unwrap();
    let s = state.path().display().to_string();
    let out = farmctl(&["--state-dir", &s, "resume"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to resume"),
        "{}",
        stderr(&out)
    );
    let out = farmctl(&["--state-dir", &s, "resume", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["outcome"], "nothing_to_resume");
}
