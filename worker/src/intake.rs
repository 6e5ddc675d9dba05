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
//! * `AWS Health Event` with `AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION`:
//!   starts the `scim_token` rotation of the event's account and region (AWS
//!   repeats the notice weekly from 90 days before expiry, then more often:
//!   a saga already waiting on a person simply answers the repeats).
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

use serde_json::Value;

use crate::config::RotationConfig;
use crate::connectors::check::{is_account_id, one_line, valid_iam_name};
use crate::connectors::Subject;
use crate::saga::{FindingKind, FindingRef, Millis};

pub const IAM3: &str = "IAM.3";
pub const SCIM_EXPIRY: &str = "AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION";

/// Detail-type of Security Hub CSPM's imported findings (ASFF).
pub const IMPORTED: &str = "Security Hub Findings - Imported";
/// Detail-type of the new Security Hub's imported findings (OCSF).
pub const IMPORTED_V2: &str = "Findings Imported V2";

/// The number each CIS AWS Foundations Benchmark version that Security Hub
/// CSPM offers (5.0.0, 3.0.0, 1.4.0, 1.2.0) gives the check behind IAM.3,
/// and where a legacy per-standard finding of that version writes it.
///
/// Source: AWS Security Hub user guide, "Security Hub CSPM controls for IAM",
/// [IAM.3] "Related requirements: CIS AWS Foundations Benchmark v5.0.0/1.13,
/// v3.0.0/1.14, v1.4.0/1.14, v1.2.0/1.4"; the page "CIS AWS Foundations
/// Benchmark" lists exactly these four versions. The field layout is from
/// the user guide's "Samples of control findings": v1.2.0 findings carry
/// `GeneratorId: arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/<n>`
/// and `ProductFields.RuleId: <n>`; v1.4.0, v3.0.0 and v5.0.0 findings carry
/// `GeneratorId: cis-aws-foundations-benchmark/v/<version>/<n>` and
/// `ProductFields.ControlId: <n>`. (A real v1.2.0 rule 1.4 finding of that
/// shape is in aws-solutions/automated-security-response-on-aws,
/// `simtest/simdata/cis14.json`.)
pub const CIS_IAM3: [CisIam3; 4] = [
    CisIam3 { version: "1.2.0", number: "1.4", ruleset: true },
    CisIam3 { version: "1.4.0", number: "1.14", ruleset: false },
    CisIam3 { version: "3.0.0", number: "1.14", ruleset: false },
    CisIam3 { version: "5.0.0", number: "1.13", ruleset: false },
];

/// One CIS version's name for IAM.3 (see [`CIS_IAM3`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CisIam3 {
    pub version: &'static str,
    pub number: &'static str,
    /// v1.2.0's form: a `ruleset/…/rule/<n>` ARN as `GeneratorId` and the
    /// number in `ProductFields.RuleId` (later versions: `ControlId`).
    pub ruleset: bool,
}

impl CisIam3 {
    /// The `GeneratorId` a finding of this version carries (partition `aws`;
    /// the ARN form of v1.2.0 is matched in any partition).
    pub fn generator_id(&self) -> String {
        if self.ruleset {
            format!("arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/{}/rule/{}", self.version, self.number)
        } else {
            format!("cis-aws-foundations-benchmark/v/{}/{}", self.version, self.number)
        }
    }

    /// The `ProductFields` key holding the number.
    pub fn number_field(&self) -> &'static str {
        if self.ruleset {
            "RuleId"
        } else {
            "ControlId"
        }
    }
}

/// The prefix Security Hub CSPM gives its copy of the AWS Config managed rule
/// `access-keys-rotated` (the check behind IAM.3), followed by a random
/// suffix, as reported in `ProductFields."RelatedAWSResources:<n>/name"` with
/// `"RelatedAWSResources:<n>/type": "AWS::Config::ConfigRule"`. Source: the
/// user guide's "Samples of control findings" (the key layout), and the real
/// FSBP IAM.3 and CIS 1.2.0 rule 1.4 findings in
/// aws-solutions/automated-security-response-on-aws `simtest/simdata/`
/// (`securityhub-access-keys-rotated-3dd4f050`, `…-993fa106`).
pub const IAM3_CONFIG_RULE_PREFIX: &str = "securityhub-access-keys-rotated-";

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

