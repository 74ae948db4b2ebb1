//! Webhooks told about runs (`notify:` in the inventory): a run's start,
//! a node that failed, a halt, the end. Posts go out from a task of their
//! own with a bounded queue and retries: a slow or dead webhook never
//! holds up a node, never fails a run, and delays its end by at most the
//! webhook's `timeout`. A webhook URL is a secret: messages name it by
//! where it came from.
use std::sync::Mutex;
use std::time::Duration;

use farm_inventory::{Inventory, Notify, NotifyEvent, NotifyFormat, WebhookUrl};
use farm_proto::domain::{NodeOutcome, OperationKind, Phase};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::report::{NodeReport, Reporter, RunReport};

farm_proto::message_error! {
    /// Why a webhook cannot be used.
    NotifyError
}

/// Posts waiting at most; beyond, a post is dropped (and said so).
const QUEUE: usize = 256;
/// Tries per post.
const TRIES: u32 = 3;

struct Hook {
    url: String,
    label: String,
    events: Vec<NotifyEvent>,
    format: NotifyFormat,
    timeout: Duration,
}

struct Post {
    event: NotifyEvent,
    body: Value,
    text: String,
}

pub struct Notifier {
    farm: String,
    tx: Mutex<Option<mpsc::Sender<Post>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    run: Mutex<(String, Option<OperationKind>)>,
    /// How long the end of a run waits for the last posts.
    bound: Duration,
}

impl Notifier {
    /// The inventory's webhooks, or `None` when it has none. A webhook
    /// whose URL cannot be read is left out with a warning: notifications
    /// never stop a run.
    pub fn start(inv: &Inventory, reporter: &dyn Reporter) -> Option<Notifier> {
        let hooks: Vec<Hook> = inv
            .notify
            .iter()
            .filter_map(|n| match url(n) {
                Ok(url) => Some(Hook {
                    url,
                    label: n.url.label(),
                    events: n.events.clone(),
                    format: n.format,
                    timeout: n.timeout,
                }),
                Err(e) => {
                    reporter.note(&format!("webhook {}: {e}; it is left out", n.url.label()));
                    None
                }
            })
            .collect();
        if hooks.is_empty() {
            return None;
        }
        let tls = crate::lb::http::tls_config(None).ok()?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .ok()?;
        let bound = hooks.iter().map(|h| h.timeout).max().unwrap_or_default();
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(deliver(client, hooks, rx));
        Some(Notifier {
            farm: inv.farm.clone(),
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            run: Mutex::default(),
            bound,
        })
    }

    /// A notification of its own (the guard's), outside any run.
    pub fn send_event(&self, event: NotifyEvent, body: Value, text: String) {
        self.send(event, body, text);
    }

    fn send(&self, event: NotifyEvent, mut body: Value, text: String) {
        let (run_id, action) = self.run.lock().unwrap_or_else(|e| e.into_inner()).clone();
        body["event"] = event.as_str().into();
        body["farm"] = self.farm.clone().into();
        body["run_id"] = run_id.into();
        body["action"] = action.map(|a| a.as_str()).into();
        body["time"] = crate::clock::now().into();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref() {
            if tx.try_send(Post { event, body, text }).is_err() {
                tracing::warn!(
                    "webhook queue full: a {} notification was dropped",
                    event.as_str()
                );
            }
        }
    }

    /// Lets the last posts go out, for at most the longest webhook
    /// timeout; what is still pending then is given up.
    pub async fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(self.bound, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    "webhooks: gave up on the last notifications after {:?}",
                    self.bound
                );
            }
        }
    }

    fn subject(&self) -> String {
        let (run_id, action) = self.run.lock().unwrap_or_else(|e| e.into_inner()).clone();
        format!(
            "farmctl {} of farm {} (run {run_id})",
            action.map_or("run", |a| a.as_str()),
            self.farm
        )
    }
}

fn url(n: &Notify) -> Result<String, NotifyError> {
    match &n.url {
        WebhookUrl::Inline(u) => Ok(u.clone()),
        WebhookUrl::Secret(s) => crate::secret::read(s)
            .map(|p| p.expose().trim().to_string())
            .map_err(|e| NotifyError(e.to_string())),
    }
}

/// The body a webhook of `format` gets.
fn body(format: NotifyFormat, post: &Post) -> Value {
    match format {
        NotifyFormat::Json => post.body.clone(),
        NotifyFormat::Slack => json!({ "text": post.text }),
        NotifyFormat::Teams => {
            let bad = matches!(post.event, NotifyEvent::NodeFailed | NotifyEvent::Halted)
                || post.body["outcome"] == "failed"
                || post.body["outcome"] == "stopped";
            json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": post.text,
                "themeColor": if bad { "D7000C" } else { "2DC72D" },
                "title": format!("farmctl: {}", post.event.as_str().replace('_', " ")),
                "text": post.text,
            })
        }
    }
}

