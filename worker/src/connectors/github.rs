//! Target: a pair of GitHub Actions secrets (access key id and secret access
//! key) — repository, environment or organisation secrets.
//!
//! GitHub facts this leans on (docs.github.com REST, "Actions secrets"):
//! * `GET …/secrets/public-key` → `{key_id, key}` (base64 X25519 public key);
//!   `PUT …/secrets/{name}` with `{encrypted_value, key_id}` (+ `visibility`
//!   for organisation secrets) → 201 created, 204 updated. The value is a
//!   libsodium *sealed box* (`crypto_box_seal`) of the secret, base64;
//!   keyturn uses the `crypto_box` crate's `seal`, checked in a unit test
//!   against a box libsodium made.
//! * Values are never readable: `GET …/secrets/{name}` returns only `name`,
//!   `created_at`, `updated_at`.
//! * Rate limits: primary — 403 or 429 with `x-ratelimit-remaining: 0` and
//!   `x-ratelimit-reset` (UNIX seconds); secondary — 403 or 429 with
//!   `retry-after`. Both are waits, not refusals: mapped to a retryable
//!   error carrying the wait.
//! * Authentication here: a fine-grained personal access token (repository
//!   permission "Secrets: read and write", or organisation "Secrets") from a
//!   secret reference, re-read hourly and after a 401. GitHub App
//!   installation tokens are not built yet.
//!
//! **Two secrets, one credential.** keyturn writes the key id first, then
//! the secret key. If GitHub refuses the second write outright, keyturn puts
//! the *old* key id back (ids are not secret, so it can), leaving the old pair
//! whole, and reports the refusal: the saga deletes the new key. If that
//! repair fails too, or either write's answer was lost, the push may have
//! applied and the saga reads back and stops for a person rather than delete
//! anything. **Verified** means: both secrets exist and GitHub answered 2xx
//! to both writes of this push — the values cannot be read back, so
//! verification reports what it can (`Opaque`, or unhealthy if one is missing).

use std::sync::Arc;
use std::time::Duration;

use crypto_box::aead::OsRng;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{retry_after, Api};
use super::token::TokenCache;
use super::{BoxFut, BuildContext, ConfigProblem, NewCredential, RetryPolicy, Target, TargetEntry, TargetSpec};
use crate::error::{Error, Result};
use crate::preflight::{Check, Findings};
use crate::saga::Verification;
use crate::secrets::{SecretRef, SecretResolver};

const SERVICE: &str = "github";

/// `[rotation.target] kind = "github_actions_secret"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// Repository owner (with `repo`): repository or environment secrets.
    pub owner: Option<String>,
    pub repo: Option<String>,
    /// With `owner`/`repo`: the deployment environment's secrets.
    pub environment: Option<String>,
    /// Instead of `owner`/`repo`: an organisation secret.
    pub org: Option<String>,
    /// Organisation secrets: `private` (default), `all` or `selected`.
    pub visibility: Option<String>,
    /// The token keyturn calls GitHub with, by reference.
    pub token: SecretRef,
    /// Secret holding the access key id.
    #[serde(default = "default_id_name")]
    pub access_key_id_secret: String,
    /// Secret holding the secret access key.
    #[serde(default = "default_secret_name")]
    pub secret_access_key_secret: String,
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub base_url: Option<String>,
}

fn default_id_name() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_name() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// GitHub secret names: letters, digits and `_`, not starting with a digit or `GITHUB_`.
fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.to_ascii_uppercase().starts_with("GITHUB_")
}

