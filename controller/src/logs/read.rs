//! Reading copied logs in bounded memory, on every core: each file (or
//! each range of a large one, started with the directives in force there)
//! is read by one worker into per-site summaries merged as they come.
use std::collections::BTreeMap;
use std::io::{Read as _, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use farm_traffic::httperr::HttpErrReader;
use farm_traffic::lines::LineBuf;
use farm_traffic::malformed::{Malformed, Reason};
use farm_traffic::names::Family;
use farm_traffic::summary::{Series, Summary};
use farm_traffic::w3c::W3cReader;
use farm_traffic::window::Checks;

use super::input::{Location, Source};

/// A plain file larger than this is read in ranges by several workers.
const SPLIT: u64 = 64 * 1024 * 1024;
/// Bytes read at a time.
const CHUNK: usize = 1024 * 1024;

/// What to read of the logs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only lines at or after / before these (Unix s).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only this site (`W3SVC1`).
    pub site: Option<String>,
    /// Figures per step of this many seconds too.
    pub by_s: Option<u64>,
    pub checks: Checks,
    pub threads: usize,
}

impl Options {
    fn wants_site(&self, site: &str) -> bool {
        self.site
            .as_ref()
            .is_none_or(|s| s.eq_ignore_ascii_case(site))
    }

    fn in_time(&self, second: i64) -> bool {
        self.from.is_none_or(|f| second >= f) && self.to.is_none_or(|t| second < t)
    }
}

/// One site of one server.
#[derive(Debug, Clone, Default)]
pub struct SiteRead {
    pub summary: Summary,
    pub series: Option<Series>,
}

impl SiteRead {
    fn merge(&mut self, o: &SiteRead) {
        self.summary.merge(&o.summary);
        match (&mut self.series, &o.series) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.series = Some(b.clone()),
            _ => {}
        }
    }
}

/// Everything read: per server, per site.
#[derive(Debug, Default)]
pub struct Read {
    pub servers: BTreeMap<String, BTreeMap<String, SiteRead>>,
    pub files: usize,
    pub bytes: u64,
    /// Data lines seen (read or not).
    pub lines: u64,
    pub malformed: Malformed,
}

impl Read {
    fn merge(&mut self, o: Read) {
        for (server, sites) in o.servers {
            let mine = self.servers.entry(server).or_default();
            for (site, s) in sites {
                mine.entry(site).or_default().merge(&s);
            }
        }
        self.files += o.files;
        self.bytes += o.bytes;
        self.lines += o.lines;
        self.malformed.merge(&o.malformed);
    }
}

farm_proto::message_error! {
    /// A log that could not be read.
    ReadError
}

/// A piece of work: a source, whole or a byte range of it.
#[derive(Debug, Clone)]
struct Job {
    source: usize,
    range: Option<(u64, u64)>,
    /// Counts as a file (its first range does).
    first: bool,
}

/// The first line start at or after `at`.
fn line_start_after(f: &mut std::fs::File, at: u64) -> std::io::Result<u64> {
    f.seek(SeekFrom::Start(at - 1))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = at - 1;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(pos);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
}

/// Whether a W3C file's first `#Fields` has `date` (a log dated by `#Date`
/// carries its day across lines, so it is read whole).
fn dated_by_field(path: &std::path::Path) -> bool {
    let mut head = vec![0u8; 64 * 1024];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    String::from_utf8_lossy(&head[..n])
        .lines()
        .find_map(|l| l.strip_prefix("#Fields:"))
        .is_some_and(|f| f.split_whitespace().any(|x| x.eq_ignore_ascii_case("date")))
}

fn jobs(sources: &[Source], threads: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let splittable = match &s.location {
            Location::File(p) => {
                s.family == Family::W3c && s.size > SPLIT && threads > 1 && dated_by_field(p)
            }
            Location::Zip { .. } => false,
        };
        let Location::File(path) = &s.location else {
            jobs.push(Job {
                source: i,
                range: None,
                first: true,
            });
            continue;
        };
        if !splittable {
            jobs.push(Job {
                source: i,
                range: None,
                first: true,
            });
            continue;
        }
        let parts = (s.size / SPLIT).max(2);
        let mut cuts = vec![0u64];
        if let Ok(mut f) = std::fs::File::open(path) {
            for k in 1..parts {
                let at = s.size * k / parts;
                if let Ok(c) = line_start_after(&mut f, at) {
                    if c > *cuts.last().unwrap_or(&0) && c < s.size {
                        cuts.push(c);
                    }
                }
            }
        }
        cuts.push(s.size);
        for (k, w) in cuts.windows(2).enumerate() {
            jobs.push(Job {
                source: i,
                range: Some((w[0], w[1])),
                first: k == 0,
            });
        }
    }
    // The largest first: the workers end together.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.range.map_or(sources[j.source].size, |(a, b)| b - a)));
    jobs
}

