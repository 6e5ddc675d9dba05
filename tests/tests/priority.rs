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
//! saga was created), then starts it again: the surviving replica's
//! emergency watch takes the emergency over once the dead one's lease
//! lapses. The watch's own tests run an engine in this process on moto: a
//! dead worker's emergency taken over with no SQS message at all, what the
//! watch leaves alone, and the registry of emergencies in flight. One more
//! puts a fault proxy between that engine and moto's IAM to show an
//! emergency going first while IAM throttles the only ordinary step.
//!
//! Without the lane the emergency's first step queued behind the backlog:
//! 26–28 s with 60 rotations waiting, growing with the backlog.

use std::time::{Duration, Instant};

use std::sync::Arc;

use keyturn::clock::{Clock, ManualClock, SystemClock};
use keyturn::commands::Request;
use keyturn::engine::{Engine, Handled, PRIORITY_VISIBILITY};
use keyturn::queue::{Lane, Queue, SqsQueue, StepMessage};
use keyturn::saga::{ExposedRole, Exposure, KeyRef, Saga, Status, Step};
use keyturn::shared::ARRIVAL_HOLD;
use keyturn::store::{Created, Lease, SecretWrite};
use keyturn_testkit::env::{Options, RunningWorker, TestEnv, USER};
use keyturn_testkit::fault_proxy::{Fault, FaultProxy};
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
    let (_env, engine, saga_id) = one_rotation_requested("survivor").await;
    // Its start step onto the priority lane (as a person's `rotate --wait` puts it).
    let start = engine.queue().receive(1, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap().pop().unwrap();
    engine.queue().ack(&start).await.unwrap();
    let msg = StepMessage::parse(&start.body).unwrap();
    let priority = engine.priority_queue().expect("the test environment has the priority lane");
    priority.send(&msg, Duration::ZERO).await.unwrap();
    let mut m = priority.receive(1, Duration::from_secs(1), PRIORITY_VISIBILITY).await.unwrap().pop().unwrap();
    m.lane = Lane::Priority;
    // A worker took the saga and died: its lease runs 0.3 s more.
    let now = SystemClock.now_ms();
    let dead = engine.store().lease(&saga_id, msg.step, &msg.token, "dead-worker", now, now + 300, now + 60_000).await.unwrap();
    assert!(matches!(dead, Lease::Taken(_)));
    let handled = engine.handle(&m).await.unwrap();
    assert!(matches!(handled, Handled::Advanced { step, .. } if step != msg.step), "taken over in place once the dead worker's lease ended: {handled:?}");
}

/// A test environment, an engine as worker `worker`, and a rotation of
/// `auth0-ses` it requested (the saga's id; its first step on the queue).
async fn one_rotation_requested(worker: &str) -> (TestEnv, Engine<SqsQueue>, String) {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = env.engine(worker);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("a new saga") };
    (env, engine, saga_id)
}

/// An exposure of `key` (an emergency saga's record of it).
fn exposure(key: &str) -> Exposure {
    Exposure {
        key_id: key.into(),
        role: ExposedRole::Old,
        seen_at: SystemClock.now_ms(),
        event: "arn:aws:health:global::event/IAM/AWS_RISK_CREDENTIALS_EXPOSED/test".into(),
        keep_inactive: false,
        inactive_at: None,
        deleted_at: None,
        follow_up: false,
    }
}

/// Start an emergency rotation of `rotation` and take its first step
/// message off the priority queue, as a worker that then died would have:
/// answers the saga id and the message.
async fn emergency_without_its_message(engine: &Engine<SqsQueue>, rotation: &str, key: &str) -> (String, StepMessage) {
    let req = Request { trigger: "health:exposed_key".into(), exposure: Some(exposure(key)), ..Request::default() };
    let Created::New(saga_id) = engine.request_with(rotation, req).await.unwrap() else { panic!("a new saga") };
    let priority = engine.priority_queue().expect("the test environment has the priority lane");
    let m = priority.receive(1, Duration::from_secs(2), Duration::from_secs(60)).await.unwrap().pop().expect("the emergency's start message");
    priority.ack(&m).await.unwrap();
    (saga_id, StepMessage::parse(&m.body).unwrap())
}

