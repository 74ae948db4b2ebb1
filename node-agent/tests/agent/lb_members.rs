//! ARR and NLB members through the agent's LbMember call, with a runner
//! that plays PowerShell from fixtures: the exact argv sent, the script's
//! names checked, outputs (and PowerShell's errors) read.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use farm_agent::iiscmd::runner::{CommandRunner, Output, RunError};
use farm_agent::lbmember::{LbMemberError, LbMembers};
use farm_proto::v1 as pb;

const PS: &str = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/lb/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Answers each call with the next scripted output; records the argv.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Output>>,
    calls: Mutex<Vec<Vec<String>>>,
}

impl Scripted {
    fn new(answers: Vec<Output>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            calls: Mutex::default(),
        })
    }

    fn commands(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|argv| argv.last().cloned().unwrap_or_default())
            .collect()
    }
}

#[async_trait]
impl CommandRunner for Scripted {
    async fn run(&self, program: &str, args: &[String], _: Duration) -> Result<Output, RunError> {
        let mut argv = vec![program.to_string()];
        argv.extend(args.iter().cloned());
        self.calls.lock().unwrap().push(argv);
        Ok(self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Output::ok("")))
    }
}

fn out(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

fn members(runner: &Arc<Scripted>) -> LbMembers {
    LbMembers::new(runner.clone(), PS, Duration::from_secs(30), "web01")
}

fn arr(action: &str, mode: &str) -> pb::LbMemberRequest {
    pb::LbMemberRequest {
        operation_id: "r1.web01.drain".into(),
        kind: "arr".into(),
        action: action.into(),
        farm: "shop farm".into(),
        server: "10.0.1.11".into(),
        mode: mode.into(),
        drain_timeout_s: 0,
    }
}

#[tokio::test]
async fn arr_drain_runs_the_fixed_script_with_graceful_stop_and_reads_the_counters() {
    let runner = Scripted::new(vec![out(0, &fixture("arr_drain_3_requests.txt"), "")]);
    let reply = members(&runner).handle(&arr("drain", "")).await.unwrap();
    assert_eq!(reply.state, "Drain");
    assert_eq!(reply.current_requests, 3);
    assert!(reply.healthy);
    let calls = runner.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0][..6],
        [
            PS,
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-Command"
        ]
    );
    let script = &calls[0][6];
    assert!(
        script.contains("GetAttributeValue('name') -eq 'shop farm'"),
        "{script}"
    );
    assert!(
        script.contains("GetAttributeValue('address') -eq '10.0.1.11'"),
        "{script}"
    );
    assert!(
        script.contains("SetAttributeValue('newState', 'GracefulStop')"),
        "{script}"
    );
    // `Drain` when asked; `Start` to return; nothing set to read.
    let runner = Scripted::new(vec![
        out(0, &fixture("arr_drain_3_requests.txt"), ""),
        out(0, &fixture("arr_available.txt"), ""),
        out(0, &fixture("arr_available.txt"), ""),
    ]);
    let m = members(&runner);
    m.handle(&arr("drain", "Drain")).await.unwrap();
    let back = m.handle(&arr("return", "")).await.unwrap();
    assert_eq!(
        (back.state.as_str(), back.current_requests),
        ("Available", 0)
    );
    m.handle(&arr("state", "")).await.unwrap();
    let scripts = runner.commands();
    assert!(scripts[0].contains("'newState', 'Drain')"));
    assert!(scripts[1].contains("'newState', 'Start')"));
    assert!(!scripts[2].contains("SetState"));
}

