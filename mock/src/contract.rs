//! The request contract: the project's own JSON Schemas (draft 2020-12) of
//! every request body the daemon sends, and the check the emulator runs them
//! through.
//!
//! Role: one place that says what a well-formed request body is, for the
//! emulator (every create, batch, upload and confirm body goes through
//! [`Contract::check`] before anything else looks at it), for tests of the
//! daemon's request builders, and for the comparison with Mixpeek's published
//! openapi.json (`mock/tests/contract.rs`).
//!
//! Inputs: a parsed request body. Outputs: nothing, or every [`Violation`] with
//! the JSON pointer it is at, phrased the way Mixpeek's FastAPI service phrases
//! field errors (pydantic's error type and message), so the emulator can answer
//! them in FastAPI's `detail` shape as they are.
//!
//! The schemas live in `mock/contract/*.schema.json`, are embedded at build
//! time and parsed and compiled once. Each names the openapi component it
//! mirrors in `x-openapi` (`null` for the docs-page dialect, which openapi does
//! not describe). `x-error: {"type", "msg"}` on a schema node gives the
//! pydantic error for its combinator keywords (`oneOf`, `anyOf`, `not`), whose
//! generic wording would say nothing useful.
//!
//! Invariants: validation never fetches anything (the schemas refer to each
//! other by `$id`, all registered up front); a message never quotes the body's
//! values (a blob may hold megabytes of base64); at most one violation per
//! pointer (the first pydantic would report: missing, enum, type, length,
//! pattern, bounds); a combinator violation (a model-level rule) is dropped
//! when a field below it is already in error, as pydantic runs a model's
//! validators only once its fields parsed.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::{Value, json};

/// Where the schemas' `$id`s live. `.invalid` (RFC 2606) can never resolve: the
/// ids only name the schemas so that they can refer to each other.
const BASE_URI: &str = "https://mixpeek-ingest.invalid/contract/";

/// One request body the daemon sends (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// `POST /v1/buckets/{bucket}/objects/create`, from Mixpeek's "Create
    /// Object" docs page (no openapi counterpart).
    ObjectsCreate,
    /// `POST /v1/buckets/{bucket}/objects`: openapi `CreateObjectRequest`.
    CreateObject,
    /// `POST /v1/buckets/{bucket}/objects/batch`: `CreateObjectsBatchRequest`.
    CreateObjectsBatch,
    /// `POST /v1/buckets/{bucket}/uploads`: `CreateUploadRequest`.
    CreateUpload,
    /// `POST /v1/buckets/{bucket}/uploads/{upload_id}/confirm`:
    /// `ConfirmUploadRequest`.
    ConfirmUpload,
}

/// One way a body breaks its contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// JSON pointer (RFC 6901) into the body: the offending value, or for a
    /// missing field the place it should be (`/blobs/0/property`). `""` is the
    /// whole body.
    pub pointer: String,
    /// The pointer's segments as FastAPI writes a `loc` after `"body"`:
    /// strings for object keys, numbers for array indices.
    pub path: Vec<Value>,
    /// pydantic's error type: `missing`, `enum`, `string_type`,
    /// `string_too_long`, `string_pattern_mismatch`, `too_long`,
    /// `greater_than_equal`, `value_error`, ...
    pub kind: String,
    /// pydantic's message, e.g. `String should have at most 100 characters`.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "(body)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {} ({})", self.message, self.kind)
    }
}

impl Contract {
    pub const ALL: [Contract; 5] = [
        Contract::ObjectsCreate,
        Contract::CreateObject,
        Contract::CreateObjectsBatch,
        Contract::CreateUpload,
        Contract::ConfirmUpload,
    ];

