//! The batch capture session (`open`): poll each binding on its schedule, emit its rows as
//! documents, checkpoint its state.
//!
//! ```text
//!   open ─► state reconciled per binding ─► opened
//!     loop: the binding due first ─► wait (stdin EOF ends the session) ─► poll:
//!        BEGIN; DECLARE cursor FOR <query>; FETCH n ... (documents); CLOSE; COMMIT
//!        checkpoints: during the poll where a resume is safe, and after it
//! ```
//!
//! Rows are read through a server-side cursor, a bounded batch at a time, so memory stays
//! bounded whatever the result's size; each value is encoded from its text form by the CDC
//! connector's encoder ([`crate::value`]). Only this session writes stdout, through the
//! [`Emitter`].
//!
//! Why a kill at any moment loses nothing: every checkpoint describes a prefix of the poll
//! whose documents were all written before it, and the next session starts from the last
//! committed checkpoint:
//! - cursor mode persists the cursor of the last row of a *complete* group of equal cursor
//!   values (the server confirms it is strictly before the next row's), so resuming with
//!   `cursor > persisted` reads again exactly the rows not yet covered; at the end of a poll
//!   the last row's cursor is persisted (rows added later with that same cursor value are
//!   not captured: a cursor must grow);
//! - xmin mode scans the table in page ranges and persists the range done; a restart goes
//!   on from there with the same transaction-id window. A table rewrite (`VACUUM FULL`,
//!   `CLUSTER`) keeps rows' xmin but moves them, maybe into pages already read: when a
//!   chunk finds the table's storage files changed since the session's scan began, the scan
//!   starts again from the first page (a rewrite while no session runs is not noticed);
//! - full refresh persists nothing mid-poll that a restart would skip: it polls again from
//!   the start (its `DocumentCount` changes only once the poll completed).
//!
//! Documents emitted after the last committed checkpoint are emitted again: the collection
//! key reduces them.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use super::clock::{format_rfc3339, parse_rfc3339};
use super::config::{BatchConfig, BatchResource};
use super::discover::ROW_ID_KEY;
use super::query::{self, TextParam};
use super::schedule::Schedule;
use super::state::{cursor_param, BatchState, StreamState, MODE_QUERY, MODE_XMIN};
use super::template::{self, Template};
use crate::capture::document::{write_document_with_meta, DocumentLayout, EncodedRow};
use crate::discovery::catalog::TypeRegistry;
use crate::discovery::schema::column_of_pointer;
use crate::error::Error;
use crate::pg::PgError;
use crate::protocol::emitter::Emitter;
use crate::protocol::{Open, Request, RequestReader};
use crate::value::{self, PgType};

/// Rows per FETCH (override: `FLOW_BATCH_FETCH_ROWS`, for tests and tuning).
const FETCH_ROWS: usize = 2_000;
/// Documents between checkpoints within a poll (at the next point where one is safe).
const DOCUMENTS_PER_CHECKPOINT: u64 = 1_000;
/// The server-side cursor of a poll (one at a time on the session's connection).
const CURSOR: &str = "flow_batch_poll";
/// Pause before polling again after a statement timeout or a recovery conflict.
const RETRY_AFTER_CANCEL: Duration = Duration::from_secs(1);

/// A binding of this session.
struct Binding {
    index: u32,
    state_key: String,
    resource: BatchResource,
    schedule: Schedule,
    state: StreamState,
    template: Option<Template>,
    /// The collection is keyed by `/_meta/row_id`: `op` can be told, deletes inferred.
    row_id_key: bool,
    /// Columns named by the collection key (their floats are written as key strings, and
    /// every document must carry them).
    key_columns: BTreeSet<String>,
    /// Not before this instant (after a cancelled query).
    not_before: Option<SystemTime>,
    polled_this_session: bool,
}

/// How a result's columns become documents.
struct Shape {
    names: Vec<String>,
    types: Vec<PgType>,
    pg_types: Vec<Type>,
    /// Result columns that become properties, in order.
    output: Vec<usize>,
    layout: DocumentLayout,
    cursor_positions: Vec<usize>,
}

/// Cursor values of a row, as text (`None`: NULL).
type CursorText = Vec<Option<String>>;

/// Where a group of equal cursors ends: its cursor, the next row's, and the next row id.
type Boundary = (CursorText, CursorText, i64);

