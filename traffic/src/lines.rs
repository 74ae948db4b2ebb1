//! Bytes as they are read into whole lines, with a bound on a line: IIS
//! never writes more than `maxLogLineLength` (64 KiB) a line, so anything
//! longer is not a log line (a file of zeros after a crash, a binary file
//! in the folder) and is dropped and counted, never kept growing in memory.
use std::borrow::Cow;

/// The longest line read; longer ones are dropped and counted.
pub const MAX_LINE: usize = 64 * 1024;

/// A line cut at the end of what was read so far is kept until it is
/// whole (bounded by [`MAX_LINE`]).
#[derive(Debug, Default, Clone)]
pub struct LineBuf {
    partial: Vec<u8>,
    /// Inside a line already too long: its bytes are dropped until its end.
    skipping: bool,
    /// Lines dropped for their length.
    pub too_long: u64,
}

/// A whole line as text (lossy where it is not UTF-8), without `\r\n`.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

impl LineBuf {
    /// Bytes held for a cut line (bounded by [`MAX_LINE`]).
    pub fn held(&self) -> usize {
        self.partial.capacity()
    }

    /// Whether a cut line is waiting for its end.
    pub fn is_cut(&self) -> bool {
        !self.partial.is_empty() || self.skipping
    }

    /// Feeds what was read; `each` gets every line it completes, without
    /// its line ending.
    pub fn feed(&mut self, chunk: &[u8], each: &mut dyn FnMut(&str)) {
        let mut rest = chunk;
        if self.is_cut() {
            match memchr::memchr(b'\n', rest) {
                None => {
                    self.keep(rest);
                    return;
                }
                Some(i) => {
                    self.keep(&rest[..i]);
                    if !self.skipping {
                        let line = std::mem::take(&mut self.partial);
                        each(crate::fields::clean_line(&text(&line)));
                        self.partial = line;
                        self.partial.clear();
                    }
                    self.skipping = false;
                    rest = &rest[i + 1..];
                }
            }
        }
        let Some(last) = memchr::memrchr(b'\n', rest) else {
            self.keep(rest);
            return;
        };
        let (whole, tail) = (&rest[..last], &rest[last + 1..]);
        // One UTF-8 check for the whole piece (IIS logs in UTF-8 by
        // default); per line only where it fails.
        match std::str::from_utf8(whole) {
            Ok(s) => {
                let mut start = 0;
                for nl in memchr::memchr_iter(b'\n', whole) {
                    self.one(&s[start..nl], each);
                    start = nl + 1;
                }
                self.one(&s[start..], each);
            }
            Err(_) => {
                for line in whole.split(|b| *b == b'\n') {
                    self.one(&text(line), each);
                }
            }
        }
        self.keep(tail);
    }

    fn one(&mut self, line: &str, each: &mut dyn FnMut(&str)) {
        if line.len() > MAX_LINE {
            self.too_long += 1;
        } else {
            each(crate::fields::clean_line(line));
        }
    }

    /// Keeps the start of a cut line, unless it grew too long.
    fn keep(&mut self, bytes: &[u8]) {
        if self.skipping || bytes.is_empty() {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.too_long += 1;
            self.skipping = true;
            self.partial = Vec::new();
            return;
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The end of a file that is done: a last line without its line end
    /// is still a line.
    pub fn finish(&mut self, each: &mut dyn FnMut(&str)) {
        if !self.skipping && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            each(crate::fields::clean_line(&text(&line)));
        }
        self.partial.clear();
        self.skipping = false;
    }

    /// Drops what comes until the next line end, uncounted: a tail that
    /// starts inside a line being written.
    pub fn skip_line(&mut self) {
        self.partial = Vec::new();
        self.skipping = true;
    }

    /// Forgets a cut line (the file was truncated under it).
    pub fn reset(&mut self) {
        self.partial = Vec::new();
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(b: &mut LineBuf, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        b.feed(chunk, &mut |l| out.push(l.to_string()));
        out
    }

    #[test]
    fn cut_lines_are_joined_and_line_ends_dropped() {
        let mut b = LineBuf::default();
        assert_eq!(lines(&mut b, b"\xef\xbb\xbfone\r\ntw"), ["one"]);
        assert!(b.is_cut());
        assert_eq!(lines(&mut b, b"o\r"), Vec::<String>::new());
        assert_eq!(lines(&mut b, b"\nthree\n"), ["two", "three"]);
        assert!(!b.is_cut());
        assert_eq!(lines(&mut b, b"caf\xe9\n"), ["caf\u{fffd}"]);
        b.feed(b"last", &mut |_| {});
        let mut out = Vec::new();
        b.finish(&mut |l| out.push(l.to_string()));
        assert_eq!(out, ["last"]);
    }

    #[test]
    fn a_line_past_the_bound_is_dropped_and_counted_and_memory_stays_small() {
        let mut b = LineBuf::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            assert!(lines(&mut b, &chunk).is_empty());
        }
        assert!(
            b.partial.capacity() <= MAX_LINE,
            "nothing kept of the long line"
        );
        assert_eq!(lines(&mut b, b"tail of it\nnext\n"), ["next"]);
        assert_eq!(b.too_long, 1);
        let long = format!("{}\nshort\n", "y".repeat(MAX_LINE + 1));
        assert_eq!(lines(&mut b, long.as_bytes()), ["short"]);
        assert_eq!(b.too_long, 2);
    }
}
