//! Triggers: EventBridge events arriving on the intake queue, turned into
//! rotation requests.
//!
//! Pure parsing and matching live here (no I/O, tested in `intake/tests.rs`);
//! the engine's intake handler (`triggers.rs`, `Engine::handle_intake`) does
//! the I/O: dedupe against the table, start sagas, report unmatched users,
//! update findings.
//!
//! Events understood:
//! * `Security Hub Findings - Imported` (source `aws.securityhub`, Security
//!   Hub CSPM, findings in ASFF): acted on for control IAM.3 only, and only
//!   with `RecordState: ACTIVE`, `Compliance.Status: FAILED` and a workflow
//!   an operator did not set to `SUPPRESSED`. IAM.3 is recognised in every
//!   form Security Hub CSPM writes it (see [`Iam3Field`]): consolidated
//!   control findings, legacy per-standard findings of FSBP (and NIST) and of
//!   every CIS AWS Foundations Benchmark version Security Hub CSPM offers, and
//!   the AWS Config rule behind the control;
//! * `Findings Imported V2` (source `aws.securityhub`, the new Security Hub,
//!   one finding per event in OCSF): acted on exactly like the ASFF ones, for
//!   `compliance.control` IAM.3, a failed compliance check and a finding that
//!   is neither suppressed, resolved, archived nor closed (see
//!   [`parse_ocsf_finding`] for the fields and where they were checked);
//! * `Security Hub Findings - Custom Action`: an operator chose "Rotate with
//!   keyturn" on findings; every IAM user resource in them is acted on;
//! * `AWS Health Event` whose `eventTypeCode` a registered source covers
//!   ([`crate::connectors::SourceEntry::subjects`], e.g. a credential's
//!   expiry notice): starts the rotations whose source covers the event's
//!   account and region (AWS repeats such notices: a saga already waiting on
//!   a person simply answers the repeats).
//!
//! Anything else — not JSON, another source or detail-type, missing fields —
//! is an [`IntakeError`] and goes to the intake DLQ with its reason.
//!
//! A finding is recognised only by the structured fields Security Hub fills
//! for its controls, never by free text: a title, description or remediation
//! text that mentions IAM.3 (a third-party product's finding, another
//! control's remediation notes) starts nothing. The numbers CIS uses are
//! ambiguous on their own — `1.4` and `1.14` are other checks in other CIS
//! versions and in other standards — so a CIS number counts only together
//! with the CIS `GeneratorId` of the version that gives it that meaning.

mod asff;
mod decide;
mod health;
mod ocsf;
mod request;

use serde_json::Value;

use crate::connectors::check::{one_line, valid_iam_name};
use crate::connectors::{subject_kind, SubjectKind};
use crate::saga::{FindingKind, FindingRef, Millis};
use asff::parse_findings;
pub use asff::{cis_generator, CisIam3, CIS_IAM3, IAM3_CONFIG_RULE_PREFIX, IAM3_DEFAULT_MAX_AGE_DAYS};
pub use decide::{actionable, check_served, decide, match_notice, match_user, Decision};
use health::parse_exposed;
pub use health::{is_access_key_id, KEY_EXPOSED};
use ocsf::parse_ocsf_findings;
pub use ocsf::{ocsf_status, parse_ocsf_finding};
pub use request::{parse_request, sender_allowed, EventOrigin, RequestTarget, RotationRequest, REQUEST_DETAIL_TYPE, REQUEST_SCHEMA, REQUEST_SOURCE};

pub const IAM3: &str = "IAM.3";

/// The [`Subject::kind`](crate::connectors::Subject) of a finding's IAM
/// user: its ASFF resource type. A source that covers such users registers it.
pub const IAM_USER: &str = "AwsIamUser";

/// Detail-type of Security Hub CSPM's imported findings (ASFF).
pub const IMPORTED: &str = "Security Hub Findings - Imported";
/// Detail-type of the new Security Hub's imported findings (OCSF).
pub const IMPORTED_V2: &str = "Findings Imported V2";

/// Which Security Hub a finding came from, which is also which API updates
/// it: Security Hub CSPM's ASFF findings go back through
/// `BatchUpdateFindings`, the new Security Hub's OCSF findings through
/// `BatchUpdateFindingsV2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Asff,
    Ocsf,
}

