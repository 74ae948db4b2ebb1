//! The run contract: everything that decides how a run treats the farm,
//! resolved once from the operator's request and the inventory before the
//! run, written in the journal header, and replayed as is by `resume` — a
//! resumed run keeps the limits of the run it continues.
use std::time::Duration;

use farm_inventory::{
    validate::check_max_unavailable, Inventory, OnDrainTimeout, OnFailure, Ramp, Strategy, Window,
};
use farm_proto::domain::OperationKind;
use serde::{Deserialize, Serialize};

use crate::agent::Package;
use crate::capacity::Capacity;
use crate::exit::CommandError;
use crate::machine::Policy;

farm_proto::message_error! {
    /// How an inventory differs from the run contract it is to continue.
    ContractMismatch
}

/// What the operator asked for on the command line, before the inventory
/// fills in the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub operation: OperationKind,
    /// Only these nodes (all when empty), in inventory order.
    pub nodes: Vec<String>,
    /// Pools to recycle; the inventory's `app_pools` when empty.
    pub pools: Vec<String>,
    /// Overrides `rollout.max_unavailable`: `2`, `25%` or `1,2,25%`.
    pub max_unavailable: Option<String>,
    /// Overrides `rollout.window`.
    pub window: Option<String>,
    pub canary: bool,
    /// A deploy's or rollback's site and version (and package).
    pub deploy: Option<DeployRequest>,
    /// Overrides `analysis.soak` (`Some(ZERO)`: no analysis).
    pub soak: Option<Duration>,
    /// Overrides `analysis.canaries`.
    pub canaries: Option<u32>,
    /// Capture each pool's diagnostics before it is recycled
    /// (`recycle --outliers`).
    pub diagnose: bool,
    /// Also a memory dump of each pool's workers once the node is out of
    /// rotation and quiet, before the recycle (the guard's `guard.dump`).
    pub dump: bool,
    /// Per node, its own pools to recycle instead of `pools` (`recycle
    /// --outliers`: each node's sick pools, never another's).
    pub node_pools: std::collections::BTreeMap<String, Vec<String>>,
}

/// What a deploy or rollback asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The inventory's site.
    pub site: String,
    pub version: String,
    /// The zip to stage (deploy); none for a rollback.
    pub package: Option<std::path::PathBuf>,
}

impl RunRequest {
    pub fn new(operation: OperationKind) -> Self {
        Self {
            operation,
            nodes: Vec::new(),
            pools: Vec::new(),
            max_unavailable: None,
            window: None,
            canary: false,
            deploy: None,
            soak: None,
            canaries: None,
            diagnose: false,
            dump: false,
            node_pools: Default::default(),
        }
    }
}

/// What a deploy or rollback puts on each node, recorded in the run
/// contract (a resume stages and switches exactly this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySettings {
    /// The inventory's site.
    pub site: String,
    pub version: String,
    /// The package staged ahead of the rollout; none for a rollback.
    pub package: Option<Package>,
    /// Hooks the agents run after the switch.
    pub hooks: Vec<String>,
    /// `GET path` answers 200 with `expect` in its body: the version is the
    /// one answering.
    pub version_path: String,
    pub version_expect: String,
    /// Uploads under way at once, ahead of the rollout.
    pub staging_concurrency: usize,
}

/// Uploads at once: enough to keep ahead of a rollout, few enough not to
/// saturate the controller's link.
pub const STAGING_CONCURRENCY: usize = 4;

/// A node of the farm as the run saw it at the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmNode {
    pub name: String,
    pub lb_server: String,
}

