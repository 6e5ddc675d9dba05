//! The `github_actions_secret` target against a faithful fake of GitHub's
//! Actions secrets API (which opens the sealed boxes, so the test sees what
//! keyturn wrote): the pair of secrets holds the new key (its secret
//! authenticates as the user on moto), a refused second write puts the old
//! key id back and deletes the new key, GitHub's rate limit is waited out,
//! and nothing leaks.

use std::time::Duration;

use keyturn::saga::{Status, Step, TargetState};
use keyturn_testkit::env::{Options, TestEnv, USER};
use keyturn_testkit::github_fake::{FakeGitHub, Fault};

const TOKEN: &str = "github_pat_11AAAAAAA0fake0token0for0keyturn0tests";

async fn setup(environment: Option<&str>) -> (TestEnv, FakeGitHub, keyturn::config::Config) {
    let env = TestEnv::new(Options::default()).await.expect("test environment");
    let (old_id, old_secret) = env.old_keys[0].clone();
    let gh = FakeGitHub::start(TOKEN, &[("AWS_ACCESS_KEY_ID", &old_id), ("AWS_SECRET_ACCESS_KEY", &old_secret)]).await;
    env.clients.secrets.create_secret().name("keyturn/github").secret_string(TOKEN).send().await.unwrap();
    let env_line = environment.map(|e| format!("environment = \"{e}\"\n")).unwrap_or_default();
    let text = format!(
        r#"
[[rotation]]
id = "gh-deploy"
source = {{ kind = "iam_access_key", user_name = "{USER}" }}

[rotation.target]
kind = "github_actions_secret"
owner = "acme"
repo = "mailer"
{env_line}token = {{ secrets_manager = "keyturn/github" }}
base_url = "{}"

[rotation.policy]
grace_period = "0s"
max_attempts = 3
retry_base = "200ms"
retry_cap = "1s"
"#,
        gh.server.uri()
    );
    let cfg = env.config_with(&text, false);
    (env, gh, cfg)
}

async fn rotate(env: &TestEnv, cfg: &keyturn::config::Config) -> keyturn::saga::Saga {
    env.rotate_with(cfg, "gh-deploy").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_secrets_hold_the_new_key_and_nothing_leaks() {
    let (env, gh, cfg) = setup(None).await;
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    let new_id = saga.keys.new_key.clone().unwrap();
    assert_eq!(gh.value("AWS_ACCESS_KEY_ID").as_deref(), Some(new_id.as_str()));
    let new_secret = gh.value("AWS_SECRET_ACCESS_KEY").unwrap();
    assert_ne!(new_secret, env.old_keys[0].1);
    // What GitHub holds is a working pair: it authenticates as the user.
    let creds = aws_credential_types::Credentials::new(new_id.clone(), new_secret.clone(), None, None, "gh");
    let sts = aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&env.sdk).credentials_provider(creds).build());
    assert!(sts.get_caller_identity().send().await.unwrap().arn().unwrap().ends_with(&format!(":user/{USER}")));
    let keys = env.user_keys().await;
    assert_eq!((keys.len(), keys[0].id.as_str()), (1, new_id.as_str()));
    // Order: public key, id, secret, then the read-back of both.
    let calls: Vec<String> = gh.calls().iter().map(|(m, p, _)| format!("{m} {}", p.rsplit('/').next().unwrap())).collect();
    assert_eq!(calls, ["GET public-key", "PUT AWS_ACCESS_KEY_ID", "PUT AWS_SECRET_ACCESS_KEY", "GET AWS_ACCESS_KEY_ID", "GET AWS_SECRET_ACCESS_KEY"]);
    assert!(gh.calls().iter().all(|(_, p, _)| p.starts_with("/repos/acme/mailer/actions/secrets")));
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["target_kind"], "github_actions_secret");
    for (name, text) in [("logs", keyturn_testkit::capture::logs()), ("table", env.table_dump().await), ("notification", n[0].raw.clone())] {
        assert!(!text.contains(&new_secret), "new secret leaked into {name}");
        assert!(!text.contains(TOKEN), "GitHub token leaked into {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_second_write_puts_the_old_id_back_and_deletes_the_new_key() {
    let (env, gh, cfg) = setup(Some("production")).await;
    let (old_id, old_secret) = env.old_keys[0].clone();
    gh.script("AWS_SECRET_ACCESS_KEY", Fault::Invalid);
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Compensated, "{saga:#?}");
    assert_eq!(saga.effects.target, TargetState::Rejected);
    assert!(saga.outcome.history.iter().any(|a| a.step == Step::PushToTarget && a.code.as_deref() == Some("validation_failed")));
    assert_eq!(gh.value("AWS_ACCESS_KEY_ID").as_deref(), Some(old_id.as_str()), "the old pair is whole again");
    assert_eq!(gh.value("AWS_SECRET_ACCESS_KEY").as_deref(), Some(old_secret.as_str()));
    let keys = env.user_keys().await;
    assert_eq!((keys.len(), keys[0].id.as_str()), (1, old_id.as_str()), "new key deleted");
    let puts: Vec<String> = gh.calls().iter().filter(|(m, _, _)| m == "PUT").map(|(_, p, s)| format!("{} {s}", p.rsplit('/').next().unwrap())).collect();
    assert_eq!(puts, ["AWS_ACCESS_KEY_ID 204", "AWS_SECRET_ACCESS_KEY 422", "AWS_ACCESS_KEY_ID 204"]);
    assert!(gh.calls().iter().all(|(_, p, _)| p.starts_with("/repos/acme/mailer/environments/production/secrets")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_rate_limit_is_waited_out() {
    let (env, gh, cfg) = setup(None).await;
    gh.script("AWS_ACCESS_KEY_ID", Fault::RateLimited { reset_in: 1 });
    let saga = rotate(&env, &cfg).await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(gh.value("AWS_ACCESS_KEY_ID").as_deref(), saga.keys.new_key.as_deref());
    let statuses: Vec<u16> = gh.calls().iter().filter(|(m, p, _)| m == "PUT" && p.ends_with("AWS_ACCESS_KEY_ID")).map(|(_, _, s)| *s).collect();
    assert_eq!(statuses, [403, 204], "one 403 rate limit, then the write");
}
