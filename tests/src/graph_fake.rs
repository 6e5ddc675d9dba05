//! A fake of the Microsoft identity platform token endpoint and the Graph
//! synchronization endpoints keyturn's Entra target uses, with the shapes of
//! Microsoft's identity platform and Graph API references: form-encoded client credentials,
//! 400 `{error, error_description, error_codes}` token errors, bearer tokens,
//! `validateCredentials` (204, or 400 with a Graph error for a refused token),
//! secrets read and written whole, the job's status, and 429 with `Retry-After`;
//! and the app registration's own password credentials (`addPassword` answers
//! the `secretText` once, listing never shows it, `removePassword`; the token
//! endpoint takes exactly the app's current passwords, a new one after an
//! optional seeded-random replication delay, a removed one refused with
//! `AADSTS7000215`); and the service principal's SAML signing certificates ([`Saml`]):
//! `addTokenSigningCertificate` (`CN=` checked), reads without private parts,
//! `preferredTokenSigningKeyThumbprint` (an unknown thumbprint is a 400),
//! removal by PATCHing `keyCredentials` and `removePassword`.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
pub const CLIENT_ID: &str = "keyturn-graph-client";
pub const SP: &str = "sp-1234";
pub const JOB: &str = "AWSSingleSignOn.abcd1234";
/// Object id of keyturn's own app registration (Graph `applications/{id}`).
pub const APP: &str = "00000000-0000-0000-0000-0000000000a1";
/// `keyId` of the password the fake starts with (the `client_secret`).
pub const FIRST_KEY_ID: &str = "00000000-0000-0000-0000-00000000c001";

/// A password credential of the app registration, as Entra keeps it.
#[derive(Debug, Clone)]
pub struct Password {
    pub key_id: String,
    pub secret: String,
    pub display_name: String,
    pub start: String,
    pub end: String,
    /// Replication: the token endpoint takes it from this moment on.
    pub usable_from: std::time::Instant,
}

#[derive(Default)]
pub struct State {
    /// The secret of the password the app starts with ([`FIRST_KEY_ID`];
    /// set it with [`FakeGraph::set_client_secret`]).
    pub client_secret: String,
    /// The app's password credentials: the token endpoint takes exactly
    /// these (once replicated), `addPassword` adds one, `removePassword`
    /// removes one.
    pub passwords: Vec<Password>,
    /// After `addPassword`, a new password works at the token endpoint only
    /// after a random delay up to this long (Entra's replication), drawn
    /// from `rng`.
    pub replication_delay: Option<std::time::Duration>,
    /// Seeded: secret texts and replication delays.
    pub rng: Option<fastrand::Rng>,
    /// Every `secretText` handed out (a test looks for them in logs).
    pub issued_secrets: Vec<String>,
    /// Client secrets the token endpoint refused, in order.
    pub refused_secrets: Vec<String>,
    /// Client secrets the token endpoint issued a token to, in order.
    pub granted_secrets: Vec<String>,
    /// `expires_in` of the tokens it issues (default 3599 s).
    pub token_lifetime: Option<u64>,
    pub tokens: Vec<String>,
    /// The SCIM token IAM Identity Center accepts (what "Test connection" checks).
    pub valid_scim_token: String,
    pub secrets: Vec<Value>,
    pub job: Value,
    /// Answer the next N Graph calls with 429 Retry-After: 1.
    pub throttle_next: usize,
    /// Bodies of `POST …/restart` received.
    pub restarts: Vec<Value>,
    /// What a restart does: the run it produces (`state`, `error`), finished
    /// at once; `None`: the restart is accepted and no run happens.
    pub run_after_restart: Option<Value>,
    pub calls: Vec<(String, String, u16)>,
    /// The scope a token must be asked for: this fake's own origin +
    /// `/.default` (the Graph resource the token is for).
    pub graph_scope: String,
    /// The service principal's SAML signing certificates and the one it signs with.
    pub saml: Saml,
}

