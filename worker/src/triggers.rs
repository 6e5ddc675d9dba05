//! Triggers at work: the intake handler, the key-age scan and `plan`.
//!
//! The pure half (event parsing, finding → rotation matching) is in
//! [`crate::intake`]; this is the I/O half. Dedupe rules:
//! * a credential with a saga in flight gets no second one (the lock in
//!   [`Commands::request_with`] answers the running saga);
//! * an imported IAM.3 finding starts a rotation only if the user's active
//!   keys are really past the control's age *now* (90 days, or the finding's
//!   `maxAccessKeyAge` parameter) — decided from `ListAccessKeys`, not from
//!   the finding's dates: Security Hub keeps one finding per control and
//!   resource, so a re-import after a rotation, and the same finding failing
//!   again 90 days later, both carry the original `FirstObservedAt`. A
//!   custom action, being an explicit request, is not age-checked;
//! * an IAM user with no configured rotation is reported once
//!   (`rotation.unmatched`) and only counted on re-imports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, instrument, warn};

use crate::commands::{Commands, Request};
use crate::error::Result;
use crate::intake::{self, Decision, Event};
use crate::notify::{self, Notifier};
use crate::queue::{Queue, Received};
use crate::saga::{FindingKind, FindingRef, Millis};
use crate::shared::{AgeClock, Shared};
use crate::store::Created;

/// Intake handling: events and requests from the intake queue, the
/// key-age scan, `plan`. Its request-API and exposed-key part is in
/// [`crate::requests`].
pub struct Intake<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    /// Every trigger starts its sagas through the commands.
    pub(crate) commands: Arc<Commands<Q>>,
    /// A change event of a console handover secret is handed to it.
    pub(crate) handovers: Arc<crate::handover::Handovers<Q>>,
    pub(crate) notifier: Notifier,
    /// `[requests] idempotency_window`.
    pub(crate) idempotency_window: Duration,
    /// `[exposure] deactivate_uncovered`.
    pub(crate) deactivate_uncovered: bool,
    /// "Now" for key-age decisions (intake of IAM.3 findings).
    pub(crate) age_clock: Arc<AgeClock>,
    /// Per rotation: when its source was last asked when its credential
    /// expires, and the answer ([`Intake::scan_expiry`]).
    pub(crate) expiries: std::sync::Mutex<HashMap<String, (Millis, Option<Millis>)>>,
}

/// The saga trigger of imported findings: which Security Hub sent them.
fn imported_trigger(findings: &[intake::Finding]) -> &'static str {
    match findings.first().map(|f| f.format) {
        Some(intake::Format::Ocsf) => "securityhub:imported_v2",
        _ => "securityhub:imported",
    }
}

/// What an intake message led to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeReport {
    /// Sagas started.
    pub started: Vec<String>,
    /// Requests that found a saga already in flight.
    pub in_flight: Vec<String>,
    /// Stale findings (rotated since they were observed).
    pub stale: usize,
    /// Users without a rotation: (account, user, first time seen).
    pub unmatched: Vec<(String, String, bool)>,
    /// Findings or events ignored, with reasons.
    pub ignored: Vec<String>,
    /// Set when the message was rejected to the intake DLQ.
    pub rejected: Option<String>,
    /// A change of a handover secret, and what came of it.
    pub handover: Option<crate::handover::Looked>,
    /// Requests answered by an idempotency key's saga; exposed keys already
    /// handled (a repeated event).
    pub duplicates: Vec<String>,
    /// The message was held back (not acknowledged) to come back later.
    pub retained: bool,
}

/// A rotation's key age, as the scan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    pub rotation_id: String,
    pub key_id: String,
    pub age: Duration,
    pub max_age: Duration,
    pub due: bool,
    /// What the age is counted from.
    pub basis: AgeBasis,
}

/// What a [`ScanItem`]'s age is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeBasis {
    /// The credential's creation time, as the source lists it.
    Created,
    /// keyturn's last successful rotation of it (the source tells no age).
    LastRotation,
    /// Neither: the source tells no age and keyturn never rotated it, so
    /// `max_age` starts nothing until a first rotation by hand.
    Unknown,
}

