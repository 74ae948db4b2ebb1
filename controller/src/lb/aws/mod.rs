//! `kind: aws-elbv2`: an AWS ELBv2 target group (ALB or NLB), through the
//! Query API (`Version=2015-12-01`), SigV4-signed, XML answers.
//!
//! drain = `DeregisterTargets`; drained when `DescribeTargetHealth` shows
//! the target out of `draining` (`unused` / `Target.NotRegistered`) — no
//! per-target connection count exists, so the target group's
//! `deregistration_delay` (300 s unless lowered) is what the drain waits
//! out. Return = `RegisterTargets`, then wait for `healthy` (through
//! `initial`).
mod credentials;
pub mod xml;

use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use farm_inventory::Node;
use tokio::sync::Mutex;

pub use credentials::{parse_ini, Creds};
use xml::TargetHealth;

use super::http::{segment, Api, Reply, Verdict};
use super::{LbError, LbState, LoadBalancer, Member, MemberState, Target};

const VERSION: &str = "2015-12-01";
const POLL: Duration = Duration::from_secs(1);
/// What AWS uses when the target group does not say.
pub const DEFAULT_DEREGISTRATION_DELAY: u64 = 300;

pub struct AwsElbv2 {
    api: Api,
    target_group: String,
    region: String,
    profile: Option<String>,
    creds: Mutex<Option<Creds>>,
    /// How often targets are read while waiting (tests shorten it).
    poll: Duration,
}

/// A target as the API names it: an id and maybe a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetId {
    pub id: String,
    pub port: Option<u16>,
}

impl TargetId {
    /// `i-0abc`, `10.0.1.11`, `10.0.1.11:80` or `[2001:db8::1]:80`.
    pub fn parse(lb_server: &str) -> TargetId {
        if let Some(rest) = lb_server.strip_prefix('[') {
            if let Some((ip, port)) = rest.split_once("]:") {
                return TargetId {
                    id: ip.to_string(),
                    port: port.parse().ok(),
                };
            }
            return TargetId {
                id: rest.trim_end_matches(']').to_string(),
                port: None,
            };
        }
        match lb_server.rsplit_once(':') {
            // One colon: host:port. More: a bare IPv6 address.
            Some((id, port)) if !id.contains(':') => TargetId {
                id: id.to_string(),
                port: port.parse().ok(),
            },
            _ => TargetId {
                id: lb_server.to_string(),
                port: None,
            },
        }
    }

    fn matches(&self, t: &TargetHealth) -> bool {
        t.id == self.id && self.port.is_none_or(|p| t.port == Some(p))
    }
}

impl AwsElbv2 {
    pub fn new(cfg: &farm_inventory::AwsElbv2) -> Result<AwsElbv2, LbError> {
        let endpoint = cfg.endpoint.clone().unwrap_or_else(|| {
            let suffix = if cfg.region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://elasticloadbalancing.{}.{suffix}", cfg.region)
        });
        let api = Api::new(
            format!("aws-elbv2 {}", short_arn(&cfg.target_group_arn)),
            &endpoint,
            None,
            cfg.timeout,
        )?;
        Ok(AwsElbv2 {
            api,
            target_group: cfg.target_group_arn.clone(),
            region: cfg.region.clone(),
            profile: cfg.profile.clone(),
            creds: Mutex::new(None),
            poll: POLL,
        })
    }

