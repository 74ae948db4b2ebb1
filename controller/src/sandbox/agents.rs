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
    pub(super) process: Supervised,
}

/// An agent process watched as a server's firmware would: when the
/// simulated server restarts (the agent exits with
/// [`farm_proto::simhost::REBOOT_EXIT_CODE`]) it is started again after the
/// boot time the server recorded, with the same addresses and files;
/// one that never comes back (`patch_faults.never_returns`) stays down.
pub(super) struct Supervised {
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
    kill: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

impl Supervised {
    /// The agent's process id now (`None` while the server is down).
    pub(super) fn pid(&self) -> Option<u32> {
        Some(self.pid.load(std::sync::atomic::Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// Kills the agent (and stops watching it).
    pub(super) async fn kill(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.kill.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What a supervisor needs to start node `i`'s agent again.
#[derive(Clone)]
pub(super) struct Respawn {
    pub bin: PathBuf,
    pub spec: SandboxSpec,
    pub dir: PathBuf,
    pub certs: PathBuf,
    pub i: usize,
}

fn supervise(
    mut child: Child,
    stdout: BufReader<ChildStdout>,
    again: Again,
    respawn: Respawn,
) -> Supervised {
    use std::sync::atomic::Ordering;
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(child.id().unwrap_or(0)));
    let (kill, mut kills) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(4);
    let shown = pid.clone();
    tokio::spawn(async move {
        let mut _stdout = stdout;
        loop {
            let status = tokio::select! {
                s = child.wait() => s,
                k = kills.recv() => {
                    let _ = child.kill().await;
                    shown.store(0, Ordering::SeqCst);
                    if let Some(k) = k { let _ = k.send(()); }
                    return;
                }
            };
            shown.store(0, Ordering::SeqCst);
            let rebooted = status
                .ok()
                .and_then(|s| s.code())
                .is_some_and(|c| c == farm_proto::simhost::REBOOT_EXIT_CODE);
            let state_dir = respawn
                .dir
                .join(format!("web{:02}.agent-state", respawn.i + 1));
            let machine = farm_proto::simhost::Machine::load(&state_dir);
            let boot = machine
                .as_ref()
                .and_then(|m| m.rebooting.clone())
                .filter(|r| rebooted && !r.never);
            let Some(boot) = boot else {
                // Killed, crashed, or a server that never comes back: down
                // until the test says otherwise.
                if let Some(k) = kills.recv().await {
                    let _ = k.send(());
                }
                return;
            };
            let booting = tokio::time::sleep(Duration::from_millis(boot.boot_time_ms));
            tokio::select! {
                () = booting => {}
                k = kills.recv() => {
                    if let Some(k) = k { let _ = k.send(()); }
                    return;
                }
            }
            let spawned = spawn(
                &respawn.bin,
                &respawn.spec,
                &respawn.dir,
                &respawn.certs,
                respawn.i,
                Some(Again {
                    keep_sim: true,
                    ..again.clone()
                }),
            );
            match spawned {
                Ok(s) => match s.started(&respawn.dir, Duration::from_secs(30)).await {
                    Ok((c, out, _)) => {
                        child = c;
                        _stdout = out;
                        shown.store(child.id().unwrap_or(0), Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::error!(
                            "sandbox: the agent did not come back after its restart: {e}"
                        );
                        if let Some(k) = kills.recv().await {
                            let _ = k.send(());
                        }
                        return;
                    }
                },
                Err(e) => {
                    tracing::error!("sandbox: could not start the agent after its restart: {e}");
                    if let Some(k) = kills.recv().await {
                        let _ = k.send(());
                    }
                    return;
                }
            }
        }
    });
    Supervised { pid, kill }
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
#[derive(Clone)]
pub(super) struct Again {
    pub agent: String,
    pub http_port: u16,
    /// Its sim file as it is now (a server coming back from a restart
    /// keeps what was changed in it); else written anew from the spec.
    pub keep_sim: bool,
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
    let node_dir = dir.join(&name);
    let (physical_path, mut agent_yaml) = if spec.releases {
        let initial = node_dir.join("initial");
        super::releases::write_content(&initial, super::FIRST_RELEASE)
            .map_err(io("write site content"))?;
        (
            format!("    physical_path: {}\n", yaml_path(&initial)),
            format!(
                "deploy:\n  releases_root: {}\n  limits:\n    min_free_mb: 64\n",
                yaml_path(&node_dir.join("releases"))
            ),
        )
    } else {
        (String::new(), String::new())
    };
    agent_yaml.push_str(
        &spec
            .agent_yaml
            .replace("{node_dir}", &node_dir.display().to_string()),
    );
    let config = if agent_yaml.is_empty() {
        None
    } else {
        let config = dir.join(format!("{name}.agent.yaml"));
        std::fs::write(&config, agent_yaml).map_err(io("write agent config"))?;
        Some(config)
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
        "node: {name}\nhealth_file: {HEALTH_FILE}\nevent_log: {log}\nlogs: {logs}\nboot_time: {boot_time}\ntimings:\n{timings}{updates}sites:\n  - name: {SITE}\n    host: {SITE_HOST}\n    app_pool: {POOL}\n{port}{physical_path}{second_site}app_pools:\n  - name: {POOL}\n{pool}{second_pool}{extra}\n",
        log = yaml_path(&event_log),
        logs = yaml_path(&dir.join(format!("{name}.logs"))),
        timings = spec.timings_yaml,
        pool = spec.pool_yaml,
        boot_time = humantime::format_duration(spec.boot_time),
        updates = spec.updates_yaml,
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
    let keep = again.as_ref().is_some_and(|a| a.keep_sim) && sim_path.is_file();
    if !keep {
        std::fs::write(&sim_path, sim).map_err(io("write sim file"))?;
    }
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
    /// Waits for the agent's ready line (where it listens), up to `within`;
    /// the node, watched for its restarts.
    pub(super) async fn ready(
        self,
        dir: &Path,
        within: Duration,
        respawn: Respawn,
    ) -> Result<SandboxNode, SandboxError> {
        let (name, event_log) = (self.name.clone(), self.event_log.clone());
        let (child, stdout, ready) = self.started(dir, within).await?;
        let node = SandboxNode {
            agent: ready["agent"].as_str().unwrap_or_default().to_string(),
            http_port: ready["sites"][0]["port"].as_u64().unwrap_or(0) as u16,
            metrics: ready["metrics"].as_str().map(str::to_string),
            name,
            event_log,
            process: Supervised {
                pid: std::sync::Arc::default(),
                kill: tokio::sync::mpsc::channel(1).0,
            },
        };
        let again = Again {
            agent: node.agent.clone(),
            http_port: node.http_port,
            keep_sim: true,
        };
        pin_port(&dir.join(format!("{}.sim.yaml", node.name)), node.http_port)?;
        Ok(SandboxNode {
            process: supervise(child, stdout, again, respawn),
            ..node
        })
    }

    /// Waits for the ready line; the process, its stdout and what it said.
    async fn started(
        mut self,
        dir: &Path,
        within: Duration,
    ) -> Result<(Child, BufReader<ChildStdout>, serde_json::Value), SandboxError> {
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
        Ok((self.child, self.stdout, ready))
    }
}

/// Writes the site's port into its sim file (bound to a free one at
/// first), so a server that comes back from a restart listens where the
/// load balancer and the inventory look; the rest of the file is kept as
/// it is (a test may have changed it).
fn pin_port(sim: &Path, port: u16) -> Result<(), SandboxError> {
    let text = std::fs::read_to_string(sim).map_err(io("read sim file"))?;
    let host = format!("    host: {SITE_HOST}\n");
    if port == 0 || text.contains("\n    port: ") {
        return Ok(());
    }
    let pinned = text.replacen(&host, &format!("{host}    port: {port}\n"), 1);
    let tmp = sim.with_extension("pinned");
    std::fs::write(&tmp, pinned).map_err(io("write sim file"))?;
    std::fs::rename(&tmp, sim).map_err(io("write sim file"))
}

/// A path as a YAML scalar (quoted: temp dirs may hold any character).
fn yaml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}
