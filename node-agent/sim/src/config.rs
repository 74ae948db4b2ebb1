//! The sim file: one simulated IIS server. The format is a documented
//! contract (README, "Sim file reference"); keep it stable.
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

farm_proto::message_error! {
    /// Why a sim file is not valid, naming the place.
    SimFileError
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFile {
    /// Name the node reports.
    pub node: String,
    /// Loopback address the sites listen on.
    #[serde(default = "default_address")]
    pub address: String,
    /// URL path of the load balancer's health-check file.
    #[serde(default = "default_health_file")]
    pub health_file: String,
    /// Append one JSON line per drain/undrain/recycle/reset here.
    #[serde(default)]
    pub event_log: Option<PathBuf>,
    /// Write IIS's traffic records under this folder, as IIS does: a W3C
    /// access log per site (`W3SVC<n>/u_exYYMMDD.log`, n the site's place
    /// in `sites`, from 1) and the HTTP.sys error log (`HTTPERR/httperr1.log`).
    #[serde(default)]
    pub logs: Option<PathBuf>,
    #[serde(default)]
    pub timings: Timings,
    pub sites: Vec<SimSite>,
    pub app_pools: Vec<SimPool>,
    #[serde(default)]
    pub faults: Faults,
    /// How long a simulated restart takes: the agent process ends, and
    /// the sandbox starts it again after this; the sites do not answer
    /// meanwhile.
    #[serde(default = "default_boot_time", with = "humantime_serde")]
    pub boot_time: Duration,
    /// The Windows updates that apply to this server until installed.
    #[serde(default)]
    pub updates: Vec<SimUpdate>,
    /// What goes wrong on patch night.
    #[serde(default)]
    pub patch_faults: PatchFaults,
}

fn default_boot_time() -> Duration {
    Duration::from_secs(5)
}

/// One Windows update of a simulated server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimUpdate {
    /// `KB5031364`.
    pub kb: String,
    #[serde(default)]
    pub title: String,
    /// `SecurityUpdates`, `CriticalUpdates`, ... (default `SecurityUpdates`).
    #[serde(default = "default_classification")]
    pub classification: String,
    #[serde(default)]
    pub size_mb: u64,
    /// How long installing it takes.
    #[serde(default = "default_install_time", with = "humantime_serde")]
    pub install_time: Duration,
    /// It needs a restart to finish (default yes).
    #[serde(default = "yes")]
    pub reboot: bool,
    /// Its install fails with this HRESULT (`0x80240022`).
    #[serde(default)]
    pub fails: Option<String>,
}

fn default_classification() -> String {
    "SecurityUpdates".into()
}

fn default_install_time() -> Duration {
    Duration::from_millis(500)
}

/// Patch night's faults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchFaults {
    /// A restart never comes back (the agent is not started again).
    pub never_returns: bool,
    /// An install never ends (until the agent's own time limit).
    pub install_hangs: bool,
    /// Every pool's faults once the server came back from a restart (an
    /// update that broke the application).
    pub after_reboot: PoolFaults,
}

fn default_address() -> String {
    "127.0.0.1".into()
}

