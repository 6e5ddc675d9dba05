//! Resolving secret references from the configuration.
//!
//! A [`SecretRef`] names where a secret lives; this module fetches it when a
//! connector first needs it. Values are wrapped in [`SecretString`] at once
//! and errors name the reference, never the value.

use secrecy::SecretString;

use crate::config::SecretRef;
use crate::error::{aws, Error, Result};

#[derive(Clone, Debug)]
pub struct SecretResolver {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretResolver {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> SecretResolver {
        SecretResolver { client }
    }

    pub async fn resolve(&self, r: &SecretRef) -> Result<SecretString> {
        match r {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(Error::Config(format!("environment variable {var} (a secret reference) is not set"))),
            },
            SecretRef::SecretsManager { secret_id, json_key } => {
                let out = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| aws("secretsmanager", "GetSecretValue", e))?;
                let raw = out.secret_string.ok_or_else(|| Error::Config(format!("secret {secret_id} has no string value")))?;
                match json_key {
                    None => Ok(SecretString::from(raw)),
                    Some(key) => {
                        let v: serde_json::Value = serde_json::from_str(&raw)
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
