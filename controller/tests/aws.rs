//! The aws-elbv2 driver: its wire contract against a real emulator
//! (`moto[server]`, which `.ci/run` installs) driving a rolling recycle of
//! real agents, and the timing moto does not model — `draining` before a
//! target is gone, `initial` before it is `healthy` — against a scripted
//! endpoint.
#[path = "e2e/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::https::{serve_plain, Resp};
use common::*;
use farm_inventory::{AwsElbv2 as AwsConfig, Node};
use farmctl::lb::{AwsElbv2, LoadBalancer};
use farmctl::sandbox::SandboxSpec;

const KEY_ID: &str = "AKIAFARMCTLTEST";
const SECRET: &str = "aws-s3cret-for-the-emulator";

fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
    ]
}

struct Moto {
    url: String,
    child: tokio::process::Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `python3 -m moto.server` on a free port, once it answers.
async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 -m moto.server (pip install 'moto[server]'; .ci/run does)");
    let url = format!("http://127.0.0.1:{port}");
    farm_proto::assert_eventually!(
        Duration::from_secs(60),
        async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
        "moto_server to listen"
    );
    Moto { url, child }
}

/// Instances and a target group in the emulator, each node's instance
/// registered on its own port: `(target group ARN, [lb_server])`.
async fn target_group(url: &str, ports: &[u16]) -> (String, Vec<String>) {
    let script = format!(
        r#"
import boto3, json
kw = dict(endpoint_url="{url}", region_name="eu-west-1",
          aws_access_key_id="{KEY_ID}", aws_secret_access_key="{SECRET}")
ec2 = boto3.client("ec2", **kw); elb = boto3.client("elbv2", **kw)
ports = {ports:?}
image = ec2.describe_images()["Images"][0]["ImageId"]
ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=len(ports), MaxCount=len(ports))["Instances"]]
vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
tg = elb.create_target_group(Name="shop", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
elb.register_targets(TargetGroupArn=tg, Targets=[{{"Id": i, "Port": p}} for i, p in zip(ids, ports)])
print(json.dumps({{"tg": tg, "targets": ["%s:%d" % (i, p) for i, p in zip(ids, ports)]}}))
"#
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["tg"].as_str().unwrap().to_string(),
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_recycle_through_an_elbv2_target_group_in_the_emulator() {
    let farm = farm(SandboxSpec {
        releases: false,
        pool_yaml: "    startup: 100ms\n    warmup: 100ms\n    shutdown_time_limit: 30s\n".into(),
        ..SandboxSpec::default()
    })
    .await;
    let moto = moto().await;
    let ports: Vec<u16> = farm.sandbox.nodes.iter().map(|n| n.http_port).collect();
    let (tg, targets) = target_group(&moto.url, &ports).await;
    let servers: Vec<(&str, &str)> = farm
        .sandbox
        .nodes
        .iter()
        .zip(&targets)
        .map(|(n, t)| (n.name.as_str(), t.as_str()))
        .collect();
    let block = format!(
        "load_balancer:\n  kind: aws-elbv2\n  target_group_arn: {tg}\n  endpoint: {}\n  timeout: 10s\n",
        moto.url
    );
    set_load_balancer(&farm, &block, &servers);
    let inv = inventory(&farm);
    let env = aws_env();

    // The plan says what the default deregistration delay means.
    let plan = farmctl_env(&["plan", "recycle", "-i", &inv], &env).await;
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let said = format!("{}{}", String::from_utf8_lossy(&plan.stdout), stderr(&plan));
    assert!(
        said.contains("deregistration_delay is 300 s (the default)"),
        "{said}"
    );

    // Watch the target group while the run goes: who is registered.
    let cfg = AwsConfig {
        target_group_arn: tg.clone(),
        region: "eu-west-1".into(),
        endpoint: Some(moto.url.clone()),
        profile: None,
        timeout: Duration::from_secs(10),
    };
    for (k, v) in aws_env() {
        std::env::set_var(k, v);
    }
    let watcher = Arc::new(AwsElbv2::new(&cfg).unwrap());
    let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watch = {
        let (w, seen, mut stopped) = (watcher.clone(), seen.clone(), stopped.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(t) = w.targets().await {
                    let mut ids: Vec<String> = t
                        .iter()
                        .map(|t| format!("{}:{}", t.id, t.port.unwrap_or(0)))
                        .collect();
                    ids.sort();
                    let mut s = seen.lock().unwrap();
                    if s.last() != Some(&ids) {
                        s.push(ids);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => return,
                }
            }
        })
    };
    let _ = stopped;
    let out = farmctl_env(&["recycle", "-i", &inv, "--yes", "--output", "json"], &env).await;
    stop.send_replace(true);
    watch.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["outcome"], "succeeded");
    assert!(!stderr(&out).contains(SECRET));
    // Every target left and came back, one at a time, in node order.
    let seen = seen.lock().unwrap().clone();
    let mut all = targets.clone();
    all.sort();
    let mut left_out = Vec::new();
    for snapshot in &seen {
        assert!(
            snapshot.len() + 1 >= targets.len(),
            "two out at once: {seen:?}"
        );
        if let Some(t) = all.iter().find(|t| !snapshot.contains(t)) {
            if left_out.last() != Some(t) {
                left_out.push(t.clone());
            }
        }
    }
    assert_eq!(left_out, targets, "{seen:?}");
    // All registered at the end: asked afresh (the watcher's last answer
    // may have been asked for before the last target came back).
    let mut now: Vec<String> = watcher
        .targets()
        .await
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t.id, t.port.unwrap_or(0)))
        .collect();
    now.sort();
    assert_eq!(now, all, "{seen:?}");
    // Every recycle happened while its target was out.
    for n in &farm.sandbox.nodes {
        assert!(
            recycle_started(&farm, &n.name).is_some(),
            "{} not recycled",
            n.name
        );
    }
}

