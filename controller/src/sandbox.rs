//! A simulated farm: real `farm-agent` processes on loopback, each running
//! the IIS simulator, plus the inventory that describes them. Used by
//! `farmctl demo`, the integration tests and the benchmarks.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::traffic::{Backend, Routing, TrafficSpec};

/// How a sandbox farm is built.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub nodes: usize,
    /// `haproxy`, `health-file` or `none` (what the inventory says).
    pub lb_kind: String,
    /// Start a real HAProxy in front of the nodes even when the inventory
    /// does not drive it (the no-drain baseline).
    pub haproxy: bool,
    /// The LB's detection time (health-file).
    pub detection: Duration,
    pub max_unavailable: String,
    /// Extra `rollout:` lines for the inventory (e.g. `  max_failures: 1\n`).
    pub rollout_extra: String,
    pub min_healthy: String,
    pub drain_timeout: Duration,
    pub healthy_timeout: Duration,
    /// Extra top-level YAML for a node's sim file, by node index (faults).
    pub sim_extra: HashMap<usize, String>,
    /// The pool's `app_pools[0]` settings as YAML lines.
    pub pool_yaml: String,
    pub timings_yaml: String,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        Self {
            nodes: 4,
            lb_kind: "health-file".into(),
            haproxy: false,
            detection: Duration::from_millis(300),
            max_unavailable: "1".into(),
            rollout_extra: String::new(),
            min_healthy: "50%".into(),
            drain_timeout: Duration::from_secs(30),
            healthy_timeout: Duration::from_secs(20),
            sim_extra: HashMap::new(),
            pool_yaml: "    startup: 300ms\n    warmup: 400ms\n    shutdown_time_limit: 30s\n"
                .into(),
            timings_yaml: "  iis_stop: 300ms\n  iis_start: 500ms\n".into(),
        }
    }
}

pub const SITE_HOST: &str = "shop.example.com";
/// The sandbox controller's certificate name (role operator).
pub const CONTROLLER: &str = "farmctl-demo";
pub const POOL: &str = "ShopPool";
pub const HEALTH_FILE: &str = "/health.htm";

/// One running agent.
pub struct SandboxNode {
    pub name: String,
    pub agent: String,
    pub http_port: u16,
    pub event_log: PathBuf,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

/// A real HAProxy in front of the sandbox nodes.
pub struct SandboxHaproxy {
    /// Where clients send traffic.
    pub frontend: u16,
    /// Runtime API (`level admin`).
    pub admin: String,
    pub backend: String,
    child: Child,
}

pub struct Sandbox {
    pub dir: PathBuf,
    pub nodes: Vec<SandboxNode>,
    pub inventory: PathBuf,
    pub haproxy: Option<SandboxHaproxy>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not find the farm-agent binary (build it with `cargo build --workspace`, or set FARM_AGENT_BIN)")]
    NoAgentBinary,
    #[error("sandbox: {0}")]
    Io(String),
    #[error("agent {node} did not start: {detail}")]
    AgentStart { node: String, detail: String },
    #[error("haproxy is not installed (apt-get install -y haproxy)")]
    NoHaproxy,
    #[error("haproxy did not start: {0}")]
    HaproxyStart(String),
}

fn io(context: &str) -> impl Fn(std::io::Error) -> SandboxError + '_ {
    move |e| SandboxError::Io(format!("{context}: {e}"))
}

/// `farm-agent` next to this executable (or one level up, for test
/// binaries in `target/*/deps`), else `$FARM_AGENT_BIN`, else on PATH.
pub fn agent_binary() -> Result<PathBuf, SandboxError> {
    if let Some(p) = std::env::var_os("FARM_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let name = format!("farm-agent{}", std::env::consts::EXE_SUFFIX);
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(&name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(&name))
                .find(|p| p.is_file())
        })
        .ok_or(SandboxError::NoAgentBinary)
}

