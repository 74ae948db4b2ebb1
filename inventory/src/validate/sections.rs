//! Validation of the probe and rollout sections.
use crate::model::ValueError;
use std::time::Duration;

use super::Errors;
use crate::model::*;
use crate::raw::*;

pub(super) fn probe(errors: &mut Errors, at: &str, p: &RawProbe) -> Probe {
    let path = p.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.add(
            format!("{at}.path"),
            format!(
                "`{}` is not a URL path starting with `/`",
                path.escape_debug()
            ),
        );
    }
    let expect_status = match p.expect_status {
        None => 200,
        Some(s) if (100..=599).contains(&s) => s as u16,
        Some(s) => {
            errors.add(
                format!("{at}.expect_status"),
                format!("{s} is not an HTTP status"),
            );
            200
        }
    };
    let successes = match p.successes {
        None => 3,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            errors.add(
                format!("{at}.successes"),
                format!("{n} is not between 1 and 100"),
            );
            3
        }
    };
    Probe {
        path,
        expect_status,
        expect_body: p.expect_body.clone(),
        timeout: errors.duration(
            &format!("{at}.timeout"),
            p.timeout.as_deref(),
            Duration::from_secs(5),
        ),
        interval: errors.duration(
            &format!("{at}.interval"),
            p.interval.as_deref(),
            Duration::from_secs(1),
        ),
        successes,
    }
}

pub(super) fn rollout(errors: &mut Errors, r: &RawRollout, node_count: usize) -> Rollout {
    let max_unavailable = match r.max_unavailable.as_ref() {
        Some(serde_yaml::Value::Sequence(steps)) if steps.is_empty() => {
            errors.add("rollout.max_unavailable", "a ramp needs at least one step");
            Ramp::single(Capacity::Count(1))
        }
        Some(serde_yaml::Value::Sequence(steps)) => Ramp(
            steps
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let at = format!("rollout.max_unavailable[{i}]");
                    let c = errors.capacity(&at, Some(v)).unwrap_or(Capacity::Count(1));
                    if let Err(m) = check_max_unavailable(c, node_count) {
                        errors.add(at, m);
                    }
                    c
                })
                .collect(),
        ),
        other => {
            let c = errors
                .capacity("rollout.max_unavailable", other)
                .unwrap_or(Capacity::Count(1));
            if let Err(m) = check_max_unavailable(c, node_count) {
                errors.add("rollout.max_unavailable", m);
            }
            Ramp::single(c)
        }
    };
    let min_healthy = errors
        .capacity("rollout.min_healthy", r.min_healthy.as_ref())
        .unwrap_or(Capacity::Count(if node_count > 1 { 1 } else { 0 }));
    if node_count > 0 && min_healthy.of(node_count) > node_count {
        errors.add(
            "rollout.min_healthy",
            format!("{min_healthy} is more than the farm's {node_count} node(s)"),
        );
    }
    let on_drain_timeout = errors.word(
        "rollout.on_drain_timeout",
        r.on_drain_timeout.as_deref(),
        OnDrainTimeout::Fail,
    );
    let on_failure = errors.word(
        "rollout.on_failure",
        r.on_failure.as_deref(),
        OnFailure::Halt,
    );
    let strategy = errors.word("rollout.strategy", r.strategy.as_deref(), Strategy::Window);
    let pause = r
        .pause
        .as_deref()
        .map(|p| errors.duration("rollout.pause", Some(p), Duration::ZERO));
    let max_failures = match r.max_failures {
        None => 0,
        Some(n) if n >= 0 && n <= u32::MAX as i64 => n as u32,
        Some(n) => {
            errors.add("rollout.max_failures", format!("{n} is not a count"));
            0
        }
    };
    Rollout {
        max_unavailable,
        min_healthy,
        drain_timeout: errors.duration(
            "rollout.drain_timeout",
            r.drain_timeout.as_deref(),
            Duration::from_secs(120),
        ),
        on_drain_timeout,
        healthy_timeout: errors.duration(
            "rollout.healthy_timeout",
            r.healthy_timeout.as_deref(),
            Duration::from_secs(180),
        ),
        operation_timeout: errors.duration(
            "rollout.operation_timeout",
            r.operation_timeout.as_deref(),
            Duration::from_secs(300),
        ),
        max_failures,
        on_failure,
        pause,
        window: r.window.as_deref().and_then(|w| {
            crate::Window::parse(w)
                .map_err(|e| errors.add("rollout.window", e.to_string()))
                .ok()
        }),
        lease_ttl: errors.duration(
            "rollout.lease_ttl",
            r.lease_ttl.as_deref(),
            Duration::from_secs(60),
        ),
        strategy,
        stop_timeout: errors.duration(
            "rollout.stop_timeout",
            r.stop_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        progress_deadline: r.progress_deadline.as_deref().map(|d| {
            errors.duration(
                "rollout.progress_deadline",
                Some(d),
                Duration::from_secs(600),
            )
        }),
    }
}