/// A rotation's credential expiry, as the scan sees it
/// (`[rotation.schedule] before_expiry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryItem {
    pub rotation_id: String,
    /// When the credential in use expires.
    pub expires_at: Millis,
    pub before_expiry: Duration,
    /// `expires_at - before_expiry`: when the rotation starts.
    pub starts_at: Millis,
    pub due: bool,
    /// When the source gave this answer.
    pub asked_at: Millis,
}

/// How often the scan asks a source when its credential expires (an answer
/// that says the rotation is due is asked again, so a stale one never
/// starts a rotation).
pub const EXPIRY_ASK_EVERY: Millis = 86_400_000;

/// The end of an intake message: to the DLQ when it named too many users
/// or keys (the first were acted on), else acknowledged.
pub(crate) async fn settle<I: Queue>(intake_queue: &I, m: &Received, overflow: Option<String>, report: &mut IntakeReport) -> Result<()> {
    match overflow {
        Some(why) => {
            intake_queue.dead_letter(m, &why).await?;
            report.rejected = Some(why);
            Ok(())
        }
        None => intake_queue.ack(m).await,
    }
}

/// How an intake event asks for rotations: the saga's trigger, whether
/// it is an imported finding (checked against the keys' real age), whether
/// it is automatic (quarantine holds it back).
struct Trigger<'a> {
    name: &'a str,
    imported: bool,
    automatic: bool,
}

fn days(d: Duration) -> String {
    format!("{:.1}d", d.as_secs_f64() / 86_400.0)
}

impl<Q: Queue> Intake<Q> {
    /// Handle one intake message (ack or dead-letter included).
    #[instrument(skip_all, fields(worker = %self.shared.worker_id, message_id = %m.message_id))]
    pub async fn handle_intake<I: Queue>(&self, intake_queue: &I, m: &Received) -> Result<IntakeReport> {
        let mut report = IntakeReport::default();
        // A handover secret changed (CloudTrail, Secrets Manager): look at it.
        if let Some(looked) = self.handovers.handover_event(intake_queue, m).await? {
            report.rejected = if let crate::handover::Looked::Rejected(why) = &looked { Some(why.clone()) } else { None };
            report.handover = Some(looked);
            return Ok(report);
        }
        let rotations = self.shared.rotations();
        let checked = match intake::parse_message(&m.body) {
            Ok((event, origin)) => match &event {
                Event::Request(_) => {
                    intake::sender_allowed(rotations.allowed_senders.as_deref(), m.sender.as_deref(), origin.as_ref()).map(|_| (event, origin))
                }
                _ => intake::check_served(&event, origin.as_ref(), &rotations.served_accounts().await?).map(|_| (event, origin)),
            },
            Err(e) => Err(e),
        };
        let (mut event, origin) = match checked {
            Ok(e) => e,
            Err(e) => {
                let why = e.to_string();
                let sender = m.sender.as_deref().map(|s| crate::connectors::check::one_line(s, 128));
                error!(reason = %why, sender = ?sender, "rejected intake event; moving it to the intake dead-letter queue");
                intake_queue.dead_letter(m, &why).await?;
                report.rejected = Some(why);
                return Ok(report);
            }
        };
        // A message names at most MAX_ITEMS users or keys: the first are
        // acted on, then the message goes to the DLQ with the count.
        let overflow = intake::bound(&mut event, intake::MAX_ITEMS);
        if let Some(why) = &overflow {
            warn!(reason = %why, "intake message names too many users or keys; acting on the first only");
        }
        let event = match event {
            Event::Request(mut r) => {
                r.sender = m.sender.clone();
                r.event = origin;
                self.handle_request(intake_queue, m, r, &mut report).await?;
                return Ok(report);
            }
            Event::KeyExposed { account_id, event_arn, key_ids, users } => {
                // Urgent: its IAM calls (the key's owner, the user's keys,
                // an uncovered key's deactivation) have a rate of their own.
                crate::accounts::urgently(true, self.handle_exposed(intake_queue, m, &account_id, &event_arn, &key_ids, &users, overflow, &mut report))
                    .await?;
                return Ok(report);
            }
            other => other,
        };
        let (trigger, imported) = match &event {
            Event::Request(_) | Event::KeyExposed { .. } => unreachable!("handled above"),
            Event::FindingsImported(fs) => (imported_trigger(fs).to_string(), true),
            Event::CustomAction { action_name, .. } => (format!("securityhub:custom_action:{action_name}"), false),
            Event::Notice { kind, .. } => (kind.trigger.to_string(), false),
        };
        let automatic = imported || matches!(event, Event::Notice { .. });
        let mut last_success = HashMap::new();
        let home = rotations.accounts.home().await?.account.clone();
        let mut unmatched_new = Vec::new();
        let t = Trigger { name: &trigger, imported, automatic };
        for d in intake::decide(&event, &rotations.configs, &home) {
            self.act_on(d, &t, &mut last_success, &mut unmatched_new, &mut report).await?;
        }
        // One notice per message for the users seen for the first time.
        if !unmatched_new.is_empty() {
            let kind = crate::connectors::source_kind_for(intake::IAM_USER);
            self.notifier.publish(&notify::render_unmatched_digest(&unmatched_new, kind)).await?;
        }
        settle(intake_queue, m, overflow, &mut report).await?;
        Ok(report)
    }

