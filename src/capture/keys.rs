//! Row keys as FoundationDB tuples, the encoding of the Go connector's `scanned` cursors.
//!
//! A backfill resumes after the last row it emitted; that row's key is stored in the state
//! as base64 of a FoundationDB tuple, one element per key column, exactly as the Go
//! connector stores it (e.g. `AkIAFQQ=` is `("B", 4)`). We decode every element kind it
//! writes — integers, strings, bytes, floats, booleans, nulls and its nested-tuple encoding
//! of NUMERIC — into PostgreSQL text, which the resume query casts back to each column's
//! type, so that the database (not this code) compares keys. Pure: no IO.

use base64::Engine as _;

/// One tuple element.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Null,
    Bytes(Vec<u8>),
    String(String),
    Nested(Vec<Element>),
    Int(i128),
    Float(f32),
    Double(f64),
    Bool(bool),
    Uuid([u8; 16]),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("resume key is not valid base64")]
    Base64,
    #[error("resume key is truncated at byte {0}")]
    Truncated(usize),
    #[error("resume key has an unsupported element code 0x{code:02x} at byte {offset}")]
    UnknownCode { code: u8, offset: usize },
    #[error("resume key has a string that is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("resume key has {found} values but the table's key has {expected} columns")]
    Arity { found: usize, expected: usize },
    #[error("resume key value for column {column:?} cannot be used: {reason}")]
    Unusable { column: String, reason: String },
}

/// Encode elements as a tuple.
pub fn encode(elements: &[Element]) -> Vec<u8> {
    let mut out = Vec::new();
    for element in elements {
        encode_element(element, &mut out, false);
    }
    out
}

fn encode_escaped(code: u8, data: &[u8], out: &mut Vec<u8>) {
    out.push(code);
    for byte in data {
        out.push(*byte);
        if *byte == 0 {
            out.push(0xFF);
        }
    }
    out.push(0);
}

fn encode_element(element: &Element, out: &mut Vec<u8>, nested: bool) {
    match element {
        Element::Null if nested => out.extend_from_slice(&[0x00, 0xFF]),
        Element::Null => out.push(0x00),
        Element::Bytes(bytes) => encode_escaped(0x01, bytes, out),
        Element::String(text) => encode_escaped(0x02, text.as_bytes(), out),
        Element::Nested(elements) => {
            out.push(0x05);
            for inner in elements {
                encode_element(inner, out, true);
            }
            out.push(0x00);
        }
        Element::Int(value) => encode_int(*value, out),
        Element::Float(value) => {
            out.push(0x20);
            let bits = value.to_bits();
            let bits = if bits & 0x8000_0000 != 0 { !bits } else { bits ^ 0x8000_0000 };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Element::Double(value) => {
            out.push(0x21);
            let bits = value.to_bits();
            let bits = if bits & (1 << 63) != 0 { !bits } else { bits ^ (1 << 63) };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Element::Bool(value) => out.push(if *value { 0x27 } else { 0x26 }),
        Element::Uuid(bytes) => {
            out.push(0x30);
            out.extend_from_slice(bytes);
        }
    }
}

fn encode_int(value: i128, out: &mut Vec<u8>) {
    if value == 0 {
        out.push(0x14);
        return;
    }
    let magnitude = value.unsigned_abs();
    let length = (128 - magnitude.leading_zeros()).div_ceil(8) as usize;
    if length > 8 {
        // Beyond 8 bytes FoundationDB uses a length-prefixed form; keys never get here
        // (int8 is the widest integer column), so saturate rather than mis-encode.
        return encode_int(if value > 0 { i64::MAX.into() } else { i64::MIN.into() }, out);
    }
    let bytes = if value > 0 {
        magnitude.to_be_bytes()
    } else {
        // One's complement of the magnitude within `length` bytes.
        let mask = if length == 16 { u128::MAX } else { (1u128 << (length * 8)) - 1 };
        (mask - magnitude).to_be_bytes()
    };
    let code = if value > 0 { 0x14 + length as u8 } else { 0x14 - length as u8 };
    out.push(code);
    out.extend_from_slice(&bytes[16 - length..]);
}

/// Decode a tuple.
pub fn decode(bytes: &[u8]) -> Result<Vec<Element>, KeyError> {
    let mut position = 0;
    let mut elements = Vec::new();
    while position < bytes.len() {
        elements.push(decode_element(bytes, &mut position, false)?);
    }
    Ok(elements)
}

/// Decode base64 text of a tuple (the `scanned` field).
pub fn decode_base64(text: &str) -> Result<Vec<Element>, KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| KeyError::Base64)?;
    decode(&bytes)
}

pub fn encode_base64(elements: &[Element]) -> String {
    base64::engine::general_purpose::STANDARD.encode(encode(elements))
}

