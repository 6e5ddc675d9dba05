//! Commands from outside the step pipeline: asking for a rotation (every
//! trigger and the CLI), an operator's rollback and release, a person's
//! `provide` and `confirm`. Each is a pure transition of the saga machine
//! committed conditionally on the saga's version, then a message for the
//! next step; none runs a step itself.

use secrecy::SecretString;

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, instrument, warn};

use crate::error::{Error, Result};
use crate::finalize::Finalizer;
use crate::queue::{Lane, Queue, StepMessage};
use crate::saga::{self, Clock, Exposure, FindingRef, KeyRef, Millis, Overrides, RequestInfo, Saga, Step};
use crate::seal::Sealer;
use crate::securityhub::Workflow;
use crate::shared::{clock, lane_of, ms, Shared};
use crate::store::{Created, SecretWrite};

/// Commands from outside the step pipeline. Sealing is for `provide`; the
/// finalizer marks a new saga's findings NOTIFIED and announces a lifted
/// quarantine.
pub struct Commands<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) sealer: Sealer,
    pub(crate) finalizer: Arc<Finalizer<Q>>,
}

/// How a rotation was asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `manual`, `schedule`, `securityhub:<finding id>`, …
    pub trigger: String,
    /// Findings to update (NOTIFIED now, RESOLVED or annotated at the end).
    pub findings: Vec<FindingRef>,
    /// Start no earlier than this from now (scheduled starts are spread out).
    pub delay: Duration,
    /// Automatic triggers (imported findings, the key-age scan) respect
    /// quarantine; explicit requests (CLI, custom action) do not.
    pub automatic: bool,
    /// For a credential made by a person: the old one, as they identified
    /// it (`keyturn rotate --old-token-created`).
    pub old: Option<KeyRef>,
    /// Carried through every notification and event of the saga.
    pub correlation_id: Option<String>,
    /// The request API's requester, reason and idempotency key.
    pub info: Option<RequestInfo>,
    /// Shorter grace period or person deadline (checked against the policy by the caller).
    pub overrides: Overrides,
    /// An exposed key makes this an emergency saga.
    pub exposure: Option<Exposure>,
    /// Idempotency key and until when (ms) it answers with this saga.
    pub idempotency: Option<(String, Millis)>,
    /// A person is waiting on it (`keyturn rotate --wait`): its first step
    /// goes on the priority lane. Emergencies go there anyway.
    pub person_waits: bool,
}

impl<Q: Queue> Commands<Q> {
    /// Ask for a rotation by hand. See [`Commands::request_with`].
    pub async fn request(&self, rotation_id: &str, trigger: &str) -> Result<Created> {
        self.request_with(rotation_id, Request { trigger: trigger.into(), ..Request::default() }).await
    }

    /// Ask for a rotation. Two requests for one credential give one saga:
    /// the second gets the first's id as `Created::Existing`. Findings of a
    /// new saga are marked NOTIFIED with a note naming it.
    #[instrument(skip(self, req), fields(worker = %self.shared.worker_id, trigger = %req.trigger))]
    pub async fn request_with(&self, rotation_id: &str, req: Request) -> Result<Created> {
        let rots = self.shared.rotations();
        let rot = rots.get(rotation_id).ok_or_else(|| Error::Config(format!("no rotation with id {rotation_id:?} in the configuration")))?;
        let now = self.shared.now_ms();
        if req.automatic {
            let (health, _) = self.shared.store.health(rotation_id).await?;
            if let Err(reason) = crate::quarantine::admits(&health, now) {
                info!(rotation = rotation_id, %reason, "automatic trigger skipped");
                return Ok(Created::Skipped(reason));
            }
        }
        let manual = rot.source.by_hand().is_some();
        if req.old.is_some() && !manual {
            return Err(Error::Config(format!(
                "rotation {rotation_id} finds its old credential itself ({}); naming the old credential applies only to credentials made by a person",
                rot.source.kind()
            )));
        }
        let saga_id = uuid::Uuid::new_v4().to_string();
        let mut saga = Saga::new(saga_id, rotation_id.into(), rot.credential.clone(), req.trigger.clone(), now, fastrand::u128(..));
        saga.findings = req.findings.clone();
        saga.person.manual = manual;
        saga.keys.old_keys = req.old.clone().into_iter().collect();
        saga.run.not_before = now + ms(req.delay);
        saga.origin.correlation_id = req.correlation_id.clone();
        saga.origin.request = req.info.clone();
        saga.origin.overrides = req.overrides.clone();
        saga.exposure = req.exposure.clone();
        // The shape the machine follows: the person makes the target trust
        // the new credential, then the source switches to it.
        saga.trust = rot.source.person_trusts().then(saga::Trust::default);
        let created = self
            .shared
            .store
            .create_with(&saga, ms(self.shared.timings.sweep_after), req.idempotency.as_ref().map(|(k, until)| (k.as_str(), *until)), now)
            .await?;
        if let Created::New(id) = &created {
            info!(saga = %id, rotation = rotation_id, delay_s = req.delay.as_secs(), "rotation requested");
            let lane = if req.person_waits { Lane::Priority } else { lane_of(&saga) };
            // An emergency is listed for the watch as its first step goes
            // out: both after the saga exists, neither waiting for the other
            // (the watch acts only once a lease taken for that step lapses).
            let first = StepMessage::new(id, Step::Start, &saga.run.token);
            let (sent, ()) = tokio::join!(self.shared.on(lane).send(&first, req.delay), self.shared.store.list_if_emergency(&saga));
            if let Err(e) = sent {
                // The saga is stored; the sweeper will send the message.
                warn!(saga = %id, error = %e, "could not enqueue start; the sweeper will re-drive it");
            }
            if !req.findings.is_empty() {
                let note = format!("keyturn started rotation {rotation_id} (saga {id}) to replace the access key. Follow it with: keyturn status {id}");
                self.finalizer.update_findings(&req.findings, Workflow::Notified, &note).await;
            }
        }
        Ok(created)
    }

