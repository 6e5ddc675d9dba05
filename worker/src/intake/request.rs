//! The request API: validating a `keyturn.rotation-request.v1` document,
//! and whether its sender is allowed.

use serde_json::Value;

use super::IntakeError;
use crate::connectors::check::{is_account_id, one_line};

/// The request API's schema name and version (`schemas/rotation-request.v1.json`).
pub const REQUEST_SCHEMA: &str = "keyturn.rotation-request.v1";
/// A request sent as an EventBridge custom event: its `source` ...
pub const REQUEST_SOURCE: &str = "keyturn.requests";
/// ... and `detail-type`; `detail` is the request document.
pub const REQUEST_DETAIL_TYPE: &str = "Rotation Request";

/// Which rotation a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTarget {
    Rotation(String),
    User { account_id: String, user_name: String },
}

/// A rotation request (the request API), validated against
/// `keyturn.rotation-request.v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRequest {
    pub target: RequestTarget,
    pub reason: String,
    pub requester: String,
    pub idempotency_key: String,
    /// `None`: the idempotency key serves as the correlation id.
    pub correlation_id: Option<String>,
    pub overrides: crate::saga::Overrides,
    /// The EventBridge envelope's `account` and `source`, when the request
    /// came as a `keyturn.requests` event (`None`: a bare request document).
    /// For an event EventBridge delivered, `account` is the account that put
    /// it; a message sent to the queue directly can write anything here,
    /// which is why the queue policy matters (docs/security.md).
    pub event: Option<EventOrigin>,
    /// Who really sent the message: SQS's `SenderId` (set by the intake
    /// handler from [`crate::queue::Received::sender`], never from the body).
    pub sender: Option<String>,
}

/// Where an EventBridge event says it comes from (its envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOrigin {
    pub account: String,
    pub source: String,
}

impl RotationRequest {
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.idempotency_key)
    }
}

/// The fields of a `keyturn.rotation-request.v1` document.
const REQUEST_FIELDS: [&str; 9] =
    ["schema", "rotation_id", "account_id", "user_name", "reason", "requester", "idempotency_key", "correlation_id", "overrides"];
const OVERRIDE_FIELDS: [&str; 2] = ["grace_period", "person_deadline"];

fn bad(why: impl Into<String>) -> IntakeError {
    IntakeError::InvalidRequest(why.into())
}

/// A field name for a message: shown only if it looks like a field name
/// (at most 32 lowercase letters, digits and `_`); anything else may be a
/// value pasted in the wrong place, and is not repeated.
fn field_name(k: &str) -> String {
    if !k.is_empty() && k.len() <= 32 && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        format!("{k:?}")
    } else {
        "(name not shown: not a field name)".to_string()
    }
}

/// An optional string field of `v`: absent → `None`; present, it must be a
/// string of `min..=max` characters each allowed by `ok`.
fn text_field(v: &Value, key: &str, min: usize, max: usize, ok: fn(char) -> bool, rule: &str) -> Result<Option<String>, IntakeError> {
    match v.get(key) {
        None => Ok(None),
        Some(Value::String(t)) => {
            let len = t.chars().count();
            if len < min || len > max {
                let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
                return Err(bad(format!("{key}: must be {want} characters long (it has {len})")));
            }
            if !t.chars().all(ok) {
                return Err(bad(format!("{key}: {rule}")));
            }
            Ok(Some(t.clone()))
        }
        Some(_) => Err(bad(format!("{key}: must be a string"))),
    }
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.:/@+=,".contains(c)
}
fn rotation_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}
fn user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}
fn text_char(c: char) -> bool {
    !c.is_control()
}

