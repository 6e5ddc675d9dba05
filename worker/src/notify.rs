//! Notifications, modelled on Microsoft Entra's provisioning-failure emails.
//!
//! One notification per saga outcome: what happened, why, what was rolled
//! back, the state of every key and of the target now, what a person should
//! do, and where to look next. [`render`] is pure (tested below); [`Notifier`]
//! publishes with `MessageStructure=json` so e-mail subscribers get the text
//! and SQS/Lambda/HTTPS subscribers get a JSON document, with message
//! attributes (`event`, `severity`, `rotation_id`, `credential_kind`,
//! `target_kind`) for subscription filter policies.
//!
//! Nothing rendered here can contain a secret: the inputs are the saga
//! (which holds none), key ids and the connectors' descriptions.

use std::collections::BTreeMap;

use aws_sdk_sns::types::MessageAttributeValue;
use serde_json::{json, Value};

use crate::clock::{fmt_date, fmt_ms};
use crate::error::{aws, Error, Result};
use crate::saga::{KeyRef, Millis, Saga, Status, TargetState};

/// What a notification is about, beyond the saga itself.
pub struct Context<'a> {
    pub credential_kind: &'a str,
    pub credential: &'a str,
    pub target_kind: &'a str,
    pub target: &'a str,
    /// Keys as listed at notification time; `None` if listing failed.
    pub keys_now: Option<&'a [KeyRef]>,
    /// The target's own advice for the failure's error code ([`crate::connectors::Target::advice`]).
    pub advice: Option<String>,
}

/// [`Context`] with owned strings (no key list), for notices outside a step.
pub struct OwnedContext {
    pub credential_kind: &'static str,
    pub credential: String,
    pub target_kind: &'static str,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subject: String,
    pub text: String,
    pub document: Value,
    pub attributes: BTreeMap<&'static str, String>,
}

