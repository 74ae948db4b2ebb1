//! What the W3C and HTTP.sys logs share: lines, directives, fields, times.
//!
//! Fields are separated by runs of spaces, as every other reader of these
//! logs splits them: real servers write lines with two spaces between two
//! fields (a module that logs an empty value), and such a line is still one
//! request. Dates and times are UTC in both logs and are read by hand, not
//! through a general parser: a reader goes through millions of them.

/// A log line without its line ending (CRLF, LF, or the `\r\r\n` some
/// tools print) and, on a file's first line, without a UTF-8 BOM.
pub fn clean_line(line: &str) -> &str {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let mut end = line.len();
    while end > 0 && matches!(line.as_bytes()[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &line[..end]
}

/// A directive line `#Name: value` as (`Name`, `value`); `None` for a
/// line that is not one.
pub fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?;
    let (name, value) = rest.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// `#Fields: a b c` → the field names (runs of spaces split, a trailing
/// space ignored).
pub fn field_names(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_string).collect()
}

/// No column: the token is not kept.
pub const SKIP: u8 = u8::MAX;

/// Splits `line` on runs of spaces into `out` by column: token `i` goes to
/// `out[map[i]]` unless `map[i]` is [`SKIP`]. Returns how many tokens the
/// line has (compared with the field count by the caller); nothing is
/// allocated.
pub fn split_fields<'a, const N: usize>(
    line: &'a str,
    map: &[u8],
    out: &mut [&'a str; N],
) -> usize {
    let bytes = line.as_bytes();
    let (mut n, mut start) = (0usize, 0usize);
    // Where each kept column's token is; sliced once at the end.
    let mut at = [(0usize, 0usize); N];
    let mut token = |end: usize, start: &mut usize, n: &mut usize| {
        if end > *start {
            let slot = usize::from(map.get(*n).copied().unwrap_or(SKIP));
            if let Some(cell) = at.get_mut(slot) {
                *cell = (*start, end);
            }
            *n += 1;
        }
        *start = end + 1;
    };
    // The spaces of 16 bytes at a time as the bits of one mask (safe
    // SIMD: a reader goes through millions of lines, and splitting them
    // token by token — `str::split`, `memchr` per token — cost more than
    // the rest of the reading together).
    let space = wide::u8x16::splat(b' ');
    let mut base = 0;
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        let v = wide::u8x16::new(block.try_into().unwrap_or([0; 16]));
        let mut bits = v.cmp_eq(space).move_mask() as u32;
        while bits != 0 {
            token(base + bits.trailing_zeros() as usize, &mut start, &mut n);
            bits &= bits - 1;
        }
        base += 16;
    }
    for (i, b) in blocks.remainder().iter().enumerate() {
        if *b == b' ' {
            token(base + i, &mut start, &mut n);
        }
    }
    token(bytes.len(), &mut start, &mut n);
    for (cell, &(s, e)) in out.iter_mut().zip(at.iter()) {
        if e > s {
            *cell = line.get(s..e).unwrap_or("");
        }
    }
    n
}

/// Digits as a number; `None` for anything else or an overflow (what
/// `str::parse` says, without its generality: a reader parses millions).
pub fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return s.parse().ok();
    }
    let mut v = 0u64;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

/// Two ASCII digits as a number.
fn two(b: &[u8]) -> Option<i64> {
    match b {
        [a @ b'0'..=b'9', c @ b'0'..=b'9'] => Some(i64::from((a - b'0') * 10 + (c - b'0'))),
        _ => None,
    }
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian; Howard
/// Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `yyyy-mm-dd` → days since 1970-01-01; `None` for anything else (a
/// month 13, a 30 February).
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = two(&b[0..2])? * 100 + two(&b[2..4])?;
    let m = two(&b[5..7])?;
    let d = two(&b[8..10])?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `hh:mm:ss` (a fraction after it ignored) → seconds into the day.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' || (b.len() > 8 && b[8] != b'.') {
        return None;
    }
    let (h, m, sec) = (two(&b[0..2])?, two(&b[3..5])?, two(&b[6..8])?);
    (h < 24 && m < 60 && sec < 61).then_some(h * 3600 + m * 60 + sec)
}

