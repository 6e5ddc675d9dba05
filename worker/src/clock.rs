//! Time as keyturn prints it: the one date formatter (RFC 3339, UTC) for
//! messages, notices, notifications and the CLI. Built on the SDK's
//! `aws_smithy_types::DateTime`, which the AWS clients already bring in.

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;

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
