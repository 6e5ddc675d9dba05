//! `keyturn doctor`: a preflight of a deployed environment and of every
//! configured rotation. It changes nothing.
//!
//! The environment checks live here: the worker's identity, the saga table
//! (key, indexes and TTL exactly as [`crate::store::create_table`] declares
//! them), the step and intake queues (exist, dead-letter queue, redrive
//! policy, visibility timeout against the worker's lease), a KMS
//! encrypt/decrypt round trip with the encryption context keyturn uses
//! ([`crate::seal`]), the SNS topic and, when configured, the EventBridge bus.
//!
//! Each rotation's checks come from its connectors
//! ([`crate::connectors::CredentialSource::doctor`],
//! [`crate::connectors::Target::doctor`]): a connector answers for itself,
//! so a new connector brings its own checks. The connectors also name the
//! AWS actions the rotation needs of the worker's own identity; doctor asks
//! IAM's policy simulator (`SimulatePrincipalPolicy`) about them, and says
//! "not checked" where the simulator cannot answer (moto does not implement
//! it; a role without `iam:SimulatePrincipalPolicy` cannot ask).
//!
//! A rotation *could run now* when none of its checks and none of the
//! environment's checks failed; warnings and "not checked" do not stop it.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use crate::aws::Clients;
use crate::config::Config;
use crate::connectors::Rotation;
use crate::error::{aws, Error};
use crate::preflight::{AwsAction, Check, Status};

/// One rotation's result.
#[derive(Debug, Serialize)]
pub struct RotationReport {
    pub rotation_id: String,
    /// `source → target`, as the connectors describe themselves.
    pub describe: String,
    /// Whether a rotation could start now (none of its checks, and none of
    /// the environment's, failed).
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// The whole preflight (`keyturn doctor --json` prints it).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Every rotation could run now.
    pub ready: bool,
    pub environment: Vec<Check>,
    pub rotations: Vec<RotationReport>,
}

fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// Run every check. Never changes anything: reads, a KMS round trip of a
/// constant, token requests and policy simulation only.
/// `principal` (a role or user ARN) is whose permissions the policy
/// simulation checks; `None`: the identity doctor runs as.
pub async fn run(cfg: &Config, clients: &Clients, rotations: &[Rotation], principal: Option<&str>) -> Report {
    let (mut environment, caller) = identity(clients).await;
    let principal = principal.map(str::to_string).or(caller);
    environment.extend(table(cfg, clients).await);
    environment.extend(queue(clients, "step queue", &cfg.aws.queue_url, &cfg.aws.dlq_url, cfg.worker.lease.0).await);
    match (&cfg.aws.intake_queue_url, &cfg.aws.intake_dlq_url) {
        (Some(q), Some(d)) => environment.extend(queue(clients, "intake queue", q, d, cfg.worker.lease.0).await),
        _ => environment.push(Check::ok("intake queue", "not configured: no intake loop (events and rotation requests are not read)")),
    }
    environment.push(kms(cfg, clients).await);
    environment.push(topic(cfg, clients).await);
    environment.push(bus(cfg, clients).await);
    let env_failed = failed(&environment);
    let mut out = Vec::new();
    for r in rotations {
        // Member-account roles are assumed with the session `keyturn-doctor`.
        let (source, target) = crate::accounts::for_saga("doctor", async { tokio::join!(r.source.doctor(), r.target.doctor()) }).await;
        let mut checks = source.checks;
        checks.extend(target.checks);
        let mut actions = source.actions;
        actions.extend(target.actions);
        checks.push(simulate(clients, principal.as_deref(), &actions).await);
        let ready = !env_failed && !failed(&checks);
        out.push(RotationReport { rotation_id: r.id.clone(), describe: format!("{} → {}", r.source.describe(), r.target.describe()), ready, checks });
    }
    Report { ready: !env_failed && out.iter().all(|r| r.ready), environment, rotations: out }
}

