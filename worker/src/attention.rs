//! Sagas that stopped in "needs attention" with both keys in place: watching
//! the evidence, and resolving them.
//!
//! When a rotation cannot tell which key the target holds (Auth0 kept
//! answering 5xx to the PATCH and does not reveal the key id it holds), the
//! saga stops with both keys active: deleting either could break the
//! consumer. Such a saga is *unresolved* ([`Saga::unresolved`]): it keeps the
//! credential's lock (every later request is answered with it, instead of a
//! refusal for "two unknown keys" that would end in quarantine), and it is
//! watched. Every `evidence_every` the sweeper gathers:
//!
//! * both keys' `GetAccessKeyLastUsed` (time and service),
//! * whether each key still exists (a person may have deleted one),
//! * what the target reports when read back,
//!
//! and the pure [`saga::judge`] decides: keep the new key, keep the old
//! one, or unclear. A clear verdict is announced once (`rotation.evidence`);
//! with `auto_resolve` the saga is resolved at once. A person who knows can
//! resolve it with `keyturn resolve <saga> --keep new|old`, which is refused
//! when the evidence says the opposite (unless forced). Resolving runs the
//! saga again the safe way: deactivate the key not kept, wait the grace
//! period, check its last use, delete it.

use std::sync::Arc;

use tracing::{info, instrument, warn};

use crate::connectors::Rotation;
use crate::error::{Error, Result};
use crate::notify::{self, Notifier};
use crate::queue::Queue;
use crate::saga::{self, Evidence, Keep, KeyEvidence, Saga, Verdict};
use crate::shared::{clock, Shared};
use crate::store::{SecretWrite, Stored};

/// Sagas stopped with both keys in place: the evidence check the sweeper
/// runs, `keyturn resolve`, and naming an earlier saga's key at `start`.
pub struct Attention<Q: Queue> {
    pub(crate) shared: Arc<Shared<Q>>,
    pub(crate) notifier: Notifier,
}

/// Whether the key `keep` would retire is already gone.
fn retiring_gone(ev: &Evidence, keep: Keep) -> bool {
    match keep {
        Keep::New => ev.old.iter().all(|k| !k.exists),
        Keep::Old => !ev.new.exists,
    }
}

fn since(saga: &Saga) -> u64 {
    saga.resolution.attention.as_ref().map(|a| a.since).unwrap_or(saga.updated_at)
}

impl<Q: Queue> Attention<Q> {
    /// Gather the evidence for an unresolved saga (reads only).
    pub async fn evidence(&self, rot: &Rotation, saga: &Saga) -> Result<Evidence> {
        crate::accounts::for_saga(&saga.saga_id, self.evidence_in_saga(rot, saga)).await
    }

