//! Target: Microsoft Entra ID provisioning (SCIM into IAM Identity Center),
//! through Microsoft Graph.
//!
//! Paired with the [`super::scim::ScimToken`] source (configuration kind
//! `entra_provisioning`): a person hands keyturn the new SCIM token, and this
//! target does what the Entra portal's Test connection and Save buttons do,
//! then checks the job.
//!
//! Graph facts this leans on (Microsoft Graph API reference: synchronization jobs, secrets, validateCredentials):
//! * token: `POST {login}/{tenant}/oauth2/v2.0/token` (form, client
//!   credentials, scope `https://graph.microsoft.com/.default`), cached until a
//!   minute before it expires; errors are 400 `{error, error_description, …}`;
//! * **push** = "Test connection" (`validateCredentials` with the new token:
//!   204 or a failed test), then "Save": read the current synchronization
//!   secrets and write them all back with only `SecretToken` changed (whether
//!   PUT merges is unconfirmed, so every key is resent);
//! * **verify** = read the job: `Quarantine`, or a failed last execution with
//!   a credential error, means the switch did not take; with `restart_wait`,
//!   first restart the job (lifting a quarantine the expiring token caused)
//!   and wait, bounded, for a run that began after the restart;
//! * 429 honours `Retry-After`; 5xx and timeouts retry; 400/401/403 are
//!   permanent and keep Graph's error code and message.

use std::time::{Duration, Instant};

use super::http::Api;
use super::token::TokenCache;

use reqwest::{header::HeaderMap, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use std::sync::Arc;

use serde::Deserialize;

use super::{http_retry, BoxFut, BuildContext, ConfigProblem, NewCredential, RetryPolicy, Target, TargetEntry, TargetSpec};
use crate::clock::Dur;
use crate::error::{Error, Result};
use crate::preflight::{Check, Findings};
use crate::saga::Verification;
use crate::secrets::{SecretRef, SecretResolver};

const SERVICE: &str = "graph";
/// The token scope for the Graph endpoint keyturn is configured with: the
/// resource's origin plus `/.default` — `https://graph.microsoft.com/.default`
/// in the public cloud, `https://graph.microsoft.us/.default` (US Gov L4),
/// `https://dod-graph.microsoft.us/.default` (L5),
/// `https://microsoftgraph.chinacloudapi.cn/.default` (21Vianet).
pub fn graph_scope(graph_base_url: &str) -> String {
    match reqwest::Url::parse(graph_base_url) {
        Ok(u) => format!("{}/.default", u.origin().ascii_serialization()),
        Err(_) => format!("{}/.default", graph_base_url.trim_end_matches('/')),
    }
}

/// A client-credentials token for Graph with `secret`, and its lifetime:
/// `POST {login_base_url}/{tenant_id}/oauth2/v2.0/token` (form, scope
/// [`graph_scope`] of `graph_base_url`) through `api` (its retries, no
/// redirect). Graph's error is kept; the secret never appears in one. The
/// one token request of every Graph connector.
pub(super) async fn graph_token(
    api: &Api,
    login_base_url: &str,
    graph_base_url: &str,
    tenant_id: &str,
    client_id: &str,
    secret: &SecretString,
) -> Result<(SecretString, Duration)> {
    let scope = graph_scope(graph_base_url);
    let url = super::http::endpoint(&super::http::base(login_base_url)?, &[tenant_id, "oauth2", "v2.0", "token"], None)?;
    http_retry(api.retry, || async {
        let form = [("client_id", client_id), ("client_secret", secret.expose_secret()), ("scope", scope.as_str()), ("grant_type", "client_credentials")];
        let (status, headers, text) = api.send("POST token", api.http.post(url.clone()).form(&form), false).await?;
        if !status.is_success() {
            return Err(graph_error("POST token", status, &headers, &text, false));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let t = v["access_token"].as_str().ok_or_else(|| graph_error("POST token", status, &headers, "{}", false))?;
        Ok((SecretString::from(t.to_string()), Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3599))))
    })
    .await
    .map_err(|e| e.redact(secret.expose_secret()))
}