/// A column of a query's result.
struct ResultColumn {
    name: String,
    ty: Type,
    typmod: i32,
}

/// `_meta` of one document.
struct Meta<'a> {
    polled: &'a str,
    index: i64,
    row_id: i64,
    op: Option<&'static str>,
}

enum Input {
    Eof,
    Failed(Error),
}

/// How a poll ended.
enum Polled {
    Done,
    /// The query was cancelled by the server (statement timeout, recovery conflict): try
    /// again shortly, from the last checkpoint.
    Cancelled,
    /// The input ended during the poll.
    Stopped,
}

struct Session<'e, W: AsyncWrite + Unpin> {
    config: BatchConfig,
    client: Client,
    emitter: &'e mut Emitter<W>,
    bindings: Vec<Binding>,
    registry: TypeRegistry,
    server_version: i32,
    input: mpsc::UnboundedReceiver<Input>,
    fetch_rows: usize,
    pages_per_chunk: Option<i64>,
    row: EncodedRow,
    document: Vec<u8>,
}

fn env_number(name: &str) -> Option<i64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|n: &i64| *n > 0)
}

/// Run a batch capture until stdin ends (or, with `SHUTDOWN_AFTER_POLLING=yes`, until every
/// binding has been polled once).
pub async fn run<R, W>(open: Open, mut reader: RequestReader<R>, emitter: &mut Emitter<W>) -> Result<(), Error>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let exit_when_polled = std::env::var("SHUTDOWN_AFTER_POLLING").is_ok_and(|v| v == "yes" || v == "true");
    let config = BatchConfig::parse(&open.capture.config)?;
    let mut state = BatchState::parse(&open.state)
        .map_err(|err| Error::user(err, "the state was not written by a batch capture; reset the capture's state"))?;
    let mut bindings = Vec::with_capacity(open.capture.bindings.len());
    for (index, binding) in open.capture.bindings.iter().enumerate() {
        let resource = BatchResource::parse(index, &binding.resource_config)?;
        let mode = if resource.is_xmin() { MODE_XMIN } else { MODE_QUERY };
        let state_key = if binding.state_key.is_empty() { resource.name.clone() } else { binding.state_key.clone() };
        let stream = StreamState::reconcile(state.streams.remove(&state_key), mode, &resource.cursor, &resource.name);
        let template = if resource.template.trim().is_empty() {
            None
        } else {
            Some(Template::parse(&resource.template).map_err(|err| template_error(&resource, err))?)
        };
        let key = &binding.collection.key;
        bindings.push(Binding {
            index: u32::try_from(index).map_err(|_| Error::Internal("binding index overflows u32".into()))?,
            state_key,
            schedule: resource.schedule(&config),
            template,
            row_id_key: key.len() == 1 && key[0] == ROW_ID_KEY,
            key_columns: key.iter().filter_map(|p| column_of_pointer(p)).collect(),
            state: stream,
            resource,
            not_before: None,
            polled_this_session: false,
        });
    }

    crate::log::status("Connecting to database");
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    if let Some(timeout) = config.statement_timeout {
        client.batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis())).await?;
    }
    let server_version: i32 = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
    emitter.opened().await.map_err(Error::Output)?;

    let (sender, input) = mpsc::unbounded_channel();
    // Acknowledgements need no action (a poll's state does not wait for them), but stdin
    // must be read so the runtime never blocks writing them, and its end ends the session.
    tokio::spawn(async move {
        loop {
            let event = match reader.next().await {
                Ok(None) => Input::Eof,
                Ok(Some(Request::Acknowledge(_))) => continue,
                Ok(Some(_)) => Input::Failed(Error::user(
                    "received a request other than \"acknowledge\" during a capture session",
                    "the runtime sends only acknowledgements after \"open\"",
                )),
                Err(err) => Input::Failed(err.into()),
            };
            let _ = sender.send(event);
            return;
        }
    });

    if bindings.is_empty() {
        tracing::info!("the capture has no bindings: nothing to poll");
    }
    let mut session = Session {
        config,
        registry: TypeRegistry::load(&client, &[]).await?,
        client,
        emitter,
        bindings,
        server_version,
        input,
        fetch_rows: env_number("FLOW_BATCH_FETCH_ROWS").map_or(FETCH_ROWS, |n| n as usize),
        pages_per_chunk: env_number("FLOW_BATCH_PAGES_PER_CHUNK"),
        row: EncodedRow::default(),
        document: Vec::new(),
    };
    session.run(exit_when_polled).await
}

