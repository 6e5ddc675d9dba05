//! A saga's life in the table: creating it with its credential's lock,
//! leases, commits (releasing the lock at the end), reopening, the
//! sweeper's claims.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, TransactWriteItem};

use super::codec::{active, decode, run_at, tok};
use super::update::Write;
use super::{conditional, is_conditional_failure, lock_pk, n, s, saga_pk, Created, Hold, Lease, SecretWrite, Store, TTL_ATTRIBUTE};
use crate::error::{aws, Error, Result};
use crate::saga::{Millis, Saga, Step};

impl Store {
    /// Create a saga and take the credential's lock in one transaction. If
    /// the lock is held, answer the saga that holds it. A new emergency is
    /// then listed for the watch ([`Store::list_if_emergency`]).
    pub async fn create(&self, saga: &Saga, sweep_after: Millis) -> Result<Created> {
        let created = self.create_with(saga, sweep_after, None, saga.created_at).await?;
        if matches!(created, Created::New(_)) {
            self.list_if_emergency(saga).await;
        }
        Ok(created)
    }

    /// [`Store::create`], recording a request's idempotency key in the same
    /// transaction: `idempotency` is (key, end of its window in ms). A key
    /// already recorded and not expired answers its saga
    /// (`Created::Existing`); a request that finds the credential's lock
    /// held records its key for the saga holding it. Unlike `create`, it
    /// does not list a new emergency for the watch: the caller does
    /// ([`Store::list_if_emergency`]), beside sending its first step.
    pub async fn create_with(&self, saga: &Saga, sweep_after: Millis, idempotency: Option<(&str, Millis)>, now: Millis) -> Result<Created> {
        let lock = Write::new()
            .when_new()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .item("pk", lock_pk(&saga.credential))
                    .item("saga_id", s(&saga.saga_id))
                    .item("created_at", n(saga.created_at)),
            )
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let item = Write::new()
            .when_new()
            .put(Put::builder().table_name(&self.table).set_item(Some(self.item(saga, 1, saga.run.not_before + sweep_after)?)))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut tx = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(lock).build())
            .transact_items(TransactWriteItem::builder().put(item).build());
        if let Some((key, until)) = idempotency {
            tx = tx.transact_items(TransactWriteItem::builder().put(self.request_put(key, &saga.saga_id, &saga.rotation_id, until, now)?).build());
        }
        let res = tx.send().await;
        match res {
            Ok(_) => Ok(Created::New(saga.saga_id.clone())),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {
                if let Some((key, until)) = idempotency {
                    if let Some((id, _)) = self.idempotent(key, now).await? {
                        return Ok(Created::Existing(id));
                    }
                    if let Some(holder) = self.lock_holder(&saga.credential).await? {
                        // Later requests with this key answer the saga in flight.
                        let put = self.request_put(key, &holder, &saga.rotation_id, until, now)?;
                        let _ =
                            request_expired(now).put_item(self.client.put_item().table_name(&self.table).set_item(put.item().clone().into())).send().await;
                        return Ok(Created::Existing(holder));
                    }
                }
                self.lock_conflict(saga).await
            }
            Err(e) => Err(aws("dynamodb", "TransactWriteItems", e)),
        }
    }

    async fn lock_conflict(&self, saga: &Saga) -> Result<Created> {
        {
            match self.lock_holder(&saga.credential).await? {
                Some(id) => Ok(Created::Existing(id)),
                // The holder finished between our write and this read: the
                // caller may simply try again.
                None => Err(Error::Aws {
                    service: "dynamodb",
                    operation: "TransactWriteItems",
                    code: "TransactionConflict".into(),
                    message: "lock released concurrently; try again".into(),
                    request_id: None,
                    retryable: true,
                }),
            }
        }
    }

    /// Take the saga's lease for one attempt of `step` (a step message with
    /// `token`) and read the saga, in one conditional `UpdateItem` that
    /// returns the item: it succeeds only if the saga is at that step with
    /// that token (or `token` is the saga's `nudge`: a redelivery of the
    /// message a crashed worker was running steps for), the step's wait is
    /// over and no lease (anyone's, this worker's included) is live at
    /// `now`. The same write counts the attempt (`pend`), so the attempt —
    /// and for `IssueNew` the intent to create a key — is on record before
    /// any side effect. When refused, the saga is read (consistently) to
    /// tell why.
    #[allow(clippy::too_many_arguments)]
    pub async fn lease(&self, saga_id: &str, step: Step, token: &str, owner: &str, now: Millis, lease_until: Millis, due_at: Millis) -> Result<Lease> {
        let write = Write::new()
            .increment("version", n(1))
            .set("lease_owner", s(owner))
            .set("lease_until", n(lease_until))
            .set("due_at", n(due_at))
            .set("nudge", s(token))
            .set("leased_at", n(now))
            .add("pend", n(1))
            .when(|w| format!("{} = {} OR {} = {}", w.name("tok"), w.value(s(tok(step, token))), w.name("nudge"), w.value(s(token))))
            .when(|w| format!("attribute_not_exists({l}) OR {l} < {}", w.value(n(now)), l = w.name("lease_until")))
            .when(|w| format!("attribute_not_exists({r}) OR {r} <= {}", w.value(n(now)), r = w.name("run_at")));
        let res = write
            .update_item(self.client.update_item())
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => {
                self.count_read(1);
                let item = out.attributes.ok_or_else(|| Error::Corrupt(format!("lease of saga {saga_id} returned no item")))?;
                Ok(Lease::Taken(decode(&item)?))
            }
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => Ok(Lease::Refused(self.load(saga_id).await?)),
            Err(e) => Err(aws("dynamodb", "UpdateItem", e)),
        }
    }

    /// Give back a lease taken by [`Store::lease`] without running the step
    /// (the worker cannot run it): the attempt is not counted.
    pub async fn release_lease(&self, saga_id: &str, version: u64, owner: &str) -> Result<()> {
        let write = Write::new()
            .set("version", n(version + 1))
            .add("pend", AttributeValue::N("-1".into()))
            .remove("lease_owner")
            .remove("lease_until")
            .remove("nudge")
            .when_eq("version", n(version))
            .when_eq("lease_owner", s(owner));
        let res = write.update_item(self.client.update_item()).table_name(&self.table).key("pk", saga_pk(saga_id)).send().await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Extend a held lease (heartbeat). Fails with `Conflict` if lost.
    pub async fn extend(&self, saga_id: &str, version: u64, owner: &str, lease_until: Millis, due_at: Millis) -> Result<()> {
        let write =
            Write::new().set("lease_until", n(lease_until)).set("due_at", n(due_at)).when_eq("version", n(version)).when_eq("lease_owner", s(owner));
        let res = write.update_item(self.client.update_item()).table_name(&self.table).key("pk", saga_pk(saga_id)).send().await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Store a sealed grant ([`Stored::grant`]) under the lease, before the
    /// source's call it lets run again: conditional on `version` and the
    /// lease owner, like [`Store::extend`], and without a new version (the
    /// step's commit follows, conditional on the same one).
    pub async fn seal_grant(&self, saga_id: &str, version: u64, owner: &str, blob: Vec<u8>) -> Result<()> {
        let write = Write::new().set("grant", AttributeValue::B(blob.into())).when_eq("version", n(version)).when_eq("lease_owner", s(owner));
        let res = write.update_item(self.client.update_item()).table_name(&self.table).key("pk", saga_pk(saga_id)).send().await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Write the saga's next state, conditional on `expected` (and on still
    /// owning the lease when `owner` is given). Without `hold` the lease is
    /// cleared; with it, `saga` is the next step's attempt (after
    /// [`crate::saga::begin_attempt`]) and the lease is kept and extended for
    /// it. A plain conditional `UpdateItem`, except for a terminal state that
    /// releases the credential lock: one transaction with the lock's delete.
    /// An emergency that ends then leaves the registry of emergencies in
    /// flight ([`Store::unlist_if_emergency`]).
    pub async fn commit(
        &self,
        saga: &Saga,
        expected: u64,
        owner: Option<&str>,
        secret: SecretWrite,
        due_at: Millis,
        hold: Option<Hold<'_>>,
    ) -> Result<u64> {
        let next = expected + 1;
        let mut w = Write::new()
            .set("version", n(next))
            .set("doc", Self::doc(saga)?)
            .set("status", s(saga.status.as_str()))
            .set("due_at", n(due_at))
            .set("run_at", n(run_at(saga)))
            .remove("pend")
            .when_eq("version", n(expected));
        if let Some(me) = owner {
            w = w.when_eq("lease_owner", s(me));
        }
        w = match hold {
            Some(h) => w.set("lease_owner", s(h.owner)).set("lease_until", n(h.lease_until)),
            None => w.remove("lease_owner").remove("lease_until").remove("nudge"),
        };
        w = if saga.status.is_terminal() { w.remove("tok") } else { w.set("tok", s(tok(saga.step, &saga.run.token))) };
        let unresolved = saga.unresolved();
        w = if active(saga) {
            w.set("active", s("1")).remove(TTL_ATTRIBUTE)
        } else {
            w.remove("active").set(TTL_ATTRIBUTE, n(self.expiry(saga.updated_at)))
        };
        w = if unresolved {
            w.set("watch_at", n(saga.resolution.attention.as_ref().map(|a| a.next_check).unwrap_or(due_at)))
        } else {
            w.remove("watch_at")
        };
        w = match secret {
            SecretWrite::Keep => w,
            // The new secret is stored (or the saga is done with it): the
            // grant that could issue another is not needed any more.
            SecretWrite::Set(blob) => w.set("secret", AttributeValue::B(blob.into())).remove("grant"),
            SecretWrite::Erase => w.remove("secret").remove("grant"),
        };
        if saga.status.is_terminal() && !unresolved {
            let upd = w
                .update(aws_sdk_dynamodb::types::Update::builder().table_name(&self.table).key("pk", saga_pk(&saga.saga_id)))
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            let del = lock_of(&saga.saga_id)
                .delete(Delete::builder().table_name(&self.table).key("pk", lock_pk(&saga.credential)))
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            let tx = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(upd).build())
                .transact_items(TransactWriteItem::builder().delete(del).build());
            conditional(tx.send().await, "TransactWriteItems", &saga.saga_id, expected)?;
        } else {
            let res = w.update_item(self.client.update_item()).table_name(&self.table).key("pk", saga_pk(&saga.saga_id)).send().await;
            conditional(res, "UpdateItem", &saga.saga_id, expected)?;
        }
        if saga.status.is_terminal() {
            self.unlist_if_emergency(saga).await;
        }
        Ok(next)
    }

    /// Run an unresolved saga again (`keyturn resolve`, or evidence with
    /// `auto_resolve`): write it conditional on `expected`, and hold the
    /// credential's lock in the same transaction — it is normally still
    /// this saga's; a saga that ended before locks were kept re-takes it
    /// if nobody else holds it.
    pub async fn reopen(&self, saga: &Saga, expected: u64, due_at: Millis) -> Result<u64> {
        let next = expected + 1;
        let mut write = Write::new()
            .set("version", n(next))
            .set("doc", Self::doc(saga)?)
            .set("status", s(saga.status.as_str()))
            .set("due_at", n(due_at))
            .set("run_at", n(run_at(saga)))
            .set("tok", s(tok(saga.step, &saga.run.token)))
            .set("active", s("1"));
        for a in ["watch_at", "lease_owner", "lease_until", "nudge", "pend", TTL_ATTRIBUTE] {
            write = write.remove(a);
        }
        let upd = write
            .when_eq("version", n(expected))
            .update(aws_sdk_dynamodb::types::Update::builder().table_name(&self.table).key("pk", saga_pk(&saga.saga_id)))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let lock = lock_of(&saga.saga_id)
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .item("pk", lock_pk(&saga.credential))
                    .item("saga_id", s(&saga.saga_id))
                    .item("created_at", n(saga.created_at)),
            )
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let tx = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(upd).build())
            .transact_items(TransactWriteItem::builder().put(lock).build());
        conditional(tx.send().await, "TransactWriteItems", &saga.saga_id, expected)?;
        // An emergency running again is listed again.
        self.list_if_emergency(saga).await;
        Ok(next)
    }

    /// Claim an unresolved saga's evidence check: move `watch_at` to `next`
    /// if it is due at `now` and the version is unchanged. Only one worker
    /// wins; the others get `Conflict`.
    pub async fn claim_watch(&self, saga_id: &str, version: u64, now: Millis, next: Millis) -> Result<()> {
        let write =
            Write::new().set("watch_at", n(next)).when_eq("version", n(version)).when(|w| format!("{} <= {}", w.name("watch_at"), w.value(n(now))));
        let res = write.update_item(self.client.update_item()).table_name(&self.table).key("pk", saga_pk(saga_id)).send().await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Push back `due_at` (sweeper re-drive), conditional on the version.
    pub async fn set_due(&self, saga_id: &str, version: u64, due_at: Millis) -> Result<()> {
        let write = Write::new().set("due_at", n(due_at)).when_eq("version", n(version));
        let res = write.update_item(self.client.update_item()).table_name(&self.table).key("pk", saga_pk(saga_id)).send().await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }
}

/// The condition on a credential's lock item: absent, or held by `saga_id`.
fn lock_of(saga_id: &str) -> Write {
    Write::new().when(|w| format!("attribute_not_exists({}) OR {} = {}", w.name("pk"), w.name("saga_id"), w.value(s(saga_id))))
}

/// The condition on a request's idempotency item: absent, or its window
/// over at `now` (ms; the item's `expires_at` is in epoch seconds).
pub(super) fn request_expired(now: Millis) -> Write {
    Write::new().when(|w| format!("attribute_not_exists({}) OR {} <= {}", w.name("pk"), w.name("expires_at"), w.value(n(now / 1000))))
}
