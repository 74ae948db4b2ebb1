//! Memory dumps of a sick pool's workers, through the tool this server's
//! operators chose (ProcDump, `dotnet-dump`, ...: `dump.command`, argv
//! only) and within a budget a farm can afford: dumps a day, free disk
//! left on the dump folder's volume, a size cap and a time limit. A dump
//! freezes the worker while it is written and can fill a disk: a full disk
//! takes the server with it, so each bound is checked before the tool
//! starts and watched while it runs.
//!
//! The ledger of dumps (`farm-agent-dumps.json` in the dump folder) is
//! the budget's memory: it outlives agent restarts, and deleting the dump
//! files after copying them off does not reset the day's count.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::state::available;

use serde::{Deserialize, Serialize};

/// How this server takes memory dumps (`dump:` in the agent config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpConfig {
    /// The tool and its arguments (no shell). `{pid}`, `{file}`, `{pool}`
    /// and `{dir}` are replaced in each argument, e.g.
    /// `[C:\Tools\procdump64.exe, -accepteula, -ma, "{pid}", "{file}"]`.
    pub command: Vec<String>,
    /// Where dumps are written (created when missing).
    pub dir: PathBuf,
    /// Dumps over any 24 hours (default 2).
    #[serde(default = "default_per_day")]
    pub per_day: u32,
    /// Free space (MB) that must stay on the dump folder's volume with a
    /// dump of `max_size_mb` written (default 10240).
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// A dump file larger than this (MB) is stopped and deleted; a worker
    /// whose private bytes are already above it is not dumped (default
    /// 8192).
    #[serde(default = "default_max_size_mb")]
    pub max_size_mb: u64,
    /// The longest one dump may take; the tool is then killed and its
    /// file deleted (default 5m).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_per_day() -> u32 {
    2
}
fn default_min_free_mb() -> u64 {
    10 * 1024
}
fn default_max_size_mb() -> u64 {
    8 * 1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}

const MB: u64 = 1024 * 1024;
const DAY_MS: u64 = 24 * 3600 * 1000;
/// How often a running dump's file size and the free disk are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);
const LEDGER: &str = "farm-agent-dumps.json";
/// Operation ids remembered for their replies.
const REMEMBERED_OPS: usize = 256;

impl DumpConfig {
    pub fn check(&self) -> Result<(), String> {
        let Some(program) = self.command.first() else {
            return Err("dump.command is empty: give the tool and its arguments".into());
        };
        if program.trim().is_empty() {
            return Err("dump.command's program is empty".into());
        }
        if !self.command.iter().any(|a| a.contains("{pid}")) {
            return Err(format!(
                "dump.command never names the worker: none of its arguments has {{pid}} ({program})"
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return Err("dump.dir is empty".into());
        }
        if self.max_size_mb == 0 || self.timeout.is_zero() {
            return Err("dump.max_size_mb and dump.timeout must be above 0".into());
        }
        Ok(())
    }
}

/// A worker of the pool, as the backend sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub pid: u32,
    pub private_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    pub pid: u32,
    pub file: String,
    pub bytes: u64,
    pub elapsed_ms: u64,
    pub exit_code: Option<i32>,
}

/// What one Dump call did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DumpOutcome {
    pub pool: String,
    pub dumps: Vec<Taken>,
    pub refused: Vec<String>,
    pub left_today: u32,
    #[serde(skip)]
    pub replayed: bool,
}

/// One run of the tool, counted against the day's budget whether or not
/// it wrote a dump (the worker was frozen either way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    unix_ms: u64,
    pool: String,
    pid: u32,
    file: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    #[serde(default)]
    runs: Vec<Entry>,
    /// Replies by operation id and pool.
    #[serde(default)]
    ops: BTreeMap<String, (u64, DumpOutcome)>,
}

pub struct Dumps {
    cfg: DumpConfig,
    /// One dump at a time on a node (each freezes a worker and writes
    /// gigabytes); also guards the ledger.
    ledger: tokio::sync::Mutex<Ledger>,
}

fn unix_ms() -> u64 {
    crate::state::unix_ms()
}

