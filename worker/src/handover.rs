//! The console handover of a credential made by a person (a SCIM token):
//! a per-saga Secrets Manager secret the person pastes the token into, so
//! neither a shell, nor AWS credentials for keyturn's table, queue and KMS
//! key, nor `keyturn provide` is needed. See docs/scim.md, "Handing over
//! in the AWS console".
//!
//! * While a saga waits for a new credential, keyturn creates (where it
//!   may) the **handover secret** `keyturn/handover/<rotation>/<saga>`: no
//!   value, on the stack's KMS key, tagged with the saga id. The
//!   `action_required` notice and the reminders carry its console link.
//! * keyturn looks at it before every notice of the wait (so at the latest
//!   at the next reminder), and when the intake queue brings a CloudTrail
//!   `PutSecretValue` / `UpdateSecret` / `CreateSecret` event for a name
//!   under [`PREFIX`] ([`Handovers::handover_event`]). Nothing of that event is
//!   trusted but the secret's name: keyturn loads the saga it names, checks
//!   that saga belongs to the rotation the name says and is waiting, and
//!   reads the secret whose name it computes from that saga itself.
//! * A plausible token (the rules of `keyturn provide`: the source's own
//!   [`CredentialSource::check_handed`]) is
//!   handed over exactly as `keyturn provide` does it ([`Commands::provide`]:
//!   sealed with KMS bound to the saga id, the same conditional commit).
//!   Anything else is refused with a notice and not used.
//! * Once Entra holds the token (the wait for the old token's deletion
//!   begins, after the verify step), and whenever the saga ends, the
//!   handover secrets are deleted without recovery.
//! * The old token's deletion is confirmed the same way: that wait names a
//!   small second secret, `…/<saga>/old-token-deleted`, whose value the
//!   person sets to [`CONFIRM_WORD`]; keyturn then does what
//!   `keyturn confirm` does ([`Commands::confirm`]).
//!
//! A value read is held only in a [`SecretString`]; no log line, notice,
//! error or message carries it.

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::connectors::check::one_line;
use crate::connectors::check::HandedProblem;
use crate::connectors::{ByHand, CredentialSource};
use std::sync::Arc;

use crate::commands::Commands;
use crate::error::{aws, Error, Result};
use crate::notify;
use crate::queue::{Queue, Received};
use crate::saga::{Saga, Step};
use crate::shared::Shared;

/// Every handover secret's name starts with this (the stack's IAM grants
/// and EventBridge rule are scoped to it).
pub const PREFIX: &str = "keyturn/handover/";
/// The value that confirms the old credential is deleted (any case,
/// surrounding whitespace ignored).
pub const CONFIRM_WORD: &str = "DELETED";
/// Last part of the name of the secret that confirms the deletion.
const CONFIRM_LEAF: &str = "old-token-deleted";
/// Tag naming the saga a handover secret belongs to.
pub const SAGA_TAG: &str = crate::seal::CONTEXT_KEY;

/// Which of a saga's two handover secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The new token, while the saga waits for it (`await_new`).
    Token,
    /// The confirmation of the old token's deletion (`await_retire`).
    Confirm,
}

impl Slot {
    /// The secret a saga waits on now, if it waits on a person.
    pub fn waited_on(saga: &Saga) -> Option<Slot> {
        if !saga.person.manual || saga.status.is_terminal() {
            return None;
        }
        match saga.step {
            Step::AwaitNew => Some(Slot::Token),
            Step::AwaitRetire => Some(Slot::Confirm),
            _ => None,
        }
    }
}

/// The name of a saga's handover secret.
pub fn secret_name(rotation_id: &str, saga_id: &str, slot: Slot) -> String {
    match slot {
        Slot::Token => format!("{PREFIX}{rotation_id}/{saga_id}"),
        Slot::Confirm => format!("{PREFIX}{rotation_id}/{saga_id}/{CONFIRM_LEAF}"),
    }
}

