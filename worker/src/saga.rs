//! The rotation saga as a pure state machine.
//!
//! Nothing in this module does I/O or reads a clock. The engine feeds it the
//! saga as stored, the outcome of the step it just ran, the current time and
//! a jitter draw; it answers with the next saga state and whether (and when)
//! a message for the next step must be sent. That split is what lets the
//! transition rules be tested exhaustively (see the tests at the bottom and
//! `tests/` for the I/O around them).
//!
//! # Steps
//!
//! ```text
//! Start ─► IssueNew ─► ProveNew ─► PushToTarget ─► VerifyTarget ─► DisableOld ─► RetireOld ─► Finalize(Succeeded)
//!   │         │           │            │   (4xx)        │  holds old        │            │ used after switch
//!   │         │           │            ▼                ▼                   ▼            ▼
//!   │         └───────────┴──────► RevokeNew ─────► Finalize(Compensated)   Finalize(NeedsAttention)
//!   ▼                                                                        ▲
//! Finalize(Refused)                       RetireOld ──rollback──► RestoreOld ─► Finalize(RolledBack)
//! ```
//!
//! # Credentials made by a person
//!
//! Some credentials have no API (IAM Identity Center SCIM tokens): only a
//! person can create or delete them. A saga for such a source (`manual`)
//! replaces the machine steps that would call that API with *waits on a
//! person*:
//!
//! ```text
//! Start ─► AwaitNew ──`keyturn provide`──► PushToTarget ─► VerifyTarget ─► AwaitRetire ──`keyturn confirm`──► Finalize(Succeeded)
//!            │ deadline                        │ (4xx)          │ unhealthy       │ deadline
//!            ▼                                 ▼                ▼                 ▼
//!   Finalize(Compensated)            Finalize(Compensated)  Finalize(NeedsAttention)
//! ```
//!
//! A wait step sends a notice each time it runs ([`prompt`] decides which:
//! the first is `action_required`, later ones are reminders, at the deadline
//! it gives up) and re-arms itself `reminder_every` later. The person's
//! command is a transition of its own ([`provide`], [`confirm_retired`]),
//! committed like any other. Nothing is revoked automatically for such a
//! source: a rejected or unused new token is left for the person to delete,
//! and the notice says so.
//!
//! # The compensation rule
//!
//! The new credential is revoked only while no consumer can hold it: the
//! target was never sent it, rejected it outright (a definite 4xx), or
//! verification shows the target still holds the old credential. Once the
//! target *may* hold the new credential, failures roll forward or stop in
//! `NeedsAttention` with both credentials active — Auth0's secret is
//! write-only, so the old one can never be put back. [`Saga::may_revoke_new`]
//! is the single predicate for this and every path that plans `RevokeNew`
//! goes through it.

use serde::{Deserialize, Serialize};

/// Milliseconds since the UNIX epoch. The machine never reads the clock.
pub type Millis = u64;

/// A step of the saga. Each travels as one SQS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Record the credential's current state (e.g. the user's keys).
    Start,
    /// Create the new credential; store its secret KMS-encrypted.
    IssueNew,
    /// Show the new credential authenticates (key propagation).
    ProveNew,
    /// Hand the new credential to the target (Auth0 PATCH).
    PushToTarget,
    /// Read the target back and decide whether it holds the new credential.
    VerifyTarget,
    /// Deactivate the old credential.
    DisableOld,
    /// After the grace period: check the old credential's last use, delete it.
    RetireOld,
    /// Compensation: delete the new credential no consumer holds.
    RevokeNew,
    /// Operator rollback: reactivate the old credential.
    RestoreOld,
    /// Erase the secret, release the lock, notify.
    Finalize,
    /// Wait for a person to create the new credential and hand it over
    /// (`keyturn provide`); remind them; give up at the deadline.
    AwaitNew,
    /// Wait for a person to delete the old credential and confirm it
    /// (`keyturn confirm`); remind them; stop at the deadline.
    AwaitRetire,
}

