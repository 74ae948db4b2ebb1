use std::ffi::OsString;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

/// The arguments the SCM starts a service of this program with:
/// `service run --name NAME -- ARGS` (its own command line after `--`).
pub fn launch(name: &str, args: &[String]) -> Vec<OsString> {
    ["service", "run", "--name", name, "--"]
        .iter()
        .map(OsString::from)
        .chain(args.iter().map(OsString::from))
        .collect()
}

/// A service to register.
pub struct Install<'a> {
    pub name: &'a str,
    pub display_name: &'a str,
    pub description: &'a str,
    /// `DOMAIN\user`, `NT AUTHORITY\NetworkService`; LocalSystem when none.
    pub account: Option<&'a str>,
    /// The account's password, from this environment variable.
    pub password_env: Option<&'a str>,
    /// The program's arguments when the SCM starts it (the program is this
    /// executable).
    pub launch: Vec<OsString>,
    /// The Event Log source registered for it.
    pub event_source: &'a str,
}

pub fn install(s: &Install) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("where is this program")?;
    let password = match s.password_env {
        Some(var) => Some(OsString::from(std::env::var(var).with_context(|| {
            format!("--password-env {var}: the variable is not set")
        })?)),
        None => None,
    };
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("could not open the Service Control Manager (run as Administrator)")?;
    let info = ServiceInfo {
        name: s.name.into(),
        display_name: s.display_name.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: s.launch.clone(),
        dependencies: vec![],
        account_name: s.account.map(OsString::from),
        account_password: password,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS,
        )
        .with_context(|| format!("could not create the service `{}`", s.name))?;
    let _ = service.set_description(s.description);
    // Best effort beyond the entry itself: older systems (and Wine) may
    // not know every setting; each one that fails is said.
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("warning: the service was created but {what} could not be set: {e}")
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
    if let Err(e) = eventlog::register(s.event_source) {
        warn("the Event Log source", &e);
    }
    println!(
        "installed service `{}` ({}); start it with `sc start {}`",
        s.name,
        s.account.unwrap_or("LocalSystem"),
        s.name
    );
    Ok(())
}

/// Stops the service (when running, within 120 s) and removes it.
pub fn uninstall(name: &str, event_source: &str) -> anyhow::Result<()> {
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
    let _ = eventlog::deregister(event_source);
    println!("removed service `{name}`");
    Ok(())
}

/// What the program's body is handed by [`run`].
pub struct Controls {
    /// Call once the program serves: the service reports itself running.
    pub running: Box<dyn FnOnce() + Send>,
    /// Resolves when the SCM asks the service to stop (Stop, Shutdown).
    pub stop: tokio::sync::oneshot::Receiver<()>,
}

/// The program's work as a service: returns when it has stopped.
pub type Body = Box<dyn FnOnce(Controls) -> anyhow::Result<()> + Send>;

struct Registered {
    name: String,
    event_source: &'static str,
    stopping_hint: Duration,
    body: Mutex<Option<Body>>,
}

static SERVICE: OnceLock<Registered> = OnceLock::new();

/// Hands the process to the SCM, which runs `body` as service `name`.
/// `stopping_hint` is how long stopping may take (said to the SCM).
pub fn run(
    name: &str,
    event_source: &'static str,
    stopping_hint: Duration,
    body: Body,
) -> anyhow::Result<()> {
    let _ = SERVICE.set(Registered {
        name: name.to_string(),
        event_source,
        stopping_hint,
        body: Mutex::new(Some(body)),
    });
    service_dispatcher::start(name, service_main).with_context(|| {
        "could not connect to the Service Control Manager: `service run` is started by the SCM \
         (`sc start`), not by hand"
    })
}

/// The SCM's entry point. The service's own arguments (from `sc start
/// NAME ARGS`) are not used: the program's come from its command line.
extern "system" fn service_main(_argc: u32, _argv: *mut *mut u16) {
    let Some(r) = SERVICE.get() else { return };
    let body = r.body.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(body) = body {
        if let Err(e) = serve(r, body) {
            event(
                r.event_source,
                log::Level::Error,
                &format!("service `{}` failed: {e:#}", r.name),
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

fn serve(r: &Registered, body: Body) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Arc::new(Mutex::new(Some(stop_tx)));
    let handle: Arc<OnceLock<service_control_handler::ServiceStatusHandle>> =
        Arc::new(OnceLock::new());
    let handler = {
        let (stop_tx, handle, hint) = (stop_tx.clone(), handle.clone(), r.stopping_hint);
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(h) = handle.get() {
                    let _ = h.set_service_status(status(ServiceState::StopPending, hint, 0));
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
    let h = service_control_handler::register(&r.name, handler)?;
    let _ = handle.set(h);
    h.set_service_status(status(
        ServiceState::StartPending,
        Duration::from_secs(30),
        0,
    ))?;
    let (name, source) = (r.name.as_str(), r.event_source);
    event(
        source,
        log::Level::Info,
        &format!("{source} service `{name}` starting"),
    );
    let result = body(Controls {
        running: Box::new(move || {
            let _ = h.set_service_status(status(ServiceState::Running, Duration::ZERO, 0));
        }),
        stop: stop_rx,
    });
    match &result {
        Ok(()) => {
            event(
                source,
                log::Level::Info,
                &format!("{source} service `{name}` stopped"),
            );
            h.set_service_status(status(ServiceState::Stopped, Duration::ZERO, 0))?;
        }
        Err(e) => {
            event(
                source,
                log::Level::Error,
                &format!("{source} service `{name}` stopped on an error: {e:#}"),
            );
            h.set_service_status(status(ServiceState::Stopped, Duration::ZERO, 2))?;
        }
    }
    result
}

/// One lifecycle event: in the program's log, and in the Windows Event
/// Log under `source` (when it can be opened; the first source asked is
/// the process's).
fn event(source: &str, level: log::Level, message: &str) {
    match level {
        log::Level::Error => tracing::error!("{message}"),
        log::Level::Warn => tracing::warn!("{message}"),
        _ => tracing::info!("{message}"),
    }
    static LOG: OnceLock<Option<eventlog::EventLog>> = OnceLock::new();
    let log = LOG.get_or_init(|| eventlog::EventLog::new(source, log::Level::Info).ok());
    if let Some(log) = log {
        log::Log::log(
            log,
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(level)
                .target(source)
                .build(),
        );
    }
}
