//! Validation of create-object request bodies, for both dialects, single and batch.
//!
//! Role: decide whether a JSON body is an object (or a batch of objects,
//! [`validate_batch`]) the emulated API would accept, the way Mixpeek's FastAPI
//! service does, without doing any I/O.
//!
//! Inputs: the dialect, the parsed body, the bucket name and its `bucket_schema`.
//! Outputs: a [`ValidObject`] (the parts of the body a success answer echoes), or a
//! [`Rejection`] in one of the two shapes real clients meet:
//! - [`Rejection::Shape`]: field-level errors, answered as FastAPI's
//!   `{"detail": [{"loc", "msg", "type", "ctx": {"pointer"}}]}` (every problem
//!   of the body at once, as pydantic reports them);
//! - [`Rejection::Schema`]: a semantic refusal (the blob does not fit the bucket
//!   schema), answered in Mixpeek's `{"success": false, "error": {...}}` envelope.
//!
//! The shape is decided by the request contract alone ([`crate::contract`]:
//! `objects-create`, `CreateObjectRequest`, `CreateObjectsBatchRequest`), so
//! the emulator and the contract cannot disagree about what is well-formed;
//! this module then only reads values out of a body the contract accepted.
//!
//! Invariants: types are matched case-sensitively (Mixpeek's enum values are
//! lower-case, so `"PDF"` is refused); the schema is only consulted once the body
//! has the right shape, as the real service validates the model before its
//! handler looks at the bucket.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::BatchShapeErrors;
use crate::contract::{Contract, Violation};

/// `BucketSchemaFieldType`: the blob types of dialect `objects`, as the
/// contract lists them.
pub(crate) fn field_types() -> Vec<&'static str> {
    Contract::CreateObject.schema()["$defs"]["field_type"]["enum"]
        .as_array()
        .map(|types| types.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The two create endpoints the emulator serves (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `POST /v1/buckets/{bucket}/objects/create`, from the docs page.
    ObjectsCreate,
    /// `POST /v1/buckets/{bucket}/objects`, from openapi.json.
    Objects,
}

impl Dialect {
    /// The name used in config files and in [`crate::RecordedObject::dialect`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dialect::ObjectsCreate => "objects-create",
            Dialect::Objects => "objects",
        }
    }

    /// The contract of one create body of this dialect.
    fn contract(self) -> Contract {
        match self {
            Dialect::ObjectsCreate => Contract::ObjectsCreate,
            Dialect::Objects => Contract::CreateObject,
        }
    }
}

/// One field-level problem, serialised as an item of FastAPI's `detail` list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    /// Path into the request, starting with `"body"` (or `"query"`).
    pub(crate) loc: Vec<Value>,
    pub(crate) msg: String,
    /// pydantic's error type (`missing`, `string_too_long`, `enum`, ...).
    pub(crate) kind: Cow<'static, str>,
    /// The JSON pointer into the body of a contract violation, answered as
    /// `ctx.pointer` (pydantic's place for an error's context).
    pub(crate) pointer: Option<String>,
}

impl FieldError {
    pub(crate) fn new(
        loc: Vec<Value>,
        kind: impl Into<Cow<'static, str>>,
        msg: impl Into<String>,
    ) -> Self {
        FieldError {
            loc,
            msg: msg.into(),
            kind: kind.into(),
            pointer: None,
        }
    }

    /// The error for a contract violation in the body, at `["body", path...]`.
    pub(crate) fn from_violation(violation: Violation) -> Self {
        FieldError {
            loc: body_loc(&violation.path),
            msg: violation.message,
            kind: violation.kind.into(),
            pointer: Some(violation.pointer),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut item = json!({ "loc": self.loc, "msg": self.msg, "type": self.kind });
        if let (Some(pointer), Some(map)) = (&self.pointer, item.as_object_mut()) {
            map.insert("ctx".into(), json!({ "pointer": pointer }));
        }
        item
    }
}

/// `contract`'s violations in `body` as field errors (empty when it passes).
pub(crate) fn contract_errors(contract: Contract, body: &Value) -> Vec<FieldError> {
    match contract.check(body) {
        Ok(()) => Vec::new(),
        Err(violations) => violations
            .into_iter()
            .map(FieldError::from_violation)
            .collect(),
    }
}

/// Why a body was refused; see the module doc for the two answer shapes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejection {
    /// The body does not have the request model's shape (FastAPI `detail`).
    Shape(Vec<FieldError>),
    /// The body is well-formed but does not fit the bucket schema (Mixpeek envelope).
    Schema { message: String, details: Value },
}

