//! The sweeper: the repair loop that makes lost messages harmless. Every
//! `sweep_interval` it reads the running sagas (a Query of the sparse index
//! `active-by-due`, never a table scan) and re-sends the current step of each running saga whose
//! `due_at` passed with no live lease (a crash between commit and send, an
//! SQS mishap), and runs the due evidence checks of sagas that need
//! attention with both keys in place ([`crate::attention`]).
//!
//! Why it weighs the queue's backlog first: in a burst (a thousand
//! rotations requested at once, or workers down for a while) sagas become
//! overdue because their messages wait in the queue, not because they were
//! lost. Re-sending each would double the backlog and every duplicate costs
//! a receive, a refused lease, a read and a delete. So while the queue holds
//! at least as many waiting messages as there are overdue sagas, the
//! sweeper leaves them alone ([`redrive`]), for at most [`BACKLOG_PATIENCE`];
//! with fewer, it re-drives as many as are missing, the longest overdue first.
//!
//! The emergency watch ([`Sweeper::watch`]) is the same repair, fast and
//! for emergencies only: every `[worker] emergency_watch` (100 ms by
//! default), and when a listed emergency's lease is due to end if that is
//! sooner ([`Watched::next_due`]), a long-running worker reads the registry of emergencies in
//! flight (one `GetItem`, [`crate::store::Store::emergencies`]) and, for a
//! listed saga whose lease holder let its lease lapse (a worker that died:
//! a live one renews it every 100 ms), hands back a step message made from
//! the step and token the saga records, which the worker runs through the
//! ordinary step pipeline as if its SQS message had come back
//! ([`crate::queue::Received::watched`]). Taking the lease is the usual
//! conditional write, so a replica that looks at the same moment, or the
//! SQS message coming back later, finds the saga leased or moved on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{instrument, warn};

use crate::attention::Attention;
use crate::error::{Error, Result};
use crate::queue::{Lane, Queue, Received, StepMessage};
use crate::saga::Millis;
use crate::saga::Status;
use crate::shared::{lane_of, ms, Shared, PRIORITY_LEASE};
use crate::store::Stored;

/// The repair loop: re-drives overdue sagas, hands due evidence checks to
/// [`Attention`]; and the emergency watch.
pub struct Sweeper<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) attention: Arc<Attention<Q>>,
    /// What the emergency watch knows of each listed saga.
    pub(crate) looks: Mutex<HashMap<String, Seen>>,
}

/// What the emergency watch knows of a listed saga.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen {
    /// Its next look (its holder's lease end, its wait's end): no read of
    /// the saga before then.
    next: Millis,
    /// When keyturn got its exposure event (known once read).
    exposed_at: Option<Millis>,
}

/// How long after its exposure event an emergency in flight holds back the
/// start of ordinary steps in every long-running worker
/// ([`Watched::hold_ordinary`]): the emergency's calls then meet shared
/// services (DynamoDB, IAM, the target) not loaded by a backlog. Bounded,
/// so a stuck emergency never starves ordinary rotations.
pub const HOLD_ORDINARY: Duration = Duration::from_secs(10);

/// What one look of the emergency watch found.
#[derive(Debug, Default)]
pub struct Watched {
    /// Emergencies in flight, as the registry lists them (stale entries
    /// dropped).
    pub listed: usize,
    /// Steps to run now: emergencies whose holder's lease lapsed, each a
    /// message with no receipt ([`Received::watched`]).
    pub take: Vec<Received>,
    /// An emergency in flight got its exposure event less than
    /// [`HOLD_ORDINARY`] ago: start no new ordinary step.
    pub hold_ordinary: bool,
    /// How soon the earliest next look of a listed saga is due (its
    /// holder's lease end): the watch looks again then if that comes
    /// before its period, so a dead holder's step is taken when its lease
    /// ends, not up to a period later.
    pub next_due: Option<Duration>,
}

/// What the emergency watch does about one listed saga, as read at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Ended, gone, or no emergency: off the registry.
    Unlist,
    /// Nothing to do before this time: a live lease (its end), a wait (its
    /// end), or a step whose message is on its way (the next look).
    Until(Millis),
    /// Its holder's lease lapsed: run its step here.
    Take(StepMessage),
}

