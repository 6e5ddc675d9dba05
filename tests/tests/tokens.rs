//! Management API tokens: renewed in proportion to their lifetime, and once
//! (at once) when Auth0 says a cached token expired. Through the fake Auth0,
//! which issues tokens with the lifetime a test sets and answers Auth0's
//! expired-JWT 401 for tokens it expired.

use std::sync::Arc;
use std::time::Duration;

use keyturn::saga::Status;
use keyturn::store::Created;
use keyturn_testkit::env::{Options, RunningWorker, TestEnv};

async fn rotate_once(env: &TestEnv, engine: &Arc<keyturn::engine::Engine<keyturn::queue::SqsQueue>>) -> keyturn::saga::Saga {
    let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("expected a new saga") };
    env.wait_terminal(&id, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_reused_not_fetched_per_call() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    // 60 s: a fixed one-minute margin would renew before every call.
    env.auth0.set_token_lifetime(60);
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let saga = rotate_once(&env, &engine).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let calls = env.auth0.seen().iter().filter(|s| s.path == "/api/v2/emails/provider").count();
    assert!(calls >= 2, "a PATCH and a GET at least: {calls}");
    assert_eq!(env.auth0.tokens_issued().len(), 1, "one token for {calls} Management API calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_renewed_once_and_the_call_retried() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    assert_eq!(rotate_once(&env, &engine).await.status, Status::Succeeded);
    assert_eq!(env.auth0.tokens_issued().len(), 1);
    // Auth0 now says the cached (day-long) token expired.
    env.auth0.expire_tokens();
    let saga = rotate_once(&env, &engine).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(env.auth0.tokens_issued().len(), 2, "exactly one renewal");
    let statuses: Vec<u16> = env.auth0.seen().iter().filter(|s| s.path == "/api/v2/emails/provider").map(|s| s.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1, "one 401, then success: {statuses:?}");
    assert!(!saga.outcome.history.iter().any(|a| a.outcome == "retry"), "the renewal is not a step retry: {:#?}", saga.outcome.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_changed_in_secrets_manager_is_read_again_when_auth0_refuses_the_cached_one() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    assert_eq!(rotate_once(&env, &engine).await.status, Status::Succeeded);
    // An admin rotates the client secret in Auth0 and stores the new one in
    // Secrets Manager; the worker still caches the old value (5 min), and
    // its day-long token expires.
    let fresh = format!("changed-{}", uuid::Uuid::new_v4().simple());
    env.auth0.set_client_secret(&fresh);
    env.clients
        .secrets
        .put_secret_value()
        .secret_id("keyturn/auth0")
        .secret_string(serde_json::json!({ "client_secret": fresh }).to_string())
        .send()
        .await
        .unwrap();
    env.auth0.expire_tokens();
    let saga = rotate_once(&env, &engine).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let token_statuses: Vec<u16> = env.auth0.seen().iter().filter(|s| s.path == "/oauth/token").map(|s| s.status).collect();
    assert_eq!(token_statuses, vec![200, 401, 200], "the cached secret refused once, then the fresh one taken");
    assert!(!saga.outcome.history.iter().any(|a| a.outcome == "retry"), "re-reading the secret is not a step retry: {:#?}", saga.outcome.history);
}

/// Issue 22: a rotation refused for a missing scope, the scope granted, the
/// rotation run again: it succeeds at once, although the worker's cached
/// token (a day-long one, Auth0's default) was issued without the scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_granted_after_a_refusal_works_on_the_next_run() {
    use keyturn_testkit::auth0_fake::{READ_SCOPE, UPDATE_SCOPE};
    let env = TestEnv::new(Options::default()).await.unwrap();
    env.auth0.set_token_lifetime(86_400);
    env.auth0.set_scopes(&[READ_SCOPE]);
    let engine = Arc::new(env.engine("w1"));
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let refused = rotate_once(&env, &engine).await;
    assert_eq!(refused.status, Status::Compensated, "{refused:#?}");
    assert_eq!(refused.outcome.failure.as_ref().map(|f| f.code.as_str()), Some("insufficient_scope"));
    assert_eq!(env.auth0.tokens_issued().len(), 1, "a fresh token's 403 stands: no second token");
    // The advice of the notice: grant the scope, run the rotation again.
    env.auth0.set_scopes(&[READ_SCOPE, UPDATE_SCOPE]);
    let saga = rotate_once(&env, &engine).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(env.auth0.tokens_issued().len(), 2, "exactly one new token");
    let patches: Vec<u16> = env.auth0.patches().iter().map(|s| s.status).collect();
    assert_eq!(patches, vec![403, 403, 200], "refused, refused with the cached token, accepted with the new one");
    assert!(!saga.outcome.history.iter().any(|a| a.outcome == "retry"), "the refresh is not a step retry: {:#?}", saga.outcome.history);
}

/// `Target::warm`, which an emergency's early steps start: the token is
/// fetched ahead of the push, and the push then uses it rather than ask
/// again. A token endpoint that refuses the warm-up costs only that try
/// (nothing kept, nothing raised): the next asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmed_target_pushes_with_the_token_fetched_ahead() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let engine = Arc::new(env.engine("w1"));
    let target = engine.rotations().get("auth0-ses").unwrap().target.clone();
    env.auth0.script_token(keyturn_testkit::auth0_fake::Fault::InsufficientScope);
    target.warm().await;
    assert!(env.auth0.tokens_issued().is_empty(), "the refused warm-up kept no token");
    target.warm().await;
    assert_eq!(env.auth0.tokens_issued().len(), 1, "the warm-up fetched the token");
    let w = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let saga = rotate_once(&env, &engine).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(!env.auth0.patches().is_empty(), "the push reached Auth0");
    assert_eq!(env.auth0.tokens_issued().len(), 1, "the push used the token fetched ahead");
}
