//! The Windows command backend against a runner that plays IIS: the exact
//! command sequence and the reported outcome of every procedure.
use std::sync::Arc;
use std::time::Duration;

use farm_agent::iis::{Iis, IisError, PoolState, ServiceState};
use farm_agent::iiscmd::config::{Timeouts, Tools};
use farm_agent::iiscmd::fake::{FakeFaults, FakeIis};
use farm_agent::iiscmd::CommandBackend;
use farm_agent::ops::{self, OpResult, OpsConfig, ProgressSink};

fn tools() -> Tools {
    Tools {
        appcmd: r"C:\Windows\system32\inetsrv\appcmd.exe".into(),
        iisreset: r"C:\Windows\system32\iisreset.exe".into(),
        sc: r"C:\Windows\system32\sc.exe".into(),
        taskkill: r"C:\Windows\system32\taskkill.exe".into(),
        typeperf: r"C:\Windows\system32\typeperf.exe".into(),
        wevtutil: r"C:\Windows\system32\wevtutil.exe".into(),
        netsh: r"C:\Windows\system32\netsh.exe".into(),
        powershell: r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe".into(),
        reg: r"C:\Windows\system32\reg.exe".into(),
        shutdown: r"C:\Windows\system32\shutdown.exe".into(),
    }
}

fn backend(fake: &Arc<FakeIis>) -> CommandBackend {
    CommandBackend::new(fake.clone(), tools(), Timeouts::default(), Vec::new())
}

fn cfg() -> OpsConfig {
    OpsConfig {
        verify_timeout: Duration::from_millis(200),
        start_attempts: 3,
        start_retry_delay: Duration::from_millis(1),
        poll_interval: Duration::from_millis(1),
        autostart_grace: Duration::from_millis(5),
        stop_timeout: Duration::from_secs(60),
    }
}

/// A fake IIS with a `Shop` pool and these faults.
fn fake_iis(faults: FakeFaults) -> Arc<FakeIis> {
    Arc::new(FakeIis::new(&["Shop"], faults))
}

/// The safe reset on `fake`, with `iisreset /stop /timeout:<stop_s>`.
async fn reset_on(fake: &Arc<FakeIis>, stop_s: u64) -> OpResult {
    ops::reset(
        &backend(fake),
        Duration::from_secs(stop_s),
        &cfg(),
        &ProgressSink::discard(),
    )
    .await
}

const STATUS: [&str; 7] = [
    "sc query W3SVC",
    "sc query WAS",
    "appcmd list apppool",
    "appcmd list wp",
    "appcmd list site",
    "appcmd list app",
    "appcmd list vdir",
];
const STATUS_IIS_DOWN: [&str; 2] = ["sc query W3SVC", "sc query WAS"];
/// With a pool stopped, status asks WAS why (read-only).
const WAS_EVENTS: [&str; 1] =
    ["wevtutil qe System /q:*[System[Provider[@Name='Microsoft-Windows-WAS']]] /c:50 /rd:true /f:text"];

/// Builds an expected sequence from pieces.
fn seq(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter().map(|s| s.to_string()))
        .collect()
}

#[tokio::test]
async fn a_normal_recycle() {
    let fake = Arc::new(FakeIis::new(&["Shop", "Api"], FakeFaults::default()));
    let r = ops::recycle(
        &backend(&fake),
        &["Shop".into()],
        false,
        &cfg(),
        &ProgressSink::discard(),
    )
    .await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &["appcmd recycle apppool /apppool.name:Shop"],
            &STATUS
        ])
    );
    assert_eq!(r.pools.len(), 1);
    assert_ne!(r.pools[0].pids_before, r.pools[0].pids_after);
    assert_eq!(r.pools[0].state_after, PoolState::Started);
}

#[tokio::test]
async fn recycling_every_pool_serving_a_site_by_default() {
    let fake = Arc::new(FakeIis::new(&["Shop", "Api"], FakeFaults::default()));
    let r = ops::recycle(
        &backend(&fake),
        &[],
        false,
        &cfg(),
        &ProgressSink::discard(),
    )
    .await;
    assert!(r.success, "{r:?}");
    let recycled: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|c| c.contains("recycle"))
        .collect();
    assert_eq!(
        recycled,
        [
            "appcmd recycle apppool /apppool.name:Shop",
            "appcmd recycle apppool /apppool.name:Api"
        ]
    );
}

