//! "Needs attention" is not a dead end: a saga that stopped with both keys
//! in place keeps the credential, is watched for evidence (both keys' last
//! use by the target's service, the target itself), and is resolved — by
//! clear evidence with `auto_resolve`, or by `keyturn resolve` — retiring the
//! unused key the safe way. Against moto and the fake Auth0; Auth0 "sending
//! mail" is a real SES request to moto signed with the key the fake holds,
//! which moto records as that key's last use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::saga::{Keep, Saga, Status, Step};
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{keyturn_bin, Options, RunningWorker, TestEnv};

const T: Duration = Duration::from_secs(60);

async fn env(extra_policy: &'static str) -> TestEnv {
    env_with(Options { extra_policy, ..Options::default() }).await
}

async fn env_with(opts: Options) -> TestEnv {
    TestEnv::new(opts).await.expect("test environment")
}

/// Wait until `pred` holds for the saga (or panic after `T`).
async fn wait_for(env: &TestEnv, saga_id: &str, what: &str, pred: impl Fn(&Saga) -> bool) -> Saga {
    let store = env.engine("probe").store().clone();
    let start = Instant::now();
    loop {
        let s = store.load(saga_id).await.unwrap().unwrap().saga;
        if pred(&s) {
            return s;
        }
        assert!(start.elapsed() < T, "timed out waiting for {what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start a rotation whose PATCH keeps answering 5xx after Auth0 applied it
/// (`applied`) or without applying it, with Auth0 not revealing the key id:
/// the saga ends needing attention with both keys active.
async fn storm_to_needs_attention(env: &TestEnv, engine: &Arc<keyturn::engine::Engine<keyturn::queue::SqsQueue>>, applied: bool) -> String {
    env.auth0.set_reveal_key_id(false);
    for _ in 0..40 {
        env.auth0.script_patch(if applied { Fault::UnavailableAfterApply } else { Fault::Internal });
    }
    let Created::New(saga_id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("expected a new saga") };
    let s = wait_for(env, &saga_id, "needs attention", |s| s.status.is_terminal()).await;
    assert_eq!(s.status, Status::NeedsAttention, "{s:#?}");
    assert!(s.unresolved(), "stopped with both keys in place: {s:#?}");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.active));
    saga_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_xx_storm_needs_attention_then_evidence_resolves_it() {
    let env = env("auto_resolve = true\nevidence_every = \"1s\"").await;
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let saga_id = storm_to_needs_attention(&env, &engine, true).await;
    let stopped = engine.store().load(&saga_id).await.unwrap().unwrap().saga;
    let new_id = stopped.keys.new_key.clone().unwrap();

    // The needs-attention notice says what keyturn does now and how to resolve.
    let n = env.notifications(1, Duration::from_secs(10)).await;
    assert_eq!(n[0].attributes["event"], "rotation.needs_attention");
    let action = n[0].document["recommended_action"].as_str().unwrap();
    assert!(action.contains(&format!("keyturn resolve {saga_id} --keep new")), "{action}");

    // The credential is held: another request is answered with this saga,
    // not refused for "two unknown keys" (which would end in quarantine).
    assert_eq!(engine.request("auth0-ses", "manual").await.unwrap(), Created::Existing(saga_id.clone()));

    // No use of either key yet: the evidence is unclear, nothing changes.
    let watched = wait_for(&env, &saga_id, "two evidence checks", |s| s.resolution.attention.as_ref().is_some_and(|a| a.checks >= 2)).await;
    let v = watched.resolution.attention.as_ref().unwrap().verdict.clone().unwrap();
    assert_eq!(v.keep, None, "{v:?}");
    assert!(v.reason.contains("neither key was used"), "{v:?}");
    assert_eq!(watched.status, Status::NeedsAttention);
    assert_eq!(env.user_keys().await.len(), 2);

    // Auth0 sends mail with the key it holds (the new one): clear evidence,
    // and with auto_resolve the saga retires the old key and succeeds.
    env.auth0.send_mail(&env.moto.endpoint).await;
    let end = wait_for(&env, &saga_id, "the resolved saga to end", |s| s.status.is_terminal() && s.resolution.resolved.is_some()).await;
    worker.stop().await;
    assert_eq!(end.status, Status::Succeeded, "{end:#?}");
    assert_eq!(end.resolution.resolved, Some(Keep::New));
    assert!(end.outcome.history.iter().any(|a| a.step == Step::DisableOld && a.outcome == "ok"));
    assert!(end.outcome.history.iter().any(|a| a.step == Step::RetireOld && a.outcome == "ok"));
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, new_id);
    assert!(keys[0].active);
    assert!(!keys.iter().any(|k| k.id == old_id));
    assert_eq!(env.auth0.provider().unwrap().access_key_id, new_id);
    assert_eq!(engine.store().lock_holder("iam_access_key:auth0-ses-sender").await.unwrap(), None, "lock released at the end");

    // (The needs-attention notice was read above.)
    let n = env.notifications(2, Duration::from_secs(10)).await;
    let events: Vec<&str> = n.iter().map(|n| n.attributes["event"].as_str()).collect();
    assert_eq!(events, ["rotation.evidence", "rotation.succeeded"], "one evidence notice, then the outcome");
    assert_eq!(n[0].document["keep"], "new");
    assert_eq!(n[0].document["resolving"], true);
    assert!(n[0].document["evidence"].as_str().unwrap().contains(&format!("only the new key {new_id} was used by ses")), "{}", n[0].document);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_that_auth0_kept_the_old_key_retires_the_new_one() {
    let env = env("auto_resolve = true\nevidence_every = \"1s\"").await;
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    // 500s without applying: Auth0 still holds the old key, but keyturn
    // cannot know (a 5xx to a write may have applied).
    let saga_id = storm_to_needs_attention(&env, &engine, false).await;
    assert_eq!(env.auth0.provider().unwrap().access_key_id, old_id);
    env.auth0.send_mail(&env.moto.endpoint).await;
    let end = wait_for(&env, &saga_id, "the resolved saga to end", |s| s.status.is_terminal() && s.resolution.resolved.is_some()).await;
    worker.stop().await;
    assert_eq!(end.status, Status::Compensated, "{end:#?}");
    assert_eq!(end.resolution.resolved, Some(Keep::Old));
    assert!(end.outcome.history.iter().any(|a| a.step == Step::DisableNew && a.outcome == "ok"));
    assert!(end.outcome.history.iter().any(|a| a.step == Step::RetireNew && a.outcome == "ok"));
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].id, old_id);
    assert!(keys[0].active, "the key Auth0 uses stays active");
    let n = env.notifications(3, Duration::from_secs(10)).await;
    assert_eq!(n[1].attributes["event"], "rotation.evidence");
    assert_eq!(n[1].document["keep"], "old");
    assert_eq!(n[2].attributes["event"], "rotation.failed");
    assert!(n[2].document["rolled_back"].to_string().contains("deleted it after the grace period"), "{}", n[2].document);
}

