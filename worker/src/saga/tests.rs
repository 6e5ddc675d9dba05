//! Exhaustive and property tests of the pure saga machine.

use super::*;
use proptest::prelude::*;

fn clock(now: Millis, n: u128) -> Clock {
    Clock { now, jitter: 0.5, token: n }
}

fn policy() -> Policy {
    Policy {
        max_attempts: 3,
        retry_base: 1_000,
        retry_cap: 8_000,
        propagation_timeout: 20_000,
        grace_period: 0,
        reminder_every: 10_000,
        person_deadline: 35_000,
        evidence_every: 60_000,
        auto_resolve: false,
        keep_exposed_inactive: false,
        old_dies_at_issue: false,
    }
}

fn key(id: &str) -> KeyRef {
    KeyRef { id: id.into(), active: true, created_at: Some(1) }
}

fn new_saga() -> Saga {
    Saga::new("s1".into(), "r1".into(), "iam_access_key:u".into(), "manual".into(), 0, 1)
}

fn err(retryable: bool, may_have_applied: bool) -> StepError {
    StepError {
        code: if retryable { "ServiceFailure".into() } else { "insufficient_scope".into() },
        message: "m".into(),
        retryable,
        may_have_applied,
        operator_fixable: !retryable,
        retry_after: None,
    }
}

/// Run one step: begin the attempt, then advance with `outcome`.
fn run(s: &Saga, outcome: Outcome, t: &mut u128) -> Transition {
    *t += 1;
    let now = s.run.not_before.max(s.updated_at) + 1;
    advance(&begin_attempt(s, now), &outcome, &policy(), clock(now, *t))
}

fn done(e: Effect) -> Outcome {
    Outcome::Done(e)
}

fn happy_effect(step: Step, new_id: &str) -> Effect {
    match step {
        Step::Start => Effect::Started { keys: vec![key("OLD")], limit: 2 },
        Step::IssueNew => Effect::Issued { key_id: new_id.into() },
        Step::ProveNew => Effect::Proven,
        Step::PushToTarget => Effect::Pushed,
        Step::VerifyTarget => Effect::Verified(Verification::HoldsNew),
        Step::DisableOld => Effect::Disabled,
        Step::RetireOld => Effect::Retired,
        Step::RevokeNew => Effect::Revoked,
        Step::RestoreOld => Effect::Restored,
        Step::Finalize => Effect::Finalized,
        Step::AwaitNew | Step::AwaitRetire => Effect::Prompted,
        Step::DisableNew => Effect::DisabledNew,
        Step::RetireNew => Effect::RetiredNew,
        Step::RestoreNew => Effect::RestoredNew,
        Step::AwaitTrust | Step::AwaitSignIn => Effect::Prompted,
        Step::SwitchNew | Step::SwitchBack => Effect::Switched,
        Step::RemoveOld => Effect::Retired,
    }
}

fn trust_saga() -> Saga {
    let mut s = Saga::new("t1".into(), "saml".into(), "entra_saml_certificate:t:sp".into(), "manual".into(), 0, 1);
    s.trust = Some(Trust::default());
    s
}

/// A trust saga driven to `step` the happy way, and its token counter.
fn trust_at(step: Step) -> (Saga, u128) {
    let mut t = 100;
    let mut s = trust_saga();
    s = run(&s, done(Effect::Started { keys: vec![key("OLD"), KeyRef { id: "SPARE".into(), active: false, created_at: Some(1) }], limit: 2 }), &mut t)
        .saga;
    while s.step != step {
        assert!(!s.status.is_terminal(), "never reached {step}: {s:?}");
        s = match s.step {
            Step::AwaitTrust | Step::AwaitSignIn => confirm(&s, false, clock(s.updated_at + 1, t)).unwrap(),
            other => run(&s, done(happy_effect(other, "NEW")), &mut t).saga,
        };
        t += 1;
    }
    (s, t)
}

#[test]
fn a_trust_saga_waits_for_the_person_twice_and_switches_in_between() {
    let (s, mut t) = trust_at(Step::IssueNew);
    let tr = s.trust.clone().unwrap();
    assert_eq!(tr.old.as_deref(), Some("OLD"), "the credential in use is the old one");
    assert_eq!(s.keys.old_keys.len(), 2, "two certificates are no refusal: an unused one is kept");
    let s = run(&s, done(Effect::Issued { key_id: "NEW".into() }), &mut t).saga;
    assert_eq!(s.step, Step::AwaitTrust);
    assert!(s.awaits_person() && s.person.deadline.is_some());
    assert_eq!(s.effects.target, TargetState::Untouched, "nothing trusts the new one yet");
    let s = run(&s, done(Effect::Prompted), &mut t).saga;
    assert_eq!((s.step, s.person.prompts), (Step::AwaitTrust, 1));
    let s = confirm(&s, false, clock(s.updated_at + 1, 7)).unwrap();
    assert_eq!(s.step, Step::SwitchNew);
    assert!(s.trust.as_ref().unwrap().trusted);
    assert_eq!(s.effects.target, TargetState::HoldsNew, "the person's word: the new one may be the only one trusted");
    let s = run(&s, done(Effect::Switched), &mut t).saga;
    assert_eq!(s.step, Step::AwaitSignIn);
    assert_eq!(s.trust.as_ref().unwrap().in_use, InUse::New);
    assert!(s.effects.switched_at.is_some() && s.person.deadline.is_some());
    let s = confirm(&s, false, clock(s.updated_at + 1, 8)).unwrap();
    assert_eq!(s.step, Step::RemoveOld);
    let s = run(&s, done(Effect::Retired), &mut t).saga;
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::Succeeded)));
    let s = run(&s, done(Effect::Finalized), &mut t).saga;
    assert_eq!(s.status, Status::Succeeded);
    assert!(s.effects.old_deleted && !s.effects.new_revoked && !s.unresolved() && s.resolution.attention.is_none());
    assert_eq!(s.keys_left(), None, "other certificates may remain: the notice lists them");
}

#[test]
fn no_trust_by_the_deadline_removes_the_new_certificate_and_keeps_the_old_in_use() {
    let (s, mut t) = trust_at(Step::AwaitTrust);
    let late = Clock { now: s.person.deadline.unwrap(), jitter: 0.5, token: 99 };
    let s = advance(&begin_attempt(&s, late.now), &done(Effect::Expired), &policy(), late).saga;
    assert_eq!(s.step, Step::RevokeNew);
    assert_eq!(s.outcome.failure.as_ref().unwrap().code, "TrustNotConfirmed");
    let s = run(&s, done(Effect::Revoked), &mut t).saga;
    let s = run(&s, done(Effect::Finalized), &mut t).saga;
    assert_eq!(s.status, Status::Compensated);
    assert!(s.effects.new_revoked);
    assert_eq!(s.trust.as_ref().unwrap().in_use, InUse::Old);
}

#[test]
fn sign_in_reported_broken_or_unconfirmed_switches_back_and_keeps_the_new_certificate() {
    for broken in [true, false] {
        let (s, mut t) = trust_at(Step::AwaitSignIn);
        let s = if broken {
            confirm(&s, true, clock(s.updated_at + 1, 50)).unwrap()
        } else {
            let late = Clock { now: s.person.deadline.unwrap(), jitter: 0.5, token: 51 };
            advance(&begin_attempt(&s, late.now), &done(Effect::Expired), &policy(), late).saga
        };
        assert_eq!(s.step, Step::SwitchBack);
        assert_eq!(s.outcome.failure.as_ref().unwrap().code, if broken { "SignInBroken" } else { "SignInNotConfirmed" });
        let s = run(&s, done(Effect::Switched), &mut t).saga;
        let s = run(&s, done(Effect::Finalized), &mut t).saga;
        assert_eq!(s.status, Status::RolledBack);
        let tr = s.trust.unwrap();
        assert_eq!(tr.in_use, InUse::Old);
        assert!(!s.effects.new_revoked && !s.effects.old_deleted, "both certificates stay: the target may trust only the new one");
        assert!(s.outcome.compensations.iter().any(|c| c.contains("switched back to the old credential OLD")), "{:?}", s.outcome.compensations);
    }
}

#[test]
fn a_failed_switch_is_retried_long_then_stops_for_a_person_never_removing_the_new_one() {
    let (mut s, mut t) = trust_at(Step::SwitchNew);
    let mut attempts = 0;
    while s.step == Step::SwitchNew && !s.status.is_terminal() {
        s = run(&s, Outcome::Failed(err(true, true)), &mut t).saga;
        attempts += 1;
    }
    assert_eq!(attempts, policy().max_attempts * 3, "the cleanup budget: switching keeps sign-in on a trusted certificate");
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::NeedsAttention)));
    assert_eq!(s.trust.as_ref().unwrap().in_use, InUse::Unknown, "a switch that may have applied leaves it unknown");
    let (s, mut t) = trust_at(Step::SwitchNew);
    let s = run(&s, Outcome::Failed(err(false, false)), &mut t).saga;
    assert_eq!(s.outcome.closing, Some(Status::NeedsAttention));
    assert_eq!(s.trust.as_ref().unwrap().in_use, InUse::Old);
    assert!(!s.effects.new_revoked);
    // Switching back that fails for good: stop for a person too.
    let (s, mut t) = trust_at(Step::AwaitSignIn);
    let s = confirm(&s, true, clock(s.updated_at + 1, 60)).unwrap();
    let s = run(&s, Outcome::Failed(err(false, false)), &mut t).saga;
    assert_eq!(s.outcome.closing, Some(Status::NeedsAttention));
}

