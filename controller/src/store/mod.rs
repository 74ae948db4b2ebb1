//! Where run state lives: the local journal directory (the default, as
//! before) or etcd ([`etcd`]), chosen by `--state-store`,
//! `FARMCTL_STATE_STORE` or the inventory's `state:`. With etcd, runs,
//! their history and the farm lock are shared by every controller host.
pub mod etcd;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use farm_inventory::{EtcdStore as EtcdConfig, TlsFiles};
use farm_proto::domain::OperationKind;

use crate::exit::CommandError;
use crate::journal::{Header, Journal, LoadedRun};
pub use etcd::{FarmLock, LockRefused, LockValue};

/// A run held by this process on the local store (see [`Store::lock_run`]).
pub struct RunFileLock {
    _file: std::fs::File,
}

farm_proto::message_error! {
    /// Why the run state store could not do what was asked (read, write,
    /// lock), naming the store.
    StoreError
}

pub enum Store {
    Files(PathBuf),
    Etcd(Arc<etcd::EtcdStore>),
}

/// `etcd://host:port[,host:port]` (plain) or `etcds://...` (TLS, with the
/// files named by `FARMCTL_ETCD_CA`, `FARMCTL_ETCD_CERT`, `FARMCTL_ETCD_KEY`),
/// optionally `?prefix=/farmctl&lock_ttl=15s`.
pub fn parse_url(text: &str) -> Result<EtcdConfig, StoreError> {
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        format!("`{text}` is not a store like `etcd://10.0.0.5:2379,10.0.0.6:2379`")
    })?;
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let tls = match scheme {
        "etcd" => None,
        "etcds" => {
            let file = |var: &str| {
                std::env::var_os(var)
                    .map(PathBuf::from)
                    .ok_or_else(|| StoreError(format!("{text}: etcds needs {var} (a PEM file)")))
            };
            Some(TlsFiles {
                ca: file("FARMCTL_ETCD_CA")?,
                cert: file("FARMCTL_ETCD_CERT")?,
                key: file("FARMCTL_ETCD_KEY")?,
            })
        }
        other => {
            return Err(StoreError(format!(
                "`{other}://`: the store is `etcd://` or `etcds://`"
            )))
        }
    };
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| {
            format!(
                "{}://{}",
                if tls.is_some() { "https" } else { "http" },
                h.trim()
            )
        })
        .collect();
    if endpoints.is_empty() {
        return Err(StoreError(format!("`{text}` names no etcd member")));
    }
    let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(k));
    let prefix = param("prefix=").unwrap_or("/farmctl").to_string();
    let lock_ttl = match param("lock_ttl=") {
        Some(t) => humantime::parse_duration(t)
            .ok()
            .filter(|d| d.as_secs() >= 3)
            .ok_or_else(|| {
                StoreError(format!(
                    "{text}: lock_ttl `{t}` is not a duration of 3s or more"
                ))
            })?,
        None => std::time::Duration::from_secs(etcd::LOCK_TTL as u64),
    };
    Ok(EtcdConfig {
        endpoints,
        prefix,
        tls,
        user: None,
        lock_ttl,
    })
}

impl Store {
    /// The store a command uses: `--state-store` (or `FARMCTL_STATE_STORE`),
    /// else the inventory's `state:`, else the journal directory.
    pub async fn open(
        flag: Option<&str>,
        inventory: Option<&farm_inventory::Inventory>,
        state_dir: &Path,
    ) -> Result<Store, CommandError> {
        let cfg = match flag {
            Some(url) => Some(parse_url(url).map_err(CommandError::bad_input)?),
            None => inventory.and_then(|i| i.state.clone()),
        };
        match cfg {
            None => Ok(Store::Files(state_dir.to_path_buf())),
            Some(cfg) => etcd::EtcdStore::connect(&cfg)
                .await
                .map(|s| Store::Etcd(Arc::new(s)))
                .map_err(|e| {
                    CommandError::refused(format!(
                        "the run state store, etcd at {}: {e}; nothing was touched",
                        cfg.endpoints.join(", ")
                    ))
                }),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Store::Files(dir) => crate::journal::runs_dir(dir).display().to_string(),
            Store::Etcd(e) => format!("etcd at {}", e.endpoints.join(", ")),
        }
    }

    /// Takes the farm for a run (etcd; the journal directory has no lock:
    /// the agents' leases keep two controllers apart).
    pub async fn lock(
        &self,
        farm: &str,
        run_id: &str,
        takeover: bool,
    ) -> Result<Option<FarmLock>, CommandError> {
        let Store::Etcd(e) = self else {
            return Ok(None);
        };
        let value = LockValue {
            run_id: run_id.to_string(),
            holder: crate::lease::holder(),
            pid: std::process::id(),
            since: crate::clock::now(),
        };
        match e.lock(farm, &value, takeover).await {
            Ok(l) => Ok(Some(l)),
            Err(LockRefused::Held(who)) => Err(CommandError::refused(format!(
                "farm {farm} is being run by {who} (etcd farm lock){}; nothing was touched",
                if takeover {
                    ""
                } else {
                    " — if that controller is dead, `farmctl resume --force-takeover` takes it over"
                }
            ))),
            Err(LockRefused::Store(m)) => Err(CommandError::refused(format!(
                "the run state store: {m}; nothing was touched"
            ))),
        }
    }

