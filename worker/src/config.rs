//! The configuration file.
//!
//! One TOML file (`--config PATH` or `KEYTURN_CONFIG`) names the AWS
//! resources and declares the rotations. Every table rejects unknown keys, so
//! a typo is an error rather than a silently ignored setting. Secrets are
//! never written in the file: a secret is a *reference* to an environment
//! variable or a Secrets Manager secret, and an inline string is refused.
//!
//! Errors name the file, the key and the problem, e.g.
//! `keyturn.toml: rotation "auth0-ses": target.base_url: must be https (or http on a loopback address)`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::connectors::check::{check_region, is_account_id, one_line, valid_iam_name};
use crate::connectors::{SourceSpec, TargetSpec};

use serde::Deserialize;

use crate::clock::Dur;
use crate::saga::Policy;

/// The whole file.
#[derive(Debug, Clone)]
pub struct Config {
    pub aws: AwsConfig,
    pub worker: WorkerConfig,
    pub requests: RequestsConfig,
    pub exposure: ExposureConfig,
    pub rotations: Vec<RotationConfig>,
}

/// `[requests]`: the rotation request API (messages on the intake queue,
/// `keyturn.requests` events).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsConfig {
    /// A request repeating an idempotency key within this window starts
    /// nothing and is answered with the first request's saga.
    pub idempotency_window: Dur,
    /// Who may send requests (unset: anyone who can reach the intake queue;
    /// docs/security.md). Each entry is a 12-digit AWS account id (a
    /// `keyturn.requests` event put by that account), an IAM user's or
    /// role's unique id as SQS reports it in `SenderId` (`AIDA…`; `AROA…`
    /// for every session of a role), or `AROA…:<session>`. Anyone else's
    /// request goes to the intake DLQ and changes nothing.
    pub allowed_senders: Option<Vec<String>>,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        RequestsConfig { idempotency_window: Dur(Duration::from_secs(86_400)), allowed_senders: None }
    }
}

/// One `[requests] allowed_senders` entry: an account id, or a unique id
/// (`AIDA`/`AROA` and 12 to 124 more uppercase letters and digits),
/// optionally `:<role session name>`. An ARN is refused: SQS reports the
/// sender's unique id, not its ARN.
pub fn check_sender(e: &str) -> Result<(), String> {
    if is_account_id(e) {
        return Ok(());
    }
    if e.starts_with("arn:") {
        return Err(format!("{:?} is an ARN; SQS names a sender by its unique id: give the role's RoleId (aws iam get-role --query Role.RoleId, AROA…) or the user's UserId (AIDA…), or a 12-digit account id for keyturn.requests events", one_line(e, 80)));
    }
    let (id, session) = match e.split_once(':') {
        Some((id, s)) => (id, Some(s)),
        None => (e, None),
    };
    let id_ok = (id.starts_with("AIDA") || id.starts_with("AROA"))
        && (16..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let session_ok = session.is_none_or(|s| id.starts_with("AROA") && (2..=64).contains(&s.len()) && valid_iam_name(s));
    if id_ok && session_ok {
        Ok(())
    } else {
        Err(format!("{:?} is neither a 12-digit account id nor an IAM unique id (AIDA… for a user, AROA… or AROA…:<session> for a role)", one_line(e, 80)))
    }
}

/// `[exposure]`: AWS Health `AWS_RISK_CREDENTIALS_EXPOSED` events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureConfig {
    /// An exposed key that no rotation covers: deactivate it (its consumer
    /// breaks) instead of only reporting it.
    pub deactivate_uncovered: bool,
}

/// The file as TOML gives it: the connector tables are still raw, because
/// each connector parses and validates its own ([`crate::connectors`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    aws: AwsConfig,
    #[serde(default)]
    worker: WorkerConfig,
    #[serde(default)]
    requests: RequestsConfig,
    #[serde(default)]
    exposure: ExposureConfig,
    #[serde(default, rename = "rotation")]
    rotations: Vec<RawRotation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    id: String,
    source: toml::Table,
    target: toml::Table,
    #[serde(default)]
    policy: PolicyConfig,
    schedule: Option<ScheduleConfig>,
}

