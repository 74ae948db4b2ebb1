//! The Windows agent (`farm-agent.exe`) under Wine, driven by the Linux
//! `farmctl`: a rolling recycle across two Windows agents, the agent
//! as a Windows service started and stopped through `sc`, and `farmctl
//! guard` as a Windows service (`farmctl.exe service`).
//!
//! `scripts/windows-check` builds the .exe and runs these tests with
//! `FARM_AGENT_WINDOWS_EXE` (and its `WINEPREFIX`) set; without them they
//! say they skipped.
#[path = "e2e/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use farmctl::sandbox::SandboxSpec;

const WINE: &str = "/usr/lib/wine/wine64";

/// The Windows agent, or `None` (and a message saying why the test skips).
fn windows_agent(test: &str) -> Option<PathBuf> {
    match std::env::var_os("FARM_AGENT_WINDOWS_EXE") {
        Some(exe) if Path::new(&exe).is_file() && Path::new(WINE).is_file() => Some(exe.into()),
        _ => {
            eprintln!(
                "SKIPPED {test}: needs farm-agent.exe and Wine (run scripts/windows-check, which sets FARM_AGENT_WINDOWS_EXE)"
            );
            None
        }
    }
}

/// Makes the sandbox start its agents as farm-agent.exe under Wine.
fn agents_under_wine(exe: &Path) {
    let wrapper = Path::new(env!("CARGO_TARGET_TMPDIR")).join("farm-agent-wine");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nWINEDEBUG=-all exec {WINE} '{}' \"$@\"\n",
            exe.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::env::set_var("FARM_AGENT_BIN", &wrapper);
}

/// A Windows path for a Linux one (Wine maps `Z:` to `/`).
fn z(p: &Path) -> String {
    format!("Z:{}", p.display())
}

fn wine(args: &[&str]) -> std::process::Output {
    std::process::Command::new(WINE)
        .args(args)
        .env("WINEDEBUG", "-all")
        .output()
        .expect("run wine")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two Windows agents (each serving its simulated IIS) take a rolling
/// recycle from the Linux farmctl: exit 0, every node's workers replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_recycle_across_two_windows_agents() {
    let Some(exe) = windows_agent("a_rolling_recycle_across_two_windows_agents") else {
        return;
    };
    agents_under_wine(&exe);
    let farm = farm(SandboxSpec {
        nodes: 2,
        ..SandboxSpec::default()
    })
    .await;
    let before = status(&farm).await;
    for n in before["nodes"].as_array().unwrap() {
        assert_eq!(n["reachable"], true, "{n:#}");
    }
    let out = recycle_json(&farm).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let after = status(&farm).await;
    for i in 0..2 {
        let node = &report["nodes"][i];
        assert_eq!(node["outcome"], "succeeded", "{node:#}");
        let old = &before["nodes"][i]["pools"][0]["pids"];
        let new = &after["nodes"][i]["pools"][0]["pids"];
        assert_eq!(&node["pids_before"]["ShopPool"], old);
        assert_eq!(&node["pids_after"]["ShopPool"], new);
        let (old, new) = (old.as_array().unwrap(), new.as_array().unwrap());
        assert!(
            !new.is_empty() && new.iter().all(|p| !old.contains(p)),
            "{old:?} -> {new:?}"
        );
        assert_eq!(after["nodes"][i]["drained"], false);
    }
    farm.sandbox.stop().await;
}

/// `sc query NAME`'s STATE line (`RUNNING`, `STOPPED`, ...), or `None`
/// when there is no such service.
fn sc_state(name: &str) -> Option<String> {
    let out = wine(&["sc", "query", name]);
    text(&out)
        .lines()
        .find(|l| l.trim_start().starts_with("STATE"))
        .and_then(|l| l.split_whitespace().last().map(str::to_string))
}

