//! Target: an AWS Secrets Manager secret that applications read an access
//! key from.
//!
//! Secrets Manager facts this leans on (AWS API reference, `PutSecretValue`,
//! `GetSecretValue`, "Staging labels"):
//! * `PutSecretValue` without `VersionStages` creates a new version, moves
//!   `AWSCURRENT` to it and `AWSPREVIOUS` to the version that was current:
//!   exactly the labels a reader (`GetSecretValue` with no stage, or an SDK
//!   cache) expects. The previous version stays readable as `AWSPREVIOUS`.
//! * `ClientRequestToken` makes the put idempotent: the same token with the
//!   same value succeeds again without a new version, so a retried or
//!   duplicated push never stacks versions. keyturn derives it from the
//!   saga's new key id.
//! * The secret is a JSON object; keyturn replaces only the two fields that
//!   hold the key id and the secret (names configurable) and keeps every
//!   other field of the current version as it was.
//!
//! * A secret stored as `SecretBinary`, or whose `SecretString` is not a JSON
//!   object, is refused at `start` ([`Target::preflight`]), before a key is
//!   created, and again at the push: it is never overwritten.
//!
//! **Verify** reads `AWSCURRENT` back and compares its key id field with the
//! new and old key ids (the secret value is read into a `SecretString` and
//! never leaves this module). A write whose answer was lost (timeout, 5xx) is
//! reported as possibly applied, so the saga reads back instead of deleting
//! a key an application may already have.
//! **Compensation** never writes the secret: if the push was refused, the
//! previous version simply stays current.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::{BoxFut, BuildContext, ConfigProblem, NewCredential, Target, TargetEntry, TargetSpec};
use crate::error::{aws, Error, Result};
use crate::preflight::{AwsAction, Check, Findings};
use crate::saga::Verification;

/// `[rotation.target] kind = "secrets_manager_secret"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsManagerConfig {
    /// Name or ARN of the secret (it must exist and hold a JSON object).
    pub secret_id: String,
    /// Region of the secret; default: keyturn's own region.
    pub region: Option<String>,
    /// JSON field holding the access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default = "default_id_field")]
    pub access_key_id_field: String,
    /// JSON field holding the secret access key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default = "default_secret_field")]
    pub secret_access_key_field: String,
}

fn default_id_field() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_field() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// The registry entry.
pub const TARGET: TargetEntry = TargetEntry {
    kind: "secrets_manager_secret",
    // An access key, or keyturn's own Auth0 or Entra client secret (its id
    // is keyturn's label for it, the secret the service's): the two fields
    // hold whichever.
    accepts: &["aws_access_key", "auth0_client_secret", "entra_client_secret"],
    parse: |t| {
        let c: SecretsManagerConfig = super::from_table(t)?;
        if c.secret_id.trim().is_empty() || c.secret_id.len() > 2048 {
            return Err(ConfigProblem::at("secret_id", "must be a secret name or ARN"));
        }
        if let Some(r) = &c.region {
            super::check::check_region(r).map_err(|m| ConfigProblem::at("region", m))?;
        }
        if c.access_key_id_field.is_empty() || c.secret_access_key_field.is_empty() || c.access_key_id_field == c.secret_access_key_field {
            return Err(ConfigProblem::at("secret_access_key_field", "the two field names must be set and differ"));
        }
        Ok(Arc::new(c))
    },
};

impl TargetSpec for SecretsManagerConfig {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn accepts(&self) -> &'static [&'static str] {
        TARGET.accepts
    }
    fn writes_secret(&self) -> Option<(&str, &str)> {
        Some((&self.secret_id, &self.secret_access_key_field))
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn Target> {
        let client = match &self.region {
            Some(r) => aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(&ctx.clients.base).region(aws_sdk_secretsmanager::config::Region::new(r.clone())).build(),
            ),
            None => ctx.clients.secrets.clone(),
        };
        Arc::new(SecretsManagerSecret { client, cfg: self.clone(), readers: ctx.secrets.clone() })
    }
}

