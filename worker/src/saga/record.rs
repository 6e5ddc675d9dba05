//! The `Saga` record as stored, its parts, the policy, and the moves the
//! machine makes on a saga.

use super::*;

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

/// A Security Hub finding a saga was started from (to update when it ends),
/// with what its update needs: which API, which region, which identifiers.
///
/// Sagas stored before keyturn understood the new Security Hub and other
/// regions hold only `id` and `product_arn`; the added fields default to
/// what those sagas meant: an ASFF finding (`kind: v1`) updated in the
/// worker's own region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRef {
    /// V1: the ASFF `Id`. V2: OCSF `finding_info.uid` (`FindingInfoUid`).
    pub id: String,
    /// V1: the ASFF `ProductArn`. V2: OCSF `metadata.product.uid` (`MetadataProductUid`).
    pub product_arn: String,
    /// Which Security Hub, so which update API.
    #[serde(default)]
    pub kind: FindingKind,
    /// The region the finding came from, where its update is sent; `None`:
    /// the worker's own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The finding's account (ASFF `AwsAccountId`, OCSF `cloud.account.uid`;
    /// V2 identifies findings by it: `CloudAccountUid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// Which Security Hub a finding belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Security Hub CSPM (ASFF), updated with `BatchUpdateFindings`.
    #[default]
    V1,
    /// The new Security Hub (OCSF), updated with `BatchUpdateFindingsV2`.
    V2,
}

/// A saga that stopped in `NeedsAttention` with both keys in place keeps the
/// credential's lock and is watched: this is what keyturn has seen since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    /// When the saga stopped. No push can land after this, so a use of a key
    /// by the target's service after it shows which key the target holds.
    pub since: Millis,
    /// When the evidence is looked at next.
    pub next_check: Millis,
    /// Evidence checks so far.
    pub checks: u32,
    /// The latest verdict (`None` before the first check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The clear verdict a notice was sent for: one notice per change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<Keep>,
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
/// binary attribute and is represented here only by `keys.secret_stored`).
///
/// Which saga it is and where it stands, then its parts by job. Each part is
/// flattened: the stored document (DynamoDB's `doc`, `--json`) has the same
/// keys, in the same order, as when they were all fields of `Saga`
/// (`store::tests` reads back items captured before the parts existed), so
/// a part's fields stay contiguous and in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub saga_id: String,
    /// The `[[rotation]]` it runs.
    pub rotation_id: String,
    /// Lock key of the credential, e.g. `iam_access_key:auth0-ses-sender`.
    pub credential: String,
    /// What started it.
    pub trigger: String,
    pub status: Status,
    pub step: Step,
    /// The current step's run: the token its message carries, its attempts, and
    /// when it may run.
    #[serde(flatten)]
    pub run: StepRun,
    /// The keys: the source's when the saga started, the one it made, and its
    /// attempts to make one.
    #[serde(flatten)]
    pub keys: Keys,
    /// What the saga has done so far: where the target stands, and what became
    /// of the keys (compensation and the notices go by it).
    #[serde(flatten)]
    pub effects: Effects,
    /// How the saga ends and what happened on the way: the status `Finalize`
    /// closes with, the failure, compensations taken, the attempts.
    #[serde(flatten)]
    pub outcome: SagaOutcome,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Findings this saga was started from; resolved or annotated at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingRef>,
    /// Waiting on a person (a credential only a person can create or delete):
    /// whether the saga does, until when, and the notices sent so far.
    #[serde(flatten)]
    pub person: PersonWait,
    /// After the saga stopped in `NeedsAttention` with both keys: what the
    /// evidence says, how it was resolved, and what resolving did.
    #[serde(flatten)]
    pub resolution: Resolution,
    /// Where the saga came from when a request asked for it: the correlation id
    /// its notices carry, who asked and why, and what the request shortened.
    #[serde(flatten)]
    pub origin: Origin,
    /// An exposed access key (AWS Health `AWS_RISK_CREDENTIALS_EXPOSED`)
    /// made this an emergency: no grace period, no usage gate for the exposed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    /// The saga's shape when the source switches to the new credential only
    /// after a person made the target trust it (a SAML signing certificate
    /// and IAM Identity Center): recorded at the request from the source,
    /// and what the machine learns the shape from. `None`: any other saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Trust>,
}

