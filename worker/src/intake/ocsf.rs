//! The new Security Hub's findings in OCSF (`Findings Imported V2`): the
//! same rule as ASFF, read from OCSF's fields.

use serde_json::Value;

use super::asff::{days_param, findings_list};
use super::{check_name, need, parse_time, str_at, text_at, user_from_arn, Finding, Format, Iam3Field, IntakeError, IAM3};
use crate::connectors::check::one_line;

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

pub(super) fn parse_ocsf_findings(v: &Value) -> Result<Vec<Finding>, IntakeError> {
    let region = str_at(v, "/region").unwrap_or("");
    findings_list(v)?.iter().enumerate().map(|(i, f)| parse_ocsf_finding(f, i, region)).collect()
}
