//! HTTP health probes from the controller, with the site's Host header:
//! the node as a load balancer or a user sees it. Behind the [`Prober`]
//! trait, so the engine is tested with a fake.
use std::time::Duration;

use async_trait::async_trait;
use farm_inventory::{Node, Site};
use futures::future::join_all;

pub use farm_proto::http::get;

/// Why a node's sites are not (yet) healthy, naming the site and request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The request got no HTTP answer (refused, timed out, cut).
    #[error("site {site}: {detail}")]
    NoAnswer { site: String, detail: String },
    #[error("site {site}: GET {path} answered {status}, expected {expected}")]
    Status {
        site: String,
        path: String,
        status: u16,
        expected: u16,
    },
    #[error("site {site}: GET {path} body does not contain {want:?}")]
    Body {
        site: String,
        path: String,
        want: String,
    },
    #[error("not healthy within {}: {last}", crate::human::duration(*within))]
    NotHealthy {
        within: Duration,
        last: Box<ProbeError>,
    },
    #[error(
        "site {site}: GET {path} did not answer 200 with {expect:?} within {}; {seen}",
        crate::human::duration(*within)
    )]
    NotServing {
        site: String,
        path: String,
        expect: String,
        within: Duration,
        seen: String,
    },
    #[error("not probed yet")]
    NotProbed,
    /// A fake's word (tests).
    #[error("{0}")]
    Other(String),
}

/// Probing a node's sites.
#[async_trait]
pub trait Prober: Send + Sync {
    /// Every site, judged on a few probes: Ok when all answer as
    /// expected (a site that fails once is asked twice more and is healthy
    /// when two of three answer well: a pool failing 1% of its requests is
    /// not "unhealthy" on one unlucky answer).
    async fn once(&self, node: &Node, sites: &[Site]) -> Result<(), ProbeError>;
    /// Until every site answered well `successes` times in a row, or
    /// `timeout` passes.
    async fn until_healthy(
        &self,
        node: &Node,
        sites: &[Site],
        timeout: Duration,
    ) -> Result<(), ProbeError>;
    /// Until `GET path` on `site` (its Host header) answers 200 with
    /// `expect` in its body, or `timeout` passes: the version answering.
    async fn until_serves(
        &self,
        node: &Node,
        site: &Site,
        path: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError>;
}

/// Real HTTP probes.
pub struct HttpProber;

#[async_trait]
impl Prober for HttpProber {
    async fn once(&self, node: &Node, sites: &[Site]) -> Result<(), ProbeError> {
        probe_node_once(node, sites).await
    }

    async fn until_healthy(
        &self,
        node: &Node,
        sites: &[Site],
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        wait_healthy(node, sites, timeout).await
    }

