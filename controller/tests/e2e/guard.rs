//! `farmctl guard` end to end, under load through a real HAProxy: a pool
//! made sick on one node is recycled alone and healed; a pool that goes
//! bad again after each recycle is quarantined and paged; a farm slowed
//! everywhere at once is held, never recycled.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::https::{serve_plain, Resp};
use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use farmctl::traffic::Traffic;
use serde_json::Value;

const GUARD: &str = "guard:\n  window: 15s\n  interval: 2s\n  confirm: 3\n  max_sick: 1\n  max_actions: {per_hour: 20, per_day: 40}\n  cooldown: 20s\n  relapse: 3m\n  quarantine_after: 2\n";

/// Every agent's memory dump tool: a program given as argv (as ProcDump
/// would be) that writes what it was asked to dump; one dump a day.
const DUMPS: &str = r#"dump:
  command:
    - python3
    - -c
    - 'import sys; open(sys.argv[2], "w").write("MDMP pid=%s pool=%s" % (sys.argv[1], sys.argv[3]))'
    - '{pid}'
    - '{file}'
    - '{pool}'
  dir: '{node_dir}/dumps'
  per_day: 1
  min_free_mb: 0
  max_size_mb: 1
  timeout: 30s
"#;

/// A guard process whose stdout lines (decisions) are collected.
pub struct GuardProcess {
    pub child: tokio::process::Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    pub stderr: Arc<Mutex<String>>,
}

impl GuardProcess {
    /// `farmctl guard ARGS` of `farm`, with the farm's own state directory
    /// (its seat and history apart from other tests' guards).
    pub fn start(farm: &Farm, args: &[&str], env: &[(&str, &str)]) -> GuardProcess {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"));
        cmd.env("FARMCTL_STATE_DIR", farm.sandbox.dir.join("guard-state"))
            .envs(env.iter().copied())
            .arg("guard")
            .args(args);
        GuardProcess::spawn(cmd)
    }