/// The registry entry.
pub const TARGET: TargetEntry = TargetEntry {
    kind: "github_actions_secret",
    accepts: &["aws_access_key"],
    parse: |t| {
        let c: GitHubConfig = super::from_table(t)?;
        match (&c.owner, &c.repo, &c.org) {
            (Some(o), Some(r), None) if is_name(o) && is_name(r) => {
                if c.visibility.is_some() {
                    return Err(ConfigProblem::at("visibility", "applies only to organisation secrets (org)"));
                }
            }
            (None, None, Some(o)) if is_name(o) => {
                if c.environment.is_some() {
                    return Err(ConfigProblem::at("environment", "applies only to repository secrets (owner and repo)"));
                }
                if let Some(v) = &c.visibility {
                    if !matches!(v.as_str(), "private" | "all" | "selected") {
                        return Err(ConfigProblem::at("visibility", "must be private, all or selected"));
                    }
                }
            }
            _ => return Err(ConfigProblem::at("repo", "set owner and repo (repository or environment secrets), or org (organisation secrets)")),
        }
        if let Some(e) = &c.environment {
            if !is_name(e) {
                return Err(ConfigProblem::at("environment", "must be an environment name"));
            }
        }
        for (k, v) in [("access_key_id_secret", &c.access_key_id_secret), ("secret_access_key_secret", &c.secret_access_key_secret)] {
            if !is_secret_name(v) {
                return Err(ConfigProblem::at(k, "must be a GitHub secret name (letters, digits, _; not starting with a digit or GITHUB_)"));
            }
        }
        if c.access_key_id_secret == c.secret_access_key_secret {
            return Err(ConfigProblem::at("secret_access_key_secret", "must differ from access_key_id_secret"));
        }
        if let Some(u) = &c.base_url {
            super::check::check_base_url(u).map_err(|m| ConfigProblem::at("base_url", m))?;
        }
        Ok(Arc::new(c))
    },
};

impl TargetSpec for GitHubConfig {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn accepts(&self) -> &'static [&'static str] {
        TARGET.accepts
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn Target> {
        let api = Api {
            service: SERVICE,
            http: ctx.http.clone(),
            retry: RetryPolicy::default(),
            map_error: github_error,
            headers: vec![("accept", "application/vnd.github+json"), ("x-github-api-version", "2022-11-28")],
        };
        Arc::new(GitHubActionsSecrets { cfg: self.clone(), api, token: TokenCache::new(ctx.clock.clone()), secrets: ctx.secrets.clone() })
    }
}

pub struct GitHubActionsSecrets {
    cfg: GitHubConfig,
    api: Api,
    token: TokenCache,
    secrets: SecretResolver,
}

/// Seal `plaintext` for a GitHub public key (base64), as `crypto_box_seal`
/// does; answers the base64 `encrypted_value`.
pub fn seal(public_key_b64: &str, plaintext: &str) -> Result<String> {
    let bad = |why: &str| Error::Http {
        service: SERVICE,
        operation: "GET public-key",
        status: 200,
        code: "invalid_public_key".into(),
        message: format!("GitHub's public key {why}"),
        retry_after: None,
        may_have_applied: false,
    };
    let raw = aws_smithy_types::base64::decode(public_key_b64.trim()).map_err(|_| bad("is not base64"))?;
    let pk = crypto_box::PublicKey::from_slice(&raw).map_err(|_| bad("is not 32 bytes"))?;
    let sealed = pk.seal(&mut OsRng, plaintext.as_bytes()).map_err(|_| bad("could not seal"))?;
    Ok(aws_smithy_types::base64::encode(sealed))
}

impl GitHubActionsSecrets {
    /// The secrets collection's URL with `more` segments appended, built
    /// by the URL parser from the validated names.
    fn url(&self, more: &[&str]) -> Result<reqwest::Url> {
        let root = super::http::base(self.cfg.base_url.as_deref().unwrap_or("https://api.github.com"))?;
        let mut segs: Vec<&str> = match (&self.cfg.org, &self.cfg.owner, &self.cfg.repo, &self.cfg.environment) {
            (Some(org), ..) => vec!["orgs", org, "actions", "secrets"],
            (None, Some(o), Some(r), Some(env)) => vec!["repos", o, r, "environments", env, "secrets"],
            (None, Some(o), Some(r), None) => vec!["repos", o, r, "actions", "secrets"],
            _ => return Err(Error::Config("github_actions_secret: set owner and repo, or org".into())),
        };
        segs.extend_from_slice(more);
        super::http::endpoint(&root, &segs, None)
    }

    fn place(&self) -> String {
        match (&self.cfg.org, &self.cfg.owner, &self.cfg.repo, &self.cfg.environment) {
            (Some(org), ..) => format!("organisation {org}"),
            (None, Some(o), Some(r), Some(env)) => format!("{o}/{r} environment {env}"),
            (None, Some(o), Some(r), None) => format!("{o}/{r}"),
            _ => "GitHub".into(),
        }
    }

