//! The saga store: one DynamoDB table, two kinds of item.
//!
//! * `pk = "saga#<id>"`: the saga. `doc` holds the [`Saga`] as JSON (no
//!   secrets in it, ever); `version` is bumped by every write and every write
//!   is conditional on it; `lease_owner`/`lease_until` say which worker runs
//!   the current step; `due_at` is when the sweeper should consider the saga
//!   stuck; `secret` (binary) is the KMS ciphertext of the new credential's
//!   secret, present only between `IssueNew` and `Finalize`.
//! * `pk = "lock#<credential>"`: the per-credential lock, naming the saga
//!   that holds it. Created in one transaction with the saga, so two
//!   requests for one credential give one saga; deleted in one transaction
//!   with the saga's terminal write — except when the saga ends *unresolved*
//!   (needs attention with both keys in place, [`Saga::unresolved`]): then
//!   it keeps the lock, carries a `watch_at` attribute (its next evidence
//!   check), and releases the lock only when it is resolved and ends again.
//!
//! The table needs nothing but the string partition key `pk`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use crate::error::{aws, Error, Result};
use crate::saga::{Millis, Saga, Status};

/// A saga as loaded, with its concurrency-control attributes.
#[derive(Debug, Clone)]
pub struct Stored {
    pub saga: Saga,
    pub version: u64,
    pub lease_owner: Option<String>,
    pub lease_until: Millis,
    /// KMS ciphertext of the new credential's secret.
    pub secret: Option<Vec<u8>>,
    /// When the sweeper should consider the saga stuck.
    pub due_at: Millis,
    /// Next evidence check of an unresolved saga.
    pub watch_at: Option<Millis>,
}

impl Stored {
    /// The sweeper's work at `now`: a running saga past its `due_at`, or an
    /// unresolved one whose evidence check is due.
    pub fn needs_sweep(&self, now: Millis) -> bool {
        match self.saga.status {
            Status::Running | Status::Compensating => self.due_at < now,
            Status::NeedsAttention => self.watch_at.is_some_and(|w| w <= now),
            _ => false,
        }
    }
}

/// What to do with the stored ciphertext in a commit.
#[derive(Debug, Clone)]
pub enum SecretWrite {
    Keep,
    Set(Vec<u8>),
    Erase,
}

/// Result of asking for a new saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(String),
    /// The credential is already being rotated by this saga.
    Existing(String),
    /// An automatic trigger was held back (quarantine), with the reason.
    Skipped(String),
}

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn saga_pk(id: &str) -> AttributeValue {
    s(format!("saga#{id}"))
}
fn request_pk(key: &str) -> AttributeValue {
    s(format!("request#{key}"))
}
fn lock_pk(credential: &str) -> AttributeValue {
    s(format!("lock#{credential}"))
}

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    matches!(e.code(), Some("ConditionalCheckFailedException") | Some("TransactionCanceledException"))
}

