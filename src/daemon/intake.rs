//! Intake: the front half of the pipeline, `discover ─► settle ─► group ─►
//! hash ─► classify ─► build`, for every watch.
//!
//! One `pass` scans each watch root, feeds what it saw to the `Settler` and the
//! `Grouper`, and builds the groups that became ready. It is synchronous (it
//! walks directories and reads files); the engine runs it on the blocking pool.
//! Files whose path, size and mtime match what the store already holds are
//! dropped right after the scan, without being opened: that is the restart
//! fast path, and why a second `once` over an unchanged tree hashes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use tracing::{debug, warn};

use super::build::{self, Built, GroupContext, Unreadable};
use super::scan::{self, ScannedFile};
use crate::config::Watch;
use crate::error::FatalError;
use crate::pipeline::classify::Classifier;
use crate::pipeline::group::{self, Grouper, Readiness, Role};
use crate::pipeline::settle::{NameFilter, Settler};
use crate::store::{NewFile, Store};
use crate::telemetry::Counters;

/// One watch and what intake knows about it.
struct WatchState {
    watch: Watch,
    /// Stable identity of the watch in the store: its root path.
    id: String,
    filter: NameFilter,
    classifier: Classifier,
    settler: Settler<String>,
    grouper: Grouper,
    /// (size, mtime) of every file the store has recorded in an object.
    known: HashMap<String, (u64, i64)>,
    /// Paths already reported, so a problem is logged once, not every pass.
    reported: HashSet<PathBuf>,
}

/// A group that a pass found ready, and what building it gave.
#[derive(Debug)]
pub struct ReadyGroup {
    pub watch: usize,
    pub key_prefix: String,
    pub built: Built,
}

#[derive(Debug, Default)]
pub struct PassOutput {
    pub ready: Vec<ReadyGroup>,
    /// Groups that time alone will make ready (members still settling, quiet period).
    pub settling: usize,
    /// Groups that wait for their `ready_marker`.
    pub awaiting_marker: Vec<String>,
}

pub struct Intake {
    watches: Vec<WatchState>,
}

impl Intake {
    /// Builds the per-watch state and loads what the store knows of each watch.
    pub fn new(watches: &[Watch], store: &Store) -> Result<Intake, FatalError> {
        let mut states = Vec::with_capacity(watches.len());
        for watch in watches {
            let id = watch_id(watch);
            let filter = NameFilter::new(watch).map_err(|err| {
                FatalError::Runtime(format!("watch {}: {err}", watch.path.display()))
            })?;
            let classifier = Classifier::new(watch).map_err(|err| {
                FatalError::Runtime(format!("watch {}: {err}", watch.path.display()))
            })?;
            let known = store
                .files_of_watch(&id)?
                .into_iter()
                .map(|(rel, record)| (rel, (record.size, record.mtime_ns)))
                .collect();
            states.push(WatchState {
                settler: Settler::new(watch.settle),
                grouper: Grouper::new(watch.settle, watch.max_group_wait),
                watch: watch.clone(),
                id,
                filter,
                classifier,
                known,
                reported: HashSet::new(),
            });
        }
        Ok(Intake { watches: states })
    }

    pub fn watch(&self, index: usize) -> &Watch {
        &self.watches[index].watch
    }

    pub fn watch_id(&self, index: usize) -> &str {
        &self.watches[index].id
    }

    /// Scans every watch and builds the groups that are ready at `now`.
    pub fn pass(
        &mut self,
        now: Instant,
        store: &Store,
        dialect_has_upload: bool,
        counters: &Counters,
    ) -> PassOutput {
        let mut out = PassOutput::default();
        for (index, state) in self.watches.iter_mut().enumerate() {
            state.pass(index, now, store, dialect_has_upload, counters, &mut out);
        }
        out
    }

    /// Notes that these files are now recorded in the store, so later scans
    /// pass them over until they change.
    pub fn recorded(&mut self, watch: usize, files: &[NewFile]) {
        let state = &mut self.watches[watch];
        for file in files {
            state
                .known
                .insert(file.rel.clone(), (file.size, file.mtime_ns));
            state.settler.forget(&file.rel);
        }
    }

    /// The earliest moment a settling file or group could become ready.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.watches
            .iter()
            .flat_map(|s| [s.settler.next_deadline(now), s.grouper.next_deadline(now)])
            .flatten()
            .min()
    }
}

/// The store's name for a watch.
pub fn watch_id(watch: &Watch) -> String {
    watch.path.to_string_lossy().into_owned()
}

/// The members of one group seen in a scan.
#[derive(Default)]
struct GroupMembers {
    blobs: Vec<ScannedFile>,
    sidecars: Vec<ScannedFile>,
    marker: bool,
}

