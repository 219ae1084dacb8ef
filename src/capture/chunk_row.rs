//! Pure: the cells of one backfill chunk row → their JSON values.
//!
//! A chunk row holds the texts of some key columns (for the resume key: those not
//! computed from their emitted cell, `backfill::KeyCell`), then every emitted column, each
//! either text (`::text`, whose binary form is its UTF-8 bytes) or the binary send form of
//! a fixed-width built-in type ([`backfill::reads_binary`]). [`RowCodec`]
//! knows which, per column, from the same rule the chunk's SQL was built with; before a
//! chunk's rows are decoded, the result's column types are checked against it
//! ([`RowCodec::check_types`]), since a column retyped under the backfill would otherwise
//! be decoded as the type it had when the table was described.
//!
//! A chunk encodes each cell straight into its document in the output buffer
//! ([`CellCodec::encode`] called by `document::RowMeta::try_write_document`), so once the
//! buffer has grown a backfilled row becomes its document without allocating and without
//! copying its values a second time.

use super::backfill;
#[cfg(test)]
use super::document::EncodedRow;
use crate::discovery::DiscoveredTable;
use crate::value::{self, BinaryCodec, PgType, ValueError, ValueFormats};

/// How one emitted column's cells are read.
#[derive(Clone, Copy, Debug)]
pub(super) enum CellCodec<'a> {
    Text(value::ColumnEncoder<'a>),
    Binary(BinaryCodec, &'a PgType),
}

/// The codecs of a chunk's emitted columns, in result order.
#[derive(Clone, Debug)]
pub(super) struct RowCodec<'a> {
    cells: Vec<CellCodec<'a>>,
}

impl<'a> RowCodec<'a> {
    /// The codecs of `table`'s emitted columns, for a chunk read in binary or not
    /// (`backfill::ReadForm::binary`); a key column's float is a fixed-notation string.
    pub(super) fn new(
        table: &'a DiscoveredTable,
        key_columns: &[String],
        binary: bool,
        formats: &ValueFormats,
    ) -> Self {
        let cells = backfill::emitted_columns(table)
            .into_iter()
            .map(|i| {
                let column = &table.columns[i];
                let is_key = key_columns.contains(&column.name);
                let codec = if binary && backfill::reads_binary(column) {
                    BinaryCodec::for_column(&column.pg_type, column.type_oid, is_key)
                } else {
                    None
                };
                match codec {
                    Some(codec) => CellCodec::Binary(codec, &column.pg_type),
                    None => CellCodec::Text(value::ColumnEncoder::new(&column.pg_type, is_key, formats)),
                }
            })
            .collect();
        RowCodec { cells }
    }

    /// Whether the result's emitted columns (their type OIDs, in order) are of the types
    /// the binary codecs read; the position of the first that is not. Text columns can be
    /// of any type: `::text` always is text.
    pub(super) fn check_types(&self, mut types: impl Iterator<Item = u32>) -> Result<(), usize> {
        for (position, cell) in self.cells.iter().enumerate() {
            let found = types.next();
            if let CellCodec::Binary(codec, _) = cell {
                if found != Some(codec.type_oid()) {
                    return Err(position);
                }
            }
        }
        Ok(())
    }

    /// Encode one row's emitted cells (`None`: NULL) into `encoded` (tests look at each
    /// value; a chunk writes them straight into its documents, `RowMeta::try_write_document`).
    #[cfg(test)]
    fn encode<'c>(
        &self,
        encoded: &mut EncodedRow,
        mut cells: impl Iterator<Item = Option<&'c [u8]>>,
    ) -> Result<(), ValueError> {
        encoded.reset(self.cells.len());
        for (position, codec) in self.cells.iter().enumerate() {
            let start = encoded.bytes.len();
            codec.encode(cells.next().flatten(), &mut encoded.bytes)?;
            encoded.finish_value(position, start);
        }
        Ok(())
    }

    /// The codec of the emitted column at `position`, if there is one.
    pub(super) fn column(&self, position: usize) -> Option<&CellCodec<'a>> {
        self.cells.get(position)
    }
}

