//! Serving the agent: takes a bound listener and a shutdown future, so
//! tests bind `127.0.0.1:0` and stop it cleanly.
//!
//! With TLS the agent terminates it itself: every handshake runs in its
//! own task, bounded in time, so a client that never finishes one cannot
//! hold up others, and a rejected client (no certificate, wrong CA,
//! expired) is written to the audit log.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use farm_proto::NodeAgentServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;

use crate::audit::{self, Audit, Entry};
use crate::iis::Iis;
use crate::ops::OpsConfig;
use crate::security::Authorization;
use crate::service::AgentService;

/// Largest request the agent decodes; every legitimate one is tiny.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 128;

/// Connections served at once unless `Security::max_connections` says.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
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
    /// Connections served at once (0: [`DEFAULT_MAX_CONNECTIONS`]); one
    /// more is closed at once and counted as rejected.
    pub max_connections: usize,
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

/// A connection that holds one of the server's connection slots until it
/// closes.
struct Slotted<S> {
    inner: S,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Slotted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Slotted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Slotted<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A slot for a new connection from `peer`, or `None` (said, counted and
/// audited) when every slot is taken.
fn take_slot(
    slots: &Arc<Semaphore>,
    peer: std::net::SocketAddr,
    audit: Option<&Audit>,
    metrics: Option<&crate::metrics::Metrics>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match slots.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            let outcome = "rejected: the agent's connection limit is reached".to_string();
            tracing::warn!(%peer, "{outcome}");
            if let Some(m) = metrics {
                m.tls_rejected();
            }
            if let Some(a) = audit {
                a.record(&Entry {
                    time: audit::now(),
                    identity: "unauthenticated".into(),
                    role: None,
                    peer: Some(peer.to_string()),
                    call: "connect".into(),
                    pools: Vec::new(),
                    operation_id: None,
                    outcome,
                    duration_ms: 0,
                    detail: None,
                });
            }
            None
        }
    }
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
    let svc = NodeAgentServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let mut builder = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(600))
        .concurrency_limit_per_connection(32)
        .max_concurrent_streams(64)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let router = builder.add_service(svc);
    let slots = Arc::new(Semaphore::new(match security.max_connections {
        0 => DEFAULT_MAX_CONNECTIONS,
        n => n,
    }));
    match security.tls {
        Some(tls) => {
            let current: CurrentTls = Arc::new(std::sync::RwLock::new(tls));
            if let Some(files) = security.reload {
                watch_tls_files(files, Arc::downgrade(&current));
            }
            router
                .serve_with_incoming_shutdown(
                    tls_incoming(listener, current, slots, security.audit, security.metrics),
                    shutdown,
                )
                .await
        }
        None => {
            // tonic sets TCP_NODELAY only on listeners it binds itself;
            // without it small streamed replies wait ~40 ms for delayed
            // ACKs (Nagle).
            let (audit, metrics) = (security.audit, security.metrics);
            let incoming = TcpListenerStream::new(listener).filter_map(move |conn| match conn {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let peer = s.peer_addr().ok()?;
                    let slot = take_slot(&slots, peer, audit.as_deref(), metrics.as_deref())?;
                    Some(Ok(Slotted {
                        inner: s,
                        _slot: slot,
                    }))
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

fn tls_incoming(
    listener: TcpListener,
    config: CurrentTls,
    slots: Arc<Semaphore>,
    audit: Option<Arc<Audit>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> ReceiverStream<Result<Slotted<TlsConn>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(slot) = take_slot(&slots, peer, audit.as_deref(), metrics.as_deref()) else {
                continue;
            };
            // The configuration of the moment: a reload applies to the
            // connections made after it.
            let acceptor = tokio_rustls::TlsAcceptor::from(
                config.read().unwrap_or_else(|e| e.into_inner()).clone(),
            );
            let (tx, audit) = (tx.clone(), audit.clone());
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let outcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(conn)) => {
                        drop(permit);
                        let _ = tx
                            .send(Ok(Slotted {
                                inner: conn,
                                _slot: slot,
                            }))
                            .await;
                        return;
                    }
                    Ok(Err(e)) => format!("rejected: {e}"),
                    Err(_) => format!("rejected: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                };
                tracing::warn!(%peer, "{outcome}");
                if let Some(m) = &metrics {
                    m.tls_rejected();
                }
                if let Some(a) = audit {
                    a.record(&Entry {
                        time: audit::now(),
                        identity: "unauthenticated".into(),
                        role: None,
                        peer: Some(peer.to_string()),
                        call: "tls-handshake".into(),
                        pools: Vec::new(),
                        operation_id: None,
                        outcome,
                        duration_ms: 0,
                        detail: None,
                    });
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
