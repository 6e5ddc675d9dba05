//! Black-box tests of the IAM access key → Auth0 email provider rotation,
//! against a real `moto_server` on loopback and the fake Auth0.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use keyturn::queue::StepMessage;
use keyturn::saga::{Status, Step, TargetState};
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{wait_queue_idle, Options, RunningWorker, TestEnv, USER};
use keyturn_testkit::recording::RecordingQueue;

const T: Duration = Duration::from_secs(60);

async fn env() -> TestEnv {
    TestEnv::new(Options::default()).await.expect("test environment")
}

/// Run one rotation with a worker until the saga ends.
async fn rotate_to_end<Q: keyturn::queue::Queue>(env: &TestEnv, engine: Arc<keyturn::engine::Engine<Q>>) -> (String, keyturn::saga::Saga) {
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("expected a new saga") };
    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;
    (saga_id, saga)
}

/// Secrets this test created or saw must appear nowhere but where they belong.
fn assert_no_leak(haystacks: &[(&str, &str)], secrets: &[&str]) {
    for secret in secrets {
        assert!(secret.len() >= 16, "scan for a real secret, not {secret:?}");
        for (name, text) in haystacks {
            assert!(!text.contains(secret), "secret leaked into {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_rotates_key_updates_auth0_and_retires_old_key() {
    let env = env().await;
    let (old_id, old_secret) = env.old_keys[0].clone();
    let queue = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);

    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("expected a new saga") };
    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;

    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    // One key before and after, a different one.
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let new_id = keys[0].id.clone();
    assert_ne!(new_id, old_id);
    assert!(keys[0].active);
    assert_eq!(saga.keys.new_key.as_deref(), Some(new_id.as_str()));
    // Auth0 received the new key and its secret.
    let p = env.auth0.provider().unwrap();
    assert_eq!(p.access_key_id, new_id);
    assert_eq!(p.region, "eu-west-1");
    assert!(p.enabled);
    assert_eq!(env.auth0.patches().len(), 1);
    // The secret Auth0 received authenticates as the user (moto's STS maps the key id to its user).
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&env.sdk)
            .credentials_provider(aws_credential_types::Credentials::new(&new_id, &p.secret_access_key, None, None, "t"))
            .build(),
    );
    let who = sts.get_caller_identity().send().await.unwrap();
    assert!(who.arn().unwrap().ends_with(&format!(":user/{USER}")), "{:?}", who.arn());
    // Every forward step ran, in order, once.
    let steps: Vec<Step> = saga.outcome.history.iter().filter(|a| a.outcome == "ok").map(|a| a.step).collect();
    assert_eq!(
        steps,
        [Step::Start, Step::IssueNew, Step::ProveNew, Step::PushToTarget, Step::VerifyTarget, Step::DisableOld, Step::RetireOld, Step::Finalize]
    );
    assert_eq!(saga.effects.target, TargetState::HoldsNew);
    assert!(!saga.keys.secret_stored);

    // The success notification arrived through the topic's SQS subscription.
    let notes = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    let n = &notes[0];
    assert_eq!(n.attributes["event"], "rotation.succeeded");
    assert_eq!(n.attributes["severity"], "info");
    assert_eq!(n.attributes["rotation_id"], "auth0-ses");
    assert_eq!(n.attributes["credential_kind"], "iam_access_key");
    assert_eq!(n.attributes["target_kind"], "auth0_email_provider");
    assert_eq!(n.subject, "[keyturn] Rotation succeeded: auth0-ses (iam user auth0-ses-sender) -> Auth0 example.eu.auth0.com");
    assert_eq!(n.document["saga_id"], saga_id.as_str());
    let keys_doc = n.document["keys"].as_array().unwrap();
    assert!(keys_doc.iter().any(|k| k["id"] == old_id.as_str() && k["state"] == "deleted"));
    assert!(keys_doc.iter().any(|k| k["id"] == new_id.as_str() && k["state"] == "active"));

    // The lock is released: a second rotation can start.
    assert!(matches!(engine.request("auth0-ses", "manual").await.unwrap(), Created::New(_)));

    // No secret in logs, SQS bodies, DynamoDB items or notifications.
    let logs = keyturn_testkit::capture::logs();
    let bodies = queue.bodies().join("\n");
    let table = env.table_dump().await;
    let notes_raw = notes.iter().map(|n| n.raw.clone()).collect::<Vec<_>>().join("\n");
    assert!(!bodies.is_empty() && !table.is_empty() && !logs.is_empty());
    let tokens = env.auth0.tokens_issued();
    let mut secrets = vec![p.secret_access_key.as_str(), old_secret.as_str(), env.auth0_client_secret.as_str()];
    secrets.extend(tokens.iter().map(String::as_str));
    assert_no_leak(&[("logs", &logs), ("SQS bodies", &bodies), ("DynamoDB", &table), ("notifications", &notes_raw)], &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_insufficient_scope_compensates_and_notifies() {
    let env = env().await;
    let old_id = env.old_keys[0].0.clone();
    env.auth0.script_patch(Fault::InsufficientScope);
    let (saga_id, saga) = rotate_to_end(&env, Arc::new(env.engine("w1"))).await;

    assert_eq!(saga.status, Status::Compensated, "{saga:#?}");
    let f = saga.outcome.failure.as_ref().unwrap();
    assert_eq!((f.step, f.code.as_str(), f.operator_fixable), (Step::PushToTarget, "insufficient_scope", true));
    // The new key is deleted, the old key active and untouched.
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, old_id);
    assert!(keys[0].active);
    assert!(saga.effects.new_revoked);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, old_id, "Auth0 unchanged");
    // A permanent 403 is not retried.
    assert_eq!(env.auth0.patches().len(), 1);

    let notes = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(notes.len(), 1);
    let n = &notes[0];
    assert_eq!(n.attributes["event"], "rotation.failed");
    assert_eq!(n.attributes["severity"], "error");
    assert_eq!(n.subject, "[keyturn] Rotation failed: auth0-ses (iam user auth0-ses-sender) -> Auth0 example.eu.auth0.com");
    let d = &n.document;
    assert_eq!(d["rotation_id"], "auth0-ses");
    assert_eq!(d["saga_id"], saga_id.as_str());
    assert_eq!(d["status"], "compensated");
    assert_eq!(d["failure"]["step"], "push_to_target");
    assert_eq!(d["failure"]["code"], "insufficient_scope");
    assert_eq!(d["failure"]["operator_fixable"], true);
    assert!(d["failure"]["message"].as_str().unwrap().contains("Insufficient scope"));
    assert!(d["rolled_back"][0].as_str().unwrap().starts_with("deleted new key"));
    assert!(d["recommended_action"].as_str().unwrap().contains("update:email_provider"));
    assert_eq!(d["status_command"], format!("keyturn status {saga_id}"));
    assert_eq!(d["target"]["state"], "unchanged (it rejected the new key)");
    let ks = d["keys"].as_array().unwrap();
    assert!(ks.iter().any(|k| k["id"] == old_id.as_str() && k["state"] == "active" && k["role"] == "old key"));
    assert!(ks.iter().any(|k| k["role"] == "new key" && k["state"] == "deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_rate_limit_is_retried_per_headers() {
    let env = env().await;
    env.auth0.script_patch(Fault::RateLimited { retry_after: Some(2), reset_in: 5 });
    let (_, saga) = rotate_to_end(&env, Arc::new(env.engine("w1"))).await;

    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let patches = env.auth0.patches();
    assert_eq!(patches.iter().map(|p| p.status).collect::<Vec<_>>(), [429, 200]);
    let waited = patches[1].at - patches[0].at;
    assert!(waited >= Duration::from_secs(2), "Retry-After: 2 honoured, waited {waited:?}");
    assert_eq!(env.auth0.provider().unwrap().access_key_id, saga.keys.new_key.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_gives_the_same_end_state() {
    // A grace period, so a step waits and its message travels through the queue.
    let env = TestEnv::new(Options { grace_period: "2s", ..Options::default() }).await.unwrap();
    let queue = RecordingQueue::new(env.sqs_queue(), true);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    // Two workers, so duplicates really race.
    let other = Arc::new(env.engine_with("w2", queue.clone()));
    let w1 = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let w2 = RunningWorker::spawn(other, &env.config.worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, T).await;
    // Every duplicate is recognised (stale token, or lost the lease race) and
    // dropped. A duplicate that met a live lease comes back when it ends, so
    // poll rather than sleep.
    let dropped = || keyturn_testkit::capture::logs().lines().filter(|l| l.contains(&saga_id) && l.contains("stale or duplicate message")).count();
    // Each message sent has a copy; the worker sends a message only when a
    // step must wait (here the request's, and the re-arms of the grace period).
    let copies = || queue.bodies().len() / 2;
    let start = std::time::Instant::now();
    while dropped() < copies() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w1.stop().await;
    w2.stop().await;

    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(copies() >= 2, "the request's message and the grace period's were sent twice: {:?}", queue.bodies());
    assert!(dropped() >= copies(), "every copy dropped (the sweeper may add more under load): {} of {}", dropped(), copies());
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1, "no extra key: {keys:?}");
    assert_eq!(Some(keys[0].id.as_str()), saga.keys.new_key.as_deref());
    assert_eq!(env.auth0.patches().len(), 1, "exactly one PATCH");
    assert_eq!(env.notifications(1, Duration::from_secs(5)).await.len(), 1, "one notification");
    // Each forward step succeeded exactly once.
    let oks = saga.outcome.history.iter().filter(|a| a.outcome == "ok").count();
    assert_eq!(oks, 8, "{:#?}", saga.outcome.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_key_creation_cleans_up_the_orphan() {
    let env = env().await;
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    engine.faults().crash_after_issue.store(1, std::sync::atomic::Ordering::SeqCst);
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };

    // After the crash the user holds the old key and the orphan.
    let store = engine.store().clone();
    let mut orphan = None;
    for _ in 0..100 {
        let keys = env.user_keys().await;
        if keys.len() == 2 {
            orphan = keys.into_iter().map(|k| k.id).find(|id| id != &old_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orphan = orphan.expect("the crashed attempt created a key");
    let s = store.load(&saga_id).await.unwrap().unwrap();
    assert!(s.saga.keys.new_key.is_none(), "the crash happened before the key was recorded");
    assert_eq!(s.saga.keys.issue_intents, 1, "the intent was recorded before IAM was called");

    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(saga.keys.issue_intents, 2);
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1, "exactly one key remains: {keys:?}");
    assert_ne!(keys[0].id, orphan, "the orphan was deleted");
    assert_ne!(keys[0].id, old_id);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, keys[0].id);
}

/// Issue 20, item 5: a person creates a key right after `start` listed the
/// user's keys. keyturn's `CreateAccessKey` then hits the two-key limit (it
/// created nothing), so the person's key is neither an orphan nor one it was
/// asked to replace: it is never deleted, and the saga stops in needs
/// attention naming both keys. (Before, the retry deleted it as an "orphan"
/// and the saga succeeded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_a_person_made_after_start_is_never_deleted() {
    let env = env().await;
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let iam = env.clients.iam.clone();
    engine.faults().before_issue.set(async move {
        let k = iam.create_access_key().user_name(USER).send().await.expect("the person's key");
        let _ = tx.send(k.access_key().unwrap().access_key_id().to_string());
    });
    let (_, saga) = rotate_to_end(&env, engine).await;
    let person = rx.await.expect("the hook ran between start and issue_new");

    assert_eq!(saga.status, Status::NeedsAttention, "{saga:#?}");
    let f = saga.outcome.failure.as_ref().unwrap();
    assert_eq!((f.step, f.code.as_str()), (Step::IssueNew, "UnknownKey"), "{f:?}");
    assert!(f.message.contains(&person) && f.message.contains(&old_id), "both keys named: {}", f.message);
    assert!(saga.keys.new_key.is_none(), "keyturn created no key");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.id == person && k.active), "the person's key was not deleted: {keys:?}");
    assert!(keys.iter().any(|k| k.id == old_id && k.active), "the old key is untouched: {keys:?}");
    assert!(env.auth0.patches().is_empty(), "the target was not touched");
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.needs_attention", "{:?}", n[0].attributes);
    assert!(n[0].raw.contains(&person) && n[0].raw.contains(&old_id), "the notice names both keys: {}", n[0].raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_credential_give_one_saga() {
    let env = env().await;
    let a = env.engine("a");
    let b = env.engine("b");
    let (ra, rb) = tokio::join!(a.request("auth0-ses", "manual"), b.request("auth0-ses", "schedule"));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let ids: Vec<&String> = [&ra, &rb]
        .iter()
        .map(|r| match r {
            Created::New(id) | Created::Existing(id) => id,
            Created::Skipped(reason) => panic!("a manual request is never skipped: {reason}"),
        })
        .collect();
    assert_eq!(ids[0], ids[1], "{ra:?} {rb:?}");
    assert_eq!([&ra, &rb].iter().filter(|r| matches!(r, Created::New(_))).count(), 1);
    assert_eq!(a.store().list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_unknown_keys_are_refused_and_nothing_changes() {
    let env = TestEnv::new(Options { existing_keys: 2, ..Options::default() }).await.unwrap();
    let before = env.user_keys().await;
    let (_, saga) = rotate_to_end(&env, Arc::new(env.engine("w1"))).await;

    assert_eq!(saga.status, Status::Refused);
    let f = saga.outcome.failure.unwrap();
    assert_eq!(f.code, "TooManyKeys");
    assert!(f.message.contains(&before[0].id) && f.message.contains(&before[1].id), "{}", f.message);
    assert_eq!(env.user_keys().await, before, "keys unchanged");
    assert!(env.auth0.patches().is_empty(), "Auth0 untouched");
    let notes = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(notes[0].attributes["event"], "rotation.failed");
    assert_eq!(notes[0].document["failure"]["code"], "TooManyKeys");
    assert!(notes[0].subject.starts_with("[keyturn] Rotation refused: auth0-ses"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_and_the_worker_goes_on() {
    let env = env().await;
    let engine = Arc::new(env.engine("w1"));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    for body in ["this is not json", r#"{"v":1,"saga_id":"no-such-saga","step":"start","token":"t"}"#, r#"{"hello":"world"}"#] {
        env.clients.sqs.send_message().queue_url(&env.queue_url).message_body(body).send().await.unwrap();
    }
    let dead = env.dlq(3, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    let reason = |needle: &str| dead.iter().find(|(b, _)| b.contains(needle)).and_then(|(_, r)| r.clone()).unwrap_or_default();
    assert!(reason("not json").starts_with("body is not JSON"), "{dead:?}");
    assert_eq!(reason("no-such-saga"), "saga no-such-saga does not exist");
    assert!(reason("hello").starts_with("body does not match the step message schema"), "{dead:?}");

    // The worker is still running and rotates.
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;
    assert_eq!(saga.status, Status::Succeeded);
}

/// Messages on the step queue that are delayed (not yet receivable).
async fn delayed(env: &TestEnv) -> u64 {
    let a = env.clients.sqs.get_queue_attributes().queue_url(&env.queue_url).attribute_names(QueueAttributeName::All).send().await.unwrap();
    a.attributes.unwrap_or_default().get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Wait until the saga reaches `step` (and return it).
async fn wait_step(env: &TestEnv, saga_id: &str, step: Step) -> keyturn::saga::Saga {
    let store = keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas");
    for _ in 0..300 {
        let s = store.load(saga_id).await.unwrap().unwrap().saga;
        if s.step == step {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("saga {saga_id} never reached {step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_is_a_durable_wait_then_the_old_key_is_deleted() {
    let env = TestEnv::new(Options { grace_period: "8s", ..Options::default() }).await.unwrap();
    let old_id = env.old_keys[0].0.clone();
    let queue = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };

    let waiting = wait_step(&env, &saga_id, Step::RetireOld).await;
    // Nothing needs the new secret any more: it is not kept through the grace period.
    assert!(!waiting.keys.secret_stored);
    let item = engine.store().raw_items().await.unwrap().into_iter().find(|i| i.get("saga_id").and_then(|v| v.as_s().ok()) == Some(&saga_id)).unwrap();
    assert!(!item.contains_key("secret"), "sealed secret erased after the push, before the grace period");
    // During the grace period: old key inactive but present, new key live in Auth0.
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().any(|k| k.id == old_id && !k.active), "{keys:?}");
    assert!(waiting.run.grace_until.is_some());
    // The wait is one delayed message: once the step before it is
    // acknowledged, the queue holds nothing visible or in flight, and one
    // message delayed.
    wait_queue_idle(&env.clients.sqs, &env.queue_url, T).await;
    assert_eq!(delayed(&env).await, 1, "the wake-up at the end of the grace period is a delayed message");

    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;
    assert_eq!(saga.status, Status::Succeeded);
    // No messages while waiting, over the whole grace period: the wake-up
    // is the only retire_old message ever sent, and nothing is sent after
    // it but (if not run at once) the finalize step that follows it.
    let steps: Vec<Step> = queue.bodies().iter().map(|b| serde_json::from_str::<StepMessage>(b).unwrap().step).collect();
    let wake = steps.iter().position(|s| *s == Step::RetireOld).expect("a retire_old message");
    assert!(steps[wake + 1..].iter().all(|s| *s == Step::Finalize), "the wait is a delayed message, not a loop: {steps:?}");
    let retired = saga.outcome.history.iter().find(|a| a.step == Step::RetireOld && a.outcome == "ok").unwrap();
    assert!(retired.at >= waiting.run.grace_until.unwrap(), "old key deleted only after the grace period");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0].id, old_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_during_grace_reactivates_the_old_key() {
    let env = TestEnv::new(Options { grace_period: "1h", ..Options::default() }).await.unwrap();
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };

    // Too early: refused with a clear reason.
    let s = wait_step(&env, &saga_id, Step::RetireOld).await;
    assert!(s.effects.old_disabled);
    engine.rollback(&saga_id).await.expect("rollback accepted during grace");
    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;

    assert_eq!(saga.status, Status::RolledBack, "{saga:#?}");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 2, "both keys kept");
    assert!(keys.iter().all(|k| k.active), "old key active again: {keys:?}");
    assert_eq!(env.auth0.provider().unwrap().access_key_id, saga.keys.new_key.clone().unwrap(), "Auth0 keeps the new key");
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.rolled_back");
    assert!(n[0].document["rolled_back"][0].as_str().unwrap().contains(&old_id));
    // After the end, rollback is refused.
    let e = engine.rollback(&saga_id).await.unwrap_err();
    assert!(e.to_string().contains("already ended"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_push_that_landed_rolls_forward() {
    let env = env().await;
    // Every PATCH applies the key and then answers 503, past every retry budget.
    for _ in 0..40 {
        env.auth0.script_patch(Fault::UnavailableAfterApply);
    }
    let (_, saga) = rotate_to_end(&env, Arc::new(env.engine("w1"))).await;

    // Verification saw the new key in Auth0: roll forward, never revoke.
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(!saga.effects.new_revoked);
    assert!(saga.outcome.history.iter().any(|a| a.step == Step::PushToTarget && a.outcome == "failed"));
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, keys[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_push_that_cannot_be_verified_needs_attention_with_both_keys() {
    let env = env().await;
    let old_id = env.old_keys[0].0.clone();
    env.auth0.set_reveal_key_id(false);
    for _ in 0..40 {
        env.auth0.script_patch(Fault::UnavailableAfterApply);
    }
    let (_, saga) = rotate_to_end(&env, Arc::new(env.engine("w1"))).await;

    assert_eq!(saga.status, Status::NeedsAttention, "{saga:#?}");
    assert_eq!(saga.effects.target, TargetState::Uncertain);
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 2, "both keys kept: Auth0 may hold the new one");
    assert!(keys.iter().all(|k| k.active));
    assert!(keys.iter().any(|k| k.id == old_id));
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.needs_attention");
    assert_eq!(n[0].attributes["severity"], "critical");
    assert_eq!(n[0].document["target"]["state"], "unknown: it may hold the new key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_redrives_a_saga_whose_message_was_lost() {
    let env = env().await;
    // The request's message is the only one sent (the worker runs every
    // following step itself, as each is due at once): it is lost, so
    // nothing but the sweeper can start the saga.
    let mut queue = RecordingQueue::new(env.sqs_queue(), false);
    queue.lose_send = Some(0);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, T).await;
    worker.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let logs = keyturn_testkit::capture::logs();
    assert!(logs.lines().any(|l| l.contains(&saga_id) && l.contains("saga overdue; re-driving its step")), "the sweeper re-drove it");
    assert_eq!(saga.outcome.history.iter().filter(|a| a.step == Step::ProveNew).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lease_holds_off_every_handler_even_of_the_same_worker() {
    use keyturn::clock::{Clock, SystemClock};
    use keyturn::engine::Handled;
    use keyturn::queue::Queue;
    let env = env().await;
    let engine = env.engine("w1");
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    // Another task of this same worker holds the step's lease.
    let stored = engine.store().load(&saga_id).await.unwrap().unwrap();
    let now = SystemClock.now_ms();
    let taken = engine.store().lease(&saga_id, stored.saga.step, &stored.saga.run.token, "w1", now, now + 60_000, now + 120_000).await.unwrap();
    assert!(matches!(taken, keyturn::store::Lease::Taken(_)), "{taken:?}");

    let msgs = engine.queue().receive(1, Duration::from_secs(2), Duration::from_secs(10)).await.unwrap();
    assert_eq!(msgs.len(), 1);
    let handled = engine.handle(&msgs[0]).await.unwrap();
    assert!(matches!(handled, Handled::Retained(_)), "{handled:?}");
    let after = engine.store().load(&saga_id).await.unwrap().unwrap();
    assert_eq!(after.version, stored.version + 1, "the duplicate changed nothing");
    assert_eq!(after.saga.run.step_attempts, 1);
    assert!(env.user_keys().await.len() == 1, "no key created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signature_checks_the_new_secret_really_authenticates() {
    let env = TestEnv::new(Options { enforce_auth: true, ..Options::default() }).await.unwrap();
    let (_, saga) = rotate_to_end(&env, Arc::new(env.engine("w1"))).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let p = env.auth0.provider().unwrap();
    let sts = |secret: &str| {
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&env.sdk)
                .credentials_provider(aws_credential_types::Credentials::new(&p.access_key_id, secret, None, None, "t"))
                .build(),
        )
    };
    // The secret Auth0 received signs requests moto accepts...
    let who = sts(&p.secret_access_key).get_caller_identity().send().await.unwrap();
    assert!(who.arn().unwrap().ends_with(&format!(":user/{USER}")));
    // keyturn's own probe ran against signature-checking STS and passed first time.
    assert!(saga.outcome.history.iter().any(|a| a.step == Step::ProveNew && a.outcome == "ok"));
    assert_eq!(env.notifications(1, Duration::from_secs(10)).await[0].attributes["event"], "rotation.succeeded");
    // ...and moto really checks: a wrong secret is refused.
    let wrong = sts("0000000000000000000000000000000000000000").get_caller_identity().send().await.unwrap_err();
    let e = keyturn::error::aws("sts", "GetCallerIdentity", wrong);
    assert!(e.to_string().contains("SignatureDoesNotMatch"), "{e}");
}
