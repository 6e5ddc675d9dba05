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
    widened("WorkerPolicy,WorkerSecretsPolicy")
}

/// The template's identity policies `ids`, widened as described above.
fn widened(ids: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "infra/check_policy.py",
            "infra/keyturn-stack.yaml",
            "--emit-widened",
            ids,
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
    let events_url = env.outcome_events_queue().await.unwrap();
    let worker_clients = env.clients_for_policy("keyturn-worker", &doc.to_string()).await.unwrap();
    let engine = Arc::new(keyturn::app::engine(&env.config, &worker_clients, "least-privilege".into()));
    let intake = keyturn::app::intake_queue(&env.config, &worker_clients).map(Arc::new);
    let w = RunningWorker::spawn_with_intake(engine.clone(), &env.config.worker, intake);
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(saga.outcome.history.iter().all(|a| a.outcome == "ok"), "no step needed a retry: {:#?}", saga.outcome.history);
    // The template grants events:PutEvents: the outcome event reached the bus.
    let events = env.outcome_events(&events_url, 1, Duration::from_secs(10)).await;
    assert!(events.iter().any(|e| e["detail-type"] == "Rotation Succeeded" && e["detail"]["saga_id"] == saga_id.as_str()), "{events:#?}");

    // The same worker is refused what the policy does not grant: enforcement is real.
    let denied = worker_clients.iam.list_users().send().await.unwrap_err();
    let e = keyturn::error::aws("iam", "ListUsers", denied);
    assert!(e.to_string().contains("AccessDenied"), "{e}");
}

/// Issue 20, item 6: the `secrets_manager_secret` target (with the IAM
/// source) runs with exactly the worker role's grants — `WorkerPolicy` and
/// `WorkerTargetSecretsPolicy` (TargetSecretArns). Before, the stack granted
/// only `secretsmanager:GetSecretValue`, so the push was denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_worker_policy_is_enough_for_a_secrets_manager_target() {
    let policy = widened("WorkerPolicy,WorkerTargetSecretsPolicy");
    assert!(policy.contains("secretsmanager:PutSecretValue"), "{policy}");
    let mut doc: serde_json::Value = serde_json::from_str(&policy).unwrap();
    // The moto-only addition explained in the test above.
    doc["Statement"].as_array_mut().unwrap().push(serde_json::json!({
        "Sid": "MotoOnlyTransactWriteItems", "Effect": "Allow", "Action": ["dynamodb:TransactWriteItems"], "Resource": "*"
    }));

    let env = TestEnv::new(Options { enforce_auth: true, ..Options::default() }).await.unwrap();
    let iam = &env.clients.iam;
    iam.create_user().user_name("app-reader").send().await.unwrap();
    let k = iam.create_access_key().user_name("app-reader").send().await.unwrap();
    let old_id = k.access_key().unwrap().access_key_id().to_string();
    let old_secret = k.access_key().unwrap().secret_access_key().to_string();
    let body = serde_json::json!({"AWS_ACCESS_KEY_ID": old_id, "AWS_SECRET_ACCESS_KEY": old_secret}).to_string();
    env.clients.secrets.create_secret().name("app/aws").secret_string(body).send().await.unwrap();
    let cfg = env.config_with(
        r#"
[[rotation]]
id = "app-secret"
source = { kind = "iam_access_key", user_name = "app-reader" }

[rotation.target]
kind = "secrets_manager_secret"
secret_id = "app/aws"

[rotation.policy]
grace_period = "0s"
"#,
        true,
    );
    let worker_clients = env.clients_for_policy("keyturn-worker", &doc.to_string()).await.unwrap();
    let engine = Arc::new(keyturn::app::engine(&cfg, &worker_clients, "least-privilege".into()));
    let w = RunningWorker::spawn(engine.clone(), &cfg.worker);
    let Created::New(saga_id) = engine.request("app-secret", "manual").await.unwrap() else { panic!() };
    let saga = env.wait_terminal(&saga_id, Duration::from_secs(60)).await;
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert!(saga.outcome.history.iter().all(|a| a.outcome == "ok"), "no step was denied: {:#?}", saga.outcome.history);
    let current = env.clients.secrets.get_secret_value().secret_id("app/aws").send().await.unwrap();
    let current: serde_json::Value = serde_json::from_str(current.secret_string().unwrap()).unwrap();
    assert_eq!(current["AWS_ACCESS_KEY_ID"], saga.keys.new_key.as_deref().unwrap());

    // Enforcement is real: without WorkerTargetSecretsPolicy the push is denied.
    let without = widened("WorkerPolicy");
    assert!(!without.contains("PutSecretValue"));
    let denied = env.clients_for_policy("keyturn-worker-2", &without).await.unwrap();
    let e = denied.secrets.put_secret_value().secret_id("app/aws").secret_string("{}").send().await.unwrap_err();
    let e = keyturn::error::aws("secretsmanager", "PutSecretValue", e);
    assert!(e.to_string().contains("AccessDenied"), "{e}");
}

