//! Staging a release: the upload is written to a scratch file under the
//! site's `.farm` folder while its sha256 is computed; once whole, size
//! and hash are checked, then every entry of the zip is checked (names,
//! links, sizes, compression ratio, count) before anything is extracted;
//! extraction goes to a scratch folder that is renamed into place. Any
//! failure removes what was written. Nothing is written outside
//! `<root>/<site>/`.
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use farm_proto::names::check_version;
use farm_proto::v1 as pb;
use sha2::{Digest, Sha256};

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

/// Holds a site/version pair as being staged.
struct StagingLock {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
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

/// Free bytes where `path` is (or would be).
fn available(path: &Path) -> u64 {
    path.ancestors()
        .find(|p| p.exists())
        .and_then(|p| fs4::available_space(p).ok())
        .unwrap_or(u64::MAX)
}

impl Deployments {
    /// Checks an upload's header and opens its scratch file.
    pub async fn begin_stage(&self, h: &pb::StageHeader) -> Result<Begun, DeployError> {
        let dir = self.site_dir(&h.site)?;
        check_version(&h.version).map_err(DeployError::Invalid)?;
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
        let key = (h.site.to_ascii_lowercase(), h.version.clone());
        {
            let mut set = self.staging.lock().unwrap_or_else(|e| e.into_inner());
            if !set.insert(key.clone()) {
                return Err(DeployError::Conflict(format!(
                    "release {} of site {} is being staged by another call",
                    h.version, h.site
                )));
            }
        }
        let lock = StagingLock {
            set: self.staging.clone(),
            key,
        };
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
        let scratch = dir
            .farm()
            .join(format!("upload-{}-{}.zip", h.version, uuid_like()));
        let file = tokio::fs::File::create(&scratch)
            .await
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

    /// The upload is complete: checks it, extracts it, puts it in place.
    pub async fn finish(mut self) -> Result<pb::StageReply, DeployError> {
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
        let limits = self.limits.clone();
        let site_dir = self.dir.dir.clone();
        let extracted = tokio::task::spawn_blocking(move || {
            let result = unpack(&zip, &partial, &site_dir, &limits).and_then(|counts| {
                std::fs::rename(&partial, &target)
                    .map(|()| counts)
                    .map_err(io(format!("rename into {}", target.display())))
            });
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            result
        })
        .await
        .map_err(|e| DeployError::Invalid(format!("extraction task failed: {e}")))??;
        let meta = ReleaseMeta {
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            files: extracted.0,
            bytes: extracted.1,
            staged_at: super::unix_ms(),
        };
        let bytes =
            serde_json::to_vec(&meta).map_err(|e| io("metadata")(std::io::Error::other(e)))?;
        if let Err(e) = write_atomically(&self.dir.meta_path(&self.version), &bytes) {
            let _ = std::fs::remove_dir_all(self.dir.release(&self.version));
            return Err(io("write the release metadata")(e));
        }
        Ok(pb::StageReply {
            already_staged: false,
            path: self.dir.release(&self.version).display().to_string(),
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
