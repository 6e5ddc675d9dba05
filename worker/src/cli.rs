//! The `keyturn` command line. `main.rs` only parses and calls [`run`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::clock::{fmt_ms, parse_duration};
use crate::config::Config;
use crate::saga::{Saga, Status};
use crate::store::{Created, Stored};

/// keyturn rotates long-lived credentials held by outside services, as
/// durable sagas on SQS + DynamoDB.
///
/// Configuration comes from a TOML file or an SSM parameter or S3 object
/// (see docs/configuration.md).
/// AWS credentials, region and endpoints come from the standard AWS
/// environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...).
///
/// Exit codes: 0 succeeded; 1 the saga ended another way (failed,
/// compensated, refused, needs attention, rolled back; `init --check`: something
/// is missing); 2 usage or configuration error (also an unknown saga); 3 still
/// running when the wait ran out; 4 keyturn or AWS error (also no result within
/// --deadline); 5 refused in the saga's current state (e.g. rollback outside
/// the grace period, resolve against the evidence, a rotation held back by
/// quarantine or by a saga that needs attention).
#[derive(Debug, Parser)]
#[command(name = "keyturn", version, propagate_version = true)]
pub struct Cli {
    /// Configuration: a file path, `ssm:<parameter name>` (SSM Parameter
    /// Store) or `s3://<bucket>/<key>`. The worker picks up new versions at
    /// every sweep and on SIGHUP.
    #[arg(long, short, env = "KEYTURN_CONFIG", global = true, default_value = "keyturn.toml")]
    pub config: String,
    /// Log format on stderr (`json` for CloudWatch Logs Insights; Lambda can
    /// set it with KEYTURN_LOG_FORMAT).
    #[arg(long, global = true, value_enum, default_value = "text", env = "KEYTURN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// A one-shot command that has not finished after this long gives up
    /// (exit 4), e.g. against an endpoint that accepts connections but never
    /// answers; with --wait, the wait's --timeout comes on top. Not for
    /// `worker` and `lambda`.
    #[arg(long, global = true, env = "KEYTURN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Log at debug level on stderr (the full error chain of a failed AWS call).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the messages of a dead-letter queue with the reason each is there.
    /// Nothing is removed.
    List {
        /// Which dead-letter queue.
        #[arg(long, value_enum, default_value = "steps")]
        queue: QueueName,
        /// Print the messages as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to their queue (after fixing what put them there).
    Redrive {
        /// Which dead-letter queue.
        #[arg(long, value_enum, default_value = "steps")]
        queue: QueueName,
        /// Message ids to send back (from `keyturn dlq list`).
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Send back every message.
        #[arg(long)]
        all: bool,
    },
}

/// Which queue's DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueName {
    /// The step queue (saga steps).
    Steps,
    /// The priority step queue (emergencies, steps a person waits on).
    Priority,
    /// The intake queue (EventBridge events).
    Intake,
}

