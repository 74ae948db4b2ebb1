//! Prometheus metrics (`metrics: {listen: ...}` in the config): every call
//! counted by outcome and timed (recycles, resets, drains, stages,
//! switches... the same calls the audit log records), TLS handshakes
//! rejected, and — read at each scrape — requests in flight, whether the
//! node is drained and whether a run holds its lease. Served on a listener
//! of its own, plain HTTP, loopback by default: it is for a local scraper
//! (or one reached through a tunnel), not for the farm network.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallOutcome {
    call: String,
    /// `ok`, `failed`, `denied`, `invalid`, `abandoned`, `replayed`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteClassLabel {
    site: String,
    pool: String,
    /// `1xx` .. `5xx`.
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteQuantileLabel {
    site: String,
    pool: String,
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteReasonLabel {
    site: String,
    pool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteGaugeLabel {
    site: String,
    pool: String,
    gauge: String,
}

/// What a scrape reads from the node at that moment.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub in_flight: Option<u64>,
    pub drained: bool,
    pub leased: bool,
    /// Each site's traffic over the last minute (the Traffic call's
    /// figures), when the agent reads its logs.
    pub sites: Vec<crate::traffic::watch::SiteFigures>,
}

/// The window the per-site gauges cover, in seconds.
pub const SITE_WINDOW_S: u64 = 60;

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

pub type LiveFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Live> + Send>> + Send + Sync>;

pub struct Metrics {
    registry: Registry,
    requests: Family<CallOutcome, Counter>,
    durations: Family<CallLabel, Histogram>,
    tls_rejections: Counter,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    drained: Gauge<i64, std::sync::atomic::AtomicI64>,
    leased: Gauge<i64, std::sync::atomic::AtomicI64>,
    scrapes: Counter<u64, AtomicU64>,
    site_requests: Family<SiteLabel, FloatGauge>,
    site_checks: Family<SiteLabel, FloatGauge>,
    site_responses: Family<SiteClassLabel, FloatGauge>,
    site_latency: Family<SiteQuantileLabel, FloatGauge>,
    site_httperr: Family<SiteReasonLabel, FloatGauge>,
    /// The site's pool's gauges, from the performance counters.
    site_gauges: Family<SiteGaugeLabel, FloatGauge>,
    site_malformed: Family<SiteReasonLabel, FloatGauge>,
    site_log_problem: Family<SiteLabel, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("farm_agent");
        let requests = Family::<CallOutcome, Counter>::default();
        registry.register(
            "requests",
            "Calls to the agent by call (Recycle, Reset, Drain, Stage, Switch, ...) and outcome",
            requests.clone(),
        );
        let durations = Family::<CallLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "How long calls took, by call",
            durations.clone(),
        );
        let tls_rejections = Counter::default();
        registry.register(
            "tls_rejections",
            "TLS handshakes refused (no or a wrong client certificate, no handshake in time)",
            tls_rejections.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests in flight on the node's sites (-1: unknown)",
            in_flight.clone(),
        );
        let drained = Gauge::default();
        registry.register(
            "drained",
            "1 while the node is drained (its health files away)",
            drained.clone(),
        );
        let leased = Gauge::default();
        registry.register(
            "lease_held",
            "1 while a run holds the node's lease",
            leased.clone(),
        );
        let scrapes = Counter::default();
        registry.register("scrapes", "Scrapes of this endpoint", scrapes.clone());
        let site_requests = Family::<SiteLabel, FloatGauge>::default();
        registry.register(
            "site_requests_last_minute",
            "User requests of the site over the last minute, from its W3C log (health checks and probes apart)",
            site_requests.clone(),
        );
        let site_checks = Family::<SiteLabel, FloatGauge>::default();
        registry.register(
            "site_checks_last_minute",
            "Health-check and probe requests of the site over the last minute",
            site_checks.clone(),
        );
        let site_responses = Family::<SiteClassLabel, FloatGauge>::default();
        registry.register(
            "site_responses_last_minute",
            "User responses of the site over the last minute by status class",
            site_responses.clone(),
        );
        let site_latency = Family::<SiteQuantileLabel, FloatGauge>::default();
        registry.register(
            "site_latency_ms",
            "time-taken quantiles of the site's user requests over the last minute, ms (-1: no timed request)",
            site_latency.clone(),
        );
        let site_httperr = Family::<SiteReasonLabel, FloatGauge>::default();
        registry.register(
            "site_httperr_last_minute",
            "HTTP.sys errors of the site over the last minute by reason (AppOffline, QueueFull, ...)",
            site_httperr.clone(),
        );
        let site_gauges = Family::<SiteGaugeLabel, FloatGauge>::default();
        registry.register(
            "site_pool",
            "The site's pool from the performance counters, newest reading: gauge=queue (HTTP.sys request queue), rejected (requests the queue turned away), active_requests, cpu_percent and private_bytes (its workers, summed)",
            site_gauges.clone(),
        );
        let site_malformed = Family::<SiteReasonLabel, FloatGauge>::default();
        registry.register(
            "site_malformed_last_minute",
            "Lines of the site's W3C log over the last minute that could not be read, by reason (no_fields, field_count, bad_date, no_date, bad_time, bad_status, too_long)",
            site_malformed.clone(),
        );
        let site_log_problem = Family::<SiteLabel, FloatGauge>::default();
        registry.register(
            "site_log_problem",
            "1 when the site's log folder cannot be followed (missing, unreadable), else 0",
            site_log_problem.clone(),
        );
        Metrics {
            site_malformed,
            site_log_problem,
            site_gauges,
            site_requests,
            site_checks,
            site_responses,
            site_latency,
            site_httperr,
            registry,
            requests,
            durations,
            tls_rejections,
            in_flight,
            drained,
            leased,
            scrapes,
        }
    }
}

