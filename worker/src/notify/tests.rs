use super::*;
use crate::saga::{Failure, Step};
use crate::saga::{KeyRef, Saga, Status, TargetState};

fn saga() -> Saga {
    let mut s = Saga::new("S-1".into(), "auth0-ses".into(), "iam_access_key:u".into(), "manual".into(), 0, 1);
    s.keys.old_keys = vec![KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
    s.keys.new_key = Some("AKIANEW".into());
    s
}

fn ctx(keys: &[KeyRef]) -> Context<'_> {
    Context {
        credential_kind: "iam_access_key",
        credential: "iam user auth0-ses-sender",
        target_kind: "auth0_email_provider",
        target: "Auth0 example.eu.auth0.com",
        keys_now: Some(keys),
        advice: None,
        words: None,
        exposure: Some(&crate::connectors::iam::EXPOSURE_WORDS),
    }
}

#[test]
fn failure_notification_says_what_why_state_and_action() {
    let mut s = saga();
    s.status = Status::Compensated;
    s.effects.target = TargetState::Rejected;
    s.outcome.failure = Some(Failure {
        step: Step::PushToTarget,
        code: "insufficient_scope".into(),
        message: "Insufficient scope, expected any of: update:email_provider".into(),
        operator_fixable: true,
    });
    s.outcome.compensations = vec!["deleted new key AKIANEW (no consumer held it)".into()];
    let keys = [KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
    // The target's own advice for its error code is the recommended action.
    let mut c = ctx(&keys);
    c.advice = Some("Grant the application the read:email_provider and update:email_provider scopes, then run `keyturn rotate auth0-ses`.".into());
    let n = render(&s, &c);
    assert_eq!(n.subject, "[keyturn] Rotation failed: auth0-ses (iam user auth0-ses-sender) -> Auth0 example.eu.auth0.com");
    for needle in [
        "Rotation:        auth0-ses",
        "Saga:            S-1",
        "Failed step:     push_to_target",
        "Error code:      insufficient_scope",
        "Operator can fix: yes",
        "Rolled back:     deleted new key AKIANEW",
        "AKIAOLD  active    old key",
        "AKIANEW  deleted   new key",
        "Target now:      unchanged (it rejected the new key)",
        "update:email_provider scopes",
        "keyturn status S-1",
    ] {
        assert!(n.text.contains(needle), "missing {needle:?} in\n{}", n.text);
    }
    assert_eq!(n.attributes["event"], "rotation.failed");
    assert_eq!(n.attributes["severity"], "error");
    assert_eq!(n.document["failure"]["code"], "insufficient_scope");
    assert_eq!(n.document["keys"][1]["state"], "deleted");
}

#[test]
fn subject_is_one_line_and_bounded() {
    let mut s = saga();
    s.rotation_id = "x\ny".repeat(80);
    s.status = Status::Succeeded;
    let n = render(&s, &ctx(&[]));
    assert!(!n.subject.contains('\n'));
    assert!(n.subject.chars().count() <= 100);
    assert_eq!(n.attributes["event"], "rotation.succeeded");
}

fn by_hand_saga() -> Saga {
    let mut s = Saga::new("S-9".into(), "entra-scim".into(), "scim_token:any:us-east-1".into(), "health:scim_expiry".into(), 0, 1);
    s.person.manual = true;
    s.keys.old_keys = vec![KeyRef { id: "tok-0001".into(), active: true, created_at: Some(1_764_547_200_000) }];
    s
}

fn hand() -> crate::connectors::ByHand {
    crate::connectors::ByHand {
        noun: "SCIM access token",
        create: vec!["Open the console.".into(), "Generate token.".into()],
        delete: vec!["Select it and choose Delete.".into()],
    }
}

fn scim_ctx() -> Context<'static> {
    Context {
        credential_kind: "scim_token",
        credential: "IAM Identity Center SCIM token (us-east-1)",
        target_kind: "entra_provisioning",
        target: "Entra provisioning job J",
        keys_now: None,
        advice: None,
        words: Some(&crate::connectors::entra::BY_HAND_WORDS),
        exposure: None,
    }
}

