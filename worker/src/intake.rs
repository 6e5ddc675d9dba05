//! Triggers: EventBridge events arriving on the intake queue, turned into
//! rotation requests.
//!
//! Pure parsing and matching live here (no I/O, tested below); the engine's
//! intake handler (`engine::Engine::handle_intake`) does the I/O: dedupe
//! against the table, start sagas, report unmatched users, update findings.
//!
//! Events understood:
//! * `Security Hub Findings - Imported` (source `aws.securityhub`): acted on
//!   for control IAM.3 only — consolidated findings (`Compliance.SecurityControlId`),
//!   legacy ones (`ProductFields.ControlId`) or a `GeneratorId` ending in
//!   `/IAM.3` — and only with `RecordState: ACTIVE` and `Compliance.Status: FAILED`;
//! * `Security Hub Findings - Custom Action`: an operator chose "Rotate with
//!   keyturn" on findings; every IAM user resource in them is acted on;
//! * `AWS Health Event` with `AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION`:
//!   starts the `scim_token` rotation of the event's account and region (AWS
//!   repeats the notice weekly from 90 days before expiry, then more often:
//!   a saga already waiting on a person simply answers the repeats).
//!
//! Anything else — not JSON, another source or detail-type, missing fields —
//! is an [`IntakeError`] and goes to the intake DLQ with its reason.

use serde_json::Value;

use crate::config::RotationConfig;
use crate::connectors::Subject;
use crate::saga::Millis;

pub const IAM3: &str = "IAM.3";
pub const SCIM_EXPIRY: &str = "AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION";

/// A Security Hub finding, reduced to what keyturn needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub product_arn: String,
    pub account_id: String,
    pub control: Option<String>,
    pub record_state: String,
    pub compliance_status: Option<String>,
    /// `FirstObservedAt`, else `CreatedAt`. Informational only: Security Hub
    /// keeps one finding per control and resource, so a key that fails again
    /// months after a rotation comes back with its first `FirstObservedAt`.
    pub observed_at: Option<Millis>,
    /// The control's `maxAccessKeyAge` parameter in days
    /// (`Compliance.SecurityControlParameters`), when the finding carries it.
    pub max_key_age_days: Option<u64>,
    /// IAM users among the finding's resources: (account, user name).
    pub users: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    FindingsImported(Vec<Finding>),
    CustomAction {
        action_name: String,
        findings: Vec<Finding>,
    },
    ScimTokenExpiry {
        account_id: String,
        /// `detail.eventRegion`, else the event's `region`.
        region: String,
        event_arn: String,
        /// The event's `time`.
        observed_at: Option<Millis>,
    },
}

/// Why an intake message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("event is not JSON: {0}")]
    NotJson(String),
    #[error("unsupported event: source {event_source:?}, detail-type {detail_type:?}")]
    Unsupported { event_source: String, detail_type: String },
    #[error("malformed event: {0}")]
    Missing(String),
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn need<'a>(v: &'a Value, ptr: &str, what: &str) -> Result<&'a str, IntakeError> {
    str_at(v, ptr)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IntakeError::Missing(format!("{what} has no {}", ptr.trim_start_matches('/').replace('/', "."))))
}

fn parse_time(s: &str) -> Option<Millis> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime).ok().and_then(|d| d.to_millis().ok()).map(|m| m.max(0) as u64)
}