/// `[aws]`: the resources keyturn uses. Endpoints come from the standard
/// `AWS_ENDPOINT_URL` environment variable; credentials from the standard
/// provider chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Region of the queue, table, topic and key. Defaults to the standard chain.
    pub region: Option<String>,
    /// Step queue URL.
    pub queue_url: String,
    /// Dead-letter queue of the step queue: poison messages go here.
    pub dlq_url: String,
    /// Saga table name (partition key `pk`, string).
    pub table: String,
    /// SNS topic for notifications.
    pub topic_arn: String,
    /// KMS key (id, ARN or alias) that encrypts stored secrets.
    pub kms_key_id: String,
    /// Intake queue receiving EventBridge events (Security Hub, AWS Health).
    /// Optional: without it the worker runs no intake loop.
    pub intake_queue_url: Option<String>,
    /// Dead-letter queue of the intake queue: rejected events go here.
    pub intake_dlq_url: Option<String>,
    /// The priority step queue: steps that must not wait behind a backlog
    /// (emergency sagas of exposed keys, steps a person waits on) travel
    /// here, and every worker polls it with capacity of its own. Optional:
    /// without it every step uses `queue_url`.
    pub priority_queue_url: Option<String>,
    /// Dead-letter queue of the priority queue.
    pub priority_dlq_url: Option<String>,
    /// EventBridge bus (name or ARN) that outcome events are put on;
    /// unset: the account's `default` bus.
    pub event_bus: Option<String>,
    /// SNS topic that gets every notification also as a chat message (the
    /// custom-notification format of AWS's chat integration, for Slack and
    /// Microsoft Teams channels; docs/operators.md). Unset: no chat messages.
    #[serde(default)]
    pub chat_topic_arn: Option<String>,
    /// Name of the role keyturn assumes in member accounts
    /// (`infra/member-role.yaml`): a rotation whose `source.account_id` is
    /// not the worker's own account acts through
    /// `arn:<partition>:iam::<account_id>:role/<member_role_name>`, unless
    /// its source names a `role_arn`. Unset: member accounts need `role_arn`.
    pub member_role_name: Option<String>,
    /// External ID presented when assuming a member-account role (the
    /// member template's `ExternalId`). Not a secret.
    pub external_id: Option<String>,
}

/// `[worker]`: how the worker process runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Steps handled at once by one process.
    pub concurrency: usize,
    /// SQS long-poll wait (at most 20 s).
    pub wait_time: Dur,
    /// Visibility timeout given to received messages; extended by heartbeats
    /// while a step runs.
    pub visibility_timeout: Dur,
    /// How long a worker owns a saga's step before another may take over.
    pub lease: Dur,
    /// How often the sweeper looks for stuck sagas.
    pub sweep_interval: Dur,
    /// A saga overdue by this much is re-driven by the sweeper.
    pub sweep_after: Dur,
    /// On SIGTERM/Ctrl-C, how long in-flight steps may take to finish.
    pub shutdown_grace: Dur,
    /// How often the worker checks key ages for rotations with a `max_age`.
    pub scan_interval: Dur,
    /// Due rotations start at a random delay up to this, so many keys due on
    /// the same day do not rotate at once.
    pub scan_jitter: Dur,
    /// How long a finished saga is kept for audits before DynamoDB TTL may
    /// delete it (its `expires_at`). Sagas that need attention unresolved
    /// are kept until they end.
    pub retention: Dur,
    /// Intake events (EventBridge, requests) handled at once, besides
    /// `concurrency` steps: a backlog of steps never holds a trigger back.
    pub intake_concurrency: usize,
    /// Priority-lane steps handled at once, besides `concurrency` and
    /// `intake_concurrency`: kept free for emergencies, never taken by
    /// ordinary steps.
    pub priority_concurrency: usize,
    /// How often the long-running worker reads the registry of emergencies
    /// in flight to take over one whose worker died (`0s`: never; then an
    /// emergency waits for its message to come back, about a second).
    pub emergency_watch: Dur,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            wait_time: Dur(Duration::from_secs(20)),
            visibility_timeout: Dur(Duration::from_secs(120)),
            lease: Dur(Duration::from_secs(120)),
            sweep_interval: Dur(Duration::from_secs(60)),
            sweep_after: Dur(Duration::from_secs(120)),
            shutdown_grace: Dur(Duration::from_secs(30)),
            scan_interval: Dur(Duration::from_secs(3600)),
            scan_jitter: Dur(Duration::from_secs(600)),
            retention: Dur(crate::store::DEFAULT_RETENTION),
            intake_concurrency: 2,
            priority_concurrency: 2,
            emergency_watch: Dur(Duration::from_millis(100)),
        }
    }
}

/// One `[[rotation]]`: which credential, which consumer, which policy. The
/// source and target are the connectors' own validated configurations.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    pub id: String,
    pub source: Arc<dyn SourceSpec>,
    pub target: Arc<dyn TargetSpec>,
    pub policy: PolicyConfig,
    /// Age-based rotation; absent: no scheduled rotation.
    pub schedule: Option<ScheduleConfig>,
}

/// `[rotation.schedule]`: rotate before a key reaches this age (e.g. 80d,
/// ahead of Security Hub IAM.3's 90 days), and/or this long before the
/// credential in use expires (a source that knows its expiry, e.g. an Entra
/// client secret's `endDateTime`). At least one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub max_age: Option<Dur>,
    pub before_expiry: Option<Dur>,
}

impl ScheduleConfig {
    fn check(&self) -> Result<(), String> {
        if self.max_age.is_none() && self.before_expiry.is_none() {
            return Err("needs max_age (e.g. \"80d\") or before_expiry (e.g. \"30d\"), or both".into());
        }
        if [self.max_age, self.before_expiry].iter().flatten().any(|d| d.0.is_zero()) {
            return Err("max_age and before_expiry must be longer than 0s".into());
        }
        Ok(())
    }
}

