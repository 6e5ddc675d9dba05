//! Connectors: where credentials come from and where they go.
//!
//! A rotation pairs one [`CredentialSource`] (an IAM user's access key, an
//! IAM Identity Center SCIM token) with one [`Target`] (Auth0's email
//! provider, Entra provisioning). The engine only speaks these two traits.
//!
//! A connector owns everything about itself: its configuration type and
//! validation ([`SourceSpec`], [`TargetSpec`], parsed from its own TOML
//! table by [`from_table`]), which credentials it pairs with
//! ([`TargetSpec::accepts`]), which events it covers ([`SourceSpec::covers`]),
//! its calls, and the advice its notifications give for its errors
//! ([`Target::advice`]) and the words they use for it ([`HandWords`]). The configuration root, intake and notifications
//! know only these traits and the registry ([`SOURCES`], [`TARGETS`]).
//! **Adding a connector is one new module here plus one registry line**; a
//! test (`kind_names_appear_only_in_the_registry`) greps the crate for every
//! registered kind name outside this directory and fails if it finds one.
//!
//! Contract for implementors:
//! * every method is idempotent: the engine may call it again after a crash
//!   or a duplicate message (deleting a key that is gone is success);
//! * transient failures are returned as retryable [`Error`]s — the saga
//!   decides how long to keep trying; in-process retries stay short;
//! * secrets travel only as [`SecretString`] and never appear in errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use secrecy::SecretString;

use crate::aws::Clients;
use crate::error::Result;
use crate::preflight::{Check, Findings};
use crate::saga::{KeyRef, Millis, Policy, Saga, Step, Verification};
use crate::secrets::{SecretRef, SecretResolver};

pub mod auth0;
pub mod auth0_secret;
pub mod auth0_smtp;
pub mod check;
pub mod entra;
pub mod entra_saml;
pub mod entra_secret;
pub mod github;
pub mod http;
pub mod iam;
pub mod identity_center_saml;
mod retry;
pub mod scim;
pub mod secretsmanager;
pub mod token;

pub use retry::{http_retry, RetryPolicy};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A freshly issued credential: public id and secret.
pub struct NewCredential {
    pub id: String,
    pub secret: SecretString,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential").field("id", &self.id).field("secret", &"[REDACTED]").finish()
    }
}

/// How a person creates and deletes a credential that has no API. The
/// engine puts these steps in the `action_required` notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByHand {
    /// What the credential is called, e.g. `SCIM access token`.
    pub noun: &'static str,
    /// Console steps to create a new one and copy it.
    pub create: Vec<String>,
    /// Console steps to delete one (the notice says which).
    pub delete: Vec<String>,
}

/// How notices word a rotation whose credential a person makes by hand, in
/// a target's own terms (its name, its check, its console paths). Each text
/// may hold `{old}` / `{new}` (the old and new credential as the person
/// identified them), `{rotate}` (the command that starts the rotation again)
/// and `{at}` (" at <time>" of the switch, or nothing); [`HandWords::say`]
/// fills them. Notifications speak of a connector only through these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandWords {
    /// Recommended action after a success.
    pub succeeded: &'static str,
    /// Nobody handed a credential over before the deadline.
    pub deadline_passed: &'static str,
    /// Nobody confirmed deleting the old credential.
    pub old_not_deleted: &'static str,
    /// The target refused the new credential in its check.
    pub rejected: &'static str,
    /// The target may hold the new credential but is not healthy.
    pub unhealthy: &'static str,
    /// Any other failure before the target took it.
    pub failed: &'static str,
    /// The old credential when nobody recorded which it is.
    pub old_unrecorded: &'static str,
    /// State of a new credential the target holds.
    pub new_saved: &'static str,
    /// State of the target after its check refused the new credential.
    pub target_rejected: &'static str,
    /// The last step of the hand-over: what keyturn does with the credential.
    pub after_handover: &'static str,
    /// First line of the "delete the old one" notice.
    pub switched: &'static str,
    /// Which credential to delete and which to keep.
    pub keep_new: &'static str,
}

impl HandWords {
    /// `text` with its placeholders filled.
    pub fn say(text: &str, vars: &[(&str, &str)]) -> String {
        vars.iter().fold(text.to_string(), |t, (k, v)| t.replace(&format!("{{{k}}}"), v))
    }
}

