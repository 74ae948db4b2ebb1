//! The agent's settings, resolved once: a flag wins over the config file,
//! which wins over the default — every merge here, nowhere else.
use std::path::PathBuf;
use std::time::Duration;

use crate::config::AgentConfig;
use crate::ops::OpsConfig;
use crate::security::TlsFiles;

/// How long a stopping agent lets an operation under way finish.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(60);
/// Between `iisreset /start` attempts.
pub const DEFAULT_START_RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often IIS is looked at while an operation is verified.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Which IIS the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// IIS through its own tools (appcmd, iisreset, sc).
    Iis,
    /// The simulator (a sim file).
    Sim,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Iis => "iis",
            BackendKind::Sim => "sim",
        }
    }
}

/// The backend with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Iis,
    Sim(PathBuf),
}

/// What the command line said: every value optional, unsaid meaning "the
/// config file's, else the default".
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<String>,
    pub backend: Option<BackendKind>,
    pub sim: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub start_retry_delay: Option<Duration>,
    pub verify_timeout: Option<Duration>,
    pub poll_interval: Option<Duration>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub tls_crl: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<Duration>,
    pub insecure: bool,
    pub audit_log: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub stop_grace: Option<Duration>,
}

/// Why the settings do not hold together.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("could not read agent config {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent config {} is not valid: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("--backend sim needs --sim FILE")]
    SimWithoutFile,
    #[error("--tls-crl needs TLS (--tls-cert, --tls-key, --client-ca or the config's `tls`)")]
    CrlWithoutTls,
    #[error("--insecure conflicts with the config file's `tls`: choose one")]
    InsecureWithTls,
    #[error(
        "no TLS configured: give --tls-cert, --tls-key and --client-ca (or `tls:` in the config file; \
         `farmctl certs` makes them), or --insecure for plaintext"
    )]
    NoTls,
}

/// Everything the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub listen: String,
    pub backend: Backend,
    pub ops: OpsConfig,
    /// `None`: plaintext (`--insecure`).
    pub tls: Option<TlsFiles>,
    /// 0: the default cap.
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    pub audit_log: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub stop_grace: Duration,
    /// The rest of the config file (node name, tools, timeouts, health
    /// files, roles, deploy), as read.
    pub config: AgentConfig,
    /// The Windows service the agent runs as, when it does (its start
    /// type is reported: an agent that does not start with Windows cannot
    /// say a restarted server is back).
    pub service_name: Option<String>,
}

