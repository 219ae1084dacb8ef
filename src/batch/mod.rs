//! Batch capture: the `source-postgres-batch` connector, for servers without logical
//! replication (`wal_level=replica`, read replicas, locked-down hosts), for views, and for
//! queries.
//!
//! It speaks the same Flow capture protocol as the CDC connector and shares its pieces: the
//! stdin reader and the single stdout writer ([`crate::protocol`]), connections with TLS and
//! the pinned session settings ([`crate::pg`]), the catalog reading and column schemas of
//! discovery ([`crate::discovery`]), and the value encoder ([`crate::value`]), so a column
//! has the same JSON form in both. It needs only `SELECT` on what it captures: no
//! `REPLICATION`, no publication, no slot, nothing written to the database.
//!
//! Configuration, resources, documents and state follow Estuary's Go
//! `source-postgres-batch`, so a capture can move between the two (see [`config`],
//! [`state`]). Each binding polls on a schedule ([`schedule`]) in one of three modes:
//!
//! - **xmin** (`cursor: ["txid"]`, the default for discovered tables): each poll scans the
//!   table in page (ctid) ranges and keeps rows whose `xmin` — the transaction that wrote
//!   them — is in a window `[BaseXID, NextXID)` of 32-bit ids compared circularly, so it
//!   stays right across the wraparound ([`query`]). `NextXID` is taken when a scan starts
//!   (every transaction before it has ended) and becomes the next scan's `BaseXID`: every
//!   insert and update is captured once, by the scan that follows it. Deletes are not seen.
//!   A table rewrite (`VACUUM FULL`, `CLUSTER`, ...) moves rows between pages: the state
//!   records the storage files a scan in progress has read (`ScanFilenodes`), and a scan
//!   that finds other files, in the same session or a later one, starts again from its first
//!   page, so no rewrite loses rows (rows read again are emitted again). With
//!   `SHUTDOWN_AFTER_POLLING`, a session that resumes a scan mid-table ends once that scan
//!   (whose window was fixed before) completes: later writes are left for the next run.
//! - **cursor** (`cursor: ["col", ...]`): `SELECT * ... WHERE cursor > last ORDER BY cursor`,
//!   resumed from the last cursor value in the state; rows must get growing cursor values.
//! - **full refresh** (no cursor, the default for views): the whole result at every poll;
//!   with the fallback key `/_meta/row_id`, rows past the new end are deleted.
//!
//! A `template` replaces the built-in query ([`template`]: Go `text/template` syntax, with
//! cursor values as `$1`, `$2`, ... parameters). Every poll reads through a server-side
//! cursor a batch of rows at a time, so memory stays bounded, and checkpoints after its
//! documents; how a kill at any moment resumes without a loss is explained in [`capture`].
//!
//! # Layout
//! - [`config`]: endpoint and resource configuration; [`schedule`]: polling schedules.
//! - [`discover`]: tables and views as bindings.
//! - [`query`]: the built-in queries, text parameters and transaction-id comparison.
//! - [`template`]: query templates; [`state`]: the checkpoint state; [`clock`]: timestamps.
//! - [`capture`]: the polling session.

pub mod capture;
pub mod clock;
pub mod config;
pub mod discover;
pub mod query;
pub mod schedule;
pub mod state;
pub mod template;

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::Value;
use tokio_postgres::Client;

use crate::error::Error;
use crate::protocol::emitter::Emitter;
use crate::protocol::responses::{SpecResponse, ValidatedBinding};
use crate::protocol::{Request, RequestReader, Validate, PROTOCOL_VERSION};
use config::{BatchConfig, BatchEndpointConfig, BatchResource};

pub const DOCUMENTATION_URL: &str = "https://go.estuary.dev/source-postgres-batch";

/// JSON Schema of the endpoint configuration.
pub fn endpoint_config_schema() -> Value {
    let mut schema = crate::spec::generate::<BatchEndpointConfig>();
    for field in ["address", "password"] {
        if let Some(property) = schema.pointer_mut(&format!("/properties/{field}")).and_then(Value::as_object_mut) {
            property.remove("default");
        }
    }
    if let Some(object) = schema.as_object_mut() {
        object.insert("required".into(), serde_json::json!(["address", "user", "password"]));
    }
    crate::spec::strip_null_options(&mut schema);
    schema
}

/// JSON Schema of a resource.
pub fn resource_config_schema() -> Value {
    let mut schema = crate::spec::generate::<BatchResource>();
    if let Some(object) = schema.as_object_mut() {
        object.insert("required".into(), serde_json::json!(["name"]));
    }
    if let Some(name) = schema.pointer_mut("/properties/name").and_then(Value::as_object_mut) {
        name.remove("default");
    }
    crate::spec::strip_null_options(&mut schema);
    schema
}

