//! Opening a capture session: from the open request to the first checkpoint.
//!
//! ```text
//!   request ─► config, resources, state ─► prerequisites ─► tables + types
//!           ─► reconcile (state x bindings) ─► opened ─► slot / start LSN ─► replication
//!           ─► session ─► resume key types checked ─► bindings activated ─► first checkpoint
//! ```
//!
//! Each step is a function; the pure one, reconciliation, is in [`super::reconcile`]. Every
//! statement of the start has a deadline ([`STARTUP_ANSWER_LIMIT`]): a server that does not
//! answer is taken for unreachable, and the capture fails and is restarted rather than hang.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio::io::AsyncWrite;
use tokio_postgres::Client;

use super::checkpoints::Checkpoints;
use super::document::EncodedRow;
use super::fence::Fence;
use super::reconcile::{self, Reconciled};
use super::relations::Relations;
use super::sourced::SourcedSchemas;
use super::spill::Spill;
use super::state::CaptureState;
use super::status::{self, StatusReporter};
use super::transactions::TransactionAssembler;
use super::visibility::DeliveredXids;
use super::{pg, slot, with_deadline, Session, DELIVERED_XIDS_CHECK_AT, STARTUP_ANSWER_LIMIT};
use crate::config::{Config, ResourceConfig};
use crate::discovery::catalog::TypeRegistry;
use crate::discovery::DiscoveredTable;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::pg::replication::{ReplicationClient, ReplicationStream};
use crate::pg::{quote_identifier, PgError};
use crate::protocol::emitter::Emitter;
use crate::protocol::Open;

/// Open the session of `open`: everything up to and including its first checkpoint.
pub(super) async fn open_session<'e, W: AsyncWrite + Unpin>(
    open: &Open,
    emitter: &'e mut Emitter<W>,
) -> Result<(Session<'e, W>, ReplicationStream), Error> {
    let (mut config, resources, state) = parse_request(open)?;
    // The formats the capture started with, unless a flag says otherwise (see
    // `ValueFormats::resolve` and the marker in `state`).
    config.formats = crate::value::ValueFormats::resolve(&config.flags.explicit, &state.value_formats());
    tracing::info!(improvements = ?config.formats.improvement_names(), formats = ?config.formats, "value formats");

    crate::log::status("Connecting to database");
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    configure_session(&client, &config).await?;

    crate::log::status("Verifying capture requirements");
    let wanted = check_prerequisites(&client, &config, open, &resources).await?;
    let (tables, registry) = discover(&client, &config, &wanted).await?;
    let requested = resources.into_iter().zip(&open.capture.bindings).collect();
    let reconciled = reconcile::reconcile(&state, requested, tables)?;
    reconcile::check_backfill_keys(&reconciled.bindings, &config)?;

    emitter.opened().await.map_err(Error::Output)?;

    let mut replication = ReplicationClient::connect(&config.connect_params()).await?;
    let sender_timeout_ms =
        with_deadline(STARTUP_ANSWER_LIMIT, "reading wal_sender_timeout", wal_sender_timeout_ms(&client)).await??;
    slot::wait_until_released(&client, config.slot_name(), slot::release_bound(sender_timeout_ms)).await?;
    let owner = open.capture.name.as_str();
    let start = start_position(&mut replication, &client, &config, owner, &reconciled).await?;
    // What the server has written so far: the slot is never confirmed beyond what the server
    // has sent (see `Checkpoints::confirmable`). Every start position above is at most this.
    let server_flushed =
        with_deadline(STARTUP_ANSWER_LIMIT, "reading the server's WAL position", slot::server_wal_end(&client))
            .await??
            .max(start);
    let server_version = replication.server_version_num();
    let protocol_version = if server_version >= 140_000 { 2 } else { 1 };
    let mut stream = start_replication(replication, &config, start, protocol_version).await?;

    let status_interval = status::interval_for(sender_timeout_ms);
    let backfill_client = crate::pg::connect_sql(&config.connect_params()).await?;
    with_deadline(
        STARTUP_ANSWER_LIMIT,
        "configuring the backfill session",
        configure_session(&backfill_client, &config),
    )
    .await??;
    let Reconciled { mut bindings, mut patch, .. } = reconciled;
    mark_value_formats(&mut bindings, &mut patch, &config.formats);
    let sourced = SourcedSchemas::new(&config, Instant::now());
    let mut session = Session {
        source_tag: Some(config.raw.advanced.source_tag.clone()).filter(|t| !t.is_empty()),
        config,
        emitter,
        client,
        backfill_client: std::sync::Arc::new(backfill_client),
        extra_readers: Vec::new(),
        readers_refused: None,
        registry,
        by_table: bindings
            .iter()
            .enumerate()
            .map(|(i, b)| ((b.table.schema.clone(), b.table.name.clone()), i))
            .collect(),
        bindings,
        relations: Relations::default(),
        protocol_version,
        checkpoints: Checkpoints::new(start, server_flushed),
        transactions: TransactionAssembler::default(),
        spill: Spill::default(),
        fence: Fence::new(start),
        status: StatusReporter::new(status_interval, Instant::now()),
        speculative: None,
        delivered: DeliveredXids::default(),
        delivered_check_at: DELIVERED_XIDS_CHECK_AT,
        forgotten_deliveries: 0,
        publication_checked: Instant::now(),
        server_version: i32::try_from(server_version).unwrap_or(i32::MAX),
        owner: owner.to_string(),
        sourced,
        document: Vec::with_capacity(4096),
        row: EncodedRow::default(),
        old_row: EncodedRow::default(),
        skipped_changes: BTreeMap::new(),
        toast_warnings: BTreeSet::new(),
        backfill_started: None,
        rows_this_session: 0,
        last_progress_report: None,
    };
    session.check_resume_key_types().await?;
    session.activate_pending();
    // Every binding's sourced schema, in binding order, written right before the first
    // checkpoint, which commits them.
    for index in 0..session.bindings.len() {
        session.table_described(index);
    }
    // The first checkpoint records the reconciled bindings (removed ones as null) and the
    // start position.
    session.checkpoint_with(patch, &mut stream).await?;
    Ok((session, stream))
}

