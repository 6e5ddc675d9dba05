//! Wiring: configuration + AWS clients → an [`Engine`] on SQS.

use std::collections::HashMap;
use std::sync::Arc;

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
    engine_with(cfg, clients, worker_id, sqs_queue(cfg, clients))
}

/// The step queue named by the configuration.
pub fn sqs_queue(cfg: &Config, clients: &Clients) -> SqsQueue {
    SqsQueue { client: clients.sqs.clone(), url: cfg.aws.queue_url.clone(), dlq_url: cfg.aws.dlq_url.clone() }
}

/// Build an engine on any [`Queue`] (tests wrap SQS to record or duplicate messages).
pub fn engine_with<Q: Queue>(cfg: &Config, clients: &Clients, worker_id: String, queue: Q) -> Engine<Q> {
    let http = connectors::http_client();
    let secrets = SecretResolver::new(clients.secrets.clone());
    let rotations = build_rotations(cfg, clients, &secrets, &http);
    let build_clients = clients.clone();
    Engine {
        store: Store::new(clients.dynamodb.clone(), &cfg.aws.table).with_retention(cfg.worker.retention.0),
        queue,
        sealer: Sealer::new(clients.kms.clone(), &cfg.aws.kms_key_id),
        notifier: Notifier::new(clients.sns.clone(), &cfg.aws.topic_arn),
        securityhub: SecurityHub::new(clients.securityhub.clone()),
        rotations: std::sync::RwLock::new(Arc::new(rotations)),
        build: Arc::new(move |c: &Config| build_rotations(c, &build_clients, &secrets, &http)),
        worker_id,
        lease: cfg.worker.lease.0,
        visibility: cfg.worker.visibility_timeout.0,
        sweep_after: cfg.worker.sweep_after.0,
        aimd: Arc::new(crate::aimd::Aimd::new(cfg.worker.concurrency)),
        #[cfg(feature = "fault-injection")]
        faults: Arc::new(crate::engine::Faults::default()),
        age_clock: Arc::default(),
    }
}

/// Build every configured rotation's connectors.
pub fn build_rotations(cfg: &Config, clients: &Clients, secrets: &SecretResolver, http: &reqwest::Client) -> Rotations {
    let built: HashMap<_, _> =
        cfg.rotations.iter().map(|r| (r.id.clone(), connectors::build(r, &connectors::BuildContext { clients, secrets, http }))).collect();
    Rotations { configs: cfg.rotations.clone(), built }
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
