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
//!   `{"detail": [{"loc", "msg", "type"}]}` (every problem of the body at once, as
//!   pydantic reports them);
//! - [`Rejection::Schema`]: a semantic refusal (the blob does not fit the bucket
//!   schema), answered in Mixpeek's `{"success": false, "error": {...}}` envelope.
//!
//! Invariants: types are matched case-sensitively (Mixpeek's enum values are
//! lower-case, so `"PDF"` is refused); the schema is only consulted once the body
//! has the right shape, as the real service validates the model before its
//! handler looks at the bucket.

use serde_json::{Map, Value, json};

use crate::BatchShapeErrors;

/// `BucketSchemaFieldType` of openapi.json 0.81, the blob types of dialect `objects`.
pub(crate) const FIELD_TYPES: [&str; 15] = [
    "string", "number", "integer", "float", "boolean", "object", "array", "date", "datetime",
    "text", "image", "audio", "video", "pdf", "excel",
];

/// Types the create-object docs page adds to the enum (dialect `objects-create` only).
const DOCS_PAGE_EXTRA_TYPES: [&str; 1] = ["json"];

/// `CreateBlobRequest.upload_id` pattern, quoted in error messages as pydantic does.
pub(crate) const UPLOAD_ID_PATTERN: &str = "^upl_[a-zA-Z0-9_-]+$";

/// `CreateBlobRequest.property` length bounds, counted in characters.
const PROPERTY_MIN_CHARS: usize = 1;
const PROPERTY_MAX_CHARS: usize = 100;

/// Root keys of `CreateObjectRequest` that are not object metadata (dialect `objects`
/// takes every other root key as metadata).
const OBJECTS_ROOT_KEYS: [&str; 5] = [
    "key_prefix",
    "blobs",
    "skip_duplicates",
    "canonicalize_source",
    "force_remirror",
];

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

    fn accepts_type(self, kind: &str) -> bool {
        FIELD_TYPES.contains(&kind)
            || (self == Dialect::ObjectsCreate && DOCS_PAGE_EXTRA_TYPES.contains(&kind))
    }

    fn accepted_types(self) -> Vec<&'static str> {
        let mut all = FIELD_TYPES.to_vec();
        if self == Dialect::ObjectsCreate {
            all.extend(DOCS_PAGE_EXTRA_TYPES);
        }
        all
    }
}

/// One field-level problem, serialised as an item of FastAPI's `detail` list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    /// Path into the request, starting with `"body"` (or `"query"`).
    pub(crate) loc: Vec<Value>,
    pub(crate) msg: String,
    /// pydantic's error type (`missing`, `string_too_long`, `enum`, ...).
    pub(crate) kind: &'static str,
}