    /// The token: a fine-grained PAT from its reference, re-read every hour
    /// (and after a 401), so a PAT rotated in Secrets Manager is picked up:
    /// read fresh, never from the resolver's cache.
    async fn fetch_token(&self) -> Result<(SecretString, Duration)> {
        Ok((self.secrets.resolve_fresh(&self.cfg.token).await?, Duration::from_secs(3600)))
    }

    async fn call(&self, method: Method, url: Result<reqwest::Url>, operation: &'static str, body: Option<Value>) -> Result<Value> {
        self.api.call(&self.token, || self.fetch_token(), method, &url?, operation, body.as_ref()).await
    }

    async fn put(&self, name: &str, key: &(String, String), value: &str) -> Result<()> {
        let mut body = json!({"encrypted_value": seal(&key.1, value)?, "key_id": key.0});
        if self.cfg.org.is_some() {
            body["visibility"] = json!(self.cfg.visibility.as_deref().unwrap_or("private"));
        }
        self.call(Method::PUT, self.url(&[name]), "PUT secret", Some(body)).await.map(|_| ())
    }

    async fn push_impl(&self, cred: &NewCredential, old_ids: &[String]) -> Result<()> {
        let pk = self.call(Method::GET, self.url(&["public-key"]), "GET public-key", None).await?;
        let key = match (pk["key_id"].as_str(), pk["key"].as_str()) {
            (Some(id), Some(k)) => (id.to_string(), k.to_string()),
            _ => return Err(Error::Refused { code: "UnexpectedAnswer", message: "GitHub's public-key answer has no key_id or key".into() }),
        };
        self.put(&self.cfg.access_key_id_secret, &key, &cred.id).await?;
        match self.put(&self.cfg.secret_access_key_secret, &key, cred.secret.expose_secret()).await {
            Ok(()) => Ok(()),
            // Refused outright: the id secret already names the new key, the
            // secret secret still holds the old one. Put the old id back.
            Err(e) if !e.may_have_applied() && !e.is_retryable() => match old_ids.first() {
                Some(old) => match self.put(&self.cfg.access_key_id_secret, &key, old).await {
                    Ok(()) => {
                        tracing::warn!(secret = %self.cfg.secret_access_key_secret, "GitHub refused the secret key; the old key id was written back");
                        Err(e)
                    }
                    Err(repair) => Err(Error::Transport {
                        service: SERVICE,
                        operation: "PUT secret",
                        message: format!(
                            "{} holds the new key id but GitHub refused the secret key ({}), and writing the old id back failed ({}): the pair is mismatched",
                            self.cfg.access_key_id_secret,
                            e.code(),
                            repair.code()
                        ),
                        may_have_applied: true,
                    }),
                },
                None => Err(Error::Transport {
                    service: SERVICE,
                    operation: "PUT secret",
                    message: format!("{} holds the new key id but GitHub refused the secret key ({})", self.cfg.access_key_id_secret, e.code()),
                    may_have_applied: true,
                }),
            },
            // The id secret was written: a lost answer on the second write
            // may have landed too. Either way, the target may hold the new key.
            Err(e) => Err(Error::Transport { service: SERVICE, operation: "PUT secret", message: e.to_string(), may_have_applied: true }),
        }
    }

    async fn verify_impl(&self) -> Result<Verification> {
        for name in [&self.cfg.access_key_id_secret, &self.cfg.secret_access_key_secret] {
            match self.call(Method::GET, self.url(&[name.as_str()]), "GET secret", None).await {
                Ok(v) if v["name"].as_str().is_some() => {}
                Ok(_) => return Ok(Verification::Unhealthy(format!("GitHub has no secret {name} in {}", self.place()))),
                Err(Error::Http { status: 404, .. }) => return Ok(Verification::Unhealthy(format!("GitHub has no secret {name} in {}", self.place()))),
                Err(e) => return Err(e),
            }
        }
        // Both exist; their values cannot be read back.
        Ok(Verification::Opaque)
    }
}

