//! A faithful fake of the GitHub Actions secrets API (repository,
//! environment and organisation variants), after docs.github.com REST
//! "Actions secrets":
//! * `GET …/secrets/public-key` → `{key_id, key}`: a real X25519 key pair;
//!   the fake opens every `encrypted_value` with its secret key, as GitHub
//!   does, and refuses one it cannot open or one sealed for another `key_id`
//!   (422), so a test sees exactly the plaintext keyturn sealed;
//! * `PUT …/secrets/{name}` → 201 created / 204 updated; values are never
//!   returned, `GET …/secrets/{name}` answers `{name, created_at, updated_at}`;
//! * bearer token checked (401 `Bad credentials`); scripted faults per
//!   secret name: 422, 500, and the primary rate limit (403 with
//!   `x-ratelimit-remaining: 0` and `x-ratelimit-reset`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A scripted answer for the next PUT of one secret.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 422 Validation Failed.
    Invalid,
    /// 500, not applied.
    Internal,
    /// 403 primary rate limit, reset in this many seconds.
    RateLimited { reset_in: u64 },
}

#[derive(Default)]
pub struct State {
    pub token: String,
    pub key_id: String,
    /// Plaintext as keyturn sealed it, and how often it was written.
    pub values: HashMap<String, (String, u32)>,
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub calls: Vec<(String, String, u16)>,
}

pub struct FakeGitHub {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    secret_key: Arc<crypto_box::SecretKey>,
}

struct R(Arc<Mutex<State>>, Arc<crypto_box::SecretKey>);

fn gh_err(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"message": message, "documentation_url": "https://docs.github.com/rest/actions/secrets", "status": status.to_string()}))
}

impl Respond for R {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        let p = req.url.path().to_string();
        let (status, t) = respond(&mut st, &self.1, req, &p);
        st.calls.push((req.method.to_string(), p, status));
        t
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn respond(st: &mut State, sk: &crypto_box::SecretKey, req: &Request, p: &str) -> (u16, ResponseTemplate) {
    let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("Bearer {}", st.token) && auth != format!("token {}", st.token) {
        return (401, gh_err(401, "Bad credentials"));
    }
    if p.ends_with("/secrets/public-key") && req.method.as_str() == "GET" {
        let key = aws_smithy_types::base64::encode(sk.public_key().as_bytes());
        return (200, ResponseTemplate::new(200).set_body_json(json!({"key_id": st.key_id, "key": key})));
    }
    let Some(name) = p.rsplit_once("/secrets/").map(|(_, n)| n.to_string()) else { return (404, gh_err(404, "Not Found")) };
    match req.method.as_str() {
        "PUT" => {
            match st.faults.get_mut(&name).and_then(VecDeque::pop_front) {
                Some(Fault::Invalid) => return (422, gh_err(422, "Validation Failed")),
                Some(Fault::Internal) => return (500, gh_err(500, "Server Error")),
                Some(Fault::RateLimited { reset_in }) => {
                    return (
                        403,
                        gh_err(403, "API rate limit exceeded for user.")
                            .insert_header("x-ratelimit-limit", "5000")
                            .insert_header("x-ratelimit-remaining", "0")
                            .insert_header("x-ratelimit-reset", (now() + reset_in).to_string().as_str()),
                    )
                }
                None => {}
            }
            let body: Value = req.body_json().unwrap_or(Value::Null);
            if body["key_id"].as_str() != Some(st.key_id.as_str()) {
                return (422, gh_err(422, "Bad key_id"));
            }
            let opened = body["encrypted_value"]
                .as_str()
                .and_then(|v| aws_smithy_types::base64::decode(v).ok())
                .and_then(|b| sk.unseal(&b).ok())
                .and_then(|b| String::from_utf8(b).ok());
            let Some(plain) = opened else { return (422, gh_err(422, "Bad encrypted_value")) };
            let entry = st.values.entry(name).or_insert((String::new(), 0));
            entry.0 = plain;
            entry.1 += 1;
            if entry.1 == 1 {
                (201, ResponseTemplate::new(201))
            } else {
                (204, ResponseTemplate::new(204))
            }
        }
        "GET" => match st.values.get(&name) {
            Some(_) => (
                200,
                ResponseTemplate::new(200)
                    .set_body_json(json!({"name": name, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-11-24T00:00:00Z"})),
            ),
            None => (404, gh_err(404, "Not Found")),
        },
        _ => (405, gh_err(405, "Method Not Allowed")),
    }
}

impl FakeGitHub {
    /// A fake holding `id_name = old_id` and `secret_name = old_secret`, accepting `token`.
    pub async fn start(token: &str, values: &[(&str, &str)]) -> FakeGitHub {
        let sk = Arc::new(crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng));
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            key_id: "568250167242549743".into(),
            values: values.iter().map(|(k, v)| (k.to_string(), (v.to_string(), 1))).collect(),
            ..State::default()
        }));
        let server = MockServer::start().await;
        Mock::given(path_regex(".*")).respond_with(R(state.clone(), sk.clone())).mount(&server).await;
        FakeGitHub { server, state, secret_key: sk }
    }

    pub fn value(&self, name: &str) -> Option<String> {
        self.state.lock().unwrap().values.get(name).map(|(v, _)| v.clone())
    }

    pub fn script(&self, name: &str, f: Fault) {
        self.state.lock().unwrap().faults.entry(name.into()).or_default().push_back(f);
    }

    /// The calls made: (method, path, status).
    pub fn calls(&self) -> Vec<(String, String, u16)> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The public key keyturn must seal for (tests comparing).
    pub fn public_key(&self) -> [u8; 32] {
        *self.secret_key.public_key().as_bytes()
    }
}
