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
//!   `CLUSTER`, `TRUNCATE`, a rewriting `ALTER TABLE`) keeps rows' xmin but moves them, maybe
//!   into pages already read. So each checkpoint also persists the storage files
//!   (relfilenodes) the scan's pages were read from (`ScanFilenodes`), and every range, the
//!   first one of a resumed scan included (even when the table is now shorter than the page
//!   reached), compares them with the files it reads under its lock: on a difference the
//!   scan starts again from the first page, with the same window. A rewrite is therefore
//!   noticed wherever it happened: during a session, after the last range a killed session
//!   read, or while no session ran. A scan resumed mid-table from a state without the field
//!   (the Go connector's, or an earlier version's) starts again from the first page too.
//!   Rows read again are emitted again: a keyed collection reduces them, while a collection
//!   keyed by `/_meta/row_id` gets them under new row ids;
//! - full refresh persists nothing mid-poll that a restart would skip: it polls again from
//!   the start. Its mid-poll checkpoints raise `DocumentCount` to the row ids emitted so far
//!   (never lower it), so with the key `/_meta/row_id` the resumed poll deletes every row id
//!   past its new end, including those only the interrupted poll had reached.
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
use cursor_groups::{CursorGroups, CursorText};
use meta::{write_meta, Meta};

mod cursor_groups;
mod meta;
mod xmin;

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

/// A column of a query's result.
struct ResultColumn {
    name: String,
    ty: Type,
    typmod: i32,
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

/// Where a query poll is in its result.
struct QueryPoll {
    sql: String,
    /// When the poll started, as `_meta/polled`.
    polled: String,
    /// No cursor columns: every poll reads the whole result again.
    full_refresh: bool,
    /// The binding's document count before this poll.
    old_count: i64,
    next_row_id: i64,
    /// The next row's position in this poll's result (`_meta/index`).
    result_index: i64,
    since_checkpoint: u64,
    cursors: CursorGroups,
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
            for field in ["CursorNames", "CursorValues", "ScanFilenodes"] {
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
        let sql = self.query_text(index)?;
        let binding = &self.bindings[index];
        let state = &binding.state;
        let params: Vec<TextParam> = state.cursor_values.iter().map(|v| TextParam(cursor_param(v))).collect();
        let first = state.cursor_values.is_empty();
        let old_count = state.document_count;
        let full_refresh = state.cursor_names.is_empty();
        let polled = format_rfc3339(SystemTime::now());
        tracing::info!(name = %binding.resource.name, query = %sql, "executing query");

        let columns = match self.open_cursor(index, &sql, &params).await {
            Ok(columns) => columns?,
            Err(err) => return self.failed_query(index, &sql, err).await,
        };
        let shape = self.shape(index, &columns, false).await?;
        let mut poll = QueryPoll {
            sql,
            polled,
            full_refresh,
            old_count,
            next_row_id: if first { 0 } else { old_count },
            result_index: 0,
            since_checkpoint: 0,
            cursors: CursorGroups::default(),
        };
        loop {
            let rows = match self.fetch().await {
                Ok(rows) => rows,
                Err(err) => return self.failed_query(index, &poll.sql, err).await,
            };
            self.emit_query_rows(index, &shape, &mut poll, &rows).await?;
            if rows.len() < self.fetch_rows {
                break;
            }
            if self.stopping()? {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Ok(Polled::Stopped);
            }
            if let Some(ended) = self.checkpoint_within_poll(index, &shape, &mut poll).await? {
                return Ok(ended);
            }
        }
        if let Err(err) = self.close_cursor().await {
            return self.failed_query(index, &poll.sql, err).await;
        }
        self.finish_query_poll(index, poll).await
    }

    /// The query of a binding's poll: the built-in one, or its template rendered with the
    /// poll's data.
    fn query_text(&self, index: usize) -> Result<String, Error> {
        let binding = &self.bindings[index];
        let state = &binding.state;
        let first = state.cursor_values.is_empty();
        let Some(template) = &binding.template else {
            return Ok(query::builtin_query(
                &binding.resource.schema,
                &binding.resource.table,
                &state.cursor_names,
                first,
            ));
        };
        let mut data = template::Data::new();
        data.insert("IsFirstQuery".into(), template::Value::Bool(first));
        let quoted = state.cursor_names.iter().map(|c| template::Value::Str(crate::pg::quote_identifier(c)));
        data.insert("CursorFields".into(), template::Value::List(quoted.collect()));
        data.insert("SchemaName".into(), template::Value::Str(binding.resource.schema.clone()));
        data.insert("TableName".into(), template::Value::Str(binding.resource.table.clone()));
        template.render(&data).map_err(|err| template_error(&binding.resource, err))
    }