/// How notices about an exposed credential (a key its provider reported
/// public) word it in the source's own terms: what the provider did on its
/// own, how to find the credential's use and to deactivate it by hand, and
/// what to do about one no rotation covers. Notifications keep the layout
/// (the timeline, the order of the steps) and speak of the credential's
/// service only through these. Each text may hold `{key}` (the exposed
/// credential's id) and the placeholders its field names;
/// [`ExposureWords::say`] fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposureWords {
    /// What the provider does on its own to a credential it reports exposed.
    pub provider_action: &'static str,
    /// The step while the exposed credential still works after a rotation
    /// that could not replace it: `{status}` (the saga's), `{rotation}`.
    pub still_active: &'static str,
    /// The step to find the credential's use, until `{until}` (a time).
    pub find_use: &'static str,
    /// The step to lift the provider's restriction after the investigation,
    /// from `{credential}` (the source as it describes itself).
    pub lift_restriction: &'static str,
    /// The step when the exposed credential is kept inactive for forensics:
    /// `{rotation}`.
    pub kept_inactive: &'static str,
    /// How to deactivate the exposed credential by hand (the notice of a
    /// saga that cannot take the exposure over).
    pub deactivate_by_hand: &'static str,
    /// A credential with nothing left to rotate: the step to find its use
    /// while it was public.
    pub settled_find_use: &'static str,
    /// A credential with nothing left to rotate: the step to lift the
    /// provider's restriction.
    pub settled_lift: &'static str,
    /// Who owns an exposed credential no rotation covers: `{user}`.
    pub owner: &'static str,
    /// Who owns it when keyturn found no owner.
    pub owner_unknown: &'static str,
    /// What to do about an uncovered credential keyturn deactivated.
    pub uncovered_deactivated: &'static str,
    /// What to do about an uncovered credential keyturn failed to deactivate.
    pub uncovered_failed: &'static str,
    /// What to do about an uncovered credential left active.
    pub uncovered_active: &'static str,
    /// What to do about several uncovered credentials of one event.
    pub uncovered_many: &'static str,
}

impl ExposureWords {
    /// `text` with its placeholders filled (as [`HandWords::say`]).
    pub fn say(text: &str, vars: &[(&str, &str)]) -> String {
        HandWords::say(text, vars)
    }
}

/// The code of `Error::Refused` from `disable`/`enable` of a source whose
/// credentials cannot be disabled (an Entra password): the engine's
/// `disable_old` step takes it as nothing to do, so the old credential stays
/// valid through the grace period and is then deleted.
pub const CANNOT_DISABLE: &str = "CannotDisable";

/// What a person must do in a wait of a saga with the trust shape
/// ([`CredentialSource::person_trusts`]), in the source's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSteps {
    /// What the credential is called, e.g. `SAML signing certificate`.
    pub noun: &'static str,
    /// What the person is asked to do, for the notice's headline.
    pub title: String,
    /// The steps (the new credential itself included, when the target needs it).
    pub steps: Vec<String>,
    /// What keyturn does at the deadline, and which credential works then.
    pub deadline: String,
}