/// A scripted ELBv2: `DescribeTargetHealth` answers what `health` holds
/// next (the last one again when it runs out), after `Throttling` once.
struct Scripted {
    health: Mutex<VecDeque<&'static str>>,
    calls: Mutex<Vec<(String, String)>>,
    throttled: Mutex<bool>,
}

fn health_xml(state: Option<(&str, &str)>) -> String {
    let member = match state {
        None => String::new(),
        Some((s, reason)) => format!(
            "<member><Target><Id>i-0abc</Id><Port>80</Port></Target><TargetHealth><State>{s}</State>{}</TargetHealth></member>",
            if reason.is_empty() { String::new() } else { format!("<Reason>{reason}</Reason>") }
        ),
    };
    format!(
        "<DescribeTargetHealthResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DescribeTargetHealthResult><TargetHealthDescriptions>{member}</TargetHealthDescriptions></DescribeTargetHealthResult></DescribeTargetHealthResponse>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_and_initial_are_waited_out_as_aws_reports_them() {
    let script = Arc::new(Scripted {
        health: Mutex::new(VecDeque::new()),
        calls: Mutex::default(),
        throttled: Mutex::new(false),
    });
    let s = script.clone();
    let (url, _task) = serve_plain(Arc::new(move |req| {
        let body = String::from_utf8_lossy(&req.body).to_string();
        let action = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or("")
            .to_string();
        s.calls
            .lock()
            .unwrap()
            .push((action.clone(), req.header("authorization").unwrap_or("").to_string()));
        let mut throttled = s.throttled.lock().unwrap();
        if !*throttled {
            *throttled = true;
            return Resp {
                status: 400,
                headers: vec![],
                body: "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>".into(),
            };
        }
        let xml = match action.as_str() {
            "DescribeTargetHealth" => {
                let mut h = s.health.lock().unwrap();
                let state = if h.len() > 1 { h.pop_front().unwrap() } else { *h.front().unwrap_or(&"healthy") };
                match state {
                    "gone" => health_xml(None),
                    "draining" => health_xml(Some(("draining", "Target.DeregistrationInProgress"))),
                    "initial" => health_xml(Some(("initial", "Elb.InitialHealthChecking"))),
                    other => health_xml(Some((other, ""))),
                }
            }
            "DeregisterTargets" | "RegisterTargets" => format!("<{action}Response><{action}Result/></{action}Response>"),
            _ => "<ErrorResponse><Error><Code>TargetGroupNotFound</Code><Message>One or more target groups not found</Message></Error></ErrorResponse>".into(),
        };
        Resp { status: 200, headers: vec![], body: xml }
    }))
    .await;
    for (k, v) in aws_env() {
        std::env::set_var(k, v);
    }
    let cfg = AwsConfig {
        target_group_arn:
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop/0123456789abcdef"
                .into(),
        region: "eu-west-1".into(),
        endpoint: Some(url),
        profile: None,
        timeout: Duration::from_secs(5),
    };
    let lb = AwsElbv2::new(&cfg)
        .unwrap()
        .with_poll(Duration::from_millis(10));
    let node = Node {
        name: "web01".into(),
        address: "10.0.1.11".into(),
        agent: "10.0.1.11:7443".into(),
        http_port: 80,
        lb_server: "i-0abc:80".into(),
    };
    let describes = |s: &Scripted| {
        s.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == "DescribeTargetHealth")
            .count()
    };

    // Still draining when the time runs out: not drained.
    *script.health.lock().unwrap() = ["draining"; 1].into_iter().collect();
    assert!(!lb
        .wait_sessions_gone(&node, Duration::from_millis(200))
        .await
        .unwrap());
    // Draining three times, then gone: drained only then.
    *script.health.lock().unwrap() = ["draining", "draining", "draining", "gone"]
        .into_iter()
        .collect();
    let before = describes(&script);
    assert!(lb
        .wait_sessions_gone(&node, Duration::from_secs(5))
        .await
        .unwrap());
    assert!(describes(&script) - before >= 4);
    // Registered: initial, then healthy — up only then.
    *script.health.lock().unwrap() = ["initial"].into_iter().collect();
    let members = lb.members(std::slice::from_ref(&node)).await.unwrap();
    assert_eq!(
        members[0].state.as_ref().unwrap().raw,
        "initial (Elb.InitialHealthChecking)"
    );
    // (the AWS driver never calls the node's agent; a lazy client is enough)
    let agent = farmctl::agent::GrpcAgent::new(
        "127.0.0.1:9",
        "web01",
        None,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let target = farmctl::lb::Target {
        node: &node,
        agent: &agent,
        op_id: "r1.web01.undrain",
    };
    let e = lb
        .undrain(&target, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("initial"), "{e}");
    *script.health.lock().unwrap() = ["initial", "initial", "initial", "healthy"]
        .into_iter()
        .collect();
    let before = describes(&script);
    lb.undrain(&target, Duration::from_secs(5)).await.unwrap();
    assert!(describes(&script) - before >= 4);

    // Every call was signed for this region and service; the first one
    // was throttled and tried again.
    let calls = script.calls.lock().unwrap().clone();
    assert!(calls.len() >= 2 && calls[0].0 == calls[1].0, "{calls:?}");
    for (_, auth) in &calls {
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/"))
                && auth.contains("/eu-west-1/elasticloadbalancing/aws4_request"),
            "{auth}"
        );
        assert!(!auth.contains(SECRET));
    }
}