/// How notices word the hand-over of an IAM Identity Center SCIM token
/// into Entra ([`super::HandWords`]).
pub const BY_HAND_WORDS: super::HandWords = super::HandWords {
    succeeded: "None. Entra uses the new token and the old token is deleted.",
    deadline_passed: "No token was handed over in time; nothing changed and Entra still uses the old token. If you generated a token for this rotation, delete it in the IAM Identity Center console. Run `{rotate}` when you are ready.",
    old_not_deleted: "Entra uses the new token. Delete {old} in the IAM Identity Center console (Settings > Identity source > Actions > Manage provisioning > Access tokens); it stays valid until it is deleted or expires. Then nothing else is needed.",
    rejected: "Entra rejected the new token in Test connection, so nothing was saved and Entra still uses the old token. Delete the unused new token ({new}) in the IAM Identity Center console, check that it was copied whole and that the SCIM endpoint in keyturn's configuration is this directory's, then run `{rotate}`.",
    unhealthy: "Entra may hold the new token but provisioning is not healthy. In the Entra admin center open Enterprise applications > AWS IAM Identity Center > Provisioning, read the error shown above, fix it and restart provisioning. Do not delete either token until a provisioning cycle succeeds; then delete {old} and any unused token.",
    failed: "Fix the cause above; nothing was saved in Entra, which still uses the old token. If you generated a token for this rotation, delete it in the IAM Identity Center console, then run `{rotate}`.",
    old_unrecorded: "the token Entra used before this rotation (its creation date was not recorded: it is the older one)",
    new_saved: "saved in Entra",
    target_rejected: "unchanged: Test connection rejected the new token, nothing was saved",
    after_handover: "keyturn then runs Test connection in Entra with the new token, saves it only if the test passes, and checks the provisioning job. You will be told what happened.",
    switched: "Entra now uses the new token: Test connection passed, it was saved{at}, and the provisioning job is healthy.",
    keep_new: "The token to delete is {old}. Do NOT delete {new}: Entra uses it now.",
};

/// The error code Entra reports when the SCIM token is refused.
pub const CREDENTIAL_FAILURE: &str = "SystemForCrossDomainIdentityManagementCredentialValidationFailure";

/// `[rotation.target] kind = "entra_provisioning"`: Microsoft Entra ID
/// provisioning into IAM Identity Center (Graph synchronization API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// App registration keyturn signs in with (client credentials).
    pub client_id: String,
    /// Its client secret, by reference.
    pub client_secret: SecretRef,
    /// Object id of the AWS IAM Identity Center enterprise application's service principal.
    pub service_principal_id: String,
    /// Provisioning job id, e.g. `AWSSingleSignOn.<hex>.<hex>`.
    pub job_id: String,
    /// IAM Identity Center's SCIM endpoint (Entra's "Tenant URL").
    pub scim_endpoint: String,
    /// Override of `https://login.microsoftonline.com` (tests, sovereign clouds).
    pub login_base_url: Option<String>,
    /// Override of `https://graph.microsoft.com` (tests, sovereign clouds).
    pub graph_base_url: Option<String>,
    /// After Save, restart the provisioning job (lifting a quarantine the
    /// expiring token caused) and wait up to `run_timeout` for a run.
    #[serde(default)]
    pub restart_job: bool,
    /// With `restart_job`: how long to wait for the run (default 10m, at most 1h).
    pub run_timeout: Option<Dur>,
}

/// The registry entry.
pub const TARGET: TargetEntry = TargetEntry {
    kind: "entra_provisioning",
    accepts: &["scim_token"],
    parse: |t| {
        let c: EntraConfig = super::from_table(t)?;
        match (c.restart_job, c.run_timeout) {
            (false, Some(_)) => return Err(ConfigProblem::at("run_timeout", "applies only with restart_job = true")),
            (_, Some(t)) if t.0 < Duration::from_secs(1) || t.0 > Duration::from_secs(3600) => {
                return Err(ConfigProblem::at("run_timeout", "must be between 1s and 1h (the run is awaited within one step)"))
            }
            _ => {}
        }
        for (key, v) in
            [("tenant_id", &c.tenant_id), ("client_id", &c.client_id), ("service_principal_id", &c.service_principal_id), ("job_id", &c.job_id)]
        {
            super::check::check_id(v).map_err(|m| ConfigProblem::at(key, m))?;
        }
        super::check::check_base_url(&c.scim_endpoint).map_err(|m| ConfigProblem::at("scim_endpoint", m))?;
        for (key, u) in [("login_base_url", &c.login_base_url), ("graph_base_url", &c.graph_base_url)] {
            if let Some(u) = u {
                super::check::check_base_url(u).map_err(|m| ConfigProblem::at(key, m))?;
            }
        }
        Ok(Arc::new(c))
    },
};