/// Where credentials come from.
pub trait CredentialSource: Send + Sync {
    /// `Some` when only a person can create and delete this credential:
    /// the saga then waits for them (`keyturn provide`, `keyturn confirm`)
    /// and never calls `issue`, `prove`, `disable`, `enable`, `retire` or
    /// `revoke`.
    fn by_hand(&self) -> Option<ByHand> {
        None
    }
    /// A credential a person hands over (`keyturn provide`, the console
    /// handover), checked in its own format before keyturn stores it: the
    /// credential alone, or why not (never naming it). Default: one word of
    /// printable text of at most [`check::MAX_HANDED_BYTES`].
    fn check_handed<'a>(&self, raw: &'a str) -> std::result::Result<&'a str, check::HandedProblem> {
        check::one_word(raw, check::MAX_HANDED_BYTES, "credential")
    }
    /// Machine name, e.g. `iam_access_key` (notification attribute).
    fn kind(&self) -> &'static str;
    /// Human name, e.g. `iam user auth0-ses-sender`.
    fn describe(&self) -> String;
    /// How many credentials of this kind may exist at once. A rotation
    /// needs room for one more beside those in place: `start` refuses
    /// (`TooManyKeys`) when [`CredentialSource::inventory`] lists this many.
    fn max_credentials(&self) -> usize {
        2
    }
    /// Whether [`CredentialSource::inventory`] tells when each credential
    /// was made. A source that cannot (an Auth0 client secret: Auth0 shows
    /// no age) has its `[rotation.schedule] max_age` counted from keyturn's
    /// last successful rotation of it instead.
    fn tells_age(&self) -> bool {
        true
    }
    /// Every credential currently in place, active or not.
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>>;
    /// Create a new credential. `earlier_intents` are the times earlier
    /// attempts of this step recorded their intent to create one: such an
    /// attempt may have created one whose secret was never stored (an
    /// orphan). A source deletes only what [`crate::saga::triage_keys`]
    /// calls an orphan (created after such an intent); any other credential
    /// besides `keep` is refused with [`crate::saga::UNKNOWN_KEY`], never
    /// deleted. On a first attempt there can be no orphan.
    fn issue<'a>(&'a self, keep: &'a [String], earlier_intents: &'a [crate::saga::Millis]) -> BoxFut<'a, Result<NewCredential>>;
    /// What this source must hold to issue again when the answer to an
    /// `issue` was lost and the old credential died with the call (Auth0's
    /// rotate-secret: a Management API token got with the old secret). The
    /// engine seals it in the saga *before* the call
    /// ([`crate::store::Store::seal_grant`]) and hands it to every attempt
    /// ([`CredentialSource::issue_granted`]). Default: none needed.
    fn grant(&self) -> BoxFut<'_, Result<Option<SecretString>>> {
        Box::pin(async { Ok(None) })
    }
    /// [`CredentialSource::issue`], with the grant sealed for this step
    /// (`None` when the source needs none). The engine calls this one.
    fn issue_granted<'a>(
        &'a self,
        keep: &'a [String],
        earlier_intents: &'a [crate::saga::Millis],
        _grant: Option<&'a SecretString>,
    ) -> BoxFut<'a, Result<NewCredential>> {
        self.issue(keep, earlier_intents)
    }
    /// Show the credential authenticates; `Error::NotYet` while it does not.
    fn prove<'a>(&'a self, cred: &'a NewCredential) -> BoxFut<'a, Result<()>>;
    fn disable<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>>;
    fn enable<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>>;
    /// Delete an old credential, unless it was used after `switched_at`
    /// (then `Error::Refused` with code `OldKeyUsedAfterSwitch`).
    fn retire<'a>(&'a self, id: &'a str, switched_at: Millis) -> BoxFut<'a, Result<()>>;
    /// Delete the new credential (compensation). Gone already is success.
    fn revoke<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>>;
    /// When a credential was last used and with which service (IAM:
    /// `GetAccessKeyLastUsed`); `None` when never used, gone, or the source
    /// cannot tell. Evidence for resolving a saga that needs attention.
    fn last_used<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<Option<(Millis, String)>>> {
        Box::pin(async { Ok(None) })
    }
    /// What a person should do about a rotation of this credential that
    /// failed with `code` (e.g. `TooManyKeys`), in the credential's own terms
    /// (its console, its service), for notifications; `rotate` starts the
    /// rotation again. `None`: the generic advice. A target's own advice
    /// ([`Target::advice`]) comes first.
    fn advice(&self, _code: &str, _rotate: &str) -> Option<String> {
        None
    }
    /// How notices about an exposed credential of this source word it
    /// (see [`ExposureWords`]). `None`: the notices' generic words.
    fn exposure_words(&self) -> Option<&'static ExposureWords> {
        None
    }
    /// When the credential now in use expires (Entra: a password's
    /// `endDateTime`); `None` when it does not expire or the source cannot
    /// tell. `[rotation.schedule] before_expiry` starts a rotation that long
    /// before it.
    fn expires_at(&self) -> BoxFut<'_, Result<Option<Millis>>> {
        Box::pin(async { Ok(None) })
    }
    /// `true` when the source switches to a new credential only after a
    /// person made the target trust it (a SAML signing certificate): the
    /// saga records [`crate::saga::Trust`] at the request and waits for the
    /// person at `await_trust` and `await_sign_in`, and calls [`Self::switch`].
    fn person_trusts(&self) -> bool {
        false
    }
    /// The person's steps for a trust wait (`step`: `AwaitTrust` or
    /// `AwaitSignIn`) about the new credential `new_id` replacing `old_id`.
    fn trust_steps<'a>(&'a self, _step: Step, _new_id: &'a str, _old_id: Option<&'a str>) -> BoxFut<'a, Result<TrustSteps>> {
        let kind = self.kind();
        Box::pin(async move { Err(crate::error::Error::Config(format!("the {kind} source has no person's steps"))) })
    }
    /// Make the source use credential `id` (read back). Idempotent.
    fn switch<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        let kind = self.kind();
        Box::pin(async move { Err(crate::error::Error::Config(format!("the {kind} source cannot switch credentials"))) })
    }
    /// What a person should do after a saga with the trust shape ended, in
    /// the source's own terms; `in_use_now` is the credential the source
    /// uses as just read (`None`: unknown).
    fn trust_advice(&self, _saga: &Saga, _in_use_now: Option<&str>) -> Option<String> {
        None
    }
    /// Where the credential lives and with which identity keyturn acts
    /// there (IAM: the account, and the member-account role it assumes),
    /// for `plan`. `None` when there is nothing to say.
    fn location(&self) -> BoxFut<'_, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
    /// `keyturn doctor`: the source's own preflight, changing nothing
    /// (IAM: the user exists, its keys, whether a rotation could start, the
    /// member role can be assumed), and the AWS actions it needs of the
    /// worker's own identity. Default: nothing checked, said so.
    fn doctor(&self) -> BoxFut<'_, Findings> {
        let kind = self.kind();
        Box::pin(
            async move { Findings { checks: vec![Check::not_checked("source", format!("the {kind} source has no preflight checks"))], actions: vec![] } },
        )
    }
}

