//! `farmctl demo`: a simulated 4-node farm of real agent processes serving
//! release 1.0.0, a rolling recycle (or reset, or deployment of a generated
//! release 2.0.0, or patch night) under HTTP traffic, and the report.
//! `farmctl demo --serve --dir DIR` keeps the farm up for hand use.
use farm_proto::domain::OperationKind;

use crate::cli::{DemoArgs, Output};
use crate::commands::rollout::finish;
use crate::commands::{load_inventory, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::farm::{Farm, Transport};
use crate::operator::AssumeYes;
use crate::run::{self, DeployRequest, RunRequest, RunSettings};
use crate::sandbox::{
    faulty_release_package, release_package, Sandbox, SandboxSpec, SITE, SITE_HOST,
};
use crate::traffic::Traffic;

pub async fn run(args: &DemoArgs, settings: &Settings) -> CommandResult {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("farmctl-demo-")
                .tempdir()
                .map_err(|e| {
                    CommandError::failed(format!("could not create a temporary directory: {e}"))
                })?;
            temp.path().to_path_buf()
        }
    };
    // One demo per folder: a second would overwrite the first's farm.
    let _in_use = crate::store::pid_lock(&dir.join("demo.lock")).map_err(|e| match e {
        crate::store::PidLockError::Held(pid) => CommandError::refused(format!(
            "{} is in use by another farmctl demo (PID {pid}); stop it first or choose another --dir",
            dir.display()
        )),
        crate::store::PidLockError::Io(e) => {
            CommandError::failed(format!("could not use {}: {e}", dir.display()))
        }
    })?;
    let haproxy = crate::sandbox::haproxy_binary().is_some();
    if !haproxy && !settings.quiet {
        crate::errln!(
            "note: haproxy is not installed (apt-get install -y haproxy); using health-file drain \
             with a built-in health-checking balancer instead"
        );
    }
    let spec = SandboxSpec {
        nodes: args.nodes as usize,
        lb_kind: if haproxy { "haproxy" } else { "health-file" }.into(),
        guard_yaml: if args.guard {
            DEMO_GUARD.into()
        } else {
            String::new()
        },
        ..SandboxSpec::default()
    };
    let sandbox = Sandbox::start(&spec, &dir)
        .await
        .map_err(|e| CommandError::failed(e.to_string()))?;
    let result = tokio::select! {
        r = demo(args, settings, &sandbox) => r,
        _ = shutdown_signal() => {
            crate::errln!("farmctl: interrupted; stopping the simulated farm");
            Ok(ExitStatus::Failed)
        }
    };
    sandbox.stop().await;
    result
}

/// The demo guard's rules: quick, for a farm watched for a few minutes.
const DEMO_GUARD: &str =
    "guard:\n  window: 15s\n  interval: 2s\n  confirm: 3\n  cooldown: 1m\n  relapse: 5m\n";

/// The release the demo deploys.
const NEXT_RELEASE: &str = "2.0.0";

async fn demo(args: &DemoArgs, settings: &Settings, sandbox: &Sandbox) -> CommandResult {
    let inventory = sandbox.inventory.clone();
    let package = if args.bad_release {
        faulty_release_package(&sandbox.dir, NEXT_RELEASE, "error_rate: 0.05\n")
    } else {
        release_package(&sandbox.dir, NEXT_RELEASE)
    }
    .map_err(|e| CommandError::failed(format!("could not write the demo's release: {e}")))?;
    if args.serve {
        crate::outln!(
            "simulated farm of {} nodes is up; inventory: {}",
            sandbox.nodes.len(),
            inventory.display()
        );
        for n in &sandbox.nodes {
            crate::outln!(
                "  {}  agent {}  site http://127.0.0.1:{}/ (Host: {SITE_HOST})",
                n.name,
                n.agent,
                n.http_port
            );
        }
        if let Some(h) = &sandbox.haproxy {
            crate::outln!(
                "  haproxy frontend http://127.0.0.1:{} (Host: {SITE_HOST}), runtime API {} (backend {})",
                h.frontend, h.admin, h.backend
            );
        }
        let me = invocation();
        crate::outln!("try:");
        crate::outln!("  {me} status  -i {}", inventory.display());
        crate::outln!("  {me} recycle -i {} --yes", inventory.display());
        crate::outln!(
            "  {me} deploy  -i {} --site {SITE} --package {} --version {NEXT_RELEASE} --yes",
            inventory.display(),
            package.display()
        );
        crate::outln!(
            "  {me} rollback -i {} --site {SITE} --yes",
            inventory.display()
        );
        crate::outln!("  {me} patch   -i {} --yes", inventory.display());
        crate::outln!(
            "  curl -H 'Host: {SITE_HOST}' http://127.0.0.1:{}/",
            sandbox.nodes[0].http_port
        );
        crate::outln!("Ctrl-C (or SIGTERM) stops the farm.");
        shutdown_signal().await;
        return Ok(ExitStatus::Done);
    }
    let farm = Farm::connect(load_inventory(&inventory)?, Transport::Tls)?;
    if args.guard {
        return guard_demo(&farm, settings, sandbox).await;
    }
    let mut request = RunRequest::new(if args.reset {
        OperationKind::Reset
    } else if args.patch {
        OperationKind::Patch
    } else if args.deploy {
        OperationKind::Deploy
    } else {
        OperationKind::Recycle
    });
    if args.deploy {
        request.deploy = Some(DeployRequest {
            site: SITE.into(),
            version: NEXT_RELEASE.into(),
            package: Some(package),
        });
        if args.bad_release {
            request.soak = Some(std::time::Duration::from_secs(20));
        }
    }
    let run_settings = RunSettings::resolve(&farm.inventory, &request)?;
    // The demo keeps its journals with its farm unless told otherwise.
    let mut settings = settings.clone();
    if settings.state_dir.is_none() && std::env::var_os("FARMCTL_STATE_DIR").is_none() {
        settings.state_dir = Some(sandbox.dir.join("state"));
    }
    let traffic = Traffic::start(sandbox.traffic_spec());
    settings.reporter.note(&match &sandbox.haproxy {
        Some(h) => format!(
            "sending HTTP traffic through haproxy at 127.0.0.1:{}",
            h.frontend
        ),
        None => "sending HTTP traffic through a built-in health-checking balancer".into(),
    });
    let env = settings.run_env(&AssumeYes, None);
    let outcome = run::start(&farm, &inventory, run_settings, &env).await;
    let traffic = traffic.stop().await;
    let mut report = outcome?;
    report.traffic = Some(traffic);
    let status = finish(&report, args.output)?;
    if args.output == Output::Text && !settings.quiet {
        crate::outln!("(farm files were in {})", sandbox.dir.display());
    }
    Ok(status)
}

