//! Settle: deciding which names are taken at all and when a file is complete
//! (SPEC §3).
//!
//! Inputs: a file's path relative to the watch root (`rel`: UTF-8, `/`
//! separators, no leading `/`), and `(size, mtime)` observations made by the
//! scanner and the watcher, each with the caller's `now` on the monotonic clock.
//!
//! Outputs:
//! - [`NameFilter`]: whether a name is taken or why it is ignored (hidden,
//!   temporary, excluded, not included).
//! - [`Settler`]: which tracked files have kept the same size and mtime for
//!   `settle`, and the next instant at which one could, so the shell can sleep
//!   until then instead of polling.
//!
//! Invariants:
//! - A file is settled only after `settle` has passed on the caller's
//!   monotonic clock since the last observed change; nothing (a close-after-write
//!   event, a rescan) shortens that. Wall-clock mtimes are compared for equality
//!   only, never used as a clock.
//! - [`Settler::take_settled`] reports a file once per change: a file that is
//!   observed unchanged again (rescan) is not reported again until it changes or
//!   is [`Settler::reset`].
//!
//! Glob semantics, shared by `include`, `exclude` and `[[watch.rule]] match`
//! ([`glob_set`]): `*`, `?` and `[...]` never cross a `/`; `**` does. A pattern
//! without a `/` matches the file name at any depth (`*.log` is `**/*.log`,
//! as in `.gitignore`); a pattern with a `/` matches the whole relative path,
//! and a leading `/` only anchors it to the watch root.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::ops::Bound;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::{GroupBy, Watch};

/// Name suffixes of files still being written by common producers (browsers,
/// download managers, editors). Compared case-insensitively because SMB and
/// Windows producers write `.TMP` as often as `.tmp`.
const TEMPORARY_SUFFIXES: &[&str] = &[".part", ".partial", ".tmp", ".temp", ".crdownload", ".swp"];

/// Suffix of a per-stem sidecar in `stem` mode (`invoice-42.metadata.json`).
pub(crate) const STEM_SIDECAR_SUFFIX: &str = ".metadata.json";

/// Compiles one glob with the crate's semantics (see the module docs).
pub fn compile_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    let anchored;
    let effective = if let Some(rest) = pattern.strip_prefix('/') {
        rest
    } else if pattern.contains('/') {
        pattern
    } else {
        anchored = format!("**/{pattern}");
        &anchored
    };
    GlobBuilder::new(effective)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// Compiles patterns into one set; match indices follow the order given.
pub fn glob_set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(compile_glob(pattern)?);
    }
    builder.build()
}

/// Why a name is not taken; `as_str` is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// A path component starts with `.`.
    Hidden,
    /// The name of a file still being written (`*.part`, `~*`, …).
    Temporary,
    /// Matches one of `watch.exclude`.
    Excluded,
    /// Matches none of `watch.include`.
    NotIncluded,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Hidden => "hidden",
            IgnoreReason::Temporary => "temporary",
            IgnoreReason::Excluded => "excluded",
            IgnoreReason::NotIncluded => "not_included",
        }
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ignore list of one watch, with its globs compiled once.
///
/// The ready marker and the metadata sidecars are control files the grouping
/// stage needs to see, so their *file names* are exempt from the built-in
/// hidden/temporary rules and from `include` (an operator who narrows `include`
/// to `**/*.pdf` still means the `_READY` marker to work, and may well name it
/// `.ready`). Hidden directories and `exclude` still apply to them: an explicit
/// exclusion is the operator's word.
#[derive(Debug, Clone)]
pub struct NameFilter {
    exclude: GlobSet,
    /// `None` when `include` is empty: an empty list narrows nothing.
    include: Option<GlobSet>,
    ready_marker: Option<String>,
    metadata_file: String,
    stem_sidecars: bool,
}

impl NameFilter {
    pub fn new(watch: &Watch) -> Result<Self, globset::Error> {
        let include = if watch.include.is_empty() {
            None
        } else {
            Some(glob_set(&watch.include)?)
        };
        Ok(NameFilter {
            exclude: glob_set(&watch.exclude)?,
            include,
            ready_marker: watch.ready_marker.clone(),
            metadata_file: watch.metadata_file.clone(),
            stem_sidecars: watch.group_by == GroupBy::Stem,
        })
    }

