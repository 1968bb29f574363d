//! Intake: the front half of the pipeline, `discover ─► settle ─► group`,
//! for every watch, and the bookkeeping around `hash ─► classify ─► build`.
//!
//! Intake keeps, per watch, the candidates: files seen that the store has not
//! recorded in their current version (blobs waiting for their group), plus
//! every sidecar and ready marker. Two kinds of input feed it:
//! - walks: a full walk of the watch root is the truth (SPEC §2, promise 7),
//!   and candidates it no longer finds are forgotten; a directory an event
//!   named is walked too. Walks are taken a part at a time (`advance`), and
//!   pause while the watch holds [`CANDIDATE_CAP`] candidates, so memory
//!   follows the work in progress, not the size of the tree;
//! - `hint`: one path named by an OS event, looked at alone.
//!
//! `ready` then turns the candidates into the groups that may be sent now,
//! each as a `GroupPlan` that carries everything a build needs, so builds run
//! on the blocking pool without holding intake.
//!
//! Files whose path, size and mtime match what the store already holds are
//! dropped as soon as they are seen, without being opened: that is the
//! restart fast path, and why a second `once` over an unchanged tree hashes
//! nothing. The store is asked file by file (a primary-key lookup) instead
//! of being loaded whole: a million tracked files cost no memory here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::StoreHandle;
use super::build::{self, Built, GroupContext, Unreadable};
use super::scan::{self, Found, PathState, ScannedFile, SkipReason, Walk};
use crate::config::GroupBy;
use crate::config::Watch;
use crate::error::FatalError;
use crate::pipeline::classify::Classifier;
use crate::pipeline::group::{self, Grouper, Readiness, Role, Scope};
use crate::pipeline::settle::{NameFilter, Settler};
use crate::store::{FileKey, NewFile};
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
        store: &StoreHandle,
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
        let is_delivered = |sha256: &str| match store.read().hash_delivered(&watch.bucket, sha256) {
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
    /// Time alone will make these ready (members settling, quiet period),
    /// plus one per watch whose walk has files still to take.
    pub settling: usize,
    /// These wait for their `ready_marker`; [`Intake::awaiting_marker`]
    /// names them.
    pub awaiting_marker: usize,
}

/// How many candidate files a watch holds before its walk pauses (at the
/// next directory boundary) until builds have taken some: what a million
/// files dropped at once cost in memory is bounded by this, not by the
/// size of the tree. Files already recorded are never candidates, so a
/// restart walk over a delivered tree never pauses. At ~0.5 KiB a
/// candidate (its stat, names, settle and group entries) this is ~8 MiB.
pub const CANDIDATE_CAP: usize = 16_384;

/// Files looked up in the store under one lock while walking.
const LOOKUP_CHUNK: usize = 256;

/// One candidate file and where it belongs.
struct Candidate {
    file: ScannedFile,
    role: Role,
    key_prefix: String,
    scope: Scope,
    /// The walk generation that last saw it (see [`WatchState::generation`]).
    seen: u64,
}

/// Why a group evaluated as not ready is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Settling,
    Marker,
}

/// A walk in progress.
struct ActiveWalk {
    walk: Walk,
    /// A full walk of the watch root: when it ends, candidates it did not
    /// see are forgotten. `None` for a directory an event named.
    full: Option<u64>,
}

