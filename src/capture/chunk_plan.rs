//! Chunk planning and chunk outcomes: the decisions of a backfill chunk that need no
//! server. Which window the next chunk reads, how big, and, once it was read, whether the
//! backfill is done, where it resumes, and how big the chunk after it is.
//!
//! Sizing: a chunk query cut by `statement_timeout` before it yielded a row is retried at
//! half its size (down to one row or page, below which the error stands); one cut after
//! some rows keeps them, and the next chunk is half the rows it read; chunks that take
//! under a quarter of the timeout grow back, doubling, up to the configured size. A keyed
//! backfill is done when a chunk reads fewer rows than its limit; a keyless one when the
//! next window would start past the relation's size measured after the chunk's rows were
//! read (every row the chunk's snapshot sees lies on a page that existed then, and later
//! rows arrive through replication). A chunk cut by the timeout is never the last.
//!
//! Resume positions are stored as the Go connector stores them: a keyed one as base64 of a
//! FoundationDB tuple of the last row's key (integers as integers, everything else as its
//! PostgreSQL text), a keyless one as base64 of `"(block,0)"`.

use std::time::Duration;

use base64::Engine as _;

use super::backfill::{self, ChunkPlan};
use super::{keys, order};
use crate::value::PgType;

/// The fix for a resume position that cannot be used.
const RESTART_HINT: &str = "increment the binding's backfill counter to restart its backfill";

/// A stored resume position that cannot be used, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResumeError {
    pub message: String,
    pub hint: &'static str,
}

impl ResumeError {
    fn restart(message: String) -> ResumeError {
        ResumeError { message, hint: RESTART_HINT }
    }
}

/// The window of a keyless chunk resuming after `scanned` (none: from the start): the
/// binding's current chunk size in pages, else `default_pages`, at least one page.
pub(super) fn keyless_window(
    scanned: Option<&str>,
    chunk_limit: Option<i64>,
    default_pages: Option<u64>,
) -> Result<ChunkPlan, ResumeError> {
    let per_chunk = chunk_limit.and_then(|l| u64::try_from(l).ok()).unwrap_or(default_pages.unwrap_or(1)).max(1);
    let after = match scanned {
        Some(scanned) => keyless_resume_block(scanned)?,
        None => 0,
    };
    Ok(ChunkPlan::Keyless { after_block: after, until_block: after + per_chunk })
}

/// A keyed chunk resuming after `scanned` (none: from the start), with the binding's
/// current chunk size, else the configured one, at least one row.
pub(super) fn keyed_page(
    scanned: Option<&str>,
    key_columns: &[String],
    table: &str,
    chunk_limit: Option<i64>,
    chunk_size: i64,
) -> Result<ChunkPlan, ResumeError> {
    let after = scanned.map(|scanned| keyed_resume_values(scanned, key_columns, table)).transpose()?;
    Ok(ChunkPlan::Keyed { after, limit: chunk_limit.unwrap_or(chunk_size).max(1) })
}

/// The resume key's values as PostgreSQL text, one per key column.
fn keyed_resume_values(scanned: &str, key_columns: &[String], table: &str) -> Result<Vec<Option<String>>, ResumeError> {
    let elements = keys::decode_base64(scanned)
        .map_err(|err| ResumeError::restart(format!("the resume key of table \"{table}\" is invalid: {err}")))?;
    if elements.len() != key_columns.len() {
        return Err(ResumeError {
            message: keys::KeyError::Arity { found: elements.len(), expected: key_columns.len() }.to_string(),
            hint: "the table's key changed: increment the binding's backfill counter to restart its backfill",
        });
    }
    elements
        .iter()
        .zip(key_columns)
        .map(|(element, column)| {
            keys::element_to_text(element, column).map_err(|err| ResumeError::restart(err.to_string()))
        })
        .collect()
}

/// The block a keyless backfill resumes after.
fn keyless_resume_block(scanned: &str) -> Result<u64, ResumeError> {
    let text = base64::engine::general_purpose::STANDARD
        .decode(scanned)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ResumeError::restart("the keyless resume position is not valid base64 text".into()))?;
    backfill::parse_ctid(&text)
        .map(|(block, _)| block)
        .ok_or_else(|| ResumeError::restart(format!("the keyless resume position {text:?} is not a CTID")))
}

/// The resume position of a keyless backfill whose last chunk read up to `until_block`.
pub(super) fn keyless_resume(until_block: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("({until_block},0)"))
}

/// The resume position after a keyed chunk whose last row had `key` (PostgreSQL text of
/// each key column, of the types `types`).
pub(super) fn keyed_resume(key: &[Option<String>], types: &[Option<&PgType>]) -> String {
    let elements: Vec<keys::Element> =
        key.iter().zip(types).map(|(value, ty)| key_element(*ty, value.as_deref())).collect();
    keys::encode_base64(&elements)
}

