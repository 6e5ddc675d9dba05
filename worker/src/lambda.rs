//! Lambda mode: the same handlers as the long-running worker, driven by an
//! SQS event source mapping instead of a poll loop.
//!
//! * An SQS event's records are handled one by one with the very functions
//!   the worker uses ([`Engine::handle`] for the step queue and the priority
//!   step queue, [`Engine::handle_intake`] for the intake queue), picked by
//!   the record's `eventSourceARN`. The priority queue has an event source
//!   mapping of its own, so its records never wait behind the step queue's. The answer lists only the records that must come back
//!   (`ReportBatchItemFailures`): errors, and step messages held off by a live
//!   lease — acknowledging those would lose them until the sweeper noticed.
//! * A scheduled event (`{"keyturn":"sweep"}` from EventBridge) runs the
//!   sweeper and the key-age scan, since a Lambda has no background loop.
//!
//! Parsing and the response shape are pure and tested below.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use crate::engine::{Engine, Handled};
use crate::queue::{Lane, Queue, Received};

/// One SQS record of a Lambda event: the fields keyturn reads, by the names
/// Lambda gives them (the rest of the record is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    #[serde(rename = "eventSourceARN")]
    pub event_source_arn: String,
    /// `attributes.ApproximateReceiveCount`; 1 when it is missing or not a count.
    #[serde(rename = "attributes", default = "one", deserialize_with = "receive_count")]
    pub receive_count: u32,
    /// `attributes.SenderId`: who sent the message ([`Received::sender`]);
    /// read beside the struct (serde reads `attributes` once, for the count).
    #[serde(skip)]
    pub sender: Option<String>,
}

fn one() -> u32 {
    1
}

/// Lambda sends the count as a string. Whatever else is there does not make
/// the record unreadable: the count only feeds the dead-letter decision.
fn receive_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    struct Attributes {
        #[serde(rename = "ApproximateReceiveCount")]
        count: Option<String>,
    }
    let v = Value::deserialize(d)?;
    Ok(from_object::<Attributes>(&v).ok().and_then(|a| a.count).and_then(|c| c.parse().ok()).unwrap_or(1))
}

/// Which service a record came from (read before the rest, so a record of
/// another service is named as such).
#[derive(Deserialize)]
struct RecordSource {
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
}

/// An SQS event: its records, each read on its own so an error names it.
#[derive(Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records")]
    records: Vec<Value>,
}

/// The scheduled event: `{"keyturn":"sweep"}`.
#[derive(Deserialize)]
struct Scheduled {
    keyturn: Option<String>,
}

/// `T` from a JSON object (serde would also read a struct from an array;
/// no event is one).
fn from_object<'a, T: Deserialize<'a>>(v: &'a Value) -> Result<T, String> {
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    T::deserialize(v).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Sqs(Vec<SqsRecord>),
    /// EventBridge schedule: sweep and scan.
    Sweep,
}

/// Whether an invocation is the scheduled sweep.
pub fn is_sweep(v: &Value) -> bool {
    from_object::<Scheduled>(v).is_ok_and(|s| s.keyturn.as_deref() == Some("sweep"))
}

pub fn parse_invocation(v: &Value) -> Result<Invocation, String> {
    if is_sweep(v) {
        return Ok(Invocation::Sweep);
    }
    let event: SqsEvent = from_object(v).map_err(|_| "event has neither Records nor {\"keyturn\":\"sweep\"}")?;
    event
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let source: RecordSource = from_object(r).map_err(|e| format!("record {i}: {e}"))?;
            if source.event_source.as_deref() != Some("aws:sqs") {
                return Err(format!("record {i} is not from SQS"));
            }
            let mut rec = from_object::<SqsRecord>(r).map_err(|e| format!("record {i}: {e}"))?;
            rec.sender = r.pointer("/attributes/SenderId").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            Ok(rec)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Invocation::Sqs)
}

