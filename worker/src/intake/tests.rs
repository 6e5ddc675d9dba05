use super::*;
use crate::config::fixtures::{AWS, SCIM_ROTATION};
use crate::config::{Config, RotationConfig};

const CONSOLIDATED: &str = include_str!("../../../tests/fixtures/securityhub-iam3-consolidated.json");
const LEGACY: &str = include_str!("../../../tests/fixtures/securityhub-iam3-legacy.json");
const CUSTOM: &str = include_str!("../../../tests/fixtures/securityhub-custom-action.json");
const HEALTH: &str = include_str!("../../../tests/fixtures/health-scim-expiry.json");
/// Legacy per-standard findings of each CIS AWS Foundations Benchmark version
/// Security Hub CSPM offers, built from the fields of the user guide's
/// "Samples of control findings" for that version, for IAM.3's number in it
/// (see `CIS_IAM3`). They leave out `Compliance.SecurityControlId`, as
/// findings written before Security Hub added it to per-standard findings do
/// (e.g. the real v1.2.0 rule 1.4 finding in
/// aws-solutions/automated-security-response-on-aws), so that they exercise
/// the CIS fields; `cis_findings_with_a_security_control_id_match_by_it`
/// covers AWS's current samples, which carry it too.
const CIS: [(&str, &str); 4] = [
    ("1.2.0", include_str!("../../../tests/fixtures/securityhub-iam3-cis-1.2.0.json")),
    ("1.4.0", include_str!("../../../tests/fixtures/securityhub-iam3-cis-1.4.0.json")),
    ("3.0.0", include_str!("../../../tests/fixtures/securityhub-iam3-cis-3.0.0.json")),
    ("5.0.0", include_str!("../../../tests/fixtures/securityhub-iam3-cis-5.0.0.json")),
];

/// New Security Hub (OCSF) findings as EventBridge delivers them
/// (`Findings Imported V2`, one finding per event): the same IAM.3 finding
/// failed, passed (Security Hub then also resolves it), suppressed by an
/// operator, archived (closed); and another control on the same user.
const V2_FAILED: &str = include_str!("../../../tests/fixtures/securityhub-v2-iam3-failed.json");
const V2_PASSED: &str = include_str!("../../../tests/fixtures/securityhub-v2-iam3-passed.json");
const V2_SUPPRESSED: &str = include_str!("../../../tests/fixtures/securityhub-v2-iam3-suppressed.json");
const V2_ARCHIVED: &str = include_str!("../../../tests/fixtures/securityhub-v2-iam3-archived.json");
const V2_OTHER: &str = include_str!("../../../tests/fixtures/securityhub-v2-other-control.json");

/// The worker's own account in these tests (moto's default account).
const HOME: &str = "123456789012";

fn rotations() -> Vec<RotationConfig> {
    Config::parse(&format!(
        "{AWS}{}",
        r#"
[[rotation]]
id = "auth0-ses"
source = { kind = "iam_access_key", user_name = "auth0-ses-sender" }
[rotation.target]
kind = "auth0_email_provider"
domain = "example.eu.auth0.com"
client_id = "c"
client_secret = { env = "KEYTURN_X" }
ses_region = "eu-west-1"
[[rotation]]
id = "other-account"
source = { kind = "iam_access_key", user_name = "mailer", account_id = "999999999999" }
[rotation.target]
kind = "auth0_email_provider"
domain = "other.eu.auth0.com"
client_id = "c"
client_secret = { env = "KEYTURN_X" }
ses_region = "eu-west-1"
"#
    ))
    .unwrap()
    .rotations
}

fn edit(body: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    f(&mut v);
    v.to_string()
}

/// The only finding of an imported event.
fn finding(body: &str) -> Finding {
    match parse(body).unwrap() {
        Event::FindingsImported(mut fs) if fs.len() == 1 => fs.remove(0),
        other => panic!("{other:?}"),
    }
}

/// What an event starts: (rotation, finding id) of every `Rotate`, and
/// nothing else may be decided (no ignore, no unmatched).
fn starts(body: &str) -> Vec<(String, String)> {
    decide(&parse(body).unwrap(), &rotations(), HOME)
        .into_iter()
        .map(|d| match d {
            Decision::Rotate { rotation_id, finding, user } => {
                assert_eq!(user, "auth0-ses-sender");
                (rotation_id, finding.id)
            }
            other => panic!("expected only rotations, got {other:?}"),
        })
        .collect()
}

/// The event decides to ignore its one finding, and why.
fn ignored(body: &str) -> String {
    match &decide(&parse(body).unwrap(), &rotations(), HOME)[..] {
        [Decision::Ignore { reason, .. }] => reason.clone(),
        other => panic!("expected one Ignore, got {other:?}"),
    }
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut node = &mut v["detail"]["findings"][0];
    for p in &path[..path.len() - 1] {
        node = &mut node[*p];
    }
    node[path[path.len() - 1]] = value;
}

fn remove(v: &mut Value, path: &[&str]) {
    let mut node = &mut v["detail"]["findings"][0];
    for p in &path[..path.len() - 1] {
        node = &mut node[*p];
    }
    node.as_object_mut().unwrap().remove(path[path.len() - 1]);
}

#[test]
fn consolidated_and_legacy_iam3_both_start_one_rotation() {
    for body in [CONSOLIDATED, LEGACY] {
        let ev = parse(body).unwrap();
        let Event::FindingsImported(ref fs) = ev else { panic!("{ev:?}") };
        assert_eq!(fs[0].control.as_deref(), Some("IAM.3"));
        assert_eq!(fs[0].format, Format::Asff);
        assert_eq!(fs[0].region, "us-east-1");
        assert_eq!(fs[0].users, vec![("123456789012".to_string(), "auth0-ses-sender".to_string())]);
        assert!(fs[0].observed_at.is_some());
        let d = decide(&ev, &rotations(), HOME);
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0], Decision::Rotate { rotation_id, .. } if rotation_id == "auth0-ses"), "{d:?}");
    }
}

