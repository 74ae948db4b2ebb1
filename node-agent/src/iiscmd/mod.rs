//! The real Windows backend: IIS driven through its own tools (appcmd,
//! iisreset, sc, taskkill, typeperf) via a [`CommandRunner`], argv only.
//! Tested on Linux against verbatim outputs and a runner that plays IIS.
/// The config file and the process runner serve more than this backend;
/// they live at the crate's top and are named here as before.
pub use crate::{config, runner};
pub mod counter_names;
/// A runner that plays IIS, for tests (the `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod host;
pub mod parse;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use farm_proto::names::check_pool_name;

use crate::iis::*;
use config::{Timeouts, Tools};
use runner::{CommandRunner, Output, RunError};

/// The typeperf argv of a pool's diagnostics: its queue and state, every
/// worker's active requests, and every process's id, CPU and private
/// bytes (`Process(*)`: a partial wildcard is not documented; the
/// workers are picked by PID).
fn diagnostic_counters(pool: &str) -> Vec<String> {
    vec![
        format!(r"\HTTP Service Request Queues({pool})\CurrentQueueSize"),
        format!(r"\HTTP Service Request Queues({pool})\RejectedRequests"),
        format!(r"\APP_POOL_WAS({pool})\Current Application Pool State"),
        r"\W3SVC_W3WP(*)\Active Requests".into(),
        r"\Process(*)\ID Process".into(),
        r"\Process(*)\% Processor Time".into(),
        r"\Process(*)\Private Bytes".into(),
        "-sc".into(),
        "1".into(),
    ]
}

/// Every pool's gauges in one typeperf sample: the counters of all
/// queues and workers (instances `*`, matched to pools by name and PID).
const GAUGE_COUNTERS: [&str; 8] = [
    r"\HTTP Service Request Queues(*)\CurrentQueueSize",
    r"\HTTP Service Request Queues(*)\RejectedRequests",
    r"\W3SVC_W3WP(*)\Active Requests",
    r"\Process(*)\ID Process",
    r"\Process(*)\% Processor Time",
    r"\Process(*)\Private Bytes",
    "-sc",
    "1",
];

/// Each pool's gauges from one sample of [`GAUGE_COUNTERS`]: the pools
/// are the request queues' instances (`_Total` and the `---` names
/// windows_exporter also skips left out) and the workers' pools.
pub fn gauges(counters: &[crate::traffic::counters::Counter]) -> Vec<crate::iis::PoolGauges> {
    use crate::traffic::counters::w3wp_instance;
    let mut pools: Vec<String> = Vec::new();
    let mut add = |p: &str| {
        // `_Total`, the `---` names windows_exporter also skips, and the
        // `???N` instances a real capture showed are no pools.
        if !p.is_empty()
            && p != "_Total"
            && !p.starts_with("---")
            && !p.starts_with("???")
            && !pools.iter().any(|q| q.eq_ignore_ascii_case(p))
        {
            pools.push(p.to_string());
        }
    };
    for c in counters {
        match c.object.as_str() {
            "HTTP Service Request Queues" => add(&c.instance),
            "W3SVC_W3WP" => {
                if let Some((_, pool)) = w3wp_instance(&c.instance) {
                    add(&pool);
                }
            }
            _ => {}
        }
    }
    pools
        .into_iter()
        .map(|pool| {
            let mut d = PoolDiagnostics {
                pool,
                ..PoolDiagnostics::default()
            };
            pool_counters(&mut d, counters);
            // Summed over the pool's workers: unknown when one worker's
            // figure is (a partial sum would read as the whole).
            let w = &d.workers;
            crate::iis::PoolGauges {
                queue: d.queue,
                rejected: d.rejected,
                active_requests: w.iter().map(|w| w.active_requests).sum(),
                cpu_percent: w.iter().map(|w| w.cpu_percent).sum(),
                private_bytes: w.iter().map(|w| w.private_bytes).sum(),
                pool: d.pool,
            }
        })
        .collect()
}