/// The watch's side of a SIGKILL, with no SQS message at all: the
/// emergency's message was received and dropped, and its saga leased by a
/// worker that then died (a lease of 300 ms, never renewed). A worker
/// started beside it takes the step over from the registry of emergencies
/// once the lease lapses, runs the saga to its end, and the registry
/// forgets it. Without the watch nothing would run it before the sweeper
/// (`sweep_after` past the lease, a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_takes_over_an_emergency_whose_worker_died_without_any_message() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = Arc::new(env.engine("survivor"));
    let key = env.user_keys().await[0].id.clone();
    let (saga_id, msg) = emergency_without_its_message(&engine, "auth0-ses", &key).await;
    assert_eq!(engine.store().emergencies().await.unwrap(), vec![saga_id.clone()], "listed when created");
    let now = SystemClock.now_ms();
    let dead = engine.store().lease(&saga_id, msg.step, &msg.token, "dead-worker", now, now + 300, now + 60_000).await.unwrap();
    assert!(matches!(dead, Lease::Taken(_)));
    let cfg = keyturn::config::WorkerConfig { wait_time: keyturn::clock::Dur(Duration::from_secs(1)), ..Default::default() };
    assert_eq!(cfg.emergency_watch.0, Duration::from_millis(100), "the default watch");
    let worker = RunningWorker::spawn(engine.clone(), &cfg);
    // Until the start step ran (the saga moved on), however long.
    let moved = loop {
        let s = engine.store().load(&saga_id).await.unwrap().unwrap();
        if s.saga.step != Step::Start || s.saga.status.is_terminal() {
            break SystemClock.now_ms();
        }
        assert!(SystemClock.now_ms() < now + 30_000, "the dead worker's emergency was not taken over in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("emergency taken over by the watch {} ms after the dead worker's lease ended", moved.saturating_sub(now + 300));
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "the emergency ran to its end: {:?}", saga.outcome);
    assert!(saga.exposure.as_ref().is_some_and(|e| e.inactive_at.is_some()), "the exposed key was deactivated");
    assert!(engine.store().emergencies().await.unwrap().is_empty(), "an ended emergency leaves the registry");
}

/// The watch leaves alone what is not a dead worker's emergency: an
/// ordinary saga (even listed by mistake, with a lapsed lease: it is
/// dropped from the registry), an id with no saga (dropped), and an
/// emergency whose worker holds a live lease; the young emergency holds
/// ordinary steps back, for at most `HOLD_ORDINARY`. Time moves on a
/// manual clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_leaves_ordinary_sagas_and_live_leases_alone() {
    let env = TestEnv::new(Options { second_rotation_max_age: Some("90d"), ..Options::default() }).await.unwrap();
    let clock = ManualClock::starting_now();
    let engine = env.engine_at("watcher", clock.clone());
    let now = clock.now_ms();
    // An ordinary saga whose worker died, listed by hand.
    let Created::New(ordinary) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("a new saga") };
    let m = engine.queue().receive(1, Duration::from_secs(2), Duration::from_secs(60)).await.unwrap().pop().unwrap();
    engine.queue().ack(&m).await.unwrap();
    let msg = StepMessage::parse(&m.body).unwrap();
    assert!(matches!(engine.store().lease(&ordinary, msg.step, &msg.token, "dead-worker", now, now + 300, now + 60_000).await.unwrap(), Lease::Taken(_)));
    engine.store().list_emergency(&ordinary).await.unwrap();
    engine.store().list_emergency("no-such-saga").await.unwrap();
    // An emergency whose worker is alive: its lease runs a minute.
    let (emergency, msg) = emergency_without_its_message(&engine, "mailer-2", "AKIAEXPOSEDKEY000002").await;
    assert!(matches!(
        engine.store().lease(&emergency, msg.step, &msg.token, "live-worker", now, now + 60_000, now + 120_000).await.unwrap(),
        Lease::Taken(_)
    ));
    clock.advance(Duration::from_secs(1));
    let watched = engine.watch().await.unwrap();
    assert!(watched.take.is_empty(), "nothing taken: {:?}", watched.take.iter().map(|m| &m.message_id).collect::<Vec<_>>());
    assert_eq!(watched.listed, 1);
    assert!(watched.hold_ordinary, "a young emergency holds new ordinary steps back");
    assert_eq!(watched.next_due, Some(Duration::from_secs(59)), "the next look of the emergency is due when its live lease ends");
    assert_eq!(engine.store().emergencies().await.unwrap(), vec![emergency.clone()], "the ordinary saga and the missing one are dropped");
    // Once the live worker's lease lapses (it died after all), it is taken.
    clock.advance(Duration::from_secs(60));
    let watched = engine.watch().await.unwrap();
    let taken: Vec<_> = watched.take.iter().map(|m| StepMessage::parse(&m.body).unwrap()).collect();
    assert_eq!(taken, [StepMessage::new(&emergency, Step::Start, &msg.token)]);
    assert!(!watched.take[0].from_queue(), "a message of the watch's own, with no receipt");
    assert!(!watched.hold_ordinary, "at most HOLD_ORDINARY after its exposure event: ordinary work is not starved");
}

