//! Which replication slot a session streams from, and from where: the checks that keep a
//! capture from destroying a slot that is not its own, or from trusting a position the
//! server never had.
//!
//! **Without a resume position** (a new capture, or every binding re-backfilled) the
//! capture starts at the server's current position. By default it manages its slot (the Go
//! connector's `create_replication_slot` flag): it creates one, replacing an existing slot
//! of the configured name only when that slot is provably its own:
//!
//! ```text
//!   slot of that name?  no ──► record ownership, create it
//!        │ yes
//!        ├─ physical, another database or another output plugin ──► refuse (never ours)
//!        ├─ in use ──► refuse (another capture is running; see below)
//!        ├─ the watermarks table's row of the slot names this capture ──► drop, recreate
//!        ├─ it names another capture ──► refuse
//!        ├─ nothing recorded, but the state had a cursor ──► drop, recreate
//!        └─ nothing recorded, empty state ──► refuse (a user's or unknown slot)
//! ```
//!
//! The proof: every watermark this connector writes is `<random hex>:<capture task name>`,
//! upserted into the watermarks table's row keyed by the slot name, and the first one is
//! written *before* the slot is created. So a slot this connector created always has a row
//! naming the capture that created it (until another capture with the same slot name and
//! watermarks table overwrites it, in which case the slot is indeed that capture's now).
//! A slot without such a row (a user's, another tool's, or one from the Go connector or an
//! older version) is replaced only when the state has a cursor, i.e. this capture streamed
//! from a slot of this name before: that is the documented "backfill every binding" way to
//! recover from an invalidated slot, and it must keep working for captures that switched
//! from the Go connector. With an empty state nothing shows whose the slot is, so it is
//! left alone and the error says how to proceed.
//!
//! With `no_create_replication_slot` the slot belongs to the user, as in the Go connector:
//! it must exist (validation says so too), it is never dropped or created, and the capture
//! starts from the server's current position.
//!
//! **With a resume position** the position must lie within the server's WAL (a state
//! written against another server, or one restored from a backup, would otherwise make the
//! stream wait for WAL that never comes, and confirm the slot to a position the server has
//! not reached), and the slot must exist, be usable, and not be confirmed past it.
//!
//! **A slot in use** is waited for first ([`wait_until_released`]), whichever the path: the
//! session holding it may be the walsender of this capture's own previous session, which
//! the server ends only once it notices the client is gone (at once for a crashed process,
//! after `wal_sender_timeout` for a cut network path). Only a slot held past that bound is
//! another capture's.

use std::time::Duration;

use tokio_postgres::Client;

use super::fence::{new_watermark, owner_of};
use super::{pg, slot_wait, with_deadline};
use crate::config::Config;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::pg::replication::ReplicationClient;
use crate::pg::{quote_identifier, quote_literal, PgError};

/// The slot of the configured name, as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
struct SlotRow {
    slot_type: String,
    plugin: Option<String>,
    database: Option<String>,
    active: bool,
    wal_status: Option<String>,
    confirmed_flush: Option<Lsn>,
}

async fn load_slot(client: &Client, slot: &str) -> Result<Option<SlotRow>, Error> {
    let row = client
        .query_opt(
            "SELECT slot_type::text, plugin::text, database::text, active, wal_status::text, confirmed_flush_lsn::text
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|row| SlotRow {
        slot_type: row.get(0),
        plugin: row.get(1),
        database: row.get(2),
        active: row.get(3),
        wal_status: row.get(4),
        confirmed_flush: row.get::<_, Option<String>>(5).and_then(|text| text.parse().ok()),
    }))
}

/// `SELECT pg_catalog.pg_drop_replication_slot('slot');`
fn drop_sql(slot: &str) -> String {
    format!("SELECT pg_catalog.pg_drop_replication_slot({});", quote_literal(slot))
}

