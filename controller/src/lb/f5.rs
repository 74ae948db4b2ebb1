//! `kind: f5`: an F5 BIG-IP LTM pool through iControl REST.
//!
//! drain = PATCH the pool member: `force-offline` (`state: user-down`,
//! `session: user-disabled`: nothing new, not even persistent clients) or
//! `disable` (`session: user-disabled` only: persistent clients still
//! come). Drained when the member's `serverside.curConns` is 0. Return =
//! `state: user-up, session: user-enabled`, then wait until the member is
//! `available` with its monitor `up` (or, without a monitor,
//! `unchecked`/`unknown`). PATCH bodies carry `state`/`session` only, which
//! an Operator-role account may change.
//!
//! Auth: a token from `/mgmt/shared/authn/login` (sent as `X-F5-Auth-Token`,
//! renewed on 401), or HTTP basic for local users when the device offers
//! no token login or the inventory asks for it.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use farm_inventory::{F5DrainMode, Node};
use reqwest::Method;
use serde_json::{json, Value};

use super::http::{excerpt, segment, Api, Reply, Verdict};
use super::{LbError, LbState, LbTraffic, LoadBalancer, Member, MemberState, Target};
use crate::secret::Password;

/// How often a member is read while waiting on it.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// Not logged in yet.
    None,
    Token(String),
    Basic,
}

pub struct F5 {
    api: Api,
    pool: String,
    mode: F5DrainMode,
    user: String,
    password: Password,
    token_login: bool,
    auth: Mutex<Auth>,
}

/// A member as `GET member` and its stats describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct F5Member {
    /// `monitor-enabled`, `user-enabled`, `user-disabled`.
    pub session: String,
    /// `up`, `down`, `unchecked`, `checking`, `user-down`.
    pub state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct F5Stats {
    pub cur_conns: u64,
    /// `totRequests` (a counter) and `connq.depth` (connections queued
    /// now), when the device gives them.
    pub tot_requests: Option<u64>,
    pub queue: Option<u64>,
    /// `available`, `offline`, `unknown`.
    pub availability: String,
    /// `up`, `down`, `unchecked`, ...
    pub monitor: String,
}

/// A full path in a URL: every `/` becomes `~` (then the rest encoded).
fn tilde(path: &str) -> String {
    segment(&path.replace('/', "~"))
}

impl F5 {
    pub fn new(cfg: &farm_inventory::F5, password: Password) -> Result<F5, LbError> {
        let api = Api::appliance("f5", &cfg.api)?;
        Ok(F5 {
            api,
            pool: cfg.pool.clone(),
            mode: cfg.drain_mode,
            user: cfg.api.username.clone(),
            password,
            token_login: cfg.token_login,
            auth: Mutex::new(if cfg.token_login {
                Auth::None
            } else {
                Auth::Basic
            }),
        })
    }

    fn auth(&self) -> Auth {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_auth(&self, a: Auth) {
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = a;
    }

    fn member_path(&self, member: &str) -> String {
        format!(
            "/mgmt/tm/ltm/pool/{}/members/{}",
            tilde(&self.pool),
            tilde(member)
        )
    }

    /// Logs in for a token; falls back to basic when the device offers no
    /// token login (404) or this user has no tokens left (400).
    async fn login(&self) -> Result<(), LbError> {
        let body = json!({
            "username": self.user,
            "password": self.password.expose(),
            "loginProviderName": "tmos",
        });
        let reply = self
            .api
            .post_login("token login", "/mgmt/shared/authn/login", &body, transient)
            .await?;
        let token = reply
            .json()
            .and_then(|v| v["token"]["token"].as_str().map(str::to_string));
        match (reply.ok(), token) {
            (true, Some(t)) => {
                self.set_auth(Auth::Token(t));
                Ok(())
            }
            (true, None) => Err(self.api_error("token login", &reply)),
            (false, _)
                if reply.status == 404
                    || (reply.status == 400
                        && message(&reply).contains("maximum active login tokens")) =>
            {
                tracing::warn!(lb = %self.api.lb, "token login not available ({}); using HTTP basic", excerpt(&message(&reply)));
                self.set_auth(Auth::Basic);
                Ok(())
            }
            (false, _) => {
                Err(self
                    .api
                    .login_refused("token login", &self.user, &reply, &message(&reply)))
            }
        }
    }

    /// One API call with the session's credentials; a 401 with a token
    /// logs in again once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply, LbError> {
        if self.auth() == Auth::None {
            self.login().await?;
        }
        let url = self.api.url(path);
        self.api
            .call(
                what,
                |c| {
                    let req = super::http::json_request(c, &method, &url, body);
                    match self.auth() {
                        Auth::Token(t) => req.header("X-F5-Auth-Token", t),
                        _ => req.basic_auth(&self.user, Some(self.password.expose())),
                    }
                },
                |r| match transient(r) {
                    Some(Verdict::Relogin) if self.token_login => Verdict::Relogin,
                    Some(Verdict::Relogin) => Verdict::Done,
                    Some(v) => v,
                    None => Verdict::Done,
                },
                || self.login(),
            )
            .await
    }

