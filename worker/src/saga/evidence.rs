//! Sagas stopped with both keys in place: judging the evidence, watching,
//! resolving.

use super::*;

/// Which key a saga that stopped with both keys in place keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The target uses the new key: retire the old one.
    New,
    /// The target uses the old key: retire the new one.
    Old,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::New => "new",
            Keep::Old => "old",
        }
    }
    fn other(self) -> Keep {
        match self {
            Keep::New => Keep::Old,
            Keep::Old => Keep::New,
        }
    }
}

/// What the evidence says, as of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `Some` when the evidence is clear.
    pub keep: Option<Keep>,
    /// Why, in one sentence (key ids, services, times; never a secret).
    pub reason: String,
    pub at: Millis,
}

/// One key as the evidence check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvidence {
    pub id: String,
    /// Listed by the source now.
    pub exists: bool,
    /// Most recent use, and the service it was used with (IAM keeps only the last one).
    pub last_used: Option<(Millis, String)>,
}

/// Everything an evidence check gathered: both keys' last use and what the
/// target reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub new: KeyEvidence,
    pub old: Vec<KeyEvidence>,
    /// The target read back (`None`: the read failed).
    pub target: Option<Verification>,
    /// The AWS service name the target uses the key with (`ses` for Auth0's
    /// SES provider), as IAM reports it in `GetAccessKeyLastUsed`; `None`:
    /// any service counts.
    pub consumer_service: Option<String>,
}

/// Decide from evidence which key the target uses. Facts first (a key that
/// no longer exists, the target naming its key id), then use: the target's
/// service used only the new key since `since` (and nothing used the old
/// one), or only the old one (and nothing used the new one). Anything else
/// is unclear and keyturn keeps watching.
pub fn judge(since: Millis, e: &Evidence, now: Millis) -> Verdict {
    let v = |keep: Option<Keep>, reason: String| Verdict { keep, reason, at: now };
    let old_ids = e.old.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ");
    let any_old = e.old.iter().any(|k| k.exists);
    match (e.new.exists, any_old) {
        (false, false) => return v(None, format!("neither the new key {} nor the old key {old_ids} exists any more", e.new.id)),
        (false, true) => return v(Some(Keep::Old), format!("the new key {} no longer exists: only the old key {old_ids} is left", e.new.id)),
        (true, false) => return v(Some(Keep::New), format!("the old key {old_ids} no longer exists: only the new key {} is left", e.new.id)),
        (true, true) => {}
    }
    match &e.target {
        Some(Verification::HoldsNew) => return v(Some(Keep::New), format!("the target reports the new key id {}", e.new.id)),
        Some(Verification::HoldsOld) => return v(Some(Keep::Old), format!("the target reports the old key id {old_ids}")),
        _ => {}
    }
    fn used_after(k: &KeyEvidence, since: Millis) -> Option<&(Millis, String)> {
        k.last_used.as_ref().filter(|(at, _)| *at > since)
    }
    let by_consumer = |k: &KeyEvidence| used_after(k, since).is_some_and(|(_, svc)| e.consumer_service.as_deref().is_none_or(|c| c == svc));
    let svc = e.consumer_service.as_deref().unwrap_or("any service");
    let when = |k: &KeyEvidence| used_after(k, since).map(|(at, s)| format!("{} by {s}", crate::clock::fmt_ms(*at))).unwrap_or_default();
    let new_by = by_consumer(&e.new);
    let old_by: Vec<&KeyEvidence> = e.old.iter().filter(|k| by_consumer(k)).collect();
    let new_any = used_after(&e.new, since).is_some();
    let old_any = e.old.iter().any(|k| used_after(k, since).is_some());
    let since_s = crate::clock::fmt_ms(since);
    match (new_by, !old_by.is_empty()) {
        (true, false) if !old_any => {
            v(Some(Keep::New), format!("only the new key {} was used by {svc} since {since_s} (last used {})", e.new.id, when(&e.new)))
        }
        (false, true) if !new_any => {
            v(Some(Keep::Old), format!("only the old key {} was used by {svc} since {since_s} (last used {})", old_by[0].id, when(old_by[0])))
        }
        (true, true) => v(None, format!("both keys were used by {svc} since {since_s}")),
        (false, false) if !new_any && !old_any => v(None, format!("neither key was used since {since_s}; waiting for the target to use one")),
        _ => v(None, format!("keys were used by other services than {svc} since {since_s}; cannot tell which one the target holds")),
    }
}

/// Why a saga cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotResolvable(pub String);

