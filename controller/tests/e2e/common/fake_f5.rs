//! An F5 BIG-IP iControl REST fake, written only from the documented
//! contract (the README's `f5` section and the iControl REST reference it
//! cites): token login (tokens expire),
//! basic auth for the local user, one pool's members with session/state,
//! member stats in the `entries.<selfLink>.nestedStats.entries` shape,
//! PATCH limited to `state`/`session` (an Operator account), the 404 body
//! of an unknown member, and transient errors on request.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::https::{serve, Https, Req, Resp};
use super::members::Members;

pub const USER: &str = "svc-farmctl";
pub const PASSWORD: &str = "f5-s3cret-!pass";

pub struct FakeF5 {
    pub https: Https,
    pub members: Arc<Members>,
    pub state: Arc<F5State>,
}

pub struct F5State {
    pub pool: String,
    tokens: Mutex<HashMap<String, Instant>>,
    /// How long a token lives (the device's default is 1200 s).
    pub token_ttl: Mutex<Duration>,
    pub logins: AtomicU64,
    requests: AtomicU64,
    /// Every n-th request (0: none) fails transiently, in turn: 503 HTML,
    /// 500 mcpd lost, 404 URI not registered.
    pub fail_every: AtomicU64,
    pub transient_served: AtomicU64,
    /// PATCH bodies seen.
    pub patches: Mutex<Vec<(String, serde_json::Value)>>,
    /// The device offers no token login (404), as old versions.
    pub no_token_login: std::sync::atomic::AtomicBool,
    modes: Mutex<HashMap<String, Mode>>,
}

fn tilde_back(s: &str) -> String {
    s.replace('~', "/").replace("%25", "%")
}

impl FakeF5 {
    pub async fn start(dir: &Path, pool: &str, members: &[String]) -> FakeF5 {
        let members = Arc::new(Members::new(
            members,
            Duration::from_millis(400),
            Duration::from_millis(300),
        ));
        let state = Arc::new(F5State {
            pool: pool.to_string(),
            tokens: Mutex::default(),
            token_ttl: Mutex::new(Duration::from_secs(1200)),
            logins: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            fail_every: AtomicU64::new(0),
            transient_served: AtomicU64::new(0),
            patches: Mutex::default(),
            no_token_login: Default::default(),
            modes: Mutex::default(),
        });
        let (m, s) = (members.clone(), state.clone());
        let https = serve(dir, "bigip", Arc::new(move |req| handle(&m, &s, req))).await;
        FakeF5 {
            https,
            members,
            state,
        }
    }

    /// The inventory's `load_balancer:` block for this fake.
    pub fn inventory(&self, password_env: &str, drain_mode: &str) -> String {
        format!(
            "load_balancer:\n  kind: f5\n  url: {}\n  pool: {}\n  auth: {{username: {USER}, password_env: {password_env}}}\n  tls: {{ca: {}}}\n  drain_mode: {drain_mode}\n  timeout: 5s\n",
            self.https.url,
            self.state.pool,
            self.https.ca_file.display()
        )
    }
}

fn error(code: u16, message: &str) -> Resp {
    Resp::json(
        code,
        json!({"code": code, "message": message, "errorStack": [], "apiError": 3}),
    )
}

