//! Usage-limit messages of a subscription plan, as agents print them: when
//! the limit resets. `Claude AI usage limit reached|<epoch>` carries the
//! instant; `You've hit your limit · resets 1pm (Europe/Lisbon)` and
//! `Limit reached · resets Dec 9, 11:30am (Asia/Calcutta) · ...` carry a
//! local time in a named zone, which means the next such time after now.
//! The zone rules come from jiff's bundled database, so a worker needs no
//! system tzdata and every host reads a message the same way.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Longest text taken for a limit message: a longer one is an answer that
/// happens to talk about limits.
const MAX_LIMIT_MESSAGE: usize = 2048;

/// Epoch numbers past this are milliseconds, below it seconds (it is
/// 5138 AD in seconds and 1973 in milliseconds).
const EPOCH_MS_THRESHOLD: u64 = 100_000_000_000;

/// An epoch number in seconds or milliseconds, as milliseconds.
pub fn epoch_to_ms(epoch: u64) -> u64 {
    if epoch >= EPOCH_MS_THRESHOLD {
        epoch
    } else {
        epoch.saturating_mul(1000)
    }
}

/// Whether `text` is a plan's usage-limit message: `Some` with when it
/// resets (ms since the epoch) if the text says and it can be read, `None`
/// when the text is not such a message.
pub fn plan_limit(text: &str, now_ms: u64) -> Option<Option<u64>> {
    let text = text.trim();
    if text.len() > MAX_LIMIT_MESSAGE {
        return None;
    }
    if let Some(at) = text.find("usage limit reached|") {
        let digits: String = text[at + "usage limit reached|".len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        return Some(digits.parse::<u64>().ok().map(epoch_to_ms));
    }
    let lower = text.to_ascii_lowercase();
    let says_limit = ["limit reached", "hit your", "out of usage"]
        .iter()
        .any(|phrase| lower.contains(phrase));
    if !says_limit {
        return None;
    }
    // ASCII lowercasing keeps byte offsets, so `at` indexes `text` too.
    let resets = lower
        .find("resets ")
        .and_then(|at| next_reset(&text[at + "resets ".len()..], now_ms));
    Some(resets)
}

/// `1pm (Europe/Lisbon)`, `11:30am (Asia/Calcutta) · ...`, `Dec 9, 1pm
/// (Zone)` or `Dec 9, 2027, 1:30pm (Zone)`: the instant meant, in ms.
fn next_reset(text: &str, now_ms: u64) -> Option<u64> {
    let (when, rest) = text.split_once('(')?;
    let zone = rest.split_once(')')?.0.trim();
    let tz = TimeZone::get(zone).ok()?;
    let parts: Vec<&str> = when.trim().split(',').map(str::trim).collect();
    let (time, date_parts) = parts.split_last()?;
    let time = parse_clock(time)?;
    let now = Timestamp::from_millisecond(i64::try_from(now_ms).ok()?).ok()?;
    let now_there = now.to_zoned(tz.clone());
    let at = match date_parts {
        [] => {
            let today = now_there
                .date()
                .to_datetime(time)
                .to_zoned(tz.clone())
                .ok()?;
            if today.timestamp() > now {
                today
            } else {
                let tomorrow = now_there.date().tomorrow().ok()?;
                tomorrow.to_datetime(time).to_zoned(tz).ok()?
            }
        }
        [month_day] | [month_day, _] => {
            let (month, day) = parse_month_day(month_day)?;
            let year = match date_parts {
                [_, year] => year.parse::<i16>().ok()?,
                _ => now_there.year(),
            };
            let mut at = Date::new(year, month, day).ok()?.to_datetime(time);
            if date_parts.len() == 1 && at.to_zoned(tz.clone()).ok()?.timestamp() < now {
                // No year is printed for this year's dates: a date already
                // past is next year's.
                at = Date::new(year.checked_add(1)?, month, day)
                    .ok()?
                    .to_datetime(time);
            }
            at.to_zoned(tz).ok()?
        }
        _ => return None,
    };
    u64::try_from(at.timestamp().as_millisecond()).ok()
}

/// `1pm`, `11:30am`, `1:05 PM`, `13:00`.
fn parse_clock(text: &str) -> Option<Time> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, half) = if let Some(d) = lower.strip_suffix("am") {
        (d.trim_end(), Some(false))
    } else if let Some(d) = lower.strip_suffix("pm") {
        (d.trim_end(), Some(true))
    } else {
        (lower.as_str(), None)
    };
    let (hour, minute) = match digits.split_once(':') {
        Some((h, m)) => (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?),
        None => (digits.parse::<i8>().ok()?, 0),
    };
    let hour = match half {
        Some(_) if !(1..=12).contains(&hour) => return None,
        Some(pm) => hour % 12 + if pm { 12 } else { 0 },
        None => hour,
    };
    Time::new(hour, minute, 0, 0).ok()
}

