//! Lambda mode with real SQS event JSON: the same step handler drives a whole
//! rotation, and a batch with one record that must come back reports only it.

use std::time::Duration;

use keyturn::clock::{Clock, ManualClock, SystemClock};
use keyturn::lambda::handle_invocation;
use keyturn::queue::{Queue, Received, SqsQueue};
use keyturn::saga::Status;
use keyturn::store::Created;
use keyturn_testkit::env::{Options, TestEnv};
use serde_json::{json, Value};

/// What the Lambda poller would hand the function for these messages.
fn sqs_event(records: &[Received], queue_arn: &str) -> Value {
    json!({ "Records": records.iter().map(|m| json!({
        "messageId": m.message_id,
        "receiptHandle": m.receipt,
        "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": m.receive_count.to_string(),
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185"
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1"
    })).collect::<Vec<_>>() })
}

const STEPS_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:keyturn-steps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_batches_drive_a_rotation_to_success() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = env.engine("lambda");
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let mut invocations = 0;
    loop {
        let s = engine.store().load(&saga_id).await.unwrap().unwrap();
        if s.saga.status.is_terminal() {
            assert_eq!(s.saga.status, Status::Succeeded, "{:#?}", s.saga);
            break;
        }
        let batch = engine.queue().receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
        if batch.is_empty() {
            continue;
        }
        let resp =
            handle_invocation::<SqsQueue, SqsQueue>(&engine, &env.queue_url, None, None, &sqs_event(&batch, STEPS_ARN), Duration::ZERO).await.unwrap();
        assert_eq!(resp, json!({"batchItemFailures": []}));
        invocations += 1;
        assert!(invocations < 50);
    }
    assert_eq!(env.user_keys().await.len(), 1);
    assert_eq!(env.notifications(1, Duration::from_secs(5)).await[0].attributes["event"], "rotation.succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_only_the_record_that_must_come_back() {
    let env = TestEnv::new(Options { second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    let engine = env.engine("lambda");
    let Created::New(a) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let Created::New(b) = engine.request("mailer-2", "manual").await.unwrap() else { panic!() };
    // Another invocation holds saga b's step: its message must come back, not be deleted.
    let s = engine.store().load(&b).await.unwrap().unwrap();
    let now = SystemClock.now_ms();
    let taken = engine.store().lease(&b, s.saga.step, &s.saga.run.token, "other", now, now + 60_000, now + 120_000).await.unwrap();
    assert!(matches!(taken, keyturn::store::Lease::Taken(_)), "{taken:?}");

    let mut batch = vec![];
    while batch.len() < 2 {
        batch.extend(engine.queue().receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap());
    }
    let held = batch.iter().find(|m| m.body.contains(&b)).unwrap().message_id.clone();
    let resp = handle_invocation::<SqsQueue, SqsQueue>(&engine, &env.queue_url, None, None, &sqs_event(&batch, STEPS_ARN), Duration::ZERO).await.unwrap();
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": held}]}));
    // Saga a moved on; saga b did not.
    assert_ne!(engine.store().load(&a).await.unwrap().unwrap().saga.step, keyturn::saga::Step::Start);
    assert_eq!(engine.store().load(&b).await.unwrap().unwrap().saga.step, keyturn::saga::Step::Start);
    // A record from an unknown queue is reported too, never silently dropped.
    let stray = Received { message_id: "stray".into(), receipt: "r".into(), body: "{}".into(), receive_count: 1, lane: Default::default(), sender: None };
    let resp = handle_invocation::<SqsQueue, SqsQueue>(
        &engine,
        &env.queue_url,
        None,
        None,
        &sqs_event(&[stray], "arn:aws:sqs:us-east-1:123456789012:elsewhere"),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(resp, json!({"batchItemFailures": [{"itemIdentifier": "stray"}]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_event_runs_the_sweep_and_the_scan() {
    let env = TestEnv::new(Options { max_age: Some("1s"), second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    let clock = ManualClock::starting_now();
    let engine = env.engine_at("lambda", clock.clone());
    // A saga whose start message was lost: the sweep must re-drive it.
    let Created::New(lost) = engine.request("mailer-2", "manual").await.unwrap() else { panic!() };
    let got = engine.queue().receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1);
    engine.queue().ack(&got[0]).await.unwrap();
    // Not yet: the saga is not overdue (sweep_after 3s) by the engine's clock.
    assert_eq!(engine.sweep().await.unwrap(), 0, "nothing is overdue before the clock moves");
    clock.advance(Duration::from_millis(3500)); // past sweep_after (3s) and max_age (1s)
    let resp = handle_invocation::<SqsQueue, SqsQueue>(&engine, &env.queue_url, None, None, &json!({"keyturn": "sweep"}), Duration::ZERO).await.unwrap();
    assert_eq!(resp["started"], 1, "{resp}");
    assert_eq!(resp["redriven"], 1, "{resp}");
    let sagas = engine.store().list().await.unwrap();
    assert_eq!(sagas.len(), 2);
    assert!(sagas.iter().any(|s| s.saga.trigger.starts_with("schedule:") && s.saga.rotation_id == "auth0-ses"));
    let again = engine.queue().receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
    assert!(again.iter().any(|m| m.body.contains(&lost)), "the lost start message was sent again");
}
