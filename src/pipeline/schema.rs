//! Bucket schema check (`check --online`, and warnings at `run` start): the
//! blob properties and types a watch can send, compared with the bucket's
//! `bucket_schema` (SPEC §5, §9).
//!
//! Inputs:
//! - [`Expectation`]s: a property, the blob types it may be sent as, and where
//!   that comes from. [`rule_expectations`] derives them from the watch's
//!   `[[watch.rule]]`s that name a property; [`file_expectation`] from a file
//!   present in the watch as `classify` sees it. The shell reads the files
//!   (scan, first bytes); [`Sampler`] decides which files are worth reading.
//! - The dialect in use, for the words shown (`objects` sends `object` for the
//!   neutral `json`).
//! - The bucket's `bucket_schema` JSON (`GET /v1/buckets/{bucket}`,
//!   `BucketSchema`: `{"properties": {NAME: {"type": BucketSchemaFieldType}}}`).
//!
//! Output: one [`Mismatch`] per property that the schema lacks or declares
//! with a type the watch does not send, with a one-line fix; or
//! [`SchemaMissing`] once when there is no schema to compare with.
//!
//! Decisions where SPEC is silent:
//! - A `bucket_schema` with an empty `properties` map is treated like no
//!   schema: Mixpeek (and the emulator) then accept any property, so listing
//!   every property as missing would be noise, not a finding.
//! - Types compare case-insensitively, and a `json` blob fits a field declared
//!   `object` (the schema vocabulary has no `json`; the `objects-create` docs
//!   page sends `json` for what `BucketSchemaFieldType` calls `object`). This
//!   is the emulator's rule too.
//! - A rule that names a property without a `type` gets its type from its
//!   `mime_type`, else from the extension(s) its glob ends with (`*.jpg`,
//!   `*.{jpg,png}`) through the watch's type table and `default_type`; when
//!   neither tells, the type is open and only the property's presence is
//!   checked. Rules are looked at one by one: a type set by a different rule
//!   on the same files is seen through the files present, not ahead of time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use globset::GlobSet;
use serde_json::Value;

use crate::config::Watch;
use crate::pipeline::Dialect;
use crate::pipeline::classify::{Classified, TypeTable};
use crate::pipeline::settle::glob_set;

/// How many sources a mismatch names before it says "and N more".
const SOURCES_SHOWN: usize = 3;
/// How many of the schema's properties a "missing" fix lists.
const SCHEMA_PROPERTIES_SHOWN: usize = 10;

/// Where an expected property comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A `[[watch.rule]]` that names the property; its `match` glob.
    Rule { glob: String },
    /// A file in the watch now, relative to the watch root.
    File { rel: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Rule { glob } => write!(f, "rule `{glob}`"),
            Source::File { rel } => write!(f, "file `{rel}`"),
        }
    }
}

/// One property a watch can send, and the blob types it can send it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub property: String,
    /// Lower-case, in the neutral vocabulary (`json`, not `object`). Empty:
    /// the type cannot be known ahead (a rule on an open glob); only the
    /// property's presence is checked.
    pub types: BTreeSet<String>,
    pub source: Source,
}

/// The expectations of the watch's rules that name a property (module docs
/// say how their type is found).
pub fn rule_expectations(watch: &Watch) -> Vec<Expectation> {
    let table = TypeTable::new(&watch.types);
    let default_type = watch.default_type.as_ref().map(|t| t.to_lowercase());
    let type_of_mime = |mime: &str| {
        table
            .lookup(mime)
            .map(str::to_owned)
            .or_else(|| default_type.clone())
    };
    watch
        .rules
        .iter()
        .filter_map(|rule| {
            let property = rule.property.clone()?;
            let types = if let Some(t) = &rule.blob_type {
                BTreeSet::from([t.to_lowercase()])
            } else if let Some(mime) = &rule.mime_type {
                type_of_mime(mime).into_iter().collect()
            } else {
                glob_extensions(&rule.matches)
                    .and_then(|exts| {
                        exts.iter()
                            .map(|ext| mime_guess::from_ext(ext).first_raw().and_then(type_of_mime))
                            .collect::<Option<BTreeSet<String>>>()
                    })
                    .unwrap_or_default()
            };
            Some(Expectation {
                property,
                types,
                source: Source::Rule {
                    glob: rule.matches.clone(),
                },
            })
        })
        .collect()
}

