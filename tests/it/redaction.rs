//! The API key never shows (SPEC §7): not in a log (at `trace` level
//! included), an error, `plan`, `status` or `retry`, not even when the server
//! echoes it back in an error body. One test runs the real binary through a
//! full life against the emulator, down its error paths, and greps every byte
//! each process wrote (and the state directory) for the key in its raw,
//! percent-encoded, base64 and hex forms, and for fragments of it.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use mixpeek_mock::{Fault, MockConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::{BUCKET, Config, Env, Run, TIMEOUT, Watch, bin, tail, wait_until};

/// A key no other output could contain by chance, with the characters that
/// percent-encoding and base64 alphabets treat differently (`/`, `+`, `=`).
const CANARY: &str = "mxp/Canary+Leak=Q7z9Xw3Rt5Yp8Kd2";
/// The random-looking end of [`CANARY`]: any 8 characters of it in a row
/// count as a partial leak (a key shown as `mxp/…Rt5Yp8Kd2`, say).
const CANARY_TAIL: &str = "Q7z9Xw3Rt5Yp8Kd2";

#[test]
fn the_key_never_appears_in_any_output_of_a_full_life() {
    let env =
        Env::with(MockConfig::default().with_bucket_schema(BUCKET, schema(&["notes", "video"])));
    Config::new()
        .api("dialect = \"objects\"")
        .watch(Watch::documents().with("inline_max_bytes = \"1KiB\""))
        .write(&env);
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    assert!(config.contains("level = \"debug\""), "{config}");
    std::fs::write(
        env.config_path(),
        config.replace("level = \"debug\"", "level = \"trace\""),
    )
    .unwrap();
    write_key(&env, CANARY);
    env.server.set_api_key(Some(CANARY.to_owned()));
    let mut life = Life::default();

    env.write("a/notes.txt", b"first notes");
    write_video(&env, "b/video.mp4", 8 * 1024);
    env.write("c/notes.txt", b"more notes");

    // Configuration, online check, plan.
    life.record("check", env.run(&["check"])).assert_code(0);
    let online = life.record("check --online", env.run(&["check", "--online"]));
    online.assert_code(0);
    assert!(online.stdout.contains("reachable"), "{}", online.stdout);
    let plan = life.record("plan", env.run(&["plan"]));
    plan.assert_code(0);
    assert_eq!(plan.stdout.lines().count(), 3, "{}", plan.stdout);

    // `once` down the error paths: a 500, a dropped connection, a 422 whose
    // message echoes the key, a presigned PUT cut short, and a property the
    // bucket schema lacks (a dead letter, whatever the faults met).
    env.write("z/extra.txt", b"not in the schema");
    env.server.push_fault(Fault::status(500));
    env.server.push_drop_connection(None);
    env.server.push_fault(echo(422));
    env.server.push_presigned_drop(1);
    let once = life.record("once", env.run(&["once"]));
    once.assert_code(1);
    assert_eq!(env.server.pending_faults(), 0, "every fault was met");
    life.record("status", env.run(&["status"])).assert_code(0);

    // A malformed key file is refused without being quoted.
    write_key(&env, &format!("{CANARY} {CANARY}"));
    life.record("once with a malformed key", env.run(&["once"]))
        .assert_code(78);
    write_key(&env, CANARY);

    // The daemon: uploads, a key rotated on the server (401 and a pause),
    // then a 401 echoing the key, a 500, a dropped connection, a 422 echo.
    let mut daemon = Captured::start(&env, "run");
    write_video(&env, "d/video.mp4", 8 * 1024);
    env.write("e/notes.txt", b"daemon notes");
    assert!(
        wait_until(TIMEOUT, || delivered(&env, "/documents/e")
            && delivered(&env, "/documents/d")),
        "d and e were not delivered:\n{}",
        tail(&daemon.log(), 40)
    );

    env.server.set_api_key(Some("rotated-elsewhere".to_owned()));
    env.write("f/notes.txt", b"refused at first");
    assert!(
        daemon.wait_log(|l| l.contains("submissions paused")),
        "no pause on a refused key:\n{}",
        tail(&daemon.log(), 40)
    );
    let refused = life.record(
        "check --online with a refused key",
        env.run(&["check", "--online"]),
    );
    refused.assert_code(1);
    assert!(refused.stdout.contains("refused"), "{}", refused.stdout);
    life.record("status --json while paused", env.run(&["status", "--json"]))
        .assert_code(0);
    env.server.set_api_key(Some(CANARY.to_owned()));
    assert!(
        wait_until(TIMEOUT, || delivered(&env, "/documents/f")),
        "f was not delivered after the key was fixed:\n{}",
        tail(&daemon.log(), 40)
    );

    env.server.push_fault(echo(401));
    env.server.push_fault(Fault::status(500));
    env.server.push_drop_connection(None);
    env.server.push_fault(echo(422));
    for name in ["g", "h", "i", "j"] {
        env.write(&format!("{name}/notes.txt"), name.as_bytes());
    }
    assert!(
        wait_until(TIMEOUT, || env.server.pending_faults() == 0
            && pending(&env) == Some(0)),
        "the faults were not all met, or the outbox did not drain:\n{}",
        tail(&daemon.log(), 40)
    );
    daemon.stop();

    // After the life: status, retry of the dead letters, and their delivery.
    let status = life.record("status --json", env.run(&["status", "--json"]));
    status.assert_code(0);
    let summary: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        summary["counts"]["dead"].as_u64().unwrap() >= 1,
        "no dead letter: {summary}"
    );
    life.record("status", env.run(&["status"])).assert_code(0);
    env.server
        .set_bucket_schema(BUCKET, schema(&["notes", "video", "extra"]));
    life.record("retry --all", env.run(&["retry", "--all"]))
        .assert_code(0);
    life.record("once after retry", env.run(&["once"]))
        .assert_code(0);
    life.record("status after retry", env.run(&["status"]))
        .assert_code(0);
    life.add("run stdout", daemon.stdout());
    life.add("run stderr", daemon.log());

    // Every error path was taken.
    let statuses: Vec<u16> = env.server.requests().iter().map(|r| r.status).collect();
    for wanted in [401, 422, 500, 0] {
        assert!(
            statuses.contains(&wanted),
            "no request answered {wanted}: {statuses:?}"
        );
    }
    assert!(
        env.server.uploads().len() >= 2,
        "presigned uploads were not exercised"
    );
    assert!(
        life.outputs
            .iter()
            .any(|(_, text)| text.contains(" TRACE ")),
        "nothing was logged at trace level"
    );
    assert!(
        life.outputs
            .iter()
            .any(|(_, text)| text.contains("request with key <redacted> refused")),
        "the echoed key was never shown, scrubbed"
    );

    for (name, bytes) in state_files(&env.state_dir()) {
        life.add(&name, String::from_utf8_lossy(&bytes).into_owned());
    }
    life.assert_no_leak(CANARY);
}

