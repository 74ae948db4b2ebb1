//! A log folder followed as IIS writes it, right from any starting point.
//!
//! - **Started mid-file** (an agent installed, upgraded or restarted while
//!   IIS runs), the tail reads back the directives in force where it
//!   starts — the last `#Fields` block before its offset, at most
//!   [`BACK`] bytes back, else the file's first block — so the lines after
//!   it are read with their columns at once, not after IIS opens its next
//!   file (up to a day later with daily files).
//! - **Which file**: every file that grows is read, in the order it was
//!   written (modification time, then its name read by its own shape —
//!   [`crate::names`]), so a rollover, a late flush into the previous
//!   file or a leftover file of an older setting are all read right. Only
//!   the newest few files of each name shape and those recently grown are
//!   looked at each poll: a folder of a year of daily files costs no more
//!   than one of a day.
//! - **Switching files** hands the reader that file's directives first, so
//!   one reader follows interleaved files with the right columns.
//! - **Bounded**: at most [`MAX_READ`] bytes a poll, a line at most
//!   [`crate::lines::MAX_LINE`]; a truncated file is read from its start.
//! - **Said, not silent**: a folder that is missing or cannot be read, or
//!   a file that cannot be opened, is [`Tail::problem`].
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::lines::LineBuf;
use crate::names::{self, Family, LogName, Period, Shape};

/// The most read in one poll.
pub const MAX_READ: u64 = 4 * 1024 * 1024;
/// How far back from its starting offset a tail looks for the directives
/// in force.
pub const BACK: u64 = 16 * 1024 * 1024;
/// Files of one name shape looked at each poll (the newest by name).
const NEWEST: usize = 3;
/// A file that grew within this long is looked at whatever its name.
const RECENT: Duration = Duration::from_secs(600);
/// Directive lines kept per file (a block is four or five).
const MAX_DIRECTIVES: usize = 16;

#[derive(Debug, Default)]
struct FileState {
    offset: u64,
    buf: LineBuf,
    /// The directive block in force at `offset`.
    directives: Vec<String>,
    /// Started inside this file: the block in force is still to be read
    /// back.
    need_header: bool,
    /// The last line read was a directive: a block continues.
    in_block: bool,
    grew_at: Option<Instant>,
}

/// Where a tail is.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    family: Family,
    period: Option<Period>,
    files: HashMap<OsString, FileState>,
    last_emitted: Option<OsString>,
    problem: Option<String>,
    /// Lines dropped for their length, over every file.
    too_long: u64,
    scratch: Vec<u8>,
    /// The folder has been listed at least once.
    seen: bool,
    /// A folder not made yet is no problem (HTTP.sys makes `HTTPERR`
    /// when it first logs).
    absent_ok: bool,
}

struct Candidate {
    name: OsString,
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    order: (Shape, i64),
}

impl Tail {
    /// Follows `dir` from the end of what is there now (what was written
    /// before is history, not this window's traffic).
    pub fn new(dir: &Path, family: Family, period: Option<Period>) -> Self {
        let mut t = Self::blank(dir, family, period);
        t.start_at_end();
        t
    }

    fn blank(dir: &Path, family: Family, period: Option<Period>) -> Self {
        Tail {
            dir: dir.to_path_buf(),
            family,
            period,
            files: HashMap::new(),
            last_emitted: None,
            problem: None,
            too_long: 0,
            scratch: Vec::new(),
            seen: false,
            absent_ok: false,
        }
    }