#[test]
fn trust_answers_are_taken_only_in_turn() {
    let (s, _) = trust_at(Step::AwaitTrust);
    assert!(confirm(&s, true, clock(s.updated_at + 1, 1)).unwrap_err().0.contains("has not switched"));
    let (s, _) = trust_at(Step::SwitchNew);
    assert!(confirm(&s, false, clock(s.updated_at + 1, 1)).is_err(), "no confirmation while switching");
    assert!(confirm(&s, true, clock(s.updated_at + 1, 1)).is_err());
    let manual = manual_saga();
    assert!(confirm(&manual, true, clock(1, 1)).unwrap_err().0.contains("--broken"));
    let auto = new_saga();
    assert!(confirm(&auto, false, clock(1, 1)).is_err());
    assert!(provide(&trust_at(Step::AwaitTrust).0, "X".into(), None, clock(1, 1)).is_err(), "a trust saga takes no credential from a person");
    let (s, _) = trust_at(Step::AwaitSignIn);
    assert!(request_rollback(&s, clock(s.updated_at + 1, 1)).unwrap_err().0.contains("--broken"), "rollback points to the sign-in answer");
}

fn manual_saga() -> Saga {
    let mut s = Saga::new("m1".into(), "scim".into(), "scim_token:any:us-east-1".into(), "manual".into(), 0, 1);
    s.person.manual = true;
    s.keys.old_keys = vec![KeyRef { id: "created 2025-12-01".into(), active: true, created_at: Some(1_764_547_200_000) }];
    s
}

#[test]
fn manual_happy_path_waits_on_the_person_twice() {
    let mut t = 1;
    let s = manual_saga();
    let s = run(&s, done(Effect::Started { keys: vec![], limit: 2 }), &mut t).saga;
    assert_eq!(s.step, Step::AwaitNew);
    assert_eq!(s.keys.old_keys.len(), 1, "the person's old token is kept, not replaced by an (empty) inventory");
    let deadline = s.person.deadline.expect("a wait on a person has a deadline");
    assert_eq!(deadline, s.run.step_started_at + policy().person_deadline);
    assert_eq!(prompt(&s, s.run.step_started_at), Prompt::Ask);

    // The first notice; then the step re-arms for a reminder.
    let asked = run(&s, done(Effect::Prompted), &mut t).saga;
    assert_eq!((asked.step, asked.person.prompts, asked.status), (Step::AwaitNew, 1, Status::Running));
    assert_eq!(asked.run.not_before, asked.updated_at + policy().reminder_every);
    assert_ne!(asked.run.token, s.run.token, "the old message is stale now");
    assert_eq!(prompt(&asked, asked.run.not_before), Prompt::Remind);
    assert_eq!(asked.run.step_attempts, 0, "reminders do not use up the failure budget");

    let given = provide(&asked, "handed over T".into(), None, clock(asked.updated_at + 5, 99)).unwrap();
    assert_eq!(given.step, Step::PushToTarget);
    assert!(given.keys.secret_stored);
    assert_eq!(given.keys.new_key.as_deref(), Some("handed over T"));
    assert_eq!(given.keys.old_keys, s.keys.old_keys, "no old token named: the one from the start stays");
    assert_eq!((given.person.deadline, given.person.prompts), (None, 0));
    assert!(!accepts(&given, Step::AwaitNew, &asked.run.token));

    let pushed = run(&given, done(Effect::Pushed), &mut t).saga;
    assert_eq!(pushed.step, Step::VerifyTarget);
    assert!(!pushed.keys.secret_stored, "erased once the target has it");
    let verified = run(&pushed, done(Effect::Verified(Verification::Opaque)), &mut t).saga;
    assert_eq!(verified.step, Step::AwaitRetire);
    assert!(verified.person.deadline.is_some());
    assert!(!verified.effects.old_disabled && !verified.effects.old_deleted);
    let reminded = run(&verified, done(Effect::Prompted), &mut t).saga;
    let done_ = confirm_retired(&reminded, clock(reminded.updated_at + 1, 1234)).unwrap();
    assert_eq!((done_.step, done_.outcome.closing), (Step::Finalize, Some(Status::Succeeded)));
    assert!(done_.effects.old_deleted);
    let end = run(&done_, done(Effect::Finalized), &mut t).saga;
    assert_eq!(end.status, Status::Succeeded);
    let outcomes: Vec<&str> = end.outcome.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "ok", "provided", "ok", "ok", "ok", "confirmed", "ok"]);
}

#[test]
fn reminders_stop_at_the_deadline() {
    let mut t = 1;
    let mut s = run(&manual_saga(), done(Effect::Started { keys: vec![], limit: 2 }), &mut t).saga;
    let deadline = s.person.deadline.unwrap();
    let mut notices = 0;
    while prompt(&s, s.run.not_before.max(s.updated_at) + 1) != Prompt::Expired {
        s = run(&s, done(Effect::Prompted), &mut t).saga;
        notices += 1;
        assert!(s.run.not_before <= deadline, "a reminder never lands after the deadline");
        assert!(notices < 10);
    }
    assert_eq!(notices, 4, "35s deadline, 10s reminders: the first notice and 3 reminders");
    let end = run(&s, done(Effect::Expired), &mut t).saga;
    assert_eq!((end.step, end.outcome.closing), (Step::Finalize, Some(Status::Compensated)));
    assert_eq!(end.outcome.failure.as_ref().unwrap().code, "DeadlinePassed");
    assert!(end.keys.new_key.is_none());

    // Past the switch, the deadline leaves both tokens for a person.
    let mut r = manual_saga();
    r.step = Step::AwaitRetire;
    r.effects.target = TargetState::HoldsNew;
    r.keys.new_key = Some("N".into());
    r.person.deadline = Some(5);
    let end = run(&r, done(Effect::Expired), &mut t).saga;
    assert_eq!(end.outcome.closing, Some(Status::NeedsAttention));
    assert_eq!(end.outcome.failure.as_ref().unwrap().code, "OldNotConfirmedDeleted");
}

#[test]
fn a_rejected_token_is_never_revoked_by_machine() {
    let mut t = 1;
    let s = run(&manual_saga(), done(Effect::Started { keys: vec![], limit: 2 }), &mut t).saga;
    let s = provide(&s, "N".into(), None, clock(s.updated_at + 1, 7)).unwrap();
    let end = run(&s, Outcome::Failed(err(false, false)), &mut t).saga;
    assert_eq!(end.effects.target, TargetState::Rejected);
    assert_eq!((end.step, end.outcome.closing), (Step::Finalize, Some(Status::Compensated)), "no RevokeNew: there is no API");
    assert!(!end.effects.new_revoked && end.outcome.compensations.is_empty(), "nothing is claimed as undone");
    assert!(!end.keys.secret_stored);
}

#[test]
fn person_commands_only_when_the_saga_waits_for_them() {
    let mut t = 1;
    let auto = new_saga();
    assert!(provide(&auto, "N".into(), None, clock(1, 1)).unwrap_err().0.contains("never waits"));
    let s = run(&manual_saga(), done(Effect::Started { keys: vec![], limit: 2 }), &mut t).saga;
    assert!(confirm_retired(&s, clock(1, 1)).unwrap_err().0.contains("not waiting for the old credential's deletion"));
    let old = KeyRef { id: "TOKEN-ID-1".into(), active: true, created_at: Some(5) };
    let given = provide(&s, "N".into(), Some(old.clone()), clock(s.updated_at + 1, 2)).unwrap();
    assert_eq!(given.keys.old_keys, vec![old], "the person may name the old token when providing");
    assert!(provide(&given, "N2".into(), None, clock(given.updated_at + 1, 3)).unwrap_err().0.contains("at step push_to_target"));
    let mut ended = given.clone();
    ended.status = Status::Compensated;
    assert!(provide(&ended, "N".into(), None, clock(1, 1)).unwrap_err().0.contains("already ended"));
}

#[test]
fn human_durations() {
    assert_eq!(human_ms(7 * 86_400_000), "7d");
    assert_eq!(human_ms(36 * 3_600_000), "36h");
    assert_eq!(human_ms(90_000), "90s");
    assert_eq!(human_ms(120_000), "2m");
    assert_eq!(human_ms(250), "250ms");
}