/// One watch and what intake knows about it.
///
/// Groups are indexed so that the work per event is proportional to what
/// the event touched, not to what intake holds: `ready` looks only at
/// groups marked `dirty` (a member appeared, changed or left; a build came
/// back) or whose timer came due, and a burst of n files costs O(n log n),
/// not O(n²).
struct WatchState {
    context: Arc<WatchContext>,
    /// The canonical watch root, once it could be resolved.
    root: Option<PathBuf>,
    filter: NameFilter,
    settler: Settler<String>,
    grouper: Grouper,
    /// In path order, so a directory that went away is a range.
    candidates: BTreeMap<String, Candidate>,
    /// Blob candidates by group.
    members: HashMap<String, BTreeSet<String>>,
    /// Groups with blob candidates, by directory: a directory-wide sidecar
    /// or marker concerns all of them.
    by_dir: HashMap<String, HashSet<String>>,
    /// Groups to look at in the next `ready`.
    dirty: HashSet<String>,
    /// When a group that was not ready could become ready by time alone.
    timers: BTreeSet<(Instant, String)>,
    timer_of: HashMap<String, Instant>,
    /// Groups found not ready at their last look, and why.
    waits: HashMap<String, Wait>,
    settling: usize,
    awaiting_marker: usize,
    /// Groups handed out by `ready` whose build has not come back, with
    /// how many files each build took.
    building: HashMap<String, usize>,
    /// The sum of those: candidates that are being built, not waiting.
    building_files: usize,
    /// Paths already reported, so a problem is logged once, not every scan.
    reported: HashSet<PathBuf>,
    /// Files that could not be read, and when; retried after `rescan_interval`.
    unreadable: HashMap<String, Instant>,
    /// New directories to walk once more, and when (see [`RECHECK_AFTER`]).
    rechecks: HashMap<PathBuf, Instant>,
    /// Walks in progress, taken from the front: directories events named
    /// go ahead of a full walk.
    walks: VecDeque<ActiveWalk>,
    /// Raised by each full walk; every candidate carries the generation of
    /// the last walk (or event) that saw it.
    generation: u64,
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
    /// [`CANDIDATE_CAP`], lowered by tests.
    cap: usize,
}

impl Intake {
    /// Builds the per-watch state. What the store has recorded is looked up
    /// file by file as walks find them, never loaded whole.
    pub fn new(watches: &[Watch]) -> Result<Intake, FatalError> {
        let mut states = Vec::with_capacity(watches.len());
        for watch in watches {
            let invalid = |err: globset::Error| {
                FatalError::Runtime(format!("watch {}: {err}", watch.path.display()))
            };
            states.push(WatchState {
                filter: NameFilter::new(watch).map_err(invalid)?,
                settler: Settler::new(watch.settle),
                grouper: Grouper::new(watch.settle, watch.max_group_wait)
                    .marker_required(watch.ready_marker.is_some()),
                context: Arc::new(WatchContext {
                    classifier: Classifier::new(watch).map_err(invalid)?,
                    watch: watch.clone(),
                    id: watch_id(watch),
                }),
                root: watch.path.canonicalize().ok(),
                candidates: BTreeMap::new(),
                members: HashMap::new(),
                by_dir: HashMap::new(),
                dirty: HashSet::new(),
                timers: BTreeSet::new(),
                timer_of: HashMap::new(),
                waits: HashMap::new(),
                settling: 0,
                awaiting_marker: 0,
                building: HashMap::new(),
                building_files: 0,
                reported: HashSet::new(),
                unreadable: HashMap::new(),
                rechecks: HashMap::new(),
                walks: VecDeque::new(),
                generation: 0,
            });
        }
        Ok(Intake {
            watches: states,
            cap: CANDIDATE_CAP,
        })
    }

