//! Target: Auth0's email provider in `smtp` mode on the Amazon SES SMTP
//! endpoint — the same Auth0 tenant as [`super::auth0`], when it sends mail
//! through `email-smtp.<region>.amazonaws.com` instead of the SES API.
//!
//! Facts this leans on:
//! * Auth0 Management API, "Update email provider": `smtp` requires
//!   `smtp_host`, `smtp_port`, `smtp_user` and `smtp_pass` in `credentials`
//!   (auth0.com/docs/api/management/v2/emails/patch-provider). As for `ses`,
//!   the password is write-only; whether `GET` returns `smtp_user` is not
//!   documented, so verification answers `Opaque` without it.
//! * SES SMTP credentials are derived from an IAM key (SES developer guide,
//!   "Obtaining Amazon SES SMTP credentials"): the user name is the access key
//!   id; the password is `base64(0x04 ‖ HMAC-SHA256 chain)` over the secret:
//!   `k = "AWS4" + secret`, then the date `"11111111"`, the region, `"ses"`,
//!   `"aws4_request"` and the message `"SendRawEmail"`. It depends on the
//!   region: a password made for one region does not work in another.
//!
//! The Auth0 client (token cache, retries, `Retry-After`, error mapping) is
//! [`super::auth0`]'s; this module owns only the body, the password and the
//! verification. Both the secret key and the derived password are redacted
//! from any error Auth0 sends back.

use std::sync::Arc;

use hmac::{KeyInit, Mac};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth0::Auth0EmailProvider;
use super::{BoxFut, BuildContext, ConfigProblem, NewCredential, Target, TargetEntry, TargetSpec};
use crate::error::Result;
use crate::saga::Verification;
use crate::secrets::SecretRef;

/// `[rotation.target] kind = "auth0_ses_smtp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0SmtpConfig {
    /// Tenant domain, e.g. `example.eu.auth0.com`.
    pub domain: String,
    /// Override of `https://{domain}` (tests, custom domains).
    pub base_url: Option<String>,
    /// Machine-to-machine application's client id.
    pub client_id: String,
    /// Its client secret, by reference.
    pub client_secret: SecretRef,
    /// The SES region whose SMTP endpoint Auth0 uses (the password is region-specific).
    pub ses_region: String,
    /// SMTP port (587 STARTTLS by default; 465 TLS, 25 and 2587 also exist).
    #[serde(default = "default_port")]
    pub smtp_port: u16,
    /// `default_from_address` to set; left unchanged when absent.
    pub from_address: Option<String>,
}

fn default_port() -> u16 {
    587
}

/// The registry entry.
pub const TARGET: TargetEntry = TargetEntry {
    kind: "auth0_ses_smtp",
    accepts: &["aws_access_key"],
    parse: |t| {
        let c: Auth0SmtpConfig = super::from_table(t)?;
        super::auth0::check_tenant(&c.domain, c.base_url.as_deref(), &c.client_id)?;
        super::check::check_region(&c.ses_region).map_err(|m| ConfigProblem::at("ses_region", m))?;
        if ![25, 465, 587, 2465, 2587].contains(&c.smtp_port) {
            return Err(ConfigProblem::at("smtp_port", "must be one of SES's SMTP ports: 25, 465, 587, 2465, 2587"));
        }
        Ok(Arc::new(c))
    },
};

impl TargetSpec for Auth0SmtpConfig {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn accepts(&self) -> &'static [&'static str] {
        TARGET.accepts
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn Target> {
        let client =
            super::auth0::client(&self.domain, self.base_url.as_deref(), &self.client_id, &self.client_secret, &self.ses_region, &self.from_address, ctx);
        Arc::new(Auth0SesSmtp { client, cfg: self.clone() })
    }
}

