//! The agent configuration file (for the Windows backend and the simulator alike)
//! (`farm-agent --config agent.yaml`). A documented contract.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

farm_proto::message_error! {
    /// Why the agent config file is not valid.
    ConfigError
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name the node reports; default the host name.
    #[serde(default)]
    pub node: Option<String>,
    /// gRPC address, e.g. `0.0.0.0:7443`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Health-check files the load balancer monitors: drain renames each
    /// to `<file>.drained`, undrain renames it back.
    #[serde(default)]
    pub health_files: Vec<PathBuf>,
    /// mutual TLS: the agent's certificate and key, and the farm CA that
    /// client certificates must be signed by.
    #[serde(default)]
    pub tls: Option<crate::security::TlsFiles>,
    /// Roles per client identity; whether Reset is allowed here.
    #[serde(default)]
    pub authorization: crate::security::Authorization,
    /// One JSON line per request is appended here.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Deployments: where releases are kept, hooks, limits. Without it the
    /// agent refuses Stage and Switch.
    #[serde(default)]
    pub deploy: Option<crate::deploy::DeployConfig>,
    /// Connections served at once (default 256).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// A connection with no call for this long is closed (default 2m).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<std::time::Duration>,
    /// Operation records and the lease, kept across restarts (default
    /// `%ProgramData%\farm-agent` on Windows).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// A Prometheus endpoint on a listener of its own.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub tools: Tools,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Patch night: how updates are installed and the server restarted.
    #[serde(default)]
    pub patch: PatchConfig,
    /// Memory dumps of a sick pool's workers (the guard's action), through
    /// this tool and within this budget. Without it the agent refuses Dump.
    #[serde(default)]
    pub dump: Option<crate::dump::DumpConfig>,
}

/// How this server takes its updates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchConfig {
    /// Install with this program instead of the Windows Update Agent
    /// (argv, no shell): exit 0 done, 3010 (or 1641) done and a restart
    /// needed, 2359302 (0x240006, already installed) done, anything else
    /// failed.
    pub command: Option<Vec<String>>,
    /// The longest an install may take (default 2h).
    #[serde(with = "humantime_serde")]
    pub install_timeout: Duration,
    /// `shutdown /t`: seconds between the restart being asked and done,
    /// when the controller does not say (default 10s).
    #[serde(with = "humantime_serde")]
    pub reboot_delay: Duration,
}

impl Default for PatchConfig {
    fn default() -> Self {
        Self {
            command: None,
            install_timeout: Duration::from_secs(2 * 3600),
            reboot_delay: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` answers; loopback by default.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_listen() -> String {
    "0.0.0.0:7443".into()
}

/// Paths of the IIS tools; defaults under `%windir%\system32`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tools {
    pub appcmd: String,
    pub iisreset: String,
    pub sc: String,
    pub taskkill: String,
    pub typeperf: String,
    /// For the WAS events of a pool's diagnostics.
    pub wevtutil: String,
    /// `netsh http flush logbuffer` before a traffic window is read.
    pub netsh: String,
    /// For the `arr` and `nlb` load balancer members.
    pub powershell: String,
    /// `reg query`: the performance counters' names in this Windows's
    /// display language, and whether a restart is pending.
    pub reg: String,
    /// The planned restart of patch night.
    pub shutdown: String,
}

impl Tools {
    /// The tools by bare name, found through PATH.
    pub fn on_path() -> Self {
        Self {
            appcmd: "appcmd".into(),
            iisreset: "iisreset".into(),
            sc: "sc".into(),
            taskkill: "taskkill".into(),
            typeperf: "typeperf".into(),
            wevtutil: "wevtutil".into(),
            netsh: "netsh".into(),
            powershell: "powershell".into(),
            reg: "reg".into(),
            shutdown: "shutdown".into(),
        }
    }
}

impl Default for Tools {
    fn default() -> Self {
        let windir = std::env::var("windir")
            .or_else(|_| std::env::var("SystemRoot"))
            .unwrap_or_else(|_| r"C:\Windows".into());
        let sys = Path::new(&windir).join("system32");
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        Self {
            appcmd: path(sys.join("inetsrv").join("appcmd.exe")),
            iisreset: path(sys.join("iisreset.exe")),
            sc: path(sys.join("sc.exe")),
            taskkill: path(sys.join("taskkill.exe")),
            typeperf: path(sys.join("typeperf.exe")),
            wevtutil: path(sys.join("wevtutil.exe")),
            netsh: path(sys.join("netsh.exe")),
            powershell: path(
                sys.join("WindowsPowerShell")
                    .join("v1.0")
                    .join("powershell.exe"),
            ),
            reg: path(sys.join("reg.exe")),
            shutdown: path(sys.join("shutdown.exe")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Any single tool call (appcmd, sc, taskkill, typeperf).
    #[serde(with = "humantime_serde")]
    pub command: Duration,
    /// Graceful stop of `iisreset /stop /timeout:N` when the request does
    /// not say.
    #[serde(with = "humantime_serde")]
    pub stop: Duration,
    /// `iisreset /start`.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// How long new workers and services may take to show up.
    #[serde(with = "humantime_serde")]
    pub verify: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(60),
            stop: Duration::from_secs(60),
            start: Duration::from_secs(120),
            verify: Duration::from_secs(90),
        }
    }
}

pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
    let c: AgentConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    c.authorization
        .validate()
        .map_err(|e| ConfigError(e.to_string()))?;
    if let Some(d) = &c.dump {
        d.check().map_err(ConfigError)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_parses() {
        let c = super::parse(include_str!("../examples/agent.yaml")).unwrap();
        assert_eq!(c.node.as_deref(), Some("web01"));
        assert_eq!(c.health_files.len(), 1);
        assert_eq!(c.timeouts.start.as_secs(), 120);
        assert!(c.tools.appcmd.ends_with("appcmd.exe"));
        assert_eq!(c.dump.as_ref().map(|d| d.per_day), Some(2));
    }

    #[test]
    fn a_dump_tool_that_never_names_the_worker_is_refused() {
        let e = super::parse("dump:\n  command: [procdump, -ma]\n  dir: /tmp/d\n").unwrap_err();
        assert!(e.to_string().contains("{pid}"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(super::parse("listen: 1.2.3.4:5\nbogus: 1\n").is_err());
    }
}
