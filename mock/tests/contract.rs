//! The request contract (`mock/contract/*.schema.json`, [`Contract`]):
//! bodies each contract must take and must refuse, and the comparison of the
//! project's schemas with Mixpeek's published openapi.json.
//!
//! The comparison reads openapi.json from `MIXPEEK_OPENAPI`, else from
//! `shared/mixpeek/openapi.json` beside the repository; without it, it says
//! where it looked and passes (the file is not part of the repository).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use mixpeek_mock::contract::Contract;
use rstest::rstest;
use serde_json::{Value, json};

const HASH: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// A body as the daemon builds it for each contract (SPEC §7).
fn daemon_body(contract: Contract) -> Value {
    match contract {
        Contract::ObjectsCreate => json!({
            "key_prefix": "/contracts/2024",
            "blobs": [
                {"property": "content", "type": "json", "key_prefix": "/contracts/2024/a.json",
                 "data": {"num_pages": 5}},
                {"property": "notes", "type": "text", "key_prefix": "/contracts/2024/a.txt",
                 "data": "plain text"},
                {"property": "scan", "type": "pdf", "key_prefix": "/contracts/2024/a.pdf",
                 "data": {"base64": "JVBERi0=", "mime_type": "application/pdf", "filename": "a.pdf"}},
                {"property": "thumbnail", "type": "image", "key_prefix": "/contracts/2024/a.jpg",
                 "data": {"filename": "https://cdn.example.com/drop/contracts/2024/a.jpg",
                          "mime_type": "image/jpeg"}}
            ],
            "metadata": {"category": "contracts"},
            "skip_duplicates": true
        }),
        Contract::CreateObject => create_object(),
        Contract::CreateObjectsBatch => json!({"objects": [create_object(), create_object()]}),
        Contract::CreateUpload => json!({
            "filename": "clip.mp4",
            "content_type": "video/mp4",
            "file_size_bytes": 5,
            "file_hash": HASH,
            "create_object_on_confirm": false,
            "skip_duplicates": true
        }),
        Contract::ConfirmUpload => json!({"etag": format!("\"{HASH}\""), "file_size_bytes": 5}),
    }
}

/// Dialect `objects`: metadata at the root, a URL string, an inline blob, an
/// upload reference and a JSON value.
fn create_object() -> Value {
    json!({
        "key_prefix": "/clips/a",
        "category": "clips",
        "year": 2024,
        "blobs": [
            {"property": "video", "type": "video", "key_prefix": "/clips/a/v.mp4",
             "upload_id": "upl_0123456789abcdef"},
            {"property": "poster", "type": "image", "key_prefix": "/clips/a/p.jpg",
             "data": "https://cdn.example.com/drop/clips/a/p.jpg"},
            {"property": "caption", "type": "text", "key_prefix": null,
             "data": {"base64": "aGVsbG8=", "mime_type": "text/plain", "filename": "c.txt"}},
            {"property": "meta", "type": "object", "data": {"fps": 25}}
        ],
        "skip_duplicates": false
    })
}

/// `daemon_body(contract)` with `change` applied.
fn changed(contract: Contract, change: fn(&mut Value)) -> Value {
    let mut body = daemon_body(contract);
    change(&mut body);
    body
}

fn pointers(contract: Contract, body: &Value) -> Vec<String> {
    match contract.check(body) {
        Ok(()) => Vec::new(),
        Err(violations) => violations.into_iter().map(|v| v.pointer).collect(),
    }
}

#[rstest]
#[case::objects_create(Contract::ObjectsCreate)]
#[case::create_object(Contract::CreateObject)]
#[case::batch(Contract::CreateObjectsBatch)]
#[case::upload(Contract::CreateUpload)]
#[case::confirm(Contract::ConfirmUpload)]
fn what_the_daemon_sends_passes(#[case] contract: Contract) {
    assert_eq!(contract.check(&daemon_body(contract)), Ok(()));
}