/// GitHub's error body (`{"message", "documentation_url"}`), with rate
/// limits — primary (`x-ratelimit-remaining: 0`) and secondary
/// (`retry-after`) — turned into retryable waits even when GitHub answers
/// them with 403.
pub fn github_error(operation: &'static str, status: StatusCode, headers: &HeaderMap, body: &str, write: bool) -> Error {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message: String = v["message"].as_str().unwrap_or("").chars().take(500).collect();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let primary = header("x-ratelimit-remaining") == Some("0");
    let secondary = header("retry-after").is_some();
    if matches!(status.as_u16(), 403 | 429) && (primary || secondary) {
        return Error::Http {
            service: SERVICE,
            operation,
            // A wait, whatever the status: classified as 429 so it is retried.
            status: 429,
            code: if primary { "rate_limit_exceeded".into() } else { "secondary_rate_limit".into() },
            message: format!("GitHub answered {} (rate limited): {message}", status.as_u16()),
            retry_after: retry_after(headers, crate::clock::Clock::now(&crate::clock::SystemClock)).or(Some(Duration::from_secs(60))),
            may_have_applied: false,
        };
    }
    let code = match status.as_u16() {
        401 => "bad_credentials",
        403 => "forbidden",
        404 => "not_found",
        422 => "validation_failed",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    Error::Http {
        service: SERVICE,
        operation,
        status: status.as_u16(),
        code: code.into(),
        message: if message.is_empty() { format!("HTTP {}", status.as_u16()) } else { message },
        retry_after: retry_after(headers, crate::clock::Clock::now(&crate::clock::SystemClock)),
        may_have_applied: write && status.is_server_error(),
    }
}

impl GitHubActionsSecrets {
    /// `keyturn doctor`: the token resolves and can read the secrets'
    /// public key (which needs the "Secrets" permission on the repository,
    /// environment or organisation). Write access cannot be checked without
    /// writing, and is said so.
    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        if let Err(e) = self.secrets.resolve_fresh(&self.cfg.token).await {
            f.checks.push(Check::fail(
                "GitHub token",
                e.to_string(),
                "store the token where target.token points (environment variable or Secrets Manager secret)",
            ));
            return f;
        }
        f.checks.push(Check::ok("GitHub token", "resolved"));
        match self.call(Method::GET, self.url(&["public-key"]), "GET public-key", None).await {
            Ok(v) if v["key_id"].is_string() && v["key"].is_string() => {
                f.checks.push(Check::ok("GitHub access", format!("the token reads the Actions secrets' public key of {}", self.place())));
            }
            Ok(_) => f.checks.push(Check::fail("GitHub access", "the public-key answer has no key_id or key", "check target.base_url")),
            Err(e) => {
                let fix = match e.code().as_str() {
                    "bad_credentials" => "the token is invalid or expired: create a new fine-grained token and store it where target.token points".to_string(),
                    "not_found" | "forbidden" => format!(
                        "give the token access to {} with the permission \"Secrets: read and write\" (a fine-grained token's repository permissions; organisation secrets: \"Secrets\" under organisation permissions)",
                        self.place()
                    ),
                    _ => "check target.base_url and GitHub's status".to_string(),
                };
                f.checks.push(Check::fail("GitHub access", e.to_string(), fix));
                return f;
            }
        }
        f.checks.push(Check::not_checked(
            "GitHub write access",
            "writing a secret cannot be tried without changing it; the token needs \"Secrets: read and write\"",
        ));
        f
    }
}

