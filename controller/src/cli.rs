//! Command-line arguments. Flags are a documented contract.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "farmctl",
    version,
    about = "Rolling app-pool recycles and IIS resets across a load-balanced IIS farm"
)]
pub struct Cli {
    /// More logging (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output; only the result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Accepted before any command; shown with the commands it acts on.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Accepted before any command; shown with the commands it acts on.
    #[command(flatten)]
    pub state: StateArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How the agents are reached: given to the commands that talk to them.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Talk plaintext gRPC to the agents (they must run with --insecure
    /// too); without it the inventory's agent.tls is required.
    #[arg(long)]
    pub insecure: bool,
}

/// Where run state is kept: given to the commands that read or write it.
#[derive(Args, Debug, Clone, Default)]
pub struct StateArgs {
    /// Where run journals are kept (default: $FARMCTL_STATE_DIR, else the
    /// user's state directory: ~/.local/state/farmctl on Linux, %LOCALAPPDATA%\farmctl on Windows).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep run state on etcd: `etcd://host:port[,host:port]` or `etcds://...`
    /// (TLS files in FARMCTL_ETCD_CA/CERT/KEY); default $FARMCTL_STATE_STORE,
    /// else the inventory's `state:`, else the journal directory.
    #[arg(long, value_name = "URL")]
    pub state_store: Option<String>,
}

impl Cli {
    /// `--insecure`, before the command or after it.
    pub fn insecure(&self) -> bool {
        self.conn.insecure || self.command.conn().is_some_and(|c| c.insecure)
    }

    /// `--state-dir`/`--state-store`: the command's own first, then the
    /// ones given before it.
    pub fn state(&self) -> StateArgs {
        let mut given = self.command.state();
        given.push(&self.state);
        StateArgs {
            state_dir: given.iter().find_map(|s| s.state_dir.clone()),
            state_store: given
                .iter()
                .find_map(|s| s.state_store.clone())
                .or_else(|| {
                    std::env::var("FARMCTL_STATE_STORE")
                        .ok()
                        .filter(|v| !v.is_empty())
                }),
        }
    }
}

impl Command {
    /// The command's `--insecure`, when it talks to agents.
    pub fn conn(&self) -> Option<&ConnArgs> {
        Some(match self {
            Command::Validate(a) => &a.inv.conn,
            Command::Status(a) => &a.inv.conn,
            Command::Recycle(a) => &a.rollout.inv.conn,
            Command::Reset(a) | Command::Patch(a) | Command::Reboot(a) => &a.inv.conn,
            Command::Deploy(a) => &a.rollout.inv.conn,
            Command::Rollback(a) => &a.rollout.inv.conn,
            Command::Drain(a) | Command::Undrain(a) => &a.inv.conn,
            Command::Plan(a) => &a.rollout.inv.conn,
            Command::Guard(a) => &a.inv.conn,
            Command::Resume(a) => &a.conn,
            _ => return None,
        })
    }

    /// The command's `--state-dir`/`--state-store`, when it keeps runs:
    /// a subcommand's (`runs show`) before its parent's (`runs`).
    pub fn state(&self) -> Vec<&StateArgs> {
        vec![match self {
            Command::Status(a) => &a.state,
            Command::Recycle(a) => &a.rollout.state,
            Command::Reset(a) | Command::Patch(a) | Command::Reboot(a) => &a.state,
            Command::Deploy(a) => &a.rollout.state,
            Command::Rollback(a) => &a.rollout.state,
            Command::Plan(a) => &a.rollout.state,
            Command::Runs(a) => match &a.show {
                Some(RunsCommand::Show(s)) => return vec![&s.state, &a.state],
                Some(RunsCommand::Import(i)) => return vec![&i.state, &a.state],
                None => &a.state,
            },
            Command::Resume(a) => &a.state,
            Command::Demo(a) => &a.state,
            Command::Guard(a) => &a.state,
            _ => return Vec::new(),
        }]
    }

