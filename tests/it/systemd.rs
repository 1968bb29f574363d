//! The systemd unit (SPEC §10): the directives it must carry, their agreement
//! with the daemon's own defaults, and `systemd-analyze verify` when the tool
//! is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mixpeek_ingest::config::{Config, DEFAULT_CONFIG_PATH, parse_str};
use rstest::rstest;

use crate::harness::{Run, TIMEOUT};

const UNIT_NAME: &str = "mixpeek-ingest.service";
const UNIT: &str = include_str!("../../systemd/mixpeek-ingest.service");
const README: &str = include_str!("../../systemd/README.md");
const INSTALLED_BINARY: &str = "/usr/local/bin/mixpeek-ingest";

/// One `Key=value` line of a unit file.
#[derive(Debug)]
struct Directive<'a> {
    section: &'a str,
    key: &'a str,
    value: &'a str,
    line: usize,
}

/// The directives of a unit file in order. Comments (`#`, `;`) and blank lines
/// are skipped; a continuation line (trailing `\`) is refused, so a value is
/// always exactly what one line says.
fn directives(text: &str) -> Vec<Directive<'_>> {
    let mut section = "";
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: continuation lines are not used in this unit",
            index + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not a Key=value line: {line}", index + 1));
        out.push(Directive {
            section,
            key: key.trim(),
            value: value.trim(),
            line: index + 1,
        });
    }
    out
}

/// The single value of `section.key`; panics when it is missing or repeated.
fn value<'a>(unit: &[Directive<'a>], section: &str, key: &str) -> &'a str {
    let found: Vec<&Directive<'a>> = unit
        .iter()
        .filter(|d| d.section == section && d.key == key)
        .collect();
    match found.as_slice() {
        [one] => one.value,
        [] => panic!("[{section}] {key}= is missing"),
        many => panic!("[{section}] {key}= is set more than once: {many:?}"),
    }
}

/// A systemd time span: a bare number is seconds, otherwise units as in "2min".
fn time_span(text: &str) -> Duration {
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Duration::from_secs(text.parse().unwrap());
    }
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("time span {text:?}: {e}"))
}

/// The daemon's defaults, from a config that sets only the required keys.
fn defaults() -> Config {
    parse_str(
        "[[watch]]\npath = \"/srv/drop\"\nbucket = \"b\"\n",
        Path::new("config.toml"),
    )
    .unwrap()
}

#[rstest]
#[case::notify("Service", "Type", "notify")]
#[case::notify_access("Service", "NotifyAccess", "main")]
#[case::exec_start(
    "Service",
    "ExecStart",
    "/usr/local/bin/mixpeek-ingest run --config /etc/mixpeek-ingest/config.toml"
)]
#[case::exec_reload("Service", "ExecReload", "/bin/kill -HUP $MAINPID")]
#[case::restart("Service", "Restart", "on-failure")]
#[case::restart_prevent("Service", "RestartPreventExitStatus", "78")]
#[case::state_directory("Service", "StateDirectory", "mixpeek-ingest")]
#[case::credential(
    "Service",
    "LoadCredential",
    "mixpeek_api_key:/etc/mixpeek-ingest/api_key"
)]
#[case::user("Service", "User", "mixpeek-ingest")]
#[case::group("Service", "Group", "mixpeek-ingest")]
#[case::umask("Service", "UMask", "0077")]
#[case::protect_system("Service", "ProtectSystem", "strict")]
#[case::protect_home("Service", "ProtectHome", "yes")]
#[case::private_tmp("Service", "PrivateTmp", "yes")]
#[case::private_devices("Service", "PrivateDevices", "yes")]
#[case::no_new_privileges("Service", "NoNewPrivileges", "yes")]
#[case::address_families("Service", "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX")]
#[case::syscall_filter("Service", "SystemCallFilter", "@system-service")]
#[case::no_capabilities("Service", "CapabilityBoundingSet", "")]
#[case::no_ambient_capabilities("Service", "AmbientCapabilities", "")]
#[case::wanted_by("Install", "WantedBy", "multi-user.target")]
fn the_unit_sets(#[case] section: &str, #[case] key: &str, #[case] expected: &str) {
    let unit = directives(UNIT);
    assert_eq!(value(&unit, section, key), expected, "[{section}] {key}=");
}

#[test]
fn every_directive_is_set_once_in_its_proper_section() {
    let unit = directives(UNIT);
    let mut seen = std::collections::HashSet::new();
    for d in &unit {
        assert!(
            ["Unit", "Service", "Install"].contains(&d.section),
            "line {}: {}= outside [Unit], [Service] or [Install]",
            d.line,
            d.key
        );
        // A repeated key either appends or overrides depending on the key;
        // either way a reader of the file could be misled about what applies.
        assert!(
            seen.insert((d.section, d.key)),
            "line {}: [{}] {}= is set a second time",
            d.line,
            d.section,
            d.key
        );
    }
}

