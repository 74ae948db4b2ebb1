//! A simulated farm: real `farm-agent` processes on loopback, each running
//! the IIS simulator, plus the inventory that describes them. Used by
//! `farmctl demo`, the integration tests and the benchmarks.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Deployments set up: every agent keeps releases under
    /// `DIR/webNN/releases`, and release 1.0.0 of the site is staged and
    /// active on every node before the farm is handed over.
    pub releases: bool,
    /// A second site on each node, `reports` ([`SECOND_SITE_HOST`]) in its
    /// own pool [`SECOND_POOL`], bound on the same port by host header.
    pub second_site: bool,
    /// How long a simulated restart takes (every node's `boot_time`).
    pub boot_time: Duration,
    /// Every node's sim file `updates:` list (YAML, with its key).
    pub updates_yaml: String,
    /// The inventory's `patch:` block (YAML, with its key).
    pub patch_yaml: String,
    /// The inventory's `guard:` section (`farmctl guard`), if any.
    pub guard_yaml: String,
    /// More of every agent's config file (YAML, with its keys);
    /// `{node_dir}` is the node's own folder in the sandbox.
    pub agent_yaml: String,
}

/// The updates every sandbox node has to install: a cumulative update
/// that needs a restart and one that does not.
pub const SANDBOX_UPDATES: &str = "updates:\n  - kb: KB5046616\n    title: 2026-11 Cumulative Update for Microsoft server operating system version 21H2 for x64-based Systems (KB5046616)\n    classification: SecurityUpdates\n    size_mb: 650\n    install_time: 800ms\n  - kb: KB890830\n    title: Windows Malicious Software Removal Tool x64 - v5.130 (KB890830)\n    classification: UpdateRollups\n    size_mb: 80\n    reboot: false\n    install_time: 200ms\n";

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
            releases: true,
            second_site: false,
            boot_time: Duration::from_secs(3),
            updates_yaml: SANDBOX_UPDATES.into(),
            patch_yaml: "patch:\n  reboot_delay: 1s\n  reboot_timeout: 2m\n  bake: 10s\n".into(),
            guard_yaml: String::new(),
            agent_yaml: String::new(),
        }
    }
}

/// The second site's name, host and pool (`SandboxSpec::second_site`).
pub const SECOND_SITE: &str = "reports";
pub const SECOND_SITE_HOST: &str = "reports.example.com";
pub const SECOND_POOL: &str = "ReportsPool";

pub const SITE_HOST: &str = "shop.example.com";
/// The sandbox controller's certificate name (role operator).
pub const CONTROLLER: &str = "farmctl-demo";
pub const POOL: &str = "ShopPool";
pub const HEALTH_FILE: &str = "/health.htm";
/// The site's name in the inventory and on every node.
pub const SITE: &str = "shop";
/// The release every sandbox node serves when it is handed over.
pub const FIRST_RELEASE: &str = "1.0.0";
/// Where a release says its version (the inventory's `version_probe`).
pub const VERSION_FILE: &str = "/version.txt";

