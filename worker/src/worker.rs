//! The long-running worker: long polling, bounded concurrency, sweeper,
//! key-age scan, graceful shutdown.
//!
//! * Up to three poll loops, each with capacity of its own: the step queue
//!   (`concurrency`), the priority step queue (`priority_concurrency`:
//!   emergencies and steps a person waits on, see [`crate::queue::Lane`])
//!   and the intake queue (`intake_concurrency`: EventBridge events and
//!   requests). A backlog on one queue never takes the room of another, so
//!   an exposed key is read and rotated while a thousand rotations drain.
//!   Each polls with `WaitTimeSeconds` (20 s by default) asking for at most
//!   as many messages as there are free slots, so a received message never
//!   waits in memory while its visibility timeout runs.
//! * Each message runs in its own task holding a semaphore permit; the engine
//!   heartbeats its lease and the message's visibility while a step runs.
//! * The sweeper and, if any rotation has a `[rotation.schedule]`, the key-age
//!   scan run beside the pollers; so does the emergency watch (every
//!   `emergency_watch`, [`crate::sweeper::Sweeper::watch`]): an emergency
//!   whose worker died is run here, under the priority pool's capacity, as
//!   soon as its lease lapses, without waiting for its message; and while
//!   an emergency is young, ordinary work is held back (no step received,
//!   runs stopped at their next step boundary, no sweep).
//! * On shutdown (SIGTERM/Ctrl-C, or the future passed in), polling stops:
//!   a poll in progress is finished (within `wait_time`) rather than dropped,
//!   and every message received but not started is made visible again at
//!   once (visibility 0) for another worker; in-flight work gets
//!   `shutdown_grace` to finish. A step cut off there is safe: its lease
//!   expires and another worker takes over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn};

use crate::config::WorkerConfig;
use crate::engine::Engine;
use crate::queue::{Lane, Queue, Received};

pub async fn run<Q: Queue, I: Queue>(engine: Arc<Engine<Q>>, cfg: &WorkerConfig, intake: Option<Arc<I>>, shutdown: impl Future<Output = ()>) {
    // Three pools of capacity, one per queue: ordinary steps, intake events
    // and priority steps. A backlog of ordinary steps fills only its own
    // pool, so a trigger is always read and an emergency always has room.
    let pools = Pools {
        steps: Arc::new(Semaphore::new(cfg.concurrency)),
        intake: Arc::new(Semaphore::new(cfg.intake_concurrency)),
        priority: Arc::new(Semaphore::new(cfg.priority_concurrency)),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (background, hold_rx) = spawn_background(&engine, cfg, &pools, &stop_rx);
    // The worker's own account (`sts:GetCallerIdentity`, once per process)
    // is read now, not on the clock of the first event that needs it (an
    // exposed key's: every intake event checks its account against it).
    let warm = engine.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.rotations().accounts.home().await {
            warn!(error = %e, "could not read the worker's own account yet; the first intake event tries again");
        }
    });
    info!(
        worker = %engine.worker_id(),
        concurrency = cfg.concurrency,
        intake = intake.is_some(),
        priority_lane = engine.priority_queue().is_some(),
        "worker started"
    );

    let step_handler = |lane: Lane| {
        let e = engine.clone();
        let hold = hold_rx.clone();
        move |mut m: Received| {
            m.lane = lane;
            let e = e.clone();
            let mut hold = hold.clone();
            async move {
                if lane == Lane::Ordinary {
                    // Bounded by the watch (HOLD_ORDINARY); a closed channel
                    // (the watch off or stopped) holds nothing.
                    let _ = hold.wait_for(|held| !*held).await;
                }
                if let Err(err) = e.handle(&m).await {
                    // Left on the queue: it becomes visible again and is retried.
                    warn!(message_id = %m.message_id, lane = lane.as_str(), error = %err, "step message not handled; it will be redelivered");
                }
            }
        }
    };
    let steps = async {
        let handler = step_handler(Lane::Ordinary);
        poll_loop("steps", engine.queue(), cfg, cfg.visibility_timeout.0, pools.steps.clone(), stop_rx.clone(), Some(hold_rx.clone()), handler).await
    };
    let priority_loop = async {
        let Some(pq) = engine.priority_queue() else { return };
        let visibility = engine.timings(Lane::Priority).1;
        poll_loop("priority", pq, cfg, visibility, pools.priority.clone(), stop_rx.clone(), None, step_handler(Lane::Priority)).await
    };
    let intake_loop = async {
        let Some(iq) = intake.clone() else { return };
        let (e, q) = (engine.clone(), iq.clone());
        let handle = move |m: Received| {
            let (e, q) = (e.clone(), q.clone());
            async move {
                if let Err(err) = e.handle_intake(q.as_ref(), &m).await {
                    warn!(message_id = %m.message_id, error = %err, "intake event not handled; it will be redelivered");
                }
            }
        };
        poll_loop("intake", iq.as_ref(), cfg, cfg.visibility_timeout.0, pools.intake.clone(), stop_rx.clone(), None, handle).await
    };
    let signal = async {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(steps, priority_loop, intake_loop, signal);

    for b in background {
        b.abort();
    }
    info!(grace_s = cfg.shutdown_grace.0.as_secs(), "shutting down: waiting for in-flight work");
    let all = async {
        let _steps = pools.steps.clone().acquire_many_owned(cfg.concurrency as u32).await;
        let _intake = pools.intake.clone().acquire_many_owned(cfg.intake_concurrency as u32).await;
        let _priority = pools.priority.clone().acquire_many_owned(cfg.priority_concurrency as u32).await;
    };
    match tokio::time::timeout(cfg.shutdown_grace.0, all).await {
        Ok(_) => info!("all in-flight work finished"),
        Err(_) => warn!("shutdown grace ran out; unfinished steps will be taken over when their leases expire"),
    }
}

