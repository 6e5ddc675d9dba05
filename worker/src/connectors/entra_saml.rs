//! Credential source: the SAML signing certificate of an Entra enterprise
//! application (the AWS IAM Identity Center app), through Microsoft Graph.
//!
//! keyturn makes the certificate, but only a person can make IAM Identity
//! Center trust it (no API is known for its identity source's IdP
//! certificate: Settings → Identity source → Actions → Manage
//! authentication). So this source gives the saga the *trust* shape
//! ([`crate::saga::Trust`]): issue → a person gives IAM Identity Center the
//! new certificate → switch Entra to sign with it → a person checks sign-in
//! → remove the old certificate.
//!
//! Graph facts this leans on (Microsoft Graph v1.0 reference):
//! * `POST /servicePrincipals/{id}/addTokenSigningCertificate`
//!   `{displayName: "CN=…", endDateTime}` → 200 `selfSignedCertificate`
//!   (`thumbprint`, `key`: the public certificate, base64 DER, …); it adds
//!   two keyCredentials (usage `Sign` and `Verify`) and one
//!   passwordCredential sharing one `customKeyIdentifier`
//!   (learn.microsoft.com/graph/api/serviceprincipal-addtokensigningcertificate);
//! * Entra signs with the certificate named by the service principal's
//!   `preferredTokenSigningKeyThumbprint` (PATCH the servicePrincipal);
//! * `GET /servicePrincipals/{id}?$select=…keyCredentials…` returns each
//!   credential's `key` (public part only) for a single object;
//! * removal: PATCH `keyCredentials` without the certificate's entries
//!   ("Update servicePrincipal … can continue to be used to add and update
//!   key credentials", learn.microsoft.com/graph/api/serviceprincipal-removekey),
//!   then `POST …/removePassword {keyId}` for its passwordCredential
//!   (PATCH of passwordCredentials is refused by Graph).
//!
//! A certificate's id is its thumbprint: the SHA-1 of its DER bytes, in
//! upper-case hex, as `preferredTokenSigningKeyThumbprint` writes it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::entra::{graph_error, graph_token};
use super::http::Api;
use super::token::TokenCache;
use super::{BoxFut, BuildContext, ConfigProblem, CredentialSource, NewCredential, RetryPolicy, SourceEntry, SourceSpec, Subject, TrustSteps};
use crate::clock::{fmt_ms, Dur, Millis};
use crate::error::{Error, Result};
use crate::preflight::{Check, Findings};
use crate::saga::{KeyRef, Saga, Status, Step};
use crate::secrets::{SecretRef, SecretResolver};

const SERVICE: &str = "graph";
/// What Entra allows: a token signing certificate lives at most 3 years.
const MAX_LIFETIME: Duration = Duration::from_secs(3 * 365 * 86_400);

/// `source = { kind = "entra_saml_certificate", … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlCertConfig {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// App registration keyturn signs in with (client credentials).
    pub client_id: String,
    /// Its client secret, by reference.
    pub client_secret: SecretRef,
    /// Object id of the enterprise application's service principal
    /// (or give `app_id` instead).
    pub service_principal_id: Option<String>,
    /// Application (client) id of the enterprise application (instead of
    /// `service_principal_id`).
    pub app_id: Option<String>,
    /// The new certificate's subject, `CN=…`.
    pub certificate_name: String,
    /// How long a new certificate lives (default and most: 3 years, `1095d`).
    pub certificate_lifetime: Option<Dur>,
    /// Region of the IAM Identity Center instance (console links).
    pub region: String,
    /// Override of `https://login.microsoftonline.com` (tests, sovereign clouds).
    pub login_base_url: Option<String>,
    /// Override of `https://graph.microsoft.com` (tests, sovereign clouds).
    pub graph_base_url: Option<String>,
}

/// The registry entry.
pub const SOURCE: SourceEntry = SourceEntry {
    kind: "entra_saml_certificate",
    credential_type: "saml_signing_certificate",
    subjects: &[],
    exposure: None,
    parse: |t| {
        let c: SamlCertConfig = super::from_table(t)?;
        check(&c)?;
        Ok(Arc::new(c))
    },
};

