//! Publishing: SNS (`MessageStructure=json`) and the outcome event on EventBridge.

use aws_sdk_sns::types::MessageAttributeValue;
use serde_json::{json, Value};

use crate::error::{aws, Error, Result};

use super::Notification;

/// The `source` of keyturn's outcome events on EventBridge.
pub const EVENT_SOURCE: &str = "keyturn.outcomes";

/// The EventBridge `detail-type` of a notification's event kind:
/// `rotation.needs_attention` → `Rotation Needs Attention`,
/// `keyturn.config_rejected` → `Keyturn Config Rejected`.
pub fn detail_type(event: &str) -> String {
    event
        .split(['.', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The EventBridge `detail` of a notification: the SNS JSON document, with
/// `correlation_id` always present (`null` for notices about no saga).
pub fn event_detail(n: &Notification) -> Value {
    let mut d = n.document.clone();
    if let Value::Object(m) = &mut d {
        m.entry("correlation_id").or_insert(Value::Null);
    }
    d
}

/// How PutEvents is retried: entries EventBridge reports failed
/// (`FailedEntryCount`, a per-entry `ErrorCode`) and calls that failed as a
/// whole are sent again, up to `attempts` times, waiting `base`, 2×`base`, …
#[derive(Debug, Clone, Copy)]
pub struct PutRetry {
    pub attempts: u32,
    pub base: std::time::Duration,
}

impl Default for PutRetry {
    fn default() -> Self {
        PutRetry { attempts: 5, base: std::time::Duration::from_millis(200) }
    }
}

/// One PutEvents call's answer per entry: `None` put, `Some(code)` failed.
pub type EntryResults = Vec<Option<String>>;

/// Send `entries` with `send` (one PutEvents call), re-sending only the
/// failed ones, as [`PutRetry`] says. `Err` holds the last error codes.
pub async fn put_with_retry<E, F, Fut>(entries: Vec<E>, retry: PutRetry, mut send: F) -> std::result::Result<(), String>
where
    E: Clone,
    F: FnMut(Vec<E>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<EntryResults, String>>,
{
    let mut pending = entries;
    let mut last = String::new();
    for attempt in 0..retry.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(retry.base * 2u32.saturating_pow(attempt - 1)).await;
        }
        match send(pending.clone()).await {
            Ok(results) => {
                let failed: Vec<(E, String)> = pending
                    .iter()
                    .cloned()
                    .zip(results.into_iter().chain(std::iter::repeat(Some("NoResult".to_string()))))
                    .filter_map(|(e, r)| r.map(|code| (e, code)))
                    .collect();
                if failed.is_empty() {
                    return Ok(());
                }
                last = failed.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join(", ");
                pending = failed.into_iter().map(|(e, _)| e).collect();
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The SNS message of a notification (`MessageStructure=json`): the text
/// for e-mail, the JSON document for every other protocol.
pub fn sns_message(n: &Notification) -> String {
    let doc = n.document.to_string();
    json!({
        "default": n.text,
        "email": n.text,
        "email-json": doc,
        "sqs": doc,
        "lambda": doc,
        "http": doc,
        "https": doc,
    })
    .to_string()
}

/// Publishes notifications to SNS, and each also as an event on EventBridge.
#[derive(Clone, Debug)]
pub struct Notifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    events: Option<(aws_sdk_eventbridge::Client, String)>,
    /// The chat topic (`[aws] chat_topic_arn`): each notice also as a chat message.
    chat_topic: Option<String>,
    retry: PutRetry,
}

impl Notifier {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Notifier {
        Notifier { client, topic_arn: topic_arn.into(), events: None, chat_topic: None, retry: PutRetry::default() }
    }

    /// Also put every notification on `bus` (name or ARN; `default`: the account's default bus).
    pub fn with_events(mut self, client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Notifier {
        self.events = Some((client, bus.into()));
        self
    }

    /// Also publish every notification, as a chat integration custom
    /// notification ([`super::chat_message`]), on the topic `topic_arn`.
    pub fn with_chat(mut self, topic_arn: impl Into<String>) -> Notifier {
        self.chat_topic = Some(topic_arn.into());
        self
    }

    /// SNS first (the channel people read), then the chat topic, then EventBridge. An event
    /// EventBridge still refuses after [`PutRetry`] is logged and counted
    /// (metric `OutcomeEventFailed`), not retried by failing the caller: the
    /// SNS message went out, and a failed step would send it again.
    pub async fn publish(&self, n: &Notification) -> Result<()> {
        let message = sns_message(n);
        // Whatever a renderer put there, a subject is one line of at most
        // 100 characters without control characters (SNS's rule, and a
        // forged name must not add lines to an e-mail's headers).
        let subject = crate::connectors::check::one_line(&n.subject, 100);
        let req = self.client.publish().topic_arn(&self.topic_arn).subject(&subject).message_structure("json").message(message);
        with_attributes(req, n)?.send().await.map_err(|e| aws("sns", "Publish", e))?;
        if let Some(chat) = &self.chat_topic {
            // Like the outcome event: the notice went out, so a refused chat
            // message is logged and counted, not retried by failing the step.
            if let Err(e) = self.publish_chat(chat, n).await {
                let event = n.attributes.get("event").cloned().unwrap_or_default();
                tracing::error!(%event, topic = %chat, error = %e, "could not publish the chat message");
                crate::metrics::emit(&[("Event", &event)], &[crate::metrics::Metric { name: "ChatAlertFailed", unit: "Count", value: 1.0 }]);
            }
        }
        if let Some((client, bus)) = &self.events {
            let event = n.attributes.get("event").cloned().unwrap_or_default();
            if let Err(codes) = put_event(client, bus, n, self.retry).await {
                tracing::error!(%event, bus = %bus, error = %codes, "could not put the outcome event on EventBridge");
                crate::metrics::emit(&[("Event", &event)], &[crate::metrics::Metric { name: "OutcomeEventFailed", unit: "Count", value: 1.0 }]);
            }
        }
        Ok(())
    }
}

impl Notifier {
    /// The notice as a chat message on `topic`, with the same attributes
    /// (so a channel's subscription can filter by severity or event).
    async fn publish_chat(&self, topic: &str, n: &Notification) -> Result<()> {
        let body = serde_json::to_string(&super::chat_message(n)).map_err(|e| Error::Config(e.to_string()))?;
        let req = self.client.publish().topic_arn(topic).message(body);
        with_attributes(req, n)?.send().await.map_err(|e| aws("sns", "Publish", e))?;
        Ok(())
    }
}

/// A publish request with the notification's message attributes (empty ones left out).
fn with_attributes(
    mut req: aws_sdk_sns::operation::publish::builders::PublishFluentBuilder,
    n: &Notification,
) -> Result<aws_sdk_sns::operation::publish::builders::PublishFluentBuilder> {
    for (k, v) in n.attributes.iter().filter(|(_, v)| !v.is_empty()) {
        let attr = MessageAttributeValue::builder().data_type("String").string_value(v).build().map_err(|e| Error::Config(e.to_string()))?;
        req = req.message_attributes(*k, attr);
    }
    Ok(req)
}

/// One notification as a PutEvents entry on `bus`, with retries.
async fn put_event(client: &aws_sdk_eventbridge::Client, bus: &str, n: &Notification, retry: PutRetry) -> std::result::Result<(), String> {
    use aws_sdk_eventbridge::types::PutEventsRequestEntry;
    let event = n.attributes.get("event").map(String::as_str).unwrap_or("keyturn.notification");
    let entry = PutEventsRequestEntry::builder()
        .source(EVENT_SOURCE)
        .detail_type(detail_type(event))
        .detail(event_detail(n).to_string())
        .event_bus_name(bus)
        .build();
    put_with_retry(vec![entry], retry, |entries| async move {
        let out = client.put_events().set_entries(Some(entries)).send().await.map_err(|e| {
            let e = aws("events", "PutEvents", e);
            e.to_string()
        })?;
        Ok(out.entries().iter().map(|r| r.error_code().map(str::to_string)).collect())
    })
    .await
}
