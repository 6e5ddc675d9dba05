//! Exposed access keys (AWS Health `AWS_RISK_CREDENTIALS_EXPOSED`),
//! black-box: the event on the intake queue, a running worker, moto's IAM
//! and the fake Auth0. A covered key idle, in a saga's grace period, already
//! rotated away; an uncovered key (reported, and deactivated only when
//! configured); the user-ARN form; repeated events; a saga whose own new key
//! is exposed, followed by a fresh rotation. One test measures the
//! time from the event reaching the intake queue to the exposed key being
//! inactive and prints it (README, "Exposed keys").
//!
//! The event is sent to the intake queue directly, as EventBridge delivers
//! it: moto's EventBridge leaves `account` empty in what it delivers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::saga::{Status, Step};
use keyturn::store::Created;
use keyturn_testkit::env::{of_event as of, Notification, Options, RunningWorker, TestEnv, USER};

const EXPOSED: &str = include_str!("../fixtures/health-key-exposed.json");
const EXPOSED_USER: &str = include_str!("../fixtures/health-key-exposed-user-arn.json");
const PLACEHOLDER: &str = "AKIAEXPOSEDKEY000001";
const T: Duration = Duration::from_secs(60);

async fn env(grace: &'static str) -> TestEnv {
    TestEnv::new(Options { intake: true, grace_period: grace, ..Options::default() }).await.expect("test environment")
}

fn event_for(key: &str, n: u32) -> String {
    // Each AWS repeat is its own EventBridge event (own id).
    EXPOSED.replace(PLACEHOLDER, key).replace("1c3e7a52-9d0b-4a6e-8c57-3f2d8b1e0a44", &format!("1c3e7a52-9d0b-4a6e-8c57-{n:012}"))
}

async fn wait_for(env: &TestEnv, seen: &mut Vec<Notification>, event: &str) {
    let start = Instant::now();
    while of(seen, event).is_empty() {
        assert!(start.elapsed() < T, "no {event} notification; saw {:?}", seen.iter().map(|n| n.attributes["event"].clone()).collect::<Vec<_>>());
        seen.extend(env.notifications(1, Duration::from_secs(2)).await);
    }
}

