//! Credential source: keyturn's own Entra app client secret (a password
//! credential of the app registration keyturn signs in to Graph with).
//!
//! Graph facts this leans on (Microsoft Graph v1.0 reference:
//! application-addpassword, application-removepassword, passwordCredential):
//! * **inventory** = `GET /v1.0/applications/{id}?$select=passwordCredentials`:
//!   every password's `keyId`, `hint`, `displayName`, `startDateTime` and
//!   `endDateTime` — never its `secretText`;
//! * **issue** = `POST /v1.0/applications/{id}/addPassword` with
//!   `{"passwordCredential": {"displayName", "endDateTime"}}`: 200 with the
//!   new `keyId` and its `secretText`, returned only in this answer. It is
//!   not idempotent, so it is sent once per attempt (no in-process retry); an
//!   attempt whose answer was lost leaves a password created after its
//!   recorded intent, which the next attempt removes (an orphan, as
//!   [`saga::triage_keys`] calls it); any other unknown password is refused,
//!   never removed;
//! * **prove** = a client-credentials token with the new secret. Entra takes
//!   a while to replicate a new password: `invalid_client` (`AADSTS7000215`)
//!   is [`Error::NotYet`] until the policy's `propagation_timeout`;
//! * **retire** / **revoke** = `POST …/removePassword` with `{"keyId"}`: 204.
//!   A password already gone is success (checked by listing, not by the
//!   error's wording). Retire first reads the secret keyturn signs in with
//!   (fresh from Secrets Manager): if it still starts with the old
//!   password's `hint`, the target is not where keyturn reads from, and the
//!   old password is kept (`OwnSecretNotSwitched`, the saga needs attention);
//! * **disable** / **enable**: Entra cannot disable a password. Refused with
//!   [`CANNOT_DISABLE`]; the engine's `disable_old` step takes that as
//!   "nothing to disable": the old password stays valid through the grace
//!   period, then is removed;
//! * **expires_at** = the earliest `endDateTime` of the app's passwords (any
//!   of them may be the one in use).
//!
//! Permissions: `Application.ReadWrite.OwnedBy` (the app must be an owner of
//! its own registration), or `Application.ReadWrite.All`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::entra::{graph_error, graph_token};
use super::http::Api;
use super::token::TokenCache;
use super::{BoxFut, BuildContext, ConfigProblem, CredentialSource, NewCredential, RetryPolicy, SourceEntry, SourceSpec, Subject, CANNOT_DISABLE};
use crate::clock::Dur;
use crate::error::{Error, Result};
use crate::preflight::{Check, Findings};
use crate::saga::{self, KeyRef, Millis};
use crate::secrets::{SecretRef, SecretResolver};

const SERVICE: &str = "graph";

/// `source = { kind = "entra_client_secret", … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSecretConfig {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// The app's client (application) id: what keyturn signs in as.
    pub client_id: String,
    /// The app registration's object id (Graph `applications/{id}`).
    pub application_id: String,
    /// Where keyturn reads this very secret: a Secrets Manager secret (the
    /// rotation's target writes the new one there). `env` is refused.
    pub client_secret: SecretRef,
    /// How long a new password is valid (default: Graph's, two years).
    pub lifetime: Option<Dur>,
    /// Override of `https://login.microsoftonline.com` (tests, sovereign clouds).
    pub login_base_url: Option<String>,
    /// Override of `https://graph.microsoft.com` (tests, sovereign clouds).
    pub graph_base_url: Option<String>,
}

