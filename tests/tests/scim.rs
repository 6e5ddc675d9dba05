//! SCIM token → Entra provisioning, the rotation with human steps (issue #3),
//! against moto (queues, table, KMS, SNS, Secrets Manager) and the Graph fake.
//! The person is played by the test: it reads the notices and runs
//! `keyturn provide` / `keyturn confirm` (the real binary where it matters).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::commands::Request;
use keyturn::saga::{KeyRef, Status, Step};
use keyturn::store::Created;
use keyturn_testkit::env::{cli, Notification, Options, RunningWorker, TestEnv};
use keyturn_testkit::graph_fake::CREDENTIAL_FAILURE;
use keyturn_testkit::recording::RecordingQueue;
use secrecy::SecretString;
use serde_json::json;

const HEALTH: &str = include_str!("../fixtures/health-scim-expiry.json");

async fn env(reminder_every: &'static str, deadline: &'static str, intake: bool) -> TestEnv {
    TestEnv::new(Options { scim: Some((reminder_every, deadline)), intake, ..Options::default() }).await.unwrap()
}

/// Collect notifications until one with `event` (and `extra`) arrives.
async fn wait_for(env: &TestEnv, seen: &mut Vec<Notification>, event: &str, timeout: Duration) -> Notification {
    let start = Instant::now();
    loop {
        if let Some(n) = seen.iter().find(|n| n.attributes.get("event").map(String::as_str) == Some(event)) {
            return n.clone();
        }
        assert!(
            start.elapsed() < timeout,
            "no {event} notification within {timeout:?}; got {:?}",
            seen.iter().map(|n| &n.attributes["event"]).collect::<Vec<_>>()
        );
        seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    }
}

fn count(seen: &[Notification], event: &str) -> usize {
    seen.iter().filter(|n| n.attributes.get("event").map(String::as_str) == Some(event)).count()
}

