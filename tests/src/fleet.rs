//! A fleet of N Auth0 rotations, as the benchmark (`keyturn-bench`) and the
//! priority-lane test (`tests/tests/priority.rs`) both run it: moto, N IAM
//! users with one access key each, the multi-tenant fake Auth0
//! (`bench/fake_auth0.py`, one tenant per rotation, every answer optionally
//! delayed as over the internet), the resources of a deployment (step queue
//! with its DLQ, optionally the priority and intake queues, the table, the
//! topic, the KMS alias, the Auth0 client secret in Secrets Manager) and the
//! keyturn configuration naming them. Built in one place so the two measure
//! the same setup.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_iam::types::StatusType;

use crate::env::{keyturn_bin, queue_with_dlq, sdk_config, REGION};
use crate::fault_proxy::FaultProxy;
use crate::moto::Moto;
use crate::process::Guard;

/// The IAM user of the extra rotation (`exposed`) whose key the exposure
/// event names ([`FleetBuilder::exposed_user`]).
pub const EXPOSED_USER: &str = "exposed-sender";
/// The rotation of [`EXPOSED_USER`] (and its Auth0 tenant).
pub const EXPOSED_ROTATION: &str = "exposed";

/// The `[worker]` table of the exposure measurements (the priority-lane
/// test and the benchmark's exposure figure): concurrency 4, short polls
/// and leases so a test does not wait out production timings. The sweeper
/// runs on its production timings: nothing here needs it (a killed
/// worker's messages come back from SQS), and a sweep every second of
/// hundreds of waiting sagas by every replica loaded moto, and so every
/// call of the emergency, with work no deployment does.
pub const EXPOSURE_WORKER: &str = r#"concurrency = 4
wait_time = "1s"
visibility_timeout = "10s"
lease = "3s"
sweep_interval = "60s"
sweep_after = "120s"
shutdown_grace = "5s""#;
/// How long the fake Auth0 takes to answer in the exposure measurements.
pub const EXPOSURE_AUTH0_LATENCY_MS: u64 = 100;

/// How a [`Fleet`] is made.
#[derive(Debug, Clone)]
pub struct FleetBuilder {
    dir: PathBuf,
    rotations: usize,
    prefix: String,
    exposed: bool,
    lanes: bool,
    proxy: bool,
    auth0_latency_ms: u64,
    worker: String,
    keyturn: Option<PathBuf>,
}

impl FleetBuilder {
    /// `rotations` Auth0 rotations; configuration, logs and the fake's port
    /// file go to `dir` (created).
    pub fn new(dir: impl Into<PathBuf>, rotations: usize) -> Self {
        FleetBuilder {
            dir: dir.into(),
            rotations,
            prefix: "rotation".into(),
            exposed: false,
            lanes: false,
            proxy: false,
            auth0_latency_ms: 0,
            worker: String::new(),
            keyturn: None,
        }
    }
    /// Rotation ids, IAM user names and Auth0 tenants are `<prefix>-<i>`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// One more rotation, [`EXPOSED_ROTATION`] of [`EXPOSED_USER`], for an
    /// exposure event ([`Fleet::send_exposure`]); not among the N.
    pub fn exposed_user(mut self) -> Self {
        self.exposed = true;
        self
    }
    /// The priority step queue and the intake queue (each with its DLQ), as
    /// the stack creates them.
    pub fn lanes(mut self) -> Self {
        self.lanes = true;
        self
    }
    /// keyturn processes reach moto through a counting [`FaultProxy`]
    /// ([`Fleet::proxy`]); the fleet's own calls go to moto directly.
    pub fn through_proxy(mut self) -> Self {
        self.proxy = true;
        self
    }
    /// Every answer of the fake Auth0 waits this long.
    pub fn auth0_latency_ms(mut self, ms: u64) -> Self {
        self.auth0_latency_ms = ms;
        self
    }
    /// The lines of the `[worker]` table.
    pub fn worker(mut self, lines: &str) -> Self {
        self.worker = lines.into();
        self
    }
    /// The `keyturn` binary [`Fleet::worker`] runs (default: the one built
    /// beside the running executable).
    pub fn keyturn(mut self, bin: impl Into<PathBuf>) -> Self {
        self.keyturn = Some(bin.into());
        self
    }

