//! Following a log folder as IIS writes it: the newest file read from
//! where the last read stopped, a rollover (a daily, hourly or size file
//! after it) finished and then left for the next, a cut line kept until
//! it is whole. At most `MAX_READ` bytes a poll, so memory is bounded
//! whatever the file's size.
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The most read in one poll.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// Where a tail is.
#[derive(Debug, Default)]
pub struct Tail {
    dir: PathBuf,
    /// `u_ex`/`ex` for W3C logs, `httperr` for the error log.
    prefixes: Vec<&'static str>,
    current: Option<(PathBuf, u64)>,
    partial: String,
}

impl Tail {
    /// Follows `dir`'s files whose names start with one of `prefixes`
    /// and end in `.log`, from the end of the newest (what was there
    /// before is history, not this window's traffic).
    pub fn new(dir: &Path, prefixes: &[&'static str]) -> Self {
        let mut t = Tail {
            dir: dir.to_path_buf(),
            prefixes: prefixes.to_vec(),
            current: None,
            partial: String::new(),
        };
        if let Some(newest) = t.files().pop() {
            let len = std::fs::metadata(&newest).map(|m| m.len()).unwrap_or(0);
            t.current = Some((newest, len));
        }
        t
    }

    /// The log files, oldest first (IIS names sort by time: `u_ex26120604`
    /// after `u_ex26120603`; `httperr2` after `httperr1` up to 9, then by
    /// the number).
    fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(u64, String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let lower = name.to_ascii_lowercase();
                let stem = lower.strip_suffix(".log")?;
                let prefix = self.prefixes.iter().find(|p| stem.starts_with(**p))?;
                let number = stem[prefix.len()..]
                    .trim_end_matches("_x")
                    .parse::<u64>()
                    .unwrap_or(0);
                Some((number, lower, e.path()))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, _, p)| p).collect()
    }

    /// The whole lines written since the last poll.
    pub fn poll(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut budget = MAX_READ;
        loop {
            let files = self.files();
            let (path, offset) = match &self.current {
                Some((p, o)) if files.contains(p) => (p.clone(), *o),
                // The file went away (rotated out): start the oldest left.
                _ => match files.first() {
                    Some(p) => (p.clone(), 0),
                    None => return lines,
                },
            };
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            // Truncated (a size-rolled file written anew): from its start.
            let offset = if len < offset { 0 } else { offset };
            let want = (len - offset).min(budget);
            let mut read = 0;
            if want > 0 {
                if let Ok(mut f) = std::fs::File::open(&path) {
                    if f.seek(SeekFrom::Start(offset)).is_ok() {
                        let mut buf = Vec::with_capacity(want as usize);
                        read = f.take(want).read_to_end(&mut buf).unwrap_or(0) as u64;
                        self.partial.push_str(&String::from_utf8_lossy(&buf));
                    }
                }
            }
            budget -= read;
            self.current = Some((path.clone(), offset + read));
            while let Some(at) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=at).collect();
                lines.push(line);
            }
            let newer = files
                .iter()
                .position(|p| *p == path)
                .and_then(|i| files.get(i + 1));
            match newer {
                // This one is done (IIS writes the new one now): on to it.
                Some(next) if offset + read >= len && budget > 0 => {
                    if !self.partial.is_empty() {
                        lines.push(std::mem::take(&mut self.partial));
                    }
                    self.current = Some((next.clone(), 0));
                }
                _ => return lines,
            }
        }
    }
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

    #[test]
    fn follows_a_file_across_cut_lines_and_a_rollover() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("u_ex26120604.log");
        append(&a, "old line\r\n");
        let mut t = Tail::new(dir.path(), &["u_ex", "ex"]);
        assert!(t.poll().is_empty(), "what was there before is not read");
        append(&a, "one\r\ntw");
        assert_eq!(t.poll(), ["one\r\n"]);
        append(&a, "o\r\n");
        assert_eq!(t.poll(), ["two\r\n"]);
        // The hour turns: the rest of the old file, then the new one.
        append(&a, "three\r\n");
        let b = dir.path().join("u_ex26120605.log");
        append(&b, "#Fields: x\r\nfour\r\n");
        append(&dir.path().join("other.txt"), "not a log\n");
        assert_eq!(t.poll(), ["three\r\n", "#Fields: x\r\n", "four\r\n"]);
        append(&b, "five\r\n");
        assert_eq!(t.poll(), ["five\r\n"]);
    }

    #[test]
    fn an_empty_folder_and_a_truncated_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tail::new(dir.path(), &["httperr"]);
        assert!(t.poll().is_empty());
        let f = dir.path().join("httperr1.log");
        append(&f, "a\nb\n");
        assert_eq!(t.poll(), ["a\n", "b\n"]);
        std::fs::write(&f, "c\n").unwrap();
        assert_eq!(t.poll(), ["c\n"]);
    }
}