    /// Operator rollback during the grace period.
    pub async fn rollback(&self, saga_id: &str) -> Result<Saga> {
        let stored = self.shared.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
        let now = self.shared.now_ms();
        let next = saga::request_rollback(&stored.saga, clock(now)).map_err(|e| Error::Refused { code: "RollbackRefused", message: e.0 })?;
        self.shared.store.commit(&next, stored.version, None, SecretWrite::Keep, now + ms(self.shared.timings.sweep_after), None).await?;
        // An operator waits on a rollback: the priority lane.
        self.shared.on(Lane::Priority).send(&StepMessage::new(saga_id, next.step, &next.run.token), Duration::ZERO).await?;
        Ok(next)
    }

    /// A person hands over the new credential of a saga waiting for it. The
    /// secret is sealed with KMS (bound to the saga id) and stored in the
    /// same conditional write that moves the saga on; it is never logged.
    #[instrument(skip(self, secret, old), fields(worker = %self.shared.worker_id))]
    pub async fn provide(&self, saga_id: &str, secret: &SecretString, old: Option<KeyRef>) -> Result<Saga> {
        // Refuse early (before a KMS call) when the saga is not waiting.
        let stored = self.shared.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
        saga::provide(&stored.saga, String::new(), None, clock(self.shared.now_ms())).map_err(not_waiting)?;
        let blob = self.sealer.seal(saga_id, secret).await?;
        self.person_command(
            saga_id,
            |s, c| {
                let new_id = format!("handed over {}", crate::clock::fmt_ms(c.now));
                saga::provide(s, new_id, old.clone(), c).map_err(not_waiting)
            },
            || SecretWrite::Set(blob.clone()),
        )
        .await
    }

    /// A person confirms what the saga waits for: the old credential is
    /// deleted, the target trusts the new one, or sign-in works with it.
    #[instrument(skip(self), fields(worker = %self.shared.worker_id))]
    pub async fn confirm(&self, saga_id: &str) -> Result<Saga> {
        self.person_command(saga_id, |s, c| saga::confirm(s, false, c).map_err(not_waiting), || SecretWrite::Keep).await
    }

    /// A person reports sign-in broken with the new credential: the saga
    /// switches the source back to the old one.
    #[instrument(skip(self), fields(worker = %self.shared.worker_id))]
    pub async fn report_broken(&self, saga_id: &str) -> Result<Saga> {
        self.person_command(saga_id, |s, c| saga::confirm(s, true, c).map_err(not_waiting), || SecretWrite::Keep).await
    }

    /// Apply a person's command: load, transition, commit conditionally,
    /// send the next step. A reminder running at the same moment may move
    /// the saga between load and commit; then the command is applied again
    /// to the fresh state.
    async fn person_command<T, W>(&self, saga_id: &str, transition: T, write: W) -> Result<Saga>
    where
        T: Fn(&Saga, Clock) -> Result<Saga>,
        W: Fn() -> SecretWrite,
    {
        for _ in 0..5 {
            let stored = self.shared.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
            let now = self.shared.now_ms();
            let next = transition(&stored.saga, clock(now))?;
            match self.shared.store.commit(&next, stored.version, None, write(), now + ms(self.shared.timings.sweep_after), None).await {
                Ok(_) => {
                    info!(saga = saga_id, step = %next.step, "a person's command moved the saga on");
                    // The person waits on the step their command unblocked.
                    self.shared.send_next_on(&next, now, Lane::Priority).await;
                    return Ok(next);
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { saga_id: saga_id.into(), expected: 0 })
    }

    /// An operator lifts a rotation's quarantine.
    pub async fn release(&self, rotation_id: &str) -> Result<bool> {
        if self.shared.rotations().get(rotation_id).is_none() {
            return Err(Error::Config(format!("no rotation with id {rotation_id:?} in the configuration")));
        }
        let (health, version) = self.shared.store.health(rotation_id).await?;
        let (next, change) = crate::quarantine::release(&health);
        if next == health {
            return Ok(false);
        }
        self.shared.store.save_health(rotation_id, &next, version).await?;
        self.finalizer.announce(rotation_id, &next, change, None).await?;
        Ok(change == crate::quarantine::Change::Lifted)
    }
}

fn not_waiting(e: saga::NotWaiting) -> Error {
    Error::Refused { code: "NotWaiting", message: e.0 }
}
