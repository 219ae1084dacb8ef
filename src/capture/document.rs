//! Pure: building captured documents as JSON bytes.
//!
//! Documents have the Go connector's shape: one property per column present in the change
//! (omitted values — unchanged TOAST, columns absent from a key-only old tuple — are left
//! out, so the collection's merge reduction keeps the stored value), plus `_meta` with `op`,
//! `source` and, for updates with an old tuple, `before`. Properties are in bytewise order of
//! their names with `_meta` in its sorted place, so output is deterministic. Columns named
//! `_meta`, `_meta_`, ... get one more underscore ([`property_name`]), so no column collides
//! with `_meta`. Values arrive already encoded as JSON by [`crate::value`]; this module only
//! places bytes, so it never builds a `serde_json::Value` on the hot path.

use std::borrow::Cow;
use std::ops::Range;

use crate::discovery::schema::{property_name, META_PROPERTY};

/// Column order and pre-escaped property names of one relation.
#[derive(Debug, Clone, Default)]
pub struct DocumentLayout {
    /// Column indices sorted by name.
    order: Vec<usize>,
    /// `"name":` for each column index, JSON-escaped once.
    keys: Vec<Vec<u8>>,
    /// How many of the sorted columns come before `_meta`.
    meta_position: usize,
}

impl DocumentLayout {
    /// The layout of a relation with these column names. Columns become properties through
    /// [`property_name`] (a column `_meta` is written as `_meta_`), the one mapping that
    /// discovery's schemas and keys use too.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let properties: Vec<Cow<'_, str>> = names.iter().map(|name| property_name(name.as_ref())).collect();
        let mut order: Vec<usize> = (0..properties.len()).collect();
        order.sort_by(|a, b| properties[*a].as_bytes().cmp(properties[*b].as_bytes()));
        let keys = properties
            .iter()
            .map(|name| {
                let mut key = serde_json::to_vec(name.as_ref()).unwrap_or_else(|_| b"\"\"".to_vec());
                key.push(b':');
                key
            })
            .collect();
        let meta_position = order.iter().take_while(|i| properties[**i].as_bytes() < META_PROPERTY.as_bytes()).count();
        DocumentLayout { order, keys, meta_position }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Encoded values of one row: a shared byte buffer and a slot per column (`None` = omitted).
#[derive(Debug, Clone, Default)]
pub struct EncodedRow {
    pub bytes: Vec<u8>,
    pub slots: Vec<Option<Range<usize>>>,
}

impl EncodedRow {
    pub fn reset(&mut self, columns: usize) {
        self.bytes.clear();
        self.slots.clear();
        self.slots.resize(columns, None);
    }

    /// Record that column `index` holds the bytes written since `start`.
    pub fn finish_value(&mut self, index: usize, start: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some(start..self.bytes.len());
        }
    }

    pub fn set_null(&mut self, index: usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b"null");
        self.finish_value(index, start);
    }

    pub fn value(&self, index: usize) -> Option<&[u8]> {
        self.slots.get(index)?.as_ref().and_then(|r| self.bytes.get(r.clone()))
    }
}

/// Operation of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// `_meta.source`.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub ts_ms: Option<i64>,
    pub schema: &'a str,
    pub table: &'a str,
    pub snapshot: bool,
    pub loc: [i64; 3],
    pub txid: Option<u32>,
    pub tag: Option<&'a str>,
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Writes the `_meta` member of a document.
type MetaWriter<'a> = &'a dyn Fn(&mut Vec<u8>);

fn write_object(out: &mut Vec<u8>, layout: &DocumentLayout, row: &EncodedRow, meta: Option<MetaWriter<'_>>) {
    out.push(b'{');
    let mut first = true;
    let mut separator = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    for (position, index) in layout.order.iter().enumerate() {
        if position == layout.meta_position {
            if let Some(meta) = meta {
                separator(out);
                meta(out);
            }
        }
        if let Some(value) = row.value(*index) {
            separator(out);
            out.extend_from_slice(&layout.keys[*index]);
            out.extend_from_slice(value);
        }
    }
    if layout.meta_position >= layout.order.len() {
        if let Some(meta) = meta {
            separator(out);
            meta(out);
        }
    }
    out.push(b'}');
}