/// The current step's run: the token its message carries, its attempts, and
/// when it may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    /// Token the next message for `step` must carry; anything else is stale.
    pub token: String,
    /// Attempts of the current step so far.
    pub step_attempts: u32,
    pub step_started_at: Millis,
    /// Do not run `step` before this (durable waits: retry delays, grace).
    pub not_before: Millis,
    /// End of the grace period once the old credential is disabled.
    pub grace_until: Option<Millis>,
}

/// The keys: the source's when the saga started, the one it made, and its
/// attempts to make one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub old_keys: Vec<KeyRef>,
    pub new_key: Option<String>,
    pub secret_stored: bool,
    /// How many times `IssueNew` recorded the intent to create a key.
    pub issue_intents: u32,
    /// When each of those intents was recorded (the worker's clock, as the
    /// attempt began): a key created after an earlier attempt's intent may
    /// be that attempt's orphan; a key created before is someone else's
    /// ([`triage_keys`]). Missing for sagas written before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issue_intent_at: Vec<Millis>,
}

/// What the saga has done so far: where the target stands, and what became
/// of the keys (compensation and the notices go by it). The flags stay
/// booleans even where two describe one key's state (`old_disabled`,
/// `old_restored`): each is a key of its own in the stored document, which
/// an enum would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    pub target: TargetState,
    pub switched_at: Option<Millis>,
    pub old_disabled: bool,
    pub old_deleted: bool,
    pub new_revoked: bool,
    pub old_restored: bool,
}

/// How the saga ends and what happened on the way: the status `Finalize`
/// closes with, the failure, compensations taken, the attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaOutcome {
    /// Status to reach when `Finalize` completes.
    pub closing: Option<Status>,
    pub failure: Option<Failure>,
    /// Human-readable list of compensating actions taken.
    pub compensations: Vec<String>,
    pub history: Vec<Attempt>,
}

/// Waiting on a person (a credential only a person can create or delete):
/// whether the saga does, until when, and the notices sent so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonWait {
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

/// After the saga stopped in `NeedsAttention` with both keys: what the
/// evidence says, how it was resolved, and what resolving did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// While stopped in `NeedsAttention` with both keys: what the evidence says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
    /// How a saga that needed attention was resolved (`keyturn resolve`, or by evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Keep>,
    /// Uses of a key before this time do not stop its retirement (set when a
    /// saga is resolved: earlier uses were the evidence, not a consumer left behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_since: Option<Millis>,
    /// The new key was deactivated (resolution "keep the old key").
    #[serde(default)]
    pub new_disabled: bool,
    /// How many times the saga ended (a resolved saga ends twice).
    #[serde(default)]
    pub endings: u32,
}

/// Where the saga came from when a request asked for it: the correlation id
/// its notices carry, who asked and why, and what the request shortened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Carried through every notification and outcome event of this saga
    /// (the request API's `correlation_id`; `None`: the saga id is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Who asked through the request API, why, and with which idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    /// What the request shortened of the rotation's policy.
    #[serde(default, skip_serializing_if = "Overrides::is_empty")]
    pub overrides: Overrides,
}

/// Which credential the source uses, as keyturn last set or read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InUse {
    /// The one in use when the saga started.
    #[default]
    Old,
    New,
    /// A switch failed after it may have been applied.
    Unknown,
}

/// A saga whose target a person makes trust the new credential, after
/// which the source switches to it (see [`Step::AwaitTrust`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    /// The credential the source used when the saga started (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The person confirmed the target trusts the new credential.
    #[serde(default)]
    pub trusted: bool,
    /// Which credential the source uses.
    #[serde(default)]
    pub in_use: InUse,
    /// The person confirmed sign-in works with the new credential.
    #[serde(default)]
    pub works: bool,
}

