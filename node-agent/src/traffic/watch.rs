//! The node's traffic, kept current: every second each site's W3C log and
//! the HTTP.sys error log are tailed into that site's rolling window.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_iis::{Iis, TrafficLogs};

use super::httperr::HttpErrReader;
use super::tail::Tail;
use super::w3c::W3cReader;
use super::window::{Checks, Figures, Window};

/// How far back the windows reach.
pub const SPAN_S: u64 = 300;
/// How often the logs are read.
const EVERY: Duration = Duration::from_secs(1);

/// One site as the watch knows it.
#[derive(Debug, Clone)]
pub struct SiteFigures {
    pub site: String,
    pub pool: String,
    pub figures: Figures,
    /// Fields the site's log lacks for a judgement (`time-taken`, ...).
    pub missing: Vec<&'static str>,
    pub malformed: u64,
}

struct Site {
    pool: String,
    id: u32,
    tail: Tail,
    reader: W3cReader,
    window: Window,
}

struct State {
    sites: BTreeMap<String, Site>,
    httperr: Option<(Tail, HttpErrReader)>,
    checks: Checks,
    /// When the watch started (Unix s): a window cannot cover more.
    since: i64,
}

/// The node's traffic windows, updated by a task of their own.
#[derive(Clone)]
pub struct TrafficWatch {
    state: Arc<Mutex<State>>,
}

impl TrafficWatch {
    /// Starts watching `logs` (from the end of what is already written).
    pub fn start(logs: TrafficLogs) -> TrafficWatch {
        let sites = logs
            .sites
            .iter()
            .map(|s| {
                (
                    s.site.clone(),
                    Site {
                        pool: s.pool.clone(),
                        id: s.id,
                        tail: Tail::new(&s.w3c_dir, &["u_ex", "ex"]),
                        reader: W3cReader::default(),
                        window: Window::new(SPAN_S),
                    },
                )
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            sites,
            httperr: logs
                .httperr_dir
                .as_deref()
                .map(|d| (Tail::new(d, &["httperr"]), HttpErrReader::default())),
            checks: Checks {
                paths: logs.check_paths.clone(),
                user_agents: vec![farm_proto::http::PROBE_AGENT.into()],
            },
            since: jiff::Timestamp::now().as_second(),
        }));
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EVERY).await;
                let Some(state) = weak.upgrade() else { return };
                // Files are read off the runtime's threads.
                let read = tokio::task::spawn_blocking(move || {
                    read_once(&mut state.lock().unwrap_or_else(|e| e.into_inner()))
                })
                .await;
                if read.is_err() {
                    return;
                }
            }
        });
        TrafficWatch { state }
    }

    /// For the backend's logs, where it can say where they are.
    pub fn for_backend(iis: &dyn Iis) -> Option<TrafficWatch> {
        iis.traffic_logs().map(TrafficWatch::start)
    }

    /// Every site's figures over the last `last_s` seconds (read up to now
    /// first, so a window is complete).
    pub fn figures(&self, last_s: u64) -> Vec<SiteFigures> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        read_once(&mut st);
        let now = jiff::Timestamp::now().as_second();
        let last = last_s.clamp(1, SPAN_S);
        // What the window covers: no more than the watch has been there.
        let watched = (now - st.since + 1).max(1) as u64;
        st.sites
            .iter()
            .map(|(name, s)| {
                let mut figures = s.window.figures(now, last);
                figures.covered_s = last.min(watched);
                SiteFigures {
                    site: name.clone(),
                    pool: s.pool.clone(),
                    figures,
                    missing: s.reader.stats.missing.clone(),
                    malformed: s.reader.stats.malformed,
                }
            })
            .collect()
    }
}

fn read_once(st: &mut State) {
    let checks = st.checks.clone();
    for s in st.sites.values_mut() {
        for line in s.tail.poll() {
            if let Some(r) = s.reader.line(&line) {
                s.window.add(&r, &checks);
            }
        }
    }
    if let Some((tail, reader)) = &mut st.httperr {
        for line in tail.poll() {
            let Some(e) = reader.line(&line) else {
                continue;
            };
            // By site id, else by the pool's queue name.
            let site = st.sites.values_mut().find(|s| {
                e.site_id.as_deref() == Some(s.id.to_string().as_str())
                    || e.queue.as_deref() == Some(s.pool.as_str())
            });
            if let Some(s) = site {
                s.window.add_httperr(&e);
            }
        }
    }
}
