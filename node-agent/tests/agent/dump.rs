//! The Dump call through the gRPC service of a simulated server: refused
//! without a `dump:` config and to another run than the lease's; a dump
//! of the pool's worker by the configured tool; the same id answered
//! again without a second dump; the day's budget spent.
use farm_proto::v1 as pb;

async fn start(
    dir: &std::path::Path,
    dump: Option<&str>,
) -> (
    farm_proto::NodeAgentClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let sim = dir.join("sim.yaml");
    std::fs::write(
        &sim,
        format!(
            "node: t\nlogs: {}\nsites:\n  - name: shop\n    host: shop.example\n    app_pool: Shop\napp_pools:\n  - name: Shop\n    startup: 10ms\n    warmup: 0ms\n",
            dir.join("logs").display()
        ),
    )
    .unwrap();
    let config = dump.map(|d| {
        let path = dir.join("agent.yaml");
        std::fs::write(&path, d).unwrap();
        path
    });
    let (ready, stop, _task) = crate::traffic::start_agent_with(farm_agent::agent::Flags {
        config,
        ..crate::traffic::sim_flags(&sim)
    });
    let ready = ready.await.unwrap();
    let client = farm_proto::NodeAgentClient::connect(format!("http://{}", ready.agent))
        .await
        .unwrap();
    (client, stop)
}

fn ask(id: &str) -> pb::DumpRequest {
    pb::DumpRequest {
        operation_id: id.into(),
        pool: "Shop".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_dump_tool_refuses_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _stop) = start(dir.path(), None).await;
    let e = c.dump(ask("r1.t.dump")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("no `dump:`"), "{e:?}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_is_taken_by_the_tool_once_per_id_within_the_lease_and_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    let config = format!(
        "dump:\n  command: [python3, -c, 'import sys; open(sys.argv[2], \"w\").write(\"MDMP \" + sys.argv[1])', '{{pid}}', '{{file}}']\n  dir: '{}'\n  per_day: 1\n  min_free_mb: 0\n  max_size_mb: 1\n",
        dumps.display()
    );
    let (mut c, _stop) = start(dir.path(), Some(&config)).await;
    let pid = c
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools[0]
        .workers[0]
        .pid;
    c.acquire_lease(pb::AcquireLeaseRequest {
        holder: "test".into(),
        run_id: "r1".into(),
        reason: "recycle".into(),
        ttl_ms: 60_000,
    })
    .await
    .unwrap();
    // Another run than the lease's: refused, nothing dumped.
    let e = c.dump(ask("r2.t.dump")).await.unwrap_err();
    assert!(e.message().contains("not part of that run"), "{e:?}");
    assert!(!dumps.exists() || std::fs::read_dir(&dumps).unwrap().count() == 0);
    // The run's own: the pool's worker, by the tool.
    let r = c.dump(ask("r1.t.dump")).await.unwrap().into_inner();
    assert_eq!(r.dumps.len(), 1, "{r:?}");
    assert_eq!(r.dumps[0].pid, pid);
    assert_eq!(
        std::fs::read_to_string(&r.dumps[0].file).unwrap(),
        format!("MDMP {pid}")
    );
    assert_eq!((r.left_today, r.replayed), (0, false));
    // The same id: the first answer again.
    let again = c.dump(ask("r1.t.dump")).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.dumps, r.dumps);
    // A retry of the run: the day's one dump is spent.
    let retry = c.dump(ask("r1_retry2.t.dump")).await.unwrap().into_inner();
    assert!(retry.dumps.is_empty());
    assert!(retry.refused[0].contains("budget is spent"), "{retry:?}");
}
