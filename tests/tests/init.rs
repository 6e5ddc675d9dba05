//! `keyturn init` through the binary on moto: an empty account gets
//! everything a rotation and `list` need; a second run changes nothing;
//! `--check` on a table made as the old docs said (only `pk`) names the
//! missing indexes and TTL, and `list` against it says how to fix it.

use std::process::{Command, Stdio};
use std::time::Duration;

use keyturn_testkit::env::{keyturn_bin, Options, TestEnv, FAST_WORKER_TOML, REGION};
use keyturn_testkit::moto::Moto;

fn run(args: &[&str], envs: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(keyturn_bin()).args(args).envs(envs.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn moto_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// The `[aws]` section init printed (everything after its paste line).
fn aws_section(out: &str) -> String {
    out.split("# paste into keyturn.toml:\n").nth(1).unwrap_or_else(|| panic!("no [aws] section printed:\n{out}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_on_an_empty_account_then_a_rotation_and_list_succeed() {
    // The environment brings the IAM user, the fake Auth0 and the client
    // secret; init makes every keyturn resource under its own prefix.
    let env = TestEnv::new(Options::default()).await.unwrap();
    let envs = env.cli_env();

    let (code, out, err) = run(&["init", "--check", "--prefix", "fresh"], &envs);
    assert_eq!(code, 1, "nothing exists yet: {out}{err}");
    for name in ["fresh-sagas", "fresh-steps", "fresh-steps-dlq", "fresh-steps-priority", "fresh-intake-dlq", "fresh-notifications", "alias/fresh"] {
        assert!(out.lines().any(|l| l.contains(name) && l.contains("MISSING")), "{name} reported missing:\n{out}");
    }
    let (code, out, err) = run(&["init", "--prefix", "fresh", "--visibility-timeout", "10s"], &envs);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.ends_with(" created")).count(), 9, "6 queues, the topic, the key, the table: {out}");
    let aws = aws_section(&out);
    assert!(aws.contains("table = \"fresh-sagas\"") && aws.contains("kms_key_id = \"alias/fresh\""), "{aws}");
    assert!(aws.contains("\npriority_queue_url = \"") && aws.contains("fresh-steps-priority\""), "{aws}");
    assert!(aws.contains("\npriority_dlq_url = \"") && aws.contains("fresh-steps-priority-dlq\""), "{aws}");

    let dir = std::env::temp_dir().join(format!("keyturn-init-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("keyturn.toml");
    let rotations = &env.config_text[env.config_text.find("[[rotation]]").unwrap()..];
    std::fs::write(&cfg, format!("{aws}\n{FAST_WORKER_TOML}\n{rotations}")).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let (code, out, err) = run(&["check-config", "--config", &cfg], &envs);
    assert_eq!(code, 0, "{out}{err}");

    let mut worker = Command::new(keyturn_bin())
        .args(["worker", "--config", &cfg])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, out, err) = tokio::task::spawn_blocking({
        let (cfg, envs) = (cfg.clone(), envs.clone());
        move || run(&["rotate", "auth0-ses", "--wait", "--timeout", "90s", "--config", &cfg], &envs)
    })
    .await
    .unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let (code, out, err) = run(&["list", "--json", "--config", &cfg], &envs);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["status"], "succeeded", "{out}");
    // The saga is in init's table, not the environment's.
    let items = env.clients.dynamodb.scan().table_name("fresh-sagas").send().await.unwrap();
    assert!(items.count() >= 1);

    // Twice: the second run changes nothing and says so.
    let (code, out, err) = run(&["init", "--prefix", "fresh", "--visibility-timeout", "10s"], &envs);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing changed: everything was already there"), "{out}");
    assert!(!out.contains(" created") && !out.contains("updated:"), "{out}");
    assert_eq!(aws_section(&out), aws, "the same [aws] section");
    let (code, out, _) = run(&["init", "--check", "--prefix", "fresh", "--visibility-timeout", "10s"], &envs);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("everything keyturn needs is there"), "{out}");
    // A queue changed by hand is put back, and said so.
    let url = env.clients.sqs.get_queue_url().queue_name("fresh-steps").send().await.unwrap().queue_url.unwrap();
    env.clients
        .sqs
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap();
    let (code, out, _) = run(&["init", "--check", "--prefix", "fresh", "--visibility-timeout", "10s"], &envs);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("VisibilityTimeout is 30 (keyturn needs 10)"), "{out}");
    let (code, out, _) = run(&["init", "--prefix", "fresh", "--visibility-timeout", "10s"], &envs);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.contains("fresh-steps ") && l.contains("updated: VisibilityTimeout is 30")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_check_on_a_pk_only_table_names_the_missing_indexes_and_ttl() {
    let moto = Moto::start(&[]).await.unwrap();
    let envs = moto_env(&moto.endpoint);
    let sdk = keyturn_testkit::env::sdk_config(&moto.endpoint, aws_credential_types::Credentials::new("testing", "testing", None, None, "t")).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    // The table as docs/deploy.md used to say: only the string partition key `pk`.
    ddb.create_table()
        .table_name("hand-made")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().unwrap())
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();

    // `list` against it says what is missing and how to fix it.
    let dir = std::env::temp_dir().join(format!("keyturn-init-pk-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("keyturn.toml");
    std::fs::write(&cfg, "[aws]\nqueue_url = \"q\"\ndlq_url = \"d\"\ntable = \"hand-made\"\ntopic_arn = \"arn\"\nkms_key_id = \"k\"\n").unwrap();
    let (code, _, err) = run(&["list", "--config", cfg.to_str().unwrap()], &envs);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("has no index sagas-by-created") && err.contains("keyturn init --table hand-made"), "{err}");
    assert!(!err.contains("ResourceNotFoundException: Invalid index"), "not DynamoDB's bare message: {err}");

    let (code, out, err) = run(&["init", "--check", "--table", "hand-made"], &envs);
    assert_eq!(code, 1, "{out}{err}");
    let line = out.lines().find(|l| l.contains("hand-made")).unwrap_or_else(|| panic!("the table is reported:\n{out}"));
    for missing in
        ["index active-by-due (active, due_at) is missing", "index sagas-by-created", "index rotation-by-created", "TTL on expires_at is not enabled"]
    {
        assert!(line.contains(missing), "names {missing}: {line}");
    }
    // --check changed nothing.
    let t = ddb.describe_table().table_name("hand-made").send().await.unwrap().table.unwrap();
    assert!(t.global_secondary_indexes().is_empty());

    let (code, out, err) = run(&["init", "--table", "hand-made"], &envs);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.contains("hand-made") && l.contains("updated:") && l.contains("TTL on expires_at enabled")), "{out}");
    let t = ddb.describe_table().table_name("hand-made").send().await.unwrap().table.unwrap();
    assert_eq!(t.global_secondary_indexes().len(), 3, "{t:?}");
    let ttl = ddb.describe_time_to_live().table_name("hand-made").send().await.unwrap();
    assert_eq!(ttl.time_to_live_description().and_then(|d| d.attribute_name()), Some("expires_at"));
    let (code, out, _) = run(&["init", "--check", "--table", "hand-made"], &envs);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) =
        tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || run(&["list", "--config", cfg.to_str().unwrap()], &envs)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(code, 0, "list works once init added the indexes: {err}");
}
