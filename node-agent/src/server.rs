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

/// How the agent authenticates and authorizes callers.
#[derive(Clone, Default)]
pub struct Security {
    /// `None`: plaintext (`--insecure`), every caller is an operator.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub authz: Authorization,
    pub audit: Option<Arc<Audit>>,
    /// Calls and TLS rejections are counted here too.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
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
    match security.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    tls_incoming(listener, tls, security.audit, security.metrics),
                    shutdown,
                )
                .await
        }
        None => {
            // tonic sets TCP_NODELAY only on listeners it binds itself;
            // without it small streamed replies wait ~40 ms for delayed
            // ACKs (Nagle).
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.inspect(|s| {
                    let _ = s.set_nodelay(true);
                })
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
    config: Arc<rustls::ServerConfig>,
    audit: Option<Arc<Audit>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
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
            let (acceptor, tx, audit) = (acceptor.clone(), tx.clone(), audit.clone());
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let outcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(conn)) => {
                        drop(permit);
                        let _ = tx.send(Ok(conn)).await;
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
