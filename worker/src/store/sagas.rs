//! A saga's life in the table: creating it with its credential's lock,
//! leases, commits (releasing the lock at the end), reopening, the
//! sweeper's claims.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, TransactWriteItem};

use super::codec::{active, decode, run_at, tok};
use super::{conditional, is_conditional_failure, lock_pk, n, s, saga_pk, Created, Hold, Lease, SecretWrite, Store, TTL_ATTRIBUTE};
use crate::error::{aws, Error, Result};
use crate::saga::{Millis, Saga, Step};

impl Store {
    /// Create a saga and take the credential's lock in one transaction. If
    /// the lock is held, answer the saga that holds it.
    pub async fn create(&self, saga: &Saga, sweep_after: Millis) -> Result<Created> {
        self.create_with(saga, sweep_after, None, saga.created_at).await
    }

    /// [`Store::create`], recording a request's idempotency key in the same
    /// transaction: `idempotency` is (key, end of its window in ms). A key
    /// already recorded and not expired answers its saga
    /// (`Created::Existing`); a request that finds the credential's lock
    /// held records its key for the saga holding it.
    pub async fn create_with(&self, saga: &Saga, sweep_after: Millis, idempotency: Option<(&str, Millis)>, now: Millis) -> Result<Created> {
        let lock = Put::builder()
            .table_name(&self.table)
            .item("pk", lock_pk(&saga.credential))
            .item("saga_id", s(&saga.saga_id))
            .item("created_at", n(saga.created_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let item = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.item(saga, 1, saga.not_before + sweep_after)?))
            .condition_expression("attribute_not_exists(pk)")
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
                        let _ = self
                            .client
                            .put_item()
                            .table_name(&self.table)
                            .set_item(put.item().clone().into())
                            .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
                            .expression_attribute_values(":now", n(now / 1000))
                            .send()
                            .await;
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
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .update_expression("SET version = version + :one, lease_owner = :me, lease_until = :until, due_at = :due, nudge = :t, leased_at = :now ADD pend :one")
            .condition_expression(
                "(tok = :tok OR nudge = :t) AND (attribute_not_exists(lease_until) OR lease_until < :now) AND (attribute_not_exists(run_at) OR run_at <= :now)",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":until", n(lease_until))
            .expression_attribute_values(":due", n(due_at))
            .expression_attribute_values(":t", s(token))
            .expression_attribute_values(":tok", s(tok(step, token)))
            .expression_attribute_values(":now", n(now))
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
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .update_expression("SET version = :next ADD pend :minus REMOVE lease_owner, lease_until, nudge")
            .condition_expression("version = :v AND lease_owner = :me")
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":next", n(version + 1))
            .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
            .expression_attribute_values(":me", s(owner))
            .send()
            .await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Extend a held lease (heartbeat). Fails with `Conflict` if lost.
    pub async fn extend(&self, saga_id: &str, version: u64, owner: &str, lease_until: Millis, due_at: Millis) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .update_expression("SET lease_until = :until, due_at = :due")
            .condition_expression("version = :v AND lease_owner = :me")
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":until", n(lease_until))
            .expression_attribute_values(":due", n(due_at))
            .send()
            .await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Write the saga's next state, conditional on `expected` (and on still
    /// owning the lease when `owner` is given). Without `hold` the lease is
    /// cleared; with it, `saga` is the next step's attempt (after
    /// [`crate::saga::begin_attempt`]) and the lease is kept and extended for
    /// it. A plain conditional `UpdateItem`, except for a terminal state that
    /// releases the credential lock: one transaction with the lock's delete.
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
        let mut set = vec!["version = :next", "doc = :doc", "#st = :status", "due_at = :due", "run_at = :run"];
        let mut remove = vec!["pend"];
        let mut cond = "version = :v".to_string();
        let mut names = HashMap::from([("#st".to_string(), "status".to_string())]);
        let mut values = HashMap::from([
            (":v".to_string(), n(expected)),
            (":next".to_string(), n(next)),
            (":doc".to_string(), Self::doc(saga)?),
            (":status".to_string(), s(saga.status.as_str())),
            (":due".to_string(), n(due_at)),
            (":run".to_string(), n(run_at(saga))),
        ]);
        if let Some(me) = owner {
            cond.push_str(" AND lease_owner = :me");
            values.insert(":me".into(), s(me));
        }
        match hold {
            Some(h) => {
                set.extend(["lease_owner = :holder", "lease_until = :until"]);
                values.insert(":holder".into(), s(h.owner));
                values.insert(":until".into(), n(h.lease_until));
            }
            None => remove.extend(["lease_owner", "lease_until", "nudge"]),
        }
        if saga.status.is_terminal() {
            remove.push("tok");
        } else {
            set.push("tok = :tok");
            values.insert(":tok".into(), s(tok(saga.step, &saga.token)));
        }
        let unresolved = saga.unresolved();
        if active(saga) {
            set.push("active = :one");
            values.insert(":one".into(), s("1"));
            remove.push("#ttl");
        } else {
            remove.push("active");
            set.push("#ttl = :ttl");
            values.insert(":ttl".into(), n(self.expiry(saga.updated_at)));
        }
        names.insert("#ttl".into(), TTL_ATTRIBUTE.into());
        if unresolved {
            set.push("watch_at = :watch");
            values.insert(":watch".into(), n(saga.attention.as_ref().map(|a| a.next_check).unwrap_or(due_at)));
        } else {
            remove.push("watch_at");
        }
        match secret {
            SecretWrite::Keep => {}
            SecretWrite::Set(blob) => {
                set.push("secret = :secret");
                values.insert(":secret".into(), AttributeValue::B(blob.into()));
            }
            SecretWrite::Erase => remove.push("secret"),
        }
        let expr = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        if saga.status.is_terminal() && !unresolved {
            let upd = aws_sdk_dynamodb::types::Update::builder()
                .table_name(&self.table)
                .key("pk", saga_pk(&saga.saga_id))
                .update_expression(expr)
                .condition_expression(cond)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            let del = Delete::builder()
                .table_name(&self.table)
                .key("pk", lock_pk(&saga.credential))
                .condition_expression("attribute_not_exists(pk) OR saga_id = :id")
                .expression_attribute_values(":id", s(&saga.saga_id))
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            let tx = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(upd).build())
                .transact_items(TransactWriteItem::builder().delete(del).build());
            return conditional(tx.send().await, "TransactWriteItems", &saga.saga_id, expected).map(|_| next);
        }
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(&saga.saga_id))
            .update_expression(expr)
            .condition_expression(cond)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        conditional(res, "UpdateItem", &saga.saga_id, expected).map(|_| next)
    }

    /// Run an unresolved saga again (`keyturn resolve`, or evidence with
    /// `auto_resolve`): write it conditional on `expected`, and hold the
    /// credential's lock in the same transaction — it is normally still
    /// this saga's; a saga that ended before locks were kept re-takes it
    /// if nobody else holds it.
    pub async fn reopen(&self, saga: &Saga, expected: u64, due_at: Millis) -> Result<u64> {
        let next = expected + 1;
        let upd = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .key("pk", saga_pk(&saga.saga_id))
            .update_expression(
                "SET version = :next, doc = :doc, #st = :status, due_at = :due, run_at = :run, tok = :tok, active = :one REMOVE watch_at, lease_owner, lease_until, nudge, pend, #ttl",
            )
            .condition_expression("version = :v")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":run", n(run_at(saga)))
            .expression_attribute_values(":tok", s(tok(saga.step, &saga.token)))
            .expression_attribute_values(":one", s("1"))
            .expression_attribute_values(":v", n(expected))
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":doc", Self::doc(saga)?)
            .expression_attribute_values(":status", s(saga.status.as_str()))
            .expression_attribute_values(":due", n(due_at))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let lock = Put::builder()
            .table_name(&self.table)
            .item("pk", lock_pk(&saga.credential))
            .item("saga_id", s(&saga.saga_id))
            .item("created_at", n(saga.created_at))
            .condition_expression("attribute_not_exists(pk) OR saga_id = :id")
            .expression_attribute_values(":id", s(&saga.saga_id))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(upd).build())
            .transact_items(TransactWriteItem::builder().put(lock).build())
            .send()
            .await;
        conditional(res, "TransactWriteItems", &saga.saga_id, expected).map(|_| next)
    }

    /// Claim an unresolved saga's evidence check: move `watch_at` to `next`
    /// if it is due at `now` and the version is unchanged. Only one worker
    /// wins; the others get `Conflict`.
    pub async fn claim_watch(&self, saga_id: &str, version: u64, now: Millis, next: Millis) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .update_expression("SET watch_at = :next")
            .condition_expression("version = :v AND watch_at <= :now")
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":next", n(next))
            .send()
            .await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }

    /// Push back `due_at` (sweeper re-drive), conditional on the version.
    pub async fn set_due(&self, saga_id: &str, version: u64, due_at: Millis) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .update_expression("SET due_at = :due")
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":due", n(due_at))
            .send()
            .await;
        conditional(res, "UpdateItem", saga_id, version).map(|_| ())
    }
}
