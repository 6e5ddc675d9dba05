//! The `secrets_manager_secret` target against moto's Secrets Manager: an
//! application reads an IAM user's access key from a JSON secret; keyturn
//! writes the new key as a new version (AWSCURRENT; the old one becomes
//! AWSPREVIOUS), keeps the secret's other fields, verifies by reading it back,
//! and on refusal leaves the previous version current and deletes the new key.

use std::time::Duration;

use keyturn::saga::{Status, Step, TargetState};
use keyturn_testkit::env::{Options, TestEnv};
use serde_json::{json, Value};

const USER: &str = "app-reader";

/// The test environment plus a second IAM user (one key) whose key lives in
/// a JSON secret `app/aws`, and a rotation `app-secret` of it into `secret_id`.
async fn setup(secret_id: &str) -> (TestEnv, keyturn::config::Config, String, String) {
    let env = TestEnv::new(Options::default()).await.expect("test environment");
    let iam = &env.clients.iam;
    iam.create_user().user_name(USER).send().await.unwrap();
    let k = iam.create_access_key().user_name(USER).send().await.unwrap();
    let k = k.access_key().unwrap();
    let (old_id, old_secret) = (k.access_key_id().to_string(), k.secret_access_key().to_string());
    env.clients
        .secrets
        .create_secret()
        .name("app/aws")
        .secret_string(json!({"AWS_ACCESS_KEY_ID": old_id, "AWS_SECRET_ACCESS_KEY": old_secret, "AWS_REGION": "eu-west-1"}).to_string())
        .send()
        .await
        .unwrap();
    let cfg = env.config_with(
        &format!(
            r#"
[[rotation]]
id = "app-secret"
source = {{ kind = "iam_access_key", user_name = "{USER}" }}

[rotation.target]
kind = "secrets_manager_secret"
secret_id = "{secret_id}"

[rotation.policy]
grace_period = "0s"
max_attempts = 3
retry_base = "200ms"
retry_cap = "1s"
"#
        ),
        true,
    );
    (env, cfg, old_id, old_secret)
}

async fn rotate(env: &TestEnv, cfg: &keyturn::config::Config) -> keyturn::saga::Saga {
    env.rotate_with(cfg, "app-secret").await
}