/// One line of AWS's answer, for a check's detail.
fn said(e: &Error) -> String {
    match e {
        Error::Aws { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

/// The worker's identity (`sts:GetCallerIdentity`), and the IAM principal
/// ARN policy simulation asks about (a role's ARN for an assumed-role
/// session, looked up with `iam:GetRole` for its path).
async fn identity(clients: &Clients) -> (Vec<Check>, Option<String>) {
    let sts = aws_sdk_sts::Client::new(&clients.base);
    let out = match sts.get_caller_identity().send().await {
        Ok(o) => o,
        Err(e) => {
            let e = aws("sts", "GetCallerIdentity", e);
            return (
                vec![Check::fail(
                    "AWS credentials",
                    format!("cannot call AWS: {}", said(&e)),
                    "give keyturn AWS credentials and a region (AWS_PROFILE or the role of the task/function, AWS_REGION)",
                )],
                None,
            );
        }
    };
    let arn = out.arn().unwrap_or_default().to_string();
    let principal = principal_arn(&clients.iam, &arn).await;
    (vec![Check::ok("AWS credentials", format!("acting as {arn}"))], principal)
}

async fn principal_arn(iam: &aws_sdk_iam::Client, caller: &str) -> Option<String> {
    // arn:aws:sts::123456789012:assumed-role/NAME/SESSION
    if let Some(rest) = caller.split(":assumed-role/").nth(1) {
        let name = rest.split('/').next()?;
        return iam.get_role().role_name(name).send().await.ok().and_then(|o| o.role().map(|r| r.arn().to_string()));
    }
    caller.contains(":user/").then(|| caller.to_string())
}

/// The table's key, indexes and TTL against [`crate::store::create_table`].
async fn table(cfg: &Config, clients: &Clients) -> Vec<Check> {
    let name = &cfg.aws.table;
    let stack = "the stack (infra/keyturn-stack.yaml) declares all of them; docs/deploy.md lists the schema";
    let out = match clients.dynamodb.describe_table().table_name(name).send().await {
        Ok(o) => o,
        Err(e) => {
            let e = aws("dynamodb", "DescribeTable", e);
            let fix = if e.code() == "ResourceNotFoundException" {
                format!("create the table {name} ({stack}), or correct [aws] table")
            } else {
                "let keyturn's identity call dynamodb:DescribeTable on the table".to_string()
            };
            return vec![Check::fail("table", format!("cannot read table {name}: {}", said(&e)), fix)];
        }
    };
    let Some(t) = out.table() else { return vec![Check::fail("table", format!("DescribeTable of {name} answered no table"), "check [aws] table")] };
    let mut checks = Vec::new();
    let key: Vec<(String, String)> = t.key_schema().iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect();
    let types: HashMap<&str, &str> = t.attribute_definitions().iter().map(|a| (a.attribute_name(), a.attribute_type().as_str())).collect();
    if key == [("pk".to_string(), "HASH".to_string())] && types.get("pk") == Some(&"S") {
        checks.push(Check::ok("table key", format!("{name}: partition key pk (string)")));
    } else {
        checks.push(Check::fail(
            "table key",
            format!("{name} has key {key:?}; keyturn needs only the string partition key pk"),
            format!("create a new table with partition key pk (string) ({stack}) and point [aws] table at it"),
        ));
    }
    let have: HashMap<&str, Vec<(String, String)>> = t
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap_or_default(),
                g.key_schema().iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect(),
            )
        })
        .collect();
    for idx in crate::store::INDEXES {
        let want = vec![(idx.hash.0.to_string(), "HASH".to_string()), (idx.range.0.to_string(), "RANGE".to_string())];
        match have.get(idx.name) {
            Some(k) if *k == want => checks.push(Check::ok(format!("index {}", idx.name), format!("{} + {} ({})", idx.hash.0, idx.range.0, idx.used_by))),
            Some(k) => checks.push(Check::fail(
                format!("index {}", idx.name),
                format!("{name}'s index {} has key {k:?}, not {} + {}", idx.name, idx.hash.0, idx.range.0),
                format!("delete the index and create it again as: {}", idx.update_table(name)),
            )),
            None => checks.push(Check::fail(
                format!("index {}", idx.name),
                format!("{name} has no index {} ({} needs it)", idx.name, idx.used_by),
                format!("add it: {}", idx.update_table(name)),
            )),
        }
    }
    checks.push(match clients.dynamodb.describe_time_to_live().table_name(name).send().await {
        Ok(o) => {
            let d = o.time_to_live_description();
            let attr = d.and_then(|d| d.attribute_name()).unwrap_or_default();
            let on = d.and_then(|d| d.time_to_live_status()).is_some_and(|s| matches!(s.as_str(), "ENABLED" | "ENABLING"));
            if on && attr == crate::store::TTL_ATTRIBUTE {
                Check::ok("table TTL", format!("on {attr}: finished sagas expire after [worker] retention"))
            } else {
                Check::warn(
                    "table TTL",
                    format!("TTL is not enabled on {} (found {attr:?}): finished sagas are never deleted", crate::store::TTL_ATTRIBUTE),
                    format!(
                        "aws dynamodb update-time-to-live --table-name {name} --time-to-live-specification Enabled=true,AttributeName={}",
                        crate::store::TTL_ATTRIBUTE
                    ),
                )
            }
        }
        Err(e) => Check::not_checked("table TTL", format!("cannot read the TTL setting: {}", said(&aws("dynamodb", "DescribeTimeToLive", e)))),
    });
    checks
}