#[test]
fn action_required_names_the_steps_the_command_and_the_deadline() {
    let mut s = by_hand_saga();
    s.step = Step::AwaitNew;
    s.person.deadline = Some(86_400_000);
    let n = render_prompt(&s, &scim_ctx(), &hand(), false);
    assert_eq!(n.attributes["event"], "rotation.action_required");
    assert_eq!(n.subject, "[keyturn] Action required: create a new SCIM access token: entra-scim");
    for needle in [
        "  1. Open the console.",
        "  2. Generate token.",
        "`keyturn provide S-9`",
        "--from-secret",
        "Deadline:        1970-01-02T00:00:00Z",
        "nothing will have changed",
    ] {
        assert!(n.text.contains(needle), "missing {needle:?} in\n{}", n.text);
    }
    assert!(!n.text.contains("--old-token-created"), "the old token is on record already");
    s.person.prompts = 2;
    let r = render_prompt(&s, &scim_ctx(), &hand(), true);
    assert_eq!(r.attributes["event"], "rotation.reminder");
    assert_eq!(r.document["reminder"], 2);
    assert!(r.text.contains("Reminder:        2"));
}

#[test]
fn delete_notice_tells_which_token_to_delete_and_which_to_keep() {
    let mut s = by_hand_saga();
    s.step = Step::AwaitRetire;
    s.keys.new_key = Some("handed over 2026-11-21T10:00:00Z".into());
    s.effects.target = TargetState::HoldsNew;
    s.keys.old_keys = vec![];
    let n = render_prompt(&s, &scim_ctx(), &hand(), false);
    assert_eq!(n.document["action"], "delete_old");
    assert!(n.text.contains("it is the older one"), "no old token on record: says how to tell\n{}", n.text);
    assert!(n.text.contains("Do NOT delete the token handed over 2026-11-21T10:00:00Z"), "{}", n.text);
    assert!(n.text.contains("`keyturn confirm S-9`"));
}

#[test]
fn by_hand_outcomes_say_what_the_person_must_do() {
    let mut s = by_hand_saga();
    s.keys.new_key = Some("handed over T".into());
    s.status = Status::Compensated;
    s.effects.target = TargetState::Rejected;
    s.outcome.failure = Some(Failure {
        step: Step::PushToTarget,
        code: "X".into(),
        message: "Entra rejected the new token in Test connection: 401".into(),
        operator_fixable: true,
    });
    let n = render(&s, &scim_ctx());
    assert!(n.text.contains("Tokens now (no API lists them"), "{}", n.text);
    assert!(n.text.contains("handed over T  unused: delete it in the console  new token"), "{}", n.text);
    assert!(n.document["recommended_action"].as_str().unwrap().contains("Delete the unused new token"));
    s.outcome.failure = Some(Failure { step: Step::AwaitNew, code: "DeadlinePassed".into(), message: "m".into(), operator_fixable: true });
    s.keys.new_key = None;
    s.effects.target = TargetState::Untouched;
    assert!(recommended_action(&s, None, Some(&crate::connectors::entra::BY_HAND_WORDS)).contains("No token was handed over in time"));
    s.status = Status::Succeeded;
    s.effects.old_deleted = true;
    s.outcome.failure = None;
    let n = render(&s, &scim_ctx());
    assert!(n.text.contains("tok-0001  deleted (confirmed by a person)  old token"), "{}", n.text);
}

#[test]
fn detail_types_name_each_event_kind() {
    assert_eq!(detail_type("rotation.succeeded"), "Rotation Succeeded");
    assert_eq!(detail_type("rotation.needs_attention"), "Rotation Needs Attention");
    assert_eq!(detail_type("rotation.exposed_key"), "Rotation Exposed Key");
    assert_eq!(detail_type("keyturn.config_rejected"), "Keyturn Config Rejected");
}

#[test]
fn every_saga_notice_carries_the_correlation_id_in_document_attribute_and_event() {
    let mut s = saga();
    s.status = Status::Succeeded;
    let n = render(&s, &ctx(&[]));
    assert_eq!(n.attributes["correlation_id"], "S-1", "no request: the saga id");
    s.origin.correlation_id = Some("ticket-42".into());
    let n = render(&s, &ctx(&[]));
    assert_eq!(n.attributes["correlation_id"], "ticket-42");
    assert_eq!(n.document["correlation_id"], "ticket-42");
    let d = event_detail(&n);
    assert_eq!(d["correlation_id"], "ticket-42");
    assert_eq!(d["saga_id"], "S-1");
    assert_eq!(d["event"], "rotation.succeeded");
    // Notices about no saga still have the field in the event.
    let u = render_unmatched("1", "u", "f", "iam_access_key");
    assert_eq!(event_detail(&u)["correlation_id"], Value::Null);
    // Prompts and evidence too.
    let mut m = by_hand_saga();
    m.origin.correlation_id = Some("c-9".into());
    m.step = Step::AwaitNew;
    assert_eq!(render_prompt(&m, &scim_ctx(), &hand(), false).attributes["correlation_id"], "c-9");
}

