//! Serving the agent: takes a bound listener and a shutdown future, so
//! tests bind `127.0.0.1:0` and stop it cleanly.
//!
//! With TLS the agent terminates it itself: it accepts at once, always;
//! every handshake runs in its own task, bounded in time, so a client that
//! never finishes one cannot hold up others, and a rejected client (no
//! certificate, wrong CA, expired, silent) is written to the audit log.
//! What bounds the connections is in [`crate::connections`].
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use farm_proto::NodeAgentServer;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;

use crate::audit::Audit;
use crate::connections::{Admitted, Connections, Limits, Tracked};
use crate::iis::Iis;
use crate::ops::OpsConfig;
use crate::security::Authorization;
use crate::service::AgentService;

/// Largest request the agent decodes; every legitimate one is tiny.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
pub use crate::connections::DEFAULT_MAX_CONNECTIONS;
/// How often the TLS files are looked at for a rotation.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// How the agent authenticates and authorizes callers.
#[derive(Clone, Default)]
pub struct Security {
    /// `None`: plaintext (`--insecure`), every caller is an operator.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The files `tls` was made from: when they change (a certificate
    /// rotated, a new revocation list), new connections get the new
    /// configuration without a restart; one that does not load is
    /// reported and the last good one stays.
    pub reload: Option<crate::security::TlsFiles>,
    /// Connections served at once (0: [`DEFAULT_MAX_CONNECTIONS`]); see
    /// [`crate::connections`] for what happens at the cap.
    pub max_connections: usize,
    /// A served connection with no call for this long is closed (`None`:
    /// [`crate::connections::DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Option<Duration>,
    pub authz: Authorization,
    pub audit: Option<Arc<Audit>>,
    /// Calls and TLS rejections are counted here too.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The TLS configuration new connections get, swapped on a reload.
type CurrentTls = Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>;

/// Re-reads `files` when they change, until the server is gone.
fn watch_tls_files(
    files: crate::security::TlsFiles,
    current: std::sync::Weak<std::sync::RwLock<Arc<rustls::ServerConfig>>>,
) {
    tokio::spawn(async move {
        let mut seen = files.fingerprint();
        let mut failed_for = None;
        loop {
            tokio::time::sleep(RELOAD_CHECK).await;
            let Some(current) = current.upgrade() else {
                return;
            };
            let now = files.fingerprint();
            if now == seen {
                continue;
            }
            match crate::security::server_config(&files) {
                Ok(config) => {
                    *current.write().unwrap_or_else(|e| e.into_inner()) = config;
                    tracing::warn!(
                        "TLS files changed: new connections use the reloaded certificate, key, CA and revocation list"
                    );
                    seen = now;
                    failed_for = None;
                }
                // A rotation half-way (the certificate written, not yet
                // its key) fails; it is tried again on the next change or
                // tick, and said once per state of the files.
                Err(e) => {
                    if failed_for.as_ref() != Some(&now) {
                        tracing::error!("TLS files changed but do not load ({e}); still serving with the previous ones");
                        failed_for = Some(now);
                    }
                }
            }
        }
    });
}

pub async fn run(
    listener: TcpListener,
    node: String,
    iis: Arc<dyn Iis>,
    cfg: OpsConfig,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve(
        listener,
        AgentService::new(node, iis, cfg),
        security,
        shutdown,
    )
    .await
}

/// Serves `service` (built with what it needs, e.g. deployments) with
/// `security`.
pub async fn serve(
    listener: TcpListener,
    service: AgentService,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = service
        .with_security(security.authz.clone(), security.audit.clone())
        .with_metrics(security.metrics.clone());
    let mut builder = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(600))
        .concurrency_limit_per_connection(32)
        .max_concurrent_streams(64)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let connections = Connections::new(
        Limits::new(security.max_connections, security.idle_timeout),
        security.audit.clone(),
        security.metrics.clone(),
    );
    let svc = NodeAgentServer::new(service.with_connections(connections.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    // The standard gRPC health service (`grpc.health.v1.Health`) for
    // monitors: the agent and its one service serve while it runs.
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<NodeAgentServer<AgentService>>().await;
    let router = builder.add_service(health_svc).add_service(svc);
    match security.tls {
        Some(tls) => {
            let current: CurrentTls = Arc::new(std::sync::RwLock::new(tls));
            if let Some(files) = security.reload {
                watch_tls_files(files, Arc::downgrade(&current));
            }
            router
                .serve_with_incoming_shutdown(
                    tls_incoming(listener, current, connections, security.authz),
                    shutdown,
                )
                .await
        }
        None => {
            // tonic sets TCP_NODELAY only on listeners it binds itself;
            // without it small streamed replies wait ~40 ms for delayed
            // ACKs (Nagle).
            let incoming = TcpListenerStream::new(listener).filter_map(move |conn| match conn {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let peer = s.peer_addr().ok()?;
                    match connections.admit("insecure", peer) {
                        Admitted::Yes(reg) | Admitted::Over(reg, _) => {
                            Some(Ok(Tracked::new(s, Some(reg))))
                        }
                        Admitted::No => None,
                    }
                }
                Err(e) => Some(Err(e)),
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Where a connection not yet served is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// No byte yet: the first to go when room is needed.
    Silent,
    /// Its TLS handshake is under way.
    Handshaking,
    /// Its first bytes were there when it was accepted: a client that
    /// means to talk, kept unless nothing else can go.
    Talking,
}

/// Connections not yet past their TLS handshake, oldest first by id.
#[derive(Default)]
struct Pending {
    next: u64,
    conns: std::collections::BTreeMap<u64, (SocketAddr, Stage, tokio::task::AbortHandle)>,
}

impl Pending {
    /// Stops the oldest connection of the first stage that has one.
    fn evict(&mut self) -> Option<(SocketAddr, Stage)> {
        let (&id, _) = self
            .conns
            .iter()
            .min_by_key(|(id, (_, stage, _))| (*stage, **id))?;
        let (peer, stage, task) = self.conns.remove(&id)?;
        task.abort();
        Some((peer, stage))
    }
}

/// Whether the client's first bytes are already there (a real peek of
/// the socket, not the runtime's readiness, which a new connection does
/// not have yet).
fn talking(tcp: TcpStream) -> std::io::Result<(TcpStream, bool)> {
    let std = tcp.into_std()?;
    let mut byte = [0u8; 1];
    let talking = matches!(std.peek(&mut byte), Ok(n) if n > 0);
    Ok((TcpStream::from_std(std)?, talking))
}

/// Accepts at once, always: a connection that does not send its
/// ClientHello makes room for newer ones (see [`crate::connections`]).
fn tls_incoming(
    listener: TcpListener,
    config: CurrentTls,
    connections: Arc<Connections>,
    authz: crate::security::Authorization,
) -> ReceiverStream<Result<Tracked<TlsConn>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let limits = connections.limits().clone();
    let pending = Arc::new(Mutex::new(Pending::default()));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, mostly: give the
                        // closing connections a moment.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Ok((tcp, talking)) = talking(tcp) else {
                continue;
            };
            let stage = if talking {
                Stage::Talking
            } else {
                Stage::Silent
            };
            // Room among those not yet served: the oldest silent one goes.
            let evicted = {
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = Vec::new();
                while p.conns.len() >= limits.pending {
                    match p.evict() {
                        Some(e) => out.push(e),
                        None => break,
                    }
                }
                out
            };
            for (at, stage) in evicted {
                let what = match stage {
                    Stage::Silent => "no TLS ClientHello",
                    _ => "TLS handshake unfinished",
                };
                connections.said(
                    "tls-handshake",
                    at,
                    "unauthenticated",
                    format!(
                        "rejected: {what}, closed to make room ({} connections at once before their handshake)",
                        limits.pending
                    ),
                );
            }
            let ctx = Handshake {
                config: config.clone(),
                connections: connections.clone(),
                authz: authz.clone(),
                pending: pending.clone(),
                limits: limits.clone(),
                tx: tx.clone(),
            };
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            p.next += 1;
            let id = p.next;
            // The task waits on this lock before it looks at its entry,
            // so the entry is in before then.
            let task = tokio::spawn(ctx.run(id, tcp, peer));
            p.conns.insert(id, (peer, stage, task.abort_handle()));
        }
    });
    ReceiverStream::new(rx)
}

