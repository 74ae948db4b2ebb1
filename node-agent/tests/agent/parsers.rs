//! The IIS tools' outputs, verbatim (fixtures/), through the parsers.
use farm_agent::iis::{PoolState, ServiceState};
use farm_agent::iiscmd::parse::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn app_pools_with_states_and_an_empty_managed_version() {
    let pools: Vec<_> = objects(&fixture("list_apppool.txt"), "APPPOOL").collect();
    assert_eq!(pools.len(), 3);
    assert_eq!(pools[1].id, "Classic .NET AppPool");
    assert_eq!(
        pool_state(pools[0].attr("state").unwrap()),
        PoolState::Started
    );
    assert_eq!(pools[2].attr("MgdVersion"), Some(""));
    assert_eq!(
        pool_state(pools[2].attr("state").unwrap()),
        PoolState::Stopped
    );
}

#[test]
fn worker_processes_in_both_forms_with_odd_line_ends() {
    let text = fixture("list_wp.txt");
    assert!(text.contains("\r\r\n"));
    let wps: Vec<_> = objects(&text, "WP").collect();
    assert_eq!(wps.len(), 2);
    assert_eq!(wps[0].id, "3577");
    assert_eq!(wps[0].attr("apppool"), Some("DefaultAppPool"));
    assert_eq!(wps[1].attr("applicationPool"), Some("Classic .NET AppPool"));
}

#[test]
fn sites_with_several_bindings() {
    let sites: Vec<_> = objects(&fixture("list_site.txt"), "SITE").collect();
    assert_eq!(sites[0].attr("bindings"), Some("http/*:80:"));
    assert_eq!(
        sites[1].attr("bindings"),
        Some("HTTP/*:80:shop.example.com,https/*:443:shop.example.com")
    );
    assert_eq!(sites[1].attr("state"), Some("Started"));
}

#[test]
fn apps_and_requests() {
    let apps: Vec<_> = objects(&fixture("list_app.txt"), "APP").collect();
    assert_eq!(apps[1].id, "Shop/");
    assert_eq!(
        apps[1].attr("applicationPool"),
        Some("Classic .NET AppPool")
    );
    let reqs: Vec<_> = objects(&fixture("list_requests.txt"), "REQUEST").collect();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].attr("url"), Some("GET /wait.aspx?time=10000"));
    assert_eq!(reqs[1].attr("url"), Some("GET /a?x=1,2"));
    assert_eq!(reqs[1].attr("client"), Some("10.0.0.5"));
}

#[test]
fn errors_printed_on_stdout() {
    let e = appcmd_error(&fixture("error_no_pool.txt")).unwrap();
    assert_eq!(e.hresult, None);
    assert_eq!(
        e.message,
        "Cannot find APPPOOL object with identifier \"X\"."
    );
    let e = appcmd_error(&fixture("error_invalid_object.txt")).unwrap();
    assert_eq!(e.hresult.as_deref(), Some("800710d8"));
    assert_eq!(
        e.message,
        "Command execution failed. The object identifier does not represent a valid object."
    );
    let e = appcmd_error(&fixture("list_requests_not_implemented.txt")).unwrap();
    assert_eq!(e.hresult.as_deref(), Some("80004001"));
    assert!(e.message.ends_with("Not implemented"));
    assert_eq!(appcmd_error(&fixture("recycle_ok.txt")), None);
    assert_eq!(objects(&fixture("error_no_pool.txt"), "APPPOOL").count(), 0);
}

#[test]
fn iisreset_success_and_failures() {
    for ok in [
        "iisreset_stop_ok.txt",
        "iisreset_start_ok.txt",
        "iisreset_restart_ok.txt",
        "iisreset_status.txt",
    ] {
        assert!(!iisreset_failed(&fixture(ok)), "{ok}");
    }
    for bad in [
        "iisreset_stop_failed.txt",
        "iisreset_restart_failed.txt",
        "iisreset_access_denied.txt",
    ] {
        assert!(iisreset_failed(&fixture(bad)), "{bad}");
    }
}

#[test]
fn service_state_is_read_by_number_not_by_localized_text() {
    assert_eq!(
        sc_state(&fixture("sc_query_running.txt")),
        Some(ServiceState::Running)
    );
    assert_eq!(
        sc_state(&fixture("sc_query_stopped_de.txt")),
        Some(ServiceState::Stopped)
    );
    assert_eq!(
        sc_state(&fixture("sc_query_missing.txt")),
        Some(ServiceState::NotInstalled)
    );
    assert_eq!(sc_state("garbage"), None);
}

#[test]
fn typeperf_counter_value() {
    let read = |text: &str| typeperf_value(&farm_agent::traffic::counters::parse(text).unwrap());
    assert_eq!(read(&fixture("typeperf_active_requests.txt")), Some(3.0));
    assert_eq!(read("Error: No valid counters.\r\n"), None);
    // Two counters where one was asked: not the last cell of the row.
    let two = "\"(PDH-CSV 4.0)\",\"\\\\W\\W3SVC_W3WP(_Total)\\Active Requests\",\"\\\\W\\W3SVC_W3WP(1_A)\\Active Requests\"\r\n\"12/07/2026 03:00:00.100\",\"2.000000\",\"9.000000\"\r\n";
    assert_eq!(read(two), None);
    // Unreadable is unknown, never 0.
    let minus = "\"(PDH-CSV 4.0)\",\"\\\\W\\W3SVC_W3WP(_Total)\\Active Requests\"\r\n\"12/07/2026 03:00:00.100\",\"-1\"\r\n";
    assert_eq!(read(minus), None);
}

#[test]
fn a_site_root_virtual_directory_and_its_variables() {
    let text = fixture("list_vdir.txt");
    assert_eq!(
        root_vdir_path(&text, "shop").as_deref(),
        Some(r"D:\sites\shop\releases\2.4.0"),
        "the root vdir, not shop/api/"
    );
    let dws = root_vdir_path(&text, "default web site").unwrap();
    assert_eq!(dws, r"%SystemDrive%\inetpub\wwwroot");
    let env = |n: &str| (n == "SystemDrive").then(|| "C:".to_string());
    assert_eq!(expand_vars(&dws, env), r"C:\inetpub\wwwroot");
    assert_eq!(root_vdir_path(&text, "blog"), None);
    assert!(objects(&fixture("set_vdir_ok.txt"), "VDIR")
        .next()
        .is_none());
}