#[rstest]
// objects-create
#[case::oc_empty_blobs(Contract::ObjectsCreate, json!({"blobs": []}))]
#[case::oc_metadata_anything(Contract::ObjectsCreate, json!({"blobs": [], "metadata": {"a": [1, {"b": null}]}}))]
#[case::oc_null_key_prefix(Contract::ObjectsCreate, json!({"blobs": [], "key_prefix": null}))]
#[case::oc_json_array(Contract::ObjectsCreate, json!({"blobs": [{"property": "p", "type": "json", "data": [1, 2]}]}))]
#[case::oc_empty_base64(Contract::ObjectsCreate, json!({"blobs": [{"property": "p", "type": "pdf", "data": {"base64": "", "mime_type": "application/pdf", "filename": "e.pdf"}}]}))]
#[case::oc_property_100(Contract::ObjectsCreate, json!({"blobs": [{"property": "p".repeat(100), "type": "pdf", "data": "x"}]}))]
// objects
#[case::co_empty(Contract::CreateObject, json!({}))]
#[case::co_data_null_with_upload(Contract::CreateObject, json!({"blobs": [{"property": "v", "type": "video", "data": null, "upload_id": "upl_a"}]}))]
#[case::co_upload_null_with_data(Contract::CreateObject, json!({"blobs": [{"property": "v", "type": "video", "data": "https://x/v.mp4", "upload_id": null}]}))]
#[case::co_url_dict(Contract::CreateObject, json!({"blobs": [{"property": "v", "type": "video", "data": {"url": "https://x/v.mp4"}}]}))]
#[case::co_root_metadata_named_like_nothing(Contract::CreateObject, json!({"metadata": {"nested": true}, "0": 1}))]
// batch
#[case::batch_empty(Contract::CreateObjectsBatch, json!({"objects": []}))]
#[case::batch_100(Contract::CreateObjectsBatch, json!({"objects": vec![json!({}); 100]}))]
// uploads
#[case::upload_minimal(Contract::CreateUpload, json!({"filename": "a", "content_type": "a/b"}))]
#[case::upload_nulls(Contract::CreateUpload, json!({"filename": "a", "content_type": "a/b", "file_size_bytes": null, "file_hash": null, "blob_property": null}))]
#[case::upload_all(Contract::CreateUpload, json!({"filename": "a", "content_type": "a/b", "presigned_url_expiration": 86400, "metadata": {}, "object_metadata": {"t": 1}, "blob_property": "a_1", "blob_type": "VIDEO"}))]
#[case::confirm_empty(Contract::ConfirmUpload, json!({}))]
#[case::confirm_no_put(Contract::ConfirmUpload, json!({"etag": null, "file_size_bytes": 1}))]
fn more_bodies_that_pass(#[case] contract: Contract, #[case] body: Value) {
    assert_eq!(contract.check(&body), Ok(()), "{body}");
}