/// The field that identified a finding as control IAM.3 — logged, shown by
/// `plan`, and the column "field matched" of README's Triggers table.
///
/// Exactly one is reported, the first that applies in this order (an
/// explicit control id elsewhere in the finding stops the later, weaker
/// ones):
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iam3Field {
    /// `Compliance.SecurityControlId: IAM.3` — consolidated control findings,
    /// and (in AWS's current samples) per-standard ones too.
    SecurityControlId,
    /// `ProductFields.ControlId: IAM.3` — legacy per-standard findings of the
    /// FSBP standard (and NIST SP 800-53, which uses the same ids).
    ControlId,
    /// A CIS AWS Foundations Benchmark legacy finding: the version's CIS
    /// `GeneratorId` *and* its number in `ProductFields` (see [`CIS_IAM3`]).
    Cis(CisIam3),
    /// `GeneratorId` ending in `/IAM.3` (`security-control/IAM.3`,
    /// `aws-foundational-security-best-practices/v/1.0.0/IAM.3`, …) with no
    /// control id field at all.
    GeneratorId,
    /// Nothing names a control, but `ProductFields` name Security Hub's
    /// `access-keys-rotated` AWS Config rule ([`IAM3_CONFIG_RULE_PREFIX`]).
    ConfigRule,
    /// OCSF `compliance.control: IAM.3` (the new Security Hub).
    OcsfControl,
}

impl std::fmt::Display for Iam3Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Iam3Field::SecurityControlId => f.write_str("Compliance.SecurityControlId"),
            Iam3Field::ControlId => f.write_str("ProductFields.ControlId"),
            Iam3Field::Cis(c) => write!(f, "CIS v{} {} (GeneratorId + ProductFields.{})", c.version, c.number, c.number_field()),
            Iam3Field::GeneratorId => f.write_str("GeneratorId"),
            Iam3Field::ConfigRule => f.write_str("ProductFields.RelatedAWSResources (AWS Config rule)"),
            Iam3Field::OcsfControl => f.write_str("compliance.control"),
        }
    }
}

/// A Security Hub finding (ASFF or OCSF), reduced to what keyturn needs to
/// decide and, later, to update it where it lives.
///
/// Organisation-wide deployments receive findings of many accounts and
/// regions on one bus (the delegated administrator's, in the aggregation
/// region), so a finding carries its own account and region: the account
/// picks the rotation (and, later, the member role to assume), the region is
/// where its update is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub format: Format,
    /// ASFF `Id`; OCSF `finding_info.uid` (`FindingInfoUid` of `BatchUpdateFindingsV2`).
    pub id: String,
    /// ASFF `ProductArn`; OCSF `metadata.product.uid` (`MetadataProductUid`).
    pub product_arn: String,
    /// ASFF `AwsAccountId`; OCSF `cloud.account.uid` (`CloudAccountUid`).
    pub account_id: String,
    /// The region the finding came from: ASFF `Region` / OCSF
    /// `cloud.region`, else the event's `region`. Finding updates go there.
    pub region: String,
    /// The control, as far as the finding names one: `IAM.3` whenever
    /// [`Finding::iam3`] is set, else the id it carries (for the log line
    /// saying why it was ignored).
    pub control: Option<String>,
    /// How the finding was recognised as IAM.3; `None`: it is not.
    pub iam3: Option<Iam3Field>,
    /// Why the finding is not open (`None`: it is): ASFF `RecordState` other
    /// than `ACTIVE` or workflow `SUPPRESSED`; OCSF activity `Close` or
    /// status Suppressed, Resolved or Archived.
    pub closed: Option<String>,
    /// The compliance result as written (ASFF `FAILED`, OCSF `Fail` or the
    /// `status_id`), for messages.
    pub compliance_status: Option<String>,
    /// The control check failed for the resource.
    pub failed: bool,
    /// `FirstObservedAt`, else `CreatedAt` (OCSF: `finding_info.first_seen_time_dt`,
    /// else `created_time_dt`). Informational only: Security Hub keeps one
    /// finding per control and resource, so a key that fails again months
    /// after a rotation comes back with its first `FirstObservedAt`.
    pub observed_at: Option<Millis>,
    /// The control's `maxAccessKeyAge` parameter in days (ASFF
    /// `Compliance.SecurityControlParameters`, OCSF `compliance.control_parameters`),
    /// when the finding carries it.
    pub max_key_age_days: Option<u64>,
    /// IAM users among the finding's resources: (account, user name).
    pub users: Vec<(String, String)>,
}

