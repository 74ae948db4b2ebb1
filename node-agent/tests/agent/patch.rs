//! Patch night on a simulated server through the gRPC service: the
//! updates that apply, an install that records each update, a restart
//! that ends the agent and comes back as a new boot, and the same restart
//! asked again answering `done` instead of restarting twice.
use std::time::Duration;

use farm_agent::agent::{self, Ended};
use farm_proto::v1 as pb;

const SIM: &str = "node: t\nlogs: LOGS\nboot_time: 1s\nsites:\n  - name: shop\n    host: shop.example\n    app_pool: Shop\napp_pools:\n  - name: Shop\n    startup: 10ms\n    warmup: 0ms\nupdates:\n  - kb: KB5031364\n    title: 2026-11 Cumulative Update\n    install_time: 50ms\n  - kb: KB890830\n    classification: Updates\n    reboot: false\n    install_time: 10ms\n  - kb: KB5030000\n    fails: \"0x80240022\"\n    classification: CriticalUpdates\n";

struct Running {
    client: farm_proto::NodeAgentClient<tonic::transport::Channel>,
    task: tokio::task::JoinHandle<Result<Ended, agent::RunError>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(dir: &std::path::Path) -> Running {
    let sim = dir.join("sim.yaml");
    std::fs::write(
        &sim,
        SIM.replace("LOGS", &dir.join("logs").display().to_string()),
    )
    .unwrap();
    let (ready_rx, stop, task) = crate::traffic::start_agent_in(&sim, Some(dir.join("state")));
    let ready = ready_rx.await.unwrap();
    let client = farm_proto::NodeAgentClient::connect(format!("http://{}", ready.agent))
        .await
        .unwrap();
    Running { client, task, stop }
}

/// The KBs the agent says apply (security and critical ones), and where
/// it searched.
async fn applicable(
    c: &mut farm_proto::NodeAgentClient<tonic::transport::Channel>,
) -> (Vec<String>, String) {
    let r = c
        .updates(pb::UpdatesRequest {
            filter: Some(security_only()),
        })
        .await
        .unwrap()
        .into_inner();
    (r.updates.into_iter().map(|u| u.kb).collect(), r.source)
}

fn security_only() -> pb::UpdateFilter {
    pb::UpdateFilter {
        classifications: vec!["SecurityUpdates".into(), "CriticalUpdates".into()],
        ..Default::default()
    }
}

async fn install(
    c: &mut farm_proto::NodeAgentClient<tonic::transport::Channel>,
    id: &str,
) -> pb::OperationResult {
    let mut stream = c
        .install_updates(pb::InstallUpdatesRequest {
            operation_id: id.into(),
            filter: Some(security_only()),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(ev) = stream.message().await.unwrap() {
        if let Some(pb::operation_event::Event::Result(r)) = ev.event {
            return r;
        }
    }
    panic!("no result");
}

async fn reboot(
    c: &mut farm_proto::NodeAgentClient<tonic::transport::Channel>,
    id: &str,
) -> pb::RebootReply {
    c.reboot(pb::RebootRequest {
        operation_id: id.into(),
        comment: "farmctl run r1: patch".into(),
        delay_s: 1,
        for_updates: true,
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_install_and_a_restart_that_is_never_done_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(dir.path()).await;
    let status = a
        .client
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let boot1 = status.boot.clone().unwrap();
    assert!(!boot1.id.is_empty() && boot1.time_unix_ms > 0);
    assert!(!status.reboot_pending.unwrap().pending);
    assert_eq!(status.updates_pending, None, "never searched");
    assert_eq!(status.service_start, "auto");

    let (kbs, source) = applicable(&mut a.client).await;
    assert_eq!(
        kbs,
        ["KB5031364", "KB5030000"],
        "KB890830 is not a security update"
    );
    assert_eq!(source, "sim");
    // A bad classification is refused, named.
    let bad = a
        .client
        .updates(pb::UpdatesRequest {
            filter: Some(pb::UpdateFilter {
                classifications: vec!["Drivers".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert!(
        bad.message()
            .contains("`Drivers` is not an update classification"),
        "{bad:?}"
    );

    // One update fails: the install says which, with its HRESULT; the
    // one that installed needs a restart.
    let r = install(&mut a.client, "r1.t.install").await;
    assert!(!r.success);
    assert!(
        r.error.contains("KB5030000 failed (0x80240022)"),
        "{}",
        r.error
    );
    assert_eq!(r.updates.len(), 2);
    assert!(r.reboot_required);
    // Asked again: the first result, not a second install.
    let again = install(&mut a.client, "r1.t.install").await;
    assert!(again.replayed && again.updates == r.updates);
    let status = a
        .client
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.reboot_pending.unwrap().reasons, ["sim"]);

    // The restart: answered first, then the agent ends with the server.
    let first = reboot(&mut a.client, "r1.t.reboot").await;
    assert_eq!(first.state, "rebooting");
    assert_eq!(first.boot_before.as_ref().unwrap().id, boot1.id);
    // Asked again before it happened: still one restart.
    let repeat = reboot(&mut a.client, "r1.t.reboot").await;
    assert_eq!(repeat.state, "rebooting");
    assert!(repeat.replayed);
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut a.task)
        .await
        .expect("the agent ends with its server")
        .unwrap()
        .unwrap();
    assert_eq!(ended, Ended::Rebooted);
    drop(a.stop);

    // The server back: a new boot, nothing pending, the installed update
    // gone from the list, and the same restart id answers done.
    let mut b = start(dir.path()).await;
    let status = b
        .client
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let boot2 = status.boot.unwrap();
    assert_ne!(boot2.id, boot1.id);
    assert!(boot2.time_unix_ms >= boot1.time_unix_ms);
    assert!(!status.reboot_pending.unwrap().pending);
    let done = reboot(&mut b.client, "r1.t.reboot").await;
    assert_eq!(done.state, "done");
    assert!(done.replayed);
    assert_eq!(done.boot_now.unwrap().id, boot2.id);
    assert_eq!(applicable(&mut b.client).await.0, ["KB5030000"]);
    // The agent alone restarting is the same boot.
    let _ = b.stop.send(());
    assert_eq!(b.task.await.unwrap().unwrap(), Ended::Stopped);
    let mut c = start(dir.path()).await;
    let status = c
        .client
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.boot.unwrap().id, boot2.id);
    let _ = c.stop.send(());
}
