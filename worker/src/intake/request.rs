//! The request API: validating a `keyturn.rotation-request.v1` document
//! (one typed definition, [`RequestDoc`]), and whether its sender is allowed.

use serde::de::{DeserializeOwned, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::IntakeError;
use crate::clock::Millis;
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

fn bad(why: String) -> IntakeError {
    IntakeError::InvalidRequest(why)
}

/// A `keyturn.rotation-request.v1` document as sent: one field per property
/// of `schemas/rotation-request.v1.json`, in its order (a unit test checks
/// that both name the same fields). Each field's type checks itself and
/// says what is wrong in keyturn's own words: the field and the rule, never
/// the value. A field may be absent, but when present it is checked, `null`
/// included (as in the schema; serde's `Option` alone would take `null` for
/// absent). The rules across fields are [`RequestDoc::into_request`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestDoc {
    #[serde(default, deserialize_with = "present")]
    schema: Option<SchemaName>,
    #[serde(default, deserialize_with = "present")]
    rotation_id: Option<RotationId>,
    #[serde(default, deserialize_with = "present")]
    account_id: Option<AccountId>,
    #[serde(default, deserialize_with = "present")]
    user_name: Option<UserName>,
    #[serde(default, deserialize_with = "present")]
    reason: Option<Reason>,
    #[serde(default, deserialize_with = "present")]
    requester: Option<Requester>,
    #[serde(default, deserialize_with = "present")]
    idempotency_key: Option<IdempotencyKey>,
    #[serde(default, deserialize_with = "present")]
    correlation_id: Option<CorrelationId>,
    #[serde(default, deserialize_with = "present")]
    overrides: Option<OverridesDoc>,
}

/// The request's `overrides` object: what a request may shorten.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFields {
    #[serde(default, deserialize_with = "present")]
    grace_period: Option<GracePeriod>,
    #[serde(default, deserialize_with = "present")]
    person_deadline: Option<PersonDeadline>,
}

/// A field that may be absent but, when present, is its type's to check.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `schema`: exactly [`REQUEST_SCHEMA`].
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct SchemaName;

impl TryFrom<Value> for SchemaName {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) if s == REQUEST_SCHEMA => Ok(SchemaName),
            Value::String(s) if s.starts_with("keyturn.rotation-request.") => Err(format!("schema: this keyturn understands only {REQUEST_SCHEMA}")),
            _ => Err(format!("schema: must be \"{REQUEST_SCHEMA}\"")),
        }
    }
}

/// A string field of `min..=max` characters, each allowed by `ok` (the
/// schema's `pattern`, `minLength` and `maxLength`).
macro_rules! text_field {
    ($name:ident, $key:literal, $min:literal, $max:literal, $ok:expr, $rule:expr) => {
        #[doc = concat!("The `", $key, "` field.")]
        #[derive(Deserialize)]
        #[serde(try_from = "Value")]
        struct $name(String);

        impl TryFrom<Value> for $name {
            type Error = String;
            fn try_from(v: Value) -> Result<Self, String> {
                text($key, v, $min, $max, $ok, $rule).map($name)
            }
        }
    };
}

const ID_RULE: &str = "may contain only letters, digits and -_.:/@+=,";
text_field!(RotationId, "rotation_id", 1, 64, rotation_char, "may contain only letters, digits, '-' and '_'");
text_field!(AccountId, "account_id", 12, 12, |c: char| c.is_ascii_digit(), "must be 12 digits");
text_field!(UserName, "user_name", 1, 64, user_char, "must be an IAM user name (letters, digits and +=,.@_-)");
text_field!(Reason, "reason", 1, 1024, text_char, "must not contain control characters");
text_field!(Requester, "requester", 1, 256, text_char, "must not contain control characters");
text_field!(IdempotencyKey, "idempotency_key", 1, 128, id_char, ID_RULE);
text_field!(CorrelationId, "correlation_id", 1, 128, id_char, ID_RULE);

fn text(key: &str, v: Value, min: usize, max: usize, ok: fn(char) -> bool, rule: &str) -> Result<String, String> {
    let Value::String(t) = v else { return Err(format!("{key}: must be a string")) };
    let len = t.chars().count();
    if len < min || len > max {
        let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
        return Err(format!("{key}: must be {want} characters long (it has {len})"));
    }
    if !t.chars().all(ok) {
        return Err(format!("{key}: {rule}"));
    }
    Ok(t)
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

/// A duration override: the schema's `$defs/duration`.
macro_rules! duration_field {
    ($name:ident, $key:literal) => {
        #[doc = concat!("The `overrides.", $key, "` field (milliseconds).")]
        #[derive(Deserialize)]
        #[serde(try_from = "Value")]
        struct $name(Millis);

        impl TryFrom<Value> for $name {
            type Error = String;
            fn try_from(v: Value) -> Result<Self, String> {
                duration(concat!("overrides.", $key), v).map($name)
            }
        }
    };
}

duration_field!(GracePeriod, "grace_period");
duration_field!(PersonDeadline, "person_deadline");

/// The schema's `duration`: digits and a unit, nothing around them.
fn duration(key: &str, v: Value) -> Result<Millis, String> {
    let Value::String(d) = v else { return Err(format!("{key}: must be a duration string, like \"1h\"")) };
    let exact = d.starts_with(|c: char| c.is_ascii_digit()) && d == d.trim_end();
    match crate::clock::parse_duration(&d) {
        Ok(t) if exact => Ok(t.as_millis() as Millis),
        _ => Err(format!("{key}: must be a duration: a whole number and a unit (ms, s, m, h, d), like \"1h\"")),
    }
}

/// `overrides`: an object of [`OverrideFields`].
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct OverridesDoc(crate::saga::Overrides);

impl TryFrom<Value> for OverridesDoc {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        let f: OverrideFields = typed(&v, "overrides.", "overrides: must be an object", |k, fields| {
            format!("overrides: unknown field {k} (a request may shorten only {})", fields.join(" and "))
        })?;
        Ok(OverridesDoc(crate::saga::Overrides { grace_period: f.grace_period.map(|d| d.0), person_deadline: f.person_deadline.map(|d| d.0) }))
    }
}