/// Where credentials go.
pub trait Target: Send + Sync {
    /// Machine name, e.g. `auth0_email_provider`.
    fn kind(&self) -> &'static str;
    /// Human name, e.g. `Auth0 example.eu.auth0.com`.
    fn describe(&self) -> String;
    /// Check, before anything is created, that the target can take a new
    /// credential without damage (e.g. it holds the shape keyturn writes
    /// into). `Error::Refused` stops the saga at `start`, nothing changed.
    fn preflight(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Get ready for a push that is coming soon, without changing
    /// anything: e.g. fetch the API token now, so the push does not wait
    /// for it. An emergency's early steps start it beside their own work
    /// (the exposed key lives until the push and the read-back are done).
    /// Best effort: what fails here is left for the push to meet and report.
    fn warm(&self) -> BoxFut<'_, ()> {
        Box::pin(async {})
    }
    /// Hand the new credential over.
    /// `old_ids` are the credentials it replaces (a target that writes in
    /// several parts can put an old id back when a later part is refused).
    fn push<'a>(&'a self, cred: &'a NewCredential, old_ids: &'a [String]) -> BoxFut<'a, Result<()>>;
    /// Read the target back.
    fn verify<'a>(&'a self, new_id: &'a str, old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>>;
    /// The AWS service the target uses the credential with, as IAM names it
    /// in `GetAccessKeyLastUsed` (`ses` for an SES mail provider). A use of a
    /// key by this service after a saga stopped tells which key the target
    /// holds. `None`: any service counts.
    fn consumer_service(&self) -> Option<&'static str> {
        None
    }
    /// What a person should do about an error this target answered with
    /// (its error `code`), for notifications; `rotate` is the command that
    /// starts the rotation again. `None`: the generic advice.
    fn advice(&self, _code: &str, _rotate: &str) -> Option<String> {
        None
    }
    /// How notices word a by-hand credential's rotation into this target
    /// (see [`HandWords`]). `None`: the notices' generic words.
    fn by_hand_words(&self) -> Option<&'static HandWords> {
        None
    }
    /// `keyturn doctor`: the target's own preflight, changing nothing (its
    /// token can be obtained and carries the permissions the target needs;
    /// the target is readable), and the AWS actions it needs of the
    /// worker's own identity. Default: nothing checked, said so.
    fn doctor(&self) -> BoxFut<'_, Findings> {
        let kind = self.kind();
        Box::pin(
            async move { Findings { checks: vec![Check::not_checked("target", format!("the {kind} target has no preflight checks"))], actions: vec![] } },
        )
    }
}

/// A configured rotation with its connectors built.
#[derive(Clone)]
pub struct Rotation {
    pub id: String,
    pub credential: String,
    pub source: Arc<dyn CredentialSource>,
    pub target: Arc<dyn Target>,
    pub policy: Policy,
}

/// What a connector needs to build itself: AWS clients, the secret
/// resolver, the shared HTTP client.
pub struct BuildContext<'a> {
    pub clients: &'a Clients,
    /// Member-account roles and the worker's home account.
    pub accounts: &'a Arc<crate::accounts::Accounts>,
    pub secrets: &'a SecretResolver,
    pub http: &'a reqwest::Client,
    /// Where the connectors read time (token renewal, key ages).
    pub clock: &'a crate::clock::SharedClock,
}

/// What an event is about, in the event's own terms and in no connector's:
/// intake describes it, asks every configured source whether it covers it
/// ([`SourceSpec::covers`]), and never looks at a source's configuration or
/// knows which kinds of subject exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The event's own name for what it is about: a Security Hub resource
    /// type (`AwsIamUser`) or an AWS Health event type code. A source
    /// registers the kinds it covers ([`SourceEntry::subjects`]).
    pub kind: &'a str,
    /// The account the event is about.
    pub account: &'a str,
    /// The worker's own account: a source that names no account covers
    /// only subjects of this one.
    pub home: &'a str,
    /// The region the event is about; empty when it names none.
    pub region: &'a str,
    /// The resource's name (an IAM user's); empty when it names none.
    pub name: &'a str,
}

/// A kind of [`Subject`] a source covers, as its registry entry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectKind {
    /// [`Subject::kind`]: a Security Hub resource type or an AWS Health event type code.
    pub kind: &'static str,
    /// What a saga started by an AWS Health notice of this kind records as
    /// its trigger (a finding names its own trigger; empty then).
    pub trigger: &'static str,
}

/// A problem in a connector's configuration table: the key (relative to the
/// table, e.g. `user_name`; `None` for the table as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: Option<String>,
    pub message: String,
}

impl ConfigProblem {
    pub fn at(key: &str, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem { key: Some(key.to_string()), message: message.into() }
    }
}

