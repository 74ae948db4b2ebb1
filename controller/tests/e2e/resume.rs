//! The controller killed with SIGKILL at many points of a rolling run, then
//! `farmctl resume`: the farm ends whole and nothing is done twice.

use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;

fn count(farm: &Farm, event: &str) -> Vec<usize> {
    let all = events(farm);
    ["web01", "web02", "web03", "web04"]
        .iter()
        .map(|n| {
            all.iter()
                .filter(|e| e.node == *n && e.event == event)
                .count()
        })
        .collect()
}

/// Every node of `farm` healthy and not drained, and each of `also`
/// (a JSON pointer into the node, its value) as said; `when` names the
/// moment in the failure message.
async fn assert_whole(farm: &Farm, also: &[(&str, &str)], when: &str) {
    let st = status(farm).await;
    for n in st["nodes"].as_array().unwrap() {
        assert_eq!(n["drained"], false, "{when}: {n:#}");
        assert_eq!(n["healthy"], true, "{when}: {n:#}");
        for (at, want) in also {
            assert_eq!(
                n.pointer(at).and_then(|v| v.as_str()),
                Some(*want),
                "{when}: {n:#}"
            );
        }
    }
}

/// `farmctl resume RUN --retry-failed`: it finishes (exit 0); its report.
async fn resume_retrying(state: &str, run_id: &str) -> serde_json::Value {
    let out = farmctl(&[
        "--state-dir",
        state,
        "resume",
        run_id,
        "--retry-failed",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json(&out)
}

/// Starts `action`, kills the controller once its journal has `k` phase
/// lines, resumes, and checks the farm.
async fn kill_at(farm: &Farm, state: &std::path::Path, action: &str, k: usize, marker: &str) {
    let before = count(farm, marker);
    let inv = inventory(farm);
    let state_arg = state.display().to_string();
    kill_after(state, &[action, "-i", &inv, "--yes"], k).await;

    let out = farmctl(&["--state-dir", &state_arg, "resume", "--output", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{action} killed at {k}: {}",
        stderr(&out)
    );
    let report = json(&out);
    crate::common::schema::check("report", &report);
    assert_eq!(report["outcome"], "succeeded");
    // Nodes finished before the kill keep their PIDs in the summary.
    for n in report["nodes"].as_array().unwrap() {
        assert!(
            n["pids_after"].as_object().is_some_and(|p| !p.is_empty()),
            "{action} killed at {k}: {} has no PIDs after: {report:#}",
            n["name"]
        );
    }
    // The run's whole time agrees with what `runs show` says of it.
    let shown = json(
        &farmctl(&[
            "--state-dir",
            &state_arg,
            "runs",
            "show",
            report["run_id"].as_str().unwrap(),
            "--output",
            "json",
        ])
        .await,
    );
    crate::common::schema::check("runs-show", &shown);
    let (whole, shown_ms) = (
        report["run_duration_ms"].as_u64().unwrap(),
        shown["duration_ms"].as_u64().unwrap(),
    );
    assert!(
        whole >= report["duration_ms"].as_u64().unwrap() && whole.abs_diff(shown_ms) < 1500,
        "{action} killed at {k}: resume says {whole} ms, runs show {shown_ms} ms"
    );
    // runs show tells the controller's death and the resume.
    let shown = farmctl(&[
        "--state-dir",
        &state_arg,
        "runs",
        "show",
        report["run_id"].as_str().unwrap(),
    ])
    .await;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("resumed at +") && text.contains("it died or stopped"),
        "{action} killed at {k}: {text}"
    );

    assert_whole(
        farm,
        &[
            ("/lb_state", "UP"),
            ("/services/W3SVC", "RUNNING"),
            ("/services/WAS", "RUNNING"),
        ],
        &format!("{action} killed at {k}"),
    )
    .await;
    let after = count(farm, marker);
    let done: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        done,
        [1, 1, 1, 1],
        "{action} killed at {k}: `{marker}` per node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_controller_anywhere_then_resuming_leaves_the_farm_whole() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        ..SandboxSpec::default()
    })
    .await;
    let state = farm.sandbox.dir.join("state");
    // One node goes through draining, quiescing, operating, verifying,
    // returning, done: 6 lines; kill in each of them and later on.
    for k in [1, 2, 3, 4, 5, 6, 9, 16] {
        kill_at(&farm, &state, "recycle", k, "recycle").await;
    }
    // A reset killed while operating (the agent finishes it on its own)
    // and while returning.
    for k in [3, 11] {
        kill_at(&farm, &state, "reset", k, "iis_start").await;
    }
    let runs = farmctl(&[
        "--state-dir",
        &state.display().to_string(),
        "runs",
        "--output",
        "json",
    ])
    .await;
    let runs = json(&runs);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 10);
    assert!(
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "succeeded"),
        "{runs:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_ctrl_c_finishes_the_node_at_work_and_stops_with_all_in_rotation() {
    let farm = farm(SandboxSpec::default()).await;
    let state = farm.sandbox.dir.join("state");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args([
            "--state-dir",
            &state.display().to_string(),
            "recycle",
            "-i",
            &inventory(&farm),
            "--yes",
            "--output",
            "json",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ctrl-C while web01 is being worked on (its drain is journaled).
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async { phase_lines(&state) >= 1 },
        "the run to start"
    );
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["halted"]
            .as_str()
            .unwrap()
            .contains("stopped by the operator"),
        "{report:#}"
    );
    assert_eq!(
        report["nodes"][0]["outcome"], "succeeded",
        "the node at work was finished"
    );
    assert_eq!(report["nodes"][3]["outcome"], "skipped");
    let st = status(&farm).await;
    assert!((0..4).all(|i| st["nodes"][i]["drained"] == false), "{st:#}");
    // The run ended (not resumable): its journal says so.
    let runs = json(
        &farmctl(&[
            "--state-dir",
            &state.display().to_string(),
            "runs",
            "--output",
            "json",
        ])
        .await,
    );
    // Stopped, not failed: its own outcome word, exit code 1 as before.
    assert_eq!(report["outcome"], "stopped", "{report:#}");
    assert_eq!(runs["runs"][0]["outcome"], "stopped");
}

