//! Quarantine: repeated failures hold automatic triggers back with one
//! notification, explicit requests still run, release or success lifts it.

use std::sync::Arc;
use std::time::Duration;

use keyturn::saga::Status;
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{Options, RunningWorker, TestEnv};

const CONSOLIDATED: &str = include_str!("../fixtures/securityhub-iam3-consolidated.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_quarantine_automatic_triggers_until_released_or_fixed() {
    let env = TestEnv::new(Options { quarantine_after: Some(2), intake: true, ..Options::default() }).await.unwrap();
    // Three refused rotations: the first meets a new token (one 403); the
    // next two meet a cached token, which is asked again once with a new
    // one (two 403s each).
    for _ in 0..5 {
        env.auth0.script_patch(Fault::InsufficientScope);
    }
    let engine = Arc::new(env.engine("w1"));
    // The finding below must be due (a key past IAM.3's 90 days), so that
    // quarantine is what holds it back.
    engine.age_clock().set_skew(Duration::from_secs(91 * 86_400));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let rotate = || async {
        let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("manual requests are never held back") };
        env.wait_terminal(&id, Duration::from_secs(60)).await
    };

    // Two failures in a row: quarantine begins.
    assert_eq!(rotate().await.status, Status::Compensated);
    assert!(engine.store().health("auth0-ses").await.unwrap().0.quarantine.is_none());
    assert_eq!(rotate().await.status, Status::Compensated);
    let (h, _) = engine.store().health("auth0-ses").await.unwrap();
    let q = h.quarantine.clone().expect("quarantined after 2 failures");
    assert_eq!(q.reason, "insufficient_scope");
    assert!(q.next_attempt > keyturn::clock::Clock::now_ms(&keyturn::clock::SystemClock) + 5 * 3_600_000, "next automatic attempt ~6h away");

    // An automatic trigger is held back: no saga.
    let before = engine.store().list().await.unwrap().len();
    let skipped =
        engine.request_with("auth0-ses", keyturn::commands::Request { trigger: "schedule".into(), automatic: true, ..Default::default() }).await.unwrap();
    assert!(matches!(&skipped, Created::Skipped(r) if r.contains("quarantined (insufficient_scope)")), "{skipped:?}");
    env.put_event(CONSOLIDATED).await.unwrap();
    // Wait for the finding to be handled: its skip is logged (the request's was already).
    let skipped = || keyturn_testkit::capture::logs().lines().filter(|l| l.contains("automatic trigger skipped")).count();
    let start = std::time::Instant::now();
    while skipped() < 2 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let skipped_logs = skipped();
    assert!(skipped_logs >= 2, "the request and the finding were both held back by quarantine: {skipped_logs}");
    env.wait_intake_idle(Duration::from_secs(30)).await;
    assert_eq!(engine.store().list().await.unwrap().len(), before, "the finding started nothing");

    // An explicit request still runs; the same reason sends no new quarantine notice.
    assert_eq!(rotate().await.status, Status::Compensated);

    // Release lifts it; the next (fixed) rotation succeeds.
    assert!(engine.release("auth0-ses").await.unwrap());
    assert!(engine.store().health("auth0-ses").await.unwrap().0.quarantine.is_none());
    assert_eq!(rotate().await.status, Status::Succeeded);
    w.stop().await;

    let events: Vec<String> = env.notifications(6, Duration::from_secs(10)).await.into_iter().map(|n| n.attributes["event"].clone()).collect();
    let count = |e: &str| events.iter().filter(|x| *x == e).count();
    assert_eq!(count("rotation.failed"), 3, "{events:?}");
    assert_eq!(count("rotation.quarantined"), 1, "one notice when quarantine began, none per retry: {events:?}");
    assert_eq!(count("rotation.quarantine_lifted"), 1, "{events:?}");
    assert_eq!(count("rotation.succeeded"), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_rotation_lifts_quarantine() {
    let env = TestEnv::new(Options { quarantine_after: Some(1), ..Options::default() }).await.unwrap();
    env.auth0.script_patch(Fault::InsufficientScope);
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    for expected in [Status::Compensated, Status::Succeeded] {
        let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
        assert_eq!(env.wait_terminal(&id, Duration::from_secs(60)).await.status, expected);
        let quarantined = engine.store().health("auth0-ses").await.unwrap().0.quarantine.is_some();
        assert_eq!(quarantined, expected == Status::Compensated);
    }
    w.stop().await;
    let events: Vec<String> = env.notifications(4, Duration::from_secs(10)).await.into_iter().map(|n| n.attributes["event"].clone()).collect();
    assert!(events.contains(&"rotation.quarantined".to_string()) && events.contains(&"rotation.quarantine_lifted".to_string()), "{events:?}");
}