/// How long a credential lives that only keyturn's own records date (one
/// made by hand, which no API lists: [`SourceSpec::recorded_lifetime`]),
/// and how `keyturn report` words its next rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedLifetime {
    /// From its creation to its expiry.
    pub lifetime: Millis,
    /// How long before the expiry the event that starts its rotation comes.
    pub rotation_before: Millis,
    /// Why the rotation is due then (the report's `next_due_reason`).
    pub due_reason: &'static str,
    /// The `next_due_reason` while no rotation has recorded one yet.
    pub unrecorded: &'static str,
}

/// A validated `source = { kind = … }` table. The connector owns its type,
/// its validation and its meaning; the configuration root holds it as this.
pub trait SourceSpec: Send + Sync + std::fmt::Debug {
    /// The `kind` it was registered under.
    fn kind(&self) -> &'static str;
    /// What it produces, for pairing with targets (e.g. `aws_access_key`).
    fn credential_type(&self) -> &'static str;
    /// The per-credential lock key: two rotations of one credential are one saga.
    fn credential_key(&self) -> String;
    /// Whether an event about `subject` is about this credential.
    fn covers(&self, subject: &Subject<'_>) -> bool;
    /// The account the credential lives in, when configured.
    fn account_id(&self) -> Option<&str> {
        None
    }
    /// The role the source acts through in its account, when configured.
    fn role_arn(&self) -> Option<&str> {
        None
    }
    /// Whether `issue` invalidates the old credential at once (so the saga
    /// never revokes the new one: [`Policy::old_dies_at_issue`]).
    fn old_dies_at_issue(&self) -> bool {
        false
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn CredentialSource>;
    /// For a credential no API dates (made by hand): how long it lives from
    /// when a rotation recorded it, which `keyturn report` counts its expiry
    /// and next rotation from. `None`: the report does not date it this way.
    fn recorded_lifetime(&self) -> Option<&'static RecordedLifetime> {
        None
    }
    /// The reference keyturn itself reads this credential from (its own
    /// client secret), when it is one: the target must write exactly there
    /// ([`TargetSpec::writes_secret`]), checked with the configuration.
    fn read_by_keyturn(&self) -> Option<&SecretRef> {
        None
    }
}

/// A validated `[rotation.target]` table.
pub trait TargetSpec: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &'static str;
    /// The credential types it can take (see [`SourceSpec::credential_type`]).
    fn accepts(&self) -> &'static [&'static str];
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn Target>;
    /// The Secrets Manager secret and JSON field the secret goes to, for a
    /// target that writes one.
    fn writes_secret(&self) -> Option<(&str, &str)> {
        None
    }
}

/// A registered source kind: how to parse and validate its table.
pub struct SourceEntry {
    pub kind: &'static str,
    /// What it produces (pairing; also the error message for a wrong pair).
    pub credential_type: &'static str,
    /// The kinds of subject of events it can cover (intake reads AWS Health
    /// notices of these codes; who reports an unmatched one).
    pub subjects: &'static [SubjectKind],
    /// How notices word an exposed credential of this kind, also when no
    /// rotation covers it ([`exposure_words_for`]).
    pub exposure: Option<&'static ExposureWords>,
    pub parse: fn(toml::Table) -> std::result::Result<Arc<dyn SourceSpec>, ConfigProblem>,
}

/// A registered target kind.
pub struct TargetEntry {
    pub kind: &'static str,
    pub accepts: &'static [&'static str],
    pub parse: fn(toml::Table) -> std::result::Result<Arc<dyn TargetSpec>, ConfigProblem>,
}

/// **The registry.** Adding a connector is a module in this directory and
/// one line here.
pub const SOURCES: &[SourceEntry] = &[iam::SOURCE, scim::SOURCE, auth0_secret::SOURCE, entra_secret::SOURCE, entra_saml::SOURCE];
/// **The registry** of targets.
pub const TARGETS: &[TargetEntry] =
    &[auth0::TARGET, auth0_smtp::TARGET, entra::TARGET, github::TARGET, secretsmanager::TARGET, identity_center_saml::TARGET];

/// Parse a `source` table through the registry.
pub fn parse_source(mut table: toml::Table) -> std::result::Result<Arc<dyn SourceSpec>, ConfigProblem> {
    let kind = take_kind(&mut table)?;
    let entry = SOURCES.iter().find(|e| e.kind == kind).ok_or_else(|| {
        ConfigProblem::at("kind", format!("unknown source kind {kind:?}; known: {}", SOURCES.iter().map(|e| e.kind).collect::<Vec<_>>().join(", ")))
    })?;
    (entry.parse)(table)
}

