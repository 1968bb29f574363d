//! Group: which files become one object, and when that object is ready
//! (SPEC §4).
//!
//! Inputs: a file's path relative to the watch root (`rel`: UTF-8, `/`
//! separators, no leading `/`), the watch's settings, and for readiness the
//! shell's `now` with whether every member is settled.
//!
//! Outputs:
//! - [`assign`]: the object `key_prefix` a file belongs to and its role
//!   (blob, sidecar, ready marker).
//! - [`property_for`], [`check_property_clash`]: blob property names.
//! - [`merge_metadata`]: object metadata from config plus a sidecar.
//! - [`Grouper`]: per group, whether it is ready, timed out, or not yet.
//!
//! Invariants of every key prefix produced here: it starts with `/`, uses `/`
//! separators, never ends with `/` except the root `/` itself, never has an
//! empty, `.` or `..` component. Paths with such components are refused
//! ([`GroupError`]) rather than normalised, so two different paths never
//! silently share an object.
//!
//! Decisions where SPEC is silent:
//! - The `metadata_file` sidecar and the `ready_marker` apply to every group
//!   whose blobs lie directly in their directory ([`Scope::Directory`]): in
//!   `directory` mode that is the one directory group (or, in the watch root,
//!   each per-file object); in `stem` mode every stem of the directory; in
//!   `file` mode every file of the directory. A `{stem}.metadata.json` (only
//!   in `stem` mode) applies to that stem's group alone and wins over the
//!   directory sidecar ([`sidecar_rels`] gives the merge order).
//! - In `file` mode two files differing only in extension (`a.jpg`, `a.json`)
//!   share the key prefix `/a` and so one group; they then also share the
//!   property `a`, and the group is refused by [`check_property_clash`] with a
//!   reason naming both, instead of one object silently replacing the other.
//! - A ready marker makes its groups ready as soon as every member present is
//!   settled, skipping the quiet period: the producer said the set is complete.
//!   It does not skip settling, so no partial file is sent because of it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::{GroupBy, Watch};
use crate::pipeline::settle::STEM_SIDECAR_SUFFIX;

/// Longest blob property Mixpeek accepts (`CreateBlobRequest.property`).
pub const MAX_PROPERTY_CHARS: usize = 100;

/// What a file is to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Uploaded as one blob of the object.
    Blob,
    /// Object metadata; read, never uploaded.
    Sidecar,
    /// The `ready_marker`; never uploaded.
    Marker,
}

/// Which groups a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Exactly the group named by [`Assignment::key_prefix`].
    Group,
    /// Every group whose blobs lie directly in [`Assignment::dir`]; the
    /// `key_prefix` is then the directory's own key prefix.
    Directory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The object `key_prefix` (for [`Scope::Directory`], the directory's).
    pub key_prefix: String,
    pub role: Role,
    pub scope: Scope,
    /// The file's directory relative to the watch root; `""` for the root.
    pub dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("empty relative path")]
    Empty,
    #[error("path `{rel}` has an invalid component `{component}` (empty, `.` or `..`)")]
    BadComponent { rel: String, component: String },
}

/// Splits `rel` into its directory components and file name, refusing
/// anything that is not a plain relative path.
fn split(rel: &str) -> Result<(Vec<&str>, &str), GroupError> {
    if rel.is_empty() {
        return Err(GroupError::Empty);
    }
    let mut parts: Vec<&str> = rel.split('/').collect();
    if let Some(bad) = parts
        .iter()
        .find(|c| c.is_empty() || **c == "." || **c == "..")
    {
        return Err(GroupError::BadComponent {
            rel: rel.to_owned(),
            component: (*bad).to_owned(),
        });
    }
    let name = parts.pop().ok_or(GroupError::Empty)?;
    Ok((parts, name))
}

/// The file name up to its last dot (`a.tar.gz` → `a.tar`). A name without a
/// dot, or starting with one (`.env`, `..a`), is its own stem, so a stem is
/// never empty, `.` or `..`.
pub fn stem_of(name: &str) -> &str {
    if name.starts_with('.') {
        return name;
    }
    match name.rfind('.') {
        Some(i) => &name[..i],
        None => name,
    }
}

