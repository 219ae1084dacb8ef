//! The randomized differential harness: one seed generates one case (tables, sizes, a
//! concurrent workload and faults), the real binary captures it against a real server, and the
//! result is checked against the tables themselves.
//!
//! ```text
//!   seed ─► Case::generate ─► tables + initial rows ─► discover ─► validate ─► sessions
//!                                                                    │  (faults between them;
//!            workload (inserts, updates, key changes, deletes,       │   the workload runs
//!            TOAST, large/rolled-back transactions, DDL, VACUUM FULL)│   concurrently)
//!                                                                    ▼
//!                                     final clean session ─► oracle: collection == table
//! ```
//!
//! What a case varies (see [`Case::generate`]): one to three tables, each with a key shape
//! (int, bigint, text under a non-C collation, uuid, numeric, timestamptz, composite, a unique
//! index instead of a primary key, keyless), optionally TOASTed keys and TOASTed columns,
//! partitioning (range, hash, list, two levels), replica identity (default, full, an index on
//! other columns), a resource mode, column names that need quoting or collide with `_meta`,
//! a mix of value types, statistics fresh, stale or absent, and a size relative to the chunk
//! size (0, 1, chunk - 1, chunk, chunk + 1, a few chunks, many chunks, hundreds of pages);
//! whether the capture is read-only (`advanced.read_only_capture`: WAL-position fences), and
//! in a fraction of cases how many connections read a keyed table's chunk at once
//! (`advanced.backfill_readers`, 2 to 4; `DIFF_READERS=n` forces it).
//! Faults at random moments: SIGKILL, an immediate server restart, every connection cut by a
//! TCP proxy, a stalled proxy; acknowledgements may lag several checkpoints behind.
//!
//! The runtime model plays the Flow runtime: documents are committed only at checkpoints, each
//! checkpoint is reduced with the reductions the discovered schema declares (`merge`: a
//! document's properties replace the stored ones, omitted properties keep theirs; `op: d`
//! removes the key), the state patch is merged, then acknowledged (sometimes late). Every
//! session starts from the last committed state.
//!
//! The oracle, for every case:
//! - the reduced collection equals the table, value for value (keyless tables: every row is
//!   captured, at least once, and nothing that is not a row);
//! - no key's committed history goes backwards: the counter column `n` never decreases, and a
//!   deleted key never comes back (keys are never reused);
//! - the slot is never confirmed past the cursor of the last acknowledged checkpoint;
//! - every document carries its key and validates against its binding's discovered schema;
//! - every failure the connector reports on its own is one clear error line.
//!
//! A case whose setup the connector must refuse (see [`Case::may_refuse`]) passes if the
//! connector refuses it with one clear error line that names the cause, at validate or at open.
//!
//! Expected values come from the table (`SELECT *` in the text format of the encoder's
//! session settings) through the crate's value encoder, so the comparison is about which rows
//! and which values arrived, not about the type mapping, which `types.rs` checks against
//! independent expectations.
//!
//! Running it: `DIFF_SEEDS=n` cases from `DIFF_SEED_BASE` (default 1); `DIFF_SEED=s` replays one
//! case (with `DIFF_ROWS_SCALE`, `DIFF_OPS`, `DIFF_FAULTS` as a shrunk failure prints them);
//! `DIFF_MINUTES=m` runs fresh seeds for that long; `DIFF_REPORT=file` appends one JSON line
//! per case. A failing case is shrunk (fewer faults, operations and rows) while it still fails,
//! and the command that replays the smallest failing case is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::driver::{lsn_value, merge_patch, Event, Session};
use crate::faults_common::{error_message, Proxy};
use crate::gen_common::{
    self, cut, env_parse, qualified, quote_ident, quote_literal, random_hex, random_text, seed_plan,
};
use crate::harness::{describe_pg_error, run_connector, PrivateCluster};
use crate::types::validator;

// ---- Cases ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyShape {
    Int,
    Bigint,
    Text,
    Uuid,
    Numeric,
    Timestamptz,
    /// `(a int4, b text)`.
    Composite,
    /// A unique index on a NOT NULL column instead of a primary key.
    UniqueIndex,
    Keyless,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Partitioning {
    None,
    Range,
    Hash,
    /// By list of the composite key's text part.
    List,
    /// Range, with the upper partition hash-partitioned again.
    TwoLevel,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Identity {
    Default,
    Full,
    /// `REPLICA IDENTITY USING INDEX` on a unique index of another column (`alt`).
    OtherIndex,
    /// `REPLICA IDENTITY USING INDEX` on the unique index that is the table's key (tables
    /// without a primary key have no identity otherwise, and validation rightly refuses them).
    KeyIndex,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stats {
    Fresh,
    Stale,
    Absent,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    Int4,
    Int8,
    Text,
    Varchar,
    Numeric,
    Bool,
    Float8,
    Timestamptz,
    Date,
    Uuid,
    Bytea,
    Jsonb,
    Interval,
}

impl Ty {
    const ALL: [Ty; 13] = [
        Ty::Int4,
        Ty::Int8,
        Ty::Text,
        Ty::Varchar,
        Ty::Numeric,
        Ty::Bool,
        Ty::Float8,
        Ty::Timestamptz,
        Ty::Date,
        Ty::Uuid,
        Ty::Bytea,
        Ty::Jsonb,
        Ty::Interval,
    ];

    fn sql(self) -> &'static str {
        match self {
            Ty::Int4 => "int4",
            Ty::Int8 => "int8",
            Ty::Text => "text",
            Ty::Varchar => "varchar(20)",
            Ty::Numeric => "numeric",
            Ty::Bool => "bool",
            Ty::Float8 => "float8",
            Ty::Timestamptz => "timestamptz",
            Ty::Date => "date",
            Ty::Uuid => "uuid",
            Ty::Bytea => "bytea",
            Ty::Jsonb => "jsonb",
            Ty::Interval => "interval",
        }
    }

    /// A random value as an SQL literal (NULL sometimes).
    fn literal(self, rng: &mut StdRng) -> String {
        if rng.gen_bool(0.1) {
            return "NULL".into();
        }
        match self {
            Ty::Int4 => rng.gen_range(-100_000..100_000).to_string(),
            Ty::Int8 => rng.gen::<i64>().to_string(),
            Ty::Text => {
                let len = rng.gen_range(0..40);
                quote_literal(&random_text(rng, len))
            }
            Ty::Varchar => {
                let len = rng.gen_range(0..20);
                quote_literal(&random_text(rng, len))
            }
            Ty::Numeric => {
                ["'NaN'".to_string(), format!("{}.{}", rng.gen_range(-1_000_000..1_000_000), rng.gen_range(0..1000))]
                    [usize::from(rng.gen_bool(0.9))]
                .clone()
            }
            Ty::Bool => rng.gen_bool(0.5).to_string(),
            Ty::Float8 => match rng.gen_range(0..6) {
                0 => "'NaN'".into(),
                1 => "'-Infinity'".into(),
                2 => "1e-7".into(),
                _ => format!("{}", rng.gen_range(-1e9..1e9)),
            },
            Ty::Timestamptz => format!(
                "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+0{}'",
                rng.gen_range(1900..2100),
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(0..24),
                rng.gen_range(0..60),
                rng.gen_range(0..60),
                rng.gen_range(0..1_000_000),
                rng.gen_range(0..10)
            ),
            Ty::Date => {
                format!("'{:04}-{:02}-{:02}'", rng.gen_range(1..9999), rng.gen_range(1..13), rng.gen_range(1..29))
            }
            Ty::Uuid => format!("'{:032x}'", rng.gen::<u128>()),
            Ty::Bytea => {
                let len = rng.gen_range(0..32);
                format!("'\\x{}'", random_hex(rng, len))
            }
            Ty::Jsonb => quote_literal(
                &json!({"a": rng.gen_range(0..1000), "s": random_text(rng, 8), "l": [rng.gen_bool(0.5), null, 2.5]})
                    .to_string(),
            ),
            Ty::Interval => format!(
                "'{} days {} hours {} seconds'",
                rng.gen_range(-30..30),
                rng.gen_range(0..24),
                rng.gen_range(0..60)
            ),
        }
    }
}

/// One generated table.
#[derive(Clone, Debug)]
struct TableSpec {
    name: String,
    key: KeyShape,
    /// Text keys long enough to be stored out of line (storage EXTERNAL).
    toast_key: bool,
    partitioning: Partitioning,
    identity: Identity,
    /// The resource mode, if not automatic.
    mode: Option<&'static str>,
    stats: Stats,
    rows: i64,
    /// Value columns besides the key, `seq` and the counter `n`.
    columns: Vec<(String, Ty)>,
    /// A column of large incompressible values (stored out of line).
    big: bool,
}

/// One generated fault, applied when its session reaches `after_checkpoints` checkpoints or
/// `after_ms` milliseconds, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FaultKind {
    Kill,
    Restart,
    Cut,
    Stall,
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    kind: FaultKind,
    after_checkpoints: u64,
    after_ms: u64,
}

