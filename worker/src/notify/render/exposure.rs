//! Exposed access keys: the emergency's outcome, blocked and settled exposures, uncovered keys.
//!
//! The layout is here; the sentences about the credential's provider (what
//! it did, its audit log, its commands) are the source's [`ExposureWords`].

use std::collections::BTreeMap;

use crate::clock::fmt_ms;
use crate::connectors::ExposureWords;
use crate::saga::{Millis, Saga, Status};

use super::super::document::{
    to_document, BlockedExposure, ExposedBlockedDoc, ExposedSettledDoc, ExposedUnmatchedDigestDoc, ExposedUnmatchedDoc, ExposureDoc, Head, OutcomeDoc,
    SettledExposure, Timeline, UncoveredKey,
};
use super::super::Notification;
use super::unmatched::unmatched_attributes;

/// The words for an exposed credential when its source has none of its
/// own: neutral, naming no connector.
pub const GENERIC_EXPOSURE_WORDS: ExposureWords = ExposureWords {
    provider_action: "not known: the credential's source does not say what its provider does to a credential it reports exposed.",
    still_active: "The exposed key {key} still works for whoever found it. keyturn could not replace it ({status}: see above). Deactivate it now if the risk outweighs the outage (its consumer stops working), or fix the cause and run `keyturn rotate {rotation}`.",
    find_use: "Find what the key was used for in its provider's audit log, from well before the event until {until}.",
    lift_restriction: "When the investigation is done, lift any restriction the provider put on {credential}.",
    kept_inactive: "The exposed key is kept inactive for forensics (policy exposed_key = keep_inactive). Delete it when the investigation is done.",
    deactivate_by_hand: "where the credential was made",
    settled_find_use: "Find what the key was used for while it was public, in its provider's audit log.",
    settled_lift: "Lift any restriction the provider put on the credential once the investigation is done.",
    owner: "{user}",
    owner_unknown: "an owner keyturn could not find in its account",
    uncovered_deactivated: "Give the consumer of {key} a new key, then delete {key}. Investigate its use and remove the public copy.",
    uncovered_failed: "Deactivate {key} by hand now, give its consumer a new key, investigate its use and remove the public copy.",
    uncovered_active: "Rotate {key} by hand now (or deactivate it, which breaks its consumer), investigate its use, remove the public copy; add a [[rotation]] for it so keyturn can replace it next time.",
    uncovered_many: "rotate (or deactivate) each active key by hand now, investigate its use and remove the public copy. A key no owner in this account has may be made up: check the event.",
};

