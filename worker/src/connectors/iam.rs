//! Credential source: an IAM user's access key.
//!
//! IAM facts this leans on (AWS IAM and STS API references): at
//! most two keys per user; `CreateAccessKey` is not idempotent and returns
//! the secret exactly once; a new key authenticates only after an unbounded
//! propagation delay, which `sts:GetCallerIdentity` signed with the key is the
//! usual probe for. The probe compares the returned ARN with the user: an
//! unknown key must never count as proven (moto answers one with a generic
//! principal instead of an error).

use aws_credential_types::Credentials;
use aws_sdk_iam::types::StatusType;
use secrecy::{ExposeSecret, SecretString};

use std::sync::Arc;

use serde::Deserialize;

use super::{BoxFut, BuildContext, ConfigProblem, CredentialSource, ExposureWords, NewCredential, SourceEntry, SourceSpec, Subject, SubjectKind};
use crate::accounts::{Access, Accounts};
use crate::error::{aws, Error, Result};
use crate::preflight::{AwsAction, Check, Findings};
use crate::saga::{self, KeyRef, Millis};

/// STS answers while a new key has not propagated (or is not valid).
const NOT_YET_CODES: [&str; 4] = ["InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure", "UnrecognizedClientException"];

/// `source = { kind = "iam_access_key", user_name = "…", account_id = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamAccessKeyConfig {
    pub user_name: String,
    /// Expected account id; when set, the new key must authenticate as this
    /// account's user, and only findings from this account match.
    pub account_id: Option<String>,
    /// Role to assume for every IAM call of this rotation (a member account's
    /// role, e.g. one `infra/member-role.yaml` created). Unset: the worker's
    /// own account, or `[aws] member_role_name` in `account_id`'s account.
    pub role_arn: Option<String>,
}

/// The subject this source covers: an IAM user, as Security Hub findings
/// name the resource (`Subject::name` is the user name).
pub const USER: SubjectKind = SubjectKind { kind: "AwsIamUser", trigger: "" };

/// How notices word an exposed access key (AWS Health's
/// `AWS_RISK_CREDENTIALS_EXPOSED`): AWS's quarantine policy, CloudTrail,
/// `aws iam` commands.
pub const EXPOSURE_WORDS: ExposureWords = ExposureWords {
    provider_action: "AWS attaches its managed quarantine policy (AWSCompromisedKeyQuarantineV2 or V3) to the IAM user when it reports one of its keys exposed. The policy denies a set of sensitive actions to every key of that user, the new key included; keyturn does not detach it.",
    still_active: "The exposed key {key} still works for whoever found it. keyturn could not replace it ({status}: see above). Deactivate it now if the risk outweighs the outage: `aws iam update-access-key --user-name <user> --access-key-id {key} --status Inactive` (its consumer stops working), or fix the cause and run `keyturn rotate {rotation}`.",
    find_use: "Find what the key was used for: CloudTrail events with userIdentity.accessKeyId = {key} (all regions), from well before the event until {until}.",
    lift_restriction: "When the investigation is done, detach the AWS quarantine policy from {credential}: it restricts the new key too. Before that, check the consumer's calls are not denied by it.",
    kept_inactive: "The exposed key is kept inactive for forensics (policy exposed_key = keep_inactive). Delete it when the investigation is done: until then the user has two keys and `keyturn rotate {rotation}` is refused.",
    deactivate_by_hand: "`aws iam update-access-key --access-key-id {key} --status Inactive`",
    settled_find_use: "Find what the key was used for while it was public: CloudTrail events with userIdentity.accessKeyId = {key}, all regions.",
    settled_lift: "Detach AWS's quarantine policy from the user once the investigation is done: it restricts the user's current key too.",
    owner: "IAM user {user}",
    owner_unknown: "an IAM user keyturn could not find in its account",
    uncovered_deactivated: "Give the consumer of {key} a new key, then delete {key}. Investigate its use in CloudTrail, remove the public copy, and detach AWS's quarantine policy from the user when done.",
    uncovered_failed: "Deactivate {key} by hand now, give its consumer a new key, investigate its use in CloudTrail and remove the public copy.",
    uncovered_active: "Rotate {key} by hand now (or deactivate it, which breaks its consumer), investigate its use in CloudTrail, remove the public copy; add a [[rotation]] for this user so keyturn can replace it next time.",
    uncovered_many: "rotate (or deactivate) each active key by hand now, investigate its use in CloudTrail and remove the public copy. A key no user in this account owns may be made up: check the event.",
};