/// How long each step may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimeouts {
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    pub on_drain_timeout: OnDrainTimeout,
    #[serde(with = "humantime_serde")]
    pub operation: Duration,
    #[serde(with = "humantime_serde")]
    pub healthy: Duration,
    /// Until the load balancer reports a returned node up.
    #[serde(rename = "return", with = "humantime_serde")]
    pub return_: Duration,
    /// A reset's graceful stop (`iisreset /stop /timeout:N`).
    #[serde(with = "humantime_serde")]
    pub stop: Duration,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// A node step that makes no progress for this long fails
    /// (`rollout.progress_deadline`); none: each step's own bound only.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_deadline: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub operation: OperationKind,
    pub farm: String,
    /// Every node of the farm at the start: a resume must find the same.
    pub farm_nodes: Vec<FarmNode>,
    /// The load balancer at the start (`haproxy backend `shop``).
    pub load_balancer: String,
    /// The nodes of the run, in order.
    pub nodes: Vec<String>,
    pub pools: Vec<String>,
    /// As written (`1`, `25%`, `1,2,25%`)...
    pub max_unavailable: String,
    /// ...and resolved for the farm's size, per ramp stage.
    pub max_unavailable_steps: Vec<usize>,
    /// Nodes that must keep serving, counting nodes already out.
    pub min_healthy: usize,
    pub max_failures: u32,
    pub on_failure: OnFailure,
    #[serde(default, with = "humantime_serde")]
    pub pause: Option<Duration>,
    /// The maintenance window, parsed once (kept in the journal as
    /// written: `02:00-05:00 Europe/Berlin`).
    pub window: Option<Window>,
    pub canary: bool,
    pub strategy: Strategy,
    pub timeouts: RunTimeouts,
    /// Deploy and rollback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySettings>,
    /// Canary analysis (deploy and rollback with a soak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSettings>,
    /// Each pool's diagnostics are captured before it is recycled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diagnose: bool,
    /// A memory dump of each pool's workers before it is recycled, while
    /// the node is out of rotation and quiet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dump: bool,
    /// Per node, the pools to recycle on it when they are not `pools`
    /// (`recycle --outliers`: each node's own sick pools).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_pools: std::collections::BTreeMap<String, Vec<String>>,
    /// Patch and reboot: the updates, the restart's bounds, the bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSettings>,
    /// Started by `farmctl guard`: a guard taking the seat after the one
    /// that started it died finishes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_guard: bool,
}

/// A patch's or reboot's settings, as the run keeps them (a resume
/// installs and bounds exactly this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchSettings {
    /// None for `reboot` (nothing is installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<crate::agent::UpdateFilterSpec>,
    #[serde(with = "humantime_serde")]
    pub reboot_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub install_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub reboot_delay: Duration,
    /// Each node judged this long after its return against the nodes not
    /// yet done.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub bake: Option<Duration>,
    pub min_requests: u64,
    pub errors_max_increase: f64,
    pub latency_quantile: farm_inventory::LatencyQuantile,
    pub latency_max_increase: f64,
}

impl PatchSettings {
    fn resolve(inv: &Inventory, op: OperationKind) -> Option<PatchSettings> {
        if !op.restarts_server() {
            return None;
        }
        let (p, a) = (&inv.patch, &inv.analysis);
        Some(PatchSettings {
            updates: (op == OperationKind::Patch).then(|| crate::agent::UpdateFilterSpec {
                classifications: p.classifications.clone(),
                include_kbs: p.include_kbs.clone(),
                exclude_kbs: p.exclude_kbs.clone(),
            }),
            reboot_timeout: p.reboot_timeout,
            install_timeout: p.install_timeout,
            reboot_delay: p.reboot_delay,
            bake: p.bake,
            min_requests: a.min_requests,
            errors_max_increase: a.errors_max_increase,
            latency_quantile: a.latency_quantile,
            latency_max_increase: a.latency_max_increase,
        })
    }

    pub fn limits(&self) -> crate::judge::Limits {
        crate::judge::Limits {
            min_requests: self.min_requests,
            errors_max_increase: self.errors_max_increase,
            quantile: self.latency_quantile.value(),
            latency_max_increase: self.latency_max_increase,
        }
    }
}

/// A run's canary analysis, as the judge and a resume need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSettings {
    /// The first `canaries` nodes of the run take the release first.
    pub canaries: usize,
    #[serde(with = "humantime_serde")]
    pub soak: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub min_requests: u64,
    pub errors_max_increase: f64,
    pub latency_quantile: farm_inventory::LatencyQuantile,
    pub latency_max_increase: f64,
    pub on_inconclusive: farm_inventory::OnInconclusive,
    /// Each later node is judged this long after its return.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub stabilize: Option<Duration>,
    /// The canaries' share of a normal node's traffic during the soak (%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<u32>,
}

