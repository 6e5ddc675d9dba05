//! `keyturn init`: the AWS resources keyturn needs, for a setup without the
//! stack (`infra/keyturn-stack.yaml`) and for local work.
//!
//! Idempotent: every resource is looked up first and created only when
//! missing; an existing one is brought to what keyturn needs (queue
//! attributes, the table's indexes and TTL) and reported. With `check` it
//! changes nothing and lists what is missing or different. The names follow
//! the stack's: `<prefix>-sagas`, `<prefix>-steps` (+ `-dlq`),
//! `<prefix>-steps-priority` (+ `-dlq`), `<prefix>-intake` (+ `-dlq`),
//! `<prefix>-notifications`, `alias/<prefix>`.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::error::{aws, Error, Result};
use crate::store::{ACTIVE_INDEX, CREATED_INDEX, ROTATION_INDEX, TTL_ATTRIBUTE};

/// The saga table's global secondary indexes: (name, hash key, its type, range key, its type).
pub const INDEXES: [(&str, &str, ScalarAttributeType, &str, ScalarAttributeType); 3] = [
    (ACTIVE_INDEX, "active", ScalarAttributeType::S, "due_at", ScalarAttributeType::N),
    (CREATED_INDEX, "kind", ScalarAttributeType::S, "created_at", ScalarAttributeType::N),
    (ROTATION_INDEX, "rotation_id", ScalarAttributeType::S, "created_at", ScalarAttributeType::N),
];

/// Message retention of every queue: 14 days (grace periods wait in the step queue).
pub const RETENTION_SECONDS: u32 = 1_209_600;

/// What to create or check.
#[derive(Debug, Clone)]
pub struct Plan {
    pub prefix: String,
    /// Table name (default `<prefix>-sagas`).
    pub table: String,
    /// Visibility timeout of the step, priority and intake queues (`[worker] visibility_timeout`).
    pub visibility_timeout: Duration,
    /// Receives before SQS moves a message to the queue's DLQ.
    pub max_receive_count: u32,
}

impl Plan {
    pub fn new(prefix: &str, table: Option<String>, visibility_timeout: Duration, max_receive_count: u32) -> Plan {
        Plan { prefix: prefix.into(), table: table.unwrap_or_else(|| format!("{prefix}-sagas")), visibility_timeout, max_receive_count }
    }
}

/// One resource's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was there as keyturn needs it.
    Found,
    /// It did not exist and was created.
    Created,
    /// It existed and was changed: what was changed.
    Updated(Vec<String>),
    /// `--check`, or something init cannot change: what is missing or wrong.
    Missing(Vec<String>),
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Item {
    pub what: String,
    pub name: String,
    pub outcome: Outcome,
}

/// The whole report and the `[aws]` values.
#[derive(Debug, Default)]
pub struct Report {
    pub items: Vec<Item>,
    /// `[aws]` key → value, in the order to print.
    pub aws: Vec<(&'static str, String)>,
}

impl Report {
    /// Whether anything was created or changed.
    pub fn changed(&self) -> bool {
        self.items.iter().any(|i| matches!(i.outcome, Outcome::Created | Outcome::Updated(_)))
    }
    /// Whether anything is missing or wrong.
    pub fn missing(&self) -> bool {
        self.items.iter().any(|i| matches!(i.outcome, Outcome::Missing(_)))
    }

    /// The `[aws]` section to paste into keyturn.toml.
    pub fn aws_section(&self, region: Option<&str>) -> String {
        let mut out = String::from("[aws]\n");
        if let Some(r) = region {
            out.push_str(&format!("region = {r:?}\n"));
        }
        for (k, v) in &self.aws {
            out.push_str(&format!("{k} = {v:?}\n"));
        }
        out
    }
}

/// The AWS clients init uses.
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub kms: aws_sdk_kms::Client,
}

/// Create what is missing (or, with `check`, only look) and report.
pub async fn run(c: &Clients, plan: &Plan, check: bool) -> Result<Report> {
    let mut r = Report::default();
    let pairs = [("step", "steps", "queue_url", "dlq_url"), ("priority step", "steps-priority", "priority_queue_url", "priority_dlq_url")];
    let mut urls = Vec::new();
    for (what, suffix, key, dlq_key) in pairs.into_iter().chain([("intake", "intake", "intake_queue_url", "intake_dlq_url")]) {
        let (q, dlq) = queue_pair(c, plan, what, &format!("{}-{suffix}", plan.prefix), check, &mut r).await?;
        urls.push((key, q, dlq_key, dlq));
    }
    let topic = topic(c, &format!("{}-notifications", plan.prefix), check, &mut r).await?;
    let key = kms_alias(c, &format!("alias/{}", plan.prefix), check, &mut r).await?;
    table(c, &plan.table, check, &mut r).await?;
    for (key, q, dlq_key, dlq) in urls.iter().filter(|u| u.0 == "queue_url") {
        r.aws.push((key, q.clone()));
        r.aws.push((dlq_key, dlq.clone()));
    }
    r.aws.push(("table", plan.table.clone()));
    r.aws.push(("topic_arn", topic));
    r.aws.push(("kms_key_id", key));
    for (key, q, dlq_key, dlq) in urls.iter().filter(|u| u.0 != "queue_url") {
        r.aws.push((key, q.clone()));
        r.aws.push((dlq_key, dlq.clone()));
    }
    Ok(r)
}

