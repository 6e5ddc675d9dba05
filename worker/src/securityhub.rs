//! Closing the finding loop: updating the findings a saga started from, in
//! the Security Hub and the region each came from.
//!
//! When a saga starts from a finding the finding is marked as being worked
//! on, with a note naming the saga; on success it is resolved with a note
//! saying which key replaced which; on failure it gets a note with the
//! failure summary (status left as is, so it stays visible). Security Hub
//! puts the status back by itself if the control fails again.
//!
//! Two APIs, chosen by the finding's [`FindingKind`]:
//! * **V1**, Security Hub CSPM's ASFF findings: `BatchUpdateFindings` with
//!   `FindingIdentifiers[{Id, ProductArn}]`, `Workflow.Status`
//!   (`NOTIFIED`, `RESOLVED`) and `Note{Text, UpdatedBy}`;
//! * **V2**, the new Security Hub's OCSF findings: `BatchUpdateFindingsV2`
//!   with `FindingIdentifiers[{CloudAccountUid, FindingInfoUid,
//!   MetadataProductUid}]`, `StatusId` (2 In Progress, 4 Resolved) and
//!   `Comment` — member names from the botocore model
//!   `securityhub/2018-10-26/service-2.json` (operation
//!   `BatchUpdateFindingsV2`, shape `OcsfFindingIdentifier`), status ids from
//!   the OCSF finding `status_id` enumeration that the same model's
//!   `StatusId` documents (0–5, 99). Both are authorised by the IAM action
//!   `securityhub:BatchUpdateFindings` (Service Authorization Reference:
//!   resource types `hub` and `hubv2`).
//!
//! Each update goes to the finding's own region: an organisation's findings
//! reach one bus (the delegated administrator's, in the aggregation region)
//! but are stored, and updated, per region. One client per region is made
//! from the worker's own Security Hub client (same credentials, endpoint,
//! timeouts and retries; only the region differs) and kept for reuse.
//! Sagas stored before findings carried a region update in the worker's own
//! region, as they always did. Whether the new Security Hub accepts updates
//! in a linked region or only in its home region is not documented; keyturn
//! sends them to `cloud.region` and logs what Security Hub answers.
//!
//! Updates are best effort: a Security Hub outage must not fail a rotation.
//! Findings Security Hub reports as unprocessed are retried once, then
//! logged with their error code and message; one region failing does not
//! stop the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::Region;
use aws_sdk_securityhub::types::{AwsSecurityFindingIdentifier, NoteUpdate, OcsfFindingIdentifier, WorkflowStatus, WorkflowUpdate};
use tracing::warn;

use crate::error::{aws, Error, Result};
use crate::intake::ocsf_status;

pub use crate::saga::{FindingKind, FindingRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    /// V1 `NOTIFIED`; V2 status In Progress.
    Notified,
    /// V1 `RESOLVED`; V2 status Resolved.
    Resolved,
    /// Leave the status alone; only add the note.
    Unchanged,
}

impl Workflow {
    /// The OCSF `StatusId` for `BatchUpdateFindingsV2`, if the status changes.
    pub fn v2_status_id(self) -> Option<i32> {
        match self {
            Workflow::Notified => Some(ocsf_status::IN_PROGRESS as i32),
            Workflow::Resolved => Some(ocsf_status::RESOLVED as i32),
            Workflow::Unchanged => None,
        }
    }
}

/// Security Hub caps a note (V1) or comment (V2) at 512 characters and a
/// call at 100 findings.
const NOTE_MAX: usize = 512;
const BATCH_MAX: usize = 100;

/// A finding Security Hub did not process: the finding, error code, message.
type Unprocessed = (FindingRef, String, String);

/// Findings updated together: same API, same region.
type Group = ((FindingKind, Option<String>), Vec<FindingRef>);

#[derive(Clone, Debug)]
pub struct SecurityHub {
    /// The worker's own client (its region is the default for old sagas).
    client: aws_sdk_securityhub::Client,
    by_region: Arc<Mutex<HashMap<String, aws_sdk_securityhub::Client>>>,
}

impl SecurityHub {
    pub fn new(client: aws_sdk_securityhub::Client) -> SecurityHub {
        SecurityHub { client, by_region: Arc::default() }
    }

    /// The client for `region` (`None`: the worker's own), made once from
    /// the worker's client with only the region changed.
    pub fn client_for(&self, region: Option<&str>) -> aws_sdk_securityhub::Client {
        let own = self.client.config().region().map(|r| r.as_ref().to_string());
        let Some(region) = region.filter(|r| !r.is_empty() && Some(*r) != own.as_deref()) else { return self.client.clone() };
        let mut cache = self.by_region.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(region.to_string())
            .or_insert_with(|| aws_sdk_securityhub::Client::from_conf(self.client.config().to_builder().region(Region::new(region.to_string())).build()))
            .clone()
    }

