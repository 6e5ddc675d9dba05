//! An HTTP fault injector between keyturn and moto.
//!
//! Every AWS request passes through it. It recognises the API action — the
//! `x-amz-target` header (JSON protocols: DynamoDB, SQS, KMS, Secrets
//! Manager) or the form body's `Action=` (query protocols: IAM, STS, SNS) —
//! and, while a scripted fault for that action has uses left, answers with
//! the fault instead of forwarding: an AWS error response as the service
//! would send it, or a connection reset. Everything else is forwarded to
//! moto unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub enum Fault {
    /// An error response: HTTP status, XML body (query protocols).
    QueryError { status: u16, code: &'static str, message: &'static str },
    /// Close the connection without answering (a reset mid-request).
    Reset,
    /// Answer normally, after this delay.
    Delay(Duration),
}

impl Fault {
    /// IAM's 500 `ServiceFailure`.
    pub fn iam_service_failure() -> Fault {
        Fault::QueryError {
            status: 500,
            code: "ServiceFailure",
            message: "Request processing has failed because of an unknown error, exception or failure.",
        }
    }
    /// IAM's 400 `Throttling`.
    pub fn iam_throttling() -> Fault {
        Fault::QueryError { status: 400, code: "Throttling", message: "Rate exceeded" }
    }
    /// STS answering a key that has not propagated yet.
    pub fn sts_not_propagated() -> Fault {
        Fault::QueryError { status: 403, code: "InvalidClientTokenId", message: "The security token included in the request is invalid." }
    }
}

/// A backend's rate limit: calls of `actions` above `per_sec` (a token
/// bucket holding at most one second's worth) are answered with IAM's
/// `Throttling`, as AWS throttles an account's IAM calls.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub actions: Vec<String>,
    pub per_sec: f64,
    tokens: f64,
    refilled: Instant,
    /// Calls let through, and when the first and the last of them came.
    pub admitted: usize,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Calls answered `Throttling`.
    pub refused: usize,
}

impl RateLimit {
    pub fn new(actions: &[&str], per_sec: f64) -> RateLimit {
        RateLimit {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            per_sec,
            tokens: per_sec,
            refilled: Instant::now(),
            admitted: 0,
            first: None,
            last: None,
            refused: 0,
        }
    }