impl Step {
    pub const ALL: [Step; 12] = [
        Step::Start,
        Step::IssueNew,
        Step::ProveNew,
        Step::PushToTarget,
        Step::VerifyTarget,
        Step::DisableOld,
        Step::RetireOld,
        Step::RevokeNew,
        Step::RestoreOld,
        Step::Finalize,
        Step::AwaitNew,
        Step::AwaitRetire,
    ];

    /// Steps that use the new credential's secret.
    pub fn needs_secret(self) -> bool {
        matches!(self, Step::ProveNew | Step::PushToTarget)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::IssueNew => "issue_new",
            Step::ProveNew => "prove_new",
            Step::PushToTarget => "push_to_target",
            Step::VerifyTarget => "verify_target",
            Step::DisableOld => "disable_old",
            Step::RetireOld => "retire_old",
            Step::RevokeNew => "revoke_new",
            Step::RestoreOld => "restore_old",
            Step::Finalize => "finalize",
            Step::AwaitNew => "await_new",
            Step::AwaitRetire => "await_retire",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the saga is as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Compensating,
    /// New credential live in the target, old one retired.
    Succeeded,
    /// A step failed; what was safe to undo was undone. Old credential untouched.
    Compensated,
    /// Refused at start (precondition), nothing changed.
    Refused,
    /// Stopped with both credentials in place; a person must decide.
    NeedsAttention,
    /// Operator rolled back during the grace period: old credential active again.
    RolledBack,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Running | Status::Compensating)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Succeeded => "succeeded",
            Status::Compensated => "compensated",
            Status::Refused => "refused",
            Status::NeedsAttention => "needs_attention",
            Status::RolledBack => "rolled_back",
        }
    }
}

/// What keyturn knows about the target's copy of the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Never sent the new credential.
    Untouched,
    /// Sent it, and the target refused it with a definite client error.
    Rejected,
    /// A push may have landed (timeout or 5xx on the write).
    Uncertain,
    /// The target answered 2xx to the push.
    Accepted,
    /// Verification saw the new credential (or accepted + provider healthy).
    HoldsNew,
    /// Verification saw the old credential: the push did not take.
    HoldsOld,
}

impl TargetState {
    /// May a consumer be using the new credential now?
    pub fn may_hold_new(self) -> bool {
        matches!(self, TargetState::Uncertain | TargetState::Accepted | TargetState::HoldsNew)
    }
}

/// One credential the source had when the saga started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub id: String,
    pub active: bool,
    pub created_at: Option<Millis>,
}

/// A failure as recorded in history and notifications. Never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub step: Step,
    pub code: String,
    pub message: String,
    pub operator_fixable: bool,
}

/// A Security Hub finding a saga was started from (to update when it ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRef {
    pub id: String,
    pub product_arn: String,
}

/// One recorded step attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Millis,
    pub step: Step,
    pub attempt: u32,
    /// `ok`, `retry`, `wait`, `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Cap on recorded attempts so an item stays far below DynamoDB's 400 KB.
pub const HISTORY_LIMIT: usize = 200;

