//! Pure: tables → collection schemas, keys and binding metadata.
//!
//! The document schema has the Go connector's structure so existing collections keep
//! validating: a `$defs` anchor holding the row shape, and an `allOf` that adds `_meta`
//! and the reduction `if op = d then merge+delete else merge`. The merge reduction is
//! what fills unchanged TOAST values: an update that omits a column leaves the stored
//! value in place.
//!
//! One generator, two [`SchemaMode`]s. [`SchemaMode::Write`] is the discovered collection
//! schema. [`SchemaMode::Sourced`] is the schema of a `sourcedSchema` response, which the
//! runtime requires to be closed (`inspect_closed`: no object with properties may allow
//! others) and which should be as restrictive as the table allows, since the runtime
//! intersects it with the write schema and unions it into the inferred schema. As in the
//! Go connector it has every column required, no reduction annotations and no
//! `if`/`then`/`else`, `_meta` and `_meta.source` closed with `additionalProperties`,
//! `before` and the document closed with `unevaluatedProperties`.
//!
//! One deliberate difference from Go: Go also drops `"null"` from every column's type
//! union, which makes the NULL value of a nullable column invalid under the sourced schema
//! (and would let a materialization create a NOT NULL column for it until inference saw a
//! null). Here a nullable column keeps `"null"`: the schema says what the column can hold,
//! so every complete row the connector emits validates against it (a unit test checks this
//! for every type). Nested objects (composite values) are closed too, which Go never needed
//! because it captures composites as strings.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::{DiscoveredTable, FALLBACK_KEY};
use crate::protocol::responses::DiscoveredBinding;
use crate::value;

/// Which schema the generator builds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// The collection's write schema, as discovery suggests it.
    Write,
    /// The closed, restrictive schema of a `sourcedSchema` response.
    Sourced,
}

/// Settings that change the generated schemas.
#[derive(Debug, Clone, Default)]
pub struct SchemaOptions {
    pub history_mode: bool,
    pub source_tag: bool,
    /// Ask Flow to infer the schema too (`x-infer-schema`): the Go connector's
    /// `use_schema_inference` feature flag, on by default.
    pub schema_inference: bool,
    /// The value formats the schemas describe.
    pub formats: crate::value::ValueFormats,
}

impl SchemaOptions {
    /// The options a configuration asks for: discovery and the capture's sourced schemas
    /// use the same, so both describe the same documents.
    pub fn for_config(config: &crate::config::Config) -> SchemaOptions {
        SchemaOptions {
            history_mode: config.raw.history_mode,
            source_tag: !config.raw.advanced.source_tag.is_empty(),
            schema_inference: config.flags.use_schema_inference,
            formats: config.formats,
        }
    }
}

/// The document property the connector owns: `_meta`, with the operation and the source.
pub const META_PROPERTY: &str = "_meta";

/// Whether `name` is `_meta` followed by zero or more underscores: the names that
/// [`property_name`] changes (as columns) or reads back (as properties).
pub fn is_meta_like(name: &str) -> bool {
    name.strip_prefix(META_PROPERTY).is_some_and(|rest| rest.bytes().all(|b| b == b'_'))
}

/// The document property of a column: its name, except that `_meta`, `_meta_`, `_meta__`,
/// ... get one more trailing underscore. A column may be called `_meta`, which would collide
/// with the connector's own property; shifting the whole `_meta_*` family by one underscore
/// (rather than renaming `_meta` alone) keeps the mapping one-to-one, so a table with both
/// `_meta` and `_meta_` columns still has two distinct properties, and depends on the name
/// alone, so adding or dropping another column never renames a property.
pub fn property_name(column: &str) -> Cow<'_, str> {
    if is_meta_like(column) {
        Cow::Owned(format!("{column}_"))
    } else {
        Cow::Borrowed(column)
    }
}

/// Inverse of [`property_name`]; `None` for `_meta`, which is no column's property.
pub fn column_of_property(property: &str) -> Option<&str> {
    if property == META_PROPERTY {
        None
    } else if is_meta_like(property) {
        property.strip_suffix('_')
    } else {
        Some(property)
    }
}

/// RFC 6901 pointer to the top-level property of a column.
pub fn key_pointer(column: &str) -> String {
    format!("/{}", property_name(column).replace('~', "~0").replace('/', "~1"))
}

