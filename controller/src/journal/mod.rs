//! The run journal: one JSON line per record under the state directory
//! (`<state>/runs/<run_id>.jsonl`), each on disk before the engine acts on
//! it, so `farmctl resume` can pick a run up after the controller died at
//! any point.
//!
//! Appends go through one writer thread that commits in groups: records
//! that arrive while a flush is under way are written and flushed together,
//! so a hundred nodes at work do not queue a hundred fsyncs behind each
//! other. Records are written in the order they were submitted. [`read`]
//! loads journals back.
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use farm_proto::domain::{OperationKind, Phase};
use serde::{Deserialize, Serialize};

use crate::contract::RunSettings;
use crate::report::RunOutcome;

pub mod read;

pub use read::{
    estimate_from, estimate_per_node, find, list, load, parse, still_running, JournalError,
    LoadedRun,
};

/// The first line: what the run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub run_id: String,
    pub action: OperationKind,
    /// The inventory file the run started from.
    pub inventory: PathBuf,
    pub pools: Vec<String>,
    pub nodes: Vec<String>,
    pub started_at: String,
    pub holder: String,
    /// The controller's process id, so resume can tell whether it is
    /// still running (same host).
    #[serde(default)]
    pub pid: Option<u32>,
    /// The run contract, replayed by `resume`. Absent in journals of older
    /// versions, which cannot be resumed.
    #[serde(default)]
    pub settings: Option<RunSettings>,
}

/// A node entered `phase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub t: String,
    pub node: String,
    pub phase: Phase,
    /// Worker PIDs per pool, recorded when the operation is about to start,
    /// so resume can tell whether it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<BTreeMap<String, Vec<u32>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Worker PIDs per pool after the operation, recorded with `done` (and
    /// with `failed` when the operation ran), so a resumed run's summary
    /// still shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_after: Option<BTreeMap<String, Vec<u32>>>,
    /// Where a failed node failed (`verify`, `quiesce`, ...), kept for a
    /// resumed run's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
}