/// The source's words, or the generic ones.
pub(super) fn exposure_words_of(words: Option<&'static ExposureWords>) -> &'static ExposureWords {
    words.unwrap_or(&GENERIC_EXPOSURE_WORDS)
}

fn after(t: Millis, seen: Millis) -> String {
    format!("{} (+{:.1}s after keyturn saw the event)", fmt_ms(t), t.saturating_sub(seen) as f64 / 1000.0)
}

/// The outcome notice of a saga that dealt with an exposed key (an
/// emergency rotation, or a saga taken over): `rotation.exposed_key`,
/// critical, with the incident's timeline, what AWS did and the next steps.
pub(super) fn exposed_notice(
    mut n: Notification,
    doc: &mut OutcomeDoc,
    saga: &Saga,
    e: &crate::saga::Exposure,
    words: Option<&'static ExposureWords>,
) -> Notification {
    use crate::saga::ExposedRole;
    let w = exposure_words_of(words);
    let state = if e.deleted_at.is_some() {
        "deleted"
    } else if e.inactive_at.is_some() {
        "inactive"
    } else {
        "ACTIVE"
    };
    let headline = match state {
        "ACTIVE" => "Exposed key is STILL ACTIVE",
        _ if e.role == ExposedRole::New && e.follow_up && saga.status == Status::Succeeded => "Exposed new key: rotated, replacing it again",
        "deleted" => "Exposed key replaced and deleted",
        _ => "Exposed key replaced and deactivated",
    };
    let credential = doc.credential.name.clone();
    let live = saga.effects.switched_at.filter(|_| saga.effects.target.may_hold_new());
    let steps = exposure_steps(saga, e, state, &credential, w);
    let mut t = format!("{headline}\n\n");
    t.push_str(&format!(
        "Exposed key:     {} ({} key of this rotation), now {state}\n",
        e.key_id,
        if e.role == ExposedRole::Old { "the old" } else { "the new" }
    ));
    t.push_str(&format!("AWS Health event: {}\n", if e.event.is_empty() { "(no ARN)" } else { &e.event }));
    t.push_str("Timeline:\n");
    t.push_str(&format!("  event seen by keyturn:      {}\n", fmt_ms(e.seen_at)));
    t.push_str(&format!(
        "  new key live in the target: {}\n",
        live.map(|l| if l >= e.seen_at { after(l, e.seen_at) } else { format!("{} (before the event)", fmt_ms(l)) }).unwrap_or_else(|| "no".into())
    ));
    t.push_str(&format!("  exposed key inactive:       {}\n", e.inactive_at.map(|i| after(i, e.seen_at)).unwrap_or_else(|| "no".into())));
    t.push_str(&format!(
        "  exposed key deleted:        {}\n",
        e.deleted_at.map(|d| after(d, e.seen_at)).unwrap_or_else(|| if e.keep_inactive && e.inactive_at.is_some() {
            "no: kept inactive for forensics".into()
        } else {
            "no".into()
        })
    ));
    t.push_str(&format!("What AWS did:    {}\n", w.provider_action));
    t.push_str("Next steps:\n");
    for (i, step) in steps.iter().enumerate() {
        t.push_str(&format!("  {}. {step}\n", i + 1));
    }
    t.push('\n');
    n.text = t + &n.text;
    n.subject = format!("[keyturn] {headline}: {} ({credential})", saga.rotation_id).replace(['\r', '\n'], " ").chars().take(100).collect();
    doc.head = Head { event: "rotation.exposed_key", severity: "critical" };
    doc.exposure = Some(ExposureDoc {
        key_id: e.key_id.clone(),
        role: if e.role == ExposedRole::Old { "old" } else { "new" },
        state: state.to_ascii_lowercase(),
        health_event: e.event.clone(),
        timeline: Timeline {
            event_seen: fmt_ms(e.seen_at),
            new_key_live: live.map(fmt_ms),
            exposed_key_inactive: e.inactive_at.map(fmt_ms),
            exposed_key_deleted: e.deleted_at.map(fmt_ms),
            seconds_to_inactive: e.inactive_at.map(|i| i.saturating_sub(e.seen_at) as f64 / 1000.0),
        },
        aws_quarantine: w.provider_action,
        follow_up_rotation: e.follow_up,
        next_steps: steps,
    });
    n.attributes.insert("event", "rotation.exposed_key".into());
    n.attributes.insert("severity", "critical".into());
    n
}

/// What a person should do about an exposed key, in order.
fn exposure_steps(saga: &Saga, e: &crate::saga::Exposure, state: &str, credential: &str, w: &ExposureWords) -> Vec<String> {
    let mut steps = Vec::new();
    let (rotation, key) = (saga.rotation_id.as_str(), e.key_id.as_str());
    if state == "ACTIVE" {
        steps.push(ExposureWords::say(w.still_active, &[("status", saga.status.as_str()), ("rotation", rotation), ("key", key)]));
    }
    if e.follow_up {
        steps.push(format!(
            "The exposed key was this rotation's new key: keyturn starts a fresh rotation of {} now; watch for its notice.",
            saga.rotation_id
        ));
    }
    let until = fmt_ms(e.deleted_at.or(e.inactive_at).unwrap_or(saga.updated_at));
    steps.push(ExposureWords::say(w.find_use, &[("until", until.as_str()), ("key", key)]));
    steps.push("Remove the public copy of the key (the repository, commit history, paste or package where it was found).".into());
    steps.push(ExposureWords::say(w.lift_restriction, &[("credential", credential)]));
    if e.deleted_at.is_none() && e.inactive_at.is_some() && e.keep_inactive {
        steps.push(ExposureWords::say(w.kept_inactive, &[("rotation", rotation)]));
    }
    steps
}

/// An exposed key a running saga could not take over (it needs a person).
#[allow(clippy::too_many_arguments)]
pub fn render_exposed_blocked(
    rotation_id: &str,
    saga_id: &str,
    key_id: &str,
    why: &str,
    credential_kind: &str,
    target_kind: &str,
    correlation_id: &str,
    words: Option<&'static ExposureWords>,
) -> Notification {
    let w = exposure_words_of(words);
    let by_hand = ExposureWords::say(w.deactivate_by_hand, &[("key", key_id)]);
    let action = format!(
        "The exposed key {key_id} may still be active. Saga {saga_id} holds this credential and cannot be taken over: {why}. If it needs attention with both keys in place, decide now which key the target uses and run `keyturn resolve {saga_id} --keep new|old`; deactivate the exposed key by hand if its consumer can be stopped ({by_hand})."
    );
    let d = ExposedBlockedDoc {
        head: Head { event: "rotation.exposed_key", severity: "critical" },
        rotation_id: rotation_id.into(),
        saga_id: saga_id.into(),
        correlation_id: correlation_id.into(),
        exposure: BlockedExposure { key_id: key_id.into(), state: "unknown", aws_quarantine: w.provider_action, blocked: why.into() },
        recommended_action: action,
        status_command: format!("keyturn status {saga_id}"),
    };
    let text = format!(
        "Exposed key: a person must act\n\nRotation:        {}\nSaga:            {}\nExposed key:     {}\nWhat AWS did:    {}\nRecommended action: {}\nMore:            {}\n",
        d.rotation_id, d.saga_id, d.exposure.key_id, d.exposure.aws_quarantine, d.recommended_action, d.status_command
    );
    Notification {
        subject: format!("[keyturn] Exposed key: a person must act: {rotation_id}").chars().take(100).collect(),
        text,
        document: to_document(&d),
        attributes: exposed_key_attributes(rotation_id, credential_kind, target_kind, correlation_id),
    }
}

/// The message attributes of a `rotation.exposed_key` notice (critical).
fn exposed_key_attributes(rotation_id: &str, credential_kind: &str, target_kind: &str, correlation_id: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("event", "rotation.exposed_key".to_string()),
        ("severity", "critical".to_string()),
        ("rotation_id", rotation_id.to_string()),
        ("credential_kind", credential_kind.to_string()),
        ("target_kind", target_kind.to_string()),
        ("correlation_id", correlation_id.to_string()),
    ])
}