#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    chunk_size: i64,
    tables: Vec<TableSpec>,
    ops: usize,
    faults: Vec<Fault>,
    /// Acknowledge several checkpoints at once, after a delay.
    lagging_acks: bool,
    /// `advanced.read_only_capture`: fences are WAL positions, nothing is written.
    read_only: bool,
    /// `advanced.backfill_readers` (0: not set, one reader): a table's chunk read by that
    /// many connections at once.
    readers: usize,
    collation: String,
}

/// What the replay command may override, to shrink a failing case.
#[derive(Clone, Copy, Debug)]
struct Shrink {
    rows_scale: f64,
    ops: Option<usize>,
    faults: Option<usize>,
}

impl Shrink {
    fn from_env() -> Shrink {
        Shrink {
            rows_scale: env_parse("DIFF_ROWS_SCALE").unwrap_or(1.0),
            ops: env_parse("DIFF_OPS"),
            faults: env_parse("DIFF_FAULTS"),
        }
    }
}

const WEIRD_TABLE_NAMES: [&str; 6] = ["Mixed Case", "with space", "quote\"d", "ünï/~", "select", "dot.ted"];
const WEIRD_COLUMN_NAMES: [&str; 7] = ["Mixed Col", "with space", "quote\"d", "sl/ash~", "select", "_meta", "_meta_"];

impl Case {
    fn generate(seed: u64, shrink: Shrink, collation: &str) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let chunk_size = *[3, 7, 16, 50, 100, 1000].choose(&mut rng).expect("sizes");
        let table_count = rng.gen_range(1..=3);
        let mut tables = Vec::new();
        let mut used_names = BTreeSet::new();
        for t in 0..table_count {
            let key = *[
                (KeyShape::Int, 3),
                (KeyShape::Bigint, 1),
                (KeyShape::Text, 2),
                (KeyShape::Uuid, 1),
                (KeyShape::Numeric, 1),
                (KeyShape::Timestamptz, 1),
                (KeyShape::Composite, 2),
                (KeyShape::UniqueIndex, 1),
                (KeyShape::Keyless, 2),
            ]
            .choose_weighted(&mut rng, |(_, w)| *w)
            .map(|(k, _)| k)
            .expect("shapes");
            let partitioning = match key {
                KeyShape::Int | KeyShape::Bigint if rng.gen_bool(0.35) => {
                    *[Partitioning::Range, Partitioning::Hash, Partitioning::TwoLevel].choose(&mut rng).expect("p")
                }
                KeyShape::Composite if rng.gen_bool(0.3) => Partitioning::List,
                _ => Partitioning::None,
            };
            let identity = match rng.gen_range(0..20) {
                // A published table without a key needs FULL for updates and deletes to be
                // allowed at all (validation says so); one keyed by a unique index needs FULL or
                // that index as its identity.
                _ if key == KeyShape::Keyless => Identity::Full,
                n if key == KeyShape::UniqueIndex => [Identity::Full, Identity::KeyIndex][n as usize % 2],
                0..=11 => Identity::Default,
                12..=17 => Identity::Full,
                _ if partitioning == Partitioning::None && key != KeyShape::Keyless => Identity::OtherIndex,
                _ => Identity::Default,
            };
            let toast_key = key == KeyShape::Text && rng.gen_bool(0.3);
            let mode = if key == KeyShape::Keyless {
                None
            } else {
                *[None, None, None, Some("Normal"), Some("Precise")].choose(&mut rng).expect("modes")
            };
            let stats = *[Stats::Fresh, Stats::Stale, Stats::Absent].choose(&mut rng).expect("stats");
            let c = chunk_size;
            // Keyless tables are read by pages (~100 rows a page by the reference heuristic),
            // so their sizes are in pages' worth of rows too.
            let rows = match rng.gen_range(0..9) {
                0 => 0,
                1 => 1,
                2 => (c - 1).max(0),
                3 => c,
                4 => c + 1,
                5 => 3 * c + rng.gen_range(0..c),
                6 => rng.gen_range(10..30) * c,
                7 => rng.gen_range(2_000..6_000),
                _ => rng.gen_range(8_000..14_000), // several hundred pages
            }
            .min(20_000);
            // At most a few hundred chunks a table (a fence each), so that a case stays
            // within seconds; keyless tables are read by pages, whatever the chunk size.
            let rows = if key == KeyShape::Keyless { rows } else { rows.min(400 * c) };
            let rows = ((rows as f64) * shrink.rows_scale).round() as i64;
            let column_count = rng.gen_range(1..=4);
            let mut columns = Vec::new();
            let mut column_names = BTreeSet::new();
            for i in 0..column_count {
                let name = if rng.gen_bool(0.12) {
                    WEIRD_COLUMN_NAMES.choose(&mut rng).expect("names").to_string()
                } else {
                    format!("c{i}")
                };
                if column_names.insert(name.clone()) {
                    columns.push((name, *Ty::ALL.choose(&mut rng).expect("types")));
                }
            }
            let mut name = if rng.gen_bool(0.15) {
                WEIRD_TABLE_NAMES.choose(&mut rng).expect("names").to_string()
            } else if rng.gen_bool(0.03) {
                // A control character: the server allows it, so must discovery and validation.
                format!("ctl\u{1}{t}")
            } else {
                format!("t{t}")
            };
            if !used_names.insert(name.clone()) {
                name = format!("t{t}");
                used_names.insert(name.clone());
            }
            tables.push(TableSpec {
                name,
                key,
                toast_key,
                partitioning,
                identity,
                mode,
                stats,
                rows,
                columns,
                big: rng.gen_bool(0.5),
            });
        }
        // Every draw happens whatever the overrides, so that a shrunk case is the same case
        // with less in it.
        let ops = rng.gen_range(50..400);
        let ops = shrink.ops.unwrap_or(ops);
        let fault_count = *[0, 1, 1, 2, 3].choose(&mut rng).expect("counts");
        let mut faults: Vec<Fault> = (0..fault_count)
            .map(|_| Fault {
                kind: *[(FaultKind::Kill, 5), (FaultKind::Restart, 2), (FaultKind::Cut, 2), (FaultKind::Stall, 1)]
                    .choose_weighted(&mut rng, |(_, w)| *w)
                    .map(|(k, _)| k)
                    .expect("kinds"),
                after_checkpoints: rng.gen_range(1..30),
                after_ms: rng.gen_range(50..3_000),
            })
            .collect();
        faults.truncate(shrink.faults.unwrap_or(fault_count));
        Case {
            seed,
            chunk_size,
            tables,
            ops,
            faults,
            lagging_acks: rng.gen_bool(0.3),
            // Drawn last, so that the rest of every earlier seed's case stays as it was.
            read_only: rng.gen_bool(0.25),
            // Drawn after it, for the same reason; `DIFF_READERS` forces a number.
            readers: env_parse("DIFF_READERS").unwrap_or(if rng.gen_bool(0.4) { rng.gen_range(2..=4) } else { 0 }),
            collation: collation.to_string(),
        }
    }

    /// Whether the connector may rightly refuse this case (with one clear error line): the
    /// table's setup cannot be captured correctly.
    fn may_refuse(&self) -> Option<&'static str> {
        for table in &self.tables {
            if table.identity == Identity::OtherIndex {
                return Some("REPLICA IDENTITY");
            }
            if table.toast_key && table.identity == Identity::Default {
                return Some("REPLICA IDENTITY");
            }
        }
        None
    }

    fn describe(&self) -> String {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|t| {
                format!(
                    "{:?}:{:?}{}{}/{:?}/{:?}/{}/{}rows/{:?}{}",
                    t.name,
                    t.key,
                    if t.toast_key { "+toastkey" } else { "" },
                    if t.big { "+big" } else { "" },
                    t.partitioning,
                    t.identity,
                    t.mode.unwrap_or("auto"),
                    t.rows,
                    t.stats,
                    t.columns.iter().fold(String::new(), |mut s, (n, ty)| {
                        let _ = write!(s, ",{n:?}:{ty:?}");
                        s
                    })
                )
            })
            .collect();
        let faults: Vec<String> =
            self.faults.iter().map(|f| format!("{:?}@{}cp/{}ms", f.kind, f.after_checkpoints, f.after_ms)).collect();
        format!(
            "seed {} chunk {} ops {} faults [{}]{}{}{} tables [{}]",
            self.seed,
            self.chunk_size,
            self.ops,
            faults.join(" "),
            if self.lagging_acks { " lagging-acks" } else { "" },
            if self.read_only { " read-only" } else { "" },
            if self.readers > 0 { format!(" readers {}", self.readers) } else { String::new() },
            tables.join("; ")
        )
    }
}

// ---- Keys and rows -------------------------------------------------------------------------