    /// Pauses walks at `cap` candidates per watch instead of [`CANDIDATE_CAP`].
    pub fn candidate_cap(mut self, cap: usize) -> Intake {
        self.cap = cap;
        self
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

    /// Walks the whole watch root at once, without pausing; the candidates
    /// it no longer finds are forgotten. Blocking. For `plan` and tests: the
    /// daemon starts a walk and advances it within [`CANDIDATE_CAP`].
    pub fn scan(&mut self, index: usize, counters: &Counters, store: &StoreHandle) {
        self.start_scan(index, counters);
        let state = &mut self.watches[index];
        while !state.walks.is_empty() {
            state.walk(usize::MAX, counters, store);
        }
    }

    /// Queues a walk of the whole watch root, unless one is queued already
    /// (it is the scan asked for). The walk is taken by [`Intake::advance`].
    pub fn start_scan(&mut self, index: usize, counters: &Counters) {
        let state = &mut self.watches[index];
        if state.walks.iter().any(|w| w.full.is_some()) {
            return;
        }
        let watch = &state.context.watch;
        let root = match watch.path.canonicalize() {
            Ok(root) if root.is_dir() => root,
            Ok(_) => {
                state.unscannable(counters, "watch path is not a directory".into());
                return;
            }
            Err(err) => {
                state.unscannable(counters, err.to_string());
                return;
            }
        };
        state.reported.remove(&watch.path.clone());
        state.generation += 1;
        state.walks.push_back(ActiveWalk {
            walk: Walk::new(&root, &root, watch.follow_symlinks),
            full: Some(state.generation),
        });
        state.root = Some(root);
    }

    /// Takes what the queued walks find, each watch up to [`CANDIDATE_CAP`]
    /// candidates, and queues the new directories whose second look is due.
    /// Blocking.
    pub fn advance(&mut self, now: Instant, counters: &Counters, store: &StoreHandle) {
        for state in &mut self.watches {
            state.queue_rechecks(now);
            if state.may_walk(self.cap) {
                state.walk(self.cap, counters, store);
            }
        }
    }

    /// Whether [`Intake::advance`] has something to do at `now`.
    pub fn may_advance(&self, now: Instant) -> bool {
        self.watches
            .iter()
            .any(|s| s.may_walk(self.cap) || s.rechecks.values().any(|at| *at <= now))
    }

    /// Looks at one path an event named. Blocking. A new directory is
    /// queued for walking, by [`Intake::advance`].
    pub fn hint(&mut self, index: usize, path: &Path, counters: &Counters, store: &StoreHandle) {
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
            PathState::File(file) => {
                let known = state.lookup(store, &[&file.rel]).pop().flatten();
                state.observe(file, known, counters);
            }
            PathState::Dir => {
                let walk = Walk::new(&root, path, watch.follow_symlinks);
                // Ahead of a full walk still working through a backlog:
                // a fresh drop is seen now, not after the whole tree.
                state.walks.push_front(ActiveWalk { walk, full: None });
                state
                    .rechecks
                    .insert(path.to_path_buf(), Instant::now() + RECHECK_AFTER);
            }
            PathState::Gone => {
                // A file, or a whole directory, went away.
                let prefix = format!("{rel}/");
                let gone: Vec<String> = state
                    .candidates
                    .range(prefix.clone()..)
                    .map(|(c, _)| c)
                    .take_while(|c| c.starts_with(&prefix))
                    .cloned()
                    .collect();
                state.remove(&rel);
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
    pub fn ready(&mut self, now: Instant, restat: bool) -> (Vec<GroupPlan>, Waiting) {
        let mut plans = Vec::new();
        let mut waiting = Waiting::default();
        for (index, state) in self.watches.iter_mut().enumerate() {
            state.ready(index, now, restat, &mut plans);
            waiting.settling += state.settling + usize::from(!state.walks.is_empty());
            waiting.awaiting_marker += state.awaiting_marker;
        }
        (plans, waiting)
    }

    /// The groups waiting for their ready marker at their last look.
    pub fn awaiting_marker(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .watches
            .iter()
            .flat_map(|s| {
                s.waits
                    .iter()
                    .filter(|(_, w)| **w == Wait::Marker)
                    .map(|(k, _)| k.clone())
            })
            .collect();
        out.sort();
        out
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
        if let Some(files) = state.building.remove(key_prefix) {
            state.building_files -= files;
        }
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
                if state.members.contains_key(key_prefix) {
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
        state.dirty.insert(key_prefix.to_owned());
    }

    /// The earliest moment a settling file or a waiting group could become
    /// ready, or a walk go on (`now`).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.watches
            .iter()
            .flat_map(|s| {
                [
                    s.settler.next_deadline(now),
                    s.timers.first().map(|(at, _)| *at).filter(|at| *at > now),
                    s.rechecks.values().min().copied(),
                    s.may_walk(self.cap).then_some(now),
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

/// The directory part of a relative path; `""` for the root.
fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(dir, _)| dir)
}

impl WatchState {
    /// The watch root cannot be walked: said once, tried again at the next scan.
    fn unscannable(&mut self, counters: &Counters, error: String) {
        let path = self.context.watch.path.clone();
        if self.reported.insert(path.clone()) {
            counters.ignored("unreadable");
            warn!(path = %path.display(), %error, "cannot scan watch root; will retry");
        }
    }

    /// Whether the walks may take more files now: while fewer than `cap`
    /// candidates wait (files being built do not count, so the next part
    /// of a tree settles while the last one is built), or when nothing
    /// intake holds can move (every group waits for its marker, or for a
    /// file nobody may read), so a backlog of groups waiting for markers
    /// never keeps the rest of the tree from being found.
    fn may_walk(&self, cap: usize) -> bool {
        !self.walks.is_empty()
            && (self.waiting_files() < cap
                || (self.building.is_empty() && self.dirty.is_empty() && self.settling == 0))
    }

    /// Candidates not being built.
    fn waiting_files(&self) -> usize {
        self.candidates.len().saturating_sub(self.building_files)
    }

    /// Queues a second walk of the new directories whose time has come.
    fn queue_rechecks(&mut self, now: Instant) {
        if self.rechecks.values().all(|at| *at > now) {
            return;
        }
        let Some(root) = self.root.clone() else {
            self.rechecks.clear();
            return;
        };
        let follow = self.context.watch.follow_symlinks;
        let due: Vec<PathBuf> = self
            .rechecks
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in due {
            self.rechecks.remove(&dir);
            let walk = Walk::new(&root, &dir, follow);
            self.walks.push_front(ActiveWalk { walk, full: None });
        }
    }

    /// Takes files from the walks until they end or the watch holds `cap`
    /// candidates. Past the cap, the walk still finishes the directory (the
    /// group, under `group_by = "file"`) it is in, so a paused walk never
    /// splits a group.
    fn walk(&mut self, cap: usize, counters: &Counters, store: &StoreHandle) {
        let per_file = self.context.watch.group_by == GroupBy::File;
        while let Some(mut active) = self.walks.pop_front() {
            let mut boundary: Option<String> = None;
            let mut paused = false;
            loop {
                let mut chunk = Vec::with_capacity(LOOKUP_CHUNK);
                while chunk.len() < LOOKUP_CHUNK {
                    let Some(found) = active.walk.next(&self.filter) else {
                        break;
                    };
                    if let Found::File(file) = &found {
                        if boundary.is_none() && self.waiting_files() + chunk.len() >= cap {
                            boundary = Some(if per_file {
                                file.rel.clone()
                            } else {
                                dir_of(&file.rel).to_owned()
                            });
                        }
                        let here = if per_file {
                            file.rel.as_str()
                        } else {
                            dir_of(&file.rel)
                        };
                        if boundary.as_deref().is_some_and(|b| b != here) {
                            active.walk.put_back(found);
                            paused = true;
                            break;
                        }
                    }
                    chunk.push(found);
                }
                let done = chunk.is_empty() && !paused;
                self.take_chunk(chunk, counters, store);
                if paused || done {
                    break;
                }
            }
            if paused {
                self.walks.push_front(active);
                return;
            }
            if let Some(generation) = active.full {
                self.forget_unseen(generation);
            }
        }
    }

    /// Observes one chunk of walk results, with one store lookup for all.
    fn take_chunk(&mut self, chunk: Vec<Found>, counters: &Counters, store: &StoreHandle) {
        let rels: Vec<&str> = chunk
            .iter()
            .filter_map(|f| match f {
                Found::File(file) => Some(file.rel.as_str()),
                Found::Skipped(_) => None,
            })
            .collect();
        let mut known = self.lookup(store, &rels).into_iter();
        for found in chunk {
            match found {
                Found::File(file) => {
                    let stat = known.next().flatten();
                    self.observe(file, stat, counters);
                }
                Found::Skipped(skipped) => self.report(&skipped.path, &skipped.reason, counters),
            }
        }
    }

    /// Forgets the candidates a full walk did not find.
    fn forget_unseen(&mut self, generation: u64) {
        let gone: Vec<String> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.seen < generation)
            .map(|(rel, _)| rel.clone())
            .collect();
        for rel in gone {
            self.remove(&rel);
        }
    }

    /// The recorded (size, mtime) of each file, under one lock. A store that
    /// cannot answer makes the files look new: they are hashed again, and a
    /// blob already delivered is then skipped by its hash.
    fn lookup(&self, store: &StoreHandle, rels: &[&str]) -> Vec<Option<(u64, i64)>> {
        if rels.is_empty() {
            return Vec::new();
        }
        let store = store.read();
        rels.iter()
            .map(|rel| {
                let key = FileKey {
                    watch: &self.context.id,
                    rel,
                };
                store.file_stat(key).unwrap_or_else(|err| {
                    warn!(file = %rel, error = %err, "cannot look the file up in the store; reading it again");
                    None
                })
            })
            .collect()
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

    /// One file as seen now; `known` is what the store recorded of it.
    fn observe(&mut self, file: ScannedFile, known: Option<(u64, i64)>, counters: &Counters) {
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
        if assignment.role == Role::Blob && known == Some((file.size, file.mtime_ns)) {
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
        let seen = file.seen_at;
        let observation = self
            .settler
            .observe(file.rel.clone(), file.size, file.mtime_ns, seen);
        let generation = self.generation;
        if let Some(candidate) = self.candidates.get_mut(&file.rel) {
            candidate.file = file;
            candidate.seen = generation;
        } else {
            if assignment.role == Role::Blob {
                Counters::add(&counters.files_seen, 1);
                self.members
                    .entry(assignment.key_prefix.clone())
                    .or_default()
                    .insert(file.rel.clone());
                self.by_dir
                    .entry(assignment.dir.clone())
                    .or_default()
                    .insert(assignment.key_prefix.clone());
            }
            self.candidates.insert(
                file.rel.clone(),
                Candidate {
                    file,
                    role: assignment.role,
                    key_prefix: assignment.key_prefix.clone(),
                    scope: assignment.scope,
                    seen: generation,
                },
            );
        }
        if observation.is_change() {
            if assignment.role == Role::Blob {
                self.grouper.touch(&assignment.key_prefix, seen);
            }
            self.concerns(
                assignment.role,
                assignment.scope,
                &assignment.key_prefix,
                &assignment.dir,
            );
        }
    }

    /// Marks dirty the groups a change to a file with this role concerns.
    fn concerns(&mut self, role: Role, scope: Scope, key_prefix: &str, dir: &str) {
        if role == Role::Blob || scope == Scope::Group {
            self.dirty.insert(key_prefix.to_owned());
        } else if let Some(groups) = self.by_dir.get(dir) {
            self.dirty.extend(groups.iter().cloned());
        }
    }

    fn remove(&mut self, rel: &str) {
        let Some(candidate) = self.candidates.remove(rel) else {
            return;
        };
        self.settler.forget(&rel.to_owned());
        let dir = dir_of(rel);
        if candidate.role == Role::Blob
            && let Some(members) = self.members.get_mut(&candidate.key_prefix)
        {
            members.remove(rel);
            if members.is_empty() {
                self.members.remove(&candidate.key_prefix);
                if let Some(groups) = self.by_dir.get_mut(dir) {
                    groups.remove(&candidate.key_prefix);
                    if groups.is_empty() {
                        self.by_dir.remove(dir);
                    }
                }
            }
        }
        self.concerns(candidate.role, candidate.scope, &candidate.key_prefix, dir);
    }

    /// Notes that these files are recorded in the store in this version; a
    /// candidate seen since in another version stays.
    fn recorded(&mut self, files: &[NewFile]) {
        for file in files {
            let same = self
                .candidates
                .get(&file.rel)
                .is_some_and(|c| (c.file.size, c.file.mtime_ns) == (file.size, file.mtime_ns));
            if same {
                self.remove(&file.rel);
            }
        }
    }

    /// Records why a group is not ready, keeping the counts.
    fn set_wait(&mut self, key_prefix: &str, wait: Option<Wait>) {
        let old = match wait {
            Some(wait) => self.waits.insert(key_prefix.to_owned(), wait),
            None => self.waits.remove(key_prefix),
        };
        for (w, delta) in [(old, -1isize), (wait, 1)] {
            let count = match w {
                Some(Wait::Settling) => &mut self.settling,
                Some(Wait::Marker) => &mut self.awaiting_marker,
                None => continue,
            };
            *count = count.saturating_add_signed(delta);
        }
    }

    /// Looks at the group again at `at` (replacing an earlier timer).
    fn schedule(&mut self, key_prefix: &str, at: Option<Instant>) {
        if let Some(old) = self.timer_of.remove(key_prefix) {
            self.timers.remove(&(old, key_prefix.to_owned()));
        }
        if let Some(at) = at {
            self.timers.insert((at, key_prefix.to_owned()));
            self.timer_of.insert(key_prefix.to_owned(), at);
        }
    }

    fn ready(&mut self, index: usize, now: Instant, restat: bool, plans: &mut Vec<GroupPlan>) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            if let Some((_, key_prefix)) = self.timers.pop_first() {
                self.timer_of.remove(&key_prefix);
                self.dirty.insert(key_prefix);
            }
        }
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty: Vec<String> = self.dirty.drain().collect();
        dirty.sort_unstable();
        let mut chosen = Vec::new();
        for key_prefix in dirty {
            self.schedule(&key_prefix, None);
            self.set_wait(&key_prefix, None);
            if self.building.contains_key(&key_prefix) {
                // Looked at again when its build comes back.
                continue;
            }
            if !self.members.contains_key(&key_prefix) {
                // Nothing left to time.
                self.grouper.remove(&key_prefix);
                continue;
            }
            if let Some(group) = self.evaluate(&key_prefix, now) {
                chosen.push(group);
            }
        }
        for (key_prefix, blobs, sidecars, controls) in chosen {
            if restat && self.changed_since_seen(blobs.iter().chain(&sidecars), now) {
                self.grouper.touch(&key_prefix, now);
                self.dirty.insert(key_prefix.clone());
                self.set_wait(&key_prefix, Some(Wait::Settling));
                continue;
            }
            self.building.insert(key_prefix.clone(), blobs.len());
            self.building_files += blobs.len();
            plans.push(GroupPlan {
                watch: index,
                key_prefix,
                blobs,
                sidecars,
                controls,
                context: Arc::clone(&self.context),
            });
        }
    }

    /// Decides one group with blob candidates: its members to build when it
    /// may go now, else `None`, with why it waits and when to look again.
    #[allow(clippy::type_complexity)]
    fn evaluate(
        &mut self,
        key_prefix: &str,
        now: Instant,
    ) -> Option<(String, Vec<ScannedFile>, Vec<ScannedFile>, Vec<ScannedFile>)> {
        let watch = &self.context.watch;
        let blobs: Vec<&Candidate> = self
            .members
            .get(key_prefix)?
            .iter()
            .filter_map(|rel| self.candidates.get(rel))
            .collect();
        let first = &blobs.first()?.file.rel;
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
            Readiness::NotYet => None,
            Readiness::Ready => Some(blobs.clone()),
            Readiness::TimedOut => {
                let (settled, unsettled): (Vec<_>, Vec<_>) =
                    blobs.iter().copied().partition(settled);
                warn!(
                    %key_prefix,
                    waited_s = watch.max_group_wait.as_secs(),
                    marker_missing = watch.ready_marker.is_some() && !marker,
                    unsettled = ?unsettled.iter().map(|c| &c.file.rel).collect::<Vec<_>>(),
                    "group did not complete within max_group_wait; sending its settled members"
                );
                (!settled.is_empty()).then_some(settled)
            }
        };
        if let Some(members) = members {
            return Some((
                key_prefix.to_owned(),
                members.iter().map(|c| c.file.clone()).collect(),
                sidecars.iter().map(|c| c.file.clone()).collect(),
                controls,
            ));
        }
        // Not yet: the answer can change by time alone at the earliest of
        // the members' settle deadlines and the group's own (quiet period,
        // max_group_wait); anything else that changes it marks it dirty.
        let next = blobs
            .iter()
            .chain(&sidecars)
            .filter_map(|c| self.settler.settled_at(&c.file.rel))
            .chain(self.grouper.deadline(key_prefix))
            .filter(|at| *at > now)
            .min();
        let wait = if watch.ready_marker.is_some() && !marker {
            Wait::Marker
        } else {
            Wait::Settling
        };
        self.set_wait(key_prefix, Some(wait));
        self.schedule(key_prefix, next);
        None
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
    use crate::config::GroupBy;
    use crate::pipeline::settle::tests::watch;
    use crate::store::Store;

    fn setup(group_by: GroupBy) -> (tempfile::TempDir, PathBuf, StoreHandle, Watch) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("drop");
        std::fs::create_dir(&root).unwrap();
        let store = StoreHandle::new(Store::open(&tmp.path().join("state")).unwrap());
        let mut w = watch();
        w.path = root.clone();
        w.group_by = group_by;
        w.settle = Duration::ZERO;
        (tmp, root, store, w)
    }

    /// `d0` … `d3` under `root`, three files each.
    fn four_directories_of_three(root: &Path) {
        for d in 0..4 {
            let dir = root.join(format!("d{d}"));
            std::fs::create_dir(&dir).unwrap();
            for f in 0..3 {
                std::fs::write(dir.join(format!("f{f}.txt")), format!("{d}/{f}")).unwrap();
            }
        }
    }

    /// A file written into a new directory after the scan its creation
    /// event triggered, with no event of its own (the OS watch on the
    /// directory was not in place yet), is found by the second look.
    #[test]
    fn a_new_directory_is_looked_at_again() {
        let (_tmp, root, store, w) = setup(GroupBy::Directory);
        let mut intake = Intake::new(&[w]).unwrap();
        let counters = Counters::default();

        let dir = root.canonicalize().unwrap().join("contract-2024");
        std::fs::create_dir(&dir).unwrap();
        let now = Instant::now();
        intake.hint(0, &dir, &counters, &store);
        intake.advance(now, &counters, &store);
        assert_eq!(intake.candidates(), 0);
        // The file lands after that scan; no hint announces it.
        std::fs::write(dir.join("content.txt"), b"late").unwrap();
        let due = intake.next_deadline(now).unwrap();
        assert!(due > now, "looked again at once");
        assert!(
            due <= Instant::now() + RECHECK_AFTER,
            "no second look scheduled"
        );

        intake.advance(now, &counters, &store);
        assert_eq!(intake.candidates(), 0, "looked again too early");
        assert!(intake.may_advance(due));
        intake.advance(due, &counters, &store);
        assert_eq!(intake.candidates(), 1, "the late file was not found");
        // One second look only.
        assert!(!intake.may_advance(due), "the recheck stays scheduled");
    }

    /// Past the cap, a walk stops at the next directory, never inside one,
    /// and goes on once builds have taken what intake holds.
    #[test]
    fn a_walk_pauses_at_the_cap_between_directories() {
        let (_tmp, root, store, w) = setup(GroupBy::Directory);
        four_directories_of_three(&root);
        let mut intake = Intake::new(&[w]).unwrap().candidate_cap(4);
        let counters = Counters::default();
        intake.start_scan(0, &counters);
        let now = Instant::now();
        intake.advance(now, &counters, &store);
        // d0 (3 files) is under the cap; d1 crosses it and is taken whole.
        assert_eq!(intake.candidates(), 6);
        assert!(!intake.may_advance(now), "over the cap");
        let (plans, waiting) = intake.ready(now, false);
        assert_eq!(
            plans.iter().map(|p| p.blobs.len()).collect::<Vec<_>>(),
            [3, 3]
        );
        assert_eq!(
            waiting.settling, 1,
            "the paused walk counts as work to come"
        );

        // Files being built do not count: the walk goes on meanwhile.
        assert!(intake.may_advance(now));
        intake.advance(now, &counters, &store);
        assert_eq!(intake.candidates(), 12);
        assert!(!intake.may_advance(now), "over the cap again");
        for plan in &plans {
            let (built, _) = plan.build(&store, false, &counters);
            if let Built::Object { object, .. } = &built {
                store.lock().enqueue(object).unwrap();
            }
            intake.built(0, &plan.key_prefix, &built, &[], now);
        }
        assert_eq!(intake.candidates(), 6);
        let (plans, waiting) = intake.ready(now, false);
        let groups: Vec<&str> = plans.iter().map(|p| p.key_prefix.as_str()).collect();
        assert_eq!(groups, ["/d2", "/d3"]);
        assert_eq!(waiting.settling, 0, "the walk is over");
        assert!(!intake.may_advance(now));
    }

    /// A directory an event names is walked before the rest of a full walk
    /// that works through a backlog.
    #[test]
    fn a_new_drop_goes_ahead_of_a_paused_full_walk() {
        let (_tmp, root, store, w) = setup(GroupBy::Directory);
        four_directories_of_three(&root);
        let mut intake = Intake::new(&[w]).unwrap().candidate_cap(3);
        let counters = Counters::default();
        intake.start_scan(0, &counters);
        let now = Instant::now();
        intake.advance(now, &counters, &store);
        let (plans, _) = intake.ready(now, false);
        assert_eq!(plans.len(), 2, "d0 and d1 go to build");

        let fresh = root.canonicalize().unwrap().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join("a.txt"), b"new").unwrap();
        intake.hint(0, &fresh, &counters, &store);
        intake.advance(now, &counters, &store);
        // The fresh file, then d2 up to the cap; d3 waits.
        assert_eq!(intake.candidates(), 6 + 1 + 3);
    }

    /// Recorded files are looked up in the store, not held: a second walk
    /// over delivered files finds no candidate, and a changed one is one.
    #[test]
    fn recorded_files_are_not_candidates_again() {
        let (_tmp, root, store, w) = setup(GroupBy::File);
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("b.txt"), b"b").unwrap();
        let counters = Counters::default();
        let mut intake = Intake::new(std::slice::from_ref(&w)).unwrap();
        intake.scan(0, &counters, &store);
        let now = Instant::now();
        let (plans, _) = intake.ready(now, false);
        assert_eq!(plans.len(), 2);
        for plan in &plans {
            let (built, _) = plan.build(&store, false, &counters);
            let Built::Object { object, .. } = &built else {
                panic!("not an object")
            };
            store.lock().enqueue(object).unwrap();
        }

        let mut restarted = Intake::new(std::slice::from_ref(&w)).unwrap();
        restarted.scan(0, &counters, &store);
        assert_eq!(restarted.candidates(), 0);
        std::fs::write(root.join("b.txt"), b"bb").unwrap();
        restarted.scan(0, &counters, &store);
        assert_eq!(restarted.candidates(), 1);
    }

    /// A full walk forgets candidates whose files went away unannounced.
    #[test]
    fn a_full_walk_forgets_what_it_no_longer_finds() {
        let (_tmp, root, store, w) = setup(GroupBy::File);
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("b.txt"), b"b").unwrap();
        let counters = Counters::default();
        let mut intake = Intake::new(&[w]).unwrap();
        intake.scan(0, &counters, &store);
        assert_eq!(intake.candidates(), 2);
        std::fs::remove_file(root.join("a.txt")).unwrap();
        intake.scan(0, &counters, &store);
        assert_eq!(intake.candidates(), 1);
        let (plans, _) = intake.ready(Instant::now(), false);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].blobs[0].rel, "b.txt");
    }
}
