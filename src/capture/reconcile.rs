//! Binding reconciliation: the saved state x the open request's bindings -> the session's
//! bindings, the first checkpoint's patch, and where streaming resumes.
//!
//! Bindings are matched to their saved state by the runtime's `stateKey` (which changes
//! when the binding's backfill counter is bumped, so a bump is a new binding). Then:
//!
//! - a binding without saved state (or whose state says `Ignore`) starts `Pending`, and its
//!   key is set to null in the first checkpoint, so that stale state is cleared;
//! - saved state of a binding no longer requested is set to null (dropped from the state);
//! - with no binding carrying state, nothing in the stream is of value: the cursor is not
//!   resumed, but a cursor in the state still shows that this capture streamed from its
//!   slot before (see `slot::start_without_cursor`);
//! - [`activate`] then moves `Pending` bindings into their backfill mode (precise, normal,
//!   keyless, or none at all), stops backfills the configuration skips, and turns a precise
//!   backfill whose resume key cannot be compared here into a normal one; every binding it
//!   changes is recorded by the first checkpoint.
//!
//! Key columns: the binding's legacy `primary_key` override, else the collection key when it
//! names top-level columns, else the table's key ([`choose_key_columns`]); a resumed backfill
//! keeps the key columns its state recorded. A keyed backfill cannot page through a key
//! column that may hold NULL ([`unusable_backfill_key`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::order;
use super::state::{BindingState, CaptureState, TableMode};
use super::{keys, Binding};
use crate::config::{BackfillMode, Config, ResourceConfig};
use crate::discovery::{schema::column_of_pointer, DiscoveredTable, FALLBACK_KEY};
use crate::error::Error;
use crate::protocol::CaptureBinding;

/// The session's bindings, reconciled with the saved state.
pub(super) struct Reconciled {
    pub bindings: Vec<Binding>,
    /// The first checkpoint's binding patches: null for every binding that starts afresh and
    /// for the state of every binding no longer requested.
    pub patch: Map<String, Value>,
    /// The saved cursor to resume from, unless no binding carries state.
    pub cursor: Option<String>,
    /// Whether the state had a cursor, even if it is not resumed.
    pub streamed_before: bool,
}

