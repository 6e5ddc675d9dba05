//! A fake of Security Hub's finding updates (moto has neither):
//! `BatchUpdateFindings` (`PATCH /findings/batchupdate`, Security Hub CSPM,
//! ASFF) and `BatchUpdateFindingsV2` (`PATCH /findingsv2/batchupdatev2`, the
//! new Security Hub, OCSF). It records every call with the region it was
//! signed for (the SigV4 credential scope), so tests can see that an update
//! went to the finding's own region, and answers like the real API:
//! `ProcessedFindings` / `UnprocessedFindings`, with scriptable unprocessed
//! findings, and `400` for requests the real API rejects.
//!
//! The V2 request and response shapes follow the botocore model
//! `securityhub/2018-10-26/service-2.json` (`BatchUpdateFindingsV2Request`:
//! `FindingIdentifiers[{CloudAccountUid, FindingInfoUid, MetadataProductUid}]`
//! or `MetadataUids`, never both; `Comment` 1–512 characters; `StatusId` one
//! of 0–5, 99; response members both required; unprocessed `ErrorCode` one of
//! `ResourceNotFoundException`, `ValidationException`,
//! `InternalServerException`, `ConflictException`).

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Which update API a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V1,
    V2,
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub api: Api,
    /// The region of the SigV4 credential scope the request was signed for.
    pub region: String,
    pub body: Value,
}

#[derive(Default)]
pub struct State {
    pub log: Vec<Call>,
    /// Answer the next N calls (either API) with every finding unprocessed.
    pub unprocessed_next: usize,
}

pub struct FakeSecurityHub {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
}

/// `Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/securityhub/aws4_request, …` → `us-east-1`.
fn signed_region(req: &Request) -> String {
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("")
        .to_string()
}

fn invalid(message: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({"Message": message, "Code": "InvalidInputException"}))
}

struct V1(Arc<Mutex<State>>);

impl Respond for V1 {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().unwrap_or(Value::Null);
        let mut st = self.0.lock().unwrap();
        st.log.push(Call { api: Api::V1, region: signed_region(req), body: body.clone() });
        let ids = body["FindingIdentifiers"].as_array().cloned().unwrap_or_default();
        if ids.is_empty() || body["Note"]["Text"].as_str().is_none_or(str::is_empty) {
            return invalid("Invalid request");
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

struct V2(Arc<Mutex<State>>);

/// Why the real API would refuse a V2 request, if it would.
fn v2_invalid(body: &Value) -> Option<&'static str> {
    let ids = body["FindingIdentifiers"].as_array();
    if ids.is_some() && body.get("MetadataUids").is_some() {
        return Some("MetadataUids and FindingIdentifiers cannot be used together");
    }
    let ids = ids.filter(|i| !i.is_empty() && i.len() <= 100)?;
    let complete =
        |i: &Value| ["CloudAccountUid", "FindingInfoUid", "MetadataProductUid"].iter().all(|k| i[*k].as_str().is_some_and(|s| !s.trim().is_empty()));
    if !ids.iter().all(complete) {
        return Some("FindingIdentifiers need CloudAccountUid, FindingInfoUid and MetadataProductUid");
    }
    if body["Comment"].as_str().is_some_and(|c| c.is_empty() || c.chars().count() > 512) {
        return Some("Comment must be 1 to 512 characters");
    }
    if let Some(s) = body.get("StatusId") {
        if !s.as_i64().is_some_and(|s| matches!(s, 0..=5 | 99)) {
            return Some("StatusId must be one of 0, 1, 2, 3, 4, 5, 99");
        }
    }
    if body.get("Comment").is_none() && body.get("StatusId").is_none() && body.get("SeverityId").is_none() {
        return Some("nothing to update");
    }
    None
}

impl Respond for V2 {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().unwrap_or(Value::Null);
        let mut st = self.0.lock().unwrap();
        st.log.push(Call { api: Api::V2, region: signed_region(req), body: body.clone() });
        if body["FindingIdentifiers"].as_array().is_none() {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"Message": "FindingIdentifiers or MetadataUids required", "Code": "ValidationException"}));
        }
        if let Some(why) = v2_invalid(&body) {
            return ResponseTemplate::new(400).set_body_json(json!({"Message": why, "Code": "ValidationException"}));
        }
        let ids = body["FindingIdentifiers"].as_array().cloned().unwrap_or_default();
        if st.unprocessed_next > 0 {
            st.unprocessed_next -= 1;
            let un: Vec<Value> = ids
                .iter()
                .map(|i| json!({"FindingIdentifier": i, "ErrorCode": "ResourceNotFoundException", "ErrorMessage": "Finding not found (eventual consistency)"}))
                .collect();
            return ResponseTemplate::new(200).set_body_json(json!({"ProcessedFindings": [], "UnprocessedFindings": un}));
        }
        let done: Vec<Value> = ids.into_iter().map(|i| json!({"FindingIdentifier": i})).collect();
        ResponseTemplate::new(200).set_body_json(json!({"ProcessedFindings": done, "UnprocessedFindings": []}))
    }
}

impl FakeSecurityHub {
    pub async fn start() -> FakeSecurityHub {
        let state = Arc::new(Mutex::new(State::default()));
        let server = MockServer::start().await;
        Mock::given(method("PATCH")).and(path("/findings/batchupdate")).respond_with(V1(state.clone())).mount(&server).await;
        Mock::given(method("PATCH")).and(path("/findingsv2/batchupdatev2")).respond_with(V2(state.clone())).mount(&server).await;
        FakeSecurityHub { server, state }
    }

    /// Bodies of the `BatchUpdateFindings` (V1) calls, in order.
    pub fn calls(&self) -> Vec<Value> {
        self.of(Api::V1).into_iter().map(|c| c.body).collect()
    }

    /// Bodies of the `BatchUpdateFindingsV2` calls, in order.
    pub fn calls_v2(&self) -> Vec<Value> {
        self.of(Api::V2).into_iter().map(|c| c.body).collect()
    }

    /// Every call of one API, with its region.
    pub fn of(&self, api: Api) -> Vec<Call> {
        self.state.lock().unwrap().log.iter().filter(|c| c.api == api).cloned().collect()
    }
}
