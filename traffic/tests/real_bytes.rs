//! The log readers on the layouts real servers write: verbatim samples
//! (sources below) in CRLF and LF, with a BOM, with directives repeated
//! mid-file, reordered and custom fields; and samples written here in the
//! layouts public logs and bug reports show — two spaces between two
//! fields, no `date` field (the date in `#Date`), a header written hours
//! before the reader started. Each test asserts the figures, not only
//! that parsing returned.
//!
//! Sources of the verbatim data lines: krasninja/querycat
//! `docs/input/iisw3c.md` (IIS 10 defaults); a public note on IIS 10
//! behind an AWS ALB (custom X-FORWARDED-FOR); sergey-su/logjoint
//! `ReadersIntegrationTests.cs` (IIS 7.5, IPv6 zones; HTTP.sys error log);
//! KB 820729 and the Perl module Ocollector::IIS::Error2 (HTTP.sys
//! reasons).
use farm_traffic::httperr::HttpErrReader;
use farm_traffic::malformed::Reason;
use farm_traffic::summary::Summary;
use farm_traffic::w3c::W3cReader;
use farm_traffic::window::Checks;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// Requests, 5xx and the p95 of `text` through a summary.
fn figures(text: &str) -> (u64, u64, Option<f64>, u64) {
    let mut r = W3cReader::default();
    let mut s = Summary::default();
    for q in r.read(text) {
        s.add(&q, &Checks::default());
    }
    let f = s.figures();
    (
        f.requests,
        f.classes[4],
        f.p95_ms,
        r.stats.malformed.total(),
    )
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
        assert_eq!(r.stats.malformed.total(), 0);
        assert!(r.stats.missing.is_empty());
        let q = &reqs[0];
        assert_eq!(q.at().to_string(), "2022-01-22T00:00:01Z");
        assert_eq!(q.method, Some("POST"));
        assert_eq!(q.uri_stem, Some("/member/TrafficSchoolLessonTrack.ashx"));
        assert_eq!(
            (q.status, q.substatus, q.win32_status),
            (200, Some(0), Some(0))
        );
        assert_eq!(q.time_taken_ms, Some(31));
        assert_eq!(q.client_ip, Some("172.69.69.207"));
        assert!(q.user_agent.unwrap().starts_with("Mozilla/5.0+(Windows"));
    }
}

#[test]
fn a_custom_field_after_time_taken_and_the_iis75_fields_with_ipv6_zones() {
    let text = fixture("w3c-custom-field.log");
    let mut r = W3cReader::default();
    let reqs = r.read(&text);
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].status, reqs[0].time_taken_ms), (304, Some(7)));
    let text = fixture("w3c-iis75.log");
    let mut r = W3cReader::default();
    let reqs = r.read(&text);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].client_ip, Some("fe80::5d3d:c591:3026:46ee%14"));
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
    assert_eq!(q.at().to_string(), "2022-01-22T00:15:02Z");
    assert_eq!(q.uri_stem, Some("/checkout"));
    // The missing sc-substatus is said, not guessed; the short line is
    // malformed, never shifted into place.
    assert_eq!(r.stats.missing, ["sc-substatus"]);
    assert_eq!(r.stats.malformed.count(Reason::FieldCount), 1);
}

#[test]
fn a_file_read_in_pieces_keeps_its_columns() {
    let text = crlf(&fixture("w3c-iis10-default.log"));
    let mut r = W3cReader::default();
    let (a, b) = text.split_at(text.find("2022-01-22 00:00:01 10.142").unwrap());
    assert!(r.read(a).is_empty());
    assert_eq!(r.read(b).len(), 2);
}

