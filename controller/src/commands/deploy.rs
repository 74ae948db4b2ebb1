//! `farmctl deploy`: a rolling deployment through the same engine, journal
//! and capacity rules as a recycle (see `crate::run::DeploySettings`).
use farm_proto::domain::OperationKind;

use crate::cli::DeployArgs;
use crate::commands::rollout::{execute, request};
use crate::commands::Settings;
use crate::exit::CommandResult;
use crate::run::DeployRequest;

pub async fn run(args: &DeployArgs, settings: &Settings) -> CommandResult {
    let mut req = request(&args.rollout, OperationKind::Deploy);
    req.deploy = Some(DeployRequest {
        site: args.site.clone(),
        version: args.version.clone(),
        package: Some(args.package.clone()),
    });
    req.soak = args.analysis.soak;
    req.canaries = args.analysis.canaries;
    execute(&args.rollout, req, settings).await
}
