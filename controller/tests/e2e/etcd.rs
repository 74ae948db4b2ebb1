//! Run state on a real 3-member etcd cluster (TLS, client certificates),
//! one scenario after another on one cluster and one sandbox farm: etcd
//! out of reach at the start, the leader killed mid-run, every member
//! stopped mid-run and the run resumed from a second host, a controller
//! SIGKILLed and two hosts racing to resume it, the team's history.

use std::time::Duration;

use crate::common::etcd::{etcd_binary, EtcdCluster};
use crate::common::*;
use crate::guard::{is, make_sick, GuardProcess};
use farmctl::sandbox::SandboxSpec;

/// `farmctl` as a user on a host of its own, with the store.
struct Host {
    user: &'static str,
    state_dir: String,
    env: Vec<(&'static str, String)>,
}

impl Host {
    fn new(farm: &Farm, cluster: &EtcdCluster, name: &'static str) -> Host {
        let mut env = cluster.env();
        env.push(("USER", name.to_string()));
        env.push(("HOSTNAME", format!("{name}-host")));
        // The store comes from the environment, as a pipeline sets it.
        // A short lock lease keeps the lapses below short; long enough to
        // outlive a leader election on a loaded 2-core machine (seen: 7 s).
        env.push(("FARMCTL_STATE_STORE", cluster.url("?lock_ttl=10s")));
        Host {
            user: name,
            state_dir: farm
                .sandbox
                .dir
                .join(format!("state-{name}"))
                .display()
                .to_string(),
            env,
        }
    }

    async fn farmctl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--state-dir", &self.state_dir];
        all.extend_from_slice(args);
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        farmctl_env(&all, &env).await
    }

    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"));
        c.args(["--state-dir", &self.state_dir]).args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// `farmctl guard ARGS` on this host.
    fn guard(&self, args: &[&str]) -> GuardProcess {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"));
        c.args(["--state-dir", &self.state_dir, "guard"]).args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        GuardProcess::spawn(c)
    }
}

async fn wait_for_recycle(farm: &Farm, node: usize) {
    let log = farm.sandbox.nodes[node].event_log.clone();
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("\"recycle\"")
        },
        "the node to be recycled"
    );
}

fn recycles(farm: &Farm) -> Vec<usize> {
    farm.sandbox
        .nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(&n.event_log)
                .unwrap_or_default()
                .matches("\"recycle\"")
                .count()
        })
        .collect()
}

async fn all_in_rotation(farm: &Farm) {
    let st = status(farm).await;
    for i in 0..farm.sandbox.nodes.len() {
        assert_eq!(st["nodes"][i]["drained"], false, "{st}");
        assert_eq!(st["nodes"][i]["healthy"], true, "{st}");
    }
}