/// Record the value formats in every binding's state, and write every binding's state with
/// the first checkpoint, so that the state holds the marker from then on.
fn mark_value_formats(
    bindings: &mut [super::Binding],
    patch: &mut serde_json::Map<String, serde_json::Value>,
    formats: &crate::value::ValueFormats,
) {
    let names = formats.improvement_names();
    for binding in bindings {
        binding.state.set_value_formats(&names);
        // A binding that starts afresh (its patch is null) gets its whole state instead, every
        // field explicit, so that what was at its key before is still replaced and a crash
        // before its next checkpoint does not leave a state without the marker (which would
        // read as the Go connector's).
        let mut state = binding.state.to_patch();
        if let serde_json::Value::Object(fields) = &mut state {
            fields.entry("key_types").or_insert(serde_json::Value::Null);
            if let Some(serde_json::Value::Object(metadata)) = fields.get_mut("metadata") {
                metadata.entry("keyless_relation").or_insert(serde_json::Value::Null);
            }
        }
        patch.insert(binding.state_key.clone(), state);
    }
}

/// The request's configuration, resources and state.
fn parse_request(open: &Open) -> Result<(Config, Vec<ResourceConfig>, CaptureState), Error> {
    let config = Config::parse(&open.capture.config)?;
    config.check_supported()?;
    let mut resources = Vec::with_capacity(open.capture.bindings.len());
    for (index, binding) in open.capture.bindings.iter().enumerate() {
        resources.push(ResourceConfig::parse(index, &binding.resource_config)?);
    }
    let state = CaptureState::parse(&open.state).map_err(|err| {
        Error::user(
            err.to_string(),
            "the state was not written by this connector or Estuary's source-postgres; reset the capture's state",
        )
    })?;
    Ok((config, resources, state))
}