/// Inverse of [`key_pointer`]: the column a top-level pointer names; `None` for nested
/// pointers and for `/_meta`.
pub fn column_of_pointer(pointer: &str) -> Option<String> {
    let rest = pointer.strip_prefix('/')?;
    if rest.contains('/') {
        return None;
    }
    let property = rest.replace("~1", "/").replace("~0", "~");
    column_of_property(&property).map(str::to_string)
}

/// The collection name suggested for a table: lowercase `schema/table`, characters outside
/// `[a-z0-9-_.]` replaced by `_`, and `.`/`..` components made safe.
pub fn recommended_name(schema: &str, table: &str) -> String {
    fn component(part: &str) -> String {
        // Lowercased one character at a time, as Go's `strings.ToLower` does: the Kelvin
        // sign becomes `k` and `İ` becomes `i` (not `i` plus a combining dot).
        let cleaned: String = part
            .chars()
            .map(|c| c.to_lowercase().next().unwrap_or(c))
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        match cleaned.as_str() {
            "." => "_".to_string(),
            ".." => "__".to_string(),
            _ => cleaned,
        }
    }
    format!("{}/{}", component(schema), component(table))
}

/// Go's `strings.Title`: uppercase the first character after every separator. As in Go,
/// an ASCII character separates words unless it is a letter, digit or underscore, and
/// any other character only if it is white space.
fn title_case(text: &str) -> String {
    fn is_separator(c: char) -> bool {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut previous = ' ';
    for c in text.chars() {
        if is_separator(previous) {
            // Go maps one character to one character; keep those without a single-character
            // uppercase form (`ß`) as they are.
            let mut upper = c.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(u), None) => out.push(u),
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
        previous = c;
    }
    out
}

/// The `$anchor` naming the row shape. JSON Schema anchors must match
/// `[A-Za-z_][-A-Za-z0-9._]*`, so other characters (legal in PostgreSQL names) become `_`.
pub fn anchor_name(schema: &str, table: &str) -> String {
    let raw = format!("{}{}", title_case(schema), title_case(table));
    let mut anchor: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '_' }).collect();
    if !anchor.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        anchor.insert(0, '_');
    }
    anchor
}

/// Schema of `_meta.source`; closed in [`SchemaMode::Sourced`].
pub fn source_schema(options: &SchemaOptions, mode: SchemaMode) -> Value {
    let mut properties = json!({
        "ts_ms": {"type": "integer", "description": "Unix timestamp (in millis) at which this event was recorded by the database."},
        "schema": {"type": "string", "description": "Database schema (namespace) of the event."},
        "snapshot": {"type": "boolean", "description": "Snapshot is true if the record was produced from an initial table backfill and unset if produced from the replication log."},
        "table": {"type": "string", "description": "Database table of the event."},
        "loc": {
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 3,
            "maxItems": 3,
            "description": "Location of this WAL event as [last Commit.EndLSN; event LSN; current Begin.FinalLSN]. See https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html"
        },
        "txid": {"type": "integer", "description": "The 32-bit transaction ID assigned by Postgres to the commit which produced this change."}
    });
    if options.source_tag {
        properties["tag"] = json!({"type": "string", "description": "Optional 'Source Tag' property as defined in the endpoint configuration."});
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "required": ["schema", "table", "loc"]
    });
    match mode {
        SchemaMode::Write if options.history_mode => {
            schema["reduce"] = json!({"strategy": "lastWriteWins", "associative": false});
        }
        SchemaMode::Write => {}
        SchemaMode::Sourced => schema["additionalProperties"] = json!(false),
    }
    schema
}

/// The property schema of one column, with Go's description convention. In
/// [`SchemaMode::Sourced`] nested objects (composites) are closed.
pub fn column_property(
    table: &DiscoveredTable,
    index: usize,
    mode: SchemaMode,
    formats: &crate::value::ValueFormats,
) -> Value {
    let column = &table.columns[index];
    let is_key = table.key.contains(&column.name);
    let mut schema = value::column_schema(&column.pg_type, column.nullable, is_key, formats);
    if mode == SchemaMode::Sourced {
        close_objects(&mut schema);
    }
    let source_type = value::source_type_name(&column.pg_type);
    let nullability = if column.nullable { "" } else { "non-nullable " };
    let suffix = format!("(source type: {nullability}{source_type})");
    let description = match (&column.comment, schema.get("description").and_then(Value::as_str)) {
        (Some(comment), Some(existing)) => format!("{comment} {existing} {suffix}"),
        (Some(comment), None) => format!("{comment} {suffix}"),
        (None, Some(existing)) => format!("{existing} {suffix}"),
        (None, None) => suffix,
    };
    if let Value::Object(map) = &mut schema {
        map.insert("description".to_string(), Value::String(description));
    }
    schema
}