impl CellCodec<'_> {
    /// Append the JSON of one cell (`None`: NULL).
    pub(super) fn encode(&self, raw: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), ValueError> {
        match (self, raw) {
            (_, None) => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            (CellCodec::Text(encoder), Some(raw)) => encoder.encode(raw, out),
            (CellCodec::Binary(codec, ty), Some(raw)) => codec.encode(ty, raw, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::document::{DocumentLayout, Op, RowMeta, Source};
    use crate::discovery::Column;

    fn column(name: &str, ty: &str, type_oid: u32) -> Column {
        Column {
            name: name.into(),
            type_oid,
            typmod: -1,
            pg_type: PgType::Builtin { name: ty.into(), typmod: -1 },
            nullable: true,
            generated: false,
            comment: None,
        }
    }

    fn table() -> DiscoveredTable {
        DiscoveredTable {
            oid: 1,
            schema: "s".into(),
            name: "t".into(),
            relkind: 'r',
            is_partition: false,
            published: true,
            columns: vec![
                column("id", "int8", 20),
                column("name", "text", 25),
                column("score", "float8", 701),
                column("at", "timestamptz", 1184),
                column("price", "numeric", 1700),
            ],
            key: vec!["id".into(), "score".into()],
            key_is_unique_index: true,
        }
    }

    /// The bench table's kind of row: binary numbers and timestamps, text and numeric text.
    fn cells() -> [Option<&'static [u8]>; 5] {
        [
            Some(&[0, 0, 0, 0, 0, 0, 0, 42]),
            Some(b"customer \"x\""),
            Some(&[0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]),
            Some(&[0, 0, 0, 0, 0, 0, 0x01, 0xf4]),
            None,
        ]
    }

    #[test]
    fn binary_and_text_cells_make_one_row() {
        let table = table();
        let codec = RowCodec::new(&table, &table.key, true, &ValueFormats::default());
        let mut row = EncodedRow::default();
        codec.encode(&mut row, cells().into_iter()).unwrap();
        let values: Vec<&[u8]> = (0..5).map(|i| row.value(i).unwrap()).collect();
        assert_eq!(
            values,
            [&b"42"[..], b"\"customer \\\"x\\\"\"", b"\"0.1\"", b"\"2000-01-01T00:00:00.0005Z\"", b"null"]
        );
        // The same row read as text.
        let text = RowCodec::new(&table, &table.key, false, &ValueFormats::default());
        let text_cells: [Option<&[u8]>; 5] =
            [Some(b"42"), Some(b"customer \"x\""), Some(b"0.1"), Some(b"2000-01-01 00:00:00.0005+00"), None];
        let mut from_text = EncodedRow::default();
        text.encode(&mut from_text, text_cells.into_iter()).unwrap();
        assert_eq!(from_text.bytes, row.bytes);
    }

    #[test]
    fn result_columns_of_another_type_are_found_before_decoding() {
        let table = table();
        let codec = RowCodec::new(&table, &table.key, true, &ValueFormats::default());
        assert_eq!(codec.check_types([20, 25, 701, 1184, 25].into_iter()), Ok(()));
        // `score` retyped to numeric under the backfill: its cells are not float8.
        assert_eq!(codec.check_types([20, 25, 1700, 1184, 25].into_iter()), Err(2));
        assert_eq!(codec.check_types([20, 25].into_iter()), Err(2));
        // Read as text, any type goes.
        assert_eq!(
            RowCodec::new(&table, &table.key, false, &ValueFormats::default()).check_types([25; 5].into_iter()),
            Ok(())
        );
        // A cell of the wrong length is an error, not a panic.
        let mut row = EncodedRow::default();
        let short: [Option<&[u8]>; 5] = [Some(&[0, 42]), None, None, None, None];
        assert!(codec.encode(&mut row, short.into_iter()).is_err());
    }

    /// As for a change document (`change_plan`): once the buffers have grown, a backfilled
    /// row is encoded and written as its document without allocating.
    #[test]
    fn a_backfilled_row_becomes_its_document_without_allocating_once_buffers_are_warm() {
        let table = table();
        let codec = RowCodec::new(&table, &table.key, true, &ValueFormats::default());
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        let layout = DocumentLayout::new(&names);
        let mut document = Vec::new();
        // As a chunk writes them: the metadata from its template, each value straight into
        // the document.
        let source = Source {
            ts_ms: None,
            schema: &table.schema,
            table: &table.name,
            snapshot: true,
            loc: [-1, 0, 0],
            txid: None,
            tag: None,
        };
        let meta = RowMeta::new(Op::Create, &source);
        let row = cells();
        let mut apply = |offset: i64| {
            document.clear();
            meta.try_write_document(&mut document, &layout, offset, |out, i| {
                codec.column(i).unwrap().encode(row[i], out)
            })
            .unwrap();
        };
        apply(0);
        for offset in 1..10 {
            let (calls, bytes) = crate::value::tests::allocations::during(|| apply(offset));
            assert_eq!((calls, bytes), (0, 0), "allocations for one backfilled row once warm");
        }
        // The document is the one the row's encoded values make.
        let mut encoded = EncodedRow::default();
        codec.encode(&mut encoded, cells().into_iter()).unwrap();
        let mut expected = Vec::new();
        meta.write_document(&mut expected, &layout, &encoded, 9);
        assert_eq!(String::from_utf8_lossy(&document), String::from_utf8_lossy(&expected));
        assert!(document.starts_with(b"{\"_meta\":"), "{}", String::from_utf8_lossy(&document));
    }
}