    /// Update findings, each with its own API in its own region; answers how
    /// many Security Hub processed. An error of one group (API and region)
    /// is logged and the others still run; the first error is returned once
    /// all were tried.
    pub async fn update(&self, findings: &[FindingRef], workflow: Workflow, note: &str) -> Result<usize> {
        let mut groups: Vec<Group> = Vec::new();
        for f in findings {
            let key = (f.kind, f.region.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(f.clone()),
                None => groups.push((key, vec![f.clone()])),
            }
        }
        let mut processed = 0;
        let mut first_error = None;
        for ((kind, region), group) in groups {
            let client = self.client_for(region.as_deref());
            for chunk in group.chunks(BATCH_MAX) {
                match self.update_chunk(&client, kind, chunk, workflow, note).await {
                    Ok(n) => processed += n,
                    Err(e) => {
                        warn!(error = %e, api = ?kind, region = region.as_deref().unwrap_or("(own)"), findings = chunk.len(), ?workflow, "could not update findings in this region");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(processed),
        }
    }

    /// One call, and one retry of what Security Hub left unprocessed.
    async fn update_chunk(
        &self,
        client: &aws_sdk_securityhub::Client,
        kind: FindingKind,
        chunk: &[FindingRef],
        workflow: Workflow,
        note: &str,
    ) -> Result<usize> {
        let text: String = note.chars().take(NOTE_MAX).collect();
        let mut pending: Vec<FindingRef> = chunk.to_vec();
        let mut processed = 0;
        for round in 0..2 {
            let unprocessed = match kind {
                FindingKind::V1 => call_v1(client, &pending, workflow, &text).await?,
                FindingKind::V2 => call_v2(client, &pending, workflow, &text).await?,
            };
            processed += pending.len() - unprocessed.len();
            if unprocessed.is_empty() {
                break;
            }
            for (f, code, message) in &unprocessed {
                warn!(finding = %f.id, api = ?kind, error_code = %code, error = %message, retry = round == 0, "Security Hub did not process a finding update");
            }
            pending = unprocessed.into_iter().map(|(f, _, _)| f).collect();
        }
        Ok(processed)
    }
}

/// The sent finding an unprocessed identifier refers to (so its region and
/// account carry over to the retry); an identifier Security Hub made up is
/// kept as it answered it.
fn original(sent: &[FindingRef], id: &str, product: &str, account: Option<&str>) -> Option<FindingRef> {
    sent.iter().find(|f| f.id == id && f.product_arn == product && account.is_none_or(|a| f.account_id.as_deref() == Some(a))).cloned()
}

async fn call_v1(client: &aws_sdk_securityhub::Client, findings: &[FindingRef], workflow: Workflow, text: &str) -> Result<Vec<Unprocessed>> {
    let ids = findings.iter().map(|f| AwsSecurityFindingIdentifier::builder().id(&f.id).product_arn(&f.product_arn).build()).collect();
    let mut req = client.batch_update_findings().set_finding_identifiers(Some(ids)).note(NoteUpdate::builder().text(text).updated_by("keyturn").build());
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
            let f = original(findings, id.id()?, id.product_arn()?, None)?;
            Some((f, u.error_code().unwrap_or("Unknown").to_string(), u.error_message().unwrap_or("").to_string()))
        })
        .collect())
}

async fn call_v2(client: &aws_sdk_securityhub::Client, findings: &[FindingRef], workflow: Workflow, text: &str) -> Result<Vec<Unprocessed>> {
    let mut ids = Vec::with_capacity(findings.len());
    for f in findings {
        // The account is part of a V2 identifier; a V2 reference without one
        // cannot be addressed (it would be a bug in the intake).
        let account =
            f.account_id.as_deref().filter(|a| !a.is_empty()).ok_or_else(|| {
                Error::Config(format!("finding {} is an OCSF finding without its account (cloud.account.uid); it cannot be updated", f.id))
            })?;
        ids.push(OcsfFindingIdentifier::builder().cloud_account_uid(account).finding_info_uid(&f.id).metadata_product_uid(&f.product_arn).build());
    }
    let mut req = client.batch_update_findings_v2().set_finding_identifiers(Some(ids)).comment(text);
    if let Some(status) = workflow.v2_status_id() {
        req = req.status_id(status);
    }
    let out = req.send().await.map_err(|e| aws("securityhub", "BatchUpdateFindingsV2", e))?;
    Ok(out
        .unprocessed_findings()
        .iter()
        .filter_map(|u| {
            let id = u.finding_identifier()?;
            let f = original(findings, id.finding_info_uid()?, id.metadata_product_uid()?, id.cloud_account_uid())?;
            let code = u.error_code().map(|c| c.as_str().to_string()).unwrap_or_else(|| "Unknown".into());
            Some((f, code, u.error_message().unwrap_or("").to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(region: &str) -> SecurityHub {
        let conf = aws_sdk_securityhub::Config::builder()
            .behavior_version(aws_sdk_securityhub::config::BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        SecurityHub::new(aws_sdk_securityhub::Client::from_conf(conf))
    }

    #[test]
    fn each_region_gets_its_own_client_made_once_from_the_workers() {
        let h = hub("us-east-1");
        let region = |c: &aws_sdk_securityhub::Client| c.config().region().map(|r| r.as_ref().to_string());
        assert_eq!(region(&h.client_for(None)).as_deref(), Some("us-east-1"), "old sagas: the worker's own region");
        assert_eq!(region(&h.client_for(Some("us-east-1"))).as_deref(), Some("us-east-1"));
        assert_eq!(region(&h.client_for(Some("eu-west-1"))).as_deref(), Some("eu-west-1"));
        assert_eq!(region(&h.client_for(Some("ap-south-1"))).as_deref(), Some("ap-south-1"));
        h.client_for(Some("eu-west-1"));
        assert_eq!(h.by_region.lock().unwrap().len(), 2, "one per other region, reused");
        // That the rest (endpoint, credentials) carries over is shown end to
        // end: the integration tests' Security Hub fake receives every
        // region's calls at its one address, signed for each region.
    }

    #[test]
    fn v2_status_ids_are_in_progress_and_resolved() {
        assert_eq!(Workflow::Notified.v2_status_id(), Some(2));
        assert_eq!(Workflow::Resolved.v2_status_id(), Some(4));
        assert_eq!(Workflow::Unchanged.v2_status_id(), None);
    }
}