/// The SAML side of the service principal [`SP`]: what
/// `addTokenSigningCertificate` adds (a `Sign` and a `Verify`
/// keyCredential and a passwordCredential sharing one
/// `customKeyIdentifier`), `preferredTokenSigningKeyThumbprint`, and a
/// simulated IAM Identity Center that trusts the certificates a test says.
#[derive(Default)]
pub struct Saml {
    pub app_id: String,
    pub key_credentials: Vec<Value>,
    pub password_credentials: Vec<Value>,
    pub preferred: Option<String>,
    /// Thumbprints IAM Identity Center trusts (what a person uploaded).
    pub trusted: Vec<String>,
    /// Public certificates (base64 DER) by thumbprint, as issued.
    pub certs: Vec<(String, String)>,
    /// Seeded faults on the SAML writes: each write is answered 503 with
    /// this probability, after being applied or not (a coin toss: an
    /// answer lost after the write landed).
    pub faults: Option<(fastrand::Rng, f64)>,
    /// Faults injected so far: (path, applied).
    pub injected: Vec<(String, bool)>,
}

impl Saml {
    /// Whether a sign-in to AWS through Entra works now: Entra signs with
    /// a certificate IAM Identity Center trusts.
    pub fn sign_in_works(&self) -> bool {
        self.preferred.as_ref().is_some_and(|p| self.trusted.contains(p))
    }
    /// The thumbprints of the certificates on the service principal.
    pub fn thumbprints(&self) -> Vec<String> {
        let ckis: Vec<&str> = self.key_credentials.iter().filter(|k| k["usage"] == "Verify").filter_map(|k| k["customKeyIdentifier"].as_str()).collect();
        self.certs.iter().filter(|(t, _)| ckis.contains(&cki_of(t).as_str())).map(|(t, _)| t.clone()).collect()
    }
    /// Make a certificate as Entra does (a random DER blob stands in for
    /// the certificate; its thumbprint is the blob's SHA-1), valid
    /// `start`..`end` (RFC 3339). Returns the `selfSignedCertificate`.
    pub fn add_certificate(&mut self, display_name: &str, start: &str, end: &str) -> Value {
        use sha1::Digest;
        let der: Vec<u8> = (0..320).map(|_| fastrand::u8(..)).collect();
        let digest = sha1::Sha1::digest(&der);
        let thumbprint: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        let key = aws_smithy_types::base64::encode(&der);
        let cki = aws_smithy_types::base64::encode(digest.as_slice());
        let entry = |usage: &str, ty: &str, key: Value| json!({"customKeyIdentifier": cki, "displayName": display_name, "endDateTime": end, "key": key, "keyId": uuid::Uuid::new_v4().to_string(), "startDateTime": start, "type": ty, "usage": usage});
        self.key_credentials.push(entry("Sign", "X509CertAndPassword", Value::Null));
        self.key_credentials.push(entry("Verify", "AsymmetricX509Cert", key.clone().into()));
        self.password_credentials.push(json!({"customKeyIdentifier": cki, "displayName": display_name, "endDateTime": end, "hint": null, "keyId": uuid::Uuid::new_v4().to_string(), "secretText": null, "startDateTime": start}));
        self.certs.push((thumbprint.clone(), key.clone()));
        json!({"customKeyIdentifier": cki, "displayName": display_name, "endDateTime": end, "key": key, "keyId": self.key_credentials.last().unwrap()["keyId"], "startDateTime": start, "thumbprint": thumbprint, "type": "AsymmetricX509Cert", "usage": "Verify"})
    }
    fn view(&self) -> Value {
        // Reads never carry private parts: a Sign entry's key is null, and
        // a password's secretText is never returned.
        json!({"id": SP, "appId": self.app_id, "keyCredentials": self.key_credentials, "passwordCredentials": self.password_credentials,
               "preferredTokenSigningKeyThumbprint": self.preferred})
    }
}

