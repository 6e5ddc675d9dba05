//! The registry of emergencies in flight: one item (`pk = "emergencies"`)
//! whose string set `sagas` names every emergency saga (an exposed key,
//! [`crate::saga::Saga::exposure`]) that runs. Every long-running worker
//! reads it every `[worker] emergency_watch` in one `GetItem`
//! ([`Store::emergencies`]) to take over, within a fraction of a second,
//! an emergency whose worker died (`crate::sweeper::Sweeper::watch`).
//!
//! A saga enters it right after the write that creates it
//! ([`Store::create_with`]) or, taken over by an exposure while it ran,
//! before the write that makes it an emergency ([`Store::list_emergency`]);
//! it leaves it right after its terminal write ([`Store::commit`]). These
//! are single-item writes of their own, never part of a saga's
//! transaction: every emergency writes this one item, and concurrent
//! transactions on one item cancel each other. The registry only
//! speeds a takeover up — the step message and the sweeper stay the durable
//! path — so a stale entry (a saga ended or gone, a write that failed after
//! the entry was added) is harmless: the watch drops it when it reads the
//! saga ([`Store::drop_emergency`]).
//!
//! The item also says when an exposure event is being read
//! (`arriving_until`, [`Store::announce_exposure`]): the intake writes it
//! as it starts on the event, before the emergency saga exists, so every
//! worker's watch holds ordinary work back while the intake's calls run.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::update::Write;
use super::{s, Store};
use crate::error::{aws, Result};

/// The registry item's key.
const REGISTRY: &str = "emergencies";
/// Its string set of saga ids.
const SAGAS: &str = "sagas";
/// Until when (epoch ms) an exposure event being read holds ordinary work.
const ARRIVING: &str = "arriving_until";

/// What the registry says, in one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// The emergency sagas listed as in flight.
    pub sagas: Vec<String>,
    /// Until when an exposure event being read holds ordinary work back
    /// (0: none announced).
    pub arriving_until: crate::saga::Millis,
}

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
        Ok(self.registry().await?.sagas)
    }

    /// The whole registry in one eventually consistent `GetItem`: the
    /// emergencies listed and any exposure event being read.
    pub async fn registry(&self) -> Result<Registry> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(REGISTRY))
            .projection_expression("#s, #a")
            .expression_attribute_names("#s", SAGAS)
            .expression_attribute_names("#a", ARRIVING)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        self.count_read(1);
        let item = out.item.unwrap_or_default();
        Ok(Registry {
            sagas: item.get(SAGAS).and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default(),
            arriving_until: super::num(&item, ARRIVING).unwrap_or(0),
        })
    }

    /// An exposure event is being read: hold ordinary work back until
    /// `until` (every worker's watch reads it), so the intake's calls and
    /// the emergency's first steps meet a table not loaded by a backlog.
    /// One `UpdateItem`; a later announcement replaces an earlier one.
    pub async fn announce_exposure(&self, until: crate::saga::Millis) -> Result<()> {
        self.write_registry(Write::new().set(ARRIVING, super::n(until))).await.map_err(|e| aws("dynamodb", "UpdateItem", e))
    }

    /// The exposure event announced until `until` has been read (its
    /// emergencies, if any, are listed and hold ordinary work themselves):
    /// the announcement goes, unless a later event's replaced it.
    pub async fn end_announcement(&self, until: crate::saga::Millis) -> Result<()> {
        match self.write_registry(Write::new().remove(ARRIVING).when_eq(ARRIVING, super::n(until))).await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(super::is_conditional_failure) => Ok(()),
            Err(e) => Err(aws("dynamodb", "UpdateItem", e)),
        }
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
        self.write_registry(registry_write(saga_id, add)).await.map_err(|e| aws("dynamodb", "UpdateItem", e))
    }

    /// One `UpdateItem` of the registry item (AWS's own error kept, so a
    /// caller can tell a failed condition).
    async fn write_registry(&self, w: Write) -> std::result::Result<(), SdkError<UpdateItemError, HttpResponse>> {
        w.update_item(self.client.update_item()).table_name(&self.table).key("pk", s(REGISTRY)).send().await.map(|_| ())
    }

    /// After the write that created (or reopened) an emergency saga: list
    /// it. A separate single-item write, not part of the saga's
    /// transaction, on purpose: the registry is one item every emergency
    /// writes, and in a transaction concurrent writes to it would cancel
    /// each other (`TransactionConflict`) — two emergencies of one event
    /// would then hold each other up. A worker that dies before this write
    /// leaves the saga unlisted: its takeover waits for its message.
    pub async fn list_if_emergency(&self, saga: &crate::saga::Saga) {
        if saga.exposure.is_some() {
            if let Err(e) = self.list_emergency(&saga.saga_id).await {
                tracing::warn!(saga = %saga.saga_id, error = %e, "could not list the emergency for the watch; a dead worker's takeover waits for its message");
            }
        }
    }

    /// After the write that ended an emergency saga: take it off the
    /// registry (a failure leaves a stale entry, which the watch drops).
    pub(super) async fn unlist_if_emergency(&self, saga: &crate::saga::Saga) {
        if saga.exposure.is_some() {
            if let Err(e) = self.drop_emergency(&saga.saga_id).await {
                tracing::warn!(saga = %saga.saga_id, error = %e, "could not take the ended emergency off the registry; the watch drops it");
            }
        }
    }
}