    /// A folder that was never there is not said to be a problem (one
    /// that disappears still is).
    pub fn absent_ok(mut self) -> Self {
        self.absent_ok = true;
        if !self.seen {
            self.problem = None;
        }
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the folder cannot be followed now, if it cannot.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Where each file's reading starts or stands: the lines before are
    /// not the tail's (a reader of the history reads up to there).
    pub fn offsets(&self) -> Vec<(PathBuf, u64)> {
        self.files
            .iter()
            .map(|(name, st)| (self.dir.join(name), st.offset))
            .collect()
    }

    /// Lines dropped for their length so far.
    pub fn too_long(&self) -> u64 {
        self.too_long
    }

    /// The folder's log files: (name, its reading, the entry).
    fn list(&mut self) -> Option<Vec<(OsString, LogName, std::fs::DirEntry)>> {
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                self.seen = true;
                let files = entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name();
                        let parsed = names::parse(self.family, name.to_str()?, self.period)?;
                        Some((name, parsed, e))
                    })
                    .collect();
                Some(files)
            }
            Err(e) => {
                self.problem = match e.kind() {
                    std::io::ErrorKind::NotFound if self.seen => {
                        Some(format!("the log folder {} disappeared", self.dir.display()))
                    }
                    std::io::ErrorKind::NotFound if self.absent_ok => None,
                    std::io::ErrorKind::NotFound => Some(format!(
                        "the log folder {} does not exist (no request logged there yet, or the site logs elsewhere)",
                        self.dir.display()
                    )),
                    _ => Some(format!("the log folder {} cannot be read: {e}", self.dir.display())),
                };
                None
            }
        }
    }

    fn start_at_end(&mut self) {
        let Some(listed) = self.list() else {
            return;
        };
        for (name, _, entry) in listed {
            let path = entry.path();
            // A fresh look (a directory entry's size can lag behind a file
            // another process holds open, on Windows).
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let len = meta.len();
            let mut st = FileState {
                offset: len,
                need_header: len > 0,
                ..FileState::default()
            };
            // Started inside a line being written: the rest of it is not
            // a line of its own.
            if len > 0 && !ends_line(&path, len) {
                st.buf.skip_line();
            }
            self.files.insert(name, st);
        }
    }

    /// The files worth a look this poll, oldest written first.
    fn candidates(
        &mut self,
        listed: Vec<(OsString, LogName, std::fs::DirEntry)>,
    ) -> Vec<Candidate> {
        let mut by_name: Vec<&(OsString, LogName, std::fs::DirEntry)> = listed.iter().collect();
        by_name.sort_by_key(|(_, n, _)| n.order());
        let mut picked: Vec<&(OsString, LogName, std::fs::DirEntry)> = Vec::new();
        for shape in [
            Shape::Hourly,
            Shape::SixDigits,
            Shape::Monthly,
            Shape::Sized,
        ] {
            let of_shape: Vec<_> = by_name
                .iter()
                .filter(|(_, n, _)| n.shape == shape)
                .collect();
            picked.extend(of_shape.iter().rev().take(NEWEST).map(|f| **f));
        }
        for f in &by_name {
            let recent = self
                .files
                .get(&f.0)
                .is_some_and(|s| s.buf.is_cut() || s.grew_at.is_some_and(|t| t.elapsed() < RECENT));
            if recent && !picked.iter().any(|p| p.0 == f.0) {
                picked.push(f);
            }
        }
        let mut out: Vec<Candidate> = picked
            .into_iter()
            .filter_map(|(name, parsed, entry)| {
                let path = entry.path();
                let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                Some(Candidate {
                    name: name.clone(),
                    path,
                    len: meta.len(),
                    modified: meta.modified().ok(),
                    order: parsed.order(),
                })
            })
            .collect();
        // When it was written; a name of the site's own period before
        // one of another at the same moment.
        let fits = |c: &Candidate| self.period.is_some_and(|p| c.order.0.fits(p));
        out.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then(fits(a).cmp(&fits(b)))
                .then(a.order.cmp(&b.order))
        });
        // Files gone from the folder are forgotten.
        let present: std::collections::HashSet<&OsString> =
            listed.iter().map(|(n, _, _)| n).collect();
        self.files.retain(|name, _| present.contains(name));
        out
    }

    /// Every whole line written since the last poll, to `each` (a file's
    /// directives first when the lines switch to it); how many lines.
    pub fn poll(&mut self, each: &mut dyn FnMut(&str)) -> usize {
        let Some(listed) = self.list() else {
            return 0;
        };
        let candidates = self.candidates(listed);
        let mut problem = None;
        let mut budget = MAX_READ;
        let mut count = 0;
        for c in candidates {
            if budget == 0 {
                break;
            }
            let st = self
                .files
                .entry(c.name.clone())
                .or_insert_with(|| FileState {
                    // A folder that appeared after the start: all of it is new.
                    offset: 0,
                    ..FileState::default()
                });
            if c.len < st.offset {
                // Truncated, or written anew: from its start.
                *st = FileState::default();
            }
            if c.len == st.offset {
                continue;
            }
            match self.read(&c, budget, each) {
                Ok((read, lines)) => {
                    budget -= read;
                    count += lines;
                }
                Err(e) => problem = Some(format!("{} cannot be read: {e}", c.path.display())),
            }
        }
        self.problem = problem;
        count
    }

    /// Reads what `c` has new (at most `budget` bytes); bytes and lines.
    fn read(
        &mut self,
        c: &Candidate,
        budget: u64,
        each: &mut dyn FnMut(&str),
    ) -> std::io::Result<(u64, usize)> {
        let Some(st) = self.files.get_mut(&c.name) else {
            return Ok((0, 0));
        };
        if st.need_header {
            st.directives = directives_before(&c.path, st.offset).unwrap_or_default();
            st.need_header = false;
        }
        let want = (c.len - st.offset).min(budget);
        let mut f = std::fs::File::open(&c.path)?;
        f.seek(SeekFrom::Start(st.offset))?;
        self.scratch.clear();
        let read = f.take(want).read_to_end(&mut self.scratch)? as u64;
        if read == 0 {
            return Ok((0, 0));
        }
        let mut lines = 0;
        if self.last_emitted.as_ref() != Some(&c.name) {
            for d in &st.directives {
                each(d);
            }
            self.last_emitted = Some(c.name.clone());
        }
        let FileState {
            buf,
            directives,
            in_block,
            offset,
            grew_at,
            ..
        } = st;
        let before = buf.too_long;
        buf.feed(&self.scratch, &mut |line| {
            if line.starts_with('#') {
                if !*in_block {
                    directives.clear();
                }
                *in_block = true;
                if directives.len() < MAX_DIRECTIVES {
                    directives.push(line.to_string());
                }
            } else if !line.is_empty() {
                *in_block = false;
            }
            lines += 1;
            each(line);
        });
        self.too_long += buf.too_long - before;
        *offset += read;
        *grew_at = Some(Instant::now());
        Ok((read, lines))
    }
}

