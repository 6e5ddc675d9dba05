//! What each subcommand does: `run` and the commands' bodies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::args::{Cli, Command, DlqCommand, KeepArg, QueueName, Wait};
use super::render::{finish, follow, follow_until, quarantine_line, say, timeline, Out};
use super::{exit, Deadline, Refusal, Usage};
use crate::clock::fmt_ms;
use crate::config::Config;
use crate::saga::Saga;
use crate::store::Created;

/// Run a parsed command within its budget ([`Command::budget`]). Returns
/// the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command.budget(cli.deadline) {
        None => run_command(cli).await,
        Some(budget) => tokio::time::timeout(budget, run_command(cli)).await.unwrap_or_else(|_| Err(Deadline(budget).into())),
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<i32> {
    let out = Out { json: cli.command.wants_json() };
    if let Command::Init { check, prefix, table, visibility_timeout, max_receive_count } = &cli.command {
        return init(*check, prefix, table.clone(), *visibility_timeout, *max_receive_count).await;
    }
    let source = crate::config_source::ConfigSource::parse(&cli.config).map_err(Usage)?;
    // A configuration in SSM or S3 is read with the standard AWS chain
    // (region from AWS_REGION); the file's own [aws] region applies after.
    let bootstrap = if source.needs_aws() { Some(crate::aws::load(None).await) } else { None };
    let (cfg, version) = match source.load(bootstrap.as_ref()).await {
        Ok(c) => c,
        Err(crate::config_source::LoadError::Invalid(e)) => return Err(e.into()),
        Err(crate::config_source::LoadError::Fetch(e)) => return Err(e.into()),
    };
    if let Command::CheckConfig = cli.command {
        println!(
            "{} ({version}): ok ({} rotation(s): {})",
            source.describe(),
            cfg.rotations.len(),
            cfg.rotations.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
        );
        return Ok(0);
    }
    let sdk = crate::aws::load(cfg.aws.region.as_deref()).await;
    if matches!(cli.command, Command::Status { .. } | Command::List { .. }) {
        let store = crate::store::Store::new(aws_sdk_dynamodb::Client::new(&sdk), &cfg.aws.table).with_retention(cfg.worker.retention.0);
        return table_command(cli.command, &cfg, store).await;
    }
    if let Command::Report(args) = &cli.command {
        crate::report::run(&cfg, &sdk, args).await?;
        return Ok(0);
    }
    let clients = crate::aws::Clients::new(sdk);
    if let Command::Doctor { json, principal } = cli.command {
        return doctor(&cfg, &clients, &source, &version, principal, json).await;
    }
    let engine = Arc::new(crate::app::engine(&cfg, &clients, crate::app::worker_id()));
    let cx = Context { out, config: cli.config, cfg, clients, engine, source, bootstrap, version };
    match cli.command {
        Command::CheckConfig | Command::Status { .. } | Command::List { .. } | Command::Doctor { .. } | Command::Init { .. } | Command::Report(_) => {
            unreachable!("answered above")
        }
        Command::Worker => worker(cx).await,
        Command::Lambda => lambda(cx).await,
        Command::Rotate { rotation, wait, old_token_created, old_token_id } => {
            rotate(&cx, &rotation, &wait, old_token(old_token_created, old_token_id)).await
        }
        Command::Provide { saga_id, from_secret, json_key, old_token_created, old_token_id, wait } => {
            provide(&cx, &saga_id, from_secret, json_key, old_token(old_token_created, old_token_id), &wait).await
        }
        Command::Confirm { saga_id, broken, wait } => confirm(&cx, &saga_id, broken, &wait).await,
        Command::Release { rotation, .. } => release(&cx, &rotation).await,
        Command::Dlq { command } => dlq(&cx, command).await,
        Command::Plan { event, scan, .. } => plan(&cx, event, scan).await,
        Command::Resolve { saga_id, keep, force, wait } => resolve(&cx, &saga_id, keep, force, &wait).await,
        Command::Rollback { saga_id, wait } => rollback(&cx, &saga_id, &wait).await,
    }
}