/// The watch's decision for a listed saga (pure). It takes only a step
/// whose lease was taken and lapsed — a holder that stopped renewing it —
/// and that may run now (the lease write refuses a step still waiting).
/// A step nobody leased yet is its message's (just sent, or sent with a
/// delay): the watch leaves it alone rather than race the queue. The
/// message it makes names the step and, as the lease write accepts, the
/// token of the message the holder was running steps for (`nudge`), so
/// that SQS message stays the durable nudge should this worker die too.
/// A lease of `me` (this worker) is never taken over: its holder is alive,
/// only late renewing it (a loaded table), and running the step twice
/// would only cost a refused commit.
pub fn look(stored: Option<&Stored>, me: &str, now: Millis) -> Look {
    let Some(s) = stored else { return Look::Unlist };
    if s.saga.status.is_terminal() || s.saga.exposure.is_none() {
        return Look::Unlist;
    }
    if let Some(until) = s.saga.waiting_until(now) {
        return Look::Until(until);
    }
    match &s.lease_owner {
        Some(_) if s.lease_until > now => Look::Until(s.lease_until),
        Some(owner) if owner == me => Look::Until(now + ms(PRIORITY_LEASE)),
        Some(_) => Look::Take(StepMessage::new(&s.saga.saga_id, s.saga.step, s.nudge.as_deref().unwrap_or(&s.saga.run.token))),
        None => Look::Until(now),
    }
}

/// How soon the watch should look again for the listed sagas' next looks
/// (pure): the earliest one still ahead. One due now or past (a step whose
/// message nobody leased yet) waits for the watch's period: looking sooner
/// would only spin until its message is received.
pub fn next_due(nexts: impl Iterator<Item = Millis>, now: Millis) -> Option<Duration> {
    nexts.filter(|&at| at > now).min().map(|at| Duration::from_millis(at - now))
}