    /// The schema's file name under `mock/contract/`, also the last segment of
    /// its `$id`.
    pub fn file_name(self) -> &'static str {
        match self {
            Contract::ObjectsCreate => "objects-create.schema.json",
            Contract::CreateObject => "create-object.schema.json",
            Contract::CreateObjectsBatch => "create-objects-batch.schema.json",
            Contract::CreateUpload => "create-upload.schema.json",
            Contract::ConfirmUpload => "confirm-upload.schema.json",
        }
    }

    /// The schema's `$id`.
    pub fn id(self) -> String {
        format!("{BASE_URI}{}", self.file_name())
    }

    /// The contract whose schema has `$id` (or file name) `id`.
    pub fn from_id(id: &str) -> Option<Contract> {
        let name = id.strip_prefix(BASE_URI).unwrap_or(id);
        Contract::ALL.into_iter().find(|c| c.file_name() == name)
    }

    fn index(self) -> usize {
        match self {
            Contract::ObjectsCreate => 0,
            Contract::CreateObject => 1,
            Contract::CreateObjectsBatch => 2,
            Contract::CreateUpload => 3,
            Contract::ConfirmUpload => 4,
        }
    }

    /// The parsed schema.
    pub fn schema(self) -> &'static Value {
        &SCHEMAS[self.index()]
    }

    /// The openapi.json reference the schema mirrors (its `x-openapi`, e.g.
    /// `#/components/schemas/CreateObjectRequest`); `None` for
    /// [`Contract::ObjectsCreate`].
    pub fn openapi_ref(self) -> Option<&'static str> {
        self.schema().get("x-openapi").and_then(Value::as_str)
    }

    /// Checks `body` against the contract: `Err` holds every violation, in
    /// the order the schema meets them (see the module doc for how they are
    /// trimmed to what pydantic would report).
    pub fn check(self, body: &Value) -> Result<(), Vec<Violation>> {
        let validator = &VALIDATORS[self.index()];
        let raw: Vec<Raw> = validator
            .iter_errors(body)
            .map(|error| Raw::from_error(&error, body))
            .collect();
        let violations = trim(raw);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

/// The embedded schemas, in [`Contract::index`] order.
static SCHEMAS: LazyLock<[Value; 5]> = LazyLock::new(|| {
    let parse = |text: &str, name: &str| -> Value {
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("mock/contract/{name} is not valid JSON: {e}"))
    };
    [
        parse(
            include_str!("../contract/objects-create.schema.json"),
            "objects-create.schema.json",
        ),
        parse(
            include_str!("../contract/create-object.schema.json"),
            "create-object.schema.json",
        ),
        parse(
            include_str!("../contract/create-objects-batch.schema.json"),
            "create-objects-batch.schema.json",
        ),
        parse(
            include_str!("../contract/create-upload.schema.json"),
            "create-upload.schema.json",
        ),
        parse(
            include_str!("../contract/confirm-upload.schema.json"),
            "confirm-upload.schema.json",
        ),
    ]
});

/// One compiled validator per schema, each able to follow `$ref`s into the
/// others. A schema that does not compile is a defect of the embedded files,
/// caught by this module's tests: panicking on first use says which.
static VALIDATORS: LazyLock<Vec<Validator>> = LazyLock::new(|| {
    let registry = jsonschema::Registry::new()
        .extend(Contract::ALL.into_iter().map(|c| (c.id(), c.schema())))
        .and_then(jsonschema::RegistryBuilder::prepare)
        .unwrap_or_else(|e| panic!("the contract schemas do not register: {e}"));
    Contract::ALL
        .into_iter()
        .map(|c| {
            jsonschema::options()
                .with_registry(&registry)
                .build(c.schema())
                .unwrap_or_else(|e| panic!("mock/contract/{} does not compile: {e}", c.file_name()))
        })
        .collect()
});

/// A violation before trimming.
struct Raw {
    violation: Violation,
    /// Lower wins among violations at one pointer.
    rank: u8,
    /// A combinator (model-level rule) rather than a field constraint.
    rule: bool,
}

/// Rank of the combinator keywords: after every field constraint.
const RULE_RANK: u8 = 9;

