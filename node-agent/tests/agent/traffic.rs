//! IIS's traffic records through the parsers: verbatim samples (sources
//! below) in CRLF and LF, with a BOM, with directives repeated mid-file,
//! reordered and custom fields, and lines that do not fit.
//!
//! Sources of the data lines: krasninja/querycat `docs/input/iisw3c.md`
//! (IIS 10 defaults); a public note on IIS 10 behind an AWS ALB (custom
//! X-FORWARDED-FOR); sergey-su/logjoint `ReadersIntegrationTests.cs` (IIS
//! 7.5, IPv6 zones; HTTP.sys error log); KB 820729 and the Perl module
//! Ocollector::IIS::Error2 (HTTP.sys reasons); iis-docs appcmd samples 65
//! and FREB sample 6 (`appcmd list requests`).
use farm_agent::traffic::httperr::HttpErrReader;
use farm_agent::traffic::requests;
use farm_agent::traffic::w3c::W3cReader;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/traffic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

#[test]
fn the_iis10_default_fields_in_lf_crlf_and_with_a_bom() {
    let text = fixture("w3c-iis10-default.log");
    for variant in [
        text.clone(),
        crlf(&text),
        format!("\u{feff}{}", crlf(&text)),
    ] {
        let mut r = W3cReader::default();
        let reqs = r.read(&variant);
        assert_eq!(reqs.len(), 2, "{:?}", r.stats);
        assert_eq!(r.stats.malformed, 0);
        assert!(r.stats.missing.is_empty());
        let q = &reqs[0];
        assert_eq!(q.at.to_string(), "2022-01-22T00:00:01Z");
        assert_eq!(q.method.as_deref(), Some("POST"));
        assert_eq!(
            q.uri_stem.as_deref(),
            Some("/member/TrafficSchoolLessonTrack.ashx")
        );
        assert_eq!(
            (q.status, q.substatus, q.win32_status),
            (200, Some(0), Some(0))
        );
        assert_eq!(q.time_taken_ms, Some(31));
        assert_eq!(q.client_ip.as_deref(), Some("172.69.69.207"));
        assert!(q
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("Mozilla/5.0+(Windows"));
    }
}

#[test]
fn a_custom_field_after_time_taken_and_the_iis75_fields_with_ipv6_zones() {
    let mut r = W3cReader::default();
    let reqs = r.read(&fixture("w3c-custom-field.log"));
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].status, reqs[0].time_taken_ms), (304, Some(7)));
    let mut r = W3cReader::default();
    let reqs = r.read(&fixture("w3c-iis75.log"));
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].client_ip.as_deref(),
        Some("fe80::5d3d:c591:3026:46ee%14")
    );
    assert_eq!(
        (reqs[1].status, reqs[1].win32_status, reqs[1].time_taken_ms),
        (404, Some(2), Some(4))
    );
}

#[test]
fn directives_repeated_mid_file_reset_the_columns_and_reordered_fields_are_read_by_name() {
    // A restart mid-file with the fields in another order (time-taken
    // first, no sc-substatus), then a line that does not fit.
    let text = format!(
        "{}#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n#Date: 2022-01-22 00:15:00\n#Fields: time-taken sc-status time date cs-uri-stem\n812 500 00:15:02 2022-01-22 /checkout\n9 200 00:15:03 2022-01-22\n",
        fixture("w3c-iis10-default.log")
    );
    let mut r = W3cReader::default();
    let reqs = r.read(&text);
    assert_eq!(reqs.len(), 3);
    let q = &reqs[2];
    assert_eq!(
        (q.status, q.time_taken_ms, q.substatus),
        (500, Some(812), None)
    );
    assert_eq!(q.at.to_string(), "2022-01-22T00:15:02Z");
    assert_eq!(q.uri_stem.as_deref(), Some("/checkout"));
    // The missing sc-substatus is said, not guessed; the short line is
    // malformed, never shifted into place.
    assert_eq!(r.stats.missing, ["sc-substatus"]);
    assert_eq!(r.stats.malformed, 1);
}

#[test]
fn a_file_read_in_pieces_keeps_its_columns() {
    // A tail reads what was appended since its last offset: the pieces
    // cut lines anywhere, the reader is fed whole lines only.
    let text = crlf(&fixture("w3c-iis10-default.log"));
    let mut r = W3cReader::default();
    let (a, b) = text.split_at(text.find("2022-01-22 00:00:01 10.142").unwrap());
    assert!(r.read(a).is_empty());
    assert_eq!(r.read(b).len(), 2);
}

