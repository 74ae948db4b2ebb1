//! A small HTTPS server for the load balancers' contract fakes: its own CA
//! (written next to the farm), a certificate for 127.0.0.1, and a handler
//! that sees each request whole.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

pub struct Req {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(status: u16, body: serde_json::Value) -> Resp {
        Resp {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn html(status: u16, body: &str) -> Resp {
        Resp {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.into(),
        }
    }
}

pub type Handler = Arc<dyn Fn(Req) -> Resp + Send + Sync>;

pub struct Https {
    pub url: String,
    /// The CA that signed the server's certificate (PEM).
    pub ca_file: PathBuf,
    /// The server certificate's sha256, hex.
    pub fingerprint: String,
    /// The server's own certificate (PEM): what a user gives as `tls.ca`
    /// by mistake.
    pub leaf_file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Https {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plain HTTP, for fakes of endpoints the driver reaches without TLS (a
/// local AWS emulator).
pub async fn serve_plain(handler: Handler) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(handler.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, task)
}

/// One request through a [`Handler`].
async fn respond(
    handler: Handler,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let r = handler(Req {
        method,
        path,
        headers,
        body,
    });
    let mut resp = hyper::Response::builder().status(r.status);
    for (k, v) in r.headers {
        resp = resp.header(k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(r.body))).unwrap())
}

#[allow(deprecated)] // ring's provider, as the drivers use (see lb/http.rs)
pub async fn serve(dir: &Path, name: &str, handler: Handler) -> Https {
    use farm_proto::pki;
    let ca = pki::new_ca(name, pki::Validity::CA).unwrap();
    let leaf =
        pki::issue_agent(&ca, "localhost", &["127.0.0.1".into()], pki::Validity::LEAF).unwrap();
    let ca_file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let leaf_file = dir.join(format!("{name}-server.pem"));
    std::fs::write(&leaf_file, &leaf.cert_pem).unwrap();
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let fingerprint = hex::encode(Sha256::digest(certs[0].as_ref()));
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| respond(handler.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Https {
        url,
        ca_file,
        fingerprint,
        leaf_file,
        task,
    }
}