impl Finding {
    /// What a saga keeps to update this finding when it starts and ends:
    /// the API its Security Hub uses, its region and identifiers.
    pub fn reference(&self) -> FindingRef {
        FindingRef {
            id: self.id.clone(),
            product_arn: self.product_arn.clone(),
            kind: match self.format {
                Format::Asff => FindingKind::V1,
                Format::Ocsf => FindingKind::V2,
            },
            region: Some(self.region.clone()).filter(|r| !r.is_empty()),
            account_id: Some(self.account_id.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A rotation request (the request API), on the queue or as a custom event.
    Request(RotationRequest),
    /// AWS Health `AWS_RISK_CREDENTIALS_EXPOSED`: access keys found exposed.
    KeyExposed {
        account_id: String,
        event_arn: String,
        /// Access key ids among `detail.affectedEntities[].entityValue`.
        key_ids: Vec<String>,
        /// IAM users named there instead (a user ARN): (account, user name).
        users: Vec<(String, String)>,
    },
    /// `Security Hub Findings - Imported` (ASFF) or `Findings Imported V2`
    /// (OCSF); [`Finding::format`] tells which.
    FindingsImported(Vec<Finding>),
    CustomAction {
        action_name: String,
        findings: Vec<Finding>,
    },
    /// An AWS Health notice about a credential (e.g. its expiry), of a kind
    /// a registered source covers.
    Notice {
        /// The notice's `eventTypeCode`, as a source registered it.
        kind: &'static SubjectKind,
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
    /// A request API message that does not follow its schema. The reason
    /// names the field and the rule, never the value.
    #[error("invalid rotation request: {0}")]
    InvalidRequest(String),
    /// An IAM user name that IAM itself would refuse: never matched, never
    /// logged as is (the reason says where, not what).
    #[error("invalid IAM user name: {0}")]
    InvalidName(String),
    /// The message names more users or keys than one message may
    /// ([`MAX_ITEMS`]).
    #[error("too many items: {0}")]
    TooMany(String),
    /// An AWS event about an account keyturn does not serve.
    #[error("event for an account keyturn does not serve: {0}")]
    ForeignAccount(String),
    /// A request from a sender `[requests] allowed_senders` does not name.
    #[error("sender not allowed: {0}")]
    SenderNotAllowed(String),
}

/// At most this many IAM users (findings) or access keys and users
/// (exposure events) are acted on per intake message; the message that
/// names more is acted on for the first [`MAX_ITEMS`] and then put on the
/// intake DLQ with the count, for a person to look at the rest.
pub const MAX_ITEMS: usize = 20;

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// A required field; refused when empty or when it holds control
/// characters (it would split a log line or a notice's subject).
fn need<'a>(v: &'a Value, ptr: &str, what: &str) -> Result<&'a str, IntakeError> {
    let field = ptr.trim_start_matches('/').replace('/', ".");
    let s = str_at(v, ptr).filter(|s| !s.is_empty()).ok_or_else(|| IntakeError::Missing(format!("{what} has no {field}")))?;
    if s.chars().any(char::is_control) {
        return Err(IntakeError::Missing(format!("{what}: {field} contains control characters")));
    }
    Ok(s)
}

/// An optional field for messages and logs: control characters replaced.
fn text_at(v: &Value, ptr: &str) -> Option<String> {
    str_at(v, ptr).map(|s| one_line(s, 2048))
}

fn parse_time(s: &str) -> Option<Millis> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime).ok().and_then(|d| d.to_millis().ok()).map(|m| m.max(0) as u64)
}

/// `arn:aws:iam::123456789012:user/path/name` → (account, name).
pub fn parse_user_arn(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.splitn(6, ':');
    let (arn_lit, _partition, service, _region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if arn_lit != "arn" || service != "iam" || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let name = resource.strip_prefix("user/")?.rsplit('/').next()?;
    valid_iam_name(name).then(|| (account.to_string(), name.to_string()))
}

/// Whether `s` looks like an IAM user ARN at all (`arn:…:iam::…:user/…`),
/// valid or not: one that [`parse_user_arn`] refuses is a bad name, not
/// another kind of resource.
fn looks_like_user_arn(s: &str) -> bool {
    s.starts_with("arn:") && s.contains(":iam:") && s.contains(":user/")
}

/// `(account, user)` from a user ARN, or the reason it is refused.
fn user_from_arn(arn: &str, what: &str) -> Result<Option<(String, String)>, IntakeError> {
    match parse_user_arn(arn) {
        Some(pair) => Ok(Some(pair)),
        None if looks_like_user_arn(arn) => Err(IntakeError::InvalidName(format!(
            "{what}: a user ARN whose account is not 12 digits or whose name is not 1-64 characters of letters, digits and +=,.@_-"
        ))),
        None => Ok(None),
    }
}

fn check_name(name: &str, what: &str) -> Result<(), IntakeError> {
    if valid_iam_name(name) {
        Ok(())
    } else {
        Err(IntakeError::InvalidName(format!("{what}: the user name is not 1-64 characters of letters, digits and +=,.@_-")))
    }
}

/// The registered kind of an AWS Health notice `code`: a subject kind a
/// source covers that names a trigger (a finding's resource type does not).
fn notice_kind(code: &str) -> Option<&'static SubjectKind> {
    subject_kind(code).filter(|k| !k.trigger.is_empty())
}

