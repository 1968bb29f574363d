//! Dispose: delete or move files once their object's delivery is recorded
//! (`after_delivery`, SPEC §2 promise 4).
//!
//! The store holds a disposal row per file from the moment the object is
//! queued; a row becomes due only when its object is delivered (or skipped,
//! its content being in the bucket already), and leaves only after the file
//! was dealt with. A crash anywhere in between redoes the disposal at the
//! next start, never the delivery.
//!
//! Only the version that was delivered is disposed of: a file whose size or
//! mtime changed since is someone's new data, and is left where it is. A
//! move never overwrites: a name taken at the destination gets a numbered
//! sibling (`report-1.pdf`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{debug, info, warn};

use super::StoreHandle;
use super::intake::watch_id;
use super::scan::mtime_ns;
use crate::config::{AfterDelivery, Watch};
use crate::store::{DisposeFile, StoreError};

/// How many disposals one pass takes from the store at a time.
const BATCH: usize = 256;

/// What to do with a watch's delivered files.
struct Rule {
    root: PathBuf,
    action: AfterDelivery,
    move_to: Option<PathBuf>,
}

pub struct Disposer {
    rules: HashMap<String, Rule>,
    /// Disposals that failed (permissions, a full target disk), so each is
    /// logged once; they are tried again at every pass.
    failed: Mutex<HashSet<(i64, String)>>,
}

/// What became of one file.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Deleted,
    Moved(PathBuf),
    /// Already gone: someone else took it.
    Gone,
    /// A newer version stands in its place; it is kept.
    Changed,
}

impl Disposer {
    pub fn new(watches: &[Watch]) -> Disposer {
        let rules = watches
            .iter()
            .filter(|w| w.after_delivery != AfterDelivery::Keep)
            .map(|w| {
                (
                    watch_id(w),
                    Rule {
                        root: w.path.clone(),
                        action: w.after_delivery,
                        move_to: w.move_to.clone(),
                    },
                )
            })
            .collect();
        Disposer {
            rules,
            failed: Mutex::new(HashSet::new()),
        }
    }

    /// Whether any watch disposes of files at all.
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Carries out every due disposal. Blocking. Returns how many were done.
    pub fn run(&self, store: &StoreHandle) -> Result<usize, StoreError> {
        if !self.is_active() {
            return Ok(0);
        }
        let mut done = 0;
        let mut skip: HashSet<(i64, String)> = HashSet::new();
        loop {
            let due = store.lock().due_disposals(BATCH + skip.len())?;
            let fresh: Vec<_> = due
                .into_iter()
                .filter(|d| !skip.contains(&(d.object_id, d.file.rel.clone())))
                .collect();
            if fresh.is_empty() {
                return Ok(done);
            }
            for disposal in fresh {
                let key = (disposal.object_id, disposal.file.rel.clone());
                // A watch no longer configured keeps its files.
                let Some(rule) = self.rules.get(&disposal.watch) else {
                    skip.insert(key);
                    continue;
                };
                match dispose(rule, &disposal.file) {
                    Ok(outcome) => {
                        log(rule, &disposal.file, &outcome);
                        store
                            .lock()
                            .disposed(disposal.object_id, &disposal.file.rel)?;
                        self.lock_failed().remove(&key);
                        done += 1;
                    }
                    Err(err) => {
                        if self.lock_failed().insert(key.clone()) {
                            warn!(
                                path = %rule.root.join(&disposal.file.rel).display(),
                                error = %err,
                                "cannot dispose of a delivered file; will try again"
                            );
                        }
                        skip.insert(key);
                    }
                }
            }
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashSet<(i64, String)>> {
        self.failed.lock().expect("disposal lock poisoned")
    }
}

fn log(rule: &Rule, file: &DisposeFile, outcome: &Outcome) {
    let path = rule.root.join(&file.rel);
    match outcome {
        Outcome::Deleted => debug!(path = %path.display(), "deleted after delivery"),
        Outcome::Moved(to) => {
            debug!(path = %path.display(), to = %to.display(), "moved after delivery")
        }
        Outcome::Gone => debug!(path = %path.display(), "already gone; nothing to dispose of"),
        Outcome::Changed => info!(
            path = %path.display(),
            "changed since it was delivered; kept (the new version is sent on its own)"
        ),
    }
}

fn dispose(rule: &Rule, file: &DisposeFile) -> std::io::Result<Outcome> {
    let path = rule.root.join(&file.rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Gone),
        Err(err) => return Err(err),
    };
    if !meta.is_file() || meta.len() != file.size || mtime_ns(&meta) != file.mtime_ns {
        return Ok(Outcome::Changed);
    }
    match (rule.action, &rule.move_to) {
        (AfterDelivery::Move, Some(move_to)) => {
            let target = free_name(&move_to.join(&file.rel));
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            move_file(&path, &target)?;
            Ok(Outcome::Moved(target))
        }
        (AfterDelivery::Keep, _) | (AfterDelivery::Move, None) => Ok(Outcome::Changed),
        (AfterDelivery::Delete, _) => match std::fs::remove_file(&path) {
            Ok(()) => Ok(Outcome::Deleted),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::Gone),
            Err(err) => Err(err),
        },
    }
}