/// A queue and its DLQ: both exist, the redrive policy points at the DLQ,
/// and the visibility timeout is not shorter than the worker's lease.
async fn queue(clients: &Clients, what: &str, url: &str, dlq_url: &str, lease: std::time::Duration) -> Vec<Check> {
    let attrs = |u: &str| {
        let u = u.to_string();
        async move {
            clients
                .sqs
                .get_queue_attributes()
                .queue_url(u)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await
                .map(|o| o.attributes.unwrap_or_default())
                .map_err(|e| aws("sqs", "GetQueueAttributes", e))
        }
    };
    let q = match attrs(url).await {
        Ok(a) => a,
        Err(e) => {
            return vec![Check::fail(
                what,
                format!("cannot read {url}: {}", said(&e)),
                "create the queue or correct its URL in [aws]; the worker needs sqs:GetQueueAttributes on it".to_string(),
            )]
        }
    };
    let mut checks = vec![Check::ok(what, format!("{url} exists"))];
    let dlq = match attrs(dlq_url).await {
        Ok(a) => a,
        Err(e) => {
            checks.push(Check::fail(
                format!("{what} DLQ"),
                format!("cannot read {dlq_url}: {}", said(&e)),
                "create the dead-letter queue or correct its URL in [aws]",
            ));
            return checks;
        }
    };
    let dlq_arn = dlq.get(&QueueAttributeName::QueueArn).cloned().unwrap_or_default();
    let redrive: Option<serde_json::Value> = q.get(&QueueAttributeName::RedrivePolicy).and_then(|p| serde_json::from_str(p).ok());
    let target = redrive.as_ref().and_then(|r| r["deadLetterTargetArn"].as_str()).unwrap_or_default().to_string();
    let max = redrive.as_ref().and_then(|r| r["maxReceiveCount"].as_u64().or_else(|| r["maxReceiveCount"].as_str().and_then(|s| s.parse().ok())));
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let fix = format!("aws sqs set-queue-attributes --queue-url {url} --attributes '{{\"RedrivePolicy\":{}}}'", serde_json::Value::String(policy));
    checks.push(match (redrive.is_some(), target == dlq_arn, max) {
        (false, ..) => Check::fail(format!("{what} redrive"), "no redrive policy: a poison message is received again forever", fix),
        (true, false, _) => Check::fail(format!("{what} redrive"), format!("the redrive policy sends dead letters to {target:?}, not to {dlq_arn}"), fix),
        (true, true, m) => Check::ok(format!("{what} redrive"), format!("to {dlq_arn} after {} receives", m.map(|m| m.to_string()).unwrap_or("?".into()))),
    });
    let vis = q.get(&QueueAttributeName::VisibilityTimeout).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    checks.push(if vis < lease.as_secs() {
        Check::warn(
            format!("{what} visibility"),
            format!("visibility timeout {vis}s is shorter than [worker] lease {}s: in Lambda mode (which receives with the queue's timeout) a message returns while its step still holds the lease", lease.as_secs()),
            format!("aws sqs set-queue-attributes --queue-url {url} --attributes VisibilityTimeout={}", lease.as_secs().max(30)),
        )
    } else {
        Check::ok(format!("{what} visibility"), format!("visibility timeout {vis}s ≥ lease {}s", lease.as_secs()))
    });
    checks
}

