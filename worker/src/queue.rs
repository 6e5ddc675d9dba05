//! Step messages and the queue they travel on.
//!
//! A message carries only the saga id, the step and the attempt token —
//! never a secret, never saga state. The saga in DynamoDB is the truth; a
//! message is only a nudge to look at it, which is why duplicates and stale
//! messages are harmless (see [`crate::saga::accepts`]).
//!
//! The queue is a narrow trait so the engine does not care whether it runs
//! under a long-polling worker or (later) a Lambda event source mapping.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use serde::{Deserialize, Serialize};

use crate::error::{aws, Error, Result};
use crate::saga::Step;

/// Current message schema version.
pub const SCHEMA: u32 = 1;

/// The body of a step message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMessage {
    pub v: u32,
    pub saga_id: String,
    pub step: Step,
    pub token: String,
}

/// Why a body is not a step message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body does not match the step message schema: {0}")]
    WrongSchema(String),
    #[error("unsupported message schema version {0} (this worker reads {SCHEMA})")]
    UnsupportedVersion(u32),
    #[error("saga {0} does not exist")]
    UnknownSaga(String),
    #[error("saga {0} is stored in a form this worker cannot read: {1}")]
    CorruptSaga(String, String),
}

impl StepMessage {
    pub fn new(saga_id: &str, step: Step, token: &str) -> StepMessage {
        StepMessage { v: SCHEMA, saga_id: saga_id.into(), step, token: token.into() }
    }

    /// Parse a body, classifying what is wrong with a bad one.
    pub fn parse(body: &str) -> Result<StepMessage, PoisonReason> {
        let value: serde_json::Value = serde_json::from_str(body).map_err(|e| PoisonReason::NotJson(e.to_string()))?;
        if let Some(v) = value.get("v").and_then(|v| v.as_u64()) {
            if v != SCHEMA as u64 {
                return Err(PoisonReason::UnsupportedVersion(v as u32));
            }
        }
        let msg: StepMessage = serde_json::from_value(value).map_err(|e| PoisonReason::WrongSchema(e.to_string()))?;
        if msg.saga_id.is_empty() || msg.token.is_empty() {
            return Err(PoisonReason::WrongSchema("empty saga_id or token".into()));
        }
        Ok(msg)
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("step message serializes")
    }
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
    /// The step queue it came from: its acknowledgement, visibility and
    /// dead-lettering go back to that queue.
    pub lane: Lane,
    /// Who really sent it: SQS's `SenderId` system attribute (the IAM
    /// user's unique id, or `<role id>:<session name>` for a role), as
    /// opposed to anything the body claims. `None` when SQS did not say.
    pub sender: Option<String>,
}

impl Received {
    /// A step message no queue delivered: made by the emergency watch
    /// (`crate::sweeper::Sweeper::watch`) from the step and token a saga
    /// records, to take over an emergency whose worker died without
    /// waiting for its SQS message to come back. It has no receipt: there
    /// is no visibility to extend, and acknowledging it does nothing (the
    /// SQS message, when it comes back, is stale or waits the lease out).
    pub fn watched(msg: &StepMessage) -> Received {
        Received {
            message_id: format!("watch:{}", msg.saga_id),
            receipt: String::new(),
            body: msg.body(),
            receive_count: 1,
            lane: Lane::Priority,
            sender: None,
        }
    }

    /// Whether a queue delivered it (it has a receipt to acknowledge it,
    /// extend its visibility or dead-letter it with).
    pub fn from_queue(&self) -> bool {
        !self.receipt.is_empty()
    }
}

/// Which step queue a step message travels on.
///
/// Why two: SQS delivers roughly in order, so a step sent behind a backlog
/// of a thousand ordinary rotations waits for all of them. Steps that must
/// not wait — an exposed key's emergency saga, a step a person is waiting
/// on — go on the priority queue, which every worker polls with capacity of
/// its own (`[worker] priority_concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    #[default]
    Ordinary,
    Priority,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Ordinary => "ordinary",
            Lane::Priority => "priority",
        }
    }
}

