//! Triggers, black-box: EventBridge events delivered through moto (PutEvents →
//! rule → intake SQS queue) to a running worker; Security Hub's
//! BatchUpdateFindings and BatchUpdateFindingsV2 faked with wiremock (moto
//! lacks both).

use std::sync::Arc;
use std::time::Duration;

use keyturn::clock::ManualClock;
use keyturn::saga::{FindingKind, Saga, Status};
use keyturn_testkit::env::{Options, RunningWorker, TestEnv, USER};
use keyturn_testkit::securityhub_fake::Api;

const CONSOLIDATED: &str = include_str!("../fixtures/securityhub-iam3-consolidated.json");
const LEGACY: &str = include_str!("../fixtures/securityhub-iam3-legacy.json");
const CUSTOM: &str = include_str!("../fixtures/securityhub-custom-action.json");
const HEALTH: &str = include_str!("../fixtures/health-scim-expiry.json");
/// Legacy per-standard IAM.3 findings of every CIS version Security Hub CSPM
/// offers (numbers 1.4, 1.14, 1.14, 1.13), each from its own region.
const CIS: [(&str, &str); 4] = [
    ("1.2.0", include_str!("../fixtures/securityhub-iam3-cis-1.2.0.json")),
    ("1.4.0", include_str!("../fixtures/securityhub-iam3-cis-1.4.0.json")),
    ("3.0.0", include_str!("../fixtures/securityhub-iam3-cis-3.0.0.json")),
    ("5.0.0", include_str!("../fixtures/securityhub-iam3-cis-5.0.0.json")),
];
const V2_FAILED: &str = include_str!("../fixtures/securityhub-v2-iam3-failed.json");
const V2_PASSED: &str = include_str!("../fixtures/securityhub-v2-iam3-passed.json");
const V2_SUPPRESSED: &str = include_str!("../fixtures/securityhub-v2-iam3-suppressed.json");
const V2_OTHER: &str = include_str!("../fixtures/securityhub-v2-other-control.json");
const T: Duration = Duration::from_secs(60);

async fn env(opts: Options) -> TestEnv {
    TestEnv::new(Options { intake: true, ..opts }).await.expect("test environment")
}

/// IAM.3 fails for a user whose key is 90 days old: the test's keys are
/// seconds old, so the worker's key-age clock runs this far ahead.
const KEY_PAST_IAM3: Duration = Duration::from_secs(91 * 86_400);

fn worker(env: &TestEnv) -> (Arc<keyturn::engine::Engine<keyturn::queue::SqsQueue>>, RunningWorker) {
    let engine = Arc::new(env.engine("w1"));
    engine.age_clock().set_skew(KEY_PAST_IAM3);
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    (engine, w)
}

