//! Leak scan over varied traffic: one environment runs a success, a refusal by
//! Auth0, an ambiguous push, a crash right after key creation, and a rollback;
//! then every log line this test binary captured, every step-message body,
//! every DynamoDB item, every notification and the DLQ are scanned for every
//! secret value the run created or handled.

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
    let env = TestEnv::new(Options { grace_period: "1h", ..Options::default() }).await.unwrap();
    let queue = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("leaky?", queue.clone()));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
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
    assert!(s.history.iter().any(|a| a.step == Step::PushToTarget && a.outcome == "failed"));
    // A poison message carrying nothing secret, for the DLQ scan.
    env.clients.sqs.send_message().queue_url(&env.queue_url).message_body("poison").send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.stop().await;
    assert_eq!(outcomes, [Status::Compensated, Status::RolledBack]);
    secrets.extend(env.auth0.tokens_issued());

    let logs = keyturn_testkit::capture::logs();
    let bodies = queue.bodies().join("\n");
    let table = env.table_dump().await;
    let notes: String = env.notifications(2, Duration::from_secs(10)).await.into_iter().map(|n| n.raw).collect::<Vec<_>>().join("\n");
    let dead: String = drain(&env.clients.sqs, &env.dlq_url, 1, Duration::from_secs(5)).await.into_iter().map(|(b, r)| format!("{b} {r:?}")).collect();
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    for (name, text) in [("logs", &logs), ("SQS bodies", &bodies), ("DynamoDB", &table), ("notifications", &notes), ("DLQ", &dead)] {
        assert!(!text.is_empty(), "{name} scanned is empty");
        for secret in &secrets {
            assert!(secret.len() >= 16);
            assert!(!text.contains(secret.as_str()), "a secret leaked into {name}");
        }
    }
    println!(
        "leak scan: {} secrets against {} log bytes, {} step messages, {} table bytes, {} notification bytes, {} DLQ bytes: 0 found",
        secrets.len(),
        logs.len(),
        queue.bodies().len(),
        table.len(),
        notes.len(),
        dead.len()
    );
}