impl Target for GitHubActionsSecrets {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
    fn describe(&self) -> String {
        format!("GitHub Actions secrets {} and {} of {}", self.cfg.access_key_id_secret, self.cfg.secret_access_key_secret, self.place())
    }
    /// The token read ahead of the push (its Secrets Manager read).
    fn warm(&self) -> BoxFut<'_, ()> {
        Box::pin(async {
            if let Err(e) = self.token.get_or_fetch(|| self.fetch_token()).await {
                tracing::debug!(error = %e, "GitHub token not read ahead of the push");
            }
        })
    }
    fn push<'a>(&'a self, cred: &'a NewCredential, old_ids: &'a [String]) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { self.push_impl(cred, old_ids).await.map_err(|e| e.redact(cred.secret.expose_secret())) })
    }
    fn verify<'a>(&'a self, _new_id: &'a str, _old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>> {
        Box::pin(self.verify_impl())
    }
    fn advice(&self, code: &str, rotate: &str) -> Option<String> {
        match code {
            "bad_credentials" => Some(format!("The GitHub token keyturn uses is invalid or expired: store a new fine-grained token in its secret, then run `{rotate}`.")),
            "forbidden" | "not_found" => Some(format!(
                "Give keyturn's GitHub token the \"Secrets: read and write\" permission on {} (organisation secrets: the organisation's \"Secrets\" permission), then run `{rotate}`.",
                self.place()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// A sealed box made by libsodium (PyNaCl 1.6.2, `SealedBox.encrypt`)
    /// for the public key of the secret key 0x00..0x1f opens with
    /// `crypto_box`; and what `seal` makes opens back: the two are the
    /// same construction.
    #[test]
    fn sealed_boxes_are_libsodiums() {
        let sk = crypto_box::SecretKey::from_bytes(core::array::from_fn(|i| i as u8));
        let pk = aws_smithy_types::base64::encode(sk.public_key().as_bytes());
        assert_eq!(pk, "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8=");
        let by_libsodium = "/lmcWQkshCiPs/xiz+yIe0MF0r1O81RWkLeoYhn+Qn6hIMTHeSZQ0o5z+HKmVIEdwI+5G63ENWghhgi4d3n33vTff57l510mD/yefazmrw42L7cHD5ypFA==";
        let opened = sk.unseal(&aws_smithy_types::base64::decode(by_libsodium).unwrap()).unwrap();
        assert_eq!(opened, b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let ours = seal(&pk, "hello").unwrap();
        assert_eq!(sk.unseal(&aws_smithy_types::base64::decode(&ours).unwrap()).unwrap(), b"hello");
        assert_ne!(seal(&pk, "hello").unwrap(), ours, "a fresh ephemeral key each time");
        assert!(seal("not base64!", "x").is_err());
    }

    #[test]
    fn rate_limits_are_waits_even_as_403() {
        let mut primary = HeaderMap::new();
        primary.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        primary.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 5).to_string()).unwrap(),
        );
        let e = github_error("PUT secret", StatusCode::FORBIDDEN, &primary, r#"{"message":"API rate limit exceeded"}"#, true);
        assert!(e.is_retryable() && !e.may_have_applied(), "{e}");
        assert_eq!(e.code(), "rate_limit_exceeded");
        assert!(e.retry_after().unwrap() <= Duration::from_secs(5));
        let mut secondary = HeaderMap::new();
        secondary.insert("retry-after", HeaderValue::from_static("2"));
        let e = github_error("PUT secret", StatusCode::TOO_MANY_REQUESTS, &secondary, r#"{"message":"You have exceeded a secondary rate limit"}"#, true);
        assert_eq!((e.code(), e.retry_after()), ("secondary_rate_limit".to_string(), Some(Duration::from_secs(2))));
        let e = github_error(
            "PUT secret",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            r#"{"message":"Resource not accessible by personal access token"}"#,
            true,
        );
        assert!(!e.is_retryable() && e.operator_fixable(), "a plain 403 is a permission problem");
        assert_eq!(e.code(), "forbidden");
    }

    #[test]
    fn config_is_validated() {
        let t = |s: &str| s.parse::<toml::Table>().unwrap();
        let ok = r#"owner = "acme"
repo = "mailer"
token = { env = "KEYTURN_GH" }"#;
        assert!((TARGET.parse)(t(ok)).is_ok());
        assert!((TARGET.parse)(t(&format!("{ok}\nenvironment = \"prod\""))).is_ok());
        assert!((TARGET.parse)(t("org = \"acme\"\nvisibility = \"all\"\ntoken = { env = \"KEYTURN_GH\" }")).is_ok());
        assert_eq!((TARGET.parse)(t("token = { env = \"KEYTURN_GH\" }")).unwrap_err().key.as_deref(), Some("repo"));
        assert_eq!((TARGET.parse)(t(&format!("{ok}\nvisibility = \"all\""))).unwrap_err().key.as_deref(), Some("visibility"));
        assert_eq!((TARGET.parse)(t(&format!("{ok}\naccess_key_id_secret = \"GITHUB_KEY\""))).unwrap_err().key.as_deref(), Some("access_key_id_secret"));
        assert_eq!((TARGET.parse)(t(&format!("{ok}\ntoken2 = 1"))).unwrap_err().key.as_deref(), Some("token2"));
    }
}
