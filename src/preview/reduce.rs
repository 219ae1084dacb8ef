//! Reductions of documents that share a collection key, as the Flow runtime applies them.
//!
//! Supports what discovered schemas declare: `reduce.strategy` of `merge` (objects merge
//! property by property, recursively), `lastWriteWins` (the default), `firstWriteWins`, and
//! `delete: true`, found through `allOf`, `$ref` to `$anchor`s, and `if`/`then`/`else`.
//! `if` is evaluated with the keywords such conditions use (`properties`, `required`,
//! `const`, `enum`); other keywords are treated as satisfied.

use std::collections::BTreeMap;

use serde_json::Value;

pub struct Reducer {
    schema: Value,
    key: Vec<String>,
    anchors: BTreeMap<String, Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Merge,
    LastWriteWins,
    FirstWriteWins,
}

fn collect_anchors(schema: &Value, anchors: &mut BTreeMap<String, Value>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(anchor)) = map.get("$anchor") {
                anchors.insert(anchor.clone(), schema.clone());
            }
            for value in map.values() {
                collect_anchors(value, anchors);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_anchors(item, anchors)),
        _ => {}
    }
}

fn satisfies(condition: &Value, doc: &Value) -> bool {
    let Some(map) = condition.as_object() else { return true };
    if let Some(expected) = map.get("const") {
        if doc != expected {
            return false;
        }
    }
    if let Some(Value::Array(options)) = map.get("enum") {
        if !options.contains(doc) {
            return false;
        }
    }
    if let (Some(Value::Array(required)), Some(object)) = (map.get("required"), doc.as_object()) {
        if required.iter().filter_map(Value::as_str).any(|r| !object.contains_key(r)) {
            return false;
        }
    }
    if let (Some(Value::Object(properties)), Some(object)) = (map.get("properties"), doc.as_object()) {
        for (name, sub) in properties {
            if let Some(value) = object.get(name) {
                if !satisfies(sub, value) {
                    return false;
                }
            }
        }
    }
    true
}

impl Reducer {
    pub fn new(schema: &Value, key: &[String]) -> Self {
        let mut anchors = BTreeMap::new();
        collect_anchors(schema, &mut anchors);
        Reducer { schema: schema.clone(), key: key.to_vec(), anchors }
    }

