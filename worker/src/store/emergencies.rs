//! The registry of emergencies in flight: one item (`pk = "emergencies"`)
//! whose string set `sagas` names every emergency saga (an exposed key,
//! [`crate::saga::Saga::exposure`]) that runs. Every long-running worker
//! reads it every `[worker] emergency_watch` in one `GetItem`
//! ([`Store::emergencies`]) to take over, within a fraction of a second,
//! an emergency whose worker died (`crate::sweeper::Sweeper::watch`).
//!
//! A saga enters it in the transaction that creates it ([`Store::create_with`])
//! or, taken over by an exposure while it ran, before the write that makes
//! it an emergency ([`Store::list_emergency`]); it leaves it in the
//! transaction of its terminal write ([`Store::commit`]). The registry only
//! speeds a takeover up — the step message and the sweeper stay the durable
//! path — so a stale entry (a saga ended or gone, a write that failed after
//! the entry was added) is harmless: the watch drops it when it reads the
//! saga ([`Store::drop_emergency`]).

use aws_sdk_dynamodb::types::{AttributeValue, Update};

use super::update::Write;
use super::{s, Store};
use crate::error::{aws, Error, Result};

/// The registry item's key.
const REGISTRY: &str = "emergencies";
/// Its string set of saga ids.
const SAGAS: &str = "sagas";

fn ids(saga_id: &str) -> AttributeValue {
    AttributeValue::Ss(vec![saga_id.to_string()])
}

/// The registry's edit: the saga id added to its set, or deleted from it.
fn registry_write(saga_id: &str, add: bool) -> Write {
    if add {
        Write::new().add(SAGAS, ids(saga_id))
    } else {
        Write::new().delete_from(SAGAS, ids(saga_id))
    }
}

impl Store {
    /// The emergency sagas listed as in flight (eventually consistent: a
    /// saga listed a moment ago may be missing, and one ended may still be
    /// there; the watch reads each saga itself before acting).
    pub async fn emergencies(&self) -> Result<Vec<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(REGISTRY))
            .projection_expression("#s")
            .expression_attribute_names("#s", SAGAS)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        self.count_read(1);
        Ok(out.item.and_then(|i| i.get(SAGAS).and_then(|v| v.as_ss().ok()).cloned()).unwrap_or_default())
    }

    /// List a saga as an emergency in flight (a running saga an exposure
    /// takes over: before the write that makes it one).
    pub async fn list_emergency(&self, saga_id: &str) -> Result<()> {
        self.edit_registry(saga_id, true).await
    }

    /// Take a saga off the registry (the watch found it ended or gone).
    pub async fn drop_emergency(&self, saga_id: &str) -> Result<()> {
        self.edit_registry(saga_id, false).await
    }

    /// Add the saga to the registry's set, or delete it from it.
    async fn edit_registry(&self, saga_id: &str, add: bool) -> Result<()> {
        registry_write(saga_id, add)
            .update_item(self.client.update_item())
            .table_name(&self.table)
            .key("pk", s(REGISTRY))
            .send()
            .await
            .map_err(|e| aws("dynamodb", "UpdateItem", e))?;
        Ok(())
    }

    /// The registry's part of a transaction: list the saga (`add`) or take
    /// it off.
    pub(super) fn emergency_update(&self, saga_id: &str, add: bool) -> Result<Update> {
        registry_write(saga_id, add)
            .update(Update::builder().table_name(&self.table).key("pk", s(REGISTRY)))
            .build()
            .map_err(|e| Error::Config(e.to_string()))
    }
}
