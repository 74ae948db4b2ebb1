//! A real HAProxy (Debian's package) in front of the sandbox nodes, with
//! its runtime API on a loopback port.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{io, SandboxError, SandboxNode, HEALTH_FILE, SITE_HOST};

/// A real HAProxy in front of the sandbox nodes.
pub struct SandboxHaproxy {
    /// Where clients send traffic.
    pub frontend: u16,
    /// Runtime API (`level admin`).
    pub admin: String,
    pub backend: String,
    pub(super) child: Child,
}

/// `haproxy` on PATH or in the sbin directories Debian installs it to.
pub fn haproxy_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, SandboxError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("pick a free port"))
}

/// Starts HAProxy on two free ports. A port picked free can be taken by
/// another process before HAProxy binds it (tests start farms side by
/// side): such a start is tried again on new ports.
pub(super) async fn start_haproxy(
    dir: &Path,
    nodes: &[SandboxNode],
) -> Result<SandboxHaproxy, SandboxError> {
    let mut attempt = 1;
    loop {
        match start_once(dir, nodes).await {
            Err(SandboxError::HaproxyStart(why)) if attempt < 5 && port_taken(dir) => {
                tracing::debug!("haproxy start {attempt}: {why}; new ports");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether HAProxy's log says it could not bind a port.
fn port_taken(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("haproxy.log"))
        .is_ok_and(|log| log.contains("cannot bind") || log.contains("Address already in use"))
}

async fn start_once(dir: &Path, nodes: &[SandboxNode]) -> Result<SandboxHaproxy, SandboxError> {
    let bin = haproxy_binary().ok_or(SandboxError::NoHaproxy)?;
    let (frontend, admin_port) = (free_port()?, free_port()?);
    let admin = format!("127.0.0.1:{admin_port}");
    // What a careful operator writes: a refused or failed connection is
    // retried on another server (redispatch) rather than answered 503;
    // the connect and check timeouts leave room for a loaded machine; a
    // server is marked down after three failed checks, not one slow one,
    // and up after two good ones. Checks are fast (100 ms) to keep the
    // simulated farm quick.
    let mut cfg = format!(
        "# Written by farmctl for a simulated farm on loopback.
global
    stats socket ipv4@{admin} level admin
    stats timeout 30s

defaults
    mode http
    option redispatch 1
    retries 3
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 1s

frontend fe
    bind 127.0.0.1:{frontend}
    default_backend shop

backend shop
    balance roundrobin
    option httpchk
    http-check send meth GET uri {HEALTH_FILE} ver HTTP/1.1 hdr Host {SITE_HOST}
    default-server inter 100ms fall 3 rise 2
"
    );
    for n in nodes {
        cfg.push_str(&format!(
            "    server {} 127.0.0.1:{} check\n",
            n.name, n.http_port
        ));
    }
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).map_err(io("write haproxy.cfg"))?;
    let log = std::fs::File::create(dir.join("haproxy.log")).map_err(io("create haproxy log"))?;
    let child = Command::new(&bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::HaproxyStart(format!("{}: {e}", bin.display())))?;
    let mut h = SandboxHaproxy {
        frontend,
        admin,
        backend: "shop".into(),
        child,
    };
    // Ready when the runtime API answers and every server passed its check.
    let api = crate::lb::Haproxy::new(h.admin.clone(), h.backend.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(servers) = api.servers().await {
            if servers.len() == nodes.len() && servers.iter().all(|s| s.status == "UP") {
                return Ok(h);
            }
        }
        if let Ok(Some(status)) = h.child.try_wait() {
            return Err(SandboxError::HaproxyStart(format!(
                "exited with {status} (see {})",
                dir.join("haproxy.log").display()
            )));
        }
        if std::time::Instant::now() > deadline {
            return Err(SandboxError::HaproxyStart(format!(
                "servers not UP within 20s (see {})",
                dir.join("haproxy.log").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
