//! A fake of Security Hub's `BatchUpdateFindings` (moto lacks it): records
//! every call and answers `ProcessedFindings`/`UnprocessedFindings` like the
//! real API, with scriptable unprocessed findings.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Default)]
pub struct State {
    pub calls: Vec<Value>,
    /// Answer the next N calls with every finding unprocessed.
    pub unprocessed_next: usize,
}

pub struct FakeSecurityHub {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().unwrap_or(Value::Null);
        let mut st = self.0.lock().unwrap();
        st.calls.push(body.clone());
        let ids = body["FindingIdentifiers"].as_array().cloned().unwrap_or_default();
        if ids.is_empty() || body["Note"]["Text"].as_str().is_none_or(str::is_empty) {
            return ResponseTemplate::new(400).set_body_json(json!({"Message": "Invalid request", "Code": "InvalidInputException"}));
        }
        if st.unprocessed_next > 0 {
            st.unprocessed_next -= 1;
            let un: Vec<Value> = ids
                .iter()
                .map(|i| json!({"FindingIdentifier": i, "ErrorCode": "FindingNotFound", "ErrorMessage": "Finding not found (eventual consistency)"}))
                .collect();
            return ResponseTemplate::new(200).set_body_json(json!({"ProcessedFindings": [], "UnprocessedFindings": un}));
        }
        ResponseTemplate::new(200).set_body_json(json!({"ProcessedFindings": ids, "UnprocessedFindings": []}))
    }
}

impl FakeSecurityHub {
    pub async fn start() -> FakeSecurityHub {
        let state = Arc::new(Mutex::new(State::default()));
        let server = MockServer::start().await;
        Mock::given(method("PATCH")).and(path("/findings/batchupdate")).respond_with(Responder(state.clone())).mount(&server).await;
        FakeSecurityHub { server, state }
    }

    pub fn calls(&self) -> Vec<Value> {
        self.state.lock().unwrap().calls.clone()
    }
}