/// Whether the byte before `len` ends a line.
fn ends_line(path: &Path, len: u64) -> bool {
    let mut b = [0u8; 1];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut b)
        })
        .map_or(true, |_| b[0] == b'\n')
}

/// The directive block in force at `offset` of `path`: the last
/// `#Fields` line that starts a line before it, with the directive lines
/// around it (`#Software`, `#Version`, `#Date`), looked for at most
/// [`BACK`] bytes back; past that, the file's first block (IIS writes the
/// same fields again unless they were changed, so the first block is the
/// best guess left — and a line that does not fit it is counted, not
/// misread).
pub fn directives_before(path: &Path, offset: u64) -> std::io::Result<Vec<String>> {
    const CHUNK: u64 = 64 * 1024;
    const PATTERN: &[u8] = b"#Fields:";
    let mut f = std::fs::File::open(path)?;
    let finder = memchr::memmem::FinderRev::new(PATTERN);
    let stop = offset.saturating_sub(BACK);
    let mut end = offset;
    let mut buf = Vec::new();
    while end > stop {
        let start = end.saturating_sub(CHUNK).max(stop);
        // A little past `end` (never past `offset`): a pattern cut by the
        // chunk's edge is found whole.
        let upto = (end + PATTERN.len() as u64).min(offset);
        read_range(&mut f, start, upto, &mut buf)?;
        let mut hay = &buf[..];
        while let Some(i) = finder.rfind(hay) {
            let at = start + i as u64;
            let line_start = at == 0 || (i > 0 && buf[i - 1] == b'\n');
            let line_start = line_start || (i == 0 && byte_at(&mut f, at - 1)? == Some(b'\n'));
            if line_start {
                return block_around(&mut f, at, offset);
            }
            hay = &hay[..i];
        }
        end = start;
    }
    block_around(&mut f, 0, offset)
}

fn byte_at(f: &mut std::fs::File, at: u64) -> std::io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    Ok((f.read(&mut b)? == 1).then_some(b[0]))
}

fn read_range(f: &mut std::fs::File, from: u64, to: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    f.seek(SeekFrom::Start(from))?;
    f.take(to.saturating_sub(from)).read_to_end(buf)?;
    Ok(())
}

