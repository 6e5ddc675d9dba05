//! A refused configuration version.

use std::collections::BTreeMap;

use serde_json::json;

use super::super::Notification;

/// A new configuration version was refused; the running one stays.
pub fn render_config_rejected(source: &str, version: &str, running: &str, problem: &str) -> Notification {
    let text = format!(
        "keyturn refused a new configuration version\n\nSource:          {source}\nRefused version: {version}\nStill running:   {running}\nProblem:         {problem}\nRecommended action: fix the configuration and publish a new version; keyturn keeps running the previous one until then. `keyturn check-config --config {source}` checks it.\n"
    );
    let document = json!({
        "event": "keyturn.config_rejected",
        "severity": "critical",
        "source": source,
        "refused_version": version,
        "running_version": running,
        "problem": problem,
    });
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