async fn queue_url(c: &Clients, name: &str) -> Result<Option<String>> {
    match c.sqs.get_queue_url().queue_name(name).send().await {
        Ok(o) => Ok(o.queue_url),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_queue_does_not_exist()) => Ok(None),
        Err(e) => Err(aws("sqs", "GetQueueUrl", e)),
    }
}

async fn queue_arn(c: &Clients, url: &str) -> Result<String> {
    let a = c
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws("sqs", "GetQueueAttributes", e))?;
    a.attributes().and_then(|m| m.get(&QueueAttributeName::QueueArn)).cloned().ok_or_else(|| Error::Corrupt(format!("queue {url} has no QueueArn")))
}

/// A name's URL, or (`check`) the URL it will have once created.
fn placeholder(name: &str) -> String {
    format!("(not created yet: {name})")
}

/// One queue with the attributes keyturn needs: created with them, or its
/// differing attributes set (or, `check`, listed).
async fn ensure_queue(c: &Clients, what: &str, name: &str, want: HashMap<QueueAttributeName, String>, check: bool, r: &mut Report) -> Result<String> {
    let Some(url) = queue_url(c, name).await? else {
        if check {
            r.items.push(Item { what: what.into(), name: name.into(), outcome: Outcome::Missing(vec!["does not exist".into()]) });
            return Ok(placeholder(name));
        }
        let mut req = c.sqs.create_queue().queue_name(name);
        for (k, v) in &want {
            req = req.attributes(k.clone(), v.clone());
        }
        let url = req.send().await.map_err(|e| aws("sqs", "CreateQueue", e))?.queue_url.unwrap_or_default();
        r.items.push(Item { what: what.into(), name: name.into(), outcome: Outcome::Created });
        return Ok(url);
    };
    let have = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| aws("sqs", "GetQueueAttributes", e))?
        .attributes
        .unwrap_or_default();
    let mut differ = Vec::new();
    let mut set = HashMap::new();
    let mut keys: Vec<_> = want.keys().cloned().collect();
    keys.sort_by_key(|k| k.as_str().to_string());
    for k in keys {
        let v = &want[&k];
        let now = have.get(&k);
        let same = match (&k, now) {
            (QueueAttributeName::RedrivePolicy, Some(h)) => same_redrive(h, v),
            (_, Some(h)) => h == v,
            (_, None) => false,
        };
        if !same {
            differ.push(format!("{} is {} (keyturn needs {v})", k.as_str(), now.map(String::as_str).unwrap_or("unset")));
            set.insert(k, v.clone());
        }
    }
    let outcome = if differ.is_empty() {
        Outcome::Found
    } else if check {
        Outcome::Missing(differ)
    } else {
        c.sqs.set_queue_attributes().queue_url(&url).set_attributes(Some(set)).send().await.map_err(|e| aws("sqs", "SetQueueAttributes", e))?;
        Outcome::Updated(differ)
    };
    r.items.push(Item { what: what.into(), name: name.into(), outcome });
    Ok(url)
}

/// Redrive policies compare as JSON (`maxReceiveCount` may be a string or a number).
fn same_redrive(have: &str, want: &str) -> bool {
    let norm = |s: &str| -> Option<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
        let n = v.get("maxReceiveCount")?;
        Some((arn, n.as_str().map(str::to_string).unwrap_or_else(|| n.to_string())))
    };
    norm(have).is_some() && norm(have) == norm(want)
}

