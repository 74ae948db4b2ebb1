//! Safe at every moment: leases between controllers, and the agents'
//! dead-man switch when a controller goes away.

use std::time::Duration;

use crate::common::*;
use farm_proto::domain::OperationKind;
use farmctl::agent::{LeaseClaim, OperationRequest};
use farmctl::sandbox::SandboxSpec;

/// Waits (bounded) until `cond` holds on the status JSON.
async fn until_status(
    farm: &Farm,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    farm_proto::eventually!(
        Duration::from_secs(20),
        async {
            let st = status(farm).await;
            cond(&st).then_some(st)
        },
        "{what}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_controllers_started_together_exactly_one_acts() {
    let farm = farm(SandboxSpec::default()).await;
    let inv = inventory(&farm);
    let args = ["recycle", "-i", &inv, "--yes", "-q"];
    let (a, b) = tokio::join!(farmctl(&args), farmctl(&args));
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(3)],
        "a: {}\nb: {}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    let err = stderr(loser);
    assert!(
        err.contains("leased to") && err.contains("for run") && err.contains("ago"),
        "{err}"
    );
    assert!(err.contains('@'), "the holder is not named: {err}");
    // Every node recycled once: by the winner only.
    for n in ["web01", "web02", "web03", "web04"] {
        let recycles = events(&farm)
            .iter()
            .filter(|e| e.node == n && e.event == "recycle")
            .count();
        assert_eq!(recycles, 1, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_returns_a_healthy_node_and_keeps_an_unhealthy_one_out() {
    let mut spec = SandboxSpec {
        lb_kind: "health-file".into(),
        ..SandboxSpec::default()
    };
    spec.sim_extra
        .insert(1, "faults:\n  never_healthy: true\n".into());
    let farm = farm(spec).await;
    let ttl = Duration::from_millis(800);

    // A controller takes web01 and web02, drains them, recycles web02
    // (which never gets healthy again) and dies.
    let (web01, web02) = (agent(&farm, 0), agent(&farm, 1));
    let claim = LeaseClaim {
        holder: "test@host",
        run_id: "r1",
        reason: "test",
        ttl,
    };
    web01.acquire_lease(&claim).await.unwrap();
    web02.acquire_lease(&claim).await.unwrap();
    web01.drain("r1.web01.drain").await.unwrap();
    web02.drain("r1.web02.drain").await.unwrap();
    let noop = |_: &str, _: &str| {};
    let r = web02
        .operate(
            "r1.web02.recycle",
            &OperationRequest {
                kind: OperationKind::Recycle,
                pools: vec![],
                stop_timeout: Duration::from_secs(60),
            },
            Duration::from_secs(30),
            &noop,
        )
        .await
        .unwrap();
    assert!(r.success);

    // While the lease lives, another run cannot act on the node.
    let e = web01.undrain("r9.web01.undrain").await.unwrap_err();
    assert!(
        e.to_string().contains("leased to test@host for run r1"),
        "{e}"
    );

    let st = until_status(&farm, "the agents to act on the expired leases", |st| {
        st["nodes"][0]["drained"] == false
            && st["nodes"][1]["notice"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
    })
    .await;
    assert!(
        st["nodes"][0]["notice"]
            .as_str()
            .unwrap()
            .contains("returned to rotation"),
        "{st:#}"
    );
    assert_eq!(st["nodes"][1]["drained"], true);
    assert!(
        st["nodes"][1]["notice"]
            .as_str()
            .unwrap()
            .contains("left drained"),
        "{st:#}"
    );
    // A node that was not drained by the run is left as it is.
    assert_eq!(st["nodes"][2]["drained"], false);
}