/// The SES SMTP password for an IAM secret access key in `region`, as AWS
/// documents it (see the module comment).
pub fn ses_smtp_password(secret_access_key: &SecretString, region: &str) -> SecretString {
    fn sign(key: &[u8], msg: &str) -> Vec<u8> {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(msg.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
    let mut k = sign(format!("AWS4{}", secret_access_key.expose_secret()).as_bytes(), "11111111");
    for part in [region, "ses", "aws4_request", "SendRawEmail"] {
        k = sign(&k, part);
    }
    let mut versioned = Vec::with_capacity(33);
    versioned.push(0x04);
    versioned.extend_from_slice(&k);
    SecretString::from(aws_smithy_types::base64::encode(versioned))
}

pub struct Auth0SesSmtp {
    client: Auth0EmailProvider,
    cfg: Auth0SmtpConfig,
}

impl Auth0SesSmtp {
    fn host(&self) -> String {
        format!("email-smtp.{}.amazonaws.com", self.cfg.ses_region)
    }

    async fn push_impl(&self, cred: &NewCredential) -> Result<()> {
        let password = ses_smtp_password(&cred.secret, &self.cfg.ses_region);
        let mut body = json!({
            "name": "smtp",
            "enabled": true,
            "credentials": {
                "smtp_host": self.host(),
                "smtp_port": self.cfg.smtp_port,
                "smtp_user": cred.id,
                "smtp_pass": password.expose_secret(),
            }
        });
        if let Some(from) = &self.cfg.from_address {
            body["default_from_address"] = json!(from);
        }
        self.client
            .call(Method::PATCH, None, "PATCH /api/v2/emails/provider", Some(body))
            .await
            .map_err(|e| e.redact(cred.secret.expose_secret()).redact(password.expose_secret()))?;
        Ok(())
    }

    async fn verify_impl(&self, new_id: &str, old_ids: &[String]) -> Result<Verification> {
        Ok(judge_smtp(&self.client.read_provider().await?, &self.host(), new_id, old_ids))
    }
}

/// Decide what a `GET /api/v2/emails/provider` answer says about the key.
pub fn judge_smtp(v: &Value, host: &str, new_id: &str, old_ids: &[String]) -> Verification {
    if let Some(h) = v.pointer("/credentials/smtp_host").and_then(Value::as_str) {
        if h != host && v.get("name").and_then(Value::as_str) == Some("smtp") {
            return Verification::Unhealthy(format!("Auth0's SMTP host is {h}, not {host}"));
        }
    }
    super::auth0::judge_held(v, "smtp", "/credentials/smtp_user", new_id, old_ids)
}

impl Target for Auth0SesSmtp {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn doctor(&self) -> BoxFut<'_, crate::preflight::Findings> {
        Box::pin(self.client.doctor_checks(&super::auth0::SCOPES, "keyturn doctor"))
    }
    fn describe(&self) -> String {
        format!("Auth0 {} (SMTP via {})", self.cfg.domain, self.host())
    }
    fn warm(&self) -> BoxFut<'_, ()> {
        Box::pin(self.client.warm_token())
    }
    fn push<'a>(&'a self, cred: &'a NewCredential, _old_ids: &'a [String]) -> BoxFut<'a, Result<()>> {
        Box::pin(self.push_impl(cred))
    }
    fn verify<'a>(&'a self, new_id: &'a str, old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>> {
        Box::pin(self.verify_impl(new_id, old_ids))
    }
    fn advice(&self, code: &str, rotate: &str) -> Option<String> {
        self.client.advice(code, rotate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed with the Python script of the SES developer guide
    /// ("Obtaining Amazon SES SMTP credentials", `calculate_key`) for the
    /// secret key AWS's documentation uses in its examples.
    #[test]
    fn smtp_password_matches_the_documented_algorithm() {
        let secret = SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string());
        for (region, expected) in [
            ("us-east-1", "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"),
            ("eu-west-1", "BMW5RDrXmmVs0lV7GpI4oLkHXpZ4stDsk6q91z1g38Pk"),
            ("ap-southeast-2", "BLNVIwl1Vk66qi8YP1q44PSaqUtaoyrS/0LT79VaGBfa"),
        ] {
            assert_eq!(ses_smtp_password(&secret, region).expose_secret(), expected, "{region}");
        }
    }

    #[test]
    fn provider_judgement() {
        let old = vec!["AKIAOLD".to_string()];
        let host = "email-smtp.eu-west-1.amazonaws.com";
        let v = |user: Option<&str>, h: &str| {
            let mut v = json!({"name": "smtp", "enabled": true, "credentials": {"smtp_host": h, "smtp_port": 587}});
            if let Some(u) = user {
                v["credentials"]["smtp_user"] = json!(u);
            }
            v
        };
        assert_eq!(judge_smtp(&v(Some("AKIANEW"), host), host, "AKIANEW", &old), Verification::HoldsNew);
        assert_eq!(judge_smtp(&v(Some("AKIAOLD"), host), host, "AKIANEW", &old), Verification::HoldsOld);
        assert_eq!(judge_smtp(&v(None, host), host, "AKIANEW", &old), Verification::Opaque);
        assert!(matches!(judge_smtp(&v(Some("AKIANEW"), "smtp.example.com"), host, "AKIANEW", &old), Verification::Unhealthy(_)));
        assert!(matches!(judge_smtp(&json!({"name": "ses", "enabled": true}), host, "AKIANEW", &old), Verification::Unhealthy(_)));
    }
}