/// Everything the processes of one life wrote, by where it came from.
#[derive(Default)]
struct Life {
    outputs: Vec<(String, String)>,
}

impl Life {
    fn record(&mut self, what: &str, run: Run) -> Run {
        self.add(&format!("{what}: stdout"), run.stdout.clone());
        self.add(&format!("{what}: stderr"), run.stderr.clone());
        run
    }

    fn add(&mut self, what: &str, text: String) {
        self.outputs.push((what.to_owned(), text));
    }

    /// Fails naming each output, form and place where the key shows.
    #[track_caller]
    fn assert_no_leak(&self, key: &str) {
        let forms = leak_forms(key);
        let mut leaks = Vec::new();
        for (what, text) in &self.outputs {
            for (form, needle) in &forms {
                if let Some(at) = text.find(needle.as_str()) {
                    let from = at.saturating_sub(120);
                    let to = (at + needle.len() + 120).min(text.len());
                    leaks.push(format!(
                        "{what}: the key as {form} ({needle}):\n…{}…",
                        String::from_utf8_lossy(&text.as_bytes()[from..to])
                    ));
                }
            }
        }
        let bytes: usize = self.outputs.iter().map(|(_, t)| t.len()).sum();
        assert!(
            leaks.is_empty(),
            "the API key leaked:\n\n{}",
            leaks.join("\n\n")
        );
        // Guard against a vacuous pass: the grep saw a real amount of output.
        assert!(bytes > 10_000, "only {bytes} bytes of output were checked");
    }
}

