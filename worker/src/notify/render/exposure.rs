//! Exposed access keys: the emergency's outcome, blocked and settled exposures, uncovered keys.

use std::collections::BTreeMap;

use crate::clock::fmt_ms;
use crate::saga::{Millis, Saga, Status};

use super::super::document::{
    to_document, BlockedExposure, ExposedBlockedDoc, ExposedSettledDoc, ExposedUnmatchedDigestDoc, ExposedUnmatchedDoc, ExposureDoc, Head, OutcomeDoc,
    SettledExposure, Timeline, UncoveredKey,
};
use super::super::Notification;
use super::unmatched::unmatched_attributes;

/// What AWS does to a user whose key it reports exposed, for the notices.
pub const AWS_QUARANTINE: &str = "AWS attaches its managed quarantine policy (AWSCompromisedKeyQuarantineV2 or V3) to the IAM user when it reports one of its keys exposed. The policy denies a set of sensitive actions to every key of that user, the new key included; keyturn does not detach it.";

fn after(t: Millis, seen: Millis) -> String {
    format!("{} (+{:.1}s after keyturn saw the event)", fmt_ms(t), t.saturating_sub(seen) as f64 / 1000.0)
}

/// The outcome notice of a saga that dealt with an exposed key (an
/// emergency rotation, or a saga taken over): `rotation.exposed_key`,
/// critical, with the incident's timeline, what AWS did and the next steps.
pub(super) fn exposed_notice(mut n: Notification, doc: &mut OutcomeDoc, saga: &Saga, e: &crate::saga::Exposure) -> Notification {
    use crate::saga::ExposedRole;
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
    let steps = exposure_steps(saga, e, state, &credential);
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
    t.push_str(&format!("What AWS did:    {AWS_QUARANTINE}\n"));
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
        aws_quarantine: AWS_QUARANTINE,
        follow_up_rotation: e.follow_up,
        next_steps: steps,
    });
    n.attributes.insert("event", "rotation.exposed_key".into());
    n.attributes.insert("severity", "critical".into());
    n
}

/// What a person should do about an exposed key, in order.
fn exposure_steps(saga: &Saga, e: &crate::saga::Exposure, state: &str, credential: &str) -> Vec<String> {
    let mut steps = Vec::new();
    if state == "ACTIVE" {
        steps.push(format!(
            "The exposed key {} still works for whoever found it. keyturn could not replace it ({}: see above). Deactivate it now if the risk outweighs the outage: `aws iam update-access-key --user-name <user> --access-key-id {} --status Inactive` (its consumer stops working), or fix the cause and run `keyturn rotate {}`.",
            e.key_id,
            saga.status.as_str(),
            e.key_id,
            saga.rotation_id
        ));
    }
    if e.follow_up {
        steps.push(format!(
            "The exposed key was this rotation's new key: keyturn starts a fresh rotation of {} now; watch for its notice.",
            saga.rotation_id
        ));
    }
    steps.push(format!(
        "Find what the key was used for: CloudTrail events with userIdentity.accessKeyId = {} (all regions), from well before the event until {}.",
        e.key_id,
        fmt_ms(e.deleted_at.or(e.inactive_at).unwrap_or(saga.updated_at))
    ));
    steps.push("Remove the public copy of the key (the repository, commit history, paste or package where it was found).".into());
    steps.push(format!(
        "When the investigation is done, detach the AWS quarantine policy from {credential}: it restricts the new key too. Before that, check the consumer's calls are not denied by it."
    ));
    if e.deleted_at.is_none() && e.inactive_at.is_some() && e.keep_inactive {
        steps.push(format!(
            "The exposed key is kept inactive for forensics (policy exposed_key = keep_inactive). Delete it when the investigation is done: until then the user has two keys and `keyturn rotate {}` is refused.",
            saga.rotation_id
        ));
    }
    steps
}

