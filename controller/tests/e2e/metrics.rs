//! The agents' Prometheus endpoint, scraped after a rolling recycle of the
//! sandbox farm: every call counted by outcome and timed, TLS handshakes
//! refused, and the node's live state.

use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use tokio::io::AsyncWriteExt;

async fn scrape(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let (status, body) = farmctl::probe::get(
        host,
        port.parse().unwrap(),
        None,
        "/metrics",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    body
}

/// The value of the sample `name` (with its labels as written).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_every_call_by_outcome_and_the_refused_handshakes() {
    let farm = farm(SandboxSpec {
        nodes: 2,
        releases: false,
        ..SandboxSpec::default()
    })
    .await;
    let out = farmctl(&["recycle", "-i", &inventory(&farm), "--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let node = &farm.sandbox.nodes[0];
    let addr = node
        .metrics
        .clone()
        .expect("the sandbox agents serve metrics");
    // A client without a certificate: refused at the handshake.
    let mut s = tokio::net::TcpStream::connect(&node.agent).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(s);
    let mut text = String::new();
    farm_proto::assert_eventually!(
        Duration::from_secs(10),
        async {
            text = scrape(&addr).await;
            sample(&text, "farm_agent_tls_rejections_total").unwrap_or(0.0) >= 1.0
        },
        "the refused handshake to be counted"
    );
    for (name, want) in [
        (
            "farm_agent_requests_total{call=\"Recycle\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "farm_agent_requests_total{call=\"Drain\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "farm_agent_requests_total{call=\"Undrain\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "farm_agent_request_duration_seconds_count{call=\"Recycle\"}",
            1.0,
        ),
        ("farm_agent_drained", 0.0),
        ("farm_agent_lease_held", 0.0),
        ("farm_agent_in_flight_requests", 0.0),
    ] {
        assert_eq!(sample(&text, name), Some(want), "{name}\n{text}");
    }
    assert!(
        sample(
            &text,
            "farm_agent_requests_total{call=\"Status\",outcome=\"ok\"}"
        )
        .unwrap()
            >= 1.0
    );
    // Per site, from the node's own log: 20 user requests and 2 probes
    // now (probes count apart, as checks; the recycle's own may be more
    // than a minute old on a slow machine).
    for agent in std::iter::repeat_n("Mozilla/5.0", 20)
        .chain(std::iter::repeat_n(farm_proto::http::PROBE_AGENT, 2))
    {
        let (status, _) = farm_proto::http::get_as(
            agent,
            "127.0.0.1",
            node.http_port,
            Some(farmctl::sandbox::SITE_HOST),
            "/",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
    }
    let site = "site=\"shop\",pool=\"ShopPool\"";
    farm_proto::assert_eventually!(
        Duration::from_secs(10),
        async {
            text = scrape(&addr).await;
            sample(
                &text,
                &format!("farm_agent_site_requests_last_minute{{{site}}}"),
            )
            .unwrap_or(0.0)
                >= 20.0
                && sample(
                    &text,
                    &format!("farm_agent_site_checks_last_minute{{{site}}}"),
                )
                .unwrap_or(0.0)
                    >= 2.0
        },
        "the site's user requests in the metrics:\n{text}"
    );
    assert!(
        sample(
            &text,
            &format!("farm_agent_site_responses_last_minute{{{site},class=\"2xx\"}}")
        )
        .unwrap()
            >= 20.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("farm_agent_site_checks_last_minute{{{site}}}")
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("farm_agent_site_latency_ms{{{site},quantile=\"0.95\"}}")
        )
        .unwrap()
            >= 0.0,
        "{text}"
    );
    // Nothing but /metrics there.
    let (host, port) = addr.rsplit_once(':').unwrap();
    let (status, _) = farmctl::probe::get(
        host,
        port.parse().unwrap(),
        None,
        "/",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
}
