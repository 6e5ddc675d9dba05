//! A wait on a person: the `action_required` notice and its reminders.

use std::collections::BTreeMap;

use crate::clock::{fmt_date, fmt_ms};
use crate::saga::Saga;

use super::super::document::{to_document, Head, Named, OldToken, PromptDoc};
use super::super::{correlate, Context, Notification};
use super::outcome::{new_described, old_described, words_of};
use crate::connectors::HandWords;

/// A wait on a person: the `action_required` notice (first) or a reminder.
/// `steps` are the source's console steps ([`crate::connectors::ByHand`]);
/// this adds the keyturn commands, the deadline and which token is which.
/// [`render_prompt`] for a configured rotation: its connectors name the
/// credential and the target and give the target's words.
pub fn render_prompt_for(rot: &crate::connectors::Rotation, saga: &Saga, hand: &crate::connectors::ByHand, reminder: bool) -> Notification {
    let (credential, target) = (rot.source.describe(), rot.target.describe());
    let ctx = Context {
        credential_kind: rot.source.kind(),
        credential: &credential,
        target_kind: rot.target.kind(),
        target: &target,
        keys_now: None,
        advice: None,
        words: rot.target.by_hand_words(),
        exposure: rot.source.exposure_words(),
    };
    render_prompt(saga, &ctx, hand, reminder)
}

