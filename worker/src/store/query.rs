//! Reading many sagas: the sweeper's index, listings newest first, and the
//! rare whole-table scans.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{aws, decode, n, s, Result, Status, Store, Stored, ACTIVE_INDEX, CREATED_INDEX, ROTATION_INDEX, TTL_ATTRIBUTE};
use crate::saga::Millis;

impl Store {
    /// When the rotation last succeeded (the end of its newest succeeded
    /// saga): reads the rotation's sagas newest first until one succeeded.
    pub async fn last_success(&self, rotation_id: &str) -> Result<Option<Millis>> {
        let found = self.query_newest(ROTATION_INDEX, "rotation_id", rotation_id, 1, Some(Status::Succeeded)).await?;
        Ok(found.first().map(|s| s.saga.updated_at))
    }

    /// The newest `limit` sagas, newest first (index `sagas-by-created`:
    /// reads about `limit` items, however many the table holds).
    pub async fn recent(&self, limit: usize) -> Result<Vec<Stored>> {
        self.query_newest(CREATED_INDEX, "kind", "saga", limit, None).await
    }

    /// A rotation's newest `limit` sagas, newest first (index `rotation-by-created`).
    pub async fn recent_of(&self, rotation_id: &str, limit: usize) -> Result<Vec<Stored>> {
        self.query_newest(ROTATION_INDEX, "rotation_id", rotation_id, limit, None).await
    }

    /// Every saga created at or after `since`, oldest first, handed to `each`
    /// one page (at most 100 items) at a time, so a long history is never
    /// held whole (index `sagas-by-created`; expired sagas skipped). For
    /// `keyturn report`.
    pub async fn created_since(&self, since: Millis, mut each: impl FnMut(Stored)) -> Result<()> {
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let now_s = self.clock.now_ms() / 1000;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(CREATED_INDEX)
                .key_condition_expression("#k = :saga AND created_at >= :since")
                .filter_expression("attribute_not_exists(#ttl) OR #ttl > :now")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":saga", s("saga"))
                .expression_attribute_values(":since", n(since))
                .expression_attribute_values(":now", n(now_s))
                .limit(100)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.index_error(CREATED_INDEX, aws("dynamodb", "Query", e)))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                each(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// Every saga that runs or needs attention unresolved (the sparse index
    /// `active-by-due`, oldest `due_at` first): the sweeper's whole read.
    pub async fn active(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(ACTIVE_INDEX)
                .key_condition_expression("active = :one")
                .expression_attribute_values(":one", s("1"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.index_error(ACTIVE_INDEX, aws("dynamodb", "Query", e)))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                out.push(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Newest first on a by-creation index, stopping once `limit` sagas
    /// (with `status`, if given) are found; expired sagas (past their TTL,
    /// not deleted yet) are skipped.
    async fn query_newest(&self, index: &str, key: &str, value: &str, limit: usize, status: Option<Status>) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let now_s = self.clock.now_ms() / 1000;
        while out.len() < limit {
            let want = (limit - out.len()).clamp(1, 1000) as i32;
            let mut filter = "(attribute_not_exists(#ttl) OR #ttl > :now)".to_string();
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", key)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":v", s(value))
                .expression_attribute_values(":now", n(now_s))
                .scan_index_forward(false)
                .limit(if status.is_some() { want.max(10) } else { want })
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                filter.push_str(" AND #st = :st");
                q = q.expression_attribute_names("#st", "status").expression_attribute_values(":st", s(st.as_str()));
            }
            let page = q.filter_expression(filter).send().await.map_err(|e| self.index_error(index, aws("dynamodb", "Query", e)))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                if out.len() < limit {
                    out.push(decode(item)?);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// All sagas, newest first: a Scan of the whole table. Only for rare
    /// paths (a `Start` that finds two keys looks for the saga that made
    /// one) and tests; periodic and interactive paths use the indexes.
    pub async fn list(&self) -> Result<Vec<Stored>> {
        self.scan().await
    }

    async fn scan(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let req = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":saga", s("saga"))
                .filter_expression("#k = :saga");
            let page = req.send().await.map_err(|e| aws("dynamodb", "Scan", e))?;
            self.count_read(page.scanned_count);
            for item in page.items() {
                out.push(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.saga.created_at));
        Ok(out)
    }

    /// Raw items, for tests and the leak scan.
    pub async fn raw_items(&self) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page =
                self.client.scan().table_name(&self.table).set_exclusive_start_key(start.take()).send().await.map_err(|e| aws("dynamodb", "Scan", e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
}