/// Parse one EventBridge event as delivered to SQS.
pub fn parse(body: &str) -> Result<Event, IntakeError> {
    parse_message(body).map(|(e, _)| e)
}

/// Parse one intake message: the event, and its EventBridge envelope's
/// `account` and `source` (`None` for a bare request document).
pub fn parse_message(body: &str) -> Result<(Event, Option<EventOrigin>), IntakeError> {
    let v: Value = serde_json::from_str(body).map_err(|e| IntakeError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(IntakeError::Missing("event is not a JSON object".into()));
    }
    if v.get("schema").is_some() && v.get("detail-type").is_none() {
        return parse_request(&v).map(|r| (Event::Request(r), None));
    }
    let origin = EventOrigin { account: str_at(&v, "/account").unwrap_or("").to_string(), source: str_at(&v, "/source").unwrap_or("").to_string() };
    parse_event(&v).map(|e| (e, Some(origin)))
}

fn parse_event(v: &Value) -> Result<Event, IntakeError> {
    let v = v.clone();
    let source = str_at(&v, "/source").unwrap_or("").to_string();
    let detail_type = str_at(&v, "/detail-type").unwrap_or("").to_string();
    match (source.as_str(), detail_type.as_str()) {
        (REQUEST_SOURCE, REQUEST_DETAIL_TYPE) => {
            let mut r = parse_request(v.get("detail").unwrap_or(&Value::Null))?;
            r.event = Some(EventOrigin { account: str_at(&v, "/account").unwrap_or("").to_string(), source: source.clone() });
            Ok(Event::Request(r))
        }
        ("aws.health", "AWS Health Event") if str_at(&v, "/detail/eventTypeCode") == Some(KEY_EXPOSED) => parse_exposed(&v),
        ("aws.securityhub", IMPORTED) => Ok(Event::FindingsImported(parse_findings(&v)?)),
        ("aws.securityhub", IMPORTED_V2) => Ok(Event::FindingsImported(parse_ocsf_findings(&v)?)),
        ("aws.securityhub", "Security Hub Findings - Custom Action") => {
            Ok(Event::CustomAction { action_name: text_at(&v, "/detail/actionName").unwrap_or_default(), findings: parse_findings(&v)? })
        }
        ("aws.health", "AWS Health Event") if str_at(&v, "/detail/eventTypeCode").and_then(notice_kind).is_some() => {
            let kind = str_at(&v, "/detail/eventTypeCode").and_then(notice_kind).expect("checked by the guard");
            let region = one_line(str_at(&v, "/detail/eventRegion").or_else(|| str_at(&v, "/region")).unwrap_or(""), 64);
            Ok(Event::Notice {
                kind,
                account_id: one_line(str_at(&v, "/account").unwrap_or(""), 20),
                region,
                event_arn: text_at(&v, "/detail/eventArn").unwrap_or_default(),
                observed_at: str_at(&v, "/time").and_then(parse_time),
            })
        }
        _ => Err(IntakeError::Unsupported { event_source: source, detail_type }),
    }
}

/// How many IAM users (findings) or keys and users (exposures) an event
/// names.
pub fn item_count(event: &Event) -> usize {
    match event {
        Event::FindingsImported(fs) | Event::CustomAction { findings: fs, .. } => fs.iter().map(|f| f.users.len().max(1)).sum(),
        Event::KeyExposed { key_ids, users, .. } => key_ids.len() + users.len(),
        Event::Request(_) | Event::Notice { .. } => 1,
    }
}

/// Keep the first `max` items of an event (see [`MAX_ITEMS`]); answers the
/// reason when something was left out. Findings are kept whole, in order,
/// while they fit (a finding without users counts as one item).
pub fn bound(event: &mut Event, max: usize) -> Option<String> {
    let total = item_count(event);
    if total <= max {
        return None;
    }
    match event {
        Event::FindingsImported(fs) | Event::CustomAction { findings: fs, .. } => {
            let mut budget = max;
            fs.retain_mut(|f| {
                let n = f.users.len().max(1);
                if budget == 0 {
                    return false;
                }
                if n > budget {
                    f.users.truncate(budget);
                    budget = 0;
                } else {
                    budget -= n;
                }
                true
            });
        }
        Event::KeyExposed { key_ids, users, .. } => {
            key_ids.truncate(max);
            users.truncate(max - key_ids.len());
        }
        Event::Request(_) | Event::Notice { .. } => return None,
    }
    Some(format!("the message names {total} IAM users or access keys; keyturn acted on the first {max} (at most {max} per message) and left the rest"))
}

#[cfg(test)]
mod tests;
