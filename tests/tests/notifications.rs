//! What subscribers get, through moto's SNS: every notice of
//! `tests/golden/notifications/` (the golden files the library's unit test
//! holds its renderers to) is published by the real `Notifier`; an SQS queue
//! subscribed with raw delivery and one with the JSON envelope must receive
//! exactly the golden document, subject and attributes, byte for byte, and
//! the chat topic one custom notification per notice that the schema of the
//! chat integration's format (`schemas/chat-notification.json`) accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;
use keyturn::notify::{chat_message, Notification, Notifier};
use keyturn_testkit::env::{drain, sdk_config};
use keyturn_testkit::moto::Moto;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// One golden case: its name, the notice rebuilt from its files, and the document's exact bytes.
struct Golden {
    name: String,
    n: Notification,
    json: String,
}

fn goldens() -> Vec<Golden> {
    let dir = root().join("tests/golden/notifications");
    let mut out = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(name) = file.strip_suffix(".txt") else { continue };
        let txt = std::fs::read_to_string(&path).unwrap();
        let (subject, text) = txt.split_once("\n\n").unwrap();
        let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let sns: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.sns.json"))).unwrap()).unwrap();
        let attributes = sns["message_attributes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (&*Box::leak(k.clone().into_boxed_str()), v.as_str().unwrap().to_string()))
            .collect();
        let n = Notification {
            subject: subject.strip_prefix("Subject: ").unwrap().to_string(),
            text: text.to_string(),
            document: serde_json::from_str(&json).unwrap(),
            attributes,
        };
        out.push(Golden { name: name.to_string(), n, json });
    }
    assert!(out.len() >= 30, "the golden notices are there: {}", out.len());
    out
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let url = sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
    let attrs = sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::QueueArn).send().await.unwrap();
    let arn = attrs.attributes.unwrap()[&QueueAttributeName::QueueArn].clone();
    (url, arn)
}

/// Check chat messages against the chat format's schema with Python's
/// `jsonschema` (as `requests.rs` checks the request schema).
fn schema_verdicts(schema: &str, docs: &[String]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("keyturn-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = vec![];
    for (i, d) in docs.iter().enumerate() {
        let f = dir.join(format!("{i}.json"));
        std::fs::write(&f, d).unwrap();
        files.push(f);
    }
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
for path in sys.argv[2:]:
    errors = sorted(e.message for e in v.iter_errors(json.load(open(path))))
    print("valid" if not errors else "invalid: " + "; ".join(errors))
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(root().join(schema)).args(&files).output().expect("python3");
    assert!(out.status.success(), "python jsonschema failed (scripts/ensure-python-tools installs it): {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_and_json_subscribers_get_exactly_the_golden_notices_and_chat_gets_its_format() {
    let moto = Moto::start(&[]).await.unwrap();
    let sdk = sdk_config(&moto.endpoint, Credentials::new("testing", "testing", None, None, "keyturn-tests")).await;
    let (sns, sqs) = (aws_sdk_sns::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
    let topic = sns.create_topic().name("keyturn").send().await.unwrap().topic_arn.unwrap();
    let chat_topic = sns.create_topic().name("keyturn-chat").send().await.unwrap().topic_arn.unwrap();
    let (raw_url, raw_arn) = queue(&sqs, "raw").await;
    let (env_url, env_arn) = queue(&sqs, "envelope").await;
    let (chat_url, chat_arn) = queue(&sqs, "chat").await;
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(&raw_arn).attributes("RawMessageDelivery", "true").send().await.unwrap();
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(&env_arn).send().await.unwrap();
    sns.subscribe().topic_arn(&chat_topic).protocol("sqs").endpoint(&chat_arn).attributes("RawMessageDelivery", "true").send().await.unwrap();

    let goldens = goldens();
    let notifier = Notifier::new(sns.clone(), &topic).with_chat(&chat_topic);
    for g in &goldens {
        notifier.publish(&g.n).await.unwrap_or_else(|e| panic!("{}: {e}", g.name));
    }
    let wait = Duration::from_secs(60);

    // Raw delivery: the body is the document, byte for byte.
    let mut raw: Vec<String> = drain(&sqs, &raw_url, goldens.len(), wait).await.into_iter().map(|(b, _)| b).collect();
    let mut want: Vec<String> = goldens.iter().map(|g| g.json.clone()).collect();
    raw.sort();
    want.sort();
    assert_eq!(raw.len(), want.len(), "one raw message per notice");
    for (got, want) in raw.iter().zip(&want) {
        assert_eq!(got, want, "a raw subscriber got something else than the golden document");
    }

    // The JSON envelope: Message, Subject and MessageAttributes as the golden files hold them.
    let envelopes = drain(&sqs, &env_url, goldens.len(), wait).await;
    assert_eq!(envelopes.len(), goldens.len(), "one envelope per notice");
    let mut unmatched: Vec<&Golden> = goldens.iter().collect();
    for (body, _) in &envelopes {
        let e: Value = serde_json::from_str(body).unwrap();
        let attrs: BTreeMap<String, String> =
            e["MessageAttributes"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["Value"].as_str().unwrap().to_string())).collect();
        let at = unmatched
            .iter()
            .position(|g| {
                e["Message"].as_str() == Some(g.json.as_str())
                    && e["Subject"].as_str() == Some(g.n.subject.as_str())
                    && attrs == g.n.attributes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.clone())).collect()
            })
            .unwrap_or_else(|| panic!("an envelope no golden notice matches: {body}"));
        unmatched.remove(at);
    }
    assert!(unmatched.is_empty());

    // Chat: one custom notification per notice, as `chat_message` builds it, valid against the format's schema.
    let chats: Vec<String> = drain(&sqs, &chat_url, goldens.len(), wait).await.into_iter().map(|(b, _)| b).collect();
    assert_eq!(chats.len(), goldens.len(), "one chat message per notice");
    let mut expected: Vec<String> = goldens.iter().map(|g| serde_json::to_string(&chat_message(&g.n)).unwrap()).collect();
    let mut got = chats.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let verdicts = schema_verdicts("schemas/chat-notification.json", &chats);
    assert_eq!(verdicts.len(), chats.len());
    for (v, c) in verdicts.iter().zip(&chats) {
        assert_eq!(v, "valid", "{c}");
    }
    // The schema can fail: a message without `content.description`, with a misspelt field, or another version.
    let mut bad: Value = serde_json::from_str(&chats[0]).unwrap();
    bad["content"].as_object_mut().unwrap().remove("description");
    let mut typo: Value = serde_json::from_str(&chats[0]).unwrap();
    typo["content"]["nextstep"] = Value::from("x");
    let mut version: Value = serde_json::from_str(&chats[0]).unwrap();
    version["version"] = Value::from("2.0");
    for v in schema_verdicts("schemas/chat-notification.json", &[bad.to_string(), typo.to_string(), version.to_string()]) {
        assert!(v.starts_with("invalid"), "{v}");
    }
}

