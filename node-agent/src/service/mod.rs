//! The `farm.agent.v1.NodeAgent` gRPC service.
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_proto::domain::CallKind;
use farm_proto::names::check_operation_id;
use farm_proto::v1 as pb;
use farm_proto::NodeAgent;
use tokio::sync::{mpsc, OwnedMutexGuard};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::audit::Audit;
use crate::convert::{self, AgentError};
use crate::idempotency::{wait, Begin, Operations, Stored};
use crate::iis::Iis;
use crate::lease::Leases;
use crate::ops::{self, OpsConfig, ProgressSink};
use crate::security::{Authorization, Call};

mod deploy;
mod dump;
mod gate;
mod patch;
use gate::{lease_status, ticket_check, valid_op_id, valid_pools, Ticket};

/// At most this many pools in one recycle request.
pub(super) const MAX_POOLS: usize = 64;
/// Longest WatchLoad stream.
const MAX_WATCH: Duration = Duration::from_secs(3600);
/// How often in-flight is polled when the backend has no live feed.
const LOAD_POLL: Duration = Duration::from_millis(250);

pub struct AgentService {
    node: String,
    iis: Arc<dyn Iis>,
    cfg: OpsConfig,
    ops: Arc<Operations>,
    /// One IIS-changing operation (recycle, reset) at a time.
    busy: Arc<tokio::sync::Mutex<String>>,
    authz: Authorization,
    audit: Option<Arc<Audit>>,
    leases: Leases,
    /// Releases of the sites (none when `deploy` is not configured).
    deployments: Option<Arc<crate::deploy::Deployments>>,
    /// ARR and NLB members (none in the simulator).
    lb_members: Option<Arc<crate::lbmember::LbMembers>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The served connections: a call marks its connection busy.
    connections: Option<Arc<crate::connections::Connections>>,
    /// The node's traffic, where the backend says where its logs are.
    traffic: Option<crate::traffic::watch::TrafficWatch>,
    /// The server's updates and restarts.
    patching: Option<Arc<crate::patch::Patching>>,
    /// Memory dumps (none when `dump` is not configured).
    dumps: Option<Arc<crate::dump::Dumps>>,
}

impl AgentService {
    /// The node's traffic over the last `last` seconds (the Traffic
    /// call's answer, also given with Status when asked).
    async fn traffic_reply(&self, last: u64, sample: bool) -> Result<pb::TrafficReply, Status> {
        let Some(watch) = self.traffic.clone() else {
            return Ok(pb::TrafficReply {
                unavailable: format!(
                    "this agent (backend {}) does not know where its sites' logs are",
                    self.iis.backend()
                ),
                ..Default::default()
            });
        };
        self.iis.flush_logs().await;
        let (sites, httperr) =
            tokio::task::spawn_blocking(move || (watch.figures(last), watch.httperr()))
                .await
                .map_err(|e| Status::internal(format!("reading the logs failed: {e}")))?;
        let httperr = httperr.unwrap_or_default();
        let running = self.iis.running().await.ok().flatten();
        let hung_after = crate::traffic::watch::HUNG_AFTER;
        Ok(pb::TrafficReply {
            in_flight: running.as_ref().map(|r| r.len() as u64),
            hung: running.as_ref().map(|r| {
                r.iter()
                    .filter(|ms| **ms >= hung_after.as_millis() as u64)
                    .count() as u64
            }),
            hung_after_s: hung_after.as_secs() as u32,
            oldest_ms: running.as_ref().and_then(|r| r.iter().max().copied()),
            sites: sites
                .into_iter()
                .map(|s| convert::site_traffic(s, sample))
                .collect(),
            unavailable: String::new(),
            quantile_error: farm_traffic::QUANTILE_ERROR,
            httperr_malformed_lines: httperr.malformed,
            httperr_problem: httperr.problem.unwrap_or_default(),
        })
    }

    pub fn new(node: impl Into<String>, iis: Arc<dyn Iis>, cfg: OpsConfig) -> Self {
        Self {
            node: node.into(),
            iis,
            cfg,
            ops: Arc::default(),
            busy: Arc::new(tokio::sync::Mutex::new(String::new())),
            authz: Authorization::default(),
            audit: None,
            leases: Leases::default(),
            deployments: None,
            lb_members: None,
            metrics: None,
            connections: None,
            traffic: None,
            patching: None,
            dumps: None,
        }
    }

