//! What the engine's jobs share, and nothing else: the saga table, the step
//! queues and which lane a saga travels on, the configured rotations, this
//! worker's id (the lease owner) and its lease and visibility timings.
//!
//! Every job ([`crate::engine::Steps`], [`crate::commands::Commands`],
//! [`crate::finalize::Finalizer`], [`crate::sweeper::Sweeper`],
//! [`crate::attention::Attention`], [`crate::triggers::Intake`]) holds one
//! `Arc<Shared>` beside the handles only it uses (KMS, SNS, IAM, …).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::warn;

use crate::clock::SharedClock;
use crate::config::{Config, RotationConfig};
use crate::connectors::Rotation;
use crate::queue::{Lane, Queue, Received, StepMessage};
use crate::saga::{Clock, Millis, Saga};
use crate::store::Store;

/// The longest lease of a priority-lane step: a worker that dies
/// mid-emergency holds it back this long, plus the emergency watch's
/// interval of another replica (`[worker] emergency_watch`). Renewed by
/// heartbeats every quarter of it while a step runs.
pub const PRIORITY_LEASE: Duration = Duration::from_millis(400);

/// The longest visibility of a priority-lane message: SQS counts whole
/// seconds, so 1 s is its shortest. Longer than [`PRIORITY_LEASE`] on
/// purpose: the message is the durable nudge (and Lambda's only path), the
/// watch the fast one.
pub const PRIORITY_VISIBILITY: Duration = Duration::from_secs(1);

/// How long an exposure event being read holds ordinary work back before
/// its emergency saga exists ([`crate::store::Store::announce_exposure`]):
/// long enough for the intake to create the saga (whose own hold then
/// runs to [`crate::sweeper::HOLD_ORDINARY`] after the event), short so an event that
/// starts no emergency (a repeat, a key no rotation covers) costs the
/// backlog little.
pub const ARRIVAL_HOLD: Duration = Duration::from_secs(3);

pub(crate) fn clock(now: Millis) -> Clock {
    Clock { now, jitter: fastrand::f64(), token: fastrand::u128(..) }
}

pub(crate) fn ms(d: Duration) -> Millis {
    d.as_millis() as u64
}

/// The lane a saga's steps travel on: an emergency (an exposed key)
/// never waits behind ordinary rotations.
pub(crate) fn lane_of(s: &Saga) -> Lane {
    if s.exposure.is_some() {
        Lane::Priority
    } else {
        Lane::Ordinary
    }
}

/// When the saga's current step may run: now, or the end of its wait
/// (retry delay or grace period).
pub(crate) fn resume_at(s: &Saga, now: Millis) -> Millis {
    s.waiting_until(now).unwrap_or(now)
}

/// The configured rotations: as written (triggers match findings to them)
/// and built (connectors).
pub struct Rotations {
    pub configs: Vec<RotationConfig>,
    pub built: HashMap<String, Rotation>,
    /// The worker's home account and member-account roles.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// `[requests] allowed_senders` (reloaded with the rotations).
    pub allowed_senders: Option<Vec<String>>,
}

impl Rotations {
    pub fn get(&self, id: &str) -> Option<&Rotation> {
        self.built.get(id)
    }

    /// The accounts keyturn serves: the worker's own and every account a
    /// rotation's source names. AWS events about any other are refused.
    pub async fn served_accounts(&self) -> crate::error::Result<Vec<String>> {
        let mut served = vec![self.accounts.home().await?.account.clone()];
        for c in &self.configs {
            if let Some(a) = c.source.account_id() {
                if !served.iter().any(|s| s == a) {
                    served.push(a.to_string());
                }
            }
        }
        Ok(served)
    }
}

/// The engine's idea of "now" for decisions about key age (is an IAM.3
/// finding due?). Real time plus a skew that only tests set, to age a key
/// without waiting 90 days.
pub struct AgeClock {
    clock: SharedClock,
    skew_ms: std::sync::atomic::AtomicI64,
}

impl AgeClock {
    pub fn new(clock: SharedClock) -> AgeClock {
        AgeClock { clock, skew_ms: Default::default() }
    }
    pub fn now(&self) -> Millis {
        self.clock.now_ms().saturating_add_signed(self.skew_ms.load(Ordering::SeqCst))
    }
    /// Move the clock (tests).
    pub fn set_skew(&self, skew: Duration) {
        self.skew_ms.store(skew.as_millis() as i64, Ordering::SeqCst);
    }
}

/// `[worker] lease`, `visibility_timeout` and `sweep_after`.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub lease: Duration,
    pub visibility: Duration,
    pub sweep_after: Duration,
}

/// Builds rotations from a configuration (the AWS clients, secret resolver
/// and HTTP client of this engine), for reloads.
pub type Build = Arc<dyn Fn(&Config) -> Rotations + Send + Sync>;

