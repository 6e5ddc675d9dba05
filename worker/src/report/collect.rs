//! Gathering the report: IAM in each account, keyturn's table.
//!
//! **Which IAM API.** The credential report (`GenerateCredentialReport` /
//! `GetCredentialReport`) is one call per account, but it names a user's
//! keys only as `access_key_1` / `access_key_2`, without their ids, so a
//! key could not be matched to a saga, a finding or an `aws iam` command.
//! The report therefore pages `ListUsers` (`Marker`, 1,000 a page), and for
//! each user `ListAccessKeys` and, per key, `GetAccessKeyLastUsed`, at most
//! [`CONCURRENCY`] users at a time per account. Only the per-key summary
//! ([`KeyFacts`]) is kept; each page of users is dropped once its keys are
//! read.
//!
//! **Which accounts.** The worker's own (its credentials), every account a
//! configured `iam_access_key` source names (through the member role, as
//! the rotation itself acts), and any `--account` given (through
//! `[aws] member_role_name`). An account that cannot be read (the role
//! cannot be assumed, `AccessDenied` on `iam:ListUsers`) is reported with
//! AWS's error, and the others still are.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::model::{self, AccountRow, KeyFacts, KeyRow, OpenSaga, QuarantineRow, Report, RotationRow, DAY, IAM3_DAYS};
use crate::accounts::{Access, Accounts, HomeCell};
use crate::clock::{fmt_ms, Millis};
use crate::config::Config;
use crate::connectors::Subject;
use crate::error::{aws, Error, Result};
use crate::intake::IAM_USER;
use crate::saga::Status;
use crate::store::Store;

/// Users whose keys are read at once, per account.
pub const CONCURRENCY: usize = 8;
/// `ListUsers` page size (AWS's maximum).
const PAGE: i32 = 1000;

/// What the report is asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The instant the report is "as of": key ages and idle times are counted to it.
    pub now: Millis,
    /// Start of the history window.
    pub since: Millis,
    /// More member accounts to inventory (through `[aws] member_role_name`).
    pub accounts: Vec<String>,
}

/// An `iam_access_key` rotation and the account its user lives in.
struct Covering {
    rotation_id: String,
    source: Arc<dyn crate::connectors::SourceSpec>,
    account: String,
}