#[test]
fn each_asff_variant_is_recognised_by_its_own_field() {
    assert_eq!(finding(CONSOLIDATED).iam3, Some(Iam3Field::SecurityControlId));
    assert_eq!(finding(LEGACY).iam3, Some(Iam3Field::ControlId), "FSBP legacy: ProductFields.ControlId");
    let by_generator = edit(LEGACY, |v| remove(v, &["ProductFields", "ControlId"]));
    assert_eq!(finding(&by_generator).iam3, Some(Iam3Field::GeneratorId));
    for (i, (version, body)) in CIS.iter().enumerate() {
        let f = finding(body);
        assert_eq!(f.iam3, Some(Iam3Field::Cis(CIS_IAM3[i])), "CIS {version}");
        assert_eq!(CIS_IAM3[i].version, *version);
        assert_eq!(f.control.as_deref(), Some(IAM3));
    }
    // Only the backing AWS Config rule left: the fallback.
    let by_rule = edit(&edit(CIS[3].1, |v| remove(v, &["ProductFields", "ControlId"])), |v| set(v, &["GeneratorId"], "custom/keyturn-test".into()));
    assert_eq!(finding(&by_rule).iam3, Some(Iam3Field::ConfigRule));
}

#[test]
fn every_cis_version_starts_exactly_one_rotation() {
    let numbers: Vec<(&str, &str)> = CIS_IAM3.iter().map(|c| (c.version, c.number)).collect();
    assert_eq!(
        numbers,
        [("1.2.0", "1.4"), ("1.4.0", "1.14"), ("3.0.0", "1.14"), ("5.0.0", "1.13")],
        "IAM.3's related requirements in the controls reference"
    );
    for (version, body) in CIS {
        let f = finding(body);
        let v: Value = serde_json::from_str(body).unwrap();
        let expected = CIS_IAM3.iter().find(|c| c.version == version).unwrap();
        assert_eq!(v["detail"]["findings"][0]["GeneratorId"], expected.generator_id().as_str(), "the fixture carries the version's generator");
        assert_eq!(v["detail"]["findings"][0]["ProductFields"][expected.number_field()], expected.number);
        assert_eq!(starts(body), vec![("auth0-ses".to_string(), f.id.clone())], "CIS {version}");
    }
}

#[test]
fn cis_findings_with_a_security_control_id_match_by_it() {
    // AWS's current samples of per-standard CIS findings also carry the
    // consolidated control id: still exactly one rotation, found by it.
    for (version, body) in CIS {
        let body = edit(body, |v| set(v, &["Compliance", "SecurityControlId"], IAM3.into()));
        assert_eq!(finding(&body).iam3, Some(Iam3Field::SecurityControlId), "CIS {version}");
        assert_eq!(starts(&body).len(), 1, "CIS {version}");
    }
}

#[test]
fn a_cis_number_counts_only_with_its_own_versions_generator() {
    let [v120, v140, _, v500] = CIS.map(|(_, b)| b);
    // v1.4.0's 1.4 is "no root user access key": the 1.2.0 number under another version's generator.
    let r = ignored(&edit(v120, |v| {
        set(v, &["GeneratorId"], "cis-aws-foundations-benchmark/v/1.4.0/1.4".into());
        set(v, &["ProductFields", "ControlId"], "1.4".into());
    }));
    assert_eq!(r, "control CIS v1.4.0 1.4 is not IAM.3", "and the Config rule name does not override the generator");
    // v1.2.0's rule 1.14 is hardware MFA for the root user.
    let r = ignored(&edit(v140, |v| {
        set(v, &["GeneratorId"], "arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.14".into());
        set(v, &["ProductFields", "RuleId"], "1.14".into());
    }));
    assert_eq!(r, "control CIS v1.2.0 1.14 is not IAM.3");
    // 1.14 is not IAM.3 in v5.0.0.
    let r = ignored(&edit(v500, |v| {
        set(v, &["GeneratorId"], "cis-aws-foundations-benchmark/v/5.0.0/1.14".into());
        set(v, &["ProductFields", "ControlId"], "1.14".into());
    }));
    assert!(r.contains("CIS v5.0.0 1.14"), "{r}");
    // The generator alone, with a number field that disagrees or is missing.
    ignored(&edit(v500, |v| set(v, &["ProductFields", "ControlId"], "1.14".into())));
    ignored(&edit(v120, |v| remove(v, &["ProductFields", "RuleId"])));
    // v1.2.0's ruleset ARN form only: the plain form with RuleId is not how v1.2.0 findings look.
    ignored(&edit(v120, |v| set(v, &["GeneratorId"], "cis-aws-foundations-benchmark/v/1.2.0/1.4".into())));
    // The number alone, without any CIS generator: never.
    let r = ignored(&edit(v140, |v| set(v, &["GeneratorId"], "aws-foundational-security-best-practices/v/1.0.0/IAM.4".into())));
    assert_eq!(r, "control 1.14 is not IAM.3");
    ignored(&edit(v120, |v| remove(v, &["GeneratorId"])));
}

#[test]
fn cis_generator_ids_parse_in_any_partition() {
    assert_eq!(cis_generator("arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.4"), Some(("1.2.0", "1.4", true)));
    assert_eq!(cis_generator("arn:aws-us-gov:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.4"), Some(("1.2.0", "1.4", true)));
    assert_eq!(cis_generator("cis-aws-foundations-benchmark/v/5.0.0/1.13"), Some(("5.0.0", "1.13", false)));
    assert_eq!(cis_generator("arn:aws:iam:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.4"), None);
    assert_eq!(cis_generator("cis-aws-foundations-benchmark/v/5.0.0/1.13/extra"), None);
    assert_eq!(cis_generator("security-control/IAM.3"), None);
    for c in CIS_IAM3 {
        let g = c.generator_id();
        let (v, n, r) = cis_generator(&g).unwrap();
        assert_eq!((v, n, r), (c.version, c.number, c.ruleset));
    }
}

#[test]
fn the_config_rule_counts_only_when_no_field_names_a_control() {
    let bare = edit(CIS[3].1, |v| {
        remove(v, &["ProductFields", "ControlId"]);
        set(v, &["GeneratorId"], "custom/keyturn-test".into());
    });
    assert_eq!(starts(&bare).len(), 1);
    // At another index, with its type.
    let moved = edit(&bare, |v| {
        let pf = v["detail"]["findings"][0]["ProductFields"].as_object_mut().unwrap();
        let name = pf.remove("RelatedAWSResources:0/name").unwrap();
        pf.remove("RelatedAWSResources:0/type");
        pf.insert("RelatedAWSResources:1/name".into(), name);
        pf.insert("RelatedAWSResources:1/type".into(), "AWS::Config::ConfigRule".into());
    });
    assert_eq!(finding(&moved).iam3, Some(Iam3Field::ConfigRule));
    // Another rule, or a name of another resource type: no.
    ignored(&edit(&bare, |v| set(v, &["ProductFields", "RelatedAWSResources:0/name"], "securityhub-iam-user-unused-credentials-check-1a2b3c4d".into())));
    ignored(&edit(&bare, |v| set(v, &["ProductFields", "RelatedAWSResources:0/type"], "AWS::Lambda::Function".into())));
    // An explicit control id wins over the rule name.
    let r = ignored(&edit(&bare, |v| set(v, &["ProductFields", "ControlId"], "IAM.4".into())));
    assert_eq!(r, "control IAM.4 is not IAM.3");
    let r = ignored(&edit(&bare, |v| set(v, &["Compliance", "SecurityControlId"], "IAM.8".into())));
    assert_eq!(r, "control IAM.8 is not IAM.3");
}