impl Sandbox {
    pub async fn start(spec: &SandboxSpec, dir: &Path) -> Result<Sandbox, SandboxError> {
        let bin = agent_binary()?;
        std::fs::create_dir_all(dir).map_err(io("create dir"))?;
        // mutual TLS, as in production: a farm CA, a certificate per agent
        // and an operator certificate for the controller.
        let certs = dir.join("certs");
        let tls_err = |e: crate::exit::CommandError| SandboxError::Io(format!("certificates: {e}"));
        crate::certfiles::init(&certs, "demo", true).map_err(tls_err)?;
        crate::certfiles::issue_controller(
            &certs,
            CONTROLLER,
            farm_proto::pki::Role::Operator,
            true,
        )
        .map_err(tls_err)?;
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let name = format!("web{:02}", i + 1);
            let event_log = dir.join(format!("{name}.events.jsonl"));
            let _ = std::fs::remove_file(&event_log);
            let sim = format!(
                "node: {name}\nhealth_file: {HEALTH_FILE}\nevent_log: {log}\ntimings:\n{timings}sites:\n  - name: shop\n    host: {SITE_HOST}\n    app_pool: {POOL}\napp_pools:\n  - name: {POOL}\n{pool}{extra}\n",
                log = event_log.display(),
                timings = spec.timings_yaml,
                pool = spec.pool_yaml,
                extra = spec.sim_extra.get(&i).map(String::as_str).unwrap_or(""),
            );
            crate::certfiles::issue_agent(
                &certs,
                &name,
                &["127.0.0.1".into(), "localhost".into()],
                true,
            )
            .map_err(tls_err)?;
            let sim_path = dir.join(format!("{name}.sim.yaml"));
            std::fs::write(&sim_path, sim).map_err(io("write sim file"))?;
            let log = std::fs::File::create(dir.join(format!("{name}.log")))
                .map_err(io("create agent log"))?;
            let mut child = Command::new(&bin)
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--start-retry-delay",
                    "200ms",
                    "--poll-interval",
                    "10ms",
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
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(20), reader.read_line(&mut line)).await;
            let fail = |detail: String| SandboxError::AgentStart {
                node: name.clone(),
                detail: format!(
                    "{detail} (see {})",
                    dir.join(format!("{name}.log")).display()
                ),
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) => return Err(fail("exited before it was ready".into())),
                Ok(Err(e)) => return Err(fail(e.to_string())),
                Err(_) => return Err(fail("not ready within 20s".into())),
            }
            let ready: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| fail(format!("bad ready line {line:?}: {e}")))?;
            let agent = ready["agent"].as_str().unwrap_or_default().to_string();
            let http_port = ready["sites"][0]["port"].as_u64().unwrap_or(0) as u16;
            nodes.push(SandboxNode {
                name,
                agent,
                http_port,
                event_log,
                child,
                _stdout: reader,
            });
        }
        let haproxy = if spec.haproxy || spec.lb_kind == "haproxy" {
            Some(start_haproxy(dir, &nodes).await?)
        } else {
            None
        };
        let inventory = dir.join("inventory.yaml");
        std::fs::write(&inventory, inventory_yaml(spec, &nodes, haproxy.as_ref()))
            .map_err(io("write inventory"))?;
        Ok(Sandbox {
            dir: dir.to_path_buf(),
            nodes,
            inventory,
            haproxy,
        })
    }

    /// Kills the load balancer (its runtime API goes away with it).
    pub async fn kill_haproxy(&mut self) {
        if let Some(h) = &mut self.haproxy {
            let _ = h.child.kill().await;
        }
    }

    /// Kills one agent process (the node's IIS "server" goes with it).
    pub async fn kill_node(&mut self, i: usize) {
        let _ = self.nodes[i].child.kill().await;
    }

    pub async fn stop(mut self) {
        self.kill_haproxy().await;
        for n in &mut self.nodes {
            let _ = n.child.kill().await;
        }
    }

    /// Traffic through the sandbox's HAProxy, or through the built-in
    /// health-checking balancer when there is none.
    pub fn traffic_spec(&self) -> TrafficSpec {
        let backend = |port| Backend {
            address: "127.0.0.1".into(),
            port,
            host: Some(SITE_HOST.into()),
        };
        match &self.haproxy {
            Some(h) => TrafficSpec::new(vec![backend(h.frontend)], Routing::Direct),
            None => TrafficSpec::new(
                self.nodes.iter().map(|n| backend(n.http_port)).collect(),
                Routing::HealthChecked {
                    path: HEALTH_FILE.into(),
                    interval: Duration::from_millis(100),
                },
            ),
        }
    }
}

/// `haproxy` on PATH or in the sbin directories Debian installs it to.
pub fn haproxy_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, SandboxError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("pick a free port"))
}

