//! A latency histogram of IIS `time-taken` values (whole milliseconds):
//! exact below 32 ms, then 32 bins per power of two, so a value read back
//! from its bin is within 1/32 (3.2 %) of what was logged. The agent keeps
//! it per second of a site's traffic; the Traffic call carries the merged
//! bins so the controller can pool several nodes and put a confidence
//! interval on a quantile.
use std::collections::BTreeMap;

const SUB_BINS: u64 = 32;

/// A value read back from its bin is within this share of the logged one.
pub const QUANTILE_ERROR: f64 = 1.0 / SUB_BINS as f64;

/// The bin of `ms`.
pub fn bin_of(ms: u64) -> u32 {
    if ms < SUB_BINS {
        return ms as u32;
    }
    let exp = 63 - u64::from(ms.leading_zeros()) - 5; // ms >> exp is in 32..64
    let mantissa = ms >> exp;
    (SUB_BINS + exp * SUB_BINS + (mantissa - SUB_BINS)) as u32
}

/// The middle of a bin, in ms.
pub fn value_of(bin: u32) -> f64 {
    let bin = u64::from(bin);
    if bin < SUB_BINS {
        return bin as f64;
    }
    let exp = ((bin - SUB_BINS) / SUB_BINS).min(57);
    let mantissa = SUB_BINS + (bin - SUB_BINS) % SUB_BINS;
    let low = (mantissa << exp) as f64;
    low + ((1u64 << exp) as f64 - 1.0) / 2.0
}

/// Bin → count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram(pub BTreeMap<u32, u64>);

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        *self.0.entry(bin_of(ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.0 {
            *self.0.entry(*b).or_default() += n;
        }
    }

    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// The value of the `rank`-th smallest sample (1-based, clamped).
    pub fn at_rank(&self, rank: u64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = rank.clamp(1, total);
        let mut seen = 0;
        self.0.iter().find_map(|(bin, n)| {
            seen += n;
            (seen >= rank).then(|| value_of(*bin))
        })
    }

    /// The `q` quantile (0..1): the ⌈q·n⌉-th smallest sample.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        self.at_rank((q * n as f64).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_hold_their_values_within_the_bound() {
        for ms in [
            0, 1, 31, 32, 33, 63, 64, 100, 812, 1000, 4276, 65_536, 3_600_000,
        ] {
            let v = value_of(bin_of(ms));
            let err = (v - ms as f64).abs() / (ms as f64).max(1.0);
            assert!(err <= QUANTILE_ERROR, "{ms} read as {v}");
        }
        // A bin from the wire that no value makes does not overflow.
        assert!(value_of(u32::MAX).is_finite());
    }

    #[test]
    fn quantiles_by_rank() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(value_of(bin_of(50))));
        assert_eq!(h.at_rank(0), Some(1.0));
        assert_eq!(h.at_rank(1_000), Some(value_of(bin_of(100))));
        assert_eq!(Histogram::default().quantile(0.95), None);
    }
}
