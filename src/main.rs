//! The `mixpeek-ingest` binary: arguments → configuration → logging → runtime
//! → command; a fatal error becomes its exit code (SPEC §9).

use std::process::ExitCode;

use clap::Parser;
use mixpeek_ingest::cli::{Cli, Command};
use mixpeek_ingest::error::{FatalError, exit};
use mixpeek_ingest::{commands, demo};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are not errors.
            let code = if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    match execute(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("mixpeek-ingest: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn execute(cli: Cli) -> Result<u8, FatalError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| FatalError::Runtime(format!("cannot start the async runtime: {err}")))?;
    let config_path = cli.config;
    let result = match cli.command {
        Command::Demo { once, dir } => runtime.block_on(demo::demo(&dir, once, ctrl_c())),
        Command::Check { online } => {
            let config = commands::load_config(&config_path)?;
            runtime.block_on(commands::check(&config, &config_path, online))
        }
        Command::Once => {
            let config = commands::load_config(&config_path)?;
            runtime.block_on(commands::once(config, ctrl_c()))
        }
        Command::Run => {
            let config = commands::load_config(&config_path)?;
            runtime.block_on(commands::run(config, &config_path))
        }
        Command::Plan => {
            let config = commands::load_config(&config_path)?;
            commands::plan(&config, &mut std::io::stdout().lock())
        }
        Command::Status { json } => {
            let config = commands::load_config(&config_path)?;
            commands::status(&config, json, &mut std::io::stdout().lock())
        }
        Command::Retry { all, ids } => {
            let config = commands::load_config(&config_path)?;
            commands::retry(&config, all, &ids)
        }
    };
    // Builds still reading a file must not hold the exit: what they did not
    // record is found again at the next start.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn ctrl_c() {
    // If the handler cannot be installed, the default action still stops us.
    let _ = tokio::signal::ctrl_c().await;
}