/// Reconcile `state` with the requested bindings, each with its table from `tables`.
pub(super) fn reconcile(
    state: &CaptureState,
    requested: Vec<(ResourceConfig, &CaptureBinding)>,
    mut tables: BTreeMap<(String, String), DiscoveredTable>,
) -> Result<Reconciled, Error> {
    let mut bindings = Vec::with_capacity(requested.len());
    let mut patch = Map::new();
    let mut any_existing = false;
    for (resource, spec) in requested {
        let name = (resource.namespace.clone(), resource.stream.clone());
        let table = tables.remove(&name).ok_or_else(|| {
            Error::user(
                format!("stream \"{}.{}\" is a configured binding of this capture, but doesn't exist or isn't visible with current permissions", name.0, name.1),
                "create the table or grant the capture user access to it, or remove the binding",
            )
        })?;
        let state_key =
            if spec.state_key.is_empty() { format!("{}%2F{}", name.0, name.1) } else { spec.state_key.clone() };
        let existing = state.bindings.get(&state_key).filter(|s| s.mode != TableMode::Ignore).cloned();
        any_existing |= existing.is_some();
        let binding_state = existing.unwrap_or_else(|| {
            patch.insert(state_key.clone(), Value::Null);
            BindingState::pending()
        });
        bindings.push(new_binding(state_key, resource, &spec.collection.key, table, binding_state));
    }
    for key in state.bindings.keys() {
        if !bindings.iter().any(|b| b.state_key == *key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    let streamed_before = state.cursor.as_deref().is_some_and(|c| !c.is_empty());
    let cursor = state.cursor.clone().filter(|c| any_existing && !c.is_empty());
    Ok(Reconciled { bindings, patch, cursor, streamed_before })
}

/// A binding of the session, before any backfill detail is read.
fn new_binding(
    state_key: String,
    resource: ResourceConfig,
    collection_key: &[String],
    table: DiscoveredTable,
    state: BindingState,
) -> Binding {
    let keyed_by_location = collection_key.iter().map(String::as_str).eq(FALLBACK_KEY);
    let key_columns = choose_key_columns(&resource, collection_key, &table, keyed_by_location);
    let document_key = if keyed_by_location {
        Vec::new()
    } else {
        collection_key
            .iter()
            .map(|pointer| column_of_pointer(pointer).filter(|c| table.column(c).is_some()))
            .collect::<Option<Vec<String>>>()
            .unwrap_or_default()
    };
    Binding {
        state_key,
        resource,
        table,
        state,
        key_columns,
        keyed_by_location,
        document_key,
        key_types: None,
        key_signature: None,
        chunk_undo: None,
        keyless_pages: None,
        key_orders: None,
        scanned_key: None,
        chunk_limit: None,
        estimated_rows: None,
        binary_cells: true,
        reader_trial: Default::default(),
        last_chunk_end: None,
    }
}

/// Settle a binding's backfill mode when the session opens (`skip`: the configuration
/// skips the table's backfill): a `Pending` binding starts its backfill (or none), a
/// skipped backfill ends, and a precise backfill whose resume key cannot be compared here
/// continues as a normal one. Also sets the key columns (a resumed backfill keeps those its
/// state recorded) and how they compare. True: the binding's state changed.
pub(super) fn activate(binding: &mut Binding, skip: bool) -> bool {
    if let Some(columns) = binding.state.key_columns.clone().filter(|c| !c.is_empty()) {
        if binding.state.mode != TableMode::KeylessBackfill {
            binding.key_columns = columns;
        }
    }
    binding.key_orders = binding
        .key_columns
        .iter()
        .map(|k| binding.table.column(k).and_then(|c| order::key_order(&c.pg_type)))
        .collect::<Option<Vec<_>>>()
        .filter(|orders| !orders.is_empty());
    let table_name = format!("{}.{}", binding.table.schema, binding.table.name);
    if binding.state.mode == TableMode::Pending {
        let mode = backfill_mode(binding, skip);
        binding.state = BindingState {
            mode,
            key_columns: (!binding.key_columns.is_empty()).then(|| binding.key_columns.clone()),
            scanned: None,
            metadata: None,
            backfilled: 0,
            key_types: None,
        };
        tracing::info!(table = %table_name, mode = ?mode, observable = true, "backfill triggered");
        true
    } else if skip && binding.state.mode.is_backfilling() {
        binding.state.mode = TableMode::Active;
        binding.state.scanned = None;
        true
    } else if binding.state.mode == TableMode::Backfill {
        // A precise backfill (perhaps started by the Go connector) continues precisely
        // when its resume key can be compared here, and normally otherwise.
        let resumable = match (&binding.state.scanned, &binding.key_orders) {
            (None, Some(_)) => true,
            (Some(scanned), Some(orders)) => {
                let key = keys::decode_base64(scanned).ok().and_then(|e| order::key_from_elements(orders, &e));
                binding.scanned_key = key.clone();
                key.is_some()
            }
            _ => false,
        };
        if !resumable {
            binding.state.mode = TableMode::UnfilteredBackfill;
        }
        !resumable
    } else {
        false
    }
}

/// The mode a `Pending` binding starts in.
fn backfill_mode(binding: &Binding, skip: bool) -> TableMode {
    let has_filter = binding.resource.advanced.additional_backfill_filter.is_some();
    // Automatic mode is precise only where it costs nothing: text keys would need
    // `ORDER BY .. COLLATE "C"`, which cannot use an index in another collation.
    let precise_ok = binding.key_orders.is_some();
    let automatic_precise =
        precise_ok && !has_filter && binding.key_orders.as_ref().is_some_and(|o| !o.contains(&order::KeyOrder::Text));
    match binding.resource.mode {
        BackfillMode::OnlyChanges => TableMode::Active,
        _ if skip => TableMode::Active,
        _ if binding.key_columns.is_empty() => TableMode::KeylessBackfill,
        BackfillMode::Precise if precise_ok => TableMode::Backfill,
        BackfillMode::Precise => {
            tracing::warn!(table = %format!("{}.{}", binding.table.schema, binding.table.name), "the table's key types cannot be compared exactly: backfilling in normal mode");
            TableMode::UnfilteredBackfill
        }
        BackfillMode::Automatic if automatic_precise => TableMode::Backfill,
        _ => TableMode::UnfilteredBackfill,
    }
}

/// Key columns for backfill order and key-change detection: the resource's legacy
/// override, else the collection key when it names top-level columns, else the table's key.
pub(crate) fn choose_key_columns(
    resource: &ResourceConfig,
    collection_key: &[String],
    table: &DiscoveredTable,
    keyed_by_location: bool,
) -> Vec<String> {
    if let Some(columns) = &resource.primary_key {
        return columns.clone();
    }
    if resource.mode == BackfillMode::WithoutPrimaryKey || keyed_by_location {
        return Vec::new();
    }
    let from_collection: Option<Vec<String>> =
        collection_key.iter().map(|pointer| column_of_pointer(pointer).filter(|c| table.column(c).is_some())).collect();
    match from_collection {
        Some(columns) if !columns.is_empty() => columns,
        _ => table.key.clone(),
    }
}

/// Why a keyed backfill of `table` cannot page by `key_columns`, if it cannot: a column
/// that may hold NULL, or one the table does not have. Chunks are read with
/// `WHERE (k1, k2) > (..) ORDER BY k1, k2`, and a row-value comparison is never true for a
/// row whose key has a NULL part: such rows would be skipped, and the backfill would end at
/// the first chunk that ends on one (every later row compares as NULL). Several rows can
/// also share a NULL key, even under a unique index, and keyset paging needs unique keys,
/// so NULL keys cannot be paged correctly at all: the key must be NOT NULL. The table's own
/// key never gets here (discovery keys tables only by NOT NULL columns); a `primary_key`
/// override or a collection key chosen by the user can.
pub(crate) fn unusable_backfill_key(table: &DiscoveredTable, key_columns: &[String]) -> Option<UnusableKey> {
    let name = format!("{}.{}", table.schema, table.name);
    for column in key_columns {
        match table.column(column) {
            None => {
                return Some(UnusableKey {
                    message: format!(
                        "backfill key column {column:?} of table {name:?} does not exist (the binding's primary_key or collection key names it)"
                    ),
                    nullable: None,
                })
            }
            Some(c) if c.nullable => {
                return Some(UnusableKey {
                    message: format!(
                        "backfill key column {column:?} of table {name:?} is nullable, and a backfill in key order cannot page through NULL keys (rows would be missed)"
                    ),
                    nullable: Some(column.clone()),
                })
            }
            Some(_) => {}
        }
    }
    None
}

/// A key column a keyed backfill cannot page by (see [`unusable_backfill_key`]).
pub(crate) struct UnusableKey {
    pub message: String,
    /// The column, when it exists but may hold NULL (`SET NOT NULL` fixes that).
    pub nullable: Option<String>,
}

/// How to fix [`unusable_backfill_key`].
pub(crate) const UNUSABLE_KEY_HINT: &str = "declare the column NOT NULL (ALTER TABLE ... ALTER COLUMN ... SET NOT NULL), or key the binding by NOT NULL columns (its primary_key override or its collection key), or set the binding's mode to \"Without Primary Key\"";

/// Refuse to start or continue a keyed backfill whose key columns may hold NULL (see
/// [`unusable_backfill_key`]). Bindings whose backfill is done or skipped are not checked:
/// streaming does not page by the key.
pub(super) fn check_backfill_keys(bindings: &[Binding], config: &Config) -> Result<(), Error> {
    for binding in bindings {
        let table = &binding.table;
        let key_columns = match binding.state.mode {
            TableMode::Backfill | TableMode::UnfilteredBackfill => binding
                .state
                .key_columns
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| binding.key_columns.clone()),
            TableMode::Pending
                if binding.resource.mode != BackfillMode::OnlyChanges
                    && !config.skips_backfill(&table.schema, &table.name) =>
            {
                binding.key_columns.clone()
            }
            _ => continue,
        };
        if let Some(problem) = unusable_backfill_key(table, &key_columns) {
            return Err(Error::user(problem.message, UNUSABLE_KEY_HINT));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Column;
    use crate::value::PgType;
    use serde_json::json;

    fn column(name: &str, ty: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            type_oid: 0,
            typmod: -1,
            pg_type: PgType::Builtin { name: ty.into(), typmod: -1 },
            nullable,
            generated: false,
            comment: None,
        }
    }

    /// Tables `public.t` (int key `id`, text `name`, numeric `amount`, nullable `note`) and
    /// `public.u` (no key).
    fn tables() -> BTreeMap<(String, String), DiscoveredTable> {
        let table = |name: &str, columns: Vec<Column>, key: &[&str]| DiscoveredTable {
            oid: 1,
            schema: "public".into(),
            name: name.into(),
            relkind: 'r',
            is_partition: false,
            published: true,
            columns,
            key: key.iter().map(|k| k.to_string()).collect(),
            key_is_unique_index: false,
        };
        let t = table(
            "t",
            vec![
                column("id", "int4", false),
                column("name", "text", false),
                column("amount", "numeric", false),
                column("note", "text", true),
            ],
            &["id"],
        );
        let u = table("u", vec![column("x", "int4", true)], &[]);
        [t, u].into_iter().map(|t| (("public".to_string(), t.name.clone()), t)).collect()
    }

    fn spec(resource: Value, key: &[&str], state_key: &str) -> (ResourceConfig, CaptureBinding) {
        let mut binding =
            CaptureBinding { resource_config: resource, state_key: state_key.into(), ..Default::default() };
        binding.collection.key = key.iter().map(|k| k.to_string()).collect();
        (ResourceConfig::parse(0, &binding.resource_config).unwrap(), binding)
    }

    fn reconciled(state: Value, specs: &[(ResourceConfig, CaptureBinding)]) -> Reconciled {
        let state = CaptureState::parse(&state).unwrap();
        reconcile(&state, specs.iter().map(|(r, b)| (r.clone(), b)).collect(), tables()).unwrap()
    }

    fn t(mode: &str) -> (ResourceConfig, CaptureBinding) {
        spec(json!({"namespace": "public", "stream": "t", "mode": mode}), &["/id"], "public%2Ft.v1")
    }

    fn activated(binding: &mut Binding) -> (bool, TableMode) {
        (activate(binding, false), binding.state.mode)
    }

    #[test]
    fn new_bindings_start_pending_and_clear_stale_state() {
        let r = reconciled(json!({"cursor": "0/10"}), &[t("")]);
        assert_eq!(r.bindings[0].state.mode, TableMode::Pending);
        assert_eq!(Value::Object(r.patch), json!({"public%2Ft.v1": null}));
        assert_eq!(r.cursor, None, "no binding carries state: nothing in the stream is of value");
        assert!(r.streamed_before);
        let mut binding = reconciled(Value::Null, &[t("")]).bindings.remove(0);
        assert_eq!(activated(&mut binding), (true, TableMode::Backfill), "an integer key is precise");
        assert_eq!(binding.state.key_columns, Some(vec!["id".to_string()]));
    }

    #[test]
    fn removed_bindings_are_dropped_from_the_state_and_existing_ones_resume() {
        let state = json!({"cursor": "0/10", "bindingStateV1": {
            "public%2Ft.v1": {"mode": "Active", "backfilled": 5},
            "public%2Fgone": {"mode": "Active"}
        }});
        let r = reconciled(state, &[t("")]);
        assert_eq!(Value::Object(r.patch), json!({"public%2Fgone": null}));
        assert_eq!(r.cursor.as_deref(), Some("0/10"));
        assert_eq!(r.bindings[0].state.backfilled, 5);
        let mut binding = r.bindings.into_iter().next().unwrap();
        assert_eq!(activated(&mut binding), (false, TableMode::Active));
    }

    #[test]
    fn a_bumped_backfill_counter_is_a_new_binding_that_backfills_again() {
        let state = json!({"cursor": "0/10", "bindingStateV1": {"public%2Ft.v1": {"mode": "Active", "backfilled": 5}}});
        let (resource, mut binding) = t("");
        binding.state_key = "public%2Ft.v2".into();
        binding.backfill = 2;
        let r = reconciled(state, &[(resource, binding)]);
        assert_eq!(Value::Object(r.patch.clone()), json!({"public%2Ft.v1": null, "public%2Ft.v2": null}));
        assert_eq!((r.cursor, r.streamed_before), (None, true));
        let mut binding = r.bindings.into_iter().next().unwrap();
        assert_eq!(activated(&mut binding), (true, TableMode::Backfill));
        assert_eq!(binding.state.backfilled, 0);
    }

    #[test]
    fn ignored_state_counts_as_none() {
        let state = json!({"cursor": "0/10", "bindingStateV1": {"public%2Ft.v1": {"mode": "Ignore"}}});
        let r = reconciled(state, &[t("")]);
        assert_eq!(r.bindings[0].state.mode, TableMode::Pending);
        assert_eq!(r.cursor, None);
    }

    #[test]
    fn the_backfill_mode_follows_the_resource_and_the_key_types() {
        let mode_of = |spec: (ResourceConfig, CaptureBinding), skip: bool| {
            let mut binding = reconciled(Value::Null, &[spec]).bindings.remove(0);
            activate(&mut binding, skip);
            binding.state.mode
        };
        assert_eq!(mode_of(t("Only Changes"), false), TableMode::Active);
        assert_eq!(mode_of(t(""), true), TableMode::Active, "a skipped backfill");
        assert_eq!(mode_of(t("Normal"), false), TableMode::UnfilteredBackfill);
        assert_eq!(mode_of(t("Without Primary Key"), false), TableMode::KeylessBackfill);
        let keyed_by =
            |key: &[&str], mode: &str| spec(json!({"namespace": "public", "stream": "t", "mode": mode}), key, "k");
        assert_eq!(mode_of(keyed_by(&["/name"], ""), false), TableMode::UnfilteredBackfill, "text keys: normal");
        assert_eq!(mode_of(keyed_by(&["/name"], "Precise"), false), TableMode::Backfill);
        assert_eq!(mode_of(keyed_by(&["/amount"], "Precise"), false), TableMode::UnfilteredBackfill);
        let keyless = spec(json!({"namespace": "public", "stream": "u"}), &["/x"], "u");
        assert_eq!(mode_of(keyless, false), TableMode::Backfill, "keyed by the column the collection key names");
        let located = spec(json!({"namespace": "public", "stream": "u"}), &FALLBACK_KEY, "u");
        assert_eq!(mode_of(located, false), TableMode::KeylessBackfill);
    }

    #[test]
    fn a_resumed_backfill_keeps_its_recorded_keys_and_stops_when_skipped() {
        let state = json!({"cursor": "0/10", "bindingStateV1": {"public%2Ft.v1": {
            "mode": "UnfilteredBackfill", "key_columns": ["name"], "scanned": "AkIAFQQ=", "backfilled": 3
        }}});
        let mut binding = reconciled(state.clone(), &[t("")]).bindings.remove(0);
        assert_eq!(binding.key_columns, vec!["id".to_string()], "chosen from the collection key");
        assert!(!activate(&mut binding, false));
        assert_eq!(binding.key_columns, vec!["name".to_string()], "the recorded key columns win");
        let mut skipped = reconciled(state, &[t("")]).bindings.remove(0);
        assert!(activate(&mut skipped, true));
        assert_eq!((skipped.state.mode, skipped.state.scanned.as_deref()), (TableMode::Active, None));
    }

    #[test]
    fn a_precise_backfill_continues_normally_when_its_resume_key_cannot_be_compared() {
        // ("B", 4) does not fit an integer key.
        let resumed = |scanned: &str| {
            let state = json!({"cursor": "0/10", "bindingStateV1": {"public%2Ft.v1": {
                "mode": "Backfill", "key_columns": ["id"], "scanned": scanned
            }}});
            let mut binding = reconciled(state, &[t("")]).bindings.remove(0);
            (activate(&mut binding, false), binding.state.mode, binding.scanned_key)
        };
        assert_eq!(resumed("AkIAFQQ="), (true, TableMode::UnfilteredBackfill, None));
        let seven = keys::encode_base64(&[keys::Element::Int(7)]);
        assert_eq!(resumed(&seven), (false, TableMode::Backfill, Some(vec![order::KeyValue::Integer(7)])));
    }

    #[test]
    fn missing_tables_and_nullable_backfill_keys_are_refused() {
        let state = CaptureState::default();
        let (resource, binding) = spec(json!({"namespace": "public", "stream": "nope"}), &["/id"], "n");
        assert!(reconcile(&state, vec![(resource, &binding)], tables()).is_err());
        let config =
            Config::parse(&json!({"address": "db", "credentials": {"auth_type": "UserPassword", "password": "pw"}}))
                .unwrap();
        let by_note = spec(json!({"namespace": "public", "stream": "t"}), &["/note"], "t");
        let r = reconciled(Value::Null, &[by_note]);
        let err = check_backfill_keys(&r.bindings, &config).unwrap_err();
        assert!(err.to_string().contains("\"note\""), "{err}");
        let only_changes = spec(json!({"namespace": "public", "stream": "t", "mode": "Only Changes"}), &["/note"], "t");
        assert!(check_backfill_keys(&reconciled(Value::Null, &[only_changes]).bindings, &config).is_ok());
    }
}