/// `[rotation.policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Between deactivating the old key and deleting it.
    pub grace_period: Dur,
    /// How long the new key may take to authenticate.
    pub propagation_timeout: Dur,
    /// Attempts of one step before it counts as failed.
    pub max_attempts: u32,
    /// First retry delay (doubles, with jitter).
    pub retry_base: Dur,
    /// Longest retry delay.
    pub retry_cap: Dur,
    /// Consecutive failed sagas before the rotation is quarantined.
    pub quarantine_after: u32,
    /// How long quarantine may last before automatic triggers are disabled.
    pub quarantine_disable_after: Dur,
    /// Credentials made by a person: time between reminders.
    pub reminder_every: Dur,
    /// Credentials made by a person: how long they have for each step
    /// (creating the new one, deleting the old one) before keyturn gives up.
    pub person_deadline: Dur,
    /// A saga stopped in needs attention with both keys in place: how often
    /// keyturn looks at the evidence (both keys' last use, the target).
    pub evidence_every: Dur,
    /// On clear evidence, finish such a saga without waiting for
    /// `keyturn resolve` (retire the unused key: deactivate, grace, usage check, delete).
    pub auto_resolve: bool,
    /// A key AWS reports exposed, once replaced: `delete` it, or
    /// `keep_inactive` for forensics.
    pub exposed_key: ExposedKeyAction,
}

/// `[rotation.policy] exposed_key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExposedKeyAction {
    #[default]
    Delete,
    KeepInactive,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = Policy::default();
        PolicyConfig {
            grace_period: Dur(Duration::from_millis(p.grace_period)),
            propagation_timeout: Dur(Duration::from_millis(p.propagation_timeout)),
            max_attempts: p.max_attempts,
            retry_base: Dur(Duration::from_millis(p.retry_base)),
            retry_cap: Dur(Duration::from_millis(p.retry_cap)),
            quarantine_after: 3,
            quarantine_disable_after: Dur(Duration::from_secs(28 * 86_400)),
            reminder_every: Dur(Duration::from_millis(p.reminder_every)),
            person_deadline: Dur(Duration::from_millis(p.person_deadline)),
            evidence_every: Dur(Duration::from_millis(p.evidence_every)),
            auto_resolve: p.auto_resolve,
            exposed_key: ExposedKeyAction::Delete,
        }
    }
}

impl PolicyConfig {
    pub fn to_policy(&self) -> Policy {
        Policy {
            max_attempts: self.max_attempts,
            retry_base: self.retry_base.0.as_millis() as u64,
            retry_cap: self.retry_cap.0.as_millis() as u64,
            propagation_timeout: self.propagation_timeout.0.as_millis() as u64,
            grace_period: self.grace_period.0.as_millis() as u64,
            reminder_every: self.reminder_every.0.as_millis() as u64,
            person_deadline: self.person_deadline.0.as_millis() as u64,
            evidence_every: self.evidence_every.0.as_millis() as u64,
            auto_resolve: self.auto_resolve,
            keep_exposed_inactive: self.exposed_key == ExposedKeyAction::KeepInactive,
            // The source says so when the rotation is built (`connectors::build`).
            old_dies_at_issue: false,
        }
    }
}