/// The request API's schema name and version (`schemas/rotation-request.v1.json`).
pub const REQUEST_SCHEMA: &str = "keyturn.rotation-request.v1";
/// A request sent as an EventBridge custom event: its `source` ...
pub const REQUEST_SOURCE: &str = "keyturn.requests";
/// ... and `detail-type`; `detail` is the request document.
pub const REQUEST_DETAIL_TYPE: &str = "Rotation Request";
/// AWS Health's event type for an access key found exposed in public.
pub const KEY_EXPOSED: &str = "AWS_RISK_CREDENTIALS_EXPOSED";

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

/// A CIS `GeneratorId` → (version, number, ruleset form?):
/// `arn:<partition>:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.4`
/// → ("1.2.0", "1.4", true); `cis-aws-foundations-benchmark/v/5.0.0/1.13` →
/// ("5.0.0", "1.13", false). Anything else → `None`.
pub fn cis_generator(g: &str) -> Option<(&str, &str, bool)> {
    const CIS: &str = "cis-aws-foundations-benchmark/v/";
    if let Some(rest) = g.strip_prefix(CIS) {
        let (version, number) = rest.split_once('/')?;
        return (!version.is_empty() && !number.is_empty() && !number.contains('/')).then_some((version, number, false));
    }
    let (head, rest) = g.split_once(":ruleset/")?;
    let mut h = head.split(':');
    let ok_head = h.next() == Some("arn") && h.next().is_some_and(|p| p.starts_with("aws")) && h.next() == Some("securityhub");
    let (version, number) = rest.strip_prefix(CIS)?.split_once("/rule/")?;
    (ok_head && !version.is_empty() && !number.is_empty() && !number.contains('/')).then_some((version, number, true))
}

/// `ProductFields` values by key (keys contain `/` and `:`, so no JSON pointer).
fn product_field<'a>(f: &'a Value, key: &str) -> Option<&'a str> {
    f.get("ProductFields")?.get(key)?.as_str()
}

/// Whether `ProductFields` name Security Hub's `access-keys-rotated` AWS
/// Config rule in any `RelatedAWSResources:<n>/name` (whose `…/type`, when
/// present, must be `AWS::Config::ConfigRule`).
fn names_iam3_config_rule(f: &Value) -> bool {
    let Some(fields) = f.get("ProductFields").and_then(Value::as_object) else { return false };
    fields.iter().any(|(k, v)| {
        let Some(n) = k.strip_prefix("RelatedAWSResources:").and_then(|r| r.strip_suffix("/name")) else { return false };
        let kind = fields.get(&format!("RelatedAWSResources:{n}/type")).and_then(Value::as_str);
        v.as_str().is_some_and(|name| name.starts_with(IAM3_CONFIG_RULE_PREFIX)) && kind.is_none_or(|t| t == "AWS::Config::ConfigRule")
    })
}

/// Which control an ASFF finding is for, and whether (and how) it is IAM.3.
/// See [`Iam3Field`] for the order; only structured fields are read.
fn identify_asff(f: &Value) -> (Option<String>, Option<Iam3Field>) {
    let iam3 = |field| (Some(IAM3.to_string()), Some(field));
    if let Some(id) = str_at(f, "/Compliance/SecurityControlId") {
        return if id == IAM3 { iam3(Iam3Field::SecurityControlId) } else { (Some(id.to_string()), None) };
    }
    let generator = str_at(f, "/GeneratorId");
    if let Some((version, number, ruleset)) = generator.and_then(cis_generator) {
        let hit = CIS_IAM3
            .iter()
            .find(|c| c.version == version && c.number == number && c.ruleset == ruleset && product_field(f, c.number_field()) == Some(number));
        return match hit {
            Some(c) => iam3(Iam3Field::Cis(*c)),
            None => (Some(format!("CIS v{version} {number}")), None),
        };
    }
    match product_field(f, "ControlId") {
        Some(IAM3) => return iam3(Iam3Field::ControlId),
        Some(other) => return (Some(other.to_string()), None),
        None => {}
    }
    if generator.is_some_and(|g| g.ends_with("/IAM.3")) {
        return iam3(Iam3Field::GeneratorId);
    }
    if product_field(f, "RuleId").is_none() && names_iam3_config_rule(f) {
        return iam3(Iam3Field::ConfigRule);
    }
    (generator.and_then(|g| g.rsplit('/').next()).filter(|s| !s.is_empty()).map(str::to_string), None)
}