/// Finish a saga that stopped with both keys in place, keeping `keep`.
/// The saga runs again (it still holds the credential's lock):
/// * keep new: the target holds the new key → `DisableOld` → `RetireOld`
///   (grace period, then the usage check, then delete) → `Succeeded`;
/// * keep old: → `DisableNew` (reactivating the old key if it was
///   deactivated) → `RetireNew` (grace, usage check, delete) → `Compensated`.
///
/// `gone`: the key to retire no longer exists (deleted by hand): the saga
/// closes at once. Uses of either key before now do not count against the
/// retirement (`usage_since`): they were the evidence.
pub fn resolve(saga: &Saga, keep: Keep, gone: bool, by: &str, clock: Clock) -> Result<Saga, NotResolvable> {
    if !saga.unresolved() {
        let why = if saga.person.manual {
            "its credential is made by hand: follow the notice's steps instead".to_string()
        } else if saga.status != Status::NeedsAttention {
            format!("it is {}, not needs_attention", saga.status.as_str())
        } else {
            "it does not have both keys in place (nothing to choose between)".to_string()
        };
        return Err(NotResolvable(format!("saga {} cannot be resolved: {why}", saga.saga_id)));
    }
    let mut s = saga.clone();
    let was = s.outcome.failure.take().map(|f| format!(" (it stopped with {} at {})", f.code, f.step)).unwrap_or_default();
    s.note(clock.now, "resolved", format!("{by}: keep the {} key{was}", keep.as_str()));
    s.status = Status::Running;
    s.outcome.closing = None;
    s.resolution.resolved = Some(keep);
    s.resolution.usage_since = Some(clock.now);
    match (keep, gone) {
        (Keep::New, false) => {
            s.effects.target = TargetState::HoldsNew;
            s.effects.switched_at.get_or_insert(clock.now);
            s.goto(Step::DisableOld, clock);
        }
        (Keep::New, true) => {
            s.effects.target = TargetState::HoldsNew;
            s.effects.switched_at.get_or_insert(clock.now);
            s.effects.old_deleted = true;
            s.outcome.compensations.push(format!("old key {} was already deleted", old_ids(&s)));
            if s.resolution.new_disabled {
                // The new key must be active again before the saga can end.
                s.goto(Step::DisableOld, clock);
            } else {
                s.close(Status::Succeeded, clock);
            }
        }
        (Keep::Old, false) => {
            s.effects.target = TargetState::HoldsOld;
            s.goto(Step::DisableNew, clock);
        }
        (Keep::Old, true) => {
            s.effects.target = TargetState::HoldsOld;
            s.effects.new_revoked = true;
            s.outcome.compensations.push(format!("new key {} was already deleted", s.keys.new_key.clone().unwrap_or_default()));
            if s.effects.old_disabled {
                // The old key must be active again before the saga can end.
                s.goto(Step::DisableNew, clock);
            } else {
                s.close(Status::Compensated, clock);
            }
        }
    }
    Ok(s)
}

/// Whether `keep` goes against what the evidence says (then `keyturn
/// resolve` refuses unless forced).
pub fn contradicts(keep: Keep, verdict: &Verdict) -> bool {
    verdict.keep == Some(keep.other())
}

/// The result of one evidence check of an unresolved saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub saga: Saga,
    /// The verdict became clear (or changed): send a notice.
    pub announce: bool,
    /// With `auto_resolve`: resolve now, keeping this key.
    pub resolve: Option<Keep>,
}

/// Record one evidence check: the verdict, the next check, whether to
/// announce it (once per clear verdict) and whether to resolve now.
pub fn observe(saga: &Saga, verdict: Verdict, policy: &Policy, now: Millis) -> Option<Observed> {
    if !saga.unresolved() {
        return None;
    }
    let mut s = saga.clone();
    let mut a = s.resolution.attention.clone().unwrap_or(Attention { since: s.updated_at, next_check: now, checks: 0, verdict: None, announced: None });
    let changed = a.verdict.as_ref().is_none_or(|v| v.keep != verdict.keep || v.reason != verdict.reason);
    a.checks += 1;
    a.next_check = now.saturating_add(policy.evidence_every);
    let announce = verdict.keep.is_some() && a.announced != verdict.keep;
    if announce {
        a.announced = verdict.keep;
    }
    let resolve = if policy.auto_resolve { verdict.keep } else { None };
    if changed {
        s.note(now, "evidence", verdict.reason.clone());
    } else {
        s.updated_at = now;
    }
    a.verdict = Some(verdict);
    s.resolution.attention = Some(a);
    Some(Observed { saga: s, announce, resolve })
}
