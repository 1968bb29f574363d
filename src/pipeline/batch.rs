//! Batch create (dialect `objects`, SPEC §7): which due objects travel
//! together, and what a batch answer means for each of them.
//!
//! Inputs: the due objects (bucket, size of their stored request, whether
//! they can go in a batch at all), and a batch answer: a 2xx body with
//! `succeeded[]` and `failed[{object_index, error, error_type}]`, or a
//! refusal of the whole batch.
//!
//! Outputs: groups of at most [`MAX_OBJECTS`] objects of one bucket; one
//! [`Verdict`] per object of a batch.
//!
//! Decisions where SPEC is silent:
//! - A batch holds at most [`MAX_BATCH_BYTES`] of stored requests (one object
//!   bigger than that goes alone): a batch of 100 objects with inline files
//!   would otherwise be a body of hundreds of MiB.
//! - A failed object is retried when its `error_type` names a transient
//!   condition (internal, timeout, unavailable, rate limit, conflict while
//!   locked); any other type is a dead letter holding the server's message,
//!   like a 4xx for a single create: it is kept and `retry` puts it back.
//! - `succeeded[]` carries no index: entries are matched to objects by
//!   `key_prefix` when the answer has it, else in order among the objects
//!   not listed in `failed[]`.
//! - A 2xx whose body cannot be read says nothing about which objects were
//!   taken; they are all retried (duplicates are bounded and
//!   `skip_duplicates` absorbs them; a lost object would not be).
//! - A whole batch refused with FastAPI's 422 `detail` names the objects at
//!   fault (`loc: ["body", "objects", i, ...]`): those are dead letters with
//!   their messages, and the others are sent again without them. A refusal
//!   that names no object sends every object of the batch on its own, so
//!   each gets its own verdict.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::retry::error_message;

/// `CreateObjectsBatchRequest.objects` holds at most this many objects.
pub const MAX_OBJECTS: usize = 100;
/// Most bytes of stored requests one batch carries.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// One due object, as far as batching cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub bucket: &'a str,
    /// Size of the stored request (an upper bound of its share of the body).
    pub bytes: usize,
    /// Whether it may travel in a batch (dialect `objects`, no uploads
    /// pending, not singled out after a refused batch).
    pub batchable: bool,
}

/// Splits due objects into sends: each inner list is the indices of one
/// request, in the order given. Batchable objects of one bucket share
/// requests of at most `max_objects` and [`MAX_BATCH_BYTES`]; the others go
/// alone.
pub fn plan(candidates: &[Candidate<'_>], max_objects: usize) -> Vec<Vec<usize>> {
    let max_objects = max_objects.clamp(1, MAX_OBJECTS);
    let mut sends: Vec<Vec<usize>> = Vec::new();
    // Open batch per bucket: (index into `sends`, bytes so far).
    let mut open: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if !c.batchable {
            sends.push(vec![i]);
            continue;
        }
        match open.get_mut(c.bucket) {
            Some((slot, bytes))
                if sends[*slot].len() < max_objects && *bytes + c.bytes <= MAX_BATCH_BYTES =>
            {
                sends[*slot].push(i);
                *bytes += c.bytes;
            }
            _ => {
                open.insert(c.bucket, (sends.len(), c.bytes));
                sends.push(vec![i]);
            }
        }
    }
    sends
}

/// What became of one object of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered {
        object_id: Option<String>,
        task_id: Option<String>,
    },
    Retry {
        reason: String,
    },
    DeadLetter {
        reason: String,
    },
}

/// The part of a batch answer the verdicts need. An answer echoes every
/// object it created, blobs and all, and is as large as the request; read
/// as a `Value` tree it cost several times that in memory. Here the echo
/// is skipped while parsing, and only these fields are kept.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    succeeded: Vec<Entry>,
    failed: Vec<Entry>,
}

/// One entry of `succeeded[]` or `failed[]`: its few fields as found
/// (any JSON type), or anything else, which then counts as no fields.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Fields(EntryFields),
    Other(serde::de::IgnoredAny),
}

#[derive(serde::Deserialize, Default)]
struct EntryFields {
    key_prefix: Option<Value>,
    object_id: Option<Value>,
    task_id: Option<Value>,
    object_index: Option<Value>,
    error: Option<Value>,
    error_type: Option<Value>,
}

impl Entry {
    fn get(&self, name: &str) -> Option<&Value> {
        let Entry::Fields(f) = self else { return None };
        match name {
            "key_prefix" => f.key_prefix.as_ref(),
            "object_id" => f.object_id.as_ref(),
            "task_id" => f.task_id.as_ref(),
            "object_index" => f.object_index.as_ref(),
            "error" => f.error.as_ref(),
            "error_type" => f.error_type.as_ref(),
            _ => None,
        }
    }
}

