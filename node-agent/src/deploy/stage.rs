//! Staging a release: the upload is written to a scratch file under the
//! site's `.farm` folder while its sha256 is computed; once whole, size
//! and hash are checked, then every entry of the zip is checked (names,
//! links, sizes, compression ratio, count) before anything is extracted;
//! extraction goes to a scratch folder that is renamed into place. Any
//! failure removes what was written. Nothing is written outside
//! `<root>/<site>/`.
use crate::state::available;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use farm_proto::names::check_version;
use farm_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{io, write_atomically, DeployError, Deployments, Limits, ReleaseMeta, SiteDir, MB};

/// What the header of an upload leads to.
pub enum Begun {
    /// The same version with the same package is there: nothing to upload.
    Already(pb::StageReply),
    Upload(Box<Upload>),
}

/// An upload under way. Dropped before [`Upload::finish`], it removes its
/// scratch file.
pub struct Upload {
    dir: SiteDir,
    version: String,
    sha256: String,
    size: u64,
    limits: Limits,
    file: Option<tokio::fs::File>,
    scratch: PathBuf,
    hasher: Sha256,
    received: u64,
    _lock: StagingLock,
}

/// Site/version pairs being staged now, each with what its waiters watch.
pub(crate) type Staging = Arc<Mutex<HashMap<(String, String), watch::Receiver<()>>>>;

/// Holds a site/version pair as being staged; dropped, it lets the next
/// caller in.
struct StagingLock {
    set: Staging,
    key: (String, String),
    _done: watch::Sender<()>,
}

impl Drop for StagingLock {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.scratch);
    }
}

fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl Deployments {
    /// Checks an upload's header and opens its scratch file.
    /// Claims `site`/`version` for staging, waiting while another call has
    /// it.
    async fn claim(&self, site: &str, version: &str) -> StagingLock {
        let key = (site.to_ascii_lowercase(), version.to_ascii_lowercase());
        loop {
            let mut busy = {
                let mut set = self.staging.lock().unwrap_or_else(|e| e.into_inner());
                match set.get(&key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (done, rx) = watch::channel(());
                        set.insert(key.clone(), rx);
                        return StagingLock {
                            set: self.staging.clone(),
                            key,
                            _done: done,
                        };
                    }
                }
            };
            // Resolves when the holder drops its lock.
            let _ = busy.changed().await;
        }
    }

    pub async fn begin_stage(&self, h: &pb::StageHeader) -> Result<Begun, DeployError> {
        let dir = self.site_dir(&h.site)?;
        check_version(&h.version).map_err(|e| DeployError::Invalid(e.to_string()))?;
        let sha256 = h.sha256.to_ascii_lowercase();
        if !valid_sha256(&sha256) {
            return Err(DeployError::Invalid(
                "sha256 must be 64 hex characters".into(),
            ));
        }
        let limits = self.cfg.limits.clone();
        if h.size == 0 || h.size > limits.max_package_mb * MB {
            return Err(DeployError::Package(format!(
                "the package is {} bytes; this agent takes 1 byte to {} MiB (deploy.limits.max_package_mb)",
                h.size, limits.max_package_mb
            )));
        }
        // One staging per site and version at a time; a second waits for
        // the first (a resumed controller's call while its killed
        // predecessor's extraction finishes), then finds it staged.
        let lock = self.claim(&h.site, &h.version).await;
        if dir.meta(&h.version).is_some() && !dir.release(&h.version).exists() {
            // The metadata goes in place before the folder (see `finish`):
            // alone, it is what a staging cut short left behind.
            std::fs::remove_file(dir.meta_path(&h.version))
                .map_err(io("remove the metadata of an unfinished staging"))?;
        }
        if let Some(meta) = dir.meta(&h.version) {
            return if meta.sha256 == sha256 && dir.release(&h.version).is_dir() {
                Ok(Begun::Already(pb::StageReply {
                    already_staged: true,
                    path: dir.release(&h.version).display().to_string(),
                    files: meta.files,
                    bytes: meta.bytes,
                }))
            } else {
                Err(DeployError::Conflict(format!(
                    "release {} of site {} is already staged from another package (sha256 {}); \
                     give this one a new version",
                    h.version, h.site, meta.sha256
                )))
            };
        }
        if dir.release(&h.version).exists() {
            return Err(DeployError::Conflict(format!(
                "{} exists but is not a release staged by farm-agent; not touching it",
                dir.release(&h.version).display()
            )));
        }
        let needed = h.size.saturating_add(limits.min_free_mb * MB);
        if available(&dir.dir) < needed {
            return Err(DeployError::Package(format!(
                "not enough free disk under {} for the {} byte package and {} MiB to spare (deploy.limits.min_free_mb)",
                dir.dir.display(),
                h.size,
                limits.min_free_mb
            )));
        }
        std::fs::create_dir_all(dir.farm())
            .map_err(io(format!("create {}", dir.farm().display())))?;
        // This version is ours: what an earlier staging of it left (an
        // agent killed half-way) goes.
        sweep(&dir.farm(), &h.version);
        let scratch = dir
            .farm()
            .join(format!("upload-{}-{}.zip", h.version, uuid_like()));
        // Created and owned with no await in between: a call dropped here
        // leaves no file behind.
        let file = std::fs::File::create(&scratch)
            .map(tokio::fs::File::from_std)
            .map_err(io(format!("create {}", scratch.display())))?;
        Ok(Begun::Upload(Box::new(Upload {
            dir,
            version: h.version.clone(),
            sha256,
            size: h.size,
            limits,
            file: Some(file),
            scratch,
            hasher: Sha256::new(),
            received: 0,
            _lock: lock,
        })))
    }
}

