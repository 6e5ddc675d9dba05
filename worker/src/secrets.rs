//! Resolving secret references from the configuration.
//!
//! A [`SecretRef`] names where a secret lives; this module fetches it when a
//! connector first needs it. Values are wrapped in [`SecretString`] at once
//! and errors name the reference, never the value.
//!
//! Why a cache: connectors read their API credentials (an Auth0 client
//! secret, an Entra client secret, a GitHub token) each time they need a
//! new access token, and many rotations share one of them. Reading it from
//! Secrets Manager every time costs a call per rotation (and Secrets
//! Manager bills per call), so a value read is kept in memory, zeroed on
//! drop, for [`CACHE_FOR`]; the cache is one per process, shared by every
//! connector built from the same configuration. A value that has just been
//! changed in Secrets Manager is seen within that time, or at once by a
//! connector whose API refused the cached value: it calls [`SecretResolver::forget`]
//! and reads again (see `auth0.rs`, `entra.rs`). A rotation that writes a
//! Secrets Manager secret drops keyturn's copy of it at once
//! ([`SecretResolver::forget_id`]): keyturn's own client secret, rotated into
//! the secret keyturn reads it from, is used from the next sign-in on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{aws, Error, Result};

/// Where a secret lives. Exactly one of the forms:
/// `{ env = "KEYTURN_AUTH0_CLIENT_SECRET" }` or `{ secrets_manager = "arn-or-name" }`
/// (optionally with `json_key = "field"` for a JSON secret). An environment
/// variable's name must start with [`ENV_PREFIX`]: a configuration (which
/// may come from an SSM parameter others can write) cannot name the
/// process's own credentials (`AWS_SECRET_ACCESS_KEY`, in Lambda the
/// function's key) and have them sent to an outside service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSecretRef")]
pub enum SecretRef {
    Env(String),
    SecretsManager { secret_id: String, json_key: Option<String> },
}

/// The prefix every `{ env = "…" }` secret reference must carry.
pub const ENV_PREFIX: &str = "KEYTURN_";

