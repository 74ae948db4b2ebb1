//! Operation ids: a repeated id returns the first call's result instead of
//! acting twice (a controller that lost a reply can safely ask again).
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use farm_proto::v1 as pb;
use tokio::sync::watch;

/// How many finished operations are remembered.
const REMEMBERED: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Drain(pb::DrainReply),
    Operation(pb::OperationResult),
    Stage(pb::StageReply),
    Switch(pb::SwitchReply),
    Prune(pb::PruneReply),
}

/// The result of an operation, once it is known.
pub type ResultFeed = watch::Receiver<Option<Stored>>;

pub enum Begin {
    /// First time this id is seen: act, then [`Operations::finish`].
    New(watch::Sender<Option<Stored>>),
    /// Seen before: wait on this for the first result.
    Repeat(ResultFeed),
}

#[derive(Default)]
pub struct Operations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, (&'static str, ResultFeed)>,
    order: VecDeque<String>,
}

impl Operations {
    /// Registers `id` for an operation of `kind` (`recycle`, `drain`, ...).
    /// Reusing an id for another kind of call is an error.
    pub fn begin(&self, id: &str, kind: &'static str) -> Result<Begin, String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, feed)) = inner.by_id.get(id) {
            return if *k == kind {
                Ok(Begin::Repeat(feed.clone()))
            } else {
                Err(format!(
                    "operation id `{id}` was already used for a {k} call"
                ))
            };
        }
        let (tx, rx) = watch::channel(None);
        inner.by_id.insert(id.to_string(), (kind, rx));
        inner.order.push_back(id.to_string());
        while inner.order.len() > REMEMBERED {
            // Forget the oldest finished one; keep running ones.
            let Some(pos) = inner.order.iter().position(|old| {
                inner
                    .by_id
                    .get(old)
                    .is_some_and(|(_, f)| f.borrow().is_some())
            }) else {
                break;
            };
            if let Some(old) = inner.order.remove(pos) {
                inner.by_id.remove(&old);
            }
        }
        Ok(Begin::New(tx))
    }

    /// Forgets an id whose call was refused before acting, so it may be retried.
    pub fn abandon(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_id.remove(id);
        inner.order.retain(|o| o != id);
    }
}

/// Waits for the result of an operation that is (or was) running.
pub async fn wait(mut feed: ResultFeed) -> Option<Stored> {
    feed.wait_for(|r| r.is_some())
        .await
        .ok()
        .and_then(|r| r.clone())
}
