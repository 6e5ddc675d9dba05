//! The report as one JSON document (`"schema": "keyturn.report.v1"`; its
//! shape is documented in docs/operators.md). Fields may be added in later
//! versions of v1, none renamed or removed.

use super::model::Report;

pub fn render(r: &Report) -> serde_json::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(r)?;
    v.push(b'\n');
    Ok(v)
}