#[test]
fn findings_that_only_mention_iam3_in_text_do_not_match() {
    let mention = |v: &mut Value| {
        set(v, &["Title"], "IAM.3 IAM users' access keys should be rotated every 90 days or less".into());
        set(v, &["Description"], "Like Security Hub control IAM.3 (CIS 1.14): rotate access keys every 90 days.".into());
        set(
            v,
            &["Remediation"],
            serde_json::json!({"Recommendation": {"Text": "See IAM.3", "Url": "https://docs.aws.amazon.com/console/securityhub/IAM.3/remediation"}}),
        );
        set(v, &["Types"], serde_json::json!(["Software and Configuration Checks/Industry and Regulatory Standards/IAM.3"]));
    };
    // Another control of Security Hub whose texts talk about IAM.3.
    let iam8 = edit(CONSOLIDATED, |v| {
        mention(v);
        set(v, &["Compliance", "SecurityControlId"], "IAM.8".into());
        set(v, &["GeneratorId"], "security-control/IAM.8".into());
    });
    assert_eq!(ignored(&iam8), "control IAM.8 is not IAM.3");
    // A third-party product's finding on the same user, with no control fields at all.
    let third_party = edit(CONSOLIDATED, |v| {
        mention(v);
        remove(v, &["Compliance", "SecurityControlId"]);
        set(v, &["ProductArn"], "arn:aws:securityhub:us-east-1::product/example/credential-scanner".into());
        set(v, &["GeneratorId"], "credential-scanner/key-age".into());
        set(v, &["ProductFields"], serde_json::json!({"check": "IAM.3", "note": "securityhub IAM.3 equivalent"}));
    });
    assert_eq!(ignored(&third_party), "control key-age is not IAM.3");
    assert_eq!(finding(&third_party).iam3, None);
}

#[test]
fn the_finding_region_comes_from_the_finding_else_the_event() {
    // CIS v5.0.0's fixture: found in us-west-1, delivered through the aggregation region us-east-1.
    let (_, v500) = CIS[3];
    assert_eq!(serde_json::from_str::<Value>(v500).unwrap()["region"], "us-east-1");
    assert_eq!(finding(v500).region, "us-west-1");
    assert_eq!(finding(&edit(v500, |v| remove(v, &["Region"]))).region, "us-east-1");
    assert_eq!(finding(CIS[0].1).region, "us-east-2");
    assert_eq!(finding(CIS[0].1).account_id, "123456789012");
}

#[test]
fn only_active_failed_iam3_is_acted_on() {
    let cases = [
        edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["RecordState"] = "ARCHIVED".into()),
        edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["Compliance"]["Status"] = "PASSED".into()),
        edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["Workflow"]["Status"] = "SUPPRESSED".into()),
        edit(CIS[2].1, |v| v["detail"]["findings"][0]["Compliance"]["Status"] = "PASSED".into()),
        edit(CONSOLIDATED, |v| {
            v["detail"]["findings"][0]["Compliance"]["SecurityControlId"] = "IAM.4".into();
            v["detail"]["findings"][0]["GeneratorId"] = "security-control/IAM.4".into();
        }),
    ];
    for body in cases {
        let d = decide(&parse(&body).unwrap(), &rotations(), HOME);
        assert!(matches!(&d[..], [Decision::Ignore { .. }]), "{d:?}");
    }
}

#[test]
fn custom_action_acts_regardless_of_compliance() {
    let body = edit(CUSTOM, |v| v["detail"]["findings"][0]["Compliance"]["Status"] = "PASSED".into());
    let ev = parse(&body).unwrap();
    assert!(matches!(&ev, Event::CustomAction { action_name, .. } if action_name == "Rotate with keyturn"));
    assert!(matches!(&decide(&ev, &rotations(), HOME)[..], [Decision::Rotate { .. }]));
}

#[test]
fn unknown_user_or_account_is_unmatched() {
    let body = edit(CONSOLIDATED, |v| {
        v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/payroll-bot".into();
        v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "payroll-bot".into();
    });
    assert!(matches!(&decide(&parse(&body).unwrap(), &rotations(), HOME)[..], [Decision::Unmatched { user, .. }] if user == "payroll-bot"));
    // "mailer" is configured only for account 999999999999.
    let body = edit(CONSOLIDATED, |v| {
        v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/mailer".into();
        v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "mailer".into();
    });
    assert!(matches!(&decide(&parse(&body).unwrap(), &rotations(), HOME)[..], [Decision::Unmatched { .. }]));
}

