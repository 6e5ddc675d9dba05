//! The Entra provisioning target on its own against the Graph fake: Test
//! connection before Save, only `SecretToken` changed, a refused token saves
//! nothing, 429 honoured, quarantine seen, a wrong client secret. The whole
//! rotation (with the person's steps) is in `scim.rs`.

use secrecy::SecretString;
use serde_json::json;

use keyturn::connectors::entra::{EntraProvisioning, EntraSettings, CREDENTIAL_FAILURE};
use keyturn::connectors::{NewCredential, RetryPolicy, Target};
use keyturn::saga::Verification;
use keyturn::secrets::{SecretRef, SecretResolver};
use keyturn_testkit::env::{Options, TestEnv};
use keyturn_testkit::graph_fake::{FakeGraph, CLIENT_ID, JOB, SP, TENANT};

const NEW: &str = "scim-token-new-0123456789abcdefghij";
const OLD: &str = "scim-token-old-0123456789abcdefghij";
const GRAPH_SECRET: &str = "graph-client-secret-0123456789";

async fn target(env: &TestEnv, graph: &FakeGraph, secret_name: &str) -> EntraProvisioning {
    env.clients.secrets.create_secret().name(secret_name).secret_string(GRAPH_SECRET).send().await.unwrap();
    EntraProvisioning::new(EntraSettings {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret: SecretRef::SecretsManager { secret_id: secret_name.into(), json_key: None },
        service_principal_id: SP.into(),
        job_id: JOB.into(),
        scim_endpoint: "https://scim.us-east-1.amazonaws.com/abc/scim/v2/".into(),
        login_base_url: graph.server.uri(),
        graph_base_url: graph.server.uri(),
        http: keyturn::connectors::http_client(),
        clock: keyturn::clock::system(),
        secrets: SecretResolver::new(env.clients.secrets.clone()),
        retry: RetryPolicy::default(),
        restart_wait: None,
    })
}

fn cred(token: &str) -> NewCredential {
    NewCredential { id: "scim token created 2026-11-21".into(), secret: SecretString::from(token.to_string()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_tests_the_token_then_saves_only_it() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let graph = FakeGraph::start(GRAPH_SECRET, NEW, OLD).await;
    let t = target(&env, &graph, "entra/a").await;
    t.push(&cred(NEW), &[]).await.unwrap();
    assert_eq!(graph.saved_token().as_deref(), Some(NEW));
    {
        let st = graph.state.lock().unwrap();
        assert!(st.secrets.contains(&json!({"key": "NotificationEmail", "value": "ops@example.com"})), "other keys kept: {:?}", st.secrets);
        assert!(st.secrets.contains(&json!({"key": "BaseAddress", "value": "https://scim.us-east-1.amazonaws.com/abc/scim/v2/"})));
        let order: Vec<&str> = st
            .calls
            .iter()
            .map(|(m, p, _)| {
                if p.ends_with("token") {
                    "token"
                } else if p.ends_with("validateCredentials") {
                    "test"
                } else if m == "GET" {
                    "read"
                } else {
                    "save"
                }
            })
            .collect();
        assert_eq!(order, ["token", "test", "read", "save"], "Test connection before Save");
    }
    assert_eq!(t.verify("", &[]).await.unwrap(), Verification::Opaque);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_saves_nothing() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let graph = FakeGraph::start(GRAPH_SECRET, NEW, OLD).await;
    let t = target(&env, &graph, "entra/b").await;
    let e = t.push(&cred("not-the-token-iam-identity-center-made"), &[]).await.unwrap_err();
    assert_eq!(e.code(), CREDENTIAL_FAILURE);
    assert!(!e.is_retryable() && !e.may_have_applied(), "{e}");
    assert!(e.to_string().contains("Entra rejected the new token in Test connection"), "{e}");
    assert!(!e.to_string().contains("not-the-token"), "the token is not in the error");
    assert_eq!(graph.saved_token().as_deref(), Some(OLD), "nothing saved");
    assert!(!graph.state.lock().unwrap().calls.iter().any(|(m, _, _)| m == "PUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_honoured_and_quarantine_is_seen() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let graph = FakeGraph::start(GRAPH_SECRET, NEW, OLD).await;
    let t = target(&env, &graph, "entra/c").await;
    graph.state.lock().unwrap().throttle_next = 2;
    let t0 = std::time::Instant::now();
    t.push(&cred(NEW), &[]).await.unwrap();
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2), "Retry-After: 1, twice: {:?}", t0.elapsed());
    assert_eq!(graph.state.lock().unwrap().calls.iter().filter(|(_, _, s)| *s == 429).count(), 2);
    assert_eq!(graph.saved_token().as_deref(), Some(NEW));
    graph.state.lock().unwrap().job = json!({"status": {"code": "Quarantine", "quarantine": {"reason": "EncounteredQuarantineException",
        "error": {"code": CREDENTIAL_FAILURE, "message": "Failed to validate credentials"}}}});
    assert!(matches!(t.verify("", &[]).await.unwrap(), Verification::Unhealthy(m) if m.contains("quarantine")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_a_permanent_error() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let graph = FakeGraph::start("some-other-secret-value-xyz", NEW, OLD).await;
    let t = target(&env, &graph, "entra/d").await;
    let e = t.push(&cred(NEW), &[]).await.unwrap_err();
    assert_eq!(e.code(), "invalid_client");
    assert!(!e.is_retryable() && e.operator_fixable());
    assert!(!e.to_string().contains(GRAPH_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_waits_for_a_run_and_judges_it() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let graph = FakeGraph::start(GRAPH_SECRET, NEW, OLD).await;
    let mut t = target(&env, &graph, "entra/e").await;
    t = EntraProvisioning::new(EntraSettings { restart_wait: Some(std::time::Duration::from_secs(2)), ..t.into_settings() });
    // The expiring token had the job quarantined; the restart after Save lifts it and the run succeeds.
    graph.state.lock().unwrap().job = json!({"status": {"code": "Quarantine", "quarantine": {"reason": "EncounteredQuarantineException",
        "error": {"code": CREDENTIAL_FAILURE, "message": "token expired"}}, "lastExecution": {"state": "Failed", "timeBegan": "2026-11-20T08:00:00Z", "timeEnded": "2026-11-20T08:00:05Z",
        "error": {"code": CREDENTIAL_FAILURE, "message": "token expired"}}}});
    assert_eq!(t.verify("", &[]).await.unwrap(), Verification::Opaque);
    {
        let st = graph.state.lock().unwrap();
        assert_eq!(st.restarts, vec![json!({"criteria": {"resetScope": "Watermark, Escrows, QuarantineState"}})]);
    }
    // The run after the restart fails on credentials: unhealthy, with Graph's code.
    graph.state.lock().unwrap().run_after_restart =
        Some(json!({"state": "Failed", "error": {"code": CREDENTIAL_FAILURE, "message": "401 from the SCIM endpoint"}}));
    assert!(matches!(t.verify("", &[]).await.unwrap(), Verification::Unhealthy(m) if m.contains(CREDENTIAL_FAILURE)));
    // No run at all within the bound: unhealthy, after waiting it out.
    graph.state.lock().unwrap().run_after_restart = None;
    let t0 = std::time::Instant::now();
    let v = t.verify("", &[]).await.unwrap();
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(matches!(&v, Verification::Unhealthy(m) if m.contains("no run finished within 2s")), "{v:?}");
    assert_eq!(graph.state.lock().unwrap().restarts.len(), 3);
}
