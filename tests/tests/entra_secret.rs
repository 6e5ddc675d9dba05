//! keyturn's own Entra client secret (issue 24), rotated into the Secrets
//! Manager secret keyturn reads it from, against moto and the Graph fake
//! (addPassword / removePassword, a token endpoint that takes exactly the
//! app's current passwords, seeded replication delay). The worker and the
//! commands are the real `keyturn` binary; an Entra SCIM rotation that signs
//! in with the same secret runs before, during and after.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyturn::saga::{Status, Step};
use keyturn_testkit::env::{cli, keyturn_bin, Options, TestEnv};
use keyturn_testkit::graph_fake::{APP, CLIENT_ID, FIRST_KEY_ID, TENANT};
use keyturn_testkit::process::Guard;
use serde_json::Value;

/// The `entra-own` rotation: the Entra app's client secret into
/// `keyturn/entra`, the secret the `entra-scim` rotation signs in with.
fn own_rotation(graph: &str, before_expiry: &str, grace: &str) -> String {
    format!(
        r#"
[[rotation]]
id = "entra-own"
source = {{ kind = "entra_client_secret", tenant_id = "{TENANT}", client_id = "{CLIENT_ID}", application_id = "{APP}", client_secret = {{ secrets_manager = "keyturn/entra", json_key = "client_secret" }}, login_base_url = "{graph}", graph_base_url = "{graph}" }}
[rotation.target]
kind = "secrets_manager_secret"
secret_id = "keyturn/entra"
access_key_id_field = "client_secret_key_id"
secret_access_key_field = "client_secret"
[rotation.policy]
grace_period = "{grace}"
propagation_timeout = "60s"
retry_base = "200ms"
retry_cap = "1s"
[rotation.schedule]
before_expiry = "{before_expiry}"
"#
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn saga_at(env: &TestEnv, saga_id: &str, step: Step, timeout: Duration) {
    let store = keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas");
    let start = Instant::now();
    loop {
        let s = store.load(saga_id).await.unwrap().unwrap().saga;
        if s.step == step {
            return;
        }
        assert!(!s.status.is_terminal() && start.elapsed() < timeout, "saga {saga_id} did not reach {step}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One SCIM token rotation by a person with the CLI: it succeeds only if
/// keyturn can sign in to Graph with the client secret it reads now.
async fn scim_round(env: &TestEnv, cfg: &std::path::Path, out_all: &mut String) {
    let side = env.scim.as_ref().unwrap();
    let token = format!("scim-{}", uuid::Uuid::new_v4().simple());
    side.graph.state.lock().unwrap().valid_scim_token = token.clone();
    let (code, out, err) = cli(env, cfg, &["rotate", "entra-scim"], None);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.split_whitespace().skip_while(|w| *w != "saga").nth(1).unwrap().to_string();
    saga_at(env, &id, Step::AwaitNew, Duration::from_secs(60)).await;
    let (code, out, err) = cli(env, cfg, &["provide", &id], Some(&format!("{token}\n")));
    assert_eq!(code, 0, "{out}{err}");
    out_all.push_str(&out);
    saga_at(env, &id, Step::AwaitRetire, Duration::from_secs(60)).await;
    let (code, out, err) = cli(env, cfg, &["confirm", &id, "--wait", "--timeout", "60s"], None);
    assert_eq!(code, 0, "{out}{err}");
    out_all.push_str(&out);
    assert_eq!(env.wait_terminal(&id, Duration::from_secs(30)).await.status, Status::Succeeded);
    assert_eq!(side.graph.saved_token().as_deref(), Some(token.as_str()), "Entra saved the token: keyturn signed in to Graph");
}

/// The real worker, logging JSON into `log`.
fn spawn_worker(env: &TestEnv, cfg: &std::path::Path, log: &std::path::Path) -> Guard {
    let log = std::fs::File::create(log).unwrap();
    Guard::spawn(
        Command::new(keyturn_bin())
            .args(["worker", "--config"])
            .arg(cfg)
            .args(["--log-format", "json"])
            .envs(env.cli_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap()
}

async fn secret_json(env: &TestEnv) -> Value {
    let out = env.clients.secrets.get_secret_value().secret_id("keyturn/entra").send().await.unwrap();
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_secret_is_rotated_while_scim_rotations_keep_working() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let side = env.scim.as_ref().unwrap();
    let graph = side.graph.server.uri();
    {
        let mut st = side.graph.state.lock().unwrap();
        // Tokens renewed every few seconds: every SCIM round signs in anew.
        st.token_lifetime = Some(3);
        st.replication_delay = Some(Duration::from_secs(3));
        st.rng = Some(fastrand::Rng::with_seed(24));
    }
    let first_end = side.graph.state.lock().unwrap().passwords[0].end.clone();
    let dir = std::env::temp_dir().join(format!("keyturn-entra-secret-{}", uuid::Uuid::new_v4()));
    // `plan` with 30 days: when it starts.
    let planned = write(&dir, "plan.toml", &format!("{}{}", env.config_text, own_rotation(&graph, "30d", "30s")));
    // The worker with 400 days: the password (a year left) is due now,
    // so the worker's own scan starts the rotation.
    let cfg = write(&dir, "keyturn.toml", &format!("{}{}", env.config_text, own_rotation(&graph, "400d", "30s")));

    let (code, out, err) = cli(&env, &planned, &["check-config"], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, plan, err) = cli(&env, &planned, &["plan", "--scan"], None);
    assert_eq!(code, 0, "{plan}{err}");
    let end_ms = aws_smithy_types::DateTime::from_str(&first_end, aws_smithy_types::date_time::Format::DateTime).unwrap().to_millis().unwrap() as u64;
    let expect = format!(
        "entra-own: starts {} (30.0d before the credential in use expires {})",
        keyturn::clock::fmt_date(end_ms - 30 * 86_400_000),
        keyturn::clock::fmt_date(end_ms)
    );
    assert!(plan.contains(&expect), "{expect:?} not in:\n{plan}");
    let mut cli_out = plan.clone();

    // Before: a SCIM rotation with the secret in place, by a worker for
    // which entra-own is not due (30 days before a year-long password).
    let mut worker = spawn_worker(&env, &planned, &dir.join("worker-before.log"));
    scim_round(&env, &planned, &mut cli_out).await;
    worker.terminate().unwrap();
    worker.wait().unwrap();
    assert!(env.sagas().await.iter().all(|s| s.rotation_id != "entra-own"), "not due at 30 days");

    // The worker with 400 days: the scan starts entra-own at once.
    let log_path = dir.join("worker.log");
    let mut worker = spawn_worker(&env, &cfg, &log_path);

    // The scan started it: one saga of entra-own, triggered by the expiry.
    let start = Instant::now();
    let own = loop {
        if let Some(s) = env.sagas().await.into_iter().find(|s| s.rotation_id == "entra-own") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the expiry scan started no rotation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(own.trigger.starts_with("schedule:before_expiry 400.0d"), "{}", own.trigger);

    // During: the switch made, both passwords valid (the grace period).
    saga_at(&env, &own.saga_id, Step::RetireOld, Duration::from_secs(90)).await;
    let switched = side.graph.state.lock().unwrap().granted_secrets.len();
    assert_eq!(side.graph.password_ids().len(), 2, "old and new password during the grace period");
    let stored = secret_json(&env).await;
    let new_id = stored["client_secret_key_id"].as_str().unwrap().to_string();
    let new_secret = stored["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, side.client_secret, "the secret keyturn reads is the new one before the old is removed");
    scim_round(&env, &cfg, &mut cli_out).await;
    assert!(side.graph.password_ids().contains(&FIRST_KEY_ID.to_string()), "the round ran within the grace period (raise it if the machine is slow)");
    // From the switch on, keyturn signs in with the new secret only (it
    // dropped its cached copy when it wrote the secret), the old one still valid.
    let since: Vec<String> = side.graph.state.lock().unwrap().granted_secrets[switched..].to_vec();
    assert!(!since.is_empty(), "keyturn signed in to Graph during the grace period");
    assert!(
        since.iter().all(|s| *s == new_secret),
        "{} of {} sign-ins after the switch used the old secret",
        since.iter().filter(|s| **s != new_secret).count(),
        since.len()
    );

    // The end: the old password is gone, the new one is the only one.
    let saga = env.wait_terminal(&own.saga_id, Duration::from_secs(90)).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(side.graph.password_ids(), vec![new_id.clone()], "the old password ({FIRST_KEY_ID}) is removed");
    assert_eq!(side.graph.state.lock().unwrap().issued_secrets, vec![new_secret.clone()], "one password added");

    // After: the same worker (its caches held the old secret) signs in with the new one.
    scim_round(&env, &cfg, &mut cli_out).await;
    let (code, out, _) = cli(&env, &cfg, &["status", &own.saga_id, "--json"], None);
    assert_eq!(code, 0);
    cli_out.push_str(&out);
    worker.terminate().unwrap();
    worker.wait().unwrap();

    // No moment without a working secret: the removed password was never
    // offered to the token endpoint (keyturn re-read the secret after writing it).
    let refused = side.graph.state.lock().unwrap().refused_secrets.clone();
    assert!(!refused.contains(&side.client_secret), "keyturn signed in with the removed secret: {} refusals", refused.len());

    // No secret, old or new, anywhere keyturn writes.
    let logs = std::fs::read_to_string(&log_path).unwrap() + &std::fs::read_to_string(dir.join("worker-before.log")).unwrap();
    let table = env.table_dump().await;
    let notes: String = env.notifications(0, Duration::from_secs(2)).await.into_iter().map(|n| n.raw).collect::<Vec<_>>().join("\n");
    for (name, text) in [("worker logs", &logs), ("DynamoDB", &table), ("notifications", &notes), ("CLI output", &cli_out)] {
        assert!(!text.is_empty(), "{name} scanned is empty");
        for secret in [&side.client_secret, &new_secret] {
            assert!(!text.contains(secret.as_str()), "a client secret leaked into {name}");
        }
    }
    assert!(logs.contains("entra-own"), "the worker's log covers the rotation");
}

/// `check-config` refuses an `env` client secret (keyturn cannot write it)
/// and a target other than the secret and field keyturn reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_an_env_secret_and_a_target_elsewhere() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let graph = env.scim.as_ref().unwrap().graph.server.uri();
    let text = own_rotation(&graph, "30d", "1h")
        .replace(r#"{ secrets_manager = "keyturn/entra", json_key = "client_secret" }"#, r#"{ env = "KEYTURN_ENTRA_SECRET" }"#);
    let dir = std::env::temp_dir().join(format!("keyturn-entra-secret-{}", uuid::Uuid::new_v4()));
    let cfg = write(&dir, "keyturn.toml", &format!("{}{}", env.config_text, text));
    let (code, out, err) = cli(&env, &cfg, &["check-config"], None);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("source.client_secret") && err.contains("cannot write an environment variable"), "{err}");
    for (from, to) in [
        ("secret_id = \"keyturn/entra\"", "secret_id = \"elsewhere\""),
        ("secret_access_key_field = \"client_secret\"", "secret_access_key_field = \"secret\""),
    ] {
        let text = own_rotation(&graph, "30d", "1h").replace(from, to);
        let cfg = write(&dir, "keyturn.toml", &format!("{}{}", env.config_text, text));
        let (code, out, err) = cli(&env, &cfg, &["check-config"], None);
        assert_ne!(code, 0, "{out}");
        assert!(
            err.contains("rotation \"entra-own\": target: keyturn reads this credential from secret \"keyturn/entra\", field \"client_secret\""),
            "{to}: {err}"
        );
    }
}

/// The scan asks a source when its credential expires at most once a day
/// (by the engine's clock), and again once the answer makes it due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_is_asked_at_most_daily() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let side = env.scim.as_ref().unwrap();
    let cfg = env.config_with(&own_rotation(&side.graph.server.uri(), "30d", "1h"), true);
    let clock = keyturn::clock::ManualClock::starting_now();
    let engine = keyturn::app::engine_on(&cfg, &env.clients, "w1".into(), keyturn::app::sqs_queue(&cfg, &env.clients), clock.clone());
    let reads = || side.graph.state.lock().unwrap().calls.iter().filter(|(m, p, _)| m == "GET" && p.ends_with(APP)).count();
    let plan = engine.plan_scan().await.unwrap().join("\n");
    assert!(plan.contains("entra-own: starts "), "{plan}");
    engine.plan_scan().await.unwrap();
    clock.advance(Duration::from_secs(23 * 3600));
    engine.plan_scan().await.unwrap();
    assert_eq!(reads(), 1, "asked once within a day");
    clock.advance(Duration::from_secs(3600));
    engine.plan_scan().await.unwrap();
    assert_eq!(reads(), 2, "asked again after a day");
    // 340 days on, the password (a year left) is due: asked on every scan.
    clock.advance(Duration::from_secs(340 * 86_400));
    let plan = engine.plan_scan().await.unwrap().join("\n");
    assert!(plan.contains("entra-own: starts now (30.0d before the credential in use expires"), "{plan}");
    engine.plan_scan().await.unwrap();
    // Two due plans: each asks again, and its dry run lists the passwords once.
    assert_eq!(reads(), 6, "a due answer is asked again on every scan");
}

/// A crash right after `addPassword` answered (the secret never stored):
/// the next attempt removes that orphan password, then adds the one it
/// keeps; at the end the app has exactly the new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_add_password_leaves_no_orphan() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let side = env.scim.as_ref().unwrap();
    let cfg = env.config_with(&own_rotation(&side.graph.server.uri(), "30d", "0s"), true);
    let engine = std::sync::Arc::new(keyturn::app::engine(&cfg, &env.clients, "w1".into()));
    engine.faults().crash_after_issue.store(1, std::sync::atomic::Ordering::SeqCst);
    let worker = keyturn_testkit::env::RunningWorker::spawn(engine.clone(), &cfg.worker);
    let keyturn::store::Created::New(saga_id) = engine.request("entra-own", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(90)).await;
    worker.stop().await;

    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(saga.keys.issue_intents, 2, "the crashed attempt and the one after it");
    let issued = side.graph.state.lock().unwrap().issued_secrets.clone();
    assert_eq!(issued.len(), 2, "two passwords were added");
    let kept = secret_json(&env).await;
    assert_eq!(kept["client_secret"].as_str(), Some(issued[1].as_str()), "the second one is stored");
    assert_eq!(side.graph.password_ids(), vec![kept["client_secret_key_id"].as_str().unwrap().to_string()], "the orphan and the old password are gone");
}

/// Someone puts the old secret back into the secret keyturn reads (e.g.
/// restores the previous version) during the grace period: keyturn would
/// sign in with it again, so the old password is kept and the saga needs
/// attention instead of cutting keyturn off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_password_stays_while_keyturn_still_reads_it() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let side = env.scim.as_ref().unwrap();
    let cfg = env.config_with(&own_rotation(&side.graph.server.uri(), "30d", "5s"), true);
    let engine = std::sync::Arc::new(keyturn::app::engine(&cfg, &env.clients, "w1".into()));
    let worker = keyturn_testkit::env::RunningWorker::spawn(engine.clone(), &cfg.worker);
    let keyturn::store::Created::New(id) = engine.request("entra-own", "manual").await.unwrap() else { panic!() };
    saga_at(&env, &id, Step::RetireOld, Duration::from_secs(60)).await;
    let old = serde_json::json!({"client_secret": side.client_secret}).to_string();
    env.clients.secrets.put_secret_value().secret_id("keyturn/entra").secret_string(old).send().await.unwrap();
    let saga = env.wait_terminal(&id, Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(saga.status, Status::NeedsAttention, "{saga:#?}");
    assert_eq!(saga.outcome.failure.as_ref().unwrap().code, "OwnSecretNotSwitched");
    assert!(side.graph.password_ids().contains(&FIRST_KEY_ID.to_string()), "the password keyturn signs in with is kept");
}

/// `keyturn doctor` signs in with the secret keyturn reads and lists the
/// app's client secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_lists_the_client_secrets() {
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let graph = env.scim.as_ref().unwrap().graph.server.uri();
    let dir = std::env::temp_dir().join(format!("keyturn-entra-secret-{}", uuid::Uuid::new_v4()));
    let cfg = write(&dir, "keyturn.toml", &format!("{}{}", env.config_text, own_rotation(&graph, "30d", "1h")));
    let (_, out, err) = cli(&env, &cfg, &["doctor"], None);
    assert!(out.contains("got a Graph token with the secret keyturn reads"), "{out}{err}");
    assert!(out.contains("1 client secret, expires "), "{out}{err}");
}

/// The crash suite's way, for this source: the real worker is killed
/// (SIGKILL) at seeded random moments and restarted while its own client
/// secret is rotated three times. At every kill the secret keyturn reads is
/// one Entra accepts; after each rotation the app has exactly one password,
/// the one keyturn reads (no orphan of an interrupted `addPassword`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_never_leaves_keyturn_without_a_working_secret() {
    let seed: u64 = std::env::var("KEYTURN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261206);
    let mut rng = fastrand::Rng::with_seed(seed);
    let env = TestEnv::new(Options { scim: Some(("1h", "1h")), ..Options::default() }).await.unwrap();
    let side = env.scim.as_ref().unwrap();
    {
        let mut st = side.graph.state.lock().unwrap();
        st.replication_delay = Some(Duration::from_secs(2));
        st.rng = Some(fastrand::Rng::with_seed(seed));
    }
    let dir = std::env::temp_dir().join(format!("keyturn-entra-crash-{seed}-{}", uuid::Uuid::new_v4()));
    let text = format!("{}{}", env.config_text, own_rotation(&side.graph.server.uri(), "30d", "1s"));
    let cfg_path = write(&dir, "keyturn.toml", &text);
    let cfg = keyturn::config::Config::parse(&text).unwrap();
    let engine = keyturn::app::engine(&cfg, &env.clients, "test-driver".into());
    let works = |secret: &str| {
        let now = Instant::now();
        side.graph.state.lock().unwrap().passwords.iter().any(|p| p.secret == secret && p.usable_from <= now)
    };
    let (mut kills, mut started) = (0, 0);
    let mut worker = spawn_worker(&env, &cfg_path, &dir.join("worker-0.log"));
    for round in 0..3 {
        let keyturn::store::Created::New(id) = engine.request("entra-own", "crash").await.unwrap() else { panic!("round {round}: a saga in flight") };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            tokio::time::sleep(Duration::from_millis(rng.u64(300..2500))).await;
            let stored = secret_json(&env).await["client_secret"].as_str().unwrap().to_string();
            assert!(works(&stored), "round {round}: the secret keyturn reads does not work at Entra");
            let saga = keyturn::store::Store::new(env.clients.dynamodb.clone(), "keyturn-sagas").load(&id).await.unwrap().unwrap().saga;
            if saga.status.is_terminal() {
                assert_eq!(saga.status, Status::Succeeded, "round {round}: {saga:#?}");
                break;
            }
            assert!(Instant::now() < deadline, "round {round} did not end: {saga:#?}");
            drop(worker); // SIGKILL, reaped
            kills += 1;
            started += 1;
            worker = spawn_worker(&env, &cfg_path, &dir.join(format!("worker-{started}.log")));
        }
        let stored = secret_json(&env).await;
        let passwords = side.graph.state.lock().unwrap().passwords.clone();
        assert_eq!(passwords.len(), 1, "round {round}: exactly one password: {:?}", passwords.iter().map(|p| &p.key_id).collect::<Vec<_>>());
        assert_eq!(Some(passwords[0].secret.as_str()), stored["client_secret"].as_str(), "round {round}: the one keyturn reads");
        assert_eq!(Some(passwords[0].key_id.as_str()), stored["client_secret_key_id"].as_str());
    }
    drop(worker);
    let added = side.graph.state.lock().unwrap().issued_secrets.len();
    println!("entra client secret crash run (seed {seed}): 3 rotations, {kills} kills, {added} passwords added");
    assert!(kills >= 3, "the workers were killed mid-rotation ({kills} kills)");
}