fn handle(members: &Members, st: &F5State, req: Req) -> Resp {
    let n = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let every = st.fail_every.load(Ordering::SeqCst);
    if every > 0 && n.is_multiple_of(every) {
        let k = st.transient_served.fetch_add(1, Ordering::SeqCst);
        return match k % 3 {
            0 => Resp::html(503, "<html><body>Configuration Utility restarting...</body></html>"),
            1 => error(500, "The connection to mcpd has been lost, try again."),
            _ => error(404, &format!("URI path {} not registered.  Please verify URI is supported and wait for /available suffix to be responsive.", req.path)),
        };
    }
    if req.method == "POST" && req.path == "/mgmt/shared/authn/login" {
        if st.no_token_login.load(Ordering::SeqCst) {
            return error(404, "URI path /mgmt/shared/authn/login not registered.");
        }
        let b = req.json();
        if b["username"] == USER && b["password"] == PASSWORD {
            st.logins.fetch_add(1, Ordering::SeqCst);
            let token = format!("TOKEN{}", st.logins.load(Ordering::SeqCst));
            let ttl = *st.token_ttl.lock().unwrap();
            st.tokens
                .lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + ttl);
            return Resp::json(
                200,
                json!({"username": USER, "loginProviderName": "tmos",
                       "token": {"token": token, "name": token, "userName": USER, "timeout": ttl.as_secs()}}),
            );
        }
        return error(401, "Authentication failed.");
    }
    // Every other call: a live token or the local user's basic auth.
    let token_ok = req
        .header("x-f5-auth-token")
        .and_then(|t| st.tokens.lock().unwrap().get(t).copied())
        .is_some_and(|exp| Instant::now() < exp);
    let basic = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    if !token_ok && req.header("authorization") != Some(basic.as_str()) {
        return error(401, "Authorization failed: no user authentication header or token detected. Uri:http://localhost:8100/mgmt/tm/ltm/pool Referrer:127.0.0.1 Sender:127.0.0.1");
    }
    let prefix = format!("/mgmt/tm/ltm/pool/{}/members/", st.pool.replace('/', "~"));
    let Some(rest) = req.path.strip_prefix(&prefix) else {
        return error(
            404,
            &format!(
                "01020036:3: The requested Pool ({}) was not found.",
                tilde_back(req.path.split('/').nth(5).unwrap_or(""))
            ),
        );
    };
    let (member_enc, stats) = match rest.strip_suffix("/stats") {
        Some(m) => (m, true),
        None => (rest, false),
    };
    let member = tilde_back(member_enc);
    if !members.exists(&member) {
        let (node, port) = member.rsplit_once(':').unwrap_or((&member, "0"));
        return error(
            404,
            &format!(
                "01020036:3: The requested Pool Member ({} {node} {port}) was not found.",
                st.pool
            ),
        );
    }
    let short = member.rsplit('/').next().unwrap_or("").to_string();
    let partition = member.split('/').nth(1).unwrap_or("Common").to_string();
    match (req.method.as_str(), stats) {
        ("GET", false) => {
            let (session, state) = view(st, members, &member);
            Resp::json(
                200,
                json!({"kind": "tm:ltm:pool:members:membersstate", "name": short, "partition": partition,
                       "fullPath": member, "session": session, "state": state}),
            )
        }
        ("GET", true) => {
            let conns = members.report_connections(&member);
            let (availability, monitor) = if members.is_out(&member) || members.checked_up(&member)
            {
                ("available", "up")
            } else {
                ("unknown", "checking")
            };
            let self_link = format!("https://localhost{prefix}{member_enc}/{member_enc}/stats");
            Resp::json(
                200,
                json!({"kind": "tm:ltm:pool:members:membersstats",
                "selfLink": format!("https://localhost{prefix}{member_enc}/stats?ver=16.1.2"),
                "entries": { self_link: { "nestedStats": { "entries": {
                    "monitorStatus": {"description": monitor},
                    "serverside.curConns": {"value": conns},
                    "totRequests": {"value": members.requests(&member)},
                    "connq.depth": {"value": 0},
                    "status.availabilityState": {"description": availability},
                    "status.enabledState": {"description": if members.is_out(&member) { "disabled" } else { "enabled" }},
                }}}}}),
            )
        }
        ("PATCH", false) => {
            let body = req.json();
            st.patches
                .lock()
                .unwrap()
                .push((member.clone(), body.clone()));
            let Some(fields) = body.as_object() else {
                return error(400, "Found invalid JSON body in the request.");
            };
            if let Some(k) = fields.keys().find(|k| *k != "state" && *k != "session") {
                return error(
                    400,
                    &format!(
                        "01070822:3: Access Denied: User ({USER}) may not modify the {k} property"
                    ),
                );
            }
            let state = fields.get("state").and_then(|v| v.as_str());
            let session = fields.get("session").and_then(|v| v.as_str());
            if let Some(s) = state.filter(|s| !["user-up", "user-down"].contains(s)) {
                return error(400, &format!("invalid property value \"state\":\"{s}\""));
            }
            if let Some(s) = session.filter(|s| !["user-enabled", "user-disabled"].contains(s)) {
                return error(400, &format!("invalid property value \"session\":\"{s}\""));
            }
            let mut modes = st.modes.lock().unwrap();
            let m = modes.entry(member.clone()).or_default();
            if let Some(s) = state {
                m.user_down = s == "user-down";
            }
            if let Some(s) = session {
                m.disabled = s == "user-disabled";
            }
            let out = m.disabled || m.user_down;
            drop(modes);
            members.set_out(&member, out);
            let (session, state) = view(st, members, &member);
            Resp::json(
                200,
                json!({"name": short, "fullPath": member, "session": session, "state": state}),
            )
        }
        _ => error(400, "Method not supported"),
    }
}

#[derive(Default)]
struct Mode {
    disabled: bool,
    user_down: bool,
}

fn view(st: &F5State, members: &Members, member: &str) -> (&'static str, &'static str) {
    let modes = st.modes.lock().unwrap();
    let m = modes.get(member);
    let session = match m {
        Some(m) if m.disabled => "user-disabled",
        Some(_) => "user-enabled",
        None => "monitor-enabled",
    };
    let state = match m {
        Some(m) if m.user_down => "user-down",
        _ if members.checked_up(member) || members.is_out(member) => "up",
        _ => "checking",
    };
    (session, state)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
