//! The node's traffic, kept current: every second each site's W3C log and
//! the HTTP.sys error log are tailed into that site's rolling window. The
//! tails start where the logs end when the agent starts — inside a file
//! IIS opened hours ago, with the directives in force read back — so the
//! figures run from the agent's start (`since`), never "no data" until IIS
//! opens its next file.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_iis::{Iis, PoolGauges, TrafficLogs};
use farm_traffic::malformed::Malformed;
use farm_traffic::names::{Family, Period};

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
/// A request running longer than this is hung (said apart in the Traffic
/// answer: a release that hangs requests logs no error).
pub const HUNG_AFTER: Duration = Duration::from_secs(10);
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
    /// The window's figures (unreadable lines by reason among them).
    pub figures: Figures,
    /// Fields the site's log lacks for a judgement (`time-taken`, ...).
    pub missing: Vec<&'static str>,
    /// Unreadable lines since the watch started.
    pub malformed_total: u64,
    /// Its pool's gauges, when the backend reads them.
    pub gauges: Option<GaugeFigures>,
    /// Since when the figures run (Unix s): the watch's start, or when
    /// the site's pool was last recycled.
    pub since: Option<i64>,
    /// Why the site's log cannot be followed now (a folder missing or
    /// unreadable).
    pub problem: Option<String>,
    /// User requests read since the watch started (a counter).
    pub requests_total: u64,
}

/// The HTTP.sys error log as the watch knows it (it belongs to no site).
#[derive(Debug, Clone, Default)]
pub struct HttpErrFigures {
    pub malformed: u64,
    pub problem: Option<String>,
}

struct Site {
    pool: String,
    id: u32,
    tail: Tail,
    reader: W3cReader,
    window: Window,
    since: Option<i64>,
    /// The problem last said in the agent's log.
    said: Option<String>,
    /// User requests read since the watch started, whenever they were
    /// logged: a counter the controller compares with the load balancer's.
    requests_total: u64,
}

struct HttpErrLog {
    tail: Tail,
    reader: HttpErrReader,
    said: Option<String>,
}

struct State {
    sites: BTreeMap<String, Site>,
    httperr: Option<HttpErrLog>,
    checks: Checks,
    /// The pools' gauges over the span, newest last (Unix s, readings).
    gauges: VecDeque<(i64, Vec<PoolGauges>)>,
}

/// The node's traffic windows, updated by a task of their own.
#[derive(Clone)]
pub struct TrafficWatch {
    state: Arc<Mutex<State>>,
}

impl TrafficWatch {
    /// Starts watching `logs` (from the end of what is already written,
    /// with the directives in force there).
    pub fn start(logs: TrafficLogs) -> TrafficWatch {
        let now = jiff::Timestamp::now().as_second();
        let sites = logs
            .sites
            .iter()
            .map(|s| {
                let period = s.period.as_deref().and_then(Period::parse);
                let tail = Tail::new(&s.w3c_dir, Family::W3c, period);
                // The figures run from here: a folder made later is read
                // from its start, all of it new traffic.
                let since = Some(now);
                (
                    s.site.clone(),
                    Site {
                        pool: s.pool.clone(),
                        id: s.id,
                        tail,
                        reader: W3cReader::default(),
                        window: Window::new(SPAN_S),
                        since,
                        said: None,
                        requests_total: 0,
                    },
                )
            })
            .collect();
        let mut state = State {
            sites,
            httperr: logs.httperr_dir.as_deref().map(|d| HttpErrLog {
                tail: Tail::new(d, Family::HttpErr, None).absent_ok(),
                reader: HttpErrReader::default(),
                said: None,
            }),
            checks: Checks {
                paths: logs.check_paths.clone(),
                user_agents: vec![farm_proto::http::PROBE_AGENT.into()],
            },
            gauges: VecDeque::new(),
        };
        say_problems(&mut state);
        let state = Arc::new(Mutex::new(state));
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
        let gauges = |pool: &str| gauge_figures(&st.gauges, pool, now, last);
        st.sites
            .iter()
            .map(|(name, s)| {
                // What the window covers: no more than the site has been
                // watched (or since its pool was recycled).
                let covered = match s.since {
                    Some(since) => last.min((now - since + 1).max(0) as u64),
                    None => 0,
                };
                let mut figures = s.window.figures(now, covered);
                figures.covered_s = covered;
                SiteFigures {
                    site: name.clone(),
                    pool: s.pool.clone(),
                    figures,
                    missing: s.reader.stats.missing.clone(),
                    malformed_total: s.reader.stats.malformed.total() + s.tail.too_long(),
                    gauges: gauges(&s.pool),
                    since: s.since,
                    problem: s.tail.problem().map(str::to_string),
                    requests_total: s.requests_total,
                }
            })
            .collect()
    }

