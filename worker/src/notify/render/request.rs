//! The answer to a rotation request.

use std::collections::BTreeMap;

use super::super::document::{to_document, Head, RequestAnswerDoc, RequestDoc};
use super::super::{sent_by, Notification};

/// The answer to a rotation request: `rotation.request_accepted` (a saga
/// started, was in flight, or answers a repeated idempotency key) or
/// `rotation.request_rejected` (unknown rotation, an override the policy does
/// not allow, an idempotency key used for another rotation).
pub fn render_request_answer(
    r: &crate::intake::RotationRequest,
    rotation_id: Option<&str>,
    saga_id: Option<&str>,
    outcome: &str,
    reason: Option<&str>,
) -> Notification {
    let accepted = saga_id.is_some();
    let (event, severity) = if accepted { ("rotation.request_accepted", "info") } else { ("rotation.request_rejected", "warning") };
    let named = match &r.target {
        crate::intake::RequestTarget::Rotation(id) => format!("rotation {id}"),
        crate::intake::RequestTarget::User { account_id, user_name } => format!("iam user {user_name} in account {account_id}"),
    };
    let d = RequestAnswerDoc {
        head: Head { event, severity },
        rotation_id: rotation_id.map(str::to_string),
        saga_id: saga_id.map(str::to_string),
        outcome: outcome.into(),
        reason_rejected: reason.map(str::to_string),
        request: RequestDoc {
            requester: r.requester.clone(),
            reason: r.reason.clone(),
            idempotency_key: r.idempotency_key.clone(),
            sender: r.sender.clone(),
            event_account: r.event.as_ref().map(|e| e.account.clone()),
            event_source: r.event.as_ref().map(|e| e.source.clone()),
        },
        correlation_id: r.correlation().to_string(),
        status_command: saga_id.map(|id| format!("keyturn status {id}")),
    };
    // The text says what the document says, in lines.
    let q = &d.request;
    let mut text = format!(
        "{}\n\nRequested:       {named}\nRequester:       {} (as the request says)\nSent by:         {}\nReason:          {}\nIdempotency key: {}\nCorrelation id:  {}\nOutcome:         {}\n",
        if accepted { "Rotation request accepted" } else { "Rotation request rejected" },
        q.requester,
        sent_by(q.sender.as_deref(), q.event_account.as_deref().zip(q.event_source.as_deref())),
        q.reason,
        q.idempotency_key,
        d.correlation_id,
        d.outcome
    );
    if let (Some(id), Some(more)) = (&d.saga_id, &d.status_command) {
        text.push_str(&format!("Saga:            {id}\nMore:            {more}\n"));
    }
    if let Some(why) = &d.reason_rejected {
        text.push_str(&format!("Why:             {why}\n"));
    }
    Notification {
        subject: format!("[keyturn] Rotation request {}: {named}", if accepted { "accepted" } else { "rejected" })
            .replace(['\r', '\n'], " ")
            .chars()
            .take(100)
            .collect(),
        text,
        document: to_document(&d),
        attributes: BTreeMap::from([
            ("event", event.to_string()),
            ("severity", severity.to_string()),
            ("rotation_id", rotation_id.unwrap_or("none").to_string()),
            ("credential_kind", "none".to_string()),
            ("target_kind", "none".to_string()),
            ("correlation_id", r.correlation().to_string()),
        ]),
    }
}