#[test]
fn happy_path_visits_every_forward_step_in_order() {
    let mut s = new_saga();
    let mut t = 1;
    let mut seen = vec![];
    while !s.status.is_terminal() {
        seen.push(s.step);
        let e = happy_effect(s.step, "NEW");
        s = run(&s, done(e), &mut t).saga;
    }
    assert_eq!(
        seen,
        vec![Step::Start, Step::IssueNew, Step::ProveNew, Step::PushToTarget, Step::VerifyTarget, Step::DisableOld, Step::RetireOld, Step::Finalize]
    );
    assert_eq!(s.status, Status::Succeeded);
    assert!(s.effects.old_disabled && s.effects.old_deleted && !s.effects.new_revoked);
    assert_eq!(s.effects.target, TargetState::HoldsNew);
    assert!(!s.keys.secret_stored, "finalize erases the secret");
    assert_eq!(s.keys_left(), Some(vec![KeyRef { id: "NEW".into(), active: true, created_at: None }]), "the notice needs no listing");
}

#[test]
fn two_unknown_keys_are_refused_before_anything_changes() {
    let s = new_saga();
    let tr = run(&s, done(Effect::Started { keys: vec![key("A"), key("B")], limit: 2 }), &mut 1);
    assert_eq!(tr.saga.step, Step::Finalize);
    assert_eq!(tr.saga.outcome.closing, Some(Status::Refused));
    assert_eq!(tr.saga.outcome.failure.as_ref().unwrap().code, "TooManyKeys");
    assert!(tr.saga.keys.new_key.is_none());
}

/// The limit is the source's number, not a rule of the machine: a source
/// that allows three credentials at once gets a new one beside two, and one
/// that allows a single credential is refused with one in place.
#[test]
fn the_sources_limit_decides_whether_a_new_credential_fits() {
    let tr = run(&new_saga(), done(Effect::Started { keys: vec![key("A"), key("B")], limit: 3 }), &mut 1);
    assert_eq!(tr.saga.step, Step::IssueNew, "room for a third: {:?}", tr.saga.outcome.failure);
    assert_eq!(tr.saga.keys.old_keys.len(), 2);
    let tr = run(&new_saga(), done(Effect::Started { keys: vec![key("A")], limit: 1 }), &mut 1);
    assert_eq!(tr.saga.outcome.closing, Some(Status::Refused));
    assert_eq!(tr.saga.outcome.failure.as_ref().unwrap().code, "TooManyKeys");
    let tr = run(&new_saga(), done(Effect::Started { keys: vec![], limit: 1 }), &mut 1);
    assert_eq!(tr.saga.step, Step::IssueNew);
}

#[test]
fn no_old_key_skips_retirement() {
    let mut s = new_saga();
    let mut t = 1;
    s = run(&s, done(Effect::Started { keys: vec![], limit: 2 }), &mut t).saga;
    for step in [Step::IssueNew, Step::ProveNew, Step::PushToTarget, Step::VerifyTarget] {
        assert_eq!(s.step, step);
        s = run(&s, done(happy_effect(step, "NEW")), &mut t).saga;
    }
    assert_eq!(s.step, Step::Finalize);
    assert_eq!(s.outcome.closing, Some(Status::Succeeded));
}

fn at_step(target: Step) -> (Saga, u128) {
    let mut s = new_saga();
    let mut t = 1;
    while s.step != target {
        s = run(&s, done(happy_effect(s.step, "NEW")), &mut t).saga;
    }
    (s, t)
}

#[test]
fn push_rejected_with_client_error_revokes_new_key() {
    let (s, mut t) = at_step(Step::PushToTarget);
    let s = run(&s, Outcome::Failed(err(false, false)), &mut t).saga;
    assert_eq!(s.effects.target, TargetState::Rejected);
    assert_eq!(s.step, Step::RevokeNew);
    assert_eq!(s.status, Status::Compensating);
    let s = run(&s, done(Effect::Revoked), &mut t).saga;
    assert_eq!(s.step, Step::Finalize);
    let s = run(&s, done(Effect::Finalized), &mut t).saga;
    assert_eq!(s.status, Status::Compensated);
    assert!(s.effects.new_revoked && !s.effects.old_disabled);
    assert_eq!(s.outcome.failure.as_ref().unwrap().step, Step::PushToTarget);
    assert_eq!(s.outcome.compensations.len(), 1);
    assert_eq!(s.keys_left(), None, "after a rollback the notice lists the keys");
}

#[test]
fn ambiguous_push_is_resolved_by_verification_never_by_revoking() {
    let (s, mut t) = at_step(Step::PushToTarget);
    // A timeout that may have landed, retried until the budget is gone.
    let mut s = s;
    for _ in 0..policy().max_attempts {
        assert_eq!(s.step, Step::PushToTarget);
        s = run(&s, Outcome::Failed(err(true, true)), &mut t).saga;
    }
    assert_eq!(s.step, Step::VerifyTarget);
    assert_eq!(s.effects.target, TargetState::Uncertain);
    assert!(!s.may_revoke_new());
    // The target reveals nothing: a person must look.
    let na = run(&s, done(Effect::Verified(Verification::Opaque)), &mut t).saga;
    assert_eq!(na.outcome.closing, Some(Status::NeedsAttention));
    // The target shows the old key: now revoking is safe.
    let back = run(&s, done(Effect::Verified(Verification::HoldsOld)), &mut t).saga;
    assert_eq!(back.step, Step::RevokeNew);
    // The target shows the new key: roll forward.
    let fwd = run(&s, done(Effect::Verified(Verification::HoldsNew)), &mut t).saga;
    assert_eq!(fwd.step, Step::DisableOld);
}

#[test]
fn failures_after_the_switch_never_revoke() {
    for step in [Step::DisableOld, Step::RetireOld] {
        let (s, mut t) = at_step(step);
        let s = run(&s, Outcome::Failed(err(false, false)), &mut t).saga;
        assert_eq!(s.step, Step::Finalize, "{step}");
        assert_eq!(s.outcome.closing, Some(Status::NeedsAttention));
        assert!(!s.effects.new_revoked);
    }
}

#[test]
fn prove_new_retries_until_the_propagation_bound_then_compensates() {
    let (mut s, mut t) = at_step(Step::ProveNew);
    let mut retries = 0;
    while s.step == Step::ProveNew {
        s = run(&s, Outcome::Failed(err(true, false)), &mut t).saga;
        retries += 1;
        assert!(retries < 100);
    }
    assert!(retries > policy().max_attempts as usize, "bounded by time, not attempts: {retries}");
    assert_eq!(s.step, Step::RevokeNew);
}

#[test]
fn retry_delay_grows_caps_and_honours_server_hint() {
    let p = policy();
    assert_eq!(retry_delay(&p, 1, 1.0, None), 1_000);
    assert_eq!(retry_delay(&p, 2, 1.0, None), 2_000);
    assert_eq!(retry_delay(&p, 3, 0.0, None), 2_000);
    assert_eq!(retry_delay(&p, 30, 1.0, None), 8_000);
    assert_eq!(retry_delay(&p, 1, 0.0, Some(30_000)), 30_000);
}

#[test]
fn retry_keeps_step_and_changes_token() {
    let (s, mut t) = at_step(Step::PushToTarget);
    let old_token = s.run.token.clone();
    let r = run(&s, Outcome::Failed(err(true, false)), &mut t).saga;
    assert_eq!(r.step, Step::PushToTarget);
    assert_ne!(r.run.token, old_token);
    assert!(r.run.not_before > s.run.not_before);
    assert!(!accepts(&r, Step::PushToTarget, &old_token), "the old message is stale now");
    assert!(accepts(&r, Step::PushToTarget, &r.run.token));
}

#[test]
fn rollback_only_during_grace() {
    let (s, mut t) = at_step(Step::RetireOld);
    t += 1;
    let rb = request_rollback(&s, clock(s.updated_at + 1, t)).unwrap();
    assert_eq!(rb.step, Step::RestoreOld);
    let rb = run(&rb, done(Effect::Restored), &mut t).saga;
    let rb = run(&rb, done(Effect::Finalized), &mut t).saga;
    assert_eq!(rb.status, Status::RolledBack);
    assert!(!rb.effects.old_disabled);

    let (early, _) = at_step(Step::PushToTarget);
    assert!(request_rollback(&early, clock(1, 99)).is_err());
}

#[test]
fn grace_wait_is_reported() {
    let mut s = at_step(Step::DisableOld).0;
    let p = Policy { grace_period: 60_000, ..policy() };
    s = advance(&begin_attempt(&s, 1_000), &done(Effect::Disabled), &p, clock(1_000, 7)).saga;
    assert_eq!(s.step, Step::RetireOld);
    assert_eq!(s.waiting_until(1_000), Some(61_000));
    assert_eq!(s.waiting_until(61_000), None);
}

