//! `json` and `jsonb` text → the embedded JSON value.
//!
//! The text is already JSON (PostgreSQL checked it on input), but it is not always JSON
//! that strict parsers accept: the `json` type stores its input verbatim and allows
//! unpaired UTF-16 surrogate escapes such as `"\ud83d"`, which Rust's `serde_json` and the
//! Flow runtime reject. So the text is re-read rather than trusted:
//!
//! - one forward pass with an explicit container stack (no recursion, so nesting depth is
//!   limited by memory only, as in PostgreSQL);
//! - the grammar is checked (a malformed document is an error, never a corrupt output);
//! - insignificant whitespace is dropped, as Go's `encoding/json` does for raw values;
//! - a high surrogate escape not followed by a low one, and a lone low surrogate escape,
//!   become `\ufffd`; every other byte of strings and numbers is copied unchanged.

use super::encode::check_utf8;
use super::error::ValueErrorKind;

/// What the reader expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Any value.
    Value,
    /// A value or `]` right after `[`.
    FirstElement,
    /// A key or `}` right after `{`.
    FirstKey,
    /// A key after `,` in an object.
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the end of the enclosing container.
    CommaOrEnd,
    /// Nothing but trailing whitespace.
    End,
}

/// Appends the JSON document `text` to `out`, checked and compacted, with unpaired
/// surrogate escapes replaced by `\ufffd`.
pub(crate) fn write_json_text(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    check_utf8(text)?;
    out.reserve(text.len());
    let mut stack: Vec<u8> = Vec::new();
    let mut expect = Expect::Value;
    let mut pos = 0;
    loop {
        while matches!(text.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            pos += 1;
        }
        let Some(&b) = text.get(pos) else {
            return if expect == Expect::End {
                Ok(())
            } else {
                Err(ValueErrorKind::Truncated {
                    expected: "more JSON",
                })
            };
        };
        let syntax = |expected| ValueErrorKind::Syntax {
            offset: pos,
            expected,
        };
        match expect {
            Expect::End => return Err(syntax("end of JSON document")),
            Expect::Colon => {
                if b != b':' {
                    return Err(syntax("':' after an object key"));
                }
                out.push(b':');
                pos += 1;
                expect = Expect::Value;
            }
            Expect::FirstKey | Expect::Key => {
                if b == b'}' && expect == Expect::FirstKey {
                    pos = close(&mut stack, out, pos, &mut expect);
                } else if b == b'"' {
                    pos = copy_string(text, pos, out)?;
                    expect = Expect::Colon;
                } else {
                    return Err(syntax("an object key"));
                }
            }
            Expect::CommaOrEnd => match (stack.last(), b) {
                (Some(b'{'), b',') => {
                    out.push(b',');
                    pos += 1;
                    expect = Expect::Key;
                }
                (Some(b'['), b',') => {
                    out.push(b',');
                    pos += 1;
                    expect = Expect::Value;
                }
                (Some(b'{'), b'}') | (Some(b'['), b']') => {
                    pos = close(&mut stack, out, pos, &mut expect);
                }
                _ => return Err(syntax("',' or the end of the container")),
            },
            Expect::Value | Expect::FirstElement => {
                if b == b']' && expect == Expect::FirstElement {
                    pos = close(&mut stack, out, pos, &mut expect);
                    continue;
                }
                match b {
                    b'{' | b'[' => {
                        stack.push(b);
                        out.push(b);
                        pos += 1;
                        expect = if b == b'{' {
                            Expect::FirstKey
                        } else {
                            Expect::FirstElement
                        };
                        continue;
                    }
                    b'"' => pos = copy_string(text, pos, out)?,
                    b'-' | b'0'..=b'9' => pos = copy_number(text, pos, out)?,
                    b't' | b'f' | b'n' => {
                        let literal: &[u8] = match b {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        if !text[pos..].starts_with(literal) {
                            return Err(syntax("true, false or null"));
                        }
                        out.extend_from_slice(literal);
                        pos += literal.len();
                    }
                    _ => return Err(syntax("a JSON value")),
                }
                expect = after_value(&stack);
            }
        }
    }
}

fn after_value(stack: &[u8]) -> Expect {
    if stack.is_empty() {
        Expect::End
    } else {
        Expect::CommaOrEnd
    }
}

/// Closes the innermost container (the caller checked the bracket matches).
fn close(stack: &mut Vec<u8>, out: &mut Vec<u8>, pos: usize, expect: &mut Expect) -> usize {
    let open = stack.pop().unwrap_or(b'[');
    out.push(if open == b'{' { b'}' } else { b']' });
    *expect = after_value(stack);
    pos + 1
}

/// Four hex digits at `text[at..]`, as a number.
fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let digits = text.get(at..at + 4)?;
    let mut value = 0;
    for &d in digits {
        value = value * 16 + char::from(d).to_digit(16)?;
    }
    Some(value)
}

const REPLACEMENT: &[u8] = b"\\ufffd";