/// The expectation of one file present in the watch, as classified.
pub fn file_expectation(rel: &str, classified: &Classified) -> Expectation {
    Expectation {
        property: classified.property.clone(),
        types: BTreeSet::from([classified.blob_type.clone()]),
        source: Source::File {
            rel: rel.to_owned(),
        },
    }
}

/// The literal extensions a glob's last component ends with: `**/*.jpg` →
/// `[jpg]`, `*.{jpg,jpeg}` → `[jpg, jpeg]`. `None` when the glob does not fix
/// one (`scans/*`, `*.j?g`, `*.[jp]*`).
fn glob_extensions(glob: &str) -> Option<Vec<String>> {
    let name = glob.rsplit('/').next().unwrap_or(glob);
    let literal = |ext: &str| {
        !ext.is_empty()
            && ext
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
    };
    let exts: Vec<String> = if let Some(inner) = name
        .strip_suffix('}')
        .and_then(|rest| rest.rsplit_once(".{"))
        .map(|(_, inner)| inner)
    {
        inner.split(',').map(str::to_ascii_lowercase).collect()
    } else {
        let (_, ext) = name.rsplit_once('.')?;
        vec![ext.to_ascii_lowercase()]
    };
    exts.iter().all(|e| literal(e)).then_some(exts)
}

/// Which files present in a watch are worth reading for the check.
///
/// Files that share a property, an extension and the set of rules matching
/// them classify alike unless magic bytes disagree with the name, so one of
/// each kind is read. At most `limit` files are read, so a tree of a million
/// files costs a bounded number of opens.
#[derive(Debug)]
pub struct Sampler {
    rule_globs: GlobSet,
    limit: usize,
    seen: HashSet<(String, String, Vec<usize>)>,
    taken: usize,
    passed_over: usize,
}

/// What [`Sampler::offer`] says about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Read it and classify it.
    Take,
    /// One like it was taken already.
    Alike,
    /// The limit is reached.
    OverLimit,
}

impl Sampler {
    pub fn new(watch: &Watch, limit: usize) -> Result<Sampler, globset::Error> {
        let patterns: Vec<String> = watch.rules.iter().map(|r| r.matches.clone()).collect();
        Ok(Sampler {
            rule_globs: glob_set(&patterns)?,
            limit,
            seen: HashSet::new(),
            taken: 0,
            passed_over: 0,
        })
    }

    /// Offers the file `rel` whose property would be `property`.
    pub fn offer(&mut self, rel: &str, property: &str) -> Sample {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let ext = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
            _ => String::new(),
        };
        let key = (property.to_owned(), ext, self.rule_globs.matches(rel));
        if self.seen.contains(&key) {
            return Sample::Alike;
        }
        if self.taken >= self.limit {
            self.passed_over += 1;
            return Sample::OverLimit;
        }
        self.seen.insert(key);
        self.taken += 1;
        Sample::Take
    }

    /// Files not read because the limit was reached (not counting alike ones).
    pub fn passed_over(&self) -> usize {
        self.passed_over
    }
}

/// Why there is nothing to compare with; said once per bucket, not per
/// property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaMissing {
    #[error(
        "the bucket has no bucket_schema, so blob properties and types cannot be checked \
         (Mixpeek needs one to map blobs into collections)"
    )]
    NoSchema,
    #[error(
        "the bucket_schema defines no properties, so blob properties and types cannot be checked \
         (Mixpeek needs them to map blobs into collections)"
    )]
    NoProperties,
}

/// The `bucket_schema` of a bucket GET answer (`BucketResponse`); `None`
/// when absent or `null`.
pub fn bucket_schema(body: &Value) -> Option<&Value> {
    body.get("bucket_schema").filter(|s| !s.is_null())
}