/// A configuration problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Config::parse(&text).map_err(err)
    }

    /// Parse and validate text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| one_line_error(text, &e))?;
        let mut rotations = Vec::new();
        for r in raw.rotations {
            let at = |table: &str, p: crate::connectors::ConfigProblem| match p.key {
                Some(k) => format!("rotation {:?}: {table}.{k}: {}", r.id, p.message),
                None => format!("rotation {:?}: {table}: {}", r.id, p.message),
            };
            let source = crate::connectors::parse_source(r.source).map_err(|p| at("source", p))?;
            let target = crate::connectors::parse_target(r.target).map_err(|p| at("target", p))?;
            crate::connectors::check_pair(source.as_ref(), target.as_ref()).map_err(|m| format!("rotation {:?}: target.kind: {m}", r.id))?;
            crate::connectors::check_written_back(source.as_ref(), target.as_ref()).map_err(|m| format!("rotation {:?}: target: {m}", r.id))?;
            if let Some(s) = &r.schedule {
                s.check().map_err(|m| format!("rotation {:?}: schedule: {m}", r.id))?;
            }
            rotations.push(RotationConfig { id: r.id, source, target, policy: r.policy, schedule: r.schedule });
        }
        let cfg = Config { aws: raw.aws, worker: raw.worker, requests: raw.requests, exposure: raw.exposure, rotations };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        self.validate_aws()?;
        self.validate_worker()?;
        self.validate_rotations()
    }

    /// `[aws]` and `[requests]`.
    fn validate_aws(&self) -> Result<(), String> {
        let a = &self.aws;
        for (key, v) in [
            ("aws.queue_url", &a.queue_url),
            ("aws.dlq_url", &a.dlq_url),
            ("aws.table", &a.table),
            ("aws.topic_arn", &a.topic_arn),
            ("aws.kms_key_id", &a.kms_key_id),
        ] {
            if v.trim().is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
        }
        if let Some(r) = &a.region {
            check_region(r).map_err(|m| format!("aws.region: {m}"))?;
        }
        if let Some(t) = &a.chat_topic_arn {
            if !(t.starts_with("arn:") && t.split(':').nth(2) == Some("sns") && t.split(':').count() == 6) {
                return Err(format!("aws.chat_topic_arn: {t:?} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"));
            }
        }
        if a.event_bus.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err("aws.event_bus: must not be empty (leave it out for the default bus)".into());
        }
        let window = self.requests.idempotency_window.0;
        if window < Duration::from_secs(60) || window > Duration::from_secs(30 * 86_400) {
            return Err("requests.idempotency_window: must be between 1m and 30d".into());
        }
        for e in self.requests.allowed_senders.iter().flatten() {
            check_sender(e).map_err(|m| format!("requests.allowed_senders: {m}"))?;
        }
        if a.intake_queue_url.is_some() != a.intake_dlq_url.is_some() {
            return Err("aws.intake_dlq_url: set both aws.intake_queue_url and aws.intake_dlq_url, or neither".into());
        }
        if a.priority_queue_url.is_some() != a.priority_dlq_url.is_some() {
            return Err("aws.priority_dlq_url: set both aws.priority_queue_url and aws.priority_dlq_url, or neither".into());
        }
        if let Some(n) = &a.member_role_name {
            if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)) {
                return Err("aws.member_role_name: must be an IAM role name (1-64 letters, digits and +=,.@_-), e.g. \"keyturn-member\"".into());
            }
        }
        if let Some(x) = &a.external_id {
            if x.len() < 2 || x.len() > 1224 || !x.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c)) {
                return Err("aws.external_id: must be 2-1224 letters, digits and +=,.@:/_- (as sts:AssumeRole requires)".into());
            }
        }
        Ok(())
    }

    /// `[worker]`.
    fn validate_worker(&self) -> Result<(), String> {
        let w = &self.worker;
        if w.concurrency == 0 || w.concurrency > 256 {
            return Err("worker.concurrency: must be between 1 and 256".into());
        }
        if w.intake_concurrency == 0 || w.intake_concurrency > 64 {
            return Err("worker.intake_concurrency: must be between 1 and 64".into());
        }
        if w.priority_concurrency == 0 || w.priority_concurrency > 64 {
            return Err("worker.priority_concurrency: must be between 1 and 64".into());
        }
        if w.retention.0 < Duration::from_secs(86_400) {
            return Err("worker.retention: keep finished sagas at least 1d (the default is 400d)".into());
        }
        if w.wait_time.0 > Duration::from_secs(20) {
            return Err("worker.wait_time: SQS long polling waits at most 20s".into());
        }
        if w.visibility_timeout.0 < Duration::from_secs(10) || w.visibility_timeout.0 > Duration::from_secs(12 * 3600) {
            return Err("worker.visibility_timeout: must be between 10s and 12h".into());
        }
        if w.lease.0 < Duration::from_secs(1) {
            return Err("worker.lease: must be at least 1s".into());
        }
        if !w.emergency_watch.0.is_zero() && (w.emergency_watch.0 < Duration::from_millis(10) || w.emergency_watch.0 > Duration::from_secs(10)) {
            return Err("worker.emergency_watch: must be 0s (off) or between 10ms and 10s".into());
        }
        if w.scan_interval.0 < Duration::from_secs(1) {
            return Err("worker.scan_interval: must be at least 1s".into());
        }
        Ok(())
    }

    /// Every `[[rotation]]`: ids, one rotation per credential, policies.
    fn validate_rotations(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        let mut creds = HashSet::new();
        for r in &self.rotations {
            let at = |key: &str, msg: &str| format!("rotation {:?}: {key}: {msg}", r.id);
            if r.id.is_empty() || !r.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("rotation {:?}: id: use letters, digits, '-' and '_' only", r.id));
            }
            if !ids.insert(r.id.clone()) {
                return Err(at("id", "declared twice"));
            }
            if !creds.insert(r.credential_key()) {
                return Err(at("source", "another rotation already rotates this credential"));
            }
            let p = &r.policy;
            if p.quarantine_after == 0 {
                return Err(at("policy.quarantine_after", "must be at least 1"));
            }
            if p.max_attempts == 0 {
                return Err(at("policy.max_attempts", "must be at least 1"));
            }
            if p.retry_base.0.is_zero() || p.retry_cap.0 < p.retry_base.0 {
                return Err(at("policy.retry_cap", "must be at least policy.retry_base, which must be above zero"));
            }
            if p.propagation_timeout.0.is_zero() {
                return Err(at("policy.propagation_timeout", "must be above zero"));
            }
            if p.reminder_every.0 < Duration::from_secs(1) {
                return Err(at("policy.reminder_every", "must be at least 1s"));
            }
            if p.person_deadline.0 < Duration::from_secs(1) {
                return Err(at("policy.person_deadline", "must be at least 1s"));
            }
            if p.evidence_every.0 < Duration::from_secs(1) || p.evidence_every.0 > Duration::from_secs(7 * 86_400) {
                return Err(at("policy.evidence_every", "must be between 1s and 7d"));
            }
        }
        Ok(())
    }

    pub fn rotation(&self, id: &str) -> Option<&RotationConfig> {
        self.rotations.iter().find(|r| r.id == id)
    }
}