fn cki_of(thumbprint: &str) -> String {
    let bytes: Vec<u8> = (0..thumbprint.len() / 2).filter_map(|i| u8::from_str_radix(&thumbprint[2 * i..2 * i + 2], 16).ok()).collect();
    aws_smithy_types::base64::encode(&bytes)
}

/// Graph's answer to `servicePrincipal` SAML certificate calls, or `None`
/// for any other path.
fn respond_saml(st: &mut State, req: &Request, p: &str, body: &Value) -> Option<(u16, ResponseTemplate)> {
    let fault = match (&mut st.saml.faults, req.method.as_str()) {
        (Some((rng, p)), "PATCH" | "POST") => (rng.f64() < *p).then(|| rng.bool()),
        _ => None,
    };
    let answer = match fault {
        Some(false) => {
            return saml_paths(p)
                .then(|| (503, graph_err(503, "serviceUnavailable", "Service unavailable")))
                .inspect(|_| st.saml.injected.push((p.to_string(), false)))
        }
        _ => respond_saml_write(st, req, p, body)?,
    };
    if fault == Some(true) {
        st.saml.injected.push((p.to_string(), true));
        return Some((503, graph_err(503, "serviceUnavailable", "Service unavailable")));
    }
    Some(answer)
}

fn saml_paths(p: &str) -> bool {
    let sp = format!("/v1.0/servicePrincipals/{SP}");
    p == sp || p == format!("{sp}/addTokenSigningCertificate") || p == format!("{sp}/removePassword")
}

fn respond_saml_write(st: &mut State, req: &Request, p: &str, body: &Value) -> Option<(u16, ResponseTemplate)> {
    let sp = format!("/v1.0/servicePrincipals/{SP}");
    let bad = |m: &str| (400, graph_err(400, "Request_BadRequest", m));
    if p == sp && req.method.as_str() == "GET" {
        return Some((200, ResponseTemplate::new(200).set_body_json(st.saml.view())));
    }
    if p == sp && req.method.as_str() == "PATCH" {
        let saml = &mut st.saml;
        if let Some(t) = body.get("preferredTokenSigningKeyThumbprint") {
            let t = t.as_str().unwrap_or("").to_ascii_uppercase();
            if !saml.thumbprints().contains(&t) {
                return Some(bad(&format!("Invalid value specified for property 'preferredTokenSigningKeyThumbprint' of resource 'ServicePrincipal': no key credential has thumbprint {t}.")));
            }
            saml.preferred = Some(t);
        }
        if let Some(keys) = body.get("keyCredentials") {
            // Only removal is supported here: every entry must be one that exists.
            let Some(keys) = keys.as_array() else { return Some(bad("keyCredentials must be an array")) };
            let existing: Vec<&str> = saml.key_credentials.iter().filter_map(|k| k["keyId"].as_str()).collect();
            if keys.iter().any(|k| !k["keyId"].as_str().is_some_and(|id| existing.contains(&id))) {
                return Some(bad("Key credential not found (the fake takes keyCredentials PATCHes that remove entries only)."));
            }
            let keep: Vec<String> = keys.iter().filter_map(|k| k["keyId"].as_str().map(str::to_string)).collect();
            // Entra refuses to remove the certificate it signs with.
            let preferred_cki = saml.preferred.as_deref().map(cki_of);
            if let Some(cki) = preferred_cki {
                let removed_in_use =
                    saml.key_credentials.iter().any(|k| k["customKeyIdentifier"] == cki && !keep.iter().any(|id| k["keyId"] == id.as_str()));
                if removed_in_use {
                    return Some(bad("The certificate referenced by preferredTokenSigningKeyThumbprint cannot be removed."));
                }
            }
            saml.key_credentials.retain(|k| keep.iter().any(|id| k["keyId"] == id.as_str()));
        }
        return Some((204, ResponseTemplate::new(204)));
    }
    if p == format!("{sp}/addTokenSigningCertificate") {
        let name = body["displayName"].as_str().unwrap_or("");
        if !name.starts_with("CN=") {
            return Some(bad("The display name of a token signing certificate must start with 'CN='."));
        }
        let now = chrono_like_now();
        let end = match body["endDateTime"].as_str() {
            Some(e) => {
                let ms =
                    |t: &str| aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime).ok().and_then(|d| d.to_millis().ok());
                match (ms(e), ms(&now)) {
                    (Some(end), Some(start)) if end > start && end - start <= 3 * 366 * 86_400_000 => e.to_string(),
                    _ => return Some(bad("endDateTime must be after now and at most 3 years away.")),
                }
            }
            None => {
                let three_years = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 3 * 365 * 86_400_000;
                aws_smithy_types::DateTime::from_millis(three_years).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap()
            }
        };
        let cert = st.saml.add_certificate(name, &now, &end);
        return Some((200, ResponseTemplate::new(200).set_body_json(cert)));
    }
    if p == format!("{sp}/removePassword") {
        let id = body["keyId"].as_str().unwrap_or("");
        let before = st.saml.password_credentials.len();
        st.saml.password_credentials.retain(|c| c["keyId"] != id);
        return Some(if st.saml.password_credentials.len() < before {
            (204, ResponseTemplate::new(204))
        } else {
            (404, graph_err(404, "Request_ResourceNotFound", "No password credential found with the given keyId."))
        });
    }
    None
}

