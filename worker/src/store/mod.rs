//! The saga store: one DynamoDB table, two kinds of item.
//!
//! * `pk = "saga#<id>"`: the saga. `doc` holds the [`Saga`] as JSON (no
//!   secrets in it, ever); `version` is bumped by every write and every write
//!   is conditional on it (or, for taking a lease, on the step's token);
//!   `lease_owner`/`lease_until` say which worker runs the current step;
//!   `due_at` is when the sweeper should consider the saga stuck; `secret`
//!   (binary) is the KMS ciphertext of the new credential's secret, present
//!   only between `IssueNew` and `Finalize`; `grant` (binary, a source that
//!   needs one: the KMS ciphertext of a Management API token) is sealed
//!   during `IssueNew` before the source's call and removed with the first
//!   write or erasure of `secret`. Attributes the engine's
//!   conditions and the indexes use:
//!   - `tok` = `<step>#<token>` while the saga runs: a step message's lease
//!     write is conditional on it, so the lease and the read are one write;
//!   - `nudge`: the token of the message a worker is running steps for (it
//!     runs due steps one after another under one lease, see
//!     [`crate::engine`]); a redelivery of that message after a crash takes
//!     the saga over;
//!   - `pend`: step attempts begun since `doc` was written (the lease write
//!     counts them; `codec::decode` adds them to the saga, every `doc` write
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
//! * `pk = "emergencies"`: the registry of emergency sagas in flight, a
//!   string set of saga ids that long-running workers read every
//!   `[worker] emergency_watch` ([`emergencies`]); written right after
//!   the writes that create and end an emergency saga, never inside them.
//!
//! The table's key is the string partition key `pk`; its global secondary
//! indexes (all projecting every attribute) are `active-by-due` (`active`,
//! `due_at`), `sagas-by-created` (`kind`, `created_at`) for `list`, and
//! `rotation-by-created` (`rotation_id`, `created_at`) for `status
//! <rotation>` and the key-age trigger ([`create_table`] and
//! `infra/keyturn-stack.yaml` declare them alike). Index reads are
//! eventually consistent: every write that follows one is conditional.

mod codec;
mod emergencies;
mod ledger;
mod query;
mod sagas;
mod schema;
mod update;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::error::{aws, Error, Result};
use crate::saga::{Millis, Saga, Status};

use codec::decode;
pub use emergencies::Registry;
pub use schema::{create_table, Index, ACTIVE_INDEX, CREATED_INDEX, DEFAULT_RETENTION, INDEXES, ROTATION_INDEX, TTL_ATTRIBUTE};

/// A saga as loaded, with its concurrency-control attributes.
#[derive(Debug, Clone)]
pub struct Stored {
    pub saga: Saga,
    pub version: u64,
    pub lease_owner: Option<String>,
    pub lease_until: Millis,
    /// KMS ciphertext of the new credential's secret.
    pub secret: Option<Vec<u8>>,
    /// KMS ciphertext of what a source needs to issue again after a lost
    /// answer (Auth0: a Management API token), sealed before its first
    /// call ([`Store::seal_grant`]); removed with the new secret's first
    /// write or erasure.
    pub grant: Option<Vec<u8>>,
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
    clock: crate::clock::SharedClock,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A number attribute of `item` as a `u64` (`None`: absent, not a number,
/// or out of range): how every reader of the table decodes one.
fn num(item: &std::collections::HashMap<String, AttributeValue>, key: &str) -> Option<u64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
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
        Store { client, table: table.into(), retention: DEFAULT_RETENTION, read: Arc::default(), clock: crate::clock::system() }
    }

    /// Read time (which sagas are past their TTL) from `clock`.
    pub fn with_clock(mut self, clock: crate::clock::SharedClock) -> Store {
        self.clock = clock;
        self
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
}