/// The registry entry.
pub const SOURCE: SourceEntry = SourceEntry {
    kind: "entra_client_secret",
    credential_type: "entra_client_secret",
    subjects: &[],
    exposure: None,
    parse: |t| {
        let c: EntraSecretConfig = super::from_table(t)?;
        for (key, v) in [("tenant_id", &c.tenant_id), ("client_id", &c.client_id), ("application_id", &c.application_id)] {
            super::check::check_id(v).map_err(|m| ConfigProblem::at(key, m))?;
        }
        if let SecretRef::Env(_) = c.client_secret {
            return Err(ConfigProblem::at(
                "client_secret",
                "keyturn writes the new secret where it reads it from, and cannot write an environment variable: keep the secret in Secrets Manager (client_secret = { secrets_manager = \"…\", json_key = \"client_secret\" }) and make that secret the rotation's target",
            ));
        }
        if let Some(l) = c.lifetime {
            if l.0 < Duration::from_secs(86_400) || l.0 > Duration::from_secs(2 * 366 * 86_400) {
                return Err(ConfigProblem::at("lifetime", "must be between 1d and 2 years (Entra's longest recommended secret lifetime)"));
            }
        }
        for (key, u) in [("login_base_url", &c.login_base_url), ("graph_base_url", &c.graph_base_url)] {
            if let Some(u) = u {
                super::check::check_base_url(u).map_err(|m| ConfigProblem::at(key, m))?;
            }
        }
        Ok(Arc::new(c))
    },
};

impl SourceSpec for EntraSecretConfig {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn credential_type(&self) -> &'static str {
        SOURCE.credential_type
    }
    fn credential_key(&self) -> String {
        format!("{}:{}:{}", SOURCE.kind, self.tenant_id, self.application_id)
    }
    /// No event names keyturn's own secret: it is rotated by schedule
    /// (`before_expiry`, `max_age`) or by hand.
    fn covers(&self, _subject: &Subject<'_>) -> bool {
        false
    }
    fn read_by_keyturn(&self) -> Option<&SecretRef> {
        Some(&self.client_secret)
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn CredentialSource> {
        let retry = RetryPolicy::default();
        Arc::new(EntraClientSecret {
            cfg: self.clone(),
            login: self.login_base_url.clone().unwrap_or_else(|| "https://login.microsoftonline.com".into()),
            graph: self.graph_base_url.clone().unwrap_or_else(|| "https://graph.microsoft.com".into()),
            secrets: ctx.secrets.clone(),
            clock: ctx.clock.clone(),
            token: TokenCache::new(ctx.clock.clone()),
            api: Api { service: SERVICE, http: ctx.http.clone(), retry, map_error: graph_error, headers: Vec::new() },
            once: Api {
                service: SERVICE,
                http: ctx.http.clone(),
                retry: RetryPolicy { attempts: 1, ..retry },
                map_error: graph_error,
                headers: Vec::new(),
            },
        })
    }
}

/// One password credential as Graph lists it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Password {
    pub key: KeyRef,
    pub ends_at: Option<Millis>,
    /// Graph's `hint`: the secret's first three characters.
    pub hint: Option<String>,
}

pub struct EntraClientSecret {
    cfg: EntraSecretConfig,
    login: String,
    graph: String,
    secrets: SecretResolver,
    clock: crate::clock::SharedClock,
    token: TokenCache,
    /// Calls with the usual short retries.
    api: Api,
    /// `addPassword`: sent once (not idempotent).
    once: Api,
}

/// Graph's date-time (RFC 3339, up to 7 fractional digits) as milliseconds.
pub fn parse_time(v: &Value) -> Option<Millis> {
    let t = v.as_str()?;
    let d = aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime).ok()?;
    d.to_millis().ok().map(|m| m.max(0) as u64)
}

/// The passwords of an `applications/{id}?$select=passwordCredentials` answer.
pub fn passwords(app: &Value, now: Millis) -> Vec<Password> {
    app["passwordCredentials"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let id = p["keyId"].as_str()?.to_string();
            let ends_at = parse_time(&p["endDateTime"]);
            Some(Password {
                key: KeyRef { id, active: ends_at.is_none_or(|e| e > now), created_at: parse_time(&p["startDateTime"]) },
                ends_at,
                hint: p["hint"].as_str().filter(|h| !h.is_empty()).map(str::to_string),
            })
        })
        .collect()
}

