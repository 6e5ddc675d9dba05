//! Member accounts, black-box, on moto with two accounts.
//!
//! moto keeps one backend per account and maps every request to an account
//! by the access key that signed it: credentials from `sts:AssumeRole` of
//! `arn:aws:iam::222222222222:role/…` act in account 222222222222. So the
//! worker's own account is moto's default (123456789012, the "hub") and the
//! member account's IAM is reached only through an assumed role — exactly as
//! on AWS. A fault proxy (forwarding everything, injecting nothing) sits
//! between the worker and moto to record which key signed each call and the
//! AssumeRole parameters.
//!
//! What moto cannot do: evaluate a role's trust policy or ExternalId (its
//! AssumeRole succeeds for any ARN). The refusal test therefore runs with
//! IAM enforcement and a worker that holds no `sts:AssumeRole` permission:
//! AWS answers that case and an untrusting role with the same
//! `AccessDenied` on `sts:AssumeRole`, which is what keyturn must handle.
//! The trust policy itself is checked structurally by
//! `infra/check_policy.py` (CI) and `deploy.rs`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use keyturn::saga::{Status, Step};
use keyturn_testkit::env::{sdk_config, Options, RunningWorker, TestEnv, USER};
use keyturn_testkit::fault_proxy::FaultProxy;
use keyturn_testkit::securityhub_fake::Api;

const MEMBER: &str = "222222222222";
const HUB: &str = "123456789012";
const ROLE_NAME: &str = "keyturn-member";
const EXTERNAL_ID: &str = "keyturn-o-a1b2c3d4e5";
const CONSOLIDATED: &str = include_str!("../fixtures/securityhub-iam3-consolidated.json");
/// IAM.3 fails for keys 90 days old; the test's keys are seconds old.
const KEY_PAST_IAM3: Duration = Duration::from_secs(91 * 86_400);
/// The aggregation region the finding arrives from (not the worker's).
const FINDING_REGION: &str = "eu-central-1";

/// An IAM client acting in `account` (moto: credentials of an assumed role there).
async fn iam_in(env: &TestEnv, account: &str) -> aws_sdk_iam::Client {
    let sts = aws_sdk_sts::Client::new(&env.sdk);
    let out = sts.assume_role().role_arn(format!("arn:aws:iam::{account}:role/{ROLE_NAME}")).role_session_name("test-setup").send().await.unwrap();
    let c = out.credentials().unwrap();
    let creds = Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().to_string()), None, "test-setup");
    let sdk = sdk_config(&env.moto.endpoint, creds).await;
    aws_sdk_iam::Client::new(&sdk)
}

async fn key_ids(iam: &aws_sdk_iam::Client, user: &str) -> Vec<(String, bool)> {
    let out = iam.list_access_keys().user_name(user).send().await.unwrap();
    out.access_key_metadata()
        .iter()
        .map(|k| (k.access_key_id().unwrap().to_string(), k.status() == Some(&aws_sdk_iam::types::StatusType::Active)))
        .collect()
}

/// The member account as infra/member-role.yaml leaves it: the role, and a
/// user of the same name as the hub's under /keyturn/ with one old key.
async fn member_account(env: &TestEnv) -> (aws_sdk_iam::Client, String) {
    let iam = iam_in(env, MEMBER).await;
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": format!("arn:aws:iam::{HUB}:role/keyturn-worker")},
        "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID, "aws:PrincipalOrgID": "o-a1b2c3d4e5"}}}]});
    iam.create_role().role_name(ROLE_NAME).assume_role_policy_document(trust.to_string()).send().await.unwrap();
    iam.create_user().user_name(USER).path("/keyturn/").send().await.unwrap();
    let old = iam.create_access_key().user_name(USER).send().await.unwrap().access_key().unwrap().access_key_id().to_string();
    (iam, old)
}

/// The environment's configuration with `[aws]` member settings and an
/// extra rotation of the same user name in the member account.
fn member_config(env: &TestEnv, source: &str) -> keyturn::config::Config {
    let text = env.config_text.replacen(
        "kms_key_id = \"alias/keyturn\"\n",
        &format!("kms_key_id = \"alias/keyturn\"\nmember_role_name = \"{ROLE_NAME}\"\nexternal_id = \"{EXTERNAL_ID}\"\n"),
        1,
    );
    let home_rotation = &text[text.find("[[rotation]]").unwrap()..];
    let member = home_rotation.replacen("id = \"auth0-ses\"", "id = \"member-mailer\"", 1).replacen(
        &format!("source = {{ kind = \"iam_access_key\", user_name = \"{USER}\" }}"),
        source,
        1,
    );
    assert!(member.contains("member-mailer") && member.contains(source), "rotation rewritten");
    keyturn::config::Config::parse(&format!("{text}\n{member}")).expect("member configuration")
}

