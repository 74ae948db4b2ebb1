//! Inventory validation: every error reported, each with its place.
use farm_inventory::{
    parse, ArrDrainMode, Capacity, F5DrainMode, InventoryError, LoadBalancer, OnFailure, Ramp,
    Secret,
};

const GOOD: &str = r#"
farm: shop
nodes:
  - name: web01
    address: 10.0.0.1
  - name: web02
    address: 10.0.0.2
    agent: 10.0.0.2:9000
    http_port: 8080
sites:
  - name: shop
    host: shop.example.com
    probe: { path: /healthz, successes: 2, timeout: 1500ms }
rollout:
  max_unavailable: "50%"
  drain_timeout: 1m30s
"#;

fn errors(text: &str) -> Vec<InventoryError> {
    parse(text).expect_err("should be invalid")
}

fn has(errors: &[InventoryError], path: &str, needle: &str) -> bool {
    errors
        .iter()
        .any(|e| e.path == path && e.message.contains(needle))
}

#[test]
fn good_inventory_with_defaults() {
    let inv = parse(GOOD).unwrap();
    assert_eq!(inv.nodes[0].agent, "10.0.0.1:7443");
    assert_eq!(inv.nodes[1].agent, "10.0.0.2:9000");
    assert_eq!(inv.nodes[0].lb_server, "web01");
    assert_eq!(inv.nodes[1].http_port, 8080);
    assert_eq!(
        inv.rollout.max_unavailable,
        Ramp::single(Capacity::Percent(50))
    );
    assert_eq!(inv.rollout.batch_size(2), 1);
    assert_eq!(inv.rollout.drain_timeout.as_secs(), 90);
    assert_eq!(inv.sites[0].probe.timeout.as_millis(), 1500);
    assert!(matches!(inv.load_balancer, LoadBalancer::HealthFile { .. }));
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../examples/farm.yaml");
    let inv = parse(text).unwrap();
    assert_eq!(inv.nodes.len(), 4);
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let e = errors("farm: x\nnodes: [\n  - name: a\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].line_col.is_some(), "{e:?}");
}

#[test]
fn unknown_key_names_its_path_and_line() {
    let text = GOOD.replace("    address: 10.0.0.2\n", "    adress: 10.0.0.2\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("unknown field `adress`"), "{e:?}");
    assert_eq!(e[0].path, "nodes[1]");
    assert_eq!(e[0].line_col.map(|l| l.0), Some(7));
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let text = r#"
farm: shop
nodes:
  - name: web01
    address: 10.0.0.1
  - name: web01
    address: ""
    agent: nope
sites:
  - name: shop
    probe: { path: healthz, expect_status: 999, interval: 5 parsecs }
app_pools: ["bad\"pool"]
rollout:
  max_unavailable: 0
  drain_timeout: soon
"#;
    let e = errors(text);
    assert!(has(&e, "nodes[1].name", "duplicate node name"), "{e:#?}");
    assert!(has(&e, "nodes[1].address", "must not be empty"), "{e:#?}");
    assert!(has(&e, "nodes[1].agent", "host:port"), "{e:#?}");
    assert!(
        has(&e, "sites[0].probe.path", "starting with `/`"),
        "{e:#?}"
    );
    assert!(has(&e, "sites[0].probe.expect_status", "999"), "{e:#?}");
    assert!(
        has(&e, "sites[0].probe.interval", "not a duration"),
        "{e:#?}"
    );
    assert!(has(&e, "app_pools[0]", "character"), "{e:#?}");
    assert!(has(&e, "rollout.max_unavailable", "at least 1"), "{e:#?}");
    assert!(has(&e, "rollout.drain_timeout", "`soon`"), "{e:#?}");
    assert!(e.len() >= 9);
}

#[test]
fn empty_node_list() {
    let e = errors("farm: x\nnodes: []\nsites: [{name: s}]\n");
    assert!(has(&e, "nodes", "no nodes"), "{e:?}");
}

#[test]
fn max_unavailable_above_node_count() {
    let text = GOOD.replace("\"50%\"", "3");
    let e = errors(&text);
    assert!(
        has(&e, "rollout.max_unavailable", "more than the farm's 2"),
        "{e:?}"
    );
    let e = errors(&GOOD.replace("\"50%\"", "\"150%\""));
    assert!(has(&e, "rollout.max_unavailable", "100%"), "{e:?}");
    let e = errors(&GOOD.replace("\"50%\"", "{a: 1}"));
    assert!(has(&e, "rollout.max_unavailable", "a mapping"), "{e:?}");
}

#[test]
fn percentages_round_down_but_never_to_zero() {
    let inv = parse(&GOOD.replace("\"50%\"", "\"10%\"")).unwrap();
    assert_eq!(inv.rollout.batch_size(4), 1);
    assert_eq!(Capacity::Percent(25).of(10), 2);
}

#[test]
fn unknown_load_balancer_kind() {
    let text = format!("{GOOD}load_balancer: {{kind: kemp}}\n");
    let e = errors(&text);
    assert!(
        has(&e, "load_balancer.kind", "unknown kind `kemp`"),
        "{e:?}"
    );
}

#[test]
fn haproxy_needs_admin_and_backend() {
    let text = format!("{GOOD}load_balancer: {{kind: haproxy}}\n");
    let e = errors(&text);
    assert!(has(&e, "load_balancer.admin", "runtime API"), "{e:?}");
    assert!(
        has(&e, "load_balancer.backend", "must not be empty"),
        "{e:?}"
    );
}

#[test]
fn hostile_documents_do_not_panic() {
    let deep = "[".repeat(100_000);
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
    for text in [
        "",
        "~",
        "- 1\n- 2",
        "farm: [1, 2]",
        deep.as_str(),
        bomb,
        "farm: x\nnodes:\n  - name: a\n    address: b\n    http_port: 99999999999999999999999\n",
        "\u{0}\u{1}\u{2}",
        "farm: x\nnodes: {a: 1}\n",
    ] {
        let _ = parse(text);
    }
}

#[test]
fn tls_paths_are_relative_to_the_inventory_file() {
    // An absolute path the way this platform writes one.
    let abs = if cfg!(windows) {
        r"C:\abs\c.pem"
    } else {
        "/abs/c.pem"
    };
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "nodes:\n",
        &format!("agent:\n  tls: {{ca: certs/ca.pem, cert: '{abs}', key: k.pem}}\nnodes:\n"),
    );
    let path = dir.path().join("farm.yaml");
    std::fs::write(&path, text).unwrap();
    let inv = farm_inventory::load(&path).unwrap();
    let tls = inv.agent.tls.unwrap();
    assert_eq!(tls.ca, dir.path().join("certs/ca.pem"));
    assert_eq!(tls.cert, std::path::PathBuf::from(abs));
    assert_eq!(tls.key, dir.path().join("k.pem"));
    let e = errors(&GOOD.replace(
        "nodes:\n",
        "agent:\n  tls: {ca: \"\", cert: c, key: k}\nnodes:\n",
    ));
    assert!(has(&e, "agent.tls.ca", "file path"), "{e:?}");
}

#[test]
fn ramps_failure_policy_and_pause() {
    let text = GOOD.replace("\"50%\"", "[1, \"100%\"]").replace(
        "  drain_timeout: 1m30s\n",
        "  drain_timeout: 1m30s\n  on_failure: continue\n  max_failures: 1\n  pause: 10s\n",
    );
    let inv = parse(&text).unwrap();
    assert_eq!(
        inv.rollout.max_unavailable,
        Ramp(vec![Capacity::Count(1), Capacity::Percent(100)])
    );
    assert_eq!(inv.rollout.max_unavailable.resolve(2), [1, 2]);
    assert_eq!(inv.rollout.on_failure, OnFailure::Continue);
    assert_eq!(inv.rollout.pause, Some(std::time::Duration::from_secs(10)));
    let e = errors(&GOOD.replace("\"50%\"", "[1, 0, 5]"));
    assert!(has(&e, "rollout.max_unavailable[1]", "at least 1"), "{e:?}");
    assert!(
        has(&e, "rollout.max_unavailable[2]", "more than the farm's 2"),
        "{e:?}"
    );
    let e = errors(&GOOD.replace("\"50%\"", "[]"));
    assert!(
        has(&e, "rollout.max_unavailable", "at least one step"),
        "{e:?}"
    );
    let e = errors(&GOOD.replace("  drain_timeout: 1m30s\n", "  on_failure: retry\n"));
    assert!(has(&e, "rollout.on_failure", "`retry`"), "{e:?}");
    assert_eq!(Ramp::parse("1,2,25%").unwrap().resolve(8), [1, 2, 2]);
    assert!(Ramp::parse("1,,2").is_err());
}

fn with_lb(lb: &str) -> String {
    format!("{GOOD}load_balancer:\n{lb}")
}

#[test]
fn an_f5_pool_with_its_members() {
    let inv = parse(&with_lb(
        "  kind: f5\n  url: https://bigip.corp.example/\n  pool: /Common/shop_pool\n  auth: {username: svc-farmctl, password_env: F5_PASSWORD}\n  tls: {ca: certs/bigip-ca.pem}\n",
    ))
    .unwrap();
    let LoadBalancer::F5(f5) = &inv.load_balancer else {
        panic!("{:?}", inv.load_balancer)
    };
    assert_eq!(f5.api.url, "https://bigip.corp.example");
    assert_eq!(f5.drain_mode, F5DrainMode::ForceOffline);
    assert!(f5.token_login);
    assert_eq!(f5.api.password, Secret::Env("F5_PASSWORD".into()));
    // Without lb_server a node is /Common/<name>:<http_port>.
    assert_eq!(inv.nodes[0].lb_server, "/Common/web01:80");
    assert_eq!(inv.nodes[1].lb_server, "/Common/web02:8080");
    assert_eq!(
        inv.load_balancer.describe(),
        "f5 pool /Common/shop_pool at https://bigip.corp.example"
    );
}

#[test]
fn an_f5_without_trust_auth_or_https_is_refused_with_every_reason() {
    let e = errors(&with_lb(
        "  kind: f5\n  url: http://bigip\n  pool: shop_pool\n  drain_mode: offline\n  backend: x\n",
    ));
    assert!(has(&e, "load_balancer.url", "must be https"), "{e:?}");
    assert!(has(&e, "load_balancer.pool", "full path"), "{e:?}");
    assert!(has(&e, "load_balancer.auth", "is required"), "{e:?}");
    assert!(
        has(&e, "load_balancer.tls", "never accepted unverified"),
        "{e:?}"
    );
    assert!(
        has(&e, "load_balancer.drain_mode", "force-offline"),
        "{e:?}"
    );
    assert!(
        has(&e, "load_balancer.backend", "not used with kind `f5`"),
        "{e:?}"
    );
}

#[test]
fn a_password_is_never_taken_from_the_inventory() {
    let e = errors(&with_lb(
        "  kind: f5\n  url: https://bigip\n  pool: /Common/p\n  auth: {username: u, password: hunter2}\n  tls: {fingerprint: x}\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("unknown field `password`"), "{e:?}");
    assert!(!e[0].to_string().contains("hunter2"), "{e:?}");
    let e = errors(&with_lb(
        "  kind: netscaler\n  url: https://adc\n  auth: {username: u, password_env: 'NOT A VAR'}\n  tls: {fingerprint: 'ab:cd'}\n",
    ));
    assert!(
        has(
            &e,
            "load_balancer.auth.password_env",
            "environment variable"
        ),
        "{e:?}"
    );
    assert!(has(&e, "load_balancer.tls.fingerprint", "64 hex"), "{e:?}");
}

#[test]
fn lb_servers_are_checked_in_the_load_balancers_words() {
    let lb = "  kind: netscaler\n  url: https://adc\n  member: servicegroup\n  servicegroup: sg_shop\n  auth: {username: u, password_file: ns.pass}\n  tls: {ca: ns.pem}\n";
    let text = with_lb(lb).replace(
        "    address: 10.0.0.1\n",
        "    address: 10.0.0.1\n    lb_server: web01\n",
    );
    let e = errors(&text);
    assert!(
        has(
            &e,
            "nodes[0].lb_server",
            "service group member like `web01:80`"
        ),
        "{e:?}"
    );
    let f5 = "  kind: f5\n  url: https://bigip\n  pool: /Common/p\n  auth: {username: u, password_env: P}\n  tls: {ca: c.pem}\n";
    let text = with_lb(f5).replace(
        "    address: 10.0.0.1\n",
        "    address: 10.0.0.1\n    lb_server: web01\n",
    );
    let e = errors(&text);
    assert!(
        has(
            &e,
            "nodes[0].lb_server",
            "full name like `/Common/web01:80`"
        ),
        "{e:?}"
    );
}

#[test]
fn aws_takes_the_region_from_the_arn_and_targets_default_to_address_and_port() {
    let inv = parse(&with_lb(
        "  kind: aws-elbv2\n  target_group_arn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop/0123456789abcdef\n",
    ))
    .unwrap();
    let LoadBalancer::AwsElbv2(aws) = &inv.load_balancer else {
        panic!()
    };
    assert_eq!(aws.region, "eu-west-1");
    assert_eq!(inv.nodes[1].lb_server, "10.0.0.2:8080");
    let e = errors(&with_lb(
        "  kind: aws-elbv2\n  target_group_arn: shop\n  url: https://x\n",
    ));
    assert!(
        has(
            &e,
            "load_balancer.target_group_arn",
            "not a target group ARN"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "load_balancer.url", "not used with kind `aws-elbv2`"),
        "{e:?}"
    );
}

#[test]
fn exec_needs_three_commands_with_known_placeholders() {
    let e = errors(&with_lb(
        "  kind: exec\n  drain: [/usr/local/bin/lb, drain, '{node}']\n  return: ['', x]\n  state: [lb, '{secret}']\n",
    ));
    assert!(has(&e, "load_balancer.return", "program to run"), "{e:?}");
    assert!(
        has(
            &e,
            "load_balancer.state[1]",
            "unknown placeholder `{secret}`"
        ),
        "{e:?}"
    );
    assert!(
        !e.iter().any(|e| e.path.starts_with("load_balancer.drain")),
        "{e:?}"
    );
}

#[test]
fn arr_and_nlb() {
    let inv = parse(&with_lb(
        "  kind: arr\n  agent: arr01:7443\n  farm: shop farm\n",
    ))
    .unwrap();
    let LoadBalancer::Arr(arr) = &inv.load_balancer else {
        panic!()
    };
    assert_eq!(arr.drain_mode, ArrDrainMode::GracefulStop);
    assert_eq!(inv.nodes[0].lb_server, "10.0.0.1");
    let inv = parse(&with_lb("  kind: nlb\n")).unwrap();
    assert_eq!(inv.load_balancer, LoadBalancer::Nlb);
    let e = errors(&with_lb("  kind: arr\n  farm: \"shop'; rm\"\n"));
    assert!(has(&e, "load_balancer.agent", "is required"), "{e:?}");
    assert!(has(&e, "load_balancer.farm", "may only contain"), "{e:?}");
}

#[test]
fn every_load_balancer_example_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lb");
    let mut kinds = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let inv = farm_inventory::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        kinds.push(inv.load_balancer.kind());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["arr", "aws-elbv2", "exec", "f5", "netscaler", "nlb"]
    );
}

/// Windows paths: drive letters with either separator and UNC shares are
/// absolute and kept, a relative one joins the inventory's folder.
#[cfg(windows)]
#[test]
fn windows_paths_in_an_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "nodes:\n",
        "agent:\n  tls: {ca: 'C:/pki/ca.pem', cert: '\\\\files01\\pki\\c.pem', key: 'keys\\k.pem'}\nnodes:\n",
    );
    let path = dir.path().join("farm.yaml");
    std::fs::write(&path, text).unwrap();
    let tls = farm_inventory::load(&path).unwrap().agent.tls.unwrap();
    assert_eq!(tls.ca, std::path::PathBuf::from(r"C:\pki\ca.pem"));
    assert_eq!(tls.cert, std::path::PathBuf::from(r"\\files01\pki\c.pem"));
    assert_eq!(tls.key, dir.path().join(r"keys\k.pem"));
}