/// The parts of an accepted body that a success answer echoes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidObject {
    pub(crate) key_prefix: Option<String>,
    pub(crate) blobs: Vec<ValidBlob>,
    /// `metadata` (objects-create) or the root's extra fields (objects).
    pub(crate) metadata: Map<String, Value>,
    pub(crate) skip_duplicates: bool,
}

/// One accepted blob. Its payload is not kept: answers never echo it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidBlob {
    pub(crate) property: String,
    pub(crate) kind: String,
    pub(crate) key_prefix: Option<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) upload_id: Option<String>,
}

/// Validates a create body of `dialect` against its contract, then against
/// `schema` (the bucket's `bucket_schema`; an empty or missing `properties` map
/// accepts any property).
pub(crate) fn validate_create(
    dialect: Dialect,
    body: &Value,
    bucket: &str,
    schema: &Value,
) -> Result<ValidObject, Rejection> {
    let errors = contract_errors(dialect.contract(), body);
    if !errors.is_empty() {
        return Err(Rejection::Shape(errors));
    }
    let object = read_object(dialect, body).map_err(Rejection::Shape)?;
    check_schema(&object, bucket, schema)?;
    Ok(object)
}

/// Why one object of a batch was not created: a `FailedObjectError` without
/// its index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ItemFailure {
    pub(crate) error: String,
    /// `ValidationError`, `NotFoundError`, `BadRequestError`.
    pub(crate) error_type: &'static str,
}

/// One object of a batch body after validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchItem<'a> {
    /// 0-based position in `objects`.
    pub(crate) index: usize,
    /// The object's body, unchanged.
    pub(crate) body: &'a Value,
    pub(crate) result: Result<ValidObject, ItemFailure>,
}

/// Validates a `CreateObjectsBatchRequest` (`{"objects": [CreateObjectRequest, ...]}`,
/// at most 100 objects) against its contract.
///
/// `Err` (answered 422 in FastAPI's `detail` shape) when the root is malformed,
/// holds too many objects, or, with [`BatchShapeErrors::RejectBatch`], when any
/// object has the wrong shape (locations then start `["body", "objects", i]`).
/// Otherwise one [`BatchItem`] per object: schema mismatches, and with
/// [`BatchShapeErrors::PerObject`] shape errors too, are failures of that item
/// alone (partial success).
pub(crate) fn validate_batch<'a>(
    body: &'a Value,
    bucket: &str,
    schema: &Value,
    shape_errors: BatchShapeErrors,
) -> Result<Vec<BatchItem<'a>>, Vec<FieldError>> {
    // Violations inside `objects[i]` belong to object i; the rest (no
    // `objects`, not a list, too many) to the whole batch, which then fails
    // alone, as pydantic stops at a malformed list.
    let mut root_errors = Vec::new();
    let mut by_item: BTreeMap<usize, Vec<FieldError>> = BTreeMap::new();
    for violation in Contract::CreateObjectsBatch
        .check(body)
        .err()
        .unwrap_or_default()
    {
        match item_index(&violation.path) {
            Some(index) => by_item
                .entry(index)
                .or_default()
                .push(FieldError::from_violation(violation)),
            None => root_errors.push(FieldError::from_violation(violation)),
        }
    }
    if !root_errors.is_empty() {
        return Err(root_errors);
    }
    let items = body
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| vec![unreadable(&[json!("objects")])])?;

    let mut whole_batch_errors = Vec::new();
    let mut checked = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let shape = match by_item.remove(&index) {
            Some(errors) => Err(errors),
            None => read_object(Dialect::Objects, item).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|mut e| {
                        // ["body", rest...] → ["body", "objects", index, rest...]
                        e.loc.splice(1..1, [json!("objects"), json!(index)]);
                        e
                    })
                    .collect()
            }),
        };
        let result = match shape {
            Ok(object) => check_schema(&object, bucket, schema)
                .map(|()| object)
                .map_err(|rejection| match rejection {
                    Rejection::Schema { message, .. } => ItemFailure {
                        error: message,
                        error_type: "ValidationError",
                    },
                    Rejection::Shape(errors) => shape_failure(&errors, 1),
                }),
            Err(errors) => match shape_errors {
                BatchShapeErrors::PerObject => Err(shape_failure(&errors, 3)),
                BatchShapeErrors::RejectBatch => {
                    whole_batch_errors.extend(errors);
                    continue;
                }
            },
        };
        checked.push(BatchItem {
            index,
            body: item,
            result,
        });
    }
    if whole_batch_errors.is_empty() {
        Ok(checked)
    } else {
        Err(whole_batch_errors)
    }
}

