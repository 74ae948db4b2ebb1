//! Run state on etcd: the journal, the run history and the farm lock, so
//! any controller host can see and resume a run.
//!
//! ```text
//! <prefix>/farms/<farm>/lock                        who runs on the farm now (on an etcd lease)
//! <prefix>/farms/<farm>/runs/<run_id>/0000000000    the run header (the run contract)
//! <prefix>/farms/<farm>/runs/<run_id>/0000000001..  each record, in order
//! ```
//!
//! Every record is written in a transaction that holds only while the lock
//! is this controller's: a controller that lost the farm (its lease ran out
//! and another one took over) cannot add to the run any more.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp,
};
use farm_inventory::EtcdStore as Config;
use tokio::sync::{mpsc, watch};

use super::StoreError;
use crate::journal::{Header, Journal, LoadedRun, Pending, Record};

/// The farm lock's etcd lease by default: a controller silent this long
/// loses it.
pub const LOCK_TTL: i64 = 15;
/// How long a batch of records is tried before the journal is declared
/// unwritable (a leader election takes a second or two).
const WRITE_WITHIN: Duration = Duration::from_secs(10);
/// At most this many records in one transaction (etcd's own limit is 128
/// operations, and the lock compare is one).
const BATCH: usize = 64;

pub struct EtcdStore {
    client: Client,
    pub endpoints: Vec<String>,
    prefix: String,
    /// The farm lock's lease, in seconds.
    ttl: i64,
}

/// What the lock key holds: who runs on the farm.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LockValue {
    pub run_id: String,
    pub holder: String,
    pub pid: u32,
    pub since: String,
}

/// This controller's hold on a farm: its etcd lease, kept alive by a task;
/// `lost` turns true when the lease could not be kept.
pub struct FarmLock {
    pub key: String,
    pub value: String,
    pub lease: i64,
    pub lost: watch::Receiver<bool>,
    keepalive: tokio::task::JoinHandle<()>,
    store: Arc<EtcdStore>,
}

