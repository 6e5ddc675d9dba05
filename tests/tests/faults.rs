//! Fault injection per connector, each with its documented outcome.
//!
//! AWS faults come from a fault proxy between the engine and moto
//! (`keyturn_testkit::fault_proxy`); Auth0 faults from the fake Auth0; SQS
//! redelivery, lost messages, duplicate deliveries, lease races and crashes
//! are covered in `rotation.rs` and `crash.rs`.

use std::sync::Arc;
use std::time::Duration;

use keyturn::saga::{Status, Step};
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::Fault as Auth0Fault;
use keyturn_testkit::env::{Options, RunningWorker, TestEnv};
use keyturn_testkit::fault_proxy::{Fault, FaultProxy};

async fn run(env: &TestEnv, proxy: &FaultProxy) -> keyturn::saga::Saga {
    let clients = env.clients_via(&proxy.endpoint).await;
    let engine = Arc::new(keyturn::app::engine(&env.config, &clients, "faulty".into()));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&id, Duration::from_secs(600)).await;
    w.stop().await;
    saga
}

fn retried(saga: &keyturn::saga::Saga, step: Step, code: &str) -> bool {
    saga.outcome.history.iter().any(|a| a.step == step && a.outcome == "retry" && a.code.as_deref() == Some(code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_service_failure_and_throttling_are_retried_and_the_rotation_succeeds() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    // More than the SDK's own three attempts, so the saga retries the step too.
    proxy.inject("CreateAccessKey", Fault::iam_service_failure(), 4);
    proxy.inject("UpdateAccessKey", Fault::iam_throttling(), 4);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(proxy.injected("CreateAccessKey"), 4);
    assert_eq!(proxy.injected("UpdateAccessKey"), 4);
    assert!(retried(&saga, Step::IssueNew, "ServiceFailure"), "{:#?}", saga.outcome.history);
    // Throttling is waited out in place (fewer steps at once), not retried by the saga.
    assert!(!retried(&saga, Step::DisableOld, "Throttling"), "{:#?}", saga.outcome.history);
    assert!(keyturn_testkit::capture::logs().contains("IAM is throttling"), "the worker backed off");
    assert_eq!(env.user_keys().await.len(), 1, "no extra key from the failed attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_throttling_backs_off_concurrency_instead_of_spending_step_attempts() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    // 15 refusals: the SDK tries each call 3 times, so the step is refused 5
    // times — more than its whole budget (max_attempts = 4). Spent as
    // attempts, that would end the saga compensated. (Slow on purpose: after
    // 15 refusals in a row the SDK's adaptive retry paces IAM calls at its
    // lowest rate, about one every 2 s, and regains speed with successes.)
    proxy.inject("CreateAccessKey", Fault::iam_throttling(), 15);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(proxy.injected("CreateAccessKey"), 15);
    assert!(!retried(&saga, Step::IssueNew, "Throttling"), "no attempt spent on throttling: {:#?}", saga.outcome.history);
    let issue = saga.outcome.history.iter().filter(|a| a.step == Step::IssueNew).collect::<Vec<_>>();
    assert_eq!(issue.len(), 1, "one attempt of issue_new, which succeeded: {issue:#?}");
    let backoffs = keyturn_testkit::capture::logs().lines().filter(|l| l.contains("IAM is throttling") && l.contains(&saga.saga_id)).count();
    assert_eq!(backoffs, 5, "each refused step lowered the limit and ran again");
    assert_eq!(env.user_keys().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_failure_past_the_budget_compensates_safely() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let old = env.old_keys[0].0.clone();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    proxy.inject("CreateAccessKey", Fault::iam_service_failure(), 1000);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Compensated, "{saga:#?}");
    assert_eq!(saga.outcome.failure.as_ref().unwrap().code, "ServiceFailure");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, old);
    assert!(keys[0].active, "the old key is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    proxy.inject("GetCallerIdentity", Fault::Reset, 4);
    proxy.inject("ListAccessKeys", Fault::Reset, 2);
    proxy.inject("UpdateItem", Fault::Reset, 2);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(proxy.injected("GetCallerIdentity"), 4);
    assert_eq!(proxy.injected("ListAccessKeys"), 2);
    assert_eq!(proxy.injected("UpdateItem"), 2);
    assert_eq!(env.user_keys().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_key_propagation_is_waited_out() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    proxy.inject("GetCallerIdentity", Fault::sts_not_propagated(), 5);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(retried(&saga, Step::ProveNew, "KeyNotPropagated"), "{:#?}", saga.outcome.history);
    assert_eq!(proxy.injected("GetCallerIdentity"), 5);
    // Auth0 got the key only after it authenticated.
    assert_eq!(env.auth0.patches().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_never_propagates_is_deleted_before_any_consumer_gets_it() {
    let env = TestEnv::new(Options { propagation_timeout: "3s", ..Options::default() }).await.unwrap();
    let old = env.old_keys[0].0.clone();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    proxy.inject("GetCallerIdentity", Fault::sts_not_propagated(), 10_000);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Compensated, "{saga:#?}");
    assert_eq!(saga.outcome.failure.as_ref().unwrap().code, "KeyNotPropagated");
    assert!(saga.effects.new_revoked);
    assert!(env.auth0.patches().is_empty(), "Auth0 never saw the broken key");
    let keys = env.user_keys().await;
    assert_eq!((keys.len(), keys[0].id.as_str(), keys[0].active), (1, old.as_str(), true));
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert!(n[0].document["recommended_action"].as_str().unwrap().contains("never authenticated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_5xx_is_retried_and_a_rate_limit_with_only_a_reset_header_is_honoured() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    env.auth0.script_patch(Auth0Fault::Internal);
    env.auth0.script_patch(Auth0Fault::RateLimited { retry_after: None, reset_in: 2 });
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let p = env.auth0.patches();
    assert_eq!(p.iter().map(|s| s.status).collect::<Vec<_>>(), [500, 429, 200]);
    assert!(p[2].at - p[1].at >= Duration::from_millis(1000), "x-ratelimit-reset honoured: {:?}", p[2].at - p[1].at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_call_that_times_out_is_retried() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    // Longer than the SDK's 15 s attempt timeout: the attempt is abandoned and retried.
    proxy.inject("GetCallerIdentity", Fault::Delay(Duration::from_secs(17)), 1);
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(proxy.calls("GetCallerIdentity") >= 2, "the timed-out call was retried: {}", proxy.calls("GetCallerIdentity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_error_quoting_the_secret_is_redacted_everywhere() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    env.auth0.script_patch(Auth0Fault::EchoingValidationError);
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    let saga = run(&env, &proxy).await;
    assert_eq!(saga.status, Status::Compensated, "{saga:#?}");
    let f = saga.outcome.failure.clone().unwrap();
    assert_eq!(f.code, "invalid_body");
    assert!(f.message.contains("[REDACTED]"), "the echoed secret was replaced: {}", f.message);
    let secret = env.auth0.state.lock().unwrap().last_secret_sent.clone().expect("the PATCH carried the secret");
    assert!(secret.len() >= 16);
    let notes: String = env.notifications(1, Duration::from_secs(10)).await.into_iter().map(|n| n.raw).collect();
    assert!(notes.contains("[REDACTED]"));
    let history = serde_json::to_string(&saga.outcome.history).unwrap();
    let logs = keyturn_testkit::capture::logs();
    for (name, text) in [("history", &history), ("notifications", &notes), ("logs", &logs), ("table", &env.table_dump().await)] {
        assert!(!text.contains(&secret), "the echoed secret reached the {name}");
    }
}

/// A plain rotation's calls, counted at the proxy (no fault injected): the
/// key list is read once (at `start`: no orphan check on a first attempt,
/// none for the success notice), the Auth0 client secret once for two
/// rotations even when the second needs a new token, and a success with
/// no quarantine state writes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_rotation_lists_keys_once_and_reads_the_client_secret_once() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    let clients = env.clients_via(&proxy.endpoint).await;
    let engine = Arc::new(keyturn::app::engine(&env.config, &clients, "counted".into()));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    for round in 0..2 {
        let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
        assert_eq!(env.wait_terminal(&id, Duration::from_secs(90)).await.status, Status::Succeeded);
        // The next rotation needs a new token, so a client secret.
        if round == 0 {
            env.auth0.expire_tokens();
        }
    }
    w.stop().await;
    assert_eq!(env.auth0.tokens_issued().len(), 2, "two tokens");
    assert_eq!(proxy.calls("GetSecretValue"), 1, "the second token used the cached client secret");
    assert_eq!(proxy.calls("ListAccessKeys"), 2, "one key listing per rotation, at start");
    assert_eq!(proxy.calls("PutItem"), 0, "no quarantine record written for successes with nothing to clear");
    assert_eq!(env.user_keys().await.len(), 1);
}