    /// The schemas that apply to `doc` at a location, starting from `schema`.
    fn applicable<'s>(&'s self, schema: &'s Value, doc: &Value, out: &mut Vec<&'s Value>, depth: u32) {
        if depth > 16 || !schema.is_object() {
            return;
        }
        out.push(schema);
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            if let Some(target) = reference.strip_prefix('#').and_then(|a| self.anchors.get(a)) {
                self.applicable(target, doc, out, depth + 1);
            }
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for item in all {
                self.applicable(item, doc, out, depth + 1);
            }
        }
        if let Some(condition) = schema.get("if") {
            let branch = if satisfies(condition, doc) { schema.get("then") } else { schema.get("else") };
            if let Some(branch) = branch {
                self.applicable(branch, doc, out, depth + 1);
            }
        }
    }

    fn annotations(&self, schemas: &[&Value]) -> (Strategy, bool) {
        for schema in schemas {
            if let Some(reduce) = schema.get("reduce") {
                let strategy = match reduce.get("strategy").and_then(Value::as_str) {
                    Some("merge") => Strategy::Merge,
                    Some("firstWriteWins") => Strategy::FirstWriteWins,
                    _ => Strategy::LastWriteWins,
                };
                return (strategy, reduce.get("delete").and_then(Value::as_bool).unwrap_or(false));
            }
        }
        (Strategy::LastWriteWins, false)
    }

    fn reduce_at(&self, schemas: &[&Value], lhs: Option<Value>, rhs: Value) -> Value {
        let Some(lhs) = lhs else { return rhs };
        let mut applicable = Vec::new();
        for schema in schemas {
            self.applicable(schema, &rhs, &mut applicable, 0);
        }
        match self.annotations(&applicable).0 {
            Strategy::FirstWriteWins => lhs,
            Strategy::LastWriteWins => rhs,
            Strategy::Merge => match (lhs, rhs) {
                (Value::Object(mut left), Value::Object(right)) => {
                    for (name, value) in right {
                        let children: Vec<&Value> =
                            applicable.iter().filter_map(|s| s.get("properties").and_then(|p| p.get(&name))).collect();
                        let previous = left.remove(&name);
                        let reduced = self.reduce_at(&children, previous, value);
                        left.insert(name, reduced);
                    }
                    Value::Object(left)
                }
                (_, rhs) => rhs,
            },
        }
    }

    /// Whether the root annotations mark `doc` as a deletion.
    pub fn is_deletion(&self, doc: &Value) -> bool {
        let mut applicable = Vec::new();
        self.applicable(&self.schema, doc, &mut applicable, 0);
        self.annotations(&applicable).1
    }

    /// The document's key as JSON text (deterministic map key).
    pub fn key_of(&self, doc: &Value) -> anyhow::Result<String> {
        let mut values = Vec::with_capacity(self.key.len());
        for pointer in &self.key {
            values.push(
                doc.pointer(pointer).cloned().ok_or_else(|| anyhow::anyhow!("document lacks key {pointer}: {doc}"))?,
            );
        }
        Ok(serde_json::to_string(&values)?)
    }

    /// Combine a document into a transaction's documents.
    pub fn add(&self, documents: &mut BTreeMap<String, Value>, doc: Value) -> anyhow::Result<()> {
        let key = self.key_of(&doc)?;
        let previous = documents.remove(&key);
        let reduced = self.reduce_at(&[&self.schema], previous, doc);
        documents.insert(key, reduced);
        Ok(())
    }

    /// Apply a committed document to the collection's current documents.
    pub fn combine_into(&self, totals: &mut BTreeMap<String, Value>, key: String, doc: Value) {
        if self.is_deletion(&doc) {
            totals.remove(&key);
            return;
        }
        let previous = totals.remove(&key);
        let reduced = self.reduce_at(&[&self.schema], previous, doc);
        totals.insert(key, reduced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "$defs": {"Row": {"$anchor": "Row", "type": "object", "properties": {"id": {}, "a": {}, "b": {}}}},
            "allOf": [
                {
                    "properties": {"_meta": {"properties": {"before": {"reduce": {"strategy": "firstWriteWins"}}}, "reduce": {"strategy": "merge"}}},
                    "if": {"properties": {"_meta": {"properties": {"op": {"const": "d"}}}}},
                    "then": {"reduce": {"strategy": "merge", "delete": true}},
                    "else": {"reduce": {"strategy": "merge"}}
                },
                {"$ref": "#Row"}
            ]
        })
    }

    #[test]
    fn merge_fills_omitted_columns_and_deletes_remove_keys() {
        let reducer = Reducer::new(&schema(), &["/id".to_string()]);
        let mut totals = BTreeMap::new();
        let insert = json!({"id": 1, "a": "big", "b": 1, "_meta": {"op": "c"}});
        let update = json!({"id": 1, "b": 2, "_meta": {"op": "u", "before": {"id": 1}}});
        reducer.combine_into(&mut totals, reducer.key_of(&insert).unwrap(), insert);
        reducer.combine_into(&mut totals, "[1]".into(), update);
        assert_eq!(totals["[1]"], json!({"id": 1, "a": "big", "b": 2, "_meta": {"op": "u", "before": {"id": 1}}}));
        let delete = json!({"id": 1, "_meta": {"op": "d"}});
        assert!(reducer.is_deletion(&delete));
        reducer.combine_into(&mut totals, "[1]".into(), delete);
        assert!(totals.is_empty());
    }

    #[test]
    fn transactions_combine_by_key_and_first_write_wins_for_before() {
        let reducer = Reducer::new(&schema(), &["/id".to_string()]);
        let mut transaction = BTreeMap::new();
        reducer.add(&mut transaction, json!({"id": 2, "a": 1, "_meta": {"op": "u", "before": {"a": 0}}})).unwrap();
        reducer.add(&mut transaction, json!({"id": 2, "a": 2, "_meta": {"op": "u", "before": {"a": 1}}})).unwrap();
        assert_eq!(transaction["[2]"], json!({"id": 2, "a": 2, "_meta": {"op": "u", "before": {"a": 0}}}));
        assert!(reducer.add(&mut transaction, json!({"a": 1})).is_err());
    }
}