    /// Emit one fetched batch of a query poll.
    async fn emit_query_rows(
        &mut self,
        index: usize,
        shape: &Shape,
        poll: &mut QueryPoll,
        rows: &[SimpleQueryRow],
    ) -> Result<(), Error> {
        for row in rows {
            if !poll.full_refresh {
                let cursor: CursorText =
                    shape.cursor_positions.iter().map(|p| row.try_get(*p).ok().flatten().map(str::to_string)).collect();
                poll.cursors.observe(cursor, poll.next_row_id);
            }
            let binding = &self.bindings[index];
            let op =
                binding.row_id_key.then_some(if poll.next_row_id < binding.state.document_count { "u" } else { "c" });
            let meta = Meta { polled: &poll.polled, index: poll.result_index, row_id: poll.next_row_id, op };
            self.emit_row(index, shape, row, &meta).await?;
            poll.next_row_id += 1;
            poll.result_index += 1;
            poll.since_checkpoint += 1;
        }
        Ok(())
    }

    /// Checkpoint in the middle of a poll once enough documents were written, where it is
    /// safe: anywhere in a full refresh (a restart polls again from the start), at a group
    /// boundary the server confirms in cursor mode. `Some` when the poll ended instead.
    async fn checkpoint_within_poll(
        &mut self,
        index: usize,
        shape: &Shape,
        poll: &mut QueryPoll,
    ) -> Result<Option<Polled>, Error> {
        if poll.since_checkpoint < DOCUMENTS_PER_CHECKPOINT {
            return Ok(None);
        }
        if poll.full_refresh {
            // The documents written so far carry row ids below `next_row_id`: the count keeps
            // them, so that a refresh resumed from this checkpoint deletes every row id past
            // its own end, also when the table shrank meanwhile below both this point and the
            // last complete refresh. (This poll's `op`s do not change: its later row ids are
            // at least `next_row_id`.)
            let state = &mut self.bindings[index].state;
            state.document_count = state.document_count.max(poll.next_row_id);
            self.checkpoint(index).await?;
            poll.since_checkpoint = 0;
        } else if let Some((before, after, row_id)) = poll.cursors.take_boundary() {
            let safe = match self.strictly_before(shape, &before, &after).await {
                Ok(safe) => safe,
                Err(err) => return self.failed_query(index, &poll.sql, err).await.map(Some),
            };
            if safe {
                let state = &mut self.bindings[index].state;
                state.cursor_values = before.into_iter().map(|v| v.map_or(Value::Null, Value::String)).collect();
                state.document_count = row_id;
                self.checkpoint(index).await?;
                poll.since_checkpoint = 0;
            }
        }
        Ok(None)
    }

    /// The end of a complete query poll: deletions of the rows a full refresh no longer
    /// saw, and the state to persist.
    async fn finish_query_poll(&mut self, index: usize, poll: QueryPoll) -> Result<Polled, Error> {
        let binding = &self.bindings[index];
        let null_cursors = poll.cursors.null_cursors();
        if null_cursors > 0 {
            tracing::warn!(
                name = %binding.resource.name,
                rows = null_cursors,
                "rows with a NULL cursor value were captured, but a NULL cursor never advances the resume point: such rows are not captured again when they change"
            );
        }
        let mut result_index = poll.result_index;
        // A full refresh of a collection keyed by row id removes the documents of rows that
        // are no longer there: the row ids past this refresh's last.
        if poll.full_refresh && binding.row_id_key && poll.old_count > poll.next_row_id {
            let empty = Shape {
                names: Vec::new(),
                types: Vec::new(),
                pg_types: Vec::new(),
                output: Vec::new(),
                layout: DocumentLayout::new::<&str>(&[]),
                cursor_positions: Vec::new(),
            };
            for row_id in poll.next_row_id..poll.old_count {
                let meta = Meta { polled: &poll.polled, index: result_index, row_id, op: Some("d") };
                self.emit_meta_only(index, &empty, &meta).await?;
                result_index += 1;
            }
        }
        let state = &mut self.bindings[index].state;
        state.document_count = poll.next_row_id;
        if let Some(last) = poll.cursors.into_last_complete() {
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
}
