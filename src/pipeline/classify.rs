//! Classify: a file's MIME type, blob type and property (SPEC §5).
//!
//! Inputs: the file's path relative to the watch root, its first bytes (the
//! shell passes up to 8 KiB), and the watch's rules, type table and
//! `default_type`.
//!
//! Output: [`Classified`], or a dead-letter reason naming the file, its MIME
//! type and the setting that would fix it.
//!
//! Invariants: blob types are lower-case; a `[[watch.rule]]` decides before
//! anything sniffed; each rule field (`mime_type`, `type`, `property`,
//! `delivery`) comes from the first rule in config order that matches the file
//! *and* sets that field, so a broad rule can set the delivery while a narrower
//! one earlier names the property.
//!
//! MIME sniffing ([`sniff_mime`]): magic bytes first, the extension second,
//! `application/octet-stream` last, with two corrections found in `infer`'s
//! matchers. Text has no magic, and `infer` matches two- or three-byte ASCII
//! signatures (`BM` is a bitmap, `MZ` an executable, `ID3` an MP3) and loose
//! HTML/XML prefixes, so a CSV starting `BM,…` would be an image. When the
//! head is text (valid UTF-8 without binary control bytes), a textual
//! extension (`.csv`, `.json`, `.txt`, …) wins, and of `infer`'s binary
//! matches only the all-ASCII formats (PDF, PostScript, RTF) are believed.
//! And `infer` reports container formats (`application/zip`, OLE storage) when
//! the document signature lies beyond the head, so a more specific extension
//! (`.xlsx`, `.xls`, `.docx`) wins over those. A text head with no usable
//! extension is `text/plain`.

use std::collections::BTreeMap;

use globset::GlobSet;

use crate::config::{DeliveryMode, Rule, Watch};
use crate::pipeline::group::{sanitize_property, stem_of};
use crate::pipeline::settle::glob_set;

const OCTET_STREAM: &str = "application/octet-stream";

/// The SPEC §5 table: MIME pattern → blob type. `watch.types` adds rows or
/// replaces rows with the same pattern; the most specific matching row wins
/// (exact MIME over `type/*` over `*/*`).
pub const DEFAULT_TYPES: &[(&str, &str)] = &[
    ("image/*", "image"),
    ("video/*", "video"),
    ("audio/*", "audio"),
    ("application/pdf", "pdf"),
    ("application/json", "json"),
    ("text/*", "text"),
    ("application/xml", "text"),
    ("text/csv", "excel"),
    ("application/vnd.ms-excel", "excel"),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "excel",
    ),
];

/// `infer` results that are believed even when the head looks like text.
const ASCII_MAGIC: &[&str] = &[
    "application/pdf",
    "application/postscript",
    "application/rtf",
];

/// `infer` results that name a container rather than the document in it.
const CONTAINER_MAGIC: &[&str] = &["application/zip", "application/x-ole-storage", OCTET_STREAM];

/// The lower-case essence of a MIME type (`Text/CSV; charset=utf-8` →
/// `text/csv`).
fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a MIME type is a text format, for which magic bytes say nothing.
fn is_textual(mime: &str) -> bool {
    let m = essence(mime);
    m.starts_with("text/")
        || m.ends_with("+json")
        || m.ends_with("+xml")
        || matches!(
            m.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-yaml"
                | "application/yaml"
                | "application/toml"
                | "application/x-sh"
                | "application/sql"
        )
}

/// Text in the WHATWG sense: no byte that never occurs in text, and valid
/// UTF-8 except possibly a character cut at the end of the head.
fn looks_like_text(head: &[u8]) -> bool {
    let binary = |b: &u8| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F);
    if head.iter().any(binary) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// The MIME type of a file from its first bytes and its name (module docs
