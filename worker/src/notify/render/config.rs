//! A refused configuration version.

use std::collections::BTreeMap;

use super::super::document::{to_document, ConfigRejectedDoc, Head};
use super::super::Notification;

/// A new configuration version was refused; the running one stays.
pub fn render_config_rejected(source: &str, version: &str, running: &str, problem: &str) -> Notification {
    let d = ConfigRejectedDoc {
        head: Head { event: "keyturn.config_rejected", severity: "critical" },
        source: source.into(),
        refused_version: version.into(),
        running_version: running.into(),
        problem: problem.into(),
    };
    let text = format!(
        "keyturn refused a new configuration version\n\nSource:          {}\nRefused version: {}\nStill running:   {}\nProblem:         {}\nRecommended action: fix the configuration and publish a new version; keyturn keeps running the previous one until then. `keyturn check-config --config {}` checks it.\n",
        d.source, d.refused_version, d.running_version, d.problem, d.source
    );
    let document = to_document(&d);
    Notification {
        subject: format!("[keyturn] Configuration refused: {source} {version}").chars().take(100).collect(),
        text,
        document,
        attributes: BTreeMap::from([
            ("event", "keyturn.config_rejected".to_string()),
            ("severity", "critical".to_string()),
            ("rotation_id", "none".to_string()),
            ("credential_kind", "none".to_string()),
            ("target_kind", "none".to_string()),
        ]),
    }
}
