//! JSON Schemas of column types, following the Go connector's conventions so existing
//! Flow collections keep validating (see `docs/types.md` for the full table).
//!
//! Conventions:
//! - a nullable column adds `"null"` to `type`; one type is written `"type": "x"`, several
//!   as a list;
//! - a domain's own NOT NULL makes the column non-nullable;
//! - array items and composite fields are always nullable;
//! - `json`, `jsonb` and the catch-all have no `type` at all, so nullability adds nothing.

use serde_json::{json, Map, Value};

use super::kind::{classify, domain_is_not_null, Kind};
use super::{PgType, ValueFormats};

/// Media type Go uses for `jsonb` columns.
const JSONB_MEDIA_TYPE: &str = "application/vnd.estuary.postgresql.jsonb+json";

/// The JSON Schema of a column of type `ty`, without the `(source type: …)` description.
///
/// `nullable` is the column's own nullability; a NOT NULL domain overrides it. A key
/// column (`is_key`) of type `float4`/`float8` is a string, as its values are.
///
/// The catch-all schema of a type without a rule is the only one that carries a
/// `description` (`using catch-all schema (unable to translate PostgreSQL type "X" into
/// JSON schema)`); callers that describe columns should append to it rather than replace it.
///
/// `formats` decides the schema the same way it decides the values (one
/// `kind::classify` for both), so a capture's schema and its documents agree.
pub fn column_schema(ty: &PgType, nullable: bool, is_key: bool, formats: &ValueFormats) -> Value {
    let nullable = nullable && !domain_is_not_null(ty);
    kind_schema(classify(ty, formats), formats, nullable, is_key)
}

/// The schema of an array element or composite field: always nullable, never a key.
fn member_schema(ty: &PgType, formats: &ValueFormats) -> Value {
    kind_schema(classify(ty, formats), formats, true, false)
}

/// An array's schema in the shape `formats` writes arrays in (Go's flags).
fn array_schema(element: &PgType, formats: &ValueFormats, nullable: bool) -> Value {
    if formats.multidimensional_arrays {
        // Go leaves the items of nested arrays undescribed.
        return typed(&["array"], nullable, json!({}));
    }
    let items = member_schema(element, formats);
    if !formats.flatten_arrays {
        return typed(
            &["object"],
            nullable,
            json!({
                "properties": {
                    "dimensions": {"type": "array", "items": {"type": "integer"}},
                    "elements": {"type": "array", "items": items},
                },
                "required": ["dimensions", "elements"],
                "additionalProperties": false,
            }),
        );
    }
    typed(&["array"], nullable, json!({"items": items}))
}

fn kind_schema(kind: Kind<'_>, formats: &ValueFormats, nullable: bool, is_key: bool) -> Value {
    let string = |extra: Value| typed(&["string"], nullable, extra);
    match kind {
        Kind::Boolean => typed(&["boolean"], nullable, json!({})),
        Kind::Integer => typed(&["integer"], nullable, json!({})),
        Kind::Numeric | Kind::GoNumeric => string(json!({"format": "number"})),
        Kind::Float { .. } if is_key => string(json!({"format": "number"})),
        Kind::Float { .. } => typed(&["number", "string"], nullable, json!({"format": "number"})),
        Kind::Text
        | Kind::Inet
        | Kind::GoInet
        | Kind::GoInterval
        | Kind::Varchar { max_length: None }
        | Kind::Bpchar { length: None } => string(json!({})),
        Kind::Varchar { max_length: Some(n) } => string(json!({"maxLength": n})),
        Kind::Bpchar { length: Some(n) } => string(json!({"minLength": n, "maxLength": n})),
        Kind::Uuid => string(json!({"format": "uuid"})),
        Kind::Bytea => string(json!({"contentEncoding": "base64"})),
        Kind::Json => json!({"contentMediaType": "application/json"}),
        Kind::Jsonb => json!({"contentMediaType": JSONB_MEDIA_TYPE}),
        Kind::Date { .. } => string(json!({"format": "date"})),
        Kind::DateAsTimestamp { .. } | Kind::Timestamp { .. } | Kind::Timestamptz { .. } => {
            string(json!({"format": "date-time"}))
        }
        Kind::Time | Kind::Timetz => string(json!({"format": "time"})),
        Kind::TimeMicros => typed(&["integer"], nullable, json!({})),
        Kind::Enum { labels } => {
            let mut values: Vec<Value> = labels.iter().map(|l| Value::String(l.clone())).collect();
            if nullable {
                values.push(Value::Null);
            }
            string(json!({"enum": values}))
        }
        Kind::Range { .. } | Kind::Multirange { .. } => string(json!({})),
        Kind::Array { element } => array_schema(element, formats, nullable),
        Kind::Composite { fields } => {
            let properties: Map<String, Value> =
                fields.iter().map(|(name, ty)| (name.clone(), member_schema(ty, formats))).collect();
            typed(&["object"], nullable, json!({"properties": properties}))
        }
        Kind::Hstore => typed(&["object"], nullable, json!({"additionalProperties": {"type": ["string", "null"]}})),
        Kind::Vector => typed(&["array"], nullable, json!({"items": {"type": "number"}})),
        Kind::CatchAll { name } => json!({
            "description": format!(
                "using catch-all schema (unable to translate PostgreSQL type \"{name}\" into JSON schema)"
            )
        }),
    }
}