async fn secret_at(env: &TestEnv, stage: &str) -> Value {
    let out = env.clients.secrets.get_secret_value().secret_id("app/aws").version_stage(stage).send().await.unwrap();
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

async fn keys(env: &TestEnv) -> Vec<String> {
    let out = env.clients.iam.list_access_keys().user_name(USER).send().await.unwrap();
    out.access_key_metadata().iter().filter_map(|k| k.access_key_id().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_key_becomes_the_current_version_and_the_old_one_previous() {
    let (env, cfg, old_id, old_secret) = setup("app/aws").await;
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let new_id = saga.keys.new_key.clone().unwrap();
    assert_eq!(keys(&env).await, vec![new_id.clone()], "the old key is deleted");

    let current = secret_at(&env, "AWSCURRENT").await;
    assert_eq!(current["AWS_ACCESS_KEY_ID"], new_id.as_str());
    assert_eq!(current["AWS_REGION"], "eu-west-1", "other fields are kept");
    let previous = secret_at(&env, "AWSPREVIOUS").await;
    assert_eq!(previous["AWS_ACCESS_KEY_ID"], old_id.as_str());
    // The secret in the current version is the new key's real secret: it authenticates as the user.
    let new_secret = current["AWS_SECRET_ACCESS_KEY"].as_str().unwrap().to_string();
    assert_ne!(new_secret, old_secret);
    let creds = aws_credential_types::Credentials::new(new_id.clone(), new_secret.clone(), None, None, "app");
    let sts = aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&env.sdk).credentials_provider(creds).build());
    let who = sts.get_caller_identity().send().await.unwrap();
    assert!(who.arn().unwrap().ends_with(&format!(":user/{USER}")), "{who:?}");
    // One new version, however often the push ran.
    let versions = env.clients.secrets.list_secret_version_ids().secret_id("app/aws").send().await.unwrap();
    assert_eq!(versions.versions().len(), 2, "{versions:?}");

    // Nothing leaked: not in logs, not in the table, not in the notification.
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.succeeded");
    assert_eq!(n[0].attributes["target_kind"], "secrets_manager_secret");
    for (name, text) in [("logs", keyturn_testkit::capture::logs()), ("table", env.table_dump().await), ("notification", n[0].raw.clone())] {
        assert!(!text.contains(&new_secret), "new secret leaked into {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_refused_before_any_key_is_created() {
    let (env, cfg, old_id, _) = setup("app/missing").await;
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Refused, "{saga:#?}");
    assert_eq!(saga.effects.target, TargetState::Untouched);
    assert!(saga.keys.new_key.is_none() && saga.keys.issue_intents == 0, "no key was created: {saga:#?}");
    assert!(
        saga.outcome.history.iter().any(|a| a.step == Step::Start && a.code.as_deref() == Some("ResourceNotFoundException")),
        "{:#?}",
        saga.outcome.history
    );
    assert_eq!(keys(&env).await, vec![old_id.clone()], "old key untouched, no new one");
    assert_eq!(secret_at(&env, "AWSCURRENT").await["AWS_ACCESS_KEY_ID"], old_id.as_str(), "the existing secret is untouched");
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert!(n[0].document["recommended_action"].as_str().unwrap().contains("Create secret app/missing"), "{}", n[0].document);
}

/// Issue 20, item 6: a secret keyturn would damage — stored as
/// `SecretBinary`, or a `SecretString` that is not a JSON object — is refused
/// at start: no key is created in IAM and the secret keeps its only version.
/// (Before, a binary secret was overwritten with a JSON object.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_is_not_a_json_object_is_refused_before_any_key_is_created() {
    let (env, _, old_id, _) = setup("app/aws").await;
    let binary: &[u8] = b"\x00\x01binary-credential-blob-0123456789";
    env.clients.secrets.create_secret().name("app/binary").secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(binary)).send().await.unwrap();
    env.clients.secrets.create_secret().name("app/text").secret_string("AKIA-plain-text-not-json-0123456789").send().await.unwrap();
    for (secret_id, what) in [("app/binary", "SecretBinary"), ("app/text", "JSON object")] {
        let cfg = env.config_with(
            &format!(
                r#"
[[rotation]]
id = "app-secret"
source = {{ kind = "iam_access_key", user_name = "{USER}" }}

[rotation.target]
kind = "secrets_manager_secret"
secret_id = "{secret_id}"
"#
            ),
            true,
        );
        let saga = rotate(&env, &cfg).await;
        assert_eq!(saga.status, Status::Refused, "{secret_id}: {saga:#?}");
        let f = saga.outcome.failure.as_ref().unwrap();
        assert_eq!((f.step, f.code.as_str()), (Step::Start, "SecretNotJsonObject"), "{secret_id}: {f:?}");
        assert!(f.message.contains(secret_id) && f.message.contains(what), "{}", f.message);
        assert!(saga.keys.new_key.is_none() && saga.keys.issue_intents == 0, "{secret_id}: no key was created");
        assert_eq!(keys(&env).await, vec![old_id.clone()], "{secret_id}: nothing created in IAM");
        let versions = env.clients.secrets.list_secret_version_ids().secret_id(secret_id).send().await.unwrap();
        assert_eq!(versions.versions().len(), 1, "{secret_id}: no version was written");
    }
    let now = env.clients.secrets.get_secret_value().secret_id("app/binary").send().await.unwrap();
    assert_eq!(now.secret_binary().map(|b| b.as_ref()), Some(binary), "the binary secret is as it was");
    assert!(now.secret_string().is_none());
}
