//! A [`Queue`] wrapper that records every step message sent and can deliver
//! each one twice (at-least-once delivery, made worst-case): the copy is sent
//! a second later, so it usually arrives after the original was handled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl RecordingQueue {
    pub fn new(inner: SqsQueue, duplicate: bool) -> Self {
        RecordingQueue { inner, sent: Arc::default(), duplicate, lose_send: None, count: Arc::default() }
    }
    pub fn bodies(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

impl Queue for RecordingQueue {
    async fn send(&self, msg: &StepMessage, delay: Duration) -> Result<()> {
        if Some(self.count.fetch_add(1, Ordering::SeqCst)) == self.lose_send {
            return Ok(());
        }
        self.sent.lock().unwrap().push(msg.body());
        self.inner.send(msg, delay).await?;
        if self.duplicate {
            self.sent.lock().unwrap().push(msg.body());
            self.inner.send(msg, delay + Duration::from_secs(1)).await?;
        }
        Ok(())
    }
    async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<Received>> {
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
