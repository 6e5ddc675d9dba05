//! The saga store: one DynamoDB table, two kinds of item.
//!
//! * `pk = "saga#<id>"`: the saga. `doc` holds the [`Saga`] as JSON (no
//!   secrets in it, ever); `version` is bumped by every write and every write
//!   is conditional on it (or, for taking a lease, on the step's token);
//!   `lease_owner`/`lease_until` say which worker runs the current step;
//!   `due_at` is when the sweeper should consider the saga stuck; `secret`
//!   (binary) is the KMS ciphertext of the new credential's secret, present
//!   only between `IssueNew` and `Finalize`. Attributes the engine's
//!   conditions and the indexes use:
//!   - `tok` = `<step>#<token>` while the saga runs: a step message's lease
//!     write is conditional on it, so the lease and the read are one write;
//!   - `nudge`: the token of the message a worker is running steps for (it
//!     runs due steps one after another under one lease, see
//!     [`crate::engine`]); a redelivery of that message after a crash takes
//!     the saga over;
//!   - `pend`: step attempts begun since `doc` was written (the lease write
//!     counts them; [`decode`] adds them to the saga, every `doc` write
//!     folds them in); `leased_at`: when the last lease was taken (the time
//!     of an `IssueNew` intent counted in `pend`);
//!   - `run_at`: when the current step may run (retry delay, grace period);
//!   - `active` = `"1"` while the saga runs or needs attention unresolved:
//!     the key of the sparse index `active-by-due` ([`Store::active`]), so
//!     the sweeper reads only those;
//!   - `expires_at` (epoch seconds): on a finished saga, when DynamoDB TTL
//!     may delete it (retention, [`Store::with_retention`]). Readers skip
//!     expired items: TTL deletes in the background, days late.
//! * `pk = "lock#<credential>"`: the per-credential lock, naming the saga
//!   that holds it. Created in one transaction with the saga, so two
//!   requests for one credential give one saga; deleted in one transaction
//!   with the saga's terminal write — except when the saga ends *unresolved*
//!   (needs attention with both keys in place, [`Saga::unresolved`]): then
//!   it keeps the lock, carries a `watch_at` attribute (its next evidence
//!   check), and releases the lock only when it is resolved and ends again.
//!   Every other write of a saga is a single conditional `UpdateItem`.
//!
//! The table's key is the string partition key `pk`; its global secondary
//! indexes (all projecting every attribute) are `active-by-due` (`active`,
//! `due_at`), `sagas-by-created` (`kind`, `created_at`) for `list`, and
//! `rotation-by-created` (`rotation_id`, `created_at`) for `status
//! <rotation>` and the key-age trigger ([`create_table`] and
//! `infra/keyturn-stack.yaml` declare them alike). Index reads are
//! eventually consistent: every write that follows one is conditional.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, Put,
    ReturnValue, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use crate::error::{aws, Error, Result};
use crate::saga::{self, Millis, Saga, Status, Step};

/// The sparse index of running (and unresolved) sagas, by `due_at`.
pub const ACTIVE_INDEX: &str = "active-by-due";
/// Every saga by creation time.
pub const CREATED_INDEX: &str = "sagas-by-created";
/// A rotation's sagas by creation time.
pub const ROTATION_INDEX: &str = "rotation-by-created";
/// A global secondary index keyturn reads: its name, key attributes with
/// their types (`S`, `N`) and who reads it. [`create_table`] creates these and
/// `keyturn doctor` checks them; `infra/keyturn-stack.yaml` declares the same.
#[derive(Debug, Clone, Copy)]
pub struct Index {
    pub name: &'static str,
    pub hash: (&'static str, &'static str),
    pub range: (&'static str, &'static str),
    pub used_by: &'static str,
}

impl Index {
    /// The AWS CLI command that adds this index to `table`.
    pub fn update_table(&self, table: &str) -> String {
        format!(
            "aws dynamodb update-table --table-name {table} --attribute-definitions AttributeName={h},AttributeType={ht} AttributeName={r},AttributeType={rt} \
             --global-secondary-index-updates '[{{\"Create\":{{\"IndexName\":\"{n}\",\"KeySchema\":[{{\"AttributeName\":\"{h}\",\"KeyType\":\"HASH\"}},{{\"AttributeName\":\"{r}\",\"KeyType\":\"RANGE\"}}],\"Projection\":{{\"ProjectionType\":\"ALL\"}}}}}}]'",
            n = self.name,
            h = self.hash.0,
            ht = self.hash.1,
            r = self.range.0,
            rt = self.range.1,
        )
    }
}