    pub async fn build(self) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(&self.dir)?;
        let moto = Moto::start(&[]).await?;
        let proxy = if self.proxy { Some(FaultProxy::start(moto.endpoint.clone()).await?) } else { None };
        let sdk = sdk_config(&moto.endpoint, Credentials::new("testing", "testing", None, None, "fleet")).await;
        let (iam, sqs, ddb) = (aws_sdk_iam::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk), aws_sdk_dynamodb::Client::new(&sdk));
        let (sns, kms, sm) = (aws_sdk_sns::Client::new(&sdk), aws_sdk_kms::Client::new(&sdk), aws_sdk_secretsmanager::Client::new(&sdk));

        // The resources of a deployment, created as the stack would.
        let (queue, dlq) = queue_with_dlq(&sqs, "keyturn-steps").await?;
        let mut lanes = String::new();
        let mut intake_url = None;
        if self.lanes {
            let (priority, pdlq) = queue_with_dlq(&sqs, "keyturn-steps-priority").await?;
            let (intake, idlq) = queue_with_dlq(&sqs, "keyturn-intake").await?;
            lanes = format!(
                "priority_queue_url = \"{priority}\"\npriority_dlq_url = \"{pdlq}\"\nintake_queue_url = \"{intake}\"\nintake_dlq_url = \"{idlq}\"\n"
            );
            intake_url = Some(intake);
        }
        keyturn::store::create_table(&ddb, "keyturn-sagas").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let topic = sns.create_topic().name("keyturn").send().await?.topic_arn.unwrap_or_default();
        let key = kms.create_key().send().await?.key_metadata.map(|m| m.key_id).unwrap_or_default();
        kms.create_alias().alias_name("alias/keyturn").target_key_id(key).send().await?;
        let client_secret = format!("fleet-secret-{}", uuid::Uuid::new_v4().simple());
        sm.create_secret().name("keyturn/auth0").secret_string(serde_json::json!({ "client_secret": client_secret }).to_string()).send().await?;

        // (rotation id, IAM user): the N, then the exposed one.
        let mut rotations: Vec<(String, String)> = (0..self.rotations).map(|i| (format!("{}-{i}", self.prefix), format!("{}-{i}", self.prefix))).collect();
        if self.exposed {
            rotations.push((EXPOSED_ROTATION.into(), EXPOSED_USER.into()));
        }
        let mut exposed_key = None;
        for (_, user) in &rotations {
            iam.create_user().user_name(user).send().await?;
            let k = iam.create_access_key().user_name(user).send().await?;
            if user == EXPOSED_USER {
                exposed_key = k.access_key.map(|k| k.access_key_id);
            }
        }

        let port_file = self.dir.join("auth0.port");
        let _ = std::fs::remove_file(&port_file);
        let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/fake_auth0.py");
        let auth0_proc = Guard::spawn(
            Command::new("python3")
                .arg(fake)
                .arg("--port-file")
                .arg(&port_file)
                .args(["--client-secret", &client_secret, "--latency-ms", &self.auth0_latency_ms.to_string()])
                .stdin(Stdio::null()),
        )?;
        let auth0 = format!("http://127.0.0.1:{}", wait_for_file(&port_file, Duration::from_secs(20))?.trim());

        let mut config = format!(
            r#"[aws]
region = "{REGION}"
queue_url = "{queue}"
dlq_url = "{dlq}"
{lanes}table = "keyturn-sagas"
topic_arn = "{topic}"
kms_key_id = "alias/keyturn"

[worker]
{worker}
"#,
            worker = self.worker.trim()
        );
        for (id, user) in &rotations {
            config.push_str(&format!(
                r#"
[[rotation]]
id = "{id}"
source = {{ kind = "iam_access_key", user_name = "{user}" }}
target = {{ kind = "auth0_email_provider", domain = "{id}.example.com", base_url = "{auth0}/{id}", client_id = "bench-client", client_secret = {{ secrets_manager = "keyturn/auth0", json_key = "client_secret" }}, ses_region = "eu-west-1", from_address = "no-reply@example.com" }}
policy = {{ grace_period = "0s" }}
"#
            ));
        }
        let cfg_path = self.dir.join("keyturn.toml");
        std::fs::write(&cfg_path, &config)?;
        let cfg = keyturn::config::Config::parse(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let endpoint = proxy.as_ref().map_or(moto.endpoint.clone(), |p| p.endpoint.clone());
        let env = vec![
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ];
        let keyturn = match self.keyturn {
            Some(k) => k,
            None => keyturn_bin(),
        };
        Ok(Fleet {
            store: keyturn::store::Store::new(ddb.clone(), "keyturn-sagas"),
            _auth0: auth0_proc,
            moto,
            proxy,
            auth0,
            client_secret,
            iam,
            sqs,
            ddb,
            topic,
            cfg,
            cfg_path,
            dir: self.dir,
            prefix: self.prefix,
            rotations: self.rotations,
            intake_url,
            exposed_key,
            env,
            keyturn,
        })
    }
}

