//! Backing off a throttling backend: how many steps this worker runs at
//! once, adjusted by AIMD (additive increase, multiplicative decrease).
//!
//! The limit starts at `[worker] concurrency`. A step that IAM answers with
//! `Throttling` (after the SDK's own retries) halves it — at most once per
//! second, so one burst of refusals counts once — and waits a moment before
//! running again, in place and under its lease: the saga's attempt budget is
//! not spent on the backend's rate. Every step that ends without throttling
//! adds `1 / limit`, about one more step at once per limit's worth of
//! successes, up to `concurrency`. Steps wait for room before taking their
//! lease, so a waiting step holds nothing another worker could need.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// IAM's throttling code (the AWS query protocol's).
pub const THROTTLING: &str = "Throttling";

#[derive(Debug)]
pub struct Aimd {
    max: f64,
    state: Mutex<State>,
    room: Notify,
}

#[derive(Debug)]
struct State {
    limit: f64,
    running: usize,
    last_decrease: Option<Instant>,
}

/// Room for one step; gives it back when dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a Aimd);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("aimd lock").running -= 1;
        self.0.room.notify_waiters();
    }
}

impl Aimd {
    pub fn new(concurrency: usize) -> Aimd {
        let max = concurrency.max(1) as f64;
        Aimd { max, state: Mutex::new(State { limit: max, running: 0, last_decrease: None }), room: Notify::new() }
    }

    /// The current limit (steps at once).
    pub fn limit(&self) -> f64 {
        self.state.lock().expect("aimd lock").limit
    }

    /// Wait until fewer steps run than the limit allows.
    pub async fn slot(&self) -> Slot<'_> {
        loop {
            let notified = self.room.notified();
            {
                let mut st = self.state.lock().expect("aimd lock");
                if (st.running as f64) < st.limit.floor().max(1.0) {
                    st.running += 1;
                    return Slot(self);
                }
            }
            // Woken when a slot is given back; the timeout covers a limit
            // that grew with no slot given back.
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// A step ran without being throttled.
    pub fn ok(&self) {
        let mut st = self.state.lock().expect("aimd lock");
        st.limit = (st.limit + 1.0 / st.limit).min(self.max);
        drop(st);
        self.room.notify_waiters();
    }

    /// A step was throttled: halve the limit (once per second at most).
    /// Answers the new limit.
    pub fn throttled(&self) -> f64 {
        let mut st = self.state.lock().expect("aimd lock");
        let now = Instant::now();
        if st.last_decrease.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            st.limit = (st.limit / 2.0).max(1.0);
            st.last_decrease = Some(now);
        }
        st.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_once_per_burst_and_grows_back_additively() {
        let a = Aimd::new(16);
        assert_eq!(a.throttled(), 8.0);
        assert_eq!(a.throttled(), 8.0, "a second refusal of the same burst counts once");
        for _ in 0..8 {
            a.ok();
        }
        assert!((a.limit() - 9.0).abs() < 0.1, "about one more per limit's worth of successes: {}", a.limit());
        for _ in 0..1000 {
            a.ok();
        }
        assert_eq!(a.limit(), 16.0, "never above concurrency");
    }

    #[tokio::test]
    async fn slots_wait_for_room() {
        let a = Aimd::new(2);
        let s1 = a.slot().await;
        let _s2 = a.slot().await;
        assert!(tokio::time::timeout(Duration::from_millis(50), a.slot()).await.is_err(), "a third step waits");
        drop(s1);
        assert!(tokio::time::timeout(Duration::from_millis(500), a.slot()).await.is_ok(), "room again");
    }
}