/// `path`, or the first of `stem-1.ext`, `stem-2.ext`, … that does not exist.
fn free_name(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    (1u64..)
        .map(|n| path.with_file_name(format!("{stem}-{n}{ext}")))
        .find(|candidate| std::fs::symlink_metadata(candidate).is_err())
        .expect("some numbered name is free")
}

/// `rename`, or across filesystems a copy that is synced before the source
/// goes, so a crash leaves at worst two copies, never none.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(err) if err.raw_os_error() != Some(libc::EXDEV) => return Err(err),
        Err(_) => {}
    }
    let partial = to.with_extension("mixpeek-moving");
    std::fs::copy(from, &partial)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, to)?;
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    std::fs::remove_file(from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file_at(root: &Path, rel: &str, content: &[u8]) -> DisposeFile {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        DisposeFile {
            rel: rel.to_owned(),
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
        }
    }

    fn rule(root: &Path, action: AfterDelivery, move_to: Option<PathBuf>) -> Rule {
        Rule {
            root: root.to_path_buf(),
            action,
            move_to,
        }
    }

    #[test]
    fn delete_removes_the_delivered_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_at(dir.path(), "g/a.txt", b"delivered");
        let r = rule(dir.path(), AfterDelivery::Delete, None);
        assert_eq!(dispose(&r, &file).unwrap(), Outcome::Deleted);
        assert!(!dir.path().join("g/a.txt").exists());
        assert_eq!(dispose(&r, &file).unwrap(), Outcome::Gone);
    }

    #[test]
    fn a_newer_version_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = file_at(dir.path(), "g/a.txt", b"delivered");
        file.size += 1;
        let r = rule(dir.path(), AfterDelivery::Delete, None);
        assert_eq!(dispose(&r, &file).unwrap(), Outcome::Changed);
        assert!(dir.path().join("g/a.txt").exists());
    }

    #[test]
    fn move_keeps_the_relative_path_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("drop");
        let done = dir.path().join("done");
        std::fs::create_dir_all(done.join("g")).unwrap();
        std::fs::write(done.join("g/a.txt"), b"an earlier one").unwrap();
        std::fs::write(done.join("g/a-1.txt"), b"and another").unwrap();
        let file = file_at(&root, "g/a.txt", b"delivered");
        let r = rule(&root, AfterDelivery::Move, Some(done.clone()));
        assert_eq!(
            dispose(&r, &file).unwrap(),
            Outcome::Moved(done.join("g/a-2.txt"))
        );
        assert_eq!(std::fs::read(done.join("g/a-2.txt")).unwrap(), b"delivered");
        assert_eq!(
            std::fs::read(done.join("g/a.txt")).unwrap(),
            b"an earlier one"
        );
        assert!(!root.join("g/a.txt").exists());
    }

    #[test]
    fn free_name_handles_names_without_extension_and_dotfiles() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README"), b"").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"").unwrap();
        assert_eq!(
            free_name(&dir.path().join("README")),
            dir.path().join("README-1")
        );
        assert_eq!(
            free_name(&dir.path().join(".hidden")),
            dir.path().join(".hidden-1")
        );
        assert_eq!(
            free_name(&dir.path().join("new.txt")),
            dir.path().join("new.txt")
        );
    }
}