pub fn spec_response() -> SpecResponse {
    SpecResponse {
        protocol: PROTOCOL_VERSION,
        config_schema: endpoint_config_schema(),
        resource_config_schema: resource_config_schema(),
        documentation_url: DOCUMENTATION_URL.to_string(),
        resource_path_pointers: vec!["/name".to_string()],
    }
}

/// The process entry point of `source-postgres-batch`: requests on stdin, responses on
/// stdout, JSON logs on stderr, exit 1 with one error line on failure.
pub fn main() -> ExitCode {
    crate::log::init();
    crate::log::install_panic_hook();
    let mut args = std::env::args().skip(1);
    if let Some(arg) = args.next() {
        let (text, code) = match arg.as_str() {
            "--version" | "-V" => (format!("source-postgres-batch {}", env!("CARGO_PKG_VERSION")), 0),
            "--help" | "-h" => ("source-postgres-batch: a PostgreSQL batch (polling) capture connector for Flow.\nRun without arguments: Flow capture protocol requests on stdin, responses on stdout.".to_string(), 0),
            other => (format!("unexpected argument {other:?}: run without arguments"), 2),
        };
        println!("{text}");
        return ExitCode::from(code);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
    };
    let result = runtime.block_on(run_connector());
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::log::log_error(&err);
            ExitCode::from(1)
        }
    }
}

fn fail(message: &str) -> ExitCode {
    crate::log::log_fatal(message, BTreeMap::new());
    ExitCode::from(1)
}

/// Run the batch connector over stdin/stdout until end of input (or the capture ends).
pub async fn run_connector() -> Result<(), Error> {
    let stdin = tokio::io::BufReader::with_capacity(1 << 20, crate::protocol::stdio::Input::open());
    let mut emitter = Emitter::new(crate::protocol::stdio::Output::open());
    serve(RequestReader::new(stdin), &mut emitter).await
}

/// Answer requests in a loop, as the CDC connector's `serve` does.
pub async fn serve<R, W>(mut reader: RequestReader<R>, emitter: &mut Emitter<W>) -> Result<(), Error>
where
    R: tokio::io::AsyncBufRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    while let Some(request) = reader.next().await? {
        match request {
            Request::Spec => emitter.spec(&spec_response()).await.map_err(Error::Output)?,
            Request::Discover(discover) => {
                let config = BatchConfig::parse(&discover.config)?;
                let bindings = discover::discover(&config).await?;
                emitter.discovered(&bindings).await.map_err(Error::Output)?;
            }
            Request::Validate(request) => {
                let bindings = validate(&request).await?;
                emitter.validated(&bindings).await.map_err(Error::Output)?;
            }
            // Nothing to set up on the server: apply does nothing.
            Request::Apply(_) => emitter.applied("").await.map_err(Error::Output)?,
            Request::Open(open) => return capture::run(*open, reader, emitter).await,
            Request::Acknowledge(_) => {
                return Err(Error::user(
                    "received an acknowledge request outside of a capture session",
                    "send \"open\" before acknowledging checkpoints",
                ));
            }
        }
    }
    emitter.flush().await.map_err(Error::Output)
}

/// Check the configuration and every binding against the server: the relation exists and
/// can be read, cursor columns exist, a template renders to a query the server accepts.
/// Needs no replication privilege and works on any `wal_level`.
pub async fn validate(request: &Validate) -> Result<Vec<ValidatedBinding>, Error> {
    let config = BatchConfig::parse(&request.config)?;
    let mut resources = Vec::with_capacity(request.bindings.len());
    for (index, binding) in request.bindings.iter().enumerate() {
        resources.push(BatchResource::parse(index, &binding.resource_config)?);
    }
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    for (resource, binding) in resources.iter().zip(&request.bindings) {
        let columns = if resource.template.trim().is_empty() {
            validate_table(&client, resource).await?
        } else {
            validate_template(&client, resource).await?
        };
        // Every document must carry the collection key: its columns must be in the result.
        let key_columns = binding.collection.key.iter().filter_map(|p| crate::discovery::schema::column_of_pointer(p));
        for key in key_columns {
            if !columns.contains(&key) {
                return Err(Error::user(
                    format!(
                        "the collection key of resource {:?} needs column {key:?}, which its query does not return",
                        resource.name
                    ),
                    "change the collection key to columns the table or query has (or /_meta/row_id)",
                ));
            }
        }
    }
    Ok(resources.into_iter().map(|r| ValidatedBinding { resource_path: vec![r.name] }).collect())
}

const RELATION_SQL: &str = "
    SELECT c.relkind::text, pg_catalog.has_table_privilege(c.oid, 'SELECT'),
           ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = $2";