/// What the schema holds for a property the watch sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    Missing,
    /// The declared type as written (`""` when the field has none).
    Type(String),
}

/// One property the schema lacks or declares with another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub property: String,
    /// The types the watch would send that the schema does not take, in the
    /// dialect's words. Empty for a missing property whose type is open.
    pub sent: Vec<String>,
    pub declared: Declared,
    /// Where the offending expectations come from, rules first.
    pub sources: Vec<Source>,
    /// One sentence an operator can act on.
    pub fix: String,
}

impl fmt::Display for Mismatch {
    /// `property `p` <problem> (<sources>); fix: <fix>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sent = quoted_list(&self.sent, "and");
        match &self.declared {
            Declared::Missing if sent.is_empty() => write!(
                f,
                "property `{}` is not in the bucket schema; the watch sends it",
                self.property
            )?,
            Declared::Missing => write!(
                f,
                "property `{}` is not in the bucket schema; the watch sends it as {sent}",
                self.property
            )?,
            Declared::Type(declared) => write!(
                f,
                "property `{}` is {} in the bucket schema, but the watch sends it as {sent}",
                self.property,
                declared_words(declared)
            )?,
        }
        write!(f, " ({}); fix: {}", sources_text(&self.sources), self.fix)
    }
}

/// `Source`s as "rule `a`, file `b` and 3 more".
fn sources_text(sources: &[Source]) -> String {
    let shown: Vec<String> = sources
        .iter()
        .take(SOURCES_SHOWN)
        .map(ToString::to_string)
        .collect();
    let mut text = shown.join(", ");
    if sources.len() > SOURCES_SHOWN {
        text.push_str(&format!(" and {} more", sources.len() - SOURCES_SHOWN));
    }
    text
}