    async fn evidence_in_saga(&self, rot: &Rotation, saga: &Saga) -> Result<Evidence> {
        let keys = rot.source.inventory().await?;
        let new_id = saga.keys.new_key.clone().unwrap_or_default();
        let new = key_evidence(rot, &keys, &new_id).await?;
        let mut old = Vec::new();
        for k in &saga.keys.old_keys {
            old.push(key_evidence(rot, &keys, &k.id).await?);
        }
        let old_ids: Vec<String> = saga.keys.old_keys.iter().map(|k| k.id.clone()).collect();
        let target = match rot.target.verify(&new_id, &old_ids).await {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(saga = %saga.saga_id, error = %e, "could not read the target back for evidence");
                None
            }
        };
        Ok(Evidence { new, old, target, consumer_service: rot.target.consumer_service().map(str::to_string) })
    }

    /// One evidence check of an unresolved saga whose check is due (called
    /// by the sweeper). Claims the check first, so one worker does it;
    /// announces a clear verdict once; resolves with `auto_resolve`.
    #[instrument(skip_all, fields(worker = %self.shared.worker_id, saga = %stored.saga.saga_id))]
    pub async fn watch_one(&self, stored: Stored) -> Result<Option<Verdict>> {
        let saga = &stored.saga;
        let Some(rot) = self.shared.rotations().get(&saga.rotation_id).cloned() else { return Ok(None) };
        let now = self.shared.now_ms();
        match self.shared.store.claim_watch(&saga.saga_id, stored.version, now, now + rot.policy.evidence_every).await {
            Ok(()) => {}
            Err(Error::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let ev = self.evidence(&rot, saga).await?;
        let verdict = saga::judge(since(saga), &ev, now);
        let Some(obs) = saga::observe(saga, verdict.clone(), &rot.policy, now) else { return Ok(None) };
        info!(keep = ?verdict.keep, reason = %verdict.reason, "evidence checked");
        if obs.announce {
            let n = notify::render_evidence(&obs.saga, &notify_context(&rot), &verdict, obs.resolve.is_some());
            self.notifier.publish(&n).await?;
        }
        let version = match self.shared.store.commit(&obs.saga, stored.version, None, SecretWrite::Keep, now, None).await {
            Ok(v) => v,
            Err(Error::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(keep) = obs.resolve {
            self.reopen_with(&obs.saga, version, keep, retiring_gone(&ev, keep), "keyturn, on clear evidence (auto_resolve)").await?;
        }
        Ok(Some(verdict))
    }

    /// A person resolves a saga that needs attention: keep the new or the
    /// old key. Refused when the evidence says the opposite, unless `force`.
    #[instrument(skip(self), fields(worker = %self.shared.worker_id))]
    pub async fn resolve(&self, saga_id: &str, keep: Keep, force: bool, by: &str) -> Result<(Saga, Verdict)> {
        let stored = self.shared.store.load(saga_id).await?.ok_or_else(|| Error::Config(format!("no saga {saga_id}")))?;
        let rot = self.shared.rotations().get(&stored.saga.rotation_id).cloned().ok_or_else(|| {
            Error::Config(format!("saga {saga_id} belongs to rotation {:?}, which the configuration does not declare", stored.saga.rotation_id))
        })?;
        // Refuse early, before any call, when there is nothing to resolve.
        saga::resolve(&stored.saga, keep, false, by, clock(self.shared.now_ms())).map_err(|e| Error::Refused { code: "NotResolvable", message: e.0 })?;
        let ev = self.evidence(&rot, &stored.saga).await?;
        let now = self.shared.now_ms();
        let verdict = saga::judge(since(&stored.saga), &ev, now);
        if saga::contradicts(keep, &verdict) && !force {
            return Err(Error::Refused {
                code: "EvidenceContradicts",
                message: format!(
                    "refusing to keep the {} key: the evidence says the target uses the other one ({}). If you know better, add --force",
                    keep.as_str(),
                    verdict.reason
                ),
            });
        }
        let next = self.reopen_with(&stored.saga, stored.version, keep, retiring_gone(&ev, keep), by).await?;
        Ok((next, verdict))
    }

    async fn reopen_with(&self, saga: &Saga, version: u64, keep: Keep, gone: bool, by: &str) -> Result<Saga> {
        let now = self.shared.now_ms();
        let next = saga::resolve(saga, keep, gone, by, clock(now)).map_err(|e| Error::Refused { code: "NotResolvable", message: e.0 })?;
        self.shared.store.reopen(&next, version, now + self.shared.timings.sweep_after.as_millis() as u64).await?;
        info!(saga = %saga.saga_id, keep = keep.as_str(), step = %next.step, "saga resolved; running again");
        // Someone (a person, or the evidence check on their behalf) waits.
        self.shared.send_next_on(&next, now, crate::queue::Lane::Priority).await;
        Ok(next)
    }

    /// Two keys at `Start`: if one was recorded by an earlier saga of the
    /// same credential, say which saga and what to do, instead of calling
    /// both keys unknown.
    pub(crate) async fn keys_of_earlier_sagas(&self, saga: &Saga, keys: &[saga::KeyRef]) -> Option<String> {
        let earlier = match self.shared.store.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "could not look up earlier sagas");
                return None;
            }
        };
        let e = earlier.into_iter().map(|s| s.saga).find(|e| {
            e.credential == saga.credential && e.saga_id != saga.saga_id && e.keys.new_key.as_ref().is_some_and(|n| keys.iter().any(|k| &k.id == n))
        })?;
        let ids = keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ");
        let new = e.keys.new_key.clone().unwrap_or_default();
        let n = keys.len();
        Some(if e.unresolved() {
            format!(
                "the credential has {n} keys ({ids}); {new} is the new key of saga {}, which needs attention with both keys in place. Resolve it first: keyturn resolve {} --keep new|old",
                e.saga_id, e.saga_id
            )
        } else {
            format!(
                "the credential has {n} keys ({ids}); {new} was created by saga {} (ended {}). Delete the key no consumer uses (check its last use), then rotate again",
                e.saga_id,
                e.status.as_str()
            )
        })
    }
}

async fn key_evidence(rot: &Rotation, keys: &[saga::KeyRef], id: &str) -> Result<KeyEvidence> {
    let listed = keys.iter().find(|k| k.id == id);
    let last_used = match listed {
        Some(_) => rot.source.last_used(id).await?,
        None => None,
    };
    Ok(KeyEvidence { id: id.to_string(), exists: listed.is_some(), last_used })
}

fn notify_context(rot: &Rotation) -> notify::OwnedContext {
    notify::OwnedContext {
        credential_kind: rot.source.kind(),
        credential: rot.source.describe(),
        target_kind: rot.target.kind(),
        target: rot.target.describe(),
    }
}