impl TargetSpec for EntraConfig {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn accepts(&self) -> &'static [&'static str] {
        TARGET.accepts
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn Target> {
        Arc::new(EntraProvisioning::new(EntraSettings {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            service_principal_id: self.service_principal_id.clone(),
            job_id: self.job_id.clone(),
            scim_endpoint: self.scim_endpoint.clone(),
            login_base_url: self.login_base_url.clone().unwrap_or_else(|| "https://login.microsoftonline.com".into()),
            graph_base_url: self.graph_base_url.clone().unwrap_or_else(|| "https://graph.microsoft.com".into()),
            http: ctx.http.clone(),
            clock: ctx.clock.clone(),
            secrets: ctx.secrets.clone(),
            retry: RetryPolicy::default(),
            restart_wait: self.restart_job.then(|| self.run_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(600))),
        }))
    }
}

pub struct EntraSettings {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub service_principal_id: String,
    pub job_id: String,
    /// The SCIM endpoint of IAM Identity Center (`BaseAddress`).
    pub scim_endpoint: String,
    /// `https://login.microsoftonline.com` unless overridden (tests).
    pub login_base_url: String,
    /// `https://graph.microsoft.com` unless overridden (tests).
    pub graph_base_url: String,
    pub http: reqwest::Client,
    /// When the Graph token is renewed.
    pub clock: crate::clock::SharedClock,
    pub secrets: SecretResolver,
    pub retry: RetryPolicy,
    /// After Save, restart the job (lifting a quarantine the old token caused)
    /// and wait up to this long for a run to finish; `None`: read the job once.
    pub restart_wait: Option<Duration>,
}

pub struct EntraProvisioning {
    s: EntraSettings,
    token: TokenCache,
    api: Api,
}

impl EntraProvisioning {
    pub fn new(s: EntraSettings) -> Self {
        {
            let api = Api { service: SERVICE, http: s.http.clone(), retry: s.retry, map_error: graph_error, headers: Vec::new() };
            EntraProvisioning { token: TokenCache::new(s.clock.clone()), s, api }
        }
    }

    /// The settings back (tests build variants of one target).
    pub fn into_settings(self) -> EntraSettings {
        self.s
    }

    /// A Graph URL under the service principal, built by the URL parser.
    fn graph(&self, segments: &[&str]) -> Result<reqwest::Url> {
        let mut all = vec!["v1.0", "servicePrincipals", self.s.service_principal_id.as_str()];
        all.extend_from_slice(segments);
        super::http::endpoint(&super::http::base(&self.s.graph_base_url)?, &all, None)
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration)> {
        let s = &self.s;
        s.secrets
            .with(&s.client_secret, |secret| async move {
                graph_token(&self.api, &s.login_base_url, &s.graph_base_url, &s.tenant_id, &s.client_id, &secret).await
            })
            .await
    }

    /// One Graph call ([`Api::call`]: token, retries, an expired token
    /// renewed once, Graph's error body mapped).
    async fn call(&self, method: Method, url: Result<reqwest::Url>, operation: &'static str, body: Option<Value>) -> Result<Value> {
        self.api.call(&self.token, || self.fetch_token(), method, &url?, operation, body.as_ref()).await
    }

    async fn push_impl(&self, cred: &NewCredential) -> Result<()> {
        self.push_unredacted(cred).await.map_err(|e| e.redact(cred.secret.expose_secret()))
    }

