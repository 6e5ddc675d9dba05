//! The table's other items: requests' idempotency keys, rotations'
//! quarantine health, exposure claims and unmatched users.

use aws_sdk_dynamodb::types::Put;

use super::sagas::request_expired;
use super::update::Write;
use super::{conditional, is_conditional_failure, n, request_pk, s, Store};
use crate::error::{aws, Error, Result};
use crate::saga::Millis;

impl Store {
    /// The saga a request's idempotency key answers with, and its rotation,
    /// while the key's window lasts (`request#<key>` items; `expires_at` is
    /// a DynamoDB TTL attribute in epoch seconds, and an item past it is
    /// ignored here whether or not DynamoDB has deleted it yet).
    pub async fn idempotent(&self, key: &str, now: Millis) -> Result<Option<(String, String)>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", request_pk(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        let Some(item) = out.item else { return Ok(None) };
        let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let expires = super::num(&item, "expires_at").unwrap_or(0);
        if expires.saturating_mul(1000) <= now {
            return Ok(None);
        }
        Ok(get_s("saga_id").zip(get_s("rotation_id")))
    }

    pub(super) fn request_put(&self, key: &str, saga_id: &str, rotation_id: &str, until: Millis, now: Millis) -> Result<Put> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", request_pk(key))
            .item("kind", s("request"))
            .item("saga_id", s(saga_id))
            .item("rotation_id", s(rotation_id))
            .item("requested_at", n(now)) // not created_at: request items stay out of the by-creation indexes
            .item("expires_at", n(until.div_ceil(1000)));
        request_expired(now).put(put).build().map_err(|e| Error::Config(e.to_string()))
    }

    /// Record a finding's IAM user that no rotation covers. Answers true the
    /// first time (report it), false on every re-import (just count it).
    pub async fn record_unmatched(&self, account: &str, user: &str, finding_id: &str, now: Millis) -> Result<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("unmatched#{account}#{user}")))
            .item("kind", s("unmatched"))
            .item("first_seen", n(now))
            .item("last_seen", n(now))
            .item("last_finding", s(finding_id))
            .item("seen", n(1));
        let res = Write::new().when_new().put_item(put).send().await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {
                Write::new()
                    .add("seen", n(1))
                    .set("last_seen", n(now))
                    .set("last_finding", s(finding_id))
                    .update_item(self.client.update_item())
                    .table_name(&self.table)
                    .key("pk", s(format!("unmatched#{account}#{user}")))
                    .send()
                    .await
                    .map_err(|e| aws("dynamodb", "UpdateItem", e))?;
                Ok(false)
            }
            Err(e) => Err(aws("dynamodb", "PutItem", e)),
        }
    }

    /// A rotation's failure count and quarantine, with its version (0: none yet).
    pub async fn health(&self, rotation_id: &str) -> Result<(crate::quarantine::Health, u64)> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("rotation#{rotation_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        let Some(item) = out.item else { return Ok((Default::default(), 0)) };
        let doc = item.get("doc").and_then(|v| v.as_s().ok()).ok_or_else(|| Error::Corrupt("rotation item without doc".into()))?;
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((serde_json::from_str(doc).map_err(|e| Error::Corrupt(format!("rotation health: {e}")))?, version))
    }

    /// Write a rotation's health, conditional on the version read.
    pub async fn save_health(&self, rotation_id: &str, h: &crate::quarantine::Health, expected: u64) -> Result<()> {
        let doc = serde_json::to_string(h).map_err(|e| Error::Corrupt(e.to_string()))?;
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("rotation#{rotation_id}")))
            .item("kind", s("rotation"))
            .item("doc", s(doc))
            .item("version", n(expected + 1));
        let write = if expected == 0 { Write::new().when_new() } else { Write::new().when_eq("version", n(expected)) };
        conditional(write.put_item(req).send().await, "PutItem", rotation_id, expected).map(|_| ())
    }

    /// Claim the handling of an exposed key for one intake message: `true`
    /// the first time, and again for a redelivery of the same message (it
    /// may have stopped half-way); `false` for any other message naming the
    /// key (AWS repeats its events).
    pub async fn claim_exposure(&self, key_id: &str, message_id: &str, event_arn: &str, now: Millis) -> Result<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("exposed#{key_id}")))
            .item("kind", s("exposed"))
            .item("message_id", s(message_id))
            .item("event_arn", s(event_arn))
            .item("first_seen", n(now));
        let write = Write::new().when(|w| format!("attribute_not_exists({}) OR {} = {}", w.name("pk"), w.name("message_id"), w.value(s(message_id))));
        let res = write.put_item(put).send().await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => Ok(false),
            Err(e) => Err(aws("dynamodb", "PutItem", e)),
        }
    }

    /// How often an unmatched user was seen (None: never).
    pub async fn unmatched_count(&self, account: &str, user: &str) -> Result<Option<u64>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("unmatched#{account}#{user}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        Ok(out.item.and_then(|i| i.get("seen").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())))
    }
}