#[test]
fn history_is_bounded() {
    let mut s = new_saga();
    for i in 0..(HISTORY_LIMIT as u64 + 50) {
        s.record(i, "retry", None);
    }
    assert_eq!(s.outcome.history.len(), HISTORY_LIMIT);
    assert_eq!(s.outcome.history.last().unwrap().at, HISTORY_LIMIT as u64 + 49);
}

#[test]
fn terminal_sagas_do_not_move() {
    let mut s = new_saga();
    s.status = Status::Succeeded;
    let tr = advance(&s, &done(Effect::Proven), &policy(), clock(5, 5));
    assert_eq!(tr.next, Next::Stop);
    assert_eq!(tr.saga.step, s.step);
    assert!(!accepts(&s, s.step, &s.run.token));
}

// ---------------------------------------------------------------------------
// Property tests: any outcome sequence, including redeliveries of stale
// messages, ends in a terminal state without breaking the compensation rule.

#[derive(Debug, Clone)]
enum Event {
    /// The step succeeds; `variant` picks among the effects it can have.
    Ok(u8),
    /// The step fails.
    Fail { retryable: bool, applied: bool },
    /// A stale message from earlier is redelivered.
    Stale(usize),
    /// An operator asks for rollback.
    Rollback,
    /// A person hands over the new credential.
    Provide,
    /// A person confirms the old credential is deleted (or, for a trust
    /// saga, that the target trusts the new one / sign-in works).
    Confirm,
    /// A person reports sign-in broken (`keyturn confirm --broken`).
    Broken,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => any::<u8>().prop_map(Event::Ok),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(retryable, applied)| Event::Fail { retryable, applied }),
        1 => any::<usize>().prop_map(Event::Stale),
        1 => Just(Event::Rollback),
        1 => Just(Event::Provide),
        1 => Just(Event::Confirm),
        1 => Just(Event::Broken),
    ]
}

fn effect_for(step: Step, variant: u8) -> Effect {
    match (step, variant % 4) {
        (Step::Start, 0) => Effect::Started { keys: vec![], limit: 2 },
        (Step::Start, 1) => Effect::Started { keys: vec![key("A"), key("B")], limit: 2 },
        (Step::Start, 3) => Effect::Started { keys: vec![key("OLD"), KeyRef { id: "SPARE".into(), active: false, created_at: Some(1) }], limit: 2 },
        (Step::Start, _) => Effect::Started { keys: vec![key("OLD")], limit: 2 },
        (Step::VerifyTarget, 0) => Effect::Verified(Verification::HoldsOld),
        (Step::VerifyTarget, 1) => Effect::Verified(Verification::Opaque),
        (Step::VerifyTarget, 2) => Effect::Verified(Verification::Unhealthy("disabled".into())),
        (Step::VerifyTarget, _) => Effect::Verified(Verification::HoldsNew),
        (Step::AwaitNew | Step::AwaitRetire | Step::AwaitTrust | Step::AwaitSignIn, 0) => Effect::Expired,
        (step, _) => happy_effect(step, "NEW"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_run_terminates_safely(
        events in proptest::collection::vec(event(), 0..300),
        shape in 0u8..3,
        resolutions in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..3),
    ) {
        let mut s = match shape { 0 => new_saga(), 1 => manual_saga(), _ => trust_saga() };
        let mut t: u128 = 10;
        let mut seen_tokens: Vec<(Step, String)> = vec![(s.step, s.run.token.clone())];
        let mut events = events.into_iter();
        let mut resolutions = resolutions.into_iter();
        let mut moves = 0;
        loop {
        if s.status.is_terminal() {
            // An unresolved saga is watched and keeps the credential; a
            // person (or clear evidence) may resolve it, and it runs again.
            if s.unresolved() {
                prop_assert!(s.resolution.attention.is_some(), "unresolved saga without attention record");
            }
            // The notice skips listing keys only when the record is certain.
            if let Some(left) = s.keys_left() {
                prop_assert_eq!(s.status, Status::Succeeded);
                prop_assert!(!s.person.manual && !s.unresolved() && s.effects.old_deleted && !s.effects.new_revoked);
                prop_assert_eq!(left.len(), 1);
                prop_assert_eq!(Some(&left[0].id), s.keys.new_key.as_ref());
            }
            if let Some((keep_new, gone)) = resolutions.next() {
                {
                    let keep = if keep_new { Keep::New } else { Keep::Old };
                    t += 1;
                    match resolve(&s, keep, gone, "test", clock(s.updated_at + 1, t)) {
                        Ok(r) => {
                            prop_assert!(s.unresolved());
                            prop_assert_eq!(r.status, Status::Running);
                            prop_assert_eq!(r.resolution.resolved, Some(keep));
                            s = r;
                            seen_tokens.push((s.step, s.run.token.clone()));
                            continue;
                        }
                        Err(_) => prop_assert!(!s.unresolved()),
                    }
                }
            }
            break;
        }
        {
            moves += 1;
            prop_assert!(moves < 2_000, "no terminal state after {moves} moves: {s:?}");
            let before = s.clone();
            // Past the scripted events every step just succeeds, and a
            // waiting person acts.
            let ev = events.next().unwrap_or(match s.step {
                Step::AwaitNew => Event::Provide,
                Step::AwaitRetire | Step::AwaitTrust | Step::AwaitSignIn => Event::Confirm,
                _ => Event::Ok(3),
            });
            match ev {
                Event::Provide => {
                    t += 1;
                    match provide(&s, "NEW".into(), None, clock(s.updated_at + 1, t)) {
                        Ok(r) => { prop_assert!(before.person.manual && before.step == Step::AwaitNew); s = r; }
                        Err(_) => prop_assert!(!(s.person.manual && s.step == Step::AwaitNew)),
                    }
                }
                Event::Confirm => {
                    t += 1;
                    match confirm(&s, false, clock(s.updated_at + 1, t)) {
                        Ok(r) if before.trust.is_some() => { prop_assert!(matches!(before.step, Step::AwaitTrust | Step::AwaitSignIn)); s = r; }
                        Ok(r) => { prop_assert!(before.person.manual && before.effects.target == TargetState::HoldsNew); s = r; }
                        Err(_) => prop_assert!(!(s.person.manual && s.step == Step::AwaitRetire || s.trust.is_some() && s.awaits_person())),
                    }
                }
                Event::Broken => {
                    t += 1;
                    match confirm(&s, true, clock(s.updated_at + 1, t)) {
                        Ok(r) => { prop_assert!(before.trust.is_some() && before.step == Step::AwaitSignIn); s = r; }
                        Err(_) => prop_assert!(!(s.trust.is_some() && s.step == Step::AwaitSignIn && !s.status.is_terminal())),
                    }
                }
                Event::Stale(i) => {
                    let (step, token) = &seen_tokens[i % seen_tokens.len()];
                    if (step, token) != (&s.step, &s.run.token) {
                        prop_assert!(!accepts(&s, *step, token));
                    }
                    continue;
                }
                Event::Rollback => {
                    t += 1;
                    match request_rollback(&s, clock(s.updated_at + 1, t)) {
                        Ok(r) => {
                            prop_assert!((before.effects.old_disabled && !before.effects.old_deleted) || (before.resolution.new_disabled && !before.effects.new_revoked && before.step == Step::RetireNew));
                            s = r;
                        }
                        Err(_) => prop_assert!(!(s.step == Step::RetireOld && s.effects.old_disabled || s.step == Step::RetireNew && s.resolution.new_disabled)),
                    }
                }
                Event::Ok(v) => { s = run(&s, done(effect_for(s.step, v)), &mut t).saga; }
                Event::Fail { retryable, applied } => { s = run(&s, Outcome::Failed(err(retryable, applied)), &mut t).saga; }
            }
            seen_tokens.push((s.step, s.run.token.clone()));

            // The compensation rule: RevokeNew is entered only when no
            // consumer can hold the new key.
            if s.step == Step::RevokeNew && before.step != Step::RevokeNew {
                prop_assert!(s.may_revoke_new(), "revoke planned while target may hold new: {s:?}");
            }
            // The old key is touched only after the target holds the new one
            // (a keep-old resolution reactivates it: that is the way back).
            if (s.step == Step::DisableOld || s.effects.old_disabled) && s.resolution.resolved != Some(Keep::Old) {
                prop_assert_eq!(s.effects.target, TargetState::HoldsNew);
            }
            // The new key is deactivated or deleted by the resolution path
            // only after someone chose to keep the old key.
            if matches!(s.step, Step::DisableNew | Step::RetireNew) {
                prop_assert_eq!(s.resolution.resolved, Some(Keep::Old));
            }
            // A deactivated new key is either being retired, rolled back,
            // or reactivated first thing by a keep-new resolution.
            if s.resolution.new_disabled && !s.status.is_terminal() {
                prop_assert!(s.resolution.resolved == Some(Keep::Old) || matches!(s.step, Step::RestoreNew | Step::DisableOld) || s.outcome.closing == Some(Status::NeedsAttention), "{s:?}");
            }
            // Once verification saw the new key, that knowledge never
            // regresses (only a resolution, a decision, may say otherwise).
            if before.effects.target == TargetState::HoldsNew && s.resolution.resolved == before.resolution.resolved {
                prop_assert_eq!(s.effects.target, TargetState::HoldsNew);
            }
            prop_assert!(s.outcome.history.len() <= HISTORY_LIMIT);
            // A trust saga: the source switches to the new credential only
            // after the person said the target trusts it, removes the old one
            // only after they said sign-in works, and never removes the new
            // one once they said the target trusts it.
            if let Some(tr) = &s.trust {
                prop_assert!(!matches!(s.step, Step::AwaitNew | Step::AwaitRetire | Step::ProveNew | Step::PushToTarget | Step::VerifyTarget | Step::DisableOld | Step::RetireOld | Step::RestoreOld | Step::DisableNew | Step::RetireNew | Step::RestoreNew), "trust saga at {}", s.step);
                if matches!(s.step, Step::SwitchNew | Step::AwaitSignIn) || tr.in_use != InUse::Old {
                    prop_assert!(tr.trusted);
                }
                if s.step == Step::RemoveOld || s.effects.old_deleted {
                    prop_assert!(tr.works && tr.in_use == InUse::New);
                }
                if s.step == Step::RevokeNew {
                    prop_assert!(!tr.trusted && tr.in_use == InUse::Old);
                }
                if s.step == Step::SwitchBack {
                    prop_assert!(!tr.works && tr.old.is_some());
                }
            } else {
                prop_assert!(!matches!(s.step, Step::AwaitTrust | Step::SwitchNew | Step::AwaitSignIn | Step::SwitchBack | Step::RemoveOld));
            }
            // A credential made by hand is never created, disabled, deleted
            // or restored by the machine; an automatic one never waits on a person.
            if s.person.manual {
                prop_assert!(!matches!(s.step, Step::IssueNew | Step::ProveNew | Step::DisableOld | Step::RetireOld | Step::RevokeNew | Step::RestoreOld), "manual saga at {}", s.step);
            } else {
                prop_assert!(!matches!(s.step, Step::AwaitNew | Step::AwaitRetire));
            }
            // Asking to delete the old token only once the target holds the new one.
            if s.step == Step::AwaitRetire {
                prop_assert_eq!(s.effects.target, TargetState::HoldsNew);
            }
            // A wait on a person always ends: it has a deadline and never re-arms past it.
            if s.awaits_person() {
                let d = s.person.deadline.expect("deadline");
                prop_assert!(s.run.not_before <= d);
            }
            // The secret is kept only while a step that uses it is ahead.
            if s.keys.secret_stored && !s.status.is_terminal() {
                prop_assert!(s.step.needs_secret() || s.step == Step::Finalize && before.keys.secret_stored, "secret kept at {}", s.step);
            }
        }
        }
        match s.status {
            Status::Succeeded => {
                prop_assert_eq!(s.effects.target, TargetState::HoldsNew);
                prop_assert!(s.keys.old_keys.is_empty() || s.effects.old_deleted);
                prop_assert!(!s.person.manual || s.effects.old_deleted, "a by-hand rotation succeeds only on the person's confirmation");
                prop_assert!(!s.effects.new_revoked);
                prop_assert!(!s.resolution.new_disabled, "succeeded with the new key deactivated");
            }
            Status::Compensated => {
                prop_assert!(!s.effects.target.may_hold_new());
                prop_assert!(s.trust.as_ref().is_none_or(|t| !t.trusted && t.in_use == InUse::Old));
                prop_assert!(s.keys.new_key.is_none() || s.effects.new_revoked || s.person.manual);
                prop_assert!(!s.effects.old_disabled);
            }
            Status::Refused => prop_assert!(s.keys.new_key.is_none()),
            Status::RolledBack => {
                prop_assert!(s.effects.old_restored && !s.effects.old_deleted);
                // A trust saga rolled back: the source uses the old one again.
                prop_assert!(s.trust.as_ref().is_none_or(|t| t.in_use == InUse::Old && !t.works));
            }
            Status::NeedsAttention => prop_assert!(s.outcome.failure.is_some()),
            Status::Running | Status::Compensating => unreachable!(),
        }
        // The secret is erased at the end unless erasing itself failed.
        prop_assert!(!s.keys.secret_stored || s.status == Status::NeedsAttention);
    }
}

#[test]
fn the_machine_does_no_io() {
    // Every file of saga/ but this one (which reads the files).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/saga");
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        for forbidden in ["tokio", "aws_", "reqwest", "SystemTime", "Instant", "std::fs", "std::net", "fastrand", "rand::"] {
            assert!(!src.contains(forbidden), "{} must stay pure, but mentions {forbidden}", path.display());
        }
        files += 1;
    }
    assert!(files >= 8, "the scan sees the machine ({files} files)");
}

