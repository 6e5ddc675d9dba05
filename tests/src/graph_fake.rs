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
//! `AADSTS7000215`).

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