/// Encrypt and decrypt a constant with the encryption context keyturn
/// binds sealed secrets to (a key policy that requires it is honoured).
async fn kms(cfg: &Config, clients: &Clients) -> Check {
    let sealer = crate::seal::Sealer::new(clients.kms.clone(), &cfg.aws.kms_key_id);
    let probe = secrecy::SecretString::from("keyturn doctor".to_string());
    let context = format!("doctor-{}", uuid::Uuid::new_v4());
    let fix = format!(
        "let keyturn's identity use {} for kms:Encrypt and kms:Decrypt with the encryption context {} (the stack's key policy does)",
        cfg.aws.kms_key_id,
        crate::seal::CONTEXT_KEY
    );
    let sealed = match sealer.seal(&context, &probe).await {
        Ok(c) => c,
        Err(e) => return Check::fail("KMS key", format!("Encrypt with {} failed: {}", cfg.aws.kms_key_id, said(&e)), fix),
    };
    match sealer.open(&context, &sealed).await {
        Ok(back) if secrecy::ExposeSecret::expose_secret(&back) == "keyturn doctor" => {
            Check::ok("KMS key", format!("{}: encrypt and decrypt with context {} round trip", cfg.aws.kms_key_id, crate::seal::CONTEXT_KEY))
        }
        Ok(_) => Check::fail("KMS key", "Decrypt answered other bytes than were encrypted", fix),
        Err(e) => Check::fail("KMS key", format!("Decrypt failed: {}", said(&e)), fix),
    }
}

async fn topic(cfg: &Config, clients: &Clients) -> Check {
    match clients.sns.get_topic_attributes().topic_arn(&cfg.aws.topic_arn).send().await {
        Ok(_) => Check::ok("SNS topic", format!("{} reachable", cfg.aws.topic_arn)),
        Err(e) => Check::fail(
            "SNS topic",
            format!("{}: {}", cfg.aws.topic_arn, said(&aws("sns", "GetTopicAttributes", e))),
            "create the topic or correct [aws] topic_arn; keyturn's identity needs sns:Publish (and sns:GetTopicAttributes for this check) on it",
        ),
    }
}

async fn bus(cfg: &Config, clients: &Clients) -> Check {
    let Some(bus) = &cfg.aws.event_bus else {
        return Check::ok("EventBridge bus", "not configured: outcome events go to the account's default bus");
    };
    match clients.events.describe_event_bus().name(bus).send().await {
        Ok(_) => Check::ok("EventBridge bus", format!("{bus} reachable")),
        Err(e) => Check::fail(
            "EventBridge bus",
            format!("{bus}: {}", said(&aws("events", "DescribeEventBus", e))),
            "create the bus or correct [aws] event_bus; keyturn's identity needs events:PutEvents on it",
        ),
    }
}