/// `max_unavailable` must let at least one node go and may not exceed the farm.
pub fn check_max_unavailable(value: Capacity, node_count: usize) -> Result<(), ValueError> {
    match value {
        Capacity::Count(0) | Capacity::Percent(0) => Err(ValueError(
            "must be at least 1 (or a percentage above 0%): with 0 no node can ever be taken out"
                .into(),
        )),
        Capacity::Count(n) if node_count > 0 && n as usize > node_count => Err(ValueError(
            format!("{n} is more than the farm's {node_count} node(s)"),
        )),
        _ => Ok(()),
    }
}

/// A share written `"0.5%"` or as a fraction (`0.005`), between 0 and 1.
pub fn parse_share(value: &serde_yaml::Value) -> Result<f64, String> {
    let share = match value {
        serde_yaml::Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number"))?,
        serde_yaml::Value::String(s) => match s.trim().strip_suffix('%') {
            Some(p) => {
                p.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("`{s}` is not a percentage like \"0.5%\""))?
                    / 100.0
            }
            None => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("`{s}` is not a percentage like \"0.5%\" or a fraction"))?,
        },
        _ => return Err("expected a percentage like \"0.5%\" or a fraction like 0.005".into()),
    };
    if !(0.0..=1.0).contains(&share) || share.is_nan() {
        return Err(format!("{share} is not between 0% and 100%"));
    }
    Ok(share)
}

pub(super) fn analysis(errors: &mut Errors, a: &RawAnalysis, node_count: usize) -> Analysis {
    let d = Analysis::default();
    let canaries = match a.canaries {
        None => d.canaries,
        Some(n) if n >= 1 && (node_count == 0 || (n as usize) < node_count) => n as u32,
        Some(n) => {
            errors.add(
                "analysis.canaries",
                format!(
                    "{n}: needs at least 1 canary and fewer than the farm's {node_count} node(s) (the rest are the baseline)"
                ),
            );
            d.canaries
        }
    };
    let min_requests = match a.min_requests {
        None => d.min_requests,
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            errors.add(
                "analysis.min_requests",
                format!("{n} is not a count above 0"),
            );
            d.min_requests
        }
    };
    let mut share = |at: &str, v: Option<&serde_yaml::Value>, default: f64| match v {
        None => default,
        Some(v) => parse_share(v).unwrap_or_else(|m| {
            errors.add(at, m);
            default
        }),
    };
    let errors_max_increase = share(
        "analysis.errors.max_increase",
        a.errors.max_increase.as_ref(),
        d.errors_max_increase,
    );
    let latency_max_increase = share(
        "analysis.latency.max_increase",
        a.latency.max_increase.as_ref(),
        d.latency_max_increase,
    );
    let canary_weight = a.canary_weight.as_ref().and_then(|v| match parse_share(v) {
        Ok(w) if w > 0.0 => Some(((w * 100.0).round() as u32).max(1)),
        Ok(_) => {
            errors.add(
                "analysis.canary_weight",
                "must be above 0% (0% sends the canaries nothing to judge)",
            );
            None
        }
        Err(m) => {
            errors.add("analysis.canary_weight", m);
            None
        }
    });
    let soak = a
        .soak
        .as_deref()
        .map(|s| errors.duration("analysis.soak", Some(s), Duration::from_secs(300)));
    let interval = errors.duration("analysis.interval", a.interval.as_deref(), d.interval);
    let interval = match soak {
        Some(soak) if interval > soak => soak,
        _ => interval,
    };
    Analysis {
        canaries,
        soak,
        interval,
        min_requests,
        errors_max_increase,
        latency_quantile: errors.word(
            "analysis.latency.quantile",
            a.latency.quantile.as_deref(),
            d.latency_quantile,
        ),
        latency_max_increase,
        on_inconclusive: errors.word(
            "analysis.on_inconclusive",
            a.on_inconclusive.as_deref(),
            d.on_inconclusive,
        ),
        stabilize: a
            .stabilize
            .as_deref()
            .map(|s| errors.duration("analysis.stabilize", Some(s), Duration::from_secs(30))),
        canary_weight,
    }
}