/// The registry entry.
pub const SOURCE: SourceEntry = SourceEntry {
    kind: "iam_access_key",
    credential_type: "aws_access_key",
    subjects: &[USER],
    exposure: Some(&EXPOSURE_WORDS),
    parse: |t| {
        let c: IamAccessKeyConfig = super::from_table(t)?;
        if !super::check::valid_iam_name(&c.user_name) {
            return Err(ConfigProblem::at("user_name", "must be an IAM user name (1-64 letters, digits and +=,.@_-)"));
        }
        super::check::check_account(c.account_id.as_deref()).map_err(|m| ConfigProblem::at("account_id", m))?;
        let mut c = c;
        if let Some(arn) = &c.role_arn {
            let Some(account) = crate::accounts::role_account(arn) else {
                return Err(ConfigProblem::at("role_arn", "must be an IAM role ARN, e.g. arn:aws:iam::222222222222:role/keyturn-member"));
            };
            match &c.account_id {
                Some(a) if a != account => {
                    return Err(ConfigProblem::at(
                        "role_arn",
                        format!("is in account {account}, but account_id is {a}: the role must be in the user's account"),
                    ));
                }
                Some(_) => {}
                None => c.account_id = Some(account.to_string()),
            }
        }
        Ok(Arc::new(c))
    },
};

impl SourceSpec for IamAccessKeyConfig {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn credential_type(&self) -> &'static str {
        SOURCE.credential_type
    }
    /// `iam_access_key:<user>` in the worker's own account,
    /// `iam_access_key:<account>:<user>` with an `account_id`: users of the
    /// same name in two accounts are two credentials (two locks).
    fn credential_key(&self) -> String {
        match &self.account_id {
            Some(a) => format!("{}:{a}:{}", SOURCE.kind, self.user_name),
            None => format!("{}:{}", SOURCE.kind, self.user_name),
        }
    }
    fn covers(&self, subject: &Subject<'_>) -> bool {
        subject.kind == USER.kind && subject.name == self.user_name && self.account_id.as_deref().unwrap_or(subject.home) == subject.account
    }
    fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }
    fn role_arn(&self) -> Option<&str> {
        self.role_arn.as_deref()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn CredentialSource> {
        Arc::new(IamAccessKey {
            iam: ctx.clients.iam.clone(),
            urgent_iam: ctx.clients.iam_urgent.clone(),
            base: ctx.clients.base.clone(),
            accounts: ctx.accounts.clone(),
            clock: ctx.clock.clone(),
            user: self.user_name.clone(),
            account_id: self.account_id.clone(),
            role_arn: self.role_arn.clone(),
        })
    }
}

/// An IAM user's access keys, in the worker's account or, through an
/// assumed role, in a member account ([`crate::accounts`]).
pub struct IamAccessKey {
    /// The worker's own IAM client (home account).
    iam: aws_sdk_iam::Client,
    /// The same for urgent calls (an emergency's steps): a rate of its own.
    urgent_iam: aws_sdk_iam::Client,
    base: aws_config::SdkConfig,
    accounts: Arc<Accounts>,
    user: String,
    account_id: Option<String>,
    role_arn: Option<String>,
    /// Key ages are read against this clock.
    clock: crate::clock::SharedClock,
}

impl IamAccessKey {
    /// Where this user's keys are: the account, and the role if any.
    async fn access(&self) -> Result<Access> {
        self.accounts.access(self.account_id.as_deref(), self.role_arn.as_deref()).await
    }

    /// The IAM client acting in the user's account (the urgent one inside
    /// [`crate::accounts::urgently`]).
    async fn client(&self) -> Result<aws_sdk_iam::Client> {
        let access = self.access().await?;
        let home = if crate::accounts::is_urgent() { &self.urgent_iam } else { &self.iam };
        self.accounts.iam(home, &access).await
    }