pub fn event_of(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Succeeded => ("rotation.succeeded", "info"),
        Status::Compensated | Status::Refused => ("rotation.failed", "error"),
        Status::NeedsAttention => ("rotation.needs_attention", "critical"),
        Status::RolledBack => ("rotation.rolled_back", "warning"),
        Status::Running | Status::Compensating => ("rotation.progress", "info"),
    }
}

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
pub fn recommended_action(saga: &Saga, advice: Option<&str>) -> String {
    if let (Some(a), false) = (advice, saga.status == Status::Succeeded) {
        return a.to_string();
    }
    if saga.manual {
        return recommended_by_hand(saga);
    }
    let rotate = format!("keyturn rotate {}", saga.rotation_id);
    let code = saga.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    match (saga.status, code) {
        (Status::Succeeded, _) => "None. The new key is live and the old key is deleted.".into(),
        (Status::RolledBack, _) => format!(
            "Both keys are active and the target holds the new key. Find what still used the old key, move it to the new key, then delete the old key or run `{rotate}` again."
        ),
        (_, "TooManyKeys") => format!(
            "Delete the access key that is not in use (check its last use in the IAM console), then run `{rotate}`."
        ),
        (_, "OldKeyUsedAfterSwitch") => format!(
            "The old key is inactive but something used it after the switch. Find that consumer (CloudTrail, the key's last-used service), move it to the new key, then delete the old key. To undo the deactivation now: `keyturn rollback {}`.",
            saga.saga_id
        ),
        (_, "KeyNotPropagated") => format!("The new key never authenticated and was deleted. Check IAM and STS health, then run `{rotate}`."),
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

/// The old credential as the person identified it, for sentences.
fn old_described(saga: &Saga) -> String {
    match saga.old_keys.first() {
        Some(k) => match k.created_at {
            Some(ms) if !k.id.starts_with("created ") => format!("the token {} created on {}", k.id, fmt_date(ms)),
            Some(ms) => format!("the token created on {}", fmt_date(ms)),
            None => format!("the token {}", k.id),
        },
        None => "the token Entra used before this rotation (its creation date was not recorded: it is the older one)".into(),
    }
}

fn new_described(saga: &Saga) -> String {
    match &saga.new_key {
        Some(id) => format!("the token {id}"),
        None => "the new token".into(),
    }
}

/// What a person should do when the credential is made by hand (SCIM token).
fn recommended_by_hand(saga: &Saga) -> String {
    let rotate = format!("keyturn rotate {}", saga.rotation_id);
    let code = saga.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    let step = saga.failure.as_ref().map(|f| f.step);
    match (saga.status, code) {
        (Status::Succeeded, _) => "None. Entra uses the new token and the old token is deleted.".into(),
        (_, "DeadlinePassed") => format!(
            "No token was handed over in time; nothing changed and Entra still uses the old token. If you generated a token for this rotation, delete it in the IAM Identity Center console. Run `{rotate}` when you are ready."
        ),
        (_, "OldNotConfirmedDeleted") => format!(
            "Entra uses the new token. Delete {} in the IAM Identity Center console (Settings > Identity source > Actions > Manage provisioning > Access tokens); it stays valid until it is deleted or expires. Then nothing else is needed.",
            old_described(saga)
        ),
        (Status::Compensated, _) if step == Some(crate::saga::Step::PushToTarget) => format!(
            "Entra rejected the new token in Test connection, so nothing was saved and Entra still uses the old token. Delete the unused new token ({}) in the IAM Identity Center console, check that it was copied whole and that the SCIM endpoint in keyturn's configuration is this directory's, then run `{rotate}`.",
            new_described(saga)
        ),
        (Status::NeedsAttention, _) => format!(
            "Entra may hold the new token but provisioning is not healthy. In the Entra admin center open Enterprise applications > AWS IAM Identity Center > Provisioning, read the error shown above, fix it and restart provisioning. Do not delete either token until a provisioning cycle succeeds; then delete {} and any unused token.",
            old_described(saga)
        ),
        (Status::Compensated, _) => format!(
            "Fix the cause above; nothing was saved in Entra, which still uses the old token. If you generated a token for this rotation, delete it in the IAM Identity Center console, then run `{rotate}`."
        ),
        _ => "See `keyturn status` for the timeline.".into(),
    }
}

/// Tokens of a by-hand credential: no API lists them, so as keyturn recorded them.
fn token_lines(saga: &Saga) -> Vec<(String, &'static str, &'static str)> {
    let mut out = Vec::new();
    let old = if saga.old_deleted {
        "deleted (confirmed by a person)"
    } else if saga.status == Status::Succeeded {
        "deleted"
    } else {
        "valid, in the console"
    };
    match saga.old_keys.first() {
        Some(k) => out.push((k.id.clone(), old, "old token")),
        None => out.push(("(not recorded)".into(), old, "old token")),
    }
    if let Some(id) = &saga.new_key {
        let state = match saga.target {
            TargetState::Rejected | TargetState::Untouched | TargetState::HoldsOld => "unused: delete it in the console",
            _ => "saved in Entra",
        };
        out.push((id.clone(), state, "new token"));
    }
    out
}

fn key_role(saga: &Saga, id: &str) -> &'static str {
    if saga.new_key.as_deref() == Some(id) {
        "new key"
    } else if saga.old_keys.iter().any(|k| k.id == id) {
        "old key"
    } else {
        "unknown key"
    }
}

fn key_lines(saga: &Saga, keys_now: Option<&[KeyRef]>) -> Vec<(String, &'static str, &'static str)> {
    if saga.manual {
        return token_lines(saga);
    }
    let Some(now) = keys_now else { return Vec::new() };
    let mut ids: Vec<&str> = saga.old_keys.iter().map(|k| k.id.as_str()).chain(saga.new_key.as_deref()).collect();
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

fn target_line(saga: &Saga) -> &'static str {
    if saga.manual {
        return match saga.target {
            TargetState::Untouched => "unchanged (never sent the new token)",
            TargetState::Rejected => "unchanged: Test connection rejected the new token, nothing was saved",
            TargetState::HoldsOld => "holds the old token",
            TargetState::Uncertain => "unknown: it may hold the new token",
            TargetState::Accepted | TargetState::HoldsNew => "new token saved",
        };
    }
    match saga.target {
        TargetState::Untouched => "unchanged (never sent the new key)",
        TargetState::Rejected => "unchanged (it rejected the new key)",
        TargetState::HoldsOld => "holds the old key",
        TargetState::Uncertain => "unknown: it may hold the new key",
        TargetState::Accepted | TargetState::HoldsNew => "holds the new key",
    }
}

/// Render the notification for a saga's current state.
pub fn render(saga: &Saga, ctx: &Context<'_>) -> Notification {
    let (event, severity) = event_of(saga.status);
    let subject = format!("[keyturn] {}: {} ({}) -> {}", headline(saga.status), saga.rotation_id, ctx.credential, ctx.target);
    // SNS subjects: one line, at most 100 characters.
    let subject: String = subject.replace(['\r', '\n'], " ").chars().take(100).collect();
    let keys = key_lines(saga, ctx.keys_now);
    let action = recommended_action(saga, ctx.advice.as_deref());
    let rolled_back = if saga.compensations.is_empty() { vec!["nothing".to_string()] } else { saga.compensations.clone() };
    let failure = saga.failure.as_ref();

    let mut t = String::new();
    t.push_str(&format!("{}\n\n", headline(saga.status)));
    t.push_str(&format!("Rotation:        {}\n", saga.rotation_id));
    t.push_str(&format!("Saga:            {}\n", saga.saga_id));
    t.push_str(&format!("Credential:      {} ({})\n", ctx.credential, ctx.credential_kind));
    t.push_str(&format!("Target:          {} ({})\n", ctx.target, ctx.target_kind));
    t.push_str(&format!("Outcome:         {}\n", saga.status.as_str()));
    t.push_str(&format!("Started:         {} by {}\n", fmt_ms(saga.created_at), saga.trigger));
    if let Some(r) = &saga.request {
        let event = r.event_account.as_deref().map(|a| (a, r.event_source.as_deref().unwrap_or("")));
        t.push_str(&format!("Requested by:    {} (as the request says); {}\n", r.requester, sent_by(r.sender.as_deref(), event)));
    }
    if let Some(f) = failure {
        t.push_str(&format!("Failed step:     {}\n", f.step));
        t.push_str(&format!("Error code:      {}\n", f.code));
        t.push_str(&format!("Error message:   {}\n", f.message));
        t.push_str(&format!("Operator can fix: {}\n", if f.operator_fixable { "yes" } else { "no (transient or external)" }));
    }
    t.push_str(&format!("Rolled back:     {}\n", rolled_back.join("; ")));
    t.push_str(if saga.manual { "Tokens now (no API lists them; as keyturn recorded them):\n" } else { "Keys now:\n" });
    if keys.is_empty() {
        t.push_str("  (could not list the keys)\n");
    }
    for (id, state, role) in &keys {
        t.push_str(&format!("  {id}  {state:<8}  {role}\n"));
    }
    t.push_str(&format!("Target now:      {}\n", target_line(saga)));
    t.push_str(&format!("Recommended action: {action}\n"));
    t.push_str("Next attempt:    none scheduled (start one with keyturn rotate)\n");
    t.push_str(&format!("More:            keyturn status {}\n", saga.saga_id));

    let document = json!({
        "event": event,
        "severity": severity,
        "rotation_id": saga.rotation_id,
        "saga_id": saga.saga_id,
        "status": saga.status.as_str(),
        "trigger": saga.trigger,
        "credential": {"kind": ctx.credential_kind, "name": ctx.credential},
        "target": {"kind": ctx.target_kind, "name": ctx.target, "state": target_line(saga)},
        "failure": failure.map(|f| json!({
            "step": f.step.as_str(), "code": f.code, "message": f.message, "operator_fixable": f.operator_fixable
        })),
        "rolled_back": saga.compensations,
        "keys": keys.iter().map(|(id, state, role)| json!({"id": id, "state": state, "role": role})).collect::<Vec<_>>(),
        "recommended_action": action,
        "next_attempt": Value::Null,
        "status_command": format!("keyturn status {}", saga.saga_id),
    });
    let attributes = BTreeMap::from([
        ("event", event.to_string()),
        ("severity", severity.to_string()),
        ("rotation_id", saga.rotation_id.clone()),
        ("credential_kind", ctx.credential_kind.to_string()),
        ("target_kind", ctx.target_kind.to_string()),
    ]);
    let n = correlate(Notification { subject, text: t, document, attributes }, saga);
    match &saga.exposure {
        Some(e) => exposed_notice(n, saga, e),
        None => n,
    }
}

/// A wait on a person: the `action_required` notice (first) or a reminder.
/// `steps` are the source's console steps ([`crate::connectors::ByHand`]);
/// this adds the keyturn commands, the deadline and which token is which.
pub fn render_prompt(saga: &Saga, ctx: &Context<'_>, hand: &crate::connectors::ByHand, reminder: bool) -> Notification {
    use crate::saga::Step;
    let (event, severity) = if reminder { ("rotation.reminder", "warning") } else { ("rotation.action_required", "warning") };
    let noun = hand.noun;
    let creating = saga.step == Step::AwaitNew;
    let (title, action) = if creating { (format!("create a new {noun}"), "create_new") } else { (format!("delete the old {noun}"), "delete_old") };
    let headline = if reminder { format!("Reminder: {title}") } else { format!("Action required: {title}") };
    let deadline = saga.deadline.map(fmt_ms).unwrap_or_else(|| "none".into());
    let mut steps: Vec<String> = Vec::new();
    let mut commands: Vec<String> = Vec::new();
    let id = &saga.saga_id;
    if creating {
        steps.extend(hand.create.iter().cloned());
        steps.push(format!(
            "Hand the token to keyturn. It is read from a no-echo prompt or from standard input, never from the command line: `keyturn provide {id}` (paste at the prompt), or `keyturn provide {id} < token-file`, or from a Secrets Manager secret: `keyturn provide {id} --from-secret <secret id>`."
        ));
        if saga.old_keys.is_empty() {
            steps.push("Add `--old-token-created YYYY-MM-DD` (and `--old-token-id <ID>`) naming the token in use today, so keyturn can tell you later which one to delete.".into());
        }
        steps.push("keyturn then runs Test connection in Entra with the new token, saves it only if the test passes, and checks the provisioning job. You will be told what happened.".into());
        commands.push(format!("keyturn provide {id}"));
        commands.push(format!("keyturn provide {id} --from-secret <secret id>"));
    } else {
        steps.push(format!(
            "Entra now uses the new token: Test connection passed, it was saved{}, and the provisioning job is healthy.",
            saga.switched_at.map(|t| format!(" at {}", fmt_ms(t))).unwrap_or_default()
        ));
        steps.extend(hand.delete.iter().cloned());
        steps.push(format!("The token to delete is {}. Do NOT delete {}: Entra uses it now.", old_described(saga), new_described(saga)));
        steps.push(format!("Tell keyturn it is done: `keyturn confirm {id}`."));
        commands.push(format!("keyturn confirm {id}"));
    }
    let consequence = if creating {
        "keyturn stops waiting and reports the rotation failed; nothing will have changed and the current token keeps working until it expires"
    } else {
        "keyturn stops waiting and reports the rotation needs attention; the old token stays valid until someone deletes it or it expires"
    };
    let mut t = format!("{headline}\n\n");
    t.push_str(&format!("Rotation:        {}\n", saga.rotation_id));
    t.push_str(&format!("Saga:            {id}\n"));
    t.push_str(&format!("Credential:      {} ({})\n", ctx.credential, ctx.credential_kind));
    t.push_str(&format!("Target:          {} ({})\n", ctx.target, ctx.target_kind));
    t.push_str(&format!("Started:         {} by {}\n", fmt_ms(saga.created_at), saga.trigger));
    if reminder {
        t.push_str(&format!("Reminder:        {} (keyturn is still waiting)\n", saga.prompts));
    }
    t.push_str(&format!("Deadline:        {deadline}; after it {consequence}.\n"));
    t.push_str("What to do:\n");
    for (i, step) in steps.iter().enumerate() {
        t.push_str(&format!("  {}. {step}\n", i + 1));
    }
    t.push_str(&format!("More:            keyturn status {id}\n"));
    let document = json!({
        "event": event,
        "severity": severity,
        "rotation_id": saga.rotation_id,
        "saga_id": id,
        "status": saga.status.as_str(),
        "trigger": saga.trigger,
        "action": action,
        "reminder": if reminder { Some(saga.prompts) } else { None },
        "deadline": saga.deadline,
        "credential": {"kind": ctx.credential_kind, "name": ctx.credential},
        "target": {"kind": ctx.target_kind, "name": ctx.target},
        "old_token": saga.old_keys.first().map(|k| json!({"id": k.id, "created": k.created_at.map(fmt_date)})),
        "new_token": saga.new_key,
        "steps": steps,
        "commands": commands,
        "status_command": format!("keyturn status {id}"),
    });
    let subject = format!("[keyturn] {headline}: {}", saga.rotation_id).replace(['\r', '\n'], " ").chars().take(100).collect();
    correlate(
        Notification {
            subject,
            text: t,
            document,
            attributes: BTreeMap::from([
                ("event", event.to_string()),
                ("severity", severity.to_string()),
                ("rotation_id", saga.rotation_id.clone()),
                ("credential_kind", ctx.credential_kind.to_string()),
                ("target_kind", ctx.target_kind.to_string()),
            ]),
        },
        saga,
    )
}

/// The evidence of an unresolved saga became clear: which key the target
/// uses, why keyturn thinks so, and what happens next.
pub fn render_evidence(saga: &Saga, ctx: &OwnedContext, verdict: &crate::saga::Verdict, resolving: bool) -> Notification {
    let keep = verdict.keep.map(|k| k.as_str()).unwrap_or("unclear");
    let other = match verdict.keep {
        Some(crate::saga::Keep::New) => "old",
        _ => "new",
    };
    let action = if resolving {
        format!("None: keyturn resolves the saga now (auto_resolve): it deactivates the {other} key, waits the grace period, checks its last use and deletes it. `keyturn status {}` follows it.", saga.saga_id)
    } else {
        format!(
            "Run `keyturn resolve {id} --keep {keep}`; keyturn then deactivates the {other} key, waits the grace period, checks its last use and deletes it. If you know the evidence is wrong, `--keep {other} --force`.",
            id = saga.saga_id
        )
    };
    let headline = format!("Evidence: the target uses the {keep} key");
    let text = format!(
        "{headline}\n\nRotation:        {}\nSaga:            {} (needs attention, both keys in place)\nCredential:      {} ({})\nTarget:          {} ({})\nNew key:         {}\nOld key:         {}\nEvidence:        {}\nRecommended action: {action}\nMore:            keyturn status {}\n",
        saga.rotation_id,
        saga.saga_id,
        ctx.credential,
        ctx.credential_kind,
        ctx.target,
        ctx.target_kind,
        saga.new_key.as_deref().unwrap_or("none"),
        saga.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", "),
        verdict.reason,
        saga.saga_id
    );
    let document = json!({
        "event": "rotation.evidence",
        "severity": "warning",
        "rotation_id": saga.rotation_id,
        "saga_id": saga.saga_id,
        "status": saga.status.as_str(),
        "credential": {"kind": ctx.credential_kind, "name": ctx.credential},
        "target": {"kind": ctx.target_kind, "name": ctx.target},
        "new_key": saga.new_key,
        "old_keys": saga.old_keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        "keep": verdict.keep.map(|k| k.as_str()),
        "evidence": verdict.reason,
        "resolving": resolving,
        "recommended_action": action,
        "resolve_command": format!("keyturn resolve {} --keep {keep}", saga.saga_id),
        "status_command": format!("keyturn status {}", saga.saga_id),
    });
    correlate(
        Notification {
            subject: format!("[keyturn] {headline}: {} ({}) -> {}", saga.rotation_id, ctx.credential, ctx.target)
                .replace(['\r', '\n'], " ")
                .chars()
                .take(100)
                .collect(),
            text,
            document,
            attributes: BTreeMap::from([
                ("event", "rotation.evidence".to_string()),
                ("severity", "warning".to_string()),
                ("rotation_id", saga.rotation_id.clone()),
                ("credential_kind", ctx.credential_kind.to_string()),
                ("target_kind", ctx.target_kind.to_string()),
            ]),
        },
        saga,
    )
}

