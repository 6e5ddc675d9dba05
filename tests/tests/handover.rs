//! The console handover of a SCIM token (issue 23 item 3), against moto
//! (queues, table, KMS, SNS, Secrets Manager) and the Graph fake. The person
//! is played by the test and only ever touches Secrets Manager, as they
//! would in the AWS console: no `keyturn provide`, no `keyturn confirm`.
//! The rotation is started with the real binary; the worker runs in this
//! process so its logs and step messages can be scanned for the token.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::handover::{secret_name, Slot};
use keyturn::saga::{Status, Step};
use keyturn_testkit::env::{keyturn_bin, Notification, Options, RunningWorker, TestEnv};
use keyturn_testkit::recording::RecordingQueue;

const PUT_EVENT: &str = include_str!("../fixtures/cloudtrail-handover-put-secret-value.json");
const FIXTURE_SAGA: &str = "00000000-0000-4000-8000-000000000000";

async fn env(reminder_every: &'static str, intake: bool) -> TestEnv {
    TestEnv::new(Options { scim: Some((reminder_every, "1h")), intake, ..Options::default() }).await.unwrap()
}

fn cli(env: &TestEnv, cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(keyturn_bin()).arg("--config").arg(cfg).args(args).envs(env.cli_env()).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Start the rotation with the binary, as an operator (or the Health event) would.
fn rotate(env: &TestEnv) -> (String, String) {
    let cfg = env.write_config(&std::env::temp_dir().join(format!("keyturn-handover-{}", uuid::Uuid::new_v4()))).unwrap();
    let (code, out, err) = cli(env, &cfg, &["rotate", "entra-scim", "--old-token-created", "2025-12-01", "--old-token-id", "tok-0001"]);
    assert_eq!(code, 0, "{out}{err}");
    let saga_id = out.split_whitespace().skip_while(|w| *w != "saga").nth(1).unwrap().to_string();
    (saga_id, format!("{out}{err}"))
}

/// Collect notifications until one satisfies `want`.
async fn wait_notice(env: &TestEnv, seen: &mut Vec<Notification>, what: &str, want: impl Fn(&Notification) -> bool) -> Notification {
    let start = Instant::now();
    loop {
        if let Some(n) = seen.iter().find(|n| want(n)) {
            return n.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(45), "no {what} notice; got {:?}", seen.iter().map(|n| &n.attributes["event"]).collect::<Vec<_>>());
        seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    }
}

async fn wait_step(env: &TestEnv, saga_id: &str, step: Step, timeout: Duration) {
    let store = keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas");
    let start = Instant::now();
    loop {
        let s = store.load(saga_id).await.unwrap().unwrap().saga;
        if s.step == step || s.status.is_terminal() {
            assert_eq!(s.step, step, "saga ended elsewhere: {s:#?}");
            return;
        }
        assert!(start.elapsed() < timeout, "saga {saga_id} still at {} after {timeout:?}", s.step);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn step_of(env: &TestEnv, saga_id: &str) -> Step {
    keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas").load(saga_id).await.unwrap().unwrap().saga.step
}

/// Whether a secret of that name exists (not deleted).
async fn exists(env: &TestEnv, name: &str) -> bool {
    match env.clients.secrets.describe_secret().secret_id(name).send().await {
        Ok(d) => d.deleted_date.is_none(),
        Err(e) => {
            let code = e.as_service_error().and_then(|s| aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(s)).unwrap_or("");
            assert_eq!(code, "ResourceNotFoundException", "{e:?}");
            false
        }
    }
}

/// The person pastes a value in the console (Set secret value).
async fn paste(env: &TestEnv, name: &str, value: &str) {
    env.clients.secrets.put_secret_value().secret_id(name).secret_string(value).send().await.unwrap();
}

/// The CloudTrail event of that paste, as the stack's rule delivers it to the intake queue.
fn put_event(rotation: &str, saga_id: &str, leaf: &str) -> String {
    PUT_EVENT.replace(&format!("entra-scim/{FIXTURE_SAGA}"), &format!("{rotation}/{saga_id}{leaf}"))
}

fn graph_calls(env: &TestEnv, method: &str, suffix: &str) -> usize {
    let st = env.scim.as_ref().unwrap().graph.state.lock().unwrap();
    st.calls.iter().filter(|(m, p, _)| m == method && p.ends_with(suffix)).count()
}

fn steps(n: &Notification) -> String {
    n.document["steps"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_pasted_in_the_console_completes_the_rotation_and_leaves_no_trace() {
    // Reminders every 2s: with no event routed, the reminder is what notices.
    let env = env("2s", false).await;
    let side = env.scim.as_ref().unwrap();
    let queue = RecordingQueue::new(env.sqs_queue(), false);
    let engine = Arc::new(env.engine_with("w1", queue.clone()));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let mut seen = vec![];
    let (saga_id, cli_out) = rotate(&env);
    let token_secret = secret_name("entra-scim", &saga_id, Slot::Token);
    let confirm_secret = secret_name("entra-scim", &saga_id, Slot::Confirm);

    // 1. The notice names the handover secret with its console link; keyturn made it: empty, on its KMS key, tagged.
    let ask = wait_notice(&env, &mut seen, "create_new", |n| n.document["action"] == "create_new").await;
    let link = format!("https://us-east-1.console.aws.amazon.com/secretsmanager/secret?name=keyturn%2Fhandover%2Fentra-scim%2F{saga_id}&region=us-east-1");
    for needle in [link.as_str(), "paste the token alone", &format!("keyturn provide {saga_id}")] {
        assert!(steps(&ask).contains(needle), "missing {needle:?} in {}", steps(&ask));
    }
    assert!(ask.raw.contains(&link), "the e-mail text carries the link too");
    let d = env.clients.secrets.describe_secret().secret_id(&token_secret).send().await.unwrap();
    assert_eq!(d.kms_key_id(), Some("alias/keyturn"), "on keyturn's KMS key");
    assert!(d.tags().iter().any(|t| t.key() == Some("keyturn:saga_id") && t.value() == Some(saga_id.as_str())), "{:?}", d.tags());
    assert!(env.clients.secrets.get_secret_value().secret_id(&token_secret).send().await.is_err(), "created with no value");

    // 2. The person pastes the token (with the line break a copy often brings), nothing else.
    paste(&env, &token_secret, &format!("{}\n", side.new_token)).await;
    wait_step(&env, &saga_id, Step::AwaitRetire, Duration::from_secs(60)).await;
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.new_token.as_str()), "tested and saved in Entra, trimmed");
    assert!(!exists(&env, &token_secret).await, "the token's handover secret is deleted once Entra holds the token");

    // 3. The delete notice names the confirmation secret; the person sets it to the word.
    let delete = wait_notice(&env, &mut seen, "delete_old", |n| n.document["action"] == "delete_old").await;
    let text = steps(&delete);
    assert!(text.contains("tok-0001 created on 2025-12-01") && text.contains("DELETED"), "{text}");
    assert!(text.contains(&format!("name=keyturn%2Fhandover%2Fentra-scim%2F{saga_id}%2Fold-token-deleted")), "{text}");
    assert!(exists(&env, &confirm_secret).await);
    paste(&env, &confirm_secret, "DELETED").await;
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(saga.effects.old_deleted && !saga.keys.secret_stored);
    wait_notice(&env, &mut seen, "rotation.succeeded", |n| n.attributes["event"] == "rotation.succeeded").await;
    w.stop().await;
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    assert!(!exists(&env, &token_secret).await && !exists(&env, &confirm_secret).await, "both handover secrets are gone");
    let left = env.clients.secrets.list_secrets().include_planned_deletion(true).send().await.unwrap();
    let names: Vec<&str> = left.secret_list().iter().filter_map(|s| s.name()).filter(|n| n.starts_with("keyturn/handover/")).collect();
    assert!(names.is_empty(), "no handover secret is left, not even scheduled for deletion: {names:?}");

    // The token appears nowhere else: logs, step messages, the table, the notices, the CLI.
    let logs = keyturn_testkit::capture::logs();
    let bodies = queue.bodies().join("\n");
    let table = env.table_dump().await;
    let notes: String = seen.iter().map(|n| n.raw.clone()).collect::<Vec<_>>().join("\n");
    assert!(!table.contains("secret="), "the sealed token is erased from the saga item");
    for (name, text) in [("logs", &logs), ("SQS bodies", &bodies), ("DynamoDB", &table), ("notifications", &notes), ("CLI output", &cli_out)] {
        assert!(!text.is_empty(), "{name} scanned is empty");
        for secret in [&side.new_token, &side.old_token, &side.client_secret] {
            assert!(!text.contains(secret.as_str()), "a token leaked into {name}");
        }
    }
    assert!(logs.contains("a person acted in the console"), "the logs say how it was handed over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_value_is_refused_with_a_notice_and_nothing_reaches_entra() {
    let env = env("2s", false).await;
    let side = env.scim.as_ref().unwrap();
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let mut seen = vec![];
    let (saga_id, _) = rotate(&env);
    let token_secret = secret_name("entra-scim", &saga_id, Slot::Token);
    wait_notice(&env, &mut seen, "create_new", |n| n.document["action"] == "create_new").await;

    // Pasted with the console's dialogue text around it: not one token.
    let garbage = format!("Your new token: {} (shown once)", side.new_token);
    paste(&env, &token_secret, &garbage).await;
    let refused = wait_notice(&env, &mut seen, "refusal", |n| steps(n).contains("did not use the value")).await;
    let text = steps(&refused);
    assert!(text.contains("spaces, line breaks or control characters") && text.contains(&token_secret), "{text}");
    assert_eq!(step_of(&env, &saga_id).await, Step::AwaitNew, "still waiting for a token");
    assert_eq!(graph_calls(&env, "POST", "/validateCredentials"), 0, "nothing was tested in Entra");
    assert_eq!(graph_calls(&env, "PUT", "/secrets"), 0, "nothing was saved in Entra");
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.old_token.as_str()), "Entra keeps the old token");

    // Pasted again, properly: taken.
    paste(&env, &token_secret, &side.new_token).await;
    wait_step(&env, &saga_id, Step::AwaitRetire, Duration::from_secs(60)).await;
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.new_token.as_str()));
    w.stop().await;
    seen.extend(env.notifications(0, Duration::from_secs(1)).await);
    let notes: String = seen.iter().map(|n| n.raw.clone()).collect::<Vec<_>>().join("\n");
    let logs = keyturn_testkit::capture::logs();
    for (name, text) in [("logs", &logs), ("notifications", &notes)] {
        assert!(!text.contains("Your new token") && !text.contains(side.new_token.as_str()), "the refused value leaked into {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routed_change_event_is_acted_on_at_once_and_forged_ones_read_nothing() {
    // Reminders an hour apart: only the event can make keyturn look now.
    let env = env("1h", true).await;
    let side = env.scim.as_ref().unwrap();
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, env.intake_queue());
    let mut seen = vec![];
    let (saga_id, _) = rotate(&env);
    let token_secret = secret_name("entra-scim", &saga_id, Slot::Token);
    wait_notice(&env, &mut seen, "create_new", |n| n.document["action"] == "create_new").await;

    // Forged or foreign events: a name outside the prefix, the saga under
    // another rotation's name, another account. All go to the intake DLQ.
    let outside = PUT_EVENT.replace(&format!("keyturn/handover/entra-scim/{FIXTURE_SAGA}"), "prod/database-password");
    let wrong_rotation = put_event("auth0-ses", &saga_id, "");
    let other_account = put_event("entra-scim", &saga_id, "").replace("\"account\": \"123456789012\"", "\"account\": \"999999999999\"");
    // A secret of that forged name holds a token keyturn must never read.
    let planted = format!("scim-planted-{}", uuid::Uuid::new_v4().simple());
    for name in [format!("keyturn/handover/auth0-ses/{saga_id}"), "prod/database-password".to_string()] {
        env.clients.secrets.create_secret().name(name).secret_string(&planted).send().await.unwrap();
    }
    for body in [&outside, &wrong_rotation, &other_account] {
        env.send_intake(body).await.unwrap();
    }
    let dead = env.intake_dlq(3, Duration::from_secs(30)).await;
    let reasons: Vec<String> = dead.iter().map(|(_, r)| r.clone().unwrap_or_default()).collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("is not a handover secret")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("belongs to entra-scim: nothing read")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("worker's account")), "{reasons:?}");
    assert_eq!(step_of(&env, &saga_id).await, Step::AwaitNew);
    assert_eq!(graph_calls(&env, "POST", "/validateCredentials"), 0, "no planted value was used");

    // The real paste and its event: handed over well before the next reminder.
    paste(&env, &token_secret, &side.new_token).await;
    env.send_intake(&put_event("entra-scim", &saga_id, "")).await.unwrap();
    wait_step(&env, &saga_id, Step::AwaitRetire, Duration::from_secs(60)).await;
    assert_eq!(side.graph.saved_token().as_deref(), Some(side.new_token.as_str()));

    // Confirming in the console: a wrong word is refused with a notice, the word ends the rotation.
    let confirm_secret = secret_name("entra-scim", &saga_id, Slot::Confirm);
    wait_notice(&env, &mut seen, "delete_old", |n| n.document["action"] == "delete_old").await;
    paste(&env, &confirm_secret, "yes").await;
    env.send_intake(&put_event("entra-scim", &saga_id, "/old-token-deleted")).await.unwrap();
    wait_notice(&env, &mut seen, "refused confirmation", |n| steps(n).contains("not the word DELETED")).await;
    assert_eq!(step_of(&env, &saga_id).await, Step::AwaitRetire, "not confirmed by another word");
    paste(&env, &confirm_secret, "deleted").await;
    env.send_intake(&put_event("entra-scim", &saga_id, "/old-token-deleted")).await.unwrap();
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    // A late repeat of the event finds nothing waiting: acknowledged (the
    // intake queue empties: received, handled and deleted), not dead-lettered.
    env.send_intake(&put_event("entra-scim", &saga_id, "")).await.unwrap();
    env.wait_intake_idle(Duration::from_secs(30)).await;
    w.stop().await;
    assert!(env.intake_dlq(0, Duration::from_secs(2)).await.is_empty(), "nothing more dead-lettered");
    assert!(!exists(&env, &token_secret).await && !exists(&env, &confirm_secret).await);
    let logs = keyturn_testkit::capture::logs();
    assert!(!logs.contains(&planted) && !logs.contains(side.new_token.as_str()));
}
