//! Lines a reader could not read, counted by reason and never in silence:
//! an operator must be able to tell "no 5xx" from "no readable lines".
use std::collections::BTreeMap;

/// Why a line was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// No usable `#Fields` before it (none yet, or one without `time`
    /// or the status).
    NoFields,
    /// More or fewer values than `#Fields` names.
    FieldCount,
    /// A `date` that is not `yyyy-mm-dd`.
    BadDate,
    /// No `date` field and no `#Date` directive to date it by.
    NoDate,
    /// A `time` that is not `hh:mm:ss`.
    BadTime,
    /// A status that is not a number.
    BadStatus,
    /// Longer than [`crate::lines::MAX_LINE`]: dropped unread.
    TooLong,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::NoFields,
        Reason::FieldCount,
        Reason::BadDate,
        Reason::NoDate,
        Reason::BadTime,
        Reason::BadStatus,
        Reason::TooLong,
    ];

    /// The reason's key in status JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoFields => "no_fields",
            Reason::FieldCount => "field_count",
            Reason::BadDate => "bad_date",
            Reason::NoDate => "no_date",
            Reason::BadTime => "bad_time",
            Reason::BadStatus => "bad_status",
            Reason::TooLong => "too_long",
        }
    }

    /// What it means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::NoFields => "no #Fields line with time and status before it",
            Reason::FieldCount => "not as many values as #Fields names",
            Reason::BadDate => "a date that is not yyyy-mm-dd",
            Reason::NoDate => "no date field and no #Date directive",
            Reason::BadTime => "a time that is not hh:mm:ss",
            Reason::BadStatus => "a status that is not a number",
            Reason::TooLong => "longer than 64 KiB",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The most of a line kept to quote.
pub const SAMPLE_BYTES: usize = 300;

/// Unreadable lines by reason, and the latest one to quote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Malformed {
    counts: [u64; 7],
    /// The latest unreadable line (cut to [`SAMPLE_BYTES`]) and why.
    pub sample: Option<(Reason, String)>,
}

impl Malformed {
    pub fn add(&mut self, reason: Reason, line: &str) {
        self.counts[reason.index()] += 1;
        let quoted = crate::fields::quote(line, SAMPLE_BYTES);
        self.sample = Some((reason, quoted));
    }

    /// Lines dropped before a reader saw them (too long).
    pub fn add_unseen(&mut self, reason: Reason, count: u64) {
        self.counts[reason.index()] += count;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.index()]
    }

    /// The reasons that occurred, by key.
    pub fn by_reason(&self) -> BTreeMap<&'static str, u64> {
        Reason::ALL
            .iter()
            .filter(|r| self.count(**r) > 0)
            .map(|r| (r.as_str(), self.count(*r)))
            .collect()
    }

    /// [`Self::by_reason`] with owned names, into any map (a report's,
    /// a message's).
    pub fn reasons<C: FromIterator<(String, u64)>>(&self) -> C {
        self.by_reason()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    pub fn merge(&mut self, other: &Malformed) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        if other.sample.is_some() {
            self.sample.clone_from(&other.sample);
        }
    }

    /// What was added since `earlier` (a copy of these counts).
    pub fn since(&self, earlier: &Malformed) -> Malformed {
        let mut d = Malformed::default();
        for i in 0..d.counts.len() {
            d.counts[i] = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        if d.total() > 0 {
            d.sample.clone_from(&self.sample);
        }
        d
    }
}
