//! The rotation request API, black-box: request documents on the intake
//! queue and as `keyturn.requests` events on moto's EventBridge, a running
//! worker, answers and outcomes on SNS and — through a real rule on moto's
//! default bus — on EventBridge, invalid requests on the intake DLQ; and the
//! JSON Schema in `schemas/` checked against the same fixtures as keyturn's
//! own validation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::saga::Status;
use keyturn_testkit::env::{of_event as of, Options, RunningWorker, TestEnv};
use serde_json::{json, Value};

const BY_ID: &str = include_str!("../fixtures/requests/valid/by-rotation-id.json");
const BY_USER: &str = include_str!("../fixtures/requests/valid/by-account-and-user.json");
const T: Duration = Duration::from_secs(60);

async fn env(grace: &'static str) -> TestEnv {
    TestEnv::new(Options { intake: true, grace_period: grace, ..Options::default() }).await.expect("test environment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_by_rotation_id_starts_one_saga_answers_repeats_with_it_and_carries_its_correlation_id() {
    let env = env("0s").await;
    let events_url = env.outcome_events_queue().await.unwrap();
    // The same request twice on the queue before any worker runs (two
    // workers of a pipeline retrying): the idempotency key makes one saga.
    env.send_intake(BY_ID).await.unwrap();
    env.send_intake(BY_ID).await.unwrap();
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let done = env.wait_sagas_done(1, T).await;
    assert_eq!(done.len(), 1, "{done:#?}");
    let saga = &done[0];
    assert_eq!((saga.status, saga.trigger.as_str(), saga.rotation_id.as_str()), (Status::Succeeded, "request", "auth0-ses"));
    assert_eq!(saga.origin.correlation_id.as_deref(), Some("corr-7f3a9c"));
    let info = saga.origin.request.clone().unwrap();
    assert_eq!((info.requester.as_str(), info.idempotency_key.as_str()), ("jira-automation", "SEC-1234"));

    // The same request again, now as an EventBridge custom event: answered
    // with the first saga, nothing new.
    let detail: Value = serde_json::from_str(BY_ID).unwrap();
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("keyturn.requests")
        .detail_type("Rotation Request")
        .detail(detail.to_string())
        .build();
    let out = aws_sdk_eventbridge::Client::new(&env.sdk).put_events().entries(entry).send().await.unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    let mut seen = vec![];
    let start = Instant::now();
    while of(&seen, "rotation.request_accepted").len() < 3 {
        assert!(start.elapsed() < T, "expected three answers, saw {seen:#?}");
        seen.extend(env.notifications(1, Duration::from_secs(2)).await);
    }
    w.stop().await;
    assert_eq!(env.sagas().await.len(), 1, "a repeated idempotency key starts nothing");
    let answers = of(&seen, "rotation.request_accepted");
    let mut outcomes: Vec<&str> = answers.iter().map(|n| n.document["outcome"].as_str().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["duplicate", "duplicate", "started"], "one started, the two repeats answered with it");
    for a in &answers {
        assert_eq!(a.document["saga_id"], saga.saga_id.as_str());
        assert_eq!(a.attributes["correlation_id"], "corr-7f3a9c");
    }
    // The outcome: on SNS with the correlation id as attribute and in the document ...
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    let ok = of(&seen, "rotation.succeeded");
    assert_eq!(ok.len(), 1);
    assert_eq!((ok[0].attributes["correlation_id"].as_str(), ok[0].document["correlation_id"].as_str()), ("corr-7f3a9c", Some("corr-7f3a9c")));
    // ... and on EventBridge, routed by a real rule to SQS: one detail-type
    // per kind, the SNS document plus the correlation id as detail.
    let events = env.outcome_events(&events_url, 4, Duration::from_secs(20)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Rotation Request Accepted").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "Rotation Succeeded").count(), 1, "{kinds:?}");
    for e in &events {
        assert_eq!(e["source"], "keyturn.outcomes");
        assert_eq!(e["detail"]["correlation_id"], "corr-7f3a9c", "{e}");
    }
    let succeeded = events.iter().find(|e| e["detail-type"] == "Rotation Succeeded").unwrap();
    assert_eq!(succeeded["detail"], ok[0].document, "the event's detail is the SNS JSON document");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_by_account_and_user_may_shorten_the_grace_period() {
    // The rotation's grace period is a week; the request asks for none.
    let env = env("7d").await;
    let mut body: Value = serde_json::from_str(BY_USER).unwrap();
    body["overrides"] = json!({"grace_period": "0s"});
    env.send_intake(&body.to_string()).await.unwrap();
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let done = env.wait_sagas_done(1, T).await;
    w.stop().await;
    let saga = &done[0];
    assert_eq!(saga.status, Status::Succeeded, "no week-long wait: {saga:#?}");
    assert_eq!(saga.origin.overrides.grace_period, Some(0));
    assert_eq!(saga.origin.correlation_id.as_deref(), Some("offboarding-2026-11-30-jdoe"), "no correlation id given: the idempotency key");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1, "old key deleted at once: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_go_to_the_intake_dlq_with_reasons_and_unknown_rotations_are_reported() {
    let env = env("1h").await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/requests/invalid");
    let mut sent = 0;
    let mut names = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        env.send_intake(&std::fs::read_to_string(&path).unwrap()).await.unwrap();
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        sent += 1;
    }
    // Valid, but longer than the policy allows.
    let mut longer: Value = serde_json::from_str(BY_ID).unwrap();
    longer["idempotency_key"] = json!("longer-grace");
    longer["overrides"] = json!({"grace_period": "30d"});
    env.send_intake(&longer.to_string()).await.unwrap();
    sent += 1;
    // Valid, but no such rotation: reported, not dead-lettered.
    let mut unknown: Value = serde_json::from_str(BY_ID).unwrap();
    unknown["rotation_id"] = json!("no-such-rotation");
    unknown["idempotency_key"] = json!("unknown-1");
    env.send_intake(&unknown.to_string()).await.unwrap();

    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let dead = env.intake_dlq(sent, T).await;
    let mut seen = vec![];
    let start = Instant::now();
    while of(&seen, "rotation.request_rejected").len() < 2 {
        assert!(start.elapsed() < T, "expected two rejections, saw {seen:#?}");
        seen.extend(env.notifications(1, Duration::from_secs(2)).await);
    }
    w.stop().await;
    assert_eq!(dead.len(), sent, "every invalid request is dead-lettered ({names:?}): {dead:#?}");
    let reasons: Vec<String> = dead.iter().map(|(_, r)| r.clone().expect("a keyturn_reason attribute")).collect();
    for want in [
        "idempotency_key: required",
        "rotation_id: give either rotation_id or account_id and user_name, not both",
        "name the rotation",
        "account_id: required with user_name",
        "unknown field \"priority\"",
        "schema: this keyturn understands only keyturn.rotation-request.v1",
        "overrides.grace_period: must be a duration",
        "overrides: unknown field \"propagation_timeout\"",
        "account_id: must be 12 characters long",
        "reason: must be 1 to 1024 characters long",
        "idempotency_key: may contain only",
        "event is not a JSON object",
        "overrides.grace_period: 30d is longer than the rotation's grace_period 1h",
    ] {
        assert!(reasons.iter().any(|r| r.contains(want)), "no reason says {want:?}: {reasons:#?}");
    }
    assert!(reasons.iter().all(|r| r.starts_with("invalid rotation request: ") || r.starts_with("malformed event")), "{reasons:#?}");
    let rejected = of(&seen, "rotation.request_rejected");
    let unknown_answer = rejected.iter().find(|n| n.document["outcome"] == "unknown_rotation").expect("the unknown rotation is reported");
    assert!(unknown_answer.document["reason_rejected"].as_str().unwrap().contains("no-such-rotation"));
    assert_eq!(unknown_answer.attributes["correlation_id"], "corr-7f3a9c");
    assert!(rejected.iter().any(|n| n.document["outcome"] == "rejected"), "the policy refusal is answered too");
    assert!(env.sagas().await.is_empty(), "no invalid request started anything");
}

/// `schemas/rotation-request.v1.json` and keyturn's validation agree on every
/// fixture: the valid ones pass both, the invalid ones fail both, and no
/// reason keyturn gives repeats a value of the request. The schema
/// is checked with Python's `jsonschema` (installed with moto's server
/// extras; `scripts/ensure-python-tools` makes sure).
#[test]
fn the_json_schema_and_keyturn_agree_on_every_fixture() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut files = vec![];
    for kind in ["valid", "invalid"] {
        for entry in std::fs::read_dir(format!("{root}/tests/fixtures/requests/{kind}")).unwrap() {
            files.push((kind == "valid", entry.unwrap().path()));
        }
    }
    assert!(files.iter().filter(|(v, _)| *v).count() >= 3 && files.iter().filter(|(v, _)| !*v).count() >= 10);
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
for path in sys.argv[2:]:
    print(path, "valid" if v.is_valid(json.load(open(path))) else "invalid")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("{root}/schemas/rotation-request.v1.json"))
        .args(files.iter().map(|(_, p)| p))
        .output()
        .expect("python3");
    assert!(out.status.success(), "python jsonschema failed (scripts/ensure-python-tools installs it): {}", String::from_utf8_lossy(&out.stderr));
    let verdicts = String::from_utf8(out.stdout).unwrap();
    for (valid, path) in &files {
        let line = verdicts.lines().find(|l| l.starts_with(&*path.to_string_lossy())).unwrap_or_else(|| panic!("no verdict for {path:?}"));
        let by_schema = line.ends_with(" valid");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let by_keyturn = keyturn::intake::parse_request(&doc);
        assert_eq!(by_schema, *valid, "schema on {path:?}");
        assert_eq!(by_keyturn.is_ok(), *valid, "keyturn on {path:?}: {by_keyturn:?}");
        if let Err(e) = by_keyturn {
            let reason = e.to_string();
            for s in echo_candidates(&doc) {
                assert!(!reason.contains(&s), "{path:?}: the reason repeats {s:?} from the request: {reason}");
            }
        }
    }
}

/// What a reason must not repeat from a request: every string value (of six
/// characters or more, so that the words of the reason itself do not count)
/// and every key that does not look like a field name, at any depth. The
/// schema name is the exception: a reason may say which one keyturn reads.
fn echo_candidates(v: &Value) -> Vec<String> {
    let field_like = |k: &str| k.len() <= 32 && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let mut out = vec![];
    match v {
        Value::String(s) if s.chars().count() >= 6 && s != keyturn::intake::REQUEST_SCHEMA => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| out.extend(echo_candidates(x))),
        Value::Object(o) => {
            for (k, x) in o {
                if !field_like(k) {
                    out.push(k.clone());
                }
                out.extend(echo_candidates(x));
            }
        }
        _ => {}
    }
    out
}