/// What AWS does to a user whose key it reports exposed, for the notices.
pub const AWS_QUARANTINE: &str = "AWS attaches its managed quarantine policy (AWSCompromisedKeyQuarantineV2 or V3) to the IAM user when it reports one of its keys exposed. The policy denies a set of sensitive actions to every key of that user, the new key included; keyturn does not detach it.";

fn after(t: Millis, seen: Millis) -> String {
    format!("{} (+{:.1}s after keyturn saw the event)", fmt_ms(t), t.saturating_sub(seen) as f64 / 1000.0)
}

/// The outcome notice of a saga that dealt with an exposed key (an
/// emergency rotation, or a saga taken over): `rotation.exposed_key`,
/// critical, with the incident's timeline, what AWS did and the next steps.
fn exposed_notice(mut n: Notification, saga: &Saga, e: &crate::saga::Exposure) -> Notification {
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
    let credential = n.document["credential"]["name"].as_str().unwrap_or("").to_string();
    let live = saga.switched_at.filter(|_| saga.target.may_hold_new());
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
    if let Value::Object(m) = &mut n.document {
        m.insert("event".into(), json!("rotation.exposed_key"));
        m.insert("severity".into(), json!("critical"));
        m.insert(
            "exposure".into(),
            json!({
                "key_id": e.key_id,
                "role": if e.role == ExposedRole::Old { "old" } else { "new" },
                "state": state.to_ascii_lowercase(),
                "health_event": e.event,
                "timeline": {
                    "event_seen": fmt_ms(e.seen_at),
                    "new_key_live": live.map(fmt_ms),
                    "exposed_key_inactive": e.inactive_at.map(fmt_ms),
                    "exposed_key_deleted": e.deleted_at.map(fmt_ms),
                    "seconds_to_inactive": e.inactive_at.map(|i| i.saturating_sub(e.seen_at) as f64 / 1000.0),
                },
                "aws_quarantine": AWS_QUARANTINE,
                "follow_up_rotation": e.follow_up,
                "next_steps": steps,
            }),
        );
    }
    n.attributes.insert("event", "rotation.exposed_key".into());
    n.attributes.insert("severity", "critical".into());
    n
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
    let text = format!(
        "Exposed key: a person must act\n\nRotation:        {rotation_id}\nSaga:            {saga_id}\nExposed key:     {key_id}\nWhat AWS did:    {AWS_QUARANTINE}\nRecommended action: {action}\nMore:            keyturn status {saga_id}\n"
    );
    Notification {
        subject: format!("[keyturn] Exposed key: a person must act: {rotation_id}").chars().take(100).collect(),
        text,
        document: json!({
            "event": "rotation.exposed_key",
            "severity": "critical",
            "rotation_id": rotation_id,
            "saga_id": saga_id,
            "correlation_id": correlation_id,
            "exposure": {"key_id": key_id, "state": "unknown", "aws_quarantine": AWS_QUARANTINE, "blocked": why},
            "recommended_action": action,
            "status_command": format!("keyturn status {saga_id}"),
        }),
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
    let text = format!(
        "Exposed key: nothing left to rotate\n\nRotation:        {rotation_id}\nExposed key:     {key_id}\nAWS Health event: {event_arn}\nWhat keyturn found: {what}\nWhat AWS did:    {AWS_QUARANTINE}\nNext steps:\n{}",
        steps.iter().enumerate().map(|(i, s)| format!("  {}. {s}\n", i + 1)).collect::<String>()
    );
    Notification {
        subject: format!("[keyturn] Exposed key {key_id}: nothing left to rotate ({rotation_id})").chars().take(100).collect(),
        text,
        document: json!({
            "event": "rotation.exposed_key",
            "severity": "critical",
            "rotation_id": rotation_id,
            "correlation_id": correlation_id,
            "exposure": {"key_id": key_id, "state": "settled", "found": what, "health_event": event_arn, "aws_quarantine": AWS_QUARANTINE, "next_steps": steps},
        }),
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
        document: json!({
            "event": "rotation.unmatched",
            "severity": "critical",
            "account_id": account,
            "user": user,
            "key_id": key_id,
            "exposed": true,
            "health_event": event_arn,
            "deactivated": matches!(deactivated, Some(Ok(()))),
            "key_state": state,
            "aws_quarantine": AWS_QUARANTINE,
            "recommended_action": action,
        }),
        attributes: unmatched_attributes("critical", credential_kind),
    }
}

/// The answer to a rotation request: `rotation.request_accepted` (a saga
/// started, was in flight, or answers a repeated idempotency key) or
/// `rotation.request_rejected` (unknown rotation, an override the policy does
/// not allow, an idempotency key used for another rotation).
pub fn render_request_answer(
    r: &crate::intake::RotationRequest,
    rotation_id: Option<&str>,
    saga_id: Option<&str>,
    outcome: &str,
    reason: Option<&str>,
) -> Notification {
    let accepted = saga_id.is_some();
    let (event, severity) = if accepted { ("rotation.request_accepted", "info") } else { ("rotation.request_rejected", "warning") };
    let named = match &r.target {
        crate::intake::RequestTarget::Rotation(id) => format!("rotation {id}"),
        crate::intake::RequestTarget::User { account_id, user_name } => format!("iam user {user_name} in account {account_id}"),
    };
    let mut text = format!(
        "{}\n\nRequested:       {named}\nRequester:       {} (as the request says)\nSent by:         {}\nReason:          {}\nIdempotency key: {}\nCorrelation id:  {}\nOutcome:         {outcome}\n",
        if accepted { "Rotation request accepted" } else { "Rotation request rejected" },
        r.requester,
        sent_by(r.sender.as_deref(), r.event.as_ref().map(|e| (e.account.as_str(), e.source.as_str()))),
        r.reason,
        r.idempotency_key,
        r.correlation()
    );
    if let Some(id) = saga_id {
        text.push_str(&format!("Saga:            {id}\nMore:            keyturn status {id}\n"));
    }
    if let Some(why) = reason {
        text.push_str(&format!("Why:             {why}\n"));
    }
    Notification {
        subject: format!("[keyturn] Rotation request {}: {named}", if accepted { "accepted" } else { "rejected" })
            .replace(['\r', '\n'], " ")
            .chars()
            .take(100)
            .collect(),
        text,
        document: json!({
            "event": event,
            "severity": severity,
            "rotation_id": rotation_id,
            "saga_id": saga_id,
            "outcome": outcome,
            "reason_rejected": reason,
            "request": {
                "requester": r.requester,
                "reason": r.reason,
                "idempotency_key": r.idempotency_key,
                "sender": r.sender,
                "event_account": r.event.as_ref().map(|e| e.account.as_str()),
                "event_source": r.event.as_ref().map(|e| e.source.as_str()),
            },
            "correlation_id": r.correlation(),
            "status_command": saga_id.map(|id| format!("keyturn status {id}")),
        }),
        attributes: BTreeMap::from([
            ("event", event.to_string()),
            ("severity", severity.to_string()),
            ("rotation_id", rotation_id.unwrap_or("none").to_string()),
            ("credential_kind", "none".to_string()),
            ("target_kind", "none".to_string()),
            ("correlation_id", r.correlation().to_string()),
        ]),
    }
}

/// A new configuration version was refused; the running one stays.
pub fn render_config_rejected(source: &str, version: &str, running: &str, problem: &str) -> Notification {
    let text = format!(
        "keyturn refused a new configuration version\n\nSource:          {source}\nRefused version: {version}\nStill running:   {running}\nProblem:         {problem}\nRecommended action: fix the configuration and publish a new version; keyturn keeps running the previous one until then. `keyturn check-config --config {source}` checks it.\n"
    );
    let document = json!({
        "event": "keyturn.config_rejected",
        "severity": "critical",
        "source": source,
        "refused_version": version,
        "running_version": running,
        "problem": problem,
    });
    Notification {
        subject: format!("[keyturn] Configuration refused: {source} {version}").chars().take(100).collect(),
        text,
        document,
        attributes: BTreeMap::from([
            ("event", "keyturn.config_rejected".to_string()),
            ("severity", "critical".to_string()),
            ("rotation_id", "none".to_string()),
            ("credential_kind", "none".to_string()),
            ("target_kind", "none".to_string()),
        ]),
    }
}

/// The one-time report of an IAM user with a failing finding and no rotation.
pub fn render_unmatched(account: &str, user: &str, finding_id: &str, credential_kind: &str) -> Notification {
    let text = format!(
        "Finding for an IAM user keyturn does not rotate\n\n\
         User:            {user}\n\
         Account:         {account}\n\
         Finding:         {finding_id}\n\
         Recommended action: add a [[rotation]] for this user to keyturn's configuration, or rotate its key another way. \
         This is reported once; later re-imports of the finding are only counted.\n"
    );
    let document = json!({
        "event": "rotation.unmatched",
        "severity": "warning",
        "account_id": account,
        "user": user,
        "finding_id": finding_id,
        "recommended_action": "add a [[rotation]] for this user, or rotate its key another way",
    });
    Notification {
        subject: format!("[keyturn] No rotation for iam user {user} (account {account})").chars().take(100).collect(),
        text,
        document,
        attributes: unmatched_attributes("warning", credential_kind),
    }
}

/// IAM users no rotation covers, first seen in one intake message: one
/// notice for all of them (`rotation.unmatched`, warning). A single user
/// gets [`render_unmatched`]'s notice; more get a digest listing each
/// (`users[]` in the document). An intake message names at most
/// [`crate::intake::MAX_ITEMS`] users, so a digest lists at most that many.
pub fn render_unmatched_digest(items: &[(String, String, String)], credential_kind: &str) -> Notification {
    if let [(account, user, finding_id)] = items {
        return render_unmatched(account, user, finding_id, credential_kind);
    }
    let mut text = format!("Findings for {} IAM users keyturn does not rotate\n\n", items.len());
    for (account, user, finding_id) in items {
        text.push_str(&format!("  {user} in account {account} (finding {finding_id})\n"));
    }
    text.push_str("\nRecommended action: add a [[rotation]] for each user to keyturn's configuration, or rotate their keys another way. Each user is reported once; later re-imports of their findings are only counted.\n");
    let document = json!({
        "event": "rotation.unmatched",
        "severity": "warning",
        "users": items.iter().map(|(a, u, f)| json!({"account_id": a, "user": u, "finding_id": f})).collect::<Vec<_>>(),
        "count": items.len(),
        "recommended_action": "add a [[rotation]] for these users, or rotate their keys another way",
    });
    Notification {
        subject: format!("[keyturn] No rotation for {} iam users", items.len()),
        text,
        document,
        attributes: unmatched_attributes("warning", credential_kind),
    }
}

/// The attributes of a `rotation.unmatched` notice: no rotation, no target.
fn unmatched_attributes(severity: &str, credential_kind: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("event", "rotation.unmatched".to_string()),
        ("severity", severity.to_string()),
        ("rotation_id", "none".to_string()),
        ("credential_kind", credential_kind.to_string()),
        ("target_kind", "none".to_string()),
    ])
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
        document: json!({
            "event": "rotation.unmatched",
            "severity": "critical",
            "account_id": account,
            "exposed": true,
            "health_event": event_arn,
            "count": items.len(),
            "keys": items.iter().map(|(k, o, d)| json!({"key_id": k, "user": o, "deactivated": matches!(d, Some(Ok(()))), "key_state": state(d)})).collect::<Vec<_>>(),
            "aws_quarantine": AWS_QUARANTINE,
        }),
        attributes: unmatched_attributes("critical", credential_kind),
    }
}