/// Deploy `infra/keyturn-stack.yaml` into moto's CloudFormation, configure
/// keyturn from the stack outputs, and rotate a key against those resources —
/// started by a Security Hub custom action ("Rotate with keyturn") through
/// the stack's own EventBridge rule and intake queue.
///
/// The custom-action rule is used because moto cannot evaluate the IAM.3
/// rule's pattern: moto does not match patterns inside arrays of objects
/// (`detail.findings[]`), so no finding pattern ever matches there. That rule
/// is checked against the fixtures by `infra/check_event_patterns.py` in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_deploys_into_moto_and_its_resources_run_a_rotation() {
    use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
    use keyturn_testkit::auth0_fake::FakeAuth0;
    use keyturn_testkit::env::{drain, sdk_config};

    keyturn_testkit::capture::install();
    let moto = keyturn_testkit::moto::Moto::start(&[]).await.unwrap();
    let sdk = sdk_config(&moto.endpoint, aws_credential_types::Credentials::new("testing", "testing", None, None, "t")).await;
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let body = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/keyturn-stack.yaml")).unwrap();
    let p = |k: &str, v: &str| Parameter::builder().parameter_key(k).parameter_value(v).build();
    cfn.create_stack()
        .stack_name("keyturn")
        .template_body(body)
        .capabilities(Capability::CapabilityNamedIam)
        .parameters(p("ComputeMode", "ecs"))
        .parameters(p("WorkerImage", "123456789012.dkr.ecr.us-east-1.amazonaws.com/keyturn:1"))
        .parameters(p("SubnetIds", "subnet-12345678"))
        .parameters(p("SecurityGroupIds", "sg-12345678"))
        .parameters(p("CreateSecurityHubAction", "false"))
        .parameters(p("ReferencedSecretArns", "arn:aws:secretsmanager:us-east-1:123456789012:secret:keyturn/auth0-AbCdEf"))
        .send()
        .await
        .unwrap();
    let stack = loop {
        let s = cfn.describe_stacks().stack_name("keyturn").send().await.unwrap().stacks.unwrap().remove(0);
        if s.stack_status() != Some(&StackStatus::CreateInProgress) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stack.stack_status(), Some(&StackStatus::CreateComplete), "{stack:?}");
    let out = |k: &str| {
        stack.outputs().iter().find(|o| o.output_key() == Some(k)).and_then(|o| o.output_value()).unwrap_or_else(|| panic!("output {k}")).to_string()
    };

    // Rotation requests have a bus of their own: the request rule lives there
    // (not on the default bus) and delivers to the intake queue; every queue
    // and dead-letter queue is encrypted with the stack's KMS key.
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    let on_requests = eb.list_rules().event_bus_name("keyturn-requests").send().await.unwrap();
    let names: Vec<_> = on_requests.rules().iter().filter_map(|r| r.name()).collect();
    assert_eq!(names, ["keyturn-rotation-requests"]);
    let on_default = eb.list_rules().send().await.unwrap();
    assert!(on_default.rules().iter().all(|r| r.name() != Some("keyturn-rotation-requests")), "{on_default:?}");
    let targets = eb.list_targets_by_rule().rule("keyturn-rotation-requests").event_bus_name("keyturn-requests").send().await.unwrap();
    assert!(targets.targets().iter().any(|t| t.arn().ends_with(":keyturn-intake")), "{targets:?}");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for k in ["QueueUrl", "DeadLetterQueueUrl", "PriorityQueueUrl", "PriorityDeadLetterQueueUrl", "IntakeQueueUrl", "IntakeDeadLetterQueueUrl"] {
        let attrs = sqs.get_queue_attributes().queue_url(out(k)).attribute_names(aws_sdk_sqs::types::QueueAttributeName::All).send().await.unwrap();
        let key = attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::KmsMasterKeyId)).cloned();
        assert_eq!(key.as_deref(), Some(out("KmsKeyId").as_str()), "{k} is not encrypted with the stack's key");
    }

    // What an operator does after deploying: a user under the rotated path,
    // the Auth0 secret, a subscription to watch notifications.
    let clients = keyturn::aws::Clients::new(sdk.clone());
    clients.iam.create_user().path("/keyturn/").user_name("auth0-ses-sender").send().await.unwrap();
    let old = clients.iam.create_access_key().user_name("auth0-ses-sender").send().await.unwrap();
    let old_id = old.access_key().unwrap().access_key_id().to_string();
    clients.secrets.create_secret().name("keyturn/auth0").secret_string("auth0-secret-0123456789abcdef").send().await.unwrap();
    let watch = clients.sqs.create_queue().queue_name("watch").send().await.unwrap().queue_url.unwrap();
    let watch_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&watch)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    clients.sns.subscribe().topic_arn(out("TopicArn")).protocol("sqs").endpoint(watch_arn).send().await.unwrap();
    let auth0 = FakeAuth0::start("auth0-secret-0123456789abcdef", &old_id).await;
    let securityhub = keyturn_testkit::securityhub_fake::FakeSecurityHub::start().await;
    let mut clients = clients;
    clients.securityhub =
        aws_sdk_securityhub::Client::from_conf(aws_sdk_securityhub::config::Builder::from(&sdk).endpoint_url(securityhub.server.uri()).build());

    let config_text = format!(
        r#"
[aws]
region = "us-east-1"
queue_url = "{q}"
dlq_url = "{dlq}"
intake_queue_url = "{iq}"
intake_dlq_url = "{idlq}"
table = "{table}"
topic_arn = "{topic}"
kms_key_id = "{key}"
{worker}{rotation}"#,
        q = out("QueueUrl"),
        dlq = out("DeadLetterQueueUrl"),
        iq = out("IntakeQueueUrl"),
        idlq = out("IntakeDeadLetterQueueUrl"),
        table = out("TableName"),
        topic = out("TopicArn"),
        key = out("KmsKeyId"),
        worker = keyturn_testkit::env::FAST_WORKER_TOML,
        rotation = keyturn_testkit::env::rotation_toml(
            "auth0-ses",
            "auth0-ses-sender",
            "example.eu.auth0.com",
            &auth0.uri(),
            r#"{ secrets_manager = "keyturn/auth0" }"#,
            "grace_period = \"0s\"\nretry_base = \"200ms\"\nretry_cap = \"2s\"",
        ),
    );
    let cfg = keyturn::config::Config::parse(&config_text).unwrap();
    let engine = Arc::new(keyturn::app::engine(&cfg, &clients, "stack".into()));
    let intake = keyturn::app::intake_queue(&cfg, &clients).map(Arc::new);
    let w = RunningWorker::spawn_with_intake(engine.clone(), &cfg.worker, intake);

    // An operator clicks "Rotate with keyturn" on the finding.
    let event: serde_json::Value = serde_json::from_str(include_str!("../fixtures/securityhub-custom-action.json")).unwrap();
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("aws.securityhub")
        .detail_type("Security Hub Findings - Custom Action")
        .resources(out("ActionTargetArn"))
        .detail(event["detail"].to_string())
        .build();
    eb.put_events().entries(entry).send().await.unwrap();

    let start = std::time::Instant::now();
    let saga = loop {
        let all = engine.store().list().await.unwrap();
        if let Some(s) = all.into_iter().find(|s| s.saga.status.is_terminal()) {
            break s.saga;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no saga finished from the stack's EventBridge rule");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    w.stop().await;
    assert_eq!(saga.status, Status::Succeeded, "{saga:#?}");
    assert_eq!(saga.trigger, "securityhub:custom_action:Rotate with keyturn");
    let keys = clients.iam.list_access_keys().user_name("auth0-ses-sender").send().await.unwrap();
    assert_eq!(keys.access_key_metadata().len(), 1);
    assert_ne!(keys.access_key_metadata()[0].access_key_id(), Some(old_id.as_str()));
    assert_eq!(auth0.provider().unwrap().access_key_id, keys.access_key_metadata()[0].access_key_id().unwrap());
    let notes = drain(&clients.sqs, &watch, 1, Duration::from_secs(10)).await;
    assert!(notes.iter().any(|(b, _)| b.contains("rotation.succeeded")), "{notes:?}");
    assert_eq!(securityhub.calls().last().unwrap()["Workflow"]["Status"], "RESOLVED");
}

/// Resource scoping, proven on the template itself: no IAM, KMS, DynamoDB,
/// SQS, SNS or Secrets Manager action on `*`, and parliament clean. The same
/// check must fail on a template that grants one of them on `*`.
#[test]
fn the_template_scopes_every_resource_and_the_check_can_fail() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let check = |template: &str| {
        Command::new("python3").current_dir(root).args(["infra/check_policy.py", template]).output().expect("python3 runs infra/check_policy.py")
    };
    let good = check("infra/keyturn-stack.yaml");
    assert!(good.status.success(), "{}{}", String::from_utf8_lossy(&good.stdout), String::from_utf8_lossy(&good.stderr));

    let original = std::fs::read_to_string(format!("{root}/infra/keyturn-stack.yaml")).unwrap();
    let needle = "          - Sid: WhoAmI";
    assert!(original.contains(needle));
    let bad = original.replace(
        needle,
        "          - Sid: TooWide\n            Effect: Allow\n            Action: dynamodb:GetItem\n            Resource: \"*\"\n          - Sid: WhoAmI",
    );
    let path = std::env::temp_dir().join(format!("keyturn-too-wide-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, bad).unwrap();
    let out = check(path.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dynamodb:GetItem on Resource \"*\""));
}

/// The intake queue denies `sqs:SendMessage` to every principal but the
/// stack's EventBridge rules and `RequesterPrincipalArns` (issue 20, item 1):
/// `infra/check_policy.py` passes the template and fails each way the Deny
/// could be lost, narrowed or loosened, and on an Allow for everyone.
#[test]
fn the_intake_queue_denies_every_other_sender_and_the_check_can_fail() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let check = |template: &str| {
        Command::new("python3").current_dir(root).args(["infra/check_policy.py", template]).output().expect("python3 runs infra/check_policy.py")
    };
    let good = check("infra/keyturn-stack.yaml");
    let stdout = String::from_utf8_lossy(&good.stdout).into_owned();
    assert!(good.status.success(), "{stdout}{}", String::from_utf8_lossy(&good.stderr));
    assert!(stdout.contains("sqs:SendMessage denied to all but 7 rule(s) and 1 principal(s)"), "{stdout}");

    let original = std::fs::read_to_string(format!("{root}/infra/keyturn-stack.yaml")).unwrap();
    let loosen = |from: &str, to: &str, expect: &str| {
        assert_eq!(original.matches(from).count(), 1, "{from}");
        let path = std::env::temp_dir().join(format!("keyturn-intake-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&path, original.replace(from, to)).unwrap();
        let out = check(path.to_str().unwrap());
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{from} -> {to}: {stdout}");
        assert!(stdout.contains(expect), "{from} -> {to}: expected {expect:?} in {stdout}");
    };
    let deny = "          - Sid: DenySendExceptRulesAndRequesters\n            Effect: Deny\n";
    let no_deny = "no queue policy explicitly denies sqs:SendMessage to every other principal";
    // The Deny gone (an Allow in its place).
    loosen(deny, "          - Sid: DenySendExceptRulesAndRequesters\n            Effect: Allow\n", no_deny);
    // The Deny narrowed to some requests only.
    let principals = "                \"aws:PrincipalArn\": !If [HasRequesters, !Ref RequesterPrincipalArns, !Ref AWS::NoValue]\n";
    loosen(principals, &format!("{principals}              Bool:\n                \"aws:SecureTransport\": \"false\"\n"), no_deny);
    // Every principal exempted, or a rule that is not the stack's.
    loosen(principals, "                \"aws:PrincipalArn\": \"*\"\n", "aws:PrincipalArn exempts ['*']");
    loosen(
        &format!("                  - !GetAtt HandoverSecretChangedRule.Arn\n{principals}"),
        &format!("                  - arn:aws:events:eu-west-1:999999999999:rule/elsewhere\n{principals}"),
        "which are not this template's rules",
    );
    // An Allow for everyone next to the Deny.
    loosen(
        deny,
        &format!("          - Sid: Everyone\n            Effect: Allow\n            Principal: \"*\"\n            Action: sqs:SendMessage\n            Resource: !GetAtt IntakeQueue.Arn\n{deny}"),
        "IntakeQueuePolicy/Everyone: allows everyone to send",
    );
}

/// The member-account template (`infra/member-role.yaml`, for StackSets):
/// the same check passes it — access-key actions only under the user path,
/// trust in one role only with the external ID and the organisation — and
/// fails each way it could be loosened.
#[test]
fn the_member_role_trusts_only_the_hub_and_the_check_can_fail() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let check = |template: &str| {
        Command::new("python3").current_dir(root).args(["infra/check_policy.py", template]).output().expect("python3 runs infra/check_policy.py")
    };
    let good = check("infra/member-role.yaml");
    let stdout = String::from_utf8_lossy(&good.stdout).into_owned();
    assert!(good.status.success(), "{stdout}{}", String::from_utf8_lossy(&good.stderr));
    assert!(stdout.contains("OK: 1 identity, 0 resource and 1 trust policies checked"), "{stdout}");

    let original = std::fs::read_to_string(format!("{root}/infra/member-role.yaml")).unwrap();
    let loosen = |from: &str, to: &str, expect: &str| {
        assert!(original.contains(from), "{from}");
        let path = std::env::temp_dir().join(format!("keyturn-member-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&path, original.replace(from, to)).unwrap();
        let out = check(path.to_str().unwrap());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{from} -> {to}: {stdout}");
        assert!(stdout.contains(expect), "{from} -> {to}: expected {expect:?} in {stdout}");
    };
    loosen("                \"sts:ExternalId\": !Ref ExternalId\n", "", "trust without a StringEquals condition on sts:ExternalId");
    loosen("                \"aws:PrincipalOrgID\": !Ref OrganizationId\n", "", "trust without a StringEquals condition on aws:PrincipalOrgID");
    loosen("              AWS: !Ref HubWorkerRoleArn", "              AWS: !Sub arn:${AWS::Partition}:iam::111111111111:root", "trust one named role");
    loosen("              AWS: !Ref HubWorkerRoleArn", "              AWS: \"*\"", "trusts every principal");
    loosen("user${RotatedUserPath}*", "user/*", "iam:CreateAccessKey on arn:aws:iam::123456789012:user/*: access keys only of users under an IAM path");

    // And the hub may assume that role only, not every role.
    let hub = std::fs::read_to_string(format!("{root}/infra/keyturn-stack.yaml")).unwrap();
    let from = "iam::*:role/${MemberRoleName}";
    assert!(hub.contains(from));
    let path = std::env::temp_dir().join(format!("keyturn-any-role-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, hub.replace(from, "iam::*:role/*")).unwrap();
    let out = check(path.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sts:AssumeRole on arn:aws:iam::*:role/*: name the role to assume"));
}

/// The member template deploys (moto's CloudFormation) into a role with
/// exactly the trust and permissions it states. moto does not evaluate trust
/// policies, so this checks the created documents, not an AssumeRole refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_role_template_deploys_into_the_role_it_describes() {
    use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
    use keyturn_testkit::env::sdk_config;

    let moto = keyturn_testkit::moto::Moto::start(&[]).await.unwrap();
    let sdk = sdk_config(&moto.endpoint, aws_credential_types::Credentials::new("testing", "testing", None, None, "t")).await;
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let body = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/member-role.yaml")).unwrap();
    let p = |k: &str, v: &str| Parameter::builder().parameter_key(k).parameter_value(v).build();
    cfn.create_stack()
        .stack_name("keyturn-member")
        .template_body(body)
        .capabilities(Capability::CapabilityNamedIam)
        .parameters(p("HubWorkerRoleArn", "arn:aws:iam::111111111111:role/keyturn-worker"))
        .parameters(p("ExternalId", "keyturn-7f3a9c2e"))
        .parameters(p("OrganizationId", "o-a1b2c3d4e5"))
        .send()
        .await
        .unwrap();
    let stack = loop {
        let s = cfn.describe_stacks().stack_name("keyturn-member").send().await.unwrap().stacks.unwrap().remove(0);
        if s.stack_status() != Some(&StackStatus::CreateInProgress) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stack.stack_status(), Some(&StackStatus::CreateComplete), "{stack:?}");
    let iam = aws_sdk_iam::Client::new(&sdk);
    let role = iam.get_role().role_name("keyturn-member").send().await.unwrap().role.unwrap();
    // IAM answers URL-encoded JSON; moto's CloudFormation stores inline role
    // policies as a Python repr (single quotes), which is read as such.
    let decode = |s: &str| -> serde_json::Value {
        let s = percent_decode(s);
        serde_json::from_str(&s).or_else(|_| serde_json::from_str(&s.replace('\'', "\""))).unwrap_or_else(|e| panic!("{e}: {s}"))
    };
    let trust = decode(role.assume_role_policy_document().unwrap());
    let st = &trust["Statement"][0];
    assert_eq!(st["Principal"]["AWS"], "arn:aws:iam::111111111111:role/keyturn-worker");
    assert_eq!(st["Condition"]["StringEquals"]["sts:ExternalId"], "keyturn-7f3a9c2e");
    assert_eq!(st["Condition"]["StringEquals"]["aws:PrincipalOrgID"], "o-a1b2c3d4e5");
    let policy = iam.get_role_policy().role_name("keyturn-member").policy_name("rotate-access-keys-under-path").send().await.unwrap();
    let doc = decode(policy.policy_document());
    assert_eq!(doc["Statement"][0]["Resource"], "arn:aws:iam::123456789012:user/keyturn/*");
    assert_eq!(doc["Statement"][0]["Action"].as_array().unwrap().len(), 5);
    let out = stack.outputs().iter().find(|o| o.output_key() == Some("MemberRoleArn")).and_then(|o| o.output_value()).unwrap();
    assert_eq!(out, "arn:aws:iam::123456789012:role/keyturn-member");
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
