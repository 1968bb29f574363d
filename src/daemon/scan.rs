//! Scan: walk a watch root and report every regular file with its size and
//! mtime, and every entry that was passed over with the reason.
//!
//! Scans are the truth the daemon rests on (SPEC §2, promise 7), so a scan never
//! fails on one bad entry: an unreadable directory, a FIFO, a symlink loop or a
//! name that is not UTF-8 is reported and the walk goes on. Nothing is opened
//! here; types come from `symlink_metadata` (or, when symlinks are followed,
//! from the target's metadata after checking the target stays inside the root).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use walkdir::WalkDir;

use crate::pipeline::settle::{IgnoreReason, NameFilter};

/// One regular file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile {
    /// Relative to the watch root, `/`-separated.
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// When size and mtime were read: the settle clock starts here, not when
    /// the scan that found the file began (a long scan must not make a file
    /// look older than it is).
    pub seen_at: Instant,
}

/// Why an entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    Ignored(IgnoreReason),
    /// FIFO, socket, block or character device: never opened.
    Special(&'static str),
    NotUtf8,
    SymlinkNotFollowed,
    SymlinkOutsideRoot,
    /// A directory or file that could not be read, a symlink loop, a path too long.
    Unreadable(String),
}

impl SkipReason {
    /// A short label, for logs and metrics (a few values: the kind of a
    /// special file is in the message, not the label).
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::Ignored(r) => r.as_str(),
            SkipReason::Special(_) => "not_regular",
            SkipReason::NotUtf8 => "not_utf8",
            SkipReason::SymlinkNotFollowed => "symlink",
            SkipReason::SymlinkOutsideRoot => "symlink_outside_root",
            SkipReason::Unreadable(_) => "unreadable",
        }
    }

    /// Whether an operator should hear about it: ignored temp names and
    /// not-followed symlinks are by design, the rest needs a look.
    pub fn is_problem(&self) -> bool {
        !matches!(
            self,
            SkipReason::Ignored(_) | SkipReason::SymlinkNotFollowed
        )
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Ignored(r) => write!(f, "ignored ({})", r.as_str()),
            SkipReason::Special(kind) => write!(f, "not a regular file ({kind}); never opened"),
            SkipReason::NotUtf8 => {
                write!(
                    f,
                    "name is not valid UTF-8 and cannot be a key prefix; rename it"
                )
            }
            SkipReason::SymlinkNotFollowed => {
                write!(
                    f,
                    "symlink not followed (set follow_symlinks = true to follow)"
                )
            }
            SkipReason::SymlinkOutsideRoot => {
                write!(f, "symlink points outside the watch root; never followed")
            }
            SkipReason::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

#[derive(Debug, Default)]
pub struct ScanResult {
    pub files: Vec<ScannedFile>,
    pub skipped: Vec<Skipped>,
}

/// Modification time in nanoseconds since the epoch, as the store keeps it.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Walks `root`. Fails only when the root itself cannot be read.
pub fn scan(
    root: &Path,
    follow_symlinks: bool,
    filter: &NameFilter,
) -> std::io::Result<ScanResult> {
    let canonical_root = root.canonicalize()?;
    if !canonical_root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "watch path is not a directory",
        ));
    }
    Ok(scan_under(
        &canonical_root,
        &canonical_root,
        follow_symlinks,
        filter,
    ))
}

/// Walks `dir`, a directory inside the canonical watch root `root`, naming
/// files relative to `root`, and collects everything it finds.
pub fn scan_under(
    root: &Path,
    dir: &Path,
    follow_symlinks: bool,
    filter: &NameFilter,
) -> ScanResult {
    let mut result = ScanResult::default();
    let mut walk = Walk::new(root, dir, follow_symlinks);
    while let Some(found) = walk.next(filter) {
        match found {
            Found::File(file) => result.files.push(file),
            Found::Skipped(skipped) => result.skipped.push(skipped),
        }
    }
    result
}

/// One entry a [`Walk`] yields.
#[derive(Debug)]
pub enum Found {
    File(ScannedFile),
    Skipped(Skipped),
}

/// A walk of a directory inside a watch root that can stop between any two
/// entries and go on later: intake takes a large tree a part at a time, so
/// what it holds in memory is bounded by what it has not built yet, not by
/// the size of the tree. Entries come depth first, each directory's in name
/// order, so the files of one directory come together.
pub struct Walk {
    root: PathBuf,
    follow_symlinks: bool,
    entries: walkdir::IntoIter,
    /// An entry taken but not handed out yet (see [`Walk::put_back`]).
    held: Option<Found>,
}

impl Walk {
    /// A walk of `dir`, which lies inside the canonical root `root`.
    pub fn new(root: &Path, dir: &Path, follow_symlinks: bool) -> Walk {
        Walk {
            root: root.to_path_buf(),
            follow_symlinks,
            entries: WalkDir::new(dir)
                .follow_links(follow_symlinks)
                .sort_by_file_name()
                .into_iter(),
            held: None,
        }
    }