/// A pool's figures from one typeperf sample.
fn pool_counters(d: &mut PoolDiagnostics, counters: &[crate::traffic::counters::Counter]) {
    use crate::traffic::counters::{pool_state, w3wp_instance};
    let of = |object: &str, instance: &str, counter: &str| {
        counters
            .iter()
            .find(|c| {
                c.object == object
                    && c.instance.eq_ignore_ascii_case(instance)
                    && c.counter == counter
            })
            .and_then(|c| c.value)
    };
    d.queue = of("HTTP Service Request Queues", &d.pool, "CurrentQueueSize").map(|v| v as u64);
    d.rejected = of("HTTP Service Request Queues", &d.pool, "RejectedRequests").map(|v| v as u64);
    d.state = of("APP_POOL_WAS", &d.pool, "Current Application Pool State").map(pool_state);
    for c in counters
        .iter()
        .filter(|c| c.object == "W3SVC_W3WP" && c.counter == "Active Requests")
    {
        let Some((pid, pool)) = w3wp_instance(&c.instance) else {
            continue;
        };
        if !pool.eq_ignore_ascii_case(&d.pool) {
            continue;
        }
        // The Process instance (w3wp#N) whose ID Process is this PID.
        let process = counters
            .iter()
            .find(|p| {
                p.object == "Process"
                    && p.counter == "ID Process"
                    && p.value == Some(f64::from(pid))
            })
            .map(|p| p.instance.clone());
        let of_process = |counter: &str| process.as_deref().and_then(|i| of("Process", i, counter));
        d.workers.push(WorkerFigures {
            pid,
            cpu_percent: of_process("% Processor Time"),
            private_bytes: of_process("Private Bytes").map(|v| v as u64),
            active_requests: c.value.map(|v| v as u64),
        });
    }
    if counters.is_empty() {
        d.notes
            .push("performance counters: none could be read".into());
    }
}

/// appcmd's exit code for an object that does not exist (ERROR_NOT_FOUND,
/// the Win32 code of HRESULT 0x80070490), whatever language it says it in.
const ERROR_NOT_FOUND: i32 = 1168;
const HRESULT_NOT_FOUND: &str = "80070490";

/// The counter read when the Request Monitor feature is not installed.
pub const ACTIVE_REQUESTS_COUNTER: &str = r"\W3SVC_W3WP(_Total)\Active Requests";

pub struct CommandBackend {
    runner: Arc<dyn CommandRunner>,
    tools: Tools,
    timeouts: Timeouts,
    health_files: Vec<PathBuf>,
    /// Where the sites' logs are, once [`CommandBackend::discover_logs`]
    /// found out.
    logs: Option<TrafficLogs>,
    /// The counters' names in this Windows's display language, read once.
    names: tokio::sync::OnceCell<counter_names::CounterNames>,
}

fn drained_path(p: &std::path::Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".drained");
    PathBuf::from(s)
}

