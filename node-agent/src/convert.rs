//! Domain types → wire types, and the one place agent errors become
//! `tonic::Status`.
use farm_proto::v1 as pb;

use crate::iis::{IisError, IisStatus, PoolState, ServiceState, ServiceStatus};
use crate::ops::{OpResult, PoolOutcome, Progress};

pub fn service_state(s: ServiceState) -> pb::ServiceState {
    s.into()
}

pub fn pool_state(s: PoolState) -> pb::PoolState {
    s.into()
}

pub fn services(s: &[ServiceStatus]) -> Vec<pb::Service> {
    s.iter()
        .map(|s| pb::Service {
            name: s.name.clone(),
            state: service_state(s.state) as i32,
        })
        .collect()
}

pub fn status(
    node: &str,
    backend: &str,
    s: IisStatus,
    in_flight: Option<u64>,
    drained: bool,
) -> pb::NodeStatus {
    pb::NodeStatus {
        node: node.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend.to_string(),
        services: services(&s.services),
        pools: s
            .pools
            .into_iter()
            .map(|p| pb::AppPool {
                stopped_by: p.stopped_by.unwrap_or_default(),
                name: p.name,
                state: pool_state(p.state) as i32,
                workers: p
                    .workers
                    .into_iter()
                    .map(|w| pb::Worker {
                        pid: w.pid,
                        started_unix_ms: w.started_unix_ms,
                    })
                    .collect(),
            })
            .collect(),
        sites: s
            .sites
            .into_iter()
            .map(|s| pb::Site {
                name: s.name,
                bindings: s.bindings,
                state: s.state,
                pool: s.pool,
                physical_path: s.physical_path,
                release: String::new(),
            })
            .collect(),
        in_flight,
        drained,
        lease_holder: String::new(),
        lease: None,
        notice: String::new(),
        operation: None,
        traffic: None,
        boot: None,
        reboot_pending: None,
        updates_pending: None,
        updates_checked_unix_ms: 0,
        service_start: String::new(),
    }
}

fn pool_outcome(p: &PoolOutcome) -> pb::PoolOutcome {
    pb::PoolOutcome {
        name: p.name.clone(),
        pids_before: p.pids_before.clone(),
        pids_after: p.pids_after.clone(),
        state_after: pool_state(p.state_after) as i32,
        had_no_worker: p.had_no_worker,
    }
}

pub fn result(r: &OpResult) -> pb::OperationResult {
    pb::OperationResult {
        success: r.success,
        error: r.error.clone().unwrap_or_default(),
        failed_step: r.failed_step.map(|s| s.to_string()).unwrap_or_default(),
        pools: r.pools.iter().map(pool_outcome).collect(),
        services: services(&r.services),
        replayed: false,
        duration_ms: r.duration.as_millis() as u64,
        updates: r.updates.iter().map(update_outcome).collect(),
        reboot_required: r.reboot_required,
    }
}

pub fn update_outcome(u: &farm_iis::host::UpdateResult) -> pb::UpdateOutcome {
    pb::UpdateOutcome {
        kb: u.kb.clone(),
        title: u.title.clone(),
        result: u.result.clone(),
        hresult: u.hresult.clone().unwrap_or_default(),
        reboot_required: u.reboot_required,
    }
}

pub fn boot(b: &farm_iis::host::Boot) -> pb::Boot {
    pb::Boot {
        id: b.id.clone(),
        time_unix_ms: b.time_unix_ms,
    }
}

pub fn reboot_pending(p: &farm_iis::host::RebootPending) -> pb::RebootPending {
    pb::RebootPending {
        pending: p.pending,
        reasons: p.reasons.clone(),
        notes: p.notes.clone(),
    }
}

pub fn update_info(u: &farm_iis::host::Update) -> pb::UpdateInfo {
    pb::UpdateInfo {
        id: u.id.clone(),
        kb: u.kb.clone(),
        title: u.title.clone(),
        classification: u.classification.clone(),
        size_bytes: u.size_bytes,
        reboot_required: u.reboot_required,
    }
}

