//! `farmctl logs PATH...`: IIS logs copied off the servers, or followed
//! live (`--follow`), read and judged as `status` judges the agents'
//! windows.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use farm_traffic::httperr::HttpErrReader;
use farm_traffic::names::Family;
use farm_traffic::tail::Tail;
use farm_traffic::w3c::W3cReader;
use farm_traffic::window::{Checks, Window};

use super::{print_json, Settings};
use crate::cli::{LogsArgs, Output};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::logs::{self, input, read, render, LogsReport, NodeReport};

/// A time as `--from`/`--to` take it: RFC 3339, or a civil date and time
/// in UTC (`2026-12-07`, `2026-12-07 10:00`, `2026-12-07T10:00:30`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    let civil = s.trim().replace(' ', "T");
    let parsed = civil.parse::<jiff::civil::DateTime>().or_else(|_| {
        civil
            .parse::<jiff::civil::Date>()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    });
    parsed
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_second())
        .ok_or_else(|| format!("`{s}` is not a time: give RFC 3339 (2026-12-07T10:00:00Z) or `2026-12-07 10:00` (UTC)"))
}

/// `W3SVC1`, `w3svc1` or `1` as the site folder's name.
fn site_name(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        format!("W3SVC{s}")
    } else {
        s.to_ascii_uppercase()
    }
}

fn checks(args: &LogsArgs) -> Checks {
    Checks {
        paths: args.check_paths.clone(),
        user_agents: vec![farm_proto::http::PROBE_AGENT.into()],
    }
}

