//! Hash: read a settled file once, computing its SHA-256 as a stream and
//! keeping its first bytes (for MIME sniffing) and, when it is small enough to
//! travel inline, its content.
//!
//! Reading the content in the same pass as the hash means the bytes sent are
//! the bytes hashed. Size and mtime are checked before and after the read
//! (SPEC §3): a file that changed while it was read is reported as `Changed`
//! and goes back to settling; its hash is thrown away.
//!
//! The file is opened with `O_NONBLOCK` and checked with `fstat` before a byte
//! is read, so a FIFO swapped in after the scan can never hang the reader.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::scan::mtime_ns;

/// Read buffer size: large enough for sequential throughput, fixed so memory
/// does not grow with the file.
const BUF_SIZE: usize = 256 * 1024;
/// How many leading bytes are kept for MIME sniffing.
pub const HEAD_SIZE: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Up to `HEAD_SIZE` leading bytes.
    pub head: Vec<u8>,
    /// The whole content, when the file is no larger than the caller asked to keep.
    pub content: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("changed while it was read; back to settling")]
    Changed,
    #[error("deleted before it could be read")]
    Vanished,
    #[error("not a regular file; not read")]
    NotRegular,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens `path` for reading if it is still the regular file the caller saw
/// (`expected_size`, `expected_mtime_ns`). Without `follow_symlinks`, a
/// symlink swapped in since is refused (`O_NOFOLLOW`); `O_NONBLOCK` keeps a
/// FIFO swapped in from hanging the open.
pub fn open_checked(
    path: &Path,
    expected_size: u64,
    expected_mtime_ns: i64,
    follow_symlinks: bool,
) -> Result<File, ReadError> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match File::options().read(true).custom_flags(flags).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Vanished),
        // ELOOP: the path became a symlink since the scan.
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => return Err(ReadError::NotRegular),
        Err(err) => return Err(ReadError::Io(err)),
    };
    let before = file.metadata()?;
    if !before.is_file() {
        return Err(ReadError::NotRegular);
    }
    if before.len() != expected_size || mtime_ns(&before) != expected_mtime_ns {
        return Err(ReadError::Changed);
    }
    Ok(file)
}

/// Reads and hashes `path`, which the scan saw with `expected_size` and
/// `expected_mtime_ns`. Keeps the content when the file is at most
/// `keep_content_max` bytes. Without `follow_symlinks`, a symlink swapped in
/// after the scan is refused (`O_NOFOLLOW`) rather than followed out of the
/// watch.
pub fn read_file(
    path: &Path,
    expected_size: u64,
    expected_mtime_ns: i64,
    keep_content_max: u64,
    follow_symlinks: bool,
) -> Result<FileRead, ReadError> {
    let mut file = open_checked(path, expected_size, expected_mtime_ns, follow_symlinks)?;
    let (size, mtime) = (expected_size, expected_mtime_ns);

    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(HEAD_SIZE.min(usize::try_from(size).unwrap_or(HEAD_SIZE)));
    let mut content =
        (size <= keep_content_max).then(|| Vec::with_capacity(usize::try_from(size).unwrap_or(0)));
    // One byte more than the file is enough to see it grew; a small file
    // must not pay for zeroing a buffer sized for large ones.
    let mut buf =
        vec![0u8; BUF_SIZE.min(usize::try_from(size).unwrap_or(BUF_SIZE).saturating_add(1))];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ReadError::Io(err)),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        if head.len() < HEAD_SIZE {
            let take = (HEAD_SIZE - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        total += n as u64;
        if total > size {
            // Grew while we read; no point reading the rest.
            return Err(ReadError::Changed);
        }
        if let Some(content) = content.as_mut() {
            content.extend_from_slice(chunk);
        }
    }

    let after = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Vanished),
        Err(err) => return Err(ReadError::Io(err)),
    };
    if total != size || after.len() != size || mtime_ns(&after) != mtime {
        return Err(ReadError::Changed);
    }
    Ok(FileRead {
        sha256: hex::encode(hasher.finalize()),
        size,
        mtime_ns: mtime,
        head,
        content,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn stat(path: &Path) -> (u64, i64) {
        let meta = std::fs::metadata(path).unwrap();
        (meta.len(), mtime_ns(&meta))
    }

    #[test]
    fn hashes_and_keeps_small_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"hello").unwrap();
        let (size, mtime) = stat(&path);
        let read = read_file(&path, size, mtime, 1024, false).unwrap();
        assert_eq!(
            read.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(read.content.as_deref(), Some(&b"hello"[..]));
        assert_eq!(read.head, b"hello");
    }

    #[test]
    fn large_file_streams_without_keeping_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let mut file = File::create(&path).unwrap();
        let block = vec![7u8; BUF_SIZE];
        let mut expected = Sha256::new();
        for _ in 0..5 {
            file.write_all(&block).unwrap();
            expected.update(&block);
        }
        file.write_all(b"tail").unwrap();
        expected.update(b"tail");
        drop(file);
        let (size, mtime) = stat(&path);
        let read = read_file(&path, size, mtime, 1024, false).unwrap();
        assert_eq!(read.sha256, hex::encode(expected.finalize()));
        assert!(read.content.is_none());
        assert_eq!(read.head.len(), HEAD_SIZE);
    }

    #[test]
    fn a_file_that_differs_from_the_scan_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"hello").unwrap();
        let (size, mtime) = stat(&path);
        assert!(matches!(
            read_file(&path, size + 1, mtime, 1024, false),
            Err(ReadError::Changed)
        ));
        assert!(matches!(
            read_file(&path, size, mtime - 1, 1024, false),
            Err(ReadError::Changed)
        ));
    }

    #[test]
    fn missing_file_is_vanished_and_fifo_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_file(&dir.path().join("gone"), 0, 0, 0, false),
            Err(ReadError::Vanished)
        ));
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Would block forever without O_NONBLOCK.
        assert!(matches!(
            read_file(&fifo, 0, 0, 0, false),
            Err(ReadError::NotRegular)
        ));
    }

    #[test]
    fn a_symlink_swapped_in_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("outside.txt");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (size, mtime) = stat(&target);
        assert!(matches!(
            read_file(&link, size, mtime, 1024, false),
            Err(ReadError::NotRegular)
        ));
        assert!(read_file(&link, size, mtime, 1024, true).is_ok());
    }

    /// A file that yields more bytes than its size said (it grew while read)
    /// is `Changed`, never hashed as complete. Files under /proc report size 0
    /// and still have content: a deterministic stand-in for a growing file.
    #[test]
    fn more_bytes_than_the_size_said_is_changed() {
        let path = Path::new("/proc/self/status");
        let (size, mtime) = stat(path);
        assert_eq!(size, 0);
        assert!(matches!(
            read_file(path, size, mtime, 1024, false),
            Err(ReadError::Changed)
        ));
    }

    #[test]
    fn empty_file_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let (size, mtime) = stat(&path);
        let read = read_file(&path, size, mtime, 1024, false).unwrap();
        assert_eq!(
            read.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(read.content.as_deref(), Some(&b""[..]));
    }
}