/// Removes the scratch files and folders of earlier stagings of
/// `version` (`upload-<version>-<pid>-<n>.zip`, `extract-<version>-...`).
fn sweep(farm: &Path, version: &str) {
    let Ok(entries) = std::fs::read_dir(farm) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = ["upload-", "extract-"].iter().any(|kind| {
            name.strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix(version))
                .and_then(|rest| rest.strip_prefix('-'))
                .map(|rest| rest.trim_end_matches(".zip"))
                .is_some_and(is_unique_part)
        });
        if ours {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// `<pid>-<hex>`, as [`uuid_like`] makes it.
fn is_unique_part(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(pid), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A name unique enough for scratch files.
fn uuid_like() -> String {
    format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

impl Upload {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DeployError> {
        use tokio::io::AsyncWriteExt;
        self.received += data.len() as u64;
        if self.received > self.size {
            return Err(DeployError::Package(format!(
                "the upload is longer than the {} bytes its header announced",
                self.size
            )));
        }
        self.hasher.update(data);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| DeployError::Invalid("upload closed".into()))?;
        file.write_all(data)
            .await
            .map_err(io(format!("write {}", self.scratch.display())))
    }

    /// The upload is complete: checks it, extracts it, puts it in place —
    /// in a task of its own, so it runs to the end even when the caller
    /// is dropped half-way (its client went away once every byte was in).
    pub async fn finish(self) -> Result<pb::StageReply, DeployError> {
        tokio::spawn(self.complete())
            .await
            .map_err(|e| DeployError::Invalid(format!("staging task failed: {e}")))?
    }

    async fn complete(mut self) -> Result<pb::StageReply, DeployError> {
        use tokio::io::AsyncWriteExt;
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(io("flush the upload"))?;
            f.sync_all().await.map_err(io("flush the upload"))?;
        }
        if self.received != self.size {
            return Err(DeployError::Package(format!(
                "the upload stopped after {} of {} bytes",
                self.received, self.size
            )));
        }
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if got != self.sha256 {
            return Err(DeployError::Package(format!(
                "sha256 mismatch: the header says {}, the bytes received are {got}",
                self.sha256
            )));
        }
        let zip = self.scratch.clone();
        let target = self.dir.release(&self.version);
        let partial = self
            .dir
            .farm()
            .join(format!("extract-{}-{}", self.version, uuid_like()));
        let meta_path = self.dir.meta_path(&self.version);
        let limits = self.limits.clone();
        let site_dir = self.dir.dir.clone();
        let (version, sha256, size) = (self.version.clone(), self.sha256.clone(), self.size);
        let path = target.display().to_string();
        // One blocking task from extraction to the release in place: it
        // runs to the end even when the caller goes away half-way. The
        // metadata is written before the folder is renamed into place, so
        // a release folder always has its metadata (and metadata without
        // its folder is known for what it is: an unfinished staging). The
        // upload goes with the task: its scratch file and its claim on the
        // version last until the task is done.
        let upload = self;
        let meta = tokio::task::spawn_blocking(move || {
            let _upload = upload;
            let result = unpack(&zip, &partial, &site_dir, &limits).and_then(|(files, bytes)| {
                let meta = ReleaseMeta {
                    version,
                    sha256,
                    size,
                    files,
                    bytes,
                    staged_at: super::unix_ms(),
                };
                let json = serde_json::to_vec(&meta)
                    .map_err(|e| io("metadata")(std::io::Error::other(e)))?;
                write_atomically(&meta_path, &json).map_err(io("write the release metadata"))?;
                std::fs::rename(&partial, &target).map_err(|e| {
                    let _ = std::fs::remove_file(&meta_path);
                    io(format!("rename into {}", target.display()))(e)
                })?;
                Ok(meta)
            });
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            result
        })
        .await
        .map_err(|e| DeployError::Invalid(format!("extraction task failed: {e}")))??;
        Ok(pb::StageReply {
            already_staged: false,
            path,
            files: meta.files,
            bytes: meta.bytes,
        })
    }
}

/// Checks every entry of `zip`, then extracts it into `dest` (created
/// here). Returns (files, bytes).
fn unpack(
    zip: &Path,
    dest: &Path,
    site_dir: &Path,
    limits: &Limits,
) -> Result<(u64, u64), DeployError> {
    let bad = |m: String| DeployError::Package(m);
    let file = std::fs::File::open(zip).map_err(io("open the upload"))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| bad(format!("the package is not a zip file: {e}")))?;
    // First every entry, from the central directory: nothing is extracted
    // from a package that has one bad entry.
    let total = farm_proto::package::inspect(&mut archive, &limits.package())
        .map_err(|e| bad(format!("{e} (deploy.limits)")))?
        .bytes;
    if available(site_dir) < total.saturating_add(limits.min_free_mb * MB) {
        return Err(bad(format!(
            "not enough free disk under {} to extract {total} bytes and keep {} MiB free (deploy.limits.min_free_mb)",
            site_dir.display(),
            limits.min_free_mb
        )));
    }
    std::fs::create_dir_all(dest).map_err(io(format!("create {}", dest.display())))?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for i in 0..archive.len() {
        let mut e = archive
            .by_index(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        let rel = e
            .enclosed_name()
            .ok_or_else(|| bad(format!("entry {i} would land outside the release folder")))?;
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(bad(format!(
                "entry `{}` is not a plain relative path",
                rel.display()
            )));
        }
        let path = dest.join(&rel);
        if e.is_dir() {
            std::fs::create_dir_all(&path).map_err(io(format!("create {}", path.display())))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        let declared = e.size();
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        // A header that under-declares its size gets one byte over, and is
        // caught.
        let written = std::io::copy(&mut (&mut e).take(declared + 1), &mut out)
            .map_err(|err| bad(format!("entry `{}`: {err}", rel.display())))?;
        if written != declared {
            return Err(bad(format!(
                "entry `{}` holds {written} bytes, not the {declared} its header says",
                rel.display()
            )));
        }
        out.flush()
            .map_err(io(format!("write {}", path.display())))?;
        files += 1;
        bytes += written;
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::sweep;

    #[test]
    fn sweep_takes_only_the_leftovers_of_its_own_version() {
        let d = tempfile::tempdir().unwrap();
        let names = [
            "upload-2.0.0-123-1a2b.zip",
            "extract-2.0.0-123-1a2b",
            "upload-2.0.0-1-456-ff.zip",
            "extract-2.0.0-rc1-9-ab",
            "2.0.0.json",
            "state.json",
        ];
        for n in names {
            if n.starts_with("extract") {
                std::fs::create_dir(d.path().join(n)).unwrap();
            } else {
                std::fs::write(d.path().join(n), b"x").unwrap();
            }
        }
        sweep(d.path(), "2.0.0");
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "2.0.0.json",
                "extract-2.0.0-rc1-9-ab",
                "state.json",
                "upload-2.0.0-1-456-ff.zip"
            ]
        );
    }
}
