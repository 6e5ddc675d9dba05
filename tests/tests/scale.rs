//! The saga table at scale: 10,000 finished sagas (a few years of
//! rotations) and a few running ones. The sweeper and `list` read what they
//! need through the indexes, not the table: counted in items read
//! (`ScannedCount`, [`keyturn::store::Store::items_read`]) and, for the
//! binary, in DynamoDB calls through a counting proxy.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use keyturn::clock::{Clock, SystemClock};
use keyturn::queue::{Queue, Received, SqsQueue, StepMessage};
use keyturn::saga::{Saga, Status};
use keyturn::store::Created;
use keyturn_testkit::env::{keyturn_bin, Options, TestEnv};
use keyturn_testkit::fault_proxy::FaultProxy;

const FINISHED: usize = 10_000;

/// `count` finished sagas of `rotation`, created one a minute ending an hour
/// ago, written as the store writes them (25 per BatchWriteItem).
async fn fill(env: &TestEnv, store: &keyturn::store::Store, rotation: &str, count: usize) -> Vec<String> {
    let start = SystemClock.now_ms() - 3_600_000 - count as u64 * 60_000;
    let mut ids = vec![];
    let mut batch = vec![];
    for i in 0..count {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let created = start + i as u64 * 60_000;
        let mut saga = Saga::new(id.clone(), rotation.into(), format!("iam_access_key:{rotation}"), "schedule".into(), created, i as u128);
        saga.status = Status::Succeeded;
        saga.updated_at = created + 30_000;
        batch.push(WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(store.item(&saga, 9, 0).unwrap())).build().unwrap()).build());
        ids.push(id);
        if batch.len() == 25 || i + 1 == count {
            let items = HashMap::from([("keyturn-sagas".to_string(), std::mem::take(&mut batch))]);
            let out = env.clients.dynamodb.batch_write_item().set_request_items(Some(items)).send().await.unwrap();
            assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()), "moto processed every item");
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_and_a_list_read_only_what_they_need_among_10000_finished_sagas() {
    let env = TestEnv::new(Options { second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    let engine = env.engine("w1");
    let store = engine.store().clone();
    let finished = fill(&env, &store, "auth0-ses", FINISHED).await;
    // Two running sagas, their messages lost (no worker runs): the sweeper's work.
    let mut running = vec![];
    for r in ["auth0-ses", "mailer-2"] {
        let Created::New(id) = engine.request(r, "manual").await.unwrap() else { panic!() };
        running.push(id);
    }
    let drain = engine.queue().receive(10, Duration::from_secs(1), Duration::from_secs(600)).await.unwrap();
    assert_eq!(drain.len(), 2, "the two start messages, now in flight and never handled");
    // Overdue after `sweep_after` (3 s in the test configuration).
    tokio::time::sleep(Duration::from_millis(3_500)).await;

    let before = store.items_read();
    assert_eq!(engine.sweep().await.unwrap(), 2, "both running sagas re-driven");
    assert_eq!(store.items_read() - before, 2, "the sweep read the 2 running sagas and none of the {FINISHED} finished ones");

    let before = store.items_read();
    let recent = store.recent(20).await.unwrap();
    assert_eq!(store.items_read() - before, 20, "list --limit 20 read 20 items");
    let ids: Vec<&str> = recent.iter().map(|s| s.saga.saga_id.as_str()).collect();
    let mut want: Vec<&str> = running.iter().rev().map(String::as_str).collect();
    want.extend(finished.iter().rev().take(18).map(String::as_str));
    // The two new sagas may share a millisecond: compare them as a set.
    assert_eq!(ids[..2].iter().collect::<std::collections::BTreeSet<_>>(), want[..2].iter().collect(), "newest first");
    assert_eq!(ids[2..], want[2..], "then the newest finished ones, newest first");

    let before = store.items_read();
    let of = store.recent_of("auth0-ses", 5).await.unwrap();
    assert_eq!(store.items_read() - before, 5, "status <rotation> reads its 5 newest sagas");
    assert_eq!(of[0].saga.saga_id, running[0]);
    assert!(of.iter().all(|s| s.saga.rotation_id == "auth0-ses"));
    let before = store.items_read();
    let last = store.last_success("auth0-ses").await.unwrap();
    assert!(store.items_read() - before <= 11, "the newest success is found near the top: {}", store.items_read() - before);
    assert!(last.is_some_and(|t| t > SystemClock.now_ms() - 3_700_000), "the newest success, about an hour ago: {last:?}");

    // The binary: `list --limit 20` and `status <rotation>` make one Query
    // each (plus one GetItem per configured rotation's quarantine state), no Scan.
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("keyturn-scale-{}", uuid::Uuid::new_v4()));
    let cfg = env.write_config(&dir).unwrap();
    let mut envs = env.cli_env();
    envs.iter_mut().filter(|(k, _)| *k == "AWS_ENDPOINT_URL").for_each(|(_, v)| *v = proxy.endpoint.clone());
    let run = |args: &[&str]| {
        let out = Command::new(keyturn_bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&["list", "--limit", "20"]);
    let rows: Vec<&str> = out.lines().skip(1).filter(|l| !l.starts_with("rotation ")).collect();
    assert_eq!(rows.len(), 20, "{out}");
    assert!(rows[19].starts_with(finished[FINISHED - 18].as_str()), "the 18th newest finished saga is last: {out}");
    let out = run(&["status", "auth0-ses"]);
    let known = |l: &str| running.iter().chain(finished.iter()).any(|id| l.trim_start().starts_with(id.as_str()));
    assert_eq!(out.lines().filter(|l| known(l)).count(), 5, "{out}");
    assert_eq!(proxy.calls("Query"), 2, "one Query for list, one for status");
    assert_eq!(proxy.calls("Scan"), 0, "no scan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sagas_carry_a_ttl_and_expired_ones_are_not_listed() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let ttl = env.clients.dynamodb.describe_time_to_live().table_name("keyturn-sagas").send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"), "the table's TTL attribute");
    // A rotation to its end: the finished saga expires after the default retention.
    let saga = env.rotate_with(&env.config, "auth0-ses").await;
    assert_eq!(saga.status, Status::Succeeded);
    let item = env
        .clients
        .dynamodb
        .get_item()
        .table_name("keyturn-sagas")
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("saga#{}", saga.saga_id)))
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    let expires: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires, saga.updated_at / 1000 + 400 * 86_400, "400 days after it ended");
    assert!(!item.contains_key("active"), "out of the sweeper's index");
    assert!(!item.contains_key("tok") && !item.contains_key("lease_owner"));

    // Sagas past their TTL (DynamoDB deletes them days late) are not shown.
    let store = keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas").with_retention(Duration::ZERO);
    let expired = fill(&env, &store, "auth0-ses", 3).await;
    let listed: Vec<String> = store.recent(10).await.unwrap().into_iter().map(|s| s.saga.saga_id).collect();
    assert_eq!(listed, vec![saga.saga_id.clone()], "expired {expired:?} skipped");
    assert_eq!(store.recent_of("auth0-ses", 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_sagas_whose_messages_wait_in_a_backlog_are_not_sent_again() {
    let env = TestEnv::new(Options { second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    let engine = env.engine("w1");
    // Two sagas whose start messages wait in the queue: no worker runs (a
    // burst, or workers down). Overdue after `sweep_after` (3 s here).
    for r in ["auth0-ses", "mailer-2"] {
        let Created::New(_) = engine.request(r, "manual").await.unwrap() else { panic!() };
    }
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(engine.queue().waiting().await.unwrap(), 2, "both start messages wait in the queue");
    assert_eq!(engine.sweep().await.unwrap(), 0, "overdue, but their messages are likely in the backlog: nothing sent");
    assert_eq!(engine.queue().waiting().await.unwrap(), 2, "no duplicate joined the backlog");

    // The messages are lost now (received, never handled): nothing waits,
    // so the sweeper re-drives both.
    let lost = engine.queue().receive(10, Duration::from_secs(1), Duration::from_secs(600)).await.unwrap();
    assert_eq!(lost.len(), 2);
    assert_eq!(engine.sweep().await.unwrap(), 2, "nothing waits: both re-driven");
    assert_eq!(engine.queue().waiting().await.unwrap(), 2, "one new message each");
}

/// The step queue while another worker drains it: the moment the sweeper
/// reads the backlog, that worker receives one message and leases its saga
/// (as happens every second of a burst of a thousand rotations).
struct DrainedDuringSweep {
    inner: SqsQueue,
    store: keyturn::store::Store,
    taken: std::sync::atomic::AtomicBool,
}

impl Queue for DrainedDuringSweep {
    async fn send(&self, msg: &StepMessage, delay: Duration) -> keyturn::error::Result<()> {
        self.inner.send(msg, delay).await
    }
    async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> keyturn::error::Result<Vec<Received>> {
        self.inner.receive(max, wait, visibility).await
    }
    async fn ack(&self, m: &Received) -> keyturn::error::Result<()> {
        self.inner.ack(m).await
    }
    async fn extend(&self, m: &Received, visibility: Duration) -> keyturn::error::Result<()> {
        self.inner.extend(m, visibility).await
    }
    async fn dead_letter(&self, m: &Received, reason: &str) -> keyturn::error::Result<()> {
        self.inner.dead_letter(m, reason).await
    }
    async fn waiting(&self) -> keyturn::error::Result<u64> {
        if !self.taken.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let m = self.inner.receive(1, Duration::from_secs(1), Duration::from_secs(600)).await?.pop().expect("a message waits");
            let msg = StepMessage::parse(&m.body).expect("a step message");
            let now = SystemClock.now_ms();
            let taken = self.store.lease(&msg.saga_id, msg.step, &msg.token, "w2", now, now + 600_000, now + 900_000).await?;
            assert!(matches!(taken, keyturn::store::Lease::Taken(_)), "the other worker leased the saga");
        }
        self.inner.waiting().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drained_while_the_sweeper_reads_it_is_not_sent_again() {
    let env = TestEnv::new(Options { second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    let plain = env.engine("w0");
    let queue = DrainedDuringSweep { inner: plain.queue().clone(), store: plain.store().clone(), taken: Default::default() };
    let engine = env.engine_with("w1", queue);
    for r in ["auth0-ses", "mailer-2"] {
        let Created::New(_) = engine.request(r, "manual").await.unwrap() else { panic!() };
    }
    // Both overdue (`sweep_after` is 3 s here), their messages waiting.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !engine.store().active().await.unwrap().iter().all(|s| s.needs_sweep(SystemClock.now_ms())) {
        assert!(std::time::Instant::now() < end, "the sagas did not become overdue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // During the sweep one message is taken: one saga leased, one message
    // left for the other. Nothing was lost, so nothing is sent again (read
    // in the other order, the backlog looked one short of the overdue
    // sagas, and the sweeper re-drove every one it could).
    assert_eq!(engine.sweep().await.unwrap(), 0, "no saga re-driven: each message was in the queue or in a worker's hands");
    assert_eq!(plain.queue().waiting().await.unwrap(), 1, "the one message left waits alone: no duplicate joined it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_short_of_the_overdue_sagas_re_drives_one_saga_not_all() {
    let env = TestEnv::new(Options { second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    let engine = env.engine("w1");
    for r in ["auth0-ses", "mailer-2"] {
        let Created::New(_) = engine.request(r, "manual").await.unwrap() else { panic!() };
    }
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !engine.store().active().await.unwrap().iter().all(|s| s.needs_sweep(SystemClock.now_ms())) {
        assert!(std::time::Instant::now() < end, "the sagas did not become overdue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One message is in a worker's hands, its saga not leased yet (or it
    // is lost: the sweeper cannot tell): the backlog is one short.
    let held = engine.queue().receive(1, Duration::from_secs(1), Duration::from_secs(600)).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(engine.sweep().await.unwrap(), 1, "as many re-driven as are missing: one, not every overdue saga");
    assert_eq!(engine.queue().waiting().await.unwrap(), 2, "the message that waited, and one sent again");
}
