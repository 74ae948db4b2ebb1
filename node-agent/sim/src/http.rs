//! The simulator's sites: real HTTP/1.1 on loopback.
//!
//! A listener per binding port. While IIS is stopped the listener is closed,
//! so clients get "connection refused" as they would from a reset server.
//! Requests are routed by Host header to a site, then to its pool's worker.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::{logs, Refusal, Simulator};

/// A site and the port it ended up listening on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSite {
    pub name: String,
    pub port: u16,
    pub host: Option<String>,
    pub app_pool: String,
}

/// The longest `/slow?ms=N` honoured: ten minutes.
const MAX_SLOW_MS: u64 = 600_000;

/// Binds every site's port and starts serving. Sites with the same non-zero
/// port share one listener.
pub(crate) async fn bind_sites(sim: &Simulator) -> std::io::Result<Vec<BoundSite>> {
    let ip: std::net::IpAddr = sim.cfg().address.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("sim address: {e}"),
        )
    })?;
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    let mut singles: Vec<Vec<usize>> = Vec::new();
    let sites = &sim.cfg().sites;
    for (i, s) in sites.iter().enumerate() {
        if s.share_port_with.is_some() {
            continue;
        }
        if s.port == 0 {
            singles.push(vec![i]);
        } else {
            groups.entry(s.port).or_default().push(i);
        }
    }
    // A site sharing another's port joins that site's group.
    for (i, s) in sites.iter().enumerate() {
        let Some(other) = &s.share_port_with else {
            continue;
        };
        let group = groups
            .values_mut()
            .chain(singles.iter_mut())
            .find(|g| g.iter().any(|&k| sites[k].name.eq_ignore_ascii_case(other)));
        match group {
            Some(g) => g.push(i),
            None => singles.push(vec![i]),
        }
    }
    let mut bound = Vec::new();
    for group in groups.into_values().chain(singles) {
        let port = sim.cfg().sites[group[0]].port;
        let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
        let addr = listener.local_addr()?;
        let sites: Vec<BoundSite> = group
            .iter()
            .map(|&i| {
                let s = &sim.cfg().sites[i];
                BoundSite {
                    name: s.name.clone(),
                    port: addr.port(),
                    host: s.host.clone(),
                    app_pool: s.app_pool.clone(),
                }
            })
            .collect();
        bound.extend(sites.iter().cloned());
        tokio::spawn(serve_port(sim.clone(), listener, addr, Arc::new(sites)));
    }
    Ok(bound)
}

async fn serve_port(
    sim: Simulator,
    first: TcpListener,
    addr: SocketAddr,
    sites: Arc<Vec<BoundSite>>,
) {
    let mut listening = sim.inner.listening.subscribe();
    let mut shutdown = sim.inner.shutdown.subscribe();
    let mut listener = Some(first);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(l) = &listener else {
            tokio::select! {
                _ = listening.wait_for(|up| *up) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            // Rebind the same port; retry briefly if the old socket lingers.
            for _ in 0..100 {
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        listener = Some(l);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%addr, "could not reopen site listener: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(sim.clone(), stream, sites.clone()));
                }
            }
            _ = listening.wait_for(|up| !*up) => listener = None,
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn serve_connection(sim: Simulator, stream: TcpStream, sites: Arc<Vec<BoundSite>>) {
    let _ = stream.set_nodelay(true);
    let mut epoch = sim.inner.conn_epoch.subscribe();
    epoch.mark_unchanged();
    let svc_sim = sim.clone();
    let ends = match (stream.local_addr(), stream.peer_addr()) {
        (Ok(l), Ok(p)) => Some((l, p)),
        _ => None,
    };
    let service = hyper::service::service_fn(move |req| {
        let (sim, sites) = (svc_sim.clone(), sites.clone());
        async move { logged(&sim, &sites, req, ends).await }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        // IIS stopped: the connection goes away with it.
        _ = epoch.changed() => {}
    }
}

/// The worker died under the request: the connection is dropped, as a
/// client of a killed w3wp.exe would see it.
#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("worker process terminated")
    }
}

impl std::error::Error for Cut {}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn pick_site<'a>(sites: &'a [BoundSite], req: &Request<Incoming>) -> Option<&'a BoundSite> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':')
                .map_or(h, |(name, _)| name)
                .to_ascii_lowercase()
        });
    sites
        .iter()
        .find(|s| s.host.as_deref().map(str::to_ascii_lowercase) == host && host.is_some())
        .or_else(|| sites.iter().find(|s| s.host.is_none()))
}

/// A file of the site's folder, as IIS's static file handler serves it:
/// 404 for anything missing or outside the folder.
fn static_file(root: Option<std::path::PathBuf>, path: &str) -> Response<Full<Bytes>> {
    let not_found = || text(StatusCode::NOT_FOUND, "HTTP Error 404.0 - Not Found\n");
    let Some(root) = root else {
        return not_found();
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts
        .iter()
        .any(|p| *p == ".." || *p == "." || p.contains('\\') || p.contains(':'))
    {
        return not_found();
    }
    let file = parts.iter().fold(root, |acc, p| acc.join(p));
    match std::fs::read(&file) {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            let kind = if path.ends_with(".html") || path.ends_with(".htm") {
                "text/html; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            };
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(kind),
            );
            r
        }
        Err(_) => not_found(),
    }
}

