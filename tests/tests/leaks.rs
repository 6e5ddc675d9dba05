//! Leak scan over varied traffic: one environment runs a success, a refusal by
//! Auth0, an ambiguous push, a crash right after key creation, and a rollback;
//! then every log line this test binary captured, every step-message body,
//! every DynamoDB item, every notification, every outcome event on EventBridge
//! (routed by a real rule in moto to SQS), every chat message, the DLQ and the intake DLQ's
//! reasons are scanned for every secret value the run created or handled.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyturn::saga::{Status, Step};
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{drain, Options, RunningWorker, TestEnv};
use keyturn_testkit::recording::RecordingQueue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_anywhere_after_varied_traffic() {
    let env = TestEnv::new(Options { grace_period: "1h", intake: true, ..Options::default() }).await.unwrap();
    let events_url = env.outcome_events_queue().await.unwrap();
    let queue = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("leaky?", queue.clone()));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let mut secrets: Vec<String> = vec![env.auth0_client_secret.clone(), env.old_keys[0].1.clone()];
    let mut outcomes = vec![];
    let rotate = || async {
        let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
        id
    };
    let wait_step = |id: String, step: Step| {
        let store = engine.store().clone();
        async move {
            for _ in 0..600 {
                if store.load(&id).await.unwrap().unwrap().saga.step == step {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("never reached {step}");
        }
    };

    // 1. Refused by Auth0 (403): compensated.
    env.auth0.script_patch(Fault::InsufficientScope);
    let id = rotate().await;
    outcomes.push(env.wait_terminal(&id, Duration::from_secs(60)).await.status);
    // The refused key's secret: the compensation path must not leak it either.
    secrets.push(env.auth0.state.lock().unwrap().last_secret_sent.clone().expect("the refused PATCH carried a secret"));
    // 2. Crash right after IAM created the key, then a success held in the grace period, rolled back.
    engine.faults().crash_after_issue.store(1, Ordering::SeqCst);
    let id = rotate().await;
    wait_step(id.clone(), Step::RetireOld).await;
    secrets.push(env.auth0.provider().unwrap().secret_access_key);
    engine.rollback(&id).await.unwrap();
    outcomes.push(env.wait_terminal(&id, Duration::from_secs(60)).await.status);
    // The rollback left two keys; delete the old one so the next rotation may start.
    let old = env.old_keys[0].0.clone();
    env.clients.iam.delete_access_key().user_name(keyturn_testkit::env::USER).access_key_id(&old).send().await.unwrap();
    // 3. An ambiguous push (503 after the write landed), resolved by verification.
    for _ in 0..40 {
        env.auth0.script_patch(Fault::UnavailableAfterApply);
    }
    let id = rotate().await;
    wait_step(id.clone(), Step::RetireOld).await;
    secrets.push(env.auth0.provider().unwrap().secret_access_key);
    let s = engine.store().load(&id).await.unwrap().unwrap().saga;
    assert!(s.outcome.history.iter().any(|a| a.step == Step::PushToTarget && a.outcome == "failed"));
    // A poison message carrying nothing secret, for the DLQ scan.
    env.clients.sqs.send_message().queue_url(&env.queue_url).message_body("poison").send().await.unwrap();
    // An invalid rotation request with a secret pasted into the wrong fields:
    // its body is on the intake DLQ (as sent), its reason must not repeat it.
    let planted = format!("pasted-by-mistake-{}", uuid::Uuid::new_v4().simple());
    let bad_request = serde_json::json!({
        "schema": "keyturn.rotation-request.v1", "rotation_id": "auth0-ses", "reason": "r", "requester": "ci",
        "idempotency_key": "leak-1", "overrides": {"grace_period": planted}, planted.clone(): planted,
    });
    env.send_intake(&bad_request.to_string()).await.unwrap();
    // Handled before the worker stops: the request dead-lettered, the poison message too.
    env.wait_intake_idle(Duration::from_secs(30)).await;
    keyturn_testkit::env::wait_queue_idle(&env.clients.sqs, &env.queue_url, Duration::from_secs(30)).await;
    w.stop().await;
    assert_eq!(outcomes, [Status::Compensated, Status::RolledBack]);
    secrets.extend(env.auth0.tokens_issued());

    let logs = keyturn_testkit::capture::logs();
    let bodies = queue.bodies().join("\n");
    let table = env.table_dump().await;
    let notes: String = env.notifications(2, Duration::from_secs(10)).await.into_iter().map(|n| n.raw).collect::<Vec<_>>().join("\n");
    let chats: String = env.chat_messages(2, Duration::from_secs(10)).await.join("\n");
    assert!(chats.contains("\"source\":\"custom\""), "chat messages were published");
    let dead: String = drain(&env.clients.sqs, &env.dlq_url, 1, Duration::from_secs(5)).await.into_iter().map(|(b, r)| format!("{b} {r:?}")).collect();
    let intake_dead = env.intake_dlq(1, Duration::from_secs(10)).await;
    assert_eq!(intake_dead.len(), 1, "the invalid request is dead-lettered");
    let reasons: String = intake_dead.iter().map(|(_, r)| r.clone().expect("a keyturn_reason")).collect::<Vec<_>>().join("\n");
    assert!(reasons.starts_with("invalid rotation request: "), "{reasons}");
    let events: String = env.outcome_events(&events_url, 2, Duration::from_secs(10)).await.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(events.contains("\"source\":\"keyturn.outcomes\""), "outcome events were routed");
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    for (name, text) in [("intake DLQ reasons", &reasons), ("logs", &logs), ("outcome events", &events)] {
        assert!(!text.contains(planted.as_str()), "a value of an invalid request leaked into {name}");
    }
    for (name, text) in [
        ("logs", &logs),
        ("SQS bodies", &bodies),
        ("DynamoDB", &table),
        ("notifications", &notes),
        ("chat messages", &chats),
        ("DLQ", &dead),
        ("outcome events", &events),
        ("intake DLQ reasons", &reasons),
    ] {
        assert!(!text.is_empty(), "{name} scanned is empty");
        for secret in &secrets {
            assert!(secret.len() >= 16);
            assert!(!text.contains(secret.as_str()), "a secret leaked into {name}");
        }
    }
    println!(
        "leak scan: {} secrets against {} log bytes, {} step messages, {} table bytes, {} notification bytes, {} outcome event bytes, {} DLQ bytes, {} intake DLQ reason bytes: 0 found",
        secrets.len(),
        logs.len(),
        queue.bodies().len(),
        table.len(),
        notes.len(),
        events.len(),
        dead.len(),
        reasons.len()
    );
}