fn check(c: &SamlCertConfig) -> std::result::Result<(), ConfigProblem> {
    match (&c.service_principal_id, &c.app_id) {
        (Some(_), Some(_)) | (None, None) => return Err(ConfigProblem::at("service_principal_id", "give exactly one of service_principal_id and app_id")),
        _ => {}
    }
    for (key, v) in [
        ("tenant_id", Some(&c.tenant_id)),
        ("client_id", Some(&c.client_id)),
        ("service_principal_id", c.service_principal_id.as_ref()),
        ("app_id", c.app_id.as_ref()),
    ] {
        if let Some(v) = v {
            super::check::check_id(v).map_err(|m| ConfigProblem::at(key, m))?;
        }
    }
    let name = c.certificate_name.strip_prefix("CN=").unwrap_or("");
    if name.trim().is_empty() || c.certificate_name.len() > 256 || c.certificate_name.chars().any(char::is_control) {
        return Err(ConfigProblem::at("certificate_name", "must start with CN= and name the certificate (Graph refuses any other display name)"));
    }
    if let Some(l) = c.certificate_lifetime {
        if l.0 < Duration::from_secs(86_400) || l.0 > MAX_LIFETIME {
            return Err(ConfigProblem::at("certificate_lifetime", "must be between 1d and 1095d (Entra makes them for at most 3 years)"));
        }
    }
    super::check::check_region(&c.region).map_err(|m| ConfigProblem::at("region", m))?;
    for (key, u) in [("login_base_url", &c.login_base_url), ("graph_base_url", &c.graph_base_url)] {
        if let Some(u) = u {
            super::check::check_base_url(u).map_err(|m| ConfigProblem::at(key, m))?;
        }
    }
    Ok(())
}

impl SamlCertConfig {
    fn principal(&self) -> Principal {
        match (&self.service_principal_id, &self.app_id) {
            (Some(id), _) => Principal::Object(id.clone()),
            (None, Some(app)) => Principal::App(app.clone()),
            (None, None) => Principal::Object(String::new()),
        }
    }
}

impl SourceSpec for SamlCertConfig {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn credential_type(&self) -> &'static str {
        SOURCE.credential_type
    }
    fn credential_key(&self) -> String {
        let who = self.service_principal_id.as_deref().or(self.app_id.as_deref()).unwrap_or("");
        format!("{}:{}:{who}", SOURCE.kind, self.tenant_id)
    }
    fn covers(&self, _subject: &Subject<'_>) -> bool {
        false
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn CredentialSource> {
        let s = Settings {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            principal: self.principal(),
            certificate_name: self.certificate_name.clone(),
            lifetime: self.certificate_lifetime.map(|d| d.0).unwrap_or(MAX_LIFETIME),
            region: self.region.clone(),
            login_base_url: self.login_base_url.clone().unwrap_or_else(|| "https://login.microsoftonline.com".into()),
            graph_base_url: self.graph_base_url.clone().unwrap_or_else(|| "https://graph.microsoft.com".into()),
            http: ctx.http.clone(),
            clock: ctx.clock.clone(),
            secrets: ctx.secrets.clone(),
            retry: RetryPolicy::default(),
        };
        let api = Api { service: SERVICE, http: s.http.clone(), retry: s.retry, map_error: graph_error, headers: Vec::new() };
        // Making a certificate is not idempotent: no in-process retry. A
        // failed attempt goes back to the saga, whose next attempt records
        // its intent and removes what the failed one may have made.
        let once = RetryPolicy { attempts: 1, ..s.retry };
        let issue_api = Api { service: SERVICE, http: s.http.clone(), retry: once, map_error: graph_error, headers: Vec::new() };
        Arc::new(SamlCertificate { token: TokenCache::new(s.clock.clone()), s, api, issue_api })
    }
}

/// How the service principal is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `servicePrincipals/{object id}`.
    Object(String),
    /// `servicePrincipals(appId='{app id}')`.
    App(String),
}

impl Principal {
    /// The URL path segment(s) after `v1.0`.
    pub fn segment(&self) -> String {
        match self {
            Principal::Object(id) => id.clone(),
            Principal::App(app) => format!("servicePrincipals(appId='{app}')"),
        }
    }
}

/// A Graph v1.0 URL of the service principal (and an action under it),
/// built by the URL parser.
pub fn graph_url(base: &str, principal: &Principal, action: Option<&str>, query: Option<&str>) -> Result<reqwest::Url> {
    let seg = principal.segment();
    let mut all = match principal {
        Principal::Object(_) => vec!["v1.0", "servicePrincipals", seg.as_str()],
        Principal::App(_) => vec!["v1.0", seg.as_str()],
    };
    all.extend(action);
    super::http::endpoint(&super::http::base(base)?, &all, query)
}

