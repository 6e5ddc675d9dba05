//! Quarantine, modelled on Microsoft Entra's provisioning quarantine.
//!
//! A rotation whose sagas fail again and again must not hammer Auth0, Graph or
//! IAM, nor flood people with alerts. After `quarantine_after` consecutive
//! failed sagas the rotation is quarantined: automatic triggers (imported
//! findings, the key-age scan) back off — next attempt after 6 h, then 12 h,
//! then every 24 h — and after `quarantine_disable_after` it is disabled until
//! released. One notification when quarantine begins, another only when the
//! failure reason changes or quarantine ends. A successful saga, or
//! `keyturn release <rotation>`, lifts it. Explicit requests (`keyturn rotate`,
//! the Security Hub custom action) still run: they are how an operator tests
//! a fix, as an explicit restart does in Entra.
//!
//! Pure: the state transitions are decided here and tested below; the store
//! keeps the state in a `rotation#<id>` item and the engine applies it.

use serde::{Deserialize, Serialize};

use crate::saga::Millis;

const HOUR: u64 = 3_600_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub consecutive_failures: u32,
    /// The last saga counted, so a retried `finalize` never counts twice.
    pub last_counted_saga: Option<String>,
    pub quarantine: Option<Quarantine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub began: Millis,
    /// Failure code of the latest failed saga.
    pub reason: String,
    /// Failed attempts since quarantine began (the first is the one that began it).
    pub series: u32,
    pub next_attempt: Millis,
    pub disabled: bool,
}

/// What changed, for notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Began,
    ReasonChanged,
    Disabled,
    Lifted,
}

/// Wait before the next automatic attempt after the `series`-th failure.
pub fn backoff(series: u32) -> u64 {
    match series {
        0 | 1 => 6 * HOUR,
        2 => 12 * HOUR,
        _ => 24 * HOUR,
    }
}

/// Count one finished saga.
pub fn record(h: &Health, saga_id: &str, succeeded: bool, reason: &str, now: Millis, threshold: u32, disable_after: u64) -> (Health, Change) {
    if h.last_counted_saga.as_deref() == Some(saga_id) {
        return (h.clone(), Change::None);
    }
    // A success with nothing to clear changes nothing worth a write (its
    // count is idempotent anyway: a second count of it clears nothing).
    if succeeded && h.consecutive_failures == 0 && h.quarantine.is_none() {
        return (h.clone(), Change::None);
    }
    let mut n = h.clone();
    n.last_counted_saga = Some(saga_id.to_string());
    if succeeded {
        n.consecutive_failures = 0;
        let was = n.quarantine.take().is_some();
        return (n, if was { Change::Lifted } else { Change::None });
    }
    n.consecutive_failures += 1;
    match n.quarantine.as_mut() {
        Some(q) => {
            q.series += 1;
            q.next_attempt = now + backoff(q.series);
            if !q.disabled && now.saturating_sub(q.began) >= disable_after {
                q.disabled = true;
                q.reason = reason.to_string();
                return (n, Change::Disabled);
            }
            if q.reason != reason {
                q.reason = reason.to_string();
                return (n, Change::ReasonChanged);
            }
            (n, Change::None)
        }
        None if n.consecutive_failures >= threshold.max(1) => {
            n.quarantine = Some(Quarantine { began: now, reason: reason.to_string(), series: 1, next_attempt: now + backoff(1), disabled: false });
            (n, Change::Began)
        }
        None => (n, Change::None),
    }
}

/// Whether an automatic trigger may start a saga now.
pub fn admits(h: &Health, now: Millis) -> Result<(), String> {
    match &h.quarantine {
        Some(q) if q.disabled => Err(format!("disabled after quarantine since {} ({}); run `keyturn release`", q.began, q.reason)),
        Some(q) if now < q.next_attempt => Err(format!("quarantined ({}); next automatic attempt at {}", q.reason, q.next_attempt)),
        _ => Ok(()),
    }
}

/// An operator lifts quarantine.
pub fn release(h: &Health) -> (Health, Change) {
    let mut n = h.clone();
    n.consecutive_failures = 0;
    let was = n.quarantine.take().is_some();
    (n, if was { Change::Lifted } else { Change::None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * HOUR;

    #[test]
    fn quarantine_begins_at_the_threshold_and_backs_off() {
        let h = Health::default();
        let (h, c) = record(&h, "s1", false, "insufficient_scope", 0, 3, 28 * DAY);
        assert_eq!((c, h.quarantine.is_some()), (Change::None, false));
        let (h, _) = record(&h, "s2", false, "insufficient_scope", 1, 3, 28 * DAY);
        let (h, c) = record(&h, "s3", false, "insufficient_scope", 2, 3, 28 * DAY);
        assert_eq!(c, Change::Began);
        let q = h.quarantine.clone().unwrap();
        assert_eq!((q.series, q.next_attempt), (1, 2 + 6 * HOUR));
        assert!(admits(&h, 3).is_err());
        assert!(admits(&h, 2 + 6 * HOUR).is_ok());
        let (h, c) = record(&h, "s4", false, "insufficient_scope", 7 * HOUR, 3, 28 * DAY);
        assert_eq!(c, Change::None, "same reason: no new notification");
        assert_eq!(h.quarantine.as_ref().unwrap().next_attempt, 7 * HOUR + 12 * HOUR);
        let (h, c) = record(&h, "s5", false, "TooManyKeys", 20 * HOUR, 3, 28 * DAY);
        assert_eq!(c, Change::ReasonChanged);
        assert_eq!(h.quarantine.as_ref().unwrap().next_attempt, 20 * HOUR + 24 * HOUR);
    }

    #[test]
    fn disabled_after_the_configured_time_until_released() {
        let mut h = Health::default();
        for (i, t) in [0, 1, 2].iter().enumerate() {
            h = record(&h, &format!("s{i}"), false, "x", *t, 3, 2 * DAY).0;
        }
        let (h, c) = record(&h, "late", false, "x", 3 * DAY, 3, 2 * DAY);
        assert_eq!(c, Change::Disabled);
        assert!(admits(&h, 100 * DAY).unwrap_err().contains("disabled"));
        let (h, c) = release(&h);
        assert_eq!(c, Change::Lifted);
        assert!(admits(&h, 100 * DAY).is_ok());
        assert_eq!(h.consecutive_failures, 0);
    }

    #[test]
    fn success_lifts_and_counting_is_idempotent() {
        let mut h = Health::default();
        for i in 0..3 {
            h = record(&h, &format!("s{i}"), false, "x", i, 3, 28 * DAY).0;
        }
        assert!(h.quarantine.is_some());
        let (again, c) = record(&h, "s2", false, "x", 9, 3, 28 * DAY);
        assert_eq!((c, again.clone()), (Change::None, h.clone()), "a retried finalize counts nothing");
        let (h, c) = record(&h, "ok", true, "", 10, 3, 28 * DAY);
        assert_eq!(c, Change::Lifted);
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(record(&h, "ok2", true, "", 11, 3, 28 * DAY).1, Change::None);
    }

    #[test]
    fn a_success_with_nothing_to_clear_needs_no_write() {
        let clean = Health::default();
        assert_eq!(record(&clean, "ok", true, "", 1, 3, 28 * DAY), (clean.clone(), Change::None), "unchanged: no PutItem");
        let (one_failure, _) = record(&clean, "f", false, "x", 1, 3, 28 * DAY);
        let (h, c) = record(&one_failure, "ok", true, "", 2, 3, 28 * DAY);
        assert_eq!((h.consecutive_failures, c), (0, Change::None));
        assert_ne!(h, one_failure, "a success after a failure is written");
    }
}
