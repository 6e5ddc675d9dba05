//! Notifications, modelled on Microsoft Entra's provisioning-failure emails.
//!
//! One notification per saga outcome: what happened, why, what was rolled
//! back, the state of every key and of the target now, what a person should
//! do, and where to look next. [`render`] is pure (tested below); [`Notifier`]
//! publishes with `MessageStructure=json` so e-mail subscribers get the text
//! and SQS/Lambda/HTTPS subscribers get a JSON document, with message
//! attributes (`event`, `severity`, `rotation_id`, `credential_kind`,
//! `target_kind`) for subscription filter policies.
//!
//! Nothing rendered here can contain a secret: the inputs are the saga
//! (which holds none), key ids and the connectors' descriptions.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::saga::{KeyRef, Saga, Status};

mod chat;
pub mod document;
mod publish;
mod render;

pub use chat::*;
pub use publish::*;
pub use render::*;

/// What a notification is about, beyond the saga itself.
pub struct Context<'a> {
    pub credential_kind: &'a str,
    pub credential: &'a str,
    pub target_kind: &'a str,
    pub target: &'a str,
    /// Keys as listed at notification time; `None` if listing failed.
    pub keys_now: Option<&'a [KeyRef]>,
    /// The target's own advice for the failure's error code ([`crate::connectors::Target::advice`]).
    pub advice: Option<String>,
    /// The target's words for a credential made by hand ([`crate::connectors::Target::by_hand_words`]).
    pub words: Option<&'static crate::connectors::HandWords>,
    /// The source's words for an exposed credential ([`crate::connectors::CredentialSource::exposure_words`]).
    pub exposure: Option<&'static crate::connectors::ExposureWords>,
}

/// [`Context`] with owned strings (no key list), for notices outside a step.
pub struct OwnedContext {
    pub credential_kind: &'static str,
    pub credential: String,
    pub target_kind: &'static str,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subject: String,
    pub text: String,
    pub document: Value,
    pub attributes: BTreeMap<&'static str, String>,
}

pub fn event_of(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Succeeded => ("rotation.succeeded", "info"),
        Status::Compensated | Status::Refused => ("rotation.failed", "error"),
        Status::NeedsAttention => ("rotation.needs_attention", "critical"),
        Status::RolledBack => ("rotation.rolled_back", "warning"),
        Status::Running | Status::Compensating => ("rotation.progress", "info"),
    }
}

/// Who really sent a request, for a notice: SQS's `SenderId`, and the
/// event envelope's account and source when it came as an event.
pub fn sent_by(sender: Option<&str>, event: Option<(&str, &str)>) -> String {
    let mut s = format!("SenderId {}", sender.unwrap_or("(not reported)"));
    if let Some((account, source)) = event {
        s.push_str(&format!(", event of account {} (source {source})", if account.is_empty() { "(none)" } else { account }));
    }
    s
}

/// Put the notification's document and correlation id on the saga's
/// notification (the JSON document and a `correlation_id` attribute), and,
/// for a saga started by a request, who asked and who really sent it
/// (`request`).
pub fn correlate(mut n: Notification, saga: &Saga) -> Notification {
    let id = saga.correlation().to_string();
    if let Value::Object(m) = &mut n.document {
        m.insert("correlation_id".into(), Value::String(id.clone()));
        if let Some(r) = &saga.origin.request {
            m.entry("request").or_insert_with(|| document::to_document(&document::RequestDoc::from(r)));
        }
    }
    n.attributes.insert("correlation_id", id);
    n
}

#[cfg(test)]
#[path = "golden/tests.rs"]
mod golden;

#[cfg(test)]
mod tests;
