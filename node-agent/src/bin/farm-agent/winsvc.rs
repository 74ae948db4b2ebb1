//! `farm-agent service install|uninstall|run`: the agent as a native
//! Windows service (Service Control Manager, through `windows-service`),
//! with its lifecycle in the Windows Event Log (source `farm-agent`).
//!
//! `install` registers `farm-agent.exe service run --name NAME -- ARGS`:
//! start type automatic (delayed), LocalSystem unless `--account` names
//! another, restart on failure (after 5 s, 30 s, then 60 s; the count
//! resets after a day). `run` is what the SCM starts: it reports
//! start-pending, running, stop-pending (with a bounded wait hint) and
//! stopped, and on Stop or Shutdown lets an operation under way finish
//! within the agent's stop grace before it exits.
use std::ffi::OsString;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::args::Args;

/// The Event Log source the agent writes its lifecycle to.
pub const EVENT_SOURCE: &str = "farm-agent";

/// The agent's arguments and service name, for the SCM's thread.
static SERVICE: OnceLock<(String, Args)> = OnceLock::new();

pub fn install(
    name: &str,
    display_name: &str,
    account: Option<&str>,
    password_env: Option<&str>,
    agent_args: &[String],
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("where is farm-agent.exe")?;
    let password = match password_env {
        Some(var) => Some(OsString::from(std::env::var(var).with_context(|| {
            format!("--password-env {var}: the variable is not set")
        })?)),
        None => None,
    };
    let mut launch: Vec<OsString> = ["service", "run", "--name", name, "--"]
        .iter()
        .map(OsString::from)
        .collect();
    launch.extend(agent_args.iter().map(OsString::from));
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("could not open the Service Control Manager (run as Administrator)")?;
    let info = ServiceInfo {
        name: name.into(),
        display_name: display_name.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: launch,
        dependencies: vec![],
        account_name: account.map(OsString::from),
        account_password: password,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS,
        )
        .with_context(|| format!("could not create the service `{name}`"))?;
    let _ = service.set_description(
        "farmctl agent: recycles, resets and deploys IIS for rolling runs of a load-balanced farm",
    );
    // Best effort beyond the entry itself: older systems (and Wine) may
    // not know every setting; each one that fails is said.
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("farm-agent: warning: the service was created but {what} could not be set: {e}")
    };
    if let Err(e) = service.set_delayed_auto_start(true) {
        warn("delayed automatic start", &e);
    }
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    if let Err(e) = service.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(5), restart(30), restart(60)]),
    }) {
        warn("the recovery actions (restart on failure)", &e);
    }
    if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
        warn("restart after a non-crash failure", &e);
    }
    if let Err(e) = eventlog::register(EVENT_SOURCE) {
        warn("the Event Log source", &e);
    }
    println!(
        "installed service `{name}` ({}); start it with `sc start {name}`",
        account.unwrap_or("LocalSystem")
    );
    Ok(())
}

pub fn uninstall(name: &str) -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("could not open the Service Control Manager (run as Administrator)")?;
    let service = manager
        .open_service(
            name,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .with_context(|| format!("no service `{name}`"))?;
    let status = service.query_status()?;
    if status.current_state != ServiceState::Stopped {
        println!("stopping `{name}`...");
        let _ = service.stop();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while service.query_status()?.current_state != ServiceState::Stopped {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("`{name}` did not stop within 120s; not removed");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    service
        .delete()
        .with_context(|| format!("could not remove `{name}`"))?;
    let _ = eventlog::deregister(EVENT_SOURCE);
    println!("removed service `{name}`");
    Ok(())
}

/// Hands the process to the SCM, which calls [`service_main`].
pub fn run(name: &str, args: Args) -> anyhow::Result<()> {
    let _ = SERVICE.set((name.to_string(), args));
    service_dispatcher::start(name, service_main).with_context(|| {
        "could not connect to the Service Control Manager: `service run` is started by the SCM \
         (`sc start`), not by hand; run farm-agent without `service` to serve in a console"
    })
}

/// The SCM's entry point. The service's own arguments (from `sc start
/// NAME ARGS`) are not used: the agent's come from its command line.
extern "system" fn service_main(_argc: u32, _argv: *mut *mut u16) {
    if let Some((name, args)) = SERVICE.get() {
        if let Err(e) = serve(name, args.clone()) {
            event(
                log::Level::Error,
                &format!("farm-agent service `{name}` failed: {e:#}"),
            );
        }
    }
}

fn status(state: ServiceState, wait_hint: Duration, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

fn serve(name: &str, args: Args) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Arc::new(Mutex::new(Some(stop_tx)));
    let handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::new(OnceLock::new());
    // Stopping may take the stop grace (an operation finishing) and the
    // server's own close.
    let stopping_hint = args
        .stop_grace
        .unwrap_or(farm_agent::agent::DEFAULT_STOP_GRACE)
        + Duration::from_secs(15);
    let handler = {
        let (stop_tx, handle) = (stop_tx.clone(), handle.clone());
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(h) = handle.get() {
                    let _ =
                        h.set_service_status(status(ServiceState::StopPending, stopping_hint, 0));
                }
                if let Some(tx) = stop_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(());
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let h = service_control_handler::register(name, handler)?;
    let _ = handle.set(h);
    h.set_service_status(status(
        ServiceState::StartPending,
        Duration::from_secs(30),
        0,
    ))?;
    event(
        log::Level::Info,
        &format!("farm-agent service `{name}` starting"),
    );
    let runtime = args.runtime().context("tokio runtime")?;
    let result = runtime.block_on(crate::run(
        args,
        Some(name.to_string()),
        async move {
            let _ = h.set_service_status(status(ServiceState::Running, Duration::ZERO, 0));
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match &result {
        Ok(()) => {
            event(
                log::Level::Info,
                &format!("farm-agent service `{name}` stopped"),
            );
            h.set_service_status(status(ServiceState::Stopped, Duration::ZERO, 0))?;
        }
        Err(e) => {
            event(
                log::Level::Error,
                &format!("farm-agent service `{name}` stopped on an error: {e:#}"),
            );
            h.set_service_status(status(ServiceState::Stopped, Duration::ZERO, 2))?;
        }
    }
    result
}

/// One lifecycle event: in the agent's log, and in the Windows Event Log
/// under source `farm-agent` (when it can be opened).
pub fn event(level: log::Level, message: &str) {
    match level {
        log::Level::Error => tracing::error!("{message}"),
        log::Level::Warn => tracing::warn!("{message}"),
        _ => tracing::info!("{message}"),
    }
    static LOG: OnceLock<Option<eventlog::EventLog>> = OnceLock::new();
    let log = LOG.get_or_init(|| eventlog::EventLog::new(EVENT_SOURCE, log::Level::Info).ok());
    if let Some(log) = log {
        log::Log::log(
            log,
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(level)
                .target(EVENT_SOURCE)
                .build(),
        );
    }
}