fn kev(id: &str, exists: bool, used: Option<(Millis, &str)>) -> KeyEvidence {
    KeyEvidence { id: id.into(), exists, last_used: used.map(|(t, s)| (t, s.to_string())) }
}

fn evidence(new: KeyEvidence, old: KeyEvidence, target: Option<Verification>) -> Evidence {
    Evidence { new, old: vec![old], target, consumer_service: Some("ses".into()) }
}

#[test]
fn judge_reads_facts_first_then_use_by_the_consumer_after_the_stop() {
    let since = 1_000;
    let j = |e: Evidence| judge(since, &e, 5_000);
    // Facts: a key gone, or the target naming its key.
    assert_eq!(j(evidence(kev("N", false, None), kev("O", true, None), None)).keep, Some(Keep::Old));
    assert_eq!(j(evidence(kev("N", true, None), kev("O", false, None), None)).keep, Some(Keep::New));
    assert_eq!(j(evidence(kev("N", false, None), kev("O", false, None), None)).keep, None);
    assert_eq!(
        j(evidence(kev("N", true, None), kev("O", true, Some((2_000, "ses"))), Some(Verification::HoldsNew))).keep,
        Some(Keep::New),
        "the target's word beats use"
    );
    assert_eq!(j(evidence(kev("N", true, None), kev("O", true, None), Some(Verification::HoldsOld))).keep, Some(Keep::Old));
    // Use by the consumer's service after the saga stopped.
    let v = j(evidence(kev("N", true, Some((2_000, "ses"))), kev("O", true, Some((900, "ses"))), Some(Verification::Opaque)));
    assert_eq!(v.keep, Some(Keep::New), "the old key's use before the stop does not count: {v:?}");
    assert!(v.reason.contains("only the new key N was used by ses"), "{v:?}");
    assert_eq!(j(evidence(kev("N", true, Some((900, "sts"))), kev("O", true, Some((3_000, "ses"))), None)).keep, Some(Keep::Old));
    // Unclear: both used, neither used, or used by something else.
    let both = j(evidence(kev("N", true, Some((2_000, "ses"))), kev("O", true, Some((3_000, "ses"))), None));
    assert_eq!(both.keep, None);
    assert!(both.reason.contains("both keys"), "{both:?}");
    let neither = j(evidence(kev("N", true, Some((900, "sts"))), kev("O", true, None), None));
    assert_eq!(neither.keep, None);
    assert!(neither.reason.contains("neither key was used"), "{neither:?}");
    let other = j(evidence(kev("N", true, Some((2_000, "ses"))), kev("O", true, Some((2_500, "s3"))), None));
    assert_eq!(other.keep, None, "the old key is still used by someone: never call that clear");
    assert_eq!(j(evidence(kev("N", true, Some((2_000, "s3"))), kev("O", true, None), None)).keep, None, "use by another service is not the target's");
}

/// A saga stopped in needs attention with both keys: uncertain push, opaque target.
fn unresolved_saga() -> Saga {
    let mut t = 1;
    let mut s = new_saga();
    for outcome in [done(Effect::Started { keys: vec![key("OLD")], limit: 2 }), done(Effect::Issued { key_id: "NEW".into() }), done(Effect::Proven)] {
        s = run(&s, outcome, &mut t).saga;
    }
    for _ in 0..policy().max_attempts {
        s = run(&s, Outcome::Failed(err(true, true)), &mut t).saga;
    }
    s = run(&s, done(Effect::Verified(Verification::Opaque)), &mut t).saga;
    s = run(&s, done(Effect::Finalized), &mut t).saga;
    s
}

