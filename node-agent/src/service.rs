//! The `farm.agent.v1.NodeAgent` gRPC service.
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_proto::names::{check_operation_id, check_pool_name};
use farm_proto::v1 as pb;
use farm_proto::NodeAgent;
use tokio::sync::{mpsc, OwnedMutexGuard};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert::{self, AgentError};
use crate::iis::Iis;
use crate::operations::{wait, Begin, Operations, Stored};
use crate::ops::{self, OpsConfig, ProgressSink};

/// At most this many pools in one recycle request.
const MAX_POOLS: usize = 64;
/// Longest WatchLoad stream.
const MAX_WATCH: Duration = Duration::from_secs(3600);
/// How often in-flight is polled when the backend has no live feed.
const LOAD_POLL: Duration = Duration::from_millis(250);

pub struct AgentService {
    node: String,
    iis: Arc<dyn Iis>,
    cfg: OpsConfig,
    ops: Operations,
    /// One IIS-changing operation (recycle, reset) at a time.
    busy: Arc<tokio::sync::Mutex<String>>,
}

impl AgentService {
    pub fn new(node: impl Into<String>, iis: Arc<dyn Iis>, cfg: OpsConfig) -> Self {
        Self {
            node: node.into(),
            iis,
            cfg,
            ops: Operations::default(),
            busy: Arc::new(tokio::sync::Mutex::new(String::new())),
        }
    }

    fn exclusive(&self, id: &str) -> Result<OwnedMutexGuard<String>, AgentError> {
        match self.busy.clone().try_lock_owned() {
            Ok(mut g) => {
                *g = id.to_string();
                Ok(g)
            }
            Err(_) => Err(AgentError::Busy(
                "another recycle or reset is running on this node".into(),
            )),
        }
    }

    async fn drain_call(
        &self,
        id: &str,
        kind: &'static str,
        present: bool,
    ) -> Result<pb::DrainReply, Status> {
        check_operation_id(id).map_err(AgentError::Invalid)?;
        let tx = match self.ops.begin(id, kind).map_err(AgentError::Invalid)? {
            Begin::Repeat(feed) => {
                return match wait(feed).await {
                    Some(Stored::Drain(r)) => Ok(r),
                    _ => Err(Status::aborted(
                        "the first call with this operation id did not finish",
                    )),
                }
            }
            Begin::New(tx) => tx,
        };
        let before = self.iis.health_file_present().await;
        let result = match before {
            Ok(was) => self
                .iis
                .set_health_file(present)
                .await
                .map(|_| was == present),
            Err(e) => Err(e),
        };
        match result {
            Ok(unchanged) => {
                let reply = pb::DrainReply {
                    drained: !present,
                    unchanged,
                };
                tx.send_replace(Some(Stored::Drain(reply)));
                Ok(reply)
            }
            Err(e) => {
                self.ops.abandon(id);
                Err(AgentError::from(e).into())
            }
        }
    }

    /// Runs `work` as a streamed operation under `id`.
    fn stream_operation<F, Fut>(
        &self,
        id: &str,
        kind: &'static str,
        work: F,
    ) -> Result<OpStream, Status>
    where
        F: FnOnce(ProgressSink) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ops::OpResult> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let sent = match self.ops.begin(id, kind).map_err(AgentError::Invalid)? {
            Begin::Repeat(feed) => {
                tokio::spawn(async move {
                    let event = match wait(feed).await {
                        Some(Stored::Operation(mut r)) => {
                            r.replayed = true;
                            Ok(convert::result_event(r))
                        }
                        _ => Err(Status::aborted(
                            "the first call with this operation id did not finish",
                        )),
                    };
                    let _ = tx.send(event).await;
                });
                return Ok(Box::pin(ReceiverStream::new(rx)));
            }
            Begin::New(sent) => sent,
        };
        let guard = match self.exclusive(id) {
            Ok(g) => g,
            Err(e) => {
                self.ops.abandon(id);
                return Err(e.into());
            }
        };
        let (ptx, mut prx) = mpsc::unbounded_channel();
        // The operation runs in its own task: a client that goes away does
        // not stop it half-way.
        let op = tokio::spawn(work(ProgressSink::new(ptx)));
        tokio::spawn(async move {
            let _guard = guard;
            let mut client = Some(tx);
            while let Some(p) = prx.recv().await {
                if let Some(c) = &client {
                    if c.send(Ok(convert::progress(p))).await.is_err() {
                        client = None;
                    }
                }
            }
            let result = match op.await {
                Ok(r) => convert::result(&r),
                Err(e) => pb::OperationResult {
                    success: false,
                    error: format!("the operation task failed: {e}"),
                    failed_step: "agent".into(),
                    ..Default::default()
                },
            };
            sent.send_replace(Some(Stored::Operation(result.clone())));
            if let Some(c) = client {
                let _ = c.send(Ok(convert::result_event(result))).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

type OpStream = Pin<Box<dyn Stream<Item = Result<pb::OperationEvent, Status>> + Send>>;
type LoadStream = Pin<Box<dyn Stream<Item = Result<pb::LoadSample, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for AgentService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let s = self.iis.status().await.map_err(AgentError::from)?;
        let in_flight = self.iis.in_flight().await.ok().flatten();
        let drained = !self
            .iis
            .health_file_present()
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(convert::status(
            &self.node,
            self.iis.backend(),
            s,
            in_flight,
            drained,
        )))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let id = req.into_inner().operation_id;
        self.drain_call(&id, "drain", false)
            .await
            .map(Response::new)
    }

    async fn undrain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let id = req.into_inner().operation_id;
        self.drain_call(&id, "undrain", true)
            .await
            .map(Response::new)
    }