    async fn list(&self) -> Result<Vec<KeyRef>> {
        let out = self.client().await?.list_access_keys().user_name(&self.user).send().await.map_err(|e| aws("iam", "ListAccessKeys", e))?;
        Ok(out
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                Some(KeyRef {
                    id: k.access_key_id()?.to_string(),
                    active: k.status() == Some(&StatusType::Active),
                    created_at: k.create_date().and_then(|d| d.to_millis().ok()).map(|m| m.max(0) as u64),
                })
            })
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        match self.client().await?.delete_access_key().user_name(&self.user).access_key_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) => match aws("iam", "DeleteAccessKey", e) {
                Error::Aws { code, .. } if code == "NoSuchEntity" => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn set_status(&self, id: &str, status: StatusType) -> Result<()> {
        self.client()
            .await?
            .update_access_key()
            .user_name(&self.user)
            .access_key_id(id)
            .status(status)
            .send()
            .await
            .map_err(|e| aws("iam", "UpdateAccessKey", e))?;
        Ok(())
    }

    /// Refuse (never delete) keys keyturn neither made nor replaces.
    fn refuse_strangers(&self, strangers: &[KeyRef], keep: &[String]) -> Result<()> {
        if strangers.is_empty() {
            return Ok(());
        }
        Err(Error::Refused { code: saga::UNKNOWN_KEY, message: saga::unknown_key_message(&self.describe(), strangers, keep) })
    }

    async fn issue_impl(&self, keep: &[String], earlier_intents: &[Millis]) -> Result<NewCredential> {
        // Only an earlier attempt can have left an orphan: no intent was on
        // record before this one, so a first attempt skips ListAccessKeys.
        if !earlier_intents.is_empty() {
            let triage = saga::triage_keys(&self.list().await?, keep, earlier_intents);
            self.refuse_strangers(&triage.strangers, keep)?;
            for orphan in &triage.orphans {
                tracing::warn!(user = %self.user, key_id = %orphan, "deleting orphan key left by an interrupted attempt");
                self.delete(orphan).await?;
            }
        }
        let out = match self.client().await?.create_access_key().user_name(&self.user).send().await {
            Ok(o) => o,
            Err(e) => {
                return Err(match aws("iam", "CreateAccessKey", e) {
                    // The two-key limit: this attempt created nothing, and
                    // any orphan was deleted above, so a key besides `keep`
                    // appeared since (a person's, or another tool's). Name it
                    // and stop; if it is gone already, try again.
                    Error::Aws { code, message, request_id, .. } if code == "LimitExceeded" && keep.len() < 2 => {
                        let now: Vec<KeyRef> = self.list().await?.into_iter().filter(|k| !keep.contains(&k.id)).collect();
                        self.refuse_strangers(&now, keep)?;
                        Error::Aws { service: "iam", operation: "CreateAccessKey", code, message, request_id, retryable: true }
                    }
                    other => other,
                });
            }
        };
        let key = out.access_key().ok_or_else(|| Error::Corrupt("CreateAccessKey returned no key".into()))?;
        Ok(NewCredential { id: key.access_key_id().to_string(), secret: SecretString::from(key.secret_access_key().to_string()) })
    }

    async fn prove_impl(&self, cred: &NewCredential) -> Result<()> {
        let creds = Credentials::new(cred.id.clone(), cred.secret.expose_secret().to_string(), None, None, "keyturn-new-key");
        let conf = aws_sdk_sts::config::Builder::from(&self.base).credentials_provider(creds).build();
        let sts = aws_sdk_sts::Client::from_conf(conf);
        let out = match sts.get_caller_identity().send().await {
            Ok(o) => o,
            Err(e) => {
                return Err(match aws("sts", "GetCallerIdentity", e) {
                    // Not propagated yet (or not this key's secret). Matched on
                    // the message too: an error envelope the SDK cannot parse
                    // still names the code in its body.
                    Error::Aws { code, message, .. } if NOT_YET_CODES.iter().any(|c| code == *c || message.contains(c)) => Error::NotYet {
                        code: "KeyNotPropagated",
                        message: format!("new key {} does not authenticate yet ({code}: {})", cred.id, message.chars().take(200).collect::<String>()),
                    },
                    other => other,
                });
            }
        };
        // The key must authenticate as this user *in the user's account*:
        // a same-named user elsewhere is not proof. (A source that names no
        // account created the key with the worker's own credentials, so
        // the key can only be of the worker's account.)
        let account = self.access().await?.account().map(str::to_string);
        let arn = out.arn().unwrap_or_default();
        let is_user = arn.contains(":user/") && arn.rsplit('/').next() == Some(self.user.as_str());
        if is_user && account.as_deref().is_none_or(|a| out.account() == Some(a)) {
            Ok(())
        } else {
            Err(Error::NotYet {
                code: "KeyNotPropagated",
                message: format!(
                    "new key {} authenticated as {arn:?}, not as iam user {}{}",
                    cred.id,
                    self.user,
                    account.map(|a| format!(" in account {a}")).unwrap_or_default()
                ),
            })
        }
    }

    /// `GetAccessKeyLastUsed`: (time, service) of the key's most recent
    /// use; `None` if never used (no `LastUsedDate`) or the key is gone.
    async fn last_used_impl(&self, id: &str) -> Result<Option<(Millis, String)>> {
        let out = match self.client().await?.get_access_key_last_used().access_key_id(id).send().await {
            Ok(o) => o,
            Err(e) => match aws("iam", "GetAccessKeyLastUsed", e) {
                Error::Aws { code, .. } if code == "NoSuchEntity" => return Ok(None),
                other => return Err(other),
            },
        };
        let Some(u) = out.access_key_last_used() else { return Ok(None) };
        Ok(u.last_used_date().and_then(|d| d.to_millis().ok()).map(|ms| (ms.max(0) as u64, u.service_name().to_string())))
    }

    async fn retire_impl(&self, id: &str, switched_at: Millis) -> Result<()> {
        if let Some((last, service)) = self.last_used_impl(id).await? {
            if last > switched_at {
                return Err(Error::Refused {
                    code: "OldKeyUsedAfterSwitch",
                    message: format!(
                        "key {id} was used after the target switched away from it (last used {} by {service}); not deleting it",
                        crate::clock::fmt_ms(last)
                    ),
                });
            }
        }
        self.delete(id).await
    }
}