fn with_scim() -> Vec<RotationConfig> {
    let mut r = rotations();
    // Bound to the account of the Health fixture.
    let scim = SCIM_ROTATION.replace(r#"region = "us-east-1" }"#, r#"region = "us-east-1", account_id = "123456789012" }"#);
    r.extend(Config::parse(&format!("{AWS}{scim}")).unwrap().rotations);
    r
}

#[test]
fn scim_expiry_starts_the_matching_scim_rotation_only() {
    let ev = parse(HEALTH).unwrap();
    let Event::Notice { kind, account_id, region, event_arn, observed_at } = &ev else { panic!("{ev:?}") };
    assert_eq!(kind.trigger, "health:scim_expiry", "the trigger its source registered");
    assert_eq!((account_id.as_str(), region.as_str()), ("123456789012", "us-east-1"));
    assert!(event_arn.ends_with("AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION_1"));
    assert_eq!(*observed_at, Some(1_795_165_200_000), "the event's time, 2026-11-20T09:00:00Z");
    // No scim_token rotation configured: ignored with a reason.
    assert!(
        matches!(&decide(&ev, &rotations(), HOME)[..], [Decision::Ignore { reason, .. }] if reason.contains("no rotation of that scim_token is configured"))
    );
    // Configured: that rotation, and no IAM one.
    assert!(matches!(&decide(&ev, &with_scim(), HOME)[..], [Decision::Expiring { rotation_id, .. }] if rotation_id == "entra-scim"));
    // Another account or region: not ours.
    let other = edit(HEALTH, |v| v["account"] = "999999999999".into());
    assert!(matches!(&decide(&parse(&other).unwrap(), &with_scim(), HOME)[..], [Decision::Ignore { .. }]));
    let elsewhere = edit(HEALTH, |v| v["detail"]["eventRegion"] = "eu-west-1".into());
    assert!(matches!(&decide(&parse(&elsewhere).unwrap(), &with_scim(), HOME)[..], [Decision::Ignore { .. }]));
    // A Health notice no registered source covers is not read at all.
    let unknown = edit(HEALTH, |v| v["detail"]["eventTypeCode"] = "AWS_SOMETHING_ELSE_EXPIRY_NOTIFICATION".into());
    assert!(matches!(parse(&unknown), Err(IntakeError::Unsupported { .. })), "{:?}", parse(&unknown));
    // Nor one whose code is a subject kind of findings, not of notices.
    let resource = edit(HEALTH, |v| v["detail"]["eventTypeCode"] = IAM_USER.into());
    assert!(matches!(parse(&resource), Err(IntakeError::Unsupported { .. })), "{:?}", parse(&resource));
    // The subject intake gives a finding's IAM user is one a source registered.
    assert_eq!(crate::connectors::source_kind_for(IAM_USER), "iam_access_key");
}

#[test]
fn bad_events_are_rejected_with_reasons() {
    assert!(matches!(parse("{{nope"), Err(IntakeError::NotJson(_))));
    assert!(matches!(parse("[1,2]"), Err(IntakeError::Missing(_))));
    let e = parse(r#"{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","detail":{}}"#).unwrap_err();
    assert_eq!(e.to_string(), r#"unsupported event: source "aws.ec2", detail-type "EC2 Instance State-change Notification""#);
    let e = parse(&edit(CONSOLIDATED, |v| v["detail"]["findings"][0].as_object_mut().unwrap().remove("ProductArn").map(|_| ()).unwrap())).unwrap_err();
    assert_eq!(e.to_string(), "malformed event: finding 0 has no ProductArn");
    let e = parse(&edit(CONSOLIDATED, |v| v["detail"]["findings"] = serde_json::json!([]))).unwrap_err();
    assert_eq!(e.to_string(), "malformed event: detail.findings is empty");
    let e = parse(&edit(CONSOLIDATED, |v| {
        v["detail"]["findings"][0]["Resources"][0] = serde_json::json!({"Type": "AwsIamUser", "Id": "not-an-arn"});
    }))
    .unwrap_err();
    assert!(e.to_string().contains("without a user name or user ARN"), "{e}");
}

#[test]
fn user_arns() {
    assert_eq!(parse_user_arn("arn:aws:iam::123456789012:user/a/b/name"), Some(("123456789012".into(), "name".into())));
    assert_eq!(parse_user_arn("arn:aws-us-gov:iam::123456789012:user/x"), Some(("123456789012".into(), "x".into())));
    assert_eq!(parse_user_arn("arn:aws:iam::123456789012:role/x"), None);
    assert_eq!(parse_user_arn("arn:aws:s3:::bucket"), None);
    assert_eq!(parse_user_arn("nope"), None);
}

proptest::proptest! {
    #[test]
    fn parse_never_panics_on_any_text(body in ".*") {
        let _ = parse(&body);
    }

    #[test]
    fn parse_never_panics_on_mutated_findings(drop in 0usize..40, value in proptest::prelude::any::<i64>()) {
        // Replace one field of the finding with a number: a clear error or a parse, never a panic.
        let mut v: Value = serde_json::from_str(CONSOLIDATED).unwrap();
        let f = v["detail"]["findings"][0].as_object_mut().unwrap();
        let key = f.keys().nth(drop % f.len()).unwrap().clone();
        f.insert(key, value.into());
        let _ = parse(&v.to_string()).map(|e| decide(&e, &rotations(), HOME));
    }
}

#[test]
fn the_controls_max_access_key_age_parameter_is_read() {
    let Event::FindingsImported(fs) = parse(CONSOLIDATED).unwrap() else { panic!() };
    assert_eq!(fs[0].max_key_age_days, None, "absent: IAM.3's default applies");
    let with = |value: Value| {
        let body = edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["Compliance"]["SecurityControlParameters"] = value);
        let Event::FindingsImported(fs) = parse(&body).unwrap() else { panic!() };
        fs[0].max_key_age_days
    };
    assert_eq!(with(serde_json::json!([{"Name": "maxAccessKeyAge", "Value": ["45"]}])), Some(45));
    assert_eq!(with(serde_json::json!([{"Name": "other", "Value": ["7"]}, {"Name": "maxAccessKeyAge", "Value": [" 30 "]}])), Some(30));
    assert_eq!(with(serde_json::json!([{"Name": "maxAccessKeyAge", "Value": ["0"]}])), None, "nonsense is ignored, not trusted");
    assert_eq!(with(serde_json::json!([{"Name": "maxAccessKeyAge", "Value": ["ninety"]}])), None);
    assert_eq!(with(serde_json::json!({"Name": "maxAccessKeyAge"})), None);
}

#[test]
fn a_failed_ocsf_iam3_finding_starts_exactly_one_rotation() {
    let f = finding(V2_FAILED);
    assert_eq!(f.format, Format::Ocsf);
    assert_eq!(f.iam3, Some(Iam3Field::OcsfControl));
    // What BatchUpdateFindingsV2 identifies it by.
    assert_eq!(f.id, "arn:aws:securityhub:us-east-1:123456789012:security-control/IAM.3/finding/6e1f7a2b-3c4d-4e5f-8a9b-0c1d2e3f4a60");
    assert_eq!(f.product_arn, "arn:aws:securityhub:us-east-1::product/aws/securityhub");
    assert_eq!(f.account_id, "123456789012");
    assert_eq!(f.region, "us-east-1");
    assert_eq!(f.users, vec![("123456789012".to_string(), "auth0-ses-sender".to_string())]);
    assert_eq!(f.observed_at, Some(1_787_388_900_000), "finding_info.first_seen_time_dt, 2026-08-22T08:55:00Z");
    assert!(f.failed && f.closed.is_none());
    assert_eq!(starts(V2_FAILED), vec![("auth0-ses".to_string(), f.id.clone())]);
}

#[test]
fn passed_suppressed_archived_and_other_ocsf_findings_start_nothing() {
    assert_eq!(ignored(V2_PASSED), "status Resolved (status_id 4) is not open", "Security Hub resolves a passed finding");
    // Passed but still open (Security Hub has not resolved it yet): the compliance result decides.
    let passed_open = edit(V2_PASSED, |v| {
        set(v, &["status"], "New".into());
        set(v, &["status_id"], 1.into());
    });
    assert_eq!(ignored(&passed_open), "compliance status Pass is not FAILED");
    assert_eq!(ignored(V2_SUPPRESSED), "status Suppressed (status_id 3) is not open");
    assert_eq!(ignored(V2_ARCHIVED), "activity Close (Security Hub closed the finding)");
    assert_eq!(ignored(&edit(V2_ARCHIVED, |v| set(v, &["activity_id"], 2.into()))), "status Archived (status_id 5) is not open");
    assert_eq!(ignored(V2_OTHER), "control IAM.8 is not IAM.3");
    // In progress (keyturn's own update) is still open: the key age decides, as for NOTIFIED ASFF findings.
    let in_progress = edit(V2_FAILED, |v| {
        set(v, &["status"], "In Progress".into());
        set(v, &["status_id"], 2.into());
    });
    assert_eq!(starts(&in_progress).len(), 1);
}

#[test]
fn ocsf_status_ids_decide_and_names_are_a_fallback() {
    // The ids are authoritative; the captions only count when the ids are missing.
    let no_ids = |body: &str| {
        edit(body, |v| {
            remove(v, &["status_id"]);
            remove(v, &["compliance", "status_id"]);
        })
    };
    assert_eq!(starts(&no_ids(V2_FAILED)).len(), 1);
    assert_eq!(ignored(&no_ids(V2_SUPPRESSED)), "status Suppressed is not open");
    let lower = edit(&no_ids(V2_FAILED), |v| set(v, &["compliance", "status"], "fail".into()));
    assert_eq!(starts(&lower).len(), 1, "caption compared without case");
    // A failing caption with a non-failing id: the id wins.
    let warning = edit(V2_FAILED, |v| set(v, &["compliance", "status_id"], 2.into()));
    assert_eq!(ignored(&warning), "compliance status Fail is not FAILED");
    let no_status = edit(&no_ids(V2_FAILED), |v| remove(v, &["compliance", "status"]));
    assert_eq!(ignored(&no_status), "compliance status (none) is not FAILED");
}

#[test]
fn the_ocsf_user_comes_from_an_arn_in_uid_or_uid_alt_else_the_name() {
    let with = |resource: Value| finding(&edit(V2_FAILED, |v| set(v, &["resources"], serde_json::json!([resource])))).users;
    let arn = "arn:aws:iam::999999999999:user/keyturn/mailer";
    assert_eq!(with(serde_json::json!({"type": "AWS::IAM::User", "uid": arn})), vec![("999999999999".to_string(), "mailer".to_string())]);
    assert_eq!(
        with(serde_json::json!({"type": "AWS::IAM::User", "uid": "AIDACKCEVSQ6C2EXAMPLE", "uid_alt": arn, "name": "ignored"})),
        vec![("999999999999".to_string(), "mailer".to_string())],
        "an ARN wins over the name"
    );
    assert_eq!(
        with(serde_json::json!({"type": "AWS::IAM::User", "uid": "AIDACKCEVSQ6C2EXAMPLE", "name": "auth0-ses-sender"})),
        vec![("123456789012".to_string(), "auth0-ses-sender".to_string())],
        "no ARN: the name, in the finding's account"
    );
    assert_eq!(with(serde_json::json!({"type": "AwsIamUser", "uid": arn})).len(), 1, "ASFF's type name is tolerated");
    assert!(with(serde_json::json!({"type": "AWS::IAM::Role", "uid": "arn:aws:iam::123456789012:role/x"})).is_empty());
    let e =
        parse(&edit(V2_FAILED, |v| set(v, &["resources"], serde_json::json!([{"type": "AWS::IAM::User", "uid": "AIDACKCEVSQ6C2EXAMPLE"}])))).unwrap_err();
    assert_eq!(e.to_string(), "malformed event: finding 0: AWS::IAM::User resource without a user ARN or name");
    // The user of another account is matched to that account's rotation.
    let other = edit(V2_FAILED, |v| set(v, &["resources"], serde_json::json!([{"type": "AWS::IAM::User", "uid": arn}])));
    assert!(matches!(&decide(&parse(&other).unwrap(), &rotations(), HOME)[..], [Decision::Rotate { rotation_id, .. }] if rotation_id == "other-account"));
}

#[test]
fn ocsf_findings_need_their_identifiers_and_iam3_ones_their_resources() {
    for (ptr, name) in [("finding_info", "finding_info.uid"), ("metadata", "metadata.product.uid"), ("cloud", "cloud.account.uid")] {
        let e = parse(&edit(V2_FAILED, |v| remove(v, &[ptr]))).unwrap_err();
        assert_eq!(e.to_string(), format!("malformed event: finding 0 has no {name}"));
    }
    let e = parse(&edit(V2_FAILED, |v| remove(v, &["resources"]))).unwrap_err();
    assert_eq!(e.to_string(), "malformed event: finding 0 has no resources");
    // Another control without resources is merely not ours.
    assert_eq!(ignored(&edit(V2_OTHER, |v| remove(v, &["resources"]))), "control IAM.8 is not IAM.3");
    // The region falls back to the event's.
    let f = finding(&edit(V2_FAILED, |v| {
        remove(v, &["cloud", "region"]);
        v["region"] = "eu-central-1".into();
    }));
    assert_eq!(f.region, "eu-central-1");
}

#[test]
fn the_ocsf_max_access_key_age_parameter_is_read_when_present() {
    assert_eq!(finding(V2_FAILED).max_key_age_days, None, "absent: IAM.3's default applies");
    let with = |params: Value| finding(&edit(V2_FAILED, |v| set(v, &["compliance", "control_parameters"], params))).max_key_age_days;
    assert_eq!(with(serde_json::json!([{"name": "maxAccessKeyAge", "value": "45"}])), Some(45));
    assert_eq!(with(serde_json::json!([{"name": "other", "value": "7"}, {"name": "maxAccessKeyAge", "values": ["30"]}])), Some(30));
    assert_eq!(with(serde_json::json!([{"name": "maxAccessKeyAge", "value": "0"}])), None);
    assert_eq!(with(serde_json::json!({"name": "maxAccessKeyAge", "value": "30"})), None);
}

proptest::proptest! {
    #[test]
    fn parse_never_panics_on_mutated_ocsf_and_cis_findings(which in 0usize..6, drop in 0usize..40, value in proptest::prelude::any::<i64>()) {
        let bodies = [V2_FAILED, V2_OTHER, CIS[0].1, CIS[1].1, CIS[2].1, CIS[3].1];
        let mut v: Value = serde_json::from_str(bodies[which]).unwrap();
        let f = v["detail"]["findings"][0].as_object_mut().unwrap();
        let key = f.keys().nth(drop % f.len()).unwrap().clone();
        f.insert(key, value.into());
        let _ = parse(&v.to_string()).map(|e| decide(&e, &rotations(), HOME));
    }
}

#[test]
fn a_rotation_without_an_account_covers_only_the_workers_own_account() {
    // auth0-ses names no account: the same user name in account B is not it.
    let in_b = edit(CONSOLIDATED, |v| {
        let f = &mut v["detail"]["findings"][0];
        f["AwsAccountId"] = "222222222222".into();
        f["Resources"][0]["Id"] = "arn:aws:iam::222222222222:user/auth0-ses-sender".into();
    });
    let fs = match parse(&in_b).unwrap() {
        Event::FindingsImported(fs) => fs,
        other => panic!("{other:?}"),
    };
    assert_eq!(fs[0].users, vec![("222222222222".to_string(), "auth0-ses-sender".to_string())]);
    assert!(
        matches!(&decide(&parse(&in_b).unwrap(), &rotations(), HOME)[..], [Decision::Unmatched { account_id, .. }] if account_id == "222222222222"),
        "a finding in account B must not rotate the home account's user"
    );
    // The same event with B as the worker's own account matches.
    assert!(
        matches!(&decide(&parse(&in_b).unwrap(), &rotations(), "222222222222")[..], [Decision::Rotate { rotation_id, .. }] if rotation_id == "auth0-ses")
    );
    // A rotation naming account 999999999999 never matches a home-account finding of the same user name.
    let mailer_home = edit(CONSOLIDATED, |v| {
        v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/mailer".into();
        v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "mailer".into();
    });
    assert!(matches!(&decide(&parse(&mailer_home).unwrap(), &rotations(), HOME)[..], [Decision::Unmatched { .. }]));
}

// ---------------------------------------------------------------------------
// The request API and exposed keys
// ---------------------------------------------------------------------------

fn request_fixture(kind: &str, name: &str) -> String {
    let path = format!("{}/../tests/fixtures/requests/{kind}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_request_on_the_queue_and_as_a_custom_event_parse_the_same() {
    let body = request_fixture("valid", "by-rotation-id.json");
    let Event::Request(r) = parse(&body).unwrap() else { panic!() };
    assert_eq!(r.target, RequestTarget::Rotation("auth0-ses".into()));
    assert_eq!((r.requester.as_str(), r.idempotency_key.as_str(), r.correlation()), ("jira-automation", "SEC-1234", "corr-7f3a9c"));
    let event = serde_json::json!({
        "version": "0", "id": "e1", "source": REQUEST_SOURCE, "detail-type": REQUEST_DETAIL_TYPE,
        "account": "123456789012", "region": "eu-west-1", "time": "2026-11-30T05:00:00Z", "resources": [],
        "detail": serde_json::from_str::<serde_json::Value>(&body).unwrap(),
    });
    let mut via_event = r.clone();
    via_event.event = Some(EventOrigin { account: "123456789012".into(), source: REQUEST_SOURCE.into() });
    assert_eq!(parse(&event.to_string()).unwrap(), Event::Request(via_event), "the same request, with the envelope's account and source");
    let Event::Request(u) = parse(&request_fixture("valid", "by-account-and-user.json")).unwrap() else { panic!() };
    assert_eq!(u.target, RequestTarget::User { account_id: "123456789012".into(), user_name: "auth0-ses-sender".into() });
    assert_eq!(u.correlation(), "offboarding-2026-11-30-jdoe", "no correlation id: the idempotency key");
    let Event::Request(o) = parse(&request_fixture("valid", "with-overrides.json")).unwrap() else { panic!() };
    assert_eq!(o.overrides, crate::saga::Overrides { grace_period: Some(0), person_deadline: Some(3_600_000) });
}

#[test]
fn invalid_requests_say_which_field_and_rule_and_never_echo_values() {
    let secretish = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let cases = [
        (r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"auth0-ses","reason":"r","requester":"ci"}"#, "idempotency_key: required"),
        (
            r#"{"schema":"keyturn.rotation-request.v2","rotation_id":"a","reason":"r","requester":"ci","idempotency_key":"k"}"#,
            "schema: this keyturn understands only",
        ),
        (r#"{"rotation_id":"a","reason":"r","requester":"ci","idempotency_key":"k","schema":1}"#, "schema: must be"),
        (r#"{"schema":"keyturn.rotation-request.v1","reason":"r","requester":"ci","idempotency_key":"k"}"#, "name the rotation"),
        (
            r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"a","user_name":"u","account_id":"123456789012","reason":"r","requester":"ci","idempotency_key":"k"}"#,
            "not both",
        ),
        (
            r#"{"schema":"keyturn.rotation-request.v1","user_name":"u","reason":"r","requester":"ci","idempotency_key":"k"}"#,
            "account_id: required with user_name",
        ),
        (
            r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"a","reason":"","requester":"ci","idempotency_key":"k"}"#,
            "reason: must be 1 to 1024 characters",
        ),
        (
            r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"a","reason":"r","requester":"ci","idempotency_key":"k","overrides":{"grace_period":"SECRET"}}"#,
            "overrides.grace_period: must be a duration",
        ),
        (
            r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"a","reason":"r","requester":"ci","idempotency_key":"k","overrides":{"max_attempts":"1"}}"#,
            "overrides: unknown field \"max_attempts\"",
        ),
        (
            r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"a","reason":"r","requester":"ci","idempotency_key":"k","extra":1}"#,
            "unknown field \"extra\"",
        ),
    ];
    for (body, want) in cases {
        let e = parse(body).unwrap_err();
        assert!(matches!(e, IntakeError::InvalidRequest(_)), "{body}: {e:?}");
        assert!(e.to_string().contains(want), "{body}: {e} (wanted {want:?})");
    }
    // A secret pasted into a field that cannot hold it, or as a field name, is not repeated.
    let base = || serde_json::json!({"schema": REQUEST_SCHEMA, "rotation_id": "a", "reason": "r", "requester": "c", "idempotency_key": "k"});
    let mut bodies = vec![];
    for field in ["rotation_id", "account_id", "user_name", "schema"] {
        let mut b = base();
        b[field] = secretish.into();
        bodies.push(b);
    }
    let mut b = base();
    b["overrides"] = serde_json::json!({"grace_period": secretish});
    bodies.push(b);
    let mut b = base();
    b[secretish] = "x".into();
    bodies.push(b);
    // ... nor one in a field of the wrong type (serde's own messages would
    // quote it: `invalid type: string "…"`), nor an override's name.
    for (field, wrong) in [
        ("overrides", serde_json::json!(secretish)),
        ("overrides", serde_json::json!({ secretish: "1h" })),
        ("overrides", serde_json::json!({"grace_period": [secretish]})),
        ("reason", serde_json::json!({"note": secretish})),
        ("account_id", serde_json::json!([secretish])),
        ("schema", serde_json::json!({ secretish: secretish })),
    ] {
        let mut b = base();
        b[field] = wrong;
        bodies.push(b);
    }
    for body in bodies {
        let e = parse(&body.to_string()).map(|_| ()).unwrap_err().to_string();
        assert!(!e.contains("wJalr") && !e.contains("EXAMPLEKEY"), "{body}: {e}");
    }
}

