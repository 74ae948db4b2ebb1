//! The Windows host on its tools' outputs: `reg query` as Windows prints
//! it, the JSON the agent's own PowerShell scripts print (ConvertTo-Json's
//! shapes: one element written as an object), `shutdown.exe`'s exit codes
//! (1190 scheduled, 1115 in progress) and `sc qc`.
use std::sync::Mutex;

use super::*;
use crate::runner::RunError;

/// Answers by the first argv that starts with a given prefix; records
/// every call.
#[derive(Default)]
struct Script {
    answers: Vec<(Vec<String>, Result<Output, RunError>)>,
    calls: Mutex<Vec<Vec<String>>>,
}

impl Script {
    fn on(mut self, prefix: &[&str], out: Result<Output, RunError>) -> Self {
        self.answers
            .push((prefix.iter().map(|s| s.to_string()).collect(), out));
        self
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl CommandRunner for Script {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        _timeout: Duration,
    ) -> Result<Output, RunError> {
        let argv: Vec<String> = std::iter::once(program.to_string())
            .chain(args.iter().cloned())
            .collect();
        self.calls.lock().unwrap().push(argv.clone());
        self.answers
            .iter()
            .find(|(p, _)| argv.starts_with(p))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| {
                Ok(Output {
                    code: Some(1),
                    stdout: String::new(),
                    stderr: "ERROR: The system was unable to find the specified registry key or value.\r\n".into(),
                })
            })
    }
}

fn host(script: Script) -> (WindowsHost, Arc<Script>) {
    let script = Arc::new(script);
    let h = WindowsHost::new(
        script.clone(),
        Tools::on_path(),
        Timeouts::default(),
        Some("farm-agent".into()),
    );
    (h, script)
}

fn ps(json: &str) -> Result<Output, RunError> {
    Ok(Output::ok(format!("{json}\r\n")))
}

