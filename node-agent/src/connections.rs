//! Who holds the agent's connections, and making room for its controller.
//!
//! Three stages, each bounded so that no one who can merely reach the port
//! can lock the farm's controllers out:
//! - **not yet served**: accepted, the TLS handshake not finished; at
//!   most [`Limits::pending`] at once. One more closes the oldest of them
//!   that has not sent a byte (then the oldest still handshaking): a real
//!   client sends its ClientHello with its first packet, so only
//!   connections that never mean to are ever old. None stays silent
//!   longer than [`Limits::hello_timeout`] or unauthenticated longer than
//!   [`Limits::handshake_timeout`].
//! - **served**: authenticated. At most [`Limits::max_connections`] in all
//!   and [`Limits::per_identity`] per certificate name. When a cap is
//!   reached, the connection idle the longest (no call under way) is
//!   closed to make room; when all are busy, the new connection is served
//!   just long enough to answer its first call `RESOURCE_EXHAUSTED` with
//!   the limit's name, then closed. A connection idle for
//!   [`Limits::idle_timeout`] is closed.
//!
//! Every connection closed by a limit is counted in the TLS-rejection
//! metric and written to the audit log (`tls-handshake` before the
//! handshake, `connect` after).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

use crate::audit::{self, Audit, Entry};

/// Authenticated connections at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// A served connection with no call for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connection that has asked nothing yet is kept open when
/// every slot is busy: long enough to answer its first call with why.
const OVER_LIMIT_GRACE: Duration = Duration::from_secs(2);
/// Over-limit connections kept for that answer at once; more are closed
/// at once.
const MAX_OVER_LIMIT: usize = 16;