/// The tasks beside the poll loops: the sweeper, the key-age scan and the
/// emergency watch. Answers them (aborted at shutdown) and the watch's
/// hold on ordinary steps (closed, so holding nothing, with the watch off).
fn spawn_background<Q: Queue>(
    engine: &Arc<Engine<Q>>,
    cfg: &WorkerConfig,
    pools: &Pools,
    stop_rx: &watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<()>>, watch::Receiver<bool>) {
    // While an emergency is in flight (and at most HOLD_ORDINARY), no new
    // ordinary step starts here: the emergency's calls meet shared services
    // not loaded by a backlog.
    // Held from the start until the first look tells (a replica started in
    // the middle of an emergency does not begin with a backlog's steps).
    let (hold_tx, hold_rx) = watch::channel(!cfg.emergency_watch.0.is_zero());
    let mut background = vec![{
        let engine = engine.clone();
        let every = cfg.sweep_interval.0;
        let mut hold = hold_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // Sweeps missed while held are not made up in a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // The sweep reads every saga and re-drives ordinary work:
                // not while an emergency holds ordinary work back (a closed
                // channel, the watch off, holds nothing).
                let _ = hold.wait_for(|held| !*held).await;
                match engine.sweep().await {
                    Ok(0) => {}
                    Ok(n) => info!(redriven = n, "sweeper re-drove stuck sagas"),
                    Err(e) => warn!(error = %e, "sweep failed"),
                }
            }
        })
    }];
    {
        // Always on: a reloaded configuration may add a [rotation.schedule];
        // with none, a scan reads nothing.
        let engine = engine.clone();
        let (every, jitter) = (cfg.scan_interval.0, cfg.scan_jitter.0);
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = engine.scan_and_start(jitter).await {
                    warn!(error = %e, "key-age scan failed");
                }
            }
        }));
    }
    if !cfg.emergency_watch.0.is_zero() {
        background.push(tokio::spawn(watch_emergencies(engine.clone(), cfg.emergency_watch.0, pools.priority.clone(), stop_rx.clone(), hold_tx)));
    }
    (background, hold_rx)
}