fn parse_finding(f: &Value, i: usize, event_region: &str) -> Result<Finding, IntakeError> {
    let what = format!("finding {i}");
    let id = need(f, "/Id", &what)?.to_string();
    let product_arn = need(f, "/ProductArn", &what)?.to_string();
    let account_id = need(f, "/AwsAccountId", &what)?.to_string();
    let record_state = need(f, "/RecordState", &what)?;
    let region = one_line(str_at(f, "/Region").filter(|r| !r.is_empty()).unwrap_or(event_region), 64);
    let (control, iam3) = identify_asff(f);
    let control = control.map(|c| one_line(&c, 128));
    let closed = if record_state != "ACTIVE" {
        Some(format!("record state {record_state} is not ACTIVE"))
    } else if str_at(f, "/Workflow/Status") == Some("SUPPRESSED") {
        Some("workflow status SUPPRESSED (an operator suppressed it)".to_string())
    } else {
        None
    };
    let resources = f.get("Resources").and_then(Value::as_array).ok_or_else(|| IntakeError::Missing(format!("{what} has no Resources")))?;
    let mut users = Vec::new();
    for r in resources {
        if str_at(r, "/Type") != Some("AwsIamUser") {
            continue;
        }
        let from_arn = match str_at(r, "/Id") {
            Some(id) => user_from_arn(id, &what)?,
            None => None,
        };
        let name = str_at(r, "/Details/AwsIamUser/UserName").map(str::to_string).or_else(|| from_arn.as_ref().map(|(_, n)| n.clone()));
        let account = from_arn.map(|(a, _)| a).unwrap_or_else(|| account_id.clone());
        match name {
            Some(n) => {
                check_name(&n, &what)?;
                users.push((account, n))
            }
            None => return Err(IntakeError::Missing(format!("{what}: AwsIamUser resource without a user name or user ARN"))),
        }
    }
    let compliance_status = str_at(f, "/Compliance/Status").map(str::to_string);
    Ok(Finding {
        format: Format::Asff,
        id,
        product_arn,
        account_id,
        region,
        control,
        iam3,
        closed,
        failed: compliance_status.as_deref() == Some("FAILED"),
        compliance_status,
        observed_at: str_at(f, "/FirstObservedAt").or_else(|| str_at(f, "/CreatedAt")).and_then(parse_time),
        max_key_age_days: max_key_age_days(f),
        users,
    })
}

/// IAM.3's default: keys older than 90 days fail the control.
pub const IAM3_DEFAULT_MAX_AGE_DAYS: u64 = 90;

/// A `maxAccessKeyAge` parameter value in days; nonsense is ignored, not trusted.
fn days_param(s: &str) -> Option<u64> {
    s.trim().parse().ok().filter(|d| (1..=36_500).contains(d))
}

/// `Compliance.SecurityControlParameters: [{"Name": "maxAccessKeyAge", "Value": ["90"]}]`.
fn max_key_age_days(f: &Value) -> Option<u64> {
    f.pointer("/Compliance/SecurityControlParameters")?
        .as_array()?
        .iter()
        .find(|p| str_at(p, "/Name") == Some("maxAccessKeyAge"))?
        .get("Value")?
        .as_array()?
        .first()?
        .as_str()
        .and_then(days_param)
}

