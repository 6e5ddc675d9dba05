//! The `auth0_ses_smtp` target: the same Auth0 tenant when its email
//! provider is `smtp` on the SES SMTP endpoint. keyturn derives the SMTP
//! password from the new key's secret (AWS's documented algorithm, unit-tested
//! with vectors in `connectors/auth0_smtp.rs`), PATCHes all four SMTP fields,
//! and verifies the user; the password and the secret leak nowhere.

use std::time::Duration;

use keyturn::saga::Status;
use keyturn_testkit::auth0_fake::{Fault, CLIENT_ID};
use keyturn_testkit::env::{Options, TestEnv, USER};

/// The test environment with `auth0-ses` re-targeted at the fake Auth0 in SMTP mode.
async fn setup() -> (TestEnv, keyturn::config::Config) {
    let env = TestEnv::new(Options::default()).await.expect("test environment");
    env.auth0.use_smtp("email-smtp.eu-west-1.amazonaws.com");
    let text = format!(
        r#"
[[rotation]]
id = "auth0-smtp"
source = {{ kind = "iam_access_key", user_name = "{USER}" }}

[rotation.target]
kind = "auth0_ses_smtp"
domain = "example.eu.auth0.com"
base_url = "{}"
client_id = "{CLIENT_ID}"
client_secret = {{ secrets_manager = "keyturn/auth0", json_key = "client_secret" }}
ses_region = "eu-west-1"

[rotation.policy]
grace_period = "0s"
max_attempts = 3
retry_base = "200ms"
retry_cap = "1s"
"#,
        env.auth0.uri()
    );
    let cfg = env.config_with(&text, false);
    (env, cfg)
}

async fn rotate(env: &TestEnv, cfg: &keyturn::config::Config) -> keyturn::saga::Saga {
    env.rotate_with(cfg, "auth0-smtp").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_provider_gets_the_new_user_and_derived_password() {
    let (env, cfg) = setup().await;
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let new_id = saga.keys.new_key.clone().unwrap();
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, new_id);
    let p = env.auth0.provider().unwrap();
    assert_eq!(p.name, "smtp");
    assert_eq!(p.access_key_id, new_id, "the SMTP user is the key id");
    assert_eq!(p.smtp, Some(("email-smtp.eu-west-1.amazonaws.com".to_string(), 587)));
    // An SES SMTP password: base64 of version 4 and an HMAC-SHA256.
    let raw = aws_smithy_types::base64::decode(&p.secret_access_key).unwrap();
    assert_eq!((raw.len(), raw[0]), (33, 4), "{}", p.secret_access_key);
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.succeeded");
    assert_eq!(n[0].attributes["target_kind"], "auth0_ses_smtp");
    for (name, text) in [("logs", keyturn_testkit::capture::logs()), ("table", env.table_dump().await), ("notification", n[0].raw.clone())] {
        assert!(!text.contains(&p.secret_access_key), "SMTP password leaked into {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_smtp_update_compensates_with_auth0_advice() {
    let (env, cfg) = setup().await;
    let old_id = env.old_keys[0].0.clone();
    env.auth0.script_patch(Fault::InsufficientScope);
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Compensated, "{saga:#?}");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, old_id);
    assert_eq!(env.auth0.provider().unwrap().access_key_id, old_id, "Auth0 still holds the old user");
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert!(n[0].document["recommended_action"].as_str().unwrap().contains("update:email_provider"), "{}", n[0].document);
}