#[test]
fn the_unit_runs_as_a_dedicated_user_never_root() {
    let unit = directives(UNIT);
    let user = value(&unit, "Service", "User");
    assert!(
        !user.is_empty() && user != "root" && user != "0",
        "User={user}"
    );
    // The unit documents why it uses a static user; a DynamicUser= added
    // later would silently change the ownership story the README tells.
    assert!(
        !unit.iter().any(|d| d.key == "DynamicUser"),
        "DynamicUser= conflicts with the documented static system user"
    );
    assert!(
        README.contains("useradd --system"),
        "README does not say how to create the user"
    );
}

#[test]
fn the_unit_agrees_with_the_daemon_defaults() {
    let unit = directives(UNIT);
    let defaults = defaults();

    let exec_start = value(&unit, "Service", "ExecStart");
    assert_eq!(
        exec_start,
        format!("{INSTALLED_BINARY} run --config {DEFAULT_CONFIG_PATH}"),
        "ExecStart"
    );

    let state = PathBuf::from("/var/lib").join(value(&unit, "Service", "StateDirectory"));
    assert_eq!(
        state, defaults.state.dir,
        "StateDirectory= is not the default state.dir"
    );

    let credential = value(&unit, "Service", "LoadCredential");
    let (name, source) = credential.split_once(':').unwrap();
    assert_eq!(name, mixpeek_ingest::api::CREDENTIAL_NAME);
    assert!(source.starts_with('/'), "LoadCredential source {source}");

    assert_eq!(
        value(&unit, "Service", "RestartPreventExitStatus"),
        mixpeek_ingest::error::exit::CONFIG.to_string(),
        "a configuration error must not restart-loop"
    );
}

#[test]
fn stop_and_watchdog_timeouts_leave_the_daemon_room() {
    let unit = directives(UNIT);
    let defaults = defaults();

    let stop = time_span(value(&unit, "Service", "TimeoutStopSec"));
    // Room after the grace period to record outcomes and close the store.
    let margin = Duration::from_secs(10);
    assert!(
        stop >= defaults.shutdown_grace + margin,
        "TimeoutStopSec={stop:?} is not comfortably above shutdown_grace={:?}",
        defaults.shutdown_grace
    );

    let watchdog = time_span(value(&unit, "Service", "WatchdogSec"));
    assert!(
        watchdog > defaults.api.timeout,
        "WatchdogSec={watchdog:?} would fire during one slow request (api.timeout={:?})",
        defaults.api.timeout
    );
}

#[test]
fn write_access_is_granted_only_by_a_documented_drop_in() {
    let unit = directives(UNIT);
    assert!(
        !unit.iter().any(|d| d.key == "ReadWritePaths"),
        "the shipped unit must stay read-only outside its state directory"
    );
    for needle in [
        "ReadWritePaths=/srv/drop /srv/done",
        "systemctl edit mixpeek-ingest",
        "systemctl enable --now mixpeek-ingest",
        "systemctl reload mixpeek-ingest",
        "journalctl -u mixpeek-ingest",
        "systemctl status mixpeek-ingest",
    ] {
        assert!(README.contains(needle), "README lacks {needle:?}");
    }
    assert!(
        UNIT.contains("ReadWritePaths=/srv/drop /srv/done"),
        "the unit's comments do not show the drop-in"
    );
}

/// `name` as an executable file in a `PATH` directory.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(analyze) = on_path("systemd-analyze") else {
        println!("skipped: systemd-analyze not installed (apt-get install systemd to run it)");
        return;
    };
    // verify insists that ExecStart= names an existing executable, and the
    // binary is not installed here: point it at the one under test and keep
    // every other line as shipped.
    let from = format!("ExecStart={INSTALLED_BINARY} ");
    assert_eq!(UNIT.matches(&from).count(), 1, "ExecStart line not found");
    let text = UNIT.replace(
        &from,
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_mixpeek-ingest")),
    );
    let dir = tempfile::tempdir().unwrap();
    // verify takes the unit's name from the file name.
    let path = dir.path().join(UNIT_NAME);
    std::fs::write(&path, text).unwrap();

    let child = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = Run::wait(child, TIMEOUT);
    let output = format!("{}{}", run.stdout, run.stderr);
    // verify also loads the system's units and may complain about those;
    // only lines about this unit count.
    let about_unit: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(UNIT_NAME) || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify complains about the unit:\n{output}"
    );
    assert_eq!(
        run.code, 0,
        "systemd-analyze verify exited {}:\n{output}",
        run.code
    );
}
