//! `keyturn report`: an inventory of IAM user access keys in the worker's
//! account and each configured member account, the state of every
//! rotation, the sagas of a period, and findings with their fixes, as a
//! self-contained HTML page, CSV or JSON (docs/operators.md, "The report").
//!
//! * [`collect`]: IAM (paged, streaming) and keyturn's table → [`model::Report`];
//! * [`model`]: the content and the pure decisions (the 90-day line, findings, tallies);
//! * [`render_html`], [`render_csv`], [`render_json`]: the three formats.

pub mod collect;
pub mod model;
pub mod render_csv;
pub mod render_html;
pub mod render_json;

use std::path::PathBuf;
use std::time::Duration;

use crate::clock::{parse_duration, Clock, Millis, SystemClock};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One self-contained page (inline CSS and SVG charts, no script).
    Html,
    /// Keys, an empty line, then the history (docs/operators.md).
    Csv,
    /// One `keyturn.report.v1` document.
    Json,
}

/// `keyturn report`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The history window: sagas started this long before the as-of instant (e.g. 30d, 90d).
    #[arg(long, default_value = "90d", value_parser = parse_duration)]
    pub since: Duration,
    /// Report as of this instant (YYYY-MM-DD or RFC 3339, e.g. the end of an
    /// audit period): key ages and idle times are counted to it. Default: now.
    #[arg(long, value_parser = parse_instant, value_name = "WHEN")]
    pub now: Option<Millis>,
    /// Also inventory this member account (through `[aws] member_role_name`);
    /// repeat for more. Accounts that configured rotations name are always included.
    #[arg(long = "account", value_name = "ACCOUNT_ID", value_parser = parse_account)]
    pub accounts: Vec<String>,
}

/// `YYYY-MM-DD` (midnight UTC) or an RFC 3339 instant.
pub fn parse_instant(s: &str) -> Result<Millis, String> {
    let text = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_string() };
    let dt = aws_smithy_types::DateTime::from_str(&text, aws_smithy_types::date_time::Format::DateTime)
        .map_err(|_| format!("invalid instant {s:?}: expected YYYY-MM-DD or RFC 3339 (2026-03-31T23:59:59Z)"))?;
    dt.to_millis().ok().filter(|ms| *ms >= 0).map(|ms| ms as Millis).ok_or_else(|| format!("invalid instant {s:?}: before 1970"))
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("invalid account id {s:?}: expected 12 digits"))
    }
}

/// Build the report and write it where `args` say. The wall clock is read
/// here, at the edge, only when `--now` is not given.
pub async fn run(cfg: &crate::config::Config, base: &aws_config::SdkConfig, args: &Args) -> anyhow::Result<()> {
    let now = args.now.unwrap_or_else(|| SystemClock.now_ms());
    let req = collect::Request { now, since: now.saturating_sub(args.since.as_millis() as u64), accounts: args.accounts.clone() };
    let report = collect::report(cfg, base, &req).await?;
    let bytes = match args.format {
        Format::Html => render_html::render(&report).into_bytes(),
        Format::Csv => render_csv::render(&report)?,
        Format::Json => render_json::render(&report)?,
    };
    match &args.out {
        Some(path) => std::fs::write(path, &bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_dates_or_rfc3339() {
        assert_eq!(parse_instant("2025-12-01").unwrap(), 1_764_547_200_000);
        assert_eq!(parse_instant("2025-12-01T00:00:01Z").unwrap(), 1_764_547_201_000);
        assert!(parse_instant("yesterday").is_err());
        assert!(parse_account("22222222222").is_err());
        assert!(parse_account("222222222222").is_ok());
    }
}
