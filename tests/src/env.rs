//! A complete local environment: moto with keyturn's resources created in
//! it, the fake Auth0, and a keyturn configuration pointing at both.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use keyturn::aws::Clients;
use keyturn::config::Config;
use keyturn::engine::Engine;
use keyturn::queue::Queue;
use keyturn::saga::{KeyRef, Saga};

use crate::auth0_fake::{FakeAuth0, CLIENT_ID};
use crate::moto::Moto;

pub const USER: &str = "auth0-ses-sender";
pub const REGION: &str = "us-east-1";

/// Knobs for a test environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// Access keys the IAM user has before the rotation.
    pub existing_keys: usize,
    /// How the Auth0 client secret is referenced: Secrets Manager (default) or an env var name
    /// (which must start with `KEYTURN_`, as the configuration requires).
    pub client_secret_env: Option<String>,
    /// Grace period between deactivating and deleting the old key.
    pub grace_period: &'static str,
    /// Run moto with IAM enforcement (`INITIAL_NO_AUTH_ACTION_COUNT`): every
    /// request after the bootstrap must be signed by a known key with the
    /// right secret, so STS really verifies the new key's secret.
    pub enforce_auth: bool,
    /// Create the intake queue + DLQ and an EventBridge rule delivering
    /// Security Hub and AWS Health events to it.
    pub intake: bool,
    /// `[rotation.schedule] max_age` of the `auth0-ses` rotation.
    pub max_age: Option<&'static str>,
    /// A second rotation, `mailer-2` (IAM user `mailer-2`, one key), with this max_age.
    pub second_rotation_max_age: Option<&'static str>,
    /// `quarantine_after` of the `auth0-ses` rotation.
    pub quarantine_after: Option<u32>,
    /// `propagation_timeout` of the `auth0-ses` rotation (default 30s).
    pub propagation_timeout: &'static str,
    /// Add the `entra-scim` rotation (SCIM token into the fake Graph), with
    /// this `reminder_every` and `person_deadline`.
    pub scim: Option<(&'static str, &'static str)>,
    /// With `scim`: `restart_job = true`, `run_timeout = "5s"`.
    pub scim_restart: bool,
    /// Add the `entra-saml` rotation (the SAML signing certificate of the
    /// fake Graph's service principal), with this `reminder_every` and
    /// `person_deadline`.
    pub saml: Option<(&'static str, &'static str)>,
    /// More `[rotation.policy]` lines for the `auth0-ses` rotation.
    pub extra_policy: &'static str,
    /// Run moto with its IAM clock set back by the seconds written in this
    /// file (`tests/fixtures/moto_clock`): keys created or used while it
    /// holds N are dated N seconds ago, as AWS dates keys made back then.
    pub iam_clock: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            existing_keys: 1,
            client_secret_env: None,
            grace_period: "0s",
            enforce_auth: false,
            intake: false,
            max_age: None,
            second_rotation_max_age: None,
            quarantine_after: None,
            propagation_timeout: "30s",
            scim: None,
            scim_restart: false,
            saml: None,
            extra_policy: "",
            iam_clock: None,
        }
    }
}

pub struct TestEnv {
    pub moto: Moto,
    /// With `enforce_auth`: a second, non-enforcing moto for SNS and the
    /// notification queue. moto (server mode) checks signatures of form-encoded
    /// requests against botocore's re-encoding of the parsed parameters, not
    /// the raw body, so the Rust SDK's SNS Publish of a subject with
    /// parentheses fails there although AWS accepts it.
    pub notify_moto: Option<Moto>,
    notify_sqs: aws_sdk_sqs::Client,
    pub auth0: FakeAuth0,
    pub securityhub: crate::securityhub_fake::FakeSecurityHub,
    /// (queue url, DLQ url) of the intake queue, with `Options::intake`.
    pub intake: Option<(String, String)>,
    pub sdk: SdkConfig,
    pub clients: Clients,
    pub config: Config,
    pub config_text: String,
    /// Keys before the rotation: (id, secret).
    pub old_keys: Vec<(String, String)>,
    pub auth0_client_secret: String,
    pub notify_queue_url: String,
    /// The queue subscribed (raw delivery) to the chat topic, `[aws] chat_topic_arn`.
    pub chat_queue_url: String,
    pub queue_url: String,
    pub dlq_url: String,
    /// With `Options::scim`: the fake Graph and the tokens.
    pub scim: Option<ScimSide>,
    /// With `Options::saml`: the fake Graph whose service principal holds the certificates.
    pub saml: Option<SamlSide>,
}

/// The Entra side of the `entra-saml` rotation.
pub struct SamlSide {
    pub graph: crate::graph_fake::FakeGraph,
    /// The thumbprint of the certificate Entra signs with before the rotation
    /// (IAM Identity Center trusts it).
    pub old: String,
    /// An older, unused certificate on the service principal.
    pub spare: String,
}