#[test]
fn double_spaces_make_a_line_malformed() {
    let mut r = W3cReader::default();
    r.line("#Fields: date time cs-uri-stem sc-status time-taken sc-substatus");
    assert!(r.line("2022-01-22 00:00:01 /a  200 5 0").is_none());
    assert_eq!(r.stats.malformed, 1);
}

#[test]
fn httperr_reasons_queues_and_a_header_repeated_mid_file() {
    let mut r = HttpErrReader::default();
    let errs = r.read(&crlf(&fixture("httperr-logjoint.log")));
    assert_eq!(r.malformed, 0);
    let reasons: Vec<&str> = errs.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "Connection_Abandoned_By_ReqQueue",
            "Timer_ConnectionIdle",
            "NotFound"
        ]
    );
    assert_eq!(errs[2].status, Some(404));
    assert_eq!(errs[0].status, None);
    assert!(errs[1].benign() && !errs[0].benign());

    let mut r = HttpErrReader::default();
    let errs = r.read(&fixture("httperr-kb.log"));
    assert_eq!(r.malformed, 0, "{errs:?}");
    assert_eq!(errs.len(), 3);
    assert_eq!(errs[0].reason, "AppOffline");
    assert_eq!(errs[0].status, Some(503));
    assert_eq!(errs[0].queue.as_deref(), Some("DefaultAppPool"));
    assert_eq!(errs[0].site_id.as_deref(), Some("447434323"));
    assert_eq!(
        (errs[1].reason.as_str(), errs[1].status),
        ("ConnLimit", Some(503))
    );
    assert_eq!(errs[2].reason, "Timer_MinBytesPerSecond");
    assert_eq!(errs[2].at.to_string(), "2002-07-05T20:06:01Z");
}

#[test]
fn running_requests_in_both_separators_with_commas_in_the_url() {
    let mut text = fixture("appcmd-requests.txt");
    text.push_str(
        "REQUEST \"ab\" (url:GET /search?q=a,b,c, time:12 msec, client:10.0.0.9)\nsomething else\n",
    );
    let reqs = requests::parse(&text);
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].id, "fb0000008000000e");
    assert_eq!(
        (reqs[0].verb.as_str(), reqs[0].url.as_str()),
        ("GET", "/wait.aspx?time=10000")
    );
    assert_eq!(reqs[0].elapsed_ms, Some(4276));
    assert_eq!(reqs[0].stage, None);
    assert_eq!(reqs[1].id, "fa000000080000026");
    assert_eq!(reqs[1].stage.as_deref(), Some("ExecuteRequestHandler"));
    assert_eq!(reqs[1].module.as_deref(), Some("FastCgiModule"));
    assert_eq!(reqs[2].url, "/search?q=a,b,c");
    assert_eq!(reqs[2].client.as_deref(), Some("10.0.0.9"));
}

