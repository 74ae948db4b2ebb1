//! The terminal view, read off a real tmux screen during a recycle: the
//! clock moves while a node verifies (not only when one finishes), an ETA
//! once a node is done, the nodes at work and pending, and the first
//! Ctrl-C acknowledged on screen at once; the run ends `stopped`.
use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `00:00:0N` clock of the overall bar, when the screen shows one.
fn clock(screen: &str) -> Option<String> {
    screen
        .lines()
        .find(|l| l.contains(" nodes 00:"))
        .and_then(|l| l.split(" nodes ").nth(1))
        .map(|r| r.chars().take(8).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_ticks_estimates_and_acknowledges_ctrl_c() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no tmux on PATH (apt-get install -y tmux; .ci/run does)");
        return;
    }
    // Each node verifies for about 2.5 s (a slow warm-up).
    let farm = farm(SandboxSpec {
        nodes: 5,
        releases: false,
        pool_yaml: "    startup: 200ms\n    warmup: 2500ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let session = format!("farmctl-test-{}", std::process::id());
    let command = format!(
        "{} --state-dir {} recycle -i {} --yes; sleep 60",
        env!("CARGO_BIN_EXE_farmctl"),
        state.path().display(),
        inventory(&farm)
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-t", &session]);
    // The clock moves while a node verifies: two readings with the same
    // node verifying show different times.
    let verifying = |screen: &str| -> Vec<String> {
        screen
            .lines()
            .filter(|l| l.contains(" verifying"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("web"))
                    .map(str::to_string)
            })
            .collect()
    };
    let mut before: Option<(String, Vec<String>)> = None;
    let moved = farm_proto::eventually!(
        Duration::from_secs(40),
        async {
            let s = screen();
            let now = clock(&s).map(|c| (c, verifying(&s)));
            let seen = match (&before, &now) {
                (Some((c0, v0)), Some((c1, v1))) => c0 != c1 && v1.iter().any(|n| v0.contains(n)),
                _ => false,
            };
            before = now;
            seen.then_some(s)
        },
        "the clock to move while a node verifies:\n{}",
        screen()
    );
    assert!(moved.contains("pending"), "{moved}");
    // Once a node is done: an estimate of what is left.
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async { screen().contains("left)") },
        "an ETA on screen:\n{}",
        screen()
    );
    // Ctrl-C: acknowledged on screen at once, the node at work finished.
    tmux(&["send-keys", "-t", &session, "C-c"]);
    farm_proto::assert_eventually!(
        Duration::from_millis(1500),
        async { screen().contains("Ctrl-C: stopping after the nodes at work are done") },
        "the Ctrl-C acknowledged on screen:\n{}",
        screen()
    );
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async { screen().contains("recycle STOPPED of farm") },
        "the run to end stopped:\n{}",
        screen()
    );
    tmux(&["kill-session", "-t", &session]);
}
