//! `farmctl recycle` and `farmctl reset`: the flags become a run request,
//! the request and the inventory the run contract, and the library runs it.
use std::io::IsTerminal;

use farm_proto::domain::OperationKind;

use crate::cli::{Output, RecycleArgs, RolloutArgs};
use crate::commands::{print_json, with_ctrl_c, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::operator::Terminal;
use crate::report::{summary, RunReport};
use crate::run::{self, RunRequest, RunSettings};

pub async fn recycle(args: &RecycleArgs, settings: &Settings) -> CommandResult {
    let mut req = request(&args.rollout, OperationKind::Recycle);
    req.pools = args.pools.clone();
    if args.outliers {
        let farm = settings.farm(&args.rollout.inv.inventory)?;
        let (nodes, pools) = outliers(&farm).await?;
        if !settings.quiet {
            crate::errln!(
                "farmctl: outliers: {} (pools: {})",
                nodes.join(", "),
                if pools.is_empty() {
                    "all".to_string()
                } else {
                    pools.join(", ")
                }
            );
        }
        req.nodes = nodes;
        req.pools = pools;
        req.diagnose = true;
        return execute_on(&farm, &args.rollout, req, settings).await;
    }
    execute(&args.rollout, req, settings).await
}

/// The sick nodes (and their sick pools) by the traffic-health rule, or a
/// refusal saying why there are none.
async fn outliers(farm: &crate::farm::Farm) -> Result<(Vec<String>, Vec<String>), CommandError> {
    let window = crate::commands::status::TRAFFIC_WINDOW_S;
    let (_, verdicts) = crate::health::survey(farm, window).await;
    let mut nodes = Vec::new();
    let mut pools = Vec::new();
    let mut said = Vec::new();
    for (i, v) in verdicts.iter().enumerate() {
        let name = &farm.node(i).name;
        match v.outlier {
            Some(true) => {
                nodes.push(name.clone());
                for p in &v.pools {
                    if !pools.contains(p) {
                        pools.push(p.clone());
                    }
                }
            }
            Some(false) => said.push(format!("{name}: like its peers")),
            None => said.push(format!("{name}: {}", v.reasons.join("; "))),
        }
    }
    if nodes.is_empty() {
        return Err(CommandError::refused(format!(
            "--outliers: no node is an outlier over the last {window}s ({}); nothing was touched",
            said.join("; ")
        )));
    }
    Ok((nodes, pools))
}

pub async fn reset(args: &RolloutArgs, settings: &Settings) -> CommandResult {
    execute(args, request(args, OperationKind::Reset), settings).await
}

/// The run the flags ask for.
pub fn request(args: &RolloutArgs, operation: OperationKind) -> RunRequest {
    RunRequest {
        operation,
        nodes: args.nodes.clone(),
        pools: Vec::new(),
        max_unavailable: args.max_unavailable.clone(),
        window: args.window.clone(),
        canary: args.canary,
        deploy: None,
        soak: None,
        canaries: None,
        diagnose: false,
    }
}

/// Resolves `req` against the inventory and runs it, with Ctrl-C handled.
pub async fn execute(args: &RolloutArgs, req: RunRequest, settings: &Settings) -> CommandResult {
    if args.canary && !std::io::stdin().is_terminal() {
        return Err(CommandError::bad_input(
            "--canary asks for confirmation after the first node: it needs a terminal",
        ));
    }
    let farm = settings.farm(&args.inv.inventory)?;
    execute_on(&farm, args, req, settings).await
}

/// [`execute`] on a connected farm.
pub async fn execute_on(
    farm: &crate::farm::Farm,
    args: &RolloutArgs,
    req: RunRequest,
    settings: &Settings,
) -> CommandResult {
    let run_settings = RunSettings::resolve(&farm.inventory, &req)?;
    let operator = Terminal { yes: args.yes };
    let report = with_ctrl_c(settings.reporter.clone(), |stop| {
        let env = settings.run_env(&operator, Some(stop.clone()));
        async move {
            if args.wait_for_window {
                wait_for_window(&run_settings, settings, stop).await?;
            }
            run::start(farm, &args.inv.inventory, run_settings, &env).await
        }
    })
    .await?;
    finish(&report, args.inv.output)
}

/// Prints the report and turns its outcome into the exit status.
pub fn finish(report: &RunReport, output: Output) -> CommandResult {
    match output {
        Output::Json => print_json(output, report),
        // The events went out as they happened; this is the last one.
        Output::Jsonl => crate::report::JsonLines::finished(report),
        Output::Text => crate::out!(
            "{}",
            crate::human::paint(&summary(report), crate::human::colour_stdout())
        ),
    }
    Ok(if report.succeeded() {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

/// `--wait-for-window`: a run started before its window waits for it.
async fn wait_for_window(
    run: &RunSettings,
    settings: &Settings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CommandError> {
    let Some(window) = run.window().cloned() else {
        return Err(CommandError::bad_input(
            "--wait-for-window needs a maintenance window (--window or rollout.window)",
        ));
    };
    let terminal = std::io::stderr().is_terminal() && !settings.quiet;
    let every = if terminal {
        std::time::Duration::from_secs(1)
    } else {
        std::time::Duration::from_secs(60)
    };
    let quiet = settings.quiet;
    let mut say = |left: std::time::Duration| {
        let left = humantime::format_duration(std::time::Duration::from_secs(left.as_secs()));
        if terminal {
            crate::err!("\r\x1b[2Kwaiting for the maintenance window {window}: it opens in {left}");
        } else if !quiet {
            crate::errln!(
                "farmctl: waiting for the maintenance window {window}: it opens in {left}"
            );
        }
    };
    let opened =
        crate::window::wait_until_open(&window, &*settings.clock, every, Some(stop), &mut say)
            .await;
    if terminal {
        crate::errln!();
    }
    if opened {
        Ok(())
    } else {
        Err(CommandError::refused(
            "stopped while waiting for the maintenance window; nothing was touched",
        ))
    }
}