/// Which key a resolved saga keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeepArg {
    /// The target uses the new key: retire the old one.
    New,
    /// The target uses the old key: retire the new one.
    Old,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: poll the step queue and run saga steps until SIGTERM/Ctrl-C.
    Worker,
    /// Ask for a rotation of a configured credential (enqueues it; a worker runs it).
    ///
    /// A second request for a credential already being rotated returns the
    /// running saga instead of starting another.
    Rotate {
        /// Rotation id from the configuration (`[[rotation]] id`).
        rotation: String,
        /// Follow the saga's steps live; exit non-zero unless it succeeds.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long (e.g. 90s, 15m).
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
        /// SCIM token rotations: the creation date (YYYY-MM-DD, as the IAM
        /// Identity Center console lists it) of the token in use today. keyturn
        /// uses it at the end to tell you which token to delete.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        old_token_created: Option<u64>,
        /// SCIM token rotations: the ID of the token in use today, as the console lists it.
        #[arg(long, requires = "old_token_created", value_name = "ID")]
        old_token_id: Option<String>,
        /// Print one JSON document instead of text: `saga_id`, `exit_code` and `saga` (the record `status --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Hand keyturn a new credential you created by hand (an IAM Identity
    /// Center SCIM token) for a saga that is waiting for it.
    ///
    /// The token is read from a prompt that does not echo when standard input
    /// is a terminal, otherwise from standard input (e.g. `keyturn provide
    /// SAGA < token-file`), or from a Secrets Manager secret with
    /// --from-secret. It is never taken from the command line, where shell
    /// history and the process list would keep it. keyturn stores it only
    /// KMS-encrypted, erases it once it is saved in the target, then runs the
    /// target's test, saves it there only if the test passes, and checks the
    /// target.
    Provide {
        /// The saga waiting for the new token.
        saga_id: String,
        /// Read the token from this Secrets Manager secret (name or ARN).
        #[arg(long, value_name = "SECRET_ID")]
        from_secret: Option<String>,
        /// With --from-secret: the JSON key holding the token in the secret.
        #[arg(long, requires = "from_secret")]
        json_key: Option<String>,
        /// The creation date (YYYY-MM-DD) of the token in use today, if not
        /// given to `keyturn rotate`.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        old_token_created: Option<u64>,
        /// The ID of the token in use today, as the console lists it.
        #[arg(long, requires = "old_token_created", value_name = "ID")]
        old_token_id: Option<String>,
        /// Wait until the target took the token (or refused it) and print the outcome.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print one JSON document instead of text: `saga_id`, `exit_code` and `saga` (the record `status --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Confirm you deleted the old credential (SCIM token) a saga asked you
    /// to delete; this completes the rotation.
    Confirm {
        /// The saga that asked you to delete the old token.
        saga_id: String,
        /// Wait for the completion notice to be sent.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print one JSON document instead of text: `saga_id`, `exit_code` and `saga` (the record `status --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Show a saga's timeline (every step attempt, its outcome and error), or,
    /// given a rotation id, the rotation's quarantine state and recent sagas.
    Status {
        /// A saga id, or a rotation id from the configuration.
        saga_id: String,
        /// Print the saga as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List recent sagas and their states, newest first.
    List {
        /// How many sagas to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the sagas as a JSON array (the fields of `status --json`).
        #[arg(long)]
        json: bool,
    },
    /// Roll back during the grace period: reactivate the old key.
    ///
    /// Possible only after the old key was deactivated and before it is
    /// deleted. The target keeps the new key (its old secret cannot be put
    /// back); both keys end up active and the saga ends as rolled_back.
    Rollback {
        /// The saga in its grace period.
        saga_id: String,
        /// Wait for the worker to finish the rollback.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print one JSON document instead of text: `saga_id`, `exit_code` and `saga` (the record `status --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Resolve a saga that stopped in needs attention with both keys in place:
    /// say which key the target uses, and keyturn retires the other one the
    /// safe way (deactivate, grace period, last-use check, delete).
    ///
    /// keyturn first gathers the evidence (both keys' last use by the
    /// target's service since the saga stopped, which keys still exist, what
    /// the target reports) and refuses a choice the evidence contradicts,
    /// unless --force. `keyturn status <saga>` shows the latest evidence.
    Resolve {
        /// The saga that needs attention.
        saga_id: String,
        /// The key the target uses and that stays: `new` or `old`.
        #[arg(long, value_enum)]
        keep: KeepArg,
        /// Resolve even when the evidence says the target uses the other key.
        #[arg(long)]
        force: bool,
        /// Follow the saga until it ends (it includes the grace period).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this long.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print one JSON document instead of text: `saga_id`, `exit_code` and `saga` (the record `status --json` prints).
        #[arg(long)]
        json: bool,
    },
    /// Dry run: print what keyturn would do for an event, or for the key-age
    /// scan — which rotations would start, which keys would be created,
    /// deactivated and deleted, which targets patched — and change nothing.
    ///
    /// Reads IAM and the saga table only.
    Plan {
        /// An EventBridge event (JSON file) as it would arrive on the intake queue.
        #[arg(long, conflicts_with = "scan", required_unless_present = "scan")]
        event: Option<PathBuf>,
        /// The scheduled key-age scan of rotations with a [rotation.schedule].
        #[arg(long)]
        scan: bool,
        /// Print `{"plan": [lines]}` instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lambda mode: serve SQS event source mappings (step and intake queues)
    /// and scheduled `{"keyturn":"sweep"}` events through the Lambda runtime
    /// API. Also chosen automatically when run as a Lambda `bootstrap` with no
    /// arguments.
    Lambda,
    /// Lift a rotation's quarantine, so automatic triggers start it again.
    Release {
        /// Rotation id from the configuration.
        rotation: String,
        /// Print `{"rotation_id", "lifted"}` instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queues: what is there and why, and sending it back after a fix.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Preflight: check the deployed environment and every configured
    /// rotation, changing nothing; run it before the first rotation.
    ///
    /// Environment: AWS credentials, the table's key, indexes and TTL, the
    /// step and intake queues (dead-letter queue, redrive policy, visibility
    /// timeout against the lease), a KMS encrypt/decrypt round trip with
    /// keyturn's encryption context, the SNS topic and the EventBridge bus.
    /// Each rotation: its connectors' own checks (IAM: the user, its keys and
    /// whether a rotation could start, the member role; targets: the token,
    /// its scopes or permissions, the target readable) and IAM policy
    /// simulation of the AWS actions it needs (where IAM answers it).
    ///
    /// Exit code 0 only when every rotation could run now; 1 otherwise
    /// (each failure is printed with its fix); 2 for a configuration error.
    Doctor {
        /// Print the report as one JSON document (`ready`, `environment`, `rotations`).
        #[arg(long)]
        json: bool,
        /// The IAM role (or user) ARN whose permissions policy simulation
        /// checks, e.g. the stack's worker role when you run doctor with your
        /// own credentials. Default: the identity doctor runs as.
        #[arg(long, value_name = "ARN")]
        principal: Option<String>,
    },
    /// Create (or bring up to date) the AWS resources keyturn needs without
    /// the stack: the saga table with its indexes and TTL, the step, priority
    /// step and intake queues with their dead-letter queues, the
    /// notification topic and a KMS key; then print the `[aws]` section for
    /// keyturn.toml. Run again, it changes nothing that is already right.
    ///
    /// Reads no configuration file. AWS credentials and region come from the
    /// standard environment. With --check it changes nothing and exits 1 when
    /// something is missing.
    Init {
        /// Change nothing: list what is missing or different (exit 1 if anything is).
        #[arg(long)]
        check: bool,
        /// Name prefix: `<prefix>-sagas`, `<prefix>-steps`, `<prefix>-steps-dlq`,
        /// `<prefix>-steps-priority`, `<prefix>-intake`, `<prefix>-notifications`, `alias/<prefix>`.
        #[arg(long, default_value = "keyturn")]
        prefix: String,
        /// The saga table's name, if not `<prefix>-sagas` (e.g. a table made by hand).
        #[arg(long)]
        table: Option<String>,
        /// Visibility timeout of the queues; keep it equal to `[worker] visibility_timeout`.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        visibility_timeout: Duration,
        /// Receives before SQS itself moves a message to its dead-letter queue.
        #[arg(long, default_value_t = 5)]
        max_receive_count: u32,
    },
}

/// Logs go to stderr. `RUST_LOG` overrides the default level: `info` for
/// the worker, `warn` for one-shot commands (their output is on stdout).
pub fn init_tracing(format: LogFormat, command: &Command, verbose: bool) {
    use std::io::IsTerminal;
    let default = match command {
        _ if verbose => "keyturn=debug,info",
        Command::Worker | Command::Lambda => "info,aws_config=warn,aws_smithy_runtime=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

static JSON_OUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Human output, silenced when the command was asked for `--json`.
macro_rules! say {
    ($($t:tt)*) => {
        if !JSON_OUT.load(std::sync::atomic::Ordering::Relaxed) {
            println!($($t)*);
        }
    };
}

/// With `--json`, print the saga's document after a command: `saga_id`,
/// `exit_code` and `saga` (the record `status --json` prints). The schema
/// is stable: fields may be added, none renamed or removed.
async fn finish(store: &crate::store::Store, saga_id: &str, code: i32) -> anyhow::Result<i32> {
    if JSON_OUT.load(std::sync::atomic::Ordering::Relaxed) {
        let saga = store.load(saga_id).await?.map(|s| s.saga);
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"saga_id": saga_id, "exit_code": code, "saga": saga}))?);
    }
    Ok(code)
}

impl Command {
    fn wants_json(&self) -> bool {
        match self {
            Command::Rotate { json, .. }
            | Command::Provide { json, .. }
            | Command::Confirm { json, .. }
            | Command::Rollback { json, .. }
            | Command::Resolve { json, .. }
            | Command::Release { json, .. }
            | Command::Plan { json, .. }
            | Command::Doctor { json, .. } => *json,
            _ => false,
        }
    }
}

/// A usage or configuration mistake on the command line (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The command is not possible in the saga's current state (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The documented exit codes: the one table `keyturn --help`, docs/cli.md
/// and the tests share (tests/tests/docs.rs holds the three in step).
pub mod exit {
    pub const SUCCEEDED: i32 = 0;
    pub const ENDED_OTHERWISE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const TIMED_OUT: i32 = 3;
    pub const ERROR: i32 = 4;
    pub const REFUSED: i32 = 5;
    /// Every code with the words that begin its meaning in `--help` and in
    /// docs/cli.md's table.
    pub const TABLE: [(i32, &str); 6] = [
        (SUCCEEDED, "succeeded"),
        (ENDED_OTHERWISE, "the saga ended another way"),
        (USAGE, "usage or configuration error"),
        (TIMED_OUT, "still running when the wait ran out"),
        (ERROR, "keyturn or AWS error"),
        (REFUSED, "refused in the saga's current state"),
    ];
}

/// The exit code for an error `run` returned: configuration and usage
/// mistakes 2, refusals 5, everything else (AWS, network, keyturn itself) 4.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<crate::config::ConfigError>() || cause.is::<Usage>() {
            return exit::USAGE;
        }
        if cause.is::<Refusal>() {
            return exit::REFUSED;
        }
        if let Some(err) = cause.downcast_ref::<crate::error::Error>() {
            return match err {
                crate::error::Error::Config(_) => exit::USAGE,
                crate::error::Error::Refused { .. } => exit::REFUSED,
                _ => exit::ERROR,
            };
        }
    }
    exit::ERROR
}

impl Command {
    /// One-shot commands whose output is meant for a terminal or a pipe.
    pub fn prints_for_a_pipe(&self) -> bool {
        !matches!(self, Command::Worker | Command::Lambda)
    }
}

/// A one-shot command ran out of its `--deadline`: exit code 4.
#[derive(Debug, thiserror::Error)]
#[error("no result within {}: the command gave up (--deadline); is AWS_ENDPOINT_URL right and the network reachable? A longer --deadline gives it more time", humantime(*.0))]
pub struct Deadline(pub Duration);

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Command {
    /// How long the command may take in all: `deadline`, plus the wait's
    /// `--timeout` with `--wait`; `None` for the worker and Lambda.
    pub fn budget(&self, deadline: Duration) -> Option<Duration> {
        match self {
            Command::Worker | Command::Lambda => None,
            Command::Rotate { wait: true, timeout, .. }
            | Command::Provide { wait: true, timeout, .. }
            | Command::Confirm { wait: true, timeout, .. }
            | Command::Rollback { wait: true, timeout, .. }
            | Command::Resolve { wait: true, timeout, .. } => Some(deadline + *timeout),
            _ => Some(deadline),
        }
    }
}

/// Run a parsed command within its budget ([`Command::budget`]). Returns
/// the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command.budget(cli.deadline) {
        None => run_command(cli).await,
        Some(budget) => tokio::time::timeout(budget, run_command(cli)).await.unwrap_or_else(|_| Err(Deadline(budget).into())),
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<i32> {
    JSON_OUT.store(cli.command.wants_json(), std::sync::atomic::Ordering::Relaxed);
    if let Command::Init { check, prefix, table, visibility_timeout, max_receive_count } = &cli.command {
        return init(*check, prefix, table.clone(), *visibility_timeout, *max_receive_count).await;
    }
    let source = crate::config_source::ConfigSource::parse(&cli.config).map_err(Usage)?;
    // A configuration in SSM or S3 is read with the standard AWS chain
    // (region from AWS_REGION); the file's own [aws] region applies after.
    let bootstrap = if source.needs_aws() { Some(crate::aws::load(None).await) } else { None };
    let (cfg, version) = match source.load(bootstrap.as_ref()).await {
        Ok(c) => c,
        Err(crate::config_source::LoadError::Invalid(e)) => return Err(e.into()),
        Err(crate::config_source::LoadError::Fetch(e)) => return Err(e.into()),
    };
    if let Command::CheckConfig = cli.command {
        println!(
            "{} ({version}): ok ({} rotation(s): {})",
            source.describe(),
            cfg.rotations.len(),
            cfg.rotations.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
        );
        return Ok(0);
    }
    let sdk = crate::aws::load(cfg.aws.region.as_deref()).await;
    if matches!(cli.command, Command::Status { .. } | Command::List { .. }) {
        let store = crate::store::Store::new(aws_sdk_dynamodb::Client::new(&sdk), &cfg.aws.table).with_retention(cfg.worker.retention.0);
        return table_command(cli.command, &cfg, store).await;
    }
    let clients = crate::aws::Clients::new(sdk);
    if let Command::Doctor { json, principal } = cli.command {
        if let Some(p) = &principal {
            if crate::accounts::role_account(p).is_none() && !crate::doctor::is_user_arn(p) {
                return Err(Usage(format!("--principal {p:?} is not an IAM role or user ARN (arn:aws:iam::<account>:role/<name>)")).into());
            }
        }
        let http = crate::connectors::http_client();
        let secrets = crate::secrets::SecretResolver::new(clients.secrets.clone());
        let built = crate::app::build_rotations(&cfg, &clients, &secrets, &http, &Arc::default());
        let rotations: Vec<_> = cfg.rotations.iter().filter_map(|r| built.built.get(&r.id).cloned()).collect();
        let report = crate::doctor::run(&cfg, &clients, &rotations, principal.as_deref()).await;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("keyturn doctor: {} ({version}); nothing was changed\n", source.describe());
            print!("{}", crate::doctor::render(&report));
        }
        return Ok(if report.ready { exit::SUCCEEDED } else { exit::ENDED_OTHERWISE });
    }
    let engine = Arc::new(crate::app::engine(&cfg, &clients, crate::app::worker_id()));
    match cli.command {
        Command::CheckConfig | Command::Status { .. } | Command::List { .. } | Command::Doctor { .. } | Command::Init { .. } => {
            unreachable!("answered above")
        }
        Command::Worker => {
            let intake = crate::app::intake_queue(&cfg, &clients).map(Arc::new);
            let watch = crate::worker::ConfigWatch::new(source.clone(), bootstrap.clone(), cfg.clone(), version);
            let watch = tokio::spawn(crate::worker::watch_config(engine.clone(), watch));
            crate::worker::run(engine, &cfg.worker, intake, crate::worker::shutdown_signal()).await;
            watch.abort();
            Ok(0)
        }
        Command::Rotate { rotation, wait, timeout, old_token_created, old_token_id, .. } => {
            if cfg.rotation(&rotation).is_none() {
                return Err(Usage(format!(
                    "no rotation {rotation:?} in {}; configured: {}",
                    cli.config,
                    cfg.rotations.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
                ))
                .into());
            }
            // A person following the rotation (`--wait`) does not wait behind a backlog.
            let req = crate::commands::Request {
                trigger: "manual".into(),
                old: old_token(old_token_created, old_token_id),
                person_waits: wait,
                ..Default::default()
            };
            let saga_id = match engine.request_with(&rotation, req).await.context("requesting the rotation")? {
                Created::New(id) => {
                    say!("rotation {rotation}: saga {id} started");
                    id
                }
                Created::Existing(id) => {
                    if let Some(s) = engine.store.load(&id).await?.filter(|s| s.saga.unresolved()) {
                        let v = s
                            .saga
                            .attention
                            .as_ref()
                            .and_then(|a| a.verdict.as_ref())
                            .map(|v| v.reason.clone())
                            .unwrap_or_else(|| "no evidence checked yet".into());
                        return Err(Refusal(format!(
                            "rotation {rotation} not started: saga {id} needs attention with both keys in place and holds the credential (evidence: {v}). Resolve it first: keyturn resolve {id} --keep new|old"
                        ))
                        .into());
                    }
                    say!("rotation {rotation}: already in progress as saga {id}");
                    id
                }
                Created::Skipped(reason) => return Err(Refusal(format!("rotation {rotation} not started: {reason}")).into()),
            };
            if !wait {
                say!("follow it with: keyturn status {saga_id}");
                return finish(&engine.store, &saga_id, 0).await;
            }
            let code = follow(&engine.store, &saga_id, timeout).await?;
            finish(&engine.store, &saga_id, code).await
        }
        Command::Provide { saga_id, from_secret, json_key, old_token_created, old_token_id, wait, timeout, .. } => {
            let token = match from_secret {
                Some(secret_id) => {
                    let r = crate::secrets::SecretRef::SecretsManager { secret_id: secret_id.clone(), json_key };
                    crate::secrets::SecretResolver::new(clients.secrets.clone())
                        .resolve(&r)
                        .await
                        .with_context(|| format!("reading secret {secret_id}"))?
                }
                None => read_token(&saga_id)?,
            };
            let token = clean_token(&token)?;
            let next = engine.provide(&saga_id, &token, old_token(old_token_created, old_token_id)).await?;
            drop(token);
            say!(
                "saga {saga_id}: new token received ({}) and stored encrypted; keyturn now tests it in the target and saves it only if the test passes",
                next.new_key.as_deref().unwrap_or("")
            );
            if !wait {
                say!("follow it with: keyturn status {saga_id}");
                return finish(&engine.store, &saga_id, 0).await;
            }
            let code = follow_until(&engine.store, &saga_id, timeout, |s| s.awaits_person()).await?;
            finish(&engine.store, &saga_id, code).await
        }
        Command::Confirm { saga_id, wait, timeout, .. } => {
            engine.confirm(&saga_id).await?;
            say!("saga {saga_id}: deletion of the old token confirmed; the rotation completes now");
            if wait {
                let code = follow(&engine.store, &saga_id, timeout).await?;
                return finish(&engine.store, &saga_id, code).await;
            }
            finish(&engine.store, &saga_id, 0).await
        }
        Command::Release { rotation, .. } => {
            let lifted = engine.release(&rotation).await?;
            if lifted {
                say!("rotation {rotation}: quarantine lifted; automatic triggers start it again");
            } else {
                say!("rotation {rotation}: was not quarantined");
            }
            if JSON_OUT.load(std::sync::atomic::Ordering::Relaxed) {
                println!("{}", serde_json::json!({"rotation_id": rotation, "lifted": lifted}));
            }
            Ok(0)
        }
        Command::Lambda => {
            let intake = crate::app::intake_queue(&cfg, &clients);
            let (queue_url, intake_url, jitter) = (cfg.aws.queue_url.clone(), cfg.aws.intake_queue_url.clone(), cfg.worker.scan_jitter.0);
            let priority_url = cfg.aws.priority_queue_url.clone();
            let engine = engine.clone();
            let intake = Arc::new(intake);
            // The scheduled sweep also looks for a new configuration version.
            let watch = Arc::new(tokio::sync::Mutex::new(crate::worker::ConfigWatch::new(source.clone(), bootstrap.clone(), cfg.clone(), version)));
            lambda_runtime::run(lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<serde_json::Value>| {
                let (engine, intake, queue_url, intake_url, watch) =
                    (engine.clone(), intake.clone(), queue_url.clone(), intake_url.clone(), watch.clone());
                let priority_url = priority_url.clone();
                async move {
                    if crate::lambda::is_sweep(&ev.payload) {
                        watch.lock().await.check(&engine, "sweep").await;
                    }
                    let iq = intake.as_ref().as_ref().zip(intake_url.as_deref());
                    crate::lambda::handle_invocation(&engine, &queue_url, priority_url.as_deref(), iq, &ev.payload, jitter)
                        .await
                        .map_err(lambda_runtime::Error::from)
                }
            }))
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))?;
            Ok(0)
        }
        Command::Dlq { command } => {
            let pick = |q: QueueName| -> anyhow::Result<crate::queue::SqsQueue> {
                match q {
                    QueueName::Steps => Ok(crate::app::sqs_queue(&cfg, &clients)),
                    QueueName::Priority => {
                        crate::app::priority_queue(&cfg, &clients).ok_or_else(|| Usage(format!("{} has no aws.priority_queue_url", cli.config)).into())
                    }
                    QueueName::Intake => {
                        crate::app::intake_queue(&cfg, &clients).ok_or_else(|| Usage(format!("{} has no aws.intake_queue_url", cli.config)).into())
                    }
                }
            };
            match command {
                DlqCommand::List { queue, json } => {
                    let q = pick(queue)?;
                    let letters = q.dlq_messages(Duration::from_secs(30)).await?;
                    for d in &letters {
                        q.release(d).await?;
                    }
                    if json {
                        println!("{}", serde_json::to_string_pretty(&letters)?);
                    } else {
                        println!("{} message(s) in {}", letters.len(), q.dlq_url);
                        for d in &letters {
                            let body: String = d.body.chars().take(160).collect();
                            println!(
                                "{}  sent {}  received {}x\n  reason: {}\n  body:   {body}",
                                d.message_id,
                                d.sent_at.map(fmt_ms).unwrap_or_default(),
                                d.receive_count,
                                d.reason
                            );
                        }
                    }
                    Ok(0)
                }
                DlqCommand::Redrive { queue, ids, all } => {
                    let q = pick(queue)?;
                    let letters = q.dlq_messages(Duration::from_secs(30)).await?;
                    let mut sent = 0;
                    for d in &letters {
                        if all || ids.contains(&d.message_id) {
                            q.redrive(d).await?;
                            sent += 1;
                        } else {
                            q.release(d).await?;
                        }
                    }
                    let missing: Vec<&String> = ids.iter().filter(|id| !letters.iter().any(|d| &&d.message_id == id)).collect();
                    println!("sent {sent} message(s) back to {}", q.url);
                    if !missing.is_empty() {
                        eprintln!("not found in the dead-letter queue: {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
                        return Ok(1);
                    }
                    Ok(0)
                }
            }
        }
        Command::Plan { event, scan, .. } => {
            let lines = match (event, scan) {
                (Some(path), _) => {
                    let body = std::fs::read_to_string(&path).map_err(|e| Usage(format!("--event {}: cannot read: {e}", path.display())))?;
                    engine.plan_event(&body).await?
                }
                (None, _) => engine.plan_scan().await?,
            };
            say!("plan (dry run, nothing changed):");
            for l in &lines {
                say!("{l}");
            }
            if JSON_OUT.load(std::sync::atomic::Ordering::Relaxed) {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plan": lines}))?);
            }
            Ok(0)
        }
        Command::Resolve { saga_id, keep, force, wait, timeout, .. } => {
            let keep = match keep {
                KeepArg::New => crate::saga::Keep::New,
                KeepArg::Old => crate::saga::Keep::Old,
            };
            let by = format!("keyturn resolve --keep {}{} by {}", keep.as_str(), if force { " --force" } else { "" }, whoami());
            let (next, verdict) = engine.resolve(&saga_id, keep, force, &by).await?;
            say!("saga {saga_id}: resolved, keeping the {} key (evidence: {})", keep.as_str(), verdict.reason);
            say!(
                "  next: {}",
                match (keep, next.step) {
                    (_, crate::saga::Step::Finalize) => "the other key is already gone; the saga ends now".to_string(),
                    (crate::saga::Keep::New, _) => "deactivate the old key, wait the grace period, check its last use, delete it".to_string(),
                    (crate::saga::Keep::Old, _) => "deactivate the new key, wait the grace period, check its last use, delete it".to_string(),
                }
            );
            if !wait {
                say!("follow it with: keyturn status {saga_id}");
                return finish(&engine.store, &saga_id, 0).await;
            }
            let code = follow(&engine.store, &saga_id, timeout).await?;
            finish(&engine.store, &saga_id, code).await
        }
        Command::Rollback { saga_id, wait, timeout, .. } => {
            let next = engine.rollback(&saga_id).await?;
            let which = if next.step == crate::saga::Step::RestoreNew { "new" } else { "old" };
            say!("rollback of saga {saga_id} requested: the {which} key will be reactivated");
            if wait {
                let code = follow(&engine.store, &saga_id, timeout).await?;
                return finish(&engine.store, &saga_id, code).await;
            }
            finish(&engine.store, &saga_id, 0).await
        }
    }
}