    /// `Ok(())` when the file is taken, else the first reason it is not, in
    /// the order hidden, temporary, excluded, not included.
    pub fn check(&self, rel: &str) -> Result<(), IgnoreReason> {
        let (dirs, name) = match rel.rsplit_once('/') {
            Some((dirs, name)) => (Some(dirs), name),
            None => (None, rel),
        };
        let control = self.is_control_name(name);
        if dirs.is_some_and(|d| d.split('/').any(|c| c.starts_with('.'))) {
            return Err(IgnoreReason::Hidden);
        }
        if !control {
            if name.starts_with('.') {
                return Err(IgnoreReason::Hidden);
            }
            if is_temporary_name(name) {
                return Err(IgnoreReason::Temporary);
            }
        }
        if self.exclude.is_match(rel) {
            return Err(IgnoreReason::Excluded);
        }
        if !control && self.include.as_ref().is_some_and(|inc| !inc.is_match(rel)) {
            return Err(IgnoreReason::NotIncluded);
        }
        Ok(())
    }

    fn is_control_name(&self, name: &str) -> bool {
        self.ready_marker.as_deref() == Some(name)
            || name == self.metadata_file
            || (self.stem_sidecars
                && name.len() > STEM_SIDECAR_SUFFIX.len()
                && name.ends_with(STEM_SIDECAR_SUFFIX))
    }
}

/// Convenience over [`NameFilter`] for table tests; compiles the globs on
/// every call.
#[cfg(test)]
pub fn is_ignored(watch: &Watch, rel: &str) -> Result<Option<IgnoreReason>, globset::Error> {
    Ok(NameFilter::new(watch)?.check(rel).err())
}