/// Add `additionalProperties: false` to every schema in `schema` that lists `properties`
/// and does not say otherwise: the objects a column holds have exactly their fields.
fn close_objects(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (keyword, child) in map.iter_mut() {
        match keyword.as_str() {
            "properties" => {
                if let Value::Object(properties) = child {
                    properties.values_mut().for_each(close_objects);
                }
            }
            "items" | "additionalItems" => close_objects(child),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(members) = child {
                    members.iter_mut().for_each(close_objects);
                }
            }
            _ => {}
        }
    }
}

/// The collection's document schema (discovery's write schema).
pub fn document_schema(table: &DiscoveredTable, options: &SchemaOptions) -> Value {
    collection_schema(table, options, SchemaMode::Write)
}

/// The schema of the table's `sourcedSchema` response.
pub fn sourced_schema(table: &DiscoveredTable, options: &SchemaOptions) -> Value {
    collection_schema(table, options, SchemaMode::Sourced)
}

/// The document schema of `table` in either mode: one generator, so the sourced schema
/// never drifts from the discovered one.
pub fn collection_schema(table: &DiscoveredTable, options: &SchemaOptions, mode: SchemaMode) -> Value {
    let anchor = anchor_name(&table.schema, &table.name);
    let mut properties = Map::new();
    for (index, column) in table.columns.iter().enumerate() {
        if column.generated {
            continue;
        }
        properties
            .insert(property_name(&column.name).into_owned(), column_property(table, index, mode, &options.formats));
    }
    // The write schema requires the key only (an update may omit unchanged TOAST values);
    // the sourced schema every column, as Go's does.
    let mut required: Vec<String> = match mode {
        SchemaMode::Write => table.key.iter().map(|k| property_name(k).into_owned()).collect(),
        SchemaMode::Sourced => properties.keys().cloned().collect(),
    };
    required.sort_unstable();
    let row = json!({
        "type": "object",
        "$anchor": anchor,
        "properties": properties,
        "required": required,
    });
    let anchor_ref = format!("#{anchor}");
    let mut before = json!({
        "$ref": anchor_ref.clone(),
        "description": "Record state immediately before this change was applied.",
    });
    let mut meta = json!({
        "type": "object",
        "required": ["op", "source"],
        "properties": {
            "op": {
                "enum": ["c", "d", "u"],
                "description": "Change operation type: 'c' Create/Insert, 'u' Update, 'd' Delete."
            },
            "source": source_schema(options, mode),
        },
    });
    let mut metadata = json!({"required": ["_meta"]});
    match mode {
        SchemaMode::Write => {
            before["reduce"] = json!({"strategy": "firstWriteWins"});
            meta["reduce"] = json!({"strategy": "merge"});
            metadata["if"] = json!({"properties": {"_meta": {"properties": {"op": {"const": "d"}}}}});
            metadata["then"] = json!({"reduce": {"strategy": "merge", "delete": true}});
            metadata["else"] = json!({"reduce": {"strategy": "merge"}});
        }
        SchemaMode::Sourced => {
            before["unevaluatedProperties"] = json!(false);
            meta["additionalProperties"] = json!(false);
        }
    }
    meta["properties"]["before"] = before;
    metadata["properties"] = json!({ "_meta": meta });
    let mut schema = json!({
        "$defs": { anchor.clone(): row },
        "allOf": [metadata, {"$ref": anchor_ref}],
    });
    if options.schema_inference {
        schema["x-infer-schema"] = json!(true);
    }
    if mode == SchemaMode::Sourced {
        schema["unevaluatedProperties"] = json!(false);
    }
    schema
}

