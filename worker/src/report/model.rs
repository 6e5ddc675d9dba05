//! The report's content, and the pure decisions in it: a key's age and
//! use against the 90-day line, which findings a key or a rotation raises
//! and what fixes each, the history's tallies and weekly buckets. No I/O:
//! [`super::collect`] fills these from AWS and the table; the renderers
//! only print them.
//!
//! Dates in the serialized report are RFC 3339 strings (UTC); durations
//! are whole seconds, ages whole days.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::{fmt_ms, Millis};
use crate::connectors::RecordedLifetime;
use crate::saga::{Saga, Status};

/// The JSON document's `schema`.
pub const SCHEMA: &str = "keyturn.report.v1";
/// Security Hub IAM.3's `maxAccessKeyAge` (fixed at 90 days).
pub const IAM3_DAYS: u64 = 90;
pub const DAY: Millis = 86_400_000;
const WEEK: Millis = 7 * DAY;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// The instant the report is "as of" (`--now`, default: when it ran).
    pub as_of: String,
    /// Start of the history window (`--since`).
    pub since: String,
    pub accounts: Vec<AccountRow>,
    pub keys: Vec<KeyRow>,
    pub rotations: Vec<RotationRow>,
    pub history: History,
    pub findings: Vec<Finding>,
    /// The controls this evidence is for.
    pub standards: Vec<Standard>,
}

/// One account inventoried (or not: `error`).
#[derive(Debug, Clone, Serialize)]
pub struct AccountRow {
    pub account_id: String,
    /// `worker credentials` (the account keyturn runs in) or the role ARN assumed.
    pub via: String,
    pub users: u64,
    pub keys: u64,
    /// Why the account could not be listed (whole or in part), e.g. AWS's
    /// `AccessDenied` on `iam:ListUsers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One IAM user access key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyRow {
    pub account_id: String,
    pub user_name: String,
    pub access_key_id: String,
    /// `Active` or `Inactive`, as IAM says.
    pub status: String,
    pub created_at: String,
    pub age_days: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// `GetAccessKeyLastUsed`'s service and region (`N/A` when never used).
    pub last_used_service: String,
    pub last_used_region: String,
    /// The rotation whose source is this key's user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// Active and older than 90 days: Security Hub IAM.3 fails for it.
    pub past_90_days: bool,
    /// Active, and not used for 90 days (never used: created over 90 days ago).
    pub unused_90_days: bool,
}

/// What IAM said about one key; the per-key summary kept while paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    pub account_id: String,
    pub user_name: String,
    pub access_key_id: String,
    pub active: bool,
    pub created: Millis,
    pub last_used: Option<Millis>,
    pub service: Option<String>,
    pub region: Option<String>,
}

impl KeyFacts {
    /// The row for this key as of `now`, covered by `rotation_id`.
    pub fn row(self, now: Millis, rotation_id: Option<String>) -> KeyRow {
        let age = now.saturating_sub(self.created);
        let idle_since = self.last_used.unwrap_or(self.created);
        KeyRow {
            status: if self.active { "Active" } else { "Inactive" }.into(),
            created_at: fmt_ms(self.created),
            age_days: age / DAY,
            last_used_at: self.last_used.map(fmt_ms),
            last_used_service: self.service.unwrap_or_else(|| "N/A".into()),
            last_used_region: self.region.unwrap_or_else(|| "N/A".into()),
            rotation_id,
            past_90_days: self.active && age > IAM3_DAYS * DAY,
            unused_90_days: self.active && now.saturating_sub(idle_since) > IAM3_DAYS * DAY,
            account_id: self.account_id,
            user_name: self.user_name,
            access_key_id: self.access_key_id,
        }
    }
}

