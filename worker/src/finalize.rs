//! The end of a saga and the notices on the way: the outcome notification,
//! the findings' workflow, quarantine counting, and the prompts of a wait on
//! a person. Erasing the secret and releasing the lock happen in the commit
//! that follows `finalize` (see `store::commit`).

use std::sync::Arc;

use tracing::{info, warn};

use crate::connectors::{ByHand, Rotation};
use crate::error::{Error, Result};
use crate::notify::{self, Notifier};
use crate::queue::Queue;
use crate::saga::{self, Effect, FindingRef, Prompt, Saga, Status};
use crate::securityhub::{SecurityHub, Workflow};
use crate::shared::{ms, Shared};

/// The end of a saga and the notices on the way (the step pipeline's
/// `finalize` and wait steps; commands use its findings and quarantine
/// notices).
pub struct Finalizer<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) notifier: Notifier,
    pub(crate) securityhub: SecurityHub,
}

impl<Q: Queue> Finalizer<Q> {
    /// Best effort: a Security Hub outage must not fail a rotation.
    pub(crate) async fn update_findings(&self, findings: &[FindingRef], workflow: Workflow, note: &str) {
        match self.securityhub.update(findings, workflow, note).await {
            Ok(n) => info!(processed = n, of = findings.len(), ?workflow, "findings updated"),
            Err(e) => warn!(error = %e, ?workflow, "could not update findings"),
        }
    }

    /// A wait on a person came due: ask, remind, or report the deadline.
    /// `hand`: the person's steps (with the console handover added by
    /// [`crate::handover::Handovers::handover_prompt`], which looked first).
    pub(crate) async fn prompt_person(&self, rot: &Rotation, saga: &Saga, hand: ByHand) -> Result<Effect> {
        let kind = saga::prompt(saga, self.shared.now_ms());
        if kind == Prompt::Expired {
            warn!(deadline = saga.person.deadline, "nobody acted before the deadline");
            return Ok(Effect::Expired);
        }
        // `prompts` counts the notices sent so far: the first was the
        // request itself, so it is also the number of this reminder.
        let n = notify::render_prompt_for(rot, saga, &hand, kind == Prompt::Remind);
        self.notifier.publish(&n).await?;
        info!(event = %n.attributes["event"], step = %saga.step, "asked a person to act");
        Ok(Effect::Prompted)
    }

    /// A wait of a saga with the trust shape came due (not past its
    /// deadline): ask or remind, with the source's steps.
    pub(crate) async fn prompt_trust(&self, rot: &Rotation, saga: &Saga, steps: &crate::connectors::TrustSteps) -> Result<Effect> {
        let reminder = saga::prompt(saga, self.shared.now_ms()) == Prompt::Remind;
        let n = notify::render_trust_prompt_for(rot, saga, steps, reminder);
        self.notifier.publish(&n).await?;
        info!(event = %n.attributes["event"], step = %saga.step, "asked a person to act");
        Ok(Effect::Prompted)
    }

    /// Notify about the outcome. Erasing the secret and releasing the lock
    /// happen in the commit that follows.
    pub(crate) async fn finalize(&self, rot: &Rotation, saga: &Saga) -> Result<()> {
        let mut end = saga.clone();
        end.status = saga.outcome.closing.unwrap_or(Status::NeedsAttention);
        // Nothing to list for a credential made by hand: the notice shows
        // what keyturn recorded instead. Nothing to list either after a
        // plain success: the record says which key is left.
        let keys = if saga.person.manual {
            None
        } else if let Some(left) = end.keys_left() {
            Some(left)
        } else {
            match crate::accounts::for_saga(&saga.saga_id, rot.source.inventory()).await {
                Ok(k) => Some(k),
                Err(e) => {
                    warn!(error = %e, "could not list keys for the notification");
                    None
                }
            }
        };
        let credential = rot.source.describe();
        let target = rot.target.describe();
        let n = notify::render(
            &end,
            &notify::Context {
                credential_kind: rot.source.kind(),
                credential: &credential,
                target_kind: rot.target.kind(),
                target: &target,
                keys_now: keys.as_deref(),
                advice: if end.trust.is_some() {
                    // The source names the credential it uses now, as just listed.
                    let in_use = keys.as_ref().and_then(|k| k.iter().find(|k| k.active)).map(|k| k.id.as_str());
                    rot.source.trust_advice(&end, in_use)
                } else {
                    end.outcome.failure.as_ref().and_then(|f| {
                        let rotate = format!("keyturn rotate {}", end.rotation_id);
                        rot.target.advice(&f.code, &rotate).or_else(|| rot.source.advice(&f.code, &rotate))
                    })
                },
                words: rot.target.by_hand_words(),
                exposure: rot.source.exposure_words(),
            },
        );
        self.notifier.publish(&n).await?;
        info!(event = %n.attributes["event"], "notification published");
        if let Some(metric) = crate::metrics::outcome_metric(end.status) {
            crate::metrics::emit(
                &[("RotationId", &end.rotation_id), ("TargetKind", rot.target.kind()), ("Trigger", crate::metrics::trigger_dimension(&end.trigger))],
                &[crate::metrics::Metric { name: metric, unit: "Count", value: 1.0 }],
            );
        }
        if !saga.findings.is_empty() {
            let (workflow, note) = finding_note(&end);
            self.update_findings(&saga.findings, workflow, &note).await;
        }
        self.count_outcome(&end).await
    }