/// A slot this capture can never use: physical, of another database, or another plugin.
fn refuse_foreign(slot: &str, found: &SlotRow, database: &str) -> Result<(), Error> {
    let why = if found.slot_type != "logical" {
        format!("replication slot {slot:?} is a {} slot, but the capture needs a logical one", found.slot_type)
    } else if found.database.as_deref() != Some(database) {
        format!(
            "replication slot {slot:?} belongs to database {:?}, but this capture reads database {database:?}",
            found.database.as_deref().unwrap_or_default()
        )
    } else if found.plugin.as_deref() != Some("pgoutput") {
        format!(
            "replication slot {slot:?} uses the output plugin {:?}, but the capture needs \"pgoutput\"",
            found.plugin.as_deref().unwrap_or_default()
        )
    } else {
        return Ok(());
    };
    Err(Error::user(
        format!("{why}: it is not this capture's, and is left alone"),
        format!(
            "give this capture its own slot with advanced.slotName (currently {slot:?}); drop the existing slot only if nothing uses it: {}",
            drop_sql(slot)
        ),
    ))
}

/// Who the watermarks table says the slot belongs to.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// A watermark of this capture.
    This,
    /// A watermark of another capture, by task name.
    Other(String),
    /// No row, or a watermark that names no capture (the Go connector's, or an older one).
    Unknown,
}

fn watermarks_table(config: &Config) -> String {
    format!("{}.{}", quote_identifier(&config.watermarks_schema), quote_identifier(&config.watermarks_table))
}

async fn slot_owner(client: &Client, config: &Config, owner: &str) -> Result<Owner, Error> {
    let sql = format!("SELECT watermark FROM {} WHERE slot = $1", watermarks_table(config));
    let row = super::with_deadline(
        super::STARTUP_ANSWER_LIMIT,
        "reading the watermarks table",
        client.query_opt(&sql, &[&config.slot_name()]),
    )
    .await?;
    let row = match row {
        // A read-only capture needs no watermarks table: without one (or without the right
        // to read it), nothing shows whose the slot is.
        Err(err)
            if config.read_only()
                && matches!(
                    err.code(),
                    Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                        | Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
                        | Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME)
                ) =>
        {
            None
        }
        other => other.map_err(pg)?,
    };
    let watermark: Option<String> = row.and_then(|row| row.get(0));
    Ok(match watermark.as_deref().and_then(owner_of) {
        Some(found) if found == owner => Owner::This,
        Some(found) => Owner::Other(found.to_string()),
        None => Owner::Unknown,
    })
}

/// Upsert `watermark` into the watermarks table's row of the slot.
pub(super) async fn upsert_watermark(client: &Client, config: &Config, watermark: &str) -> Result<(), Error> {
    let table = watermarks_table(config);
    let sql = format!("INSERT INTO {table} (slot, watermark) VALUES ($1, $2) ON CONFLICT (slot) DO UPDATE SET watermark = excluded.watermark");
    match super::with_deadline(
        super::STARTUP_ANSWER_LIMIT,
        "writing the watermarks table",
        client.execute(&sql, &[&config.slot_name(), &watermark]),
    )
    .await?
    {
        Ok(_) => Ok(()),
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => Err(Error::user(
            format!("writing a watermark to {table} failed: {}", PgError::from(err)),
            format!("GRANT INSERT, UPDATE ON {table} TO {};", quote_identifier(&config.raw.user)),
        )),
        Err(err) => Err(pg(err)),
    }
}

/// The server's current WAL position as the walsender sees it: the flush position, or on a
/// standby the replay position.
pub(super) async fn server_wal_end(client: &Client) -> Result<Lsn, Error> {
    let row = client
        .query_one(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                     ELSE pg_catalog.pg_current_wal_flush_lsn() END)::text",
            &[],
        )
        .await
        .map_err(pg)?;
    let text: Option<String> = row.get(0);
    text.as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|err| Error::Internal(format!("the server's WAL position {text:?}: {err}")))
}

