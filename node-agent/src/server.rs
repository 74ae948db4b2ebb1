//! Serving the agent: takes a bound listener and a shutdown future, so
//! tests bind `127.0.0.1:0` and stop it cleanly.
use std::future::Future;
use std::sync::Arc;

use farm_proto::NodeAgentServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::iis::Iis;
use crate::ops::OpsConfig;
use crate::service::AgentService;

/// Largest request the agent decodes; every legitimate one is tiny.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub async fn run(
    listener: TcpListener,
    node: String,
    iis: Arc<dyn Iis>,
    cfg: OpsConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let svc = NodeAgentServer::new(AgentService::new(node, iis, cfg))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    // tonic sets TCP_NODELAY only on listeners it binds itself; without it
    // small streamed replies wait ~40 ms for delayed ACKs (Nagle).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    tonic::transport::Server::builder()
        .timeout(std::time::Duration::from_secs(600))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