/// A handover secret named by an event: `(rotation, saga, slot)` from a
/// secret name or ARN (`arn:…:secret:<name>-XXXXXX`). `None` for anything
/// not exactly of the form [`secret_name`] makes: another prefix, a
/// rotation id with other characters, a saga id that is not a UUID as
/// keyturn writes it, more or fewer parts.
pub fn parse_name(id: &str) -> Option<(String, String, Slot)> {
    let name = match id.strip_prefix("arn:") {
        Some(arn) => {
            let (_, rest) = arn.split_once(":secret:")?;
            // Secrets Manager appends `-` and six characters to the name.
            let cut = rest.len().checked_sub(7)?;
            let (name, suffix) = rest.split_at(cut);
            let ok = suffix.starts_with('-') && suffix[1..].chars().all(|c| c.is_ascii_alphanumeric());
            if !ok || !arn.starts_with("aws") {
                return None;
            }
            name
        }
        None => id,
    };
    let rest = name.strip_prefix(PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (rotation, saga, slot) = match parts.as_slice() {
        [r, s] => (*r, *s, Slot::Token),
        [r, s, leaf] if *leaf == CONFIRM_LEAF => (*r, *s, Slot::Confirm),
        _ => return None,
    };
    let rotation_ok = !rotation.is_empty() && rotation.len() <= 128 && rotation.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let saga_ok = uuid::Uuid::try_parse(saga).is_ok_and(|u| u.hyphenated().to_string() == saga);
    (rotation_ok && saga_ok).then(|| (rotation.to_string(), saga.to_string(), slot))
}

/// A credential a person handed over, checked in its source's own format
/// ([`CredentialSource::check_handed`]); without a source (its rotation is
/// no longer configured), the common format. The rules of `keyturn provide`.
pub fn check_handed<'a>(source: Option<&dyn CredentialSource>, raw: &'a str) -> std::result::Result<&'a str, HandedProblem> {
    match source {
        Some(s) => s.check_handed(raw),
        None => crate::connectors::check::one_word(raw, crate::connectors::check::MAX_HANDED_BYTES, "credential"),
    }
}

/// The token in a handover secret's value: the plaintext, or the one
/// string of a one-pair JSON object (the console's key/value editor),
/// checked in the format of `source`'s credential ([`check_handed`]).
pub fn token_of(value: &str, source: Option<&dyn CredentialSource>) -> std::result::Result<SecretString, HandedProblem> {
    if value.trim_start().starts_with('{') {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(value) {
            if let (1, Some(Value::String(t))) = (m.len(), m.values().next()) {
                return check_handed(source, t).map(|t| SecretString::from(t.to_string()));
            }
            return Err(HandedProblem::NotOneWord);
        }
    }
    check_handed(source, value).map(|t| SecretString::from(t.to_string()))
}

/// Whether a confirmation secret's value is [`CONFIRM_WORD`].
pub fn is_confirmation(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case(CONFIRM_WORD)
}

/// A `secretsmanager.amazonaws.com` call CloudTrail recorded, as EventBridge
/// delivers it: only the secret's name is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretChanged {
    /// The event's `account`.
    pub account: String,
    pub rotation_id: String,
    pub saga_id: String,
    pub slot: Slot,
}

/// CloudTrail calls that may give a handover secret a value.
const CHANGES: [&str; 3] = ["PutSecretValue", "UpdateSecret", "CreateSecret"];

/// `None`: not a Secrets Manager event (the rest of intake decides).
/// `Some(Err(why))`: a Secrets Manager event keyturn does not act on (to
/// the intake DLQ); the reason quotes nothing but a shortened name.
pub fn parse_event(body: &str) -> Option<std::result::Result<SecretChanged, String>> {
    let v: Value = serde_json::from_str(body).ok()?;
    if v.pointer("/source").and_then(Value::as_str) != Some("aws.secretsmanager") {
        return None;
    }
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    if text("/detail-type") != "AWS API Call via CloudTrail" || !CHANGES.contains(&text("/detail/eventName")) {
        return Some(Err(format!(
            "secretsmanager event {:?} / {:?} is not a change of a handover secret",
            one_line(text("/detail-type"), 64),
            one_line(text("/detail/eventName"), 64)
        )));
    }
    if !text("/detail/errorCode").is_empty() {
        return Some(Err(format!("the secretsmanager call failed ({}): nothing changed", one_line(text("/detail/errorCode"), 64))));
    }
    let id = match text("/detail/eventName") {
        "CreateSecret" => text("/detail/requestParameters/name"),
        _ => text("/detail/requestParameters/secretId"),
    };
    Some(match parse_name(id) {
        Some((rotation_id, saga_id, slot)) => Ok(SecretChanged { account: text("/account").to_string(), rotation_id, saga_id, slot }),
        None => Err(format!("secret {:?} is not a handover secret ({PREFIX}<rotation>/<saga>[/{CONFIRM_LEAF}])", one_line(id, 200))),
    })
}