pub fn render_prompt(saga: &Saga, ctx: &Context<'_>, hand: &crate::connectors::ByHand, reminder: bool) -> Notification {
    use crate::saga::Step;
    let (event, severity) = if reminder { ("rotation.reminder", "warning") } else { ("rotation.action_required", "warning") };
    let noun = hand.noun;
    let w = words_of(ctx.words);
    let creating = saga.step == Step::AwaitNew;
    let (title, action) = if creating { (format!("create a new {noun}"), "create_new") } else { (format!("delete the old {noun}"), "delete_old") };
    let headline = if reminder { format!("Reminder: {title}") } else { format!("Action required: {title}") };
    let mut steps: Vec<String> = Vec::new();
    let mut commands: Vec<String> = Vec::new();
    let id = &saga.saga_id;
    if creating {
        steps.extend(hand.create.iter().cloned());
        steps.push(format!(
            "Hand the token to keyturn. It is read from a no-echo prompt or from standard input, never from the command line: `keyturn provide {id}` (paste at the prompt), or `keyturn provide {id} < token-file`, or from a Secrets Manager secret: `keyturn provide {id} --from-secret <secret id>`."
        ));
        if saga.keys.old_keys.is_empty() {
            steps.push("Add `--old-token-created YYYY-MM-DD` (and `--old-token-id <ID>`) naming the token in use today, so keyturn can tell you later which one to delete.".into());
        }
        steps.push(w.after_handover.into());
        commands.push(format!("keyturn provide {id}"));
        commands.push(format!("keyturn provide {id} --from-secret <secret id>"));
    } else {
        let at = saga.effects.switched_at.map(|t| format!(" at {}", fmt_ms(t))).unwrap_or_default();
        steps.push(HandWords::say(w.switched, &[("at", at.as_str())]));
        steps.extend(hand.delete.iter().cloned());
        steps.push(HandWords::say(w.keep_new, &[("old", old_described(saga, w).as_str()), ("new", new_described(saga).as_str())]));
        steps.push(format!("Tell keyturn it is done: `keyturn confirm {id}`."));
        commands.push(format!("keyturn confirm {id}"));
    }
    let consequence = if creating {
        "keyturn stops waiting and reports the rotation failed; nothing will have changed and the current token keeps working until it expires"
    } else {
        "keyturn stops waiting and reports the rotation needs attention; the old token stays valid until someone deletes it or it expires"
    };
    let d = PromptDoc {
        head: Head { event, severity },
        rotation_id: saga.rotation_id.clone(),
        saga_id: id.clone(),
        status: saga.status.as_str(),
        trigger: saga.trigger.clone(),
        action,
        reminder: reminder.then_some(saga.person.prompts),
        deadline: saga.person.deadline,
        credential: Named::new(ctx.credential_kind, ctx.credential),
        target: Named::new(ctx.target_kind, ctx.target),
        old_token: saga.keys.old_keys.first().map(|k| OldToken { id: k.id.clone(), created: k.created_at.map(fmt_date) }),
        new_token: saga.keys.new_key.clone(),
        steps,
        commands,
        status_command: format!("keyturn status {id}"),
    };
    // The text says what the document says, in lines.
    let deadline = d.deadline.map(fmt_ms).unwrap_or_else(|| "none".into());
    let mut t = format!("{headline}\n\n");
    t.push_str(&format!("Rotation:        {}\n", d.rotation_id));
    t.push_str(&format!("Saga:            {}\n", d.saga_id));
    t.push_str(&format!("Credential:      {} ({})\n", d.credential.name, d.credential.kind));
    t.push_str(&format!("Target:          {} ({})\n", d.target.name, d.target.kind));
    t.push_str(&format!("Started:         {} by {}\n", fmt_ms(saga.created_at), d.trigger));
    if let Some(n) = d.reminder {
        t.push_str(&format!("Reminder:        {n} (keyturn is still waiting)\n"));
    }
    t.push_str(&format!("Deadline:        {deadline}; after it {consequence}.\n"));
    t.push_str("What to do:\n");
    for (i, step) in d.steps.iter().enumerate() {
        t.push_str(&format!("  {}. {step}\n", i + 1));
    }
    t.push_str(&format!("More:            {}\n", d.status_command));
    let document = to_document(&d);
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

/// A wait of a saga with the trust shape ([`crate::saga::Trust`]) for a
/// configured rotation: [`render_trust_prompt`] with its connectors' names.
pub fn render_trust_prompt_for(rot: &crate::connectors::Rotation, saga: &Saga, hand: &crate::connectors::TrustSteps, reminder: bool) -> Notification {
    let (credential, target) = (rot.source.describe(), rot.target.describe());
    let ctx = Context {
        credential_kind: rot.source.kind(),
        credential: &credential,
        target_kind: rot.target.kind(),
        target: &target,
        keys_now: None,
        advice: None,
        words: None,
        exposure: rot.source.exposure_words(),
    };
    render_trust_prompt(saga, &ctx, hand, reminder)
}

/// A wait of a saga with the trust shape: the `action_required` notice
/// (first) or a reminder, with the source's steps
/// ([`crate::connectors::TrustSteps`]) and the commands that answer it.
pub fn render_trust_prompt(saga: &Saga, ctx: &Context<'_>, hand: &crate::connectors::TrustSteps, reminder: bool) -> Notification {
    use crate::saga::Step;
    let (credential, target) = (ctx.credential, ctx.target);
    let (credential_kind, target_kind) = (ctx.credential_kind, ctx.target_kind);
    let event = if reminder { "rotation.reminder" } else { "rotation.action_required" };
    let headline = if reminder { format!("Reminder: {}", hand.title) } else { format!("Action required: {}", hand.title) };
    let id = &saga.saga_id;
    let trusting = saga.step == Step::AwaitTrust;
    let mut steps = hand.steps.clone();
    let commands = if trusting {
        steps.push(format!("Tell keyturn it is done: `keyturn confirm {id}`."));
        vec![format!("keyturn confirm {id}")]
    } else {
        steps.push(format!(
            "If sign-in works: `keyturn confirm {id}` (keyturn then removes the old {}). If it does not: `keyturn confirm {id} --broken`.",
            hand.noun
        ));
        vec![format!("keyturn confirm {id}"), format!("keyturn confirm {id} --broken")]
    };
    let deadline = saga.person.deadline.map(fmt_ms).unwrap_or_else(|| "none".into());
    let mut t = format!("{headline}\n\n");
    t.push_str(&format!("Rotation:        {}\n", saga.rotation_id));
    t.push_str(&format!("Saga:            {id}\n"));
    t.push_str(&format!("Credential:      {credential} ({credential_kind})\n"));
    t.push_str(&format!("Target:          {target} ({target_kind})\n"));
    t.push_str(&format!("Started:         {} by {}\n", fmt_ms(saga.created_at), saga.trigger));
    if reminder {
        t.push_str(&format!("Reminder:        {} (keyturn is still waiting)\n", saga.person.prompts));
    }
    t.push_str(&format!("Deadline:        {deadline}; after it {}.\n", hand.deadline));
    t.push_str("What to do:\n");
    for (i, step) in steps.iter().enumerate() {
        t.push_str(&format!("  {}. {step}\n", i + 1));
    }
    t.push_str(&format!("More:            keyturn status {id}\n"));
    let document = to_document(&PromptDoc {
        head: Head { event, severity: "warning" },
        rotation_id: saga.rotation_id.clone(),
        saga_id: id.clone(),
        status: saga.status.as_str(),
        trigger: saga.trigger.clone(),
        action: if trusting { "trust_new" } else { "check_sign_in" },
        reminder: reminder.then_some(saga.person.prompts),
        deadline: saga.person.deadline,
        credential: Named::new(credential_kind, credential),
        target: Named::new(target_kind, target),
        old_token: saga.trust.as_ref().and_then(|t| t.old.clone()).map(|id| OldToken { id, created: None }),
        new_token: saga.keys.new_key.clone(),
        steps,
        commands,
        status_command: format!("keyturn status {id}"),
    });
    let subject = format!("[keyturn] {headline}: {}", saga.rotation_id).replace(['\r', '\n'], " ").chars().take(100).collect();
    correlate(
        Notification {
            subject,
            text: t,
            document,
            attributes: BTreeMap::from([
                ("event", event.to_string()),
                ("severity", "warning".to_string()),
                ("rotation_id", saga.rotation_id.clone()),
                ("credential_kind", credential_kind.to_string()),
                ("target_kind", target_kind.to_string()),
            ]),
        },
        saga,
    )
}
