//! The engine: runs one step message against the saga it names.
//!
//! ```text
//! message ──parse──► load saga ──token/step match?──► lease (conditional write, records the attempt)
//!    │ poison            │ unknown      │ no: stale, ack        │ lost race: ack
//!    ▼                   ▼              ▼                       ▼
//!   DLQ                 DLQ            ack            step I/O via connectors
//!                                                             │
//!                         ack ◄── send next ◄── commit (conditional on version + lease) ◄── saga::advance
//! ```
//!
//! Why it is safe under at-least-once delivery, duplicates and crashes:
//! * the saga item is the truth and every write is conditional on its
//!   version, so two workers can never both advance it;
//! * a message whose token is not the saga's current one is acknowledged with
//!   no side effect — duplicates, redeliveries and stale retries die here;
//! * the lease is taken in the same write that records the attempt, so the
//!   intent to create a key is stored before IAM is called;
//! * a worker that dies mid-step leaves its lease to expire and its message
//!   to reappear; if the message is lost after a commit, the sweeper re-sends
//!   it once the saga's `due_at` passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use tracing::{error, info, instrument, warn};

use crate::connectors::{NewCredential, Rotation};
use crate::error::{Error, Result};
use crate::notify::{self, Notifier};
use crate::queue::{PoisonReason, Queue, Received, StepMessage};
use crate::saga::{self, Clock, Effect, FindingRef, KeyRef, Millis, Next, Outcome, Prompt, Saga, Status, Step, StepError};
use crate::seal::Sealer;
use crate::securityhub::{SecurityHub, Workflow};
use crate::store::{Created, SecretWrite, Store, Stored};

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn clock(now: Millis) -> Clock {
    Clock { now, jitter: fastrand::f64(), token: fastrand::u128(..) }
}

/// Test-only crash points. A fault makes the handler stop as a killed
/// process would: nothing committed, message neither acknowledged nor
/// released, lease left to expire.
#[derive(Debug, Default)]
pub struct Faults {
    /// Crash this many times right after IAM created a key, before the saga
    /// recorded it.
    pub crash_after_issue: AtomicU32,
}

impl Faults {
    fn fire(counter: &AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Step ran and the saga moved on.
    Advanced { step: Step, status: Status },
    /// Still waiting (retry delay, grace period); re-armed.
    Waiting,
    /// Duplicate or stale; acknowledged with no effect.
    Stale,
    /// Left on the queue, visible again after the given time.
    Retained(Duration),
    /// Sent to the dead-letter queue.
    DeadLettered(String),
    /// A fault point fired: behaved like a crash.
    Crashed,
}

/// The engine's idea of "now" for decisions about key age (is an IAM.3
/// finding due?). Real time plus a skew that only tests set, to age a key
/// without waiting 90 days.
#[derive(Debug, Default)]
pub struct AgeClock {
    skew_ms: std::sync::atomic::AtomicI64,
}

impl AgeClock {
    pub fn now(&self) -> Millis {
        now_ms().saturating_add_signed(self.skew_ms.load(Ordering::SeqCst))
    }
    /// Move the clock (tests).
    pub fn set_skew(&self, skew: Duration) {
        self.skew_ms.store(skew.as_millis() as i64, Ordering::SeqCst);
    }
}

pub struct Engine<Q: Queue> {
    pub store: Store,
    pub queue: Q,
    pub sealer: Sealer,
    pub notifier: Notifier,
    pub securityhub: SecurityHub,
    /// The configured rotations, as written (triggers match findings to them).
    pub rotation_configs: Vec<crate::config::RotationConfig>,
    pub rotations: HashMap<String, Rotation>,
    pub worker_id: String,
    pub lease: Duration,
    pub visibility: Duration,
    pub sweep_after: Duration,
    pub faults: Arc<Faults>,
    /// "Now" for key-age decisions (intake of IAM.3 findings).
    pub age_clock: Arc<AgeClock>,
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
}

/// What one step's I/O produced besides its outcome.
struct StepResult {
    outcome: Outcome,
    secret: SecretWrite,
}

impl StepResult {
    fn of(r: Result<Effect>) -> StepResult {
        StepResult { outcome: into_outcome(r), secret: SecretWrite::Keep }
    }
}

fn into_outcome(r: Result<Effect>) -> Outcome {
    match r {
        Ok(e) => Outcome::Done(e),
        Err(e) => Outcome::Failed(StepError::from(&e)),
    }
}

impl<Q: Queue> Engine<Q> {
    fn ms(d: Duration) -> Millis {
        d.as_millis() as u64
    }

