//! Intake: the front half of the pipeline, `discover ─► settle ─► group`,
//! for every watch, and the bookkeeping around `hash ─► classify ─► build`.
//!
//! Intake keeps, per watch, the candidates: files seen that the store has not
//! recorded in their current version (blobs waiting for their group), plus
//! every sidecar and ready marker. Two kinds of input feed it:
//! - `scan`: a full walk of the watch root, the truth (SPEC §2, promise 7);
//!   candidates it no longer finds are forgotten;
//! - `hint`: one path named by an OS event; it is looked at alone (a new
//!   directory is walked).
//!
//! `ready` then turns the candidates into the groups that may be sent now,
//! each as a `GroupPlan` that carries everything a build needs, so builds run
//! on the blocking pool without holding intake.
//!
//! Files whose path, size and mtime match what the store already holds are
//! dropped as soon as they are seen, without being opened: that is the
//! restart fast path, and why a second `once` over an unchanged tree hashes
//! nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::build::{self, Built, GroupContext, Unreadable};
use super::scan::{self, PathState, ScanResult, ScannedFile, SkipReason};
use crate::config::GroupBy;
use crate::config::Watch;
use crate::error::FatalError;
use crate::pipeline::classify::Classifier;
use crate::pipeline::group::{self, Grouper, Readiness, Role, Scope};
use crate::pipeline::settle::{NameFilter, Settler};
use crate::store::{FILES_GENERATION_META_KEY, NewFile, Store, StoreError};
use crate::telemetry::Counters;

/// What a build needs to know of its watch; shared with builds in flight.
pub struct WatchContext {
    pub watch: Watch,
    /// Stable identity of the watch in the store: its configured root path.
    pub id: String,
    pub classifier: Classifier,
}

/// A group that may be sent now, with its members as last seen.
pub struct GroupPlan {
    pub watch: usize,
    pub key_prefix: String,
    pub blobs: Vec<ScannedFile>,
    pub sidecars: Vec<ScannedFile>,
    /// The sidecar and marker that belong to this group alone, disposed of
    /// with it (a directory's sidecar shared by several groups stays).
    pub controls: Vec<ScannedFile>,
    pub context: Arc<WatchContext>,
}

impl GroupPlan {
    /// Reads, hashes and builds the group. Blocking: run it off the async
    /// threads. `store` answers the duplicate lookups; it is locked per
    /// lookup, not for the whole build, so hashing never holds it.
    pub fn build(
        &self,
        store: &super::StoreHandle,
        has_upload: bool,
        counters: &Counters,
    ) -> (Built, Vec<Unreadable>) {
        let watch = &self.context.watch;
        let ctx = GroupContext {
            watch,
            watch_id: &self.context.id,
            classifier: &self.context.classifier,
            dialect_has_upload: has_upload,
            counters,
        };
        let is_delivered = |sha256: &str| match store.lock().hash_delivered(&watch.bucket, sha256) {
            Ok(delivered) => delivered,
            Err(err) => {
                warn!(error = %err, "duplicate lookup failed; sending the blob");
                false
            }
        };
        let mut unreadable = Vec::new();
        let built = build::build_group(
            &ctx,
            &self.key_prefix,
            &self.blobs,
            &self.sidecars,
            &self.controls,
            &is_delivered,
            &mut unreadable,
        );
        (built, unreadable)
    }
}

/// Groups that are not ready yet, by what they wait for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Time alone will make these ready (members settling, quiet period).
    pub settling: usize,
    /// These wait for their `ready_marker`.
    pub awaiting_marker: Vec<String>,
}

/// One candidate file and where it belongs.
struct Candidate {
    file: ScannedFile,
    role: Role,
    key_prefix: String,
    scope: Scope,
}

/// One watch and what intake knows about it.
struct WatchState {
    context: Arc<WatchContext>,
    /// The canonical watch root, once it could be resolved.
    root: Option<PathBuf>,
    filter: NameFilter,
    settler: Settler<String>,
    grouper: Grouper,
    /// (size, mtime) of every file the store has recorded in an object.
    known: HashMap<String, (u64, i64)>,
    candidates: HashMap<String, Candidate>,
    /// Groups handed out by `ready` whose build has not come back.
    building: HashSet<String>,
    /// Paths already reported, so a problem is logged once, not every scan.
    reported: HashSet<PathBuf>,
    /// Files that could not be read, and when; retried after `rescan_interval`.
    unreadable: HashMap<String, Instant>,
    /// New directories to scan once more, and when (see [`RECHECK_AFTER`]).
    rechecks: HashMap<PathBuf, Instant>,
}

