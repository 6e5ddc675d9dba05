//! Findings for IAM users no rotation covers.

use std::collections::BTreeMap;

use super::super::document::{to_document, Head, UnmatchedDigestDoc, UnmatchedDoc, UnmatchedUser};
use super::super::Notification;

/// The one-time report of an IAM user with a failing finding and no rotation.
pub fn render_unmatched(account: &str, user: &str, finding_id: &str, credential_kind: &str) -> Notification {
    let d = UnmatchedDoc {
        head: Head { event: "rotation.unmatched", severity: "warning" },
        account_id: account.into(),
        user: user.into(),
        finding_id: finding_id.into(),
        recommended_action: "add a [[rotation]] for this user, or rotate its key another way",
    };
    let text = format!(
        "Finding for an IAM user keyturn does not rotate\n\n\
         User:            {}\n\
         Account:         {}\n\
         Finding:         {}\n\
         Recommended action: add a [[rotation]] for this user to keyturn's configuration, or rotate its key another way. \
         This is reported once; later re-imports of the finding are only counted.\n",
        d.user, d.account_id, d.finding_id
    );
    let document = to_document(&d);
    Notification {
        subject: format!("[keyturn] No rotation for iam user {user} (account {account})").chars().take(100).collect(),
        text,
        document,
        attributes: unmatched_attributes("warning", credential_kind),
    }
}

/// IAM users no rotation covers, first seen in one intake message: one
/// notice for all of them (`rotation.unmatched`, warning). A single user
/// gets [`render_unmatched`]'s notice; more get a digest listing each
/// (`users[]` in the document). An intake message names at most
/// [`crate::intake::MAX_ITEMS`] users, so a digest lists at most that many.
pub fn render_unmatched_digest(items: &[(String, String, String)], credential_kind: &str) -> Notification {
    if let [(account, user, finding_id)] = items {
        return render_unmatched(account, user, finding_id, credential_kind);
    }
    let d = UnmatchedDigestDoc {
        head: Head { event: "rotation.unmatched", severity: "warning" },
        users: items.iter().map(|(a, u, f)| UnmatchedUser { account_id: a.clone(), user: u.clone(), finding_id: f.clone() }).collect(),
        count: items.len(),
        recommended_action: "add a [[rotation]] for these users, or rotate their keys another way",
    };
    let mut text = format!("Findings for {} IAM users keyturn does not rotate\n\n", d.count);
    for u in &d.users {
        text.push_str(&format!("  {} in account {} (finding {})\n", u.user, u.account_id, u.finding_id));
    }
    text.push_str("\nRecommended action: add a [[rotation]] for each user to keyturn's configuration, or rotate their keys another way. Each user is reported once; later re-imports of their findings are only counted.\n");
    Notification {
        subject: format!("[keyturn] No rotation for {} iam users", d.count),
        text,
        document: to_document(&d),
        attributes: unmatched_attributes("warning", credential_kind),
    }
}

/// The attributes of a `rotation.unmatched` notice: no rotation, no target.
pub(super) fn unmatched_attributes(severity: &str, credential_kind: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("event", "rotation.unmatched".to_string()),
        ("severity", severity.to_string()),
        ("rotation_id", "none".to_string()),
        ("credential_kind", credential_kind.to_string()),
        ("target_kind", "none".to_string()),
    ])
}