/// The saga as stored (minus the encrypted secret, which lives in its own
/// binary attribute and is represented here only by `secret_stored`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub saga_id: String,
    pub rotation_id: String,
    /// Lock key of the credential, e.g. `iam_access_key:auth0-ses-sender`.
    pub credential: String,
    pub trigger: String,
    pub status: Status,
    pub step: Step,
    /// Token the next message for `step` must carry; anything else is stale.
    pub token: String,
    /// Attempts of the current step so far.
    pub step_attempts: u32,
    pub step_started_at: Millis,
    /// Do not run `step` before this (durable waits: retry delays, grace).
    pub not_before: Millis,
    /// End of the grace period once the old credential is disabled.
    pub grace_until: Option<Millis>,
    pub old_keys: Vec<KeyRef>,
    pub new_key: Option<String>,
    pub secret_stored: bool,
    /// How many times `IssueNew` recorded the intent to create a key.
    pub issue_intents: u32,
    pub target: TargetState,
    pub switched_at: Option<Millis>,
    pub old_disabled: bool,
    pub old_deleted: bool,
    pub new_revoked: bool,
    pub old_restored: bool,
    /// Status to reach when `Finalize` completes.
    pub closing: Option<Status>,
    pub failure: Option<Failure>,
    /// Human-readable list of compensating actions taken.
    pub compensations: Vec<String>,
    pub history: Vec<Attempt>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Findings this saga was started from; resolved or annotated at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingRef>,
    /// The source's credentials are created and deleted by a person: the
    /// saga waits for them (`AwaitNew`, `AwaitRetire`) instead of calling an API.
    #[serde(default)]
    pub manual: bool,
    /// End of the current wait on a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// Notices sent during the current wait on a person (0: none yet).
    #[serde(default)]
    pub prompts: u32,
}

/// What a step produced when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Started { keys: Vec<KeyRef> },
    Issued { key_id: String },
    Proven,
    Pushed,
    Verified(Verification),
    Disabled,
    Retired,
    Revoked,
    Restored,
    Finalized,
    /// A wait step sent its notice (action required or reminder).
    Prompted,
    /// A wait step reached its deadline without the person's command.
    Expired,
}

/// What reading the target back showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The target reports the new credential's id.
    HoldsNew,
    /// The target reports an old credential's id.
    HoldsOld,
    /// The target is configured and enabled but does not reveal which id.
    Opaque,
    /// The target is misconfigured (wrong provider, disabled): the reason.
    Unhealthy(String),
}

/// A failed step attempt, as the engine classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub may_have_applied: bool,
    pub operator_fixable: bool,
    /// Server-requested wait, milliseconds.
    pub retry_after: Option<u64>,
}

impl From<&crate::error::Error> for StepError {
    fn from(e: &crate::error::Error) -> Self {
        StepError {
            code: e.code(),
            message: e.to_string(),
            retryable: e.is_retryable(),
            may_have_applied: e.may_have_applied(),
            operator_fixable: e.operator_fixable(),
            retry_after: e.retry_after().map(|d| d.as_millis() as u64),
        }
    }
}

/// The result of running one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(Effect),
    Failed(StepError),
}

/// Retry and timing policy for one rotation. All durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Attempts of one step before it counts as failed for good.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_base: u64,
    /// Longest retry delay.
    pub retry_cap: u64,
    /// How long `ProveNew` keeps trying before the new key counts as broken.
    pub propagation_timeout: u64,
    /// Between deactivating and deleting the old credential.
    pub grace_period: u64,
    /// Between notices while waiting on a person.
    pub reminder_every: u64,
    /// How long a person has for each thing the saga waits on them for.
    pub person_deadline: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 6,
            retry_base: 2_000,
            retry_cap: 300_000,
            propagation_timeout: 300_000,
            grace_period: 7 * 24 * 3_600_000,
            reminder_every: 24 * 3_600_000,
            person_deadline: 7 * 24 * 3_600_000,
        }
    }
}

/// What the engine must do after committing the new saga state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send a message for `saga.step` with `saga.token`, visible at `saga.not_before`.
    Run,
    /// Terminal: send nothing.
    Stop,
}

/// The machine's answer: the state to commit and what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub saga: Saga,
    pub next: Next,
}

/// Inputs the machine cannot compute itself.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Millis,
    /// Uniform draw in [0, 1) used for retry jitter.
    pub jitter: f64,
    /// Fresh token for the next message (the engine makes a random one).
    pub token: u128,
}