/// How long after a new directory was scanned it is scanned once more.
///
/// The OS watch on a new directory is added only after its creation event
/// arrives, and the scan that event triggers may run before files land in
/// it: a file written in between raises no event, and would otherwise wait
/// for the next periodic rescan (minutes). One more look a moment later
/// closes that window; files written after it raise events of their own.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

pub struct Intake {
    watches: Vec<WatchState>,
    /// The store's `files_generation` when `known` was loaded.
    generation: Option<String>,
}

impl Intake {
    /// Builds the per-watch state and loads what the store knows of each watch.
    pub fn new(watches: &[Watch], store: &Store) -> Result<Intake, FatalError> {
        let mut states = Vec::with_capacity(watches.len());
        for watch in watches {
            let invalid = |err: globset::Error| {
                FatalError::Runtime(format!("watch {}: {err}", watch.path.display()))
            };
            let id = watch_id(watch);
            let known = store
                .files_of_watch(&id)?
                .into_iter()
                .map(|(rel, record)| (rel, (record.size, record.mtime_ns)))
                .collect();
            states.push(WatchState {
                filter: NameFilter::new(watch).map_err(invalid)?,
                settler: Settler::new(watch.settle),
                grouper: Grouper::new(watch.settle, watch.max_group_wait)
                    .marker_required(watch.ready_marker.is_some()),
                context: Arc::new(WatchContext {
                    classifier: Classifier::new(watch).map_err(invalid)?,
                    watch: watch.clone(),
                    id,
                }),
                root: watch.path.canonicalize().ok(),
                known,
                candidates: HashMap::new(),
                building: HashSet::new(),
                reported: HashSet::new(),
                unreadable: HashMap::new(),
                rechecks: HashMap::new(),
            });
        }
        Ok(Intake {
            watches: states,
            generation: store.meta(FILES_GENERATION_META_KEY)?,
        })
    }

