//! The run journal: one JSON line per record under the state directory
//! (`<state>/runs/<run_id>.jsonl`), each appended and flushed to disk
//! before the engine acts on it, so `farmctl resume` can pick a run up
//! after the controller died at any point.
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first line: what the run is.
    Run {
        run_id: String,
        action: String,
        inventory: PathBuf,
        pools: Vec<String>,
        nodes: Vec<String>,
        max_unavailable: Option<String>,
        started_at: String,
        holder: String,
        /// The controller's process id, so resume can tell whether it is
        /// still running (same host).
        #[serde(default)]
        pid: Option<u32>,
    },
    /// A node entered `phase`. `pids` (per pool) are recorded when the
    /// operation is about to start, so resume can tell whether it ran.
    Phase {
        t: String,
        node: String,
        phase: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pids: Option<BTreeMap<String, Vec<u32>>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The run ended (absent when the controller died).
    End {
        t: String,
        outcome: String,
        halted: Option<String>,
    },
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// `--state-dir`, else `$FARMCTL_STATE_DIR`, else the user's state
/// directory (`~/.local/state/farmctl` on Linux).
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

fn runs_dir(state: &Path) -> PathBuf {
    state.join("runs")
}

impl Journal {
    /// Starts the journal of a new run with its header.
    pub fn create(state: &Path, header: &Record) -> std::io::Result<Journal> {
        let Record::Run { run_id, .. } = header else {
            return Err(std::io::Error::other("a journal starts with a run record"));
        };
        let dir = runs_dir(state);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{run_id}.jsonl"));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let j = Journal {
            path,
            file: Mutex::new(file),
        };
        j.append(header)?;
        Ok(j)
    }

    /// Continues an existing journal (resume).
    pub fn reopen(path: &Path) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&self, r: &Record) -> std::io::Result<()> {
        let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(f, "{line}")?;
        f.sync_data()
    }

    pub fn phase(
        &self,
        node: &str,
        phase: &str,
        pids: Option<BTreeMap<String, Vec<u32>>>,
        detail: Option<String>,
    ) -> std::io::Result<()> {
        self.append(&Record::Phase {
            t: now(),
            node: node.into(),
            phase: phase.into(),
            pids,
            detail,
        })
    }
}

/// A journal read back.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub path: PathBuf,
    pub header: Record,
    /// Each node's last phase record.
    pub last: BTreeMap<String, Record>,
    /// The last `pids` recorded per node (entering `operating`).
    pub pids: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    pub end: Option<Record>,
    /// Seconds from a node's first phase to its `done`, per finished node.
    pub node_seconds: Vec<f64>,
}

impl LoadedRun {
    pub fn run_id(&self) -> &str {
        match &self.header {
            Record::Run { run_id, .. } => run_id,
            _ => "",
        }
    }

    /// `succeeded`, `failed`, `interrupted`, or `unfinished` (no end line:
    /// the controller died or is still running).
    pub fn outcome(&self) -> String {
        match &self.end {
            Some(Record::End { outcome, .. }) => outcome.clone(),
            _ => "unfinished".into(),
        }
    }
}

/// Reads a journal; a torn last line (the controller died mid-write) is
/// ignored.
pub fn load(path: &Path) -> Result<LoadedRun, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header = None;
    let mut last = BTreeMap::new();
    let mut pids = BTreeMap::new();
    let mut first_seen: BTreeMap<String, std::time::SystemTime> = BTreeMap::new();
    let mut node_seconds = Vec::new();
    let mut end = None;
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let Ok(rec) = serde_json::from_str::<Record>(&line) else {
            continue;
        };
        match &rec {
            Record::Run { .. } => header = Some(rec.clone()),
            Record::Phase {
                node,
                pids: p,
                t,
                phase,
                ..
            } => {
                if let Some(p) = p {
                    pids.insert(node.clone(), p.clone());
                }
                if let Ok(at) = humantime::parse_rfc3339(t) {
                    let first = *first_seen.entry(node.clone()).or_insert(at);
                    if phase == "done" {
                        node_seconds
                            .push(at.duration_since(first).unwrap_or_default().as_secs_f64());
                    }
                }
                last.insert(node.clone(), rec.clone());
            }
            Record::End { .. } => end = Some(rec.clone()),
        }
    }
    let header = header.ok_or_else(|| format!("{} has no run header", path.display()))?;
    Ok(LoadedRun {
        path: path.to_path_buf(),
        header,
        last,
        pids,
        end,
        node_seconds,
    })
}

/// Every run in the state directory, oldest first (run ids sort by time).
pub fn list(state: &Path) -> Vec<LoadedRun> {
    let Ok(entries) = std::fs::read_dir(runs_dir(state)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| load(p).ok()).collect()
}

/// Whether the controller that wrote a journal still runs: only known for
/// a run started on this host by this user (Linux `/proc`).
pub fn still_running(run: &LoadedRun) -> Option<u32> {
    let Record::Run {
        holder,
        pid: Some(pid),
        ..
    } = &run.header
    else {
        return None;
    };
    if *holder != crate::lease::holder() {
        return None;
    }
    let alive = cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists();
    alive.then_some(*pid)
}

/// Used when no past run tells how long a node takes.
pub const DEFAULT_NODE_ESTIMATE: std::time::Duration = std::time::Duration::from_secs(120);

/// How long one node of `action` takes, from the finished nodes of past
/// runs (the mean), and where the figure comes from.
pub fn estimate_per_node(state: &Path, action: &str) -> (std::time::Duration, String) {
    let samples: Vec<f64> = list(state)
        .iter()
        .filter(|r| matches!(&r.header, Record::Run { action: a, .. } if a == action))
        .flat_map(|r| r.node_seconds.iter().copied())
        .collect();
    if samples.is_empty() {
        return (DEFAULT_NODE_ESTIMATE, "no past runs: default".into());
    }
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    (
        std::time::Duration::from_secs_f64(mean),
        format!("mean of {} node(s) in past {action} runs", samples.len()),
    )
}

/// The journal of `run_id`, or the newest unfinished run.
pub fn find(state: &Path, run_id: Option<&str>) -> Result<LoadedRun, String> {
    match run_id {
        Some(id) => {
            if farm_proto::names::check_operation_id(id).is_err() {
                return Err(format!("`{id}` is not a run id"));
            }
            load(&runs_dir(state).join(format!("{id}.jsonl")))
        }
        None => list(state)
            .into_iter()
            .rev()
            .find(|r| r.end.is_none())
            .ok_or_else(|| format!("no unfinished run in {}", runs_dir(state).display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_with_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let header = Record::Run {
            run_id: "r1".into(),
            action: "recycle".into(),
            inventory: "/x.yaml".into(),
            pools: vec![],
            nodes: vec!["web01".into()],
            max_unavailable: None,
            started_at: now(),
            holder: "me@here".into(),
            pid: None,
        };
        let j = Journal::create(dir.path(), &header).unwrap();
        j.phase("web01", "draining", None, None).unwrap();
        let pids = BTreeMap::from([("Shop".to_string(), vec![7])]);
        j.phase("web01", "operating", Some(pids.clone()), None)
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"type\":\"phase\",\"t\":\"2026")
            .unwrap();
        let run = find(dir.path(), None).unwrap();
        assert_eq!(run.run_id(), "r1");
        assert_eq!(run.outcome(), "unfinished");
        assert!(matches!(&run.last["web01"], Record::Phase { phase, .. } if phase == "operating"));
        assert_eq!(run.pids["web01"], pids);
        assert!(find(dir.path(), Some("../etc/passwd")).is_err());
    }
}
