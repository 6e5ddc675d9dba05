//! `keyturn report`, black-box through the binary, on moto with three
//! accounts (the worker's, a member account a rotation names, one given
//! with `--account`).
//!
//! Old keys are made by moto itself with its IAM clock set back
//! (`Options::iam_clock`, tests/fixtures/moto_clock): IAM then dates their
//! CreateDate and last use in the past, as AWS does for keys made back
//! then. The history is real sagas run by a worker against the fake Auth0:
//! one succeeded, two failed (Auth0 refused the scope), one needing
//! attention (a 5xx storm after Auth0 applied the key).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use keyturn::saga::Status;
use keyturn::store::Created;
use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{keyturn_bin, sdk_config, Options, RunningWorker, TestEnv, USER};
use serde_json::Value;

const HUB: &str = "123456789012";
const MEMBER: &str = "222222222222";
const EXTRA: &str = "333333333333";
const ROLE_NAME: &str = "keyturn-member";
const DAY: u64 = 86_400;

/// An IAM client acting in `account` (moto: credentials of an assumed role there).
async fn iam_in(env: &TestEnv, account: &str) -> aws_sdk_iam::Client {
    let sts = aws_sdk_sts::Client::new(&env.sdk);
    let out = sts.assume_role().role_arn(format!("arn:aws:iam::{account}:role/{ROLE_NAME}")).role_session_name("test-setup").send().await.unwrap();
    let c = out.credentials().unwrap();
    let creds = Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().to_string()), None, "test-setup");
    aws_sdk_iam::Client::new(&sdk_config(&env.moto.endpoint, creds).await)
}

/// A user with one key, created `days_ago` (moto's IAM clock set back).
async fn user_with_key(iam: &aws_sdk_iam::Client, clock: &Path, user: &str, days_ago: u64) -> (String, String) {
    std::fs::write(clock, (days_ago * DAY).to_string()).unwrap();
    iam.create_user().user_name(user).send().await.unwrap();
    let k = iam.create_access_key().user_name(user).send().await.unwrap();
    let k = k.access_key().unwrap();
    std::fs::write(clock, "0").unwrap();
    (k.access_key_id().to_string(), k.secret_access_key().to_string())
}

/// Sign one call with the key, `days_ago` (moto records the last use).
async fn use_key(env: &TestEnv, clock: &Path, key: &(String, String), days_ago: u64) {
    std::fs::write(clock, (days_ago * DAY).to_string()).unwrap();
    let sdk = sdk_config(&env.moto.endpoint, Credentials::new(&key.0, &key.1, None, None, "consumer")).await;
    aws_sdk_sts::Client::new(&sdk).get_caller_identity().send().await.unwrap();
    std::fs::write(clock, "0").unwrap();
}

async fn run_saga(env: &TestEnv, engine: &Arc<keyturn::engine::Engine<keyturn::queue::SqsQueue>>) -> (String, Status) {
    let Created::New(id) = engine.request("auth0-ses", "manual").await.unwrap() else { panic!("expected a new saga") };
    let s = env.wait_terminal(&id, Duration::from_secs(90)).await;
    (id, s.status)
}