/// What came of a look at a handover secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Nothing there (yet), or the saga moved on already.
    Nothing,
    /// Handed over (`provide`) or confirmed (`confirm`).
    Moved,
    /// A value that was not used, and why (never the value).
    Refused(String),
}

/// What an intake message about a handover secret led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looked {
    /// Put on the intake DLQ, with the reason.
    Rejected(String),
    /// The saga named, and what came of looking at its secret.
    Saga { saga_id: String, taken: Taken },
    /// The saga named is unknown or waits on no such secret now.
    NotWaiting { saga_id: String },
}

/// Secrets Manager, as the handover needs it: what it holds.
pub struct Handover<'a> {
    client: &'a aws_sdk_secretsmanager::Client,
    kms_key_id: &'a str,
}

/// Whether keyturn could make the handover secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    Ready,
    /// Not allowed (`AccessDenied`): the person creates it.
    NotAllowed,
}

impl<'a> Handover<'a> {
    pub fn new(client: &'a aws_sdk_secretsmanager::Client, kms_key_id: &'a str) -> Self {
        Handover { client, kms_key_id }
    }

    fn region(&self) -> String {
        self.client.config().region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into())
    }

    /// The console page of a secret.
    pub fn console_url(&self, name: &str) -> String {
        let region = self.region();
        // Names are [A-Za-z0-9/_-]: only `/` needs escaping in a query.
        format!("https://{region}.console.aws.amazon.com/secretsmanager/secret?name={}&region={region}", name.replace('/', "%2F"))
    }

    /// Create the secret, with no value, on keyturn's KMS key, tagged with
    /// the saga id. One that exists already is fine.
    async fn ensure(&self, name: &str, saga_id: &str) -> Result<Made> {
        let tag = aws_sdk_secretsmanager::types::Tag::builder().key(SAGA_TAG).value(saga_id).build();
        let made = self
            .client
            .create_secret()
            .name(name)
            .kms_key_id(self.kms_key_id)
            .description(format!("keyturn handover for saga {saga_id}: paste the value keyturn asked for; keyturn deletes this secret"))
            .tags(tag)
            .send()
            .await;
        match made.map_err(|e| aws("secretsmanager", "CreateSecret", e)) {
            Ok(_) => {
                info!(secret = name, "handover secret created");
                Ok(Made::Ready)
            }
            Err(Error::Aws { code, .. }) if code == "ResourceExistsException" => Ok(Made::Ready),
            Err(Error::Aws { code, .. }) if code.starts_with("AccessDenied") => Ok(Made::NotAllowed),
            Err(e) => Err(e),
        }
    }

    /// The secret's current value; `None` while it has none (or is gone).
    async fn read(&self, name: &str) -> Result<Option<SecretString>> {
        match self.client.get_secret_value().secret_id(name).send().await.map_err(|e| aws("secretsmanager", "GetSecretValue", e)) {
            Ok(out) => Ok(out.secret_string.map(SecretString::from)),
            Err(Error::Aws { code, .. }) if code == "ResourceNotFoundException" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete the secret at once, without a recovery window.
    async fn delete(&self, name: &str) -> Result<()> {
        let out = self.client.delete_secret().secret_id(name).force_delete_without_recovery(true).send().await;
        match out.map_err(|e| aws("secretsmanager", "DeleteSecret", e)) {
            Ok(_) => {
                info!(secret = name, "handover secret deleted");
                Ok(())
            }
            Err(Error::Aws { code, .. }) if code == "ResourceNotFoundException" => Ok(()),
            // Deleted a moment ago (deletion is asynchronous).
            Err(Error::Aws { code, message, .. }) if code == "InvalidRequestException" && message.contains("marked deleted") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The handover job: looks at handover secrets (on the prompt path and
/// when intake brings a change event) and hands over what it finds through
/// [`Commands`], as `keyturn provide` / `keyturn confirm` do.
pub struct Handovers<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) commands: Arc<Commands<Q>>,
    pub(crate) notifier: notify::Notifier,
    pub(crate) secretsmanager: aws_sdk_secretsmanager::Client,
    pub(crate) kms_key_id: String,
}

impl<Q: Queue> Handovers<Q> {
    fn handover(&self) -> Handover<'_> {
        Handover::new(&self.secretsmanager, &self.kms_key_id)
    }

    /// Delete a finished saga's handover secrets (both; absent ones are
    /// fine). A retryable failure fails the step, so it is tried again.
    pub(crate) async fn cleanup(&self, saga: &Saga) -> Result<()> {
        if !saga.person.manual {
            return Ok(());
        }
        let h = self.handover();
        for slot in [Slot::Token, Slot::Confirm] {
            match h.delete(&secret_name(&saga.rotation_id, &saga.saga_id, slot)).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => warn!(error = %e, "could not delete a handover secret; delete it by hand"),
            }
        }
        Ok(())
    }

    /// Look at the handover secret of a saga waiting on a person and act
    /// on what is there, as `keyturn provide` / `keyturn confirm` would.
    pub(crate) async fn take_handover(&self, saga: &Saga) -> Result<Taken> {
        let Some(slot) = Slot::waited_on(saga) else { return Ok(Taken::Nothing) };
        let h = self.handover();
        if slot == Slot::Confirm {
            // Entra holds the new token (saved and verified): its copy goes.
            if let Err(e) = h.delete(&secret_name(&saga.rotation_id, &saga.saga_id, Slot::Token)).await {
                warn!(saga = %saga.saga_id, error = %e, "could not delete the token's handover secret; trying again later");
            }
        }
        let name = secret_name(&saga.rotation_id, &saga.saga_id, slot);
        let Some(value) = h.read(&name).await? else { return Ok(Taken::Nothing) };
        let moved = match slot {
            Slot::Token => match token_of(value.expose_secret(), self.shared.rotations().get(&saga.rotation_id).map(|r| r.source.as_ref())) {
                Ok(token) => self.commands.provide(&saga.saga_id, &token, None).await,
                Err(problem) => {
                    warn!(saga = %saga.saga_id, secret = %name, %problem, "the value in the handover secret is not a plausible token; not used");
                    return Ok(Taken::Refused(format!("keyturn did not use the value in {name}: {problem}")));
                }
            },
            Slot::Confirm if is_confirmation(value.expose_secret()) => self.commands.confirm(&saga.saga_id).await,
            Slot::Confirm => {
                warn!(saga = %saga.saga_id, secret = %name, "the confirmation secret does not hold the confirming word; not taken");
                return Ok(Taken::Refused(format!("keyturn did not take the value in {name} as a confirmation: it is not the word {CONFIRM_WORD}")));
            }
        };
        match moved {
            Ok(_) => {
                info!(saga = %saga.saga_id, secret = %name, "a person acted in the console (handover secret)");
                Ok(Taken::Moved)
            }
            // Someone was quicker (`keyturn provide`, another worker).
            Err(Error::Refused { code: "NotWaiting", .. }) => Ok(Taken::Nothing),
            Err(e) => Err(e),
        }
    }

    /// The prompt path of a wait on a person: look at the handover secret
    /// first. `None`: it moved the saga on (no notice now). Otherwise the
    /// person's steps with the handover added (the secret made where keyturn
    /// may), unless `expired` (then nothing is made or added).
    pub(crate) async fn handover_prompt(&self, saga: &Saga, hand: ByHand, expired: bool) -> Option<ByHand> {
        let refused = match self.take_handover(saga).await {
            Ok(Taken::Moved) => return None,
            Ok(Taken::Refused(why)) => Some(why),
            Ok(Taken::Nothing) => None,
            Err(e) => {
                warn!(saga = %saga.saga_id, error = %e, "could not look at the handover secret; asking as before");
                None
            }
        };
        if expired {
            return Some(hand);
        }
        Some(self.handover_steps(saga, hand, refused.as_deref()).await)
    }

    /// Add the handover secret (made now where keyturn may) to the steps.
    async fn handover_steps(&self, saga: &Saga, mut hand: ByHand, refused: Option<&str>) -> ByHand {
        let Some(slot) = Slot::waited_on(saga) else { return hand };
        let h = self.handover();
        let name = secret_name(&saga.rotation_id, &saga.saga_id, slot);
        let made = h.ensure(&name, &saga.saga_id).await.unwrap_or_else(|e| {
            warn!(saga = %saga.saga_id, error = %e, "could not create the handover secret; the notice asks the person to");
            Made::NotAllowed
        });
        let region = h.region();
        let open = match made {
            Made::Ready => format!("open the Secrets Manager secret {name} keyturn made for this rotation: {}", h.console_url(&name)),
            Made::NotAllowed => format!(
                "create a Secrets Manager secret in {region} named exactly {name} (https://{region}.console.aws.amazon.com/secretsmanager/newsecret?region={region})"
            ),
        };
        let steps = match slot {
            Slot::Token => &mut hand.create,
            Slot::Confirm => &mut hand.delete,
        };
        if let Some(why) = refused {
            steps.insert(0, format!("{why}. Nothing was used or sent to the target; set the value again, as described below."));
        }
        steps.push(match slot {
            Slot::Token => format!(
                "No shell needed: {open}. Choose Retrieve secret value > Set secret value (or Edit), Plaintext, paste the token alone and Save. keyturn notices it (at the latest at the next reminder), tests and saves it in the target as below, and deletes that secret once the target holds the token. Or hand it over with the keyturn command below instead."
            ),
            Slot::Confirm => format!(
                "When the old token is deleted, tell keyturn without a shell: {open}, choose Retrieve secret value > Set secret value (or Edit), Plaintext, and set the value to the word {CONFIRM_WORD}. Or run the keyturn command below instead."
            ),
        });
        hand
    }

    /// An intake message: `None` when it is not a Secrets Manager event.
    /// Otherwise it is acted on (acknowledged) or rejected (intake DLQ)
    /// here: a change of a handover secret makes keyturn look at that
    /// saga's secret, as a reminder would.
    pub(crate) async fn handover_event<I: Queue>(&self, intake: &I, m: &Received) -> Result<Option<Looked>> {
        let Some(parsed) = parse_event(&m.body) else { return Ok(None) };
        let looked = match parsed {
            Err(why) => Looked::Rejected(why),
            Ok(ev) => {
                let home = self.shared.rotations().accounts.home().await?.account.clone();
                if ev.account != home {
                    Looked::Rejected(format!("a handover secret lives in the worker's account {home}, not in {:?}", one_line(&ev.account, 20)))
                } else {
                    self.look_at_handover(&ev).await?
                }
            }
        };
        match &looked {
            Looked::Rejected(why) => {
                error!(reason = %why, "rejected secretsmanager event; moving it to the intake dead-letter queue");
                intake.dead_letter(m, why).await?;
            }
            other => {
                info!(outcome = ?other, "handover secret changed");
                intake.ack(m).await?;
            }
        }
        Ok(Some(looked))
    }

    async fn look_at_handover(&self, ev: &SecretChanged) -> Result<Looked> {
        let not_waiting = || Looked::NotWaiting { saga_id: ev.saga_id.clone() };
        let Some(stored) = self.shared.store.load(&ev.saga_id).await? else { return Ok(not_waiting()) };
        let saga = stored.saga;
        if saga.rotation_id != ev.rotation_id {
            return Ok(Looked::Rejected(format!(
                "the secret's name says saga {} belongs to rotation {}, but it belongs to {}: nothing read",
                ev.saga_id, ev.rotation_id, saga.rotation_id
            )));
        }
        if Slot::waited_on(&saga) != Some(ev.slot) {
            return Ok(not_waiting());
        }
        let taken = self.take_handover(&saga).await?;
        if let Taken::Refused(why) = &taken {
            self.handover_refused(&saga, why).await?;
        }
        Ok(Looked::Saga { saga_id: saga.saga_id.clone(), taken })
    }

    /// Tell the person their value was refused: the wait's notice again,
    /// saying why first.
    async fn handover_refused(&self, saga: &Saga, why: &str) -> Result<()> {
        let Some(rot) = self.shared.rotations().get(&saga.rotation_id).cloned() else { return Ok(()) };
        let Some(hand) = rot.source.by_hand() else { return Ok(()) };
        let hand = self.handover_steps(saga, hand, Some(why)).await;
        self.notifier.publish(&notify::render_prompt_for(&rot, saga, &hand, false)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAGA: &str = "0b7a4a62-3c1e-4a57-9a0e-52b9c1d2e3f4";

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for slot in [Slot::Token, Slot::Confirm] {
            let name = secret_name("entra-scim", SAGA, slot);
            assert_eq!(parse_name(&name), Some(("entra-scim".into(), SAGA.into(), slot)));
            let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbC123");
            assert_eq!(parse_name(&arn), Some(("entra-scim".into(), SAGA.into(), slot)), "{arn}");
        }
        for bad in [
            "keyturn/entra".to_string(),
            format!("other/handover/entra-scim/{SAGA}"),
            format!("keyturn/handover/entra-scim/{SAGA}/other"),
            format!("keyturn/handover/entra-scim/{SAGA}/old-token-deleted/x"),
            format!("keyturn/handover/entra scim/{SAGA}"),
            format!("keyturn/handover//{SAGA}"),
            format!("keyturn/handover/entra-scim/{}", SAGA.to_uppercase()),
            "keyturn/handover/entra-scim/not-a-uuid".to_string(),
            format!("keyturn/handover/../{SAGA}"),
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:keyturn/handover/entra-scim/{SAGA}"),
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:keyturn/handover/entra-scim/{SAGA}-AbC12!"),
        ] {
            assert_eq!(parse_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_plausible_tokens_are_taken() {
        use crate::connectors::check::MAX_HANDED_BYTES;
        use secrecy::ExposeSecret;
        let scim = crate::connectors::scim::ScimToken::new("us-east-1".into(), None);
        let take = |v: &str| token_of(v, Some(&scim)).map(|t| t.expose_secret().to_string());
        assert_eq!(take("scim-abc_123.xyz\n").as_deref(), Ok("scim-abc_123.xyz"));
        assert_eq!(take(r#"{"token": "scim-abc"}"#).as_deref(), Ok("scim-abc"), "the console's key/value editor");
        assert_eq!(take(""), Err(HandedProblem::Empty));
        assert_eq!(take("  \n"), Err(HandedProblem::Empty));
        assert_eq!(take("two words"), Err(HandedProblem::NotOneWord));
        assert_eq!(take("a\u{7}b"), Err(HandedProblem::NotOneWord));
        assert_eq!(take(r#"{"a": "x", "b": "y"}"#), Err(HandedProblem::NotOneWord));
        assert_eq!(take(&"x".repeat(MAX_HANDED_BYTES + 1)), Err(HandedProblem::TooLong { len: MAX_HANDED_BYTES + 1, noun: "SCIM token" }));
        assert_eq!(
            HandedProblem::TooLong { len: 3, noun: "SCIM token" }.to_string(),
            "it is 3 bytes long, more than any SCIM token",
            "the source names its own credential"
        );
        assert!(take(&"x".repeat(MAX_HANDED_BYTES)).is_ok());
        // Without a source (its rotation is gone) the common format, in neutral words.
        let long = "x".repeat(MAX_HANDED_BYTES + 1);
        assert_eq!(token_of(&long, None).map(|_| ()), Err(HandedProblem::TooLong { len: MAX_HANDED_BYTES + 1, noun: "credential" }));
        // The reasons never carry the value.
        for p in [HandedProblem::Empty, HandedProblem::TooLong { len: 3, noun: "SCIM token" }, HandedProblem::NotOneWord] {
            assert!(!p.to_string().contains("two words"));
        }
    }

    #[test]
    fn confirmation_is_the_word_alone() {
        assert!(is_confirmation("DELETED") && is_confirmation(" deleted\n"));
        assert!(!is_confirmation("not DELETED") && !is_confirmation("") && !is_confirmation("DELETE"));
    }

    fn event(name: &str, field: &str, id: &str) -> String {
        serde_json::json!({
            "version": "0", "source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail",
            "account": "123456789012", "region": "us-east-1",
            "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": name,
                       "requestParameters": {field: id, "secretString": "HIDDEN_DUE_TO_SECURITY_REASONS"}}
        })
        .to_string()
    }

    #[test]
    fn secret_events_name_a_handover_secret_or_are_rejected() {
        let name = secret_name("entra-scim", SAGA, Slot::Token);
        let ok = parse_event(&event("PutSecretValue", "secretId", &name)).unwrap().unwrap();
        assert_eq!((ok.account.as_str(), ok.rotation_id.as_str(), ok.saga_id.as_str(), ok.slot), ("123456789012", "entra-scim", SAGA, Slot::Token));
        assert!(parse_event(&event("CreateSecret", "name", &name)).unwrap().is_ok());
        assert!(parse_event(&event("UpdateSecret", "secretId", &format!("{name}/old-token-deleted"))).unwrap().is_ok());
        let why = parse_event(&event("PutSecretValue", "secretId", "prod/db-password")).unwrap().unwrap_err();
        assert!(why.contains("not a handover secret"), "{why}");
        let why = parse_event(&event("GetSecretValue", "secretId", &name)).unwrap().unwrap_err();
        assert!(why.contains("not a change"), "{why}");
        assert_eq!(parse_event(r#"{"source": "aws.health"}"#), None, "other events are not this module's");
        assert_eq!(parse_event("not json"), None);
    }
}
