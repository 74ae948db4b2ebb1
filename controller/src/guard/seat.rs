//! The guard seat: one guard acts per farm. On the journal directory a
//! lock file (`guard/<farm>.lock`, held while the process lives); on etcd
//! a key on a lease (`<prefix>/farms/<farm>/guard`), kept alive while the
//! guard lives and gone a lease after it dies. A guard that finds the
//! seat taken stands by and tries again every second.
use std::path::Path;
use std::time::Duration;

use crate::exit::CommandError;
use crate::store::{pid_lock, FarmLock, LockRefused, LockValue, PidLockError, Store};

/// How often a guard standing by tries the seat.
const STANDBY_POLL: Duration = Duration::from_secs(1);

pub enum Seat {
    File(std::fs::File, LockValue),
    Etcd(FarmLock),
}

fn lock_file(state_dir: &Path, farm: &str) -> std::path::PathBuf {
    state_dir.join("guard").join(format!("{farm}.lock"))
}

fn me() -> LockValue {
    LockValue {
        run_id: "guard".into(),
        holder: crate::lease::holder(),
        pid: std::process::id(),
        since: crate::clock::now(),
    }
}

/// Takes the seat, standing by while another guard holds it; `None` when
/// stopped first.
pub async fn take(
    store: &Store,
    farm: &str,
    state_dir: &Path,
    mut stop: tokio::sync::watch::Receiver<bool>,
    say: &dyn Fn(&str),
) -> Result<Option<Seat>, CommandError> {
    let mut said = String::new();
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        let held = match store {
            Store::Files(_) => match pid_lock(&lock_file(state_dir, farm)) {
                Ok(f) => return Ok(Some(Seat::File(f, me()))),
                Err(PidLockError::Held(pid)) => format!("PID {pid} on this host"),
                Err(PidLockError::Io(e)) => {
                    return Err(CommandError::refused(format!(
                        "the guard seat {}: {e}",
                        lock_file(state_dir, farm).display()
                    )))
                }
            },
            Store::Etcd(e) => match e.guard_lock(farm, &me()).await {
                Ok(l) => return Ok(Some(Seat::Etcd(l))),
                Err(LockRefused::Held(who)) => who,
                Err(LockRefused::Store(m)) => format!("nobody known (etcd: {m})"),
            },
        };
        if held != said {
            say(&format!(
                "farm {farm} is guarded by {held}: standing by to take over"
            ));
            said = held;
        }
        tokio::select! {
            _ = tokio::time::sleep(STANDBY_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Who holds the seat now, if anyone.
pub async fn holder(store: &Store, farm: &str, state_dir: &Path) -> Option<LockValue> {
    match store {
        Store::Files(_) => match pid_lock(&lock_file(state_dir, farm)) {
            // We could take it: nobody holds it.
            Ok(_) => None,
            Err(PidLockError::Held(pid)) => {
                let state = super::state::read(store, farm, state_dir).await;
                Some(
                    state
                        .and_then(|s| s.holder)
                        .filter(|h| h.pid.to_string() == pid)
                        .unwrap_or(LockValue {
                            run_id: "guard".into(),
                            holder: "unknown".into(),
                            pid: pid.parse().unwrap_or(0),
                            since: String::new(),
                        }),
                )
            }
            Err(PidLockError::Io(_)) => None,
        },
        Store::Etcd(e) => e.guard_holder(farm).await.ok().flatten(),
    }
}

impl Seat {
    pub fn value(&self) -> LockValue {
        match self {
            Seat::File(_, v) => v.clone(),
            Seat::Etcd(l) => serde_json::from_str(&l.value).unwrap_or_else(|_| me()),
        }
    }

    pub fn lost(&self) -> bool {
        match self {
            Seat::File(..) => false,
            Seat::Etcd(l) => *l.lost.borrow(),
        }
    }

    /// Resolves when the seat is lost (never for a lock file).
    pub async fn wait_lost(&self) {
        match self {
            Seat::File(..) => std::future::pending().await,
            Seat::Etcd(l) => {
                let mut lost = l.lost.clone();
                let _ = lost.wait_for(|l| *l).await;
            }
        }
    }

    pub async fn release(self) {
        match self {
            Seat::File(..) => {}
            Seat::Etcd(l) => l.release().await,
        }
    }
}
