//! Time, on the ground floor: milliseconds since the epoch, the [`Clock`]
//! every part reads time through (the wall clock is read only by
//! [`SystemClock`]; tests drive a [`ManualClock`]), token renewal margins and the
//! durations a configuration or a flag writes (`"30s"`, `"7d"`), and the
//! one date formatter (RFC 3339, UTC) for messages, notices, notifications
//! and the CLI, built on the SDK's `aws_smithy_types::DateTime`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use serde::Deserialize;

/// Milliseconds since the UNIX epoch.
pub type Millis = u64;

/// Where time comes from. Every part that decides by time (leases, due
/// steps, sweeps, scans, quarantine, idempotency windows, token renewal)
/// is given one where it is built, and reads time only through it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the UNIX epoch.
    fn now_ms(&self) -> Millis;
    /// Now, as a [`SystemTime`] (for HTTP dates such as `Retry-After`).
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }
}

/// A clock shared by the parts of one engine.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock: the one place it is read.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// The wall clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to: tests advance it instead of
/// sleeping until a sweep, a key age or a deadline comes due.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn at(ms: Millis) -> Arc<ManualClock> {
        Arc::new(ManualClock { ms: AtomicU64::new(ms) })
    }
    /// A clock standing at the wall clock's now (so items written with it
    /// sit beside those AWS stamps with real time, e.g. key creation dates).
    pub fn starting_now() -> Arc<ManualClock> {
        Self::at(SystemClock.now_ms())
    }
    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.ms.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.ms.load(Ordering::SeqCst)
    }
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
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_millis(2_500));
        assert_eq!(c.now_ms(), 3_500);
        assert_eq!(c.now(), UNIX_EPOCH + Duration::from_millis(3_500));
    }

    /// The source of one file up to its test module (test code may read
    /// the wall clock: a fixture's date, a fake's `Retry-After`).
    fn non_test_code(text: &str) -> String {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            let next = lines.get(i + 1).map_or("", |n| n.trim_start());
            if l.trim_start().starts_with("#[cfg(test)]") && (next.starts_with("mod ") || next.starts_with("pub mod ")) {
                break;
            }
            // Without its `//` comment (a `//` right after `:` is a URL).
            let mut code = *l;
            let mut from = 0;
            while let Some(at) = l[from..].find("//").map(|a| a + from) {
                if at == 0 || l.as_bytes()[at - 1] != b':' {
                    code = &l[..at];
                    break;
                }
                from = at + 2;
            }
            out.push_str(code);
            out.push('\n');
        }
        out
    }

    /// The wall-clock reads in one file's code: `SystemTime::now`, and a
    /// `now_ms()` called as a free function (not a method of a clock).
    fn wall_clock_reads(code: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (n, line) in code.lines().enumerate() {
            if line.contains("SystemTime::now") {
                found.push(format!("line {}: {}", n + 1, line.trim()));
            }
            let mut from = 0;
            while let Some(at) = line[from..].find("now_ms()") {
                let at = from + at;
                let before = line[..at].chars().next_back();
                if before != Some('.') && !line[..at].trim_end().ends_with("fn") {
                    found.push(format!("line {}: {}", n + 1, line.trim()));
                }
                from = at + 1;
            }
        }
        found
    }

    #[test]
    fn the_scanner_sees_wall_clock_reads() {
        assert_eq!(wall_clock_reads("let t = std::time::SystemTime::now();").len(), 1);
        assert_eq!(wall_clock_reads("let t = crate::clock::now_ms();").len(), 1);
        assert_eq!(wall_clock_reads("let t = now_ms() + 1;").len(), 1);
        assert!(wall_clock_reads("let t = self.clock.now_ms();").is_empty());
        assert!(wall_clock_reads("fn now_ms() -> Millis {").is_empty());
        assert!(non_test_code("a();\n#[cfg(test)]\nmod tests {\n now_ms();\n}").contains("a();"));
        assert!(wall_clock_reads(&non_test_code("a();\n#[cfg(test)]\nmod tests {\n now_ms();\n}")).is_empty());
    }

    /// Time is read only through a [`Clock`]: outside this file no code
    /// reads the wall clock, so a test's [`ManualClock`] governs every
    /// decision by time.
    #[test]
    fn the_wall_clock_is_read_only_by_the_system_clock() {
        fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    rust_files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.len() > 20, "found the sources: {files:?}");
        let mut reads = Vec::new();
        for f in files {
            if f == src.join("clock.rs") || f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for r in wall_clock_reads(&non_test_code(&text)) {
                reads.push(format!("{}: {r}", f.strip_prefix(&src).unwrap().display()));
            }
        }
        assert!(reads.is_empty(), "read time through a Clock (crate::clock), not the wall clock:\n{}", reads.join("\n"));
    }

    #[test]
    fn instants_beyond_rfc_3339_print_as_numbers() {
        assert_eq!(fmt_ms(u64::MAX), u64::MAX.to_string());
        assert_eq!(fmt_ms(i64::MAX as u64), (i64::MAX as u64).to_string());
    }
}