    pub fn with_patching(mut self, p: Option<Arc<crate::patch::Patching>>) -> Self {
        self.patching = p;
        self
    }

    pub fn with_dumps(mut self, d: Option<Arc<crate::dump::Dumps>>) -> Self {
        self.dumps = d;
        self
    }

    pub fn with_traffic(mut self, t: Option<crate::traffic::watch::TrafficWatch>) -> Self {
        self.traffic = t;
        self
    }

    pub fn with_connections(mut self, c: Arc<crate::connections::Connections>) -> Self {
        self.connections = Some(c);
        self
    }

    /// Keeps operation records and the lease in `state`, starting from
    /// what is already there: finished operations answer their ids again,
    /// a lease still running is held (its dead-man switch armed), and one
    /// that ran out while the agent was down fires the switch now.
    pub fn with_state(mut self, state: Arc<crate::state::StateDir>) -> Self {
        self.ops = Arc::new(Operations::with_state(state.clone()));
        self.leases = Leases::with_state(state);
        if let Some(generation) = self.leases.restored() {
            self.leases
                .arm(generation, self.iis.clone(), self.busy.clone());
        }
        self
    }

    /// The lock a recycle or reset holds (with its operation id): a
    /// stopping agent waits on it.
    pub fn busy(&self) -> Arc<tokio::sync::Mutex<String>> {
        self.busy.clone()
    }

    /// The node's leases, for readers outside the service (metrics).
    pub fn leases(&self) -> Leases {
        self.leases.clone()
    }

    pub fn with_lb_members(mut self, m: Option<Arc<crate::lbmember::LbMembers>>) -> Self {
        self.lb_members = m;
        self
    }

    pub fn with_deployments(mut self, d: Option<Arc<crate::deploy::Deployments>>) -> Self {
        self.deployments = d;
        self
    }

    pub fn with_security(mut self, authz: Authorization, audit: Option<Arc<Audit>>) -> Self {
        self.authz = authz;
        self.audit = audit;
        self
    }

    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
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

    /// A lease just taken or renewed: its dead-man timer is (re)armed and
    /// its run's operation records are kept first.
    fn armed(&self, (lease, generation): (pb::Lease, u64)) -> Response<pb::Lease> {
        self.ops.lease_seen(&lease.run_id);
        self.leases
            .arm(generation, self.iis.clone(), self.busy.clone());
        Response::new(lease)
    }

    /// A mutating call may act only under no lease or its own run's.
    fn leased_check(&self, op_id: &str) -> Result<(), Status> {
        self.leases.check_op(op_id).map_err(lease_status)
    }

    /// Does `work` once per operation id: a repeated id (checked and
    /// leased like any mutating call) is answered with the first call's
    /// result; a call that failed is forgotten, so it may be retried — a
    /// repeat that was waiting on it does its own work then (a resumed
    /// controller's call arriving while its killed predecessor's upload is
    /// still being torn down).
    async fn once<T, Fut>(
        &self,
        id: &str,
        kind: CallKind,
        stored: impl Fn(T) -> Stored,
        unstored: impl Fn(Stored) -> Option<T>,
        work: impl FnOnce() -> Fut,
    ) -> Result<T, Status>
    where
        T: Clone,
        Fut: std::future::Future<Output = Result<T, AgentError>>,
    {
        check_operation_id(id).map_err(|e| AgentError::Invalid(e.to_string()))?;
        self.leased_check(id)?;
        let tx = loop {
            match self
                .ops
                .begin(id, kind)
                .map_err(|e| AgentError::Invalid(e.to_string()))?
            {
                Begin::Repeat(feed) => match wait(feed).await {
                    Some(first) => {
                        return unstored(first).ok_or_else(|| {
                            Status::internal(
                                "the first call with this operation id was another kind",
                            )
                        })
                    }
                    // It failed and was forgotten: this call does the work.
                    None => continue,
                },
                Begin::New(tx) => break tx,
            }
        };
        // Forgotten unless it succeeds — also when this future is dropped
        // half-way (the client went away): before `tx` goes, so a waiting
        // repeat finds the id free.
        let mut forget = Forget {
            ops: &self.ops,
            id,
            armed: true,
        };
        let reply = work().await?;
        forget.armed = false;
        self.ops.finish(id, kind, &tx, stored(reply.clone()));
        Ok(reply)
    }