fn template_error(resource: &BatchResource, err: template::TemplateError) -> Error {
    Error::user(
        format!("the query template of resource {:?} is invalid: {err}", resource.name),
        "fix the template (Go text/template syntax, e.g. {{quoteTableName .SchemaName .TableName}}), or remove it to use the built-in query",
    )
}

fn is_cancellation(err: &tokio_postgres::Error) -> bool {
    // 57014: statement timeout or cancel request; 40001: conflict with recovery on a replica.
    err.code().is_some_and(|c| matches!(c.code(), "57014" | "40001"))
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    async fn run(&mut self, exit_when_polled: bool) -> Result<(), Error> {
        if self.bindings.is_empty() {
            return self.wait_for_end().await;
        }
        loop {
            if exit_when_polled && self.bindings.iter().all(|b| b.polled_this_session) {
                return self.emitter.flush().await.map_err(Error::Output);
            }
            let now = SystemTime::now();
            let (index, due) = self
                .bindings
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let last = parse_rfc3339(&b.state.last_polled).unwrap_or(SystemTime::UNIX_EPOCH);
                    let mut due = b.schedule.next(last);
                    if let Some(not_before) = b.not_before {
                        due = due.max(not_before);
                    }
                    (i, due)
                })
                .min_by_key(|(_, due)| *due)
                .unwrap_or((0, now));
            if let Ok(wait) = due.duration_since(now) {
                tokio::select! {
                    event = self.input.recv() => return self.on_input(event),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let started = SystemTime::now();
            let name = self.bindings[index].resource.name.clone();
            tracing::info!(name = %name, "polling binding");
            let outcome = if self.bindings[index].state.mode == MODE_XMIN {
                self.poll_xmin(index).await
            } else {
                self.poll_query(index).await
            };
            match outcome {
                Ok(Polled::Done) => {
                    let binding = &mut self.bindings[index];
                    binding.state.last_polled = format_rfc3339(started);
                    binding.not_before = None;
                    binding.polled_this_session = true;
                    self.checkpoint(index).await?;
                }
                Ok(Polled::Cancelled) => {
                    self.bindings[index].not_before = Some(SystemTime::now() + RETRY_AFTER_CANCEL);
                }
                Ok(Polled::Stopped) => return self.emitter.flush().await.map_err(Error::Output),
                Err(err) => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    return Err(err);
                }
            }
        }
    }

    async fn wait_for_end(&mut self) -> Result<(), Error> {
        let event = self.input.recv().await;
        self.on_input(event)
    }

    fn on_input(&mut self, event: Option<Input>) -> Result<(), Error> {
        match event {
            None | Some(Input::Eof) => Ok(()),
            Some(Input::Failed(err)) => Err(err),
        }
    }

    /// Whether the input ended (checked between fetches of a long poll).
    fn stopping(&mut self) -> Result<bool, Error> {
        match self.input.try_recv() {
            Ok(Input::Eof) | Err(mpsc::error::TryRecvError::Disconnected) => Ok(true),
            Ok(Input::Failed(err)) => Err(err),
            Err(mpsc::error::TryRecvError::Empty) => Ok(false),
        }
    }

    /// Write the binding's whole state as a merge patch (absent lists are written as `null`,
    /// so that a reset state also clears them in the runtime's merged state).
    async fn checkpoint(&mut self, index: usize) -> Result<(), Error> {
        let binding = &self.bindings[index];
        let mut stream = serde_json::to_value(&binding.state).map_err(|e| Error::Internal(e.to_string()))?;
        if let Value::Object(map) = &mut stream {
            for field in ["CursorNames", "CursorValues"] {
                map.entry(field).or_insert(Value::Null);
            }
        }
        let patch = json!({"bindingStateV1": {binding.state_key.clone(): stream}});
        self.emitter.checkpoint(&patch).await.map_err(Error::Output)
    }

    /// Start a poll's query: a transaction with a server-side cursor over `sql`. Returns the
    /// result's columns.
    async fn open_cursor(
        &mut self,
        index: usize,
        sql: &str,
        params: &[TextParam],
    ) -> Result<Result<Vec<ResultColumn>, Error>, tokio_postgres::Error> {
        self.client.batch_execute("BEGIN").await?;
        let statement = self.client.prepare(sql).await?;
        if statement.params().len() != params.len() {
            let resource = &self.bindings[index].resource;
            return Ok(Err(Error::user(
                format!(
                    "the query of resource {:?} has {} parameter(s), but its cursor {:?} has {} value(s) (query: {sql})",
                    resource.name,
                    statement.params().len(),
                    resource.cursor,
                    params.len()
                ),
                "the query template must use $1, $2, ... for the cursor values after the first poll (when .IsFirstQuery is false), and none in the first",
            )));
        }
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.client.execute(&format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {sql}"), &params).await?;
        Ok(Ok(statement
            .columns()
            .iter()
            .map(|c| ResultColumn { name: c.name().to_string(), ty: c.type_().clone(), typmod: c.type_modifier() })
            .collect()))
    }

    async fn fetch(&mut self) -> Result<Vec<SimpleQueryRow>, tokio_postgres::Error> {
        let messages = self.client.simple_query(&format!("FETCH FORWARD {} FROM {CURSOR}", self.fetch_rows)).await?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect())
    }

    async fn close_cursor(&mut self) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(&format!("CLOSE {CURSOR}; COMMIT")).await
    }

    /// The query error of a binding, with its query.
    fn query_error(&self, index: usize, sql: &str, err: tokio_postgres::Error) -> Error {
        let resource = &self.bindings[index].resource;
        let pg = PgError::from(err);
        let hint = if pg.sqlstate() == Some("42703") && resource.template.trim().is_empty() {
            format!(
                "check the cursor columns {:?} of resource {:?}: each must be a column of the table",
                resource.cursor, resource.name
            )
        } else if resource.template.trim().is_empty() {
            pg.hint().unwrap_or_else(|| "check the table and the user's privileges".into())
        } else {
            "check the query template: it must render one SELECT statement, with $1, $2, ... for the cursor values"
                .into()
        };
        Error::user(format!("polling resource {:?} failed: {pg} (query: {sql})", resource.name), hint)
    }

    /// Resolve the result's column types and check that the documents can be built.
    async fn shape(&mut self, index: usize, columns: &[ResultColumn], xmin: bool) -> Result<Shape, Error> {
        let oids: Vec<u32> = columns.iter().map(|c| c.ty.oid()).collect();
        if !self.registry.knows_all(&oids) {
            self.registry.extend(&self.client, &oids).await?;
        }
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let types: Vec<PgType> = columns.iter().map(|c| self.registry.resolve(c.ty.oid(), c.typmod)).collect();
        let binding = &self.bindings[index];
        let name = &binding.resource.name;
        // The xmin column is left out when the table has a column of the same name.
        let skip_first = xmin && names[1..].iter().any(|n| n == "txid");
        let output: Vec<usize> = (0..names.len()).filter(|i| !(skip_first && *i == 0)).collect();
        let mut seen = BTreeSet::new();
        for i in &output {
            if !seen.insert(names[*i].as_str()) {
                return Err(Error::user(
                    format!("the query of resource {name:?} returns more than one column named {:?}", names[*i]),
                    "give the columns distinct names (SELECT a.id AS a_id, b.id AS b_id ...)",
                ));
            }
        }
        for key in &binding.key_columns {
            if !seen.contains(key.as_str()) {
                return Err(Error::user(
                    format!("the query of resource {name:?} returns no column {key:?}, which the collection key needs"),
                    "return the key columns from the query, or change the collection key",
                ));
            }
        }
        let mut cursor_positions = Vec::new();
        if !xmin {
            for cursor in &binding.state.cursor_names {
                let position = names.iter().position(|n| n == cursor).ok_or_else(|| {
                    Error::user(
                        format!("cursor column {cursor:?} of resource {name:?} is not a column of its query's result"),
                        "set \"cursor\" to columns the query returns, or remove it to re-read everything at every poll",
                    )
                })?;
                cursor_positions.push(position);
            }
        }
        let output_names: Vec<&str> = output.iter().map(|i| names[*i].as_str()).collect();
        Ok(Shape {
            layout: DocumentLayout::new(&output_names),
            pg_types: columns.iter().map(|c| c.ty.clone()).collect(),
            names,
            types,
            output,
            cursor_positions,
        })
    }

    /// Encode a row and write its document.
    async fn emit_row(
        &mut self,
        index: usize,
        shape: &Shape,
        row: &SimpleQueryRow,
        meta: &Meta<'_>,
    ) -> Result<(), Error> {
        let binding = &self.bindings[index];
        self.row.reset(shape.output.len());
        for (slot, column) in shape.output.iter().enumerate() {
            let text = row.try_get(*column).map_err(|e| Error::Internal(format!("reading a result row: {e}")))?;
            match text {
                None => self.row.set_null(slot),
                Some(text) => {
                    let start = self.row.bytes.len();
                    let ty = &shape.types[*column];
                    let encoded = if binding.key_columns.contains(&shape.names[*column]) {
                        value::encode_key_value(ty, text.as_bytes(), &mut self.row.bytes)
                    } else {
                        value::encode_value(ty, text.as_bytes(), &mut self.row.bytes)
                    };
                    encoded.map_err(|err| {
                        Error::user(
                            format!(
                                "a value of column {:?} of resource {:?} could not be encoded: {err}",
                                shape.names[*column], binding.resource.name
                            ),
                            "please report this with the column's type",
                        )
                    })?;
                    self.row.finish_value(slot, start);
                }
            }
        }
        self.document.clear();
        let resource = &binding.resource;
        let tag = self.config.raw.advanced.source_tag.as_str();
        let write_meta = |out: &mut Vec<u8>| write_meta(out, meta, resource, tag);
        write_document_with_meta(&mut self.document, &shape.layout, &self.row, &write_meta);
        self.emitter.captured(binding.index, &self.document).await.map_err(Error::Output)
    }

    /// Whether `before` sorts strictly before `after` in the server's order of the cursor
    /// columns' types (text equality is not enough: `1.0` and `1.00`, or strings equal
    /// under a non-deterministic collation, are equal values with different text).
    async fn strictly_before(
        &self,
        shape: &Shape,
        before: &[Option<String>],
        after: &[Option<String>],
    ) -> Result<bool, tokio_postgres::Error> {
        let n = shape.cursor_positions.len();
        let left: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let right: Vec<String> = (n + 1..=2 * n).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT ROW({}) < ROW({})", left.join(", "), right.join(", "));
        let types: Vec<Type> =
            shape.cursor_positions.iter().chain(&shape.cursor_positions).map(|p| shape.pg_types[*p].clone()).collect();
        let statement = self.client.prepare_typed(&sql, &types).await?;
        let params: Vec<TextParam> = before.iter().chain(after).map(|v| TextParam(v.clone())).collect();
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let row = self.client.query_one(&statement, &params).await?;
        Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
    }

    /// Poll a binding with its built-in query (cursor or full refresh) or its template.
    async fn poll_query(&mut self, index: usize) -> Result<Polled, Error> {
        let binding = &self.bindings[index];
        let state = &binding.state;
        let first = state.cursor_values.is_empty();
        let full_refresh = state.cursor_names.is_empty();
        let sql = match &binding.template {
            None => query::builtin_query(&binding.resource.schema, &binding.resource.table, &state.cursor_names, first),
            Some(template) => {
                let mut data = template::Data::new();
                data.insert("IsFirstQuery".into(), template::Value::Bool(first));
                data.insert(
                    "CursorFields".into(),
                    template::Value::List(
                        state
                            .cursor_names
                            .iter()
                            .map(|c| template::Value::Str(crate::pg::quote_identifier(c)))
                            .collect(),
                    ),
                );
                data.insert("SchemaName".into(), template::Value::Str(binding.resource.schema.clone()));
                data.insert("TableName".into(), template::Value::Str(binding.resource.table.clone()));
                template.render(&data).map_err(|err| template_error(&binding.resource, err))?
            }
        };
        let params: Vec<TextParam> = state.cursor_values.iter().map(|v| TextParam(cursor_param(v))).collect();
        let old_count = state.document_count;
        let polled = format_rfc3339(SystemTime::now());
        tracing::info!(name = %binding.resource.name, query = %sql, "executing query");

        let columns = match self.open_cursor(index, &sql, &params).await {
            Ok(columns) => columns?,
            Err(err) => return self.failed_query(index, &sql, err).await,
        };
        let shape = self.shape(index, &columns, false).await?;
        let mut next_row_id = if first { 0 } else { old_count };
        let mut result_index: i64 = 0;
        let mut previous: Option<Vec<Option<String>>> = None;
        let mut last_complete: Option<Vec<Option<String>>> = None;
        // The end of the last complete group of equal cursors: its cursor, the next row's
        // cursor, and the row id after it.
        let mut boundary: Option<Boundary> = None;
        let mut since_checkpoint: u64 = 0;
        let mut null_cursors: u64 = 0;
        loop {
            let rows = match self.fetch().await {
                Ok(rows) => rows,
                Err(err) => return self.failed_query(index, &sql, err).await,
            };
            for row in &rows {
                let cursor: Vec<Option<String>> =
                    shape.cursor_positions.iter().map(|p| row.try_get(*p).ok().flatten().map(str::to_string)).collect();
                if !full_refresh {
                    if cursor.iter().any(Option::is_none) {
                        null_cursors += 1;
                    }
                    if let Some(previous) = &previous {
                        if *previous != cursor && previous.iter().all(Option::is_some) {
                            boundary = Some((previous.clone(), cursor.clone(), next_row_id));
                        }
                    }
                }
                let op = self.bindings[index]
                    .row_id_key
                    .then_some(if next_row_id < self.bindings[index].state.document_count { "u" } else { "c" });
                let meta = Meta { polled: &polled, index: result_index, row_id: next_row_id, op };
                self.emit_row(index, &shape, row, &meta).await?;
                if cursor.iter().all(Option::is_some) && !full_refresh {
                    last_complete = Some(cursor.clone());
                }
                previous = Some(cursor);
                next_row_id += 1;
                result_index += 1;
                since_checkpoint += 1;
            }
            if rows.len() < self.fetch_rows {
                break;
            }
            if self.stopping()? {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Ok(Polled::Stopped);
            }
            if since_checkpoint >= DOCUMENTS_PER_CHECKPOINT {
                if full_refresh {
                    self.checkpoint(index).await?;
                    since_checkpoint = 0;
                } else if let Some((before, after, row_id)) = boundary.take() {
                    let safe = match self.strictly_before(&shape, &before, &after).await {
                        Ok(safe) => safe,
                        Err(err) => return self.failed_query(index, &sql, err).await,
                    };
                    if safe {
                        let state = &mut self.bindings[index].state;
                        state.cursor_values =
                            before.into_iter().map(|v| v.map_or(Value::Null, Value::String)).collect();
                        state.document_count = row_id;
                        self.checkpoint(index).await?;
                        since_checkpoint = 0;
                    }
                }
            }
        }
        if let Err(err) = self.close_cursor().await {
            return self.failed_query(index, &sql, err).await;
        }
        let binding = &self.bindings[index];
        if null_cursors > 0 {
            tracing::warn!(
                name = %binding.resource.name,
                rows = null_cursors,
                "rows with a NULL cursor value were captured, but a NULL cursor never advances the resume point: such rows are not captured again when they change"
            );
        }
        // A full refresh of a collection keyed by row id removes the documents of rows that
        // are no longer there: the row ids past this refresh's last.
        if full_refresh && binding.row_id_key && old_count > next_row_id {
            let empty = Shape {
                names: Vec::new(),
                types: Vec::new(),
                pg_types: Vec::new(),
                output: Vec::new(),
                layout: DocumentLayout::new::<&str>(&[]),
                cursor_positions: Vec::new(),
            };
            for row_id in next_row_id..old_count {
                let meta = Meta { polled: &polled, index: result_index, row_id, op: Some("d") };
                self.emit_meta_only(index, &empty, &meta).await?;
                result_index += 1;
            }
        }
        let state = &mut self.bindings[index].state;
        state.document_count = next_row_id;
        if let Some(last) = last_complete {
            state.cursor_values = last.into_iter().map(|v| v.map_or(Value::Null, Value::String)).collect();
        }
        tracing::info!(name = %self.bindings[index].resource.name, count = result_index, "polling complete");
        Ok(Polled::Done)
    }

    /// A deletion document: `_meta` only.
    async fn emit_meta_only(&mut self, index: usize, empty: &Shape, meta: &Meta<'_>) -> Result<(), Error> {
        let binding = &self.bindings[index];
        self.row.reset(0);
        self.document.clear();
        let resource = &binding.resource;
        let tag = self.config.raw.advanced.source_tag.as_str();
        let write = |out: &mut Vec<u8>| write_meta(out, meta, resource, tag);
        write_document_with_meta(&mut self.document, &empty.layout, &self.row, &write);
        self.emitter.captured(binding.index, &self.document).await.map_err(Error::Output)
    }

    /// A query failed: a cancellation is retried shortly, anything else ends the capture.
    async fn failed_query(&mut self, index: usize, sql: &str, err: tokio_postgres::Error) -> Result<Polled, Error> {
        let _ = self.client.batch_execute("ROLLBACK").await;
        if is_cancellation(&err) {
            tracing::warn!(
                name = %self.bindings[index].resource.name,
                error = %PgError::from(err),
                "the polling query was cancelled (statement timeout or recovery conflict): polling again from the last checkpoint"
            );
            return Ok(Polled::Cancelled);
        }
        Err(self.query_error(index, sql, err))
    }

    /// The table's page count, partition count and oid; an error for a missing table or a view.
    async fn table_pages(&self, index: usize, schema: &str, table: &str) -> Result<(i64, i64, u32), Error> {
        let display = crate::validate::display_name(schema, table);
        let name = &self.bindings[index].resource.name;
        let stats = self.client.query_opt(query::TABLE_PAGES_SQL, &[&schema, &table]).await?.ok_or_else(|| {
            Error::user(
                format!("table {display} of resource {name:?} does not exist"),
                "create the table, or remove the binding",
            )
        })?;
        let (max_page, partitions, relkind, oid): (i64, i64, String, u32) =
            (stats.get(0), stats.get(1), stats.get(2), stats.get(3));
        if relkind == "v" {
            return Err(Error::user(
                format!("{display} of resource {name:?} is a view, which has no xmin to poll by"),
                "set the resource's \"cursor\" to [] (re-read at every poll) or to columns that grow",
            ));
        }
        Ok((max_page, partitions, oid))
    }

    /// Poll a binding by xmin: scan the table in page ranges, emitting rows whose xmin lies
    /// in the scan's transaction-id window, and checkpoint after each range.
    async fn poll_xmin(&mut self, index: usize) -> Result<Polled, Error> {
        let (schema, table) = {
            let r = &self.bindings[index].resource;
            (r.schema.clone(), r.table.clone())
        };
        let table_name = crate::validate::display_name(&schema, &table);
        let (mut max_page, partitions, oid) = self.table_pages(index, &schema, &table).await?;
        if self.bindings[index].state.next_xid == 0 {
            let text: String = self.client.query_one(query::CURRENT_XID_SQL, &[]).await?.get(0);
            let next =
                text.parse::<u64>().map_err(|_| Error::Internal(format!("the current transaction id {text:?}")))?;
            self.bindings[index].state.next_xid = next;
        }
        if self.bindings[index].state.scan_tid.is_empty() {
            self.bindings[index].state.scan_tid = "(0,0)".into();
        }
        let mut after_page = parse_tid_page(&self.bindings[index].state.scan_tid).ok_or_else(|| {
            Error::user(
                format!("the state's scan position {:?} is not a tuple id", self.bindings[index].state.scan_tid),
                "reset the binding's state by incrementing its backfill counter",
            )
        })?;
        // Before PostgreSQL 14 a ctid range is not an index-like scan: one range covers all.
        let (configured, server_version) = (self.pages_per_chunk, self.server_version);
        let chunk_pages = move |max_page: i64| match configured {
            Some(pages) => pages,
            None if server_version < 140_000 => max_page.max(1),
            None => 200_000 / (100 * partitions.max(1)) + 1,
        };
        let mut pages_per_chunk = chunk_pages(max_page);
        let (base, next) = (self.bindings[index].state.base_xid, self.bindings[index].state.next_xid);
        let sql = query::xmin_chunk_query(&schema, &table, base != 0);
        let polled = format_rfc3339(SystemTime::now());
        // The table's storage files when this session's part of the scan began.
        let mut filenodes: Option<String> = None;
        while after_page < max_page {
            let until = after_page + pages_per_chunk;
            let mut params =
                vec![TextParam(Some(format!("({after_page},0)"))), TextParam(Some(format!("({until},0)")))];
            if base != 0 {
                params.push(TextParam(Some(base.to_string())));
                params.push(TextParam(Some(next.to_string())));
            }
            let columns = match self.open_cursor(index, &sql, &params).await {
                Ok(columns) => columns?,
                Err(err) => return self.failed_query(index, &sql, err).await,
            };
            // A rewrite of the table (VACUUM FULL, CLUSTER) keeps rows' xmin but moves them,
            // possibly into pages this scan already read: scan again from the first page. The
            // cursor's lock keeps the files as they are until this chunk is read.
            let current: String = match self.client.query_one(query::FILENODES_SQL, &[&oid]).await {
                Ok(row) => row.get(0),
                Err(err) => return self.failed_query(index, &sql, err).await,
            };
            match &filenodes {
                Some(previous) if *previous != current => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    tracing::warn!(
                        name = %self.bindings[index].resource.name,
                        table = %table_name,
                        "the table was rewritten (VACUUM FULL or CLUSTER) during its xmin scan: scanning it again from its first page"
                    );
                    filenodes = Some(current);
                    (max_page, _, _) = self.table_pages(index, &schema, &table).await?;
                    pages_per_chunk = chunk_pages(max_page);
                    after_page = 0;
                    self.bindings[index].state.scan_tid = "(0,0)".into();
                    continue;
                }
                Some(_) => {}
                None => filenodes = Some(current),
            }
            let shape = self.shape(index, &columns, true).await?;
            let mut count: i64 = 0;
            loop {
                let rows = match self.fetch().await {
                    Ok(rows) => rows,
                    Err(err) => return self.failed_query(index, &sql, err).await,
                };
                for row in &rows {
                    let xmin = row.try_get(0).ok().flatten().and_then(|t| t.parse::<u32>().ok()).unwrap_or(0);
                    if !query::xmin_in_window(xmin, base, next) {
                        continue;
                    }
                    let binding = &self.bindings[index];
                    let row_id = binding.state.document_count + count;
                    let meta = Meta { polled: &polled, index: count, row_id, op: binding.row_id_key.then_some("c") };
                    self.emit_row(index, &shape, row, &meta).await?;
                    count += 1;
                }
                if rows.len() < self.fetch_rows {
                    break;
                }
                if self.stopping()? {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    return Ok(Polled::Stopped);
                }
            }
            if let Err(err) = self.close_cursor().await {
                return self.failed_query(index, &sql, err).await;
            }
            after_page = until;
            let state = &mut self.bindings[index].state;
            state.scan_tid = format!("({until},0)");
            state.document_count += count;
            self.checkpoint(index).await?;
        }
        let state = &mut self.bindings[index].state;
        state.scan_tid = String::new();
        state.base_xid = state.next_xid;
        state.next_xid = 0;
        Ok(Polled::Done)
    }
}