/// `arn:aws:iam::123456789012:user/path/name` → (account, name).
pub fn parse_user_arn(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.splitn(6, ':');
    let (arn_lit, _partition, service, _region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if arn_lit != "arn" || service != "iam" || account.is_empty() {
        return None;
    }
    let name = resource.strip_prefix("user/")?.rsplit('/').next()?;
    (!name.is_empty()).then(|| (account.to_string(), name.to_string()))
}

fn parse_finding(f: &Value, i: usize) -> Result<Finding, IntakeError> {
    let what = format!("finding {i}");
    let id = need(f, "/Id", &what)?.to_string();
    let product_arn = need(f, "/ProductArn", &what)?.to_string();
    let account_id = need(f, "/AwsAccountId", &what)?.to_string();
    let record_state = need(f, "/RecordState", &what)?.to_string();
    let generator_control = str_at(f, "/GeneratorId").and_then(|g| g.rsplit('/').next()).filter(|c| *c == IAM3);
    let control = str_at(f, "/Compliance/SecurityControlId").or_else(|| str_at(f, "/ProductFields/ControlId")).or(generator_control).map(str::to_string);
    let resources = f.get("Resources").and_then(Value::as_array).ok_or_else(|| IntakeError::Missing(format!("{what} has no Resources")))?;
    let mut users = Vec::new();
    for r in resources {
        if str_at(r, "/Type") != Some("AwsIamUser") {
            continue;
        }
        let from_arn = str_at(r, "/Id").and_then(parse_user_arn);
        let name = str_at(r, "/Details/AwsIamUser/UserName").map(str::to_string).or_else(|| from_arn.as_ref().map(|(_, n)| n.clone()));
        let account = from_arn.map(|(a, _)| a).unwrap_or_else(|| account_id.clone());
        match name {
            Some(n) => users.push((account, n)),
            None => return Err(IntakeError::Missing(format!("{what}: AwsIamUser resource without a user name or user ARN"))),
        }
    }
    Ok(Finding {
        id,
        product_arn,
        account_id,
        control,
        record_state,
        compliance_status: str_at(f, "/Compliance/Status").map(str::to_string),
        observed_at: str_at(f, "/FirstObservedAt").or_else(|| str_at(f, "/CreatedAt")).and_then(parse_time),
        max_key_age_days: max_key_age_days(f),
        users,
    })
}

/// IAM.3's default: keys older than 90 days fail the control.
pub const IAM3_DEFAULT_MAX_AGE_DAYS: u64 = 90;

/// `Compliance.SecurityControlParameters: [{"Name": "maxAccessKeyAge", "Value": ["90"]}]`.
fn max_key_age_days(f: &Value) -> Option<u64> {
    f.pointer("/Compliance/SecurityControlParameters")?
        .as_array()?
        .iter()
        .find(|p| str_at(p, "/Name") == Some("maxAccessKeyAge"))?
        .get("Value")?
        .as_array()?
        .first()?
        .as_str()?
        .trim()
        .parse()
        .ok()
        .filter(|d| (1..=36_500).contains(d))
}

fn parse_findings(v: &Value) -> Result<Vec<Finding>, IntakeError> {
    let list =
        v.pointer("/detail/findings").and_then(Value::as_array).ok_or_else(|| IntakeError::Missing("detail.findings is missing or not a list".into()))?;
    if list.is_empty() {
        return Err(IntakeError::Missing("detail.findings is empty".into()));
    }
    list.iter().enumerate().map(|(i, f)| parse_finding(f, i)).collect()
}

/// Parse one EventBridge event as delivered to SQS.
pub fn parse(body: &str) -> Result<Event, IntakeError> {
    let v: Value = serde_json::from_str(body).map_err(|e| IntakeError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(IntakeError::Missing("event is not a JSON object".into()));
    }
    let source = str_at(&v, "/source").unwrap_or("").to_string();
    let detail_type = str_at(&v, "/detail-type").unwrap_or("").to_string();
    match (source.as_str(), detail_type.as_str()) {
        ("aws.securityhub", "Security Hub Findings - Imported") => Ok(Event::FindingsImported(parse_findings(&v)?)),
        ("aws.securityhub", "Security Hub Findings - Custom Action") => {
            Ok(Event::CustomAction { action_name: str_at(&v, "/detail/actionName").unwrap_or("").to_string(), findings: parse_findings(&v)? })
        }
        ("aws.health", "AWS Health Event") if str_at(&v, "/detail/eventTypeCode") == Some(SCIM_EXPIRY) => {
            let region = str_at(&v, "/detail/eventRegion").or_else(|| str_at(&v, "/region")).unwrap_or("").to_string();
            Ok(Event::ScimTokenExpiry {
                account_id: str_at(&v, "/account").unwrap_or("").to_string(),
                region,
                event_arn: str_at(&v, "/detail/eventArn").unwrap_or("").to_string(),
                observed_at: str_at(&v, "/time").and_then(parse_time),
            })
        }
        _ => Err(IntakeError::Unsupported { event_source: source, detail_type }),
    }
}

/// What to do about one user of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start (or join) the rotation.
    Rotate { rotation_id: String, finding: Finding, user: String },
    /// Nothing to do, and why (logged).
    Ignore { finding_id: String, reason: String },
    /// An IAM user with a failing finding and no configured rotation.
    Unmatched { finding_id: String, account_id: String, user: String },
    /// A SCIM token is expiring: start (or join) its rotation.
    Expiring { rotation_id: String, event_arn: String, observed_at: Option<Millis> },
}