async fn start_haproxy(dir: &Path, nodes: &[SandboxNode]) -> Result<SandboxHaproxy, SandboxError> {
    let bin = haproxy_binary().ok_or(SandboxError::NoHaproxy)?;
    let (frontend, admin_port) = (free_port()?, free_port()?);
    let admin = format!("127.0.0.1:{admin_port}");
    // What a careful operator writes: a refused or failed connection is
    // retried on another server (redispatch) rather than answered 503;
    // the connect and check timeouts leave room for a loaded machine; a
    // server is marked down after three failed checks, not one slow one,
    // and up after two good ones. Checks are fast (100 ms) to keep the
    // simulated farm quick.
    let mut cfg = format!(
        "# Written by farmctl for a simulated farm on loopback.
global
    stats socket ipv4@{admin} level admin
    stats timeout 30s

defaults
    mode http
    option redispatch 1
    retries 3
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 1s

frontend fe
    bind 127.0.0.1:{frontend}
    default_backend shop

backend shop
    balance roundrobin
    option httpchk
    http-check send meth GET uri {HEALTH_FILE} ver HTTP/1.1 hdr Host {SITE_HOST}
    default-server inter 100ms fall 3 rise 2
"
    );
    for n in nodes {
        cfg.push_str(&format!(
            "    server {} 127.0.0.1:{} check\n",
            n.name, n.http_port
        ));
    }
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).map_err(io("write haproxy.cfg"))?;
    let log = std::fs::File::create(dir.join("haproxy.log")).map_err(io("create haproxy log"))?;
    let child = Command::new(&bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::HaproxyStart(format!("{}: {e}", bin.display())))?;
    let mut h = SandboxHaproxy {
        frontend,
        admin,
        backend: "shop".into(),
        child,
    };
    // Ready when the runtime API answers and every server passed its check.
    let api = crate::lb::Haproxy::new(h.admin.clone(), h.backend.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(servers) = api.servers().await {
            if servers.len() == nodes.len() && servers.iter().all(|s| s.status == "UP") {
                return Ok(h);
            }
        }
        if let Ok(Some(status)) = h.child.try_wait() {
            return Err(SandboxError::HaproxyStart(format!(
                "exited with {status} (see {})",
                dir.join("haproxy.log").display()
            )));
        }
        if std::time::Instant::now() > deadline {
            return Err(SandboxError::HaproxyStart(format!(
                "servers not UP within 20s (see {})",
                dir.join("haproxy.log").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn inventory_yaml(
    spec: &SandboxSpec,
    nodes: &[SandboxNode],
    haproxy: Option<&SandboxHaproxy>,
) -> String {
    let mut y = format!(
        "# Written by farmctl for a simulated farm on loopback.\nfarm: demo\nagent:\n  tls:\n    ca: certs/ca.pem\n    cert: certs/controller-{CONTROLLER}.pem\n    key: certs/controller-{CONTROLLER}-key.pem\nnodes:\n"
    );
    for n in nodes {
        y.push_str(&format!(
            "  - name: {}\n    address: 127.0.0.1\n    agent: {}\n    http_port: {}\n",
            n.name, n.agent, n.http_port
        ));
    }
    y.push_str(&format!("load_balancer:\n  kind: {}\n", spec.lb_kind));
    if let (Some(h), "haproxy") = (haproxy, spec.lb_kind.as_str()) {
        y.push_str(&format!("  admin: {}\n  backend: {}\n", h.admin, h.backend));
    }
    if spec.lb_kind == "health-file" {
        y.push_str(&format!(
            "  path: {HEALTH_FILE}\n  detection: {}\n",
            humantime::format_duration(spec.detection)
        ));
    }
    y.push_str(&format!(
        "sites:\n  - name: shop\n    host: {SITE_HOST}\n    probe:\n      path: /\n      expect_status: 200\n      expect_body: \"pool={POOL}\"\n      timeout: 2s\n      interval: 100ms\n      successes: 3\napp_pools: [{POOL}]\nrollout:\n  max_unavailable: {}\n  min_healthy: \"{}\"\n  drain_timeout: {}\n  healthy_timeout: {}\n  operation_timeout: 60s\n{}",
        spec.max_unavailable,
        spec.min_healthy,
        humantime::format_duration(spec.drain_timeout),
        humantime::format_duration(spec.healthy_timeout),
        spec.rollout_extra,
    ));
    y
}
