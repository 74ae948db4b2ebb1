//! Raw inventory → checked model, collecting every error.
use std::collections::HashSet;
use std::time::Duration;

use crate::error::InventoryError;
use crate::model::*;
use crate::raw::*;

mod lb;
mod sections;

use lb::{check_member, load_balancer};
pub use lb::{parse_fingerprint, DEFAULT_EXEC_TIMEOUT, DEFAULT_LB_TIMEOUT, EXEC_PLACEHOLDERS};
pub use sections::check_max_unavailable;
use sections::{analysis, guard, patch, probe, rollout};

pub const DEFAULT_AGENT_PORT: u16 = 7443;
pub const DEFAULT_HEALTH_FILE: &str = "/health.htm";
/// A typical LB health check: every 5 s, 2 failures to mark down.
pub const DEFAULT_DETECTION: Duration = Duration::from_secs(10);

/// Collects errors while validation goes on, so every problem is reported.
#[derive(Default)]
struct Errors(Vec<InventoryError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(InventoryError::at(path, message));
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be longer than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(
                    path,
                    format!("`{text}` is not a duration like `90s` or `1m30s` ({e})"),
                );
                default
            }
        }
    }

    /// One of a fixed set of words (`halt`, `continue`, ...).
    fn word<T: std::str::FromStr<Err: std::fmt::Display>>(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: T,
    ) -> T {
        match value.map(str::parse) {
            None => default,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.add(path, e.to_string());
                default
            }
        }
    }

    /// A duration at `path` between `min` and `max` (inclusive); out of
    /// range: said, and `default`.
    fn bounded(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Duration {
        let got = self.duration(path, value, default);
        if got < min || got > max {
            self.add(
                path,
                format!(
                    "{} is not between {} and {}",
                    humantime::format_duration(got),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            return default;
        }
        got
    }

    fn port(&mut self, path: &str, value: Option<i64>, default: u16) -> u16 {
        match value {
            None => default,
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => {
                self.add(path, format!("{p} is not a TCP port (1-65535)"));
                default
            }
        }
    }

    fn capacity(&mut self, path: &str, value: Option<&serde_yaml::Value>) -> Option<Capacity> {
        let parsed = match value? {
            serde_yaml::Value::Number(n) => match n.as_u64() {
                Some(v) if v <= u32::MAX as u64 => Ok(Capacity::Count(v as u32)),
                _ => Err(format!("{n} is not a node count")),
            },
            serde_yaml::Value::String(s) => Capacity::parse(s).map_err(String::from),
            other => Err(format!(
                "expected a node count or a percentage like \"25%\", found {}",
                kind_of(other)
            )),
        };
        parsed.map_err(|m| self.add(path, m)).ok()
    }
}

fn kind_of(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Node and site names appear in logs, URLs and LB commands: keep them plain.
fn check_name(errors: &mut Errors, path: &str, name: &str) {
    if name.trim().is_empty() {
        errors.add(path, "must not be empty");
    } else if name.len() > 128 {
        errors.add(path, "is longer than 128 characters");
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.add(
            path,
            format!("`{name}` may only contain letters, digits, `-`, `_` and `.`"),
        );
    }
}

pub use farm_proto::names::check_pool_name;

fn check_host_port(errors: &mut Errors, path: &str, value: &str) {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => errors.add(
            path,
            format!("`{value}` is not an address like `host:port`"),
        ),
    }
}

fn state(errors: &mut Errors, s: &RawState) -> Option<EtcdStore> {
    match s.store.as_str() {
        "files" => {
            if !s.endpoints.is_empty() || s.tls.is_some() || s.prefix.is_some() {
                errors.add("state", "endpoints, prefix and tls are for `store: etcd`");
            }
            None
        }
        "etcd" => {
            if s.endpoints.is_empty() {
                errors.add(
                    "state.endpoints",
                    "etcd needs its members' addresses, e.g. `[https://10.0.0.5:2379]`",
                );
            }
            for (i, e) in s.endpoints.iter().enumerate() {
                let rest = e
                    .strip_prefix("https://")
                    .or_else(|| e.strip_prefix("http://"));
                match rest {
                    Some(hp) => check_host_port(errors, &format!("state.endpoints[{i}]"), hp),
                    None => errors.add(
                        format!("state.endpoints[{i}]"),
                        format!(
                            "`{}` is not an address like `https://10.0.0.5:2379`",
                            e.escape_debug()
                        ),
                    ),
                }
            }
            let prefix = s.prefix.clone().unwrap_or_else(|| "/farmctl".into());
            if !prefix.starts_with('/')
                || prefix.ends_with('/')
                || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                errors.add(
                    "state.prefix",
                    format!(
                        "`{}` is not a key prefix like `/farmctl`",
                        prefix.escape_debug()
                    ),
                );
            }
            let tls = s.tls.as_ref().map(|t| TlsFiles {
                ca: t.ca.clone().into(),
                cert: t.cert.clone().into(),
                key: t.key.clone().into(),
            });
            let user = match (&s.username, &s.password_env, &s.password_file) {
                (None, None, None) => None,
                (Some(u), Some(v), None) => Some((u.clone(), Secret::Env(v.clone()))),
                (Some(u), None, Some(f)) => Some((u.clone(), Secret::File(f.into()))),
                _ => {
                    errors.add(
                        "state.username",
                        "give `username` with `password_env` or `password_file`",
                    );
                    None
                }
            };
            let lock_ttl = errors.duration(
                "state.lock_ttl",
                s.lock_ttl.as_deref(),
                Duration::from_secs(15),
            );
            if lock_ttl < Duration::from_secs(3) {
                errors.add(
                    "state.lock_ttl",
                    "at least 3s: it is kept alive every third of it",
                );
            }
            Some(EtcdStore {
                endpoints: s.endpoints.clone(),
                prefix,
                tls,
                user,
                lock_ttl,
            })
        }
        other => {
            errors.add(
                "state.store",
                format!("`{other}`: expected `files` or `etcd`"),
            );
            None
        }
    }
}

fn notify(errors: &mut Errors, i: usize, n: &RawNotify) -> Notify {
    let at = |f: &str| format!("notify[{i}].{f}");
    let url = match (&n.url, &n.url_env, &n.url_file) {
        (Some(u), None, None) => {
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                // The value is a secret: the error does not repeat it.
                errors.add(at("url"), "is not an http(s) URL");
            }
            WebhookUrl::Inline(u.clone())
        }
        (None, Some(var), None) => {
            let ok = var
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                errors.add(
                    at("url_env"),
                    format!(
                        "`{}` is not an environment variable name",
                        var.escape_debug()
                    ),
                );
            }
            WebhookUrl::Secret(Secret::Env(var.clone()))
        }
        (None, None, Some(f)) if !f.trim().is_empty() => WebhookUrl::Secret(Secret::File(f.into())),
        _ => {
            errors.add(
                format!("notify[{i}]"),
                "give exactly one of `url`, `url_env`, `url_file`",
            );
            WebhookUrl::Inline(String::new())
        }
    };
    let events = match &n.events {
        None => vec![
            NotifyEvent::Started,
            NotifyEvent::NodeFailed,
            NotifyEvent::Halted,
            NotifyEvent::Finished,
            NotifyEvent::Verdict,
            NotifyEvent::GuardActed,
            NotifyEvent::GuardHeld,
            NotifyEvent::GuardQuarantined,
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(k, e)| match e.as_str() {
                "started" => Some(NotifyEvent::Started),
                "node_failed" => Some(NotifyEvent::NodeFailed),
                "halted" => Some(NotifyEvent::Halted),
                "finished" => Some(NotifyEvent::Finished),
                "verdict" => Some(NotifyEvent::Verdict),
                "guard_acted" => Some(NotifyEvent::GuardActed),
                "guard_held" => Some(NotifyEvent::GuardHeld),
                "guard_quarantined" => Some(NotifyEvent::GuardQuarantined),
                other => {
                    errors.add(
                        format!("notify[{i}].events[{k}]"),
                        format!(
                            "`{other}`: expected started, node_failed, halted, finished, verdict, guard_acted, guard_held or guard_quarantined"
                        ),
                    );
                    None
                }
            })
            .collect(),
    };
    let format = match n.format.as_deref() {
        None | Some("json") => NotifyFormat::Json,
        Some("slack") => NotifyFormat::Slack,
        Some("teams") => NotifyFormat::Teams,
        Some(other) => {
            errors.add(
                at("format"),
                format!("`{other}`: expected json, slack or teams"),
            );
            NotifyFormat::Json
        }
    };
    Notify {
        url,
        events,
        format,
        timeout: errors.duration(&at("timeout"), n.timeout.as_deref(), Duration::from_secs(5)),
    }
}