/// Parse a `[rotation.target]` table through the registry.
pub fn parse_target(mut table: toml::Table) -> std::result::Result<Arc<dyn TargetSpec>, ConfigProblem> {
    let kind = take_kind(&mut table)?;
    let entry = TARGETS.iter().find(|e| e.kind == kind).ok_or_else(|| {
        ConfigProblem::at("kind", format!("unknown target kind {kind:?}; known: {}", TARGETS.iter().map(|e| e.kind).collect::<Vec<_>>().join(", ")))
    })?;
    (entry.parse)(table)
}

/// Whether a target takes a source's credential; `Err` says which sources
/// the target takes, for the configuration error.
pub fn check_pair(source: &dyn SourceSpec, target: &dyn TargetSpec) -> std::result::Result<(), String> {
    if target.accepts().contains(&source.credential_type()) {
        return Ok(());
    }
    let takes: Vec<&str> = SOURCES.iter().filter(|s| target.accepts().contains(&s.credential_type)).map(|s| s.kind).collect();
    Err(format!("target kind {} takes source kind {}, not {}", target.kind(), takes.join(" or "), source.kind()))
}

/// The source kind that covers a kind of subject ([`Subject::kind`]), for
/// reports about a subject no rotation covers (e.g. the `credential_kind`
/// of `rotation.unmatched`).
pub fn source_kind_for(subject: &str) -> &'static str {
    SOURCES.iter().find(|e| e.subjects.iter().any(|k| k.kind == subject)).map(|e| e.kind).unwrap_or("none")
}

/// How notices word an exposed credential of a kind of subject no rotation
/// covers: the words of the source kind that covers it ([`source_kind_for`]).
pub fn exposure_words_for(subject: &str) -> Option<&'static ExposureWords> {
    SOURCES.iter().find(|e| e.subjects.iter().any(|k| k.kind == subject)).and_then(|e| e.exposure)
}

/// The registered kind of subject `kind` names, if a source covers it
/// (intake reads an AWS Health notice only then).
pub fn subject_kind(kind: &str) -> Option<&'static SubjectKind> {
    SOURCES.iter().flat_map(|e| e.subjects.iter()).find(|k| k.kind == kind)
}

/// Whether a source keyturn reads itself ([`SourceSpec::read_by_keyturn`])
/// is rotated into the place it reads it from; `Err` says where that is.
pub fn check_written_back(source: &dyn SourceSpec, target: &dyn TargetSpec) -> std::result::Result<(), String> {
    let Some(reads) = source.read_by_keyturn() else { return Ok(()) };
    let SecretRef::SecretsManager { secret_id, json_key } = reads else {
        return Err("keyturn reads this credential from an environment variable, which no target can write".into());
    };
    let Some(key) = json_key else {
        return Err(format!(
            "keyturn reads this credential as the whole secret {secret_id}; give client_secret a json_key and make the target write that field"
        ));
    };
    match target.writes_secret() {
        Some((id, field)) if id == secret_id && field == key => Ok(()),
        _ => Err(format!(
            "keyturn reads this credential from secret {secret_id:?}, field {key:?}: the target must be a Secrets Manager secret target with that secret_id and that field as its secret field, or keyturn would keep signing in with the old one"
        )),
    }
}

fn take_kind(table: &mut toml::Table) -> std::result::Result<String, ConfigProblem> {
    match table.remove("kind") {
        Some(toml::Value::String(k)) => Ok(k),
        Some(_) => Err(ConfigProblem::at("kind", "must be a string")),
        None => Err(ConfigProblem::at("kind", "missing")),
    }
}

/// Deserialize a connector's table into its own configuration type (which
/// should `deny_unknown_fields`), turning serde's message into a
/// [`ConfigProblem`] that names the key when serde does.
pub fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> std::result::Result<T, ConfigProblem> {
    T::deserialize(toml::Value::Table(table)).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let key = |m: &str, pat: &str| m.find(pat).and_then(|i| m[i + pat.len()..].split('`').next().map(str::to_string));
        if let Some(k) = key(&msg, "unknown field `") {
            let expected = msg.split_once("expected").map(|(_, x)| format!(" (expected{x})")).unwrap_or_default();
            return ConfigProblem::at(&k, format!("unknown key{expected}"));
        }
        if let Some(k) = key(&msg, "missing field `") {
            return ConfigProblem::at(&k, "missing");
        }
        // Our own messages start with the key ("client_secret: …").
        match msg.split_once(": ") {
            Some((k, rest)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => ConfigProblem::at(k, rest.to_string()),
            _ => ConfigProblem { key: None, message: msg },
        }
    })
}

/// Build the connectors of one configured rotation (its id, its parsed
/// source and target, and its policy): the parts, not the configuration
/// type, so `connectors` stays below `config`.
pub fn build(id: &str, source: &dyn SourceSpec, target: &dyn TargetSpec, mut policy: Policy, ctx: &BuildContext<'_>) -> Rotation {
    policy.old_dies_at_issue = source.old_dies_at_issue();
    Rotation { id: id.to_string(), credential: source.credential_key(), source: source.build(ctx), target: target.build(ctx), policy }
}

