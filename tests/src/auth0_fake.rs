//! A faithful fake of the two Auth0 endpoints keyturn uses.
//!
//! Shapes follow Auth0's documentation (Management API v2 and the OAuth token endpoint):
//! * `POST /oauth/token` checks grant type, client id, client secret and
//!   audience; a wrong secret gets `401 {"error":"access_denied",...}`.
//! * `/api/v2/emails/provider` needs a bearer token this fake issued; `PATCH`
//!   validates the SES body (all three credential fields) and stores it;
//!   `GET` returns only `name` and `enabled` unless `fields`/`include_fields`
//!   ask for more — and never the secret (write-only), with `accessKeyId`
//!   returned or withheld as the test chooses.
//! * Error bodies are `{statusCode, error, message, errorCode}`; 429 carries
//!   `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` and
//!   optionally `Retry-After`.
//!
//! * Tokens are JWTs carrying the application's granted scopes (also in
//!   the token response's `scope`); `GET` needs `read:email_provider` and
//!   `PATCH` `update:email_provider`, else `403 insufficient_scope`.
//!
//! * `POST /api/v2/clients/{id}/rotate-secret` needs `update:client_keys`
//!   (else Auth0's 403 `insufficient_scope`), answers 200 with the client
//!   object whose `client_secret` is the new secret; the old secret is
//!   refused at `/oauth/token` at once (401 `access_denied` "Unauthorized",
//!   Auth0's answer to a wrong secret), the new one only after an activation
//!   delay drawn from a seeded generator (Auth0: "up to thirty seconds"; 0–3 s
//!   here). Tokens issued before stay valid until their `exp`. The answer
//!   can be held back ([`FakeAuth0::delay_rotate_answer`]) after the rotation
//!   applied, so a test can kill the caller between the two.
//!
//! Tests script failures with [`Fault`]s queued per operation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const CLIENT_ID: &str = "keyturn-m2m-client";

/// A scripted answer for the next call of an operation.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 insufficient_scope.
    InsufficientScope,
    /// 429 with rate-limit headers; `retry_after` seconds in `Retry-After` if given,
    /// and `x-ratelimit-reset` `reset_in` seconds from now.
    RateLimited { retry_after: Option<u64>, reset_in: u64 },
    /// 503 after applying the write (the worst case for a client).
    UnavailableAfterApply,
    /// 500 without applying.
    Internal,
    /// 400 whose message quotes the submitted secretAccessKey back (as a
    /// payload validation error might).
    EchoingValidationError,
    /// 307 Temporary Redirect to this URL (a compromised or misconfigured
    /// tenant, a proxy): a client that follows it re-sends the body there.
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub enabled: bool,
    pub access_key_id: String,
    /// Kept only so tests can check what Auth0 received; never returned.
    pub secret_access_key: String,
    pub region: String,
    pub default_from_address: Option<String>,
    /// `smtp` providers: host and port (the user is `access_key_id`, the
    /// password `secret_access_key`).
    pub smtp: Option<(String, u64)>,
}

/// A request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Debug)]
pub struct State {
    pub client_secret: String,
    pub provider: Option<Provider>,
    pub reveal_key_id: bool,
    pub tokens_issued: Vec<String>,
    pub patch_faults: VecDeque<Fault>,
    pub get_faults: VecDeque<Fault>,
    pub token_faults: VecDeque<Fault>,
    pub seen: Vec<Seen>,
    /// The secretAccessKey of the last PATCH, accepted or not (for leak checks).
    pub last_secret_sent: Option<String>,
    /// `expires_in` of issued tokens (Auth0's default: a day).
    pub token_lifetime: u64,
    /// Issued tokens that have expired: calls with them get 401 `token_expired`.
    pub expired: Vec<String>,
    /// The scopes the application is granted on the Management API (space
    /// separated): each token carries them (response `scope`, JWT claim);
    /// `GET` needs `read:email_provider`, `PATCH` `update:email_provider`.
    pub granted_scopes: String,
    /// The scopes each issued token carries.
    pub token_scopes: std::collections::HashMap<String, String>,
    /// When the current client secret starts being accepted (a rotated one
    /// after its activation delay).
    pub secret_active_from: Instant,
    /// Draws activation delays (seeded).
    pub rng: fastrand::Rng,
    /// Longest activation delay of a rotated secret.
    pub activation_max: std::time::Duration,
    /// How long the answer to rotate-secret is held back after it applied.
    pub rotate_answer_delay: std::time::Duration,
    /// Every secret rotate-secret issued, in order (the last is current).
    pub rotated: Vec<String>,
}

