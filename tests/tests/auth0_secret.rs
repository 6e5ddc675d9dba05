//! The `auth0_client_secret` source through the `keyturn worker` binary, on
//! moto and the fake Auth0: keyturn rotates its own Auth0 client secret
//! (rotate-secret kills the old one at once; the new one works after a
//! seeded activation delay) into the Secrets Manager secret it reads it
//! from, while the ordinary email-provider rotation of the same tenant keeps
//! working; and workers SIGKILLed at every step, including between
//! rotate-secret and the commit of its answer, never lose the only secret.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyturn::clock::Clock;
use keyturn::saga::{Saga, Status, Step};
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::{ALL_SCOPES, CLIENT_ID, CLIENT_KEYS_SCOPE};
use keyturn_testkit::env::{keyturn_bin, Options, TestEnv};
use keyturn_testkit::process::WorkerProcesses as Worker;
use serde_json::Value;

type Engine = keyturn::engine::Engine<keyturn::queue::SqsQueue>;

/// The rotation of keyturn's own client secret into `keyturn/auth0`.
fn secret_rotation(auth0_uri: &str) -> String {
    format!(
        r#"
[[rotation]]
id = "auth0-secret"

[rotation.source]
kind = "auth0_client_secret"
domain = "example.eu.auth0.com"
base_url = "{auth0_uri}"
client_id = "{CLIENT_ID}"
management_client_secret = {{ secrets_manager = "keyturn/auth0", json_key = "client_secret" }}

[rotation.target]
kind = "secrets_manager_secret"
secret_id = "keyturn/auth0"
access_key_id_field = "client_secret_id"
secret_access_key_field = "client_secret"

[rotation.policy]
propagation_timeout = "40s"
max_attempts = 12
retry_base = "200ms"
retry_cap = "2s"
"#
    )
}

/// The environment, its configuration with the secret rotation added
/// (written to a file for the worker), and an engine to ask and watch with.
async fn setup(name: &str, endpoint: Option<String>) -> (TestEnv, keyturn::config::Config, Worker, Engine) {
    setup_with(name, endpoint, "").await
}