pub struct FakeGraph {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
}

struct R(Arc<Mutex<State>>);

fn graph_err(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}}))
}

impl Respond for R {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        let p = req.url.path().to_string();
        let (status, t) = respond(&mut st, req, &p);
        st.calls.push((req.method.to_string(), p, status));
        t
    }
}

fn respond(st: &mut State, req: &Request, p: &str) -> (u16, ResponseTemplate) {
    if p.ends_with("/oauth2/v2.0/token") {
        let form: Vec<(String, String)> = url_form(&req.body);
        let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        if get("grant_type") != Some("client_credentials") || get("scope") != Some(st.graph_scope.as_str()) {
            return (
                400,
                ResponseTemplate::new(400)
                    .set_body_json(json!({"error": "invalid_request", "error_description": "AADSTS900144: bad request", "error_codes": [900144]})),
            );
        }
        let now = std::time::Instant::now();
        let known = get("client_secret").is_some_and(|s| st.passwords.iter().any(|p| p.secret == s && p.usable_from <= now));
        if get("client_id") != Some(CLIENT_ID) || !known {
            let refused = get("client_secret").unwrap_or("").to_string();
            st.refused_secrets.push(refused);
            return (
                400,
                ResponseTemplate::new(400).set_body_json(
                    json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": [7000215]}),
                ),
            );
        }
        let t = format!("graph-token-{}", uuid::Uuid::new_v4());
        st.tokens.push(t.clone());
        let granted = get("client_secret").unwrap_or("").to_string();
        st.granted_secrets.push(granted);
        let lifetime = st.token_lifetime.unwrap_or(3599);
        return (200, ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer", "expires_in": lifetime, "access_token": t})));
    }
    let authorized = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.tokens.iter().any(|x| x == t));
    if !authorized {
        return (401, graph_err(401, "InvalidAuthenticationToken", "Access token is empty or invalid."));
    }
    if st.throttle_next > 0 {
        st.throttle_next -= 1;
        return (429, graph_err(429, "TooManyRequests", "Too many requests").insert_header("retry-after", "1"));
    }
    let body: Value = req.body_json().unwrap_or(Value::Null);
    if let Some(answer) = application(st, req, p, &body) {
        return answer;
    }
    if let Some(answer) = respond_saml(st, req, p, &body) {
        return answer;
    }
    if p.ends_with("/validateCredentials") {
        let token = body["credentials"].as_array().and_then(|c| c.iter().find(|kv| kv["key"] == "SecretToken")).and_then(|kv| kv["value"].as_str());
        return if token == Some(st.valid_scim_token.as_str()) {
            (204, ResponseTemplate::new(204))
        } else {
            (400, graph_err(400, CREDENTIAL_FAILURE, "Test connection failed: the SCIM endpoint answered 401 Unauthorized."))
        };
    }
    if p.ends_with("/synchronization/secrets") {
        return match req.method.as_str() {
            // Secrets are write-only: keys come back, SecretToken's value does not.
            "GET" => (200, ResponseTemplate::new(200).set_body_json(json!({"value": st.secrets.iter().map(|kv| if kv["key"] == "SecretToken" { json!({"key": "SecretToken", "value": ""}) } else { kv.clone() }).collect::<Vec<_>>()}))),
            "PUT" => {
                st.secrets = body["value"].as_array().cloned().unwrap_or_default();
                (204, ResponseTemplate::new(204))
            }
            _ => (405, graph_err(405, "MethodNotAllowed", "")),
        };
    }
    if p.ends_with(&format!("/jobs/{JOB}/restart")) {
        st.restarts.push(body.clone());
        if let Some(run) = st.run_after_restart.clone() {
            // A restart with QuarantineState in resetScope lifts quarantine; the run decides the rest.
            let now = chrono_like_now();
            let mut last = run;
            last["timeBegan"] = now.clone().into();
            last["timeEnded"] = now.into();
            let code = if last["state"] == "Failed" && last["error"]["code"] == CREDENTIAL_FAILURE { "Quarantine" } else { "Active" };
            st.job["status"] = json!({"code": code, "lastExecution": last});
        }
        return (204, ResponseTemplate::new(204));
    }
    if p.ends_with(&format!("/jobs/{JOB}")) {
        return (200, ResponseTemplate::new(200).set_body_json(st.job.clone()));
    }
    (404, graph_err(404, "ResourceNotFound", "not found"))
}

