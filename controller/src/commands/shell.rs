//! `farmctl completions SHELL` and `farmctl man`: generated from the
//! argument definitions themselves, so they never drift from the CLI.
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{CommandError, CommandResult, ExitStatus};

pub fn completions(args: &CompletionsArgs) -> CommandResult {
    let mut cmd = Cli::command();
    // Generated in memory: written straight to a closed stdout, the
    // generator would panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "farmctl", &mut script);
    crate::out!("{}", String::from_utf8_lossy(&script));
    Ok(ExitStatus::Done)
}

pub fn man(args: &ManArgs) -> CommandResult {
    let fail = |e: std::io::Error| {
        CommandError::failed(format!(
            "could not write man pages in {}: {e}",
            args.dir.display()
        ))
    };
    std::fs::create_dir_all(&args.dir).map_err(fail)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &args.dir).map_err(fail)?;
    // The tool's own page gets what clap cannot know: exit status,
    // environment, examples.
    let main = args.dir.join("farmctl.1");
    let mut text = std::fs::read_to_string(&main).map_err(fail)?;
    text.push_str(MAN_EXTRA);
    std::fs::write(&main, text).map_err(fail)?;
    crate::outln!("man pages written to {}", args.dir.display());
    Ok(ExitStatus::Done)
}

/// EXIT STATUS, ENVIRONMENT and EXAMPLES of `farmctl(1)`, in roff.
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Done: every node of the run done, or the command succeeded.
.TP
.B 1
The run failed, halted part-way or was stopped by the operator (outcome \fBstopped\fR); a check of \fBvalidate \-\-connect\fR failed; \fBstatus\fR found a node unreachable, unhealthy or out of rotation with no run holding it.
.TP
.B 2
Bad input: usage, the inventory (every problem named with its place), a file it names.
.TP
.B 3
Refused before acting: preflight, capacity, a lease or lock held by another run, the maintenance window, no confirmation. Nothing was touched.
.SH ENVIRONMENT
.TP
.B FARMCTL_INVENTORY
The inventory file when \fB\-i\fR is not given.
.TP
.B FARMCTL_STATE_DIR
Where run journals live (default: the user's state directory).
.TP
.B FARMCTL_STATE_STORE
Run state on etcd instead (\fB\-\-state\-store\fR).
.TP
.B NO_COLOR
No colour, even on a terminal.
.TP
.B USER
The run holder's name (else the OS account).
.SH EXAMPLES
.TP
Try everything on a simulated farm:
.B farmctl demo \-\-serve \-\-dir /tmp/farm
.TP
Check an inventory and reach every agent, the load balancer and the sites:
.B farmctl validate \-i farm.yaml \-\-connect
.TP
A rolling recycle, two nodes at a time, in the night's window:
.B farmctl recycle \-i farm.yaml \-\-max\-unavailable 2 \-\-window "02:00\-05:00" \-\-yes
.TP
Recycle only the pools users see failing:
.B farmctl recycle \-i farm.yaml \-\-outliers \-\-yes
.TP
Deploy with a canary judged on real traffic for five minutes:
.B farmctl deploy \-i farm.yaml \-\-site shop \-\-package shop\-2.0.0.zip \-\-version 2.0.0 \-\-soak 5m \-\-yes
.TP
Finish a run whose controller died:
.B farmctl resume
"#;