/// The simulator writes IIS's records, and the same readers read them: a
/// site's requests in its W3C log (the directives again after an IIS
/// stop), a stopped pool's 503 in the HTTP.sys error log only.
#[tokio::test]
async fn the_simulator_writes_what_the_readers_read() {
    use farm_agent::iis::Iis;
    use farm_agent::sim::{config, Simulator};
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let text = format!(
        "node: t\nlogs: {}\ntimings:\n  iis_stop: 10ms\n  iis_start: 10ms\nsites:\n  - name: shop\n    host: shop.example\n    app_pool: Shop\n  - name: off\n    host: off.example\n    app_pool: Off\napp_pools:\n  - name: Shop\n    startup: 10ms\n    warmup: 0ms\n  - name: Off\n    state: stopped\n",
        logs.display()
    );
    let sim = Simulator::start(config::parse(&text).unwrap())
        .await
        .unwrap();
    let port = |name: &str| sim.sites().iter().find(|s| s.name == name).unwrap().port;
    let get = |host: &'static str, port: u16, path: &'static str| async move {
        farm_proto::http::get(
            "127.0.0.1",
            port,
            Some(host),
            path,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap()
        .0
    };
    let shop = port("shop");
    assert_eq!(get("shop.example", shop, "/").await, 200);
    assert_eq!(get("shop.example", shop, "/slow?ms=60").await, 200);
    assert_eq!(get("shop.example", shop, "/health.htm").await, 200);
    assert_eq!(get("off.example", port("off"), "/").await, 503);
    // An IIS stop closes the files; the next request writes the
    // directives again, mid-file.
    sim.stop_iis(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    sim.start_iis().await.unwrap();
    let shop = port("shop");
    let mut served = false;
    for _ in 0..100 {
        if farm_proto::http::get(
            "127.0.0.1",
            shop,
            Some("shop.example"),
            "/",
            std::time::Duration::from_secs(2),
        )
        .await
        .is_ok_and(|(s, _)| s == 200)
        {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "the site answers again after the start");

    let w3c_dir = logs.join("W3SVC1");
    let file = std::fs::read_dir(&w3c_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("u_ex"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\r\n"), "CRLF as IIS writes it");
    assert_eq!(text.matches("#Fields:").count(), 2, "{text}");
    let mut r = W3cReader::default();
    let reqs = r.read(&text);
    assert_eq!(r.stats.malformed, 0, "{text}");
    assert!(r.stats.missing.is_empty());
    assert_eq!(reqs.len(), 4, "{text}");
    assert!(reqs.iter().all(|q| q.status == 200));
    let slow = reqs
        .iter()
        .find(|q| q.uri_stem.as_deref() == Some("/slow"))
        .unwrap();
    assert!(slow.time_taken_ms.unwrap() >= 60, "{slow:?}");
    assert_eq!(
        reqs.iter()
            .filter(|q| q.user_agent.as_deref() == Some("farmctl-probe"))
            .count(),
        4
    );
    // The stopped pool's 503 is HTTP.sys's, with its queue; not in W3SVC2.
    assert!(!logs.join("W3SVC2").exists());
    let mut e = HttpErrReader::default();
    let errs = e.read(&std::fs::read_to_string(logs.join("HTTPERR").join("httperr1.log")).unwrap());
    assert_eq!(e.malformed, 0);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        (
            errs[0].reason.as_str(),
            errs[0].status,
            errs[0].queue.as_deref()
        ),
        ("AppOffline", Some(503), Some("Off"))
    );
    sim.shutdown();
}

/// One request as a browser would send it (not farmctl's probe).
async fn user_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (test)\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The Traffic call of an agent started as the binary starts it, over
/// its simulator's logs: user requests, their latency, probes apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traffic_call_answers_from_the_logs() {
    use farm_agent::agent::{self, AgentSettings, Flags};
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.yaml");
    std::fs::write(
        &sim,
        format!(
            "node: t\nlogs: {}\nsites:\n  - name: shop\n    host: shop.example\n    app_pool: Shop\napp_pools:\n  - name: Shop\n    startup: 10ms\n    warmup: 0ms\n",
            dir.path().join("logs").display()
        ),
    )
    .unwrap();
    let flags = Flags {
        listen: Some("127.0.0.1:0".into()),
        sim: Some(sim),
        insecure: true,
        ..Flags::default()
    };
    let settings = AgentSettings::load(&flags).unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(agent::run(
        settings,
        move |r| {
            let _ = ready_tx.send(r.clone());
        },
        async {
            let _ = stopped.await;
        },
    ));
    let ready = ready_rx.await.unwrap();
    let port = ready.sites[0]["port"].as_u64().unwrap() as u16;
    for _ in 0..9 {
        assert!(user_get(port, "/").await.starts_with("HTTP/1.1 200"));
    }
    assert!(user_get(port, "/slow?ms=200")
        .await
        .starts_with("HTTP/1.1 200"));
    // farmctl's own probes are checks, not users.
    farm_proto::http::get(
        "127.0.0.1",
        port,
        Some("shop.example"),
        "/",
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut client = farm_proto::NodeAgentClient::connect(format!("http://{}", ready.agent))
        .await
        .unwrap();
    let reply = client
        .traffic(farm_proto::v1::TrafficRequest { last_s: 60 })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.unavailable.is_empty(), "{}", reply.unavailable);
    let shop = &reply.sites[0];
    assert_eq!((shop.site.as_str(), shop.pool.as_str()), ("shop", "Shop"));
    assert_eq!((shop.requests, shop.checks), (10, 1), "{shop:?}");
    assert_eq!(shop.classes[1], 10);
    assert!(shop.p99_ms.unwrap() >= 190.0, "{shop:?}");
    assert!(shop.p50_ms.unwrap() < 100.0, "{shop:?}");
    assert!(shop.missing_fields.is_empty());
    // The pool's gauges: the simulator's queue is 0.
    assert_eq!(shop.queue, Some(0), "{shop:?}");
    assert!(shop.gauges_age_s.is_some(), "{shop:?}");
    // Status gives the same figures when asked (`farmctl status`: one
    // call per node), and none when not.
    let status = client
        .status(farm_proto::v1::StatusRequest {
            traffic_last_s: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let with = status.traffic.expect("traffic asked with status");
    assert_eq!(with.sites[0].requests, 10, "{with:?}");
    let status = client
        .status(farm_proto::v1::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.traffic.is_none());
    let _ = stop.send(());
}