impl TableSpec {
    fn key_columns(&self) -> Vec<&'static str> {
        match self.key {
            KeyShape::Composite => vec!["a", "b"],
            KeyShape::Keyless => vec![],
            _ => vec!["id"],
        }
    }

    /// The key of row `i` as SQL literals, one per key column (keyless: `id` is a plain column).
    fn key_literals(&self, i: i64) -> Vec<String> {
        match self.key {
            KeyShape::Int => vec![i.to_string()],
            KeyShape::Bigint => vec![(i * 1_000_003 - 5_000_000_000).to_string()],
            KeyShape::Text => {
                let base = match i % 6 {
                    0 => format!("k{i}"),
                    1 => format!("K {i}"),
                    2 => format!("k-{i}"),
                    3 => format!("é{i}"),
                    4 => format!("_{i}"),
                    _ => format!("k{i}b"),
                };
                if self.toast_key {
                    // Past the heap's TOAST threshold (about 2 kB), so with storage EXTERNAL
                    // it is stored out of line; within the index's row limit (2704 bytes), which
                    // stores it uncompressed too.
                    vec![quote_literal(&format!("{base}{}", "abcdefghij".repeat(240)))]
                } else {
                    vec![quote_literal(&base)]
                }
            }
            KeyShape::Uuid => {
                let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                vec![format!(
                    "'{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}'",
                    h >> 32,
                    (h >> 16) & 0xffff,
                    h & 0xfff,
                    (h >> 4) & 0xfff,
                    i
                )]
            }
            KeyShape::Numeric => vec![if i % 2 == 0 { format!("{i}.{}", i % 10) } else { format!("-{i}.25") }],
            KeyShape::Timestamptz => {
                vec![format!("'2021-03-04 05:06:07.123456+00'::timestamptz + {i} * interval '1.5 seconds'")]
            }
            KeyShape::Composite => vec![(i / 3).to_string(), format!("'s{}'", i % 3)],
            KeyShape::UniqueIndex | KeyShape::Keyless => vec![i.to_string()],
        }
    }

    fn key_sql_type(&self) -> Vec<String> {
        match self.key {
            KeyShape::Int => vec!["int4".into()],
            KeyShape::Bigint | KeyShape::UniqueIndex | KeyShape::Keyless => vec!["int8".into()],
            KeyShape::Text => vec!["text".into()],
            KeyShape::Uuid => vec!["uuid".into()],
            KeyShape::Numeric => vec!["numeric".into()],
            KeyShape::Timestamptz => vec!["timestamptz".into()],
            KeyShape::Composite => vec!["int4".into(), "text".into()],
        }
    }

    fn create_sql(&self, collation: &str) -> String {
        let q = qualified(&self.name);
        let mut columns = Vec::new();
        let key_columns = self.key_columns();
        let key_names: Vec<&str> = if self.key == KeyShape::Keyless { vec!["id"] } else { key_columns.clone() };
        for (name, ty) in key_names.iter().zip(self.key_sql_type()) {
            let collate = if ty == "text" { format!(" COLLATE {}", quote_ident(collation)) } else { String::new() };
            let not_null = if self.key == KeyShape::Keyless { "" } else { " NOT NULL" };
            columns.push(format!("{} {ty}{collate}{not_null}", quote_ident(name)));
        }
        columns.push("seq int8 NOT NULL".into());
        columns.push("n int8 NOT NULL DEFAULT 0".into());
        for (name, ty) in &self.columns {
            columns.push(format!("{} {}", quote_ident(name), ty.sql()));
        }
        if self.big {
            columns.push("big text".into());
        }
        if self.identity == Identity::OtherIndex {
            columns.push("alt int8 NOT NULL".into());
        }
        if !matches!(self.key, KeyShape::UniqueIndex | KeyShape::Keyless) {
            let key: Vec<String> = key_columns.iter().map(|c| quote_ident(c)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        let partition_by = match self.partitioning {
            Partitioning::None => String::new(),
            Partitioning::Range | Partitioning::TwoLevel => " PARTITION BY RANGE (id)".into(),
            Partitioning::Hash => " PARTITION BY HASH (id)".into(),
            Partitioning::List => " PARTITION BY LIST (b)".into(),
        };
        let mut sql = format!("CREATE TABLE {q} ({}){partition_by};\n", columns.join(", "));
        let part = |suffix: &str| qualified(&format!("{}_{suffix}", self.name));
        let middle = self.key_literals(self.rows / 2)[0].clone();
        match self.partitioning {
            Partitioning::None => {}
            Partitioning::Range => {
                let _ = writeln!(
                    sql,
                    "CREATE TABLE {} PARTITION OF {q} FOR VALUES FROM (MINVALUE) TO ({middle});",
                    part("p0")
                );
                let _ = writeln!(
                    sql,
                    "CREATE TABLE {} PARTITION OF {q} FOR VALUES FROM ({middle}) TO (MAXVALUE);",
                    part("p1")
                );
            }
            Partitioning::TwoLevel => {
                let _ = writeln!(
                    sql,
                    "CREATE TABLE {} PARTITION OF {q} FOR VALUES FROM (MINVALUE) TO ({middle});",
                    part("p0")
                );
                let _ = writeln!(
                    sql,
                    "CREATE TABLE {} PARTITION OF {q} FOR VALUES FROM ({middle}) TO (MAXVALUE) PARTITION BY HASH (id);",
                    part("p1")
                );
                for r in 0..2 {
                    let _ = writeln!(
                        sql,
                        "CREATE TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS 2, REMAINDER {r});",
                        part(&format!("p1h{r}")),
                        part("p1")
                    );
                }
            }
            Partitioning::Hash => {
                for r in 0..3 {
                    let _ = writeln!(
                        sql,
                        "CREATE TABLE {} PARTITION OF {q} FOR VALUES WITH (MODULUS 3, REMAINDER {r});",
                        part(&format!("h{r}"))
                    );
                }
            }
            Partitioning::List => {
                let _ = writeln!(sql, "CREATE TABLE {} PARTITION OF {q} FOR VALUES IN ('s0', 's1');", part("l0"));
                let _ = writeln!(sql, "CREATE TABLE {} PARTITION OF {q} FOR VALUES IN ('s2');", part("l1"));
            }
        }
        let _ = writeln!(sql, "CREATE INDEX ON {q} (seq);");
        if self.key == KeyShape::UniqueIndex {
            let _ = writeln!(sql, "CREATE UNIQUE INDEX {} ON {q} (id);", quote_ident(&format!("{}_id", self.name)));
        }
        if self.toast_key {
            let _ = writeln!(sql, "ALTER TABLE {q} ALTER COLUMN id SET STORAGE EXTERNAL;");
        }
        let leaves: Vec<String> = match self.partitioning {
            Partitioning::None => vec![q.clone()],
            Partitioning::Range => vec![part("p0"), part("p1")],
            Partitioning::TwoLevel => vec![part("p0"), part("p1h0"), part("p1h1")],
            Partitioning::Hash => (0..3).map(|r| part(&format!("h{r}"))).collect(),
            Partitioning::List => vec![part("l0"), part("l1")],
        };
        match self.identity {
            Identity::Default => {}
            Identity::Full => {
                for leaf in &leaves {
                    let _ = writeln!(sql, "ALTER TABLE {leaf} REPLICA IDENTITY FULL;");
                }
            }
            Identity::KeyIndex => {
                let index = quote_ident(&format!("{}_id", self.name));
                let _ = writeln!(sql, "ALTER TABLE {q} REPLICA IDENTITY USING INDEX {index};");
            }
            Identity::OtherIndex => {
                let index = quote_ident(&format!("{}_alt", self.name));
                let _ = writeln!(sql, "CREATE UNIQUE INDEX {index} ON {q} (alt);");
                let _ = writeln!(sql, "ALTER TABLE {q} REPLICA IDENTITY USING INDEX {index};");
            }
        }
        sql
    }
}

// ---- The workload --------------------------------------------------------------------------

/// A table as the workload sees it: live rows by `seq`, and its current value columns.
struct Live {
    spec: TableSpec,
    seqs: Vec<i64>,
    next: i64,
    columns: Vec<(String, Ty)>,
    /// Columns added by DDL (their values may be absent from documents of rows that were not
    /// changed since).
    added: BTreeSet<String>,
    key_retyped: bool,
}

impl Live {
    fn row_values(&self, i: i64, rng: &mut StdRng) -> (Vec<String>, Vec<String>) {
        let mut names: Vec<String> = if self.spec.key == KeyShape::Keyless {
            vec!["id".into()]
        } else {
            self.spec.key_columns().iter().map(|c| c.to_string()).collect()
        };
        let mut values = self.spec.key_literals(i);
        names.push("seq".into());
        values.push(i.to_string());
        for (name, ty) in &self.columns {
            names.push(name.clone());
            values.push(ty.literal(rng));
        }
        if self.spec.big {
            names.push("big".into());
            values.push(big_literal(rng));
        }
        if self.spec.identity == Identity::OtherIndex {
            names.push("alt".into());
            values.push(i.to_string());
        }
        (names, values)
    }

    fn insert_sql(&mut self, count: usize, rng: &mut StdRng) -> String {
        let mut rows = Vec::new();
        let mut names = Vec::new();
        for _ in 0..count {
            let i = self.next;
            self.next += 1;
            let (n, values) = self.row_values(i, rng);
            names = n;
            rows.push(format!("({})", values.join(", ")));
            self.seqs.push(i);
        }
        let names: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        format!("INSERT INTO {} ({}) VALUES {};", qualified(&self.spec.name), names.join(", "), rows.join(", "))
    }

    fn pick(&self, rng: &mut StdRng) -> Option<i64> {
        self.seqs.choose(rng).copied()
    }

    fn forget(&mut self, seq: i64) {
        self.seqs.retain(|s| *s != seq);
    }

    fn update_sql(&self, seq: i64, rng: &mut StdRng) -> String {
        let mut sets = vec!["n = n + 1".to_string()];
        if let Some((name, ty)) = self.columns.choose(rng) {
            sets.push(format!("{} = {}", quote_ident(name), ty.literal(rng)));
        }
        format!("UPDATE {} SET {} WHERE seq = {seq};", qualified(&self.spec.name), sets.join(", "))
    }
}

/// Large incompressible text (stored out of line) or, sometimes, a small value.
fn big_literal(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.3) {
        return quote_literal(&random_hex(rng, 4));
    }
    let len = rng.gen_range(1_500..4_000);
    quote_literal(&random_hex(rng, len))
}

