//! `keyturn doctor`, through the binary, against moto and the fakes: each
//! problem a new deployment meets is reported with its fix, and a healthy
//! setup exits 0. Nothing is changed by the preflight.

use std::process::{Command, Stdio};

use keyturn_testkit::env::{keyturn_bin, Options, TestEnv, USER};
use serde_json::Value;

const MEMBER: &str = "222222222222";
const ROLE_NAME: &str = "keyturn-member";

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keyturn-doctor-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run `keyturn doctor` (text, then `--json`) on `config_text`: (exit code, text, JSON report).
fn doctor(env: &TestEnv, config_text: &str, envs: &[(&'static str, String)]) -> (i32, String, Value) {
    let dir = tmpdir("cfg");
    let path = dir.join("keyturn.toml");
    std::fs::write(&path, config_text).unwrap();
    let mut all = env.cli_env();
    for (k, v) in envs {
        all.retain(|(a, _)| a != k);
        all.push((k, v.clone()));
    }
    let run = |json: bool| {
        let mut args = vec!["doctor", "--config", path.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = Command::new(keyturn_bin()).args(&args).envs(all.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null()).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, text, err) = run(false);
    let (jcode, json, jerr) = run(true);
    assert_eq!(code, jcode, "text and --json agree on the exit code\n{err}\n{jerr}");
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("--json prints one document ({e}):\n{json}\n{jerr}"));
    (code, text, report)
}

/// The check called `name` in the environment (`rotation = None`) or a rotation.
fn check<'a>(report: &'a Value, rotation: Option<&str>, name: &str) -> &'a Value {
    let checks = match rotation {
        None => &report["environment"],
        Some(id) => {
            &report["rotations"].as_array().unwrap().iter().find(|r| r["rotation_id"] == id).unwrap_or_else(|| panic!("no rotation {id}: {report:#}"))
                ["checks"]
        }
    };
    checks.as_array().unwrap().iter().find(|c| c["check"] == name).unwrap_or_else(|| panic!("no check {name:?} in {checks:#}"))
}

