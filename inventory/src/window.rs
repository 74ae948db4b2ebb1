//! Maintenance windows: `02:00-05:00` in a time zone (`02:00-05:00
//! Europe/Berlin`; the controller's own zone when none is named). A window
//! may cross midnight.
use std::time::Duration;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;

farm_proto::message_error! {
    /// Why a maintenance window does not parse.
    WindowError
}

#[derive(Debug, Clone)]
pub struct Window {
    start: Time,
    end: Time,
    tz: TimeZone,
    text: String,
}

/// Two windows are the same when they were written the same.
impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Window {}

/// As written (`02:00-05:00 Europe/Berlin`): how a run's journal keeps it.
impl serde::Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Window::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    /// `HH:MM-HH:MM` with an optional IANA time zone after a space. A
    /// window may cross midnight (`22:00-02:00`).
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        let text = text.trim();
        let (range, zone) = match text.split_once(char::is_whitespace) {
            Some((r, z)) => (r, Some(z.trim())),
            None => (text, None),
        };
        let (a, b) = range.split_once('-').ok_or_else(|| {
            WindowError(format!(
                "`{text}` is not a window like `02:00-05:00` or `02:00-05:00 Europe/Berlin`"
            ))
        })?;
        let time = |s: &str| -> Result<Time, WindowError> {
            let (h, m) = s
                .trim()
                .split_once(':')
                .ok_or_else(|| WindowError(format!("`{s}` is not a time like `02:00`")))?;
            let h: i8 = h
                .parse()
                .map_err(|_| WindowError(format!("`{s}` is not a time like `02:00`")))?;
            let m: i8 = m
                .parse()
                .map_err(|_| WindowError(format!("`{s}` is not a time like `02:00`")))?;
            Time::new(h, m, 0, 0).map_err(|e| WindowError(format!("`{s}`: {e}")))
        };
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(WindowError(format!(
                "`{text}`: the window starts when it ends"
            )));
        }
        let tz = match zone {
            Some(z) => TimeZone::get(z)
                .map_err(|e| WindowError(format!("unknown time zone `{z}`: {e}")))?,
            None => TimeZone::system(),
        };
        Ok(Window {
            start,
            end,
            tz,
            text: text.to_string(),
        })
    }

    /// How long the window stays open at `now`; `None` when it is closed.
    pub fn remaining(&self, now: Timestamp) -> Option<Duration> {
        let z = now.to_zoned(self.tz.clone());
        let (t, today) = (z.time(), z.date());
        let end_date = if self.start < self.end {
            if t < self.start || t >= self.end {
                return None;
            }
            today
        } else if t >= self.start {
            today.tomorrow().ok()? // 22:00-02:00, now 23:00: ends tomorrow
        } else if t < self.end {
            today
        } else {
            return None;
        };
        let end = end_date
            .to_datetime(self.end)
            .to_zoned(self.tz.clone())
            .ok()?;
        Duration::try_from(end.timestamp().duration_since(now)).ok()
    }

    /// How long until the window opens; zero while it is open.
    pub fn opens_in(&self, now: Timestamp) -> Duration {
        if self.remaining(now).is_some() {
            return Duration::ZERO;
        }
        let z = now.to_zoned(self.tz.clone());
        let date = if z.time() < self.start {
            z.date()
        } else {
            z.date().tomorrow().unwrap_or(z.date())
        };
        date.to_datetime(self.start)
            .to_zoned(self.tz.clone())
            .ok()
            .and_then(|start| Duration::try_from(start.timestamp().duration_since(now)).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// The local time of `now` in the window's zone, for messages.
    pub fn local(&self, now: Timestamp) -> String {
        now.to_zoned(self.tz.clone())
            .strftime("%H:%M %Z")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn opens_in_counts_to_the_next_start() {
        let w = Window::parse("02:00-05:00 UTC").unwrap();
        assert_eq!(
            w.opens_in(at("2026-11-21T01:30:00Z")),
            Duration::from_secs(1800)
        );
        assert_eq!(w.opens_in(at("2026-11-21T03:00:00Z")), Duration::ZERO);
        assert_eq!(
            w.opens_in(at("2026-11-21T06:00:00Z")),
            Duration::from_secs(20 * 3600)
        );
        let night = Window::parse("22:00-02:00 UTC").unwrap();
        assert_eq!(
            night.opens_in(at("2026-11-21T21:00:00Z")),
            Duration::from_secs(3600)
        );
        assert_eq!(night.opens_in(at("2026-11-21T23:00:00Z")), Duration::ZERO);
        assert_eq!(
            night.opens_in(at("2026-11-21T03:00:00Z")),
            Duration::from_secs(19 * 3600)
        );
    }

    #[test]
    fn a_window_within_a_day() {
        let w = Window::parse("02:00-05:00 UTC").unwrap();
        assert_eq!(w.remaining(at("2026-11-21T01:59:59Z")), None);
        assert_eq!(
            w.remaining(at("2026-11-21T02:00:00Z")),
            Some(Duration::from_secs(3 * 3600))
        );
        assert_eq!(
            w.remaining(at("2026-11-21T04:30:00Z")),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(w.remaining(at("2026-11-21T05:00:00Z")), None);
    }

    #[test]
    fn a_window_across_midnight() {
        let w = Window::parse("22:00-02:00 UTC").unwrap();
        assert_eq!(
            w.remaining(at("2026-11-21T23:00:00Z")),
            Some(Duration::from_secs(3 * 3600))
        );
        assert_eq!(
            w.remaining(at("2026-11-22T01:00:00Z")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(w.remaining(at("2026-11-21T12:00:00Z")), None);
    }

    #[test]
    fn time_zones_are_honoured() {
        // 02:00-05:00 in Berlin (UTC+1 in November) is 01:00-04:00 UTC.
        let w = Window::parse("02:00-05:00 Europe/Berlin").unwrap();
        assert_eq!(w.remaining(at("2026-11-21T00:30:00Z")), None);
        assert_eq!(
            w.remaining(at("2026-11-21T03:00:00Z")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(w.local(at("2026-11-21T03:00:00Z")), "04:00 CET");
    }

    #[test]
    fn bad_windows_are_named() {
        for bad in [
            "",
            "2-5",
            "02:00",
            "25:00-03:00",
            "02:00-02:00",
            "02:00-05:00 Mars/Olympus",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?}");
        }
    }
}
