//! mTLS, roles, the audit log and hostile input, against a real agent
//! served over TLS on 127.0.0.1:0. IIS is the command backend over a runner
//! that plays IIS, so "no command ran" is read off the runner's log.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use farm_agent::audit::Audit;
use farm_agent::iiscmd::config::{Timeouts, Tools};
use farm_agent::iiscmd::fake::{FakeFaults, FakeIis};
use farm_agent::iiscmd::CommandBackend;
use farm_agent::ops::OpsConfig;
use farm_agent::security::{server_config, Authorization, TlsFiles};
use farm_agent::server::Security;
use farm_proto::pki::{self, Pair, Role, Validity};
use farm_proto::v1 as pb;
use farm_proto::NodeAgentClient;
use tokio::io::AsyncWriteExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

struct Farm {
    dir: tempfile::TempDir,
    files: TlsFiles,
    ca: Pair,
    addr: String,
    fake: Arc<FakeIis>,
    audit: PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn farm(authz: Authorization) -> Farm {
    farm_with(authz, false, 0).await
}

/// A farm whose agent may have a revocation list (revoking nothing yet)
/// and a connection cap.
async fn farm_with(authz: Authorization, crl: bool, max_connections: usize) -> Farm {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::new_ca("t", Validity::CA).unwrap();
    let agent = pki::issue_agent(&ca, "web01", &["127.0.0.1".into()], Validity::LEAF).unwrap();
    let files = TlsFiles {
        cert: write(dir.path(), "agent.pem", &agent.cert_pem),
        key: write(dir.path(), "agent-key.pem", &agent.key_pem),
        client_ca: write(dir.path(), "ca.pem", &ca.cert_pem),
        crl: crl.then(|| {
            let empty = pki::revocation_list(&ca, &[], 1, Duration::from_secs(3600)).unwrap();
            write(dir.path(), "crl.pem", &empty)
        }),
    };
    let audit = dir.path().join("audit.jsonl");
    let fake = Arc::new(FakeIis::new(&["Shop"], FakeFaults::default()));
    let tools = Tools::on_path();
    let health = write(dir.path(), "health.htm", "OK");
    let iis = Arc::new(CommandBackend::new(
        fake.clone(),
        tools,
        Timeouts::default(),
        vec![health],
    ));
    let security = Security {
        tls: Some(server_config(&files).unwrap()),
        reload: Some(files.clone()),
        max_connections,
        idle_timeout: None,
        authz,
        audit: Some(Arc::new(Audit::open(&audit).unwrap())),
        metrics: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = OpsConfig {
        verify_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(1),
        start_retry_delay: Duration::from_millis(1),
        ..OpsConfig::default()
    };
    tokio::spawn(farm_agent::server::run(
        listener,
        "web01".into(),
        iis,
        cfg,
        security,
        async {
            let _ = stopped.await;
        },
    ));
    Farm {
        dir,
        files,
        ca,
        addr,
        fake,
        audit,
        _stop: stop,
    }
}

impl Farm {
    /// A client presenting `cert` (none: no client certificate), checking
    /// the agent's certificate for `server_name`.
    async fn client(
        &self,
        cert: Option<&Pair>,
        server_name: &str,
    ) -> Result<NodeAgentClient<Channel>, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.cert_pem))
            .domain_name(server_name);
        if let Some(c) = cert {
            tls = tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem));
        }
        let channel = Endpoint::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(NodeAgentClient::new(channel))
    }

    fn controller(&self, name: &str, role: Role) -> Pair {
        pki::issue_controller(&self.ca, name, role, Validity::LEAF).unwrap()
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Whether a Status call with this client gets through.
async fn status(client: Result<NodeAgentClient<Channel>, String>) -> Result<(), String> {
    let mut c = client?;
    c.status(pb::StatusRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

fn recycle(id: &str, pools: &[&str]) -> pb::RecycleRequest {
    pb::RecycleRequest {
        operation_id: id.into(),
        pools: pools.iter().map(|p| p.to_string()).collect(),
        start_stopped: false,
    }
}

async fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn clients_without_a_good_certificate_are_rejected_and_audited() {
    let f = farm(Authorization::default()).await;
    let other_ca = pki::new_ca("other", Validity::CA).unwrap();
    let foreign =
        pki::issue_controller(&other_ca, "mallory", Role::Operator, Validity::LEAF).unwrap();
    let expired = pki::issue_controller(
        &f.ca,
        "old",
        Role::Operator,
        Validity {
            from_days: -30,
            to_days: -1,
        },
    )
    .unwrap();

    assert!(
        status(f.client(None, "web01").await).await.is_err(),
        "no certificate got in"
    );
    assert!(
        status(f.client(Some(&foreign), "web01").await)
            .await
            .is_err(),
        "a foreign CA got in"
    );
    assert!(
        status(f.client(Some(&expired), "web01").await)
            .await
            .is_err(),
        "an expired certificate got in"
    );
    assert!(
        f.fake.log().is_empty(),
        "a rejected client ran {:?}",
        f.fake.log()
    );

    let good = f.controller("ops", Role::Operator);
    status(f.client(Some(&good), "web01").await).await.unwrap();

    let rejected: Vec<_> = f
        .audit_lines()
        .into_iter()
        .filter(|l| {
            l["call"] == "tls-handshake" && l["outcome"].as_str().unwrap().starts_with("rejected")
        })
        .collect();
    assert!(rejected.len() >= 3, "{:#?}", f.audit_lines());
    let ok: Vec<_> = f
        .audit_lines()
        .into_iter()
        .filter(|l| l["call"] == "Status")
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["identity"], "ops");
    assert_eq!(ok[0]["role"], "operator");
    assert_eq!(ok[0]["outcome"], "ok");
}

#[tokio::test]
async fn the_controller_checks_the_agents_name() {
    let f = farm(Authorization::default()).await;
    let good = f.controller("ops", Role::Operator);
    // The agent's certificate is for web01, not web02.
    assert!(status(f.client(Some(&good), "web02").await).await.is_err());
    status(f.client(Some(&good), "web01").await).await.unwrap();
}

#[tokio::test]
async fn a_viewer_may_look_but_not_act_and_every_call_is_audited() {
    let f = farm(Authorization::default()).await;
    let viewer = f.controller("dash", Role::Viewer);
    let mut c = f.client(Some(&viewer), "web01").await.unwrap();
    assert_eq!(
        code(c.status(pb::StatusRequest::default()).await).await,
        Code::Ok
    );
    let before = f.fake.log().len();
    assert_eq!(
        code(c.recycle(recycle("v1", &["Shop"])).await).await,
        Code::PermissionDenied
    );
    let reset = pb::ResetRequest {
        operation_id: "v2".into(),
        stop_timeout_s: 1,
    };
    assert_eq!(code(c.reset(reset).await).await, Code::PermissionDenied);
    let drain = pb::DrainRequest {
        operation_id: "v3".into(),
    };
    assert_eq!(code(c.drain(drain).await).await, Code::PermissionDenied);
    let switch = pb::SwitchRequest {
        operation_id: "v4".into(),
        site: "ShopSite".into(),
        version: "2.0.0".into(),
        hooks: vec!["warm".into()],
        back: false,
    };
    assert_eq!(code(c.switch(switch).await).await, Code::PermissionDenied);
    let stage = pb::StageChunk {
        part: Some(pb::stage_chunk::Part::Header(pb::StageHeader {
            operation_id: "v5".into(),
            site: "ShopSite".into(),
            version: "2.0.0".into(),
            sha256: "0".repeat(64),
            size: 1,
        })),
    };
    assert_eq!(
        code(c.stage(tokio_stream::iter(vec![stage])).await).await,
        Code::PermissionDenied
    );
    let prune = pb::PruneRequest {
        operation_id: "v6".into(),
        site: "ShopSite".into(),
    };
    assert_eq!(code(c.prune(prune).await).await, Code::PermissionDenied);
    assert_eq!(f.fake.log().len(), before, "a denied call ran a command");
    let calls: Vec<(String, String)> = f
        .audit_lines()
        .iter()
        .map(|l| {
            (
                l["call"].as_str().unwrap().to_string(),
                l["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(calls[0], ("Status".into(), "ok".into()));
    for (i, call) in ["Recycle", "Reset", "Drain", "Switch", "Stage", "Prune"]
        .iter()
        .enumerate()
    {
        assert_eq!(calls[i + 1].0, *call);
        assert!(calls[i + 1].1.starts_with("denied"), "{calls:?}");
    }
    assert_eq!(f.audit_lines()[1]["identity"], "dash");
    assert_eq!(f.audit_lines()[1]["pools"][0], "Shop");
    assert_eq!(f.audit_lines()[1]["operation_id"], "v1");
}

#[tokio::test]
async fn an_operator_may_do_everything() {
    let f = farm(Authorization::default()).await;
    let op = f.controller("ops", Role::Operator);
    let mut c = f.client(Some(&op), "web01").await.unwrap();
    let id = |s: &str| pb::DrainRequest {
        operation_id: s.into(),
    };
    assert_eq!(code(c.drain(id("o1")).await).await, Code::Ok);
    assert_eq!(code(c.undrain(id("o2")).await).await, Code::Ok);
    let mut s = c
        .recycle(recycle("o3", &["Shop"]))
        .await
        .unwrap()
        .into_inner();
    while let Some(ev) = s.message().await.unwrap() {
        if let Some(pb::operation_event::Event::Result(r)) = ev.event {
            assert!(r.success, "{r:?}");
        }
    }
    assert!(f
        .fake
        .log()
        .iter()
        .any(|c| c == "appcmd recycle apppool /apppool.name:Shop"));
    let outcomes: Vec<String> = f
        .audit_lines()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "ok"]);
    assert!(f.dir.path().join("health.htm").exists());
}

#[tokio::test]
async fn reset_can_be_forbidden_on_a_node() {
    let f = farm(Authorization {
        allow_reset: false,
        ..Authorization::default()
    })
    .await;
    let op = f.controller("ops", Role::Operator);
    let mut c = f.client(Some(&op), "web01").await.unwrap();
    let reset = pb::ResetRequest {
        operation_id: "r1".into(),
        stop_timeout_s: 1,
    };
    let err = c.reset(reset).await.map(|_| ()).unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("allow_reset"), "{}", err.message());
    assert!(!f.fake.log().iter().any(|c| c.starts_with("iisreset")));
}

#[tokio::test]
async fn the_config_can_map_an_identity_to_a_role() {
    let mut authz = Authorization::default();
    authz.roles.insert("dash".into(), "operator".into());
    let f = farm(authz).await;
    // Issued as viewer, promoted by the agent's own config.
    let dash = f.controller("dash", Role::Viewer);
    let mut c = f.client(Some(&dash), "web01").await.unwrap();
    let drain = pb::DrainRequest {
        operation_id: "m1".into(),
    };
    assert_eq!(code(c.drain(drain).await).await, Code::Ok);
}

#[tokio::test]
async fn hostile_names_are_rejected_before_any_command_runs() {
    let f = farm(Authorization::default()).await;
    let op = f.controller("ops", Role::Operator);
    let mut c = f.client(Some(&op), "web01").await.unwrap();
    let long = "x".repeat(10_000);
    let before = f.fake.log().len();
    for (i, bad) in ["a\"b", "a&b", "a|b", "a\nb", "..\\..\\x", long.as_str(), ""]
        .iter()
        .enumerate()
    {
        let r = c.recycle(recycle(&format!("h{i}"), &[bad])).await;
        assert_eq!(code(r).await, Code::InvalidArgument, "{bad:?}");
    }
    for bad_id in ["", "a b", "id;rm -rf", long.as_str()] {
        assert_eq!(
            code(c.recycle(recycle(bad_id, &["Shop"])).await).await,
            Code::InvalidArgument
        );
    }
    // Far more than any real request: refused by size.
    let huge: Vec<String> = (0..2000).map(|i| format!("pool-{i:0>60}")).collect();
    let huge = pb::RecycleRequest {
        operation_id: "big".into(),
        pools: huge,
        start_stopped: false,
    };
    assert_ne!(code(c.recycle(huge).await).await, Code::Ok);
    assert_eq!(
        f.fake.log().len(),
        before,
        "a hostile call ran {:?}",
        &f.fake.log()[before..]
    );
    // ...and the agent still answers.
    assert_eq!(
        code(c.status(pb::StatusRequest::default()).await).await,
        Code::Ok
    );
    let invalid = f
        .audit_lines()
        .iter()
        .filter(|l| l["outcome"].as_str().unwrap().starts_with("invalid"))
        .count();
    assert_eq!(invalid, 11);
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_up_the_others() {
    let f = farm(Authorization::default()).await;
    // Connections that never finish a TLS handshake, or speak garbage.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(tokio::net::TcpStream::connect(&f.addr).await.unwrap());
    }
    let mut garbage = tokio::net::TcpStream::connect(&f.addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let op = f.controller("ops", Role::Operator);
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        status(f.client(Some(&op), "web01").await),
    )
    .await;
    assert!(matches!(ok, Ok(Ok(()))), "{ok:?}");
    drop(stalled);
}

/// Waits (bounded) until `check` holds; the agent looks at its TLS files
/// every couple of seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 20s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `farmctl certs revoke` writes a new list; the running agent picks it
/// up: the revoked certificate is refused at the handshake (and audited),
/// the others still get through, with no restart.
#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_new_list_is_written() {
    let f = farm_with(Authorization::default(), true, 0).await;
    let old = f.controller("old-laptop", Role::Operator);
    let other = f.controller("ops", Role::Operator);
    status(f.client(Some(&old), "web01").await).await.unwrap();
    let serial = pki::serial_of_pem(&old.cert_pem).unwrap();
    let crl = pki::revocation_list(&f.ca, &[serial], 2, Duration::from_secs(3600)).unwrap();
    std::fs::write(f.files.crl.as_ref().unwrap(), crl).unwrap();
    eventually("the revoked certificate to be refused", || async {
        status(f.client(Some(&old), "web01").await).await.is_err()
    })
    .await;
    status(f.client(Some(&other), "web01").await).await.unwrap();
    let refused = f.audit_lines().into_iter().any(|l| {
        l["call"] == "tls-handshake"
            && l["outcome"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("revoked")
    });
    assert!(refused, "{:#?}", f.audit_lines());
}

/// A rotated agent certificate (here with a new name in it) is served to
/// new connections without a restart; a half-written rotation (a
/// certificate without its key) keeps the previous pair serving.
#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let f = farm(Authorization::default()).await;
    let me = f.controller("ops", Role::Operator);
    assert!(status(f.client(Some(&me), "rotated.example").await)
        .await
        .is_err());
    let new = pki::issue_agent(
        &f.ca,
        "web01",
        &["127.0.0.1".into(), "rotated.example".into()],
        Validity::LEAF,
    )
    .unwrap();
    // Half-way: the certificate is new, the key is not: it does not load.
    std::fs::write(&f.files.cert, &new.cert_pem).unwrap();
    tokio::time::sleep(farm_agent::server::RELOAD_CHECK * 2).await;
    status(f.client(Some(&me), "web01").await).await.unwrap();
    std::fs::write(&f.files.key, &new.key_pem).unwrap();
    eventually("the rotated certificate to be served", || async {
        status(f.client(Some(&me), "rotated.example").await)
            .await
            .is_ok()
    })
    .await;
}

/// At the connection cap the connection idle the longest makes room for
/// the new one (audited), so a controller is never locked out by
/// connections that only sit there.
#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let f = farm_with(Authorization::default(), false, 2).await;
    let me = f.controller("ops", Role::Operator);
    let mut a = f.client(Some(&me), "web01").await.unwrap();
    let mut b = f.client(Some(&me), "web01").await.unwrap();
    a.status(pb::StatusRequest::default()).await.unwrap();
    b.status(pb::StatusRequest::default()).await.unwrap();
    status(f.client(Some(&me), "web01").await).await.unwrap();
    let made_room = f.audit_lines().into_iter().any(|l| {
        l["call"] == "connect"
            && l["outcome"]
                .as_str()
                .unwrap_or("")
                .contains("to make room for a new connection")
    });
    assert!(made_room, "{:#?}", f.audit_lines());
}

/// Keeps `n` TCP connections open that never send a byte, reopening each
/// one the agent closes, until `stop` is dropped.
fn silent_flood(addr: String, n: usize) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        for _ in 0..n {
            let addr = addr.clone();
            held.spawn(async move {
                // Bounded: a few hundred reopenings each at most.
                for _ in 0..500 {
                    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let mut buf = [0u8; 64];
                    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                }
            });
        }
        let _ = (&mut stopped).await;
        held.abort_all();
    });
    stop
}