fn rotation<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["rotations"].as_array().unwrap().iter().find(|r| r["rotation_id"] == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_and_exits_0() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let (code, text, report) = doctor(&env, &env.config_text, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["ready"], true, "{report:#}");
    for c in report["environment"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "{c}");
    }
    for name in ["index active-by-due", "index sagas-by-created", "index rotation-by-created", "table TTL", "KMS key", "SNS topic", "step queue redrive"] {
        assert_eq!(check(&report, None, name)["status"], "ok", "{name}");
    }
    let r = rotation(&report, "auth0-ses");
    assert_eq!(r["ready"], true);
    assert!(check(&report, Some("auth0-ses"), "access keys")["detail"].as_str().unwrap().contains(&env.old_keys[0].0));
    assert!(check(&report, Some("auth0-ses"), "Auth0 scopes")["detail"].as_str().unwrap().contains("update:email_provider"));
    assert!(check(&report, Some("auth0-ses"), "Auth0 email provider")["detail"].as_str().unwrap().contains(&env.old_keys[0].0));
    // moto has no IAM policy simulator: said plainly, not passed.
    let sim = check(&report, Some("auth0-ses"), "worker permissions");
    assert_eq!(sim["status"], "not_checked", "{sim}");
    assert!(sim["detail"].as_str().unwrap().contains("iam:CreateAccessKey"), "{sim}");
    assert!(text.contains("1 of 1 rotation(s) could run now"), "{text}");
    // A --principal that is no IAM ARN is a usage error, found before any call.
    let dir = tmpdir("usage");
    let path = env.write_config(&dir).unwrap();
    let out = Command::new(keyturn_bin())
        .args(["doctor", "--config", path.to_str().unwrap(), "--principal", "keyturn-worker"])
        .envs(env.cli_env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--principal \"keyturn-worker\" is not an IAM role or user ARN"));
    // Nothing changed: the user still has exactly its one key, Auth0 was not written.
    assert_eq!(env.user_keys().await.len(), 1);
    assert!(env.auth0.patches().is_empty());
    assert!(env.sagas().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_auth0_scope_is_named_with_where_to_grant_it() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    env.auth0.set_granted_scopes("read:email_provider");
    let (code, text, report) = doctor(&env, &env.config_text, &[]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(report["ready"], false);
    let c = check(&report, Some("auth0-ses"), "Auth0 scopes");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("lacks update:email_provider"), "{c}");
    let fix = c["fix"].as_str().unwrap();
    assert!(fix.contains("Machine To Machine Applications") && fix.contains("grant update:email_provider"), "{fix}");
    // Reading still works with the scope it has.
    assert_eq!(check(&report, Some("auth0-ses"), "Auth0 email provider")["status"], "ok");
    assert!(text.contains("FAIL") && text.contains("fix: in the Auth0 Dashboard"), "{text}");
    assert!(text.contains("could NOT run now"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_iam_user_is_a_failure_with_its_fix() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let text = env.config_text.replace(&format!("user_name = \"{USER}\""), "user_name = \"nobody-here\"");
    let (code, out, report) = doctor(&env, &text, &[]);
    assert_eq!(code, 1, "{out}");
    let c = check(&report, Some("auth0-ses"), "iam user");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("no IAM user nobody-here"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("aws iam create-user --user-name nobody-here"), "{c}");
    // The environment itself is fine: only the rotation cannot run.
    assert!(report["environment"].as_array().unwrap().iter().all(|c| c["status"] == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_name_the_one_keyturn_needs_gone() {
    let env = TestEnv::new(Options { existing_keys: 2, ..Options::default() }).await.unwrap();
    // The first key is in use (Auth0 holds it and sends mail with it); the second never was.
    env.auth0.send_mail(&env.moto.endpoint).await;
    let unused = &env.old_keys[1].0;
    let (code, out, report) = doctor(&env, &env.config_text, &[]);
    assert_eq!(code, 1, "{out}");
    let c = check(&report, Some("auth0-ses"), "access keys");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("2 keys") && c["detail"].as_str().unwrap().contains("never used"), "{c}");
    let fix = c["fix"].as_str().unwrap();
    assert!(fix.contains(&format!("aws iam delete-access-key --user-name {USER} --access-key-id {unused}")), "{fix}");
    assert!(fix.contains("never used"), "{fix}");
    assert_eq!(env.user_keys().await.len(), 2, "doctor deleted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_an_index_names_the_command_that_adds_it() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    // A table made as the old docs said: the string partition key pk only.
    env.clients
        .dynamodb
        .create_table()
        .table_name("bare")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder().attribute_name("pk").key_type(aws_sdk_dynamodb::types::KeyType::Hash).build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    let text = env.config_text.replace("table = \"keyturn-sagas\"", "table = \"bare\"");
    let (code, out, report) = doctor(&env, &text, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(check(&report, None, "table key")["status"], "ok");
    for idx in ["sagas-by-created", "active-by-due", "rotation-by-created"] {
        let c = check(&report, None, &format!("index {idx}"));
        assert_eq!(c["status"], "fail", "{c}");
        let fix = c["fix"].as_str().unwrap();
        assert!(fix.contains("aws dynamodb update-table --table-name bare") && fix.contains(&format!(r#""IndexName":"{idx}""#)), "{fix}");
    }
    assert_eq!(check(&report, None, "table TTL")["status"], "warn");
    // An environment failure stops every rotation.
    assert_eq!(rotation(&report, "auth0-ses")["ready"], false);
    assert!(out.contains("the environment has failures"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unassumable_member_role_is_a_failure_with_its_fix() {
    // moto's AssumeRole accepts any role; with IAM enforcement, an identity
    // without sts:AssumeRole is refused exactly as an untrusting role is.
    let env = TestEnv::new(Options { enforce_auth: true, ..Options::default() }).await.unwrap();
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:*","sqs:*","kms:*","sns:*","iam:*","events:*","secretsmanager:*","sts:GetCallerIdentity"],"Resource":"*"}]}"#;
    let iam = &env.clients.iam;
    iam.create_user().user_name("keyturn-worker").send().await.unwrap();
    let compact = serde_json::from_str::<Value>(policy).unwrap().to_string();
    iam.put_user_policy().user_name("keyturn-worker").policy_name("no-assume").policy_document(compact).send().await.unwrap();
    let k = iam.create_access_key().user_name("keyturn-worker").send().await.unwrap();
    let k = k.access_key().unwrap();
    let role = format!("arn:aws:iam::{MEMBER}:role/{ROLE_NAME}");
    let text =
        env.config_text.replacen("kms_key_id = \"alias/keyturn\"\n", &format!("kms_key_id = \"alias/keyturn\"\nmember_role_name = \"{ROLE_NAME}\"\n"), 1);
    let member = text[text.find("[[rotation]]").unwrap()..].replacen("id = \"auth0-ses\"", "id = \"member-mailer\"", 1).replacen(
        &format!("user_name = \"{USER}\""),
        &format!("user_name = \"{USER}\", account_id = \"{MEMBER}\""),
        1,
    );
    let text = format!("{text}\n{member}");
    let notify = env.notify_moto.as_ref().unwrap().endpoint.clone();
    let envs = [
        ("AWS_ACCESS_KEY_ID", k.access_key_id().to_string()),
        ("AWS_SECRET_ACCESS_KEY", k.secret_access_key().to_string()),
        ("AWS_ENDPOINT_URL_SNS", notify),
    ];
    let (code, out, report) = doctor(&env, &text, &envs);
    assert_eq!(code, 1, "{out}");
    let c = check(&report, Some("member-mailer"), "member role");
    assert_eq!(c["status"], "fail", "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.contains(&role) && detail.contains("AccessDenied"), "{detail}");
    let fix = c["fix"].as_str().unwrap();
    assert!(fix.contains("infra/member-role.yaml") && fix.contains(&format!("sts:AssumeRole on {role}")), "{fix}");
    assert_eq!(rotation(&report, "member-mailer")["ready"], false);
    // The home-account rotation is unaffected.
    assert_eq!(rotation(&report, "auth0-ses")["ready"], true, "{report:#}");
}
