//! Array literals → flattened JSON arrays.
//!
//! PostgreSQL prints arrays as nested braces with an optional dimension prefix:
//!
//! ```text
//!   {1,2,3}   {{1,2},{3,4}}   {}   [0:2]={1,2,3}   {"a b","c\"d",NULL,"NULL"}
//!   {(3,4),(1,2);(5,6),(1,1)}          box uses ';' as its delimiter
//! ```
//!
//! The Go connector's default (and only compatible) shape is the flattened list of
//! elements in storage order, so `{{1,2},{3,4}}` becomes `[1,2,3,4]` and the dimensions
//! are dropped. Elements are read with `array_in`'s rules — double quotes, backslash
//! escapes, unquoted `NULL` (any case) for a null element, whitespace around unquoted
//! elements ignored — and each one is encoded by its own type's encoder, so arrays of
//! enums, domains, composites, ranges and JSON work like their scalars.
//!
//! Reading is one forward pass with a depth counter; nothing recurses on the text.
//!
//! The Go connector's other shapes, by its flags (see [`ValueFormats`]):
//! `multidimensional_arrays` keeps the nesting (`[[1,2],[3,4]]`), and without
//! `flatten_arrays` an array is `{"dimensions": [2,2], "elements": [1,2,3,4]}` (an empty
//! array has no dimensions, as PostgreSQL's has none).

use std::ops::Range;

use super::encode::encode_value_with;
use super::error::{ValueError, ValueErrorKind};
use super::{PgType, ValueFormats};

/// The delimiter between elements (`pg_type.typdelim`): `;` for `box` (whose own text
/// contains commas), `:` for PostGIS `geometry` and `geography`, `,` for everything else.
/// Discovery resolves arrays of any other type with an unusual delimiter to the catch-all.
fn delimiter_of(element: &PgType) -> u8 {
    let mut ty = element;
    while let PgType::Domain { base, .. } = ty {
        ty = base;
    }
    match ty {
        PgType::Builtin { name, .. } if name == "box" => b';',
        PgType::Extension { name } if name == "geometry" || name == "geography" => b':',
        _ => b',',
    }
}

/// Whether arrays of `element` are read with `delimiter`, which discovery checks against
/// the catalog's `typdelim` before trusting the array encoder with a type.
pub fn array_delimiter_known(element: &PgType, delimiter: char) -> bool {
    char::from(delimiter_of(element)) == delimiter
}

/// What the reader saw last, which decides what may come next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    /// `{`: next an element, `{` or `}`.
    Open,
    /// An element or `}`: next the delimiter or `}`.
    Item,
    /// The delimiter: next an element or `{`.
    Delimiter,
}

/// How the array is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The elements in storage order.
    Flat,
    /// Nested JSON arrays, one per pair of braces.
    Nested,
    /// `{"dimensions": [...], "elements": [...]}`.
    Dimensioned,
}

/// Appends the elements of array literal `text` as JSON, in the shape `formats` asks for
/// (flattened by default).
pub(crate) fn encode_array(
    element: &PgType,
    formats: &ValueFormats,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let shape = match (formats.multidimensional_arrays, formats.flatten_arrays) {
        (true, _) => Shape::Nested,
        (false, true) => Shape::Flat,
        (false, false) => Shape::Dimensioned,
    };
    if shape != Shape::Dimensioned {
        return write_array(element, formats, shape, text, out).map(|_| ());
    }
    let mut elements = Vec::new();
    let dimensions = write_array(element, formats, shape, text, &mut elements)?;
    out.extend_from_slice(b"{\"dimensions\":[");
    let listed: Vec<String> = dimensions.iter().map(usize::to_string).collect();
    out.extend_from_slice(listed.join(",").as_bytes());
    out.extend_from_slice(b"],\"elements\":");
    out.extend_from_slice(&elements);
    out.push(b'}');
    Ok(())
}