/// What a command that acts through the engine works with.
struct Context {
    out: Out,
    /// The `--config` argument, for messages.
    config: String,
    cfg: Config,
    clients: crate::aws::Clients,
    engine: Arc<crate::engine::Engine<crate::queue::SqsQueue>>,
    source: crate::config_source::ConfigSource,
    bootstrap: Option<aws_config::SdkConfig>,
    version: String,
}

/// `keyturn doctor`: the preflight of the environment and every rotation.
async fn doctor(
    cfg: &Config,
    clients: &crate::aws::Clients,
    source: &crate::config_source::ConfigSource,
    version: &str,
    principal: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    if let Some(p) = &principal {
        if crate::accounts::role_account(p).is_none() && !crate::doctor::is_user_arn(p) {
            return Err(Usage(format!("--principal {p:?} is not an IAM role or user ARN (arn:aws:iam::<account>:role/<name>)")).into());
        }
    }
    let http = crate::connectors::http_client();
    let secrets = crate::secrets::SecretResolver::new(clients.secrets.clone());
    let built = crate::app::build_rotations(cfg, clients, &secrets, &http, &Arc::default(), &crate::clock::system());
    let rotations: Vec<_> = cfg.rotations.iter().filter_map(|r| built.built.get(&r.id).cloned()).collect();
    let report = crate::doctor::run(cfg, clients, &rotations, principal.as_deref()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("keyturn doctor: {} ({version}); nothing was changed\n", source.describe());
        print!("{}", crate::doctor::render(&report));
    }
    Ok(if report.ready { exit::SUCCEEDED } else { exit::ENDED_OTHERWISE })
}

/// `keyturn worker`: poll the queues until a shutdown signal.
async fn worker(cx: Context) -> anyhow::Result<i32> {
    let intake = crate::app::intake_queue(&cx.cfg, &cx.clients).map(Arc::new);
    let watch = crate::worker::ConfigWatch::new(cx.source.clone(), cx.bootstrap.clone(), cx.cfg.clone(), cx.version.clone());
    let watch = tokio::spawn(crate::worker::watch_config(cx.engine.clone(), watch));
    crate::worker::run(cx.engine.clone(), &cx.cfg.worker, intake, crate::worker::shutdown_signal()).await;
    watch.abort();
    Ok(0)
}

/// `keyturn lambda`: serve the Lambda runtime API.
async fn lambda(cx: Context) -> anyhow::Result<i32> {
    let intake = crate::app::intake_queue(&cx.cfg, &cx.clients);
    let (queue_url, intake_url, jitter) = (cx.cfg.aws.queue_url.clone(), cx.cfg.aws.intake_queue_url.clone(), cx.cfg.worker.scan_jitter.0);
    let priority_url = cx.cfg.aws.priority_queue_url.clone();
    let engine = cx.engine.clone();
    let intake = Arc::new(intake);
    // The scheduled sweep also looks for a new configuration version.
    let watch =
        Arc::new(tokio::sync::Mutex::new(crate::worker::ConfigWatch::new(cx.source.clone(), cx.bootstrap.clone(), cx.cfg.clone(), cx.version.clone())));
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<serde_json::Value>| {
        let (engine, intake, queue_url, intake_url, watch) = (engine.clone(), intake.clone(), queue_url.clone(), intake_url.clone(), watch.clone());
        let priority_url = priority_url.clone();
        async move {
            if crate::lambda::is_sweep(&ev.payload) {
                watch.lock().await.check(&engine, "sweep").await;
            }
            let iq = intake.as_ref().as_ref().zip(intake_url.as_deref());
            crate::lambda::handle_invocation(&engine, &queue_url, priority_url.as_deref(), iq, &ev.payload, jitter)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))?;
    Ok(0)
}

