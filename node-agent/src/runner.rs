//! Running the IIS tools: argv vectors only, never a shell string, each
//! bounded in time.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

/// What a tool printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// `None` when the process was killed (timeout) or had no exit code.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: impl Into<String>) -> Self {
        Self {
            code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    pub fn exit(code: i32, stdout: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// stdout and stderr, for messages (appcmd prints errors on stdout).
    pub fn text(&self) -> String {
        match (self.stdout.trim().is_empty(), self.stderr.trim().is_empty()) {
            (_, true) => self.stdout.clone(),
            (true, false) => self.stderr.clone(),
            (false, false) => format!("{}\n{}", self.stdout, self.stderr),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error("could not start {program}: {detail}")]
    Spawn { program: String, detail: String },
    #[error("{program} did not finish within {after:?} and was killed")]
    Timeout { program: String, after: Duration },
}

/// Runs one program with arguments.
#[async_trait]
pub trait CommandRunner: Send + Sync + 'static {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, RunError>;
}

/// Runs real processes.
pub struct SystemRunner;

/// The most output read from one tool.
const MAX_OUTPUT: usize = 4 * 1024 * 1024;

#[async_trait]
impl CommandRunner for SystemRunner {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, RunError> {
        let child = tokio::process::Command::new(PathBuf::from(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RunError::Spawn {
                program: program.to_string(),
                detail: e.to_string(),
            })?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| RunError::Timeout {
                program: program.to_string(),
                after: timeout,
            })?
            .map_err(|e| RunError::Spawn {
                program: program.to_string(),
                detail: e.to_string(),
            })?;
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)]).into_owned();
        Ok(Output {
            code: out.status.code(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        })
    }
}

#[cfg(all(test, not(unix)))]
mod tests {
    /// The runner's own tests use printf and sleep; on Windows the runner
    /// is exercised by the command backend's tests and the hooks of
    /// tests/deploy.rs (cmd.exe).
    #[test]
    fn skipped_here_the_runner_tests_need_unix_tools() {
        eprintln!("SKIPPED runner tests: they run /usr/bin/printf and /bin/sleep");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arguments_are_passed_verbatim_without_a_shell() {
        let args = vec![
            "a b".to_string(),
            "$HOME".into(),
            "x\"y".into(),
            "&|;".into(),
        ];
        let out = SystemRunner
            .run(
                "/usr/bin/printf",
                &["%s\\n".to_string()]
                    .into_iter()
                    .chain(args.clone())
                    .collect::<Vec<_>>(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), args);
    }

    #[tokio::test]
    async fn a_hanging_tool_is_killed() {
        let e = SystemRunner
            .run("/bin/sleep", &["10".into()], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }));
    }
}
