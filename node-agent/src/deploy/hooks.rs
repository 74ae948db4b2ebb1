//! Deployment hooks: commands defined in the agent's own config as argv
//! vectors (never a shell string), named by the controller, run after a
//! switch with a time bound, their output kept for the report and the
//! audit log.
use std::time::{Duration, Instant};

use farm_proto::v1 as pb;
use serde::Deserialize;

use crate::runner::{CommandRunner, RunError};

/// One hook: `argv[0]` is the program. `{site}`, `{version}` and `{path}`
/// (the release folder) in an argument are replaced before it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub argv: Vec<String>,
    #[serde(default = "super::default_hook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// The most output kept per hook (its end).
const MAX_OUTPUT: usize = 4096;

fn tail(text: &str) -> String {
    if text.len() <= MAX_OUTPUT {
        return text.to_string();
    }
    let mut start = text.len() - MAX_OUTPUT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Runs `hooks` in order, stopping at the first that fails (exit code not
/// 0, could not start, or out of time: exit code -1).
pub async fn run_all(
    runner: &dyn CommandRunner,
    hooks: &[(String, HookConfig)],
    site: &str,
    version: &str,
    path: &str,
) -> Vec<pb::HookOutcome> {
    let mut out = Vec::new();
    for (name, hook) in hooks {
        let Some((program, args)) = hook.argv.split_first() else {
            out.push(pb::HookOutcome {
                name: name.clone(),
                exit_code: -1,
                output: "the hook has an empty argv".into(),
                duration_ms: 0,
            });
            break;
        };
        let fill = |a: &String| {
            a.replace("{site}", site)
                .replace("{version}", version)
                .replace("{path}", path)
        };
        let args: Vec<String> = args.iter().map(fill).collect();
        let started = Instant::now();
        let (exit_code, output) = match runner.run(&fill(program), &args, hook.timeout).await {
            Ok(o) => (o.code.unwrap_or(-1), o.text()),
            Err(RunError::Timeout { after, .. }) => (
                -1,
                format!("did not finish within {after:?} and was killed"),
            ),
            Err(e) => (-1, e.to_string()),
        };
        tracing::info!(hook = %name, site, version, exit_code, "deployment hook ran");
        let failed = exit_code != 0;
        out.push(pb::HookOutcome {
            name: name.clone(),
            exit_code,
            output: tail(&output),
            duration_ms: started.elapsed().as_millis() as u64,
        });
        if failed {
            break;
        }
    }
    out
}
