//! Steps, statuses and what a step produced: the machine's vocabulary.

use super::*;

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
    /// Wait for a person to make the target trust the new credential
    /// (IAM Identity Center: upload the new SAML signing certificate) and
    /// confirm it (`keyturn confirm`); remind them; remove the new one at
    /// the deadline. Only for a saga with [`Saga::trust`].
    AwaitTrust,
    /// Make the source use the new credential (Entra: sign with the new
    /// certificate), read back.
    SwitchNew,
    /// Wait for a person to confirm sign-in works with the new credential
    /// (`keyturn confirm`) or report it broken (`keyturn confirm --broken`);
    /// switch back at the deadline.
    AwaitSignIn,
    /// Make the source use the old credential again, read back.
    SwitchBack,
    /// Remove the old credential from the source (sign-in was confirmed).
    RemoveOld,
}

impl Step {
    pub const ALL: [Step; 20] = [
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
        Step::AwaitTrust,
        Step::SwitchNew,
        Step::AwaitSignIn,
        Step::SwitchBack,
        Step::RemoveOld,
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
            Step::AwaitTrust => "await_trust",
            Step::SwitchNew => "switch_new",
            Step::AwaitSignIn => "await_sign_in",
            Step::SwitchBack => "switch_back",
            Step::RemoveOld => "remove_old",
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

/// What a step produced when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Started {
        keys: Vec<KeyRef>,
        /// How many credentials may exist at once, as the source says
        /// (`CredentialSource::max_credentials`): a new one needs room.
        limit: usize,
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
    /// The source uses the credential the step switched to (read back).
    Switched,
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
