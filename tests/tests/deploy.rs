//! Deployment: the template's worker policy is enough for a full rotation.
//!
//! moto enforces IAM here (`INITIAL_NO_AUTH_ACTION_COUNT`): it checks every
//! request's action against the caller's policies and verifies signatures.
//! moto does not match resource ARNs in policies (a resource-scoped statement
//! never matches there), so this test widens every statement of the
//! template's worker policy to `Resource: "*"` and drops its conditions, but
//! keeps the action list exactly as the template has it
//! (`infra/check_policy.py --emit-widened`). The resource scoping itself is
//! proven separately by `infra/check_policy.py` in CI.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use keyturn::saga::Status;
use keyturn::store::Created;
use keyturn_testkit::env::{Options, RunningWorker, TestEnv};

fn widened_worker_policy() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "infra/check_policy.py",
            "infra/keyturn-stack.yaml",
            "--emit-widened",
            "WorkerPolicy",
            "--param",
            "ReferencedSecretArns=arn:aws:secretsmanager:us-east-1:123456789012:secret:keyturn/auth0-AbCdEf",
        ])
        .output()
        .expect("python3 runs infra/check_policy.py (needs PyYAML: pip install 'cfn-lint>=1,<2')");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_worker_policy_is_enough_for_a_full_rotation() {
    let policy = widened_worker_policy();
    let actions: serde_json::Value = serde_json::from_str(&policy).unwrap();
    let n_actions: usize = actions["Statement"].as_array().unwrap().iter().map(|s| s["Action"].as_array().unwrap().len()).sum();
    assert!(n_actions >= 20, "{policy}");

    // One moto-only addition: moto authorises `dynamodb:TransactWriteItems`
    // as an action of its own, which AWS does not have (AWS authorises a
    // transaction by its item actions: PutItem, UpdateItem, DeleteItem,
    // ConditionCheckItem — all in the template). Everything else is the
    // template's list, exactly.
    assert!(!policy.contains("TransactWriteItems"), "AWS has no such action; the template must not need it");
    let mut doc: serde_json::Value = serde_json::from_str(&policy).unwrap();
    doc["Statement"].as_array_mut().unwrap().push(serde_json::json!({
        "Sid": "MotoOnlyTransactWriteItems", "Effect": "Allow", "Action": ["dynamodb:TransactWriteItems"], "Resource": "*"
    }));

    let env = TestEnv::new(Options { enforce_auth: true, intake: true, ..Options::default() }).await.unwrap();
    let worker_clients = env.clients_for_policy("keyturn-worker", &doc.to_string()).await.unwrap();
    let engine = Arc::new(keyturn::app::engine(&env.config, &worker_clients, "least-privilege".into()));
    let intake = keyturn::app::intake_queue(&env.config, &worker_clients).map(Arc::new);
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, intake);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(saga.history.iter().all(|a| a.outcome == "ok"), "no step needed a retry: {:#?}", saga.history);

    // The same worker is refused what the policy does not grant: enforcement is real.
    let denied = worker_clients.iam.list_users().send().await.unwrap_err();
    let e = keyturn::error::aws("iam", "ListUsers", denied);
    assert!(e.to_string().contains("AccessDenied"), "{e}");
}