/// OCSF's equivalent: `compliance.control_parameters`, a list of OCSF
/// key-value objects (`name`, and `value` or `values[]`; OCSF 1.4+ schema,
/// "Compliance" object). Unverified: no public Security Hub sample shows a
/// control finding with `control_parameters`; IAM.3's parameter is "90 (not
/// customizable)" per the controls reference, so its absence changes nothing.
fn ocsf_max_key_age_days(f: &Value) -> Option<u64> {
    let p = f.pointer("/compliance/control_parameters")?.as_array()?.iter().find(|p| str_at(p, "/name") == Some("maxAccessKeyAge"))?;
    str_at(p, "/value").or_else(|| p.pointer("/values/0").and_then(Value::as_str)).and_then(days_param)
}

/// OCSF finding `status_id` values (OCSF 1.6 Finding class; the same set,
/// 0–5 and 99, is what `BatchUpdateFindingsV2` accepts as `StatusId` in the
/// botocore model `securityhub/2018-10-26/service-2.json`).
pub mod ocsf_status {
    pub const NEW: i64 = 1;
    pub const IN_PROGRESS: i64 = 2;
    pub const SUPPRESSED: i64 = 3;
    pub const RESOLVED: i64 = 4;
    pub const ARCHIVED: i64 = 5;
}

/// OCSF `compliance.status_id` Fail (OCSF "Compliance" object: 0 Unknown,
/// 1 Pass, 2 Warning, 3 Fail, 99 Other).
const OCSF_COMPLIANCE_FAIL: i64 = 3;
/// OCSF finding `activity_id` Close. Security Hub treats findings with
/// `activity_name != Close` as active (user guide, "OCSF findings in
/// Security Hub").
const OCSF_ACTIVITY_CLOSE: i64 = 3;

/// Why an OCSF finding is not open, if it is not.
fn ocsf_closed(f: &Value) -> Option<String> {
    let activity = f.get("activity_id").and_then(Value::as_i64);
    if activity == Some(OCSF_ACTIVITY_CLOSE) || (activity.is_none() && str_at(f, "/activity_name") == Some("Close")) {
        return Some("activity Close (Security Hub closed the finding)".into());
    }
    let status = str_at(f, "/status").unwrap_or("");
    match f.get("status_id").and_then(Value::as_i64) {
        Some(id @ (ocsf_status::SUPPRESSED | ocsf_status::RESOLVED | ocsf_status::ARCHIVED)) => {
            Some(format!("status {} (status_id {id}) is not open", if status.is_empty() { "?" } else { status }))
        }
        Some(_) => None,
        None => ["Suppressed", "Resolved", "Archived"].iter().any(|s| status.eq_ignore_ascii_case(s)).then(|| format!("status {status} is not open")),
    }
}

/// The resource types an OCSF finding uses for an IAM user: CSPM-originated
/// findings name resources by their CloudFormation / AWS Config type
/// (`AWS::IAM::User`, as the IAM.3 controls reference lists it); ASFF's
/// `AwsIamUser` is accepted too, since findings mapped from ASFF by other
/// tools (e.g. aws-solutions/automated-security-response-on-aws test data)
/// keep it.
const OCSF_IAM_USER_TYPES: [&str; 2] = ["AWS::IAM::User", "AwsIamUser"];

