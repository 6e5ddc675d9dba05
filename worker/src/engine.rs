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

#[cfg(feature = "fault-injection")]
use std::sync::atomic::AtomicU32;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tracing::{error, info, instrument, warn, Instrument};

use crate::attention::Attention;
use crate::commands::Commands;
use crate::connectors::{NewCredential, Rotation};
use crate::error::{Error, Result};
use crate::finalize::Finalizer;
use crate::notify::Notifier;
use crate::queue::{Lane, PoisonReason, Queue, Received, StepMessage};
use crate::saga::{self, Effect, Millis, Next, Outcome, Saga, Status, Step, StepError};
use crate::seal::Sealer;
use crate::shared::{clock, ms, resume_at, AgeClock, Rotations, Shared};
pub use crate::shared::{PRIORITY_LEASE, PRIORITY_VISIBILITY};
use crate::store::{Hold, Lease, SecretWrite, Store, Stored};
use crate::sweeper::Sweeper;
use crate::triggers::Intake;

/// At most this many steps run one after another under one lease; then the
/// next one goes through the queue (a bound, not a tuning knob).
const MAX_RUN: usize = 64;

/// A step throttled this many times in a row is handed back to the saga
/// (a spent attempt, a durable retry) instead of waiting in place again.
const MAX_THROTTLED: u32 = 8;

/// Test-only crash points, compiled only with the `fault-injection` cargo
/// feature (the test harness turns it on; `cargo build -p keyturn` and the
/// release image leave it off). A fault makes the handler stop as a killed
/// process would: nothing committed, message neither acknowledged nor
/// released, lease left to expire.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
pub struct Faults {
    /// Crash this many times right after IAM created a key, before the saga
    /// recorded it.
    pub crash_after_issue: AtomicU32,
    /// Run once, right before `IssueNew` calls the source: what someone
    /// else does between `start` listing the keys and keyturn creating one
    /// (e.g. a person creating a key).
    pub before_issue: Hook,
}

/// A one-shot action a test sets ([`Faults::before_issue`]).
#[cfg(feature = "fault-injection")]
#[derive(Default)]
pub struct Hook(std::sync::Mutex<Option<crate::connectors::BoxFut<'static, ()>>>);

#[cfg(feature = "fault-injection")]
impl Hook {
    pub fn set(&self, action: impl std::future::Future<Output = ()> + Send + 'static) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::pin(action));
    }
    fn take(&self) -> Option<crate::connectors::BoxFut<'static, ()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(feature = "fault-injection")]
impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

#[cfg(feature = "fault-injection")]
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
    /// A fault point fired (`fault-injection` builds only): behaved like a crash.
    Crashed,
}

/// The step pipeline: runs one step message (parse, lease, step I/O,
/// `saga::advance`, commit, the next step at once or through the queue,
/// ack). It holds what a step needs besides the shared pieces: KMS for the
/// new secret, the AIMD limit, and the jobs a step hands over to (the end
/// of a saga and a person's prompts, naming an earlier saga's keys, the
/// follow-up rotation of an exposed new key).
pub struct Steps<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) sealer: Sealer,
    /// Steps at once, backed off when IAM throttles ([`crate::aimd`]).
    pub(crate) aimd: Arc<crate::aimd::Aimd>,
    pub(crate) finalizer: Arc<Finalizer<Q>>,
    /// The console handover, looked at before every prompt of a wait on a person.
    pub(crate) handovers: Arc<crate::handover::Handovers<Q>>,
    pub(crate) attention: Arc<Attention<Q>>,
    pub(crate) intake: Arc<Intake<Q>>,
    /// The emergency watch holds ordinary work back
    /// ([`Engine::hold_ordinary`]): an ordinary run then stops at its next
    /// step boundary.
    pub(crate) ordinary_held: std::sync::atomic::AtomicBool,
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: Arc<Faults>,
}

/// Everything a worker needs to run sagas, composed of the engine's jobs
/// (built by [`crate::app`]), each a type holding only what it uses:
///
/// * [`Steps`] (this module) — the step pipeline: [`Engine::handle`];
/// * [`Commands`] — requests, rollback, release, `provide`, `confirm`;
/// * [`Finalizer`] — the outcome notice, findings, quarantine counting,
///   prompts to a person;
/// * [`Sweeper`] — re-driving sagas whose message was lost;
/// * [`Attention`] — evidence and `resolve` for sagas needing attention;
/// * [`Intake`] — intake events and requests ([`crate::triggers`],
///   [`crate::requests`]), the key-age scan, `plan`;
///
/// and the pieces they share ([`Shared`]: table, queues and lanes,
/// rotations, worker id, timings). The worker, Lambda and the CLI call the
/// methods below.
pub struct Engine<Q: Queue> {
    /// The saga table (the CLI follows a saga in it).
    pub(crate) store: Store,
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) steps: Steps<Q>,
    pub(crate) commands: Arc<Commands<Q>>,
    pub(crate) attention: Arc<Attention<Q>>,
    pub(crate) sweeper: Sweeper<Q>,
    pub(crate) intake: Arc<Intake<Q>>,
    /// The worker's notices about configuration reloads.
    pub(crate) notifier: Notifier,
}