/// The WAL position of a read-only fence (see [`super::fence`]): on a primary the insert
/// position, which is past every commit record written so far, visible or not (the flush
/// position is not: under `synchronous_commit = off` a transaction is visible before its
/// commit is flushed); on a standby the replay position, since a standby's snapshots see
/// exactly the transactions whose commit it has replayed.
pub(super) async fn fence_position(client: &Client) -> Result<Lsn, Error> {
    let row = client
        .query_one(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                     ELSE pg_catalog.pg_current_wal_insert_lsn() END)::text,
                    pg_catalog.current_setting('wal_block_size')::bigint,
                    pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size'))",
            &[],
        )
        .await
        .map_err(pg)?;
    let text: Option<String> = row.get(0);
    let position: Lsn = text
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|err| Error::Internal(format!("the server's WAL position {text:?}: {err}")))?;
    // Unknown sizes (0) leave the position as it is.
    let size = |index: usize| row.try_get::<_, i64>(index).ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let (block_size, segment_size) = (size(1), size(2));
    Ok(super::fence::record_end(position, block_size, segment_size))
}

/// The start position of a capture without a resume position, with its slot ready (see the
/// module docs). `streamed_before`: the state had a cursor.
pub(super) async fn start_without_cursor(
    replication: &mut ReplicationClient,
    client: &Client,
    config: &Config,
    owner: &str,
    streamed_before: bool,
) -> Result<Lsn, Error> {
    let slot = config.slot_name();
    let database: String = super::with_deadline(
        super::STARTUP_ANSWER_LIMIT,
        "reading the database name",
        client.query_one("SELECT current_database()::text", &[]),
    )
    .await?
    .map_err(pg)?
    .get(0);
    let found = load_slot(client, slot).await?;
    if let Some(found) = &found {
        refuse_foreign(slot, found, &database)?;
    }
    if !config.creates_replication_slot() {
        // The Go connector's meaning: the user manages the slot; use it as it is.
        let Some(found) = found else {
            return Err(Error::user(
                format!("replication slot {slot:?} does not exist and the 'no_create_replication_slot' feature flag is set"),
                format!(
                    "create it: SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput'); or remove no_create_replication_slot from advanced.feature_flags to let the capture create it",
                    quote_literal(slot)
                ),
            ));
        };
        if found.wal_status.as_deref() == Some("lost") {
            return Err(Error::user(
                format!("replication slot {slot:?} was invalidated by the server (wal_status = lost), and the 'no_create_replication_slot' feature flag is set"),
                format!(
                    "drop and create it again: {} SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput');",
                    drop_sql(slot),
                    quote_literal(slot)
                ),
            ));
        }
        let start = server_wal_end(client).await?;
        tracing::info!(slot = %slot, lsn = %start, "starting from the current position with the existing slot (no_create_replication_slot)");
        return Ok(start);
    }
    if let Some(found) = &found {
        if found.active {
            return Err(slot_in_use(slot, None, None));
        }
        match slot_owner(client, config, owner).await? {
            Owner::This => {}
            Owner::Unknown if streamed_before => {}
            Owner::Other(other) => {
                return Err(Error::user(
                    format!(
                        "replication slot {slot:?} belongs to capture {other:?} (its last watermark in {} names it), not to this capture {owner:?}: it is left alone",
                        watermarks_table(config)
                    ),
                    format!(
                        "give this capture its own slot with advanced.slotName (currently {slot:?}); drop the other capture's slot only if that capture is deleted: {}",
                        drop_sql(slot)
                    ),
                ));
            }
            Owner::Unknown => {
                return Err(Error::user(
                    format!(
                        "replication slot {slot:?} already exists, and nothing shows that this capture created it: it may be another capture's or a user's, so it is left alone"
                    ),
                    format!(
                        "give this capture its own slot with advanced.slotName (currently {slot:?}); or, if nothing uses the slot, drop it: {}; or, to capture from this slot as it is, add no_create_replication_slot to advanced.feature_flags",
                        drop_sql(slot)
                    ),
                ));
            }
        }
        // Recreate it so that it starts now, without the WAL the old one retained.
        match super::with_deadline(
            super::STARTUP_ANSWER_LIMIT,
            "dropping the replication slot",
            replication.drop_slot(slot, false),
        )
        .await?
        {
            Ok(()) | Err(PgError::SlotMissing { .. }) => {}
            Err(PgError::SlotActive { .. }) => return Err(slot_in_use(slot, None, None)),
            Err(err) => return Err(Error::Pg(err)),
        }
        tracing::info!(slot = %slot, "dropped this capture's earlier replication slot to start afresh");
    }
    // Ownership is on record before the slot exists, so that a crash right after creating
    // it still leaves a slot this capture recognises. A read-only capture writes nothing:
    // its slot is recognised only once its state has a cursor (the first checkpoint).
    if !config.read_only() {
        upsert_watermark(client, config, &new_watermark(owner)).await?;
    }
    let consistent_point = create_slot(replication, client, slot).await?;
    tracing::info!(slot = %slot, lsn = %consistent_point, "created replication slot");
    Ok(consistent_point)
}

