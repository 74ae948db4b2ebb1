//! `farmctl resume [RUN_ID]`: continues a run whose controller stopped
//! (crash, SIGKILL, second Ctrl-C) with the limits recorded in its journal
//! ([`crate::run::resume`]).
use crate::cli::ResumeArgs;
use crate::commands::rollout::finish;
use crate::commands::{with_ctrl_c, Settings};
use crate::exit::{CommandError, CommandResult};
use crate::journal;
use crate::operator::Terminal;
use crate::run;

pub async fn run(args: &ResumeArgs, settings: &Settings) -> CommandResult {
    let loaded = journal::find(&settings.state_dir(), args.run_id.as_deref())
        .map_err(CommandError::bad_input)?;
    // The run was confirmed when it started.
    let operator = Terminal { yes: true };
    let report = with_ctrl_c(|stop| {
        let env = settings.run_env(&operator, Some(stop));
        let transport = settings.transport();
        async move { run::resume(loaded, args.inventory.as_deref(), transport, &env).await }
    })
    .await?;
    finish(&report, args.output)
}