impl FieldError {
    pub(crate) fn new(loc: Vec<Value>, kind: &'static str, msg: impl Into<String>) -> Self {
        FieldError {
            loc,
            msg: msg.into(),
            kind,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({ "loc": self.loc, "msg": self.msg, "type": self.kind })
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

/// Validates a create body of `dialect` against the request model, then against
/// `schema` (the bucket's `bucket_schema`; an empty or missing `properties` map
/// accepts any property).
pub(crate) fn validate_create(
    dialect: Dialect,
    body: &Value,
    bucket: &str,
    schema: &Value,
) -> Result<ValidObject, Rejection> {
    let object = check_shape(dialect, body).map_err(Rejection::Shape)?;
    check_schema(&object, bucket, schema)?;
    Ok(object)
}

/// At most this many objects per batch (`CreateObjectsBatchRequest.objects.maxItems`).
pub(crate) const MAX_BATCH_OBJECTS: usize = 100;

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
/// at most [`MAX_BATCH_OBJECTS`]).
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
    let root = body_object(body)?;
    let items = match root.get("objects") {
        None => {
            return Err(vec![FieldError::new(
                body_loc(&[json!("objects")]),
                "missing",
                "Field required",
            )]);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(vec![FieldError::new(
                body_loc(&[json!("objects")]),
                "list_type",
                "Input should be a valid list",
            )]);
        }
    };
    if items.len() > MAX_BATCH_OBJECTS {
        return Err(vec![FieldError::new(
            body_loc(&[json!("objects")]),
            "too_long",
            format!(
                "List should have at most {MAX_BATCH_OBJECTS} items after validation, not {}",
                items.len()
            ),
        )]);
    }

    let mut whole_batch_errors = Vec::new();
    let mut checked = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let result = match check_shape(Dialect::Objects, item) {
            Ok(object) => check_schema(&object, bucket, schema)
                .map(|()| object)
                .map_err(|rejection| match rejection {
                    Rejection::Schema { message, .. } => ItemFailure {
                        error: message,
                        error_type: "ValidationError",
                    },
                    Rejection::Shape(errors) => shape_failure(&errors),
                }),
            Err(errors) => match shape_errors {
                BatchShapeErrors::PerObject => Err(shape_failure(&errors)),
                BatchShapeErrors::RejectBatch => {
                    whole_batch_errors.extend(errors.into_iter().map(|mut e| {
                        // ["body", rest...] → ["body", "objects", index, rest...]
                        e.loc.splice(1..1, [json!("objects"), json!(index)]);
                        e
                    }));
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

/// One failure message for all shape errors of an object:
/// `blobs.0.type: Input should be ...; ...`, locations relative to the object.
fn shape_failure(errors: &[FieldError]) -> ItemFailure {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let loc: Vec<String> = e
                .loc
                .iter()
                .skip(1)
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

/// The FastAPI error for a value at `loc` that should be a JSON object.
fn not_an_object(loc: Vec<Value>) -> FieldError {
    FieldError::new(
        loc,
        "model_attributes_type",
        "Input should be a valid dictionary or object to extract fields from",
    )
}

/// The request body as a JSON object, or the error FastAPI gives otherwise.
pub(crate) fn body_object(body: &Value) -> Result<&Map<String, Value>, Vec<FieldError>> {
    body.as_object()
        .ok_or_else(|| vec![not_an_object(body_loc(&[]))])
}

pub(crate) fn body_loc(path: &[Value]) -> Vec<Value> {
    let mut loc = vec![json!("body")];
    loc.extend_from_slice(path);
    loc
}

fn check_shape(dialect: Dialect, body: &Value) -> Result<ValidObject, Vec<FieldError>> {
    let root = body_object(body)?;
    let mut errors = Vec::new();

    let key_prefix = optional_string(root, "key_prefix", &[], &mut errors);
    let skip_duplicates = optional_bool(root, "skip_duplicates", &[], &mut errors);
    let metadata = match dialect {
        Dialect::ObjectsCreate => optional_object(root, "metadata", &[], &mut errors),
        Dialect::Objects => {
            optional_bool(root, "canonicalize_source", &[], &mut errors);
            optional_bool(root, "force_remirror", &[], &mut errors);
            root.iter()
                .filter(|(k, _)| !OBJECTS_ROOT_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
    };

    let mut blobs = Vec::new();
    match root.get("blobs") {
        // The docs page's model has no default for `blobs`; openapi's defaults to [].
        None if dialect == Dialect::ObjectsCreate => errors.push(FieldError::new(
            body_loc(&[json!("blobs")]),
            "missing",
            "Field required",
        )),
        None => {}
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                if let Some(blob) = check_blob(dialect, index, item, &mut errors) {
                    blobs.push(blob);
                }
            }
        }
        Some(_) => errors.push(FieldError::new(
            body_loc(&[json!("blobs")]),
            "list_type",
            "Input should be a valid list",
        )),
    }

    if errors.is_empty() {
        Ok(ValidObject {
            key_prefix,
            blobs,
            metadata,
            skip_duplicates: skip_duplicates.unwrap_or(false),
        })
    } else {
        Err(errors)
    }
}

fn check_blob(
    dialect: Dialect,
    index: usize,
    item: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<ValidBlob> {
    let at = [json!("blobs"), json!(index)];
    let Some(blob) = item.as_object() else {
        errors.push(not_an_object(body_loc(&at)));
        return None;
    };
    let before = errors.len();
    let field = |name: &str| body_loc(&[json!("blobs"), json!(index), json!(name)]);

    let property = match blob.get("property") {
        None => {
            errors.push(FieldError::new(
                field("property"),
                "missing",
                "Field required",
            ));
            None
        }
        Some(Value::String(p)) => {
            let chars = p.chars().count();
            if chars < PROPERTY_MIN_CHARS {
                errors.push(FieldError::new(
                    field("property"),
                    "string_too_short",
                    format!("String should have at least {PROPERTY_MIN_CHARS} character"),
                ));
            } else if chars > PROPERTY_MAX_CHARS {
                errors.push(FieldError::new(
                    field("property"),
                    "string_too_long",
                    format!("String should have at most {PROPERTY_MAX_CHARS} characters"),
                ));
            }
            Some(p.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                field("property"),
                "string_type",
                "Input should be a valid string",
            ));
            None
        }
    };

    let kind = match blob.get("type") {
        None => {
            errors.push(FieldError::new(field("type"), "missing", "Field required"));
            None
        }
        Some(Value::String(t)) if dialect.accepts_type(t) => Some(t.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                field("type"),
                "enum",
                format!(
                    "Input should be {}",
                    quoted_choice(&dialect.accepted_types())
                ),
            ));
            None
        }
    };

    let key_prefix = optional_string(blob, "key_prefix", &at, errors);
    let metadata = optional_object(blob, "metadata", &at, errors);
    let has_data = !matches!(blob.get("data"), None | Some(Value::Null));

    let mut upload_id = None;
    match dialect {
        Dialect::ObjectsCreate => {
            if !has_data {
                errors.push(FieldError::new(field("data"), "missing", "Field required"));
            }
        }
        Dialect::Objects => {
            let upload_ok = match blob.get("upload_id") {
                None | Some(Value::Null) => true,
                Some(Value::String(id)) if upload_id_matches(id) => {
                    upload_id = Some(id.clone());
                    true
                }
                Some(Value::String(_)) => {
                    errors.push(FieldError::new(
                        field("upload_id"),
                        "string_pattern_mismatch",
                        format!("String should match pattern '{UPLOAD_ID_PATTERN}'"),
                    ));
                    false
                }
                Some(_) => {
                    errors.push(FieldError::new(
                        field("upload_id"),
                        "string_type",
                        "Input should be a valid string",
                    ));
                    false
                }
            };
            // pydantic runs the model validator only on fields that parsed.
            if upload_ok && has_data == upload_id.is_some() {
                errors.push(FieldError::new(
                    body_loc(&at),
                    "value_error",
                    "Value error, exactly one of 'data' or 'upload_id' must be provided",
                ));
            }
        }
    }

    if errors.len() != before {
        return None;
    }
    Some(ValidBlob {
        property: property?,
        kind: kind?,
        key_prefix,
        metadata,
        upload_id,
    })
}

/// `^upl_[a-zA-Z0-9_-]+$`, without pulling in a regex engine for one pattern.
pub(crate) fn upload_id_matches(id: &str) -> bool {
    id.strip_prefix("upl_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// pydantic's wording for an enum miss: `'a', 'b' or 'c'`.
fn quoted_choice(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((only, _)) => only.clone(),
        None => String::new(),
    }
}

pub(crate) fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    at: &[Value],
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            let mut path = at.to_vec();
            path.push(json!(key));
            errors.push(FieldError::new(
                body_loc(&path),
                "string_type",
                "Input should be a valid string",
            ));
            None
        }
    }
}

pub(crate) fn optional_bool(
    obj: &Map<String, Value>,
    key: &str,
    at: &[Value],
    errors: &mut Vec<FieldError>,
) -> Option<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            let mut path = at.to_vec();
            path.push(json!(key));
            errors.push(FieldError::new(
                body_loc(&path),
                "bool_type",
                "Input should be a valid boolean",
            ));
            None
        }
    }
}