/// The filter a request names, checked: known classifications, KB
/// numbers.
pub fn update_filter(
    f: Option<&pb::UpdateFilter>,
) -> Result<farm_iis::host::UpdateFilter, AgentError> {
    let Some(f) = f else {
        return Ok(farm_iis::host::UpdateFilter::default());
    };
    let classifications = f
        .classifications
        .iter()
        .map(|c| {
            farm_proto::updates::classification(c)
                .map(|c| c.0.to_string())
                .ok_or_else(|| {
                    AgentError::Invalid(format!("`{c}` is not an update classification"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kbs = |list: &[String]| {
        list.iter()
            .map(|k| {
                farm_proto::updates::kb(k)
                    .ok_or_else(|| AgentError::Invalid(format!("`{k}` is not a KB number")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(farm_iis::host::UpdateFilter {
        classifications,
        include_kbs: kbs(&f.include_kbs)?,
        exclude_kbs: kbs(&f.exclude_kbs)?,
    })
}

pub fn progress(p: Progress) -> pb::OperationEvent {
    pb::OperationEvent {
        event: Some(pb::operation_event::Event::Progress(pb::Progress {
            step: p.step.to_string(),
            message: p.message,
        })),
    }
}

pub fn result_event(r: pb::OperationResult) -> pb::OperationEvent {
    pb::OperationEvent {
        event: Some(pb::operation_event::Event::Result(r)),
    }
}

/// Errors the agent answers with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Busy(String),
    /// The client went away mid-call (a cut upload).
    #[error("{0}")]
    Abandoned(String),
    #[error(transparent)]
    Iis(#[from] IisError),
    #[error("{0}")]
    Leased(String),
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    #[error(transparent)]
    LbMember(#[from] crate::lbmember::LbMemberError),
}

impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        let msg = e.to_string();
        match e {
            AgentError::Invalid(_) => tonic::Status::invalid_argument(msg),
            AgentError::Busy(_) => tonic::Status::failed_precondition(msg),
            AgentError::Abandoned(_) => tonic::Status::cancelled(msg),
            AgentError::Iis(IisError::NoSuchPool(_) | IisError::NoSuchSite(_)) => {
                tonic::Status::not_found(msg)
            }
            AgentError::Iis(IisError::InvalidName { .. }) => tonic::Status::invalid_argument(msg),
            AgentError::Iis(_) => tonic::Status::internal(msg),
            AgentError::Leased(_) => tonic::Status::failed_precondition(msg),
            AgentError::LbMember(l) => {
                use crate::lbmember::LbMemberError as L;
                match l {
                    L::Invalid(_) => tonic::Status::invalid_argument(msg),
                    L::NotFound(_) => tonic::Status::not_found(msg),
                    L::Failed(_) => tonic::Status::internal(msg),
                }
            }
            AgentError::Deploy(d) => {
                use crate::deploy::DeployError as D;
                match d {
                    D::Invalid(_) => tonic::Status::invalid_argument(msg),
                    D::Package(_) | D::Conflict(_) => tonic::Status::failed_precondition(msg),
                    D::NotFound(_) => tonic::Status::not_found(msg),
                    D::Iis(IisError::NoSuchSite(_)) => tonic::Status::not_found(msg),
                    D::Iis(_) | D::Io { .. } => tonic::Status::internal(msg),
                }
            }
        }
    }
}

/// One site's traffic figures on the wire (`sample`: quote an unreadable
/// line).
pub fn site_traffic(s: crate::traffic::watch::SiteFigures, sample: bool) -> pb::SiteTraffic {
    let f = s.figures;
    let mut wire = pb::SiteTraffic {
        site: s.site,
        pool: s.pool,
        covered_s: f.covered_s.min(u64::from(u32::MAX)) as u32,
        requests: f.requests,
        checks: f.checks,
        classes: f.classes.to_vec(),
        errors: f.errors.into_iter().collect(),
        httperr: f.httperr.into_iter().collect(),
        p50_ms: f.p50_ms,
        p95_ms: f.p95_ms,
        p99_ms: f.p99_ms,
        missing_fields: s.missing.iter().map(|m| m.to_string()).collect(),
        malformed_lines: f.malformed.total(),
        malformed_reasons: f.malformed.reasons(),
        malformed_sample: match (&f.malformed.sample, sample) {
            (Some((_, line)), true) => line.clone(),
            _ => String::new(),
        },
        malformed_total: s.malformed_total,
        requests_total: s.requests_total,
        since_unix_s: s.since.unwrap_or(0),
        problem: s.problem.unwrap_or_default(),
        latency_bins: f.latency.0.into_iter().collect(),
        urls: f
            .urls
            .into_iter()
            .map(|(stem, requests, total_ms)| pb::UrlTime {
                stem,
                requests,
                total_ms,
            })
            .collect(),
        ..Default::default()
    };
    if let Some(g) = &s.gauges {
        g.to_wire(&mut wire);
    }
    wire
}

/// A pool's diagnostics on the wire.
pub fn diagnostics(d: crate::iis::PoolDiagnostics) -> pb::DiagnoseReply {
    pb::DiagnoseReply {
        pool: d.pool,
        requests: d
            .requests
            .into_iter()
            .map(|r| pb::RunningRequest {
                id: r.id,
                verb: r.verb,
                url: r.url,
                elapsed_ms: r.elapsed_ms,
                client: r.client.unwrap_or_default(),
                stage: r.stage.unwrap_or_default(),
                module: r.module.unwrap_or_default(),
            })
            .collect(),
        workers: d
            .workers
            .into_iter()
            .map(|w| pb::WorkerFigures {
                pid: w.pid,
                cpu_percent: w.cpu_percent,
                private_bytes: w.private_bytes,
                active_requests: w.active_requests,
            })
            .collect(),
        queue: d.queue,
        rejected: d.rejected,
        state: d.state.unwrap_or_default(),
        events: d
            .events
            .into_iter()
            .map(|e| pb::WasEvent {
                id: e.id,
                level: e.level,
                date: e.date,
                pool: e.pool.unwrap_or_default(),
                pid: e.pid,
                message: e.message,
            })
            .collect(),
        notes: d.notes,
    }
}
