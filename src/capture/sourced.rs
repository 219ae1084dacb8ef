//! `sourcedSchema` responses: each binding's table schema as the source defines it, for the
//! runtime's schema inference (the `emit_sourced_schemas` feature flag, on by default).
//!
//! ```text
//!   start ─────────────────────────► every binding marked ─┐
//!   Relation message, new columns ─► table described again ─┤
//!   backfill chunk saw new columns ─► (chunks.rs)           ├─► next checkpoint: changed
//!   retyped key (retype.rs) ────────► (retype.rs)           │   schemas first, then the
//!   rediscovery interval ───────────► all tables described ─┘   checkpoint that commits them
//! ```
//!
//! The schema is [`crate::discovery::schema::sourced_schema`]: the discovery generator in
//! its sourced mode, so the two never disagree. A response takes effect only once a
//! checkpoint follows it, so a marked binding makes a checkpoint due, and the schemas are
//! written by `Session::checkpoint_with` just before the checkpoint itself, which is always
//! between source transactions. Rediscovery writes its changed schemas at once (it runs
//! between transactions too) and makes a checkpoint due. As in the Go connector, a schema
//! identical to the last one sent for its binding (by SHA-256 of its serialized form, which
//! is deterministic: keys are sorted) is not sent again.
//!
//! Periodic rediscovery (`advanced.rediscovery_interval`, default 15m) exists for what no
//! replication message announces: a column added to a table without a change since, a new
//! enum label. It reads the bound tables from the catalog and only sends schemas; the
//! session's own view of a table (chunk queries, keys) changes only through the paths
//! above, which follow the stream. With sourced schemas off it does nothing, so it does
//! not run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::Session;
use crate::config::{Config, DEFAULT_REDISCOVERY_INTERVAL};
use crate::discovery::schema::{sourced_schema, SchemaOptions};
use crate::discovery::DiscoveredTable;
use crate::error::Error;
use crate::pg::replication::ReplicationStream;

/// Test hook: a rediscovery interval in milliseconds, below the configuration's one-minute
/// minimum, so integration tests need not wait a minute. Not a setting: undocumented for
/// users, read only here, and documented in tests/it/sourced_schemas.rs.
pub const REDISCOVERY_TEST_HOOK: &str = "SOURCE_POSTGRES_TEST_REDISCOVERY_MS";

/// A column as a Relation message announces it: name, type OID, type modifier.
pub(super) type AnnouncedColumn = (String, u32, i32);

/// Which sourced schemas were sent and which may have changed.
#[derive(Debug)]
pub(super) struct SourcedSchemas {
    enabled: bool,
    options: SchemaOptions,
    /// SHA-256 of the last schema sent, per binding.
    sent: BTreeMap<usize, [u8; 32]>,
    /// Bindings whose table was described again since the last checkpoint.
    stale: BTreeSet<usize>,
    /// Per binding, the last announced columns that differed from the session's view and
    /// made the table be described again: the same announcement (a publication column list,
    /// a catch-up that replays WAL from before a change) does not query the catalog again.
    announced: BTreeMap<usize, Vec<AnnouncedColumn>>,
    interval: Duration,
    next_rediscovery: Instant,
}