    fn api_error(&self, what: &str, reply: &Reply) -> LbError {
        LbError::Api {
            lb: self.api.lb.clone(),
            message: format!("{what}: HTTP {} {}", reply.status, message(reply)),
        }
    }

    /// The error of a failed call about `node`'s member.
    fn member_error(&self, node: &Node, what: &str, reply: &Reply) -> LbError {
        if reply.status == 404 {
            LbError::NoMember {
                lb: format!("{} pool {}", self.api.lb, self.pool),
                node: node.name.clone(),
                member: format!("member `{}` ({})", node.lb_server, message(reply)),
            }
        } else if reply.status == 401 {
            LbError::Api {
                lb: self.api.lb.clone(),
                message: format!(
                    "{what} for {}: user `{}` is not authorized: {} (remote users need token login)",
                    node.name,
                    self.user,
                    message(reply)
                ),
            }
        } else {
            self.api.http_error(what, node, reply, &message(reply))
        }
    }

    pub async fn member(&self, node: &Node) -> Result<F5Member, LbError> {
        let what = "read the pool member";
        let reply = self
            .request(Method::GET, &self.member_path(&node.lb_server), None, what)
            .await?;
        if !reply.ok() {
            return Err(self.member_error(node, what, &reply));
        }
        let v = reply.json().unwrap_or_default();
        Ok(F5Member {
            session: v["session"].as_str().unwrap_or_default().to_string(),
            state: v["state"].as_str().unwrap_or_default().to_string(),
        })
    }

    async fn traffic_of(&self, node: &Node) -> Result<LbTraffic, LbError> {
        let s = self.stats(node).await?;
        Ok(LbTraffic {
            requests_total: s.tot_requests,
            connections: Some(s.cur_conns),
            queue: s.queue,
            ..LbTraffic::default()
        })
    }

    pub async fn stats(&self, node: &Node) -> Result<F5Stats, LbError> {
        let what = "read the pool member's stats";
        let path = format!("{}/stats", self.member_path(&node.lb_server));
        let reply = self.request(Method::GET, &path, None, what).await?;
        if !reply.ok() {
            return Err(self.member_error(node, what, &reply));
        }
        parse_stats(&reply.json().unwrap_or_default()).ok_or_else(|| LbError::Api {
            lb: self.api.lb.clone(),
            message: format!(
                "{what} for {}: no `entries.*.nestedStats.entries` in {}",
                node.name,
                excerpt(&reply.body)
            ),
        })
    }

    async fn patch(&self, node: &Node, body: Value, what: &str) -> Result<(), LbError> {
        let reply = self
            .request(
                Method::PATCH,
                &self.member_path(&node.lb_server),
                Some(&body),
                what,
            )
            .await?;
        if reply.ok() {
            Ok(())
        } else {
            Err(self.member_error(node, what, &reply))
        }
    }

    fn drain_body(&self) -> Value {
        match self.mode {
            F5DrainMode::Disable => json!({"session": "user-disabled"}),
            F5DrainMode::ForceOffline => json!({"state": "user-down", "session": "user-disabled"}),
        }
    }
}

/// The message of an iControl error body (`{"code":..,"message":..}`), or
/// the start of whatever came (a 503 is HTML).
fn message(reply: &Reply) -> String {
    reply
        .json()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| excerpt(&reply.body))
}

/// The answers worth another try: an expired token (401), restjavad
/// restarting (404 `URI path ... not registered`), mcpd lost (500), the
/// config utility restarting (503), a gateway in between (502, 504).
fn transient(reply: &Reply) -> Option<Verdict> {
    match reply.status {
        401 => Some(Verdict::Relogin),
        404 if message(reply).contains("not registered") => Some(Verdict::Retry),
        500 if message(reply).contains("mcpd") => Some(Verdict::Retry),
        502..=504 => Some(Verdict::Retry),
        _ => None,
    }
}