    /// The windows of `pools`' sites (every site when empty) start again
    /// from this second: a recycled pool, a reset node, is judged on what
    /// it does from now on, not on what its old workers did.
    pub fn restart(&self, pools: &[String]) {
        let next = jiff::Timestamp::now().as_second();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for s in st.sites.values_mut() {
            if pools.is_empty() || pools.iter().any(|p| p.eq_ignore_ascii_case(&s.pool)) {
                s.since = Some(next);
            }
        }
    }

    /// The HTTP.sys error log's state (none when the backend has none).
    pub fn httperr(&self) -> Option<HttpErrFigures> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.httperr.as_ref().map(|h| HttpErrFigures {
            malformed: h.reader.malformed.total() + h.tail.too_long(),
            problem: h.tail.problem().map(str::to_string),
        })
    }
}

/// Says in the agent's log when a log folder becomes unreadable and when
/// it is read again (once each, not every poll).
fn say_problems(st: &mut State) {
    for (name, s) in &mut st.sites {
        let now = s.tail.problem().map(str::to_string);
        if now != s.said {
            match &now {
                Some(p) => {
                    tracing::warn!(site = %name, "traffic health cannot read this site's log: {p}")
                }
                None => tracing::info!(site = %name, "the site's log is read again"),
            }
            s.said = now;
        }
    }
    if let Some(h) = &mut st.httperr {
        let now = h.tail.problem().map(str::to_string);
        if now != h.said {
            match &now {
                Some(p) => tracing::warn!("the HTTP.sys error log cannot be read: {p}"),
                None => tracing::info!("the HTTP.sys error log is read again"),
            }
            h.said = now;
        }
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
    let now = jiff::Timestamp::now().as_second();
    let State {
        sites,
        httperr,
        checks,
        ..
    } = st;
    let mut lines = 0;
    for s in sites.values_mut() {
        let (bad_before, long_before) = (s.reader.stats.malformed.clone(), s.tail.too_long());
        let Site {
            tail,
            reader,
            window,
            requests_total,
            ..
        } = s;
        lines += tail.poll(&mut |line| {
            if let Some(r) = reader.line(line) {
                *requests_total += u64::from(!checks.is_check(&r));
                window.add(&r, checks);
            }
        });
        // Unreadable lines have no time of their own: counted when read.
        let bad: Malformed = s.reader.stats.malformed.since(&bad_before);
        s.window.add_malformed(now, &bad);
        s.window.add_too_long(now, s.tail.too_long() - long_before);
    }
    if let Some(h) = httperr {
        let HttpErrLog { tail, reader, .. } = h;
        lines += tail.poll(&mut |line| {
            let Some(e) = reader.line(line) else {
                return;
            };
            // By site id, else by the pool's queue name.
            let site = sites.values_mut().find(|s| {
                e.site_id == Some(s.id.to_string().as_str()) || e.queue == Some(s.pool.as_str())
            });
            if let Some(s) = site {
                s.window.add_httperr(&e);
            }
        });
    }
    say_problems(st);
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