    /// Reloads what the store holds as recorded when files were forgotten
    /// since (`retry` of a local dead letter), so the next scan rebuilds them.
    pub fn refresh_known(&mut self, store: &Store) -> Result<(), StoreError> {
        let generation = store.meta(FILES_GENERATION_META_KEY)?;
        if generation == self.generation {
            return Ok(());
        }
        for state in &mut self.watches {
            state.known = store
                .files_of_watch(&state.context.id)?
                .into_iter()
                .map(|(rel, record)| (rel, (record.size, record.mtime_ns)))
                .collect();
        }
        self.generation = generation;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    pub fn watch(&self, index: usize) -> &Watch {
        &self.watches[index].context.watch
    }

    /// The canonical root of a watch, when it exists.
    pub fn root(&self, index: usize) -> Option<&Path> {
        self.watches[index].root.as_deref()
    }

    /// Walks the whole watch root; the candidates it no longer finds are
    /// forgotten. Blocking.
    pub fn scan(&mut self, index: usize, counters: &Counters) {
        let state = &mut self.watches[index];
        let watch = &state.context.watch;
        let scanned = match scan::scan(&watch.path, watch.follow_symlinks, &state.filter) {
            Ok(scanned) => scanned,
            Err(err) => {
                if state.reported.insert(watch.path.clone()) {
                    warn!(path = %watch.path.display(), error = %err, "cannot scan watch root; will retry");
                }
                return;
            }
        };
        state.reported.remove(&watch.path.clone());
        state.root = watch.path.canonicalize().ok();
        let present: HashSet<String> = scanned.files.iter().map(|f| f.rel.clone()).collect();
        state.take(scanned, counters);
        let gone: Vec<String> = state
            .candidates
            .keys()
            .filter(|rel| !present.contains(*rel))
            .cloned()
            .collect();
        for rel in gone {
            state.remove(&rel);
        }
    }

    /// Looks at one path an event named. Blocking (a new directory is walked).
    pub fn hint(&mut self, index: usize, path: &Path, counters: &Counters) {
        let state = &mut self.watches[index];
        let Some(root) = state.root.clone() else {
            return;
        };
        let Some(rel) = scan::relative(&root, path) else {
            if path.starts_with(&root) {
                state.report(path, &SkipReason::NotUtf8, counters);
            }
            return;
        };
        if rel.is_empty() {
            return;
        }
        let watch = &state.context.watch;
        match scan::stat_path(&root, path, watch.follow_symlinks, &state.filter) {
            PathState::File(file) => state.observe(file, counters),
            PathState::Dir => {
                let scanned = scan::scan_under(&root, path, watch.follow_symlinks, &state.filter);
                state.take(scanned, counters);
                state
                    .rechecks
                    .insert(path.to_path_buf(), Instant::now() + RECHECK_AFTER);
            }
            PathState::Gone => {
                // A file, or a whole directory, went away.
                let prefix = format!("{rel}/");
                let gone: Vec<String> = state
                    .candidates
                    .keys()
                    .filter(|c| **c == rel || c.starts_with(&prefix))
                    .cloned()
                    .collect();
                for rel in gone {
                    state.remove(&rel);
                }
            }
            PathState::Skipped(reason) => {
                state.remove(&rel);
                state.report(path, &reason, counters);
            }
        }
    }

    /// The groups that may be sent at `now`. With `restat`, the members of a
    /// group that looks ready are looked at once more first: under OS events
    /// nothing else re-reads a file that stopped producing events.
    pub fn ready(
        &mut self,
        now: Instant,
        restat: bool,
        counters: &Counters,
    ) -> (Vec<GroupPlan>, Waiting) {
        let mut plans = Vec::new();
        let mut waiting = Waiting::default();
        for (index, state) in self.watches.iter_mut().enumerate() {
            state.recheck(now, counters);
            state.ready(index, now, restat, &mut plans, &mut waiting);
        }
        (plans, waiting)
    }

    /// A build came back: apply what it means for the candidates. Members
    /// that could not be read are set aside until the watch's next periodic
    /// rescan, so a file nobody may read does not keep its group busy.
    pub fn built(
        &mut self,
        index: usize,
        key_prefix: &str,
        built: &Built,
        unreadable: &[String],
        now: Instant,
    ) {
        let state = &mut self.watches[index];
        state.building.remove(key_prefix);
        for rel in unreadable {
            state.remove(rel);
            state.unreadable.insert(rel.clone(), now);
        }
        match built {
            Built::Object { object, .. }
            | Built::LocalDead { object, .. }
            | Built::Skipped { object } => {
                state.grouper.remove(key_prefix);
                state.recorded(&object.files);
                // Members that changed since the build read them make the
                // group start over.
                let again = state
                    .candidates
                    .values()
                    .any(|c| c.role == Role::Blob && c.key_prefix == key_prefix);
                if again {
                    state.grouper.touch(key_prefix, now);
                }
            }
            Built::Unsettled { changed } => {
                for rel in changed {
                    state.settler.reset(rel, now);
                }
                state.grouper.touch(key_prefix, now);
            }
            Built::Empty => state.grouper.remove(key_prefix),
        }
    }

    /// The earliest moment a settling file or a waiting group could become ready.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.watches
            .iter()
            .flat_map(|s| {
                [
                    s.settler.next_deadline(now),
                    s.grouper.next_deadline(now),
                    s.rechecks.values().min().copied(),
                ]
            })
            .flatten()
            .min()
    }

    /// Watch roots the last scan could not read.
    pub fn unscannable(&self) -> Vec<PathBuf> {
        self.watches
            .iter()
            .filter(|s| s.reported.contains(&s.context.watch.path))
            .map(|s| s.context.watch.path.clone())
            .collect()
    }

    /// How many candidate files intake holds, for status lines.
    pub fn candidates(&self) -> usize {
        self.watches.iter().map(|s| s.candidates.len()).sum()
    }
}

/// The store's name for a watch.
pub fn watch_id(watch: &Watch) -> String {
    watch.path.to_string_lossy().into_owned()
}