/// The one member's counters in a stats answer: `entries.<selfLink>.
/// nestedStats.entries` (the key is a URL; its value is what counts).
pub fn parse_stats(v: &Value) -> Option<F5Stats> {
    let entries = v["entries"].as_object()?.values().next()?;
    let e = entries["nestedStats"]["entries"].as_object()?;
    let value = |k: &str| e.get(k).and_then(|x| x["value"].as_u64());
    let description = |k: &str| {
        e.get(k)
            .and_then(|x| x["description"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(F5Stats {
        cur_conns: value("serverside.curConns")?,
        tot_requests: value("totRequests"),
        queue: value("connq.depth"),
        availability: description("status.availabilityState"),
        monitor: description("monitorStatus"),
    })
}

/// The member in the words of every driver.
pub fn lb_state(m: &F5Member) -> LbState {
    match (m.session.as_str(), m.state.as_str()) {
        (_, "user-down") => LbState::Maintenance,
        ("user-disabled", _) => LbState::Draining,
        (_, "up" | "unchecked") => LbState::Up,
        (_, "down" | "checking") => LbState::Down,
        _ => LbState::Unknown,
    }
}

/// Serving again: enabled, and available with its monitor up — or, with
/// no monitor, `unchecked`/`unknown` (no monitor says otherwise).
pub fn serving(m: &F5Member, s: &F5Stats) -> bool {
    let enabled = m.session != "user-disabled" && m.state != "user-down";
    let monitored_up = s.availability == "available" && s.monitor == "up";
    let unmonitored = matches!(s.monitor.as_str(), "unchecked" | "unknown")
        && matches!(s.availability.as_str(), "unknown" | "available")
        && m.state != "down"
        && m.state != "checking";
    enabled && (monitored_up || unmonitored)
}

fn raw(m: &F5Member) -> String {
    format!("{}/{}", m.session, m.state)
}

#[async_trait]
impl LoadBalancer for F5 {
    fn name(&self) -> String {
        format!("{} pool {}", self.api.lb, self.pool)
    }

    fn kind(&self) -> &'static str {
        "f5"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        super::members_each(nodes, |n| async move {
            let m = self.member(n).await?;
            Ok(MemberState {
                state: lb_state(&m),
                raw: raw(&m),
            })
        })
        .await
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        self.patch(t.node, self.drain_body(), "drain the pool member")
            .await
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        super::sessions_gone(timeout, POLL, || self.stats(node), |s| s.cur_conns == 0).await
    }

    /// Each member's stats (one call per member, a few at a time): the
    /// requests the F5 sent it, its connections and queue. No response
    /// classes: the pool member stats count connections and requests only.
    async fn traffic(&self, nodes: &[Node]) -> Result<Option<Vec<Option<LbTraffic>>>, LbError> {
        let reads: Vec<_> = nodes.iter().map(|n| self.traffic_of(n)).collect();
        super::traffic_each(reads).await
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        self.patch(
            t.node,
            json!({"state": "user-up", "session": "user-enabled"}),
            "return the pool member",
        )
        .await?;
        super::MemberWait::up(
            self,
            t,
            start,
            timeout,
            POLL,
            "available with its monitor up",
        )
        .until(|| async {
            let m = self.member(t.node).await?;
            let s = self.stats(t.node).await?;
            // Serving is the member enabled and its monitor's word.
            Ok(MemberState {
                state: if serving(&m, &s) {
                    LbState::Up
                } else {
                    LbState::Down
                },
                raw: format!("{}, {}/{}", raw(&m), s.availability, s.monitor),
            })
        })
        .await
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let m = self.member(t.node).await?;
        Ok(Some(match self.mode {
            F5DrainMode::Disable => m.session == "user-disabled",
            F5DrainMode::ForceOffline => m.session == "user-disabled" && m.state == "user-down",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a BIG-IP 16.1 member stats answer (trimmed).
    const STATS: &str = r#"{
      "kind": "tm:ltm:pool:members:membersstats",
      "selfLink": "https://localhost/mgmt/tm/ltm/pool/~Common~shop_pool/members/~Common~web01:80/stats?ver=16.1.2",
      "entries": {
        "https://localhost/mgmt/tm/ltm/pool/~Common~shop_pool/members/~Common~web01:80/~Common~web01:80/stats": {
          "nestedStats": {
            "entries": {
              "addr": {"description": "10.0.1.11"},
              "monitorStatus": {"description": "up"},
              "serverside.curConns": {"value": 7},
              "status.availabilityState": {"description": "available"},
              "status.enabledState": {"description": "disabled"}
            }
          }
        }
      }
    }"#;

    #[test]
    fn stats_are_read_whatever_their_self_link() {
        let s = parse_stats(&serde_json::from_str(STATS).unwrap()).unwrap();
        assert_eq!(
            s,
            F5Stats {
                cur_conns: 7,
                tot_requests: None,
                queue: None,
                availability: "available".into(),
                monitor: "up".into()
            }
        );
        assert!(parse_stats(&json!({"entries": {}})).is_none());
    }

    /// The entry list of a `/members/stats` answer as F5's telemetry
    /// streaming mocks it (ver 14.1.0): the request counter and the queue.
    #[test]
    fn requests_and_queue_are_read_from_the_member_stats() {
        let v = json!({"entries": {
          "https://localhost/mgmt/tm/ltm/pool/~Common~test_pool_0/members/~Common~_auto_192.168.2.2:80/stats": { "nestedStats": {
            "kind": "tm:ltm:pool:members:membersstats",
            "selfLink": "https://localhost/mgmt/tm/ltm/pool/~Common~test_pool_0/members/~Common~_auto_192.168.2.2:80/stats?ver=14.1.0",
            "entries": { "addr": {"description": "192.168.2.2"}, "connq.depth": {"value": 3}, "curSessions": {"value": 0},
              "monitorRule": {"description": "/Common/http (pool monitor)"}, "monitorStatus": {"description": "up"},
              "nodeName": {"description": "/Common/_auto_192.168.2.2"}, "poolName": {"description": "/Common/test_pool_0"}, "port": {"value": 80},
              "serverside.bitsIn": {"value": 0}, "serverside.curConns": {"value": 2}, "serverside.maxConns": {"value": 0},
              "serverside.totConns": {"value": 0}, "sessionStatus": {"description": "enabled"},
              "status.availabilityState": {"description": "available"}, "status.enabledState": {"description": "enabled"},
              "status.statusReason": {"description": "Pool member is available"}, "totRequests": {"value": 1234} } } }
        }});
        let s = parse_stats(&v).unwrap();
        assert_eq!(
            (s.cur_conns, s.tot_requests, s.queue),
            (2, Some(1234), Some(3))
        );
    }

    #[test]
    fn members_map_to_the_shared_states() {
        let m = |session: &str, state: &str| F5Member {
            session: session.into(),
            state: state.into(),
        };
        assert_eq!(lb_state(&m("monitor-enabled", "up")), LbState::Up);
        assert_eq!(lb_state(&m("user-enabled", "unchecked")), LbState::Up);
        assert_eq!(lb_state(&m("user-disabled", "up")), LbState::Draining);
        assert_eq!(
            lb_state(&m("user-disabled", "user-down")),
            LbState::Maintenance
        );
        assert_eq!(lb_state(&m("monitor-enabled", "down")), LbState::Down);
        assert_eq!(lb_state(&m("monitor-enabled", "checking")), LbState::Down);
    }

    #[test]
    fn serving_needs_enabled_and_available_or_unmonitored() {
        let m = |session: &str, state: &str| F5Member {
            session: session.into(),
            state: state.into(),
        };
        let s = |a: &str, mon: &str| F5Stats {
            cur_conns: 0,
            tot_requests: None,
            queue: None,
            availability: a.into(),
            monitor: mon.into(),
        };
        assert!(serving(&m("user-enabled", "up"), &s("available", "up")));
        assert!(serving(
            &m("user-enabled", "unchecked"),
            &s("unknown", "unchecked")
        ));
        assert!(!serving(
            &m("user-enabled", "checking"),
            &s("unknown", "unchecked")
        ));
        assert!(!serving(&m("user-disabled", "up"), &s("available", "up")));
        assert!(!serving(&m("user-enabled", "up"), &s("offline", "down")));
    }

    #[test]
    fn full_paths_become_tildes() {
        assert_eq!(tilde("/Common/web01:80"), "~Common~web01:80");
        assert_eq!(tilde("/Tenant/App/web01:80"), "~Tenant~App~web01:80");
    }
}