fn report(env: &TestEnv, config: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(keyturn_bin())
        .arg("report")
        .args(["--config", config.to_str().unwrap(), "--deadline", "120s"])
        .args(args)
        .envs(env.cli_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "keyturn report {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lists_keys_rotations_history_and_findings_in_all_three_formats() {
    let dir = std::env::temp_dir().join(format!("keyturn-report-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let clock = dir.join("iam-clock");
    std::fs::write(&clock, "0").unwrap();
    let env = TestEnv::new(Options { iam_clock: Some(clock.clone()), ..Options::default() }).await.unwrap();

    // The worker's account: USER (covered by auth0-ses, rotated below), an
    // old uncovered key last used 100 days ago, a young uncovered key in use.
    let legacy = user_with_key(&env.clients.iam, &clock, "legacy-ci", 200).await;
    use_key(&env, &clock, &legacy, 100).await;
    let fresh = user_with_key(&env.clients.iam, &clock, "fresh-bot", 0).await;
    use_key(&env, &clock, &fresh, 0).await;
    // The member account: the same-named user, covered by member-mailer, 120 days old; an inactive old key.
    let member = iam_in(&env, MEMBER).await;
    member.create_role().role_name(ROLE_NAME).assume_role_policy_document("{}").send().await.unwrap();
    let member_key = user_with_key(&member, &clock, USER, 120).await;
    use_key(&env, &clock, &member_key, 10).await;
    let parked = user_with_key(&member, &clock, "parked", 150).await;
    member.update_access_key().user_name("parked").access_key_id(&parked.0).status(aws_sdk_iam::types::StatusType::Inactive).send().await.unwrap();
    // An account only `--account` names.
    let extra = iam_in(&env, EXTRA).await;
    let extra_key = user_with_key(&extra, &clock, "extra-svc", 30).await;

    // Configuration: the environment's plus the member role and member-mailer.
    let text =
        env.config_text.replacen("kms_key_id = \"alias/keyturn\"\n", &format!("kms_key_id = \"alias/keyturn\"\nmember_role_name = \"{ROLE_NAME}\"\n"), 1);
    let home_rotation = &text[text.find("[[rotation]]").unwrap()..];
    let member_rotation = home_rotation.replacen("id = \"auth0-ses\"", "id = \"member-mailer\"", 1).replacen(
        &format!("user_name = \"{USER}\" }}"),
        &format!("user_name = \"{USER}\", account_id = \"{MEMBER}\" }}"),
        1,
    );
    let text = format!("{text}\n{member_rotation}");
    let cfg = keyturn::config::Config::parse(&text).unwrap();
    let config = dir.join("keyturn.toml");
    std::fs::write(&config, &text).unwrap();

    // History: succeeded, failed twice, needs attention (which keeps the lock: an open saga).
    let engine = Arc::new(keyturn::app::engine_with(&cfg, &env.clients, "w1".into(), keyturn::app::sqs_queue(&cfg, &env.clients)));
    let w = RunningWorker::spawn(engine.clone(), &cfg.worker);
    let (ok_id, st) = run_saga(&env, &engine).await;
    assert_eq!(st, Status::Succeeded);
    let mut failed = vec![];
    for _ in 0..2 {
        // The 403 meets a cached token, which is asked again once with a new one: refuse both.
        env.auth0.script_patch(Fault::InsufficientScope);
        env.auth0.script_patch(Fault::InsufficientScope);
        let (id, st) = run_saga(&env, &engine).await;
        assert_eq!(st, Status::Compensated);
        failed.push(id);
    }
    env.auth0.state.lock().unwrap().patch_faults.clear();
    env.auth0.set_reveal_key_id(false);
    for _ in 0..40 {
        env.auth0.script_patch(Fault::UnavailableAfterApply);
    }
    let (attention_id, st) = run_saga(&env, &engine).await;
    assert_eq!(st, Status::NeedsAttention);
    w.stop().await;
    let usr_keys: Vec<String> = env.user_keys().await.into_iter().map(|k| k.id).collect();
    assert_eq!(usr_keys.len(), 2, "needs attention with both keys in place");

    // ---- JSON ----
    let json: Value = serde_json::from_slice(&report(&env, &config, &["--format", "json", "--account", EXTRA])).unwrap();
    assert_eq!(json["schema"], "keyturn.report.v1");
    let accounts: Vec<&str> = json["accounts"].as_array().unwrap().iter().map(|a| a["account_id"].as_str().unwrap()).collect();
    assert_eq!(accounts, vec![HUB, MEMBER, EXTRA]);
    assert!(json["accounts"].as_array().unwrap().iter().all(|a| a.get("error").is_none()), "{}", json["accounts"]);
    let keys: HashMap<String, &Value> = json["keys"].as_array().unwrap().iter().map(|k| (k["access_key_id"].as_str().unwrap().to_string(), k)).collect();
    let k = |id: &str| *keys.get(id).unwrap_or_else(|| panic!("key {id} listed: {}", json["keys"]));
    let age = |id: &str| k(id)["age_days"].as_u64().unwrap();
    // legacy-ci: 200 days, uncovered, last used 100 days ago (via sts).
    assert_eq!((k(&legacy.0)["account_id"].as_str(), k(&legacy.0)["user_name"].as_str()), (Some(HUB), Some("legacy-ci")));
    assert!((199..=200).contains(&age(&legacy.0)), "{}", k(&legacy.0));
    assert_eq!(k(&legacy.0)["past_90_days"], true);
    assert_eq!(k(&legacy.0)["unused_90_days"], true);
    assert!(k(&legacy.0).get("rotation_id").is_none());
    assert_eq!(k(&legacy.0)["last_used_service"], "sts");
    // fresh-bot: young, used now, uncovered.
    assert_eq!(age(&fresh.0), 0);
    assert_eq!((k(&fresh.0)["past_90_days"].as_bool(), k(&fresh.0)["unused_90_days"].as_bool()), (Some(false), Some(false)));
    // USER in the hub: both keys (the succeeded saga's and the one needing attention), covered.
    for id in &usr_keys {
        assert_eq!(k(id)["rotation_id"], "auth0-ses");
        assert_eq!(k(id)["account_id"], HUB);
        assert_eq!(k(id)["past_90_days"], false);
    }
    // The member's USER: covered by member-mailer, not by auth0-ses; 120 days.
    assert_eq!(k(&member_key.0)["account_id"], MEMBER);
    assert_eq!(k(&member_key.0)["rotation_id"], "member-mailer");
    assert!((119..=120).contains(&age(&member_key.0)));
    assert_eq!(k(&member_key.0)["past_90_days"], true);
    // The parked key: inactive, old, flags nothing.
    assert_eq!(k(&parked.0)["status"], "Inactive");
    assert_eq!((k(&parked.0)["past_90_days"].as_bool(), k(&parked.0)["unused_90_days"].as_bool()), (Some(false), Some(false)));
    assert_eq!(k(&extra_key.0)["account_id"], EXTRA);
    // legacy-ci, fresh-bot, USER's two, the member's USER, parked, extra-svc.
    assert_eq!(keys.len(), 7, "every key, none twice: {}", json["keys"]);

    // Findings, each with its fix.
    let findings: Vec<(String, String, String)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["subject"].as_str().unwrap().to_string(), f["fix"].as_str().unwrap().to_string()))
        .collect();
    let about = |subject: &str| -> Vec<&str> { findings.iter().filter(|f| f.1.contains(subject)).map(|f| f.0.as_str()).collect() };
    let mut legacy_kinds = about(&legacy.0);
    legacy_kinds.sort();
    assert_eq!(legacy_kinds, vec!["key_not_rotated", "key_past_90_days", "key_unused_90_days"]);
    assert_eq!(about(&fresh.0), vec!["key_not_rotated"]);
    assert_eq!(about(&member_key.0), vec!["key_past_90_days"]);
    assert!(about(&parked.0).is_empty());
    assert!(findings.iter().any(|f| f.1.contains(&member_key.0) && f.2.starts_with("keyturn rotate member-mailer")), "{findings:?}");
    assert!(findings.iter().any(|f| f.1.contains(&fresh.0) && f.2.contains("user_name = \"fresh-bot\", account_id = \"123456789012\"")));
    let failing: Vec<_> = findings.iter().filter(|f| f.0 == "rotation_failing").collect();
    assert_eq!(failing.len(), 1, "{findings:?}");
    assert_eq!(failing[0].1, "rotation auth0-ses");
    assert!(failing[0].2.contains("keyturn release auth0-ses"), "quarantined after 3 failures: {}", failing[0].2);

    // Rotations.
    let rot = |id: &str| json["rotations"].as_array().unwrap().iter().find(|r| r["rotation_id"] == id).cloned().unwrap();
    let a = rot("auth0-ses");
    assert!(a["last_success"].is_string(), "{a}");
    assert_eq!(a["open_saga"]["saga_id"], attention_id.as_str());
    assert_eq!(a["open_saga"]["status"], "needs_attention");
    assert_eq!(a["consecutive_failures"], 3);
    assert!(a["quarantine"]["reason"].is_string(), "{a}");
    let m = rot("member-mailer");
    assert!(m.get("last_success").is_none());
    assert!(m["next_due_reason"].as_str().unwrap().contains("IAM.3"), "{m}");
    let created = k(&member_key.0)["created_at"].as_str().unwrap();
    let due = keyturn::report::parse_instant(m["next_due"].as_str().unwrap()).unwrap();
    assert_eq!(due, keyturn::report::parse_instant(created).unwrap() + 90 * DAY * 1000, "created {created} + 90 days");

    // History.
    let h = &json["history"];
    assert_eq!(h["by_outcome"]["succeeded"], 1);
    assert_eq!(h["by_outcome"]["failed"], 2);
    assert_eq!(h["by_outcome"]["needs_attention"], 1);
    let outcome = |id: &str| h["sagas"].as_array().unwrap().iter().find(|s| s["saga_id"] == id).map(|s| s["outcome"].as_str().unwrap().to_string());
    assert_eq!(outcome(&ok_id).as_deref(), Some("succeeded"));
    assert_eq!(outcome(&failed[0]).as_deref(), Some("failed"));
    assert_eq!(outcome(&failed[1]).as_deref(), Some("failed"));
    assert_eq!(outcome(&attention_id).as_deref(), Some("needs_attention"));
    assert!(h["sagas"].as_array().unwrap().iter().all(|s| s["trigger"] == "manual"));
    assert!(h["median_time_to_rotate_s"].is_u64());
    let weeks = h["weeks"].as_array().unwrap();
    assert_eq!(weeks.len(), 13, "90 days in weeks");
    let last = weeks.last().unwrap();
    assert_eq!((last["succeeded"].as_u64(), last["failed"].as_u64(), last["needs_attention"].as_u64()), (Some(1), Some(2), Some(1)));
    assert_eq!(json["standards"].as_array().unwrap().len(), 6);

    // ---- CSV ---- (keys, an empty line, history)
    let csv_path = dir.join("report.csv");
    report(&env, &config, &["--format", "csv", "--account", EXTRA, "--out", csv_path.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let (keys_part, history_part) = text.split_once("\r\n\r\n").expect("two sections");
    let mut rd = csv::Reader::from_reader(keys_part.as_bytes());
    let header = rd.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), keys.len());
    let row = |id: &str| rows.iter().find(|r| &r[col("access_key_id")] == id).unwrap_or_else(|| panic!("{id} in the CSV"));
    assert_eq!(&row(&legacy.0)[col("past_90_days")], "true");
    assert_eq!(&row(&legacy.0)[col("rotation_id")], "");
    assert_eq!(&row(&legacy.0)[col("findings")], "key_past_90_days;key_not_rotated;key_unused_90_days");
    assert_eq!(&row(&member_key.0)[col("rotation_id")], "member-mailer");
    assert_eq!(&row(&member_key.0)[col("account_id")], MEMBER);
    assert_eq!(&row(&fresh.0)[col("past_90_days")], "false");
    assert_eq!(&row(&parked.0)[col("status")], "Inactive");
    let mut rd = csv::Reader::from_reader(history_part.as_bytes());
    assert_eq!(rd.headers().unwrap().get(0), Some("saga_id"));
    let hist: HashMap<String, String> = rd.records().map(Result::unwrap).map(|r| (r[0].to_string(), r[2].to_string())).collect();
    assert_eq!(hist.len(), 4);
    assert_eq!(hist[&ok_id], "succeeded");
    assert_eq!(hist[&failed[1]], "failed");
    assert_eq!(hist[&attention_id], "needs_attention");

    // ---- HTML ----
    let html_path = dir.join("report.html");
    report(&env, &config, &["--format", "html", "--account", EXTRA, "--out", html_path.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    for id in [&legacy.0, &fresh.0, &member_key.0, &parked.0, &extra_key.0, &ok_id, &failed[0], &failed[1], &attention_id] {
        assert!(html.contains(id.as_str()), "{id} in the HTML");
    }
    assert!(html.contains("keyturn rotate member-mailer") && html.contains("keyturn release auth0-ses"));
    for banned in ["<script", " src=", "href=", "url(", "@import", "<link"] {
        assert!(!html.contains(banned), "self-contained: no {banned}");
    }
    browser_check(&html_path, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Open the page in headless Chromium: both charts are in the rendered DOM
/// and the browser logged no console message or page error. Without a
/// browser the check is skipped locally and fails under CI.
fn browser_check(page: &Path, dir: &Path) {
    let bin = ["chromium", "chromium-browser"].into_iter().find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(bin) = bin else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but chromium is not installed: .ci/run installs it (apt-get install -y chromium)");
        eprintln!("SKIPPED the browser check: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let profile = dir.join("chromium-profile");
    let started = Instant::now();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed after {:?}: {log}", started.elapsed());
    assert!(dom.contains("<svg id=\"chart-key-age\""), "key-age chart rendered: {}", &dom[..dom.len().min(2000)]);
    assert!(dom.contains("<svg id=\"chart-rotations-per-week\""), "weekly chart rendered");
    assert!(dom.contains("IAM.3: 90 days"));
    for bad in [":CONSOLE(", "Uncaught", "Failed to load resource", "net::ERR_"] {
        assert!(!log.contains(bad), "browser reported {bad}: {log}");
    }
}

/// Peak RSS (KiB) of `keyturn report` over this environment, from `/usr/bin/time -v`.
fn report_peak_rss(env: &TestEnv, config: &Path, out: &Path) -> (u64, Duration) {
    let started = Instant::now();
    let run = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(keyturn_bin())
        .args(["report", "--config", config.to_str().unwrap(), "--deadline", "20m", "--format", "json", "--out", out.to_str().unwrap()])
        .envs(env.cli_env())
        .output()
        .expect("/usr/bin/time (Debian package time)");
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    let kib = log.lines().find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): ")).expect("time -v output").parse().unwrap();
    (kib, took)
}

/// Issue 23: a 2,000-user account reports in bounded memory. Creates users
/// in moto (about a minute on a loaded machine), so it runs by hand:
/// `cargo test -p keyturn-testkit --test report -- --ignored --nocapture`.
/// Prints the peak RSS for 200 and for 2,000 users (docs/operators.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "creates 2,000 IAM users in moto; run by hand, figures in docs/operators.md"]
async fn a_2000_user_account_reports_in_bounded_memory() {
    let dir = std::env::temp_dir().join(format!("keyturn-report-scale-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = TestEnv::new(Options::default()).await.unwrap();
    let config = env.write_config(&dir).unwrap();
    let out = dir.join("report.json");
    let mut made = 0usize;
    let mut figures = vec![];
    for target in [200usize, 2000] {
        let mut tasks = tokio::task::JoinSet::new();
        while made < target {
            while tasks.len() < 16 && made < target {
                let iam = env.clients.iam.clone();
                let name = format!("svc-{made:05}");
                made += 1;
                tasks.spawn(async move {
                    iam.create_user().user_name(&name).send().await.unwrap();
                    iam.create_access_key().user_name(&name).send().await.unwrap();
                });
            }
            tasks.join_next().await.unwrap().unwrap();
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
        let (kib, took) = report_peak_rss(&env, &config, &out);
        let json: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(json["keys"].as_array().unwrap().len(), target + env.old_keys.len(), "every key reported");
        assert_eq!(json["accounts"][0]["users"], target as u64 + 1);
        println!("keyturn report: {} users, peak RSS {:.1} MiB, {:.1} s", target + 1, kib as f64 / 1024.0, took.as_secs_f64());
        figures.push(kib);
    }
    // Bounded: the per-key summary, not the API answers, is what grows.
    assert!(figures[1] < 256 * 1024, "peak RSS {} KiB for 2,000 users", figures[1]);
    let _ = std::fs::remove_dir_all(&dir);
}