async fn run_ids(host: &Host) -> Vec<(String, String, String)> {
    let out = host
        .farmctl(&["runs", "--farm", "demo", "--output", "json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json(&out)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["run_id"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["holder"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_state_on_a_three_member_etcd_cluster() {
    if etcd_binary().is_none() {
        eprintln!("SKIPPED: no etcd (apt-get install -y etcd-server; .ci/run does)");
        return;
    }
    let farm = farm(SandboxSpec {
        releases: false,
        pool_yaml: "    startup: 1500ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        guard_yaml: "guard:\n  window: 10s\n  interval: 1s\n  confirm: 2\n  max_sick: 1\n  cooldown: 10m\n  relapse: 30m\n  quarantine_after: 5\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let mut cluster = EtcdCluster::start(&farm.sandbox.dir.join("etcd"), 3).await;
    let alice = Host::new(&farm, &cluster, "alice");
    let bob = Host::new(&farm, &cluster, "bob");

    // 1. etcd out of reach at the start: refused, nothing touched.
    let dead = "etcd://127.0.0.1:9";
    let out = farmctl_env(
        &["--state-store", dead, "recycle", "-i", &inv, "--yes"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("etcd at http://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
    assert!(events(&farm).is_empty());

    // 2. The leader killed mid-run: the cluster elects another, the run
    // goes on, no record is lost.
    let run = alice.spawn(&["recycle", "-i", &inv, "--yes", "--output", "json"]);
    wait_for_recycle(&farm, 1).await;
    let leader = cluster.leader().await;
    cluster.kill(leader).await;
    let out = run.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run_id = json(&out)["run_id"].as_str().unwrap().to_string();
    cluster.restart(leader).await;
    cluster.wait_healthy(Duration::from_secs(60)).await;
    let shown = bob
        .farmctl(&["runs", "--farm", "demo", "show", &run_id])
        .await;
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let text = String::from_utf8_lossy(&shown.stdout).to_string();
    for n in ["web01", "web02", "web03", "web04"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains(" done "), "{line}");
    }
    assert_eq!(text.matches("    returning").count(), 4, "{text}");
    assert_eq!(recycles(&farm), [1, 1, 1, 1]);

    // 3. Every member stopped mid-run: the node at work is finished and
    // returned, no other node starts, exit 1 saying why...
    let run = alice.spawn(&["recycle", "-i", &inv, "--yes", "--output", "json"]);
    wait_for_recycle_count(&farm, 1, 2).await;
    cluster.kill_all().await;
    let out = run.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let halted = report["halted"].as_str().unwrap_or_default().to_string();
    assert!(
        halted.contains("journal") || halted.contains("etcd"),
        "{halted}"
    );
    let run_id = report["run_id"].as_str().unwrap().to_string();
    assert_eq!(recycles(&farm), [2, 2, 1, 1]);
    all_in_rotation(&farm).await;
    // ...and, with etcd back, another host resumes it.
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.wait_healthy(Duration::from_secs(60)).await;
    // (the stopped run could not give its lock back: it lapses)
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async { cluster.keys("/farmctl/farms/demo/lock").await.is_empty() },
        "the stopped run's farm lock to lapse"
    );
    let out = bob
        .farmctl(&["resume", &run_id, "-i", &inv, "--output", "json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(recycles(&farm), [2, 2, 2, 2], "web02 not recycled twice");
    all_in_rotation(&farm).await;

    // 4. The controller SIGKILLed: another host is refused while the farm
    // lock lives, then of two hosts racing, exactly one resumes.
    let mut run = alice.spawn(&["recycle", "-i", &inv, "--yes"]);
    wait_for_recycle_count(&farm, 1, 3).await;
    run.start_kill().unwrap();
    let _ = run.wait().await;
    let refused = bob.farmctl(&["resume", "-i", &inv]).await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--force-takeover"),
        "{}",
        stderr(&refused)
    );
    farm_proto::assert_eventually!(
        Duration::from_secs(30),
        async { cluster.keys("/farmctl/farms/demo/lock").await.is_empty() },
        "the dead controller's farm lock to expire"
    );
    let carol = Host::new(&farm, &cluster, "carol");
    let args = ["resume", "-i", inv.as_str(), "--output", "json"];
    let (a, b) = tokio::join!(bob.farmctl(&args), carol.farmctl(&args));
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(3)],
        "{}\n---\n{}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    assert!(stderr(loser).contains("being run by"), "{}", stderr(loser));
    assert_eq!(recycles(&farm), [3, 3, 3, 3], "a node recycled twice");
    all_in_rotation(&farm).await;

    // 5. The team's history, from any host.
    let runs = run_ids(&carol).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.iter().all(|(_, outcome, _)| outcome == "succeeded"),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .all(|(_, _, holder)| holder.starts_with(alice.user)),
        "{runs:?}"
    );
    // The local journal directory was never used.
    assert!(!std::path::Path::new(&alice.state_dir).join("runs").exists());

    // 6. Two guards on two hosts: one acts, the other stands by; the one
    // that acted is SIGKILLed, the other takes the seat within the lease
    // and does not act again on what the first did (its cool-down holds).
    let mut load = farm.sandbox.traffic_spec();
    load.workers = 2;
    load.pace = Duration::from_millis(20);
    load.slow_every = 0;
    let traffic = farmctl::traffic::Traffic::start(load);
    let first = alice.guard(&["-i", &inv]);
    first
        .wait_said(Duration::from_secs(30), "guarding farm demo")
        .await;
    let second = bob.guard(&["-i", &inv]);
    second
        .wait_said(Duration::from_secs(30), "standing by to take over")
        .await;
    make_sick(&farm, "web02", "      error_rate: 0.3\n");
    let acted = first
        .wait_for(Duration::from_secs(120), "acted on web02", |d| {
            is(d, "acted", "web02")
        })
        .await;
    assert_eq!(first.decisions()[acted]["outcome"], "done");
    assert_eq!(recycles(&farm)[1], 4);
    assert!(second.decisions().is_empty(), "the second guard decided");
    first.kill().await;
    let at = std::time::Instant::now();
    second
        .wait_said(Duration::from_secs(40), "guarding farm demo")
        .await;
    // Within the lease (10 s) and a poll, on a loaded machine.
    assert!(at.elapsed() < Duration::from_secs(25), "{:?}", at.elapsed());
    second
        .wait_for(
            Duration::from_secs(90),
            "web02 held by its cool-down",
            |d| is(d, "held", "web02") && d["reason"] == "cool-down",
        )
        .await;
    traffic.stop().await;
    assert_eq!(
        recycles(&farm)[1],
        4,
        "web02 recycled again by the second guard"
    );
    assert!(
        !second.decisions().iter().any(|d| d["decision"] == "acted"),
        "the second guard acted"
    );
}

/// Waits until `node` has been recycled `n` times in all.
async fn wait_for_recycle_count(farm: &Farm, node: usize, n: usize) {
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async { recycles(farm)[node] >= n },
        "the node to be recycled again"
    );
}
