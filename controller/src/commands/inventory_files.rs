//! What `validate` checks beyond the file's shape: every file the
//! inventory names (TLS certificates and keys, CAs, password and webhook
//! files) exists and can be read, and the agents can be reached over TLS
//! (or `--insecure` says plaintext is meant). Secrets named by environment
//! variable are looked for too, as warnings: a pipeline may set them only
//! for the commands that need them.
use std::path::Path;

use farm_inventory::{Inventory, Secret, Trust, WebhookUrl};
use serde::Serialize;

/// One problem, at its place in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProblem {
    pub path: String,
    pub message: String,
}

/// The problems (which fail `validate`) and the warnings (which do not).
pub fn check(inv: &Inventory, insecure: bool) -> (Vec<FileProblem>, Vec<FileProblem>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut file = |at: &str, p: &Path, what: &str| {
        if let Err(e) = std::fs::File::open(p) {
            problems.push(FileProblem {
                path: at.to_string(),
                message: format!("{what} {} cannot be read: {e}", p.display()),
            });
        }
    };
    if let Some(t) = &inv.agent.tls {
        file("agent.tls.ca", &t.ca, "the CA file");
        file("agent.tls.cert", &t.cert, "the certificate file");
        file("agent.tls.key", &t.key, "the key file");
    }
    if let Some(api) = inv.load_balancer.http_api() {
        if let Trust::Ca(p) = &api.trust {
            file("load_balancer.tls.ca", p, "the CA file");
        }
        secret(
            &mut file,
            &mut warnings,
            "load_balancer.auth",
            &api.password,
        );
    }
    if let Some(s) = &inv.state {
        if let Some(t) = &s.tls {
            file("state.tls.ca", &t.ca, "the CA file");
            file("state.tls.cert", &t.cert, "the certificate file");
            file("state.tls.key", &t.key, "the key file");
        }
        if let Some((_, pw)) = &s.user {
            secret(&mut file, &mut warnings, "state", pw);
        }
    }
    for (i, n) in inv.notify.iter().enumerate() {
        if let WebhookUrl::Secret(s) = &n.url {
            secret(&mut file, &mut warnings, &format!("notify[{i}]"), s);
        }
    }
    if inv.agent.tls.is_none() && !insecure {
        problems.push(FileProblem {
            path: "agent.tls".into(),
            message: "not set: the agents are reached over mutual TLS (ca, cert, key: `farmctl certs init` and `certs issue` make them), or every command needs --insecure for plaintext".into(),
        });
    }
    (problems, warnings)
}

fn secret(
    file: &mut impl FnMut(&str, &Path, &str),
    warnings: &mut Vec<FileProblem>,
    at: &str,
    s: &Secret,
) {
    match s {
        Secret::File(p) => file(at, p, "the secret file"),
        Secret::Env(v) if std::env::var_os(v).is_none() => warnings.push(FileProblem {
            path: at.to_string(),
            message: format!("${v} is not set here (it must be where the commands run)"),
        }),
        Secret::Env(_) => {}
    }
}