#[tokio::test]
async fn a_run_whose_controller_still_runs_is_not_resumed() {
    let state = tempfile::tempdir().unwrap();
    // A journal written by a live farmctl on this host (a program named
    // farmctl that waits; the check reads the program's name by PID).
    let bin = state.path().join("farmctl");
    std::fs::copy("/bin/sleep", &bin).unwrap();
    let mut live = tokio::process::Command::new(&bin)
        .arg("120")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let header = farmctl::journal::Header {
        run_id: "20261121T000000-abcdef".into(),
        action: farm_proto::domain::OperationKind::Recycle,
        inventory: "/nonexistent/inventory.yaml".into(),
        pools: vec![],
        nodes: vec!["web01".into()],
        started_at: farmctl::journal::now(),
        holder: farmctl::lease::holder(),
        pid: live.id(),
        settings: None,
    };
    farmctl::journal::Journal::create(state.path(), &header).unwrap();
    let out = farmctl(&["--state-dir", &state.path().display().to_string(), "resume"]).await;
    live.start_kill().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is still running here"),
        "{}",
        stderr(&out)
    );
}

/// A journal in `state` for a run of `inventory` (written by hand).
fn journal_for(state: &std::path::Path, inventory: &std::path::Path) -> std::path::PathBuf {
    let inv = farm_inventory::load(inventory).unwrap();
    let req = farmctl::run::RunRequest::new(farm_proto::domain::OperationKind::Recycle);
    let settings = farmctl::run::RunSettings::resolve(&inv, &req).unwrap();
    let header = farmctl::journal::Header {
        run_id: "20261121T000000-abcdef".into(),
        action: farm_proto::domain::OperationKind::Recycle,
        inventory: inventory.to_path_buf(),
        pools: vec![],
        nodes: settings.nodes.clone(),
        started_at: farmctl::journal::now(),
        holder: "someone@elsewhere".into(),
        pid: None,
        settings: Some(settings),
    };
    let j = farmctl::journal::Journal::create(state, &header).unwrap();
    j.path().to_path_buf()
}

const FARM: &str = "farm: shop\nagent: {tls: {ca: ca.pem, cert: c.pem, key: k.pem}}\nnodes:\n  - {name: web01, address: 127.0.0.1}\n  - {name: web02, address: 127.0.0.2}\nsites: [{name: shop}]\n";

