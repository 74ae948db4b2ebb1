//! `kind: exec`: the load balancer is driven by the user's own commands —
//! Kemp, NGINX Plus, Azure, anything in-house. Each is an argv template
//! (`{node}`, `{lb_server}`, `{address}` filled in as whole arguments, no
//! shell), bounded in time; a non-zero exit is an error quoting stderr.
//! The state command prints one JSON line:
//! `{"state":"up|drain|down|maint","sessions":N}` (`sessions` optional).
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use farm_inventory::Node;
use tokio::io::AsyncReadExt;

use super::{LbError, LbState, LoadBalancer, Member, MemberState, Target};

farm_proto::message_error! {
    /// Why the exec driver's state command output does not parse.
    ExecStateError
}

const POLL: Duration = Duration::from_millis(250);
/// Output kept from a command.
const MAX_OUTPUT: u64 = 64 * 1024;

pub struct Exec {
    drain: Vec<String>,
    return_: Vec<String>,
    state: Vec<String>,
    timeout: Duration,
}

/// What the state command said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecState {
    pub state: String,
    pub sessions: Option<u64>,
}

impl Exec {
    pub fn new(cfg: &farm_inventory::Exec) -> Exec {
        Exec {
            drain: cfg.drain.clone(),
            return_: cfg.return_.clone(),
            state: cfg.state.clone(),
            timeout: cfg.timeout,
        }
    }

    fn argv(template: &[String], node: &Node) -> Vec<String> {
        template
            .iter()
            .map(|a| {
                a.replace("{node}", &node.name)
                    .replace("{lb_server}", &node.lb_server)
                    .replace("{address}", &node.address)
            })
            .collect()
    }

    /// Runs the `which` command for `node`; its stdout when it exits 0.
    async fn run(
        &self,
        which: &'static str,
        template: &[String],
        node: &Node,
    ) -> Result<String, LbError> {
        let argv = Self::argv(template, node);
        let fail = |detail: String| LbError::Api {
            lb: self.name(),
            message: format!(
                "the {which} command for {} ({}) {detail}",
                node.name, argv[0]
            ),
        };
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("could not start: {e}")))?;
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.take().map(|s| s.take(MAX_OUTPUT));
        let mut stderr = child.stderr.take().map(|s| s.take(MAX_OUTPUT));
        let work = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_string(&mut out).await;
            }
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_string(&mut err).await;
            }
            child.wait().await
        };
        let status = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(format!("failed: {e}"))),
            Err(_) => {
                return Err(fail(format!(
                    "did not finish within {} (killed)",
                    crate::human::duration(self.timeout)
                )))
            }
        };
        if status.success() {
            Ok(out)
        } else {
            Err(fail(format!(
                "exited with {}: {}",
                status
                    .code()
                    .map_or_else(|| "a signal".to_string(), |c| c.to_string()),
                err.trim()
            )))
        }
    }

    pub async fn read_state(&self, node: &Node) -> Result<ExecState, LbError> {
        let out = self.run("state", &self.state, node).await?;
        parse_state(&out).map_err(|e| LbError::Api {
            lb: self.name(),
            message: format!("the state command for {}: {e}", node.name),
        })
    }
}

/// The last non-empty line of the state command's output.
pub fn parse_state(out: &str) -> Result<ExecState, ExecStateError> {
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| {
            ExecStateError(
                "printed nothing; expected {\"state\":\"up|drain|down|maint\",\"sessions\":N}"
                    .into(),
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| ExecStateError(format!("printed {:?}, not a JSON line: {e}", line.trim())))?;
    let state = v["state"]
        .as_str()
        .filter(|s| ["up", "drain", "down", "maint"].contains(s))
        .ok_or_else(|| {
            ExecStateError(format!(
                "printed {line:?}: `state` must be up, drain, down or maint"
            ))
        })?;
    let sessions = match &v["sessions"] {
        serde_json::Value::Null => None,
        n => Some(n.as_u64().ok_or_else(|| {
            ExecStateError(format!("printed {line:?}: `sessions` must be a count"))
        })?),
    };
    Ok(ExecState {
        state: state.to_string(),
        sessions,
    })
}

fn lb_state(s: &str) -> LbState {
    match s {
        "up" => LbState::Up,
        "drain" => LbState::Draining,
        "maint" => LbState::Maintenance,
        "down" => LbState::Down,
        _ => LbState::Unknown,
    }
}

#[async_trait]
impl LoadBalancer for Exec {
    fn name(&self) -> String {
        format!(
            "exec load balancer ({})",
            self.drain.first().map_or("", String::as_str)
        )
    }

    fn kind(&self) -> &'static str {
        "exec"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        let states = futures::future::join_all(nodes.iter().map(|n| self.read_state(n))).await;
        nodes
            .iter()
            .zip(states)
            .map(|(n, s)| {
                let s = s?;
                Ok(Member {
                    node: n.name.clone(),
                    state: Some(MemberState {
                        state: lb_state(&s.state),
                        raw: s.state,
                    }),
                })
            })
            .collect()
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        self.run("drain", &self.drain, t.node).await.map(|_| ())
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        // Without a count, only the node's own in-flight can tell.
        super::sessions_gone(
            timeout,
            POLL,
            || self.read_state(node),
            |s| s.sessions.unwrap_or(0) == 0,
        )
        .await
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        self.run("return", &self.return_, t.node).await?;
        super::MemberWait::up(self, t, start, timeout, POLL, "up")
            .until(|| async {
                let s = self.read_state(t.node).await?;
                Ok(MemberState {
                    state: lb_state(&s.state),
                    raw: s.state,
                })
            })
            .await
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let s = self.read_state(t.node).await?;
        Ok(Some(matches!(s.state.as_str(), "drain" | "maint")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_line_is_the_last_one() {
        let s = parse_state("connecting...\n{\"state\":\"drain\",\"sessions\":3}\n").unwrap();
        assert_eq!(
            s,
            ExecState {
                state: "drain".into(),
                sessions: Some(3)
            }
        );
        assert_eq!(parse_state("{\"state\":\"up\"}").unwrap().sessions, None);
        assert!(parse_state("")
            .unwrap_err()
            .to_string()
            .contains("printed nothing"));
        assert!(parse_state("{\"state\":\"sideways\"}")
            .unwrap_err()
            .to_string()
            .contains("up, drain"));
        assert!(parse_state("UP")
            .unwrap_err()
            .to_string()
            .contains("not a JSON line"));
        assert!(parse_state("{\"state\":\"up\",\"sessions\":-1}")
            .unwrap_err()
            .to_string()
            .contains("count"));
    }
}