/// Every golden document is valid against `schemas/notification.v1.json`,
/// and every outcome event (`detail` = document + `correlation_id`) against
/// its `$defs/outcome_event`; documents with a field missing, misspelt or of
/// the wrong type are not.
#[test]
fn every_notice_and_outcome_event_matches_the_published_schema() {
    let goldens = goldens();
    let dir = root().join("tests/golden/notifications");
    let mut docs: Vec<String> = goldens.iter().map(|g| g.json.clone()).collect();
    let events: Vec<String> = goldens
        .iter()
        .map(|g| {
            let sns: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{}.sns.json", g.name))).unwrap()).unwrap();
            let detail: Value = serde_json::from_str(sns["event"]["detail"].as_str().unwrap()).unwrap();
            serde_json::json!({"source": sns["event"]["source"], "detail-type": sns["event"]["detail-type"], "detail": detail}).to_string()
        })
        .collect();
    let n = docs.len();
    // Wrong ones, each from a valid document.
    let first = |event: &str| -> Value { goldens.iter().map(|g| g.n.document.clone()).find(|d| d["event"] == event).unwrap() };
    let mut missing = first("rotation.succeeded");
    missing.as_object_mut().unwrap().remove("saga_id");
    let mut misspelt = first("rotation.action_required");
    misspelt["comands"] = Value::from(Vec::<String>::new());
    let mut retyped = first("rotation.quarantined");
    retyped["consecutive_failures"] = Value::from("3");
    let mut unknown_event = first("rotation.evidence");
    unknown_event["event"] = Value::from("rotation.evidenced");
    docs.extend([missing, misspelt, retyped, unknown_event].map(|d| d.to_string()));

    let script = r##"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
doc = Draft202012Validator(schema)
event = Draft202012Validator({"$ref": "#/$defs/outcome_event", "$defs": schema["$defs"]})
docs = json.load(sys.stdin)
for d in docs["documents"]:
    print("document", "valid" if doc.is_valid(json.loads(d)) else "invalid")
for e in docs["events"]:
    errors = [x.message for x in event.iter_errors(json.loads(e))]
    print("event", "valid" if not errors else "invalid " + "; ".join(errors)[:300])
"##;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root().join("schemas/notification.v1.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(serde_json::json!({"documents": docs, "events": events}).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python jsonschema failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), docs.len() + events.len());
    for (i, line) in lines.iter().enumerate() {
        if i < n {
            assert_eq!(line, "document valid", "{}: {}", goldens[i].name, docs[i]);
        } else if i < docs.len() {
            assert_eq!(line, "document invalid", "a wrong document passed: {}", docs[i]);
        } else {
            assert_eq!(line, "event valid", "{}: {}", goldens[i - docs.len()].name, events[i - docs.len()]);
        }
    }
}