/// The verdicts of a 2xx batch answer for objects with these `key_prefixes`
/// (in request order).
pub fn verdicts(body: &[u8], key_prefixes: &[&str]) -> Vec<Verdict> {
    let n = key_prefixes.len();
    let Ok(BatchAnswer { succeeded, failed }) = serde_json::from_slice::<BatchAnswer>(body) else {
        return vec![unreadable(); n];
    };
    let mut out: Vec<Option<Verdict>> = vec![None; n];
    for failure in &failed {
        let Some(index) = failure
            .get("object_index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < n)
        else {
            continue;
        };
        let error = failure
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        let error_type = failure
            .get("error_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let reason = if error_type.is_empty() {
            format!("refused in a batch: {error}")
        } else {
            format!("refused in a batch: {error_type}: {error}")
        };
        out[index] = Some(if is_transient(error_type) {
            Verdict::Retry { reason }
        } else {
            Verdict::DeadLetter { reason }
        });
    }
    // Match successes by key_prefix first; what is left goes in order.
    let mut by_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, kp) in key_prefixes.iter().enumerate() {
        if out[i].is_none() {
            by_prefix.entry(kp).or_default().push(i);
        }
    }
    let mut unmatched = Vec::new();
    for entry in &succeeded {
        let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
        let verdict = Verdict::Delivered {
            object_id: field("object_id"),
            task_id: field("task_id"),
        };
        let slot = entry
            .get("key_prefix")
            .and_then(Value::as_str)
            .and_then(|kp| by_prefix.get_mut(kp))
            .and_then(|list| (!list.is_empty()).then(|| list.remove(0)));
        match slot {
            Some(i) => out[i] = Some(verdict),
            None => unmatched.push(verdict),
        }
    }
    let mut unmatched = unmatched.into_iter();
    for slot in &mut out {
        if slot.is_none() {
            // Neither failed nor listed: the 2xx took it (an answer that
            // leaves `succeeded[]` short still accepted the batch).
            *slot = Some(unmatched.next().unwrap_or(Verdict::Delivered {
                object_id: None,
                task_id: None,
            }));
        }
    }
    out.into_iter().flatten().collect()
}

fn unreadable() -> Verdict {
    Verdict::Retry {
        reason: "the batch answer (2xx) could not be read; sending again".to_owned(),
    }
}

/// Whether a batch `error_type` names a condition that may pass.
fn is_transient(error_type: &str) -> bool {
    let t = error_type.to_ascii_lowercase();
    [
        "internal",
        "timeout",
        "unavailable",
        "ratelimit",
        "rate_limit",
        "toomanyrequests",
        "throttl",
        "transient",
        "temporar",
        "locked",
    ]
    .iter()
    .any(|word| t.contains(word))
}

