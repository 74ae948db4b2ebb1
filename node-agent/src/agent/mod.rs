//! A configured agent, started by the binary, the Windows service or a
//! test alike: [`AgentSettings::resolve`] once, then [`run`].
mod settings;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use settings::{
    AgentSettings, Backend, BackendKind, Flags, SettingsError, DEFAULT_POLL_INTERVAL,
    DEFAULT_START_RETRY_DELAY, DEFAULT_STOP_GRACE,
};

use crate::audit::Audit;
use crate::iis::Iis;
use crate::iiscmd::CommandBackend;
use crate::runner::SystemRunner;
use crate::server::Security;
use crate::sim::Simulator;

/// Why the agent could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not read sim file {}: {source}", path.display())]
    ReadSim {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sim file {} is not valid:\n{message}", path.display())]
    Sim { path: PathBuf, message: String },
    #[error("could not open the simulated sites' ports: {0}")]
    SimPorts(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("could not open the audit log {}: {source}", path.display())]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not listen on {addr}{what}: {source}")]
    Listen {
        addr: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("could not use the state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        source: crate::state::OpenError,
    },
    #[error("the server stopped: {0}")]
    Server(String),
}

impl RunError {
    /// Another agent holds the state directory (the binary exits 3).
    pub fn state_dir_in_use(&self) -> bool {
        matches!(
            self,
            RunError::StateDir {
                source: crate::state::OpenError::InUse(_),
                ..
            }
        )
    }
}

/// Where a started agent is, said once it listens (the binary prints it
/// as one JSON line that scripts wait for).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    pub agent: String,
    pub node: String,
    pub backend: &'static str,
    pub sites: serde_json::Value,
    pub metrics: Option<String>,
}

fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

/// The backend the settings name, with the node's name, the simulator
/// (to shut down) and its sites, and the LB members it can drive.
struct Started {
    node: String,
    iis: Arc<dyn Iis>,
    sim: Option<Simulator>,
    sites: serde_json::Value,
    lb_members: Option<Arc<crate::lbmember::LbMembers>>,
    /// The server under IIS (boots, updates, restarts).
    host: Arc<dyn crate::iis::host::Host>,
    /// Set when the simulated server restarts: the agent ends at once.
    rebooted: Option<tokio::sync::watch::Receiver<bool>>,
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (a signal, the service manager, the caller).
    Stopped,
    /// The simulated server restarted: the process should end now with
    /// [`crate::sim::host::REBOOT_EXIT_CODE`] (what a real restart does to
    /// it), and be started again after the boot.
    Rebooted,
}

