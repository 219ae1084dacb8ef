//! The chunk query on the wire: one round trip that opens a `REPEATABLE READ` transaction,
//! reports its snapshot and the table's columns as that snapshot sees them, runs the chunk
//! query with text parameters, (for keyless chunks) describes the files the query read, and
//! commits. The session (`chunks`) decides what the answer means; this module only sends the
//! requests in an order nothing can come between, and hands back the answers.

use tokio_postgres::Client;

use super::{backfill, first_text};

/// A chunk query's answer: the snapshot its rows were read with (`pg_current_snapshot()`'s
/// text), the rows, and for a keyless chunk the answer of [`backfill::RELATION_SQL`],
/// which comes after the rows.
pub(super) struct ChunkRows {
    pub(super) snapshot: String,
    /// The table's columns as the chunk's snapshot sees them.
    pub(super) columns: Option<Vec<String>>,
    pub(super) rows: tokio_postgres::RowStream,
    pub(super) relation: Option<RelationAnswer>,
}

/// The pending answer of a chunk's [`backfill::RELATION_SQL`] query.
pub(super) type RelationAnswer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>> + Send>,
>;

/// Opens the transaction of a chunk query and reads its snapshot, which the query that
/// follows in the same `REPEATABLE READ` transaction then uses, and the table's columns as
/// that snapshot sees them (a JSON array of names in column order, as discovery reads
/// them). A chunk query names the columns read when the table was described: a column added
/// since (before the stream's start position, or with a default that no change carries)
/// would be missing from every row read, with no Relation message to tell. The table's OID
/// is a number, not a name.
///
/// `lock_wait_ms`: how long the query may wait for its table's lock, for this transaction
/// only (see `parallel`: a later range must not wait behind a lock request that itself waits
/// for an earlier range).
fn chunk_snapshot_sql(table_oid: u32, lock_wait_ms: Option<u32>) -> String {
    let lock_wait = lock_wait_ms.map(|ms| format!("SET LOCAL lock_timeout = {ms}; ")).unwrap_or_default();
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {lock_wait}\
         SELECT pg_current_snapshot()::text, \
         (SELECT json_agg(a.attname ORDER BY a.attnum)::text FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = {table_oid} AND a.attnum > 0 AND NOT a.attisdropped)"
    )
}

/// The column names a chunk's snapshot query answered (None: the table is gone, or the
/// answer is not what the query returns).
fn columns_of(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<Vec<String>> {
    let text = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(1).map(str::to_string),
        _ => None,
    })?;
    serde_json::from_str(&text).ok()
}

/// Send a chunk query, in a transaction that also reports its snapshot. The transaction's
/// three requests (begin and snapshot, the query, commit) are pipelined: sent together, in
/// this order, before any other request on the connection, so the whole exchange costs
/// one round trip, and the commit, queued behind the rows, ends the transaction as soon as
/// they are sent. The query's parameters are all text (the SQL casts them to each key
/// column's type), so it is parsed, bound and executed without a separate prepare round
/// trip: with many small tables, round trips are most of a chunk's cost. With `relation`
/// (keyless chunks), [`backfill::RELATION_SQL`] goes between the query and the commit,
/// still in the same round trip, so that it describes the files the query read.
pub(super) async fn run_chunk_query(
    client: &std::sync::Arc<Client>,
    table_oid: u32,
    sql: &str,
    params: &[Option<String>],
    relation: Option<u32>,
) -> Result<ChunkRows, tokio_postgres::Error> {
    run_query_waiting(client, table_oid, sql, params, relation, None).await
}

/// [`run_chunk_query`], waiting at most `lock_wait_ms` for the table's lock (None: the
/// session's `lock_timeout`).
pub(super) async fn run_query_waiting(
    client: &std::sync::Arc<Client>,
    table_oid: u32,
    sql: &str,
    params: &[Option<String>],
    relation: Option<u32>,
    lock_wait_ms: Option<u32>,
) -> Result<ChunkRows, tokio_postgres::Error> {
    use std::future::Future;
    use std::task::Poll;
    // Each request is sent when its future is first polled: the three are polled in order
    // in the same call, so nothing can come between them.
    let snapshot_sql = chunk_snapshot_sql(table_oid, lock_wait_ms);
    let snapshot = client.simple_query(&snapshot_sql);
    let rows = client.query_typed_raw(sql, params.iter().map(|p| (p.as_deref(), tokio_postgres::types::Type::TEXT)));
    // Owned (its answer is read after the rows, once this function has returned), so it
    // holds its own handle on the client.
    let mut relation: Option<RelationAnswer> = relation.map(|oid| {
        let client = std::sync::Arc::clone(client);
        let answer: RelationAnswer = Box::pin(async move {
            use futures::TryStreamExt;
            let oid = oid.to_string();
            let rows = client
                .query_typed_raw(backfill::RELATION_SQL, [(Some(oid.as_str()), tokio_postgres::types::Type::TEXT)])
                .await?;
            rows.try_collect().await
        });
        answer
    });
    let commit = client.batch_execute("COMMIT");
    tokio::pin!(snapshot, rows, commit);
    let mut snapshot_result = None;
    let mut rows_result = None;
    let mut relation_sent = false;
    let mut relation_early = None;
    let mut commit_sent = false;
    let answers = std::future::poll_fn(|cx| {
        if snapshot_result.is_none() {
            if let Poll::Ready(result) = snapshot.as_mut().poll(cx) {
                snapshot_result = Some(result);
            }
        }
        if rows_result.is_none() {
            if let Poll::Ready(result) = rows.as_mut().poll(cx) {
                rows_result = Some(result);
            }
        }
        if !relation_sent {
            // Its first poll sends it; its answer follows the rows, so only a failure to send
            // can complete it here (a completed future may not be polled again).
            relation_sent = true;
            if let Some(answer) = relation.as_mut() {
                if let Poll::Ready(result) = answer.as_mut().poll(cx) {
                    relation_early = Some(result);
                }
            }
        }
        if !commit_sent {
            // Sent now; its answer comes after the rows and nobody waits for it (a
            // connection that fails meanwhile fails the next request instead).
            commit_sent = true;
            let _ = commit.as_mut().poll(cx);
        }
        match (snapshot_result.take(), rows_result.take()) {
            (Some(snapshot), Some(rows)) => Poll::Ready((snapshot, rows)),
            (snapshot, rows) => {
                (snapshot_result, rows_result) = (snapshot, rows);
                Poll::Pending
            }
        }
    })
    .await;
    let (snapshot, rows) = answers;
    let snapshot = snapshot?;
    let rows = rows?;
    if let Some(result) = relation_early {
        relation = Some(Box::pin(std::future::ready(result)));
    }
    Ok(ChunkRows {
        snapshot: first_text(&snapshot).unwrap_or_default(),
        columns: columns_of(&snapshot),
        rows,
        relation,
    })
}