#[test]
fn the_analysis_section_is_read_and_checked() {
    let inv = parse(&format!(
        "{GOOD}analysis:\n  soak: 5m\n  interval: 10m\n  min_requests: 200\n  errors: {{max_increase: \"1%\"}}\n  latency: {{quantile: p99, max_increase: 0.5}}\n  on_inconclusive: pause\n  stabilize: 30s\n"
    ))
    .unwrap();
    let a = &inv.analysis;
    assert_eq!(a.soak.unwrap().as_secs(), 300);
    assert_eq!(a.interval.as_secs(), 300, "an interval is at most the soak");
    assert_eq!(a.min_requests, 200);
    assert!((a.errors_max_increase - 0.01).abs() < 1e-12);
    assert_eq!(a.latency_quantile, farm_inventory::LatencyQuantile::P99);
    assert!((a.latency_max_increase - 0.5).abs() < 1e-12);
    assert_eq!(a.on_inconclusive, farm_inventory::OnInconclusive::Pause);
    assert_eq!(a.stabilize.unwrap().as_secs(), 30);
    // No soak: no analysis, the defaults stand.
    assert_eq!(parse(GOOD).unwrap().analysis.soak, None);

    let e = errors(&format!(
        "{GOOD}analysis:\n  canaries: 2\n  soak: soon\n  errors: {{max_increase: \"150%\"}}\n  latency: {{quantile: p50}}\n  on_inconclusive: maybe\n  canary_weight: \"10%\"\n"
    ));
    assert!(
        has(&e, "analysis.canaries", "fewer than the farm's 2 node(s)"),
        "{e:?}"
    );
    assert!(has(&e, "analysis.soak", "not a duration"), "{e:?}");
    assert!(
        has(&e, "analysis.errors.max_increase", "between 0% and 100%"),
        "{e:?}"
    );
    assert!(has(&e, "analysis.latency.quantile", "p50"), "{e:?}");
    assert!(has(&e, "analysis.on_inconclusive", "maybe"), "{e:?}");
    // The health-file driver has no weights: refused, saying which can.
    assert!(
        has(
            &e,
            "analysis.canary_weight",
            "only haproxy sets member weights"
        ),
        "{e:?}"
    );
}