/// Writes the elements (flat or nested) and returns the array's dimensions: the number of
/// children of the first sub-array at each depth (none for an empty array).
fn write_array(
    element: &PgType,
    formats: &ValueFormats,
    shape: Shape,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<Vec<usize>, ValueError> {
    // The array's type is only materialized for a message.
    let fail = |kind| ValueError::new(&PgType::Array { element: Box::new(element.clone()) }, text, kind);
    let syntax = |offset, expected| fail(ValueErrorKind::Syntax { offset, expected });
    let truncated = |expected| fail(ValueErrorKind::Truncated { expected });

    let delimiter = delimiter_of(element);
    let mut pos = skip_dimensions(text).map_err(&fail)?;
    pos = skip_whitespace(text, pos);
    match text.get(pos) {
        Some(b'{') => pos += 1,
        Some(_) => return Err(syntax(pos, "'{'")),
        None => return Err(truncated("'{'")),
    }

    out.push(b'[');
    let mut depth: usize = 1;
    let mut last = Last::Open;
    let mut need_comma = false;
    let mut scratch = Vec::new();
    // Children counted at each depth, and the dimensions recorded when the first
    // sub-array of a depth closes.
    let mut children: Vec<usize> = vec![0, 0];
    let mut dimensions: Vec<Option<usize>> = Vec::new();
    let mut any_element = false;
    while depth > 0 {
        pos = skip_whitespace(text, pos);
        let Some(&b) = text.get(pos) else {
            return Err(truncated("'}'"));
        };
        match (b, last) {
            (b'{', Last::Open | Last::Delimiter) => {
                children[depth] += 1;
                depth += 1;
                if children.len() <= depth {
                    children.push(0);
                }
                children[depth] = 0;
                if shape == Shape::Nested {
                    if need_comma {
                        out.push(b',');
                    }
                    out.push(b'[');
                    need_comma = false;
                }
                pos += 1;
                last = Last::Open;
            }
            (b'}', Last::Open | Last::Item) => {
                if dimensions.len() < depth {
                    dimensions.resize(depth, None);
                }
                dimensions[depth - 1].get_or_insert(children[depth]);
                depth -= 1;
                if shape == Shape::Nested && depth > 0 {
                    out.push(b']');
                    need_comma = true;
                }
                pos += 1;
                last = Last::Item;
            }
            (b, Last::Item) if b == delimiter => {
                pos += 1;
                last = Last::Delimiter;
            }
            (b'}', Last::Delimiter) => return Err(syntax(pos, "an array element")),
            (_, Last::Open | Last::Delimiter) => {
                let (item, next) = read_element(text, pos, delimiter, &mut scratch).map_err(&fail)?;
                if need_comma {
                    out.push(b',');
                }
                need_comma = true;
                any_element = true;
                children[depth] += 1;
                match item {
                    Item::Null => out.extend_from_slice(b"null"),
                    Item::Text(range) => encode_value_with(formats, element, &text[range], out)?,
                    Item::Unescaped => encode_value_with(formats, element, &scratch, out)?,
                }
                pos = next;
                last = Last::Item;
            }
            (_, Last::Item) => return Err(syntax(pos, "a delimiter or '}'")),
        }
    }
    pos = skip_whitespace(text, pos);
    if pos != text.len() {
        return Err(syntax(pos, "end of array"));
    }
    out.push(b']');
    if !any_element {
        return Ok(Vec::new());
    }
    Ok(dimensions.into_iter().map(|d| d.unwrap_or(0)).collect())
}

fn skip_whitespace(text: &[u8], mut pos: usize) -> usize {
    while text.get(pos).is_some_and(u8::is_ascii_whitespace) {
        pos += 1;
    }
    pos
}

/// Skips a dimension prefix such as `[0:2]=` or `[1:1][-2:-1]=`, checking its syntax.
fn skip_dimensions(text: &[u8]) -> Result<usize, ValueErrorKind> {
    let mut pos = 0;
    if text.first() != Some(&b'[') {
        return Ok(0);
    }
    while text.get(pos) == Some(&b'[') {
        pos += 1;
        let start = pos;
        while text.get(pos).is_some_and(|b| b.is_ascii_digit() || matches!(b, b':' | b'-' | b'+')) {
            pos += 1;
        }
        match text.get(pos) {
            Some(b']') if pos > start => pos += 1,
            Some(_) => return Err(ValueErrorKind::Syntax { offset: pos, expected: "a dimension like [1:3]" }),
            None => return Err(ValueErrorKind::Truncated { expected: "']'" }),
        }
    }
    match text.get(pos) {
        Some(b'=') => Ok(pos + 1),
        Some(_) => Err(ValueErrorKind::Syntax { offset: pos, expected: "'=' after the dimensions" }),
        None => Err(ValueErrorKind::Truncated { expected: "'='" }),
    }
}

/// Where an element's bytes are.
enum Item {
    /// An unquoted `NULL`.
    Null,
    /// A slice of the text, used as is.
    Text(Range<usize>),
    /// The scratch buffer, holding the element with its escapes removed.
    Unescaped,
}

/// Reads one element at `start` (not blank); returns where its bytes are and the
/// position after it.
fn read_element(
    text: &[u8],
    start: usize,
    delimiter: u8,
    scratch: &mut Vec<u8>,
) -> Result<(Item, usize), ValueErrorKind> {
    scratch.clear();
    if text[start] == b'"' {
        let mut pos = start + 1;
        let mut run_start = pos;
        let mut escaped = false;
        loop {
            match text.get(pos) {
                None => return Err(ValueErrorKind::Truncated { expected: "a closing '\"'" }),
                Some(b'"') => break,
                Some(b'\\') => {
                    scratch.extend_from_slice(&text[run_start..pos]);
                    let Some(&next) = text.get(pos + 1) else {
                        return Err(ValueErrorKind::Truncated { expected: "an escaped character" });
                    };
                    scratch.push(next);
                    escaped = true;
                    pos += 2;
                    run_start = pos;
                }
                Some(_) => pos += 1,
            }
        }
        let item = if escaped {
            scratch.extend_from_slice(&text[run_start..pos]);
            Item::Unescaped
        } else {
            Item::Text(start + 1..pos)
        };
        return Ok((item, pos + 1));
    }

    // Unquoted: up to the delimiter or '}', with backslash escapes, trailing blanks
    // trimmed (leading ones were skipped by the caller).
    let mut pos = start;
    let mut escaped = false;
    let mut run_start = pos;
    // End of the element in `scratch` terms: after its last non-blank or escaped byte.
    let mut significant_end = 0;
    loop {
        match text.get(pos) {
            None => return Err(ValueErrorKind::Truncated { expected: "'}'" }),
            Some(&b) if b == delimiter || b == b'}' => break,
            Some(b'{' | b'"') => {
                return Err(ValueErrorKind::Syntax { offset: pos, expected: "a quoted element" });
            }
            Some(b'\\') => {
                scratch.extend_from_slice(&text[run_start..pos]);
                let Some(&next) = text.get(pos + 1) else {
                    return Err(ValueErrorKind::Truncated { expected: "an escaped character" });
                };
                scratch.push(next);
                significant_end = scratch.len();
                escaped = true;
                pos += 2;
                run_start = pos;
            }
            Some(b) => {
                if !b.is_ascii_whitespace() {
                    significant_end = scratch.len() + (pos - run_start) + 1;
                }
                pos += 1;
            }
        }
    }
    if !escaped {
        let end = start + significant_end;
        let token = &text[start..end];
        if token.eq_ignore_ascii_case(b"NULL") {
            return Ok((Item::Null, pos));
        }
        if token.is_empty() {
            return Err(ValueErrorKind::Syntax { offset: start, expected: "an array element" });
        }
        return Ok((Item::Text(start..end), pos));
    }
    scratch.extend_from_slice(&text[run_start..pos]);
    scratch.truncate(significant_end);
    Ok((Item::Unescaped, pos))
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    fn encode(text: &str, formats: &ValueFormats) -> String {
        let int4 = PgType::Builtin { name: "int4".into(), typmod: -1 };
        let mut out = Vec::new();
        encode_array(&int4, formats, text.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn go_array_shapes_follow_its_flags() {
        let flat = ValueFormats::go();
        let nested = ValueFormats { multidimensional_arrays: true, ..flat };
        let objects = ValueFormats { flatten_arrays: false, ..flat };
        assert_eq!(encode("{{1,2},{3,4}}", &flat), "[1,2,3,4]");
        assert_eq!(encode("{{1,2},{3,4}}", &nested), "[[1,2],[3,4]]");
        assert_eq!(encode("{{1,2},{3,NULL}}", &objects), r#"{"dimensions":[2,2],"elements":[1,2,3,null]}"#);
        assert_eq!(encode("{1,2,3}", &nested), "[1,2,3]");
        assert_eq!(encode("{1,2,3}", &objects), r#"{"dimensions":[3],"elements":[1,2,3]}"#);
        assert_eq!(encode("{}", &objects), r#"{"dimensions":[],"elements":[]}"#);
        assert_eq!(encode("{}", &nested), "[]");
        assert_eq!(encode("[0:1]={{{1},{2}},{{3},{4}}}", &objects), r#"{"dimensions":[2,2,1],"elements":[1,2,3,4]}"#);
        assert_eq!(encode("{{{1},{2}},{{3},{4}}}", &nested), "[[[1],[2]],[[3],[4]]]");
    }
}
