//! Releases of a site's content on this node: staged from an uploaded zip
//! ([`stage`]), listed, switched to (the site's root virtual directory is
//! pointed at the release folder, then hooks from this agent's own config
//! run, see [`hooks`]) and pruned.
//!
//! On disk, under the site's releases root:
//! ```text
//! <root>/<site>/<version>/          the release, as the zip had it
//! <root>/<site>/.farm/<version>.json  its sha256, size, when it was staged
//! <root>/<site>/.farm/state.json    what the site served before the last switch
//! <root>/<site>/.farm/upload-*      uploads and extractions under way
//! ```
//! Nothing is ever written outside `<root>/<site>/`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use farm_proto::names::{check_site_name, check_version};
use farm_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::iis::{Iis, IisError};
use crate::runner::CommandRunner;

pub mod hooks;
pub mod stage;

/// `deploy:` in the agent's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Releases go to `<releases_root>/<site>/<version>/`.
    pub releases_root: PathBuf,
    /// Per-site roots that differ from `releases_root`.
    #[serde(default)]
    pub sites: HashMap<String, SiteConfig>,
    /// Releases kept per site by a prune (never fewer than the active and
    /// the previous one).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Hooks the controller may name: argv vectors, never a shell string.
    /// `{site}`, `{version}` and `{path}` (the release folder) are filled in.
    #[serde(default)]
    pub hooks: HashMap<String, hooks::HookConfig>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub releases_root: PathBuf,
}

fn default_keep() -> usize {
    3
}

/// Bounds on what a package may be: anything beyond is refused before a
/// byte is extracted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The zip itself.
    pub max_package_mb: u64,
    /// All files extracted.
    pub max_total_mb: u64,
    /// One file extracted.
    pub max_file_mb: u64,
    pub max_files: usize,
    /// Uncompressed / compressed size of one entry (zip bombs), for entries
    /// over 1 MiB.
    pub max_ratio: u64,
    /// Free disk to leave after the upload and after extracting: a
    /// deployment never fills the disk the sites run from.
    pub min_free_mb: u64,
}

impl Limits {
    /// The package rules of these limits.
    pub fn package(&self) -> farm_proto::package::PackageLimits {
        farm_proto::package::PackageLimits {
            max_files: self.max_files,
            max_file_bytes: self.max_file_mb * MB,
            max_total_bytes: self.max_total_mb * MB,
            max_ratio: self.max_ratio,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_package_mb: 2048,
            max_total_mb: 8192,
            max_file_mb: 2048,
            max_files: 100_000,
            max_ratio: 200,
            min_free_mb: 512,
        }
    }
}

const MB: u64 = 1024 * 1024;

/// Why a deployment call could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Bad names or a bad request: nothing was touched.
    #[error("{0}")]
    Invalid(String),
    /// The package is not acceptable: nothing was kept.
    #[error("{0}")]
    Package(String),
    /// It conflicts with what is on the node (another package under the
    /// same version, not staged, deployments not configured).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Iis(#[from] IisError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DeployError {
    let context = context.into();
    move |source| DeployError::Io { context, source }
}

/// A release's metadata (`.farm/<version>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub files: u64,
    pub bytes: u64,
    /// Unix milliseconds.
    pub staged_at: u64,
}

/// What the site served before the last switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SwitchState {
    /// The physical path it had.
    previous_path: Option<String>,
}