/// Every field checks its own type, `null` included (present is not
/// absent: the schema refuses `null` too), and an override's duration is
/// the schema's exactly: digits and a unit, nothing around them.
#[test]
fn each_request_field_refuses_a_wrong_type_and_null_by_name() {
    let base = || serde_json::json!({"schema": REQUEST_SCHEMA, "rotation_id": "a", "reason": "r", "requester": "c", "idempotency_key": "k"});
    let strings = ["rotation_id", "account_id", "user_name", "reason", "requester", "idempotency_key", "correlation_id"];
    for field in strings {
        for wrong in [serde_json::json!(null), serde_json::json!(12), serde_json::json!(["a"]), serde_json::json!({"a": "b"}), serde_json::json!(true)] {
            let mut b = base();
            b[field] = wrong.clone();
            let e = parse_request(&b).unwrap_err().to_string();
            assert!(e.ends_with(&format!("{field}: must be a string")), "{field} = {wrong}: {e}");
        }
    }
    let mut b = base();
    b["schema"] = serde_json::Value::Null;
    assert!(parse_request(&b).unwrap_err().to_string().contains("schema: must be"));
    for wrong in [serde_json::json!(null), serde_json::json!("1h"), serde_json::json!(["grace_period"])] {
        let mut b = base();
        b["overrides"] = wrong.clone();
        let e = parse_request(&b).unwrap_err().to_string();
        assert!(e.ends_with("overrides: must be an object"), "{wrong}: {e}");
    }
    for key in ["grace_period", "person_deadline"] {
        for wrong in [serde_json::json!(null), serde_json::json!(3600), serde_json::json!({"h": 1})] {
            let mut b = base();
            b["overrides"] = serde_json::json!({ key: wrong });
            let e = parse_request(&b).unwrap_err().to_string();
            assert!(e.contains(&format!("overrides.{key}: must be a duration string")), "{key} = {wrong}: {e}");
        }
        for wrong in [" 1h", "1h ", "+1h", "1 h", "1", "h", "", "1H", "1.5h"] {
            let mut b = base();
            b["overrides"] = serde_json::json!({ key: wrong });
            let e = parse_request(&b).unwrap_err().to_string();
            assert!(e.contains(&format!("overrides.{key}: must be a duration: ")), "{key} = {wrong:?}: {e}");
        }
        let mut b = base();
        b["overrides"] = serde_json::json!({ key: "90s" });
        let o = parse_request(&b).unwrap().overrides;
        assert_eq!(if key == "grace_period" { o.grace_period } else { o.person_deadline }, Some(90_000));
    }
}

