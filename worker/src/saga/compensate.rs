//! Failure edges: retry, compensate (the compensation rule), roll forward
//! or stop; and an operator's rollback.

use super::*;

pub(super) fn on_failed(s: &mut Saga, err: &StepError, policy: &Policy, clock: Clock) {
    if trust::is_trust(s) && trust::on_failed_trust(s, err, clock) {
        return;
    }
    match s.step {
        Step::Start => {
            s.fail(err);
            s.close(Status::Refused, clock);
        }
        Step::IssueNew if err.code == UNKNOWN_KEY => {
            // Someone else's key is in the way: never delete it, and do not
            // call it compensated either — a person must decide.
            s.fail(err);
            s.close(Status::NeedsAttention, clock);
        }
        Step::IssueNew | Step::ProveNew => {
            s.fail(err);
            s.compensate(clock);
        }
        Step::PushToTarget => {
            s.fail(err);
            if err.may_have_applied || s.target == TargetState::Uncertain {
                // We cannot tell whether the target took it: read it back.
                s.target = TargetState::Uncertain;
                s.goto(Step::VerifyTarget, clock);
            } else {
                s.target = TargetState::Rejected;
                s.compensate(clock);
            }
        }
        Step::VerifyTarget => {
            s.fail(err);
            if s.may_revoke_new() {
                s.compensate(clock);
            } else {
                s.close(Status::NeedsAttention, clock);
            }
        }
        Step::AwaitNew => {
            // Could not even tell the person (e.g. SNS down for good).
            s.fail(err);
            s.compensate(clock);
        }
        Step::DisableOld
        | Step::RetireOld
        | Step::RestoreOld
        | Step::AwaitRetire
        | Step::DisableNew
        | Step::RetireNew
        | Step::RestoreNew
        | Step::AwaitTrust
        | Step::SwitchNew
        | Step::AwaitSignIn
        | Step::SwitchBack
        | Step::RemoveOld => {
            // The target holds the new key: never undo that. Stop with both
            // keys in place for a person.
            s.fail(err);
            s.close(Status::NeedsAttention, clock);
        }
        Step::RevokeNew => {
            s.failure.get_or_insert(Failure {
                step: Step::RevokeNew,
                code: err.code.clone(),
                message: err.message.clone(),
                operator_fixable: err.operator_fixable,
            });
            s.compensations.push(format!("could not delete new key: {}", err.code));
            s.close(Status::NeedsAttention, clock);
        }
        Step::Finalize => {
            // Cleanup (erase the secret, release the lock, notify) failed for
            // good. End the saga, but as needing a person: the lock may still
            // be held and the encrypted secret may still be stored.
            s.failure.get_or_insert(Failure {
                step: Step::Finalize,
                code: err.code.clone(),
                message: err.message.clone(),
                operator_fixable: err.operator_fixable,
            });
            s.compensations.push(format!("cleanup incomplete ({}): secret erasure or lock release may not have happened", err.code));
            s.status = Status::NeedsAttention;
            s.ended(policy, clock.now);
        }
    }
}

/// Why an operator's rollback request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RollbackRefused(pub String);

/// Operator rollback during the grace period: reactivate the old key. Only
/// possible while the old key is disabled and not yet deleted.
pub fn request_rollback(saga: &Saga, clock: Clock) -> Result<Saga, RollbackRefused> {
    if saga.status.is_terminal() {
        return Err(RollbackRefused(format!("saga {} already ended ({})", saga.saga_id, saga.status.as_str())));
    }
    if saga.step == Step::RetireNew && saga.new_disabled && !saga.new_revoked {
        let mut s = saga.clone();
        s.note(clock.now, "rollback_requested", "operator asked to reactivate the new key".into());
        s.goto(Step::RestoreNew, clock);
        return Ok(s);
    }
    if saga.trust.is_some() {
        return Err(RollbackRefused(format!(
            "saga {} switches the source itself: while it waits for a sign-in check, `keyturn confirm {} --broken` switches back to the old credential",
            saga.saga_id, saga.saga_id
        )));
    }
    if let Some(e) = saga.exposure.as_ref().filter(|e| e.role == ExposedRole::Old) {
        return Err(RollbackRefused(format!("saga {} replaces key {}, which AWS reported exposed; it is never reactivated", saga.saga_id, e.key_id)));
    }
    if saga.step != Step::RetireOld || !saga.old_disabled || saga.old_deleted {
        return Err(RollbackRefused(format!(
            "saga {} is at step {}; rollback is possible only during the grace period, after the old key was deactivated and before it is deleted",
            saga.saga_id, saga.step
        )));
    }
    let mut s = saga.clone();
    s.note(clock.now, "rollback_requested", "operator asked to reactivate the old key".into());
    s.goto(Step::RestoreOld, clock);
    Ok(s)
}
