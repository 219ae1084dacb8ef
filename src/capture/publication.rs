//! Checks that the publication still carries everything the capture reads.
//!
//! pgoutput applies a change of the publication without a word in the stream: a table that
//! leaves it simply stops sending changes, a column list or row filter silently narrows
//! them. So the running session checks: every status interval (see
//! `Session::on_status_tick`), and before emitting a change of a table whose Relation
//! message suggests the publication changed. A publication change loses changes from the
//! moment it commits, so the sooner the capture stops, the less there is to re-backfill.

use std::collections::BTreeSet;

use tokio::io::AsyncWrite;

use super::state::TableMode;
use super::{pg, with_deadline, Session};
use crate::error::Error;
use crate::pg::quote_identifier;

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Check the publication when a Relation message of a bound table suggests it changed,
    /// before any change of the table is emitted: the message is sent again (the server
    /// dropped what it knew of the table: a schema change, or any change of the publication,
    /// which is announced no other way), or it carries fewer columns than the table has (a
    /// column list; generated columns, which are never published, also count, at the price
    /// of one extra check).
    pub(super) async fn check_publication_on_relation(
        &self,
        oid: u32,
        binding: Option<usize>,
        columns: usize,
    ) -> Result<(), Error> {
        let Some(binding) = binding else { return Ok(()) };
        if !self.relations.contains_key(&oid) && columns >= self.bindings[binding].table.columns.len() {
            return Ok(());
        }
        with_deadline(self.silence_limit(), "checking the publication", self.check_publication()).await?
    }

    /// Whether a TRUNCATE of the table of `binding` fails the capture: with
    /// `advanced.fail_on_truncate`, unless the binding's backfill has not read anything yet
    /// (after the re-backfill that the error asks for, the capture meets the same TRUNCATE
    /// again while catching up, and the backfill that follows reads the table as it is now).
    pub(super) fn truncate_is_fatal(&self, binding: usize) -> bool {
        let state = &self.bindings[binding].state;
        let backfill_not_started = state.mode.is_backfilling() && state.scanned.is_none() && state.backfilled == 0;
        self.config.raw.advanced.fail_on_truncate && !backfill_not_started
    }

    /// Fail if the publication no longer carries everything the capture needs: dropped,
    /// narrowed to fewer actions, or (PostgreSQL 15+) filtering a bound table's columns or
    /// rows (see [`crate::validate::publication`]). pgoutput applies such a change without a
    /// word in the stream.
    pub(super) async fn check_publication_shape(&self) -> Result<(), Error> {
        use crate::validate::publication::{running_problem, PublicationShape};
        let tables: BTreeSet<(String, String)> = self
            .bindings
            .iter()
            .filter(|b| !matches!(b.state.mode, TableMode::Ignore | TableMode::Missing))
            .map(|b| (b.table.schema.clone(), b.table.name.clone()))
            .collect();
        let shape =
            PublicationShape::load(&self.client, &self.config, self.server_version, &tables).await.map_err(pg)?;
        match running_problem(&self.config, &shape) {
            Some((message, hint)) => Err(Error::user(message, hint)),
            None => Ok(()),
        }
    }

    /// Fail if a bound table has left the publication. pgoutput then simply stops sending
    /// its changes, with no message at all: without this check the capture would go on
    /// without them, silently. A table that no longer exists is left to the replication
    /// stream (a re-created table is captured again once it is published).
    pub(super) async fn check_publication(&self) -> Result<(), Error> {
        self.check_publication_shape().await?;
        let (schemas, names): (Vec<&str>, Vec<&str>) = self
            .bindings
            .iter()
            .filter(|b| !matches!(b.state.mode, TableMode::Ignore | TableMode::Missing))
            .map(|b| (b.table.schema.as_str(), b.table.name.as_str()))
            .unzip();
        if names.is_empty() {
            return Ok(());
        }
        let published = crate::validate::server::published_sql(self.server_version, "c.oid", "$3");
        let sql = format!(
            "SELECT n.nspname, c.relname
             FROM unnest($1::text[], $2::text[]) AS b(schema, name)
             JOIN pg_catalog.pg_namespace n ON n.nspname = b.schema
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = b.name
             WHERE NOT {published}
             ORDER BY 1, 2"
        );
        let rows = self.client.query(&sql, &[&schemas, &names, &self.config.publication_name()]).await.map_err(pg)?;
        if rows.is_empty() {
            return Ok(());
        }
        let publication = quote_identifier(self.config.publication_name());
        let tables: Vec<String> =
            rows.iter().map(|r| format!("{}.{}", quote_identifier(r.get(0)), quote_identifier(r.get(1)))).collect();
        Err(Error::user(
            format!(
                "{} left publication {publication} while being captured: the server no longer sends {} changes",
                tables.join(", "),
                if tables.len() == 1 { "its" } else { "their" }
            ),
            format!(
                "ALTER PUBLICATION {publication} ADD TABLE {}; then increment the backfill counter of {} binding{}, since changes made in the meantime were not captured",
                tables.join(", "),
                if tables.len() == 1 { "its" } else { "their" },
                if tables.len() == 1 { "" } else { "s" }
            ),
        ))
    }
}
