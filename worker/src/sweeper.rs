//! The sweeper: the repair loop that makes lost messages harmless. Every
//! `sweep_interval` it re-sends the current step of each running saga whose
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
        for s in self.store.overdue(now).await? {
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
}
