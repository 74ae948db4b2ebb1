//! `farmctl completions SHELL` and `farmctl man`: generated from the
//! argument definitions themselves, so they never drift from the CLI.
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{CommandError, CommandResult, ExitStatus};

pub fn completions(args: &CompletionsArgs) -> CommandResult {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "farmctl", &mut std::io::stdout());
    Ok(ExitStatus::Done)
}

pub fn man(args: &ManArgs) -> CommandResult {
    let fail = |e: std::io::Error| {
        CommandError::failed(format!(
            "could not write man pages in {}: {e}",
            args.dir.display()
        ))
    };
    std::fs::create_dir_all(&args.dir).map_err(fail)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &args.dir).map_err(fail)?;
    println!("man pages written to {}", args.dir.display());
    Ok(ExitStatus::Done)
}
