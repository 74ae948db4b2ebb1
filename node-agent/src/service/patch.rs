//! Patch night's calls: Updates, InstallUpdates, Reboot.
use farm_proto::domain::CallKind;
use farm_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::gate::{ticket_check, valid_op_id};
use super::{AgentService, OpStream};
use crate::convert::{self, AgentError};
use crate::idempotency::{wait, Begin, Stored};
use crate::security::Call;

impl AgentService {
    fn patching(&self) -> Result<std::sync::Arc<crate::patch::Patching>, Status> {
        self.patching.clone().ok_or_else(|| {
            AgentError::Invalid(
                "this agent has no patching set up (its backend has no host)".into(),
            )
            .into()
        })
    }

    pub(super) async fn updates_call(
        &self,
        req: Request<pb::UpdatesRequest>,
    ) -> Result<Response<pb::UpdatesReply>, Status> {
        let ticket = self.admit(&req, Call::Updates, &[], "")?;
        let result = async {
            let p = self.patching()?;
            let filter = convert::update_filter(req.get_ref().filter.as_ref())?;
            let found = p.search(&filter).await.map_err(AgentError::from)?;
            Ok(Response::new(pb::UpdatesReply {
                updates: found.updates.iter().map(convert::update_info).collect(),
                reboot_pending: Some(convert::reboot_pending(&p.pending().await)),
                boot: p.boot().await.as_ref().map(convert::boot),
                source: found.source,
                notes: found.notes,
            }))
        }
        .await;
        ticket.close_with(result)
    }

    pub(super) fn install_updates_call(
        &self,
        req: Request<pb::InstallUpdatesRequest>,
    ) -> Result<Response<OpStream>, Status> {
        let ticket = self.admit(&req, Call::InstallUpdates, &[], &req.get_ref().operation_id)?;
        let req = req.into_inner();
        let filter = convert::update_filter(req.filter.as_ref()).map_err(Status::from);
        let valid = valid_op_id(&req.operation_id)
            .and(self.leased_check(&req.operation_id))
            .and(filter.clone().map(|_| ()))
            .and(self.patching().map(|_| ()));
        let (_, ticket) = ticket_check(valid, ticket)?;
        let (Ok(filter), Ok(p)) = (filter, self.patching()) else {
            return Err(Status::internal("checked above"));
        };
        let stream = self.stream_operation(
            ticket,
            &req.operation_id,
            CallKind::InstallUpdates,
            move |progress| async move { p.install(&filter, &progress).await },
        )?;
        Ok(Response::new(stream))
    }

    /// A restart asked once per operation id: recorded with the boot it
    /// was asked on before it is asked, so the same id asked again — by a
    /// controller that lost the answer, or one resumed after the server
    /// came back — answers `done` when the boot changed and `rebooting`
    /// when it did not, and never restarts the server twice.
    pub(super) async fn reboot_call(
        &self,
        req: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::RebootReply>, Status> {
        let id = req.get_ref().operation_id.clone();
        let mut ticket = self.admit(&req, Call::Reboot, &[], &id)?;
        ticket.detail(&req.get_ref().comment);
        let result = async {
            let p = self.patching()?;
            valid_op_id(&id)?;
            self.leased_check(&id)?;
            let Some(now) = p.boot().await else {
                return Err(AgentError::Invalid(
                    "this server's boot cannot be read, so a restart could not be proven: not restarting"
                        .into(),
                )
                .into());
            };
            let now = convert::boot(&now);
            let tx = loop {
                match self
                    .ops
                    .begin(&id, CallKind::Reboot)
                    .map_err(|e| AgentError::Invalid(e.to_string()))?
                {
                    Begin::Repeat(feed) => match wait(feed).await {
                        Some(Stored::Reboot(first)) => {
                            let before = first.boot_before.clone().unwrap_or_default();
                            let done = before.id != now.id && now.time_unix_ms >= before.time_unix_ms;
                            return Ok(pb::RebootReply {
                                state: if done { "done" } else { "rebooting" }.into(),
                                boot_before: Some(before),
                                boot_now: Some(now),
                                replayed: true,
                            });
                        }
                        Some(_) => {
                            return Err(Status::internal(
                                "the first call with this operation id was another kind",
                            ))
                        }
                        None => continue,
                    },
                    Begin::New(tx) => break tx,
                }
            };
            let r = req.get_ref();
            let delay = match r.delay_s {
                0 => p.config().reboot_delay,
                s => std::time::Duration::from_secs(u64::from(s.min(600))),
            }
            .max(std::time::Duration::from_secs(1));
            let comment = if r.comment.trim().is_empty() {
                format!("farm-agent: restart asked by {id}")
            } else {
                r.comment.clone()
            };
            let reply = pb::RebootReply {
                state: "rebooting".into(),
                boot_before: Some(now.clone()),
                boot_now: Some(now),
                replayed: false,
            };
            // On disk before the restart is asked: whatever happens next,
            // this id never restarts the server again.
            self.ops
                .finish(&id, CallKind::Reboot, &tx, Stored::Reboot(reply.clone()));
            if let Err(e) = p.host().reboot(&comment, delay, r.for_updates).await {
                self.ops.abandon(&id);
                return Err(AgentError::from(e).into());
            }
            tracing::warn!(operation_id = %id, "the server restarts in {}: {comment}", humantime::format_duration(delay));
            Ok(reply)
        }
        .await;
        ticket.close_with(result.map(Response::new))
    }
}