    /// Hands `found` out again on the next call.
    pub fn put_back(&mut self, found: Found) {
        self.held = Some(found);
    }

    /// The next file, or entry passed over, or `None` when the walk is done.
    pub fn next(&mut self, filter: &NameFilter) -> Option<Found> {
        if let Some(found) = self.held.take() {
            return Some(found);
        }
        loop {
            let entry = match self.entries.next()? {
                Ok(entry) => entry,
                Err(err) => {
                    let path = err
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| self.root.clone());
                    let why = match err.loop_ancestor() {
                        Some(ancestor) => format!("symlink loop back to {}", ancestor.display()),
                        None => err.to_string(),
                    };
                    return Some(Found::Skipped(Skipped {
                        path,
                        reason: SkipReason::Unreadable(why),
                    }));
                }
            };
            if entry.depth() == 0 {
                continue;
            }
            let is_dir = entry.file_type().is_dir();
            let skip = |walk: &mut Walk, reason| {
                if is_dir {
                    // Never descended into.
                    walk.entries.skip_current_dir();
                }
                Some(Found::Skipped(Skipped {
                    path: entry.path().to_path_buf(),
                    reason,
                }))
            };
            // Hidden directories are never descended into (SPEC §3).
            let hidden = entry.file_name().as_encoded_bytes().first() == Some(&b'.');
            if hidden && is_dir {
                return skip(self, SkipReason::Ignored(IgnoreReason::Hidden));
            }
            if entry.path_is_symlink()
                && self.follow_symlinks
                && !target_inside(&self.root, entry.path())
            {
                return skip(self, SkipReason::SymlinkOutsideRoot);
            }
            if is_dir {
                continue;
            }
            // Only reached for a symlink when links are not followed.
            if entry.file_type().is_symlink() {
                return skip(self, SkipReason::SymlinkNotFollowed);
            }
            match entry.metadata() {
                Ok(meta) => {
                    return Some(match take(&self.root, entry.path(), &meta, filter) {
                        Ok(file) => Found::File(file),
                        Err(reason) => Found::Skipped(Skipped {
                            path: entry.path().to_path_buf(),
                            reason,
                        }),
                    });
                }
                // Deleted between the directory read and the stat: gone, not an error.
                Err(err)
                    if err.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {}
                Err(err) => {
                    return Some(Found::Skipped(Skipped {
                        path: entry.path().to_path_buf(),
                        reason: SkipReason::Unreadable(err.to_string()),
                    }));
                }
            }
        }
    }
}

/// What one path inside the canonical root `root` is now, for an event about it.
#[derive(Debug)]
pub enum PathState {
    File(ScannedFile),
    Dir,
    Gone,
    Skipped(SkipReason),
}

/// Looks at one path with the same rules as a scan, without opening it.
pub fn stat_path(
    root: &Path,
    path: &Path,
    follow_symlinks: bool,
    filter: &NameFilter,
) -> PathState {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return PathState::Gone,
        Err(err) => return PathState::Skipped(SkipReason::Unreadable(err.to_string())),
    };
    let meta = if meta.file_type().is_symlink() {
        if !follow_symlinks {
            return PathState::Skipped(SkipReason::SymlinkNotFollowed);
        }
        if !target_inside(root, path) {
            return PathState::Skipped(SkipReason::SymlinkOutsideRoot);
        }
        match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return PathState::Gone,
            Err(err) => return PathState::Skipped(SkipReason::Unreadable(err.to_string())),
        }
    } else {
        meta
    };
    if meta.is_dir() {
        return PathState::Dir;
    }
    match take(root, path, &meta, filter) {
        Ok(file) => PathState::File(file),
        Err(reason) => PathState::Skipped(reason),
    }
}

/// Whether a symlink's target lies inside the canonical root.
fn target_inside(root: &Path, link: &Path) -> bool {
    link.canonicalize()
        .map(|target| target.starts_with(root))
        .unwrap_or(false)
}

/// The checks every candidate file passes, given its (followed) metadata.
fn take(
    root: &Path,
    path: &Path,
    meta: &std::fs::Metadata,
    filter: &NameFilter,
) -> Result<ScannedFile, SkipReason> {
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_fifo() {
            "fifo"
        } else if file_type.is_socket() {
            "socket"
        } else if file_type.is_block_device() {
            "block_device"
        } else if file_type.is_char_device() {
            "char_device"
        } else {
            "special"
        };
        return Err(SkipReason::Special(kind));
    }
    let rel = relative(root, path).ok_or(SkipReason::NotUtf8)?;
    filter.check(&rel).map_err(SkipReason::Ignored)?;
    Ok(ScannedFile {
        rel,
        abs: path.to_path_buf(),
        size: meta.len(),
        mtime_ns: mtime_ns(meta),
        seen_at: Instant::now(),
    })
}

/// `path` relative to `root` as a `/`-separated UTF-8 string; `None` when a
/// component is not UTF-8.
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for component in rel.components() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(component.as_os_str().to_str()?);
    }
    Some(out)
}