struct Settings {
    tenant_id: String,
    client_id: String,
    client_secret: SecretRef,
    principal: Principal,
    certificate_name: String,
    lifetime: Duration,
    region: String,
    login_base_url: String,
    graph_base_url: String,
    http: reqwest::Client,
    clock: crate::clock::SharedClock,
    secrets: SecretResolver,
    retry: RetryPolicy,
}

pub struct SamlCertificate {
    s: Settings,
    token: TokenCache,
    api: Api,
    /// The same, without in-process retries (`addTokenSigningCertificate`).
    issue_api: Api,
}

/// One certificate on the service principal, from its `Verify` keyCredential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub thumbprint: String,
    /// Shared by the certificate's keyCredentials and passwordCredential.
    pub custom_key_identifier: String,
    /// Base64 DER of the public certificate, when Graph returned it.
    pub key: Option<String>,
    pub start: Option<Millis>,
    pub end: Option<Millis>,
}

/// The SHA-1 thumbprint (upper-case hex) of a base64 DER certificate.
pub fn thumbprint_of(key_b64: &str) -> Option<String> {
    let der = aws_smithy_types::base64::decode(key_b64).ok()?;
    Some(Sha1::digest(&der).iter().map(|b| format!("{b:02X}")).collect())
}

fn time_of(v: &Value) -> Option<Millis> {
    let t = v.as_str()?;
    let d = aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime).ok()?;
    d.to_millis().ok().and_then(|m| u64::try_from(m).ok())
}