/// A built fleet: its processes end when it is dropped.
pub struct Fleet {
    pub moto: Moto,
    _auth0: Guard,
    /// Between keyturn processes and moto ([`FleetBuilder::through_proxy`]).
    pub proxy: Option<FaultProxy>,
    /// The fake Auth0's base URL (tenants under it).
    pub auth0: String,
    pub client_secret: String,
    /// Clients of moto, direct (not through the proxy).
    pub iam: aws_sdk_iam::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub store: keyturn::store::Store,
    pub topic: String,
    pub cfg: keyturn::config::Config,
    pub cfg_path: PathBuf,
    pub dir: PathBuf,
    prefix: String,
    /// N, the rotations besides the exposed one.
    pub rotations: usize,
    pub intake_url: Option<String>,
    /// The access key of [`EXPOSED_USER`], when the fleet has it.
    pub exposed_key: Option<String>,
    /// The environment of a keyturn process (endpoint, credentials, region).
    pub env: Vec<(&'static str, String)>,
    pub keyturn: PathBuf,
}

impl Fleet {
    /// The id of rotation `i` of the N.
    pub fn rotation(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// A `keyturn worker` process; its log is `worker-<n>.log` in the dir.
    pub fn worker(&self, n: usize) -> anyhow::Result<Guard> {
        let log = std::fs::File::create(self.dir.join(format!("worker-{n}.log")))?;
        Ok(Guard::spawn(
            Command::new(&self.keyturn)
                .args(["worker", "--config"])
                .arg(&self.cfg_path)
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?)
    }

    /// Notices published so far, over every worker log of this fleet.
    pub fn finished(&self) -> usize {
        self.count_in_logs("notification published")
    }

    /// How often `needle` occurs over every worker log of this fleet.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().matches(needle).count())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The N rotations, asked for at once (as `keyturn rotate` asks, 16
    /// requests in flight), in this process.
    pub async fn request_all(&self) -> anyhow::Result<()> {
        let clients = keyturn::aws::Clients::new(sdk_config(&self.env[0].1, Credentials::new("testing", "testing", None, None, "rq")).await);
        let engine = std::sync::Arc::new(keyturn::app::engine(&self.cfg, &clients, "requester".into()));
        for chunk in (0..self.rotations).collect::<Vec<_>>().chunks(16) {
            let mut asks = tokio::task::JoinSet::new();
            for i in chunk {
                let (e, id) = (engine.clone(), self.rotation(*i));
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
                // Existing: moto applied a transaction it answered with an
                // error, and the retry found the saga it made.
                let created = r?.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(
                    matches!(created, keyturn::store::Created::New(_) | keyturn::store::Created::Existing(_)),
                    "a rotation was not started: {created:?}"
                );
            }
        }
        Ok(())
    }

    /// Until the worker is busy draining: a few of the N finished (none
    /// to wait for when N is 0).
    pub async fn wait_draining(&self) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(300);
        while self.finished() < 4.min(self.rotations) {
            anyhow::ensure!(Instant::now() < end, "the worker did not start on the backlog; see {}", self.dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The AWS Health `AWS_RISK_CREDENTIALS_EXPOSED` event for the exposed
    /// user's key, onto the intake queue.
    pub async fn send_exposure(&self) -> anyhow::Result<()> {
        let (Some(intake), Some(key)) = (&self.intake_url, &self.exposed_key) else {
            anyhow::bail!("the fleet was built without lanes() or exposed_user()")
        };
        let event = include_str!("../fixtures/health-key-exposed.json").replace("AKIAEXPOSEDKEY000001", key);
        self.sqs.send_message().queue_url(intake).message_body(event).send().await?;
        Ok(())
    }

    pub async fn exposed_key_active(&self) -> anyhow::Result<bool> {
        let key = self.exposed_key.as_deref().unwrap_or_default();
        let out = self.iam.list_access_keys().user_name(EXPOSED_USER).send().await?;
        Ok(out.access_key_metadata().iter().any(|k| k.access_key_id() == Some(key) && k.status() == Some(&StatusType::Active)))
    }

    /// Send the exposure; answers when the exposed key went inactive
    /// (timed from the event reaching the intake queue) and how many of the
    /// N had finished by then. `on_saga` runs at every poll until it answers
    /// true (it is handed the emergency saga once it exists).
    pub async fn expose_and_time(&self, mut on_saga: impl FnMut(&keyturn::store::Stored) -> bool) -> anyhow::Result<(Duration, usize)> {
        let sent = Instant::now();
        self.send_exposure().await?;
        let mut done = false;
        loop {
            if !done {
                if let Some(s) = self.store.recent_of(EXPOSED_ROTATION, 1).await.map_err(|e| anyhow::anyhow!("{e}"))?.first() {
                    done = on_saga(s);
                }
            }
            if !self.exposed_key_active().await? {
                return Ok((sent.elapsed(), self.finished()));
            }
            anyhow::ensure!(sent.elapsed() < Duration::from_secs(120), "the exposed key is still active after 120 s; see {}", self.dir.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Fleet::expose_and_time`] with replicas running: the replica that
    /// holds the emergency's lease (its worker id names its pid) is
    /// SIGKILLed the moment the lease is seen — milliseconds after the saga
    /// was created, its message in that replica's hands — and started again
    /// (a new `worker-<n>.log`). Answers the time to inactive, the rotations
    /// finished by then, and when the kill came (since the event).
    pub async fn expose_kill_and_time(&self, replicas: &mut Vec<Option<Guard>>) -> anyhow::Result<(Duration, usize, Duration)> {
        let sent = Instant::now();
        let mut killed = None;
        let (took, done) = self
            .expose_and_time(|saga| {
                let Some(owner) = saga.lease_owner.as_deref() else { return false };
                let Some(slot) = replicas.iter_mut().find(|r| r.as_ref().is_some_and(|g| owner.contains(&format!("-{}-", g.id())))) else {
                    return false;
                };
                if let Some(mut g) = slot.take() {
                    let _ = g.kill();
                }
                killed = Some(sent.elapsed());
                let n = replicas.len() + 1;
                replicas.push(self.worker(n).ok());
                true
            })
            .await?;
        let at = killed.ok_or_else(|| anyhow::anyhow!("the exposed key went inactive before the emergency's lease holder was seen"))?;
        Ok((took, done, at))
    }

    /// The access key id a tenant of the fake Auth0 holds.
    pub async fn held_by_target(&self, tenant: &str) -> anyhow::Result<String> {
        let http = reqwest::Client::new();
        let tok: serde_json::Value = http
            .post(format!("{}/{tenant}/oauth/token", self.auth0))
            .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": "bench-client", "client_secret": self.client_secret, "audience": format!("https://{tenant}.example.com/api/v2/")}))
            .send()
            .await?
            .json()
            .await?;
        let p: serde_json::Value = http
            .get(format!("{}/{tenant}/api/v2/emails/provider", self.auth0))
            .bearer_auth(tok["access_token"].as_str().unwrap_or_default())
            .send()
            .await?
            .json()
            .await?;
        Ok(p["credentials"]["accessKeyId"].as_str().unwrap_or_default().to_string())
    }

    /// Until every saga ended (at most `timeout`): all of them, read back.
    pub async fn wait_all_ended(&self, timeout: Duration) -> anyhow::Result<Vec<keyturn::store::Stored>> {
        let expected = self.rotations + usize::from(self.exposed_key.is_some());
        let end = Instant::now() + timeout;
        loop {
            let all = self.store.recent((10 * expected).max(10)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if all.len() == expected && all.iter().all(|s| s.saga.status.is_terminal()) {
                return Ok(all);
            }
            anyhow::ensure!(Instant::now() < end, "sagas did not finish: {} of {expected}", all.iter().filter(|s| s.saga.status.is_terminal()).count());
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// The contents of a file once it exists and is not blank.
pub fn wait_for_file(p: &Path, timeout: Duration) -> anyhow::Result<String> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if !s.trim().is_empty() {
                return Ok(s);
            }
        }
        anyhow::ensure!(Instant::now() < end, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}