/// `i` of a path `["objects", i, ...]`.
fn item_index(path: &[Value]) -> Option<usize> {
    match path {
        [key, index, ..] if key == "objects" => {
            index.as_u64().and_then(|i| usize::try_from(i).ok())
        }
        _ => None,
    }
}

/// One failure message for all shape errors of a batch object:
/// `blobs.0.type: Input should be ...; ...`, locations relative to the object
/// (the first `skip` parts of each `loc`, `["body", "objects", i]`, dropped).
fn shape_failure(errors: &[FieldError], skip: usize) -> ItemFailure {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let loc: Vec<String> = e
                .loc
                .iter()
                .skip(skip)
                .map(|part| match part {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            if loc.is_empty() {
                e.msg.clone()
            } else {
                format!("{}: {}", loc.join("."), e.msg)
            }
        })
        .collect();
    ItemFailure {
        error: parts.join("; "),
        error_type: "ValidationError",
    }
}

/// The request body as a JSON object, or the error FastAPI gives otherwise.
pub(crate) fn body_object(body: &Value) -> Result<&Map<String, Value>, Vec<FieldError>> {
    body.as_object().ok_or_else(|| {
        vec![FieldError::new(
            body_loc(&[]),
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        )]
    })
}

pub(crate) fn body_loc(path: &[Value]) -> Vec<Value> {
    let mut loc = vec![json!("body")];
    loc.extend_from_slice(path);
    loc
}

/// The error for a value the contract accepted but this module cannot read:
/// the contract and the reader disagree, which the tests rule out; answered as
/// a validation error rather than a panic.
pub(crate) fn unreadable(path: &[Value]) -> FieldError {
    FieldError::new(
        body_loc(path),
        "value_error",
        "Value error, the emulator cannot read this value although it fits the request contract",
    )
}

