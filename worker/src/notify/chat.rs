//! Alerts that render in chat: every notice also as a *custom notification*
//! of AWS's chat integration (Amazon Q Developer in chat applications,
//! formerly AWS Chatbot), which renders it in Slack or Microsoft Teams.
//!
//! The format is AWS's (`version` `1.0`, `source` `custom`, `content` with
//! `textType`, `title`, `description`, `nextSteps`, `keywords`, and
//! `metadata`); `schemas/chat-notification.json` holds the fields keyturn
//! fills, and docs/operators.md how to subscribe a channel. The message is
//! built from the notice itself (its subject, text and document), so it says
//! nothing the e-mail does not: no secret can reach it.
//!
//! Text that came from outside (user names, finding ids, error messages)
//! cannot add chat markup: a `<` that would start a mention or a link
//! becomes `‹`, and the text sits in a code block it cannot close.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Notification;

/// The most of the e-mail text a chat message carries (chat platforms cut
/// long messages; the e-mail and `keyturn status` have it all).
pub const DESCRIPTION_MAX: usize = 3000;

/// One custom notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    /// Always `1.0`.
    pub version: &'static str,
    /// Always `custom`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub content: ChatContent,
    pub metadata: ChatMetadata,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatContent {
    /// Always `client-markdown`: rendered in the chat platform's markdown.
    pub text_type: &'static str,
    pub title: String,
    pub description: String,
    pub next_steps: Vec<String>,
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMetadata {
    /// A saga's (or request's) notices share a thread: its correlation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub summary: String,
    pub event_type: String,
    pub related_resources: Vec<String>,
    pub additional_context: BTreeMap<String, String>,
}

/// No chat markup from text keyturn does not control: a `<` that would
/// open a mention, a channel or user reference or a link (`<!here>`,
/// `<@U123>`, `<#C1>`, `<https://…|…>`, `<at>`) becomes `‹`. A `<` before a
/// space (`keyturn provide S < token-file`) stays.
fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let opens = c == '<' && chars.peek().is_some_and(|n| matches!(n, '!' | '@' | '#') || n.is_ascii_alphabetic());
        out.push(if opens { '‹' } else { c });
    }
    out
}

/// The status line's marker, by severity.
fn marker(severity: &str) -> &'static str {
    match severity {
        "critical" => "🔴",
        "error" => "🟠",
        "warning" => "🟡",
        _ => "🟢",
    }
}

fn text_of(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// The notice as a chat message.
pub fn chat_message(n: &Notification) -> ChatMessage {
    let attr = |k: &str| n.attributes.get(k).cloned().unwrap_or_default();
    let (event, severity) = (attr("event"), attr("severity"));
    let d = &n.document;
    let title = n.subject.strip_prefix("[keyturn] ").unwrap_or(&n.subject);
    let title = format!("{} {}", marker(&severity), inert(&crate::connectors::check::one_line(title, 100)));
    // The e-mail text, headline (the title says it) left out, in a code block
    // its columns survive in and that its content cannot close.
    let body = n.text.split_once("\n\n").map(|(_, rest)| rest).unwrap_or(&n.text).trim_end();
    let mut body: String = inert(body).replace("```", "'''");
    if body.chars().count() > DESCRIPTION_MAX {
        body = body.chars().take(DESCRIPTION_MAX).collect::<String>() + "\n… (cut: the e-mail and `keyturn status` have all of it)";
    }
    let description = format!("*{}* · severity {severity}\n```\n{body}\n```", inert(&event));
    // What to do: the notice's own steps, then its recommended action, then the commands.
    let mut next_steps: Vec<String> = Vec::new();
    for list in [&d["steps"], &d["next_steps"], &d["exposure"]["next_steps"]] {
        next_steps.extend(list.as_array().into_iter().flatten().filter_map(text_of));
    }
    next_steps.extend(text_of(&d["recommended_action"]));
    for command in [&d["resolve_command"], &d["status_command"]] {
        if let Some(c) = text_of(command) {
            next_steps.push(format!("`{c}`"));
        }
    }
    let next_steps = next_steps.iter().map(|s| inert(s)).collect();
    let rotation = attr("rotation_id");
    let keywords = [event.clone(), severity.clone(), rotation.clone()].into_iter().filter(|k| !k.is_empty() && k != "none").map(|k| inert(&k)).collect();
    let mut context = BTreeMap::new();
    for key in ["rotation_id", "saga_id", "status", "account_id", "key_id"] {
        if let Some(v) = text_of(&d[key]) {
            context.insert(key.to_string(), inert(&v));
        }
    }
    let related =
        [&d["saga_id"], &d["health_event"], &d["exposure"]["health_event"], &d["finding_id"]].into_iter().filter_map(text_of).map(|s| inert(&s)).collect();
    let thread = n.attributes.get("correlation_id").filter(|c| !c.is_empty()).map(|c| inert(c));
    ChatMessage {
        version: "1.0",
        source: "custom",
        id: None,
        content: ChatContent { text_type: "client-markdown", title, description, next_steps, keywords },
        metadata: ChatMetadata {
            thread_id: thread,
            summary: inert(&crate::connectors::check::one_line(&n.subject, 100)),
            event_type: event,
            related_resources: related,
            additional_context: context,
        },
    }
}