/// Which of two keys keyturn would need gone: an inactive one first, then
/// the one used least recently (never used counts as oldest), then the
/// older. `keys` are (id, active, created, last used).
pub fn key_to_remove(keys: &[(String, bool, Option<Millis>, Option<Millis>)]) -> Option<&str> {
    keys.iter().min_by_key(|(_, active, created, used)| (*active, used.unwrap_or(0), created.unwrap_or(0))).map(|k| k.0.as_str())
}

impl IamAccessKey {
    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        let u = &self.user;
        let access = match self.access().await {
            Ok(a) => a,
            Err(e) => {
                f.checks.push(Check::fail("account", e.to_string(), "set source.role_arn, or [aws] member_role_name, for the user's account"));
                return f;
            }
        };
        let client = match &access {
            Access::Home { .. } => self.iam.clone(),
            Access::Role { account, role_arn } => {
                f.actions.push(AwsAction::new("sts:AssumeRole", role_arn.clone()));
                match self.accounts.iam(&self.iam, &access).await {
                    Ok(c) => {
                        f.checks.push(Check::ok("member role", format!("assumed {role_arn} in account {account}")));
                        c
                    }
                    Err(e) => {
                        f.checks.push(Check::fail(
                            "member role",
                            e.to_string(),
                            format!(
                                "create the role in account {account} (infra/member-role.yaml), trusting keyturn's role{}; and allow keyturn's role sts:AssumeRole on {role_arn} (infra/keyturn-stack.yaml grants it for [aws] member_role_name)",
                                if self.accounts.external_id_set() { " with the configured external_id" } else { "" }
                            ),
                        ));
                        return f;
                    }
                }
            }
        };
        let place = access.account().map(|a| format!(" in account {a}")).unwrap_or_default();
        let keys = match client.list_access_keys().user_name(u).send().await {
            Ok(o) => o.access_key_metadata().to_vec(),
            Err(e) => {
                let e = aws("iam", "ListAccessKeys", e);
                let fix = if e.code() == "NoSuchEntity" {
                    format!("create the user{place} (aws iam create-user --user-name {u}), or correct source.user_name")
                } else {
                    format!("allow keyturn's identity iam:ListAccessKeys on user {u}{place}")
                };
                let what = if e.code() == "NoSuchEntity" { format!("no IAM user {u}{place}") } else { e.to_string() };
                f.checks.push(Check::fail("iam user", what, fix));
                return f;
            }
        };
        // The user's ARN (with its path) names the resource for policy
        // simulation; without iam:GetUser it stays unknown.
        match client.get_user().user_name(u).send().await.ok().and_then(|o| o.user().map(|x| x.arn().to_string())) {
            Some(arn) => {
                f.checks.push(Check::ok("iam user", format!("{arn} exists")));
                if matches!(access, Access::Home { .. }) {
                    for a in ["iam:ListAccessKeys", "iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:DeleteAccessKey", "iam:GetAccessKeyLastUsed"] {
                        f.actions.push(AwsAction::new(a, arn.clone()));
                    }
                }
            }
            None => f.checks.push(Check::ok("iam user", format!("{u}{place} exists (its keys can be listed)"))),
        }
        let (seen, lines) = self.describe_keys(&client, &keys).await;
        f.checks.push(match seen.len() {
            0 => Check::ok("access keys", "none: a rotation would create the first key"),
            1 => Check::ok("access keys", format!("1 key: {}; a rotation can start", lines.join("; "))),
            n => {
                let gone = key_to_remove(&seen).unwrap_or_default();
                let why = match seen.iter().find(|k| k.0 == gone) {
                    Some((_, false, ..)) => "it is inactive",
                    Some((_, _, _, None)) => "it was never used",
                    _ => "it was used least recently",
                };
                Check::fail(
                    "access keys",
                    format!("{n} keys: {}; IAM allows at most two and a rotation needs room for a new one, so it would be refused at start", lines.join("; ")),
                    format!(
                        "keyturn needs one key gone: {gone} ({why}). Once nothing uses it: aws iam delete-access-key --user-name {u} --access-key-id {gone}{} (console: IAM → Users → {u} → Security credentials → Access keys → Actions → Delete)",
                        match &access {
                            Access::Role { account, .. } => format!(" with credentials of account {account}"),
                            Access::Home { .. } => String::new(),
                        }
                    ),
                )
            }
        });
        f
    }

    /// Each key's id, whether active, created and last used (for choosing
    /// the one to remove), and a line describing it for `keyturn doctor`.
    #[allow(clippy::type_complexity)]
    async fn describe_keys(
        &self,
        client: &aws_sdk_iam::Client,
        keys: &[aws_sdk_iam::types::AccessKeyMetadata],
    ) -> (Vec<(String, bool, Option<u64>, Option<u64>)>, Vec<String>) {
        let now = self.clock.now_ms();
        let mut seen = Vec::new();
        let mut lines = Vec::new();
        for k in keys {
            let id = k.access_key_id().unwrap_or_default().to_string();
            let active = k.status() == Some(&StatusType::Active);
            let created = k.create_date().and_then(|d| d.to_millis().ok()).map(|m| m.max(0) as u64);
            let used = match client.get_access_key_last_used().access_key_id(&id).send().await {
                Ok(o) => o
                    .access_key_last_used()
                    .and_then(|l| l.last_used_date().and_then(|d| d.to_millis().ok()).map(|ms| (ms.max(0) as u64, l.service_name().to_string()))),
                Err(_) => None,
            };
            let age = created.map(|c| format!("{} days old", now.saturating_sub(c) / 86_400_000)).unwrap_or_else(|| "age unknown".into());
            let last = used.as_ref().map(|(t, svc)| format!("last used {} by {svc}", crate::clock::fmt_ms(*t))).unwrap_or_else(|| "never used".into());
            lines.push(format!("{id} ({}, {age}, {last})", if active { "active" } else { "inactive" }));
            seen.push((id, active, created, used.map(|(t, _)| t)));
        }
        (seen, lines)
    }
}

