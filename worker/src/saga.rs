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

/// The machine never reads the clock: it is handed `now` in a [`Clock`].
pub use crate::clock::Millis;

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
    /// Resolution "keep the old key" of a saga that needed attention:
    /// reactivate the old key if it was deactivated, then deactivate the new one.
    DisableNew,
    /// After the grace period: check the new key's last use, delete it.
    RetireNew,
    /// Operator rollback of a "keep the old key" resolution during its grace
    /// period: reactivate the new key (the saga needs attention again).
    RestoreNew,
}

impl Step {
    pub const ALL: [Step; 15] = [
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
        Step::DisableNew,
        Step::RetireNew,
        Step::RestoreNew,
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
            Step::DisableNew => "disable_new",
            Step::RetireNew => "retire_new",
            Step::RestoreNew => "restore_new",
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
    /// The documented name, as in the JSON (`holds_new`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Untouched => "untouched",
            TargetState::Rejected => "rejected",
            TargetState::Uncertain => "uncertain",
            TargetState::Accepted => "accepted",
            TargetState::HoldsNew => "holds_new",
            TargetState::HoldsOld => "holds_old",
        }
    }

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

/// Which key a saga that stopped with both keys in place keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The target uses the new key: retire the old one.
    New,
    /// The target uses the old key: retire the new one.
    Old,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::New => "new",
            Keep::Old => "old",
        }
    }
    fn other(self) -> Keep {
        match self {
            Keep::New => Keep::Old,
            Keep::Old => Keep::New,
        }
    }
}

/// What the evidence says, as of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `Some` when the evidence is clear.
    pub keep: Option<Keep>,
    /// Why, in one sentence (key ids, services, times; never a secret).
    pub reason: String,
    pub at: Millis,
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

/// One key as the evidence check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvidence {
    pub id: String,
    /// Listed by the source now.
    pub exists: bool,
    /// Most recent use, and the service it was used with (IAM keeps only the last one).
    pub last_used: Option<(Millis, String)>,
}

/// Everything an evidence check gathered: both keys' last use and what the
/// target reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub new: KeyEvidence,
    pub old: Vec<KeyEvidence>,
    /// The target read back (`None`: the read failed).
    pub target: Option<Verification>,
    /// The AWS service name the target uses the key with (`ses` for Auth0's
    /// SES provider), as IAM reports it in `GetAccessKeyLastUsed`; `None`:
    /// any service counts.
    pub consumer_service: Option<String>,
}

