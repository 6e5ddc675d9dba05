//! Failure edges: retry, compensate (the compensation rule), roll forward
//! or stop; and an operator's rollback.

use super::*;

/// The error code of a source whose `issue` may have replaced the old
/// credential (which then no longer works) while the new one is unknown to
/// keyturn: the saga stops for a person, never "compensated".
pub const OLD_GONE: &str = "OldCredentialGone";

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
        Step::IssueNew if policy.old_dies_at_issue && (err.code == OLD_GONE || err.may_have_applied || s.keys.issue_intents > 1) => {
            issue_lost(s, err, clock)
        }
        Step::IssueNew | Step::ProveNew => {
            s.fail(err);
            s.give_up(policy, clock);
        }
        Step::PushToTarget if policy.old_dies_at_issue && !err.may_have_applied && s.effects.target != TargetState::Uncertain => {
            // Refused: the new credential is the only one; keep it and write again.
            s.effects.target = TargetState::Rejected;
            s.give_up(policy, clock);
        }
        Step::PushToTarget => {
            s.fail(err);
            if err.may_have_applied || s.effects.target == TargetState::Uncertain {
                // We cannot tell whether the target took it: read it back.
                s.effects.target = TargetState::Uncertain;
                s.goto(Step::VerifyTarget, clock);
            } else {
                s.effects.target = TargetState::Rejected;
                s.give_up(policy, clock);
            }
        }
        Step::VerifyTarget => {
            s.fail(err);
            if s.may_revoke_new() {
                s.give_up(policy, clock);
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
            s.outcome.failure.get_or_insert(Failure {
                step: Step::RevokeNew,
                code: err.code.clone(),
                message: err.message.clone(),
                operator_fixable: err.operator_fixable,
            });
            s.outcome.compensations.push(format!("could not delete new key: {}", err.code));
            s.close(Status::NeedsAttention, clock);
        }
        Step::Finalize => {
            // Cleanup (erase the secret, release the lock, notify) failed for
            // good. End the saga, but as needing a person: the lock may still
            // be held and the encrypted secret may still be stored.
            s.outcome.failure.get_or_insert(Failure {
                step: Step::Finalize,
                code: err.code.clone(),
                message: err.message.clone(),
                operator_fixable: err.operator_fixable,
            });
            s.outcome.compensations.push(format!("cleanup incomplete ({}): secret erasure or lock release may not have happened", err.code));
            s.status = Status::NeedsAttention;
            s.ended(policy, clock.now);
        }
    }
}

/// An issue of a source whose old credential dies at issue may have
/// replaced it while keyturn never saw the new one: nothing to undo, a
/// person checks.
fn issue_lost(s: &mut Saga, err: &StepError, clock: Clock) {
    s.fail(err);
    if err.code != OLD_GONE {
        if let Some(f) = s.outcome.failure.as_mut() {
            f.message.push_str(
                "; an attempt may have replaced the credential without keyturn receiving the new one: check that the credential keyturn reads still works, and if not, make a new one by hand and store it there",
            );
            f.operator_fixable = true;
        }
    }
    s.close(Status::NeedsAttention, clock);
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
    if saga.step == Step::RetireNew && saga.resolution.new_disabled && !saga.effects.new_revoked {
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
    if saga.step != Step::RetireOld || !saga.effects.old_disabled || saga.effects.old_deleted {
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