    async fn push_unredacted(&self, cred: &NewCredential) -> Result<()> {
        // Test connection: nothing is saved if Entra rejects the token.
        let test = json!({
            "useSavedCredentials": false,
            "credentials": [
                {"key": "BaseAddress", "value": self.s.scim_endpoint},
                {"key": "SecretToken", "value": cred.secret.expose_secret()},
            ]
        });
        let url = self.graph(&["synchronization", "jobs", &self.s.job_id, "validateCredentials"]);
        self.call(Method::POST, url, "POST validateCredentials", Some(test)).await.map_err(|e| match e {
            // A failed test is the token's fault, never a partial write.
            Error::Http { status, code, message, retry_after, .. } if (400..500).contains(&status) && status != 429 => Error::Http {
                service: SERVICE,
                operation: "POST validateCredentials",
                status,
                code,
                message: format!("Entra rejected the new token in Test connection: {message}"),
                retry_after,
                may_have_applied: false,
            },
            other => other,
        })?;
        // Save: every current key back, only SecretToken changed.
        let current = self.call(Method::GET, self.graph(&["synchronization", "secrets"]), "GET secrets", None).await?;
        let body = json!({ "value": merge_secrets(&current, &self.s.scim_endpoint, cred.secret.expose_secret()) });
        self.call(Method::PUT, self.graph(&["synchronization", "secrets"]), "PUT secrets", Some(body)).await?;
        Ok(())
    }

    async fn get_job(&self) -> Result<Value> {
        self.call(Method::GET, self.graph(&["synchronization", "jobs", &self.s.job_id]), "GET job", None).await
    }

