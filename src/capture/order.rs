//! Pure: comparing row keys exactly as PostgreSQL orders them, for precise backfills.
//!
//! A precise backfill drops replication changes to rows beyond its resume key (the backfill
//! will read them later) and emits the rest, so every key's history is causal. That needs
//! a comparison that agrees with the chunk query's `ORDER BY`, which this module provides
//! for the key types where agreement can be guaranteed: integers, uuids, booleans, and text
//! compared bytewise (the chunk queries then order text keys with `COLLATE "C"`). Tables
//! with other key types are backfilled in normal mode, where nothing is filtered.

use std::cmp::Ordering;

use super::keys::Element;
use crate::value::PgType;

/// How a key column orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    Integer,
    /// Bytewise, as `COLLATE "C"` orders text.
    Text,
    /// Canonical lowercase text, which orders like the 16 bytes PostgreSQL compares.
    Uuid,
    Bool,
}

/// A key column value, comparable within one [`KeyOrder`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyValue {
    Bool(bool),
    Integer(i128),
    Bytes(Vec<u8>),
}

/// The order of a column type, if it can be compared here exactly.
pub fn key_order(ty: &PgType) -> Option<KeyOrder> {
    match ty {
        PgType::Domain { base, .. } => key_order(base),
        PgType::Builtin { name, .. } => match name.as_str() {
            "int2" | "int4" | "int8" | "oid" => Some(KeyOrder::Integer),
            "text" | "varchar" => Some(KeyOrder::Text),
            "uuid" => Some(KeyOrder::Uuid),
            "bool" => Some(KeyOrder::Bool),
            _ => None,
        },
        PgType::Extension { .. }
        | PgType::Enum { .. }
        | PgType::Array { .. }
        | PgType::Range { .. }
        | PgType::Multirange { .. }
        | PgType::Composite { .. }
        | PgType::Unknown { .. } => None,
    }
}

/// A key value from PostgreSQL text output.
pub fn key_value(order: KeyOrder, text: &[u8]) -> Option<KeyValue> {
    match order {
        KeyOrder::Integer => std::str::from_utf8(text).ok()?.parse::<i128>().ok().map(KeyValue::Integer),
        KeyOrder::Text | KeyOrder::Uuid => Some(KeyValue::Bytes(text.to_vec())),
        KeyOrder::Bool => match text {
            b"t" | b"true" => Some(KeyValue::Bool(true)),
            b"f" | b"false" => Some(KeyValue::Bool(false)),
            _ => None,
        },
    }
}

/// A resume key (decoded tuple) as comparable values.
pub fn key_from_elements(orders: &[KeyOrder], elements: &[Element]) -> Option<Vec<KeyValue>> {
    if orders.len() != elements.len() {
        return None;
    }
    orders
        .iter()
        .zip(elements)
        .map(|(order, element)| match (order, element) {
            (KeyOrder::Integer, Element::Int(n)) => Some(KeyValue::Integer(*n)),
            (KeyOrder::Integer, Element::String(s)) => s.parse().ok().map(KeyValue::Integer),
            (KeyOrder::Text | KeyOrder::Uuid, Element::String(s)) => Some(KeyValue::Bytes(s.as_bytes().to_vec())),
            (KeyOrder::Uuid, Element::Uuid(bytes)) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let text = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
                Some(KeyValue::Bytes(text.into_bytes()))
            }
            (KeyOrder::Bool, Element::Bool(b)) => Some(KeyValue::Bool(*b)),
            (KeyOrder::Bool, Element::String(s)) => key_value(KeyOrder::Bool, s.as_bytes()),
            _ => None,
        })
        .collect()
}

/// Whether a change to the row with `key` must be emitted while a precise backfill has
/// read up to `scanned` (inclusive). Before the first chunk nothing has been read.
pub fn is_backfilled(key: &[KeyValue], scanned: Option<&[KeyValue]>) -> bool {
    match scanned {
        None => false,
        Some(scanned) => key.cmp(scanned) != Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_like_postgres_row_comparison() {
        let row = |n: i128, s: &str| vec![KeyValue::Integer(n), KeyValue::Bytes(s.as_bytes().to_vec())];
        let scanned = row(5, "m");
        assert!(is_backfilled(&row(5, "m"), Some(&scanned)));
        assert!(is_backfilled(&row(4, "z"), Some(&scanned)));
        assert!(is_backfilled(&row(5, "B"), Some(&scanned)), "uppercase sorts first under COLLATE \"C\"");
        assert!(!is_backfilled(&row(5, "ma"), Some(&scanned)));
        assert!(!is_backfilled(&row(-1, "a"), None), "nothing is backfilled before the first chunk");
        assert!(is_backfilled(&[KeyValue::Integer(-10)], Some(&[KeyValue::Integer(2)])));
    }

    #[test]
    fn key_values_come_from_text_and_resume_tuples() {
        assert_eq!(key_value(KeyOrder::Integer, b"-42"), Some(KeyValue::Integer(-42)));
        assert_eq!(key_value(KeyOrder::Integer, b"x"), None);
        assert_eq!(key_value(KeyOrder::Bool, b"t"), Some(KeyValue::Bool(true)));
        let orders = [KeyOrder::Text, KeyOrder::Integer];
        let elements = [Element::String("B".into()), Element::Int(4)];
        assert_eq!(
            key_from_elements(&orders, &elements),
            Some(vec![KeyValue::Bytes(b"B".to_vec()), KeyValue::Integer(4)])
        );
        assert_eq!(key_from_elements(&orders, &elements[..1]), None);
        assert_eq!(key_order(&PgType::Builtin { name: "numeric".into(), typmod: -1 }), None);
        let domain = PgType::Domain {
            name: "d".into(),
            base: Box::new(PgType::Builtin { name: "int8".into(), typmod: -1 }),
            not_null: true,
        };
        assert_eq!(key_order(&domain), Some(KeyOrder::Integer));
    }
}
