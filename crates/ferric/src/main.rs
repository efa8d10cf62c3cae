//! `ferric`: parse the command line, run it, map the outcome to an exit code
//! (0 ok, 1 failure, 2 bad usage or configuration). See `ferric --help`.

use clap::Parser as _;
use ferric::cli::{self, Cli};
use ferric::telemetry::{anyhow_cause_chain, anyhow_chain};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_service = cli.is_service();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Let tasks that are still winding down go; the service has stopped.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = cli::exit_code(&error);
            if is_service && code != cli::EXIT_CONFIG {
                // The service's failures go where its logs go, as one event.
                tracing::error!(
                    error.message = %error,
                    error.cause_chain = %anyhow_cause_chain(&error),
                    "ferric serve failed"
                );
            } else {
                let mut lines = anyhow_chain(&error).into_iter();
                eprintln!("error: {}", lines.next().unwrap_or_default());
                for cause in lines {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::from(code)
        }
    }
}