    async fn verify_impl(&self) -> Result<Verification> {
        let job = self.get_job().await?;
        let Some(wait) = self.s.restart_wait else { return Ok(judge_job(&job)) };
        // Restart, then wait for a run that began after it. "After" is judged
        // by the run's start time changing, not by our clock, so clock skew
        // with Microsoft does not matter. A retried verify restarts again,
        // which is harmless.
        let before = last_run_began(&job);
        let body = json!({"criteria": {"resetScope": "Watermark, Escrows, QuarantineState"}});
        self.call(Method::POST, self.graph(&["synchronization", "jobs", &self.s.job_id, "restart"]), "POST restart", Some(body)).await?;
        let deadline = Instant::now() + wait;
        let poll = (wait / 20).clamp(Duration::from_millis(200), Duration::from_secs(15));
        loop {
            let job = self.get_job().await?;
            let began = last_run_began(&job);
            let ended = job["status"]["lastExecution"]["timeEnded"].as_str().is_some_and(|t| !t.is_empty());
            if began.is_some() && began > before && ended {
                return Ok(judge_run(&job));
            }
            if Instant::now() >= deadline {
                return Ok(Verification::Unhealthy(format!(
                    "the provisioning job was restarted after Save, but no run finished within {}s (status {})",
                    wait.as_secs(),
                    job["status"]["code"].as_str().unwrap_or("unknown")
                )));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// The secrets to PUT: every key Entra had, `SecretToken` replaced (and
/// `BaseAddress` kept, or set if it was missing).
pub fn merge_secrets(current: &Value, base_address: &str, token: &str) -> Vec<Value> {
    let mut out: Vec<Value> = current["value"].as_array().cloned().unwrap_or_default().into_iter().filter(|kv| kv["key"] != "SecretToken").collect();
    if !out.iter().any(|kv| kv["key"] == "BaseAddress") {
        out.push(json!({"key": "BaseAddress", "value": base_address}));
    }
    out.push(json!({"key": "SecretToken", "value": token}));
    out
}

/// Start of the job's last run, when it has one.
fn last_run_began(job: &Value) -> Option<i64> {
    let t = job["status"]["lastExecution"]["timeBegan"].as_str()?;
    aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime).ok()?.to_millis().ok()
}

/// Judge a run that began after a restart: it must have succeeded (entry
/// level errors are about single users, not the token).
pub fn judge_run(job: &Value) -> Verification {
    match judge_job(job) {
        Verification::Opaque => {
            let last = &job["status"]["lastExecution"];
            if last["state"] == "Failed" {
                Verification::Unhealthy(format!(
                    "the provisioning run after the restart failed: {} {}",
                    last["error"]["code"].as_str().unwrap_or(""),
                    last["error"]["message"].as_str().unwrap_or("")
                ))
            } else {
                Verification::Opaque
            }
        }
        unhealthy => unhealthy,
    }
}

/// Decide what the provisioning job says about the switch.
pub fn judge_job(job: &Value) -> Verification {
    let status = &job["status"];
    let code = status["code"].as_str().unwrap_or("");
    if code == "Quarantine" {
        let q = &status["quarantine"];
        let err = if q["error"].is_object() { &q["error"] } else { &status["lastExecution"]["error"] };
        return Verification::Unhealthy(format!(
            "the provisioning job is in quarantine ({}): {} {}",
            q["reason"].as_str().unwrap_or("unknown reason"),
            err["code"].as_str().unwrap_or(""),
            err["message"].as_str().unwrap_or("")
        ));
    }
    let last = &status["lastExecution"];
    if last["state"] == "Failed" && last["error"]["code"] == CREDENTIAL_FAILURE {
        return Verification::Unhealthy(format!(
            "the last provisioning run failed on credentials: {} {}",
            CREDENTIAL_FAILURE,
            last["error"]["message"].as_str().unwrap_or("")
        ));
    }
    if matches!(code, "NotConfigured" | "Paused") {
        return Verification::Unhealthy(format!("the provisioning job is {code}"));
    }
    // Graph never reveals the saved token: healthy is as far as it goes.
    Verification::Opaque
}

/// Application permissions (app roles) that let keyturn test, save and
/// read a provisioning job: either one.
pub const APP_ROLES: [&str; 2] = ["Synchronization.ReadWrite.All", "Application.ReadWrite.OwnedBy"];

impl EntraProvisioning {
    /// `keyturn doctor`: a token can be obtained, its `roles` claim holds an
    /// app role the synchronization API accepts, and the job is readable.
    async fn doctor_impl(&self) -> Findings {
        let mut f = Findings::default();
        let (token, lifetime) = match self.fetch_token().await {
            Ok(t) => t,
            Err(e) => {
                f.checks.push(Check::fail("Graph token", e.to_string(), "check tenant_id, client_id and the client secret keyturn is configured with (Entra: App registrations → the app → Certificates & secrets)"));
                return f;
            }
        };
        f.checks.push(Check::ok("Graph token", format!("app {} got a Graph token", self.s.client_id)));
        let fix = format!(
            "Entra: App registrations → {} → API permissions → Add a permission → Microsoft Graph → Application permissions → Synchronization.ReadWrite.All (or Application.ReadWrite.OwnedBy with the app as owner of the enterprise application); then Grant admin consent",
            self.s.client_id
        );
        match crate::preflight::jwt_claims(token.expose_secret()) {
            None => f.checks.push(Check::not_checked(
                "Graph permissions",
                format!("the token is not a JWT, so its roles cannot be read; needed: {}", APP_ROLES.join(" or ")),
            )),
            Some(c) => {
                let roles: Vec<&str> = c["roles"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                if roles.iter().any(|r| APP_ROLES.contains(r)) {
                    f.checks.push(Check::ok("Graph permissions", format!("the token carries {}", roles.join(" "))));
                } else {
                    f.checks.push(Check::fail(
                        "Graph permissions",
                        format!(
                            "the token's roles ({}) include neither {}",
                            if roles.is_empty() { "none".into() } else { roles.join(" ") },
                            APP_ROLES.join(" nor ")
                        ),
                        fix.clone(),
                    ));
                }
            }
        }
        self.token.store(token, lifetime).await;
        match self.get_job().await {
            Ok(job) => f.checks.push(Check::ok(
                "provisioning job",
                format!("{} readable (status {})", self.s.job_id, job["status"]["code"].as_str().unwrap_or("unknown")),
            )),
            Err(e) => f.checks.push(Check::fail("provisioning job", e.to_string(), format!("check service_principal_id and job_id; {fix}"))),
        }
        f
    }
}

impl Target for EntraProvisioning {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_impl())
    }
    fn describe(&self) -> String {
        format!("Entra provisioning job {} (tenant {})", self.s.job_id, self.s.tenant_id)
    }
    fn by_hand_words(&self) -> Option<&'static super::HandWords> {
        Some(&BY_HAND_WORDS)
    }
    fn push<'a>(&'a self, cred: &'a NewCredential, _old_ids: &'a [String]) -> BoxFut<'a, Result<()>> {
        Box::pin(self.push_impl(cred))
    }
    fn verify<'a>(&'a self, _new_id: &'a str, _old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>> {
        Box::pin(self.verify_impl())
    }
}

