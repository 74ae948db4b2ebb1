//! The HTTP load balancer drivers against contract fakes written from the
//! reference (F5, NetScaler: HTTPS with their own CA, sessions that
//! expire, connections that run down after a drain, a health check after
//! a return, transient errors), and the exec driver against small scripts,
//! each driving a rolling recycle of a sandbox farm of real agents.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::common::fake_f5::FakeF5;
use crate::common::fake_netscaler::FakeNetscaler;
use crate::common::members::{Change, Members};
use crate::common::*;
use farmctl::sandbox::SandboxSpec;

const NODES: [&str; 4] = ["web01", "web02", "web03", "web04"];

fn spec() -> SandboxSpec {
    SandboxSpec {
        releases: false,
        pool_yaml: "    startup: 100ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    }
}

/// Each member went out and came back once, in node order, one at a
/// time, and each node was recycled only after the LB had reported its
/// member without connections.
fn assert_rolled_through(farm: &Farm, members: &Members, member_of: impl Fn(&str) -> String) {
    let changes = members.changes();
    let order: Vec<(String, Change)> = changes.iter().map(|(_, m, c)| (m.clone(), *c)).collect();
    let expected: Vec<(String, Change)> = NODES
        .iter()
        .flat_map(|n| [(member_of(n), Change::Out), (member_of(n), Change::Back)])
        .collect();
    assert_eq!(order, expected);
    assert_eq!(members.max_out_at_once(), 1);
    for n in NODES {
        let zero = members
            .zero_reported(&member_of(n))
            .unwrap_or_else(|| panic!("{n}: the LB never reported it without connections"));
        let recycled = recycle_started(farm, n).unwrap_or_else(|| panic!("{n} was not recycled"));
        assert!(
            zero <= recycled,
            "{n} recycled before the LB reported 0 connections"
        );
    }
}

/// No file the run wrote and nothing it printed holds `secret`.
fn assert_secret_kept(farm: &Farm, out: &std::process::Output, secret: &str) {
    assert!(!stderr(out).contains(secret), "the password is in stderr");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(secret),
        "the password is in stdout"
    );
    let state = farm.sandbox.dir.join("state");
    for e in walk(&state) {
        let text = std::fs::read_to_string(&e).unwrap_or_default();
        assert!(!text.contains(secret), "the password is in {}", e.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn state_dir(farm: &Farm) -> String {
    farm.sandbox.dir.join("state").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_rolling_recycle_through_token_expiry_and_transient_errors() {
    let farm = farm(spec()).await;
    let member_of = |n: &str| {
        let port = farm
            .sandbox
            .nodes
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .http_port;
        format!("/Common/{n}:{port}")
    };
    let names: Vec<String> = NODES.iter().map(|n| member_of(n)).collect();
    let f5 = FakeF5::start(&farm.sandbox.dir, "/Common/shop_pool", &names).await;
    set_load_balancer(&farm, &f5.inventory("FARMCTL_F5_PW", "force-offline"), &[]);
    *f5.state.token_ttl.lock().unwrap() = Duration::from_secs(1);
    f5.state.fail_every.store(9, Ordering::SeqCst);
    let env = [("FARMCTL_F5_PW", crate::common::fake_f5::PASSWORD)];
    let inv = inventory(&farm);
    let state = state_dir(&farm);

    // The F5's own count of each member's requests, beside the node's.
    f5.members.set_requests(&member_of("web02"), 4321);
    let st = farmctl_env(&["status", "-i", &inv, "--output", "json"], &env).await;
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let st = json(&st);
    assert!(
        (0..4).all(|i| st["nodes"][i]["lb_state"] == "monitor-enabled/up"),
        "{st}"
    );
    assert_eq!(st["nodes"][1]["lb_traffic"]["requests_total"], 4321, "{st}");
    assert_eq!(st["nodes"][0]["lb_traffic"]["requests_total"], 0, "{st}");
    assert_eq!(
        st["nodes"][1]["lb_traffic"]["status_5xx"],
        serde_json::Value::Null
    );

    let out = farmctl_env(
        &[
            "--state-dir",
            &state,
            "-vv",
            "recycle",
            "-i",
            &inv,
            "--yes",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["outcome"], "succeeded");
    assert_rolled_through(&farm, &f5.members, member_of);
    // The token ran out during the run: logged in again; transient errors
    // were retried.
    assert!(f5.state.logins.load(Ordering::SeqCst) >= 2);
    assert!(f5.state.transient_served.load(Ordering::SeqCst) > 0);
    // Force offline, and only the fields an Operator account may change.
    for (_, body) in f5.state.patches.lock().unwrap().iter() {
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert!(
            keys.iter().all(|k| *k == "state" || *k == "session"),
            "{body}"
        );
        assert!(
            *body == serde_json::json!({"state": "user-down", "session": "user-disabled"})
                || *body == serde_json::json!({"state": "user-up", "session": "user-enabled"}),
            "{body}"
        );
    }
    assert_secret_kept(&farm, &out, crate::common::fake_f5::PASSWORD);
    let v = farmctl_env(&["validate", "-i", &inv, "--output", "json"], &env).await;
    assert!(!String::from_utf8_lossy(&v.stdout).contains(crate::common::fake_f5::PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_drift_and_bad_input_refuse_before_anything_changes() {
    let farm = farm(spec()).await;
    let names: Vec<String> = ["web01", "web02", "web03"]
        .iter()
        .map(|n| format!("/Common/{n}:80"))
        .collect();
    let f5 = FakeF5::start(&farm.sandbox.dir, "/Common/shop_pool", &names).await;
    let servers: Vec<(&str, String)> = NODES
        .iter()
        .map(|n| (*n, format!("/Common/{n}:80")))
        .collect();
    let servers: Vec<(&str, &str)> = servers.iter().map(|(n, s)| (*n, s.as_str())).collect();
    set_load_balancer(&farm, &f5.inventory("FARMCTL_F5_PW", "disable"), &servers);
    let inv = inventory(&farm);
    let env = [("FARMCTL_F5_PW", crate::common::fake_f5::PASSWORD)];
    // web04's member is not in the pool: the F5's own 404 words.
    let out = farmctl_env(&["recycle", "-i", &inv, "--yes"], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("web04"), "{}", stderr(&out));
    assert!(f5.state.patches.lock().unwrap().is_empty());
    // No password in the environment: bad input, nothing asked of the F5.
    let logins = f5.state.logins.load(Ordering::SeqCst);
    let out = farmctl(&["recycle", "-i", &inv, "--yes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FARMCTL_F5_PW is not set"),
        "{}",
        stderr(&out)
    );
    // A wrong password: refused with the F5's answer, never printed.
    let out = farmctl_env(
        &["recycle", "-i", &inv, "--yes"],
        &[("FARMCTL_F5_PW", "wrong-guess")],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-guess"));
    assert_eq!(f5.state.logins.load(Ordering::SeqCst), logins);
    assert!(events(&farm).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netscaler_rolling_recycle_with_a_session_that_expires_and_on_call_drain() {
    let farm = farm(spec()).await;
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let ns = FakeNetscaler::start(&farm.sandbox.dir, &names).await;
    set_load_balancer(&farm, &ns.inventory("FARMCTL_NS_PW", "login"), &[]);
    *ns.state.session_ttl.lock().unwrap() = Duration::from_secs(1);
    ns.state.fail_every.store(11, Ordering::SeqCst);
    let env = [("FARMCTL_NS_PW", crate::common::fake_netscaler::PASSWORD)];
    let inv = inventory(&farm);
    let state = state_dir(&farm);

    let out = farmctl_env(
        &[
            "--state-dir",
            &state,
            "-vv",
            "recycle",
            "-i",
            &inv,
            "--yes",
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_rolled_through(&farm, &ns.members, |n| n.to_string());
    assert!(ns.state.logins.load(Ordering::SeqCst) >= 2);
    assert!(ns.state.transient_served.load(Ordering::SeqCst) > 0);
    for (action, body) in ns.state.actions.lock().unwrap().iter() {
        if action == "disable" {
            assert_eq!(body["service"]["graceful"], "YES", "{body}");
            assert_eq!(body["service"]["delay"], 30, "{body}");
        }
    }
    assert_secret_kept(&farm, &out, crate::common::fake_netscaler::PASSWORD);

    // On call: one node out and back, through the same driver.
    let before = ns.members.changes().len();
    let d = farmctl_env(&["drain", "-i", &inv, "web02", "--output", "json"], &env).await;
    assert_eq!(d.status.code(), Some(0), "{}", stderr(&d));
    assert!(ns.members.is_out("web02"));
    let u = farmctl_env(&["undrain", "-i", &inv, "web02", "--output", "json"], &env).await;
    assert_eq!(u.status.code(), Some(0), "{}", stderr(&u));
    assert!(ns.members.checked_up("web02"));
    assert_eq!(ns.members.changes().len(), before + 2);

    // The ADC's own count of each service's requests, beside the node's.
    ns.members.set_requests("web03", 777);
    let st = farmctl_env(&["status", "-i", &inv, "--output", "json"], &env).await;
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let st = json(&st);
    assert_eq!(st["nodes"][2]["lb_traffic"]["requests_total"], 777, "{st}");
    assert!(st["nodes"][2]["lb_traffic"]["connections"].is_u64(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_certificate_that_is_not_the_pinned_one_is_refused() {
    let farm = farm(SandboxSpec { nodes: 2, ..spec() }).await;
    let names: Vec<String> = ["web01", "web02"].iter().map(|n| n.to_string()).collect();
    let ns = FakeNetscaler::start(&farm.sandbox.dir, &names).await;
    // A recycle with the LB's trust set by `tls`: refused before
    // anything changes on the appliance, saying `wanted`.
    let refused_with = |tls: String, wanted: &'static str| {
        let block = ns.inventory("FARMCTL_NS_PW", "headers").replace(
            &format!("tls: {{fingerprint: \"{}\"}}", ns.https.fingerprint),
            &tls,
        );
        set_load_balancer(&farm, &block, &[]);
        let farm = &farm;
        let ns = &ns;
        async move {
            let out = farmctl_env(
                &["recycle", "-i", &inventory(farm), "--yes"],
                &[("FARMCTL_NS_PW", crate::common::fake_netscaler::PASSWORD)],
            )
            .await;
            assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
            assert!(stderr(&out).contains(wanted), "{}", stderr(&out));
            assert!(ns.state.actions.lock().unwrap().is_empty());
        }
    };
    // Another certificate than the pinned one.
    refused_with(
        format!("tls: {{fingerprint: \"{}\"}}", "ab".repeat(32)),
        "not the pinned",
    )
    .await;
    // The appliance's own certificate given as its CA: the error says
    // what to do instead.
    refused_with(
        format!("tls: {{ca: {}}}", ns.https.leaf_file.display()),
        "load_balancer.tls.fingerprint",
    )
    .await;
}

/// The exec driver's three commands: a state file per node, a log of
/// every call, sessions that run down over three reads after a drain.
fn exec_scripts(dir: &std::path::Path) -> String {
    let script = dir.join("lb.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
set -eu
dir=$(dirname "$0")
action=$1; node=$2
echo "$action $node" >> "$dir/lb-calls.log"
case "$action" in
  drain) echo drain > "$dir/$node.state"; echo 3 > "$dir/$node.sessions" ;;
  return) echo up > "$dir/$node.state"; echo 0 > "$dir/$node.sessions" ;;
  state)
    state=$(cat "$dir/$node.state" 2>/dev/null || echo up)
    n=$(cat "$dir/$node.sessions" 2>/dev/null || echo 0)
    if [ "$state" = drain ] && [ "$n" -gt 0 ]; then echo $((n - 1)) > "$dir/$node.sessions"; fi
    echo "checking $node..."
    printf '{"state":"%s","sessions":%s}\n' "$state" "$n" ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = script.display();
    format!(
        "load_balancer:\n  kind: exec\n  drain: [\"{s}\", drain, \"{{node}}\"]\n  return: [\"{s}\", return, \"{{node}}\"]\n  state: [\"{s}\", state, \"{{node}}\"]\n  timeout: 10s\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_rolling_recycle_and_a_failing_command() {
    let farm = farm(spec()).await;
    let dir = farm.sandbox.dir.clone();
    set_load_balancer(&farm, &exec_scripts(&dir), &[]);
    let inv = inventory(&farm);
    let out = farmctl(&["recycle", "-i", &inv, "--yes", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let calls = std::fs::read_to_string(dir.join("lb-calls.log")).unwrap();
    let changes: Vec<&str> = calls.lines().filter(|l| !l.starts_with("state")).collect();
    assert_eq!(
        changes,
        NODES
            .iter()
            .flat_map(|n| [format!("drain {n}"), format!("return {n}")])
            .collect::<Vec<_>>()
    );
    // Sessions were read down to 0 before each recycle.
    for n in NODES {
        let reads = calls
            .lines()
            .skip_while(|l| *l != format!("drain {n}"))
            .take_while(|l| *l != format!("return {n}"))
            .filter(|l| *l == format!("state {n}"))
            .count();
        assert!(reads >= 4, "{n}: {reads} state reads\n{calls}");
    }

    // A drain command that fails: the node is failed with its stderr, the
    // run halts, nothing else is touched.
    let script = dir.join("lb.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        text.replace(
            "  drain) ",
            "  drain) echo 'LB API said 403 Forbidden' >&2; exit 7; ",
        ),
    )
    .unwrap();
    let before = events(&farm).len();
    let out = farmctl(&["recycle", "-i", &inv, "--yes", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let err = report["nodes"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("exited with 7") && err.contains("403 Forbidden"),
        "{err}"
    );
    assert_eq!(report["nodes"][1]["outcome"], "skipped");
    assert_eq!(events(&farm).len(), before);
    let _ = SystemTime::now();
}
