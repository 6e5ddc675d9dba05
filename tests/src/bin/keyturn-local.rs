//! A complete local rotation, end to end, on one machine with no network.
//!
//! Starts `moto_server` and the fake Auth0, creates keyturn's resources and
//! an IAM user with one key, writes a configuration file, then runs the real
//! `keyturn` binary as a user would — `keyturn worker` in the background and
//! `keyturn rotate auth0-ses --wait` in the foreground, configured only by
//! the file and the standard AWS environment variables — prints the timeline
//! and the notification that arrived through SNS, stops the worker with
//! SIGTERM, and stops everything.

use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use keyturn_testkit::auth0_fake::Fault;
use keyturn_testkit::env::{keyturn_bin, Options, TestEnv, USER};
use keyturn_testkit::process::Guard;

/// Run one complete credential rotation locally.
///
/// Starts moto_server (the AWS emulator: pip install 'moto[server]>=5.2,<6') and a
/// fake Auth0 on loopback, creates the queue, table, topic and KMS key, an IAM user
/// `auth0-ses-sender` with one access key, and rotates that key into the fake Auth0's
/// email provider by running `keyturn worker` and `keyturn rotate auth0-ses --wait`.
/// Prints the live timeline and the notification, then stops everything.
#[derive(Debug, Parser)]
#[command(name = "keyturn-local", verbatim_doc_comment)]
struct Args {
    /// Make Auth0 answer 403 insufficient_scope, to watch a safe failure:
    /// the new key is deleted and the old one left untouched
    #[arg(long)]
    fail_auth0: bool,
    /// Where to write keyturn.toml and worker.log
    #[arg(long, value_name = "DIR", default_value = "target/keyturn-local")]
    dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<i32> {
    let bin = keyturn_bin();
    println!("== starting moto_server and the fake Auth0 on loopback");
    let env = TestEnv::new(Options::default()).await?;
    let config = env.write_config(&args.dir)?;
    let log_path = args.dir.join("worker.log");
    println!("   moto:   {}", env.moto.endpoint);
    println!("   auth0:  {}", env.auth0.uri());
    println!("   config: {}", config.display());
    if args.fail_auth0 {
        env.auth0.script_patch(Fault::InsufficientScope);
        println!("   Auth0 will answer the PATCH with 403 insufficient_scope");
    }
    let before = env.user_keys().await;
    println!("== IAM user {USER} has: {}", ids(&before));
    println!("   Auth0's email provider holds: {}", env.auth0.provider().map(|p| p.access_key_id).unwrap_or_default());

    let keyturn = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(args).arg("--config").arg(&config).envs(env.cli_env()).stdin(Stdio::null());
        c
    };
    println!("== keyturn worker   (logs: {})", log_path.display());
    let mut worker = Guard::spawn(keyturn(&["worker"]).stderr(std::fs::File::create(&log_path)?).stdout(Stdio::null()))?;

    println!("== keyturn rotate auth0-ses --wait");
    let rotate = tokio::task::spawn_blocking({
        let mut c = keyturn(&["rotate", "auth0-ses", "--wait", "--timeout", "2m"]);
        move || c.status()
    })
    .await??;

    let list = keyturn(&["list", "--json"]).output()?;
    let sagas: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    let saga_id = sagas[0]["saga_id"].as_str().unwrap_or_default().to_string();
    println!("\n== keyturn status {saga_id}");
    keyturn(&["status", &saga_id]).status()?;

    let after = env.user_keys().await;
    println!("\n== IAM user {USER} now has: {}", ids(&after));
    println!("   Auth0's email provider holds: {}", env.auth0.provider().map(|p| p.access_key_id).unwrap_or_default());

    println!("\n== notification received through the SNS topic's SQS subscription");
    for n in env.notifications(1, Duration::from_secs(10)).await {
        println!("Subject: {}", n.subject);
        let mut attrs: Vec<_> = n.attributes.iter().collect();
        attrs.sort();
        for (k, v) in attrs {
            println!("Attribute {k} = {v}");
        }
        println!("{}", serde_json::to_string_pretty(&n.document)?);
    }

    println!("\n== stopping the worker (SIGTERM), moto and the fake Auth0");
    worker.terminate()?;
    let status = worker.wait()?;
    println!("   worker exited: {status}");
    Ok(rotate.code().unwrap_or(1))
}

fn ids(keys: &[keyturn::saga::KeyRef]) -> String {
    keys.iter().map(|k| format!("{} ({})", k.id, if k.active { "active" } else { "inactive" })).collect::<Vec<_>>().join(", ")
}