/// Ask IAM's policy simulator whether the worker's identity may do each
/// action. Answers "not checked" where the simulator cannot be asked.
async fn simulate(clients: &Clients, principal: Option<&str>, actions: &[AwsAction]) -> Check {
    const NAME: &str = "worker permissions";
    if actions.is_empty() {
        return Check::ok(NAME, "the rotation needs no AWS action of keyturn's own identity beyond the environment's");
    }
    let listed = actions.iter().map(|a| a.action).collect::<Vec<_>>().join(", ");
    let Some(principal) = principal else {
        return Check::not_checked(NAME, format!("keyturn's identity is not an IAM user or role the policy simulator can ask about; needs: {listed}"));
    };
    let mut by_resource: BTreeMap<&str, Vec<&'static str>> = BTreeMap::new();
    for a in actions {
        by_resource.entry(a.resource.as_str()).or_default().push(a.action);
    }
    let mut denied = Vec::new();
    for (resource, names) in by_resource {
        let mut req =
            clients.iam.simulate_principal_policy().policy_source_arn(principal).set_action_names(Some(names.iter().map(|s| s.to_string()).collect()));
        if resource != "*" {
            req = req.resource_arns(resource);
        }
        match req.send().await {
            Ok(out) => {
                for r in out.evaluation_results() {
                    if r.eval_decision().as_str() != "allowed" {
                        denied.push(format!("{} on {resource} ({})", r.eval_action_name(), r.eval_decision().as_str()));
                    }
                }
            }
            Err(e) => {
                let e = aws("iam", "SimulatePrincipalPolicy", e);
                return Check::not_checked(
                    NAME,
                    format!(
                        "IAM policy simulation is not available here ({}); the rotation needs: {listed}",
                        said(&e).chars().take(200).collect::<String>()
                    ),
                );
            }
        }
    }
    if denied.is_empty() {
        Check::ok(NAME, format!("{principal} may: {listed}"))
    } else {
        Check::fail(
            NAME,
            format!("{principal} may not: {}", denied.join("; ")),
            "grant these actions to keyturn's role (infra/keyturn-stack.yaml's WorkerPolicy grants what every target needs)",
        )
    }
}

/// Whether `arn` is an IAM user ARN (`arn:<partition>:iam::<account>:user/<path/name>`).
pub fn is_user_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", p, "iam", "", a, r] if p.starts_with("aws") && a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && r.strip_prefix("user/").is_some_and(|n| !n.is_empty() && !n.ends_with('/')))
}

/// The report as a table for a person.
pub fn render(report: &Report) -> String {
    let mut out = String::from("environment\n");
    let line = |out: &mut String, c: &Check| {
        out.push_str(&format!("  {:<11}  {:<28}  {}\n", c.status.label(), c.check, c.detail));
        if let Some(f) = &c.fix {
            out.push_str(&format!("  {:<11}  {:<28}  fix: {f}\n", "", ""));
        }
    };
    for c in &report.environment {
        line(&mut out, c);
    }
    for r in &report.rotations {
        out.push_str(&format!("\nrotation {} ({}): {}\n", r.rotation_id, r.describe, if r.ready { "could run now" } else { "could NOT run now" }));
        for c in &r.checks {
            line(&mut out, c);
        }
    }
    let ready = report.rotations.iter().filter(|r| r.ready).count();
    out.push_str(&format!(
        "\n{ready} of {} rotation(s) could run now{}\n",
        report.rotations.len(),
        if failed(&report.environment) { "; the environment has failures (above)" } else { "" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_arns_are_told_from_others() {
        assert!(is_user_arn("arn:aws:iam::123456789012:user/keyturn/u"));
        for bad in ["arn:aws:iam::123456789012:role/r", "arn:aws:iam::12345:user/u", "arn:aws:iam::123456789012:user/", "user/u"] {
            assert!(!is_user_arn(bad), "{bad}");
        }
    }

    #[test]
    fn a_failure_anywhere_makes_the_report_not_ready_and_names_its_fix() {
        let rot = |checks: Vec<Check>| RotationReport { rotation_id: "r".into(), describe: "a → b".into(), ready: !failed(&checks), checks };
        let ok = Report { ready: true, environment: vec![Check::ok("x", "fine")], rotations: vec![rot(vec![Check::not_checked("y", "cannot ask")])] };
        assert!(ok.rotations[0].ready, "not checked does not stop a rotation");
        let bad = rot(vec![Check::fail("iam user", "no user u", "aws iam create-user --user-name u")]);
        assert!(!bad.ready);
        let text = render(&Report { ready: false, environment: vec![], rotations: vec![bad] });
        assert!(text.contains("FAIL") && text.contains("fix: aws iam create-user --user-name u") && text.contains("0 of 1"), "{text}");
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["rotations"][0]["checks"][0]["status"], "not_checked");
        assert!(json["environment"][0].get("fix").is_none());
    }
}