/// The consolidated IAM.3 fixture, about `USER` in the member account, from the aggregation region.
fn member_finding() -> (String, String, String) {
    let mut v: serde_json::Value = serde_json::from_str(CONSOLIDATED).unwrap();
    v["region"] = FINDING_REGION.into();
    v["account"] = HUB.into();
    let f = &mut v["detail"]["findings"][0];
    let id = format!("arn:aws:securityhub:{FINDING_REGION}:{MEMBER}:security-control/IAM.3/finding/5e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b");
    f["Id"] = id.clone().into();
    f["AwsAccountId"] = MEMBER.into();
    f["Region"] = FINDING_REGION.into();
    f["ProductArn"] = format!("arn:aws:securityhub:{FINDING_REGION}::product/aws/securityhub").into();
    f["Resources"][0]["Id"] = format!("arn:aws:iam::{MEMBER}:user/keyturn/{USER}").into();
    f["Resources"][0]["Region"] = FINDING_REGION.into();
    let product = f["ProductArn"].as_str().unwrap().to_string();
    (v.to_string(), id, product)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam3_finding_in_a_member_account_rotates_that_accounts_key_through_the_role() {
    let env = TestEnv::new(Options { intake: true, ..Options::default() }).await.unwrap();
    let (member_iam, member_old) = member_account(&env).await;
    let hub_before = key_ids(&env.clients.iam, USER).await;
    let cfg = member_config(&env, &format!("source = {{ kind = \"iam_access_key\", user_name = \"{USER}\", account_id = \"{MEMBER}\" }}"));

    let proxy = FaultProxy::start(env.moto.endpoint.clone()).await.unwrap();
    let clients = env.clients_via(&proxy.endpoint).await;
    let engine = Arc::new(keyturn::app::engine_with(&cfg, &clients, "w1".into(), keyturn::app::sqs_queue(&cfg, &clients)));
    engine.age_clock().set_skew(KEY_PAST_IAM3);
    let w = RunningWorker::spawn_with_intake(engine.clone(), &cfg.worker, keyturn::app::intake_queue(&cfg, &clients).map(Arc::new));

    let (event, finding_id, product_arn) = member_finding();
    // The dry run names the account and the role it would act through.
    let plan = engine.plan_event(&event).await.unwrap().join("\n");
    assert!(plan.contains("rotation member-mailer: would start a saga"), "{plan}");
    assert!(plan.contains(&format!("acting in account {MEMBER}, through role arn:aws:iam::{MEMBER}:role/{ROLE_NAME} (with the external id")), "{plan}");
    assert!(!plan.contains("rotation auth0-ses"), "{plan}");
    env.put_event(&event).await.unwrap();
    let all = env.wait_sagas_done(1, Duration::from_secs(60)).await;
    assert_eq!(all.len(), 1, "exactly one saga for the finding");
    let saga = all[0].clone();
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(saga.rotation_id, "member-mailer", "matched by account and user, not by user name alone");

    // The member account's user now has exactly the new key, and Auth0 holds it.
    let new_key = saga.keys.new_key.clone().unwrap();
    assert_eq!(key_ids(&member_iam, USER).await, vec![(new_key.clone(), true)], "old key {member_old} retired in the member account");
    let provider = env.auth0.provider().unwrap();
    assert_eq!(provider.access_key_id, new_key);
    // The hub's same-named user is untouched.
    assert_eq!(key_ids(&env.clients.iam, USER).await, hub_before, "the hub account's {USER} keeps its keys");

    // The new key authenticates as the user *in the member account*.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&env.sdk)
            .credentials_provider(Credentials::new(&provider.access_key_id, &provider.secret_access_key, None, None, "t"))
            .build(),
    );
    let who = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(who.account(), Some(MEMBER));
    assert!(who.arn().unwrap().ends_with(&format!(":user/keyturn/{USER}")), "{:?}", who.arn());

    // Every IAM write and read of the rotation went through the assumed role,
    // whose session names the saga (CloudTrail in the member account), with
    // the external id; the role was assumed once for the whole saga.
    {
        let log = proxy.log.lock().unwrap();
        let assumed = log.params("AssumeRole");
        let role_arn = format!("arn:aws:iam::{MEMBER}:role/{ROLE_NAME}");
        assert!(assumed.iter().all(|p| p["RoleArn"] == role_arn && p["ExternalId"] == EXTERNAL_ID), "{assumed:#?}");
        let session = format!("keyturn-{}", saga.saga_id);
        assert_eq!(assumed.iter().filter(|p| p["RoleSessionName"] == session).count(), 1, "credentials cached for the saga: {assumed:#?}");
        assert!(assumed.iter().all(|p| p["RoleSessionName"] == session || p["RoleSessionName"] == "keyturn-intake"), "{assumed:#?}");
        for action in ["ListAccessKeys", "CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey"] {
            let signers = log.signed_by(action);
            assert!(!signers.is_empty(), "{action} was called");
            assert!(signers.iter().all(|k| k != "testing"), "{action} signed with the worker's own key: {signers:?}");
        }
    }

    // The finding is updated in its own region, with its own Id and ProductArn.
    let calls = env.securityhub.state.lock().unwrap().log.clone();
    assert!(!calls.is_empty(), "the finding was updated");
    for c in &calls {
        assert_eq!(c.api, Api::V1);
        assert_eq!(c.region, FINDING_REGION);
        assert_eq!(c.body["FindingIdentifiers"][0]["Id"], finding_id);
        assert_eq!(c.body["FindingIdentifiers"][0]["ProductArn"], product_arn);
    }
    assert!(calls.iter().any(|c| c.body["Workflow"]["Status"] == "RESOLVED"), "{calls:#?}");

    // The notification names the member account.
    let n = env.notifications(1, Duration::from_secs(10)).await;
    let ok = n.iter().find(|n| n.attributes["event"] == "rotation.succeeded").expect("success notification");
    assert!(ok.raw.contains(MEMBER), "{}", ok.raw);
}