/// Quarantine began, changed reason, disabled the rotation, or ended.
#[allow(clippy::too_many_arguments)]
pub fn render_quarantine(
    rotation_id: &str,
    credential: &str,
    target: &str,
    credential_kind: &str,
    target_kind: &str,
    h: &crate::quarantine::Health,
    change: crate::quarantine::Change,
    saga: Option<&str>,
) -> Notification {
    use crate::quarantine::Change;
    let (event, severity, headline) = match change {
        Change::Began => ("rotation.quarantined", "critical", "Rotation quarantined"),
        Change::ReasonChanged => ("rotation.quarantined", "critical", "Rotation quarantined: reason changed"),
        Change::Disabled => ("rotation.disabled", "critical", "Rotation disabled after quarantine"),
        Change::Lifted | Change::None => ("rotation.quarantine_lifted", "info", "Rotation quarantine lifted"),
    };
    let q = h.quarantine.as_ref();
    let mut t = format!("{headline}\n\nRotation:        {rotation_id}\nCredential:      {credential}\nTarget:          {target}\n");
    if let Some(q) = q {
        t.push_str(&format!("Reason:          {}\nFailed in a row: {}\nQuarantined since: {}\n", q.reason, h.consecutive_failures, fmt_ms(q.began)));
        t.push_str(&format!(
            "Next attempt:    {}\n",
            if q.disabled {
                "none: automatic triggers are disabled".to_string()
            } else {
                format!("{} (automatic triggers back off: 6h, 12h, then daily)", fmt_ms(q.next_attempt))
            }
        ));
        t.push_str(&format!("Recommended action: fix the cause (see the last saga: keyturn status {}), then `keyturn rotate {rotation_id}` to test it, or `keyturn release {rotation_id}`.\n", saga.unwrap_or("<saga>")));
    } else {
        t.push_str("Automatic triggers rotate this credential again as usual.\n");
    }
    let document = json!({
        "event": event,
        "severity": severity,
        "rotation_id": rotation_id,
        "credential": {"kind": credential_kind, "name": credential},
        "target": {"kind": target_kind, "name": target},
        "consecutive_failures": h.consecutive_failures,
        "quarantine": q.map(|q| json!({"since": q.began, "reason": q.reason, "series": q.series, "next_attempt": q.next_attempt, "disabled": q.disabled})),
        "last_saga": saga,
    });
    Notification {
        subject: format!("[keyturn] {headline}: {rotation_id} ({credential}) -> {target}").chars().take(100).collect(),
        text: t,
        document,
        attributes: BTreeMap::from([
            ("event", event.to_string()),
            ("severity", severity.to_string()),
            ("rotation_id", rotation_id.to_string()),
            ("credential_kind", credential_kind.to_string()),
            ("target_kind", target_kind.to_string()),
        ]),
    }
}