/// A whole recycle through a fresh connection, timed.
async fn timed_recycle(f: &Farm, who: &Pair, id: &str) -> Duration {
    let start = std::time::Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        let mut c = f.client(Some(who), "web01").await.unwrap();
        let mut s = c
            .recycle(recycle(id, &["Shop"]))
            .await
            .unwrap()
            .into_inner();
        while let Some(ev) = s.message().await.unwrap() {
            if let Some(pb::operation_event::Event::Result(r)) = ev.event {
                return r.success;
            }
        }
        false
    })
    .await;
    assert_eq!(done, Ok(true), "recycle {id}");
    start.elapsed()
}

/// Status through a fresh connection, timed.
async fn timed_status(f: &Farm, who: &Pair) -> Duration {
    let start = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        status(f.client(Some(who), "web01").await),
    )
    .await;
    assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    start.elapsed()
}

/// 300 connections that never send a TLS ClientHello (reopened as soon
/// as the agent closes them), then 300 idle authenticated ones: the
/// controller still gets its answers, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_silent_and_idle_connections_do_not_lock_the_controller_out() {
    let f = farm(Authorization::default()).await;
    let me = f.controller("ops", Role::Operator);
    let before = timed_status(&f, &me).await;
    let recycle_before = timed_recycle(&f, &me, "flood-r0").await;

    let stop = silent_flood(f.addr.clone(), 300);
    // The flood is in: the agent has started closing silent ones.
    eventually("silent connections closed and audited", || async {
        f.audit_lines().iter().any(|l| {
            l["call"] == "tls-handshake"
                && l["outcome"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no TLS ClientHello")
        })
    })
    .await;
    let mut under_silent = Vec::new();
    for _ in 0..5 {
        under_silent.push(timed_status(&f, &me).await);
    }
    let recycle_silent = timed_recycle(&f, &me, "flood-r1").await;
    drop(stop);

    // 300 authenticated connections with the controller's own
    // certificate, and 300 of another one, all idle.
    let flood = f.controller("flood", Role::Viewer);
    let mut idle = Vec::new();
    for i in 0..300 {
        let who = if i % 2 == 0 { &me } else { &flood };
        if let Ok(c) = f.client(Some(who), "web01").await {
            idle.push(c);
        }
    }
    let mut under_idle = Vec::new();
    for _ in 0..5 {
        under_idle.push(timed_status(&f, &me).await);
    }
    let recycle_idle = timed_recycle(&f, &me, "flood-r2").await;
    println!(
        "recycle: {recycle_before:?} alone, {recycle_silent:?} under the silent flood, {recycle_idle:?} under the idle one"
    );
    // Normal plus a margin for a loaded machine; locked out was never.
    for r in [recycle_silent, recycle_idle] {
        assert!(
            r < recycle_before + Duration::from_secs(3),
            "{r:?} vs {recycle_before:?}"
        );
    }
    let worst = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!(
        "status: {before:?} alone, worst {:?} under 300 silent connections, worst {:?} under 300 idle authenticated ones",
        worst(&under_silent),
        worst(&under_idle)
    );
    // Normal is milliseconds; a locked-out controller waited 5 s and more.
    assert!(
        worst(&under_silent) < Duration::from_secs(2),
        "{under_silent:?}"
    );
    assert!(
        worst(&under_idle) < Duration::from_secs(2),
        "{under_idle:?}"
    );
    drop(idle);
}
