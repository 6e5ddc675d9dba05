//! The JSON documents of notifications and outcome events, as types: one
//! per family of notices, the parts several share as shared types. A
//! renderer fills one and the notice's `document` is its serialization
//! ([`to_document`]); `schemas/notification.v1.json` describes them and the
//! golden files in `golden/` hold their exact form.

use serde::Serialize;
use serde_json::Value;

use crate::saga::Millis;

/// What every document starts with: the event and how bad it is.
#[derive(Debug, Clone, Serialize)]
pub struct Head {
    pub event: &'static str,
    pub severity: &'static str,
}

/// A credential or a target: its connector kind and its name.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub kind: String,
    pub name: String,
}

impl Named {
    pub fn new(kind: &str, name: &str) -> Named {
        Named { kind: kind.to_string(), name: name.to_string() }
    }
}

/// A request through the request API, as a notice repeats it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestDoc {
    pub requester: String,
    pub reason: String,
    pub idempotency_key: String,
    pub sender: Option<String>,
    pub event_account: Option<String>,
    pub event_source: Option<String>,
}

impl From<&crate::saga::RequestInfo> for RequestDoc {
    fn from(r: &crate::saga::RequestInfo) -> RequestDoc {
        RequestDoc {
            requester: r.requester.clone(),
            reason: r.reason.clone(),
            idempotency_key: r.idempotency_key.clone(),
            sender: r.sender.clone(),
            event_account: r.event_account.clone(),
            event_source: r.event_source.clone(),
        }
    }
}

/// A saga's outcome (`rotation.succeeded`, `.failed`, `.needs_attention`,
/// `.rolled_back`, `.progress`; `rotation.exposed_key` with `exposure`).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: String,
    pub saga_id: String,
    pub status: &'static str,
    pub trigger: String,
    pub credential: Named,
    pub target: TargetNow,
    pub failure: Option<FailureDoc>,
    pub rolled_back: Vec<String>,
    pub keys: Vec<KeyLine>,
    pub recommended_action: String,
    /// Always `null`: keyturn schedules no next attempt after an outcome.
    pub next_attempt: Option<Millis>,
    pub status_command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureDoc>,
    /// The credential the source uses now (a saga with the trust shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_now: Option<String>,
}

/// The target as an outcome leaves it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetNow {
    pub kind: String,
    pub name: String,
    pub state: &'static str,
}

/// A saga's failure, as a notice reports it.
#[derive(Debug, Clone, Serialize)]
pub struct FailureDoc {
    pub step: &'static str,
    pub code: String,
    pub message: String,
    pub operator_fixable: bool,
}

/// One key (or token) as an outcome leaves it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyLine {
    pub id: String,
    pub state: &'static str,
    pub role: &'static str,
}

/// An exposed key a saga dealt with: its state, timeline and next steps.
#[derive(Debug, Clone, Serialize)]
pub struct ExposureDoc {
    pub key_id: String,
    pub role: &'static str,
    pub state: String,
    pub health_event: String,
    pub timeline: Timeline,
    pub aws_quarantine: &'static str,
    pub follow_up_rotation: bool,
    pub next_steps: Vec<String>,
}

/// An exposure's incident timeline (dates as the notices write them).
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub event_seen: String,
    pub new_key_live: Option<String>,
    pub exposed_key_inactive: Option<String>,
    pub exposed_key_deleted: Option<String>,
    pub seconds_to_inactive: Option<f64>,
}

/// An exposed key a running saga could not take over (`rotation.exposed_key`).
#[derive(Debug, Clone, Serialize)]
pub struct ExposedBlockedDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: String,
    pub saga_id: String,
    pub correlation_id: String,
    pub exposure: BlockedExposure,
    pub recommended_action: String,
    pub status_command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedExposure {
    pub key_id: String,
    /// Always `unknown`: keyturn did not touch the key.
    pub state: &'static str,
    pub aws_quarantine: &'static str,
    pub blocked: String,
}

/// An exposed key with nothing left to rotate (`rotation.exposed_key`).
#[derive(Debug, Clone, Serialize)]
pub struct ExposedSettledDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: String,
    pub correlation_id: String,
    pub exposure: SettledExposure,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettledExposure {
    pub key_id: String,
    /// Always `settled`.
    pub state: &'static str,
    pub found: String,
    pub health_event: String,
    pub aws_quarantine: &'static str,
    pub next_steps: Vec<String>,
}

