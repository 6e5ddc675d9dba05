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

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
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
            .send()
            .await
            .map_err(|e| aws("sqs", "ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Received { message_id: m.message_id?, receipt: m.receipt_handle?, body: m.body.unwrap_or_default(), receive_count: count })
            })
            .collect())
    }

    async fn ack(&self, m: &Received) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&m.receipt)
            .send()
            .await
            .map_err(|e| aws("sqs", "DeleteMessage", e))?;
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
        let attr = |v: &str| {
            MessageAttributeValue::builder().data_type("String").string_value(v).build().map_err(|e| Error::Config(e.to_string()))
        };
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
        assert!(matches!(
            StepMessage::parse(r#"{"v":1,"saga_id":"s","step":"explode","token":"t"}"#),
            Err(PoisonReason::WrongSchema(_))
        ));
        assert!(matches!(
            StepMessage::parse(r#"{"v":1,"saga_id":"s","step":"start","token":"t","secret":"x"}"#),
            Err(PoisonReason::WrongSchema(_))
        ));
        assert_eq!(
            StepMessage::parse(r#"{"v":2,"saga_id":"s","step":"start","token":"t"}"#),
            Err(PoisonReason::UnsupportedVersion(2))
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(body in ".*") {
            let _ = StepMessage::parse(&body);
        }
    }
}