/// Counts the request in flight on the node and its worker until dropped.
struct InFlight<'a> {
    sim: &'a Simulator,
    worker: Arc<super::Worker>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.worker.end();
        self.sim.request_finished();
    }
}

/// What the logs need of a request before it is handed on.
struct Asked {
    method: String,
    path: String,
    query: Option<String>,
    user_agent: Option<String>,
    site_id: u32,
    pool: String,
}

/// [`handle`], with the request written to the W3C log (or, for what
/// HTTP.sys answers itself, the HTTP.sys error log) when the sim file asks.
async fn logged(
    sim: &Simulator,
    sites: &[BoundSite],
    req: Request<Incoming>,
    ends: Option<(SocketAddr, SocketAddr)>,
) -> Result<Response<Full<Bytes>>, Cut> {
    let (Some(logs), Some((server, client))) = (&sim.inner.logs, ends) else {
        return handle(sim, sites, req).await;
    };
    let site = pick_site(sites, &req);
    let asked = Asked {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        user_agent: req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        site_id: site
            .and_then(|s| sim.cfg().sites.iter().position(|c| c.name == s.name))
            .map_or(0, |i| i as u32 + 1),
        pool: site.map(|s| s.app_pool.clone()).unwrap_or_default(),
    };
    let started = tokio::time::Instant::now();
    let answer = handle(sim, sites, req).await;
    let entry = |status: u16| logs::Entry {
        site_id: asked.site_id,
        server,
        client,
        method: &asked.method,
        path: &asked.path,
        query: asked.query.as_deref(),
        user_agent: asked.user_agent.as_deref(),
        status,
        substatus: 0,
        time_taken_ms: started.elapsed().as_millis() as u64,
    };
    match &answer {
        // A stopped pool's 503 comes from HTTP.sys, not a worker.
        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
            logs.httperr(&entry(503), "AppOffline", &asked.pool)
        }
        Ok(r) => logs.request(&entry(r.status().as_u16())),
        Err(Cut) => logs.httperr(&entry(0), "Connection_Abandoned_By_ReqQueue", &asked.pool),
    }
    answer
}

async fn handle(
    sim: &Simulator,
    sites: &[BoundSite],
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Cut> {
    let Some(site) = pick_site(sites, &req) else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "Bad Request - Invalid Hostname\n",
        ));
    };
    let worker = match sim.admit(&site.app_pool) {
        Ok(w) => w,
        Err(Refusal::Unavailable) => {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "HTTP Error 503. The service is unavailable.\n",
            ))
        }
        Err(Refusal::NoPool) => {
            return Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no application pool\n",
            ))
        }
    };
    sim.request_started();
    worker.begin();
    let _guard = InFlight {
        sim,
        worker: worker.clone(),
    };
    let _running = sim.running(super::RunningEntry {
        pool: site.app_pool.clone(),
        verb: req.method().to_string(),
        url: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.to_string()),
        client: None,
        started: tokio::time::Instant::now(),
    });
    // Cold start: the first requests of a new worker wait for JIT and caches.
    tokio::select! {
        _ = tokio::time::sleep_until(worker.warm_at()) => {}
        _ = worker.killed() => return Err(Cut),
    }
    let path = req.uri().path();
    if path.eq_ignore_ascii_case(&sim.cfg().health_file) {
        return Ok(if sim.health_file() {
            text(StatusCode::OK, "OK\n")
        } else {
            text(StatusCode::NOT_FOUND, "HTTP Error 404.0 - Not Found\n")
        });
    }
    if sim.unhealthy() {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "HTTP Error 500.0 - Internal Server Error\n",
        ));
    }
    // A misbehaving application: slower, and failing some requests.
    if let Some(f) = sim.faults(&site.name, &site.app_pool) {
        if sim.fault_hit(&format!("{}#hang", site.app_pool), f.hang_rate) {
            // Hung in the application: no answer until the worker goes.
            worker.killed().await;
            return Err(Cut);
        }
        if let Some(extra) = f.extra_latency {
            tokio::select! {
                _ = tokio::time::sleep(extra) => {}
                _ = worker.killed() => return Err(Cut),
            }
        }
        if sim.fault_hit(&site.app_pool, f.error_rate) {
            let status = StatusCode::from_u16(f.error_status.unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(text(
                status,
                format!(
                    "HTTP Error {} (injected by the sim file)\n",
                    status.as_u16()
                ),
            ));
        }
    }
    if path == "/slow" {
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000)
            .min(MAX_SLOW_MS);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = worker.killed() => return Err(Cut),
        }
    }
    if worker.is_killed() {
        return Err(Cut);
    }
    if path != "/" && path != "/slow" {
        return Ok(static_file(sim.site_root(&site.name), path));
    }
    Ok(text(
        StatusCode::OK,
        format!(
            "node={} site={} pool={} pid={}\n",
            sim.node(),
            site.name,
            site.app_pool,
            worker.pid
        ),
    ))
}