/// The `[rotation.policy]` of a rotation with a person in it (SCIM, SAML).
fn person_policy(reminder_every: &str, person_deadline: &str) -> String {
    format!(
        r#"[rotation.policy]
reminder_every = "{reminder_every}"
person_deadline = "{person_deadline}"
max_attempts = 4
retry_base = "200ms"
retry_cap = "2s"
"#
    )
}

/// A `[[rotation]]` of the fake service principal's SAML signing certificate.
pub fn saml_rotation_toml(graph_uri: &str, reminder_every: &str, person_deadline: &str) -> String {
    use crate::graph_fake::{CLIENT_ID, SP, TENANT};
    format!(
        r#"
[[rotation]]
id = "entra-saml"

[rotation.source]
kind = "entra_saml_certificate"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret = {{ secrets_manager = "keyturn/entra-saml", json_key = "client_secret" }}
service_principal_id = "{SP}"
certificate_name = "CN=Microsoft Azure Federated SSO Certificate"
certificate_lifetime = "1095d"
region = "{REGION}"
login_base_url = "{graph_uri}"
graph_base_url = "{graph_uri}"

[rotation.target]
kind = "identity_center_saml"

{policy}"#,
        policy = person_policy(reminder_every, person_deadline)
    )
}

/// The Entra side of the `entra-scim` rotation.
pub struct ScimSide {
    pub graph: crate::graph_fake::FakeGraph,
    /// The token a person "generates in the console": the one the fake's
    /// Test connection accepts.
    pub new_token: String,
    /// The token Entra holds before the rotation.
    pub old_token: String,
    /// The Graph app's client secret (in Secrets Manager as `keyturn/entra`).
    pub client_secret: String,
}

/// IAM Identity Center's SCIM endpoint the `entra-scim` rotation names.
pub const SCIM_ENDPOINT: &str = "https://scim.us-east-1.amazonaws.com/abc/scim/v2/";

/// A `[[rotation]]` of a SCIM token into Entra (the fake Graph at `graph_uri`).
pub fn scim_rotation_toml(graph_uri: &str, reminder_every: &str, person_deadline: &str, restart: bool) -> String {
    let restart = if restart { "restart_job = true\nrun_timeout = \"5s\"\n" } else { "" };
    use crate::graph_fake::{CLIENT_ID, JOB, SP, TENANT};
    format!(
        r#"
[[rotation]]
id = "entra-scim"
source = {{ kind = "scim_token", region = "{REGION}", account_id = "123456789012" }}

[rotation.target]
kind = "entra_provisioning"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret = {{ secrets_manager = "keyturn/entra", json_key = "client_secret" }}
service_principal_id = "{SP}"
job_id = "{JOB}"
scim_endpoint = "{SCIM_ENDPOINT}"
login_base_url = "{graph_uri}"
graph_base_url = "{graph_uri}"
{restart}
{policy}"#,
        policy = person_policy(reminder_every, person_deadline)
    )
}

/// `[worker]` timings fit for tests: short polls, leases and sweeps.
pub const FAST_WORKER_TOML: &str = r#"[worker]
concurrency = 4
wait_time = "1s"
visibility_timeout = "10s"
lease = "3s"
sweep_interval = "1s"
sweep_after = "3s"
shutdown_grace = "5s"
scan_interval = "1s"
scan_jitter = "0ms"
"#;

/// A `[[rotation]]` of an IAM user's access key into the fake Auth0, with
/// `policy` as the body of its `[rotation.policy]` table.
pub fn rotation_toml(id: &str, user: &str, domain: &str, auth0_uri: &str, secret_ref: &str, policy: &str) -> String {
    format!(
        r#"
[[rotation]]
id = "{id}"
source = {{ kind = "iam_access_key", user_name = "{user}" }}

[rotation.target]
kind = "auth0_email_provider"
domain = "{domain}"
base_url = "{auth0_uri}"
client_id = "{CLIENT_ID}"
client_secret = {secret_ref}
ses_region = "eu-west-1"
from_address = "no-reply@example.com"

[rotation.policy]
{policy}
"#
    )
}

/// AWS SDK configuration for a moto endpoint, with the same timeouts as production.
pub async fn sdk_config(endpoint: &str, credentials: Credentials) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(15))
                .build(),
        )
        .load()
        .await
}