/// `keyturn init`: no configuration file; the standard AWS environment.
async fn init(check: bool, prefix: &str, table: Option<String>, visibility_timeout: Duration, max_receive_count: u32) -> anyhow::Result<i32> {
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || prefix.len() > 40 {
        return Err(Usage(format!("--prefix {prefix:?}: use 1 to 40 letters, digits, '-' or '_'")).into());
    }
    if visibility_timeout > Duration::from_secs(43_200) {
        return Err(Usage("--visibility-timeout: SQS allows at most 12h".into()).into());
    }
    let sdk = crate::aws::load(None).await;
    let clients = crate::init::Clients {
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        kms: aws_sdk_kms::Client::new(&sdk),
    };
    let plan = crate::init::Plan::new(prefix, table, visibility_timeout, max_receive_count);
    let report = crate::init::run(&clients, &plan, check).await?;
    for i in &report.items {
        let state = match &i.outcome {
            crate::init::Outcome::Found => "ok".to_string(),
            crate::init::Outcome::Created => "created".to_string(),
            crate::init::Outcome::Updated(what) => format!("updated: {}", what.join("; ")),
            crate::init::Outcome::Missing(what) => format!("MISSING: {}", what.join("; ")),
        };
        println!("{:<38} {:<28} {state}", i.what, i.name);
    }
    if check {
        if report.missing() {
            println!("\nsomething is missing: `keyturn init` (without --check) creates or fixes it");
            return Ok(exit::ENDED_OTHERWISE);
        }
        println!("\neverything keyturn needs is there");
    } else if report.changed() {
        println!("\ncreated or updated what was missing");
    } else if report.missing() {
        println!("\nnothing changed, but something needs you (see above)");
    } else {
        println!("\nnothing changed: everything was already there");
    }
    println!("\n# paste into keyturn.toml:\n{}", report.aws_section(sdk.region().map(|r| r.as_ref())));
    Ok(if report.missing() { exit::ENDED_OTHERWISE } else { exit::SUCCEEDED })
}

