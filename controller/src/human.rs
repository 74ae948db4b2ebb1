//! Durations as an operator reads them: `19.4s`, `2m 5s`, `350ms`.
use std::time::Duration;

/// Rounded to what matters at that size: milliseconds under a second,
/// tenths of a second under a minute, whole seconds above.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        let (whole, frac) = (tenths / 10, tenths % 10);
        return match frac {
            0 => format!("{whole}s"),
            f => format!("{whole}.{f}s"),
        };
    }
    let s = (ms + 500) / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h {m}m"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_to_the_size() {
        let f = |ms| duration(Duration::from_millis(ms));
        assert_eq!(f(350), "350ms");
        assert_eq!(f(5000), "5s");
        assert_eq!(f(19_401), "19.4s");
        assert_eq!(f(6_226), "6.2s");
        assert_eq!(f(59_990), "60s");
        assert_eq!(f(125_000), "2m 5s");
        assert_eq!(f(120_000), "2m");
        assert_eq!(f(3_600_000), "1h");
        assert_eq!(f(3_725_000), "1h 2m 5s");
    }
}
