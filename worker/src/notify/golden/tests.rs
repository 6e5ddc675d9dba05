//! Golden files: what subscribers get today, for every kind of notice.
//!
//! Each case renders a notice from fixed inputs and compares, byte for byte,
//! the e-mail subject and text (`<case>.txt`), the JSON document as SNS sends
//! it (`<case>.json`), and the SNS message attributes, the whole
//! `MessageStructure=json` message and the outcome event (`<case>.sns.json`)
//! and the chat message on the chat topic (`<case>.chat.json`) with
//! `tests/golden/notifications/`. `KEYTURN_BLESS=1` rewrites them; a
//! change of wording must show in the diff of those files.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::connectors::CredentialSource;
use crate::intake::{EventOrigin, RequestTarget, RotationRequest};
use crate::quarantine::{Change, Health, Quarantine};
use crate::saga::{ExposedRole, Exposure, Failure, Keep, RequestInfo, Step, Verdict};
use crate::saga::{KeyRef, Millis, Saga, Status, TargetState};

const T0: Millis = 1_764_547_200_000; // 2025-12-01T00:00:00Z

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/notifications")
}

/// The files of one notice, as written to the golden directory.
pub(crate) fn files(n: &Notification) -> [(&'static str, String); 4] {
    let sns = json!({
        "subject": crate::connectors::check::one_line(&n.subject, 100),
        "message_attributes": n.attributes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        "message": sns_message(n),
        "event": {"source": EVENT_SOURCE, "detail-type": detail_type(n.attributes.get("event").map(String::as_str).unwrap_or("keyturn.notification")), "detail": event_detail(n).to_string()},
    });
    [
        ("txt", format!("Subject: {}\n\n{}", n.subject, n.text)),
        ("json", n.document.to_string()),
        ("sns.json", serde_json::to_string_pretty(&sns).unwrap() + "\n"),
        ("chat.json", serde_json::to_string_pretty(&chat_message(n)).unwrap() + "\n"),
    ]
}

fn iam_saga(id: &str) -> Saga {
    let mut s = Saga::new(id.into(), "auth0-ses".into(), "iam_access_key:auth0-ses-sender".into(), "schedule".into(), T0, 1);
    s.keys.old_keys = vec![KeyRef { id: "AKIAOLD0000000000001".into(), active: true, created_at: Some(T0 - 90 * 86_400_000) }];
    s.keys.new_key = Some("AKIANEW0000000000002".into());
    s.updated_at = T0 + 60_000;
    s
}

fn iam_ctx<'a>(keys: Option<&'a [KeyRef]>, advice: Option<&str>) -> Context<'a> {
    Context {
        credential_kind: "iam_access_key",
        credential: "iam user auth0-ses-sender",
        target_kind: "auth0_email_provider",
        target: "Auth0 example.eu.auth0.com",
        keys_now: keys,
        advice: advice.map(str::to_string),
        words: None,
        exposure: Some(&crate::connectors::iam::EXPOSURE_WORDS),
    }
}

fn scim_saga(id: &str) -> Saga {
    let mut s = Saga::new(id.into(), "entra-scim".into(), "scim_token:any:us-east-1".into(), "health:scim_expiry".into(), T0, 1);
    s.person.manual = true;
    s.keys.old_keys = vec![KeyRef { id: "tok-0001".into(), active: true, created_at: Some(T0 - 360 * 86_400_000) }];
    s.person.deadline = Some(T0 + 7 * 86_400_000);
    s
}

fn scim_ctx() -> Context<'static> {
    Context {
        credential_kind: "scim_token",
        credential: "IAM Identity Center SCIM token (us-east-1)",
        target_kind: "entra_provisioning",
        target: "Entra provisioning job J (tenant T)",
        keys_now: None,
        advice: None,
        words: Some(&crate::connectors::entra::BY_HAND_WORDS),
        exposure: None,
    }
}

fn failure(step: Step, code: &str, message: &str, fixable: bool) -> Option<Failure> {
    Some(Failure { step, code: code.into(), message: message.into(), operator_fixable: fixable })
}

