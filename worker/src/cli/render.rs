//! Output: a saga's timeline, following a saga live, the `--json`
//! documents.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::exit;
use crate::clock::fmt_ms;
use crate::saga::{Saga, Status};
use crate::store::Stored;

/// Where a command's output goes: text for a person, or (`--json`) one
/// JSON document and no text.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
}

/// Human output, silenced when the command was asked for `--json`:
/// `say!(out, "format", args…)`.
macro_rules! say {
    ($out:expr, $($t:tt)*) => {
        if !$out.json {
            println!($($t)*);
        }
    };
}
pub(super) use say;

/// With `--json`, print the saga's document after a command: `saga_id`,
/// `exit_code` and `saga` (the record `status --json` prints). The schema
/// is stable: fields may be added, none renamed or removed.
pub(super) async fn finish(out: Out, store: &crate::store::Store, saga_id: &str, code: i32) -> anyhow::Result<i32> {
    if out.json {
        let saga = store.load(saga_id).await?.map(|s| s.saga);
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"saga_id": saga_id, "exit_code": code, "saga": saga}))?);
    }
    Ok(code)
}

pub(super) fn quarantine_line(h: &crate::quarantine::Health) -> String {
    match &h.quarantine {
        None => "not quarantined".into(),
        Some(q) if q.disabled => format!("DISABLED after quarantine (reason {}, since {}); `keyturn release` lifts it", q.reason, fmt_ms(q.began)),
        Some(q) => format!("QUARANTINED (reason {}, since {}); next automatic attempt {}", q.reason, fmt_ms(q.began), fmt_ms(q.next_attempt)),
    }
}

fn attempt_line(a: &crate::saga::Attempt) -> String {
    let mut line = format!("  {}  {:<15} #{:<2} {}", fmt_ms(a.at), a.step.as_str(), a.attempt, a.outcome);
    if let Some(c) = &a.code {
        line.push_str(&format!("  {c}: {}", a.message.as_deref().unwrap_or("")));
    }
    line
}

/// The saga's timeline as text.
pub fn timeline(s: &Stored) -> String {
    let g = &s.saga;
    let mut out = format!(
        "saga {}  rotation {}  status {}  step {}\n  trigger {}  started {}  updated {}\n",
        g.saga_id,
        g.rotation_id,
        g.status.as_str(),
        g.step,
        g.trigger,
        fmt_ms(g.created_at),
        fmt_ms(g.updated_at)
    );
    out.push_str(&format!(
        "  old key(s): {}  new key: {}  target: {}\n",
        if g.keys.old_keys.is_empty() { "none".into() } else { g.keys.old_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ") },
        g.keys.new_key.as_deref().unwrap_or("none"),
        g.effects.target.as_str()
    ));
    if let Some(r) = &g.origin.request {
        out.push_str(&format!(
            "  requested by {} ({}), idempotency key {}, correlation id {}\n",
            r.requester,
            r.reason,
            r.idempotency_key,
            g.correlation()
        ));
    }
    if let Some(e) = &g.exposure {
        let at = |t: Option<u64>| t.map(fmt_ms).unwrap_or_else(|| "no".into());
        out.push_str(&format!(
            "  EXPOSED key {} ({} key): event seen {}, inactive {}, deleted {}{}\n",
            e.key_id,
            if e.role == crate::saga::ExposedRole::Old { "old" } else { "new" },
            fmt_ms(e.seen_at),
            at(e.inactive_at),
            at(e.deleted_at),
            if e.follow_up { "; a fresh rotation follows" } else { "" }
        ));
    }
    if let Some(f) = &g.outcome.failure {
        out.push_str(&format!("  failure at {}: {}: {}\n", f.step, f.code, f.message));
    }
    for c in &g.outcome.compensations {
        out.push_str(&format!("  compensation: {c}\n"));
    }
    if let (true, Some(a)) = (g.unresolved(), &g.resolution.attention) {
        out.push_str(&format!(
            "  needs attention since {}, holding the credential; evidence checks: {}, next {}\n",
            fmt_ms(a.since),
            a.checks,
            fmt_ms(a.next_check)
        ));
        match &a.verdict {
            Some(v) => out.push_str(&format!(
                "  evidence ({}): {} -> {}\n",
                fmt_ms(v.at),
                v.reason,
                v.keep.map(|k| format!("keyturn resolve {} --keep {}", g.saga_id, k.as_str())).unwrap_or_else(|| "unclear; keyturn keeps watching".into())
            )),
            None => out.push_str(&format!("  evidence: not checked yet; keyturn resolve {} --keep new|old if you know\n", g.saga_id)),
        }
    }
    for a in &g.outcome.history {
        out.push_str(&attempt_line(a));
        out.push('\n');
    }
    out
}

/// Print a saga's steps as they happen until it ends; exit code 0 only on success.
pub async fn follow(out: Out, store: &crate::store::Store, saga_id: &str, timeout: Duration) -> anyhow::Result<i32> {
    follow_until(out, store, saga_id, timeout, |_| false).await
}

/// Like [`follow`], but also stop (exit 0) as soon as `enough` holds.
pub async fn follow_until(out: Out, store: &crate::store::Store, saga_id: &str, timeout: Duration, enough: impl Fn(&Saga) -> bool) -> anyhow::Result<i32> {
    let start = Instant::now();
    let mut printed = 0;
    loop {
        let s = store.load(saga_id).await?.with_context(|| format!("no saga {saga_id}"))?;
        for a in s.saga.outcome.history.iter().skip(printed) {
            say!(out, "{}", attempt_line(a));
        }
        printed = s.saga.outcome.history.len();
        if s.saga.status.is_terminal() {
            say!(out, "saga {saga_id}: {}", s.saga.status.as_str());
            if let Some(f) = &s.saga.outcome.failure {
                say!(out, "  failed at {}: {}: {}", f.step, f.code, f.message);
            }
            return Ok(if s.saga.status == Status::Succeeded { exit::SUCCEEDED } else { exit::ENDED_OTHERWISE });
        }
        if enough(&s.saga) {
            say!(out, "saga {saga_id}: {} at step {}: waiting for a person again (see the notification)", s.saga.status.as_str(), s.saga.step);
            return Ok(0);
        }
        if start.elapsed() > timeout {
            eprintln!("saga {saga_id} still {} at step {} after {:?}; it continues in the background", s.saga.status.as_str(), s.saga.step, timeout);
            return Ok(exit::TIMED_OUT);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