/// Decide from evidence which key the target uses. Facts first (a key that
/// no longer exists, the target naming its key id), then use: the target's
/// service used only the new key since `since` (and nothing used the old
/// one), or only the old one (and nothing used the new one). Anything else
/// is unclear and keyturn keeps watching.
pub fn judge(since: Millis, e: &Evidence, now: Millis) -> Verdict {
    let v = |keep: Option<Keep>, reason: String| Verdict { keep, reason, at: now };
    let old_ids = e.old.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ");
    let any_old = e.old.iter().any(|k| k.exists);
    match (e.new.exists, any_old) {
        (false, false) => return v(None, format!("neither the new key {} nor the old key {old_ids} exists any more", e.new.id)),
        (false, true) => return v(Some(Keep::Old), format!("the new key {} no longer exists: only the old key {old_ids} is left", e.new.id)),
        (true, false) => return v(Some(Keep::New), format!("the old key {old_ids} no longer exists: only the new key {} is left", e.new.id)),
        (true, true) => {}
    }
    match &e.target {
        Some(Verification::HoldsNew) => return v(Some(Keep::New), format!("the target reports the new key id {}", e.new.id)),
        Some(Verification::HoldsOld) => return v(Some(Keep::Old), format!("the target reports the old key id {old_ids}")),
        _ => {}
    }
    fn used_after(k: &KeyEvidence, since: Millis) -> Option<&(Millis, String)> {
        k.last_used.as_ref().filter(|(at, _)| *at > since)
    }
    let by_consumer = |k: &KeyEvidence| used_after(k, since).is_some_and(|(_, svc)| e.consumer_service.as_deref().is_none_or(|c| c == svc));
    let svc = e.consumer_service.as_deref().unwrap_or("any service");
    let when = |k: &KeyEvidence| used_after(k, since).map(|(at, s)| format!("{} by {s}", crate::clock::fmt_ms(*at))).unwrap_or_default();
    let new_by = by_consumer(&e.new);
    let old_by: Vec<&KeyEvidence> = e.old.iter().filter(|k| by_consumer(k)).collect();
    let new_any = used_after(&e.new, since).is_some();
    let old_any = e.old.iter().any(|k| used_after(k, since).is_some());
    let since_s = crate::clock::fmt_ms(since);
    match (new_by, !old_by.is_empty()) {
        (true, false) if !old_any => {
            v(Some(Keep::New), format!("only the new key {} was used by {svc} since {since_s} (last used {})", e.new.id, when(&e.new)))
        }
        (false, true) if !new_any => {
            v(Some(Keep::Old), format!("only the old key {} was used by {svc} since {since_s} (last used {})", old_by[0].id, when(old_by[0])))
        }
        (true, true) => v(None, format!("both keys were used by {svc} since {since_s}")),
        (false, false) if !new_any && !old_any => v(None, format!("neither key was used since {since_s}; waiting for the target to use one")),
        _ => v(None, format!("keys were used by other services than {svc} since {since_s}; cannot tell which one the target holds")),
    }
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
    /// When each of those intents was recorded (the worker's clock, as the
    /// attempt began): a key created after an earlier attempt's intent may
    /// be that attempt's orphan; a key created before is someone else's
    /// ([`triage_keys`]). Missing for sagas written before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issue_intent_at: Vec<Millis>,
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
    /// An exposed access key (AWS Health `AWS_RISK_CREDENTIALS_EXPOSED`)
    /// made this an emergency: no grace period, no usage gate for the exposed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
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

/// What a step produced when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Started {
        keys: Vec<KeyRef>,
    },
    Issued {
        key_id: String,
    },
    Proven,
    Pushed,
    Verified(Verification),
    Disabled,
    Retired,
    Revoked,
    Restored,
    /// Resolution "keep old": old key active again, new key inactive.
    DisabledNew,
    RetiredNew,
    RestoredNew,
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
    /// Between evidence checks of a saga stopped with both keys in place.
    pub evidence_every: u64,
    /// Finish such a saga on clear evidence without waiting for `keyturn resolve`.
    pub auto_resolve: bool,
    /// A key AWS reported exposed is kept inactive for forensics, not deleted.
    pub keep_exposed_inactive: bool,
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
            issue_intent_at: Vec::new(),
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
            attention: None,
            resolved: None,
            usage_since: None,
            new_disabled: false,
            endings: 0,
            correlation_id: None,
            request: None,
            overrides: Overrides::default(),
            exposure: None,
        }
    }

    /// The id every notification and outcome event of this saga carries.
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.saga_id)
    }

    /// The rotation's policy as this saga applies it: a request's overrides
    /// may only shorten it, and an exposed key gets no grace period.
    pub fn effective_policy(&self, base: &Policy) -> Policy {
        let mut p = base.clone();
        if let Some(g) = self.overrides.grace_period {
            p.grace_period = p.grace_period.min(g);
        }
        if let Some(d) = self.overrides.person_deadline {
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
        let new = self.new_key.as_ref()?;
        // Running towards its end (finalize): the outcome it closes with.
        let outcome = if self.status.is_terminal() { self.status } else { self.closing.unwrap_or(self.status) };
        let done = outcome == Status::Succeeded;
        (done && !self.manual && self.old_deleted && !self.new_disabled && !self.new_revoked)
            .then(|| vec![KeyRef { id: new.clone(), active: true, created_at: None }])
    }

    /// Stopped in `NeedsAttention` with both keys in place (an automatic
    /// credential): the saga keeps the credential's lock, is watched for
    /// evidence, and can be resolved (`keyturn resolve`). Every later
    /// request for the credential is answered with this saga.
    pub fn unresolved(&self) -> bool {
        !self.manual
            && self.status == Status::NeedsAttention
            && self.new_key.is_some()
            && !self.new_revoked
            && !self.old_keys.is_empty()
            && !self.old_deleted
    }

    /// Since when uses of a key count against retiring it.
    pub fn usage_cutoff(&self) -> Millis {
        self.usage_since.or(self.switched_at).unwrap_or(self.created_at)
    }

    /// The saga just ended: start watching if it ended unresolved.
    fn ended(&mut self, policy: &Policy, now: Millis) {
        self.endings += 1;
        if self.unresolved() {
            self.attention =
                Some(Attention { since: now, next_check: now.saturating_add(policy.evidence_every), checks: 0, verdict: None, announced: None });
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
            Step::RetireOld | Step::RetireNew => self.not_before.max(self.grace_until.unwrap_or(0)),
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

    /// Run the current step again now, under a fresh token (the pending
    /// message, possibly delayed, becomes stale).
    fn rerun_now(&mut self, clock: Clock) {
        self.not_before = clock.now;
        self.token = format!("{:032x}", clock.token);
        self.updated_at = clock.now;
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
        self.failure = Some(Failure { step: self.step, code: err.code.clone(), message: err.message.clone(), operator_fixable: err.operator_fixable });
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
/// orphan on re-entry. `now` is when the attempt began (the lease's time).
pub fn begin_attempt(saga: &Saga, now: Millis) -> Saga {
    let mut s = saga.clone();
    s.step_attempts += 1;
    if s.step == Step::IssueNew {
        s.issue_intents += 1;
        if s.issue_intent_at.len() < HISTORY_LIMIT {
            s.issue_intent_at.push(now);
        }
    }
    s
}

/// How far a key's creation time (IAM's clock, which reports whole seconds)
/// may lie before an intent's time (the worker's clock) and still count as
/// made by that attempt. IAM truncates `CreateDate` to the second (up to 1 s)
/// and both clocks are NTP-disciplined (Amazon Time Sync: well under 1 s),
/// so 2 s covers both. Erring small is safe: a real orphan older than that
/// is left in place and the saga stops in needs attention naming it; erring
/// large would let a key a person made just before an attempt be deleted.
pub const INTENT_CLOCK_SKEW: Millis = 2_000;

/// The error code of a key that keyturn neither made nor was asked to
/// replace: the saga stops in needs attention naming it.
pub const UNKNOWN_KEY: &str = "UnknownKey";

/// The keys `IssueNew` found besides the ones it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyTriage {
    /// Created after an earlier attempt's recorded intent: that attempt's
    /// key, whose secret was never stored. Safe to delete.
    pub orphans: Vec<String>,
    /// Anything else: made by someone else (or of unknown age). Never deleted.
    pub strangers: Vec<KeyRef>,
}

impl Saga {
    /// The recorded intents of `IssueNew` attempts before the current one
    /// (the current attempt's is the last). An intent whose time was not
    /// kept (a saga written before times were) counts from when the step
    /// began, which is no later than any of its attempts.
    pub fn earlier_issue_intents(&self) -> Vec<Millis> {
        let earlier = self.issue_intents.saturating_sub(1) as usize;
        let mut at: Vec<Millis> = self.issue_intent_at.iter().copied().take(earlier).collect();
        at.resize(earlier, self.step_started_at);
        at
    }
}

/// Sort the keys a credential has besides `keep` (the ones being replaced).
/// A key is an orphan only if an earlier attempt recorded its intent to
/// create one and the key was created no earlier than that intent (less
/// [`INTENT_CLOCK_SKEW`]); without an earlier intent, or with a key of
/// unknown creation time, it is a stranger. Pure: the source lists, this
/// decides, the source deletes only orphans.
pub fn triage_keys(keys: &[KeyRef], keep: &[String], earlier_intents: &[Millis]) -> KeyTriage {
    let first_intent = earlier_intents.iter().copied().min();
    let mut t = KeyTriage::default();
    for k in keys.iter().filter(|k| !keep.contains(&k.id)) {
        match (first_intent, k.created_at) {
            (Some(intent), Some(created)) if created.saturating_add(INTENT_CLOCK_SKEW) >= intent => t.orphans.push(k.id.clone()),
            _ => t.strangers.push(k.clone()),
        }
    }
    t
}

/// The message of an [`UNKNOWN_KEY`] refusal: the unknown keys and the
/// ones being replaced, by id (never anything secret).
pub fn unknown_key_message(owner: &str, strangers: &[KeyRef], keep: &[String]) -> String {
    let named: Vec<String> = strangers
        .iter()
        .map(|k| match k.created_at {
            Some(c) => format!("{} (created {})", k.id, crate::clock::fmt_ms(c)),
            None => k.id.clone(),
        })
        .collect();
    format!(
        "{owner} has key {} that keyturn neither made nor was asked to replace (it replaces {}); keyturn does not delete it. Delete one of the keys (or let the person who made it), then rotate again",
        named.join(", "),
        if keep.is_empty() { "no key".to_string() } else { keep.join(", ") }
    )
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
                on_failed(&mut s, err, policy, clock);
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
                s.failure = Some(Failure { step: Step::VerifyTarget, code: "TargetUnhealthy".into(), message: reason.clone(), operator_fixable: true });
                s.close(Status::NeedsAttention, clock);
            }
        },
        (Step::DisableOld, Effect::Disabled) => {
            // A keep-new resolution after a keep-old one reactivated the new key first.
            s.new_disabled = false;
            let mut keep_exposed = false;
            if let Some(e) = s.exposure.as_mut().filter(|e| e.role == ExposedRole::Old) {
                e.inactive_at.get_or_insert(clock.now);
                keep_exposed = e.keep_inactive;
            }
            if keep_exposed && !s.old_deleted {
                // Kept inactive for forensics, as the policy says: done.
                s.old_disabled = true;
                s.close(Status::Succeeded, clock);
            } else if s.old_deleted {
                // The old key was already gone: nothing to wait for.
                s.close(Status::Succeeded, clock);
            } else {
                s.old_disabled = true;
                s.goto(Step::RetireOld, clock);
                s.grace_until = Some(clock.now + policy.grace_period);
            }
        }
        (Step::RetireOld, Effect::Retired) => {
            s.old_deleted = true;
            if let Some(e) = s.exposure.as_mut().filter(|e| e.role == ExposedRole::Old) {
                e.deleted_at.get_or_insert(clock.now);
            }
            s.close(Status::Succeeded, clock);
        }
        (Step::RevokeNew, Effect::Revoked) => {
            s.new_revoked = true;
            if let Some(e) = s.exposure.as_mut().filter(|e| e.role == ExposedRole::New) {
                e.deleted_at.get_or_insert(clock.now);
            }
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
            s.ended(policy, clock.now);
        }
        (Step::DisableNew, Effect::DisabledNew) => {
            if s.old_disabled {
                s.old_disabled = false;
                s.old_restored = true;
                s.compensations.push(format!("reactivated old key {}", old_ids(s)));
            }
            if s.new_revoked {
                // The new key was already gone: nothing to wait for.
                s.close(Status::Compensated, clock);
            } else {
                s.new_disabled = true;
                s.goto(Step::RetireNew, clock);
                s.grace_until = Some(clock.now + policy.grace_period);
            }
        }
        (Step::RetireNew, Effect::RetiredNew) => {
            s.new_revoked = true;
            if let Some(id) = &s.new_key {
                s.compensations.push(format!("deactivated new key {id}, then deleted it after the grace period (the target kept the old key)"));
            }
            s.close(Status::Compensated, clock);
        }
        (Step::RestoreNew, Effect::RestoredNew) => {
            s.new_disabled = false;
            s.resolved = None;
            s.target = TargetState::Uncertain;
            if let Some(id) = &s.new_key {
                s.compensations.push(format!("reactivated new key {id} (rollback of the keep-old resolution)"));
            }
            s.failure = Some(Failure {
                step: Step::RetireNew,
                code: "ResolutionRolledBack".into(),
                message: "an operator reactivated the new key during the grace period of the keep-old resolution".into(),
                operator_fixable: true,
            });
            s.close(Status::NeedsAttention, clock);
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
            message: format!("the target uses the new credential, but nobody confirmed deleting the old one within {}", human_ms(policy.person_deadline)),
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

fn on_failed(s: &mut Saga, err: &StepError, policy: &Policy, clock: Clock) {
    match s.step {
        Step::Start => {
            s.fail(err);
            s.close(Status::Refused, clock);
        }
        Step::IssueNew if err.code == UNKNOWN_KEY => {
            // Someone else's key is in the way: never delete it, and do not
            // call it compensated either — a person must decide.
            s.fail(err);
            s.close(Status::NeedsAttention, clock);
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
        Step::DisableOld | Step::RetireOld | Step::RestoreOld | Step::AwaitRetire | Step::DisableNew | Step::RetireNew | Step::RestoreNew => {
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
            s.ended(policy, clock.now);
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
    if saga.step == Step::RetireNew && saga.new_disabled && !saga.new_revoked {
        let mut s = saga.clone();
        s.note(clock.now, "rollback_requested", "operator asked to reactivate the new key".into());
        s.goto(Step::RestoreNew, clock);
        return Ok(s);
    }
    if let Some(e) = saga.exposure.as_ref().filter(|e| e.role == ExposedRole::Old) {
        return Err(RollbackRefused(format!("saga {} replaces key {}, which AWS reported exposed; it is never reactivated", saga.saga_id, e.key_id)));
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

/// Why a saga cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotResolvable(pub String);

/// Finish a saga that stopped with both keys in place, keeping `keep`.
/// The saga runs again (it still holds the credential's lock):
/// * keep new: the target holds the new key → `DisableOld` → `RetireOld`
///   (grace period, then the usage check, then delete) → `Succeeded`;
/// * keep old: → `DisableNew` (reactivating the old key if it was
///   deactivated) → `RetireNew` (grace, usage check, delete) → `Compensated`.
///
/// `gone`: the key to retire no longer exists (deleted by hand): the saga
/// closes at once. Uses of either key before now do not count against the
/// retirement (`usage_since`): they were the evidence.
pub fn resolve(saga: &Saga, keep: Keep, gone: bool, by: &str, clock: Clock) -> Result<Saga, NotResolvable> {
    if !saga.unresolved() {
        let why = if saga.manual {
            "its credential is made by hand: follow the notice's steps instead".to_string()
        } else if saga.status != Status::NeedsAttention {
            format!("it is {}, not needs_attention", saga.status.as_str())
        } else {
            "it does not have both keys in place (nothing to choose between)".to_string()
        };
        return Err(NotResolvable(format!("saga {} cannot be resolved: {why}", saga.saga_id)));
    }
    let mut s = saga.clone();
    let was = s.failure.take().map(|f| format!(" (it stopped with {} at {})", f.code, f.step)).unwrap_or_default();
    s.note(clock.now, "resolved", format!("{by}: keep the {} key{was}", keep.as_str()));
    s.status = Status::Running;
    s.closing = None;
    s.resolved = Some(keep);
    s.usage_since = Some(clock.now);
    match (keep, gone) {
        (Keep::New, false) => {
            s.target = TargetState::HoldsNew;
            s.switched_at.get_or_insert(clock.now);
            s.goto(Step::DisableOld, clock);
        }
        (Keep::New, true) => {
            s.target = TargetState::HoldsNew;
            s.switched_at.get_or_insert(clock.now);
            s.old_deleted = true;
            s.compensations.push(format!("old key {} was already deleted", old_ids(&s)));
            if s.new_disabled {
                // The new key must be active again before the saga can end.
                s.goto(Step::DisableOld, clock);
            } else {
                s.close(Status::Succeeded, clock);
            }
        }
        (Keep::Old, false) => {
            s.target = TargetState::HoldsOld;
            s.goto(Step::DisableNew, clock);
        }
        (Keep::Old, true) => {
            s.target = TargetState::HoldsOld;
            s.new_revoked = true;
            s.compensations.push(format!("new key {} was already deleted", s.new_key.clone().unwrap_or_default()));
            if s.old_disabled {
                // The old key must be active again before the saga can end.
                s.goto(Step::DisableNew, clock);
            } else {
                s.close(Status::Compensated, clock);
            }
        }
    }
    Ok(s)
}

/// Whether `keep` goes against what the evidence says (then `keyturn
/// resolve` refuses unless forced).
pub fn contradicts(keep: Keep, verdict: &Verdict) -> bool {
    verdict.keep == Some(keep.other())
}

/// The result of one evidence check of an unresolved saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub saga: Saga,
    /// The verdict became clear (or changed): send a notice.
    pub announce: bool,
    /// With `auto_resolve`: resolve now, keeping this key.
    pub resolve: Option<Keep>,
}

/// Record one evidence check: the verdict, the next check, whether to
/// announce it (once per clear verdict) and whether to resolve now.
pub fn observe(saga: &Saga, verdict: Verdict, policy: &Policy, now: Millis) -> Option<Observed> {
    if !saga.unresolved() {
        return None;
    }
    let mut s = saga.clone();
    let mut a = s.attention.clone().unwrap_or(Attention { since: s.updated_at, next_check: now, checks: 0, verdict: None, announced: None });
    let changed = a.verdict.as_ref().is_none_or(|v| v.keep != verdict.keep || v.reason != verdict.reason);
    a.checks += 1;
    a.next_check = now.saturating_add(policy.evidence_every);
    let announce = verdict.keep.is_some() && a.announced != verdict.keep;
    if announce {
        a.announced = verdict.keep;
    }
    let resolve = if policy.auto_resolve { verdict.keep } else { None };
    if changed {
        s.note(now, "evidence", verdict.reason.clone());
    } else {
        s.updated_at = now;
    }
    a.verdict = Some(verdict);
    s.attention = Some(a);
    Some(Observed { saga: s, announce, resolve })
}

/// Why a running saga cannot take over an exposed key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotExposable(pub String);

/// AWS reported `key_id`, a key of this saga's credential, exposed: take the
/// running saga over safely. Answers the saga to commit (the engine then
/// sends a message for its step, to run now), or `None` when the saga
/// already handles this very exposure (a repeated event).
///
/// * The old key is exposed: no grace period and no usage gate for it. Before
///   the switch the saga goes on as it was (it is replacing that key anyway);
///   at `disable_old` or in the grace period of `retire_old` it deactivates
///   and deletes it now (or, with `keep_inactive`, ends keeping it inactive);
///   a rollback in progress is not carried out (it would reactivate the exposed key).
/// * The new key is exposed: while no consumer can hold it (before the target
///   took it) it is deleted at once (`revoke_new`); otherwise the saga
///   finishes without waiting out the old key's grace period. Either way a
///   fresh rotation follows ([`Saga::needs_follow_up`]).
pub fn expose(saga: &Saga, key_id: &str, seen_at: Millis, event: &str, keep_inactive: bool, clock: Clock) -> Result<Option<Saga>, NotExposable> {
    if saga.status.is_terminal() {
        return Err(NotExposable(format!("saga {} already ended ({})", saga.saga_id, saga.status.as_str())));
    }
    if saga.manual {
        return Err(NotExposable(format!("saga {} rotates a credential made by a person, not an access key", saga.saga_id)));
    }
    if saga.exposure.as_ref().is_some_and(|e| e.key_id == key_id) {
        return Ok(None);
    }
    let role = if saga.new_key.as_deref() == Some(key_id) {
        ExposedRole::New
    } else if saga.old_keys.iter().any(|k| k.id == key_id) || (saga.step == Step::Start && saga.old_keys.is_empty()) {
        ExposedRole::Old
    } else {
        return Err(NotExposable(format!("key {key_id} is neither the old nor the new key of saga {}", saga.saga_id)));
    };
    let mut s = saga.clone();
    s.note(clock.now, "exposed", format!("AWS reported key {key_id} exposed ({event}); emergency takeover"));
    let mut e = Exposure {
        key_id: key_id.to_string(),
        role,
        seen_at,
        event: event.to_string(),
        keep_inactive,
        inactive_at: None,
        deleted_at: None,
        follow_up: role == ExposedRole::New,
    };
    match role {
        ExposedRole::Old => {
            if s.old_disabled {
                e.inactive_at = Some(clock.now);
            }
            s.exposure = Some(e);
            match s.step {
                Step::RetireOld | Step::RestoreOld if keep_inactive && s.old_disabled => s.close(Status::Succeeded, clock),
                Step::RetireOld | Step::RestoreOld => {
                    s.grace_until = Some(clock.now);
                    s.goto(Step::RetireOld, clock);
                }
                _ => s.rerun_now(clock),
            }
        }
        ExposedRole::New => {
            let before_target = matches!(s.step, Step::IssueNew | Step::ProveNew | Step::PushToTarget) && s.target == TargetState::Untouched;
            s.exposure = Some(e);
            if before_target && s.may_revoke_new() && !s.new_revoked {
                s.failure = Some(Failure {
                    step: s.step,
                    code: "NewKeyExposed".into(),
                    message: format!("AWS reported the new key {key_id} exposed before the target received it; keyturn deleted it"),
                    operator_fixable: false,
                });
                s.compensate(clock);
            } else if s.step == Step::RetireOld {
                s.grace_until = Some(clock.now);
                s.goto(Step::RetireOld, clock);
            } else {
                s.rerun_now(clock);
            }
        }
    }
    if s.secret_stored && !s.step.needs_secret() {
        // Left the steps that use the new secret: it is erased in this commit.
        s.secret_stored = false;
    }
    Ok(Some(s))
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