/// Wait until the worker consumed (handled and acknowledged, or
/// dead-lettered) whatever is on the intake queue. The acknowledgement is
/// the handler's last act, so its notices and finding updates are out.
async fn settle(env: &TestEnv) {
    env.wait_intake_idle(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam3_finding_on_the_bus_ends_in_rotated_key_resolved_finding_and_notification() {
    let env = env(Options::default()).await;
    let old_id = env.old_keys[0].0.clone();
    // Security Hub reports the first update unprocessed once: keyturn retries it.
    env.securityhub.state.lock().unwrap().unprocessed_next = 1;
    let (_engine, w) = worker(&env);
    env.put_event(CONSOLIDATED).await.unwrap();
    let done = env.wait_sagas_done(1, T).await;
    w.stop().await;

    assert_eq!(done.len(), 1);
    let saga = &done[0];
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(saga.trigger, "securityhub:imported");
    let new_id = saga.keys.new_key.clone().unwrap();
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, new_id);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, new_id);

    let finding_id = "arn:aws:securityhub:us-east-1:123456789012:security-control/IAM.3/finding/0f6a9a0e-1c2b-4d3e-8f9a-0b1c2d3e4f50";
    let calls = env.securityhub.calls();
    assert_eq!(calls.len(), 3, "NOTIFIED, its retry, RESOLVED: {calls:#?}");
    for c in &calls {
        assert_eq!(c["FindingIdentifiers"][0]["Id"], finding_id);
        assert_eq!(c["FindingIdentifiers"][0]["ProductArn"], "arn:aws:securityhub:us-east-1::product/aws/securityhub");
        assert_eq!(c["Note"]["UpdatedBy"], "keyturn");
    }
    assert_eq!(calls[0]["Workflow"]["Status"], "NOTIFIED");
    assert!(calls[0]["Note"]["Text"].as_str().unwrap().contains(&saga.saga_id), "the note names the saga");
    assert_eq!(calls[1], calls[0], "the unprocessed update was retried as is");
    assert_eq!(calls[2]["Workflow"]["Status"], "RESOLVED");
    let note = calls[2]["Note"]["Text"].as_str().unwrap();
    assert!(note.contains(&format!("new key {new_id} replaced {old_id}")), "{note}");

    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].attributes["event"], "rotation.succeeded");
    assert_eq!(n[0].document["trigger"], "securityhub:imported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_finding_and_custom_action_each_start_exactly_one_saga() {
    let env = env(Options::default()).await;
    let (_engine, w) = worker(&env);
    env.put_event(LEGACY).await.unwrap();
    let first = env.wait_sagas_done(1, T).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].status, Status::Succeeded);
    // An operator asks again through the custom action: an explicit request, so it runs.
    env.put_event(CUSTOM).await.unwrap();
    let all = env.wait_sagas_done(2, T).await;
    settle(&env).await;
    w.stop().await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().all(|s| s.status == Status::Succeeded));
    let triggers: Vec<&str> = all.iter().map(|s| s.trigger.as_str()).collect();
    assert!(triggers.contains(&"securityhub:imported"));
    assert!(triggers.contains(&"securityhub:custom_action:Rotate with keyturn"), "{triggers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_starts_a_rotation_only_while_a_key_is_past_its_age() {
    let env = env(Options { grace_period: "3s", ..Options::default() }).await;
    let (engine, w) = worker(&env);
    // Imported three times while the first saga is still in flight (grace period)...
    for _ in 0..3 {
        env.put_event(CONSOLIDATED).await.unwrap();
    }
    let done = env.wait_sagas_done(1, T).await;
    assert_eq!(done[0].status, Status::Succeeded);
    let first_new = done[0].keys.new_key.clone().unwrap();
    // ...and again after it succeeded, the same finding (same Id, original
    // FirstObservedAt): the new key is young, nothing starts.
    engine.age_clock().set_skew(Duration::ZERO);
    env.put_event(CONSOLIDATED).await.unwrap();
    settle(&env).await;
    assert_eq!(env.sagas().await.len(), 1, "one saga for four imports");
    let logs = keyturn_testkit::capture::logs();
    assert!(
        logs.contains("finding is stale, nothing to do") && logs.contains("no active key is 90 days old or older"),
        "the re-import was judged by the key's age"
    );

    // 91 days later Security Hub fails the same finding again (same Id and
    // FirstObservedAt): exactly one new rotation, of the key now too old.
    engine.age_clock().set_skew(KEY_PAST_IAM3);
    env.put_event(CONSOLIDATED).await.unwrap();
    env.put_event(CONSOLIDATED).await.unwrap();
    let done = env.wait_sagas_done(2, T).await;
    assert_eq!(done.len(), 2, "exactly one new rotation: {done:#?}");
    assert!(
        done.iter().all(|s| s.status == Status::Succeeded),
        "both succeed: {:#?}",
        done.iter().map(|s| (&s.saga_id, s.status, s.step, &s.outcome.failure, &s.outcome.history)).collect::<Vec<_>>()
    );
    let second = done.iter().find(|s| s.keys.new_key.as_deref() != Some(first_new.as_str())).unwrap();
    assert_eq!(second.keys.old_keys[0].id, first_new, "the second rotation replaced the first one's key");

    // The control's own parameter decides when the finding carries it: at
    // 31 days, a finding with maxAccessKeyAge 30 is due, one without is not.
    engine.age_clock().set_skew(Duration::from_secs(31 * 86_400));
    env.put_event(CONSOLIDATED).await.unwrap();
    settle(&env).await;
    assert_eq!(env.sagas().await.len(), 2, "31 days is under IAM.3's default 90");
    let mut v: serde_json::Value = serde_json::from_str(CONSOLIDATED).unwrap();
    v["detail"]["findings"][0]["Compliance"]["SecurityControlParameters"] = serde_json::json!([{"Name": "maxAccessKeyAge", "Value": ["30"]}]);
    env.put_event(&v.to_string()).await.unwrap();
    let done = env.wait_sagas_done(3, T).await;
    w.stop().await;
    assert_eq!(done.len(), 3);
    assert_eq!(env.user_keys().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_user_is_reported_once_and_counted() {
    let env = env(Options::default()).await;
    let (engine, w) = worker(&env);
    let mut v: serde_json::Value = serde_json::from_str(CONSOLIDATED).unwrap();
    v["detail"]["findings"][0]["Resources"][0]["Id"] = "arn:aws:iam::123456789012:user/payroll-bot".into();
    v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] = "payroll-bot".into();
    for _ in 0..3 {
        env.put_event(&v.to_string()).await.unwrap();
    }
    settle(&env).await;
    w.stop().await;
    assert!(env.sagas().await.is_empty(), "no rotation started");
    assert_eq!(engine.store().unmatched_count("123456789012", "payroll-bot").await.unwrap(), Some(3), "counted on every import");
    let n = env.notifications(1, Duration::from_secs(5)).await;
    assert_eq!(n.len(), 1, "reported once: {n:#?}");
    assert_eq!(n[0].attributes["event"], "rotation.unmatched");
    assert_eq!(n[0].document["user"], "payroll-bot");
    assert!(env.securityhub.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_go_to_the_intake_dlq_and_start_nothing() {
    let env = env(Options::default()).await;
    let (iq, _) = env.intake.clone().unwrap();
    let (_engine, w) = worker(&env);
    let mut missing = serde_json::from_str::<serde_json::Value>(CONSOLIDATED).unwrap();
    missing["detail"]["findings"][0].as_object_mut().unwrap().remove("ProductArn");
    for body in [
        "not json at all".to_string(),
        r#"{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","detail":{}}"#.to_string(),
        missing.to_string(),
    ] {
        env.clients.sqs.send_message().queue_url(&iq).message_body(body).send().await.unwrap();
    }
    // A SCIM expiry notice of the worker's account with no scim_token
    // rotation configured: acknowledged, not dead-lettered, starts nothing.
    // Sent as EventBridge delivers it, `account` included (moto's bus leaves
    // it out, and a Health event without its account is refused:
    // docs/security.md).
    env.send_intake(HEALTH).await.unwrap();
    let (_, idlq) = env.intake.clone().unwrap();
    let dead = keyturn_testkit::env::drain(&env.clients.sqs, &idlq, 3, Duration::from_secs(20)).await;
    settle(&env).await;
    w.stop().await;
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let reasons: Vec<String> = dead.iter().map(|(_, r)| r.clone().unwrap_or_default()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("event is not JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("unsupported event: source \"aws.ec2\"")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "malformed event: finding 0 has no ProductArn"), "{reasons:?}");
    assert!(env.sagas().await.is_empty());
    assert_eq!(env.user_keys().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_scan_starts_only_rotations_past_max_age() {
    // auth0-ses's key is due after 1s; mailer-2's only after 80 days.
    let env = TestEnv::new(Options { max_age: Some("1s"), second_rotation_max_age: Some("80d"), ..Options::default() }).await.unwrap();
    // The engine's clock stands 1.5 s ahead: auth0-ses's key is past its
    // 1 s max_age without waiting for it.
    let clock = ManualClock::starting_now();
    clock.advance(Duration::from_millis(1500));
    let engine = Arc::new(env.engine_at("w1", clock.clone()));
    let plan = engine.plan_scan().await.unwrap().join("\n");
    assert!(plan.contains("auth0-ses: key") && plan.contains("past max_age"), "{plan}");
    assert!(plan.contains("mailer-2: key") && plan.contains("under max_age 80.0d: nothing to do"), "{plan}");

    let mailer_key =
        env.clients.iam.list_access_keys().user_name("mailer-2").send().await.unwrap().access_key_metadata()[0].access_key_id().unwrap().to_string();
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let done = env.wait_sagas_done(1, T).await;
    w.stop().await;
    // A scan 79 days on (the worker's scan task runs this every
    // scan_interval): mailer-2's key, 79 days old, is still under its 80 days.
    clock.advance(Duration::from_secs(79 * 86_400));
    let later = engine.scan_and_start(Duration::ZERO).await.unwrap();
    assert!(later.iter().all(|(id, _)| id != "mailer-2"), "mailer-2 (80d) not started 79 days on: {later:?}");
    assert!(later.iter().any(|(id, _)| id == "auth0-ses"), "the scan ran and saw auth0-ses's key past 1s: {later:?}");
    // (auth0-ses, with max_age 1s, rotates again: its new key is 79 days old by then.)
    let all = env.sagas().await;
    assert!(
        all.iter().all(|s| s.rotation_id == "auth0-ses"),
        "mailer-2 (80d) never started: {:?}",
        all.iter().map(|s| &s.rotation_id).collect::<Vec<_>>()
    );
    assert!(done.iter().all(|s| s.rotation_id == "auth0-ses"), "{done:#?}");
    assert!(done[0].trigger.starts_with("schedule:max_age"), "{}", done[0].trigger);
    assert_eq!(done[0].status, Status::Succeeded);
    // mailer-2 untouched.
    let k = env.clients.iam.list_access_keys().user_name("mailer-2").send().await.unwrap();
    assert_eq!(k.access_key_metadata().len(), 1);
    assert_eq!(k.access_key_metadata()[0].access_key_id(), Some(mailer_key.as_str()), "mailer-2's key untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_nothing() {
    // max_age 1ms: the binary's scan finds the key past it without a wait.
    let env = env(Options { max_age: Some("1ms"), ..Options::default() }).await;
    let dir = std::env::temp_dir().join(format!("keyturn-plan-{}", uuid::Uuid::new_v4()));
    let cfg = env.write_config(&dir).unwrap();
    let event = dir.join("event.json");
    std::fs::write(&event, CONSOLIDATED).unwrap();
    let keys_before = env.user_keys().await;
    let table_before = env.table_dump().await;

    let run = |args: &[&str]| {
        let out =
            std::process::Command::new(keyturn_testkit::env::keyturn_bin()).args(args).arg("--config").arg(&cfg).envs(env.cli_env()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The key is seconds old: the finding is stale, and plan says why.
    let out = run(&["plan", "--event", event.to_str().unwrap()]);
    assert!(
        out.contains("rotation auth0-ses: nothing to do for finding arn:aws:securityhub") && out.contains("no active key is 90 days old or older"),
        "{out}"
    );
    // 91 days on, the same event would start a rotation.
    let engine = env.engine("planner");
    engine.age_clock().set_skew(KEY_PAST_IAM3);
    let out = engine.plan_event(CONSOLIDATED).await.unwrap().join("\n");
    assert!(out.contains("rotation auth0-ses: would start a saga"), "{out}");
    assert!(out.contains(&format!("create a new key for iam user {USER}")), "{out}");
    assert!(out.contains(&keys_before[0].id), "names the current key: {out}");
    assert!(out.contains("patch Auth0 example.eu.auth0.com with the new key"), "{out}");
    assert!(out.contains("mark finding arn:aws:securityhub"), "{out}");
    let out = run(&["plan", "--scan"]);
    assert!(out.contains("past max_age") && out.contains("would start a saga"), "{out}");

    assert_eq!(env.user_keys().await, keys_before, "IAM unchanged");
    assert_eq!(env.table_dump().await, table_before, "table unchanged");
    assert!(env.securityhub.calls().is_empty());
    assert!(env.auth0.patches().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cis_versions_legacy_finding_starts_exactly_one_saga() {
    let env = env(Options::default()).await;
    let (_engine, w) = worker(&env);
    // One at a time: a saga in flight would answer the next finding for the
    // same user. Each rotation makes a new key, which the worker's clock
    // (91 days ahead) sees as past IAM.3's age again.
    for (n, (version, body)) in CIS.iter().enumerate() {
        let finding: serde_json::Value = serde_json::from_str::<serde_json::Value>(body).unwrap()["detail"]["findings"][0].clone();
        env.put_event(body).await.unwrap();
        let done = env.wait_sagas_done(n + 1, T).await;
        assert_eq!(done.len(), n + 1, "CIS {version}: exactly one new saga: {done:#?}");
        let started: Vec<&Saga> = done.iter().filter(|s| s.findings.iter().any(|f| f.id == finding["Id"].as_str().unwrap())).collect();
        assert_eq!(started.len(), 1, "CIS {version}: one saga for its finding");
        let saga = started[0];
        assert_eq!(saga.status, Status::Succeeded, "CIS {version}: {saga:#?}");
        assert_eq!(saga.trigger, "securityhub:imported");
        assert_eq!(saga.findings.len(), 1);
        assert_eq!(saga.findings[0].kind, FindingKind::V1);
        assert_eq!(saga.findings[0].region.as_deref(), finding["Region"].as_str(), "CIS {version}: the finding's own region");
        assert_eq!(saga.findings[0].product_arn, finding["ProductArn"].as_str().unwrap());
    }
    settle(&env).await;
    w.stop().await;
    assert_eq!(env.sagas().await.len(), CIS.len(), "one saga per fixture, no more");
    // Every update went to its finding's region, with its own ProductArn and Id.
    let calls = env.securityhub.of(Api::V1);
    for (version, body) in CIS {
        let finding = serde_json::from_str::<serde_json::Value>(body).unwrap()["detail"]["findings"][0].clone();
        let mine: Vec<_> = calls.iter().filter(|c| c.body["FindingIdentifiers"][0]["Id"] == finding["Id"]).collect();
        let statuses: Vec<&str> = mine.iter().map(|c| c.body["Workflow"]["Status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["NOTIFIED", "RESOLVED"], "CIS {version}");
        for c in mine {
            assert_eq!(c.region, finding["Region"].as_str().unwrap(), "CIS {version}: sent to the finding's region");
            assert_eq!(c.body["FindingIdentifiers"][0]["ProductArn"], finding["ProductArn"]);
        }
    }
    assert!(env.securityhub.calls_v2().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocsf_finding_rotates_the_key_and_is_updated_with_batch_update_findings_v2() {
    let env = env(Options::default()).await;
    let old_id = env.old_keys[0].0.clone();
    let (_engine, w) = worker(&env);
    // The same finding passed, suppressed, and another control's: nothing starts.
    for body in [V2_PASSED, V2_SUPPRESSED, V2_OTHER] {
        env.put_event(body).await.unwrap();
    }
    settle(&env).await;
    assert!(env.sagas().await.is_empty(), "no saga for passed, suppressed or other-control findings");
    // Failed, from eu-west-1 (delivered through the aggregation region's bus);
    // Security Hub reports the first update unprocessed once.
    let mut failed: serde_json::Value = serde_json::from_str(V2_FAILED).unwrap();
    failed["detail"]["findings"][0]["cloud"]["region"] = "eu-west-1".into();
    let finding = failed["detail"]["findings"][0].clone();
    env.securityhub.state.lock().unwrap().unprocessed_next = 1;
    env.put_event(&failed.to_string()).await.unwrap();
    let done = env.wait_sagas_done(1, T).await;
    w.stop().await;

    assert_eq!(done.len(), 1);
    let saga = &done[0];
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(saga.trigger, "securityhub:imported_v2");
    assert_eq!(saga.findings[0].kind, FindingKind::V2);
    assert_eq!(saga.findings[0].region.as_deref(), Some("eu-west-1"));
    let new_id = saga.keys.new_key.clone().unwrap();
    assert_eq!(env.user_keys().await.len(), 1);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, new_id);

    assert!(env.securityhub.calls().is_empty(), "no BatchUpdateFindings for an OCSF finding");
    let calls = env.securityhub.of(Api::V2);
    assert_eq!(calls.len(), 3, "In Progress, its retry, Resolved: {calls:#?}");
    let identifier = serde_json::json!({
        "CloudAccountUid": finding["cloud"]["account"]["uid"],
        "FindingInfoUid": finding["finding_info"]["uid"],
        "MetadataProductUid": finding["metadata"]["product"]["uid"],
    });
    for c in &calls {
        assert_eq!(c.region, "eu-west-1", "sent to the finding's region");
        assert_eq!(c.body["FindingIdentifiers"], serde_json::json!([identifier]));
        assert!(c.body.get("MetadataUids").is_none());
    }
    assert_eq!(calls[0].body["StatusId"], 2, "In Progress");
    assert!(calls[0].body["Comment"].as_str().unwrap().contains(&saga.saga_id), "the comment names the saga");
    assert_eq!(calls[1].body, calls[0].body, "the unprocessed update was retried as is");
    assert_eq!(calls[2].body["StatusId"], 4, "Resolved");
    let comment = calls[2].body["Comment"].as_str().unwrap();
    assert!(comment.contains(&format!("new key {new_id} replaced {old_id}")), "{comment}");

    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.succeeded");
    assert_eq!(n[0].document["trigger"], "securityhub:imported_v2");
}
