//! Checks before a run touches anything: every node of the run reachable,
//! IIS running, its pools present and started, healthy and serving; every
//! node in the load balancer. Nodes outside the run that do not serve
//! count against capacity. Any problem refuses the run (exit 3), and all of
//! them are listed.
use farm_proto::domain::PoolState;

use crate::exit::CommandError;
use crate::farm::Farm;
use crate::observe::{Observation, OutReason};

/// What preflight learned.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Nodes (indices) outside the run that are out of rotation,
    /// unreachable or unhealthy: they count against capacity.
    pub already_out: Vec<usize>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl Preflight {
    /// The refusal, if preflight found problems: `heading` and the list.
    pub fn refusal(&self, heading: &str) -> Option<CommandError> {
        (!self.problems.is_empty()).then(|| {
            let list: Vec<String> = self.problems.iter().map(|p| format!("  - {p}")).collect();
            CommandError::refused(format!("{heading}:\n{}", list.join("\n")))
        })
    }
}

/// Judges the observed farm for a run of `selected` nodes acting on
/// `pools` (per node). Nodes in `ignore` (already handled by a resumed
/// run) are left out of the verdict. `healing`: the run recycles sick
/// pools (`recycle --outliers`, the guard), so a selected node that
/// answers its probe badly is why it runs, not a reason to refuse.
pub fn check(
    farm: &Farm,
    observed: &[Observation],
    selected: &[usize],
    ignore: &[usize],
    pools: &dyn Fn(&str) -> Vec<String>,
    healing: bool,
) -> Preflight {
    let drains = farm.lb.drains();
    let mut pf = Preflight::default();
    for o in observed.iter().filter(|o| !ignore.contains(&o.node)) {
        let name = &farm.node(o.node).name;
        let reasons = o.out_reasons(drains);
        if reasons.contains(&OutReason::NotInLoadBalancer) {
            pf.problems.push(format!(
                "{name}: server `{}` is not in the load balancer's backend",
                farm.node(o.node).lb_server
            ));
        }
        if !selected.contains(&o.node) {
            if !reasons.is_empty() {
                pf.notes.push(format!(
                    "{name} is out of rotation or unhealthy ({}); it counts against capacity",
                    reasons
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                pf.already_out.push(o.node);
            }
            continue;
        }
        for r in &reasons {
            match r {
                OutReason::Unreachable(e) => pf.problems.push(format!("{name}: {e}")),
                OutReason::Drained => {
                    let by = o
                        .view
                        .as_ref()
                        .ok()
                        .and_then(|v| v.lease.as_ref())
                        .map(|l| format!(" by run {} of {}", l.run_id, l.holder))
                        .unwrap_or_default();
                    pf.problems.push(format!(
                        "{name}: already drained{by} (out of rotation); undrain it first or leave it out with --nodes"
                    ));
                }
                OutReason::LoadBalancer(state) => pf.problems.push(format!(
                    "{name}: the load balancer has it {state}; put it back or leave it out with --nodes"
                )),
                OutReason::NotInLoadBalancer => {}
                OutReason::Unhealthy(e) if healing => pf.notes.push(format!(
                    "{name} answers its probe badly ({e}): the recycle is to heal it"
                )),
                OutReason::Unhealthy(e) => pf.problems.push(format!("{name}: not healthy: {e}")),
            }
        }
        if let Ok(v) = &o.view {
            if !v.iis_running() {
                let services: Vec<String> =
                    v.services.iter().map(|(k, s)| format!("{k} {s}")).collect();
                pf.problems.push(format!(
                    "{name}: IIS is not running ({})",
                    services.join(", ")
                ));
            }
            for p in &pools(name) {
                match v.pool(p) {
                    None => pf.problems.push(format!(
                        "{name}: application pool `{p}` not found{}",
                        crate::human::did_you_mean(p, v.pools.iter().map(|x| x.name.as_str()))
                    )),
                    Some(pv) if pv.state != PoolState::Started => pf
                        .problems
                        .push(format!("{name}: application pool `{p}` is {}", pv.state)),
                    Some(_) => {}
                }
            }
        }
    }
    pf
}