/// Whether `name` is an environment variable a secret reference may name:
/// [`ENV_PREFIX`] then upper-case letters, digits and `_`.
pub fn is_secret_env_name(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX).is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecretRef {
    // Held only to be refused; never printed.
    Inline(#[allow(dead_code)] String),
    Table { env: Option<String>, secrets_manager: Option<String>, json_key: Option<String> },
}

impl TryFrom<RawSecretRef> for SecretRef {
    type Error = String;
    fn try_from(raw: RawSecretRef) -> Result<Self, String> {
        match raw {
            RawSecretRef::Inline(_) => Err("client_secret: inline secrets are not allowed; write client_secret = { env = \"KEYTURN_VAR\" } or client_secret = { secrets_manager = \"secret id or ARN\" }".into()),
            RawSecretRef::Table { env: Some(v), secrets_manager: None, json_key: None } if !v.is_empty() => {
                if is_secret_env_name(&v) {
                    Ok(SecretRef::Env(v))
                } else {
                    Err(format!(
                        "client_secret: an `env` reference must name a variable starting with {ENV_PREFIX} (upper-case letters, digits, _), e.g. {ENV_PREFIX}AUTH0_CLIENT_SECRET; {:?} is refused so a configuration cannot send the process's own credentials elsewhere",
                        v.chars().take(64).collect::<String>()
                    ))
                }
            }
            RawSecretRef::Table { env: None, secrets_manager: Some(id), json_key } if !id.is_empty() => {
                Ok(SecretRef::SecretsManager { secret_id: id, json_key })
            }
            _ => Err("client_secret: a secret reference needs exactly one of `env` or `secrets_manager` (and `json_key` only with `secrets_manager`)".into()),
        }
    }
}

/// How long a value read from Secrets Manager is used without reading it
/// again.
pub const CACHE_FOR: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct SecretResolver {
    client: aws_sdk_secretsmanager::Client,
    /// Secret id → (raw value, when read).
    cache: Arc<Mutex<HashMap<String, (SecretString, Instant)>>>,
    /// Held while reading: many tasks missing the cache at once (a burst
    /// of rotations) make one call, not one each.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl SecretResolver {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> SecretResolver {
        SecretResolver { client, cache: Arc::default(), reading: Arc::default() }
    }

    /// Drop a cached value, so the next [`SecretResolver::resolve`] reads
    /// it again (its consumer refused it: it may have been changed).
    /// Returns whether a cached value was dropped.
    pub fn forget(&self, r: &SecretRef) -> bool {
        match r {
            SecretRef::Env(_) => false,
            SecretRef::SecretsManager { secret_id, .. } => self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(secret_id).is_some(),
        }
    }

    /// Drop the cached value of Secrets Manager secret `secret_id` (as a
    /// reference names it), e.g. after keyturn wrote a new version of it.
    pub fn forget_id(&self, secret_id: &str) -> bool {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(secret_id).is_some()
    }

    /// Run `use_it` with the secret `r` names. If the value came from the
    /// cache and its consumer refused it (HTTP 400, 401 or 403: a changed
    /// client secret is refused with one of these), read it again and run
    /// `use_it` once more with the fresh value.
    pub async fn with<T, F, Fut>(&self, r: &SecretRef, use_it: F) -> Result<T>
    where
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let cached = self.cached(r);
        match use_it(self.resolve(r).await?).await {
            Err(Error::Http { status: 400 | 401 | 403, .. }) if cached && self.forget(r) => use_it(self.resolve(r).await?).await,
            other => other,
        }
    }

    /// The value read now, not from the cache (and cached for the others).
    pub async fn resolve_fresh(&self, r: &SecretRef) -> Result<SecretString> {
        self.forget(r);
        self.resolve(r).await
    }

    /// Whether `r` would be answered from the cache now.
    fn cached(&self, r: &SecretRef) -> bool {
        match r {
            SecretRef::Env(_) => false,
            SecretRef::SecretsManager { secret_id, .. } => {
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(secret_id).is_some_and(|(_, at)| at.elapsed() < CACHE_FOR)
            }
        }
    }

    /// The raw value of a Secrets Manager secret: cached, or read.
    async fn raw(&self, secret_id: &str) -> Result<SecretString> {
        let cached = || {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(secret_id).filter(|(_, at)| at.elapsed() < CACHE_FOR).map(|(v, _)| SecretString::from(v.expose_secret().to_owned()))
        };
        if let Some(v) = cached() {
            return Ok(v);
        }
        let _reading = self.reading.lock().await;
        // Another task may have read it while this one waited.
        if let Some(v) = cached() {
            return Ok(v);
        }
        let out = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| aws("secretsmanager", "GetSecretValue", e))?;
        let raw = out.secret_string.ok_or_else(|| Error::Config(format!("secret {secret_id} has no string value")))?;
        let raw = SecretString::from(raw);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(secret_id.to_string(), (SecretString::from(raw.expose_secret().to_owned()), Instant::now()));
        Ok(raw)
    }

    pub async fn resolve(&self, r: &SecretRef) -> Result<SecretString> {
        match r {
            SecretRef::Env(var) if !is_secret_env_name(var) => {
                Err(Error::Config(format!("environment variable {var} may not be a secret reference (names start with {})", ENV_PREFIX)))
            }
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(Error::Config(format!("environment variable {var} (a secret reference) is not set"))),
            },
            SecretRef::SecretsManager { secret_id, json_key } => {
                let raw = self.raw(secret_id).await?;
                let raw = raw.expose_secret();
                match json_key {
                    None => Ok(SecretString::from(raw)),
                    Some(key) => {
                        let v: serde_json::Value = serde_json::from_str(raw)
                            .map_err(|_| Error::Config(format!("secret {secret_id} is not a JSON object (json_key = {key:?} was given)")))?;
                        v.get(key)
                            .and_then(|x| x.as_str())
                            .map(|x| SecretString::from(x.to_string()))
                            .ok_or_else(|| Error::Config(format!("secret {secret_id} has no string field {key:?}")))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_env_names() {
        assert!(is_secret_env_name("KEYTURN_AUTH0_CLIENT_SECRET"));
        for bad in ["AWS_SECRET_ACCESS_KEY", "KEYTURN_", "KEYTURN_a", "X", "keyturn_X", "KEYTURN_A-B"] {
            assert!(!is_secret_env_name(bad), "{bad}");
        }
    }
}
