//! `demo`: the product end to end on one machine, with nothing to set up.
//!
//! Starts the bundled Mixpeek emulator on 127.0.0.1, lays out
//! `<dir>/drop/contract-2024/` with a PDF, an image and a `_metadata.json`,
//! writes a real `config.toml` pointing at the emulator (so it can be read and
//! reused), runs the pipeline on it and prints every object the emulator
//! accepts. Without `--once` it keeps watching the drop folder until Ctrl-C.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mixpeek_mock::{MockConfig, MockServer};

use crate::api;
use crate::config;
use crate::daemon::Engine;
use crate::error::{FatalError, exit};
use crate::telemetry::{self, Counters};

const DEMO_BUCKET: &str = "demo";
const DEMO_KEY: &str = "demo-key-0123456789";
/// Marks a folder as the demo's own, safe to reset.
const DEMO_MARKER: &str = ".mixpeek-demo";

const SAMPLE: [(&str, &[u8]); 3] = [
    (
        "contract-2024/content.pdf",
        include_bytes!("../assets/demo/content.pdf"),
    ),
    (
        "contract-2024/thumbnail.jpg",
        include_bytes!("../assets/demo/thumbnail.jpg"),
    ),
    (
        "contract-2024/_metadata.json",
        include_bytes!("../assets/demo/_metadata.json"),
    ),
];

pub async fn demo(
    dir: &Path,
    once: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<u8, FatalError> {
    // A bucket without a schema, so whatever the user drops next is accepted.
    let server = MockServer::start(MockConfig {
        api_key: Some(DEMO_KEY.to_owned()),
        ..MockConfig::default().with_bucket(DEMO_BUCKET)
    })
    .map_err(|err| FatalError::io("127.0.0.1 (emulator listener)", err))?;

    let config_path = prepare(dir, &server.base_url())?;
    let config = config::load(&config_path)?;
    telemetry::init_logging(&config.log);
    println!("Mixpeek emulator listening on {}", server.base_url());
    println!("Configuration: {}", config_path.display());
    println!("Drop folder:   {}", dir.join("drop").display());

    let key = api::load_api_key(&config.api)?;
    let engine = Engine::new(Arc::new(config), key, Arc::new(Counters::default()))?;
    let printer = print_accepted(&server);
    if once {
        let report = engine.once(shutdown).await?;
        print_new(&server, &mut 0);
        println!("done: {}", report.counters);
        let failed = report.counters.objects_dead > 0 || report.end != crate::daemon::OnceEnd::Done;
        return Ok(if failed { exit::FAILURE } else { exit::OK });
    }
    println!("Watching; drop folders into the drop folder to see them delivered. Ctrl-C stops.");
    tokio::select! {
        result = engine.run(shutdown) => result?,
        () = printer => {}
    }
    Ok(exit::OK)
}

/// Lays out the demo folder: a fresh state, the sample drop, the key and the
/// configuration. Sample files already there are left as the user changed them.
fn prepare(dir: &Path, base_url: &str) -> Result<PathBuf, FatalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |err| FatalError::io(path, err)
    };
    // The demo resets its state and rewrites its config and key: refuse a
    // folder it did not make, so `--dir /etc/mixpeek-ingest` cannot clobber
    // a real installation.
    let marker = dir.join(DEMO_MARKER);
    let is_empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
    if !is_empty && !marker.exists() {
        return Err(FatalError::Usage(format!(
            "{} is not empty and was not made by `mixpeek-ingest demo`; pass an empty or new folder with --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::write(&marker, b"made by mixpeek-ingest demo\n").map_err(io(&marker))?;
    let drop_dir = dir.join("drop");
    let state = dir.join("state");
    // Each demo talks to a new, empty emulator: a state remembering earlier
    // deliveries would make it send nothing.
    if state.exists() {
        std::fs::remove_dir_all(&state).map_err(io(&state))?;
    }
    for (rel, bytes) in SAMPLE {
        let path = drop_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        if !path.exists() {
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
    }
    let key_path = dir.join("api_key");
    std::fs::write(&key_path, DEMO_KEY).map_err(io(&key_path))?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&key_path))?;
    let config_path = dir.join("config.toml");
    let text = format!(
        r#"# Written by `mixpeek-ingest demo`: a working configuration against the
# local emulator. Paths are relative to this file.

[api]
base_url = "{base_url}"
api_key_file = "api_key"
dialect = "auto"

[retry]
initial = "200ms"
max = "5s"

[state]
dir = "state"

[log]
level = "warn"

[[watch]]
path = "drop"
bucket = "{DEMO_BUCKET}"
key_prefix = "/"
settle = "500ms"

[[watch.rule]]
match = "**/*.jpg"
property = "thumbnail"
"#
    );
    std::fs::write(&config_path, text).map_err(io(&config_path))?;
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&config_path))?;
    Ok(config_path)
}

/// Prints objects as the emulator accepts them, forever.
async fn print_accepted(server: &MockServer) {
    let mut printed = 0;
    loop {
        print_new(server, &mut printed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_new(server: &MockServer, printed: &mut usize) {
    let objects = server.objects();
    for object in objects.iter().skip(*printed) {
        let shown = crate::pipeline::request::redact_base64(&object.body);
        println!(
            "accepted ({}) in bucket {}:\n{}",
            object.dialect,
            object.bucket,
            serde_json::to_string_pretty(&shown).expect("JSON always serialises")
        );
    }
    *printed = objects.len();
}