/// `sc stop NAME`, then waits (bounded) until it is stopped; how long
/// that took.
fn sc_stop(name: &str, within: Duration) -> Duration {
    let stop = wine(&["sc", "stop", name]);
    assert!(stop.status.success(), "sc stop: {}", text(&stop));
    wait_state(name, "STOPPED", within)
}

/// `EXE service uninstall --name NAME`: the service is gone.
fn uninstall(exe: &str, name: &str) {
    let out = wine(&[exe, "service", "uninstall", "--name", name]);
    assert!(out.status.success(), "uninstall: {}", text(&out));
    assert_eq!(
        sc_state(name),
        None,
        "{}",
        text(&wine(&["sc", "query", name]))
    );
}

/// Waits (bounded) until `sc query` says `want`; how long it took.
fn wait_state(name: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if sc_state(name).as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "`{name}` not {want} within {within:?}: {}",
            text(&wine(&["sc", "query", name]))
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The agent as a Windows service: installed, started with `sc start`,
/// answering `farmctl status`, stopped with `sc stop` within its bound,
/// uninstalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_as_a_windows_service() {
    let Some(exe) = windows_agent("the_agent_as_a_windows_service") else {
        return;
    };
    // A one-node sandbox makes the certificates, sim file and inventory;
    // its own agent is stopped and the service takes its place.
    agents_under_wine(&exe);
    let mut farm = farm(SandboxSpec {
        nodes: 1,
        ..SandboxSpec::default()
    })
    .await;
    farm.sandbox.kill_node(0).await;
    let d = farm.sandbox.dir.clone();
    let node = &farm.sandbox.nodes[0];
    let sim = std::fs::read_to_string(d.join("web01.sim.yaml")).unwrap();
    // The site's port pinned (the sandbox pins it already for restarts).
    let pinned = if sim.contains("    port: ") {
        sim
    } else {
        sim.replacen(
            "    app_pool: ",
            &format!("    port: {}\n    app_pool: ", node.http_port),
            1,
        )
    };
    std::fs::write(d.join("service.sim.yaml"), pinned).unwrap();
    let name = format!("farm-agent-test-{}", std::process::id());
    let exe = exe.display().to_string();
    let (sim, cert, key, ca, state) = (
        z(&d.join("service.sim.yaml")),
        z(&d.join("certs/agent-web01.pem")),
        z(&d.join("certs/agent-web01-key.pem")),
        z(&d.join("certs/ca.pem")),
        z(&d.join("service-state")),
    );
    let install = wine(&[
        &exe,
        "service",
        "install",
        "--name",
        &name,
        "--",
        "--listen",
        &node.agent,
        "--sim",
        &sim,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--client-ca",
        &ca,
        "--state-dir",
        &state,
        "--stop-grace",
        "10s",
        "-v",
    ]);
    assert!(install.status.success(), "install: {}", text(&install));
    assert_eq!(sc_state(&name).as_deref(), Some("STOPPED"));

    let start = wine(&["sc", "start", &name]);
    assert!(start.status.success(), "sc start: {}", text(&start));
    let deadline = Instant::now() + Duration::from_secs(60);
    while sc_state(&name).as_deref() != Some("RUNNING") {
        if Instant::now() > deadline || sc_state(&name).as_deref() == Some("STOPPED") {
            // What the service wrote before it ended says why.
            let logs: Vec<String> = std::fs::read_dir(d.join("service-state").join("logs"))
                .map(|r| {
                    r.flatten()
                        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "`{name}` not RUNNING: {}\nits log:\n{}",
                text(&wine(&["sc", "query", &name])),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            let out = farmctl(&["status", "-i", &inventory(&farm), "--output", "json"]).await;
            out.status.success() && json(&out)["nodes"][0]["reachable"] == true
        },
        "farmctl status to answer from the service"
    );
    // The service keeps its state and log files where it was told.
    assert!(
        d.join("service-state").join("lease.json").exists()
            || d.join("service-state").join("ops").is_dir()
    );
    assert!(
        std::fs::read_dir(d.join("service-state").join("logs"))
            .map(|mut r| r.next().is_some())
            .unwrap_or(false),
        "a log file under the state dir's logs"
    );

    // Stop grace 10s plus the server's close: well inside 30s.
    let took = sc_stop(&name, Duration::from_secs(30));
    eprintln!("the service stopped {took:?} after `sc stop`");
    let out = farmctl(&["status", "-i", &inventory(&farm), "--output", "json"]).await;
    assert!(
        !out.status.success(),
        "the agent still answers after the stop"
    );

    // Again, started by an `sc start` whose output goes to a file (a
    // deployment script, a scheduled task): the service writes nothing to
    // a console, whatever the starter's handles are.
    let log = d.join("sc-start.txt");
    let started = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{WINE}' sc start '{name}' > '{}' 2>&1",
            log.display()
        ))
        .env("WINEDEBUG", "-all")
        .status()
        .expect("run sh");
    assert!(
        started.success(),
        "sc start > file: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    wait_state(&name, "RUNNING", Duration::from_secs(60));
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            let out = farmctl(&["status", "-i", &inventory(&farm), "--output", "json"]).await;
            out.status.success() && json(&out)["nodes"][0]["reachable"] == true
        },
        "farmctl status to answer from the service started with its output in a file"
    );
    sc_stop(&name, Duration::from_secs(30));
    uninstall(&exe, &name);
    farm.sandbox.stop().await;
}