/// Reads a create body the contract accepted.
fn read_object(dialect: Dialect, body: &Value) -> Result<ValidObject, Vec<FieldError>> {
    let root = body_object(body)?;
    let text = |key: &str| root.get(key).and_then(Value::as_str).map(str::to_string);
    let metadata = match dialect {
        Dialect::ObjectsCreate => root
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        // Every root key the contract does not name is object metadata.
        Dialect::Objects => {
            let fields = &Contract::CreateObject.schema()["properties"];
            root.iter()
                .filter(|(k, _)| fields.get(k.as_str()).is_none())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
    };
    let mut blobs = Vec::new();
    if let Some(items) = root.get("blobs").and_then(Value::as_array) {
        for (index, item) in items.iter().enumerate() {
            let blob = read_blob(dialect, item)
                .ok_or_else(|| vec![unreadable(&[json!("blobs"), json!(index)])])?;
            blobs.push(blob);
        }
    }
    Ok(ValidObject {
        key_prefix: text("key_prefix"),
        blobs,
        metadata,
        skip_duplicates: root
            .get("skip_duplicates")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn read_blob(dialect: Dialect, item: &Value) -> Option<ValidBlob> {
    let blob = item.as_object()?;
    let text = |key: &str| blob.get(key).and_then(Value::as_str).map(str::to_string);
    Some(ValidBlob {
        property: text("property")?,
        kind: text("type")?,
        key_prefix: text("key_prefix"),
        metadata: blob
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        // The docs page's blobs have no upload reference.
        upload_id: match dialect {
            Dialect::ObjectsCreate => None,
            Dialect::Objects => text("upload_id"),
        },
    })
}

/// Whether a blob of type `blob` may fill a schema field declared `field`.
/// The docs page's `json` blob type is the openapi `object` field type.
fn type_fits(blob: &str, field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    blob == field || (blob == "json" && field == "object")
}

fn check_schema(object: &ValidObject, bucket: &str, schema: &Value) -> Result<(), Rejection> {
    let Some(fields) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    if fields.is_empty() {
        return Ok(());
    }
    for (index, blob) in object.blobs.iter().enumerate() {
        let Some(field) = fields.get(&blob.property) else {
            return Err(Rejection::Schema {
                message: format!(
                    "Blob property '{}' is not defined in the schema of bucket '{bucket}'",
                    blob.property
                ),
                details: json!({
                    "index": index,
                    "property": blob.property,
                    "schema_properties": fields.keys().collect::<Vec<_>>(),
                }),
            });
        };
        let declared = field.get("type").and_then(Value::as_str).unwrap_or("");
        if !type_fits(&blob.kind, declared) {
            return Err(Rejection::Schema {
                message: format!(
                    "Blob property '{}' has type '{}' but the schema of bucket '{bucket}' declares '{declared}'",
                    blob.property, blob.kind
                ),
                details: json!({
                    "index": index,
                    "property": blob.property,
                    "expected": declared,
                    "got": blob.kind,
                }),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn create_body(blob: Value) -> Value {
        json!({ "key_prefix": "/docs", "blobs": [blob], "metadata": {"a": 1} })
    }

    fn shape_errors(result: Result<ValidObject, Rejection>) -> Vec<(String, String)> {
        match result {
            Err(Rejection::Shape(errors)) => errors
                .into_iter()
                .map(|e| (Value::Array(e.loc).to_string(), e.kind.into_owned()))
                .collect(),
            other => panic!("expected a shape rejection, got {other:?}"),
        }
    }

    #[rstest]
    #[case::upper_case_type(json!({"property": "c", "type": "PDF", "data": "x"}), r#"["body","blobs",0,"type"]"#, "enum")]
    #[case::unknown_type(json!({"property": "c", "type": "document", "data": "x"}), r#"["body","blobs",0,"type"]"#, "enum")]
    #[case::empty_property(json!({"property": "", "type": "pdf", "data": "x"}), r#"["body","blobs",0,"property"]"#, "string_too_short")]
    #[case::long_property(json!({"property": "p".repeat(101), "type": "pdf", "data": "x"}), r#"["body","blobs",0,"property"]"#, "string_too_long")]
    #[case::missing_property(json!({"type": "pdf", "data": "x"}), r#"["body","blobs",0,"property"]"#, "missing")]
    #[case::number_property(json!({"property": 3, "type": "pdf", "data": "x"}), r#"["body","blobs",0,"property"]"#, "string_type")]
    #[case::missing_type(json!({"property": "c", "data": "x"}), r#"["body","blobs",0,"type"]"#, "missing")]
    #[case::missing_data(json!({"property": "c", "type": "pdf"}), r#"["body","blobs",0,"data"]"#, "missing")]
    #[case::null_data(json!({"property": "c", "type": "pdf", "data": null}), r#"["body","blobs",0,"data"]"#, "missing")]
    #[case::metadata_not_object(json!({"property": "c", "type": "pdf", "data": "x", "metadata": [1]}), r#"["body","blobs",0,"metadata"]"#, "dict_type")]
    fn objects_create_refuses_bad_blobs(
        #[case] blob: Value,
        #[case] loc: &str,
        #[case] kind: &'static str,
    ) {
        let result = validate_create(Dialect::ObjectsCreate, &create_body(blob), "b", &json!({}));
        assert_eq!(
            shape_errors(result),
            vec![(loc.to_string(), kind.to_string())]
        );
    }

    #[rstest]
    #[case::both(json!({"property": "c", "type": "pdf", "data": "x", "upload_id": "upl_1"}), r#"["body","blobs",0]"#, "value_error")]
    #[case::neither(json!({"property": "c", "type": "pdf"}), r#"["body","blobs",0]"#, "value_error")]
    #[case::bad_upload_id(json!({"property": "c", "type": "pdf", "upload_id": "up_1"}), r#"["body","blobs",0,"upload_id"]"#, "string_pattern_mismatch")]
    #[case::upload_id_bad_char(json!({"property": "c", "type": "pdf", "upload_id": "upl_a.b"}), r#"["body","blobs",0,"upload_id"]"#, "string_pattern_mismatch")]
    #[case::json_type_is_docs_only(json!({"property": "c", "type": "json", "data": {}}), r#"["body","blobs",0,"type"]"#, "enum")]
    #[case::upper_case_type(json!({"property": "c", "type": "IMAGE", "data": "x"}), r#"["body","blobs",0,"type"]"#, "enum")]
    fn objects_refuses_bad_blobs(
        #[case] blob: Value,
        #[case] loc: &str,
        #[case] kind: &'static str,
    ) {
        let body = json!({ "blobs": [blob] });
        let result = validate_create(Dialect::Objects, &body, "b", &json!({}));
        assert_eq!(
            shape_errors(result),
            vec![(loc.to_string(), kind.to_string())]
        );
    }

    #[rstest]
    #[case::not_an_object(Dialect::Objects, json!([1]), r#"["body"]"#, "model_attributes_type")]
    #[case::blobs_required(Dialect::ObjectsCreate, json!({"key_prefix": "/a"}), r#"["body","blobs"]"#, "missing")]
    #[case::blobs_not_list(Dialect::Objects, json!({"blobs": {}}), r#"["body","blobs"]"#, "list_type")]
    #[case::key_prefix_number(Dialect::Objects, json!({"blobs": [], "key_prefix": 1}), r#"["body","key_prefix"]"#, "string_type")]
    #[case::skip_duplicates_string(Dialect::ObjectsCreate, json!({"blobs": [], "skip_duplicates": "yes"}), r#"["body","skip_duplicates"]"#, "bool_type")]
    #[case::metadata_string(Dialect::ObjectsCreate, json!({"blobs": [], "metadata": "x"}), r#"["body","metadata"]"#, "dict_type")]
    fn refuses_bad_roots(
        #[case] dialect: Dialect,
        #[case] body: Value,
        #[case] loc: &str,
        #[case] kind: &'static str,
    ) {
        let result = validate_create(dialect, &body, "b", &json!({}));
        assert_eq!(
            shape_errors(result),
            vec![(loc.to_string(), kind.to_string())]
        );
    }

    #[test]
    fn every_problem_of_a_body_is_reported() {
        let body = json!({"blobs": [
            {"property": "", "type": "PDF", "data": "x"},
            {"property": "ok", "type": "pdf", "data": "x"},
            {"type": "pdf"},
        ]});
        let errors = shape_errors(validate_create(
            Dialect::ObjectsCreate,
            &body,
            "b",
            &json!({}),
        ));
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn enum_message_lists_choices_like_pydantic() {
        let body = create_body(json!({"property": "c", "type": "PDF", "data": "x"}));
        let Err(Rejection::Shape(errors)) =
            validate_create(Dialect::Objects, &body, "b", &json!({}))
        else {
            panic!("expected a shape rejection");
        };
        assert!(
            errors[0]
                .msg
                .starts_with("Input should be 'string', 'number', ")
        );
        assert!(errors[0].msg.ends_with("'pdf' or 'excel'"));
    }

    #[test]
    fn accepts_docs_page_example() {
        let body = json!({
            "blobs": [
                {"data": {"num_pages": 5}, "key_prefix": "/c/content.pdf",
                 "metadata": {"author": "J"}, "property": "content", "type": "json"},
                {"data": {"filename": "https://e.com/x.jpg", "mime_type": "image/jpeg"},
                 "key_prefix": "/c/thumbnail.jpg", "property": "thumbnail", "type": "image"}
            ],
            "key_prefix": "/documents",
            "metadata": {"category": "contracts"},
            "skip_duplicates": true
        });
        let object = validate_create(Dialect::ObjectsCreate, &body, "b", &json!({})).unwrap();
        assert_eq!(object.key_prefix.as_deref(), Some("/documents"));
        assert_eq!(
            object.metadata,
            json!({"category": "contracts"})
                .as_object()
                .unwrap()
                .clone()
        );
        assert!(object.skip_duplicates);
        assert_eq!(object.blobs.len(), 2);
        assert_eq!(object.blobs[0].kind, "json");
        assert_eq!(object.blobs[0].metadata["author"], json!("J"));
        assert_eq!(
            object.blobs[1].key_prefix.as_deref(),
            Some("/c/thumbnail.jpg")
        );
    }

    #[test]
    fn objects_takes_root_extras_as_metadata_and_upload_ids() {
        let body = json!({
            "key_prefix": "/a",
            "category": "contracts",
            "year": 2024,
            "canonicalize_source": false,
            "blobs": [{"property": "video", "type": "video", "upload_id": "upl_ab-C_9"}]
        });
        let object = validate_create(Dialect::Objects, &body, "b", &json!({})).unwrap();
        assert_eq!(
            Value::Object(object.metadata),
            json!({"category": "contracts", "year": 2024})
        );
        assert_eq!(object.blobs[0].upload_id.as_deref(), Some("upl_ab-C_9"));
    }

    #[test]
    fn objects_allows_an_object_without_blobs() {
        let object =
            validate_create(Dialect::Objects, &json!({"title": "t"}), "b", &json!({})).unwrap();
        assert!(object.blobs.is_empty());
    }

    #[test]
    fn property_of_100_multibyte_chars_is_accepted() {
        let body = create_body(json!({"property": "é".repeat(100), "type": "text", "data": "x"}));
        assert!(validate_create(Dialect::ObjectsCreate, &body, "b", &json!({})).is_ok());
    }

    #[rstest]
    #[case::same("image", "image", true)]
    #[case::json_fills_object("json", "object", true)]
    #[case::schema_upper_case("pdf", "PDF", true)]
    #[case::mismatch("pdf", "image", false)]
    fn schema_type_compatibility(#[case] blob: &str, #[case] field: &str, #[case] fits: bool) {
        let schema = json!({"properties": {"content": {"type": field}}});
        let body = create_body(json!({"property": "content", "type": blob, "data": "x"}));
        let result = validate_create(Dialect::ObjectsCreate, &body, "b", &schema);
        if fits {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let Err(Rejection::Schema { details, .. }) = result else {
                panic!("expected a schema rejection, got {result:?}");
            };
            assert_eq!(details["expected"], json!(field));
            assert_eq!(details["got"], json!(blob));
        }
    }

    #[test]
    fn property_outside_a_non_empty_schema_is_refused() {
        let schema = json!({"properties": {"content": {"type": "pdf"}}});
        let body = create_body(json!({"property": "thumb", "type": "image", "data": "x"}));
        let Err(Rejection::Schema { message, details }) =
            validate_create(Dialect::ObjectsCreate, &body, "docs", &schema)
        else {
            panic!("expected a schema rejection");
        };
        assert!(
            message.contains("'thumb'") && message.contains("'docs'"),
            "{message}"
        );
        assert_eq!(details["schema_properties"], json!(["content"]));
    }

    #[test]
    fn empty_schema_accepts_any_property() {
        let body = create_body(json!({"property": "anything", "type": "image", "data": "x"}));
        let schema = json!({"properties": {}});
        assert!(validate_create(Dialect::ObjectsCreate, &body, "b", &schema).is_ok());
    }

    #[test]
    fn shape_is_checked_before_schema() {
        let schema = json!({"properties": {"content": {"type": "pdf"}}});
        let body = create_body(json!({"property": "other", "type": "PDF", "data": "x"}));
        let result = validate_create(Dialect::ObjectsCreate, &body, "b", &schema);
        assert!(matches!(result, Err(Rejection::Shape(_))), "{result:?}");
    }

    #[rstest]
    #[case("upl_abc", true)]
    #[case("upl_A-b_9", true)]
    #[case("upl_", false)]
    #[case("UPL_abc", false)]
    #[case("upl_a b", false)]
    #[case("upl_ü", false)]
    fn upload_id_pattern(#[case] id: &str, #[case] ok: bool) {
        let body = json!({"blobs": [{"property": "v", "type": "video", "upload_id": id}]});
        let result = validate_create(Dialect::Objects, &body, "b", &json!({}));
        assert_eq!(result.is_ok(), ok, "{result:?}");
    }

    #[test]
    fn contract_errors_carry_their_pointer() {
        let body = json!({"blobs": [{"property": "c", "type": "PDF", "data": "x"}]});
        let Err(Rejection::Shape(errors)) =
            validate_create(Dialect::Objects, &body, "b", &json!({}))
        else {
            panic!("expected a shape rejection");
        };
        assert_eq!(
            errors[0].to_json()["ctx"]["pointer"],
            json!("/blobs/0/type")
        );
        assert_eq!(
            errors[0].to_json()["loc"],
            json!(["body", "blobs", 0, "type"])
        );
    }

    #[test]
    fn field_types_come_from_the_contract() {
        let types = field_types();
        assert_eq!(types.len(), 15);
        assert_eq!(types.first(), Some(&"string"));
        assert_eq!(types.last(), Some(&"excel"));
    }

    #[rstest]
    #[case::reject_batch(BatchShapeErrors::RejectBatch)]
    #[case::per_object(BatchShapeErrors::PerObject)]
    fn batch_shape_errors_are_located_in_their_object(#[case] mode: BatchShapeErrors) {
        let good = json!({"blobs": [{"property": "c", "type": "pdf", "data": "x"}]});
        let bad = json!({"blobs": [{"property": "c", "type": "PDF", "data": "x"}]});
        let body = json!({"objects": [good, bad]});
        let result = validate_batch(&body, "b", &json!({}), mode);
        match mode {
            BatchShapeErrors::RejectBatch => {
                let errors = result.unwrap_err();
                assert_eq!(errors.len(), 1);
                assert_eq!(
                    Value::Array(errors[0].loc.clone()),
                    json!(["body", "objects", 1, "blobs", 0, "type"])
                );
            }
            BatchShapeErrors::PerObject => {
                let items = result.unwrap();
                assert!(items[0].result.is_ok());
                let failure = items[1].result.clone().unwrap_err();
                assert!(
                    failure.error.starts_with("blobs.0.type: Input should be "),
                    "{failure:?}"
                );
                assert_eq!(failure.error_type, "ValidationError");
            }
        }
    }

    #[rstest]
    #[case::missing(json!({}), "missing")]
    #[case::not_a_list(json!({"objects": {}}), "list_type")]
    #[case::too_many(json!({"objects": vec![json!({}); 101]}), "too_long")]
    fn malformed_batch_roots_fail_whole(#[case] body: Value, #[case] kind: &str) {
        for mode in [BatchShapeErrors::RejectBatch, BatchShapeErrors::PerObject] {
            let errors = validate_batch(&body, "b", &json!({}), mode).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].kind, kind);
            assert_eq!(
                Value::Array(errors[0].loc.clone()),
                json!(["body", "objects"])
            );
        }
    }
}