impl SourcedSchemas {
    pub fn new(config: &Config, now: Instant) -> SourcedSchemas {
        let hook = std::env::var(REDISCOVERY_TEST_HOOK).ok().and_then(|ms| ms.trim().parse::<u64>().ok());
        let interval = match hook {
            Some(ms) => Duration::from_millis(ms.max(1)),
            None => config.rediscovery_interval.unwrap_or(DEFAULT_REDISCOVERY_INTERVAL),
        };
        SourcedSchemas {
            enabled: config.flags.emit_sourced_schemas,
            options: SchemaOptions::for_config(config),
            sent: BTreeMap::new(),
            stale: BTreeSet::new(),
            announced: BTreeMap::new(),
            interval,
            next_rediscovery: now + interval,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Binding `index`'s table was described (again): its schema is compared before the
    /// next checkpoint. False when sourced schemas are off.
    pub fn mark(&mut self, index: usize) -> bool {
        if self.enabled {
            self.stale.insert(index);
        }
        self.enabled
    }

    /// The marked bindings, in binding order, unmarked.
    pub fn take_stale(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.stale).into_iter().collect()
    }

    /// The schema to send for binding `index` with `table`, or `None` when it is the one
    /// sent last (or sourced schemas are off). Recorded as sent.
    pub fn changed(&mut self, index: usize, table: &DiscoveredTable) -> Option<Value> {
        if !self.enabled {
            return None;
        }
        let schema = sourced_schema(table, &self.options);
        let digest: [u8; 32] = Sha256::digest(schema.to_string().as_bytes()).into();
        if self.sent.insert(index, digest) == Some(digest) {
            return None;
        }
        Some(schema)
    }

    /// Whether a Relation message's columns call for describing binding `index`'s table
    /// again: they differ from the session's view `table` (in any order: a partition may
    /// number its columns differently) and were not announced the same way before.
    pub fn announcement_differs(
        &mut self,
        index: usize,
        mut announced: Vec<AnnouncedColumn>,
        table: &DiscoveredTable,
    ) -> bool {
        if !self.enabled {
            return false;
        }
        announced.sort();
        let mut known: Vec<AnnouncedColumn> =
            table.columns.iter().filter(|c| !c.generated).map(|c| (c.name.clone(), c.type_oid, c.typmod)).collect();
        known.sort();
        if announced == known || self.announced.get(&index) == Some(&announced) {
            return false;
        }
        self.announced.insert(index, announced);
        true
    }

    /// When the next rediscovery is due (`None`: never, sourced schemas are off).
    pub fn rediscovery_deadline(&self) -> Option<Instant> {
        self.enabled.then_some(self.next_rediscovery)
    }

    pub fn rediscovery_due(&self, now: Instant) -> bool {
        self.enabled && now >= self.next_rediscovery
    }

    pub fn rediscovered(&mut self, now: Instant) {
        self.next_rediscovery = now + self.interval;
    }
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Binding `index`'s table was described again: a checkpoint is due, and its sourced
    /// schema is sent before it if it changed.
    pub(super) fn table_described(&mut self, index: usize) {
        if self.sourced.mark(index) {
            self.checkpoints.on_sourced_schema();
        }
    }

    /// Write the changed schemas of the marked bindings (`checkpoint_with` calls this right
    /// before its checkpoint, which commits them).
    pub(super) async fn send_marked_sourced_schemas(&mut self, stream: &mut ReplicationStream) -> Result<(), Error> {
        for index in self.sourced.take_stale() {
            if let Some(schema) = self.sourced.changed(index, &self.bindings[index].table) {
                self.write_sourced_schema(index, &schema, stream).await?;
            }
        }
        Ok(())
    }

    async fn write_sourced_schema(
        &mut self,
        index: usize,
        schema: &Value,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let binding = u32::try_from(index).map_err(|_| Error::Internal("binding index overflows u32".into()))?;
        let confirmable = self.checkpoints.confirmable();
        self.status.during(stream, confirmable, self.emitter.sourced_schema(binding, schema)).await
    }

    /// Describe binding `index`'s table again from the catalog and take its current columns
    /// (one query under the SQL deadline, `why` naming it if that fails), then send its
    /// sourced schema if that changed. The one way the session re-describes a table: for a
    /// Relation message announcing other columns, for a chunk that met other columns, and
    /// for a retyped key. Returns whether the column names changed. A table dropped, or
    /// replaced by another of its name (another OID), is left as it was: the stream reports
    /// what happens to it.
    pub(super) async fn describe_again(&mut self, index: usize, why: &'static str) -> Result<bool, Error> {
        let table = &self.bindings[index].table;
        let only = BTreeSet::from([(table.schema.clone(), table.name.clone())]);
        let described = self
            .sql_deadline(why, crate::discovery::discover_tables(&self.client, &self.config, Some(&only)))
            .await??;
        let binding = &mut self.bindings[index];
        let Some(fresh) = described.into_iter().find(|t| t.oid == binding.table.oid) else {
            return Ok(false);
        };
        let names_changed = !fresh.columns.iter().map(|c| &c.name).eq(binding.table.columns.iter().map(|c| &c.name));
        binding.table.columns = fresh.columns;
        self.table_described(index);
        Ok(names_changed)
    }

    /// Periodic rediscovery: describe every bound table and send the sourced schemas that
    /// changed, then make a checkpoint due. Runs between transactions only.
    pub(super) async fn rediscover(&mut self, stream: &mut ReplicationStream) -> Result<(), Error> {
        let names: BTreeSet<(String, String)> =
            self.bindings.iter().map(|b| (b.table.schema.clone(), b.table.name.clone())).collect();
        let described = self
            .sql_deadline(
                "rediscovering the captured tables",
                crate::discovery::discover_tables(&self.client, &self.config, Some(&names)),
            )
            .await??;
        let fresh: BTreeMap<u32, DiscoveredTable> = described.into_iter().map(|t| (t.oid, t)).collect();
        let mut sent = false;
        for index in 0..self.bindings.len() {
            // A table dropped (or replaced by another of its name) is not described: the
            // stream reports what happens to it.
            let Some(table) = fresh.get(&self.bindings[index].table.oid) else { continue };
            if let Some(schema) = self.sourced.changed(index, table) {
                tracing::info!(
                    table = %format!("{}.{}", table.schema, table.name),
                    "rediscovery: the table's schema changed; sending its sourced schema"
                );
                self.write_sourced_schema(index, &schema, stream).await?;
                sent = true;
            }
        }
        if sent {
            self.checkpoints.on_sourced_schema();
        }
        self.sourced.rediscovered(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Column;
    use crate::value::PgType;
    use serde_json::json;

    fn config(flags: &str) -> Config {
        Config::parse(&json!({
            "address": "db.example.com",
            "credentials": {"auth_type": "UserPassword", "password": "pw"},
            "advanced": {"feature_flags": flags}
        }))
        .unwrap()
    }

    fn table(columns: &[(&str, u32, &str)]) -> DiscoveredTable {
        DiscoveredTable {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            relkind: 'r',
            is_partition: false,
            published: true,
            columns: columns
                .iter()
                .map(|(name, oid, ty)| Column {
                    name: (*name).into(),
                    type_oid: *oid,
                    typmod: -1,
                    pg_type: PgType::Builtin { name: (*ty).into(), typmod: -1 },
                    nullable: *name != "id",
                    generated: false,
                    comment: None,
                })
                .collect(),
            key: vec!["id".into()],
            key_is_unique_index: false,
        }
    }

    #[test]
    fn an_unchanged_schema_is_not_sent_again_and_a_changed_one_is() {
        let mut sourced = SourcedSchemas::new(&config(""), Instant::now());
        let before = table(&[("id", 23, "int4")]);
        let after = table(&[("id", 23, "int4"), ("extra", 25, "text")]);
        let first = sourced.changed(0, &before).expect("the first schema is sent");
        assert_eq!(first["$defs"]["PublicT"]["required"], json!(["id"]));
        assert!(sourced.changed(0, &before).is_none());
        // Another binding of the same table has its own history.
        assert!(sourced.changed(1, &before).is_some());
        let second = sourced.changed(0, &after).expect("a new column changes the schema");
        assert_eq!(second["$defs"]["PublicT"]["required"], json!(["extra", "id"]));
        assert!(sourced.changed(0, &after).is_none());
    }

    #[test]
    fn the_flag_turns_everything_off() {
        let mut sourced = SourcedSchemas::new(&config("no_emit_sourced_schemas"), Instant::now());
        assert!(!sourced.mark(0));
        assert!(sourced.take_stale().is_empty());
        assert!(sourced.changed(0, &table(&[("id", 23, "int4")])).is_none());
        assert!(sourced.rediscovery_deadline().is_none());
        assert!(!sourced.rediscovery_due(Instant::now() + Duration::from_secs(86_400 * 400)));
    }

    #[test]
    fn marks_come_back_once_in_binding_order() {
        let mut sourced = SourcedSchemas::new(&config(""), Instant::now());
        assert!(sourced.mark(2) && sourced.mark(0) && sourced.mark(2));
        assert_eq!(sourced.take_stale(), [0, 2]);
        assert!(sourced.take_stale().is_empty());
    }

    #[test]
    fn an_announcement_is_followed_once_and_only_when_it_differs() {
        let mut sourced = SourcedSchemas::new(&config(""), Instant::now());
        let known = table(&[("id", 23, "int4"), ("b", 25, "text")]);
        let same = vec![("b".to_string(), 25, -1), ("id".to_string(), 23, -1)];
        assert!(!sourced.announcement_differs(0, same, &known));
        let added = vec![("id".to_string(), 23, -1), ("b".to_string(), 25, -1), ("c".to_string(), 16, -1)];
        assert!(sourced.announcement_differs(0, added.clone(), &known));
        assert!(!sourced.announcement_differs(0, added, &known));
        let retyped = vec![("id".to_string(), 23, -1), ("b".to_string(), 1043, 14)];
        assert!(sourced.announcement_differs(0, retyped, &known));
    }

    #[test]
    fn rediscovery_follows_the_interval() {
        let now = Instant::now();
        let mut cfg = config("");
        cfg.rediscovery_interval = Some(Duration::from_secs(120));
        let mut sourced = SourcedSchemas::new(&cfg, now);
        assert_eq!(sourced.rediscovery_deadline(), Some(now + Duration::from_secs(120)));
        assert!(!sourced.rediscovery_due(now + Duration::from_secs(119)));
        assert!(sourced.rediscovery_due(now + Duration::from_secs(120)));
        sourced.rediscovered(now + Duration::from_secs(130));
        assert!(!sourced.rediscovery_due(now + Duration::from_secs(249)));
        assert!(SourcedSchemas::new(&config(""), now).rediscovery_due(now + DEFAULT_REDISCOVERY_INTERVAL));
    }
}