/// `status` and `list` read only the saga table: they build a DynamoDB
/// client and nothing else.
async fn table_command(command: Command, cfg: &Config, store: crate::store::Store) -> anyhow::Result<i32> {
    match command {
        Command::Status { saga_id, json } if cfg.rotation(&saga_id).is_some() => {
            let (health, _) = store.health(&saga_id).await?;
            let recent: Vec<Saga> = store.recent_of(&saga_id, 5).await?.into_iter().map(|s| s.saga).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"rotation_id": saga_id, "health": health, "recent_sagas": recent}))?);
            } else {
                println!("rotation {saga_id}: {}", quarantine_line(&health));
                println!("  consecutive failed sagas: {}", health.consecutive_failures);
                for s in recent {
                    println!("  {}  {:<15}  {}  {}", s.saga_id, s.status.as_str(), fmt_ms(s.created_at), s.trigger);
                }
            }
            Ok(0)
        }
        Command::Status { saga_id, json } => {
            let s = store.load(&saga_id).await?.ok_or_else(|| Usage(format!("no saga {saga_id} (and no rotation of that id in the configuration)")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s.saga)?);
            } else {
                print!("{}", timeline(&s));
            }
            Ok(0)
        }
        Command::List { limit, json } => {
            let all = store.recent(limit).await?;
            let rows: Vec<&Saga> = all.iter().map(|s| &s.saga).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<36}  {:<16}  {:<15}  {:<14}  started", "saga", "rotation", "status", "step");
                for s in rows {
                    println!("{:<36}  {:<16}  {:<15}  {:<14}  {}", s.saga_id, s.rotation_id, s.status.as_str(), s.step.as_str(), fmt_ms(s.created_at));
                }
                for r in &cfg.rotations {
                    let (h, _) = store.health(&r.id).await?;
                    if h.quarantine.is_some() {
                        println!("rotation {}: {}", r.id, quarantine_line(&h));
                    }
                }
            }
            Ok(0)
        }
        _ => unreachable!("only status and list read the table alone"),
    }
}

