//! `farmctl certs`: the farm's CA and the agents' and controllers'
//! certificates ([`crate::certfiles`]).
//!
//! ```text
//! farmctl certs init --dir certs --farm shop-prod
//! farmctl certs issue agent web01 --dir certs --san web01.corp --san 10.0.1.11
//! farmctl certs issue controller ops-laptop --role operator --dir certs
//! farmctl certs revoke certs/controller-old-laptop.pem --dir certs
//! ```
use farm_proto::pki::Role;

use crate::certfiles::{init, issue_agent, issue_controller, revoke};
use crate::cli::{CertsArgs, CertsCommand, IssueCommand};
use crate::commands::Settings;
use crate::exit::{CommandError, CommandResult, ExitStatus};

pub fn run(args: &CertsArgs, settings: &Settings) -> CommandResult {
    let written = match &args.command {
        CertsCommand::Init { farm } => init(&args.dir, farm, args.force)?,
        CertsCommand::Issue(IssueCommand::Agent { node, san }) => {
            issue_agent(&args.dir, node, san, args.force)?
        }
        CertsCommand::Issue(IssueCommand::Controller { name, role }) => {
            let role = Role::parse(role).ok_or_else(|| {
                CommandError::bad_input(format!("--role {role}: use `operator` or `viewer`"))
            })?;
            issue_controller(&args.dir, name, role, args.force)?
        }
        CertsCommand::Revoke { certs } => revoke(&args.dir, certs)?,
    };
    if !settings.quiet {
        for p in written {
            crate::outln!("wrote {}", p.display());
        }
    }
    Ok(ExitStatus::Done)
}