#[rstest]
// Missing required fields.
#[case::oc_no_blobs(Contract::ObjectsCreate, json!({"key_prefix": "/a"}), "/blobs")]
#[case::oc_missing_property(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| { b["blobs"][1].as_object_mut().unwrap().remove("property"); }), "/blobs/1/property")]
#[case::oc_missing_data(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| { b["blobs"][0].as_object_mut().unwrap().remove("data"); }), "/blobs/0/data")]
#[case::oc_null_data(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| b["blobs"][0]["data"] = Value::Null), "/blobs/0/data")]
#[case::co_missing_type(Contract::CreateObject, changed(Contract::CreateObject, |b| { b["blobs"][0].as_object_mut().unwrap().remove("type"); }), "/blobs/0/type")]
#[case::batch_missing_objects(Contract::CreateObjectsBatch, json!({}), "/objects")]
#[case::upload_missing_filename(Contract::CreateUpload, changed(Contract::CreateUpload, |b| { b.as_object_mut().unwrap().remove("filename"); }), "/filename")]
#[case::upload_missing_content_type(Contract::CreateUpload, changed(Contract::CreateUpload, |b| { b.as_object_mut().unwrap().remove("content_type"); }), "/content_type")]
// Upper-case or unknown type.
#[case::oc_upper_case_type(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| b["blobs"][2]["type"] = json!("PDF")), "/blobs/2/type")]
#[case::co_upper_case_type(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][0]["type"] = json!("VIDEO")), "/blobs/0/type")]
#[case::co_json_is_docs_only(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][3]["type"] = json!("json")), "/blobs/3/type")]
#[case::batch_upper_case_type(Contract::CreateObjectsBatch, changed(Contract::CreateObjectsBatch, |b| b["objects"][1]["blobs"][1]["type"] = json!("IMAGE")), "/objects/1/blobs/1/type")]
// property of 101 characters, or none.
#[case::oc_property_101(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| b["blobs"][0]["property"] = json!("p".repeat(101))), "/blobs/0/property")]
#[case::co_property_101(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][0]["property"] = json!("é".repeat(101))), "/blobs/0/property")]
#[case::co_property_empty(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][0]["property"] = json!("")), "/blobs/0/property")]
// Bad upload ids, and data/upload_id together or neither.
#[case::co_bad_upload_id(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][0]["upload_id"] = json!("upload_1")), "/blobs/0/upload_id")]
#[case::co_upload_id_bad_char(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][0]["upload_id"] = json!("upl_a.b")), "/blobs/0/upload_id")]
#[case::co_data_and_upload(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][0]["data"] = json!("x")), "/blobs/0")]
#[case::co_no_data_no_upload(Contract::CreateObject, changed(Contract::CreateObject, |b| { b["blobs"][1].as_object_mut().unwrap().remove("data"); }), "/blobs/1")]
// File data in a form the docs do not describe.
#[case::oc_base64_not_base64(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| b["blobs"][2]["data"]["base64"] = json!("not base64!")), "/blobs/2/data")]
#[case::co_file_as_number(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][1]["data"] = json!(42)), "/blobs/1/data")]
#[case::co_base64_not_base64(Contract::CreateObject, changed(Contract::CreateObject, |b| b["blobs"][2]["data"] = json!({"base64": "a b", "url": "https://x/c.txt"})), "/blobs/2/data")]
#[case::oc_url_dict_is_objects_only(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| b["blobs"][3]["data"] = json!({"url": "https://x/a.jpg"})), "/blobs/3/data")]
// Root fields of the wrong type.
#[case::oc_metadata_list(Contract::ObjectsCreate, changed(Contract::ObjectsCreate, |b| b["metadata"] = json!([])), "/metadata")]
#[case::co_skip_duplicates_null(Contract::CreateObject, changed(Contract::CreateObject, |b| b["skip_duplicates"] = Value::Null), "/skip_duplicates")]
#[case::co_not_an_object(Contract::CreateObject, json!("body"), "")]
// 101 objects in a batch.
#[case::batch_101(Contract::CreateObjectsBatch, json!({"objects": vec![json!({}); 101]}), "/objects")]
// Bad file hashes and sizes.
#[case::upload_upper_case_hash(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["file_hash"] = json!(HASH.to_uppercase())), "/file_hash")]
#[case::upload_short_hash(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["file_hash"] = json!(&HASH[1..])), "/file_hash")]
#[case::upload_long_hash(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["file_hash"] = json!(format!("{HASH}0"))), "/file_hash")]
#[case::upload_zero_size(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["file_size_bytes"] = json!(0)), "/file_size_bytes")]
#[case::upload_filename_256(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["filename"] = json!("f".repeat(256))), "/filename")]
#[case::upload_expiry_59(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["presigned_url_expiration"] = json!(59)), "/presigned_url_expiration")]
#[case::upload_flag_string(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["create_object_on_confirm"] = json!("false")), "/create_object_on_confirm")]
#[case::upload_bad_property(Contract::CreateUpload, changed(Contract::CreateUpload, |b| b["blob_property"] = json!("my-video")), "/blob_property")]
#[case::confirm_zero_size(Contract::ConfirmUpload, json!({"file_size_bytes": 0}), "/file_size_bytes")]
#[case::confirm_etag_number(Contract::ConfirmUpload, json!({"etag": 5}), "/etag")]
fn bodies_that_fail_name_the_pointer(
    #[case] contract: Contract,
    #[case] body: Value,
    #[case] pointer: &str,
) {
    assert_eq!(
        pointers(contract, &body),
        vec![pointer.to_string()],
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// Comparison with the published openapi.json.
// ---------------------------------------------------------------------------

/// The published spec, or `None` (with a note on stderr) when it is absent.
/// Read once: the file is large.
fn published_spec() -> Option<&'static Value> {
    static SPEC: OnceLock<Option<Value>> = OnceLock::new();
    SPEC.get_or_init(read_published_spec).as_ref()
}

fn read_published_spec() -> Option<Value> {
    let path = std::env::var_os("MIXPEEK_OPENAPI").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/mixpeek/openapi.json"),
        PathBuf::from,
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).expect("openapi.json is JSON")),
        Err(e) => {
            eprintln!(
                "skipping the comparison with Mixpeek's openapi.json: cannot read {} ({e}); \
                 set MIXPEEK_OPENAPI=/path/to/openapi.json to run it",
                path.display()
            );
            None
        }
    }
}

