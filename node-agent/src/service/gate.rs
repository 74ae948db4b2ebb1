//! Every call passes through here: who the caller is, whether its role
//! allows the call, whether its names are acceptable, and one audit line
//! when it ends.
use std::time::Instant;

use farm_proto::names::{check_operation_id, check_pool_name};
use tonic::{Request, Status};

use super::{AgentService, MAX_POOLS};
use crate::audit::{self, Audit, Entry};
use crate::convert::AgentError;
use crate::lease::LeaseError;
use crate::security::{Call, Identity};
use std::sync::Arc;

pub(super) fn lease_status(e: LeaseError) -> Status {
    match e {
        LeaseError::Held(m) => AgentError::Leased(m).into(),
        LeaseError::Invalid(m) => AgentError::Invalid(m).into(),
    }
}

/// One request on its way through: who asked for what, audited once when
/// it ends.
pub struct Ticket {
    audit: Option<Arc<Audit>>,
    who: Identity,
    peer: Option<String>,
    call: Call,
    pools: Vec<String>,
    op_id: Option<String>,
    started: Instant,
    detail: Option<String>,
    closed: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The connection is busy while the call lives.
    _call: Option<crate::connections::CallGuard>,
}

/// A call dropped before it was closed — its client went away and the
/// server stopped it — is audited as abandoned, with what it had done.
impl Drop for Ticket {
    fn drop(&mut self) {
        self.record("abandoned: the client went away before the call finished".into());
    }
}

impl Ticket {
    /// Whether the caller's role would also be let make `call`.
    pub fn may(&self, authz: &crate::security::Authorization, call: Call) -> bool {
        authz.check(&self.who, call).is_ok()
    }

    /// What the call is about, for its audit line (names, versions, hook
    /// output), bounded and escaped.
    pub fn detail(&mut self, detail: &str) {
        let t: String = detail.chars().take(4096).collect();
        self.detail = Some(t.escape_debug().to_string());
    }

    /// The operation id, once known (a stream's first message carries it).
    pub fn operation_id(&mut self, id: &str) {
        self.op_id = (!id.is_empty()).then(|| audit::clean(id));
    }

    pub fn close(mut self, outcome: impl Into<String>) {
        self.record(outcome.into());
    }

    fn record(&mut self, outcome: String) {
        // Once: a closed ticket is not audited again when dropped.
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        if self.call.reads_only() && outcome == "ok" {
            tracing::debug!(call = self.call.name(), identity = %self.who.name, %outcome, "request");
        } else {
            tracing::info!(call = self.call.name(), identity = %self.who.name, %outcome, "request");
        }
        if let Some(m) = &self.metrics {
            m.request(
                self.call.name(),
                &outcome,
                self.started.elapsed().as_secs_f64(),
            );
        }
        let Some(audit) = self.audit.take() else {
            return;
        };
        audit.record(&Entry {
            time: audit::now(),
            identity: std::mem::take(&mut self.who.name),
            role: self.who.role.map(|r| r.as_str().to_string()),
            peer: self.peer.take(),
            call: self.call.name().into(),
            pools: std::mem::take(&mut self.pools),
            operation_id: self.op_id.take(),
            outcome,
            duration_ms: audit::ms(self.started),
            detail: self.detail.take(),
        });
    }

    /// Closes with the outcome of `result` and passes it on.
    pub(super) fn close_with<T>(self, result: Result<T, Status>) -> Result<T, Status> {
        match &result {
            Ok(_) => self.close("ok"),
            Err(s) => self.close(outcome_of(s)),
        }
        result
    }
}

fn outcome_of(s: &Status) -> String {
    let kind = match s.code() {
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::PermissionDenied => "denied",
        tonic::Code::Cancelled => "abandoned",
        _ => "failed",
    };
    format!("{kind}: {}", s.message())
}

impl AgentService {
    /// Identifies the caller and checks its role; a denial is audited.
    pub(super) fn admit<T>(
        &self,
        req: &Request<T>,
        call: Call,
        pools: &[String],
        op_id: &str,
    ) -> Result<Ticket, Status> {
        let cert = req.peer_certs().and_then(|c| c.first().map(|c| c.to_vec()));
        let call_guard = match &self.connections {
            Some(c) => c
                .call(req.remote_addr())
                .map_err(|e| Status::resource_exhausted(e.to_string()))?,
            None => None,
        };
        let ticket = Ticket {
            _call: call_guard,
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
            who: self.authz.identify(cert.as_deref()),
            peer: req.remote_addr().map(|a| a.to_string()),
            call,
            pools: pools.iter().take(16).map(|p| audit::clean(p)).collect(),
            op_id: (!op_id.is_empty()).then(|| audit::clean(op_id)),
            started: Instant::now(),
            detail: None,
            closed: false,
        };
        match self.authz.check(&ticket.who, call) {
            Ok(()) => Ok(ticket),
            Err(why) => {
                ticket.close(format!("denied: {why}"));
                Err(Status::permission_denied(why.to_string()))
            }
        }
    }
}

/// Closes `ticket` with the error if `result` is one.
pub(super) fn ticket_check<T>(
    result: Result<T, Status>,
    ticket: Ticket,
) -> Result<(T, Ticket), Status> {
    match result {
        Ok(v) => Ok((v, ticket)),
        Err(e) => Err(ticket.close_with::<()>(Err(e)).unwrap_err()),
    }
}

pub(super) fn valid_op_id(id: &str) -> Result<(), Status> {
    check_operation_id(id).map_err(|e| AgentError::Invalid(e.to_string()).into())
}

pub(super) fn valid_pools(pools: &[String]) -> Result<(), Status> {
    if pools.len() > MAX_POOLS {
        return Err(AgentError::Invalid(format!("at most {MAX_POOLS} pools per request")).into());
    }
    for p in pools {
        check_pool_name(p)
            .map_err(|e| AgentError::Invalid(format!("pool name \"{}\": {e}", audit::clean(p))))?;
    }
    Ok(())
}
