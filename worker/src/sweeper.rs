//! The sweeper: the repair loop that makes lost messages harmless. Every
//! `sweep_interval` it reads the running sagas (a Query of the sparse index
//! `active-by-due`, never a table scan) and re-sends the current step of each running saga whose
//! `due_at` passed with no live lease (a crash between commit and send, an
//! SQS mishap), and runs the due evidence checks of sagas that need
//! attention with both keys in place ([`crate::attention`]).

use std::time::Duration;

use tracing::{instrument, warn};

use crate::engine::{now_ms, Engine};
use crate::error::{Error, Result};
use crate::queue::{Queue, StepMessage};
use crate::saga::Status;

impl<Q: Queue> Engine<Q> {
    /// Re-send the message of every saga that is overdue and not leased:
    /// covers a crash between commit and send, and lost messages.
    #[instrument(skip(self), fields(worker = %self.worker_id))]
    pub async fn sweep(&self) -> Result<usize> {
        let now = now_ms();
        let mut n = 0;
        // One read of the sparse index of running sagas serves the repairs
        // and the gauges: finished sagas are not in it, so a sweep reads
        // only what runs, however many sagas the table keeps. The index is
        // eventually consistent; every write below is conditional.
        let all = self.store.active().await?;
        self.report_gauges(&all, now);
        for s in all.into_iter().filter(|s| s.needs_sweep(now)) {
            if s.saga.status == Status::NeedsAttention {
                // An unresolved saga whose evidence check is due.
                let id = s.saga.saga_id.clone();
                if let Err(e) = self.watch_one(s).await {
                    warn!(saga = %id, error = %e, "evidence check failed; trying again at the next check");
                }
                continue;
            }
            if s.lease_until > now {
                continue;
            }
            let due = now + Self::ms(self.sweep_after);
            match self.store.set_due(&s.saga.saga_id, s.version, due).await {
                Ok(()) => {}
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
            warn!(saga = %s.saga.saga_id, step = %s.saga.step, "saga overdue; re-driving its step");
            self.queue.send(&StepMessage::new(&s.saga.saga_id, s.saga.step, &s.saga.token), Duration::ZERO).await?;
            n += 1;
        }
        Ok(n)
    }

    /// `WorkerHeartbeat`, and the ages of the oldest running saga and of the
    /// oldest key a running saga is replacing (EMF, see [`crate::metrics`]).
    fn report_gauges(&self, all: &[crate::store::Stored], now: u64) {
        let running: Vec<_> = all.iter().filter(|s| !s.saga.status.is_terminal()).collect();
        let oldest_saga = running.iter().map(|s| now.saturating_sub(s.saga.created_at)).max().unwrap_or(0);
        let oldest_key =
            running.iter().flat_map(|s| s.saga.old_keys.iter().filter_map(|k| k.created_at)).map(|c| now.saturating_sub(c)).max().unwrap_or(0);
        use crate::metrics::{emit, Metric};
        emit(
            &[],
            &[
                Metric { name: "WorkerHeartbeat", unit: "Count", value: 1.0 },
                Metric { name: "RunningSagas", unit: "Count", value: running.len() as f64 },
                Metric { name: "OldestRunningSagaAge", unit: "Seconds", value: oldest_saga as f64 / 1000.0 },
                Metric { name: "OldestKeyUnderRotationAge", unit: "Seconds", value: oldest_key as f64 / 1000.0 },
            ],
        );
    }
}