fn take<'a>(bytes: &'a [u8], position: &mut usize, count: usize) -> Result<&'a [u8], KeyError> {
    let end = position.checked_add(count).ok_or(KeyError::Truncated(*position))?;
    let slice = bytes.get(*position..end).ok_or(KeyError::Truncated(*position))?;
    *position = end;
    Ok(slice)
}

fn decode_escaped(bytes: &[u8], position: &mut usize) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    loop {
        let byte = *bytes.get(*position).ok_or(KeyError::Truncated(*position))?;
        *position += 1;
        if byte == 0 {
            if bytes.get(*position) == Some(&0xFF) {
                *position += 1;
                out.push(0);
                continue;
            }
            return Ok(out);
        }
        out.push(byte);
    }
}

fn decode_element(bytes: &[u8], position: &mut usize, nested: bool) -> Result<Element, KeyError> {
    let offset = *position;
    let code = *bytes.get(offset).ok_or(KeyError::Truncated(offset))?;
    *position += 1;
    Ok(match code {
        0x00 => {
            if nested && bytes.get(*position) == Some(&0xFF) {
                *position += 1;
            }
            Element::Null
        }
        0x01 => Element::Bytes(decode_escaped(bytes, position)?),
        0x02 => {
            Element::String(String::from_utf8(decode_escaped(bytes, position)?).map_err(|_| KeyError::NotUtf8(offset))?)
        }
        0x05 => {
            let mut elements = Vec::new();
            loop {
                match bytes.get(*position) {
                    None => return Err(KeyError::Truncated(*position)),
                    Some(0x00) if bytes.get(*position + 1) != Some(&0xFF) => {
                        *position += 1;
                        break;
                    }
                    Some(_) => elements.push(decode_element(bytes, position, true)?),
                }
            }
            Element::Nested(elements)
        }
        0x0C..=0x1C => {
            let length = usize::from(code.abs_diff(0x14));
            let data = take(bytes, position, length)?;
            let mut magnitude: u128 = 0;
            for byte in data {
                magnitude = (magnitude << 8) | u128::from(*byte);
            }
            if code >= 0x14 {
                Element::Int(i128::try_from(magnitude).unwrap_or(i128::MAX))
            } else {
                let mask = if length == 0 { 0 } else { (1u128 << (length * 8)) - 1 };
                Element::Int(-i128::try_from(mask - magnitude).unwrap_or(i128::MAX))
            }
        }
        0x20 => {
            let data = take(bytes, position, 4)?;
            let bits = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let bits = if bits & 0x8000_0000 != 0 { bits ^ 0x8000_0000 } else { !bits };
            Element::Float(f32::from_bits(bits))
        }
        0x21 => {
            let data = take(bytes, position, 8)?;
            let mut array = [0u8; 8];
            array.copy_from_slice(data);
            let bits = u64::from_be_bytes(array);
            let bits = if bits & (1 << 63) != 0 { bits ^ (1 << 63) } else { !bits };
            Element::Double(f64::from_bits(bits))
        }
        0x26 => Element::Bool(false),
        0x27 => Element::Bool(true),
        0x30 => {
            let data = take(bytes, position, 16)?;
            let mut array = [0u8; 16];
            array.copy_from_slice(data);
            Element::Uuid(array)
        }
        code => return Err(KeyError::UnknownCode { code, offset }),
    })
}

/// PostgreSQL text for a decoded element, to be cast back to the column type in SQL.
pub fn element_to_text(element: &Element, column: &str) -> Result<Option<String>, KeyError> {
    let unusable = |reason: &str| KeyError::Unusable { column: column.to_string(), reason: reason.to_string() };
    Ok(Some(match element {
        Element::Null => return Ok(None),
        Element::String(text) => text.clone(),
        Element::Int(value) => value.to_string(),
        Element::Bool(value) => value.to_string(),
        Element::Float(value) => float_text(f64::from(*value)),
        Element::Double(value) => float_text(*value),
        Element::Bytes(bytes) => {
            let mut text = String::with_capacity(2 + bytes.len() * 2);
            text.push_str("\\x");
            for byte in bytes {
                text.push_str(&format!("{byte:02x}"));
            }
            text
        }
        Element::Uuid(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
        }
        // The Go connector's order-preserving NUMERIC: ("N", (exponent, digits), <binary numeric>).
        Element::Nested(inner) => match inner.as_slice() {
            [Element::String(tag), _, Element::Bytes(binary)] if tag == "N" => {
                numeric_binary_to_text(binary).ok_or_else(|| unusable("malformed binary NUMERIC"))?
            }
            _ => return Err(unusable("unrecognized nested tuple")),
        },
    }))
}

fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{value:?}")
    }
}