/// An exposed key with nothing left to rotate (already rotated away, or
/// inactive and now deleted or kept): `rotation.exposed_key`, critical —
/// the key was public, its past use needs looking at.
#[allow(clippy::too_many_arguments)]
pub fn render_exposed_settled(
    rotation_id: &str,
    key_id: &str,
    what: &str,
    event_arn: &str,
    credential_kind: &str,
    target_kind: &str,
    correlation_id: &str,
    words: Option<&'static ExposureWords>,
) -> Notification {
    let w = exposure_words_of(words);
    let steps = [ExposureWords::say(w.settled_find_use, &[("key", key_id)]), "Remove the public copy of the key.".to_string(), w.settled_lift.to_string()];
    let d = ExposedSettledDoc {
        head: Head { event: "rotation.exposed_key", severity: "critical" },
        rotation_id: rotation_id.into(),
        correlation_id: correlation_id.into(),
        exposure: SettledExposure {
            key_id: key_id.into(),
            state: "settled",
            found: what.into(),
            health_event: event_arn.into(),
            aws_quarantine: w.provider_action,
            next_steps: steps.to_vec(),
        },
    };
    let x = &d.exposure;
    let text = format!(
        "Exposed key: nothing left to rotate\n\nRotation:        {}\nExposed key:     {}\nAWS Health event: {}\nWhat keyturn found: {}\nWhat AWS did:    {}\nNext steps:\n{}",
        d.rotation_id,
        x.key_id,
        x.health_event,
        x.found,
        x.aws_quarantine,
        x.next_steps.iter().enumerate().map(|(i, s)| format!("  {}. {s}\n", i + 1)).collect::<String>()
    );
    Notification {
        subject: format!("[keyturn] Exposed key {key_id}: nothing left to rotate ({rotation_id})").chars().take(100).collect(),
        text,
        document: to_document(&d),
        attributes: exposed_key_attributes(rotation_id, credential_kind, target_kind, correlation_id),
    }
}