    /// Whether a call of `action` now is let through (and counted).
    fn admit(&mut self, action: &str) -> bool {
        if !self.actions.iter().any(|a| a == action) {
            return true;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.per_sec).min(self.per_sec.max(1.0));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.admitted += 1;
            self.first.get_or_insert(now);
            self.last = Some(now);
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Calls let through per second, from the first to the last of them.
    pub fn admitted_per_sec(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => self.admitted.saturating_sub(1) as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

#[derive(Debug)]
struct Rule {
    action: String,
    /// Only calls whose form carries this parameter with this value
    /// (e.g. `UserName`), if given.
    only: Option<(String, String)>,
    fault: Fault,
    uses: usize,
}

impl Rule {
    fn matches(&self, action: &str, form: &[(String, String)]) -> bool {
        self.uses > 0 && self.action == action && self.only.as_ref().is_none_or(|(k, v)| form.iter().any(|(fk, fv)| fk == k && fv == v))
    }
}

#[derive(Default)]
pub struct Log {
    /// (action, fault injected?)
    pub seen: Vec<(String, bool)>,
    /// (action, access key id that signed it): which identity made each call.
    pub signers: Vec<(String, String)>,
    /// The form parameters of every query-protocol request (IAM, STS, SNS),
    /// decoded: (action, [(name, value)]). Requests carry no secrets there
    /// (answers do, and are not logged).
    pub forms: Vec<(String, Vec<(String, String)>)>,
    /// Per action: calls forwarded and the time moto took to answer them.
    pub upstream: BTreeMap<String, (usize, Duration)>,
}

impl Log {
    /// Parameters of every call of `action`.
    pub fn params(&self, action: &str) -> Vec<std::collections::HashMap<String, String>> {
        self.forms.iter().filter(|(a, _)| a == action).map(|(_, kv)| kv.iter().cloned().collect()).collect()
    }
    /// The access key ids that signed calls of `action`.
    pub fn signed_by(&self, action: &str) -> Vec<String> {
        self.signers.iter().filter(|(a, _)| a == action).map(|(_, k)| k.clone()).collect()
    }
}

/// `Authorization: AWS4-HMAC-SHA256 Credential=AKID/…` → `AKID`.
fn signer(headers: &hyper::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string()
}

/// A form body's pairs, percent-decoded.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub struct FaultProxy {
    pub endpoint: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// A rate limit in force, if any ([`FaultProxy::limit_rate`]).
    pub rate: Arc<Mutex<Option<RateLimit>>>,
    pub log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxy to `upstream`, a base URL like `http://127.0.0.1:5000`.
    pub async fn start(upstream: String) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let rate: Arc<Mutex<Option<RateLimit>>> = Arc::default();
        let log: Arc<Mutex<Log>> = Arc::default();
        let client = reqwest::Client::new();
        let (r2, l2, rate2) = (rules.clone(), log.clone(), rate.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (rules, log, rate, client, upstream) = (r2.clone(), l2.clone(), rate2.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (rules, log, rate, client, upstream) = (rules.clone(), log.clone(), rate.clone(), client.clone(), upstream.clone());
                        async move { handle(req, &rules, &rate, &log, &client, &upstream).await }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        Ok(FaultProxy { endpoint, rules, rate, log, task })
    }

    /// Answer calls of `actions` above `per_sec` with `Throttling` from now
    /// on (`None`: no limit). See [`RateLimit`].
    pub fn limit_rate(&self, limit: Option<RateLimit>) {
        *self.rate.lock().unwrap() = limit;
    }

    /// Inject `fault` into the next `uses` calls of `action` (e.g. "CreateAccessKey").
    pub fn inject(&self, action: &str, fault: Fault, uses: usize) {
        self.rules.lock().unwrap().push(Rule { action: action.into(), only: None, fault, uses });
    }

    /// Inject `fault` into the next `uses` calls of `action` whose form
    /// parameter `param` is `value` (e.g. `("UserName", "mailer")`: one
    /// IAM user's calls), leaving every other call of `action` alone.
    pub fn inject_where(&self, action: &str, (param, value): (&str, &str), fault: Fault, uses: usize) {
        self.rules.lock().unwrap().push(Rule { action: action.into(), only: Some((param.into(), value.into())), fault, uses });
    }

    /// Stop injecting faults into `action`: every rule for it is spent.
    pub fn stop(&self, action: &str) {
        self.rules.lock().unwrap().iter_mut().filter(|r| r.action == action).for_each(|r| r.uses = 0);
    }

    /// How many calls of `action` were answered with a fault.
    pub fn injected(&self, action: &str) -> usize {
        self.log.lock().unwrap().seen.iter().filter(|(a, f)| a == action && *f).count()
    }

    /// How many calls of `action` passed through.
    pub fn calls(&self, action: &str) -> usize {
        self.log.lock().unwrap().seen.iter().filter(|(a, _)| a == action).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct ResetConnection;
impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: connection reset")
    }
}
impl std::error::Error for ResetConnection {}

fn action_of(headers: &hyper::HeaderMap, body: &[u8]) -> String {
    if let Some(t) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return t.rsplit('.').next().unwrap_or(t).to_string();
    }
    String::from_utf8_lossy(body).split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("").to_string()
}

async fn handle(
    req: Request<Incoming>,
    rules: &Mutex<Vec<Rule>>,
    rate: &Mutex<Option<RateLimit>>,
    log: &Mutex<Log>,
    client: &reqwest::Client,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, ResetConnection> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let action = action_of(&parts.headers, &body);
    let form = if parts.headers.get("x-amz-target").is_none() && !action.is_empty() { form_pairs(&body) } else { vec![] };
    let fault = {
        let mut rules = rules.lock().unwrap();
        match rules.iter_mut().find(|r| r.matches(&action, &form)) {
            Some(r) => {
                r.uses -= 1;
                Some(r.fault.clone())
            }
            None => None,
        }
    };
    let fault = match fault {
        None if rate.lock().unwrap().as_mut().is_some_and(|r| !r.admit(&action)) => Some(Fault::iam_throttling()),
        other => other,
    };
    {
        let mut log = log.lock().unwrap();
        log.signers.push((action.clone(), signer(&parts.headers)));
        if parts.headers.get("x-amz-target").is_none() && !action.is_empty() {
            log.forms.push((action.clone(), form));
        }
        log.seen.push((action.clone(), matches!(fault, Some(Fault::QueryError { .. }) | Some(Fault::Reset))));
    }
    match fault {
        Some(Fault::Reset) => return Err(ResetConnection),
        Some(Fault::QueryError { status, code, message }) => {
            let xml = format!(
                r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>{}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-{}</RequestId></ErrorResponse>"#,
                if status >= 500 { "Receiver" } else { "Sender" },
                uuid::Uuid::new_v4()
            );
            return Ok(Response::builder().status(status).header("content-type", "text/xml").body(Full::new(Bytes::from(xml))).unwrap());
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let url = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut fwd = client.request(parts.method.clone(), url).body(body.to_vec());
    for (k, v) in parts.headers.iter() {
        if k != "content-length" {
            fwd = fwd.header(k, v);
        }
    }
    let sent = Instant::now();
    let Ok(resp) = fwd.send().await else { return Err(ResetConnection) };
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers().iter() {
        if k != "transfer-encoding" && k != "connection" {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    {
        let mut log = log.lock().unwrap();
        let e = log.upstream.entry(action).or_default();
        e.0 += 1;
        e.1 += sent.elapsed();
    }
    Ok(out.body(Full::new(bytes)).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_lets_one_seconds_worth_through_then_refuses_only_its_actions() {
        let mut r = RateLimit::new(&["CreateAccessKey"], 5.0);
        let admitted = (0..8).filter(|_| r.admit("CreateAccessKey")).count();
        assert_eq!((admitted, r.admitted, r.refused), (5, 5, 3), "a bucket of one second's worth, refilled at 5/s");
        assert!((0..100).all(|_| r.admit("GetItem")), "other actions are not limited");
        std::thread::sleep(Duration::from_millis(450));
        assert!(r.admit("CreateAccessKey"), "refilled after 0.45 s at 5/s");
    }
}