/// One configured rotation.
#[derive(Debug, Clone, Serialize)]
pub struct RotationRow {
    pub rotation_id: String,
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// When it is next due, and why (`next_due_reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due: Option<String>,
    pub next_due_reason: String,
    /// The saga holding the credential's lock (running, or stopped needing attention).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_saga: Option<OpenSaga>,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineRow>,
    /// A credential only keyturn's records date (its source has a
    /// [`RecordedLifetime`]): the one keyturn last recorded. The field keeps
    /// its `keyturn.report.v1` name for subscribers (today only the SCIM
    /// token source dates its credential so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_token: Option<RecordedRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenSaga {
    pub saga_id: String,
    pub status: String,
    pub step: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub since: String,
    pub reason: String,
    pub next_attempt: String,
    pub disabled: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordedRow {
    /// When a person handed the credential over (its creation, within
    /// minutes), or the creation date given for the one in use
    /// (`--old-token-created`).
    pub created_at: String,
    /// Its source's [`RecordedLifetime::lifetime`] after creation.
    pub expires_at: String,
    /// The saga that recorded it.
    pub saga_id: String,
}

/// The history window.
#[derive(Debug, Clone, Serialize, Default)]
pub struct History {
    /// Sagas by outcome: `succeeded`, `failed` (compensated or refused),
    /// `needs_attention`, `rolled_back`, `running`.
    pub by_outcome: BTreeMap<String, u64>,
    /// Sagas that handled an exposed access key.
    pub exposures_handled: u64,
    /// Median, over succeeded sagas, from start to the target holding the new key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_time_to_switch_s: Option<u64>,
    /// Median, over succeeded sagas, from start to the end (grace period included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_time_to_rotate_s: Option<u64>,
    /// Sagas started per week of the window, by outcome (first week first).
    pub weeks: Vec<Week>,
    /// Every saga of the window, oldest first.
    pub sagas: Vec<SagaRow>,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Week {
    pub starts: String,
    pub succeeded: u64,
    pub failed: u64,
    pub needs_attention: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SagaRow {
    pub saga_id: String,
    pub rotation_id: String,
    pub outcome: String,
    /// The saga's own status (`compensated`, `refused`, …).
    pub status: String,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_switch_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_rotate_s: Option<u64>,
    /// What started it: `manual`, `schedule`, `securityhub`, `request`, `health`, …
    pub trigger: String,
    /// The trigger as recorded (e.g. `schedule:max_age 80.0d`).
    pub trigger_detail: String,
    /// Who asked, for request-API sagas: the requester it named and the
    /// SQS sender (or the account that put the event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The exposed key it handled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The outcome bucket of a saga status.
pub fn outcome(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Compensated | Status::Refused => "failed",
        Status::NeedsAttention => "needs_attention",
        Status::RolledBack => "rolled_back",
        Status::Running | Status::Compensating => "running",
    }
}

impl SagaRow {
    pub fn of(s: &Saga) -> SagaRow {
        let ended = s.status.is_terminal().then_some(s.updated_at);
        let succeeded = s.status == Status::Succeeded;
        let requested_by = s.origin.request.as_ref().map(|r| {
            let via = r.sender.as_deref().or(r.event_account.as_deref());
            match via {
                Some(v) => format!("{} (sent by {v})", r.requester),
                None => r.requester.clone(),
            }
        });
        SagaRow {
            saga_id: s.saga_id.clone(),
            rotation_id: s.rotation_id.clone(),
            outcome: outcome(s.status).into(),
            status: s.status.as_str().into(),
            started_at: fmt_ms(s.created_at),
            ended_at: ended.map(fmt_ms),
            time_to_switch_s: s.effects.switched_at.filter(|_| succeeded).map(|t| t.saturating_sub(s.created_at) / 1000),
            time_to_rotate_s: ended.filter(|_| succeeded).map(|t| t.saturating_sub(s.created_at) / 1000),
            trigger: crate::metrics::trigger_dimension(&s.trigger).to_string(),
            trigger_detail: s.trigger.clone(),
            requested_by,
            exposed_key: s.exposure.as_ref().map(|e| e.key_id.clone()),
            failure: s.outcome.failure.as_ref().map(|f| format!("{} at {}: {}", f.code, f.step, f.message)),
        }
    }
}

/// Builds [`History`] one saga at a time (pages of the index are dropped as read).
#[derive(Debug)]
pub struct HistoryBuilder {
    since: Millis,
    now: Millis,
    h: History,
    switch: Vec<u64>,
    rotate: Vec<u64>,
}

impl HistoryBuilder {
    pub fn new(since: Millis, now: Millis) -> HistoryBuilder {
        let weeks = now.saturating_sub(since).div_ceil(WEEK).max(1);
        let h = History { weeks: (0..weeks).map(|i| Week { starts: fmt_ms(since + i * WEEK), ..Week::default() }).collect(), ..History::default() };
        HistoryBuilder { since, now, h, switch: vec![], rotate: vec![] }
    }

    /// Count one saga (sagas started after `now`, the report's as-of, are left out).
    pub fn add(&mut self, s: &Saga) {
        if s.created_at < self.since || s.created_at > self.now {
            return;
        }
        let row = SagaRow::of(s);
        *self.h.by_outcome.entry(row.outcome.clone()).or_default() += 1;
        if s.exposure.is_some() {
            self.h.exposures_handled += 1;
        }
        if let Some(t) = row.time_to_switch_s {
            self.switch.push(t);
        }
        if let Some(t) = row.time_to_rotate_s {
            self.rotate.push(t);
        }
        let i = ((s.created_at - self.since) / WEEK) as usize;
        if let Some(w) = self.h.weeks.get_mut(i) {
            match row.outcome.as_str() {
                "succeeded" => w.succeeded += 1,
                "failed" => w.failed += 1,
                "needs_attention" => w.needs_attention += 1,
                _ => w.other += 1,
            }
        }
        self.h.sagas.push(row);
    }

    pub fn finish(mut self) -> History {
        self.h.median_time_to_switch_s = median(&mut self.switch);
        self.h.median_time_to_rotate_s = median(&mut self.rotate);
        self.h.sagas.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.saga_id.cmp(&b.saga_id)));
        self.h
    }
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Something to fix, with how.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// `key_past_90_days`, `key_not_rotated`, `key_unused_90_days`, `rotation_failing`.
    pub kind: &'static str,
    /// `high` or `medium`.
    pub severity: &'static str,
    /// What it is about: `<account>/<user>/<key id>` or `rotation <id>`.
    pub subject: String,
    pub message: String,
    /// The command or configuration that fixes it.
    pub fix: String,
}

/// The findings a key raises.
pub fn key_findings(k: &KeyRow) -> Vec<Finding> {
    let mut out = vec![];
    let subject = format!("{}/{}/{}", k.account_id, k.user_name, k.access_key_id);
    if k.past_90_days {
        let fix = match &k.rotation_id {
            Some(id) => {
                format!("keyturn rotate {id}   # and add [rotation.schedule] max_age = \"80d\" to rotation {id} so it is rotated before IAM.3's 90 days")
            }
            None => "configure a rotation for this user (see key_not_rotated), or delete the key if nothing uses it".into(),
        };
        out.push(Finding {
            kind: "key_past_90_days",
            severity: "high",
            subject: subject.clone(),
            message: format!("active key {} of {} is {} days old (IAM.3: at most {IAM3_DAYS})", k.access_key_id, k.user_name, k.age_days),
            fix,
        });
    }
    if k.rotation_id.is_none() && k.status == "Active" {
        out.push(Finding {
            kind: "key_not_rotated",
            severity: if k.past_90_days { "high" } else { "medium" },
            subject: subject.clone(),
            message: format!("no configured rotation covers user {} in account {}", k.user_name, k.account_id),
            fix: format!(
                "[[rotation]]\nid = \"{id}\"\nsource = {{ kind = \"{kind}\", user_name = \"{u}\", account_id = \"{a}\" }}\n[rotation.target]   # where this key is used: docs/configuration.md, Targets\n[rotation.schedule]\nmax_age = \"80d\"",
                id = rotation_id_for(&k.user_name),
                kind = crate::connectors::source_kind_for(crate::intake::IAM_USER),
                u = k.user_name,
                a = k.account_id
            ),
        });
    }
    if k.unused_90_days {
        out.push(Finding {
            kind: "key_unused_90_days",
            severity: "medium",
            subject,
            message: match &k.last_used_at {
                Some(t) => format!("active key {} of {} was last used {t}", k.access_key_id, k.user_name),
                None => format!("active key {} of {} was never used (created {})", k.access_key_id, k.user_name, k.created_at),
            },
            fix: format!(
                "aws iam update-access-key --user-name {u} --access-key-id {id} --status Inactive   # in account {a}; delete it (aws iam delete-access-key) once nothing complains",
                u = k.user_name,
                id = k.access_key_id,
                a = k.account_id
            ),
        });
    }
    out
}

/// A rotation id made from a user name (`[A-Za-z0-9_-]`).
fn rotation_id_for(user: &str) -> String {
    user.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

/// A credential only keyturn's records date: its row, when its rotation is
/// next due and why, from its source's `life` and what a saga `recorded`
/// (its creation, and that saga's id; `None` before a first rotation).
pub fn recorded_due(life: &RecordedLifetime, recorded: Option<(Millis, String)>) -> (Option<RecordedRow>, Option<Millis>, String) {
    match recorded {
        Some((created, saga_id)) => {
            let expires = created + life.lifetime;
            let row = RecordedRow { created_at: fmt_ms(created), expires_at: fmt_ms(expires), saga_id };
            (Some(row), Some(expires.saturating_sub(life.rotation_before)), life.due_reason.to_string())
        }
        None => (None, None, life.unrecorded.to_string()),
    }
}

/// A rotation failing again and again: two consecutive failed sagas, or quarantine.
pub fn rotation_finding(r: &RotationRow) -> Option<Finding> {
    if r.consecutive_failures < 2 && r.quarantine.is_none() {
        return None;
    }
    let mut fix = format!("keyturn status {id}   # the failures and their causes; keyturn doctor checks the fix", id = r.rotation_id);
    if r.quarantine.is_some() {
        fix.push_str(&format!("\nkeyturn release {id}   # lift the quarantine, then: keyturn rotate {id} --wait", id = r.rotation_id));
    } else {
        fix.push_str(&format!("\nkeyturn rotate {id} --wait   # after fixing the cause", id = r.rotation_id));
    }
    Some(Finding {
        kind: "rotation_failing",
        severity: "high",
        subject: format!("rotation {}", r.rotation_id),
        message: match &r.quarantine {
            Some(q) => format!(
                "{} consecutive failed sagas; quarantined since {} ({}){}",
                r.consecutive_failures,
                q.since,
                q.reason,
                if q.disabled { ", automatic triggers disabled" } else { "" }
            ),
            None => format!("{} consecutive failed sagas", r.consecutive_failures),
        },
        fix,
    })
}

/// A control the report is evidence for.
#[derive(Debug, Clone, Serialize)]
pub struct Standard {
    pub standard: &'static str,
    pub control: &'static str,
    pub requirement: &'static str,
    /// Where in this report the evidence is.
    pub evidence: &'static str,
}

/// Security Hub IAM.3 and what it maps to.
pub fn standards() -> Vec<Standard> {
    const KEYS: &str = "keys (age_days, past_90_days), findings key_past_90_days";
    vec![
        Standard {
            standard: "AWS Security Hub CSPM",
            control: "IAM.3",
            requirement: "IAM users' access keys should be rotated every 90 days or less (maxAccessKeyAge 90)",
            evidence: KEYS,
        },
        Standard {
            standard: "CIS AWS Foundations Benchmark v3.0.0",
            control: "1.14",
            requirement: "Ensure access keys are rotated every 90 days or less",
            evidence: KEYS,
        },
        Standard {
            standard: "CIS AWS Foundations Benchmark v5.0.0",
            control: "1.13",
            requirement: "Ensure access keys are rotated every 90 days or less",
            evidence: KEYS,
        },
        Standard {
            standard: "PCI DSS v4.0.1",
            control: "8.6.3",
            requirement: "Passwords/passphrases of application and system accounts are protected against misuse: changed periodically and upon suspicion or confirmation of compromise",
            evidence: "rotations (last_success, next_due), history (sagas, exposures_handled)",
        },
        Standard {
            standard: "PCI DSS v4.0.1",
            control: "8.3.9",
            requirement: "Passwords/passphrases used as the only authentication factor are changed at least once every 90 days",
            evidence: KEYS,
        },
        Standard {
            standard: "NIST SP 800-53 Rev. 5",
            control: "AC-2(1)",
            requirement: "Account management: automated system account management",
            evidence: "rotations, history (who or what triggered each saga), findings key_not_rotated and key_unused_90_days",
        },
    ]
}

/// Every finding of the report, most severe first.
pub fn findings(keys: &[KeyRow], rotations: &[RotationRow]) -> Vec<Finding> {
    let mut out: Vec<Finding> = rotations.iter().filter_map(rotation_finding).collect();
    out.extend(keys.iter().flat_map(key_findings));
    out.sort_by_key(|f| (f.severity != "high", f.kind, f.subject.clone()));
    out
}

/// Key-age buckets for the chart: 15-day bins up to 180 days, then one for older.
pub fn age_buckets(keys: &[KeyRow]) -> Vec<(String, u64, u64)> {
    let mut bins: Vec<(String, u64, u64)> = (0..12).map(|i| (format!("{}-{}", i * 15, i * 15 + 14), 0, 0)).collect();
    bins.push(("180+".into(), 0, 0));
    for k in keys {
        let i = ((k.age_days / 15) as usize).min(12);
        if k.status == "Active" {
            bins[i].1 += 1;
        } else {
            bins[i].2 += 1;
        }
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_780_000_000_000;

    fn facts(user: &str, age_days: u64, used_days_ago: Option<u64>, active: bool) -> KeyFacts {
        KeyFacts {
            account_id: "111111111111".into(),
            user_name: user.into(),
            access_key_id: format!("AKIA{user}"),
            active,
            created: NOW - age_days * DAY - 1000,
            last_used: used_days_ago.map(|d| NOW - d * DAY - 1000),
            service: used_days_ago.map(|_| "ses".into()),
            region: used_days_ago.map(|_| "eu-west-1".into()),
        }
    }

    #[test]
    fn the_90_day_line_is_iam3s() {
        let old = facts("old", 90, Some(1), true).row(NOW, Some("r".into()));
        assert_eq!(old.age_days, 90);
        assert!(old.past_90_days, "90 days and a second is past IAM.3's 90 days");
        let young = facts("young", 89, Some(1), true).row(NOW, None);
        assert!(!young.past_90_days);
        let inactive = facts("off", 200, None, false).row(NOW, None);
        assert!(!inactive.past_90_days && !inactive.unused_90_days, "inactive keys fail nothing");
        assert_eq!(inactive.last_used_service, "N/A");
    }

    #[test]
    fn unused_means_no_use_for_90_days_or_never_used_since_creation_90_days_ago() {
        assert!(facts("a", 200, Some(91), true).row(NOW, None).unused_90_days);
        assert!(!facts("b", 200, Some(89), true).row(NOW, None).unused_90_days);
        assert!(facts("c", 95, None, true).row(NOW, None).unused_90_days);
        assert!(!facts("d", 10, None, true).row(NOW, None).unused_90_days);
    }

    #[test]
    fn each_finding_says_how_to_fix_it() {
        let covered = facts("mailer", 120, Some(1), true).row(NOW, Some("auth0-ses".into()));
        let f = key_findings(&covered);
        assert_eq!(f.iter().map(|f| f.kind).collect::<Vec<_>>(), vec!["key_past_90_days"]);
        assert!(f[0].fix.starts_with("keyturn rotate auth0-ses"), "{}", f[0].fix);

        let stray = facts("ci.bot", 100, None, true).row(NOW, None);
        let f = key_findings(&stray);
        assert_eq!(f.iter().map(|f| f.kind).collect::<Vec<_>>(), vec!["key_past_90_days", "key_not_rotated", "key_unused_90_days"]);
        assert!(f[1].fix.contains("user_name = \"ci.bot\", account_id = \"111111111111\""), "{}", f[1].fix);
        assert!(f[1].fix.contains("id = \"ci-bot\""), "a valid rotation id: {}", f[1].fix);
        assert!(f[2].fix.contains("--access-key-id AKIAci.bot --status Inactive"), "{}", f[2].fix);
        // The configuration snippet parses as TOML.
        let snippet = f[1].fix.replace("[rotation.target]", "[rotation.target]\nkind = \"x\"");
        assert!(snippet.parse::<toml::Table>().is_ok(), "{snippet}");
    }

    /// The SCIM token row: its source dates it (one year from the record,
    /// due 90 days before, as AWS Health announces), the report only counts;
    /// an access key source gives no recorded lifetime. The JSON keeps the
    /// `scim_token` field of `keyturn.report.v1`.
    #[test]
    fn a_recorded_credential_is_dated_by_its_source() {
        let t = |s: &str| s.parse::<toml::Table>().unwrap();
        let scim = crate::connectors::parse_source(t("kind = \"scim_token\"\nregion = \"us-east-1\"")).unwrap();
        let iam = crate::connectors::parse_source(t("kind = \"iam_access_key\"\nuser_name = \"u\"")).unwrap();
        assert!(iam.recorded_lifetime().is_none());
        let life = scim.recorded_lifetime().expect("a SCIM token is dated by keyturn's records");
        let created = NOW - 10 * DAY;
        let (row, due, reason) = recorded_due(life, Some((created, "S-1".into())));
        let row = row.unwrap();
        assert_eq!((row.created_at.as_str(), row.saga_id.as_str()), (fmt_ms(created).as_str(), "S-1"));
        assert_eq!(row.expires_at, fmt_ms(created + 365 * DAY));
        assert_eq!(due, Some(created + 275 * DAY));
        assert_eq!(reason, "AWS Health's expiry notice, 90 days before the token expires");
        assert_eq!(recorded_due(life, None), (None, None, "no SCIM token recorded yet: the first rotation records one".to_string()));
        let mut r = rotation_row(0);
        r.next_due_reason = reason;
        r.scim_token = recorded_due(life, Some((created, "S-1".into()))).0;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scim_token"]["saga_id"], "S-1", "{v}");
        assert_eq!(v["scim_token"]["expires_at"], fmt_ms(created + 365 * DAY).as_str());
    }

    /// Rotation `r` with `failures` consecutive failures and nothing else.
    fn rotation_row(failures: u32) -> RotationRow {
        RotationRow {
            rotation_id: "r".into(),
            source: String::new(),
            target: String::new(),
            last_success: None,
            next_due: None,
            next_due_reason: String::new(),
            open_saga: None,
            consecutive_failures: failures,
            quarantine: None,
            scim_token: None,
        }
    }

    #[test]
    fn a_rotation_fails_repeatedly_after_two_failures_or_in_quarantine() {
        let mut r = rotation_row(1);
        assert!(rotation_finding(&r).is_none());
        r.consecutive_failures = 2;
        assert!(rotation_finding(&r).unwrap().fix.contains("keyturn status r"));
        r.quarantine = Some(QuarantineRow { since: "x".into(), reason: "Auth0Refused".into(), next_attempt: "y".into(), disabled: false });
        assert!(rotation_finding(&r).unwrap().fix.contains("keyturn release r"));
    }

    #[test]
    fn history_counts_outcomes_per_week_and_medians() {
        let since = NOW - 90 * DAY;
        let mut b = HistoryBuilder::new(since, NOW);
        let saga = |id: &str, at: Millis, st: Status| {
            let mut s = Saga::new(id.into(), "r".into(), "iam_access_key:u".into(), "schedule:max_age 80.0d".into(), at, 1);
            s.status = st;
            s.updated_at = at + 600_000;
            s.effects.switched_at = Some(at + 60_000);
            s
        };
        b.add(&saga("a", since + 1000, Status::Succeeded));
        b.add(&saga("b", since + 8 * DAY, Status::Compensated));
        b.add(&saga("c", since + 8 * DAY + 1, Status::NeedsAttention));
        b.add(&saga("too-old", since - 1, Status::Succeeded));
        b.add(&saga("future", NOW + 1, Status::Succeeded));
        let h = b.finish();
        assert_eq!(h.weeks.len(), 13);
        assert_eq!((h.weeks[0].succeeded, h.weeks[1].failed, h.weeks[1].needs_attention), (1, 1, 1));
        assert_eq!(h.by_outcome.values().sum::<u64>(), 3);
        assert_eq!(h.median_time_to_switch_s, Some(60));
        assert_eq!(h.median_time_to_rotate_s, Some(600));
        assert_eq!(h.sagas[0].trigger, "schedule");
        assert_eq!(h.sagas[1].time_to_rotate_s, None, "only succeeded sagas have a time to rotate");
    }

    #[test]
    fn ages_fall_in_15_day_bins() {
        let keys: Vec<KeyRow> = [0, 14, 15, 95, 400].iter().map(|d| facts("u", *d, None, true).row(NOW, None)).collect();
        let b = age_buckets(&keys);
        assert_eq!((b[0].1, b[1].1, b[6].1, b[12].1), (2, 1, 1, 1));
    }
}