/// `patch:`: known classifications, KB numbers, durations in range.
pub(super) fn patch(errors: &mut Errors, p: &crate::raw::RawPatch) -> crate::model::Patch {
    let d = crate::model::Patch::default();
    let classifications = match &p.classifications {
        None => d.classifications.clone(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match farm_proto::updates::classification(c) {
                Some((name, _)) => Some(name.to_string()),
                None => {
                    errors.add(
                        format!("patch.classifications[{i}]"),
                        format!(
                            "`{c}` is not an update classification (one of {})",
                            farm_proto::updates::CLASSIFICATIONS
                                .iter()
                                .map(|c| c.0)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            })
            .collect(),
    };
    let mut kbs = |key: &str, list: &[String]| -> Vec<String> {
        list.iter()
            .enumerate()
            .filter_map(|(i, k)| {
                farm_proto::updates::kb(k).or_else(|| {
                    errors.add(
                        format!("patch.{key}[{i}]"),
                        format!("`{k}` is not a KB number like KB5031364"),
                    );
                    None
                })
            })
            .collect()
    };
    let include_kbs = kbs("include_kbs", &p.include_kbs);
    let exclude_kbs = kbs("exclude_kbs", &p.exclude_kbs);
    if let Some(k) = include_kbs.iter().find(|k| exclude_kbs.contains(k)) {
        errors.add(
            "patch.exclude_kbs",
            format!("{k} is both included and excluded"),
        );
    }
    let mut bounded =
        |key: &str, v: Option<&str>, default: Duration, min: Duration, max: Duration| {
            errors.bounded(&format!("patch.{key}"), v, default, (min, max))
        };
    let reboot_timeout = bounded(
        "reboot_timeout",
        p.reboot_timeout.as_deref(),
        d.reboot_timeout,
        Duration::from_secs(10),
        Duration::from_secs(24 * 3600),
    );
    let install_timeout = bounded(
        "install_timeout",
        p.install_timeout.as_deref(),
        d.install_timeout,
        Duration::from_secs(10),
        Duration::from_secs(24 * 3600),
    );
    let reboot_delay = bounded(
        "reboot_delay",
        p.reboot_delay.as_deref(),
        d.reboot_delay,
        Duration::from_secs(1),
        Duration::from_secs(600),
    );
    // `0s`: no bake (the only duration here that may be zero).
    let no_bake = p
        .bake
        .as_deref()
        .is_some_and(|t| humantime::parse_duration(t.trim()).is_ok_and(|d| d.is_zero()));
    let bake = if no_bake {
        Duration::ZERO
    } else {
        bounded(
            "bake",
            p.bake.as_deref(),
            d.bake.unwrap_or_default(),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
    };
    crate::model::Patch {
        classifications,
        include_kbs,
        exclude_kbs,
        reboot_timeout,
        install_timeout,
        reboot_delay,
        bake: (!bake.is_zero()).then_some(bake),
    }
}

/// `guard:`: durations in range, counts at least 1, `max_sick` under
/// half the farm (a guard that may act while most nodes look sick would
/// recycle the farm), the cool-down shorter than the relapse window.
pub(super) fn guard(errors: &mut Errors, g: &RawGuard, node_count: usize) -> Guard {
    let d = Guard::default();
    let mut bounded = |key: &str, v: Option<&str>, default: Duration, min: u64, max: u64| {
        errors.bounded(
            &format!("guard.{key}"),
            v,
            default,
            (Duration::from_secs(min), Duration::from_secs(max)),
        )
    };
    let window = bounded("window", g.window.as_deref(), d.window, 10, 3600);
    let interval = bounded("interval", g.interval.as_deref(), d.interval, 1, 3600);
    let cooldown = bounded(
        "cooldown",
        g.cooldown.as_deref(),
        d.cooldown,
        1,
        7 * 24 * 3600,
    );
    let relapse = bounded("relapse", g.relapse.as_deref(), d.relapse, 1, 7 * 24 * 3600);
    let mut count = |key: &str, v: Option<i64>, default: u32, max: i64| match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n as u32,
        Some(n) => {
            errors.add(
                format!("guard.{key}"),
                format!("{n} is not a count between 1 and {max}"),
            );
            default
        }
    };
    let confirm = count("confirm", g.confirm, d.confirm, 100);
    let budget = g.max_actions.as_ref();
    let per_hour = count(
        "max_actions.per_hour",
        budget.and_then(|b| b.per_hour),
        d.per_hour,
        1000,
    );
    let per_day = count(
        "max_actions.per_day",
        budget.and_then(|b| b.per_day),
        d.per_day,
        24_000,
    );
    let quarantine_after = count(
        "quarantine_after",
        g.quarantine_after,
        d.quarantine_after,
        100,
    );
    if per_day < per_hour {
        errors.add(
            "guard.max_actions.per_day",
            format!("{per_day} a day is fewer than the {per_hour} allowed per hour"),
        );
    }
    if cooldown > relapse {
        errors.add(
            "guard.cooldown",
            format!(
                "{} is longer than guard.relapse ({}): a pool sick again after its cool-down would never count as a relapse",
                humantime::format_duration(cooldown),
                humantime::format_duration(relapse)
            ),
        );
    }
    let max_sick = errors
        .capacity("guard.max_sick", g.max_sick.as_ref())
        .unwrap_or(d.max_sick);
    if g.max_sick.is_some() && node_count > 0 && max_sick.of(node_count).max(1) * 2 >= node_count {
        errors.add(
            "guard.max_sick",
            format!(
                "{} of {node_count} nodes is half the farm or more: with that many outliers the farm is sick, not a node (at most {})",
                max_sick.of(node_count).max(1),
                (node_count.saturating_sub(1)) / 2
            ),
        );
    }
    Guard {
        window,
        interval,
        confirm,
        max_sick,
        per_hour,
        per_day,
        cooldown,
        relapse,
        quarantine_after,
        dump: g.dump.unwrap_or(false),
    }
}