impl EntraClientSecret {
    fn app_url(&self, action: Option<&str>, query: Option<&str>) -> Result<reqwest::Url> {
        let mut segs = vec!["v1.0", "applications", self.cfg.application_id.as_str()];
        segs.extend(action);
        super::http::endpoint(&super::http::base(&self.graph)?, &segs, query)
    }

    /// A client-credentials token for Graph with `secret`.
    async fn token_with(&self, secret: &SecretString) -> Result<(SecretString, Duration)> {
        graph_token(&self.api, &self.login, &self.graph, &self.cfg.tenant_id, &self.cfg.client_id, secret).await
    }

    /// The token keyturn calls Graph with: from the secret it reads now
    /// (re-read once if the token endpoint refuses a cached value).
    async fn fetch_token(&self) -> Result<(SecretString, Duration)> {
        self.secrets.with(&self.cfg.client_secret, |s| async move { self.token_with(&s).await }).await
    }

    async fn call(&self, api: &Api, method: Method, url: Result<reqwest::Url>, operation: &'static str, body: Option<Value>) -> Result<Value> {
        api.call(&self.token, || self.fetch_token(), method, &url?, operation, body.as_ref()).await
    }

    async fn list(&self) -> Result<Vec<Password>> {
        let app = self.call(&self.api, Method::GET, self.app_url(None, Some("$select=passwordCredentials")), "GET application", None).await?;
        Ok(passwords(&app, self.clock.now_ms()))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        if !self.list().await?.iter().any(|p| p.key.id == id) {
            return Ok(());
        }
        match self.call(&self.api, Method::POST, self.app_url(Some("removePassword"), None), "POST removePassword", Some(json!({"keyId": id}))).await {
            Ok(_) => Ok(()),
            // Gone meanwhile (a retried removal whose first answer was lost) is success.
            Err(e) if !self.list().await?.iter().any(|p| p.key.id == id) => {
                tracing::info!(key_id = %id, error = %e, "password already removed");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn issue_impl(&self, keep: &[String], earlier_intents: &[Millis]) -> Result<NewCredential> {
        if !earlier_intents.is_empty() {
            let keys: Vec<KeyRef> = self.list().await?.into_iter().map(|p| p.key).collect();
            let triage = saga::triage_keys(&keys, keep, earlier_intents);
            if !triage.strangers.is_empty() {
                return Err(Error::Refused { code: saga::UNKNOWN_KEY, message: saga::unknown_key_message(&self.describe(), &triage.strangers, keep) });
            }
            for orphan in &triage.orphans {
                tracing::warn!(application = %self.cfg.application_id, key_id = %orphan, "removing orphan password left by an interrupted attempt");
                self.remove(orphan).await?;
            }
        }
        let now = self.clock.now_ms();
        let mut cred = json!({"displayName": format!("keyturn {}", crate::clock::fmt_date(now))});
        if let Some(l) = self.cfg.lifetime {
            let end = now.saturating_add(l.0.as_millis() as u64);
            cred["endDateTime"] = aws_smithy_types::DateTime::from_millis(end as i64)
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .map_err(|e| Error::Corrupt(format!("end date: {e}")))?
                .into();
        }
        let out = self
            .call(&self.once, Method::POST, self.app_url(Some("addPassword"), None), "POST addPassword", Some(json!({"passwordCredential": cred})))
            .await?;
        let id = out["keyId"].as_str().ok_or_else(|| Error::Corrupt("addPassword answered no keyId".into()))?.to_string();
        let secret =
            out["secretText"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| Error::Corrupt(format!("addPassword answered no secretText for {id}")))?;
        Ok(NewCredential { id, secret: SecretString::from(secret.to_string()) })
    }

    async fn prove_impl(&self, cred: &NewCredential) -> Result<()> {
        match self.token_with(&cred.secret).await {
            Ok(_) => Ok(()),
            Err(Error::Http { code, message, .. }) if code == "invalid_client" || code == "unauthorized_client" => Err(Error::NotYet {
                code: "SecretNotReplicated",
                message: format!("new password {} does not get a token yet ({code}: {})", cred.id, message.chars().take(200).collect::<String>()),
            }),
            Err(e) => Err(e),
        }
    }

    /// Remove the old password, but only once keyturn itself no longer
    /// reads it: the secret its `client_secret` names, read now, must not
    /// start with the old password's hint (a rotation whose target is
    /// another secret, or another field, would otherwise cut keyturn off).
    async fn retire_impl(&self, id: &str) -> Result<()> {
        let Some(old) = self.list().await?.into_iter().find(|p| p.key.id == id) else { return Ok(()) };
        let reads = self.secrets.resolve_fresh(&self.cfg.client_secret).await?;
        if old.hint.as_deref().is_some_and(|h| reads.expose_secret().starts_with(h)) {
            return Err(Error::Refused {
                code: "OwnSecretNotSwitched",
                message: format!(
                    "the client secret keyturn reads (its client_secret reference) still looks like password {id}, the one to be removed; not removing it. The rotation's target must be the Secrets Manager secret and JSON field that client_secret names"
                ),
            });
        }
        self.remove(id).await
    }

    fn cannot_disable(&self, id: &str) -> Error {
        Error::Refused {
            code: CANNOT_DISABLE,
            message: format!("Entra cannot disable a password credential ({id} of {}): it stays valid until it is removed or expires", self.describe()),
        }
    }
}

/// Application permissions (app roles) that let an app add and remove its
/// own passwords: either one (`OwnedBy` with the app as owner of itself).
pub const APP_ROLES: [&str; 2] = ["Application.ReadWrite.OwnedBy", "Application.ReadWrite.All"];

impl EntraClientSecret {
    /// `keyturn doctor`: a token can be obtained with the secret keyturn
    /// reads, it carries a role that can add passwords, and the app's
    /// passwords can be listed (how many, when the first expires).
    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        let (token, lifetime) = match self.fetch_token().await {
            Ok(t) => t,
            Err(e) => {
                f.checks.push(Check::fail(
                    "Graph token",
                    e.to_string(),
                    "check tenant_id, client_id and the secret client_secret names (Entra: App registrations → the app → Certificates & secrets)",
                ));
                return f;
            }
        };
        f.checks.push(Check::ok("Graph token", format!("app {} got a Graph token with the secret keyturn reads", self.cfg.client_id)));
        let fix = format!(
            "Entra: App registrations → {} → API permissions → Microsoft Graph → Application permissions → Application.ReadWrite.OwnedBy (and add the app as an owner of its own registration: Owners → Add owners), or Application.ReadWrite.All; then Grant admin consent",
            self.cfg.client_id
        );
        f.checks.push(match crate::preflight::jwt_claims(token.expose_secret()) {
            None => {
                Check::not_checked("Graph permissions", format!("the token is not a JWT, so its roles cannot be read; needed: {}", APP_ROLES.join(" or ")))
            }
            Some(c) => {
                let roles: Vec<&str> = c["roles"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                if roles.iter().any(|r| APP_ROLES.contains(r)) {
                    Check::ok("Graph permissions", format!("the token carries {}", roles.join(" ")))
                } else {
                    Check::fail(
                        "Graph permissions",
                        format!("the token's roles ({}) include neither {}", roles.join(" "), APP_ROLES.join(" nor ")),
                        fix.clone(),
                    )
                }
            }
        });
        self.token.store(token, lifetime).await;
        f.checks.push(match self.list().await {
            Err(e) => {
                Check::fail("client secrets", e.to_string(), format!("check application_id (the registration's Object ID, not its client id); {fix}"))
            }
            Ok(p) if p.len() == 1 => Check::ok(
                "client secrets",
                format!("1 client secret, expires {}", p[0].ends_at.map(crate::clock::fmt_date).unwrap_or_else(|| "never".into())),
            ),
            Ok(p) => Check::warn(
                "client secrets",
                format!("{} client secrets: a rotation starts only with one", p.len()),
                "remove the client secrets keyturn does not use (Certificates & secrets), keeping the one in the Secrets Manager secret",
            ),
        });
        f
    }
}

impl CredentialSource for EntraClientSecret {
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn describe(&self) -> String {
        format!("Entra app {} client secret (tenant {})", self.cfg.client_id, self.cfg.tenant_id)
    }
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>> {
        Box::pin(async move { Ok(self.list().await?.into_iter().map(|p| p.key).collect()) })
    }
    fn issue<'a>(&'a self, keep: &'a [String], earlier_intents: &'a [Millis]) -> BoxFut<'a, Result<NewCredential>> {
        Box::pin(self.issue_impl(keep, earlier_intents))
    }
    fn prove<'a>(&'a self, cred: &'a NewCredential) -> BoxFut<'a, Result<()>> {
        Box::pin(self.prove_impl(cred))
    }
    fn disable<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { Err(self.cannot_disable(id)) })
    }
    fn enable<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { Err(self.cannot_disable(id)) })
    }
    /// Entra does not report a password's last use: removed after the
    /// grace, once keyturn itself reads the new one.
    fn retire<'a>(&'a self, id: &'a str, _switched_at: Millis) -> BoxFut<'a, Result<()>> {
        Box::pin(self.retire_impl(id))
    }
    fn revoke<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(self.remove(id))
    }
    fn expires_at(&self) -> BoxFut<'_, Result<Option<Millis>>> {
        Box::pin(async move { Ok(self.list().await?.iter().filter_map(|p| p.ends_at).min()) })
    }
    fn location(&self) -> BoxFut<'_, Result<Option<String>>> {
        let s = format!("Entra tenant {}, app registration {} (object id), signed in as itself", self.cfg.tenant_id, self.cfg.application_id);
        Box::pin(async move { Ok(Some(s)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn an_env_reference_is_refused_with_the_reason() {
        let ok = (SOURCE.parse)(t(r#"tenant_id = "t"
client_id = "c"
application_id = "a"
client_secret = { secrets_manager = "keyturn/entra", json_key = "client_secret" }"#));
        assert!(ok.is_ok(), "{ok:?}");
        let e = (SOURCE.parse)(t(r#"tenant_id = "t"
client_id = "c"
application_id = "a"
client_secret = { env = "KEYTURN_ENTRA_SECRET" }"#))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("client_secret"));
        assert!(e.message.contains("cannot write an environment variable") && e.message.contains("Secrets Manager"), "{e:?}");
        let e = (SOURCE.parse)(t(r#"tenant_id = "t"
client_id = "c"
application_id = "a/../b"
client_secret = { secrets_manager = "s" }"#))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("application_id"));
    }

    #[test]
    fn passwords_are_read_with_their_dates_and_never_a_secret() {
        let app = json!({"passwordCredentials": [
            {"keyId": "k1", "hint": "abc", "displayName": "x", "startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2028-01-01T00:00:00.1234567Z", "secretText": null},
            {"keyId": "k2", "startDateTime": "2024-01-01T00:00:00Z", "endDateTime": "2025-01-01T00:00:00Z"},
            {"hint": "no id"}
        ]});
        let now = parse_time(&json!("2026-06-01T00:00:00Z")).unwrap();
        let p = passwords(&app, now);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key.id, "k1");
        assert!(p[0].key.active && !p[1].key.active, "an expired password is not active");
        assert_eq!(p[0].key.created_at, parse_time(&json!("2026-01-01T00:00:00Z")));
        assert_eq!(p[0].ends_at, Some(parse_time(&json!("2028-01-01T00:00:00Z")).unwrap() + 123), "7 fractional digits");
    }
}