/// The run ended (absent when the controller died).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    pub t: String,
    pub outcome: RunOutcome,
    pub halted: Option<String>,
}

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Run(Box<Header>),
    Phase(PhaseRecord),
    End(EndRecord),
    /// A judgement of the canaries during the soak.
    Interval(crate::report::IntervalReport),
    /// The canary analysis reached its verdict: a resume acts on it (goes
    /// on, or rolls back), never judges again.
    Verdict(VerdictRecord),
    /// The rollback after a failed verdict finished.
    RolledBack(RolledBackRecord),
    /// What a node's pools were doing before they were recycled.
    Diagnostics(DiagnosticsRecord),
    /// A diagnosed node's traffic after its recycle.
    TrafficAfter(TrafficAfterRecord),
    /// A controller took the run up again (`farmctl resume`).
    Resumed(ResumedRecord),
    /// A node's server is about to be restarted: the boot it is on (a
    /// resume never restarts it again once the boot changed).
    Reboot(RebootRecord),
    /// What a patch or reboot did on a node: its updates, its restart.
    Patched(PatchedRecord),
    /// The memory dumps taken of a node's pools before their recycle.
    Dumps(DumpsRecord),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpsRecord {
    pub t: String,
    pub node: String,
    pub pools: Vec<crate::agent::DumpView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebootRecord {
    pub t: String,
    pub node: String,
    pub boot_before: crate::agent::BootView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchedRecord {
    pub t: String,
    pub node: String,
    #[serde(default)]
    pub updates: Vec<crate::agent::UpdateOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<crate::report::RebootReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumedRecord {
    pub t: String,
    pub holder: String,
    #[serde(default)]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticsRecord {
    pub t: String,
    pub node: String,
    pub pools: Vec<crate::agent::Diagnostics>,
    /// The node's traffic over the window before the recycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<crate::health::NodeTraffic>,
}

/// A diagnosed node's traffic since it returned, at the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficAfterRecord {
    pub t: String,
    pub node: String,
    pub traffic: crate::health::NodeTraffic,
}

/// The verdict of a canary analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub t: String,
    pub verdict: crate::judge::Outcome,
    /// What was decided: `promote` or `roll_back`.
    pub action: VerdictAction,
    pub reason: String,
    pub canaries: Vec<String>,
    /// The release the switched nodes go back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictAction {
    Promote,
    RollBack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledBackRecord {
    pub t: String,
    /// Every switched node serves the earlier release again.
    pub ok: bool,
}

pub use crate::clock::now;

/// `--state-dir`, else `$FARMCTL_STATE_DIR`, else the user's state
/// directory (`~/.local/state/farmctl` on Linux, `%LOCALAPPDATA%\farmctl` on Windows).
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("FARMCTL_STATE_DIR") {
        return PathBuf::from(p);
    }
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("farmctl")
}

pub fn runs_dir(state: &Path) -> PathBuf {
    state.join("runs")
}

/// A line waiting to be written, and who to tell when it is on disk.
pub struct Pending {
    pub line: String,
    pub done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

/// Where records go: the local writer thread, or a store's task.
enum Sink {
    File(mpsc::Sender<Pending>),
    Remote(tokio::sync::mpsc::UnboundedSender<Pending>),
}

pub struct Journal {
    path: PathBuf,
    tx: Sink,
}

impl Journal {
    /// Starts the journal of a new run with its header.
    pub fn create(state: &Path, header: &Header) -> std::io::Result<Journal> {
        let dir = runs_dir(state);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.jsonl", header.run_id));
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let written = serde_json::to_string(&Record::Run(Box::new(header.clone())))
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(file, "{line}"))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // No header, no journal: an empty file would make every later
            // `runs` and `resume` warn about it (a full disk, mostly).
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Journal::start(path, file))
    }

    /// Continues an existing journal (resume). A last line torn by a crash
    /// is ended first, so the next record starts a line of its own.
    pub fn reopen(path: &Path) -> std::io::Result<Journal> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            file.seek(std::io::SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Journal::start(path.to_path_buf(), file))
    }

    fn start(path: PathBuf, file: std::fs::File) -> Journal {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("farmctl-journal".into())
            .spawn(move || write_groups(file, rx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("could not start the journal writer: {e}"));
        Journal {
            path,
            tx: Sink::File(tx),
        }
    }

    /// A journal whose records a store's own task writes (etcd); `path`
    /// names it in messages.
    pub fn remote(path: PathBuf, tx: tokio::sync::mpsc::UnboundedSender<Pending>) -> Journal {
        Journal {
            path,
            tx: Sink::Remote(tx),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands one record to the writer now (it is written after every
    /// record submitted before it); the returned future resolves once it
    /// is on disk.
    pub fn submit(
        &self,
        r: &Record,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + use<> {
        let (done, on_disk) = tokio::sync::oneshot::channel();
        let sent = serde_json::to_string(r)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let p = Pending { line, done };
                let sent = match &self.tx {
                    Sink::File(tx) => tx.send(p).is_ok(),
                    Sink::Remote(tx) => tx.send(p).is_ok(),
                };
                sent.then_some(())
                    .ok_or_else(|| std::io::Error::other("the journal writer stopped"))
            });
        async move {
            sent?;
            on_disk
                .await
                .map_err(|_| std::io::Error::other("the journal writer stopped"))?
        }
    }

    /// Appends one record; resolves once it is on disk.
    pub async fn append(&self, r: &Record) -> std::io::Result<()> {
        self.submit(r).await
    }

    /// A node entered `phase`.
    pub fn phase(
        &self,
        node: &str,
        phase: Phase,
        pids: Option<BTreeMap<String, Vec<u32>>>,
        detail: Option<String>,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + use<> {
        self.phase_record(PhaseRecord {
            t: now(),
            node: node.into(),
            phase,
            pids,
            detail,
            pids_after: None,
            failed_step: None,
        })
    }

    /// A node's phase record as built by the caller (a finished node's
    /// carries the PIDs it runs after the operation).
    pub fn phase_record(
        &self,
        r: PhaseRecord,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + use<> {
        self.submit(&Record::Phase(r))
    }
}

/// The writer thread: takes every line waiting, writes them, flushes once.
fn write_groups(mut file: std::fs::File, rx: mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let mut text = String::new();
        for p in &group {
            text.push_str(&p.line);
            text.push('\n');
        }
        let result = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data());
        for p in group {
            let _ = p.done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}