#[test]
fn an_exposed_key_event_names_its_keys_and_users() {
    let body = include_str!("../../../tests/fixtures/health-key-exposed.json").to_string();
    let Event::KeyExposed { account_id, event_arn, key_ids, users } = parse(&body).unwrap() else { panic!() };
    assert_eq!(account_id, "123456789012");
    assert!(event_arn.contains("AWS_RISK_CREDENTIALS_EXPOSED"));
    assert_eq!(key_ids, vec!["AKIAEXPOSEDKEY000001".to_string()]);
    assert!(users.is_empty());
    let Event::KeyExposed { key_ids, users, .. } = parse(include_str!("../../../tests/fixtures/health-key-exposed-user-arn.json")).unwrap() else {
        panic!()
    };
    assert!(key_ids.is_empty());
    assert_eq!(users, vec![("123456789012".to_string(), "auth0-ses-sender".to_string())]);
    let none = body.replace("AKIAEXPOSEDKEY000001", "not-a-key");
    assert!(matches!(parse(&none), Err(IntakeError::Missing(_))));
    assert!(is_access_key_id("AKIAIOSFODNN7EXAMPLE") && !is_access_key_id("akiaiosfodnn7example") && !is_access_key_id("AKIA"));
}

// ---- Trust at intake (docs/security.md, "Intake: who can make keyturn act") ----

