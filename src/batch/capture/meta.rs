//! Pure: the `_meta` object of a batch document, byte for byte in the Go connector's
//! field order (`polled`, `index`, `row_id`, `op`, `source`), so documents of both
//! connectors compare equal.
//!
//! Invariants: the output is the JSON text of one `"_meta":{...}` member, every string
//! JSON-escaped; `op` appears only when it can be told (a collection keyed by row id), and
//! `source` names only its non-empty parts.

use crate::batch::config::BatchResource;

/// `_meta` of one document.
pub(super) struct Meta<'a> {
    pub(super) polled: &'a str,
    pub(super) index: i64,
    pub(super) row_id: i64,
    pub(super) op: Option<&'static str>,
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `"_meta":{"polled":...,"index":...,"row_id":...,"op":...,"source":{...}}`, in the Go
/// connector's field order.
pub(super) fn write_meta(out: &mut Vec<u8>, meta: &Meta<'_>, resource: &BatchResource, tag: &str) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"\"_meta\":{\"polled\":");
    write_json_string(out, meta.polled);
    out.extend_from_slice(b",\"index\":");
    out.extend_from_slice(number.format(meta.index).as_bytes());
    out.extend_from_slice(b",\"row_id\":");
    out.extend_from_slice(number.format(meta.row_id).as_bytes());
    if let Some(op) = meta.op {
        out.extend_from_slice(b",\"op\":");
        write_json_string(out, op);
    }
    out.extend_from_slice(b",\"source\":{\"resource\":");
    write_json_string(out, &resource.name);
    for (key, value) in [("schema", resource.schema.as_str()), ("table", resource.table.as_str()), ("tag", tag)] {
        if !value.is_empty() {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            write_json_string(out, value);
        }
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_text(meta: &Meta<'_>, resource: &BatchResource, tag: &str) -> String {
        let mut out = Vec::new();
        write_meta(&mut out, meta, resource, tag);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn metadata_has_the_go_shape() {
        let resource = BatchResource { name: "r".into(), schema: "s".into(), table: "t".into(), ..Default::default() };
        let meta = Meta { polled: "2024-01-01T00:00:00Z", index: 2, row_id: 7, op: Some("c") };
        assert_eq!(
            meta_text(&meta, &resource, ""),
            r#""_meta":{"polled":"2024-01-01T00:00:00Z","index":2,"row_id":7,"op":"c","source":{"resource":"r","schema":"s","table":"t"}}"#
        );
    }

    #[test]
    fn absent_parts_are_left_out_and_strings_are_escaped() {
        // A template binding has no schema or table; a keyless collection no op.
        let resource = BatchResource { name: "q\"\n".into(), ..Default::default() };
        let meta = Meta { polled: "p", index: -1, row_id: i64::MAX, op: None };
        let text = meta_text(&meta, &resource, "tag\\");
        assert_eq!(
            text,
            r#""_meta":{"polled":"p","index":-1,"row_id":9223372036854775807,"source":{"resource":"q\"\n","tag":"tag\\"}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&format!("{{{text}}}")).unwrap();
        assert_eq!(parsed["_meta"]["source"]["resource"], "q\"\n");
    }
}