async fn start_backend(s: &AgentSettings) -> Result<Started, RunError> {
    let config = &s.config;
    match &s.backend {
        Backend::Sim(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| RunError::ReadSim {
                path: path.clone(),
                source,
            })?;
            let file = crate::sim::config::parse(&text).map_err(|e| RunError::Sim {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let sim = Simulator::start(file.clone())
                .await
                .map_err(RunError::SimPorts)?;
            sim.watch_file(path.clone());
            let (reboot_tx, rebooted) = tokio::sync::watch::channel(false);
            let host = crate::sim::host::SimHost::start(
                &sim,
                &file,
                s.state_dir.as_deref(),
                crate::sim::host::RebootAction::Call(Arc::new(move || {
                    reboot_tx.send_replace(true);
                })),
            );
            let sites = sim
                .sites()
                .iter()
                .map(|x| serde_json::json!({"name": x.name, "port": x.port, "host": x.host, "app_pool": x.app_pool}))
                .collect();
            Ok(Started {
                node: sim.node().to_string(),
                iis: Arc::new(sim.clone()),
                sim: Some(sim),
                sites,
                lb_members: None,
                host: Arc::new(host),
                rebooted: Some(rebooted),
            })
        }
        Backend::Iis => {
            let node = config.node.clone().unwrap_or_else(host_name);
            let lb_members = Some(Arc::new(crate::lbmember::LbMembers::new(
                Arc::new(SystemRunner),
                config.tools.powershell.clone(),
                config.timeouts.command,
                node.clone(),
            )));
            let backend = CommandBackend::new(
                Arc::new(SystemRunner),
                config.tools.clone(),
                config.timeouts.clone(),
                config.health_files.clone(),
            )
            .discover_logs()
            .await;
            let host = crate::iiscmd::host::WindowsHost::new(
                Arc::new(SystemRunner),
                config.tools.clone(),
                config.timeouts.clone(),
                s.service_name.clone(),
            );
            host.read_service_start().await;
            Ok(Started {
                node,
                iis: Arc::new(backend),
                sim: None,
                sites: serde_json::json!([]),
                lb_members,
                host: Arc::new(host),
                rebooted: None,
            })
        }
    }
}

/// mTLS (or plaintext when the settings say `--insecure`), roles, audit.
fn security(s: &AgentSettings) -> Result<Security, RunError> {
    let tls = match &s.tls {
        Some(files) => {
            Some(crate::security::server_config(files).map_err(|e| RunError::Tls(e.to_string()))?)
        }
        None => {
            tracing::warn!(
                "--insecure: serving plaintext gRPC without client authentication; \
                 anyone who can reach this port can recycle or reset IIS"
            );
            None
        }
    };
    let audit = match &s.audit_log {
        Some(path) => Some(Arc::new(Audit::open(path).map_err(|source| {
            RunError::Audit {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    Ok(Security {
        tls,
        reload: s.tls.clone(),
        max_connections: s.max_connections,
        idle_timeout: s.idle_timeout,
        authz: s.config.authorization.clone(),
        audit,
        metrics: None,
    })
}

async fn bind(addr: &str, what: &'static str) -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: addr.to_string(),
            what,
            source,
        })
}

/// Serves until `shutdown`; `ready` is told where once the agent listens.
/// On shutdown a recycle or reset under way may finish within the stop
/// grace; past it the agent stops anyway (the operation stays recorded as
/// started, so a restarted agent answers it as interrupted).
pub async fn run(
    settings: AgentSettings,
    ready: impl FnOnce(&Ready),
    shutdown: impl Future<Output = ()>,
) -> Result<Ended, RunError> {
    let started = start_backend(&settings).await?;
    let mut security = security(&settings)?;
    let metrics = match &settings.metrics_listen {
        Some(addr) => Some((
            bind(addr, " for metrics").await?,
            Arc::new(crate::metrics::Metrics::default()),
        )),
        None => None,
    };
    security.metrics = metrics.as_ref().map(|(_, m)| m.clone());
    let listener = bind(&settings.listen, "").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| RunError::Server(e.to_string()))?;
    let state = match &settings.state_dir {
        Some(dir) => {
            Some(
                crate::state::StateDir::open(dir).map_err(|source| RunError::StateDir {
                    dir: dir.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    // The logs are watched from here on, before the agent says it is
    // ready: what is written after it answers is this agent's traffic.
    let traffic = crate::traffic::watch::TrafficWatch::for_backend(started.iis.clone());
    ready(&Ready {
        agent: addr.to_string(),
        node: started.node.clone(),
        backend: settings.backend_kind().as_str(),
        sites: started.sites.clone(),
        metrics: metrics
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
            .map(|a| a.to_string()),
    });
    let iis = started.iis.clone();
    let deployments = settings.config.deploy.clone().map(|d| {
        Arc::new(crate::deploy::Deployments::new(
            d,
            iis.clone(),
            Arc::new(SystemRunner),
        ))
    });
    let patching = Arc::new(crate::patch::Patching::new(
        started.host.clone(),
        settings.config.patch.clone(),
        Arc::new(SystemRunner),
    ));
    let mut service =
        crate::service::AgentService::new(started.node.clone(), iis.clone(), settings.ops.clone())
            .with_patching(Some(patching))
            .with_dumps(
                settings
                    .config
                    .dump
                    .clone()
                    .map(|d| Arc::new(crate::dump::Dumps::new(d))),
            )
            .with_deployments(deployments)
            .with_lb_members(started.lb_members.clone())
            .with_traffic(traffic.clone());
    if let Some(state) = state {
        service = service.with_state(Arc::new(state));
    }
    if let Some((listener, m)) = metrics {
        let leases = service.leases();
        let live: crate::metrics::LiveFn = Arc::new(move || {
            let (iis, leases, traffic) = (iis.clone(), leases.clone(), traffic.clone());
            Box::pin(async move {
                let sites = match traffic {
                    Some(watch) => tokio::task::spawn_blocking(move || {
                        watch.figures(crate::metrics::SITE_WINDOW_S)
                    })
                    .await
                    .unwrap_or_default(),
                    None => Vec::new(),
                };
                crate::metrics::Live {
                    in_flight: iis.in_flight().await.ok().flatten(),
                    drained: !iis.health_file_present().await.unwrap_or(true),
                    leased: leases.current().is_some(),
                    sites,
                }
            })
        });
        tokio::spawn(crate::metrics::serve(
            listener,
            m,
            live,
            std::future::pending(),
        ));
    }
    let busy = service.busy();
    let (stop_server, server_stops) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::server::serve(listener, service, security, async {
        let _ = server_stops.await;
    }));
    let mut rebooted = started.rebooted.clone();
    let restart = async {
        match &mut rebooted {
            Some(r) => {
                let _ = r.wait_for(|b| *b).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        served = &mut server => {
            return Err(RunError::Server(match served {
                Ok(Ok(())) => "on its own".into(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("its task failed: {e}"),
            }));
        }
        _ = shutdown => {}
        () = restart => {
            // Nothing is waited for: the server went down.
            tracing::warn!("the simulated server restarted: the agent ends with it");
            server.abort();
            if let Some(sim) = started.sim {
                sim.shutdown();
            }
            return Ok(Ended::Rebooted);
        }
    }
    // A recycle or reset under way finishes first (bounded); holding the
    // lock then keeps another from starting while the server closes.
    let grace = settings.stop_grace;
    let operation = match tokio::time::timeout(grace, busy.lock()).await {
        Ok(guard) => {
            tracing::info!("stopping: no operation under way");
            Some(guard)
        }
        Err(_) => {
            tracing::error!(
                "stopping with a recycle or reset still under way after {}: it is recorded as interrupted",
                humantime::format_duration(grace)
            );
            None
        }
    };
    let _ = stop_server.send(());
    // Open streams (WatchLoad) are not waited for long; past the grace,
    // hardly at all.
    let close = if operation.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    };
    let _ = tokio::time::timeout(close, server).await;
    drop(operation);
    if let Some(sim) = started.sim {
        sim.shutdown();
    }
    Ok(Ended::Stopped)
}