impl<Q: Queue> Engine<Q> {
    /// The saga table.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// The step queue.
    pub fn queue(&self) -> &Q {
        &self.shared.queue
    }
    /// The priority step queue, when configured.
    pub fn priority_queue(&self) -> Option<&Q> {
        self.shared.priority.as_ref()
    }
    /// This worker's id (lease owner).
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }
    /// The configured rotations, as of now (a snapshot: a reload replaces them).
    pub fn rotations(&self) -> Arc<Rotations> {
        self.shared.rotations()
    }
    /// Swap in the rotations of a new configuration version (already
    /// validated). Sagas in flight keep running: a saga whose rotation is
    /// gone from the new version waits, retained, for a worker that has it.
    pub fn install(&self, cfg: &crate::config::Config) {
        self.shared.install(cfg)
    }
    /// The lease and message visibility of a lane's steps.
    pub(crate) fn timings(&self, lane: Lane) -> (Duration, Duration) {
        self.shared.timings(lane)
    }
    /// The clock every job of this engine reads time from.
    pub fn clock(&self) -> &crate::clock::SharedClock {
        &self.shared.clock
    }
    /// "Now" for key-age decisions; tests move it ahead.
    pub fn age_clock(&self) -> &AgeClock {
        &self.intake.age_clock
    }
    /// The crash points (tests).
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> &Faults {
        &self.steps.faults
    }

    /// Handle one received step message end to end ([`Steps::handle`]).
    pub async fn handle(&self, m: &Received) -> Result<Handled> {
        self.steps.handle(m).await
    }
    /// Handle one intake message, ack or dead-letter included ([`Intake::handle_intake`]).
    pub async fn handle_intake<I: Queue>(&self, intake_queue: &I, m: &Received) -> Result<crate::triggers::IntakeReport> {
        self.intake.handle_intake(intake_queue, m).await
    }
    /// Re-drive overdue sagas and run due evidence checks ([`Sweeper::sweep`]).
    pub async fn sweep(&self) -> Result<usize> {
        self.sweeper.sweep().await
    }
    /// One look of the emergency watch ([`Sweeper::watch`]): the steps of
    /// emergencies whose worker died, to run with [`Engine::handle`].
    pub async fn watch(&self) -> Result<crate::sweeper::Watched> {
        self.sweeper.watch().await
    }
    /// While an emergency is young (the watch says so), an ordinary run in
    /// progress stops at its next step boundary: the step is committed and
    /// its successor goes out as a message (which waits like any ordinary
    /// one) instead of running here at once. A backlog's runs so stop
    /// loading DynamoDB, IAM and the targets within one step each — their
    /// last steps included, whose commits (ending a saga, releasing its
    /// lock) are transactions.
    pub fn hold_ordinary(&self, held: bool) {
        self.steps.ordinary_held.store(held, std::sync::atomic::Ordering::Relaxed);
    }
    /// Ask for a rotation by hand ([`Commands::request`]).
    pub async fn request(&self, rotation_id: &str, trigger: &str) -> Result<crate::store::Created> {
        self.commands.request(rotation_id, trigger).await
    }
    /// Ask for a rotation ([`Commands::request_with`]).
    pub async fn request_with(&self, rotation_id: &str, req: crate::commands::Request) -> Result<crate::store::Created> {
        self.commands.request_with(rotation_id, req).await
    }
    /// Operator rollback during the grace period ([`Commands::rollback`]).
    pub async fn rollback(&self, saga_id: &str) -> Result<Saga> {
        self.commands.rollback(saga_id).await
    }
    /// A person hands over the new credential ([`Commands::provide`]).
    pub async fn provide(&self, saga_id: &str, secret: &SecretString, old: Option<saga::KeyRef>) -> Result<Saga> {
        self.commands.provide(saga_id, secret, old).await
    }
    /// A person confirms the old credential is deleted ([`Commands::confirm`]).
    pub async fn confirm(&self, saga_id: &str) -> Result<Saga> {
        self.commands.confirm(saga_id).await
    }
    /// A person reports sign-in broken after a switch ([`Commands::report_broken`]).
    pub async fn report_broken(&self, saga_id: &str) -> Result<Saga> {
        self.commands.report_broken(saga_id).await
    }
    /// An operator lifts a rotation's quarantine ([`Commands::release`]).
    pub async fn release(&self, rotation_id: &str) -> Result<bool> {
        self.commands.release(rotation_id).await
    }
    /// A person resolves a saga that needs attention ([`Attention::resolve`]).
    pub async fn resolve(&self, saga_id: &str, keep: saga::Keep, force: bool, by: &str) -> Result<(Saga, saga::Verdict)> {
        self.attention.resolve(saga_id, keep, force, by).await
    }
    /// Key age of every rotation with a `[rotation.schedule]` ([`Intake::scan_keys`]).
    pub async fn scan_keys(&self, now: Millis) -> Result<Vec<crate::triggers::ScanItem>> {
        self.intake.scan_keys(now).await
    }
    /// The scheduled scan ([`Intake::scan_and_start`]).
    pub async fn scan_and_start(&self, jitter: Duration) -> Result<Vec<(String, crate::store::Created)>> {
        self.intake.scan_and_start(jitter).await
    }
    /// Dry run for an event ([`Intake::plan_event`]).
    pub async fn plan_event(&self, body: &str) -> Result<Vec<String>> {
        self.intake.plan_event(body).await
    }
    /// Dry run of the scheduled scan ([`Intake::plan_scan`]).
    pub async fn plan_scan(&self) -> Result<Vec<String>> {
        self.intake.plan_scan().await
    }
}