/// The old key AKIAOLD reported exposed (seen at 10 s), made inactive and
/// deleted when given.
fn exposed_old(inactive_at: Option<crate::saga::Millis>, deleted_at: Option<crate::saga::Millis>) -> crate::saga::Exposure {
    crate::saga::Exposure {
        key_id: "AKIAOLD".into(),
        role: crate::saga::ExposedRole::Old,
        seen_at: 10_000,
        event: "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/X".into(),
        keep_inactive: false,
        inactive_at,
        deleted_at,
        follow_up: false,
    }
}

#[test]
fn the_exposed_key_notice_gives_timeline_aws_quarantine_and_next_steps() {
    let mut s = saga();
    s.status = Status::Succeeded;
    s.effects.target = TargetState::HoldsNew;
    s.effects.switched_at = Some(11_000);
    s.exposure = Some(exposed_old(Some(12_500), Some(13_000)));
    let keys = [KeyRef { id: "AKIANEW".into(), active: true, created_at: None }];
    let n = render(&s, &ctx(&keys));
    assert_eq!((n.attributes["event"].as_str(), n.attributes["severity"].as_str()), ("rotation.exposed_key", "critical"));
    assert_eq!(n.document["event"], "rotation.exposed_key");
    assert_eq!(n.document["exposure"]["timeline"]["seconds_to_inactive"], 2.5);
    assert_eq!(n.document["exposure"]["state"], "deleted");
    for needle in [
        "event seen by keyturn:      1970-01-01T00:00:10Z",
        "+1.0s after",
        "+2.5s after keyturn saw the event",
        "AWSCompromisedKeyQuarantineV2",
        "CloudTrail",
        "Remove the public copy",
    ] {
        assert!(n.text.contains(needle), "missing {needle:?} in\n{}", n.text);
    }
    assert!(n.subject.contains("Exposed key replaced and deleted"), "{}", n.subject);
    // Still active: says so first.
    let mut e = s.exposure.clone().unwrap();
    e.inactive_at = None;
    e.deleted_at = None;
    s.exposure = Some(e);
    s.status = Status::Compensated;
    let n = render(&s, &ctx(&keys));
    assert!(n.text.starts_with("Exposed key is STILL ACTIVE"), "{}", n.text);
    assert!(n.document["exposure"]["next_steps"][0].as_str().unwrap().contains("update-access-key"));
}

/// The provider's sentences of an exposed-key notice are the source's
/// (`CredentialSource::exposure_words`); notify keeps the layout. A source
/// with no words of its own gets neutral ones, naming no provider.
#[test]
fn an_exposed_key_notice_takes_the_providers_words_from_the_source() {
    let mut s = saga();
    s.status = Status::Compensated;
    s.effects.target = TargetState::Rejected;
    s.exposure = Some(exposed_old(None, None));
    let keys = [KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
    let iam = render(&s, &ctx(&keys));
    let neutral = render(&s, &Context { exposure: None, ..ctx(&keys) });
    let provider = ["aws iam update-access-key", "AWSCompromisedKeyQuarantine", "userIdentity.accessKeyId", "CloudTrail"];
    for needle in provider {
        assert!(iam.text.contains(needle), "the IAM source's words: missing {needle:?} in\n{}", iam.text);
        assert!(
            !neutral.text.contains(needle) && !neutral.document.to_string().contains(needle),
            "{needle:?} without the source's words:\n{}",
            neutral.text
        );
    }
    // The layout is the same: headline, timeline, the steps in order.
    for n in [&iam, &neutral] {
        assert!(n.text.starts_with("Exposed key is STILL ACTIVE"), "{}", n.text);
        assert!(n.document["exposure"]["next_steps"][0].as_str().unwrap().starts_with("The exposed key AKIAOLD still works"), "{}", n.document);
        assert_eq!(n.document["exposure"]["next_steps"].as_array().unwrap().len(), 4, "{}", n.document);
    }
    assert_eq!(iam.document["exposure"]["aws_quarantine"], crate::connectors::iam::EXPOSURE_WORDS.provider_action);
    // Uncovered keys: the registry's words for the subject intake reports.
    let words = crate::connectors::exposure_words_for(crate::intake::IAM_USER);
    assert_eq!(words, Some(&crate::connectors::iam::EXPOSURE_WORDS));
    let n = render_exposed_unmatched("1", "AKIAX", Some("bot"), "arn", None, "iam_access_key", words);
    assert!(n.text.contains("User:            IAM user bot") && n.text.contains("CloudTrail"), "{}", n.text);
    let n = render_exposed_unmatched("1", "AKIAX", Some("bot"), "arn", None, "iam_access_key", None);
    assert!(!n.text.contains("CloudTrail") && !n.text.contains("IAM user"), "{}", n.text);
}

#[tokio::test]
async fn put_events_retries_only_the_failed_entries() {
    use std::sync::Mutex;
    let calls: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());
    let retry = PutRetry { attempts: 4, base: std::time::Duration::ZERO };
    // Entry 2 fails twice (throttled), then goes through.
    let r = put_with_retry(vec![1u32, 2, 3], retry, |entries| {
        let n = {
            let mut c = calls.lock().unwrap();
            c.push(entries.clone());
            c.len()
        };
        async move { Ok(entries.iter().map(|e| (*e == 2 && n < 3).then(|| "ThrottlingException".to_string())).collect()) }
    })
    .await;
    assert_eq!(r, Ok(()));
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2, 3], vec![2], vec![2]]);
    // Failing for good: the last error codes, after the set number of attempts.
    let n = Mutex::new(0);
    let r = put_with_retry(vec![7u32], retry, |entries| {
        *n.lock().unwrap() += 1;
        async move { Ok(entries.iter().map(|_| Some("InternalFailure".to_string())).collect()) }
    })
    .await;
    assert_eq!(r, Err("InternalFailure".into()));
    assert_eq!(*n.lock().unwrap(), 4);
    // A call that fails as a whole is retried too.
    let n = Mutex::new(0);
    let r = put_with_retry(vec![7u32], retry, |entries| {
        let first = {
            let mut g = n.lock().unwrap();
            *g += 1;
            *g == 1
        };
        async move {
            if first {
                Err("events PutEvents: ServiceUnavailable".to_string())
            } else {
                Ok(entries.iter().map(|_| None).collect())
            }
        }
    })
    .await;
    assert_eq!(r, Ok(()));
}