/// The rotation configured for an IAM user in an account, if any (its
/// source says whether it covers the user: [`crate::connectors::SourceSpec::covers`]).
pub fn match_user<'a>(rotations: &'a [RotationConfig], account: &str, user: &str) -> Option<&'a RotationConfig> {
    rotations.iter().find(|r| r.source.covers(&Subject::IamUser { account, user }))
}

/// The SCIM token rotations an expiry notice of `account` in `region` is about.
pub fn match_scim<'a>(rotations: &'a [RotationConfig], account: &str, region: &str) -> Vec<&'a RotationConfig> {
    rotations.iter().filter(|r| r.source.covers(&Subject::ScimTokenExpiry { account, region })).collect()
}

/// Whether an imported finding is a failing IAM.3 finding keyturn acts on.
pub fn actionable(f: &Finding) -> Result<(), String> {
    if f.control.as_deref() != Some(IAM3) {
        return Err(format!("control {} is not IAM.3", f.control.as_deref().unwrap_or("(none)")));
    }
    if f.record_state != "ACTIVE" {
        return Err(format!("record state {} is not ACTIVE", f.record_state));
    }
    if f.compliance_status.as_deref() != Some("FAILED") {
        return Err(format!("compliance status {} is not FAILED", f.compliance_status.as_deref().unwrap_or("(none)")));
    }
    Ok(())
}

/// Decide, for every finding and IAM user in an event, what to do.
pub fn decide(event: &Event, rotations: &[RotationConfig]) -> Vec<Decision> {
    let (findings, check) = match event {
        Event::FindingsImported(f) => (f, true),
        Event::CustomAction { findings, .. } => (findings, false),
        Event::ScimTokenExpiry { account_id, region, event_arn, observed_at } => {
            let matched = match_scim(rotations, account_id, region);
            if matched.is_empty() {
                return vec![Decision::Ignore {
                    finding_id: event_arn.clone(),
                    reason: format!("SCIM token expiry notice for account {account_id} in {region}, and no rotation of that SCIM token is configured"),
                }];
            }
            return matched
                .into_iter()
                .map(|r| Decision::Expiring { rotation_id: r.id.clone(), event_arn: event_arn.clone(), observed_at: *observed_at })
                .collect();
        }
    };
    let mut out = Vec::new();
    for f in findings {
        if check {
            if let Err(reason) = actionable(f) {
                out.push(Decision::Ignore { finding_id: f.id.clone(), reason });
                continue;
            }
        }
        if f.users.is_empty() {
            out.push(Decision::Ignore { finding_id: f.id.clone(), reason: "no AwsIamUser resource in the finding".into() });
        }
        for (account, user) in &f.users {
            match match_user(rotations, account, user) {
                Some(r) => out.push(Decision::Rotate { rotation_id: r.id.clone(), finding: f.clone(), user: user.clone() }),
                None => out.push(Decision::Unmatched { finding_id: f.id.clone(), account_id: account.clone(), user: user.clone() }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