/// Map the result of a conditional write: a failed condition is a
/// [`Error::Conflict`] (someone else moved the saga), anything else an AWS error.
fn conditional<T, E>(
    res: std::result::Result<T, aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
    operation: &'static str,
    saga_id: &str,
    expected: u64,
) -> Result<T>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match res {
        Ok(v) => Ok(v),
        Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => Err(Error::Conflict { saga_id: saga_id.into(), expected }),
        Err(e) => Err(aws("dynamodb", operation, e)),
    }
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Store {
        Store { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn doc(saga: &Saga) -> Result<AttributeValue> {
        serde_json::to_string(saga).map(s).map_err(|e| Error::Corrupt(format!("cannot encode saga: {e}")))
    }

    /// Create a saga and take the credential's lock in one transaction. If
    /// the lock is held, answer the saga that holds it.
    pub async fn create(&self, saga: &Saga, sweep_after: Millis) -> Result<Created> {
        self.create_with(saga, sweep_after, None, saga.created_at).await
    }

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
        let expires = item.get("expires_at").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if expires.saturating_mul(1000) <= now {
            return Ok(None);
        }
        Ok(get_s("saga_id").zip(get_s("rotation_id")))
    }

    fn request_put(&self, key: &str, saga_id: &str, rotation_id: &str, until: Millis, now: Millis) -> Result<Put> {
        Put::builder()
            .table_name(&self.table)
            .item("pk", request_pk(key))
            .item("kind", s("request"))
            .item("saga_id", s(saga_id))
            .item("rotation_id", s(rotation_id))
            .item("created_at", n(now))
            .item("expires_at", n(until.div_ceil(1000)))
            .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now / 1000))
            .build()
            .map_err(|e| Error::Config(e.to_string()))
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
            .set_item(Some(self.saga_attrs(saga, 1, saga.not_before + sweep_after)?))
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

    fn saga_attrs(&self, saga: &Saga, version: u64, due_at: Millis) -> Result<HashMap<String, AttributeValue>> {
        Ok(HashMap::from([
            ("pk".to_string(), saga_pk(&saga.saga_id)),
            ("kind".to_string(), s("saga")),
            ("saga_id".to_string(), s(&saga.saga_id)),
            ("rotation_id".to_string(), s(&saga.rotation_id)),
            ("status".to_string(), s(saga.status.as_str())),
            ("created_at".to_string(), n(saga.created_at)),
            ("due_at".to_string(), n(due_at)),
            ("version".to_string(), n(version)),
            ("doc".to_string(), Self::doc(saga)?),
        ]))
    }

    /// The saga holding a credential's lock, if any.
    pub async fn lock_holder(&self, credential: &str) -> Result<Option<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", lock_pk(credential))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        Ok(out.item.and_then(|i| i.get("saga_id").and_then(|v| v.as_s().ok()).cloned()))
    }

    pub async fn load(&self, saga_id: &str) -> Result<Option<Stored>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", saga_pk(saga_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws("dynamodb", "GetItem", e))?;
        out.item.map(|i| decode(&i)).transpose()
    }

    /// Take the saga's lease for one step attempt, writing `attempt` (the
    /// saga after [`crate::saga::begin_attempt`]) in the same conditional
    /// write: the attempt — and for `IssueNew` the intent to create a key —
    /// is on record before any side effect. Fails with `Conflict` if the
    /// version moved or a lease (anyone's, this worker's included) is live
    /// at `now`.
    pub async fn acquire(&self, attempt: &Saga, expected: u64, owner: &str, now: Millis, lease_until: Millis, due_at: Millis) -> Result<u64> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", saga_pk(&attempt.saga_id))
            .update_expression("SET version = :next, doc = :doc, lease_owner = :me, lease_until = :until, due_at = :due")
            .condition_expression("version = :v AND (attribute_not_exists(lease_until) OR lease_until < :now)")
            .expression_attribute_values(":v", n(expected))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":next", n(expected + 1))
            .expression_attribute_values(":doc", Self::doc(attempt)?)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":until", n(lease_until))
            .expression_attribute_values(":due", n(due_at))
            .send()
            .await;
        conditional(res, "UpdateItem", &attempt.saga_id, expected).map(|_| expected + 1)
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
    /// owning the lease when `owner` is given). Clears the lease. A terminal
    /// state releases the credential lock in the same transaction.
    pub async fn commit(&self, saga: &Saga, expected: u64, owner: Option<&str>, secret: SecretWrite, due_at: Millis) -> Result<u64> {
        let next = expected + 1;
        let mut set = vec!["version = :next", "doc = :doc", "#st = :status", "due_at = :due"];
        let mut remove = vec!["lease_owner", "lease_until"];
        let mut cond = "version = :v".to_string();
        let mut upd = Update::builder()
            .table_name(&self.table)
            .key("pk", saga_pk(&saga.saga_id))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":v", n(expected))
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":doc", Self::doc(saga)?)
            .expression_attribute_values(":status", s(saga.status.as_str()))
            .expression_attribute_values(":due", n(due_at));
        if let Some(me) = owner {
            cond.push_str(" AND lease_owner = :me");
            upd = upd.expression_attribute_values(":me", s(me));
        }
        let unresolved = saga.unresolved();
        if unresolved {
            set.push("watch_at = :watch");
            upd = upd.expression_attribute_values(":watch", n(saga.attention.as_ref().map(|a| a.next_check).unwrap_or(due_at)));
        } else {
            remove.push("watch_at");
        }
        match secret {
            SecretWrite::Keep => {}
            SecretWrite::Set(blob) => {
                set.push("secret = :secret");
                upd = upd.expression_attribute_values(":secret", AttributeValue::B(blob.into()));
            }
            SecretWrite::Erase => remove.push("secret"),
        }
        let expr = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        let upd = upd.update_expression(expr).condition_expression(cond).build().map_err(|e| Error::Config(e.to_string()))?;
        let mut tx = self.client.transact_write_items().transact_items(TransactWriteItem::builder().update(upd).build());
        if saga.status.is_terminal() && !unresolved {
            let del = Delete::builder()
                .table_name(&self.table)
                .key("pk", lock_pk(&saga.credential))
                .condition_expression("attribute_not_exists(pk) OR saga_id = :id")
                .expression_attribute_values(":id", s(&saga.saga_id))
                .build()
                .map_err(|e| Error::Config(e.to_string()))?;
            tx = tx.transact_items(TransactWriteItem::builder().delete(del).build());
        }
        conditional(tx.send().await, "TransactWriteItems", &saga.saga_id, expected).map(|_| next)
    }

    /// Run an unresolved saga again (`keyturn resolve`, or evidence with
    /// `auto_resolve`): write it conditional on `expected`, and hold the
    /// credential's lock in the same transaction — it is normally still
    /// this saga's; a saga that ended before locks were kept re-takes it
    /// if nobody else holds it.
    pub async fn reopen(&self, saga: &Saga, expected: u64, due_at: Millis) -> Result<u64> {
        let next = expected + 1;
        let upd = Update::builder()
            .table_name(&self.table)
            .key("pk", saga_pk(&saga.saga_id))
            .update_expression("SET version = :next, doc = :doc, #st = :status, due_at = :due REMOVE watch_at, lease_owner, lease_until")
            .condition_expression("version = :v")
            .expression_attribute_names("#st", "status")
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

    /// Record a finding's IAM user that no rotation covers. Answers true the
    /// first time (report it), false on every re-import (just count it).
    pub async fn record_unmatched(&self, account: &str, user: &str, finding_id: &str, now: Millis) -> Result<bool> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("unmatched#{account}#{user}")))
            .item("kind", s("unmatched"))
            .item("first_seen", n(now))
            .item("last_seen", n(now))
            .item("last_finding", s(finding_id))
            .item("seen", n(1))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(format!("unmatched#{account}#{user}")))
                    .update_expression("ADD seen :one SET last_seen = :now, last_finding = :f")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":now", n(now))
                    .expression_attribute_values(":f", s(finding_id))
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
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("rotation#{rotation_id}")))
            .item("kind", s("rotation"))
            .item("doc", s(doc))
            .item("version", n(expected + 1));
        req = if expected == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("version = :v").expression_attribute_values(":v", n(expected))
        };
        conditional(req.send().await, "PutItem", rotation_id, expected).map(|_| ())
    }

    /// Claim the handling of an exposed key for one intake message: `true`
    /// the first time, and again for a redelivery of the same message (it
    /// may have stopped half-way); `false` for any other message naming the
    /// key (AWS repeats its events).
    pub async fn claim_exposure(&self, key_id: &str, message_id: &str, event_arn: &str, now: Millis) -> Result<bool> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("exposed#{key_id}")))
            .item("kind", s("exposed"))
            .item("message_id", s(message_id))
            .item("event_arn", s(event_arn))
            .item("first_seen", n(now))
            .condition_expression("attribute_not_exists(pk) OR message_id = :m")
            .expression_attribute_values(":m", s(message_id))
            .send()
            .await;
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

    /// When the rotation last succeeded (the end of its newest succeeded saga).
    pub async fn last_success(&self, rotation_id: &str) -> Result<Option<Millis>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|s| s.saga.rotation_id == rotation_id && s.saga.status == Status::Succeeded)
            .map(|s| s.saga.updated_at)
            .max())
    }

    /// All sagas, newest first (a Scan: fine for the handful of sagas a
    /// deployment accumulates; see ARCHITECTURE.md).
    pub async fn list(&self) -> Result<Vec<Stored>> {
        self.scan().await
    }

    async fn scan(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let req = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":saga", s("saga"))
                .filter_expression("#k = :saga");
            let page = req.send().await.map_err(|e| aws("dynamodb", "Scan", e))?;
            for item in page.items() {
                out.push(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.saga.created_at));
        Ok(out)
    }

    /// Raw items, for tests and the leak scan.
    pub async fn raw_items(&self) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let page = self.client.scan().table_name(&self.table).send().await.map_err(|e| aws("dynamodb", "Scan", e))?;
        Ok(page.items.unwrap_or_default())
    }
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<Stored> {
    let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    let get_n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    let doc = get_s("doc").ok_or_else(|| Error::Corrupt("saga item without doc".into()))?;
    let saga: Saga = serde_json::from_str(doc).map_err(|e| Error::Corrupt(format!("saga doc: {e}")))?;
    Ok(Stored {
        version: get_n("version").ok_or_else(|| Error::Corrupt(format!("saga {} without version", saga.saga_id)))?,
        lease_owner: get_s("lease_owner").cloned(),
        lease_until: get_n("lease_until").unwrap_or(0),
        secret: item.get("secret").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()),
        due_at: get_n("due_at").unwrap_or(0),
        watch_at: get_n("watch_at"),
        saga,
    })
}