    /// Act on one decision about an event: start (or join) a rotation,
    /// or record why not.
    async fn act_on(
        &self,
        d: Decision,
        t: &Trigger<'_>,
        last_success: &mut HashMap<String, Option<Millis>>,
        unmatched_new: &mut Vec<(String, String, String)>,
        report: &mut IntakeReport,
    ) -> Result<()> {
        match d {
            Decision::Rotate { rotation_id, finding, user } => {
                if t.imported {
                    if let Some(reason) = self.finding_not_due(&rotation_id, &finding).await? {
                        info!(finding = %finding.id, rotation = %rotation_id, %reason, "finding is stale, nothing to do");
                        report.stale += 1;
                        return Ok(());
                    }
                }
                let req = Request {
                    trigger: t.name.to_string(),
                    findings: vec![finding.reference()],
                    delay: Duration::ZERO,
                    automatic: t.imported,
                    ..Request::default()
                };
                match self.commands.request_with(&rotation_id, req).await? {
                    Created::New(id) => {
                        let matched_by = finding.iam3.map(|f| f.to_string()).unwrap_or_else(|| "custom action".into());
                        info!(saga = %id, rotation = %rotation_id, user = %user, finding = %finding.id, region = %finding.region, %matched_by, "rotation started from a finding");
                        report.started.push(id);
                    }
                    Created::Existing(id) => {
                        info!(saga = %id, rotation = %rotation_id, finding = %finding.id, "rotation already in flight; nothing new started");
                        report.in_flight.push(id);
                    }
                    Created::Skipped(reason) => {
                        info!(rotation = %rotation_id, finding = %finding.id, %reason, "finding not acted on");
                        report.ignored.push(reason);
                    }
                }
            }
            Decision::Expiring { rotation_id, event_arn, observed_at } => {
                // AWS repeats the notice until the token is gone; one sent
                // before the last success is about the token already replaced.
                if self.stale(&rotation_id, observed_at, last_success).await? {
                    info!(event = %event_arn, rotation = %rotation_id, "expiry notice from before the last successful rotation; nothing to do");
                    report.stale += 1;
                    return Ok(());
                }
                let req = Request { trigger: t.name.to_string(), automatic: t.automatic, ..Request::default() };
                match self.commands.request_with(&rotation_id, req).await? {
                    Created::New(id) => {
                        info!(saga = %id, rotation = %rotation_id, event = %event_arn, "rotation started from an AWS Health notice");
                        report.started.push(id);
                    }
                    Created::Existing(id) => {
                        info!(saga = %id, rotation = %rotation_id, "rotation already in flight; nothing new started");
                        report.in_flight.push(id);
                    }
                    Created::Skipped(reason) => {
                        info!(rotation = %rotation_id, %reason, "expiry notice not acted on");
                        report.ignored.push(reason);
                    }
                }
            }
            Decision::Ignore { finding_id, reason } => {
                info!(finding = %finding_id, %reason, "finding ignored");
                report.ignored.push(reason);
            }
            Decision::Unmatched { finding_id, account_id, user } => {
                let first = self.shared.store.record_unmatched(&account_id, &user, &finding_id, self.shared.now_ms()).await?;
                warn!(account = %account_id, user = %user, finding = %crate::connectors::check::one_line(&finding_id, 256), first, "finding for an IAM user no rotation covers");
                if first {
                    unmatched_new.push((account_id.clone(), user.clone(), finding_id));
                }
                report.unmatched.push((account_id, user, first));
            }
        }
        Ok(())
    }

