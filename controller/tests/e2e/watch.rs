//! `farmctl status --watch` when not on a terminal: one snapshot after
//! another, a run's phase on the nodes it holds, Ctrl-C leaving cleanly.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_snapshots_with_the_runs_phase_and_leaves_on_ctrl_c() {
    let farm = farm(SandboxSpec {
        nodes: 2,
        releases: false,
        pool_yaml: "    startup: 3s\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let state = farm.sandbox.dir.join("state").display().to_string();

    // Snapshots, one after another, each a whole table.
    let out = farmctl(&[
        "status",
        "-i",
        &inv,
        "--watch",
        "--interval",
        "100ms",
        "--count",
        "3",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.matches("--- farm demo at ").count(), 3, "{text}");
    // The node table's row (the traffic table has its own web02 line).
    assert_eq!(text.matches("\nweb02        yes").count(), 3, "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no terminal codes when not on a terminal"
    );

    // A run holds web01: the watch says which run and where it is.
    let run = {
        let (inv, state) = (inv.clone(), state.clone());
        tokio::spawn(async move {
            farmctl(&["--state-dir", &state, "recycle", "-i", &inv, "--yes"]).await
        })
    };
    let log = farm.sandbox.nodes[0].event_log.clone();
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("\"recycle\"")
        },
        "web01 to be recycled"
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args([
            "--state-dir",
            &state,
            "status",
            "-i",
            &inv,
            "--watch",
            "--interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    farm_proto::assert_eventually!(
        Duration::from_secs(20),
        async {
            let mut buf = [0u8; 4096];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), stdout.read(&mut buf)).await
            {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            seen.lines()
                .any(|l| l.starts_with("web01") && l.contains(": operating"))
        },
        "the watch to show web01 operating"
    );
    // Ctrl-C: it leaves at once, cleanly.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the watch left on Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let line = seen
        .lines()
        .find(|l| l.starts_with("web01") && l.contains(": operating"))
        .unwrap();
    // Who holds it, since when, until when.
    assert!(
        line.contains("| leased: ")
            && line.contains(" for run ")
            && line.contains(" ago, runs out in "),
        "{line}"
    );
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
