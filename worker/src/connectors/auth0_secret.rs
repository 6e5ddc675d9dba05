//! Credential source: an Auth0 application's client secret — normally the
//! machine-to-machine client keyturn itself signs in to Auth0 with.
//!
//! Auth0 facts this leans on (Management API v2 reference,
//! `POST /api/v2/clients/{id}/rotate-secret`, and "Rotate Client Secrets"):
//! * rotate-secret needs the `update:client_keys` scope and answers 200 with
//!   the client object whose `client_secret` is the **new** secret; the old
//!   secret stops working at once, and "new secrets may be delayed up to
//!   thirty seconds" at the token endpoint. It cannot be used with clients
//!   that authenticate with Private Key JWT. An application holds one secret:
//!   there is no overlap, so nothing to disable, enable or delete later.
//! * Management API access tokens are JWTs that stay valid until their `exp`,
//!   whatever happens to the secret that obtained them.
//!
//! The crash-safe sequence (the old secret dies with the call):
//! 1. [`CredentialSource::grant`]: a Management API token is obtained with
//!    the current secret; the engine seals it with KMS in the saga, next to
//!    the issue intent, **before** the call;
//! 2. `issue`: rotate-secret with that token; the engine seals and commits
//!    the new secret before anything else happens;
//! 3. a worker that died between 2 and the commit leaves the intent and the
//!    sealed token: the retried step calls rotate-secret again with the
//!    sealed token (the old secret no longer works) and keeps that answer —
//!    the lost secret is simply superseded. If the sealed token expired too
//!    and the old secret is refused, the step fails with [`OLD_GONE`] and the
//!    notice says what a person must do;
//! 4. `prove`: a client-credentials token with the new secret (`NotYet`
//!    while Auth0 refuses it; the policy's `propagation_timeout` bounds it);
//!    then the target (the Secrets Manager secret keyturn reads) stores it,
//!    and keyturn's token caches read it from there once Auth0 refuses the
//!    old one (`SecretResolver::with`).
//!
//! The source lists no old credential: Auth0 shows no id for a secret, and
//! the old one is dead once the new one exists, so the saga ends after the
//! target's check; `retire` has nothing left to do, and `disable`, `enable`
//! and `revoke` refuse (the machine never revokes the new secret:
//! [`crate::saga::Policy::old_dies_at_issue`]).

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::auth0::http_error;
use super::http::Api;
use super::token::TokenCache;
use super::{http_retry, BoxFut, BuildContext, ConfigProblem, CredentialSource, NewCredential, RetryPolicy, SourceEntry, SourceSpec, Subject};
use crate::error::{Error, Result};
use crate::preflight::{Check, Findings};
use crate::saga::{KeyRef, Millis, OLD_GONE};
use crate::secrets::{SecretRef, SecretResolver};

/// The Management API scope rotate-secret needs.
pub const SCOPE: &str = "update:client_keys";

/// `source = { kind = "auth0_client_secret", … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0SecretConfig {
    /// Tenant domain, e.g. `example.eu.auth0.com`.
    pub domain: String,
    /// Override of `https://{domain}` (tests, custom domains).
    pub base_url: Option<String>,
    /// The application whose secret rotates (normally keyturn's own).
    pub client_id: String,
    /// The application keyturn calls the Management API as; default: `client_id`.
    pub management_client_id: Option<String>,
    /// Its client secret, by reference. When it is the rotated secret, it
    /// must be the Secrets Manager secret (and JSON field) the target writes.
    pub management_client_secret: SecretRef,
}

impl Auth0SecretConfig {
    fn manager(&self) -> &str {
        self.management_client_id.as_deref().unwrap_or(&self.client_id)
    }
    /// Whether keyturn rotates the secret it calls the Management API with.
    fn own(&self) -> bool {
        self.manager() == self.client_id
    }
}

/// The registry entry.
pub const SOURCE: SourceEntry = SourceEntry {
    kind: "auth0_client_secret",
    credential_type: "auth0_client_secret",
    subjects: &[],
    exposure: None,
    parse: |t| {
        let c: Auth0SecretConfig = super::from_table(t)?;
        super::auth0::check_tenant(&c.domain, c.base_url.as_deref(), &c.client_id)?;
        for (key, id) in [("client_id", Some(c.client_id.as_str())), ("management_client_id", c.management_client_id.as_deref())] {
            if let Some(id) = id {
                super::check::check_id(id).map_err(|m| ConfigProblem::at(key, m))?;
            }
        }
        if let (true, SecretRef::Env(var)) = (c.own(), &c.management_client_secret) {
            return Err(ConfigProblem::at(
                "management_client_secret",
                format!(
                    "keyturn reads the secret it rotates from environment variable {var}, which it cannot change: the new secret would be lost when the old one stops working. Keep it in Secrets Manager ({{ secrets_manager = \"…\", json_key = \"client_secret\" }}) and rotate into that secret"
                ),
            ));
        }
        Ok(Arc::new(c))
    },
};

