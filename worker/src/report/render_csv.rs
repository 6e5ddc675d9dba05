//! CSV for auditors: one file, two sections separated by one empty line.
//! The first section is the key inventory, one row per access key (header
//! starts `account_id`); the second is the history, one row per saga of the
//! window (header starts `saga_id`). Both always have their header, even
//! when empty. A text cell that starts with `=`, `+`, `-` or `@` is written
//! with a leading `'` so a spreadsheet never runs it as a formula (IAM
//! user names may contain `=`, `+` and `@`).

use super::model::{key_findings, Report};

pub const KEY_COLUMNS: &[&str] = &[
    "account_id",
    "user_name",
    "access_key_id",
    "status",
    "created_at",
    "age_days",
    "last_used_at",
    "last_used_service",
    "last_used_region",
    "rotation_id",
    "past_90_days",
    "unused_90_days",
    "findings",
];

pub const HISTORY_COLUMNS: &[&str] = &[
    "saga_id",
    "rotation_id",
    "outcome",
    "status",
    "started_at",
    "ended_at",
    "time_to_switch_s",
    "time_to_rotate_s",
    "trigger",
    "trigger_detail",
    "requested_by",
    "exposed_key",
    "failure",
];

/// A cell a spreadsheet will not evaluate, on one line.
fn cell(s: &str) -> String {
    let one_line = s.replace(['\r', '\n'], " ");
    if one_line.starts_with(['=', '+', '-', '@']) {
        format!("'{one_line}")
    } else {
        one_line
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

fn section(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> std::io::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(vec![]);
    w.write_record(header)?;
    for r in rows {
        w.write_record(r.iter().map(|c| cell(c)))?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

pub fn render(r: &Report) -> std::io::Result<Vec<u8>> {
    let keys = r.keys.iter().map(|k| {
        vec![
            k.account_id.clone(),
            k.user_name.clone(),
            k.access_key_id.clone(),
            k.status.clone(),
            k.created_at.clone(),
            k.age_days.to_string(),
            opt(&k.last_used_at),
            k.last_used_service.clone(),
            k.last_used_region.clone(),
            opt(&k.rotation_id),
            k.past_90_days.to_string(),
            k.unused_90_days.to_string(),
            key_findings(k).iter().map(|f| f.kind).collect::<Vec<_>>().join(";"),
        ]
    });
    let history = r.history.sagas.iter().map(|s| {
        vec![
            s.saga_id.clone(),
            s.rotation_id.clone(),
            s.outcome.clone(),
            s.status.clone(),
            s.started_at.clone(),
            opt(&s.ended_at),
            opt(&s.time_to_switch_s),
            opt(&s.time_to_rotate_s),
            s.trigger.clone(),
            s.trigger_detail.clone(),
            opt(&s.requested_by),
            opt(&s.exposed_key),
            opt(&s.failure),
        ]
    });
    let mut out = section(KEY_COLUMNS, keys)?;
    out.extend_from_slice(b"\r\n");
    out.extend(section(HISTORY_COLUMNS, history)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_cells_are_defused_and_kept_on_one_line() {
        assert_eq!(cell("=HYPERLINK(x)"), "'=HYPERLINK(x)");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("@user"), "'@user");
        assert_eq!(cell("a\nb"), "a b");
        assert_eq!(cell("mailer"), "mailer");
    }
}