impl Saga {
    /// A new saga, at `Start`.
    pub fn new(saga_id: String, rotation_id: String, credential: String, trigger: String, now: Millis, token: u128) -> Saga {
        Saga {
            saga_id,
            rotation_id,
            credential,
            trigger,
            status: Status::Running,
            step: Step::Start,
            token: format!("{token:032x}"),
            step_attempts: 0,
            step_started_at: now,
            not_before: now,
            grace_until: None,
            old_keys: Vec::new(),
            new_key: None,
            secret_stored: false,
            issue_intents: 0,
            target: TargetState::Untouched,
            switched_at: None,
            old_disabled: false,
            old_deleted: false,
            new_revoked: false,
            old_restored: false,
            closing: None,
            failure: None,
            compensations: Vec::new(),
            history: Vec::new(),
            created_at: now,
            updated_at: now,
            findings: Vec::new(),
            manual: false,
            deadline: None,
            prompts: 0,
        }
    }

    /// Whether the saga is waiting on a person.
    pub fn awaits_person(&self) -> bool {
        !self.status.is_terminal() && matches!(self.step, Step::AwaitNew | Step::AwaitRetire)
    }

    /// The compensation rule: may the new credential be deleted now?
    pub fn may_revoke_new(&self) -> bool {
        !self.target.may_hold_new()
    }

    /// Whether the saga is waiting (retry delay or grace period) at `now`.
    pub fn waiting_until(&self, now: Millis) -> Option<Millis> {
        let until = match self.step {
            Step::RetireOld => self.not_before.max(self.grace_until.unwrap_or(0)),
            _ => self.not_before,
        };
        (until > now).then_some(until)
    }

    /// Record a command (not a step attempt) in the history.
    fn note(&mut self, at: Millis, outcome: &str, message: String) {
        self.updated_at = at;
        self.history.push(Attempt { at, step: self.step, attempt: self.step_attempts, outcome: outcome.into(), code: None, message: Some(message) });
    }