/// One OCSF finding of a `Findings Imported V2` event.
///
/// Field names, and the source each was checked against:
/// * `finding_info.uid`, `metadata.product.uid`, `cloud.account.uid` — the
///   three members of `OcsfFindingIdentifier` (`FindingInfoUid`,
///   `MetadataProductUid`, `CloudAccountUid`) in the botocore model
///   `securityhub/2018-10-26/service-2.json` and the API reference page
///   `API_OcsfFindingIdentifier`, whose documentation names these fields;
/// * `cloud.region`, `compliance.control` / `.status` / `.status_id`,
///   `status` / `status_id`, `activity_id`, `resources[].type` / `.uid` /
///   `.uid_alt` / `.name` — the OCSF 1.6 Compliance Finding class (Security
///   Hub uses OCSF 1.6, user guide "Security Hub and OCSF") and the OCSF
///   compliance-finding schema and normaliser of
///   aws-solutions/automated-security-response-on-aws
///   (`source/data-models/schemaTypes.ts`, `findingEventNormalizer.ts`),
///   which reads a consolidated CSPM control finding's ARN in
///   `finding_info.uid` and notes that `uid_alt` usually holds a resource's
///   ARN when `uid` does not;
/// * the envelope (`detail-type: Findings Imported V2`, one finding in
///   `detail.findings[]`) — user guide, "EventBridge event formats" (V2).
///
/// No public sample of an IAM.3 finding in OCSF was found: which of `uid`,
/// `uid_alt` and `name` holds the user ARN or name is therefore read
/// leniently (an ARN in `uid` or `uid_alt`, else `name`).
pub fn parse_ocsf_finding(f: &Value, i: usize, event_region: &str) -> Result<Finding, IntakeError> {
    let what = format!("finding {i}");
    let id = need(f, "/finding_info/uid", &what)?.to_string();
    let product_arn = need(f, "/metadata/product/uid", &what)?.to_string();
    let account_id = need(f, "/cloud/account/uid", &what)?.to_string();
    let region = one_line(str_at(f, "/cloud/region").filter(|r| !r.is_empty()).unwrap_or(event_region), 64);
    let control = text_at(f, "/compliance/control");
    let iam3 = (control.as_deref() == Some(IAM3)).then_some(Iam3Field::OcsfControl);
    let compliance_id = f.pointer("/compliance/status_id").and_then(Value::as_i64);
    let compliance_text = str_at(f, "/compliance/status");
    let failed = match compliance_id {
        Some(id) => id == OCSF_COMPLIANCE_FAIL,
        None => compliance_text.is_some_and(|s| s.eq_ignore_ascii_case("fail")),
    };
    let compliance_status = compliance_text.map(str::to_string).or_else(|| compliance_id.map(|id| format!("status_id {id}")));
    let users = match f.get("resources") {
        Some(Value::Array(resources)) => ocsf_users(resources, &account_id, &what)?,
        // Findings of other classes may carry no resources; an IAM.3 one must.
        None | Some(Value::Null) if iam3.is_none() => Vec::new(),
        _ => return Err(IntakeError::Missing(format!("{what} has no resources"))),
    };
    Ok(Finding {
        format: Format::Ocsf,
        id,
        product_arn,
        account_id,
        region,
        control,
        iam3,
        closed: ocsf_closed(f),
        failed,
        compliance_status,
        observed_at: str_at(f, "/finding_info/first_seen_time_dt").or_else(|| str_at(f, "/finding_info/created_time_dt")).and_then(parse_time),
        max_key_age_days: ocsf_max_key_age_days(f),
        users,
    })
}

fn ocsf_users(resources: &[Value], account_id: &str, what: &str) -> Result<Vec<(String, String)>, IntakeError> {
    let mut users = Vec::new();
    for r in resources {
        if !str_at(r, "/type").is_some_and(|t| OCSF_IAM_USER_TYPES.contains(&t)) {
            continue;
        }
        let uid = match str_at(r, "/uid") {
            Some(u) => user_from_arn(u, what)?,
            None => None,
        };
        let from_arn = match (uid, str_at(r, "/uid_alt")) {
            (Some(pair), _) => Some(pair),
            (None, Some(u)) => user_from_arn(u, what)?,
            (None, None) => None,
        };
        match (from_arn, str_at(r, "/name").filter(|n| !n.is_empty())) {
            (Some(pair), _) => users.push(pair),
            (None, Some(name)) => {
                check_name(name, what)?;
                users.push((account_id.to_string(), name.to_string()))
            }
            (None, None) => return Err(IntakeError::Missing(format!("{what}: AWS::IAM::User resource without a user ARN or name"))),
        }
    }
    Ok(users)
}

fn findings_list(v: &Value) -> Result<&Vec<Value>, IntakeError> {
    let list =
        v.pointer("/detail/findings").and_then(Value::as_array).ok_or_else(|| IntakeError::Missing("detail.findings is missing or not a list".into()))?;
    if list.is_empty() {
        return Err(IntakeError::Missing("detail.findings is empty".into()));
    }
    Ok(list)
}