/// `extra` (an object) with a `type` of `types`, plus `"null"` when `nullable`.
fn typed(types: &[&str], nullable: bool, extra: Value) -> Value {
    let mut names: Vec<Value> = types.iter().map(|t| Value::String((*t).to_string())).collect();
    if nullable {
        names.push(Value::String("null".into()));
    }
    let type_value = match names.len() {
        1 => names.remove(0),
        _ => Value::Array(names),
    };
    let mut object = match extra {
        Value::Object(object) => object,
        _ => Map::new(),
    };
    object.insert("type".into(), type_value);
    Value::Object(object)
}

/// The "source type" named in column descriptions, as Go writes it: the type name for
/// built-ins and extensions (`int4`, `varchar` without length, `citext`), `_` plus the
/// element's name for arrays (`_int4`, `_mood`), and `enum`, `range`, `multirange`,
/// `composite` for those families. A domain is described by its base type, since Go reads
/// the base type's name from the catalog.
pub fn source_type_name(ty: &PgType) -> String {
    match ty {
        PgType::Builtin { name, .. } | PgType::Extension { name } | PgType::Unknown { name } => name.clone(),
        PgType::Enum { .. } => "enum".into(),
        PgType::Domain { base, .. } => source_type_name(base),
        PgType::Array { element } => format!("_{}", element_typname(element)),
        PgType::Range { .. } => "range".into(),
        PgType::Multirange { .. } => "multirange".into(),
        PgType::Composite { .. } => "composite".into(),
    }
}

