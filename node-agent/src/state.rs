//! The agent's state directory: what must outlive the agent process (a
//! service restart, a Windows Update reboot).
//!
//! - `ops/<id>.json`: one file per operation id — when it started, and
//!   its result once finished — so an id asked again after a restart is
//!   answered from the record instead of acting twice;
//! - `lease.json`: the lease (holder, run, reason, expiry) and the run
//!   that drained the node, so a restarted agent still refuses other
//!   runs and its dead-man switch still fires for a lease that ran out
//!   while it was down.
//!
//! Every file is written whole through a temporary file and a rename: a
//! crash leaves the old content or the new, never half of it.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `%ProgramData%\farm-agent` on Windows; elsewhere there is no default
/// (state is kept in memory unless `--state-dir` or `state_dir` says where).
pub fn default_dir() -> Option<PathBuf> {
    if cfg!(windows) {
        let data = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        Some(PathBuf::from(data).join("farm-agent"))
    } else {
        None
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// crash leaves the old content or the new, never half of it.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Free bytes where `path` is (or would be: its nearest existing
/// ancestor); unknown counts as plenty.
pub(crate) fn available(path: &Path) -> u64 {
    path.ancestors()
        .find(|p| p.exists())
        .and_then(|p| fs4::available_space(p).ok())
        .unwrap_or(u64::MAX)
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// One operation id, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpRecord {
    pub id: String,
    pub kind: farm_proto::domain::CallKind,
    pub started_unix_ms: u64,
    /// Absent while the operation runs (or when the agent stopped in the
    /// middle of it).
    #[serde(default)]
    pub finished_unix_ms: Option<u64>,
    /// The result as sent to the controller: `<kind>:<protobuf in hex>`.
    #[serde(default)]
    pub result: Option<String>,
}

/// The lease as recorded (times as Unix milliseconds: a reboot resets
/// the monotonic clock).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    #[serde(default)]
    pub lease: Option<HeldRecord>,
    /// The run whose operation drained the node.
    #[serde(default)]
    pub drained_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeldRecord {
    pub holder: String,
    pub run_id: String,
    pub reason: String,
    pub acquired_unix_ms: u64,
    pub expires_unix_ms: u64,
}

/// The state directory. Errors writing it are logged, not fatal: the
/// agent keeps serving from memory and says so.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    /// Held locked while the agent runs: one agent per state directory.
    _lock: std::fs::File,
}

/// Another agent holds the state directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "the state directory {} is in use by another farm-agent ({}): one agent per state directory — stop that one, or give this one its own --state-dir",
    dir.display(),
    match pid { Some(p) => format!("PID {p}"), None => "PID unknown".into() }
)]
pub struct InUse {
    pub dir: PathBuf,
    pub pid: Option<u32>,
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    InUse(#[from] InUse),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const LOCK_FILE: &str = "agent.lock";

const LEASE_FILE: &str = "lease.json";
const OPS: &str = "ops";

impl StateDir {
    /// Opens (creating) the directory and checks it can be written.
    /// Takes the directory's lock first: a second agent on the same
    /// directory is refused ([`InUse`]) before it reads or writes anything.
    /// Temporary files left by a write a crash cut are removed.
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(root.join(OPS))?;
        let lock = Self::lock(root)?;
        let probe = root.join(".write-check");
        write_atomically(&probe, b"ok")?;
        let _ = std::fs::remove_file(&probe);
        if let Ok(dir) = std::fs::read_dir(root) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().contains(".tmp-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// The exclusive lock on `root/agent.lock`, holding our PID.
    fn lock(root: &Path) -> Result<std::fs::File, OpenError> {
        use std::io::{Read, Seek, Write};
        let path = root.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // Named in full: newer std has an inherent `File::try_lock` of its
        // own, the Windows build's older toolchain does not.
        if fs4::FileExt::try_lock(&file).is_err() {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(InUse {
                dir: root.to_path_buf(),
                pid: text.trim().parse().ok(),
            }
            .into());
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(file)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An operation id as a file name (`:` is not allowed on Windows and
    /// `+` is not allowed in ids).
    fn op_path(&self, id: &str) -> PathBuf {
        self.root
            .join(OPS)
            .join(format!("{}.json", id.replace(':', "+")))
    }

    pub fn save_op(&self, rec: &OpRecord) {
        self.save(
            &self.op_path(&rec.id),
            rec,
            &format!("operation {}", rec.id),
        );
    }

    /// Writes `value` as JSON to `path`; a failure is logged (the agent
    /// goes on from memory), naming `what` a restart would forget.
    fn save(&self, path: &Path, value: &impl Serialize, what: &str) {
        let written = serde_json::to_vec_pretty(value)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomically(path, &json));
        if let Err(e) = written {
            tracing::error!(
                "could not record {what} in {}: {e}; a restart of the agent would forget it",
                path.display()
            );
        }
    }

    pub fn remove_op(&self, id: &str) {
        let _ = std::fs::remove_file(self.op_path(id));
    }

    /// Every readable record, oldest first. Unreadable ones are reported
    /// and set aside (renamed `*.bad`), never silently dropped.
    pub fn load_ops(&self) -> Vec<OpRecord> {
        let Ok(dir) = std::fs::read_dir(self.root.join(OPS)) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                // Leftover temporary files of a write cut by a crash.
                if path.to_string_lossy().contains(".tmp-") {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<OpRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::error!(
                        "operation record {} is unreadable ({e}); set aside",
                        path.display()
                    );
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        records.sort_by_key(|r| (r.finished_unix_ms.unwrap_or(u64::MAX), r.started_unix_ms));
        records
    }

    pub fn save_lease(&self, rec: &LeaseRecord) {
        self.save(&self.root.join(LEASE_FILE), rec, "the lease");
    }

    pub fn load_lease(&self) -> LeaseRecord {
        let path = self.root.join(LEASE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(
                    "{} is unreadable ({e}); starting with no lease",
                    path.display()
                );
                LeaseRecord::default()
            }),
            Err(_) => LeaseRecord::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::Stored;
    use farm_proto::v1 as pb;

    #[test]
    fn records_round_trip_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut rec = OpRecord {
            id: "run1:web01.recycle".into(),
            kind: farm_proto::domain::CallKind::Recycle,
            started_unix_ms: 5,
            finished_unix_ms: None,
            result: None,
        };
        state.save_op(&rec);
        let result = Stored::Operation(pb::OperationResult {
            success: true,
            ..Default::default()
        });
        rec.set_stored(&result);
        rec.finished_unix_ms = Some(9);
        state.save_op(&rec);
        std::fs::write(dir.path().join(OPS).join("torn.json"), b"{\"id\":").unwrap();
        let loaded = state.load_ops();
        assert_eq!(loaded, vec![rec.clone()]);
        assert_eq!(loaded[0].stored(), Some(result));
        assert!(dir.path().join(OPS).join("torn.bad").exists());

        let lease = LeaseRecord {
            lease: Some(HeldRecord {
                holder: "ops@ctl".into(),
                run_id: "run1".into(),
                reason: "patch".into(),
                acquired_unix_ms: 1,
                expires_unix_ms: 2,
            }),
            drained_by: Some("run1".into()),
        };
        state.save_lease(&lease);
        // A restarted agent reads it back (the first one gone).
        drop(state);
        assert_eq!(StateDir::open(dir.path()).unwrap().load_lease(), lease);
    }

    #[test]
    fn a_second_agent_on_the_same_directory_is_refused_and_a_crash_leftover_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lease.tmp-4242"), b"half").unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        assert!(!dir.path().join("lease.tmp-4242").exists());
        let err = StateDir::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, OpenError::InUse(_)), "{text}");
        assert!(
            text.contains(&dir.path().display().to_string())
                && text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        drop(first);
        StateDir::open(dir.path()).unwrap();
    }
}