fn cli(args: &[&str], envs: &[(&'static str, String)]) -> (i32, String, String) {
    let out = std::process::Command::new(keyturn_bin())
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_by_hand_refuses_a_choice_the_evidence_contradicts() {
    let env = env("evidence_every = \"1s\"").await;
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let saga_id = storm_to_needs_attention(&env, &engine, true).await;
    let new_id = engine.store().load(&saga_id).await.unwrap().unwrap().saga.keys.new_key.unwrap();
    let dir = std::env::temp_dir().join(format!("keyturn-attention-{}", uuid::Uuid::new_v4()));
    let cfg = env.write_config(&dir).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let envs = env.cli_env();

    // Without auto_resolve, clear evidence is announced and nothing more.
    env.auth0.send_mail(&env.moto.endpoint).await;
    let seen =
        wait_for(&env, &saga_id, "clear evidence", |s| s.resolution.attention.as_ref().and_then(|a| a.verdict.as_ref()).is_some_and(|v| v.keep.is_some()))
            .await;
    assert_eq!(seen.status, Status::NeedsAttention);
    assert_eq!(env.user_keys().await.len(), 2, "nothing retired without auto_resolve");
    let n = env.notifications(2, Duration::from_secs(10)).await;
    assert_eq!(n[1].attributes["event"], "rotation.evidence");
    assert_eq!(n[1].document["resolve_command"], format!("keyturn resolve {saga_id} --keep new"));

    // A new rotation is refused with the saga to resolve, not TooManyKeys.
    let (code, _, err) = cli(&["rotate", "auth0-ses", "--config", &cfg], &envs);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("keyturn resolve {saga_id} --keep new|old")), "{err}");
    // `status` shows the evidence.
    let (code, out, _) = cli(&["status", &saga_id, "--config", &cfg], &envs);
    assert_eq!(code, 0);
    assert!(out.contains("holding the credential") && out.contains(&format!("only the new key {new_id} was used by ses")), "{out}");

    // Keeping the old key goes against the evidence: refused, nothing changes.
    let (code, _, err) = cli(&["resolve", &saga_id, "--keep", "old", "--config", &cfg], &envs);
    assert_eq!(code, keyturn::cli::exit::REFUSED, "refused in the saga's state, as docs/cli.md and docs/attention.md say: {err}");
    assert!(err.contains("EvidenceContradicts") && err.contains("--force"), "{err}");
    assert_eq!(env.user_keys().await.len(), 2);

    // Keeping the new one finishes the rotation.
    let (code, out, err) = cli(&["resolve", &saga_id, "--keep", "new", "--wait", "--timeout", "60s", "--config", &cfg], &envs);
    worker.stop().await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("keeping the new key") && out.contains(&format!("saga {saga_id}: succeeded")), "{out}");
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, new_id);
    assert!(!keys.iter().any(|k| k.id == old_id));
    let end = engine.store().load(&saga_id).await.unwrap().unwrap().saga;
    assert!(
        end.outcome.history.iter().any(|a| a.outcome == "resolved" && a.message.as_deref().unwrap_or("").contains("keep the new key")),
        "{:#?}",
        end.outcome.history
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_by_hand_resolves_the_saga_without_a_grace_period() {
    // An operator who followed the documented recovery by hand: deleted the
    // new key after checking Auth0 uses the old one. The next check sees it.
    let env = env_with(Options { grace_period: "7d", extra_policy: "auto_resolve = true\nevidence_every = \"1s\"", ..Options::default() }).await;
    let old_id = env.old_keys[0].0.clone();
    let engine = Arc::new(env.engine("w1"));
    let worker = RunningWorker::spawn(engine.clone(), &env.config.worker);
    let saga_id = storm_to_needs_attention(&env, &engine, false).await;
    let new_id = engine.store().load(&saga_id).await.unwrap().unwrap().saga.keys.new_key.unwrap();
    env.clients.iam.delete_access_key().user_name(keyturn_testkit::env::USER).access_key_id(&new_id).send().await.unwrap();
    let end = wait_for(&env, &saga_id, "the resolved saga to end", |s| s.status.is_terminal() && s.resolution.resolved.is_some()).await;
    worker.stop().await;
    assert_eq!(end.status, Status::Compensated, "{end:#?}");
    assert!(end.outcome.compensations.iter().any(|c| c.contains("already deleted")), "{:?}", end.outcome.compensations);
    let keys = env.user_keys().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, old_id);
    assert!(keys[0].active);
}