#[tokio::test]
async fn a_journal_phase_this_farmctl_does_not_know_refuses_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("farm.yaml");
    std::fs::write(&inv, FARM).unwrap();
    let path = journal_for(dir.path(), &inv);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"type\":\"phase\",\"t\":\"2026-11-21T00:00:01Z\",\"node\":\"web01\",\"phase\":\"draining\"}\n");
    text.push_str("{\"type\":\"phase\",\"t\":\"2026-11-21T00:00:02Z\",\"node\":\"web01\",\"phase\":\"defragmenting\"}\n");
    std::fs::write(&path, text).unwrap();
    let out = farmctl(&[
        "--state-dir",
        &dir.path().display().to_string(),
        "resume",
        "20261121T000000-abcdef",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("20261121T000000-abcdef.jsonl:3") && err.contains("defragmenting"),
        "{err}"
    );
}

#[tokio::test]
async fn an_inventory_of_another_farm_is_refused_by_resume() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("farm.yaml");
    std::fs::write(&inv, FARM).unwrap();
    journal_for(dir.path(), &inv);
    let state = dir.path().display().to_string();
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        FARM.replace("  - {name: web02, address: 127.0.0.2}\n", ""),
    )
    .unwrap();
    let out = farmctl(&[
        "--state-dir",
        &state,
        "resume",
        "-i",
        &other.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nodes differ"), "{}", stderr(&out));
    // New addresses are fine as far as the contract goes (the agents are
    // not there, so it stops at the next step: reaching them).
    let moved = dir.path().join("moved.yaml");
    std::fs::write(&moved, FARM.replace("127.0.0.2", "10.9.9.9")).unwrap();
    let out = farmctl(&[
        "--state-dir",
        &state,
        "resume",
        "-i",
        &moved.display().to_string(),
    ])
    .await;
    assert!(!stderr(&out).contains("nodes differ"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_journal_without_a_recorded_contract_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    // What an older farmctl wrote: no `settings` in the header.
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(
        runs.join("20261121T000000-abcdef.jsonl"),
        "{\"type\":\"run\",\"run_id\":\"20261121T000000-abcdef\",\"action\":\"recycle\",\"inventory\":\"/x.yaml\",\"pools\":[],\"nodes\":[\"web01\"],\"max_unavailable\":\"1\",\"started_at\":\"2026-11-21T00:00:00Z\",\"holder\":\"a@b\"}\n",
    )
    .unwrap();
    let out = farmctl(&["--state-dir", &dir.path().display().to_string(), "resume"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not record the run's limits"),
        "{}",
        stderr(&out)
    );
}

/// The records of `node`'s agent for operations of `kind`, from its state
/// directory.
fn op_records(farm: &Farm, node: &str, kind: &str) -> Vec<serde_json::Value> {
    let dir = farm
        .sandbox
        .dir
        .join(format!("{node}.agent-state"))
        .join("ops");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(|r| r["kind"] == kind)
                .collect()
        })
        .unwrap_or_default()
}

/// The controller killed while web01 recycles, web01's agent restarted
/// (a service restart, a reboot) once the recycle finished, then
/// `farmctl resume`: the agent answers the operation id from its record
/// on disk, so the recycle is not run a second time — though every PID
/// on the node is new after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_mid_run_answers_the_resumed_operation_from_its_record() {
    let spec = SandboxSpec::default();
    let mut farm = farm(spec.clone()).await;
    let state = farm.sandbox.dir.join("state");
    let inv = inventory(&farm);
    // draining, quiescing, operating: web01's recycle was asked for.
    kill_after(&state, &["recycle", "-i", &inv, "--yes"], 3).await;
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async {
            op_records(&farm, "web01", "recycle")
                .iter()
                .any(|r| r["finished_unix_ms"].is_u64())
        },
        "web01's agent to record its recycle as finished"
    );
    let recycles_before = count(&farm, "recycle");
    farm.sandbox
        .restart_node(&spec, 0)
        .await
        .expect("restart web01");

    let out = farmctl(&[
        "--state-dir",
        &state.display().to_string(),
        "resume",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["outcome"], "succeeded", "{report:#}");

    // web01's recycle ran once, before the restart; the others once each.
    let recycles = count(&farm, "recycle");
    assert_eq!(recycles_before[0], 1, "{recycles_before:?}");
    assert_eq!(recycles, [1, 1, 1, 1], "recycle events per node");
    let records = op_records(&farm, "web01", "recycle");
    assert_eq!(records.len(), 1, "{records:#?}");
    let rec = &records[0];
    assert!(rec["finished_unix_ms"].is_u64(), "{rec:#}");
    assert!(
        rec["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("operation:")),
        "{rec:#}"
    );
    // The resumed controller took the result from that record.
    assert!(
        stderr(&out).contains("the agent's record of")
            || report.to_string().contains("the agent's record of"),
        "{}\n{report:#}",
        stderr(&out)
    );
    assert_whole(&farm, &[], "after the resume").await;
}

/// Two `resume`s of one run on the same host: one drives it, the other is
/// refused (exit 3, naming the holder's PID); the journal ends once and
/// no node is recycled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_resumes_of_one_run_exactly_one_drives_it() {
    let farm = farm(SandboxSpec::default()).await;
    let state = tempfile::tempdir().unwrap();
    let before = count(&farm, "recycle");
    let inv = inventory(&farm);
    kill_after(state.path(), &["recycle", "-i", &inv, "--yes"], 3).await;
    let s = state.path().display().to_string();
    let args = ["--state-dir", &s, "resume"];
    let (a, b) = tokio::join!(farmctl(&args), farmctl(&args));
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(3)],
        "a: {}\nb: {}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    assert!(
        stderr(loser).contains("is being driven by another farmctl (PID"),
        "{}",
        stderr(loser)
    );
    let runs = state.path().join("runs");
    let journal = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(journal).unwrap();
    let ends = text.lines().filter(|l| l.contains("\"end\"")).count();
    assert_eq!(ends, 1, "{text}");
    let after = count(&farm, "recycle");
    let done: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(done, [1, 1, 1, 1]);
}