/// describe the order).
pub fn sniff_mime(head: &[u8], file_name: &str) -> String {
    let text = looks_like_text(head);
    let by_ext = mime_guess::from_path(file_name).first_raw();
    if let Some(magic) = infer::get(head) {
        let m = magic.mime_type();
        let believed = if text {
            ASCII_MAGIC.contains(&m)
                || (magic.matcher_type() == infer::MatcherType::Text
                    && !by_ext.is_some_and(is_textual))
        } else {
            !(CONTAINER_MAGIC.contains(&m) && by_ext.is_some_and(|e| e != m))
        };
        if believed {
            return m.to_owned();
        }
    }
    if let Some(e) = by_ext {
        return e.to_owned();
    }
    if text && !head.is_empty() {
        return "text/plain".to_owned();
    }
    OCTET_STREAM.to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Pattern {
    Any,
    Family(String),
    Exact(String),
}

impl Pattern {
    fn parse(s: &str) -> Pattern {
        let s = essence(s);
        match s.split_once('/') {
            _ if s == "*" || s == "*/*" => Pattern::Any,
            Some((family, "*")) => Pattern::Family(family.to_owned()),
            _ => Pattern::Exact(s),
        }
    }

    /// Higher is more specific; `None` when the pattern does not match.
    fn specificity(&self, mime: &str) -> Option<u8> {
        match self {
            Pattern::Exact(m) => (m == mime).then_some(2),
            Pattern::Family(f) => mime
                .split_once('/')
                .is_some_and(|(family, _)| family == f)
                .then_some(1),
            Pattern::Any => Some(0),
        }
    }
}

/// The MIME → blob type table of one watch: the defaults with the watch's
/// `types` laid over them.
#[derive(Debug, Clone)]
pub struct TypeTable {
    rows: BTreeMap<Pattern, String>,
}

impl TypeTable {
    pub fn new(overrides: &BTreeMap<String, String>) -> Self {
        let mut rows: BTreeMap<Pattern, String> = DEFAULT_TYPES
            .iter()
            .map(|(p, t)| (Pattern::parse(p), (*t).to_owned()))
            .collect();
        for (p, t) in overrides {
            rows.insert(Pattern::parse(p), t.to_lowercase());
        }
        TypeTable { rows }
    }

    /// The blob type of the most specific row matching `mime`.
    pub fn lookup(&self, mime: &str) -> Option<&str> {
        let mime = essence(mime);
        self.rows
            .iter()
            .filter_map(|(p, t)| p.specificity(&mime).map(|s| (s, t)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, t)| t.as_str())
    }
}

/// The blob type for `mime` under `watch.types` and the defaults; `None` when
/// no row covers it (`default_type` is the caller's next step). For table
/// tests; the shell keeps a [`TypeTable`] per watch.
#[cfg(test)]
pub fn blob_type_for(watch: &Watch, mime: &str) -> Option<String> {
    TypeTable::new(&watch.types).lookup(mime).map(str::to_owned)
}

/// What classification decided for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Lower-case MIME essence.
    pub mime: String,
    /// Lower-case blob type in the neutral vocabulary (`json`, not `object`).
    pub blob_type: String,
    pub property: String,
    /// The delivery mode a matching rule asks for (`request::choose_delivery`
    /// falls back to the watch's).
    pub delivery: Option<DeliveryMode>,
}

/// One watch's `[[watch.rule]]` globs, type table and `default_type`,
/// compiled once and applied per file.
#[derive(Debug, Clone)]
pub struct Classifier {
    rule_globs: GlobSet,
    rules: Vec<Rule>,
    table: TypeTable,
    default_type: Option<String>,
}

impl Classifier {
    pub fn new(watch: &Watch) -> Result<Self, globset::Error> {
        let patterns: Vec<String> = watch.rules.iter().map(|r| r.matches.clone()).collect();
        Ok(Classifier {
            rule_globs: glob_set(&patterns)?,
            rules: watch.rules.clone(),
            table: TypeTable::new(&watch.types),
            default_type: watch.default_type.as_ref().map(|t| t.to_lowercase()),
        })
    }

    /// The first matching rule (config order) that sets the field `pick` reads.
    fn rule_field<T>(&self, matching: &[usize], pick: impl Fn(&Rule) -> Option<T>) -> Option<T> {
        matching
            .iter()
            .filter_map(|&i| self.rules.get(i))
            .find_map(pick)
    }

    /// The delivery mode the first matching rule that sets one asks for.
    pub fn rule_delivery(&self, rel: &str) -> Option<DeliveryMode> {
        let matching = self.rule_globs.matches(rel);
        self.rule_field(&matching, |r| r.delivery)
    }