/// Every index keyturn reads.
pub const INDEXES: &[Index] = &[
    Index { name: ACTIVE_INDEX, hash: ("active", "S"), range: ("due_at", "N"), used_by: "the sweeper" },
    Index { name: CREATED_INDEX, hash: ("kind", "S"), range: ("created_at", "N"), used_by: "keyturn list" },
    Index {
        name: ROTATION_INDEX,
        hash: ("rotation_id", "S"),
        range: ("created_at", "N"),
        used_by: "keyturn status <rotation>, quarantine and the key-age trigger",
    },
];

/// The TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long a finished saga is kept by default: 400 days, more than a year
/// of audit trail.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

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
    /// Token of the message whose worker runs steps one after another.
    pub nudge: Option<String>,
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

/// What taking a lease for a step message found.
#[derive(Debug, Clone)]
pub enum Lease {
    /// Taken: the saga as it is now, with this attempt counted.
    Taken(Stored),
    /// Not taken; the saga as read after the refusal (None: no such saga).
    Refused(Option<Stored>),
}

/// Continue under the same lease: the next step's attempt, recorded in the
/// commit that ends the current step.
#[derive(Debug, Clone, Copy)]
pub struct Hold<'a> {
    pub owner: &'a str,
    pub lease_until: Millis,
}

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
    retention: Duration,
    read: Arc<AtomicU64>,
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
        Store { client, table: table.into(), retention: DEFAULT_RETENTION, read: Arc::default() }
    }

    /// Keep finished sagas this long (their `expires_at`).
    pub fn with_retention(mut self, retention: Duration) -> Store {
        self.retention = retention;
        self
    }

    /// Items read from the table or its indexes by this store so far
    /// (`ScannedCount` of queries and scans, one per item got): what a sweep
    /// or a listing costs, for tests and the benchmark.
    pub fn items_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn count_read(&self, n: i32) {
        self.read.fetch_add(n.max(0) as u64, Ordering::Relaxed);
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
            .item("requested_at", n(now)) // not created_at: request items stay out of the by-creation indexes
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
            item.insert("tok".into(), s(tok(saga.step, &saga.token)));
        }
        if active(saga) {
            item.insert("active".into(), s("1"));
        } else if saga.status.is_terminal() {
            item.insert(TTL_ATTRIBUTE.into(), n(self.expiry(saga.updated_at)));
        }
        Ok(item)
    }

    fn expiry(&self, ended_at: Millis) -> u64 {
        (ended_at / 1000).saturating_add(self.retention.as_secs())
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
        self.count_read(1);
        out.item.map(|i| decode(&i)).transpose()
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

    /// When the rotation last succeeded (the end of its newest succeeded
    /// saga): reads the rotation's sagas newest first until one succeeded.
    pub async fn last_success(&self, rotation_id: &str) -> Result<Option<Millis>> {
        let found = self.query_newest(ROTATION_INDEX, "rotation_id", rotation_id, 1, Some(Status::Succeeded)).await?;
        Ok(found.first().map(|s| s.saga.updated_at))
    }

    /// The newest `limit` sagas, newest first (index `sagas-by-created`:
    /// reads about `limit` items, however many the table holds).
    pub async fn recent(&self, limit: usize) -> Result<Vec<Stored>> {
        self.query_newest(CREATED_INDEX, "kind", "saga", limit, None).await
    }

    /// A rotation's newest `limit` sagas, newest first (index `rotation-by-created`).
    pub async fn recent_of(&self, rotation_id: &str, limit: usize) -> Result<Vec<Stored>> {
        self.query_newest(ROTATION_INDEX, "rotation_id", rotation_id, limit, None).await
    }

    /// Every saga created at or after `since`, oldest first, handed to `each`
    /// one page (at most 100 items) at a time, so a long history is never
    /// held whole (index `sagas-by-created`; expired sagas skipped). For
    /// `keyturn report`.
    pub async fn created_since(&self, since: Millis, mut each: impl FnMut(Stored)) -> Result<()> {
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let now_s = crate::clock::now_ms() / 1000;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(CREATED_INDEX)
                .key_condition_expression("#k = :saga AND created_at >= :since")
                .filter_expression("attribute_not_exists(#ttl) OR #ttl > :now")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":saga", s("saga"))
                .expression_attribute_values(":since", n(since))
                .expression_attribute_values(":now", n(now_s))
                .limit(100)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.index_error(CREATED_INDEX, aws("dynamodb", "Query", e)))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                each(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// Every saga that runs or needs attention unresolved (the sparse index
    /// `active-by-due`, oldest `due_at` first): the sweeper's whole read.
    pub async fn active(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(ACTIVE_INDEX)
                .key_condition_expression("active = :one")
                .expression_attribute_values(":one", s("1"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.index_error(ACTIVE_INDEX, aws("dynamodb", "Query", e)))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                out.push(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// A query of an index the table lacks (a table made by hand with only
    /// `pk`) says which index and how to add it, instead of DynamoDB's bare
    /// `Invalid index`.
    fn index_error(&self, index: &str, e: Error) -> Error {
        match e {
            Error::Aws { service, operation, code, message, request_id, retryable }
                if code == "ResourceNotFoundException" && message.to_ascii_lowercase().contains("index") =>
            {
                let message = format!(
                    "the table {t} has no index {index}: run `keyturn init --check --table {t}` to see what it lacks and `keyturn init --table {t}` to add it ({message})",
                    t = self.table
                );
                Error::Aws { service, operation, code, message, request_id, retryable }
            }
            other => other,
        }
    }

    /// Newest first on a by-creation index, stopping once `limit` sagas
    /// (with `status`, if given) are found; expired sagas (past their TTL,
    /// not deleted yet) are skipped.
    async fn query_newest(&self, index: &str, key: &str, value: &str, limit: usize, status: Option<Status>) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let now_s = crate::clock::now_ms() / 1000;
        while out.len() < limit {
            let want = (limit - out.len()).clamp(1, 1000) as i32;
            let mut filter = "(attribute_not_exists(#ttl) OR #ttl > :now)".to_string();
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", key)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":v", s(value))
                .expression_attribute_values(":now", n(now_s))
                .scan_index_forward(false)
                .limit(if status.is_some() { want.max(10) } else { want })
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                filter.push_str(" AND #st = :st");
                q = q.expression_attribute_names("#st", "status").expression_attribute_values(":st", s(st.as_str()));
            }
            let page = q.filter_expression(filter).send().await.map_err(|e| self.index_error(index, aws("dynamodb", "Query", e)))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                if out.len() < limit {
                    out.push(decode(item)?);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// All sagas, newest first: a Scan of the whole table. Only for rare
    /// paths (a `Start` that finds two keys looks for the saga that made
    /// one) and tests; periodic and interactive paths use the indexes.
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
            self.count_read(page.scanned_count);
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
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page =
                self.client.scan().table_name(&self.table).set_exclusive_start_key(start.take()).send().await.map_err(|e| aws("dynamodb", "Scan", e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// The `tok` attribute: a step message's step and token.
fn tok(step: Step, token: &str) -> String {
    format!("{}#{token}", step.as_str())
}

/// When the saga's current step may run (0: now).
fn run_at(saga: &Saga) -> Millis {
    saga.waiting_until(0).unwrap_or(0)
}

/// In the sparse index of sagas the sweeper reads.
fn active(saga: &Saga) -> bool {
    !saga.status.is_terminal() || saga.unresolved()
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<Stored> {
    let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok());
    let get_n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
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
        due_at: get_n("due_at").unwrap_or(0),
        watch_at: get_n("watch_at"),
        nudge: get_s("nudge").cloned(),
        saga,
    })
}

/// Create the saga table as `infra/keyturn-stack.yaml` declares it: key,
/// the three indexes, TTL on `expires_at` (tests, the benchmark, a table
/// made by hand).
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let def = |name: &str, t: ScalarAttributeType| AttributeDefinition::builder().attribute_name(name).attribute_type(t).build();
    let key = |name: &str, t: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(t).build();
    let gsi = |i: &Index| -> std::result::Result<GlobalSecondaryIndex, aws_sdk_dynamodb::error::BuildError> {
        GlobalSecondaryIndex::builder()
            .index_name(i.name)
            .key_schema(key(i.hash.0, KeyType::Hash)?)
            .key_schema(key(i.range.0, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
    };
    let build = |e: aws_sdk_dynamodb::error::BuildError| Error::Config(e.to_string());
    let mut attrs: Vec<(&str, &str)> = vec![("pk", "S")];
    for i in INDEXES {
        for a in [i.hash, i.range] {
            if !attrs.iter().any(|(n, _)| *n == a.0) {
                attrs.push(a);
            }
        }
    }
    let mut req = client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest).key_schema(key("pk", KeyType::Hash).map_err(build)?);
    for (name, t) in attrs {
        req = req.attribute_definitions(def(name, ScalarAttributeType::from(t)).map_err(build)?);
    }
    for i in INDEXES {
        req = req.global_secondary_indexes(gsi(i).map_err(build)?);
    }
    req.send().await.map_err(|e| aws("dynamodb", "CreateTable", e))?;
    // DynamoDB refuses UpdateTimeToLive while the table is CREATING (a few
    // seconds on AWS; at once on an emulator).
    for _ in 0..300 {
        let d = client.describe_table().table_name(table).send().await.map_err(|e| aws("dynamodb", "DescribeTable", e))?;
        if d.table().and_then(|t| t.table_status()) == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(TimeToLiveSpecification::builder().attribute_name(TTL_ATTRIBUTE).enabled(true).build().map_err(build)?)
        .send()
        .await
        .map_err(|e| aws("dynamodb", "UpdateTimeToLive", e))?;
    Ok(())
}