impl SourceSpec for Auth0SecretConfig {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn credential_type(&self) -> &'static str {
        SOURCE.credential_type
    }
    fn credential_key(&self) -> String {
        format!("{}:{}:{}", SOURCE.kind, self.domain, self.client_id)
    }
    fn covers(&self, _subject: &Subject<'_>) -> bool {
        false
    }
    fn old_dies_at_issue(&self) -> bool {
        true
    }
    /// keyturn's own secret goes exactly where keyturn reads it from.
    fn read_by_keyturn(&self) -> Option<&SecretRef> {
        // Only keyturn's own client: another application's secret goes
        // wherever its owner reads it.
        self.own().then_some(&self.management_client_secret)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn CredentialSource> {
        let api = Api { service: "auth0", http: ctx.http.clone(), retry: RetryPolicy::default(), map_error: http_error, headers: Vec::new() };
        Arc::new(Auth0ClientSecret {
            cfg: self.clone(),
            base_url: self.base_url.clone().unwrap_or_else(|| format!("https://{}", self.domain)),
            secrets: ctx.secrets.clone(),
            clock: ctx.clock.clone(),
            token: TokenCache::new(ctx.clock.clone()),
            api,
        })
    }
}

pub struct Auth0ClientSecret {
    cfg: Auth0SecretConfig,
    base_url: String,
    secrets: SecretResolver,
    clock: crate::clock::SharedClock,
    /// Management API tokens (the grant, and doctor's).
    token: TokenCache,
    api: Api,
}

/// What a person does when keyturn lost the only secret.
fn by_hand(cfg: &Auth0SecretConfig, store: &str) -> String {
    format!(
        "In the Auth0 Dashboard: Applications → Applications → {} → Settings → Danger Zone → Rotate (confirm); on its Credentials tab copy the new Client Secret and put it in {store}; then run keyturn doctor",
        cfg.client_id
    )
}

impl Auth0ClientSecret {
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url> {
        super::http::endpoint(&super::http::base(&self.base_url)?, segments, None)
    }

    fn store_name(&self) -> String {
        match &self.cfg.management_client_secret {
            SecretRef::SecretsManager { secret_id, json_key } if self.cfg.own() => {
                format!("Secrets Manager secret {secret_id}{}", json_key.as_ref().map(|k| format!(" (field {k})")).unwrap_or_default())
            }
            _ => "the secret store the target names".into(),
        }
    }

    /// A client-credentials token for the Management API, its lifetime and
    /// granted scopes. The secret never appears in an error.
    async fn request_token(&self, client_id: &str, secret: &SecretString) -> Result<(SecretString, Duration, Option<String>)> {
        super::auth0::management_token(&self.api, &self.base_url, &self.cfg.domain, client_id, secret).await
    }

    /// A new Management API token with the secret keyturn is configured
    /// with (read again from its store when Auth0 refuses a cached one).
    async fn management_token(&self) -> Result<(SecretString, Duration, Option<String>)> {
        self.secrets.with(&self.cfg.management_client_secret, |secret| async move { self.request_token(self.cfg.manager(), &secret).await }).await
    }

    /// Whether a token's `exp` claim has passed, or will within the 30 s a
    /// call may take.
    fn expired(&self, token: &SecretString) -> bool {
        let exp = crate::preflight::jwt_claims(token.expose_secret()).and_then(|c| c["exp"].as_u64());
        exp.is_some_and(|exp| exp.saturating_mul(1000) <= self.clock.now_ms().saturating_add(30_000))
    }