/// The scope of `POST /api/v2/clients/{id}/rotate-secret`.
pub const CLIENT_KEYS_SCOPE: &str = "update:client_keys";

/// Every scope of Auth0's email-provider endpoints.
pub const ALL_SCOPES: &str = "read:email_provider create:email_provider update:email_provider";
pub const READ_SCOPE: &str = "read:email_provider";
pub const UPDATE_SCOPE: &str = "update:email_provider";

pub struct FakeAuth0 {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
}

fn err(status: u16, error: &str, message: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"statusCode": status, "error": error, "message": message, "errorCode": code}))
}

fn rate_limited(retry_after: Option<u64>, reset_in: u64) -> ResponseTemplate {
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + reset_in;
    let mut t = err(429, "Too Many Requests", "Global limit has been reached", "too_many_requests")
        .insert_header("x-ratelimit-limit", "10")
        .insert_header("x-ratelimit-remaining", "0")
        .insert_header("x-ratelimit-reset", reset.to_string().as_str());
    if let Some(s) = retry_after {
        t = t.insert_header("retry-after", s.to_string().as_str());
    }
    t
}

struct Responder {
    state: Arc<Mutex<State>>,
    op: &'static str,
}

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.state.lock().unwrap();
        let (status, t) = match self.op {
            "token" => token(&mut st, req),
            "patch" => patch(&mut st, req),
            "rotate" => rotate_secret(&mut st, req),
            _ => get(&mut st, req),
        };
        st.seen.push(Seen { at: Instant::now(), method: req.method.to_string(), path: req.url.path().to_string(), status });
        t
    }
}

fn scripted(faults: &mut VecDeque<Fault>) -> Option<(ResponseTemplate, u16, bool)> {
    // Returns (response, status, apply_first)
    match faults.pop_front()? {
        Fault::InsufficientScope => {
            Some((err(403, "Forbidden", "Insufficient scope, expected any of: update:email_provider", "insufficient_scope"), 403, false))
        }
        Fault::RateLimited { retry_after, reset_in } => Some((rate_limited(retry_after, reset_in), 429, false)),
        Fault::UnavailableAfterApply => Some((err(503, "Service Unavailable", "Service unavailable", "service_unavailable"), 503, true)),
        Fault::Internal => Some((err(500, "Internal Server Error", "Internal error", "internal_error"), 500, false)),
        Fault::EchoingValidationError => unreachable!("handled in patch(), which has the body"),
        Fault::Redirect(to) => Some((ResponseTemplate::new(307).insert_header("location", to.as_str()), 307, false)),
    }
}

/// 401 for a missing or unknown token, and Auth0's expired-JWT answer for
/// a token this fake issued and then expired.
fn unauthorized(st: &State, req: &Request) -> Option<(u16, ResponseTemplate)> {
    let bearer = req.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| st.expired.iter().any(|x| x == t)) {
        return Some((401, err(401, "Unauthorized", "Expired token received for JSON Web Token validation", "token_expired")));
    }
    if !authorized(st, req) {
        return Some((401, err(401, "Unauthorized", "Invalid token", "invalid_token")));
    }
    None
}

