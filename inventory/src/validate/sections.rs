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