/// The HTTP client every HTTP connector shares (rustls, explicit timeouts).
/// It follows no redirect: a 3xx is handed back as it came, and
/// [`http::Api::send`] makes it a permanent error, so a secret in a body or
/// header never goes to a host the configuration did not name. Every
/// request goes through [`http::Api::send`], which also refuses plain http
/// except to a loopback address.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("keyturn/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.rs` files under `dir`, recursively.
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Where `needle` appears in code (not comments, not unit tests) of `files`.
    fn code_mentions(files: &[std::path::PathBuf], needle: &str) -> Vec<String> {
        let mut hits = Vec::new();
        for f in files {
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                if !line.trim_start().starts_with("//") && line.contains(&format!("\"{needle}")) {
                    hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        hits
    }

    /// Adding a connector touches only `connectors/`: no registered kind
    /// name is spelled anywhere else in the crate's code (the registry
    /// itself lives in `connectors/mod.rs`). `grep -rn '"<kind>' worker/src`
    /// outside `connectors/`, unit tests and comments must find nothing.
    #[test]
    fn kind_names_appear_only_in_the_registry() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        rust_files(&src, &mut all);
        let connectors = src.join("connectors");
        let (inside, outside): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| p.starts_with(&connectors));
        assert!(outside.len() > 10 && !inside.is_empty(), "the scan sees the crate");
        let kinds: Vec<&str> = SOURCES.iter().map(|e| e.kind).chain(TARGETS.iter().map(|e| e.kind)).collect();
        assert!(kinds.len() >= 4);
        for kind in kinds {
            // The scanner finds each kind where it is defined (so it can fail)...
            assert!(!code_mentions(&inside, kind).is_empty(), "{kind} is not defined in connectors/");
            // ...and nowhere else.
            let hits = code_mentions(&outside, kind);
            assert!(hits.is_empty(), "connector kind {kind} is spelled outside connectors/:\n{}", hits.join("\n"));
        }
    }

    /// The lines of code in `files` (not comments, not unit tests), each
    /// with its file (relative to `src/`) and line number.
    fn code_lines(src: &std::path::Path, files: &[std::path::PathBuf]) -> Vec<(String, usize, String)> {
        let mut out = Vec::new();
        for f in files {
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let rel = f.strip_prefix(src).unwrap().display().to_string();
            for (i, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                if !line.trim_start().starts_with("//") {
                    out.push((rel.clone(), i + 1, line.to_string()));
                }
            }
        }
        out
    }

    /// Whether `name` occurs in `line` as a whole identifier.
    fn names(line: &str, name: &str) -> bool {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        line.match_indices(name)
            .any(|(i, _)| !line[..i].chars().next_back().is_some_and(ident) && !line[i + name.len()..].chars().next().is_some_and(ident))
    }

    /// Where a line outside `connectors/` may name a connector (directory or
    /// file under `src/`, what, why). Everything else must not.
    const ALLOWED: &[(&str, &str, &str)] = &[
        // The ASFF resource type is intake's own term for a finding's user
        // (the `Subject::kind` it describes); the IAM source registers it.
        ("intake/", "\"AwsIamUser", "intake parses ASFF resources of this type"),
        // `keyturn report` is an inventory of IAM access keys (it pages IAM
        // itself, for the keys no rotation covers too): the fix of an unused
        // key is IAM's own command.
        ("report/", "aws iam ", "the fix column of keyturn report's key rows"),
        ("report/", "update-access-key", "the fix column of keyturn report's key rows"),
        // The request API's sender is an IAM principal, not a credential keyturn rotates.
        ("config.rs", "aws iam ", "finding a role's RoleId for [requests] allowed_senders"),
    ];

    /// Adding a kind of credential (or a target) is one module in
    /// `connectors/` and one registry line: outside `connectors/`, no code
    /// names a connector's module or one of its types (`connectors::scim::`,
    /// `ScimToken`, …), a subject kind a source registers, or a connector's
    /// wording (SCIM, Entra, Auth0, GitHub, IAM Identity Center, the IAM
    /// console, `aws iam` commands, the exposed-key words of the IAM source:
    /// AWS's quarantine policy, `update-access-key`, CloudTrail's
    /// `accessKeyId`), except the lines [`ALLOWED`] lists with
    /// their reason; and no job of the engine makes IAM calls of its own
    /// (they go through the sources and `accounts`). Complements
    /// `kind_names_appear_only_in_the_registry`, which checks kind-name
    /// strings only.
    #[test]
    fn connector_types_and_wording_appear_only_in_connectors() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        rust_files(&src, &mut all);
        let connectors = src.join("connectors");
        let (inside, outside): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| p.starts_with(&connectors));
        // Connector modules: every file here but the shared machinery.
        const SHARED: [&str; 5] = ["mod", "check", "http", "token", "retry"];
        let mut needles: Vec<String> = Vec::new();
        for f in &inside {
            let module = f.file_stem().unwrap().to_str().unwrap();
            if SHARED.contains(&module) {
                continue;
            }
            needles.push(format!("connectors::{module}::"));
            for line in std::fs::read_to_string(f).unwrap().lines() {
                for item in ["pub struct ", "pub enum ", "pub trait ", "pub type "] {
                    if let Some(rest) = line.strip_prefix(item) {
                        needles.push(rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap().to_string());
                    }
                }
            }
        }
        assert!(needles.iter().any(|n| n == "ScimToken") && needles.iter().any(|n| n == "connectors::iam::"), "the scan sees the connectors: {needles:?}");
        needles.extend(SOURCES.iter().flat_map(|e| e.subjects.iter()).map(|k| format!("\"{}", k.kind)));
        let types = needles.len();
        needles.extend(
            [
                "SCIM",
                "Entra",
                "Auth0",
                "GitHub",
                "Identity Center",
                "IAM console",
                "STS health",
                "aws iam ",
                "AWSCompromisedKeyQuarantine",
                "update-access-key",
                "accessKeyId",
            ]
            .map(String::from),
        );
        let lines = code_lines(&src, &outside);
        assert!(lines.len() > 5_000, "the scan sees the crate");
        let mut hits = Vec::new();
        for (file, n, line) in &lines {
            for (i, needle) in needles.iter().enumerate() {
                // A type by its whole name; paths, strings and wording anywhere in the line.
                let found =
                    if i < types && !needle.contains(':') && !needle.starts_with('"') { names(line, needle) } else { line.contains(needle.as_str()) };
                if found && !ALLOWED.iter().any(|(place, what, _)| file.starts_with(place) && what == needle) {
                    hits.push(format!("{file}:{n}: {needle}: {}", line.trim()));
                }
            }
        }
        // The engine's jobs call IAM only through the sources and `accounts`.
        const JOBS: [&str; 9] = ["shared", "finalize", "attention", "commands", "sweeper", "handover", "triggers", "requests", "engine"];
        for (file, n, line) in &lines {
            if JOBS.iter().any(|j| *file == format!("{j}.rs")) && line.contains("aws_sdk_iam") {
                hits.push(format!("{file}:{n}: an IAM client in an engine job: {}", line.trim()));
            }
        }
        assert!(hits.is_empty(), "connector types or wording outside connectors/:\n{}", hits.join("\n"));
    }

    #[test]
    fn registry_parses_validates_and_pairs() {
        let t = |s: &str| s.parse::<toml::Table>().unwrap();
        let src = parse_source(t(r#"kind = "iam_access_key"
user_name = "u""#))
        .unwrap();
        assert_eq!(src.credential_key(), "iam_access_key:u");
        let user = |account, name| Subject { kind: "AwsIamUser", account, home: "1", region: "", name };
        assert!(src.covers(&user("1", "u")));
        assert!(!src.covers(&user("1", "v")));
        assert!(!src.covers(&user("2", "u")), "no account_id: the home account only");
        let expiry = Subject { kind: scim::EXPIRY.kind, account: "1", home: "1", region: "us-east-1", name: "u" };
        assert!(!src.covers(&expiry), "another kind of subject, even with the same name");
        let e = parse_source(t(r#"kind = "nope""#)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("kind"));
        assert!(e.message.contains("iam_access_key, scim_token"), "{e:?}");
        assert_eq!(parse_source(t(r#"kind = "iam_access_key""#)).unwrap_err(), ConfigProblem::at("user_name", "missing"));
        let scim = parse_source(t(r#"kind = "scim_token"
region = "us-east-1""#))
        .unwrap();
        let auth0 = parse_target(t(r#"kind = "auth0_email_provider"
domain = "d.auth0.com"
client_id = "c"
client_secret = { env = "KEYTURN_X" }
ses_region = "eu-west-1""#))
        .unwrap();
        assert!(check_pair(src.as_ref(), auth0.as_ref()).is_ok());
        let e = check_pair(scim.as_ref(), auth0.as_ref()).unwrap_err();
        assert_eq!(e, "target kind auth0_email_provider takes source kind iam_access_key, not scim_token");
        assert_eq!(source_kind_for("AwsIamUser"), "iam_access_key");
        assert!(scim.covers(&expiry));
        assert!(!scim.covers(&Subject { region: "eu-west-1", ..expiry }));
        assert!(!scim.covers(&Subject { kind: "AwsIamUser", ..expiry }));
        assert_eq!(subject_kind(scim::EXPIRY.kind).map(|k| k.trigger), Some("health:scim_expiry"));
        assert_eq!(subject_kind("AWS_SOMETHING_ELSE"), None);
    }
}
