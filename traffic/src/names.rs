//! Which log file is which. IIS names a W3C log by its rollover period
//! (`u_exYYMMDDHH.log` hourly, `u_exYYMMDD.log` daily, `u_exYYMMWW.log`
//! weekly, `u_exYYMM.log` monthly, `u_extendN.log` by size; `ex...`
//! without `logInUTF8`, `..._x.log` with custom fields) and the HTTP.sys
//! error log `httperrN.log`. A folder can hold files of several periods
//! (the setting was changed; a leftover), so a name is never read as one
//! bare integer: its digits are a time of its own shape, or a sequence
//! number, and files of different shapes are compared by when they were
//! written.

/// The two kinds of log folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `W3SVC<id>`: the W3C access log.
    W3c,
    /// `HTTPERR`: the HTTP.sys error log.
    HttpErr,
}

/// IIS's `logFile/@period` (the site's rollover setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    MaxSize,
    Daily,
    Weekly,
    Monthly,
    Hourly,
}

impl Period {
    /// As appcmd prints it (`Daily`) or by its number (`1`).
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "maxsize" | "0" => Period::MaxSize,
            "daily" | "1" => Period::Daily,
            "weekly" | "2" => Period::Weekly,
            "monthly" | "3" => Period::Monthly,
            "hourly" | "4" => Period::Hourly,
            _ => return None,
        })
    }
}

/// The shape of a file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// `YYMMDDHH`.
    Hourly,
    /// Six digits: `YYMMDD` daily, or `YYMMWW` weekly (week of the month).
    SixDigits,
    /// `YYMM`.
    Monthly,
    /// `extendN`, `httperrN`: a sequence number.
    Sized,
}

impl Shape {
    /// Whether a site with `period` writes files of this shape.
    pub fn fits(self, period: Period) -> bool {
        matches!(
            (self, period),
            (Shape::Hourly, Period::Hourly)
                | (Shape::SixDigits, Period::Daily | Period::Weekly)
                | (Shape::Monthly, Period::Monthly)
                | (Shape::Sized, Period::MaxSize)
        )
    }
}

/// A log file's name, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogName {
    pub shape: Shape,
    /// Dated shapes: the hour the period starts (hours since 1970, UTC or
    /// local as `localTimeRollover` says); sized: the sequence number.
    pub key: i64,
}

impl LogName {
    /// Orders files of one shape (newest last). Files of different
    /// shapes do not compare by name: by when they were written.
    pub fn order(&self) -> (Shape, i64) {
        (self.shape, self.key)
    }
}

fn digits(s: &str) -> Option<Vec<i64>> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.bytes().map(|b| i64::from(b - b'0')).collect())
}

/// Reads a file name of `family`; `None` for a file that is not one of
/// its logs. `period` resolves `YYMMWW` from `YYMMDD` when known (daily
/// otherwise).
pub fn parse(family: Family, name: &str, period: Option<Period>) -> Option<LogName> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".log")?;
    let stem = stem.strip_suffix("_x").unwrap_or(stem);
    match family {
        Family::HttpErr => {
            let n = stem.strip_prefix("httperr")?;
            digits(n)?;
            Some(LogName {
                shape: Shape::Sized,
                key: n.parse().ok()?,
            })
        }
        Family::W3c => {
            let rest = stem
                .strip_prefix("u_ex")
                .or_else(|| stem.strip_prefix("ex"))?;
            if let Some(n) = rest.strip_prefix("tend") {
                digits(n)?;
                return Some(LogName {
                    shape: Shape::Sized,
                    key: n.parse().ok()?,
                });
            }
            let d = digits(rest)?;
            let two = |i: usize| d[i] * 10 + d[i + 1];
            let month_start = |yy: i64, mm: i64| {
                (1..=12)
                    .contains(&mm)
                    .then(|| crate::fields::days_from_civil(2000 + yy, mm, 1))
            };
            let (shape, hours) = match d.len() {
                8 => {
                    let day = month_start(two(0), two(2))? + two(4) - 1;
                    (Shape::Hourly, day * 24 + two(6))
                }
                6 if period == Some(Period::Weekly) => {
                    let day = month_start(two(0), two(2))? + (two(4) - 1) * 7;
                    (Shape::SixDigits, day * 24)
                }
                6 => {
                    let day = month_start(two(0), two(2))? + two(4) - 1;
                    (Shape::SixDigits, day * 24)
                }
                4 => (Shape::Monthly, month_start(two(0), two(2))? * 24),
                _ => return None,
            };
            Some(LogName { shape, key: hours })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_iis_writes() {
        let w = |n: &str| parse(Family::W3c, n, None);
        assert_eq!(w("u_ex26120710.log").unwrap().shape, Shape::Hourly);
        assert_eq!(w("u_ex261207.log").unwrap().shape, Shape::SixDigits);
        assert_eq!(w("ex261207.log").unwrap().shape, Shape::SixDigits);
        assert_eq!(w("u_ex261207_x.log").unwrap().shape, Shape::SixDigits);
        assert_eq!(w("U_EX2612.LOG").unwrap().shape, Shape::Monthly);
        assert_eq!(
            w("u_extend10.log").unwrap(),
            LogName {
                shape: Shape::Sized,
                key: 10
            }
        );
        for not in [
            "u_ex.log",
            "u_ex2612071.log",
            "u_ex261207.txt",
            "u_in261207.log",
            "u_extendx.log",
            "u_ex261307.log",
        ] {
            assert_eq!(w(not), None, "{not}");
        }
        assert_eq!(
            parse(Family::HttpErr, "httperr12.log", None).unwrap().key,
            12
        );
        assert_eq!(parse(Family::HttpErr, "u_ex261207.log", None), None);
    }

    #[test]
    fn names_order_by_their_own_shape_never_as_one_integer() {
        let w = |n: &str| parse(Family::W3c, n, None).unwrap();
        // A leftover hourly file of November is older than today's daily
        // one, though 26113015 > 261207 as integers.
        let hourly = w("u_ex26113015.log");
        let daily = w("u_ex261207.log");
        assert!(hourly.key < daily.key);
        // Size-rolled: 10 after 2 (not as text).
        assert!(w("u_extend2.log").order() < w("u_extend10.log").order());
        // The setting says weekly: 261202 is the second week of December.
        let weekly = parse(Family::W3c, "u_ex261202.log", Some(Period::Weekly)).unwrap();
        assert!(weekly.key > w("u_ex261205.log").key);
        assert!(Shape::SixDigits.fits(Period::Weekly) && !Shape::Hourly.fits(Period::Daily));
        assert_eq!(Period::parse("MaxSize"), Some(Period::MaxSize));
        assert_eq!(Period::parse("4"), Some(Period::Hourly));
    }
}