/// The layout of real IIS 10 logs from a server whose authentication
/// module logs a user name after an empty value: two spaces between
/// `s-port` and `cs-username` on some lines. Written here in that layout;
/// the file's only 500 is on such a line.
const TWO_SPACES: &str = "#Software: Microsoft Internet Information Services 10.0
#Version: 1.0
#Date: 2026-12-07 00:00:01
#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken
2026-12-07 00:01:24 ::1 POST /powershell clientApplication=Monitor;PSVersion=5.1 444  corp\\svc-mon ::1 Microsoft+WinRM+Client - 200 0 0 15
2026-12-07 00:01:24 ::1 POST /powershell clientApplication=Monitor;PSVersion=5.1&sessionID=Version_15.1_(Build_2241.0)=ab+cd/ef= 445  corp\\svc-mon ::1 Microsoft+WinRM+Client - 500 0 0 156
2026-12-07 00:01:25 10.10.10.10 POST /powershell clientApplication=Monitor 445  corp/svc-mon 10.10.10.10 Microsoft+WinRM+Client - 200 0 0 0
2026-12-07 00:18:46 ::1 GET /api/v1.0/$metadata &request_id=54ab-8798 444 - ::1 Odata_PC_Probe/Local - 401 0 0 0
2026-12-07 18:42:09 ::1 POST /Microsoft-Server-ActiveSync/Proxy Cmd=Settings&User=svc@corp 444 - ::1 TestActiveSyncConnectivity - 401 1 2148074254 4
2026-12-07 18:42:11 ::1 RPC_IN_DATA /rpc/rpcproxy.dll EX04.corp:6001&RequestId=675 81 CORP\\EX04$ ::1 MSRPC - 200 0 64 886786
2026-12-07 18:42:37 fe80::1ff:fe23:4567:890a%3 POST /mapi/emdata/ useMailboxOfAuthenticatedUser=true 444  svc@corp ::1 MapiHttpClient - 200 0 0 4
";

#[test]
fn lines_with_two_spaces_between_two_fields_are_requests() {
    for text in [TWO_SPACES.to_string(), crlf(TWO_SPACES)] {
        let mut r = W3cReader::default();
        let reqs = r.read(&text);
        assert_eq!(r.stats.malformed.total(), 0, "{:?}", r.stats.malformed);
        assert_eq!(reqs.len(), 7);
        let five: Vec<_> = reqs.iter().filter(|q| q.status == 500).collect();
        assert_eq!(five.len(), 1, "the file's only 500 is read");
        assert_eq!(five[0].time_taken_ms, Some(156));
        assert_eq!(five[0].client_ip, Some("::1"));
        // A win32 status past i32 (0x8009030E) reads as a u32.
        assert_eq!(reqs[4].win32_status, Some(2_148_074_254));
        assert_eq!(reqs[5].time_taken_ms, Some(886_786));
    }
    let (requests, errors, p95, bad) = figures(TWO_SPACES);
    assert_eq!((requests, errors, bad), (7, 1, 0));
    // p95 of {0,0,4,4,15,156,886786}: the 7th smallest.
    let p95 = p95.unwrap();
    assert!((p95 - 886_786.0).abs() / 886_786.0 < farm_traffic::QUANTILE_ERROR);
}

/// IIS 6 and a custom field selection without `Date`: the date is the
/// `#Date` directive's, and the lines after midnight are the next day's.
const NO_DATE: &str = "#Software: Microsoft Internet Information Services 6.0
#Version: 1.0
#Date: 2026-12-06 23:59:50
#Fields: time c-ip cs-method cs-uri-stem sc-status sc-substatus sc-win32-status time-taken 
23:59:50 10.0.0.7 GET /shop 200 0 0 12
23:59:59 10.0.0.7 GET /cart 503 2 0 40
00:00:03 10.0.0.8 GET /shop 200 0 0 9
00:00:02 10.0.0.8 GET /shop 200 0 0 11
";