    /// `POST /api/v2/clients/{id}/rotate-secret` with `token`: the new secret.
    async fn rotate(&self, token: &SecretString) -> Result<NewCredential> {
        const OP: &str = "POST /api/v2/clients/{id}/rotate-secret";
        let url = self.url(&["api", "v2", "clients", &self.cfg.client_id, "rotate-secret"])?;
        let secret = http_retry(self.api.retry, || async {
            let (status, headers, text) = self.api.send(OP, self.api.http.post(url.clone()).bearer_auth(token.expose_secret()), true).await?;
            if !status.is_success() {
                // An error body has no secret in it; cut it anyway.
                return Err(http_error(OP, status, &headers, &text, true));
            }
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match v.get("client_secret").and_then(Value::as_str) {
                Some(s) if !s.is_empty() => Ok(SecretString::from(s.to_string())),
                // Applied (200) but unreadable: the old secret is gone.
                _ => Err(Error::Http {
                    service: "auth0",
                    operation: OP,
                    status: status.as_u16(),
                    code: "invalid_response".into(),
                    message: "rotate-secret answered without a client_secret".into(),
                    retry_after: None,
                    may_have_applied: true,
                }),
            }
        })
        .await?;
        // Secrets Manager's idempotency token is made from this id: one per issue.
        Ok(NewCredential { id: format!("secret-{}", self.clock.now_ms()), secret })
    }