#[test]
fn an_unresolved_saga_is_watched_announced_once_and_resolved_the_safe_way() {
    let s = unresolved_saga();
    assert_eq!(s.status, Status::NeedsAttention);
    assert!(s.unresolved());
    let a = s.resolution.attention.clone().expect("watched");
    assert_eq!(a.next_check, a.since + policy().evidence_every);

    let clear = Verdict { keep: Some(Keep::New), reason: "only the new key".into(), at: 10 };
    let o1 = observe(&s, Verdict { keep: None, reason: "neither".into(), at: 5 }, &policy(), 5).unwrap();
    assert!(!o1.announce && o1.resolve.is_none());
    let o2 = observe(&o1.saga, clear.clone(), &policy(), 10).unwrap();
    assert!(o2.announce, "a clear verdict is announced");
    assert_eq!(o2.resolve, None, "without auto_resolve nothing is resolved");
    let o3 = observe(&o2.saga, clear.clone(), &policy(), 20).unwrap();
    assert!(!o3.announce, "once per verdict");
    assert_eq!(o3.saga.outcome.history.len(), o2.saga.outcome.history.len(), "an unchanged verdict adds no history");
    let auto = Policy { auto_resolve: true, ..policy() };
    assert_eq!(observe(&o3.saga, clear.clone(), &auto, 30).unwrap().resolve, Some(Keep::New));
    assert!(contradicts(Keep::Old, &clear) && !contradicts(Keep::New, &clear));

    let r = resolve(&o3.saga, Keep::New, false, "ops", clock(40, 77)).unwrap();
    assert_eq!((r.status, r.step, r.effects.target), (Status::Running, Step::DisableOld, TargetState::HoldsNew));
    assert_eq!(r.resolution.usage_since, Some(40), "earlier uses were evidence, not a consumer left behind");
    assert_eq!(r.outcome.failure, None);
    assert!(resolve(&r, Keep::New, false, "ops", clock(41, 78)).is_err(), "a running saga is not resolved twice");
    let mut t = 100;
    let r = run(&r, done(Effect::Disabled), &mut t).saga;
    assert_eq!(r.step, Step::RetireOld);
    let end = run(&run(&r, done(Effect::Retired), &mut t).saga, done(Effect::Finalized), &mut t).saga;
    assert_eq!(end.status, Status::Succeeded);
    assert!(!end.unresolved() && end.resolution.endings == 2);

    let k = resolve(&s, Keep::Old, false, "ops", clock(40, 79)).unwrap();
    assert_eq!((k.step, k.effects.target), (Step::DisableNew, TargetState::HoldsOld));
    let k = run(&k, done(Effect::DisabledNew), &mut t).saga;
    assert_eq!(k.step, Step::RetireNew);
    assert!(k.resolution.new_disabled);
    // Rollback of the keep-old resolution during its grace: needs attention again.
    let rb = request_rollback(&k, clock(k.updated_at + 1, 80)).unwrap();
    assert_eq!(rb.step, Step::RestoreNew);
    let rb = run(&run(&rb, done(Effect::RestoredNew), &mut t).saga, done(Effect::Finalized), &mut t).saga;
    assert!(rb.unresolved(), "back to watching: {rb:?}");
    let k = run(&run(&k, done(Effect::RetiredNew), &mut t).saga, done(Effect::Finalized), &mut t).saga;
    assert_eq!(k.status, Status::Compensated);
    assert!(k.effects.new_revoked && !k.unresolved());
}

#[test]
fn finding_refs_stored_before_v2_and_regions_read_as_v1_in_the_workers_region() {
    let mut s = new_saga();
    s.findings = vec![FindingRef { id: "F".into(), product_arn: "P".into(), kind: FindingKind::V1, region: None, account_id: None }];
    let mut old: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(old["findings"][0], serde_json::json!({"id": "F", "product_arn": "P", "kind": "v1"}));
    // A saga written by an earlier keyturn: the finding has only id and product ARN.
    old["findings"][0] = serde_json::json!({"id": "F", "product_arn": "P"});
    let back: Saga = serde_json::from_value(old).unwrap();
    assert_eq!(back.findings, s.findings);
    // A V2 finding keeps what its update needs.
    let v2 = FindingRef {
        id: "F".into(),
        product_arn: "P".into(),
        kind: FindingKind::V2,
        region: Some("eu-west-1".into()),
        account_id: Some("123456789012".into()),
    };
    let json = serde_json::to_value(&v2).unwrap();
    assert_eq!(json, serde_json::json!({"id": "F", "product_arn": "P", "kind": "v2", "region": "eu-west-1", "account_id": "123456789012"}));
    assert_eq!(serde_json::from_value::<FindingRef>(json).unwrap(), v2);
}

// ---------------------------------------------------------------------------
// Request overrides and exposed keys (AWS_RISK_CREDENTIALS_EXPOSED)
// ---------------------------------------------------------------------------

const WEEK: u64 = 7 * 86_400_000;

fn week_policy() -> Policy {
    Policy { grace_period: WEEK, ..policy() }
}

/// Run one step as the engine does: with the saga's effective policy.
fn run_eff(s: &Saga, base: &Policy, outcome: Outcome, t: &mut u128) -> Transition {
    *t += 1;
    let now = s.run.not_before.max(s.updated_at) + 1;
    let attempt = begin_attempt(s, now);
    advance(&attempt, &outcome, &attempt.effective_policy(base), clock(now, *t))
}

/// Drive a saga along the happy path until it reaches `until` (or ends).
fn drive(mut s: Saga, base: &Policy, until: Step, t: &mut u128) -> Saga {
    while s.step != until && !s.status.is_terminal() {
        let e = happy_effect(s.step, "NEW");
        s = run_eff(&s, base, done(e), t).saga;
    }
    s
}

fn exposure(key: &str, role: ExposedRole, keep_inactive: bool) -> Exposure {
    Exposure {
        key_id: key.into(),
        role,
        seen_at: 5,
        event: "arn:aws:health:global::event/RISK/X".into(),
        keep_inactive,
        inactive_at: None,
        deleted_at: None,
        follow_up: false,
    }
}

#[test]
fn overrides_may_only_shorten_the_policy() {
    let p = week_policy();
    let shorter = Overrides { grace_period: Some(3_600_000), person_deadline: Some(1_000) };
    assert_eq!(shorter.allowed_by(&p), Ok(()));
    let longer = Overrides { grace_period: Some(WEEK + 1_000), person_deadline: None };
    let why = longer.allowed_by(&p).unwrap_err();
    assert!(why.starts_with("overrides.grace_period:") && why.contains("may only shorten"), "{why}");
    let deadline = Overrides { grace_period: None, person_deadline: Some(p.person_deadline + 1_000) };
    assert!(deadline.allowed_by(&p).unwrap_err().starts_with("overrides.person_deadline:"));

    let mut s = new_saga();
    s.origin.overrides = shorter;
    let eff = s.effective_policy(&p);
    assert_eq!((eff.grace_period, eff.person_deadline), (3_600_000, 1_000));
    // The grace period the saga then waits is the shorter one.
    let mut t = 10;
    let s = drive(s, &p, Step::RetireOld, &mut t);
    assert_eq!(s.run.grace_until.unwrap() - s.run.step_started_at, 3_600_000);
}

#[test]
fn an_emergency_saga_deactivates_and_deletes_the_exposed_key_without_grace_or_usage_gate() {
    let p = week_policy();
    let mut s = new_saga();
    s.exposure = Some(exposure("OLD", ExposedRole::Old, false));
    assert!(!s.usage_gate(), "a use of the exposed key after the switch is the attacker");
    assert_eq!(s.effective_policy(&p).grace_period, 0);
    let mut t = 10;
    let s = drive(s, &p, Step::RetireOld, &mut t);
    assert!(s.effects.old_disabled);
    let e = s.exposure.clone().unwrap();
    assert_eq!(e.inactive_at, Some(s.run.step_started_at), "the timeline records when the exposed key went inactive");
    assert_eq!(s.run.grace_until, Some(s.run.step_started_at), "no grace period");
    assert_eq!(s.waiting_until(s.run.step_started_at), None, "retire_old runs at once");
    let s = run_eff(&s, &p, done(Effect::Retired), &mut t).saga;
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::Succeeded)));
    assert!(s.exposure.as_ref().unwrap().deleted_at.is_some());
    let s = run_eff(&s, &p, done(Effect::Finalized), &mut t).saga;
    assert_eq!(s.status, Status::Succeeded);
    assert!(s.exposed_key_dead() && !s.needs_follow_up());
}

#[test]
fn keep_inactive_ends_the_emergency_with_the_exposed_key_inactive() {
    let p = week_policy();
    let mut s = new_saga();
    s.exposure = Some(exposure("OLD", ExposedRole::Old, true));
    let mut t = 10;
    let s = drive(s, &p, Step::DisableOld, &mut t);
    let s = run_eff(&s, &p, done(Effect::Disabled), &mut t).saga;
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::Succeeded)), "no retire_old: the key is kept for forensics");
    assert!(s.effects.old_disabled && !s.effects.old_deleted);
    let e = s.exposure.unwrap();
    assert!(e.inactive_at.is_some() && e.deleted_at.is_none());
}