#[test]
fn a_log_without_a_date_field_is_dated_by_its_date_directive() {
    let mut r = W3cReader::default();
    let reqs = r.read(NO_DATE);
    assert_eq!(r.stats.malformed.total(), 0);
    assert!(r.stats.missing.is_empty(), "{:?}", r.stats.missing);
    let at: Vec<String> = reqs.iter().map(|q| q.at().to_string()).collect();
    assert_eq!(
        at,
        [
            "2026-12-06T23:59:50Z",
            "2026-12-06T23:59:59Z",
            "2026-12-07T00:00:03Z",
            // A second out of order stays on its day.
            "2026-12-07T00:00:02Z"
        ]
    );
    assert_eq!((reqs[1].status, reqs[1].substatus), (503, Some(2)));
    // Without the directive: nothing invented, the reason said, and only
    // what is missing is named.
    let mut r = W3cReader::default();
    let text = NO_DATE.replace("#Date: 2026-12-06 23:59:50\n", "");
    assert!(r.read(&text).is_empty());
    assert_eq!(r.stats.missing, ["date"]);
    assert_eq!(r.stats.malformed.count(Reason::NoDate), 4);
}

#[test]
fn httperr_reasons_queues_and_a_header_repeated_mid_file() {
    let text = crlf(&fixture("httperr-logjoint.log"));
    let mut r = HttpErrReader::default();
    let errs = r.read(&text);
    assert_eq!(r.malformed.total(), 0);
    let reasons: Vec<&str> = errs.iter().map(|e| e.reason).collect();
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

    let text = fixture("httperr-kb.log");
    let mut r = HttpErrReader::default();
    let errs = r.read(&text);
    assert_eq!(r.malformed.total(), 0, "{errs:?}");
    assert_eq!(errs.len(), 3);
    assert_eq!(errs[0].reason, "AppOffline");
    assert_eq!(errs[0].status, Some(503));
    assert_eq!(errs[0].queue, Some("DefaultAppPool"));
    assert_eq!(errs[0].site_id, Some("447434323"));
    assert_eq!((errs[1].reason, errs[1].status), ("ConnLimit", Some(503)));
    assert_eq!(errs[2].reason, "Timer_MinBytesPerSecond");
    assert_eq!(errs[2].at().to_string(), "2002-07-05T20:06:01Z");
    // Two spaces between fields here too.
    let mut r = HttpErrReader::default();
    let spaced = text.replace(" 503 447434323 ", " 503  447434323 ");
    let errs = r.read(&spaced);
    assert_eq!((errs.len(), r.malformed.total()), (3, 0));
}

/// A log whose header was written hours before the reader started: a
/// tail started at the end of it reads the next lines with its columns.
#[test]
fn a_tail_started_hours_into_a_file_counts_every_new_line() {
    use farm_traffic::names::Family;
    use farm_traffic::tail::Tail;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u_ex261207.log");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(f, "{}", crlf(&fixture("w3c-iis10-default.log"))).unwrap();
    let line = "2026-12-07 09:00:00 10.142.0.2 GET /shop - 443 - 172.69.69.207 Mozilla/5.0 - 200 0 0 31\r\n";
    for _ in 0..50_000 {
        f.write_all(line.as_bytes()).unwrap();
    }
    let mut tail = Tail::new(dir.path(), Family::W3c, None);
    let mut reader = W3cReader::default();
    let mut summary = Summary::default();
    let poll = |tail: &mut Tail, reader: &mut W3cReader, summary: &mut Summary| {
        tail.poll(&mut |l| {
            if let Some(q) = reader.line(l) {
                summary.add(&q, &Checks::default());
            }
        })
    };
    poll(&mut tail, &mut reader, &mut summary);
    for i in 0..100 {
        let status = if i % 10 == 0 { 500 } else { 200 };
        write!(
            f,
            "2026-12-07 10:00:{:02} 10.142.0.2 GET /shop - 443 - 172.69.69.207 Mozilla/5.0 - {status} 0 0 {}\r\n",
            i % 60,
            20 + i
        )
        .unwrap();
    }
    f.flush().unwrap();
    poll(&mut tail, &mut reader, &mut summary);
    let fig = summary.figures();
    assert_eq!(
        (fig.requests, fig.classes[4]),
        (100, 10),
        "{:?}",
        reader.stats
    );
    assert_eq!(reader.stats.malformed.total(), 0);
    assert_eq!(summary.max_ms, Some(119));
}
