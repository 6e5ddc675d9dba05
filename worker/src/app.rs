//! Wiring: configuration + AWS clients → an [`Engine`] on SQS, composed of
//! the engine's jobs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::accounts::{Accounts, HomeCell};
use crate::attention::Attention;
use crate::aws::Clients;
use crate::clock::SharedClock;
use crate::commands::Commands;
use crate::config::Config;
use crate::connectors;
use crate::engine::{Engine, Steps};
use crate::finalize::Finalizer;
use crate::handover::Handovers;
use crate::notify::Notifier;
use crate::queue::{Queue, SqsQueue};
use crate::seal::Sealer;
use crate::secrets::SecretResolver;
use crate::securityhub::SecurityHub;
use crate::shared::{Rotations, Shared, Timings};
use crate::store::Store;
use crate::sweeper::Sweeper;
use crate::triggers::Intake;

/// Build the engine a worker (or the CLI) runs.
pub fn engine(cfg: &Config, clients: &Clients, worker_id: String) -> Engine<SqsQueue> {
    compose(cfg, clients, worker_id, sqs_queue(cfg, clients), priority_queue(cfg, clients), crate::clock::system())
}

/// The worker's engine (both lanes) whose every part reads time from
/// `clock` (tests advance a [`crate::clock::ManualClock`]).
pub fn engine_at(cfg: &Config, clients: &Clients, worker_id: String, clock: SharedClock) -> Engine<SqsQueue> {
    compose(cfg, clients, worker_id, sqs_queue(cfg, clients), priority_queue(cfg, clients), clock)
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
pub fn engine_on<Q: Queue>(cfg: &Config, clients: &Clients, worker_id: String, queue: Q, clock: SharedClock) -> Engine<Q> {
    compose(cfg, clients, worker_id, queue, None, clock)
}

/// The one composition of the engine's jobs (the worker, Lambda and the CLI
/// all run this one): each job gets the shared pieces and only the handles
/// it uses.
fn compose<Q: Queue>(cfg: &Config, clients: &Clients, worker_id: String, queue: Q, priority: Option<Q>, clock: SharedClock) -> Engine<Q> {
    let http = connectors::http_client();
    let secrets = SecretResolver::new(clients.secrets.clone());
    // The home account is asked once per process, not once per reload.
    let home = Arc::new(HomeCell::default());
    let rotations = build_rotations(cfg, clients, &secrets, &http, &home, &clock);
    let build_clients = clients.clone();
    let build_clock = clock.clone();
    let store = Store::new(clients.dynamodb.clone(), &cfg.aws.table).with_retention(cfg.worker.retention.0).with_clock(clock.clone());
    let shared = Arc::new(Shared {
        store: store.clone(),
        queue,
        priority,
        rotations: std::sync::RwLock::new(Arc::new(rotations)),
        build: Arc::new(move |c: &Config| build_rotations(c, &build_clients, &secrets, &http, &home, &build_clock)),
        worker_id,
        timings: Timings { lease: cfg.worker.lease.0, visibility: cfg.worker.visibility_timeout.0, sweep_after: cfg.worker.sweep_after.0 },
        clock: clock.clone(),
    });
    let sealer = Sealer::new(clients.kms.clone(), &cfg.aws.kms_key_id);
    let notifier = notifier(cfg, clients);
    let finalizer = Arc::new(Finalizer { shared: shared.clone(), notifier: notifier.clone(), securityhub: SecurityHub::new(clients.securityhub.clone()) });
    let attention = Arc::new(Attention { shared: shared.clone(), notifier: notifier.clone() });
    let commands = Arc::new(Commands { shared: shared.clone(), sealer: sealer.clone(), finalizer: finalizer.clone() });
    let handovers = Arc::new(Handovers {
        shared: shared.clone(),
        commands: commands.clone(),
        notifier: notifier.clone(),
        secretsmanager: clients.secrets.clone(),
        kms_key_id: cfg.aws.kms_key_id.clone(),
    });
    let intake = Arc::new(Intake {
        shared: shared.clone(),
        commands: commands.clone(),
        handovers: handovers.clone(),
        notifier: notifier.clone(),
        idempotency_window: cfg.requests.idempotency_window.0,
        deactivate_uncovered: cfg.exposure.deactivate_uncovered,
        age_clock: Arc::new(crate::shared::AgeClock::new(clock.clone())),
        expiries: Default::default(),
    });
    let steps = Steps {
        shared: shared.clone(),
        sealer,
        aimd: Arc::new(crate::aimd::Aimd::new(cfg.worker.concurrency)),
        finalizer,
        handovers,
        attention: attention.clone(),
        intake: intake.clone(),
        ordinary_held: Default::default(),
        #[cfg(feature = "fault-injection")]
        faults: Arc::new(crate::engine::Faults::default()),
    };
    let sweeper = Sweeper { shared: shared.clone(), attention: attention.clone(), looks: Default::default() };
    Engine { store, shared, steps, commands, attention, sweeper, intake, notifier }
}

/// Build every configured rotation's connectors.
pub fn build_rotations(
    cfg: &Config,
    clients: &Clients,
    secrets: &SecretResolver,
    http: &reqwest::Client,
    home: &Arc<HomeCell>,
    clock: &SharedClock,
) -> Rotations {
    let accounts = Arc::new(Accounts::new(
        clients.base.clone(),
        home.clone(),
        cfg.aws.member_role_name.clone(),
        cfg.aws.external_id.clone(),
        clock.clone(),
        clients.iam_urgent.clone(),
    ));
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
