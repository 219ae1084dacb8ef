//! Extension types with a JSON structure: `hstore` and pgvector's `vector`/`halfvec`.
//!
//! Other extension types (`citext`, `ltree`, `lquery`, PostGIS `geometry`/`geography` as
//! hex EWKB, pgvector `sparsevec`) are plain strings and handled with the built-ins.

use super::encode::{check_utf8, write_go_number, write_json_string, write_json_string_content};
use super::error::ValueErrorKind;

/// A key or value of an hstore: a range of the text, or of the unescaped buffer.
#[derive(Clone, Debug)]
enum Token {
    Text(std::ops::Range<usize>),
    Unescaped(std::ops::Range<usize>),
}

/// `"a"=>"1", "b c"=>NULL` → `{"a":"1","b c":null}`, keys in byte order.
///
/// hstore keys are unique; should a key repeat anyway, the first one is kept, as
/// `hstore_in` does.
pub(crate) fn encode_hstore(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    check_utf8(text)?;
    let mut unescaped = Vec::new();
    let mut pairs: Vec<(Token, Option<Token>)> = Vec::new();
    let mut pos = skip_blanks(text, 0);
    while pos < text.len() {
        let (key, next) = read_token(text, pos, &mut unescaped, b'=')?
            .ok_or(ValueErrorKind::Syntax { offset: pos, expected: "an hstore key" })?;
        pos = skip_blanks(text, next);
        if !text[pos..].starts_with(b"=>") {
            return Err(syntax_or_truncated(text, pos, "'=>'"));
        }
        pos = skip_blanks(text, pos + 2);
        let (value, next) = match read_token(text, pos, &mut unescaped, b',')? {
            Some((token, next)) => (Some(token), next),
            None => return Err(syntax_or_truncated(text, pos, "an hstore value")),
        };
        let value = match value {
            Some(Token::Text(range)) if text[range.clone()].eq_ignore_ascii_case(b"NULL") => None,
            other => other,
        };
        pairs.push((key, value));
        pos = skip_blanks(text, next);
        if pos < text.len() {
            if text[pos] != b',' {
                return Err(ValueErrorKind::Syntax { offset: pos, expected: "',' between pairs" });
            }
            pos = skip_blanks(text, pos + 1);
            if pos == text.len() {
                return Err(ValueErrorKind::Truncated { expected: "an hstore key" });
            }
        }
    }

    let bytes = |token: &Token| -> &[u8] {
        match token {
            Token::Text(range) => &text[range.clone()],
            Token::Unescaped(range) => &unescaped[range.clone()],
        }
    };
    pairs.sort_by(|a, b| bytes(&a.0).cmp(bytes(&b.0)));
    pairs.dedup_by(|later, earlier| bytes(&later.0) == bytes(&earlier.0));
    out.push(b'{');
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, bytes(key));
        out.push(b':');
        match value {
            Some(value) => {
                out.push(b'"');
                write_json_string_content(out, bytes(value));
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    Ok(())
}

fn skip_blanks(text: &[u8], mut pos: usize) -> usize {
    while text.get(pos).is_some_and(u8::is_ascii_whitespace) {
        pos += 1;
    }
    pos
}

fn syntax_or_truncated(text: &[u8], pos: usize, expected: &'static str) -> ValueErrorKind {
    if pos >= text.len() {
        ValueErrorKind::Truncated { expected }
    } else {
        ValueErrorKind::Syntax { offset: pos, expected }
    }
}

/// Reads a quoted (`"k\"ey"`) or unquoted (`key`, up to a blank or `stop`) token.
fn read_token(
    text: &[u8],
    start: usize,
    unescaped: &mut Vec<u8>,
    stop: u8,
) -> Result<Option<(Token, usize)>, ValueErrorKind> {
    match text.get(start) {
        None => Ok(None),
        Some(b'"') => {
            let buffer_start = unescaped.len();
            let mut pos = start + 1;
            let mut escaped = false;
            loop {
                match text.get(pos) {
                    None => return Err(ValueErrorKind::Truncated { expected: "a closing '\"'" }),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        let Some(&next) = text.get(pos + 1) else {
                            return Err(ValueErrorKind::Truncated { expected: "an escaped character" });
                        };
                        if !escaped {
                            unescaped.extend_from_slice(&text[start + 1..pos]);
                            escaped = true;
                        }
                        unescaped.push(next);
                        pos += 2;
                    }
                    Some(&b) => {
                        if escaped {
                            unescaped.push(b);
                        }
                        pos += 1;
                    }
                }
            }
            let token =
                if escaped { Token::Unescaped(buffer_start..unescaped.len()) } else { Token::Text(start + 1..pos) };
            Ok(Some((token, pos + 1)))
        }
        Some(_) => {
            let mut pos = start;
            while text.get(pos).is_some_and(|&b| !b.is_ascii_whitespace() && b != stop && b != b'=' && b != b'"') {
                pos += 1;
            }
            if pos == start {
                return Ok(None);
            }
            Ok(Some((Token::Text(start..pos), pos)))
        }
    }
}

/// pgvector `[1,2.5,-3e-05]` → `[1,2.5,-3e-5]`: each element as a `float4` JSON number.
/// pgvector rejects NaN and infinities, so they are errors here too.
pub(crate) fn encode_vector(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let inner = match (text.first(), text.last()) {
        (Some(b'['), Some(b']')) if text.len() >= 2 => &text[1..text.len() - 1],
        (Some(b'['), _) => return Err(ValueErrorKind::Truncated { expected: "']'" }),
        _ => return Err(ValueErrorKind::Syntax { offset: 0, expected: "'['" }),
    };
    out.push(b'[');
    if !inner.iter().all(u8::is_ascii_whitespace) {
        let mut offset = 1;
        for (i, element) in inner.split(|&b| b == b',').enumerate() {
            let trimmed = element.trim_ascii();
            let value = std::str::from_utf8(trimmed)
                .ok()
                .filter(|s| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')))
                .and_then(|s| s.parse::<f32>().ok())
                .filter(|v| v.is_finite())
                .ok_or(ValueErrorKind::Syntax { offset, expected: "a finite number" })?;
            if i > 0 {
                out.push(b',');
            }
            write_go_number(out, value);
            offset += element.len() + 1;
        }
    }
    out.push(b']');
    Ok(())
}