/// `Dec 9`: month and day.
fn parse_month_day(text: &str) -> Option<(i8, i8)> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let (month, day) = text.split_once(' ')?;
    let month = month.get(..3)?.to_ascii_lowercase();
    let index = MONTHS.iter().position(|m| *m == month)?;
    Some((i8::try_from(index).ok()? + 1, day.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of an RFC 3339 instant.
    fn ms(instant: &str) -> u64 {
        instant.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    /// Each text read at `now` resets at `resets` (RFC 3339).
    fn assert_resets(cases: &[(&str, &str, &str)]) {
        for (text, now, resets) in cases {
            assert_eq!(
                plan_limit(text, ms(now)),
                Some(Some(ms(resets))),
                "{text} at {now}"
            );
        }
    }

    #[test]
    fn an_epoch_after_the_bar_is_the_reset() {
        let now = ms("2026-12-02T10:00:00Z");
        assert_eq!(
            plan_limit("Claude AI usage limit reached|1893456000", now),
            Some(Some(1_893_456_000_000))
        );
        assert_eq!(
            plan_limit("Claude AI usage limit reached|1893456000123", now),
            Some(Some(1_893_456_000_123))
        );
        assert_eq!(
            plan_limit("Claude AI usage limit reached|soon", now),
            Some(None)
        );
    }

    #[test]
    fn a_local_time_in_a_named_zone_is_the_next_such_time() {
        assert_resets(&[
            // Lisbon is on UTC in December: 1pm there is 13:00Z, still ahead.
            (
                "You've hit your limit · resets 1pm (Europe/Lisbon)",
                "2026-12-02T10:00:00Z",
                "2026-12-02T13:00:00Z",
            ),
            // 10:00Z is 15:30 in Calcutta: 11:30am there is tomorrow's.
            (
                "Limit reached · resets 11:30am (Asia/Calcutta) · /upgrade to increase your limit",
                "2026-12-02T10:00:00Z",
                "2026-12-03T06:00:00Z",
            ),
            // Summer time: 1pm in Lisbon is 12:00Z.
            (
                "You’ve hit your session limit · resets 1pm (Europe/Lisbon)",
                "2026-07-01T08:00:00Z",
                "2026-07-01T12:00:00Z",
            ),
            // The very minute of the reset is past: the next day's.
            (
                "You've hit your limit · resets 1pm (Europe/Lisbon)",
                "2026-12-02T13:00:00Z",
                "2026-12-03T13:00:00Z",
            ),
        ]);
    }

    #[test]
    fn a_date_more_than_a_day_ahead_is_read_with_its_year() {
        assert_resets(&[
            (
                "You've hit your weekly limit · resets Dec 9, 1:30pm (America/New_York)",
                "2026-12-02T10:00:00Z",
                "2026-12-09T18:30:00Z",
            ),
            (
                "You've hit your weekly limit · resets Jan 3, 2027, 9am (UTC)",
                "2026-12-02T10:00:00Z",
                "2027-01-03T09:00:00Z",
            ),
            // A date already past this year, printed without a year, is next year's.
            (
                "Limit reached · resets Jan 3, 9am (UTC)",
                "2026-12-02T10:00:00Z",
                "2027-01-03T09:00:00Z",
            ),
        ]);
    }

    #[test]
    fn a_limit_whose_reset_cannot_be_read_is_still_a_limit() {
        let now = ms("2026-12-02T10:00:00Z");
        for text in [
            "You've hit your limit · resets 1pm (Mars/Olympus_Mons)",
            "You've hit your limit · resets 25pm (Europe/Lisbon)",
            "You've hit your monthly spend limit. /model to switch models.",
            "Limit reached",
        ] {
            assert_eq!(plan_limit(text, now), Some(None), "{text}");
        }
    }

    #[test]
    fn other_texts_are_not_limits() {
        let now = ms("2026-12-02T10:00:00Z");
        for text in [
            "Prompt is too long · the request is ~250000 tokens (limit 200000)",
            "You've used 90% of your session limit · resets 1pm (Europe/Lisbon)",
            "Done: wrote hello.txt",
            "",
        ] {
            assert_eq!(plan_limit(text, now), None, "{text}");
        }
        let long = format!("Limit reached · resets 1pm (UTC) {}", "x".repeat(3000));
        assert_eq!(plan_limit(&long, now), None);
    }

    #[test]
    fn clock_times() {
        assert_eq!(parse_clock("12am"), Time::new(0, 0, 0, 0).ok());
        assert_eq!(parse_clock("12pm"), Time::new(12, 0, 0, 0).ok());
        assert_eq!(parse_clock("1:05 PM"), Time::new(13, 5, 0, 0).ok());
        assert_eq!(parse_clock("13:00"), Time::new(13, 0, 0, 0).ok());
        assert_eq!(parse_clock("0pm"), None);
        assert_eq!(parse_clock("noon"), None);
    }
}
