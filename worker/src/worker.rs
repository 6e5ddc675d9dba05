//! The long-running worker: long polling, bounded concurrency, sweeper,
//! graceful shutdown.
//!
//! * Polls with `WaitTimeSeconds` (20 s by default) asking for at most as
//!   many messages as there are free slots, so a received message never waits
//!   in memory while its visibility timeout runs.
//! * Each message runs in its own task holding a semaphore permit; the
//!   engine heartbeats its lease and the message's visibility while a step
//!   runs.
//! * The sweeper runs beside the poller.
//! * On shutdown (SIGTERM/Ctrl-C, or the future passed in), polling stops —
//!   an in-progress poll is dropped, and any message SQS handed to it becomes
//!   visible again after the visibility timeout — and in-flight steps get
//!   `shutdown_grace` to finish. A step cut off there is safe: its lease
//!   expires and another worker takes over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::config::WorkerConfig;
use crate::engine::Engine;
use crate::queue::Queue;

pub async fn run<Q: Queue>(engine: Arc<Engine<Q>>, cfg: &WorkerConfig, shutdown: impl Future<Output = ()>) {
    let sem = Arc::new(Semaphore::new(cfg.concurrency));
    let sweeper = {
        let engine = engine.clone();
        let every = cfg.sweep_interval.0;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match engine.sweep().await {
                    Ok(0) => {}
                    Ok(n) => info!(redriven = n, "sweeper re-drove stuck sagas"),
                    Err(e) => warn!(error = %e, "sweep failed"),
                }
            }
        })
    };
    info!(worker = %engine.worker_id, concurrency = cfg.concurrency, "worker started");
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(500);
    loop {
        let free = sem.available_permits().max(1).min(10) as i32;
        let permit_wait = sem.clone().acquire_owned();
        let first = tokio::select! {
            _ = &mut shutdown => break,
            p = permit_wait => p.expect("semaphore open"),
        };
        let polled = tokio::select! {
            _ = &mut shutdown => { drop(first); break }
            r = engine.queue.receive(free, cfg.wait_time.0, cfg.visibility_timeout.0) => r,
        };
        let msgs = match polled {
            Ok(m) => {
                backoff = Duration::from_millis(500);
                m
            }
            Err(e) => {
                error!(error = %e, "receive failed; backing off");
                drop(first);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut first = Some(first);
        for m in msgs {
            let permit = match first.take() {
                Some(p) => p,
                None => sem.clone().acquire_owned().await.expect("semaphore open"),
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = engine.handle(&m).await {
                    // Left on the queue: it becomes visible again and is retried.
                    warn!(message_id = %m.message_id, error = %e, "message not handled; it will be redelivered");
                }
            });
        }
    }
    sweeper.abort();
    info!(grace_s = cfg.shutdown_grace.0.as_secs(), "shutting down: waiting for in-flight steps");
    let all = sem.clone().acquire_many_owned(cfg.concurrency as u32);
    match tokio::time::timeout(cfg.shutdown_grace.0, all).await {
        Ok(_) => info!("all in-flight steps finished"),
        Err(_) => warn!("shutdown grace ran out; unfinished steps will be taken over when their leases expire"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown signal received");
}