/// What the workload did, for the case summary.
#[derive(Debug, Default, Clone)]
struct WorkloadStats {
    transactions: u64,
    reconnects: u64,
    ddl: u64,
    vacuum_full: u64,
}

fn connection_lost(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || error.as_db_error().is_none()
        || error.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
}

async fn connect(cluster: &PrivateCluster, database: &str) -> Result<Client, String> {
    let c = &cluster.cluster;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.connect(database, &c.superuser, &c.superuser_password).await {
            Ok(client) => {
                client
                    .batch_execute(
                        "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601';
                         SET extra_float_digits = 3; SET bytea_output = 'hex'; SET statement_timeout = '120s';",
                    )
                    .await
                    .map_err(|e| describe_pg_error(&e))?;
                return Ok(client);
            }
            Err(e) if Instant::now() > deadline => return Err(format!("cannot connect: {}", describe_pg_error(&e))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs `ops` random operations, then returns what it did and the tables' final shapes.
async fn run_workload(
    cluster: Arc<PrivateCluster>,
    database: String,
    mut tables: Vec<Live>,
    ops: usize,
    seed: u64,
) -> Result<(WorkloadStats, Vec<Live>), String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5E_ED0F_10AD);
    let mut stats = WorkloadStats::default();
    let mut client = connect(&cluster, &database).await?;
    let mut done = 0;
    while done < ops {
        let t = rng.gen_range(0..tables.len());
        let (sql, effect) = next_operation(&mut tables[t], &mut rng, &mut stats);
        let outcome = client.batch_execute(&sql).await;
        if let Ok(trace) = std::env::var("DIFF_TRACE") {
            // The workload's side of a traced key's story, and every change of definition.
            if !trace.is_empty() && (sql.contains(&trace) || sql.contains("ALTER TABLE")) {
                let result = outcome.as_ref().map_or_else(describe_pg_error, |()| "ok".to_string());
                eprintln!("differential: trace workload: {}: {}", cut(&sql), cut(&result));
            }
        }
        match outcome {
            Ok(()) => {
                effect.apply(&mut tables[t]);
                stats.transactions += 1;
            }
            Err(e) if connection_lost(&e) => {
                // The server restarted (a fault): whether the statement committed is unknown,
                // so the workload's view of the table is read again.
                stats.reconnects += 1;
                client = connect(&cluster, &database).await?;
                for live in tables.iter_mut() {
                    resync(&client, live).await?;
                }
            }
            Err(e) => {
                return Err(format!("workload statement failed: {}\n{sql:.600}", describe_pg_error(&e)));
            }
        }
        done += 1;
        if rng.gen_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..6))).await;
        }
    }
    Ok((stats, tables))
}

async fn resync(client: &Client, live: &mut Live) -> Result<(), String> {
    let rows = client
        .query(&format!("SELECT seq FROM {}", qualified(&live.spec.name)), &[])
        .await
        .map_err(|e| describe_pg_error(&e))?;
    live.seqs = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
    live.seqs.sort_unstable();
    if let Some(max) = live.seqs.last() {
        live.next = live.next.max(max + 1);
    }
    let columns = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&qualified(&live.spec.name)],
        )
        .await
        .map_err(|e| describe_pg_error(&e))?;
    let present: BTreeSet<String> = columns.iter().map(|r| r.get(0)).collect();
    live.columns.retain(|(name, _)| present.contains(name));
    Ok(())
}

/// How a successful statement changes the workload's view.
enum Effect {
    None,
    Forget(Vec<i64>),
    Move {
        from: i64,
        to: i64,
    },
    Columns(Vec<(String, Ty)>, Option<String>),
    KeyRetyped,
    /// Rows were added by `insert_sql` already; roll them back from the view if the statement
    /// failed (it did not: effects apply on success only).
    Inserted,
}

impl Effect {
    fn apply(self, live: &mut Live) {
        match self {
            Effect::None | Effect::Inserted => {}
            Effect::Forget(seqs) => seqs.iter().for_each(|s| live.forget(*s)),
            Effect::Move { from, to } => {
                live.forget(from);
                live.seqs.push(to);
            }
            Effect::Columns(columns, added) => {
                live.columns = columns;
                if let Some(added) = added {
                    live.added.insert(added);
                }
            }
            Effect::KeyRetyped => live.key_retyped = true,
        }
    }
}

fn next_operation(live: &mut Live, rng: &mut StdRng, stats: &mut WorkloadStats) -> (String, Effect) {
    let q = qualified(&live.spec.name);
    if live.spec.key == KeyShape::Keyless {
        // Keyless collections are change logs: inserts only, so that the table is the oracle.
        return match rng.gen_range(0..100) {
            0..=69 => (live.insert_sql(1, rng), Effect::Inserted),
            70..=84 => {
                let n = rng.gen_range(2..20);
                (format!("BEGIN; {} COMMIT;", live.insert_sql(n, rng)), Effect::Inserted)
            }
            85..=88 => {
                let n = rng.gen_range(200..800);
                (live.insert_sql(n, rng), Effect::Inserted)
            }
            89..=94 => {
                let kept = live.insert_sql(1, rng);
                let next = live.next;
                let rolled_back = live.insert_sql(3, rng);
                live.next = next + 3;
                live.seqs.truncate(live.seqs.len() - 3);
                (format!("BEGIN; {kept} SAVEPOINT s; {rolled_back} ROLLBACK TO SAVEPOINT s; COMMIT;"), Effect::Inserted)
            }
            _ => {
                stats.vacuum_full += 1;
                (format!("VACUUM FULL {q};"), Effect::None)
            }
        };
    }
    let Some(seq) = live.pick(rng) else {
        return (live.insert_sql(rng.gen_range(1..5), rng), Effect::Inserted);
    };
    match rng.gen_range(0..100) {
        0..=29 => (live.update_sql(seq, rng), Effect::None),
        30..=39 => (format!("UPDATE {q} SET n = n + 1 WHERE seq = {seq};"), Effect::None),
        40..=43 if live.spec.big => {
            (format!("UPDATE {q} SET big = {}, n = n + 1 WHERE seq = {seq};", big_literal(rng)), Effect::None)
        }
        40..=54 => (live.insert_sql(1, rng), Effect::Inserted),
        55..=61 => (format!("DELETE FROM {q} WHERE seq = {seq};"), Effect::Forget(vec![seq])),
        62..=68 => {
            let to = live.next;
            live.next += 1;
            let sets: Vec<String> = live
                .spec
                .key_columns()
                .iter()
                .zip(live.spec.key_literals(to))
                .map(|(c, v)| format!("{} = {v}", quote_ident(c)))
                .collect();
            (
                format!("UPDATE {q} SET {}, seq = {to}, n = n + 1 WHERE seq = {seq};", sets.join(", ")),
                Effect::Move { from: seq, to },
            )
        }
        69..=75 => {
            let mut statements = vec!["BEGIN;".to_string()];
            for _ in 0..rng.gen_range(2..8) {
                if let Some(s) = live.pick(rng) {
                    statements.push(live.update_sql(s, rng));
                }
            }
            statements.push("COMMIT;".into());
            (statements.join(" "), Effect::None)
        }
        76..=78 => {
            // A large transaction: past logical_decoding_work_mem, streamed on 14+.
            let m = rng.gen_range(2..5);
            (format!("UPDATE {q} SET n = n + 1 WHERE seq % {m} = {};", rng.gen_range(0..m)), Effect::None)
        }
        79..=83 => {
            let other = live.pick(rng).unwrap_or(seq);
            let third = live.pick(rng).unwrap_or(seq);
            (
                format!(
                    "BEGIN; {} SAVEPOINT s; DELETE FROM {q} WHERE seq = {other}; {} ROLLBACK TO SAVEPOINT s; {} COMMIT;",
                    live.update_sql(seq, rng),
                    live.update_sql(third, rng),
                    live.update_sql(third, rng)
                ),
                Effect::None,
            )
        }
        84..=85 => (format!("BEGIN; DELETE FROM {q} WHERE seq = {seq}; ROLLBACK;"), Effect::None),
        86..=91 => {
            stats.ddl += 1;
            ddl(live, rng)
        }
        92..=94 => {
            stats.vacuum_full += 1;
            (format!("VACUUM FULL {q};"), Effect::None)
        }
        _ => (live.update_sql(seq, rng), Effect::None),
    }
}

