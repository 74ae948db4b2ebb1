//! The Windows server under IIS, through its own tools (argv only): the
//! boot time from WMI (`Win32_OperatingSystem.LastBootUpTime`, what
//! ansible's `win_reboot` proves a restart by), a pending restart from the
//! registry keys Windows and the servicing stack leave (`reg query`), the
//! updates through the Windows Update Agent's COM objects every Windows
//! Server has (`Microsoft.Update.Session`, driven by a fixed PowerShell
//! script whose only inputs are category GUIDs and update ids this agent
//! checked), and the restart through `shutdown.exe` with a planned
//! reason code and a comment naming the run.
//!
//! Under Wine none of the update or restart paths works (its `wuapi` and
//! `shutdown` are stubs): there the boot is unknown and a restart is
//! refused, which the tests under Wine check.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use farm_iis::host::{
    Boot, Host, Installed, RebootPending, Update, UpdateFilter, UpdateResult, Updates,
};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::config::{Timeouts, Tools};
use super::runner::{CommandRunner, Output};
use crate::iis::IisError;

/// `shutdown /d p:2:17`: Operating System: Hot fix (Planned).
const REASON_UPDATES: &str = "p:2:17";
/// `shutdown /d p:4:1`: Application: Maintenance (Planned).
const REASON_MAINTENANCE: &str = "p:4:1";
/// `shutdown.exe`'s comment is at most 512 characters.
const MAX_COMMENT: usize = 512;

/// The registry keys whose presence says a restart is pending, with the
/// reason name each gives.
const PENDING_KEYS: [(&str, &str); 2] = [
    (
        r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
        "cbs",
    ),
    (
        r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
        "windows-update",
    ),
];
const SESSION_MANAGER: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager";

pub struct WindowsHost {
    runner: Arc<dyn CommandRunner>,
    tools: Tools,
    timeouts: Timeouts,
    boot: OnceCell<Option<Boot>>,
    /// The agent's service name when it runs as one (its start type is
    /// read with `sc qc`).
    service: Option<String>,
    service_start: OnceCell<Option<String>>,
}

impl WindowsHost {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        tools: Tools,
        timeouts: Timeouts,
        service: Option<String>,
    ) -> Self {
        Self {
            runner,
            tools,
            timeouts,
            boot: OnceCell::new(),
            service,
            service_start: OnceCell::new(),
        }
    }

    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, IisError> {
        self.runner
            .run(program, args, timeout)
            .await
            .map_err(|e| IisError::Other(e.to_string()))
    }

    /// Runs `script` in Windows PowerShell; its JSON answer.
    async fn powershell<T: for<'de> Deserialize<'de>>(
        &self,
        script: &str,
        timeout: Duration,
    ) -> Result<T, IisError> {
        let args: Vec<String> = [
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-Command",
            script,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = self.run(&self.tools.powershell, &args, timeout).await?;
        parse_answer(&out)
    }

    /// The Windows Update search of `filter`'s classifications (its KB
    /// lists are applied here, after).
    async fn search_updates(&self, filter: &UpdateFilter) -> Result<(Vec<Update>, bool), IisError> {
        let script = search_script(&criteria(&filter.classifications)?);
        let answer: SearchAnswer = self
            .powershell(&script, self.timeouts.command.max(Duration::from_secs(600)))
            .await?;
        let reboot = answer.reboot_required;
        let updates = answer
            .updates
            .into_iter()
            .map(WuUpdate::into_update)
            .filter(|u| filter.takes(u))
            .collect();
        Ok((updates, reboot))
    }
}

/// The JSON a script printed last, or the error it caught.
fn parse_answer<T: for<'de> Deserialize<'de>>(out: &Output) -> Result<T, IisError> {
    let line = out
        .stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    if let Ok(failed) = serde_json::from_str::<ScriptError>(line) {
        return Err(IisError::Command {
            command: "Windows Update".into(),
            code: out.code.unwrap_or(-1),
            message: match failed.hresult {
                Some(h) => format!("{} ({})", failed.error.trim(), hresult(h)),
                None => failed.error.trim().to_string(),
            },
        });
    }
    serde_json::from_str(line).map_err(|e| IisError::Parse {
        command: "powershell (Windows Update)".into(),
        detail: format!(
            "{e}; exit {:?}: {}",
            out.code,
            out.text().chars().take(300).collect::<String>()
        ),
    })
}

/// `0x80240022` from a signed HRESULT as PowerShell gives it.
fn hresult(h: i64) -> String {
    format!("0x{:08X}", h as u32)
}

