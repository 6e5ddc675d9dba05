//! Thin entry point: parse, set up logging, run, exit with the command's code.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = keyturn::cli::Cli::parse();
    keyturn::cli::init_tracing(cli.log_format, &cli.command);
    match keyturn::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