fn request_info() -> RequestInfo {
    RequestInfo {
        requester: "jira-automation".into(),
        reason: "quarterly rotation, ticket SEC-1234".into(),
        idempotency_key: "SEC-1234".into(),
        sender: Some("AROAEXAMPLE:automation".into()),
        event_account: Some("111122223333".into()),
        event_source: Some("keyturn.requests".into()),
    }
}

fn request(event: bool) -> RotationRequest {
    RotationRequest {
        target: if event {
            RequestTarget::User { account_id: "111122223333".into(), user_name: "auth0-ses-sender".into() }
        } else {
            RequestTarget::Rotation("auth0-ses".into())
        },
        reason: "quarterly rotation, ticket SEC-1234".into(),
        requester: "jira-automation".into(),
        idempotency_key: "SEC-1234".into(),
        correlation_id: Some("corr-7f3a9c".into()),
        overrides: Default::default(),
        event: event.then(|| EventOrigin { account: "111122223333".into(), source: "keyturn.requests".into() }),
        sender: Some("AROAEXAMPLE:automation".into()),
    }
}

fn exposure(role: ExposedRole) -> Exposure {
    Exposure {
        key_id: if role == ExposedRole::Old { "AKIAOLD0000000000001".into() } else { "AKIANEW0000000000002".into() },
        role,
        seen_at: T0 + 10_000,
        event: "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/EXAMPLE".into(),
        keep_inactive: false,
        inactive_at: Some(T0 + 12_500),
        deleted_at: Some(T0 + 13_000),
        follow_up: false,
    }
}

