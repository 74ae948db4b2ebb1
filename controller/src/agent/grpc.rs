//! The tonic client for one agent, with mutual TLS, and the conversions
//! from the wire types.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use farm_proto::v1 as pb;
use farm_proto::NodeAgentClient;

use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::*;

farm_proto::message_error! {
    /// Why the controller's TLS files cannot be used.
    TlsLoadError
}

/// Bytes per Stage message: under the agent's 64 KiB request limit.
const STAGE_CHUNK: usize = 48 * 1024;
/// Beyond a call's own deadline, how long the client waits for the
/// agent's own deadline error before giving up on it.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// The longest a Windows Update search is waited for.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the check of a silent agent's port may take.
const PORT_CHECK: Duration = Duration::from_secs(2);

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code::*;
        match s.code() {
            NotFound => AgentError::NotFound(s.message().to_string()),
            InvalidArgument | FailedPrecondition | PermissionDenied | Unauthenticated
            | ResourceExhausted => AgentError::Refused(s.message().to_string()),
            DeadlineExceeded => AgentError::Call(format!("deadline exceeded: {}", s.message())),
            Unavailable => AgentError::Call(format!("agent unavailable: {}", s.message())),
            _ => AgentError::Call(s.message().to_string()),
        }
    }
}

/// The controller's side of mutual TLS: the farm CA that agent
/// certificates must be signed by, and the controller's own certificate.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Identity,
}

impl ClientTls {
    pub fn load(files: &farm_inventory::TlsFiles) -> Result<Self, TlsLoadError> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                TlsLoadError(format!("could not read the {what} {}: {e}", p.display()))
            })
        };
        Ok(Self {
            ca: Certificate::from_pem(read(&files.ca, "CA certificate (agent.tls.ca)")?),
            identity: Identity::from_pem(
                read(&files.cert, "controller certificate (agent.tls.cert)")?,
                read(&files.key, "controller key (agent.tls.key)")?,
            ),
        })
    }
}