const EXPOSED: &str = include_str!("../../../tests/fixtures/health-key-exposed.json");

#[test]
fn iam_user_names_follow_iams_own_rule() {
    for ok in ["a", "auth0-ses-sender", "x+=,.@_-9", &"n".repeat(64)] {
        assert!(valid_iam_name(ok), "{ok:?}");
    }
    for bad in ["", "auth0\nsender", "a\r\nb", "a b", "ü", "a/b", "a:b", &"n".repeat(65), "tab\there"] {
        assert!(!valid_iam_name(bad), "{bad:?}");
    }
    assert_eq!(one_line("a\r\nSubject: x\u{1b}[0m", 100), "a??Subject: x?[0m");
}

#[test]
fn a_finding_naming_an_invalid_user_is_refused_never_matched() {
    let bad = edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "auth0-ses-sender\r\nFAKE".into());
    let e = parse(&bad).unwrap_err();
    assert!(matches!(e, IntakeError::InvalidName(_)), "{e}");
    assert!(!e.to_string().contains('\n') && !e.to_string().contains("FAKE"), "the reason never repeats the name: {e}");
    // The same through the user ARN (and in the OCSF form).
    let bad_arn = edit(CONSOLIDATED, |v| {
        let r = &mut v["detail"]["findings"][0]["Resources"][0];
        r.as_object_mut().unwrap().remove("Details");
        r["Id"] = "arn:aws:iam::123456789012:user/a\nb".into();
    });
    assert!(matches!(parse(&bad_arn), Err(IntakeError::InvalidName(_))));
    let v2 = edit(V2_FAILED, |v| {
        let r = &mut v["detail"]["findings"][0]["resources"][0];
        r["uid"] = "arn:aws:iam::123456789012:user/x y".into();
    });
    assert!(matches!(parse(&v2), Err(IntakeError::InvalidName(_))), "{:?}", parse(&v2));
    let exposed = EXPOSED.replace("\"AKIAEXPOSEDKEY000001\"}", "\"arn:aws:iam::123456789012:user/a\\r\\nb\"}");
    assert!(matches!(parse(&exposed), Err(IntakeError::InvalidName(_))), "{:?}", parse(&exposed));
    // A finding id with control characters is refused too (it is logged).
    let bad_id = edit(CONSOLIDATED, |v| set(v, &["Id"], "x\ny".into()));
    assert!(parse(&bad_id).unwrap_err().to_string().contains("control characters"));
}

