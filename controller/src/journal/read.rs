//! Reading journals back: one run, every run in a state directory, and
//! estimates from past runs. A line torn by a crash is passed over; a line
//! that is whole JSON but says something this version does not know (an
//! unknown phase, say) is an error naming the file and the line — a run is
//! never resumed from a guess.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use farm_proto::domain::{OperationKind, Phase};

use super::{runs_dir, EndRecord, Header, PhaseRecord, Record};

farm_proto::message_error! {
    /// No run by that id, or no unfinished one.
    RunNotFound
}

/// How the record that begins a retry of a failed node starts its detail.
pub const RETRY: &str = "retry:";

/// A journal that cannot be read, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct JournalError {
    pub path: PathBuf,
    /// 1-based line number, when the problem is one line.
    pub line: Option<usize>,
    pub message: String,
}

/// A journal read back.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub path: PathBuf,
    pub header: Header,
    /// Each node's last phase record.
    pub last: BTreeMap<String, PhaseRecord>,
    /// The last `pids` recorded per node (entering `operating`).
    pub pids: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    /// The PIDs each finished node's pools ran after the operation.
    pub pids_after: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    pub end: Option<EndRecord>,
    /// Seconds from a node's first phase to its `done`, per finished node.
    pub node_seconds: Vec<f64>,
    /// Lines torn by a crash, passed over.
    pub torn_lines: usize,
    /// Every phase record, in journal order.
    pub records: Vec<PhaseRecord>,
    /// The canary analysis: its judgements, verdict and rollback.
    pub intervals: Vec<crate::report::IntervalReport>,
    pub verdict: Option<super::VerdictRecord>,
    pub rolled_back: Option<bool>,
    /// Each node's captured diagnostics (`recycle --outliers`).
    pub diagnostics: BTreeMap<String, Vec<crate::agent::Diagnostics>>,
    /// A diagnosed node's traffic before its recycle and after it.
    pub traffic_before: BTreeMap<String, crate::health::NodeTraffic>,
    pub traffic_after: BTreeMap<String, crate::health::NodeTraffic>,
    /// The memory dumps taken of each node's pools.
    pub dumps: BTreeMap<String, Vec<crate::agent::DumpView>>,
    /// Each resume: when, by whom, and the time of the last record before
    /// it (when the controller before it went silent or ended).
    pub resumes: Vec<(super::ResumedRecord, Option<String>)>,
    /// The boot each node was on when its restart was asked (the last).
    pub boots_before: BTreeMap<String, crate::agent::BootView>,
    /// What a patch or reboot did on each node.
    pub patched: BTreeMap<String, super::PatchedRecord>,
}

impl LoadedRun {
    pub fn run_id(&self) -> &str {
        &self.header.run_id
    }

    /// `succeeded`, `failed`, or `unfinished` (no end line: the controller
    /// died or is still running).
    pub fn outcome(&self) -> String {
        match &self.end {
            Some(e) => e.outcome.as_str().into(),
            None => "unfinished".into(),
        }
    }

    /// Where `node` was when the journal ends.
    pub fn phase_of(&self, node: &str) -> Phase {
        self.last.get(node).map_or(Phase::Pending, |r| r.phase)
    }

    /// Which attempt at `node` the journal is on: 1, plus one for each
    /// retry a resume began ([`RETRY`] records). A retry's operations go
    /// under ids of their own: the agent answers a repeated id with the
    /// first (failed) result.
    pub fn attempt(&self, node: &str) -> u32 {
        1 + self
            .records
            .iter()
            .filter(|r| {
                r.node == node
                    && r.phase == Phase::Pending
                    && r.detail.as_deref().is_some_and(|d| d.starts_with(RETRY))
            })
            .count() as u32
    }
}

/// Reads a journal.
pub fn load(path: &Path) -> Result<LoadedRun, JournalError> {
    let f = std::fs::File::open(path).map_err(|e| JournalError {
        path: path.to_path_buf(),
        line: None,
        message: e.to_string(),
    })?;
    let lines = std::io::BufReader::new(f).lines();
    parse(path, lines)
}