fn worker(env: &TestEnv) -> (Arc<keyturn::engine::Engine<keyturn::queue::SqsQueue>>, RunningWorker) {
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    (engine, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_idle_key_is_replaced_then_deactivated_and_deleted_within_seconds() {
    // A week of grace period in the policy: the emergency ignores it.
    let env = env("7d").await;
    let events_url = env.outcome_events_queue().await.unwrap();
    let exposed = env.old_keys[0].0.clone();
    let (_engine, w) = worker(&env);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = Instant::now();
    env.send_intake(&event_for(&exposed, 1)).await.unwrap();
    let inactive_after = loop {
        if env.key_status(USER, &exposed).await != Some(true) {
            break sent.elapsed();
        }
        assert!(sent.elapsed() < T, "the exposed key is still active");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    println!(
        "exposed key inactive {:.2}s after the AWS Health event reached the intake queue (moto on loopback, fake Auth0; real IAM key propagation not included)",
        inactive_after.as_secs_f64()
    );
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.exposed_key").await;
    let all = env.sagas().await;
    assert_eq!(all.len(), 1);
    // The notice goes out in `finalize`, just before the commit that ends
    // the saga: wait for that commit rather than read the record at once.
    let saga = &env.wait_terminal(&all[0].saga_id, T).await;
    assert_eq!((saga.status, saga.trigger.as_str()), (Status::Succeeded, "health:exposed_key"));
    assert_eq!(env.key_status(USER, &exposed).await, None, "deleted, not waiting out the grace period");
    let new_key = saga.keys.new_key.clone().unwrap();
    assert_eq!(env.auth0.provider().unwrap().access_key_id, new_key, "the mail keeps flowing with the new key");
    assert_eq!(env.key_status(USER, &new_key).await, Some(true));
    // The timeline: event seen, new key live in the target, exposed key inactive, deleted, in that order.
    let e = saga.exposure.clone().unwrap();
    let (live, inactive, deleted) = (saga.effects.switched_at.unwrap(), e.inactive_at.unwrap(), e.deleted_at.unwrap());
    assert!(e.seen_at <= live && live <= inactive && inactive <= deleted, "{e:?} switched {live}");
    let n = of(&seen, "rotation.exposed_key")[0];
    assert_eq!(n.attributes["severity"], "critical");
    assert_eq!(n.document["exposure"]["key_id"], exposed.as_str());
    assert_eq!(n.document["exposure"]["state"], "deleted");
    assert!(n.document["exposure"]["timeline"]["new_key_live"].is_string());
    assert!(n.document["exposure"]["aws_quarantine"].as_str().unwrap().contains("AWSCompromisedKeyQuarantine"));
    assert!(n.document["exposure"]["next_steps"].to_string().contains("CloudTrail"));
    assert_eq!(n.attributes["correlation_id"], saga.correlation());
    assert!(saga.correlation().contains("AWS_RISK_CREDENTIALS_EXPOSED"), "the Health event's ARN correlates the emergency");

    // AWS repeats the event: nothing new happens, nothing is reported as unmatched.
    env.send_intake(&event_for(&exposed, 2)).await.unwrap();
    env.wait_intake_idle(T).await;
    w.stop().await;
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    assert_eq!(env.sagas().await.len(), 1, "a repeated exposure event starts nothing");
    assert_eq!(of(&seen, "rotation.exposed_key").len(), 1);
    assert!(of(&seen, "rotation.unmatched").is_empty());
    let events = env.outcome_events(&events_url, 1, Duration::from_secs(10)).await;
    let ev = events.iter().find(|e| e["detail-type"] == "Rotation Exposed Key").expect("the emergency is on EventBridge too");
    assert_eq!(ev["detail"]["correlation_id"], saga.correlation());
    assert_eq!(ev["detail"]["exposure"]["key_id"], exposed.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_in_the_grace_period_deletes_the_old_key_now() {
    let env = env("7d").await;
    let exposed = env.old_keys[0].0.clone();
    let (engine, w) = worker(&env);
    let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let store = engine.store().clone();
    let start = Instant::now();
    loop {
        let s = store.load(&id).await.unwrap().unwrap().saga;
        if s.step == Step::RetireOld && s.effects.old_disabled {
            assert!(s.run.grace_until.unwrap() > keyturn::clock::Clock::now_ms(&keyturn::clock::SystemClock) + 6 * 86_400_000, "a week to wait");
            break;
        }
        assert!(start.elapsed() < T, "never reached the grace period: {s:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.key_status(USER, &exposed).await, Some(false), "inactive, in its grace period");
    env.send_intake(&event_for(&exposed, 1)).await.unwrap();
    let saga = env.wait_terminal(&id, T).await;
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.exposed_key").await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded);
    assert_eq!(env.key_status(USER, &exposed).await, None, "deleted now, not in a week");
    assert_eq!(env.sagas().await.len(), 1, "the running saga took the emergency over; no second saga");
    let e = saga.exposure.unwrap();
    assert!(e.deleted_at.is_some() && e.inactive_at.is_some());
    assert!(saga.outcome.history.iter().any(|a| a.outcome == "exposed"), "the takeover is in the saga's history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_rotated_key_is_reported_with_nothing_to_rotate() {
    let env = env("0s").await;
    let exposed = env.old_keys[0].0.clone();
    let (engine, w) = worker(&env);
    let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    assert_eq!(env.wait_terminal(&id, T).await.status, Status::Succeeded);
    assert_eq!(env.key_status(USER, &exposed).await, None);
    env.send_intake(&event_for(&exposed, 1)).await.unwrap();
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.exposed_key").await;
    w.stop().await;
    let n = of(&seen, "rotation.exposed_key")[0];
    assert_eq!(n.document["exposure"]["state"], "settled");
    assert!(n.document["exposure"]["found"].as_str().unwrap().contains(&id), "names the saga that replaced it");
    // The IAM source's words reach the notice (`CredentialSource::exposure_words`).
    assert!(n.document["exposure"]["aws_quarantine"].as_str().unwrap().contains("AWSCompromisedKeyQuarantine"), "{}", n.document);
    assert!(n.document["exposure"]["next_steps"][0].as_str().unwrap().contains("userIdentity.accessKeyId"), "{}", n.document);
    assert_eq!(env.sagas().await.len(), 1, "nothing new started");
    assert!(of(&seen, "rotation.unmatched").is_empty(), "a key keyturn rotated is not 'unmatched'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncovered_exposed_key_is_reported_and_deactivated_only_when_configured() {
    let env = env("0s").await;
    let iam = &env.clients.iam;
    iam.create_user().user_name("stranger").send().await.unwrap();
    let k1 = iam.create_access_key().user_name("stranger").send().await.unwrap().access_key.unwrap().access_key_id;
    let (engine, w) = worker(&env);
    env.send_intake(&event_for(&k1, 1)).await.unwrap();
    env.send_intake(&event_for(&k1, 2)).await.unwrap();
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.unmatched").await;
    // Both events handled (the repeat too) before counting the notices.
    env.wait_intake_idle(T).await;
    // While each event was read every worker held ordinary work back (the
    // announcement in the registry); read, and with no emergency started,
    // nothing holds it any more.
    let registry = engine.store().registry().await.unwrap();
    assert_eq!((registry.sagas.len(), registry.arriving_until), (0, 0), "{registry:?}");
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    w.stop().await;
    let un = of(&seen, "rotation.unmatched");
    assert_eq!(un.len(), 1, "reported once, the repeat is a duplicate");
    assert_eq!(un[0].attributes["severity"], "critical");
    assert_eq!((un[0].document["key_id"].as_str(), un[0].document["user"].as_str()), (Some(k1.as_str()), Some("stranger")));
    assert_eq!(un[0].document["deactivated"], false);
    // No rotation, no source: the registry's words for an IAM user's key.
    assert!(un[0].document["aws_quarantine"].as_str().unwrap().contains("AWSCompromisedKeyQuarantine"), "{}", un[0].document);
    assert!(un[0].document["recommended_action"].as_str().unwrap().contains("CloudTrail"), "{}", un[0].document);
    assert_eq!(env.key_status("stranger", &k1).await, Some(true), "not deactivated unless configured");
    assert!(env.sagas().await.is_empty());

    // With [exposure] deactivate_uncovered = true: deactivated, with a warning that its consumer breaks.
    let k2 = iam.create_access_key().user_name("stranger").send().await.unwrap().access_key.unwrap().access_key_id;
    let cfg = env.config_with("\n[exposure]\ndeactivate_uncovered = true\n", true);
    assert!(cfg.exposure.deactivate_uncovered);
    let engine = Arc::new(keyturn::app::engine_with(&cfg, &env.clients, "w2".into(), keyturn::app::sqs_queue(&cfg, &env.clients)));
    let w = RunningWorker::spawn_with_intake(engine, &cfg.worker, env.intake_queue());
    env.send_intake(&event_for(&k2, 3)).await.unwrap();
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.unmatched").await;
    w.stop().await;
    let n = of(&seen, "rotation.unmatched")[0];
    assert_eq!(n.document["key_id"], k2.as_str());
    assert_eq!(n.document["deactivated"], true);
    assert!(n.document["key_state"].as_str().unwrap().contains("stopped working"), "{}", n.document);
    assert_eq!(env.key_status("stranger", &k2).await, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_naming_the_user_rotates_its_only_active_key() {
    let env = env("1h").await;
    let exposed = env.old_keys[0].0.clone();
    let (_engine, w) = worker(&env);
    env.send_intake(&EXPOSED_USER.replace("auth0-ses-sender", USER)).await.unwrap();
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.exposed_key").await;
    w.stop().await;
    let all = env.sagas().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].exposure.as_ref().unwrap().key_id, exposed);
    assert_eq!(env.key_status(USER, &exposed).await, None, "no grace period of 1h: deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_new_key_finishes_its_saga_then_a_fresh_rotation_replaces_it() {
    let env = env("7d").await;
    let (engine, w) = worker(&env);
    let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let store = engine.store().clone();
    let start = Instant::now();
    let exposed = loop {
        let s = store.load(&id).await.unwrap().unwrap().saga;
        if s.step == Step::RetireOld && s.effects.old_disabled {
            break s.keys.new_key.unwrap();
        }
        assert!(start.elapsed() < T, "never reached the grace period: {s:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The new key, live in Auth0, leaks.
    env.send_intake(&event_for(&exposed, 1)).await.unwrap();
    let first = env.wait_terminal(&id, T).await;
    assert_eq!(first.status, Status::Succeeded, "finished without waiting out the week: {first:#?}");
    assert!(first.needs_follow_up());
    // The fresh rotation replaces the exposed key at once.
    let start = Instant::now();
    let second = loop {
        let all = env.sagas().await;
        if let Some(s) = all.iter().find(|s| s.saga_id != id && s.status.is_terminal()) {
            break s.clone();
        }
        assert!(start.elapsed() < T, "no follow-up rotation: {all:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut seen = vec![];
    wait_for(&env, &mut seen, "rotation.exposed_key").await;
    w.stop().await;
    assert_eq!((second.status, second.trigger.as_str()), (Status::Succeeded, "health:exposed_key:follow_up"));
    assert_eq!(second.exposure.as_ref().unwrap().key_id, exposed);
    assert_eq!(second.correlation(), first.correlation(), "one incident, one correlation id");
    assert_eq!(env.key_status(USER, &exposed).await, None, "the exposed key is deleted");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, keys[0].id, "Auth0 holds the third key");
    assert_ne!(keys[0].id, exposed);
}