/// Same path, the way Windows compares them: separators and case do not
/// matter, nor a trailing separator.
pub fn same_path(a: &str, b: &str) -> bool {
    let norm = |p: &str| {
        p.replace('/', "\\")
            .trim_end_matches('\\')
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

pub(crate) use crate::state::{unix_ms, write_atomically};

/// A site's releases folder.
pub(crate) struct SiteDir {
    pub dir: PathBuf,
}

impl SiteDir {
    pub fn farm(&self) -> PathBuf {
        self.dir.join(".farm")
    }

    pub fn release(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    pub fn meta_path(&self, version: &str) -> PathBuf {
        self.farm().join(format!("{version}.json"))
    }

    pub fn meta(&self, version: &str) -> Option<ReleaseMeta> {
        let text = std::fs::read_to_string(self.meta_path(version)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every release with its metadata, oldest first.
    pub fn releases(&self) -> Vec<ReleaseMeta> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<ReleaseMeta> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|v| check_version(v).is_ok())
            .filter_map(|v| self.meta(&v))
            .collect();
        out.sort_by(|a, b| (a.staged_at, &a.version).cmp(&(b.staged_at, &b.version)));
        out
    }

    fn state(&self) -> SwitchState {
        std::fs::read_to_string(self.farm().join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn set_state(&self, state: &SwitchState) -> Result<(), DeployError> {
        std::fs::create_dir_all(self.farm()).map_err(io("create the .farm folder"))?;
        let bytes = serde_json::to_vec(state).map_err(|e| io("state")(std::io::Error::other(e)))?;
        write_atomically(&self.farm().join("state.json"), &bytes).map_err(io("write state.json"))
    }

    /// The release `path` is, if it is one of this site's.
    pub fn version_at(&self, path: &str) -> Option<String> {
        self.releases()
            .into_iter()
            .map(|r| r.version)
            .find(|v| same_path(&self.release(v).display().to_string(), path))
    }
}

/// The deployment side of one agent.
pub struct Deployments {
    pub(crate) cfg: DeployConfig,
    pub(crate) iis: Arc<dyn Iis>,
    pub(crate) runner: Arc<dyn CommandRunner>,
    /// Site/version pairs being staged now.
    pub(crate) staging: stage::Staging,
}

impl Deployments {
    pub fn new(cfg: DeployConfig, iis: Arc<dyn Iis>, runner: Arc<dyn CommandRunner>) -> Self {
        Self {
            cfg,
            iis,
            runner,
            staging: Default::default(),
        }
    }

    pub(crate) fn site_dir(&self, site: &str) -> Result<SiteDir, DeployError> {
        check_site_name(site).map_err(|e| DeployError::Invalid(format!("site {site:?}: {e}")))?;
        let root = self
            .cfg
            .sites
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(site))
            .map(|(_, c)| c.releases_root.clone())
            .unwrap_or_else(|| self.cfg.releases_root.join(site));
        Ok(SiteDir { dir: root })
    }

    /// The release a site's physical path is, if any (for Status).
    pub fn release_of(&self, site: &str, physical_path: &str) -> Option<String> {
        self.site_dir(site).ok()?.version_at(physical_path)
    }

    pub async fn releases(&self, site: &str) -> Result<pb::ReleasesReply, DeployError> {
        let dir = self.site_dir(site)?;
        let active = self.iis.site_path(site).await?;
        let previous = dir.state().previous_path.unwrap_or_default();
        let releases = dir
            .releases()
            .into_iter()
            .map(|r| {
                let path = dir.release(&r.version).display().to_string();
                pb::Release {
                    active: same_path(&path, &active),
                    previous: !previous.is_empty() && same_path(&path, &previous),
                    version: r.version,
                    sha256: r.sha256,
                    path,
                }
            })
            .collect();
        Ok(pb::ReleasesReply {
            releases,
            active_path: active,
        })
    }

    /// Points `site` at release `version` (or, with `back`, from release
    /// `version` to what it served before the last switch) and runs
    /// `hooks`. A hook that fails switches the site back before this
    /// returns. Repeating either is harmless: a site already on the target,
    /// or no longer on the release a `back` leaves, is left as it is.
    pub async fn switch(&self, req: &pb::SwitchRequest) -> Result<pb::SwitchReply, DeployError> {
        let dir = self.site_dir(&req.site)?;
        let hooks = self.hooks_named(&req.hooks)?;
        let current = self.iis.site_path(&req.site).await?;
        let previous_label = dir.version_at(&current).unwrap_or_else(|| current.clone());
        if req.back
            && !req.version.is_empty()
            && !same_path(&current, &dir.release(&req.version).display().to_string())
        {
            return Ok(pb::SwitchReply {
                previous: previous_label.clone(),
                version: previous_label,
                path: current,
                unchanged: true,
                hooks: Vec::new(),
            });
        }
        let (target, version) = if req.back {
            let Some(previous) = dir.state().previous_path else {
                return Err(DeployError::NotFound(format!(
                    "site {} has no earlier release recorded to switch back to",
                    req.site
                )));
            };
            let version = dir.version_at(&previous).unwrap_or_default();
            (previous, version)
        } else {
            check_version(&req.version).map_err(|e| DeployError::Invalid(e.to_string()))?;
            if dir.meta(&req.version).is_none() || !dir.release(&req.version).is_dir() {
                return Err(DeployError::NotFound(format!(
                    "release {} of site {} is not staged on this node",
                    req.version, req.site
                )));
            }
            (
                dir.release(&req.version).display().to_string(),
                req.version.clone(),
            )
        };
        if same_path(&current, &target) {
            return Ok(pb::SwitchReply {
                previous: previous_label,
                version,
                path: target,
                unchanged: true,
                hooks: Vec::new(),
            });
        }
        let before = dir.state();
        dir.set_state(&SwitchState {
            previous_path: Some(current.clone()),
        })?;
        if let Err(e) = self.iis.set_site_path(&req.site, &target).await {
            let _ = dir.set_state(&before);
            return Err(e.into());
        }
        let ran = hooks::run_all(&*self.runner, &hooks, &req.site, &version, &target).await;
        if let Some(failed) = ran.iter().find(|h| h.exit_code != 0) {
            // Leave the node as it was: the site serves what it did before.
            let back = self.iis.set_site_path(&req.site, &current).await;
            let _ = dir.set_state(&before);
            return Err(DeployError::Conflict(format!(
                "hook `{}` failed (exit code {}) after switching site {} to {version}; {}: {}",
                failed.name,
                failed.exit_code,
                req.site,
                match back {
                    Ok(()) => "switched back".to_string(),
                    Err(e) => format!("could NOT switch back ({e})"),
                },
                failed.output.trim()
            )));
        }
        Ok(pb::SwitchReply {
            previous: previous_label,
            version,
            path: target,
            unchanged: false,
            hooks: ran,
        })
    }

    fn hooks_named(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, hooks::HookConfig)>, DeployError> {
        names
            .iter()
            .map(|n| {
                self.cfg
                    .hooks
                    .get(n)
                    .map(|h| (n.clone(), h.clone()))
                    .ok_or_else(|| {
                        DeployError::Invalid(format!(
                            "hook `{}` is not defined in this agent's config (deploy.hooks)",
                            n.escape_debug()
                        ))
                    })
            })
            .collect()
    }

    /// Removes releases beyond `keep`, oldest first, never the active or the
    /// previous one.
    pub async fn prune(&self, site: &str) -> Result<pb::PruneReply, DeployError> {
        let dir = self.site_dir(site)?;
        let active = self.iis.site_path(site).await?;
        let previous = dir.state().previous_path.unwrap_or_default();
        let releases = dir.releases();
        let excess = releases.len().saturating_sub(self.cfg.keep.max(2));
        let mut removed = Vec::new();
        for r in releases.iter().take(excess) {
            let path = dir.release(&r.version);
            let p = path.display().to_string();
            if same_path(&p, &active) || same_path(&p, &previous) {
                continue;
            }
            std::fs::remove_dir_all(&path).map_err(io(format!("remove {}", path.display())))?;
            let _ = std::fs::remove_file(dir.meta_path(&r.version));
            removed.push(r.version.clone());
        }
        Ok(pb::PruneReply { removed })
    }
}

/// A duration for messages and timeouts in hook configs.
pub(crate) fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compare_the_windows_way() {
        assert!(same_path(r"D:\Sites\Shop\2.0.0", r"d:/sites/shop/2.0.0/"));
        assert!(!same_path(r"D:\sites\shop\2.0.0", r"D:\sites\shop\2.0.1"));
    }
}