/// Copies the string starting at the `"` at `start`; returns the position after its
/// closing quote. Unescaped runs are copied whole.
fn copy_string(text: &[u8], start: usize, out: &mut Vec<u8>) -> Result<usize, ValueErrorKind> {
    out.push(b'"');
    let mut pos = start + 1;
    let mut run_start = pos;
    loop {
        let Some(&b) = text.get(pos) else {
            return Err(ValueErrorKind::Truncated {
                expected: "the end of a JSON string",
            });
        };
        match b {
            b'"' => {
                out.extend_from_slice(&text[run_start..=pos]);
                return Ok(pos + 1);
            }
            0x00..=0x1f => {
                return Err(ValueErrorKind::Syntax {
                    offset: pos,
                    expected: "an escaped control character",
                });
            }
            b'\\' => {
                out.extend_from_slice(&text[run_start..pos]);
                match text.get(pos + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        out.extend_from_slice(&text[pos..pos + 2]);
                        pos += 2;
                    }
                    Some(b'u') => {
                        let code = hex4(text, pos + 2).ok_or(ValueErrorKind::Syntax {
                            offset: pos,
                            expected: "\\u and four hex digits",
                        })?;
                        let next_is_low = text.get(pos + 6..pos + 8) == Some(b"\\u")
                            && hex4(text, pos + 8)
                                .is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                        match code {
                            0xD800..=0xDBFF if next_is_low => {
                                out.extend_from_slice(&text[pos..pos + 12]);
                                pos += 12;
                            }
                            0xD800..=0xDFFF => {
                                out.extend_from_slice(REPLACEMENT);
                                pos += 6;
                            }
                            _ => {
                                out.extend_from_slice(&text[pos..pos + 6]);
                                pos += 6;
                            }
                        }
                    }
                    Some(_) => {
                        return Err(ValueErrorKind::Syntax {
                            offset: pos,
                            expected: "a valid escape",
                        })
                    }
                    None => {
                        return Err(ValueErrorKind::Truncated {
                            expected: "an escape",
                        })
                    }
                }
                run_start = pos;
            }
            _ => pos += 1,
        }
    }
}

/// Copies the number at `start`, checking `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn copy_number(text: &[u8], start: usize, out: &mut Vec<u8>) -> Result<usize, ValueErrorKind> {
    let digits = |mut pos: usize| {
        let from = pos;
        while matches!(text.get(pos), Some(b'0'..=b'9')) {
            pos += 1;
        }
        (pos, pos - from)
    };
    let fail = |pos: usize| {
        if pos >= text.len() {
            ValueErrorKind::Truncated {
                expected: "a digit",
            }
        } else {
            ValueErrorKind::Syntax {
                offset: pos,
                expected: "a digit",
            }
        }
    };
    let mut pos = start + usize::from(text[start] == b'-');
    let integer_start = pos;
    let (end, count) = digits(pos);
    if count == 0 {
        return Err(fail(pos));
    }
    if count > 1 && text[integer_start] == b'0' {
        return Err(ValueErrorKind::Syntax {
            offset: integer_start,
            expected: "no leading zero",
        });
    }
    pos = end;
    if text.get(pos) == Some(&b'.') {
        let (end, count) = digits(pos + 1);
        if count == 0 {
            return Err(fail(pos + 1));
        }
        pos = end;
    }
    if matches!(text.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(text.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        let (end, count) = digits(pos);
        if count == 0 {
            return Err(fail(pos));
        }
        pos = end;
    }
    out.extend_from_slice(&text[start..pos]);
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str) -> Result<String, ValueErrorKind> {
        let mut out = Vec::new();
        write_json_text(text.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn documents_are_compacted_without_changing_values() {
        assert_eq!(
            rewrite(r#"{"a" : 1, "b": [1, 2.50, "x y"], "c": {}}"#).unwrap(),
            r#"{"a":1,"b":[1,2.50,"x y"],"c":{}}"#
        );
        assert_eq!(
            rewrite(" [1e5, -0.0, \"\\u0000\", true, false, null] ").unwrap(),
            r#"[1e5,-0.0,"\u0000",true,false,null]"#
        );
        assert_eq!(rewrite("null").unwrap(), "null");
        assert_eq!(rewrite(r#""só ünïcödé ☃""#).unwrap(), r#""só ünïcödé ☃""#);
    }

    #[test]
    fn unpaired_surrogates_become_replacement_characters() {
        assert_eq!(rewrite(r#""\ud83d""#).unwrap(), r#""\ufffd""#);
        assert_eq!(rewrite(r#""\ud83d\ude00""#).unwrap(), r#""\ud83d\ude00""#);
        assert_eq!(rewrite(r#""\udc00x""#).unwrap(), r#""\ufffdx""#);
        assert_eq!(rewrite(r#""\ud83d\u0041""#).unwrap(), r#""\ufffd\u0041""#);
        assert_eq!(
            rewrite(r#""\ud83d\ud83d\ude00""#).unwrap(),
            r#""\ufffd\ud83d\ude00""#
        );
        let fixed = rewrite(r#"{"\udbff": ["\ud800", "\uDFFF"]}"#).unwrap();
        serde_json::from_str::<serde_json::Value>(&fixed).unwrap();
    }

    #[test]
    fn deep_nesting_is_not_limited_by_the_call_stack() {
        let depth = 100_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(rewrite(&text).unwrap(), text);
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            "",
            "{",
            "[1,",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "[1,]",
            "{\"a\":1,}",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "01",
            "-",
            "1.",
            "1e",
            "tru",
            "[1]]",
            "{]",
            "[}",
            "1 2",
            "\"a\nb\"",
            "[\"a\\",
        ] {
            assert!(rewrite(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