/// The keywords whose values must equal the published ones when the project
/// states them.
const COMPARED: [&str; 8] = [
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
];

/// Walks a project schema and the published one side by side, collecting
/// every disagreement.
struct Comparison<'a> {
    /// Project schemas by file name.
    project: &'a BTreeMap<String, Value>,
    openapi: &'a Value,
    problems: Vec<String>,
}

/// A published node with its `$ref`s followed and a nullable `anyOf` folded
/// into its one non-null alternative.
struct Published<'a> {
    node: &'a Value,
    /// The component reached by the last `$ref`, e.g. `#/components/schemas/X`.
    component: Option<String>,
    /// JSON types the node allows (over all alternatives), `null` included.
    types: Vec<String>,
}

impl<'a> Comparison<'a> {
    fn published(&self, mut node: &'a Value, mut component: Option<String>) -> Published<'a> {
        while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            component = Some(reference.to_string());
            node = self
                .openapi
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("openapi.json has no {reference}"));
        }
        let Some(alternatives) = node.get("anyOf").and_then(Value::as_array) else {
            let types = type_list(node);
            return Published {
                node,
                component,
                types,
            };
        };
        let resolved: Vec<Published<'a>> = alternatives
            .iter()
            .map(|alternative| self.published(alternative, component.clone()))
            .collect();
        let mut types: Vec<String> = resolved.iter().flat_map(|p| p.types.clone()).collect();
        types.sort();
        types.dedup();
        let non_null: Vec<&Published<'a>> =
            resolved.iter().filter(|p| p.types != ["null"]).collect();
        match non_null.as_slice() {
            [only] => Published {
                node: only.node,
                component: only.component.clone(),
                types,
            },
            // Several real alternatives (a blob's `data`): nothing to fold into.
            _ => Published {
                node,
                component,
                types,
            },
        }
    }

    /// The project node `node` of document `document`, `$ref`s followed (to
    /// `#/$defs/...` in the same file or to another contract file).
    fn project(&self, mut document: String, mut node: &'a Value) -> (String, &'a Value) {
        while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
            if !file.is_empty() {
                document = file.to_string();
            }
            node = self
                .project
                .get(&document)
                .and_then(|schema| schema.pointer(pointer))
                .unwrap_or_else(|| panic!("{document} has no {reference}"));
        }
        (document, node)
    }

    fn compare(
        &mut self,
        at: &str,
        document: String,
        ours: &'a Value,
        theirs: &'a Value,
        component: Option<String>,
    ) {
        let (document, ours) = self.project(document, ours);
        let theirs = self.published(theirs, component);

        if let Some(mirrored) = ours.get("x-openapi").and_then(Value::as_str)
            && theirs.component.as_deref() != Some(mirrored)
        {
            self.problems.push(format!(
                "{at}: mirrors {mirrored} but stands where openapi has {:?}",
                theirs.component
            ));
        }

        let our_types = type_list(ours);
        if !our_types.is_empty() && our_types != theirs.types {
            self.problems.push(format!(
                "{at}: type {our_types:?}, published {:?}",
                theirs.types
            ));
        }

        for keyword in COMPARED {
            let Some(value) = ours.get(keyword) else {
                continue;
            };
            match theirs.node.get(keyword) {
                Some(published) if same(value, published) => {}
                published => self.problems.push(format!(
                    "{at}: {keyword} {value}, published {}",
                    published.map_or("nothing".to_string(), Value::to_string)
                )),
            }
        }

        if ours.get("properties").is_some() || theirs.node.get("properties").is_some() {
            let (our_required, their_required) = (required(ours), required(theirs.node));
            if our_required != their_required {
                self.problems.push(format!(
                    "{at}: required {our_required:?}, published {their_required:?}"
                ));
            }
            let (our_extra, their_extra) = (extras_allowed(ours), extras_allowed(theirs.node));
            if our_extra != their_extra {
                self.problems.push(format!(
                    "{at}: other properties allowed: {our_extra}, published {their_extra}"
                ));
            }
        }

        if let Some(properties) = ours.get("properties").and_then(Value::as_object) {
            for (name, schema) in properties {
                let here = format!("{at}/properties/{name}");
                match theirs.node.pointer(&format!("/properties/{name}")) {
                    Some(published) => {
                        self.compare(&here, document.clone(), schema, published, None);
                    }
                    None => self
                        .problems
                        .push(format!("{here}: not a property in openapi")),
                }
            }
        }

        if let Some(items) = ours.get("items") {
            match theirs.node.get("items") {
                Some(published) => {
                    self.compare(&format!("{at}/items"), document, items, published, None);
                }
                None => self.problems.push(format!("{at}/items: openapi has none")),
            }
        }
    }
}