impl AgentSettings {
    /// Reads the config file `flags` names (none: every default) and
    /// resolves.
    pub fn load(flags: &Flags) -> Result<Self, SettingsError> {
        let config = match &flags.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                crate::config::parse(&text).map_err(|e| SettingsError::Config {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => crate::config::parse("{}").map_err(|e| SettingsError::Config {
                path: PathBuf::from("(defaults)"),
                message: e.to_string(),
            })?,
        };
        Self::resolve(flags, config)
    }

    /// Flag > config file > default, for every setting.
    pub fn resolve(flags: &Flags, config: AgentConfig) -> Result<Self, SettingsError> {
        let kind = flags.backend.unwrap_or(if flags.sim.is_some() {
            BackendKind::Sim
        } else {
            BackendKind::Iis
        });
        let backend = match kind {
            BackendKind::Iis => Backend::Iis,
            BackendKind::Sim => {
                Backend::Sim(flags.sim.clone().ok_or(SettingsError::SimWithoutFile)?)
            }
        };
        let ops = OpsConfig {
            verify_timeout: flags.verify_timeout.unwrap_or(config.timeouts.verify),
            stop_timeout: config.timeouts.stop,
            start_retry_delay: flags.start_retry_delay.unwrap_or(DEFAULT_START_RETRY_DELAY),
            poll_interval: flags.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
            ..OpsConfig::default()
        };
        let tls = match (&flags.tls_cert, &flags.tls_key, &flags.client_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: ca.clone(),
                crl: flags.tls_crl.clone(),
            }),
            _ => config.tls.clone().map(|mut t| {
                if flags.tls_crl.is_some() {
                    t.crl = flags.tls_crl.clone();
                }
                t
            }),
        };
        if flags.tls_crl.is_some() && tls.is_none() {
            return Err(SettingsError::CrlWithoutTls);
        }
        match (&tls, flags.insecure) {
            (Some(_), true) => return Err(SettingsError::InsecureWithTls),
            (None, false) => return Err(SettingsError::NoTls),
            _ => {}
        }
        Ok(Self {
            listen: flags
                .listen
                .clone()
                .unwrap_or_else(|| config.listen.clone()),
            backend,
            ops,
            tls,
            max_connections: flags
                .max_connections
                .or(config.max_connections)
                .unwrap_or(0),
            idle_timeout: flags.idle_timeout.or(config.idle_timeout),
            audit_log: flags.audit_log.clone().or_else(|| config.audit_log.clone()),
            metrics_listen: flags
                .metrics_listen
                .clone()
                .or_else(|| config.metrics.as_ref().map(|m| m.listen.clone())),
            state_dir: flags
                .state_dir
                .clone()
                .or_else(|| config.state_dir.clone())
                .or_else(crate::state::default_dir),
            stop_grace: flags.stop_grace.unwrap_or(DEFAULT_STOP_GRACE),
            config,
            service_name: None,
        })
    }

    pub fn backend_kind(&self) -> BackendKind {
        match self.backend {
            Backend::Iis => BackendKind::Iis,
            Backend::Sim(_) => BackendKind::Sim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "listen: 10.0.0.1:7443\nmax_connections: 50\nidle_timeout: 30s\naudit_log: /var/file-audit.jsonl\nstate_dir: /var/file-state\nmetrics: {listen: 10.0.0.1:9464}\ntimeouts: {verify: 45s}\ntls: {cert: f.pem, key: f-key.pem, client_ca: f-ca.pem}\n";

    fn file() -> AgentConfig {
        crate::config::parse(FILE).unwrap()
    }

    fn all_flags() -> Flags {
        Flags {
            listen: Some("127.0.0.1:1".into()),
            verify_timeout: Some(Duration::from_secs(5)),
            max_connections: Some(7),
            idle_timeout: Some(Duration::from_secs(3)),
            audit_log: Some("/flag-audit.jsonl".into()),
            state_dir: Some("/flag-state".into()),
            metrics_listen: Some("127.0.0.1:2".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            client_ca: Some("ca.pem".into()),
            ..Flags::default()
        }
    }

    #[test]
    fn a_flag_wins_over_the_file() {
        let s = AgentSettings::resolve(&all_flags(), file()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:1");
        assert_eq!(s.ops.verify_timeout, Duration::from_secs(5));
        assert_eq!(s.max_connections, 7);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(3)));
        assert_eq!(s.audit_log, Some("/flag-audit.jsonl".into()));
        assert_eq!(s.state_dir, Some("/flag-state".into()));
        assert_eq!(s.metrics_listen.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(s.tls.unwrap().cert, PathBuf::from("c.pem"));
    }

    #[test]
    fn the_file_wins_over_the_default() {
        let s = AgentSettings::resolve(&Flags::default(), file()).unwrap();
        assert_eq!(s.listen, "10.0.0.1:7443");
        assert_eq!(s.ops.verify_timeout, Duration::from_secs(45));
        assert_eq!(s.max_connections, 50);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.audit_log, Some("/var/file-audit.jsonl".into()));
        assert_eq!(s.state_dir, Some("/var/file-state".into()));
        assert_eq!(s.metrics_listen.as_deref(), Some("10.0.0.1:9464"));
        assert_eq!(s.tls.unwrap().cert, PathBuf::from("f.pem"));
    }

    #[test]
    fn defaults_when_neither_says() {
        let flags = Flags {
            insecure: true,
            ..Flags::default()
        };
        let s = AgentSettings::resolve(&flags, crate::config::parse("{}").unwrap()).unwrap();
        assert_eq!(s.listen, "0.0.0.0:7443");
        assert_eq!(s.ops.verify_timeout, Duration::from_secs(90));
        assert_eq!(s.ops.start_retry_delay, DEFAULT_START_RETRY_DELAY);
        assert_eq!(s.ops.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(s.max_connections, 0);
        assert_eq!(s.idle_timeout, None);
        assert_eq!(s.stop_grace, DEFAULT_STOP_GRACE);
        assert_eq!(s.metrics_listen, None);
        assert!(s.tls.is_none());
        assert_eq!(s.backend, Backend::Iis);
    }

    #[test]
    fn the_backend_is_chosen_once() {
        let sim = Flags {
            sim: Some("sim.yaml".into()),
            insecure: true,
            ..Flags::default()
        };
        let s = AgentSettings::resolve(&sim, crate::config::parse("{}").unwrap()).unwrap();
        assert_eq!(s.backend, Backend::Sim("sim.yaml".into()));
        let no_file = Flags {
            backend: Some(BackendKind::Sim),
            insecure: true,
            ..Flags::default()
        };
        assert!(matches!(
            AgentSettings::resolve(&no_file, crate::config::parse("{}").unwrap()),
            Err(SettingsError::SimWithoutFile)
        ));
    }

    #[test]
    fn tls_is_required_unless_insecure_and_not_both() {
        let none = crate::config::parse("{}").unwrap();
        assert!(matches!(
            AgentSettings::resolve(&Flags::default(), none.clone()),
            Err(SettingsError::NoTls)
        ));
        let both = Flags {
            insecure: true,
            ..Flags::default()
        };
        assert!(matches!(
            AgentSettings::resolve(&both, file()),
            Err(SettingsError::InsecureWithTls)
        ));
        let crl = Flags {
            tls_crl: Some("crl.pem".into()),
            insecure: true,
            ..Flags::default()
        };
        assert!(matches!(
            AgentSettings::resolve(&crl, none),
            Err(SettingsError::CrlWithoutTls)
        ));
    }
}
