//! The command line's shape: clap's types for the global flags and each
//! subcommand, and what a parsed command implies (budget, output).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::parse_duration;

/// keyturn rotates long-lived credentials held by outside services, as
/// durable sagas on SQS + DynamoDB.
///
/// Configuration comes from a TOML file or an SSM parameter or S3 object
/// (see docs/configuration.md).
/// AWS credentials, region and endpoints come from the standard AWS
/// environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...).
///
/// Exit codes: 0 succeeded; 1 the saga ended another way (failed,
/// compensated, refused, needs attention, rolled back; `init --check`: something
/// is missing); 2 usage or configuration error (also an unknown saga); 3 still
/// running when the wait ran out; 4 keyturn or AWS error (also no result within
/// --deadline); 5 refused in the saga's current state (e.g. rollback outside
/// the grace period, resolve against the evidence, a rotation held back by
/// quarantine or by a saga that needs attention).
#[derive(Debug, Parser)]
#[command(name = "keyturn", version, propagate_version = true)]
pub struct Cli {
    /// Configuration: a file path, `ssm:<parameter name>` (SSM Parameter
    /// Store) or `s3://<bucket>/<key>`. The worker picks up new versions at
    /// every sweep and on SIGHUP.
    #[arg(long, short, env = "KEYTURN_CONFIG", global = true, default_value = "keyturn.toml")]
    pub config: String,
    /// Log format on stderr (`json` for CloudWatch Logs Insights; Lambda can
    /// set it with KEYTURN_LOG_FORMAT).
    #[arg(long, global = true, value_enum, default_value = "text", env = "KEYTURN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// A one-shot command that has not finished after this long gives up
    /// (exit 4), e.g. against an endpoint that accepts connections but never
    /// answers; with --wait, the wait's --timeout comes on top. Not for
    /// `worker` and `lambda`.
    #[arg(long, global = true, env = "KEYTURN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Log at debug level on stderr (the full error chain of a failed AWS call).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the messages of a dead-letter queue with the reason each is there.
    /// Nothing is removed.
    List {
        /// Which dead-letter queue.
        #[arg(long, value_enum, default_value = "steps")]
        queue: QueueName,
        /// Print the messages as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to their queue (after fixing what put them there).
    Redrive {
        /// Which dead-letter queue.
        #[arg(long, value_enum, default_value = "steps")]
        queue: QueueName,
        /// Message ids to send back (from `keyturn dlq list`).
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Send back every message.
        #[arg(long)]
        all: bool,
    },
}

/// Which queue's DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueName {
    /// The step queue (saga steps).
    Steps,
    /// The priority step queue (emergencies, steps a person waits on).
    Priority,
    /// The intake queue (EventBridge events).
    Intake,
}