    /// One controller drives a run at a time on the journal directory too:
    /// an exclusive lock on `runs/<run_id>.lock`, held until the returned
    /// guard is dropped (or the process dies). With etcd the farm lock
    /// does this.
    pub fn lock_run(&self, run_id: &str) -> Result<Option<RunFileLock>, CommandError> {
        let Store::Files(dir) = self else {
            return Ok(None);
        };
        let runs = crate::journal::runs_dir(dir);
        let path = runs.join(format!("{run_id}.lock"));
        let file = pid_lock(&path).map_err(|e| match e {
            PidLockError::Held(pid) => CommandError::refused(format!(
                "run {run_id} is being driven by another farmctl (PID {pid}) on this host; \
                 nothing was touched — wait for it, or stop it first"
            )),
            PidLockError::Io(e) => CommandError::refused(format!(
                "could not lock run {run_id} ({}: {e}); nothing was touched",
                path.display()
            )),
        })?;
        Ok(Some(RunFileLock { _file: file }))
    }

    /// Starts a new run's journal with its header.
    pub async fn create(
        &self,
        farm: &str,
        header: &Header,
        lock: Option<&FarmLock>,
    ) -> Result<Journal, StoreError> {
        match (self, lock) {
            (Store::Etcd(e), Some(l)) => e.create(farm, header, l).await,
            (Store::Etcd(_), None) => Err(StoreError("no farm lock".into())),
            (Store::Files(dir), _) => {
                Journal::create(dir, header).map_err(|e| StoreError(e.to_string()))
            }
        }
    }

    /// Continues a run's journal (resume).
    pub async fn reopen(
        &self,
        run: &LoadedRun,
        lock: Option<&FarmLock>,
    ) -> Result<Journal, StoreError> {
        match (self, lock) {
            (Store::Etcd(e), Some(l)) => {
                let farm = farm_of(run);
                let next = e.next_record(&farm, &run.header.run_id).await?;
                Ok(e.journal(&farm, &run.header.run_id, l, next))
            }
            (Store::Etcd(_), None) => Err(StoreError("no farm lock".into())),
            (Store::Files(_), _) => {
                Journal::reopen(&run.path).map_err(|e| StoreError(e.to_string()))
            }
        }
    }

    /// Every run (of `farm`, or all), oldest first.
    pub async fn list(&self, farm: Option<&str>) -> Result<Vec<LoadedRun>, StoreError> {
        match self {
            Store::Files(dir) => Ok(crate::journal::list(dir)
                .into_iter()
                .filter(|r| farm.is_none_or(|f| farm_of(r) == f))
                .collect()),
            Store::Etcd(e) => e.runs(farm).await,
        }
    }

    /// The run `run_id`, or the newest unfinished one.
    pub async fn find(
        &self,
        farm: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<LoadedRun, StoreError> {
        match (self, run_id, farm) {
            (Store::Files(dir), Some(_), _) | (Store::Files(dir), None, None) => {
                return crate::journal::find(dir, run_id).map_err(|e| StoreError(e.to_string()))
            }
            _ => {}
        }
        let runs = self.list(farm).await?;
        match run_id {
            Some(id) => runs
                .into_iter()
                .find(|r| r.header.run_id == id)
                .ok_or_else(|| StoreError(format!("no run {id} in {}", self.label()))),
            None => match runs.into_iter().rev().find(|r| r.end.is_none()) {
                Some(r) => Ok(r),
                None => {
                    // Under another farm name: the inventory's `farm:`
                    // may have changed since the run started.
                    let others = self.list(None).await.unwrap_or_default();
                    let other = others.iter().rev().find(|r| r.end.is_none());
                    Err(StoreError(match (other, farm) {
                        (Some(r), Some(f)) => format!(
                            "no unfinished run of farm `{f}` in {}; run {} of farm `{}` is unfinished \
                             (did the inventory's `farm:` change?): `farmctl resume {}` names it",
                            self.label(),
                            r.header.run_id,
                            farm_of(r),
                            r.header.run_id
                        ),
                        _ => format!("no unfinished run in {}", self.label()),
                    }))
                }
            },
        }
    }

    /// How long a node of `action` takes, from the history this store has.
    pub async fn estimate_per_node(
        &self,
        farm: &str,
        action: OperationKind,
    ) -> (std::time::Duration, String) {
        match self {
            Store::Files(dir) => crate::journal::estimate_per_node(dir, action),
            Store::Etcd(_) => {
                let runs = self.list(Some(farm)).await.unwrap_or_default();
                crate::journal::estimate_from(&runs, action)
            }
        }
    }
}

/// The farm a run was for (its contract says; old journals do not).
pub fn farm_of(run: &LoadedRun) -> String {
    run.header
        .settings
        .as_ref()
        .map(|s| s.farm.clone())
        .unwrap_or_default()
}

/// Why an exclusive PID lock was not taken.
#[derive(Debug)]
pub enum PidLockError {
    /// Another process holds it: its PID, as it wrote it.
    Held(String),
    Io(std::io::Error),
}

/// An exclusive lock on `path` (created with its folder), holding this
/// process's PID, until the file is dropped or the process dies.
pub fn pid_lock(path: &std::path::Path) -> Result<std::fs::File, PidLockError> {
    use std::io::{Read, Seek, Write};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(PidLockError::Io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(PidLockError::Io)?;
    // Named in full: newer std has an inherent `File::try_lock`.
    if fs4::FileExt::try_lock(&file).is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(PidLockError::Held(pid.trim().to_string()));
    }
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    Ok(file)
}
