//! Time, on the ground floor: milliseconds since the epoch, the one place
//! the wall clock is read ([`now_ms`]), token renewal margins and the
//! durations a configuration or a flag writes (`"30s"`, `"7d"`), and the
//! one date formatter (RFC 3339, UTC) for messages, notices, notifications
//! and the CLI, built on the SDK's `aws_smithy_types::DateTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use serde::Deserialize;

/// Milliseconds since the UNIX epoch.
pub type Millis = u64;

/// The wall clock, in [`Millis`].
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Longest margin before expiry at which a token is renewed.
pub const MAX_MARGIN: Duration = Duration::from_secs(300);

/// How long after it was issued a token of `lifetime` is renewed.
pub fn renew_after(lifetime: Duration) -> Duration {
    let margin = (lifetime / 5).min(MAX_MARGIN);
    lifetime.saturating_sub(margin)
}

/// A duration written as `"30s"`, `"5m"`, `"2h"`, `"7d"` or `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// Parse `"<number><unit>"` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: expected a whole number and a unit, like \"30s\", \"5m\", \"7d\""))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("invalid duration {s:?}: unit must be one of ms, s, m, h, d")),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("duration {s:?} is too large"))
}

/// `2026-11-24T10:00:00Z` for milliseconds since the Unix epoch, with the
/// fraction only when it is not zero (`2026-11-24T10:00:00.25Z`). An
/// instant past what RFC 3339 can write (after year 9999) prints as the
/// plain number.
pub fn fmt_ms(ms: u64) -> String {
    i64::try_from(ms).ok().and_then(|m| DateTime::from_millis(m).fmt(Format::DateTime).ok()).unwrap_or_else(|| ms.to_string())
}

/// `2026-11-24`: the day of [`fmt_ms`].
pub fn fmt_date(ms: u64) -> String {
    fmt_ms(ms).chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_proportional_to_the_lifetime() {
        assert_eq!(renew_after(Duration::from_secs(60)), Duration::from_secs(48));
        assert_eq!(renew_after(Duration::from_secs(3600)), Duration::from_secs(3300));
        assert_eq!(renew_after(Duration::from_secs(86_400)), Duration::from_secs(86_100));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00Z");
        // A leap day, with seconds.
        assert_eq!(fmt_ms(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
        assert_eq!(fmt_ms(1_709_164_800_000), "2024-02-29T00:00:00Z");
        // The last second of a year, and the next one.
        assert_eq!(fmt_ms(1_767_225_599_000), "2025-12-31T23:59:59Z");
        assert_eq!(fmt_ms(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(fmt_ms(1_764_547_200_000), "2025-12-01T00:00:00Z");
        // Milliseconds are kept when there are any.
        assert_eq!(fmt_ms(1_767_225_599_250), "2025-12-31T23:59:59.25Z");
        assert_eq!(fmt_ms(1), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn dates_are_the_day_of_the_instant() {
        assert_eq!(fmt_date(0), "1970-01-01");
        assert_eq!(fmt_date(951_868_799_999), "2000-02-29");
        assert_eq!(fmt_date(1_767_225_599_999), "2025-12-31");
    }

    #[test]
    fn instants_beyond_rfc_3339_print_as_numbers() {
        assert_eq!(fmt_ms(u64::MAX), u64::MAX.to_string());
        assert_eq!(fmt_ms(i64::MAX as u64), (i64::MAX as u64).to_string());
    }
}