fn parse_findings(v: &Value) -> Result<Vec<Finding>, IntakeError> {
    let region = str_at(v, "/region").unwrap_or("");
    findings_list(v)?.iter().enumerate().map(|(i, f)| parse_finding(f, i, region)).collect()
}

fn parse_ocsf_findings(v: &Value) -> Result<Vec<Finding>, IntakeError> {
    let region = str_at(v, "/region").unwrap_or("");
    findings_list(v)?.iter().enumerate().map(|(i, f)| parse_ocsf_finding(f, i, region)).collect()
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
        ("aws.health", "AWS Health Event") if str_at(&v, "/detail/eventTypeCode") == Some(SCIM_EXPIRY) => {
            let region = one_line(str_at(&v, "/detail/eventRegion").or_else(|| str_at(&v, "/region")).unwrap_or(""), 64);
            Ok(Event::ScimTokenExpiry {
                account_id: one_line(str_at(&v, "/account").unwrap_or(""), 20),
                region,
                event_arn: text_at(&v, "/detail/eventArn").unwrap_or_default(),
                observed_at: str_at(&v, "/time").and_then(parse_time),
            })
        }
        _ => Err(IntakeError::Unsupported { event_source: source, detail_type }),
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

/// An access key id as AWS writes them: 16 to 128 characters, uppercase
/// letters and digits, starting `AKIA` (long-term user keys) or `ASIA` (temporary).
pub fn is_access_key_id(s: &str) -> bool {
    (16..=128).contains(&s.len()) && (s.starts_with("AKIA") || s.starts_with("ASIA")) && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `AWS_RISK_CREDENTIALS_EXPOSED`: the exposed keys are in
/// `detail.affectedEntities[].entityValue` — an access key id, or (some
/// notices) the IAM user's ARN. Both are read; anything else is ignored.
fn parse_exposed(v: &Value) -> Result<Event, IntakeError> {
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

/// How many IAM users (findings) or keys and users (exposures) an event
/// names.
pub fn item_count(event: &Event) -> usize {
    match event {
        Event::FindingsImported(fs) | Event::CustomAction { findings: fs, .. } => fs.iter().map(|f| f.users.len().max(1)).sum(),
        Event::KeyExposed { key_ids, users, .. } => key_ids.len() + users.len(),
        Event::Request(_) | Event::ScimTokenExpiry { .. } => 1,
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
        Event::Request(_) | Event::ScimTokenExpiry { .. } => return None,
    }
    Some(format!("the message names {total} IAM users or access keys; keyturn acted on the first {max} (at most {max} per message) and left the rest"))
}

/// Whether an AWS event is about an account keyturn serves: `served` is
/// the worker's home account and every account a rotation's source names.
/// AWS Health events are checked by their envelope's `account` (required);
/// an exposure event's user ARNs must be in that same account. Security Hub
/// events by every finding's own account (`AwsAccountId` /
/// `cloud.account.uid`) and every IAM user's account in it, and by the
/// envelope's `account` when it has one (the aggregating account; the
/// emulator the tests use delivers events without it). Requests are not AWS
/// events (their sender is checked by [`sender_allowed`]).
pub fn check_served(event: &Event, origin: Option<&EventOrigin>, served: &[String]) -> Result<(), IntakeError> {
    let is_served = |a: &str| served.iter().any(|s| s == a);
    let findings = match event {
        Event::Request(_) => return Ok(()),
        Event::FindingsImported(fs) | Event::CustomAction { findings: fs, .. } => Some(fs),
        Event::KeyExposed { .. } | Event::ScimTokenExpiry { .. } => None,
    };
    let account = origin.map(|o| o.account.as_str()).unwrap_or("");
    if let Some(fs) = findings {
        if !account.is_empty() && !is_served(account) {
            return Err(IntakeError::ForeignAccount(format!(
                "the event's account {:?} is neither the worker's account nor an account a configured rotation names",
                one_line(account, 20)
            )));
        }
        for (i, f) in fs.iter().enumerate() {
            if let Some(a) = std::iter::once(&f.account_id).chain(f.users.iter().map(|(a, _)| a)).find(|a| !is_served(a)) {
                return Err(IntakeError::ForeignAccount(format!(
                    "finding {i} is about account {:?}, neither the worker's account nor an account a configured rotation names",
                    one_line(a, 20)
                )));
            }
        }
        return Ok(());
    }
    if !is_served(account) {
        return Err(IntakeError::ForeignAccount(format!(
            "the event's account {:?} is neither the worker's account nor an account a configured rotation names",
            one_line(account, 20)
        )));
    }
    if let Event::KeyExposed { account_id, users, .. } = event {
        if account_id != account {
            return Err(IntakeError::ForeignAccount("the exposure names another account than its envelope".into()));
        }
        if let Some((a, _)) = users.iter().find(|(a, _)| a != account_id) {
            return Err(IntakeError::ForeignAccount(format!("the exposure event of account {account_id} names a user ARN of account {a}")));
        }
    }
    Ok(())
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

/// What to do about one user of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start (or join) the rotation.
    Rotate { rotation_id: String, finding: Box<Finding>, user: String },
    /// Nothing to do, and why (logged).
    Ignore { finding_id: String, reason: String },
    /// An IAM user with a failing finding and no configured rotation.
    Unmatched { finding_id: String, account_id: String, user: String },
    /// A SCIM token is expiring: start (or join) its rotation.
    Expiring { rotation_id: String, event_arn: String, observed_at: Option<Millis> },
}

/// The rotation configured for an IAM user in an account, if any (its
/// source says whether it covers the user: [`crate::connectors::SourceSpec::covers`]).
/// `home` is the worker's own account: a rotation that names no account
/// covers only that account's user of that name.
pub fn match_user<'a>(rotations: &'a [RotationConfig], home: &str, account: &str, user: &str) -> Option<&'a RotationConfig> {
    rotations.iter().find(|r| r.source.covers(&Subject::IamUser { account, user, home }))
}

/// The SCIM token rotations an expiry notice of `account` in `region` is about.
pub fn match_scim<'a>(rotations: &'a [RotationConfig], account: &str, region: &str) -> Vec<&'a RotationConfig> {
    rotations.iter().filter(|r| r.source.covers(&Subject::ScimTokenExpiry { account, region })).collect()
}