/// The pieces every job of the engine uses.
pub struct Shared<Q: Queue> {
    pub(crate) store: Store,
    /// The step queue.
    pub(crate) queue: Q,
    /// The priority step queue ([`crate::queue::Lane`]), when configured.
    pub(crate) priority: Option<Q>,
    /// The configured rotations with their connectors built; replaced as a
    /// whole when a new configuration version is loaded ([`Shared::install`]).
    pub(crate) rotations: RwLock<Arc<Rotations>>,
    pub(crate) build: Build,
    pub(crate) worker_id: String,
    pub(crate) timings: Timings,
    /// Where every job reads time ([`crate::clock`]).
    pub(crate) clock: SharedClock,
}

impl<Q: Queue> Shared<Q> {
    /// Now, by [`Shared::clock`].
    pub(crate) fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }
    /// The queue a received message came from (its ack and visibility go there).
    pub(crate) fn queue_of(&self, m: &Received) -> &Q {
        self.on(m.lane)
    }
    /// The queue of a lane; without a priority queue every lane is the step queue.
    pub(crate) fn on(&self, lane: Lane) -> &Q {
        match (lane, &self.priority) {
            (Lane::Priority, Some(p)) => p,
            _ => &self.queue,
        }
    }
    /// The configured rotations, as of now (a snapshot: a reload replaces them).
    pub(crate) fn rotations(&self) -> Arc<Rotations> {
        self.rotations.read().expect("rotations lock").clone()
    }
    /// Swap in the rotations of a new configuration version (already
    /// validated). Sagas in flight keep running: a saga whose rotation is
    /// gone from the new version waits, retained, for a worker that has it.
    pub(crate) fn install(&self, cfg: &Config) {
        let next = (self.build)(cfg);
        *self.rotations.write().expect("rotations lock") = Arc::new(next);
    }

    /// The lease and message visibility a step of this lane runs under. A
    /// priority step's are short (at most [`PRIORITY_LEASE`] and
    /// [`PRIORITY_VISIBILITY`]), so an emergency whose worker died is taken
    /// over in a fraction of a second by another replica's watch, and in
    /// about a second by its message, not after the ordinary lease.
    pub(crate) fn timings(&self, lane: Lane) -> (Duration, Duration) {
        let Timings { lease, visibility, .. } = self.timings;
        match lane {
            Lane::Ordinary => (lease, visibility),
            Lane::Priority => (lease.min(PRIORITY_LEASE), visibility.min(PRIORITY_VISIBILITY)),
        }
    }

    /// Acknowledge a handled message on the queue it came from (nothing
    /// for one the emergency watch made: it has no receipt).
    pub(crate) async fn ack(&self, m: &Received) -> crate::error::Result<()> {
        if !m.from_queue() {
            return Ok(());
        }
        self.queue_of(m).ack(m).await
    }

    /// Keep a message invisible for `visibility` from now (nothing for one
    /// the emergency watch made).
    pub(crate) async fn extend(&self, m: &Received, visibility: Duration) -> crate::error::Result<()> {
        if !m.from_queue() {
            return Ok(());
        }
        self.queue_of(m).extend(m, visibility).await
    }

    /// Dead-letter a poison message (one the emergency watch made is only
    /// dropped: it came from no queue).
    pub(crate) async fn dead_letter(&self, m: &Received, reason: &str) -> crate::error::Result<()> {
        if !m.from_queue() {
            return Ok(());
        }
        self.queue_of(m).dead_letter(m, reason).await
    }

    pub(crate) async fn send_next(&self, s: &Saga, now: Millis) {
        self.send_next_on(s, now, lane_of(s)).await
    }

    /// Send a saga's next step on a given lane (a person's command puts the
    /// step they wait on in the priority lane).
    pub(crate) async fn send_next_on(&self, s: &Saga, now: Millis, lane: Lane) {
        let delay = Duration::from_millis(resume_at(s, now) - now);
        if let Err(e) = self.on(lane).send(&StepMessage::new(&s.saga_id, s.step, &s.run.token), delay).await {
            warn!(saga = %s.saga_id, error = %e, "could not enqueue the next step; the sweeper will re-drive it");
        }
    }
}

/// The engine's jobs stay small: each job type holds at most
/// [`MAX_FIELDS`](tests::MAX_FIELDS) handles, and no function of the jobs or
/// of the saga machine is longer than [`MAX_LINES`](tests::MAX_LINES) lines.
/// Read from the sources, like the floors test in `layers.rs`.
#[cfg(test)]
mod tests {
    use std::path::Path;

    pub(super) const MAX_FIELDS: usize = 10;
    pub(super) const MAX_LINES: usize = 100;

    /// The job types (plain data records such as `Request` or the `Saga`
    /// record are not jobs).
    const JOBS: &[&str] = &["Engine", "Steps", "Shared", "Commands", "Finalizer", "Sweeper", "Attention", "Intake", "Handovers"];