    type WatchLoadStream = LoadStream;

    async fn watch_load(
        &self,
        req: Request<pb::WatchLoadRequest>,
    ) -> Result<Response<LoadStream>, Status> {
        let timeout = Duration::from_millis(req.into_inner().timeout_ms).min(MAX_WATCH);
        let iis = self.iis.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let start = Instant::now();
            let deadline = tokio::time::Instant::now() + timeout;
            let mut feed = iis.in_flight_feed();
            let mut last = None;
            loop {
                let now = match &mut feed {
                    Some(f) => Some(*f.borrow_and_update()),
                    None => iis.in_flight().await.ok().flatten(),
                };
                let idle = now == Some(0);
                if now != last || idle {
                    let sample = pb::LoadSample {
                        in_flight: now,
                        elapsed_ms: start.elapsed().as_millis() as u64,
                        idle,
                    };
                    if tx.send(Ok(sample)).await.is_err() || idle {
                        return;
                    }
                    last = now;
                }
                let changed = async {
                    match &mut feed {
                        Some(f) => {
                            let _ = f.changed().await;
                        }
                        None => tokio::time::sleep(LOAD_POLL).await,
                    }
                };
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return; // deadline: the stream ends without an idle sample
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type RecycleStream = OpStream;

    async fn recycle(
        &self,
        req: Request<pb::RecycleRequest>,
    ) -> Result<Response<OpStream>, Status> {
        let req = req.into_inner();
        check_operation_id(&req.operation_id).map_err(AgentError::Invalid)?;
        if req.pools.len() > MAX_POOLS {
            return Err(
                AgentError::Invalid(format!("at most {MAX_POOLS} pools per request")).into(),
            );
        }
        for p in &req.pools {
            check_pool_name(p).map_err(|e| {
                AgentError::Invalid(format!(
                    "pool name {:?}: {e}",
                    p.chars().take(80).collect::<String>()
                ))
            })?;
        }
        let (iis, cfg) = (self.iis.clone(), self.cfg.clone());
        let stream =
            self.stream_operation(&req.operation_id, "recycle", move |progress| async move {
                ops::recycle(&*iis, &req.pools, req.start_stopped, &cfg, &progress).await
            })?;
        Ok(Response::new(stream))
    }

    type ResetStream = OpStream;

    async fn reset(&self, req: Request<pb::ResetRequest>) -> Result<Response<OpStream>, Status> {
        let req = req.into_inner();
        check_operation_id(&req.operation_id).map_err(AgentError::Invalid)?;
        let stop_timeout = match req.stop_timeout_s {
            0 => Duration::from_secs(60),
            s => Duration::from_secs(u64::from(s.min(3600))),
        };
        let (iis, cfg) = (self.iis.clone(), self.cfg.clone());
        let stream =
            self.stream_operation(&req.operation_id, "reset", move |progress| async move {
                ops::reset(&*iis, stop_timeout, &cfg, &progress).await
            })?;
        Ok(Response::new(stream))
    }

    async fn acquire_lease(
        &self,
        _: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        Err(AgentError::Unimplemented("leases").into())
    }

    async fn renew_lease(
        &self,
        _: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        Err(AgentError::Unimplemented("leases").into())
    }

    async fn release_lease(
        &self,
        _: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::ReleaseLeaseReply>, Status> {
        Err(AgentError::Unimplemented("leases").into())
    }
}
