//! Member accounts: which AWS account a credential source lives in, and the
//! credentials to act there.
//!
//! The worker runs in one account (the *home* account, the hub of an AWS
//! Organization). A rotation's IAM user may live in another (a *member*
//! account): then every IAM call of that rotation, and nothing else, is made
//! with the credentials of a role assumed in that account — the
//! rotation's `source.role_arn`, or `[aws] member_role_name` expanded to
//! `arn:<partition>:iam::<account>:role/<name>` — presenting
//! `[aws] external_id`.
//!
//! Why it is shaped this way:
//! - **The home account is asked, not configured.** `sts:GetCallerIdentity`
//!   with the worker's own credentials answers it (once per process: the
//!   answer is shared across configuration reloads). A rotation without an
//!   `account_id` is about the home account only, so a finding for `mailer`
//!   in account B never matches (and never rotates) the home account's
//!   `mailer`.
//! - **The role session name carries the saga id** (`keyturn-<saga id>`), so
//!   CloudTrail in the member account shows which saga created or deleted
//!   which key. The engine runs a saga's source calls inside [`for_saga`]; calls
//!   made outside a saga (the intake's key-age check, the schedule scan)
//!   use `keyturn-intake`.
//! - **Credentials are cached per (role, session)** and renewed when a fifth
//!   of their lifetime (at most five minutes) is left, like the HTTP
//!   connectors' tokens: a saga's steps, run seconds apart, assume the role
//!   once. Expired entries are dropped whenever a new one is stored.
//! - **Urgent calls have an IAM rate of their own.** The IAM client's
//!   adaptive retry paces every call of its retry partition once IAM
//!   throttles one ([`crate::aws::iam_client`]). An emergency's calls
//!   (steps on the priority lane, run inside [`urgently`], and the exposure
//!   lookups of [`Accounts::keys`]) go through a client of a second
//!   partition ([`crate::aws::urgent_iam`]), so a backlog that IAM throttles
//!   does not pace them; should IAM refuse them too, they slow down on
//!   their own.
//! - **A role that cannot be assumed fails the call before any change**: the
//!   first call of a saga is `ListAccessKeys`, so the saga stops at `start`
//!   with nothing created, and its notification names the role, the account
//!   and AWS's own error (code, message, request id).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use tokio::sync::{Mutex, OnceCell};

use crate::error::{aws, Error, Result};

/// Requested lifetime of assumed-role credentials. The member template's
/// role allows at most one hour; a saga's steps need seconds each.
const SESSION: Duration = Duration::from_secs(3600);

tokio::task_local! {
    static SAGA: String;
    static URGENT: bool;
}

/// Run `f` urgently (`urgent`: a step on the priority lane): a source's
/// IAM calls inside it use the urgent IAM client, whose rate IAM's
/// throttling of ordinary calls does not lower.
pub async fn urgently<F: Future>(urgent: bool, f: F) -> F::Output {
    URGENT.scope(urgent, f).await
}

/// Whether the current task runs inside [`urgently`]`(true, …)`.
pub fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

/// Run `f` as part of saga `saga_id`: roles assumed inside it name the saga
/// in their session name.
pub async fn for_saga<F: Future>(saga_id: &str, f: F) -> F::Output {
    SAGA.scope(saga_id.to_string(), f).await
}

/// The role session name for the current task: `keyturn-<saga id>` inside
/// [`for_saga`], `keyturn-intake` outside. At most 64 characters of
/// `[\w+=,.@-]`, as STS requires.
pub fn session_name() -> String {
    let saga = SAGA.try_with(|s| s.clone()).ok();
    let raw = match saga {
        Some(s) => format!("keyturn-{s}"),
        None => "keyturn-intake".to_string(),
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) { c } else { '-' }).take(64).collect()
}

/// The account the worker runs in, as STS names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub account: String,
    /// `aws`, `aws-cn`, `aws-us-gov`: the partition of role ARNs built from
    /// `[aws] member_role_name`.
    pub partition: String,
}

/// Where one source's IAM calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The worker's own account, with its own credentials (`None`: not
    /// looked up, because nothing needed it).
    Home { account: Option<String> },
    /// A member account, through a role assumed there.
    Role { account: String, role_arn: String },
}

