//! The `keyturn` binary, black-box: configuration errors, help, and a full
//! rotation with `keyturn worker` + `keyturn rotate --wait`, then SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{keyturn_bin, Options, TestEnv};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keyturn-cli-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A valid configuration of one rotation, for `check-config` to refuse edits of.
const MINIMAL_CONFIG: &str = r#"
[aws]
queue_url = "q"
dlq_url = "d"
table = "t"
topic_arn = "arn"
kms_key_id = "k"
[[rotation]]
id = "auth0-ses"
source = { kind = "iam_access_key", user_name = "u" }
[rotation.target]
kind = "auth0_email_provider"
domain = "example.eu.auth0.com"
client_id = "abc"
client_secret = { env = "KEYTURN_AUTH0_CLIENT_SECRET" }
ses_region = "eu-west-1"
"#;

fn run(args: &[&str], envs: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(keyturn_bin()).args(args).envs(envs.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn help_lists_every_command() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for c in ["worker", "rotate", "status", "list", "rollback", "provide", "confirm", "check-config"] {
        assert!(out.contains(c), "--help mentions {c}:\n{out}");
    }
    let (code, out, _) = run(&["rotate", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--wait") && out.contains("already being rotated"), "{out}");
    assert!(out.contains("--old-token-created"), "{out}");
    let (code, out, _) = run(&["provide", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("never taken from the command line") && out.contains("--from-secret"), "{out}");
}

#[test]
fn invalid_config_names_file_key_and_problem() {
    let dir = tmpdir("badcfg");
    let path = dir.join("keyturn.toml");
    std::fs::write(
        &path,
        r#"
[aws]
queue_url = "q"
dlq_url = "d"
table = "t"
topic_arn = "arn"
kms_key_id = "k"
[worker]
wait_time = "45s"
"#,
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(path.to_str().unwrap()), "names the file: {err}");
    assert!(err.contains("worker.wait_time") && err.contains("20s"), "names key and problem: {err}");

    // Unknown keys and inline secrets: one line naming file, rotation and key.
    let base = format!("{MINIMAL_CONFIG}[rotation.policy]\ngrace_period = \"1d\"\n");
    let secret_line = "client_secret = { env = \"KEYTURN_AUTH0_CLIENT_SECRET\" }";
    for (edit, key) in [
        (base.replace(secret_line, "clientsecret = { env = \"KEYTURN_AUTH0_CLIENT_SECRET\" }"), "target.clientsecret: unknown key"),
        (base.replace(secret_line, "client_secret = \"hunter2-s3cr3t\""), "target.client_secret: inline secrets are not allowed"),
        (base.replace("grace_period = \"1d\"", "grace = \"1d\""), "policy.grace: unknown key"),
    ] {
        std::fs::write(&path, &edit).unwrap();
        let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("{}: rotation \"auth0-ses\": {key}", path.display())), "{err}");
        assert!(!err.contains("hunter2"), "never echoes a secret: {err}");
    }

    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/keyturn.toml"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/keyturn.toml: cannot read"), "{err}");
}

