//! The priority lane, black-box: an exposed key is replaced and made
//! inactive within seconds while a backlog of ordinary rotations drains.
//!
//! The `keyturn worker` binary (concurrency 4) runs against moto and a
//! multi-tenant fake Auth0 (`bench/fake_auth0.py`, every answer delayed as
//! over the internet). 200 ordinary rotations are requested at once; once
//! the worker is draining them, the AWS Health `AWS_RISK_CREDENTIALS_EXPOSED`
//! event for another configured user reaches the intake queue. The tests
//! print the time from the event reaching the intake queue to the exposed
//! key being inactive, check that it came before the backlog (not after
//! it), that the new key is live in that user's Auth0 tenant, and that
//! every backlog rotation still succeeds. The second test SIGKILLs the
//! worker the moment the emergency saga exists and starts it again.
//!
//! Without the lane the emergency's first step queued behind the backlog:
//! 26–28 s with 60 rotations waiting, growing with the backlog.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_iam::types::StatusType;
use keyturn::saga::Status;
use keyturn_testkit::env::{keyturn_bin, queue_with_dlq, sdk_config, REGION};
use keyturn_testkit::moto::Moto;
use keyturn_testkit::process::Guard;

/// Ordinary rotations waiting when the exposure arrives. 200 by default;
/// `KEYTURN_PRIORITY_BACKLOG=N` measures another backlog (0 for an idle worker).
static BACKLOG: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| std::env::var("KEYTURN_PRIORITY_BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(200));
const EXPOSED_USER: &str = "exposed-sender";
/// Every answer of the fake Auth0 waits this long.
const AUTH0_LATENCY_MS: u64 = 100;
/// The target is 2 s; this bound only catches a lane that does not work
/// (the emergency then waits behind the backlog, tens of seconds).
const BOUND: Duration = Duration::from_secs(10);

/// The two tests each drain 200 rotations through moto: one at a time, so
/// neither measures the other's load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    _moto: Moto,
    _auth0: Guard,
    auth0: String,
    client_secret: String,
    iam: aws_sdk_iam::Client,
    sqs: aws_sdk_sqs::Client,
    store: keyturn::store::Store,
    cfg: keyturn::config::Config,
    cfg_path: PathBuf,
    dir: PathBuf,
    intake_url: String,
    exposed_key: String,
    env: Vec<(&'static str, String)>,
}

fn wait_for_file(p: &Path, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if !s.trim().is_empty() {
                return s;
            }
        }
        assert!(Instant::now() < end, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn setup(name: &str) -> Setup {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("priority-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let moto = Moto::start(&[]).await.unwrap();
    let sdk = sdk_config(&moto.endpoint, Credentials::new("testing", "testing", None, None, "priority")).await;
    let (iam, sqs, ddb) = (aws_sdk_iam::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk), aws_sdk_dynamodb::Client::new(&sdk));
    let (sns, kms, sm) = (aws_sdk_sns::Client::new(&sdk), aws_sdk_kms::Client::new(&sdk), aws_sdk_secretsmanager::Client::new(&sdk));

    let (queue, dlq) = queue_with_dlq(&sqs, "keyturn-steps").await.unwrap();
    let (priority, pdlq) = queue_with_dlq(&sqs, "keyturn-steps-priority").await.unwrap();
    let (intake, idlq) = queue_with_dlq(&sqs, "keyturn-intake").await.unwrap();
    keyturn::store::create_table(&ddb, "keyturn-sagas").await.unwrap();
    let topic = sns.create_topic().name("keyturn").send().await.unwrap().topic_arn.unwrap();
    let key = kms.create_key().send().await.unwrap().key_metadata.unwrap().key_id;
    kms.create_alias().alias_name("alias/keyturn").target_key_id(key).send().await.unwrap();
    let client_secret = format!("priority-secret-{}", uuid::Uuid::new_v4().simple());
    sm.create_secret().name("keyturn/auth0").secret_string(serde_json::json!({ "client_secret": client_secret }).to_string()).send().await.unwrap();
    let mut users: Vec<String> = (0..*BACKLOG).map(|i| format!("backlog-{i}")).collect();
    users.push(EXPOSED_USER.into());
    let mut exposed_key = String::new();
    for u in &users {
        iam.create_user().user_name(u).send().await.unwrap();
        let k = iam.create_access_key().user_name(u).send().await.unwrap();
        exposed_key = k.access_key.unwrap().access_key_id;
    }

    let port_file = dir.join("auth0.port");
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/fake_auth0.py");
    let auth0_proc = Guard::spawn(
        Command::new("python3")
            .arg(fake)
            .arg("--port-file")
            .arg(&port_file)
            .args(["--client-secret", &client_secret, "--latency-ms", &AUTH0_LATENCY_MS.to_string()])
            .stdin(Stdio::null()),
    )
    .unwrap();
    let auth0 = format!("http://127.0.0.1:{}", wait_for_file(&port_file, Duration::from_secs(20)).trim());

    let mut config = format!(
        r#"[aws]
region = "{REGION}"
queue_url = "{queue}"
dlq_url = "{dlq}"
priority_queue_url = "{priority}"
priority_dlq_url = "{pdlq}"
intake_queue_url = "{intake}"
intake_dlq_url = "{idlq}"
table = "keyturn-sagas"
topic_arn = "{topic}"
kms_key_id = "alias/keyturn"

[worker]
concurrency = 4
wait_time = "1s"
visibility_timeout = "10s"
lease = "3s"
sweep_interval = "1s"
sweep_after = "3s"
shutdown_grace = "5s"
"#
    );
    for (i, u) in users.iter().enumerate() {
        let id = if u == EXPOSED_USER { "exposed".to_string() } else { format!("backlog-{i}") };
        config.push_str(&format!(
            r#"
[[rotation]]
id = "{id}"
source = {{ kind = "iam_access_key", user_name = "{u}" }}
target = {{ kind = "auth0_email_provider", domain = "{id}.example.com", base_url = "{auth0}/{id}", client_id = "bench-client", client_secret = {{ secrets_manager = "keyturn/auth0", json_key = "client_secret" }}, ses_region = "eu-west-1", from_address = "no-reply@example.com" }}
policy = {{ grace_period = "0s" }}
"#
        ));
    }
    let cfg_path = dir.join("keyturn.toml");
    std::fs::write(&cfg_path, &config).unwrap();
    let cfg = keyturn::config::Config::parse(&config).unwrap();
    let env = vec![
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    Setup {
        _moto: moto,
        _auth0: auth0_proc,
        auth0,
        client_secret,
        iam,
        sqs,
        store: keyturn::store::Store::new(ddb, "keyturn-sagas"),
        cfg,
        cfg_path,
        dir,
        intake_url: intake,
        exposed_key,
        env,
    }
}

impl Setup {
    fn worker(&self, n: usize) -> Guard {
        let log = std::fs::File::create(self.dir.join(format!("worker-{n}.log"))).unwrap();
        Guard::spawn(
            Command::new(keyturn_bin())
                .args(["worker", "--config"])
                .arg(&self.cfg_path)
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .unwrap()
    }

    /// Notices published so far, over every worker log of this run.
    fn finished(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().matches("notification published").count())
            .sum()
    }

    /// The 200 ordinary rotations, asked for at once (as `keyturn rotate` asks).
    async fn request_backlog(&self) {
        let clients = keyturn::aws::Clients::new(sdk_config(&self.env[0].1, Credentials::new("testing", "testing", None, None, "rq")).await);
        let engine = std::sync::Arc::new(keyturn::app::engine(&self.cfg, &clients, "requester".into()));
        for chunk in (0..*BACKLOG).collect::<Vec<_>>().chunks(16) {
            let mut asks = tokio::task::JoinSet::new();
            for i in chunk {
                let (e, id) = (engine.clone(), format!("backlog-{i}"));
                // moto answers some concurrent transactions with HTTP 500:
                // asked again, as an operator would.
                asks.spawn(async move {
                    let mut tries = 0;
                    loop {
                        match e.request(&id, "manual").await {
                            Err(err) if err.is_retryable() && tries < 20 => {
                                tries += 1;
                                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                            }
                            r => return r,
                        }
                    }
                });
            }
            while let Some(r) = asks.join_next().await {
                assert!(matches!(r.unwrap().unwrap(), keyturn::store::Created::New(_)));
            }
        }
    }

    async fn send_exposure(&self) {
        let event = include_str!("../fixtures/health-key-exposed.json").replace("AKIAEXPOSEDKEY000001", &self.exposed_key);
        self.sqs.send_message().queue_url(&self.intake_url).message_body(event).send().await.unwrap();
    }

    async fn exposed_key_active(&self) -> bool {
        let out = self.iam.list_access_keys().user_name(EXPOSED_USER).send().await.unwrap();
        out.access_key_metadata().iter().any(|k| k.access_key_id() == Some(self.exposed_key.as_str()) && k.status() == Some(&StatusType::Active))
    }

    /// The access key id the `exposed` tenant of the fake Auth0 holds.
    async fn held_by_target(&self) -> String {
        let http = reqwest::Client::new();
        let tok: serde_json::Value = http
            .post(format!("{}/exposed/oauth/token", self.auth0))
            .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": "bench-client", "client_secret": self.client_secret, "audience": "https://exposed.example.com/api/v2/"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let p: serde_json::Value = http
            .get(format!("{}/exposed/api/v2/emails/provider", self.auth0))
            .bearer_auth(tok["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        p["credentials"]["accessKeyId"].as_str().unwrap_or_default().to_string()
    }

    /// Until the worker is busy draining: a few backlog rotations finished.
    async fn wait_draining(&self) {
        let end = Instant::now() + Duration::from_secs(120);
        while self.finished() < 4.min(*BACKLOG) {
            assert!(Instant::now() < end, "the worker did not start on the backlog; see {}", self.dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every saga ended: all succeeded, the emergency's new key is live in
    /// its tenant and the exposed key is gone.
    async fn check_all_succeeded(&self) {
        let end = Instant::now() + Duration::from_secs(600);
        let sagas = loop {
            let all = self.store.recent((10 * *BACKLOG).max(10)).await.unwrap();
            if all.len() == *BACKLOG + 1 && all.iter().all(|s| s.saga.status.is_terminal()) {
                break all;
            }
            assert!(Instant::now() < end, "sagas did not finish: {} of {}", all.iter().filter(|s| s.saga.status.is_terminal()).count(), *BACKLOG + 1);
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let failed: Vec<_> = sagas.iter().filter(|s| s.saga.status != Status::Succeeded).map(|s| (&s.saga.rotation_id, s.saga.status)).collect();
        assert!(failed.is_empty(), "every rotation succeeds, backlog and emergency: {failed:?}");
        let emergency = sagas.iter().find(|s| s.saga.rotation_id == "exposed").unwrap();
        assert!(emergency.saga.exposure.is_some(), "the exposed key's saga is an emergency");
        let new_key = emergency.saga.new_key.clone().unwrap();
        assert_eq!(self.held_by_target().await, new_key, "the new key is live in the target");
        assert!(!self.exposed_key_active().await, "the exposed key stays inactive (deleted)");
    }
}

/// Send the exposure; answers when the exposed key went inactive and how
/// many backlog rotations had finished by then.
async fn expose_and_time(s: &Setup, on_saga: impl Fn()) -> (Duration, usize) {
    let sent = Instant::now();
    s.send_exposure().await;
    let mut fired = false;
    loop {
        if !fired && !s.store.recent_of("exposed", 1).await.unwrap().is_empty() {
            on_saga();
            fired = true;
        }
        if !s.exposed_key_active().await {
            return (sent.elapsed(), s.finished());
        }
        assert!(sent.elapsed() < Duration::from_secs(120), "the exposed key is still active after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_key_dies_in_seconds_while_a_backlog_of_200_rotations_drains() {
    let _one = SERIAL.lock().await;
    let s = setup("backlog").await;
    let _w = s.worker(1);
    s.request_backlog().await;
    s.wait_draining().await;
    let (took, done) = expose_and_time(&s, || {}).await;
    println!(
        "exposed key inactive {:.2}s after the AWS Health event reached the intake queue, with {} of {} ordinary rotations still to finish (concurrency 4, Auth0 answering in {AUTH0_LATENCY_MS} ms)",
        took.as_secs_f64(),
        BACKLOG.saturating_sub(done),
        *BACKLOG
    );
    assert!(took < BOUND, "the emergency waited behind the backlog: {took:?}");
    assert!(done <= *BACKLOG / 2, "the emergency ran before the backlog, not after it ({done} finished first)");
    s.check_all_succeeded().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_survives_a_sigkill_of_its_worker_right_after_its_saga_is_created() {
    let _one = SERIAL.lock().await;
    let s = setup("kill").await;
    let worker = std::sync::Mutex::new(Some(s.worker(1)));
    s.request_backlog().await;
    s.wait_draining().await;
    let (took, done) = expose_and_time(&s, || {
        // The saga exists: kill its worker (SIGKILL: no shutdown), start it again.
        let mut w = worker.lock().unwrap();
        if let Some(mut k) = w.take() {
            let _ = k.kill();
        }
        *w = Some(s.worker(2));
    })
    .await;
    println!(
        "with a SIGKILL of the worker right after the emergency saga was created: exposed key inactive {:.2}s after the event, {} of {} ordinary rotations still to finish",
        took.as_secs_f64(),
        BACKLOG.saturating_sub(done),
        *BACKLOG
    );
    assert!(took < BOUND, "the emergency waited behind the backlog after the kill: {took:?}");
    assert!(done <= *BACKLOG / 2, "the restarted worker took the emergency before the backlog ({done} finished first)");
    s.check_all_succeeded().await;
}