    async fn drain_call(
        &self,
        id: &str,
        kind: CallKind,
        present: bool,
    ) -> Result<pb::DrainReply, Status> {
        let unstored = |s| match s {
            Stored::Drain(r) => Some(r),
            _ => None,
        };
        self.once(id, kind, Stored::Drain, unstored, || async {
            let was = self.iis.health_file_present().await?;
            self.iis.set_health_file(present).await?;
            self.leases.note_drain((!present).then_some(id));
            Ok(pb::DrainReply {
                drained: !present,
                unchanged: was == present,
            })
        })
        .await
    }

    /// Runs `work` as a streamed operation under `id`.
    fn stream_operation<F, Fut>(
        &self,
        ticket: Ticket,
        id: &str,
        kind: CallKind,
        work: F,
    ) -> Result<OpStream, Status>
    where
        F: FnOnce(ProgressSink) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ops::OpResult> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let begun = self
            .ops
            .begin(id, kind)
            .map_err(|e| Status::from(AgentError::Invalid(e.to_string())));
        let (sent, ticket) = match ticket_check(begun, ticket)? {
            (Begin::Repeat(feed), ticket) => {
                ticket.close("replayed");
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
            (Begin::New(sent), ticket) => (sent, ticket),
        };
        let guard = match self.exclusive(id) {
            Ok(g) => g,
            Err(e) => {
                self.ops.abandon(id);
                return ticket.close_with(Err(e.into()));
            }
        };
        let (ptx, mut prx) = mpsc::unbounded_channel();
        // The operation runs in its own task: a client that goes away does
        // not stop it half-way.
        let op = tokio::spawn(work(ProgressSink::new(ptx)));
        let (ops, id) = (self.ops.clone(), id.to_string());
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
            ticket.close(if result.success {
                "ok".to_string()
            } else {
                format!("failed at {}: {}", result.failed_step, result.error)
            });
            ops.finish(&id, kind, &sent, Stored::Operation(result.clone()));
            if let Some(c) = client {
                let _ = c.send(Ok(convert::result_event(result))).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Forgets an operation id when dropped armed.
struct Forget<'a> {
    ops: &'a Operations,
    id: &'a str,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.ops.abandon(self.id);
        }
    }
}