#[tokio::test]
async fn arr_names_that_could_break_out_of_the_script_are_refused_before_anything_runs() {
    let runner = Scripted::new(vec![]);
    let m = members(&runner);
    for (farm, server) in [
        ("shop'; Remove-Item C:\\ -Recurse; '", "web01"),
        ("shop", "web01' -or '1"),
        ("shop", "$(whoami)"),
        ("", "web01"),
    ] {
        let mut r = arr("drain", "");
        r.farm = farm.into();
        r.server = server.into();
        let e = m.handle(&r).await.unwrap_err();
        assert!(
            matches!(e, LbMemberError::Invalid(_)),
            "{farm:?}/{server:?}: {e}"
        );
    }
    let e = m.handle(&arr("drain", "ForcefulStop")).await.unwrap_err();
    assert!(
        e.to_string().contains("ARR drain mode")
            && e.to_string().contains("`GracefulStop`, `Drain`"),
        "{e}"
    );
    assert!(runner.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn arr_errors_name_the_missing_farm_or_powershells_own_message() {
    let runner = Scripted::new(vec![
        out(3, &fixture("arr_no_farm.txt"), ""),
        out(1, "", &fixture("arr_no_web_administration.stderr.txt")),
    ]);
    let m = members(&runner);
    let e = m.handle(&arr("state", "")).await.unwrap_err();
    assert!(
        matches!(&e, LbMemberError::NotFound(t) if t.contains("no web farm 'shop farm'")),
        "{e}"
    );
    let e = m.handle(&arr("state", "")).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Cannot find type [Microsoft.Web.Administration.ServerManager]"),
        "{e}"
    );
}

fn nlb(action: &str) -> pb::LbMemberRequest {
    pb::LbMemberRequest {
        operation_id: "r1.web01.drain".into(),
        kind: "nlb".into(),
        action: action.into(),
        drain_timeout_s: 120,
        ..Default::default()
    }
}

#[tokio::test]
async fn nlb_drain_stops_in_the_background_and_the_state_is_this_nodes_row() {
    let runner = Scripted::new(vec![
        // the background Stop-NlbClusterNode may run before or after the
        // state read: both answer alike
        out(0, &fixture("nlb_draining.txt"), ""),
        out(0, &fixture("nlb_draining.txt"), ""),
        out(0, &fixture("nlb_stopped.txt"), ""),
        out(0, "", ""),
        out(0, &fixture("nlb_converged.txt"), ""),
    ]);
    let m = members(&runner);
    let r = m.handle(&nlb("drain")).await.unwrap();
    assert_eq!(r.state, "Draining");
    assert_eq!(r.current_requests, -1);
    farm_proto::assert_eventually!(
        Duration::from_secs(5),
        async {
            runner
                .commands()
                .iter()
                .any(|c| c.starts_with("Stop-NlbClusterNode"))
        },
        "the drain to start"
    );
    assert!(runner
        .commands()
        .contains(&"Stop-NlbClusterNode -Drain -Timeout 120".to_string()));
    assert_eq!(m.handle(&nlb("state")).await.unwrap().state, "Stopped");
    let back = m.handle(&nlb("return")).await.unwrap();
    assert_eq!(back.state, "Converged");
    assert!(runner
        .commands()
        .contains(&"Start-NlbClusterNode".to_string()));
}

#[tokio::test]
async fn nlb_table_rows_and_errors() {
    use farm_agent::lbmember::nlb::{parse_nodes, this_node};
    let nodes = parse_nodes(&fixture("nlb_converged.txt")).unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1].state, "Converged as DEFAULT");
    assert_eq!(nodes[1].host_id, "2");
    let nodes = parse_nodes(&fixture("nlb_draining.txt")).unwrap();
    assert_eq!(nodes[0].interface, "Ethernet 2");
    assert_eq!(
        this_node(&nodes, "WEB01.corp.example").unwrap().state,
        "Draining"
    );
    assert!(this_node(&nodes, "web09")
        .unwrap_err()
        .to_string()
        .contains("web01, web02"));
    let runner = Scripted::new(vec![out(1, "", &fixture("nlb_not_installed.stderr.txt"))]);
    let e = members(&runner).handle(&nlb("state")).await.unwrap_err();
    assert!(e.to_string().contains("is not recognized"), "{e}");
}
