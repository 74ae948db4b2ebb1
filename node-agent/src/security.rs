//! Who may call the agent: mutual TLS (a client certificate signed by the
//! farm's CA is required) and a role per client identity.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use farm_proto::pki::{self, Role};
use serde::Deserialize;
use tokio_rustls::rustls;

farm_proto::message_error! {
    /// Why the agent's TLS files cannot be used.
    TlsSetupError
}

/// The agent's certificate, its key, and the CA client certificates must
/// be signed by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Certificate revocation list(s) of the farm CA (PEM, e.g. the
    /// `crl.pem` of `farmctl certs revoke`): a revoked client certificate
    /// is refused at the handshake.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The files whose change means a new TLS configuration.
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![
            self.cert.as_path(),
            self.key.as_path(),
            self.client_ca.as_path(),
        ];
        v.extend(self.crl.as_deref());
        v
    }

    /// What the files look like now (size and modification time each):
    /// a change of it is what triggers a reload.
    pub fn fingerprint(&self) -> Vec<Option<(u64, std::time::SystemTime)>> {
        self.paths()
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)))
            })
            .collect()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path)
        .map_err(|e| TlsSetupError(format!("could not read the {what} {}: {e}", path.display())))
}

/// A rustls server config that requires a client certificate from the CA.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.cert, "certificate")?)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsSetupError(format!("{}: {e}", files.cert.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "private key")?)
        .map_err(|e| TlsSetupError(format!("{}: {e}", files.key.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read(&files.client_ca, "client CA")?) {
        let ca = ca.map_err(|e| TlsSetupError(format!("{}: {e}", files.client_ca.display())))?;
        roots
            .add(ca)
            .map_err(|e| TlsSetupError(format!("{}: {e}", files.client_ca.display())))?;
    }
    let mut crls = Vec::new();
    if let Some(crl) = &files.crl {
        use rustls::pki_types::CertificateRevocationListDer;
        for c in CertificateRevocationListDer::pem_slice_iter(&read(crl, "revocation list")?) {
            crls.push(c.map_err(|e| TlsSetupError(format!("{}: {e}", crl.display())))?);
        }
        if crls.is_empty() {
            return Err(TlsSetupError(format!(
                "{}: no revocation list (X509 CRL) in it",
                crl.display()
            )));
        }
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(crls)
        .build()
        .map_err(|e| TlsSetupError(format!("client CA {}: {e}", files.client_ca.display())))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError(format!("agent certificate/key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Roles per client identity, and what this node allows at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authorization {
    /// Client certificate CN → `viewer` or `operator`. A CN not listed
    /// gets the role its certificate carries (farmctl certs puts it in the
    /// OU); a certificate with neither is denied.
    pub roles: HashMap<String, String>,
    /// `false` refuses Reset on this node to everyone.
    pub allow_reset: bool,
}

impl Default for Authorization {
    fn default() -> Self {
        Self {
            roles: HashMap::new(),
            allow_reset: true,
        }
    }
}

/// The gRPC calls, by what they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Status,
    WatchLoad,
    Drain,
    Undrain,
    Recycle,
    Reset,
    Lease,
    Stage,
    Switch,
    Prune,
    Releases,
    /// A load balancer member's state (arr, nlb).
    LbState,
    /// Draining or returning a load balancer member.
    LbMember,
    /// What users got (the node's traffic records).
    Traffic,
    /// A pool's running requests, workers and events.
    Diagnose,
    /// The updates that apply (patch night).
    Updates,
    InstallUpdates,
    Reboot,
    /// A memory dump of a pool's workers.
    Dump,
}

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::Status => "Status",
            Call::WatchLoad => "WatchLoad",
            Call::Drain => "Drain",
            Call::Undrain => "Undrain",
            Call::Recycle => "Recycle",
            Call::Reset => "Reset",
            Call::Lease => "Lease",
            Call::Stage => "Stage",
            Call::Switch => "Switch",
            Call::Prune => "Prune",
            Call::Releases => "Releases",
            Call::LbState => "LbMember(state)",
            Call::LbMember => "LbMember",
            Call::Traffic => "Traffic",
            Call::Diagnose => "Diagnose",
            Call::Updates => "Updates",
            Call::InstallUpdates => "InstallUpdates",
            Call::Reboot => "Reboot",
            Call::Dump => "Dump",
        }
    }

    /// Calls that only read (the viewer role's): answered ones are logged
    /// at debug, so a monitor asking every few seconds does not fill the
    /// log (the audit log still has each).
    pub fn reads_only(self) -> bool {
        !self.needs_operator()
    }

    fn needs_operator(self) -> bool {
        !matches!(
            self,
            Call::Status | Call::WatchLoad | Call::Releases | Call::LbState | Call::Traffic
        )
    }
}

farm_proto::message_error! {
    /// Why a caller may not make a call.
    Denied
}

/// A caller, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Option<Role>,
}

impl Authorization {
    /// The identity of a client certificate (DER); `None` certificate means
    /// plaintext (`--insecure`): everyone is an operator.
    pub fn identify(&self, cert: Option<&[u8]>) -> Identity {
        let Some(der) = cert else {
            return Identity {
                name: "insecure".into(),
                role: Some(Role::Operator),
            };
        };
        match pki::subject(der) {
            Ok(s) => {
                let role = self
                    .roles
                    .get(&s.common_name)
                    .map(String::as_str)
                    .or(s.unit.as_deref())
                    .and_then(Role::parse);
                Identity {
                    name: s.common_name,
                    role,
                }
            }
            Err(_) => Identity {
                name: "unparsable-certificate".into(),
                role: None,
            },
        }
    }

    pub fn check(&self, who: &Identity, call: Call) -> Result<(), Denied> {
        if call == Call::Reset && !self.allow_reset {
            return Err(Denied(
                "IIS reset is not allowed on this node (authorization.allow_reset: false)".into(),
            ));
        }
        match who.role {
            None => Err(Denied(format!("`{}` has no role on this agent", who.name))),
            Some(Role::Viewer) if call.needs_operator() => Err(Denied(format!(
                "`{}` is a viewer; {} needs the operator role",
                who.name,
                call.name()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Roles in the config must be known ones.
    pub fn validate(&self) -> Result<(), Denied> {
        for (cn, role) in &self.roles {
            if Role::parse(role).is_none() {
                return Err(Denied(format!(
                    "authorization.roles.{cn}: `{role}` is not `viewer` or `operator`"
                )));
            }
        }
        Ok(())
    }
}
