//! Keys found besides the ones being replaced: orphans and strangers.

use super::*;

/// How far a key's creation time (IAM's clock, which reports whole seconds)
/// may lie before an intent's time (the worker's clock) and still count as
/// made by that attempt. IAM truncates `CreateDate` to the second (up to 1 s)
/// and both clocks are NTP-disciplined (Amazon Time Sync: well under 1 s),
/// so 2 s covers both. Erring small is safe: a real orphan older than that
/// is left in place and the saga stops in needs attention naming it; erring
/// large would let a key a person made just before an attempt be deleted.
pub const INTENT_CLOCK_SKEW: Millis = 2_000;

/// The error code of a key that keyturn neither made nor was asked to
/// replace: the saga stops in needs attention naming it.
pub const UNKNOWN_KEY: &str = "UnknownKey";

/// The keys `IssueNew` found besides the ones it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyTriage {
    /// Created after an earlier attempt's recorded intent: that attempt's
    /// key, whose secret was never stored. Safe to delete.
    pub orphans: Vec<String>,
    /// Anything else: made by someone else (or of unknown age). Never deleted.
    pub strangers: Vec<KeyRef>,
}

impl Saga {
    /// The recorded intents of `IssueNew` attempts before the current one
    /// (the current attempt's is the last). An intent whose time was not
    /// kept (a saga written before times were) counts from when the step
    /// began, which is no later than any of its attempts.
    pub fn earlier_issue_intents(&self) -> Vec<Millis> {
        let earlier = self.keys.issue_intents.saturating_sub(1) as usize;
        let mut at: Vec<Millis> = self.keys.issue_intent_at.iter().copied().take(earlier).collect();
        at.resize(earlier, self.run.step_started_at);
        at
    }
}

/// Sort the keys a credential has besides `keep` (the ones being replaced).
/// A key is an orphan only if an earlier attempt recorded its intent to
/// create one and the key was created no earlier than that intent (less
/// [`INTENT_CLOCK_SKEW`]); without an earlier intent, or with a key of
/// unknown creation time, it is a stranger. Pure: the source lists, this
/// decides, the source deletes only orphans.
pub fn triage_keys(keys: &[KeyRef], keep: &[String], earlier_intents: &[Millis]) -> KeyTriage {
    let first_intent = earlier_intents.iter().copied().min();
    let mut t = KeyTriage::default();
    for k in keys.iter().filter(|k| !keep.contains(&k.id)) {
        match (first_intent, k.created_at) {
            (Some(intent), Some(created)) if created.saturating_add(INTENT_CLOCK_SKEW) >= intent => t.orphans.push(k.id.clone()),
            _ => t.strangers.push(k.clone()),
        }
    }
    t
}

/// The message of an [`UNKNOWN_KEY`] refusal: the unknown keys and the
/// ones being replaced, by id (never anything secret).
pub fn unknown_key_message(owner: &str, strangers: &[KeyRef], keep: &[String]) -> String {
    let named: Vec<String> = strangers
        .iter()
        .map(|k| match k.created_at {
            Some(c) => format!("{} (created {})", k.id, crate::clock::fmt_ms(c)),
            None => k.id.clone(),
        })
        .collect();
    format!(
        "{owner} has key {} that keyturn neither made nor was asked to replace (it replaces {}); keyturn does not delete it. Delete one of the keys (or let the person who made it), then rotate again",
        named.join(", "),
        if keep.is_empty() { "no key".to_string() } else { keep.join(", ") }
    )
}