impl AnalysisSettings {
    /// The inventory's `analysis:` with the flags over it; `None` without
    /// a soak, or for a recycle or reset.
    fn resolve(inv: &Inventory, req: &RunRequest) -> Option<AnalysisSettings> {
        if !req.operation.switches_release() {
            return None;
        }
        let a = &inv.analysis;
        let soak = req.soak.or(a.soak).filter(|s| !s.is_zero())?;
        Some(AnalysisSettings {
            canaries: req.canaries.unwrap_or(a.canaries).max(1) as usize,
            soak,
            interval: a.interval.min(soak),
            min_requests: a.min_requests,
            errors_max_increase: a.errors_max_increase,
            latency_quantile: a.latency_quantile,
            latency_max_increase: a.latency_max_increase,
            on_inconclusive: a.on_inconclusive,
            stabilize: a.stabilize,
            canary_weight: a.canary_weight,
        })
    }

    pub fn limits(&self) -> crate::judge::Limits {
        crate::judge::Limits {
            min_requests: self.min_requests,
            errors_max_increase: self.errors_max_increase,
            quantile: self.latency_quantile.value(),
            latency_max_increase: self.latency_max_increase,
        }
    }
}

fn lb_name(inv: &Inventory) -> String {
    inv.load_balancer.describe()
}

impl RunSettings {
    /// Resolves the request against the inventory. Bad flags are bad
    /// input (exit 2), named.
    pub fn resolve(inv: &Inventory, req: &RunRequest) -> Result<RunSettings, CommandError> {
        for p in req.pools.iter().chain(req.node_pools.values().flatten()) {
            farm_proto::names::check_pool_name(p)
                .map_err(|e| CommandError::bad_input(format!("--pool {p:?}: {e}")))?;
        }
        let total = inv.nodes.len();
        let ramp = match &req.max_unavailable {
            None => inv.rollout.max_unavailable.clone(),
            Some(text) => {
                let bad = |e: farm_inventory::ValueError| {
                    CommandError::bad_input(format!("--max-unavailable {text}: {e}"))
                };
                let ramp = Ramp::parse(text).map_err(bad)?;
                for c in &ramp.0 {
                    check_max_unavailable(*c, total).map_err(bad)?;
                }
                ramp
            }
        };
        let window = match &req.window {
            Some(text) => Some(
                Window::parse(text)
                    .map_err(|e| CommandError::bad_input(format!("--window: {e}")))?,
            ),
            None => inv.rollout.window.clone(),
        };
        let deploy = resolve_deploy(inv, req)?;
        let pools = match req.operation {
            OperationKind::Recycle if req.pools.is_empty() => inv.app_pools.clone(),
            OperationKind::Recycle => req.pools.clone(),
            OperationKind::Reset | OperationKind::Patch | OperationKind::Reboot => Vec::new(),
            // The site's pool; when the inventory does not name it, each
            // node's own (from its agent) at the time of the recycle.
            OperationKind::Deploy | OperationKind::Rollback => deploy
                .as_ref()
                .and_then(|d| inv.sites.iter().find(|s| s.name == d.site))
                .and_then(|s| s.app_pool.clone())
                .into_iter()
                .collect(),
        };
        let r = &inv.rollout;
        Ok(RunSettings {
            operation: req.operation,
            farm: inv.farm.clone(),
            farm_nodes: inv
                .nodes
                .iter()
                .map(|n| FarmNode {
                    name: n.name.clone(),
                    lb_server: n.lb_server.clone(),
                })
                .collect(),
            load_balancer: lb_name(inv),
            nodes: select_nodes(inv, &req.nodes)?,
            pools,
            max_unavailable: ramp.to_string(),
            max_unavailable_steps: ramp.resolve(total),
            min_healthy: r.min_healthy.of(total),
            max_failures: r.max_failures,
            on_failure: r.on_failure,
            pause: r.pause,
            window,
            canary: req.canary,
            strategy: r.strategy,
            timeouts: RunTimeouts {
                drain: r.drain_timeout,
                on_drain_timeout: r.on_drain_timeout,
                operation: r.operation_timeout,
                healthy: r.healthy_timeout,
                return_: r.healthy_timeout.max(Duration::from_secs(30)),
                stop: r.stop_timeout,
                lease_ttl: r.lease_ttl,
                progress_deadline: r.progress_deadline,
            },
            deploy,
            analysis: AnalysisSettings::resolve(inv, req),
            diagnose: req.diagnose,
            dump: req.dump,
            node_pools: req.node_pools.clone(),
            patch: PatchSettings::resolve(inv, req.operation),
            by_guard: false,
        })
    }