/// The page of a `(page,offset)` tuple id.
fn parse_tid_page(tid: &str) -> Option<i64> {
    let inner = tid.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (page, offset) = inner.split_once(',')?;
    offset.trim().parse::<u32>().ok()?;
    page.trim().parse::<i64>().ok().filter(|p| *p >= 0)
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `"_meta":{"polled":...,"index":...,"row_id":...,"op":...,"source":{...}}`, in the Go
/// connector's field order.
fn write_meta(out: &mut Vec<u8>, meta: &Meta<'_>, resource: &BatchResource, tag: &str) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"\"_meta\":{\"polled\":");
    write_json_string(out, meta.polled);
    out.extend_from_slice(b",\"index\":");
    out.extend_from_slice(number.format(meta.index).as_bytes());
    out.extend_from_slice(b",\"row_id\":");
    out.extend_from_slice(number.format(meta.row_id).as_bytes());
    if let Some(op) = meta.op {
        out.extend_from_slice(b",\"op\":");
        write_json_string(out, op);
    }
    out.extend_from_slice(b",\"source\":{\"resource\":");
    write_json_string(out, &resource.name);
    for (key, value) in [("schema", resource.schema.as_str()), ("table", resource.table.as_str()), ("tag", tag)] {
        if !value.is_empty() {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            write_json_string(out, value);
        }
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_has_the_go_shape() {
        let resource = BatchResource { name: "r".into(), schema: "s".into(), table: "t".into(), ..Default::default() };
        let mut out = Vec::new();
        write_meta(
            &mut out,
            &Meta { polled: "2024-01-01T00:00:00Z", index: 2, row_id: 7, op: Some("c") },
            &resource,
            "",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""_meta":{"polled":"2024-01-01T00:00:00Z","index":2,"row_id":7,"op":"c","source":{"resource":"r","schema":"s","table":"t"}}"#
        );
        assert_eq!(parse_tid_page("(12,0)"), Some(12));
        assert_eq!(parse_tid_page("12"), None);
    }
}