/// "`a`", "`a` and `b`", "`a`, `b` or `c`".
fn quoted_list(items: &[impl AsRef<str>], conjunction: &str) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{}`", i.as_ref())).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
    }
}

fn declared_words(declared: &str) -> String {
    if declared.is_empty() {
        "declared without a type".to_owned()
    } else {
        format!("`{declared}`")
    }
}

/// The word the dialect sends for a neutral blob type (as `request::render`
/// does).
fn wire_type(neutral: &str, dialect: Dialect) -> &str {
    match (dialect, neutral) {
        (Dialect::Objects, "json") => "object",
        (_, t) => t,
    }
}

/// Whether a blob of neutral type `blob` may fill a field declared `declared`.
fn type_fits(blob: &str, declared: &str) -> bool {
    let declared = declared.to_ascii_lowercase();
    declared == blob || (blob == "json" && declared == "object")
}

/// Compares what a watch can send with the bucket's `bucket_schema`
/// (`None` or `null` when the bucket has none). Mismatches come sorted by
/// property, one per property.
pub fn compare(
    expected: &[Expectation],
    dialect: Dialect,
    schema: Option<&Value>,
) -> Result<Vec<Mismatch>, SchemaMissing> {
    let schema = schema.filter(|s| !s.is_null());
    let fields = schema
        .ok_or(SchemaMissing::NoSchema)?
        .get("properties")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty())
        .ok_or(SchemaMissing::NoProperties)?;
    let mut by_property: BTreeMap<&str, Vec<&Expectation>> = BTreeMap::new();
    for e in expected {
        by_property.entry(&e.property).or_default().push(e);
    }
    let schema_names: Vec<&str> = fields.keys().map(String::as_str).collect();
    let mut mismatches = Vec::new();
    for (property, expectations) in by_property {
        let (declared, offending): (Declared, Vec<&Expectation>) = match fields.get(property) {
            None => (Declared::Missing, expectations),
            Some(field) => {
                let declared = field
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let offending: Vec<&Expectation> = expectations
                    .into_iter()
                    .filter(|e| e.types.iter().any(|t| !type_fits(t, &declared)))
                    .collect();
                if offending.is_empty() {
                    continue;
                }
                (Declared::Type(declared), offending)
            }
        };
        let sent: BTreeSet<&str> = offending
            .iter()
            .flat_map(|e| &e.types)
            .filter(|t| match &declared {
                Declared::Missing => true,
                Declared::Type(d) => !type_fits(t, d),
            })
            .map(|t| wire_type(t, dialect))
            .collect();
        let sent: Vec<String> = sent.into_iter().map(str::to_owned).collect();
        let mut sources: Vec<Source> = offending.iter().map(|e| e.source.clone()).collect();
        sources.sort();
        sources.dedup();
        let fix = fix_for(property, &sent, &declared, &sources, &schema_names);
        mismatches.push(Mismatch {
            property: property.to_owned(),
            sent,
            declared,
            sources,
            fix,
        });
    }
    Ok(mismatches)
}

/// The one-line fix of a mismatch.
fn fix_for(
    property: &str,
    sent: &[String],
    declared: &Declared,
    sources: &[Source],
    schema_names: &[&str],
) -> String {
    let rules: Vec<&str> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Rule { glob } => Some(glob.as_str()),
            Source::File { .. } => None,
        })
        .collect();
    let only_rules = rules.len() == sources.len();
    let rename = if only_rules {
        "change `property` in the rule".to_owned()
    } else {
        "set `property = \"...\"` in a [[watch.rule]] matching these files".to_owned()
    };
    match declared {
        Declared::Missing => {
            let mut names: Vec<String> = schema_names
                .iter()
                .take(SCHEMA_PROPERTIES_SHOWN)
                .map(|n| (*n).to_owned())
                .collect();
            if schema_names.len() > SCHEMA_PROPERTIES_SHOWN {
                names.push("…".to_owned());
            }
            let existing = format!("to one the schema has ({})", names.join(", "));
            match sent {
                [] => format!(
                    "add property `{property}` to the bucket schema with the type of the files {} \
                     matches, or {rename} {existing}",
                    quoted_list(&rules, "or")
                ),
                [one] => format!(
                    "add property `{property}` of type `{one}` to the bucket schema, or {rename} {existing}"
                ),
                _ => "a property has one type: give these files one type with `type = \"...\"` \
                      or different properties with `property = \"...\"` in a [[watch.rule]], \
                      then add it to the bucket schema"
                    .to_owned(),
            }
        }
        Declared::Type(declared) => {
            let retype = match sent {
                [one] => format!("change the type of `{property}` in the bucket schema to `{one}`"),
                _ => format!(
                    "give these files one type with `type = \"...\"` in a [[watch.rule]] and \
                     the same type to `{property}` in the bucket schema"
                ),
            };
            if only_rules && !declared.is_empty() {
                format!("{retype}, or set `type = \"{declared}\"` in the rule, or {rename}")
            } else {
                format!("{retype}, or {rename}")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Rule;
    use crate::pipeline::settle::tests::watch;
    use rstest::rstest;
    use serde_json::json;

    fn rule(matches: &str, property: &str) -> Rule {
        Rule {
            matches: matches.to_owned(),
            property: Some(property.to_owned()),
            blob_type: None,
            mime_type: None,
            delivery: None,
        }
    }

    fn types(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    fn file(rel: &str, property: &str, blob_type: &str) -> Expectation {
        Expectation {
            property: property.to_owned(),
            types: types(&[blob_type]),
            source: Source::File {
                rel: rel.to_owned(),
            },
        }
    }

    fn from_rule(glob: &str, property: &str, list: &[&str]) -> Expectation {
        Expectation {
            property: property.to_owned(),
            types: types(list),
            source: Source::Rule {
                glob: glob.to_owned(),
            },
        }
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case("**/*.jpg", Some(vec!["jpg"]))]
    #[case("*.PDF", Some(vec!["pdf"]))]
    #[case("thumbs/*.{jpg,PNG}", Some(vec!["jpg", "png"]))]
    #[case("a.b/*.tar.gz", Some(vec!["gz"]))]
    #[case("scans/*", None)]
    #[case("**/*.j?g", None)]
    #[case("*.[jp]*", None)]
    #[case("*.{jpg,}", None)]
    #[case("noext", None)]
    fn extensions_of_globs(#[case] glob: &str, #[case] want: Option<Vec<&str>>) {
        let want = want.map(|w| w.into_iter().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(glob_extensions(glob), want, "{glob}");
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // The rule's own type wins, lower-cased.
    #[case(Rule { blob_type: Some("Video".into()), ..rule("**/*.gif", "clip") }, &["video"])]
    // A forced MIME goes through the type table.
    #[case(Rule { mime_type: Some("text/csv".into()), ..rule("exports/*.dat", "sheet") }, &["excel"])]
    // The glob's extension goes through the type table.
    #[case(rule("**/*.jpg", "thumbnail"), &["image"])]
    #[case(rule("**/*.json", "details"), &["json"])]
    #[case(rule("**/*.{jpg,mp4}", "media"), &["image", "video"])]
    // Open globs and extensions the table does not cover: any type.
    #[case(rule("scans/*", "scan"), &[])]
    #[case(rule("**/*.bin", "raw"), &[])]
    #[case(rule("**/*.{jpg,bin}", "raw"), &[])]
    fn rule_types(#[case] r: Rule, #[case] want: &[&str]) {
        let mut w = watch();
        let glob = r.matches.clone();
        let property = r.property.clone().unwrap();
        w.rules = vec![r];
        assert_eq!(
            rule_expectations(&w),
            vec![from_rule(&glob, &property, want)]
        );
    }

    #[test]
    fn rule_types_follow_the_watch_table_and_default_type() {
        let mut w = watch();
        w.types.insert("image/*".into(), "video".into());
        w.default_type = Some("Text".into());
        w.rules = vec![
            rule("**/*.jpg", "a"),
            rule("**/*.bin", "b"),
            Rule {
                property: None,
                blob_type: Some("pdf".into()),
                ..rule("**/*.pdf", "unused")
            },
        ];
        assert_eq!(
            rule_expectations(&w),
            vec![
                from_rule("**/*.jpg", "a", &["video"]),
                from_rule("**/*.bin", "b", &["text"]),
            ]
        );
    }

    #[test]
    fn file_expectation_takes_property_and_type() {
        let c = Classified {
            mime: "image/jpeg".into(),
            blob_type: "image".into(),
            property: "thumbnail".into(),
            delivery: None,
        };
        assert_eq!(
            file_expectation("a/thumbnail.jpg", &c),
            file("a/thumbnail.jpg", "thumbnail", "image")
        );
    }

    fn schema(fields: &[(&str, &str)]) -> Value {
        let properties: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(n, t)| ((*n).to_owned(), json!({ "type": t })))
            .collect();
        json!({ "properties": properties })
    }

    /// (property, sent, declared) of each mismatch.
    fn summary(m: &[Mismatch]) -> Vec<(String, Vec<String>, Declared)> {
        m.iter()
            .map(|m| (m.property.clone(), m.sent.clone(), m.declared.clone()))
            .collect()
    }

    fn missing(p: &str, sent: &[&str]) -> (String, Vec<String>, Declared) {
        (
            p.to_owned(),
            sent.iter().map(|s| (*s).to_owned()).collect(),
            Declared::Missing,
        )
    }

    fn other(p: &str, sent: &[&str], declared: &str) -> (String, Vec<String>, Declared) {
        (
            p.to_owned(),
            sent.iter().map(|s| (*s).to_owned()).collect(),
            Declared::Type(declared.to_owned()),
        )
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // Everything present with its type: nothing to say.
    #[case(vec![file("a/content.pdf", "content", "pdf"), file("a/thumbnail.jpg", "thumbnail", "image")], Dialect::Objects, vec![])]
    // Case does not matter in the schema.
    #[case(vec![file("a/content.pdf", "content", "pdf")], Dialect::Objects, vec![])]
    // A property the schema lacks.
    #[case(vec![file("a/content.pdf", "content", "pdf"), file("a/notes.txt", "notes", "text")], Dialect::Objects, vec![missing("notes", &["text"])])]
    // A type that differs.
    #[case(vec![file("a/thumbnail.png", "thumbnail", "video")], Dialect::Objects, vec![other("thumbnail", &["video"], "image")])]
    // JSON fits `object` in both dialects, shown in the dialect's word.
    #[case(vec![file("a/details.json", "details", "json")], Dialect::Objects, vec![])]
    #[case(vec![file("a/details.json", "details", "json")], Dialect::ObjectsCreate, vec![])]
    #[case(vec![file("a/content.json", "content", "json")], Dialect::Objects, vec![other("content", &["object"], "PDF")])]
    #[case(vec![file("a/content.json", "content", "json")], Dialect::ObjectsCreate, vec![other("content", &["json"], "PDF")])]
    // A rule whose type is open only needs the property to exist.
    #[case(vec![from_rule("scans/*", "content", &[])], Dialect::Objects, vec![])]
    #[case(vec![from_rule("scans/*", "scan", &[])], Dialect::Objects, vec![missing("scan", &[])])]
    // One line per property, with only the types that do not fit.
    #[case(vec![file("a/content.pdf", "content", "pdf"), file("b/content.txt", "content", "text"), from_rule("**/*.mp4", "content", &["video"])], Dialect::Objects, vec![other("content", &["text", "video"], "PDF")])]
    #[case(vec![file("a/x.jpg", "x", "image"), file("b/x.jpg", "x", "image"), file("c/x.mp4", "x", "video")], Dialect::Objects, vec![missing("x", &["image", "video"])])]
    fn comparison(#[case] expected: Vec<Expectation>, #[case] dialect: Dialect, #[case] want: Vec<(String, Vec<String>, Declared)>) {
        let bucket = schema(&[("content", "PDF"), ("thumbnail", "image"), ("details", "object")]);
        let got = compare(&expected, dialect, Some(&bucket)).unwrap();
        assert_eq!(summary(&got), want);
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case(json!({"bucket_name": "b"}), SchemaMissing::NoSchema)]
    #[case(json!({"bucket_name": "b", "bucket_schema": null}), SchemaMissing::NoSchema)]
    #[case(json!({"bucket_schema": {}}), SchemaMissing::NoProperties)]
    #[case(json!({"bucket_schema": {"properties": {}}}), SchemaMissing::NoProperties)]
    #[case(json!({"bucket_schema": {"properties": ["content"]}}), SchemaMissing::NoProperties)]
    fn no_schema_is_said_once(#[case] body: Value, #[case] want: SchemaMissing) {
        let expected = vec![file("a/content.pdf", "content", "pdf"), file("a/x.jpg", "x", "image")];
        assert_eq!(compare(&expected, Dialect::Objects, bucket_schema(&body)), Err(want));
    }

    #[test]
    fn a_field_without_a_type_is_a_mismatch() {
        let bucket = json!({"properties": {"content": {"description": "no type"}}});
        let got = compare(
            &[file("a/content.pdf", "content", "pdf")],
            Dialect::Objects,
            Some(&bucket),
        )
        .unwrap();
        assert_eq!(summary(&got), vec![other("content", &["pdf"], "")]);
        assert!(got[0].to_string().contains("declared without a type"));
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // Missing, one type: add it, or rename to an existing property.
    #[case(vec![file("a/thumbnail.jpg", "thumbnail", "image")],
        "property `thumbnail` is not in the bucket schema; the watch sends it as `image` (file `a/thumbnail.jpg`); \
         fix: add property `thumbnail` of type `image` to the bucket schema, or set `property = \"...\"` in a [[watch.rule]] \
         matching these files to one the schema has (content, details)")]
    // Missing from a rule with an open type.
    #[case(vec![from_rule("scans/*", "scan", &[])],
        "property `scan` is not in the bucket schema; the watch sends it (rule `scans/*`); \
         fix: add property `scan` to the bucket schema with the type of the files `scans/*` matches, \
         or change `property` in the rule to one the schema has (content, details)")]
    // Missing with two types: one type first.
    #[case(vec![file("a/x.jpg", "x", "image"), file("c/x.mp4", "x", "video")],
        "property `x` is not in the bucket schema; the watch sends it as `image` and `video` (file `a/x.jpg`, file `c/x.mp4`); \
         fix: a property has one type: give these files one type with `type = \"...\"` or different properties with \
         `property = \"...\"` in a [[watch.rule]], then add it to the bucket schema")]
    // Another type, from files.
    #[case(vec![file("a/content.txt", "content", "text")],
        "property `content` is `pdf` in the bucket schema, but the watch sends it as `text` (file `a/content.txt`); \
         fix: change the type of `content` in the bucket schema to `text`, or set `property = \"...\"` in a [[watch.rule]] matching these files")]
    // Another type, from a rule that sets it.
    #[case(vec![from_rule("**/*.gif", "content", &["video"])],
        "property `content` is `pdf` in the bucket schema, but the watch sends it as `video` (rule `**/*.gif`); \
         fix: change the type of `content` in the bucket schema to `video`, or set `type = \"pdf\"` in the rule, or change `property` in the rule")]
    fn mismatch_lines(#[case] expected: Vec<Expectation>, #[case] want: &str) {
        let bucket = schema(&[("content", "pdf"), ("details", "object")]);
        let got = compare(&expected, Dialect::Objects, Some(&bucket)).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].to_string(), want);
    }

    #[test]
    fn many_sources_are_counted_not_listed() {
        let expected: Vec<Expectation> = (0..5)
            .map(|i| file(&format!("d{i}/notes.txt"), "notes", "text"))
            .collect();
        let got = compare(
            &expected,
            Dialect::Objects,
            Some(&schema(&[("content", "pdf")])),
        )
        .unwrap();
        let line = got[0].to_string();
        assert!(
            line.contains(
                "(file `d0/notes.txt`, file `d1/notes.txt`, file `d2/notes.txt` and 2 more)"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_long_schema_is_cut_in_the_fix() {
        let names: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
        let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "text")).collect();
        let got = compare(
            &[file("a.txt", "a", "text")],
            Dialect::Objects,
            Some(&schema(&fields)),
        )
        .unwrap();
        assert!(
            got[0]
                .fix
                .contains("(p00, p01, p02, p03, p04, p05, p06, p07, p08, p09, …)"),
            "{}",
            got[0].fix
        );
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // One file per property and extension, wherever it lies.
    #[case(10, &[("a/content.pdf", "content"), ("b/content.pdf", "content"), ("b/content.PDF", "content"), ("b/content.txt", "content")], &[Sample::Take, Sample::Alike, Sample::Alike, Sample::Take])]
    // Rules match whole paths: files other rules match are another kind.
    #[case(10, &[("a/thumb.jpg", "thumb"), ("b/thumb.jpg", "thumb"), ("anim/thumb.jpg", "thumb"), ("anim/x/thumb.jpg", "thumb")], &[Sample::Take, Sample::Alike, Sample::Take, Sample::Alike])]
    // A name without an extension, and a dot file, have none.
    #[case(10, &[("a/README", "readme"), ("b/README", "readme"), (".env", "_env")], &[Sample::Take, Sample::Alike, Sample::Take])]
    // The limit bounds the reads; alike files are still recognised.
    #[case(2, &[("a.pdf", "a"), ("b.pdf", "b"), ("c.pdf", "c"), ("x/a.pdf", "a")], &[Sample::Take, Sample::Take, Sample::OverLimit, Sample::Alike])]
    fn sampling(#[case] limit: usize, #[case] files: &[(&str, &str)], #[case] want: &[Sample]) {
        let mut w = watch();
        w.rules = vec![rule("**/*.jpg", "thumbnail"), rule("anim/**", "clip")];
        let mut sampler = Sampler::new(&w, limit).unwrap();
        let got: Vec<Sample> = files.iter().map(|(rel, p)| sampler.offer(rel, p)).collect();
        assert_eq!(got, want);
        let over = want.iter().filter(|s| **s == Sample::OverLimit).count();
        assert_eq!(sampler.passed_over(), over);
    }
}
