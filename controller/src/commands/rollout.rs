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
        let sick = outliers(&farm).await?;
        if !settings.quiet {
            let each: Vec<String> = sick
                .iter()
                .map(|(node, pools)| {
                    format!(
                        "{node} (pools: {})",
                        if pools.is_empty() {
                            "all".to_string()
                        } else {
                            pools.join(", ")
                        }
                    )
                })
                .collect();
            crate::errln!("farmctl: outliers: {}", each.join(", "));
        }
        // Each node recycles its own sick pools, never another node's.
        req.nodes = sick.iter().map(|(n, _)| n.clone()).collect();
        req.node_pools = sick
            .into_iter()
            .filter(|(_, pools)| !pools.is_empty())
            .collect();
        req.diagnose = true;
        return execute_on(&farm, &args.rollout, req, settings).await;
    }
    execute(&args.rollout, req, settings).await
}

/// The sick nodes, each with its own sick pools (none named: all its
/// pools), by the traffic-health rule, or a refusal saying per node why
/// there are none.
async fn outliers(farm: &crate::farm::Farm) -> Result<Vec<(String, Vec<String>)>, CommandError> {
    let window = crate::commands::status::TRAFFIC_WINDOW_S;
    let (_, verdicts) = crate::health::survey(farm, window).await;
    let mut sick = Vec::new();
    let mut said = Vec::new();
    for (i, v) in verdicts.iter().enumerate() {
        let name = &farm.node(i).name;
        match v.outlier {
            Some(true) => sick.push((name.clone(), v.pools.clone())),
            Some(false) => said.push(format!("{name}: like its peers")),
            None => said.push(format!("{name}: {}", v.reasons.join("; "))),
        }
    }
    if sick.is_empty() {
        // One line per node: the refusal's `problems` in JSON.
        return Err(CommandError::refused(format!(
            "--outliers: no node is an outlier over the last {window}s; nothing was touched:\n{}",
            said.iter()
                .map(|s| format!("- {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    Ok(sick)
}

pub async fn reset(args: &RolloutArgs, settings: &Settings) -> CommandResult {
    execute(args, request(args, OperationKind::Reset), settings).await
}

/// `farmctl patch` and `farmctl reboot`.
pub async fn restart(args: &RolloutArgs, op: OperationKind, settings: &Settings) -> CommandResult {
    execute(args, request(args, op), settings).await
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
        dump: false,
        node_pools: Default::default(),
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