fn default_health_file() -> String {
    "/health.htm".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timings {
    /// How long `iisreset /stop` takes once requests are done.
    #[serde(with = "humantime_serde")]
    pub iis_stop: Duration,
    /// How long `iisreset /start` takes.
    #[serde(with = "humantime_serde")]
    pub iis_start: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            iis_stop: Duration::from_millis(300),
            iis_start: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSite {
    pub name: String,
    /// 0 picks a free port; sites with the same non-zero port share it and
    /// are told apart by `host`.
    #[serde(default)]
    pub port: u16,
    /// Host header of the binding; none answers any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Bind on the same port as this other site (told apart by `host`),
    /// whatever port that one gets: several sites on one port, as IIS
    /// binds them by host header.
    #[serde(default)]
    pub share_port_with: Option<String>,
    pub app_pool: String,
    /// The folder the site's files are served from (`/version.txt`,
    /// `/index.html`, ...); `/` keeps its built-in answer. None: no files.
    #[serde(default)]
    pub physical_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// IIS default: no worker until the first request.
    OnDemand,
    /// A worker is started with the pool.
    AlwaysRunning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    Started,
    Stopped,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPool {
    pub name: String,
    /// `disallowOverlappingRotation: false`: the new worker starts before the
    /// old one stops. With `false` here, requests get 503 while it rotates.
    #[serde(default = "yes")]
    pub overlapped: bool,
    #[serde(default = "default_start_mode")]
    pub start_mode: StartMode,
    #[serde(default = "default_state")]
    pub state: InitialState,
    /// Time for a new worker process to start.
    #[serde(default = "default_startup", with = "humantime_serde")]
    pub startup: Duration,
    /// Cold start: a new worker's requests wait this long after it started
    /// (JIT, caches) until it is warm.
    #[serde(default = "default_warmup", with = "humantime_serde")]
    pub warmup: Duration,
    /// Old workers still busy after this are killed, their requests cut.
    #[serde(default = "default_shutdown", with = "humantime_serde")]
    pub shutdown_time_limit: Duration,
    /// What the pool's users get wrong (a misbehaving application).
    #[serde(default)]
    pub faults: PoolFaults,
}

/// A pool that serves badly while it runs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolFaults {
    /// This share of its requests (0..1), evenly spread, answer
    /// `error_status`.
    pub error_rate: f64,
    /// The status of those (default 500).
    pub error_status: Option<u16>,
    /// Every request of the pool takes this much longer.
    #[serde(with = "humantime_serde")]
    pub extra_latency: Option<Duration>,
    /// This share of its requests (0..1) never answer until the pool's
    /// worker goes (a recycle, a stop).
    pub hang_rate: f64,
    /// The faults are the running worker's (a leak, a deadlock): a
    /// recycle's new worker serves well (until `relapse_after`).
    pub healed_by_recycle: bool,
    /// With `healed_by_recycle`: the new worker goes bad again this long
    /// after the recycle (a leak that grows back).
    #[serde(with = "humantime_serde")]
    pub relapse_after: Option<Duration>,
}

impl PoolFaults {
    pub fn any(&self) -> bool {
        self.error_rate > 0.0 || self.extra_latency.is_some() || self.hang_rate > 0.0
    }

    /// Out-of-range values, named (`at` is where the faults are).
    pub fn check(&self, at: &str) -> Result<(), String> {
        for (key, v) in [
            ("error_rate", self.error_rate),
            ("hang_rate", self.hang_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{at}.{key}: {v} is not between 0 and 1"));
            }
        }
        if let Some(s) = self.error_status {
            if !(100..=599).contains(&s) {
                return Err(format!("{at}.error_status: {s} is not an HTTP status"));
            }
        }
        Ok(())
    }
}

/// A release's own faults: `farm-sim.yaml` at the root of its package
/// (the `faults` keys of a pool), applied while the site serves it.
pub const RELEASE_FAULTS_FILE: &str = "farm-sim.yaml";

fn yes() -> bool {
    true
}
fn default_start_mode() -> StartMode {
    StartMode::AlwaysRunning
}
fn default_state() -> InitialState {
    InitialState::Started
}
fn default_startup() -> Duration {
    Duration::from_millis(200)
}
fn default_warmup() -> Duration {
    Duration::from_millis(300)
}
fn default_shutdown() -> Duration {
    Duration::from_secs(90)
}

/// Injected faults, each as the real failure looks from outside.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// `iisreset /stop` hangs past its timeout and fails ("Stop attempt
    /// failed."), leaving the services stop-pending until forced.
    pub stop_hangs: bool,
    /// The next N `iisreset /start` calls fail.
    pub start_fails: u32,
    /// After a recycle, the new worker crashes and rapid-fail protection
    /// stops the pool (503).
    pub crash_after_recycle: bool,
    /// After the next recycle or reset, every application request answers
    /// 500: the node never becomes healthy again.
    pub never_healthy: bool,
    /// A site's new physical path is taken (status shows it) but the old
    /// content keeps being served, as when IIS does not pick the change up:
    /// a deployed version never answers.
    pub switch_ignored: bool,
}

/// Parses a sim file, naming the place of the first error.
pub fn parse(text: &str) -> Result<SimFile, SimFileError> {
    let sim: SimFile = serde_yaml::from_str(text).map_err(|e| SimFileError(e.to_string()))?;
    let mut errors = Vec::new();
    if sim.node.trim().is_empty() {
        errors.push("node: must not be empty".to_string());
    }
    if sim.address.parse::<std::net::IpAddr>().is_err() {
        errors.push(format!("address: `{}` is not an IP address", sim.address));
    }
    if !sim.health_file.starts_with('/') {
        errors.push(format!(
            "health_file: `{}` must start with `/`",
            sim.health_file
        ));
    }
    for (i, p) in sim.app_pools.iter().enumerate() {
        if let Err(e) = p.faults.check(&format!("app_pools[{i}].faults")) {
            errors.push(e);
        }
    }
    if let Err(e) = sim
        .patch_faults
        .after_reboot
        .check("patch_faults.after_reboot")
    {
        errors.push(e);
    }
    for (i, u) in sim.updates.iter().enumerate() {
        if farm_proto::updates::kb(&u.kb).is_none() {
            errors.push(format!("updates[{i}].kb: `{}` is not a KB number", u.kb));
        }
        if farm_proto::updates::classification(&u.classification).is_none() {
            errors.push(format!(
                "updates[{i}].classification: `{}` is not one of {}",
                u.classification,
                farm_proto::updates::CLASSIFICATIONS
                    .iter()
                    .map(|c| c.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(h) = &u.fails {
            let hex = h.trim_start_matches("0x").trim_start_matches("0X");
            if u32::from_str_radix(hex, 16).is_err() {
                errors.push(format!(
                    "updates[{i}].fails: `{h}` is not an HRESULT like 0x80240022"
                ));
            }
        }
    }
    if sim.sites.is_empty() {
        errors.push("sites: at least one site is needed".into());
    }
    for (i, s) in sim.sites.iter().enumerate() {
        if let Some(other) = &s.share_port_with {
            let shares = sim
                .sites
                .iter()
                .find(|o| o.name.eq_ignore_ascii_case(other));
            match shares {
                None => errors.push(format!(
                    "sites[{i}].share_port_with: no site named `{other}`"
                )),
                Some(o) if o.share_port_with.is_some() || o.name == s.name => errors.push(format!(
                    "sites[{i}].share_port_with: `{other}` must be a site with a port of its own"
                )),
                Some(_) if s.port != 0 => errors.push(format!(
                    "sites[{i}]: give `port` or `share_port_with`, not both"
                )),
                Some(_) => {}
            }
        }
        if !sim.app_pools.iter().any(|p| p.name == s.app_pool) {
            errors.push(format!(
                "sites[{i}].app_pool: no app pool named `{}`",
                s.app_pool
            ));
        }
        if sim.sites[..i].iter().any(|o| o.name == s.name) {
            errors.push(format!("sites[{i}].name: duplicate site `{}`", s.name));
        }
    }
    for (i, p) in sim.app_pools.iter().enumerate() {
        if let Err(e) = farm_proto::names::check_pool_name(&p.name) {
            errors.push(format!("app_pools[{i}].name: {e}"));
        }
        if sim.app_pools[..i]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&p.name))
        {
            errors.push(format!("app_pools[{i}].name: duplicate pool `{}`", p.name));
        }
    }
    if errors.is_empty() {
        Ok(sim)
    } else {
        Err(SimFileError(errors.join("\n")))
    }
}