/// `keyturn rotate`.
async fn rotate(cx: &Context, rotation: &str, wait: &Wait, old: Option<crate::saga::KeyRef>) -> anyhow::Result<i32> {
    if cx.cfg.rotation(rotation).is_none() {
        return Err(Usage(format!(
            "no rotation {rotation:?} in {}; configured: {}",
            cx.config,
            cx.cfg.rotations.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    // A person following the rotation (`--wait`) does not wait behind a backlog.
    let req = crate::commands::Request { trigger: "manual".into(), old, person_waits: wait.wait, ..Default::default() };
    let saga_id = match cx.engine.request_with(rotation, req).await.context("requesting the rotation")? {
        Created::New(id) => {
            say!(cx.out, "rotation {rotation}: saga {id} started");
            id
        }
        Created::Existing(id) => {
            if let Some(s) = cx.engine.store.load(&id).await?.filter(|s| s.saga.unresolved()) {
                let v = s
                    .saga
                    .resolution
                    .attention
                    .as_ref()
                    .and_then(|a| a.verdict.as_ref())
                    .map(|v| v.reason.clone())
                    .unwrap_or_else(|| "no evidence checked yet".into());
                return Err(Refusal(format!(
                    "rotation {rotation} not started: saga {id} needs attention with both keys in place and holds the credential (evidence: {v}). Resolve it first: keyturn resolve {id} --keep new|old"
                ))
                .into());
            }
            say!(cx.out, "rotation {rotation}: already in progress as saga {id}");
            id
        }
        Created::Skipped(reason) => return Err(Refusal(format!("rotation {rotation} not started: {reason}")).into()),
    };
    if !wait.wait {
        say!(cx.out, "follow it with: keyturn status {saga_id}");
        return finish(cx.out, &cx.engine.store, &saga_id, 0).await;
    }
    let code = follow(cx.out, &cx.engine.store, &saga_id, wait.timeout()).await?;
    finish(cx.out, &cx.engine.store, &saga_id, code).await
}

/// `keyturn provide`.
async fn provide(
    cx: &Context,
    saga_id: &str,
    from_secret: Option<String>,
    json_key: Option<String>,
    old: Option<crate::saga::KeyRef>,
    wait: &Wait,
) -> anyhow::Result<i32> {
    let token = match from_secret {
        Some(secret_id) => {
            let r = crate::secrets::SecretRef::SecretsManager { secret_id: secret_id.clone(), json_key };
            crate::secrets::SecretResolver::new(cx.clients.secrets.clone()).resolve(&r).await.with_context(|| format!("reading secret {secret_id}"))?
        }
        None => read_token(saga_id)?,
    };
    // A usage mistake (nothing given, not one word) before any AWS call;
    // then the credential in its own source's format (the saga's rotation).
    clean_token(&token, None)?;
    let rotation = cx.engine.store.load(saga_id).await?.and_then(|s| cx.engine.shared.rotations().get(&s.saga.rotation_id).cloned());
    let token = clean_token(&token, rotation.as_ref().map(|r| r.source.as_ref()))?;
    let next = cx.engine.provide(saga_id, &token, old).await?;
    drop(token);
    say!(
        cx.out,
        "saga {saga_id}: new token received ({}) and stored encrypted; keyturn now tests it in the target and saves it only if the test passes",
        next.keys.new_key.as_deref().unwrap_or("")
    );
    if !wait.wait {
        say!(cx.out, "follow it with: keyturn status {saga_id}");
        return finish(cx.out, &cx.engine.store, saga_id, 0).await;
    }
    let code = follow_until(cx.out, &cx.engine.store, saga_id, wait.timeout(), |s| s.awaits_person()).await?;
    finish(cx.out, &cx.engine.store, saga_id, code).await
}

/// `keyturn confirm`.
async fn confirm(cx: &Context, saga_id: &str, broken: bool, wait: &Wait) -> anyhow::Result<i32> {
    let next = if broken { cx.engine.report_broken(saga_id).await? } else { cx.engine.confirm(saga_id).await? };
    let said = match (next.trust.is_some(), broken) {
        (false, _) => "deletion of the old token confirmed; the rotation completes now".to_string(),
        (true, true) => "sign-in reported broken; keyturn switches back to the old credential now".to_string(),
        (true, false) => format!("confirmed; keyturn goes on with {}", next.step),
    };
    say!(cx.out, "saga {saga_id}: {said}");
    if wait.wait {
        // A trust saga waits on the person again after the switch.
        let code = crate::cli::render::follow_until(cx.out, &cx.engine.store, saga_id, wait.timeout(), |s| s.awaits_person()).await?;
        return finish(cx.out, &cx.engine.store, saga_id, code).await;
    }
    finish(cx.out, &cx.engine.store, saga_id, 0).await
}

/// `keyturn release`.
async fn release(cx: &Context, rotation: &str) -> anyhow::Result<i32> {
    let lifted = cx.engine.release(rotation).await?;
    if lifted {
        say!(cx.out, "rotation {rotation}: quarantine lifted; automatic triggers start it again");
    } else {
        say!(cx.out, "rotation {rotation}: was not quarantined");
    }
    if cx.out.json {
        println!("{}", serde_json::json!({"rotation_id": rotation, "lifted": lifted}));
    }
    Ok(0)
}

/// `keyturn dlq list|redrive`.
async fn dlq(cx: &Context, command: DlqCommand) -> anyhow::Result<i32> {
    let pick = |q: QueueName| -> anyhow::Result<crate::queue::SqsQueue> {
        match q {
            QueueName::Steps => Ok(crate::app::sqs_queue(&cx.cfg, &cx.clients)),
            QueueName::Priority => {
                crate::app::priority_queue(&cx.cfg, &cx.clients).ok_or_else(|| Usage(format!("{} has no aws.priority_queue_url", cx.config)).into())
            }
            QueueName::Intake => {
                crate::app::intake_queue(&cx.cfg, &cx.clients).ok_or_else(|| Usage(format!("{} has no aws.intake_queue_url", cx.config)).into())
            }
        }
    };
    match command {
        DlqCommand::List { queue, json } => {
            let q = pick(queue)?;
            let letters = q.dlq_messages(Duration::from_secs(30)).await?;
            for d in &letters {
                q.release(d).await?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                println!("{} message(s) in {}", letters.len(), q.dlq_url);
                for d in &letters {
                    let body: String = d.body.chars().take(160).collect();
                    println!(
                        "{}  sent {}  received {}x\n  reason: {}\n  body:   {body}",
                        d.message_id,
                        d.sent_at.map(fmt_ms).unwrap_or_default(),
                        d.receive_count,
                        d.reason
                    );
                }
            }
            Ok(0)
        }
        DlqCommand::Redrive { queue, ids, all } => {
            let q = pick(queue)?;
            let letters = q.dlq_messages(Duration::from_secs(30)).await?;
            let mut sent = 0;
            for d in &letters {
                if all || ids.contains(&d.message_id) {
                    q.redrive(d).await?;
                    sent += 1;
                } else {
                    q.release(d).await?;
                }
            }
            let missing: Vec<&String> = ids.iter().filter(|id| !letters.iter().any(|d| &&d.message_id == id)).collect();
            println!("sent {sent} message(s) back to {}", q.url);
            if !missing.is_empty() {
                eprintln!("not found in the dead-letter queue: {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
                return Ok(1);
            }
            Ok(0)
        }
    }
}

/// `keyturn plan`.
async fn plan(cx: &Context, event: Option<std::path::PathBuf>, scan: bool) -> anyhow::Result<i32> {
    let lines = match (event, scan) {
        (Some(path), _) => {
            let body = std::fs::read_to_string(&path).map_err(|e| Usage(format!("--event {}: cannot read: {e}", path.display())))?;
            cx.engine.plan_event(&body).await?
        }
        (None, _) => cx.engine.plan_scan().await?,
    };
    say!(cx.out, "plan (dry run, nothing changed):");
    for l in &lines {
        say!(cx.out, "{l}");
    }
    if cx.out.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plan": lines}))?);
    }
    Ok(0)
}

/// `keyturn resolve`.
async fn resolve(cx: &Context, saga_id: &str, keep: KeepArg, force: bool, wait: &Wait) -> anyhow::Result<i32> {
    let keep = match keep {
        KeepArg::New => crate::saga::Keep::New,
        KeepArg::Old => crate::saga::Keep::Old,
    };
    let by = format!("keyturn resolve --keep {}{} by {}", keep.as_str(), if force { " --force" } else { "" }, whoami());
    let (next, verdict) = cx.engine.resolve(saga_id, keep, force, &by).await?;
    say!(cx.out, "saga {saga_id}: resolved, keeping the {} key (evidence: {})", keep.as_str(), verdict.reason);
    say!(
        cx.out,
        "  next: {}",
        match (keep, next.step) {
            (_, crate::saga::Step::Finalize) => "the other key is already gone; the saga ends now".to_string(),
            (crate::saga::Keep::New, _) => "deactivate the old key, wait the grace period, check its last use, delete it".to_string(),
            (crate::saga::Keep::Old, _) => "deactivate the new key, wait the grace period, check its last use, delete it".to_string(),
        }
    );
    if !wait.wait {
        say!(cx.out, "follow it with: keyturn status {saga_id}");
        return finish(cx.out, &cx.engine.store, saga_id, 0).await;
    }
    let code = follow(cx.out, &cx.engine.store, saga_id, wait.timeout()).await?;
    finish(cx.out, &cx.engine.store, saga_id, code).await
}

/// `keyturn rollback`.
async fn rollback(cx: &Context, saga_id: &str, wait: &Wait) -> anyhow::Result<i32> {
    let next = cx.engine.rollback(saga_id).await?;
    let which = if next.step == crate::saga::Step::RestoreNew { "new" } else { "old" };
    say!(cx.out, "rollback of saga {saga_id} requested: the {which} key will be reactivated");
    if wait.wait {
        let code = follow(cx.out, &cx.engine.store, saga_id, wait.timeout()).await?;
        return finish(cx.out, &cx.engine.store, saga_id, code).await;
    }
    finish(cx.out, &cx.engine.store, saga_id, 0).await
}

/// `keyturn init`: no configuration file; the standard AWS environment.
async fn init(check: bool, prefix: &str, table: Option<String>, visibility_timeout: Duration, max_receive_count: u32) -> anyhow::Result<i32> {
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || prefix.len() > 40 {
        return Err(Usage(format!("--prefix {prefix:?}: use 1 to 40 letters, digits, '-' or '_'")).into());
    }
    if visibility_timeout > Duration::from_secs(43_200) {
        return Err(Usage("--visibility-timeout: SQS allows at most 12h".into()).into());
    }
    let sdk = crate::aws::load(None).await;
    let clients = crate::init::Clients {
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        kms: aws_sdk_kms::Client::new(&sdk),
    };
    let plan = crate::init::Plan::new(prefix, table, visibility_timeout, max_receive_count);
    let report = crate::init::run(&clients, &plan, check).await?;
    for i in &report.items {
        let state = match &i.outcome {
            crate::init::Outcome::Found => "ok".to_string(),
            crate::init::Outcome::Created => "created".to_string(),
            crate::init::Outcome::Updated(what) => format!("updated: {}", what.join("; ")),
            crate::init::Outcome::Missing(what) => format!("MISSING: {}", what.join("; ")),
        };
        println!("{:<38} {:<28} {state}", i.what, i.name);
    }
    if check {
        if report.missing() {
            println!("\nsomething is missing: `keyturn init` (without --check) creates or fixes it");
            return Ok(exit::ENDED_OTHERWISE);
        }
        println!("\neverything keyturn needs is there");
    } else if report.changed() {
        println!("\ncreated or updated what was missing");
    } else if report.missing() {
        println!("\nnothing changed, but something needs you (see above)");
    } else {
        println!("\nnothing changed: everything was already there");
    }
    println!("\n# paste into keyturn.toml:\n{}", report.aws_section(sdk.region().map(|r| r.as_ref())));
    Ok(if report.missing() { exit::ENDED_OTHERWISE } else { exit::SUCCEEDED })
}

/// `status` and `list` read only the saga table: they build a DynamoDB
/// client and nothing else.
async fn table_command(command: Command, cfg: &Config, store: crate::store::Store) -> anyhow::Result<i32> {
    match command {
        Command::Status { saga_id, json } if cfg.rotation(&saga_id).is_some() => {
            let (health, _) = store.health(&saga_id).await?;
            let recent: Vec<Saga> = store.recent_of(&saga_id, 5).await?.into_iter().map(|s| s.saga).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"rotation_id": saga_id, "health": health, "recent_sagas": recent}))?);
            } else {
                println!("rotation {saga_id}: {}", quarantine_line(&health));
                println!("  consecutive failed sagas: {}", health.consecutive_failures);
                for s in recent {
                    println!("  {}  {:<15}  {}  {}", s.saga_id, s.status.as_str(), fmt_ms(s.created_at), s.trigger);
                }
            }
            Ok(0)
        }
        Command::Status { saga_id, json } => {
            let s = store.load(&saga_id).await?.ok_or_else(|| Usage(format!("no saga {saga_id} (and no rotation of that id in the configuration)")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s.saga)?);
            } else {
                print!("{}", timeline(&s));
            }
            Ok(0)
        }
        Command::List { limit, json } => {
            let all = store.recent(limit).await?;
            let rows: Vec<&Saga> = all.iter().map(|s| &s.saga).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<36}  {:<16}  {:<15}  {:<14}  started", "saga", "rotation", "status", "step");
                for s in rows {
                    println!("{:<36}  {:<16}  {:<15}  {:<14}  {}", s.saga_id, s.rotation_id, s.status.as_str(), s.step.as_str(), fmt_ms(s.created_at));
                }
                for r in &cfg.rotations {
                    let (h, _) = store.health(&r.id).await?;
                    if h.quarantine.is_some() {
                        println!("rotation {}: {}", r.id, quarantine_line(&h));
                    }
                }
            }
            Ok(0)
        }
        _ => unreachable!("only status and list read the table alone"),
    }
}