#[test]
fn chat_messages_carry_no_markup_from_outside_and_stay_bounded() {
    // A user name from a finding is hostile: a mention, a link, a fence.
    let user = "<!channel> <@U1> <https://evil.example|click> ```\nmalicious";
    let n = render_unmatched("111122223333", user, "f-1", "iam_access_key");
    let chat = chat_message(&n);
    let all = serde_json::to_string(&chat).unwrap();
    for markup in ["<!channel>", "<@U1>", "<https://"] {
        assert!(!all.contains(markup), "{markup} reached the chat message: {all}");
    }
    assert_eq!(chat.content.description.matches("```").count(), 2, "the text cannot close its code block: {}", chat.content.description);
    assert!(
        chat.content.title.starts_with("🟡 No rotation for iam user ‹!channel›")
            || chat.content.title.starts_with("🟡 No rotation for iam user ‹!channel>"),
        "{}",
        chat.content.title
    );
    assert_eq!((chat.version, chat.source, chat.content.text_type), ("1.0", "custom", "client-markdown"));
    // A shell redirection is not markup and stays as written.
    let mut s = by_hand_saga();
    s.step = Step::AwaitNew;
    let chat = chat_message(&render_prompt(&s, &scim_ctx(), &hand(), false));
    assert!(chat.content.next_steps.iter().any(|x| x.contains("keyturn provide S-9 < token-file")), "{:?}", chat.content.next_steps);
    assert_eq!(chat.metadata.thread_id.as_deref(), Some("S-9"), "a saga's notices share a thread");
    // A long notice is cut, and says so.
    let items: Vec<(String, String, String)> = (0..200).map(|i| ("111122223333".to_string(), format!("user-{i:03}"), format!("finding-{i}"))).collect();
    let chat = chat_message(&render_unmatched_digest(&items, "iam_access_key"));
    assert!(chat.content.description.chars().count() < DESCRIPTION_MAX + 200, "{}", chat.content.description.len());
    assert!(chat.content.description.contains("(cut: the e-mail and `keyturn status` have all of it)"));
    assert!(chat.content.description.ends_with("```"));
}

/// Connector names and wording live under `connectors/` (the targets'
/// `HandWords`, advice and by-hand steps, the sources' `ExposureWords`): notify's code — comments and
/// tests aside — names none of them.
#[test]
fn notify_names_no_connector() {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs") {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/notify"), &mut all);
    assert!(all.len() >= 10, "the scan sees notify/: {all:?}");
    let mut hits = Vec::new();
    for f in &all {
        for (i, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for name in
                ["Entra", "Identity Center", "SCIM", "Auth0", "GitHub", "Test connection", "aws iam ", "AWSCompromisedKeyQuarantine", "accessKeyId"]
            {
                if line.contains(name) {
                    hits.push(format!("{}:{}: {name}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(hits.is_empty(), "connector wording in notify/:\n{}", hits.join("\n"));
}
