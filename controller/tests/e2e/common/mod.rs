//! Shared harness: a sandbox farm of real agent processes, the real
//! `farmctl` binary, and the agents' event logs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use std::time::Instant;

use farmctl::lb::Haproxy;
use farmctl::sandbox::{Sandbox, SandboxSpec};
use farmctl::traffic::TrafficSpec;
use serde_json::Value;
use tokio::sync::watch;

pub struct Farm {
    pub sandbox: Sandbox,
    _dir: tempfile::TempDir,
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<(std::time::SystemTime, std::path::PathBuf)> {
    let mut best: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().ok()?.modified().ok().map(|t| (t, path))
        };
        if let Some(f) = found {
            if best.as_ref().is_none_or(|b| f.0 > b.0) {
                best = Some(f);
            }
        }
    }
    best
}

/// The end-to-end tests run the `farm-agent` binary, which `cargo test -p
/// farmctl` does not build: one older than the agent's sources would test
/// yesterday's agent, so the tests stop and say what to run.
fn agent_is_current() {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        if std::env::var_os("FARM_AGENT_BIN").is_some() {
            return Ok(()); // an agent chosen on purpose (the Windows check's)
        }
        let bin = farmctl::sandbox::agent_binary()
            .map_err(|e| format!("{e}: run `cargo build -p farm-agent` (or `cargo test --workspace`)"))?;
        let built = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for src in ["node-agent/src", "proto/src", "proto/proto"] {
            if let Some((t, path)) = newest(&root.join(src)) {
                if t > built {
                    return Err(format!(
                        "{} is older than {}: run `cargo build -p farm-agent` (or `cargo test --workspace`, which builds it)",
                        bin.display(),
                        path.display()
                    ));
                }
            }
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}

pub async fn farm(spec: SandboxSpec) -> Farm {
    agent_is_current();
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(&spec, dir.path())
        .await
        .unwrap_or_else(|e| panic!("could not start the sandbox farm: {e}"));
    Farm { sandbox, _dir: dir }
}

pub mod etcd;
pub mod fake_f5;
pub mod fake_netscaler;
pub mod https;
pub mod members;
pub mod schema;

/// A client for node `i` of the sandbox, as the controller builds it.
pub fn agent(farm: &Farm, i: usize) -> std::sync::Arc<dyn farmctl::agent::AgentApi> {
    use farmctl::agent::{ClientTls, GrpcAgent};
    let inv = farm_inventory::load(&farm.sandbox.inventory).unwrap();
    let tls = ClientTls::load(inv.agent.tls.as_ref().unwrap()).unwrap();
    let n = &inv.nodes[i];
    std::sync::Arc::new(
        GrpcAgent::new(
            &n.agent,
            &n.name,
            Some(&tls),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .unwrap(),
    )
}

/// Runs the real `farmctl` binary, bounded in time.
pub async fn farmctl(args: &[&str]) -> Output {
    farmctl_env(args, &[]).await
}

/// Runs the real `farmctl` binary with extra environment variables.
pub async fn farmctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    // Journals go to the test's own place, never the user's state dir.
    let own_state = std::env::temp_dir().join(format!("farmctl-tests-{}", std::process::id()));
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args(args)
        .env("FARMCTL_STATE_DIR", own_state)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("farmctl did not finish within 180s")
        .expect("could not run farmctl")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

/// One line of a simulated node's event log.
#[derive(Debug, Clone)]
pub struct Event {
    pub t_us: u64,
    pub node: String,
    pub event: String,
}

/// Every node's events, in time order (the agents share the clock).
pub fn events(farm: &Farm) -> Vec<Event> {
    let mut all = Vec::new();
    for n in &farm.sandbox.nodes {
        let text = std::fs::read_to_string(&n.event_log).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("event line is JSON");
            all.push(Event {
                t_us: v["t_us"].as_u64().unwrap_or(0),
                node: v["node"].as_str().unwrap_or("").to_string(),
                event: v["event"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    all.sort_by_key(|e| e.t_us);
    all
}

/// The largest number of nodes drained at the same moment.
pub fn max_drained_at_once(events: &[Event]) -> usize {
    let mut drained = std::collections::BTreeSet::new();
    let mut max = 0;
    for e in events {
        match e.event.as_str() {
            "drain" => {
                drained.insert(e.node.clone());
            }
            "undrain" => {
                drained.remove(&e.node);
            }
            _ => {}
        }
        max = max.max(drained.len());
    }
    max
}

pub fn inventory(farm: &Farm) -> String {
    farm.sandbox.inventory.display().to_string()
}

/// `farmctl recycle -i <farm> --yes --output json`.
pub async fn recycle_json(farm: &Farm) -> Output {
    farmctl(&[
        "recycle",
        "-i",
        &inventory(farm),
        "--yes",
        "--output",
        "json",
    ])
    .await
}

/// `farmctl deploy` of `package` as `version` to the site shop, soaking
/// the canaries for `soak`, as JSON.
pub async fn deploy_soaking(inv: &str, package: &Path, version: &str, soak: &str) -> Output {
    farmctl(&[
        "deploy",
        "-i",
        inv,
        "--site",
        "shop",
        "--package",
        &package.display().to_string(),
        "--version",
        version,
        "--soak",
        soak,
        "--yes",
        "--output",
        "json",
    ])
    .await
}

/// `farmctl deploy` like [`deploy_soaking`], quiet, as a child process
/// with its own state folder (a test kills it mid-run).
pub fn spawn_deploy(
    state: &Path,
    inv: &str,
    package: &Path,
    version: &str,
    soak: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args(["--state-dir", &state.display().to_string(), "-q", "deploy"])
        .args(["-i", inv, "--site", "shop", "--package"])
        .arg(package)
        .args(["--version", version, "--soak", soak, "--yes"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `farmctl recycle -i <inv> --outliers --yes --output json`.
pub async fn recycle_outliers_json(inv: &str) -> Output {
    farmctl(&[
        "recycle",
        "-i",
        inv,
        "--outliers",
        "--yes",
        "--output",
        "json",
    ])
    .await
}

/// The metric `name` of one canary-analysis interval of a report.
pub fn metric<'a>(interval: &'a Value, name: &str) -> Option<&'a Value> {
    interval["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// `farmctl status --output json`, as JSON.
pub async fn status(farm: &Farm) -> Value {
    json(&farmctl(&["status", "-i", &inventory(farm), "--output", "json"]).await)
}

/// Phase records in every journal of `state`.
pub fn phase_lines(state: &Path) -> usize {
    std::fs::read_dir(state.join("runs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|t| {
                    t.lines()
                        .filter(|l| l.contains("\"type\":\"phase\""))
                        .count()
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `farmctl --state-dir STATE -q <args>` and SIGKILLs it once its
/// journal has `k` more phase records than before.
pub async fn kill_after(state: &Path, args: &[&str], k: usize) {
    let before = phase_lines(state);
    let state_arg = state.display().to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args(["--state-dir", &state_arg, "-q"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start farmctl");
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("{args:?} finished ({s}) before it was killed at {k}");
            }
            phase_lines(state) >= before + k
        },
        "{args:?}: the journal to reach {k} phase records"
    );
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
}

/// Load from 16 clients, every other request a long one (1.5 s): at any
/// moment every node has several requests in flight.
pub fn long_requests(farm: &Farm) -> TrafficSpec {
    let mut t = farm.sandbox.traffic_spec();
    t.workers = 16;
    t.slow_every = 2;
    t.slow_ms = 1500;
    t
}

/// Records every status change of every server, as HAProxy reports it.
pub struct StatsMonitor {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(Instant, String, String)>>,
}

impl StatsMonitor {
    pub fn start(farm: &Farm) -> Self {
        let h = farm.sandbox.haproxy.as_ref().expect("haproxy");
        let api = Haproxy::new(h.admin.clone(), h.backend.clone());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen: Vec<(Instant, String, String)> = Vec::new();
            loop {
                if let Ok(servers) = api.servers().await {
                    for s in servers {
                        let last = seen
                            .iter()
                            .rev()
                            .find(|(_, n, _)| *n == s.name)
                            .map(|(_, _, st)| st.clone());
                        if last.as_deref() != Some(s.status.as_str()) {
                            seen.push((Instant::now(), s.name, s.status));
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => return seen,
                }
            }
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<(Instant, String, String)> {
        self.stop.send_replace(true);
        self.task.await.unwrap()
    }
}

/// Each server went DRAIN → ... → UP, one after the other in node order.
pub fn assert_drained_in_order(changes: &[(Instant, String, String)]) {
    let mut prev_up: Option<Instant> = None;
    for node in ["web01", "web02", "web03", "web04"] {
        let mine: Vec<&(Instant, String, String)> =
            changes.iter().filter(|(_, n, _)| n == node).collect();
        let drain = mine
            .iter()
            .find(|(_, _, s)| s == "DRAIN")
            .unwrap_or_else(|| panic!("{node} never DRAIN: {changes:?}"));
        let up = mine
            .iter()
            .find(|(t, _, s)| s == "UP" && *t > drain.0)
            .unwrap_or_else(|| panic!("{node} never back UP: {changes:?}"));
        if let Some(p) = prev_up {
            assert!(
                p <= drain.0,
                "{node} drained before the previous node was back UP: {changes:?}"
            );
        }
        prev_up = Some(up.0);
    }
}

/// Replaces the inventory's `load_balancer:` block (the sandbox writes it
/// right before `sites:`), and the nodes' `lb_server` when given.
pub fn set_load_balancer(farm: &Farm, block: &str, lb_servers: &[(&str, &str)]) {
    let path = &farm.sandbox.inventory;
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("load_balancer:\n")
        .expect("a load_balancer block");
    let end = text.find("sites:\n").expect("a sites block");
    let mut out = format!("{}{block}{}", &text[..start], &text[end..]);
    for (node, server) in lb_servers {
        let line = format!("  - name: {node}\n");
        out = out.replace(&line, &format!("{line}    lb_server: \"{server}\"\n"));
    }
    std::fs::write(path, out).unwrap();
}

/// When `node` (`web01`) began its recycle, per its own event log.
pub fn recycle_started(farm: &Farm, node: &str) -> Option<std::time::SystemTime> {
    let n = farm.sandbox.nodes.iter().find(|n| n.name == node)?;
    let text = std::fs::read_to_string(&n.event_log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "recycle")
        .and_then(|v| v["t_us"].as_u64())
        .map(|us| std::time::UNIX_EPOCH + std::time::Duration::from_micros(us))
}

/// The agent's audit lines of `call` made by farmctl (not the sandbox's
/// own set-up), on node `i`.
pub fn audited(farm: &Farm, i: usize, call: &str) -> Vec<Value> {
    let path = farm
        .sandbox
        .dir
        .join(format!("web{:02}.audit.jsonl", i + 1));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["call"] == call)
        .filter(|v| {
            !v["operation_id"]
                .as_str()
                .unwrap_or("")
                .starts_with("sandbox.")
        })
        .collect()
}
