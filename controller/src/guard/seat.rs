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

/// Who holds the seat now, if anyone. Read-only: the lock file is never
/// written nor held exclusively here (`status` asks while guards run).
pub async fn holder(store: &Store, farm: &str, state_dir: &Path) -> Option<LockValue> {
    match store {
        Store::Files(_) => {
            use std::io::Read;
            let mut file = std::fs::File::open(lock_file(state_dir, farm)).ok()?;
            // A shared lock is refused only while a guard holds the seat.
            if fs4::FileExt::try_lock_shared(&file).is_ok() {
                return None;
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim().to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_guard_holds_the_seat_and_status_only_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Files(dir.path().to_path_buf());
        assert!(holder(&store, "shop", dir.path()).await.is_none());
        let (_tx, stop) = tokio::sync::watch::channel(false);
        let seat = take(&store, "shop", dir.path(), stop.clone(), &|_| {})
            .await
            .unwrap()
            .expect("the free seat is taken");
        // Asked while held: the holder, and the seat is still held after.
        let h = holder(&store, "shop", dir.path()).await.expect("held");
        assert_eq!(h.pid, std::process::id());
        assert!(holder(&store, "shop", dir.path()).await.is_some());
        // A second guard stands by (until stopped).
        let (tx2, stop2) = tokio::sync::watch::channel(false);
        let said = std::sync::Mutex::new(Vec::<String>::new());
        let say = |m: &str| said.lock().unwrap().push(m.to_string());
        let second = take(&store, "shop", dir.path(), stop2, &say);
        tokio::pin!(second);
        tokio::select! {
            _ = &mut second => panic!("a second guard took a held seat"),
            () = tokio::time::sleep(std::time::Duration::from_millis(1500)) => {}
        }
        tx2.send_replace(true);
        assert!(second.await.unwrap().is_none());
        assert!(said.lock().unwrap()[0].contains("standing by"));
        seat.release().await;
    }
}