fn ddl(live: &mut Live, rng: &mut StdRng) -> (String, Effect) {
    let q = qualified(&live.spec.name);
    let mut columns = live.columns.clone();
    match rng.gen_range(0..4) {
        0 => {
            let name = format!("dd{}", live.next);
            live.next += 1;
            columns.push((name.clone(), Ty::Text));
            (format!("ALTER TABLE {q} ADD COLUMN {} text;", quote_ident(&name)), Effect::Columns(columns, Some(name)))
        }
        1 if !columns.is_empty() => {
            let (name, _) = columns.remove(rng.gen_range(0..columns.len()));
            (format!("ALTER TABLE {q} DROP COLUMN {};", quote_ident(&name)), Effect::Columns(columns, None))
        }
        // A key column retyped without changing its order or its JSON form.
        2 if live.spec.key == KeyShape::Int && live.spec.partitioning == Partitioning::None && !live.key_retyped => {
            (format!("ALTER TABLE {q} ALTER COLUMN id TYPE int8;"), Effect::KeyRetyped)
        }
        _ => {
            // A value column retyped without changing its JSON form.
            let Some(position) = columns.iter().position(|(_, ty)| matches!(ty, Ty::Int4 | Ty::Varchar)) else {
                return (format!("ANALYZE {q};"), Effect::None);
            };
            let (name, ty) = columns[position].clone();
            // The workload keeps writing values of the old type (which fit the discovered
            // schema, e.g. varchar's maxLength).
            let to = if ty == Ty::Int4 { Ty::Int8 } else { Ty::Text };
            (
                format!("ALTER TABLE {q} ALTER COLUMN {} TYPE {};", quote_ident(&name), to.sql()),
                Effect::Columns(columns, None),
            )
        }
    }
}

// ---- The runtime model ---------------------------------------------------------------------

/// One binding's committed, reduced documents.
struct Collection {
    table: String,
    keyless: bool,
    key: Vec<String>,
    validator: jsonschema::Validator,
    /// Reduced documents by key (JSON text of the key values), without `_meta`.
    rows: BTreeMap<String, Map<String, Value>>,
    deleted: BTreeSet<String>,
    documents: u64,
}

impl Collection {
    fn key_of(&self, doc: &Value) -> Result<String, String> {
        let values: Option<Vec<&Value>> = self.key.iter().map(|p| doc.pointer(p)).collect();
        values.map(|v| Value::from(v.into_iter().cloned().collect::<Vec<_>>()).to_string()).ok_or_else(|| {
            format!("a document of {} has no value at its key {:?}: {}", self.table, self.key, cut(&doc.to_string()))
        })
    }
}

struct Model {
    collections: Vec<Collection>,
    by_table: BTreeMap<String, usize>,
    state: Value,
    checkpoints: u64,
    /// The cursor of the last acknowledged checkpoint.
    acknowledged: Option<String>,
}

impl Model {
    /// Commit one checkpoint: its documents, reduced, then its state patch.
    fn commit(&mut self, documents: Vec<Value>, patch: &Value) -> Result<(), String> {
        let mut before: BTreeMap<(usize, String), Option<i64>> = BTreeMap::new();
        for doc in documents {
            let table = doc
                .pointer("/_meta/source/table")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("a document without /_meta/source/table: {}", cut(&doc.to_string())))?;
            let table = table.as_str();
            let &b = self
                .by_table
                .get(table)
                .ok_or_else(|| format!("a document of a table not bound: {table}: {}", cut(&doc.to_string())))?;
            let collection = &mut self.collections[b];
            if let Some(error) = collection.validator.iter_errors(&doc).next() {
                return Err(format!(
                    "a document of {table} does not validate against its discovered schema: {} at {}: {}",
                    cut(&error.to_string()),
                    error.instance_path(),
                    cut(&doc.to_string())
                ));
            }
            let key = collection.key_of(&doc)?;
            if std::env::var("DIFF_TRACE").is_ok_and(|t| !t.is_empty() && key.contains(&t)) {
                let properties: Vec<&String> =
                    doc.as_object().map(|o| o.keys().filter(|k| *k != "_meta").collect()).unwrap_or_default();
                eprintln!(
                    "differential: trace {table} {}: op {} snapshot {} loc {} seq {} n {} properties {properties:?}",
                    cut(&key),
                    doc["_meta"]["op"],
                    doc["_meta"]["source"]["snapshot"],
                    doc["_meta"]["source"]["loc"],
                    doc["seq"],
                    doc["n"]
                );
            }
            let Value::Object(mut doc) = doc else { return Err("a document is not an object".into()) };
            let meta = doc.remove("_meta").unwrap_or(Value::Null);
            collection.documents += 1;
            before
                .entry((b, key.clone()))
                .or_insert_with(|| collection.rows.get(&key).and_then(|r| r.get("n")).and_then(Value::as_i64));
            if meta["op"] == "d" {
                collection.rows.remove(&key);
                collection.deleted.insert(key);
                continue;
            }
            if collection.keyless {
                collection.rows.insert(key, doc);
                continue;
            }
            if collection.deleted.contains(&key) {
                return Err(format!(
                    "history went backwards: key {key} of {table} came back after its deletion was committed"
                ));
            }
            collection.rows.entry(key).or_default().extend(doc);
        }
        for ((b, key), old) in before {
            let collection = &self.collections[b];
            if let (Some(old), Some(new)) =
                (old, collection.rows.get(&key).and_then(|r| r.get("n")).and_then(Value::as_i64))
            {
                if new < old {
                    return Err(format!(
                        "history went backwards: key {key} of {} committed n = {new} after n = {old}",
                        collection.table
                    ));
                }
            }
        }
        if std::env::var("DIFF_TRACE").is_ok_and(|t| !t.is_empty()) {
            eprintln!("differential: trace checkpoint {}", cut(&patch.to_string()));
        }
        merge_patch(&mut self.state, patch);
        self.checkpoints += 1;
        Ok(())
    }

    fn cursor(&self) -> Option<String> {
        self.state.get("cursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string)
    }
}

// ---- Running a case ------------------------------------------------------------------------

/// How a case ended, when it passed.
#[derive(Debug)]
struct Passed {
    summary: String,
}

/// What the workload task returns: its figures and the rows it left live.
type WorkloadResult = Result<(WorkloadStats, Vec<Live>), String>;

struct Aborting(Option<JoinHandle<WorkloadResult>>);

impl Drop for Aborting {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

fn request_line(request: Value) -> String {
    format!("{{\"spec\":{{\"connectorType\":\"IMAGE\",\"config\":{{}}}}}}\n{request}\n")
}

/// The case's connector bindings: discovered, filtered to its tables, modes applied.
fn bindings_for(case: &Case, discovered: &[Value]) -> Result<Vec<(TableSpec, Value)>, String> {
    let mut out = Vec::new();
    for (i, table) in case.tables.iter().enumerate() {
        let found = discovered
            .iter()
            .find(|b| {
                b["resourceConfig"]["namespace"] == "test" && b["resourceConfig"]["stream"] == table.name.as_str()
            })
            .ok_or_else(|| format!("table test.{:?} was not discovered", table.name))?;
        let mut resource = found["resourceConfig"].clone();
        if let Some(mode) = table.mode {
            resource["mode"] = json!(mode);
        }
        out.push((
            table.clone(),
            json!({
                "resourceConfig": resource,
                "resourcePath": ["test", table.name],
                "collection": {"name": format!("diff/t{i}"), "key": found["key"], "writeSchema": found["documentSchema"]},
                "stateKey": format!("diff%2Ft{i}"),
            }),
        ));
    }
    Ok(out)
}

/// The one error line of a failed connector run, if it has exactly one clear one.
fn clear_error(stderr: &[String]) -> Result<String, String> {
    let errors: Vec<&String> =
        stderr.iter().filter(|line| serde_json::from_str::<Value>(line).is_ok_and(|l| l["level"] == "error")).collect();
    match (errors.len(), error_message(stderr)) {
        (1, Some(message)) if !message.trim().is_empty() => Ok(message),
        _ => Err(format!("the connector failed without one clear error line; end of stderr:\n{}", tail(stderr))),
    }
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(12)..].iter().map(|l| cut(l)).collect::<Vec<_>>().join("\n")
}