/// `demo --guard`: the guard watches the farm under traffic; web02's pool
/// goes bad and is healed, then the whole farm slows and the guard holds.
async fn guard_demo(farm: &Farm, settings: &Settings, sandbox: &Sandbox) -> CommandResult {
    use crate::cli::GuardArgs;
    let mut settings = settings.clone();
    if settings.state_dir.is_none() && std::env::var_os("FARMCTL_STATE_DIR").is_none() {
        settings.state_dir = Some(sandbox.dir.join("state"));
    }
    let log = sandbox.dir.join("guard.decisions.jsonl");
    let args = GuardArgs::of(sandbox.inventory.clone(), log.clone(), Output::Text);
    let traffic = Traffic::start(sandbox.traffic_spec());
    let say = |m: &str| crate::errln!("demo: {m}");
    say("the guard watches the farm under HTTP traffic (a decision every 2 s over a 15 s window)");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let guarding = crate::guard::guard_farm(farm, &args, &settings, stop);
    let script = async {
        // The healthy farm first: a few evaluations with nothing to do.
        wait_for_decision(&log, |d| d["decision"] == "ok", 60).await?;
        say("web02's ShopPool goes bad (30% of its requests answer 500; a recycle heals it)");
        sandbox
            .set_pool_faults(
                "web02",
                "      error_rate: 0.3\n      healed_by_recycle: true\n",
            )
            .map_err(|e| CommandError::failed(format!("web02's sim file: {e}")))?;
        wait_for_decision(
            &log,
            |d| d["decision"] == "healed" && d["node"] == "web02",
            180,
        )
        .await?;
        say("every node slowed by 700 ms at once: a farm-wide cause, not a sick pool");
        for n in &sandbox.nodes {
            sandbox
                .set_pool_faults(&n.name, "      extra_latency: 700ms\n")
                .map_err(|e| CommandError::failed(format!("{}'s sim file: {e}", n.name)))?;
        }
        wait_for_decision(&log, |d| d["reason"] == "farm sick", 120).await?;
        Ok::<(), CommandError>(())
    };
    tokio::pin!(guarding);
    let scripted = tokio::select! {
        r = script => r,
        r = &mut guarding => return r,
    };
    stop_tx.send_replace(true);
    let _ = guarding.await;
    let traffic = traffic.stop().await;
    scripted?;
    let decisions: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |k: &str| decisions.iter().filter(|d| d["decision"] == k).count();
    crate::outln!(
        "guard: {} decisions: {} acted, {} healed, {} held (farm sick: {}); {} requests sent, {} failed",
        decisions.len(),
        count("acted"),
        count("healed"),
        count("held"),
        decisions.iter().filter(|d| d["reason"] == "farm sick").count(),
        traffic.requests_sent,
        traffic.requests_failed
    );
    crate::outln!("decision log: {}", log.display());
    Ok(ExitStatus::Done)
}

/// Waits (at most `within_s`) for a decision in the log matching `f`.
async fn wait_for_decision(
    log: &std::path::Path,
    f: impl Fn(&serde_json::Value) -> bool,
    within_s: u64,
) -> Result<(), CommandError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(within_s);
    loop {
        let found = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|d| f(&d)));
        if found {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CommandError::failed(format!(
                "the guard did not decide as expected within {within_s}s (decision log {})",
                log.display()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How the user runs this farmctl: `farmctl` when that name on PATH is
/// this very program, else its full path (after `cargo build` it is not
/// on PATH).
fn invocation() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "farmctl".into();
    };
    let name = if cfg!(windows) {
        "farmctl.exe"
    } else {
        "farmctl"
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .filter_map(|d| std::fs::canonicalize(d.join(name)).ok())
            .next()
            .is_some_and(|found| found == me)
    });
    if on_path {
        return "farmctl".into();
    }
    let shown = me.display().to_string();
    if shown.contains(' ') {
        format!("\"{shown}\"")
    } else {
        shown
    }
}