impl WatchState {
    /// Scans the new directories whose second look is due.
    fn recheck(&mut self, now: Instant, counters: &Counters) {
        let due: Vec<PathBuf> = self
            .rechecks
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(dir, _)| dir.clone())
            .collect();
        let Some(root) = self.root.clone() else {
            self.rechecks.clear();
            return;
        };
        let follow = self.context.watch.follow_symlinks;
        for dir in due {
            self.rechecks.remove(&dir);
            let scanned = scan::scan_under(&root, &dir, follow, &self.filter);
            self.take(scanned, counters);
        }
    }

    /// Takes everything a (partial) scan found.
    fn take(&mut self, scanned: ScanResult, counters: &Counters) {
        for skipped in &scanned.skipped {
            self.report(&skipped.path, &skipped.reason, counters);
        }
        for file in scanned.files {
            self.observe(file, counters);
        }
    }

    /// Logs a skipped path once.
    fn report(&mut self, path: &Path, reason: &SkipReason, counters: &Counters) {
        if !self.reported.insert(path.to_path_buf()) {
            return;
        }
        counters.ignored(reason.label());
        if reason.is_problem() {
            warn!(path = %path.display(), %reason, "skipped");
        } else {
            debug!(path = %path.display(), %reason, "skipped");
        }
    }

    /// One file as seen now.
    fn observe(&mut self, file: ScannedFile, counters: &Counters) {
        let assignment = match group::assign(&self.context.watch, &file.rel) {
            Ok(assignment) => assignment,
            Err(err) => {
                if self.reported.insert(file.abs.clone()) {
                    counters.ignored("bad_path");
                    warn!(path = %file.abs.display(), error = %err, "skipped");
                }
                return;
            }
        };
        if assignment.role == Role::Blob
            && self.known.get(&file.rel) == Some(&(file.size, file.mtime_ns))
        {
            self.remove(&file.rel);
            return;
        }
        if let Some(failed) = self.unreadable.get(&file.rel) {
            if file.seen_at.saturating_duration_since(*failed) < self.context.watch.rescan_interval
            {
                return;
            }
            self.unreadable.remove(&file.rel);
            self.reported.remove(&file.abs);
        }
        if assignment.role == Role::Blob && !self.candidates.contains_key(&file.rel) {
            Counters::add(&counters.files_seen, 1);
        }
        let seen = file.seen_at;
        let observation = self
            .settler
            .observe(file.rel.clone(), file.size, file.mtime_ns, seen);
        if observation.is_change() && assignment.role == Role::Blob {
            self.grouper.touch(&assignment.key_prefix, seen);
        }
        self.candidates.insert(
            file.rel.clone(),
            Candidate {
                file,
                role: assignment.role,
                key_prefix: assignment.key_prefix,
                scope: assignment.scope,
            },
        );
    }

    fn remove(&mut self, rel: &str) {
        if self.candidates.remove(rel).is_some() {
            self.settler.forget(&rel.to_owned());
        }
    }

    /// Notes that these files are recorded in the store in this version; a
    /// candidate seen since in another version stays.
    fn recorded(&mut self, files: &[NewFile]) {
        for file in files {
            let stat = (file.size, file.mtime_ns);
            self.known.insert(file.rel.clone(), stat);
            let same = self
                .candidates
                .get(&file.rel)
                .is_some_and(|c| (c.file.size, c.file.mtime_ns) == stat);
            if same {
                self.remove(&file.rel);
            }
        }
    }

    fn ready(
        &mut self,
        index: usize,
        now: Instant,
        restat: bool,
        plans: &mut Vec<GroupPlan>,
        waiting: &mut Waiting,
    ) {
        let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
        for candidate in self.candidates.values() {
            if candidate.role == Role::Blob && !self.building.contains(&candidate.key_prefix) {
                groups
                    .entry(&candidate.key_prefix)
                    .or_default()
                    .push(candidate);
            }
        }
        let watch = &self.context.watch;
        let mut chosen = Vec::new();
        for (key_prefix, mut blobs) in groups {
            blobs.sort_by(|a, b| a.file.rel.cmp(&b.file.rel));
            let first = &blobs[0].file.rel;
            let sidecars: Vec<&Candidate> = group::sidecar_rels(watch, first)
                .unwrap_or_default()
                .iter()
                .filter_map(|rel| self.candidates.get(rel))
                .collect();
            let marker_file = group::marker_rel(watch, first)
                .ok()
                .flatten()
                .and_then(|rel| self.candidates.get(&rel));
            let marker = marker_file.is_some();
            // A directory-wide sidecar or marker belongs to this group alone
            // only when the group is the whole directory.
            let whole_directory = watch.group_by == GroupBy::Directory && first.contains('/');
            let controls: Vec<ScannedFile> = sidecars
                .iter()
                .copied()
                .chain(marker_file)
                .filter(|c| c.scope == Scope::Group || whole_directory)
                .map(|c| c.file.clone())
                .collect();
            if !self.grouper.contains(key_prefix) {
                // Members left behind by an earlier build (stragglers after
                // max_group_wait, a file that could not be read) start a new
                // round instead of waiting for a change that may never come.
                self.grouper.touch(key_prefix, now);
            }
            if marker {
                self.grouper.marker_seen(key_prefix);
            }
            let settled = |c: &&Candidate| self.settler.is_settled(&c.file.rel, now);
            let all_settled = blobs.iter().chain(&sidecars).all(settled);
            let members = match self.grouper.ready(key_prefix, all_settled, now) {
                Readiness::NotYet => {
                    if watch.ready_marker.is_some() && !marker {
                        waiting.awaiting_marker.push(key_prefix.to_owned());
                    } else {
                        waiting.settling += 1;
                    }
                    continue;
                }
                Readiness::Ready => blobs,
                Readiness::TimedOut => {
                    let (settled, unsettled): (Vec<_>, Vec<_>) =
                        blobs.into_iter().partition(settled);
                    warn!(
                        %key_prefix,
                        waited_s = watch.max_group_wait.as_secs(),
                        marker_missing = watch.ready_marker.is_some() && !marker,
                        unsettled = ?unsettled.iter().map(|c| &c.file.rel).collect::<Vec<_>>(),
                        "group did not complete within max_group_wait; sending its settled members"
                    );
                    if settled.is_empty() {
                        continue;
                    }
                    settled
                }
            };
            chosen.push((
                key_prefix.to_owned(),
                members.iter().map(|c| c.file.clone()).collect::<Vec<_>>(),
                sidecars.iter().map(|c| c.file.clone()).collect::<Vec<_>>(),
                controls,
            ));
        }
        for (key_prefix, blobs, sidecars, controls) in chosen {
            if restat && self.changed_since_seen(blobs.iter().chain(&sidecars), now) {
                self.grouper.touch(&key_prefix, now);
                waiting.settling += 1;
                continue;
            }
            self.building.insert(key_prefix.clone());
            plans.push(GroupPlan {
                watch: index,
                key_prefix,
                blobs,
                sidecars,
                controls,
                context: Arc::clone(&self.context),
            });
        }
        // Groups whose members all went away have nothing left to time.
        let live: HashSet<&str> = self
            .candidates
            .values()
            .map(|c| c.key_prefix.as_str())
            .chain(self.building.iter().map(String::as_str))
            .collect();
        let dead: Vec<String> = self
            .grouper
            .groups()
            .filter(|g| !live.contains(g))
            .map(str::to_owned)
            .collect();
        for key_prefix in dead {
            self.grouper.remove(&key_prefix);
        }
    }

    /// Stats each file again; any that changed or vanished is observed anew.
    fn changed_since_seen<'a>(
        &mut self,
        files: impl Iterator<Item = &'a ScannedFile>,
        now: Instant,
    ) -> bool {
        let mut changed = false;
        for file in files {
            match std::fs::symlink_metadata(&file.abs) {
                Ok(meta) if meta.len() == file.size && scan::mtime_ns(&meta) == file.mtime_ns => {}
                Ok(meta) => {
                    changed = true;
                    self.settler
                        .observe(file.rel.clone(), meta.len(), scan::mtime_ns(&meta), now);
                    if let Some(candidate) = self.candidates.get_mut(&file.rel) {
                        candidate.file.size = meta.len();
                        candidate.file.mtime_ns = scan::mtime_ns(&meta);
                    }
                }
                Err(_) => {
                    changed = true;
                    self.remove(&file.rel);
                }
            }
        }
        changed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pipeline::settle::tests::watch;

    /// A file written into a new directory after the scan its creation
    /// event triggered, with no event of its own (the OS watch on the
    /// directory was not in place yet), is found by the second look.
    #[test]
    fn a_new_directory_is_looked_at_again() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("drop");
        std::fs::create_dir(&root).unwrap();
        let store = Store::open(&tmp.path().join("state")).unwrap();
        let mut w = watch();
        w.path = root.clone();
        let mut intake = Intake::new(&[w], &store).unwrap();
        let counters = Counters::default();

        let dir = root.canonicalize().unwrap().join("contract-2024");
        std::fs::create_dir(&dir).unwrap();
        intake.hint(0, &dir, &counters);
        assert_eq!(intake.candidates(), 0);
        // The file lands after that scan; no hint announces it.
        std::fs::write(dir.join("content.txt"), b"late").unwrap();
        let now = Instant::now();
        let deadline = intake.next_deadline(now).unwrap();
        assert!(deadline <= now + RECHECK_AFTER, "no second look scheduled");

        intake.ready(now, false, &counters);
        assert_eq!(intake.candidates(), 0, "looked again too early");
        intake.ready(now + RECHECK_AFTER, false, &counters);
        assert_eq!(intake.candidates(), 1, "the late file was not found");
        // One second look only.
        assert!(
            intake
                .next_deadline(now + RECHECK_AFTER)
                .is_none_or(|d| d > now + RECHECK_AFTER),
            "the recheck stays scheduled"
        );
    }
}
