//! Agent timers: `@every <duration>` and cron expressions, and when they next fire.
//!
//! `@every 10s` ticks at the multiples of 10 s since the Unix epoch, so a tick has
//! the same time on every node (jitter, per node and agent, moves the run, not the
//! tick). Cron has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds
//! first), each `*`, `?`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a
//! list of those; months and weekdays also by name (`JAN`, `MON`); weekday 0 and 7 are
//! Sunday. As in Vixie cron, when both day fields are restricted a day matching
//! either one fires. `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and
//! `@yearly` (`@annually`) are shorthands. Cron is evaluated in UTC unless the spec
//! names an IANA time zone; in a DST gap a missing time runs at the first time after
//! it, in an overlap at the earlier one.
//!
//! # Examples
//! ```
//! use edgeleaf::schedule::Schedule;
//! let s = Schedule::parse(&["@every 10s".into(), "0 9 * * MON-FRI".into()], None).unwrap();
//! let t: jiff::Timestamp = "2026-12-07T08:59:55Z".parse().unwrap(); // a Monday
//! assert_eq!(s.next_after(t).unwrap().to_string(), "2026-12-07T09:00:00Z");
//! assert!(Schedule::parse(&["@every 50ms".into()], None).is_err());
//! assert!(Schedule::parse(&["61 * * * *".into()], None).is_err());
//! ```

use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Shortest `@every` interval.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// Days searched for the next cron match (covers Feb 29 schedules).
const SEARCH_DAYS: i64 = 366 * 8 + 2;

/// One agent's timer entries.
#[derive(Debug, Clone)]
pub struct Schedule {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
enum Entry {
    Every(Duration),
    Cron(Box<Cron>),
}

/// A parsed cron expression: for each field, which values match.
#[derive(Debug, Clone)]
struct Cron {
    seconds: Vec<i8>,
    minutes: Vec<i8>,
    hours: Vec<i8>,
    days: [bool; 32],
    months: [bool; 13],
    weekdays: [bool; 7],
    /// Whether the day-of-month / day-of-week field was restricted (not `*`).
    days_restricted: bool,
    weekdays_restricted: bool,
    tz: TimeZone,
}

impl Schedule {
    /// Parses the entries of a spec's `schedule`, with its `timezone` (IANA name;
    /// default UTC). An error names the entry and what is wrong with it.
    pub fn parse(entries: &[String], timezone: Option<&str>) -> Result<Self, String> {
        let tz = match timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name)
                .map_err(|e| format!("timezone {name:?} is not a known IANA time zone: {e}"))?,
        };
        if entries.is_empty() {
            return Err("schedule is empty".into());
        }
        let entries = entries
            .iter()
            .map(|e| parse_entry(e, &tz).map_err(|why| format!("schedule entry {e:?}: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// The first tick strictly after `t`, of any entry.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.entries.iter().filter_map(|e| e.next_after(t)).min()
    }

    /// The last tick in `(after, until]`, if any: the one run owed for ticks missed
    /// while the node was down.
    pub fn last_between(&self, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
        self.entries
            .iter()
            .filter_map(|e| e.last_between(after, until))
            .max()
    }

    /// Time from one tick to the next, around `t` (what a percentage jitter is of).
    pub fn period_near(&self, t: Timestamp) -> Duration {
        let Some(a) = self.next_after(t) else {
            return Duration::ZERO;
        };
        let Some(b) = self.next_after(a) else {
            return Duration::ZERO;
        };
        Duration::try_from(b.duration_since(a)).unwrap_or_default()
    }
}

impl Entry {
    fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Entry::Every(d) => {
                let step = d.as_millis() as i64;
                let now = t.as_millisecond();
                let next = now.div_euclid(step).checked_add(1)?.checked_mul(step)?;
                Timestamp::from_millisecond(next).ok()
            }
            Entry::Cron(c) => c.next_after(t),
        }
    }

    fn last_between(&self, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
        match self {
            Entry::Every(d) => {
                let step = d.as_millis() as i64;
                let last = until.as_millisecond().div_euclid(step).checked_mul(step)?;
                let last = Timestamp::from_millisecond(last).ok()?;
                (last > after).then_some(last)
            }
            Entry::Cron(c) => {
                // Walk forward; a schedule missed for long steps many times, so
                // bound the walk and settle for the latest tick found.
                let mut found = None;
                let mut t = after;
                for _ in 0..10_000 {
                    match c.next_after(t) {
                        Some(next) if next <= until => {
                            found = Some(next);
                            t = next;
                        }
                        _ => break,
                    }
                }
                found
            }
        }
    }
}