pub(crate) fn optional_object(
    obj: &Map<String, Value>,
    key: &str,
    at: &[Value],
    errors: &mut Vec<FieldError>,
) -> Map<String, Value> {
    match obj.get(key) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            let mut path = at.to_vec();
            path.push(json!(key));
            errors.push(FieldError::new(
                body_loc(&path),
                "dict_type",
                "Input should be a valid dictionary",
            ));
            Map::new()
        }
    }
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

    fn shape_errors(result: Result<ValidObject, Rejection>) -> Vec<(String, &'static str)> {
        match result {
            Err(Rejection::Shape(errors)) => errors
                .into_iter()
                .map(|e| (Value::Array(e.loc).to_string(), e.kind))
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
        assert_eq!(shape_errors(result), vec![(loc.to_string(), kind)]);
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
        assert_eq!(shape_errors(result), vec![(loc.to_string(), kind)]);
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
        assert_eq!(shape_errors(result), vec![(loc.to_string(), kind)]);
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
        assert_eq!(upload_id_matches(id), ok);
    }

    #[test]
    fn quoted_choice_wording() {
        assert_eq!(quoted_choice(&["a"]), "'a'");
        assert_eq!(quoted_choice(&["a", "b", "c"]), "'a', 'b' or 'c'");
    }
}