/// The template's worker policy, widened for moto (see deploy.rs), without
/// its `sts:AssumeRole` statement.
fn worker_policy_without_assume_role() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .current_dir(root)
        .args(["infra/check_policy.py", "infra/keyturn-stack.yaml", "--emit-widened", "WorkerPolicy"])
        .output()
        .expect("python3 runs infra/check_policy.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statements = doc["Statement"].as_array_mut().unwrap();
    let before = statements.len();
    statements.retain(|s| !s["Action"].as_array().unwrap().iter().any(|a| a == "sts:AssumeRole"));
    assert_eq!(statements.len(), before - 1, "the template grants sts:AssumeRole in one statement");
    statements.push(serde_json::json!({"Effect": "Allow", "Action": ["dynamodb:TransactWriteItems"], "Resource": "*"}));
    doc.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_be_assumed_changes_nothing_and_notifies() {
    let env = TestEnv::new(Options { enforce_auth: true, ..Options::default() }).await.unwrap();
    let hub_before = key_ids(&env.clients.iam, USER).await;
    let role = format!("arn:aws:iam::{MEMBER}:role/{ROLE_NAME}");
    let cfg = member_config(&env, &format!("source = {{ kind = \"iam_access_key\", user_name = \"{USER}\", role_arn = \"{role}\" }}"));
    let worker_clients = env.clients_for_policy("keyturn-worker", &worker_policy_without_assume_role()).await.unwrap();
    let engine = Arc::new(keyturn::app::engine_with(&cfg, &worker_clients, "w1".into(), keyturn::app::sqs_queue(&cfg, &worker_clients)));
    // The dry run already says the saga would stop before any change.
    let plan = engine.plan_event(&member_finding().0).await.unwrap().join("\n");
    assert!(plan.contains("would fail at start, before any change (and notify): AWS sts.AssumeRole failed: AccessDenied"), "{plan}");
    let w = RunningWorker::spawn(engine.clone(), &cfg.worker);
    let keyturn::store::Created::New(saga_id) = engine.request("member-mailer", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    w.stop().await;

    // A failure at start is a refusal: nothing was changed.
    assert_eq!(saga.status, Status::Refused, "{saga:#?}");
    assert!(saga.keys.new_key.is_none(), "no key was created");
    assert!(saga.outcome.history.iter().all(|a| matches!(a.step, Step::Start | Step::Finalize)), "stopped at start: {:#?}", saga.outcome.history);
    assert_eq!(saga.outcome.history[0].code.as_deref(), Some("AccessDenied"), "not retried: a refusal is permanent");
    assert_eq!(key_ids(&env.clients.iam, USER).await, hub_before, "the hub account's {USER} is untouched");

    let n = env.notifications(1, Duration::from_secs(10)).await;
    let failed = n.iter().find(|n| n.attributes["event"] == "rotation.failed").unwrap_or_else(|| panic!("{n:#?}"));
    let text = failed.raw.clone();
    for needle in [role.as_str(), MEMBER, "AccessDenied", "AssumeRole"] {
        assert!(text.contains(needle), "the notification names {needle}: {text}");
    }
}
