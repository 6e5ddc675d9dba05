//! Configuration outside the image: `keyturn worker --config ssm:<name>`
//! reads it from moto's SSM Parameter Store, picks up a new version while
//! running (a rotation added in version 2 runs), and refuses an invalid
//! version 3 — announced on the topic — while version 2 keeps running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyturn_testkit::env::{keyturn_bin, rotation_toml, Options, TestEnv};

fn run(args: &[&str], envs: &[(&'static str, String)]) -> (i32, String, String) {
    let out = Command::new(keyturn_bin()).args(args).envs(envs.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_picks_up_a_new_version_and_refuses_an_invalid_one() {
    let env = TestEnv::new(Options::default()).await.unwrap();
    let ssm = aws_sdk_ssm::Client::new(&env.sdk);
    let put = |text: String| {
        let ssm = ssm.clone();
        async move {
            ssm.put_parameter().name("/keyturn/config").value(text).r#type(aws_sdk_ssm::types::ParameterType::String).overwrite(true).send().await.unwrap()
        }
    };
    put(env.config_text.clone()).await;
    let envs = env.cli_env();

    let (code, out, err) = run(&["check-config", "--config", "ssm:/keyturn/config"], &envs);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ssm:/keyturn/config (v1): ok (1 rotation(s): auth0-ses)"), "{out}");

    let mut worker = Command::new(keyturn_bin())
        .args(["worker", "--config", "ssm:/keyturn/config"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its log, read as it comes: version 2 is put only once the worker
    // runs on version 1.
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = std::thread::spawn({
        let (logs, stderr) = (logs.clone(), worker.stderr.take().unwrap());
        move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let up = Instant::now();
    while !logs.lock().unwrap().contains("worker started") {
        assert!(up.elapsed() < Duration::from_secs(30), "the worker did not start: {}", logs.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Version 2 adds a rotation for a second user.
    env.clients.iam.create_user().user_name("mailer-2").send().await.unwrap();
    env.clients.iam.create_access_key().user_name("mailer-2").send().await.unwrap();
    let secret_ref = r#"{ secrets_manager = "keyturn/auth0", json_key = "client_secret" }"#;
    let v2 = format!(
        "{}{}",
        env.config_text,
        rotation_toml("mailer-2", "mailer-2", "second.eu.auth0.com", &env.auth0.uri(), secret_ref, "grace_period = \"0s\"")
    );
    put(v2.clone()).await;
    let dir = std::env::temp_dir().join(format!("keyturn-reload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let v2_file = dir.join("keyturn.toml");
    std::fs::write(&v2_file, &v2).unwrap();
    // The CLI (reading version 2 from a file) asks; the running worker must know the rotation to run it.
    let started = Instant::now();
    let (code, out, err) = tokio::task::spawn_blocking({
        let (f, envs) = (v2_file.to_str().unwrap().to_string(), envs.clone());
        move || run(&["rotate", "mailer-2", "--wait", "--timeout", "60s", "--config", &f], &envs)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the worker ran a rotation added in version 2:\n{out}\n{err}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Version 3 is invalid: refused, announced, and version 2 keeps running.
    put(v2.replace("grace_period = \"0s\"", "grace = \"0s\"")).await;
    let n = env.notifications(1, Duration::from_secs(15)).await;
    let rejected: Vec<_> = n.iter().filter(|n| n.attributes["event"] == "keyturn.config_rejected").collect();
    assert_eq!(rejected.len(), 1, "announced once: {:?}", n.iter().map(|n| n.attributes["event"].clone()).collect::<Vec<_>>());
    assert_eq!(rejected[0].document["refused_version"], "v3");
    assert_eq!(rejected[0].document["running_version"], "v2");
    assert!(rejected[0].document["problem"].as_str().unwrap().contains("policy.grace: unknown key"), "{}", rejected[0].document);
    let (code, out, err) = tokio::task::spawn_blocking({
        let (f, envs) = (v2_file.to_str().unwrap().to_string(), envs.clone());
        move || run(&["rotate", "mailer-2", "--wait", "--timeout", "60s", "--config", &f], &envs)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "version 2 still runs:\n{out}\n{err}");

    Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    worker.wait().unwrap();
    reader.join().unwrap();
    let logs = logs.lock().unwrap().clone();
    assert!(logs.contains("configuration version loaded") && logs.contains("v2"), "{logs}");
    assert!(logs.contains("new configuration version refused"), "{logs}");
    let _ = std::fs::remove_dir_all(dir);
}
