//! Fatal errors: the ones that stop the program, each mapped to an exit code
//! (SPEC §9). Errors that belong to one file or object never come here; they are
//! logged with their path, recorded in the store, and the stage goes on.

use std::path::PathBuf;

use crate::api::{ApiError, KeyError};
use crate::config::ConfigError;
use crate::store::StoreError;

/// Exit codes of SPEC §9 (sysexits.h numbering for the last two).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const IO: u8 = 74;
    /// Stopped by SIGINT or SIGTERM before the work was done (128 + 2, as shells report it).
    pub const INTERRUPTED: u8 = 130;
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

impl FatalError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> FatalError {
        FatalError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            FatalError::Config(_) | FatalError::Key(_) | FatalError::Api(_) => exit::CONFIG,
            FatalError::Store(_) | FatalError::Io { .. } => exit::IO,
            FatalError::Usage(_) => exit::USAGE,
            FatalError::Runtime(_) => exit::FAILURE,
        }
    }
}