    /// The blob property of `rel`: a rule's, else the sanitised stem.
    pub fn property(&self, rel: &str) -> String {
        let matching = self.rule_globs.matches(rel);
        self.property_from(&matching, rel)
    }

    fn property_from(&self, matching: &[usize], rel: &str) -> String {
        self.rule_field(matching, |r| r.property.clone())
            .unwrap_or_else(|| sanitize_property(stem_of(file_name(rel))))
    }

    /// Classifies `rel` given its first bytes.
    pub fn classify(&self, rel: &str, head: &[u8]) -> Result<Classified, String> {
        let matching = self.rule_globs.matches(rel);
        let name = file_name(rel);
        let mime = match self.rule_field(&matching, |r| r.mime_type.clone()) {
            Some(forced) => essence(&forced),
            None => essence(&sniff_mime(head, name)),
        };
        let blob_type = self
            .rule_field(&matching, |r| {
                r.blob_type.as_ref().map(|t| t.to_lowercase())
            })
            .or_else(|| self.table.lookup(&mime).map(str::to_owned))
            .or_else(|| self.default_type.clone())
            .ok_or_else(|| {
                format!(
                    "`{rel}`: MIME type `{mime}` has no blob type in the type table; \
                     set `default_type` on the watch, map `{mime}` in `types`, \
                     or add a [[watch.rule]] with `type` matching this file"
                )
            })?;
        Ok(Classified {
            property: self.property_from(&matching, rel),
            delivery: self.rule_field(&matching, |r| r.delivery),
            mime,
            blob_type,
        })
    }
}