/// Feeds `limit` bytes of `r` through `buf` to `each`, then the last
/// line if it has no line end.
fn pump(
    r: &mut dyn std::io::Read,
    limit: u64,
    buf: &mut LineBuf,
    each: &mut dyn FnMut(&str),
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    let mut left = limit;
    while left > 0 {
        let want = (chunk.len() as u64).min(left) as usize;
        let n = r.read(&mut chunk[..want])?;
        if n == 0 {
            break;
        }
        left -= n as u64;
        progress(n as u64);
        buf.feed(&chunk[..n], each);
    }
    buf.finish(each);
    Ok(())
}

/// Every line of `loc` (in `range`, started with the directives in force
/// there), to `each`; how many lines were too long.
fn lines_of(
    loc: &Location,
    range: Option<(u64, u64)>,
    each: &mut dyn FnMut(&str),
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<u64> {
    let mut buf = LineBuf::default();
    match loc {
        Location::File(path) => {
            let (start, end) = range.unwrap_or((0, u64::MAX));
            if start > 0 {
                for d in farm_traffic::tail::directives_before(path, start)? {
                    each(&d);
                }
            }
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(start))?;
            pump(&mut f, end - start, &mut buf, each, progress)?;
        }
        Location::Zip { archive, index, .. } => {
            let file = std::fs::File::open(archive)?;
            let mut zip = zip::ZipArchive::new(file).map_err(std::io::Error::other)?;
            let mut entry = zip.by_index(*index).map_err(std::io::Error::other)?;
            pump(&mut entry, u64::MAX, &mut buf, each, progress)?;
        }
    }
    Ok(buf.too_long)
}

/// Reads one job into a fresh [`Read`].
fn run_job(
    job: &Job,
    sources: &[Source],
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Read, ReadError> {
    let src = &sources[job.source];
    let mut out = Read {
        files: usize::from(job.first),
        bytes: job.range.map_or(src.size, |(a, b)| b - a),
        ..Read::default()
    };
    let sites = out.servers.entry(src.server.clone()).or_default();
    let new_site = || SiteRead {
        summary: Summary::default(),
        series: opts.by_s.map(Series::new),
    };
    let fail = |e: std::io::Error| ReadError(format!("{}: {e}", src.location.describe()));
    match src.family {
        Family::W3c => {
            let site = src.site.clone().unwrap_or_else(|| "-".into());
            if !opts.wants_site(&site) {
                progress(out.bytes);
                return Ok(out);
            }
            let mut reader = W3cReader::default();
            let s = sites.entry(site).or_insert_with(new_site);
            let too_long = lines_of(
                &src.location,
                job.range,
                &mut |line| {
                    if let Some(q) = reader.line(line) {
                        if opts.in_time(q.second) {
                            s.summary.add(&q, &opts.checks);
                            if let Some(series) = &mut s.series {
                                series.add(&q, &opts.checks);
                            }
                        }
                    }
                },
                progress,
            )
            .map_err(fail)?;
            s.summary.malformed.merge(&reader.stats.malformed);
            s.summary.malformed.add_unseen(Reason::TooLong, too_long);
            out.lines = reader.stats.lines + too_long;
            out.malformed.merge(&reader.stats.malformed);
            out.malformed.add_unseen(Reason::TooLong, too_long);
        }
        Family::HttpErr => {
            let mut reader = HttpErrReader::default();
            let too_long = lines_of(
                &src.location,
                job.range,
                &mut |line| {
                    let Some(e) = reader.line(line) else { return };
                    if !opts.in_time(e.second) {
                        return;
                    }
                    let site = e
                        .site_id
                        .map_or_else(|| "-".to_string(), |id| format!("W3SVC{id}"));
                    if opts.wants_site(&site) {
                        sites
                            .entry(site)
                            .or_insert_with(new_site)
                            .summary
                            .add_httperr(&e);
                    }
                },
                progress,
            )
            .map_err(fail)?;
            out.lines = reader.lines + too_long;
            out.malformed.merge(&reader.malformed);
            out.malformed.add_unseen(Reason::TooLong, too_long);
        }
    }
    Ok(out)
}

/// Reads every source; `progress` is told the bytes as they are read.
pub fn read(
    sources: &[Source],
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Read, ReadError> {
    let threads = opts.threads.max(1);
    let jobs = jobs(sources, threads);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<ReadError>> = Mutex::new(None);
    let results: Vec<Read> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(jobs.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Read::default();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(k) else { break };
                        match run_job(job, sources, opts, progress) {
                            Ok(r) => mine.merge(r),
                            Err(e) => {
                                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                // The others stop at their next job.
                                next.store(usize::MAX / 2, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut all = Read::default();
    for r in results {
        all.merge(r);
    }
    Ok(all)
}
