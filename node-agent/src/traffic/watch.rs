//! The node's traffic, kept current: every second each site's W3C log and
//! the HTTP.sys error log are tailed into that site's rolling window.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_iis::{Iis, PoolGauges, TrafficLogs};

use super::httperr::HttpErrReader;
use super::tail::Tail;
use super::w3c::W3cReader;
use super::window::{Checks, Figures, Window};

/// How far back the windows reach.
pub const SPAN_S: u64 = 300;
/// How often the logs are read in the background while lines come: each
/// read stays small (read every 5 s, a log written at 2,000 requests/s
/// cost the watch three times the CPU and memory: the tail benchmark).
const EVERY: Duration = Duration::from_secs(1);
/// ...and at most this seldom while nothing comes: a thousand idle agents
/// on one host (the sandbox) wake a fifth as often. Every question (the
/// Traffic call, a scrape) reads up to the moment first anyway.
const IDLE_EVERY: Duration = Duration::from_secs(5);
/// How often the pools' gauges (queue, CPU, memory) are read: a typeperf
/// sample takes a second of its own.
pub const GAUGE_EVERY: Duration = Duration::from_secs(10);

/// A pool's gauges as a window gives them: the newest reading, and the
/// longest queue over the window.
pub use farm_proto::gauges::PoolGauges as GaugeFigures;

/// One site as the watch knows it.
#[derive(Debug, Clone)]
pub struct SiteFigures {
    pub site: String,
    pub pool: String,
    pub figures: Figures,
    /// Fields the site's log lacks for a judgement (`time-taken`, ...).
    pub missing: Vec<&'static str>,
    pub malformed: u64,
    /// Its pool's gauges, when the backend reads them.
    pub gauges: Option<GaugeFigures>,
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
    /// The pools' gauges over the span, newest last (Unix s, readings).
    gauges: VecDeque<(i64, Vec<PoolGauges>)>,
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
            gauges: VecDeque::new(),
        }));
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut every = EVERY;
            loop {
                tokio::time::sleep(every).await;
                let Some(state) = weak.upgrade() else { return };
                // Files are read off the runtime's threads.
                let read = tokio::task::spawn_blocking(move || {
                    read_once(&mut state.lock().unwrap_or_else(|e| e.into_inner()))
                })
                .await;
                every = match read {
                    Err(_) => return,
                    Ok(0) => (every * 2).min(IDLE_EVERY),
                    Ok(_) => EVERY,
                };
            }
        });
        TrafficWatch { state }
    }

    /// For the backend's logs, where it can say where they are, with its
    /// pools' gauges read every [`GAUGE_EVERY`].
    pub fn for_backend(iis: std::sync::Arc<dyn Iis>) -> Option<TrafficWatch> {
        let watch = iis.traffic_logs().map(TrafficWatch::start)?;
        watch.sample_gauges(iis, GAUGE_EVERY);
        Some(watch)
    }

    /// Reads `iis`'s pool gauges now and every `every`, keeping the span's.
    pub fn sample_gauges(&self, iis: std::sync::Arc<dyn Iis>, every: Duration) {
        let weak = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            let mut said = false;
            loop {
                let reading = iis.pool_gauges().await;
                let Some(state) = weak.upgrade() else { return };
                match reading {
                    Ok(g) if !g.is_empty() => {
                        let now = jiff::Timestamp::now().as_second();
                        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                        st.gauges.push_back((now, g));
                        while st
                            .gauges
                            .front()
                            .is_some_and(|(t, _)| now - t > SPAN_S as i64)
                        {
                            st.gauges.pop_front();
                        }
                    }
                    Ok(_) => {} // none (yet)
                    Err(e) if !said => {
                        said = true;
                        tracing::warn!("the pools' performance counters could not be read: {e}");
                    }
                    Err(_) => {}
                }
                drop(state);
                tokio::time::sleep(every).await;
            }
        });
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
        let gauges = |pool: &str| gauge_figures(&st.gauges, pool, now, last);
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
                    gauges: gauges(&s.pool),
                }
            })
            .collect()
    }
}

/// `pool`'s newest reading (if it is recent: within three sampling
/// periods) and the longest queue over the last `last` seconds.
fn gauge_figures(
    readings: &VecDeque<(i64, Vec<PoolGauges>)>,
    pool: &str,
    now: i64,
    last: u64,
) -> Option<GaugeFigures> {
    let of = |g: &Vec<PoolGauges>| {
        g.iter()
            .find(|p| p.pool.eq_ignore_ascii_case(pool))
            .cloned()
    };
    let (at, newest) = readings
        .iter()
        .rev()
        .find_map(|(t, g)| of(g).map(|p| (*t, p)))?;
    let age = (now - at).max(0) as u64;
    if age > 3 * GAUGE_EVERY.as_secs() {
        return None;
    }
    let queue_max = readings
        .iter()
        .filter(|(t, _)| now - t <= last as i64)
        .filter_map(|(_, g)| of(g).and_then(|p| p.queue))
        .max();
    Some(GaugeFigures {
        queue: newest.queue,
        queue_max: queue_max.or(newest.queue),
        rejected: newest.rejected,
        active_requests: newest.active_requests,
        cpu_percent: newest.cpu_percent,
        private_bytes: newest.private_bytes,
        age_s: age,
    })
}

/// Reads what the logs have new; how many lines that was.
fn read_once(st: &mut State) -> usize {
    let checks = st.checks.clone();
    let mut lines = 0;
    for s in st.sites.values_mut() {
        for line in s.tail.poll() {
            lines += 1;
            if let Some(r) = s.reader.line(&line) {
                s.window.add(&r, &checks);
            }
        }
    }
    if let Some((tail, reader)) = &mut st.httperr {
        for line in tail.poll() {
            lines += 1;
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
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(pool: &str, queue: u64) -> Vec<PoolGauges> {
        vec![PoolGauges {
            pool: pool.into(),
            queue: Some(queue),
            ..PoolGauges::default()
        }]
    }

    /// The newest reading, the longest queue over the window asked for,
    /// and nothing when the newest reading is stale.
    #[test]
    fn gauges_newest_reading_and_the_windows_longest_queue() {
        let now = 1_000;
        let readings: VecDeque<_> = [
            (now - 40, reading("Shop", 9)),
            (now - 15, reading("Other", 50)),
            (now - 5, reading("Shop", 2)),
        ]
        .into();
        let g = gauge_figures(&readings, "shop", now, 60).unwrap();
        assert_eq!((g.queue, g.queue_max, g.age_s), (Some(2), Some(9), 5));
        let g = gauge_figures(&readings, "Shop", now, 10).unwrap();
        assert_eq!(g.queue_max, Some(2), "only the last 10 s");
        assert!(gauge_figures(&readings, "Nope", now, 60).is_none());
        // Three sampling periods without a reading: not known any more.
        let stale = now + 3 * GAUGE_EVERY.as_secs() as i64;
        assert!(gauge_figures(&readings, "Shop", stale, 60).is_none());
    }
}