impl RotationConfig {
    /// The per-credential lock key: two rotations of one credential are one saga.
    pub fn credential_key(&self) -> String {
        self.source.credential_key()
    }
}

/// A TOML or schema error as one line: where (the table, and for a
/// `[[rotation]]` its id), which key, what is wrong, and the line number —
/// instead of the multi-line excerpt `toml` prints. Never echoes a value.
fn one_line_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    if let Some(field) = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        return missing_key(text, e.span(), field);
    }
    let Some(span) = e.span() else { return msg };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    // The key: before `=` on the error's line when the error points at a
    // value, else the name the error points at.
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let key: String = match text[line_start..start].split_once('=') {
        Some((k, _)) => k.trim().to_string(),
        None => text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect(),
    };
    // The table the error is in: the last header above it.
    let mut table = String::new();
    let mut rotation = None;
    let mut rotations_seen = 0usize;
    for l in text[..start].lines() {
        let t = l.trim();
        if t.starts_with("[[rotation]]") {
            rotations_seen += 1;
            rotation = Some(rotations_seen - 1);
            table.clear();
        } else if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = h.trim().to_string();
            if !table.starts_with("rotation") {
                rotation = None;
            }
        }
    }
    let id = rotation.and_then(|i| {
        let v: toml::Table = text.parse().ok()?;
        v.get("rotation")?.as_array()?.get(i)?.get("id")?.as_str().map(str::to_string)
    });
    let mut wher = match (rotation, id) {
        (Some(_), Some(id)) => format!("rotation {id:?}: "),
        (Some(i), None) => format!("rotation #{}: ", i + 1),
        (None, _) => String::new(),
    };
    let table = table.strip_prefix("rotation.").unwrap_or(if table == "rotation" { "" } else { &table }).to_string();
    let what = if msg.starts_with("unknown field") {
        let expected = msg.split_once("expected").map(|(_, x)| format!(" (expected{x})")).unwrap_or_default();
        format!("unknown key{expected}")
    } else {
        msg
    };
    match (table.is_empty(), key.is_empty()) {
        (false, false) => wher.push_str(&format!("{table}.{key}: ")),
        (false, true) => wher.push_str(&format!("{table}: ")),
        (true, false) => wher.push_str(&format!("{key}: ")),
        (true, true) => {}
    }
    format!("{wher}{what} (line {line_no})")
}

/// A required key is absent: name it with the table that lacks it and the
/// line that table begins on (toml's span covers the table, or the whole
/// document for a top-level key).
fn missing_key(text: &str, span: Option<std::ops::Range<usize>>, field: &str) -> String {
    let span = span.unwrap_or(0..text.len());
    let (start, end) = (span.start.min(text.len()), span.end.min(text.len()));
    // The last header at or above the span's first line is the table.
    let line_end = text[start..].find('\n').map(|i| start + i).unwrap_or(text.len());
    let mut header = None;
    let mut rotations = 0usize;
    let mut offset = 0usize;
    for (i, l) in text[..line_end].lines().enumerate() {
        let t = l.trim();
        if t.starts_with("[[rotation]]") {
            rotations += 1;
        }
        if t.starts_with('[') && offset <= line_end {
            let h = if t.starts_with("[[rotation]]") { format!("[[rotation]] #{rotations}") } else { t.split(']').next().unwrap_or(t).to_string() + "]" };
            header = Some((h, i + 1));
        }
        offset += l.len() + 1;
    }
    let whole_document = start == 0 && end >= text.trim_end().len();
    match header {
        Some((h, line)) if !whole_document || start > 0 => format!("{h}: missing key `{field}` (the table begins on line {line})"),
        _ if field == "aws" => "no [aws] table: keyturn needs [aws] with queue_url, dlq_url, table, topic_arn and kms_key_id \
             (keyturn init prints it; see docs/configuration.md)"
            .into(),
        _ => format!("missing top-level key `{field}`"),
    }
}

/// Configuration snippets the crate's unit tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    /// An `[aws]` table with placeholder values.
    pub const AWS: &str = r#"
[aws]
queue_url = "q"
dlq_url = "d"
table = "t"
topic_arn = "arn"
kms_key_id = "k"
"#;

    /// A complete `scim_token` → `entra_provisioning` rotation.
    pub const SCIM_ROTATION: &str = r#"
[[rotation]]
id = "entra-scim"
source = { kind = "scim_token", region = "us-east-1" }
[rotation.target]
kind = "entra_provisioning"
tenant_id = "t-1"
client_id = "c-1"
client_secret = { secrets_manager = "keyturn/entra", json_key = "client_secret" }
service_principal_id = "sp-1"
job_id = "AWSSingleSignOn.abc"
scim_endpoint = "https://scim.us-east-1.amazonaws.com/abc/scim/v2/"
[rotation.policy]
reminder_every = "12h"
"#;
}

