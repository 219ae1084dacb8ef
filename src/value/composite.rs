//! Row literals → JSON objects.
//!
//! A composite value prints as `(1,"b c",,ok,"{1,2}")`: fields in declaration order,
//! separated by commas, quoted when needed, with `""` and `\x` both standing for a
//! literal character inside quotes. An empty unquoted field is NULL; `""` is the empty
//! string. Each field is encoded by its own type's encoder and the object's keys are
//! written in byte order of the field names, like every other object this connector
//! emits (the Go connector captured the raw literal as a string instead).

use std::ops::Range;

use super::encode::{encode_value_with, write_json_string};
use super::error::{ValueError, ValueErrorKind};
use super::{PgType, ValueFormats};

/// Where a field's bytes are.
enum Field {
    /// An empty, unquoted field.
    Null,
    /// A slice of the text, used as is (no quotes or escapes in it).
    Text(Range<usize>),
    /// A slice of the unescaped buffer.
    Unescaped(Range<usize>),
}

/// Appends the row literal `text` of composite type `ty` as a JSON object.
pub(crate) fn encode_composite(
    ty: &PgType,
    fields: &[(String, PgType)],
    formats: &ValueFormats,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let fail = |kind| ValueError::new(ty, text, kind);
    let mut unescaped = Vec::new();
    let values = split_row(text, &mut unescaped).map_err(fail)?;
    // A type without attributes prints as "()", which reads as one NULL field.
    let values = if fields.is_empty() && matches!(values.as_slice(), [Field::Null]) { Vec::new() } else { values };
    if values.len() != fields.len() {
        return Err(fail(ValueErrorKind::FieldCount { expected: fields.len(), found: values.len() }));
    }

    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by(|&a, &b| fields[a].0.as_bytes().cmp(fields[b].0.as_bytes()));
    out.push(b'{');
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let (name, field_type) = &fields[i];
        write_json_string(out, name.as_bytes());
        out.push(b':');
        match &values[i] {
            Field::Null => out.extend_from_slice(b"null"),
            Field::Text(range) => encode_value_with(formats, field_type, &text[range.clone()], out)?,
            Field::Unescaped(range) => encode_value_with(formats, field_type, &unescaped[range.clone()], out)?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// Splits `(a,"b c",)` into its fields, unescaping quoted ones into `unescaped`.
fn split_row(text: &[u8], unescaped: &mut Vec<u8>) -> Result<Vec<Field>, ValueErrorKind> {
    match text.first() {
        Some(b'(') => {}
        Some(_) => return Err(ValueErrorKind::Syntax { offset: 0, expected: "'('" }),
        None => return Err(ValueErrorKind::Truncated { expected: "'('" }),
    }
    let mut fields = Vec::new();
    let mut pos = 1;
    loop {
        let start = pos;
        let mut quoted_anywhere = false;
        let mut in_quotes = false;
        let mut plain = true;
        let buffer_start = unescaped.len();
        loop {
            let Some(&b) = text.get(pos) else {
                return Err(ValueErrorKind::Truncated { expected: "')'" });
            };
            if in_quotes {
                match b {
                    b'"' if text.get(pos + 1) == Some(&b'"') => {
                        unescaped.push(b'"');
                        pos += 2;
                    }
                    b'"' => {
                        in_quotes = false;
                        pos += 1;
                    }
                    b'\\' => {
                        let Some(&next) = text.get(pos + 1) else {
                            return Err(ValueErrorKind::Truncated { expected: "an escaped character" });
                        };
                        unescaped.push(next);
                        pos += 2;
                    }
                    _ => {
                        unescaped.push(b);
                        pos += 1;
                    }
                }
                continue;
            }
            match b {
                b',' | b')' => break,
                b'"' => {
                    in_quotes = true;
                    quoted_anywhere = true;
                    plain = false;
                    pos += 1;
                }
                b'\\' => {
                    let Some(&next) = text.get(pos + 1) else {
                        return Err(ValueErrorKind::Truncated { expected: "an escaped character" });
                    };
                    unescaped.push(next);
                    plain = false;
                    pos += 2;
                }
                _ => {
                    unescaped.push(b);
                    pos += 1;
                }
            }
        }
        let field = if pos == start && !quoted_anywhere {
            Field::Null
        } else if plain {
            // Nothing was unescaped: use the text itself and drop the copy.
            unescaped.truncate(buffer_start);
            Field::Text(start..pos)
        } else {
            Field::Unescaped(buffer_start..unescaped.len())
        };
        fields.push(field);
        let terminator = text[pos];
        pos += 1;
        if terminator == b')' {
            break;
        }
    }
    if pos != text.len() {
        return Err(ValueErrorKind::Syntax { offset: pos, expected: "end of row" });
    }
    Ok(fields)
}