#[tokio::test]
async fn a_pool_with_no_worker_is_reported_not_failed() {
    let fake =
        Arc::new(FakeIis::new(&["Shop"], FakeFaults::default()).with_idle_pool("Idle", true));
    let r = ops::recycle(
        &backend(&fake),
        &["Idle".into()],
        false,
        &cfg(),
        &ProgressSink::discard(),
    )
    .await;
    assert!(r.success, "{r:?}");
    assert!(r.pools[0].had_no_worker);
    assert!(r.pools[0].pids_after.is_empty());
}

#[tokio::test]
async fn a_stopped_pool_fails_before_anything_is_touched() {
    let fake =
        Arc::new(FakeIis::new(&["Shop"], FakeFaults::default()).with_idle_pool("Off", false));
    let r = ops::recycle(
        &backend(&fake),
        &["Shop".into(), "Off".into()],
        false,
        &cfg(),
        &ProgressSink::discard(),
    )
    .await;
    assert!(!r.success);
    assert_eq!(r.failed_step.map(|s| s.as_str()), Some("recycle"));
    assert!(
        r.error.as_deref().unwrap().contains("Off are stopped"),
        "{r:?}"
    );
    assert_eq!(
        fake.log(),
        seq(&[&STATUS, &WAS_EVENTS]),
        "something was run after the check"
    );

    // Asked to, it starts the pool instead.
    fake.clear_log();
    let r = ops::recycle(
        &backend(&fake),
        &["Off".into()],
        true,
        &cfg(),
        &ProgressSink::discard(),
    )
    .await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &WAS_EVENTS,
            &["appcmd start apppool /apppool.name:Off"],
            &STATUS
        ])
    );
}

#[tokio::test]
async fn a_normal_reset() {
    let fake = fake_iis(FakeFaults::default());
    let r = reset_on(&fake, 60).await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &["iisreset /stop /timeout:60", "iisreset /start"],
            &STATUS,
            &STATUS
        ])
    );
    assert!(r.services.iter().all(|s| s.state == ServiceState::Running));
    assert_ne!(r.pools[0].pids_before, r.pools[0].pids_after);
}

#[tokio::test]
async fn a_reset_whose_stop_times_out_is_forced() {
    let fake = fake_iis(FakeFaults {
        stop_hangs: true,
        ..Default::default()
    });
    let r = reset_on(&fake, 30).await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &[
                "iisreset /stop /timeout:30",
                "taskkill /F /FI SERVICES eq was"
            ],
            &STATUS_IIS_DOWN,
            &["iisreset /start"],
            &STATUS,
            &STATUS,
        ])
    );
}

#[tokio::test]
async fn a_reset_whose_start_fails_twice_then_succeeds() {
    let fake = fake_iis(FakeFaults {
        start_fails: 2,
        ..Default::default()
    });
    let r = reset_on(&fake, 60).await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &[
                "iisreset /stop /timeout:60",
                "iisreset /start",
                "iisreset /start",
                "iisreset /start"
            ],
            &STATUS,
            &STATUS,
        ])
    );
}

#[tokio::test]
async fn a_reset_whose_start_never_succeeds_names_the_step_and_the_exit_code() {
    let fake = fake_iis(FakeFaults {
        start_fails: 99,
        ..Default::default()
    });
    let r = reset_on(&fake, 60).await;
    assert!(!r.success);
    assert_eq!(r.failed_step.map(|s| s.as_str()), Some("start"));
    let err = r.error.unwrap();
    assert!(
        err.contains("STOPPED")
            && err.contains("exit code 1")
            && err.contains("Restart attempt failed"),
        "{err}"
    );
    assert!(
        r.services.iter().all(|s| s.state == ServiceState::Stopped),
        "{:?}",
        r.services
    );
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &[
                "iisreset /stop /timeout:60",
                "iisreset /start",
                "iisreset /start",
                "iisreset /start"
            ],
            &STATUS_IIS_DOWN,
        ])
    );
}

#[tokio::test]
async fn access_denied_fails_at_the_forced_stop() {
    let fake = fake_iis(FakeFaults {
        access_denied: true,
        ..Default::default()
    });
    let r = reset_on(&fake, 60).await;
    assert!(!r.success);
    assert_eq!(r.failed_step.map(|s| s.as_str()), Some("force-stop"));
    assert!(
        r.error.as_deref().unwrap().contains("Access is denied"),
        "{r:?}"
    );
    assert_eq!(
        fake.log(),
        seq(&[
            &STATUS,
            &[
                "iisreset /stop /timeout:60",
                "taskkill /F /FI SERVICES eq was"
            ],
            &STATUS
        ])
    );
}