async fn run_case(cluster: Arc<PrivateCluster>, case: Case) -> Result<Passed, String> {
    let started = Instant::now();
    let database = cluster.create_db(&format!("diff_{}", case.seed)).await;
    let slot = format!("diff_{}", case.seed);
    let mut admin = connect(&cluster, &database).await?;
    let mut rng = StdRng::seed_from_u64(case.seed ^ 0xDA7A);

    // Tables and their initial rows.
    let mut lives = Vec::new();
    for table in &case.tables {
        let sql = table.create_sql(&case.collation);
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("create {}: {}\n{sql}", table.name, describe_pg_error(&e)))?;
        let mut live = Live {
            spec: table.clone(),
            seqs: Vec::new(),
            next: 0,
            columns: table.columns.clone(),
            added: BTreeSet::new(),
            key_retyped: false,
        };
        // Rows go in in a shuffled key order, so that physical order is not key order.
        let mut order: Vec<i64> = (0..table.rows).collect();
        order.shuffle(&mut rng);
        let stale_at = table.rows / 10;
        for (n, batch) in order.chunks(200).enumerate() {
            if table.stats == Stats::Stale && (n * 200) as i64 >= stale_at && live.seqs.len() as i64 <= stale_at {
                admin
                    .batch_execute(&format!("ANALYZE {};", qualified(&table.name)))
                    .await
                    .map_err(|e| describe_pg_error(&e))?;
            }
            let mut values = Vec::new();
            let mut names = Vec::new();
            for &i in batch {
                let (n, v) = live.row_values(i, &mut rng);
                names = n;
                values.push(format!("({})", v.join(", ")));
                live.seqs.push(i);
            }
            let names: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
            let sql =
                format!("INSERT INTO {} ({}) VALUES {};", qualified(&table.name), names.join(", "), values.join(", "));
            admin.batch_execute(&sql).await.map_err(|e| format!("load {}: {}", table.name, describe_pg_error(&e)))?;
        }
        live.next = table.rows;
        if table.stats == Stats::Fresh {
            admin
                .batch_execute(&format!("ANALYZE {};", qualified(&table.name)))
                .await
                .map_err(|e| describe_pg_error(&e))?;
        }
        lives.push(live);
    }

    // Discovery and validation, through the binary, as the runtime would.
    let proxy = Proxy::start(cluster.cluster.address()).await;
    let mut config = cluster.endpoint_config(&database, &slot);
    config["address"] = json!(proxy.address);
    config["advanced"]["backfill_chunk_size"] = json!(case.chunk_size);
    if case.read_only {
        config["advanced"]["read_only_capture"] = json!(true);
    }
    if case.readers > 0 {
        config["advanced"]["backfill_readers"] = json!(case.readers);
    }
    let discover_request = request_line(json!({"discover": {"connectorType": "IMAGE", "config": config}}));
    let output = tokio::task::spawn_blocking(move || run_connector(&[], &discover_request, &[]))
        .await
        .map_err(|e| e.to_string())?;
    if output.exit_code != 0 {
        return Err(format!("discovery failed:\n{}", output.stderr));
    }
    let discovered: Value = output
        .stdout
        .lines()
        .nth(1)
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| format!("no discover response:\n{}", output.stdout))?;
    let discovered = discovered["discovered"]["bindings"].as_array().cloned().unwrap_or_default();
    let bindings = bindings_for(&case, &discovered)?;
    let validate_bindings: Vec<Value> = bindings
        .iter()
        .map(|(_, b)| json!({"resourceConfig": b["resourceConfig"], "collection": b["collection"], "backfill": 0}))
        .collect();
    let validate_request = request_line(
        json!({"validate": {"name": "diff/capture", "connectorType": "IMAGE", "config": config, "bindings": validate_bindings}}),
    );
    let output = tokio::task::spawn_blocking(move || run_connector(&[], &validate_request, &[]))
        .await
        .map_err(|e| e.to_string())?;
    if output.exit_code != 0 {
        let stderr: Vec<String> = output.stderr.lines().map(str::to_string).collect();
        let message = clear_error(&stderr)?;
        return match case.may_refuse() {
            Some(cause) if message.contains(cause) => {
                Ok(Passed { summary: format!("refused at validate, rightly: {}", cut(&message)) })
            }
            _ => Err(format!("validation refused the case: {message}")),
        };
    }

    let mut model = Model {
        collections: Vec::new(),
        by_table: BTreeMap::new(),
        state: json!({}),
        checkpoints: 0,
        acknowledged: None,
    };
    for (i, (table, binding)) in bindings.iter().enumerate() {
        let schema = &binding["collection"]["writeSchema"];
        let key: Vec<String> = binding["collection"]["key"]
            .as_array()
            .map(|k| k.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        model.by_table.insert(table.name.clone(), i);
        model.collections.push(Collection {
            table: table.name.clone(),
            keyless: table.key == KeyShape::Keyless,
            key,
            validator: validator(schema),
            rows: BTreeMap::new(),
            deleted: BTreeSet::new(),
            documents: 0,
        });
    }
    let connector_bindings: Vec<Value> = bindings.iter().map(|(_, b)| b.clone()).collect();

    // The workload runs while sessions capture and faults strike.
    let workload =
        Aborting(Some(tokio::spawn(run_workload(cluster.clone(), database.clone(), lives, case.ops, case.seed))));
    let mut faults: Vec<Fault> = case.faults.clone();
    faults.reverse();
    let mut sessions = 0;
    let mut fault_log = Vec::new();
    let mut aftermath_failures = 0;
    let mut workload = workload;
    let mut finished_workload = None;
    loop {
        if let Some(handle) = workload.0.as_ref() {
            if handle.is_finished() {
                let handle = workload.0.take().expect("a workload");
                finished_workload = Some(handle.await.map_err(|e| format!("the workload panicked: {e}"))??);
            }
        }
        let last = faults.is_empty() && finished_workload.is_some();
        sessions += 1;
        let mut env: Vec<(&str, &str)> = if last { vec![("SHUTDOWN_AFTER_POLLING", "yes")] } else { vec![] };
        // `DIFF_LOG_LEVEL` (e.g. `debug`) overrides the sessions' `LOG_LEVEL=warn`.
        let level = std::env::var("DIFF_LOG_LEVEL").unwrap_or_default();
        if !level.is_empty() {
            env.push(("LOG_LEVEL", level.as_str()));
        }
        wait_slot_released(&mut admin, &cluster, &database, &slot).await?;
        // What a session is opened with is durable: the connector may confirm up to it.
        model.acknowledged = model.cursor();
        let mut session = match open_session(&config, &connector_bindings, &model.state, &env).await {
            Ok(session) => session,
            Err(stderr) => {
                let message = clear_error(&stderr)?;
                if let Some(cause) = case.may_refuse().filter(|cause| message.contains(cause)) {
                    let _ = cause;
                    return Ok(Passed { summary: format!("refused at open, rightly: {}", cut(&message)) });
                }
                if drop_unprovable_slot(&case, &model, &message, &admin, &slot).await? {
                    fault_log.push("operator dropped the slot".into());
                    continue;
                }
                aftermath_failures += 1;
                if fault_log.is_empty() || aftermath_failures > 3 {
                    return Err(format!("session {sessions} failed before it opened: {message}"));
                }
                continue;
            }
        };
        let fault = if last { None } else { faults.pop() };
        let opened = Instant::now();
        let mut pending = Vec::new();
        let mut unacknowledged = 0u64;
        let mut unacknowledged_cursor = None;
        let mut ack_due: Option<Instant> = None;
        let mut session_checkpoints = 0;
        let mut last_slot_check = Instant::now();
        let deadline = opened + Duration::from_secs(if last { 240 } else { 120 });
        let ending: Result<Option<std::process::ExitStatus>, String> = loop {
            // Acknowledge lagging checkpoints once their time has come.
            if unacknowledged > 0 && ack_due.is_some_and(|due| Instant::now() >= due) {
                session.acknowledge_many(unacknowledged).await;
                unacknowledged = 0;
                model.acknowledged = unacknowledged_cursor.take().or(model.acknowledged.take());
                ack_due = None;
                check_slot(&admin, &slot, &model).await?;
            }
            if let Some(f) = fault {
                if session_checkpoints >= f.after_checkpoints || opened.elapsed() >= Duration::from_millis(f.after_ms) {
                    break Ok(None);
                }
            } else if !last && workload.0.as_ref().is_none_or(|h| h.is_finished()) {
                // No faults left and the workload is done: end this session, the last runs clean.
                break Ok(None);
            }
            if Instant::now() > deadline {
                break Err(format!("session {sessions} made no end within {:?}", deadline - opened));
            }
            match session.next(Duration::from_millis(50)).await {
                Event::SourcedSchema { .. } => {}
                Event::Timeout => {
                    // Between acknowledgements too: a slot must never run ahead of them.
                    if last_slot_check.elapsed() > Duration::from_millis(300) {
                        check_slot(&admin, &slot, &model).await?;
                        last_slot_check = Instant::now();
                    }
                }
                Event::Exited(status) => break Ok(Some(status)),
                Event::Captured { doc } => pending.push(doc),
                Event::Checkpoint { patch } => {
                    model.commit(std::mem::take(&mut pending), &patch)?;
                    session_checkpoints += 1;
                    if case.lagging_acks && !last {
                        // A runtime may also say "none yet": an acknowledgement of zero
                        // checkpoints must confirm nothing.
                        if rng.gen_bool(0.3) {
                            session.acknowledge_many(0).await;
                        }
                        unacknowledged += 1;
                        unacknowledged_cursor = model.cursor();
                        ack_due.get_or_insert(Instant::now() + Duration::from_millis(rng.gen_range(0..400)));
                    } else {
                        session.acknowledge().await;
                        model.acknowledged = model.cursor();
                        check_slot(&admin, &slot, &model).await?;
                    }
                }
            }
        };
        let ending = ending?;
        check_slot(&admin, &slot, &model).await?;
        match ending {
            Some(status) if status.success() => {
                if !pending.is_empty() {
                    return Err(format!(
                        "{} documents after the last checkpoint of a session that ended cleanly",
                        pending.len()
                    ));
                }
                if last {
                    break;
                }
                return Err(format!("session {sessions} exited 0 without being asked to"));
            }
            Some(status) => {
                let stderr = session.stderr_lines().await;
                let message = clear_error(&stderr)?;
                if let Some(cause) = case.may_refuse() {
                    if message.contains(cause) {
                        drop(workload);
                        return Ok(Passed { summary: format!("refused at open, rightly: {}", cut(&message)) });
                    }
                }
                if drop_unprovable_slot(&case, &model, &message, &admin, &slot).await? {
                    fault_log.push("operator dropped the slot".into());
                    continue;
                }
                // The first sessions after a fault may still meet its aftermath (a server
                // finishing recovery); anything else is a failure of the connector.
                aftermath_failures += 1;
                if fault_log.is_empty() || aftermath_failures > 3 {
                    return Err(format!("session {sessions} failed on its own ({status}): {message}"));
                }
            }
            None => {
                aftermath_failures = 0;
                match fault {
                    Some(f) => {
                        fault_log.push(format!("{:?}", f.kind));
                        inject(&cluster, &proxy, f.kind, session).await?;
                        if f.kind == FaultKind::Restart {
                            admin = connect(&cluster, &database).await?;
                        }
                    }
                    None => session.kill().await,
                }
            }
        }
    }

    // The oracle.
    let (stats, lives) = finished_workload.ok_or("the workload did not finish")?;
    let oracle = connect(&cluster, &database).await?;
    let mut compared = 0;
    for (collection, live) in model.collections.iter().zip(&lives) {
        compared += compare(&oracle, collection, live).await?;
    }
    if case.read_only {
        // The capture user may create tables in `public`: a read-only capture must not have.
        let created: bool = oracle
            .query_one("SELECT to_regclass('public.flow_watermarks') IS NOT NULL", &[])
            .await
            .map_err(|e| describe_pg_error(&e))?
            .get(0);
        if created {
            return Err("a read-only capture created its watermarks table".into());
        }
    }
    drop(proxy);
    // Clean up a passing case: its slot, then its database.
    let _ = oracle.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await;
    let _ = admin.batch_execute("DROP TABLE IF EXISTS public.flow_watermarks").await;
    drop(admin);
    drop(oracle);
    if let Ok(postgres) = connect(&cluster, "postgres").await {
        let _ =
            postgres.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&database))).await;
    }
    let documents: u64 = model.collections.iter().map(|c| c.documents).sum();
    Ok(Passed {
        summary: format!(
            "ok in {:.1}s: {sessions} sessions, faults [{}], {} checkpoints, {documents} documents, {compared} rows compared, \
             workload {} transactions ({} DDL, {} VACUUM FULL, {} reconnects)",
            started.elapsed().as_secs_f64(),
            fault_log.join(" "),
            model.checkpoints,
            stats.transactions,
            stats.ddl,
            stats.vacuum_full,
            stats.reconnects
        ),
    })
}