/// A run that halted on a failed node is finished by `resume RUN`: without
/// a word on the failed node it says what to choose; `--retry-failed`
/// does it again under new operation ids (the agent would replay the
/// failure under the old ones) and goes on with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_run_is_finished_by_resume_retrying_its_failed_node() {
    let mut spec = SandboxSpec {
        releases: false,
        ..SandboxSpec::default()
    };
    // web02's IIS does not start three times running: its reset fails.
    spec.sim_extra
        .insert(1, "faults:\n  start_fails: 3\n".into());
    let farm = farm(spec).await;
    let state = tempfile::tempdir().unwrap();
    let s = state.path().display().to_string();
    let inv = inventory(&farm);
    let out = farmctl(&[
        "--state-dir",
        &s,
        "reset",
        "-i",
        &inv,
        "--yes",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let run_id = report["run_id"].as_str().unwrap().to_string();
    assert!(report["halted"].is_string(), "{report:#}");

    let out = farmctl(&["--state-dir", &s, "resume", &run_id]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("web02") && err.contains("--retry-failed") && err.contains("--skip-failed"),
        "{err}"
    );

    let report = resume_retrying(&s, &run_id).await;
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert_whole(&farm, &[("/services/W3SVC", "RUNNING")], "after the retry").await;
    // Ended now: nothing more to resume.
    let out = farmctl(&["--state-dir", &s, "resume", &run_id]).await;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Controller and web01's agent die together while web01 recycles
/// (HAProxy drives the drain): the restarted agent answers the cut
/// recycle as interrupted. `resume` does not leave a healthy node out
/// without saying why, and the run stays finishable: `--retry-failed`
/// recycles web01 under a new operation id and every node ends in
/// rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_controller_and_an_agent_died_together_the_run_is_finished() {
    let spec = SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        pool_yaml: "    startup: 3s\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    };
    let mut farm = farm(spec.clone()).await;
    let state = farm.sandbox.dir.join("state");
    let s = state.display().to_string();
    let inv = inventory(&farm);
    // draining, quiescing, operating: web01's recycle is under way.
    kill_after(&state, &["recycle", "-i", &inv, "--yes"], 3).await;
    farm.sandbox
        .restart_node(&spec, 0)
        .await
        .expect("restart web01");

    let first = farmctl(&["--state-dir", &s, "resume", "--output", "json"]).await;
    let report = json(&first);
    let run_id = report["run_id"].as_str().unwrap().to_string();
    println!(
        "first resume: exit {:?}, web01 {}",
        first.status.code(),
        report["nodes"][0]
    );
    if first.status.code() != Some(0) {
        // web01 failed (its recycle was cut): the report says why, and the
        // summary's command finishes the run.
        let web01 = report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "web01")
            .unwrap();
        assert!(
            web01["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{web01:#}"
        );
        resume_retrying(&s, &run_id).await;
    }
    assert_whole(&farm, &[("/lb_state", "UP")], "after the resume").await;
    let out = farmctl(&["status", "-i", &inv]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