/// Append one document whose `_meta` member (`"_meta":{...}`) is written by `meta`, with the
/// columns placed as [`write_document`] places them (used by the batch capture, whose
/// metadata has another shape).
pub fn write_document_with_meta(out: &mut Vec<u8>, layout: &DocumentLayout, row: &EncodedRow, meta: MetaWriter<'_>) {
    write_object(out, layout, row, Some(meta));
}

/// Append one document to `out`.
pub fn write_document(
    out: &mut Vec<u8>,
    layout: &DocumentLayout,
    row: &EncodedRow,
    op: Op,
    source: &Source<'_>,
    before: Option<(&DocumentLayout, &EncodedRow)>,
) {
    let meta = |out: &mut Vec<u8>| {
        write_meta_head(out, op, source, before);
        write_location(out, &source.loc);
        write_meta_tail(out, source);
    };
    write_object(out, layout, row, Some(&meta));
}

/// `"_meta":{` up to the location: `before`, `op` and `source` up to `"loc":[`.
fn write_meta_head(out: &mut Vec<u8>, op: Op, source: &Source<'_>, before: Option<(&DocumentLayout, &EncodedRow)>) {
    out.extend_from_slice(b"\"_meta\":{");
    if let Some((before_layout, before_row)) = before {
        out.extend_from_slice(b"\"before\":");
        write_object(out, before_layout, before_row, None);
        out.push(b',');
    }
    out.extend_from_slice(b"\"op\":\"");
    out.extend_from_slice(op.code().as_bytes());
    out.extend_from_slice(b"\",\"source\":{");
    if let Some(ts) = source.ts_ms {
        out.extend_from_slice(b"\"ts_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"schema\":");
    write_json_string(out, source.schema);
    if source.snapshot {
        out.extend_from_slice(b",\"snapshot\":true");
    }
    out.extend_from_slice(b",\"table\":");
    write_json_string(out, source.table);
    out.extend_from_slice(b",\"loc\":[");
}

/// The location's three numbers, comma-separated.
fn write_location(out: &mut Vec<u8>, loc: &[i64]) {
    let mut number = itoa::Buffer::new();
    for (i, loc) in loc.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(number.format(*loc).as_bytes());
    }
}

/// After the location: `]`, `txid`, `tag`, and the ends of `source` and `_meta`.
fn write_meta_tail(out: &mut Vec<u8>, source: &Source<'_>) {
    out.push(b']');
    if let Some(txid) = source.txid {
        out.extend_from_slice(b",\"txid\":");
        out.extend_from_slice(itoa::Buffer::new().format(txid).as_bytes());
    }
    if let Some(tag) = source.tag {
        out.extend_from_slice(b",\"tag\":");
        write_json_string(out, tag);
    }
    out.extend_from_slice(b"}}");
}

/// The `_meta` of many documents whose metadata differ only in the middle number of `loc`
/// (a backfilled row's offset): written once, so a row's document costs two copies and
/// one number instead of escaping the schema and table names again.
#[derive(Debug, Clone)]
pub struct RowMeta {
    /// Up to and including `"loc":[<loc[0]>,`.
    head: Vec<u8>,
    /// From `,<loc[2]>]` to the end of `_meta`.
    tail: Vec<u8>,
}

impl RowMeta {
    /// The metadata of `source` (whose `loc[1]` is ignored) for documents without `before`.
    pub fn new(op: Op, source: &Source<'_>) -> Self {
        let mut head = Vec::with_capacity(96);
        write_meta_head(&mut head, op, source, None);
        write_location(&mut head, &source.loc[..1]);
        head.push(b',');
        let mut tail = vec![b','];
        write_location(&mut tail, &source.loc[2..]);
        write_meta_tail(&mut tail, source);
        RowMeta { head, tail }
    }