/// Convenience over [`Classifier`] for table tests; compiles the rule globs
/// on every call.
#[cfg(test)]
pub fn classify(watch: &Watch, rel: &str, head: &[u8]) -> Result<Classified, String> {
    Classifier::new(watch)
        .map_err(|e| format!("`{rel}`: invalid [[watch.rule]] glob: {e}"))?
        .classify(rel, head)
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pipeline::settle::tests::watch;
    use proptest::prelude::*;
    use rstest::rstest;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    const PDF_ASCII: &[u8] = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    const ZIP: &[u8] = b"PK\x03\x04\x14\0\0\0\x08\0\0\0!\0abcdefgh\x05\0\0\0data/x";
    const GIF: &[u8] = b"GIF89a\x01\0\x01\0\x80\0\0\xff\xff\xff\0\0\0!";

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // Magic beats a wrong or missing extension.
    #[case(PNG, "photo.png", "image/png")]
    #[case(PNG, "photo.jpg", "image/png")]
    #[case(PNG, "photo.txt", "image/png")]
    #[case(PNG, "photo", "image/png")]
    #[case(JPEG, "scan.pdf", "image/jpeg")]
    #[case(JPEG, "scan.csv", "image/jpeg")]
    #[case(PDF, "contract.jpg", "application/pdf")]
    #[case(PDF, "contract.txt", "application/pdf")]
    #[case(PDF_ASCII, "contract", "application/pdf")]
    #[case(PDF_ASCII, "contract.bin", "application/pdf")]
    #[case(GIF, "anim.gif", "image/gif")]
    // Text has no magic: the extension decides.
    #[case(b"{\"title\": \"Service Agreement\"}", "content.json", "application/json")]
    #[case(b"[1,2,3]", "list.json", "application/json")]
    #[case(b"name,year\nBMW,2024\n", "cars.csv", "text/csv")]
    #[case(b"a\tb\n", "t.tsv", "text/tab-separated-values")]
    #[case(b"hello\n", "notes.txt", "text/plain")]
    #[case(b"# Title\n", "README.md", "text/markdown")]
    // ASCII look-alikes of binary signatures in a text file do not win.
    #[case(b"BM,2024,blue\n", "colors.csv", "text/csv")]
    #[case(b"MZ is a code\n", "notes.txt", "text/plain")]
    #[case(b"ID3 tags list\n", "notes.txt", "text/plain")]
    #[case(b"BMW 320d\n", "notes", "text/plain")]
    // HTML/XML-looking text keeps a textual extension, else is HTML/XML.
    #[case(b"<p class=x>hi</p>,1\n", "rows.csv", "text/csv")]
    #[case(b"<?xml version=\"1.0\"?><a/>", "feed.txt", "text/plain")]
    #[case(b"<?xml version=\"1.0\"?><svg/>", "logo.svg", "image/svg+xml")]
    #[case(b"<html lang=en><body></body></html>", "page", "text/html")]
    #[case(b"<?xml version=\"1.0\"?><a/>", "data", "text/xml")]
    // A zip whose document part lies beyond the head: the extension names it.
    #[case(ZIP, "book.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")]
    #[case(ZIP, "archive.zip", "application/zip")]
    #[case(ZIP, "noext", "application/zip")]
    // Nothing known.
    #[case(b"\0\x01\x02\x03binary", "blob.unknownext", "application/octet-stream")]
    #[case(b"\0\x01\x02\x03binary", "blob", "application/octet-stream")]
    #[case(b"", "empty", "application/octet-stream")]
    #[case(b"", "empty.txt", "text/plain")]
    // A multi-byte character cut at the end of the head is still text.
    #[case(b"caf\xC3", "menu", "text/plain")]
    #[case(b"caf\xC3(", "menu", "application/octet-stream")]
    fn sniff(#[case] head: &[u8], #[case] name: &str, #[case] want: &str) {
        assert_eq!(sniff_mime(head, name), want, "{name}");
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case("image/png", Some("image"))]
    #[case("image/svg+xml", Some("image"))]
    #[case("video/mp4", Some("video"))]
    #[case("audio/mpeg", Some("audio"))]
    #[case("application/pdf", Some("pdf"))]
    #[case("application/json", Some("json"))]
    #[case("text/plain", Some("text"))]
    #[case("text/html", Some("text"))]
    #[case("application/xml", Some("text"))]
    // The most specific row wins: csv is excel, not text.
    #[case("text/csv", Some("excel"))]
    #[case("Text/CSV; charset=utf-8", Some("excel"))]
    #[case("application/vnd.ms-excel", Some("excel"))]
    #[case("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Some("excel"))]
    #[case("text/tab-separated-values", Some("text"))]
    #[case("application/zip", None)]
    #[case("application/octet-stream", None)]
    fn default_type_table(#[case] mime: &str, #[case] want: Option<&str>) {
        assert_eq!(blob_type_for(&watch(), mime).as_deref(), want, "{mime}");
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // An override replaces the row with the same pattern…
    #[case(&[("text/*", "Document")], "text/plain", Some("document"))]
    // …but a more specific default row still wins over it.
    #[case(&[("text/*", "document")], "text/csv", Some("excel"))]
    #[case(&[("text/csv", "text")], "text/csv", Some("text"))]
    #[case(&[("image/gif", "video")], "image/gif", Some("video"))]
    #[case(&[("image/gif", "video")], "image/png", Some("image"))]
    #[case(&[("application/*", "pdf")], "application/zip", Some("pdf"))]
    #[case(&[("application/*", "pdf")], "application/json", Some("json"))]
    #[case(&[("*/*", "text")], "application/zip", Some("text"))]
    #[case(&[("*/*", "text")], "image/png", Some("image"))]
    fn overridden_type_table(
        #[case] overrides: &[(&str, &str)],
        #[case] mime: &str,
        #[case] want: Option<&str>,
    ) {
        let mut w = watch();
        w.types = overrides
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        assert_eq!(blob_type_for(&w, mime).as_deref(), want, "{mime}");
    }

    fn rule(matches: &str) -> Rule {
        Rule {
            matches: matches.to_owned(),
            property: None,
            blob_type: None,
            mime_type: None,
            delivery: None,
        }
    }

    fn classified(mime: &str, blob_type: &str, property: &str) -> Classified {
        Classified {
            mime: mime.to_owned(),
            blob_type: blob_type.to_owned(),
            property: property.to_owned(),
            delivery: None,
        }
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // The create-object-docs layout, no rules.
    #[case("contract-2024/content.pdf", PDF, classified("application/pdf", "pdf", "content"))]
    #[case("contract-2024/thumbnail.jpg", JPEG, classified("image/jpeg", "image", "thumbnail"))]
    #[case("contract-2024/details.json", b"{\"num_pages\": 5}", classified("application/json", "json", "details"))]
    #[case("Sales Q1.CSV", b"a,b\n", classified("text/csv", "excel", "sales_q1"))]
    fn classify_without_rules(#[case] rel: &str, #[case] head: &[u8], #[case] want: Classified) {
        assert_eq!(classify(&watch(), rel, head).unwrap(), want);
    }

    #[test]
    fn unknown_mime_without_default_type_names_file_mime_and_fix() {
        let reason = classify(&watch(), "dir/data.bin", b"\0\x01\x02").unwrap_err();
        assert!(reason.contains("`dir/data.bin`"), "{reason}");
        assert!(reason.contains("`application/octet-stream`"), "{reason}");
        assert!(reason.contains("default_type"), "{reason}");
        assert!(reason.contains("[[watch.rule]]"), "{reason}");
        let mut w = watch();
        w.default_type = Some("Text".to_owned());
        let got = classify(&w, "dir/data.bin", b"\0\x01\x02").unwrap();
        assert_eq!(got, classified("application/octet-stream", "text", "data"));
    }

    #[test]
    fn rules_apply_field_by_field_in_config_order() {
        let mut w = watch();
        w.rules = vec![
            Rule {
                property: Some("thumbnail".to_owned()),
                ..rule("**/*.jpg")
            },
            Rule {
                blob_type: Some("VIDEO".to_owned()),
                property: Some("shadowed".to_owned()),
                ..rule("anim/*.gif")
            },
            Rule {
                mime_type: Some("Application/X-Custom".to_owned()),
                blob_type: Some("pdf".to_owned()),
                delivery: Some(DeliveryMode::Url),
                ..rule("**/*")
            },
        ];
        let c = Classifier::new(&w).unwrap();
        // The first rule names the property, the catch-all sets the rest.
        assert_eq!(
            c.classify("contract-2024/thumbnail.jpg", JPEG).unwrap(),
            Classified {
                mime: "application/x-custom".to_owned(),
                blob_type: "pdf".to_owned(),
                property: "thumbnail".to_owned(),
                delivery: Some(DeliveryMode::Url),
            }
        );
        // An earlier rule's type wins over a later one's; its property too.
        let got = c.classify("anim/cat.gif", GIF).unwrap();
        assert_eq!(
            (got.blob_type.as_str(), got.property.as_str()),
            ("video", "shadowed")
        );
        assert_eq!(c.property("x/other.txt"), "other");
        assert_eq!(c.rule_delivery("x/other.txt"), Some(DeliveryMode::Url));
        assert_eq!(c.property("a/b.jpg"), "thumbnail");
    }

    #[test]
    fn forced_mime_goes_through_the_table() {
        let mut w = watch();
        w.rules = vec![Rule {
            mime_type: Some("text/csv".to_owned()),
            ..rule("exports/*.dat")
        }];
        let got = classify(&w, "exports/q1.dat", b"\0\x01").unwrap();
        assert_eq!(got, classified("text/csv", "excel", "q1"));
        // Outside the rule's glob the sniffed type stands (and has no type).
        assert!(classify(&w, "q1.dat", b"\0\x01").is_err());
    }

    #[test]
    fn bad_rule_glob_is_an_error() {
        let mut w = watch();
        w.rules = vec![rule("[")];
        assert!(Classifier::new(&w).is_err());
        assert!(
            classify(&w, "a.txt", b"x")
                .unwrap_err()
                .contains("invalid [[watch.rule]] glob")
        );
    }

    proptest! {
        /// Any head and name give a well-formed MIME essence, and a covered
        /// type is lower-case.
        #[test]
        fn sniff_is_total(head in proptest::collection::vec(any::<u8>(), 0..64), name in "\\PC{0,12}") {
            let mime = sniff_mime(&head, &name);
            let (family, sub) = mime.split_once('/').unwrap();
            prop_assert!(!family.is_empty() && !sub.is_empty(), "{}", mime);
            if let Some(t) = blob_type_for(&watch(), &mime) {
                prop_assert_eq!(t.to_lowercase(), t);
            }
        }
    }
}