/// [`setup`], with `extra` appended to the secret rotation's tables.
async fn setup_with(name: &str, endpoint: Option<String>, extra: &str) -> (TestEnv, keyturn::config::Config, Worker, Engine) {
    let env = TestEnv::new(Options::default()).await.unwrap();
    env.auth0.set_granted_scopes(&format!("{ALL_SCOPES} {CLIENT_KEYS_SCOPE}"));
    let text = format!("{}\n{}{extra}", env.config_text, secret_rotation(&env.auth0.uri()));
    let cfg = keyturn::config::Config::parse(&text).unwrap();
    let dir = std::env::temp_dir().join(format!("keyturn-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("keyturn.toml");
    std::fs::write(&config, &text).unwrap();
    let mut worker_env = env.cli_env();
    if let Some(e) = endpoint {
        worker_env.iter_mut().filter(|(k, _)| *k == "AWS_ENDPOINT_URL").for_each(|(_, v)| *v = e.clone());
    }
    let engine = keyturn::app::engine(&cfg, &env.clients, "test-driver".into());
    (env, cfg, Worker::new(config, worker_env, dir), engine)
}

async fn request(engine: &Engine, id: &str) -> String {
    match engine.request(id, "manual").await.unwrap() {
        Created::New(s) => s,
        other => panic!("expected a new saga, got {other:?}"),
    }
}

async fn wait_end(engine: &Engine, id: &str, timeout: Duration) -> Saga {
    let end = Instant::now() + timeout;
    loop {
        let s = engine.store().load(id).await.unwrap().unwrap().saga;
        if s.status.is_terminal() || Instant::now() > end {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `keyturn/auth0` as it is now (AWSCURRENT).
async fn stored(env: &TestEnv) -> Value {
    let out = env.clients.secrets.get_secret_value().secret_id("keyturn/auth0").send().await.unwrap();
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

/// Auth0 accepts the secret keyturn reads (once its activation delay passed).
async fn works(env: &TestEnv) -> bool {
    let secret = stored(env).await["client_secret"].as_str().unwrap().to_string();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if env.auth0.accepts_secret(&secret) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyturns_own_secret_rotates_while_the_tenants_email_rotation_keeps_working() {
    let (env, _cfg, mut worker, engine) = setup("auth0-secret", None).await;
    env.auth0.set_activation(7, Duration::from_secs(3));
    let old_secret = env.auth0_client_secret.clone();
    let _w = worker.spawn();

    // Before: an ordinary rotation of the tenant's email provider.
    let before = request(&engine, "auth0-ses").await;
    assert_eq!(wait_end(&engine, &before, Duration::from_secs(60)).await.status, Status::Succeeded);

    // The client secret; during it (the old secret dead, the new one not
    // stored yet) the email rotation runs on its cached Management API token.
    let rotation = request(&engine, "auth0-secret").await;
    let end = Instant::now() + Duration::from_secs(30);
    while env.auth0.rotated().is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!env.auth0.rotated().is_empty(), "rotate-secret was called");
    assert!(!env.auth0.accepts_secret(&old_secret), "the old secret died at the call");
    let during = request(&engine, "auth0-ses").await;
    let saga = wait_end(&engine, &rotation, Duration::from_secs(60)).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(wait_end(&engine, &during, Duration::from_secs(60)).await.status, Status::Succeeded);
    assert!(!saga.outcome.history.iter().any(|a| matches!(a.step, Step::RevokeNew | Step::DisableOld | Step::RetireOld)), "{:#?}", saga.outcome.history);

    // keyturn reads the new secret, Auth0 accepts it, the old one is refused.
    let now = stored(&env).await;
    let new_secret = now["client_secret"].as_str().unwrap().to_string();
    assert_eq!(Some(new_secret.clone()), env.auth0.rotated().last().cloned());
    assert_eq!(now["client_secret_id"].as_str(), saga.keys.new_key.as_deref());
    assert!(works(&env).await, "Auth0 accepts the secret keyturn reads");
    assert!(!env.auth0.accepts_secret(&old_secret));

    // After: new Management API tokens are needed (the old ones expired);
    // the worker reads the new secret from Secrets Manager to get them.
    env.auth0.expire_tokens();
    let tokens = env.auth0.tokens_issued().len();
    let after = request(&engine, "auth0-ses").await;
    let s = wait_end(&engine, &after, Duration::from_secs(60)).await;
    assert_eq!(s.status, Status::Succeeded, "{s:#?}");
    assert!(env.auth0.tokens_issued().len() > tokens, "a new token, with the new secret");

    // The secrets never leave their places.
    let notices = env.notifications(4, Duration::from_secs(20)).await;
    let raw: String = notices.iter().map(|n| n.raw.clone()).collect();
    for (name, text) in [("worker logs", worker.logs()), ("table", env.table_dump().await), ("notifications", raw)] {
        assert!(!text.contains(&new_secret), "the new secret leaked into the {name}");
        assert!(!text.contains(&old_secret), "the old secret leaked into the {name}");
        // Nor the Management API tokens (the sealed grant among them).
        for t in env.auth0.tokens_issued() {
            assert!(!text.contains(&t), "a Management API token leaked into the {name}");
        }
    }
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Start,
    /// At issue_new before rotate-secret answered (the grant sealed or not).
    Issue,
    /// rotate-secret applied, its answer held back: the commit never comes.
    AnswerLost,
    Prove,
    Push,
    Verify,
    Finalize,
}

const POINTS: [Point; 7] = [Point::Start, Point::Issue, Point::AnswerLost, Point::Prove, Point::Push, Point::Verify, Point::Finalize];

/// The crash suite's way, on this one saga: a `keyturn worker` SIGKILLed at
/// each point of the rotation in turn (at a seeded random moment once the
/// point is reached), restarted after a seeded pause. After every rotation
/// the secret keyturn reads works at Auth0, nothing sealed is left, and
/// the saga succeeded. `KEYTURN_CRASH_SEED` reproduces a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_every_step_never_loses_the_only_secret() {
    let seed: u64 = std::env::var("KEYTURN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261206);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (env, _cfg, mut worker, engine) = setup("auth0-secret-crash", None).await;
    // The worker reaches moto through a proxy that adds latency, so kills
    // land between side effects and the writes that record them.
    let proxy = keyturn_testkit::tcp_proxy::TcpProxy::start(format!("127.0.0.1:{}", env.moto.port), Duration::from_millis(40)).await.unwrap();
    worker.env.iter_mut().filter(|(k, _)| *k == "AWS_ENDPOINT_URL").for_each(|(_, v)| *v = proxy.endpoint.clone());
    env.auth0.set_activation(seed, Duration::from_secs(3));
    let mut proc = worker.spawn();
    let mut landed: Vec<(Point, Step, bool)> = Vec::new();
    let mut violations = Vec::new();
    for (round, point) in POINTS.iter().copied().enumerate() {
        let before = env.auth0.rotated().len();
        if point == Point::AnswerLost {
            env.auth0.delay_rotate_answer(Duration::from_secs(2));
        }
        let id = request(&engine, "auth0-secret").await;
        let reached = Instant::now() + Duration::from_secs(60);
        loop {
            let s = engine.store().load(&id).await.unwrap().unwrap().saga;
            let called = env.auth0.rotated().len() > before;
            let at = match point {
                Point::Start => s.step == Step::Start,
                Point::Issue => s.step == Step::IssueNew && !called,
                Point::AnswerLost => called,
                Point::Prove => s.step == Step::ProveNew,
                Point::Push => s.step == Step::PushToTarget,
                Point::Verify => s.step == Step::VerifyTarget,
                Point::Finalize => s.step == Step::Finalize,
            };
            if at {
                if point != Point::AnswerLost {
                    tokio::time::sleep(Duration::from_millis(rng.u64(0..60))).await;
                }
                proc.kill().unwrap();
                let s = engine.store().load(&id).await.unwrap().unwrap().saga;
                // Between rotate-secret and its commit: a secret issued that the saga never recorded.
                let lost = env.auth0.rotated().len() > before && s.keys.new_key.is_none();
                landed.push((point, s.step, lost));
                env.auth0.delay_rotate_answer(Duration::ZERO);
                tokio::time::sleep(Duration::from_millis(rng.u64(0..800))).await;
                proc = worker.spawn();
                break;
            }
            if s.status.is_terminal() || Instant::now() > reached {
                violations.push(format!("round {round}: {point:?} never reached (saga at {} {})", s.step, s.status.as_str()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = wait_end(&engine, &id, Duration::from_secs(90)).await;
        if s.status != Status::Succeeded {
            violations.push(format!("round {round} ({point:?}): ended {} at {}: {:?}", s.status.as_str(), s.step, s.outcome.failure));
        }
        if !works(&env).await {
            violations.push(format!("round {round} ({point:?}): the secret keyturn reads does not work at Auth0"));
        }
        if stored(&env).await["client_secret_id"].as_str() != s.keys.new_key.as_deref() {
            violations.push(format!("round {round} ({point:?}): the stored secret is not the saga's"));
        }
        let raw = engine.store().raw_items().await.unwrap();
        let pk = format!("saga#{id}");
        if raw.iter().any(|item| item.get("pk").and_then(|v| v.as_s().ok()) == Some(&pk) && (item.contains_key("secret") || item.contains_key("grant"))) {
            violations.push(format!("round {round}: sealed secret or grant not erased"));
        }
        if raw.iter().any(|item| item.get("pk").and_then(|v| v.as_s().ok()).is_some_and(|p| p.starts_with("lock#"))) {
            violations.push(format!("round {round}: lock not released"));
        }
    }
    println!("auth0 secret crash: seed={seed} rotations={} kills={} landed={landed:?} violations={}", POINTS.len(), landed.len(), violations.len());
    for v in &violations {
        println!("  violation: {v}");
    }
    assert!(violations.is_empty(), "seed {seed}: {violations:#?} (worker logs in {})", worker.dir.display());
    assert!(landed.iter().any(|(p, _, lost)| *p == Point::AnswerLost && *lost), "a kill landed between rotate-secret and its commit: {landed:?}");
    assert!(env.auth0.rotated().len() > POINTS.len(), "the lost answer's secret was superseded by a second call: {}", env.auth0.rotated().len());
}

/// The answer to rotate-secret is lost (the worker SIGKILLed while it is
/// held back) and the sealed Management API token no longer works (Auth0
/// answers 401 `token_expired`): the old secret is dead, so keyturn cannot
/// rotate again. The saga stops as needing attention, and the notice says
/// what a person does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_with_an_expired_sealed_token_stops_with_the_persons_steps() {
    let (env, _cfg, mut worker, engine) = setup("auth0-secret-lost", None).await;
    env.auth0.delay_rotate_answer(Duration::from_secs(3));
    let old_secret = env.auth0_client_secret.clone();
    let mut proc = worker.spawn();
    let id = request(&engine, "auth0-secret").await;
    let end = Instant::now() + Duration::from_secs(30);
    while env.auth0.rotated().is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(env.auth0.rotated().len(), 1, "rotate-secret was called");
    proc.kill().unwrap();
    env.auth0.delay_rotate_answer(Duration::ZERO);
    env.auth0.expire_tokens();
    let _proc = worker.spawn();
    let s = wait_end(&engine, &id, Duration::from_secs(60)).await;
    assert_eq!(s.status, Status::NeedsAttention, "{s:#?}");
    let f = s.outcome.failure.clone().unwrap();
    assert_eq!((f.step, f.code.as_str()), (Step::IssueNew, "OldCredentialGone"), "{f:?}");
    assert_eq!(env.auth0.rotated().len(), 1, "no second rotation without a token");
    assert!(!env.auth0.accepts_secret(&old_secret));
    let n = env.notifications(1, Duration::from_secs(20)).await;
    let doc = &n[0].document;
    let message = doc["failure"]["message"].as_str().unwrap();
    assert!(
        message.contains("Danger Zone → Rotate") && message.contains("keyturn/auth0 (field client_secret)"),
        "the notice names the person's steps: {doc}"
    );
    assert!(doc["recommended_action"].as_str().unwrap().contains("Follow the steps in the failure message"), "{doc}");
    assert!(!n[0].raw.contains(&old_secret) && !n[0].raw.contains(&env.auth0.rotated()[0]));
}

/// Without `update:client_keys` Auth0 refuses rotate-secret (403
/// `insufficient_scope`): nothing changed, the saga is compensated, and the
/// secret keyturn holds still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_scope_nothing_changes() {
    let (env, cfg, _worker, _engine) = setup("auth0-secret-scope", None).await;
    env.auth0.set_granted_scopes(ALL_SCOPES);
    let s = env.rotate_with(&cfg, "auth0-secret").await;
    assert_eq!(s.status, Status::Compensated, "{s:#?}");
    assert_eq!(s.outcome.failure.as_ref().map(|f| f.code.as_str()), Some("insufficient_scope"), "{s:#?}");
    assert!(env.auth0.rotated().is_empty());
    assert!(env.auth0.accepts_secret(&env.auth0_client_secret), "the old secret still works");
    assert_eq!(stored(&env).await["client_secret"].as_str(), Some(env.auth0_client_secret.as_str()));
}

/// `keyturn doctor --json` on the configuration: the source's checks of the
/// rotation `auth0-secret`.
fn doctor_checks(worker: &Worker) -> Vec<Value> {
    let out = Command::new(keyturn_bin())
        .args(["doctor", "--json", "--config"])
        .arg(&worker.config)
        .envs(worker.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let rot = report["rotations"].as_array().unwrap().iter().find(|r| r["rotation_id"] == "auth0-secret").unwrap().clone();
    rot["checks"].as_array().unwrap().clone()
}

/// `keyturn doctor` gets a Management API token with the configured secret
/// and says whether it carries `update:client_keys` (and how to grant it);
/// it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_token_and_the_scope() {
    let (env, _cfg, worker, _engine) = setup("auth0-secret-doctor", None).await;
    let find = |checks: &[Value], name: &str| checks.iter().find(|c| c["check"] == name).cloned().unwrap_or_else(|| panic!("no {name}: {checks:#?}"));
    let checks = doctor_checks(&worker);
    assert_eq!(find(&checks, "Auth0 token")["status"], "ok", "{checks:#?}");
    assert_eq!(find(&checks, "Auth0 scopes")["status"], "ok", "{checks:#?}");
    env.auth0.set_granted_scopes(ALL_SCOPES);
    let checks = doctor_checks(&worker);
    let scopes = find(&checks, "Auth0 scopes");
    assert_eq!(scopes["status"], "fail", "{checks:#?}");
    assert!(scopes.to_string().contains("grant update:client_keys"), "{scopes}");
    assert!(env.auth0.rotated().is_empty(), "doctor rotates nothing");
    assert!(env.auth0.accepts_secret(&env.auth0_client_secret));
}

/// Auth0 shows no age for a client secret, so a `[rotation.schedule]
/// max_age` counts from keyturn's last successful rotation of it: before
/// the first one `plan` says so and the scan starts nothing; after it,
/// `plan` says how long ago, and the scan starts the rotation once max_age
/// has passed since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_counts_from_keyturns_last_rotation_of_the_secret() {
    let (env, _cfg, mut worker, engine) = setup_with("auth0-secret-age", None, "\n[rotation.schedule]\nmax_age = \"90d\"\n").await;
    let now = keyturn::clock::SystemClock.now_ms();
    let plan = engine.plan_scan().await.unwrap().join("\n");
    assert!(plan.contains("auth0-secret: the source tells no age and keyturn has not rotated it yet"), "{plan}");
    let far = now + 200 * 86_400_000;
    let never = engine.scan_keys(far).await.unwrap().into_iter().find(|i| i.rotation_id == "auth0-secret").unwrap();
    assert!(!never.due, "never rotated by keyturn: no max_age start, however late");

    let _w = worker.spawn();
    let id = request(&engine, "auth0-secret").await;
    assert_eq!(wait_end(&engine, &id, Duration::from_secs(120)).await.status, Status::Succeeded);
    let plan = engine.plan_scan().await.unwrap().join("\n");
    assert!(plan.contains("auth0-secret: last rotated by keyturn 0.0d ago (the source tells no age); max_age 90.0d: nothing to do"), "{plan}");
    let due_at = |items: Vec<keyturn::triggers::ScanItem>| items.into_iter().find(|i| i.rotation_id == "auth0-secret").unwrap().due;
    assert!(!due_at(engine.scan_keys(now + 89 * 86_400_000).await.unwrap()));
    assert!(due_at(engine.scan_keys(now + 91 * 86_400_000).await.unwrap()), "90 days after keyturn's rotation it is due");
    assert!(works(&env).await);
}
