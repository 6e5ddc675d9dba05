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
    keyturn::cli::init_tracing(cli.log_format, &cli.command);
    match keyturn::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