/// The emergency watch: one look ([`Engine::watch`]) at once, then every
/// `every` or when a listed emergency's lease is due to end, if sooner;
/// each emergency whose worker died runs here at once, through the step
/// pipeline, under a permit of the priority pool (none free: the next look
/// tries again, and the SQS message still comes back). Tells the ordinary
/// poll loop, the sweeper and the engine to hold ordinary work back while
/// an emergency is young ([`crate::sweeper::HOLD_ORDINARY`]; held from the
/// start until the first look). Stops taking work on shutdown. A failed
/// look releases the hold, is logged, and the next one waits longer (up
/// to 5 s), so an outage of DynamoDB is not logged ten times a second.
async fn watch_emergencies<Q: Queue>(
    engine: Arc<Engine<Q>>,
    every: Duration,
    pool: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    hold: watch::Sender<bool>,
) {
    // Both who start ordinary steps hear it: the poll loop (none received)
    // and the engine (runs stop at their next step boundary).
    let set_hold = |held: bool| {
        engine.hold_ordinary(held);
        hold.send_if_modified(|h| std::mem::replace(h, held) != held)
    };
    // The first look at once: until it, ordinary work is held.
    let mut pause = Duration::ZERO;
    let mut first = true;
    loop {
        tokio::time::sleep(pause).await;
        if *stop.borrow() {
            return;
        }
        let watched = match engine.watch().await {
            Ok(w) => w,
            Err(e) => {
                // Nothing known: ordinary work is not held on a guess.
                set_hold(false);
                pause = (pause * 2).min(Duration::from_secs(5)).max(every);
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "emergency watch: could not read the emergencies in flight");
                continue;
            }
        };
        // The next look: after the period, or when a listed saga's lease
        // ends if that is sooner (a few milliseconds at least).
        pause = watched.next_due.map_or(every, |d| d.clamp(Duration::from_millis(5), every));
        let held = watched.hold_ordinary;
        // (The first look's all-clear is the start, not news.)
        if set_hold(held) && (held || !first) {
            info!(emergencies = watched.listed, held, "emergency watch: ordinary steps {}", if held { "held back" } else { "resume" });
        }
        first = false;
        for m in watched.take {
            let Ok(permit) = pool.clone().try_acquire_owned() else {
                warn!(message_id = %m.message_id, "emergency watch: no priority capacity free; the next look tries again");
                break;
            };
            let e = engine.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match e.handle(&m).await {
                    Ok(handled) => info!(message_id = %m.message_id, ?handled, "emergency watch: step taken over"),
                    Err(err) => {
                        warn!(message_id = %m.message_id, error = %err, "emergency watch: step not handled; the next look or its message tries again")
                    }
                }
            });
        }
    }
}

/// The worker's capacity, one pool per queue it polls.
struct Pools {
    steps: Arc<Semaphore>,
    intake: Arc<Semaphore>,
    priority: Arc<Semaphore>,
}

/// Poll one queue until `stop` turns true, running `handle` per message
/// under a semaphore permit; while `hold` is true, receive nothing.
#[allow(clippy::too_many_arguments)]
async fn poll_loop<Q, H, Fut>(
    name: &'static str,
    queue: &Q,
    cfg: &WorkerConfig,
    visibility: Duration,
    sem: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    mut hold: Option<watch::Receiver<bool>>,
    handle: H,
) where
    Q: Queue,
    H: Fn(Received) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(h) = hold.as_mut() {
            tokio::select! {
                _ = stop.changed() => return,
                _ = h.wait_for(|held| !*held) => {}
            }
        }
        let first = tokio::select! {
            _ = stop.changed() => return,
            p = sem.clone().acquire_owned() => p.expect("semaphore open"),
        };
        let free = (sem.available_permits() + 1).min(10) as i32;
        // A poll in progress is not dropped on shutdown: SQS may already have
        // handed it messages, which would then stay invisible for the whole
        // visibility timeout. It ends within `wait_time`; what it brings is
        // released below.
        let polled = queue.receive(free, cfg.wait_time.0, visibility).await;
        let msgs = match polled {
            Ok(m) => {
                backoff = Duration::from_millis(500);
                m
            }
            Err(e) => {
                error!(queue = name, error = %e, "receive failed; backing off");
                drop(first);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut first = Some(first);
        let mut msgs = msgs.into_iter();
        while let Some(m) = msgs.next() {
            if *stop.borrow() {
                release(name, queue, std::iter::once(m).chain(msgs.by_ref())).await;
                return;
            }
            let permit = match first.take() {
                Some(p) => p,
                None => tokio::select! {
                    _ = stop.changed() => {
                        release(name, queue, std::iter::once(m).chain(msgs.by_ref())).await;
                        return;
                    }
                    p = sem.clone().acquire_owned() => p.expect("semaphore open"),
                },
            };
            let fut = handle(m);
            tokio::spawn(async move {
                let _permit = permit;
                fut.await;
            });
        }
    }
}