impl WatchState {
    fn pass(
        &mut self,
        index: usize,
        now: Instant,
        store: &Store,
        dialect_has_upload: bool,
        counters: &Counters,
        out: &mut PassOutput,
    ) {
        let scanned = match scan::scan(&self.watch.path, self.watch.follow_symlinks, &self.filter) {
            Ok(scanned) => scanned,
            Err(err) => {
                if self.reported.insert(self.watch.path.clone()) {
                    warn!(path = %self.watch.path.display(), error = %err, "cannot scan watch root; will retry");
                }
                return;
            }
        };
        for skipped in &scanned.skipped {
            if self.reported.insert(skipped.path.clone()) {
                Counters::add(&counters.files_skipped, 1);
                if skipped.reason.is_problem() {
                    warn!(path = %skipped.path.display(), reason = %skipped.reason, "skipped");
                } else {
                    debug!(path = %skipped.path.display(), reason = %skipped.reason, "skipped");
                }
            }
        }

        // Group every blob that is new or changed since the store last saw
        // it. Sidecars and markers are never recorded, so they always show up
        // here; they are kept aside and looked up per group below, since one
        // may apply to several groups (SPEC §4, `group::Scope`).
        let mut groups: BTreeMap<String, GroupMembers> = BTreeMap::new();
        let mut controls: HashMap<String, (Role, ScannedFile)> = HashMap::new();
        let mut present = HashSet::new();
        for file in scanned.files {
            let assignment = match group::assign(&self.watch, &file.rel) {
                Ok(assignment) => assignment,
                Err(err) => {
                    if self.reported.insert(file.abs.clone()) {
                        warn!(path = %file.abs.display(), error = %err, "skipped");
                    }
                    continue;
                }
            };
            if assignment.role != Role::Blob {
                self.settler
                    .observe(file.rel.clone(), file.size, file.mtime_ns, now);
                present.insert(file.rel.clone());
                controls.insert(file.rel.clone(), (assignment.role, file));
                continue;
            }
            if self.known.get(&file.rel) == Some(&(file.size, file.mtime_ns)) {
                continue;
            }
            if !self.known.contains_key(&file.rel) && !self.settler.contains(&file.rel) {
                Counters::add(&counters.files_seen, 1);
            }
            let observation = self
                .settler
                .observe(file.rel.clone(), file.size, file.mtime_ns, now);
            if observation.is_change() {
                self.grouper.touch(&assignment.key_prefix, now);
            }
            present.insert(file.rel.clone());
            groups
                .entry(assignment.key_prefix)
                .or_default()
                .blobs
                .push(file);
        }
        self.settler.retain(|rel| present.contains(rel));
        for members in groups.values_mut() {
            let Some(first) = members.blobs.first() else {
                continue;
            };
            if let Ok(rels) = group::sidecar_rels(&self.watch, &first.rel) {
                members.sidecars = rels
                    .iter()
                    .filter_map(|rel| controls.get(rel))
                    .map(|(_, file)| file.clone())
                    .collect();
            }
            if let Ok(Some(marker)) = group::marker_rel(&self.watch, &first.rel) {
                members.marker = controls.contains_key(&marker);
            }
        }

        for (key_prefix, members) in groups {
            if members.marker {
                self.grouper.marker_seen(&key_prefix);
            }
            let all_settled = members
                .blobs
                .iter()
                .chain(&members.sidecars)
                .all(|f| self.settler.is_settled(&f.rel, now));
            let readiness = self.grouper.ready(&key_prefix, all_settled, now);
            let blobs = match readiness {
                Readiness::NotYet => {
                    if self.watch.ready_marker.is_some() && !members.marker && all_settled {
                        out.awaiting_marker.push(key_prefix);
                    } else {
                        out.settling += 1;
                    }
                    continue;
                }
                Readiness::Ready => members.blobs,
                Readiness::TimedOut => {
                    let (settled, unsettled): (Vec<_>, Vec<_>) = members
                        .blobs
                        .into_iter()
                        .partition(|f| self.settler.is_settled(&f.rel, now));
                    warn!(
                        key_prefix = %key_prefix,
                        waited_s = self.watch.max_group_wait.as_secs(),
                        unsettled = ?unsettled.iter().map(|f| &f.rel).collect::<Vec<_>>(),
                        "group did not complete within max_group_wait; sending its settled members"
                    );
                    settled
                }
            };
            let ctx = GroupContext {
                watch: &self.watch,
                watch_id: &self.id,
                classifier: &self.classifier,
                dialect_has_upload,
                counters,
            };
            let bucket = self.watch.bucket.clone();
            let is_delivered = |sha256: &str| match store.hash_delivered(&bucket, sha256) {
                Ok(delivered) => delivered,
                Err(err) => {
                    warn!(error = %err, "duplicate lookup failed; sending the blob");
                    false
                }
            };
            let mut unreadable: Vec<Unreadable> = Vec::new();
            let built = build::build_group(
                &ctx,
                &key_prefix,
                &blobs,
                &members.sidecars,
                &is_delivered,
                &mut unreadable,
            );
            for item in unreadable {
                if self.reported.insert(item.path.clone()) {
                    warn!(path = %item.path.display(), error = %item.error, "cannot read file; will retry at the next scan");
                }
            }
            match built {
                Built::Unsettled { changed } => {
                    for rel in &changed {
                        self.settler.reset(rel, now);
                    }
                    self.grouper.touch(&key_prefix, now);
                    out.settling += 1;
                }
                Built::Empty => self.grouper.remove(&key_prefix),
                built => {
                    self.grouper.remove(&key_prefix);
                    out.ready.push(ReadyGroup {
                        watch: index,
                        key_prefix,
                        built,
                    });
                }
            }
        }
    }
}
