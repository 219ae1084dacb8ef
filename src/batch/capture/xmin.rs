//! Polling by xmin: scan the table in page ranges (`ctid` ranges) and emit the rows whose
//! `xmin` lies in the scan's transaction-id window, checkpointing after each range.
//!
//! The window is `(base_xid, next_xid]` in 32-bit modular order: `next_xid` is fixed when
//! a scan starts and becomes the next scan's `base_xid` when it completes, so every row
//! written or updated in between is read by exactly one scan (rows may be read twice after
//! a restart, never missed). A table rewrite restarts the scan from page 0, whenever it
//! happened: each checkpoint records the storage files the scan has read (`ScanFilenodes`),
//! and each range checks them (see the session's module doc).

use std::ops::ControlFlow;
use std::time::SystemTime;

use tokio::io::AsyncWrite;

use super::meta::Meta;
use super::{Polled, Session, Shape};
use crate::batch::clock::format_rfc3339;
use crate::batch::query::{self, TextParam};
use crate::error::Error;

impl<W: AsyncWrite + Unpin> Session<'_, W> {
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
    pub(super) async fn poll_xmin(&mut self, index: usize) -> Result<Polled, Error> {
        let (schema, table) = {
            let r = &self.bindings[index].resource;
            (r.schema.clone(), r.table.clone())
        };
        let table_name = crate::validate::display_name(&schema, &table);
        let (mut max_page, partitions, oid) = self.table_pages(index, &schema, &table).await?;
        let mut after_page = self.xmin_scan_start(index).await?;
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
        // A scan resumed mid-table reads at least one range, even past the table's current
        // end, so that the storage its earlier ranges were read from is checked.
        let mut unverified = after_page > 0;
        while after_page < max_page || unverified {
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
            // The cursor's lock keeps the storage files as they are until this range is read.
            let current: String = match self.client.query_one(query::FILENODES_SQL, &[&oid]).await {
                Ok(row) => row.get(0),
                Err(err) => return self.failed_query(index, &sql, err).await,
            };
            if !self.same_storage(index, after_page, current, &table_name) {
                let _ = self.client.batch_execute("ROLLBACK").await;
                (max_page, _, _) = self.table_pages(index, &schema, &table).await?;
                pages_per_chunk = chunk_pages(max_page);
                after_page = 0;
                unverified = false;
                self.bindings[index].state.scan_tid = "(0,0)".into();
                continue;
            }
            unverified = false;
            let shape = self.shape(index, &columns, true).await?;
            let count = match self.read_xmin_chunk(index, &shape, &sql, &polled, (base, next)).await? {
                ControlFlow::Continue(count) => count,
                ControlFlow::Break(polled) => return Ok(polled),
            };
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
        state.scan_filenodes = String::new();
        state.base_xid = state.next_xid;
        state.next_xid = 0;
        Ok(Polled::Done)
    }

    /// Whether the pages before `after_page` were read from the table's `current` storage
    /// files. A rewrite (`VACUUM FULL`, `CLUSTER`, `TRUNCATE`) keeps rows' xmin but moves
    /// them, maybe into pages the scan already read, and the files the earlier ranges were
    /// read from are in the state (checkpointed with each range), so a rewrite at any moment
    /// (during this session, after the last range a killed session read, while no session
    /// ran) is seen here: `false`, and the scan must start again from its first page. At
    /// the first page the current files become the scan's.
    fn same_storage(&mut self, index: usize, after_page: i64, current: String, table_name: &str) -> bool {
        let binding = &mut self.bindings[index];
        let recorded = std::mem::replace(&mut binding.state.scan_filenodes, current);
        if after_page == 0 || recorded == binding.state.scan_filenodes {
            return true;
        }
        let name = &binding.resource.name;
        if recorded.is_empty() {
            tracing::warn!(
                name = %name,
                table = %table_name,
                "the state does not say which storage files this xmin scan has read (written by the Go connector or an earlier version), so the table may have been rewritten meanwhile: scanning it again from its first page"
            );
        } else {
            tracing::warn!(
                name = %name,
                table = %table_name,
                "the table was rewritten (VACUUM FULL, CLUSTER or TRUNCATE) during its xmin scan: scanning it again from its first page"
            );
        }
        false
    }

    /// Where this binding's xmin scan goes on: the transaction-id window's end is fixed
    /// when a scan starts (the current XID), and the scan position is the last page done.
    async fn xmin_scan_start(&mut self, index: usize) -> Result<i64, Error> {
        if self.bindings[index].state.next_xid == 0 {
            let text: String = self.client.query_one(query::CURRENT_XID_SQL, &[]).await?.get(0);
            let next =
                text.parse::<u64>().map_err(|_| Error::Internal(format!("the current transaction id {text:?}")))?;
            self.bindings[index].state.next_xid = next;
        }
        if self.bindings[index].state.scan_tid.is_empty() {
            self.bindings[index].state.scan_tid = "(0,0)".into();
        }
        parse_tid_page(&self.bindings[index].state.scan_tid).ok_or_else(|| {
            Error::user(
                format!("the state's scan position {:?} is not a tuple id", self.bindings[index].state.scan_tid),
                "reset the binding's state by incrementing its backfill counter",
            )
        })
    }

    /// Read one page range from the open cursor, emitting the rows whose xmin lies in the
    /// window `(base, next)`: the count emitted, or how the poll ended early.
    async fn read_xmin_chunk(
        &mut self,
        index: usize,
        shape: &Shape,
        sql: &str,
        polled: &str,
        (base, next): (u64, u64),
    ) -> Result<ControlFlow<Polled, i64>, Error> {
        let mut count: i64 = 0;
        loop {
            let rows = match self.fetch().await {
                Ok(rows) => rows,
                Err(err) => return self.failed_query(index, sql, err).await.map(ControlFlow::Break),
            };
            for row in &rows {
                let xmin = row.try_get(0).ok().flatten().and_then(|t| t.parse::<u32>().ok()).unwrap_or(0);
                if !query::xmin_in_window(xmin, base, next) {
                    continue;
                }
                let binding = &self.bindings[index];
                let row_id = binding.state.document_count + count;
                let meta = Meta { polled, index: count, row_id, op: binding.row_id_key.then_some("c") };
                self.emit_row(index, shape, row, &meta).await?;
                count += 1;
            }
            if rows.len() < self.fetch_rows {
                return Ok(ControlFlow::Continue(count));
            }
            if self.stopping()? {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Ok(ControlFlow::Break(Polled::Stopped));
            }
        }
    }
}

/// The page of a `(page,offset)` tuple id.
fn parse_tid_page(tid: &str) -> Option<i64> {
    let inner = tid.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (page, offset) = inner.split_once(',')?;
    offset.trim().parse::<u32>().ok()?;
    page.trim().parse::<i64>().ok().filter(|p| *p >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_ids_give_their_page() {
        assert_eq!(parse_tid_page("(12,0)"), Some(12));
        assert_eq!(parse_tid_page(" ( 7 , 3 ) "), Some(7));
        assert_eq!(parse_tid_page("(0,0)"), Some(0));
        for bad in ["12", "(12)", "(-1,0)", "(1,-1)", "(a,0)", "(1,0", ""] {
            assert_eq!(parse_tid_page(bad), None, "{bad:?}");
        }
    }
}