/// A rotation asked for through the request API (`keyturn.rotation-request.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// Who the request says asked (self-declared, unchecked).
    pub requester: String,
    pub reason: String,
    pub idempotency_key: String,
    /// Who really sent it: SQS's `SenderId` of the intake message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// For a `keyturn.requests` event: the envelope's `account` (the
    /// account that put the event) and `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source: Option<String>,
}

/// Parts of a rotation's policy a request may shorten (never lengthen).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Between deactivating and deleting the old key (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Millis>,
    /// How long a person has for each step of a by-hand credential (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_deadline: Option<Millis>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.grace_period.is_none() && self.person_deadline.is_none()
    }

    /// Whether these overrides only shorten `policy`: `Err` names the first
    /// that would lengthen it.
    pub fn allowed_by(&self, policy: &Policy) -> Result<(), String> {
        for (name, asked, limit) in
            [("grace_period", self.grace_period, policy.grace_period), ("person_deadline", self.person_deadline, policy.person_deadline)]
        {
            if let Some(ms) = asked.filter(|ms| *ms > limit) {
                return Err(format!(
                    "overrides.{name}: {} is longer than the rotation's {name} {}; a request may only shorten it",
                    human_ms(ms),
                    human_ms(limit)
                ));
            }
        }
        Ok(())
    }
}

/// Which of a saga's keys was found exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExposedRole {
    /// The key being replaced (or, for a fresh emergency saga, the key in use).
    Old,
    /// The key this saga created.
    New,
}