impl EtcdStore {
    pub async fn connect(cfg: &Config) -> Result<EtcdStore, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some(t) = &cfg.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| StoreError(format!("could not read {}: {e}", p.display())))
            };
            let tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&t.ca)?))
                .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?));
            opts = opts.with_tls(tls);
        }
        if let Some((user, secret)) = &cfg.user {
            let password = crate::secret::read(secret).map_err(|e| e.to_string())?;
            opts = opts.with_user(user.clone(), password.expose().to_string());
        }
        let client = Client::connect(cfg.endpoints.clone(), Some(opts))
            .await
            .map_err(|e| StoreError(format!("could not connect: {e}")))?;
        let store = EtcdStore {
            client,
            endpoints: cfg.endpoints.clone(),
            prefix: cfg.prefix.clone(),
            ttl: cfg.lock_ttl.as_secs().max(3) as i64,
        };
        // Connecting is lazy: one read says the cluster answers.
        store
            .client()
            .get(
                format!("{}/", store.prefix),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| StoreError(format!("does not answer: {e}")))?;
        Ok(store)
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    fn farm_key(&self, farm: &str) -> String {
        format!("{}/farms/{farm}", self.prefix)
    }

    fn run_key(&self, farm: &str, run_id: &str) -> String {
        format!("{}/runs/{run_id}/", self.farm_key(farm))
    }

    /// Takes the farm: create-if-absent on the lock key, on a lease of our
    /// own kept alive from here on. `takeover` replaces a lock held for
    /// the same run (a human confirmed its controller is dead).
    pub async fn lock(
        self: &Arc<Self>,
        farm: &str,
        value: &LockValue,
        takeover: bool,
    ) -> Result<FarmLock, LockRefused> {
        self.lock_key(format!("{}/lock", self.farm_key(farm)), value, takeover)
            .await
    }

    /// The farm's guard seat: the same create-if-absent on a lease as the
    /// farm lock, on a key of its own (a guard stands by while another
    /// holds it, and takes it when that one's lease ends).
    pub async fn guard_lock(
        self: &Arc<Self>,
        farm: &str,
        value: &LockValue,
    ) -> Result<FarmLock, LockRefused> {
        self.lock_key(format!("{}/guard", self.farm_key(farm)), value, false)
            .await
    }

    /// Who holds the farm lock (a run), if anyone.
    pub async fn lock_holder(&self, farm: &str) -> Result<Option<LockValue>, StoreError> {
        let text = self.get(&format!("{}/lock", self.farm_key(farm))).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Who holds the guard seat, if anyone.
    pub async fn guard_holder(&self, farm: &str) -> Result<Option<LockValue>, StoreError> {
        let text = self.get(&format!("{}/guard", self.farm_key(farm))).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// A value under the farm's key (`guard-state`, ...).
    pub async fn get_farm(&self, farm: &str, name: &str) -> Result<Option<String>, StoreError> {
        self.get(&format!("{}/{name}", self.farm_key(farm))).await
    }

    /// Writes a value under the farm's key, only while `lock` holds.
    pub async fn put_farm(
        &self,
        farm: &str,
        name: &str,
        value: String,
        lock: &FarmLock,
    ) -> Result<(), StoreError> {
        let mut c = self.client();
        let txn = Txn::new()
            .when([Compare::value(
                lock.key.clone(),
                CompareOp::Equal,
                lock.value.clone(),
            )])
            .and_then([TxnOp::put(
                format!("{}/{name}", self.farm_key(farm)),
                value,
                None,
            )]);
        let resp = c
            .txn(txn)
            .await
            .map_err(|e| StoreError(format!("could not write {name}: {e}")))?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(StoreError(format!(
                "{name} not written: the lock is no longer ours"
            )))
        }
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.client();
        let resp = c
            .get(key, None)
            .await
            .map_err(|e| StoreError(format!("could not read {key}: {e}")))?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_string)))
    }

    async fn lock_key(
        self: &Arc<Self>,
        key: String,
        value: &LockValue,
        takeover: bool,
    ) -> Result<FarmLock, LockRefused> {
        let mut c = self.client();
        let text = serde_json::to_string(value).map_err(|e| LockRefused::Store(e.to_string()))?;
        let lease = c
            .lease_grant(self.ttl, None)
            .await
            .map_err(|e| LockRefused::Store(format!("could not get a lease: {e}")))?
            .id();
        let put = TxnOp::put(
            key.clone(),
            text.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let absent = Compare::create_revision(key.clone(), CompareOp::Equal, 0);
        let txn = Txn::new()
            .when([absent])
            .and_then([put.clone()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = c
            .txn(txn)
            .await
            .map_err(|e| LockRefused::Store(format!("could not take the farm lock: {e}")))?;
        if !resp.succeeded() {
            let current = first_value(&resp);
            let held: Option<LockValue> = current
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok());
            let same_run = held.as_ref().is_some_and(|h| h.run_id == value.run_id);
            if !(takeover && same_run) {
                let _ = c.lease_revoke(lease).await;
                return Err(LockRefused::Held(held.map_or_else(
                    || current.unwrap_or_default(),
                    |h| {
                        format!(
                            "run {} of {} (pid {}) since {}",
                            h.run_id, h.holder, h.pid, h.since
                        )
                    },
                )));
            }
            // Replace exactly the lock we saw, nobody else's.
            let seen = Compare::value(key.clone(), CompareOp::Equal, current.unwrap_or_default());
            let resp = c
                .txn(Txn::new().when([seen]).and_then([put]))
                .await
                .map_err(|e| {
                    LockRefused::Store(format!("could not take the farm lock over: {e}"))
                })?;
            if !resp.succeeded() {
                let _ = c.lease_revoke(lease).await;
                return Err(LockRefused::Held(
                    "another controller took it over first".into(),
                ));
            }
        }
        let (lost_tx, lost) = watch::channel(false);
        let keepalive = tokio::spawn(keep_alive(c, lease, self.ttl, lost_tx));
        Ok(FarmLock {
            key,
            value: text,
            lease,
            lost,
            keepalive,
            store: self.clone(),
        })
    }

    /// A journal writing under the run's key, each batch only while `lock`
    /// holds; `next` is the first record number (1 after the header).
    pub fn journal(&self, farm: &str, run_id: &str, lock: &FarmLock, next: u64) -> Journal {
        let (tx, rx) = mpsc::unbounded_channel();
        let base = self.run_key(farm, run_id);
        let label = PathBuf::from(format!("etcd:{base}"));
        let writer = Writer {
            base,
            lock_key: lock.key.clone(),
            lock_value: lock.value.clone(),
            next,
        };
        tokio::spawn(writer.run(self.client(), rx));
        Journal::remote(label, tx)
    }

    /// Writes a new run's header (record 0), under the lock.
    pub async fn create(
        &self,
        farm: &str,
        header: &Header,
        lock: &FarmLock,
    ) -> Result<Journal, StoreError> {
        let line = serde_json::to_string(&Record::Run(Box::new(header.clone())))
            .map_err(|e| e.to_string())?;
        let key = format!("{}{:010}", self.run_key(farm, &header.run_id), 0);
        let txn = Txn::new()
            .when([
                Compare::value(lock.key.clone(), CompareOp::Equal, lock.value.clone()),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, line, None)]);
        let resp = self.client().txn(txn).await.map_err(|e| e.to_string())?;
        if !resp.succeeded() {
            return Err(StoreError(
                "the farm lock is no longer this controller's".into(),
            ));
        }
        Ok(self.journal(farm, &header.run_id, lock, 1))
    }

    /// Every run's records under `farm` (every farm when `None`), each run
    /// read back as a journal.
    pub async fn runs(&self, farm: Option<&str>) -> Result<Vec<LoadedRun>, StoreError> {
        let prefix = match farm {
            Some(f) => format!("{}/", self.farm_key(f)),
            None => format!("{}/farms/", self.prefix),
        };
        let resp = self
            .client()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let mut by_run: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for kv in resp.kvs() {
            let key = kv.key_str().unwrap_or_default();
            // <prefix>/farms/<farm>/runs/<run_id>/<n>
            let Some((run, _n)) = key
                .split_once("/runs/")
                .and_then(|(_, rest)| rest.rsplit_once('/'))
            else {
                continue;
            };
            let base = &key[..key.len() - _n.len()];
            by_run
                .entry(format!("{base}\u{0}{run}"))
                .or_default()
                .push(kv.value_str().unwrap_or_default().to_string());
        }
        let mut out = Vec::new();
        for (k, lines) in by_run {
            let base = k.split('\u{0}').next().unwrap_or_default();
            let label = PathBuf::from(format!("etcd:{base}"));
            match crate::journal::parse(&label, lines.into_iter().map(Ok)) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("skipping run {e}"),
            }
        }
        out.sort_by(|a, b| a.header.run_id.cmp(&b.header.run_id));
        Ok(out)
    }

    /// Copies a run read from a local journal under `farm`, unless a run
    /// with its id is there already (`false`).
    pub async fn import(&self, farm: &str, run: &LoadedRun) -> Result<bool, StoreError> {
        let base = self.run_key(farm, &run.header.run_id);
        let mut lines = vec![
            serde_json::to_string(&Record::Run(Box::new(run.header.clone())))
                .map_err(|e| e.to_string())?,
        ];
        for r in &run.records {
            lines
                .push(serde_json::to_string(&Record::Phase(r.clone())).map_err(|e| e.to_string())?);
        }
        if let Some(end) = &run.end {
            lines
                .push(serde_json::to_string(&Record::End(end.clone())).map_err(|e| e.to_string())?);
        }
        let first = format!("{base}{:010}", 0);
        let mut c = self.client();
        for (k, chunk) in lines.chunks(BATCH).enumerate() {
            let puts: Vec<TxnOp> = chunk
                .iter()
                .enumerate()
                .map(|(j, line)| {
                    TxnOp::put(format!("{base}{:010}", k * BATCH + j), line.clone(), None)
                })
                .collect();
            // The first batch only if the run is not there; the others
            // follow it.
            let when = if k == 0 {
                vec![Compare::create_revision(first.clone(), CompareOp::Equal, 0)]
            } else {
                Vec::new()
            };
            let r = c
                .txn(Txn::new().when(when).and_then(puts))
                .await
                .map_err(|e| e.to_string())?;
            if !r.succeeded() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The number after the last record of a run (where a resume goes on).
    pub async fn next_record(&self, farm: &str, run_id: &str) -> Result<u64, StoreError> {
        let resp = self
            .client()
            .get(
                self.run_key(farm, run_id),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1))
    }
}

