//! The outcome of a saga: what happened, why, the keys and the target now, what to do.

use std::collections::BTreeMap;

use crate::clock::{fmt_date, fmt_ms};
use crate::connectors::HandWords;
use crate::saga::{KeyRef, Saga, Status, TargetState};

use super::super::document::{to_document, FailureDoc, Head, KeyLine, Named, OutcomeDoc, TargetNow};
use super::super::{correlate, event_of, sent_by, Context, Notification};
use super::exposure::exposed_notice;

fn headline(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "Rotation succeeded",
        Status::Compensated => "Rotation failed",
        Status::Refused => "Rotation refused",
        Status::NeedsAttention => "Rotation needs attention",
        Status::RolledBack => "Rotation rolled back",
        Status::Running | Status::Compensating => "Rotation in progress",
    }
}

/// What a person should do, from the outcome and the failure code; a
/// connector's own advice for its error code comes first.
pub fn recommended_action(saga: &Saga, advice: Option<&str>, words: Option<&'static HandWords>) -> String {
    if let (Some(a), false) = (advice, saga.status == Status::Succeeded && saga.trust.is_none()) {
        return a.to_string();
    }
    if saga.person.manual {
        return recommended_by_hand(saga, words_of(words));
    }
    let rotate = format!("keyturn rotate {}", saga.rotation_id);
    let code = saga.outcome.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    match (saga.status, code) {
        (Status::Succeeded, _) => "None. The new key is live and the old key is deleted.".into(),
        (Status::RolledBack, _) => format!(
            "Both keys are active and the target holds the new key. Find what still used the old key, move it to the new key, then delete the old key or run `{rotate}` again."
        ),
        // The credential's source words these in its own terms (`CredentialSource::advice`).
        (_, "TooManyKeys") => format!("Delete the credential that is not in use (check its last use), then run `{rotate}`."),
        (_, "OldKeyUsedAfterSwitch") => format!(
            "The old key is inactive but something used it after the switch. Find that consumer (CloudTrail, the key's last-used service), move it to the new key, then delete the old key. To undo the deactivation now: `keyturn rollback {}`.",
            saga.saga_id
        ),
        (_, "KeyNotPropagated") => format!("The new key never authenticated and was deleted. Check the credential's service, then run `{rotate}`."),
        (_, crate::saga::OLD_GONE) => "The credential keyturn holds no longer works and the one that replaced it was lost: keyturn cannot make another by itself. Follow the steps in the failure message, then run `keyturn doctor`.".into(),
        (_, "KeysOfEarlierSaga") => "Nothing was changed. The failure message names the earlier saga that created one of the two keys and what to do about it.".into(),
        (Status::NeedsAttention, _) if saga.unresolved() => format!(
            "Do not delete either key by hand yet. keyturn keeps this credential locked and watches which key the target uses (both keys' last use by the target's service, and the target itself); you get `rotation.evidence` when it is clear. If you already know, run `keyturn resolve {id} --keep new` (or `--keep old`): keyturn then deactivates the other key, waits the grace period, checks its last use and deletes it.",
            id = saga.saga_id
        ),
        (Status::NeedsAttention, _) => "Check the target's settings: it may hold the new key. Do not delete either key until you know which one it uses; `keyturn status` shows the timeline.".into(),
        (Status::Compensated, _) => format!("Fix the cause above, then run `{rotate}`. Nothing was changed that needs undoing."),
        _ => "See `keyturn status` for the timeline.".into(),
    }
}

/// The words for a credential made by hand when the target has none of its
/// own: neutral, naming no connector.
pub(super) const GENERIC_WORDS: HandWords = HandWords {
    succeeded: "None. The target uses the new token and the old token is deleted.",
    deadline_passed: "No token was handed over in time; nothing changed and the target still uses the old token. If you generated a token for this rotation, delete it where you generated it. Run `{rotate}` when you are ready.",
    old_not_deleted: "The target uses the new token. Delete {old} where it was generated; it stays valid until it is deleted or expires. Then nothing else is needed.",
    rejected: "The target rejected the new token, so nothing was saved and it still uses the old token. Delete the unused new token ({new}), check that it was copied whole, then run `{rotate}`.",
    unhealthy: "The target may hold the new token but is not healthy. Fix it; do not delete either token until it works; then delete {old} and any unused token.",
    failed: "Fix the cause above; nothing was saved in the target, which still uses the old token. If you generated a token for this rotation, delete it, then run `{rotate}`.",
    old_unrecorded: "the token the target used before this rotation (its creation date was not recorded: it is the older one)",
    new_saved: "saved in the target",
    target_rejected: "unchanged: the target rejected the new token, nothing was saved",
    after_handover: "keyturn then hands the new token to the target, which checks it, and reads the target back. You will be told what happened.",
    switched: "The target now uses the new token: it was checked and saved{at}.",
    keep_new: "The token to delete is {old}. Do NOT delete {new}: the target uses it now.",
};

