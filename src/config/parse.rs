//! placeholder until written
use super::Config;
#[derive(Debug)]
pub struct ConfigProblem;
#[derive(Debug)]
pub struct ConfigError;
pub fn parse_str(_s: &str, _p: &std::path::Path) -> Result<Config, ConfigError> { Err(ConfigError) }
pub fn load(_p: &std::path::Path) -> Result<Config, ConfigError> { Err(ConfigError) }