/// An exposed access key this saga deals with, and its incident timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub key_id: String,
    pub role: ExposedRole,
    /// When keyturn received the AWS Health event.
    pub seen_at: Millis,
    /// The AWS Health event (its ARN), for the incident record.
    pub event: String,
    /// Keep the exposed key inactive for forensics instead of deleting it.
    pub keep_inactive: bool,
    /// When the exposed key was made inactive (by this saga, or found so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_at: Option<Millis>,
    /// When the exposed key was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Millis>,
    /// After this saga ends, a fresh rotation must start (the exposed key is
    /// still in place: it was this saga's new key, or this saga failed).
    #[serde(default)]
    pub follow_up: bool,
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
    /// Between evidence checks of a saga stopped with both keys in place.
    pub evidence_every: u64,
    /// Finish such a saga on clear evidence without waiting for `keyturn resolve`.
    pub auto_resolve: bool,
    /// A key AWS reported exposed is kept inactive for forensics, not deleted.
    pub keep_exposed_inactive: bool,
    /// The source's `issue` invalidates the old credential at once (Auth0's
    /// rotate-secret): from then on the new credential is the only one, so
    /// it is never revoked; a failed target write is retried instead
    /// ([`Saga::give_up`]). Set by the source, not configurable.
    pub old_dies_at_issue: bool,
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
            evidence_every: 3_600_000,
            auto_resolve: false,
            keep_exposed_inactive: false,
            old_dies_at_issue: false,
        }
    }
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
            run: StepRun { token: format!("{token:032x}"), step_attempts: 0, step_started_at: now, not_before: now, grace_until: None },
            keys: Keys::default(),
            effects: Effects {
                target: TargetState::Untouched,
                switched_at: None,
                old_disabled: false,
                old_deleted: false,
                new_revoked: false,
                old_restored: false,
            },
            outcome: SagaOutcome::default(),
            created_at: now,
            updated_at: now,
            findings: Vec::new(),
            person: PersonWait::default(),
            resolution: Resolution::default(),
            origin: Origin::default(),
            exposure: None,
            trust: None,
        }
    }

    /// The id every notification and outcome event of this saga carries.
    pub fn correlation(&self) -> &str {
        self.origin.correlation_id.as_deref().unwrap_or(&self.saga_id)
    }

    /// The rotation's policy as this saga applies it: a request's overrides
    /// may only shorten it, and an exposed key gets no grace period.
    pub fn effective_policy(&self, base: &Policy) -> Policy {
        let mut p = base.clone();
        if let Some(g) = self.origin.overrides.grace_period {
            p.grace_period = p.grace_period.min(g);
        }
        if let Some(d) = self.origin.overrides.person_deadline {
            p.person_deadline = p.person_deadline.min(d);
        }
        if self.exposure.is_some() {
            p.grace_period = 0;
        }
        p
    }

    /// Whether the old key's last use is checked before it is deleted. Not
    /// when the old key is the exposed one: a use after the switch is the
    /// attacker, not a consumer left behind.
    pub fn usage_gate(&self) -> bool {
        !self.exposure.as_ref().is_some_and(|e| e.role == ExposedRole::Old)
    }

    /// Whether a fresh emergency rotation must start once this saga has
    /// ended: its own new key was the exposed one. (An exposed old key this
    /// saga failed to replace is not retried automatically: the critical
    /// notice says so, and a retry would fail the same way.)
    pub fn needs_follow_up(&self) -> bool {
        self.status.is_terminal() && self.exposure.as_ref().is_some_and(|e| e.follow_up)
    }

    /// The exposed key is out of an attacker's hands: inactive or deleted.
    pub fn exposed_key_dead(&self) -> bool {
        self.exposure.as_ref().is_some_and(|e| e.inactive_at.is_some() || e.deleted_at.is_some())
    }

    /// The keys as this saga left them, when its own record says so for
    /// certain: it succeeded with its new key active and every old key
    /// deleted (by its steps, or found already gone). `None` whenever only
    /// a listing can tell (any other outcome, a credential made by hand).
    /// The end-of-saga notice uses it instead of listing the keys again.
    pub fn keys_left(&self) -> Option<Vec<KeyRef>> {
        let new = self.keys.new_key.as_ref()?;
        // Running towards its end (finalize): the outcome it closes with.
        let outcome = if self.status.is_terminal() { self.status } else { self.outcome.closing.unwrap_or(self.status) };
        let done = outcome == Status::Succeeded;
        (done && !self.person.manual && self.trust.is_none() && self.effects.old_deleted && !self.resolution.new_disabled && !self.effects.new_revoked)
            .then(|| vec![KeyRef { id: new.clone(), active: true, created_at: None }])
    }

    /// Stopped in `NeedsAttention` with both keys in place (an automatic
    /// credential): the saga keeps the credential's lock, is watched for
    /// evidence, and can be resolved (`keyturn resolve`). Every later
    /// request for the credential is answered with this saga.
    pub fn unresolved(&self) -> bool {
        !self.person.manual
            && self.trust.is_none()
            && self.status == Status::NeedsAttention
            && self.keys.new_key.is_some()
            && !self.effects.new_revoked
            && !self.keys.old_keys.is_empty()
            && !self.effects.old_deleted
    }

    /// Since when uses of a key count against retiring it.
    pub fn usage_cutoff(&self) -> Millis {
        self.resolution.usage_since.or(self.effects.switched_at).unwrap_or(self.created_at)
    }

    /// The saga just ended: start watching if it ended unresolved.
    pub(super) fn ended(&mut self, policy: &Policy, now: Millis) {
        self.resolution.endings += 1;
        if self.unresolved() {
            self.resolution.attention =
                Some(Attention { since: now, next_check: now.saturating_add(policy.evidence_every), checks: 0, verdict: None, announced: None });
        }
    }

    /// Whether the saga is waiting on a person.
    pub fn awaits_person(&self) -> bool {
        !self.status.is_terminal() && matches!(self.step, Step::AwaitNew | Step::AwaitRetire | Step::AwaitTrust | Step::AwaitSignIn)
    }

    /// The compensation rule: may the new credential be deleted now?
    pub fn may_revoke_new(&self) -> bool {
        !self.effects.target.may_hold_new()
    }

    /// Whether the saga is waiting (retry delay or grace period) at `now`.
    pub fn waiting_until(&self, now: Millis) -> Option<Millis> {
        let until = match self.step {
            Step::RetireOld | Step::RetireNew => self.run.not_before.max(self.run.grace_until.unwrap_or(0)),
            _ => self.run.not_before,
        };
        (until > now).then_some(until)
    }

    /// Record a command (not a step attempt) in the history.
    pub(super) fn note(&mut self, at: Millis, outcome: &str, message: String) {
        self.updated_at = at;
        self.outcome.history.push(Attempt {
            at,
            step: self.step,
            attempt: self.run.step_attempts,
            outcome: outcome.into(),
            code: None,
            message: Some(message),
        });
    }

    pub(super) fn record(&mut self, at: Millis, outcome: &str, err: Option<&StepError>) {
        self.outcome.history.push(Attempt {
            at,
            step: self.step,
            attempt: self.run.step_attempts,
            outcome: outcome.into(),
            code: err.map(|e| e.code.clone()),
            message: err.map(|e| e.message.clone()),
        });
        if self.outcome.history.len() > HISTORY_LIMIT {
            let excess = self.outcome.history.len() - HISTORY_LIMIT;
            self.outcome.history.drain(..excess);
        }
    }

    pub(super) fn goto(&mut self, step: Step, clock: Clock) {
        self.step = step;
        self.run.step_attempts = 0;
        self.run.step_started_at = clock.now;
        self.run.not_before = clock.now;
        self.run.token = format!("{:032x}", clock.token);
        self.person.prompts = 0;
        self.person.deadline = None;
    }

    /// Run the current step again now, under a fresh token (the pending
    /// message, possibly delayed, becomes stale).
    pub(super) fn rerun_now(&mut self, clock: Clock) {
        self.run.not_before = clock.now;
        self.run.token = format!("{:032x}", clock.token);
        self.updated_at = clock.now;
    }

    /// Start waiting on a person, until `policy.person_deadline` from now.
    pub(super) fn await_person(&mut self, step: Step, policy: &Policy, clock: Clock) {
        self.goto(step, clock);
        self.person.deadline = Some(clock.now.saturating_add(policy.person_deadline));
    }

    /// Stop forward progress: go to `Finalize` and end in `status`.
    pub(super) fn close(&mut self, status: Status, clock: Clock) {
        self.outcome.closing = Some(status);
        self.goto(Step::Finalize, clock);
    }

    /// Start compensating: revoke the new credential if there is one.
    pub(super) fn compensate(&mut self, clock: Clock) {
        debug_assert!(self.may_revoke_new());
        self.status = Status::Compensating;
        if self.person.manual {
            // No API can delete it: the notice tells the person to.
            self.close(Status::Compensated, clock);
        } else if self.keys.new_key.is_some() && !self.effects.new_revoked {
            self.goto(Step::RevokeNew, clock);
        } else {
            self.close(Status::Compensated, clock);
        }
    }

    /// A step failed for good and the saga would compensate. When the old
    /// credential died at issue (`policy.old_dies_at_issue`) the new one is
    /// the only one left: never revoke it. While its secret is still sealed
    /// here, write it to the target again (now after a failed proof, after
    /// `retry_cap` after a refused write, so a person can fix the target
    /// meanwhile); once it is gone from the saga, stop for a person.
    pub(super) fn give_up(&mut self, policy: &Policy, clock: Clock) {
        if !policy.old_dies_at_issue || self.keys.new_key.is_none() || self.effects.new_revoked {
            return self.compensate(clock);
        }
        if !self.keys.secret_stored {
            return self.close(Status::NeedsAttention, clock);
        }
        let wait = if self.step == Step::ProveNew { 0 } else { policy.retry_cap };
        let kept = format!(
            "kept new credential {}: the old one stopped working when it was issued; writing it to the target again",
            self.keys.new_key.clone().unwrap_or_default()
        );
        if !self.outcome.compensations.contains(&kept) {
            self.outcome.compensations.push(kept);
        }
        self.goto(Step::PushToTarget, clock);
        self.run.not_before = clock.now.saturating_add(wait);
    }

    pub(super) fn fail(&mut self, err: &StepError) {
        self.outcome.failure =
            Some(Failure { step: self.step, code: err.code.clone(), message: err.message.clone(), operator_fixable: err.operator_fixable });
    }
}
