//! What a load balancer's contract fake keeps per member: in or out,
//! connections that run down after a drain, a health check that takes a
//! while after a return — and a record of every change and of when the
//! fake first told the controller a drained member had no connection left.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Out,
    Back,
}

struct Member {
    out: bool,
    since: Instant,
}

pub struct Members {
    members: Mutex<HashMap<String, Member>>,
    changes: Mutex<Vec<(SystemTime, String, Change)>>,
    zero_reported: Mutex<HashMap<String, SystemTime>>,
    /// Requests the LB says it sent each member (its request counter).
    requests: Mutex<HashMap<String, u64>>,
    /// Connections of a member in rotation...
    pub baseline: u64,
    /// ...that run down to zero this long after a drain.
    pub decay: Duration,
    /// After a return the health check takes this long.
    pub checking: Duration,
}

impl Members {
    pub fn new(names: &[String], decay: Duration, checking: Duration) -> Members {
        let now = Instant::now() - Duration::from_secs(3600);
        Members {
            members: Mutex::new(
                names
                    .iter()
                    .map(|n| {
                        (
                            n.clone(),
                            Member {
                                out: false,
                                since: now,
                            },
                        )
                    })
                    .collect(),
            ),
            changes: Mutex::default(),
            zero_reported: Mutex::default(),
            requests: Mutex::default(),
            baseline: 5,
            decay,
            checking,
        }
    }

    /// Sets the member's request counter.
    pub fn set_requests(&self, name: &str, n: u64) {
        self.requests.lock().unwrap().insert(name.to_string(), n);
    }

    pub fn requests(&self, name: &str) -> u64 {
        self.requests
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.members.lock().unwrap().contains_key(name)
    }

    pub fn is_out(&self, name: &str) -> bool {
        self.members
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|m| m.out)
    }

    /// Takes the member out (`true`) or puts it back; records a change.
    pub fn set_out(&self, name: &str, out: bool) {
        let mut all = self.members.lock().unwrap();
        let Some(m) = all.get_mut(name) else { return };
        if m.out != out {
            m.out = out;
            m.since = Instant::now();
            self.changes.lock().unwrap().push((
                SystemTime::now(),
                name.to_string(),
                if out { Change::Out } else { Change::Back },
            ));
            if out {
                self.zero_reported.lock().unwrap().remove(name);
            }
        }
    }

    /// The member's connections as the LB would report them now (recording
    /// the first zero reported after a drain).
    pub fn report_connections(&self, name: &str) -> u64 {
        let all = self.members.lock().unwrap();
        let Some(m) = all.get(name) else { return 0 };
        let n = if m.out {
            let left = self.decay.saturating_sub(m.since.elapsed());
            (self.baseline as f64 * left.as_secs_f64() / self.decay.as_secs_f64().max(1e-9)).ceil()
                as u64
        } else {
            self.baseline
        };
        if m.out && n == 0 {
            self.zero_reported
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_insert_with(SystemTime::now);
        }
        n
    }

    /// Back in rotation and past its health check.
    pub fn checked_up(&self, name: &str) -> bool {
        let all = self.members.lock().unwrap();
        all.get(name)
            .is_some_and(|m| !m.out && m.since.elapsed() >= self.checking)
    }

    pub fn changes(&self) -> Vec<(SystemTime, String, Change)> {
        self.changes.lock().unwrap().clone()
    }

    pub fn zero_reported(&self, name: &str) -> Option<SystemTime> {
        self.zero_reported.lock().unwrap().get(name).copied()
    }

    /// The most members out at the same moment.
    pub fn max_out_at_once(&self) -> usize {
        let mut out = std::collections::HashSet::new();
        let mut max = 0;
        for (_, name, c) in self.changes() {
            match c {
                Change::Out => out.insert(name),
                Change::Back => out.remove(&name),
            };
            max = max.max(out.len());
        }
        max
    }
}