/// Who ran a command, for the saga's history.
fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "an operator".into())
}

fn quarantine_line(h: &crate::quarantine::Health) -> String {
    match &h.quarantine {
        None => "not quarantined".into(),
        Some(q) if q.disabled => format!("DISABLED after quarantine (reason {}, since {}); `keyturn release` lifts it", q.reason, fmt_ms(q.began)),
        Some(q) => format!("QUARANTINED (reason {}, since {}); next automatic attempt {}", q.reason, fmt_ms(q.began), fmt_ms(q.next_attempt)),
    }
}

fn attempt_line(a: &crate::saga::Attempt) -> String {
    let mut line = format!("  {}  {:<15} #{:<2} {}", fmt_ms(a.at), a.step.as_str(), a.attempt, a.outcome);
    if let Some(c) = &a.code {
        line.push_str(&format!("  {c}: {}", a.message.as_deref().unwrap_or("")));
    }
    line
}

/// The saga's timeline as text.
pub fn timeline(s: &Stored) -> String {
    let g = &s.saga;
    let mut out = format!(
        "saga {}  rotation {}  status {}  step {}\n  trigger {}  started {}  updated {}\n",
        g.saga_id,
        g.rotation_id,
        g.status.as_str(),
        g.step,
        g.trigger,
        fmt_ms(g.created_at),
        fmt_ms(g.updated_at)
    );
    out.push_str(&format!(
        "  old key(s): {}  new key: {}  target: {}\n",
        if g.old_keys.is_empty() { "none".into() } else { g.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ") },
        g.new_key.as_deref().unwrap_or("none"),
        g.target.as_str()
    ));
    if let Some(r) = &g.request {
        out.push_str(&format!(
            "  requested by {} ({}), idempotency key {}, correlation id {}\n",
            r.requester,
            r.reason,
            r.idempotency_key,
            g.correlation()
        ));
    }
    if let Some(e) = &g.exposure {
        let at = |t: Option<u64>| t.map(fmt_ms).unwrap_or_else(|| "no".into());
        out.push_str(&format!(
            "  EXPOSED key {} ({} key): event seen {}, inactive {}, deleted {}{}\n",
            e.key_id,
            if e.role == crate::saga::ExposedRole::Old { "old" } else { "new" },
            fmt_ms(e.seen_at),
            at(e.inactive_at),
            at(e.deleted_at),
            if e.follow_up { "; a fresh rotation follows" } else { "" }
        ));
    }
    if let Some(f) = &g.failure {
        out.push_str(&format!("  failure at {}: {}: {}\n", f.step, f.code, f.message));
    }
    for c in &g.compensations {
        out.push_str(&format!("  compensation: {c}\n"));
    }
    if let (true, Some(a)) = (g.unresolved(), &g.attention) {
        out.push_str(&format!(
            "  needs attention since {}, holding the credential; evidence checks: {}, next {}\n",
            fmt_ms(a.since),
            a.checks,
            fmt_ms(a.next_check)
        ));
        match &a.verdict {
            Some(v) => out.push_str(&format!(
                "  evidence ({}): {} -> {}\n",
                fmt_ms(v.at),
                v.reason,
                v.keep.map(|k| format!("keyturn resolve {} --keep {}", g.saga_id, k.as_str())).unwrap_or_else(|| "unclear; keyturn keeps watching".into())
            )),
            None => out.push_str(&format!("  evidence: not checked yet; keyturn resolve {} --keep new|old if you know\n", g.saga_id)),
        }
    }
    for a in &g.history {
        out.push_str(&attempt_line(a));
        out.push('\n');
    }
    out
}

/// Parse `YYYY-MM-DD` (UTC midnight) into milliseconds; no dates in the future.
pub fn parse_date(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid date {s:?}: expected YYYY-MM-DD, e.g. 2025-12-01");
    if s.len() != 10 || s.as_bytes()[4] != b'-' || s.as_bytes()[7] != b'-' {
        return Err(bad());
    }
    let dt = aws_smithy_types::DateTime::from_str(&format!("{s}T00:00:00Z"), aws_smithy_types::date_time::Format::DateTime).map_err(|_| bad())?;
    let ms = dt.to_millis().map_err(|_| bad())?;
    if ms < 0 {
        return Err(bad());
    }
    if ms as u64 > crate::clock::now_ms() {
        return Err(format!("date {s} is in the future: give the creation date of the token in use today"));
    }
    Ok(ms as u64)
}

fn old_token(created: Option<u64>, id: Option<String>) -> Option<crate::saga::KeyRef> {
    created.map(|ms| crate::saga::KeyRef {
        id: id.unwrap_or_else(|| format!("created {}", crate::clock::fmt_date(ms))),
        active: true,
        created_at: Some(ms),
    })
}

/// The token from a no-echo prompt (terminal) or standard input (pipe, file).
fn read_token(saga_id: &str) -> anyhow::Result<secrecy::SecretString> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        let t =
            rpassword::prompt_password(format!("New token for saga {saga_id} (input is not shown): ")).context("reading the token from the terminal")?;
        return Ok(secrecy::SecretString::from(t));
    }
    let mut buf = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut buf).context("reading the token from standard input")?;
    Ok(secrecy::SecretString::from(buf))
}