    /// Ask for a rotation by hand. See [`Engine::request_with`].
    pub async fn request(&self, rotation_id: &str, trigger: &str) -> Result<Created> {
        self.request_with(rotation_id, Request { trigger: trigger.into(), ..Request::default() }).await
    }

    /// Ask for a rotation. Two requests for one credential give one saga:
    /// the second gets the first's id as `Created::Existing`. Findings of a
    /// new saga are marked NOTIFIED with a note naming it.
    #[instrument(skip(self, req), fields(worker = %self.worker_id, trigger = %req.trigger))]
    pub async fn request_with(&self, rotation_id: &str, req: Request) -> Result<Created> {
        let rot = self
            .rotations
            .get(rotation_id)
            .ok_or_else(|| Error::Config(format!("no rotation with id {rotation_id:?} in the configuration")))?;
        let now = now_ms();
        if req.automatic {
            let (health, _) = self.store.health(rotation_id).await?;
            if let Err(reason) = crate::quarantine::admits(&health, now) {
                info!(rotation = rotation_id, %reason, "automatic trigger skipped");
                return Ok(Created::Skipped(reason));
            }
        }
        let manual = rot.source.by_hand().is_some();
        if req.old.is_some() && !manual {
            return Err(Error::Config(format!(
                "rotation {rotation_id} finds its old credential itself ({}); naming the old credential applies only to credentials made by a person", rot.source.kind()
            )));
        }
        let saga_id = uuid::Uuid::new_v4().to_string();
        let mut saga = Saga::new(saga_id, rotation_id.into(), rot.credential.clone(), req.trigger.clone(), now, fastrand::u128(..));
        saga.findings = req.findings.clone();
        saga.manual = manual;
        saga.old_keys = req.old.clone().into_iter().collect();
        saga.not_before = now + Self::ms(req.delay);
        let created = self.store.create(&saga, Self::ms(self.sweep_after)).await?;
        if let Created::New(id) = &created {
            info!(saga = %id, rotation = rotation_id, delay_s = req.delay.as_secs(), "rotation requested");
            if let Err(e) = self.queue.send(&StepMessage::new(id, Step::Start, &saga.token), req.delay).await {
                // The saga is stored; the sweeper will send the message.
                warn!(saga = %id, error = %e, "could not enqueue start; the sweeper will re-drive it");
            }
            if !req.findings.is_empty() {
                let note = format!("keyturn started rotation {rotation_id} (saga {id}) to replace the access key. Follow it with: keyturn status {id}");
                self.update_findings(&req.findings, Workflow::Notified, &note).await;
            }
        }
        Ok(created)
    }

    /// Best effort: a Security Hub outage must not fail a rotation.
    async fn update_findings(&self, findings: &[FindingRef], workflow: Workflow, note: &str) {
        match self.securityhub.update(findings, workflow, note).await {
            Ok(n) => info!(processed = n, of = findings.len(), ?workflow, "findings updated"),
            Err(e) => warn!(error = %e, ?workflow, "could not update findings"),
        }
    }

    /// Operator rollback during the grace period.
    pub async fn rollback(&self, saga_id: &str) -> Result<Saga> {
        let stored = self.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
        let now = now_ms();
        let next = saga::request_rollback(&stored.saga, clock(now)).map_err(|e| Error::Refused { code: "RollbackRefused", message: e.0 })?;
        self.store.commit(&next, stored.version, None, SecretWrite::Keep, now + Self::ms(self.sweep_after)).await?;
        self.queue.send(&StepMessage::new(saga_id, next.step, &next.token), Duration::ZERO).await?;
        Ok(next)
    }

