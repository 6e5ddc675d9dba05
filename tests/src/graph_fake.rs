//! A fake of the Microsoft identity platform token endpoint and the Graph
//! synchronization endpoints keyturn's Entra target uses, with the shapes of
//! Microsoft's identity platform and Graph API references: form-encoded client credentials,
//! 400 `{error, error_description, error_codes}` token errors, bearer tokens,
//! `validateCredentials` (204, or 400 with a Graph error for a refused token),
//! secrets read and written whole, the job's status, and 429 with `Retry-After`.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
pub const CLIENT_ID: &str = "keyturn-graph-client";
pub const SP: &str = "sp-1234";
pub const JOB: &str = "AWSSingleSignOn.abcd1234";

#[derive(Default)]
pub struct State {
    pub client_secret: String,
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
        if get("client_id") != Some(CLIENT_ID) || get("client_secret") != Some(st.client_secret.as_str()) {
            return (
                400,
                ResponseTemplate::new(400).set_body_json(
                    json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": [7000215]}),
                ),
            );
        }
        let t = format!("graph-token-{}", uuid::Uuid::new_v4());
        st.tokens.push(t.clone());
        return (200, ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": t})));
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
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    aws_smithy_types::DateTime::from_millis(ms).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap()
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

    pub fn saved_token(&self) -> Option<String> {
        self.state.lock().unwrap().secrets.iter().find(|kv| kv["key"] == "SecretToken").and_then(|kv| kv["value"].as_str()).map(str::to_string)
    }
}
