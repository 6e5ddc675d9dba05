//! Security Hub CSPM findings in ASFF: recognising control IAM.3 in each
//! form it is written (see [`super::Iam3Field`]) and reading a finding.

use serde_json::Value;

use super::{check_name, need, parse_time, str_at, user_from_arn, Finding, Format, Iam3Field, IntakeError, IAM3};
use crate::connectors::check::one_line;

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
pub(super) fn days_param(s: &str) -> Option<u64> {
    s.trim().parse().ok().filter(|d| (1..=36_500).contains(d))
}

/// `Compliance.SecurityControlParameters: [{"Name": "maxAccessKeyAge", "Value": ["90"]}]`.
pub(super) fn max_key_age_days(f: &Value) -> Option<u64> {
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

pub(super) fn findings_list(v: &Value) -> Result<&Vec<Value>, IntakeError> {
    let list =
        v.pointer("/detail/findings").and_then(Value::as_array).ok_or_else(|| IntakeError::Missing("detail.findings is missing or not a list".into()))?;
    if list.is_empty() {
        return Err(IntakeError::Missing("detail.findings is empty".into()));
    }
    Ok(list)
}

pub(super) fn parse_findings(v: &Value) -> Result<Vec<Finding>, IntakeError> {
    let region = str_at(v, "/region").unwrap_or("");
    findings_list(v)?.iter().enumerate().map(|(i, f)| parse_finding(f, i, region)).collect()
}