    async fn issue_impl(&self, grant: Option<&SecretString>) -> Result<NewCredential> {
        let sealed = match grant {
            Some(g) if !self.expired(g) => Some(g),
            _ => None,
        };
        let first = match sealed {
            Some(g) => self.rotate(g).await,
            None => Err(Error::Http {
                service: "auth0",
                operation: "POST /api/v2/clients/{id}/rotate-secret",
                status: 401,
                code: "token_expired".into(),
                message: "the sealed Management API token expired".into(),
                retry_after: None,
                may_have_applied: false,
            }),
        };
        let cred = match first {
            Err(Error::Http { status: 401, .. }) => {
                // The sealed token no longer works. If the configured secret
                // still does, no earlier call replaced it: go on with it.
                match self.management_token().await {
                    Ok((token, _, _)) => self.rotate(&token).await?,
                    Err(Error::Http { status: 401, .. }) => {
                        return Err(Error::Refused {
                            code: OLD_GONE,
                            message: format!(
                                "Auth0 refuses the client secret of {} keyturn holds, and the Management API token sealed before rotating it has expired: an earlier attempt rotated the secret and its answer was lost. {}",
                                self.cfg.client_id,
                                by_hand(&self.cfg, &self.store_name())
                            ),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            other => other?,
        };
        if self.cfg.own() {
            // The configured secret is dead: the next read goes to its store.
            self.secrets.forget(&self.cfg.management_client_secret);
        }
        Ok(cred)
    }

    async fn prove_impl(&self, cred: &NewCredential) -> Result<()> {
        match self.request_token(&self.cfg.client_id, &cred.secret).await {
            Ok(_) => Ok(()),
            // Authenticated, only not granted this API: the secret works.
            Err(Error::Http { status: 403, .. }) => Ok(()),
            Err(Error::Http { status: 401, .. }) => Err(Error::NotYet {
                code: "SecretNotActiveYet",
                message: format!("Auth0 does not accept the new secret of {} yet (new secrets may take up to 30 seconds)", self.cfg.client_id),
            }),
            Err(e) => Err(e),
        }
    }

    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        let (token, lifetime, scope) = match self.management_token().await {
            Ok(t) => t,
            Err(e) => {
                f.checks.push(Check::fail("Auth0 token", e.to_string(), "check the Management API client id and secret keyturn is configured with"));
                return f;
            }
        };
        f.checks.push(Check::ok("Auth0 token", format!("client {} got a Management API token", self.cfg.manager())));
        let granted = scope.or_else(|| crate::preflight::jwt_claims(token.expose_secret()).and_then(|c| c["scope"].as_str().map(str::to_string)));
        f.checks.push(match granted {
            Some(g) if g.split_whitespace().any(|s| s == SCOPE) => Check::ok("Auth0 scopes", format!("the token carries {SCOPE}")),
            Some(_) => Check::fail(
                "Auth0 scopes",
                format!("the token lacks {SCOPE}"),
                format!(
                    "in the Auth0 Dashboard: Applications → APIs → Auth0 Management API → Machine To Machine Applications → {}: grant {SCOPE}",
                    self.cfg.manager()
                ),
            ),
            None => Check::not_checked("Auth0 scopes", format!("the token does not name its scopes; needed: {SCOPE}")),
        });
        self.token.store(token, lifetime).await;
        f
    }

    fn refuse(&self, what: &str) -> Error {
        Error::Refused {
            code: "SingleSecret",
            message: format!(
                "Auth0 keeps one client secret per application: the old secret of {} stopped working when the new one was issued, so there is nothing to {what}",
                self.cfg.client_id
            ),
        }
    }
}

impl CredentialSource for Auth0ClientSecret {
    fn tells_age(&self) -> bool {
        // Auth0 shows no creation time for a client secret.
        false
    }
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn describe(&self) -> String {
        format!("Auth0 client secret of {} on {}", self.cfg.client_id, self.cfg.domain)
    }
    /// None listed: Auth0 names no secret, and the old one dies at issue.
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>> {
        Box::pin(async { Ok(vec![]) })
    }
    /// A fresh Management API token (its whole lifetime ahead), sealed by
    /// the engine before rotate-secret is called with it.
    fn grant(&self) -> BoxFut<'_, Result<Option<SecretString>>> {
        Box::pin(async move {
            let (token, lifetime, _) = self.management_token().await?;
            self.token.store(token.clone(), lifetime).await;
            Ok(Some(token))
        })
    }
    fn issue<'a>(&'a self, _keep: &'a [String], _earlier: &'a [Millis]) -> BoxFut<'a, Result<NewCredential>> {
        Box::pin(self.issue_impl(None))
    }
    fn issue_granted<'a>(&'a self, _keep: &'a [String], _earlier: &'a [Millis], grant: Option<&'a SecretString>) -> BoxFut<'a, Result<NewCredential>> {
        Box::pin(self.issue_impl(grant))
    }
    fn prove<'a>(&'a self, cred: &'a NewCredential) -> BoxFut<'a, Result<()>> {
        Box::pin(self.prove_impl(cred))
    }
    fn disable<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { Err(self.refuse("disable")) })
    }
    fn enable<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { Err(self.refuse("enable again")) })
    }
    /// The old secret died at issue: nothing left to do.
    fn retire<'a>(&'a self, _id: &'a str, _switched_at: Millis) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn revoke<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { Err(self.refuse("delete (the new secret is the only one)")) })
    }
    fn location(&self) -> BoxFut<'_, Result<Option<String>>> {
        let s = format!("Auth0 tenant {}, rotated with client {}'s Management API token", self.cfg.domain, self.cfg.manager());
        Box::pin(async move { Ok(Some(s)) })
    }
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn an_env_reference_to_keyturns_own_secret_is_refused() {
        let e = (SOURCE.parse)(t(r#"domain = "d.auth0.com"
client_id = "abc"
management_client_secret = { env = "KEYTURN_AUTH0_SECRET" }"#))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("management_client_secret"));
        assert!(e.message.contains("cannot change") && e.message.contains("Secrets Manager"), "{e:?}");
        // Another application's secret may be rotated with an env-held manager secret.
        assert!((SOURCE.parse)(t(r#"domain = "d.auth0.com"
client_id = "abc"
management_client_id = "mgr"
management_client_secret = { env = "KEYTURN_AUTH0_SECRET" }"#))
        .is_ok());
        assert_eq!(
            (SOURCE.parse)(t(r#"domain = "d.auth0.com"
client_id = "a/b"
management_client_secret = { secrets_manager = "s", json_key = "k" }"#))
            .unwrap_err()
            .key
            .as_deref(),
            Some("client_id")
        );
    }

    #[test]
    fn keyturns_own_secret_must_be_rotated_into_the_field_keyturn_reads() {
        let src = super::super::parse_source(t(r#"kind = "auth0_client_secret"
domain = "d.auth0.com"
client_id = "abc"
management_client_secret = { secrets_manager = "keyturn/auth0", json_key = "client_secret" }"#))
        .unwrap();
        assert!(src.old_dies_at_issue());
        let target = |id: &str, field: &str| {
            super::super::parse_target(t(&format!(
                "kind = \"secrets_manager_secret\"\nsecret_id = \"{id}\"\naccess_key_id_field = \"client_secret_id\"\nsecret_access_key_field = \"{field}\""
            )))
            .unwrap()
        };
        let fits = target("keyturn/auth0", "client_secret");
        assert!(super::super::check_pair(src.as_ref(), fits.as_ref()).is_ok());
        assert!(super::super::check_written_back(src.as_ref(), fits.as_ref()).is_ok());
        let e = super::super::check_written_back(src.as_ref(), target("other", "client_secret").as_ref()).unwrap_err();
        assert!(e.contains("or keyturn would keep signing in with the old one"), "{e}");
        assert!(super::super::check_written_back(src.as_ref(), target("keyturn/auth0", "secret").as_ref()).is_err());
        let auth0 = super::super::parse_target(t(r#"kind = "auth0_email_provider"
domain = "d.auth0.com"
client_id = "c"
client_secret = { env = "KEYTURN_X" }
ses_region = "eu-west-1""#))
        .unwrap();
        assert!(super::super::check_pair(src.as_ref(), auth0.as_ref()).is_err(), "an email provider takes no client secret");
    }
}