/// An exposure event being read (the intake announces it in the registry
/// as it starts, and ends the announcement once read) holds ordinary work
/// back before any emergency saga exists: until it is read, and for at
/// most `ARRIVAL_HOLD` should its reader die. Time moves on a manual clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_exposure_holds_ordinary_work_for_a_few_seconds_at_most() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let clock = ManualClock::starting_now();
    let engine = env.engine_at("watcher", clock.clone());
    assert!(!engine.watch().await.unwrap().hold_ordinary, "nothing announced: nothing held");
    let until = clock.now_ms() + ARRIVAL_HOLD.as_millis() as u64;
    engine.store().announce_exposure(until).await.unwrap();
    let watched = engine.watch().await.unwrap();
    assert!(watched.hold_ordinary && watched.listed == 0, "held with no emergency listed yet: {watched:?}");
    // Another event's end leaves this one's announcement; its own ends it.
    engine.store().end_announcement(until - 1).await.unwrap();
    assert!(engine.watch().await.unwrap().hold_ordinary, "another event's end leaves it");
    engine.store().end_announcement(until).await.unwrap();
    assert!(!engine.watch().await.unwrap().hold_ordinary, "read: held no longer");
    // Never ended (the intake died): at most ARRIVAL_HOLD.
    engine.store().announce_exposure(until).await.unwrap();
    assert!(engine.watch().await.unwrap().hold_ordinary);
    clock.advance(ARRIVAL_HOLD);
    assert!(!engine.watch().await.unwrap().hold_ordinary, "at most ARRIVAL_HOLD");
}

/// While an emergency holds ordinary work back, an ordinary run in progress
/// stops at its next step boundary: the step it ran is committed and its
/// successor goes out as a message (waiting like any ordinary one) instead
/// of running at once under the same lease. Without the hold the same
/// message runs several steps in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_ordinary_run_stops_at_its_next_step_boundary() {
    let (_env, engine, saga_id) = one_rotation_requested("held").await;
    let start = engine.queue().receive(1, Duration::from_secs(2), Duration::from_secs(60)).await.unwrap().pop().unwrap();
    engine.hold_ordinary(true);
    let handled = engine.handle(&start).await.unwrap();
    assert_eq!(handled, Handled::Advanced { step: Step::IssueNew, status: Status::Running }, "one step, then it stopped");
    let next = engine.queue().receive(1, Duration::from_secs(2), Duration::from_secs(60)).await.unwrap().pop().expect("its successor as a message");
    assert_eq!(StepMessage::parse(&next.body).unwrap().step, Step::IssueNew);
    assert_eq!(engine.store().load(&saga_id).await.unwrap().unwrap().lease_owner, None, "no lease kept while it waits");
    engine.hold_ordinary(false);
    let handled = engine.handle(&next).await.unwrap();
    assert!(
        matches!(handled, Handled::Advanced { step, .. } if !matches!(step, Step::IssueNew | Step::ProveNew)),
        "not held: several steps in place: {handled:?}"
    );
}

/// An emergency is listed in the registry while it runs and leaves it in
/// the write that ends it, however it ends: succeeded, compensated, or
/// stopped for a person with both keys in place (which keeps its
/// credential's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_leaves_the_registry_however_it_ends() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let store = env.engine("store").store().clone();
    for (i, status) in [Status::Succeeded, Status::Compensated, Status::NeedsAttention].into_iter().enumerate() {
        let now = SystemClock.now_ms();
        let mut saga = Saga::new(uuid::Uuid::new_v4().to_string(), "auth0-ses".into(), format!("credential-{i}"), "health:exposed_key".into(), now, 7);
        saga.exposure = Some(exposure("AKIAEXPOSEDKEY000003"));
        assert_eq!(store.create(&saga, 60_000).await.unwrap(), Created::New(saga.saga_id.clone()));
        assert!(store.emergencies().await.unwrap().contains(&saga.saga_id), "{status:?}: listed when created");
        let mut ended = saga.clone();
        ended.status = status;
        if status == Status::NeedsAttention {
            ended.keys.new_key = Some("AKIANEWKEY0000000001".into());
            ended.keys.old_keys = vec![KeyRef { id: "AKIAEXPOSEDKEY000003".into(), active: true, created_at: None }];
            assert!(ended.unresolved(), "both keys in place");
        }
        store.commit(&ended, 1, None, SecretWrite::Keep, now + 60_000, None).await.unwrap();
        assert!(!store.emergencies().await.unwrap().contains(&saga.saga_id), "{status:?}: an ended emergency leaves the registry");
        let lock = store.lock_holder(&saga.credential).await.unwrap();
        assert_eq!(lock.is_some(), status == Status::NeedsAttention, "{status:?}: the lock is kept only while unresolved");
    }
}