#[test]
fn a_canary_weight_is_a_share_haproxy_can_give() {
    let inv = parse(&format!(
        "{GOOD}load_balancer: {{kind: haproxy, admin: \"127.0.0.1:9999\", backend: shop}}\nanalysis:\n  soak: 1m\n  canary_weight: \"10%\"\n"
    ))
    .unwrap();
    assert_eq!(inv.analysis.canary_weight, Some(10));
}

/// The health-file balancer renames its file on every drain: a site probe
/// of it could never prove a drained node healthy (it drained web01 and
/// waited on a 404 until healthy_timeout, then left it out).
#[test]
fn a_probe_of_the_health_files_own_file_is_refused() {
    let text = GOOD.replace("path: /healthz", "path: /HEALTH.htm");
    let e = errors(&text);
    assert!(
        has(&e, "sites[0].probe.path", "health-file balancer's own file"),
        "{e:?}"
    );
    let text = format!(
        "{}load_balancer: {{kind: health-file, path: /lb/alive.txt}}\n",
        GOOD.replace("path: /healthz", "path: /lb/alive.txt?x=1")
    );
    assert!(has(&errors(&text), "sites[0].probe.path", "own file"));
    // Another LB kind monitors something else: allowed.
    let text = format!(
        "{}load_balancer: {{kind: none}}\n",
        GOOD.replace("path: /healthz", "path: /health.htm")
    );
    parse(&text).unwrap();
}

