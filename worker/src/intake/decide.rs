//! Deciding what to do: which rotation a finding's user or a notice is
//! about, whether a finding is actionable, whether an event is about an
//! account keyturn serves.

use super::request::EventOrigin;
use super::{Event, Finding, IntakeError, IAM_USER};
use crate::config::RotationConfig;
use crate::connectors::check::one_line;
use crate::connectors::{source_kind_for, Subject};
use crate::saga::Millis;

/// Whether an AWS event is about an account keyturn serves: `served` is
/// the worker's home account and every account a rotation's source names.
/// AWS Health events are checked by their envelope's `account` (required);
/// an exposure event's user ARNs must be in that same account. Security Hub
/// events by every finding's own account (`AwsAccountId` /
/// `cloud.account.uid`) and every IAM user's account in it, and by the
/// envelope's `account` when it has one (the aggregating account; the
/// emulator the tests use delivers events without it). Requests are not AWS
/// events (their sender is checked by [`sender_allowed`]).
pub fn check_served(event: &Event, origin: Option<&EventOrigin>, served: &[String]) -> Result<(), IntakeError> {
    let is_served = |a: &str| served.iter().any(|s| s == a);
    let findings = match event {
        Event::Request(_) => return Ok(()),
        Event::FindingsImported(fs) | Event::CustomAction { findings: fs, .. } => Some(fs),
        Event::KeyExposed { .. } | Event::Notice { .. } => None,
    };
    let account = origin.map(|o| o.account.as_str()).unwrap_or("");
    if let Some(fs) = findings {
        if !account.is_empty() && !is_served(account) {
            return Err(IntakeError::ForeignAccount(format!(
                "the event's account {:?} is neither the worker's account nor an account a configured rotation names",
                one_line(account, 20)
            )));
        }
        for (i, f) in fs.iter().enumerate() {
            if let Some(a) = std::iter::once(&f.account_id).chain(f.users.iter().map(|(a, _)| a)).find(|a| !is_served(a)) {
                return Err(IntakeError::ForeignAccount(format!(
                    "finding {i} is about account {:?}, neither the worker's account nor an account a configured rotation names",
                    one_line(a, 20)
                )));
            }
        }
        return Ok(());
    }
    if !is_served(account) {
        return Err(IntakeError::ForeignAccount(format!(
            "the event's account {:?} is neither the worker's account nor an account a configured rotation names",
            one_line(account, 20)
        )));
    }
    if let Event::KeyExposed { account_id, users, .. } = event {
        if account_id != account {
            return Err(IntakeError::ForeignAccount("the exposure names another account than its envelope".into()));
        }
        if let Some((a, _)) = users.iter().find(|(a, _)| a != account_id) {
            return Err(IntakeError::ForeignAccount(format!("the exposure event of account {account_id} names a user ARN of account {a}")));
        }
    }
    Ok(())
}

/// What to do about one user of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start (or join) the rotation.
    Rotate { rotation_id: String, finding: Box<Finding>, user: String },
    /// Nothing to do, and why (logged).
    Ignore { finding_id: String, reason: String },
    /// An IAM user with a failing finding and no configured rotation.
    Unmatched { finding_id: String, account_id: String, user: String },
    /// An AWS Health notice about a credential (e.g. it is expiring): start
    /// (or join) its rotation.
    Expiring { rotation_id: String, event_arn: String, observed_at: Option<Millis> },
}

/// The rotation configured for an IAM user in an account, if any (its
/// source says whether it covers the user: [`crate::connectors::SourceSpec::covers`]).
/// `home` is the worker's own account: a rotation that names no account
/// covers only that account's user of that name.
pub fn match_user<'a>(rotations: &'a [RotationConfig], home: &str, account: &str, user: &str) -> Option<&'a RotationConfig> {
    rotations.iter().find(|r| r.source.covers(&Subject { kind: IAM_USER, account, home, region: "", name: user }))
}

/// The rotations an AWS Health notice of kind `kind` about `account` in
/// `region` is about (each source says whether it covers it).
pub fn match_notice<'a>(rotations: &'a [RotationConfig], kind: &str, home: &str, account: &str, region: &str) -> Vec<&'a RotationConfig> {
    rotations.iter().filter(|r| r.source.covers(&Subject { kind, account, home, region, name: "" })).collect()
}

/// Whether an imported finding is a failing IAM.3 finding keyturn acts on:
/// recognised as IAM.3 ([`Finding::iam3`]), open ([`Finding::closed`]) and
/// failed. The same rule for ASFF and OCSF findings.
pub fn actionable(f: &Finding) -> Result<(), String> {
    if f.iam3.is_none() {
        return Err(format!("control {} is not IAM.3", f.control.as_deref().unwrap_or("(none)")));
    }
    if let Some(why) = &f.closed {
        return Err(why.clone());
    }
    if !f.failed {
        return Err(format!("compliance status {} is not FAILED", f.compliance_status.as_deref().unwrap_or("(none)")));
    }
    Ok(())
}

/// Decide, for every finding and IAM user in an event, what to do. `home`
/// is the worker's own account ([`match_user`]).
pub fn decide(event: &Event, rotations: &[RotationConfig], home: &str) -> Vec<Decision> {
    let (findings, check) = match event {
        // Requests and exposures are matched by the engine (they need the
        // table and IAM): see `triggers.rs`.
        Event::Request(_) | Event::KeyExposed { .. } => return Vec::new(),
        Event::FindingsImported(f) => (f, true),
        Event::CustomAction { findings, .. } => (findings, false),
        Event::Notice { kind, account_id, region, event_arn, observed_at } => {
            let matched = match_notice(rotations, kind.kind, home, account_id, region);
            if matched.is_empty() {
                return vec![Decision::Ignore {
                    finding_id: event_arn.clone(),
                    reason: format!(
                        "AWS Health notice {} for account {account_id} in {region}, and no rotation of that {} is configured",
                        kind.kind,
                        source_kind_for(kind.kind)
                    ),
                }];
            }
            return matched
                .into_iter()
                .map(|r| Decision::Expiring { rotation_id: r.id.clone(), event_arn: event_arn.clone(), observed_at: *observed_at })
                .collect();
        }
    };
    let mut out = Vec::new();
    for f in findings {
        if check {
            if let Err(reason) = actionable(f) {
                out.push(Decision::Ignore { finding_id: f.id.clone(), reason });
                continue;
            }
        }
        if f.users.is_empty() {
            out.push(Decision::Ignore { finding_id: f.id.clone(), reason: "no IAM user resource in the finding (AwsIamUser / AWS::IAM::User)".into() });
        }
        for (account, user) in &f.users {
            match match_user(rotations, home, account, user) {
                Some(r) => out.push(Decision::Rotate { rotation_id: r.id.clone(), finding: Box::new(f.clone()), user: user.clone() }),
                None => out.push(Decision::Unmatched { finding_id: f.id.clone(), account_id: account.clone(), user: user.clone() }),
            }
        }
    }
    out
}