impl Dumps {
    /// Reads the ledger in `cfg.dir` (an unreadable one is set aside and
    /// said: the day's budget then starts from the files' own times).
    pub fn new(cfg: DumpConfig) -> Self {
        let path = cfg.dir.join(LEDGER);
        let ledger = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(
                    "the dump ledger {} is unreadable ({e}); set aside, the day's dumps counted from the dump files",
                    path.display()
                );
                let _ = std::fs::rename(&path, path.with_extension("bad"));
                Ledger {
                    runs: dumps_on_disk(&cfg.dir),
                    ops: BTreeMap::new(),
                }
            }),
            Err(_) => Ledger::default(),
        };
        Self {
            cfg,
            ledger: tokio::sync::Mutex::new(ledger),
        }
    }

    fn save(&self, ledger: &Ledger) {
        let path = self.cfg.dir.join(LEDGER);
        let written = std::fs::create_dir_all(&self.cfg.dir)
            .and_then(|()| serde_json::to_vec_pretty(ledger).map_err(std::io::Error::other))
            .and_then(|json| crate::state::write_atomically(&path, &json));
        if let Err(e) = written {
            tracing::error!(
                "could not write the dump ledger {}: {e}; a restart of the agent would forget today's dumps",
                path.display()
            );
        }
    }

    /// Dumps each of `workers` of `pool` within the budget; the same
    /// `op_id` and pool again answers the first reply.
    pub async fn take(&self, op_id: &str, pool: &str, workers: &[Worker]) -> DumpOutcome {
        let key = format!("{op_id} {}", pool.to_ascii_lowercase());
        let mut ledger = self.ledger.lock().await;
        if let Some((_, first)) = ledger.ops.get(&key) {
            return DumpOutcome {
                replayed: true,
                ..first.clone()
            };
        }
        let mut out = DumpOutcome {
            pool: pool.to_string(),
            ..Default::default()
        };
        if workers.is_empty() {
            out.refused
                .push(format!("pool {pool} has no worker process to dump"));
        }
        for w in workers {
            let now = unix_ms();
            ledger
                .runs
                .retain(|e| now.saturating_sub(e.unix_ms) < DAY_MS);
            let used = ledger.runs.len() as u32;
            if used >= self.cfg.per_day {
                let next = ledger.runs.iter().map(|e| e.unix_ms).min().unwrap_or(now) + DAY_MS;
                out.refused.push(format!(
                    "worker {}: the dump budget is spent ({used} of dump.per_day {} in the last 24 h; the next one from {})",
                    w.pid,
                    self.cfg.per_day,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(next)
                    )
                ));
                continue;
            }
            if let Err(why) = self.room_for(w) {
                out.refused.push(format!("worker {}: {why}", w.pid));
                continue;
            }
            let file = self.file_for(pool, w.pid, now);
            ledger.runs.push(Entry {
                unix_ms: now,
                pool: pool.to_string(),
                pid: w.pid,
                file: file.to_string_lossy().into_owned(),
            });
            // On disk before the tool starts: a crash mid-dump still
            // counts it.
            self.save(&ledger);
            match self.run(pool, w.pid, &file).await {
                Ok(t) => {
                    tracing::warn!(pool, pid = w.pid, file = %t.file, bytes = t.bytes, "memory dump taken");
                    out.dumps.push(t);
                }
                Err(why) => {
                    tracing::warn!(pool, pid = w.pid, "memory dump not taken: {why}");
                    out.refused.push(format!("worker {}: {why}", w.pid));
                }
            }
        }
        let now = unix_ms();
        let used = ledger
            .runs
            .iter()
            .filter(|e| now.saturating_sub(e.unix_ms) < DAY_MS)
            .count() as u32;
        out.left_today = self.cfg.per_day.saturating_sub(used);
        ledger.ops.insert(key, (now, out.clone()));
        while ledger.ops.len() > REMEMBERED_OPS {
            let oldest = ledger
                .ops
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => ledger.ops.remove(&k),
                None => break,
            };
        }
        self.save(&ledger);
        out
    }

    /// The disk has room for a dump of `max_size_mb` with `min_free_mb`
    /// left, and the worker is not already larger than the cap.
    fn room_for(&self, w: &Worker) -> Result<(), String> {
        let cap = self.cfg.max_size_mb * MB;
        if let Some(bytes) = w.private_bytes.filter(|b| *b > cap) {
            return Err(format!(
                "its private bytes ({} MB) are above dump.max_size_mb ({} MB): a full dump would be larger",
                bytes / MB,
                self.cfg.max_size_mb
            ));
        }
        let free = available(&self.cfg.dir);
        let need = cap.saturating_add(self.cfg.min_free_mb * MB);
        if free < need {
            return Err(format!(
                "only {} MB free where dumps go ({}); a dump needs dump.max_size_mb + dump.min_free_mb = {} MB",
                free / MB,
                self.cfg.dir.display(),
                need / MB
            ));
        }
        Ok(())
    }

    fn file_for(&self, pool: &str, pid: u32, now_ms: u64) -> PathBuf {
        let stamp = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(now_ms),
        )
        .to_string()
        .replace([':', '-'], "");
        let safe: String = pool
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.cfg.dir.join(format!("{safe}_{pid}_{stamp}.dmp"))
    }

    /// Runs the tool for one worker, watching the file's size, the free
    /// disk and the clock; a dump stopped on a bound is deleted.
    async fn run(&self, pool: &str, pid: u32, file: &Path) -> Result<Taken, String> {
        std::fs::create_dir_all(&self.cfg.dir)
            .map_err(|e| format!("could not create {}: {e}", self.cfg.dir.display()))?;
        let fill = |a: &String| {
            a.replace("{pid}", &pid.to_string())
                .replace("{file}", &file.to_string_lossy())
                .replace("{pool}", pool)
                .replace("{dir}", &self.cfg.dir.to_string_lossy())
        };
        let argv: Vec<String> = self.cfg.command.iter().map(fill).collect();
        let started = Instant::now();
        // What the tool prints goes beside its dump (`<file>.txt`): a
        // pipe nobody reads while the dump is watched could fill and stall
        // it; the file's end is quoted when the dump fails.
        let said = file.with_extension("dmp.txt");
        let out = std::fs::File::create(&said)
            .map_err(|e| format!("could not create {}: {e}", said.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("could not open {} twice: {e}", said.display()))?;
        let Some((program, args)) = argv.split_first() else {
            return Err("dump.command is empty".into());
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start dump.command {program}: {e}"))?;
        let cap = self.cfg.max_size_mb * MB;
        let floor = self.cfg.min_free_mb * MB;
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let mut tick = tokio::time::interval(WATCH_EVERY);
        let stopped = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| format!("waiting for dump.command: {e}")),
                _ = tokio::time::sleep_until(deadline) => break Err(format!(
                    "dump.timeout ({}) reached: the tool was stopped and its file deleted",
                    humantime::format_duration(self.cfg.timeout)
                )),
                _ = tick.tick() => {
                    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
                    if size > cap {
                        break Err(format!(
                            "the dump passed dump.max_size_mb ({} MB): the tool was stopped and its file deleted",
                            self.cfg.max_size_mb
                        ));
                    }
                    let free = available(&self.cfg.dir);
                    if free < floor {
                        break Err(format!(
                            "free disk fell to {} MB, under dump.min_free_mb ({} MB): the tool was stopped and its file deleted",
                            free / MB,
                            self.cfg.min_free_mb
                        ));
                    }
                }
            }
        };
        let status = match stopped {
            Ok(s) => s,
            Err(why) => {
                let _ = child.kill().await;
                let _ = std::fs::remove_file(file);
                return Err(format!("{why}{}", tail(&said)));
            }
        };
        let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if bytes > cap {
            let _ = std::fs::remove_file(file);
            return Err(format!(
                "the dump ({} MB) is larger than dump.max_size_mb ({} MB): deleted",
                bytes / MB,
                self.cfg.max_size_mb
            ));
        }
        if bytes == 0 {
            let _ = std::fs::remove_file(file);
            return Err(format!(
                "dump.command exited {} and wrote no dump at {}{}",
                status
                    .code()
                    .map_or_else(|| "without a code".to_string(), |c| c.to_string()),
                file.display(),
                tail(&said)
            ));
        }
        Ok(Taken {
            pid,
            file: file.to_string_lossy().into_owned(),
            bytes,
            elapsed_ms: started.elapsed().as_millis() as u64,
            exit_code: status.code(),
        })
    }
}

/// The last line the tool printed, as `; it said: ...` (nothing when it
/// said nothing).
fn tail(said: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut end = Vec::new();
    if let Ok(mut f) = std::fs::File::open(said) {
        let _ = f
            .seek(SeekFrom::End(-2048))
            .or_else(|_| f.seek(SeekFrom::Start(0)));
        let _ = f.take(2048).read_to_end(&mut end);
    }
    let text = String::from_utf8_lossy(&end).into_owned();
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => format!(
            "; it said: {}",
            last.trim().chars().take(300).collect::<String>()
        ),
        None => String::new(),
    }
}

/// The day's dumps by the files' own times (when the ledger is lost).
fn dumps_on_disk(dir: &Path) -> Vec<Entry> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "dmp"))
        .filter_map(|e| {
            let t = e.metadata().ok()?.modified().ok()?;
            Some(Entry {
                unix_ms: t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64,
                pool: String::new(),
                pid: 0,
                file: e.path().to_string_lossy().into_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
