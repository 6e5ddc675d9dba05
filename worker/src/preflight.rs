//! What a preflight finds: checks with their status and fix, and the AWS
//! actions a rotation needs. Plain types below the connectors, which answer
//! for themselves (`CredentialSource::doctor`, `Target::doctor`);
//! [`crate::doctor`] runs them and prints the report.

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// The check could not be made (the API cannot answer it here); said
    /// plainly rather than reported as passed.
    NotChecked,
}

impl Status {
    /// As the table prints it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::NotChecked => "not checked",
        }
    }
}

/// One check: what was looked at, what was found, and for a failure or a
/// warning what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Ok, detail: detail.into(), fix: None }
    }
    pub fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn not_checked(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::NotChecked, detail: detail.into(), fix: None }
    }
}

/// An AWS action a rotation needs the worker's own identity to be allowed,
/// on a resource (an ARN, or `*` when the connector cannot name one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAction {
    pub action: &'static str,
    pub resource: String,
}

impl AwsAction {
    pub fn new(action: &'static str, resource: impl Into<String>) -> AwsAction {
        AwsAction { action, resource: resource.into() }
    }
}

/// What a connector's preflight found: its checks, and the AWS actions the
/// worker's own identity must be allowed for it.
#[derive(Debug, Default)]
pub struct Findings {
    pub checks: Vec<Check>,
    pub actions: Vec<AwsAction>,
}

/// The claims of a JWT access token (its middle, base64url part), without
/// checking the signature: only to read which scopes or roles the issuer
/// granted, never to trust the token. `None` when it is not a JWT.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return None };
    let mut b64: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    let bytes = aws_smithy_types::base64::decode(&b64).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok().filter(|v| v.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_claims_are_read_from_the_payload_only_of_a_jwt() {
        // {"scope":"read:email_provider"} in base64url, no padding; "?>" makes `_`/`-` appear.
        let payload =
            aws_smithy_types::base64::encode(br#"{"scope":"read:email_provider","x":"?>?"}"#).trim_end_matches('=').replace('+', "-").replace('/', "_");
        let claims = jwt_claims(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig")).unwrap();
        assert_eq!(claims["scope"], "read:email_provider");
        assert_eq!(jwt_claims("fake-mgmt-token-123"), None);
        assert_eq!(jwt_claims("a.b.c.d"), None);
        assert_eq!(jwt_claims("a.!!!.c"), None);
    }
}