/// Reads a journal from its lines (a file's, or a store's records in
/// order); `path` names it in errors.
pub fn parse(
    path: &Path,
    lines: impl Iterator<Item = std::io::Result<String>>,
) -> Result<LoadedRun, JournalError> {
    let err = |line: Option<usize>, message: String| JournalError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut header: Option<Header> = None;
    let mut last = BTreeMap::new();
    let mut pids = BTreeMap::new();
    let mut pids_after = BTreeMap::new();
    let mut first_seen: BTreeMap<String, std::time::SystemTime> = BTreeMap::new();
    let mut node_seconds = Vec::new();
    let mut end = None;
    let mut torn_lines = 0;
    let mut records = Vec::new();
    let mut intervals = Vec::new();
    let mut verdict = None;
    let mut rolled_back = None;
    let mut diagnostics = BTreeMap::new();
    let mut traffic_before = BTreeMap::new();
    let mut traffic_after = BTreeMap::new();
    let mut dumps = BTreeMap::new();
    let mut resumes = Vec::new();
    let mut boots_before = BTreeMap::new();
    let mut patched = BTreeMap::new();
    let mut last_t: Option<String> = None;
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| err(Some(n + 1), e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = match serde_json::from_str::<Record>(&line) {
            Ok(r) => r,
            // Cut off mid-write by a crash: incomplete JSON.
            Err(e) if e.is_eof() || e.is_syntax() => {
                torn_lines += 1;
                continue;
            }
            Err(e) => {
                return Err(err(
                    Some(n + 1),
                    format!("a record this farmctl does not understand: {e}"),
                ))
            }
        };
        if let Some(t) = record_time(&rec) {
            if !matches!(rec, Record::Resumed(_)) {
                last_t = Some(t);
            }
        }
        match rec {
            Record::Run(h) => header = Some(*h),
            Record::Phase(p) => {
                if let Some(x) = &p.pids {
                    pids.insert(p.node.clone(), x.clone());
                }
                if let Some(x) = &p.pids_after {
                    pids_after.insert(p.node.clone(), x.clone());
                }
                if let Ok(at) = humantime::parse_rfc3339(&p.t) {
                    let first = *first_seen.entry(p.node.clone()).or_insert(at);
                    if p.phase == Phase::Done {
                        node_seconds
                            .push(at.duration_since(first).unwrap_or_default().as_secs_f64());
                    }
                }
                records.push(p.clone());
                last.insert(p.node.clone(), p);
                // A run that halted and was resumed goes on after its end
                // line: it is unfinished until the next one.
                end = None;
            }
            Record::End(e) => end = Some(e),
            Record::Interval(i) => intervals.push(i),
            Record::Verdict(v) => {
                verdict = Some(v);
                end = None;
            }
            Record::RolledBack(r) => {
                rolled_back = Some(r.ok);
                end = None;
            }
            Record::Diagnostics(d) => {
                if let Some(t) = d.traffic {
                    traffic_before.insert(d.node.clone(), t);
                }
                diagnostics.insert(d.node, d.pools);
            }
            Record::TrafficAfter(a) => {
                traffic_after.insert(a.node, a.traffic);
            }
            Record::Dumps(d) => {
                dumps.insert(d.node, d.pools);
            }
            Record::Resumed(r) => {
                resumes.push((r, last_t.clone()));
                end = None;
                continue;
            }
            Record::Reboot(r) => {
                boots_before.insert(r.node, r.boot_before);
            }
            Record::Patched(p) => {
                patched.insert(p.node.clone(), p);
            }
        }
    }
    let header = header.ok_or_else(|| err(None, "no run header".into()))?;
    Ok(LoadedRun {
        path: path.to_path_buf(),
        header,
        last,
        pids,
        pids_after,
        end,
        node_seconds,
        torn_lines,
        records,
        intervals,
        verdict,
        rolled_back,
        diagnostics,
        traffic_before,
        traffic_after,
        dumps,
        resumes,
        boots_before,
        patched,
    })
}

/// When a record was written, for the records that say.
fn record_time(rec: &Record) -> Option<String> {
    Some(match rec {
        Record::Run(h) => h.started_at.clone(),
        Record::Phase(p) => p.t.clone(),
        Record::End(e) => e.t.clone(),
        Record::Interval(i) => i.at.clone(),
        Record::Verdict(v) => v.t.clone(),
        Record::RolledBack(r) => r.t.clone(),
        Record::Diagnostics(d) => d.t.clone(),
        Record::TrafficAfter(a) => a.t.clone(),
        Record::Resumed(r) => r.t.clone(),
        Record::Reboot(r) => r.t.clone(),
        Record::Patched(p) => p.t.clone(),
        Record::Dumps(d) => d.t.clone(),
    })
}

/// Every run in the state directory, oldest first (run ids sort by time).
/// Journals that cannot be read are left out with a warning.
pub fn list(state: &Path) -> Vec<LoadedRun> {
    let Ok(entries) = std::fs::read_dir(runs_dir(state)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| {
            load(p)
                .map_err(|e| tracing::warn!("skipping journal {e}"))
                .ok()
        })
        .collect()
}

/// Whether the controller that wrote a journal still runs: only known for
/// a run started on this host by this user — its PID is alive and is a
/// farmctl (a PID reused by another program does not count).
pub fn still_running(run: &LoadedRun) -> Option<u32> {
    let pid = run.header.pid?;
    if run.header.holder != crate::lease::holder() {
        return None;
    }
    is_farmctl(pid).then_some(pid)
}

/// Whether process `pid` exists and its program is a farmctl (its file
/// name starts with `farmctl`).
pub fn is_farmctl(pid: u32) -> bool {
    program_name(pid).is_some_and(|name| name.to_ascii_lowercase().starts_with("farmctl"))
}