    /// The pools the run recycles on `node`: its own when the run names
    /// them per node, else the run's.
    pub fn pools_for(&self, node: &str) -> &[String] {
        self.node_pools
            .get(node)
            .map_or(self.pools.as_slice(), Vec::as_slice)
    }

    pub fn capacity(&self) -> Capacity {
        Capacity::new(
            self.farm_nodes.len(),
            self.min_healthy,
            &self.max_unavailable_steps,
        )
    }

    /// The machine's policy; `drains`: the load balancer takes nodes out.
    pub fn policy(&self, drains: bool) -> Policy {
        Policy {
            operation: self.operation,
            drains,
            drain_timeout: self.timeouts.drain,
            on_drain_timeout: self.timeouts.on_drain_timeout,
            // A patch or reboot: the install, then the restart's own bound
            // (each bounded inside; this only backs them up).
            operation_timeout: match &self.patch {
                Some(p) => p.install_timeout + p.reboot_timeout + Duration::from_secs(120),
                None => self.timeouts.operation,
            },
            healthy_timeout: self.timeouts.healthy,
            return_timeout: self.timeouts.return_,
            deploy: self.operation.switches_release(),
        }
    }

    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    /// An inventory given to `resume` may change how nodes are reached
    /// (addresses, ports, TLS), not which farm or nodes the run is about.
    pub fn check_same_farm(&self, inv: &Inventory) -> Result<(), ContractMismatch> {
        if inv.farm != self.farm {
            return Err(ContractMismatch(format!(
                "it describes farm `{}`, the run is on farm `{}`",
                inv.farm, self.farm
            )));
        }
        let now: Vec<FarmNode> = inv
            .nodes
            .iter()
            .map(|n| FarmNode {
                name: n.name.clone(),
                lb_server: n.lb_server.clone(),
            })
            .collect();
        if now != self.farm_nodes {
            let names = |v: &[FarmNode]| {
                v.iter()
                    .map(|n| format!("{} ({})", n.name, n.lb_server))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ContractMismatch(format!(
                "its nodes differ from the run's: the run has {}; the inventory has {}",
                names(&self.farm_nodes),
                names(&now)
            )));
        }
        if lb_name(inv) != self.load_balancer {
            return Err(ContractMismatch(format!(
                "its load balancer is {}, the run's is {}",
                lb_name(inv),
                self.load_balancer
            )));
        }
        Ok(())
    }
}

/// A deploy's or rollback's settings: the site must be in the inventory
/// with a version probe, the version a plain name, the package a zip that
/// passes the package rules.
fn resolve_deploy(
    inv: &Inventory,
    req: &RunRequest,
) -> Result<Option<DeploySettings>, CommandError> {
    if !req.operation.switches_release() {
        return Ok(None);
    }
    let d = req
        .deploy
        .as_ref()
        .ok_or_else(|| CommandError::bad_input("a deploy needs --site and --version"))?;
    let Some(site) = inv
        .sites
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&d.site))
    else {
        return Err(CommandError::bad_input(format!(
            "--site {}: not in the inventory{}",
            d.site,
            crate::human::did_you_mean(&d.site, inv.sites.iter().map(|s| s.name.as_str()))
        )));
    };
    farm_proto::names::check_version(&d.version)
        .map_err(|e| CommandError::bad_input(format!("--version: {e}")))?;
    let Some(probe) = &site.version_probe else {
        let i = inv
            .sites
            .iter()
            .position(|s| s.name == site.name)
            .unwrap_or(0);
        return Err(CommandError::bad_input(format!(
            "sites[{i}].version_probe is needed to {}: it proves the new version is the one answering \
             (e.g. `version_probe: {{path: /version.txt, expect: \"{{version}}\"}}`)",
            req.operation
        )));
    };
    let package = match (&d.package, req.operation) {
        (Some(path), OperationKind::Deploy) => Some(
            crate::release::read_package(path)
                .map_err(|e| CommandError::bad_input(format!("--package: {e}")))?,
        ),
        (None, OperationKind::Deploy) => {
            return Err(CommandError::bad_input("a deploy needs --package FILE.zip"))
        }
        _ => None,
    };
    Ok(Some(DeploySettings {
        site: site.name.clone(),
        version: d.version.clone(),
        package,
        hooks: site.hooks.clone(),
        version_path: probe.path.clone(),
        version_expect: probe.expected(&d.version),
        staging_concurrency: STAGING_CONCURRENCY,
    }))
}