#[tokio::test]
async fn the_boot_is_wmis_last_boot_time_read_once_and_unknown_without_powershell() {
    let (h, s) = host(Script::default().on(
        &["powershell"],
        ps(r#"{"boot":"2026-12-07T02:14:09.5000000Z"}"#),
    ));
    let b = h.boot().await.unwrap();
    assert_eq!(b.id, "2026-12-07T02:14:09.5000000Z");
    assert_eq!(b.time_unix_ms, 1_796_609_649_500);
    assert_eq!(h.boot().await, Some(b));
    assert_eq!(s.calls().len(), 1, "read once");
    let (none, _) = host(Script::default().on(
        &["powershell"],
        Err(RunError::Spawn {
            program: "powershell".into(),
            detail: "not found".into(),
        }),
    ));
    assert_eq!(none.boot().await, None);
}

#[tokio::test]
async fn a_pending_restart_from_the_registry_keys_and_file_renames() {
    let renames = "\r\nHKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\r\n    PendingFileRenameOperations    REG_MULTI_SZ    \\??\\C:\\Windows\\Temp\\x.dll\\0\\0\r\n\r\n";
    let (h, _) = host(
        Script::default()
            .on(
                &["reg", "query", PENDING_KEYS[0].0],
                Ok(Output::ok("\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending\r\n")),
            )
            .on(&["reg", "query", SESSION_MANAGER], Ok(Output::ok(renames))),
    );
    let p = h.reboot_pending().await;
    assert!(p.pending);
    assert_eq!(p.reasons, ["cbs", "file-renames"]);
    // An empty list of renames is none.
    let empty = "\r\nHKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\r\n    PendingFileRenameOperations    REG_MULTI_SZ    \r\n\r\n";
    let (h, _) =
        host(Script::default().on(&["reg", "query", SESSION_MANAGER], Ok(Output::ok(empty))));
    let p = h.reboot_pending().await;
    assert!(!p.pending, "{p:?}");
    assert!(p.notes.is_empty());
}

const ONE_UPDATE: &str = r#"{"result":2,"updates":{"id":"a1b2c3d4-0000-4000-8000-000000000001","kb":"KB5031364","title":"2023-11 Cumulative Update for Microsoft server operating system version 21H2 for x64-based Systems (KB5031364)","categories":["0FA1201D-4330-4FA8-8AE9-B877473B6441","405706ED-F1D7-47EA-91E1-EB8860039715"],"size":524288000,"reboot":1},"reboot_required":false}"#;

#[tokio::test]
async fn a_search_reads_one_update_written_as_an_object_and_applies_the_kb_lists() {
    let (h, s) = host(Script::default().on(&["powershell"], ps(ONE_UPDATE)));
    let filter = UpdateFilter {
        classifications: vec!["SecurityUpdates".into()],
        ..UpdateFilter::default()
    };
    let found = h.search(&filter).await.unwrap();
    assert_eq!(found.source, "wua");
    assert_eq!(found.updates.len(), 1);
    let u = &found.updates[0];
    assert_eq!(u.kb, "KB5031364");
    assert_eq!(u.classification, "SecurityUpdates");
    assert!(u.reboot_required);
    assert_eq!(u.size_bytes, 524_288_000);
    let script = s.calls()[0].last().unwrap().clone();
    assert!(
        script.contains("$searcher.Search(\"(IsInstalled=0 and IsHidden=0 and Type='Software' and CategoryIDs contains '0FA1201D-4330-4FA8-8AE9-B877473B6441')\")"),
        "{script}"
    );
    let excluded = UpdateFilter {
        exclude_kbs: vec!["KB5031364".into()],
        ..UpdateFilter::default()
    };
    assert!(h.search(&excluded).await.unwrap().updates.is_empty());
    // Nothing found: ConvertTo-Json writes an empty array as `null`... or
    // leaves the key out.
    let (h, _) = host(Script::default().on(
        &["powershell"],
        ps(r#"{"result":2,"updates":null,"reboot_required":true}"#),
    ));
    let none = h.search(&UpdateFilter::default()).await.unwrap();
    assert!(none.updates.is_empty());
    assert_eq!(none.notes, ["Windows Update says a restart is required"]);
}

#[tokio::test]
async fn a_failure_of_the_update_agent_names_its_hresult() {
    let (h, _) = host(Script::default().on(
        &["powershell"],
        Ok(Output::exit(
            1,
            "{\"error\":\"Exception from HRESULT: 0x80240044\",\"hresult\":-2145124284}\r\n",
        )),
    ));
    let e = h.search(&UpdateFilter::default()).await.unwrap_err();
    assert!(e.to_string().contains("0x80240044"), "{e}");
}

#[tokio::test]
async fn an_install_reports_each_update_and_the_restart_it_needs() {
    let installed = r#"{"installed":[{"update":{"id":"a1","kb":"KB5031364","title":"CU","categories":["0FA1201D-4330-4FA8-8AE9-B877473B6441"],"size":1,"reboot":1},"result":2,"hresult":0,"reboot":true},{"update":{"id":"b2","kb":"KB890830","title":"MSRT","categories":"CD5FFD1E-E932-4E3A-BF74-18BF0B1BBD83","size":1,"reboot":0},"result":4,"hresult":-2145124318,"reboot":false}],"reboot_required":true}"#;
    let search = r#"{"result":2,"updates":[{"id":"a1","kb":"KB5031364","title":"CU","categories":["0FA1201D-4330-4FA8-8AE9-B877473B6441"],"size":1,"reboot":1},{"id":"b2","kb":"KB890830","title":"MSRT","categories":["CD5FFD1E-E932-4E3A-BF74-18BF0B1BBD83"],"size":1,"reboot":0},{"id":"x'); Remove-Item C:\\ -Recurse; ('","kb":"KB1","title":"hostile","categories":[],"size":1,"reboot":0}],"reboot_required":false}"#;
    let script = Script::default();
    // The first PowerShell call searches, the second installs.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    struct Two(Script, Arc<std::sync::atomic::AtomicUsize>, String, String);
    #[async_trait]
    impl CommandRunner for Two {
        async fn run(&self, p: &str, a: &[String], t: Duration) -> Result<Output, RunError> {
            let _ = self.0.run(p, a, t).await;
            let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Output::ok(if n == 0 {
                self.2.clone()
            } else {
                self.3.clone()
            }))
        }
    }
    let runner = Arc::new(Two(script, calls, search.into(), installed.into()));
    let h = WindowsHost::new(runner.clone(), Tools::on_path(), Timeouts::default(), None);
    let lines = Mutex::new(Vec::new());
    let got = h
        .install(&UpdateFilter::default(), Duration::from_secs(60), &|l| {
            lines.lock().unwrap().push(l)
        })
        .await
        .unwrap();
    assert!(got.reboot_required);
    assert_eq!(got.results.len(), 2);
    assert!(got.results[0].ok());
    assert_eq!(got.results[0].hresult, None);
    assert_eq!(got.results[1].result, "failed");
    assert_eq!(got.results[1].hresult.as_deref(), Some("0x80240022"));
    assert_eq!(got.failures().unwrap(), "KB890830 failed (0x80240022)");
    // Only checked ids reach the install script.
    let install = runner.0.calls()[1].last().unwrap().clone();
    assert!(install.contains("$ids = @('a1','b2')"), "{install}");
    assert!(!install.contains("Remove-Item"), "{install}");
    assert!(
        lines.lock().unwrap()[0].contains("2 update(s)"),
        "{:?}",
        lines.lock().unwrap()
    );
}

#[test]
fn an_unknown_classification_is_refused_before_any_script() {
    assert!(criteria(&["Drivers'); Stop-Computer; ('".into()]).is_err());
    assert_eq!(
        criteria(&[]).unwrap(),
        "IsInstalled=0 and IsHidden=0 and Type='Software'"
    );
    let two = criteria(&["SecurityUpdates".into(), "critical updates".into()]).unwrap();
    assert_eq!(two.matches(" or ").count(), 1, "{two}");
    assert!(two.contains("E6CF1350-C01B-414D-A61F-263D14D133B4"));
}

#[tokio::test]
async fn the_restart_is_planned_with_a_reason_and_the_runs_comment() {
    let (h, s) = host(Script::default().on(&["shutdown"], Ok(Output::ok(""))));
    h.reboot(
        "farmctl run 20261207T020000-ab12cd: patch",
        Duration::from_secs(10),
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        s.calls(),
        [[
            "shutdown",
            "/r",
            "/t",
            "10",
            "/d",
            "p:2:17",
            "/c",
            "farmctl run 20261207T020000-ab12cd: patch"
        ]]
    );
    // One already scheduled: cancelled, ours asked again.
    struct Scheduled(Mutex<Vec<Vec<String>>>);
    #[async_trait]
    impl CommandRunner for Scheduled {
        async fn run(&self, p: &str, a: &[String], _: Duration) -> Result<Output, RunError> {
            let mut calls = self.0.lock().unwrap();
            calls.push(
                std::iter::once(p.to_string())
                    .chain(a.iter().cloned())
                    .collect(),
            );
            Ok(Output::exit(if calls.len() == 1 { 1190 } else { 0 }, ""))
        }
    }
    let runner = Arc::new(Scheduled(Mutex::default()));
    let h = WindowsHost::new(runner.clone(), Tools::on_path(), Timeouts::default(), None);
    h.reboot("x", Duration::from_secs(5), false).await.unwrap();
    let calls = runner.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1], ["shutdown", "/a"]);
    assert_eq!(calls[2][5], "p:4:1");
    // Refused (no privilege): said with its code.
    let (h, _) = host(Script::default().on(
        &["shutdown"],
        Ok(Output::exit(5, "Access is denied.(5)\r\n")),
    ));
    let e = h
        .reboot("x", Duration::from_secs(5), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exit code 5"), "{e}");
}

#[tokio::test]
async fn the_agents_own_start_type_from_sc_qc() {
    let qc = "[SC] QueryServiceConfig SUCCESS\r\n\r\nSERVICE_NAME: farm-agent\r\n        TYPE               : 10  WIN32_OWN_PROCESS\r\n        START_TYPE         : 2   AUTO_START  (DELAYED)\r\n        ERROR_CONTROL      : 1   NORMAL\r\n";
    let (h, s) = host(Script::default().on(&["sc", "qc", "farm-agent"], Ok(Output::ok(qc))));
    h.read_service_start().await;
    assert_eq!(h.service_start().as_deref(), Some("delayed-auto"));
    assert_eq!(s.calls(), [["sc", "qc", "farm-agent"]]);
    let demand = Output::ok("        START_TYPE         : 3   DEMAND_START\r\n");
    assert_eq!(start_type(&demand).as_deref(), Some("demand"));
    let not_one = WindowsHost::new(
        Arc::new(Script::default()),
        Tools::on_path(),
        Timeouts::default(),
        None,
    );
    assert_eq!(not_one.service_start().as_deref(), Some("not a service"));
}