impl CommandBackend {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        tools: Tools,
        timeouts: Timeouts,
        health_files: Vec<PathBuf>,
    ) -> Self {
        Self {
            runner,
            tools,
            timeouts,
            health_files,
            logs: None,
            names: tokio::sync::OnceCell::new(),
        }
    }

    /// The counters' displayed names (`reg query` of the English and the
    /// current language's lists, once); English where they cannot be read.
    async fn counter_names(&self) -> &counter_names::CounterNames {
        self.names
            .get_or_init(|| async {
                let query = |key: &'static str| async move {
                    match self
                        .run(&self.tools.reg, &["query", key, "/v", "Counter"], self.timeouts.command)
                        .await
                    {
                        Ok(o) if o.code == Some(0) => Some(o.stdout),
                        Ok(o) => {
                            tracing::debug!(code = ?o.code, "reg query {key} failed: counter names kept in English");
                            None
                        }
                        Err(e) => {
                            tracing::debug!("reg query {key}: {e}: counter names kept in English");
                            None
                        }
                    }
                };
                match (
                    query(counter_names::ENGLISH_KEY).await,
                    query(counter_names::LOCAL_KEY).await,
                ) {
                    (Some(en), Some(local)) => counter_names::CounterNames::from_registry(&en, &local),
                    _ => counter_names::CounterNames::default(),
                }
            })
            .await
    }

    /// One `typeperf PATH... -sc 1` sample, the paths asked in the display
    /// language and the answer read back in English; a row that does not
    /// match its header is refused.
    async fn typeperf(
        &self,
        args: &[&str],
    ) -> Result<Vec<crate::traffic::counters::Counter>, IisError> {
        let names = self.counter_names().await;
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with('\\') {
                    names.localize_path(a)
                } else {
                    a.to_string()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self
            .run(&self.tools.typeperf, &args, self.timeouts.command)
            .await?;
        if out.code != Some(0) {
            return Err(IisError::Command {
                command: "typeperf".into(),
                code: out.code.unwrap_or(-1),
                message: out.stdout.trim().to_string(),
            });
        }
        crate::traffic::counters::parse(&out.stdout)
            .map(|c| names.to_english(c))
            .map_err(|detail| IisError::Parse {
                command: "typeperf".into(),
                detail,
            })
    }

    /// WAS's last 50 events, newest first (`wevtutil qe System ...
    /// /f:text`), or why not, in words.
    async fn was_events(&self) -> Result<crate::traffic::events::Events, String> {
        let out = self
            .run(
                &self.tools.wevtutil,
                &[
                    "qe",
                    "System",
                    "/q:*[System[Provider[@Name='Microsoft-Windows-WAS']]]",
                    "/c:50",
                    "/rd:true",
                    "/f:text",
                ],
                self.timeouts.command,
            )
            .await
            .map_err(|e| e.to_string())?;
        match out.code {
            Some(0) => Ok(crate::traffic::events::parse(&out.stdout)),
            code => Err(format!("wevtutil exited {code:?}")),
        }
    }

    /// Names the stopped pools whose newest WAS event is 5002 (rapid-fail
    /// protection). Best effort: without the events nothing is named.
    async fn name_rapid_fails(&self, pools: &mut [PoolStatus]) {
        let Ok(crate::traffic::events::Events { events, .. }) = self.was_events().await else {
            return;
        };
        for p in pools.iter_mut().filter(|p| p.state == PoolState::Stopped) {
            let newest = events.iter().find(|e| {
                e.pool
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(&p.name))
            });
            if let Some(e) = newest.filter(|e| e.rapid_fail()) {
                p.stopped_by = Some(format!(
                    "rapid-fail protection (WAS event 5002 at {})",
                    e.date
                ));
            }
        }
    }

    /// Reads where each site's W3C log is from IIS's own configuration
    /// (`appcmd list site /xml /config:*`: the effective `logFile`
    /// settings, defaults included) and keeps it for the Traffic call. A
    /// site that does not log W3C to files is left out, said why.
    pub async fn discover_logs(mut self) -> Self {
        match self.find_logs().await {
            Ok(logs) => self.logs = Some(logs),
            Err(e) => tracing::warn!("the sites' logs were not found, Traffic will say so: {e}"),
        }
        self
    }

    async fn find_logs(&self) -> Result<TrafficLogs, IisError> {
        let xml = self.appcmd(&["list", "site", "/xml", "/config:*"]).await?;
        let sites = parse::site_logs(&xml).map_err(|detail| IisError::Parse {
            command: "appcmd list site /xml /config:*".into(),
            detail,
        })?;
        let mut found = Vec::new();
        for s in sites {
            let w3c = s
                .format
                .as_deref()
                .is_none_or(|f| f.eq_ignore_ascii_case("W3C"));
            let to_file = s
                .target
                .as_deref()
                .is_none_or(|t| t.split(',').any(|x| x.trim().eq_ignore_ascii_case("File")));
            if !w3c || !to_file {
                tracing::warn!(
                    site = %s.name,
                    "left out of traffic health: its log is {} to {} (W3C to a file is read)",
                    s.format.as_deref().unwrap_or("?"),
                    s.target.as_deref().unwrap_or("?")
                );
                continue;
            }
            let dir = s
                .directory
                .clone()
                .unwrap_or_else(|| r"%SystemDrive%\inetpub\logs\LogFiles".into());
            found.push(SiteLogs {
                site: s.name.clone(),
                id: s.id,
                pool: s.pool.clone().unwrap_or_default(),
                w3c_dir: PathBuf::from(expand(&dir)).join(format!("W3SVC{}", s.id)),
                period: s.period.clone(),
            });
        }
        Ok(TrafficLogs {
            sites: found,
            httperr_dir: Some(PathBuf::from(expand(
                r"%SystemRoot%\System32\LogFiles\HTTPERR",
            ))),
            // The LB asks for the health file by its name at the site's
            // root (`C:\inetpub\health\health.htm` → `/health.htm`).
            check_paths: self
                .health_files
                .iter()
                .map(|f| f.to_string_lossy().into_owned())
                .filter_map(|f| f.rsplit(['\\', '/']).next().map(|n| format!("/{n}")))
                .collect(),
        })
    }

    async fn run(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, IisError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let command = format!("{} {}", tool_name(program), args.join(" "));
        self.runner
            .run(program, &args, timeout)
            .await
            .map_err(|e| match e {
                RunError::Timeout { after, .. } => IisError::Timeout { command, after },
                RunError::Spawn { detail, .. } => IisError::Command {
                    command,
                    code: -1,
                    message: detail,
                },
            })
    }

    /// Runs appcmd; its errors come on stdout as `ERROR ( ... )` with the
    /// Win32 code as exit code.
    async fn appcmd(&self, args: &[&str]) -> Result<String, IisError> {
        let out = self
            .run(&self.tools.appcmd, args, self.timeouts.command)
            .await?;
        let error = parse::appcmd_error(&out.stdout);
        if out.code == Some(0) && error.is_none() {
            return Ok(out.stdout);
        }
        // The outcome by the code, not the message: appcmd prints its
        // messages in the display language (`ERROR ( hresult:` and
        // `message:` stay English).
        let not_found = out.code == Some(ERROR_NOT_FOUND)
            || error
                .as_ref()
                .and_then(|e| e.hresult.as_deref())
                .is_some_and(|h| h.eq_ignore_ascii_case(HRESULT_NOT_FOUND));
        let message = error
            .map(|e| e.message)
            .unwrap_or_else(|| out.text().trim().to_string());
        if not_found {
            if let Some(name) = args.iter().find_map(|a| a.strip_prefix("/apppool.name:")) {
                return Err(IisError::NoSuchPool(name.to_string()));
            }
        }
        Err(IisError::Command {
            command: format!("appcmd {}", args.join(" ")),
            code: out.code.unwrap_or(-1),
            message,
        })
    }

    async fn service(&self, name: &str) -> Result<ServiceState, IisError> {
        let out = self
            .run(&self.tools.sc, &["query", name], self.timeouts.command)
            .await?;
        parse::sc_state(&out.text()).ok_or_else(|| IisError::Parse {
            command: format!("sc query {name}"),
            detail: out.text().trim().to_string(),
        })
    }

    fn check(pool: &str) -> Result<(), IisError> {
        check_pool_name(pool).map_err(|reason| IisError::InvalidName {
            name: pool.to_string(),
            reason: reason.to_string(),
        })
    }
}