    /// Reads targets more often (tests against an emulator).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    async fn credentials(&self) -> Result<Creds, LbError> {
        let mut cached = self.creds.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fresh()) {
            return Ok(c.clone());
        }
        let c = credentials::find(self.profile.as_deref())
            .await
            .map_err(|e| LbError::Config {
                lb: self.api.lb.clone(),
                message: e.to_string(),
            })?;
        tracing::debug!(lb = %self.api.lb, source = %c.source, "AWS credentials");
        *cached = Some(c.clone());
        Ok(c)
    }

    /// One signed Query API call; the XML answer when it succeeded.
    async fn query(&self, action: &str, params: &[(String, String)]) -> Result<String, LbError> {
        let creds = self.credentials().await?;
        let mut body = format!("Action={action}&Version={VERSION}");
        for (k, v) in params {
            body.push_str(&format!("&{}={}", segment(k), segment(v)));
        }
        let url = self.api.url("/");
        let reply = self
            .api
            .call(
                action,
                |c| self.signed(c, &url, &body, &creds),
                |r| {
                    if r.status >= 500 || (r.status == 400 && throttled(r)) {
                        Verdict::Retry
                    } else {
                        Verdict::Done
                    }
                },
                || async { Ok(()) },
            )
            .await?;
        if reply.ok() {
            Ok(reply.body)
        } else {
            Err(self.error(action, &reply))
        }
    }

    fn signed(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: &str,
        creds: &Creds,
    ) -> reqwest::RequestBuilder {
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let req = client
            .post(url)
            .header("content-type", content_type)
            .body(body.to_string());
        let identity = aws_credential_types::Credentials::new(
            &creds.access_key,
            creds.secret_key.expose(),
            creds.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "farmctl",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("elasticloadbalancing")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build();
        let signable = SignableRequest::new(
            "POST",
            url,
            [("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        );
        let signed = match (params, signable) {
            (Ok(p), Ok(s)) => sign(s, &p.into()),
            // Both come from values checked above; should they fail, the
            // unsigned request is refused by AWS with its own message.
            _ => return req,
        };
        match signed {
            Ok(out) => {
                let (instructions, _) = out.into_parts();
                let mut req = req;
                for (k, v) in instructions.headers() {
                    req = req.header(k, v);
                }
                req
            }
            Err(_) => req,
        }
    }

    fn error(&self, action: &str, reply: &Reply) -> LbError {
        let (code, message) = xml::error(&reply.body).unwrap_or_else(|| {
            (
                format!("HTTP {}", reply.status),
                super::http::excerpt(&reply.body),
            )
        });
        LbError::Api {
            lb: self.api.lb.clone(),
            message: format!("{action}: {code}: {message}"),
        }
    }

    fn target_params(t: &TargetId) -> Vec<(String, String)> {
        let mut p = vec![("Targets.member.1.Id".to_string(), t.id.clone())];
        if let Some(port) = t.port {
            p.push(("Targets.member.1.Port".into(), port.to_string()));
        }
        p
    }

    fn group(&self) -> (String, String) {
        ("TargetGroupArn".into(), self.target_group.clone())
    }

    /// Every registered target's health.
    pub async fn targets(&self) -> Result<Vec<TargetHealth>, LbError> {
        let xml = self.query("DescribeTargetHealth", &[self.group()]).await?;
        xml::target_health(&xml).map_err(|e| LbError::Api {
            lb: self.api.lb.clone(),
            message: format!("DescribeTargetHealth: {e}"),
        })
    }

    /// The target of `node`, `None` when it is not registered.
    pub async fn target(&self, node: &Node) -> Result<Option<TargetHealth>, LbError> {
        let want = TargetId::parse(&node.lb_server);
        Ok(self.targets().await?.into_iter().find(|t| want.matches(t)))
    }
}

fn throttled(r: &Reply) -> bool {
    xml::error(&r.body).is_some_and(|(code, _)| {
        matches!(
            code.as_str(),
            "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
        )
    })
}

fn short_arn(arn: &str) -> String {
    arn.rsplit_once(":targetgroup/")
        .map(|(_, tg)| format!("targetgroup/{tg}"))
        .unwrap_or_else(|| arn.to_string())
}

/// A target's health in the words of every driver; not registered is out.
pub fn lb_state(t: Option<&TargetHealth>) -> MemberState {
    match t {
        None => MemberState {
            state: LbState::Maintenance,
            raw: "not registered".into(),
        },
        Some(t) => MemberState {
            state: match t.state.as_str() {
                "healthy" => LbState::Up,
                "draining" => LbState::Draining,
                "unused" => LbState::Maintenance,
                "initial" | "unhealthy" | "unavailable" => LbState::Down,
                _ => LbState::Unknown,
            },
            raw: match &t.reason {
                Some(r) => format!("{} ({r})", t.state),
                None => t.state.clone(),
            },
        },
    }
}

/// Out of `draining` for good: `unused`, or gone from the target group.
fn deregistered(t: Option<&TargetHealth>) -> bool {
    t.is_none_or(|t| t.state == "unused" || t.reason.as_deref() == Some("Target.NotRegistered"))
}

#[async_trait]
impl LoadBalancer for AwsElbv2 {
    fn name(&self) -> String {
        self.api.lb.clone()
    }

    fn kind(&self) -> &'static str {
        "aws-elbv2"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        let targets = self.targets().await?;
        Ok(nodes
            .iter()
            .map(|n| {
                let want = TargetId::parse(&n.lb_server);
                Member {
                    node: n.name.clone(),
                    // Deregistered is how this LB takes a node out: a node
                    // not registered is out of rotation, not unknown.
                    state: Some(lb_state(targets.iter().find(|t| want.matches(t)))),
                }
            })
            .collect())
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        let mut params = vec![self.group()];
        params.extend(Self::target_params(&TargetId::parse(&t.node.lb_server)));
        self.query("DeregisterTargets", &params).await.map(|_| ())
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        crate::lb::sessions_gone(
            timeout,
            self.poll,
            || self.target(node),
            |t| deregistered(t.as_ref()),
        )
        .await
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        let mut params = vec![self.group()];
        params.extend(Self::target_params(&TargetId::parse(&t.node.lb_server)));
        self.query("RegisterTargets", &params).await?;
        crate::lb::MemberWait::up(self, t, start, timeout, self.poll, "healthy")
            .until(|| async { Ok(lb_state(self.target(t.node).await?.as_ref())) })
            .await
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let h = self.target(t.node).await?;
        Ok(Some(
            deregistered(h.as_ref()) || h.is_some_and(|h| h.state == "draining"),
        ))
    }

    async fn notes(&self) -> Vec<String> {
        let delay = match self
            .query("DescribeTargetGroupAttributes", &[self.group()])
            .await
        {
            Ok(xml) => xml::attribute(&xml, "deregistration_delay.timeout_seconds")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(DEFAULT_DEREGISTRATION_DELAY),
            Err(e) => {
                return vec![format!(
                    "could not read the target group's deregistration delay: {e}"
                )]
            }
        };
        if delay >= DEFAULT_DEREGISTRATION_DELAY {
            vec![format!(
                "{}: deregistration_delay is {delay} s{}: every node can stay out of rotation that long \
                 after its last request; lower it on the target group (e.g. 30 s) if requests are short",
                self.api.lb,
                if delay == DEFAULT_DEREGISTRATION_DELAY { " (the default)" } else { "" }
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_ports() {
        let t = |s: &str| TargetId::parse(s);
        assert_eq!(
            t("i-0abc"),
            TargetId {
                id: "i-0abc".into(),
                port: None
            }
        );
        assert_eq!(
            t("10.0.1.11:80"),
            TargetId {
                id: "10.0.1.11".into(),
                port: Some(80)
            }
        );
        assert_eq!(
            t("[2001:db8::1]:8080"),
            TargetId {
                id: "2001:db8::1".into(),
                port: Some(8080)
            }
        );
        assert_eq!(
            t("2001:db8::1"),
            TargetId {
                id: "2001:db8::1".into(),
                port: None
            }
        );
    }

    #[test]
    fn target_states_map_and_not_registered_is_out() {
        let h = |state: &str, reason: Option<&str>| TargetHealth {
            id: "i-1".into(),
            port: Some(80),
            state: state.into(),
            reason: reason.map(str::to_string),
            description: None,
        };
        assert_eq!(lb_state(Some(&h("healthy", None))).state, LbState::Up);
        assert_eq!(
            lb_state(Some(&h("initial", Some("Elb.InitialHealthChecking")))).state,
            LbState::Down
        );
        assert_eq!(lb_state(None).state, LbState::Maintenance);
        assert!(deregistered(None));
        assert!(deregistered(Some(&h(
            "unused",
            Some("Target.NotRegistered")
        ))));
        assert!(!deregistered(Some(&h(
            "draining",
            Some("Target.DeregistrationInProgress")
        ))));
        assert!(!deregistered(Some(&h("healthy", None))));
    }
}
