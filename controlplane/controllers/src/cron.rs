//! Cron schedules as upstream's CronJob reads them (robfig/cron's standard parser): five fields (minute,
//! hour, day of month, month, day of week) with `*`, `?`, lists, ranges, steps and month and weekday names,
//! or one of the macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
//! When both day fields are restricted a day matches either, as in Vixie cron.
//!
//! Times are found in the schedule's time zone (`spec.timeZone`, from the system's zoneinfo), field by
//! field rather than minute by minute, so that a yearly schedule costs a handful of steps.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// A parsed schedule: for each field, the values it allows (bit `i` for value `i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Both day fields restricted: a day matches if either does.
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn bits(lo: u32, hi: u32, step: u32) -> u64 {
    (lo..=hi).step_by(step as usize).fold(0, |b, i| b | 1 << i)
}

/// One field: `spec` within `[lo, hi]`, names allowed when given (index + `lo`).
fn field(
    spec: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    what: &str,
) -> Result<(u64, bool), ParseError> {
    let err = |m: String| ParseError(format!("{what} field {spec:?}: {m}"));
    let value = |s: &str| -> Result<u32, ParseError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + lo);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| err(format!("{s:?} is not a number")))?;
        if v < lo || v > hi {
            return Err(err(format!("{v} is outside {lo}-{hi}")));
        }
        Ok(v)
    };
    let mut out = 0;
    let mut star = false;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| err(format!("step {s:?} is not a number")))?;
                if s == 0 {
                    return Err(err("a step of 0".into()));
                }
                (r, Some(s))
            }
            None => (part, None),
        };
        let (a, b) = match range {
            "*" | "?" => {
                star |= step.is_none();
                (lo, hi)
            }
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/10` means from 5 to the end, every 10.
                None if step.is_some() => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(err(format!("range {a}-{b} is backwards")));
        }
        out |= bits(a, b, step.unwrap_or(1));
    }
    Ok((out, star))
}

impl std::str::FromStr for Schedule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Schedule, ParseError> {
        let s = s.trim();
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            m if m.starts_with('@') => return Err(ParseError(format!("unknown macro {m:?}"))),
            other => other,
        };
        if expanded.starts_with("TZ=") || expanded.starts_with("CRON_TZ=") {
            return Err(ParseError(
                "a time zone in the schedule is not supported: use spec.timeZone".into(),
            ));
        }
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = f.as_slice() else {
            return Err(ParseError(format!(
                "expected exactly 5 fields, found {}: {s:?}",
                f.len()
            )));
        };
        let (minutes, _) = field(minute, 0, 59, &[], "minute")?;
        let (hours, _) = field(hour, 0, 23, &[], "hour")?;
        let (days, dom_star) = field(dom, 1, 31, &[], "day of month")?;
        let (months, _) = field(month, 1, 12, &MONTHS, "month")?;
        let (mut weekdays, dow_star) = field(dow, 0, 7, &WEEKDAYS, "day of week")?;
        // 7 is Sunday too.
        if weekdays & 1 << 7 != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays: weekdays & 0x7f,
            either_day: !dom_star && !dow_star,
        })
    }
}

impl Schedule {
    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & 1 << d.day() != 0;
        let dow = self.weekdays & 1 << d.weekday().to_sunday_zero_offset() != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first time strictly after `after` that the schedule names, in `tz`; `None` if there is none
    /// within five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut t = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year() + 5;
        while t.year() <= limit {
            if self.months & 1 << t.month() == 0 {
                t = DateTime::from(t.date().first_of_month().checked_add(1.month()).ok()?);
                continue;
            }
            if !self.day_matches(t.date()) {
                t = DateTime::from(t.date().checked_add(1.day()).ok()?);
                continue;
            }
            if self.hours & 1 << t.hour() == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & 1 << t.minute() == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            // A time in a DST gap moves forward, as robfig/cron's does.
            let ts = t.to_zoned(tz.clone()).ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let s: Schedule = schedule.parse().unwrap();
        s.next_after(at(after), &TimeZone::UTC).unwrap().to_string()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        assert_eq!(
            next("* * * * *", "2026-12-07T12:00:30Z"),
            "2026-12-07T12:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-07T12:01:00Z"),
            "2026-12-07T12:15:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-12-07T12:26:00Z"),
            "2026-12-07T12:45:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-12-07T13:00:00Z"),
            "2026-12-07T17:00:00Z"
        );
        assert_eq!(
            next("30 2 * * mon,FRI", "2026-12-07T12:00:00Z"),
            "2026-12-11T02:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-12-07T12:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-12-07T12:00:00Z"),
            "2026-12-07T13:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-12-07T12:00:00Z"),
            "2026-12-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-12-07T12:00:00Z"),
            "2026-12-13T00:00:00Z"
        );
        // Both days restricted: either matches (the 13th is a Sunday, the 10th a Thursday).
        assert_eq!(
            next("0 0 10 * 0", "2026-12-07T12:00:00Z"),
            "2026-12-10T00:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-12-07T12:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert!("0 0 30 2 *"
            .parse::<Schedule>()
            .unwrap()
            .next_after(at("2026-12-07T12:00:00Z"), &TimeZone::UTC)
            .is_none());
    }

    #[test]
    fn time_zones_are_the_zones_rules() {
        let berlin = TimeZone::get("Europe/Berlin").expect("zoneinfo (Debian's tzdata)");
        let s: Schedule = "0 9 * * *".parse().unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
        let t = s.next_after(at("2026-12-07T12:00:00Z"), &berlin).unwrap();
        assert_eq!(t.to_string(), "2026-12-08T08:00:00Z");
        let t = s.next_after(at("2026-07-07T12:00:00Z"), &berlin).unwrap();
        assert_eq!(t.to_string(), "2026-07-08T07:00:00Z");
        // 02:30 on the spring-forward day does not exist: it runs at 03:30.
        let s: Schedule = "30 2 * * *".parse().unwrap();
        let t = s.next_after(at("2026-03-28T12:00:00Z"), &berlin).unwrap();
        assert_eq!(t.to_string(), "2026-03-29T01:30:00Z");
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: &str| s.parse::<Schedule>().unwrap_err().to_string();
        assert_eq!(e("61 * * * *"), "minute field \"61\": 61 is outside 0-59");
        assert_eq!(
            e("* * * *"),
            "expected exactly 5 fields, found 4: \"* * * *\""
        );
        assert_eq!(
            e("* * * foo *"),
            "month field \"foo\": \"foo\" is not a number"
        );
        assert_eq!(e("*/0 * * * *"), "minute field \"*/0\": a step of 0");
        assert!(e("TZ=UTC * * * * *").contains("spec.timeZone"));
        assert!(e("@every 5m").contains("unknown macro"));
    }
}