/// The running configuration's version and where it comes from: checks
/// for a new version ([`ConfigWatch::check`]); a new valid version replaces
/// the rotations ([`Engine::install`]); an invalid one is refused — logged
/// and announced once per version (`keyturn.config_rejected`) — and the
/// running one stays. `[aws]` and `[worker]` changes are reported: they
/// need a restart.
pub struct ConfigWatch {
    pub source: crate::config_source::ConfigSource,
    pub sdk: Option<aws_config::SdkConfig>,
    pub running: crate::config::Config,
    pub version: String,
    rejected: Option<String>,
}

impl ConfigWatch {
    pub fn new(source: crate::config_source::ConfigSource, sdk: Option<aws_config::SdkConfig>, running: crate::config::Config, version: String) -> Self {
        ConfigWatch { source, sdk, running, version, rejected: None }
    }

    /// Look once; answers whether a new version was installed.
    pub async fn check<Q: Queue>(&mut self, engine: &Engine<Q>, why: &str) -> bool {
        let (text, next) = match self.source.fetch(self.sdk.as_ref()).await {
            Ok(v) => v,
            Err(e) => {
                warn!(source = %self.source.describe(), error = %e, "could not read the configuration; keeping the running one");
                return false;
            }
        };
        if next == self.version || self.rejected.as_deref() == Some(next.as_str()) {
            return false;
        }
        match crate::config::Config::parse(&text) {
            Ok(cfg) => {
                if format!("{:?}{:?}", cfg.aws, cfg.worker) != format!("{:?}{:?}", self.running.aws, self.running.worker) {
                    warn!(source = %self.source.describe(), version = %next, "[aws] or [worker] changed: they apply after a restart; rotations apply now");
                }
                engine.install(&cfg);
                info!(source = %self.source.describe(), version = %next, rotations = cfg.rotations.len(), trigger = why, "configuration version loaded");
                self.version = next;
                self.rejected = None;
                true
            }
            Err(problem) => {
                error!(source = %self.source.describe(), version = %next, %problem, "new configuration version refused; the running one stays");
                let n = crate::notify::render_config_rejected(&self.source.describe(), &next, &self.version, &problem);
                if let Err(e) = engine.notifier.publish(&n).await {
                    warn!(error = %e, "could not announce the refused configuration");
                }
                self.rejected = Some(next);
                false
            }
        }
    }
}

/// The worker's configuration watch: every `sweep_interval`, and on SIGHUP.
pub async fn watch_config<Q: Queue>(engine: Arc<Engine<Q>>, mut watch: ConfigWatch) {
    let mut tick = tokio::time::interval(watch.running.worker.sweep_interval.0);
    tick.tick().await;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let why = tokio::select! {
            _ = tick.tick() => "sweep",
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
        };
        #[cfg(not(unix))]
        let why = {
            tick.tick().await;
            "sweep"
        };
        watch.check(&engine, why).await;
    }
}

/// Make messages received but not started visible again at once
/// (visibility 0), so another worker takes them now rather than after the
/// visibility timeout.
async fn release<Q: Queue>(name: &'static str, queue: &Q, msgs: impl Iterator<Item = Received>) {
    for m in msgs {
        match queue.extend(&m, Duration::ZERO).await {
            Ok(()) => info!(queue = name, message_id = %m.message_id, "shutting down: released a message not started"),
            Err(e) => warn!(queue = name, message_id = %m.message_id, error = %e, "could not release a message; it returns after its visibility timeout"),
        }
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
