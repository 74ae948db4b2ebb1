//! IIS Application Request Routing: a fixed PowerShell script over
//! Microsoft.Web.Administration (appcmd only edits the configuration; the
//! runtime `SetState` method and `counters` are reached this way). Names
//! go into the script as single-quoted literals only after
//! [`check_farm`]/[`check_server`] allowed them, so no quote gets in.
use super::LbMemberError;
use farm_proto::domain::{ArrDrainState, LbMemberAction};

/// One line the script prints last: `farmctl-arr: state=N healthy=B
/// currentRequests=N`.
const MARK: &str = "farmctl-arr:";

pub fn check_farm(farm: &str) -> Result<(), LbMemberError> {
    let ok = !farm.is_empty()
        && farm.len() <= 128
        && farm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-".contains(c));
    ok.then_some(()).ok_or_else(|| {
        LbMemberError::Invalid(format!(
            "web farm name {:?}: only letters, digits, spaces, `-`, `_` and `.`",
            farm.escape_debug().to_string()
        ))
    })
}

pub fn check_server(server: &str) -> Result<(), LbMemberError> {
    let ok = !server.is_empty()
        && server.len() <= 255
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c));
    ok.then_some(()).ok_or_else(|| {
        LbMemberError::Invalid(format!(
            "server address {:?}: a host name or IP",
            server.escape_debug().to_string()
        ))
    })
}

/// The `SetState` value for an action: `Drain`, `GracefulStop` or `Start`
/// (none: only read).
pub fn new_state(action: LbMemberAction, mode: ArrDrainState) -> Option<&'static str> {
    match action {
        LbMemberAction::State => None,
        LbMemberAction::Drain => Some(mode.as_str()),
        LbMemberAction::Return => Some("Start"),
    }
}

/// The script for `farm`/`server` (checked), setting `new_state` first
/// when given. Exit 3: no such farm; 4: no such server in it.
pub fn script(farm: &str, server: &str, new_state: Option<&str>) -> String {
    let set = match new_state {
        Some(s) => format!(
            "$m = $arr.Methods['SetState'].CreateInstance(); $m.Input.SetAttributeValue('newState', '{s}'); $m.Execute()\n"
        ),
        None => String::new(),
    };
    format!(
        "$ErrorActionPreference = 'Stop'\n\
         [void][System.Reflection.Assembly]::LoadFrom(\"$env:windir\\system32\\inetsrv\\Microsoft.Web.Administration.dll\")\n\
         $mgr = New-Object Microsoft.Web.Administration.ServerManager\n\
         $farm = $mgr.GetApplicationHostConfiguration().GetSection('webFarms').GetCollection() | Where-Object {{ $_.GetAttributeValue('name') -eq '{farm}' }}\n\
         if (-not $farm) {{ Write-Output '{MARK} no-farm'; exit 3 }}\n\
         $srv = $farm.GetCollection() | Where-Object {{ $_.GetAttributeValue('address') -eq '{server}' }}\n\
         if (-not $srv) {{ Write-Output '{MARK} no-server'; exit 4 }}\n\
         $arr = $srv.GetChildElement('applicationRequestRouting')\n\
         {set}\
         $c = $arr.GetChildElement('counters')\n\
         Write-Output ('{MARK} state=' + $c.GetAttributeValue('state') + ' healthy=' + $c.GetAttributeValue('isHealthy') + ' currentRequests=' + $c.GetAttributeValue('currentRequests'))\n"
    )
}

/// What the script said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrCounters {
    /// `Available`, `Drain` or `Unavailable`.
    pub state: String,
    pub healthy: bool,
    pub current_requests: i64,
}

/// Reads the script's last line; `farm`/`server` name a missing one.
pub fn parse(stdout: &str, farm: &str, server: &str) -> Result<ArrCounters, LbMemberError> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(MARK))
        .map(str::trim)
        .ok_or_else(|| {
            LbMemberError::Failed(format!(
                "the ARR script printed no `{MARK}` line: {}",
                stdout.trim()
            ))
        })?;
    match line {
        "no-farm" => {
            return Err(LbMemberError::NotFound(format!(
                "ARR has no web farm '{farm}'"
            )))
        }
        "no-server" => {
            return Err(LbMemberError::NotFound(format!(
                "web farm '{farm}' has no server '{server}'"
            )))
        }
        _ => {}
    }
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| {
                LbMemberError::Failed(format!("the ARR script's line has no `{k}`: {line}"))
            })
    };
    // The counters' state is an enumeration: its number, or its name.
    let state = match field("state")? {
        "0" | "Available" => "Available",
        "1" | "Drain" => "Drain",
        "2" | "Unavailable" => "Unavailable",
        other => {
            return Err(LbMemberError::Failed(format!(
                "the ARR counters' state {other:?} is not 0 Available, 1 Drain or 2 Unavailable"
            )))
        }
    };
    let healthy = field("healthy")?.eq_ignore_ascii_case("true");
    let current_requests = field("currentRequests")?
        .parse()
        .map_err(|_| LbMemberError::Failed(format!("currentRequests is not a count: {line}")))?;
    Ok(ArrCounters {
        state: state.into(),
        healthy,
        current_requests,
    })
}
