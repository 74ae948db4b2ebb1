//! What the HTTP load balancer drivers share: an HTTPS client that trusts
//! exactly what the inventory says (a CA file, a pinned fingerprint, or —
//! for public cloud endpoints — the system's roots), calls bounded in time,
//! and retries with back-off for the errors a driver calls transient.
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_inventory::Trust;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::LbError;

farm_proto::message_error! {
    /// Why the TLS trust for an appliance cannot be set up.
    TlsConfigError
}

/// Longest body kept from an answer (errors quote it).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The first wait between two tries; doubled each time, at most 2 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// What a driver makes of an answer.
pub enum Verdict {
    Done,
    /// Worth another try after a pause (the LB is restarting, busy, ...).
    Retry,
    /// The session expired: log in again, then try again (once).
    Relogin,
}

/// An HTTPS management API.
pub struct Api {
    /// How errors name it: `f5 https://bigip.example`.
    pub lb: String,
    pub base: String,
    client: reqwest::Client,
    /// One call, its retries included.
    pub timeout: Duration,
}

/// ring, the provider tonic already uses (no C crypto to build). Newer
/// rustls deprecates ring's provider for its lack of post-quantum key
/// exchange; the LB management APIs it talks to are classical TLS.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS configuration for `trust`; `None` means the system's roots.
pub fn tls_config(trust: Option<&Trust>) -> Result<rustls::ClientConfig, TlsConfigError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(match trust {
        Some(Trust::Ca(path)) => {
            let shown = path.display();
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsConfigError(format!("could not read the CA file {shown}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| TlsConfigError(format!("the CA file {shown}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsConfigError(format!("the CA file {shown}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(TlsConfigError(format!(
                    "the CA file {shown} holds no certificate"
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Some(Trust::Fingerprint(sha256)) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256: sha256.clone(),
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| TlsConfigError(format!("the system's certificate roots: {e}")))?
                .with_no_client_auth()
        }
    })
}

/// Trusts exactly one certificate, by its sha256: what a self-signed
/// management certificate gets when no CA file is at hand. The handshake's
/// signatures are still checked against it.
#[derive(Debug)]
struct Pinned {
    sha256: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Sha256::digest(end_entity.as_ref());
        if seen.as_slice() == self.sha256.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "its certificate's sha256 is {}, not the pinned {}",
                hex::encode(seen),
                hex::encode(&self.sha256)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A request of `method` to `url` with `body` as JSON, if any.
pub fn json_request(
    c: &reqwest::Client,
    method: &reqwest::Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> reqwest::RequestBuilder {
    let req = c.request(method.clone(), url);
    match body {
        Some(b) => req.json(b),
        None => req,
    }
}

impl Api {
    /// The management API of an appliance of `kind` (`f5`, `netscaler`)
    /// as the inventory describes it.
    pub fn appliance(kind: &str, cfg: &farm_inventory::HttpApi) -> Result<Api, LbError> {
        Api::new(
            format!("{kind} {}", cfg.url),
            &cfg.url,
            Some(&cfg.trust),
            cfg.timeout,
        )
    }

    /// Logs in: `body` posted to `path`, retried when `transient` says so
    /// (never logging in again: this is the login).
    pub async fn post_login(
        &self,
        what: &str,
        path: &str,
        body: &serde_json::Value,
        transient: impl Fn(&Reply) -> Option<Verdict>,
    ) -> Result<Reply, LbError> {
        self.call(
            what,
            |c| c.post(self.url(path)).json(body),
            |r| transient(r).unwrap_or(Verdict::Done),
            || async { Ok(()) },
        )
        .await
    }

    /// A login the appliance refused.
    pub fn login_refused(&self, what: &str, user: &str, reply: &Reply, detail: &str) -> LbError {
        LbError::Api {
            lb: self.lb.clone(),
            message: format!(
                "{what} for user `{user}` refused: HTTP {} {detail}",
                reply.status
            ),
        }
    }

    /// `what` for `node` answered with an HTTP error this API does not
    /// explain better.
    pub fn http_error(
        &self,
        what: &str,
        node: &farm_inventory::Node,
        reply: &Reply,
        detail: &str,
    ) -> LbError {
        LbError::Api {
            lb: self.lb.clone(),
            message: format!("{what} for {}: HTTP {} {detail}", node.name, reply.status),
        }
    }

    pub fn new(
        lb: String,
        base: &str,
        trust: Option<&Trust>,
        timeout: Duration,
    ) -> Result<Api, LbError> {
        let config = |message: String| LbError::Config {
            lb: lb.clone(),
            message,
        };
        let tls = tls_config(trust).map_err(|e| config(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Sessions and tokens are handled by the drivers.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config(format!("could not build the HTTPS client: {e}")))?;
        Ok(Api {
            lb,
            base: base.trim_end_matches('/').to_string(),
            client,
            timeout,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends what `build` makes until `judge` is content, it says to give
    /// up, or the call's time runs out. `relogin` runs (at most once) when
    /// `judge` says the session expired. Transport errors are transient.
    pub async fn call<B, J, L, LF>(
        &self,
        what: &str,
        build: B,
        judge: J,
        relogin: L,
    ) -> Result<Reply, LbError>
    where
        B: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        J: Fn(&Reply) -> Verdict,
        L: Fn() -> LF,
        LF: std::future::Future<Output = Result<(), LbError>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut relogged = false;
        let mut last = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LbError::Unreachable {
                    lb: self.lb.clone(),
                    detail: format!(
                        "{what}: no good answer within {} ({last})",
                        crate::human::duration(self.timeout)
                    ),
                });
            }
            match self.send(build(&self.client).timeout(left)).await {
                Ok(reply) => match judge(&reply) {
                    Verdict::Done => return Ok(reply),
                    Verdict::Relogin if !relogged => {
                        relogged = true;
                        relogin().await?;
                        continue;
                    }
                    Verdict::Relogin | Verdict::Retry => {
                        last = format!("HTTP {}: {}", reply.status, excerpt(&reply.body));
                    }
                },
                Err(e) => last = e.0,
            }
            tracing::debug!(lb = %self.lb, what, %last, "retrying");
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, TransportError> {
        let resp = req.send().await.map_err(|e| TransportError(describe(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| TransportError(describe(&e)))?;
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
        Ok(Reply {
            status,
            body,
            headers,
        })
    }
}

farm_proto::message_error! {
    /// A transport error with its causes (the TLS reason is in the chain).
    /// A request that got no HTTP answer (connect, TLS, timeout, cut), described with its causes.
    TransportError
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    match advice(&text, e.is_timeout()) {
        Some(what) => format!("{what} [{text}]"),
        None => text,
    }
}

/// What to check, in plain words, for a management API that gave no HTTP
/// answer (the transport's own words follow in brackets).
fn advice(chain: &str, timed_out: bool) -> Option<&'static str> {
    let has = |s: &str| chain.contains(s);
    Some(if has("CaUsedAsEndEntity") || has("CA used as") {
        "the certificate given as load_balancer.tls.ca is the appliance's own (a CA certificate used as an end entity): trust it by load_balancer.tls.fingerprint (its sha256) instead"
    } else if has("UnknownIssuer") || has("unknown issuer") {
        "the appliance's certificate is not signed by load_balancer.tls.ca: give the CA that signed it, or trust it by load_balancer.tls.fingerprint"
    } else if has("NotValidForName") || has("not valid for name") {
        "the appliance's certificate does not name the host of load_balancer.url: use the name it was issued for, or load_balancer.tls.fingerprint"
    } else if has("Expired") || has("certificate expired") {
        "the appliance's certificate has expired"
    } else if has("Connection refused") || has("connection refused") {
        "connection refused: nothing listens at load_balancer.url's host and port"
    } else if has("dns error") || has("failed to lookup address") {
        "the host of load_balancer.url does not resolve"
    } else if timed_out || has("timed out") {
        "no answer in time from load_balancer.url: a firewall, a wrong address, or the appliance is down"
    } else if has("InvalidContentType") || has("wrong version number") || has("record overflow") {
        "no TLS at load_balancer.url: does the management API speak plain HTTP there (or another port)?"
    } else {
        return None;
    })
}

/// The start of a body, on one line, for an error message.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &one_line[..at]),
        None => one_line,
    }
}

/// `s` as one URL path segment or query value: everything but letters,
/// digits, `-._~:` percent-encoded (a NetScaler name may hold `#`, an F5
/// route domain `%`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod advice_tests {
    use super::advice;

    #[test]
    fn each_cause_says_what_to_check() {
        let ca = advice(
            "error sending request: invalid peer certificate: CaUsedAsEndEntity",
            false,
        );
        assert!(ca.unwrap().contains("load_balancer.tls.fingerprint"));
        assert!(advice(
            "tcp connect error: Connection refused (os error 111)",
            false
        )
        .unwrap()
        .contains("nothing listens"));
        assert!(
            advice("dns error: failed to lookup address information", false)
                .unwrap()
                .contains("does not resolve")
        );
        assert!(advice("operation timed out", true)
            .unwrap()
            .contains("no answer in time"));
        assert!(advice("invalid peer certificate: UnknownIssuer", false)
            .unwrap()
            .contains("not signed by"));
        assert_eq!(advice("something else", false), None);
    }
}
