//! AWS Health events: access keys found exposed (a credential's own notices,
//! such as its expiry, are read in `mod.rs` for the sources that cover them).

use serde_json::Value;

use super::{need, str_at, text_at, user_from_arn, Event, IntakeError};

/// AWS Health's event type for an access key found exposed in public.
pub const KEY_EXPOSED: &str = "AWS_RISK_CREDENTIALS_EXPOSED";

/// An access key id as AWS writes them: 16 to 128 characters, uppercase
/// letters and digits, starting `AKIA` (long-term user keys) or `ASIA` (temporary).
pub fn is_access_key_id(s: &str) -> bool {
    (16..=128).contains(&s.len()) && (s.starts_with("AKIA") || s.starts_with("ASIA")) && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `AWS_RISK_CREDENTIALS_EXPOSED`: the exposed keys are in
/// `detail.affectedEntities[].entityValue` — an access key id, or (some
/// notices) the IAM user's ARN. Both are read; anything else is ignored.
pub(super) fn parse_exposed(v: &Value) -> Result<Event, IntakeError> {
    let account_id = need(v, "/account", "the event")?.to_string();
    let event_arn = text_at(v, "/detail/eventArn").unwrap_or_default();
    let entities = v
        .pointer("/detail/affectedEntities")
        .and_then(Value::as_array)
        .ok_or_else(|| IntakeError::Missing("detail.affectedEntities is missing or not a list".into()))?;
    let mut key_ids = Vec::new();
    let mut users = Vec::new();
    for e in entities {
        let Some(value) = str_at(e, "/entityValue") else { continue };
        if is_access_key_id(value) {
            if !key_ids.iter().any(|k| k == value) {
                key_ids.push(value.to_string());
            }
        } else if let Some(pair) = user_from_arn(value, "detail.affectedEntities")? {
            if !users.contains(&pair) {
                users.push(pair);
            }
        }
    }
    if key_ids.is_empty() && users.is_empty() {
        return Err(IntakeError::Missing("detail.affectedEntities names no access key id and no IAM user ARN".into()));
    }
    Ok(Event::KeyExposed { account_id, event_arn, key_ids, users })
}