/// Why the farm lock was not taken.
#[derive(Debug)]
pub enum LockRefused {
    /// Another controller holds it.
    Held(String),
    /// The store did not answer.
    Store(String),
}

fn first_value(resp: &etcd_client::TxnResponse) -> Option<String> {
    resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_string)),
        _ => None,
    })
}

/// Keeps the lease alive every third of its time; says `lost` when it
/// cannot for longer than the lease lives, or etcd says it is gone.
async fn keep_alive(mut c: Client, lease: i64, ttl: i64, lost: watch::Sender<bool>) {
    let every = Duration::from_secs((ttl / 3).max(1) as u64);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let ok = async {
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.ok()?;
            keeper.keep_alive().await.ok()?;
            let resp = tokio::time::timeout(every, stream.message())
                .await
                .ok()?
                .ok()??;
            (resp.ttl() > 0).then_some(())
        }
        .await;
        match ok {
            Some(()) => last_ok = tokio::time::Instant::now(),
            None if last_ok.elapsed() >= Duration::from_secs(ttl as u64) => {
                tracing::warn!("the farm lock's etcd lease is lost");
                lost.send_replace(true);
                return;
            }
            None => {}
        }
        tokio::time::sleep(every).await;
    }
}

impl FarmLock {
    /// Gives the farm back (at the end of a run).
    pub async fn release(self) {
        self.keepalive.abort();
        let mut c = self.store.client();
        let txn = Txn::new()
            .when([Compare::value(
                self.key.clone(),
                CompareOp::Equal,
                self.value.clone(),
            )])
            .and_then([TxnOp::delete(self.key.clone(), None)]);
        let _ = c.txn(txn).await;
        let _ = c.lease_revoke(self.lease).await;
    }
}