/// `{base}/{a}/{b}…` without a doubled `/` when `base` is the root. `base` is
/// normalised by config loading; its leading and trailing `/` are fixed here
/// anyway, so the invariants hold whatever it holds.
fn join(base: &str, parts: &[&str]) -> String {
    let base = base.trim_matches('/');
    let mut out =
        String::with_capacity(base.len() + 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    if !base.is_empty() {
        out.push('/');
        out.push_str(base);
    }
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Where `rel` belongs (SPEC §4 table).
pub fn assign(watch: &Watch, rel: &str) -> Result<Assignment, GroupError> {
    let (dirs, name) = split(rel)?;
    let dir = dirs.join("/");
    let directory_wide = |role| Assignment {
        key_prefix: join(&watch.key_prefix, &dirs),
        role,
        scope: Scope::Directory,
        dir: dir.clone(),
    };
    if watch.ready_marker.as_deref() == Some(name) {
        return Ok(directory_wide(Role::Marker));
    }
    if name == watch.metadata_file {
        return Ok(directory_wide(Role::Sidecar));
    }
    if watch.group_by == GroupBy::Stem
        && let Some(stem) = name
            .strip_suffix(STEM_SIDECAR_SUFFIX)
            .filter(|s| !s.is_empty())
    {
        return Ok(Assignment {
            key_prefix: group_key(watch, &dirs, stem),
            role: Role::Sidecar,
            scope: Scope::Group,
            dir,
        });
    }
    Ok(Assignment {
        key_prefix: group_key(watch, &dirs, stem_of(name)),
        role: Role::Blob,
        scope: Scope::Group,
        dir,
    })
}

/// The key prefix of the group of a blob with stem `stem` in `dirs`.
fn group_key(watch: &Watch, dirs: &[&str], stem: &str) -> String {
    let mut parts = dirs.to_vec();
    match watch.group_by {
        // Files in the root have no directory of their own to share, so each
        // is its own object, as in `file` mode.
        GroupBy::Directory if !dirs.is_empty() => {}
        GroupBy::Directory | GroupBy::Stem | GroupBy::File => parts.push(stem),
    }
    join(&watch.key_prefix, &parts)
}

/// A blob's own `key_prefix`: `/{file name}`.
pub fn blob_key_prefix(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    format!("/{name}")
}

/// The sidecar files that apply to the group of blob `rel`, as paths relative
/// to the watch root, in merge order (later entries win).
pub fn sidecar_rels(watch: &Watch, rel: &str) -> Result<Vec<String>, GroupError> {
    let (dirs, name) = split(rel)?;
    let in_dir = |file: &str| {
        let mut parts = dirs.clone();
        parts.push(file);
        parts.join("/")
    };
    let mut out = vec![in_dir(&watch.metadata_file)];
    if watch.group_by == GroupBy::Stem {
        out.push(in_dir(&format!("{}{STEM_SIDECAR_SUFFIX}", stem_of(name))));
    }
    Ok(out)
}

/// The marker file that makes the group of blob `rel` ready, relative to the
/// watch root, when the watch has a `ready_marker`.
pub fn marker_rel(watch: &Watch, rel: &str) -> Result<Option<String>, GroupError> {
    let (dirs, _) = split(rel)?;
    Ok(watch.ready_marker.as_ref().map(|marker| {
        let mut parts = dirs.clone();
        parts.push(marker);
        parts.join("/")
    }))
}

/// Lower-cases `stem`, replaces every character outside `[a-z0-9_]` by `_`,
/// and cuts to [`MAX_PROPERTY_CHARS`]. The result always matches
/// `^[a-z0-9_]{1,100}$`; an empty stem (which [`stem_of`] never yields)
/// becomes `_` so that the API's minimum length holds.
pub fn sanitize_property(stem: &str) -> String {
    let mut out: String = stem
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_PROPERTY_CHARS)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The blob property of `rel`: the first `[[watch.rule]]` matching `rel` that
/// names a property, else the sanitised stem. The rule's property is taken as
/// written (config validation checks it).
///
/// Compiles the rule globs on each call; the shell uses
/// `classify::Classifier`, which compiles them once. A rule whose glob does
/// not compile matches nothing here (config loading reports it).
#[cfg(test)]
pub fn property_for(watch: &Watch, rel: &str) -> String {
    for rule in &watch.rules {
        let Some(property) = &rule.property else {
            continue;
        };
        if crate::pipeline::settle::compile_glob(&rule.matches)
            .is_ok_and(|g| g.compile_matcher().is_match(rel))
        {
            return property.clone();
        }
    }
    let name = rel.rsplit('/').next().unwrap_or(rel);
    sanitize_property(stem_of(name))
}

/// Refuses a group in which two files map to one property: the API would keep
/// one blob per property, so one file would be lost without a word.
pub fn check_property_clash(members: &[(String, String)]) -> Result<(), String> {
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(members.len());
    for (rel, property) in members {
        if let Some(first) = seen.insert(property, rel) {
            return Err(format!(
                "`{first}` and `{rel}` both map to blob property `{property}`; \
                 rename one of them or give one a property with a [[watch.rule]]"
            ));
        }
    }
    Ok(())
}

/// `static_md` with the sidecar's top-level keys laid over it (sidecar wins;
/// the merge is shallow, so a sidecar key replaces a whole nested value).
/// A UTF-8 byte order mark before the JSON is accepted.
pub fn merge_metadata(
    static_md: &Map<String, Value>,
    sidecar: Option<&[u8]>,
    sidecar_name: &str,
) -> Result<Map<String, Value>, String> {
    let mut merged = static_md.clone();
    let Some(bytes) = sidecar else {
        return Ok(merged);
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("metadata sidecar `{sidecar_name}` is not valid JSON: {e}"))?;
    let kind = match value {
        Value::Object(fields) => {
            merged.extend(fields);
            return Ok(merged);
        }
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(format!(
        "metadata sidecar `{sidecar_name}` is {kind}, expected a JSON object"
    ))
}

/// Whether a group should be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    NotYet,
    /// Every member is settled and the group is quiet (or marked complete).
    Ready,
    /// `max_group_wait` passed with members still unsettled: send the settled
    /// ones and warn about the rest.
    TimedOut,
}

#[derive(Debug, Clone, Copy, Default)]
struct GroupState {
    /// First and last touch; `None` while only the marker has been seen.
    touched: Option<(Instant, Instant)>,
    marker: bool,
}

/// Per-group timing: when each group was first and last touched, and whether
/// its ready marker was seen. The shell owns the membership and whether the
/// members are settled; this only decides from times.
#[derive(Debug, Clone)]
pub struct Grouper {
    settle: Duration,
    max_group_wait: Duration,
    /// The watch has a `ready_marker`: groups wait for it (or for
    /// `max_group_wait`) instead of going after a quiet period.
    marker_required: bool,
    groups: HashMap<String, GroupState>,
}

impl Grouper {
    pub fn new(settle: Duration, max_group_wait: Duration) -> Self {
        Grouper {
            settle,
            max_group_wait,
            marker_required: false,
            groups: HashMap::new(),
        }
    }

    /// Groups are ready only once their marker is present; without it they
    /// wait until `max_group_wait` and then go as [`Readiness::TimedOut`].
    pub fn marker_required(mut self, required: bool) -> Self {
        self.marker_required = required;
        self
    }

    /// A member of the group appeared or changed at `now`. The first touch
    /// starts the `max_group_wait` clock.
    pub fn touch(&mut self, key_prefix: &str, now: Instant) {
        let g = self.groups.entry(key_prefix.to_owned()).or_default();
        g.touched = Some(match g.touched {
            None => (now, now),
            Some((first, last)) => (first, last.max(now)),
        });
    }

    /// The group's ready marker is present. A group with a marker but no
    /// touched member is never ready: there is nothing to send.
    pub fn marker_seen(&mut self, key_prefix: &str) {
        self.groups.entry(key_prefix.to_owned()).or_default().marker = true;
    }

    /// Whether the group should be sent at `now`, given whether every member
    /// present is settled. A group never touched is [`Readiness::NotYet`].
    pub fn ready(&self, key_prefix: &str, all_members_settled: bool, now: Instant) -> Readiness {
        let Some(g) = self.groups.get(key_prefix) else {
            return Readiness::NotYet;
        };
        let Some((first, last)) = g.touched else {
            return Readiness::NotYet;
        };
        let quiet = !self.marker_required && now.saturating_duration_since(last) >= self.settle;
        let timed_out = now.saturating_duration_since(first) >= self.max_group_wait;
        if self.marker_required && !g.marker {
            return if timed_out {
                Readiness::TimedOut
            } else {
                Readiness::NotYet
            };
        }
        if all_members_settled && (g.marker || quiet || timed_out) {
            Readiness::Ready
        } else if timed_out {
            Readiness::TimedOut
        } else {
            Readiness::NotYet
        }
    }

    /// Forgets a group (sent, or emptied). A later touch starts it afresh,
    /// without its marker.
    pub fn remove(&mut self, key_prefix: &str) {
        self.groups.remove(key_prefix);
    }

    /// The earliest instant after `now` at which some group's answer could
    /// change by time alone (quiet period over, or `max_group_wait` reached).
    /// Instants at or before `now` are left out, so a shell that sleeps until
    /// this deadline never spins on a group that waits for something else
    /// (members settling: that is the settler's deadline).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.groups
            .values()
            .filter_map(|g| g.touched.map(|t| (g.marker, t)))
            .flat_map(|(marker, (first, last))| {
                let quiet = if marker || self.marker_required {
                    None
                } else {
                    last.checked_add(self.settle)
                };
                [quiet, first.checked_add(self.max_group_wait)]
            })
            .flatten()
            .filter(|d| *d > now)
            .min()
    }

    /// The instants at which this group's answer changes by time alone:
    /// the end of its quiet period (when no marker decides) and
    /// `max_group_wait`, whichever comes first, past or not.
    pub fn deadline(&self, key_prefix: &str) -> Option<Instant> {
        let g = self.groups.get(key_prefix)?;
        let (first, last) = g.touched?;
        let quiet = if g.marker || self.marker_required {
            None
        } else {
            last.checked_add(self.settle)
        };
        quiet
            .into_iter()
            .chain(first.checked_add(self.max_group_wait))
            .min()
    }

    pub fn contains(&self, key_prefix: &str) -> bool {
        self.groups.contains_key(key_prefix)
    }

    /// The key prefixes of every group being timed.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Rule;
    use crate::pipeline::settle::tests::watch;
    use proptest::prelude::*;
    use rstest::rstest;
    use serde_json::json;

    fn w(mode: GroupBy, key_prefix: &str) -> Watch {
        let mut w = watch();
        w.group_by = mode;
        w.key_prefix = key_prefix.to_owned();
        w.ready_marker = Some("_READY".to_owned());
        w
    }

    use GroupBy::{Directory as D, File as F, Stem as S};

    fn blob(kp: &str, dir: &str) -> Assignment {
        Assignment {
            key_prefix: kp.to_owned(),
            role: Role::Blob,
            scope: Scope::Group,
            dir: dir.to_owned(),
        }
    }

    const SIDECAR: Role = Role::Sidecar;
    const MARKER: Role = Role::Marker;

    fn dir_wide(role: Role, kp: &str, dir: &str) -> Assignment {
        Assignment {
            key_prefix: kp.to_owned(),
            role,
            scope: Scope::Directory,
            dir: dir.to_owned(),
        }
    }

    fn stem_sidecar(kp: &str, dir: &str) -> Assignment {
        Assignment {
            key_prefix: kp.to_owned(),
            role: Role::Sidecar,
            scope: Scope::Group,
            dir: dir.to_owned(),
        }
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // The create-object-docs layout, `directory` mode.
    #[case(D, "/", "contract-2024/content.pdf", blob("/contract-2024", "contract-2024"))]
    #[case(D, "/", "contract-2024/thumbnail.jpg", blob("/contract-2024", "contract-2024"))]
    #[case(D, "/", "contract-2024/details.json", blob("/contract-2024", "contract-2024"))]
    #[case(D, "/", "contract-2024/_metadata.json", dir_wide(SIDECAR, "/contract-2024", "contract-2024"))]
    #[case(D, "/", "contract-2024/_READY", dir_wide(MARKER, "/contract-2024", "contract-2024"))]
    #[case(D, "/docs", "contract-2024/content.pdf", blob("/docs/contract-2024", "contract-2024"))]
    #[case(D, "/docs", "a/b/c/x.pdf", blob("/docs/a/b/c", "a/b/c"))]
    // Root files are per-file objects in `directory` mode.
    #[case(D, "/", "content.pdf", blob("/content", ""))]
    #[case(D, "/docs", "content.pdf", blob("/docs/content", ""))]
    #[case(D, "/docs", "_metadata.json", dir_wide(SIDECAR, "/docs", ""))]
    #[case(D, "/", "_READY", dir_wide(MARKER, "/", ""))]
    // A key prefix that escaped normalisation still gives well-formed keys.
    #[case(D, "docs/", "c/x.pdf", blob("/docs/c", "c"))]
    #[case(D, "", "x.pdf", blob("/x", ""))]
    #[case(D, "", "_READY", dir_wide(MARKER, "/", ""))]
    // `stem` mode.
    #[case(S, "/", "contract-2024/content.pdf", blob("/contract-2024/content", "contract-2024"))]
    #[case(S, "/", "contract-2024/thumbnail.jpg", blob("/contract-2024/thumbnail", "contract-2024"))]
    #[case(S, "/", "invoice-42.pdf", blob("/invoice-42", ""))]
    #[case(S, "/", "invoice-42.json", blob("/invoice-42", ""))]
    #[case(S, "/", "invoice-42.metadata.json", stem_sidecar("/invoice-42", ""))]
    #[case(S, "/in", "x/invoice-42.metadata.json", stem_sidecar("/in/x/invoice-42", "x"))]
    #[case(S, "/", "c/_metadata.json", dir_wide(SIDECAR, "/c", "c"))]
    #[case(S, "/", "c/_READY", dir_wide(MARKER, "/c", "c"))]
    #[case(S, "/", "a.tar.gz", blob("/a.tar", ""))]
    #[case(S, "/", "README", blob("/README", ""))]
    // Leading-dot names are their own stem: never a `.` key component.
    #[case(S, "/", "..a", blob("/..a", ""))]
    #[case(F, "/", "d/.env.local", blob("/d/.env.local", "d"))]
    // `file` mode.
    #[case(F, "/", "a/b.mp4", blob("/a/b", "a"))]
    #[case(F, "/", "contract-2024/content.pdf", blob("/contract-2024/content", "contract-2024"))]
    #[case(F, "/v", "b.mp4", blob("/v/b", ""))]
    #[case(F, "/", "c/_metadata.json", dir_wide(SIDECAR, "/c", "c"))]
    // `x.metadata.json` is an ordinary blob outside `stem` mode.
    #[case(F, "/", "x.metadata.json", blob("/x.metadata", ""))]
    #[case(D, "/", "d/x.metadata.json", blob("/d", "d"))]
    fn assign_table(
        #[case] mode: GroupBy,
        #[case] key_prefix: &str,
        #[case] rel: &str,
        #[case] want: Assignment,
    ) {
        assert_eq!(assign(&w(mode, key_prefix), rel).unwrap(), want, "{rel}");
    }

    #[rstest]
    #[case("")]
    #[case("/abs.pdf")]
    #[case("a//b.pdf")]
    #[case("a/")]
    #[case("../x.pdf")]
    #[case("a/../b.pdf")]
    #[case("./a.pdf")]
    #[case("a/..")]
    fn assign_rejects_non_plain_paths(#[case] rel: &str) {
        for mode in [GroupBy::Directory, GroupBy::Stem, GroupBy::File] {
            assert!(assign(&w(mode, "/"), rel).is_err(), "{rel} in {mode:?}");
        }
        assert!(sidecar_rels(&w(GroupBy::Stem, "/"), rel).is_err());
        assert!(marker_rel(&w(GroupBy::Stem, "/"), rel).is_err());
    }

    #[test]
    fn group_error_names_the_component() {
        let err = assign(&w(GroupBy::Directory, "/"), "a/../b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "path `a/../b` has an invalid component `..` (empty, `.` or `..`)"
        );
    }

    #[rstest]
    #[case("a.tar.gz", "a.tar")]
    #[case("content.pdf", "content")]
    #[case("README", "README")]
    #[case(".env", ".env")]
    #[case("a.", "a")]
    #[case("..x", "..x")]
    #[case(".env.local", ".env.local")]
    fn stems(#[case] name: &str, #[case] want: &str) {
        assert_eq!(stem_of(name), want);
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case(GroupBy::Directory, "c/content.pdf", &["c/_metadata.json"], Some("c/_READY"))]
    #[case(GroupBy::Stem, "c/inv.pdf", &["c/_metadata.json", "c/inv.metadata.json"], Some("c/_READY"))]
    #[case(GroupBy::Stem, "inv.pdf", &["_metadata.json", "inv.metadata.json"], Some("_READY"))]
    #[case(GroupBy::File, "a/b/x.mp4", &["a/b/_metadata.json"], Some("a/b/_READY"))]
    fn sidecars_and_markers(
        #[case] mode: GroupBy,
        #[case] rel: &str,
        #[case] sidecars: &[&str],
        #[case] marker: Option<&str>,
    ) {
        let w = w(mode, "/");
        assert_eq!(sidecar_rels(&w, rel).unwrap(), sidecars);
        assert_eq!(marker_rel(&w, rel).unwrap().as_deref(), marker);
        let mut no_marker = w.clone();
        no_marker.ready_marker = None;
        assert_eq!(marker_rel(&no_marker, rel).unwrap(), None);
    }

    #[rstest]
    #[case("contract-2024/content.pdf", "/content.pdf")]
    #[case("thumbnail.jpg", "/thumbnail.jpg")]
    fn blob_key_prefixes(#[case] rel: &str, #[case] want: &str) {
        assert_eq!(blob_key_prefix(rel), want);
    }

    #[rstest]
    #[case("content.pdf", "content")]
    #[case("dir/Content Final.PDF", "content_final")]
    #[case("a.tar.gz", "a_tar")]
    #[case("Café-Menü.txt", "caf__men_")]
    #[case("日本.png", "__")]
    #[case("İstanbul.jpg", "i_stanbul")]
    #[case(".env", "_env")]
    #[case("_x_1.json", "_x_1")]
    fn property_from_stem(#[case] rel: &str, #[case] want: &str) {
        assert_eq!(property_for(&watch(), rel), want);
    }

    #[test]
    fn property_is_cut_to_100_chars() {
        let stem = "A".repeat(150);
        let got = property_for(&watch(), &format!("d/{stem}.pdf"));
        assert_eq!(got, "a".repeat(100));
        // Multi-byte characters count as one each.
        let got = sanitize_property(&"é".repeat(150));
        assert_eq!(got, "_".repeat(100));
        assert_eq!(sanitize_property(""), "_");
    }

    fn rule(matches: &str, property: Option<&str>) -> Rule {
        Rule {
            matches: matches.to_owned(),
            property: property.map(str::to_owned),
            blob_type: None,
            mime_type: None,
            delivery: None,
        }
    }

    #[rstest]
    #[case("contract-2024/thumbnail.jpg", "thumbnail")]
    #[case("x.jpg", "thumbnail")]
    #[case("contract-2024/content.pdf", "document")]
    #[case("contract-2024/other.txt", "other")]
    fn property_from_first_matching_rule(#[case] rel: &str, #[case] want: &str) {
        let mut w = watch();
        w.rules = vec![
            // Sets no property: skipped for the property.
            rule("**/*.jpg", None),
            rule("**/*.jpg", Some("thumbnail")),
            rule("*.pdf", Some("document")),
            rule("**/*.pdf", Some("never")),
            rule("[", Some("bad glob matches nothing")),
        ];
        assert_eq!(property_for(&w, rel), want);
    }

    #[test]
    fn property_clash() {
        let ok = vec![
            ("c/content.pdf".to_owned(), "content".to_owned()),
            ("c/thumbnail.jpg".to_owned(), "thumbnail".to_owned()),
        ];
        assert_eq!(check_property_clash(&ok), Ok(()));
        assert_eq!(check_property_clash(&[]), Ok(()));
        let mut clash = ok.clone();
        clash.push(("c/Content.PDF".to_owned(), "content".to_owned()));
        let reason = check_property_clash(&clash).unwrap_err();
        assert!(reason.contains("`c/content.pdf`"), "{reason}");
        assert!(reason.contains("`c/Content.PDF`"), "{reason}");
        assert!(reason.contains("`content`"), "{reason}");
    }

    #[test]
    fn merge_metadata_cases() {
        let stat = json!({"category": "contracts", "year": 2023, "nested": {"a": 1}});
        let stat = stat.as_object().unwrap();
        // No sidecar: the static table.
        assert_eq!(merge_metadata(stat, None, "_metadata.json").unwrap(), *stat);
        // Sidecar keys win; the merge is shallow.
        let got = merge_metadata(
            stat,
            Some(br#"{"year": 2024, "status": "draft", "nested": {"b": 2}}"#),
            "_metadata.json",
        )
        .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"category": "contracts", "year": 2024, "status": "draft", "nested": {"b": 2}})
        );
        // A byte order mark is accepted.
        let got = merge_metadata(&Map::new(), Some(b"\xEF\xBB\xBF{\"a\":1}"), "m").unwrap();
        assert_eq!(Value::Object(got), json!({"a": 1}));
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case(b"[1, 2]", "metadata sidecar `x/_metadata.json` is an array, expected a JSON object")]
    #[case(b"\"s\"", "metadata sidecar `x/_metadata.json` is a string, expected a JSON object")]
    #[case(b"null", "metadata sidecar `x/_metadata.json` is null, expected a JSON object")]
    #[case(b"{\"a\": ", "metadata sidecar `x/_metadata.json` is not valid JSON: EOF while parsing a value at line 1 column 6")]
    #[case(b"", "metadata sidecar `x/_metadata.json` is not valid JSON: EOF while parsing a value at line 1 column 0")]
    fn merge_metadata_errors(#[case] sidecar: &[u8], #[case] want: &str) {
        let got = merge_metadata(&Map::new(), Some(sidecar), "x/_metadata.json").unwrap_err();
        assert_eq!(got, want);
    }

    const SETTLE: Duration = Duration::from_secs(2);
    const MAX_WAIT: Duration = Duration::from_secs(60);

    enum G {
        Touch,
        Marker,
        Ready(bool, Readiness),
        Remove,
        Deadline(Option<u64>),
    }

    #[rstest]
    // Quiet for `settle` with every member settled: ready.
    #[case(&[
        (0, G::Touch),
        (0, G::Deadline(Some(2_000))),
        (1_000, G::Touch),
        (2_500, G::Ready(true, Readiness::NotYet)),
        (2_999, G::Ready(true, Readiness::NotYet)),
        (3_000, G::Ready(true, Readiness::Ready)),
        (3_000, G::Deadline(Some(60_000))),
    ])]
    // Quiet but a member unsettled: not yet.
    #[case(&[
        (0, G::Touch),
        (5_000, G::Ready(false, Readiness::NotYet)),
        (5_000, G::Ready(true, Readiness::Ready)),
    ])]
    // A marker skips the quiet period, but not settling.
    #[case(&[
        (0, G::Touch),
        (100, G::Marker),
        (100, G::Ready(false, Readiness::NotYet)),
        (200, G::Ready(true, Readiness::Ready)),
        (200, G::Deadline(Some(60_000))),
    ])]
    // The marker may come before any member; alone it is nothing to send.
    #[case(&[
        (0, G::Marker),
        (5, G::Ready(true, Readiness::NotYet)),
        (5, G::Deadline(None)),
        (10, G::Touch),
        (20, G::Ready(true, Readiness::Ready)),
    ])]
    // A straggler that never settles: timed out at max_group_wait from the
    // first touch, however often members change.
    #[case(&[
        (0, G::Touch),
        (30_000, G::Touch),
        (59_999, G::Touch),
        (59_999, G::Ready(false, Readiness::NotYet)),
        (60_000, G::Ready(false, Readiness::TimedOut)),
        // Every member settled at the limit: the whole group, as ready.
        (60_000, G::Ready(true, Readiness::Ready)),
        (60_000, G::Deadline(Some(61_999))),
    ])]
    // Removed (sent): unknown groups are not ready; a new touch starts afresh
    // and the old marker is gone.
    #[case(&[
        (0, G::Touch),
        (0, G::Marker),
        (10, G::Remove),
        (10, G::Ready(true, Readiness::NotYet)),
        (10, G::Deadline(None)),
        (20, G::Touch),
        (21, G::Ready(true, Readiness::NotYet)),
        (2_020, G::Ready(true, Readiness::Ready)),
    ])]
    // A touch with an older `now` does not move the quiet period back.
    #[case(&[
        (1_000, G::Touch),
        (500, G::Touch),
        (2_999, G::Ready(true, Readiness::NotYet)),
        (3_000, G::Ready(true, Readiness::Ready)),
    ])]
    fn grouper_timeline(#[case] steps: &[(u64, G)]) {
        play(Grouper::new(SETTLE, MAX_WAIT), steps);
    }

    /// Runs a timeline of steps against one group `/c`, times in ms from t0.
    fn play(mut g: Grouper, steps: &[(u64, G)]) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for (i, (ms, step)) in steps.iter().enumerate() {
            let now = at(*ms);
            match step {
                G::Touch => g.touch("/c", now),
                G::Marker => g.marker_seen("/c"),
                G::Ready(settled, want) => {
                    assert_eq!(g.ready("/c", *settled, now), *want, "step {i}");
                }
                G::Remove => g.remove("/c"),
                G::Deadline(want) => {
                    assert_eq!(g.next_deadline(now), want.map(at), "step {i}");
                }
            }
        }
    }

    // With `ready_marker` configured, quiet is not enough: the group waits for
    // its marker, and without one it times out at max_group_wait.
    #[rstest]
    #[case(&[
        (0, G::Touch),
        (5_000, G::Ready(true, Readiness::NotYet)),
        (5_000, G::Deadline(Some(60_000))),
        (5_001, G::Marker),
        (5_001, G::Ready(false, Readiness::NotYet)),
        (5_001, G::Ready(true, Readiness::Ready)),
    ])]
    #[case(&[
        (0, G::Touch),
        (59_999, G::Ready(true, Readiness::NotYet)),
        (60_000, G::Ready(true, Readiness::TimedOut)),
    ])]
    fn grouper_with_required_marker(#[case] steps: &[(u64, G)]) {
        play(Grouper::new(SETTLE, MAX_WAIT).marker_required(true), steps);
    }

    #[test]
    fn grouper_deadline_is_the_earliest_over_groups() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = Grouper::new(SETTLE, MAX_WAIT);
        g.touch("/a", at(0));
        g.touch("/b", at(500));
        assert_eq!(g.next_deadline(at(0)), Some(at(2_000)));
        assert_eq!(g.next_deadline(at(2_000)), Some(at(2_500)));
        assert_eq!(g.next_deadline(at(2_500)), Some(at(60_000)));
        assert_eq!(g.len(), 2);
        let mut names: Vec<_> = g.groups().collect();
        names.sort();
        assert_eq!(names, ["/a", "/b"]);
        assert!(g.contains("/a") && !g.is_empty());
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_-]{1,8}",
            "[a-z]{1,4}\\.[a-z]{1,3}",
            "[a-z]{0,3}\\.{1,3}[a-z]{0,3}",
            "\\PC{1,6}",
        ]
        .prop_filter("plain component", |c| {
            !c.is_empty() && c != "." && c != ".." && !c.contains('/')
        })
    }

    fn key_prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_owned()),
            proptest::collection::vec("[a-z0-9]{1,5}", 1..3)
                .prop_map(|p| format!("/{}", p.join("/"))),
        ]
    }

    fn mode() -> impl Strategy<Value = GroupBy> {
        prop_oneof![
            Just(GroupBy::Directory),
            Just(GroupBy::Stem),
            Just(GroupBy::File)
        ]
    }

    proptest! {
        /// Every plain relative path lands in exactly one group, and that
        /// group's key prefix obeys the SPEC §4 rules.
        #[test]
        fn every_path_lands_in_one_well_formed_group(
            parts in proptest::collection::vec(component(), 1..5),
            kp in key_prefix(),
            mode in mode(),
        ) {
            let mut w = w(mode, &kp);
            w.ready_marker = Some("_READY".to_owned());
            let rel = parts.join("/");
            let a = assign(&w, &rel).unwrap();
            // Deterministic: the same path always gives the same group.
            prop_assert_eq!(&assign(&w, &rel).unwrap(), &a);
            let k = &a.key_prefix;
            prop_assert!(k.starts_with('/'), "{}", k);
            prop_assert!(k == "/" || !k.ends_with('/'), "{}", k);
            prop_assert!(!k.contains("//"), "{}", k);
            let plain = |c: &str| !c.is_empty() && c != "." && c != "..";
            prop_assert!(k == "/" || k[1..].split('/').all(plain), "{}", k);
            prop_assert!(k.starts_with(&w.key_prefix));
            prop_assert_eq!(a.dir, parts[..parts.len() - 1].join("/"));
            if a.role == Role::Blob {
                // Blobs of a group share a directory.
                let dirs: Vec<&str> = parts[..parts.len() - 1].iter().map(String::as_str).collect();
                let dir_kp = join(&w.key_prefix, &dirs);
                prop_assert!(k.starts_with(&dir_kp));
                // The directory group is a blob's group only in directory mode (outside the root).
                let dir_group = mode == GroupBy::Directory && parts.len() > 1;
                prop_assert_eq!(*k == dir_kp, dir_group);
            }
        }

        /// Two files of one directory share a group exactly when the mode
        /// says so: `directory` outside the root, else the same stem.
        #[test]
        fn siblings_share_a_group_by_the_mode(
            dirs in proptest::collection::vec(component(), 0..3),
            a in component(),
            b in component(),
            mode in mode(),
        ) {
            let w = w(mode, "/k");
            let rel = |name: &str| {
                let mut p: Vec<&str> = dirs.iter().map(String::as_str).collect();
                p.push(name);
                p.join("/")
            };
            let (ga, gb) = (assign(&w, &rel(&a)).unwrap(), assign(&w, &rel(&b)).unwrap());
            prop_assume!(ga.role == Role::Blob && gb.role == Role::Blob);
            let same_stem = stem_of(&a) == stem_of(&b);
            let want = match mode {
                GroupBy::Directory => !dirs.is_empty() || same_stem,
                GroupBy::Stem | GroupBy::File => same_stem,
            };
            prop_assert_eq!(ga.key_prefix == gb.key_prefix, want);
        }

        #[test]
        fn sanitised_property_is_always_valid(stem in "\\PC{0,200}") {
            let p = sanitize_property(&stem);
            prop_assert!(!p.is_empty() && p.chars().count() <= MAX_PROPERTY_CHARS);
            let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            prop_assert!(p.chars().all(allowed), "{}", p);
        }

        #[test]
        fn property_for_any_path_is_valid(parts in proptest::collection::vec(component(), 1..4)) {
            let p = property_for(&watch(), &parts.join("/"));
            prop_assert!((1..=MAX_PROPERTY_CHARS).contains(&p.len()));
            let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
            prop_assert!(p.bytes().all(allowed), "{}", p);
        }
    }
}