#[tokio::test]
async fn an_invalid_pool_name_is_rejected_before_any_command_runs() {
    let fake = fake_iis(FakeFaults::default());
    let b = backend(&fake);
    for bad in ["a\"b", "x & del", "a|b", "a\nb", "..\\x", ""] {
        assert!(
            matches!(b.recycle_pool(bad).await, Err(IisError::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(b.start_pool(bad).await, Err(IisError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(fake.log().is_empty(), "{:?}", fake.log());
}

#[tokio::test]
async fn an_unknown_pool_is_named() {
    let fake = fake_iis(FakeFaults::default());
    assert_eq!(
        backend(&fake).recycle_pool("Nope").await,
        Err(IisError::NoSuchPool("Nope".into()))
    );
}

#[tokio::test]
async fn in_flight_falls_back_to_the_counter_then_to_unknown() {
    let fake = fake_iis(FakeFaults::default());
    assert_eq!(backend(&fake).in_flight().await.unwrap(), Some(0));
    let fake = fake_iis(FakeFaults {
        no_request_monitor: true,
        ..Default::default()
    });
    assert_eq!(backend(&fake).in_flight().await.unwrap(), Some(2));
    assert_eq!(
        fake.log(),
        [
            "appcmd list requests",
            r"reg query HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Perflib\009 /v Counter",
            r"reg query HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Perflib\CurrentLanguage /v Counter",
            r"typeperf \W3SVC_W3WP(_Total)\Active Requests -sc 1"
        ]
    );
    // Neither works: unknown, not zero.
    let mut t = tools();
    t.typeperf = "missing-typeperf".into();
    let b = CommandBackend::new(fake.clone(), t, Timeouts::default(), Vec::new());
    assert_eq!(b.in_flight().await.unwrap(), None);
}

#[tokio::test]
async fn status_reads_pools_workers_and_sites() {
    let fake = Arc::new(FakeIis::new(&["Shop", "Api"], FakeFaults::default()));
    let s = backend(&fake).status().await.unwrap();
    assert!(s.iis_running());
    assert_eq!(s.pool("Shop").unwrap().workers.len(), 1);
    assert_eq!(s.sites[0].bindings, ["http/*:80:", "https/*:443:"]);
    assert_eq!(s.sites[0].pool, "Shop");
}

#[tokio::test]
async fn drain_renames_the_health_files() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = ["a.htm", "b.htm"]
        .iter()
        .map(|f| dir.path().join(f))
        .collect();
    for f in &files {
        std::fs::write(f, "OK").unwrap();
    }
    let fake = fake_iis(FakeFaults::default());
    let b = CommandBackend::new(fake, tools(), Timeouts::default(), files.clone());
    assert!(b.health_file_present().await.unwrap());
    b.set_health_file(false).await.unwrap();
    assert!(!files[0].exists() && dir.path().join("a.htm.drained").exists());
    assert!(!b.health_file_present().await.unwrap());
    b.set_health_file(false).await.unwrap(); // again: no change, no error
    b.set_health_file(true).await.unwrap();
    assert!(files.iter().all(|f| f.exists()));
}

#[tokio::test]
async fn a_pool_that_was_does_not_bring_back_is_started_by_the_agent() {
    let fake = fake_iis(FakeFaults {
        autostart_off: true,
        ..Default::default()
    });
    let r = reset_on(&fake, 60).await;
    assert!(r.success, "{r:?}");
    let log = fake.log();
    let start = log
        .iter()
        .position(|c| c == "appcmd start apppool /apppool.name:Shop")
        .expect("started by the agent");
    assert!(log[..start].iter().any(|c| c == "iisreset /start"));
    assert_eq!(&log[start + 1..], &STATUS, "verified after starting it");
    assert_eq!(r.pools[0].state_after, PoolState::Started);
}

#[tokio::test]
async fn a_site_is_pointed_at_another_folder_with_the_exact_command() {
    let fake = Arc::new(FakeIis::new(&["Shop"], FakeFaults::default()));
    let b = backend(&fake);
    fake.clear_log();
    let before = b.site_path("ShopSite").await.unwrap();
    // %SystemDrive% is expanded from the agent's environment (unknown on
    // Linux, so it stays as written there).
    assert!(before.ends_with(r"\inetpub\Shop"), "{before}");
    b.set_site_path("ShopSite", r"D:\releases\shop\2.0.0")
        .await
        .unwrap();
    assert_eq!(
        fake.log(),
        [
            "appcmd list vdir /app.name:ShopSite/",
            r"appcmd set vdir ShopSite/ /physicalPath:D:\releases\shop\2.0.0",
        ]
    );
    assert_eq!(
        b.site_path("ShopSite").await.unwrap(),
        r"D:\releases\shop\2.0.0"
    );
    assert_eq!(
        b.status().await.unwrap().sites[0].physical_path,
        r"D:\releases\shop\2.0.0"
    );
    // Unknown sites and hostile names.
    assert!(matches!(
        b.set_site_path("NoSuchSite", r"D:\x").await,
        Err(IisError::NoSuchSite(_))
    ));
    fake.clear_log();
    assert!(b.set_site_path("a\"b", r"D:\x").await.is_err());
    assert!(b.set_site_path("ShopSite", "D:\\x\"&calc").await.is_err());
    assert!(fake.log().is_empty(), "a hostile name ran a command");
}

#[tokio::test]
async fn a_pools_diagnostics_come_from_appcmd_typeperf_and_wevtutil() {
    let fake = Arc::new(FakeIis::new(&["Shop", "Api"], FakeFaults::default()));
    let d = backend(&fake).diagnose("Shop", 1000).await.unwrap();
    assert_eq!(d.notes, Vec::<String>::new());
    // The requests, from the reference's verbatim lines.
    assert_eq!(d.requests.len(), 2);
    assert_eq!(d.requests[0].url, "/wait.aspx?time=10000");
    assert_eq!(d.requests[0].elapsed_ms, Some(4276));
    assert_eq!(d.requests[1].module.as_deref(), Some("FastCgiModule"));
    // The counters: queue, rejected, state, and Shop's one worker found
    // among the processes by its PID.
    assert_eq!((d.queue, d.rejected), (Some(7), Some(2)));
    assert_eq!(d.state.as_deref(), Some("Running"));
    assert_eq!(d.workers.len(), 1, "{:?}", d.workers);
    let w = &d.workers[0];
    assert_eq!(w.cpu_percent, Some(12.5));
    assert_eq!(w.private_bytes, Some(157_286_400));
    assert_eq!(w.active_requests, Some(3));
    // WAS's events about the pool, newest first: rapid-fail protection.
    assert_eq!(
        d.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [5002, 5009]
    );
    assert!(d.events[0].rapid_fail());
    // Argv only, each tool once.
    let log = fake.log();
    assert!(
        log.contains(&"appcmd list requests /apppool.name:Shop /elapsed:1000".to_string()),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with(r"typeperf \HTTP Service Request Queues(Shop)\CurrentQueueSize")), "{log:?}");
    assert!(
        log.iter().any(|l| l.starts_with(
            "wevtutil qe System /q:*[System[Provider[@Name='Microsoft-Windows-WAS']]]"
        )),
        "{log:?}"
    );
    // A name that is not a pool name is refused before any tool runs.
    assert!(backend(&fake).diagnose("../x", 0).await.is_err());
}

#[tokio::test]
async fn the_sites_logs_are_found_in_iis_config_and_flushed_before_a_read() {
    let fake = Arc::new(FakeIis::new(&["Shop", "Api"], FakeFaults::default()));
    let backend = CommandBackend::new(
        fake.clone(),
        tools(),
        Timeouts::default(),
        vec![r"C:\inetpub\health\health.htm".into()],
    )
    .discover_logs()
    .await;
    let logs = backend.traffic_logs().expect("logs found");
    // ApiSite logs to ETW only: left out.
    assert_eq!(logs.sites.len(), 1, "{logs:?}");
    let shop = &logs.sites[0];
    assert_eq!(
        (shop.site.as_str(), shop.id, shop.pool.as_str()),
        ("ShopSite", 1, "Shop")
    );
    let dir = shop.w3c_dir.to_string_lossy().into_owned();
    assert!(
        dir.ends_with("W3SVC1") && dir.contains(r"inetpub\logs\LogFiles"),
        "{dir}"
    );
    assert!(
        !dir.contains("%SystemDrive%") || std::env::var("SystemDrive").is_err(),
        "{dir}"
    );
    assert!(logs
        .httperr_dir
        .unwrap()
        .to_string_lossy()
        .ends_with("HTTPERR"));
    assert_eq!(logs.check_paths, ["/health.htm"]);
    backend.flush_logs().await;
    assert!(
        fake.log()
            .contains(&"netsh http flush logbuffer".to_string()),
        "{:?}",
        fake.log()
    );
}

#[tokio::test]
async fn a_pool_stopped_by_rapid_fail_protection_is_named_in_status() {
    // WAS's newest event about `Off` is 5002: it disabled the pool.
    let fake = Arc::new(FakeIis::new(&[], FakeFaults::default()).with_idle_pool("Off", false));
    let st = backend(&fake).status().await.unwrap();
    let off = st.pools.iter().find(|p| p.name == "Off").unwrap();
    assert_eq!(off.state, PoolState::Stopped);
    assert!(
        off.stopped_by
            .as_deref()
            .is_some_and(|r| r.starts_with("rapid-fail protection (WAS event 5002")),
        "{off:?}"
    );
    // A running farm asks WAS nothing.
    let fake = fake_iis(FakeFaults::default());
    let st = backend(&fake).status().await.unwrap();
    assert!(st.pools.iter().all(|p| p.stopped_by.is_none()));
    assert!(
        !fake.log().iter().any(|l| l.starts_with("wevtutil")),
        "{:?}",
        fake.log()
    );
}

#[tokio::test]
async fn every_pools_gauges_come_from_one_typeperf_sample() {
    let fake = Arc::new(FakeIis::new(&["Shop", "Api"], FakeFaults::default()));
    let gauges = backend(&fake).pool_gauges().await.unwrap();
    let names: Vec<&str> = gauges.iter().map(|g| g.pool.as_str()).collect();
    assert_eq!(names, ["Shop", "Api"]);
    for g in &gauges {
        // Each pool's one worker, found among the processes by its PID;
        // the unrelated process (svchost) counted for none.
        assert_eq!((g.queue, g.rejected), (Some(7), Some(2)), "{g:?}");
        assert_eq!(g.active_requests, Some(3), "{g:?}");
        assert_eq!(g.cpu_percent, Some(12.5), "{g:?}");
        assert_eq!(g.private_bytes, Some(157_286_400), "{g:?}");
    }
    // One call, argv only, every instance asked for (after the counter
    // names were read from the registry, once).
    let log: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|l| !l.starts_with("reg query"))
        .collect();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].starts_with(
            r"typeperf \HTTP Service Request Queues(*)\CurrentQueueSize \HTTP Service Request Queues(*)\RejectedRequests"
        ),
        "{log:?}"
    );
    assert!(log[0].ends_with("-sc 1"), "{log:?}");
}

/// An Italian Windows: appcmd's messages are translated and the counters
/// have Italian names. A pool that does not exist is still known by its
/// code (1168), its message kept as printed; the counters are asked by
/// their Italian names (found through the registry's counter index) and
/// read back as the English ones.
#[tokio::test]
async fn a_localized_windows_is_read_by_codes_and_counter_indexes() {
    let faults = FakeFaults {
        localized: true,
        ..Default::default()
    };
    let fake = Arc::new(FakeIis::new(&["Shop"], faults));
    let b = backend(&fake);
    assert_eq!(
        b.recycle_pool("Nope").await,
        Err(IisError::NoSuchPool("Nope".into()))
    );
    assert_eq!(
        b.set_site_path("nosite", r"C:\sites\x").await,
        Err(IisError::NoSuchSite("nosite".into()))
    );
    let gauges = b.pool_gauges().await.unwrap();
    assert_eq!(gauges.len(), 1);
    assert_eq!(gauges[0].cpu_percent, Some(12.5), "{gauges:?}");
    assert_eq!(gauges[0].private_bytes, Some(157_286_400), "{gauges:?}");
    let log = fake.log();
    let typeperf = log.iter().find(|l| l.starts_with("typeperf")).unwrap();
    assert!(
        typeperf.contains(r"\Processo(*)\% Tempo processo"),
        "{typeperf}"
    );
    assert!(!typeperf.contains(r"\Process(*)"), "{typeperf}");
    assert_eq!(log.iter().filter(|l| l.starts_with("reg query")).count(), 2);
    // Read once: a second sample asks no more.
    b.pool_gauges().await.unwrap();
    assert_eq!(
        fake.log()
            .iter()
            .filter(|l| l.starts_with("reg query"))
            .count(),
        2
    );
    // The diagnostics read the workers too.
    let d = b.diagnose("Shop", 500).await.unwrap();
    assert_eq!(d.workers[0].cpu_percent, Some(12.5), "{d:?}");
}
