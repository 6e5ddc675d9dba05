//! The `keyturn` command line. `main.rs` only parses and calls [`run`].

mod args;
mod commands;
mod render;

use std::time::Duration;

pub use args::{parse_date, Cli, Command, DlqCommand, KeepArg, LogFormat, QueueName, Wait};
pub use commands::{clean_token, run};
pub use render::{follow, follow_until, timeline, Out};

/// Logs go to stderr. `RUST_LOG` overrides the default level: `info` for
/// the worker, `warn` for one-shot commands (their output is on stdout).
pub fn init_tracing(format: LogFormat, command: &Command, verbose: bool) {
    use std::io::IsTerminal;
    let default = match command {
        _ if verbose => "keyturn=debug,info",
        Command::Worker | Command::Lambda => "info,aws_config=warn,aws_smithy_runtime=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

impl Command {
    fn wants_json(&self) -> bool {
        match self {
            Command::Rotate { wait, .. }
            | Command::Provide { wait, .. }
            | Command::Confirm { wait, .. }
            | Command::Rollback { wait, .. }
            | Command::Resolve { wait, .. } => wait.json,
            Command::Release { json, .. } | Command::Plan { json, .. } | Command::Doctor { json, .. } => *json,
            _ => false,
        }
    }
}

/// A usage or configuration mistake on the command line (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The command is not possible in the saga's current state (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The documented exit codes: the one table `keyturn --help`, docs/cli.md
/// and the tests share (tests/tests/docs.rs holds the three in step).
pub mod exit {
    pub const SUCCEEDED: i32 = 0;
    pub const ENDED_OTHERWISE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const TIMED_OUT: i32 = 3;
    pub const ERROR: i32 = 4;
    pub const REFUSED: i32 = 5;
    /// Every code with the words that begin its meaning in `--help` and in
    /// docs/cli.md's table.
    pub const TABLE: [(i32, &str); 6] = [
        (SUCCEEDED, "succeeded"),
        (ENDED_OTHERWISE, "the saga ended another way"),
        (USAGE, "usage or configuration error"),
        (TIMED_OUT, "still running when the wait ran out"),
        (ERROR, "keyturn or AWS error"),
        (REFUSED, "refused in the saga's current state"),
    ];
}

/// The exit code for an error `run` returned: configuration and usage
/// mistakes 2, refusals 5, everything else (AWS, network, keyturn itself) 4.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<crate::config::ConfigError>() || cause.is::<Usage>() {
            return exit::USAGE;
        }
        if cause.is::<Refusal>() {
            return exit::REFUSED;
        }
        if let Some(err) = cause.downcast_ref::<crate::error::Error>() {
            return match err {
                crate::error::Error::Config(_) => exit::USAGE,
                crate::error::Error::Refused { .. } => exit::REFUSED,
                _ => exit::ERROR,
            };
        }
    }
    exit::ERROR
}

impl Command {
    /// One-shot commands whose output is meant for a terminal or a pipe.
    pub fn prints_for_a_pipe(&self) -> bool {
        !matches!(self, Command::Worker | Command::Lambda)
    }
}

/// A one-shot command ran out of its `--deadline`: exit code 4.
#[derive(Debug, thiserror::Error)]
#[error("no result within {}: the command gave up (--deadline); is AWS_ENDPOINT_URL right and the network reachable? A longer --deadline gives it more time", humantime(*.0))]
pub struct Deadline(pub Duration);

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Command {
    /// How long the command may take in all: `deadline`, plus the wait's
    /// `--timeout` with `--wait`; `None` for the worker and Lambda.
    pub fn budget(&self, deadline: Duration) -> Option<Duration> {
        match self {
            Command::Worker | Command::Lambda => None,
            Command::Rotate { wait, .. }
            | Command::Provide { wait, .. }
            | Command::Confirm { wait, .. }
            | Command::Rollback { wait, .. }
            | Command::Resolve { wait, .. }
                if wait.wait =>
            {
                Some(deadline + wait.timeout())
            }
            _ => Some(deadline),
        }
    }
}