/// Now as Graph writes times (RFC 3339, UTC, milliseconds).
fn chrono_like_now() -> String {
    graph_time(now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn graph_time(ms: i64) -> String {
    aws_smithy_types::DateTime::from_millis(ms).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap()
}

/// The app registration's password calls (Graph v1.0 `application`
/// resource: `GET applications/{id}?$select=passwordCredentials`,
/// `addPassword`, `removePassword`; also addressed as
/// `applications(appId='{appId}')`). `None`: not one of them.
fn application(st: &mut State, req: &Request, p: &str, body: &Value) -> Option<(u16, ResponseTemplate)> {
    let rest = p.strip_prefix(&format!("/v1.0/applications/{APP}")).or_else(|| p.strip_prefix(&format!("/v1.0/applications(appId='{CLIENT_ID}')")))?;
    Some(match (req.method.as_str(), rest) {
        // Listed without secretText: Graph returns it only from addPassword.
        ("GET", "") => {
            let list: Vec<Value> = st
                .passwords
                .iter()
                .map(|pw| {
                    json!({"customKeyIdentifier": null, "displayName": pw.display_name, "endDateTime": pw.end, "hint": pw.secret.get(..3).unwrap_or(""),
                        "keyId": pw.key_id, "secretText": null, "startDateTime": pw.start})
                })
                .collect();
            (200, ResponseTemplate::new(200).set_body_json(json!({"id": APP, "appId": CLIENT_ID, "passwordCredentials": list})))
        }
        ("POST", "/addPassword") => {
            let cred = &body["passwordCredential"];
            let start = now_ms();
            // Default lifetime: two years.
            let end = cred["endDateTime"].as_str().map(str::to_string).unwrap_or_else(|| graph_time(start + 2 * 365 * 86_400_000));
            let rng = st.rng.get_or_insert_with(|| fastrand::Rng::with_seed(7));
            let delay = st.replication_delay.map(|d| std::time::Duration::from_millis(rng.u64(0..=d.as_millis() as u64))).unwrap_or_default();
            let mut text: String = (0..3).map(|_| rng.alphanumeric()).collect();
            text.push_str("8Q~");
            text.extend((0..34).map(|_| rng.alphanumeric()));
            let pw = Password {
                key_id: uuid::Uuid::new_v4().to_string(),
                secret: text.clone(),
                display_name: cred["displayName"].as_str().unwrap_or("").to_string(),
                start: graph_time(start),
                end,
                usable_from: std::time::Instant::now() + delay,
            };
            st.issued_secrets.push(text.clone());
            let answer = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.passwordCredential", "customKeyIdentifier": null,
                "displayName": pw.display_name, "endDateTime": pw.end, "hint": &text[..3], "keyId": pw.key_id, "secretText": text, "startDateTime": pw.start});
            st.passwords.push(pw);
            (200, ResponseTemplate::new(200).set_body_json(answer))
        }
        ("POST", "/removePassword") => {
            let key = body["keyId"].as_str().unwrap_or("");
            let before = st.passwords.len();
            st.passwords.retain(|pw| pw.key_id != key);
            if st.passwords.len() < before {
                (204, ResponseTemplate::new(204))
            } else {
                (400, graph_err(400, "Request_BadRequest", "No password credential found with the given keyId."))
            }
        }
        _ => (404, graph_err(404, "Request_ResourceNotFound", "not found")),
    })
}