fn is_temporary_name(name: &str) -> bool {
    if name.starts_with('~') || name.ends_with('~') {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    TEMPORARY_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// What an observation told the [`Settler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// First time this key is seen; its settle period starts now.
    New,
    /// Size or mtime differ from the last observation; the period restarts.
    Changed,
    /// Same size and mtime as before; nothing restarts.
    Unchanged,
}

impl Observation {
    /// `New` or `Changed`: the file's group has a member that appeared or
    /// changed.
    pub fn is_change(self) -> bool {
        !matches!(self, Observation::Unchanged)
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    size: u64,
    mtime_ns: i64,
    changed_at: Instant,
    /// The key of this file in `Settler::pending`, while it waits to be
    /// reported settled.
    pending: Option<(Instant, u64)>,
}

/// Tracks files by an opaque key and tells when each has stopped changing.
///
/// Two ways to consume it: poll [`Settler::is_settled`] per file (a
/// scan-driven shell), or drain [`Settler::take_settled`] (an event-driven
/// one, which then never looks at quiet files again). Either way
/// [`Settler::next_deadline`] is the next instant worth waking up for.
///
/// Memory is one map entry per tracked file plus one deadline entry per file
/// not yet taken by `take_settled`.
#[derive(Debug, Clone)]
pub struct Settler<K> {
    settle: Duration,
    files: HashMap<K, Tracked>,
    /// Deadline-ordered files not yet reported by `take_settled`; the `u64`
    /// keeps entries with equal deadlines apart.
    pending: BTreeMap<(Instant, u64), K>,
    next_seq: u64,
}

impl<K: Eq + Hash + Clone> Settler<K> {
    pub fn new(settle: Duration) -> Self {
        Settler {
            settle,
            files: HashMap::new(),
            pending: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Records the file's current size and mtime as seen at `now`.
    pub fn observe(&mut self, key: K, size: u64, mtime_ns: i64, now: Instant) -> Observation {
        let outcome = match self.files.get(&key) {
            None => Observation::New,
            Some(t) if t.size == size && t.mtime_ns == mtime_ns => return Observation::Unchanged,
            Some(_) => Observation::Changed,
        };
        self.unqueue(&key);
        let pending = self.enqueue(&key, now);
        self.files.insert(
            key,
            Tracked {
                size,
                mtime_ns,
                changed_at: now,
                pending,
            },
        );
        outcome
    }

    /// Stops tracking a file that vanished.
    pub fn forget(&mut self, key: &K) {
        self.unqueue(key);
        self.files.remove(key);
    }

    /// Sends a tracked file back to settling from `now`, e.g. after its size or
    /// mtime changed while it was hashed. Unknown keys are ignored.
    pub fn reset(&mut self, key: &K, now: Instant) {
        if !self.files.contains_key(key) {
            return;
        }
        self.unqueue(key);
        let pending = self.enqueue(key, now);
        if let Some(t) = self.files.get_mut(key) {
            t.changed_at = now;
            t.pending = pending;
        }
    }

    /// Whether the file has been unchanged for at least `settle` at `now`.
    pub fn is_settled(&self, key: &K, now: Instant) -> bool {
        self.files
            .get(key)
            .is_some_and(|t| now.saturating_duration_since(t.changed_at) >= self.settle)
    }

    /// When the file becomes settled if it does not change again.
    pub fn settled_at(&self, key: &K) -> Option<Instant> {
        self.files
            .get(key)
            .and_then(|t| t.changed_at.checked_add(self.settle))
    }

    /// Every tracked file that is settled at `now`, reported or not. This walks
    /// all tracked files; the daemon's loop uses [`Settler::take_settled`].
    pub fn settled(&self, now: Instant) -> Vec<K> {
        self.files
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.changed_at) >= self.settle)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The files that became settled since the last call (at most once per
    /// change), earliest deadline first.
    pub fn take_settled(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(t) = self.files.get_mut(&key) {
                t.pending = None;
            }
            due.push(key);
        }
        due
    }

    /// The earliest instant after `now` at which a file that is unsettled at
    /// `now` becomes settled, so the shell can sleep until then. Files
    /// already settled are left out whether or not they were taken, so a
    /// shell that only asks [`Settler::is_settled`] never spins.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.pending
            .range((Bound::Excluded((now, u64::MAX)), Bound::Unbounded))
            .next()
            .map(|((deadline, _), _)| *deadline)
    }

    /// Keeps only the files `keep` accepts (e.g. those a full scan still
    /// found), forgetting the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let pending = &mut self.pending;
        self.files.retain(|key, t| {
            let kept = keep(key);
            if !kept && let Some(slot) = t.pending {
                pending.remove(&slot);
            }
            kept
        });
    }

    /// Last observed `(size, mtime_ns)` of a tracked file.
    pub fn stat(&self, key: &K) -> Option<(u64, i64)> {
        self.files.get(key).map(|t| (t.size, t.mtime_ns))
    }

    pub fn contains(&self, key: &K) -> bool {
        self.files.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Files not yet taken by `take_settled` (settled or not).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn unqueue(&mut self, key: &K) {
        if let Some(slot) = self.files.get_mut(key).and_then(|t| t.pending.take()) {
            self.pending.remove(&slot);
        }
    }

    /// Queues `key` to be reported at `now + settle`. A settle period so long
    /// that the deadline is not representable is never reached, so such a file
    /// is not queued (it still answers `is_settled` correctly).
    fn enqueue(&mut self, key: &K, now: Instant) -> Option<(Instant, u64)> {
        let deadline = now.checked_add(self.settle)?;
        let slot = (deadline, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.pending.insert(slot, key.clone());
        Some(slot)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use rstest::rstest;

    /// A watch with the SPEC §8 defaults, for the pipeline's unit tests:
    /// taken from the config parser itself, so the defaults live in one place.
    pub(crate) fn watch() -> Watch {
        let text = "[[watch]]\npath = \"/srv/drop\"\nbucket = \"contracts\"\n";
        crate::config::parse_str(
            text,
            std::path::Path::new("/etc/mixpeek-ingest/config.toml"),
        )
        .expect("a minimal watch parses")
        .watches
        .remove(0)
    }

    fn filter(f: impl FnOnce(&mut Watch)) -> NameFilter {
        let mut w = watch();
        f(&mut w);
        NameFilter::new(&w).unwrap()
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case("content.pdf", None)]
    #[case("contract-2024/content.pdf", None)]
    #[case("contract-2024/thumbnail.jpg", None)]
    #[case("_metadata.json", None)]
    #[case("a/b/c/d.txt", None)]
    #[case(".hidden", Some(IgnoreReason::Hidden))]
    #[case(".git/config", Some(IgnoreReason::Hidden))]
    #[case("a/.cache/b.jpg", Some(IgnoreReason::Hidden))]
    #[case("a/.b.jpg", Some(IgnoreReason::Hidden))]
    #[case("video.mp4.part", Some(IgnoreReason::Temporary))]
    #[case("a/video.partial", Some(IgnoreReason::Temporary))]
    #[case("x.tmp", Some(IgnoreReason::Temporary))]
    #[case("X.TMP", Some(IgnoreReason::Temporary))]
    #[case("x.temp", Some(IgnoreReason::Temporary))]
    #[case("dl/file.zip.crdownload", Some(IgnoreReason::Temporary))]
    #[case("notes.txt.swp", Some(IgnoreReason::Temporary))]
    #[case("~lock.docx", Some(IgnoreReason::Temporary))]
    #[case("report.docx~", Some(IgnoreReason::Temporary))]
    // Only the file name is checked against the temporary patterns.
    #[case("build.tmp/report.pdf", None)]
    #[case("partial/report.pdf", None)]
    fn builtin_ignore_list(#[case] rel: &str, #[case] want: Option<IgnoreReason>) {
        assert_eq!(filter(|_| {}).check(rel).err(), want, "{rel}");
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case(&["*.log"], "a/b/server.log", Some(IgnoreReason::Excluded))]
    #[case(&["*.log"], "server.log", Some(IgnoreReason::Excluded))]
    #[case(&["/*.log"], "a/server.log", None)]
    #[case(&["/*.log"], "server.log", Some(IgnoreReason::Excluded))]
    #[case(&["archive/**"], "archive/2020/a.pdf", Some(IgnoreReason::Excluded))]
    #[case(&["archive/**"], "x/archive/a.pdf", None)]
    #[case(&["**/archive/**"], "x/archive/a.pdf", Some(IgnoreReason::Excluded))]
    #[case(&["_metadata.json"], "a/_metadata.json", Some(IgnoreReason::Excluded))]
    fn exclude_globs(
        #[case] exclude: &[&str],
        #[case] rel: &str,
        #[case] want: Option<IgnoreReason>,
    ) {
        let f = filter(|w| w.exclude = exclude.iter().map(|s| s.to_string()).collect());
        assert_eq!(f.check(rel).err(), want, "{rel}");
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case(&["**/*.pdf"], "a/b.pdf", None)]
    #[case(&["**/*.pdf"], "b.pdf", None)]
    #[case(&["**/*.pdf"], "b.jpg", Some(IgnoreReason::NotIncluded))]
    #[case(&["*.pdf", "*.jpg"], "x/y/b.jpg", None)]
    #[case(&["docs/*"], "docs/a.pdf", None)]
    #[case(&["docs/*"], "docs/sub/a.pdf", Some(IgnoreReason::NotIncluded))]
    #[case(&[], "anything.bin", None)]
    // Control files pass a narrow include.
    #[case(&["**/*.pdf"], "a/_metadata.json", None)]
    #[case(&["**/*.pdf"], "a/_READY", None)]
    fn include_globs(
        #[case] include: &[&str],
        #[case] rel: &str,
        #[case] want: Option<IgnoreReason>,
    ) {
        let f = filter(|w| {
            w.include = include.iter().map(|s| s.to_string()).collect();
            w.ready_marker = Some("_READY".to_owned());
        });
        assert_eq!(f.check(rel).err(), want, "{rel}");
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case(GroupBy::Directory, "a/.ready", None)]
    #[case(GroupBy::Directory, ".hidden-dir/.ready", Some(IgnoreReason::Hidden))]
    #[case(GroupBy::Stem, "a/x.metadata.json", None)]
    #[case(GroupBy::Directory, "a/x.metadata.json", Some(IgnoreReason::NotIncluded))]
    #[case(GroupBy::Stem, "a/.metadata.json", Some(IgnoreReason::Hidden))]
    fn control_files_are_exempt(
        #[case] mode: GroupBy,
        #[case] rel: &str,
        #[case] want: Option<IgnoreReason>,
    ) {
        let f = filter(|w| {
            w.group_by = mode;
            w.include = vec!["**/*.pdf".to_owned()];
            w.ready_marker = Some(".ready".to_owned());
        });
        assert_eq!(f.check(rel).err(), want, "{rel}");
    }

    #[test]
    fn ignore_reason_labels_are_distinct() {
        let all = [
            IgnoreReason::Hidden,
            IgnoreReason::Temporary,
            IgnoreReason::Excluded,
            IgnoreReason::NotIncluded,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len());
        assert_eq!(IgnoreReason::NotIncluded.to_string(), "not_included");
    }

    #[test]
    fn bad_glob_is_reported() {
        let mut w = watch();
        w.exclude = vec!["a/[".to_owned()];
        assert!(NameFilter::new(&w).is_err());
        assert!(is_ignored(&w, "x").is_err());
        w.exclude.clear();
        assert_eq!(is_ignored(&w, ".x").unwrap(), Some(IgnoreReason::Hidden));
    }

    const SETTLE: Duration = Duration::from_secs(2);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// One step of a settle timeline: at `ms`, either observe `(size, mtime)`
    /// expecting an outcome, or take the settled files expecting a set.
    enum Step {
        Observe(&'static str, u64, i64, Observation),
        Take(&'static [&'static str]),
        Forget(&'static str),
        Reset(&'static str),
        Deadline(Option<u64>),
    }
    use Step::*;

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // A file written once settles exactly `settle` after it was first seen.
    #[case(&[
        (0, Observe("a", 10, 1, Observation::New)),
        (0, Deadline(Some(2000))),
        (1999, Take(&[])),
        (2000, Take(&["a"])),
        (2000, Deadline(None)),
        (5000, Take(&[])),
    ])]
    // A growing file restarts the period at each change; a rescan seeing the
    // same stat does not.
    #[case(&[
        (0, Observe("a", 10, 1, Observation::New)),
        (1500, Observe("a", 20, 2, Observation::Changed)),
        (1600, Observe("a", 20, 2, Observation::Unchanged)),
        (2000, Take(&[])),
        (3499, Take(&[])),
        (3500, Take(&["a"])),
        (9000, Observe("a", 20, 2, Observation::Unchanged)),
        (20000, Take(&[])),
    ])]
    // mtime alone changing (same size) is a change.
    #[case(&[
        (0, Observe("a", 10, 1, Observation::New)),
        (1000, Observe("a", 10, 5, Observation::Changed)),
        (2000, Take(&[])),
        (3000, Take(&["a"])),
    ])]
    // A change after being reported makes it report again.
    #[case(&[
        (0, Observe("a", 1, 1, Observation::New)),
        (2000, Take(&["a"])),
        (5000, Observe("a", 2, 2, Observation::Changed)),
        (5000, Deadline(Some(7000))),
        (7000, Take(&["a"])),
    ])]
    // Files are reported in deadline order; a vanished file never is.
    #[case(&[
        (0, Observe("b", 1, 1, Observation::New)),
        (100, Observe("a", 1, 1, Observation::New)),
        (200, Observe("c", 1, 1, Observation::New)),
        (300, Forget("c")),
        (300, Deadline(Some(2000))),
        (10000, Take(&["b", "a"])),
    ])]
    // Reset after a hash saw a change: back to settling from that instant.
    #[case(&[
        (0, Observe("a", 1, 1, Observation::New)),
        (2000, Take(&["a"])),
        (2500, Reset("a")),
        (2500, Deadline(Some(4500))),
        (4499, Take(&[])),
        (4500, Take(&["a"])),
    ])]
    // A forgotten file that comes back is new.
    #[case(&[
        (0, Observe("a", 1, 1, Observation::New)),
        (100, Forget("a")),
        (200, Observe("a", 1, 1, Observation::New)),
        (2100, Take(&[])),
        (2200, Take(&["a"])),
    ])]
    fn settle_timeline(#[case] steps: &[(u64, Step)]) {
        let t0 = Instant::now();
        let mut s = Settler::new(SETTLE);
        for (i, (ms, step)) in steps.iter().enumerate() {
            let now = at(t0, *ms);
            match step {
                Observe(k, size, mtime, want) => {
                    assert_eq!(
                        s.observe(k.to_string(), *size, *mtime, now),
                        *want,
                        "step {i}"
                    );
                }
                Take(want) => {
                    let got = s.take_settled(now);
                    assert_eq!(
                        got,
                        want.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                        "step {i}"
                    );
                }
                Forget(k) => s.forget(&k.to_string()),
                Reset(k) => s.reset(&k.to_string(), now),
                Deadline(want) => {
                    assert_eq!(s.next_deadline(now), want.map(|ms| at(t0, ms)), "step {i}");
                }
            }
        }
    }

    #[test]
    fn is_settled_and_settled_follow_the_clock() {
        let t0 = Instant::now();
        let mut s = Settler::new(SETTLE);
        s.observe("a", 1, 1, t0);
        s.observe("b", 1, 1, at(t0, 1000));
        assert!(!s.is_settled(&"a", at(t0, 1999)));
        assert!(s.is_settled(&"a", at(t0, 2000)));
        assert!(!s.is_settled(&"missing", at(t0, 99_999)));
        // A `now` before the change (caller clock skew) is never settled.
        assert!(!s.is_settled(&"b", t0));
        let mut got = s.settled(at(t0, 2500));
        got.sort();
        assert_eq!(got, vec!["a"]);
        let mut got = s.settled(at(t0, 3000));
        got.sort();
        assert_eq!(got, vec!["a", "b"]);
        // `settled` does not consume; `take_settled` still reports both.
        assert_eq!(s.take_settled(at(t0, 3000)), vec!["a", "b"]);
        assert_eq!(s.stat(&"a"), Some((1, 1)));
        assert_eq!((s.len(), s.pending_len()), (2, 0));
        // Unknown keys: reset is a no-op.
        s.reset(&"zzz", t0);
        assert!(!s.contains(&"zzz"));
    }

    #[test]
    fn deadline_skips_settled_files_even_when_not_taken() {
        let t0 = Instant::now();
        let mut s = Settler::new(SETTLE);
        s.observe("a", 1, 1, t0);
        s.observe("b", 1, 1, at(t0, 1000));
        assert_eq!(s.next_deadline(t0), Some(at(t0, 2000)));
        // "a" is settled at 2000 but never taken: the deadline moves on.
        assert_eq!(s.next_deadline(at(t0, 2000)), Some(at(t0, 3000)));
        assert_eq!(s.next_deadline(at(t0, 3000)), None);
        // A change of a settled, untaken file brings it back.
        s.observe("a", 2, 2, at(t0, 3500));
        assert_eq!(s.next_deadline(at(t0, 3500)), Some(at(t0, 5500)));
    }

    #[test]
    fn retain_forgets_the_rest() {
        let t0 = Instant::now();
        let mut s = Settler::new(SETTLE);
        for k in ["a", "b", "c"] {
            assert!(s.observe(k, 1, 1, t0).is_change());
        }
        assert!(!s.observe("a", 1, 1, t0).is_change());
        assert!(Observation::Changed.is_change());
        s.retain(|k| *k != "b");
        assert!(!s.contains(&"b"));
        assert_eq!((s.len(), s.pending_len()), (2, 2));
        assert_eq!(s.take_settled(at(t0, 2000)), vec!["a", "c"]);
        assert!(!s.is_empty());
    }

    #[test]
    fn zero_settle_settles_at_once() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::ZERO);
        s.observe(1u32, 0, 0, t0);
        assert!(s.is_settled(&1, t0));
        assert_eq!(s.take_settled(t0), vec![1]);
    }
}