/// How long a priority step waits in place for its saga's live lease to
/// end ([`Steps::handle`]): only for a message the saga still accepts and
/// a lease that ends within [`PRIORITY_LEASE`] (a dead holder's last one,
/// or a live holder's, which it renews: then the second ask is refused
/// too and the message waits); a longer lease is not a priority step's,
/// and its message comes back later.
pub(crate) fn takeover_wait(s: &Stored, msg: &StepMessage, now: Millis) -> Option<Duration> {
    let nudge = !s.saga.status.is_terminal() && s.nudge.as_deref() == Some(msg.token.as_str());
    let wanted = saga::accepts(&s.saga, msg.step, &msg.token) || nudge;
    let left = Duration::from_millis(s.lease_until.saturating_sub(now));
    // Until a few milliseconds past its end.
    (wanted && s.lease_owner.is_some() && !left.is_zero() && left <= PRIORITY_LEASE).then(|| left + Duration::from_millis(10))
}

/// How often a running step renews its lease and its message's
/// visibility: every quarter of the lease (for a priority step's short
/// lease, 100 ms: a heartbeat may come up to ¾ of the lease late before
/// another replica's watch may take the step), and every third of the
/// visibility (an SQS call per second or less, not per lease renewal).
pub(crate) fn beats(lease: Duration, visibility: Duration) -> (Duration, Duration) {
    ((lease / 4).max(Duration::from_millis(10)), (visibility / 3).max(Duration::from_millis(10)))
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

impl<Q: Queue> Steps<Q> {
    /// Lease the message's saga for `lease`. A priority step whose saga is
    /// leased for at most PRIORITY_LEASE more: the holder may be dead (its
    /// message came back because its heartbeats stopped, and its last lease
    /// write, slow on a loaded table, ended later than the visibility it
    /// renewed). Wait that out in place, the message kept invisible, and
    /// ask once more, rather than putting it back for whole SQS seconds. A
    /// live holder renews its lease meanwhile: the second ask is refused
    /// and the message waits as any refused one. Returns the answer and
    /// the time it was asked at.
    async fn lease(&self, m: &Received, msg: &StepMessage, lease: Duration, visibility: Duration) -> Result<(Result<Lease>, Millis)> {
        let sweep_after = self.shared.timings.sweep_after;
        let ask = |now: Millis| {
            self.shared.store.lease(&msg.saga_id, msg.step, &msg.token, &self.shared.worker_id, now, now + ms(lease), now + ms(lease + sweep_after))
        };
        let now = self.shared.now_ms();
        let leased = ask(now).await;
        if let (Lane::Priority, Ok(Lease::Refused(Some(s)))) = (m.lane, &leased) {
            if let Some(wait) = takeover_wait(s, msg, now) {
                self.shared.extend(m, visibility + PRIORITY_LEASE).await?;
                tokio::time::sleep(wait).await;
                let now = self.shared.now_ms();
                return Ok((ask(now).await, now));
            }
        }
        Ok((leased, now))
    }

    /// Handle one received message end to end (ack included): take the
    /// lease and read the saga in one write, run the step, commit; while
    /// the next step is due at once, run it too under the same lease (the
    /// commit records its attempt and extends the lease), so a rotation's
    /// steps cost no queue round trips. The message stays in flight (its
    /// visibility extended by heartbeats) until the run ends: it is the
    /// durable nudge should this worker die on the way.
    #[instrument(skip_all, fields(worker = %self.shared.worker_id, message_id = %m.message_id, saga, step))]
    pub async fn handle(&self, m: &Received) -> Result<Handled> {
        let msg = match StepMessage::parse(&m.body) {
            Ok(msg) => msg,
            Err(reason) => return self.poison(m, reason).await,
        };
        tracing::Span::current().record("saga", msg.saga_id.as_str()).record("step", msg.step.as_str());
        // Room under the AIMD limit first, so a waiting step holds no lease.
        // A priority step does not wait for it: an emergency under IAM
        // throttling still goes first (its throttling still lowers the
        // limit, leaving IAM's capacity to it).
        let _slot = match m.lane {
            Lane::Ordinary => Some(self.aimd.slot().await),
            Lane::Priority => None,
        };
        let (lease, visibility) = self.shared.timings(m.lane);
        let (leased, now) = self.lease(m, &msg, lease, visibility).await?;
        let mut stored = match leased {
            Ok(Lease::Taken(s)) => s,
            Ok(Lease::Refused(Some(s))) => return self.refused(m, &msg, s, now).await,
            Ok(Lease::Refused(None)) => return self.poison(m, PoisonReason::UnknownSaga(msg.saga_id.clone())).await,
            Err(Error::Corrupt(why)) => return self.poison(m, PoisonReason::CorruptSaga(msg.saga_id.clone(), why)).await,
            Err(e) => return Err(e),
        };
        let Some(rotation) = self.shared.rotations().get(&stored.saga.rotation_id).cloned() else {
            return self.not_declared(m, &msg, &stored).await;
        };

        // The lease write counted this attempt: `stored.saga` is the attempt.
        let mut attempt = stored.saga.clone();
        let mut version = stored.version;
        // The new credential, once this run has it in the clear (issued or
        // opened): later steps of the same run need no KMS call.
        let mut cleartext: Option<NewCredential> = None;
        for run in 1.. {
            let started = std::time::Instant::now();
            let Some(result) = self.run_in_place(m, &rotation, &attempt, &stored, &mut cleartext, version).await else {
                warn!("fault injected: behaving as if the worker crashed");
                return Ok(Handled::Crashed);
            };
            if let Outcome::Failed(e) = &result.outcome {
                warn!(step = attempt.step.as_str(), code = %e.code, retryable = e.retryable, may_have_applied = e.may_have_applied, error = %e.message, "step attempt failed");
            }
            let now = self.shared.now_ms();
            let tr = saga::advance(&attempt, &result.outcome, &attempt.effective_policy(&rotation.policy), clock(now));
            self.step_metrics(&rotation, &attempt, &result.outcome, &tr.saga, started);
            let secret = match result.secret {
                // The machine decided the secret is no longer needed.
                SecretWrite::Keep if attempt.keys.secret_stored && !tr.saga.keys.secret_stored => SecretWrite::Erase,
                // Made now and needed by no step ahead (a certificate the
                // person gets in the notice): never stored.
                SecretWrite::Set(_) if !tr.saga.keys.secret_stored => SecretWrite::Erase,
                other => other,
            };
            // Due now and not the end: run it here, under the same lease
            // (an ordinary run not while an emergency holds ordinary work).
            let held = m.lane == Lane::Ordinary && self.ordinary_held.load(std::sync::atomic::Ordering::Relaxed);
            let go_on = tr.next == Next::Run && resume_at(&tr.saga, now) == now && !tr.saga.status.is_terminal() && run < MAX_RUN && !held;
            let (written, due, hold) = if go_on {
                let until = now + ms(lease);
                (
                    saga::begin_attempt(&tr.saga, now),
                    until + ms(self.shared.timings.sweep_after),
                    Some(Hold { owner: &self.shared.worker_id, lease_until: until }),
                )
            } else {
                (tr.saga.clone(), resume_at(&tr.saga, now) + ms(self.shared.timings.sweep_after), None)
            };
            let secret_after = match &secret {
                SecretWrite::Keep => stored.secret.clone(),
                SecretWrite::Set(b) => Some(b.clone()),
                SecretWrite::Erase => None,
            };
            match self.shared.store.commit(&written, version, Some(&self.shared.worker_id), secret, due, hold).await {
                Ok(v) => version = v,
                Err(Error::Conflict { .. }) => {
                    warn!("lease lost before commit; another worker took the step over, dropping this result");
                    self.shared.ack(m).await?;
                    return Ok(Handled::Stale);
                }
                Err(e) => return Err(e),
            }
            info!(step = attempt.step.as_str(), next_step = %tr.saga.step, status = tr.saga.status.as_str(), "step committed");
            if !go_on {
                return self.end_run(m, &tr, now).await;
            }
            if secret_after.is_none() {
                cleartext = None;
            }
            stored.secret = secret_after;
            stored.version = version;
            stored.saga = written.clone();
            attempt = written;
        }
        unreachable!("the run ends within MAX_RUN steps")
    }

    /// The run ends with this committed transition: send the next step
    /// when it waits, start the follow-up rotation of an exposed new key,
    /// acknowledge the message.
    async fn end_run(&self, m: &Received, tr: &saga::Transition, now: Millis) -> Result<Handled> {
        if tr.next == Next::Run {
            self.shared.send_next(&tr.saga, now).await;
        }
        if tr.saga.needs_follow_up() {
            // The exposed key was this saga's new key: rotate again.
            self.intake.follow_up_exposure(&tr.saga).await;
        }
        self.shared.ack(m).await?;
        Ok(Handled::Advanced { step: tr.saga.step, status: tr.saga.status })
    }

    /// Run one step, with heartbeats, and again in place while IAM
    /// throttles (up to [`MAX_THROTTLED`] times in a row). `None`: a fault
    /// point fired.
    async fn run_in_place(
        &self,
        m: &Received,
        rotation: &Rotation,
        attempt: &Saga,
        stored: &Stored,
        cleartext: &mut Option<NewCredential>,
        version: u64,
    ) -> Option<StepResult> {
        let (lease, visibility) = self.shared.timings(m.lane);
        // The span's `step` is the message's (recorded once: fmt appends
        // every record); each step of the run has a span of its own.
        let step_span = tracing::info_span!("run", step = attempt.step.as_str());
        let mut throttled = 0u32;
        let result = loop {
            let result = {
                // Roles assumed in member accounts name this saga in their session.
                // A priority step's IAM calls are urgent: a rate of their own.
                // On the heap: a step's future is large (every connector's
                // calls), and a caller polling `handle` on a small stack
                // (a test's thread, in a debug build) overflowed it.
                let mut step = Box::pin(
                    crate::accounts::urgently(
                        m.lane == Lane::Priority,
                        crate::accounts::for_saga(&attempt.saga_id, self.run_step(rotation, attempt, stored, &mut *cleartext)),
                    )
                    .instrument(step_span.clone()),
                );
                let (lease_every, visibility_every) = beats(lease, visibility);
                let mut beat = tokio::time::interval(lease_every);
                let mut shown = tokio::time::interval(visibility_every);
                beat.tick().await;
                shown.tick().await;
                loop {
                    tokio::select! {
                        r = &mut step => break r,
                        _ = beat.tick() => self.renew_lease(m, &attempt.saga_id, version).await,
                        _ = shown.tick() => self.renew_visibility(m).await,
                    }
                }
            };
            let result = result?;
            match &result.outcome {
                // IAM is throttling: fewer steps at once, and this one
                // again in place (its lease kept), not a spent attempt.
                Outcome::Failed(e) if e.code == crate::aimd::THROTTLING && throttled < MAX_THROTTLED => {
                    throttled += 1;
                    let limit = self.aimd.throttled();
                    let wait = (Duration::from_millis(250 << throttled.min(5)).mul_f64(0.5 + fastrand::f64())).min(lease / 4);
                    warn!(
                        step = attempt.step.as_str(),
                        limit,
                        retry_in_ms = wait.as_millis() as u64,
                        "IAM is throttling: fewer steps at once; the step runs again in place"
                    );
                    self.heartbeat(m, &attempt.saga_id, version).await;
                    tokio::time::sleep(wait).await;
                }
                _ => break result,
            }
        };
        if throttled == 0 || !matches!(&result.outcome, Outcome::Failed(e) if e.code == crate::aimd::THROTTLING) {
            self.aimd.ok();
        }
        Some(result)
    }

    /// The saga names a rotation this worker does not have (a newer or older
    /// configuration elsewhere): give the lease back and leave the message.
    async fn not_declared(&self, m: &Received, msg: &StepMessage, stored: &Stored) -> Result<Handled> {
        error!(rotation = %stored.saga.rotation_id, "saga names a rotation this worker's configuration does not declare; leaving the message for a worker that does");
        if let Err(e) = self.shared.store.release_lease(&msg.saga_id, stored.version, &self.shared.worker_id).await {
            warn!(error = %e, "could not give the lease back; it expires on its own");
        }
        let wait = Duration::from_secs(300);
        self.shared.extend(m, wait).await?;
        Ok(Handled::Retained(wait))
    }

    /// The lease write was refused: say why from the saga as read.
    async fn refused(&self, m: &Received, msg: &StepMessage, stored: Stored, now: Millis) -> Result<Handled> {
        let nudge = !stored.saga.status.is_terminal() && stored.nudge.as_deref() == Some(msg.token.as_str());
        if !saga::accepts(&stored.saga, msg.step, &msg.token) && !nudge {
            info!(current_step = %stored.saga.step, status = stored.saga.status.as_str(), "stale or duplicate message; acknowledged");
            self.shared.ack(m).await?;
            return Ok(Handled::Stale);
        }
        if stored.lease_owner.is_some() && stored.lease_until > now {
            // A worker (possibly this one, in another task) is on this step.
            // Come back when its lease ends: if it finished, this message is
            // stale by then; if it crashed, we take over.
            let wait = Duration::from_millis(stored.lease_until - now) + Duration::from_secs(1);
            self.shared.extend(m, wait).await?;
            return Ok(Handled::Retained(wait));
        }
        if let Some(until) = stored.saga.waiting_until(now) {
            let tr = saga::keep_waiting(&stored.saga, clock(now));
            match self.shared.store.commit(&tr.saga, stored.version, None, SecretWrite::Keep, until + ms(self.shared.timings.sweep_after), None).await {
                Ok(_) => self.shared.send_next(&tr.saga, now).await,
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            self.shared.ack(m).await?;
            return Ok(Handled::Waiting);
        }
        // The lease or the wait ended between the write and the read.
        let wait = Duration::from_secs(1);
        self.shared.extend(m, wait).await?;
        Ok(Handled::Retained(wait))
    }

    fn step_metrics(&self, rotation: &Rotation, attempt: &Saga, outcome: &Outcome, next: &Saga, started: std::time::Instant) {
        let retried = matches!(outcome, Outcome::Failed(_)) && next.step == attempt.step && !next.status.is_terminal();
        if attempt.step == Step::Start && attempt.run.step_attempts == 1 {
            // Counted by the worker that runs it, not the process that asked.
            crate::metrics::emit(
                &[
                    ("RotationId", &attempt.rotation_id),
                    ("TargetKind", rotation.target.kind()),
                    ("Trigger", crate::metrics::trigger_dimension(&attempt.trigger)),
                ],
                &[crate::metrics::Metric { name: "SagaStarted", unit: "Count", value: 1.0 }],
            );
        }
        crate::metrics::emit(
            &[("RotationId", &attempt.rotation_id), ("Step", attempt.step.as_str())],
            &[
                crate::metrics::Metric { name: "StepDuration", unit: "Milliseconds", value: started.elapsed().as_secs_f64() * 1000.0 },
                crate::metrics::Metric { name: "StepRetries", unit: "Count", value: if retried { 1.0 } else { 0.0 } },
            ],
        );
    }

    async fn heartbeat(&self, m: &Received, saga_id: &str, version: u64) {
        self.renew_lease(m, saga_id, version).await;
        self.renew_visibility(m).await;
    }

    async fn renew_lease(&self, m: &Received, saga_id: &str, version: u64) {
        let (lease, _) = self.shared.timings(m.lane);
        let now = self.shared.now_ms();
        let until = now + ms(lease);
        if let Err(e) = self.shared.store.extend(saga_id, version, &self.shared.worker_id, until, until + ms(self.shared.timings.sweep_after)).await {
            warn!(error = %e, "could not extend the lease");
        }
    }

    async fn renew_visibility(&self, m: &Received) {
        let (_, visibility) = self.shared.timings(m.lane);
        if let Err(e) = self.shared.extend(m, visibility).await {
            warn!(error = %e, "could not extend message visibility");
        }
    }

    async fn poison(&self, m: &Received, reason: PoisonReason) -> Result<Handled> {
        let why = reason.to_string();
        error!(reason = %why, receive_count = m.receive_count, "poison message; moving it to the dead-letter queue");
        self.shared.dead_letter(m, &why).await?;
        Ok(Handled::DeadLettered(why))
    }

    /// The new credential: from this run's memory when it has it, else
    /// opened from its stored ciphertext (and kept for the run).
    async fn open_new(&self, saga: &Saga, stored: &Stored, cleartext: &mut Option<NewCredential>) -> Result<NewCredential> {
        let id = saga.keys.new_key.clone().ok_or_else(|| Error::Corrupt("no new key recorded".into()))?;
        if let Some(c) = cleartext.as_ref().filter(|c| c.id == id) {
            return Ok(NewCredential { id, secret: SecretString::from(c.secret.expose_secret().to_owned()) });
        }
        let blob = stored.secret.as_deref().ok_or_else(|| Error::Corrupt(format!("secret of new key {id} is not stored")))?;
        let secret: SecretString = self.sealer.open(&saga.saga_id, blob).await?;
        *cleartext = Some(NewCredential { id: id.clone(), secret: SecretString::from(secret.expose_secret().to_owned()) });
        Ok(NewCredential { id, secret })
    }

    /// `start`: the target's preflight, then the credential's keys.
    async fn start(&self, rot: &Rotation, saga: &Saga) -> StepResult {
        match rot.target.preflight().await {
            Err(e) => StepResult::of(Err(e)),
            Ok(()) => {
                let limit = rot.source.max_credentials();
                match rot.source.inventory().await {
                    Ok(keys) if keys.len() >= limit && !saga.person.manual && saga.trust.is_none() => {
                        match self.attention.keys_of_earlier_sagas(saga, &keys).await {
                            // No room for a new key, and one of them ours: say which saga holds them.
                            Some(message) => StepResult::of(Err(Error::Refused { code: "KeysOfEarlierSaga", message })),
                            None => StepResult::of(Ok(Effect::Started { keys, limit })),
                        }
                    }
                    r => StepResult::of(r.map(|keys| Effect::Started { keys, limit })),
                }
            }
        }
    }

    /// `issue_new`: create the key and seal its secret. `None` means a
    /// fault point fired.
    async fn issue_new(
        &self,
        src: &dyn crate::connectors::CredentialSource,
        saga: &Saga,
        stored: &Stored,
        old_ids: &[String],
        cleartext: &mut Option<NewCredential>,
    ) -> Option<StepResult> {
        if let (Some(id), true) = (&saga.keys.new_key, stored.secret.is_some()) {
            return Some(StepResult::of(Ok(Effect::Issued { key_id: id.clone() })));
        }
        #[cfg(feature = "fault-injection")]
        if let Some(action) = self.faults.before_issue.take() {
            action.await;
        }
        let grant = match self.grant(src, saga, stored).await {
            Ok(g) => g,
            Err(e) => return Some(StepResult::of(Err(e))),
        };
        // `issue_intents` counts this attempt too (recorded with the
        // lease); only earlier attempts can have left an orphan.
        let cred = match src.issue_granted(old_ids, &saga.earlier_issue_intents(), grant.as_ref()).await {
            Ok(c) => c,
            Err(e) => return Some(StepResult::of(Err(e))),
        };
        #[cfg(feature = "fault-injection")]
        if Faults::fire(&self.faults.crash_after_issue) {
            return None;
        }
        Some(match self.sealer.seal(&saga.saga_id, &cred.secret).await {
            // Unstored, the key is an orphan: the next attempt deletes it.
            Err(e) => StepResult::of(Err(e)),
            Ok(blob) => {
                let key_id = cred.id.clone();
                *cleartext = Some(cred);
                StepResult { outcome: Outcome::Done(Effect::Issued { key_id }), secret: SecretWrite::Set(blob) }
            }
        })
    }

    /// The source's grant for `issue` ([`crate::connectors::CredentialSource::grant`]):
    /// a new one, sealed and stored under the lease before the source is
    /// called with it (so whatever the call does, the grant it used is
    /// kept). When no new one can be had — an earlier attempt's call may
    /// have killed the credential that gets one — the one sealed before
    /// that call.
    async fn grant(&self, src: &dyn crate::connectors::CredentialSource, saga: &Saga, stored: &Stored) -> Result<Option<SecretString>> {
        let grant = match (src.grant().await, &stored.grant) {
            (Ok(Some(grant)), _) => grant,
            (Ok(None), _) => return Ok(None),
            (Err(e), None) => return Err(e),
            (Err(e), Some(blob)) => {
                info!(code = %e.code(), "no new grant; using the one sealed before an earlier attempt's call");
                return self.sealer.open(&saga.saga_id, blob).await.map(Some);
            }
        };
        let blob = self.sealer.seal(&saga.saga_id, &grant).await?;
        self.shared.store.seal_grant(&saga.saga_id, stored.version, &self.shared.worker_id, blob).await?;
        Ok(Some(grant))
    }

    /// The I/O of one step. `None` means a fault point fired.
    async fn run_step(&self, rot: &Rotation, saga: &Saga, stored: &Stored, cleartext: &mut Option<NewCredential>) -> Option<StepResult> {
        let old_ids: Vec<String> = saga.keys.old_keys.iter().map(|k| k.id.clone()).collect();
        let src = rot.source.as_ref();
        if saga.exposure.is_some() && matches!(saga.step, Step::Start | Step::IssueNew | Step::ProveNew) {
            // An emergency's target gets ready (its API token) while the
            // new key is made and proven: the push then does not wait for it.
            let target = rot.target.clone();
            tokio::spawn(async move { target.warm().await });
        }
        let r = match saga.step {
            // A target that would be damaged refuses before anything is created.
            Step::Start => self.start(rot, saga).await,
            Step::IssueNew => return self.issue_new(src, saga, stored, &old_ids, cleartext).await,
            Step::ProveNew => {
                let r = async {
                    let cred = self.open_new(saga, stored, cleartext).await?;
                    src.prove(&cred).await
                };
                StepResult::of(r.await.map(|_| Effect::Proven))
            }
            Step::PushToTarget => {
                let r = async {
                    let cred = self.open_new(saga, stored, cleartext).await?;
                    rot.target.push(&cred, &old_ids).await
                };
                StepResult::of(r.await.map(|_| Effect::Pushed))
            }
            Step::VerifyTarget => {
                let new_id = saga.keys.new_key.clone().unwrap_or_default();
                StepResult::of(rot.target.verify(&new_id, &old_ids).await.map(Effect::Verified))
            }
            Step::DisableOld => StepResult::of(disable_old(src, saga, &old_ids).await.map(|_| Effect::Disabled)),
            Step::RetireOld if !saga.usage_gate() => {
                // The old key is the exposed one: any use is the attacker's.
                StepResult::of(for_each(&old_ids, |id| src.revoke(id)).await.map(|_| Effect::Retired))
            }
            Step::RetireOld => {
                let since = saga.usage_cutoff();
                StepResult::of(for_each(&old_ids, |id| src.retire(id, since)).await.map(|_| Effect::Retired))
            }
            Step::DisableNew => {
                let r = async {
                    if saga.effects.old_disabled {
                        for_each(&old_ids, |id| src.enable(id)).await?;
                    }
                    match &saga.keys.new_key {
                        Some(id) if !saga.effects.new_revoked => src.disable(id).await,
                        _ => Ok(()),
                    }
                };
                StepResult::of(r.await.map(|_| Effect::DisabledNew))
            }
            Step::RetireNew => {
                let since = saga.usage_cutoff();
                let r = match &saga.keys.new_key {
                    Some(id) => src.retire(id, since).await.map_err(|e| match e {
                        Error::Refused { code: "OldKeyUsedAfterSwitch", message } => Error::Refused { code: "NewKeyUsedAfterResolution", message },
                        other => other,
                    }),
                    None => Ok(()),
                };
                StepResult::of(r.map(|_| Effect::RetiredNew))
            }
            Step::RestoreNew => {
                let r = match &saga.keys.new_key {
                    Some(id) => src.enable(id).await,
                    None => Ok(()),
                };
                StepResult::of(r.map(|_| Effect::RestoredNew))
            }
            Step::RevokeNew => {
                let r = match &saga.keys.new_key {
                    Some(id) => src.revoke(id).await,
                    None => Ok(()),
                };
                StepResult::of(r.map(|_| Effect::Revoked))
            }
            Step::RestoreOld => StepResult::of(for_each(&old_ids, |id| src.enable(id)).await.map(|_| Effect::Restored)),
            Step::AwaitNew | Step::AwaitRetire => StepResult::of(self.prompt(rot, saga).await),
            Step::AwaitTrust | Step::SwitchNew | Step::AwaitSignIn | Step::SwitchBack | Step::RemoveOld => {
                StepResult::of(self.trust_step(rot, saga).await)
            }
            Step::Finalize => {
                // The console handover secrets go however the saga ended.
                let r = match self.handovers.cleanup(saga).await {
                    Ok(()) => self.finalizer.finalize(rot, saga).await,
                    Err(e) => Err(e),
                };
                StepResult { outcome: into_outcome(r.map(|_| Effect::Finalized)), secret: SecretWrite::Erase }
            }
        };
        Some(r)
    }
}

impl<Q: Queue> Steps<Q> {
    /// A wait on a person came due. The console handover first
    /// (docs/scim.md): a token or confirmation left there moves the saga on
    /// as `provide`/`confirm` do, with no notice; otherwise ask or remind.
    async fn prompt(&self, rot: &Rotation, saga: &Saga) -> Result<Effect> {
        let hand = rot.source.by_hand().ok_or_else(|| Error::Corrupt(format!("saga waits on a person but {} is not made by hand", rot.source.kind())))?;
        let expired = saga::prompt(saga, self.shared.now_ms()) == saga::Prompt::Expired;
        match self.handovers.handover_prompt(saga, hand, expired).await {
            None => Ok(Effect::Prompted),
            Some(hand) => self.finalizer.prompt_person(rot, saga, hand).await,
        }
    }
}

/// `disable_old`: deactivate the old credential(s).
async fn disable_old(src: &dyn crate::connectors::CredentialSource, saga: &Saga, old_ids: &[String]) -> Result<()> {
    // A keep-new resolution of a saga whose new key a keep-old resolution
    // had deactivated: reactivate it first.
    if let (true, Some(id)) = (saga.resolution.new_disabled, &saga.keys.new_key) {
        src.enable(id).await?;
    }
    if saga.effects.old_deleted {
        return Ok(());
    }
    for_each(old_ids, |id| async move {
        match src.disable(id).await {
            // Nothing to disable: it stays valid through the grace period.
            Err(Error::Refused { code: crate::connectors::CANNOT_DISABLE, .. }) => Ok(()),
            r => r,
        }
    })
    .await
}

impl<Q: Queue> Steps<Q> {
    /// The steps of a saga with the trust shape ([`saga::Trust`]): the
    /// person's waits (ask, remind, or report the deadline) and the
    /// source's switches and removal.
    async fn trust_step(&self, rot: &Rotation, saga: &Saga) -> Result<Effect> {
        let src = rot.source.as_ref();
        let new = saga.keys.new_key.clone().ok_or_else(|| Error::Corrupt("no new credential recorded".into()));
        let old = saga.trust.as_ref().and_then(|t| t.old.clone());
        match saga.step {
            Step::AwaitTrust | Step::AwaitSignIn => {
                if saga::prompt(saga, self.shared.now_ms()) == saga::Prompt::Expired {
                    warn!(deadline = saga.person.deadline, "nobody acted before the deadline");
                    return Ok(Effect::Expired);
                }
                let steps = src.trust_steps(saga.step, &new?, old.as_deref()).await?;
                self.finalizer.prompt_trust(rot, saga, &steps).await
            }
            Step::SwitchNew => src.switch(&new?).await.map(|_| Effect::Switched),
            Step::SwitchBack => match old {
                Some(old) => src.switch(&old).await.map(|_| Effect::Switched),
                None => Err(Error::Corrupt("no old credential to switch back to".into())),
            },
            Step::RemoveOld => match old {
                Some(old) => src.retire(&old, saga.usage_cutoff()).await.map(|_| Effect::Retired),
                None => Ok(Effect::Retired),
            },
            other => Err(Error::Corrupt(format!("{other} is not a step of a trust saga"))),
        }
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