#[test]
fn exposure_of_the_old_key_in_the_grace_period_deletes_it_now() {
    let p = week_policy();
    let mut t = 10;
    let s = drive(new_saga(), &p, Step::RetireOld, &mut t);
    let grace_end = s.run.grace_until.unwrap();
    assert!(grace_end > s.run.step_started_at + WEEK - 10);
    let now = s.run.step_started_at + 1_000;
    let taken = expose(&s, "OLD", now, "ev", false, clock(now, 777)).unwrap().unwrap();
    assert_eq!(taken.step, Step::RetireOld);
    assert_eq!(taken.run.grace_until, Some(now));
    assert_ne!(taken.run.token, s.run.token, "the pending (delayed) message is stale now");
    assert!(!accepts(&taken, Step::RetireOld, &s.run.token));
    assert_eq!(taken.waiting_until(now), None);
    assert!(!taken.usage_gate());
    assert_eq!(taken.exposure.as_ref().unwrap().inactive_at, Some(now), "it was already inactive when the event came");
    let end = run_eff(&taken, &p, done(Effect::Retired), &mut t).saga;
    assert_eq!(end.outcome.closing, Some(Status::Succeeded));
    // The same event again changes nothing.
    assert_eq!(expose(&taken, "OLD", now + 5, "ev", false, clock(now + 5, 778)), Ok(None));
    // An operator's rollback would reactivate the exposed key: refused.
    assert!(request_rollback(&taken, clock(now + 6, 780)).unwrap_err().0.contains("exposed"));
    assert!(request_rollback(&s, clock(now + 6, 781)).is_ok(), "before the exposure, rollback was possible");
    // With keep_inactive, the saga ends at once keeping the key inactive.
    let kept = expose(&s, "OLD", now, "ev", true, clock(now, 779)).unwrap().unwrap();
    assert_eq!((kept.step, kept.outcome.closing), (Step::Finalize, Some(Status::Succeeded)));
    assert!(kept.effects.old_disabled && !kept.effects.old_deleted);
}

#[test]
fn exposure_of_the_old_key_before_the_switch_reruns_the_step_now_and_skips_the_grace() {
    let p = week_policy();
    let mut t = 10;
    let s = drive(new_saga(), &p, Step::ProveNew, &mut t);
    // A retry delay is pending.
    let s = run_eff(&s, &p, Outcome::Failed(err(true, false)), &mut t).saga;
    assert!(s.run.not_before > s.updated_at);
    let now = s.updated_at + 1;
    let taken = expose(&s, "OLD", now, "ev", false, clock(now, 900)).unwrap().unwrap();
    assert_eq!((taken.step, taken.run.not_before), (Step::ProveNew, now), "same step, at once");
    assert_ne!(taken.run.token, s.run.token);
    assert!(taken.keys.secret_stored, "prove_new still needs the secret");
    let s = drive(taken, &p, Step::RetireOld, &mut t);
    assert_eq!(s.run.grace_until, Some(s.run.step_started_at));
    assert!(!s.usage_gate());
}

#[test]
fn exposure_of_the_new_key_before_the_target_has_it_deletes_it_and_rotates_again() {
    let p = week_policy();
    let mut t = 10;
    let s = drive(new_saga(), &p, Step::ProveNew, &mut t);
    assert!(s.keys.secret_stored);
    let now = s.updated_at + 1;
    let taken = expose(&s, "NEW", now, "ev", false, clock(now, 901)).unwrap().unwrap();
    assert_eq!((taken.step, taken.status), (Step::RevokeNew, Status::Compensating));
    assert_eq!(taken.outcome.failure.as_ref().unwrap().code, "NewKeyExposed");
    assert!(!taken.keys.secret_stored, "the secret is erased in the takeover commit");
    let s = run_eff(&taken, &p, done(Effect::Revoked), &mut t).saga;
    assert!(s.exposure.as_ref().unwrap().deleted_at.is_some());
    let s = run_eff(&s, &p, done(Effect::Finalized), &mut t).saga;
    assert_eq!(s.status, Status::Compensated);
    assert!(!s.effects.old_disabled, "the old key was not exposed and is untouched");
    assert!(s.needs_follow_up());
}

#[test]
fn exposure_of_the_new_key_after_the_switch_finishes_without_grace_then_rotates_again() {
    let p = week_policy();
    let mut t = 10;
    let s = drive(new_saga(), &p, Step::RetireOld, &mut t);
    let now = s.run.step_started_at + 1;
    let taken = expose(&s, "NEW", now, "ev", false, clock(now, 902)).unwrap().unwrap();
    assert_eq!((taken.step, taken.run.grace_until), (Step::RetireOld, Some(now)));
    assert!(taken.usage_gate(), "the old key was not exposed: its last use is still checked");
    let s = run_eff(&taken, &p, done(Effect::Retired), &mut t).saga;
    let s = run_eff(&s, &p, done(Effect::Finalized), &mut t).saga;
    assert_eq!(s.status, Status::Succeeded);
    assert!(s.needs_follow_up(), "the exposed new key is now the one in use: a fresh rotation replaces it");
    // Before the target could hold it? Past push, the new key is never revoked.
    let s = drive(new_saga(), &p, Step::VerifyTarget, &mut t);
    let taken = expose(&s, "NEW", s.updated_at + 1, "ev", false, clock(s.updated_at + 1, 903)).unwrap().unwrap();
    assert_eq!(taken.step, Step::VerifyTarget);
    assert!(!taken.effects.new_revoked && taken.status == Status::Running);
}

#[test]
fn exposure_is_refused_for_ended_by_hand_and_unknown() {
    let p = week_policy();
    let mut t = 10;
    let ended = drive(new_saga(), &p, Step::Finalize, &mut t);
    let ended = run_eff(&ended, &p, done(Effect::Finalized), &mut t).saga;
    assert!(expose(&ended, "OLD", 1, "ev", false, clock(1, 1)).unwrap_err().0.contains("already ended"));
    assert!(expose(&manual_saga(), "X", 1, "ev", false, clock(1, 1)).is_err());
    let running = drive(new_saga(), &p, Step::PushToTarget, &mut t);
    assert!(expose(&running, "OTHER", 1, "ev", false, clock(1, 1)).unwrap_err().0.contains("neither the old nor the new key"));
    // At start the keys are not listed yet: the key is the one in use.
    let fresh = expose(&new_saga(), "OLD", 1, "ev", false, clock(1, 1)).unwrap().unwrap();
    assert_eq!(fresh.exposure.unwrap().role, ExposedRole::Old);
}

fn key_at(id: &str, created_at: Option<Millis>) -> KeyRef {
    KeyRef { id: id.into(), active: true, created_at }
}

#[test]
fn only_a_key_created_after_an_earlier_intent_is_an_orphan() {
    let keep = vec!["OLD".to_string()];
    let intent = 1_000_000;
    let keys = [
        key_at("OLD", Some(1)),
        key_at("OURS", Some(intent + 300)),
        // IAM reports whole seconds: the key made 0.5 s after the intent can read 0.5 s before it.
        key_at("OURS-TRUNCATED", Some(intent - 500)),
        key_at("PERSON", Some(intent - INTENT_CLOCK_SKEW - 1)),
        key_at("UNDATED", None),
    ];
    let t = triage_keys(&keys, &keep, &[intent, intent + 60_000]);
    assert_eq!(t.orphans, vec!["OURS", "OURS-TRUNCATED"]);
    assert_eq!(t.strangers.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["PERSON", "UNDATED"]);
    // Without an earlier intent nothing is an orphan: a first attempt created nothing before.
    let first = triage_keys(&keys, &keep, &[]);
    assert!(first.orphans.is_empty());
    assert_eq!(first.strangers.len(), 4, "every key but the one replaced is someone else's");
    // The earliest earlier intent opens the window.
    assert_eq!(triage_keys(&[key_at("K", Some(5_000))], &[], &[9_000, 4_000]).orphans, vec!["K"]);
}

#[test]
fn intents_are_timed_and_only_earlier_ones_count() {
    let (s, _) = at_step(Step::IssueNew);
    let a1 = begin_attempt(&s, 10_000);
    assert_eq!((a1.keys.issue_intents, a1.keys.issue_intent_at.clone()), (1, vec![10_000]));
    assert!(a1.earlier_issue_intents().is_empty(), "the current attempt's intent is not an earlier one");
    let a2 = begin_attempt(&a1, 20_000);
    assert_eq!(a2.earlier_issue_intents(), vec![10_000]);
    // A saga written before intent times were kept: the step's start stands in.
    let mut old = a2.clone();
    old.keys.issue_intent_at.clear();
    assert_eq!(old.earlier_issue_intents(), vec![old.run.step_started_at]);
    // Other steps record no intent.
    let (p, _) = at_step(Step::ProveNew);
    assert_eq!(begin_attempt(&p, 1).keys.issue_intent_at, p.keys.issue_intent_at);
}

