//! `farmctl logs` end to end: a sandbox farm behind a real HAProxy under
//! load, one node's application failing 20% of its requests. The logs its
//! agents wrote, read by `farmctl logs` (one folder per server), give the
//! figures `status` gave for the same window — one computation — and the
//! same counts as an independent reading of the files (a few lines of
//! Python), and name the same outlier.
use std::time::Duration;

use crate::common::*;
use farmctl::sandbox::SandboxSpec;
use farmctl::traffic::Traffic;

/// A reading that shares nothing with farmctl's: per server, user
/// requests (neither the health file nor farmctl's probes) and their 5xx.
const INDEPENDENT: &str = r##"
import json, os, sys
out = {}
for folder in sys.argv[1:]:
    server = os.path.basename(folder).split(".")[0]
    requests = errors = 0
    for root, _, files in os.walk(folder):
        if os.path.basename(root) == "HTTPERR":
            continue
        for name in files:
            fields = []
            for line in open(os.path.join(root, name), encoding="utf-8"):
                line = line.rstrip("\r\n")
                if line.startswith("#Fields:"):
                    fields = line.split()[1:]
                    continue
                if not line or line.startswith("#"):
                    continue
                row = dict(zip(fields, line.split()))
                if row["cs-uri-stem"].lower() == "/health.htm" or row["cs(User-Agent)"].startswith("farmctl-probe"):
                    continue
                requests += 1
                errors += row["sc-status"].startswith("5")
    out[server] = {"requests": requests, "status_5xx": errors}
print(json.dumps(out))
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_give_what_status_gave_and_what_an_independent_reading_counts() {
    let farm = farm(SandboxSpec {
        lb_kind: "haproxy".into(),
        releases: false,
        ..SandboxSpec::default()
    })
    .await;
    let inv = inventory(&farm);
    // web02's application fails 20% of its requests from the start.
    farm.sandbox
        .set_pool_faults("web02", "      error_rate: 0.20\n")
        .unwrap();
    let mut load = farm.sandbox.traffic_spec();
    load.workers = 4;
    load.pace = Duration::from_millis(20);
    load.slow_every = 0;
    load.max_duration = Duration::from_secs(60);
    let traffic = Traffic::start(load);
    // Until every node has enough user requests to tell web02's errors
    // from chance, then the load stops: status's minute holds all of it,
    // and no request is at its edges when status and logs read it.
    farm_proto::assert_eventually!(
        Duration::from_secs(45),
        async {
            status(&farm).await["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["traffic"]["requests"].as_u64().unwrap_or(0) >= 150)
        },
        "every node to log enough user requests"
    );
    // Every request is logged before it is answered: once the load has
    // stopped, the logs are whole.
    traffic.stop().await;
    let st = status(&farm).await;
    let folders: Vec<String> = farm
        .sandbox
        .nodes
        .iter()
        .map(|n| {
            farm.sandbox
                .dir
                .join(format!("{}.logs", n.name))
                .display()
                .to_string()
        })
        .collect();
    let mut args = vec!["logs", "--check-path", "/health.htm", "-o", "json"];
    args.extend(folders.iter().map(String::as_str));
    let out = farmctl(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let logs = json(&out);
    crate::common::schema::check("logs", &logs);
    assert_eq!(logs["malformed"], 0, "{logs:#}");

    // The same figures status gave, node by node.
    for n in st["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let l = logs["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("{name} in logs: {logs:#}"));
        let (a, b) = (&n["traffic"], &l["traffic"]);
        for key in [
            "requests",
            "status_5xx",
            "error_rate",
            "latency_ms",
            "errors",
        ] {
            assert_eq!(a[key], b[key], "{name} {key}: status {a:#} logs {b:#}");
        }
        assert_eq!(n["outlier"], l["outlier"], "{name}: {n:#} {l:#}");
    }
    let outliers: Vec<&str> = logs["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["outlier"] == true)
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(outliers, ["web02"], "{logs:#}");

    // The counts of a reading that shares nothing with farmctl.
    let py = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(INDEPENDENT)
        .args(&folders)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let independent: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    for n in logs["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        assert_eq!(
            n["traffic"]["requests"], independent[name]["requests"],
            "{name}"
        );
        assert_eq!(
            n["traffic"]["status_5xx"], independent[name]["status_5xx"],
            "{name}"
        );
    }

    // Zipped as copied off the servers, per minute, one site, and the
    // HTML page: the same totals.
    let zip = farm.sandbox.dir.join("web02.zip");
    let status = std::process::Command::new("zip")
        .current_dir(farm.sandbox.dir.join("web02.logs"))
        .args(["-qr", zip.to_str().unwrap(), "."])
        .status();
    if status.is_ok_and(|s| s.success()) {
        let html = farm.sandbox.dir.join("logs.html");
        let out = farmctl(&[
            "logs",
            zip.to_str().unwrap(),
            "--check-path",
            "/health.htm",
            "--site",
            "1",
            "--by",
            "1m",
            "--html",
            html.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let z = json(&out);
        assert_eq!(z["nodes"][0]["name"], "web02");
        assert_eq!(
            z["nodes"][0]["traffic"]["requests"],
            independent["web02"]["requests"]
        );
        let series: u64 = z["nodes"][0]["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(Some(series), independent["web02"]["requests"].as_u64());
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains("<svg") && page.contains("web02"), "{page}");
    }
    let _ = inv;
}

/// `--follow` reads a live folder as the agent does: from its end, with
/// the directives in force read back, every line appended counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_counts_the_lines_appended_to_a_live_folder() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let w3c = dir.path().join("web01").join("W3SVC1");
    std::fs::create_dir_all(&w3c).unwrap();
    let file = w3c.join(format!(
        "u_ex{}.log",
        jiff::Timestamp::now().strftime("%y%m%d")
    ));
    let line = |status: u16| {
        format!(
            "{} GET /shop {status} 0 12\r\n",
            jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S")
        )
    };
    let mut f = std::fs::File::create(&file).unwrap();
    write!(f, "#Software: Microsoft Internet Information Services 10.0\r\n#Fields: date time cs-method cs-uri-stem sc-status sc-substatus time-taken\r\n").unwrap();
    for _ in 0..500 {
        f.write_all(line(200).as_bytes()).unwrap();
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .args([
            "logs",
            "--follow",
            "--interval",
            "1s",
            "--count",
            "30",
            "-o",
            "jsonl",
        ])
        .arg(dir.path().join("web01"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    // The first print: what was there before is history.
    let first: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    crate::common::schema::check("logs", &first);
    assert_eq!(first["nodes"][0]["traffic"]["requests"], 0, "{first:#}");
    for k in 0..40 {
        f.write_all(line(if k % 10 == 0 { 503 } else { 200 }).as_bytes())
            .unwrap();
    }
    f.flush().unwrap();
    let seen = farm_proto::eventually!(
        std::time::Duration::from_secs(20),
        async {
            let v: serde_json::Value =
                serde_json::from_str(&lines.next_line().await.ok()??).ok()?;
            (v["nodes"][0]["traffic"]["requests"] == 40).then_some(v)
        },
        "the appended lines in a print"
    );
    assert_eq!(seen["nodes"][0]["name"], "web01");
    assert_eq!(seen["nodes"][0]["traffic"]["status_5xx"], 4, "{seen:#}");
    assert!(seen["time"].is_string());
    let _ = child.kill().await;
}
