//! A [`Queue`] wrapper that records every step message sent and can deliver
//! each one twice (at-least-once delivery, made worst-case): the copy is sent
//! a second later, so it usually arrives after the original was handled.
//! It also knows when each message it sent comes due and counts the polls
//! begun, so a test can wait for exactly what it needs to have happened.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyturn::error::Result;
use keyturn::queue::{Queue, Received, SqsQueue, StepMessage};

#[derive(Clone)]
pub struct RecordingQueue {
    pub inner: SqsQueue,
    pub sent: Arc<Mutex<Vec<String>>>,
    pub duplicate: bool,
    /// Drop the send with this index (0-based, counting every send): a lost
    /// message, as after a crash between commit and send.
    pub lose_send: Option<usize>,
    count: Arc<AtomicUsize>,
    /// When each message sent (copies included) becomes receivable.
    due: Arc<Mutex<Vec<Instant>>>,
    /// Polls (`receive`) begun.
    polls: Arc<AtomicUsize>,
}

impl RecordingQueue {
    pub fn new(inner: SqsQueue, duplicate: bool) -> Self {
        RecordingQueue { inner, sent: Arc::default(), duplicate, lose_send: None, count: Arc::default(), due: Arc::default(), polls: Arc::default() }
    }
    pub fn bodies(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }

    /// How many polls (`receive` calls) have begun.
    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }

    /// Wait until a poll has begun (a worker on this queue is receiving).
    pub async fn wait_polling(&self, timeout: Duration) {
        let start = Instant::now();
        while self.polls() == 0 {
            assert!(start.elapsed() < timeout, "no poll began within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until every message sent so far that comes due within `horizon`
    /// (copies included) has been received and acknowledged: until the last
    /// of them can be received, then until the queue holds none visible or
    /// in flight; and again if handling them sent more. Messages due later
    /// (a wake-up hours away) are not waited for. Fails after `timeout`.
    pub async fn wait_handled(&self, horizon: Duration, timeout: Duration) {
        let start = Instant::now();
        loop {
            let (sent, last) = {
                let due = self.due.lock().unwrap();
                (due.len(), due.iter().copied().filter(|d| *d <= Instant::now() + horizon).max())
            };
            if let Some(last) = last {
                tokio::time::sleep_until(last.into()).await;
            }
            crate::env::wait_queue_idle(&self.inner.client, &self.inner.url, timeout.saturating_sub(start.elapsed())).await;
            if self.due.lock().unwrap().len() == sent {
                return;
            }
            assert!(start.elapsed() < timeout, "messages still being sent after {timeout:?}");
        }
    }

    /// Note a message sent just now with `delay`: SQS counts delays in whole
    /// seconds (rounded up, at most 900), from when it took the message.
    fn sent_with(&self, delay: Duration) {
        let secs = delay.min(keyturn::queue::MAX_DELAY).as_secs_f64().ceil();
        self.due.lock().unwrap().push(Instant::now() + Duration::from_secs_f64(secs));
    }
}

impl Queue for RecordingQueue {
    async fn send(&self, msg: &StepMessage, delay: Duration) -> Result<()> {
        if Some(self.count.fetch_add(1, Ordering::SeqCst)) == self.lose_send {
            return Ok(());
        }
        self.sent.lock().unwrap().push(msg.body());
        self.inner.send(msg, delay).await?;
        self.sent_with(delay);
        if self.duplicate {
            self.sent.lock().unwrap().push(msg.body());
            self.inner.send(msg, delay + Duration::from_secs(1)).await?;
            self.sent_with(delay + Duration::from_secs(1));
        }
        Ok(())
    }
    async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<Received>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.receive(max, wait, visibility).await
    }
    async fn ack(&self, m: &Received) -> Result<()> {
        self.inner.ack(m).await
    }
    async fn extend(&self, m: &Received, visibility: Duration) -> Result<()> {
        self.inner.extend(m, visibility).await
    }
    async fn dead_letter(&self, m: &Received, reason: &str) -> Result<()> {
        self.inner.dead_letter(m, reason).await
    }
    async fn waiting(&self) -> Result<u64> {
        self.inner.waiting().await
    }
}