    fn record(&mut self, at: Millis, outcome: &str, err: Option<&StepError>) {
        self.history.push(Attempt {
            at,
            step: self.step,
            attempt: self.step_attempts,
            outcome: outcome.into(),
            code: err.map(|e| e.code.clone()),
            message: err.map(|e| e.message.clone()),
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    fn goto(&mut self, step: Step, clock: Clock) {
        self.step = step;
        self.step_attempts = 0;
        self.step_started_at = clock.now;
        self.not_before = clock.now;
        self.token = format!("{:032x}", clock.token);
        self.prompts = 0;
        self.deadline = None;
    }

    /// Start waiting on a person, until `policy.person_deadline` from now.
    fn await_person(&mut self, step: Step, policy: &Policy, clock: Clock) {
        self.goto(step, clock);
        self.deadline = Some(clock.now.saturating_add(policy.person_deadline));
    }

    /// Stop forward progress: go to `Finalize` and end in `status`.
    fn close(&mut self, status: Status, clock: Clock) {
        self.closing = Some(status);
        self.goto(Step::Finalize, clock);
    }

    /// Start compensating: revoke the new credential if there is one.
    fn compensate(&mut self, clock: Clock) {
        debug_assert!(self.may_revoke_new());
        self.status = Status::Compensating;
        if self.manual {
            // No API can delete it: the notice tells the person to.
            self.close(Status::Compensated, clock);
        } else if self.new_key.is_some() && !self.new_revoked {
            self.goto(Step::RevokeNew, clock);
        } else {
            self.close(Status::Compensated, clock);
        }
    }

    fn fail(&mut self, err: &StepError) {
        self.failure = Some(Failure {
            step: self.step,
            code: err.code.clone(),
            message: err.message.clone(),
            operator_fixable: err.operator_fixable,
        });
    }
}

/// Retry delay for the attempt that just failed: exponential with full
/// jitter in [base/2, base], at least what the server asked for.
pub fn retry_delay(policy: &Policy, attempt: u32, jitter: f64, server_hint: Option<u64>) -> u64 {
    let exp = policy.retry_base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(policy.retry_cap);
    let jittered = capped / 2 + ((capped / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    jittered.max(server_hint.unwrap_or(0))
}

/// Mark the start of an attempt (taken together with the lease). For
/// `IssueNew` this records the intent to create a key *before* IAM is
/// called, which is what lets a crashed attempt's key be recognised as an
/// orphan on re-entry.
pub fn begin_attempt(saga: &Saga) -> Saga {
    let mut s = saga.clone();
    s.step_attempts += 1;
    if s.step == Step::IssueNew {
        s.issue_intents += 1;
    }
    s
}

/// A step whose wait is not over yet: re-arm the same step with a fresh
/// token (so a duplicate of this message becomes stale) and keep waiting.
pub fn keep_waiting(saga: &Saga, clock: Clock) -> Transition {
    let mut s = saga.clone();
    s.token = format!("{:032x}", clock.token);
    s.updated_at = clock.now;
    Transition { saga: s, next: Next::Run }
}

/// The transition function. `saga` is the state the step ran against (after
/// [`begin_attempt`]); `outcome` what it produced.
pub fn advance(saga: &Saga, outcome: &Outcome, policy: &Policy, clock: Clock) -> Transition {
    let mut s = saga.clone();
    s.updated_at = clock.now;
    if s.status.is_terminal() {
        return Transition { saga: s, next: Next::Stop };
    }
    match outcome {
        Outcome::Done(effect) => {
            s.record(clock.now, "ok", None);
            on_done(&mut s, effect, policy, clock);
        }
        Outcome::Failed(err) => {
            let budget_left = match s.step {
                Step::ProveNew => clock.now < s.step_started_at.saturating_add(policy.propagation_timeout),
                // Cleanup must not give up quickly: secrets and locks are at stake.
                Step::Finalize | Step::RevokeNew | Step::RestoreOld => s.step_attempts < policy.max_attempts.saturating_mul(3),
                _ => s.step_attempts < policy.max_attempts,
            };
            let time_up = s.awaits_person() && s.deadline.is_some_and(|d| clock.now >= d);
            if time_up {
                s.record(clock.now, "failed", Some(err));
                expire(&mut s, policy, clock);
            } else if err.retryable && budget_left {
                s.record(clock.now, "retry", Some(err));
                if err.may_have_applied && s.step == Step::PushToTarget {
                    s.target = TargetState::Uncertain;
                }
                s.not_before = clock.now + retry_delay(policy, s.step_attempts, clock.jitter, err.retry_after);
                if let (true, Some(d)) = (s.awaits_person(), s.deadline) {
                    // A wait on a person ends at its deadline, retries or not.
                    s.not_before = s.not_before.min(d);
                }
                s.token = format!("{:032x}", clock.token);
            } else {
                s.record(clock.now, "failed", Some(err));
                on_failed(&mut s, err, clock);
            }
        }
    }
    if s.step == Step::Finalize && s.closing.is_none() {
        // Defensive: every path into Finalize names its end state.
        s.closing = Some(Status::NeedsAttention);
    }
    // Only `prove_new` and `push_to_target` use the new secret: past them it
    // is erased at once, not kept (sealed) through a grace period of days.
    if s.secret_stored && !s.step.needs_secret() && !s.status.is_terminal() {
        s.secret_stored = false;
    }
    if s.status.is_terminal() {
        Transition { saga: s, next: Next::Stop }
    } else {
        Transition { saga: s, next: Next::Run }
    }
}

fn on_done(s: &mut Saga, effect: &Effect, policy: &Policy, clock: Clock) {
    match (s.step, effect) {
        (Step::Start, Effect::Started { .. }) if s.manual => {
            // Nothing to list: the old credential is the one the person
            // named when asking for the rotation (or names when providing).
            s.await_person(Step::AwaitNew, policy, clock);
        }
        (Step::Start, Effect::Started { keys }) => {
            s.old_keys = keys.clone();
            if keys.len() >= 2 {
                s.failure = Some(Failure {
                    step: Step::Start,
                    code: "TooManyKeys".into(),
                    message: format!(
                        "the credential already has {} keys that keyturn does not know ({}); a new key cannot be created",
                        keys.len(),
                        keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    operator_fixable: true,
                });
                s.close(Status::Refused, clock);
            } else {
                s.goto(Step::IssueNew, clock);
            }
        }
        (Step::IssueNew, Effect::Issued { key_id }) => {
            s.new_key = Some(key_id.clone());
            s.secret_stored = true;
            s.goto(Step::ProveNew, clock);
        }
        (Step::ProveNew, Effect::Proven) => s.goto(Step::PushToTarget, clock),
        (Step::PushToTarget, Effect::Pushed) => {
            s.target = TargetState::Accepted;
            s.switched_at = Some(clock.now);
            s.goto(Step::VerifyTarget, clock);
        }
        (Step::VerifyTarget, Effect::Verified(v)) => match v {
            Verification::HoldsNew => {
                s.target = TargetState::HoldsNew;
                s.switched_at.get_or_insert(clock.now);
                after_switch(s, policy, clock);
            }
            Verification::Opaque if s.target == TargetState::Accepted => {
                // The push was answered 2xx and the provider is healthy:
                // the target does not reveal ids, so this is as far as
                // verification can go.
                s.target = TargetState::HoldsNew;
                after_switch(s, policy, clock);
            }
            Verification::Opaque => {
                s.failure = Some(Failure {
                    step: Step::VerifyTarget,
                    code: "TargetStateUnknown".into(),
                    message: "the push to the target did not get a clear answer and the target does not reveal which key it holds".into(),
                    operator_fixable: true,
                });
                s.close(Status::NeedsAttention, clock);
            }
            Verification::HoldsOld => {
                s.target = TargetState::HoldsOld;
                s.failure.get_or_insert(Failure {
                    step: Step::VerifyTarget,
                    code: "TargetKeptOldKey".into(),
                    message: "the target still holds the old key after the push".into(),
                    operator_fixable: false,
                });
                s.compensate(clock);
            }
            Verification::Unhealthy(reason) => {
                s.failure = Some(Failure {
                    step: Step::VerifyTarget,
                    code: "TargetUnhealthy".into(),
                    message: reason.clone(),
                    operator_fixable: true,
                });
                s.close(Status::NeedsAttention, clock);
            }
        },
        (Step::DisableOld, Effect::Disabled) => {
            s.old_disabled = true;
            s.goto(Step::RetireOld, clock);
            s.grace_until = Some(clock.now + policy.grace_period);
        }
        (Step::RetireOld, Effect::Retired) => {
            s.old_deleted = true;
            s.close(Status::Succeeded, clock);
        }
        (Step::RevokeNew, Effect::Revoked) => {
            s.new_revoked = true;
            if let Some(id) = &s.new_key {
                s.compensations.push(format!("deleted new key {id} (no consumer held it)"));
            }
            s.close(Status::Compensated, clock);
        }
        (Step::RestoreOld, Effect::Restored) => {
            s.old_restored = true;
            s.old_disabled = false;
            s.compensations.push(format!("reactivated old key {}", old_ids(s)));
            s.close(Status::RolledBack, clock);
        }
        (Step::Finalize, Effect::Finalized) => {
            s.status = s.closing.unwrap_or(Status::NeedsAttention);
            s.secret_stored = false;
        }
        (Step::AwaitNew | Step::AwaitRetire, Effect::Prompted) if s.deadline.is_none_or(|d| clock.now < d) => {
            // Stay, and come back for the next reminder (or the deadline).
            s.prompts += 1;
            s.step_attempts = 0;
            let deadline = s.deadline.unwrap_or(u64::MAX);
            s.not_before = clock.now.saturating_add(policy.reminder_every).min(deadline);
            s.token = format!("{:032x}", clock.token);
        }
        // A notice sent at or after the deadline changes nothing: time is up.
        (Step::AwaitNew | Step::AwaitRetire, Effect::Prompted | Effect::Expired) => expire(s, policy, clock),
        (step, effect) => {
            // A connector returned an effect for another step: a bug. Stop
            // safely rather than guess.
            s.failure = Some(Failure {
                step,
                code: "InternalError".into(),
                message: format!("step {step} produced unexpected effect {effect:?}"),
                operator_fixable: false,
            });
            if s.may_revoke_new() && step != Step::Finalize {
                s.compensate(clock);
            } else {
                s.close(Status::NeedsAttention, clock);
            }
        }
    }
}

/// A wait on a person reached its deadline.
fn expire(s: &mut Saga, policy: &Policy, clock: Clock) {
    if s.step == Step::AwaitNew {
        s.failure = Some(Failure {
            step: Step::AwaitNew,
            code: "DeadlinePassed".into(),
            message: format!("no new credential was handed over within {}; keyturn stopped waiting", human_ms(policy.person_deadline)),
            operator_fixable: true,
        });
        s.compensate(clock);
    } else {
        s.failure = Some(Failure {
            step: Step::AwaitRetire,
            code: "OldNotConfirmedDeleted".into(),
            message: format!(
                "the target uses the new credential, but nobody confirmed deleting the old one within {}",
                human_ms(policy.person_deadline)
            ),
            operator_fixable: true,
        });
        s.close(Status::NeedsAttention, clock);
    }
}

fn after_switch(s: &mut Saga, policy: &Policy, clock: Clock) {
    if s.manual {
        // Even with no old token on record, the one the target used before
        // is still valid until a person deletes it.
        s.await_person(Step::AwaitRetire, policy, clock);
    } else if s.old_keys.is_empty() {
        s.close(Status::Succeeded, clock);
    } else {
        s.goto(Step::DisableOld, clock);
    }
}

fn old_ids(s: &Saga) -> String {
    s.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
}

fn on_failed(s: &mut Saga, err: &StepError, clock: Clock) {
    match s.step {
        Step::Start => {
            s.fail(err);
            s.close(Status::Refused, clock);
        }
        Step::IssueNew | Step::ProveNew => {
            s.fail(err);
            s.compensate(clock);
        }
        Step::PushToTarget => {
            s.fail(err);
            if err.may_have_applied || s.target == TargetState::Uncertain {
                // We cannot tell whether the target took it: read it back.
                s.target = TargetState::Uncertain;
                s.goto(Step::VerifyTarget, clock);
            } else {
                s.target = TargetState::Rejected;
                s.compensate(clock);
            }
        }
        Step::VerifyTarget => {
            s.fail(err);
            if s.may_revoke_new() {
                s.compensate(clock);
            } else {
                s.close(Status::NeedsAttention, clock);
            }
        }
        Step::AwaitNew => {
            // Could not even tell the person (e.g. SNS down for good).
            s.fail(err);
            s.compensate(clock);
        }
        Step::DisableOld | Step::RetireOld | Step::RestoreOld | Step::AwaitRetire => {
            // The target holds the new key: never undo that. Stop with both
            // keys in place for a person.
            s.fail(err);
            s.close(Status::NeedsAttention, clock);
        }
        Step::RevokeNew => {
            s.failure.get_or_insert(Failure {
                step: Step::RevokeNew,
                code: err.code.clone(),
                message: err.message.clone(),
                operator_fixable: err.operator_fixable,
            });
            s.compensations.push(format!("could not delete new key: {}", err.code));
            s.close(Status::NeedsAttention, clock);
        }
        Step::Finalize => {
            // Cleanup (erase the secret, release the lock, notify) failed for
            // good. End the saga, but as needing a person: the lock may still
            // be held and the encrypted secret may still be stored.
            s.failure.get_or_insert(Failure {
                step: Step::Finalize,
                code: err.code.clone(),
                message: err.message.clone(),
                operator_fixable: err.operator_fixable,
            });
            s.compensations.push(format!("cleanup incomplete ({}): secret erasure or lock release may not have happened", err.code));
            s.status = Status::NeedsAttention;
        }
    }
}

/// Why an operator's rollback request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RollbackRefused(pub String);

/// Whether a step message belongs to the saga's current step. Duplicates,
/// redeliveries and messages of an earlier attempt carry another token and
/// are acknowledged without effect.
pub fn accepts(saga: &Saga, step: Step, token: &str) -> bool {
    !saga.status.is_terminal() && saga.step == step && saga.token == token
}

/// Operator rollback during the grace period: reactivate the old key. Only
/// possible while the old key is disabled and not yet deleted.
pub fn request_rollback(saga: &Saga, clock: Clock) -> Result<Saga, RollbackRefused> {
    if saga.status.is_terminal() {
        return Err(RollbackRefused(format!("saga {} already ended ({})", saga.saga_id, saga.status.as_str())));
    }
    if saga.step != Step::RetireOld || !saga.old_disabled || saga.old_deleted {
        return Err(RollbackRefused(format!(
            "saga {} is at step {}; rollback is possible only during the grace period, after the old key was deactivated and before it is deleted",
            saga.saga_id, saga.step
        )));
    }
    let mut s = saga.clone();
    s.note(clock.now, "rollback_requested", "operator asked to reactivate the old key".into());
    s.goto(Step::RestoreOld, clock);
    Ok(s)
}

/// What a wait step must do when its message comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// First notice: tell the person what to do (`rotation.action_required`).
    Ask,
    /// A later notice (`rotation.reminder`).
    Remind,
    /// The deadline passed: send nothing, report [`Effect::Expired`].
    Expired,
}

/// Decide what a wait on a person does now.
pub fn prompt(saga: &Saga, now: Millis) -> Prompt {
    match saga.deadline {
        Some(d) if now >= d => Prompt::Expired,
        _ if saga.prompts == 0 => Prompt::Ask,
        _ => Prompt::Remind,
    }
}

/// Why a person's command (`provide`, `confirm`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotWaiting(pub String);

fn waiting_for(saga: &Saga, step: Step, what: &str) -> Result<(), NotWaiting> {
    if saga.status.is_terminal() {
        return Err(NotWaiting(format!("saga {} already ended ({}); nothing is waiting for {what}", saga.saga_id, saga.status.as_str())));
    }
    if !saga.manual {
        return Err(NotWaiting(format!("saga {} rotates a credential keyturn creates and deletes itself; it never waits for {what}", saga.saga_id)));
    }
    if saga.step != step {
        return Err(NotWaiting(format!("saga {} is at step {}, not waiting for {what} (that is step {step})", saga.saga_id, saga.step)));
    }
    Ok(())
}

/// A person handed over the new credential (sealed and stored by the engine
/// in the same write): go and push it to the target. `new_id` names it for
/// people (it is not secret); `old`, when given, is the old credential as
/// the person identified it.
pub fn provide(saga: &Saga, new_id: String, old: Option<KeyRef>, clock: Clock) -> Result<Saga, NotWaiting> {
    waiting_for(saga, Step::AwaitNew, "a new credential")?;
    let mut s = saga.clone();
    s.note(clock.now, "provided", format!("a person handed over the new credential ({new_id})"));
    s.new_key = Some(new_id);
    if let Some(old) = old {
        s.old_keys = vec![old];
    }
    s.secret_stored = true;
    // No proof step: the target's own test (Entra's Test connection) is the
    // proof, and it runs before anything is saved.
    s.goto(Step::PushToTarget, clock);
    Ok(s)
}

/// A person confirmed the old credential is deleted: the rotation is done.
pub fn confirm_retired(saga: &Saga, clock: Clock) -> Result<Saga, NotWaiting> {
    waiting_for(saga, Step::AwaitRetire, "the old credential's deletion")?;
    let mut s = saga.clone();
    s.note(clock.now, "confirmed", "a person confirmed the old credential is deleted".into());
    s.old_deleted = true;
    s.close(Status::Succeeded, clock);
    Ok(s)
}

/// `7d`, `36h`, `90s` — for messages.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests;
