//! A saga whose target a person makes trust the new credential before the
//! source switches to it ([`Saga::trust`]): an Entra SAML signing
//! certificate, which IAM Identity Center must be given by hand.
//!
//! ```text
//! Start ─► IssueNew ─► AwaitTrust ──confirm──► SwitchNew ─► AwaitSignIn ──confirm──► RemoveOld ─► Finalize(Succeeded)
//!             │ failed     │ deadline            │ failed       │ confirm --broken /    │ failed
//!             ▼            ▼                     ▼              │ deadline              ▼
//!        RevokeNew ◄───────┘           Finalize(NeedsAttention) ▼               Finalize(NeedsAttention)
//!             ▼                                             SwitchBack ─► Finalize(RolledBack)
//!    Finalize(Compensated)                                       │ failed
//!                                                                ▼
//!                                                      Finalize(NeedsAttention)
//! ```
//!
//! The new credential is removed only while the person has not said the
//! target trusts it (the compensation rule: [`TargetState`] stays
//! `Untouched` until their confirmation, which makes it `HoldsNew`). A
//! failed switch is retried with the cleanup budget and never undone by
//! switching back: after the person's confirmation the target may trust
//! only the new credential.

use super::*;

/// Whether the saga has the trust shape.
pub(super) fn is_trust(s: &Saga) -> bool {
    s.trust.is_some()
}

/// `Start` listed the source's credentials: every one of them is kept (the
/// source may hold several, unused ones too); the one in use is the old one.
pub(super) fn on_started_trust(s: &mut Saga, keys: &[KeyRef], clock: Clock) {
    s.keys.old_keys = keys.to_vec();
    if let Some(t) = s.trust.as_mut() {
        t.old = keys.iter().find(|k| k.active).map(|k| k.id.clone());
    }
    s.goto(Step::IssueNew, clock);
}

/// The done edges of the trust steps; `false` when `effect` is not one of them.
pub(super) fn on_done_trust(s: &mut Saga, effect: &Effect, policy: &Policy, clock: Clock) -> bool {
    match (s.step, effect) {
        (Step::IssueNew, Effect::Issued { key_id }) => {
            s.keys.new_key = Some(key_id.clone());
            // The engine seals what `issue` returned; nothing ahead needs it.
            s.keys.secret_stored = true;
            s.await_person(Step::AwaitTrust, policy, clock);
        }
        (Step::SwitchNew, Effect::Switched) => {
            set_in_use(s, InUse::New);
            s.effects.switched_at = Some(clock.now);
            s.await_person(Step::AwaitSignIn, policy, clock);
        }
        (Step::SwitchBack, Effect::Switched) => {
            set_in_use(s, InUse::Old);
            s.effects.old_restored = true;
            let old = s.trust.as_ref().and_then(|t| t.old.clone()).unwrap_or_default();
            s.outcome.compensations.push(format!("switched back to the old credential {old}"));
            s.close(Status::RolledBack, clock);
        }
        (Step::RemoveOld, Effect::Retired) => {
            s.effects.old_deleted = true;
            s.close(Status::Succeeded, clock);
        }
        _ => return false,
    }
    true
}

fn set_in_use(s: &mut Saga, in_use: InUse) {
    if let Some(t) = s.trust.as_mut() {
        t.in_use = in_use;
    }
}

/// The failure edges of the trust steps (`true` when handled).
pub(super) fn on_failed_trust(s: &mut Saga, err: &StepError, clock: Clock) -> bool {
    match s.step {
        Step::AwaitTrust => {
            // Could not even ask the person: nothing is trusted, nothing switched.
            s.fail(err);
            s.compensate(clock);
        }
        Step::SwitchNew | Step::SwitchBack => {
            s.fail(err);
            if err.may_have_applied {
                set_in_use(s, InUse::Unknown);
            }
            s.close(Status::NeedsAttention, clock);
        }
        Step::AwaitSignIn | Step::RemoveOld => {
            // The source uses the new credential, which the person said the
            // target trusts: leave it so, for a person.
            s.fail(err);
            s.close(Status::NeedsAttention, clock);
        }
        _ => return false,
    }
    true
}

/// A trust wait reached its deadline.
pub(super) fn expire_trust(s: &mut Saga, policy: &Policy, clock: Clock) {
    let wait = human_ms(policy.person_deadline);
    if s.step == Step::AwaitTrust {
        s.outcome.failure = Some(Failure {
            step: Step::AwaitTrust,
            code: "TrustNotConfirmed".into(),
            message: format!("nobody confirmed within {wait} that the target trusts the new credential; keyturn removes it and keeps the old one in use"),
            operator_fixable: true,
        });
        s.compensate(clock);
    } else {
        s.outcome.failure = Some(Failure {
            step: Step::AwaitSignIn,
            code: "SignInNotConfirmed".into(),
            message: format!("nobody confirmed within {wait} that sign-in works with the new credential; keyturn switches back to the old one"),
            operator_fixable: true,
        });
        switch_back(s, clock);
    }
}

fn switch_back(s: &mut Saga, clock: Clock) {
    s.status = Status::Compensating;
    if s.trust.as_ref().is_some_and(|t| t.old.is_some()) {
        s.goto(Step::SwitchBack, clock);
    } else {
        // No credential was in use before: nothing to switch back to.
        s.close(Status::NeedsAttention, clock);
    }
}

/// Whether a trust step's failures get the cleanup budget (switching is
/// what keeps sign-in on a credential both sides trust).
pub(super) fn long_budget(step: Step) -> bool {
    matches!(step, Step::SwitchNew | Step::SwitchBack | Step::RemoveOld)
}

/// A person answered a trust wait: at `AwaitTrust` that the target trusts
/// the new credential (`broken` is refused there: nothing was switched);
/// at `AwaitSignIn` that sign-in works, or with `broken` that it does not.
pub fn confirm_trust(saga: &Saga, broken: bool, clock: Clock) -> Result<Saga, NotWaiting> {
    let mut s = saga.clone();
    match (saga.step, broken) {
        (Step::AwaitTrust, false) => {
            waiting_for(saga, Step::AwaitTrust, "the target to trust the new credential")?;
            s.note(clock.now, "confirmed", "a person confirmed the target trusts the new credential".into());
            if let Some(t) = s.trust.as_mut() {
                t.trusted = true;
            }
            // From here the target may trust only the new credential: it is
            // never removed automatically again.
            s.effects.target = TargetState::HoldsNew;
            s.goto(Step::SwitchNew, clock);
        }
        (Step::AwaitTrust, true) => {
            return Err(NotWaiting(format!(
                "saga {} has not switched to the new credential yet (it waits for the target to trust it), so sign-in cannot be broken by it",
                saga.saga_id
            )))
        }
        (_, false) => {
            waiting_for(saga, Step::AwaitSignIn, "a confirmation that sign-in works")?;
            s.note(clock.now, "confirmed", "a person confirmed sign-in works with the new credential".into());
            if let Some(t) = s.trust.as_mut() {
                t.works = true;
            }
            s.goto(Step::RemoveOld, clock);
        }
        (_, true) => {
            waiting_for(saga, Step::AwaitSignIn, "a report that sign-in is broken")?;
            s.note(clock.now, "broken", "a person reported sign-in broken with the new credential".into());
            s.outcome.failure = Some(Failure {
                step: Step::AwaitSignIn,
                code: "SignInBroken".into(),
                message: "a person reported that sign-in does not work with the new credential; keyturn switches back to the old one".into(),
                operator_fixable: true,
            });
            switch_back(&mut s, clock);
        }
    }
    Ok(s)
}