pub struct SecretsManagerSecret {
    client: aws_sdk_secretsmanager::Client,
    cfg: SecretsManagerConfig,
    /// keyturn's own reader of secret references: a secret keyturn itself
    /// reads (its own client secret) is read again after a write here.
    readers: crate::secrets::SecretResolver,
}

/// The idempotency token of the put for a key: 32–64 characters, the same
/// for every retry of one saga's push.
pub fn request_token(new_key_id: &str) -> String {
    let t = format!("keyturn-{new_key_id}");
    format!("{t:-<32}").chars().take(64).collect()
}

impl SecretsManagerSecret {
    /// The current version's text (secret inside). A secret stored as
    /// `SecretBinary` (no `SecretString`) is refused: writing a JSON object
    /// over it would destroy what its readers expect.
    async fn current(&self) -> Result<SecretString> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.cfg.secret_id)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| aws("secretsmanager", "GetSecretValue", e))?;
        match out.secret_string() {
            Some(text) => Ok(SecretString::from(text.to_string())),
            None => Err(Error::Refused {
                code: "SecretNotJsonObject",
                message: format!(
                    "secret {} is stored as SecretBinary, not as a JSON object in SecretString; keyturn does not overwrite it",
                    self.cfg.secret_id
                ),
            }),
        }
    }

    fn object(&self, text: &SecretString) -> Result<serde_json::Map<String, Value>> {
        match serde_json::from_str::<Value>(text.expose_secret()) {
            Ok(Value::Object(m)) => Ok(m),
            // Never quote the value: it holds a secret.
            _ => Err(Error::Refused {
                code: "SecretNotJsonObject",
                message: format!("secret {} does not hold a JSON object; keyturn writes the key into two of its fields", self.cfg.secret_id),
            }),
        }
    }

    async fn push_impl(&self, cred: &NewCredential) -> Result<()> {
        let mut obj = self.object(&self.current().await?)?;
        obj.insert(self.cfg.access_key_id_field.clone(), Value::String(cred.id.clone()));
        obj.insert(self.cfg.secret_access_key_field.clone(), Value::String(cred.secret.expose_secret().to_string()));
        let body = SecretString::from(Value::Object(obj).to_string());
        let res = self
            .client
            .put_secret_value()
            .secret_id(&self.cfg.secret_id)
            .client_request_token(request_token(&cred.id))
            .secret_string(body.expose_secret())
            .send()
            .await;
        match res {
            Ok(_) => {
                // keyturn may read its own credentials from this secret:
                // its next use reads the value just written.
                self.readers.forget_id(&self.cfg.secret_id);
                Ok(())
            }
            Err(e) => Err(match aws("secretsmanager", "PutSecretValue", e) {
                // No answer, or a 5xx: the new version may exist.
                Error::Aws { code, message, retryable: true, .. } => Error::Transport {
                    service: "secretsmanager",
                    operation: "PutSecretValue",
                    message: format!("{code}: {message}"),
                    may_have_applied: true,
                },
                other => other,
            }
            .redact(cred.secret.expose_secret())),
        }
    }

    async fn verify_impl(&self, new_id: &str, old_ids: &[String]) -> Result<Verification> {
        let obj = self.object(&self.current().await?)?;
        Ok(match obj.get(&self.cfg.access_key_id_field).and_then(Value::as_str) {
            Some(id) if id == new_id => Verification::HoldsNew,
            Some(id) if old_ids.iter().any(|o| o == id) => Verification::HoldsOld,
            Some(id) => Verification::Unhealthy(format!(
                "the current version of secret {} holds access key {id}, which is neither the new nor the old key",
                self.cfg.secret_id
            )),
            None => Verification::Unhealthy(format!("the current version of secret {} has no field {}", self.cfg.secret_id, self.cfg.access_key_id_field)),
        })
    }
}