/// `sim` with pool `pool`'s `faults:` replaced by `faults`; `None` when
/// the pool is not there.
fn with_pool_faults(sim: &str, pool: &str, faults: &str) -> Option<String> {
    let head = format!("  - name: {pool}\n");
    let start = sim.find(&head)? + head.len();
    let mut out = sim[..start].to_string();
    let mut rest = sim[start..].lines();
    let mut skipping = false;
    let mut after = Vec::new();
    // The pool's own lines (indented by four or more), its faults left out.
    for line in rest.by_ref() {
        if !line.starts_with("    ") {
            after.push(line);
            break;
        }
        if line.starts_with("    faults:") {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("      ") {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("    faults:\n");
    out.push_str(faults);
    for line in after.into_iter().chain(rest) {
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

pub use agents::SandboxNode;
pub use haproxy::{haproxy_binary, SandboxHaproxy};

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
    #[error("could not set up release {FIRST_RELEASE} on {node}: {detail}")]
    Seed { node: String, detail: String },
}

mod agents;
mod haproxy;
mod releases;

pub use releases::{faulty_release_package, release_package};

use haproxy::start_haproxy;

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
        // Every agent is started before any is waited for: a farm of a
        // thousand comes up in seconds, not minutes.
        let spawned = (0..spec.nodes)
            .map(|i| agents::spawn(&bin, spec, dir, &certs, i, None))
            .collect::<Result<Vec<_>, _>>()?;
        let within = Duration::from_secs(20).max(Duration::from_millis(50) * spec.nodes as u32);
        let respawn = |i| agents::Respawn {
            bin: bin.clone(),
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            certs: certs.clone(),
            i,
        };
        let nodes = futures::future::try_join_all(
            spawned
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.ready(dir, within, respawn(i))),
        )
        .await?;
        let haproxy = if spec.haproxy || spec.lb_kind == "haproxy" {
            Some(start_haproxy(dir, &nodes).await?)
        } else {
            None
        };
        let inventory = dir.join("inventory.yaml");
        std::fs::write(&inventory, inventory_yaml(spec, &nodes, haproxy.as_ref()))
            .map_err(io("write inventory"))?;
        if spec.releases {
            releases::seed(dir, &inventory, &nodes).await?;
        }
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

    /// The process id of node `i`'s agent (`None` while it is down).
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].process.pid()
    }

    /// Kills one agent process (the node's IIS "server" goes with it).
    pub async fn kill_node(&mut self, i: usize) {
        self.nodes[i].process.kill().await;
    }

    /// Kills one agent process and starts it again as a service restart
    /// would: the same addresses, state directory and event log (the
    /// simulated IIS restarts with it, so its workers are new).
    pub async fn restart_node(&mut self, spec: &SandboxSpec, i: usize) -> Result<(), SandboxError> {
        self.nodes[i].process.kill().await;
        let again = agents::Again {
            agent: self.nodes[i].agent.clone(),
            http_port: self.nodes[i].http_port,
            keep_sim: false,
        };
        let bin = agent_binary()?;
        let certs = self.dir.join("certs");
        let spawned = agents::spawn(&bin, spec, &self.dir, &certs, i, Some(again))?;
        let respawn = agents::Respawn {
            bin,
            spec: spec.clone(),
            dir: self.dir.clone(),
            certs,
            i,
        };
        self.nodes[i] = spawned
            .ready(&self.dir, Duration::from_secs(20), respawn)
            .await?;
        Ok(())
    }

    pub async fn stop(mut self) {
        self.kill_haproxy().await;
        for n in &mut self.nodes {
            n.process.kill().await;
        }
    }

    /// Sets the faults of `node`'s site pool ([`POOL`]) to `faults` (the
    /// keys of a pool's `faults:`, indented by six), replacing any it had:
    /// the agent applies them at once, as when an application goes bad.
    pub fn set_pool_faults(&self, node: &str, faults: &str) -> std::io::Result<()> {
        let sim_file = self.dir.join(format!("{node}.sim.yaml"));
        let text = std::fs::read_to_string(&sim_file)?;
        let text = with_pool_faults(&text, POOL, faults).ok_or_else(|| {
            std::io::Error::other(format!(
                "{}: no pool {POOL} under app_pools",
                sim_file.display()
            ))
        })?;
        // Whole or not at all: the agent may read it at any moment.
        let edited = sim_file.with_extension("new");
        std::fs::write(&edited, text)?;
        std::fs::rename(&edited, &sim_file)
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
        "sites:\n  - name: {SITE}\n    host: {SITE_HOST}\n{version_probe}    probe:\n      path: /\n      expect_status: 200\n      expect_body: \"pool={POOL}\"\n      timeout: 2s\n      interval: 100ms\n      successes: 3\n{second}app_pools: [{POOL}{second_pool}]\nrollout:\n  max_unavailable: {}\n  min_healthy: \"{}\"\n  drain_timeout: {}\n  healthy_timeout: {}\n  operation_timeout: 60s\n{}",
        spec.max_unavailable,
        spec.min_healthy,
        humantime::format_duration(spec.drain_timeout),
        humantime::format_duration(spec.healthy_timeout),
        spec.rollout_extra,
        version_probe = if spec.releases {
            format!("    version_probe:\n      path: {VERSION_FILE}\n      expect: \"{{version}}\"\n")
        } else {
            String::new()
        },
        second = if spec.second_site {
            format!("  - name: {SECOND_SITE}\n    host: {SECOND_SITE_HOST}\n    app_pool: {SECOND_POOL}\n    probe:\n      path: /\n      expect_body: \"pool={SECOND_POOL}\"\n      timeout: 2s\n      interval: 100ms\n      successes: 3\n")
        } else {
            String::new()
        },
        second_pool = if spec.second_site {
            format!(", {SECOND_POOL}")
        } else {
            String::new()
        },
    ));
    // A canary soak (`deploy --soak`) on a sandbox's light traffic: a
    // judgement every 5 s, 50 requests enough.
    // A sandbox has little traffic: a good release can show it adds less
    // than 1 point of 5xx within a short soak, not half a point.
    // Analysis stays the last section: tests add its keys at the end.
    y.push_str(&spec.patch_yaml);
    y.push_str(&spec.guard_yaml);
    y.push_str("analysis:\n  interval: 5s\n  min_requests: 50\n  errors: {max_increase: \"1%\"}\n");
    y
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_faults_go_to_the_named_pool_and_replace_its_own() {
        let sim = "node: web01\napp_pools:\n  - name: ShopPool\n    startup: 1s\n    faults:\n      error_rate: 0.1\n  - name: ReportsPool\n    startup: 2s\n";
        let out = super::with_pool_faults(sim, "ShopPool", "      extra_latency: 1s\n").unwrap();
        assert_eq!(
            out,
            "node: web01\napp_pools:\n  - name: ShopPool\n    startup: 1s\n    faults:\n      extra_latency: 1s\n  - name: ReportsPool\n    startup: 2s\n"
        );
        let last = super::with_pool_faults(&out, "ReportsPool", "      error_rate: 0.5\n").unwrap();
        assert!(
            last.ends_with(
                "  - name: ReportsPool\n    startup: 2s\n    faults:\n      error_rate: 0.5\n"
            ),
            "{last}"
        );
        assert!(super::with_pool_faults(sim, "Nope", "").is_none());
    }
}
