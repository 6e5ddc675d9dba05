//! Closing the finding loop: `BatchUpdateFindings` on the findings a saga
//! started from.
//!
//! When a saga starts from a finding the finding goes to workflow status
//! `NOTIFIED` with a note naming the saga; on success to `RESOLVED` with a
//! note saying which key replaced which; on failure it gets a note with the
//! failure summary (status left as is, so it stays visible). Security Hub
//! puts the status back to `NEW` by itself if the control fails again.
//!
//! Updates are best effort: a Security Hub outage must not fail a rotation.
//! Findings Security Hub reports as unprocessed are retried once, then
//! logged with their error code and message.

use aws_sdk_securityhub::types::{AwsSecurityFindingIdentifier, NoteUpdate, WorkflowStatus, WorkflowUpdate};
use tracing::warn;

use crate::error::{aws, Result};

pub use crate::saga::FindingRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    Notified,
    Resolved,
    /// Leave the status alone; only add the note.
    Unchanged,
}

/// Security Hub caps a note at 512 characters and a call at 100 findings.
const NOTE_MAX: usize = 512;
const BATCH_MAX: usize = 100;

#[derive(Clone, Debug)]
pub struct SecurityHub {
    client: aws_sdk_securityhub::Client,
}

impl SecurityHub {
    pub fn new(client: aws_sdk_securityhub::Client) -> SecurityHub {
        SecurityHub { client }
    }

    /// Update findings; answers how many Security Hub processed.
    pub async fn update(&self, findings: &[FindingRef], workflow: Workflow, note: &str) -> Result<usize> {
        let mut processed = 0;
        for chunk in findings.chunks(BATCH_MAX) {
            let mut pending: Vec<FindingRef> = chunk.to_vec();
            for round in 0..2 {
                let unprocessed = self.call(&pending, workflow, note).await?;
                processed += pending.len() - unprocessed.len();
                if unprocessed.is_empty() {
                    break;
                }
                for (f, code, message) in &unprocessed {
                    warn!(finding = %f.id, error_code = %code, error = %message, retry = round == 0, "Security Hub did not process a finding update");
                }
                pending = unprocessed.into_iter().map(|(f, _, _)| f).collect();
            }
        }
        Ok(processed)
    }

    async fn call(&self, findings: &[FindingRef], workflow: Workflow, note: &str) -> Result<Vec<(FindingRef, String, String)>> {
        let ids = findings.iter().map(|f| AwsSecurityFindingIdentifier::builder().id(&f.id).product_arn(&f.product_arn).build()).collect();
        let text: String = note.chars().take(NOTE_MAX).collect();
        let mut req =
            self.client.batch_update_findings().set_finding_identifiers(Some(ids)).note(NoteUpdate::builder().text(text).updated_by("keyturn").build());
        let status = match workflow {
            Workflow::Notified => Some(WorkflowStatus::Notified),
            Workflow::Resolved => Some(WorkflowStatus::Resolved),
            Workflow::Unchanged => None,
        };
        if let Some(st) = status {
            req = req.workflow(WorkflowUpdate::builder().status(st).build());
        }
        let out = req.send().await.map_err(|e| aws("securityhub", "BatchUpdateFindings", e))?;
        Ok(out
            .unprocessed_findings()
            .iter()
            .filter_map(|u| {
                let id = u.finding_identifier()?;
                Some((
                    FindingRef { id: id.id()?.to_string(), product_arn: id.product_arn()?.to_string() },
                    u.error_code().unwrap_or("Unknown").to_string(),
                    u.error_message().unwrap_or("").to_string(),
                ))
            })
            .collect())
    }
}