/// An emergency under IAM throttling still goes first. One step at a time
/// (`concurrency = 1`), and IAM throttles every `CreateAccessKey` of the
/// ordinary rotation's user: its `issue_new` waits the throttling out in
/// place (the AWS SDK's adaptive retries, then the engine's), holding the
/// worker's one AIMD slot for tens of seconds. The exposure event for the
/// other rotation's key then arrives: the emergency's steps take no room
/// under the limit, so the exposed key is made inactive while the ordinary
/// step is still being throttled, within 2 s: its IAM calls go through the
/// urgent IAM client, whose adaptive rate the throttled calls do not lower.
/// Once IAM relents the ordinary rotation succeeds too. (With priority
/// steps waiting for a slot like any other, the emergency waits for the
/// throttled step to give its slot back; with one IAM rate for all calls,
/// it is paced with the throttled ones: either way this test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_under_iam_throttling_still_goes_first() {
    const EXPOSED_EVENT: &str = include_str!("../fixtures/health-key-exposed.json");
    let _one = SERIAL.lock().await;
    let env = TestEnv::new(Options { intake: true, second_rotation_max_age: Some("90d"), ..Options::default() }).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    proxy.inject_where("CreateAccessKey", ("UserName", "mailer-2"), Fault::iam_throttling(), usize::MAX);
    let mut cfg = env.config.clone();
    cfg.worker.concurrency = 1;
    let engine = Arc::new(keyturn::app::engine(&cfg, &env.clients_via(&proxy.endpoint).await, "throttled".into()));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &cfg.worker, env.intake_queue());
    let Created::New(ordinary) = engine.request("mailer-2", "manual").await.unwrap() else { panic!("a new saga") };
    let throttled = || proxy.injected("CreateAccessKey");
    // Its first call refused: the SDK's retry of it waits for the adaptive
    // rate limiter (tens of seconds), the step holding its slot meanwhile.
    wait_until(Duration::from_secs(30), "the ordinary step is throttled", || async { throttled() >= 1 }).await;

    let exposed = env.old_keys[0].0.clone();
    let sent = Instant::now();
    env.send_intake(&EXPOSED_EVENT.replace("AKIAEXPOSEDKEY000001", &exposed)).await.unwrap();
    wait_until(Duration::from_secs(30), "the exposed key inactive", || async { env.key_status(USER, &exposed).await != Some(true) }).await;
    let took = sent.elapsed();
    let throttled_then = throttled();
    println!(
        "under IAM throttling, one step at a time: exposed key inactive {:.2}s after the event, the ordinary step throttled {throttled_then} times so far",
        took.as_secs_f64()
    );
    // The emergency's IAM calls have a rate of their own: the SDK's
    // adaptive pacing of the throttled user's calls does not slow them
    // (sharing it, this took 2.7-4.2 s).
    assert!(took < Duration::from_secs(2), "the emergency was paced with the throttled calls: {took:?}");
    let step_of = || async { engine.store().load(&ordinary).await.unwrap().map(|s| (s.saga.step, s.saga.status)) };
    assert_eq!(step_of().await, Some((Step::IssueNew, Status::Running)), "the ordinary step had not got past IAM");
    // It was still being throttled, in place, holding its slot, after the emergency.
    wait_until(Duration::from_secs(60), "the ordinary step still throttled", || async { throttled() > throttled_then }).await;
    assert_eq!(step_of().await, Some((Step::IssueNew, Status::Running)));

    proxy.stop("CreateAccessKey");
    let ordinary = env.wait_terminal(&ordinary, Duration::from_secs(120)).await;
    assert_eq!(ordinary.status, Status::Succeeded, "{ordinary:#?}");
    let emergency = env.sagas().await.into_iter().find(|s| s.exposure.is_some()).expect("the emergency saga");
    let emergency = env.wait_terminal(&emergency.saga_id, Duration::from_secs(120)).await;
    assert_eq!(emergency.status, Status::Succeeded, "{emergency:#?}");
    w.stop().await;
}

async fn wait_until<F: std::future::Future<Output = bool>>(limit: Duration, what: &str, mut done: impl FnMut() -> F) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
