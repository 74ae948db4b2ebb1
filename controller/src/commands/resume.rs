//! `farmctl resume [RUN_ID]`: continues a run whose controller stopped
//! (crash, SIGKILL, second Ctrl-C), or one that halted (a failed node, an
//! operator's stop), with the limits recorded in its journal
//! ([`crate::run::resume`]).
use crate::cli::ResumeArgs;
use crate::commands::load_inventory;
use crate::commands::rollout::finish;
use crate::commands::{with_ctrl_c, Settings};
use crate::exit::{CommandError, CommandResult};
use crate::operator::Terminal;
use crate::run;
use crate::store::Store;

pub async fn run(args: &ResumeArgs, settings: &Settings) -> CommandResult {
    // The store is the flag's, else the given inventory's, else the
    // journal directory.
    let inv = args.inventory.as_deref().map(load_inventory).transpose()?;
    let store = Store::open(
        settings.state_store.as_deref(),
        inv.as_ref(),
        &settings.state_dir(),
    )
    .await?;
    let farm = inv.as_ref().map(|i| i.farm.clone());
    let loaded = match store.find(farm.as_deref(), args.run_id.as_deref()).await {
        Ok(l) => l,
        // Nothing to resume is an answer, not an error (a pipeline that
        // resumes "whatever was cut" goes on).
        Err(e) if args.run_id.is_none() && e.0.starts_with("no unfinished run in ") => {
            let reason = format!("nothing to resume: {e}");
            match args.output {
                crate::cli::Output::Text => {
                    if !settings.quiet {
                        crate::errln!("farmctl: {reason}");
                    }
                }
                o => crate::commands::print_json(
                    o,
                    &serde_json::json!({"outcome": "nothing_to_resume", "exit_code": 0, "reason": reason, "problems": []}),
                ),
            }
            return Ok(crate::exit::ExitStatus::Done);
        }
        Err(e) => return Err(CommandError::bad_input(e)),
    };
    // The run was confirmed when it started.
    let operator = Terminal { yes: true };
    let report = with_ctrl_c(settings.reporter.clone(), |stop| {
        let mut env = settings.run_env(&operator, Some(stop));
        env.takeover = args.force_takeover;
        env.failed = match (args.retry_failed, args.skip_failed) {
            (true, _) => run::FailedNodes::Retry,
            (_, true) => run::FailedNodes::Skip,
            _ => run::FailedNodes::Unsaid,
        };
        let transport = settings.transport();
        async move { run::resume(loaded, args.inventory.as_deref(), transport, &env).await }
    })
    .await?;
    finish(&report, args.output)
}
