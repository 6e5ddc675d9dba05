//! Who can make keyturn act (docs/security.md, "Intake: who can make keyturn
//! act"), black-box: forged messages on the real intake queue in moto, a
//! running worker (in-process, and the `keyturn` binary where its log lines
//! matter), the intake DLQ, SNS and moto's IAM.
//!
//! moto gives every message the same `SenderId` (`AIDAIT2UOQQY3AUEKVGXU`),
//! so a sender that is not allowed is one whose id the configuration does
//! not list, and an allowed one is that id.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::config::Config;
use keyturn_testkit::env::{keyturn_bin, of_event as of, Options, RunningWorker, TestEnv, USER};
use keyturn_testkit::fault_proxy::FaultProxy;
use serde_json::{json, Value};

const EXPOSED: &str = include_str!("../fixtures/health-key-exposed.json");
const CONSOLIDATED: &str = include_str!("../fixtures/securityhub-iam3-consolidated.json");
const BY_ID: &str = include_str!("../fixtures/requests/valid/by-rotation-id.json");
const MOTO_SENDER: &str = "AIDAIT2UOQQY3AUEKVGXU";
const T: Duration = Duration::from_secs(60);

async fn env() -> TestEnv {
    TestEnv::new(Options { intake: true, ..Options::default() }).await.expect("test environment")
}

