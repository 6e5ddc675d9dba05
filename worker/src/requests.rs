//! The request API and exposed keys: the intake handler's part for
//! rotation requests (`keyturn.rotation-request.v1`, on the intake queue or
//! as `keyturn.requests` events) and AWS Health `AWS_RISK_CREDENTIALS_EXPOSED`.
//!
//! Parsing and validation are pure ([`crate::intake::parse_request`]), and
//! so is taking a running saga over ([`crate::saga::expose`]); this module
//! does the I/O around them: idempotency keys in the table, starting or
//! joining sagas, finding who owns an exposed key, the answers and notices.

use std::time::Duration;

use tracing::{info, warn};

use crate::accounts::AccountKeys;
use crate::commands::Request;
use crate::error::{Error, Result};
use crate::intake::{self, RequestTarget, RotationRequest};
use crate::notify;
use crate::queue::{Queue, Received};
use crate::saga::{self, ExposedRole, Exposure, RequestInfo, Saga};
use crate::shared::{clock, ms, Rotations, ARRIVAL_HOLD};
use crate::store::{Created, SecretWrite};
use crate::triggers::{settle, Intake, IntakeReport};

/// What an exposed key led to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Emergency {
    /// A fresh emergency saga.
    Started(String),
    /// A running saga took the exposure over (or already had).
    TookOver(String),
    /// The saga holding the credential is mid-step: try again after this.
    Busy(Duration),
    /// A person must act (the notice went out).
    Blocked(String),
    /// Nothing to rotate: the key was already rotated away, or is inactive
    /// and was deleted (or kept) at once. The notice went out.
    Settled(String),
}

impl<Q: Queue> Intake<Q> {
    /// A rotation request: answer it (a notice and an event with the
    /// request's correlation id), start or join a saga, or reject it — to the
    /// intake DLQ when the policy does not allow it, reported only when it
    /// names no configured rotation.
    pub(crate) async fn handle_request<I: Queue>(&self, intake_queue: &I, m: &Received, r: RotationRequest, report: &mut IntakeReport) -> Result<()> {
        let rots = self.shared.rotations();
        let rotation_id = match &r.target {
            RequestTarget::Rotation(id) => rots.get(id).map(|_| id.clone()),
            RequestTarget::User { account_id, user_name } => {
                let home = rots.accounts.home().await?.account.clone();
                intake::match_user(&rots.configs, &home, account_id, user_name).map(|c| c.id.clone())
            }
        };
        let Some(rotation_id) = rotation_id else {
            let why = match &r.target {
                RequestTarget::Rotation(id) => format!("no rotation with id {id:?} is configured"),
                RequestTarget::User { account_id, user_name } => format!("no rotation covers iam user {user_name} in account {account_id}"),
            };
            warn!(correlation_id = %r.correlation(), requester = %r.requester, reason = %why, "rotation request for an unknown rotation; reported");
            self.notifier.publish(&notify::render_request_answer(&r, None, None, "unknown_rotation", Some(&why))).await?;
            report.ignored.push(why);
            return intake_queue.ack(m).await;
        };
        let rot = rots.get(&rotation_id).cloned().ok_or_else(|| Error::Config(format!("rotation {rotation_id} vanished")))?;
        if let Err(why) = r.overrides.allowed_by(&rot.policy) {
            report.rejected = Some(self.refuse_request(intake_queue, m, &r, &rotation_id, why).await?);
            return Ok(());
        }
        let now = self.shared.now_ms();
        if let Some((saga_id, of)) = self.shared.store.idempotent(&r.idempotency_key, now).await? {
            if of != rotation_id {
                let why = format!("idempotency_key: already used within the idempotency window by a request for rotation {of}");
                report.rejected = Some(self.refuse_request(intake_queue, m, &r, &rotation_id, why).await?);
                return Ok(());
            }
            info!(saga = %saga_id, correlation_id = %r.correlation(), "repeated idempotency key: answered with the first request's saga");
            self.notifier.publish(&notify::render_request_answer(&r, Some(&rotation_id), Some(&saga_id), "duplicate", None)).await?;
            report.duplicates.push(saga_id);
            return intake_queue.ack(m).await;
        }
        let req = Request {
            trigger: "request".into(),
            correlation_id: Some(r.correlation().to_string()),
            info: Some(RequestInfo {
                requester: r.requester.clone(),
                reason: r.reason.clone(),
                idempotency_key: r.idempotency_key.clone(),
                sender: r.sender.clone(),
                event_account: r.event.as_ref().map(|e| e.account.clone()),
                event_source: r.event.as_ref().map(|e| e.source.clone()),
            }),
            overrides: r.overrides.clone(),
            idempotency: Some((r.idempotency_key.clone(), now + ms(self.idempotency_window))),
            ..Request::default()
        };
        let (saga_id, outcome) = match self.commands.request_with(&rotation_id, req).await? {
            Created::New(id) => {
                report.started.push(id.clone());
                (id, "started")
            }
            Created::Existing(id) => {
                // A request with the same key raced this one and won (its
                // saga carries the key), or another saga holds the credential.
                let same_key =
                    self.shared.store.load(&id).await?.and_then(|s| s.saga.origin.request).is_some_and(|i| i.idempotency_key == r.idempotency_key);
                if same_key {
                    report.duplicates.push(id.clone());
                    (id, "duplicate")
                } else {
                    report.in_flight.push(id.clone());
                    (id, "in_flight")
                }
            }
            // Requests are explicit: quarantine does not hold them back.
            Created::Skipped(why) => {
                report.ignored.push(why.clone());
                self.notifier.publish(&notify::render_request_answer(&r, Some(&rotation_id), None, "skipped", Some(&why))).await?;
                return intake_queue.ack(m).await;
            }
        };
        info!(saga = %saga_id, rotation = %rotation_id, correlation_id = %r.correlation(), requester = %r.requester, sender = ?r.sender, outcome, "rotation request answered");
        self.notifier.publish(&notify::render_request_answer(&r, Some(&rotation_id), Some(&saga_id), outcome, None)).await?;
        intake_queue.ack(m).await
    }

