//! `kind: netscaler`: a Citrix NetScaler ADC through NITRO.
//!
//! A node's `lb_server` is a service (`member: service`, the default), a
//! server (`member: server`: every service of it at once) or a service
//! group member `server:port` (`member: servicegroup`). drain = graceful
//! disable (`graceful: YES`, and `delay` when the inventory gives one:
//! connections left after it are cut); drained when the service is `OFS`
//! and `curclntconnections` — a JSON string — is `"0"`. Return = enable,
//! then wait for `UP`.
//!
//! Auth: a login session (`NITRO_AUTH_TOKEN` cookie, renewed on 401) or
//! `X-NITRO-USER`/`X-NITRO-PASS` on every call.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use farm_inventory::{NetscalerMember, Node};
use reqwest::Method;
use serde_json::{json, Value};

use super::http::{excerpt, segment, Api, Reply, Verdict};
use super::{LbError, LbState, LbTraffic, LoadBalancer, Member, MemberState, Target};
use crate::secret::Password;

const POLL: Duration = Duration::from_millis(200);
/// The login session's idle timeout asked for, in seconds.
const SESSION_TIMEOUT: u64 = 900;

pub struct Netscaler {
    api: Api,
    member: NetscalerMember,
    delay: Option<Duration>,
    user: String,
    password: Password,
    login: bool,
    cookie: Mutex<Option<String>>,
}

/// One service's figures from `stat/service` (or a service group member's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsStat {
    pub name: String,
    /// `UP`, `DOWN`, `UNKNOWN`, `BUSY`, `OFS`, `TROFS`, `TROFS_DOWN`.
    pub state: String,
    pub client_connections: u64,
    /// `totalrequests`: requests the service received (a counter).
    pub total_requests: Option<u64>,
}

impl Netscaler {
    pub fn new(cfg: &farm_inventory::Netscaler, password: Password) -> Result<Netscaler, LbError> {
        let api = Api::appliance("netscaler", &cfg.api)?;
        Ok(Netscaler {
            api,
            member: cfg.member.clone(),
            delay: cfg.delay,
            user: cfg.api.username.clone(),
            password,
            login: cfg.login,
            cookie: Mutex::new(None),
        })
    }