/// The limits, with their defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub per_identity: usize,
    pub idle_timeout: Duration,
    pub pending: usize,
    pub hello_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Limits {
    /// The limits for a cap of `max_connections` (0: the default) and an
    /// idle timeout (`None`: the default): a certificate name may hold a
    /// quarter of the slots (at least 8).
    pub fn new(max_connections: usize, idle_timeout: Option<Duration>) -> Self {
        let max = match max_connections {
            0 => DEFAULT_MAX_CONNECTIONS,
            n => n,
        };
        Self {
            max_connections: max,
            per_identity: (max / 4).max(8).min(max),
            idle_timeout: idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            pending: 256,
            hello_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(0, None)
    }
}

/// Closes a connection from outside: its next read is end-of-file and its
/// writes fail, so the HTTP/2 server drops it.
#[derive(Default)]
pub struct Kill {
    killed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Kill {
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }

    fn killed(&self, cx: &Context<'_>) -> bool {
        if self.killed.load(Ordering::SeqCst) {
            return true;
        }
        let mut w = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*w {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
        // Killed between the check and the waker's store: seen now.
        self.killed.load(Ordering::SeqCst)
    }
}

struct Conn {
    identity: String,
    peer: SocketAddr,
    last_active: Instant,
    calls: usize,
    kill: Arc<Kill>,
    /// Already closed by a limit (not counted while it goes away).
    evicted: bool,
    /// Admitted over the limit: its first call is answered with this.
    over: Option<String>,
}

impl Conn {
    fn counts(&self) -> bool {
        !self.evicted && self.over.is_none()
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Conn>,
    by_peer: HashMap<SocketAddr, u64>,
}

/// The served connections.
pub struct Connections {
    limits: Limits,
    inner: Mutex<Inner>,
    audit: Option<Arc<Audit>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

farm_proto::message_error! {
    /// A call on a connection admitted over the limit: the limit it hit.
    OverLimit
}

/// What admission decided.
pub enum Admitted {
    Yes(Registration),
    /// Served only to answer its first call with the reason.
    Over(Registration, String),
    /// Closed at once (said and audited).
    No,
}

/// A connection's place in the table, given back when it closes.
pub struct Registration {
    table: Weak<Connections>,
    id: u64,
    pub kill: Arc<Kill>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(t) = self.table.upgrade() {
            let mut inner = t.lock();
            if let Some(c) = inner.conns.remove(&self.id) {
                if inner.by_peer.get(&c.peer) == Some(&self.id) {
                    inner.by_peer.remove(&c.peer);
                }
            }
        }
    }
}

/// One call under way on a connection: the connection is not idle while
/// it lives.
pub struct CallGuard {
    table: Weak<Connections>,
    id: u64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(t) = self.table.upgrade() {
            if let Some(c) = t.lock().conns.get_mut(&self.id) {
                c.calls = c.calls.saturating_sub(1);
                c.last_active = Instant::now();
            }
        }
    }
}

impl Connections {
    pub fn new(
        limits: Limits,
        audit: Option<Arc<Audit>>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Arc<Self> {
        let table = Arc::new(Self {
            limits,
            inner: Mutex::default(),
            audit,
            metrics,
        });
        sweep_idle(Arc::downgrade(&table));
        table
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Served connections now (not counting those being closed).
    pub fn served(&self) -> usize {
        self.lock().conns.values().filter(|c| c.counts()).count()
    }

    /// Admits an authenticated connection of `identity` from `peer`,
    /// closing the longest-idle one of a full cap to make room.
    pub fn admit(self: &Arc<Self>, identity: &str, peer: SocketAddr) -> Admitted {
        let mut inner = self.lock();
        let mine = inner
            .conns
            .values()
            .filter(|c| c.counts() && c.identity == identity)
            .count();
        let total = inner.conns.values().filter(|c| c.counts()).count();
        let full = if mine >= self.limits.per_identity {
            Some((
                true,
                format!(
                    "`{identity}` already holds {mine} connections (the agent's per-certificate cap)"
                ),
            ))
        } else if total >= self.limits.max_connections {
            Some((
                false,
                format!(
                    "the agent's connection limit ({}) is reached",
                    self.limits.max_connections
                ),
            ))
        } else {
            None
        };
        let mut over = None;
        if let Some((same_identity, why)) = full {
            let victim = inner
                .conns
                .iter()
                .filter(|(_, c)| c.counts() && c.calls == 0)
                .filter(|(_, c)| !same_identity || c.identity == identity)
                .min_by_key(|(_, c)| c.last_active)
                .map(|(id, _)| *id);
            match victim {
                Some(v) => {
                    let c = inner.conns.get_mut(&v).expect("victim is in the table");
                    c.evicted = true;
                    c.kill.kill();
                    let (who, at, idle) = (c.identity.clone(), c.peer, c.last_active.elapsed());
                    drop(inner);
                    self.said(
                        "connect",
                        at,
                        &who,
                        format!(
                            "closed: idle for {:.1}s, to make room for a new connection of `{identity}` from {peer} ({why})",
                            idle.as_secs_f64()
                        ),
                    );
                    inner = self.lock();
                }
                None => over = Some(format!("{why}, and every connection has a call under way")),
            }
        }
        if let Some(why) = &over {
            let held = inner.conns.values().filter(|c| c.over.is_some()).count();
            if held >= MAX_OVER_LIMIT {
                drop(inner);
                self.said("connect", peer, identity, format!("rejected: {why}"));
                return Admitted::No;
            }
        }
        inner.next += 1;
        let id = inner.next;
        let kill = Arc::new(Kill::default());
        inner.conns.insert(
            id,
            Conn {
                identity: identity.to_string(),
                peer,
                last_active: Instant::now(),
                calls: 0,
                kill: kill.clone(),
                evicted: false,
                over: over.clone(),
            },
        );
        inner.by_peer.insert(peer, id);
        drop(inner);
        let reg = Registration {
            table: Arc::downgrade(self),
            id,
            kill: kill.clone(),
        };
        match over {
            None => Admitted::Yes(reg),
            Some(why) => {
                self.said("connect", peer, identity, format!("rejected: {why}"));
                // Closed after its first answer, or after the grace.
                tokio::spawn(async move {
                    tokio::time::sleep(OVER_LIMIT_GRACE).await;
                    kill.kill();
                });
                Admitted::Over(reg, why)
            }
        }
    }

    /// A call starts on the connection from `peer`: a guard that keeps it
    /// from counting as idle, or the reason it may not be served.
    pub fn call(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
    ) -> Result<Option<CallGuard>, OverLimit> {
        let Some(peer) = peer else {
            return Ok(None);
        };
        let mut inner = self.lock();
        let Some(&id) = inner.by_peer.get(&peer) else {
            return Ok(None);
        };
        let Some(c) = inner.conns.get_mut(&id) else {
            return Ok(None);
        };
        if let Some(why) = &c.over {
            let why = format!("{why}; try again, or raise max_connections in the agent's config");
            c.kill.kill();
            return Err(OverLimit(why));
        }
        c.calls += 1;
        c.last_active = Instant::now();
        Ok(Some(CallGuard {
            table: Arc::downgrade(self),
            id,
        }))
    }

    /// Logs, counts and audits a connection closed by a limit.
    pub fn said(&self, call: &str, peer: SocketAddr, identity: &str, outcome: String) {
        tracing::warn!(%peer, identity, "{outcome}");
        if let Some(m) = &self.metrics {
            m.tls_rejected();
        }
        if let Some(a) = &self.audit {
            a.record(&Entry {
                time: audit::now(),
                identity: identity.into(),
                role: None,
                peer: Some(peer.to_string()),
                call: call.into(),
                pools: Vec::new(),
                operation_id: None,
                outcome,
                duration_ms: 0,
                detail: None,
            });
        }
    }
}

/// Closes served connections idle past the limit, until the table is gone.
fn sweep_idle(table: Weak<Connections>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        loop {
            let every = match table.upgrade() {
                Some(t) => (t.limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
                None => return,
            };
            tokio::time::sleep(every).await;
            let Some(t) = table.upgrade() else { return };
            let limit = t.limits.idle_timeout;
            let mut inner = t.lock();
            for c in inner.conns.values_mut() {
                if c.counts() && c.calls == 0 && c.last_active.elapsed() >= limit {
                    c.evicted = true;
                    c.kill.kill();
                    tracing::info!(peer = %c.peer, identity = %c.identity, "closed: no call for {limit:?} (idle timeout)");
                }
            }
        }
    });
}

/// A connection the table can close: reads end and writes fail once
/// killed. Holds its registration until it is dropped.
pub struct Tracked<S> {
    pub(crate) inner: S,
    /// Held for the connection's life: dropping it frees its place.
    _reg: Option<Registration>,
    kill: Arc<Kill>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, reg: Option<Registration>) -> Self {
        let kill = reg.as_ref().map(|r| r.kill.clone()).unwrap_or_default();
        Self {
            inner,
            _reg: reg,
            kill,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.kill.killed(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.kill.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Tracked<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn held(a: Admitted) -> Registration {
        match a {
            Admitted::Yes(r) => r,
            _ => panic!("not admitted"),
        }
    }

    #[tokio::test]
    async fn a_full_cap_closes_the_longest_idle_connection_not_the_new_one() {
        let t = Connections::new(Limits::new(3, None), None, None);
        let a = held(t.admit("x", peer(1)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = held(t.admit("y", peer(2)));
        let _busy = t.call(Some(peer(2))).unwrap();
        let _c = held(t.admit("z", peer(3)));
        // Full: the oldest idle one (a) goes, b has a call under way.
        let _d = held(t.admit("w", peer(4)));
        assert!(a.kill.killed.load(Ordering::SeqCst));
        assert!(!b.kill.killed.load(Ordering::SeqCst));
        assert_eq!(t.served(), 3);
    }

    #[tokio::test]
    async fn all_busy_means_the_new_connection_is_told_why() {
        let t = Connections::new(Limits::new(1, None), None, None);
        let _a = held(t.admit("x", peer(1)));
        let _busy = t.call(Some(peer(1))).unwrap();
        let _held = match t.admit("y", peer(2)) {
            Admitted::Over(reg, why) => {
                assert!(why.contains("connection limit (1)"), "{why}");
                reg
            }
            _ => panic!("expected over the limit"),
        };
        let err = t.call(Some(peer(2))).err().expect("refused").to_string();
        assert!(
            err.contains("every connection has a call under way"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn one_certificate_cannot_take_every_slot() {
        let mut limits = Limits::new(100, None);
        limits.per_identity = 2;
        let t = Connections::new(limits, None, None);
        let a = held(t.admit("flood", peer(1)));
        let _b = held(t.admit("flood", peer(2)));
        let other = held(t.admit("ops", peer(3)));
        // The third of `flood` closes flood's own idle one, not ops's.
        let _c = held(t.admit("flood", peer(4)));
        assert!(a.kill.killed.load(Ordering::SeqCst));
        assert!(!other.kill.killed.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let t = Connections::new(Limits::new(10, Some(Duration::from_secs(4))), None, None);
        let a = held(t.admit("x", peer(1)));
        let b = held(t.admit("x", peer(2)));
        let _busy = t.call(Some(peer(2))).unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(a.kill.killed.load(Ordering::SeqCst));
        assert!(
            !b.kill.killed.load(Ordering::SeqCst),
            "a call is under way on b"
        );
    }
}
