//! `farmctl rollback`: a rolling switch back to a release every node still
//! keeps — no upload. Without `--to`, the release every node of the run
//! served before its current one; when they do not agree, `--to` must say.
use farm_proto::domain::OperationKind;
use futures::future::join_all;

use crate::cli::RollbackArgs;
use crate::commands::rollout::{execute_on, request};
use crate::commands::Settings;
use crate::exit::{CommandError, CommandResult};
use crate::farm::Farm;
use crate::run::DeployRequest;

pub async fn run(args: &RollbackArgs, settings: &Settings) -> CommandResult {
    let farm = settings.farm(&args.rollout.inv.inventory)?;
    let version = match &args.to {
        Some(v) => v.clone(),
        None => previous_release(&farm, &args.site, &args.rollout.nodes).await?,
    };
    let mut req = request(&args.rollout, OperationKind::Rollback);
    req.deploy = Some(DeployRequest {
        site: args.site.clone(),
        version,
        package: None,
    });
    req.soak = args.analysis.soak;
    req.canaries = args.analysis.canaries;
    execute_on(&farm, &args.rollout, req, settings).await
}

/// The release every node (of `names`, or all) served before its current
/// one, when they agree.
pub(crate) async fn previous_release(
    farm: &Farm,
    site: &str,
    names: &[String],
) -> Result<String, CommandError> {
    let nodes: Vec<usize> = (0..farm.inventory.nodes.len())
        .filter(|&i| {
            names.is_empty()
                || names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&farm.node(i).name))
        })
        .collect();
    let answers = join_all(nodes.iter().map(|&i| farm.agent(i).releases(site))).await;
    let mut previous = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (&i, answer) in nodes.iter().zip(answers) {
        let name = farm.node(i).name.clone();
        let prev = answer
            .map_err(|e| CommandError::refused(format!("{name}: {e} (nothing was touched)")))?
            .into_iter()
            .find(|r| r.previous)
            .map_or_else(|| "(none)".to_string(), |r| r.version);
        previous.entry(prev).or_default().push(name);
    }
    match previous.len() {
        1 => {
            let (v, _) = previous.into_iter().next().unwrap_or_default();
            if v == "(none)" {
                Err(CommandError::refused(format!(
                    "no node keeps an earlier release of site {site} to go back to; name one with --to"
                )))
            } else {
                Ok(v)
            }
        }
        _ => Err(CommandError::refused(format!(
            "the nodes served different releases of site {site} before: {}; name one with --to",
            previous
                .iter()
                .map(|(v, n)| format!("{v} on {}", n.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}