#[test]
fn patch_settings_are_checked_and_named() {
    let inv = parse(GOOD).unwrap();
    assert_eq!(
        inv.patch.classifications,
        ["SecurityUpdates", "CriticalUpdates", "UpdateRollups"]
    );
    assert_eq!(inv.patch.reboot_timeout.as_secs(), 1800);
    assert_eq!(inv.patch.bake.map(|b| b.as_secs()), Some(120));
    let text = format!(
        "{GOOD}patch:\n  classifications: [Security Updates, Drivers]\n  include_kbs: [5031364, KB12x]\n  exclude_kbs: [KB5031364]\n  reboot_timeout: 2s\n  bake: 0s\n"
    );
    let e = errors(&text);
    assert!(
        has(
            &e,
            "patch.classifications[1]",
            "`Drivers` is not an update classification"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "patch.include_kbs[1]", "`KB12x` is not a KB number"),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "patch.exclude_kbs",
            "KB5031364 is both included and excluded"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "patch.reboot_timeout", "is not between 10s and 1day"),
        "{e:?}"
    );
    let ok = parse(&format!(
        "{GOOD}patch:\n  classifications: []\n  bake: 0s\n"
    ))
    .unwrap();
    assert!(ok.patch.classifications.is_empty());
    assert_eq!(ok.patch.bake, None);
}