/// Which key a resolved saga keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeepArg {
    /// The target uses the new key: retire the old one.
    New,
    /// The target uses the old key: retire the new one.
    Old,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: poll the step queue and run saga steps until SIGTERM/Ctrl-C.
    Worker,
    /// Ask for a rotation of a configured credential (enqueues it; a worker runs it).
    ///
    /// A second request for a credential already being rotated returns the
    /// running saga instead of starting another.
    #[command(mut_arg("wait", |a| a.help("Follow the saga's steps live; exit non-zero unless it succeeds.")), mut_arg("timeout", |a| a.default_value("30m")))]
    Rotate {
        /// Rotation id from the configuration (`[[rotation]] id`).
        rotation: String,
        /// SCIM token rotations: the creation date (YYYY-MM-DD, as the IAM
        /// Identity Center console lists it) of the token in use today. keyturn
        /// uses it at the end to tell you which token to delete.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        old_token_created: Option<u64>,
        /// SCIM token rotations: the ID of the token in use today, as the console lists it.
        #[arg(long, requires = "old_token_created", value_name = "ID")]
        old_token_id: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Hand keyturn a new credential you created by hand (an IAM Identity
    /// Center SCIM token) for a saga that is waiting for it.
    ///
    /// The token is read from a prompt that does not echo when standard input
    /// is a terminal, otherwise from standard input (e.g. `keyturn provide
    /// SAGA < token-file`), or from a Secrets Manager secret with
    /// --from-secret. It is never taken from the command line, where shell
    /// history and the process list would keep it. keyturn stores it only
    /// KMS-encrypted, erases it once it is saved in the target, then runs the
    /// target's test, saves it there only if the test passes, and checks the
    /// target.
    #[command(mut_arg("wait", |a| a.help("Wait until the target took the token (or refused it) and print the outcome.")), mut_arg("timeout", |a| a.default_value("10m")))]
    Provide {
        /// The saga waiting for the new token.
        saga_id: String,
        /// Read the token from this Secrets Manager secret (name or ARN).
        #[arg(long, value_name = "SECRET_ID")]
        from_secret: Option<String>,
        /// With --from-secret: the JSON key holding the token in the secret.
        #[arg(long, requires = "from_secret")]
        json_key: Option<String>,
        /// The creation date (YYYY-MM-DD) of the token in use today, if not
        /// given to `keyturn rotate`.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        old_token_created: Option<u64>,
        /// The ID of the token in use today, as the console lists it.
        #[arg(long, requires = "old_token_created", value_name = "ID")]
        old_token_id: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Confirm what a saga asked you for: that you deleted the old credential
    /// (SCIM token), that IAM Identity Center trusts the new SAML signing
    /// certificate, or that sign-in works with it (`--broken`: it does not).
    #[command(mut_arg("wait", |a| a.help("Wait for the completion notice to be sent.")), mut_arg("timeout", |a| a.default_value("5m")))]
    Confirm {
        /// The saga that asked you.
        saga_id: String,
        /// Sign-in does not work with the new certificate: switch back to the old one.
        #[arg(long)]
        broken: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show a saga's timeline (every step attempt, its outcome and error), or,
    /// given a rotation id, the rotation's quarantine state and recent sagas.
    Status {
        /// A saga id, or a rotation id from the configuration.
        saga_id: String,
        /// Print the saga as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List recent sagas and their states, newest first.
    List {
        /// How many sagas to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the sagas as a JSON array (the fields of `status --json`).
        #[arg(long)]
        json: bool,
    },
    /// Roll back during the grace period: reactivate the old key.
    ///
    /// Possible only after the old key was deactivated and before it is
    /// deleted. The target keeps the new key (its old secret cannot be put
    /// back); both keys end up active and the saga ends as rolled_back.
    #[command(mut_arg("wait", |a| a.help("Wait for the worker to finish the rollback.")), mut_arg("timeout", |a| a.default_value("10m")))]
    Rollback {
        /// The saga in its grace period.
        saga_id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Resolve a saga that stopped in needs attention with both keys in place:
    /// say which key the target uses, and keyturn retires the other one the
    /// safe way (deactivate, grace period, last-use check, delete).
    ///
    /// keyturn first gathers the evidence (both keys' last use by the
    /// target's service since the saga stopped, which keys still exist, what
    /// the target reports) and refuses a choice the evidence contradicts,
    /// unless --force. `keyturn status <saga>` shows the latest evidence.
    #[command(mut_arg("wait", |a| a.help("Follow the saga until it ends (it includes the grace period).")), mut_arg("timeout", |a| a.default_value("30m")))]
    Resolve {
        /// The saga that needs attention.
        saga_id: String,
        /// The key the target uses and that stays: `new` or `old`.
        #[arg(long, value_enum)]
        keep: KeepArg,
        /// Resolve even when the evidence says the target uses the other key.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Dry run: print what keyturn would do for an event, or for the key-age
    /// scan — which rotations would start, which keys would be created,
    /// deactivated and deleted, which targets patched — and change nothing.
    ///
    /// Reads IAM and the saga table only.
    Plan {
        /// An EventBridge event (JSON file) as it would arrive on the intake queue.
        #[arg(long, conflicts_with = "scan", required_unless_present = "scan")]
        event: Option<PathBuf>,
        /// The scheduled scan of rotations with a [rotation.schedule]: key ages
        /// (max_age) and when each rotation starts before its credential
        /// expires (before_expiry).
        #[arg(long)]
        scan: bool,
        /// Print `{"plan": [lines]}` instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lambda mode: serve SQS event source mappings (step and intake queues)
    /// and scheduled `{"keyturn":"sweep"}` events through the Lambda runtime
    /// API. Also chosen automatically when run as a Lambda `bootstrap` with no
    /// arguments.
    Lambda,
    /// Lift a rotation's quarantine, so automatic triggers start it again.
    Release {
        /// Rotation id from the configuration.
        rotation: String,
        /// Print `{"rotation_id", "lifted"}` instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queues: what is there and why, and sending it back after a fix.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Preflight: check the deployed environment and every configured
    /// rotation, changing nothing; run it before the first rotation.
    ///
    /// Environment: AWS credentials, the table's key, indexes and TTL, the
    /// step and intake queues (dead-letter queue, redrive policy, visibility
    /// timeout against the lease), a KMS encrypt/decrypt round trip with
    /// keyturn's encryption context, the SNS topic and the EventBridge bus.
    /// Each rotation: its connectors' own checks (IAM: the user, its keys and
    /// whether a rotation could start, the member role; targets: the token,
    /// its scopes or permissions, the target readable) and IAM policy
    /// simulation of the AWS actions it needs (where IAM answers it).
    ///
    /// Exit code 0 only when every rotation could run now; 1 otherwise
    /// (each failure is printed with its fix); 2 for a configuration error.
    Doctor {
        /// Print the report as one JSON document (`ready`, `environment`, `rotations`).
        #[arg(long)]
        json: bool,
        /// The IAM role (or user) ARN whose permissions policy simulation
        /// checks, e.g. the stack's worker role when you run doctor with your
        /// own credentials. Default: the identity doctor runs as.
        #[arg(long, value_name = "ARN")]
        principal: Option<String>,
    },
    /// An inventory and evidence report: every IAM user access key in the
    /// worker's account and each configured member account (age, status,
    /// last use, the rotation covering it), each rotation's state, the
    /// sagas of a period, and findings with their fixes (docs/operators.md).
    Report(crate::report::Args),
    /// Create (or bring up to date) the AWS resources keyturn needs without
    /// the stack: the saga table with its indexes and TTL, the step, priority
    /// step and intake queues with their dead-letter queues, the
    /// notification topic and a KMS key; then print the `[aws]` section for
    /// keyturn.toml. Run again, it changes nothing that is already right.
    ///
    /// Reads no configuration file. AWS credentials and region come from the
    /// standard environment. With --check it changes nothing and exits 1 when
    /// something is missing.
    Init {
        /// Change nothing: list what is missing or different (exit 1 if anything is).
        #[arg(long)]
        check: bool,
        /// Name prefix: `<prefix>-sagas`, `<prefix>-steps`, `<prefix>-steps-dlq`,
        /// `<prefix>-steps-priority`, `<prefix>-intake`, `<prefix>-notifications`, `alias/<prefix>`.
        #[arg(long, default_value = "keyturn")]
        prefix: String,
        /// The saga table's name, if not `<prefix>-sagas` (e.g. a table made by hand).
        #[arg(long)]
        table: Option<String>,
        /// Visibility timeout of the queues; keep it equal to `[worker] visibility_timeout`.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        visibility_timeout: Duration,
        /// Receives before SQS itself moves a message to its dead-letter queue.
        #[arg(long, default_value_t = 5)]
        max_receive_count: u32,
    },
}

/// Parse `YYYY-MM-DD` (UTC midnight) into milliseconds; no dates in the future.
pub fn parse_date(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid date {s:?}: expected YYYY-MM-DD, e.g. 2025-12-01");
    if s.len() != 10 || s.as_bytes()[4] != b'-' || s.as_bytes()[7] != b'-' {
        return Err(bad());
    }
    let dt = aws_smithy_types::DateTime::from_str(&format!("{s}T00:00:00Z"), aws_smithy_types::date_time::Format::DateTime).map_err(|_| bad())?;
    let ms = dt.to_millis().map_err(|_| bad())?;
    if ms < 0 {
        return Err(bad());
    }
    if ms as u64 > crate::clock::Clock::now_ms(&crate::clock::SystemClock) {
        return Err(format!("date {s} is in the future: give the creation date of the token in use today"));
    }
    Ok(ms as u64)
}

/// The flags of a command one can follow (`rotate`, `provide`, `confirm`,
/// `rollback`, `resolve`), flattened into each; a command sets its own
/// `--wait` help and `--timeout` default (`mut_arg`).
#[derive(Debug, Clone, clap::Args)]
pub struct Wait {
    /// Follow the saga; exit non-zero unless it succeeds.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long (e.g. 90s, 15m).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Print one JSON document instead of text: `saga_id`, `exit_code` and `saga` (the record `status --json` prints).
    #[arg(long)]
    pub json: bool,
}

impl Wait {
    /// The wait's limit (every command sets a default).
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(30 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn wait_of(args: &[&str]) -> Wait {
        match Cli::parse_from(args).command {
            Command::Rotate { wait, .. }
            | Command::Provide { wait, .. }
            | Command::Confirm { wait, .. }
            | Command::Rollback { wait, .. }
            | Command::Resolve { wait, .. } => wait,
            other => panic!("not a command one follows: {other:?}"),
        }
    }

    /// The one flattened `Wait` keeps each command's own `--timeout`
    /// default and `--wait` help, as the five copies had them.
    #[test]
    fn each_command_keeps_its_wait_defaults() {
        let min = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(wait_of(&["keyturn", "rotate", "r"]).timeout(), min(30));
        assert_eq!(wait_of(&["keyturn", "provide", "s"]).timeout(), min(10));
        assert_eq!(wait_of(&["keyturn", "confirm", "s"]).timeout(), min(5));
        assert_eq!(wait_of(&["keyturn", "rollback", "s"]).timeout(), min(10));
        assert_eq!(wait_of(&["keyturn", "resolve", "s", "--keep", "new"]).timeout(), min(30));
        let w = wait_of(&["keyturn", "confirm", "s", "--wait", "--timeout", "90s", "--json"]);
        assert!(w.wait && w.json);
        assert_eq!(w.timeout(), Duration::from_secs(90));
        assert!(!wait_of(&["keyturn", "rotate", "r"]).wait);
        let mut cli = Cli::command();
        cli.build();
        let help = |name: &str| cli.find_subcommand(name).unwrap().clone().render_long_help().to_string();
        let rotate = help("rotate");
        assert!(rotate.contains("Follow the saga's steps live") && rotate.contains("[default: 30m]"), "{rotate}");
        let confirm = help("confirm");
        assert!(confirm.contains("Wait for the completion notice to be sent") && confirm.contains("[default: 5m]"), "{confirm}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
