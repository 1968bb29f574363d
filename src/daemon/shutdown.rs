//! Signals (SPEC §10): SIGTERM and SIGINT stop the daemon; SIGHUP asks for
//! the configuration to be read again. A new configuration that does not
//! load is logged with all its errors and the running one stays in force, so
//! a typo in an edit never takes the daemon down.

use std::path::Path;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info};

use crate::api;
use crate::config::{self, Config};
use crate::error::FatalError;
use crate::telemetry::service;

/// What the operator asked for.
#[derive(Debug)]
pub enum Control {
    Stop,
    Reload(Box<Config>),
}

/// The daemon's signal streams, installed once for the process so no signal
/// is lost between two engines.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, FatalError> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|err| {
                FatalError::Runtime(format!("cannot install a signal handler: {err}"))
            })
        };
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// Waits for a stop, or for a SIGHUP whose configuration at `path` loads.
    pub async fn next(&mut self, path: &Path) -> Control {
        loop {
            tokio::select! {
                _ = self.term.recv() => return stop(),
                _ = self.int.recv() => return stop(),
                _ = self.hup.recv() => {
                    info!(path = %path.display(), "SIGHUP: reloading the configuration");
                    match load(path) {
                        Ok(config) => {
                            service::reloading();
                            return Control::Reload(Box::new(config));
                        }
                        Err(err) => error!(
                            "the new configuration was not applied; the running one stays in force:\n{err}"
                        ),
                    }
                }
            }
        }
    }
}

fn stop() -> Control {
    service::stopping();
    Control::Stop
}

/// A configuration is taken only if its key can be read too.
fn load(path: &Path) -> Result<Config, FatalError> {
    let config = config::load(path)?;
    api::load_api_key(&config.api)?;
    Ok(config)
}