    /// A request the policy does not allow: to the intake DLQ with the
    /// reason, and answered with `rotation.request_rejected`.
    async fn refuse_request<I: Queue>(&self, intake_queue: &I, m: &Received, r: &RotationRequest, rotation_id: &str, why: String) -> Result<String> {
        warn!(correlation_id = %r.correlation(), rotation = %rotation_id, reason = %why, "rotation request refused; moving it to the intake dead-letter queue");
        intake_queue.dead_letter(m, &format!("invalid rotation request: {why}")).await?;
        self.notifier.publish(&notify::render_request_answer(r, Some(rotation_id), None, "rejected", Some(&why))).await?;
        Ok(why)
    }

    /// AWS reported access keys exposed. Each key is handled once per event
    /// (repeats of the event are duplicates); a key's saga that is mid-step
    /// holds the message back until its lease ends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn handle_exposed<I: Queue>(
        &self,
        intake_queue: &I,
        m: &Received,
        account_id: &str,
        event_arn: &str,
        key_ids: &[String],
        users: &[(String, String)],
        overflow: Option<String>,
        report: &mut IntakeReport,
    ) -> Result<()> {
        let seen_at = self.shared.now_ms();
        let rots = self.shared.rotations();
        let home = rots.accounts.home().await?.account.clone();
        // Owners are looked up in the event's account only (through the
        // member role there), and matched in that same account.
        let account_keys = match self.account_keys(&rots, account_id).await {
            Ok(k) => Some(k),
            Err(e) => {
                warn!(account = %account_id, error = %e, "cannot act in the exposure event's account; its keys' owners are unknown");
                None
            }
        };
        // Every worker holds ordinary work back from now (their watches
        // read the announcement) while this intake looks the keys up.
        let until = seen_at + ms(ARRIVAL_HOLD);
        let (keys, ()) =
            tokio::join!(self.owners_and_claims(account_keys.as_ref(), key_ids, &m.message_id, event_arn, seen_at), self.announce(until, false));
        let mut keys = keys?;
        for (account, user) in users {
            match self.only_active_key(&rots, &home, account, user, event_arn).await? {
                Ok(one) => {
                    let claimed = self.shared.store.claim_exposure(&one, &m.message_id, event_arn, seen_at).await?;
                    keys.push((one, Some(user.clone()), claimed));
                }
                Err(why) => report.ignored.push(why),
            }
        }
        let mut busy: Option<Duration> = None;
        // The saga list is read once per message, and only if a key has no owner.
        let mut sagas: Option<Vec<Saga>> = None;
        let mut uncovered = Vec::new();
        for (key, owner, claimed) in keys {
            if !claimed {
                info!(key = %key, event = %event_arn, "exposure of this key already handled (a repeated event)");
                report.duplicates.push(key);
                continue;
            }
            if owner.is_none() {
                if sagas.is_none() {
                    sagas = Some(self.shared.store.list().await?.into_iter().map(|s| s.saga).collect());
                }
                if let Some(why) = self.already_rotated(sagas.as_deref().unwrap_or_default(), &key, event_arn).await? {
                    report.stale += 1;
                    report.ignored.push(why);
                    continue;
                }
            }
            let cfg = owner.as_deref().and_then(|u| intake::match_user(&rots.configs, &home, account_id, u)).map(|c| c.id.clone());
            let Some(rotation_id) = cfg else {
                let deactivated = self.deactivate_uncovered(account_keys.as_ref(), account_id, &key, owner.as_deref()).await;
                report.unmatched.push((account_id.to_string(), owner.clone().unwrap_or_default(), true));
                uncovered.push((key, owner, deactivated));
                continue;
            };
            match self.emergency(&rotation_id, &key, event_arn, seen_at).await? {
                Emergency::Started(id) => {
                    warn!(saga = %id, rotation = %rotation_id, key = %key, "exposed key: emergency rotation started");
                    report.started.push(id);
                }
                Emergency::TookOver(id) => {
                    warn!(saga = %id, rotation = %rotation_id, key = %key, "exposed key: the running saga took the emergency over");
                    report.in_flight.push(id);
                }
                Emergency::Busy(wait) => busy = Some(busy.map_or(wait, |b| b.max(wait))),
                Emergency::Blocked(why) => report.ignored.push(why),
                Emergency::Settled(why) => {
                    report.stale += 1;
                    report.ignored.push(why);
                }
            }
        }
        // Read: the emergencies started are listed and hold ordinary work
        // themselves; an event that started none holds it no longer.
        self.announce(until, true).await;
        // One notice for every uncovered key of this message.
        if !uncovered.is_empty() {
            let (kind, words) = (crate::connectors::source_kind_for(intake::IAM_USER), crate::connectors::exposure_words_for(intake::IAM_USER));
            self.notifier.publish(&notify::render_exposed_unmatched_digest(account_id, &uncovered, event_arn, kind, words)).await?;
        }
        if let Some(wait) = busy {
            // Handled keys answer as duplicates of this same message, by its id.
            info!(wait_ms = wait.as_millis() as u64, "a saga of an exposed key is mid-step; the event comes back when its lease ends");
            report.retained = true;
            return intake_queue.extend(m, wait).await;
        }
        settle(intake_queue, m, overflow, report).await
    }

    /// Announce an exposure event being read until `until` (every
    /// worker's watch then holds ordinary work back), or, `read`, end that
    /// announcement. A failure is logged, never fatal: the announcement
    /// only speeds the emergency up.
    async fn announce(&self, until: saga::Millis, read: bool) {
        let store = &self.shared.store;
        let (r, what) = if read {
            (store.end_announcement(until).await, "end the exposure's announcement (ordinary work resumes within seconds)")
        } else {
            (store.announce_exposure(until).await, "announce the exposure to the other workers (ordinary work goes on until the emergency is listed)")
        };
        if let Err(e) = r {
            warn!(error = %e, "could not {what}");
        }
    }

    /// Each exposed key id: its owner (None: unknown, or no account to
    /// look in) and whether this message claims it (false: a repeated
    /// event handled it). The two are independent, so they are asked at
    /// once — one round trip, not two, before an emergency can start; a
    /// claim of a message that then fails is its own again when the
    /// message comes back.
    async fn owners_and_claims(
        &self,
        account_keys: Option<&AccountKeys>,
        key_ids: &[String],
        message_id: &str,
        event_arn: &str,
        seen_at: saga::Millis,
    ) -> Result<Vec<(String, Option<String>, bool)>> {
        let mut keys = Vec::new();
        for key in key_ids {
            let owner = async {
                match account_keys {
                    Some(k) => k.owner(key).await,
                    None => Ok(None),
                }
            };
            let (owner, claimed) = tokio::join!(owner, self.shared.store.claim_exposure(key, message_id, event_arn, seen_at));
            keys.push((key.clone(), owner?, claimed?));
        }
        Ok(keys)
    }

    /// The event names the user, not the key: the key is the user's only
    /// active key, if it has exactly one. Otherwise why not (notified).
    async fn only_active_key(
        &self,
        rots: &Rotations,
        home: &str,
        account: &str,
        user: &str,
        event_arn: &str,
    ) -> Result<std::result::Result<String, String>> {
        let active = match intake::match_user(&rots.configs, home, account, user).and_then(|c| rots.get(&c.id)) {
            Some(rot) => rot.source.inventory().await?.into_iter().filter(|k| k.active).map(|k| k.id).collect::<Vec<_>>(),
            None => Vec::new(),
        };
        match active.as_slice() {
            [one] => Ok(Ok(one.clone())),
            _ => {
                let why = format!("the event names iam user {user}, not a key, and the user has {} active keys keyturn rotates", active.len());
                warn!(account = %account, user = %user, reason = %why, "exposed credentials of a user: cannot tell which key");
                let (kind, words) = (crate::connectors::source_kind_for(intake::IAM_USER), crate::connectors::exposure_words_for(intake::IAM_USER));
                let n = notify::render_exposed_unmatched(account, "(the event names the user, not the key)", Some(user), event_arn, None, kind, words);
                self.notifier.publish(&n).await?;
                Ok(Err(why))
            }
        }
    }

    /// The access keys of `account`: the worker's own for its home
    /// account; for a member account, through the role of a rotation there
    /// (its `role_arn`, else `[aws] member_role_name`).
    async fn account_keys(&self, rots: &Rotations, account: &str) -> Result<AccountKeys> {
        let role = rots.configs.iter().filter(|r| r.source.account_id() == Some(account)).find_map(|r| r.source.role_arn().map(str::to_string));
        rots.accounts.keys(account, role.as_deref()).await
    }

    /// A key that no longer exists but that a saga of a configured rotation
    /// replaced: the exposure came after the rotation. Reported (critical:
    /// the key was public, its past use needs looking at), nothing to rotate.
    async fn already_rotated(&self, sagas: &[Saga], key: &str, event_arn: &str) -> Result<Option<String>> {
        let Some(s) = sagas.iter().find(|s| s.keys.old_keys.iter().any(|k| k.id == key) || s.keys.new_key.as_deref() == Some(key)) else {
            return Ok(None);
        };
        let Some(rot) = self.shared.rotations().get(&s.rotation_id).cloned() else { return Ok(None) };
        let why = format!("exposed key {key} no longer exists: saga {} of rotation {} replaced it", s.saga_id, s.rotation_id);
        warn!(key = %key, saga = %s.saga_id, "exposed key was already rotated away; reported");
        let n = notify::render_exposed_settled(
            &s.rotation_id,
            key,
            &why,
            event_arn,
            rot.source.kind(),
            rot.target.kind(),
            s.correlation(),
            rot.source.exposure_words(),
        );
        self.notifier.publish(&n).await?;
        Ok(Some(why))
    }

    /// An exposed key no rotation covers: deactivated only with
    /// `[exposure] deactivate_uncovered`, and only in the event's account
    /// (`keys`, where its owner was found). Reported by the caller, one
    /// critical `rotation.unmatched` per message.
    async fn deactivate_uncovered(
        &self,
        keys: Option<&AccountKeys>,
        account: &str,
        key: &str,
        owner: Option<&str>,
    ) -> Option<std::result::Result<(), String>> {
        let deactivated = match (self.deactivate_uncovered, owner, keys) {
            (true, Some(user), Some(keys)) => Some(keys.deactivate(user, key).await.map_err(|e| e.to_string())),
            _ => None,
        };
        warn!(account = %account, key = %key, user = owner.unwrap_or("(unknown)"), deactivated = ?deactivated, "exposed key that no rotation covers");
        deactivated
    }

    /// Start an emergency saga for `key` of rotation `rotation_id`, or take
    /// over the saga that holds its credential.
    async fn emergency(&self, rotation_id: &str, key: &str, event_arn: &str, seen_at: saga::Millis) -> Result<Emergency> {
        let rot = self.shared.rotations().get(rotation_id).cloned().ok_or_else(|| Error::Config(format!("no rotation {rotation_id}")))?;
        let keep = rot.policy.keep_exposed_inactive;
        for _ in 0..5 {
            // Whether a saga holds the credential, and the source's keys
            // (read only when none does): asked at once, one round trip
            // before the emergency saga is created instead of two.
            let (holder, inventory) = tokio::join!(self.shared.store.lock_holder(&rot.credential), rot.source.inventory());
            let Some(saga_id) = holder? else {
                // An exposed key that is already inactive is no consumer's:
                // no rotation (which would find two keys), just finish it.
                if let Some(k) = inventory?.into_iter().find(|k| k.id == key && !k.active) {
                    let why = if keep {
                        format!("exposed key {} is already inactive; kept for forensics (policy exposed_key = keep_inactive)", k.id)
                    } else {
                        rot.source.revoke(&k.id).await?;
                        format!("exposed key {} was already inactive; keyturn deleted it", k.id)
                    };
                    warn!(rotation = %rotation_id, key = %key, %why, "exposed key settled without a rotation");
                    let n = notify::render_exposed_settled(
                        rotation_id,
                        key,
                        &why,
                        event_arn,
                        rot.source.kind(),
                        rot.target.kind(),
                        event_arn,
                        rot.source.exposure_words(),
                    );
                    self.notifier.publish(&n).await?;
                    return Ok(Emergency::Settled(why));
                }
                let req = Request {
                    trigger: "health:exposed_key".into(),
                    correlation_id: Some(event_arn.to_string()).filter(|a| !a.is_empty()),
                    exposure: Some(Exposure {
                        key_id: key.to_string(),
                        role: ExposedRole::Old,
                        seen_at,
                        event: event_arn.to_string(),
                        keep_inactive: keep,
                        inactive_at: None,
                        deleted_at: None,
                        follow_up: false,
                    }),
                    ..Request::default()
                };
                match self.commands.request_with(rotation_id, req).await? {
                    Created::New(id) => return Ok(Emergency::Started(id)),
                    _ => continue,
                }
            };
            let Some(stored) = self.shared.store.load(&saga_id).await? else { continue };
            let now = self.shared.now_ms();
            if stored.lease_owner.is_some() && stored.lease_until > now {
                return Ok(Emergency::Busy(Duration::from_millis(stored.lease_until - now) + Duration::from_millis(500)));
            }
            match saga::expose(&stored.saga, key, seen_at, event_arn, keep, clock(now)) {
                Ok(None) => return Ok(Emergency::TookOver(saga_id)),
                Ok(Some(next)) => {
                    // Listed for the emergency watch before the write that
                    // makes it an emergency (a failed write leaves a stale
                    // entry, which the watch drops).
                    if let Err(e) = self.shared.store.list_emergency(&saga_id).await {
                        warn!(saga = %saga_id, error = %e, "could not list the emergency for the watch; a dead worker's takeover waits for its message");
                    }
                    let secret = if stored.saga.keys.secret_stored && !next.keys.secret_stored { SecretWrite::Erase } else { SecretWrite::Keep };
                    match self.shared.store.commit(&next, stored.version, None, secret, now + ms(self.shared.timings.sweep_after), None).await {
                        Ok(_) => {
                            self.shared.send_next(&next, now).await;
                            return Ok(Emergency::TookOver(saga_id));
                        }
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(saga::NotExposable(why)) => {
                    warn!(saga = %saga_id, key = %key, reason = %why, "exposed key: the saga holding the credential cannot take it over; a person must act");
                    let n = notify::render_exposed_blocked(
                        rotation_id,
                        &saga_id,
                        key,
                        &why,
                        rot.source.kind(),
                        rot.target.kind(),
                        stored.saga.correlation(),
                        rot.source.exposure_words(),
                    );
                    self.notifier.publish(&n).await?;
                    return Ok(Emergency::Blocked(why));
                }
            }
        }
        Ok(Emergency::Busy(Duration::from_secs(1)))
    }

    /// A saga whose own new key was exposed has ended: rotate again — an
    /// emergency rotation if the exposed key still exists, else an ordinary
    /// one (the request that started the first still wants a fresh key).
    pub(crate) async fn follow_up_exposure(&self, ended: &Saga) {
        let Some(e) = &ended.exposure else { return };
        let Some(rot) = self.shared.rotations().get(&ended.rotation_id).cloned() else { return };
        let exists = match rot.source.inventory().await {
            Ok(keys) => keys.iter().any(|k| k.id == e.key_id),
            Err(err) => {
                warn!(saga = %ended.saga_id, error = %err, "could not list keys for the follow-up rotation; assuming the exposed key still exists");
                true
            }
        };
        let req = Request {
            trigger: "health:exposed_key:follow_up".into(),
            correlation_id: Some(ended.correlation().to_string()),
            exposure: exists.then(|| Exposure {
                key_id: e.key_id.clone(),
                role: ExposedRole::Old,
                seen_at: e.seen_at,
                event: e.event.clone(),
                keep_inactive: rot.policy.keep_exposed_inactive,
                inactive_at: None,
                deleted_at: None,
                follow_up: false,
            }),
            ..Request::default()
        };
        match self.commands.request_with(&ended.rotation_id, req).await {
            Ok(created) => {
                warn!(saga = %ended.saga_id, ?created, exposed_key_exists = exists, "the exposed key was this saga's new key: fresh rotation requested")
            }
            Err(err) => warn!(saga = %ended.saga_id, error = %err, "could not start the follow-up rotation of an exposed new key; run keyturn rotate"),
        }
    }
}
