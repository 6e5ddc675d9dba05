//! Quarantine began, changed, disabled a rotation, or ended.

use std::collections::BTreeMap;

use crate::clock::fmt_ms;

use super::super::document::{to_document, Head, Named, QuarantineDoc, QuarantineState};
use super::super::Notification;

/// Quarantine began, changed reason, disabled the rotation, or ended.
#[allow(clippy::too_many_arguments)]
pub fn render_quarantine(
    rotation_id: &str,
    credential: &str,
    target: &str,
    credential_kind: &str,
    target_kind: &str,
    h: &crate::quarantine::Health,
    change: crate::quarantine::Change,
    saga: Option<&str>,
) -> Notification {
    use crate::quarantine::Change;
    let (event, severity, headline) = match change {
        Change::Began => ("rotation.quarantined", "critical", "Rotation quarantined"),
        Change::ReasonChanged => ("rotation.quarantined", "critical", "Rotation quarantined: reason changed"),
        Change::Disabled => ("rotation.disabled", "critical", "Rotation disabled after quarantine"),
        Change::Lifted | Change::None => ("rotation.quarantine_lifted", "info", "Rotation quarantine lifted"),
    };
    let d = QuarantineDoc {
        head: Head { event, severity },
        rotation_id: rotation_id.into(),
        credential: Named::new(credential_kind, credential),
        target: Named::new(target_kind, target),
        consecutive_failures: h.consecutive_failures,
        quarantine: h.quarantine.as_ref().map(|q| QuarantineState {
            since: q.began,
            reason: q.reason.clone(),
            series: q.series,
            next_attempt: q.next_attempt,
            disabled: q.disabled,
        }),
        last_saga: saga.map(str::to_string),
    };
    // The text says what the document says, in lines.
    let id = &d.rotation_id;
    let mut t = format!("{headline}\n\nRotation:        {id}\nCredential:      {}\nTarget:          {}\n", d.credential.name, d.target.name);
    if let Some(q) = &d.quarantine {
        t.push_str(&format!("Reason:          {}\nFailed in a row: {}\nQuarantined since: {}\n", q.reason, d.consecutive_failures, fmt_ms(q.since)));
        t.push_str(&format!(
            "Next attempt:    {}\n",
            if q.disabled {
                "none: automatic triggers are disabled".to_string()
            } else {
                format!("{} (automatic triggers back off: 6h, 12h, then daily)", fmt_ms(q.next_attempt))
            }
        ));
        t.push_str(&format!(
            "Recommended action: fix the cause (see the last saga: keyturn status {}), then `keyturn rotate {id}` to test it, or `keyturn release {id}`.\n",
            d.last_saga.as_deref().unwrap_or("<saga>")
        ));
    } else {
        t.push_str("Automatic triggers rotate this credential again as usual.\n");
    }
    let document = to_document(&d);
    Notification {
        subject: format!("[keyturn] {headline}: {rotation_id} ({credential}) -> {target}").chars().take(100).collect(),
        text: t,
        document,
        attributes: BTreeMap::from([
            ("event", event.to_string()),
            ("severity", severity.to_string()),
            ("rotation_id", rotation_id.to_string()),
            ("credential_kind", credential_kind.to_string()),
            ("target_kind", target_kind.to_string()),
        ]),
    }
}
