//! Connectors: where credentials come from and where they go.
//!
//! A rotation pairs one [`CredentialSource`] (an IAM user's access key, an
//! IAM Identity Center SCIM token) with one [`Target`] (Auth0's email
//! provider, Entra provisioning). The engine only speaks these two traits; adding a third
//! source or target means a new module here and a new arm in [`build`], and
//! no change to the engine or the saga machine.
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
use crate::config::{RotationConfig, SourceConfig, TargetConfig};
use crate::error::Result;
use crate::saga::{KeyRef, Millis, Verification};
use crate::secrets::SecretResolver;

pub mod auth0;
pub mod entra;
pub mod iam;
mod retry;
pub mod scim;

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

/// Where credentials come from.
pub trait CredentialSource: Send + Sync {
    /// `Some` when only a person can create and delete this credential:
    /// the saga then waits for them (`keyturn provide`, `keyturn confirm`)
    /// and never calls `issue`, `prove`, `disable`, `enable`, `retire` or
    /// `revoke`.
    fn by_hand(&self) -> Option<ByHand> {
        None
    }
    /// Machine name, e.g. `iam_access_key` (notification attribute).
    fn kind(&self) -> &'static str;
    /// Human name, e.g. `iam user auth0-ses-sender`.
    fn describe(&self) -> String;
    /// Every credential currently in place, active or not.
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>>;
    /// Create a new credential. Any credential not in `keep` is an orphan of
    /// an earlier attempt whose secret was never stored: delete it first.
    fn issue<'a>(&'a self, keep: &'a [String]) -> BoxFut<'a, Result<NewCredential>>;
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
}

/// Where credentials go.
pub trait Target: Send + Sync {
    /// Machine name, e.g. `auth0_email_provider`.
    fn kind(&self) -> &'static str;
    /// Human name, e.g. `Auth0 example.eu.auth0.com`.
    fn describe(&self) -> String;
    /// Hand the new credential over.
    fn push<'a>(&'a self, cred: &'a NewCredential) -> BoxFut<'a, Result<()>>;
    /// Read the target back.
    fn verify<'a>(&'a self, new_id: &'a str, old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>>;
    /// The AWS service the target uses the credential with, as IAM names it
    /// in `GetAccessKeyLastUsed` (`ses` for an SES mail provider). A use of a
    /// key by this service after a saga stopped tells which key the target
    /// holds. `None`: any service counts.
    fn consumer_service(&self) -> Option<&'static str> {
        None
    }
}

/// A configured rotation with its connectors built.
#[derive(Clone)]
pub struct Rotation {
    pub id: String,
    pub credential: String,
    pub source: Arc<dyn CredentialSource>,
    pub target: Arc<dyn Target>,
    pub policy: crate::saga::Policy,
}

/// Build the connectors of one configured rotation.
pub fn build(cfg: &RotationConfig, clients: &Clients, secrets: &SecretResolver, http: &reqwest::Client) -> Rotation {
    let source: Arc<dyn CredentialSource> = match &cfg.source {
        SourceConfig::IamAccessKey { user_name, account_id } => {
            Arc::new(iam::IamAccessKey::new(clients.iam.clone(), clients.base.clone(), user_name.clone(), account_id.clone()))
        }
        SourceConfig::ScimToken { region, account_id } => Arc::new(scim::ScimToken::new(region.clone(), account_id.clone())),
    };
    let target: Arc<dyn Target> = match &cfg.target {
        TargetConfig::Auth0EmailProvider { domain, base_url, client_id, client_secret, ses_region, from_address } => {
            Arc::new(auth0::Auth0EmailProvider::new(auth0::Auth0Settings {
                domain: domain.clone(),
                base_url: base_url.clone().unwrap_or_else(|| format!("https://{domain}")),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                ses_region: ses_region.clone(),
                from_address: from_address.clone(),
                http: http.clone(),
                secrets: secrets.clone(),
                retry: RetryPolicy::default(),
            }))
        }
        TargetConfig::EntraProvisioning {
            tenant_id,
            client_id,
            client_secret,
            service_principal_id,
            job_id,
            scim_endpoint,
            login_base_url,
            graph_base_url,
            restart_job,
            run_timeout,
        } => Arc::new(entra::EntraProvisioning::new(entra::EntraSettings {
            tenant_id: tenant_id.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            service_principal_id: service_principal_id.clone(),
            job_id: job_id.clone(),
            scim_endpoint: scim_endpoint.clone(),
            login_base_url: login_base_url.clone().unwrap_or_else(|| "https://login.microsoftonline.com".into()),
            graph_base_url: graph_base_url.clone().unwrap_or_else(|| "https://graph.microsoft.com".into()),
            http: http.clone(),
            secrets: secrets.clone(),
            retry: RetryPolicy::default(),
            restart_wait: restart_job.then(|| run_timeout.map(|d| d.0).unwrap_or(std::time::Duration::from_secs(600))),
        })),
    };
    Rotation { id: cfg.id.clone(), credential: cfg.credential_key(), source, target, policy: cfg.policy.to_policy() }
}

/// The HTTP client every HTTP connector shares (rustls, explicit timeouts).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("keyturn/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client builds")
}