/// An exposed access key no rotation covers: `rotation.unmatched`, critical.
/// `deactivated`: `None` not configured to; `Some(Ok)` done; `Some(Err)` failed.
pub fn render_exposed_unmatched(
    account: &str,
    key_id: &str,
    user: Option<&str>,
    event_arn: &str,
    deactivated: Option<std::result::Result<(), String>>,
    credential_kind: &str,
    words: Option<&'static ExposureWords>,
) -> Notification {
    let w = exposure_words_of(words);
    let who = user.map(|u| ExposureWords::say(w.owner, &[("user", u)])).unwrap_or_else(|| w.owner_unknown.into());
    let (state, action) = match &deactivated {
        Some(Ok(())) => {
            ("deactivated by keyturn (exposure.deactivate_uncovered): whatever used this key has stopped working".to_string(), w.uncovered_deactivated)
        }
        Some(Err(e)) => (format!("STILL ACTIVE: keyturn tried to deactivate it and failed ({e})"), w.uncovered_failed),
        None => ("STILL ACTIVE: no rotation covers it and exposure.deactivate_uncovered is off".to_string(), w.uncovered_active),
    };
    let action = ExposureWords::say(action, &[("key", key_id)]);
    let text = format!(
        "Exposed access key that no rotation covers\n\nKey:             {key_id}\nUser:            {who}\nAccount:         {account}\nAWS Health event: {event_arn}\nKey now:         {state}\nWhat AWS did:    {}\nRecommended action: {action}\n",
        w.provider_action
    );
    Notification {
        subject: format!("[keyturn] Exposed key {key_id} not covered by any rotation (account {account})").chars().take(100).collect(),
        text,
        document: to_document(&ExposedUnmatchedDoc {
            head: Head { event: "rotation.unmatched", severity: "critical" },
            account_id: account.into(),
            user: user.map(str::to_string),
            key_id: key_id.into(),
            exposed: true,
            health_event: event_arn.into(),
            deactivated: matches!(deactivated, Some(Ok(()))),
            key_state: state,
            aws_quarantine: w.provider_action,
            recommended_action: action,
        }),
        attributes: unmatched_attributes("critical", credential_kind),
    }
}

/// Exposed access keys no rotation covers, from one AWS Health event: one
/// critical `rotation.unmatched` notice. One key gets
/// [`render_exposed_unmatched`]'s notice; more get a digest (`keys[]`).
/// Each item: (key id, owner if found, deactivation result).
#[allow(clippy::type_complexity)]
pub fn render_exposed_unmatched_digest(
    account: &str,
    items: &[(String, Option<String>, Option<std::result::Result<(), String>>)],
    event_arn: &str,
    credential_kind: &str,
    words: Option<&'static ExposureWords>,
) -> Notification {
    if let [(key, owner, deactivated)] = items {
        return render_exposed_unmatched(account, key, owner.as_deref(), event_arn, deactivated.clone(), credential_kind, words);
    }
    let w = exposure_words_of(words);
    let state = |d: &Option<std::result::Result<(), String>>| match d {
        Some(Ok(())) => "deactivated by keyturn".to_string(),
        Some(Err(e)) => format!("STILL ACTIVE: deactivation failed ({e})"),
        None => "STILL ACTIVE".to_string(),
    };
    let mut text = format!(
        "{} exposed access keys that no rotation covers\n\nAccount:         {account}\nAWS Health event: {event_arn}\nWhat AWS did:    {}\nKeys:\n",
        items.len(),
        w.provider_action
    );
    for (key, owner, d) in items {
        text.push_str(&format!("  {key}  {}  {}\n", owner.as_deref().unwrap_or("(no user found in this account)"), state(d)));
    }
    text.push_str(&format!("Recommended action: {}\n", w.uncovered_many));
    Notification {
        subject: format!("[keyturn] {} exposed keys not covered by any rotation (account {account})", items.len()),
        text,
        document: to_document(&ExposedUnmatchedDigestDoc {
            head: Head { event: "rotation.unmatched", severity: "critical" },
            account_id: account.into(),
            exposed: true,
            health_event: event_arn.into(),
            count: items.len(),
            keys: items
                .iter()
                .map(|(k, o, d)| UncoveredKey { key_id: k.clone(), user: o.clone(), deactivated: matches!(d, Some(Ok(()))), key_state: state(d) })
                .collect(),
            aws_quarantine: w.provider_action,
        }),
        attributes: unmatched_attributes("critical", credential_kind),
    }
}