/// The target's words, or the generic ones.
pub(super) fn words_of(words: Option<&'static HandWords>) -> &'static HandWords {
    words.unwrap_or(&GENERIC_WORDS)
}

/// The old credential as the person identified it, for sentences.
pub(super) fn old_described(saga: &Saga, w: &HandWords) -> String {
    match saga.keys.old_keys.first() {
        Some(k) => match k.created_at {
            Some(ms) if !k.id.starts_with("created ") => format!("the token {} created on {}", k.id, fmt_date(ms)),
            Some(ms) => format!("the token created on {}", fmt_date(ms)),
            None => format!("the token {}", k.id),
        },
        None => w.old_unrecorded.into(),
    }
}

pub(super) fn new_described(saga: &Saga) -> String {
    match &saga.keys.new_key {
        Some(id) => format!("the token {id}"),
        None => "the new token".into(),
    }
}

/// What a person should do when the credential is made by hand, in the target's words.
fn recommended_by_hand(saga: &Saga, w: &HandWords) -> String {
    let rotate = format!("keyturn rotate {}", saga.rotation_id);
    let code = saga.outcome.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    let step = saga.outcome.failure.as_ref().map(|f| f.step);
    let (old, new) = (old_described(saga, w), new_described(saga));
    let vars = [("rotate", rotate.as_str()), ("old", old.as_str()), ("new", new.as_str())];
    let text = match (saga.status, code) {
        (Status::Succeeded, _) => w.succeeded,
        (_, "DeadlinePassed") => w.deadline_passed,
        (_, "OldNotConfirmedDeleted") => w.old_not_deleted,
        (Status::Compensated, _) if step == Some(crate::saga::Step::PushToTarget) => w.rejected,
        (Status::NeedsAttention, _) => w.unhealthy,
        (Status::Compensated, _) => w.failed,
        _ => "See `keyturn status` for the timeline.",
    };
    HandWords::say(text, &vars)
}

/// Tokens of a by-hand credential: no API lists them, so as keyturn recorded them.
fn token_lines(saga: &Saga, w: &HandWords) -> Vec<(String, &'static str, &'static str)> {
    let mut out = Vec::new();
    let old = if saga.effects.old_deleted {
        "deleted (confirmed by a person)"
    } else if saga.status == Status::Succeeded {
        "deleted"
    } else {
        "valid, in the console"
    };
    match saga.keys.old_keys.first() {
        Some(k) => out.push((k.id.clone(), old, "old token")),
        None => out.push(("(not recorded)".into(), old, "old token")),
    }
    if let Some(id) = &saga.keys.new_key {
        let state = match saga.effects.target {
            TargetState::Rejected | TargetState::Untouched | TargetState::HoldsOld => "unused: delete it in the console",
            _ => w.new_saved,
        };
        out.push((id.clone(), state, "new token"));
    }
    out
}

fn key_role(saga: &Saga, id: &str) -> &'static str {
    if saga.keys.new_key.as_deref() == Some(id) {
        "new key"
    } else if saga.keys.old_keys.iter().any(|k| k.id == id) {
        "old key"
    } else {
        "unknown key"
    }
}

fn key_lines(saga: &Saga, keys_now: Option<&[KeyRef]>, w: &HandWords) -> Vec<(String, &'static str, &'static str)> {
    if saga.person.manual {
        return token_lines(saga, w);
    }
    let Some(now) = keys_now else { return Vec::new() };
    let mut ids: Vec<&str> = saga.keys.old_keys.iter().map(|k| k.id.as_str()).chain(saga.keys.new_key.as_deref()).collect();
    for k in now {
        if !ids.contains(&k.id.as_str()) {
            ids.push(&k.id);
        }
    }
    ids.into_iter()
        .map(|id| {
            let state = match now.iter().find(|k| k.id == id) {
                Some(k) if k.active => "active",
                Some(_) => "inactive",
                None => "deleted",
            };
            (id.to_string(), state, key_role(saga, id))
        })
        .collect()
}

fn target_line(saga: &Saga, w: &HandWords) -> &'static str {
    if let Some(t) = &saga.trust {
        // Nothing reads the target back: what the person said.
        return if t.trusted {
            "trusts the new credential, as the person confirmed (it may no longer trust the old one)"
        } else {
            "not confirmed to trust the new credential (it trusts what it trusted before, unless a person changed it)"
        };
    }
    if saga.person.manual {
        return match saga.effects.target {
            TargetState::Untouched => "unchanged (never sent the new token)",
            TargetState::Rejected => w.target_rejected,
            TargetState::HoldsOld => "holds the old token",
            TargetState::Uncertain => "unknown: it may hold the new token",
            TargetState::Accepted | TargetState::HoldsNew => "new token saved",
        };
    }
    match saga.effects.target {
        TargetState::Untouched => "unchanged (never sent the new key)",
        TargetState::Rejected => "unchanged (it rejected the new key)",
        TargetState::HoldsOld => "holds the old key",
        TargetState::Uncertain => "unknown: it may hold the new key",
        TargetState::Accepted | TargetState::HoldsNew => "holds the new key",
    }
}

