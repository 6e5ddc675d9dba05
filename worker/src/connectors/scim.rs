//! Credential source: an IAM Identity Center SCIM access token.
//!
//! AWS has no API that creates, lists or deletes these tokens (none in
//! `sso-admin` or `identitystore`); the console is the only way. A directory
//! holds at most two, and each lives one year. So this source automates
//! nothing itself: it tells the saga it is *by hand* ([`ByHand`]), and the
//! saga waits for a person instead of calling `issue` or `retire` — see the
//! "Credentials made by a person" section of [`crate::saga`]. The
//! automated methods exist only to satisfy the trait and refuse if called.

use std::sync::Arc;

use serde::Deserialize;

use super::check::HandedProblem;
use super::{
    BoxFut, BuildContext, ByHand, ConfigProblem, CredentialSource, NewCredential, RecordedLifetime, SourceEntry, SourceSpec, Subject, SubjectKind,
};
use crate::error::{Error, Result};
use crate::saga::{KeyRef, Millis};

/// `source = { kind = "scim_token", region = "…", account_id = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimTokenConfig {
    /// Region of the IAM Identity Center instance (console links, and
    /// matching AWS Health expiry events).
    pub region: String,
    /// Account of the instance; when set, only Health events from this
    /// account start the rotation.
    pub account_id: Option<String>,
}

/// The subject this source covers: AWS Health's notice that a SCIM token
/// is about to expire, in an account and region (AWS repeats it weekly from
/// 90 days before expiry, then more often).
pub const EXPIRY: SubjectKind = SubjectKind { kind: "AWS_IAMIDENTITYCENTER_SCIM_BEARER_TOKEN_EXPIRY_NOTIFICATION", trigger: "health:scim_expiry" };

/// The registry entry.
pub const SOURCE: SourceEntry = SourceEntry {
    kind: "scim_token",
    credential_type: "scim_token",
    subjects: &[EXPIRY],
    exposure: None,
    parse: |t| {
        let c: ScimTokenConfig = super::from_table(t)?;
        super::check::check_region(&c.region).map_err(|m| ConfigProblem::at("region", m))?;
        super::check::check_account(c.account_id.as_deref()).map_err(|m| ConfigProblem::at("account_id", m))?;
        Ok(Arc::new(c))
    },
};

const DAY: Millis = 86_400_000;

/// An IAM Identity Center SCIM token lives one year; AWS Health announces
/// its expiry from 90 days before (which starts the rotation, [`EXPIRY`]).
pub const LIFETIME: RecordedLifetime = RecordedLifetime {
    lifetime: 365 * DAY,
    rotation_before: 90 * DAY,
    due_reason: "AWS Health's expiry notice, 90 days before the token expires",
    unrecorded: "no SCIM token recorded yet: the first rotation records one",
};

impl SourceSpec for ScimTokenConfig {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn credential_type(&self) -> &'static str {
        SOURCE.credential_type
    }
    fn credential_key(&self) -> String {
        format!("{}:{}:{}", SOURCE.kind, self.account_id.as_deref().unwrap_or("any"), self.region)
    }
    fn covers(&self, subject: &Subject<'_>) -> bool {
        subject.kind == EXPIRY.kind && subject.region == self.region && self.account_id.as_deref().is_none_or(|a| a == subject.account)
    }
    fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }
    fn recorded_lifetime(&self) -> Option<&'static RecordedLifetime> {
        Some(&LIFETIME)
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Arc<dyn CredentialSource> {
        Arc::new(ScimToken::new(self.region.clone(), self.account_id.clone()))
    }
}

pub struct ScimToken {
    region: String,
    account_id: Option<String>,
}

impl ScimToken {
    pub fn new(region: String, account_id: Option<String>) -> Self {
        ScimToken { region, account_id }
    }

    fn console(&self) -> String {
        format!("https://{0}.console.aws.amazon.com/singlesignon/home?region={0}#/instances/settings", self.region)
    }
}

fn by_hand_only(what: &str) -> Error {
    Error::Refused {
        code: "ManualCredential",
        message: format!("SCIM access tokens have no API: a person must {what} in the IAM Identity Center console"),
    }
}

impl CredentialSource for ScimToken {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn describe(&self) -> String {
        match &self.account_id {
            Some(a) => format!("IAM Identity Center SCIM token ({}, account {a})", self.region),
            None => format!("IAM Identity Center SCIM token ({})", self.region),
        }
    }
    /// One word of printable text; no SCIM token is longer than 16 KiB (a
    /// longer value is the wrong file).
    fn check_handed<'a>(&self, raw: &'a str) -> std::result::Result<&'a str, HandedProblem> {
        super::check::one_word(raw, super::check::MAX_HANDED_BYTES, "SCIM token")
    }
    fn by_hand(&self) -> Option<ByHand> {
        let console = self.console();
        Some(ByHand {
            noun: "SCIM access token",
            create: vec![
                format!("Open the IAM Identity Center console and choose Settings: {console}"),
                "On the Identity source tab, choose Actions > Manage provisioning.".into(),
                "Under Access tokens, note the ID and creation date of the token in use today (the old token).".into(),
                "Choose Generate token. A directory holds at most 2 tokens: if 2 are listed already, stop and find out which one Entra uses before deleting anything.".into(),
                "Copy the new token from the Generate new access token dialog: it is shown only this once. Do not paste it into Entra yourself: keyturn runs Test connection and saves it only if the test passes.".into(),
            ],
            delete: vec![
                format!("Open the IAM Identity Center console and choose Settings: {console}"),
                "On the Identity source tab, choose Actions > Manage provisioning.".into(),
                "Under Access tokens, select the OLD token described here (its creation date is the hint AWS gives) and choose Delete; type DELETE to confirm.".into(),
            ],
        })
    }
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>> {
        // Nothing to list: the old token is the one the person names.
        Box::pin(async { Ok(Vec::new()) })
    }
    fn issue<'a>(&'a self, _keep: &'a [String], _earlier_intents: &'a [Millis]) -> BoxFut<'a, Result<NewCredential>> {
        Box::pin(async { Err(by_hand_only("generate the new token")) })
    }
    fn prove<'a>(&'a self, _cred: &'a NewCredential) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Err(by_hand_only("check the token")) })
    }
    fn disable<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Err(by_hand_only("delete the old token")) })
    }
    fn enable<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Err(by_hand_only("generate a token")) })
    }
    fn retire<'a>(&'a self, _id: &'a str, _switched_at: Millis) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Err(by_hand_only("delete the old token")) })
    }
    fn revoke<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Err(by_hand_only("delete the unused new token")) })
    }
}