/// Auth0's 403 for a token without the scope an endpoint needs.
fn lacks_scope(st: &State, req: &Request, needed: &str) -> Option<(u16, ResponseTemplate)> {
    let bearer = req.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))?;
    let has = st.token_scopes.get(bearer).is_some_and(|s| s.split_whitespace().any(|x| x == needed));
    (!has).then(|| (403, err(403, "Forbidden", &format!("Insufficient scope, expected any of: {needed}"), "insufficient_scope")))
}

/// An access token shaped as Auth0 issues them: a JWT (RS256 header,
/// claims with `scope`), its signature random bytes (nobody checks it here).
fn jwt(scope: &str, lifetime: u64) -> String {
    // base64url without padding, as JWTs are encoded.
    let url = |bytes: &[u8]| aws_smithy_types::base64::encode(bytes).trim_end_matches('=').replace('+', "-").replace('/', "_");
    let b64 = |v: &Value| url(v.to_string().as_bytes());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "fake-kid"});
    let claims = json!({"iss": "https://example.eu.auth0.com/", "sub": format!("{CLIENT_ID}@clients"), "aud": "https://example.eu.auth0.com/api/v2/",
        "iat": now, "exp": now + lifetime, "scope": scope, "gty": "client-credentials", "azp": CLIENT_ID, "jti": uuid::Uuid::new_v4().to_string()});
    let sig = url(uuid::Uuid::new_v4().as_bytes());
    format!("{}.{}.{sig}", b64(&header), b64(&claims))
}

fn authorized(st: &State, req: &Request) -> bool {
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.tokens_issued.iter().any(|x| x == t))
}