/// Whether an imported finding is a failing IAM.3 finding keyturn acts on:
/// recognised as IAM.3 ([`Finding::iam3`]), open ([`Finding::closed`]) and
/// failed. The same rule for ASFF and OCSF findings.
pub fn actionable(f: &Finding) -> Result<(), String> {
    if f.iam3.is_none() {
        return Err(format!("control {} is not IAM.3", f.control.as_deref().unwrap_or("(none)")));
    }
    if let Some(why) = &f.closed {
        return Err(why.clone());
    }
    if !f.failed {
        return Err(format!("compliance status {} is not FAILED", f.compliance_status.as_deref().unwrap_or("(none)")));
    }
    Ok(())
}

/// Decide, for every finding and IAM user in an event, what to do. `home`
/// is the worker's own account ([`match_user`]).
pub fn decide(event: &Event, rotations: &[RotationConfig], home: &str) -> Vec<Decision> {
    let (findings, check) = match event {
        // Requests and exposures are matched by the engine (they need the
        // table and IAM): see `triggers.rs`.
        Event::Request(_) | Event::KeyExposed { .. } => return Vec::new(),
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
            out.push(Decision::Ignore { finding_id: f.id.clone(), reason: "no IAM user resource in the finding (AwsIamUser / AWS::IAM::User)".into() });
        }
        for (account, user) in &f.users {
            match match_user(rotations, home, account, user) {
                Some(r) => out.push(Decision::Rotate { rotation_id: r.id.clone(), finding: Box::new(f.clone()), user: user.clone() }),
                None => out.push(Decision::Unmatched { finding_id: f.id.clone(), account_id: account.clone(), user: user.clone() }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