/// Start a session; a connector that exits before `opened` gives its stderr lines.
async fn open_session(
    config: &Value,
    bindings: &[Value],
    state: &Value,
    env: &[(&str, &str)],
) -> Result<Session, Vec<String>> {
    let (config, bindings, state) = (config.clone(), bindings.to_vec(), state.clone());
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let task = tokio::spawn(async move {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Session::open_capturing_stderr(&config, bindings, &state, &env).await
    });
    match task.await {
        Ok(session) => Ok(session),
        Err(join) => {
            let panic = join.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            // "the connector exited before opened\n<stderr>"
            Err(message.lines().skip(1).map(str::to_string).collect())
        }
    }
}

/// A read-only capture cannot record that it created its slot (that takes a write): killed
/// after creating it and before its first checkpoint was committed, the next session (with an
/// empty state) finds a slot it cannot prove its own and refuses it, with the statement that
/// drops it in its hint (docs/setup.md, "Read-only captures"). The model does what that hint
/// tells an operator to do, and the case goes on: whether anything was lost is still the
/// oracle's to say. Whether the refusal was that one, and the slot was dropped.
async fn drop_unprovable_slot(
    case: &Case,
    model: &Model,
    message: &str,
    admin: &Client,
    slot: &str,
) -> Result<bool, String> {
    let unprovable = message.contains("already exists, and nothing shows that this capture created it");
    if !(case.read_only && model.cursor().is_none() && unprovable) {
        return Ok(false);
    }
    // The refusing session's walsender may still be letting go of the slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await {
            Ok(_) => return Ok(true),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("drop the read-only capture's unprovable slot: {}", describe_pg_error(&e)))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Wait until no walsender holds the slot (a killed connector's is noticed a moment later).
async fn wait_slot_released(
    admin: &mut Client,
    cluster: &PrivateCluster,
    database: &str,
    slot: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await {
            Ok(None) => return Ok(()),
            Ok(Some(row)) if !row.get::<_, bool>(0) => return Ok(()),
            Ok(Some(_)) => {}
            Err(_) => *admin = connect(cluster, database).await?,
        }
        if Instant::now() > deadline {
            return Err(format!("slot {slot} is still in use 30 s after its connector ended"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The slot is never confirmed past the last acknowledged cursor.
async fn check_slot(admin: &Client, slot: &str, model: &Model) -> Result<(), String> {
    let Ok(row) = admin
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
    else {
        return Ok(()); // The server is restarting.
    };
    let Some(confirmed) = row.and_then(|r| r.get::<_, Option<String>>(0)) else { return Ok(()) };
    let limit = model.acknowledged.as_deref().map(lsn_value).unwrap_or(0);
    // Before any acknowledgement the slot stays where it was created.
    if model.acknowledged.is_some() && lsn_value(&confirmed) > limit {
        return Err(format!(
            "slot {slot} confirmed {confirmed} past the last acknowledged cursor {}",
            model.acknowledged.as_deref().unwrap_or("(none)")
        ));
    }
    Ok(())
}

async fn inject(cluster: &PrivateCluster, proxy: &Proxy, kind: FaultKind, mut session: Session) -> Result<(), String> {
    match kind {
        FaultKind::Kill => session.kill().await,
        FaultKind::Restart => {
            cluster.restart_immediate().await;
            // The connector fails on its own now; its last documents are never committed.
            wait_exit(&mut session, Duration::from_secs(60), "an immediate server restart").await?;
        }
        FaultKind::Cut => {
            proxy.cut();
            wait_exit(&mut session, Duration::from_secs(60), "its connections being reset").await?;
        }
        FaultKind::Stall => {
            proxy.stall();
            let waited = wait_exit(&mut session, Duration::from_secs(90), "a stalled connection").await;
            proxy.cut();
            waited?;
        }
    }
    Ok(())
}

/// After a fault, the session must end on its own with one clear error (or have been idle
/// enough to notice nothing: it is killed then).
async fn wait_exit(session: &mut Session, within: Duration, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match session.next(deadline.saturating_duration_since(Instant::now())).await {
            Event::SourcedSchema { .. } => {}
            Event::Exited(status) => {
                if !status.success() {
                    clear_error(&session.stderr_lines().await).map_err(|e| format!("after {what}: {e}"))?;
                }
                return Ok(());
            }
            Event::Timeout => return Err(format!("the connector did not notice {what} within {within:?}")),
            // Uncommitted: the runtime never sees what follows a fault.
            Event::Captured { .. } | Event::Checkpoint { .. } => {}
        }
    }
}

/// Compare one collection with its table; returns the number of rows compared.
async fn compare(client: &Client, collection: &Collection, live: &Live) -> Result<usize, String> {
    let table = qualified(&live.spec.name);
    let types: BTreeMap<String, (String, i32)> = client
        .query(
            "SELECT a.attname::text, t.typname::text, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await
        .map_err(|e| describe_pg_error(&e))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let messages = client.simple_query(&format!("SELECT * FROM {table}")).await.map_err(|e| describe_pg_error(&e))?;
    let mut expected = Vec::new();
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else { continue };
        let mut doc = Map::new();
        for (i, column) in row.columns().iter().enumerate() {
            let name = column.name();
            let value = match row.get(i) {
                None => Value::Null,
                Some(text) => {
                    let (typname, typmod) = &types[name];
                    let ty = source_postgres::value::type_from_typname(typname, *typmod);
                    let mut out = Vec::new();
                    source_postgres::value::encode_value(&ty, text.as_bytes(), &mut out)
                        .map_err(|e| format!("encode {name} of {table}: {e}"))?;
                    serde_json::from_slice(&out).map_err(|e| format!("encoded {name}: {e}"))?
                }
            };
            doc.insert(property_of(name), value);
        }
        expected.push(doc);
    }
    let differs = |want: &Map<String, Value>, got: &Map<String, Value>| -> Option<String> {
        for (property, value) in want {
            match got.get(property) {
                Some(v) if v == value => {}
                None if value.is_null() && live.added.contains(property) => {}
                other => {
                    return Some(format!(
                        "{property}: table {}, collection {}",
                        cut(&value.to_string()),
                        other.map_or("(absent)".into(), |v| cut(&v.to_string()))
                    ))
                }
            }
        }
        None
    };
    let name = &collection.table;
    if collection.keyless {
        // Every row at least once (a rewritten table is read again), nothing that is not a row.
        let by_seq: BTreeMap<i64, &Map<String, Value>> =
            expected.iter().map(|r| (r["seq"].as_i64().unwrap_or(-1), r)).collect();
        let mut seen = BTreeSet::new();
        for doc in collection.rows.values() {
            let seq =
                doc.get("seq").and_then(Value::as_i64).ok_or_else(|| format!("a document of {name} without seq"))?;
            let row = by_seq
                .get(&seq)
                .ok_or_else(|| format!("{name}: captured a row (seq {seq}) that the table does not hold"))?;
            if let Some(d) = differs(row, doc) {
                return Err(format!("{name}: seq {seq} differs from the table: {d}"));
            }
            seen.insert(seq);
        }
        let missing: Vec<&i64> = by_seq.keys().filter(|s| !seen.contains(s)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{name}: {} of {} rows never captured (seq {:?}…)",
                missing.len(),
                by_seq.len(),
                &missing[..missing.len().min(8)]
            ));
        }
        return Ok(expected.len());
    }
    let mut want: BTreeMap<String, &Map<String, Value>> = BTreeMap::new();
    for row in &expected {
        let key = collection.key_of(&Value::Object(row.clone()))?;
        want.insert(key, row);
    }
    let missing: Vec<&String> = want.keys().filter(|k| !collection.rows.contains_key(*k)).collect();
    let extra: Vec<&String> = collection.rows.keys().filter(|k| !want.contains_key(*k)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(format!(
            "{name}: the collection differs from the table: {} rows missing {:?}, {} extra {:?} ({} in the table, {} in the collection)",
            missing.len(),
            missing.iter().take(5).map(|k| cut(k)).collect::<Vec<_>>(),
            extra.len(),
            extra.iter().take(5).map(|k| cut(k)).collect::<Vec<_>>(),
            want.len(),
            collection.rows.len()
        ));
    }
    let mut differing = Vec::new();
    for (key, row) in &want {
        if let Some(d) = differs(row, &collection.rows[key]) {
            differing.push(format!("key {}: {d}", cut(key)));
        }
    }
    if !differing.is_empty() {
        return Err(format!(
            "{name}: {} rows differ from the table:\n{}",
            differing.len(),
            differing.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(want.len())
}

/// The document property of a column: a column named `_meta` followed by zero or more
/// underscores gets one more underscore (docs/types.md, "Names"), so that no column collides
/// with the document's `_meta`. Written out here, not taken from the crate, so that the
/// harness checks the documented mapping.
fn property_of(column: &str) -> String {
    match column.strip_prefix("_meta") {
        Some(rest) if rest.chars().all(|c| c == '_') => format!("{column}_"),
        _ => column.to_string(),
    }
}

// ---- The test ------------------------------------------------------------------------------

/// Runs a case in its own task (a panic anywhere in it is its failure), within 600 s.
async fn run_guarded(cluster: &Arc<PrivateCluster>, case: &Case) -> Result<Passed, String> {
    gen_common::run_guarded(run_case(cluster.clone(), case.clone()), Duration::from_secs(600)).await
}

fn replay_command(seed: u64, shrink: Shrink) -> String {
    let mut command = format!("DIFF_SEED={seed}");
    if shrink.rows_scale != 1.0 {
        let _ = write!(command, " DIFF_ROWS_SCALE={}", shrink.rows_scale);
    }
    if let Some(ops) = shrink.ops {
        let _ = write!(command, " DIFF_OPS={ops}");
    }
    if let Some(faults) = shrink.faults {
        let _ = write!(command, " DIFF_FAULTS={faults}");
    }
    format!("{command} cargo test --locked --test it differential::seeds -- --nocapture")
}

async fn collation(cluster: &PrivateCluster) -> String {
    // A collation whose order is not byte order, where the server has one.
    let client = connect(cluster, "postgres").await.expect("connect");
    for candidate in ["und-x-icu", "en-US-x-icu", "en_US.utf8", "C.utf8"] {
        if let Ok(Some(_)) = client.query_opt("SELECT 1 FROM pg_collation WHERE collname = $1", &[&candidate]).await {
            return candidate.to_string();
        }
    }
    "C".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds() {
    let cluster = Arc::new(
        PrivateCluster::start(&["wal_sender_timeout=5s", "logical_decoding_work_mem=64kB", "max_replication_slots=20"])
            .await,
    );
    let collation = collation(&cluster).await;
    let (seeds, budget) = seed_plan("DIFF", 24);
    let started = Instant::now();
    let report = std::env::var("DIFF_REPORT").ok();
    let mut failures = Vec::new();
    let mut cases = 0;
    for seed in seeds {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        cases += 1;
        let shrink = Shrink::from_env();
        let case = Case::generate(seed, shrink, &collation);
        eprintln!("differential: {}", case.describe());
        let outcome = run_guarded(&cluster, &case).await;
        let line = match &outcome {
            Ok(passed) => format!("differential: seed {seed}: {}", passed.summary),
            Err(failure) => format!("differential: seed {seed}: FAILED: {failure}"),
        };
        println!("{line}");
        let mut replay = replay_command(seed, shrink);
        if let Err(failure) = &outcome {
            let (smallest, message) = shrink_failure(&cluster, seed, shrink, &collation, failure.clone()).await;
            replay = replay_command(seed, smallest);
            failures.push(format!(
                "seed {seed}: {message}\n  case: {}\n  replay: {replay}",
                cut(&Case::generate(seed, smallest, &collation).describe())
            ));
        }
        if let Some(path) = &report {
            let entry = json!({
                "seed": seed,
                "case": case.describe(),
                "rows": case.tables.iter().map(|t| t.rows).sum::<i64>(),
                "ops": case.ops,
                "faults": case.faults.len(),
                "ok": outcome.is_ok(),
                "outcome": match &outcome { Ok(p) => p.summary.clone(), Err(e) => cut(e) },
                "replay": replay,
            });
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(file, "{entry}");
            }
        }
    }
    eprintln!("differential: {cases} cases in {:.0}s, {} failed", started.elapsed().as_secs_f64(), failures.len());
    assert!(failures.is_empty(), "{} of {cases} differential cases failed:\n{}", failures.len(), failures.join("\n"));
}

/// Shrink a failing case (no faults, fewer operations, fewer rows) while it still fails;
/// returns the smallest failing variant and its failure.
async fn shrink_failure(
    cluster: &Arc<PrivateCluster>,
    seed: u64,
    start: Shrink,
    collation: &str,
    failure: String,
) -> (Shrink, String) {
    if std::env::var("DIFF_SHRINK").is_ok_and(|v| v == "0") {
        return (start, failure);
    }
    let mut best = (start, failure);
    let full = Case::generate(seed, start, collation);
    let mut attempts = Vec::new();
    if !full.faults.is_empty() {
        attempts.push(Shrink { faults: Some(0), ..start });
    }
    for _ in 0..4 {
        attempts.push(Shrink::default_marker());
    }
    let mut budget = 6;
    let mut queue = attempts.into_iter();
    while budget > 0 {
        let Some(candidate) = queue.next() else { break };
        let candidate = if candidate.rows_scale < 0.0 {
            // Halve operations and rows of the best failing variant so far.
            let current = best.0;
            let case = Case::generate(seed, current, collation);
            Shrink { rows_scale: current.rows_scale / 2.0, ops: Some((case.ops / 2).max(1)), ..current }
        } else {
            candidate
        };
        budget -= 1;
        let case = Case::generate(seed, candidate, collation);
        eprintln!("differential: shrinking: {}", case.describe());
        match run_guarded(cluster, &case).await {
            Err(message) => {
                eprintln!("differential: still fails: {}", cut(&message));
                best = (candidate, message);
            }
            Ok(_) => eprintln!("differential: passes, kept the larger case"),
        }
    }
    best
}

impl Shrink {
    /// A placeholder for "halve the current best" in the shrink queue.
    fn default_marker() -> Shrink {
        Shrink { rows_scale: -1.0, ops: None, faults: None }
    }
}
