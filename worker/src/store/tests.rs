//! The stored form of a saga does not change when the record's Rust layout
//! does: items captured from an earlier keyturn read back equal and are
//! written back byte for byte.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{codec, Store};
use crate::saga::*;

/// Two saga items as keyturn wrote them before the record's fields were
/// grouped (captured with that code): `running`, with every field set, and
/// `ended`, a fresh saga that finished (the optional fields left out).
const CAPTURED: &str = include_str!("../../../tests/fixtures/stored/saga-items.json");

fn store() -> Store {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
        .build();
    Store::new(aws_sdk_dynamodb::Client::from_conf(conf), "keyturn")
}

/// An item as JSON in DynamoDB's own notation (`{"S": ..}`, `{"N": ..}`).
fn to_json(item: &HashMap<String, AttributeValue>) -> serde_json::Value {
    let map: BTreeMap<&String, serde_json::Value> = item
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AttributeValue::S(s) => serde_json::json!({ "S": s }),
                AttributeValue::N(n) => serde_json::json!({ "N": n }),
                other => panic!("{k}: an attribute type the saga item does not use: {other:?}"),
            };
            (k, v)
        })
        .collect();
    serde_json::to_value(map).unwrap()
}

fn from_json(v: &serde_json::Value) -> HashMap<String, AttributeValue> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match (v.get("S"), v.get("N")) {
                (Some(s), _) => AttributeValue::S(s.as_str().unwrap().into()),
                (_, Some(n)) => AttributeValue::N(n.as_str().unwrap().into()),
                _ => panic!("{k}: {v}"),
            };
            (k.clone(), v)
        })
        .collect()
}

/// A running saga with every field of the record set to something other
/// than its default, so none is skipped when written.
fn running() -> Saga {
    let mut s = Saga::new("s-full".into(), "rot-a".into(), "iam_access_key:app".into(), "schedule".into(), 1_000, 0xabc);
    s.status = Status::Running;
    s.step = Step::RetireOld;
    s.run.step_attempts = 2;
    s.run.step_started_at = 5_000;
    s.run.not_before = 6_000;
    s.run.grace_until = Some(7_000);
    s.keys.old_keys = vec![KeyRef { id: "AKIAOLD".into(), active: false, created_at: Some(500) }];
    s.keys.new_key = Some("AKIANEW".into());
    s.keys.secret_stored = true;
    s.keys.issue_intents = 1;
    s.keys.issue_intent_at = vec![1_500];
    s.effects.target = TargetState::HoldsNew;
    s.effects.switched_at = Some(3_000);
    s.effects.old_disabled = true;
    s.effects.old_deleted = true;
    s.effects.new_revoked = true;
    s.effects.old_restored = true;
    s.outcome.closing = Some(Status::Succeeded);
    s.outcome.failure = Some(Failure { step: Step::ProveNew, code: "denied".into(), message: "no".into(), operator_fixable: true });
    s.outcome.compensations = vec!["revoked AKIANEW".into()];
    s.outcome.history = vec![Attempt {
        at: 2_000,
        step: Step::IssueNew,
        attempt: 1,
        outcome: "retry".into(),
        code: Some("throttled".into()),
        message: Some("slow down".into()),
    }];
    s.updated_at = 8_000;
    s.findings = vec![FindingRef {
        id: "F".into(),
        product_arn: "P".into(),
        kind: FindingKind::V2,
        region: Some("eu-west-1".into()),
        account_id: Some("123456789012".into()),
    }];
    s.person.manual = true;
    s.person.deadline = Some(9_000);
    s.person.prompts = 3;
    s.resolution.attention = Some(Attention {
        since: 4_000,
        next_check: 4_500,
        checks: 2,
        verdict: Some(Verdict { keep: Some(Keep::New), reason: "used by ses".into(), at: 4_400 }),
        announced: Some(Keep::New),
    });
    s.resolution.resolved = Some(Keep::Old);
    s.resolution.usage_since = Some(4_600);
    s.resolution.new_disabled = true;
    s.resolution.endings = 1;
    s.origin.correlation_id = Some("corr-1".into());
    s.origin.request = Some(RequestInfo {
        requester: "ops".into(),
        reason: "leaked".into(),
        idempotency_key: "k-1".into(),
        sender: Some("AIDA".into()),
        event_account: Some("123456789012".into()),
        event_source: Some("acme.tools".into()),
    });
    s.origin.overrides = Overrides { grace_period: Some(60_000), person_deadline: Some(120_000) };
    s.exposure = Some(Exposure {
        key_id: "AKIAOLD".into(),
        role: ExposedRole::Old,
        seen_at: 2_500,
        event: "arn:aws:health:x".into(),
        keep_inactive: true,
        inactive_at: Some(2_600),
        deleted_at: Some(2_700),
        follow_up: true,
    });
    s
}

/// A fresh saga that ended: everything optional left at its default.
fn ended() -> Saga {
    let mut s = Saga::new("s-min".into(), "rot-b".into(), "scim_token:idc".into(), "manual".into(), 10_000, 1);
    s.status = Status::Succeeded;
    s.step = Step::Finalize;
    s.updated_at = 11_000;
    s
}

#[test]
fn captured_saga_items_read_back_equal_and_write_back_identical() {
    let captured: serde_json::Value = serde_json::from_str(CAPTURED).unwrap();
    let store = store();
    for (name, saga, due_at) in [("running", running(), 12_345), ("ended", ended(), 0)] {
        let item = from_json(&captured[name]);
        let stored = codec::decode(&item).unwrap();
        assert_eq!(stored.saga, saga, "{name}: the captured item reads back as the same saga");
        let written = store.item(&saga, 7, due_at).unwrap();
        assert_eq!(written["doc"], item["doc"], "{name}: the doc attribute, byte for byte");
        assert_eq!(to_json(&written), captured[name], "{name}: every attribute of the item");
    }
}