/// What a person should do about an access key rotation that failed with
/// `code`, in IAM's terms ([`CredentialSource::advice`]).
pub fn advice(code: &str, rotate: &str) -> Option<String> {
    match code {
        "TooManyKeys" => Some(format!("Delete the access key that is not in use (check its last use in the IAM console), then run `{rotate}`.")),
        "KeyNotPropagated" => Some(format!("The new key never authenticated and was deleted. Check IAM and STS health, then run `{rotate}`.")),
        _ => None,
    }
}

impl CredentialSource for IamAccessKey {
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn describe(&self) -> String {
        match &self.account_id {
            Some(a) => format!("iam user {} in account {a}", self.user),
            None => format!("iam user {}", self.user),
        }
    }
    fn location(&self) -> BoxFut<'_, Result<Option<String>>> {
        Box::pin(async move {
            Ok(Some(match self.access().await? {
                Access::Home { account: Some(account) } => format!("account {account} (the worker's own), with the worker's credentials"),
                Access::Home { account: None } => "the worker's own account, with the worker's credentials".to_string(),
                Access::Role { account, role_arn } => format!(
                    "account {account}, through role {role_arn} ({}; session keyturn-<saga id>)",
                    if self.accounts.external_id_set() { "with the external id" } else { "no external id configured" }
                ),
            }))
        })
    }
    fn advice(&self, code: &str, rotate: &str) -> Option<String> {
        advice(code, rotate)
    }
    fn exposure_words(&self) -> Option<&'static ExposureWords> {
        SOURCE.exposure
    }
    /// IAM allows two access keys per user: a rotation needs one free slot.
    fn max_credentials(&self) -> usize {
        2
    }
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>> {
        Box::pin(self.list())
    }
    fn issue<'a>(&'a self, keep: &'a [String], earlier_intents: &'a [Millis]) -> BoxFut<'a, Result<NewCredential>> {
        Box::pin(self.issue_impl(keep, earlier_intents))
    }
    fn prove<'a>(&'a self, cred: &'a NewCredential) -> BoxFut<'a, Result<()>> {
        Box::pin(self.prove_impl(cred))
    }
    fn disable<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            match self.set_status(id, StatusType::Inactive).await {
                // A key that is gone cannot be used either.
                Err(Error::Aws { code, .. }) if code == "NoSuchEntity" => Ok(()),
                other => other,
            }
        })
    }
    fn enable<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(self.set_status(id, StatusType::Active))
    }
    fn retire<'a>(&'a self, id: &'a str, switched_at: Millis) -> BoxFut<'a, Result<()>> {
        Box::pin(self.retire_impl(id, switched_at))
    }
    fn revoke<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(self.delete(id))
    }
    fn last_used<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<Option<(Millis, String)>>> {
        Box::pin(self.last_used_impl(id))
    }
}

#[cfg(test)]
mod tests {
    use super::key_to_remove;

    #[test]
    fn the_key_to_remove_is_inactive_first_then_least_recently_used() {
        let k = |id: &str, active: bool, created: u64, used: Option<u64>| (id.to_string(), active, Some(created), used);
        assert_eq!(key_to_remove(&[k("a", true, 1, Some(50)), k("b", false, 2, Some(90))]), Some("b"), "inactive wins");
        assert_eq!(key_to_remove(&[k("a", true, 1, Some(50)), k("b", true, 2, None)]), Some("b"), "never used before used");
        assert_eq!(key_to_remove(&[k("a", true, 1, Some(50)), k("b", true, 2, Some(40))]), Some("b"), "used longer ago");
        assert_eq!(key_to_remove(&[k("a", true, 1, None), k("b", true, 2, None)]), Some("a"), "then the older");
        assert_eq!(key_to_remove(&[]), None);
    }
}