    fn cookie(&self) -> Option<String> {
        self.cookie
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn log_in(&self) -> Result<(), LbError> {
        let body = json!({"login": {
            "username": self.user,
            "password": self.password.expose(),
            "timeout": SESSION_TIMEOUT,
        }});
        let reply = self
            .api
            .post_login("login", "/nitro/v1/config/login", &body, transient)
            .await?;
        if !reply.ok() {
            return Err(self
                .api
                .login_refused("login", &self.user, &reply, &message(&reply)));
        }
        let token = reply
            .headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find_map(|kv| {
                kv.trim()
                    .strip_prefix("NITRO_AUTH_TOKEN=")
                    .map(str::to_string)
            })
            // Some versions answer with the token in the body as well.
            .or_else(|| {
                reply
                    .json()
                    .and_then(|v| v["sessionid"].as_str().map(str::to_string))
            })
            .ok_or_else(|| LbError::Api {
                lb: self.api.lb.clone(),
                message: "login answered without a NITRO_AUTH_TOKEN cookie".into(),
            })?;
        *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
        Ok(())
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply, LbError> {
        if self.login && self.cookie().is_none() {
            self.log_in().await?;
        }
        let url = self.api.url(path);
        self.api
            .call(
                what,
                |c| {
                    let req = super::http::json_request(c, &method, &url, body);
                    match (self.login, self.cookie()) {
                        (true, Some(t)) => {
                            req.header(reqwest::header::COOKIE, format!("NITRO_AUTH_TOKEN={t}"))
                        }
                        _ => req
                            .header("X-NITRO-USER", &self.user)
                            .header("X-NITRO-PASS", self.password.expose()),
                    }
                },
                |r| match transient(r) {
                    Some(Verdict::Relogin) if !self.login => Verdict::Done,
                    Some(v) => v,
                    None => Verdict::Done,
                },
                || self.log_in(),
            )
            .await
    }

    fn error(&self, node: &Node, what: &str, reply: &Reply) -> LbError {
        let code = reply.json().and_then(|v| v["errorcode"].as_i64());
        if reply.status == 404 || code == Some(258) {
            LbError::NoMember {
                lb: self.api.lb.clone(),
                node: node.name.clone(),
                member: format!(
                    "{} `{}` ({})",
                    self.member_word(),
                    node.lb_server,
                    message(reply)
                ),
            }
        } else {
            self.api.http_error(what, node, reply, &message(reply))
        }
    }

    fn member_word(&self) -> &'static str {
        match self.member {
            NetscalerMember::Service => "service",
            NetscalerMember::Server => "server",
            NetscalerMember::ServiceGroup(_) => "service group member",
        }
    }

    /// The disable (`action=disable`) or enable call for `node`.
    fn action(&self, node: &Node, disable: bool) -> (String, Value) {
        let action = if disable { "disable" } else { "enable" };
        let mut inner = match &self.member {
            NetscalerMember::Service => json!({"name": node.lb_server}),
            NetscalerMember::Server => json!({"name": node.lb_server}),
            NetscalerMember::ServiceGroup(group) => {
                let (server, port) = split_member(&node.lb_server);
                json!({"servicegroupname": group, "servername": server, "port": port})
            }
        };
        if disable {
            inner["graceful"] = json!("YES");
            if let Some(d) = self.delay {
                inner["delay"] = json!(d.as_secs());
            }
        }
        let object = match self.member {
            NetscalerMember::Service => "service",
            NetscalerMember::Server => "server",
            NetscalerMember::ServiceGroup(_) => "servicegroup",
        };
        (
            format!("/nitro/v1/config/{object}?action={action}"),
            json!({ object: inner }),
        )
    }

    async fn post_action(&self, node: &Node, disable: bool) -> Result<(), LbError> {
        let (path, body) = self.action(node, disable);
        let what = if disable {
            "graceful disable"
        } else {
            "enable"
        };
        let reply = self.request(Method::POST, &path, Some(&body), what).await?;
        let errorcode = reply
            .json()
            .and_then(|v| v["errorcode"].as_i64())
            .unwrap_or(0);
        if reply.ok() && errorcode == 0 {
            Ok(())
        } else {
            Err(self.error(node, what, &reply))
        }
    }

    async fn traffic_of(&self, node: &Node) -> Result<LbTraffic, LbError> {
        let stats = self.stats(node).await?;
        Ok(LbTraffic {
            requests_total: stats.iter().map(|s| s.total_requests).sum::<Option<u64>>(),
            connections: Some(stats.iter().map(|s| s.client_connections).sum()),
            ..LbTraffic::default()
        })
    }

    /// The figures of every service `node` stands for.
    pub async fn stats(&self, node: &Node) -> Result<Vec<NsStat>, LbError> {
        match &self.member {
            NetscalerMember::Service => Ok(vec![self.service_stat(node, &node.lb_server).await?]),
            NetscalerMember::ServiceGroup(group) => {
                let (server, port) = split_member(&node.lb_server);
                let path = format!(
                    "/nitro/v1/stat/servicegroupmember?args=servicegroupname:{},servername:{},port:{port}",
                    segment(group),
                    segment(server)
                );
                let what = "read the service group member";
                let reply = self.request(Method::GET, &path, None, what).await?;
                if !reply.ok() {
                    return Err(self.error(node, what, &reply));
                }
                let v = reply.json().unwrap_or_default();
                let list = v["servicegroupmember"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                // The one asked for; a list of several is filtered by its
                // own fields when it carries them.
                let mine = list.iter().find(|m| {
                    let name = m["servername"].as_str().or(m["primaryipaddress"].as_str());
                    let p = m["port"]
                        .as_u64()
                        .or_else(|| m["port"].as_str().and_then(|p| p.parse().ok()));
                    name.is_none_or(|n| n == server) && p.is_none_or(|p| p == port as u64)
                });
                match mine.and_then(|m| stat_of(m, &node.lb_server)) {
                    Some(s) => Ok(vec![s]),
                    None => Err(LbError::NoMember {
                        lb: self.api.lb.clone(),
                        node: node.name.clone(),
                        member: format!("service group member `{}` in `{group}`", node.lb_server),
                    }),
                }
            }
            NetscalerMember::Server => {
                // Which services the server has: `server_service_binding`,
                // a NITRO resource outside the documented contract.
                let path = format!(
                    "/nitro/v1/config/server_service_binding/{}",
                    segment(&node.lb_server)
                );
                let what = "list the server's services (server_service_binding)";
                let reply = self.request(Method::GET, &path, None, what).await?;
                if !reply.ok() {
                    return Err(self.error(node, what, &reply));
                }
                let names: Vec<String> = reply.json().unwrap_or_default()["server_service_binding"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|b| b["servicename"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if names.is_empty() {
                    return Err(LbError::Api {
                        lb: self.api.lb.clone(),
                        message: format!(
                            "server `{}` of {} has no services bound (or server_service_binding \
                             answered in a shape not known here: {})",
                            node.lb_server,
                            node.name,
                            excerpt(&reply.body)
                        ),
                    });
                }
                let mut out = Vec::new();
                for n in names {
                    out.push(self.service_stat(node, &n).await?);
                }
                Ok(out)
            }
        }
    }

    async fn service_stat(&self, node: &Node, service: &str) -> Result<NsStat, LbError> {
        let what = "read the service";
        let reply = self
            .request(
                Method::GET,
                &format!("/nitro/v1/stat/service/{}", segment(service)),
                None,
                what,
            )
            .await?;
        if !reply.ok() {
            return Err(self.error(node, what, &reply));
        }
        reply.json().unwrap_or_default()["service"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|s| stat_of(s, service))
            .ok_or_else(|| LbError::Api {
                lb: self.api.lb.clone(),
                message: format!(
                    "{what} `{service}` for {}: no `service[0].state` in {}",
                    node.name,
                    excerpt(&reply.body)
                ),
            })
    }
}

/// `server:port` of a service group member.
fn split_member(m: &str) -> (&str, u16) {
    match m.rsplit_once(':') {
        Some((s, p)) => (s, p.parse().unwrap_or(0)),
        None => (m, 0),
    }
}

/// A stat object's state and client connections (a string, or a number).
fn stat_of(v: &Value, name: &str) -> Option<NsStat> {
    let state = v["state"].as_str()?.to_string();
    // Numbers come as JSON strings or numbers, whatever the template says.
    let number = |k: &str| {
        let x = &v[k];
        x.as_str()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .or_else(|| x.as_f64())
            .filter(|n| *n >= 0.0)
            .map(|n| n as u64)
    };
    Some(NsStat {
        name: v["name"].as_str().unwrap_or(name).to_string(),
        state,
        client_connections: number("curclntconnections").unwrap_or(0),
        total_requests: number("totalrequests"),
    })
}

fn message(reply: &Reply) -> String {
    reply
        .json()
        .and_then(|v| {
            let m = v["message"].as_str()?.to_string();
            Some(match v["errorcode"].as_i64() {
                Some(c) => format!("{m} (errorcode {c})"),
                None => m,
            })
        })
        .unwrap_or_else(|| excerpt(&reply.body))
}

fn transient(reply: &Reply) -> Option<Verdict> {
    match reply.status {
        401 => Some(Verdict::Relogin),
        502..=504 => Some(Verdict::Retry),
        _ => None,
    }
}

/// A service state in the words of every driver.
pub fn lb_state(state: &str) -> LbState {
    match state {
        "UP" | "BUSY" => LbState::Up,
        "OFS" => LbState::Maintenance,
        "TROFS" | "TROFS_DOWN" => LbState::Draining,
        "DOWN" => LbState::Down,
        _ => LbState::Unknown,
    }
}

/// Several services (a server's) read as one: the worst of them.
fn combined(stats: &[NsStat]) -> MemberState {
    let rank = |s: LbState| match s {
        LbState::Up => 0,
        LbState::Draining => 1,
        LbState::Maintenance => 2,
        LbState::Down => 3,
        LbState::Unknown => 4,
    };
    let state = stats
        .iter()
        .map(|s| lb_state(&s.state))
        .max_by_key(|s| rank(*s))
        .unwrap_or(LbState::Unknown);
    MemberState {
        state,
        raw: stats
            .iter()
            .map(|s| format!("{} {}", s.name, s.state))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[async_trait]
impl LoadBalancer for Netscaler {
    fn name(&self) -> String {
        self.api.lb.clone()
    }

    fn kind(&self) -> &'static str {
        "netscaler"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        super::members_each(
            nodes,
            |n| async move { Ok(combined(&self.stats(n).await?)) },
        )
        .await
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        self.post_action(t.node, true).await
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        super::sessions_gone(
            timeout,
            POLL,
            || self.stats(node),
            |stats: &Vec<NsStat>| {
                stats.iter().all(|s| {
                    lb_state(&s.state) == LbState::Maintenance && s.client_connections == 0
                })
            },
        )
        .await
    }

    /// Each service's `stat` figures (all of a node's services summed):
    /// the requests the ADC sent it and its client connections. No
    /// response classes: the service stats do not count them.
    async fn traffic(&self, nodes: &[Node]) -> Result<Option<Vec<Option<LbTraffic>>>, LbError> {
        let reads: Vec<_> = nodes.iter().map(|n| self.traffic_of(n)).collect();
        super::traffic_each(reads).await
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        self.post_action(t.node, false).await?;
        super::MemberWait::up(self, t, start, timeout, POLL, "UP")
            .until(|| async { Ok(combined(&self.stats(t.node).await?)) })
            .await
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let stats = self.stats(t.node).await?;
        Ok(Some(stats.iter().all(|s| {
            matches!(lb_state(&s.state), LbState::Maintenance | LbState::Draining)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_strings_and_states_map() {
        let v = json!({"name": "svc_web01", "state": "OFS", "curclntconnections": "0", "cursrvrconnections": "3"});
        assert_eq!(
            stat_of(&v, "x").unwrap(),
            NsStat {
                name: "svc_web01".into(),
                state: "OFS".into(),
                client_connections: 0,
                total_requests: None,
            }
        );
        // Counters as strings (jbvmio/netscaler's types) or numbers (the
        // payload template's doubles).
        let v = json!({"state": "UP", "curclntconnections": "4", "totalrequests": "98765"});
        assert_eq!(stat_of(&v, "svc").unwrap().total_requests, Some(98765));
        let v = json!({"state": "UP", "curclntconnections": 4.0, "totalrequests": 98765.0});
        let s = stat_of(&v, "svc").unwrap();
        assert_eq!((s.client_connections, s.total_requests), (4, Some(98765)));
        let v = json!({"state": "TROFS", "curclntconnections": "12"});
        assert_eq!(stat_of(&v, "svc").unwrap().client_connections, 12);
        assert_eq!(lb_state("UP"), LbState::Up);
        assert_eq!(lb_state("TROFS"), LbState::Draining);
        assert_eq!(lb_state("OFS"), LbState::Maintenance);
        assert_eq!(lb_state("TROFS_DOWN"), LbState::Draining);
        assert_eq!(lb_state("DOWN"), LbState::Down);
    }

    #[test]
    fn a_server_is_as_good_as_its_worst_service() {
        let s = |name: &str, state: &str| NsStat {
            name: name.into(),
            state: state.into(),
            client_connections: 0,
            total_requests: None,
        };
        let m = combined(&[s("a", "UP"), s("b", "TROFS")]);
        assert_eq!(m.state, LbState::Draining);
        assert_eq!(m.raw, "a UP, b TROFS");
    }
}