#[cfg(test)]
mod tests {
    use super::fixtures::SCIM_ROTATION as SCIM;
    use super::*;
    use crate::clock::parse_duration;

    const GOOD: &str = r#"
[aws]
queue_url = "http://localhost/q"
dlq_url = "http://localhost/dlq"
table = "keyturn-sagas"
topic_arn = "arn:aws:sns:eu-west-1:123456789012:keyturn"
kms_key_id = "alias/keyturn"

[[rotation]]
id = "auth0-ses"
source = { kind = "iam_access_key", user_name = "auth0-ses-sender" }
[rotation.target]
kind = "auth0_email_provider"
domain = "example.eu.auth0.com"
client_id = "abc"
client_secret = { env = "KEYTURN_AUTH0_CLIENT_SECRET" }
ses_region = "eu-west-1"
[rotation.policy]
grace_period = "0s"
"#;

    /// `[aws] chat_topic_arn` names the chat topic; anything but an SNS topic ARN is refused.
    #[test]
    fn the_chat_topic_is_an_sns_topic_arn() {
        assert_eq!(Config::parse(GOOD).unwrap().aws.chat_topic_arn, None);
        let with = |v: &str| GOOD.replace("kms_key_id = \"alias/keyturn\"", &format!("kms_key_id = \"alias/keyturn\"\nchat_topic_arn = \"{v}\""));
        let c = Config::parse(&with("arn:aws:sns:eu-west-1:123456789012:keyturn-chat")).unwrap();
        assert_eq!(c.aws.chat_topic_arn.as_deref(), Some("arn:aws:sns:eu-west-1:123456789012:keyturn-chat"));
        for bad in ["keyturn-chat", "arn:aws:sqs:eu-west-1:123456789012:q", "arn:aws:sns:eu-west-1:123456789012:t:sub-id"] {
            let e = Config::parse(&with(bad)).unwrap_err();
            assert!(e.contains("aws.chat_topic_arn"), "{bad}: {e}");
        }
    }

    /// `[rotation.schedule]` takes `max_age`, `before_expiry` or both; not neither.
    #[test]
    fn a_schedule_needs_max_age_or_before_expiry() {
        let with = |lines: &str| Config::parse(&format!("{GOOD}[rotation.schedule]\n{lines}\n"));
        let c = with("before_expiry = \"30d\"").unwrap();
        let s = c.rotations[0].schedule.as_ref().unwrap();
        assert_eq!((s.max_age, s.before_expiry.map(|d| d.0)), (None, Some(parse_duration("30d").unwrap())));
        assert!(with("max_age = \"80d\"\nbefore_expiry = \"30d\"").is_ok());
        let e = with("").unwrap_err();
        assert!(e.contains("rotation \"auth0-ses\": schedule: needs max_age"), "{e}");
        let e = with("max_age = \"80d\"\nbefore_expiry = \"0s\"").unwrap_err();
        assert!(e.contains("longer than 0s"), "{e}");
    }

