//! Releases in the sandbox: the site's content for a version, a release
//! package made from it, and the farm handed over already serving
//! [`FIRST_RELEASE`] through the agents' own Stage and Switch calls.
use std::path::{Path, PathBuf};
use std::time::Duration;

use farm_proto::domain::{OpStep, OperationId};

use super::{SandboxError, SandboxNode, FIRST_RELEASE, SITE};
use crate::agent::SwitchTo;
use crate::farm::{Farm, Transport};

/// The site's files for `version`: what the version probe reads and a page.
fn content(version: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("version.txt", version.as_bytes().to_vec()),
        (
            "index.html",
            format!("<!doctype html><title>shop</title><h1>shop {version}</h1>\n").into_bytes(),
        ),
    ]
}

/// Writes the site's files for `version` into `dir`.
pub(super) fn write_content(dir: &Path, version: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in content(version) {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// A release package of the sandbox site for `version`, written into `dir`.
pub fn release_package(dir: &Path, version: &str) -> std::io::Result<PathBuf> {
    let files = content(version);
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    crate::release::write_package(&dir.join(format!("release-{version}.zip")), &entries)
}

/// A release package of `version` that misbehaves in the simulator: its
/// `farm-sim.yaml` (the `faults` keys of a sim pool: `error_rate`,
/// `error_status`, `extra_latency`, `hang_rate`) applies while a site
/// serves it.
pub fn faulty_release_package(dir: &Path, version: &str, faults: &str) -> std::io::Result<PathBuf> {
    let mut files = content(version);
    files.push(("farm-sim.yaml", faults.as_bytes().to_vec()));
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    crate::release::write_package(&dir.join(format!("release-{version}.zip")), &entries)
}

/// Stages [`FIRST_RELEASE`] on every node and switches the site to it, then
/// empties the event logs: tests see only what happens after the hand-over.
pub(super) async fn seed(
    dir: &Path,
    inventory: &Path,
    nodes: &[SandboxNode],
) -> Result<(), SandboxError> {
    let fail = |node: &str, detail: String| SandboxError::Seed {
        node: node.to_string(),
        detail,
    };
    let inv = farm_inventory::load(inventory).map_err(|e| fail("the farm", e.to_string()))?;
    let farm = Farm::connect(inv, Transport::Tls).map_err(|e| fail("the farm", e.to_string()))?;
    let path = release_package(dir, FIRST_RELEASE)
        .map_err(|e| fail("the farm", format!("could not write the package: {e}")))?;
    let package =
        crate::release::read_package(&path).map_err(|e| fail("the farm", e.to_string()))?;
    let seeded = futures::future::join_all((0..nodes.len()).map(|i| {
        let name = farm.node(i).name.clone();
        let package = &package;
        let agent = farm.agent(i);
        async move {
            let op = |step| OperationId::new("sandbox", &name, step).to_string();
            agent
                .stage(
                    &op(OpStep::Stage),
                    SITE,
                    FIRST_RELEASE,
                    package,
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| fail(&name, format!("stage: {e}")))?;
            let to = SwitchTo {
                site: SITE.into(),
                version: FIRST_RELEASE.into(),
                hooks: Vec::new(),
                back: false,
            };
            agent
                .switch(&op(OpStep::Switch), &to)
                .await
                .map_err(|e| fail(&name, format!("switch: {e}")))?;
            Ok::<_, SandboxError>(())
        }
    }))
    .await;
    seeded.into_iter().collect::<Result<Vec<_>, _>>()?;
    for n in nodes {
        // The agent appends; emptying the file keeps its handle valid.
        std::fs::File::create(&n.event_log).map_err(super::io("empty an event log"))?;
    }
    Ok(())
}