#[cfg(target_os = "linux")]
fn program_name(pid: u32) -> Option<String> {
    // The executable's name; `comm` (15 characters) when the link cannot
    // be read.
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe.file_name().map(|n| n.to_string_lossy().into_owned()),
        Err(_) => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim_end().to_string()),
    }
}

#[cfg(windows)]
fn program_name(pid: u32) -> Option<String> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(pid);
    let mut sys = System::new();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    sys.process(pid)
        .map(|p| p.name().to_string_lossy().into_owned())
}

#[cfg(not(any(target_os = "linux", windows)))]
fn program_name(_pid: u32) -> Option<String> {
    None
}

/// Used when no past run tells how long a node takes.
pub const DEFAULT_NODE_ESTIMATE: std::time::Duration = std::time::Duration::from_secs(120);

/// How long one node of `action` takes, from the finished nodes of past
/// runs (the mean), and where the figure comes from.
pub fn estimate_per_node(state: &Path, action: OperationKind) -> (std::time::Duration, String) {
    estimate_from(&list(state), action)
}

/// [`estimate_per_node`] over runs already read.
pub fn estimate_from(runs: &[LoadedRun], action: OperationKind) -> (std::time::Duration, String) {
    let samples: Vec<f64> = runs
        .iter()
        .filter(|r| r.header.action == action)
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
pub fn find(state: &Path, run_id: Option<&str>) -> Result<LoadedRun, RunNotFound> {
    match run_id {
        Some(id) => {
            if farm_proto::names::check_operation_id(id).is_err() || id.contains('.') {
                return Err(RunNotFound(format!("`{id}` is not a run id")));
            }
            load(&runs_dir(state).join(format!("{id}.jsonl")))
                .map_err(|e| RunNotFound(e.to_string()))
        }
        None => list(state)
            .into_iter()
            .rev()
            .find(|r| r.end.is_none())
            .ok_or_else(|| {
                RunNotFound(format!(
                    "no unfinished run in {}",
                    runs_dir(state).display()
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::{now, Journal};
    use super::*;

    /// The live-controller check sees this test program (a farmctl test
    /// binary) and nothing at a PID that does not exist.
    #[test]
    fn live_farmctl_by_pid() {
        assert!(is_farmctl(std::process::id()));
        assert!(!is_farmctl(u32::MAX - 1));
    }

    #[cfg(unix)]
    #[test]
    fn another_program_at_the_pid_is_not_a_farmctl() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let other = child.id();
        let seen = is_farmctl(other);
        child.kill().unwrap();
        let _ = child.wait();
        assert!(!seen);
    }

    fn header() -> Header {
        Header {
            run_id: "r1".into(),
            action: OperationKind::Recycle,
            inventory: "/x.yaml".into(),
            pools: vec![],
            nodes: vec!["web01".into()],
            started_at: now(),
            holder: "me@here".into(),
            pid: None,
            settings: None,
        }
    }

    /// Appends bytes as another writer (or a crash mid-write) would.
    fn append_raw(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[tokio::test]
    async fn a_torn_line_is_passed_over_and_the_next_record_starts_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &header()).unwrap();
        j.phase("web01", Phase::Draining, None, None).await.unwrap();
        let pids = BTreeMap::from([("Shop".to_string(), vec![7])]);
        j.phase("web01", Phase::Operating, Some(pids.clone()), None)
            .await
            .unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        append_raw(&path, b"{\"type\":\"phase\",\"t\":\"2026");
        let run = find(dir.path(), None).unwrap();
        assert_eq!(run.run_id(), "r1");
        assert_eq!(run.outcome(), "unfinished");
        assert_eq!(run.phase_of("web01"), Phase::Operating);
        assert_eq!(run.pids["web01"], pids);
        assert_eq!(run.torn_lines, 1);
        // Resumed: the torn line is ended, the new record is read.
        let j = Journal::reopen(&path).unwrap();
        j.phase("web01", Phase::Verifying, None, None)
            .await
            .unwrap();
        let run = load(&path).unwrap();
        assert_eq!(run.phase_of("web01"), Phase::Verifying);
        assert!(find(dir.path(), Some("../etc/passwd")).is_err());
    }

    #[tokio::test]
    async fn an_unknown_phase_is_an_error_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), &header()).unwrap();
        j.phase("web01", Phase::Draining, None, None).await.unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        append_raw(
            &path,
            b"{\"type\":\"phase\",\"t\":\"x\",\"node\":\"web01\",\"phase\":\"exploding\"}\n",
        );
        let e = load(&path).unwrap_err();
        assert_eq!(e.line, Some(3));
        let text = e.to_string();
        assert!(
            text.contains("r1.jsonl:3") && text.contains("exploding"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn appends_from_many_tasks_are_all_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::create(dir.path(), &header()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move {
                    j.phase(&format!("n{i}"), Phase::Draining, None, None)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(load(j.path()).unwrap().last.len(), 200);
    }
}