/// The last row's key as comparable values, for a precise backfill's change filter (None
/// when a value cannot be compared exactly).
pub(super) fn comparable_key(orders: &[order::KeyOrder], key: &[Option<String>]) -> Option<Vec<order::KeyValue>> {
    orders
        .iter()
        .zip(key)
        .map(|(order, text)| text.as_deref().and_then(|t| order::key_value(*order, t.as_bytes())))
        .collect()
}

/// A key value as a tuple element: integers as integers (as the Go connector writes them),
/// everything else as its PostgreSQL text (the resume query casts it back).
fn key_element(ty: Option<&PgType>, text: Option<&str>) -> keys::Element {
    let Some(text) = text else { return keys::Element::Null };
    let mut base = ty;
    while let Some(PgType::Domain { base: inner, .. }) = base {
        base = Some(inner);
    }
    if let Some(PgType::Builtin { name, .. }) = base {
        if matches!(name.as_str(), "int2" | "int4" | "int8" | "oid") {
            if let Ok(value) = text.parse::<i64>() {
                return keys::Element::Int(value.into());
            }
        }
    }
    keys::Element::String(text.to_string())
}

/// A chunk's size: rows (keyed) or pages (keyless).
fn size_of(plan: &ChunkPlan) -> i64 {
    match plan {
        ChunkPlan::Keyed { limit, .. } => *limit,
        ChunkPlan::Keyless { after_block, until_block } => i64::try_from(until_block - after_block).unwrap_or(1),
    }
}

/// The size to retry a chunk at after its query hit the statement timeout before yielding
/// progress: half, or None when it was one row or page already (the error stands).
pub(super) fn shrunk(plan: &ChunkPlan) -> Option<i64> {
    let current = size_of(plan);
    (current > 1).then(|| (current / 2).max(1))
}

/// How a chunk was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkRead {
    pub rows: u64,
    /// Cut by the statement timeout after some rows (keyed chunks only).
    pub timed_out: bool,
    pub elapsed: Duration,
    /// A keyless chunk's relation size in pages, measured after its rows were read.
    pub relation_pages: Option<u64>,
}

/// The binding's chunk sizing, as it was when the chunk was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sizing {
    /// The binding's current chunk size, if it was ever changed from the configured one.
    pub limit: Option<i64>,
    pub statement_timeout: Option<Duration>,
    /// The configured size (keyed: rows; keyless: pages) that growth stops at.
    pub ceiling: i64,
}

/// What follows a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkOutcome {
    /// The backfill is complete.
    pub done: bool,
    /// The binding's chunk size from now on.
    pub limit: Option<i64>,
}