/// Check a table binding; returns the table's columns (with `txid` in xmin mode).
async fn validate_table(client: &Client, resource: &BatchResource) -> Result<Vec<String>, Error> {
    let display = crate::validate::display_name(&resource.schema, &resource.table);
    let row = client.query_opt(RELATION_SQL, &[&resource.schema, &resource.table]).await?.ok_or_else(|| {
        Error::user(
            format!("table {display} of resource {:?} does not exist (or is not visible to the user)", resource.name),
            "check \"schema\" and \"table\" (names are case-sensitive), and the user's USAGE privilege on the schema",
        )
    })?;
    let (relkind, readable, mut columns): (String, bool, Vec<String>) = (row.get(0), row.get(1), row.get(2));
    if !readable {
        return Err(Error::user(
            format!("the user cannot read {display} of resource {:?}", resource.name),
            format!("GRANT SELECT ON {} TO <the capture user>;", query::quote_table(&resource.schema, &resource.table)),
        ));
    }
    if resource.is_xmin() {
        if !matches!(relkind.as_str(), "r" | "p" | "m") {
            return Err(Error::user(
                format!("{display} of resource {:?} is a view, which has no xmin to poll by", resource.name),
                "set the resource's \"cursor\" to [] (re-read at every poll) or to columns that grow",
            ));
        }
        columns.push("txid".into());
        return Ok(columns);
    }
    for cursor in &resource.cursor {
        if !columns.contains(cursor) {
            return Err(Error::user(
                format!("cursor column {cursor:?} of resource {:?} is not a column of {display}", resource.name),
                format!("set \"cursor\" to columns of the table (it has {})", columns.join(", ")),
            ));
        }
    }
    Ok(columns)
}

/// Check a template binding by rendering and preparing its queries; returns the first
/// query's result columns.
async fn validate_template(client: &Client, resource: &BatchResource) -> Result<Vec<String>, Error> {
    let mut result_columns = Vec::new();
    let parsed = template::Template::parse(&resource.template).map_err(|err| {
        Error::user(format!("the query template of resource {:?} is invalid: {err}", resource.name), "fix the template")
    })?;
    let firsts: &[bool] = if resource.cursor.is_empty() { &[true] } else { &[true, false] };
    for first in firsts {
        let mut data = template::Data::new();
        data.insert("IsFirstQuery".into(), template::Value::Bool(*first));
        data.insert(
            "CursorFields".into(),
            template::Value::List(
                resource.cursor.iter().map(|c| template::Value::Str(crate::pg::quote_identifier(c))).collect(),
            ),
        );
        data.insert("SchemaName".into(), template::Value::Str(resource.schema.clone()));
        data.insert("TableName".into(), template::Value::Str(resource.table.clone()));
        let which = if *first { "first" } else { "subsequent" };
        let sql = parsed.render(&data).map_err(|err| {
            Error::user(
                format!("the query template of resource {:?} does not render its {which} query: {err}", resource.name),
                "fix the template",
            )
        })?;
        let statement = client.prepare(&sql).await.map_err(|err| {
            Error::user(
                format!(
                    "the {which} query of resource {:?} is refused by the server: {} (query: {sql})",
                    resource.name,
                    crate::pg::PgError::from(err)
                ),
                "the template must render one SELECT statement, with $1, $2, ... standing for the cursor values",
            )
        })?;
        let expected = if *first { 0 } else { resource.cursor.len() };
        if statement.params().len() != expected {
            return Err(Error::user(
                format!(
                    "the {which} query of resource {:?} has {} parameter(s), but it is given {expected} (its cursor's values{}) (query: {sql})",
                    resource.name,
                    statement.params().len(),
                    if *first { ", none before the first poll" } else { "" }
                ),
                "use $1, $2, ... for the cursor columns' values only when .IsFirstQuery is false",
            ));
        }
        let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
        if let Some(missing) = resource.cursor.iter().find(|c| !names.contains(&c.as_str())) {
            return Err(Error::user(
                format!(
                    "cursor column {missing:?} of resource {:?} is not a column of its query's result",
                    resource.name
                ),
                format!("the query returns {}", names.join(", ")),
            ));
        }
        if *first {
            result_columns = names.iter().map(|n| n.to_string()).collect();
        }
    }
    Ok(result_columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(path: &str) -> Value {
        let text =
            std::fs::read_to_string(format!("{}/spec/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|err| {
                panic!("spec/{path} is missing ({err}): run `cargo run --bin source-postgres -- schemas --write`")
            });
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn batch_schemas_match_the_committed_spec_files_and_go_names() {
        let endpoint = endpoint_config_schema();
        assert_eq!(
            endpoint,
            committed("batch-endpoint-config.schema.json"),
            "review and run `cargo run --bin source-postgres -- schemas --write`"
        );
        assert_eq!(resource_config_schema(), committed("batch-resource-config.schema.json"));
        assert_eq!(endpoint["properties"]["password"]["secret"], true);
        assert_eq!(endpoint["required"], serde_json::json!(["address", "user", "password"]));
        assert!(endpoint.get("additionalProperties").is_none(), "the root must stay open for sops");
        assert_eq!(resource_config_schema()["required"], serde_json::json!(["name"]));
    }
}