/// The `source` of keyturn's outcome events on EventBridge.
pub const EVENT_SOURCE: &str = "keyturn.outcomes";

/// The EventBridge `detail-type` of a notification's event kind:
/// `rotation.needs_attention` → `Rotation Needs Attention`,
/// `keyturn.config_rejected` → `Keyturn Config Rejected`.
pub fn detail_type(event: &str) -> String {
    event
        .split(['.', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The EventBridge `detail` of a notification: the SNS JSON document, with
/// `correlation_id` always present (`null` for notices about no saga).
pub fn event_detail(n: &Notification) -> Value {
    let mut d = n.document.clone();
    if let Value::Object(m) = &mut d {
        m.entry("correlation_id").or_insert(Value::Null);
    }
    d
}

/// Who really sent a request, for a notice: SQS's `SenderId`, and the
/// event envelope's account and source when it came as an event.
pub fn sent_by(sender: Option<&str>, event: Option<(&str, &str)>) -> String {
    let mut s = format!("SenderId {}", sender.unwrap_or("(not reported)"));
    if let Some((account, source)) = event {
        s.push_str(&format!(", event of account {} (source {source})", if account.is_empty() { "(none)" } else { account }));
    }
    s
}

/// Put the notification's document and correlation id on the saga's
/// notification (the JSON document and a `correlation_id` attribute), and,
/// for a saga started by a request, who asked and who really sent it
/// (`request`).
pub fn correlate(mut n: Notification, saga: &Saga) -> Notification {
    let id = saga.correlation().to_string();
    if let Value::Object(m) = &mut n.document {
        m.insert("correlation_id".into(), Value::String(id.clone()));
        if let Some(r) = &saga.request {
            m.entry("request").or_insert_with(|| {
                json!({
                    "requester": r.requester,
                    "reason": r.reason,
                    "idempotency_key": r.idempotency_key,
                    "sender": r.sender,
                    "event_account": r.event_account,
                    "event_source": r.event_source,
                })
            });
        }
    }
    n.attributes.insert("correlation_id", id);
    n
}

/// How PutEvents is retried: entries EventBridge reports failed
/// (`FailedEntryCount`, a per-entry `ErrorCode`) and calls that failed as a
/// whole are sent again, up to `attempts` times, waiting `base`, 2×`base`, …
#[derive(Debug, Clone, Copy)]
pub struct PutRetry {
    pub attempts: u32,
    pub base: std::time::Duration,
}

impl Default for PutRetry {
    fn default() -> Self {
        PutRetry { attempts: 5, base: std::time::Duration::from_millis(200) }
    }
}

/// One PutEvents call's answer per entry: `None` put, `Some(code)` failed.
pub type EntryResults = Vec<Option<String>>;

/// Send `entries` with `send` (one PutEvents call), re-sending only the
/// failed ones, as [`PutRetry`] says. `Err` holds the last error codes.
pub async fn put_with_retry<E, F, Fut>(entries: Vec<E>, retry: PutRetry, mut send: F) -> std::result::Result<(), String>
where
    E: Clone,
    F: FnMut(Vec<E>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<EntryResults, String>>,
{
    let mut pending = entries;
    let mut last = String::new();
    for attempt in 0..retry.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(retry.base * 2u32.saturating_pow(attempt - 1)).await;
        }
        match send(pending.clone()).await {
            Ok(results) => {
                let failed: Vec<(E, String)> = pending
                    .iter()
                    .cloned()
                    .zip(results.into_iter().chain(std::iter::repeat(Some("NoResult".to_string()))))
                    .filter_map(|(e, r)| r.map(|code| (e, code)))
                    .collect();
                if failed.is_empty() {
                    return Ok(());
                }
                last = failed.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join(", ");
                pending = failed.into_iter().map(|(e, _)| e).collect();
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The SNS message of a notification (`MessageStructure=json`): the text
/// for e-mail, the JSON document for every other protocol.
pub fn sns_message(n: &Notification) -> String {
    let doc = n.document.to_string();
    json!({
        "default": n.text,
        "email": n.text,
        "email-json": doc,
        "sqs": doc,
        "lambda": doc,
        "http": doc,
        "https": doc,
    })
    .to_string()
}

/// Publishes notifications to SNS, and each also as an event on EventBridge.
#[derive(Clone, Debug)]
pub struct Notifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    events: Option<(aws_sdk_eventbridge::Client, String)>,
    retry: PutRetry,
}

impl Notifier {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Notifier {
        Notifier { client, topic_arn: topic_arn.into(), events: None, retry: PutRetry::default() }
    }

    /// Also put every notification on `bus` (name or ARN; `default`: the account's default bus).
    pub fn with_events(mut self, client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Notifier {
        self.events = Some((client, bus.into()));
        self
    }

    /// SNS first (the channel people read), then EventBridge. An event
    /// EventBridge still refuses after [`PutRetry`] is logged and counted
    /// (metric `OutcomeEventFailed`), not retried by failing the caller: the
    /// SNS message went out, and a failed step would send it again.
    pub async fn publish(&self, n: &Notification) -> Result<()> {
        let message = sns_message(n);
        // Whatever a renderer put there, a subject is one line of at most
        // 100 characters without control characters (SNS's rule, and a
        // forged name must not add lines to an e-mail's headers).
        let subject = crate::connectors::check::one_line(&n.subject, 100);
        let mut req = self.client.publish().topic_arn(&self.topic_arn).subject(&subject).message_structure("json").message(message);
        for (k, v) in n.attributes.iter().filter(|(_, v)| !v.is_empty()) {
            let attr = MessageAttributeValue::builder().data_type("String").string_value(v).build().map_err(|e| Error::Config(e.to_string()))?;
            req = req.message_attributes(*k, attr);
        }
        req.send().await.map_err(|e| aws("sns", "Publish", e))?;
        if let Some((client, bus)) = &self.events {
            let event = n.attributes.get("event").cloned().unwrap_or_default();
            if let Err(codes) = put_event(client, bus, n, self.retry).await {
                tracing::error!(%event, bus = %bus, error = %codes, "could not put the outcome event on EventBridge");
                crate::metrics::emit(&[("Event", &event)], &[crate::metrics::Metric { name: "OutcomeEventFailed", unit: "Count", value: 1.0 }]);
            }
        }
        Ok(())
    }
}

/// One notification as a PutEvents entry on `bus`, with retries.
async fn put_event(client: &aws_sdk_eventbridge::Client, bus: &str, n: &Notification, retry: PutRetry) -> std::result::Result<(), String> {
    use aws_sdk_eventbridge::types::PutEventsRequestEntry;
    let event = n.attributes.get("event").map(String::as_str).unwrap_or("keyturn.notification");
    let entry = PutEventsRequestEntry::builder()
        .source(EVENT_SOURCE)
        .detail_type(detail_type(event))
        .detail(event_detail(n).to_string())
        .event_bus_name(bus)
        .build();
    put_with_retry(vec![entry], retry, |entries| async move {
        let out = client.put_events().set_entries(Some(entries)).send().await.map_err(|e| {
            let e = aws("events", "PutEvents", e);
            e.to_string()
        })?;
        Ok(out.entries().iter().map(|r| r.error_code().map(str::to_string)).collect())
    })
    .await
}

#[cfg(test)]
#[path = "notify/tests.rs"]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{Failure, Step};

    fn saga() -> Saga {
        let mut s = Saga::new("S-1".into(), "auth0-ses".into(), "iam_access_key:u".into(), "manual".into(), 0, 1);
        s.old_keys = vec![KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
        s.new_key = Some("AKIANEW".into());
        s
    }

    fn ctx(keys: &[KeyRef]) -> Context<'_> {
        Context {
            credential_kind: "iam_access_key",
            credential: "iam user auth0-ses-sender",
            target_kind: "auth0_email_provider",
            target: "Auth0 example.eu.auth0.com",
            keys_now: Some(keys),
            advice: None,
        }
    }

    #[test]
    fn failure_notification_says_what_why_state_and_action() {
        let mut s = saga();
        s.status = Status::Compensated;
        s.target = TargetState::Rejected;
        s.failure = Some(Failure {
            step: Step::PushToTarget,
            code: "insufficient_scope".into(),
            message: "Insufficient scope, expected any of: update:email_provider".into(),
            operator_fixable: true,
        });
        s.compensations = vec!["deleted new key AKIANEW (no consumer held it)".into()];
        let keys = [KeyRef { id: "AKIAOLD".into(), active: true, created_at: None }];
        // The target's own advice for its error code is the recommended action.
        let mut c = ctx(&keys);
        c.advice = Some("Grant the application the read:email_provider and update:email_provider scopes, then run `keyturn rotate auth0-ses`.".into());
        let n = render(&s, &c);
        assert_eq!(n.subject, "[keyturn] Rotation failed: auth0-ses (iam user auth0-ses-sender) -> Auth0 example.eu.auth0.com");
        for needle in [
            "Rotation:        auth0-ses",
            "Saga:            S-1",
            "Failed step:     push_to_target",
            "Error code:      insufficient_scope",
            "Operator can fix: yes",
            "Rolled back:     deleted new key AKIANEW",
            "AKIAOLD  active    old key",
            "AKIANEW  deleted   new key",
            "Target now:      unchanged (it rejected the new key)",
            "update:email_provider scopes",
            "keyturn status S-1",
        ] {
            assert!(n.text.contains(needle), "missing {needle:?} in\n{}", n.text);
        }
        assert_eq!(n.attributes["event"], "rotation.failed");
        assert_eq!(n.attributes["severity"], "error");
        assert_eq!(n.document["failure"]["code"], "insufficient_scope");
        assert_eq!(n.document["keys"][1]["state"], "deleted");
    }

    #[test]
    fn subject_is_one_line_and_bounded() {
        let mut s = saga();
        s.rotation_id = "x\ny".repeat(80);
        s.status = Status::Succeeded;
        let n = render(&s, &ctx(&[]));
        assert!(!n.subject.contains('\n'));
        assert!(n.subject.chars().count() <= 100);
        assert_eq!(n.attributes["event"], "rotation.succeeded");
    }

    fn by_hand_saga() -> Saga {
        let mut s = Saga::new("S-9".into(), "entra-scim".into(), "scim_token:any:us-east-1".into(), "health:scim_expiry".into(), 0, 1);
        s.manual = true;
        s.old_keys = vec![KeyRef { id: "tok-0001".into(), active: true, created_at: Some(1_764_547_200_000) }];
        s
    }

    fn hand() -> crate::connectors::ByHand {
        crate::connectors::ByHand {
            noun: "SCIM access token",
            create: vec!["Open the console.".into(), "Generate token.".into()],
            delete: vec!["Select it and choose Delete.".into()],
        }
    }

    fn scim_ctx() -> Context<'static> {
        Context {
            credential_kind: "scim_token",
            credential: "IAM Identity Center SCIM token (us-east-1)",
            target_kind: "entra_provisioning",
            target: "Entra provisioning job J",
            keys_now: None,
            advice: None,
        }
    }

    #[test]
    fn action_required_names_the_steps_the_command_and_the_deadline() {
        let mut s = by_hand_saga();
        s.step = Step::AwaitNew;
        s.deadline = Some(86_400_000);
        let n = render_prompt(&s, &scim_ctx(), &hand(), false);
        assert_eq!(n.attributes["event"], "rotation.action_required");
        assert_eq!(n.subject, "[keyturn] Action required: create a new SCIM access token: entra-scim");
        for needle in [
            "  1. Open the console.",
            "  2. Generate token.",
            "`keyturn provide S-9`",
            "--from-secret",
            "Deadline:        1970-01-02T00:00:00Z",
            "nothing will have changed",
        ] {
            assert!(n.text.contains(needle), "missing {needle:?} in\n{}", n.text);
        }
        assert!(!n.text.contains("--old-token-created"), "the old token is on record already");
        s.prompts = 2;
        let r = render_prompt(&s, &scim_ctx(), &hand(), true);
        assert_eq!(r.attributes["event"], "rotation.reminder");
        assert_eq!(r.document["reminder"], 2);
        assert!(r.text.contains("Reminder:        2"));
    }

    #[test]
    fn delete_notice_tells_which_token_to_delete_and_which_to_keep() {
        let mut s = by_hand_saga();
        s.step = Step::AwaitRetire;
        s.new_key = Some("handed over 2026-11-21T10:00:00Z".into());
        s.target = TargetState::HoldsNew;
        s.old_keys = vec![];
        let n = render_prompt(&s, &scim_ctx(), &hand(), false);
        assert_eq!(n.document["action"], "delete_old");
        assert!(n.text.contains("it is the older one"), "no old token on record: says how to tell\n{}", n.text);
        assert!(n.text.contains("Do NOT delete the token handed over 2026-11-21T10:00:00Z"), "{}", n.text);
        assert!(n.text.contains("`keyturn confirm S-9`"));
    }

    #[test]
    fn by_hand_outcomes_say_what_the_person_must_do() {
        let mut s = by_hand_saga();
        s.new_key = Some("handed over T".into());
        s.status = Status::Compensated;
        s.target = TargetState::Rejected;
        s.failure = Some(Failure {
            step: Step::PushToTarget,
            code: "X".into(),
            message: "Entra rejected the new token in Test connection: 401".into(),
            operator_fixable: true,
        });
        let n = render(&s, &scim_ctx());
        assert!(n.text.contains("Tokens now (no API lists them"), "{}", n.text);
        assert!(n.text.contains("handed over T  unused: delete it in the console  new token"), "{}", n.text);
        assert!(n.document["recommended_action"].as_str().unwrap().contains("Delete the unused new token"));
        s.failure = Some(Failure { step: Step::AwaitNew, code: "DeadlinePassed".into(), message: "m".into(), operator_fixable: true });
        s.new_key = None;
        s.target = TargetState::Untouched;
        assert!(recommended_action(&s, None).contains("No token was handed over in time"));
        s.status = Status::Succeeded;
        s.old_deleted = true;
        s.failure = None;
        let n = render(&s, &scim_ctx());
        assert!(n.text.contains("tok-0001  deleted (confirmed by a person)  old token"), "{}", n.text);
    }

    #[test]
    fn detail_types_name_each_event_kind() {
        assert_eq!(detail_type("rotation.succeeded"), "Rotation Succeeded");
        assert_eq!(detail_type("rotation.needs_attention"), "Rotation Needs Attention");
        assert_eq!(detail_type("rotation.exposed_key"), "Rotation Exposed Key");
        assert_eq!(detail_type("keyturn.config_rejected"), "Keyturn Config Rejected");
    }

    #[test]
    fn every_saga_notice_carries_the_correlation_id_in_document_attribute_and_event() {
        let mut s = saga();
        s.status = Status::Succeeded;
        let n = render(&s, &ctx(&[]));
        assert_eq!(n.attributes["correlation_id"], "S-1", "no request: the saga id");
        s.correlation_id = Some("ticket-42".into());
        let n = render(&s, &ctx(&[]));
        assert_eq!(n.attributes["correlation_id"], "ticket-42");
        assert_eq!(n.document["correlation_id"], "ticket-42");
        let d = event_detail(&n);
        assert_eq!(d["correlation_id"], "ticket-42");
        assert_eq!(d["saga_id"], "S-1");
        assert_eq!(d["event"], "rotation.succeeded");
        // Notices about no saga still have the field in the event.
        let u = render_unmatched("1", "u", "f", "iam_access_key");
        assert_eq!(event_detail(&u)["correlation_id"], Value::Null);
        // Prompts and evidence too.
        let mut m = by_hand_saga();
        m.correlation_id = Some("c-9".into());
        m.step = Step::AwaitNew;
        assert_eq!(render_prompt(&m, &scim_ctx(), &hand(), false).attributes["correlation_id"], "c-9");
    }

    #[test]
    fn the_exposed_key_notice_gives_timeline_aws_quarantine_and_next_steps() {
        use crate::saga::{ExposedRole, Exposure};
        let mut s = saga();
        s.status = Status::Succeeded;
        s.target = TargetState::HoldsNew;
        s.switched_at = Some(11_000);
        s.exposure = Some(Exposure {
            key_id: "AKIAOLD".into(),
            role: ExposedRole::Old,
            seen_at: 10_000,
            event: "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/X".into(),
            keep_inactive: false,
            inactive_at: Some(12_500),
            deleted_at: Some(13_000),
            follow_up: false,
        });
        let keys = [KeyRef { id: "AKIANEW".into(), active: true, created_at: None }];
        let n = render(&s, &ctx(&keys));
        assert_eq!((n.attributes["event"].as_str(), n.attributes["severity"].as_str()), ("rotation.exposed_key", "critical"));
        assert_eq!(n.document["event"], "rotation.exposed_key");
        assert_eq!(n.document["exposure"]["timeline"]["seconds_to_inactive"], 2.5);
        assert_eq!(n.document["exposure"]["state"], "deleted");
        for needle in [
            "event seen by keyturn:      1970-01-01T00:00:10Z",
            "+1.0s after",
            "+2.5s after keyturn saw the event",
            "AWSCompromisedKeyQuarantineV2",
            "CloudTrail",
            "Remove the public copy",
        ] {
            assert!(n.text.contains(needle), "missing {needle:?} in\n{}", n.text);
        }
        assert!(n.subject.contains("Exposed key replaced and deleted"), "{}", n.subject);
        // Still active: says so first.
        let mut e = s.exposure.clone().unwrap();
        e.inactive_at = None;
        e.deleted_at = None;
        s.exposure = Some(e);
        s.status = Status::Compensated;
        let n = render(&s, &ctx(&keys));
        assert!(n.text.starts_with("Exposed key is STILL ACTIVE"), "{}", n.text);
        assert!(n.document["exposure"]["next_steps"][0].as_str().unwrap().contains("update-access-key"));
    }

    #[tokio::test]
    async fn put_events_retries_only_the_failed_entries() {
        use std::sync::Mutex;
        let calls: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());
        let retry = PutRetry { attempts: 4, base: std::time::Duration::ZERO };
        // Entry 2 fails twice (throttled), then goes through.
        let r = put_with_retry(vec![1u32, 2, 3], retry, |entries| {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(entries.clone());
                c.len()
            };
            async move { Ok(entries.iter().map(|e| (*e == 2 && n < 3).then(|| "ThrottlingException".to_string())).collect()) }
        })
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2, 3], vec![2], vec![2]]);
        // Failing for good: the last error codes, after the set number of attempts.
        let n = Mutex::new(0);
        let r = put_with_retry(vec![7u32], retry, |entries| {
            *n.lock().unwrap() += 1;
            async move { Ok(entries.iter().map(|_| Some("InternalFailure".to_string())).collect()) }
        })
        .await;
        assert_eq!(r, Err("InternalFailure".into()));
        assert_eq!(*n.lock().unwrap(), 4);
        // A call that fails as a whole is retried too.
        let n = Mutex::new(0);
        let r = put_with_retry(vec![7u32], retry, |entries| {
            let first = {
                let mut g = n.lock().unwrap();
                *g += 1;
                *g == 1
            };
            async move {
                if first {
                    Err("events PutEvents: ServiceUnavailable".to_string())
                } else {
                    Ok(entries.iter().map(|_| None).collect())
                }
            }
        })
        .await;
        assert_eq!(r, Ok(()));
    }
}