/// Build the whole report.
pub async fn report(cfg: &Config, base: &aws_config::SdkConfig, req: &Request) -> Result<Report> {
    let iam = aws_sdk_iam::Client::new(base);
    let store = Store::new(aws_sdk_dynamodb::Client::new(base), &cfg.aws.table);
    let accounts =
        // (Its IAM client for exposure lookups goes unused here.)
        Accounts::new(base.clone(), Arc::new(HomeCell::default()), cfg.aws.member_role_name.clone(), cfg.aws.external_id.clone(), crate::clock::system(), iam.clone());
    // Roles assumed for the report name it in their session: `keyturn-report`.
    crate::accounts::for_saga("report", async {
        let home = accounts.home().await?.account.clone();

        // Which accounts, and how each is reached.
        let mut targets: BTreeMap<String, (Access, Option<Error>)> = BTreeMap::new();
        targets.insert(home.clone(), (Access::Home { account: Some(home.clone()) }, None));
        let mut covering = vec![];
        for r in cfg.rotations.iter().filter(|r| r.source.kind() == crate::connectors::source_kind_for(IAM_USER)) {
            match accounts.access(r.source.account_id(), r.source.role_arn()).await {
                Ok(a) => {
                    let account = a.account().unwrap_or(&home).to_string();
                    covering.push(Covering { rotation_id: r.id.clone(), source: r.source.clone(), account: account.clone() });
                    targets.entry(account).or_insert((a, None));
                }
                Err(e) => {
                    let account = r.source.account_id().unwrap_or("unknown").to_string();
                    targets.entry(account).or_insert((Access::Home { account: None }, Some(e)));
                }
            }
        }
        for a in &req.accounts {
            if !targets.contains_key(a) {
                let entry = match accounts.access(Some(a), None).await {
                    Ok(acc) => (acc, None),
                    Err(e) => (Access::Home { account: None }, Some(e)),
                };
                targets.insert(a.clone(), entry);
            }
        }

        let covers = |account: &str, user: &str| covering_rotation(&covering, account, user);

        let mut keys: Vec<KeyRow> = vec![];
        let mut account_rows = vec![];
        // Oldest active key per rotation, for "next due".
        let mut oldest: BTreeMap<String, Millis> = BTreeMap::new();
        for (account, (access, problem)) in targets {
            let via = match &access {
                Access::Home { .. } => "worker credentials".to_string(),
                Access::Role { role_arn, .. } => role_arn.clone(),
            };
            let mut row = AccountRow { account_id: account.clone(), via, users: 0, keys: 0, error: problem.map(|e| e.to_string()) };
            if row.error.is_none() {
                let listed = match accounts.iam(&iam, &access).await {
                    Ok(client) => {
                        inventory(&client, &account, |facts| {
                            let rotation = covers(&facts.account_id, &facts.user_name);
                            if let (Some(r), true) = (&rotation, facts.active) {
                                let o = oldest.entry(r.clone()).or_insert(facts.created);
                                *o = (*o).min(facts.created);
                            }
                            keys.push(facts.row(req.now, rotation));
                        })
                        .await
                    }
                    Err(e) => Err((e, 0, 0)),
                };
                match listed {
                    Ok((users, n)) => (row.users, row.keys) = (users, n),
                    Err((e, users, n)) => {
                        (row.users, row.keys) = (users, n);
                        row.error = Some(if users > 0 { format!("listed in part: {e}") } else { e.to_string() });
                    }
                }
            }
            account_rows.push(row);
        }
        keys.sort_by(|a, b| (&a.account_id, &a.user_name, &a.access_key_id).cmp(&(&b.account_id, &b.user_name, &b.access_key_id)));

        let mut rotations = vec![];
        for r in &cfg.rotations {
            rotations.push(rotation_row(&store, r, oldest.get(&r.id).copied()).await?);
        }

        let mut history = model::HistoryBuilder::new(req.since, req.now);
        store.created_since(req.since, |s| history.add(&s.saga)).await?;

        let findings = model::findings(&keys, &rotations);
        Ok(Report {
            schema: model::SCHEMA,
            as_of: fmt_ms(req.now),
            since: fmt_ms(req.since),
            accounts: account_rows,
            keys,
            rotations,
            history: history.finish(),
            findings,
            standards: model::standards(),
        })
    })
    .await
}

/// The rotation whose source covers IAM user `user` of `account`.
fn covering_rotation(covering: &[Covering], account: &str, user: &str) -> Option<String> {
    covering
        .iter()
        .find(|c| c.source.covers(&Subject { kind: IAM_USER, account, home: &c.account, region: "", name: user }))
        .map(|c| c.rotation_id.clone())
}

/// Page through one account's users and their keys, handing each key's
/// facts to `each`. Answers (users, keys) read; on an error, also how far it got.
async fn inventory(iam: &aws_sdk_iam::Client, account: &str, mut each: impl FnMut(KeyFacts)) -> std::result::Result<(u64, u64), (Error, u64, u64)> {
    let (mut users, mut keys) = (0u64, 0u64);
    let mut marker: Option<String> = None;
    loop {
        let page = iam.list_users().max_items(PAGE).set_marker(marker.take()).send().await.map_err(|e| (aws("iam", "ListUsers", e), users, keys))?;
        let names: Vec<String> = page.users().iter().map(|u| u.user_name().to_string()).collect();
        let next = page.is_truncated().then(|| page.marker().map(str::to_string)).flatten();
        drop(page);
        let mut tasks = JoinSet::new();
        let mut names = names.into_iter();
        loop {
            while tasks.len() < CONCURRENCY {
                let Some(name) = names.next() else { break };
                let (iam, account) = (iam.clone(), account.to_string());
                tasks.spawn(async move { user_keys(&iam, &account, name).await });
            }
            let Some(done) = tasks.join_next().await else { break };
            let found = done.map_err(|e| (Error::Corrupt(format!("key listing task: {e}")), users, keys))?.map_err(|e| (e, users, keys))?;
            users += 1;
            for k in found {
                keys += 1;
                each(k);
            }
        }
        match next {
            Some(m) => marker = Some(m),
            None => return Ok((users, keys)),
        }
    }
}