fn token(st: &mut State, req: &Request) -> (u16, ResponseTemplate) {
    if let Some((t, status, _)) = scripted(&mut st.token_faults) {
        return (status, t);
    }
    let body: Value = req.body_json().unwrap_or(Value::Null);
    let domain_ok = body["audience"].as_str().is_some_and(|a| a.starts_with("https://") && a.ends_with("/api/v2/"));
    if body["grant_type"] != "client_credentials" || !domain_ok {
        return (400, ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_request", "error_description": "bad grant_type or audience"})));
    }
    let active = Instant::now() >= st.secret_active_from;
    if body["client_id"] != CLIENT_ID || body["client_secret"].as_str() != Some(st.client_secret.as_str()) || !active {
        return (401, ResponseTemplate::new(401).set_body_json(json!({"error": "access_denied", "error_description": "Unauthorized"})));
    }
    let scope = st.granted_scopes.clone();
    let tok = jwt(&scope, st.token_lifetime);
    st.tokens_issued.push(tok.clone());
    st.token_scopes.insert(tok.clone(), scope.clone());
    (200, ResponseTemplate::new(200).set_body_json(json!({"access_token": tok, "scope": scope, "token_type": "Bearer", "expires_in": st.token_lifetime})))
}

/// `POST /api/v2/clients/{id}/rotate-secret`: a new secret at once, the
/// old one dead at once, the new one accepted after its activation delay.
fn rotate_secret(st: &mut State, req: &Request) -> (u16, ResponseTemplate) {
    if let Some(refusal) = unauthorized(st, req) {
        return refusal;
    }
    if let Some(refusal) = lacks_scope(st, req, CLIENT_KEYS_SCOPE) {
        return refusal;
    }
    let id = req.url.path().trim_start_matches("/api/v2/clients/").trim_end_matches("/rotate-secret").to_string();
    if id != CLIENT_ID {
        return (404, err(404, "Not Found", "The client does not exist", "inexistent_client"));
    }
    // 64 characters, as Auth0's generated secrets (not base64 encoded).
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').chain(['-', '_']).collect();
    let secret: String = (0..64).map(|_| alphabet[st.rng.usize(0..alphabet.len())]).collect();
    let delay = st.activation_max.mul_f64(st.rng.f64());
    st.client_secret = secret.clone();
    st.secret_active_from = Instant::now() + delay;
    st.rotated.push(secret.clone());
    let body = json!({"client_id": CLIENT_ID, "tenant": "example", "name": "keyturn", "app_type": "non_interactive",
        "token_endpoint_auth_method": "client_secret_post", "grant_types": ["client_credentials"], "client_secret": secret});
    (200, ResponseTemplate::new(200).set_body_json(body).set_delay(st.rotate_answer_delay))
}

// The Err is the response to send back (wiremock's own type).
#[allow(clippy::result_large_err)]
fn apply_patch(st: &mut State, body: &Value) -> Result<(), ResponseTemplate> {
    let creds = &body["credentials"];
    if body["name"] == "smtp" {
        // Auth0: `smtp` requires smtp_host, smtp_port, smtp_user and smtp_pass.
        let (Some(host), Some(port), Some(user), Some(pass)) =
            (creds["smtp_host"].as_str(), creds["smtp_port"].as_u64(), creds["smtp_user"].as_str(), creds["smtp_pass"].as_str())
        else {
            return Err(err(
                400,
                "Bad Request",
                "Payload validation error: 'Missing required property: smtp_host, smtp_port, smtp_user or smtp_pass'",
                "invalid_body",
            ));
        };
        let prev_from = st.provider.as_ref().and_then(|p| p.default_from_address.clone());
        st.provider = Some(Provider {
            name: "smtp".into(),
            enabled: body["enabled"].as_bool().unwrap_or(true),
            access_key_id: user.into(),
            secret_access_key: pass.into(),
            region: String::new(),
            default_from_address: body["default_from_address"].as_str().map(str::to_string).or(prev_from),
            smtp: Some((host.into(), port)),
        });
        return Ok(());
    }
    let (Some(id), Some(secret), Some(region)) = (creds["accessKeyId"].as_str(), creds["secretAccessKey"].as_str(), creds["region"].as_str()) else {
        return Err(err(400, "Bad Request", "Payload validation error: 'Missing required property: credentials'", "invalid_body"));
    };
    if body["name"] != "ses" {
        return Err(err(400, "Bad Request", "Payload validation error: 'name' must be ses in this fake", "invalid_body"));
    }
    let prev_from = st.provider.as_ref().and_then(|p| p.default_from_address.clone());
    st.provider = Some(Provider {
        name: "ses".into(),
        enabled: body["enabled"].as_bool().unwrap_or(true),
        access_key_id: id.into(),
        secret_access_key: secret.into(),
        region: region.into(),
        default_from_address: body["default_from_address"].as_str().map(str::to_string).or(prev_from),
        smtp: None,
    });
    Ok(())
}

fn public_view(st: &State, with_fields: bool) -> Value {
    let Some(p) = &st.provider else { return json!({}) };
    if !with_fields {
        return json!({"name": p.name, "enabled": p.enabled});
    }
    let mut creds = json!({"region": p.region});
    if let Some((host, port)) = &p.smtp {
        // The password is write-only, like the SES secret.
        creds = json!({"smtp_host": host, "smtp_port": port});
        if st.reveal_key_id {
            creds["smtp_user"] = json!(p.access_key_id);
        }
    } else if st.reveal_key_id {
        creds["accessKeyId"] = json!(p.access_key_id);
    }
    json!({"name": p.name, "enabled": p.enabled, "credentials": creds, "default_from_address": p.default_from_address, "settings": {}})
}

fn patch(st: &mut State, req: &Request) -> (u16, ResponseTemplate) {
    if let Some(refusal) = unauthorized(st, req) {
        return refusal;
    }
    let body: Value = match req.body_json() {
        Ok(v) => v,
        Err(_) => return (400, err(400, "Bad Request", "Invalid request payload JSON format", "invalid_body")),
    };
    st.last_secret_sent = body["credentials"]["secretAccessKey"].as_str().or(body["credentials"]["smtp_pass"].as_str()).map(str::to_string);
    if let Some(refusal) = lacks_scope(st, req, UPDATE_SCOPE) {
        return refusal;
    }
    if matches!(st.patch_faults.front(), Some(Fault::EchoingValidationError)) {
        st.patch_faults.pop_front();
        let secret = body["credentials"]["secretAccessKey"].as_str().unwrap_or("");
        let msg = format!("Payload validation error: 'String does not match pattern ^[A-Z]+$: {secret}' on property credentials.secretAccessKey");
        return (400, err(400, "Bad Request", &msg, "invalid_body"));
    }
    if let Some((t, status, apply_first)) = scripted(&mut st.patch_faults) {
        if apply_first {
            let _ = apply_patch(st, &body);
        }
        return (status, t);
    }
    match apply_patch(st, &body) {
        Ok(()) => (200, ResponseTemplate::new(200).set_body_json(public_view(st, true))),
        Err(t) => (400, t),
    }
}

fn get(st: &mut State, req: &Request) -> (u16, ResponseTemplate) {
    if let Some(refusal) = unauthorized(st, req) {
        return refusal;
    }
    if let Some(refusal) = lacks_scope(st, req, READ_SCOPE) {
        return refusal;
    }
    if let Some((t, status, _)) = scripted(&mut st.get_faults) {
        return (status, t);
    }
    if st.provider.is_none() {
        return (404, err(404, "Not Found", "Email provider has not been configured", "inexistent_email_provider"));
    }
    let q = req.url.query().unwrap_or("");
    let with_fields = q.contains("include_fields=true") && q.contains("credentials");
    (200, ResponseTemplate::new(200).set_body_json(public_view(st, with_fields)))
}

impl FakeAuth0 {
    /// Start the fake with an SES provider already holding `current_key_id`.
    pub async fn start(client_secret: &str, current_key_id: &str) -> FakeAuth0 {
        let state = Arc::new(Mutex::new(State {
            client_secret: client_secret.into(),
            provider: Some(Provider {
                name: "ses".into(),
                enabled: true,
                access_key_id: current_key_id.into(),
                secret_access_key: "(set before the test)".into(),
                region: "eu-west-1".into(),
                default_from_address: Some("no-reply@example.com".into()),
                smtp: None,
            }),
            reveal_key_id: true,
            tokens_issued: vec![],
            patch_faults: VecDeque::new(),
            get_faults: VecDeque::new(),
            token_faults: VecDeque::new(),
            seen: vec![],
            last_secret_sent: None,
            token_lifetime: 86_400,
            expired: vec![],
            granted_scopes: ALL_SCOPES.into(),
            token_scopes: Default::default(),
            secret_active_from: Instant::now(),
            rng: fastrand::Rng::with_seed(20261206),
            activation_max: std::time::Duration::from_secs(3),
            rotate_answer_delay: std::time::Duration::ZERO,
            rotated: vec![],
        }));
        let server = MockServer::start().await;
        for (m, p, op) in [("POST", "/oauth/token", "token"), ("PATCH", "/api/v2/emails/provider", "patch"), ("GET", "/api/v2/emails/provider", "get")] {
            Mock::given(method(m)).and(path(p)).respond_with(Responder { state: state.clone(), op }).mount(&server).await;
        }
        Mock::given(method("POST"))
            .and(wiremock::matchers::path_regex(r"^/api/v2/clients/[^/]+/rotate-secret$"))
            .respond_with(Responder { state: state.clone(), op: "rotate" })
            .mount(&server)
            .await;
        FakeAuth0 { server, state }
    }

    /// Draw activation delays of rotated secrets from `seed`, up to `max`.
    pub fn set_activation(&self, seed: u64, max: std::time::Duration) {
        let mut st = self.state.lock().unwrap();
        st.rng = fastrand::Rng::with_seed(seed);
        st.activation_max = max;
    }

    /// Hold every rotate-secret answer back this long after it applied.
    pub fn delay_rotate_answer(&self, d: std::time::Duration) {
        self.state.lock().unwrap().rotate_answer_delay = d;
    }

    /// The application's current client secret (what Auth0 accepts, once active).
    pub fn client_secret(&self) -> String {
        self.state.lock().unwrap().client_secret.clone()
    }

    /// Every secret rotate-secret issued so far.
    pub fn rotated(&self) -> Vec<String> {
        self.state.lock().unwrap().rotated.clone()
    }

    /// Whether `/oauth/token` accepts `secret` for the application now.
    pub fn accepts_secret(&self, secret: &str) -> bool {
        let st = self.state.lock().unwrap();
        st.client_secret == secret && Instant::now() >= st.secret_active_from
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn provider(&self) -> Option<Provider> {
        self.state.lock().unwrap().provider.clone()
    }

    /// Every request the fake answered, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn patches(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.iter().filter(|s| s.method == "PATCH").cloned().collect()
    }

    pub fn tokens_issued(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens_issued.clone()
    }

    pub fn script_patch(&self, f: Fault) {
        self.state.lock().unwrap().patch_faults.push_back(f);
    }

    /// Do what Auth0 does with the provider it holds: send a mail through
    /// SES (`SendEmail`, signed with the held key and secret) at `endpoint`
    /// (moto). moto records the use on the key (`GetAccessKeyLastUsed`:
    /// service `ses`), as AWS does. Whether SES accepts the mail does not
    /// matter; the signed request is the use.
    pub async fn send_mail(&self, endpoint: &str) {
        let p = self.provider().expect("Auth0 holds a provider");
        let creds = aws_credential_types::Credentials::new(p.access_key_id.clone(), p.secret_access_key.clone(), None, None, "auth0");
        let conf = aws_sdk_ses::config::Builder::new()
            .behavior_version(aws_sdk_ses::config::BehaviorVersion::latest())
            .region(aws_sdk_ses::config::Region::new(p.region.clone()))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .build();
        let ses = aws_sdk_ses::Client::from_conf(conf);
        let msg = aws_sdk_ses::types::Message::builder()
            .subject(aws_sdk_ses::types::Content::builder().data("Verify your e-mail").build().unwrap())
            .body(aws_sdk_ses::types::Body::builder().text(aws_sdk_ses::types::Content::builder().data("hello").build().unwrap()).build())
            .build();
        let _ = ses
            .send_email()
            .source(p.default_from_address.clone().unwrap_or_else(|| "no-reply@example.com".into()))
            .destination(aws_sdk_ses::types::Destination::builder().to_addresses("user@example.com").build())
            .message(msg)
            .send()
            .await;
    }

    /// Issue tokens that live `secs` seconds.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().token_lifetime = secs;
    }

    /// Change the application's client secret (as an admin rotating it in
    /// the Auth0 dashboard): the old one is refused from now on.
    pub fn set_client_secret(&self, secret: &str) {
        self.state.lock().unwrap().client_secret = secret.to_string();
    }

    /// Expire every token issued so far (as if their lifetime ran out early:
    /// clock skew, a key roll on Auth0's side).
    pub fn expire_tokens(&self) {
        let mut st = self.state.lock().unwrap();
        st.expired = st.tokens_issued.clone();
    }

    /// Make the tenant's current provider `smtp` on `host` (port 587), with
    /// the same user (key id) it held.
    pub fn use_smtp(&self, host: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(p) = st.provider.as_mut() {
            p.name = "smtp".into();
            p.region.clear();
            p.smtp = Some((host.into(), 587));
        }
    }

    /// Grant the application exactly these Management API scopes (space
    /// separated); tokens issued from now on carry them.
    pub fn set_granted_scopes(&self, scopes: &str) {
        self.state.lock().unwrap().granted_scopes = scopes.to_string();
    }

    /// Grant the application exactly these scopes (from the next token on).
    pub fn set_scopes(&self, scopes: &[&str]) {
        self.set_granted_scopes(&scopes.join(" "));
    }

    /// Queue a scripted answer for the next token request.
    pub fn script_token(&self, f: Fault) {
        self.state.lock().unwrap().token_faults.push_back(f);
    }

    pub fn set_reveal_key_id(&self, on: bool) {
        self.state.lock().unwrap().reveal_key_id = on;
    }
}