    /// Count a finished saga towards quarantine; notify when it begins,
    /// changes reason, disables the rotation, or ends.
    async fn count_outcome(&self, end: &Saga) -> Result<()> {
        let rots = self.shared.rotations();
        let Some(cfg) = rots.configs.iter().find(|r| r.id == end.rotation_id) else { return Ok(()) };
        // A resolved saga ends a second time, and that ending counts too.
        let counted = if end.resolution.endings == 0 { end.saga_id.clone() } else { format!("{}#{}", end.saga_id, end.resolution.endings) };
        let reason = end.outcome.failure.as_ref().map(|f| f.code.clone()).unwrap_or_else(|| end.status.as_str().to_string());
        for _ in 0..3 {
            let (health, version) = self.shared.store.health(&end.rotation_id).await?;
            let (next, change) = crate::quarantine::record(
                &health,
                &counted,
                end.status == Status::Succeeded,
                &reason,
                self.shared.now_ms(),
                cfg.policy.quarantine_after,
                ms(cfg.policy.quarantine_disable_after.0),
            );
            if next == health {
                return Ok(());
            }
            match self.shared.store.save_health(&end.rotation_id, &next, version).await {
                Ok(()) => return self.announce(&end.rotation_id, &next, change, Some(&end.saga_id)).await,
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { saga_id: end.saga_id.clone(), expected: 0 })
    }

    pub(crate) async fn announce(
        &self,
        rotation_id: &str,
        h: &crate::quarantine::Health,
        change: crate::quarantine::Change,
        saga: Option<&str>,
    ) -> Result<()> {
        if change == crate::quarantine::Change::None {
            return Ok(());
        }
        let Some(rot) = self.shared.rotations().get(rotation_id).cloned() else { return Ok(()) };
        warn!(rotation = rotation_id, ?change, "quarantine changed");
        let n =
            notify::render_quarantine(rotation_id, &rot.source.describe(), &rot.target.describe(), rot.source.kind(), rot.target.kind(), h, change, saga);
        self.notifier.publish(&n).await
    }
}

/// The workflow status and note for a saga's findings when it ends.
pub fn finding_note(s: &Saga) -> (Workflow, String) {
    let old = s.keys.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ");
    let new = s.keys.new_key.as_deref().unwrap_or("(none)");
    match s.status {
        Status::Succeeded => (
            Workflow::Resolved,
            format!(
                "keyturn rotated the access key (saga {}): new key {new} replaced {}; the old key was deleted.",
                s.saga_id,
                if old.is_empty() { "no previous key".to_string() } else { old }
            ),
        ),
        other => {
            let why = s.outcome.failure.as_ref().map(|f| format!("{} at {}: {}", f.code, f.step, f.message)).unwrap_or_default();
            (
                Workflow::Unchanged,
                format!("keyturn rotation {} (saga {}) ended {}: {why}. See: keyturn status {}", s.rotation_id, s.saga_id, other.as_str(), s.saga_id),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{Failure, KeyRef, Step};

    #[test]
    fn finding_notes_say_what_replaced_what_or_why_it_failed() {
        let mut s = Saga::new("S1".into(), "auth0-ses".into(), "c".into(), "t".into(), 0, 1);
        s.keys.old_keys = vec![KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
        s.keys.new_key = Some("AKIANEW".into());
        s.status = Status::Succeeded;
        let (w, note) = finding_note(&s);
        assert_eq!(w, Workflow::Resolved);
        assert_eq!(note, "keyturn rotated the access key (saga S1): new key AKIANEW replaced AKIAOLD; the old key was deleted.");
        s.status = Status::Compensated;
        s.outcome.failure =
            Some(Failure { step: Step::PushToTarget, code: "insufficient_scope".into(), message: "Insufficient scope".into(), operator_fixable: true });
        let (w, note) = finding_note(&s);
        assert_eq!(w, Workflow::Unchanged, "a failed rotation leaves the finding open");
        assert!(note.contains("ended compensated: insufficient_scope at push_to_target: Insufficient scope"), "{note}");
    }
}