/// The discovered binding of a table.
pub fn binding_for(table: &DiscoveredTable, options: &SchemaOptions) -> DiscoveredBinding {
    let keyless = table.key.is_empty();
    let mut resource = json!({"namespace": table.schema, "stream": table.name});
    if keyless {
        resource["mode"] = json!("Without Primary Key");
    }
    let key = if keyless {
        FALLBACK_KEY.iter().map(|s| s.to_string()).collect()
    } else {
        table.key.iter().map(|column| key_pointer(column)).collect()
    };
    DiscoveredBinding {
        recommended_name: recommended_name(&table.schema, &table.name),
        resource_config: resource,
        document_schema: document_schema(table, options),
        key,
        is_fallback_key: keyless || table.key_is_unique_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_names_are_normalized_like_go() {
        assert_eq!(recommended_name("Capital", "LetterS"), "capital/letters");
        assert_eq!(recommended_name("for$bidden", "char%s"), "for_bidden/char_s");
        assert_eq!(recommended_name(".", ".."), "_/__");
        assert_eq!(recommended_name("Ünï ☃", "a.b-c_d"), "_n___/a.b-c_d");
        // One character for one, as Go's strings.ToLower: KELVIN SIGN → k, İ → i.
        assert_eq!(recommended_name("\u{212A}", "\u{130}x"), "k/ix");
    }

    #[test]
    fn key_pointers_escape_tilde_and_slash() {
        assert_eq!(key_pointer("Meta/\"wtf\"~ID"), "/Meta~1\"wtf\"~0ID");
        assert_eq!(column_of_pointer("/Meta~1\"wtf\"~0ID").as_deref(), Some("Meta/\"wtf\"~ID"));
        assert_eq!(column_of_pointer("/a/b"), None);
    }

    #[test]
    fn columns_named_like_meta_map_one_to_one_onto_properties_other_than_meta() {
        let columns = ["_meta", "_meta_", "_meta__", "_meta_x", "_META", "meta", "_met", "id", "a/~b", ""];
        let properties: Vec<String> = columns.iter().map(|c| property_name(c).into_owned()).collect();
        assert_eq!(properties, ["_meta_", "_meta__", "_meta___", "_meta_x", "_META", "meta", "_met", "id", "a/~b", ""]);
        for (column, property) in columns.iter().zip(&properties) {
            assert_eq!(column_of_property(property), Some(*column));
            assert_eq!(column_of_pointer(&key_pointer(column)).as_deref(), Some(*column));
        }
        assert!(!properties.iter().any(|p| p == META_PROPERTY));
        assert_eq!(column_of_property("_meta"), None);
        assert_eq!(column_of_pointer("/_meta"), None);
        assert_eq!(key_pointer("_meta"), "/_meta_");
    }

    #[test]
    fn anchors_follow_go_title_case_and_stay_valid() {
        assert_eq!(anchor_name("test", "simplediscovery_838908"), "TestSimplediscovery_838908");
        assert_eq!(anchor_name("public", "my table"), "PublicMy_Table");
        assert_eq!(anchor_name("1x", "t"), "_1xT");
        // Apostrophes separate words in Go; non-ASCII symbols do not, white space does.
        assert_eq!(title_case("it's a_b-c"), "It'S A_b-C");
        assert_eq!(title_case("é☃x y\u{a0}z"), "É☃x Y\u{a0}Z");
        assert_eq!(title_case("ßa"), "ßa");
    }

    /// A table with one column of each schema family: scalars nullable and not, a float
    /// key, an enum, json, an array, composites (nested, and in an array), the catch-all,
    /// a generated column and a column named `_meta`.
    fn varied_table() -> DiscoveredTable {
        use crate::discovery::Column;
        use crate::value::PgType;
        let builtin = |name: &str| PgType::Builtin { name: name.into(), typmod: -1 };
        let inner = PgType::Composite { name: "inner".into(), fields: vec![("n".into(), builtin("int4"))] };
        let pair = PgType::Composite {
            name: "pair".into(),
            fields: vec![("a".into(), builtin("int4")), ("b".into(), builtin("text")), ("inner".into(), inner)],
        };
        let column = |name: &str, pg_type: PgType, nullable: bool| Column {
            name: name.into(),
            type_oid: 0,
            typmod: -1,
            pg_type,
            nullable,
            generated: false,
            comment: None,
        };
        let mut generated = column("doubled", builtin("int4"), true);
        generated.generated = true;
        DiscoveredTable {
            oid: 1,
            schema: "public".into(),
            name: "varied".into(),
            relkind: 'r',
            is_partition: false,
            published: true,
            columns: vec![
                column("id", builtin("float8"), false),
                column("n", builtin("int4"), true),
                column("f", builtin("float8"), true),
                column("t", builtin("text"), false),
                column("mood", PgType::Enum { name: "mood".into(), labels: vec!["sad".into(), "ok".into()] }, true),
                column("j", builtin("jsonb"), true),
                column("arr", PgType::Array { element: Box::new(builtin("int4")) }, true),
                column("pair", pair.clone(), true),
                column("pairs", PgType::Array { element: Box::new(pair) }, true),
                column("odd", PgType::Unknown { name: "mytype".into() }, true),
                column("_meta", builtin("text"), true),
                generated,
            ],
            key: vec!["id".into()],
            key_is_unique_index: false,
        }
    }

    /// Every subschema of `schema` with its JSON pointer.
    fn subschemas<'a>(schema: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
        out.push((at.clone(), schema));
        let Value::Object(map) = schema else { return };
        for (keyword, child) in map {
            match (keyword.as_str(), child) {
                ("properties" | "$defs", Value::Object(children)) => {
                    for (name, child) in children {
                        subschemas(child, format!("{at}/{keyword}/{name}"), out);
                    }
                }
                ("allOf" | "anyOf" | "oneOf", Value::Array(members)) => {
                    for (i, child) in members.iter().enumerate() {
                        subschemas(child, format!("{at}/{keyword}/{i}"), out);
                    }
                }
                ("items" | "additionalProperties" | "if" | "then" | "else", child) => {
                    subschemas(child, format!("{at}/{keyword}"), out)
                }
                _ => {}
            }
        }
    }

    /// Flow's `inspect_closed`, for the shapes this generator writes: no schema with
    /// properties may allow others, except the row anchor and the `allOf` members, which
    /// only the closed document (`unevaluatedProperties: false`) and the closed `before`
    /// refer to.
    fn open_objects(schema: &Value) -> Vec<String> {
        let mut all = Vec::new();
        subschemas(schema, String::new(), &mut all);
        let closed =
            |s: &Value| s["additionalProperties"] == json!(false) || s["unevaluatedProperties"] == json!(false);
        let mut open: Vec<String> = all
            .iter()
            .filter(|(_, s)| s.get("properties").is_some() && !closed(s))
            .filter(|(at, _)| !(at.starts_with("/$defs/") && at.matches('/').count() == 2))
            .filter(|(at, _)| !(at.starts_with("/allOf/") && at.matches('/').count() == 2))
            .map(|(at, _)| at.clone())
            .collect();
        if !closed(schema) {
            open.push("(document)".into());
        }
        let before = &schema["allOf"][0]["properties"]["_meta"]["properties"]["before"];
        if !closed(before) {
            open.push("/_meta/before".into());
        }
        open
    }

    fn strict_validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_format("number", |s: &str| matches!(s, "NaN" | "Infinity" | "-Infinity") || s.parse::<f64>().is_ok())
            .build(schema)
            .unwrap_or_else(|e| panic!("the schema does not compile: {e}\n{schema:#}"))
    }

    #[test]
    fn the_sourced_schema_is_closed_requires_every_column_and_has_no_reductions() {
        let table = varied_table();
        for options in [
            SchemaOptions::default(),
            SchemaOptions { history_mode: true, source_tag: true, schema_inference: true, ..SchemaOptions::default() },
        ] {
            let sourced = sourced_schema(&table, &options);
            strict_validator(&sourced);
            assert_eq!(open_objects(&sourced), Vec::<String>::new(), "{sourced:#}");
            // The write schema is open, as discovery has always written it.
            assert!(!open_objects(&document_schema(&table, &options)).is_empty());
            let text = sourced.to_string();
            for absent in ["\"reduce\"", "\"if\"", "\"then\"", "\"else\"", "doubled"] {
                assert!(!text.contains(absent), "{absent} in {sourced:#}");
            }
            let row = &sourced["$defs"]["PublicVaried"];
            assert_eq!(
                row["required"],
                json!(["_meta_", "arr", "f", "id", "j", "mood", "n", "odd", "pair", "pairs", "t"])
            );
            // A nullable column keeps null: its NULL value is a value of the column.
            assert_eq!(row["properties"]["n"]["type"], json!(["integer", "null"]));
            assert_eq!(row["properties"]["id"]["type"], json!("string"), "a float key is a string");
            assert_eq!(sourced["x-infer-schema"].as_bool(), options.schema_inference.then_some(true));
            let source = &sourced["allOf"][0]["properties"]["_meta"]["properties"]["source"];
            assert_eq!(source["properties"].get("tag").is_some(), options.source_tag);
            // The column descriptions are discovery's.
            let written = document_schema(&table, &options);
            assert_eq!(row["properties"]["t"], written["$defs"]["PublicVaried"]["properties"]["t"]);
        }
    }

    #[test]
    fn go_value_formats_give_the_go_connectors_schemas_and_their_documents_validate() {
        let options =
            SchemaOptions { source_tag: true, formats: crate::value::ValueFormats::go(), ..SchemaOptions::default() };
        let sourced = sourced_schema(&varied_table(), &options);
        let properties = &sourced["$defs"]["PublicVaried"]["properties"];
        // Composites and arrays of them are Go's catch-all; enums lose their labels.
        for column in ["pair", "pairs"] {
            assert!(properties[column].get("type").is_none(), "{column}: {}", properties[column]);
        }
        assert_eq!(properties["mood"]["type"], json!(["string", "null"]));
        assert!(properties["mood"].get("enum").is_none());
        // Documents in Go's forms validate against it.
        let validator = strict_validator(&sourced);
        let document = json!({
            "_meta": {"op": "c", "source": {"ts_ms": 1, "schema": "public", "table": "varied", "loc": [1, 2, 3], "txid": 7, "tag": "x"}},
            "_meta_": "m", "arr": [1, null], "f": 1.5, "id": "1.5", "j": {"k": [1]}, "mood": "ok", "n": 3,
            "odd": "whatever", "pair": "(1,,(2))", "pairs": "{\"(1,,(2))\"}", "t": "text"
        });
        let errors: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn complete_rows_validate_against_the_sourced_schema_and_strays_do_not() {
        let sourced = sourced_schema(&varied_table(), &SchemaOptions { source_tag: true, ..SchemaOptions::default() });
        let validator = strict_validator(&sourced);
        let pair = json!({"a": 1, "b": null, "inner": {"n": null}});
        let document = json!({
            "_meta": {
                "op": "u",
                "source": {"ts_ms": 1, "schema": "public", "table": "varied", "loc": [1, 2, 3], "txid": 7, "tag": "x"},
                "before": {"_meta_": null, "arr": null, "f": null, "id": "1", "j": null, "mood": null, "n": null,
                           "odd": null, "pair": null, "pairs": null, "t": ""}
            },
            "_meta_": "m", "arr": [1, null], "f": "NaN", "id": "1.5", "j": {"k": [1]}, "mood": "ok", "n": 3,
            "odd": "whatever", "pair": pair.clone(), "pairs": [pair, null], "t": "text"
        });
        let errors: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let mut nulls = document.clone();
        for column in ["_meta_", "arr", "f", "j", "mood", "n", "odd", "pair", "pairs"] {
            nulls[column] = Value::Null;
        }
        assert!(validator.is_valid(&nulls), "NULLs of nullable columns validate");

        let strays = [
            ("/stray", json!(1)),
            ("/_meta/stray", json!(1)),
            ("/_meta/source/stray", json!(1)),
            ("/_meta/before/stray", json!(1)),
            ("/pair/stray", json!(1)),
            ("/pair/inner/stray", json!(1)),
            ("/pairs/0/stray", json!(1)),
        ];
        for (pointer, value) in strays {
            let mut stray = document.clone();
            let (parent, name) = pointer.rsplit_once('/').unwrap();
            stray.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(name.into(), value);
            assert!(!validator.is_valid(&stray), "a property at {pointer} is refused");
        }
        let mut missing = document.clone();
        missing.as_object_mut().unwrap().remove("t");
        assert!(!validator.is_valid(&missing), "every column is required");
        let mut null_t = document;
        null_t["t"] = Value::Null;
        assert!(!validator.is_valid(&null_t), "a NOT NULL column is not null");
    }
}