#[test]
fn guard_settings_are_checked_and_named() {
    let inv = parse(GOOD).unwrap();
    assert_eq!(inv.guard.window.as_secs(), 120);
    assert_eq!(inv.guard.confirm, 3);
    assert_eq!((inv.guard.per_hour, inv.guard.per_day), (3, 10));
    assert_eq!(inv.guard.quarantine_after, 2);
    let ok = parse(&format!(
        "{GOOD}guard:\n  window: 1m\n  interval: 10s\n  confirm: 2\n  max_actions: {{per_hour: 1, per_day: 4}}\n  cooldown: 5m\n  relapse: 1h\n  quarantine_after: 3\n"
    ))
    .unwrap();
    assert_eq!(ok.guard.window.as_secs(), 60);
    assert_eq!(ok.guard.cooldown.as_secs(), 300);
    assert_eq!(ok.guard.per_day, 4);
    let e = errors(&format!(
        "{GOOD}guard:\n  window: 2s\n  confirm: 0\n  max_sick: \"50%\"\n  max_actions: {{per_hour: 5, per_day: 2}}\n  cooldown: 2h\n  relapse: 30m\n  quarantine_after: -1\n"
    ));
    assert!(
        has(&e, "guard.window", "is not between 10s and 1h"),
        "{e:?}"
    );
    assert!(has(&e, "guard.confirm", "0 is not a count"), "{e:?}");
    assert!(has(&e, "guard.max_sick", "half the farm or more"), "{e:?}");
    assert!(
        has(
            &e,
            "guard.max_actions.per_day",
            "fewer than the 5 allowed per hour"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "guard.cooldown", "longer than guard.relapse"),
        "{e:?}"
    );
    assert!(
        has(&e, "guard.quarantine_after", "-1 is not a count"),
        "{e:?}"
    );
    let e = errors(&format!("{GOOD}guard:\n  confirms: 3\n"));
    assert!(format!("{e:?}").contains("confirms"), "{e:?}");
}