/// Whether the backfill is done after a chunk, and the size of the next one.
pub(super) fn outcome(plan: &ChunkPlan, read: &ChunkRead, sizing: &Sizing) -> ChunkOutcome {
    let limit = if read.timed_out {
        let fallback = match plan {
            ChunkPlan::Keyed { limit, .. } => *limit,
            ChunkPlan::Keyless { .. } => 1,
        };
        Some((i64::try_from(read.rows).unwrap_or(fallback) / 2).max(1))
    } else {
        match (sizing.limit, sizing.statement_timeout) {
            // Grow back towards the configured size while chunks take under a quarter of
            // the timeout.
            (Some(limit), Some(timeout)) if read.elapsed < timeout / 4 => {
                Some(limit.saturating_mul(2).min(sizing.ceiling))
            }
            (limit, _) => limit,
        }
    };
    let done = !read.timed_out
        && match plan {
            ChunkPlan::Keyed { limit, .. } => i64::try_from(read.rows).unwrap_or(i64::MAX) < *limit,
            ChunkPlan::Keyless { until_block, .. } => read.relation_pages.is_some_and(|pages| *until_block >= pages),
        };
    ChunkOutcome { done, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int4() -> PgType {
        PgType::Builtin { name: "int4".into(), typmod: -1 }
    }

    fn read(rows: u64, elapsed_ms: u64) -> ChunkRead {
        ChunkRead { rows, timed_out: false, elapsed: Duration::from_millis(elapsed_ms), relation_pages: None }
    }

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(40));

    #[test]
    fn keyed_chunks_are_done_when_they_read_less_than_their_limit() {
        let plan = ChunkPlan::Keyed { after: None, limit: 100 };
        let sizing = Sizing { limit: None, statement_timeout: TIMEOUT, ceiling: 100 };
        assert_eq!(outcome(&plan, &read(99, 10), &sizing), ChunkOutcome { done: true, limit: None });
        assert_eq!(outcome(&plan, &read(100, 10), &sizing), ChunkOutcome { done: false, limit: None });
        let cut = ChunkRead { timed_out: true, ..read(30, 40_000) };
        assert_eq!(outcome(&plan, &cut, &sizing), ChunkOutcome { done: false, limit: Some(15) }, "never done when cut");
        let cut_early = ChunkRead { timed_out: true, ..read(1, 40_000) };
        assert_eq!(outcome(&plan, &cut_early, &sizing).limit, Some(1));
    }

    #[test]
    fn shrunk_chunks_grow_back_while_fast_and_never_past_the_configured_size() {
        let plan = ChunkPlan::Keyed { after: None, limit: 30 };
        let mut sizing = Sizing { limit: Some(30), statement_timeout: TIMEOUT, ceiling: 100 };
        assert_eq!(outcome(&plan, &read(30, 1_000), &sizing).limit, Some(60));
        sizing.limit = Some(60);
        assert_eq!(outcome(&plan, &read(30, 1_000), &sizing).limit, Some(100));
        assert_eq!(outcome(&plan, &read(30, 10_000), &sizing).limit, Some(60), "slow: a quarter of the timeout");
        sizing.statement_timeout = None;
        assert_eq!(outcome(&plan, &read(30, 1), &sizing).limit, Some(60), "no timeout: no growth");
        let unchanged = Sizing { limit: None, statement_timeout: TIMEOUT, ceiling: 100 };
        assert_eq!(outcome(&plan, &read(30, 1), &unchanged).limit, None);
    }

    #[test]
    fn timed_out_chunks_retry_at_half_size_down_to_one() {
        assert_eq!(shrunk(&ChunkPlan::Keyed { after: None, limit: 1000 }), Some(500));
        assert_eq!(shrunk(&ChunkPlan::Keyed { after: None, limit: 3 }), Some(1));
        assert_eq!(shrunk(&ChunkPlan::Keyed { after: None, limit: 1 }), None);
        assert_eq!(shrunk(&ChunkPlan::Keyless { after_block: 10, until_block: 18 }), Some(4));
        assert_eq!(shrunk(&ChunkPlan::Keyless { after_block: 10, until_block: 11 }), None);
    }

    #[test]
    fn keyless_windows_follow_the_resume_position_and_end_past_the_relation() {
        let first = keyless_window(None, None, Some(8)).unwrap();
        assert_eq!(first, ChunkPlan::Keyless { after_block: 0, until_block: 8 });
        let resume = keyless_resume(8);
        let next = keyless_window(Some(&resume), Some(2), Some(8)).unwrap();
        assert_eq!(next, ChunkPlan::Keyless { after_block: 8, until_block: 10 }, "the shrunk size wins");
        assert_eq!(keyless_window(None, Some(0), None).unwrap(), ChunkPlan::Keyless { after_block: 0, until_block: 1 });
        let sizing = Sizing { limit: None, statement_timeout: None, ceiling: 8 };
        let read_with = |pages| ChunkRead { relation_pages: pages, ..read(5, 1) };
        assert!(!outcome(&next, &read_with(Some(11)), &sizing).done);
        assert!(outcome(&next, &read_with(Some(10)), &sizing).done);
        assert!(!outcome(&next, &read_with(None), &sizing).done, "an unmeasured relation is not done");
    }

    #[test]
    fn unusable_resume_positions_say_how_to_restart() {
        let err = keyless_window(Some("not base64!"), None, None).unwrap_err();
        assert_eq!(err.hint, RESTART_HINT);
        let not_ctid = base64::engine::general_purpose::STANDARD.encode("12");
        assert!(keyless_window(Some(&not_ctid), None, None).unwrap_err().message.contains("\"12\" is not a CTID"));
        let key = keyed_resume(&[Some("7".into())], &[Some(&int4())]);
        let columns = ["a".to_string(), "b".to_string()];
        let arity = keyed_page(Some(&key), &columns, "s.t", None, 10).unwrap_err();
        assert!(arity.hint.starts_with("the table's key changed"));
        let garbage = keyed_page(Some("////"), &columns[..1], "s.t", None, 10).unwrap_err();
        assert!(garbage.message.starts_with("the resume key of table \"s.t\" is invalid"));
    }

    #[test]
    fn keyed_resume_keys_round_trip_in_the_go_connectors_encoding() {
        let domain = PgType::Domain { name: "id".into(), base: Box::new(int4()), not_null: true };
        let text = PgType::Builtin { name: "text".into(), typmod: -1 };
        let key = vec![Some("42".into()), Some("B".into()), None];
        let encoded = keyed_resume(&key, &[Some(&domain), Some(&text), Some(&text)]);
        assert_eq!(
            keys::decode_base64(&encoded).unwrap(),
            vec![keys::Element::Int(42), keys::Element::String("B".into()), keys::Element::Null],
            "integers as integers, through domains"
        );
        let columns: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let plan = keyed_page(Some(&encoded), &columns, "s.t", Some(0), 10).unwrap();
        assert_eq!(plan, ChunkPlan::Keyed { after: Some(key.clone()), limit: 1 });
        assert_eq!(keyed_page(None, &columns, "s.t", None, 10).unwrap(), ChunkPlan::Keyed { after: None, limit: 10 });
        let orders = [order::KeyOrder::Integer, order::KeyOrder::Text];
        assert_eq!(
            comparable_key(&orders, &key[..2]),
            Some(vec![order::KeyValue::Integer(42), order::KeyValue::Bytes(b"B".to_vec())])
        );
        assert_eq!(comparable_key(&orders, &[Some("x".into()), Some("B".into())]), None);
    }
}