/// Check what the capture needs of the server and its tables (unless the configuration
/// skips that), and create the objects it writes to. Returns the captured tables' names.
async fn check_prerequisites(
    client: &Client,
    config: &Config,
    open: &Open,
    resources: &[ResourceConfig],
) -> Result<BTreeSet<(String, String)>, Error> {
    let wanted: BTreeSet<(String, String)> =
        resources.iter().map(|r| (r.namespace.clone(), r.stream.clone())).collect();
    if config.skips_prerequisites() {
        // Neither checks nor creates anything (`ensure_objects_for` would do nothing either).
        return Ok(wanted);
    }
    // Who we are is asked once: every check and the objects' creation share the answer.
    let ctx = crate::validate::Context::load(client, config).await?;
    let keys = crate::validate::collection_key_columns(
        resources.iter().zip(&open.capture.bindings).map(|(r, b)| (r, b.collection.key.as_slice())),
    );
    let problems = crate::validate::check_prerequisites(client, config, &ctx, &wanted, &keys).await?;
    if !problems.is_empty() {
        return Err(crate::validate::report(&problems));
    }
    crate::validate::ensure_objects_for(client, config, &ctx, &wanted).await?;
    Ok(wanted)
}

/// The captured tables, by name, and the types of their columns.
async fn discover(
    client: &Client,
    config: &Config,
    wanted: &BTreeSet<(String, String)>,
) -> Result<(BTreeMap<(String, String), DiscoveredTable>, TypeRegistry), Error> {
    let tables = crate::discovery::discover_tables(client, config, Some(wanted)).await?;
    let tables: BTreeMap<(String, String), DiscoveredTable> =
        tables.into_iter().map(|t| ((t.schema.clone(), t.name.clone()), t)).collect();
    let type_oids: Vec<u32> = tables.values().flat_map(|t| t.columns.iter().map(|c| c.type_oid)).collect();
    let registry = TypeRegistry::load(client, &type_oids).await.map_err(pg)?;
    Ok((tables, registry))
}

/// The resume position, as the Go connector chooses it: `force_reset_cursor` whatever the
/// state says, else the state's cursor, else `initial_backfill_cursor`; None: no position,
/// streaming starts from a slot of this capture's. Pure.
fn resume_cursor(state_cursor: Option<&str>, flags: &crate::config::FeatureFlags) -> Result<Option<Lsn>, Error> {
    if let Some(forced) = flags.force_reset_cursor {
        return Ok(Some(forced));
    }
    match state_cursor {
        Some(text) => text.parse().map(Some).map_err(|err: crate::lsn::ParseLsnError| {
            Error::user(format!("the capture state's cursor is not an LSN: {err}"), "reset the capture's state")
        }),
        None => Ok(flags.initial_backfill_cursor),
    }
}

/// Where streaming starts: the resume position ([`resume_cursor`]), checked against the
/// server's WAL and the slot, or without one, a slot of this capture's (see
/// [`slot::start_without_cursor`]).
async fn start_position(
    replication: &mut ReplicationClient,
    client: &Client,
    config: &Config,
    owner: &str,
    reconciled: &Reconciled,
) -> Result<Lsn, Error> {
    let Some(lsn) = resume_cursor(reconciled.cursor.as_deref(), &config.flags)? else {
        return slot::start_without_cursor(replication, client, config, owner, reconciled.streamed_before).await;
    };
    if let Some(forced) = config.flags.force_reset_cursor {
        tracing::warn!(
            cursor = %forced,
            state_cursor = ?reconciled.cursor,
            "force_reset_cursor: streaming resumes from this position, whatever the state says; remove the flag once the capture has checkpointed past it, or every restart comes back here"
        );
    } else if reconciled.cursor.is_none() {
        tracing::info!(cursor = %lsn, "initial_backfill_cursor: streaming starts from this position");
    }
    with_deadline(
        STARTUP_ANSWER_LIMIT,
        "reading the server's WAL position",
        slot::check_cursor_within_wal(client, lsn),
    )
    .await??;
    with_deadline(
        STARTUP_ANSWER_LIMIT,
        "reading the replication slot",
        slot::check_slot_for_resume(client, config, lsn),
    )
    .await??;
    Ok(lsn)
}

/// Start streaming pgoutput from the capture's slot at `start`.
async fn start_replication(
    replication: ReplicationClient,
    config: &Config,
    start: Lsn,
    protocol_version: u32,
) -> Result<ReplicationStream, Error> {
    let slot = config.slot_name().to_string();
    let mut options: Vec<(&str, String)> = vec![
        ("proto_version", protocol_version.to_string()),
        ("publication_names", quote_identifier(config.publication_name())),
    ];
    if protocol_version >= 2 {
        options.push(("streaming", "on".to_string()));
    }
    with_deadline(STARTUP_ANSWER_LIMIT, "starting replication", replication.start_replication(&slot, start, &options))
        .await?
        .map_err(|err| {
            let text = err.to_string();
            if text.contains("is active for PID") {
                // Free a moment ago (`slot::wait_until_released`): taken since.
                slot::slot_in_use(&slot, Some(&text), None)
            } else {
                Error::Pg(err)
            }
        })
}

