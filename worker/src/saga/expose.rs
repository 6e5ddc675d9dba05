//! An exposed key taking over a running saga.

use super::*;

/// Why a running saga cannot take over an exposed key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotExposable(pub String);

/// AWS reported `key_id`, a key of this saga's credential, exposed: take the
/// running saga over safely. Answers the saga to commit (the engine then
/// sends a message for its step, to run now), or `None` when the saga
/// already handles this very exposure (a repeated event).
///
/// * The old key is exposed: no grace period and no usage gate for it. Before
///   the switch the saga goes on as it was (it is replacing that key anyway);
///   at `disable_old` or in the grace period of `retire_old` it deactivates
///   and deletes it now (or, with `keep_inactive`, ends keeping it inactive);
///   a rollback in progress is not carried out (it would reactivate the exposed key).
/// * The new key is exposed: while no consumer can hold it (before the target
///   took it) it is deleted at once (`revoke_new`); otherwise the saga
///   finishes without waiting out the old key's grace period. Either way a
///   fresh rotation follows ([`Saga::needs_follow_up`]).
pub fn expose(saga: &Saga, key_id: &str, seen_at: Millis, event: &str, keep_inactive: bool, clock: Clock) -> Result<Option<Saga>, NotExposable> {
    if saga.status.is_terminal() {
        return Err(NotExposable(format!("saga {} already ended ({})", saga.saga_id, saga.status.as_str())));
    }
    if saga.person.manual {
        return Err(NotExposable(format!("saga {} rotates a credential made by a person, not an access key", saga.saga_id)));
    }
    if saga.exposure.as_ref().is_some_and(|e| e.key_id == key_id) {
        return Ok(None);
    }
    let role = if saga.keys.new_key.as_deref() == Some(key_id) {
        ExposedRole::New
    } else if saga.keys.old_keys.iter().any(|k| k.id == key_id) || (saga.step == Step::Start && saga.keys.old_keys.is_empty()) {
        ExposedRole::Old
    } else {
        return Err(NotExposable(format!("key {key_id} is neither the old nor the new key of saga {}", saga.saga_id)));
    };
    let mut s = saga.clone();
    s.note(clock.now, "exposed", format!("AWS reported key {key_id} exposed ({event}); emergency takeover"));
    let mut e = Exposure {
        key_id: key_id.to_string(),
        role,
        seen_at,
        event: event.to_string(),
        keep_inactive,
        inactive_at: None,
        deleted_at: None,
        follow_up: role == ExposedRole::New,
    };
    match role {
        ExposedRole::Old => {
            if s.effects.old_disabled {
                e.inactive_at = Some(clock.now);
            }
            s.exposure = Some(e);
            match s.step {
                Step::RetireOld | Step::RestoreOld if keep_inactive && s.effects.old_disabled => s.close(Status::Succeeded, clock),
                Step::RetireOld | Step::RestoreOld => {
                    s.run.grace_until = Some(clock.now);
                    s.goto(Step::RetireOld, clock);
                }
                _ => s.rerun_now(clock),
            }
        }
        ExposedRole::New => {
            let before_target = matches!(s.step, Step::IssueNew | Step::ProveNew | Step::PushToTarget) && s.effects.target == TargetState::Untouched;
            s.exposure = Some(e);
            if before_target && s.may_revoke_new() && !s.effects.new_revoked {
                s.outcome.failure = Some(Failure {
                    step: s.step,
                    code: "NewKeyExposed".into(),
                    message: format!("AWS reported the new key {key_id} exposed before the target received it; keyturn deleted it"),
                    operator_fixable: false,
                });
                s.compensate(clock);
            } else if s.step == Step::RetireOld {
                s.run.grace_until = Some(clock.now);
                s.goto(Step::RetireOld, clock);
            } else {
                s.rerun_now(clock);
            }
        }
    }
    if s.keys.secret_stored && !s.step.needs_secret() {
        // Left the steps that use the new secret: it is erased in this commit.
        s.keys.secret_stored = false;
    }
    Ok(Some(s))
}
