//! The Dump call: a memory dump of a pool's workers within the node's
//! dump budget (see [`crate::dump`]).
use farm_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::gate::valid_op_id;
use super::AgentService;
use crate::convert::AgentError;
use crate::dump::Worker;
use crate::security::Call;

impl AgentService {
    pub(super) async fn dump_call(
        &self,
        req: Request<pb::DumpRequest>,
    ) -> Result<Response<pb::DumpReply>, Status> {
        let r = req.get_ref();
        let (id, pool) = (r.operation_id.clone(), r.pool.clone());
        let ticket = self.admit(&req, Call::Dump, std::slice::from_ref(&pool), &id)?;
        let result = async {
            valid_op_id(&id)?;
            self.leased_check(&id)?;
            let Some(dumps) = self.dumps.clone() else {
                return Err(AgentError::Invalid(
                    "this agent takes no memory dumps: its config has no `dump:` (the tool and the budget)"
                        .into(),
                )
                .into());
            };
            let workers: Vec<Worker> = self
                .iis
                .diagnose(&pool, u64::MAX)
                .await
                .map_err(AgentError::from)?
                .workers
                .iter()
                .map(|w| Worker {
                    pid: w.pid,
                    private_bytes: w.private_bytes,
                })
                .collect();
            let out = dumps.take(&id, &pool, &workers).await;
            Ok(pb::DumpReply {
                pool: out.pool,
                dumps: out
                    .dumps
                    .into_iter()
                    .map(|t| pb::DumpTaken {
                        pid: t.pid,
                        file: t.file,
                        bytes: t.bytes,
                        elapsed_ms: t.elapsed_ms,
                        exit_code: t.exit_code,
                    })
                    .collect(),
                refused: out.refused,
                left_today: out.left_today,
                replayed: out.replayed,
            })
        }
        .await;
        ticket.close_with(result.map(Response::new))
    }
}