    /// A person hands over the new credential of a saga waiting for it. The
    /// secret is sealed with KMS (bound to the saga id) and stored in the
    /// same conditional write that moves the saga on; it is never logged.
    #[instrument(skip(self, secret, old), fields(worker = %self.worker_id))]
    pub async fn provide(&self, saga_id: &str, secret: &SecretString, old: Option<KeyRef>) -> Result<Saga> {
        // Refuse early (before a KMS call) when the saga is not waiting.
        let stored = self.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
        saga::provide(&stored.saga, String::new(), None, clock(now_ms())).map_err(not_waiting)?;
        let blob = self.sealer.seal(saga_id, secret).await?;
        self.person_command(
            saga_id,
            |s, c| {
                let new_id = format!("handed over {}", notify::fmt_time(c.now));
                saga::provide(s, new_id, old.clone(), c).map_err(not_waiting)
            },
            || SecretWrite::Set(blob.clone()),
        )
        .await
    }

    /// A person confirms the old credential is deleted.
    #[instrument(skip(self), fields(worker = %self.worker_id))]
    pub async fn confirm(&self, saga_id: &str) -> Result<Saga> {
        self.person_command(saga_id, |s, c| saga::confirm_retired(s, c).map_err(not_waiting), || SecretWrite::Keep).await
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
            let stored = self.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
            let now = now_ms();
            let next = transition(&stored.saga, clock(now))?;
            match self.store.commit(&next, stored.version, None, write(), now + Self::ms(self.sweep_after)).await {
                Ok(_) => {
                    info!(saga = saga_id, step = %next.step, "a person's command moved the saga on");
                    self.send_next(&next, now).await;
                    return Ok(next);
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { saga_id: saga_id.into(), expected: 0 })
    }

    /// Handle one received message end to end (ack included).
    #[instrument(skip_all, fields(worker = %self.worker_id, message_id = %m.message_id, saga, step))]
    pub async fn handle(&self, m: &Received) -> Result<Handled> {
        let msg = match StepMessage::parse(&m.body) {
            Ok(msg) => msg,
            Err(reason) => return self.poison(m, reason).await,
        };
        tracing::Span::current().record("saga", msg.saga_id.as_str()).record("step", msg.step.as_str());
        let stored = match self.store.load(&msg.saga_id).await {
            Ok(Some(s)) => s,
            Ok(None) => return self.poison(m, PoisonReason::UnknownSaga(msg.saga_id.clone())).await,
            Err(Error::Corrupt(why)) => return self.poison(m, PoisonReason::CorruptSaga(msg.saga_id.clone(), why)).await,
            Err(e) => return Err(e),
        };
        if !saga::accepts(&stored.saga, msg.step, &msg.token) {
            info!(current_step = %stored.saga.step, status = stored.saga.status.as_str(), "stale or duplicate message; acknowledged");
            self.queue.ack(m).await?;
            return Ok(Handled::Stale);
        }
        let now = now_ms();
        if stored.lease_owner.is_some() && stored.lease_until > now {
            // A worker (possibly this one, in another task) is on this step.
            // Come back when its lease ends: if it finished, this message is
            // stale by then; if it crashed, we take over.
            let wait = Duration::from_millis(stored.lease_until - now) + Duration::from_secs(1);
            self.queue.extend(m, wait).await?;
            return Ok(Handled::Retained(wait));
        }
        let Some(rotation) = self.rotations.get(&stored.saga.rotation_id).cloned() else {
            error!(rotation = %stored.saga.rotation_id, "saga names a rotation this worker's configuration does not declare; leaving the message for a worker that does");
            let wait = Duration::from_secs(300);
            self.queue.extend(m, wait).await?;
            return Ok(Handled::Retained(wait));
        };
        if let Some(until) = stored.saga.waiting_until(now) {
            let tr = saga::keep_waiting(&stored.saga, clock(now));
            match self.store.commit(&tr.saga, stored.version, None, SecretWrite::Keep, until + Self::ms(self.sweep_after)).await {
                Ok(_) => {
                    self.send_next(&tr.saga, now).await;
                }
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            self.queue.ack(m).await?;
            return Ok(Handled::Waiting);
        }

        // Take the lease; the same write records the attempt.
        let attempt = saga::begin_attempt(&stored.saga);
        let lease_until = now + Self::ms(self.lease);
        let version = match self
            .store
            .acquire(&attempt, stored.version, &self.worker_id, now, lease_until, lease_until + Self::ms(self.sweep_after))
            .await
        {
            Ok(v) => v,
            Err(Error::Conflict { .. }) => {
                info!("another worker moved the saga first; acknowledged");
                self.queue.ack(m).await?;
                return Ok(Handled::Stale);
            }
            Err(e) => return Err(e),
        };

        let result = {
            let step = self.run_step(&rotation, &attempt, &stored);
            tokio::pin!(step);
            let mut beat = tokio::time::interval(self.lease.min(self.visibility) / 3);
            beat.tick().await;
            loop {
                tokio::select! {
                    r = &mut step => break r,
                    _ = beat.tick() => self.heartbeat(m, &attempt.saga_id, version).await,
                }
            }
        };
        let Some(result) = result else {
            warn!("fault injected: behaving as if the worker crashed");
            return Ok(Handled::Crashed);
        };
        if let Outcome::Failed(e) = &result.outcome {
            warn!(code = %e.code, retryable = e.retryable, may_have_applied = e.may_have_applied, error = %e.message, "step attempt failed");
        }
        let now = now_ms();
        let tr = saga::advance(&attempt, &result.outcome, &rotation.policy, clock(now));
        let due = resume_at(&tr.saga, now) + Self::ms(self.sweep_after);
        let secret = match result.secret {
            // The machine decided the secret is no longer needed.
            SecretWrite::Keep if attempt.secret_stored && !tr.saga.secret_stored => SecretWrite::Erase,
            other => other,
        };
        match self.store.commit(&tr.saga, version, Some(&self.worker_id), secret, due).await {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => {
                warn!("lease lost before commit; another worker took the step over, dropping this result");
                self.queue.ack(m).await?;
                return Ok(Handled::Stale);
            }
            Err(e) => return Err(e),
        }
        info!(next_step = %tr.saga.step, status = tr.saga.status.as_str(), "step committed");
        if tr.next == Next::Run {
            self.send_next(&tr.saga, now).await;
        }
        self.queue.ack(m).await?;
        Ok(Handled::Advanced { step: tr.saga.step, status: tr.saga.status })
    }

    async fn heartbeat(&self, m: &Received, saga_id: &str, version: u64) {
        let now = now_ms();
        let until = now + Self::ms(self.lease);
        if let Err(e) = self.store.extend(saga_id, version, &self.worker_id, until, until + Self::ms(self.sweep_after)).await {
            warn!(error = %e, "could not extend the lease");
        }
        if let Err(e) = self.queue.extend(m, self.visibility).await {
            warn!(error = %e, "could not extend message visibility");
        }
    }

    pub(crate) async fn send_next(&self, s: &Saga, now: Millis) {
        let delay = Duration::from_millis(resume_at(s, now) - now);
        if let Err(e) = self.queue.send(&StepMessage::new(&s.saga_id, s.step, &s.token), delay).await {
            warn!(saga = %s.saga_id, error = %e, "could not enqueue the next step; the sweeper will re-drive it");
        }
    }

    async fn poison(&self, m: &Received, reason: PoisonReason) -> Result<Handled> {
        let why = reason.to_string();
        error!(reason = %why, receive_count = m.receive_count, "poison message; moving it to the dead-letter queue");
        self.queue.dead_letter(m, &why).await?;
        Ok(Handled::DeadLettered(why))
    }

    async fn open_new(&self, saga: &Saga, stored: &Stored) -> Result<NewCredential> {
        let id = saga.new_key.clone().ok_or_else(|| Error::Corrupt("no new key recorded".into()))?;
        let blob = stored.secret.as_deref().ok_or_else(|| Error::Corrupt(format!("secret of new key {id} is not stored")))?;
        let secret: SecretString = self.sealer.open(&saga.saga_id, blob).await?;
        Ok(NewCredential { id, secret })
    }

    /// The I/O of one step. `None` means a fault point fired.
    async fn run_step(&self, rot: &Rotation, saga: &Saga, stored: &Stored) -> Option<StepResult> {
        let old_ids: Vec<String> = saga.old_keys.iter().map(|k| k.id.clone()).collect();
        let src = rot.source.as_ref();
        let r = match saga.step {
            Step::Start => match src.inventory().await {
                Ok(keys) if keys.len() >= 2 && !saga.manual => match self.keys_of_earlier_sagas(saga, &keys).await {
                    // Two keys, one of them ours: say which saga holds them.
                    Some(message) => StepResult::of(Err(Error::Refused { code: "KeysOfEarlierSaga", message })),
                    None => StepResult::of(Ok(Effect::Started { keys })),
                },
                r => StepResult::of(r.map(|keys| Effect::Started { keys })),
            },
            Step::IssueNew => {
                if let (Some(id), true) = (&saga.new_key, stored.secret.is_some()) {
                    return Some(StepResult::of(Ok(Effect::Issued { key_id: id.clone() })));
                }
                let cred = match src.issue(&old_ids).await {
                    Ok(c) => c,
                    Err(e) => return Some(StepResult::of(Err(e))),
                };
                if Faults::fire(&self.faults.crash_after_issue) {
                    return None;
                }
                match self.sealer.seal(&saga.saga_id, &cred.secret).await {
                    // Unstored, the key is an orphan: the next attempt deletes it.
                    Err(e) => StepResult::of(Err(e)),
                    Ok(blob) => StepResult { outcome: Outcome::Done(Effect::Issued { key_id: cred.id }), secret: SecretWrite::Set(blob) },
                }
            }
            Step::ProveNew => {
                let r = async {
                    let cred = self.open_new(saga, stored).await?;
                    src.prove(&cred).await
                };
                StepResult::of(r.await.map(|_| Effect::Proven))
            }
            Step::PushToTarget => {
                let r = async {
                    let cred = self.open_new(saga, stored).await?;
                    rot.target.push(&cred).await
                };
                StepResult::of(r.await.map(|_| Effect::Pushed))
            }
            Step::VerifyTarget => {
                let new_id = saga.new_key.clone().unwrap_or_default();
                StepResult::of(rot.target.verify(&new_id, &old_ids).await.map(Effect::Verified))
            }
            Step::DisableOld => {
                let r = async {
                    // A keep-new resolution of a saga whose new key a
                    // keep-old resolution had deactivated: reactivate it first.
                    if let (true, Some(id)) = (saga.new_disabled, &saga.new_key) {
                        src.enable(id).await?;
                    }
                    if saga.old_deleted {
                        return Ok(());
                    }
                    for_each(&old_ids, |id| src.disable(id)).await
                };
                StepResult::of(r.await.map(|_| Effect::Disabled))
            }
            Step::RetireOld => {
                let since = saga.usage_cutoff();
                StepResult::of(for_each(&old_ids, |id| src.retire(id, since)).await.map(|_| Effect::Retired))
            }
            Step::DisableNew => {
                let r = async {
                    if saga.old_disabled {
                        for_each(&old_ids, |id| src.enable(id)).await?;
                    }
                    match &saga.new_key {
                        Some(id) if !saga.new_revoked => src.disable(id).await,
                        _ => Ok(()),
                    }
                };
                StepResult::of(r.await.map(|_| Effect::DisabledNew))
            }
            Step::RetireNew => {
                let since = saga.usage_cutoff();
                let r = match &saga.new_key {
                    Some(id) => src.retire(id, since).await.map_err(|e| match e {
                        Error::Refused { code: "OldKeyUsedAfterSwitch", message } => Error::Refused { code: "NewKeyUsedAfterResolution", message },
                        other => other,
                    }),
                    None => Ok(()),
                };
                StepResult::of(r.map(|_| Effect::RetiredNew))
            }
            Step::RestoreNew => {
                let r = match &saga.new_key {
                    Some(id) => src.enable(id).await,
                    None => Ok(()),
                };
                StepResult::of(r.map(|_| Effect::RestoredNew))
            }
            Step::RevokeNew => {
                let r = match &saga.new_key {
                    Some(id) => src.revoke(id).await,
                    None => Ok(()),
                };
                StepResult::of(r.map(|_| Effect::Revoked))
            }
            Step::RestoreOld => StepResult::of(for_each(&old_ids, |id| src.enable(id)).await.map(|_| Effect::Restored)),
            Step::AwaitNew | Step::AwaitRetire => StepResult::of(self.prompt_person(rot, saga).await),
            Step::Finalize => {
                let r = self.finalize(rot, saga).await;
                StepResult { outcome: into_outcome(r.map(|_| Effect::Finalized)), secret: SecretWrite::Erase }
            }
        };
        Some(r)
    }

    /// A wait on a person came due: ask, remind, or report the deadline.
    async fn prompt_person(&self, rot: &Rotation, saga: &Saga) -> Result<Effect> {
        let kind = saga::prompt(saga, now_ms());
        if kind == Prompt::Expired {
            warn!(deadline = saga.deadline, "nobody acted before the deadline");
            return Ok(Effect::Expired);
        }
        let hand = rot.source.by_hand().ok_or_else(|| Error::Corrupt(format!("saga waits on a person but {} is not made by hand", rot.source.kind())))?;
        let (credential, target) = (rot.source.describe(), rot.target.describe());
        let ctx = notify::Context { credential_kind: rot.source.kind(), credential: &credential, target_kind: rot.target.kind(), target: &target, keys_now: None, advice: None };
        // `prompts` counts the notices sent so far: the first was the
        // request itself, so it is also the number of this reminder.
        let n = notify::render_prompt(saga, &ctx, &hand, kind == Prompt::Remind);
        self.notifier.publish(&n).await?;
        info!(event = %n.attributes["event"], step = %saga.step, "asked a person to act");
        Ok(Effect::Prompted)
    }

    /// Notify about the outcome. Erasing the secret and releasing the lock
    /// happen in the commit that follows.
    async fn finalize(&self, rot: &Rotation, saga: &Saga) -> Result<()> {
        let mut end = saga.clone();
        end.status = saga.closing.unwrap_or(Status::NeedsAttention);
        // Nothing to list for a credential made by hand: the notice shows
        // what keyturn recorded instead.
        let keys = if saga.manual {
            None
        } else {
            match rot.source.inventory().await {
                Ok(k) => Some(k),
                Err(e) => {
                    warn!(error = %e, "could not list keys for the notification");
                    None
                }
            }
        };
        let credential = rot.source.describe();
        let target = rot.target.describe();
        let n = notify::render(
            &end,
            &notify::Context {
                credential_kind: rot.source.kind(),
                credential: &credential,
                target_kind: rot.target.kind(),
                target: &target,
                keys_now: keys.as_deref(),
                advice: end.failure.as_ref().and_then(|f| rot.target.advice(&f.code, &format!("keyturn rotate {}", end.rotation_id))),
            },
        );
        self.notifier.publish(&n).await?;
        info!(event = %n.attributes["event"], "notification published");
        if !saga.findings.is_empty() {
            let (workflow, note) = finding_note(&end);
            self.update_findings(&saga.findings, workflow, &note).await;
        }
        self.count_outcome(&end).await
    }

    /// Count a finished saga towards quarantine; notify when it begins,
    /// changes reason, disables the rotation, or ends.
    async fn count_outcome(&self, end: &Saga) -> Result<()> {
        let Some(cfg) = self.rotation_configs.iter().find(|r| r.id == end.rotation_id) else { return Ok(()) };
        // A resolved saga ends a second time, and that ending counts too.
        let counted = if end.endings == 0 { end.saga_id.clone() } else { format!("{}#{}", end.saga_id, end.endings) };
        let reason = end.failure.as_ref().map(|f| f.code.clone()).unwrap_or_else(|| end.status.as_str().to_string());
        for _ in 0..3 {
            let (health, version) = self.store.health(&end.rotation_id).await?;
            let (next, change) = crate::quarantine::record(
                &health,
                &counted,
                end.status == Status::Succeeded,
                &reason,
                now_ms(),
                cfg.policy.quarantine_after,
                Self::ms(cfg.policy.quarantine_disable_after.0),
            );
            if next == health {
                return Ok(());
            }
            match self.store.save_health(&end.rotation_id, &next, version).await {
                Ok(()) => return self.announce(&end.rotation_id, &next, change, Some(&end.saga_id)).await,
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { saga_id: end.saga_id.clone(), expected: 0 })
    }

    async fn announce(&self, rotation_id: &str, h: &crate::quarantine::Health, change: crate::quarantine::Change, saga: Option<&str>) -> Result<()> {
        if change == crate::quarantine::Change::None {
            return Ok(());
        }
        let Some(rot) = self.rotations.get(rotation_id) else { return Ok(()) };
        warn!(rotation = rotation_id, ?change, "quarantine changed");
        let n = notify::render_quarantine(rotation_id, &rot.source.describe(), &rot.target.describe(), rot.source.kind(), rot.target.kind(), h, change, saga);
        self.notifier.publish(&n).await
    }

    /// An operator lifts a rotation's quarantine.
    pub async fn release(&self, rotation_id: &str) -> Result<bool> {
        if !self.rotations.contains_key(rotation_id) {
            return Err(Error::Config(format!("no rotation with id {rotation_id:?} in the configuration")));
        }
        let (health, version) = self.store.health(rotation_id).await?;
        let (next, change) = crate::quarantine::release(&health);
        if next == health {
            return Ok(false);
        }
        self.store.save_health(rotation_id, &next, version).await?;
        self.announce(rotation_id, &next, change, None).await?;
        Ok(change == crate::quarantine::Change::Lifted)
    }

    /// Re-send the message of every saga that is overdue and not leased:
    /// covers a crash between commit and send, and lost messages.
    #[instrument(skip(self), fields(worker = %self.worker_id))]
    pub async fn sweep(&self) -> Result<usize> {
        let now = now_ms();
        let mut n = 0;
        for s in self.store.overdue(now).await? {
            if s.saga.status == Status::NeedsAttention {
                // An unresolved saga whose evidence check is due.
                let id = s.saga.saga_id.clone();
                if let Err(e) = self.watch_one(s).await {
                    warn!(saga = %id, error = %e, "evidence check failed; trying again at the next check");
                }
                continue;
            }
            if s.lease_until > now {
                continue;
            }
            let due = now + Self::ms(self.sweep_after);
            match self.store.set_due(&s.saga.saga_id, s.version, due).await {
                Ok(()) => {}
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
            warn!(saga = %s.saga.saga_id, step = %s.saga.step, "saga overdue; re-driving its step");
            self.queue.send(&StepMessage::new(&s.saga.saga_id, s.saga.step, &s.saga.token), Duration::ZERO).await?;
            n += 1;
        }
        Ok(n)
    }
}

fn not_waiting(e: saga::NotWaiting) -> Error {
    Error::Refused { code: "NotWaiting", message: e.0 }
}

/// The workflow status and note for a saga's findings when it ends.
pub fn finding_note(s: &Saga) -> (Workflow, String) {
    let old = s.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ");
    let new = s.new_key.as_deref().unwrap_or("(none)");
    match s.status {
        Status::Succeeded => (
            Workflow::Resolved,
            format!(
                "keyturn rotated the access key (saga {}): new key {new} replaced {}; the old key was deleted.",
                s.saga_id,
                if old.is_empty() { "no previous key".to_string() } else { old }
            ),
        ),
        other => {
            let why = s.failure.as_ref().map(|f| format!("{} at {}: {}", f.code, f.step, f.message)).unwrap_or_default();
            (Workflow::Unchanged, format!("keyturn rotation {} (saga {}) ended {}: {why}. See: keyturn status {}", s.rotation_id, s.saga_id, other.as_str(), s.saga_id))
        }
    }
}

/// When the saga's current step may run: now, or the end of its wait
/// (retry delay or grace period).
fn resume_at(s: &Saga, now: Millis) -> Millis {
    s.waiting_until(now).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{Failure, KeyRef};

    #[test]
    fn finding_notes_say_what_replaced_what_or_why_it_failed() {
        let mut s = Saga::new("S1".into(), "auth0-ses".into(), "c".into(), "t".into(), 0, 1);
        s.old_keys = vec![KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
        s.new_key = Some("AKIANEW".into());
        s.status = Status::Succeeded;
        let (w, note) = finding_note(&s);
        assert_eq!(w, Workflow::Resolved);
        assert_eq!(note, "keyturn rotated the access key (saga S1): new key AKIANEW replaced AKIAOLD; the old key was deleted.");
        s.status = Status::Compensated;
        s.failure = Some(Failure { step: Step::PushToTarget, code: "insufficient_scope".into(), message: "Insufficient scope".into(), operator_fixable: true });
        let (w, note) = finding_note(&s);
        assert_eq!(w, Workflow::Unchanged, "a failed rotation leaves the finding open");
        assert!(note.contains("ended compensated: insufficient_scope at push_to_target: Insufficient scope"), "{note}");
    }
}

async fn for_each<'a, F, Fut>(ids: &'a [String], mut f: F) -> Result<()>
where
    F: FnMut(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for id in ids {
        f(id).await?;
    }
    Ok(())
}