/// The search criteria: software updates not installed nor hidden, of
/// any classification asked (each its own top-level branch: `or` is
/// allowed only there).
pub fn criteria(classifications: &[String]) -> Result<String, IisError> {
    const BASE: &str = "IsInstalled=0 and IsHidden=0 and Type='Software'";
    if classifications.is_empty() {
        return Ok(BASE.to_string());
    }
    classifications
        .iter()
        .map(|c| {
            farm_proto::updates::classification(c)
                .map(|(_, guid)| format!("({BASE} and CategoryIDs contains '{guid}')"))
                .ok_or_else(|| IisError::InvalidName {
                    name: c.clone(),
                    reason: "not an update classification".into(),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join(" or "))
}

/// Prints one JSON line: the answer, or `{"error":..,"hresult":..}`.
const SCRIPT_HEAD: &str = r#"$ErrorActionPreference = 'Stop'
try {
$session = New-Object -ComObject Microsoft.Update.Session
$session.ClientApplicationID = 'farm-agent'
$searcher = $session.CreateUpdateSearcher()
"#;
const SCRIPT_TAIL: &str = r#"
} catch {
  [pscustomobject]@{ error = $_.Exception.Message; hresult = $_.Exception.HResult } | ConvertTo-Json -Compress
  exit 1
}
"#;
/// One update as JSON (the search and the install print the same).
const UPDATE_JSON: &str = r#"function Describe($u) {
  [pscustomobject]@{
    id = $u.Identity.UpdateID
    kb = (@($u.KBArticleIDs) | ForEach-Object { "KB$_" }) -join ','
    title = $u.Title
    categories = @($u.Categories | ForEach-Object { $_.CategoryID })
    size = [uint64]$u.MaxDownloadSize
    reboot = [int]$u.InstallationBehavior.RebootBehavior
  }
}
"#;

fn search_script(criteria: &str) -> String {
    format!(
        r#"{SCRIPT_HEAD}{UPDATE_JSON}$result = $searcher.Search("{criteria}")
$found = @($result.Updates | ForEach-Object {{ Describe $_ }})
$reboot = (New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
[pscustomobject]@{{ result = [int]$result.ResultCode; updates = $found; reboot_required = [bool]$reboot }} | ConvertTo-Json -Depth 4 -Compress
{SCRIPT_TAIL}"#
    )
}

fn install_script(criteria: &str, ids: &[String]) -> String {
    let ids = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"{SCRIPT_HEAD}{UPDATE_JSON}$ids = @({ids})
$result = $searcher.Search("{criteria}")
$todo = New-Object -ComObject Microsoft.Update.UpdateColl
foreach ($u in $result.Updates) {{
  if ($ids -contains $u.Identity.UpdateID) {{
    if (-not $u.EulaAccepted) {{ $u.AcceptEula() }}
    [void]$todo.Add($u)
  }}
}}
$out = @()
if ($todo.Count -gt 0) {{
  $downloader = $session.CreateUpdateDownloader()
  $downloader.Updates = $todo
  [void]$downloader.Download()
  $installer = $session.CreateUpdateInstaller()
  $installer.AllowSourcePrompts = $false
  $installer.Updates = $todo
  $done = $installer.Install()
  for ($i = 0; $i -lt $todo.Count; $i++) {{
    $r = $done.GetUpdateResult($i)
    $d = Describe $todo.Item($i)
    $out += [pscustomobject]@{{ update = $d; result = [int]$r.ResultCode; hresult = [int64]$r.HResult; reboot = [bool]$r.RebootRequired }}
  }}
}}
$reboot = (New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
[pscustomobject]@{{ installed = $out; reboot_required = [bool]$reboot }} | ConvertTo-Json -Depth 5 -Compress
{SCRIPT_TAIL}"#
    )
}

const BOOT_SCRIPT: &str = r#"$ErrorActionPreference = 'Stop'
try {
  $t = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime()
  [pscustomobject]@{ boot = $t.ToString('o') } | ConvertTo-Json -Compress
} catch {
  [pscustomobject]@{ error = $_.Exception.Message; hresult = $_.Exception.HResult } | ConvertTo-Json -Compress
  exit 1
}
"#;

#[derive(Debug, Deserialize)]
struct ScriptError {
    error: String,
    #[serde(default)]
    hresult: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct BootAnswer {
    boot: String,
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    #[serde(default, deserialize_with = "one_or_many")]
    updates: Vec<WuUpdate>,
    #[serde(default)]
    reboot_required: bool,
}

#[derive(Debug, Deserialize)]
struct InstallAnswer {
    #[serde(default, deserialize_with = "one_or_many")]
    installed: Vec<WuResult>,
    #[serde(default)]
    reboot_required: bool,
}

#[derive(Debug, Deserialize)]
struct WuResult {
    update: WuUpdate,
    result: i64,
    #[serde(default)]
    hresult: i64,
    #[serde(default)]
    reboot: bool,
}

#[derive(Debug, Deserialize)]
struct WuUpdate {
    #[serde(default)]
    id: String,
    #[serde(default)]
    kb: String,
    #[serde(default)]
    title: String,
    #[serde(default, deserialize_with = "one_or_many")]
    categories: Vec<String>,
    #[serde(default)]
    size: u64,
    /// 0 never, 1 always, 2 can request a restart.
    #[serde(default)]
    reboot: i64,
}

impl WuUpdate {
    fn into_update(self) -> Update {
        let classification = self
            .categories
            .iter()
            .find_map(|c| farm_proto::updates::classification(c))
            .map_or_else(String::new, |c| c.0.to_string());
        Update {
            id: self.id,
            kb: self.kb,
            title: self.title,
            classification,
            size_bytes: self.size,
            reboot_required: self.reboot != 0,
        }
    }
}

/// PowerShell's ConvertTo-Json writes a one-element array as the element
/// itself: both read as a list.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
        None(()),
    }
    Ok(match OneOrMany::<T>::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(t) => vec![t],
        OneOrMany::None(()) => Vec::new(),
    })
}

/// `OperationResultCode` in words (2 and 3 are successes).
fn result_code(code: i64) -> &'static str {
    match code {
        2 => "succeeded",
        3 => "succeeded_with_errors",
        5 => "aborted",
        0 => "not_started",
        1 => "in_progress",
        _ => "failed",
    }
}