impl<Q: Queue> Sweeper<Q> {
    /// Re-send the message of every saga that is overdue and not leased:
    /// covers a crash between commit and send, and lost messages.
    #[instrument(skip(self), fields(worker = %self.shared.worker_id))]
    pub async fn sweep(&self) -> Result<usize> {
        // The step queue's backlog is read before the sagas, never after: a
        // message a worker takes between the two reads then still counts as
        // waiting while its saga (leased) is no longer overdue. Read the
        // other way round, every message taken during the read of a long
        // index (a backlog draining) made the backlog look short of the
        // overdue sagas, and every overdue saga was sent again.
        let waiting = self.shared.queue.waiting().await;
        let now = self.shared.now_ms();
        let mut n = 0;
        // One read of the sparse index of running sagas serves the repairs
        // and the gauges: finished sagas are not in it, so a sweep reads
        // only what runs, however many sagas the table keeps. The index is
        // eventually consistent; every write below is conditional.
        let all = self.shared.store.active().await?;
        self.report_gauges(&all, now);
        let (watched, running): (Vec<_>, Vec<_>) = all.into_iter().filter(|s| s.needs_sweep(now)).partition(|s| s.saga.status == Status::NeedsAttention);
        // Unresolved sagas whose evidence check is due.
        for s in watched {
            let id = s.saga.saga_id.clone();
            if let Err(e) = self.attention.watch_one(s).await {
                warn!(saga = %id, error = %e, "evidence check failed; trying again at the next check");
            }
        }
        // Overdue running sagas that no worker holds, the longest overdue first.
        let mut overdue: Vec<_> = running.into_iter().filter(|s| s.lease_until <= now).collect();
        overdue.sort_by_key(|s| s.due_at);
        // The backlog weighed is the step queue's: emergencies travel on the
        // priority lane, which has none to speak of, and never wait.
        let ordinary = overdue.iter().filter(|s| lane_of(&s.saga) == Lane::Ordinary).count();
        let waiting = match waiting {
            Ok(w) => w,
            Err(e) if ordinary > 0 => {
                warn!(error = %e, "could not read the step queue's backlog; re-driving every overdue saga");
                0
            }
            Err(_) => 0,
        };
        let short = missing(ordinary, waiting);
        let (mut postponed, mut rank) = (0, 0);
        for s in overdue {
            let lane = lane_of(&s.saga);
            if lane == Lane::Ordinary {
                rank += 1;
            }
            if !redrive(lane, now.saturating_sub(s.due_at), rank, short, BACKLOG_PATIENCE) {
                postponed += 1;
                continue;
            }
            let due = now + ms(self.shared.timings.sweep_after);
            match self.shared.store.set_due(&s.saga.saga_id, s.version, due).await {
                Ok(()) => {}
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
            warn!(saga = %s.saga.saga_id, step = %s.saga.step, "saga overdue; re-driving its step");
            self.shared.on(lane).send(&StepMessage::new(&s.saga.saga_id, s.saga.step, &s.saga.run.token), Duration::ZERO).await?;
            n += 1;
        }
        if postponed > 0 {
            tracing::info!(postponed, waiting, "overdue sagas left to the queue's backlog (their messages are likely in it)");
        }
        Ok(n)
    }

    /// One look of the emergency watch: the registry, then each listed
    /// saga whose next look is due ([`look`]). Sagas ended or gone leave
    /// the registry; a saga handed back is not looked at again for a
    /// priority lease (by then the lease taken for it is live, or the run
    /// ended).
    pub async fn watch(&self) -> Result<Watched> {
        let registry = self.shared.store.registry().await?;
        let listed = registry.sagas;
        let now = self.shared.now_ms();
        let due: Vec<String> = {
            let mut looks = self.looks.lock().unwrap_or_else(|e| e.into_inner());
            looks.retain(|id, _| listed.contains(id));
            listed.iter().filter(|id| looks.get(*id).is_none_or(|s| s.next <= now)).cloned().collect()
        };
        let mut take = Vec::new();
        for id in due {
            let stored = self.shared.store.load(&id).await?;
            let now = self.shared.now_ms();
            let next = match look(stored.as_ref(), &self.shared.worker_id, now) {
                Look::Unlist => {
                    self.shared.store.drop_emergency(&id).await?;
                    None
                }
                Look::Until(at) => Some(at),
                Look::Take(msg) => {
                    warn!(saga = %id, step = %msg.step, "emergency watch: the saga's worker let its lease lapse; taking its step over");
                    take.push(Received::watched(&msg));
                    Some(now + ms(PRIORITY_LEASE))
                }
            };
            let exposed_at = stored.as_ref().and_then(|s| s.saga.exposure.as_ref()).map(|e| e.seen_at);
            let mut looks = self.looks.lock().unwrap_or_else(|e| e.into_inner());
            match next {
                Some(next) => looks.insert(id, Seen { next, exposed_at }),
                None => looks.remove(&id),
            };
        }
        let looks = self.looks.lock().unwrap_or_else(|e| e.into_inner());
        let hold_ordinary = now < registry.arriving_until || looks.values().any(|s| s.exposed_at.is_some_and(|at| now < at + ms(HOLD_ORDINARY)));
        let next_due = next_due(looks.values().map(|s| s.next), now);
        Ok(Watched { listed: looks.len(), take, hold_ordinary, next_due })
    }

    /// `WorkerHeartbeat`, and the ages of the oldest running saga and of the
    /// oldest key a running saga is replacing (EMF, see [`crate::metrics`]).
    fn report_gauges(&self, all: &[crate::store::Stored], now: u64) {
        let running: Vec<_> = all.iter().filter(|s| !s.saga.status.is_terminal()).collect();
        let oldest_saga = running.iter().map(|s| now.saturating_sub(s.saga.created_at)).max().unwrap_or(0);
        let oldest_key =
            running.iter().flat_map(|s| s.saga.keys.old_keys.iter().filter_map(|k| k.created_at)).map(|c| now.saturating_sub(c)).max().unwrap_or(0);
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

/// How long past its due time a saga may be left to a backlog before it is
/// re-driven anyway: a message that really was lost does not wait behind a
/// long backlog for ever.
pub const BACKLOG_PATIENCE: Millis = 15 * 60 * 1000;

/// How many of `overdue` sagas of the step queue surely lost their message
/// when `waiting` messages wait in it: the shortfall, if any.
pub fn missing(overdue: usize, waiting: u64) -> usize {
    (overdue as u64).saturating_sub(waiting) as usize
}

/// Whether the sweeper re-drives a saga of `lane` overdue by `overdue_by`,
/// the `rank`-th longest overdue of the step queue's, when `missing` of
/// them surely lost their message ([`missing`]). A priority saga (an
/// emergency) is re-driven at once: its lane has no backlog to wait for,
/// and a lost emergency must not wait 15 min. Which messages are missing
/// cannot be told, so as many sagas as are missing are re-driven, the
/// longest overdue first (a backlog drains roughly in order, so a lost
/// message's saga is the one left behind); the others wait, each at most
/// `patience`. Re-driving all of them when the backlog looked one short
/// (a message received but its saga not yet leased while the sweeper read)
/// sent a duplicate for every saga of a draining backlog.
pub fn redrive(lane: Lane, overdue_by: Millis, rank: usize, missing: usize, patience: Millis) -> bool {
    lane == Lane::Priority || rank <= missing || overdue_by >= patience
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_holds_re_drives_back_until_patience_runs_out() {
        let (p, o) = (BACKLOG_PATIENCE, Lane::Ordinary);
        // Nothing waits: every overdue saga lost its message.
        assert_eq!(missing(3, 0), 3);
        assert!((1..=3).all(|rank| redrive(o, 1, rank, missing(3, 0), p)));
        // As many or more waiting: they may all be in the backlog.
        assert_eq!(missing(3, 3), 0);
        assert_eq!(missing(3, 500), 0);
        assert!(!redrive(o, 1, 1, missing(3, 3), p));
        assert!(!redrive(o, p - 1, 1, missing(1, 500), p));
        // ... but not for ever.
        assert!(redrive(o, p, 1, missing(1, 500), p));
    }

    #[test]
    fn one_message_short_re_drives_one_saga_not_the_whole_backlog() {
        let (p, o) = (BACKLOG_PATIENCE, Lane::Ordinary);
        // 500 overdue, 499 waiting: one message is missing (or in a
        // worker's hands between its receive and its lease).
        let m = missing(500, 499);
        assert_eq!(m, 1);
        assert!(redrive(o, 1, 1, m, p), "the longest overdue is re-driven");
        assert!((2..=500).all(|rank| !redrive(o, 1, rank, m, p)), "the other 499 are left to the backlog");
    }

    /// A saga as the watch reads it: an emergency (or not), leased by
    /// `owner` until `lease_until`, at `issue_new`, due at 1,000.
    fn stored(emergency: bool, owner: Option<&str>, lease_until: Millis) -> Stored {
        let mut saga = crate::saga::Saga::new("s1".into(), "r".into(), "c".into(), "manual".into(), 1_000, 7);
        saga.step = crate::saga::Step::IssueNew;
        saga.exposure = emergency.then(|| crate::saga::Exposure {
            key_id: "AKIAEXPOSED".into(),
            role: crate::saga::ExposedRole::Old,
            seen_at: 900,
            event: "arn".into(),
            keep_inactive: false,
            inactive_at: None,
            deleted_at: None,
            follow_up: false,
        });
        Stored {
            saga,
            version: 3,
            lease_owner: owner.map(String::from),
            lease_until,
            secret: None,
            grant: None,
            due_at: 0,
            watch_at: None,
            nudge: owner.map(|_| "run-token".to_string()),
        }
    }

    #[test]
    fn the_watch_takes_only_an_emergency_whose_lease_lapsed() {
        // The holder died: its lease ended at 2,000; the step runs here,
        // named as the holder's message names it (the nudge).
        let dead = stored(true, Some("dead-worker"), 2_000);
        assert_eq!(look(Some(&dead), "me", 2_001), Look::Take(StepMessage::new("s1", crate::saga::Step::IssueNew, "run-token")));
        // A live lease: nothing before its end.
        assert_eq!(look(Some(&dead), "me", 1_999), Look::Until(2_000));
        // Never leased (its message is on its way): left to the queue.
        assert_eq!(look(Some(&stored(true, None, 0)), "me", 2_001), Look::Until(2_001));
        // Waiting (a retry delay): nothing before the wait ends, lease or not.
        let mut waiting = stored(true, Some("dead-worker"), 2_000);
        waiting.saga.run.not_before = 5_000;
        assert_eq!(look(Some(&waiting), "me", 2_001), Look::Until(5_000));
        // This worker's own lease, renewed late: its holder is alive.
        let mine = stored(true, Some("me"), 2_000);
        assert_eq!(look(Some(&mine), "me", 2_001), Look::Until(2_001 + ms(PRIORITY_LEASE)));
    }

    #[test]
    fn the_watch_looks_again_at_the_earliest_lease_end_ahead_never_spinning_on_a_step_due_now() {
        assert_eq!(next_due([1_400, 1_250, 2_000].into_iter(), 1_000), Some(Duration::from_millis(250)));
        // Due now or past (no lease yet): left to the watch's period.
        assert_eq!(next_due([1_000, 900].into_iter(), 1_000), None);
        assert_eq!(next_due([1_000, 1_300].into_iter(), 1_000), Some(Duration::from_millis(300)));
        assert_eq!(next_due(std::iter::empty(), 1_000), None);
    }

    #[test]
    fn the_watch_unlists_ordinary_ended_and_missing_sagas() {
        // An ordinary saga is never an emergency's, even with a lapsed lease.
        assert_eq!(look(Some(&stored(false, Some("dead-worker"), 2_000)), "me", 2_001), Look::Unlist);
        for status in [Status::Succeeded, Status::Compensated, Status::NeedsAttention, Status::Refused] {
            let mut ended = stored(true, Some("dead-worker"), 2_000);
            ended.saga.status = status;
            assert_eq!(look(Some(&ended), "me", 2_001), Look::Unlist, "{status:?}");
        }
        assert_eq!(look(None, "me", 2_001), Look::Unlist);
    }

    #[test]
    fn an_overdue_emergency_is_re_driven_at_once_whatever_the_backlog() {
        assert!(redrive(Lane::Priority, 1, 1, missing(1, 10_000), BACKLOG_PATIENCE));
        assert!(!redrive(Lane::Ordinary, 1, 1, missing(1, 10_000), BACKLOG_PATIENCE));
    }
}
