//! The state machine: `advance` and the transitions around it (attempts,
//! waits, a person's commands).

use super::*;

/// Retry delay for the attempt that just failed: exponential with full
/// jitter in [base/2, base], at least what the server asked for.
pub fn retry_delay(policy: &Policy, attempt: u32, jitter: f64, server_hint: Option<u64>) -> u64 {
    let exp = policy.retry_base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(policy.retry_cap);
    let jittered = capped / 2 + ((capped / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    jittered.max(server_hint.unwrap_or(0))
}

/// Mark the start of an attempt (taken together with the lease). For
/// `IssueNew` this records the intent to create a key *before* IAM is
/// called, which is what lets a crashed attempt's key be recognised as an
/// orphan on re-entry. `now` is when the attempt began (the lease's time).
pub fn begin_attempt(saga: &Saga, now: Millis) -> Saga {
    let mut s = saga.clone();
    s.run.step_attempts += 1;
    if s.step == Step::IssueNew {
        s.keys.issue_intents += 1;
        if s.keys.issue_intent_at.len() < HISTORY_LIMIT {
            s.keys.issue_intent_at.push(now);
        }
    }
    s
}

/// A step whose wait is not over yet: re-arm the same step with a fresh
/// token (so a duplicate of this message becomes stale) and keep waiting.
pub fn keep_waiting(saga: &Saga, clock: Clock) -> Transition {
    let mut s = saga.clone();
    s.run.token = format!("{:032x}", clock.token);
    s.updated_at = clock.now;
    Transition { saga: s, next: Next::Run }
}

/// The transition function. `saga` is the state the step ran against (after
/// [`begin_attempt`]); `outcome` what it produced.
pub fn advance(saga: &Saga, outcome: &Outcome, policy: &Policy, clock: Clock) -> Transition {
    let mut s = saga.clone();
    s.updated_at = clock.now;
    if s.status.is_terminal() {
        return Transition { saga: s, next: Next::Stop };
    }
    match outcome {
        Outcome::Done(effect) => {
            s.record(clock.now, "ok", None);
            on_done(&mut s, effect, policy, clock);
        }
        Outcome::Failed(err) => {
            let budget_left = match s.step {
                Step::ProveNew => clock.now < s.run.step_started_at.saturating_add(policy.propagation_timeout),
                // Cleanup must not give up quickly: secrets and locks are at stake.
                Step::Finalize | Step::RevokeNew | Step::RestoreOld => s.run.step_attempts < policy.max_attempts.saturating_mul(3),
                step if trust::long_budget(step) => s.run.step_attempts < policy.max_attempts.saturating_mul(3),
                _ => s.run.step_attempts < policy.max_attempts,
            };
            let time_up = s.awaits_person() && s.person.deadline.is_some_and(|d| clock.now >= d);
            if time_up {
                s.record(clock.now, "failed", Some(err));
                expire(&mut s, policy, clock);
            } else if err.retryable && budget_left {
                s.record(clock.now, "retry", Some(err));
                if err.may_have_applied && s.step == Step::PushToTarget {
                    s.effects.target = TargetState::Uncertain;
                }
                s.run.not_before = clock.now + retry_delay(policy, s.run.step_attempts, clock.jitter, err.retry_after);
                if let (true, Some(d)) = (s.awaits_person(), s.person.deadline) {
                    // A wait on a person ends at its deadline, retries or not.
                    s.run.not_before = s.run.not_before.min(d);
                }
                s.run.token = format!("{:032x}", clock.token);
            } else {
                s.record(clock.now, "failed", Some(err));
                on_failed(&mut s, err, policy, clock);
            }
        }
    }
    if s.step == Step::Finalize && s.outcome.closing.is_none() {
        // Defensive: every path into Finalize names its end state.
        s.outcome.closing = Some(Status::NeedsAttention);
    }
    // Only `prove_new` and `push_to_target` use the new secret: past them it
    // is erased at once, not kept (sealed) through a grace period of days.
    if s.keys.secret_stored && !s.step.needs_secret() && !s.status.is_terminal() {
        s.keys.secret_stored = false;
    }
    if s.status.is_terminal() {
        Transition { saga: s, next: Next::Stop }
    } else {
        Transition { saga: s, next: Next::Run }
    }
}

pub(super) fn on_done(s: &mut Saga, effect: &Effect, policy: &Policy, clock: Clock) {
    if trust::is_trust(s) && trust::on_done_trust(s, effect, policy, clock) {
        return;
    }
    match (s.step, effect) {
        (Step::Start, Effect::Started { keys, limit }) => on_started(s, keys, *limit, policy, clock),
        (Step::IssueNew, Effect::Issued { key_id }) => {
            s.keys.new_key = Some(key_id.clone());
            s.keys.secret_stored = true;
            s.goto(Step::ProveNew, clock);
        }
        (Step::ProveNew, Effect::Proven) => s.goto(Step::PushToTarget, clock),
        (Step::PushToTarget, Effect::Pushed) => {
            s.effects.target = TargetState::Accepted;
            s.effects.switched_at = Some(clock.now);
            s.goto(Step::VerifyTarget, clock);
        }
        (Step::VerifyTarget, Effect::Verified(v)) => on_verified(s, v, policy, clock),
        (Step::DisableOld, Effect::Disabled) => on_disabled_old(s, policy, clock),
        (Step::RetireOld, Effect::Retired) => {
            s.effects.old_deleted = true;
            if let Some(e) = s.exposure.as_mut().filter(|e| e.role == ExposedRole::Old) {
                e.deleted_at.get_or_insert(clock.now);
            }
            s.close(Status::Succeeded, clock);
        }
        (Step::RevokeNew, Effect::Revoked) => {
            s.effects.new_revoked = true;
            if let Some(e) = s.exposure.as_mut().filter(|e| e.role == ExposedRole::New) {
                e.deleted_at.get_or_insert(clock.now);
            }
            if let Some(id) = &s.keys.new_key {
                s.outcome.compensations.push(format!("deleted new key {id} (no consumer held it)"));
            }
            s.close(Status::Compensated, clock);
        }
        (Step::RestoreOld, Effect::Restored) => {
            s.effects.old_restored = true;
            s.effects.old_disabled = false;
            s.outcome.compensations.push(format!("reactivated old key {}", old_ids(s)));
            s.close(Status::RolledBack, clock);
        }
        (Step::Finalize, Effect::Finalized) => {
            s.status = s.outcome.closing.unwrap_or(Status::NeedsAttention);
            s.keys.secret_stored = false;
            s.ended(policy, clock.now);
        }
        (Step::DisableNew, Effect::DisabledNew) => on_disabled_new(s, policy, clock),
        (Step::RetireNew, Effect::RetiredNew) => {
            s.effects.new_revoked = true;
            if let Some(id) = &s.keys.new_key {
                s.outcome.compensations.push(format!("deactivated new key {id}, then deleted it after the grace period (the target kept the old key)"));
            }
            s.close(Status::Compensated, clock);
        }
        (Step::RestoreNew, Effect::RestoredNew) => on_restored_new(s, clock),
        (Step::AwaitNew | Step::AwaitRetire | Step::AwaitTrust | Step::AwaitSignIn, Effect::Prompted)
            if s.person.deadline.is_none_or(|d| clock.now < d) =>
        {
            // Stay, and come back for the next reminder (or the deadline).
            s.person.prompts += 1;
            s.run.step_attempts = 0;
            let deadline = s.person.deadline.unwrap_or(u64::MAX);
            s.run.not_before = clock.now.saturating_add(policy.reminder_every).min(deadline);
            s.run.token = format!("{:032x}", clock.token);
        }
        // A notice sent at or after the deadline changes nothing: time is up.
        (Step::AwaitNew | Step::AwaitRetire | Step::AwaitTrust | Step::AwaitSignIn, Effect::Prompted | Effect::Expired) => expire(s, policy, clock),
        (step, effect) => unexpected(s, step, effect, policy, clock),
    }
}

/// `Start` listed the credential's keys; `limit` is how many may exist at
/// once (the source's number), so a new one needs `keys.len() < limit`.
fn on_started(s: &mut Saga, keys: &[KeyRef], limit: usize, policy: &Policy, clock: Clock) {
    if trust::is_trust(s) {
        trust::on_started_trust(s, keys, clock);
        return;
    }
    if s.person.manual {
        // Nothing to list: the old credential is the one the person
        // named when asking for the rotation (or names when providing).
        s.await_person(Step::AwaitNew, policy, clock);
        return;
    }
    s.keys.old_keys = keys.to_vec();
    if keys.len() >= limit {
        s.outcome.failure = Some(Failure {
            step: Step::Start,
            code: "TooManyKeys".into(),
            message: format!(
                "the credential already has {} keys that keyturn does not know ({}); a new key cannot be created",
                keys.len(),
                keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
            operator_fixable: true,
        });
        s.close(Status::Refused, clock);
    } else {
        s.goto(Step::IssueNew, clock);
    }
}

/// What reading the target back after the push showed.
fn on_verified(s: &mut Saga, v: &Verification, policy: &Policy, clock: Clock) {
    match v {
        Verification::HoldsNew => {
            s.effects.target = TargetState::HoldsNew;
            s.effects.switched_at.get_or_insert(clock.now);
            after_switch(s, policy, clock);
        }
        Verification::Opaque if s.effects.target == TargetState::Accepted => {
            // The push was answered 2xx and the provider is healthy:
            // the target does not reveal ids, so this is as far as
            // verification can go.
            s.effects.target = TargetState::HoldsNew;
            after_switch(s, policy, clock);
        }
        Verification::Opaque => {
            s.outcome.failure = Some(Failure {
                step: Step::VerifyTarget,
                code: "TargetStateUnknown".into(),
                message: "the push to the target did not get a clear answer and the target does not reveal which key it holds".into(),
                operator_fixable: true,
            });
            s.close(Status::NeedsAttention, clock);
        }
        Verification::HoldsOld => {
            s.effects.target = TargetState::HoldsOld;
            s.outcome.failure.get_or_insert(Failure {
                step: Step::VerifyTarget,
                code: "TargetKeptOldKey".into(),
                message: "the target still holds the old key after the push".into(),
                operator_fixable: false,
            });
            s.give_up(policy, clock);
        }
        Verification::Unhealthy(reason) => {
            s.outcome.failure =
                Some(Failure { step: Step::VerifyTarget, code: "TargetUnhealthy".into(), message: reason.clone(), operator_fixable: true });
            s.close(Status::NeedsAttention, clock);
        }
    }
}

/// The old key is deactivated: wait the grace period before deleting it,
/// unless it is gone already or an exposed key is kept inactive.
fn on_disabled_old(s: &mut Saga, policy: &Policy, clock: Clock) {
    // A keep-new resolution after a keep-old one reactivated the new key first.
    s.resolution.new_disabled = false;
    let mut keep_exposed = false;
    if let Some(e) = s.exposure.as_mut().filter(|e| e.role == ExposedRole::Old) {
        e.inactive_at.get_or_insert(clock.now);
        keep_exposed = e.keep_inactive;
    }
    if keep_exposed && !s.effects.old_deleted {
        // Kept inactive for forensics, as the policy says: done.
        s.effects.old_disabled = true;
        s.close(Status::Succeeded, clock);
    } else if s.effects.old_deleted {
        // The old key was already gone: nothing to wait for.
        s.close(Status::Succeeded, clock);
    } else {
        s.effects.old_disabled = true;
        s.goto(Step::RetireOld, clock);
        s.run.grace_until = Some(clock.now + policy.grace_period);
    }
}

/// A keep-old resolution deactivated the new key (and reactivated the old).
fn on_disabled_new(s: &mut Saga, policy: &Policy, clock: Clock) {
    if s.effects.old_disabled {
        s.effects.old_disabled = false;
        s.effects.old_restored = true;
        s.outcome.compensations.push(format!("reactivated old key {}", old_ids(s)));
    }
    if s.effects.new_revoked {
        // The new key was already gone: nothing to wait for.
        s.close(Status::Compensated, clock);
    } else {
        s.resolution.new_disabled = true;
        s.goto(Step::RetireNew, clock);
        s.run.grace_until = Some(clock.now + policy.grace_period);
    }
}

/// An operator rolled a keep-old resolution back: both keys again.
fn on_restored_new(s: &mut Saga, clock: Clock) {
    s.resolution.new_disabled = false;
    s.resolution.resolved = None;
    s.effects.target = TargetState::Uncertain;
    if let Some(id) = &s.keys.new_key {
        s.outcome.compensations.push(format!("reactivated new key {id} (rollback of the keep-old resolution)"));
    }
    s.outcome.failure = Some(Failure {
        step: Step::RetireNew,
        code: "ResolutionRolledBack".into(),
        message: "an operator reactivated the new key during the grace period of the keep-old resolution".into(),
        operator_fixable: true,
    });
    s.close(Status::NeedsAttention, clock);
}

/// A connector returned an effect for another step: a bug. Stop safely
/// rather than guess.
fn unexpected(s: &mut Saga, step: Step, effect: &Effect, policy: &Policy, clock: Clock) {
    s.outcome.failure = Some(Failure {
        step,
        code: "InternalError".into(),
        message: format!("step {step} produced unexpected effect {effect:?}"),
        operator_fixable: false,
    });
    if s.may_revoke_new() && step != Step::Finalize {
        s.give_up(policy, clock);
    } else {
        s.close(Status::NeedsAttention, clock);
    }
}

/// A wait on a person reached its deadline.
pub(super) fn expire(s: &mut Saga, policy: &Policy, clock: Clock) {
    if matches!(s.step, Step::AwaitTrust | Step::AwaitSignIn) {
        trust::expire_trust(s, policy, clock);
    } else if s.step == Step::AwaitNew {
        s.outcome.failure = Some(Failure {
            step: Step::AwaitNew,
            code: "DeadlinePassed".into(),
            message: format!("no new credential was handed over within {}; keyturn stopped waiting", human_ms(policy.person_deadline)),
            operator_fixable: true,
        });
        s.compensate(clock);
    } else {
        s.outcome.failure = Some(Failure {
            step: Step::AwaitRetire,
            code: "OldNotConfirmedDeleted".into(),
            message: format!("the target uses the new credential, but nobody confirmed deleting the old one within {}", human_ms(policy.person_deadline)),
            operator_fixable: true,
        });
        s.close(Status::NeedsAttention, clock);
    }
}

pub(super) fn after_switch(s: &mut Saga, policy: &Policy, clock: Clock) {
    if s.person.manual {
        // Even with no old token on record, the one the target used before
        // is still valid until a person deletes it.
        s.await_person(Step::AwaitRetire, policy, clock);
    } else if policy.old_dies_at_issue && s.outcome.failure.as_ref().is_some_and(|f| f.step == Step::ProveNew) {
        // Stored although never proven (the only credential left): a
        // person checks it works.
        s.close(Status::NeedsAttention, clock);
    } else if s.keys.old_keys.is_empty() {
        s.close(Status::Succeeded, clock);
    } else {
        s.goto(Step::DisableOld, clock);
    }
}

pub(super) fn old_ids(s: &Saga) -> String {
    s.keys.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
}

/// Whether a step message belongs to the saga's current step. Duplicates,
/// redeliveries and messages of an earlier attempt carry another token and
/// are acknowledged without effect.
pub fn accepts(saga: &Saga, step: Step, token: &str) -> bool {
    !saga.status.is_terminal() && saga.step == step && saga.run.token == token
}

/// What a wait step must do when its message comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// First notice: tell the person what to do (`rotation.action_required`).
    Ask,
    /// A later notice (`rotation.reminder`).
    Remind,
    /// The deadline passed: send nothing, report [`Effect::Expired`].
    Expired,
}

/// Decide what a wait on a person does now.
pub fn prompt(saga: &Saga, now: Millis) -> Prompt {
    match saga.person.deadline {
        Some(d) if now >= d => Prompt::Expired,
        _ if saga.person.prompts == 0 => Prompt::Ask,
        _ => Prompt::Remind,
    }
}

/// Why a person's command (`provide`, `confirm`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotWaiting(pub String);

pub(super) fn waiting_for(saga: &Saga, step: Step, what: &str) -> Result<(), NotWaiting> {
    if saga.status.is_terminal() {
        return Err(NotWaiting(format!("saga {} already ended ({}); nothing is waiting for {what}", saga.saga_id, saga.status.as_str())));
    }
    if !saga.person.manual && saga.trust.is_none() {
        return Err(NotWaiting(format!("saga {} rotates a credential keyturn creates and deletes itself; it never waits for {what}", saga.saga_id)));
    }
    if saga.step != step {
        return Err(NotWaiting(format!("saga {} is at step {}, not waiting for {what} (that is step {step})", saga.saga_id, saga.step)));
    }
    Ok(())
}

/// A person handed over the new credential (sealed and stored by the engine
/// in the same write): go and push it to the target. `new_id` names it for
/// people (it is not secret); `old`, when given, is the old credential as
/// the person identified it.
pub fn provide(saga: &Saga, new_id: String, old: Option<KeyRef>, clock: Clock) -> Result<Saga, NotWaiting> {
    waiting_for(saga, Step::AwaitNew, "a new credential")?;
    let mut s = saga.clone();
    s.note(clock.now, "provided", format!("a person handed over the new credential ({new_id})"));
    s.keys.new_key = Some(new_id);
    if let Some(old) = old {
        s.keys.old_keys = vec![old];
    }
    s.keys.secret_stored = true;
    // No proof step: the target's own test (Entra's Test connection) is the
    // proof, and it runs before anything is saved.
    s.goto(Step::PushToTarget, clock);
    Ok(s)
}

/// A person's `keyturn confirm` (with `--broken`: sign-in is broken): for
/// a saga with [`Saga::trust`] see [`confirm_trust`]; otherwise the old
/// credential is deleted ([`confirm_retired`]), and `broken` is refused.
pub fn confirm(saga: &Saga, broken: bool, clock: Clock) -> Result<Saga, NotWaiting> {
    if saga.trust.is_some() {
        return confirm_trust(saga, broken, clock);
    }
    if broken {
        return Err(NotWaiting(format!("saga {} never switches sign-in itself; `--broken` answers only a sign-in check", saga.saga_id)));
    }
    confirm_retired(saga, clock)
}

/// A person confirmed the old credential is deleted: the rotation is done.
pub fn confirm_retired(saga: &Saga, clock: Clock) -> Result<Saga, NotWaiting> {
    waiting_for(saga, Step::AwaitRetire, "the old credential's deletion")?;
    let mut s = saga.clone();
    s.note(clock.now, "confirmed", "a person confirmed the old credential is deleted".into());
    s.effects.old_deleted = true;
    s.close(Status::Succeeded, clock);
    Ok(s)
}