/// Every kind of notice keyturn sends, each from fixed inputs.
pub(crate) fn cases() -> Vec<(&'static str, Notification)> {
    let hand = crate::connectors::scim::ScimToken::new("us-east-1".into(), None).by_hand().expect("made by hand");
    let new_only = [KeyRef { id: "AKIANEW0000000000002".into(), active: true, created_at: Some(T0) }];
    let both = [
        KeyRef { id: "AKIAOLD0000000000001".into(), active: true, created_at: Some(T0 - 90 * 86_400_000) },
        KeyRef { id: "AKIANEW0000000000002".into(), active: true, created_at: Some(T0) },
    ];
    let old_only = [KeyRef { id: "AKIAOLD0000000000001".into(), active: true, created_at: Some(T0 - 90 * 86_400_000) }];
    let mut out = Vec::new();

    // Outcomes of an IAM access key rotation.
    let mut s = iam_saga("S-succeeded");
    s.status = Status::Succeeded;
    s.effects.target = TargetState::HoldsNew;
    s.effects.switched_at = Some(T0 + 20_000);
    out.push(("succeeded", render(&s, &iam_ctx(Some(&new_only), None))));

    let mut r = s.clone();
    r.saga_id = "S-requested".into();
    r.trigger = "request".into();
    r.origin.correlation_id = Some("corr-7f3a9c".into());
    r.origin.request = Some(request_info());
    out.push(("succeeded_by_request", render(&r, &iam_ctx(Some(&new_only), None))));

    let mut s = iam_saga("S-failed");
    s.status = Status::Compensated;
    s.effects.target = TargetState::Rejected;
    s.outcome.failure = failure(Step::PushToTarget, "insufficient_scope", "Insufficient scope, expected any of: update:email_provider", true);
    s.outcome.compensations = vec!["deleted new key AKIANEW0000000000002 (no consumer held it)".into()];
    let advice =
        "Grant the Auth0 machine-to-machine application the read:email_provider and update:email_provider scopes, then run `keyturn rotate auth0-ses`.";
    out.push(("failed_with_advice", render(&s, &iam_ctx(Some(&old_only), Some(advice)))));
    let mut s2 = s.clone();
    s2.saga_id = "S-not-propagated".into();
    s2.outcome.failure = failure(Step::ProveNew, "KeyNotPropagated", "the new key did not authenticate within 2m", false);
    // The IAM source's advice for its own failures (finalize asks the target, then the source).
    let iam_advice = |code: &str| crate::connectors::iam::advice(code, "keyturn rotate auth0-ses");
    out.push(("failed_not_propagated", render(&s2, &iam_ctx(Some(&old_only), iam_advice("KeyNotPropagated").as_deref()))));
    let mut s3 = s.clone();
    s3.saga_id = "S-keys-unlisted".into();
    s3.outcome.failure = failure(Step::PushToTarget, "timeout", "Auth0 did not answer", false);
    out.push(("failed_keys_unlisted", render(&s3, &iam_ctx(None, None))));

    let mut s = iam_saga("S-refused");
    s.status = Status::Refused;
    s.keys.new_key = None;
    s.outcome.failure = failure(Step::Start, "TooManyKeys", "the user has two access keys already", true);
    out.push(("refused_too_many_keys", render(&s, &iam_ctx(Some(&both), iam_advice("TooManyKeys").as_deref()))));

    let mut s = iam_saga("S-attention");
    s.status = Status::NeedsAttention;
    s.effects.target = TargetState::Uncertain;
    s.effects.switched_at = Some(T0 + 20_000);
    s.outcome.failure = failure(Step::VerifyTarget, "Unverifiable", "Auth0 does not reveal which key it holds", false);
    out.push(("needs_attention_unresolved", render(&s, &iam_ctx(Some(&both), None))));

    let mut s = iam_saga("S-used-after");
    s.status = Status::NeedsAttention;
    s.effects.target = TargetState::HoldsNew;
    s.effects.old_disabled = true;
    s.outcome.failure = failure(Step::RetireOld, "OldKeyUsedAfterSwitch", "the old key was used by ses after the switch", true);
    out.push(("needs_attention_old_key_used", render(&s, &iam_ctx(Some(&both), None))));

    let mut s = iam_saga("S-rolled-back");
    s.status = Status::RolledBack;
    s.effects.target = TargetState::HoldsNew;
    s.outcome.compensations = vec!["reactivated old key AKIAOLD0000000000001 (keyturn rollback)".into()];
    out.push(("rolled_back", render(&s, &iam_ctx(Some(&both), None))));

    // Exposed keys.
    let mut s = iam_saga("S-exposed");
    s.trigger = "health".into();
    s.status = Status::Succeeded;
    s.effects.target = TargetState::HoldsNew;
    s.effects.switched_at = Some(T0 + 11_000);
    s.exposure = Some(exposure(ExposedRole::Old));
    out.push(("exposed_key_deleted", render(&s, &iam_ctx(Some(&new_only), None))));
    let mut k = s.clone();
    k.saga_id = "S-exposed-kept".into();
    k.exposure = Some(Exposure { keep_inactive: true, deleted_at: None, ..exposure(ExposedRole::Old) });
    out.push(("exposed_key_kept_inactive", render(&k, &iam_ctx(Some(&both), None))));
    let mut a = s.clone();
    a.saga_id = "S-exposed-active".into();
    a.status = Status::Compensated;
    a.effects.target = TargetState::Rejected;
    a.effects.switched_at = None;
    a.outcome.failure = failure(Step::PushToTarget, "invalid_client", "Unauthorized", true);
    a.exposure = Some(Exposure { inactive_at: None, deleted_at: None, ..exposure(ExposedRole::Old) });
    out.push(("exposed_key_still_active", render(&a, &iam_ctx(Some(&old_only), None))));
    let mut f = s.clone();
    f.saga_id = "S-exposed-new".into();
    f.exposure = Some(Exposure { follow_up: true, ..exposure(ExposedRole::New) });
    out.push(("exposed_new_key_follow_up", render(&f, &iam_ctx(Some(&old_only), None))));
    out.push((
        "exposed_blocked",
        render_exposed_blocked(
            "auth0-ses",
            "S-blocked",
            "AKIAOLD0000000000001",
            "it needs attention with both keys in place",
            "iam_access_key",
            "auth0_email_provider",
            "corr-7f3a9c",
            Some(&crate::connectors::iam::EXPOSURE_WORDS),
        ),
    ));
    out.push((
        "exposed_settled",
        render_exposed_settled(
            "auth0-ses",
            "AKIAOLD0000000000001",
            "the key is gone already (rotated away by saga S-old)",
            "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/EXAMPLE",
            "iam_access_key",
            "auth0_email_provider",
            "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/EXAMPLE",
            Some(&crate::connectors::iam::EXPOSURE_WORDS),
        ),
    ));
    let arn = "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/EXAMPLE";
    // An uncovered key has no source instance: the registry's words for its subject, as intake asks.
    let uncovered = crate::connectors::exposure_words_for(crate::intake::IAM_USER);
    out.push((
        "exposed_unmatched_active",
        render_exposed_unmatched("111122223333", "AKIAUNCOVERED0000003", Some("build-bot"), arn, None, "iam_access_key", uncovered),
    ));
    out.push((
        "exposed_unmatched_deactivated",
        render_exposed_unmatched("111122223333", "AKIAUNCOVERED0000003", Some("build-bot"), arn, Some(Ok(())), "iam_access_key", uncovered),
    ));
    out.push((
        "exposed_unmatched_failed",
        render_exposed_unmatched("111122223333", "AKIAUNCOVERED0000003", None, arn, Some(Err("AccessDenied".into())), "iam_access_key", uncovered),
    ));
    out.push((
        "exposed_unmatched_digest",
        render_exposed_unmatched_digest(
            "111122223333",
            &[
                ("AKIAUNCOVERED0000003".into(), Some("build-bot".into()), Some(Ok(()))),
                ("AKIAUNCOVERED0000004".into(), None, None),
                ("AKIAUNCOVERED0000005".into(), Some("ci".into()), Some(Err("AccessDenied".into()))),
            ],
            arn,
            "iam_access_key",
            uncovered,
        ),
    ));

    // Evidence on a saga that needs attention.
    let mut s = iam_saga("S-attention");
    s.status = Status::NeedsAttention;
    s.effects.target = TargetState::Uncertain;
    let owned = OwnedContext {
        credential_kind: "iam_access_key",
        credential: "iam user auth0-ses-sender".into(),
        target_kind: "auth0_email_provider",
        target: "Auth0 example.eu.auth0.com".into(),
    };
    let verdict = Verdict {
        keep: Some(Keep::New),
        reason: "AKIANEW0000000000002 was used by ses at 2025-12-01T01:00:00Z, after the stop; AKIAOLD0000000000001 was not".into(),
        at: T0 + 3_600_000,
    };
    out.push(("evidence", render_evidence(&s, &owned, &verdict, false)));
    out.push(("evidence_resolving", render_evidence(&s, &owned, &Verdict { keep: Some(Keep::Old), ..verdict.clone() }, true)));

    // A credential made by hand (SCIM token into Entra).
    let mut s = scim_saga("S-scim");
    s.step = Step::AwaitNew;
    out.push(("action_required_create", render_prompt(&s, &scim_ctx(), &hand, false)));
    let mut u = s.clone();
    u.keys.old_keys = vec![];
    u.person.prompts = 2;
    out.push(("reminder_create_old_unknown", render_prompt(&u, &scim_ctx(), &hand, true)));
    let mut d = s.clone();
    d.step = Step::AwaitRetire;
    d.keys.new_key = Some("handed over 2025-12-02T10:00:00Z".into());
    d.effects.target = TargetState::HoldsNew;
    d.effects.switched_at = Some(T0 + 86_400_000);
    out.push(("action_required_delete", render_prompt(&d, &scim_ctx(), &hand, false)));
    let mut ok = d.clone();
    ok.status = Status::Succeeded;
    ok.effects.old_deleted = true;
    out.push(("scim_succeeded", render(&ok, &scim_ctx())));
    let mut rej = s.clone();
    rej.status = Status::Compensated;
    rej.keys.new_key = Some("handed over 2025-12-02T10:00:00Z".into());
    rej.effects.target = TargetState::Rejected;
    rej.outcome.failure = failure(Step::PushToTarget, "TestConnectionFailed", "Entra rejected the new token in Test connection: 401", true);
    out.push(("scim_rejected", render(&rej, &scim_ctx())));
    let mut late = s.clone();
    late.status = Status::Compensated;
    late.outcome.failure = failure(Step::AwaitNew, "DeadlinePassed", "nobody handed over a token before the deadline", true);
    out.push(("scim_deadline_passed", render(&late, &scim_ctx())));
    let mut nc = d.clone();
    nc.status = Status::NeedsAttention;
    nc.outcome.failure = failure(Step::AwaitRetire, "OldNotConfirmedDeleted", "nobody confirmed the old token's deletion", true);
    out.push(("scim_old_not_confirmed", render(&nc, &scim_ctx())));
    let mut sick = d.clone();
    sick.status = Status::NeedsAttention;
    sick.effects.target = TargetState::Uncertain;
    sick.outcome.failure = failure(Step::VerifyTarget, "quarantine", "the provisioning job is in quarantine", true);
    out.push(("scim_unhealthy", render(&sick, &scim_ctx())));
    let mut other = s.clone();
    other.status = Status::Compensated;
    other.outcome.failure = failure(Step::Start, "Conflict", "the provisioning job was not found", true);
    out.push(("scim_failed", render(&other, &scim_ctx())));

    // Requests.
    out.push(("request_accepted", render_request_answer(&request(false), Some("auth0-ses"), Some("S-requested"), "started", None)));
    out.push((
        "request_rejected",
        render_request_answer(
            &request(true),
            None,
            None,
            "unknown_rotation",
            Some("no rotation covers iam user auth0-ses-sender in account 111122223333"),
        ),
    ));

    // Findings for users no rotation covers.
    out.push(("unmatched", render_unmatched("111122223333", "legacy-app", "arn:aws:securityhub:us-east-1:111122223333:finding/1", "iam_access_key")));
    out.push((
        "unmatched_digest",
        render_unmatched_digest(
            &[
                ("111122223333".into(), "legacy-app".into(), "arn:aws:securityhub:us-east-1:111122223333:finding/1".into()),
                ("444455556666".into(), "old-bot".into(), "arn:aws:securityhub:us-east-1:444455556666:finding/2".into()),
            ],
            "iam_access_key",
        ),
    ));

    // Quarantine.
    let q = Health {
        consecutive_failures: 3,
        last_counted_saga: Some("S-failed".into()),
        quarantine: Some(Quarantine { began: T0, reason: "insufficient_scope".into(), series: 1, next_attempt: T0 + 6 * 3_600_000, disabled: false }),
    };
    let quarantine = |change, h: &Health| {
        render_quarantine(
            "auth0-ses",
            "iam user auth0-ses-sender",
            "Auth0 example.eu.auth0.com",
            "iam_access_key",
            "auth0_email_provider",
            h,
            change,
            Some("S-failed"),
        )
    };
    out.push(("quarantined", quarantine(Change::Began, &q)));
    out.push(("quarantine_reason_changed", quarantine(Change::ReasonChanged, &q)));
    let mut off = q.clone();
    if let Some(x) = off.quarantine.as_mut() {
        x.disabled = true;
        x.series = 4;
    }
    out.push(("disabled", quarantine(Change::Disabled, &off)));
    out.push((
        "quarantine_lifted",
        quarantine(Change::Lifted, &Health { consecutive_failures: 0, last_counted_saga: Some("S-ok".into()), quarantine: None }),
    ));

    // A credential the target must be made to trust (the Entra SAML
    // signing certificate of IAM Identity Center).
    fn ctx<'a>(keys: Option<&'a [KeyRef]>, s: &Saga) -> Context<'a> {
        Context {
            credential_kind: "entra_saml_certificate",
            credential: "Entra SAML signing certificate of service principal sp-1 (tenant t-1)",
            target_kind: "identity_center_saml",
            target: "IAM Identity Center identity source (IdP certificate, set in the console)",
            keys_now: keys,
            advice: Some(crate::connectors::entra_saml::advice(s, keys.and_then(|k| k.iter().find(|k| k.active)).map(|k| k.id.as_str()))),
            words: None,
            exposure: None,
        }
    }
    let mut t = Saga::new("S-saml".into(), "entra-saml".into(), "entra_saml_certificate:t-1:sp-1".into(), "manual".into(), T0, 1);
    t.trust = Some(crate::saga::Trust { old: Some("OLDTHUMB".into()), ..Default::default() });
    t.keys.old_keys = vec![KeyRef { id: "OLDTHUMB".into(), active: true, created_at: Some(T0 - 700 * 86_400_000) }];
    t.keys.new_key = Some("NEWTHUMB".into());
    t.step = Step::AwaitTrust;
    t.person.deadline = Some(T0 + 2 * 86_400_000);
    let trust_steps = crate::connectors::TrustSteps {
        noun: "SAML signing certificate",
        title: "give the target the new SAML signing certificate".into(),
        steps: vec!["Upload the certificate NEWTHUMB.".into(), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----".into()],
        deadline: "keyturn removes the new certificate; the old one (OLDTHUMB) stays in use".into(),
    };
    out.push(("saml_action_required_trust", render_trust_prompt(&t, &ctx(None, &t), &trust_steps, false)));
    let mut c = t.clone();
    c.step = Step::AwaitSignIn;
    c.person.prompts = 1;
    c.trust.as_mut().unwrap().trusted = true;
    c.effects.target = TargetState::HoldsNew;
    c.trust.as_mut().unwrap().in_use = crate::saga::InUse::New;
    out.push(("saml_reminder_sign_in", render_trust_prompt(&c, &ctx(None, &c), &trust_steps, true)));
    let old_in_use = [KeyRef { id: "OLDTHUMB".into(), active: true, created_at: None }, KeyRef { id: "NEWTHUMB".into(), active: false, created_at: None }];
    let new_in_use = [KeyRef { id: "NEWTHUMB".into(), active: true, created_at: None }];
    let mut ok = c.clone();
    ok.status = Status::Succeeded;
    ok.effects.old_deleted = true;
    ok.trust.as_mut().unwrap().works = true;
    out.push(("saml_succeeded", render(&ok, &ctx(Some(&new_in_use), &ok))));
    let mut back = c.clone();
    back.status = Status::RolledBack;
    back.effects.old_restored = true;
    back.trust.as_mut().unwrap().in_use = crate::saga::InUse::Old;
    back.outcome.failure = failure(Step::AwaitSignIn, "SignInBroken", "a person reported that sign-in does not work with the new credential", true);
    back.outcome.compensations = vec!["switched back to the old credential OLDTHUMB".into()];
    out.push(("saml_rolled_back", render(&back, &ctx(Some(&old_in_use), &back))));
    let mut late = t.clone();
    late.status = Status::Compensated;
    late.effects.new_revoked = true;
    late.outcome.failure = failure(Step::AwaitTrust, "TrustNotConfirmed", "nobody confirmed within 2d that the target trusts the new credential", true);
    let only_old = [KeyRef { id: "OLDTHUMB".into(), active: true, created_at: None }];
    out.push(("saml_trust_not_confirmed", render(&late, &ctx(Some(&only_old), &late))));

    // Configuration.
    out.push(("config_rejected", render_config_rejected("ssm:/keyturn/config", "7", "6", "rotation[1].target: unknown field `tenant`")));
    out
}