/// The `typname` of an array's element type: the array type is named `_` plus this.
fn element_typname(ty: &PgType) -> String {
    match ty {
        PgType::Array { element } => format!("_{}", element_typname(element)),
        other => other.display_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str, typmod: i32) -> PgType {
        PgType::Builtin { name: name.into(), typmod }
    }

    #[test]
    fn nullable_columns_add_null_to_the_type() {
        assert_eq!(
            column_schema(&builtin("int4", -1), false, false, &ValueFormats::improved()),
            json!({"type": "integer"})
        );
        assert_eq!(
            column_schema(&builtin("int4", -1), true, false, &ValueFormats::improved()),
            json!({"type": ["integer", "null"]})
        );
        assert_eq!(
            column_schema(&builtin("float8", -1), true, false, &ValueFormats::improved()),
            json!({"type": ["number", "string", "null"], "format": "number"})
        );
    }

    #[test]
    fn float_key_columns_are_strings() {
        assert_eq!(
            column_schema(&builtin("float4", -1), false, true, &ValueFormats::improved()),
            json!({"type": "string", "format": "number"})
        );
    }

    #[test]
    fn character_types_carry_their_lengths() {
        assert_eq!(
            column_schema(&builtin("varchar", 14), false, false, &ValueFormats::improved()),
            json!({"type": "string", "maxLength": 10})
        );
        assert_eq!(
            column_schema(&builtin("bpchar", 9), true, false, &ValueFormats::improved()),
            json!({"type": ["string", "null"], "minLength": 5, "maxLength": 5})
        );
        assert_eq!(
            column_schema(&builtin("varchar", -1), false, false, &ValueFormats::improved()),
            json!({"type": "string"})
        );
    }

    #[test]
    fn json_columns_have_no_type_even_when_nullable() {
        assert_eq!(
            column_schema(&builtin("json", -1), true, false, &ValueFormats::improved()),
            json!({"contentMediaType": "application/json"})
        );
        assert_eq!(
            column_schema(&builtin("jsonb", -1), true, false, &ValueFormats::improved()),
            json!({"contentMediaType": "application/vnd.estuary.postgresql.jsonb+json"})
        );
    }

    #[test]
    fn a_not_null_domain_makes_the_column_non_nullable() {
        let domain = PgType::Domain { name: "positive".into(), base: Box::new(builtin("int4", -1)), not_null: true };
        assert_eq!(column_schema(&domain, true, false, &ValueFormats::improved()), json!({"type": "integer"}));
        assert_eq!(source_type_name(&domain), "int4");
    }

    #[test]
    fn enums_list_their_labels_and_null_when_nullable() {
        let mood = PgType::Enum { name: "mood".into(), labels: vec!["sad".into(), "happy".into()] };
        assert_eq!(
            column_schema(&mood, true, false, &ValueFormats::improved()),
            json!({"type": ["string", "null"], "enum": ["sad", "happy", null]})
        );
        assert_eq!(
            column_schema(&mood, false, false, &ValueFormats::improved()),
            json!({"type": "string", "enum": ["sad", "happy"]})
        );
    }

    #[test]
    fn array_items_are_always_nullable() {
        let not_null_domain = PgType::Domain { name: "d".into(), base: Box::new(builtin("int4", -1)), not_null: true };
        let array = PgType::Array { element: Box::new(not_null_domain) };
        assert_eq!(
            column_schema(&array, false, false, &ValueFormats::improved()),
            json!({"type": "array", "items": {"type": ["integer", "null"]}})
        );
        assert_eq!(source_type_name(&array), "_d");
    }

    #[test]
    fn composites_are_objects_of_nullable_fields() {
        let composite = PgType::Composite {
            name: "pair".into(),
            fields: vec![("a".into(), builtin("int4", -1)), ("b".into(), builtin("text", -1))],
        };
        assert_eq!(
            column_schema(&composite, true, false, &ValueFormats::improved()),
            json!({
                "type": ["object", "null"],
                "properties": {"a": {"type": ["integer", "null"]}, "b": {"type": ["string", "null"]}}
            })
        );
    }

    #[test]
    fn unknown_types_get_the_catch_all_with_an_explanation() {
        let schema = column_schema(&PgType::Unknown { name: "mytype".into() }, true, false, &ValueFormats::improved());
        assert_eq!(
            schema,
            json!({"description": "using catch-all schema (unable to translate PostgreSQL type \"mytype\" into JSON schema)"})
        );
    }

    #[test]
    fn source_type_names_follow_go() {
        assert_eq!(source_type_name(&builtin("varchar", 14)), "varchar");
        let int4_array = PgType::Array { element: Box::new(builtin("int4", -1)) };
        assert_eq!(source_type_name(&int4_array), "_int4");
        let mood = PgType::Enum { name: "mood".into(), labels: vec![] };
        assert_eq!(source_type_name(&mood), "enum");
        assert_eq!(source_type_name(&PgType::Array { element: Box::new(mood) }), "_mood");
        let range = PgType::Range { name: "int4range".into(), subtype: Box::new(builtin("int4", -1)) };
        assert_eq!(source_type_name(&range), "range");
        assert_eq!(source_type_name(&PgType::Extension { name: "citext".into() }), "citext");
    }
}