async fn deliver(client: reqwest::Client, hooks: Vec<Hook>, mut rx: mpsc::Receiver<Post>) {
    while let Some(post) = rx.recv().await {
        for hook in hooks.iter().filter(|h| h.events.contains(&post.event)) {
            let payload = body(hook.format, &post);
            let mut last = String::new();
            for attempt in 1..=TRIES {
                let sent = client
                    .post(&hook.url)
                    .timeout(hook.timeout)
                    .json(&payload)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        last.clear();
                        break;
                    }
                    // A client error will not get better by trying again.
                    Ok(r) if r.status().is_client_error() && r.status() != 429 => {
                        last = format!("HTTP {}", r.status());
                        break;
                    }
                    Ok(r) => last = format!("HTTP {}", r.status()),
                    // Without the URL: reqwest's errors quote it.
                    Err(e) => {
                        last = if e.is_timeout() {
                            "no answer in time".into()
                        } else {
                            "could not connect".into()
                        }
                    }
                }
                if attempt < TRIES {
                    tokio::time::sleep(Duration::from_millis(250) * attempt).await;
                }
            }
            if !last.is_empty() {
                tracing::warn!(webhook = %hook.label, event = post.event.as_str(), "notification not delivered: {last}");
            }
        }
    }
}

/// A run's reporter with the webhooks told as well.
pub struct Notified<'a> {
    pub inner: &'a dyn Reporter,
    pub notifier: Option<&'a Notifier>,
}

impl Reporter for Notified<'_> {
    fn run_started(&self, run_id: &str, action: OperationKind, nodes: &[String]) {
        self.inner.run_started(run_id, action, nodes);
        if let Some(n) = self.notifier {
            *n.run.lock().unwrap_or_else(|e| e.into_inner()) = (run_id.to_string(), Some(action));
            let text = format!(
                "{} started on {} node(s): {}",
                n.subject(),
                nodes.len(),
                nodes.join(", ")
            );
            n.send(NotifyEvent::Started, json!({ "nodes": nodes }), text);
        }
    }
    fn phase(&self, node: &str, phase: Phase) {
        self.inner.phase(node, phase);
    }
    fn detail(&self, node: &str, message: &str) {
        self.inner.detail(node, message);
    }
    fn note(&self, message: &str) {
        self.inner.note(message);
    }
    fn analysis_interval(&self, interval: &crate::report::IntervalReport) {
        self.inner.analysis_interval(interval);
    }
    fn analysis_verdict(&self, a: &crate::report::AnalysisReport, action: &str) {
        self.inner.analysis_verdict(a, action);
        if let Some(n) = self.notifier {
            let verdict = a.verdict.map_or("cut short", |v| v.as_str());
            let text = format!(
                "{}: canary analysis {verdict} on {}: {} ({})",
                n.subject(),
                a.canaries.join(", "),
                if action == "promote" {
                    "the release goes on"
                } else {
                    "ROLLING BACK"
                },
                a.reason
            );
            n.send(
                NotifyEvent::Verdict,
                json!({"verdict": a.verdict, "action": action, "reason": a.reason, "canaries": a.canaries, "rollback_to": a.rollback_to}),
                text,
            );
        }
    }
    fn node_finished(&self, r: &NodeReport) {
        self.inner.node_finished(r);
        if let (Some(n), NodeOutcome::Failed) = (self.notifier, r.outcome) {
            let text = format!(
                "{}: node {} FAILED ({}): {}",
                n.subject(),
                r.name,
                if r.in_rotation {
                    "back in rotation"
                } else {
                    "OUT OF ROTATION"
                },
                r.error.as_deref().unwrap_or("no detail")
            );
            n.send(
                NotifyEvent::NodeFailed,
                json!({"node": r.name, "error": r.error, "failed_step": r.failed_step, "in_rotation": r.in_rotation, "updates": r.updates, "reboot": r.reboot}),
                text,
            );
        }
    }
    fn run_finished(&self, report: &RunReport) {
        self.inner.run_finished(report);
        let Some(n) = self.notifier else { return };
        let failed: Vec<&str> = report
            .nodes
            .iter()
            .filter(|x| x.outcome == NodeOutcome::Failed)
            .map(|x| x.name.as_str())
            .collect();
        if let Some(why) = &report.halted {
            n.send(
                NotifyEvent::Halted,
                json!({"halted": why, "failed_nodes": failed}),
                format!("{} HALTED: {why}", n.subject()),
            );
        }
        let text = format!(
            "{} {} in {:.0}s{}",
            n.subject(),
            report.outcome,
            report.duration_ms as f64 / 1000.0,
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join(", "))
            }
        );
        let mut payload = json!({"outcome": report.outcome, "duration_ms": report.duration_ms, "failed_nodes": failed, "halted": report.halted});
        if report.action.restarts_server() {
            // Patch night: what each node installed, and its restart.
            payload["patched"] = report
                .nodes
                .iter()
                .map(|x| {
                    (
                        x.name.clone(),
                        json!({"outcome": x.outcome, "updates": x.updates, "reboot": x.reboot}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        n.send(NotifyEvent::Finished, payload, text);
    }
}