impl Cron {
    fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start = t.to_zoned(self.tz.clone());
        let first_day = start.date();
        let (sh, sm, ss) = (start.hour(), start.minute(), start.second());
        for offset in 0..SEARCH_DAYS {
            let date = first_day.checked_add(offset.days()).ok()?;
            if !self.day_matches(date) {
                continue;
            }
            let today = offset == 0;
            for &h in &self.hours {
                if today && h < sh {
                    continue;
                }
                for &m in &self.minutes {
                    if today && h == sh && m < sm {
                        continue;
                    }
                    for &s in &self.seconds {
                        if today && h == sh && m == sm && s < ss {
                            continue;
                        }
                        let at = date.at(h, m, s, 0).to_zoned(self.tz.clone()).ok()?;
                        if at.timestamp() > t {
                            return Some(at.timestamp());
                        }
                    }
                }
            }
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        if !self.months[date.month() as usize] {
            return false;
        }
        let dom = self.days[date.day() as usize];
        let dow = self.weekdays[date.weekday().to_sunday_zero_offset() as usize];
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }
}

fn parse_entry(entry: &str, tz: &TimeZone) -> Result<Entry, String> {
    let entry = entry.trim();
    if let Some(rest) = entry.strip_prefix("@every") {
        let d = humantime::parse_duration(rest.trim())
            .map_err(|e| format!("not a duration ({e}); e.g. \"@every 10s\""))?;
        if d < MIN_EVERY {
            return Err(format!(
                "the interval is below the minimum of {MIN_EVERY:?}"
            ));
        }
        return Ok(Entry::Every(d));
    }
    let expr = match entry {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other if other.starts_with('@') => {
            return Err("unknown shorthand (use @every <duration>, @hourly, @daily, @weekly, @monthly or @yearly)".into());
        }
        other => other,
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let (sec, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        n => {
            return Err(format!(
                "{n} fields; cron needs 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
    };
    let seconds = field(sec, "second", 0, 59, &[])?;
    let minutes = field(rest[0], "minute", 0, 59, &[])?;
    let hours = field(rest[1], "hour", 0, 23, &[])?;
    let days = field(rest[2], "day of month", 1, 31, &[])?;
    let months = field(rest[3], "month", 1, 12, &MONTHS)?;
    let weekdays = field(rest[4], "day of week", 0, 7, &WEEKDAYS)?;
    let mut cron = Cron {
        seconds: values(&seconds),
        minutes: values(&minutes),
        hours: values(&hours),
        days: [false; 32],
        months: [false; 13],
        weekdays: [false; 7],
        days_restricted: !is_any(rest[2]),
        weekdays_restricted: !is_any(rest[4]),
        tz: tz.clone(),
    };
    for (i, on) in days.iter().enumerate() {
        cron.days[i] = *on;
    }
    for (i, on) in months.iter().enumerate() {
        cron.months[i] = *on;
    }
    for (i, on) in weekdays.iter().enumerate() {
        if *on {
            cron.weekdays[i % 7] = true;
        }
    }
    Ok(Entry::Cron(Box::new(cron)))
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn is_any(f: &str) -> bool {
    f == "*" || f == "?"
}

fn values(on: &[bool]) -> Vec<i8> {
    (0..on.len()).filter(|&i| on[i]).map(|i| i as i8).collect()
}

/// Which values in `0..=max` a cron field matches (indices below `min` stay false).
/// `names` are the values from `min` upwards by name.
fn field(text: &str, what: &str, min: u8, max: u8, names: &[&str]) -> Result<Vec<bool>, String> {
    let mut on = vec![false; max as usize + 1];
    let value = |s: &str| -> Result<u8, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(min + i as u8);
        }
        match s.parse::<u8>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!("{what} {s:?} is not a value from {min} to {max}")),
        }
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => match s.parse::<u8>() {
                Ok(n) if n > 0 => (r, n),
                _ => return Err(format!("{what}: step {s:?} is not a number above 0")),
            },
            None => (part, 1),
        };
        let (lo, hi) = if is_any(range) {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `a/n` runs from a to the end; a lone value is just itself.
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(format!("{what}: range {range:?} runs backwards"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            on[v as usize] = true;
        }
    }
    Ok(on)
}

/// A spec's `jitter`: a duration (`30s`) or a share of the period (`10%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    Fixed(Duration),
    Share(f64),
}

impl Jitter {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(pct) = text.strip_suffix('%') {
            return match pct.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Jitter::Share(p / 100.0)),
                _ => Err(format!("jitter {text:?}: a percentage from 0% to 100%")),
            };
        }
        humantime::parse_duration(text)
            .map(Jitter::Fixed)
            .map_err(|e| format!("jitter {text:?}: neither a duration nor a percentage ({e})"))
    }

    /// How far this node's runs are moved after their tick: the same fraction of
    /// the jitter each time (from `seed`, e.g. node and agent), so each node keeps
    /// a steady rhythm while a fleet's runs spread out. Always less than `period`.
    pub fn offset(&self, seed: &str, period: Duration) -> Duration {
        // Never as far as the next tick.
        let max = match *self {
            Jitter::Fixed(d) => d.min(period.mul_f64(0.99)),
            Jitter::Share(p) => period.mul_f64(p.min(0.99)),
        };
        let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        max.mul_f64((hash % 10_000) as f64 / 10_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(entries: &[&str], tz: Option<&str>, after: &str) -> String {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        Schedule::parse(&entries, tz)
            .unwrap()
            .next_after(ts(after))
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_ticks_on_multiples_of_its_interval() {
        assert_eq!(
            next(&["@every 10s"], None, "2026-01-01T00:00:03Z"),
            "2026-01-01T00:00:10Z"
        );
        assert_eq!(
            next(&["@every 10s"], None, "2026-01-01T00:00:10Z"),
            "2026-01-01T00:00:20Z"
        );
        assert_eq!(
            next(&["@every 250ms"], None, "2026-01-01T00:00:00.1Z"),
            "2026-01-01T00:00:00.25Z"
        );
    }

    #[test]
    fn cron_fields_ranges_steps_names_and_day_rules() {
        // Every 15 minutes in office hours on weekdays.
        assert_eq!(
            next(&["*/15 9-17 * * MON-FRI"], None, "2026-12-04T17:50:00Z"), // Friday
            "2026-12-07T09:00:00Z"
        );
        // Six fields: seconds.
        assert_eq!(
            next(&["*/20 * * * * *"], None, "2026-01-01T00:00:41Z"),
            "2026-01-01T00:01:00Z"
        );
        // Both day fields restricted: either matches (the 13th, or a Friday).
        assert_eq!(
            next(&["0 0 13 * FRI"], None, "2026-12-01T00:00:00Z"),
            "2026-12-04T00:00:00Z"
        );
        assert_eq!(
            next(&["0 0 29 FEB *"], None, "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next(&["@daily", "30 6 * * *"], None, "2026-05-05T01:00:00Z"),
            "2026-05-05T06:30:00Z"
        );
        assert_eq!(
            next(&["0 0 * * 7"], None, "2026-12-02T00:00:00Z"), // 7 is Sunday
            "2026-12-06T00:00:00Z"
        );
    }

    #[test]
    fn cron_in_a_time_zone_and_across_dst() {
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer.
        assert_eq!(
            next(
                &["0 9 * * *"],
                Some("Europe/Berlin"),
                "2026-12-02T10:00:00Z"
            ),
            "2026-12-03T08:00:00Z"
        );
        assert_eq!(
            next(
                &["0 9 * * *"],
                Some("Europe/Berlin"),
                "2026-07-02T10:00:00Z"
            ),
            "2026-07-03T07:00:00Z"
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: it runs at 03:30 CEST.
        assert_eq!(
            next(
                &["30 2 * * *"],
                Some("Europe/Berlin"),
                "2026-03-28T12:00:00Z"
            ),
            "2026-03-29T01:30:00Z"
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (entry, needle) in [
            ("@every 10ms", "minimum"),
            ("@every soon", "duration"),
            ("* * * *", "4 fields"),
            ("60 * * * *", "minute \"60\""),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * FOO *", "month"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("@often", "shorthand"),
        ] {
            let e = Schedule::parse(&[entry.into()], None).unwrap_err();
            assert!(e.contains(entry) && e.contains(needle), "{entry}: {e}");
        }
        let e = Schedule::parse(&["@hourly".into()], Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn missed_ticks_owe_one_run_the_latest() {
        let s = Schedule::parse(&["@every 1m".into(), "0 * * * *".into()], None).unwrap();
        let last = s.last_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-03T10:30:30Z"));
        assert_eq!(last.unwrap().to_string(), "2026-01-03T10:30:00Z");
        assert!(
            s.last_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:00:59Z"))
                .is_none()
        );
    }

    #[test]
    fn jitter_is_steady_per_seed_and_within_bounds() {
        let j = Jitter::parse("10%").unwrap();
        let period = Duration::from_secs(60);
        let a = j.offset("n1.agent", period);
        assert_eq!(a, j.offset("n1.agent", period));
        assert!(a <= Duration::from_secs(6));
        assert_eq!(
            Jitter::parse("30s").unwrap(),
            Jitter::Fixed(Duration::from_secs(30))
        );
        assert!(Jitter::parse("150%").is_err());
        assert!(Jitter::parse("lots").is_err());
    }
}