pub const CREDENTIAL_FAILURE: &str = "SystemForCrossDomainIdentityManagementCredentialValidationFailure";

fn url_form(body: &[u8]) -> Vec<(String, String)> {
    let s = String::from_utf8_lossy(body);
    s.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeGraph {
    pub async fn start(client_secret: &str, valid_scim_token: &str, old_token: &str) -> FakeGraph {
        let state = Arc::new(Mutex::new(State {
            client_secret: client_secret.into(),
            passwords: vec![first_password(client_secret)],
            valid_scim_token: valid_scim_token.into(),
            secrets: vec![
                json!({"key": "BaseAddress", "value": "https://scim.us-east-1.amazonaws.com/abc/scim/v2/"}),
                json!({"key": "SecretToken", "value": old_token}),
                json!({"key": "NotificationEmail", "value": "ops@example.com"}),
            ],
            job: json!({"id": JOB, "status": {"code": "Active", "lastExecution": {"state": "Succeeded", "timeBegan": "2026-11-20T08:00:00.000Z", "timeEnded": "2026-11-20T08:01:00.000Z"}}}),
            run_after_restart: Some(json!({"state": "Succeeded"})),
            ..State::default()
        }));
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path_regex(".*")).respond_with(R(state.clone())).mount(&server).await;
        Mock::given(method("GET")).and(path_regex(".*")).respond_with(R(state.clone())).mount(&server).await;
        Mock::given(method("PUT")).and(path_regex(".*")).respond_with(R(state.clone())).mount(&server).await;
        Mock::given(method("PATCH")).and(path_regex(".*")).respond_with(R(state.clone())).mount(&server).await;
        state.lock().unwrap().graph_scope = format!("{}/.default", server.uri());
        FakeGraph { server, state }
    }

    /// The secret of the app's first password (the one it starts with).
    pub fn set_client_secret(&self, secret: &str) {
        let mut st = self.state.lock().unwrap();
        st.client_secret = secret.to_string();
        st.passwords.retain(|p| p.key_id != FIRST_KEY_ID);
        st.passwords.insert(0, first_password(secret));
    }

    /// The `keyId`s of the app's passwords now.
    pub fn password_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().passwords.iter().map(|p| p.key_id.clone()).collect()
    }

    pub fn saved_token(&self) -> Option<String> {
        self.state.lock().unwrap().secrets.iter().find(|kv| kv["key"] == "SecretToken").and_then(|kv| kv["value"].as_str()).map(str::to_string)
    }
}

/// The password the app starts with: a year old, a year left.
fn first_password(secret: &str) -> Password {
    let now = now_ms();
    Password {
        key_id: FIRST_KEY_ID.into(),
        secret: secret.into(),
        display_name: "initial".into(),
        start: graph_time(now - 365 * 86_400_000),
        end: graph_time(now + 365 * 86_400_000),
        usable_from: std::time::Instant::now(),
    }
}
