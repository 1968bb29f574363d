//! The command line (SPEC §9): `mixpeek-ingest [--config PATH] <command>`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{CONFIG_ENV, DEFAULT_CONFIG_PATH};

#[derive(Debug, Parser)]
#[command(
    name = "mixpeek-ingest",
    version,
    about = "Turns files dropped into local folders into Mixpeek bucket objects",
    after_help = "Exit codes: 0 success, 1 runtime failure (once: some objects ended as dead letters), \
2 usage, 74 I/O error, 78 configuration error."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = CONFIG_ENV, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch, settle, group and deliver until stopped.
    Run,
    /// Scan, deliver everything that is ready, wait for the outbox to drain, exit.
    Once,
    /// Print, without network or state writes, one JSON line per object that would be sent now.
    Plan,
    /// Counts by state, oldest pending age, recent errors, dead letters with reasons.
    Status {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back into the outbox.
    Retry {
        /// Every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Object ids, as `status` lists them.
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
    },
    /// Validate the configuration.
    Check {
        /// Also check the API key and each watch's bucket against the API.
        #[arg(long)]
        online: bool,
    },
    /// Run against a bundled local Mixpeek emulator with a sample drop folder.
    Demo {
        /// Exit after the sample has been delivered.
        #[arg(long)]
        once: bool,
        /// Folder for the demo's drop tree and state.
        #[arg(long, default_value = "mixpeek-demo")]
        dir: PathBuf,
    },
}
