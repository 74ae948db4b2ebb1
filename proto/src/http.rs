//! One HTTP GET with a Host header, the way a load balancer's monitor or
//! a user reaches a site: used by the controller's probes and by the
//! agent's own check of its sites (dead-man switch).
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

crate::message_error! {
    /// Why an HTTP GET got no usable answer.
    HttpError
}

/// Bodies larger than this are not read (an expected substring must come early).
const MAX_BODY: usize = 64 * 1024;

/// farmctl's probes' `User-Agent`: the agents count such requests as
/// checks, not users.
pub const PROBE_AGENT: &str = "farmctl-probe";

/// One HTTP GET as farmctl's probe (`User-Agent: farmctl-probe`: a
/// node's traffic figures count it as a check, not a user); returns the
/// status and (the start of) the body.
pub async fn get(
    address: &str,
    port: u16,
    host: Option<&str>,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    get_as(PROBE_AGENT, address, port, host, path, timeout).await
}

/// [`get`] with another `User-Agent`.
pub async fn get_as(
    user_agent: &str,
    address: &str,
    port: u16,
    host: Option<&str>,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let fetch = async {
        let stream = TcpStream::connect((address, port))
            .await
            .map_err(|e| HttpError(format!("connect {address}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| HttpError(format!("HTTP handshake: {e}")))?;
        let conn = tokio::spawn(conn);
        let host_header = match host {
            Some(h) => h.to_string(),
            None if port == 80 => address.to_string(),
            None => format!("{address}:{port}"),
        };
        let req = Request::get(path)
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::USER_AGENT, user_agent)
            .body(Empty::<Bytes>::new())
            .map_err(|e| HttpError(format!("bad request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| HttpError(format!("GET {path}: {e}")))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        conn.abort();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| HttpError(format!("no answer within {timeout:?}")))?
}