/// The partial-batch response (`ReportBatchItemFailures`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResponse<'a> {
    batch_item_failures: Vec<ItemFailure<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemFailure<'a> {
    item_identifier: &'a str,
}

/// The partial-batch response: only these records are retried.
pub fn batch_response(failed: &[String]) -> Value {
    json!(BatchResponse { batch_item_failures: failed.iter().map(|id| ItemFailure { item_identifier: id }).collect() })
}

/// `…/123456789012/keyturn-steps` and `arn:aws:sqs:…:keyturn-steps` name the same queue.
pub fn same_queue(queue_url: &str, queue_arn: &str) -> bool {
    let name_of_url = queue_url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name_of_arn = queue_arn.rsplit(':').next().unwrap_or("");
    !name_of_url.is_empty() && name_of_url == name_of_arn
}

/// Handle one invocation. Answers the Lambda response.
pub async fn handle_invocation<Q: Queue, I: Queue>(
    engine: &Engine<Q>,
    step_queue_url: &str,
    priority_queue_url: Option<&str>,
    intake: Option<(&I, &str)>,
    event: &Value,
    scan_jitter: Duration,
) -> Result<Value, String> {
    match parse_invocation(event)? {
        Invocation::Sweep => {
            let redriven = engine.sweep().await.map_err(|e| e.to_string())?;
            let started = engine.scan_and_start(scan_jitter).await.map_err(|e| e.to_string())?;
            info!(redriven, started = started.len(), "scheduled sweep and scan done");
            Ok(json!({"redriven": redriven, "started": started.len()}))
        }
        Invocation::Sqs(records) => {
            let mut failed = Vec::new();
            for r in records {
                let mut m = Received {
                    message_id: r.message_id.clone(),
                    receipt: r.receipt_handle,
                    body: r.body,
                    receive_count: r.receive_count,
                    lane: Lane::Ordinary,
                    sender: r.sender,
                };
                let priority = priority_queue_url.is_some_and(|url| same_queue(url, &r.event_source_arn));
                let ok = if priority || same_queue(step_queue_url, &r.event_source_arn) {
                    if priority {
                        m.lane = Lane::Priority;
                    }
                    match engine.handle(&m).await {
                        Ok(Handled::Retained(_)) | Ok(Handled::Crashed) => false,
                        Ok(_) => true,
                        Err(e) => {
                            warn!(message_id = %m.message_id, error = %e, "step message not handled; reporting it for retry");
                            false
                        }
                    }
                } else if let Some((iq, _)) = intake.filter(|(_, url)| same_queue(url, &r.event_source_arn)) {
                    match engine.handle_intake(iq, &m).await {
                        // Held back (an exposed key's saga mid-step): must come back.
                        Ok(report) if report.retained => false,
                        Ok(_) => true,
                        Err(e) => {
                            warn!(message_id = %m.message_id, error = %e, "intake event not handled; reporting it for retry");
                            false
                        }
                    }
                } else {
                    error!(source = %r.event_source_arn, "record from a queue this configuration does not name");
                    false
                };
                if !ok {
                    failed.push(r.message_id);
                }
            }
            Ok(batch_response(&failed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"Records":[{"messageId":"059f36b4-87a3-44ab-83d2-661975830a7d","receiptHandle":"AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a","body":"{\"v\":1}","attributes":{"ApproximateReceiveCount":"3","SentTimestamp":"1545082649183","SenderId":"AIDAIENQZJOLO23YVJ4VO","ApproximateFirstReceiveTimestamp":"1545082649185"},"messageAttributes":{},"md5OfBody":"e4e68fb7bd0e697a0ae8f1bb342846b3","eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-2:123456789012:keyturn-steps","awsRegion":"us-east-2"}]}"#;

    #[test]
    fn parses_the_documented_sqs_event() {
        let Invocation::Sqs(r) = parse_invocation(&serde_json::from_str(EVENT).unwrap()).unwrap() else { panic!() };
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].message_id, "059f36b4-87a3-44ab-83d2-661975830a7d");
        assert_eq!(r[0].receive_count, 3);
        assert_eq!(r[0].sender.as_deref(), Some("AIDAIENQZJOLO23YVJ4VO"), "who really sent it, as under the worker");
        assert!(same_queue("https://sqs.us-east-2.amazonaws.com/123456789012/keyturn-steps", &r[0].event_source_arn));
        assert!(!same_queue("https://sqs.us-east-2.amazonaws.com/123456789012/keyturn-intake", &r[0].event_source_arn));
    }

    #[test]
    fn sweep_and_bad_events() {
        assert_eq!(parse_invocation(&json!({"keyturn": "sweep"})).unwrap(), Invocation::Sweep);
        assert!(parse_invocation(&json!({"hello": 1})).is_err());
        assert!(parse_invocation(&json!({"Records": [{"eventSource": "aws:sns"}]})).unwrap_err().contains("not from SQS"));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(body in ".*", id in ".*", arn in ".*") {
            let _ = serde_json::from_str::<Value>(&body).map(|v| parse_invocation(&v));
            let ev = json!({"Records": [{"messageId": id, "receiptHandle": "r", "body": body, "eventSource": "aws:sqs", "eventSourceARN": arn}]});
            let _ = parse_invocation(&ev);
            let _ = same_queue(&body, &arn);
        }
    }

    #[test]
    fn records_missing_a_field_or_of_the_wrong_shape_are_named() {
        let rec = |r: Value| parse_invocation(&json!({"Records": [r]}));
        let full = json!({"messageId": "m", "receiptHandle": "r", "body": "b", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:x:1:q"});
        for field in ["messageId", "receiptHandle", "body", "eventSourceARN"] {
            let mut r = full.clone();
            r.as_object_mut().unwrap().remove(field);
            let e = rec(r).unwrap_err();
            assert!(e.starts_with("record 0") && e.contains(field), "{field}: {e}");
            let mut r = full.clone();
            r[field] = json!(7);
            assert!(rec(r).unwrap_err().starts_with("record 0"), "{field} as a number");
        }
        assert!(rec(json!("aws:sqs")).unwrap_err().starts_with("record 0"));
        // An event shaped as an array is neither a sweep nor a batch.
        assert!(!is_sweep(&json!(["sweep"])));
        assert!(parse_invocation(&json!([["m", "r", "b", "a"]])).is_err());
        assert!(parse_invocation(&json!({"Records": "x"})).unwrap_err().contains("neither Records"));
    }

    #[test]
    fn a_receive_count_that_is_missing_or_not_a_count_reads_as_one() {
        let with = |attributes: Option<Value>| {
            let mut r = json!({"messageId": "m", "receiptHandle": "r", "body": "b", "eventSource": "aws:sqs", "eventSourceARN": "a"});
            if let Some(a) = attributes {
                r["attributes"] = a;
            }
            let Invocation::Sqs(r) = parse_invocation(&json!({"Records": [r]})).unwrap() else { panic!() };
            r[0].receive_count
        };
        assert_eq!(with(Some(json!({"ApproximateReceiveCount": "7"}))), 7);
        assert_eq!(with(None), 1);
        assert_eq!(with(Some(json!({"ApproximateReceiveCount": 7}))), 1);
        assert_eq!(with(Some(json!({"ApproximateReceiveCount": "-1"}))), 1);
        assert_eq!(with(Some(json!(null))), 1);
        assert_eq!(with(Some(json!([]))), 1);
    }

    #[test]
    fn response_lists_only_failures() {
        assert_eq!(batch_response(&["a".into()]), json!({"batchItemFailures": [{"itemIdentifier": "a"}]}));
        assert_eq!(batch_response(&[]), json!({"batchItemFailures": []}));
    }
}