/// One user's keys with their last use. A user deleted meanwhile has none.
async fn user_keys(iam: &aws_sdk_iam::Client, account: &str, user: String) -> Result<Vec<KeyFacts>> {
    let mut out = vec![];
    let mut marker: Option<String> = None;
    loop {
        let page = match iam.list_access_keys().user_name(&user).set_marker(marker.take()).send().await {
            Ok(p) => p,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => return Ok(vec![]),
            Err(e) => return Err(aws("iam", "ListAccessKeys", e)),
        };
        for k in page.access_key_metadata() {
            let Some(id) = k.access_key_id() else { continue };
            let used = iam.get_access_key_last_used().access_key_id(id).send().await.map_err(|e| aws("iam", "GetAccessKeyLastUsed", e))?;
            let last = used.access_key_last_used();
            out.push(KeyFacts {
                account_id: account.to_string(),
                user_name: user.clone(),
                access_key_id: id.to_string(),
                active: k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
                created: k.create_date().and_then(|d| d.to_millis().ok()).map(|ms| ms.max(0) as u64).unwrap_or(0),
                last_used: last.and_then(|l| l.last_used_date()).and_then(|d| d.to_millis().ok()).map(|ms| ms.max(0) as u64),
                service: last.map(|l| l.service_name().to_string()).filter(|s| !s.is_empty()),
                region: last.map(|l| l.region().to_string()).filter(|s| !s.is_empty()),
            });
        }
        match page.is_truncated().then(|| page.marker().map(str::to_string)).flatten() {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
}

/// A rotation's state: last success, next due, open saga, quarantine, and
/// the credential keyturn recorded when only its records date it.
async fn rotation_row(store: &Store, r: &crate::config::RotationConfig, oldest_key: Option<Millis>) -> Result<RotationRow> {
    let (health, _) = store.health(&r.id).await?;
    let credential = r.source.credential_key();
    let open_saga = match store.lock_holder(&credential).await? {
        Some(id) => store.load(&id).await?.map(|s| OpenSaga {
            saga_id: s.saga.saga_id.clone(),
            status: s.saga.status.as_str().into(),
            step: s.saga.step.to_string(),
            created_at: fmt_ms(s.saga.created_at),
        }),
        None => None,
    };
    let recent = store.recent_of(&r.id, 25).await?;
    let succeeded = recent.iter().find(|s| s.saga.status == Status::Succeeded);
    let last_success = match succeeded {
        Some(s) => Some(s.saga.updated_at),
        None => store.last_success(&r.id).await?,
    };

    let mut recorded_row = None;
    let (next_due, next_due_reason) = if let Some(life) = r.source.recorded_lifetime() {
        // The credential handed over in the last success; else the one in
        // use as a person described it to a later saga.
        let recorded = succeeded
            .and_then(|s| s.saga.outcome.history.iter().rev().find(|a| a.outcome == "provided").map(|a| (a.at, s.saga.saga_id.clone())))
            .or_else(|| recent.iter().find_map(|s| s.saga.keys.old_keys.first().and_then(|k| k.created_at).map(|c| (c, s.saga.saga_id.clone()))));
        let (row, due, reason) = model::recorded_due(life, recorded);
        recorded_row = row;
        (due, reason)
    } else {
        match oldest_key {
            Some(created) => {
                let iam3 = created + IAM3_DAYS * DAY;
                match r.schedule.as_ref().map(|s| s.max_age) {
                    Some(Some(max_age)) if created + max_age.0.as_millis() as u64 <= iam3 => (
                        Some(created + max_age.0.as_millis() as u64),
                        format!("schedule max_age {}d of the oldest active key", max_age.0.as_secs() / 86_400),
                    ),
                    _ => (Some(iam3), "IAM.3's 90-day line for the oldest active key (no earlier schedule)".to_string()),
                }
            }
            None if r.schedule.as_ref().is_some_and(|s| s.before_expiry.is_some()) => {
                (None, "started before the credential expires (before_expiry): `keyturn plan --scan` says when".to_string())
            }
            None => (None, "no active key found".to_string()),
        }
    };
    let quarantine = health.quarantine.as_ref().map(|q| QuarantineRow {
        since: fmt_ms(q.began),
        reason: q.reason.clone(),
        next_attempt: fmt_ms(q.next_attempt),
        disabled: q.disabled,
    });
    Ok(RotationRow {
        rotation_id: r.id.clone(),
        source: credential,
        target: r.target.kind().to_string(),
        last_success: last_success.map(fmt_ms),
        next_due: next_due.map(fmt_ms),
        next_due_reason,
        open_saga,
        consecutive_failures: health.consecutive_failures,
        quarantine,
        scim_token: recorded_row,
    })
}