/// An exposed key no rotation covers (`rotation.unmatched`, critical).
#[derive(Debug, Clone, Serialize)]
pub struct ExposedUnmatchedDoc {
    #[serde(flatten)]
    pub head: Head,
    pub account_id: String,
    pub user: Option<String>,
    pub key_id: String,
    pub exposed: bool,
    pub health_event: String,
    pub deactivated: bool,
    pub key_state: String,
    pub aws_quarantine: &'static str,
    pub recommended_action: String,
}

/// Several exposed keys no rotation covers, from one AWS Health event.
#[derive(Debug, Clone, Serialize)]
pub struct ExposedUnmatchedDigestDoc {
    #[serde(flatten)]
    pub head: Head,
    pub account_id: String,
    pub exposed: bool,
    pub health_event: String,
    pub count: usize,
    pub keys: Vec<UncoveredKey>,
    pub aws_quarantine: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct UncoveredKey {
    pub key_id: String,
    pub user: Option<String>,
    pub deactivated: bool,
    pub key_state: String,
}

/// An IAM user with a failing finding and no rotation (`rotation.unmatched`).
#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedDoc {
    #[serde(flatten)]
    pub head: Head,
    pub account_id: String,
    pub user: String,
    pub finding_id: String,
    pub recommended_action: &'static str,
}

/// Several such users from one intake message.
#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedDigestDoc {
    #[serde(flatten)]
    pub head: Head,
    pub users: Vec<UnmatchedUser>,
    pub count: usize,
    pub recommended_action: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedUser {
    pub account_id: String,
    pub user: String,
    pub finding_id: String,
}

/// The evidence of an unresolved saga became clear (`rotation.evidence`).
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: String,
    pub saga_id: String,
    pub status: &'static str,
    pub credential: Named,
    pub target: Named,
    pub new_key: Option<String>,
    pub old_keys: Vec<String>,
    pub keep: Option<&'static str>,
    pub evidence: String,
    pub resolving: bool,
    pub recommended_action: String,
    pub resolve_command: String,
    pub status_command: String,
}

/// A wait on a person (`rotation.action_required`, `rotation.reminder`).
#[derive(Debug, Clone, Serialize)]
pub struct PromptDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: String,
    pub saga_id: String,
    pub status: &'static str,
    pub trigger: String,
    /// `create_new` or `delete_old`; for a saga with the trust shape
    /// `trust_new` or `check_sign_in`.
    pub action: &'static str,
    /// The reminder's number; `null` on the first notice.
    pub reminder: Option<u32>,
    pub deadline: Option<Millis>,
    pub credential: Named,
    pub target: Named,
    pub old_token: Option<OldToken>,
    pub new_token: Option<String>,
    pub steps: Vec<String>,
    pub commands: Vec<String>,
    pub status_command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OldToken {
    pub id: String,
    /// Its creation date, as the person gave it.
    pub created: Option<String>,
}

/// Quarantine began, changed, disabled a rotation, or ended.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: String,
    pub credential: Named,
    pub target: Named,
    pub consecutive_failures: u32,
    pub quarantine: Option<QuarantineState>,
    pub last_saga: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineState {
    pub since: Millis,
    pub reason: String,
    pub series: u32,
    pub next_attempt: Millis,
    pub disabled: bool,
}

/// The answer to a rotation request (`rotation.request_accepted`, `_rejected`).
#[derive(Debug, Clone, Serialize)]
pub struct RequestAnswerDoc {
    #[serde(flatten)]
    pub head: Head,
    pub rotation_id: Option<String>,
    pub saga_id: Option<String>,
    pub outcome: String,
    pub reason_rejected: Option<String>,
    pub request: RequestDoc,
    pub correlation_id: String,
    pub status_command: Option<String>,
}

/// A refused configuration version (`keyturn.config_rejected`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigRejectedDoc {
    #[serde(flatten)]
    pub head: Head,
    pub source: String,
    pub refused_version: String,
    pub running_version: String,
    pub problem: String,
}

/// A document as the notice carries it.
pub fn to_document<T: Serialize>(doc: &T) -> Value {
    // Only structs with string keys and plain values: serializing cannot fail.
    serde_json::to_value(doc).expect("a notification document is plain data")
}
