//! The table's shape: its indexes, TTL attribute and retention, and
//! creating it as `infra/keyturn-stack.yaml` declares it.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::Store;
use crate::error::{aws, Error, Result};

/// The sparse index of running (and unresolved) sagas, by `due_at`.
pub const ACTIVE_INDEX: &str = "active-by-due";
/// Every saga by creation time.
pub const CREATED_INDEX: &str = "sagas-by-created";
/// A rotation's sagas by creation time.
pub const ROTATION_INDEX: &str = "rotation-by-created";
/// A global secondary index keyturn reads: its name, key attributes with
/// their types (`S`, `N`) and who reads it. [`create_table`] creates these and
/// `keyturn doctor` checks them; `infra/keyturn-stack.yaml` declares the same.
#[derive(Debug, Clone, Copy)]
pub struct Index {
    pub name: &'static str,
    pub hash: (&'static str, &'static str),
    pub range: (&'static str, &'static str),
    pub used_by: &'static str,
}

impl Index {
    /// The AWS CLI command that adds this index to `table`.
    pub fn update_table(&self, table: &str) -> String {
        format!(
            "aws dynamodb update-table --table-name {table} --attribute-definitions AttributeName={h},AttributeType={ht} AttributeName={r},AttributeType={rt} \
             --global-secondary-index-updates '[{{\"Create\":{{\"IndexName\":\"{n}\",\"KeySchema\":[{{\"AttributeName\":\"{h}\",\"KeyType\":\"HASH\"}},{{\"AttributeName\":\"{r}\",\"KeyType\":\"RANGE\"}}],\"Projection\":{{\"ProjectionType\":\"ALL\"}}}}}}]'",
            n = self.name,
            h = self.hash.0,
            ht = self.hash.1,
            r = self.range.0,
            rt = self.range.1,
        )
    }
}

/// Every index keyturn reads.
pub const INDEXES: &[Index] = &[
    Index { name: ACTIVE_INDEX, hash: ("active", "S"), range: ("due_at", "N"), used_by: "the sweeper" },
    Index { name: CREATED_INDEX, hash: ("kind", "S"), range: ("created_at", "N"), used_by: "keyturn list" },
    Index {
        name: ROTATION_INDEX,
        hash: ("rotation_id", "S"),
        range: ("created_at", "N"),
        used_by: "keyturn status <rotation>, quarantine and the key-age trigger",
    },
];

/// The TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long a finished saga is kept by default: 400 days, more than a year
/// of audit trail.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

impl Store {
    /// A query of an index the table lacks (a table made by hand with only
    /// `pk`) says which index and how to add it, instead of DynamoDB's bare
    /// `Invalid index`.
    pub(super) fn index_error(&self, index: &str, e: Error) -> Error {
        match e {
            Error::Aws { service, operation, code, message, request_id, retryable }
                if code == "ResourceNotFoundException" && message.to_ascii_lowercase().contains("index") =>
            {
                let message = format!(
                    "the table {t} has no index {index}: run `keyturn init --check --table {t}` to see what it lacks and `keyturn init --table {t}` to add it ({message})",
                    t = self.table
                );
                Error::Aws { service, operation, code, message, request_id, retryable }
            }
            other => other,
        }
    }
}

/// Create the saga table as `infra/keyturn-stack.yaml` declares it: key,
/// the three indexes, TTL on `expires_at` (tests, the benchmark, a table
/// made by hand).
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let def = |name: &str, t: ScalarAttributeType| AttributeDefinition::builder().attribute_name(name).attribute_type(t).build();
    let key = |name: &str, t: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(t).build();
    let gsi = |i: &Index| -> std::result::Result<GlobalSecondaryIndex, aws_sdk_dynamodb::error::BuildError> {
        GlobalSecondaryIndex::builder()
            .index_name(i.name)
            .key_schema(key(i.hash.0, KeyType::Hash)?)
            .key_schema(key(i.range.0, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
    };
    let build = |e: aws_sdk_dynamodb::error::BuildError| Error::Config(e.to_string());
    let mut attrs: Vec<(&str, &str)> = vec![("pk", "S")];
    for i in INDEXES {
        for a in [i.hash, i.range] {
            if !attrs.iter().any(|(n, _)| *n == a.0) {
                attrs.push(a);
            }
        }
    }
    let mut req = client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest).key_schema(key("pk", KeyType::Hash).map_err(build)?);
    for (name, t) in attrs {
        req = req.attribute_definitions(def(name, ScalarAttributeType::from(t)).map_err(build)?);
    }
    for i in INDEXES {
        req = req.global_secondary_indexes(gsi(i).map_err(build)?);
    }
    req.send().await.map_err(|e| aws("dynamodb", "CreateTable", e))?;
    // DynamoDB refuses UpdateTimeToLive while the table is CREATING (a few
    // seconds on AWS; at once on an emulator).
    for _ in 0..300 {
        let d = client.describe_table().table_name(table).send().await.map_err(|e| aws("dynamodb", "DescribeTable", e))?;
        if d.table().and_then(|t| t.table_status()) == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(TimeToLiveSpecification::builder().attribute_name(TTL_ATTRIBUTE).enabled(true).build().map_err(build)?)
        .send()
        .await
        .map_err(|e| aws("dynamodb", "UpdateTimeToLive", e))?;
    Ok(())
}