    async fn until_serves(
        &self,
        node: &Node,
        site: &Site,
        path: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let ask = || {
            get(
                &node.address,
                site.port_on(node),
                site.host.as_deref(),
                path,
                site.probe.timeout,
            )
        };
        let last = std::sync::Mutex::new(String::from("no answer"));
        let proven = farm_proto::poll::until(timeout, site.probe.interval, || async {
            let answer = ask().await;
            let seen = match &answer {
                Ok((200, body)) if contains_version(body, expect) => return Some(()),
                Ok((200, body)) => format!("it served {:?}", excerpt(body)),
                Ok((status, _)) => format!("it answered HTTP {status}"),
                Err(e) => e.to_string(),
            };
            *last.lock().unwrap_or_else(|e| e.into_inner()) = seen;
            None
        })
        .await;
        proven.map_err(|()| ProbeError::NotServing {
            site: site.name.clone(),
            path: path.to_string(),
            expect: expect.to_string(),
            within: timeout,
            seen: last.into_inner().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// `expect` occurs in `body` as a whole: not inside a longer version
/// (`2.0.0` is not proven by `12.0.0` or `2.0.0-rc1`).
pub fn contains_version(body: &str, expect: &str) -> bool {
    if expect.is_empty() {
        return true;
    }
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+');
    body.match_indices(expect).any(|(at, _)| {
        let before = body[..at].chars().next_back();
        let after = body[at + expect.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// The start of a body, for an error message.
fn excerpt(body: &str) -> String {
    let line = body.trim();
    match line.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// One probe of `site` on `node`: Ok when status and body are as expected.
pub async fn probe_site(node: &Node, site: &Site) -> Result<(), ProbeError> {
    let p = &site.probe;
    let (status, body) = get(
        &node.address,
        site.port_on(node),
        site.host.as_deref(),
        &p.path,
        p.timeout,
    )
    .await
    .map_err(|e| ProbeError::NoAnswer {
        site: site.name.clone(),
        detail: e.to_string(),
    })?;
    if status != p.expect_status {
        return Err(ProbeError::Status {
            site: site.name.clone(),
            path: p.path.clone(),
            status,
            expected: p.expect_status,
        });
    }
    if let Some(want) = &p.expect_body {
        if !body.contains(want.as_str()) {
            return Err(ProbeError::Body {
                site: site.name.clone(),
                path: p.path.clone(),
                want: want.clone(),
            });
        }
    }
    Ok(())
}

/// Another look after a failed probe, this long after it.
const RECHECK: Duration = Duration::from_millis(200);

/// One site on a few probes: healthy when the first answers well, or two
/// of three do; else the last problem seen.
pub async fn probe_site_settled(node: &Node, site: &Site) -> Result<(), ProbeError> {
    let first = match probe_site(node, site).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // Refused or not answering: the node is down, not unlucky.
    if matches!(first, ProbeError::NoAnswer { .. }) {
        return Err(first);
    }
    let mut last = first;
    let mut good = 0;
    for _ in 0..2 {
        tokio::time::sleep(RECHECK).await;
        match probe_site(node, site).await {
            Ok(()) => good += 1,
            Err(e) => last = e,
        }
        if good == 2 {
            return Ok(());
        }
    }
    Err(last)
}

/// Probes every site (each on a few probes, [`probe_site_settled`]); the
/// first problem found, if any.
pub async fn probe_node_once(node: &Node, sites: &[Site]) -> Result<(), ProbeError> {
    let results = join_all(sites.iter().map(|s| probe_site_settled(node, s))).await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(|_| ())
}

/// Probes every site until each answered well `successes` times in a row,
/// or `timeout` passes (then the last problem seen). A streak keeps its
/// rhythm from its first success — the k-th success is due (k-1) ×
/// interval after it — so the time the probes themselves take does not
/// add up.
pub async fn wait_healthy(
    node: &Node,
    sites: &[Site],
    timeout: Duration,
) -> Result<(), ProbeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let per_site = sites.iter().map(|site| async move {
        let interval = site.probe.interval;
        let mut streak = 0;
        let mut first_success = None;
        let mut last_err = ProbeError::NotProbed;
        loop {
            let next = match probe_site(node, site).await {
                Ok(()) => {
                    streak += 1;
                    if streak >= site.probe.successes {
                        return Ok(());
                    }
                    let first = *first_success.get_or_insert_with(tokio::time::Instant::now);
                    first + interval * streak
                }
                Err(e) => {
                    streak = 0;
                    first_success = None;
                    last_err = e;
                    tokio::time::Instant::now() + interval
                }
            };
            if next >= deadline {
                return Err(ProbeError::NotHealthy {
                    within: timeout,
                    last: Box::new(last_err),
                });
            }
            tokio::time::sleep_until(next).await;
        }
    });
    let results = join_all(per_site).await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::contains_version;

    #[test]
    fn a_version_is_proven_only_as_a_whole() {
        assert!(contains_version("2.0.0", "2.0.0"));
        assert!(contains_version("2.0.0\n", "2.0.0"));
        assert!(contains_version("<p>version 2.0.0</p>", "2.0.0"));
        assert!(contains_version("build=2.0.0;", "build=2.0.0"));
        assert!(!contains_version("12.0.0", "2.0.0"));
        assert!(!contains_version("2.0.0-rc1", "2.0.0"));
        assert!(!contains_version("2.0.01", "2.0.0"));
        assert!(!contains_version("1.0.0", "2.0.0"));
        // a later whole occurrence counts
        assert!(contains_version("12.0.0 then 2.0.0", "2.0.0"));
    }
}