/// The directive lines around the one starting at `at` (contiguous lines
/// starting with `#`, not past `limit`).
fn block_around(f: &mut std::fs::File, at: u64, limit: u64) -> std::io::Result<Vec<String>> {
    const AROUND: u64 = 8 * 1024;
    let from = at.saturating_sub(AROUND);
    let mut buf = Vec::new();
    read_range(f, from, (at + AROUND).min(limit), &mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let rel = (at - from) as usize;
    // The lines before `at` (the last may be cut at the window's start:
    // kept only when the window starts the file).
    let before: Vec<&str> = text.get(..rel).unwrap_or("").split('\n').collect();
    let mut block: Vec<String> = Vec::new();
    let whole_from = if from == 0 { 0 } else { 1 };
    for line in before.iter().skip(whole_from).rev().skip(1) {
        let line = crate::fields::clean_line(line);
        if !line.starts_with('#') {
            break;
        }
        block.push(line.to_string());
    }
    block.reverse();
    let after = text.get(rel..).unwrap_or("");
    let mut lines = after.split('\n').peekable();
    while let Some(line) = lines.next() {
        // The last piece may be cut at the window's end or at `limit`.
        if lines.peek().is_none() {
            break;
        }
        let line = crate::fields::clean_line(line);
        if !line.starts_with('#') {
            break;
        }
        block.push(line.to_string());
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn poll(t: &mut Tail) -> Vec<String> {
        let mut out = Vec::new();
        t.poll(&mut |l| out.push(l.to_string()));
        out
    }

    fn age(path: &Path, secs_ago: u64) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .unwrap();
    }

    const HEAD: &str = "#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n#Date: 2026-12-07 00:00:00\r\n#Fields: date time sc-status\r\n";

    #[test]
    fn started_mid_file_it_reads_back_the_directives_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("u_ex261207.log");
        append(&a, HEAD);
        append(&a, &"2026-12-07 00:00:01 200\r\n".repeat(1000));
        // IIS restarted mid-file with other fields.
        append(
            &a,
            "#Software: x\r\n#Date: 2026-12-07 01:00:00\r\n#Fields: time sc-status date\r\n",
        );
        append(&a, "01:00:01 200 2026-12-07\r\n");
        let mut t = Tail::new(dir.path(), Family::W3c, None);
        assert!(poll(&mut t).is_empty(), "what was there before is not read");
        append(&a, "01:00:02 500 2026-12-07\r\n");
        assert_eq!(
            poll(&mut t),
            [
                "#Software: x",
                "#Date: 2026-12-07 01:00:00",
                "#Fields: time sc-status date",
                "01:00:02 500 2026-12-07"
            ]
        );
        append(&a, "01:00:03 200 2026-12-07\r\n");
        assert_eq!(poll(&mut t), ["01:00:03 200 2026-12-07"]);
    }

    #[test]
    fn directives_far_back_fall_back_to_the_files_first_block() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("u_ex261207.log");
        append(&a, HEAD);
        let line = "2026-12-07 00:00:01 200\r\n";
        let n = (BACK as usize) / line.len() + 10;
        append(&a, &line.repeat(n));
        let len = std::fs::metadata(&a).unwrap().len();
        let block = directives_before(&a, len).unwrap();
        assert_eq!(block.len(), 4, "{block:?}");
        assert_eq!(block[3], "#Fields: date time sc-status");
        // A block right at the start, the offset inside it.
        assert_eq!(directives_before(&a, 20).unwrap(), Vec::<String>::new());
        // A pattern straddling a chunk edge is found.
        let b = dir.path().join("u_ex261208.log");
        append(&b, &"x".repeat(64 * 1024 - 3));
        append(&b, "\n#Fields: time sc-status\nline\n");
        let len = std::fs::metadata(&b).unwrap().len();
        assert_eq!(
            directives_before(&b, len).unwrap(),
            ["#Fields: time sc-status"]
        );
    }

    #[test]
    fn a_leftover_hourly_file_does_not_outrank_todays_daily_one() {
        let dir = tempfile::tempdir().unwrap();
        let hourly = dir.path().join("u_ex26113015.log");
        append(&hourly, HEAD);
        age(&hourly, 7 * 86_400);
        let daily = dir.path().join("u_ex261207.log");
        append(&daily, HEAD);
        let mut t = Tail::new(dir.path(), Family::W3c, Some(Period::Daily));
        append(&daily, "2026-12-07 10:00:00 200\r\n");
        let got = poll(&mut t);
        assert_eq!(got.last().unwrap(), "2026-12-07 10:00:00 200");
        append(&daily, "2026-12-07 10:00:01 200\r\n");
        assert_eq!(poll(&mut t), ["2026-12-07 10:00:01 200"]);
    }

    #[test]
    fn eleven_size_rolled_files_are_followed_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        for n in 1..=10 {
            let f = dir.path().join(format!("u_extend{n}.log"));
            append(&f, HEAD);
            append(&f, &format!("2026-12-07 00:00:{n:02} 200\r\n"));
            age(&f, 100 - n);
        }
        let mut t = Tail::new(dir.path(), Family::W3c, Some(Period::MaxSize));
        let tenth = dir.path().join("u_extend10.log");
        append(&tenth, "2026-12-07 00:01:00 200\r\n");
        let got = poll(&mut t);
        assert_eq!(got.last().unwrap(), "2026-12-07 00:01:00 200", "{got:?}");
        // The eleventh: read whole, its header included.
        let eleventh = dir.path().join("u_extend11.log");
        append(&eleventh, HEAD);
        append(&eleventh, "2026-12-07 00:02:00 200\r\n");
        let got = poll(&mut t);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[4], "2026-12-07 00:02:00 200");
    }

    #[test]
    fn a_rollover_a_late_flush_and_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("u_ex26120604.log");
        append(&a, HEAD);
        append(&a, "old\r\n");
        let mut t = Tail::new(dir.path(), Family::W3c, None);
        append(&a, "one\r\ntw");
        assert_eq!(poll(&mut t).last().unwrap(), "one");
        append(&a, "o\r\n");
        assert_eq!(poll(&mut t), ["two"]);
        // The hour turns; the old file gets a late line after the new one.
        let b = dir.path().join("u_ex26120605.log");
        append(&b, "#Fields: time sc-status\r\nfour\r\n");
        std::fs::write(dir.path().join("other.txt"), "not a log\n").unwrap();
        assert_eq!(poll(&mut t), ["#Fields: time sc-status", "four"]);
        append(&a, "late\r\n");
        let got = poll(&mut t);
        assert_eq!(got.last().unwrap(), "late");
        assert!(
            got.contains(&"#Fields: date time sc-status".to_string()),
            "{got:?}"
        );
        append(&b, "five\r\n");
        assert_eq!(poll(&mut t), ["#Fields: time sc-status", "five"]);
        // Truncated: from its start.
        std::fs::write(&b, "#Fields: sc-status\r\nsix\r\n").unwrap();
        assert_eq!(poll(&mut t), ["#Fields: sc-status", "six"]);
    }

    /// 100 MB without a newline (a crash's zeros, a binary dropped in the
    /// folder): dropped and counted, never held.
    #[test]
    fn a_hundred_megabyte_line_is_dropped_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("u_ex261207.log");
        append(&a, HEAD);
        let mut t = Tail::new(dir.path(), Family::W3c, None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).unwrap();
            assert!(poll(&mut t).iter().all(|l| l.starts_with('#')));
            let held: usize = t.files.values().map(|s| s.buf.held()).sum();
            assert!(held <= crate::lines::MAX_LINE, "{held} bytes held");
        }
        f.write_all(b"\r\n2026-12-07 00:00:09 200\r\n").unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            t.poll(&mut |l| got.push(l.to_string()));
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.last().unwrap(), "2026-12-07 00:00:09 200");
        assert_eq!(t.too_long(), 1);
    }

    #[test]
    fn a_long_line_is_dropped_and_a_missing_folder_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("W3SVC1");
        let mut t = Tail::new(&logs, Family::W3c, None);
        assert!(poll(&mut t).is_empty());
        assert!(
            t.problem().unwrap().contains("does not exist"),
            "{:?}",
            t.problem()
        );
        std::fs::create_dir(&logs).unwrap();
        let a = logs.join("u_ex261207.log");
        append(&a, HEAD);
        assert_eq!(poll(&mut t).len(), 4, "a folder made later is read whole");
        assert_eq!(t.problem(), None);
        let long = "z".repeat(10 * 1024 * 1024);
        append(&a, &long);
        assert!(poll(&mut t).is_empty());
        append(&a, &long);
        append(&a, "\r\n2026-12-07 00:00:09 200\r\n");
        let mut got = Vec::new();
        for _ in 0..20 {
            if t.poll(&mut |l| got.push(l.to_string())) == 0 && !got.is_empty() {
                break;
            }
        }
        assert_eq!(got, ["2026-12-07 00:00:09 200"]);
        assert_eq!(t.too_long(), 1);
        std::fs::remove_dir_all(&logs).unwrap();
        assert!(poll(&mut t).is_empty());
        assert!(
            t.problem().unwrap().contains("disappeared"),
            "{:?}",
            t.problem()
        );
        // HTTP.sys makes its folder when it first logs: not there yet is
        // no problem; gone is.
        let mut e = Tail::new(&dir.path().join("HTTPERR"), Family::HttpErr, None).absent_ok();
        assert!(poll(&mut e).is_empty());
        assert_eq!(e.problem(), None);
        std::fs::create_dir(dir.path().join("HTTPERR")).unwrap();
        poll(&mut e);
        std::fs::remove_dir(dir.path().join("HTTPERR")).unwrap();
        poll(&mut e);
        assert!(e.problem().unwrap().contains("disappeared"));
    }
}
