//! The agent served for real on 127.0.0.1:0 with the IIS simulator, driven
//! through its gRPC API, its sites probed over real HTTP.
use std::sync::Arc;
use std::time::Duration;

use farm_agent::ops::OpsConfig;
use farm_agent::sim::{config, Simulator};
use farm_proto::v1::{self as pb, operation_event::Event};
use farm_proto::NodeAgentClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

struct Agent {
    client: NodeAgentClient<Channel>,
    port: u16,
    sim: Simulator,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.sim.shutdown();
    }
}

/// The longest a test waits for a condition.
const WAIT: Duration = Duration::from_secs(10);

const POOL: &str = "    startup: 100ms\n    warmup: 50ms\n    shutdown_time_limit: 5s\n";

async fn agent(pool_extra: &str, extra: &str) -> Agent {
    let text = format!(
        "node: t1\ntimings:\n  iis_stop: 100ms\n  iis_start: 150ms\nsites:\n  - name: shop\n    app_pool: Shop\napp_pools:\n  - name: Shop\n{POOL}{pool_extra}  - name: Idle\n    start_mode: on_demand\n{extra}"
    );
    let sim = Simulator::start(config::parse(&text).expect("sim file"))
        .await
        .expect("sim");
    let port = sim.sites()[0].port;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = OpsConfig {
        verify_timeout: Duration::from_secs(10),
        start_retry_delay: Duration::from_millis(50),
        poll_interval: Duration::from_millis(20),
        ..OpsConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let iis = Arc::new(sim.clone());
    tokio::spawn(farm_agent::server::run(
        listener,
        "t1".into(),
        iis,
        cfg,
        // The IIS behaviour is what is tested here; tests/security.rs
        // covers mTLS, roles and the audit log.
        farm_agent::server::Security::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = NodeAgentClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Agent {
        client,
        port,
        sim,
        stop: Some(stop),
    }
}

/// A plain HTTP/1.1 GET; Err on a refused or cut connection.
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let code = buf
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {buf:?}"))?;
    Ok((code, buf))
}

fn pid_of(body: &str) -> u32 {
    body.rsplit("pid=")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_in_flight(a: &Agent, n: u64) {
    farm_proto::assert_eventually!(
        WAIT,
        async { status(a).await.in_flight == Some(n) },
        "{n} request(s) in flight"
    );
}

/// The agent's Status.
async fn status(a: &Agent) -> pb::NodeStatus {
    a.client
        .clone()
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn pids(a: &mut Agent, pool: &str) -> Vec<u32> {
    let st = status(a).await;
    st.pools
        .iter()
        .find(|p| p.name == pool)
        .unwrap()
        .workers
        .iter()
        .map(|w| w.pid)
        .collect()
}

/// Runs a streamed operation to its end: (progress steps, result).
async fn finish(
    stream: Result<tonic::Response<tonic::Streaming<pb::OperationEvent>>, tonic::Status>,
) -> (Vec<String>, pb::OperationResult) {
    let mut s = stream.expect("call accepted").into_inner();
    let mut steps = Vec::new();
    while let Some(ev) = s.next().await {
        match ev.expect("stream item").event {
            Some(Event::Progress(p)) => steps.push(format!("{}: {}", p.step, p.message)),
            Some(Event::Result(r)) => return (steps, r),
            None => {}
        }
    }
    panic!("no result; progress was {steps:?}");
}

fn recycle(id: &str, pools: &[&str]) -> pb::RecycleRequest {
    pb::RecycleRequest {
        operation_id: id.into(),
        pools: pools.iter().map(|p| p.to_string()).collect(),
        start_stopped: false,
    }
}

fn reset(id: &str, stop_timeout_s: u32) -> pb::ResetRequest {
    pb::ResetRequest {
        operation_id: id.into(),
        stop_timeout_s,
    }
}

#[tokio::test]
async fn recycle_replaces_workers_and_a_repeated_id_acts_once() {
    let mut a = agent("", "").await;
    let before = pids(&mut a, "Shop").await;
    let (_, r) = finish(a.client.recycle(recycle("op-1", &["Shop"])).await).await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.pools[0].pids_before, before);
    assert!(r.pools[0].pids_after.iter().all(|p| !before.contains(p)));
    let after = pids(&mut a, "Shop").await;
    assert_eq!(after, r.pools[0].pids_after);

    let (_, again) = finish(a.client.recycle(recycle("op-1", &["Shop"])).await).await;
    assert!(again.replayed);
    assert_eq!(again.pools, r.pools);
    assert_eq!(
        pids(&mut a, "Shop").await,
        after,
        "a repeated id recycled again"
    );

    // The same id for another kind of call is refused.
    let e = a
        .client
        .reset(reset("op-1", 1))
        .await
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_pool_without_worker_is_reported_not_failed() {
    let mut a = agent("", "").await;
    let (_, r) = finish(a.client.recycle(recycle("op-idle", &["Idle"])).await).await;
    assert!(r.success, "{r:?}");
    assert!(r.pools[0].had_no_worker);
}

#[tokio::test]
async fn hostile_names_are_rejected_and_nothing_runs() {
    let mut a = agent("", "").await;
    let before = pids(&mut a, "Shop").await;
    let long = "x".repeat(10_000);
    for bad in ["a\"b", "a&b", "a|b", "a\nb", "..\\..\\x", long.as_str(), ""] {
        let e = a
            .client
            .recycle(recycle(&format!("op-{}", bad.len()), &[bad]))
            .await
            .map(|_| ())
            .expect_err("a hostile name was accepted");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
    for bad_id in ["", "a b", "id;rm", long.as_str()] {
        let e = a
            .client
            .recycle(recycle(bad_id, &["Shop"]))
            .await
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = a
            .client
            .drain(pb::DrainRequest {
                operation_id: bad_id.into(),
            })
            .await
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    // An unknown (but well-formed) pool fails before acting.
    let (_, r) = finish(a.client.recycle(recycle("op-unknown", &["NoSuch"])).await).await;
    assert!(!r.success);
    assert_eq!(r.failed_step, "resolve");
    assert_eq!(pids(&mut a, "Shop").await, before, "something was recycled");
}

#[tokio::test]
async fn overlapped_recycle_lets_the_old_worker_finish_its_requests() {
    let a = agent("", "").await;
    let old = pid_of(&get(a.port, "/").await.unwrap().1);
    let port = a.port;
    let slow = tokio::spawn(async move { get(port, "/slow?ms=1500").await });
    wait_in_flight(&a, 1).await;
    let mut c = a.client.clone();
    let op =
        tokio::spawn(async move { finish(c.recycle(recycle("op-ov", &["Shop"])).await).await });
    // New requests reach the new worker while the old one is still busy.
    farm_proto::assert_eventually!(
        WAIT,
        async { matches!(get(port, "/").await, Ok((200, b)) if pid_of(&b) != old) },
        "a new worker answers"
    );
    let (code, body) = slow.await.unwrap().expect("the slow request was not cut");
    assert_eq!(code, 200);
    assert_eq!(pid_of(&body), old);
    let (_, r) = op.await.unwrap();
    assert!(r.success, "{r:?}");
}

#[tokio::test]
async fn non_overlapped_rotation_answers_503_while_it_restarts() {
    let mut a = agent("    overlapped: false\n", "").await;
    let (_, r) = finish(a.client.recycle(recycle("op-no", &["Shop"])).await).await;
    assert!(r.success);
    // Verification waited for the new worker; now check 503 on a fresh rotation.
    let mut c = a.client.clone();
    let op =
        tokio::spawn(async move { finish(c.recycle(recycle("op-no2", &["Shop"])).await).await });
    let port = a.port;
    farm_proto::assert_eventually!(
        WAIT,
        async { matches!(get(port, "/").await, Ok((503, _))) },
        "503 during rotation"
    );
    let (_, r) = op.await.unwrap();
    assert!(r.success, "{r:?}");
    assert_eq!(get(a.port, "/").await.unwrap().0, 200);
}

#[tokio::test]
async fn reset_closes_the_listeners_then_everything_comes_back() {
    let mut a = agent("", "").await;
    let before = pids(&mut a, "Shop").await;
    let mut c = a.client.clone();
    let op = tokio::spawn(async move { finish(c.reset(reset("op-r", 5)).await).await });
    let port = a.port;
    farm_proto::assert_eventually!(
        WAIT,
        async { matches!(get(port, "/").await, Err(e) if e.contains("refused")) },
        "connection refused during the reset"
    );
    let (steps, r) = op.await.unwrap();
    assert!(r.success, "{r:?} {steps:?}");
    assert!(
        !steps.iter().any(|s| s.starts_with("force-stop")),
        "{steps:?}"
    );
    assert!(r
        .services
        .iter()
        .all(|s| s.state == pb::ServiceState::Running as i32));
    let (code, body) = get(a.port, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(!before.contains(&pid_of(&body)));
}

#[tokio::test]
async fn reset_forces_the_stop_when_it_hangs() {
    let mut a = agent("", "faults:\n  stop_hangs: true\n").await;
    let (steps, r) = finish(a.client.reset(reset("op-hang", 1)).await).await;
    assert!(r.success, "{r:?}");
    let forced = steps
        .iter()
        .position(|s| s.starts_with("force-stop"))
        .expect("force path");
    let started = steps
        .iter()
        .position(|s| s.starts_with("start"))
        .expect("start");
    assert!(forced < started, "{steps:?}");
}

#[tokio::test]
async fn reset_retries_a_failing_start() {
    let mut a = agent("", "faults:\n  start_fails: 2\n").await;
    let (steps, r) = finish(a.client.reset(reset("op-sf", 5)).await).await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.contains("iisreset /start (attempt"))
            .count(),
        3
    );
}

#[tokio::test]
async fn a_start_that_never_succeeds_is_reported_with_iis_stopped() {
    let mut a = agent("", "faults:\n  start_fails: 10\n").await;
    let (_, r) = finish(a.client.reset(reset("op-dead", 5)).await).await;
    assert!(!r.success);
    assert_eq!(r.failed_step, "start");
    assert!(r.error.contains("STOPPED"), "{}", r.error);
    assert!(r
        .services
        .iter()
        .all(|s| s.state == pb::ServiceState::Stopped as i32));
}

#[tokio::test]
async fn a_pool_that_crashes_after_recycle_ends_up_stopped() {
    let mut a = agent("", "faults:\n  crash_after_recycle: true\n").await;
    let (_, r) = finish(a.client.recycle(recycle("op-crash", &["Shop"])).await).await;
    assert!(r.success, "the recycle itself worked: {r:?}");
    let port = a.port;
    farm_proto::assert_eventually!(
        WAIT,
        async { matches!(get(port, "/").await, Ok((503, _))) },
        "503 from the stopped pool"
    );
    let st = status(&a).await;
    assert_eq!(st.pools[0].state, pb::PoolState::Stopped as i32);
    // Named as WAS's doing, as IIS's event log says it.
    assert!(
        st.pools[0]
            .stopped_by
            .starts_with("rapid-fail protection (WAS event 5002"),
        "{:?}",
        st.pools[0]
    );
    // Its diagnostics carry the events (newest first) and the state.
    let d = a
        .client
        .diagnose(pb::DiagnoseRequest {
            pool: "Shop".into(),
            min_elapsed_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u32> = d.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [5002, 5009], "{d:?}");
    assert_eq!(d.state, "Disabled");
}

#[tokio::test]
async fn drain_renames_the_health_file_and_watch_load_ends_when_idle() {
    let mut a = agent("", "").await;
    assert_eq!(get(a.port, "/health.htm").await.unwrap().0, 200);
    let r = a
        .client
        .drain(pb::DrainRequest {
            operation_id: "d1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.drained && !r.unchanged);
    assert_eq!(get(a.port, "/health.htm").await.unwrap().0, 404);
    assert!(status(&a).await.drained);

    let port = a.port;
    let slow = tokio::spawn(async move { get(port, "/slow?ms=300").await });
    wait_in_flight(&a, 1).await;
    let mut s = a
        .client
        .watch_load(pb::WatchLoadRequest { timeout_ms: 10_000 })
        .await
        .unwrap()
        .into_inner();
    let mut samples = Vec::new();
    while let Some(x) = s.next().await {
        samples.push(x.unwrap());
    }
    assert_eq!(samples.first().unwrap().in_flight, Some(1));
    assert!(samples.last().unwrap().idle, "{samples:?}");
    slow.await.unwrap().unwrap();

    a.client
        .undrain(pb::DrainRequest {
            operation_id: "u1".into(),
        })
        .await
        .unwrap();
    assert_eq!(get(a.port, "/health.htm").await.unwrap().0, 200);
}