impl Raw {
    fn from_error(error: &ValidationError<'_>, body: &Value) -> Raw {
        let mut pointer = error.instance_path().as_str().to_string();
        let node = keyword_parent(error);
        let (rank, kind, message): (u8, &str, String) = match error.kind() {
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                pointer = format!("{pointer}/{}", escape(name));
                (0, "missing", "Field required".into())
            }
            ValidationErrorKind::Enum { options } => (
                1,
                "enum",
                format!("Input should be {}", quoted_choice(options)),
            ),
            ValidationErrorKind::Constant { expected_value } => (
                1,
                "literal_error",
                format!("Input should be {}", quoted_choice(expected_value)),
            ),
            ValidationErrorKind::Type { kind } => {
                let model = node.is_some_and(|n| n.get("properties").is_some());
                let (kind, message) = type_error(kind, model);
                (2, kind, message.into())
            }
            ValidationErrorKind::MinLength { limit } => (
                3,
                "string_too_short",
                format!(
                    "String should have at least {limit} character{}",
                    plural(*limit)
                ),
            ),
            ValidationErrorKind::MaxLength { limit } => (
                4,
                "string_too_long",
                format!(
                    "String should have at most {limit} character{}",
                    plural(*limit)
                ),
            ),
            ValidationErrorKind::Pattern { pattern } => (
                5,
                "string_pattern_mismatch",
                format!("String should match pattern '{pattern}'"),
            ),
            ValidationErrorKind::Minimum { limit } => (
                6,
                "greater_than_equal",
                format!("Input should be greater than or equal to {limit}"),
            ),
            ValidationErrorKind::Maximum { limit } => (
                7,
                "less_than_equal",
                format!("Input should be less than or equal to {limit}"),
            ),
            ValidationErrorKind::MaxItems { limit } => {
                let len = error.instance().as_array().map_or(0, Vec::len);
                (
                    8,
                    "too_long",
                    format!(
                        "List should have at most {limit} item{} after validation, not {len}",
                        plural(*limit)
                    ),
                )
            }
            ValidationErrorKind::MinItems { limit } => {
                let len = error.instance().as_array().map_or(0, Vec::len);
                (
                    8,
                    "too_short",
                    format!(
                        "List should have at least {limit} item{} after validation, not {len}",
                        plural(*limit)
                    ),
                )
            }
            _ => {
                let custom = node.and_then(|n| n.get("x-error"));
                let kind = custom
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("value_error");
                let message = custom
                    .and_then(|e| e.get("msg"))
                    .and_then(Value::as_str)
                    .map_or_else(
                        || format!("Value error, {}", error.masked_with("the value")),
                        str::to_string,
                    );
                let violation = Violation {
                    path: path_of(&pointer, body),
                    pointer,
                    kind: kind.to_string(),
                    message,
                };
                return Raw {
                    violation,
                    rank: RULE_RANK,
                    rule: true,
                };
            }
        };
        Raw {
            violation: Violation {
                path: path_of(&pointer, body),
                pointer,
                kind: kind.to_string(),
                message,
            },
            rank,
            rule: false,
        }
    }
}

/// Keeps the first-ranked violation per pointer, and drops a rule violation
/// when a field below it is in error; otherwise keeps arrival order.
fn trim(raw: Vec<Raw>) -> Vec<Violation> {
    let beneath = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    let mut kept: Vec<Raw> = Vec::with_capacity(raw.len());
    for candidate in raw {
        if let Some(existing) = kept
            .iter_mut()
            .find(|k| k.violation.pointer == candidate.violation.pointer)
        {
            if candidate.rank < existing.rank {
                *existing = candidate;
            }
        } else {
            kept.push(candidate);
        }
    }
    let field_pointers: Vec<String> = kept
        .iter()
        .filter(|k| !k.rule)
        .map(|k| k.violation.pointer.clone())
        .collect();
    kept.into_iter()
        .filter(|k| {
            !k.rule
                || !field_pointers
                    .iter()
                    .any(|p| beneath(&k.violation.pointer, p))
        })
        .map(|k| k.violation)
        .collect()
}

