//! Thin entry point: parse, set up logging, run, exit with the command's code.

use clap::Parser;

#[tokio::main]
async fn main() {
    // As a Lambda `bootstrap` the binary is started with no arguments.
    let cli = if std::env::args().len() == 1 && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        keyturn::cli::Cli::parse_from(["keyturn", "lambda"])
    } else {
        keyturn::cli::Cli::parse()
    };
    keyturn::cli::init_tracing(cli.log_format, &cli.command, cli.verbose);
    if cli.command.prints_for_a_pipe() {
        // Metrics come from the worker and Lambda only: a one-shot
        // command's stdout is for the person or script that ran it.
        keyturn::metrics::disable();
        // `keyturn list | head -1`: die quietly of SIGPIPE like any Unix
        // filter, instead of panicking on the closed pipe (Rust ignores
        // SIGPIPE by default). Never for the worker or Lambda.
        #[cfg(unix)]
        // SAFETY: called before any thread writes to stdout; restores the
        // default disposition of one signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match keyturn::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(keyturn::cli::exit_code(&e));
        }
    }
}