impl SecretsManagerSecret {
    /// `keyturn doctor`: the secret's current version is readable and holds
    /// a JSON object with the key id field; the worker needs GetSecretValue
    /// and PutSecretValue on it (policy simulation, by its ARN).
    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        let out = match self.client.get_secret_value().secret_id(&self.cfg.secret_id).version_stage("AWSCURRENT").send().await {
            Ok(o) => o,
            Err(e) => {
                let e = aws("secretsmanager", "GetSecretValue", e);
                let fix = self.advice(&e.code(), "keyturn doctor").unwrap_or_else(|| "check target.secret_id and target.region".into());
                f.checks.push(Check::fail("secret", e.to_string(), fix));
                return f;
            }
        };
        let arn = out.arn().unwrap_or(&self.cfg.secret_id).to_string();
        for a in ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"] {
            f.actions.push(AwsAction::new(a, arn.clone()));
        }
        let text = SecretString::from(out.secret_string().unwrap_or("{}").to_string());
        f.checks.push(match self.object(&text) {
            Ok(obj) => match obj.get(&self.cfg.access_key_id_field).and_then(Value::as_str) {
                Some(id) => Check::ok("secret", format!("{arn} readable; holds key {id}")),
                None => Check::warn(
                    "secret",
                    format!("{arn} readable, but has no field {} yet", self.cfg.access_key_id_field),
                    "a first rotation writes it; check target.access_key_id_field if the secret already holds a key",
                ),
            },
            Err(e) => Check::fail("secret", e.to_string(), self.advice(&e.code(), "keyturn doctor").unwrap_or_default()),
        });
        f
    }
}

impl Target for SecretsManagerSecret {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
    fn describe(&self) -> String {
        format!("Secrets Manager secret {}", self.cfg.secret_id)
    }
    /// Refuse a secret keyturn would damage before a key is created.
    fn preflight(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move { self.current().await.and_then(|text| self.object(&text)).map(|_| ()) })
    }
    fn push<'a>(&'a self, cred: &'a NewCredential, _old_ids: &'a [String]) -> BoxFut<'a, Result<()>> {
        Box::pin(self.push_impl(cred))
    }
    fn verify<'a>(&'a self, new_id: &'a str, old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>> {
        Box::pin(self.verify_impl(new_id, old_ids))
    }
    fn advice(&self, code: &str, rotate: &str) -> Option<String> {
        match code {
            "AccessDeniedException" => Some(format!(
                "Allow keyturn's role secretsmanager:GetSecretValue and secretsmanager:PutSecretValue on secret {} (and kms:Decrypt/kms:GenerateDataKey on its KMS key), then run `{rotate}`.",
                self.cfg.secret_id
            )),
            "ResourceNotFoundException" => Some(format!("Create secret {} (a JSON object), or fix target.secret_id, then run `{rotate}`.", self.cfg.secret_id)),
            "SecretNotJsonObject" => Some(format!("Store a JSON object in secret {}; keyturn writes the key id and secret into two of its fields. Then run `{rotate}`.", self.cfg.secret_id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_token_is_stable_and_within_limits() {
        let t = request_token("AKIAABCDEFGHIJKLMNOP");
        assert_eq!(t, request_token("AKIAABCDEFGHIJKLMNOP"));
        assert!((32..=64).contains(&t.len()), "{t}");
        assert_ne!(t, request_token("AKIAABCDEFGHIJKLMNOQ"));
        assert_eq!(request_token("A").len(), 32);
    }

    #[test]
    fn config_is_validated() {
        let t = |s: &str| s.parse::<toml::Table>().unwrap();
        assert!((TARGET.parse)(t(r#"secret_id = "app/key""#)).is_ok());
        assert_eq!((TARGET.parse)(t(r#"secret_id = """#)).unwrap_err().key.as_deref(), Some("secret_id"));
        assert_eq!(
            (TARGET.parse)(t(r#"secret_id = "s"
region = "Ireland""#))
            .unwrap_err()
            .key
            .as_deref(),
            Some("region")
        );
        let same = (TARGET.parse)(t(r#"secret_id = "s"
access_key_id_field = "k"
secret_access_key_field = "k""#));
        assert!(same.is_err());
    }
}
