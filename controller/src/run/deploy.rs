//! What a deploy or rollback adds around the rolling loop: nodes that
//! already serve the release are left out, the rollback's target must be
//! kept on every node (preflight), old releases are pruned after a
//! successful run, and a resume checks the package is still the one the
//! run started with.
use farm_proto::domain::{OpStep, OperationId, OperationKind};
use futures::future::join_all;

use super::RunSettings;
use crate::exit::CommandError;
use crate::farm::Farm;
use crate::report::{Reporter, RunReport};

/// The nodes of `selected` that already serve the run's release: their
/// agent says the site is on it (for a deploy, from the very package) and
/// the version probe proves it. A deploy re-run after a halt touches only
/// the nodes still to do.
pub async fn up_to_date(farm: &Farm, settings: &RunSettings, selected: &[usize]) -> Vec<usize> {
    let Some(d) = &settings.deploy else {
        return Vec::new();
    };
    let Some(site) = farm.inventory.sites.iter().find(|s| s.name == d.site) else {
        return Vec::new();
    };
    let checks = join_all(selected.iter().map(|&i| async move {
        let kept = farm.agent(i).releases(&d.site).await.ok()?;
        let active = kept.iter().find(|r| r.active)?;
        let same_package = d.package.as_ref().is_none_or(|p| p.sha256 == active.sha256);
        if active.version != d.version || !same_package {
            return None;
        }
        let node = farm.node(i);
        farm.prober
            .until_serves(
                node,
                site,
                &d.version_path,
                &d.version_expect,
                site.probe.timeout,
            )
            .await
            .ok()
            .map(|()| i)
    }))
    .await;
    checks.into_iter().flatten().collect()
}

/// Preflight problems of a rollback: nodes that do not keep its release.
pub async fn missing_releases(
    farm: &Farm,
    settings: &RunSettings,
    selected: &[usize],
) -> Vec<String> {
    let Some(d) = settings
        .deploy
        .as_ref()
        .filter(|_| settings.operation == OperationKind::Rollback)
    else {
        return Vec::new();
    };
    let answers = join_all(selected.iter().map(|&i| farm.agent(i).releases(&d.site))).await;
    selected
        .iter()
        .zip(answers)
        .filter_map(|(&i, answer)| {
            let name = &farm.node(i).name;
            match answer {
                Ok(kept) if kept.iter().any(|r| r.version == d.version) => None,
                Ok(kept) => Some(format!(
                    "{name}: does not keep release {} of site {} (it keeps: {})",
                    d.version,
                    d.site,
                    kept.iter()
                        .map(|r| r.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => Some(format!("{name}: could not list its releases: {e}")),
            }
        })
        .collect()
}

/// After a successful deploy or rollback, each node of the run drops the
/// releases beyond its `deploy.keep` (never the active or previous one).
pub async fn prune(
    farm: &Farm,
    settings: &RunSettings,
    run_id: &str,
    report: &RunReport,
    reporter: &dyn Reporter,
) {
    let Some(d) = &settings.deploy else { return };
    if !report.succeeded() {
        return;
    }
    let nodes: Vec<usize> = settings
        .nodes
        .iter()
        .filter_map(|n| farm.index_of(n))
        .collect();
    let pruned = join_all(nodes.iter().map(|&i| {
        let id = OperationId::new(run_id, &farm.node(i).name, OpStep::Prune).to_string();
        async move { (i, farm.agent(i).prune(&id, &d.site).await) }
    }))
    .await;
    for (i, result) in pruned {
        let name = &farm.node(i).name;
        match result {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => {
                reporter.detail(name, &format!("pruned releases {}", removed.join(", ")))
            }
            Err(e) => reporter.detail(name, &format!("could not prune old releases: {e}")),
        }
    }
}

/// Each node of a deploy's or rollback's report says the release its site
/// is on, those the run never reached too.
pub async fn versions(farm: &Farm, settings: &RunSettings, report: &mut RunReport) {
    let Some(d) = &settings.deploy else { return };
    let unknown: Vec<(usize, usize)> = report
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.version.is_none())
        .filter_map(|(k, n)| Some((k, farm.index_of(&n.name)?)))
        .collect();
    let seen = join_all(unknown.iter().map(|&(_, i)| farm.agent(i).status())).await;
    for ((k, _), view) in unknown.into_iter().zip(seen) {
        report.nodes[k].version = view
            .ok()
            .and_then(|v| v.site(&d.site).and_then(|s| s.release.clone()));
    }
}

/// A resumed deploy that still has nodes to stage needs the very package it
/// started with.
pub fn package_unchanged(settings: &RunSettings) -> Result<(), CommandError> {
    let Some(package) = settings.deploy.as_ref().and_then(|d| d.package.as_ref()) else {
        return Ok(());
    };
    let now = crate::release::read_package(&package.path).map_err(|e| {
        CommandError::bad_input(format!(
            "the run's package is needed for the nodes not staged yet: {e}"
        ))
    })?;
    if now.sha256 != package.sha256 {
        return Err(CommandError::bad_input(format!(
            "{} changed since the run started (sha256 {} then, {} now); the run deploys the package it started with",
            package.path.display(),
            package.sha256,
            now.sha256
        )));
    }
    Ok(())
}