    /// Why an imported IAM.3 finding needs no rotation now (`None`: it
    /// does). A saga in flight answers first (the request joins it); then
    /// the user's active keys are listed and compared with the control's
    /// age at `age_clock`: no active key at or past it is a stale
    /// finding (a re-import after a rotation, or one the control has not
    /// re-evaluated yet).
    async fn finding_not_due(&self, rotation_id: &str, finding: &intake::Finding) -> Result<Option<String>> {
        let Some(rot) = self.shared.rotations().get(rotation_id).cloned() else { return Ok(None) };
        if self.shared.store.lock_holder(&rot.credential).await?.is_some() {
            return Ok(None);
        }
        let max_days = finding.max_key_age_days.unwrap_or(intake::IAM3_DEFAULT_MAX_AGE_DAYS);
        let max_age = max_days * 86_400_000;
        let now = self.age_clock.now();
        let keys = match rot.source.inventory().await {
            Ok(keys) => keys,
            // Cannot even look (e.g. the member-account role cannot be
            // assumed): start the saga, which stops at `start` before any
            // change and says why on the topic, rather than dropping the
            // finding here.
            Err(e) if !e.is_retryable() => {
                warn!(rotation = %rotation_id, error = %e, "cannot list the user's keys to check their age; starting the saga so the failure is reported");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let active: Vec<_> = keys.iter().filter(|k| k.active).collect();
        if active.iter().any(|k| k.created_at.is_none_or(|c| now.saturating_sub(c) >= max_age)) {
            return Ok(None);
        }
        let ages = active
            .iter()
            .map(|k| format!("{} is {}", k.id, days(Duration::from_millis(now.saturating_sub(k.created_at.unwrap_or(now))))))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Some(if active.is_empty() {
            format!("{} has no active access key", rot.source.describe())
        } else {
            format!("no active key is {max_days} days old or older ({ages})")
        }))
    }

    /// Whether an event predates the rotation's last success (AWS Health
    /// repeats its notices). The last success is a table scan, so it is
    /// looked up once per rotation per event.
    async fn stale(&self, rotation_id: &str, observed_at: Option<Millis>, last_success: &mut HashMap<String, Option<Millis>>) -> Result<bool> {
        let Some(seen) = observed_at else { return Ok(false) };
        let done = match last_success.get(rotation_id) {
            Some(d) => *d,
            None => {
                let d = self.shared.store.last_success(rotation_id).await?;
                last_success.insert(rotation_id.to_string(), d);
                d
            }
        };
        Ok(done.is_some_and(|done| done > seen))
    }

    /// Key age of every rotation with a `[rotation.schedule]` (read-only).
    pub async fn scan_keys(&self, now: Millis) -> Result<Vec<ScanItem>> {
        let mut out = Vec::new();
        let rots = self.shared.rotations();
        for cfg in &rots.configs {
            let (Some(max_age), Some(rot)) = (cfg.schedule.as_ref().and_then(|s| s.max_age), rots.get(&cfg.id)) else { continue };
            if !rot.source.tells_age() {
                let item = |age: Duration, basis| ScanItem {
                    rotation_id: cfg.id.clone(),
                    key_id: "the current credential".into(),
                    age,
                    max_age: max_age.0,
                    due: basis == AgeBasis::LastRotation && age >= max_age.0,
                    basis,
                };
                out.push(match self.shared.store.last_success(&cfg.id).await? {
                    Some(done) => item(Duration::from_millis(now.saturating_sub(done)), AgeBasis::LastRotation),
                    None => item(Duration::ZERO, AgeBasis::Unknown),
                });
                continue;
            }
            let keys = rot.source.inventory().await?;
            let oldest = keys.iter().filter(|k| k.active).filter_map(|k| k.created_at.map(|c| (k, c))).min_by_key(|(_, c)| *c);
            if let Some((k, created)) = oldest {
                let age = Duration::from_millis(now.saturating_sub(created));
                out.push(ScanItem {
                    rotation_id: cfg.id.clone(),
                    key_id: k.id.clone(),
                    age,
                    max_age: max_age.0,
                    due: age >= max_age.0,
                    basis: AgeBasis::Created,
                });
            }
        }
        Ok(out)
    }

    /// When the credential of every rotation with a `before_expiry` expires
    /// (read-only). A source is asked at most every [`EXPIRY_ASK_EVERY`] by
    /// the engine's clock, or again when its last answer makes the rotation
    /// due. A source that cannot answer is skipped with a warning (the other
    /// rotations are still scanned).
    pub async fn scan_expiry(&self, now: Millis) -> Vec<ExpiryItem> {
        let mut out = Vec::new();
        let rots = self.shared.rotations();
        for cfg in &rots.configs {
            let (Some(before), Some(rot)) = (cfg.schedule.as_ref().and_then(|s| s.before_expiry), rots.get(&cfg.id)) else { continue };
            let before_ms = before.0.as_millis() as u64;
            let known = self.expiries.lock().unwrap_or_else(|p| p.into_inner()).get(&cfg.id).copied();
            let (asked_at, expires) = match known {
                Some((asked, exp)) if now >= asked && now - asked < EXPIRY_ASK_EVERY && exp.is_none_or(|e| now < e.saturating_sub(before_ms)) => {
                    (asked, exp)
                }
                _ => match rot.source.expires_at().await {
                    Ok(exp) => {
                        self.expiries.lock().unwrap_or_else(|p| p.into_inner()).insert(cfg.id.clone(), (now, exp));
                        (now, exp)
                    }
                    Err(e) => {
                        warn!(rotation = %cfg.id, error = %e, "cannot read when the credential expires");
                        continue;
                    }
                },
            };
            if let Some(expires_at) = expires {
                let starts_at = expires_at.saturating_sub(before_ms);
                out.push(ExpiryItem { rotation_id: cfg.id.clone(), expires_at, before_expiry: before.0, starts_at, due: now >= starts_at, asked_at });
            }
        }
        out
    }

    /// The scheduled scan: start every due rotation, each after a random
    /// delay up to `jitter`. Answers what it started.
    #[instrument(skip(self), fields(worker = %self.shared.worker_id))]
    pub async fn scan_and_start(&self, jitter: Duration) -> Result<Vec<(String, Created)>> {
        let mut started = Vec::new();
        for item in self.scan_expiry(self.shared.now_ms()).await.into_iter().filter(|i| i.due) {
            // A rotation that ended since the source answered has replaced
            // the credential that answer was about: ask again next scan.
            if self.shared.store.last_success(&item.rotation_id).await?.is_some_and(|done| done >= item.asked_at) {
                continue;
            }
            let delay = Duration::from_millis((jitter.as_millis() as f64 * fastrand::f64()) as u64);
            let trigger = format!("schedule:before_expiry {}", days(item.before_expiry));
            let created =
                self.commands.request_with(&item.rotation_id, Request { trigger, findings: vec![], delay, automatic: true, ..Request::default() }).await?;
            info!(rotation = %item.rotation_id, expires = %crate::clock::fmt_ms(item.expires_at), ?created, delay_s = delay.as_secs(), "credential expires within before_expiry");
            started.push((item.rotation_id, created));
        }
        for item in self.scan_keys(self.shared.now_ms()).await?.into_iter().filter(|i| i.due) {
            let delay = Duration::from_millis((jitter.as_millis() as f64 * fastrand::f64()) as u64);
            let req =
                Request { trigger: format!("schedule:max_age {}", days(item.max_age)), findings: vec![], delay, automatic: true, ..Request::default() };
            let created = self.commands.request_with(&item.rotation_id, req).await?;
            info!(rotation = %item.rotation_id, key = %item.key_id, age = %days(item.age), ?created, delay_s = delay.as_secs(), "key past max_age");
            started.push((item.rotation_id, created));
        }
        Ok(started)
    }

    /// What a rotation would do, for `plan`.
    async fn describe_plan(&self, rotation_id: &str, findings: &[FindingRef]) -> Result<Vec<String>> {
        let Some(rot) = self.shared.rotations().get(rotation_id).cloned() else { return Ok(vec![format!("rotation {rotation_id}: not configured")]) };
        if let Some(saga) = self.shared.store.lock_holder(&rot.credential).await? {
            if self.shared.store.load(&saga).await?.is_some_and(|s| s.saga.unresolved()) {
                return Ok(vec![format!(
                    "rotation {rotation_id}: nothing would start: saga {saga} needs attention with both keys in place and holds the credential; resolve it with keyturn resolve {saga} --keep new|old"
                )]);
            }
            return Ok(vec![format!("rotation {rotation_id}: nothing to do, saga {saga} is already in flight")]);
        }
        if let Err(reason) = crate::quarantine::admits(&self.shared.store.health(rotation_id).await?.0, self.shared.now_ms()) {
            return Ok(vec![format!("rotation {rotation_id}: automatic triggers held back: {reason}")]);
        }
        let policy = &rot.policy;
        let mut lines = vec![format!("rotation {rotation_id}: would start a saga")];
        if rot.source.by_hand().is_some() {
            lines.push(format!(
                "  ask a person (rotation.action_required on the topic, reminders every {}, deadline {}) to generate a new {} and hand it over with `keyturn provide`",
                crate::saga::human_ms(policy.reminder_every),
                crate::saga::human_ms(policy.person_deadline),
                rot.source.describe()
            ));
            lines.push(format!("  test it in {} (Test connection); save it only if the test passes; check the provisioning job", rot.target.describe()));
            lines.push("  ask the person to delete the old token and confirm with `keyturn confirm`".into());
            return Ok(lines);
        }
        if let Some(location) = rot.source.location().await? {
            lines.push(format!("  acting in {location}"));
        }
        let keys = match rot.source.inventory().await {
            Ok(keys) => keys,
            Err(e) if !e.is_retryable() => {
                lines.push(format!("  would fail at start, before any change (and notify): {e}"));
                return Ok(lines);
            }
            Err(e) => return Err(e),
        };
        let fmt_keys = keys.iter().map(|k| format!("{} ({})", k.id, if k.active { "active" } else { "inactive" })).collect::<Vec<_>>().join(", ");
        if keys.len() >= 2 {
            lines.push(format!("  would be refused: {} already has two keys ({fmt_keys})", rot.source.describe()));
            return Ok(lines);
        }
        lines.push(format!("  create a new key for {} (keys now: {})", rot.source.describe(), if fmt_keys.is_empty() { "none".into() } else { fmt_keys }));
        lines.push("  prove it authenticates (an IAM key: sts:GetCallerIdentity; a client secret: a token with it)".into());
        lines.push(format!("  patch {} with the new key, then verify it", rot.target.describe()));
        for k in &keys {
            lines.push(format!(
                "  deactivate {} (a credential that cannot be deactivated stays valid), then delete it after a {} grace period",
                k.id,
                days(Duration::from_millis(policy.grace_period))
            ));
        }
        for f in findings {
            let region = f.region.as_deref().unwrap_or("the worker's region");
            lines.push(match f.kind {
                FindingKind::V1 => format!("  mark finding {} NOTIFIED, then RESOLVED on success (BatchUpdateFindings in {region})", f.id),
                FindingKind::V2 => format!("  mark finding {} In Progress, then Resolved on success (BatchUpdateFindingsV2 in {region})", f.id),
            });
        }
        Ok(lines)
    }

    /// Dry run for an event: what would start, be created, patched, retired.
    /// Reads IAM and the table; writes nothing.
    pub async fn plan_event(&self, body: &str) -> Result<Vec<String>> {
        let event = match intake::parse(body) {
            Ok(e) => e,
            Err(e) => return Ok(vec![format!("rejected: {e} (would go to the intake dead-letter queue)")]),
        };
        match &event {
            Event::Request(r) => {
                let named = match &r.target {
                    intake::RequestTarget::Rotation(id) => Some(id.clone()),
                    intake::RequestTarget::User { account_id, user_name } => {
                        let rots = self.shared.rotations();
                        let home = rots.accounts.home().await?.account.clone();
                        intake::match_user(&rots.configs, &home, account_id, user_name).map(|c| c.id.clone())
                    }
                };
                let Some(id) = named else {
                    return Ok(vec!["rotation request for no configured rotation: would be reported as rotation.request_rejected".into()]);
                };
                let mut out =
                    vec![format!("rotation request from {} (idempotency key {}, correlation id {})", r.requester, r.idempotency_key, r.correlation())];
                out.extend(self.describe_plan(&id, &[]).await?);
                return Ok(out);
            }
            Event::KeyExposed { key_ids, users, .. } => {
                let mut out: Vec<String> = key_ids.iter().map(|k| format!("exposed key {k}: emergency rotation of the rotation that covers its user (no grace period, no usage gate), else reported as rotation.unmatched")).collect();
                out.extend(
                    users.iter().map(|(a, u)| format!("exposed credentials of iam user {u} in account {a}: emergency rotation of its only active key")),
                );
                return Ok(out);
            }
            _ => {}
        }
        let imported = matches!(event, Event::FindingsImported(_));
        let mut out = Vec::new();
        let mut last_success = HashMap::new();
        let rotations = self.shared.rotations();
        let home = rotations.accounts.home().await?.account.clone();
        for d in intake::decide(&event, &rotations.configs, &home) {
            match d {
                Decision::Rotate { rotation_id, finding, .. } => {
                    if imported {
                        if let Some(reason) = self.finding_not_due(&rotation_id, &finding).await? {
                            out.push(format!("rotation {rotation_id}: nothing to do for finding {}: {reason}", finding.id));
                            continue;
                        }
                    }
                    out.extend(self.describe_plan(&rotation_id, &[finding.reference()]).await?);
                }
                Decision::Expiring { rotation_id, observed_at, .. } => {
                    if self.stale(&rotation_id, observed_at, &mut last_success).await? {
                        out.push(format!("rotation {rotation_id}: nothing to do, rotated after this notice was sent"));
                        continue;
                    }
                    out.extend(self.describe_plan(&rotation_id, &[]).await?);
                }
                Decision::Ignore { finding_id, reason } => out.push(format!("ignored {finding_id}: {reason}")),
                Decision::Unmatched { account_id, user, .. } => {
                    out.push(format!("unmatched: iam user {user} in account {account_id} has no rotation (reported once as rotation.unmatched)"))
                }
            }
        }
        Ok(out)
    }

    /// Dry run of the scheduled scan.
    pub async fn plan_scan(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.scan_expiry(self.shared.now_ms()).await {
            let when = format!("{} before the credential in use expires {}", days(item.before_expiry), crate::clock::fmt_date(item.expires_at));
            if item.due {
                out.push(format!("{}: starts now ({when})", item.rotation_id));
                out.extend(self.describe_plan(&item.rotation_id, &[]).await?);
            } else {
                out.push(format!("{}: starts {} ({when})", item.rotation_id, crate::clock::fmt_date(item.starts_at)));
            }
        }
        for item in self.scan_keys(self.shared.now_ms()).await? {
            match item.basis {
                AgeBasis::Unknown => {
                    out.push(format!(
                        "{}: the source tells no age and keyturn has not rotated it yet: max_age {} counts from the first rotation (keyturn rotate {})",
                        item.rotation_id,
                        days(item.max_age),
                        item.rotation_id
                    ));
                    continue;
                }
                AgeBasis::LastRotation => {
                    out.push(format!(
                        "{}: last rotated by keyturn {} ago (the source tells no age); max_age {}: {}",
                        item.rotation_id,
                        days(item.age),
                        days(item.max_age),
                        if item.due { "starts now" } else { "nothing to do" }
                    ));
                    if item.due {
                        out.extend(self.describe_plan(&item.rotation_id, &[]).await?);
                    }
                    continue;
                }
                AgeBasis::Created => {}
            }
            if item.due {
                out.push(format!("{}: key {} is {} old, past max_age {}", item.rotation_id, item.key_id, days(item.age), days(item.max_age)));
                out.extend(self.describe_plan(&item.rotation_id, &[]).await?);
            } else {
                out.push(format!(
                    "{}: key {} is {} old, under max_age {}: nothing to do",
                    item.rotation_id,
                    item.key_id,
                    days(item.age),
                    days(item.max_age)
                ));
            }
        }
        if out.is_empty() {
            out.push("no rotation has a [rotation.schedule] max_age or before_expiry, or none has an active key or a known expiry".into());
        }
        Ok(out)
    }
}