/// Writes records in batches, each batch in one transaction that holds
/// only while the lock is still ours.
struct Writer {
    base: String,
    lock_key: String,
    lock_value: String,
    next: u64,
}

impl Writer {
    /// Commits one batch, trying again (for up to [`WRITE_WITHIN`]) while
    /// the cluster is unreachable or electing a leader: a put of the same
    /// records again is harmless, they have their numbers.
    async fn commit(
        &mut self,
        c: &mut Client,
        txn: Txn,
        records: usize,
    ) -> Result<(), (std::io::ErrorKind, String)> {
        use std::io::ErrorKind;
        let deadline = tokio::time::Instant::now() + WRITE_WITHIN;
        let mut pause = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let last = match tokio::time::timeout(left, c.txn(txn.clone())).await {
                Ok(Ok(r)) if r.succeeded() => {
                    self.next += records as u64;
                    return Ok(());
                }
                // Another controller has the farm: this one must not act.
                Ok(Ok(_)) => {
                    return Err((
                        ErrorKind::PermissionDenied,
                        "the farm lock on etcd is no longer this controller's".to_string(),
                    ))
                }
                Ok(Err(e)) => format!("etcd: {e}"),
                Err(_) => "etcd did not answer".to_string(),
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err((
                    ErrorKind::TimedOut,
                    format!("{last} (for {})", crate::human::duration(WRITE_WITHIN)),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn run(mut self, mut c: Client, mut rx: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < BATCH {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            let puts: Vec<TxnOp> = group
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    TxnOp::put(
                        format!("{}{:010}", self.base, self.next + k as u64),
                        p.line.clone(),
                        None,
                    )
                })
                .collect();
            let txn = Txn::new()
                .when([Compare::value(
                    self.lock_key.clone(),
                    CompareOp::Equal,
                    self.lock_value.clone(),
                )])
                .and_then(puts);
            let result = self.commit(&mut c, txn, group.len()).await;
            for p in group {
                let _ = p
                    .done
                    .send(result.clone().map_err(|(k, m)| std::io::Error::new(k, m)));
            }
        }
    }
}