/// Read the JSON object `v` as the struct `T`, in keyturn's own words:
/// `not_object` when it is none, `unknown(key, fields)` for a key `T` has
/// no field for (the key shown only if it looks like a field name), else
/// the reason of a field that fails its own check. A reason that is not
/// one of those (serde's own, which may quote a value) is never passed on.
fn typed<T: DeserializeOwned>(v: &Value, prefix: &str, not_object: &str, unknown: impl Fn(&str, &[&str]) -> String) -> Result<T, String> {
    let Value::Object(o) = v else { return Err(not_object.to_string()) };
    let fields = fields_of::<T>();
    if let Some(k) = o.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(unknown(&field_name(k), fields));
    }
    T::deserialize(v).map_err(|e| {
        let why = e.to_string();
        let ours = fields.iter().any(|f| why.strip_prefix(prefix).and_then(|w| w.strip_prefix(*f)).is_some_and(|w| w.starts_with([':', '.'])));
        if ours {
            why
        } else {
            format!("{} does not follow {REQUEST_SCHEMA}", if prefix.is_empty() { "the request" } else { prefix.trim_end_matches('.') })
        }
    })
}

/// The field names serde's derive gives the struct `T`, in declaration
/// order: what it passes to `deserialize_struct`, recorded by a
/// deserializer that reads nothing. The one list of `T`'s fields is `T`.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Names<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("field names read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
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

impl RequestDoc {
    /// The rules across fields: `schema` is required, and the rotation is
    /// named by `rotation_id` or by `account_id` with `user_name`.
    fn into_request(self) -> Result<RotationRequest, String> {
        if self.schema.is_none() {
            return Err(format!("schema: required (\"{REQUEST_SCHEMA}\")"));
        }
        let target = match (self.rotation_id, self.account_id, self.user_name) {
            (Some(RotationId(id)), None, None) => RequestTarget::Rotation(id),
            (None, Some(AccountId(account_id)), Some(UserName(user_name))) => RequestTarget::User { account_id, user_name },
            (None, None, None) => return Err("name the rotation: rotation_id, or account_id and user_name".into()),
            (Some(_), _, _) => return Err("rotation_id: give either rotation_id or account_id and user_name, not both".into()),
            (None, Some(_), None) => return Err("user_name: required with account_id".into()),
            (None, None, Some(_)) => return Err("account_id: required with user_name".into()),
        };
        let need = |key: &str| format!("{key}: required");
        Ok(RotationRequest {
            target,
            reason: self.reason.ok_or_else(|| need("reason"))?.0,
            requester: self.requester.ok_or_else(|| need("requester"))?.0,
            idempotency_key: self.idempotency_key.ok_or_else(|| need("idempotency_key"))?.0,
            correlation_id: self.correlation_id.map(|c| c.0),
            overrides: self.overrides.map(|o| o.0).unwrap_or_default(),
            event: None,
            sender: None,
        })
    }
}

/// Validate a request document: read it as a [`RequestDoc`], then apply
/// the rules across fields. `schemas/rotation-request.v1.json` says the
/// same in JSON Schema; `tests/tests/requests.rs` checks that both agree on
/// every fixture. Reasons name fields and rules, never values: a request
/// may carry something secret by mistake, and reasons are logged and kept
/// on the DLQ message.
pub fn parse_request(v: &Value) -> Result<RotationRequest, IntakeError> {
    let doc: RequestDoc =
        typed(v, "", "the request must be a JSON object", |k, fields| format!("unknown field {k} (expected one of {})", fields.join(", ")))
            .map_err(bad)?;
    doc.into_request().map_err(bad)
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

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../../schemas/rotation-request.v1.json");

    fn names(v: &Value) -> Vec<&str> {
        let mut n: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        n.sort();
        n
    }

    fn sorted(f: &[&'static str]) -> Vec<&'static str> {
        let mut f = f.to_vec();
        f.sort();
        f
    }

    /// The typed definition and the JSON Schema name the same fields, so
    /// neither can gain one the other does not know; and each field the
    /// schema requires is required here too.
    #[test]
    fn the_typed_definition_and_the_json_schema_name_the_same_fields() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        assert_eq!(sorted(fields_of::<RequestDoc>()), names(&schema["properties"]));
        assert_eq!(sorted(fields_of::<OverrideFields>()), names(&schema["properties"]["overrides"]["properties"]));
        let full = serde_json::json!({"schema": REQUEST_SCHEMA, "rotation_id": "a", "reason": "r", "requester": "c", "idempotency_key": "k"});
        assert!(parse_request(&full).is_ok());
        let required = schema["required"].as_array().unwrap();
        assert_eq!(required.len(), 4, "{required:?}");
        for key in required {
            let key = key.as_str().unwrap();
            let mut doc = full.clone();
            doc.as_object_mut().unwrap().remove(key);
            let e = parse_request(&doc).unwrap_err().to_string();
            assert!(e.contains(&format!("{key}: required")), "{key}: {e}");
        }
    }
}