    /// `cmd` (`farmctl [global flags] guard ARGS`), its decisions read
    /// as JSON lines.
    pub fn spawn(mut cmd: tokio::process::Command) -> GuardProcess {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = cmd
            .args(["--output", "jsonl"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("could not start farmctl guard");
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let (l, out) = (lines.clone(), child.stdout.take().unwrap());
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(line)) = r.next_line().await {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a guard line is not JSON ({e}): {line}"));
                l.lock().unwrap().push(v);
            }
        });
        let (e, err) = (stderr.clone(), child.stderr.take().unwrap());
        tokio::spawn(async move {
            let mut r = BufReader::new(err).lines();
            while let Ok(Some(line)) = r.next_line().await {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        GuardProcess {
            child,
            lines,
            stderr,
        }
    }

    pub fn decisions(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGKILLs the guard; the decisions it made.
    pub async fn kill(mut self) -> Vec<Value> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.decisions()
    }

    /// Its decisions and what it said, for a failure's message.
    pub fn story(&self) -> String {
        format!(
            "decisions:\n{}\nstderr:\n{}",
            dump(&self.decisions()),
            self.said()
        )
    }

    pub fn said(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until the guard's stderr says `what`.
    pub async fn wait_said(&self, within: Duration, what: &str) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.said().contains(what) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the guard did not say {what:?} within {within:?}:\n{}",
                self.said()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) for a decision matching `f`; its index.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.decisions().iter().position(&f) {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no decision {what} within {within:?}; {}",
                self.story()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The decisions, a line each, for a failure's message.
pub fn dump(all: &[Value]) -> String {
    all.iter()
        .map(|d| {
            format!(
                "{} {} {} {} {}: {}",
                d["time"], d["decision"], d["reason"], d["node"], d["pool"], d["detail"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sets node's pool faults (its agent applies them at once).
pub fn make_sick(farm: &Farm, node: &str, faults: &str) {
    farm.sandbox.set_pool_faults(node, faults).unwrap();
}

/// Requests that failed other than with a sick pool's own injected 500.
fn dropped(load: &farmctl::report::TrafficReport) -> u64 {
    load.failures
        .iter()
        .filter(|(k, _)| k.as_str() != "HTTP 500")
        .map(|(_, n)| n)
        .sum()
}

pub fn is(d: &Value, decision: &str, node: &str) -> bool {
    d["decision"] == decision && d["node"] == node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_heals_a_sick_pool_quarantines_a_relapsing_one_and_holds_a_sick_farm() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        drain_timeout: Duration::from_secs(10),
        guard_yaml: format!("{GUARD}  dump: true\n"),
        agent_yaml: DUMPS.into(),
        pool_yaml: "    startup: 200ms\n    warmup: 200ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let posts: Arc<Mutex<Vec<Value>>> = Arc::default();
    let p = posts.clone();
    let (url, _task) = serve_plain(Arc::new(move |req| {
        p.lock().unwrap().push(req.json());
        Resp::json(200, serde_json::json!({"ok": true}))
    }))
    .await;
    let text = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    std::fs::write(
        &farm.sandbox.inventory,
        format!("{text}notify:\n  - url_env: FARMCTL_TEST_HOOK\n    events: [guard_acted, guard_held, guard_quarantined]\n"),
    )
    .unwrap();
    let hook = format!("{url}/hooks/guard");
    let log = farm.sandbox.dir.join("guard.decisions.jsonl");
    let mut load = farm.sandbox.traffic_spec();
    // About 50 requests/s over the farm: a window of 15 s holds enough
    // per node to judge, and the other tests keep their share.
    load.workers = 2;
    load.pace = Duration::from_millis(40);
    load.slow_every = 0;
    load.max_duration = Duration::from_secs(600);
    let traffic = Traffic::start(load);
    let guard = GuardProcess::start(
        &farm,
        &["-i", &inv, "--log", log.to_str().unwrap()],
        &[("FARMCTL_TEST_HOOK", &hook)],
    );
    // A healthy farm: decisions, none of them an action.
    guard
        .wait_for(Duration::from_secs(60), "ok", |d| d["decision"] == "ok")
        .await;
    // A dry run beside it, trying quicker rules (confirm: 1, so it
    // decides before the acting guard drains the node): it decides, never
    // takes the seat, acts on nothing, saves nothing, pages nobody.
    let dry_inv = farm.sandbox.dir.join("dry-run.yaml");
    let text = std::fs::read_to_string(&farm.sandbox.inventory).unwrap();
    assert!(text.contains("  confirm: 3\n"));
    std::fs::write(&dry_inv, text.replace("  confirm: 3\n", "  confirm: 1\n")).unwrap();
    let dry_log = farm.sandbox.dir.join("guard.dry-run.jsonl");
    let dry = GuardProcess::start(
        &farm,
        &[
            "-i",
            dry_inv.to_str().unwrap(),
            "--dry-run",
            "--log",
            dry_log.to_str().unwrap(),
        ],
        &[("FARMCTL_TEST_HOOK", &hook)],
    );

    // 1. web02's pool goes bad in a way a recycle heals.
    make_sick(
        &farm,
        "web02",
        "      error_rate: 0.3\n      healed_by_recycle: true\n",
    );
    let acted = guard
        .wait_for(Duration::from_secs(120), "acted on web02", |d| {
            is(d, "acted", "web02")
        })
        .await;
    let d = &guard.decisions()[acted];
    assert_eq!(d["pool"], "ShopPool", "{d:#}");
    assert_eq!(d["outcome"], "done", "{d:#}");
    assert!(d["figures"]["error_rate"].as_f64().unwrap() > 0.1, "{d:#}");
    assert!(
        d["diagnostics"].as_array().is_some_and(|a| !a.is_empty()),
        "diagnostics captured: {d:#}"
    );
    // And a memory dump of the worker the recycle then replaced, by the
    // agent's tool, once the node was out of rotation.
    let taken = &d["dumps"][0]["dumps"][0];
    let pid = &d["diagnostics"][0]["workers"][0]["pid"];
    assert_eq!(&taken["pid"], pid, "{d:#}");
    let file = taken["file"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        format!("MDMP pid={pid} pool=ShopPool")
    );
    assert_eq!(d["dumps"][0]["left_today"], 0, "{d:#}");
    // Confirmed first: three evaluations in a row named it.
    let watched = guard.decisions()[..acted]
        .iter()
        .filter(|d| is(d, "watching", "web02"))
        .count();
    assert!(watched >= 2, "{watched}");
    guard
        .wait_for(Duration::from_secs(90), "web02 healed", |d| {
            is(d, "healed", "web02")
        })
        .await;
    // The dry run saw the same and did nothing (the one recycle below is
    // the acting guard's).
    let would = dry
        .wait_for(Duration::from_secs(60), "dry run acted on web02", |d| {
            is(d, "acted", "web02")
        })
        .await;
    let w = &dry.decisions()[would];
    assert_eq!(w["dry_run"], true, "{w:#}");
    assert!(w["run_id"].is_null() && w["dumps"].is_null(), "{w:#}");
    assert!(dry.decisions().iter().all(|d| d["dry_run"] == true));
    assert!(
        guard.decisions().iter().all(|d| d["dry_run"] == false),
        "the acting guard kept the seat"
    );
    dry.kill().await;
    crate::common::schema::check_lines("guard", &std::fs::read_to_string(&dry_log).unwrap());
    // Recycled once, on web02 only.
    let recycles: Vec<String> = events(&farm)
        .into_iter()
        .filter(|e| e.event == "recycle")
        .map(|e| e.node)
        .collect();
    assert_eq!(recycles, ["web02"]);

    // 2. web03's pool goes bad again a few seconds after each recycle.
    make_sick(
        &farm,
        "web03",
        "      error_rate: 0.3\n      healed_by_recycle: true\n      relapse_after: 3s\n",
    );
    let q = guard
        .wait_for(Duration::from_secs(240), "web03 quarantined", |d| {
            is(d, "quarantined", "web03")
        })
        .await;
    let all = guard.decisions();
    let acted_web03 = all[..q].iter().filter(|d| is(d, "acted", "web03")).count();
    let relapsed = all[..q]
        .iter()
        .filter(|d| is(d, "relapsed", "web03"))
        .count();
    assert_eq!(
        (acted_web03, relapsed),
        (2, 2),
        "acted twice, relapsed twice:\n{}",
        dump(&all)
    );
    // The first action on web03 dumped its worker; the second found the
    // node's day of dumps spent and recycled without one.
    let dumps: Vec<&Value> = all[..q]
        .iter()
        .filter(|d| is(d, "acted", "web03"))
        .map(|d| &d["dumps"][0])
        .collect();
    assert_eq!(
        dumps[0]["dumps"].as_array().map(Vec::len),
        Some(1),
        "{:#}",
        dumps[0]
    );
    assert!(
        dumps[1]["refused"][0]
            .as_str()
            .is_some_and(|r| r.contains("budget is spent")),
        "{:#}",
        dumps[1]
    );
    assert!(
        all[..q]
            .iter()
            .any(|d| is(d, "held", "web03") && d["reason"] == "cool-down"),
        "a cool-down held it between the two:\n{}",
        dump(&all)
    );
    assert!(
        all[q]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("taken out of rotation")),
        "{:#}",
        all[q]
    );
    // (asked with the guard's state directory: who holds its seat)
    let guard_state = farm.sandbox.dir.join("guard-state");
    let st = json(
        &farmctl_env(
            &["status", "-i", &inv, "--output", "json"],
            &[("FARMCTL_STATE_DIR", guard_state.to_str().unwrap())],
        )
        .await,
    );
    let web03 = &st["nodes"][2];
    assert_eq!(web03["drained"], true, "{web03:#}");
    assert!(st["guard"]["holder"].is_string(), "{:#}", st["guard"]);
    // Never acted on again.
    let after_q = guard.decisions().len();

    // 3. Every node slowed at once: the farm is held, nothing recycled.
    for n in ["web01", "web02", "web04"] {
        make_sick(&farm, n, "      extra_latency: 700ms\n");
    }
    let held = guard
        .wait_for(Duration::from_secs(90), "held: farm sick", |d| {
            d["decision"] == "held" && d["reason"] == "farm sick"
        })
        .await;
    assert!(held >= after_q);
    // A few more evaluations: still nothing acted on.
    let seen = guard.decisions().len();
    guard
        .wait_for(Duration::from_secs(30), "three more", |_| {
            guard.decisions().len() >= seen + 3
        })
        .await;
    // 4. A run holding the farm pauses the guard: it decides nothing but
    // `held: run in progress` while the run's leases hold.
    let before_run = guard.decisions().len();
    // (web03 is out, quarantined: a second node may be out beside it.)
    let run = farmctl(&[
        "recycle",
        "-i",
        &inv,
        "--nodes",
        "web01,web02",
        "--max-unavailable",
        "2",
        "--yes",
    ])
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let during: Vec<Value> = guard.decisions()[before_run..].to_vec();
    assert!(
        during
            .iter()
            .any(|d| d["decision"] == "held" && d["reason"] == "run in progress"),
        "the guard did not see the run:\n{}",
        dump(&during)
    );
    let load = traffic.stop().await;
    let all = guard.kill().await;
    assert!(
        all[after_q..]
            .iter()
            .all(|d| d["decision"] != "acted" && d["decision"] != "quarantined"),
        "acted after the quarantine"
    );
    // No request failed other than the sick pools' own 500s: the drains
    // and recycles dropped nothing.
    assert_eq!(dropped(&load), 0, "{load:?}");
    // The decision log holds what stdout said, each line by its schema.
    let text = std::fs::read_to_string(&log).unwrap();
    crate::common::schema::check_lines("guard", &text);
    assert!(text.lines().count() >= all.len());
    // Paged: the actions, the quarantine and the farm's hold.
    let posts = posts.lock().unwrap().clone();
    let kinds: Vec<&str> = posts.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "guard_acted").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"guard_quarantined"), "{kinds:?}");
    assert!(kinds.contains(&"guard_held"), "{kinds:?}");
    let q = posts
        .iter()
        .find(|b| b["event"] == "guard_quarantined")
        .unwrap();
    assert_eq!(q["node"], "web03");
    assert_eq!(q["farm"], "demo");
}

/// A guard killed in the middle of its action (web02 drained, a request
/// still running on it) leaves the action to the guard that takes the
/// seat: it finishes the run from its journal (`finished`, reason
/// `interrupted`), web02 is recycled once and back in rotation, and no
/// request failed but the sick pool's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_killed_mid_action_leaves_it_to_the_next_to_finish() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        second_site: true,
        drain_timeout: Duration::from_secs(90),
        guard_yaml: "guard:\n  window: 15s\n  interval: 2s\n  confirm: 2\n  max_sick: 1\n  cooldown: 2m\n  relapse: 5m\n".into(),
        pool_yaml: "    startup: 200ms\n    warmup: 200ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    let mut load = farm.sandbox.traffic_spec();
    load.workers = 2;
    load.pace = Duration::from_millis(40);
    load.slow_every = 0;
    load.max_duration = Duration::from_secs(400);
    let traffic = Traffic::start(load);
    let first = GuardProcess::start(&farm, &["-i", &inv], &[]);
    first
        .wait_for(Duration::from_secs(60), "ok", |d| d["decision"] == "ok")
        .await;
    // A request on web02's other site (its own pool, not sick) that the
    // action's quiesce waits for: the action is under way for a while.
    let port = farm.sandbox.nodes[1].http_port;
    let slow = tokio::spawn(async move {
        farmctl::probe::get(
            "127.0.0.1",
            port,
            Some(farmctl::sandbox::SECOND_SITE_HOST),
            "/slow?ms=40000",
            Duration::from_secs(120),
        )
        .await
    });
    make_sick(
        &farm,
        "web02",
        "      error_rate: 0.3\n      healed_by_recycle: true\n",
    );
    // The first guard's action has drained web02: killed there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while status(&farm).await["nodes"][1]["drained"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the guard did not drain web02; {}",
            first.story()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!slow.is_finished(), "the slow request ended too soon");
    assert!(
        !first.kill().await.iter().any(|d| d["decision"] == "acted"),
        "the first guard's action ended before it was killed"
    );
    // The next guard finishes it.
    let second = GuardProcess::start(&farm, &["-i", &inv], &[]);
    let f = second
        .wait_for(Duration::from_secs(150), "the action finished", |d| {
            d["decision"] == "finished"
        })
        .await;
    let d = &second.decisions()[f];
    assert_eq!(d["reason"], "interrupted", "{d:#}");
    assert_eq!(d["node"], "web02", "{d:#}");
    assert_eq!(d["pool"], "ShopPool", "{d:#}");
    assert_eq!(d["outcome"], "done", "{d:#}\n{}", second.said());
    let st = status(&farm).await;
    assert_eq!(st["nodes"][1]["drained"], false, "{:#}", st["nodes"][1]);
    let answer = slow.await.unwrap();
    assert!(matches!(answer, Ok((200, _))), "{answer:?}");
    // Once, and by nobody again (the history was saved before acting).
    let recycles: Vec<String> = events(&farm)
        .into_iter()
        .filter(|e| e.event == "recycle")
        .map(|e| e.node)
        .collect();
    assert_eq!(recycles, ["web02"]);
    assert!(!second.decisions().iter().any(|d| d["decision"] == "acted"));
    second.kill().await;
    let load = traffic.stop().await;
    assert_eq!(dropped(&load), 0, "{load:?}");
}