/// moto, and the SDK configuration that signs for it: with `enforce_auth`,
/// as an administrator made in the first (free) requests.
async fn start_moto(opts: &Options) -> anyhow::Result<(Moto, SdkConfig)> {
    // With enforcement, the first three requests are free: they create an
    // administrator whose key signs everything after.
    let mut moto_env: Vec<(&str, String)> = vec![];
    if opts.enforce_auth {
        moto_env.push(("INITIAL_NO_AUTH_ACTION_COUNT", "3".into()));
    }
    if let Some(clock) = &opts.iam_clock {
        moto_env.push(("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/moto_clock").into()));
        moto_env.push(("KEYTURN_TEST_IAM_CLOCK", clock.display().to_string()));
    }
    let moto = Moto::start(&moto_env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()).await?;
    let mut sdk = sdk_config(&moto.endpoint, Credentials::new("testing", "testing", None, None, "keyturn-tests")).await;
    if opts.enforce_auth {
        let iam = aws_sdk_iam::Client::new(&sdk);
        iam.create_user().user_name("keyturn-admin").send().await?;
        iam.put_user_policy()
            .user_name("keyturn-admin")
            .policy_name("all")
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
            .send()
            .await?;
        let k = iam.create_access_key().user_name("keyturn-admin").send().await?;
        let k = k.access_key().unwrap();
        let admin = Credentials::new(k.access_key_id(), k.secret_access_key(), None, None, "keyturn-admin");
        sdk = sdk_config(&moto.endpoint, admin).await;
    }
    Ok((moto, sdk))
}

/// The resources of a deployment in moto: queues, table, topics, KMS key.
struct Resources {
    queue_url: String,
    dlq_url: String,
    priority_url: String,
    pdlq_url: String,
    notify_queue_url: String,
    topic_arn: String,
    chat_topic_arn: String,
    chat_queue_url: String,
}

impl Resources {
    /// Create them (the notification and chat queues with `notify_sqs`).
    async fn create(clients: &Clients, notify_sqs: &aws_sdk_sqs::Client) -> anyhow::Result<Resources> {
        let sqs = &clients.sqs;
        let (queue_url, dlq_url) = queue_with_dlq(sqs, "keyturn-steps").await?;
        // The priority lane (emergencies, steps a person waits on), as the stack makes it.
        let (priority_url, pdlq_url) = queue_with_dlq(sqs, "keyturn-steps-priority").await?;
        let notify_queue_url = notify_sqs.create_queue().queue_name("keyturn-notifications").send().await?.queue_url.unwrap();
        let notify_arn = queue_arn(notify_sqs, &notify_queue_url).await?;

        keyturn::store::create_table(&clients.dynamodb, "keyturn-sagas").await?;

        let topic_arn = clients.sns.create_topic().name("keyturn").send().await?.topic_arn.unwrap();
        clients.sns.subscribe().topic_arn(&topic_arn).protocol("sqs").endpoint(&notify_arn).send().await?;
        // The chat topic, with a queue standing in for the chat integration.
        let chat_topic_arn = clients.sns.create_topic().name("keyturn-chat").send().await?.topic_arn.unwrap();
        let chat_queue_url = notify_sqs.create_queue().queue_name("keyturn-chat-messages").send().await?.queue_url.unwrap();
        let chat_arn = queue_arn(notify_sqs, &chat_queue_url).await?;
        clients.sns.subscribe().topic_arn(&chat_topic_arn).protocol("sqs").endpoint(&chat_arn).attributes("RawMessageDelivery", "true").send().await?;

        let key_id = clients.kms.create_key().description("keyturn sealed secrets").send().await?.key_metadata.unwrap().key_id;
        clients.kms.create_alias().alias_name("alias/keyturn").target_key_id(&key_id).send().await?;
        Ok(Resources { queue_url, dlq_url, priority_url, pdlq_url, notify_queue_url, topic_arn, chat_topic_arn, chat_queue_url })
    }
}

