//! The rotation saga as a pure state machine.
//!
//! Nothing in this module does I/O or reads a clock. The engine feeds it the
//! saga as stored, the outcome of the step it just ran, the current time and
//! a jitter draw; it answers with the next saga state and whether (and when)
//! a message for the next step must be sent. That split is what lets the
//! transition rules be tested exhaustively (see the tests at the bottom and
//! `tests/` for the I/O around them).
//!
//! # Steps
//!
//! ```text
//! Start ─► IssueNew ─► ProveNew ─► PushToTarget ─► VerifyTarget ─► DisableOld ─► RetireOld ─► Finalize(Succeeded)
//!   │         │           │            │   (4xx)        │  holds old        │            │ used after switch
//!   │         │           │            ▼                ▼                   ▼            ▼
//!   │         └───────────┴──────► RevokeNew ─────► Finalize(Compensated)   Finalize(NeedsAttention)
//!   ▼                                                                        ▲
//! Finalize(Refused)                       RetireOld ──rollback──► RestoreOld ─► Finalize(RolledBack)
//! ```
//!
//! # Credentials made by a person
//!
//! Some credentials have no API (IAM Identity Center SCIM tokens): only a
//! person can create or delete them. A saga for such a source (`manual`)
//! replaces the machine steps that would call that API with *waits on a
//! person*:
//!
//! ```text
//! Start ─► AwaitNew ──`keyturn provide`──► PushToTarget ─► VerifyTarget ─► AwaitRetire ──`keyturn confirm`──► Finalize(Succeeded)
//!            │ deadline                        │ (4xx)          │ unhealthy       │ deadline
//!            ▼                                 ▼                ▼                 ▼
//!   Finalize(Compensated)            Finalize(Compensated)  Finalize(NeedsAttention)
//! ```
//!
//! A wait step sends a notice each time it runs ([`prompt`] decides which:
//! the first is `action_required`, later ones are reminders, at the deadline
//! it gives up) and re-arms itself `reminder_every` later. The person's
//! command is a transition of its own ([`provide`], [`confirm_retired`]),
//! committed like any other. Nothing is revoked automatically for such a
//! source: a rejected or unused new token is left for the person to delete,
//! and the notice says so.
//!
//! # A credential the target must be made to trust
//!
//! A SAML signing certificate is made by the source, but only a person can
//! make the target (IAM Identity Center) trust it, and the source must not
//! switch to it before. A saga with [`Saga::trust`] waits for the person
//! twice, around the source's own switch: `AwaitTrust`, `SwitchNew`,
//! `AwaitSignIn`, then `RemoveOld` or `SwitchBack` (see `trust.rs`).
//!
//! # The compensation rule
//!
//! The new credential is revoked only while no consumer can hold it: the
//! target was never sent it, rejected it outright (a definite 4xx), or
//! verification shows the target still holds the old credential. Once the
//! target *may* hold the new credential, failures roll forward or stop in
//! `NeedsAttention` with both credentials active — Auth0's secret is
//! write-only, so the old one can never be put back. [`Saga::may_revoke_new`]
//! is the single predicate for this and every path that plans `RevokeNew`
//! goes through it.

use serde::{Deserialize, Serialize};

/// The machine never reads the clock: it is handed `now` in a [`Clock`].
pub use crate::clock::Millis;

mod compensate;
mod decide;
mod evidence;
mod expose;
mod record;
mod step;
mod triage;
mod trust;

pub use compensate::*;
pub use decide::*;
pub use evidence::*;
pub use expose::*;
pub use record::*;
pub use step::*;
pub use triage::*;
pub use trust::confirm_trust;

/// `7d`, `36h`, `90s` — for messages.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests;