/// The gRPC client for one agent.
pub struct GrpcAgent {
    addr: String,
    /// The node's inventory name (what its certificate must name).
    node: String,
    /// Mutual TLS (else plaintext, `--insecure`).
    tls: bool,
    client: NodeAgentClient<Channel>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl GrpcAgent {
    /// Prepares a client; the connection is made on first use, so an
    /// unreachable agent shows up as an error of the first call.
    /// With `tls`, the agent's certificate must be signed by the farm CA
    /// and name `node`.
    pub fn new(
        addr: &str,
        node: &str,
        tls: Option<&ClientTls>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, AgentError> {
        let unreachable = |detail: String| AgentError::Unreachable {
            addr: addr.to_string(),
            detail,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| unreachable(format!("bad address: {e}")))?;
        if let Some(t) = tls {
            let cfg = ClientTlsConfig::new()
                .ca_certificate(t.ca.clone())
                .identity(t.identity.clone())
                .domain_name(node)
                // A stopped agent's kernel still accepts the TCP connection;
                // the handshake is what never ends.
                .timeout(connect_timeout);
            endpoint = endpoint
                .tls_config(cfg)
                .map_err(|e| unreachable(format!("TLS set-up: {e}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        Ok(Self {
            addr: addr.to_string(),
            client: NodeAgentClient::new(endpoint.connect_lazy()),
            node: node.to_string(),
            tls: tls.is_some(),
            connect_timeout,
            request_timeout,
        })
    }

    /// `call` with a deadline of the controller's own: `request_timeout`
    /// is also sent to the agent (grpc-timeout), but an agent that is
    /// stopped or wedged cannot enforce it, so the client does.
    async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, AgentError>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(limit + DEADLINE_MARGIN, call).await {
            Ok(r) => r,
            Err(_) => Err(self.no_answer(limit).await),
        }
    }

    /// Why a call got no answer within `limit`, as far as a fresh TCP
    /// connection can tell.
    async fn no_answer(&self, limit: Duration) -> AgentError {
        let check = PORT_CHECK.min(self.connect_timeout);
        let why = match tokio::time::timeout(check, tokio::net::TcpStream::connect(&self.addr)).await
        {
            Ok(Ok(_)) => "the agent accepted the connection but did not answer: is its process stopped or hung?".to_string(),
            Ok(Err(e)) => format!("and its port does not take connections now ({e})"),
            Err(_) => format!("and its port does not take a connection within {check:?} (a firewall, or the server is down)"),
        };
        AgentError::Unreachable {
            addr: self.addr.clone(),
            detail: format!("no answer within {} ({why})", crate::human::duration(limit)),
        }
    }

    /// One unary call with the request timeout; its reply.
    async fn unary<Req, Resp, Fut>(
        &self,
        msg: Req,
        call: impl FnOnce(NodeAgentClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, AgentError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.unary_within(self.request_timeout, msg, call).await
    }

    /// One unary call that may take `limit` (a search, a dump); its reply.
    async fn unary_within<Req, Resp, Fut>(
        &self,
        limit: Duration,
        msg: Req,
        call: impl FnOnce(NodeAgentClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, AgentError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(limit);
        let call = async {
            call(self.client.clone(), req)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| self.map_err(s))
        };
        self.bounded(limit, call).await
    }

    fn map_err(&self, s: tonic::Status) -> AgentError {
        // A connection failure surfaces as Unavailable with a transport
        // error (or an h2 protocol error, for plaintext against TLS); its
        // causes are in the source chain, not the message.
        let connection = s.code() == tonic::Code::Unavailable
            || s.message().contains("h2 protocol error")
            || s.message().contains("transport error");
        if connection {
            let mut chain = s.message().to_string();
            let mut source = std::error::Error::source(&s);
            while let Some(e) = source {
                let text = e.to_string();
                if !chain.contains(&text) {
                    chain.push_str(": ");
                    chain.push_str(&text);
                }
                source = e.source();
            }
            AgentError::Unreachable {
                addr: self.addr.clone(),
                detail: explain(&self.node, &self.addr, self.tls, &chain),
            }
        } else if s.code() == tonic::Code::Cancelled && s.message().contains("Timeout") {
            AgentError::Timeout(self.request_timeout)
        } else {
            s.into()
        }
    }
}

/// A connection error in plain words: the cause, and the one thing to
/// check; the transport's own words follow in brackets.
pub fn explain(node: &str, addr: &str, tls: bool, chain: &str) -> String {
    let has = |s: &str| chain.contains(s);
    let why = if has("Connection refused") || has("connection refused") {
        format!("connection refused: nothing listens on {addr} — is farm-agent running there, on that port?")
    } else if has("dns error")
        || has("failed to lookup address")
        || has("Name or service not known")
    {
        format!("the host name of {addr} does not resolve: check the node's address or agent in the inventory")
    } else if has("UnknownIssuer") || has("unknown issuer") {
        "the agent's certificate is not signed by the CA in agent.tls.ca (UnknownIssuer): point agent.tls.ca at the farm's CA, the one that issued the agents' certificates".to_string()
    } else if has("NotValidForName") || has("not valid for name") {
        format!("the agent's certificate does not name `{node}` (NotValidForName): is {addr} really {node}? Else issue its certificate with `farmctl certs issue agent {node}`")
    } else if has("CaUsedAsEndEntity") || has("used as an end entity") || has("CA used as") {
        "the agent presents a CA certificate as its own (CaUsedAsEndEntity): give it an agent certificate (`farmctl certs issue agent NODE`)".to_string()
    } else if has("Expired") || has("certificate expired") {
        "the agent's certificate has expired: issue it a new one (`farmctl certs issue agent NODE`)"
            .to_string()
    } else if has("timed out") || has("deadline has elapsed") {
        format!("no connection to {addr} in time: a firewall, or the server is down")
    } else if !tls
        && (has("http2 error")
            || has("frame")
            || has("protocol error")
            || has("broken pipe")
            || has("stream closed")
            || has("connection reset"))
    {
        "the agent does not speak plaintext gRPC: it probably wants TLS — drop --insecure and set agent.tls".to_string()
    } else if tls
        && (has("tls handshake eof")
            || has("Connection reset")
            || has("connection reset")
            || has("InvalidContentType")
            || has("CorruptMessage"))
    {
        "the agent cut the TLS handshake: it refused this controller's certificate (another CA, revoked, expired), or it speaks plaintext (`--insecure` on the agent) — its audit log says which".to_string()
    } else {
        return chain.to_string();
    };
    format!("{why} [{chain}]")
}

fn services_map(s: &[pb::Service]) -> BTreeMap<String, ServiceState> {
    s.iter()
        .map(|s| (s.name.clone(), ServiceState::from_wire(s.state)))
        .collect()
}

impl From<pb::NodeStatus> for NodeView {
    fn from(s: pb::NodeStatus) -> Self {
        NodeView {
            node: s.node,
            backend: s.backend,
            services: services_map(&s.services),
            pools: s
                .pools
                .into_iter()
                .map(|p| PoolView {
                    name: p.name,
                    state: PoolState::from_wire(p.state),
                    pids: p.workers.iter().map(|w| w.pid).collect(),
                    stopped_by: (!p.stopped_by.is_empty()).then_some(p.stopped_by),
                })
                .collect(),
            sites: s
                .sites
                .into_iter()
                .map(|x| SiteView {
                    name: x.name,
                    pool: x.pool,
                    physical_path: x.physical_path,
                    release: (!x.release.is_empty()).then_some(x.release),
                })
                .collect(),
            in_flight: s.in_flight,
            drained: s.drained,
            lease: s.lease.map(|l| LeaseView {
                holder: l.holder,
                run_id: l.run_id,
                reason: l.reason,
                acquired_unix_ms: (l.acquired_unix_ms > 0).then_some(l.acquired_unix_ms),
                expires_unix_ms: (l.expires_unix_ms > 0).then_some(l.expires_unix_ms),
            }),
            notice: (!s.notice.is_empty()).then_some(s.notice),
            boot: s.boot.map(boot_view),
            reboot_pending: s.reboot_pending.map(pending_view),
            updates_pending: s.updates_pending,
            service_start: (!s.service_start.is_empty()).then_some(s.service_start),
        }
    }
}

fn boot_view(b: pb::Boot) -> super::BootView {
    super::BootView {
        id: b.id,
        time_unix_ms: b.time_unix_ms,
    }
}

fn pending_view(p: pb::RebootPending) -> super::PendingView {
    super::PendingView {
        pending: p.pending,
        reasons: p.reasons,
    }
}

fn filter_msg(f: &super::UpdateFilterSpec) -> pb::UpdateFilter {
    pb::UpdateFilter {
        classifications: f.classifications.clone(),
        include_kbs: f.include_kbs.clone(),
        exclude_kbs: f.exclude_kbs.clone(),
    }
}

impl From<pb::OperationResult> for OperationReport {
    fn from(r: pb::OperationResult) -> Self {
        OperationReport {
            success: r.success,
            error: r.error,
            failed_step: r.failed_step,
            services: services_map(&r.services),
            pools: r
                .pools
                .into_iter()
                .map(|p| PoolChange {
                    name: p.name,
                    pids_before: p.pids_before,
                    pids_after: p.pids_after,
                    state_after: PoolState::from_wire(p.state_after),
                    had_no_worker: p.had_no_worker,
                })
                .collect(),
            replayed: r.replayed,
            updates: r
                .updates
                .into_iter()
                .map(|u| super::UpdateOutcome {
                    kb: u.kb,
                    title: u.title,
                    result: u.result,
                    hresult: (!u.hresult.is_empty()).then_some(u.hresult),
                    reboot_required: u.reboot_required,
                })
                .collect(),
            reboot_required: r.reboot_required,
        }
    }
}

#[async_trait]
impl AgentApi for GrpcAgent {
    async fn acquire_lease(&self, claim: &LeaseClaim<'_>) -> Result<(), AgentError> {
        let msg = pb::AcquireLeaseRequest {
            holder: claim.holder.into(),
            run_id: claim.run_id.into(),
            reason: claim.reason.into(),
            ttl_ms: claim.ttl.as_millis() as u64,
        };
        self.unary(msg, |mut c, r| async move { c.acquire_lease(r).await })
            .await
            .map(|_| ())
    }

    async fn renew_lease(&self, run_id: &str, ttl: Duration) -> Result<(), AgentError> {
        let msg = pb::RenewLeaseRequest {
            run_id: run_id.into(),
            ttl_ms: ttl.as_millis() as u64,
        };
        self.unary(msg, |mut c, r| async move { c.renew_lease(r).await })
            .await
            .map(|_| ())
    }

    async fn release_lease(&self, run_id: &str) -> Result<(), AgentError> {
        let msg = pb::ReleaseLeaseRequest {
            run_id: run_id.into(),
        };
        self.unary(msg, |mut c, r| async move { c.release_lease(r).await })
            .await
            .map(|_| ())
    }

    async fn status(&self) -> Result<NodeView, AgentError> {
        self.unary(pb::StatusRequest::default(), |mut c, r| async move {
            c.status(r).await
        })
        .await
        .map(Into::into)
    }

    async fn finished_operation(&self, op_id: &str) -> Result<Option<OperationReport>, AgentError> {
        let msg = pb::StatusRequest {
            operation_id: op_id.into(),
            ..Default::default()
        };
        let status = self
            .unary(msg, |mut c, r| async move { c.status(r).await })
            .await?;
        Ok(status
            .operation
            .filter(|o| o.finished && o.operation_id == op_id)
            .and_then(|o| o.result)
            .map(|r| OperationReport {
                replayed: true,
                ..r.into()
            }))
    }

    async fn drain(&self, op_id: &str) -> Result<(), AgentError> {
        let msg = pb::DrainRequest {
            operation_id: op_id.into(),
        };
        self.unary(msg, |mut c, r| async move { c.drain(r).await })
            .await
            .map(|_| ())
    }

    async fn undrain(&self, op_id: &str) -> Result<(), AgentError> {
        let msg = pb::DrainRequest {
            operation_id: op_id.into(),
        };
        self.unary(msg, |mut c, r| async move { c.undrain(r).await })
            .await
            .map(|_| ())
    }

    async fn stage(
        &self,
        op_id: &str,
        site: &str,
        version: &str,
        package: &Package,
        timeout: Duration,
    ) -> Result<Staged, AgentError> {
        let file = tokio::fs::File::open(&package.path).await.map_err(|e| {
            AgentError::Call(format!("could not read {}: {e}", package.path.display()))
        })?;
        let header = pb::StageChunk {
            part: Some(pb::stage_chunk::Part::Header(pb::StageHeader {
                operation_id: op_id.into(),
                site: site.into(),
                version: version.into(),
                sha256: package.sha256.clone(),
                size: package.size,
            })),
        };
        // Chunks under the agent's 64 KiB message limit, read and hashed as
        // they are sent. The agent checks size and sha256 itself and keeps
        // nothing that differs; what went wrong on this side is noted so
        // the error says so.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let _ = tx.send(header).await;
        let trouble = Arc::new(std::sync::Mutex::new(None::<String>));
        let note = trouble.clone();
        let expected = (package.size, package.sha256.clone());
        tokio::spawn(async move {
            use sha2::Digest;
            use tokio::io::AsyncReadExt;
            let mut file = file;
            let mut hasher = sha2::Sha256::new();
            let mut sent = 0u64;
            let why = loop {
                let mut buf = vec![0u8; STAGE_CHUNK];
                match file.read(&mut buf).await {
                    Err(e) => break Some(format!("reading it failed after {sent} bytes: {e}")),
                    Ok(0) if sent < expected.0 => {
                        break Some(format!("it is now {sent} bytes, not {}", expected.0))
                    }
                    Ok(0) => {
                        let now = hex::encode(hasher.finalize());
                        break (now != expected.1)
                            .then(|| format!("its sha256 is now {now}, not {}", expected.1));
                    }
                    Ok(n) if sent + n as u64 > expected.0 => {
                        break Some(format!("it is now larger than {} bytes", expected.0))
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        sent += n as u64;
                        hasher.update(&buf);
                        let chunk = pb::StageChunk {
                            part: Some(pb::stage_chunk::Part::Data(buf)),
                        };
                        if tx.send(chunk).await.is_err() {
                            return; // the agent answered early, or left
                        }
                    }
                }
            };
            *note.lock().unwrap_or_else(|e| e.into_inner()) = why;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut req = tonic::Request::new(stream);
        req.set_timeout(timeout);
        let call = async {
            self.client.clone().stage(req).await.map_err(|s| {
                match trouble.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    Some(why) => AgentError::Call(format!(
                        "{} changed since the run read it ({why}); the agent kept nothing",
                        package.path.display()
                    )),
                    None => self.map_err(s),
                }
            })
        };
        let reply = self.bounded(timeout, call).await?;
        let reply = reply.into_inner();
        Ok(Staged {
            already: reply.already_staged,
            files: reply.files,
            bytes: reply.bytes,
        })
    }

    async fn releases(&self, site: &str) -> Result<Vec<ReleaseView>, AgentError> {
        let msg = pb::ReleasesRequest { site: site.into() };
        let reply = self
            .unary(msg, |mut c, r| async move { c.releases(r).await })
            .await?;
        Ok(reply
            .releases
            .into_iter()
            .map(|r| ReleaseView {
                version: r.version,
                sha256: r.sha256,
                active: r.active,
                previous: r.previous,
            })
            .collect())
    }

    async fn switch(&self, op_id: &str, to: &SwitchTo) -> Result<Switched, AgentError> {
        let msg = pb::SwitchRequest {
            operation_id: op_id.into(),
            site: to.site.clone(),
            version: to.version.clone(),
            hooks: to.hooks.clone(),
            back: to.back,
        };
        let r = self
            .unary(msg, |mut c, r| async move { c.switch(r).await })
            .await?;
        Ok(Switched {
            previous: r.previous,
            version: r.version,
            unchanged: r.unchanged,
            hooks: r
                .hooks
                .into_iter()
                .map(|h| HookRun {
                    name: h.name,
                    exit_code: h.exit_code,
                    output: h.output,
                    duration_ms: h.duration_ms,
                })
                .collect(),
        })
    }

    async fn prune(&self, op_id: &str, site: &str) -> Result<Vec<String>, AgentError> {
        let msg = pb::PruneRequest {
            operation_id: op_id.into(),
            site: site.into(),
        };
        self.unary(msg, |mut c, r| async move { c.prune(r).await })
            .await
            .map(|r| r.removed)
    }

    async fn dump(
        &self,
        op_id: &str,
        pool: &str,
        timeout: Duration,
    ) -> Result<super::DumpView, AgentError> {
        let msg = pb::DumpRequest {
            operation_id: op_id.into(),
            pool: pool.into(),
        };
        let r = self
            .unary_within(timeout, msg, |mut c, r| async move { c.dump(r).await })
            .await?;
        Ok(super::DumpView {
            pool: r.pool,
            dumps: r
                .dumps
                .into_iter()
                .map(|d| super::DumpTakenView {
                    pid: d.pid,
                    file: d.file,
                    bytes: d.bytes,
                    elapsed_ms: d.elapsed_ms,
                })
                .collect(),
            refused: r.refused,
            left_today: Some(r.left_today),
        })
    }

    async fn diagnose(
        &self,
        pool: &str,
        min_elapsed_ms: u64,
    ) -> Result<super::Diagnostics, AgentError> {
        let msg = pb::DiagnoseRequest {
            pool: pool.to_string(),
            min_elapsed_ms,
        };
        let r = self
            .unary(msg, |mut c, r| async move { c.diagnose(r).await })
            .await?;
        let some = |s: String| (!s.is_empty()).then_some(s);
        let events: Vec<super::WasEventView> = r
            .events
            .into_iter()
            .map(|e| super::WasEventView {
                id: e.id,
                level: e.level,
                date: e.date,
                pid: e.pid,
                message: e.message,
            })
            .collect();
        Ok(super::Diagnostics {
            pool: r.pool,
            requests: r
                .requests
                .into_iter()
                .map(|q| super::RunningRequestView {
                    verb: q.verb,
                    url: q.url,
                    elapsed_ms: q.elapsed_ms,
                    client: some(q.client),
                    stage: some(q.stage),
                    module: some(q.module),
                })
                .collect(),
            workers: r
                .workers
                .into_iter()
                .map(|w| super::WorkerView {
                    pid: w.pid,
                    cpu_percent: w.cpu_percent,
                    private_bytes: w.private_bytes,
                    active_requests: w.active_requests,
                })
                .collect(),
            queue: r.queue,
            rejected: r.rejected,
            rapid_fail: events.iter().any(|e| e.id == 5002) && r.state.as_str() != "Running",
            state: some(r.state),
            events,
            notes: r.notes,
        })
    }

    async fn traffic(&self, last_s: u32) -> Result<TrafficView, AgentError> {
        let msg = pb::TrafficRequest {
            last_s,
            ..Default::default()
        };
        let reply = self
            .unary(msg, |mut c, r| async move { c.traffic(r).await })
            .await?;
        Ok(traffic_view(reply))
    }

    async fn traffic_quoting(&self, last_s: u32) -> Result<TrafficView, AgentError> {
        let msg = pb::TrafficRequest {
            last_s,
            malformed_sample: true,
        };
        let reply = self
            .unary(msg, |mut c, r| async move { c.traffic(r).await })
            .await?;
        Ok(traffic_view(reply))
    }

    async fn status_and_traffic(
        &self,
        last_s: u32,
    ) -> (
        Result<NodeView, AgentError>,
        Result<TrafficView, AgentError>,
    ) {
        let msg = pb::StatusRequest {
            traffic_last_s: last_s,
            ..Default::default()
        };
        match self
            .unary(msg, |mut c, r| async move { c.status(r).await })
            .await
        {
            Err(e) => (Err(e.clone()), Err(e)),
            Ok(mut status) => match status.traffic.take() {
                Some(t) => (Ok(status.into()), Ok(traffic_view(t))),
                // An agent older than the field: the Traffic call.
                None => (Ok(status.into()), self.traffic(last_s).await),
            },
        }
    }

    async fn lb_member(&self, call: &LbMemberCall) -> Result<LbMemberView, AgentError> {
        let msg = pb::LbMemberRequest {
            operation_id: call.op_id.clone(),
            kind: call.kind.to_string(),
            action: call.action.to_string(),
            farm: call.farm.clone(),
            server: call.server.clone(),
            mode: call.mode.map(|m| m.to_string()).unwrap_or_default(),
            drain_timeout_s: call.drain_timeout.as_secs().min(u64::from(u32::MAX)) as u32,
        };
        let r = self
            .unary(msg, |mut c, r| async move { c.lb_member(r).await })
            .await?;
        Ok(LbMemberView {
            state: r.state,
            healthy: r.healthy,
            current_requests: u64::try_from(r.current_requests).ok(),
            detail: r.detail,
        })
    }

    async fn wait_idle(&self, timeout: Duration) -> Result<bool, AgentError> {
        let mut req = tonic::Request::new(pb::WatchLoadRequest {
            timeout_ms: timeout.as_millis() as u64,
        });
        req.set_timeout(timeout + self.request_timeout);
        let watch = async {
            let mut stream = self
                .client
                .clone()
                .watch_load(req)
                .await
                .map_err(|s| self.map_err(s))?
                .into_inner();
            while let Some(sample) = stream.next().await {
                let sample = sample.map_err(|s| self.map_err(s))?;
                if sample.idle {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        self.bounded(timeout + self.request_timeout, watch).await
    }

    async fn updates(
        &self,
        filter: &super::UpdateFilterSpec,
    ) -> Result<super::UpdatesView, AgentError> {
        let msg = pb::UpdatesRequest {
            filter: Some(filter_msg(filter)),
        };
        // A Windows Update search takes minutes on a real server.
        let r = self
            .unary_within(
                SEARCH_TIMEOUT,
                msg,
                |mut c, r| async move { c.updates(r).await },
            )
            .await?;
        Ok(super::UpdatesView {
            updates: r
                .updates
                .into_iter()
                .map(|u| super::UpdateView {
                    kb: u.kb,
                    title: u.title,
                    classification: u.classification,
                    size_bytes: u.size_bytes,
                    reboot_required: u.reboot_required,
                })
                .collect(),
            pending: r.reboot_pending.map(pending_view).unwrap_or_default(),
            boot: r.boot.map(boot_view),
            source: r.source,
            notes: r.notes,
        })
    }

    async fn install_updates(
        &self,
        op_id: &str,
        filter: &super::UpdateFilterSpec,
        timeout: Duration,
        progress: ProgressFn<'_>,
    ) -> Result<OperationReport, AgentError> {
        let mut client = self.client.clone();
        let call = async {
            let mut req = tonic::Request::new(pb::InstallUpdatesRequest {
                operation_id: op_id.into(),
                filter: Some(filter_msg(filter)),
            });
            req.set_timeout(timeout);
            let mut stream = client
                .install_updates(req)
                .await
                .map_err(|s| self.map_err(s))?
                .into_inner();
            while let Some(ev) = stream.next().await {
                match ev.map_err(|s| self.map_err(s))?.event {
                    Some(pb::operation_event::Event::Progress(p)) => progress(&p.step, &p.message),
                    Some(pb::operation_event::Event::Result(r)) => return Ok(r.into()),
                    None => {}
                }
            }
            Err(AgentError::Call(
                "the install stream ended without a result".into(),
            ))
        };
        match tokio::time::timeout(timeout + DEADLINE_MARGIN, call).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Timeout(timeout)),
        }
    }

    async fn reboot(
        &self,
        op_id: &str,
        comment: &str,
        delay: Duration,
        for_updates: bool,
    ) -> Result<super::RebootView, AgentError> {
        let msg = pb::RebootRequest {
            operation_id: op_id.into(),
            comment: comment.into(),
            delay_s: delay.as_secs().clamp(1, 600) as u32,
            for_updates,
        };
        let r = self
            .unary(msg, |mut c, r| async move { c.reboot(r).await })
            .await?;
        Ok(super::RebootView {
            state: if r.state == "done" {
                super::RebootState::Done
            } else {
                super::RebootState::Rebooting
            },
            boot_before: r.boot_before.map(boot_view),
            boot_now: r.boot_now.map(boot_view),
        })
    }

    async fn operate(
        &self,
        op_id: &str,
        request: &OperationRequest,
        timeout: Duration,
        progress: ProgressFn<'_>,
    ) -> Result<OperationReport, AgentError> {
        let mut client = self.client.clone();
        let op = request.kind;
        let call = async {
            let stream = match op {
                OperationKind::Patch | OperationKind::Reboot => {
                    return Err(AgentError::Call(format!(
                        "a {op} is not one call: it installs and restarts through their own calls"
                    )))
                }
                // A deploy's or rollback's operation is the recycle of the
                // site's pool.
                OperationKind::Recycle | OperationKind::Deploy | OperationKind::Rollback => {
                    let mut req = tonic::Request::new(pb::RecycleRequest {
                        operation_id: op_id.into(),
                        pools: request.pools.clone(),
                        start_stopped: false,
                    });
                    req.set_timeout(timeout);
                    client.recycle(req).await
                }
                OperationKind::Reset => {
                    let mut req = tonic::Request::new(pb::ResetRequest {
                        operation_id: op_id.into(),
                        stop_timeout_s: request.stop_timeout.as_secs().clamp(1, 3600) as u32,
                    });
                    req.set_timeout(timeout);
                    client.reset(req).await
                }
            };
            let mut stream = stream.map_err(|s| self.map_err(s))?.into_inner();
            while let Some(ev) = stream.next().await {
                match ev.map_err(|s| self.map_err(s))?.event {
                    Some(pb::operation_event::Event::Progress(p)) => progress(&p.step, &p.message),
                    Some(pb::operation_event::Event::Result(r)) => return Ok(r.into()),
                    None => {}
                }
            }
            Err(AgentError::Call(format!(
                "the {} stream ended without a result",
                op.as_str()
            )))
        };
        // The whole call, from connecting on: an agent that stops answering
        // mid-operation cannot hold the run past the operation's timeout.
        match tokio::time::timeout(timeout + DEADLINE_MARGIN, call).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Timeout(timeout)),
        }
    }
}

/// A Traffic answer as the controller reads it.
fn traffic_view(reply: pb::TrafficReply) -> TrafficView {
    let text = |s: String| (!s.is_empty()).then_some(s);
    TrafficView {
        in_flight: reply.in_flight,
        hung: reply.hung,
        hung_after_s: reply.hung_after_s,
        oldest_ms: reply.oldest_ms,
        httperr_malformed: reply.httperr_malformed_lines,
        httperr_problem: text(reply.httperr_problem),
        unavailable: text(reply.unavailable),
        sites: reply
            .sites
            .into_iter()
            .map(|s| {
                let mut classes = [0; 5];
                for (c, n) in classes.iter_mut().zip(&s.classes) {
                    *c = *n;
                }
                let gauges = farm_proto::gauges::PoolGauges::from_wire(&s);
                SiteTrafficView {
                    gauges,
                    site: s.site,
                    pool: s.pool,
                    covered_s: u64::from(s.covered_s),
                    requests: s.requests,
                    checks: s.checks,
                    classes,
                    errors: s.errors.into_iter().collect(),
                    httperr: s.httperr.into_iter().collect(),
                    p50_ms: s.p50_ms,
                    p95_ms: s.p95_ms,
                    p99_ms: s.p99_ms,
                    missing: s.missing_fields,
                    latency: farm_proto::latency::Histogram(s.latency_bins.into_iter().collect()),
                    malformed: s.malformed_lines,
                    malformed_reasons: s.malformed_reasons.into_iter().collect(),
                    malformed_sample: text(s.malformed_sample),
                    malformed_total: s.malformed_total,
                    since: (s.since_unix_s > 0).then_some(s.since_unix_s),
                    problem: text(s.problem),
                    requests_total: s.requests_total,
                    urls: s
                        .urls
                        .into_iter()
                        .map(|u| (u.stem, u.requests, u.total_ms))
                        .collect(),
                }
            })
            .collect(),
    }
}
