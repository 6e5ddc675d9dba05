//! Wiring: configuration + AWS clients → an [`Engine`] on SQS.

use std::collections::HashMap;
use std::sync::Arc;

use crate::accounts::{Accounts, HomeCell};
use crate::aws::Clients;
use crate::config::Config;
use crate::connectors;
use crate::engine::{Engine, Rotations};
use crate::notify::Notifier;
use crate::queue::{Queue, SqsQueue};
use crate::seal::Sealer;
use crate::secrets::SecretResolver;
use crate::securityhub::SecurityHub;
use crate::store::Store;

/// Build the engine a worker (or the CLI) runs.
pub fn engine(cfg: &Config, clients: &Clients, worker_id: String) -> Engine<SqsQueue> {
    let e = engine_with(cfg, clients, worker_id, sqs_queue(cfg, clients));
    match priority_queue(cfg, clients) {
        Some(p) => e.with_priority(p),
        None => e,
    }
}

/// The priority step queue, when the configuration names one.
pub fn priority_queue(cfg: &Config, clients: &Clients) -> Option<SqsQueue> {
    match (&cfg.aws.priority_queue_url, &cfg.aws.priority_dlq_url) {
        (Some(url), Some(dlq)) => Some(SqsQueue { client: clients.sqs.clone(), url: url.clone(), dlq_url: dlq.clone() }),
        _ => None,
    }
}

/// The step queue named by the configuration.
pub fn sqs_queue(cfg: &Config, clients: &Clients) -> SqsQueue {
    SqsQueue { client: clients.sqs.clone(), url: cfg.aws.queue_url.clone(), dlq_url: cfg.aws.dlq_url.clone() }
}

/// The notifier: the topic, the outcome events' bus, and the chat topic if configured.
fn notifier(cfg: &Config, clients: &Clients) -> Notifier {
    let n = Notifier::new(clients.sns.clone(), &cfg.aws.topic_arn)
        .with_events(clients.events.clone(), cfg.aws.event_bus.clone().unwrap_or_else(|| "default".into()));
    match &cfg.aws.chat_topic_arn {
        Some(chat) => n.with_chat(chat),
        None => n,
    }
}

/// Build an engine on any [`Queue`] (tests wrap SQS to record or duplicate messages).
pub fn engine_with<Q: Queue>(cfg: &Config, clients: &Clients, worker_id: String, queue: Q) -> Engine<Q> {
    engine_on(cfg, clients, worker_id, queue, crate::clock::system())
}

/// Build an engine on any [`Queue`] whose every part (jobs, table,
/// connectors, member-account sessions) reads time from `clock`.
pub fn engine_on<Q: Queue>(cfg: &Config, clients: &Clients, worker_id: String, queue: Q, clock: crate::clock::SharedClock) -> Engine<Q> {
    let http = connectors::http_client();
    let secrets = SecretResolver::new(clients.secrets.clone());
    // The home account is asked once per process, not once per reload.
    let home = Arc::new(HomeCell::default());
    let rotations = build_rotations(cfg, clients, &secrets, &http, &home, &clock);
    let build_clients = clients.clone();
    let build_clock = clock.clone();
    Engine {
        store: Store::new(clients.dynamodb.clone(), &cfg.aws.table).with_retention(cfg.worker.retention.0).with_clock(clock.clone()),
        queue,
        priority: None,
        sealer: Sealer::new(clients.kms.clone(), &cfg.aws.kms_key_id),
        secretsmanager: clients.secrets.clone(),
        notifier: notifier(cfg, clients),
        iam: clients.iam.clone(),
        idempotency_window: cfg.requests.idempotency_window.0,
        deactivate_uncovered: cfg.exposure.deactivate_uncovered,
        securityhub: SecurityHub::new(clients.securityhub.clone()),
        rotations: std::sync::RwLock::new(Arc::new(rotations)),
        build: Arc::new(move |c: &Config| build_rotations(c, &build_clients, &secrets, &http, &home, &build_clock)),
        worker_id,
        lease: cfg.worker.lease.0,
        visibility: cfg.worker.visibility_timeout.0,
        sweep_after: cfg.worker.sweep_after.0,
        aimd: Arc::new(crate::aimd::Aimd::new(cfg.worker.concurrency)),
        #[cfg(feature = "fault-injection")]
        faults: Arc::new(crate::engine::Faults::default()),
        age_clock: Arc::new(crate::engine::AgeClock::new(clock.clone())),
        clock,
    }
}

/// Build every configured rotation's connectors.
pub fn build_rotations(
    cfg: &Config,
    clients: &Clients,
    secrets: &SecretResolver,
    http: &reqwest::Client,
    home: &Arc<HomeCell>,
    clock: &crate::clock::SharedClock,
) -> Rotations {
    let accounts =
        Arc::new(Accounts::new(clients.base.clone(), home.clone(), cfg.aws.member_role_name.clone(), cfg.aws.external_id.clone(), clock.clone()));
    let ctx = connectors::BuildContext { clients, accounts: &accounts, secrets, http, clock };
    let built: HashMap<_, _> =
        cfg.rotations.iter().map(|r| (r.id.clone(), connectors::build(&r.id, r.source.as_ref(), r.target.as_ref(), r.policy.to_policy(), &ctx))).collect();
    Rotations { configs: cfg.rotations.clone(), built, accounts, allowed_senders: cfg.requests.allowed_senders.clone() }
}

/// The intake queue, when the configuration names one.
pub fn intake_queue(cfg: &Config, clients: &Clients) -> Option<SqsQueue> {
    match (&cfg.aws.intake_queue_url, &cfg.aws.intake_dlq_url) {
        (Some(url), Some(dlq)) => Some(SqsQueue { client: clients.sqs.clone(), url: url.clone(), dlq_url: dlq.clone() }),
        _ => None,
    }
}

/// A worker id unique to this process: host name, pid and a random suffix.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}
