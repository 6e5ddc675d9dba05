//! The priority lane, black-box: an exposed key is replaced and made
//! inactive within seconds while a backlog of ordinary rotations drains.
//!
//! The `keyturn worker` binary (concurrency 4) runs against moto and a
//! multi-tenant fake Auth0 (`bench/fake_auth0.py`, every answer delayed as
//! over the internet), set up by [`keyturn_testkit::fleet`] as the
//! benchmark's exposure figure is. 200 ordinary rotations are requested at
//! once; once the worker is draining them, the AWS Health
//! `AWS_RISK_CREDENTIALS_EXPOSED` event for another configured user reaches
//! the intake queue. The tests print the time from the event reaching the
//! intake queue to the exposed key being inactive, check that it came
//! before the backlog (not after it), that the new key is live in that
//! user's Auth0 tenant, and that every backlog rotation still succeeds. The
//! second test runs two replicas and SIGKILLs the one that holds the
//! emergency's lease the moment the test sees it (milliseconds after the
//! saga was created), then starts it again.
//!
//! Without the lane the emergency's first step queued behind the backlog:
//! 26–28 s with 60 rotations waiting, growing with the backlog.

use std::time::Duration;

use keyturn::clock::{Clock, SystemClock};
use keyturn::engine::{Handled, PRIORITY_LEASE};
use keyturn::queue::{Lane, Queue, StepMessage};
use keyturn::saga::Status;
use keyturn::store::{Created, Lease};
use keyturn_testkit::env::{Options, TestEnv};
use keyturn_testkit::fleet::{Fleet, FleetBuilder, EXPOSED_ROTATION, EXPOSURE_AUTH0_LATENCY_MS, EXPOSURE_WORKER};
use keyturn_testkit::process::Guard;

/// Ordinary rotations waiting when the exposure arrives. 200 by default;
/// `KEYTURN_PRIORITY_BACKLOG=N` measures another backlog (0 for an idle worker).
static BACKLOG: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| std::env::var("KEYTURN_PRIORITY_BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(200));
/// The target is 2 s; this bound only catches a lane that does not work
/// (the emergency then waits behind the backlog, tens of seconds).
const BOUND: Duration = Duration::from_secs(10);

/// The two tests each drain 200 rotations through moto: one at a time, so
/// neither measures the other's load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup(name: &str) -> Fleet {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("priority-{name}-{}", uuid::Uuid::new_v4().simple()));
    FleetBuilder::new(dir, *BACKLOG)
        .prefix("backlog")
        .exposed_user()
        .lanes()
        .auth0_latency_ms(EXPOSURE_AUTH0_LATENCY_MS)
        .worker(EXPOSURE_WORKER)
        .build()
        .await
        .unwrap()
}

/// Every saga ended: all succeeded, the emergency's new key is live in its
/// tenant and the exposed key is gone.
async fn check_all_succeeded(s: &Fleet) {
    let sagas = s.wait_all_ended(Duration::from_secs(600)).await.unwrap();
    let failed: Vec<_> = sagas.iter().filter(|s| s.saga.status != Status::Succeeded).map(|s| (&s.saga.rotation_id, s.saga.status)).collect();
    assert!(failed.is_empty(), "every rotation succeeds, backlog and emergency: {failed:?}");
    let emergency = sagas.iter().find(|s| s.saga.rotation_id == EXPOSED_ROTATION).unwrap();
    assert!(emergency.saga.exposure.is_some(), "the exposed key's saga is an emergency");
    let new_key = emergency.saga.keys.new_key.clone().unwrap();
    assert_eq!(s.held_by_target(EXPOSED_ROTATION).await.unwrap(), new_key, "the new key is live in the target");
    assert!(!s.exposed_key_active().await.unwrap(), "the exposed key stays inactive (deleted)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_key_dies_in_seconds_while_a_backlog_of_200_rotations_drains() {
    let _one = SERIAL.lock().await;
    let s = setup("backlog").await;
    let _w = s.worker(1).unwrap();
    s.request_all().await.unwrap();
    s.wait_draining().await.unwrap();
    let (took, done) = s.expose_and_time(|_| true).await.unwrap();
    println!(
        "exposed key inactive {:.2}s after the AWS Health event reached the intake queue, with {} of {} ordinary rotations still to finish (concurrency 4, Auth0 answering in {EXPOSURE_AUTH0_LATENCY_MS} ms)",
        took.as_secs_f64(),
        BACKLOG.saturating_sub(done),
        *BACKLOG
    );
    assert!(took < BOUND, "the emergency waited behind the backlog: {took:?}");
    assert!(done <= *BACKLOG / 2, "the emergency ran before the backlog, not after it ({done} finished first)");
    check_all_succeeded(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_survives_a_sigkill_of_the_replica_that_holds_it() {
    let _one = SERIAL.lock().await;
    let s = setup("kill").await;
    // Two replicas, as a deployment runs them.
    let mut replicas: Vec<Option<Guard>> = vec![Some(s.worker(1).unwrap()), Some(s.worker(2).unwrap())];
    s.request_all().await.unwrap();
    s.wait_draining().await.unwrap();
    let (took, done, at) = s.expose_kill_and_time(&mut replicas).await.unwrap();
    println!(
        "with a SIGKILL of the replica holding the emergency ({:.2}s after the event): exposed key inactive {:.2}s after the event, {} of {} ordinary rotations still to finish",
        at.as_secs_f64(),
        took.as_secs_f64(),
        BACKLOG.saturating_sub(done),
        *BACKLOG
    );
    assert!(took < BOUND, "the emergency waited behind the backlog after the kill: {took:?}");
    assert!(done <= *BACKLOG / 2, "the surviving replica took the emergency before the backlog ({done} finished first)");
    check_all_succeeded(&s).await;
}

/// The survivor's side of a SIGKILL: a priority step whose saga a dead
/// worker still holds for less than a second (its last lease outlives the
/// message's visibility by the time the lease write took) waits the lease
/// out in place and takes the saga over, instead of putting the message
/// back for another whole SQS second and more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_step_takes_over_a_dead_workers_lease_that_is_about_to_end() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = env.engine("survivor");
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("a new saga") };
    // Its start step onto the priority lane (as a person's `rotate --wait` puts it).
    let start = engine.queue().receive(1, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap().pop().unwrap();
    engine.queue().ack(&start).await.unwrap();
    let msg = StepMessage::parse(&start.body).unwrap();
    let priority = engine.priority_queue().expect("the test environment has the priority lane");
    priority.send(&msg, Duration::ZERO).await.unwrap();
    let mut m = priority.receive(1, Duration::from_secs(1), PRIORITY_LEASE).await.unwrap().pop().unwrap();
    m.lane = Lane::Priority;
    // A worker took the saga and died: its lease runs 0.9 s more.
    let now = SystemClock.now_ms();
    let dead = engine.store().lease(&saga_id, msg.step, &msg.token, "dead-worker", now, now + 900, now + 60_000).await.unwrap();
    assert!(matches!(dead, Lease::Taken(_)));
    let handled = engine.handle(&m).await.unwrap();
    assert!(matches!(handled, Handled::Advanced { step, .. } if step != msg.step), "taken over in place once the dead worker's lease ended: {handled:?}");
}