/// The key as it would show if some code printed it raw, as part of a URL,
/// inside a base64 blob (at any alignment, e.g. in `Basic` credentials), in
/// hex, or in part.
fn leak_forms(key: &str) -> Vec<(String, String)> {
    let mut forms = vec![
        ("raw".to_owned(), key.to_owned()),
        ("percent-encoded".to_owned(), percent_encode(key, false)),
        (
            "percent-encoded (lower case)".to_owned(),
            percent_encode(key, true),
        ),
        ("hex".to_owned(), hex::encode(key)),
        ("HEX".to_owned(), hex::encode_upper(key)),
    ];
    let engines = [
        ("base64", &STANDARD),
        ("base64 unpadded", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE),
        ("base64url unpadded", &URL_SAFE_NO_PAD),
    ];
    for (name, engine) in engines {
        for offset in 0..3 {
            // The characters that depend on the key's bytes only, whatever
            // came before it in the encoded data.
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(key.as_bytes());
            let encoded = engine.encode(&bytes);
            let start = offset.div_ceil(3) * 4;
            let end = (offset + key.len()) / 3 * 4;
            forms.push((
                format!("{name} at offset {offset}"),
                encoded[start..end].to_owned(),
            ));
        }
    }
    let tail: Vec<char> = CANARY_TAIL.chars().collect();
    for window in tail.windows(8) {
        forms.push(("a fragment".to_owned(), window.iter().collect()));
    }
    forms
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str, lower: bool) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else if lower {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[test]
fn the_leak_forms_find_the_key_where_it_would_hide() {
    let forms = leak_forms(CANARY);
    let hidden = [
        format!("Authorization: Bearer {CANARY}"),
        format!("https://x/?key={}", percent_encode(CANARY, false)),
        STANDARD.encode(format!("user:{CANARY}")),
        URL_SAFE_NO_PAD.encode(format!("ab{CANARY}")),
        hex::encode(format!("k={CANARY}")),
        "mxp/…Xw3Rt5Yp8Kd2".to_owned(),
    ];
    for text in hidden {
        assert!(
            forms
                .iter()
                .any(|(_, needle)| text.contains(needle.as_str())),
            "not found in {text}"
        );
    }
    assert!(
        !forms
            .iter()
            .any(|(_, needle)| "mxp/<redacted> Canary".contains(needle.as_str())),
        "a scrubbed key is not a leak"
    );
}

/// A bucket schema with these properties: `video` of type video, the
/// others text.
fn schema(properties: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> = properties
        .iter()
        .map(|p| {
            let kind = if *p == "video" { "video" } else { "text" };
            ((*p).to_owned(), json!({ "type": kind }))
        })
        .collect();
    json!({ "properties": properties })
}

/// A scripted answer whose error message quotes the key, as a careless
/// server might.
fn echo(status: u16) -> Fault {
    Fault::status(status).body(json!({
        "error": {
            "message": format!("request with key {CANARY} refused"),
            "type": "ValidationError",
        }
    }))
}

fn write_key(env: &Env, key: &str) {
    let path = env.root().join("api_key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// An MP4-looking file (`ftyp` box) of about `size` bytes: above `inline_max_bytes`,
/// so it goes through a presigned upload.
fn write_video(env: &Env, rel: &str, size: usize) {
    let mut bytes = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    bytes.extend((0..size).map(|i| (i % 251) as u8));
    // Distinct content per file: the same bytes twice would be skipped.
    bytes.extend_from_slice(rel.as_bytes());
    env.write(rel, &bytes);
}

fn delivered(env: &Env, key_prefix: &str) -> bool {
    env.server
        .objects()
        .iter()
        .any(|o| o.body["key_prefix"] == key_prefix)
}

/// Pending objects, from `status --json` (read-only beside the daemon).
fn pending(env: &Env) -> Option<u64> {
    let run = env.run(&["status", "--json"]);
    let summary: Value = serde_json::from_str(&run.stdout).ok()?;
    summary["counts"]["pending"].as_u64()
}

/// Every file under the state directory, by name.
fn state_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (format!("state file {}", path.display()), bytes)
        })
        .collect()
}

/// The binary kept running with stdout and stderr both going to files, so
/// every byte of both is kept.
struct Captured {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Captured {
    fn start(env: &Env, command: &str) -> Captured {
        let stdout = env.root().join(format!("{command}.stdout"));
        let stderr = env.root().join(format!("{command}.stderr"));
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(env.config_path())
            .arg(command)
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        Captured {
            child: cmd.spawn().unwrap(),
            stdout,
            stderr,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap()).into_owned()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap()).into_owned()
    }

    fn wait_log(&mut self, matches: impl Fn(&str) -> bool) -> bool {
        wait_until(TIMEOUT, || {
            self.log().lines().any(&matches) || self.child.try_wait().unwrap().is_some()
        }) && self.log().lines().any(&matches)
    }

    /// SIGTERM, and a clean exit.
    fn stop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let mut code = None;
        assert!(
            wait_until(TIMEOUT, || {
                code = self.child.try_wait().unwrap().map(|s| s.code());
                code.is_some()
            }),
            "the daemon did not stop:\n{}",
            tail(&self.log(), 40)
        );
        assert_eq!(code, Some(Some(0)), "{}", tail(&self.log(), 40));
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
