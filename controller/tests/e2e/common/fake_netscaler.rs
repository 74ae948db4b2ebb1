//! A NetScaler NITRO fake, written only from the documented contract (the
//! README's `netscaler` section and the NITRO API reference it cites): login with a
//! `NITRO_AUTH_TOKEN` cookie (sessions expire) or `X-NITRO-USER`/`-PASS`
//! headers, graceful disable/enable of services, `stat/service` with its
//! counters as JSON strings, `TROFS` while connections run down then `OFS`,
//! the errorcode 258 body of a missing resource, transient 503s on request.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::https::{serve, Https, Req, Resp};
use super::members::Members;

pub const USER: &str = "nsroot-farmctl";
pub const PASSWORD: &str = "ns-s3cret-pass";

pub struct FakeNetscaler {
    pub https: Https,
    pub members: Arc<Members>,
    pub state: Arc<NsState>,
}

pub struct NsState {
    sessions: Mutex<HashMap<String, Instant>>,
    pub session_ttl: Mutex<Duration>,
    pub logins: AtomicU64,
    requests: AtomicU64,
    pub fail_every: AtomicU64,
    pub transient_served: AtomicU64,
    /// Disable/enable bodies seen.
    pub actions: Mutex<Vec<(String, serde_json::Value)>>,
}

impl FakeNetscaler {
    pub async fn start(dir: &Path, services: &[String]) -> FakeNetscaler {
        let members = Arc::new(Members::new(
            services,
            Duration::from_millis(400),
            Duration::from_millis(300),
        ));
        let state = Arc::new(NsState {
            sessions: Mutex::default(),
            session_ttl: Mutex::new(Duration::from_secs(900)),
            logins: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            fail_every: AtomicU64::new(0),
            transient_served: AtomicU64::new(0),
            actions: Mutex::default(),
        });
        let (m, s) = (members.clone(), state.clone());
        let https = serve(dir, "adc", Arc::new(move |req| handle(&m, &s, req))).await;
        FakeNetscaler {
            https,
            members,
            state,
        }
    }

    pub fn inventory(&self, password_env: &str, method: &str) -> String {
        format!(
            "load_balancer:\n  kind: netscaler\n  url: {}\n  member: service\n  delay: 30s\n  auth: {{username: {USER}, password_env: {password_env}, method: {method}}}\n  tls: {{fingerprint: \"{}\"}}\n  timeout: 5s\n",
            self.https.url, self.https.fingerprint
        )
    }
}

fn nitro(status: u16, code: i64, message: &str) -> Resp {
    Resp::json(
        status,
        json!({"errorcode": code, "message": message, "severity": if code == 0 { "NONE" } else { "ERROR" }}),
    )
}

fn handle(members: &Members, st: &NsState, req: Req) -> Resp {
    let n = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let every = st.fail_every.load(Ordering::SeqCst);
    if every > 0 && n.is_multiple_of(every) {
        st.transient_served.fetch_add(1, Ordering::SeqCst);
        return Resp::html(503, "<html><body>Service Unavailable</body></html>");
    }
    if req.method == "POST" && req.path == "/nitro/v1/config/login" {
        let b = req.json();
        if b["login"]["username"] == USER && b["login"]["password"] == PASSWORD {
            let k = st.logins.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("##SESSION{k:08}");
            let ttl = *st.session_ttl.lock().unwrap();
            st.sessions
                .lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + ttl);
            let mut r = Resp::json(
                201,
                json!({"errorcode": 0, "message": "Done", "severity": "NONE", "sessionid": token}),
            );
            r.headers.push((
                "set-cookie".into(),
                format!("NITRO_AUTH_TOKEN={token}; path=/nitro/v1"),
            ));
            return r;
        }
        return nitro(401, 354, "Invalid username or password");
    }
    let cookie = req.header("cookie").and_then(|c| {
        c.split(';').find_map(|kv| {
            kv.trim()
                .strip_prefix("NITRO_AUTH_TOKEN=")
                .map(str::to_string)
        })
    });
    let headers_ok =
        req.header("x-nitro-user") == Some(USER) && req.header("x-nitro-pass") == Some(PASSWORD);
    match (&cookie, headers_ok) {
        (_, true) => {}
        (Some(t), false) => match st.sessions.lock().unwrap().get(t).copied() {
            Some(exp) if Instant::now() < exp => {}
            Some(_) => return nitro(401, 444, "Session expired or killed. Please login again"),
            None => return nitro(401, 354, "Invalid username or password"),
        },
        (None, false) => return nitro(401, 354, "Not logged in"),
    }
    let path = req.path.clone();
    if let Some(query) = path.strip_prefix("/nitro/v1/config/service?action=") {
        let body = req.json();
        let name = body["service"]["name"].as_str().unwrap_or("").to_string();
        st.actions
            .lock()
            .unwrap()
            .push((query.to_string(), body.clone()));
        if !members.exists(&name) {
            return nitro(404, 258, &format!("No such resource [name, {name}]"));
        }
        match query {
            "disable" => members.set_out(&name, true),
            "enable" => members.set_out(&name, false),
            other => return nitro(400, 1092, &format!("Invalid action [{other}]")),
        }
        return nitro(200, 0, "Done");
    }
    if let Some(name) = path.strip_prefix("/nitro/v1/stat/service/") {
        if req.method != "GET" {
            return nitro(405, 1, "Method not allowed");
        }
        if !members.exists(name) {
            return nitro(404, 258, &format!("No such resource [name, {name}]"));
        }
        let conns = members.report_connections(name);
        let state = if members.is_out(name) {
            if conns > 0 {
                "TROFS"
            } else {
                "OFS"
            }
        } else if members.checked_up(name) {
            "UP"
        } else {
            "DOWN"
        };
        return Resp::json(
            200,
            json!({"errorcode": 0, "message": "Done", "severity": "NONE",
                   "service": [{"name": name, "state": state,
                                "curclntconnections": conns.to_string(),
                                "cursrvrconnections": conns.to_string(),
                                "totalrequests": members.requests(name).to_string(),
                                "servicetype": "HTTP"}]}),
        );
    }
    nitro(404, 258, &format!("No such resource [{path}]"))
}