/// The certificates of a service principal read with
/// `$select=keyCredentials,…`: one per `Verify` X.509 keyCredential; the
/// thumbprint from its public `key` (or, without one, its
/// `customKeyIdentifier`, which Entra sets to the thumbprint's bytes).
pub fn certificates(sp: &Value) -> Vec<Cert> {
    let creds = sp["keyCredentials"].as_array().cloned().unwrap_or_default();
    creds
        .iter()
        .filter(|k| k["usage"] == "Verify" && k["type"] == "AsymmetricX509Cert")
        .filter_map(|k| {
            let cki = k["customKeyIdentifier"].as_str().unwrap_or("").to_string();
            let key = k["key"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            let thumbprint = match &key {
                Some(b64) => thumbprint_of(b64)?,
                None => aws_smithy_types::base64::decode(&cki).ok()?.iter().map(|b| format!("{b:02X}")).collect(),
            };
            Some(Cert { thumbprint, custom_key_identifier: cki, key, start: time_of(&k["startDateTime"]), end: time_of(&k["endDateTime"]) })
        })
        .collect()
}

/// `-----BEGIN CERTIFICATE-----` text of a base64 DER certificate, 64 per line.
pub fn pem(key_b64: &str) -> String {
    let body: Vec<String> = key_b64.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", body.join("\n"))
}

impl SamlCertificate {
    fn graph(&self, action: Option<&str>, query: Option<&str>) -> Result<reqwest::Url> {
        graph_url(&self.s.graph_base_url, &self.s.principal, action, query)
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration)> {
        let s = &self.s;
        s.secrets
            .with(&s.client_secret, |secret| async move {
                graph_token(&self.api, &s.login_base_url, &s.graph_base_url, &s.tenant_id, &s.client_id, &secret).await
            })
            .await
    }

    async fn call(&self, method: Method, url: Result<reqwest::Url>, operation: &'static str, body: Option<Value>) -> Result<Value> {
        self.api.call(&self.token, || self.fetch_token(), method, &url?, operation, body.as_ref()).await
    }

    /// The service principal's app id, certificates and preferred thumbprint.
    async fn read(&self) -> Result<Value> {
        let q = "$select=appId,keyCredentials,passwordCredentials,preferredTokenSigningKeyThumbprint";
        self.call(Method::GET, self.graph(None, Some(q)), "GET servicePrincipal", None).await
    }

    fn preferred(sp: &Value) -> Option<String> {
        sp["preferredTokenSigningKeyThumbprint"].as_str().filter(|t| !t.is_empty()).map(str::to_ascii_uppercase)
    }

    async fn inventory_impl(&self) -> Result<Vec<KeyRef>> {
        let sp = self.read().await?;
        let preferred = Self::preferred(&sp);
        Ok(certificates(&sp)
            .into_iter()
            .map(|c| KeyRef { active: preferred.as_deref() == Some(c.thumbprint.as_str()), id: c.thumbprint, created_at: c.start })
            .collect())
    }

    async fn issue_impl(&self, keep: &[String], earlier: &[Millis]) -> Result<NewCredential> {
        if !earlier.is_empty() {
            // An earlier attempt may have made a certificate it never recorded.
            let keys = self.inventory_impl().await?;
            let t = crate::saga::triage_keys(&keys, keep, earlier);
            if !t.strangers.is_empty() {
                return Err(Error::Refused {
                    code: crate::saga::UNKNOWN_KEY,
                    message: crate::saga::unknown_key_message("the service principal", &t.strangers, keep),
                });
            }
            for orphan in &t.orphans {
                tracing::warn!(thumbprint = %orphan, "removing the certificate an earlier attempt made but never recorded");
                self.remove(orphan).await?;
            }
        }
        let end = self.s.clock.now_ms().saturating_add(self.s.lifetime.as_millis() as u64);
        let body = json!({"displayName": self.s.certificate_name, "endDateTime": fmt_ms(end)});
        let url = self.graph(Some("addTokenSigningCertificate"), None)?;
        let began = self.s.clock.now_ms();
        let c = match self.issue_api.call(&self.token, || self.fetch_token(), Method::POST, &url, "POST addTokenSigningCertificate", Some(&body)).await {
            Ok(c) => c,
            Err(e) if e.may_have_applied() => {
                // The answer was lost: remove what this call may have made
                // now, as the next attempt would (the saga may not retry).
                if let Ok(keys) = self.inventory_impl().await {
                    for orphan in crate::saga::triage_keys(&keys, keep, &[began]).orphans {
                        tracing::warn!(thumbprint = %orphan, "removing the certificate a call whose answer was lost made");
                        if let Err(r) = self.remove(&orphan).await {
                            tracing::warn!(error = %r, "could not remove it now; the next attempt will");
                        }
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let key = c["key"].as_str().unwrap_or("").to_string();
        let thumbprint = c["thumbprint"].as_str().map(str::to_ascii_uppercase).or_else(|| thumbprint_of(&key)).ok_or_else(|| Error::Http {
            service: SERVICE,
            operation: "POST addTokenSigningCertificate",
            status: 200,
            code: "NoThumbprint".into(),
            message: "the answer named no certificate".into(),
            retry_after: None,
            may_have_applied: true,
        })?;
        // Public: the person needs it. Sealed like any new credential all the same.
        Ok(NewCredential { id: thumbprint, secret: SecretString::from(key) })
    }

    /// Make Entra sign with `thumbprint`, then read it back.
    async fn switch_impl(&self, thumbprint: &str) -> Result<()> {
        let body = json!({"preferredTokenSigningKeyThumbprint": thumbprint});
        self.call(Method::PATCH, self.graph(None, None), "PATCH preferredTokenSigningKeyThumbprint", Some(body)).await?;
        let sp = self.read().await?;
        match Self::preferred(&sp) {
            Some(p) if p.eq_ignore_ascii_case(thumbprint) => Ok(()),
            other => Err(Error::NotYet {
                code: "SigningCertificateNotSwitched",
                message: format!("Entra answered the switch to {thumbprint}, but reads back {}", other.as_deref().unwrap_or("no preferred certificate")),
            }),
        }
    }

    /// Remove a certificate: its passwordCredential (`removePassword`), then
    /// its keyCredentials (PATCH without them). Gone already is success;
    /// the certificate Entra signs with is never removed.
    async fn remove(&self, thumbprint: &str) -> Result<()> {
        let sp = self.read().await?;
        if Self::preferred(&sp).as_deref().is_some_and(|p| p.eq_ignore_ascii_case(thumbprint)) {
            return Err(Error::Refused {
                code: "CertificateInUse",
                message: format!("Entra signs with certificate {thumbprint}; keyturn does not remove the certificate in use"),
            });
        }
        let Some(cert) = certificates(&sp).into_iter().find(|c| c.thumbprint.eq_ignore_ascii_case(thumbprint)) else { return Ok(()) };
        let cki = cert.custom_key_identifier;
        // The passwordCredential first, the keyCredentials last: the
        // `Verify` entry is what finds the certificate again, so a removal
        // cut short (an answer lost, a crash) is completed by the next one.
        let passwords = sp["passwordCredentials"].as_array().cloned().unwrap_or_default();
        for p in passwords.iter().filter(|p| p["customKeyIdentifier"].as_str() == Some(cki.as_str())) {
            let Some(key_id) = p["keyId"].as_str() else { continue };
            match self.call(Method::POST, self.graph(Some("removePassword"), None), "POST removePassword", Some(json!({"keyId": key_id}))).await {
                // Gone already (an earlier call's answer was lost): done.
                Err(Error::Http { status: 404, .. }) => {}
                other => {
                    other?;
                }
            }
        }
        let keys = sp["keyCredentials"].as_array().cloned().unwrap_or_default();
        let keep: Vec<Value> = keys.iter().filter(|k| k["customKeyIdentifier"].as_str() != Some(cki.as_str())).cloned().collect();
        if keep.len() != keys.len() {
            self.call(Method::PATCH, self.graph(None, None), "PATCH keyCredentials", Some(json!({"keyCredentials": keep}))).await?;
        }
        Ok(())
    }

    async fn trust_steps_impl(&self, step: Step, new: &str, old: Option<&str>) -> Result<TrustSteps> {
        let sp = self.read().await?;
        let app_id = sp["appId"].as_str().unwrap_or("<application id>").to_string();
        let certs = certificates(&sp);
        let cert = certs.iter().find(|c| c.thumbprint.eq_ignore_ascii_case(new));
        let old = old.unwrap_or("(none)");
        let entra = "Microsoft Entra admin center: Enterprise applications > the AWS IAM Identity Center application > Single sign-on > SAML Certificates";
        let console = format!("https://{0}.console.aws.amazon.com/singlesignon/home?region={0}#/instances/settings", self.s.region);
        let metadata = format!("https://login.microsoftonline.com/{}/federationmetadata/2007-06/federationmetadata.xml?appid={app_id}", self.s.tenant_id);
        if step == Step::AwaitTrust {
            let pem = match cert.and_then(|c| c.key.as_deref()) {
                Some(k) => pem(k),
                None => format!("(Graph did not return it: download it in the {entra}, thumbprint {new})"),
            };
            let expires = cert.and_then(|c| c.end).map(fmt_ms).unwrap_or_else(|| "unknown".into());
            return Ok(TrustSteps {
                noun: "SAML signing certificate",
                title: "give IAM Identity Center the new SAML signing certificate".into(),
                steps: vec![
                    format!("keyturn made a new SAML signing certificate in Entra: thumbprint {new}, expires {expires}. Entra still signs with the old certificate {old}."),
                    format!("Save the new certificate below as a file (e.g. entra-saml-new.pem), or download it from the {entra} (the inactive certificate with thumbprint {new}, Certificate (Base64)):\n{pem}"),
                    format!("The app's federation metadata is at {metadata}; it describes the certificate Entra signs with, which is still the old one until keyturn switches, so give IAM Identity Center the certificate file, not the metadata."),
                    format!("Open the IAM Identity Center console: {console}. On the Identity source tab choose Actions > Manage authentication; under Identity provider metadata choose Edit, keep the IdP sign-in URL and IdP issuer URL as they are, upload the new certificate file as the IdP certificate, and save."),
                    "IAM Identity Center may then trust only the new certificate, while Entra still signs with the old one: sign-in to AWS may fail until keyturn switches Entra, which it does as soon as you confirm. So confirm right after saving.".into(),
                ],
                deadline: format!("keyturn removes the new certificate and Entra keeps signing with the old one ({old}); if you uploaded the new one to IAM Identity Center by then, upload the old one there again"),
            });
        }
        Ok(TrustSteps {
            noun: "SAML signing certificate",
            title: "check that sign-in to AWS works with the new SAML signing certificate".into(),
            steps: vec![
                format!("Entra now signs with the new certificate {new}; IAM Identity Center trusts it as you confirmed."),
                "Sign in to the AWS access portal through Entra in a new private browser window (or choose the AWS IAM Identity Center app in My Apps) and open an account.".into(),
                format!("If sign-in fails, keyturn switches Entra back to the old certificate {old}; sign-in then works only where IAM Identity Center trusts {old} (upload it again in Manage authentication, downloaded from the {entra}, if you replaced it)."),
            ],
            deadline: format!("keyturn switches Entra back to the old certificate {old}; sign-in then works only if IAM Identity Center trusts {old}"),
        })
    }
}

impl SamlCertificate {
    /// `keyturn doctor`: a Graph token, and the service principal readable
    /// with a certificate Entra signs with. Changes nothing.
    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        let fix = format!(
            "Entra: App registrations → {} → API permissions → Microsoft Graph → Application permissions → Application.ReadWrite.OwnedBy (and make the app an owner of the enterprise application) or Application.ReadWrite.All; then Grant admin consent",
            self.s.client_id
        );
        match self.read().await {
            Err(e) => f.checks.push(Check::fail(
                "service principal",
                e.to_string(),
                format!("check tenant_id, client_id, the client secret and service_principal_id/app_id; {fix}"),
            )),
            Ok(sp) => {
                let preferred = Self::preferred(&sp);
                let certs = certificates(&sp);
                match certs.iter().find(|c| Some(&c.thumbprint) == preferred.as_ref()) {
                    Some(c) => f.checks.push(Check::ok(
                        "SAML signing certificate",
                        format!(
                            "Entra signs with {} (expires {}); {} certificate(s) on the app",
                            c.thumbprint,
                            c.end.map(fmt_ms).unwrap_or_else(|| "unknown".into()),
                            certs.len()
                        ),
                    )),
                    None => f.checks.push(Check::warn(
                        "SAML signing certificate",
                        "the service principal names no certificate it signs with (preferredTokenSigningKeyThumbprint)",
                        "set up SAML single sign-on for the application in Entra first",
                    )),
                }
            }
        }
        f
    }
}

/// What a person should do after a saga of this source ended, naming the
/// certificate Entra signs with `now` (just read; `None`: unknown).
pub fn advice(saga: &Saga, now: Option<&str>) -> String {
    let t = saga.trust.clone().unwrap_or_default();
    let old = t.old.as_deref().unwrap_or("(none)");
    let new = saga.keys.new_key.as_deref().unwrap_or("(none)");
    let rotate = format!("keyturn rotate {}", saga.rotation_id);
    let signs = match now {
        Some(n) if n == new => format!("Entra signs with the NEW certificate {new}"),
        Some(n) if n == old => format!("Entra signs with the OLD certificate {old}"),
        Some(n) => format!("Entra signs with certificate {n}"),
        None => "keyturn could not read which certificate Entra signs with".to_string(),
    };
    let code = saga.outcome.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("");
    let console = "IAM Identity Center console: Settings > Identity source > Actions > Manage authentication";
    let entra = "Entra admin center: Enterprise applications > the app > Single sign-on > SAML Certificates";
    match (saga.status, code) {
        (Status::Succeeded, _) => format!("None. {signs}, IAM Identity Center trusts it (you confirmed sign-in works), and the old certificate {old} was removed."),
        (_, "TrustNotConfirmed") => format!(
            "{signs}; the unused new certificate {new} was removed. Sign-in to AWS works if IAM Identity Center still trusts {old}. If you did upload {new} there, sign-in is broken now: upload {old} again ({console}; download it from the {entra}). Run `{rotate}` when you are ready."
        ),
        (Status::RolledBack, _) => format!(
            "{signs} again. Sign-in to AWS works only if IAM Identity Center trusts {old}: if you replaced it there with {new}, upload {old} again ({console}; download it from the {entra}). The new certificate {new} stays on the app, unused, so you can switch to it from the Entra console once IAM Identity Center trusts it; remove it there or run `{rotate}` later."
        ),
        (Status::NeedsAttention, _) if saga.outcome.failure.as_ref().is_some_and(|f| f.step == Step::RemoveOld) => format!(
            "{signs}, and you confirmed sign-in works with it. The old certificate {old} could not be removed: remove it in the {entra} (it is not in use)."
        ),
        (_, _) if t.trusted => match now {
            Some(n) if n == new => format!(
                "{signs}: sign-in to AWS works if IAM Identity Center trusts {new}, as you confirmed. To go back to {old} instead: make {old} active in the {entra} and make sure IAM Identity Center trusts {old} ({console})."
            ),
            Some(n) if n == old => format!(
                "{signs}. You confirmed IAM Identity Center trusts the new certificate {new}: if it trusts only {new}, sign-in to AWS is broken until Entra signs with {new} (in the {entra}: choose {new} > Make certificate active) or until IAM Identity Center trusts {old} again ({console})."
            ),
            _ => format!(
                "{signs}. Sign-in to AWS works when Entra signs with the certificate IAM Identity Center trusts: compare the active certificate in the {entra} with the one in the {console} ({new} if you uploaded it, as you confirmed)."
            ),
        },
        (Status::NeedsAttention, _) => format!(
            "{signs}. Sign-in works with the certificate IAM Identity Center trusts: check it in the {console}, and remove the certificate neither uses in the {entra}."
        ),
        _ => format!("{signs}; nothing else changed that needs undoing. Fix the cause above, then run `{rotate}`."),
    }
}

impl CredentialSource for SamlCertificate {
    fn kind(&self) -> &'static str {
        SOURCE.kind
    }
    fn describe(&self) -> String {
        let who = match &self.s.principal {
            Principal::Object(id) => format!("service principal {id}"),
            Principal::App(app) => format!("app {app}"),
        };
        format!("Entra SAML signing certificate of {who} (tenant {})", self.s.tenant_id)
    }
    fn person_trusts(&self) -> bool {
        true
    }
    fn inventory(&self) -> BoxFut<'_, Result<Vec<KeyRef>>> {
        Box::pin(self.inventory_impl())
    }
    fn issue<'a>(&'a self, keep: &'a [String], earlier_intents: &'a [Millis]) -> BoxFut<'a, Result<NewCredential>> {
        Box::pin(self.issue_impl(keep, earlier_intents))
    }
    fn prove<'a>(&'a self, _cred: &'a NewCredential) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn disable<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async {
            Err(Error::Refused {
                code: "NotSupported",
                message: "a SAML signing certificate cannot be deactivated; Entra signs with one preferred certificate".into(),
            })
        })
    }
    fn enable<'a>(&'a self, _id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async {
            Err(Error::Refused {
                code: "NotSupported",
                message: "a SAML signing certificate is not enabled: Entra signs with its preferred certificate (switch)".into(),
            })
        })
    }
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
    fn retire<'a>(&'a self, id: &'a str, _switched_at: Millis) -> BoxFut<'a, Result<()>> {
        Box::pin(self.remove(id))
    }
    fn revoke<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(self.remove(id))
    }
    fn switch<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(self.switch_impl(id))
    }
    fn trust_steps<'a>(&'a self, step: Step, new_id: &'a str, old_id: Option<&'a str>) -> BoxFut<'a, Result<TrustSteps>> {
        Box::pin(self.trust_steps_impl(step, new_id, old_id))
    }
    fn trust_advice(&self, saga: &Saga, in_use_now: Option<&str>) -> Option<String> {
        Some(advice(saga, in_use_now))
    }
    /// When the certificate Entra signs with expires.
    fn expires_at(&self) -> BoxFut<'_, Result<Option<Millis>>> {
        Box::pin(async {
            let sp = self.read().await?;
            let preferred = Self::preferred(&sp);
            Ok(certificates(&sp).into_iter().find(|c| Some(&c.thumbprint) == preferred.as_ref()).and_then(|c| c.end))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn config_checks_the_name_the_lifetime_and_one_principal() {
        let base = r#"kind = "entra_saml_certificate"
tenant_id = "t"
client_id = "c"
client_secret = { env = "KEYTURN_X" }
region = "us-east-1"
"#;
        let ok = super::super::parse_source(table(&format!("{base}service_principal_id = \"sp\"\ncertificate_name = \"CN=AWS\"\n"))).unwrap();
        assert_eq!(ok.credential_key(), "entra_saml_certificate:t:sp");
        let e = super::super::parse_source(table(&format!("{base}service_principal_id = \"sp\"\ncertificate_name = \"AWS\"\n"))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("certificate_name"));
        let e = super::super::parse_source(table(&format!("{base}certificate_name = \"CN=AWS\"\n"))).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service_principal_id"));
        let e = super::super::parse_source(table(&format!("{base}service_principal_id = \"sp\"\napp_id = \"a\"\ncertificate_name = \"CN=AWS\"\n")))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service_principal_id"));
        let e = super::super::parse_source(table(&format!("{base}app_id = \"a\"\ncertificate_name = \"CN=AWS\"\ncertificate_lifetime = \"1096d\"\n")))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("certificate_lifetime"));
        assert!(
            super::super::parse_source(table(&format!("{base}app_id = \"a\"\ncertificate_name = \"CN=AWS\"\ncertificate_lifetime = \"365d\"\n"))).is_ok()
        );
    }

    #[test]
    fn certificates_are_their_verify_entries_with_the_sha1_thumbprint() {
        // "hello" as a stand-in for DER bytes: SHA-1 aaf4c61d….
        let key = aws_smithy_types::base64::encode(b"hello");
        let sp = json!({"keyCredentials": [
            {"customKeyIdentifier": "AQI=", "key": key, "type": "AsymmetricX509Cert", "usage": "Verify", "startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2029-01-01T00:00:00Z"},
            {"customKeyIdentifier": "AQI=", "key": null, "type": "X509CertAndPassword", "usage": "Sign"},
            {"customKeyIdentifier": "AwQ=", "key": null, "type": "AsymmetricX509Cert", "usage": "Verify"}
        ]});
        let certs = certificates(&sp);
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].thumbprint, "AAF4C61DDCC5E8A2DABEDE0F3B482CD9AEA9434D");
        assert_eq!(certs[0].end, Some(1_861_920_000_000));
        assert_eq!(certs[1].thumbprint, "0304", "no key: the customKeyIdentifier's bytes");
        assert!(pem(&"A".repeat(70)).contains(&format!("{}\n{}", "A".repeat(64), "A".repeat(6))));
    }

    #[test]
    fn the_advice_names_the_certificate_entra_signs_with() {
        let mut s = Saga::new("S".into(), "saml".into(), "c".into(), "manual".into(), 0, 1);
        s.trust = Some(crate::saga::Trust { old: Some("OLD".into()), ..Default::default() });
        s.keys.new_key = Some("NEW".into());
        s.status = Status::Compensated;
        s.outcome.failure =
            Some(crate::saga::Failure { step: Step::AwaitTrust, code: "TrustNotConfirmed".into(), message: String::new(), operator_fixable: true });
        let a = advice(&s, Some("OLD"));
        assert!(a.contains("Entra signs with the OLD certificate OLD") && a.contains("upload OLD again"), "{a}");
        s.status = Status::RolledBack;
        s.outcome.failure =
            Some(crate::saga::Failure { step: Step::AwaitSignIn, code: "SignInBroken".into(), message: String::new(), operator_fixable: true });
        let a = advice(&s, Some("OLD"));
        assert!(a.contains("OLD certificate OLD again") && a.contains("trusts OLD"), "{a}");
        // A switch back that failed for good, Entra still on the new one.
        s.status = Status::NeedsAttention;
        s.trust.as_mut().unwrap().trusted = true;
        s.outcome.failure =
            Some(crate::saga::Failure { step: Step::SwitchBack, code: "serviceUnavailable".into(), message: String::new(), operator_fixable: false });
        let a = advice(&s, Some("NEW"));
        assert!(a.contains("Entra signs with the NEW certificate NEW: sign-in to AWS works if IAM Identity Center trusts NEW"), "{a}");
        let a = advice(&s, Some("OLD"));
        assert!(a.contains("broken until Entra signs with NEW"), "{a}");
        s.outcome.failure = Some(crate::saga::Failure { step: Step::RemoveOld, code: "x".into(), message: String::new(), operator_fixable: false });
        assert!(advice(&s, Some("NEW")).contains("OLD could not be removed"));
        s.status = Status::Succeeded;
        s.outcome.failure = None;
        assert!(advice(&s, Some("NEW")).contains("Entra signs with the NEW certificate NEW"));
        assert_eq!(Principal::App("a1".into()).segment(), "servicePrincipals(appId='a1')");
        let by_app = graph_url("https://graph.microsoft.com", &Principal::App("a1-b2".into()), Some("addTokenSigningCertificate"), None).unwrap();
        assert_eq!(by_app.as_str(), "https://graph.microsoft.com/v1.0/servicePrincipals(appId='a1-b2')/addTokenSigningCertificate");
        let by_id = graph_url("https://graph.microsoft.com", &Principal::Object("sp1".into()), None, Some("$select=appId")).unwrap();
        assert_eq!(by_id.as_str(), "https://graph.microsoft.com/v1.0/servicePrincipals/sp1?$select=appId");
    }
}