/// A token is one line of printable text; surrounding whitespace (a file's
/// trailing newline) is not part of it. Errors never include it.
pub fn clean_token(token: &secrecy::SecretString) -> anyhow::Result<secrecy::SecretString> {
    use crate::handover::TokenProblem;
    use secrecy::ExposeSecret;
    // The same rules as a token pasted into a handover secret.
    match crate::handover::check_token(token.expose_secret()) {
        Ok(t) => Ok(secrecy::SecretString::from(t.to_string())),
        Err(TokenProblem::Empty) => Err(Usage("no token given: paste it at the prompt, pipe it on standard input, or use --from-secret".into()).into()),
        Err(TokenProblem::TooLong(n)) => Err(Usage(format!("the token is {n} bytes long, more than any SCIM token; was the wrong file given?")).into()),
        Err(TokenProblem::NotOneWord) => {
            Err(Usage("the token contains spaces, line breaks or control characters; give the token alone, exactly as the console showed it".into())
                .into())
        }
    }
}

/// Print a saga's steps as they happen until it ends; exit code 0 only on success.
pub async fn follow(store: &crate::store::Store, saga_id: &str, timeout: Duration) -> anyhow::Result<i32> {
    follow_until(store, saga_id, timeout, |_| false).await
}

/// Like [`follow`], but also stop (exit 0) as soon as `enough` holds.
pub async fn follow_until(store: &crate::store::Store, saga_id: &str, timeout: Duration, enough: impl Fn(&Saga) -> bool) -> anyhow::Result<i32> {
    let start = Instant::now();
    let mut printed = 0;
    loop {
        let s = store.load(saga_id).await?.with_context(|| format!("no saga {saga_id}"))?;
        for a in s.saga.history.iter().skip(printed) {
            say!("{}", attempt_line(a));
        }
        printed = s.saga.history.len();
        if s.saga.status.is_terminal() {
            say!("saga {saga_id}: {}", s.saga.status.as_str());
            if let Some(f) = &s.saga.failure {
                say!("  failed at {}: {}: {}", f.step, f.code, f.message);
            }
            return Ok(if s.saga.status == Status::Succeeded { exit::SUCCEEDED } else { exit::ENDED_OTHERWISE });
        }
        if enough(&s.saga) {
            say!("saga {saga_id}: {} at step {}: waiting for a person again (see the notification)", s.saga.status.as_str(), s.saga.step);
            return Ok(0);
        }
        if start.elapsed() > timeout {
            eprintln!("saga {saga_id} still {} at step {} after {:?}; it continues in the background", s.saga.status.as_str(), s.saga.step, timeout);
            return Ok(exit::TIMED_OUT);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