pub async fn run(args: &LogsArgs, settings: &Settings) -> CommandResult {
    let from = args
        .from
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| CommandError::bad_input(format!("--from: {e}")))?;
    let to = args
        .to
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| CommandError::bad_input(format!("--to: {e}")))?;
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(CommandError::bad_input("--to must be after --from"));
        }
    }
    if args.by.is_some_and(|b| b.as_secs() == 0) {
        return Err(CommandError::bad_input("--by must be at least 1s"));
    }
    let sources =
        input::discover(&args.paths).map_err(|e| CommandError::bad_input(e.to_string()))?;
    if args.follow {
        return follow(args, settings, sources).await;
    }
    let opts = read::Options {
        from,
        to,
        site: args.site.as_deref().map(site_name),
        by_s: args
            .by
            .map(|b| b.as_secs())
            .or(args.html.as_ref().map(|_| 60)),
        checks: checks(args),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let total: u64 = sources.iter().map(|s| s.size).sum();
    let bar = progress_bar(settings, total);
    let done = Arc::new(AtomicU64::new(0));
    let result = {
        let (bar, done, sources) = (bar.clone(), done.clone(), sources.clone());
        tokio::task::spawn_blocking(move || {
            let progress = |n: u64| {
                let at = done.fetch_add(n, Ordering::Relaxed) + n;
                if let Some(b) = &bar {
                    b.set_position(at);
                }
            };
            let read = read::read(&sources, &opts, &progress)?;
            Ok::<_, read::ReadError>(logs::report(&read, &opts))
        })
        .await
        .map_err(|e| CommandError::failed(format!("reading the logs failed: {e}")))?
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut report = result.map_err(|e| CommandError::bad_input(e.to_string()))?;
    if args.by.is_none() {
        // The HTML page's plots asked for a series; the other outputs did not.
        if let Some(html) = &args.html {
            write_html(html, &report)?;
        }
        for n in &mut report.nodes {
            n.series = None;
            for s in &mut n.sites {
                s.series = None;
            }
        }
        report.by_s = None;
    } else if let Some(html) = &args.html {
        write_html(html, &report)?;
    }
    match args.output {
        o if o.structured() => print_json(o, &report),
        _ => crate::out!("{}", render::text(&report)),
    }
    Ok(ExitStatus::Done)
}

fn write_html(path: &std::path::Path, report: &LogsReport) -> Result<(), CommandError> {
    std::fs::write(path, render::html(report))
        .map_err(|e| CommandError::failed(format!("could not write {}: {e}", path.display())))
}

/// A bar on a terminal for input worth waiting for.
fn progress_bar(settings: &Settings, total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if settings.quiet || total < 64 * 1024 * 1024 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "reading logs {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// One followed folder.
struct Followed {
    server: String,
    site: Option<String>,
    family: Family,
    tail: Tail,
    w3c: W3cReader,
    httperr: HttpErrReader,
}

/// The span a followed site's window keeps.
const FOLLOW_SPAN_S: u64 = 3_600;

/// Keeps reading the folders the logs are in, from their end, and prints
/// the figures of the last `--window` every `--interval`.
async fn follow(
    args: &LogsArgs,
    settings: &Settings,
    sources: Vec<input::Source>,
) -> CommandResult {
    let mut folders: Vec<Followed> = Vec::new();
    for s in &sources {
        let input::Location::File(path) = &s.location else {
            return Err(CommandError::bad_input(format!(
                "--follow reads folders as they grow, not zips: {}",
                s.location.describe()
            )));
        };
        let Some(dir) = path.parent() else { continue };
        if folders.iter().any(|f| f.tail.dir() == dir) {
            continue;
        }
        folders.push(Followed {
            server: s.server.clone(),
            site: s.site.clone(),
            family: s.family,
            tail: Tail::new(dir, s.family, None),
            w3c: W3cReader::default(),
            httperr: HttpErrReader::default(),
        });
    }
    let window_s = args.window.as_secs().clamp(1, FOLLOW_SPAN_S);
    let site_filter = args.site.as_deref().map(site_name);
    let checks = checks(args);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let started = jiff::Timestamp::now().as_second();
    let mut windows: BTreeMap<(String, String), Window> = BTreeMap::new();
    let mut printed = 0u64;
    let (interval, output, count, quiet) = (args.interval, args.output, args.count, settings.quiet);
    tokio::task::spawn_blocking(move || {
        let mut next = std::time::Instant::now() + interval;
        loop {
            for f in &mut folders {
                let Followed {
                    server,
                    site,
                    family,
                    tail,
                    w3c,
                    httperr,
                } = f;
                tail.poll(&mut |line| match family {
                    Family::W3c => {
                        let Some(q) = w3c.line(line) else { return };
                        let site = site.clone().unwrap_or_else(|| "-".into());
                        if site_filter.as_ref().is_none_or(|s| *s == site) {
                            windows
                                .entry((server.clone(), site))
                                .or_insert_with(|| Window::new(FOLLOW_SPAN_S))
                                .add(&q, &checks);
                        }
                    }
                    Family::HttpErr => {
                        let Some(e) = httperr.line(line) else { return };
                        let site = e
                            .site_id
                            .map_or_else(|| "-".to_string(), |id| format!("W3SVC{id}"));
                        if site_filter.as_ref().is_none_or(|s| *s == site) {
                            windows
                                .entry((server.clone(), site))
                                .or_insert_with(|| Window::new(FOLLOW_SPAN_S))
                                .add_httperr(&e);
                        }
                    }
                });
            }
            if std::time::Instant::now() >= next {
                next += interval;
                let now = jiff::Timestamp::now().as_second();
                let covered = window_s.min((now - started + 1).max(1) as u64);
                let report = follow_report(&folders, &windows, now, covered);
                match output {
                    Output::Json | Output::Jsonl => {
                        let mut v = serde_json::to_value(&report).unwrap_or_default();
                        v["time"] = serde_json::Value::String(
                            jiff::Timestamp::from_second(now)
                                .map(|t| t.to_string())
                                .unwrap_or_default(),
                        );
                        print_json(Output::Jsonl, &v);
                    }
                    Output::Text => {
                        if !quiet {
                            crate::outln!(
                                "--- logs at {} (last {covered}s) ---",
                                jiff::Timestamp::from_second(now)
                                    .map(|t| t.to_string())
                                    .unwrap_or_default()
                            );
                        }
                        crate::out!("{}", render::text(&report));
                    }
                }
                printed += 1;
                if count.is_some_and(|c| printed >= c) {
                    return;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200).min(interval));
        }
    })
    .await
    .map_err(|e| CommandError::failed(format!("following the logs failed: {e}")))?;
    Ok(ExitStatus::Done)
}

/// The followed windows' last `covered` seconds as a report.
fn follow_report(
    folders: &[Followed],
    windows: &BTreeMap<(String, String), Window>,
    now: i64,
    covered: u64,
) -> LogsReport {
    let mut servers: Vec<String> = folders.iter().map(|f| f.server.clone()).collect();
    servers.sort();
    servers.dedup();
    let mut nodes = Vec::new();
    let mut views = Vec::new();
    for server in &servers {
        let mut sites = Vec::new();
        let mut view = crate::agent::TrafficView::default();
        for ((sv, site), w) in windows.iter().filter(|((sv, _), _)| sv == server) {
            let _ = sv;
            let mut f = w.figures(now, covered);
            f.covered_s = covered;
            sites.push(logs::site_from_figures(site, &f));
            view.sites.push(logs::site_view(site, &f));
        }
        views.push(view);
        nodes.push(NodeReport {
            name: server.clone(),
            traffic: None,
            outlier: None,
            outlier_reasons: Vec::new(),
            sites,
            series: None,
        });
    }
    let lines: u64 = folders
        .iter()
        .map(|f| f.w3c.stats.lines + f.httperr.lines)
        .sum();
    let mut malformed = farm_traffic::malformed::Malformed::default();
    for f in folders {
        malformed.merge(&f.w3c.stats.malformed);
        malformed.merge(&f.httperr.malformed);
    }
    LogsReport {
        first: jiff::Timestamp::from_second(now - covered as i64 + 1)
            .ok()
            .map(|t| t.to_string()),
        last: jiff::Timestamp::from_second(now)
            .ok()
            .map(|t| t.to_string()),
        from: None,
        to: None,
        site: None,
        by_s: None,
        files: 0,
        bytes: 0,
        lines,
        malformed: malformed.total(),
        malformed_reasons: malformed.reasons(),
        nodes: logs::judged(nodes, &views),
    }
}