impl Access {
    /// The account, when known.
    pub fn account(&self) -> Option<&str> {
        match self {
            Access::Home { account } => account.as_deref(),
            Access::Role { account, .. } => Some(account),
        }
    }
}

/// The account of a role ARN (`arn:<partition>:iam::<account>:role/<path/name>`).
pub fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let name_ok = resource.strip_prefix("role/").is_some_and(|n| !n.is_empty() && !n.ends_with('/'));
    (partition.starts_with("aws") && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && name_ok).then_some(account)
}

/// Decide where a source's calls go. Pure: `home` is the worker's account.
/// `account_id` and `role_arn` are the source's settings, `default_role` is
/// `[aws] member_role_name`.
pub fn resolve(home: &Home, account_id: Option<&str>, role_arn: Option<&str>, default_role: Option<&str>) -> Result<Access> {
    if let Some(arn) = role_arn {
        let account = role_account(arn).ok_or_else(|| Error::Config(format!("source.role_arn {arn:?} is not an IAM role ARN")))?;
        return Ok(Access::Role { account: account.to_string(), role_arn: arn.to_string() });
    }
    match account_id {
        None => Ok(Access::Home { account: Some(home.account.clone()) }),
        Some(a) if a == home.account => Ok(Access::Home { account: Some(a.to_string()) }),
        Some(a) => match default_role {
            Some(name) => Ok(Access::Role { account: a.to_string(), role_arn: format!("arn:{}:iam::{a}:role/{name}", home.partition) }),
            None => Err(Error::Config(format!(
                "the source's account {a} is not the worker's account {}: set source.role_arn, or [aws] member_role_name for the role keyturn assumes in member accounts",
                home.account
            ))),
        },
    }
}

/// The worker's home account, looked up once per process and shared by
/// every [`Accounts`] built from a configuration.
#[derive(Default)]
pub struct HomeCell(OnceCell<Home>);

struct Cached {
    iam: aws_sdk_iam::Client,
    renew_at: crate::clock::Millis,
}

/// The access keys of one account by key id, for an exposure event, which
/// names a key and not its user: the engine's IAM calls, signed for that
/// account ([`Accounts::keys`]).
pub struct AccountKeys {
    iam: aws_sdk_iam::Client,
}