async fn queue_pair(c: &Clients, plan: &Plan, what: &str, name: &str, check: bool, r: &mut Report) -> Result<(String, String)> {
    let retention = |m: &mut HashMap<QueueAttributeName, String>| {
        m.insert(QueueAttributeName::MessageRetentionPeriod, RETENTION_SECONDS.to_string());
    };
    let mut dlq_attrs = HashMap::new();
    retention(&mut dlq_attrs);
    let dlq_name = format!("{name}-dlq");
    let dlq = ensure_queue(c, &format!("{what} dead-letter queue"), &dlq_name, dlq_attrs, check, r).await?;
    let dlq_arn = if dlq.starts_with("(not created") { format!("arn of {dlq_name}") } else { queue_arn(c, &dlq).await? };
    let mut attrs = HashMap::new();
    retention(&mut attrs);
    attrs.insert(QueueAttributeName::VisibilityTimeout, plan.visibility_timeout.as_secs().to_string());
    attrs.insert(QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20".into());
    attrs.insert(
        QueueAttributeName::RedrivePolicy,
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": plan.max_receive_count.to_string()}).to_string(),
    );
    let q = ensure_queue(c, &format!("{what} queue"), name, attrs, check, r).await?;
    Ok((q, dlq))
}

async fn topic(c: &Clients, name: &str, check: bool, r: &mut Report) -> Result<String> {
    let mut next = None;
    loop {
        let page = c.sns.list_topics().set_next_token(next).send().await.map_err(|e| aws("sns", "ListTopics", e))?;
        if let Some(arn) = page.topics().iter().filter_map(|t| t.topic_arn()).find(|a| a.rsplit(':').next() == Some(name)) {
            r.items.push(Item { what: "notification topic".into(), name: name.into(), outcome: Outcome::Found });
            return Ok(arn.to_string());
        }
        next = page.next_token;
        if next.is_none() {
            break;
        }
    }
    if check {
        r.items.push(Item { what: "notification topic".into(), name: name.into(), outcome: Outcome::Missing(vec!["does not exist".into()]) });
        return Ok(placeholder(name));
    }
    let arn = c.sns.create_topic().name(name).send().await.map_err(|e| aws("sns", "CreateTopic", e))?.topic_arn.unwrap_or_default();
    r.items.push(Item { what: "notification topic".into(), name: name.into(), outcome: Outcome::Created });
    Ok(arn)
}

async fn kms_alias(c: &Clients, alias: &str, check: bool, r: &mut Report) -> Result<String> {
    let what = "KMS key (encrypts stored secrets)";
    match c.kms.describe_key().key_id(alias).send().await {
        Ok(_) => {
            r.items.push(Item { what: what.into(), name: alias.into(), outcome: Outcome::Found });
            return Ok(alias.into());
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {}
        Err(e) => return Err(aws("kms", "DescribeKey", e)),
    }
    if check {
        r.items.push(Item { what: what.into(), name: alias.into(), outcome: Outcome::Missing(vec!["does not exist".into()]) });
        return Ok(alias.into());
    }
    let key = c
        .kms
        .create_key()
        .description("keyturn: encrypts new credentials while a saga holds them")
        .send()
        .await
        .map_err(|e| aws("kms", "CreateKey", e))?;
    let key_id = key.key_metadata().map(|m| m.key_id().to_string()).unwrap_or_default();
    c.kms.create_alias().alias_name(alias).target_key_id(&key_id).send().await.map_err(|e| aws("kms", "CreateAlias", e))?;
    r.items.push(Item { what: what.into(), name: alias.into(), outcome: Outcome::Created });
    Ok(alias.into())
}

fn build(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::Config(e.to_string())
}

async fn table(c: &Clients, name: &str, check: bool, r: &mut Report) -> Result<()> {
    let what = "saga table";
    let desc = match c.dynamodb.describe_table().table_name(name).send().await {
        Ok(d) => d.table,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => None,
        Err(e) => return Err(aws("dynamodb", "DescribeTable", e)),
    };
    let Some(desc) = desc else {
        if check {
            r.items.push(Item { what: what.into(), name: name.into(), outcome: Outcome::Missing(vec!["does not exist".into()]) });
            return Ok(());
        }
        crate::store::create_table(&c.dynamodb, name).await?;
        r.items.push(Item { what: what.into(), name: name.into(), outcome: Outcome::Created });
        return Ok(());
    };
    let mut problems = Vec::new();
    let mut fixed = Vec::new();
    // The key cannot be changed: only reported.
    let key_ok = desc.key_schema().len() == 1 && desc.key_schema()[0].attribute_name() == "pk" && desc.key_schema()[0].key_type() == &KeyType::Hash;
    let pk_type_ok = desc.attribute_definitions().iter().all(|d| d.attribute_name() != "pk" || d.attribute_type() == &ScalarAttributeType::S);
    // UpdateTable is given every attribute definition the table has plus the
    // new index's (some implementations replace the list instead of merging).
    let mut defs: Vec<AttributeDefinition> = desc.attribute_definitions().to_vec();
    if !key_ok || !pk_type_ok {
        problems.push(
            "its key is not the string partition key `pk` alone: a table's key cannot be changed; make a new table (keyturn init --table NEW)".to_string(),
        );
    }
    let have: Vec<String> = desc.global_secondary_indexes().iter().filter_map(|g| g.index_name().map(str::to_string)).collect();
    for (index, hash, ht, range, rt) in INDEXES {
        if have.iter().any(|h| h == index) {
            continue;
        }
        let label = format!("index {index} ({hash}, {range})");
        if check || !problems.is_empty() {
            problems.push(format!("{label} is missing"));
            continue;
        }
        let def = |n: &str, t: ScalarAttributeType| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build();
        let key = |n: &str, t: KeyType| KeySchemaElement::builder().attribute_name(n).key_type(t).build();
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(index)
            .key_schema(key(hash, KeyType::Hash).map_err(build)?)
            .key_schema(key(range, KeyType::Range).map_err(build)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(build)?;
        for d in [def(hash, ht).map_err(build)?, def(range, rt).map_err(build)?] {
            if !defs.iter().any(|h| h.attribute_name() == d.attribute_name()) {
                defs.push(d);
            }
        }
        let res = c
            .dynamodb
            .update_table()
            .table_name(name)
            .set_attribute_definitions(Some(defs.clone()))
            .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
            .send()
            .await;
        match res {
            Ok(_) => fixed.push(format!("{label} added")),
            // DynamoDB builds one index at a time on a table.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception() || s.is_limit_exceeded_exception()) => {
                problems.push(format!("{label} is missing: DynamoDB is still building another index; run keyturn init again when it is ACTIVE"))
            }
            Err(e) => return Err(aws("dynamodb", "UpdateTable", e)),
        }
    }
    ttl(c, name, check, &mut problems, &mut fixed).await?;
    let outcome = if !problems.is_empty() {
        problems.extend(fixed.into_iter().map(|f| format!("(done: {f})")));
        Outcome::Missing(problems)
    } else if !fixed.is_empty() {
        Outcome::Updated(fixed)
    } else {
        Outcome::Found
    };
    r.items.push(Item { what: what.into(), name: name.into(), outcome });
    Ok(())
}

/// The table's TTL on [`TTL_ATTRIBUTE`]: enabled unless `check`; on another
/// attribute it is only reported.
async fn ttl(c: &Clients, name: &str, check: bool, problems: &mut Vec<String>, fixed: &mut Vec<String>) -> Result<()> {
    let ttl = c.dynamodb.describe_time_to_live().table_name(name).send().await.map_err(|e| aws("dynamodb", "DescribeTimeToLive", e))?;
    let ttl = ttl.time_to_live_description();
    let status = ttl.and_then(|t| t.time_to_live_status()).cloned();
    let attr = ttl.and_then(|t| t.attribute_name()).unwrap_or_default();
    let on = matches!(status, Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling));
    if on && attr != TTL_ATTRIBUTE {
        problems.push(format!("TTL is on attribute {attr}, keyturn needs {TTL_ATTRIBUTE}: disable TTL on the table, then run keyturn init again"));
    } else if !on {
        if check {
            problems.push(format!("TTL on {TTL_ATTRIBUTE} is not enabled (finished sagas would never expire)"));
        } else {
            c.dynamodb
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(TimeToLiveSpecification::builder().attribute_name(TTL_ATTRIBUTE).enabled(true).build().map_err(build)?)
                .send()
                .await
                .map_err(|e| aws("dynamodb", "UpdateTimeToLive", e))?;
            fixed.push(format!("TTL on {TTL_ATTRIBUTE} enabled"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_compare_as_json() {
        assert!(same_redrive(r#"{"deadLetterTargetArn":"a","maxReceiveCount":5}"#, r#"{"deadLetterTargetArn":"a","maxReceiveCount":"5"}"#));
        assert!(!same_redrive(r#"{"deadLetterTargetArn":"b","maxReceiveCount":5}"#, r#"{"deadLetterTargetArn":"a","maxReceiveCount":"5"}"#));
        assert!(!same_redrive("not json", "not json"));
    }

    #[test]
    fn the_priority_queue_is_printed_as_a_key() {
        let r = Report { items: vec![], aws: vec![("queue_url", "q".into()), ("priority_queue_url", "p".into())] };
        assert_eq!(r.aws_section(Some("eu-west-1")), "[aws]\nregion = \"eu-west-1\"\nqueue_url = \"q\"\npriority_queue_url = \"p\"\n");
    }
}