pub fn validate(raw: RawInventory) -> Result<Inventory, Vec<InventoryError>> {
    let mut errors = Errors::default();

    check_name(&mut errors, "farm", &raw.farm);

    let tls = raw.agent.tls.as_ref().map(|t| {
        for (field, value) in [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)] {
            if value.trim().is_empty() {
                errors.add(format!("agent.tls.{field}"), "must be a file path");
            }
        }
        TlsFiles {
            ca: t.ca.clone().into(),
            cert: t.cert.clone().into(),
            key: t.key.clone().into(),
        }
    });
    let agent = AgentDefaults {
        port: errors.port("agent.port", raw.agent.port, DEFAULT_AGENT_PORT),
        tls,
        connect_timeout: errors.duration(
            "agent.connect_timeout",
            raw.agent.connect_timeout.as_deref(),
            Duration::from_secs(5),
        ),
        request_timeout: errors.duration(
            "agent.request_timeout",
            raw.agent.request_timeout.as_deref(),
            Duration::from_secs(30),
        ),
    };

    // First: what a node's `lb_server` is depends on the load balancer.
    let load_balancer = match &raw.load_balancer {
        None => LoadBalancer::HealthFile {
            path: DEFAULT_HEALTH_FILE.into(),
            detection: DEFAULT_DETECTION,
        },
        Some(lb) => load_balancer(&mut errors, lb),
    };

    if raw.nodes.is_empty() {
        errors.add("nodes", "the farm has no nodes; list at least one");
    }
    let mut names = HashSet::new();
    let mut agents = HashSet::new();
    let mut lb_servers = HashSet::new();
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    for (i, n) in raw.nodes.iter().enumerate() {
        let at = |f: &str| format!("nodes[{i}].{f}");
        check_name(&mut errors, &at("name"), &n.name);
        if !n.name.is_empty() && !names.insert(n.name.to_ascii_lowercase()) {
            errors.add(at("name"), format!("duplicate node name `{}`", n.name));
        }
        if n.address.trim().is_empty() {
            errors.add(at("address"), "must not be empty");
        } else if n.address.chars().any(|c| c.is_whitespace() || c == '/') {
            errors.add(
                at("address"),
                format!("`{}` is not a host name or IP", n.address),
            );
        }
        let agent_addr = match &n.agent {
            Some(a) => {
                check_host_port(&mut errors, &at("agent"), a);
                a.clone()
            }
            None if n.address.contains(':') => format!("[{}]:{}", n.address, agent.port),
            None => format!("{}:{}", n.address, agent.port),
        };
        if !agents.insert(agent_addr.clone()) {
            errors.add(
                at("agent"),
                format!("agent `{agent_addr}` is listed for another node too"),
            );
        }
        let http_port = errors.port(&at("http_port"), n.http_port, 80);
        let lb_server = n
            .lb_server
            .clone()
            .unwrap_or_else(|| load_balancer.default_member(&n.name, &n.address, http_port));
        check_member(&mut errors, &at("lb_server"), &load_balancer, &lb_server);
        // A derived lb_server repeats a duplicate name, already reported.
        if !lb_servers.insert(lb_server.clone()) && n.lb_server.is_some() {
            errors.add(
                at("lb_server"),
                format!("duplicate load balancer server `{lb_server}`"),
            );
        }
        nodes.push(Node {
            name: n.name.clone(),
            address: n.address.clone(),
            agent: agent_addr,
            http_port,
            lb_server,
        });
    }

    if raw.sites.is_empty() {
        errors.add(
            "sites",
            "list at least one site: its probe tells when a node is healthy",
        );
    }
    let mut site_names = HashSet::new();
    let mut sites = Vec::with_capacity(raw.sites.len());
    for (i, s) in raw.sites.iter().enumerate() {
        let at = |f: &str| format!("sites[{i}].{f}");
        check_name(&mut errors, &at("name"), &s.name);
        if !site_names.insert(s.name.to_ascii_lowercase()) {
            errors.add(at("name"), format!("duplicate site name `{}`", s.name));
        }
        if let Some(h) = &s.host {
            if h.is_empty()
                || h.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/')
            {
                errors.add(
                    at("host"),
                    format!("`{}` is not a Host header value", h.escape_debug()),
                );
            }
        }
        let port = s.port.map(|p| errors.port(&at("port"), Some(p), 80));
        if let Some(p) = &s.app_pool {
            if let Err(m) = check_pool_name(p) {
                errors.add(at("app_pool"), m.to_string());
            }
        }
        let probe = probe(&mut errors, &format!("sites[{i}].probe"), &s.probe);
        // Every drain renames the health-file balancer's file: a probe of
        // it could never prove a drained node healthy again.
        if let LoadBalancer::HealthFile { path, .. } = &load_balancer {
            let probed = probe.path.split('?').next().unwrap_or("");
            if probed.eq_ignore_ascii_case(path) {
                errors.add(
                    at("probe.path"),
                    format!(
                        "`{}` is the health-file balancer's own file (load_balancer.path): every drain renames it, so a drained node could never prove itself healthy; probe an application URL",
                        probe.path
                    ),
                );
            }
        }
        let version_probe = s.version_probe.as_ref().map(|v| {
            if !v.path.starts_with('/')
                || v.path.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                errors.add(
                    at("version_probe.path"),
                    format!(
                        "`{}` is not a URL path starting with `/`",
                        v.path.escape_debug()
                    ),
                );
            }
            VersionProbe {
                path: v.path.clone(),
                expect: v.expect.clone().unwrap_or_else(|| "{version}".into()),
            }
        });
        for (k, h) in s.hooks.iter().enumerate() {
            check_name(&mut errors, &format!("sites[{i}].hooks[{k}]"), h);
        }
        sites.push(Site {
            name: s.name.clone(),
            host: s.host.clone(),
            port,
            app_pool: s.app_pool.clone(),
            probe,
            version_probe,
            hooks: s.hooks.clone(),
        });
    }

    let mut pools = HashSet::new();
    for (i, p) in raw.app_pools.iter().enumerate() {
        if let Err(m) = check_pool_name(p) {
            errors.add(format!("app_pools[{i}]"), m.to_string());
        } else if !pools.insert(p.to_ascii_lowercase()) {
            errors.add(format!("app_pools[{i}]"), format!("duplicate pool `{p}`"));
        }
    }

    let rollout = rollout(&mut errors, &raw.rollout, nodes.len());
    let analysis = analysis(&mut errors, &raw.analysis, nodes.len());
    let patch = patch(&mut errors, &raw.patch);
    let guard = guard(&mut errors, &raw.guard, nodes.len());
    if analysis.canary_weight.is_some() && !matches!(load_balancer, LoadBalancer::Haproxy { .. }) {
        errors.add(
            "analysis.canary_weight",
            format!(
                "the {} driver cannot give a node part of its traffic: only haproxy sets member weights (`set server B/S weight N%`); the reference documents no weight call for F5, NetScaler, AWS, ARR or NLB",
                load_balancer.kind()
            ),
        );
    }
    let state = raw.state.as_ref().and_then(|s| state(&mut errors, s));
    let notify = raw
        .notify
        .iter()
        .enumerate()
        .map(|(i, n)| notify(&mut errors, i, n))
        .collect();

    if errors.0.is_empty() {
        Ok(Inventory {
            farm: raw.farm,
            agent,
            nodes,
            load_balancer,
            sites,
            app_pools: raw.app_pools,
            rollout,
            analysis,
            patch,
            guard,
            notify,
            state,
        })
    } else {
        Err(errors.0)
    }
}