    /// Append one document of `row` whose `loc[1]` is `offset`: the same bytes as
    /// [`write_document`] with that location.
    pub fn write_document(&self, out: &mut Vec<u8>, layout: &DocumentLayout, row: &EncodedRow, offset: i64) {
        write_object(out, layout, row, Some(&|out: &mut Vec<u8>| self.write_meta(out, offset)));
    }

    /// Append one document whose `loc[1]` is `offset` and whose every column has a value,
    /// written by `value` (given the column's index in the layout's names) straight into
    /// `out` in the document's property order: the same bytes as [`RowMeta::write_document`]
    /// of the row those values make, without building the row first. On error `out` is
    /// left as it was.
    pub fn try_write_document<E>(
        &self,
        out: &mut Vec<u8>,
        layout: &DocumentLayout,
        offset: i64,
        mut value: impl FnMut(&mut Vec<u8>, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = out.len();
        out.push(b'{');
        for (position, index) in layout.order.iter().enumerate() {
            if position == layout.meta_position {
                if position > 0 {
                    out.push(b',');
                }
                self.write_meta(out, offset);
            }
            if position > 0 || layout.meta_position == 0 {
                out.push(b',');
            }
            out.extend_from_slice(&layout.keys[*index]);
            if let Err(err) = value(out, *index) {
                out.truncate(mark);
                return Err(err);
            }
        }
        if layout.meta_position >= layout.order.len() {
            if !layout.order.is_empty() {
                out.push(b',');
            }
            self.write_meta(out, offset);
        }
        out.push(b'}');
        Ok(())
    }

    fn write_meta(&self, out: &mut Vec<u8>, offset: i64) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        out.extend_from_slice(&self.tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> EncodedRow {
        let mut row = EncodedRow::default();
        row.reset(values.len());
        for (i, value) in values.iter().enumerate() {
            if let Some(value) = value {
                let start = row.bytes.len();
                row.bytes.extend_from_slice(value.as_bytes());
                row.finish_value(i, start);
            }
        }
        row
    }

    fn source() -> Source<'static> {
        Source { ts_ms: None, schema: "test", table: "t", snapshot: true, loc: [-1, 0, 0], txid: None, tag: None }
    }

    #[test]
    fn documents_sort_properties_with_meta_in_place_and_skip_omitted() {
        let layout = DocumentLayout::new(&["id", "Zeta", "data", "omitted"]);
        let row = row(&[Some("1"), Some("true"), Some("\"A\""), None]);
        let mut out = Vec::new();
        write_document(&mut out, &layout, &row, Op::Create, &source(), None);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"Zeta":true,"_meta":{"op":"c","source":{"schema":"test","snapshot":true,"table":"t","loc":[-1,0,0]}},"data":"A","id":1}"#
        );
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }

    #[test]
    fn updates_carry_before_and_replication_source_fields() {
        let layout = DocumentLayout::new(&["id", "v"]);
        let new = row(&[Some("5"), Some("\"x\"")]);
        let old = row(&[Some("1"), None]);
        let source = Source {
            ts_ms: Some(1700),
            schema: "s",
            table: "q\"t",
            snapshot: false,
            loc: [1, 2, 3],
            txid: Some(9),
            tag: Some("tg"),
        };
        let mut out = Vec::new();
        write_document(&mut out, &layout, &new, Op::Update, &source, Some((&layout, &old)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"_meta":{"before":{"id":1},"op":"u","source":{"ts_ms":1700,"schema":"s","table":"q\"t","loc":[1,2,3],"txid":9,"tag":"tg"}},"id":5,"v":"x"}"#
        );
    }

    #[test]
    fn columns_named_like_meta_never_collide_with_it() {
        let layout = DocumentLayout::new(&["_meta_", "id", "_meta", "_meta__x"]);
        let mut out = Vec::new();
        let values = row(&[Some("2"), Some("7"), Some("1"), Some("3")]);
        write_document(&mut out, &layout, &values, Op::Update, &source(), Some((&layout, &values)));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"_meta":{"before":{"_meta_":1,"_meta__":2,"_meta__x":3,"id":7},"op":"u","source":{"schema":"test","snapshot":true,"table":"t","loc":[-1,0,0]}},"_meta_":1,"_meta__":2,"_meta__x":3,"id":7}"#
        );
    }

    #[test]
    fn meta_goes_last_when_every_name_sorts_before_it() {
        let layout = DocumentLayout::new(&["A", "B"]);
        let mut out = Vec::new();
        write_document(&mut out, &layout, &row(&[Some("1"), Some("2")]), Op::Delete, &source(), None);
        assert!(String::from_utf8(out).unwrap().starts_with(r#"{"A":1,"B":2,"_meta":{"op":"d""#));
    }

    /// A backfill writes its rows' metadata from a template; the documents must be the
    /// very bytes `write_document` writes, for every shape of source and of layout.
    #[test]
    fn row_meta_writes_the_same_documents_as_write_document() {
        // `_meta` in the middle, last, first (and a column named like it).
        let layouts = [
            DocumentLayout::new(&["id", "Zeta", "data"]),
            DocumentLayout::new(&["A", "B", "C"]),
            DocumentLayout::new(&["x", "y", "_meta"]),
        ];
        let values = row(&[Some("1"), None, Some("\"x\"")]);
        let sources = [
            source(),
            Source {
                ts_ms: Some(-5),
                schema: "sch\"ema\u{1}",
                table: "ünï/~",
                snapshot: false,
                loc: [i64::MIN, 0, i64::MAX],
                txid: Some(u32::MAX),
                tag: Some("t\\g"),
            },
            Source { tag: Some(""), txid: None, snapshot: true, ..source() },
        ];
        for layout in &layouts {
            for source in &sources {
                for op in [Op::Create, Op::Update, Op::Delete] {
                    let meta = RowMeta::new(op, source);
                    for offset in [0, 1, -1, 1_234_567, i64::MAX, i64::MIN] {
                        let mut expected = Vec::new();
                        let located = Source { loc: [source.loc[0], offset, source.loc[2]], ..source.clone() };
                        write_document(&mut expected, layout, &values, op, &located, None);
                        let mut written = b"prefix".to_vec();
                        meta.write_document(&mut written, layout, &values, offset);
                        assert_eq!(
                            String::from_utf8_lossy(&written[6..]),
                            String::from_utf8_lossy(&expected),
                            "{source:?} {op:?} {offset}"
                        );
                        // Values written in place: the same document, where every value is present.
                        let complete = row(&[Some("1"), Some("null"), Some("\"x\"")]);
                        let mut expected = Vec::new();
                        write_document(&mut expected, layout, &complete, op, &located, None);
                        let mut written = b"prefix".to_vec();
                        let result: Result<(), ()> = meta.try_write_document(&mut written, layout, offset, |out, i| {
                            out.extend_from_slice(complete.value(i).unwrap());
                            Ok(())
                        });
                        result.unwrap();
                        assert_eq!(
                            String::from_utf8_lossy(&written[6..]),
                            String::from_utf8_lossy(&expected),
                            "in place: {source:?} {op:?} {offset}"
                        );
                        // A value that fails leaves `out` as it was.
                        let mut failed = b"prefix".to_vec();
                        let result = meta.try_write_document(&mut failed, layout, offset, |out, i| {
                            out.extend_from_slice(b"partial");
                            if i == 2 {
                                Err(i)
                            } else {
                                Ok(())
                            }
                        });
                        assert_eq!((result, failed.as_slice()), (Err(2), &b"prefix"[..]));
                    }
                }
            }
        }
    }
}