/// The credential the source uses now (a saga with the trust shape), from
/// the keys just listed: the active one, and whether it is the new or old.
fn in_use_now(saga: &Saga, keys_now: Option<&[KeyRef]>) -> String {
    match keys_now.and_then(|k| k.iter().find(|k| k.active)) {
        Some(k) => format!("{} ({})", k.id, key_role(saga, &k.id)),
        None if keys_now.is_some() => "none".into(),
        None => "unknown (could not list)".into(),
    }
}

/// Render the notification for a saga's current state.
pub fn render(saga: &Saga, ctx: &Context<'_>) -> Notification {
    let (event, severity) = event_of(saga.status);
    let subject = format!("[keyturn] {}: {} ({}) -> {}", headline(saga.status), saga.rotation_id, ctx.credential, ctx.target);
    // SNS subjects: one line, at most 100 characters.
    let subject: String = subject.replace(['\r', '\n'], " ").chars().take(100).collect();
    let w = words_of(ctx.words);
    let mut doc = OutcomeDoc {
        head: Head { event, severity },
        rotation_id: saga.rotation_id.clone(),
        saga_id: saga.saga_id.clone(),
        status: saga.status.as_str(),
        trigger: saga.trigger.clone(),
        credential: Named::new(ctx.credential_kind, ctx.credential),
        target: TargetNow { kind: ctx.target_kind.into(), name: ctx.target.into(), state: target_line(saga, w) },
        failure: saga.outcome.failure.as_ref().map(|f| FailureDoc {
            step: f.step.as_str(),
            code: f.code.clone(),
            message: f.message.clone(),
            operator_fixable: f.operator_fixable,
        }),
        rolled_back: saga.outcome.compensations.clone(),
        keys: key_lines(saga, ctx.keys_now, w).into_iter().map(|(id, state, role)| KeyLine { id, state, role }).collect(),
        recommended_action: recommended_action(saga, ctx.advice.as_deref(), ctx.words),
        next_attempt: None,
        status_command: format!("keyturn status {}", saga.saga_id),
        exposure: None,
        // The credential the source uses now (a saga with the trust shape).
        in_use_now: saga.trust.is_some().then(|| in_use_now(saga, ctx.keys_now)),
    };

    // The text says what the document says, in lines.
    let d = &doc;
    let mut t = String::new();
    t.push_str(&format!("{}\n\n", headline(saga.status)));
    t.push_str(&format!("Rotation:        {}\n", d.rotation_id));
    t.push_str(&format!("Saga:            {}\n", d.saga_id));
    t.push_str(&format!("Credential:      {} ({})\n", d.credential.name, d.credential.kind));
    t.push_str(&format!("Target:          {} ({})\n", d.target.name, d.target.kind));
    t.push_str(&format!("Outcome:         {}\n", d.status));
    t.push_str(&format!("Started:         {} by {}\n", fmt_ms(saga.created_at), d.trigger));
    if let Some(r) = &saga.origin.request {
        let event = r.event_account.as_deref().map(|a| (a, r.event_source.as_deref().unwrap_or("")));
        t.push_str(&format!("Requested by:    {} (as the request says); {}\n", r.requester, sent_by(r.sender.as_deref(), event)));
    }
    if let Some(f) = &d.failure {
        t.push_str(&format!("Failed step:     {}\n", f.step));
        t.push_str(&format!("Error code:      {}\n", f.code));
        t.push_str(&format!("Error message:   {}\n", f.message));
        t.push_str(&format!("Operator can fix: {}\n", if f.operator_fixable { "yes" } else { "no (transient or external)" }));
    }
    t.push_str(&format!("Rolled back:     {}\n", if d.rolled_back.is_empty() { "nothing".to_string() } else { d.rolled_back.join("; ") }));
    t.push_str(if saga.person.manual { "Tokens now (no API lists them; as keyturn recorded them):\n" } else { "Keys now:\n" });
    if d.keys.is_empty() {
        t.push_str("  (could not list the keys)\n");
    }
    for k in &d.keys {
        t.push_str(&format!("  {}  {:<8}  {}\n", k.id, k.state, k.role));
    }
    t.push_str(&format!("Target now:      {}\n", d.target.state));
    if let Some(in_use) = &d.in_use_now {
        t.push_str(&format!("In use now:      {in_use}\n"));
    }
    t.push_str(&format!("Recommended action: {}\n", d.recommended_action));
    t.push_str("Next attempt:    none scheduled (start one with keyturn rotate)\n");
    t.push_str(&format!("More:            {}\n", d.status_command));
    let attributes = BTreeMap::from([
        ("event", event.to_string()),
        ("severity", severity.to_string()),
        ("rotation_id", saga.rotation_id.clone()),
        ("credential_kind", ctx.credential_kind.to_string()),
        ("target_kind", ctx.target_kind.to_string()),
    ]);
    let n = Notification { subject, text: t, document: serde_json::Value::Null, attributes };
    let n = match &saga.exposure {
        Some(e) => exposed_notice(n, &mut doc, saga, e, ctx.exposure),
        None => n,
    };
    correlate(Notification { document: to_document(&doc), ..n }, saga)
}