/// An exposed key a running saga could not take over (it needs a person).
pub fn render_exposed_blocked(
    rotation_id: &str,
    saga_id: &str,
    key_id: &str,
    why: &str,
    credential_kind: &str,
    target_kind: &str,
    correlation_id: &str,
) -> Notification {
    let action = format!(
        "The exposed key {key_id} may still be active. Saga {saga_id} holds this credential and cannot be taken over: {why}. If it needs attention with both keys in place, decide now which key the target uses and run `keyturn resolve {saga_id} --keep new|old`; deactivate the exposed key by hand if its consumer can be stopped (`aws iam update-access-key --access-key-id {key_id} --status Inactive`)."
    );
    let d = ExposedBlockedDoc {
        head: Head { event: "rotation.exposed_key", severity: "critical" },
        rotation_id: rotation_id.into(),
        saga_id: saga_id.into(),
        correlation_id: correlation_id.into(),
        exposure: BlockedExposure { key_id: key_id.into(), state: "unknown", aws_quarantine: AWS_QUARANTINE, blocked: why.into() },
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
pub fn render_exposed_settled(
    rotation_id: &str,
    key_id: &str,
    what: &str,
    event_arn: &str,
    credential_kind: &str,
    target_kind: &str,
    correlation_id: &str,
) -> Notification {
    let steps = [
        format!("Find what the key was used for while it was public: CloudTrail events with userIdentity.accessKeyId = {key_id}, all regions."),
        "Remove the public copy of the key.".to_string(),
        "Detach AWS's quarantine policy from the user once the investigation is done: it restricts the user's current key too.".to_string(),
    ];
    let d = ExposedSettledDoc {
        head: Head { event: "rotation.exposed_key", severity: "critical" },
        rotation_id: rotation_id.into(),
        correlation_id: correlation_id.into(),
        exposure: SettledExposure {
            key_id: key_id.into(),
            state: "settled",
            found: what.into(),
            health_event: event_arn.into(),
            aws_quarantine: AWS_QUARANTINE,
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
) -> Notification {
    let who = user.map(|u| format!("IAM user {u}")).unwrap_or_else(|| "an IAM user keyturn could not find in its account".into());
    let (state, action) = match &deactivated {
        Some(Ok(())) => (
            "deactivated by keyturn (exposure.deactivate_uncovered): whatever used this key has stopped working".to_string(),
            format!("Give the consumer of {key_id} a new key, then delete {key_id}. Investigate its use in CloudTrail, remove the public copy, and detach AWS's quarantine policy from the user when done."),
        ),
        Some(Err(e)) => (
            format!("STILL ACTIVE: keyturn tried to deactivate it and failed ({e})"),
            format!("Deactivate {key_id} by hand now, give its consumer a new key, investigate its use in CloudTrail and remove the public copy."),
        ),
        None => (
            "STILL ACTIVE: no rotation covers it and exposure.deactivate_uncovered is off".to_string(),
            format!("Rotate {key_id} by hand now (or deactivate it, which breaks its consumer), investigate its use in CloudTrail, remove the public copy; add a [[rotation]] for this user so keyturn can replace it next time."),
        ),
    };
    let text = format!(
        "Exposed access key that no rotation covers\n\nKey:             {key_id}\nUser:            {who}\nAccount:         {account}\nAWS Health event: {event_arn}\nKey now:         {state}\nWhat AWS did:    {AWS_QUARANTINE}\nRecommended action: {action}\n"
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
            aws_quarantine: AWS_QUARANTINE,
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
) -> Notification {
    if let [(key, owner, deactivated)] = items {
        return render_exposed_unmatched(account, key, owner.as_deref(), event_arn, deactivated.clone(), credential_kind);
    }
    let state = |d: &Option<std::result::Result<(), String>>| match d {
        Some(Ok(())) => "deactivated by keyturn".to_string(),
        Some(Err(e)) => format!("STILL ACTIVE: deactivation failed ({e})"),
        None => "STILL ACTIVE".to_string(),
    };
    let mut text = format!("{} exposed access keys that no rotation covers\n\nAccount:         {account}\nAWS Health event: {event_arn}\nWhat AWS did:    {AWS_QUARANTINE}\nKeys:\n", items.len());
    for (key, owner, d) in items {
        text.push_str(&format!("  {key}  {}  {}\n", owner.as_deref().unwrap_or("(no user found in this account)"), state(d)));
    }
    text.push_str("Recommended action: rotate (or deactivate) each active key by hand now, investigate its use in CloudTrail and remove the public copy. A key no user in this account owns may be made up: check the event.\n");
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
            aws_quarantine: AWS_QUARANTINE,
        }),
        attributes: unmatched_attributes("critical", credential_kind),
    }
}