impl Metrics {
    /// One call ended with `outcome` (the audit log's words) after `seconds`.
    pub fn request(&self, call: &str, outcome: &str, seconds: f64) {
        let class = outcome
            .split(|c: char| c == ':' || c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_string();
        if call == "tls-handshake" {
            self.tls_rejections.inc();
            return;
        }
        self.requests
            .get_or_create(&CallOutcome {
                call: call.to_string(),
                outcome: class,
            })
            .inc();
        self.durations
            .get_or_create(&CallLabel {
                call: call.to_string(),
            })
            .observe(seconds);
    }

    pub fn tls_rejected(&self) {
        self.tls_rejections.inc();
    }

    /// The text a scrape gets, with the live gauges read now.
    pub fn encode(&self, live: Live) -> String {
        self.scrapes.inc();
        self.in_flight.set(
            live.in_flight
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        );
        self.drained.set(i64::from(live.drained));
        self.leased.set(i64::from(live.leased));
        // The per-site gauges say the last minute as it is now: sites and
        // reasons seen before but not now read 0, not their old values.
        self.site_httperr.clear();
        self.site_malformed.clear();
        for s in &live.sites {
            let site = || SiteLabel {
                site: s.site.clone(),
                pool: s.pool.clone(),
            };
            let f = &s.figures;
            self.site_requests
                .get_or_create(&site())
                .set(f.requests as f64);
            self.site_checks.get_or_create(&site()).set(f.checks as f64);
            for (i, n) in f.classes.iter().enumerate() {
                self.site_responses
                    .get_or_create(&SiteClassLabel {
                        site: s.site.clone(),
                        pool: s.pool.clone(),
                        class: format!("{}xx", i + 1),
                    })
                    .set(*n as f64);
            }
            for (q, v) in [("0.5", f.p50_ms), ("0.95", f.p95_ms), ("0.99", f.p99_ms)] {
                self.site_latency
                    .get_or_create(&SiteQuantileLabel {
                        site: s.site.clone(),
                        pool: s.pool.clone(),
                        quantile: q.into(),
                    })
                    .set(v.unwrap_or(-1.0));
            }
            if let Some(g) = &s.gauges {
                for (gauge, v) in [
                    ("queue", g.queue.map(|v| v as f64)),
                    ("rejected", g.rejected.map(|v| v as f64)),
                    ("active_requests", g.active_requests.map(|v| v as f64)),
                    ("cpu_percent", g.cpu_percent),
                    ("private_bytes", g.private_bytes.map(|v| v as f64)),
                ] {
                    if let Some(v) = v {
                        self.site_gauges
                            .get_or_create(&SiteGaugeLabel {
                                site: s.site.clone(),
                                pool: s.pool.clone(),
                                gauge: gauge.into(),
                            })
                            .set(v);
                    }
                }
            }
            self.site_log_problem
                .get_or_create(&site())
                .set(if s.problem.is_some() { 1.0 } else { 0.0 });
            for (reason, n) in f.malformed.by_reason() {
                self.site_malformed
                    .get_or_create(&SiteReasonLabel {
                        site: s.site.clone(),
                        pool: s.pool.clone(),
                        reason: reason.to_string(),
                    })
                    .set(n as f64);
            }
            for (reason, n) in &f.httperr {
                self.site_httperr
                    .get_or_create(&SiteReasonLabel {
                        site: s.site.clone(),
                        pool: s.pool.clone(),
                        reason: reason.clone(),
                    })
                    .set(*n as f64);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    live: LiveFn,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let (metrics, live) = (metrics.clone(), live.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (metrics, live) = (metrics.clone(), live.clone());
                    async move {
                        let head = req.method() == hyper::Method::HEAD;
                        let resp = if (head || req.method() == hyper::Method::GET)
                            && req.uri().path() == "/metrics"
                        {
                            // HEAD: what GET answers, without the body.
                            let text = metrics.encode(live().await);
                            let length = text.len();
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .header("content-length", length)
                                .body(Full::new(if head {
                                    Bytes::new()
                                } else {
                                    Bytes::from(text)
                                }))
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
mod site_tests {
    use super::*;

    #[test]
    fn site_figures_are_encoded() {
        let m = Metrics::default();
        let figures = crate::traffic::window::Figures {
            requests: 20,
            classes: [0, 20, 0, 0, 0],
            p95_ms: Some(12.0),
            httperr: [("AppOffline".to_string(), 2)].into(),
            ..Default::default()
        };
        let text = m.encode(Live {
            sites: vec![crate::traffic::watch::SiteFigures {
                site: "shop".into(),
                pool: "ShopPool".into(),
                figures,
                missing: Vec::new(),
                malformed_total: 0,
                since: None,
                problem: None,
                requests_total: 0,
                gauges: Some(crate::traffic::watch::GaugeFigures {
                    queue: Some(3),
                    cpu_percent: Some(12.5),
                    ..Default::default()
                }),
            }],
            ..Live::default()
        });
        assert!(
            text.contains(
                "farm_agent_site_requests_last_minute{site=\"shop\",pool=\"ShopPool\"} 20"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "farm_agent_site_pool{site=\"shop\",pool=\"ShopPool\",gauge=\"queue\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "farm_agent_site_pool{site=\"shop\",pool=\"ShopPool\",gauge=\"cpu_percent\"} 12.5"
            ),
            "{text}"
        );
    }
}

/// Every metric name the README gives is one a scrape really has, and
/// every metric a scrape has is in the README: an alert copied from the
/// README fires.
#[cfg(test)]
mod readme_tests {
    use super::*;

    #[test]
    fn the_readme_names_exactly_the_metrics_a_scrape_has() {
        let m = Metrics::default();
        m.request("Recycle", "ok", 0.1);
        let text = m.encode(Live {
            sites: vec![crate::traffic::watch::SiteFigures {
                site: "shop".into(),
                pool: "ShopPool".into(),
                figures: crate::traffic::window::Figures {
                    requests: 1,
                    httperr: [("QueueFull".to_string(), 1)].into(),
                    malformed: {
                        let mut m = farm_traffic::malformed::Malformed::default();
                        m.add(farm_traffic::malformed::Reason::FieldCount, "x");
                        m
                    },
                    ..Default::default()
                },
                missing: Vec::new(),
                malformed_total: 0,
                since: None,
                problem: None,
                requests_total: 0,
                gauges: Some(crate::traffic::watch::GaugeFigures {
                    queue: Some(0),
                    ..Default::default()
                }),
            }],
            ..Live::default()
        });
        // Families (`# TYPE name`) and sample names (`name{...} v`).
        let mut families = std::collections::BTreeSet::new();
        let mut samples = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.insert(rest.split_whitespace().next().unwrap().to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap();
                samples.insert(name.to_string());
            }
        }
        let readme = include_str!("../../README.md");
        let named: std::collections::BTreeSet<String> = readme
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("farm_agent_"))
            .map(str::to_string)
            .collect();
        for n in &named {
            assert!(
                samples.contains(n) || families.contains(n),
                "the README names {n}, which no scrape has; a scrape has {samples:?}"
            );
        }
        for f in &families {
            assert!(
                named
                    .iter()
                    .any(|n| n == f || n.starts_with(&format!("{f}_"))),
                "{f} is scraped but the README does not name it"
            );
        }
    }
}

/// `HEAD /metrics` answers as `GET` does, without the body (monitors
/// check that way).
#[cfg(test)]
mod head_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn ask(addr: std::net::SocketAddr, method: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn head_is_get_without_the_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live: LiveFn = Arc::new(|| Box::pin(async { Live::default() }));
        tokio::spawn(serve(
            listener,
            Arc::new(Metrics::default()),
            live,
            std::future::pending(),
        ));
        let get = ask(addr, "GET").await;
        let head = ask(addr, "HEAD").await;
        assert!(
            get.starts_with("HTTP/1.1 200") && head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        let (head_headers, head_body) = head.split_once("\r\n\r\n").unwrap();
        assert_eq!(head_body, "", "no body");
        assert!(head_headers.contains("content-length"), "{head_headers}");
        assert!(get.contains("farm_agent_scrapes_total"));
    }
}