#[test]
fn aws_events_are_believed_only_for_served_accounts() {
    let served = vec![HOME.to_string(), "222222222222".to_string()];
    let check = |body: &str| {
        let (e, o) = parse_message(body)?;
        check_served(&e, o.as_ref(), &served)
    };
    assert_eq!(check(EXPOSED), Ok(()));
    assert_eq!(check(CONSOLIDATED), Ok(()));
    for body in [EXPOSED, CONSOLIDATED, HEALTH] {
        let other = edit(body, |v| v["account"] = "999999999999".into());
        assert!(matches!(check(&other), Err(IntakeError::ForeignAccount(_))), "{body}");
    }
    for body in [EXPOSED, HEALTH] {
        let none = edit(body, |v| {
            v.as_object_mut().unwrap().remove("account");
        });
        assert!(check(&none).is_err(), "a Health event names its account");
    }
    // A Security Hub event: every finding's account, and its users', must be served.
    let foreign_finding = edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["AwsAccountId"] = "999999999999".into());
    assert!(matches!(check(&foreign_finding), Err(IntakeError::ForeignAccount(_))));
    let foreign_user = edit(CONSOLIDATED, |v| {
        let r = &mut v["detail"]["findings"][0]["Resources"][0];
        r.as_object_mut().unwrap().remove("Details");
        r["Id"] = "arn:aws:iam::999999999999:user/mailer".into();
    });
    assert!(matches!(check(&foreign_user), Err(IntakeError::ForeignAccount(_))));
    let member = edit(CONSOLIDATED, |v| {
        v.as_object_mut().unwrap().remove("account");
        v["detail"]["findings"][0]["AwsAccountId"] = "222222222222".into();
    });
    assert_eq!(check(&member), Ok(()), "a member account's finding, envelope without account");
    // An exposure of a served account naming a user ARN of another account.
    let cross = EXPOSED.replace("\"AKIAEXPOSEDKEY000001\"}", "\"arn:aws:iam::999999999999:user/mailer\"}");
    assert!(matches!(check(&cross), Err(IntakeError::ForeignAccount(_))), "{:?}", check(&cross));
}

fn request_body() -> String {
    r#"{"schema":"keyturn.rotation-request.v1","rotation_id":"auth0-ses","reason":"r","requester":"ciso@example.com","idempotency_key":"k1"}"#.into()
}

#[test]
fn senders_are_matched_by_unique_id_role_session_or_event_account() {
    let (_, bare) = parse_message(&request_body()).unwrap();
    assert_eq!(bare, None);
    let event = format!(r#"{{"source":"keyturn.requests","detail-type":"Rotation Request","account":"333333333333","detail":{}}}"#, request_body());
    let (e, origin) = parse_message(&event).unwrap();
    let Event::Request(r) = e else { panic!() };
    assert_eq!(r.event.as_ref().map(|o| o.account.as_str()), Some("333333333333"));
    let allowed =
        vec!["AIDAEXAMPLEUSER00001".to_string(), "AROAEXAMPLEROLE00001".to_string(), "AROAEXAMPLEROLE00002:ci".to_string(), "333333333333".to_string()];
    let ok = |sender: Option<&str>, o: Option<&EventOrigin>| sender_allowed(Some(&allowed), sender, o).is_ok();
    assert!(sender_allowed(None, None, None).is_ok(), "unset: not checked");
    assert!(ok(Some("AIDAEXAMPLEUSER00001"), None));
    assert!(!ok(Some("AIDAEXAMPLEUSER000012"), None), "a longer id is another id");
    assert!(ok(Some("AROAEXAMPLEROLE00001:anyone"), None), "a role id allows every session");
    assert!(ok(Some("AROAEXAMPLEROLE00002:ci"), None));
    assert!(!ok(Some("AROAEXAMPLEROLE00002:other"), None), "a session entry allows only that session");
    assert!(!ok(Some("AIDAIT2UOQQY3AUEKVGXU"), None));
    assert!(!ok(None, None));
    assert!(ok(Some("AIDAIT2UOQQY3AUEKVGXU"), origin.as_ref()), "an allowed account's keyturn.requests event");
    let other = EventOrigin { account: "333333333333".into(), source: "aws.health".into() };
    assert!(!ok(None, Some(&other)), "an account entry allows only keyturn.requests events");
    let e = sender_allowed(Some(&[]), Some("AIDA\r\nX"), None).unwrap_err().to_string();
    assert!(e.contains("not in [requests] allowed_senders") && !e.contains('\n'), "{e}");
}

#[test]
fn a_message_is_bounded_to_max_items() {
    let many: Vec<Value> = (0..1000).map(|i| serde_json::json!({"entityValue": format!("AKIA{i:016}")})).collect();
    let flood = edit(EXPOSED, |v| v["detail"]["affectedEntities"] = Value::Array(many));
    let mut e = parse(&flood).unwrap();
    assert_eq!(item_count(&e), 1000);
    let why = bound(&mut e, MAX_ITEMS).expect("bounded");
    assert!(why.contains("1000") && why.contains("20"), "{why}");
    assert_eq!(item_count(&e), MAX_ITEMS);
    let users: Vec<Value> = (0..1000)
        .map(
            |i| serde_json::json!({"Type": "AwsIamUser", "Id": format!("arn:aws:iam::123456789012:user/u{i}"), "Partition": "aws", "Region": "us-east-1"}),
        )
        .collect();
    let findings = edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["Resources"] = Value::Array(users));
    let mut e = parse(&findings).unwrap();
    assert!(bound(&mut e, MAX_ITEMS).is_some());
    assert_eq!(decide(&e, &rotations(), HOME).len(), MAX_ITEMS);
    let mut small = parse(CONSOLIDATED).unwrap();
    assert_eq!(bound(&mut small, MAX_ITEMS), None);
}