/// Whether `reg query` of `PendingFileRenameOperations` shows a rename
/// waiting: its REG_MULTI_SZ holds more than separators.
pub fn renames_pending(out: &Output) -> bool {
    out.code == Some(0)
        && out.stdout.lines().any(|l| {
            l.split_once("REG_MULTI_SZ")
                .is_some_and(|(_, v)| !v.replace("\\0", "").trim().is_empty())
        })
}

/// The start type in `sc qc`'s output (its symbolic names are the same in
/// every language).
pub fn start_type(out: &Output) -> Option<String> {
    let text = &out.stdout;
    if out.code != Some(0) {
        return None;
    }
    Some(
        if text.contains("AUTO_START") && text.contains("(DELAYED)") {
            "delayed-auto"
        } else if text.contains("AUTO_START") {
            "auto"
        } else if text.contains("DEMAND_START") {
            "demand"
        } else if text.contains("DISABLED") {
            "disabled"
        } else {
            return None;
        }
        .to_string(),
    )
}

/// A checked update id (a GUID) for the install script.
fn update_id(id: &str) -> Option<String> {
    (id.len() <= 64 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_string())
}

#[async_trait]
impl Host for WindowsHost {
    fn backend(&self) -> &'static str {
        "windows"
    }

    async fn boot(&self) -> Option<Boot> {
        self.boot
            .get_or_init(|| async {
                let answer: Result<BootAnswer, _> =
                    self.powershell(BOOT_SCRIPT, self.timeouts.command).await;
                match answer {
                    Ok(a) => {
                        let time = a
                            .boot
                            .parse::<jiff::Timestamp>()
                            .map(|t| t.as_millisecond().max(0) as u64)
                            .unwrap_or(0);
                        Some(Boot { id: a.boot, time_unix_ms: time })
                    }
                    Err(e) => {
                        tracing::warn!("the server's boot time cannot be read ({e}): a restart cannot be proven, so none is done");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    async fn reboot_pending(&self) -> RebootPending {
        let mut out = RebootPending::default();
        let t = self.timeouts.command;
        for (key, reason) in PENDING_KEYS {
            match self
                .run(&self.tools.reg, &["query".into(), key.into()], t)
                .await
            {
                Ok(o) if o.code == Some(0) => out.reasons.push(reason.into()),
                Ok(_) => {}
                Err(e) => out.notes.push(format!("{reason}: {e}")),
            }
        }
        let renames = self
            .run(
                &self.tools.reg,
                &[
                    "query".into(),
                    SESSION_MANAGER.into(),
                    "/v".into(),
                    "PendingFileRenameOperations".into(),
                ],
                t,
            )
            .await;
        match renames {
            Ok(o) if renames_pending(&o) => out.reasons.push("file-renames".into()),
            Ok(_) => {}
            Err(e) => out.notes.push(format!("file-renames: {e}")),
        }
        out.pending = !out.reasons.is_empty();
        out
    }

    async fn search(&self, filter: &UpdateFilter) -> Result<Updates, IisError> {
        let (updates, reboot) = self.search_updates(filter).await?;
        Ok(Updates {
            updates,
            source: "wua".into(),
            notes: if reboot {
                vec!["Windows Update says a restart is required".into()]
            } else {
                Vec::new()
            },
        })
    }

    async fn install(
        &self,
        filter: &UpdateFilter,
        timeout: Duration,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Installed, IisError> {
        let (todo, _) = self.search_updates(filter).await?;
        if todo.is_empty() {
            progress("no update to install".into());
            return Ok(Installed::default());
        }
        let (fit, odd): (Vec<&Update>, Vec<&Update>) =
            todo.iter().partition(|u| update_id(&u.id).is_some());
        let names = |v: &[&Update]| {
            v.iter()
                .map(|u| {
                    if u.kb.is_empty() {
                        u.title.as_str()
                    } else {
                        u.kb.as_str()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        progress(format!(
            "downloading and installing {} update(s): {}",
            fit.len(),
            names(&fit)
        ));
        if !odd.is_empty() {
            progress(format!(
                "left out (an update id that is not a GUID): {}",
                names(&odd)
            ));
        }
        let ids: Vec<String> = fit.iter().map(|u| u.id.clone()).collect();
        let script = install_script(&criteria(&filter.classifications)?, &ids);
        let answer: InstallAnswer = self.powershell(&script, timeout).await?;
        Ok(Installed {
            results: answer
                .installed
                .into_iter()
                .map(|r| {
                    let ok = matches!(r.result, 2 | 3);
                    let u = r.update.into_update();
                    UpdateResult {
                        kb: u.kb,
                        title: u.title,
                        result: result_code(r.result).into(),
                        hresult: (!ok || r.hresult != 0).then(|| hresult(r.hresult)),
                        reboot_required: r.reboot,
                    }
                })
                .collect(),
            reboot_required: answer.reboot_required,
            notes: Vec::new(),
        })
    }

    async fn reboot(&self, comment: &str, delay: Duration, updates: bool) -> Result<(), IisError> {
        let comment: String = comment.chars().take(MAX_COMMENT).collect();
        let args = |_: ()| -> Vec<String> {
            vec![
                "/r".into(),
                "/t".into(),
                delay.as_secs().min(315_360_000).to_string(),
                "/d".into(),
                if updates {
                    REASON_UPDATES
                } else {
                    REASON_MAINTENANCE
                }
                .into(),
                "/c".into(),
                comment.clone(),
            ]
        };
        let t = self.timeouts.command;
        let out = self.run(&self.tools.shutdown, &args(()), t).await?;
        match out.code {
            Some(0) => Ok(()),
            // A shutdown is under way already: the server goes down.
            Some(1115) => Ok(()),
            // One is scheduled (not ours, or with another delay): it is
            // cancelled and ours asked again, once.
            Some(1190) => {
                self.run(&self.tools.shutdown, &["/a".into()], t).await?;
                let again = self.run(&self.tools.shutdown, &args(()), t).await?;
                match again.code {
                    Some(0) | Some(1115) => Ok(()),
                    code => Err(IisError::Command {
                        command: "shutdown /r".into(),
                        code: code.unwrap_or(-1),
                        message: again.text().trim().to_string(),
                    }),
                }
            }
            code => Err(IisError::Command {
                command: "shutdown /r".into(),
                code: code.unwrap_or(-1),
                message: out.text().trim().to_string(),
            }),
        }
    }

    fn service_start(&self) -> Option<String> {
        match &self.service {
            None => Some("not a service".into()),
            Some(_) => self.service_start.get().cloned().flatten(),
        }
    }
}

impl WindowsHost {
    /// Reads the agent's own service start type once (`sc qc NAME`), for
    /// [`Host::service_start`].
    pub async fn read_service_start(&self) {
        let Some(name) = &self.service else { return };
        let got = self
            .run(
                &self.tools.sc,
                &["qc".into(), name.clone()],
                self.timeouts.command,
            )
            .await
            .ok()
            .and_then(|o| start_type(&o));
        let _ = self.service_start.set(got);
    }
}

#[cfg(test)]
mod tests;