/// `%SystemDrive%`-style variables, from this process's environment (the
/// agent runs as a Windows service with the machine's variables).
fn expand(path: &str) -> String {
    parse::expand_vars(path, |name| std::env::var(name).ok())
}

fn tool_name(program: &str) -> &str {
    let base = program.rsplit(['\\', '/']).next().unwrap_or(program);
    base.strip_suffix(".exe").unwrap_or(base)
}

#[async_trait]
impl Iis for CommandBackend {
    fn backend(&self) -> &'static str {
        "iis"
    }

    async fn status(&self) -> Result<IisStatus, IisError> {
        let w3svc = self.service("W3SVC").await?;
        let was = self.service("WAS").await?;
        let mut status = IisStatus {
            services: vec![
                ServiceStatus {
                    name: "W3SVC".into(),
                    state: w3svc,
                },
                ServiceStatus {
                    name: "WAS".into(),
                    state: was,
                },
            ],
            ..Default::default()
        };
        // Pools and workers live in WAS; without it appcmd can only fail.
        if was != ServiceState::Running {
            return Ok(status);
        }
        let pools = self.appcmd(&["list", "apppool"]).await?;
        let wps = self.appcmd(&["list", "wp"]).await?;
        let sites = self.appcmd(&["list", "site"]).await?;
        let apps = self.appcmd(&["list", "app"]).await?;
        let vdirs = self.appcmd(&["list", "vdir"]).await?;
        let mut workers: HashMap<String, Vec<WorkerInfo>> = HashMap::new();
        for wp in parse::objects(&wps, "WP") {
            let pool = wp
                .attr("apppool")
                .or_else(|| wp.attr("applicationPool"))
                .unwrap_or("");
            if let Ok(pid) = wp.id.parse() {
                workers
                    .entry(pool.to_ascii_lowercase())
                    .or_default()
                    .push(WorkerInfo {
                        pid,
                        started_unix_ms: 0,
                    });
            }
        }
        status.pools = parse::objects(&pools, "APPPOOL")
            .map(|p| PoolStatus {
                stopped_by: None,
                state: parse::pool_state(p.attr("state").unwrap_or("")),
                workers: workers
                    .remove(&p.id.to_ascii_lowercase())
                    .unwrap_or_default(),
                name: p.id,
            })
            .collect();
        // A stopped pool: did WAS stop it (rapid-fail protection)?
        if status.pools.iter().any(|p| p.state == PoolState::Stopped) {
            self.name_rapid_fails(&mut status.pools).await;
        }
        let root_pools: HashMap<String, String> = parse::objects(&apps, "APP")
            .filter_map(|a| {
                let site = a.id.strip_suffix('/')?.to_string();
                (!site.contains('/'))
                    .then(|| (site, a.attr("applicationPool").unwrap_or("").to_string()))
            })
            .collect();
        status.sites = parse::objects(&sites, "SITE")
            .map(|s| SiteStatus {
                bindings: s
                    .attr("bindings")
                    .unwrap_or("")
                    .split(',')
                    .filter(|b| !b.is_empty())
                    .map(str::to_string)
                    .collect(),
                state: s.attr("state").unwrap_or("Unknown").to_string(),
                pool: root_pools.get(&s.id).cloned().unwrap_or_default(),
                physical_path: parse::root_vdir_path(&vdirs, &s.id)
                    .map(|p| expand(&p))
                    .unwrap_or_default(),
                name: s.id,
            })
            .collect();
        Ok(status)
    }

    async fn in_flight(&self) -> Result<Option<u64>, IisError> {
        match self.appcmd(&["list", "requests"]).await {
            Ok(text) => return Ok(Some(parse::objects(&text, "REQUEST").count() as u64)),
            Err(e) => tracing::debug!(
                "appcmd list requests failed ({e}); reading the Active Requests counter"
            ),
        }
        // Without the Request Monitor feature: the perf counter; unknown
        // (not 0) when that fails too.
        let sample = self.typeperf(&[ACTIVE_REQUESTS_COUNTER, "-sc", "1"]).await;
        Ok(match sample {
            Ok(c) => parse::typeperf_value(&c).map(|v| v.round() as u64),
            Err(e) => {
                tracing::debug!("the Active Requests counter could not be read: {e}");
                None
            }
        })
    }

    fn traffic_logs(&self) -> Option<TrafficLogs> {
        self.logs.clone()
    }

    async fn running(&self) -> Result<Option<Vec<u64>>, IisError> {
        // Without the Request Monitor feature appcmd cannot list them:
        // unknown, never "none running".
        Ok(match self.appcmd(&["list", "requests"]).await {
            Ok(text) => Some(
                crate::traffic::requests::parse(&text)
                    .into_iter()
                    .map(|r| r.elapsed_ms.unwrap_or(0))
                    .collect(),
            ),
            Err(_) => None,
        })
    }

    /// `netsh http flush logbuffer` (elevated): judged by its exit code,
    /// its text is not documented.
    async fn flush_logs(&self) {
        match self
            .run(
                &self.tools.netsh,
                &["http", "flush", "logbuffer"],
                self.timeouts.command,
            )
            .await
        {
            Ok(o) if o.code == Some(0) => {}
            Ok(o) => tracing::debug!(code = ?o.code, "netsh http flush logbuffer failed"),
            Err(e) => tracing::debug!("netsh http flush logbuffer: {e}"),
        }
    }

    async fn pool_gauges(&self) -> Result<Vec<crate::iis::PoolGauges>, IisError> {
        Ok(gauges(&self.typeperf(&GAUGE_COUNTERS).await?))
    }

    async fn diagnose(&self, pool: &str, min_elapsed_ms: u64) -> Result<PoolDiagnostics, IisError> {
        Self::check(pool)?;
        let mut d = PoolDiagnostics {
            pool: pool.to_string(),
            ..PoolDiagnostics::default()
        };
        let counter_args = diagnostic_counters(pool);
        let counter_args: Vec<&str> = counter_args.iter().map(String::as_str).collect();
        let (pool_arg, elapsed_arg) = (
            format!("/apppool.name:{pool}"),
            format!("/elapsed:{min_elapsed_ms}"),
        );
        let list = ["list", "requests", pool_arg.as_str(), elapsed_arg.as_str()];
        let (requests, counters, events) = tokio::join!(
            self.appcmd(&list),
            self.typeperf(&counter_args),
            self.was_events(),
        );
        match requests {
            Ok(text) => d.requests = crate::traffic::requests::parse(&text),
            Err(e) => d.notes.push(format!(
                "running requests: {e} (the Request Monitor feature may not be installed)"
            )),
        }
        match counters {
            Ok(c) => pool_counters(&mut d, &c),
            Err(e) => d.notes.push(format!("performance counters: {e}")),
        }
        match events {
            Ok(read) => {
                if read.unreadable > 0 {
                    d.notes.push(format!(
                        "WAS events: {} record(s) of wevtutil's output could not be read",
                        read.unreadable
                    ));
                }
                d.events = read
                    .events
                    .into_iter()
                    .filter(|e| {
                        e.pool
                            .as_deref()
                            .is_some_and(|p| p.eq_ignore_ascii_case(pool))
                    })
                    .take(10)
                    .collect();
            }
            Err(e) => d.notes.push(format!("WAS events: {e}")),
        }
        Ok(d)
    }

    async fn recycle_pool(&self, pool: &str) -> Result<(), IisError> {
        Self::check(pool)?;
        let arg = format!("/apppool.name:{pool}");
        self.appcmd(&["recycle", "apppool", &arg]).await.map(|_| ())
    }

    async fn start_pool(&self, pool: &str) -> Result<(), IisError> {
        Self::check(pool)?;
        let arg = format!("/apppool.name:{pool}");
        match self.appcmd(&["start", "apppool", &arg]).await {
            Ok(_) => Ok(()),
            // 1056: already running.
            Err(IisError::Command { code: 1056, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn stop_iis(&self, timeout: Duration) -> Result<StopOutcome, IisError> {
        let secs = timeout.as_secs().max(1);
        let arg = format!("/timeout:{secs}");
        // iisreset enforces its own timeout; ours only guards a hung tool.
        let guard = Duration::from_secs(secs) + Duration::from_secs(30);
        match self
            .run(&self.tools.iisreset, &["/stop", &arg], guard)
            .await
        {
            Ok(out) if out.code == Some(0) && !parse::iisreset_failed(&out.stdout) => {
                Ok(StopOutcome::Stopped)
            }
            Ok(out) => Ok(StopOutcome::Failed(out.text())),
            Err(IisError::Timeout { after, .. }) => Ok(StopOutcome::Failed(format!(
                "iisreset /stop hung for {after:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    async fn force_stop_iis(&self) -> Result<(), IisError> {
        let out = self
            .run(
                &self.tools.taskkill,
                &["/F", "/FI", "SERVICES eq was"],
                self.timeouts.command,
            )
            .await?;
        if out.code == Some(0) {
            Ok(())
        } else {
            Err(IisError::Command {
                command: "taskkill /F /FI \"SERVICES eq was\"".into(),
                code: out.code.unwrap_or(-1),
                message: out.text().trim().to_string(),
            })
        }
    }

    async fn start_iis(&self) -> Result<(), IisError> {
        let out = self
            .run(&self.tools.iisreset, &["/start"], self.timeouts.start)
            .await?;
        if out.code == Some(0) && !parse::iisreset_failed(&out.stdout) {
            Ok(())
        } else {
            Err(IisError::Command {
                command: "iisreset /start".into(),
                code: out.code.unwrap_or(-1),
                message: parse::lines(&out.text()).collect::<Vec<_>>().join(" "),
            })
        }
    }

    async fn site_path(&self, site: &str) -> Result<String, IisError> {
        Self::check(site)?;
        let filter = format!("/app.name:{site}/");
        let listing = self.appcmd(&["list", "vdir", &filter]).await?;
        parse::root_vdir_path(&listing, site)
            .map(|p| expand(&p))
            .ok_or_else(|| IisError::NoSuchSite(site.into()))
    }

    async fn set_site_path(&self, site: &str, path: &str) -> Result<(), IisError> {
        Self::check(site)?;
        if path.is_empty() || path.chars().any(|c| c.is_control() || c == '"') {
            return Err(IisError::InvalidName {
                name: path.into(),
                reason: "not a folder path".into(),
            });
        }
        let vdir = format!("{site}/");
        let arg = format!("/physicalPath:{path}");
        match self.appcmd(&["set", "vdir", &vdir, &arg]).await {
            Err(IisError::Command {
                code: ERROR_NOT_FOUND,
                ..
            }) => Err(IisError::NoSuchSite(site.into())),
            other => other.map(|_| ()),
        }
    }

    async fn health_file_present(&self) -> Result<bool, IisError> {
        if self.health_files.is_empty() {
            return Err(IisError::Other(
                "no health_files are configured on this agent".into(),
            ));
        }
        Ok(self.health_files.iter().all(|p| p.exists()))
    }

    async fn set_health_file(&self, present: bool) -> Result<(), IisError> {
        for p in &self.health_files {
            let (from, to) = if present {
                (drained_path(p), p.clone())
            } else {
                (p.clone(), drained_path(p))
            };
            if to.exists() && !from.exists() {
                continue; // already in the wanted state
            }
            std::fs::rename(&from, &to).map_err(|e| {
                IisError::Other(format!(
                    "could not rename {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample in the documented CSV shape: `_Total` and a `---` queue
    /// are no pools; a pool with two workers sums them; a worker whose
    /// process counters could not be read leaves CPU unknown, not 0.
    #[test]
    fn gauges_per_pool_from_one_sample() {
        let text = concat!(
            "\r\n\"(PDH-CSV 4.0)\",",
            "\"\\\\WEB01\\HTTP Service Request Queues(_Total)\\CurrentQueueSize\",",
            "\"\\\\WEB01\\HTTP Service Request Queues(---Logs)\\CurrentQueueSize\",",
            "\"\\\\WEB01\\HTTP Service Request Queues(Shop)\\CurrentQueueSize\",",
            "\"\\\\WEB01\\W3SVC_W3WP(10_Shop)\\Active Requests\",",
            "\"\\\\WEB01\\W3SVC_W3WP(11_Shop)\\Active Requests\",",
            "\"\\\\WEB01\\W3SVC_W3WP(12_Api)\\Active Requests\",",
            "\"\\\\WEB01\\Process(w3wp)\\ID Process\",",
            "\"\\\\WEB01\\Process(w3wp#1)\\ID Process\",",
            "\"\\\\WEB01\\Process(w3wp)\\% Processor Time\",",
            "\"\\\\WEB01\\Process(w3wp#1)\\% Processor Time\"\r\n",
            "\"11/21/2026 10:00:00.123\",\"9.000000\",\"1.000000\",\"4.000000\",",
            "\"2.000000\",\"5.000000\",\"1.000000\",\"10.000000\",\"11.000000\",",
            "\"30.000000\",\"45.500000\"\r\n"
        );
        let g = gauges(&crate::traffic::counters::parse(text).unwrap());
        let names: Vec<&str> = g.iter().map(|p| p.pool.as_str()).collect();
        assert_eq!(names, ["Shop", "Api"]);
        assert_eq!(g[0].queue, Some(4));
        assert_eq!(g[0].active_requests, Some(7));
        assert_eq!(g[0].cpu_percent, Some(75.5));
        assert_eq!(g[0].private_bytes, None);
        // Api: a worker but no queue counter, no process figures.
        assert_eq!(
            (g[1].queue, g[1].active_requests, g[1].cpu_percent),
            (None, Some(1), None)
        );
    }
}