/// Node names named by `--nodes`, in inventory order (all when empty).
fn select_nodes(inv: &Inventory, names: &[String]) -> Result<Vec<String>, CommandError> {
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| {
            !inv.nodes
                .iter()
                .any(|node| node.name.eq_ignore_ascii_case(n))
        })
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known = || inv.nodes.iter().map(|n| n.name.as_str());
        return Err(CommandError::bad_input(format!(
            "--nodes: not in the inventory: {}",
            unknown
                .iter()
                .map(|u| format!("{u}{}", crate::human::did_you_mean(u, known())))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(inv
        .nodes
        .iter()
        .filter(|node| names.is_empty() || names.iter().any(|n| node.name.eq_ignore_ascii_case(n)))
        .map(|node| node.name.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "farm: shop\nnodes:\n  - {name: web01, address: a}\n  - {name: web02, address: b}\n  - {name: web03, address: c}\n  - {name: web04, address: d}\nsites: [{name: shop}]\nrollout:\n  max_unavailable: \"50%\"\n  min_healthy: 2\n  window: \"02:00-05:00 UTC\"\n";

    #[test]
    fn flags_override_the_inventory_and_the_result_round_trips() {
        let inv = farm_inventory::parse(INV).unwrap();
        let mut req = RunRequest::new(OperationKind::Recycle);
        req.max_unavailable = Some("1".into());
        req.nodes = vec!["WEB02".into(), "web01".into()];
        let s = RunSettings::resolve(&inv, &req).unwrap();
        assert_eq!(s.max_unavailable_steps, [1]);
        assert_eq!(s.nodes, ["web01", "web02"], "inventory order");
        assert_eq!(
            s.window.as_ref().map(ToString::to_string).as_deref(),
            Some("02:00-05:00 UTC")
        );
        assert_eq!(s.min_healthy, 2);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"drain\":\"2m\""), "{json}");
        assert_eq!(serde_json::from_str::<RunSettings>(&json).unwrap(), s);
    }

    #[test]
    fn bad_flags_are_bad_input() {
        let inv = farm_inventory::parse(INV).unwrap();
        for (max, nodes, window) in [
            (Some("0"), vec![], None),
            (Some("5"), vec![], None),
            (None, vec!["web09".to_string()], None),
            (None, vec![], Some("25:00-26:00")),
        ] {
            let mut req = RunRequest::new(OperationKind::Reset);
            req.max_unavailable = max.map(String::from);
            req.nodes = nodes;
            req.window = window.map(String::from);
            let e = RunSettings::resolve(&inv, &req).unwrap_err();
            assert_eq!(e.status, crate::exit::ExitStatus::BadInput, "{e}");
        }
    }

    #[test]
    fn resume_accepts_new_addresses_but_not_another_farm() {
        let inv = farm_inventory::parse(INV).unwrap();
        let s = RunSettings::resolve(&inv, &RunRequest::new(OperationKind::Recycle)).unwrap();
        let moved = farm_inventory::parse(&INV.replace("address: a", "address: 10.0.0.9")).unwrap();
        assert!(s.check_same_farm(&moved).is_ok());
        let fewer =
            farm_inventory::parse(&INV.replace("  - {name: web04, address: d}\n", "")).unwrap();
        let e = s.check_same_farm(&fewer).unwrap_err().to_string();
        assert!(e.contains("nodes differ"), "{e}");
        let other = farm_inventory::parse(&INV.replace("farm: shop", "farm: blog")).unwrap();
        assert!(s
            .check_same_farm(&other)
            .unwrap_err()
            .to_string()
            .contains("farm `blog`"));
    }
}
