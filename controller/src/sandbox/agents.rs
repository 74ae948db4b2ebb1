//! Starting the sandbox's agents: real `farm-agent` processes running the
//! IIS simulator, each with its own certificate, sim file, log, audit log
//! and event log in the farm's directory.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::{io, SandboxError, SandboxSpec, HEALTH_FILE, POOL, SITE, SITE_HOST};

/// One running agent.
pub struct SandboxNode {
    pub name: String,
    pub agent: String,
    pub http_port: u16,
    pub event_log: PathBuf,
    /// Where the agent serves its Prometheus metrics.
    pub metrics: Option<String>,
    pub(super) child: Child,
    _stdout: BufReader<ChildStdout>,
}

/// An agent process that has not said it is ready yet.
pub(super) struct Spawned {
    name: String,
    event_log: PathBuf,
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Where a restarted agent listens again: the same gRPC address and site
/// port, so the inventory and the load balancer still point at it.
pub(super) struct Again {
    pub agent: String,
    pub http_port: u16,
}

/// Writes node `i`'s files and starts its agent (`again`: restarts it with
/// its state, event log and addresses kept).
pub(super) fn spawn(
    bin: &Path,
    spec: &SandboxSpec,
    dir: &Path,
    certs: &Path,
    i: usize,
    again: Option<Again>,
) -> Result<Spawned, SandboxError> {
    let name = format!("web{:02}", i + 1);
    let event_log = dir.join(format!("{name}.events.jsonl"));
    let state_dir = dir.join(format!("{name}.agent-state"));
    if again.is_none() {
        let _ = std::fs::remove_file(&event_log);
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    // With releases, the site starts from a folder of its own (what was
    // installed by hand before farmctl managed it) and the agent keeps
    // releases next to it.
    let (physical_path, config) = if spec.releases {
        let node_dir = dir.join(&name);
        let initial = node_dir.join("initial");
        super::releases::write_content(&initial, super::FIRST_RELEASE)
            .map_err(io("write site content"))?;
        let config = dir.join(format!("{name}.agent.yaml"));
        std::fs::write(
            &config,
            format!(
                "deploy:\n  releases_root: {}\n  limits:\n    min_free_mb: 64\n",
                yaml_path(&node_dir.join("releases"))
            ),
        )
        .map_err(io("write agent config"))?;
        (
            format!("    physical_path: {}\n", yaml_path(&initial)),
            Some(config),
        )
    } else {
        (String::new(), None)
    };
    let port = again
        .as_ref()
        .map(|a| format!("    port: {}\n", a.http_port))
        .unwrap_or_default();
    let (second_site, second_pool) = if spec.second_site {
        (
            format!(
                "  - name: {}\n    host: {}\n    app_pool: {}\n    share_port_with: {SITE}\n",
                super::SECOND_SITE,
                super::SECOND_SITE_HOST,
                super::SECOND_POOL
            ),
            format!("  - name: {}\n{}", super::SECOND_POOL, spec.pool_yaml),
        )
    } else {
        (String::new(), String::new())
    };
    let sim = format!(
        "node: {name}\nhealth_file: {HEALTH_FILE}\nevent_log: {log}\nlogs: {logs}\ntimings:\n{timings}sites:\n  - name: {SITE}\n    host: {SITE_HOST}\n    app_pool: {POOL}\n{port}{physical_path}{second_site}app_pools:\n  - name: {POOL}\n{pool}{second_pool}{extra}\n",
        log = yaml_path(&event_log),
        logs = yaml_path(&dir.join(format!("{name}.logs"))),
        timings = spec.timings_yaml,
        pool = spec.pool_yaml,
        extra = spec.sim_extra.get(&i).map(String::as_str).unwrap_or(""),
    );
    if again.is_none() {
        crate::certfiles::issue_agent(
            certs,
            &name,
            &["127.0.0.1".into(), "localhost".into()],
            true,
        )
        .map_err(|e| SandboxError::Io(format!("certificates: {e}")))?;
    }
    let sim_path = dir.join(format!("{name}.sim.yaml"));
    std::fs::write(&sim_path, sim).map_err(io("write sim file"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(io("open agent log"))?;
    let mut command = Command::new(bin);
    if let Some(config) = &config {
        command.arg("--config").arg(config);
    }
    let listen = again.map_or_else(|| "127.0.0.1:0".to_string(), |a| a.agent);
    let mut child = command
        .arg("--listen")
        .arg(&listen)
        .arg("--state-dir")
        .arg(&state_dir)
        .args([
            "--start-retry-delay",
            "200ms",
            "--poll-interval",
            "10ms",
            "--metrics-listen",
            "127.0.0.1:0",
            // Many agents share this host: one serving thread each.
            "--worker-threads",
            "1",
            "-v",
            "--sim",
        ])
        .arg(&sim_path)
        .arg("--tls-cert")
        .arg(certs.join(format!("agent-{name}.pem")))
        .arg("--tls-key")
        .arg(certs.join(format!("agent-{name}-key.pem")))
        .arg("--client-ca")
        .arg(certs.join(crate::certfiles::CA_CERT))
        .arg("--audit-log")
        .arg(dir.join(format!("{name}.audit.jsonl")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::AgentStart {
            node: name.clone(),
            detail: format!("{}: {e}", bin.display()),
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SandboxError::Io("no stdout".into()))?;
    Ok(Spawned {
        name,
        event_log,
        child,
        stdout: BufReader::new(stdout),
    })
}

impl Spawned {
    /// Waits for the agent's ready line (where it listens), up to `within`.
    pub(super) async fn ready(
        mut self,
        dir: &Path,
        within: Duration,
    ) -> Result<SandboxNode, SandboxError> {
        let name = self.name.clone();
        let fail = |detail: String| SandboxError::AgentStart {
            node: name.clone(),
            detail: format!(
                "{detail} (see {})",
                dir.join(format!("{name}.log")).display()
            ),
        };
        let mut line = String::new();
        match tokio::time::timeout(within, self.stdout.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => return Err(fail("exited before it was ready".into())),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("not ready within {within:?}"))),
        }
        let ready: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| fail(format!("bad ready line {line:?}: {e}")))?;
        Ok(SandboxNode {
            agent: ready["agent"].as_str().unwrap_or_default().to_string(),
            http_port: ready["sites"][0]["port"].as_u64().unwrap_or(0) as u16,
            metrics: ready["metrics"].as_str().map(str::to_string),
            name: self.name,
            event_log: self.event_log,
            child: self.child,
            _stdout: self.stdout,
        })
    }
}

/// A path as a YAML scalar (quoted: temp dirs may hold any character).
fn yaml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}