    /// Files of the engine's jobs and of the saga machine.
    const FILES: &[&str] = &[
        "engine.rs",
        "shared.rs",
        "commands.rs",
        "finalize.rs",
        "sweeper.rs",
        "attention.rs",
        "triggers.rs",
        "requests.rs",
        "handover.rs",
        "saga/mod.rs",
        "saga/step.rs",
        "saga/record.rs",
        "saga/decide.rs",
        "saga/compensate.rs",
        "saga/triage.rs",
        "saga/evidence.rs",
        "saga/expose.rs",
    ];

    /// The lines of a file up to its test module.
    fn code(text: &str) -> Vec<&str> {
        let lines: Vec<&str> = text.lines().collect();
        let end =
            lines.windows(2).position(|w| w[0].trim_start().starts_with("#[cfg(test)]") && w[1].trim_start().starts_with("mod ")).unwrap_or(lines.len());
        lines[..end].to_vec()
    }

    fn indent(l: &str) -> usize {
        l.len() - l.trim_start().len()
    }

    /// `(name, fields)` of every `struct Name … {` block.
    fn structs(lines: &[&str]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let Some(rest) = t.strip_prefix("pub struct ").or_else(|| t.strip_prefix("struct ")) else { continue };
            if !t.ends_with('{') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let close = " ".repeat(indent(l)) + "}";
            let fields = lines[i + 1..]
                .iter()
                .take_while(|f| **f != close)
                .filter(|f| {
                    let f = f.trim_start();
                    !f.starts_with("//")
                        && !f.starts_with('#')
                        && f.split_once(':').is_some_and(|(n, _)| {
                            n.split_whitespace().last().is_some_and(|w| w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                        })
                })
                .count();
            out.push((name, fields));
        }
        out
    }

    /// `(line, name, length)` of every function with a body.
    fn functions(lines: &[&str]) -> Vec<(usize, String, usize)> {
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let Some(at) = t.find("fn ") else { continue };
            let head = &t[..at];
            if !head.split_whitespace().all(|w| ["pub", "pub(crate)", "pub(super)", "async", "const"].contains(&w)) {
                continue;
            }
            if t.ends_with('}') || t.ends_with(';') {
                continue; // one line, or no body
            }
            let close = " ".repeat(indent(l)) + "}";
            let Some(len) = lines[i + 1..].iter().position(|f| *f == close) else { continue };
            let name: String = t[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push((i + 1, name, len + 2));
        }
        out
    }

    #[test]
    fn the_engine_s_jobs_hold_few_handles_and_no_function_is_long() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut over = Vec::new();
        let mut seen_jobs = Vec::new();
        for f in FILES {
            let text = std::fs::read_to_string(src.join(f)).unwrap();
            let lines = code(&text);
            for (name, fields) in structs(&lines) {
                if JOBS.contains(&name.as_str()) {
                    seen_jobs.push(name.clone());
                    if fields > MAX_FIELDS {
                        over.push(format!("{f}: struct {name} has {fields} fields (at most {MAX_FIELDS})"));
                    }
                }
            }
            for (line, name, len) in functions(&lines) {
                if len > MAX_LINES {
                    over.push(format!("{f}:{line}: fn {name} is {len} lines long (at most {MAX_LINES})"));
                }
            }
        }
        assert!(seen_jobs.contains(&"Engine".to_string()) && seen_jobs.contains(&"Shared".to_string()), "the scan sees the jobs: {seen_jobs:?}");
        assert!(over.is_empty(), "{}", over.join("\n"));
    }

    /// Every `.rs` file under `dir` but test files.
    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs") {
                out.push(p);
            }
        }
    }

    /// Not only the jobs: no function of the crate's non-test code is
    /// longer than [`MAX_LINES`], so each can be read on one screen or two.
    #[test]
    fn no_function_in_the_crate_is_long() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 60, "the scan sees the crate: {} files", files.len());
        let mut over = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for (line, name, len) in functions(&code(&text)) {
                if len > MAX_LINES {
                    over.push(format!("{}:{line}: fn {name} is {len} lines long (at most {MAX_LINES})", f.strip_prefix(&src).unwrap().display()));
                }
            }
        }
        assert!(over.is_empty(), "{}", over.join("\n"));
    }

    /// The scanner counts fields and lines as meant.
    #[test]
    fn the_scanner_counts_fields_and_lines() {
        let text = "pub struct A<Q: X> {\n    /// doc: with a colon\n    pub(crate) a: u8,\n    #[cfg(x)]\n    b: Vec<(u8, u8)>,\n}\nimpl A {\n    pub async fn f(\n        &self,\n    ) {\n        x();\n    }\n}\nfn g() {}\n";
        let lines = code(text);
        assert_eq!(structs(&lines), [("A".to_string(), 2)]);
        assert_eq!(functions(&lines), [(8, "f".to_string(), 5)]);
    }
}
