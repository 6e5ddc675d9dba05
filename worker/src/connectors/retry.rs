//! Short in-process retries for HTTP calls (backon, exponential + jitter,
//! honouring `Retry-After`).
//!
//! These absorb blips — a 503, a reset, a 429 that asks for two seconds —
//! inside one step attempt. Anything longer is handed back to the saga as a
//! retryable error carrying the server's wait, and the saga re-schedules the
//! step durably (a delayed SQS message) instead of holding a worker.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A server asking for a longer wait than this ends the in-process loop.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 3, min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5), max_server_wait: Duration::from_secs(10) }
    }
}

/// Run `op` with retries for retryable errors whose server-requested wait
/// (if any) is short.
pub async fn http_retry<T, F, Fut>(policy: RetryPolicy, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.attempts.saturating_sub(1))
        .with_jitter();
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &Error| e.is_retryable() && e.retry_after().is_none_or(|w| w <= policy.max_server_wait))
        .adjust(|e: &Error, dur| match (e.retry_after(), dur) {
            (Some(w), Some(d)) => Some(w.max(d)),
            (_, d) => d,
        })
        .notify(|e: &Error, dur| tracing::warn!(error = %e, retry_in_ms = dur.as_millis() as u64, "retrying"))
        .await
}