/// The date lines are dated by when the log has no `date` field (IIS 6,
/// a custom field selection): the `#Date:` directive's, moved to the next
/// day when the time goes back — by more than [`DateBlock::JITTER_S`], so
/// lines a few seconds out of order are not dated a day later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DateBlock {
    /// Days since 1970 of the lines now, and the last time of day seen.
    day: Option<i64>,
    last: i64,
}

impl DateBlock {
    /// A time this far before the last one is the next day, not disorder.
    pub const JITTER_S: i64 = 3600;

    /// A `#Date: yyyy-mm-dd hh:mm:ss` directive: the day and time the file
    /// was opened.
    pub fn set(&mut self, value: &str) {
        let mut parts = value.split_whitespace();
        let day = parts.next().and_then(parse_date);
        let time = parts.next().and_then(parse_time).unwrap_or(0);
        *self = DateBlock { day, last: time };
    }

    pub fn known(&self) -> bool {
        self.day.is_some()
    }

    /// The Unix second of a line's time of day under this block.
    pub fn date(&mut self, time_of_day: i64) -> Option<i64> {
        let day = self.day.as_mut()?;
        if time_of_day + Self::JITTER_S < self.last {
            *day += 1;
        }
        self.last = time_of_day;
        Some(*day * 86_400 + time_of_day)
    }
}

/// A cache of the last date field read: consecutive lines share it.
#[derive(Debug, Clone, Default)]
pub struct DateCache {
    text: [u8; 10],
    days: Option<i64>,
}

impl DateCache {
    pub fn days(&mut self, s: &str) -> Option<i64> {
        if s.len() == 10 && self.days.is_some() && s.as_bytes() == self.text {
            return self.days;
        }
        let days = parse_date(s)?;
        if s.len() == 10 {
            self.text.copy_from_slice(s.as_bytes());
            self.days = Some(days);
        }
        Some(days)
    }
}

/// A line cut to at most `max` bytes on a character boundary (to quote it).
pub fn quote(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_as_jiff_reads_them() {
        for s in [
            "1970-01-01",
            "2000-02-29",
            "2026-12-07",
            "2099-12-31",
            "1999-03-01",
        ] {
            let want: jiff::civil::Date = s.parse().unwrap();
            let want = want
                .to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap()
                .timestamp()
                .as_second()
                / 86_400;
            assert_eq!(parse_date(s), Some(want), "{s}");
        }
        for bad in [
            "2026-13-01",
            "2026-02-29",
            "2026-1-01",
            "26-12-07",
            "2026/12/07",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_time("00:00:01"), Some(1));
        assert_eq!(parse_time("23:59:59"), Some(86_399));
        assert_eq!(parse_time("10:00:00.123"), Some(36_000));
        assert_eq!(parse_time("24:00:00"), None);
        assert_eq!(parse_time("1:00:00"), None);
    }

    proptest::proptest! {
        /// The word-at-a-time split is `split_whitespace` on spaces, at
        /// every length and position (a 64-byte block edge included).
        #[test]
        fn the_split_is_the_plain_split(line in "[a-c ]{0,200}") {
            let map: Vec<u8> = (0..8).collect();
            let mut out = [""; 8];
            let n = split_fields(&line, &map, &mut out);
            let plain: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
            proptest::prop_assert_eq!(n, plain.len());
            for (k, t) in plain.iter().take(8).enumerate() {
                proptest::prop_assert_eq!(out[k], *t);
            }
        }
    }

    #[test]
    fn runs_of_spaces_are_one_separator() {
        let mut out = [""; 3];
        let n = split_fields("a  b c ", &[0, SKIP, 2], &mut out);
        assert_eq!((n, out), (3, ["a", "", "c"]));
        let n = split_fields("a b c d", &[0, 1, 2], &mut out);
        assert_eq!((n, out), (4, ["a", "b", "c"]));
    }

    #[test]
    fn a_date_block_moves_to_the_next_day_when_the_time_goes_back() {
        let mut b = DateBlock::default();
        assert_eq!(b.date(10), None, "no #Date: not dated");
        b.set("2026-12-06 23:59:58");
        let day = parse_date("2026-12-06").unwrap() * 86_400;
        assert_eq!(b.date(86_399), Some(day + 86_399));
        // A line a few seconds out of order stays on its day...
        assert_eq!(b.date(86_390), Some(day + 86_390));
        // ...midnight passed is the next day.
        assert_eq!(b.date(5), Some(day + 86_400 + 5));
        assert_eq!(b.date(6), Some(day + 86_400 + 6));
    }
}
