use super::*;
use crate::config::fixtures::{AWS, SCIM_ROTATION};
use crate::config::Config;

const CONSOLIDATED: &str = include_str!("../../../tests/fixtures/securityhub-iam3-consolidated.json");
const LEGACY: &str = include_str!("../../../tests/fixtures/securityhub-iam3-legacy.json");
const CUSTOM: &str = include_str!("../../../tests/fixtures/securityhub-custom-action.json");
const HEALTH: &str = include_str!("../../../tests/fixtures/health-scim-expiry.json");

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
client_secret = { env = "X" }
ses_region = "eu-west-1"
[[rotation]]
id = "other-account"
source = { kind = "iam_access_key", user_name = "mailer", account_id = "999999999999" }
[rotation.target]
kind = "auth0_email_provider"
domain = "other.eu.auth0.com"
client_id = "c"
client_secret = { env = "X" }
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

#[test]
fn consolidated_and_legacy_iam3_both_start_one_rotation() {
    for body in [CONSOLIDATED, LEGACY] {
        let ev = parse(body).unwrap();
        let Event::FindingsImported(ref fs) = ev else { panic!("{ev:?}") };
        assert_eq!(fs[0].control.as_deref(), Some("IAM.3"));
        assert_eq!(fs[0].users, vec![("123456789012".to_string(), "auth0-ses-sender".to_string())]);
        assert!(fs[0].observed_at.is_some());
        let d = decide(&ev, &rotations());
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0], Decision::Rotate { rotation_id, .. } if rotation_id == "auth0-ses"), "{d:?}");
    }
}

#[test]
fn only_active_failed_iam3_is_acted_on() {
    let cases = [
        edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["RecordState"] = "ARCHIVED".into()),
        edit(CONSOLIDATED, |v| v["detail"]["findings"][0]["Compliance"]["Status"] = "PASSED".into()),
        edit(CONSOLIDATED, |v| {
            v["detail"]["findings"][0]["Compliance"]["SecurityControlId"] = "IAM.4".into();
            v["detail"]["findings"][0]["GeneratorId"] = "security-control/IAM.4".into();
        }),
    ];
    for body in cases {
        let d = decide(&parse(&body).unwrap(), &rotations());
        assert!(matches!(&d[..], [Decision::Ignore { .. }]), "{d:?}");
    }
}

#[test]
fn custom_action_acts_regardless_of_compliance() {
    let body = edit(CUSTOM, |v| v["detail"]["findings"][0]["Compliance"]["Status"] = "PASSED".into());
    let ev = parse(&body).unwrap();
    assert!(matches!(&ev, Event::CustomAction { action_name, .. } if action_name == "Rotate with keyturn"));
    assert!(matches!(&decide(&ev, &rotations())[..], [Decision::Rotate { .. }]));
}

#[test]
fn unknown_user_or_account_is_unmatched() {
    let body = edit(CONSOLIDATED, |v| {
        v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/payroll-bot".into();
        v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "payroll-bot".into();
    });
    assert!(matches!(&decide(&parse(&body).unwrap(), &rotations())[..], [Decision::Unmatched { user, .. }] if user == "payroll-bot"));
    // "mailer" is configured only for account 999999999999.
    let body = edit(CONSOLIDATED, |v| {
        v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/mailer".into();
        v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "mailer".into();
    });
    assert!(matches!(&decide(&parse(&body).unwrap(), &rotations())[..], [Decision::Unmatched { .. }]));
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
    let Event::ScimTokenExpiry { account_id, region, event_arn, observed_at } = &ev else { panic!("{ev:?}") };
    assert_eq!((account_id.as_str(), region.as_str()), ("123456789012", "us-east-1"));
    assert!(event_arn.ends_with("AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION_1"));
    assert_eq!(*observed_at, Some(1_795_165_200_000), "the event's time, 2026-11-20T09:00:00Z");
    // No scim_token rotation configured: ignored with a reason.
    assert!(
        matches!(&decide(&ev, &rotations())[..], [Decision::Ignore { reason, .. }] if reason.contains("no rotation of that SCIM token is configured"))
    );
    // Configured: that rotation, and no IAM one.
    assert!(matches!(&decide(&ev, &with_scim())[..], [Decision::Expiring { rotation_id, .. }] if rotation_id == "entra-scim"));
    // Another account or region: not ours.
    let other = edit(HEALTH, |v| v["account"] = "999999999999".into());
    assert!(matches!(&decide(&parse(&other).unwrap(), &with_scim())[..], [Decision::Ignore { .. }]));
    let elsewhere = edit(HEALTH, |v| v["detail"]["eventRegion"] = "eu-west-1".into());
    assert!(matches!(&decide(&parse(&elsewhere).unwrap(), &with_scim())[..], [Decision::Ignore { .. }]));
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
        let _ = parse(&v.to_string()).map(|e| decide(&e, &rotations()));
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