async fn wait_step(env: &TestEnv, saga_id: &str, step: Step) {
    let store = keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas");
    for _ in 0..300 {
        let s = store.load(saga_id).await.unwrap().unwrap().saga;
        if s.step == step || s.status.is_terminal() {
            assert_eq!(s.step, step, "saga ended elsewhere: {s:#?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("saga {saga_id} never reached {step}");
}

fn graph_calls(env: &TestEnv, method: &str, suffix: &str) -> usize {
    let st = env.scim.as_ref().unwrap().graph.state.lock().unwrap();
    st.calls.iter().filter(|(m, p, s)| m == method && p.ends_with(suffix) && *s < 300).count()
}

/// A worker, a rotation started by hand, and its first notice received.
async fn start_and_wait_for_the_ask(env: &TestEnv) -> (Arc<keyturn::engine::Engine<keyturn::queue::SqsQueue>>, RunningWorker, Vec<Notification>, String) {
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let mut seen = vec![];
    let Created::New(id) = engine.request("entra-scim", "manual").await.unwrap() else { panic!() };
    wait_for(env, &mut seen, "rotation.action_required", Duration::from_secs(30)).await;
    (engine, w, seen, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_rotates_the_token_with_the_cli_and_nothing_leaks() {
    let env = env("1h", "1h", false).await;
    let side = env.scim.as_ref().unwrap();
    let dir = std::env::temp_dir().join(format!("keyturn-scim-{}", uuid::Uuid::new_v4()));
    let cfg = env.write_config(&dir).unwrap();
    let queue = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let mut seen = vec![];
    let mut cli_output = String::new();

    // Naming the old token makes sense only for a credential made by hand.
    let (code, _, err) = cli(&env, &cfg, &["rotate", "auth0-ses", "--old-token-created", "2025-12-01"], None);
    assert_ne!(code, 0);
    assert!(err.contains("applies only to credentials made by a person"), "{err}");
    let (code, _, err) = cli(&env, &cfg, &["rotate", "entra-scim", "--old-token-created", "2025-13-01"], None);
    assert_ne!(code, 0);
    assert!(err.contains("expected YYYY-MM-DD"), "{err}");

    let (code, out, err) = cli(&env, &cfg, &["rotate", "entra-scim", "--old-token-created", "2025-12-01", "--old-token-id", "tok-0001"], None);
    assert_eq!(code, 0, "{out}{err}");
    let saga_id = out.split_whitespace().skip_while(|w| *w != "saga").nth(1).unwrap().to_string();

    // 1. The person is asked to generate a token, told where and how to hand it over.
    let ask = wait_for(&env, &mut seen, "rotation.action_required", Duration::from_secs(30)).await;
    assert_eq!(ask.attributes["credential_kind"], "scim_token");
    assert_eq!(ask.attributes["target_kind"], "entra_provisioning");
    assert_eq!(ask.document["action"], "create_new");
    let steps = ask.document["steps"].to_string();
    for needle in ["Manage provisioning", "Generate token", "shown only this once", &format!("keyturn provide {saga_id}"), "--from-secret"] {
        assert!(steps.contains(needle), "missing {needle:?} in {steps}");
    }
    assert!(ask.document["deadline"].as_u64().is_some());
    assert_eq!(ask.document["old_token"]["id"], "tok-0001");
    assert_eq!(graph_calls(&env, "PUT", "/secrets"), 0, "nothing saved before the token arrives");

    // Bad hand-overs change nothing: empty input, and confirming too early.
    let (code, _, err) = cli(&env, &cfg, &["provide", &saga_id], Some("\n"));
    assert_ne!(code, 0);
    assert!(err.contains("no token given"), "{err}");
    let (code, _, err) = cli(&env, &cfg, &["provide", &saga_id], Some("two words\n"));
    assert_ne!(code, 0);
    assert!(err.contains("spaces, line breaks"), "{err}");
    let (code, _, err) = cli(&env, &cfg, &["confirm", &saga_id], None);
    assert_ne!(code, 0);
    assert!(err.contains("not waiting for the old credential's deletion"), "{err}");

    // 2. The token on standard input (with the newline a file ends with).
    let (code, out, err) = cli(&env, &cfg, &["provide", &saga_id, "--wait", "--timeout", "60s"], Some(&format!("{}\n", side.new_token)));
    cli_output.push_str(&out);
    cli_output.push_str(&err);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("waiting for a person again"), "{out}");
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.new_token.as_str()), "saved, trimmed");
    {
        let st = side.graph.state.lock().unwrap();
        assert!(st.secrets.contains(&json!({"key": "NotificationEmail", "value": "ops@example.com"})), "other keys kept");
        let order: Vec<&str> = st
            .calls
            .iter()
            .filter(|(_, p, _)| !p.ends_with("/token"))
            .map(|(m, p, _)| match (m.as_str(), p) {
                (_, p) if p.ends_with("validateCredentials") => "test",
                ("GET", p) if p.ends_with("/secrets") => "read",
                ("PUT", _) => "save",
                ("GET", _) => "job",
                _ => "other",
            })
            .collect();
        assert_eq!(order, ["test", "read", "save", "job"], "Test connection, then Save, then the job check");
    }

    // 3. Asked to delete the old token, named by its ID and date; the new one named as the one to keep.
    let delete = seen_after(&env, &mut seen, "delete_old").await;
    let text = delete.document["steps"].to_string();
    assert!(text.contains("tok-0001 created on 2025-12-01"), "{text}");
    assert!(text.contains("Do NOT delete the token handed over"), "{text}");
    assert!(text.contains(&format!("keyturn confirm {saga_id}")), "{text}");

    // 4. The person confirms; the rotation succeeds.
    let (code, out, err) = cli(&env, &cfg, &["confirm", &saga_id, "--wait"], None);
    cli_output.push_str(&out);
    cli_output.push_str(&err);
    assert_eq!(code, 0, "{out}{err}");
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(30)).await;
    assert_eq!(saga.status, Status::Succeeded);
    assert!(saga.effects.old_deleted && !saga.keys.secret_stored);
    let ok = wait_for(&env, &mut seen, "rotation.succeeded", Duration::from_secs(20)).await;
    assert_eq!(ok.document["recommended_action"], "None. Entra uses the new token and the old token is deleted.");
    let tokens = ok.document["keys"].to_string();
    assert!(tokens.contains("deleted (confirmed by a person)") && tokens.contains("saved in Entra"), "{tokens}");
    w.stop().await;
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);

    // No token, old or new, and no Graph secret anywhere.
    let logs = keyturn_testkit::capture::logs();
    let bodies = queue.bodies().join("\n");
    let table = env.table_dump().await;
    assert!(!table.contains("secret="), "the sealed token is erased from the saga item");
    let notes: String = seen.iter().map(|n| n.raw.clone()).collect::<Vec<_>>().join("\n");
    let (_, status_out, _) = cli(&env, &cfg, &["status", &saga_id, "--json"], None);
    let secrets = [&side.new_token, &side.old_token, &side.client_secret];
    for (name, text) in
        [("logs", &logs), ("SQS bodies", &bodies), ("DynamoDB", &table), ("notifications", &notes), ("CLI output", &cli_output), ("status", &status_out)]
    {
        assert!(!text.is_empty(), "{name} scanned is empty");
        for secret in secrets {
            assert!(!text.contains(secret.as_str()), "a token leaked into {name}");
        }
    }
    println!(
        "scim leak scan: 3 secrets against {} log bytes, {} step messages, {} table bytes, {} notification bytes: 0 found",
        logs.len(),
        queue.bodies().len(),
        table.len(),
        notes.len()
    );
}

