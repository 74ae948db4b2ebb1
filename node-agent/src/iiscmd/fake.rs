//! A [`CommandRunner`] that plays one IIS server: it keeps pools, worker
//! PIDs and service states, answers appcmd, iisreset, sc and taskkill in
//! their verbatim formats, and records every argv it was given. Used by the
//! command backend's tests and by the behaviour suite shared with the
//! simulator.
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::runner::{CommandRunner, Output, RunError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Svc {
    Stopped = 1,
    StopPending = 3,
    Running = 4,
}

#[derive(Debug, Clone)]
struct Pool {
    name: String,
    started: bool,
    pids: Vec<u32>,
}

/// Faults the fake IIS can show.
#[derive(Debug, Clone, Default)]
pub struct FakeFaults {
    /// `iisreset /stop` fails (and leaves the services stop-pending).
    pub stop_hangs: bool,
    /// The next N `iisreset /start` fail.
    pub start_fails: u32,
    /// Not an administrator: iisreset and taskkill are denied.
    pub access_denied: bool,
    /// `appcmd list requests` without the Request Monitor feature.
    pub no_request_monitor: bool,
    /// Pools have autoStart off: after `iisreset /start` they stay stopped.
    pub autostart_off: bool,
    /// An Italian Windows: appcmd's messages translated, the counters
    /// named `\Processo(*)\% Tempo processo` (English paths fail).
    pub localized: bool,
}

/// `reg query` of the counter names: the English list, and an Italian
/// server's (the indexes of `Process`, `% Processor Time`, `Private
/// Bytes`, `ID Process`), a REG_MULTI_SZ on one line joined by `\0`.
const REG_ENGLISH: &str = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Perflib\\009\r\n    Counter    REG_MULTI_SZ    1\\01847\\02\\0System\\06\\0% Processor Time\\0186\\0Private Bytes\\0230\\0Process\\0784\\0ID Process\\0\r\n\r\n";
const REG_ITALIAN: &str = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Perflib\\CurrentLanguage\r\n    Counter    REG_MULTI_SZ    1\\01847\\02\\0Sistema\\06\\0% Tempo processo\\0186\\0Byte privati\\0230\\0Processo\\0784\\0ID processo\\0\r\n\r\n";

/// English → Italian, as the fake's typeperf names them.
const ITALIAN: [(&str, &str); 4] = [
    (r"\Process(", r"\Processo("),
    (r"\% Processor Time", r"\% Tempo processo"),
    (r"\Private Bytes", r"\Byte privati"),
    (r"\ID Process", r"\ID processo"),
];

struct State {
    services: Svc,
    pools: Vec<Pool>,
    /// Each site's root virtual directory path, as appcmd prints it.
    vdirs: Vec<(String, String)>,
    next_pid: u32,
    faults: FakeFaults,
    log: Vec<String>,
}

pub struct FakeIis {
    state: Mutex<State>,
}

impl FakeIis {
    /// A running server with these pools started, one worker each.
    pub fn new(pools: &[&str], faults: FakeFaults) -> Self {
        let mut next_pid = 3000;
        let pools: Vec<Pool> = pools
            .iter()
            .map(|p| {
                next_pid += 4;
                Pool {
                    name: p.to_string(),
                    started: true,
                    pids: vec![next_pid],
                }
            })
            .collect();
        let vdirs = pools
            .iter()
            .map(|p: &Pool| {
                (
                    format!("{}Site", p.name),
                    format!(r"%SystemDrive%\inetpub\{}", p.name),
                )
            })
            .collect();
        Self {
            state: Mutex::new(State {
                services: Svc::Running,
                pools,
                vdirs,
                next_pid,
                faults,
                log: Vec::new(),
            }),
        }
    }

    /// Adds a pool with no worker process (on-demand, not requested yet).
    pub fn with_idle_pool(self, name: &str, started: bool) -> Self {
        self.lock().pools.push(Pool {
            name: name.into(),
            started,
            pids: Vec::new(),
        });
        self
    }

    /// Every command run so far, as `tool arg arg...`.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn tool(program: &str) -> String {
    let base = program
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(program)
        .to_ascii_lowercase();
    base.strip_suffix(".exe").unwrap_or(&base).to_string()
}

impl State {
    fn pid(&mut self) -> u32 {
        self.next_pid += 4;
        self.next_pid
    }

    fn pool_mut(&mut self, name: &str) -> Option<&mut Pool> {
        self.pools
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    fn appcmd(&mut self, args: &[String]) -> Output {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        if self.services != Svc::Running && a.first() != Some(&"list") {
            return Output::exit(
                1062,
                "ERROR ( hresult:80070426, message:Command execution failed.\r\nThe service has not been started.\r\n )\r\n",
            );
        }
        match a.as_slice() {
            ["list", "apppool"] => Output::ok(
                self.pools
                    .iter()
                    .map(|p| {
                        format!(
                            "APPPOOL \"{}\" (MgdVersion:v4.0,MgdMode:Integrated,state:{})\r\n",
                            p.name,
                            if p.started { "Started" } else { "Stopped" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .concat(),
            ),
            ["list", "wp"] => Output::ok(
                self.pools
                    .iter()
                    .flat_map(|p| p.pids.iter().map(move |pid| format!("WP \"{pid}\" (applicationPool:{})\r\r\n", p.name)))
                    .collect::<Vec<_>>()
                    .concat(),
            ),
            ["list", "site"] => Output::ok(
                self.pools
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        format!(
                            "SITE \"{}Site\" (id:{},bindings:http/*:80:,https/*:443:,state:Started)\r\n",
                            p.name,
                            i + 1
                        )
                    })
                    .collect::<Vec<_>>()
                    .concat(),
            ),
            ["list", "app"] => Output::ok(
                self.pools
                    .iter()
                    .map(|p| format!("APP \"{}Site/\" (applicationPool:{})\r\n", p.name, p.name))
                    .collect::<Vec<_>>()
                    .concat(),
            ),
            ["list", "vdir", filter @ ..] => {
                let only = filter.first().and_then(|f| f.strip_prefix("/app.name:"));
                Output::ok(
                    self.vdirs
                        .iter()
                        .filter(|(site, _)| only.is_none_or(|o| o.eq_ignore_ascii_case(&format!("{site}/"))))
                        .map(|(site, path)| format!("VDIR \"{site}/\" (physicalPath:{path})\r\n"))
                        .collect::<Vec<_>>()
                    .concat(),
                )
            }
            ["set", "vdir", vdir, arg] => {
                let (Some(site), Some(path)) = (vdir.strip_suffix('/'), arg.strip_prefix("/physicalPath:")) else {
                    return Output::exit(1, "ERROR ( message:Unknown attribute. )\r\n");
                };
                match self.vdirs.iter_mut().find(|(s, _)| s.eq_ignore_ascii_case(site)) {
                    Some(v) => {
                        v.1 = path.to_string();
                        Output::ok(format!("VDIR object \"{vdir}\" changed\r\n"))
                    }
                    None => Output::exit(
                        1168,
                        if self.faults.localized {
                            format!("ERROR ( message:Impossibile trovare l'oggetto VDIR con identificatore \"{vdir}\". )\r\n")
                        } else {
                            format!("ERROR ( message:Cannot find VDIR object with identifier \"{vdir}\". )\r\n")
                        },
                    ),
                }
            }
            ["list", "requests"] if self.faults.no_request_monitor => Output::exit(
                1,
                "ERROR ( hresult:80004001, message:Command execution failed.\r\nNot implemented\r\n )\r\n",
            ),
            ["list", "requests"] => Output::ok(""),
            // Effective settings (IIS 8.5's `/xml /config:*` shape): the
            // first site logs W3C to files under the default folder, the
            // second to ETW only.
            ["list", "site", "/xml", "/config:*"] => Output::ok(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<appcmd>\r\n{}</appcmd>\r\n",
                self.pools
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!(
                        "    <SITE SITE.NAME=\"{name}\" SITE.ID=\"{id}\" bindings=\"http/*:{port}:\" state=\"Started\">\r\n        <site name=\"{name}\" id=\"{id}\" serverAutoStart=\"true\">\r\n            <logFile logFormat=\"W3C\" logTargetW3C=\"{target}\" directory=\"%SystemDrive%\\inetpub\\logs\\LogFiles\" period=\"Daily\" />\r\n            <application path=\"/\" applicationPool=\"{pool}\">\r\n                <virtualDirectory path=\"/\" physicalPath=\"C:\\sites\\{name}\" />\r\n            </application>\r\n        </site>\r\n    </SITE>\r\n",
                        name = format!("{}Site", p.name),
                        id = i + 1,
                        port = 80 + i,
                        target = if i == 0 { "File" } else { "ETW" },
                        pool = p.name,
                    ))
                    .collect::<String>()
            )),
            // The reference's verbatim samples (IIS 7.0 and with stage).
            ["list", "requests", pool, elapsed]
                if pool.starts_with("/apppool.name:") && elapsed.starts_with("/elapsed:") =>
            {
                Output::ok(
                    "REQUEST \"fb0000008000000e\" (url:GET /wait.aspx?time=10000,time:4276 msec,client:localhost)\r\nREQUEST \" fa000000080000026\" (url:GET /loop.php, time:2840 msec, client:localhost, stage:ExecuteRequestHandler, module:FastCgiModule)\r\n",
                )
            }
            [verb @ ("recycle" | "start" | "stop"), "apppool", arg] => {
                let Some(name) = arg.strip_prefix("/apppool.name:") else {
                    return Output::exit(1, "ERROR ( message:Unknown attribute. )\r\n");
                };
                let verb = *verb;
                let new_pid = self.pid();
                let Some(p) = self.pool_mut(name) else {
                    return Output::exit(
                        1168,
                        if self.faults.localized {
                            format!("ERROR ( message:Impossibile trovare l'oggetto APPPOOL con identificatore \"{name}\". )\r\n")
                        } else {
                            format!("ERROR ( message:Cannot find APPPOOL object with identifier \"{name}\". )\r\n")
                        },
                    );
                };
                match verb {
                    "recycle" if !p.started => Output::exit(
                        1062,
                        "ERROR ( hresult:80070426, message:Command execution failed.\r\nThe service has not been started.\r\n )\r\n",
                    ),
                    "recycle" => {
                        if !p.pids.is_empty() {
                            p.pids = vec![new_pid];
                        }
                        Output::ok(format!("\"{}\" successfully recycled\r\n", p.name))
                    }
                    "start" => {
                        p.started = true;
                        p.pids = vec![new_pid];
                        Output::ok(format!("\"{}\" successfully started\r\n", p.name))
                    }
                    _ => {
                        p.started = false;
                        p.pids.clear();
                        Output::ok(format!("\"{}\" successfully stopped\r\n", p.name))
                    }
                }
            }
            _ => Output::exit(1, "ERROR ( message:Unknown command. )\r\n"),
        }
    }

    fn stop_all(&mut self) {
        self.services = Svc::Stopped;
        for p in &mut self.pools {
            p.pids.clear();
        }
    }

    fn iisreset(&mut self, args: &[String]) -> Output {
        const DENIED: &str = "Access denied, you must be an administrator of the remote computer to use this\r\ncommand. Either have your account added to the administrator local group of\r\nthe remote computer or to the domain administrator global group.\r\n";
        match args.first().map(String::as_str) {
            Some("/stop") => {
                if self.faults.access_denied {
                    return Output::exit(
                        1,
                        format!("Attempting stop...\r\nStop attempt failed.\r\n{DENIED}"),
                    );
                }
                if self.faults.stop_hangs {
                    self.services = Svc::StopPending;
                    return Output::exit(
                        1,
                        "\r\nAttempting stop...\r\nStop attempt failed.\r\nThe service cannot accept control messages at this time. (2147943461, 80070425)\r\n",
                    );
                }
                self.stop_all();
                Output::ok("\r\nAttempting stop...\r\nInternet services successfully stopped\r\n")
            }
            Some("/start") => {
                if self.faults.access_denied {
                    return Output::exit(
                        1,
                        format!("Attempting start...\r\nStart attempt failed.\r\n{DENIED}"),
                    );
                }
                if self.services == Svc::StopPending || self.faults.start_fails > 0 {
                    self.faults.start_fails = self.faults.start_fails.saturating_sub(1);
                    return Output::exit(
                        1,
                        "\r\nAttempting start...\r\nRestart attempt failed.\r\nThe service cannot accept control messages at this time. (2147943461, 80070425)\r\n",
                    );
                }
                self.services = Svc::Running;
                if self.faults.autostart_off {
                    for p in &mut self.pools {
                        p.started = false;
                    }
                }
                let started: Vec<usize> = (0..self.pools.len())
                    .filter(|&i| self.pools[i].started)
                    .collect();
                for i in started {
                    let pid = self.pid();
                    self.pools[i].pids = vec![pid];
                }
                Output::ok("\r\nAttempting start...\r\nInternet services successfully started\r\n")
            }
            _ => Output::exit(1, "Invalid argument.\r\n"),
        }
    }

    fn sc(&mut self, args: &[String]) -> Output {
        match args {
            [q, name] if q == "query" && (name == "W3SVC" || name == "WAS") => {
                let s = self.services;
                let word = match s {
                    Svc::Stopped => "STOPPED",
                    Svc::StopPending => "STOP_PENDING",
                    Svc::Running => "RUNNING",
                };
                Output::ok(format!(
                    "\r\nSERVICE_NAME: {name}\r\n        TYPE               : 20  WIN32_SHARE_PROCESS\r\n        STATE              : {}  {word}\r\n        WIN32_EXIT_CODE    : 0  (0x0)\r\n",
                    s as u8
                ))
            }
            _ => Output::exit(1060, "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\nThe specified service does not exist as an installed service.\r\n"),
        }
    }

    /// One typeperf sample of a pool's diagnostic counters (the documented
    /// CSV shape): queue 7, 2 rejected, Running, each worker 3 active
    /// requests, 12.5 % CPU, 150 MB private bytes; an unrelated process.
    fn diagnostic_counters(&self) -> Output {
        let mut header = vec!["\"(PDH-CSV 4.0)\"".to_string()];
        let mut values = vec!["\"11/21/2026 10:00:00.123\"".to_string()];
        let localized = self.faults.localized;
        let mut add = |path: String, value: &str| {
            let path = if localized {
                ITALIAN.iter().fold(path, |p, (en, it)| p.replace(en, it))
            } else {
                path
            };
            header.push(format!("\"\\\\WEB01{path}\""));
            values.push(format!("\"{value}\""));
        };
        for p in &self.pools {
            add(
                format!(r"\HTTP Service Request Queues({})\CurrentQueueSize", p.name),
                "7.000000",
            );
            add(
                format!(r"\HTTP Service Request Queues({})\RejectedRequests", p.name),
                "2.000000",
            );
            add(
                format!(r"\APP_POOL_WAS({})\Current Application Pool State", p.name),
                "3.000000",
            );
        }
        let workers: Vec<(u32, String)> = self
            .pools
            .iter()
            .flat_map(|p| p.pids.iter().map(|pid| (*pid, p.name.clone())))
            .collect();
        for (pid, pool) in &workers {
            add(
                format!(r"\W3SVC_W3WP({pid}_{pool})\Active Requests"),
                "3.000000",
            );
        }
        add(r"\Process(svchost)\ID Process".into(), "812.000000");
        for (k, (pid, _)) in workers.iter().enumerate() {
            let inst = if k == 0 {
                "w3wp".to_string()
            } else {
                format!("w3wp#{k}")
            };
            add(
                format!(r"\Process({inst})\ID Process"),
                &format!("{pid}.000000"),
            );
            add(format!(r"\Process({inst})\% Processor Time"), "12.500000");
            add(
                format!(r"\Process({inst})\Private Bytes"),
                "157286400.000000",
            );
        }
        Output::ok(format!(
            "\r\n{}\r\n{}\r\nExiting, please wait...\r\nThe command completed successfully.\r\n",
            header.join(","),
            values.join(",")
        ))
    }

    /// WAS's last events, newest first, in wevtutil's text layout: the
    /// first pool's worker crashed and rapid-fail protection stopped it.
    fn was_events(&self) -> Output {
        let Some(p) = self.pools.first() else {
            return Output::ok("");
        };
        let event = |n: usize, id: u32, level: &str, text: String| {
            format!("Event[{n}]:\r\n  Log Name: System\r\n  Source: Microsoft-Windows-WAS\r\n  Date: 2026-11-21T10:00:0{n}.000\r\n  Event ID: {id}\r\n  Task: None\r\n  Level: {level}\r\n  Opcode: Info\r\n  Keyword: Classic\r\n  User: N/A\r\n  User Name: N/A\r\n  Computer: WEB01\r\n  Description:\r\n{text}\r\n\r\n")
        };
        let pid = p.pids.first().copied().unwrap_or(0);
        Output::ok(format!(
            "{}{}",
            event(0, 5002, "Error", format!("Application pool '{}' is being automatically disabled due to a series of failures in the process(es) serving that application pool.", p.name)),
            event(1, 5009, "Warning", format!("A process serving application pool '{}' terminated unexpectedly. The process id was '{pid}'. The process exit code was '0xc0000005'.", p.name)),
        ))
    }

    fn taskkill(&mut self, args: &[String]) -> Output {
        if args != ["/F", "/FI", "SERVICES eq was"] {
            return Output::exit(1, "ERROR: Invalid argument/option.\r\n");
        }
        if self.faults.access_denied {
            return Output::exit(1, "ERROR: The process with PID 1288 could not be terminated.\r\nReason: Access is denied.\r\n");
        }
        self.stop_all();
        Output::ok("SUCCESS: The process with PID 1288 has been terminated.\r\n")
    }
}

#[async_trait]
impl CommandRunner for FakeIis {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        _timeout: Duration,
    ) -> Result<Output, RunError> {
        let mut st = self.lock();
        let name = tool(program);
        st.log.push(format!("{name} {}", args.join(" ")));
        Ok(match name.as_str() {
            "appcmd" => st.appcmd(args),
            "iisreset" => st.iisreset(args),
            "sc" => st.sc(args),
            "taskkill" => st.taskkill(args),
            "typeperf" if args.first().is_some_and(|a| a.starts_with(r"\HTTP Service Request Queues(")) => {
                st.diagnostic_counters()
            }
            "wevtutil" => st.was_events(),
            "reg" => match args {
                [q, key, v, c] if q == "query" && v == "/v" && c == "Counter" => {
                    if key.ends_with(r"Perflib\009") {
                        Output::ok(REG_ENGLISH)
                    } else if key.ends_with(r"Perflib\CurrentLanguage") {
                        Output::ok(if st.faults.localized { REG_ITALIAN } else { REG_ENGLISH })
                    } else {
                        Output::exit(1, "ERROR: The system was unable to find the specified registry key or value.\r\n")
                    }
                }
                _ => Output::exit(1, "ERROR: Invalid syntax.\r\n"),
            },
            // An English counter path on an Italian Windows.
            "typeperf" if st.faults.localized && args.iter().any(|a| a.contains(r"\Process(")) => {
                Output::exit(1, "Error: No valid counters.\r\n")
            }
            "netsh" if args == ["http", "flush", "logbuffer"] => Output::ok("\r\nOk.\r\n\r\n"),
            "typeperf" => Output::ok(
                "\r\n\"(PDH-CSV 4.0)\",\"\\\\WEB01\\W3SVC_W3WP(_Total)\\Active Requests\"\r\n\"11/21/2026 10:00:00.123\",\"2.000000\"\r\n\r\nThe command completed successfully.\r\n",
            ),
            _ => {
                return Err(RunError::Spawn {
                    program: program.into(),
                    detail: "not found".into(),
                })
            }
        })
    }
}