impl AccountKeys {
    /// The IAM user that owns `key`, if any (`GetAccessKeyLastUsed`).
    pub async fn owner(&self, key: &str) -> Result<Option<String>> {
        match self.iam.get_access_key_last_used().access_key_id(key).send().await {
            Ok(out) => Ok(out.user_name().map(str::to_string)),
            Err(e) => match aws("iam", "GetAccessKeyLastUsed", e) {
                Error::Aws { code, .. } if code == "NoSuchEntity" || code.contains("NotFound") => Ok(None),
                // The worker may read keys only of users under its IAM path
                // (infra/keyturn-stack.yaml): a key outside is no rotation's.
                Error::Aws { code, .. } if code == "AccessDenied" || code == "AccessDeniedException" => {
                    tracing::warn!(key = %key, "not allowed to look up the owner of this key: it belongs to no user keyturn may rotate");
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }

    /// Deactivate `key` of `user` (`UpdateAccessKey`, status `Inactive`).
    pub async fn deactivate(&self, user: &str, key: &str) -> Result<()> {
        self.iam
            .update_access_key()
            .user_name(user)
            .access_key_id(key)
            .status(aws_sdk_iam::types::StatusType::Inactive)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws("iam", "UpdateAccessKey", e))
    }
}

/// Assumes member-account roles and caches their credentials.
pub struct Accounts {
    base: SdkConfig,
    home: Arc<HomeCell>,
    default_role: Option<String>,
    external_id: Option<String>,
    /// Keyed by (role, session, urgent): an urgent client is made from the
    /// urgent home client, so it keeps that client's retry partition.
    cache: Mutex<HashMap<(String, String, bool), Cached>>,
    /// When assumed credentials are renewed.
    clock: crate::clock::SharedClock,
    /// IAM with the worker's own credentials, the urgent client
    /// (`aws::Clients::iam_urgent`), for [`Accounts::keys`]: only exposure
    /// events look keys up by id.
    home_iam: aws_sdk_iam::Client,
}

impl Accounts {
    pub fn new(
        base: SdkConfig,
        home: Arc<HomeCell>,
        default_role: Option<String>,
        external_id: Option<String>,
        clock: crate::clock::SharedClock,
        home_iam: aws_sdk_iam::Client,
    ) -> Accounts {
        Accounts { base, home, default_role, external_id, cache: Mutex::default(), clock, home_iam }
    }

    /// The access keys of `account` by key id, through `role_arn` (else
    /// `[aws] member_role_name`; the worker's own credentials at home).
    pub async fn keys(&self, account: &str, role_arn: Option<&str>) -> Result<AccountKeys> {
        let access = self.access(Some(account), role_arn).await?;
        Ok(AccountKeys { iam: urgently(true, self.iam(&self.home_iam, &access)).await? })
    }

    /// The worker's account (`sts:GetCallerIdentity`, once per process).
    pub async fn home(&self) -> Result<&Home> {
        self.home
            .0
            .get_or_try_init(|| async {
                let sts = aws_sdk_sts::Client::new(&self.base);
                let out = sts.get_caller_identity().send().await.map_err(|e| aws("sts", "GetCallerIdentity", e))?;
                let account = out.account().unwrap_or_default().to_string();
                let partition = out.arn().and_then(|a| a.split(':').nth(1)).unwrap_or("aws").to_string();
                if account.is_empty() {
                    return Err(Error::Corrupt("sts:GetCallerIdentity returned no account".into()));
                }
                Ok(Home { account, partition })
            })
            .await
    }

    /// Where a source with these settings acts. A source that names
    /// neither an account nor a role acts in the home account with the
    /// worker's own credentials, which needs no lookup: only deciding
    /// whether a named account is the home one asks STS.
    pub async fn access(&self, account_id: Option<&str>, role_arn: Option<&str>) -> Result<Access> {
        if account_id.is_none() && role_arn.is_none() {
            return Ok(Access::Home { account: self.home.0.get().map(|h| h.account.clone()) });
        }
        resolve(self.home().await?, account_id, role_arn, self.default_role.as_deref())
    }

    /// Whether an external id is presented on AssumeRole.
    pub fn external_id_set(&self) -> bool {
        self.external_id.is_some()
    }

    /// An IAM client acting in `access`'s account: `home` as is, or one
    /// signed with the role's credentials (assumed now, or cached).
    pub async fn iam(&self, home: &aws_sdk_iam::Client, access: &Access) -> Result<aws_sdk_iam::Client> {
        let Access::Role { account, role_arn } = access else { return Ok(home.clone()) };
        let session = session_name();
        let key = (role_arn.clone(), session.clone(), is_urgent());
        // Held across AssumeRole on purpose: steps of one saga arriving at
        // once assume the role once, not once each.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(&key).filter(|c| self.clock.now_ms() < c.renew_at) {
            return Ok(c.iam.clone());
        }
        let (creds, lifetime) = self.assume(role_arn, account, &session).await?;
        // The home client's configuration: its adaptive retry and its
        // retry partition (one IAM rate for the whole process).
        let iam = aws_sdk_iam::Client::from_conf(home.config().to_builder().credentials_provider(creds).build());
        let now = self.clock.now_ms();
        cache.retain(|_, c| now < c.renew_at);
        cache.insert(key, Cached { iam: iam.clone(), renew_at: now.saturating_add(crate::clock::renew_after(lifetime).as_millis() as u64) });
        Ok(iam)
    }

    /// `sts:AssumeRole`. A refusal keeps AWS's code, message and request id
    /// and names the role and the account.
    async fn assume(&self, role_arn: &str, account: &str, session: &str) -> Result<(Credentials, Duration)> {
        let sts = aws_sdk_sts::Client::new(&self.base);
        let mut req = sts.assume_role().role_arn(role_arn).role_session_name(session).duration_seconds(SESSION.as_secs() as i32);
        if let Some(x) = &self.external_id {
            req = req.external_id(x);
        }
        let out = req.send().await.map_err(|e| match aws("sts", "AssumeRole", e) {
            Error::Aws { service, operation, code, message, request_id, retryable } => Error::Aws {
                service,
                operation,
                message: format!("cannot assume role {role_arn} in account {account}: {message}"),
                code,
                request_id,
                retryable,
            },
            other => other,
        })?;
        let c = out.credentials().ok_or_else(|| Error::Corrupt("sts:AssumeRole returned no credentials".into()))?;
        let expires = c.expiration().to_millis().ok().map(|ms| ms.max(0) as u64);
        let now = self.clock.now_ms();
        let lifetime = expires.map(|e| Duration::from_millis(e.saturating_sub(now))).filter(|d| !d.is_zero()).unwrap_or(SESSION).min(SESSION);
        tracing::info!(role = %role_arn, account = %account, session = %session, "assumed member-account role");
        let creds = Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().to_string()), None, "keyturn-member-role");
        Ok((creds, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> Home {
        Home { account: "111111111111".into(), partition: "aws".into() }
    }

    #[tokio::test]
    async fn calls_are_urgent_only_inside_urgently_true() {
        assert!(!is_urgent());
        assert!(urgently(true, async { is_urgent() }).await);
        assert!(!urgently(false, async { is_urgent() }).await);
        assert!(urgently(true, for_saga("s", async { is_urgent() })).await, "a saga's scope inside keeps it");
    }

    #[test]
    fn the_urgent_iam_client_has_a_rate_of_its_own() {
        let conf = aws_sdk_iam::config::Builder::default().behavior_version(aws_config::BehaviorVersion::latest());
        let iam = crate::aws::iam_client(conf);
        let urgent = crate::aws::urgent_iam(&iam);
        assert_eq!(iam.config().retry_partition().map(|p| p.to_string()), Some(crate::aws::IAM_PARTITION.to_string()));
        assert_eq!(urgent.config().retry_partition().map(|p| p.to_string()), Some(crate::aws::URGENT_IAM_PARTITION.to_string()));
        assert_eq!(urgent.config().retry_config().map(|r| r.mode()), iam.config().retry_config().map(|r| r.mode()), "adaptive too");
    }

    #[test]
    fn a_source_without_an_account_acts_in_the_home_account() {
        assert_eq!(resolve(&home(), None, None, Some("keyturn-member")).unwrap(), Access::Home { account: Some("111111111111".into()) });
        assert_eq!(resolve(&home(), Some("111111111111"), None, Some("keyturn-member")).unwrap(), Access::Home { account: Some("111111111111".into()) });
    }

    #[test]
    fn a_member_account_uses_the_default_role_in_the_home_partition() {
        let h = Home { account: "111111111111".into(), partition: "aws-us-gov".into() };
        assert_eq!(
            resolve(&h, Some("222222222222"), None, Some("keyturn-member")).unwrap(),
            Access::Role { account: "222222222222".into(), role_arn: "arn:aws-us-gov:iam::222222222222:role/keyturn-member".into() }
        );
    }

    #[test]
    fn a_role_arn_wins_and_names_the_account() {
        let arn = "arn:aws:iam::333333333333:role/ops/keyturn";
        assert_eq!(resolve(&home(), None, Some(arn), None).unwrap(), Access::Role { account: "333333333333".into(), role_arn: arn.into() });
    }

    #[test]
    fn a_member_account_without_any_role_is_a_configuration_error() {
        let e = resolve(&home(), Some("222222222222"), None, None).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("222222222222") && e.to_string().contains("member_role_name"), "{e}");
    }

    #[test]
    fn role_arns_are_parsed_strictly() {
        assert_eq!(role_account("arn:aws:iam::222222222222:role/x"), Some("222222222222"));
        assert_eq!(role_account("arn:aws-cn:iam::222222222222:role/a/b"), Some("222222222222"));
        for bad in
            ["arn:aws:iam::22222222222:role/x", "arn:aws:iam::222222222222:user/x", "arn:aws:iam::222222222222:role/", "arn:aws:s3:::b", "role/x", ""]
        {
            assert_eq!(role_account(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_session_name_carries_the_saga_id() {
        assert_eq!(session_name(), "keyturn-intake");
        let id = "0b9d3c1e-5f7a-4d2b-9c8e-1a2b3c4d5e6f";
        let inside = for_saga(id, async { session_name() }).await;
        assert_eq!(inside, format!("keyturn-{id}"));
        assert!(inside.len() <= 64);
        let long = for_saga(&"x/y ".repeat(40), async { session_name() }).await;
        assert_eq!(long.len(), 64);
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
    }
}