/// The schema node holding the keyword that failed (e.g. the blob schema for
/// its `oneOf`), found from the error's absolute keyword location.
fn keyword_parent(error: &ValidationError<'_>) -> Option<&'static Value> {
    let location = error.absolute_keyword_location()?;
    let text = location.as_str();
    let (document, fragment) = text.split_once('#').unwrap_or((text, ""));
    let schema = Contract::from_id(document)?.schema();
    let fragment = percent_decode(fragment);
    let parent = fragment.rsplit_once('/').map_or("", |(parent, _)| parent);
    schema.pointer(parent)
}

/// Decodes `%XX` escapes (URI fragments escape `$` in `$defs` and the like).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// pydantic's type error for the first non-null type a `type` keyword wanted.
fn type_error(kind: &TypeKind, model: bool) -> (&'static str, &'static str) {
    let wanted = match kind {
        TypeKind::Single(t) => Some(*t),
        TypeKind::Multiple(set) => set.iter().find(|t| *t != JsonType::Null),
    };
    match wanted {
        Some(JsonType::String) => ("string_type", "Input should be a valid string"),
        Some(JsonType::Boolean) => ("bool_type", "Input should be a valid boolean"),
        Some(JsonType::Integer) => ("int_type", "Input should be a valid integer"),
        Some(JsonType::Number) => ("float_type", "Input should be a valid number"),
        Some(JsonType::Array) => ("list_type", "Input should be a valid list"),
        Some(JsonType::Object) if model => (
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        ),
        Some(JsonType::Object) => ("dict_type", "Input should be a valid dictionary"),
        Some(JsonType::Null) | None => ("none_required", "Input should be None"),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// pydantic's wording for a choice: `'a', 'b' or 'c'` (non-strings as JSON).
pub(crate) fn quoted_choice(options: &Value) -> String {
    let quoted: Vec<String> = match options {
        Value::Array(items) => items.iter().map(quote).collect(),
        single => vec![quote(single)],
    };
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((only, _)) => only.clone(),
        None => String::new(),
    }
}

fn quote(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

/// RFC 6901 escaping of one pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The pointer's segments, numbers where the body has an array.
fn path_of(pointer: &str, body: &Value) -> Vec<Value> {
    let mut path = Vec::new();
    let mut at = Some(body);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => match segment.parse::<usize>() {
                Ok(index) => {
                    at = items.get(index);
                    path.push(json!(index));
                }
                Err(_) => {
                    at = None;
                    path.push(json!(segment));
                }
            },
            Some(Value::Object(map)) => {
                at = map.get(&segment);
                path.push(json!(segment));
            }
            _ => {
                at = None;
                path.push(json!(segment));
            }
        }
    }
    path
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn violations(contract: Contract, body: &Value) -> Vec<(String, String)> {
        match contract.check(body) {
            Ok(()) => Vec::new(),
            Err(v) => v.into_iter().map(|v| (v.pointer, v.kind)).collect(),
        }
    }

    #[test]
    fn every_schema_parses_compiles_and_names_itself() {
        for contract in Contract::ALL {
            let schema = contract.schema();
            assert_eq!(schema["$id"], json!(contract.id()), "{contract:?}");
            assert_eq!(
                schema["$schema"],
                json!("https://json-schema.org/draft/2020-12/schema")
            );
            assert!(schema.get("x-openapi").is_some(), "{contract:?}");
            assert_eq!(
                contract.openapi_ref().is_none(),
                contract == Contract::ObjectsCreate
            );
            assert_eq!(Contract::from_id(&contract.id()), Some(contract));
            // Compiles (a panic here names the file).
            let _ = contract.check(&json!({}));
        }
    }

    #[test]
    fn docs_page_types_are_the_field_types_and_json() {
        let field_types = Contract::CreateObject.schema()["$defs"]["field_type"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        let mut expected = field_types;
        expected.push(json!("json"));
        assert_eq!(
            Contract::ObjectsCreate.schema()["$defs"]["blob_type"]["enum"],
            Value::Array(expected)
        );
        for contract in [Contract::ObjectsCreate, Contract::CreateObject] {
            assert_eq!(
                contract.schema()["$defs"]["file_type"]["enum"],
                json!(["text", "image", "audio", "video", "pdf", "excel"])
            );
        }
    }

    #[rstest]
    #[case::missing(json!({"blobs": [{"type": "pdf", "data": "x"}]}), "/blobs/0/property", "missing")]
    #[case::upper_case(json!({"blobs": [{"property": "c", "type": "PDF", "data": "x"}]}), "/blobs/0/type", "enum")]
    #[case::number_type(json!({"blobs": [{"property": "c", "type": 3, "data": "x"}]}), "/blobs/0/type", "enum")]
    #[case::too_long(json!({"blobs": [{"property": "p".repeat(101), "type": "pdf", "data": "x"}]}), "/blobs/0/property", "string_too_long")]
    #[case::pattern(json!({"blobs": [{"property": "c", "type": "pdf", "upload_id": "up_1"}]}), "/blobs/0/upload_id", "string_pattern_mismatch")]
    #[case::both(json!({"blobs": [{"property": "c", "type": "pdf", "data": "x", "upload_id": "upl_1"}]}), "/blobs/0", "value_error")]
    #[case::not_object(json!([1]), "", "model_attributes_type")]
    #[case::blob_not_object(json!({"blobs": [1]}), "/blobs/0", "model_attributes_type")]
    #[case::metadata_list(json!({"blobs": [{"property": "c", "type": "pdf", "data": "x", "metadata": [1]}]}), "/blobs/0/metadata", "dict_type")]
    #[case::bad_base64(json!({"blobs": [{"property": "c", "type": "pdf", "data": {"base64": "a b"}}]}), "/blobs/0/data", "value_error")]
    #[case::file_as_number(json!({"blobs": [{"property": "c", "type": "image", "data": 5}]}), "/blobs/0/data", "value_error")]
    fn one_violation_per_field(#[case] body: Value, #[case] pointer: &str, #[case] kind: &str) {
        assert_eq!(
            violations(Contract::CreateObject, &body),
            vec![(pointer.to_string(), kind.to_string())]
        );
    }

    #[test]
    fn a_rule_waits_for_the_fields_below_it() {
        // A bad upload id next to data: only the field error, as pydantic
        // skips the model validator when a field failed.
        let body =
            json!({"blobs": [{"property": "c", "type": "pdf", "data": "x", "upload_id": "bad"}]});
        assert_eq!(
            violations(Contract::CreateObject, &body),
            vec![(
                "/blobs/0/upload_id".to_string(),
                "string_pattern_mismatch".to_string()
            )]
        );
    }

    #[test]
    fn messages_follow_pydantic() {
        let body = json!({"blobs": [
            {"property": "", "type": "PDF", "data": "x"},
            {"property": "c", "type": "pdf"},
        ]});
        let found = Contract::CreateObject.check(&body).unwrap_err();
        let messages: Vec<(&str, &str)> = found
            .iter()
            .map(|v| (v.pointer.as_str(), v.message.as_str()))
            .collect();
        assert!(messages.contains(&(
            "/blobs/0/property",
            "String should have at least 1 character"
        )));
        assert!(messages.contains(&(
            "/blobs/1",
            "Value error, exactly one of 'data' or 'upload_id' must be provided"
        )));
        let type_message = messages
            .iter()
            .find(|(p, _)| *p == "/blobs/0/type")
            .unwrap()
            .1;
        assert!(type_message.starts_with("Input should be 'string', 'number', "));
        assert!(type_message.ends_with("'pdf' or 'excel'"));
        assert_eq!(
            found[0].path,
            vec![json!("blobs"), json!(0), json!("property")]
        );
    }

    #[test]
    fn batch_items_follow_create_object_across_files() {
        let body = json!({"objects": [
            {"blobs": [{"property": "c", "type": "pdf", "data": "x"}]},
            {"blobs": [{"property": "c", "type": "PDF", "data": "x"}]},
        ]});
        let found = Contract::CreateObjectsBatch.check(&body).unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pointer, "/objects/1/blobs/0/type");
        assert_eq!(
            found[0].path,
            vec![
                json!("objects"),
                json!(1),
                json!("blobs"),
                json!(0),
                json!("type")
            ]
        );
    }

    #[test]
    fn docs_page_data_must_not_be_null() {
        let body = json!({"blobs": [{"property": "c", "type": "pdf", "data": null}]});
        let found = Contract::ObjectsCreate.check(&body).unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (
                found[0].pointer.as_str(),
                found[0].kind.as_str(),
                found[0].message.as_str()
            ),
            ("/blobs/0/data", "missing", "Field required")
        );
    }

    #[rstest]
    #[case::short_hash(json!({"file_hash": "abc"}), "string_too_short", "String should have at least 64 characters")]
    #[case::expiry(json!({"presigned_url_expiration": 59}), "greater_than_equal", "Input should be greater than or equal to 60")]
    #[case::size(json!({"file_size_bytes": "5"}), "int_type", "Input should be a valid integer")]
    fn upload_messages(#[case] extra: Value, #[case] kind: &str, #[case] message: &str) {
        let mut body = json!({"filename": "a.mp4", "content_type": "video/mp4"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let found = Contract::CreateUpload.check(&body).unwrap_err();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].kind.as_str(), found[0].message.as_str()),
            (kind, message)
        );
    }

    #[test]
    fn messages_never_quote_the_body() {
        let secret = "s3cr3t-payload";
        let body = json!({"blobs": [{"property": "c", "type": "image", "data": {"base64": format!("{secret}!")}}]});
        for v in Contract::CreateObject.check(&body).unwrap_err() {
            assert!(!v.message.contains(secret), "{v}");
        }
    }

    #[test]
    fn too_many_batch_objects() {
        let objects: Vec<Value> = (0..101).map(|_| json!({})).collect();
        let found = Contract::CreateObjectsBatch
            .check(&json!({ "objects": objects }))
            .unwrap_err();
        assert_eq!(found[0].pointer, "/objects");
        assert_eq!(
            found[0].message,
            "List should have at most 100 items after validation, not 101"
        );
    }

    #[rstest]
    #[case("/a~1b/0", json!({"a/b": [1]}), vec![json!("a/b"), json!(0)])]
    #[case("/0", json!({"0": 1}), vec![json!("0")])]
    #[case("", json!({}), vec![])]
    fn paths(#[case] pointer: &str, #[case] body: Value, #[case] expected: Vec<Value>) {
        assert_eq!(path_of(pointer, &body), expected);
    }

    #[rstest]
    #[case("%24defs/blob", "$defs/blob")]
    #[case("a%2", "a%2")]
    #[case("plain", "plain")]
    fn percent_decoding(#[case] raw: &str, #[case] decoded: &str) {
        assert_eq!(percent_decode(raw), decoded);
    }

    #[test]
    fn quoted_choice_wording() {
        assert_eq!(quoted_choice(&json!(["a"])), "'a'");
        assert_eq!(quoted_choice(&json!(["a", "b", "c"])), "'a', 'b' or 'c'");
        assert_eq!(quoted_choice(&json!(1)), "1");
    }
}