/// Issue 20, item 4: `check-config` refuses each value that could send a
/// secret to another host or read the process's own credentials, with a
/// message naming the key (exit 2, one line, the file named).
#[test]
fn check_config_refuses_values_that_could_send_secrets_elsewhere() {
    let dir = tmpdir("item4");
    let path = dir.join("keyturn.toml");
    let base = MINIMAL_CONFIG;
    std::fs::write(&path, base).unwrap();
    let (code, out, err) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "the base is valid: {out}{err}");
    for (from, to, expected) in [
        ("domain = \"example.eu.auth0.com\"", "domain = \"example.eu.auth0.com@evil.example\"", "target.domain: must be a bare DNS host name"),
        ("domain = \"example.eu.auth0.com\"", "domain = \"evil.example?x=\"", "target.domain: must be a bare DNS host name"),
        (
            "ses_region = \"eu-west-1\"",
            "ses_region = \"eu-west-1\"\nbase_url = \"https://169.254.169.254/latest\"",
            "target.base_url: must not point at a link-local or cloud metadata address",
        ),
        ("ses_region = \"eu-west-1\"", "ses_region = \"x/../evil\"", "target.ses_region: must be an AWS region like us-east-1"),
        ("KEYTURN_AUTH0_CLIENT_SECRET", "AWS_SECRET_ACCESS_KEY", "target.client_secret: an `env` reference must name a variable starting with KEYTURN_"),
    ] {
        std::fs::write(&path, base.replace(from, to)).unwrap();
        let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{to}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("{}: rotation \"auth0-ses\": {expected}", path.display())), "{to}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_rotate_wait_then_sigterm() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let dir = tmpdir("e2e");
    let cfg = env.write_config(&dir).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let envs = env.cli_env();

    let (code, out, _) = run(&["check-config", "--config", &cfg], &envs);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (1 rotation(s): auth0-ses)"), "{out}");

    let (code, _, err) = run(&["rotate", "nope", "--config", &cfg], &envs);
    assert_eq!(code, 2, "a usage mistake exits 2");
    assert!(err.contains("no rotation \"nope\"") && err.contains("configured: auth0-ses"), "{err}");

    let mut worker = Command::new(keyturn_bin())
        .args(["worker", "--config", &cfg, "--log-format", "json"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let (code, out, err) = tokio::task::spawn_blocking({
        let (cfg, envs) = (cfg.clone(), envs.clone());
        move || run(&["rotate", "auth0-ses", "--wait", "--timeout", "60s", "--config", &cfg], &envs)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("push_to_target") && out.contains(": succeeded"), "{out}");

    let (code, out, _) = run(&["list", "--json", "--config", &cfg], &envs);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let saga_id = list[0]["saga_id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["status"], "succeeded");
    let (code, out, _) = run(&["status", &saga_id, "--config", &cfg], &envs);
    assert_eq!(code, 0);
    assert!(out.contains("status succeeded") && out.contains("retire_old"), "{out}");
    assert!(out.contains("target: holds_new"), "enum values as documented (and as in --json): {out}");
    let (code, _, err) = run(&["status", "no-such-saga", "--config", &cfg], &envs);
    assert_eq!(code, keyturn::cli::exit::USAGE, "an unknown saga is a usage mistake (docs/cli.md): {err}");
    assert!(err.contains("no saga no-such-saga"), "{err}");

    // A failing rotation: --wait exits non-zero. The 403 meets a cached
    // token, which is asked again once with a new one: refuse both.
    env.auth0.script_patch(Fault::InsufficientScope);
    env.auth0.script_patch(Fault::InsufficientScope);
    let (code, out, _) = tokio::task::spawn_blocking({
        let (cfg, envs) = (cfg.clone(), envs.clone());
        move || run(&["rotate", "auth0-ses", "--wait", "--timeout", "60s", "--config", &cfg], &envs)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": compensated") && out.contains("insufficient_scope"), "{out}");

    // --json: one document with the exit code and the saga record, nothing else on stdout.
    let (code, out, err) = tokio::task::spawn_blocking({
        let (cfg, envs) = (cfg.clone(), envs.clone());
        move || run(&["rotate", "auth0-ses", "--wait", "--timeout", "60s", "--json", "--config", &cfg], &envs)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["saga"]["status"], "succeeded");
    assert_eq!(doc["saga_id"], doc["saga"]["saga_id"]);
    let (code, out, _) = run(&["release", "auth0-ses", "--json", "--config", &cfg], &envs);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), serde_json::json!({"rotation_id": "auth0-ses", "lifted": false}));

    // Exit codes a script can trust: a refused command is 5, not 1 or 4.
    let (code, _, err) = run(&["rollback", &saga_id, "--config", &cfg], &envs);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("already ended"), "{err}");
    // A closed pipe is no panic: `keyturn list | head -1` with head gone.
    let mut child = Command::new(keyturn_bin())
        .args(["list", "--config", &cfg])
        .envs(envs.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(out.status.success() || out.status.signal() == Some(13), "ends quietly (SIGPIPE) or normally: {:?}", out.status);
    }
    // And through a shell pipe, as a person types it.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!("{} list --config {cfg} | head -1", keyturn_bin().display()))
        .envs(envs.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .output()
        .unwrap();
    assert!(piped.status.success() && String::from_utf8_lossy(&piped.stdout).starts_with("saga"), "{piped:?}");
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("panicked"));

    // SIGTERM: the worker drains and exits 0 within its shutdown grace.
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    let status = worker.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let mut logs = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut logs).unwrap();
    // Metrics: CloudWatch EMF lines on stdout, valid, with the documented dimensions.
    let mut stdout = String::new();
    std::io::Read::read_to_string(worker.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let emf: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("every stdout line is JSON")).collect();
    let named = |name: &str| emf.iter().filter(|v| v.get(name).is_some()).cloned().collect::<Vec<_>>();
    let ok = named("SagaSucceeded");
    assert_eq!(ok.len(), 2, "two rotations succeeded: {stdout}");
    assert_eq!(
        (ok[0]["RotationId"].as_str(), ok[0]["TargetKind"].as_str(), ok[0]["Trigger"].as_str()),
        (Some("auth0-ses"), Some("auth0_email_provider"), Some("manual"))
    );
    let dims = &ok[0]["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(dims["Namespace"], "keyturn");
    assert_eq!(dims["Dimensions"], serde_json::json!([["RotationId", "TargetKind", "Trigger"], []]));
    assert_eq!(named("SagaFailed").len(), 1, "the refused rotation");
    assert!(named("SagaStarted").len() >= 2);
    assert!(named("StepDuration").iter().any(|v| v["Step"] == "push_to_target"));
    assert!(!named("WorkerHeartbeat").is_empty(), "the sweeper's heartbeat");
    assert!(named("StepRetries").iter().all(|v| v["StepRetries"].is_number()));
    assert!(logs.contains("shutdown signal received"), "{logs}");
    assert!(logs.lines().all(|l| l.starts_with('{')), "--log-format json gives JSON lines");
    // The worker's own logs hold no secret either.
    let p = env.auth0.provider().unwrap();
    assert!(!logs.contains(&p.secret_access_key));
    assert!(!logs.contains(&env.auth0_client_secret));

    // No worker now: a wait that runs out exits 3 (the saga goes on).
    let (code, out, _) = run(&["rotate", "auth0-ses", "--wait", "--timeout", "2s", "--config", &cfg], &envs);
    assert_eq!(code, 3, "{out}");
    // An AWS endpoint that does not answer is keyturn's/AWS's error: 4.
    let mut dead = envs.clone();
    for (k, v) in dead.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = "http://127.0.0.1:9".into();
        }
    }
    let (code, _, err) = run(&["status", &saga_id, "--config", &cfg], &dead);
    assert_eq!(code, 4, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_shows_why_and_redrive_sends_back() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let dir = tmpdir("dlq");
    let cfg = env.write_config(&dir).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let envs = env.cli_env();
    // Two poison messages, dead-lettered by a worker.
    let engine = std::sync::Arc::new(env.engine("w1"));
    let w = keyturn_testkit::env::RunningWorker::spawn(engine, &env.config.worker);
    for body in ["garbage one", r#"{"v":1,"saga_id":"gone","step":"start","token":"t"}"#] {
        env.clients.sqs.send_message().queue_url(&env.queue_url).message_body(body).send().await.unwrap();
    }
    let start = Instant::now();
    loop {
        let (_, out, _) = run(&["dlq", "list", "--json", "--config", &cfg], &envs);
        if serde_json::from_str::<serde_json::Value>(&out).map(|v| v.as_array().map_or(0, |a| a.len())).unwrap_or(0) == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "poison never reached the DLQ: {out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    w.stop().await;

    let (code, out, _) = run(&["dlq", "list", "--config", &cfg], &envs);
    assert_eq!(code, 0);
    assert!(out.contains("2 message(s) in"), "{out}");
    assert!(out.contains("reason: body is not JSON"), "{out}");
    assert!(out.contains("reason: saga gone does not exist"), "{out}");
    // Listing removes nothing.
    let (_, again, _) = run(&["dlq", "list", "--config", &cfg], &envs);
    assert!(again.contains("2 message(s) in"), "{again}");

    let (code, _, err) = run(&["dlq", "redrive", "--id", "no-such-id", "--config", &cfg], &envs);
    assert_eq!(code, 1);
    assert!(err.contains("not found in the dead-letter queue: no-such-id"), "{err}");
    let (code, _, err) = run(&["dlq", "list", "--queue", "intake", "--config", &cfg], &envs);
    assert_eq!(code, 2, "a configuration mistake");
    assert!(err.contains("has no aws.intake_queue_url"), "{err}");

    let (code, out, _) = run(&["dlq", "redrive", "--all", "--config", &cfg], &envs);
    assert_eq!(code, 0);
    assert!(out.contains("sent 2 message(s) back to"), "{out}");
    let (_, out, _) = run(&["dlq", "list", "--config", &cfg], &envs);
    assert!(out.contains("0 message(s) in"), "{out}");
    let back = keyturn_testkit::env::drain(&env.clients.sqs, &env.queue_url, 2, Duration::from_secs(10)).await;
    let bodies: Vec<&str> = back.iter().map(|(b, _)| b.as_str()).collect();
    assert!(bodies.contains(&"garbage one"), "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_error_page_from_aws_is_reported_on_one_line() {
    // A proxy in front of AWS answering its own HTML 404 page.
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(404).set_body_raw(
            "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n<center><h1>404 Not Found</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n",
            "text/html",
        ))
        .mount(&server)
        .await;
    let dir = tmpdir("html");
    let path = dir.join("keyturn.toml");
    std::fs::write(&path, "[aws]\nqueue_url = \"q\"\ndlq_url = \"d\"\ntable = \"t\"\ntopic_arn = \"arn\"\nkms_key_id = \"k\"\n").unwrap();
    let envs = vec![
        ("AWS_ENDPOINT_URL", server.uri()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let (code, _, err) = tokio::task::spawn_blocking(move || run(&["status", "some-saga", "--config", path.to_str().unwrap()], &envs)).await.unwrap();
    assert_eq!(code, 4, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line, not the page: {err}");
    assert!(err.contains("HTTP404") && err.contains("HTTP 404: 404 Not Found"), "{err}");
    assert!(!err.contains("<html") && !err.contains("nginx"), "{err}");
}

/// Environment pointing the AWS SDK at `endpoint`.
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

const MINIMAL: &str = "[aws]\nqueue_url = \"q\"\ndlq_url = \"d\"\ntable = \"t\"\ntopic_arn = \"arn\"\nkms_key_id = \"k\"\n";

#[test]
fn usage_mistakes_exit_2_before_any_aws_call() {
    // A listener standing in for AWS: any connection to it is an AWS call.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let envs = aws_env(&format!("http://{}", listener.local_addr().unwrap()));
    let dir = tmpdir("usage");
    let cfg = dir.join("keyturn.toml");
    std::fs::write(&cfg, MINIMAL).unwrap();
    let cfg = cfg.to_str().unwrap();
    let missing = dir.join("missing.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["check-config", "--config", "ssm:"], "name the parameter"),
        (vec!["check-config", "--config", "s3://bucket"], "name the bucket and the object key"),
        (vec!["list", "--config", "s3://bucket/"], "name the bucket and the object key"),
        (vec!["provide", "some-saga", "--config", cfg], "no token given"),
        (vec!["plan", "--event", missing.to_str().unwrap(), "--config", cfg], "cannot read"),
    ];
    for (args, says) in cases {
        let (code, _, err) = run(&args, &envs);
        assert_eq!(code, keyturn::cli::exit::USAGE, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(listener.accept().is_err(), "{args:?} called AWS before refusing");
    }
    // The starter file in the repository is valid.
    let starter = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../keyturn.toml");
    let (code, out, err) = run(&["check-config", "--config", starter.to_str().unwrap()], &envs);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 rotation(s): auth0-ses)"), "{out}");
    // An empty file and a missing key say what is missing, with the table and its line.
    std::fs::write(dir.join("empty.toml"), "").unwrap();
    let (code, _, err) = run(&["check-config", "--config", dir.join("empty.toml").to_str().unwrap()], &envs);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no [aws] table: keyturn needs [aws] with queue_url, dlq_url, table, topic_arn and kms_key_id"), "{err}");
    std::fs::write(dir.join("notable.toml"), format!("# mine\n{}", MINIMAL.replace("table = \"t\"\n", ""))).unwrap();
    let (code, _, err) = run(&["check-config", "--config", dir.join("notable.toml").to_str().unwrap()], &envs);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[aws]: missing key `table` (the table begins on line 2)"), "{err}");
}

#[test]
fn a_silent_endpoint_ends_at_the_deadline_and_aws_errors_are_one_line() {
    // Accepts connections (the kernel completes them into the backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let envs = aws_env(&format!("http://{}", silent.local_addr().unwrap()));
    let dir = tmpdir("deadline");
    let cfg = dir.join("keyturn.toml");
    std::fs::write(&cfg, MINIMAL).unwrap();
    let started = Instant::now();
    let (code, _, err) = run(&["status", "some-saga", "--deadline", "2s", "--config", cfg.to_str().unwrap()], &envs);
    let took = started.elapsed();
    assert_eq!(code, keyturn::cli::exit::ERROR, "{err}");
    assert!(err.contains("no result within 2s") && err.contains("--deadline"), "{err}");
    assert!(took < Duration::from_secs(20), "gave up at the deadline, not after the SDK's retries: {took:?}");
    drop(silent);

    // Connection refused: one line naming the service, operation and cause.
    let (code, _, err) = run(&["status", "some-saga", "--config", cfg.to_str().unwrap()], &aws_env("http://127.0.0.1:9"));
    assert_eq!(code, 4, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: AWS dynamodb.GetItem failed: DispatchFailure: could not send the request: "), "{err}");
    assert!(err.len() < 300, "no SDK internals ({} characters): {err}", err.len());
}