/// Takes a connection out of the pending table when its handshake task
/// ends, whichever way.
struct Done<'a>(&'a Mutex<Pending>, u64);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .remove(&self.1);
    }
}

/// One connection's way from accept to served.
struct Handshake {
    config: CurrentTls,
    connections: Arc<Connections>,
    authz: crate::security::Authorization,
    pending: Arc<Mutex<Pending>>,
    limits: crate::connections::Limits,
    tx: mpsc::Sender<Result<Tracked<TlsConn>, std::io::Error>>,
}

impl Handshake {
    async fn run(self, id: u64, tcp: TcpStream, peer: SocketAddr) {
        let started = tokio::time::Instant::now();
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let hello = tokio::time::timeout(self.limits.hello_timeout, acceptor).await;
        self.handshaking(id);
        // Out of the table however this ends.
        let _done = Done(&self.pending, id);
        let start = match hello {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => return self.rejected(peer, format!("rejected: {e}")),
            Err(_) => {
                return self.rejected(
                    peer,
                    format!(
                        "rejected: no TLS ClientHello within {:?}",
                        self.limits.hello_timeout
                    ),
                )
            }
        };
        // The configuration of the moment: a reload applies to the
        // connections made after it.
        let config = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let left = self
            .limits
            .handshake_timeout
            .saturating_sub(started.elapsed());
        let conn = match tokio::time::timeout(left, start.into_stream(config)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return self.rejected(peer, format!("rejected: {e}")),
            Err(_) => {
                return self.rejected(
                    peer,
                    format!(
                        "rejected: no TLS handshake within {:?}",
                        self.limits.handshake_timeout
                    ),
                )
            }
        };
        let cert = conn
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let who = self.authz.identify(cert.as_deref());
        let reg = match self.connections.admit(&who.name, peer) {
            Admitted::Yes(reg) | Admitted::Over(reg, _) => reg,
            Admitted::No => return,
        };
        let _ = self.tx.send(Ok(Tracked::new(conn, Some(reg)))).await;
    }

    /// Its ClientHello came (or not): no longer silent.
    fn handshaking(&self, id: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = p.conns.get_mut(&id) {
            e.1 = Stage::Handshaking;
        }
    }

    fn rejected(&self, peer: SocketAddr, outcome: String) {
        self.connections
            .said("tls-handshake", peer, "unauthenticated", outcome);
    }
}