/// The JSON types a node's `type` allows, sorted.
fn type_list(node: &Value) -> Vec<String> {
    let mut types: Vec<String> = match node.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    types.sort();
    types
}

fn required(node: &Value) -> Vec<String> {
    let mut names: Vec<String> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Absent `additionalProperties` allows other properties, in JSON Schema and
/// in openapi's pydantic models (which ignore them) alike.
fn extras_allowed(node: &Value) -> bool {
    node.get("additionalProperties") != Some(&Value::Bool(false))
}

/// Equal JSON values, numbers compared by value (openapi writes `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Every disagreement between `project` (schemas by file name) and openapi.
fn disagreements(project: &BTreeMap<String, Value>, openapi: &Value) -> Vec<String> {
    let mut comparison = Comparison {
        project,
        openapi,
        problems: Vec::new(),
    };
    for contract in Contract::ALL {
        let Some(component) = contract.openapi_ref() else {
            continue;
        };
        let published = openapi
            .pointer(component.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("openapi.json has no {component}"));
        let name = contract.file_name().to_string();
        let ours = &project[&name];
        comparison.compare(
            &name,
            name.clone(),
            ours,
            published,
            Some(component.to_string()),
        );
    }
    comparison.problems
}

fn project_schemas() -> BTreeMap<String, Value> {
    Contract::ALL
        .into_iter()
        .map(|c| (c.file_name().to_string(), c.schema().clone()))
        .collect()
}

#[test]
fn the_contract_agrees_with_the_published_openapi() {
    let Some(openapi) = published_spec() else {
        return;
    };
    assert_eq!(
        openapi["info"]["version"],
        json!("0.81"),
        "a new spec: review the contract"
    );
    let problems = disagreements(&project_schemas(), openapi);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[rstest]
#[case::longer_property("create-object.schema.json", "/$defs/blob/properties/property/maxLength", json!(99), "maxLength 99")]
#[case::another_enum("create-object.schema.json", "/$defs/field_type/enum/0", json!("STRING"), "enum")]
#[case::looser_pattern("create-upload.schema.json", "/properties/file_hash/pattern", json!("^[a-fA-F0-9]{64}$"), "pattern")]
#[case::bigger_batch("create-objects-batch.schema.json", "/properties/objects/maxItems", json!(1000), "maxItems 1000")]
#[case::lower_minimum("confirm-upload.schema.json", "/properties/file_size_bytes/minimum", json!(0), "minimum 0")]
#[case::required_dropped("create-object.schema.json", "/$defs/blob/required", json!(["property"]), "required")]
#[case::invented_property("create-upload.schema.json", "/properties/checksum", json!({"type": "string"}), "not a property")]
#[case::not_nullable("create-upload.schema.json", "/properties/file_size_bytes/type", json!("integer"), r#"type ["integer"], published ["integer", "null"]"#)]
#[case::extras_forbidden("create-object.schema.json", "/additionalProperties", json!(false), "other properties")]
fn the_comparison_notices_a_drift(
    #[case] file: &str,
    #[case] pointer: &str,
    #[case] value: Value,
    #[case] expected: &str,
) {
    let Some(openapi) = published_spec() else {
        return;
    };
    let mut project = project_schemas();
    let schema = project.get_mut(file).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match schema.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => panic!("cannot change {other}"),
    }
    let problems = disagreements(&project, openapi);
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "{expected:?} not among {problems:#?}"
    );
}
