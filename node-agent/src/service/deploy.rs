//! The deployment calls: Stage (a client stream), Releases, Switch, Prune.
//! Each passes the gate like every call (identity, role — viewers may only
//! list releases — names, lease, one audit line naming site and version).
use farm_proto::domain::CallKind;
use std::sync::Arc;

use farm_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::gate::valid_op_id;
use super::AgentService;
use crate::convert::AgentError;
use crate::deploy::stage::Begun;
use crate::deploy::{DeployError, Deployments};
use crate::idempotency::Stored;
use crate::security::Call;

impl AgentService {
    fn deployments(&self) -> Result<Arc<Deployments>, AgentError> {
        self.deployments.clone().ok_or_else(|| {
            DeployError::Conflict(
                "deployments are not configured on this agent (deploy.releases_root in its config)"
                    .into(),
            )
            .into()
        })
    }

    pub(super) async fn stage_call(
        &self,
        req: Request<tonic::Streaming<pb::StageChunk>>,
    ) -> Result<Response<pb::StageReply>, Status> {
        let mut ticket = self.admit(&req, Call::Stage, &[], "")?;
        let mut stream = req.into_inner();
        let mut what = String::new();
        let result = async {
            let deploy = self.deployments()?;
            let header = match stream.message().await? {
                Some(pb::StageChunk {
                    part: Some(pb::stage_chunk::Part::Header(h)),
                }) => h,
                _ => {
                    return Err(
                        AgentError::Invalid("a Stage call starts with its header".into()).into(),
                    )
                }
            };
            ticket.operation_id(&header.operation_id);
            what = format!(
                "site {} version {} sha256 {} size {}",
                header.site, header.version, header.sha256, header.size
            );
            ticket.detail(&what);
            valid_op_id(&header.operation_id)?;
            // A repeated id is answered from the first call: this call's
            // bytes were not taken, the release was already staged.
            let unstored = |s| match s {
                Stored::Stage(r) => Some(pb::StageReply {
                    already_staged: true,
                    ..r
                }),
                _ => None,
            };
            let id = header.operation_id.clone();
            let ticket = &mut ticket;
            let what = &what;
            self.once(
                &id,
                CallKind::Stage,
                Stored::Stage,
                unstored,
                || async move {
                    match deploy.begin_stage(&header).await? {
                        Begun::Already(reply) => Ok(reply),
                        Begun::Upload(mut upload) => {
                            while let Some(chunk) = stream.message().await.map_err(|s| {
                                AgentError::Abandoned(format!(
                                    "the client went away mid-upload (the upload was cut off: {})",
                                    s.message()
                                ))
                            })? {
                                match chunk.part {
                                    Some(pb::stage_chunk::Part::Data(d)) => {
                                        upload.write(&d).await?
                                    }
                                    _ => {
                                        return Err(AgentError::Invalid(
                                            "only the first message of a Stage call is a header"
                                                .into(),
                                        ))
                                    }
                                }
                            }
                            // Should the client go away now, the audit line
                            // still says the bytes were taken (the release is
                            // put in place regardless).
                            ticket.detail(&format!("{what}; received all bytes"));
                            Ok(upload.finish().await?)
                        }
                    }
                },
            )
            .await
        }
        .await;
        // Whether bytes were taken: a resumed run must not upload twice.
        // (Audit lines say "received all bytes" exactly when they were.)
        if let Ok(r) = &result {
            ticket.detail(&if r.already_staged {
                format!("{what}; already staged, nothing uploaded")
            } else {
                format!(
                    "{what}; received all bytes, staged {} files {} bytes",
                    r.files, r.bytes
                )
            });
        }
        ticket.close_with(result.map(Response::new))
    }

    pub(super) async fn releases_call(
        &self,
        req: Request<pb::ReleasesRequest>,
    ) -> Result<Response<pb::ReleasesReply>, Status> {
        let ticket = self.admit(&req, Call::Releases, &[], "")?;
        let result = async {
            let deploy = self.deployments()?;
            Ok(deploy
                .releases(&req.get_ref().site)
                .await
                .map_err(AgentError::from)?)
        }
        .await;
        ticket.close_with(result.map(Response::new))
    }

    pub(super) async fn switch_call(
        &self,
        req: Request<pb::SwitchRequest>,
    ) -> Result<Response<pb::SwitchReply>, Status> {
        let mut ticket = self.admit(&req, Call::Switch, &[], &req.get_ref().operation_id)?;
        let r = req.into_inner();
        ticket.detail(&if r.back {
            format!(
                "site {} back to its previous release, hooks {:?}",
                r.site, r.hooks
            )
        } else {
            format!("site {} to {}, hooks {:?}", r.site, r.version, r.hooks)
        });
        let result = async {
            let deploy = self.deployments()?;
            let unstored = |s| match s {
                Stored::Switch(r) => Some(r),
                _ => None,
            };
            // Not while a recycle or reset runs, and the dead-man switch
            // waits for it.
            let _busy = self.exclusive(&r.operation_id)?;
            self.once(
                &r.operation_id,
                CallKind::Switch,
                Stored::Switch,
                unstored,
                || async { Ok(deploy.switch(&r).await?) },
            )
            .await
        }
        .await;
        if let Ok(reply) = &result {
            let hooks: Vec<String> = reply
                .hooks
                .iter()
                .map(|h| format!("{} exit {}: {}", h.name, h.exit_code, h.output.trim()))
                .collect();
            ticket.detail(&format!(
                "site {} {} -> {}{}; hooks: {}",
                r.site,
                reply.previous,
                reply.version,
                if reply.unchanged { " (unchanged)" } else { "" },
                hooks.join("; ")
            ));
        }
        ticket.close_with(result.map(Response::new))
    }

    pub(super) async fn prune_call(
        &self,
        req: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneReply>, Status> {
        let mut ticket = self.admit(&req, Call::Prune, &[], &req.get_ref().operation_id)?;
        let r = req.into_inner();
        ticket.detail(&format!("site {}", r.site));
        let result = async {
            let deploy = self.deployments()?;
            let unstored = |s| match s {
                Stored::Prune(r) => Some(r),
                _ => None,
            };
            self.once(
                &r.operation_id,
                CallKind::Prune,
                Stored::Prune,
                unstored,
                || async { Ok(deploy.prune(&r.site).await?) },
            )
            .await
        }
        .await;
        ticket.close_with(result.map(Response::new))
    }
}