/// A Graph (`{"error":{"code","message"}}`) or identity platform
/// (`{"error","error_description"}`) error.
pub fn graph_error(operation: &'static str, status: StatusCode, headers: &HeaderMap, body: &str, write: bool) -> Error {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let (code, message) = match &v["error"] {
        Value::Object(e) => {
            (e.get("code").and_then(Value::as_str).unwrap_or("error").to_string(), e.get("message").and_then(Value::as_str).unwrap_or("").to_string())
        }
        Value::String(code) => (code.clone(), v["error_description"].as_str().unwrap_or("").lines().next().unwrap_or("").to_string()),
        _ => (status.canonical_reason().unwrap_or("error").to_string(), format!("HTTP {}", status.as_u16())),
    };
    Error::Http {
        service: SERVICE,
        operation,
        status: status.as_u16(),
        code,
        message: message.chars().take(500).collect(),
        retry_after: super::http::retry_after(headers, crate::clock::Clock::now(&crate::clock::SystemClock)),
        may_have_applied: write && status.is_server_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_keep_every_key_and_replace_only_the_token() {
        let current = json!({"value": [
            {"key": "BaseAddress", "value": "https://scim.us-east-1.amazonaws.com/abc/scim/v2/"},
            {"key": "SecretToken", "value": "OLD"},
            {"key": "NotificationEmail", "value": "ops@example.com"}
        ]});
        let merged = merge_secrets(&current, "https://ignored", "NEW");
        assert_eq!(merged.len(), 3);
        assert!(merged.contains(&json!({"key": "BaseAddress", "value": "https://scim.us-east-1.amazonaws.com/abc/scim/v2/"})));
        assert!(merged.contains(&json!({"key": "NotificationEmail", "value": "ops@example.com"})));
        assert!(merged.contains(&json!({"key": "SecretToken", "value": "NEW"})));
        let from_nothing = merge_secrets(&json!({}), "https://scim", "NEW");
        assert_eq!(from_nothing, vec![json!({"key": "BaseAddress", "value": "https://scim"}), json!({"key": "SecretToken", "value": "NEW"})]);
    }

    #[test]
    fn the_graph_scope_follows_the_configured_cloud() {
        assert_eq!(graph_scope("https://graph.microsoft.com"), "https://graph.microsoft.com/.default");
        assert_eq!(graph_scope("https://graph.microsoft.us/"), "https://graph.microsoft.us/.default");
        assert_eq!(graph_scope("https://microsoftgraph.chinacloudapi.cn/v1.0"), "https://microsoftgraph.chinacloudapi.cn/.default");
        assert_eq!(graph_scope("http://127.0.0.1:4321"), "http://127.0.0.1:4321/.default");
    }

    #[test]
    fn job_judgement() {
        let healthy = json!({"status": {"code": "Active", "lastExecution": {"state": "Succeeded"}}});
        assert_eq!(judge_job(&healthy), Verification::Opaque);
        let quarantined = json!({"status": {"code": "Quarantine", "quarantine": {"reason": "EncounteredQuarantineException",
            "error": {"code": CREDENTIAL_FAILURE, "message": "Failed to validate credentials"}}}});
        assert!(matches!(judge_job(&quarantined), Verification::Unhealthy(m) if m.contains(CREDENTIAL_FAILURE) && m.contains("quarantine")));
        let failed = json!({"status": {"code": "Active", "lastExecution": {"state": "Failed", "error": {"code": CREDENTIAL_FAILURE, "message": "401"}}}});
        assert!(matches!(judge_job(&failed), Verification::Unhealthy(_)));
        let other_failure = json!({"status": {"code": "Active", "lastExecution": {"state": "Failed", "error": {"code": "SomethingElse"}}}});
        assert_eq!(judge_job(&other_failure), Verification::Opaque);
        assert!(matches!(judge_job(&json!({"status": {"code": "Paused"}})), Verification::Unhealthy(_)));
    }

    #[test]
    fn graph_errors_keep_code_and_message() {
        let e = graph_error(
            "PUT secrets",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"request-id":"x"}}}"#,
            true,
        );
        assert_eq!(e.code(), "Authorization_RequestDenied");
        assert!(!e.is_retryable() && !e.may_have_applied());
        assert!(e.to_string().contains("Insufficient privileges"));
        let t = graph_error(
            "POST token",
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1","error_codes":[7000215]}"#,
            false,
        );
        assert_eq!(t.code(), "invalid_client");
        assert!(t.to_string().contains("AADSTS7000215: Invalid client secret provided."));
        assert!(!t.to_string().contains("Trace ID"));
    }
}