/// The intake queue + DLQ and an EventBridge rule delivering Security Hub,
/// AWS Health and request events to it; and its `[aws]` lines.
async fn create_intake(sqs: &aws_sdk_sqs::Client, sdk: &SdkConfig) -> anyhow::Result<((String, String), String)> {
    let idlq = sqs.create_queue().queue_name("keyturn-intake-dlq").send().await?.queue_url.unwrap();
    let iq = sqs.create_queue().queue_name("keyturn-intake").send().await?.queue_url.unwrap();
    let iq_arn = queue_arn(sqs, &iq).await?;
    let eb = aws_sdk_eventbridge::Client::new(sdk);
    eb.put_rule().name("keyturn-intake").event_pattern(r#"{"source":["aws.securityhub","aws.health","keyturn.requests"]}"#).send().await?;
    eb.put_targets().rule("keyturn-intake").targets(aws_sdk_eventbridge::types::Target::builder().id("intake").arn(iq_arn).build()?).send().await?;
    let intake_cfg = format!("intake_queue_url = \"{iq}\"\nintake_dlq_url = \"{idlq}\"\n");
    Ok(((iq, idlq), intake_cfg))
}

/// Put `{"client_secret": secret}` into Secrets Manager as `name`.
async fn put_client_secret(clients: &Clients, name: &str, secret: &str) -> anyhow::Result<()> {
    clients.secrets.create_secret().name(name).secret_string(serde_json::json!({"client_secret": secret}).to_string()).send().await?;
    Ok(())
}

impl ScimSide {
    /// The fake Graph holding the old token (and accepting the new one in
    /// Test connection), its client secret in Secrets Manager; and the
    /// rotation's configuration.
    async fn create(clients: &Clients, reminder_every: &str, person_deadline: &str, restart: bool) -> anyhow::Result<(ScimSide, String)> {
        let side = ScimSide {
            new_token: format!("scim-new-{}", uuid::Uuid::new_v4().simple()),
            old_token: format!("scim-old-{}", uuid::Uuid::new_v4().simple()),
            client_secret: format!("graph-secret-{}", uuid::Uuid::new_v4().simple()),
            graph: crate::graph_fake::FakeGraph::start("", "", "").await,
        };
        {
            side.graph.set_client_secret(&side.client_secret);
            let mut st = side.graph.state.lock().unwrap();
            st.valid_scim_token = side.new_token.clone();
            for kv in st.secrets.iter_mut() {
                if kv["key"] == "SecretToken" {
                    kv["value"] = side.old_token.clone().into();
                }
            }
        }
        put_client_secret(clients, "keyturn/entra", &side.client_secret).await?;
        let cfg = scim_rotation_toml(&side.graph.server.uri(), reminder_every, person_deadline, restart);
        Ok((side, cfg))
    }
}

impl SamlSide {
    /// The fake Graph whose service principal signs with `old` (and holds
    /// an unused `spare`), its client secret in Secrets Manager; and the
    /// rotation's configuration.
    async fn create(clients: &Clients, reminder_every: &str, person_deadline: &str) -> anyhow::Result<(SamlSide, String)> {
        let client_secret = format!("graph-secret-{}", uuid::Uuid::new_v4().simple());
        let graph = crate::graph_fake::FakeGraph::start(&client_secret, "", "").await;
        let (old, spare) = {
            let mut st = graph.state.lock().unwrap();
            st.saml.app_id = "11111111-2222-3333-4444-555555555555".into();
            let spare = st.saml.add_certificate("CN=Microsoft Azure Federated SSO Certificate", "2020-01-01T00:00:00Z", "2023-01-01T00:00:00Z");
            let old = st.saml.add_certificate("CN=Microsoft Azure Federated SSO Certificate", "2024-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
            let (old, spare) = (old["thumbprint"].as_str().unwrap().to_string(), spare["thumbprint"].as_str().unwrap().to_string());
            st.saml.preferred = Some(old.clone());
            st.saml.trusted = vec![old.clone()];
            (old, spare)
        };
        put_client_secret(clients, "keyturn/entra-saml", &client_secret).await?;
        let cfg = saml_rotation_toml(&graph.server.uri(), reminder_every, person_deadline);
        Ok((SamlSide { graph, old, spare }, cfg))
    }
}

/// The `[rotation.schedule]` table for `max_age`, if any.
fn schedule(max_age: Option<&str>) -> String {
    max_age.map(|a| format!("\n[rotation.schedule]\nmax_age = \"{a}\"\n")).unwrap_or_default()
}

/// The configuration of a test environment: `[aws]` naming `r`, fast
/// `[worker]` timings, the `auth0-ses` rotation into the fake Auth0 at
/// `auth0_uri`, and the optional rotations' tables (`more`).
fn config_toml(opts: &Options, r: &Resources, intake_cfg: &str, auth0_uri: &str, secret_ref: &str, more: &str) -> String {
    let Resources { queue_url, dlq_url, priority_url, pdlq_url, topic_arn, chat_topic_arn, .. } = r;
    format!(
        r#"# keyturn configuration for a local run against moto and the fake Auth0.
[aws]
region = "{REGION}"
queue_url = "{queue_url}"
dlq_url = "{dlq_url}"
priority_queue_url = "{priority_url}"
priority_dlq_url = "{pdlq_url}"
table = "keyturn-sagas"
topic_arn = "{topic_arn}"
chat_topic_arn = "{chat_topic_arn}"
kms_key_id = "alias/keyturn"
{intake_cfg}
{worker}{rotation}{sched}{more}"#,
        worker = FAST_WORKER_TOML,
        rotation = rotation_toml(
            "auth0-ses",
            USER,
            "example.eu.auth0.com",
            auth0_uri,
            secret_ref,
            &format!(
                "grace_period = \"{}\"\npropagation_timeout = \"{}\"\nmax_attempts = 4\nretry_base = \"200ms\"\nretry_cap = \"2s\"\nquarantine_after = {}\n{}",
                opts.grace_period,
                opts.propagation_timeout,
                opts.quarantine_after.unwrap_or(3),
                opts.extra_policy
            ),
        ),
        sched = schedule(opts.max_age),
    )
}

impl TestEnv {
    pub async fn new(opts: Options) -> anyhow::Result<TestEnv> {
        crate::capture::install();
        let (moto, sdk) = start_moto(&opts).await?;
        let mut clients = Clients::new(sdk.clone());
        let notify_moto = if opts.enforce_auth { Some(Moto::start(&[]).await?) } else { None };
        let notify_sqs = match &notify_moto {
            Some(m) => {
                let plain = sdk_config(&m.endpoint, Credentials::new("testing", "testing", None, None, "keyturn-tests")).await;
                clients.sns = aws_sdk_sns::Client::new(&plain);
                aws_sdk_sqs::Client::new(&plain)
            }
            None => clients.sqs.clone(),
        };

        clients.iam.create_user().user_name(USER).send().await?;
        let mut old_keys = vec![];
        for _ in 0..opts.existing_keys {
            let k = clients.iam.create_access_key().user_name(USER).send().await?;
            let k = k.access_key().unwrap();
            old_keys.push((k.access_key_id().to_string(), k.secret_access_key().to_string()));
        }
        let resources = Resources::create(&clients, &notify_sqs).await?;

        let auth0_client_secret = format!("auth0-client-secret-{}", uuid::Uuid::new_v4());
        let secret_ref = match &opts.client_secret_env {
            Some(var) => format!(r#"{{ env = "{var}" }}"#),
            None => {
                put_client_secret(&clients, "keyturn/auth0", &auth0_client_secret).await?;
                r#"{ secrets_manager = "keyturn/auth0", json_key = "client_secret" }"#.to_string()
            }
        };
        let securityhub = crate::securityhub_fake::FakeSecurityHub::start().await;
        clients.securityhub =
            aws_sdk_securityhub::Client::from_conf(aws_sdk_securityhub::config::Builder::from(&sdk).endpoint_url(securityhub.server.uri()).build());

        let (intake, intake_cfg) =
            if opts.intake { create_intake(&clients.sqs, &sdk).await.map(|(q, cfg)| (Some(q), cfg))? } else { (None, String::new()) };
        let mut second = String::new();
        if let Some(age) = opts.second_rotation_max_age {
            clients.iam.create_user().user_name("mailer-2").send().await?;
            clients.iam.create_access_key().user_name("mailer-2").send().await?;
            second = format!(
                "{}{}",
                rotation_toml("mailer-2", "mailer-2", "second.eu.auth0.com", "AUTH0_URI", &secret_ref, "grace_period = \"0s\""),
                schedule(Some(age))
            );
        }
        let (scim, scim_cfg) = match opts.scim {
            Some((every, deadline)) => ScimSide::create(&clients, every, deadline, opts.scim_restart).await.map(|(s, cfg)| (Some(s), cfg))?,
            None => (None, String::new()),
        };
        let (saml, saml_cfg) = match opts.saml {
            Some((every, deadline)) => SamlSide::create(&clients, every, deadline).await.map(|(s, cfg)| (Some(s), cfg))?,
            None => (None, String::new()),
        };

        let current = old_keys.first().map(|k| k.0.clone()).unwrap_or_else(|| "AKIA_NONE".into());
        let auth0 = FakeAuth0::start(&auth0_client_secret, &current).await;
        let more = format!("{}{scim_cfg}{saml_cfg}", second.replace("AUTH0_URI", &auth0.uri()));
        let config_text = config_toml(&opts, &resources, &intake_cfg, &auth0.uri(), &secret_ref, &more);
        let config = Config::parse(&config_text).map_err(|e| anyhow::anyhow!("generated config invalid: {e}"))?;
        let Resources { queue_url, dlq_url, notify_queue_url, chat_queue_url, .. } = resources;
        Ok(TestEnv {
            moto,
            notify_moto,
            notify_sqs,
            auth0,
            securityhub,
            intake,
            sdk,
            clients,
            config,
            config_text,
            old_keys,
            auth0_client_secret,
            notify_queue_url,
            chat_queue_url,
            queue_url,
            dlq_url,
            scim,
            saml,
        })
    }

    /// Environment for running the `keyturn` binary against this moto:
    /// only the standard AWS variables, as a user would set them.
    pub fn cli_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.moto.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Write the configuration into `dir` and return its path.
    pub fn write_config(&self, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let p = dir.join("keyturn.toml");
        std::fs::write(&p, &self.config_text)?;
        Ok(p)
    }

    /// This environment's configuration (`[aws]`, `[worker]`) with `extra`
    /// (more `[[rotation]]` tables) added, or replacing its rotations.
    pub fn config_with(&self, extra: &str, keep_rotations: bool) -> Config {
        let base = if keep_rotations {
            &self.config_text[..]
        } else {
            &self.config_text[..self.config_text.find("[[rotation]]").unwrap_or(self.config_text.len())]
        };
        Config::parse(&format!("{base}\n{extra}")).expect("test configuration")
    }

    /// Run rotation `id` of `cfg` once with a worker, and wait for its end.
    pub async fn rotate_with(&self, cfg: &Config, id: &str) -> Saga {
        let engine = Arc::new(keyturn::app::engine_with(cfg, &self.clients, "w1".into(), keyturn::app::sqs_queue(cfg, &self.clients)));
        let w = RunningWorker::spawn(engine.clone(), &cfg.worker);
        let keyturn::store::Created::New(saga_id) = engine.request(id, "manual").await.unwrap() else { panic!("expected a new saga") };
        let saga = self.wait_terminal(&saga_id, Duration::from_secs(60)).await;
        w.stop().await;
        saga
    }

    /// An engine as the worker builds it (with the priority lane).
    pub fn engine(&self, worker: &str) -> Engine<keyturn::queue::SqsQueue> {
        keyturn::app::engine(&self.config, &self.clients, worker.into())
    }

    pub fn engine_with<Q: Queue>(&self, worker: &str, q: Q) -> Engine<Q> {
        keyturn::app::engine_with(&self.config, &self.clients, worker.into(), q)
    }

    /// An engine as the worker builds it (with the priority lane) whose
    /// every part reads time from `clock`: a test advances a
    /// [`keyturn::clock::ManualClock`] instead of sleeping until a sweep, a
    /// key age or a deadline comes due.
    pub fn engine_at(&self, worker: &str, clock: keyturn::clock::SharedClock) -> Engine<keyturn::queue::SqsQueue> {
        keyturn::app::engine_at(&self.config, &self.clients, worker.into(), clock)
    }

    /// Wait until the intake queue is idle: every event sent so far was
    /// received, handled and acknowledged (or dead-lettered).
    pub async fn wait_intake_idle(&self, timeout: Duration) {
        let (iq, _) = self.intake.clone().expect("an intake queue (Options::intake)");
        wait_queue_idle(&self.clients.sqs, &iq, timeout).await
    }

    /// Clients signed as a new IAM user that holds exactly `policy_json`
    /// (only meaningful with `Options::enforce_auth`). SNS and Security Hub
    /// stay on their unenforced stand-ins, as in [`TestEnv::clients`].
    pub async fn clients_for_policy(&self, user: &str, policy_json: &str) -> anyhow::Result<Clients> {
        let iam = &self.clients.iam;
        iam.create_user().user_name(user).send().await?;
        // Compact: moto re-encodes form bodies to check signatures, and spaces
        // come out differently from the Rust SDK's encoding.
        let compact = serde_json::from_str::<Value>(policy_json)?.to_string();
        iam.put_user_policy().user_name(user).policy_name("under-test").policy_document(compact).send().await?;
        let k = iam.create_access_key().user_name(user).send().await?;
        let k = k.access_key().unwrap();
        let sdk = sdk_config(&self.moto.endpoint, Credentials::new(k.access_key_id(), k.secret_access_key(), None, None, "policy-under-test")).await;
        let mut c = Clients::new(sdk);
        c.sns = self.clients.sns.clone();
        c.securityhub = self.clients.securityhub.clone();
        Ok(c)
    }

    /// Clients for the engine whose AWS traffic goes through `endpoint` (a
    /// fault proxy in front of moto). SNS and Security Hub as in `clients`.
    pub async fn clients_via(&self, endpoint: &str) -> Clients {
        let sdk = sdk_config(endpoint, Credentials::new("testing", "testing", None, None, "via-proxy")).await;
        let mut c = Clients::new(sdk);
        c.sns = self.clients.sns.clone();
        c.securityhub = self.clients.securityhub.clone();
        c
    }

    /// The intake queue as the worker polls it.
    pub fn intake_queue(&self) -> Option<Arc<keyturn::queue::SqsQueue>> {
        keyturn::app::intake_queue(&self.config, &self.clients).map(Arc::new)
    }

    /// A queue receiving keyturn's outcome events: a real rule on moto's
    /// default bus matching `source: keyturn.outcomes`, targeting a new SQS
    /// queue. Answers the queue URL.
    pub async fn outcome_events_queue(&self) -> anyhow::Result<String> {
        let url = self.clients.sqs.create_queue().queue_name("keyturn-outcome-events").send().await?.queue_url.unwrap();
        let arn = queue_arn(&self.clients.sqs, &url).await?;
        let eb = aws_sdk_eventbridge::Client::new(&self.sdk);
        eb.put_rule().name("keyturn-outcomes").event_pattern(r#"{"source":["keyturn.outcomes"]}"#).send().await?;
        eb.put_targets().rule("keyturn-outcomes").targets(aws_sdk_eventbridge::types::Target::builder().id("events").arn(arn).build()?).send().await?;
        Ok(url)
    }

    /// Drain an outcome-events queue: the EventBridge events as delivered.
    pub async fn outcome_events(&self, url: &str, expect_at_least: usize, timeout: Duration) -> Vec<Value> {
        drain(&self.clients.sqs, url, expect_at_least, timeout)
            .await
            .into_iter()
            .map(|(b, _)| serde_json::from_str(&b).expect("an event is JSON"))
            .collect()
    }

    /// Drain the intake DLQ: (body, keyturn_reason attribute).
    pub async fn intake_dlq(&self, expect_at_least: usize, timeout: Duration) -> Vec<(String, Option<String>)> {
        let (_, dlq) = self.intake.clone().expect("an intake queue (Options::intake)");
        drain(&self.clients.sqs, &dlq, expect_at_least, timeout).await
    }

    /// Send a message body to the intake queue, as EventBridge (or an
    /// automation using the request API) would.
    pub async fn send_intake(&self, body: &str) -> anyhow::Result<()> {
        let (iq, _) = self.intake.clone().expect("an intake queue (Options::intake)");
        self.clients.sqs.send_message().queue_url(iq).message_body(body).send().await?;
        Ok(())
    }

    /// Put an event (a fixture as EventBridge delivers it) on the default bus.
    pub async fn put_event(&self, event_json: &str) -> anyhow::Result<()> {
        let v: Value = serde_json::from_str(event_json)?;
        let mut entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(v["source"].as_str().unwrap_or_default())
            .detail_type(v["detail-type"].as_str().unwrap_or_default())
            .detail(v["detail"].to_string());
        for r in v["resources"].as_array().into_iter().flatten() {
            entry = entry.resources(r.as_str().unwrap_or_default());
        }
        let out = aws_sdk_eventbridge::Client::new(&self.sdk).put_events().entries(entry.build()).send().await?;
        anyhow::ensure!(out.failed_entry_count() == 0, "PutEvents failed: {out:?}");
        Ok(())
    }

    pub fn sqs_queue(&self) -> keyturn::queue::SqsQueue {
        keyturn::app::sqs_queue(&self.config, &self.clients)
    }

    /// Whether `user`'s access key `key` is active (`None`: the user has
    /// no such key, e.g. it was deleted).
    pub async fn key_status(&self, user: &str, key: &str) -> Option<bool> {
        let out = self.clients.iam.list_access_keys().user_name(user).send().await.unwrap();
        out.access_key_metadata().iter().find(|k| k.access_key_id() == Some(key)).map(|k| k.status() == Some(&aws_sdk_iam::types::StatusType::Active))
    }

    pub async fn user_keys(&self) -> Vec<KeyRef> {
        let out = self.clients.iam.list_access_keys().user_name(USER).send().await.unwrap();
        out.access_key_metadata()
            .iter()
            .map(|k| KeyRef {
                id: k.access_key_id().unwrap().to_string(),
                active: k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
                created_at: None,
            })
            .collect()
    }

    /// Wait until the saga is terminal.
    pub async fn wait_terminal(&self, saga_id: &str, timeout: Duration) -> Saga {
        let store = keyturn::store::Store::new(self.clients.dynamodb.clone(), "keyturn-sagas");
        let start = Instant::now();
        loop {
            let s = store.load(saga_id).await.unwrap().expect("saga exists");
            if s.saga.status.is_terminal() {
                return s.saga;
            }
            assert!(start.elapsed() < timeout, "saga {saga_id} not terminal after {timeout:?}: {:#?}", s.saga);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every saga in the table.
    pub async fn sagas(&self) -> Vec<Saga> {
        keyturn::store::Store::new(self.clients.dynamodb.clone(), "keyturn-sagas").list().await.unwrap().into_iter().map(|s| s.saga).collect()
    }

    /// Wait until at least `n` sagas exist and all have ended.
    pub async fn wait_sagas_done(&self, n: usize, timeout: Duration) -> Vec<Saga> {
        let start = Instant::now();
        loop {
            let all = self.sagas().await;
            if all.len() >= n && all.iter().all(|s| s.status.is_terminal()) {
                return all;
            }
            assert!(start.elapsed() < timeout, "expected {n} finished sagas, have {all:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drain notifications delivered to the SQS subscription: (subject, document, attributes).
    pub async fn notifications(&self, expect_at_least: usize, timeout: Duration) -> Vec<Notification> {
        drain(&self.notify_sqs, &self.notify_queue_url, expect_at_least, timeout)
            .await
            .into_iter()
            .map(|(body, _)| {
                let env: Value = serde_json::from_str(&body).expect("SNS envelope is JSON");
                let attrs = env["MessageAttributes"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v["Value"].as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                let doc: Value = serde_json::from_str(env["Message"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
                Notification { subject: env["Subject"].as_str().unwrap_or("").to_string(), document: doc, attributes: attrs, raw: body }
            })
            .collect()
    }

    /// Drain the chat messages (raw bodies) published on the chat topic.
    pub async fn chat_messages(&self, expect_at_least: usize, timeout: Duration) -> Vec<String> {
        drain(&self.notify_sqs, &self.chat_queue_url, expect_at_least, timeout).await.into_iter().map(|(b, _)| b).collect()
    }

    /// Drain the step queue's DLQ: (body, keyturn_reason attribute).
    pub async fn dlq(&self, expect_at_least: usize, timeout: Duration) -> Vec<(String, Option<String>)> {
        drain(&self.clients.sqs, &self.dlq_url, expect_at_least, timeout).await
    }

    /// Every raw DynamoDB item, rendered as text (binary attributes as bytes-as-lossy-UTF-8).
    pub async fn table_dump(&self) -> String {
        let store = keyturn::store::Store::new(self.clients.dynamodb.clone(), "keyturn-sagas");
        let items = store.raw_items().await.unwrap();
        let mut out = String::new();
        for item in items {
            for (k, v) in item {
                let text = match &v {
                    aws_sdk_dynamodb::types::AttributeValue::B(b) => String::from_utf8_lossy(b.as_ref()).into_owned(),
                    other => format!("{other:?}"),
                };
                out.push_str(&format!("{k}={text}\n"));
            }
        }
        out
    }
}

/// The `keyturn` binary built beside the running executable (`cargo build --bins`).
pub fn keyturn_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("keyturn");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// `keyturn --config <cfg> <args>` as a user runs it against `env`'s moto,
/// with `stdin` (if any) as its input: exit code, stdout, stderr.
pub fn cli(env: &TestEnv, cfg: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(keyturn_bin())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .envs(env.cli_env())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The notifications of one event kind (`event` attribute).
pub fn of_event<'a>(ns: &'a [Notification], event: &str) -> Vec<&'a Notification> {
    ns.iter().filter(|n| n.attributes.get("event").map(String::as_str) == Some(event)).collect()
}

#[derive(Debug, Clone)]
pub struct Notification {
    pub subject: String,
    pub document: Value,
    pub attributes: HashMap<String, String>,
    pub raw: String,
}

/// A queue `name` with its dead-letter queue `name-dlq` and a redrive policy
/// (5 receives), as the stack makes the step queues: (queue url, dlq url).
pub async fn queue_with_dlq(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<(String, String)> {
    let dlq = sqs.create_queue().queue_name(format!("{name}-dlq")).send().await?.queue_url.unwrap_or_default();
    let dlq_arn = queue_arn(sqs, &dlq).await?;
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#))
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    Ok((url, dlq))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let out = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    Ok(out.attributes.unwrap().get(&QueueAttributeName::QueueArn).unwrap().clone())
}

/// Wait until the queue at `url` holds no message that is visible or in
/// flight (delayed ones, e.g. a wake-up hours away, do not count): what was
/// sent to it has been received and acknowledged. Seen idle twice in a
/// row, 50 ms apart; fails after `timeout`.
pub async fn wait_queue_idle(sqs: &aws_sdk_sqs::Client, url: &str, timeout: Duration) {
    let start = Instant::now();
    let mut idle_reads = 0;
    loop {
        let a = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::All).send().await.unwrap();
        let attrs = a.attributes.unwrap_or_default();
        let get = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let busy = get(QueueAttributeName::ApproximateNumberOfMessages) + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        idle_reads = if busy == 0 { idle_reads + 1 } else { 0 };
        if idle_reads == 2 {
            return;
        }
        assert!(start.elapsed() < timeout, "queue {url} still has {busy} message(s) visible or in flight after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receive and delete messages until `expect_at_least` arrived or `timeout` passed.
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, expect_at_least: usize, timeout: Duration) -> Vec<(String, Option<String>)> {
    let start = Instant::now();
    let mut out = vec![];
    loop {
        let r = sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(1).message_attribute_names("All").send().await.unwrap();
        for m in r.messages() {
            let reason = m.message_attributes().and_then(|a| a.get("keyturn_reason")).and_then(|v| v.string_value()).map(str::to_string);
            out.push((m.body().unwrap_or("").to_string(), reason));
            sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
        if (out.len() >= expect_at_least && r.messages().is_empty()) || start.elapsed() > timeout {
            return out;
        }
    }
}

/// A worker running in this process until dropped or stopped.
pub struct RunningWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWorker {
    pub fn spawn<Q: Queue>(engine: Arc<Engine<Q>>, cfg: &keyturn::config::WorkerConfig) -> RunningWorker {
        Self::spawn_with_intake::<Q, keyturn::queue::SqsQueue>(engine, cfg, None)
    }

    /// A worker that also polls an intake queue.
    pub fn spawn_with_intake<Q: Queue, I: Queue>(engine: Arc<Engine<Q>>, cfg: &keyturn::config::WorkerConfig, intake: Option<Arc<I>>) -> RunningWorker {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cfg = cfg.clone();
        let join = tokio::spawn(async move {
            keyturn::worker::run(engine, &cfg, intake, async {
                let _ = rx.await;
            })
            .await
        });
        RunningWorker { stop: Some(tx), join: Some(join) }
    }

    /// Signal shutdown and wait for the worker to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            let _ = j.await;
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(j) = self.join.take() {
            j.abort();
        }
    }
}