/// Session settings of the SQL connection used for backfills and watermarks.
///
/// `synchronous_commit = local`: a watermark's commit is flushed before it returns, so the
/// walsender (which sends only flushed WAL) delivers the fence at once. Under a server
/// default of `off` (common tuning) every fence would otherwise wait for the WAL writer
/// (`wal_writer_delay`, 200 ms by default); `local` does not wait for synchronous standbys.
pub(super) async fn configure_session(client: &Client, config: &Config) -> Result<(), Error> {
    let timeout_ms = config.statement_timeout.map_or(0, |d| d.as_millis());
    client
        .batch_execute(&format!(
            "SET statement_timeout = {timeout_ms}; SET max_parallel_workers_per_gather = 0; SET lock_timeout = 60000; \
             SET synchronous_commit = local"
        ))
        .await
        .map_err(pg)
}

/// The server's `wal_sender_timeout` in milliseconds (0: none), which sets the standby
/// status interval ([`status::interval_for`]) and how long a held slot is waited for
/// ([`slot::release_bound`]).
async fn wal_sender_timeout_ms(client: &Client) -> Result<i64, Error> {
    Ok(client
        .query_one("SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout'", &[])
        .await
        .map_err(pg)?
        .get(0))
}

/// pgoutput ends the stream with `publication "p" does not exist` when the publication was
/// dropped (it checks when it next decodes a change): say so, and how to recover, instead of
/// passing on a bare server error.
pub(super) fn publication_stream_error(err: Error, config: &Config) -> Error {
    let Error::Pg(PgError::Server { code, message, .. }) = &err else { return err };
    let expected = format!("publication {} does not exist", quote_identifier(config.publication_name()));
    if code != "42704" || !message.starts_with(&expected) {
        return err;
    }
    let gone = crate::validate::publication::PublicationShape::default();
    match crate::validate::publication::running_problem(config, &gone) {
        Some((message, hint)) => Error::user(message, hint),
        None => err,
    }
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Settle every binding's backfill mode (see [`reconcile::activate`]); also after a
    /// backfill restarted (see `retype`).
    pub(super) fn activate_pending(&mut self) {
        for (index, binding) in self.bindings.iter_mut().enumerate() {
            let skip = self.config.skips_backfill(&binding.table.schema, &binding.table.name);
            if reconcile::activate(binding, skip) {
                self.checkpoints.binding_changed(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FeatureFlags;

    #[test]
    fn the_resume_cursor_is_chosen_as_the_go_connector_chooses_it() {
        let flags = |text: &str| FeatureFlags::parse(text).unwrap();
        let at = |text: &str| Some(text.parse::<Lsn>().unwrap());
        assert_eq!(resume_cursor(None, &flags("")).unwrap(), None);
        assert_eq!(resume_cursor(Some("0/20"), &flags("")).unwrap(), at("0/20"));
        // initial_backfill_cursor only when the state has no position.
        assert_eq!(resume_cursor(None, &flags("initial_backfill_cursor=0/10")).unwrap(), at("0/10"));
        assert_eq!(resume_cursor(Some("0/20"), &flags("initial_backfill_cursor=0/10")).unwrap(), at("0/20"));
        // force_reset_cursor whatever the state says, even a state that is no position.
        assert_eq!(resume_cursor(Some("0/20"), &flags("force_reset_cursor=0/30")).unwrap(), at("0/30"));
        assert_eq!(resume_cursor(None, &flags("force_reset_cursor=0/30")).unwrap(), at("0/30"));
        assert_eq!(resume_cursor(Some("junk"), &flags("force_reset_cursor=0/30")).unwrap(), at("0/30"));
        assert_eq!(resume_cursor(Some("0/20"), &flags("no_force_reset_cursor=0/30")).unwrap(), at("0/20"));
        let err = resume_cursor(Some("junk"), &flags("")).unwrap_err().to_string();
        assert!(err.contains("the capture state's cursor is not an LSN"), "{err}");
    }
}