/// The golden files hold exactly what each notice renders to.
#[test]
fn every_notice_matches_its_golden_files() {
    let dir = golden_dir();
    let bless = std::env::var_os("KEYTURN_BLESS").is_some();
    let cases = cases();
    let mut names = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for (name, n) in &cases {
        assert!(names.insert(*name), "case {name} twice");
        for (ext, content) in files(n) {
            let path = dir.join(format!("{name}.{ext}"));
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &content).unwrap();
            } else {
                match std::fs::read_to_string(&path) {
                    Ok(held) if held == content => {}
                    Ok(held) => wrong.push(format!("{}: differs\n--- golden\n{held}\n--- now\n{content}", path.display())),
                    Err(e) => wrong.push(format!("{}: {e}", path.display())),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} golden file(s) differ (KEYTURN_BLESS=1 rewrites them, for a change that is meant):\n{}", wrong.len(), wrong.join("\n"));
    // No golden file without a case (a case removed must show).
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        let stem = file.split('.').next().unwrap_or("");
        assert!(names.contains(stem) || file.starts_with("README"), "golden file {file} has no case");
    }
    // Every event kind is covered.
    let events: std::collections::BTreeSet<&str> = cases.iter().map(|(_, n)| n.attributes["event"].as_str()).collect();
    for e in [
        "rotation.succeeded",
        "rotation.failed",
        "rotation.needs_attention",
        "rotation.evidence",
        "rotation.rolled_back",
        "rotation.unmatched",
        "rotation.quarantined",
        "rotation.disabled",
        "rotation.quarantine_lifted",
        "rotation.action_required",
        "rotation.reminder",
        "rotation.exposed_key",
        "rotation.request_accepted",
        "rotation.request_rejected",
        "keyturn.config_rejected",
    ] {
        assert!(events.contains(e), "no golden case for {e}");
    }
}