/// How long a capture waits for its slot to be released by a walsender still holding it,
/// for a server whose `wal_sender_timeout` is `timeout_ms` (0: none).
///
/// A walsender keeps its slot until it notices that its client is gone: at once when the
/// client's process died on a reachable host (the socket closes), but only after
/// `wal_sender_timeout` when the network path was cut. So a capture restarted right after a
/// crash can find its own slot still held by its predecessor's walsender, for a moment or
/// for up to that timeout. The bound is the timeout and a margin, at most two minutes; half
/// a minute when the server has no timeout. A slot still held after it is another capture's.
pub(super) fn release_bound(timeout_ms: i64) -> Duration {
    match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => (Duration::from_millis(ms) + Duration::from_secs(5)).min(Duration::from_secs(120)),
        _ => Duration::from_secs(30),
    }
}

/// The session holding a slot, as `pg_stat_activity` shows it to the capture user.
#[derive(Debug, Default)]
struct SlotHolder {
    pid: i32,
    application: Option<String>,
    client: Option<String>,
    since: Option<String>,
}

impl SlotHolder {
    fn describe(&self) -> String {
        let mut text = format!("PID {}", self.pid);
        if let Some(application) = self.application.as_deref().filter(|a| !a.is_empty()) {
            text.push_str(&format!(", application {application:?}"));
        }
        if let Some(client) = &self.client {
            text.push_str(&format!(", from {client}"));
        }
        if let Some(since) = &self.since {
            text.push_str(&format!(", connected since {since}"));
        }
        text
    }
}

async fn slot_holder(client: &Client, slot: &str) -> Result<Option<SlotHolder>, Error> {
    let row = client
        .query_opt(
            "SELECT s.active_pid, a.application_name::text, a.client_addr::text, a.backend_start::text
             FROM pg_catalog.pg_replication_slots s
             LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = s.active_pid
             WHERE s.slot_name = $1 AND s.active_pid IS NOT NULL",
            &[&slot],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|row| SlotHolder { pid: row.get(0), application: row.get(1), client: row.get(2), since: row.get(3) }))
}