/// Validate a request document (`schemas/rotation-request.v1.json` says
/// the same in JSON Schema; `tests/tests/requests.rs` checks that both agree
/// on every fixture). Reasons name fields and rules, never values: a
/// request may carry something secret by mistake, and reasons are logged
/// and kept on the DLQ message.
pub fn parse_request(v: &Value) -> Result<RotationRequest, IntakeError> {
    let obj = v.as_object().ok_or_else(|| bad("the request must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("unknown field {} (expected one of {})", field_name(k), REQUEST_FIELDS.join(", "))));
    }
    match v.get("schema") {
        Some(Value::String(s)) if s == REQUEST_SCHEMA => {}
        Some(Value::String(s)) if s.starts_with("keyturn.rotation-request.") => {
            return Err(bad(format!("schema: this keyturn understands only {REQUEST_SCHEMA}")));
        }
        Some(_) => return Err(bad(format!("schema: must be \"{REQUEST_SCHEMA}\""))),
        None => return Err(bad(format!("schema: required (\"{REQUEST_SCHEMA}\")"))),
    }
    let rotation_id = text_field(v, "rotation_id", 1, 64, rotation_char, "may contain only letters, digits, '-' and '_'")?;
    let account_id = text_field(v, "account_id", 12, 12, |c| c.is_ascii_digit(), "must be 12 digits")?;
    let user_name = text_field(v, "user_name", 1, 64, user_char, "must be an IAM user name (letters, digits and +=,.@_-)")?;
    let target = match (rotation_id, account_id, user_name) {
        (Some(id), None, None) => RequestTarget::Rotation(id),
        (None, Some(account_id), Some(user_name)) => RequestTarget::User { account_id, user_name },
        (None, None, None) => return Err(bad("name the rotation: rotation_id, or account_id and user_name")),
        (Some(_), _, _) => return Err(bad("rotation_id: give either rotation_id or account_id and user_name, not both")),
        (None, Some(_), None) => return Err(bad("user_name: required with account_id")),
        (None, None, Some(_)) => return Err(bad("account_id: required with user_name")),
    };
    let need = |key: &str, t: Option<String>| t.ok_or_else(|| bad(format!("{key}: required")));
    let reason = need("reason", text_field(v, "reason", 1, 1024, text_char, "must not contain control characters")?)?;
    let requester = need("requester", text_field(v, "requester", 1, 256, text_char, "must not contain control characters")?)?;
    let idempotency_key = need("idempotency_key", text_field(v, "idempotency_key", 1, 128, id_char, "may contain only letters, digits and -_.:/@+=,")?)?;
    let correlation_id = text_field(v, "correlation_id", 1, 128, id_char, "may contain only letters, digits and -_.:/@+=,")?;
    let mut overrides = crate::saga::Overrides::default();
    match v.get("overrides") {
        None => {}
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| !OVERRIDE_FIELDS.contains(&k.as_str())) {
                return Err(bad(format!("overrides: unknown field {} (a request may shorten only {})", field_name(k), OVERRIDE_FIELDS.join(" and "))));
            }
            for key in OVERRIDE_FIELDS {
                let ms = match o.get(key) {
                    None => continue,
                    Some(Value::String(d)) => crate::clock::parse_duration(d)
                        .map_err(|_| bad(format!("overrides.{key}: must be a duration: a whole number and a unit (ms, s, m, h, d), like \"1h\"")))?
                        .as_millis() as u64,
                    Some(_) => return Err(bad(format!("overrides.{key}: must be a duration string, like \"1h\""))),
                };
                match key {
                    "grace_period" => overrides.grace_period = Some(ms),
                    _ => overrides.person_deadline = Some(ms),
                }
            }
        }
        Some(_) => return Err(bad("overrides: must be an object")),
    }
    Ok(RotationRequest { target, reason, requester, idempotency_key, correlation_id, overrides, event: None, sender: None })
}

/// Whether a request's sender is allowed by `[requests] allowed_senders`
/// (`None`: every sender is). An entry of 12 digits is an AWS account: it
/// allows a `keyturn.requests` event whose envelope `account` it is. Any
/// other entry is an SQS `SenderId`: an IAM user's unique id (`AIDA…`)
/// allows exactly that sender; a role's unique id (`AROA…`) allows every
/// session of the role (`AROA…:<session>`), and `AROA…:<session>` only that
/// session. Answers the reason when refused.
pub fn sender_allowed(allowed: Option<&[String]>, sender: Option<&str>, origin: Option<&EventOrigin>) -> Result<(), IntakeError> {
    let Some(allowed) = allowed else { return Ok(()) };
    let account = origin.filter(|o| o.source == REQUEST_SOURCE).map(|o| o.account.as_str()).filter(|a| !a.is_empty());
    let ok = allowed.iter().any(|e| {
        if is_account_id(e) {
            account == Some(e.as_str())
        } else if e.contains(':') {
            sender == Some(e.as_str())
        } else {
            sender.is_some_and(|s| s == e || s.strip_prefix(e.as_str()).is_some_and(|rest| rest.starts_with(':')))
        }
    });
    if ok {
        return Ok(());
    }
    Err(IntakeError::SenderNotAllowed(format!(
        "SenderId {} (event account {}) is not in [requests] allowed_senders",
        sender.map(|s| one_line(s, 128)).unwrap_or_else(|| "(none)".into()),
        account.map(|a| one_line(a, 20)).unwrap_or_else(|| "(none)".into())
    )))
}
