//! The evidence of a saga that needs attention became clear.

use std::collections::BTreeMap;

use crate::saga::Saga;

use super::super::document::{to_document, EvidenceDoc, Head, Named};
use super::super::{correlate, Notification, OwnedContext};

/// The evidence of an unresolved saga became clear: which key the target
/// uses, why keyturn thinks so, and what happens next.
pub fn render_evidence(saga: &Saga, ctx: &OwnedContext, verdict: &crate::saga::Verdict, resolving: bool) -> Notification {
    let keep = verdict.keep.map(|k| k.as_str()).unwrap_or("unclear");
    let other = match verdict.keep {
        Some(crate::saga::Keep::New) => "old",
        _ => "new",
    };
    let action = if resolving {
        format!("None: keyturn resolves the saga now (auto_resolve): it deactivates the {other} key, waits the grace period, checks its last use and deletes it. `keyturn status {}` follows it.", saga.saga_id)
    } else {
        format!(
            "Run `keyturn resolve {id} --keep {keep}`; keyturn then deactivates the {other} key, waits the grace period, checks its last use and deletes it. If you know the evidence is wrong, `--keep {other} --force`.",
            id = saga.saga_id
        )
    };
    let headline = format!("Evidence: the target uses the {keep} key");
    let d = EvidenceDoc {
        head: Head { event: "rotation.evidence", severity: "warning" },
        rotation_id: saga.rotation_id.clone(),
        saga_id: saga.saga_id.clone(),
        status: saga.status.as_str(),
        credential: Named::new(ctx.credential_kind, &ctx.credential),
        target: Named::new(ctx.target_kind, &ctx.target),
        new_key: saga.keys.new_key.clone(),
        old_keys: saga.keys.old_keys.iter().map(|k| k.id.clone()).collect(),
        keep: verdict.keep.map(|k| k.as_str()),
        evidence: verdict.reason.clone(),
        resolving,
        recommended_action: action,
        resolve_command: format!("keyturn resolve {} --keep {keep}", saga.saga_id),
        status_command: format!("keyturn status {}", saga.saga_id),
    };
    let text = format!(
        "{headline}\n\nRotation:        {}\nSaga:            {} (needs attention, both keys in place)\nCredential:      {} ({})\nTarget:          {} ({})\nNew key:         {}\nOld key:         {}\nEvidence:        {}\nRecommended action: {}\nMore:            {}\n",
        d.rotation_id,
        d.saga_id,
        d.credential.name,
        d.credential.kind,
        d.target.name,
        d.target.kind,
        d.new_key.as_deref().unwrap_or("none"),
        d.old_keys.join(", "),
        d.evidence,
        d.recommended_action,
        d.status_command
    );
    let document = to_document(&d);
    correlate(
        Notification {
            subject: format!("[keyturn] {headline}: {} ({}) -> {}", saga.rotation_id, ctx.credential, ctx.target)
                .replace(['\r', '\n'], " ")
                .chars()
                .take(100)
                .collect(),
            text,
            document,
            attributes: BTreeMap::from([
                ("event", "rotation.evidence".to_string()),
                ("severity", "warning".to_string()),
                ("rotation_id", saga.rotation_id.clone()),
                ("credential_kind", ctx.credential_kind.to_string()),
                ("target_kind", ctx.target_kind.to_string()),
            ]),
        },
        saga,
    )
}