    /// The command's `--output`, when it has one.
    pub fn output(&self) -> Option<Output> {
        Some(match self {
            Command::Validate(a) => a.inv.output,
            Command::Status(a) => a.inv.output,
            Command::Recycle(a) => a.rollout.inv.output,
            Command::Reset(a) | Command::Patch(a) | Command::Reboot(a) => a.inv.output,
            Command::Deploy(a) => a.rollout.inv.output,
            Command::Rollback(a) => a.rollout.inv.output,
            Command::Drain(a) | Command::Undrain(a) => a.inv.output,
            Command::Plan(a) => a.rollout.inv.output,
            Command::Runs(a) => match &a.show {
                Some(RunsCommand::Show(s)) => s.output,
                Some(RunsCommand::Import(_)) | None => a.output,
            },
            Command::Resume(a) => a.output,
            Command::Demo(a) => a.output,
            Command::Logs(a) => a.output,
            // Decisions go out as lines of their own, never run events.
            Command::Guard(_) => return None,
            Command::Certs(_) | Command::Completions(_) | Command::Man(_) | Command::Service(_) => {
                return None
            }
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check an inventory file and report every problem in it.
    Validate(ValidateArgs),
    /// Show every node: agent, drain state, IIS services, pools, health.
    Status(StatusArgs),
    /// Rolling recycle of application pools, node by node.
    Recycle(RecycleArgs),
    /// Rolling full IIS reset (stop, force if needed, start, verify).
    Reset(RolloutArgs),
    /// Patch night, node by node: drain, install the Windows updates
    /// (the inventory's `patch:`), restart when they need it, wait for the
    /// new boot and IIS, probe, return, judge the node against the ones
    /// not yet patched before the next.
    Patch(RolloutArgs),
    /// Rolling restart of the servers, node by node, as `patch` does it
    /// without installing.
    Reboot(RolloutArgs),
    /// Watch the farm and heal it: a pool sick compared with its peers
    /// (confirmed, within the inventory's `guard:` budget, cool-downs and
    /// capacity) is recycled alone on its node behind the load balancer;
    /// a sick farm is held and paged, never recycled. Every decision is
    /// logged with its figures. Runs until Ctrl-C; one guard acts per
    /// farm, another stands by.
    Guard(GuardArgs),
    /// Rolling deployment: stage the release on every node ahead, then
    /// node by node switch the site to it, recycle, prove it answers.
    Deploy(DeployArgs),
    /// Rolling switch back to a release still kept on every node.
    Rollback(RollbackArgs),
    /// Take one node out of rotation and wait until it is idle.
    Drain(DrainArgs),
    /// Put one node back into rotation and wait until the LB sees it up.
    Undrain(DrainArgs),
    /// Show the batches, the capacity timeline and an estimate, without acting.
    Plan(PlanArgs),
    /// List the runs in the journal directory, with their outcome.
    Runs(RunsArgs),
    /// Continue a run whose controller stopped (crash, kill, second Ctrl-C).
    Resume(ResumeArgs),
    /// Make the farm's CA and the agents' and controllers' certificates.
    Certs(CertsArgs),
    /// Start a simulated 4-node farm and run a rolling recycle under traffic.
    Demo(DemoArgs),
    /// Print the shell completion script for bash, zsh, fish or powershell.
    Completions(CompletionsArgs),
    /// Write the man pages (farmctl.1 and one per command) into a folder.
    Man(ManArgs),
    /// Read IIS logs copied off the servers (files, a folder per server,
    /// zips): what users got per server and site, and which server is an
    /// outlier, by the same rule as `status`.
    Logs(LogsArgs),
    /// `farmctl guard` as a Windows service (install, uninstall; `run` is
    /// what the Service Control Manager starts).
    Service(ServiceArgs),
}

#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ServiceCommand {
    /// Registers the service (automatic delayed start, restart on
    /// failure, LocalSystem unless --account) running the `guard` command
    /// line given after `--`; its paths must be absolute, e.g.
    /// `-- guard -i C:\farm\farm.yaml --state-dir C:\farm\state`.
    Install {
        #[arg(long, default_value = "farmctl-guard")]
        name: String,
        #[arg(long, default_value = "farmctl guard")]
        display_name: String,
        /// Run as this account (`DOMAIN\user`, `NT AUTHORITY\NetworkService`).
        #[arg(long)]
        account: Option<String>,
        /// The account's password, from this environment variable.
        #[arg(long, requires = "account")]
        password_env: Option<String>,
        /// The farmctl command line the service runs: `guard ...`.
        #[arg(last = true, required = true)]
        command_line: Vec<String>,
    },
    /// Stops (if running) and removes the service.
    Uninstall {
        #[arg(long, default_value = "farmctl-guard")]
        name: String,
    },
    /// What the Service Control Manager starts; not for use by hand.
    Run {
        #[arg(long, default_value = "farmctl-guard")]
        name: String,
        #[arg(last = true, required = true)]
        command_line: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Log files, folders (one per server: web01/, web02/, ...) or zips,
    /// as copied off the servers; W3C logs and HTTP.sys error logs.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only lines at or after this time (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in UTC).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only lines before this time.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only this site: its folder `W3SVC<id>`, or the id.
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
    /// Also the figures per step of this long (`1m`, `5m`, `1h`): a table
    /// and a terminal chart, and `series` in JSON.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub by: Option<std::time::Duration>,
    /// Requests for this URL path are health checks, not users
    /// (repeatable; farmctl's own probes always are).
    #[arg(long = "check-path", value_name = "PATH")]
    pub check_paths: Vec<String>,
    /// Also write one self-contained HTML page with the tables and plots.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Keep reading the folders as they grow (as the agent does) and
    /// print the figures every --interval over the last --window.
    #[arg(long)]
    pub follow: bool,
    /// --follow: time between prints.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// --follow: what each print covers.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: std::time::Duration,
    /// --follow: stop after this many prints.
    #[arg(long, requires = "follow")]
    pub count: Option<u64>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Where to write them (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    /// One JSON document at the end.
    Json,
    /// One JSON object per line: for runs, one per event as it happens.
    Jsonl,
}

impl Output {
    /// JSON of either kind.
    pub fn structured(self) -> bool {
        matches!(self, Output::Json | Output::Jsonl)
    }
}

#[derive(Args, Debug)]
pub struct InventoryArgs {
    /// The farm's inventory file.
    #[arg(short, long, value_name = "FILE", env = "FARMCTL_INVENTORY")]
    pub inventory: PathBuf,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub inv: InventoryArgs,
    /// Also connect: each agent (over the inventory's TLS), the load
    /// balancer (its members), each node's sites (the probes), and print
    /// a checklist of what to fix. Exit 1 when a check fails.
    #[arg(long)]
    pub connect: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub inv: InventoryArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Keep watching: redraw in place on a terminal, a snapshot per
    /// refresh otherwise, until Ctrl-C.
    #[arg(short, long)]
    pub watch: bool,
    /// Time between refreshes when watching.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Stop watching after this many refreshes.
    #[arg(long, requires = "watch")]
    pub count: Option<u64>,
}

#[derive(Args, Debug)]
pub struct GuardArgs {
    /// `text`: a line per decision; `jsonl` (or `json`): one JSON object
    /// per decision (`decision`, `reason`, `node`, `pool`, the figures).
    #[command(flatten)]
    pub inv: InventoryArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Decide and log as usual, act on nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The decision log, one JSON line per decision, appended (default:
    /// `guard/FARM.decisions.jsonl` in the state directory).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Serve the guard's own Prometheus metrics on this address
    /// (`127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Stop after this many evaluations (once the seat is held).
    #[arg(long)]
    pub count: Option<u64>,
}

impl GuardArgs {
    /// A guard of `inventory` as a program runs it (the demo, the bench):
    /// acting, decisions appended to `log`, printed as `output` says.
    pub fn of(inventory: PathBuf, log: PathBuf, output: Output) -> GuardArgs {
        GuardArgs {
            inv: InventoryArgs {
                inventory,
                output,
                conn: ConnArgs { insecure: false },
            },
            state: StateArgs::default(),
            dry_run: false,
            log: Some(log),
            metrics: None,
            count: None,
        }
    }
}

#[derive(Args, Debug)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub inv: InventoryArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Started before the maintenance window opens: wait for it (a
    /// countdown on a terminal, a line a minute otherwise) instead of
    /// refusing.
    #[arg(long)]
    pub wait_for_window: bool,
    /// Only these nodes (comma-separated), in inventory order.
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub nodes: Vec<String>,
    /// Override rollout.max_unavailable: a count or a percentage (`25%`).
    #[arg(long, value_name = "N|P%")]
    pub max_unavailable: Option<String>,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Do one node first, then ask whether to go on (needs a terminal).
    #[arg(long)]
    pub canary: bool,
    /// Maintenance window, `02:00-05:00` or `02:00-05:00 Europe/Berlin`
    /// (overrides rollout.window): refused outside it, and no node is
    /// started that would not finish in it.
    #[arg(long, value_name = "HH:MM-HH:MM [ZONE]")]
    pub window: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanAction {
    Recycle,
    Reset,
    /// A deployment (`--site`, `--version`, `--package`).
    Deploy,
    /// A rollback (`--site`, and `--to` or the release before).
    Rollback,
    /// Windows updates and restarts.
    Patch,
    /// Restarts of the servers.
    Reboot,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// What would be run.
    #[arg(value_enum)]
    pub action: PlanAction,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Application pool (recycle), as for `farmctl recycle`.
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
    /// deploy, rollback: the inventory's site.
    #[arg(long)]
    pub site: Option<String>,
    /// deploy: the release's version.
    #[arg(long)]
    pub version: Option<String>,
    /// deploy: the release package.
    #[arg(long, value_name = "FILE.zip")]
    pub package: Option<std::path::PathBuf>,
    /// rollback: the release to go back to (default: the one before).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub show: Option<RunsCommand>,
    /// An inventory whose `state:` names the store (etcd).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub inventory: Option<PathBuf>,
    /// Only this farm's runs (every farm's by default).
    #[arg(long, value_name = "NAME", global = true)]
    pub farm: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// One run's picture: each node's phases with times, capacity, errors.
    Show(RunShowArgs),
    /// Copy the runs of the local journal directory into the shared store
    /// (etcd), so the team's history has them; runs already there are
    /// left as they are.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct RunShowArgs {
    /// The run; default the newest.
    pub run_id: Option<String>,
    /// Also write one self-contained HTML page: a timeline per node, the
    /// capacity line, versions, errors.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run to continue; default the newest unfinished one.
    pub run_id: Option<String>,
    /// Inventory to use instead of the one the run started with (also
    /// where an etcd store is found).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Take over the farm lock of a run whose controller is still
    /// registered on etcd: only when you know it is dead.
    #[arg(long)]
    pub force_takeover: bool,
    /// A halted run's failed nodes are done again, from the drain on.
    #[arg(long, conflicts_with = "skip_failed")]
    pub retry_failed: bool,
    /// A halted run's failed nodes are left as they are (reported, with
    /// the command that returns one left out of rotation); the rest go on.
    #[arg(long)]
    pub skip_failed: bool,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    #[command(flatten)]
    pub inv: InventoryArgs,
    /// The node, by its inventory name.
    pub node: String,
    /// Skip the safety check (min_healthy for drain, health for undrain).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct RecycleArgs {
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Application pool to recycle (repeatable); default: the inventory's
    /// app_pools, else every pool serving a site.
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
    /// Only the nodes whose users get errors or latency far from their
    /// peers' (see Traffic health in the README), and on them only the
    /// pools that do; refused (exit 3) when no node is one or the figures
    /// are missing.
    #[arg(long, conflicts_with_all = ["pools", "nodes"])]
    pub outliers: bool,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// The inventory's site to deploy.
    #[arg(long)]
    pub site: String,
    /// The release: a zip whose root is the site's content.
    #[arg(long, value_name = "FILE.zip")]
    pub package: PathBuf,
    /// The release's version (its folder on the nodes, what the version
    /// probe expects).
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// Canary analysis flags (over the inventory's `analysis:`).
#[derive(Args, Debug, Clone, Default)]
pub struct AnalysisArgs {
    /// Judge the release on the canaries' real traffic for this long
    /// before the rest of the farm gets it (`5m`; `0` for no analysis).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub soak: Option<std::time::Duration>,
    /// Nodes that take the release first (default: `analysis.canaries`, 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub canaries: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// The inventory's site.
    #[arg(long)]
    pub site: String,
    /// The release to go back to (default: the one every node served
    /// before its current one).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the simulated farm running (until Ctrl-C or SIGTERM) instead of
    /// running a recycle, so every other command can be tried on it.
    #[arg(long, requires = "dir")]
    pub serve: bool,
    /// Where to write the farm's inventory and sim files (default: a
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=32))]
    pub nodes: u16,
    /// Run a rolling reset instead of a recycle.
    #[arg(long, conflicts_with_all = ["deploy", "patch"])]
    pub reset: bool,
    /// Patch night instead: every node installs two updates and restarts
    /// (its agent process ends and comes back after a 3 s boot), one at a
    /// time behind the load balancer, each judged against the others
    /// before the next.
    #[arg(long, conflicts_with = "deploy")]
    pub patch: bool,
    /// `farmctl guard` instead, under traffic: web02's pool goes bad and
    /// is recycled alone and healed; then every node is slowed at once
    /// and the guard holds (a sick farm is not recycled).
    #[arg(long, conflicts_with_all = ["deploy", "patch", "reset"])]
    pub guard: bool,
    /// Run a rolling deployment of a generated release 2.0.0 instead.
    #[arg(long)]
    pub deploy: bool,
    /// With --deploy: release 2.0.0 fails 5% of its requests (its
    /// farm-sim.yaml); a 20s canary soak catches it and rolls it back.
    #[arg(long, requires = "deploy")]
    pub bad_release: bool,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory holding the CA and the issued files.
    #[arg(long, default_value = "certs", global = true)]
    pub dir: PathBuf,
    /// Overwrite existing files.
    #[arg(long, global = true)]
    pub force: bool,
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the farm CA (ca.pem, ca-key.pem).
    Init {
        /// Farm name, written into the CA's name.
        #[arg(long, default_value = "farm")]
        farm: String,
    },
    /// Issue a certificate signed by the farm CA.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Revoke certificates: adds them to DIR/revoked.txt and writes
    /// DIR/crl.pem, signed by the CA, for the agents' `tls.crl`.
    Revoke {
        /// Certificate files (PEM) to revoke.
        #[arg(required = true)]
        certs: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum IssueCommand {
    /// A server certificate for the agent on NODE (agent-NODE.pem).
    Agent {
        /// The node's inventory name: the controller checks it.
        node: String,
        /// More DNS names or IPs the certificate is valid for.
        #[arg(long)]
        san: Vec<String>,
    },
    /// A client certificate for a controller (controller-NAME.pem).
    Controller {
        name: String,
        /// `operator` (everything) or `viewer` (status only).
        #[arg(long)]
        role: String,
    },
}