/// Who ran a command, for the saga's history.
fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "an operator".into())
}

fn old_token(created: Option<u64>, id: Option<String>) -> Option<crate::saga::KeyRef> {
    created.map(|ms| crate::saga::KeyRef {
        id: id.unwrap_or_else(|| format!("created {}", crate::clock::fmt_date(ms))),
        active: true,
        created_at: Some(ms),
    })
}

/// The token from a no-echo prompt (terminal) or standard input (pipe, file).
fn read_token(saga_id: &str) -> anyhow::Result<secrecy::SecretString> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        let t =
            rpassword::prompt_password(format!("New token for saga {saga_id} (input is not shown): ")).context("reading the token from the terminal")?;
        return Ok(secrecy::SecretString::from(t));
    }
    let mut buf = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut buf).context("reading the token from standard input")?;
    Ok(secrecy::SecretString::from(buf))
}

/// A token is what its source takes (`CredentialSource::check_handed`: one
/// line of printable text, its own size); surrounding whitespace (a file's
/// trailing newline) is not part of it. Errors never include it. Without a
/// source (no such saga or rotation: `provide` then says so), the common format.
pub fn clean_token(token: &secrecy::SecretString, source: Option<&dyn crate::connectors::CredentialSource>) -> anyhow::Result<secrecy::SecretString> {
    use crate::connectors::check::HandedProblem;
    use secrecy::ExposeSecret;
    // The same rules as a token pasted into a handover secret.
    match crate::handover::check_handed(source, token.expose_secret()) {
        Ok(t) => Ok(secrecy::SecretString::from(t.to_string())),
        Err(HandedProblem::Empty) => Err(Usage("no token given: paste it at the prompt, pipe it on standard input, or use --from-secret".into()).into()),
        Err(HandedProblem::TooLong { len, noun }) => {
            Err(Usage(format!("the token is {len} bytes long, more than any {noun}; was the wrong file given?")).into())
        }
        Err(HandedProblem::NotOneWord) => {
            Err(Usage("the token contains spaces, line breaks or control characters; give the token alone, exactly as the console showed it".into())
                .into())
        }
    }
}