#[test]
fn an_unknown_key_at_issue_stops_in_needs_attention_without_compensating() {
    let (s, mut t) = at_step(Step::IssueNew);
    let unknown = StepError {
        code: UNKNOWN_KEY.into(),
        message: unknown_key_message("iam user u", &[key_at("PERSON", Some(5))], &["OLD".into()]),
        retryable: false,
        may_have_applied: false,
        operator_fixable: true,
        retry_after: None,
    };
    let s = run(&s, Outcome::Failed(unknown), &mut t).saga;
    assert_eq!(s.step, Step::Finalize);
    assert_eq!(s.outcome.closing, Some(Status::NeedsAttention));
    assert_ne!(s.status, Status::Compensating);
    let f = s.outcome.failure.as_ref().unwrap();
    assert_eq!(f.code, UNKNOWN_KEY);
    assert!(f.message.contains("PERSON") && f.message.contains("OLD"), "{}", f.message);
    // Any other permanent failure at issue still compensates.
    let (s, mut t) = at_step(Step::IssueNew);
    assert_eq!(run(&s, Outcome::Failed(err(false, false)), &mut t).saga.outcome.closing, Some(Status::Compensated));
}

#[test]
fn target_states_print_as_their_json_names() {
    use super::TargetState::*;
    for t in [Untouched, Rejected, Uncertain, Accepted, HoldsNew, HoldsOld] {
        assert_eq!(serde_json::to_value(t).unwrap(), serde_json::Value::from(t.as_str()));
    }
}

/// A source whose issue kills the old credential (Auth0's rotate-secret).
fn dies_policy() -> Policy {
    Policy { old_dies_at_issue: true, ..policy() }
}

fn run_with(s: &Saga, outcome: Outcome, p: &Policy, t: &mut u128) -> Transition {
    *t += 1;
    let now = s.run.not_before.max(s.updated_at) + 1;
    advance(&begin_attempt(s, now), &outcome, p, clock(now, *t))
}

/// A secret saga at `step`, issued: no old key listed (the one secret died at issue).
fn issued_secret_saga(p: &Policy, t: &mut u128) -> Saga {
    let s = run_with(&new_saga(), done(Effect::Started { keys: vec![], limit: 2 }), p, t).saga;
    let s = run_with(&s, done(Effect::Issued { key_id: "secret-1".into() }), p, t).saga;
    assert_eq!((s.step, s.keys.secret_stored), (Step::ProveNew, true));
    s
}

#[test]
fn a_refused_write_of_a_credential_whose_old_one_died_is_retried_never_revoked() {
    let p = dies_policy();
    let mut t = 1;
    let s = issued_secret_saga(&p, &mut t);
    let s = run_with(&s, done(Effect::Proven), &p, &mut t).saga;
    assert_eq!(s.step, Step::PushToTarget);
    // The target refuses the write for good (e.g. AccessDenied on PutSecretValue).
    let s = run_with(&s, Outcome::Failed(err(false, false)), &p, &mut t).saga;
    assert_eq!((s.step, s.status), (Step::PushToTarget, Status::Running), "never RevokeNew: {s:#?}");
    assert!(s.keys.secret_stored, "the sealed new secret is kept for the next write");
    assert!(s.run.not_before >= s.updated_at + p.retry_cap, "the write is asked again after retry_cap");
    assert!(s.outcome.compensations.iter().any(|c| c.contains("kept new credential secret-1")), "{:?}", s.outcome.compensations);
    // Refused again: still kept, the note not repeated.
    let s = run_with(&s, Outcome::Failed(err(false, false)), &p, &mut t).saga;
    assert_eq!((s.step, s.outcome.compensations.len()), (Step::PushToTarget, 1));
    // A person fixed the target: the write lands and the saga succeeds.
    let s = run_with(&s, done(Effect::Pushed), &p, &mut t).saga;
    let s = run_with(&s, done(Effect::Verified(Verification::HoldsNew)), &p, &mut t).saga;
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::Succeeded)));
    // The same refusal with an ordinary source compensates (deletes the new key).
    let q = policy();
    let s = issued_secret_saga(&q, &mut t);
    let s = run_with(&s, done(Effect::Proven), &q, &mut t).saga;
    let s = run_with(&s, Outcome::Failed(err(false, false)), &q, &mut t).saga;
    assert_eq!(s.step, Step::RevokeNew);
}

#[test]
fn an_unproven_credential_whose_old_one_died_is_stored_and_then_checked_by_a_person() {
    let p = dies_policy();
    let mut t = 1;
    let s = issued_secret_saga(&p, &mut t);
    let not_yet = StepError {
        code: "SecretNotActiveYet".into(),
        message: "m".into(),
        retryable: true,
        may_have_applied: false,
        operator_fixable: false,
        retry_after: None,
    };
    let mut s = s;
    while s.step == Step::ProveNew {
        s.run.not_before = s.run.not_before.max(s.run.step_started_at + p.propagation_timeout);
        s = run_with(&s, Outcome::Failed(not_yet.clone()), &p, &mut t).saga;
    }
    assert_eq!((s.step, s.status), (Step::PushToTarget, Status::Running), "stored anyway, never revoked: {s:#?}");
    assert_eq!(s.run.not_before, s.updated_at, "at once");
    let s = run_with(&s, done(Effect::Pushed), &p, &mut t).saga;
    let s = run_with(&s, done(Effect::Verified(Verification::HoldsNew)), &p, &mut t).saga;
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::NeedsAttention)));
    assert_eq!(s.outcome.failure.as_ref().map(|f| f.step), Some(Step::ProveNew));
}

#[test]
fn an_issue_that_may_have_replaced_the_credential_stops_for_a_person_not_compensated() {
    let p = dies_policy();
    let mut t = 1;
    let s = run_with(&new_saga(), done(Effect::Started { keys: vec![], limit: 2 }), &p, &mut t).saga;
    // The sealed grant expired and the old secret is refused: the source says so.
    let gone = StepError {
        code: OLD_GONE.into(),
        message: "rotate it by hand".into(),
        retryable: false,
        may_have_applied: false,
        operator_fixable: true,
        retry_after: None,
    };
    let end = run_with(&s, Outcome::Failed(gone), &p, &mut t).saga;
    assert_eq!((end.step, end.outcome.closing), (Step::Finalize, Some(Status::NeedsAttention)), "{end:#?}");
    // A lost answer to the call, retried until the budget ran out.
    let mut s = s;
    while s.step == Step::IssueNew {
        s = run_with(&s, Outcome::Failed(err(true, true)), &p, &mut t).saga;
    }
    assert_eq!(s.outcome.closing, Some(Status::NeedsAttention));
    assert!(s.outcome.failure.as_ref().unwrap().message.contains("make a new one by hand"), "{:?}", s.outcome.failure);
    // A definite refusal on the first attempt changed nothing: compensated.
    let s = run_with(&new_saga(), done(Effect::Started { keys: vec![], limit: 2 }), &p, &mut t).saga;
    let s = run_with(&s, Outcome::Failed(err(false, false)), &p, &mut t).saga;
    assert_eq!(s.outcome.closing, Some(Status::Compensated));
}

#[test]
fn a_target_that_kept_the_old_credential_never_gets_the_dead_one_back_by_revoking() {
    let p = dies_policy();
    let mut t = 1;
    let s = issued_secret_saga(&p, &mut t);
    let s = run_with(&s, done(Effect::Proven), &p, &mut t).saga;
    let s = run_with(&s, done(Effect::Pushed), &p, &mut t).saga;
    let s = run_with(&s, done(Effect::Verified(Verification::HoldsOld)), &p, &mut t).saga;
    assert_eq!((s.step, s.outcome.closing), (Step::Finalize, Some(Status::NeedsAttention)), "{s:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// Any sequence of outcomes: a credential whose old one died at issue is
    /// never revoked nor "compensated" once issued, and the run ends.
    #[test]
    fn a_credential_whose_old_one_died_is_never_revoked(
        events in proptest::collection::vec((any::<u8>(), any::<bool>(), any::<bool>(), any::<bool>()), 0..200),
    ) {
        let p = dies_policy();
        let mut s = new_saga();
        let mut t: u128 = 10;
        let mut events = events.into_iter();
        let mut moves = 0;
        while !s.status.is_terminal() {
            moves += 1;
            prop_assert!(moves < 2_000, "no end: {s:?}");
            let outcome = match events.next() {
                Some((_, true, retryable, applied)) => Outcome::Failed(err(retryable, applied)),
                Some((v, false, _, _)) => done(effect_for(s.step, v)),
                None => done(effect_for(s.step, 3)),
            };
            s = run_with(&s, outcome, &p, &mut t).saga;
            prop_assert!(s.step != Step::RevokeNew, "revoking the only credential: {s:?}");
            if s.keys.new_key.is_some() {
                prop_assert!(s.status != Status::Compensating && s.outcome.closing != Some(Status::Compensated), "compensated after issue: {s:?}");
            }
        }
    }
}