/// PostgreSQL's binary NUMERIC (`numeric_send`) as text.
pub fn numeric_binary_to_text(binary: &[u8]) -> Option<String> {
    let field = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*binary.get(i)?, *binary.get(i + 1)?])) };
    let ndigits = usize::from(field(0)?);
    let weight = i32::from(field(2)? as i16);
    let sign = field(4)?;
    let dscale = usize::from(field(6)?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| field(8 + 2 * i)).collect::<Option<_>>()?;
    if binary.len() != 8 + 2 * ndigits || digits.iter().any(|d| *d > 9999) {
        return None;
    }
    let mut integer = String::new();
    let mut fraction = String::new();
    // Digit i has base-10000 exponent weight - i.
    let last_int_group = weight;
    if last_int_group < 0 {
        integer.push('0');
    } else {
        for group in 0..=last_int_group {
            let digit = usize::try_from(group).ok().and_then(|g| digits.get(g)).copied().unwrap_or(0);
            if integer.is_empty() {
                integer.push_str(&digit.to_string());
            } else {
                integer.push_str(&format!("{digit:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut group = last_int_group + 1;
        while fraction.len() < dscale {
            let digit = if group < 0 {
                0
            } else {
                usize::try_from(group).ok().and_then(|g| digits.get(g)).copied().unwrap_or(0)
            };
            fraction.push_str(&format!("{digit:04}"));
            group += 1;
        }
        fraction.truncate(dscale);
    }
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    text.push_str(&integer);
    if !fraction.is_empty() {
        text.push('.');
        text.push_str(&fraction);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_connector_resume_key_decodes() {
        let elements = decode_base64("AkIAFQQ=").unwrap();
        assert_eq!(elements, vec![Element::String("B".into()), Element::Int(4)]);
        assert_eq!(encode_base64(&elements), "AkIAFQQ=");
    }

    #[test]
    fn integers_round_trip_and_keep_order() {
        let values = [i64::MIN as i128, -65536, -256, -255, -1, 0, 1, 255, 256, 65535, i64::MAX as i128];
        let mut previous: Option<Vec<u8>> = None;
        for value in values {
            let bytes = encode(&[Element::Int(value)]);
            assert_eq!(decode(&bytes).unwrap(), vec![Element::Int(value)], "{value}");
            if let Some(previous) = &previous {
                assert!(previous < &bytes, "order broken at {value}");
            }
            previous = Some(bytes);
        }
    }

    #[test]
    fn strings_bytes_floats_and_nested_round_trip() {
        let elements = vec![
            Element::String("a\0b".into()),
            Element::Bytes(vec![0, 1, 0xFF]),
            Element::Double(-2.5),
            Element::Float(1.5),
            Element::Bool(true),
            Element::Null,
            Element::Nested(vec![Element::String("N".into()), Element::Null, Element::Int(7)]),
        ];
        assert_eq!(decode(&encode(&elements)).unwrap(), elements);
    }

    #[test]
    fn corrupt_keys_are_errors() {
        assert_eq!(decode(&[0x02, b'a']), Err(KeyError::Truncated(2)));
        assert_eq!(decode(&[0x16, 1]), Err(KeyError::Truncated(1)));
        assert!(matches!(decode(&[0x99]), Err(KeyError::UnknownCode { code: 0x99, .. })));
        assert_eq!(decode_base64("***"), Err(KeyError::Base64));
    }

    #[test]
    fn binary_numerics_become_text() {
        // 123.45: ndigits 2, weight 0, positive, dscale 2, digits [123, 4500]
        let binary = [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94];
        assert_eq!(numeric_binary_to_text(&binary).as_deref(), Some("123.45"));
        // -0.001: ndigits 1, weight -1, negative, dscale 3, digits [10]
        let binary = [0, 1, 0xFF, 0xFF, 0x40, 0, 0, 3, 0, 10];
        assert_eq!(numeric_binary_to_text(&binary).as_deref(), Some("-0.001"));
        // 20000: ndigits 1, weight 1, digits [2] (trailing zero groups omitted)
        let binary = [0, 1, 0, 1, 0, 0, 0, 0, 0, 2];
        assert_eq!(numeric_binary_to_text(&binary).as_deref(), Some("20000"));
        assert_eq!(numeric_binary_to_text(&[0, 0, 0, 0, 0xC0, 0, 0, 0]).as_deref(), Some("NaN"));
        assert_eq!(numeric_binary_to_text(&[0, 1]), None);
    }

    #[test]
    fn elements_become_postgres_text() {
        assert_eq!(element_to_text(&Element::Bytes(vec![0xde, 0xad]), "b").unwrap().as_deref(), Some("\\xdead"));
        assert_eq!(element_to_text(&Element::Null, "n").unwrap(), None);
        assert_eq!(element_to_text(&Element::Double(f64::NAN), "f").unwrap().as_deref(), Some("NaN"));
        assert!(element_to_text(&Element::Nested(vec![]), "x").is_err());
    }
}