/// Wait, up to `bound` (see [`release_bound`]), until no session holds the slot (or it
/// does not exist); a slot still held then is in use by another capture, and that is the
/// error, naming the session that holds it.
pub(super) async fn wait_until_released(client: &Client, slot: &str, bound: Duration) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let mut reported = false;
    let mut pause = Duration::from_millis(50);
    loop {
        let holder =
            with_deadline(super::STARTUP_ANSWER_LIMIT, "reading the replication slot", slot_holder(client, slot))
                .await??;
        let Some(holder) = holder else {
            if reported {
                tracing::info!(slot = %slot, waited_ms = started.elapsed().as_millis() as u64, "the replication slot was released");
            }
            return Ok(());
        };
        if started.elapsed() >= bound {
            let held = format!("the slot was held for {} s by {}", bound.as_secs(), holder.describe());
            return Err(slot_in_use(slot, Some(&held), Some(holder.pid)));
        }
        if !reported {
            reported = true;
            tracing::warn!(
                slot = %slot,
                holder = %holder.describe(),
                bound_s = bound.as_secs(),
                "the replication slot is held by another session: waiting for it to be released (a capture restarted right after a crash finds its predecessor's connection still open until the server notices it is gone)"
            );
        }
        tokio::time::sleep(pause.min(bound.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The error for a slot another session holds: another capture, as far as this one can tell.
/// `detail` says what is known of the holder; with its `pid`, the hint says how to end it.
pub(super) fn slot_in_use(slot: &str, detail: Option<&str>, pid: Option<i32>) -> Error {
    let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
    let end_it = pid
        .map(|pid| format!("; if nothing else should be using it, end that session: SELECT pg_catalog.pg_terminate_backend({pid});"))
        .unwrap_or_default();
    Error::user(
        format!(
            "replication slot {slot:?} is in use: another capture is already running against this database{detail}"
        ),
        format!(
            "stop the other capture, or give this one its own slot with advanced.slotName (currently {slot:?}){end_it}"
        ),
    )
}

/// Refuse a resume position beyond the server's WAL: the server has never written it, so the
/// stream would wait for it (while a status update would confirm the slot to it, past WAL
/// the slot must keep).
pub(super) async fn check_cursor_within_wal(client: &Client, cursor: Lsn) -> Result<(), Error> {
    let end = server_wal_end(client).await?;
    if cursor > end {
        return Err(Error::user(
            format!(
                "the capture state's resume position {cursor} is beyond the end of the server's WAL ({end}): the state was not written against this server (another server, or this one restored from a backup or rebuilt)"
            ),
            "the capture cannot resume from it: increment the backfill counter of every binding to re-backfill, which starts from the server's current position",
        ));
    }
    Ok(())
}

/// Refuse to resume from a slot that cannot deliver what follows the cursor.
pub(super) async fn check_slot_for_resume(client: &Client, config: &Config, cursor: Lsn) -> Result<(), Error> {
    let slot = config.slot_name();
    let hint = "the changes since the last checkpoint are lost: increment the backfill counter of every binding to re-backfill, which recreates the slot";
    let Some(found) = load_slot(client, slot).await? else {
        return Err(Error::user(
            format!("replication slot {slot:?} does not exist, but the capture has a resume position ({cursor})"),
            hint,
        ));
    };
    let database: String = super::with_deadline(
        super::STARTUP_ANSWER_LIMIT,
        "reading the database name",
        client.query_one("SELECT current_database()::text", &[]),
    )
    .await?
    .map_err(pg)?
    .get(0);
    refuse_foreign(slot, &found, &database)?;
    if found.wal_status.as_deref() == Some("lost") {
        return Err(Error::user(
            format!("replication slot {slot:?} was invalidated by the server (wal_status = lost), usually because max_slot_wal_keep_size was exceeded"),
            hint,
        ));
    }
    if let Some(confirmed) = found.confirmed_flush {
        if confirmed > cursor {
            return Err(Error::user(
                format!("replication slot {slot:?} has been confirmed up to {confirmed}, past the capture's resume position {cursor}: another consumer used the slot, or it was recreated"),
                hint,
            ));
        }
    }
    Ok(())
}

/// When a slot creation that is still waiting is first reported, and how often after that.
const SLOT_WAIT_FIRST_REPORT: Duration = Duration::from_secs(5);
const SLOT_WAIT_REPORT_EVERY: Duration = Duration::from_secs(30);
/// How long the query listing what a slot creation waits for may go unanswered.
const SLOT_WAIT_ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// Create the capture's slot, reporting while the server makes it wait for transactions
/// that were running when it was requested (see [`super::slot_wait`]): first after
/// [`SLOT_WAIT_FIRST_REPORT`], then every [`SLOT_WAIT_REPORT_EVERY`].
async fn create_slot(replication: &mut ReplicationClient, client: &Client, slot: &str) -> Result<Lsn, Error> {
    let requested = tokio::time::Instant::now();
    let create = replication.create_logical_slot(slot);
    tokio::pin!(create);
    let mut report_at = requested + SLOT_WAIT_FIRST_REPORT;
    loop {
        match tokio::time::timeout_at(report_at, create.as_mut()).await {
            Ok(created) => return Ok(created?),
            Err(_) => {
                let waited = i64::try_from(requested.elapsed().as_secs()).unwrap_or(i64::MAX);
                // A server that does not answer this query within the silence limit is not
                // busy making the slot: the network path or the server is gone (the slot
                // request on the other connection would wait forever), so the capture fails
                // and is restarted instead of hanging.
                let blockers = match with_deadline(
                    SLOT_WAIT_ANSWER_LIMIT,
                    "listing the transactions a slot creation waits for",
                    slot_wait::blockers(client, waited),
                )
                .await?
                {
                    Ok(blockers) => Some(blockers),
                    Err(err) => {
                        tracing::debug!(error = %PgError::from(err), "listing the transactions a slot creation waits for failed");
                        None
                    }
                };
                let (message, hint) = slot_wait::describe(slot, waited, blockers.as_ref());
                tracing::warn!(slot = %slot, waited_s = waited, "{message}\nHINT: {hint}");
                if report_at == requested + SLOT_WAIT_FIRST_REPORT {
                    crate::log::status(
                        "Waiting for running transactions to end before the replication slot can be created",
                    );
                }
                report_at += SLOT_WAIT_REPORT_EVERY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_is_waited_for_as_long_as_the_server_takes_to_notice_a_lost_client() {
        assert_eq!(release_bound(60_000), Duration::from_secs(65), "the default wal_sender_timeout");
        assert_eq!(release_bound(2_000), Duration::from_secs(7));
        assert_eq!(release_bound(3_600_000), Duration::from_secs(120), "at most two minutes");
        assert_eq!(release_bound(0), Duration::from_secs(30), "no timeout: the server never ends it");
        assert_eq!(release_bound(-1), Duration::from_secs(30));
    }

    #[test]
    fn the_holder_of_a_slot_is_named_with_what_is_known_of_it() {
        let holder = SlotHolder {
            pid: 4242,
            application: Some("source-postgres".into()),
            client: Some("10.0.0.7/32".into()),
            since: Some("2026-12-07 07:00:00+00".into()),
        };
        assert_eq!(
            holder.describe(),
            "PID 4242, application \"source-postgres\", from 10.0.0.7/32, connected since 2026-12-07 07:00:00+00"
        );
        let hidden = SlotHolder { pid: 7, application: Some(String::new()), ..SlotHolder::default() };
        assert_eq!(hidden.describe(), "PID 7");
    }

    #[test]
    fn foreign_slots_are_refused_with_the_reason() {
        let ours = SlotRow {
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            database: Some("shop".into()),
            active: false,
            wal_status: None,
            confirmed_flush: None,
        };
        assert!(refuse_foreign("s", &ours, "shop").is_ok());
        let other_db = refuse_foreign("s", &ours, "sales").unwrap_err().to_string();
        assert!(
            other_db.contains("belongs to database \"shop\", but this capture reads database \"sales\""),
            "{other_db}"
        );
        let wal2json = SlotRow { plugin: Some("wal2json".into()), ..ours.clone() };
        let err = refuse_foreign("s", &wal2json, "shop").unwrap_err();
        assert!(err.to_string().contains("uses the output plugin \"wal2json\""), "{err}");
        assert!(err.hint().unwrap().contains("SELECT pg_catalog.pg_drop_replication_slot('s');"));
        let physical = SlotRow { slot_type: "physical".into(), plugin: None, database: None, ..ours };
        assert!(refuse_foreign("s", &physical, "shop").unwrap_err().to_string().contains("is a physical slot"));
    }
}