/// The objects a refused batch names: index → the messages about it. Read
/// from FastAPI's `detail` locations `["body", "objects", i, ...]`, and from
/// a Mixpeek envelope whose `details` hold the batch answer (`failed[]`,
/// when every object failed). Empty when the refusal names none.
pub fn refused_objects(body: &[u8]) -> BTreeMap<usize, String> {
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let root = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let failed = root
        .pointer("/error/details/failed")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for failure in failed {
        let Some(index) = failure
            .get("object_index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
        else {
            continue;
        };
        let text = |name: &str| failure.get(name).and_then(Value::as_str).unwrap_or("");
        let message = match (text("error_type"), text("error")) {
            ("", error) => error.to_owned(),
            (kind, error) => format!("{kind}: {error}"),
        };
        out.entry(index).or_default().push(message);
    }
    let details = root
        .get("detail")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for detail in &details {
        let Some(loc) = detail.get("loc").and_then(Value::as_array) else {
            continue;
        };
        let index = match loc.as_slice() {
            [Value::String(b), Value::String(o), Value::Number(i), ..]
                if b == "body" && o == "objects" =>
            {
                i.as_u64().and_then(|i| usize::try_from(i).ok())
            }
            _ => None,
        };
        let Some(index) = index else { continue };
        let one = Value::Object(serde_json::Map::from_iter([(
            "detail".to_owned(),
            Value::Array(vec![detail.clone()]),
        )]));
        let message = error_message(one.to_string().as_bytes());
        out.entry(index).or_default().push(message);
    }
    out.into_iter()
        .map(|(i, messages)| (i, messages.join("; ")))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(bucket: &str, bytes: usize, batchable: bool) -> Candidate<'_> {
        Candidate {
            bucket,
            bytes,
            batchable,
        }
    }

    #[test]
    fn batches_split_by_bucket_count_and_bytes() {
        let mut items = vec![c("a", 10, true); 250];
        items.insert(3, c("b", 10, true));
        items.insert(5, c("a", 10, false));
        let sends = plan(&items, 100);
        let sizes: Vec<usize> = sends.iter().map(Vec::len).collect();
        // a: 100, b: 1, the unbatchable one alone, a: 100, a: 50.
        assert_eq!(sizes, vec![100, 1, 1, 100, 50]);
        assert!(sends[1] == vec![3] && sends[2] == vec![5]);
        // Every index exactly once.
        let mut all: Vec<usize> = sends.concat();
        all.sort_unstable();
        assert_eq!(all, (0..252).collect::<Vec<_>>());

        let big = MAX_BATCH_BYTES / 2 + 1;
        let sends = plan(
            &[c("a", big, true), c("a", big, true), c("a", 1, true)],
            100,
        );
        assert_eq!(sends, vec![vec![0], vec![1, 2]]);
        // A configured cap below 100 holds; 0 still sends.
        assert_eq!(plan(&vec![c("a", 1, true); 5], 2).len(), 3);
        assert_eq!(plan(&vec![c("a", 1, true); 2], 0).len(), 2);
    }

    #[test]
    fn verdicts_match_successes_and_classify_failures() {
        let body = json!({
            "succeeded": [
                {"object_id": "obj_3", "key_prefix": "/d", "task_id": "task_3"},
                {"object_id": "obj_1", "key_prefix": "/a"}
            ],
            "failed": [
                {"object_index": 1, "error": "Missing required field 'title'", "error_type": "ValidationError"},
                {"object_index": 2, "error": "worker died", "error_type": "InternalError"},
                {"object_index": 99, "error": "out of range", "error_type": "ValidationError"}
            ],
            "total_requested": 4, "succeeded_count": 2, "failed_count": 2
        });
        let got = verdicts(body.to_string().as_bytes(), &["/a", "/b", "/c", "/d"]);
        assert_eq!(
            got[0],
            Verdict::Delivered {
                object_id: Some("obj_1".into()),
                task_id: None
            }
        );
        assert!(
            matches!(&got[1], Verdict::DeadLetter { reason } if reason.contains("ValidationError: Missing required field 'title'")),
            "{got:?}"
        );
        assert!(matches!(&got[2], Verdict::Retry { reason } if reason.contains("worker died")));
        assert_eq!(
            got[3],
            Verdict::Delivered {
                object_id: Some("obj_3".into()),
                task_id: Some("task_3".into())
            }
        );
    }

    #[test]
    fn successes_without_key_prefix_go_in_order() {
        let body = json!({
            "succeeded": [{"object_id": "x"}, {"object_id": "y"}],
            "failed": [{"object_index": 0, "error": "bad", "error_type": "ValidationError"}]
        });
        let got = verdicts(body.to_string().as_bytes(), &["/a", "/b", "/c"]);
        let ids: Vec<Option<&str>> = got
            .iter()
            .map(|v| match v {
                Verdict::Delivered { object_id, .. } => object_id.as_deref(),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![None, Some("x"), Some("y")]);
    }

    #[test]
    fn an_unreadable_answer_retries_everything() {
        for body in [&b"<html>"[..], b"{}", b"{\"succeeded\": []}"] {
            let got = verdicts(body, &["/a", "/b"]);
            assert!(
                got.iter().all(|v| matches!(v, Verdict::Retry { .. })),
                "{got:?}"
            );
        }
    }

    #[test]
    fn a_refused_batch_names_its_culprits() {
        let body = json!({"detail": [
            {"loc": ["body", "objects", 7, "blobs", 0, "type"], "msg": "Input should be 'image'", "type": "enum"},
            {"loc": ["body", "objects", 7, "key_prefix"], "msg": "bad prefix", "type": "value_error"},
            {"loc": ["body", "objects", 2, "blobs", 0, "property"], "msg": "too long", "type": "string_too_long"},
            {"loc": ["body", "objects"], "msg": "too many", "type": "too_long"}
        ]});
        let got = refused_objects(body.to_string().as_bytes());
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2, 7]);
        assert!(got[&7].contains("Input should be 'image'") && got[&7].contains("bad prefix"));
        assert!(
            got[&2].contains("body.objects.2.blobs.0.property"),
            "{}",
            got[&2]
        );
        assert!(
            refused_objects(br#"{"error": {"message": "no", "type": "BadRequest"}}"#).is_empty()
        );
        // Every object failed: the envelope carries the batch answer.
        let all_failed = json!({"error": {"message": "No object was created", "type": "ValidationError",
        "details": {"succeeded": [], "failed": [
            {"object_index": 1, "error": "Blob property 'x' is not defined", "error_type": "ValidationError"}
        ]}}});
        let got = refused_objects(all_failed.to_string().as_bytes());
        assert_eq!(got[&1], "ValidationError: Blob property 'x' is not defined");
    }
}