fn worker_for(cfg: &Config, clients: &keyturn::aws::Clients) -> RunningWorker {
    let engine = Arc::new(keyturn::app::engine_with(cfg, clients, "w1".into(), keyturn::app::sqs_queue(cfg, clients)));
    RunningWorker::spawn_with_intake(engine, &cfg.worker, keyturn::app::intake_queue(cfg, clients).map(Arc::new))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_exposure_naming_another_account_is_dead_lettered_and_the_covered_key_stays_active() {
    let env = env().await;
    let cfg = env.config_with("\n[exposure]\ndeactivate_uncovered = true\n", true);
    let key = env.old_keys[0].0.clone();
    let mut v: Value = serde_json::from_str(&EXPOSED.replace("AKIAEXPOSEDKEY000001", &key)).unwrap();
    v["account"] = "999999999999".into();
    env.send_intake(&v.to_string()).await.unwrap();
    let w = worker_for(&cfg, &env.clients);
    let dlq = env.intake_dlq(1, T).await;
    w.stop().await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let reason = dlq[0].1.clone().unwrap_or_default();
    assert!(reason.contains("does not serve") && reason.contains("999999999999"), "{reason}");
    assert_eq!(env.key_status(USER, &key).await, Some(true), "the worker's own covered key is untouched");
    assert!(env.sagas().await.is_empty(), "nothing started");
    let seen = env.notifications(0, Duration::from_secs(2)).await;
    assert!(of(&seen, "rotation.unmatched").is_empty(), "nothing reported as uncovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_a_sender_not_allowed_goes_to_the_dlq_and_an_allowed_one_is_recorded() {
    let env = env().await;
    // Not allowed: moto's sender is not in the list.
    let deny = env.config_with("\n[requests]\nallowed_senders = [\"AIDAEXAMPLEUSER00001\", \"210987654321\"]\n", true);
    env.send_intake(BY_ID).await.unwrap();
    let w = worker_for(&deny, &env.clients);
    let dlq = env.intake_dlq(1, T).await;
    w.stop().await;
    assert_eq!(dlq.len(), 1);
    let reason = dlq[0].1.clone().unwrap_or_default();
    assert!(reason.contains("allowed_senders") && reason.contains(MOTO_SENDER), "{reason}");
    assert!(env.sagas().await.is_empty(), "a request from anyone else changes nothing");
    assert!(of(&env.notifications(0, Duration::from_secs(2)).await, "rotation.request_accepted").is_empty());

    // Allowed: the saga and the answer carry who really sent it, next to
    // the requester the document claims.
    let allow = env.config_with(&format!("\n[requests]\nallowed_senders = [\"{MOTO_SENDER}\"]\n"), true);
    env.send_intake(BY_ID).await.unwrap();
    let w = worker_for(&allow, &env.clients);
    let done = env.wait_sagas_done(1, T).await;
    w.stop().await;
    let info = done[0].origin.request.clone().expect("request info");
    assert_eq!(info.sender.as_deref(), Some(MOTO_SENDER));
    assert_eq!(info.requester, "jira-automation", "the self-declared requester is kept as well");
    let seen = env.notifications(2, Duration::from_secs(10)).await;
    let accepted = of(&seen, "rotation.request_accepted");
    assert_eq!(accepted[0].document["request"]["sender"], MOTO_SENDER);
    let outcome = of(&seen, "rotation.succeeded");
    assert_eq!(outcome[0].document["request"]["sender"], MOTO_SENDER, "the outcome notice (and event) names the sender");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_message_gives_bounded_notices_and_iam_calls() {
    let env = env().await;
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    let clients = env.clients_via(&proxy.endpoint).await;
    // 1,000 unknown users in one finding.
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"Type": "AwsIamUser", "Id": format!("arn:aws:iam::123456789012:user/flood-{i:04}"), "Partition": "aws", "Region": "us-east-1"}))
        .collect();
    let mut finding: Value = serde_json::from_str(CONSOLIDATED).unwrap();
    finding["detail"]["findings"][0]["Resources"] = Value::Array(users);
    // 300 made-up key ids in one exposure event.
    let keys: Vec<Value> = (0..300).map(|i| json!({"entityValue": format!("AKIAFLOOD{i:011}")})).collect();
    let mut exposure: Value = serde_json::from_str(EXPOSED).unwrap();
    exposure["detail"]["affectedEntities"] = Value::Array(keys);
    env.send_intake(&finding.to_string()).await.unwrap();
    env.send_intake(&exposure.to_string()).await.unwrap();
    let w = worker_for(&env.config, &clients);
    let dlq = env.intake_dlq(2, T).await;
    w.stop().await;
    assert_eq!(dlq.len(), 2, "both messages end on the DLQ, after their first 20 items: {:?}", dlq.iter().map(|d| &d.1).collect::<Vec<_>>());
    for (_, reason) in &dlq {
        let r = reason.clone().unwrap_or_default();
        assert!(r.contains("first 20"), "{r}");
    }
    let seen = env.notifications(2, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 2, "one digest per message: {:?}", seen.iter().map(|n| n.subject.clone()).collect::<Vec<_>>());
    let unmatched = of(&seen, "rotation.unmatched");
    let users = unmatched.iter().find(|n| n.document["users"].is_array()).expect("the users' digest");
    assert_eq!(users.document["count"], 20);
    let keys = unmatched.iter().find(|n| n.document["keys"].is_array()).expect("the keys' digest");
    assert_eq!(keys.document["count"], 20);
    let lookups = proxy.calls("GetAccessKeyLastUsed");
    assert!(lookups <= 20, "one owner lookup per acted-on key: {lookups}");
    assert!(proxy.calls("Scan") <= 1, "the saga list is read once per message: {}", proxy.calls("Scan"));
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keyturn-trust-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_with_crlf_is_refused_without_splitting_a_log_line_or_a_subject() {
    let env = env().await;
    let dir = tmpdir("crlf");
    let cfg = env.write_config(&dir).unwrap();
    let mut v: Value = serde_json::from_str(CONSOLIDATED).unwrap();
    v["detail"]["findings"][0]["Resources"][0]["Details"] = json!({"AwsIamUser": {"UserName": "nobody\r\nFORGED LOG LINE level=ERROR"}});
    v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/nobody".into();
    env.send_intake(&v.to_string()).await.unwrap();
    let mut worker = Command::new(keyturn_bin())
        .args(["worker", "--config", cfg.to_str().unwrap()])
        .envs(env.cli_env().iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dlq = env.intake_dlq(1, T).await;
    Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    let start = Instant::now();
    while worker.try_wait().unwrap().is_none() && start.elapsed() < T {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = worker.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(dlq.len(), 1);
    let reason = dlq[0].1.clone().unwrap_or_default();
    assert!(reason.contains("invalid IAM user name") && !reason.contains("FORGED"), "{reason}");
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "a forged name split a log line:\n{log}");
    let seen = env.notifications(0, Duration::from_secs(2)).await;
    assert!(seen.iter().all(|n| !n.subject.chars().any(char::is_control)), "{:?}", seen.iter().map(|n| &n.subject).collect::<Vec<_>>());
    assert!(of(&seen, "rotation.unmatched").is_empty(), "the name is never matched nor reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_a_user_name_with_a_newline() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let dir = tmpdir("name");
    let cfg = env.write_config(&dir).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(&format!("user_name = \"{USER}\"")));
    std::fs::write(&cfg, text.replace(&format!("user_name = \"{USER}\""), "user_name = \"auth0\\nsender\"")).unwrap();
    let out = Command::new(keyturn_bin())
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .envs(env.cli_env().iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("user_name") && err.contains("IAM user name"), "{err}");
}
