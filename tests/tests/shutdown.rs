//! On SIGTERM the worker lets a poll in progress finish and releases what it
//! brought at once (visibility 0), instead of leaving those messages
//! invisible for the visibility timeout. Against moto's SQS long polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::clock::Dur;
use keyturn::queue::{Queue, StepMessage};
use keyturn::saga::Step;
use keyturn_testkit::env::{Options, RunningWorker, TestEnv};
use keyturn_testkit::recording::RecordingQueue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_received_but_not_started_are_released_at_shutdown() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let mut cfg = env.config.worker.clone();
    cfg.wait_time = Dur(Duration::from_secs(5));
    cfg.visibility_timeout = Dur(Duration::from_secs(60));
    let polled = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("w1", polled.clone()));
    let worker = RunningWorker::spawn(engine, &cfg);
    // Once its first poll has begun, the worker is in a long poll (5 s) on
    // the empty step queue.
    polled.wait_polling(Duration::from_secs(30)).await;
    let stopping = tokio::spawn(worker.stop());
    // Messages arrive while that poll is still open: SQS hands them to it.
    let q = env.sqs_queue();
    for i in 0..2 {
        q.send(&StepMessage::new(&format!("unknown-saga-{i}"), Step::Start, "t"), Duration::ZERO).await.unwrap();
    }
    let started = Instant::now();
    stopping.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown waits at most the poll: {:?}", started.elapsed());
    // Released at once: receivable now, long before the 60 s visibility timeout.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(q.receive(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap());
    }
    assert_eq!(got.len(), 2, "both messages are visible again right after shutdown");
    assert!(env.dlq(0, Duration::from_secs(1)).await.is_empty(), "none was handled (they would be poison)");
    let logs = keyturn_testkit::capture::logs();
    assert!(logs.contains("released a message not started"), "the worker says what it released");
}