/// The step queue as the engine needs it.
pub trait Queue: Send + Sync + 'static {
    /// Send a step message, invisible for `delay` (capped at SQS's 15 min;
    /// longer waits are re-armed by the engine when the message arrives).
    fn send(&self, msg: &StepMessage, delay: Duration) -> impl Future<Output = Result<()>> + Send;
    fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> impl Future<Output = Result<Vec<Received>>> + Send;
    /// Acknowledge (delete) a handled message.
    fn ack(&self, m: &Received) -> impl Future<Output = Result<()>> + Send;
    /// Keep a message invisible for `visibility` from now.
    fn extend(&self, m: &Received, visibility: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Move a poison message to the dead-letter queue with its reason.
    fn dead_letter(&self, m: &Received, reason: &str) -> impl Future<Output = Result<()>> + Send;
    /// About how many messages wait to be received (visible, not delayed,
    /// not in flight): the backlog the sweeper weighs before re-driving.
    fn waiting(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// SQS implementation.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    pub dlq_url: String,
}

/// SQS caps a message delay at 900 s.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

impl Queue for SqsQueue {
    async fn send(&self, msg: &StepMessage, delay: Duration) -> Result<()> {
        let secs = delay.min(MAX_DELAY).as_secs_f64().ceil() as i32;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(msg.body())
            .delay_seconds(secs)
            .send()
            .await
            .map_err(|e| aws("sqs", "SendMessage", e))?;
        Ok(())
    }

    async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<Received>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .send()
            .await
            .map_err(|e| aws("sqs", "ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let count =
                    m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount)).and_then(|c| c.parse().ok()).unwrap_or(1);
                let sender = m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::SenderId)).filter(|s| !s.is_empty()).cloned();
                Some(Received {
                    message_id: m.message_id?,
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receive_count: count,
                    lane: Lane::default(),
                    sender,
                })
            })
            .collect())
    }

    async fn waiting(&self) -> Result<u64> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| aws("sqs", "GetQueueAttributes", e))?;
        Ok(out.attributes().and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages)).and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    async fn ack(&self, m: &Received) -> Result<()> {
        self.client.delete_message().queue_url(&self.url).receipt_handle(&m.receipt).send().await.map_err(|e| aws("sqs", "DeleteMessage", e))?;
        Ok(())
    }

    async fn extend(&self, m: &Received, visibility: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&m.receipt)
            .visibility_timeout(visibility.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| aws("sqs", "ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn dead_letter(&self, m: &Received, reason: &str) -> Result<()> {
        let attr = |v: &str| MessageAttributeValue::builder().data_type("String").string_value(v).build().map_err(|e| Error::Config(e.to_string()));
        // Attribute values are capped; the reason is ours and short anyway.
        let reason: String = reason.chars().take(1000).collect();
        self.client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(if m.body.is_empty() { "(empty body)".to_string() } else { m.body.clone() })
            .message_attributes("keyturn_reason", attr(&reason)?)
            .message_attributes("keyturn_source_message_id", attr(&m.message_id)?)
            .send()
            .await
            .map_err(|e| aws("sqs", "SendMessage", e))?;
        self.ack(m).await
    }
}

/// A message in a dead-letter queue, as `keyturn dlq list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    #[serde(skip)]
    pub receipt: String,
    pub body: String,
    /// Why keyturn dead-lettered it (`keyturn_reason`), or a note that SQS's
    /// redrive policy moved it after too many receives.
    pub reason: String,
    /// When it was first sent, milliseconds since the epoch.
    pub sent_at: Option<u64>,
    pub receive_count: u32,
}

impl SqsQueue {
    /// Read every message of the DLQ without removing it: each is held for
    /// `hold` while reading (so one pass sees each once), then made visible
    /// again unless the caller acts on it first.
    pub async fn dlq_messages(&self, hold: Duration) -> Result<Vec<DeadLetter>> {
        let mut out: Vec<DeadLetter> = Vec::new();
        loop {
            let r = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(hold.as_secs().max(1) as i32)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| aws("sqs", "ReceiveMessage", e))?;
            let batch = r.messages.unwrap_or_default();
            if batch.is_empty() {
                return Ok(out);
            }
            for m in batch {
                let (Some(id), Some(receipt)) = (m.message_id.clone(), m.receipt_handle.clone()) else { continue };
                if out.iter().any(|d| d.message_id == id) {
                    continue;
                }
                let sys = m.attributes.clone().unwrap_or_default();
                out.push(DeadLetter {
                    reason: m
                        .message_attributes
                        .as_ref()
                        .and_then(|a| a.get("keyturn_reason"))
                        .and_then(|v| v.string_value.clone())
                        .unwrap_or_else(|| "moved by the queue's redrive policy after repeated failed receives (see the worker logs)".into()),
                    sent_at: sys.get(&MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse().ok()),
                    receive_count: sys.get(&MessageSystemAttributeName::ApproximateReceiveCount).and_then(|v| v.parse().ok()).unwrap_or(0),
                    message_id: id,
                    receipt,
                    body: m.body.unwrap_or_default(),
                });
            }
        }
    }

    /// Send a dead letter back to the main queue, then delete it from the DLQ.
    pub async fn redrive(&self, d: &DeadLetter) -> Result<()> {
        self.client.send_message().queue_url(&self.url).message_body(&d.body).send().await.map_err(|e| aws("sqs", "SendMessage", e))?;
        self.client.delete_message().queue_url(&self.dlq_url).receipt_handle(&d.receipt).send().await.map_err(|e| aws("sqs", "DeleteMessage", e))?;
        Ok(())
    }

    /// Make a held dead letter visible again (after listing).
    pub async fn release(&self, d: &DeadLetter) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.dlq_url)
            .receipt_handle(&d.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| aws("sqs", "ChangeMessageVisibility", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = StepMessage::new("s1", Step::PushToTarget, "abc");
        assert_eq!(m.body(), r#"{"v":1,"saga_id":"s1","step":"push_to_target","token":"abc"}"#);
        assert_eq!(StepMessage::parse(&m.body()).unwrap(), m);
    }

    #[test]
    fn poison_is_classified() {
        assert!(matches!(StepMessage::parse("hello"), Err(PoisonReason::NotJson(_))));
        assert!(matches!(StepMessage::parse(r#"{"v":1,"saga_id":"s"}"#), Err(PoisonReason::WrongSchema(_))));
        assert!(matches!(StepMessage::parse(r#"{"v":1,"saga_id":"s","step":"explode","token":"t"}"#), Err(PoisonReason::WrongSchema(_))));
        assert!(matches!(StepMessage::parse(r#"{"v":1,"saga_id":"s","step":"start","token":"t","secret":"x"}"#), Err(PoisonReason::WrongSchema(_))));
        assert_eq!(StepMessage::parse(r#"{"v":2,"saga_id":"s","step":"start","token":"t"}"#), Err(PoisonReason::UnsupportedVersion(2)));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(body in ".*") {
            let _ = StepMessage::parse(&body);
        }
    }
}