/// The `action_required` notice asking to delete the old token.
async fn seen_after(env: &TestEnv, seen: &mut Vec<Notification>, action: &str) -> Notification {
    let start = Instant::now();
    loop {
        if let Some(n) = seen.iter().find(|n| n.document["action"] == action) {
            return n.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no {action} notice");
        seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_message_twice_and_graph_throttling_change_nothing() {
    let env = env("1h", "1h", false).await;
    let side = env.scim.as_ref().unwrap();
    let queue = RecordingQueue::new(env.sqs_queue(), true);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let mut seen = vec![];
    let old = KeyRef { id: "created 2025-12-01".into(), active: true, created_at: Some(1_764_547_200_000) };
    let Created::New(id) = engine.request_with("entra-scim", Request { trigger: "manual".into(), old: Some(old), ..Request::default() }).await.unwrap()
    else {
        panic!()
    };
    wait_for(&env, &mut seen, "rotation.action_required", Duration::from_secs(30)).await;
    side.graph.state.lock().unwrap().throttle_next = 2;
    engine.provide(&id, &SecretString::from(side.new_token.clone()), None).await.unwrap();
    // Handing it over twice is refused, not applied twice.
    let again = engine.provide(&id, &SecretString::from(side.new_token.clone()), None).await.unwrap_err();
    assert!(again.to_string().contains("not waiting for a new credential"), "{again}");
    // As a person would: confirm after reading the notice. (Confirming before
    // the notice is sent is allowed too, and then there is no notice.)
    seen_after(&env, &mut seen, "delete_old").await;
    engine.confirm(&id).await.unwrap();
    let saga = env.wait_terminal(&id, Duration::from_secs(30)).await;
    // Every copy due by now (each sent a second after its original) was
    // received and handled, and what handling them sent too; only the
    // wake-ups an hour away stay delayed.
    queue.wait_handled(Duration::from_secs(60), Duration::from_secs(30)).await;
    w.stop().await;
    seen.extend(env.notifications(0, Duration::from_secs(2)).await);

    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(graph_calls(&env, "POST", "/validateCredentials"), 1, "one Test connection");
    assert_eq!(graph_calls(&env, "PUT", "/secrets"), 1, "one Save");
    let throttled = side.graph.state.lock().unwrap().calls.iter().filter(|(_, _, s)| *s == 429).count();
    assert_eq!(throttled, 2, "Graph answered 429 twice and keyturn waited it out");
    assert_eq!(count(&seen, "rotation.action_required"), 2, "one notice per wait, duplicates or not");
    assert_eq!(count(&seen, "rotation.reminder"), 0);
    assert_eq!(count(&seen, "rotation.succeeded"), 1);
    let sent = queue.bodies().len();
    assert!(sent >= 10, "every message was sent twice: {sent}");
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.new_token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_entra_rejects_is_never_saved() {
    let env = env("1h", "1h", false).await;
    let side = env.scim.as_ref().unwrap();
    let (_engine, w, mut seen, id) = start_and_wait_for_the_ask(&env).await;
    // Handed over from Secrets Manager this time, with the real binary.
    let wrong = format!("scim-wrong-{}", uuid::Uuid::new_v4().simple());
    env.clients.secrets.create_secret().name("scim/handover").secret_string(json!({"token": wrong}).to_string()).send().await.unwrap();
    let cfg = env.write_config(&std::env::temp_dir().join(format!("keyturn-scim-{}", uuid::Uuid::new_v4()))).unwrap();
    let (code, out, err) = cli(&env, &cfg, &["provide", &id, "--from-secret", "scim/handover", "--json-key", "token"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(&wrong) && !err.contains(&wrong), "the CLI does not print the token");
    let saga = env.wait_terminal(&id, Duration::from_secs(30)).await;
    let failed = wait_for(&env, &mut seen, "rotation.failed", Duration::from_secs(20)).await;
    w.stop().await;

    assert_eq!(saga.status, Status::Compensated);
    assert_eq!(saga.outcome.failure.as_ref().unwrap().code, CREDENTIAL_FAILURE);
    assert_eq!(graph_calls(&env, "PUT", "/secrets"), 0, "nothing saved");
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.old_token.as_str()), "Entra keeps the old token");
    assert_eq!(failed.document["failure"]["code"], CREDENTIAL_FAILURE);
    assert!(failed.document["failure"]["message"].as_str().unwrap().contains("Entra rejected the new token in Test connection"));
    let action = failed.document["recommended_action"].as_str().unwrap();
    assert!(action.contains("nothing was saved") && action.contains("Delete the unused new token"), "{action}");
    assert!(failed.document["target"]["state"].as_str().unwrap().contains("nothing was saved"));
    assert!(!failed.raw.contains(&wrong), "the refused token is not in the notice");
    assert!(!keyturn_testkit::capture::logs().contains(&wrong), "nor in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_quarantine_after_save_needs_attention() {
    let env = env("1h", "1h", false).await;
    let side = env.scim.as_ref().unwrap();
    side.graph.state.lock().unwrap().job = json!({"id": "job", "status": {"code": "Quarantine", "quarantine": {
        "reason": "EncounteredQuarantineException", "currentBegan": "2026-11-21T08:00:00Z",
        "error": {"code": CREDENTIAL_FAILURE, "message": "Failed to validate the credentials of the target system", "tenantActionable": true}}}});
    let (engine, w, mut seen, id) = start_and_wait_for_the_ask(&env).await;
    engine.provide(&id, &SecretString::from(side.new_token.clone()), None).await.unwrap();
    let saga = env.wait_terminal(&id, Duration::from_secs(30)).await;
    let alert = wait_for(&env, &mut seen, "rotation.needs_attention", Duration::from_secs(20)).await;
    w.stop().await;

    assert_eq!(saga.status, Status::NeedsAttention);
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.new_token.as_str()), "it was saved; the job is what failed");
    assert_eq!(alert.attributes["severity"], "critical");
    let msg = alert.document["failure"]["message"].as_str().unwrap();
    assert!(msg.contains("quarantine") && msg.contains(CREDENTIAL_FAILURE) && msg.contains("Failed to validate the credentials"), "{msg}");
    let action = alert.document["recommended_action"].as_str().unwrap();
    assert!(action.contains("Do not delete either token"), "{action}");
    assert_eq!(count(&seen, "rotation.action_required"), 1, "not asked to delete the old token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_are_sent_and_the_deadline_ends_the_saga() {
    let env = env("1s", "8s", false).await;
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let mut seen = vec![];
    let Created::New(id) = engine.request("entra-scim", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&id, Duration::from_secs(40)).await;
    let failed = wait_for(&env, &mut seen, "rotation.failed", Duration::from_secs(20)).await;
    w.stop().await;
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);

    assert_eq!(saga.status, Status::Compensated);
    assert_eq!(saga.outcome.failure.as_ref().unwrap().code, "DeadlinePassed");
    assert_eq!(count(&seen, "rotation.action_required"), 1);
    let reminders = count(&seen, "rotation.reminder");
    assert!((2..=8).contains(&reminders), "8s deadline, 1s between notices: {reminders} reminders");
    let numbers: Vec<u64> = seen.iter().filter(|n| n.attributes["event"] == "rotation.reminder").filter_map(|n| n.document["reminder"].as_u64()).collect();
    assert_eq!(numbers, (1..=reminders as u64).collect::<Vec<_>>(), "reminders are numbered in order");
    let action = failed.document["recommended_action"].as_str().unwrap();
    assert!(action.contains("No token was handed over in time"), "{action}");
    assert_eq!(graph_calls(&env, "POST", "/validateCredentials"), 0);
    // Too late now.
    let late = engine.provide(&id, &SecretString::from("scim-late-token-0123456789".to_string()), None).await.unwrap_err();
    assert!(late.to_string().contains("already ended"), "{late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_expiry_notice_starts_the_rotation_once() {
    let env = env("1h", "1h", true).await;
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let mut seen = vec![];
    // The event as EventBridge delivers it to the intake queue. (Sent to the
    // queue directly: moto's EventBridge leaves `account` empty in what it
    // delivers, and keyturn rightly matches the rotation's account_id.)
    let (iq, _) = env.intake.clone().unwrap();
    let deliver = || env.clients.sqs.send_message().queue_url(&iq).message_body(HEALTH).send();
    deliver().await.unwrap();
    let ask = wait_for(&env, &mut seen, "rotation.action_required", Duration::from_secs(30)).await;
    assert_eq!(ask.attributes["rotation_id"], "entra-scim");
    assert_eq!(ask.document["trigger"], "health:scim_expiry");
    assert!(ask.document["steps"].to_string().contains("--old-token-created"), "no old token on record: the notice asks for it");
    // AWS repeats the notice: the waiting saga answers it.
    deliver().await.unwrap();
    env.wait_intake_idle(Duration::from_secs(30)).await;
    w.stop().await;
    let sagas: Vec<_> = engine.store().list().await.unwrap().into_iter().map(|s| s.saga).collect();
    assert_eq!(sagas.len(), 1, "{sagas:#?}");
    assert_eq!((sagas[0].rotation_id.as_str(), sagas[0].step), ("entra-scim", Step::AwaitNew));
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    assert_eq!(count(&seen, "rotation.action_required"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_job_lifts_the_quarantine_the_old_token_caused() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), scim_restart: true, ..Options::default() }).await.unwrap();
    let side = env.scim.as_ref().unwrap();
    // The old token expired: Entra quarantined the job before keyturn started.
    side.graph.state.lock().unwrap().job = json!({"id": "job", "status": {"code": "Quarantine",
        "quarantine": {"reason": "EncounteredQuarantineException", "error": {"code": CREDENTIAL_FAILURE, "message": "expired"}},
        "lastExecution": {"state": "Failed", "timeBegan": "2026-11-20T08:00:00Z", "timeEnded": "2026-11-20T08:00:05Z", "error": {"code": CREDENTIAL_FAILURE, "message": "expired"}}}});
    let (engine, w, _seen, id) = start_and_wait_for_the_ask(&env).await;
    engine.provide(&id, &SecretString::from(side.new_token.clone()), None).await.unwrap();
    wait_step(&env, &id, Step::AwaitRetire).await;
    w.stop().await;
    let st = side.graph.state.lock().unwrap();
    assert_eq!(st.restarts.len(), 1, "one restart after Save");
    assert_eq!(st.job["status"]["code"], "Active", "quarantine lifted by the restart and a good run");
    let save = st.calls.iter().position(|(m, p, _)| m == "PUT" && p.ends_with("/secrets")).unwrap();
    let restart = st.calls.iter().position(|(_, p, _)| p.ends_with("/restart")).unwrap();
    assert!(save < restart, "the restart comes after the new token is saved");
}