type OpStream = Pin<Box<dyn Stream<Item = Result<pb::OperationEvent, Status>> + Send>>;
type LoadStream = Pin<Box<dyn Stream<Item = Result<pb::LoadSample, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for AgentService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let ticket = self.admit(&req, Call::Status, &[], "")?;
        let result = async {
            let s = self.iis.status().await.map_err(AgentError::from)?;
            let in_flight = self.iis.in_flight().await.ok().flatten();
            // A node without health files (e.g. HAProxy-only) is not drained.
            let drained = !self.iis.health_file_present().await.unwrap_or(true);
            let mut status = convert::status(&self.node, self.iis.backend(), s, in_flight, drained);
            if let Some(d) = &self.deployments {
                for site in &mut status.sites {
                    site.release = d
                        .release_of(&site.name, &site.physical_path)
                        .unwrap_or_default();
                }
            }
            status.lease = self.leases.current();
            status.lease_holder = status
                .lease
                .as_ref()
                .map(|l| l.holder.clone())
                .unwrap_or_default();
            status.notice = self.leases.notice();
            if let Some(p) = &self.patching {
                status.boot = p.boot().await.as_ref().map(convert::boot);
                status.reboot_pending = Some(convert::reboot_pending(&p.pending().await));
                if let Some((count, at)) = p.last_search() {
                    status.updates_pending = Some(count);
                    status.updates_checked_unix_ms = at;
                }
                status.service_start = p.host().service_start().unwrap_or_default();
            }
            let asked = &req.get_ref().operation_id;
            if !asked.is_empty() {
                status.operation = self.ops.lookup(asked);
            }
            let traffic_s = req.get_ref().traffic_last_s;
            if traffic_s > 0 {
                status.traffic = Some(self.traffic_reply(u64::from(traffic_s), false).await?);
            }
            Ok(Response::new(status))
        }
        .await;
        ticket.close_with(result)
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let id = req.get_ref().operation_id.clone();
        let ticket = self.admit(&req, Call::Drain, &[], &id)?;
        ticket.close_with(
            self.drain_call(&id, CallKind::Drain, false)
                .await
                .map(Response::new),
        )
    }

    async fn undrain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let id = req.get_ref().operation_id.clone();
        let ticket = self.admit(&req, Call::Undrain, &[], &id)?;
        ticket.close_with(
            self.drain_call(&id, CallKind::Undrain, true)
                .await
                .map(Response::new),
        )
    }

    type WatchLoadStream = LoadStream;

    async fn watch_load(
        &self,
        req: Request<pb::WatchLoadRequest>,
    ) -> Result<Response<LoadStream>, Status> {
        let ticket = self.admit(&req, Call::WatchLoad, &[], "")?;
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
                        ticket.close(if idle { "ok: idle" } else { "ok: client left" });
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
                    ticket.close("ok: deadline");
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
        let ticket = self.admit(
            &req,
            Call::Recycle,
            &req.get_ref().pools,
            &req.get_ref().operation_id,
        )?;
        let req = req.into_inner();
        let valid = valid_op_id(&req.operation_id)
            .and(valid_pools(&req.pools))
            .and(self.leased_check(&req.operation_id));
        let (_, ticket) = ticket_check(valid, ticket)?;
        let (iis, cfg, traffic) = (self.iis.clone(), self.cfg.clone(), self.traffic.clone());
        let id = req.operation_id.clone();
        let stream =
            self.stream_operation(ticket, &id, CallKind::Recycle, move |progress| async move {
                let done =
                    ops::recycle(&*iis, &req.pools, req.start_stopped, &cfg, &progress).await;
                // The pools' traffic windows start again: what their old
                // workers did is not the new ones'.
                if let (true, Some(w)) = (done.success, traffic) {
                    w.restart(&req.pools);
                }
                done
            })?;
        Ok(Response::new(stream))
    }

    type ResetStream = OpStream;

    async fn reset(&self, req: Request<pb::ResetRequest>) -> Result<Response<OpStream>, Status> {
        let ticket = self.admit(&req, Call::Reset, &[], &req.get_ref().operation_id)?;
        let req = req.into_inner();
        let valid = valid_op_id(&req.operation_id).and(self.leased_check(&req.operation_id));
        let (_, ticket) = ticket_check(valid, ticket)?;
        let stop_timeout = match req.stop_timeout_s {
            0 => self.cfg.stop_timeout,
            s => Duration::from_secs(u64::from(s.min(3600))),
        };
        let (iis, cfg, traffic) = (self.iis.clone(), self.cfg.clone(), self.traffic.clone());
        let stream = self.stream_operation(
            ticket,
            &req.operation_id,
            CallKind::Reset,
            move |progress| async move {
                let done = ops::reset(&*iis, stop_timeout, &cfg, &progress).await;
                if let (true, Some(w)) = (done.success, traffic) {
                    w.restart(&[]);
                }
                done
            },
        )?;
        Ok(Response::new(stream))
    }

    async fn acquire_lease(
        &self,
        req: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let ticket = self.admit(&req, Call::Lease, &[], &req.get_ref().run_id)?;
        let r = req.into_inner();
        let result = self
            .leases
            .acquire(
                &r.holder,
                &r.run_id,
                &r.reason,
                Duration::from_millis(r.ttl_ms),
            )
            .map(|held| self.armed(held))
            .map_err(lease_status);
        ticket.close_with(result)
    }

    async fn renew_lease(
        &self,
        req: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let ticket = self.admit(&req, Call::Lease, &[], &req.get_ref().run_id)?;
        let r = req.into_inner();
        let result = self
            .leases
            .renew(&r.run_id, Duration::from_millis(r.ttl_ms))
            .map(|held| self.armed(held))
            .map_err(lease_status);
        ticket.close_with(result)
    }

    async fn stage(
        &self,
        req: Request<tonic::Streaming<pb::StageChunk>>,
    ) -> Result<Response<pb::StageReply>, Status> {
        self.stage_call(req).await
    }

    async fn releases(
        &self,
        req: Request<pb::ReleasesRequest>,
    ) -> Result<Response<pb::ReleasesReply>, Status> {
        self.releases_call(req).await
    }

    async fn switch(
        &self,
        req: Request<pb::SwitchRequest>,
    ) -> Result<Response<pb::SwitchReply>, Status> {
        self.switch_call(req).await
    }

    async fn prune(
        &self,
        req: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneReply>, Status> {
        self.prune_call(req).await
    }

    async fn lb_member(
        &self,
        req: Request<pb::LbMemberRequest>,
    ) -> Result<Response<pb::LbMemberReply>, Status> {
        let r = req.get_ref();
        // Unparsable actions are refused by the LB member code, after the
        // role check an operator call gets.
        let changes = r
            .action
            .parse::<farm_proto::domain::LbMemberAction>()
            .map_or(true, |a| a.changes());
        let call = if changes {
            Call::LbMember
        } else {
            Call::LbState
        };
        let op_id = if changes { r.operation_id.as_str() } else { "" };
        let mut ticket = self.admit(&req, call, &[], op_id)?;
        let r = req.get_ref();
        ticket.detail(&format!(
            "{} {} farm {:?} server {:?} mode {:?}",
            r.kind, r.action, r.farm, r.server, r.mode
        ));
        let result = async {
            if changes {
                valid_op_id(&r.operation_id)?;
                self.leased_check(&r.operation_id)?;
            }
            let members = self.lb_members.as_ref().ok_or_else(|| {
                AgentError::Invalid(format!(
                    "this agent (backend {}) cannot drive {} members: they need the Windows command backend",
                    self.iis.backend(),
                    r.kind
                ))
            })?;
            members
                .handle(r)
                .await
                .map_err(|e| Status::from(AgentError::from(e)))
        }
        .await;
        ticket.close_with(result.map(Response::new))
    }

    async fn traffic(
        &self,
        req: Request<pb::TrafficRequest>,
    ) -> Result<Response<pb::TrafficReply>, Status> {
        let ticket = self.admit(&req, Call::Traffic, &[], "")?;
        let last = match req.get_ref().last_s {
            0 => 60,
            s => u64::from(s),
        };
        // Log lines name clients and URLs: quoted to operators only.
        let sample = req.get_ref().malformed_sample && ticket.may(&self.authz, Call::Diagnose);
        let reply = self.traffic_reply(last, sample).await;
        ticket.close_with(reply.map(Response::new))
    }

    async fn diagnose(
        &self,
        req: Request<pb::DiagnoseRequest>,
    ) -> Result<Response<pb::DiagnoseReply>, Status> {
        let pool = req.get_ref().pool.clone();
        let ticket = self.admit(&req, Call::Diagnose, std::slice::from_ref(&pool), "")?;
        let result = self
            .iis
            .diagnose(&pool, req.get_ref().min_elapsed_ms)
            .await
            .map(|d| Response::new(convert::diagnostics(d)))
            .map_err(|e| Status::from(AgentError::from(e)));
        ticket.close_with(result)
    }

    async fn updates(
        &self,
        req: Request<pb::UpdatesRequest>,
    ) -> Result<Response<pb::UpdatesReply>, Status> {
        self.updates_call(req).await
    }

    type InstallUpdatesStream = OpStream;

    async fn install_updates(
        &self,
        req: Request<pb::InstallUpdatesRequest>,
    ) -> Result<Response<OpStream>, Status> {
        self.install_updates_call(req)
    }

    async fn reboot(
        &self,
        req: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::RebootReply>, Status> {
        self.reboot_call(req).await
    }

    async fn dump(&self, req: Request<pb::DumpRequest>) -> Result<Response<pb::DumpReply>, Status> {
        self.dump_call(req).await
    }

    async fn release_lease(
        &self,
        req: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::ReleaseLeaseReply>, Status> {
        let ticket = self.admit(&req, Call::Lease, &[], &req.get_ref().run_id)?;
        let result = self
            .leases
            .release(&req.get_ref().run_id)
            .map(|()| Response::new(pb::ReleaseLeaseReply {}))
            .map_err(lease_status);
        ticket.close_with(result)
    }
}
