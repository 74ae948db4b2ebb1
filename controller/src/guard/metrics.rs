//! The guard's own metrics (`--metrics ADDR`): decisions by kind and
//! reason, actions, whether it holds the seat, the age of its last
//! evaluation — Prometheus text on `GET /metrics`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::decide::Decision;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    reason: String,
}

pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    actions: Counter,
    evaluations: Counter,
    leader: Gauge,
    age: Gauge<f64, AtomicU64>,
    last_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("farmctl_guard");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let actions = Counter::default();
        let evaluations = Counter::default();
        let leader = Gauge::default();
        let age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "decisions",
            "Decisions by kind and reason",
            decisions.clone(),
        );
        registry.register(
            "actions",
            "Actions taken (recycles and quarantines)",
            actions.clone(),
        );
        registry.register(
            "evaluations",
            "Evaluations of the farm",
            evaluations.clone(),
        );
        registry.register(
            "leader",
            "1 while this guard holds the farm's guard seat",
            leader.clone(),
        );
        registry.register(
            "last_evaluation_age_seconds",
            "Seconds since the last evaluation (NaN: none yet)",
            age.clone(),
        );
        Metrics {
            registry,
            decisions,
            actions,
            evaluations,
            leader,
            age,
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn decided(&self, d: &Decision) {
        let decision = serde_json::to_value(d.decision)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.decisions
            .get_or_create(&DecisionLabels {
                decision,
                reason: d.reason.clone(),
            })
            .inc();
    }

    pub fn acted(&self) {
        self.actions.inc();
    }

    pub fn evaluated(&self, now_ms: u64) {
        self.evaluations.inc();
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn leader(&self, yes: bool) {
        self.leader.set(i64::from(yes));
    }

    pub fn encode(&self) -> String {
        let last = self.last_ms.load(Ordering::Relaxed);
        self.age.set(if last == 0 {
            f64::NAN
        } else {
            crate::clock::now_unix_ms().saturating_sub(last) as f64 / 1000.0
        });
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` for as long as the guard runs.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let resp = if req.method() == hyper::Method::GET
                            && req.uri().path() == "/metrics"
                        {
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(metrics.encode())))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"only GET /metrics here\n")))
                        };
                        Ok::<_, std::convert::Infallible>(resp.unwrap_or_default())
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::decide::{Figures, Kind};

    #[test]
    fn decisions_actions_and_the_last_evaluation_are_counted() {
        let m = Metrics::default();
        let held = Decision {
            decision: Kind::Held,
            reason: "farm sick".into(),
            node: None,
            pool: None,
            detail: String::new(),
            figures: None,
            before: None,
            farm: Figures::default(),
            page: true,
        };
        assert!(m
            .encode()
            .contains("farmctl_guard_last_evaluation_age_seconds NaN"));
        m.decided(&held);
        m.decided(&held);
        m.acted();
        m.leader(true);
        m.evaluated(crate::clock::now_unix_ms());
        let text = m.encode();
        assert!(
            text.contains(r#"farmctl_guard_decisions_total{decision="held",reason="farm sick"} 2"#),
            "{text}"
        );
        assert!(text.contains("farmctl_guard_actions_total 1"), "{text}");
        assert!(text.contains("farmctl_guard_leader 1"), "{text}");
        assert!(!text.contains("age_seconds NaN"), "{text}");
    }
}

#[cfg(test)]
mod served {
    use super::*;

    #[tokio::test]
    async fn get_metrics_answers_the_figures_and_other_paths_404() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let m = Arc::new(Metrics::default());
        m.acted();
        tokio::spawn(serve(listener, m));
        let get = |path: &'static str| {
            farm_proto::http::get_as(
                "test",
                "127.0.0.1",
                port,
                None,
                path,
                std::time::Duration::from_secs(5),
            )
        };
        let (status, body) = get("/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("farmctl_guard_actions_total 1"), "{body}");
        assert_eq!(get("/").await.unwrap().0, 404);
    }
}