/// `farmctl guard` as a Windows service (farmctl.exe beside the agent):
/// installed with its guard command line, started with `sc start`, its
/// decisions appended to its log while it runs (two unreachable nodes:
/// `held: data missing`), stopped with `sc stop` within its bound,
/// uninstalled. A command line other than `guard` is refused at install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_as_a_windows_service() {
    let Some(agent) = windows_agent("the_guard_as_a_windows_service") else {
        return;
    };
    let exe = agent.with_file_name("farmctl.exe");
    assert!(exe.is_file(), "{} missing", exe.display());
    let exe = exe.display().to_string();
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = d.path();
    std::fs::write(
        d.join("farm.yaml"),
        "farm: wine\nload_balancer:\n  kind: none\nnodes:\n  - name: web01\n    address: 127.0.0.1\n    agent: 127.0.0.1:1\n  - name: web02\n    address: 127.0.0.2\n    agent: 127.0.0.1:2\nsites:\n  - name: shop\n    host: shop.example.com\n    app_pool: ShopPool\nguard:\n  interval: 1s\n  window: 10s\n",
    )
    .unwrap();
    let name = format!("farmctl-guard-test-{}", std::process::id());
    let refused = wine(&[
        &exe,
        "service",
        "install",
        "--name",
        &name,
        "--",
        "recycle",
        "-i",
        &z(&d.join("farm.yaml")),
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("must be a `guard` command"));
    assert_eq!(sc_state(&name), None);
    let log = d.join("guard.jsonl");
    let install = wine(&[
        &exe,
        "service",
        "install",
        "--name",
        &name,
        "--",
        "--insecure",
        "guard",
        "-i",
        &z(&d.join("farm.yaml")),
        "--state-dir",
        &z(&d.join("state")),
        "--log",
        &z(&log),
    ]);
    assert!(install.status.success(), "install: {}", text(&install));
    assert_eq!(sc_state(&name).as_deref(), Some("STOPPED"));
    let start = wine(&["sc", "start", &name]);
    assert!(start.status.success(), "sc start: {}", text(&start));
    wait_state(&name, "RUNNING", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the guard service wrote no decisions: {}",
            text
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for l in &lines {
        assert_eq!(l["decision"], "held", "{l}");
        assert_eq!(l["reason"], "data missing", "{l}");
        assert_eq!(l["farm"], "wine", "{l}");
    }
    let took = sc_stop(&name, Duration::from_secs(30));
    eprintln!("the guard service stopped {took:?} after `sc stop`");
    uninstall(&exe, &name);
}
