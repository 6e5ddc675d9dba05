//! A saga ↔ its table item: the item a saga is written as, the attributes
//! the conditions and indexes use, and reading an item back.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{n, s, saga_pk, Store, Stored, TTL_ATTRIBUTE};
use crate::error::{Error, Result};
use crate::saga::{self, Millis, Saga, Step};

impl Store {
    pub(super) fn doc(saga: &Saga) -> Result<AttributeValue> {
        serde_json::to_string(saga).map(s).map_err(|e| Error::Corrupt(format!("cannot encode saga: {e}")))
    }

    /// A saga's item as the store writes it (create; tests fill tables with it).
    pub fn item(&self, saga: &Saga, version: u64, due_at: Millis) -> Result<HashMap<String, AttributeValue>> {
        let mut item = HashMap::from([
            ("pk".to_string(), saga_pk(&saga.saga_id)),
            ("kind".to_string(), s("saga")),
            ("saga_id".to_string(), s(&saga.saga_id)),
            ("rotation_id".to_string(), s(&saga.rotation_id)),
            ("status".to_string(), s(saga.status.as_str())),
            ("created_at".to_string(), n(saga.created_at)),
            ("due_at".to_string(), n(due_at)),
            ("run_at".to_string(), n(run_at(saga))),
            ("version".to_string(), n(version)),
            ("doc".to_string(), Self::doc(saga)?),
        ]);
        if !saga.status.is_terminal() {
            item.insert("tok".into(), s(tok(saga.step, &saga.run.token)));
        }
        if active(saga) {
            item.insert("active".into(), s("1"));
        } else if saga.status.is_terminal() {
            item.insert(TTL_ATTRIBUTE.into(), n(self.expiry(saga.updated_at)));
        }
        Ok(item)
    }

    pub(super) fn expiry(&self, ended_at: Millis) -> u64 {
        (ended_at / 1000).saturating_add(self.retention.as_secs())
    }
}

/// The `tok` attribute: a step message's step and token.
pub(super) fn tok(step: Step, token: &str) -> String {
    format!("{}#{token}", step.as_str())
}

/// When the saga's current step may run (0: now).
pub(super) fn run_at(saga: &Saga) -> Millis {
    saga.waiting_until(0).unwrap_or(0)
}

/// In the sparse index of sagas the sweeper reads.
pub(super) fn active(saga: &Saga) -> bool {
    !saga.status.is_terminal() || saga.unresolved()
}

pub(super) fn decode(item: &HashMap<String, AttributeValue>) -> Result<Stored> {
    let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    let get_n = |k: &str| super::num(item, k);
    let doc = get_s("doc").ok_or_else(|| Error::Corrupt("saga item without doc".into()))?;
    let mut saga: Saga = serde_json::from_str(doc).map_err(|e| Error::Corrupt(format!("saga doc: {e}")))?;
    // Attempts begun since the doc was written count as made, at the time
    // of the last lease (earlier ones' times are not kept: an earlier time
    // would only widen what counts as an orphan).
    let leased_at = get_n("leased_at").unwrap_or(saga.updated_at);
    for _ in 0..get_n("pend").unwrap_or(0) {
        saga = saga::begin_attempt(&saga, leased_at);
    }
    Ok(Stored {
        version: get_n("version").ok_or_else(|| Error::Corrupt(format!("saga {} without version", saga.saga_id)))?,
        lease_owner: get_s("lease_owner").cloned(),
        lease_until: get_n("lease_until").unwrap_or(0),
        secret: item.get("secret").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()),
        grant: item.get("grant").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()),
        due_at: get_n("due_at").unwrap_or(0),
        watch_at: get_n("watch_at"),
        nudge: get_s("nudge").cloned(),
        saga,
    })
}