    #[test]
    fn parses_complete_example() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.rotations.len(), 1);
        assert_eq!(c.worker.concurrency, 4);
        let r = &c.rotations[0];
        assert_eq!(r.credential_key(), "iam_access_key:auth0-ses-sender");
        assert_eq!(r.policy.to_policy().grace_period, 0);
        assert_eq!(r.target.kind(), "auth0_email_provider");
        assert!(format!("{:?}", r.target).contains(r#"client_secret: Env("KEYTURN_AUTH0_CLIENT_SECRET")"#), "{:?}", r.target);
    }

    #[test]
    fn scim_rotation_parses_and_pairs_only_with_entra() {
        let c = Config::parse(&format!("{GOOD}{SCIM}")).unwrap();
        let r = c.rotation("entra-scim").unwrap();
        assert_eq!(r.credential_key(), "scim_token:any:us-east-1");
        let p = r.policy.to_policy();
        assert_eq!((p.reminder_every, p.person_deadline), (12 * 3_600_000, 7 * 86_400_000));
        let crossed = SCIM.replace(r#"kind = "scim_token", region = "us-east-1""#, r#"kind = "iam_access_key", user_name = "u""#);
        assert!(Config::parse(&format!("{GOOD}{crossed}"))
            .unwrap_err()
            .contains("target.kind: target kind entra_provisioning takes source kind scim_token, not iam_access_key"));
        let bad_region = SCIM.replace("region = \"us-east-1\"", "region = \"Virginia\"");
        assert!(Config::parse(&format!("{GOOD}{bad_region}")).unwrap_err().contains("source.region"));
        let plain = SCIM.replace("https://scim", "http://scim");
        assert!(Config::parse(&format!("{GOOD}{plain}")).unwrap_err().contains("target.scim_endpoint: must be https"));
        let orphan = SCIM.replace("[rotation.policy]", "run_timeout = \"5m\"\n[rotation.policy]");
        assert!(Config::parse(&format!("{GOOD}{orphan}")).unwrap_err().contains("target.run_timeout: applies only with restart_job = true"));
        let long = SCIM.replace("[rotation.policy]", "restart_job = true\nrun_timeout = \"2h\"\n[rotation.policy]");
        assert!(Config::parse(&format!("{GOOD}{long}")).unwrap_err().contains("between 1s and 1h"));
        let zero = SCIM.replace("\"12h\"", "\"0s\"");
        assert!(Config::parse(&format!("{GOOD}{zero}")).unwrap_err().contains("policy.reminder_every"));
    }

    #[test]
    fn inline_secret_is_refused() {
        let bad = GOOD.replace(r#"{ env = "KEYTURN_AUTH0_CLIENT_SECRET" }"#, r#""s3cr3t""#);
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("inline secrets are not allowed"), "{e}");
        assert!(e.contains("client_secret"), "names the key: {e}");
        assert!(!e.contains("s3cr3t"), "does not echo the secret: {e}");
    }

    #[test]
    fn schema_errors_are_one_line_with_table_rotation_key_and_line() {
        let bad = GOOD.replace("grace_period = \"0s\"", "grace = \"1d\"");
        let e = Config::parse(&bad).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("rotation \"auth0-ses\": policy.grace: unknown key (expected one of `grace_period`"), "{e}");
        assert!(e.ends_with(&format!("(line {})", bad.lines().position(|l| l.starts_with("grace =")).unwrap() + 1)), "{e}");
        let bad = format!("{GOOD}[worker]\nconcurency = 4\n");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.starts_with("worker.concurency: unknown key (expected one of `concurrency`"), "{e}");
        let bad = GOOD.replace("kms_key_id = \"alias/keyturn\"", "kms_key_id = 7");
        let e = Config::parse(&bad).unwrap_err();
        assert!(!e.contains('\n') && e.starts_with("aws.kms_key_id: invalid type"), "{e}");
    }

    #[test]
    fn a_missing_key_is_named_with_its_table_and_line() {
        let bad = format!("# comment\n\n{}", GOOD.replace("table = \"keyturn-sagas\"\n", ""));
        assert!(!bad.contains("table ="), "the test removes the key");
        let e = Config::parse(&bad).unwrap_err();
        let header = bad.lines().position(|l| l.trim() == "[aws]").unwrap() + 1;
        assert_eq!(e, format!("[aws]: missing key `table` (the table begins on line {header})"));
        let bad = GOOD.replace("id = \"auth0-ses\"\n", "");
        let e = Config::parse(&bad).unwrap_err();
        let header = bad.lines().position(|l| l.trim() == "[[rotation]]").unwrap() + 1;
        assert_eq!(e, format!("[[rotation]] #1: missing key `id` (the table begins on line {header})"));
        for empty in ["", "\n# nothing yet\n"] {
            let e = Config::parse(empty).unwrap_err();
            assert!(e.starts_with("no [aws] table: keyturn needs [aws] with queue_url, dlq_url, table, topic_arn and kms_key_id"), "{e}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = GOOD.replace("client_id = \"abc\"", "client_id = \"abc\"\nclient_sekret = 1");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("client_sekret"), "{e}");
    }

    #[test]
    fn semantic_errors_name_rotation_and_key() {
        let bad = GOOD.replace("[rotation.policy]", "base_url = \"http://example.com\"\n[rotation.policy]");
        let e = Config::parse(&bad).unwrap_err();
        assert_eq!(e, "rotation \"auth0-ses\": target.base_url: must be https (or http on a loopback address)");
        let dup = format!("{GOOD}\n{}", &GOOD[GOOD.find("[[rotation]]").unwrap()..]);
        assert!(Config::parse(&dup).unwrap_err().contains("declared twice"));
    }

    /// Issue 20, item 4: each value that could send a secret elsewhere is
    /// refused, naming the key.
    #[test]
    fn values_that_could_send_secrets_elsewhere_are_refused() {
        for (from, to, key) in [
            ("domain = \"example.eu.auth0.com\"", "domain = \"example.eu.auth0.com@evil.example\"", "target.domain: must be a bare DNS host name"),
            ("domain = \"example.eu.auth0.com\"", "domain = \"evil.example?x=\"", "target.domain: must be a bare DNS host name"),
            ("domain = \"example.eu.auth0.com\"", "domain = \"169.254.169.254\"", "target.domain: must be a bare DNS host name"),
            ("domain = \"example.eu.auth0.com\"", "domain = \"example.eu.auth0.com:8443\"", "target.domain: must be a bare DNS host name"),
            ("domain = \"example.eu.auth0.com\"", "domain = \"evil.example/x\"", "target.domain: must be a bare DNS host name"),
            ("domain = \"example.eu.auth0.com\"", "domain = \"evil.example#\"", "target.domain: must be a bare DNS host name"),
            (
                "[rotation.policy]",
                "base_url = \"https://169.254.169.254/latest\"\n[rotation.policy]",
                "target.base_url: must not point at a link-local or cloud metadata address",
            ),
            ("[rotation.policy]", "base_url = \"https://[fd00:ec2::254]/\"\n[rotation.policy]", "target.base_url: must not point at a link-local"),
            ("[rotation.policy]", "base_url = \"https://u:p@example.com/\"\n[rotation.policy]", "target.base_url: must not carry user info"),
            ("[rotation.policy]", "base_url = \"https://example.com/?x=1\"\n[rotation.policy]", "target.base_url: must not have a query"),
            ("ses_region = \"eu-west-1\"", "ses_region = \"x/../evil\"", "target.ses_region: must be an AWS region"),
            (
                "KEYTURN_AUTH0_CLIENT_SECRET",
                "AWS_SECRET_ACCESS_KEY",
                "target.client_secret: an `env` reference must name a variable starting with KEYTURN_",
            ),
            ("KEYTURN_AUTH0_CLIENT_SECRET", "KEYTURN_", "target.client_secret: an `env` reference"),
            ("KEYTURN_AUTH0_CLIENT_SECRET", "keyturn_lower", "target.client_secret: an `env` reference"),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let e = Config::parse(&GOOD.replace(from, to)).unwrap_err();
            assert!(e.starts_with(&format!("rotation \"auth0-ses\": {key}")), "{to}: {e}");
        }
        let e = Config::parse(&GOOD.replace("kms_key_id = \"alias/keyturn\"", "kms_key_id = \"alias/keyturn\"\nregion = \"x/../evil\"")).unwrap_err();
        assert!(e.starts_with("aws.region: must be an AWS region"), "{e}");
        // What stays allowed: a loopback fake over http, a custom https host with a path.
        for ok in ["http://127.0.0.1:8080", "http://[::1]:1/", "http://localhost:9", "https://login.example.com/auth0"] {
            let c = GOOD.replace("[rotation.policy]", &format!("base_url = \"{ok}\"\n[rotation.policy]"));
            assert!(Config::parse(&c).is_ok(), "{ok}: {:?}", Config::parse(&c).err());
        }
        let scim = SCIM.replace("tenant_id = \"t-1\"", "tenant_id = \"../t\"");
        assert!(Config::parse(&format!("{GOOD}{scim}")).unwrap_err().contains("target.tenant_id: must be an id"));
        let scim = SCIM.replace("job_id = \"AWSSingleSignOn.abc\"", "job_id = \"..\"");
        assert!(Config::parse(&format!("{GOOD}{scim}")).unwrap_err().contains("target.job_id: must be an id"));
    }

    #[test]
    fn bad_duration_is_explained() {
        let bad = GOOD.replace("\"0s\"", "\"7 days\"");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("unit must be one of"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_on_any_text(text in ".*") {
            let _ = Config::parse(&text);
        }

        #[test]
        fn parse_never_panics_when_a_value_is_replaced(line in 0usize..30, value in "[ -~]{0,20}") {
            // Replace one value of the good file with arbitrary printable text:
            // an error naming the problem, or a valid file, never a panic.
            let lines: Vec<&str> = GOOD.lines().collect();
            let i = line % lines.len();
            let mutated: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(j, l)| match (j == i, l.split_once(" = ")) {
                    (true, Some((k, _))) => format!("{k} = {value}"),
                    _ => l.to_string(),
                })
                .collect();
            if let Err(e) = Config::parse(&mutated.join("\n")) {
                proptest::prop_assert!(!e.is_empty());
            }
        }

        #[test]
        fn durations_parse_or_explain(s in "[0-9]{0,25}(ms|s|m|h|d|x|)") {
            match parse_duration(&s) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(e.contains("duration")),
            }
        }
    }

    #[test]
    fn load_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/keyturn.toml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/keyturn.toml: cannot read"));
    }
    #[test]
    fn user_names_must_be_iam_names() {
        let bad = GOOD.replace(r#"user_name = "auth0-ses-sender""#, r#"user_name = "auth0\nsender""#);
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("user_name") && e.contains("+=,.@_-"), "{e}");
        assert!(Config::parse(&GOOD.replace("auth0-ses-sender", "auth0 sender")).is_err());
        assert!(Config::parse(&GOOD.replace("auth0-ses-sender", "a+b=c,d.e@f_g-h")).is_ok());
    }

    #[test]
    fn allowed_senders_take_account_ids_and_unique_ids_only() {
        let with = |list: &str| Config::parse(&format!("{GOOD}\n[requests]\nallowed_senders = {list}\n"));
        let c = with(r#"["123456789012", "AIDAEXAMPLEUSER00001", "AROAEXAMPLEROLE00001:ci-deploy"]"#).unwrap();
        assert_eq!(c.requests.allowed_senders.as_ref().map(Vec::len), Some(3));
        assert_eq!(Config::parse(GOOD).unwrap().requests.allowed_senders, None, "unset: not checked");
        let arn = with(r#"["arn:aws:iam::123456789012:role/ci"]"#).unwrap_err().to_string();
        assert!(arn.contains("requests.allowed_senders") && arn.contains("RoleId"), "{arn}");
        for bad in [r#"["12345"]"#, r#"["aida-lower"]"#, r#"["AIDAEXAMPLEUSER00001:s"]"#, r#"["AROAEXAMPLEROLE00001:a b"]"#] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
