//! `validate` and `apply`: a setup assistant that says exactly what to run.
//!
//! Validation inspects the live server and the connecting user's actual privileges, collects
//! every unmet prerequisite (nothing stops at the first), and reports them at once as one
//! user error: the problems sorted, then a hint holding the SQL that fixes them *on this
//! server for this user*, in an order that works when run top to bottom, listing only what
//! is still missing. Settings made outside SQL (a cloud parameter group, a restart) appear as
//! `--` comment lines in the same script, using the platform's own setting names.
//!
//! ```text
//!   config + bindings ──► binding rules (pure: mode/filter changes, fallback keys)
//!          │
//!          ▼
//!   Context::load ── who am I, which database, which platform ([`platform`]);
//!          │         asked once: every check, and `apply`'s objects, take the answer
//!          │
//!          ├─► server::check  ── facts (one query each) ──► problems (pure)
//!          ├─► tables::check  ── facts for all bound tables ──► problems (pure) + advice
//!          └─► replication connection (IDENTIFY_SYSTEM)
//!          │
//!          ▼
//!   report(): "the capture cannot run due to the following error(s):" + HINT (the script)
//! ```
//!
//! Validation itself changes nothing. What the capture user may do on its own (create the
//! publication when it has CREATE on the database, create the watermarks table, add tables
//! it owns to a publication it owns) is not a problem: `apply`, and the capture session,
//! do it ([`objects`]). `apply` is idempotent and never drops anything.
//!
//! Every identifier that reaches SQL text, whether from the configuration or the catalog, is
//! quoted with [`quote_identifier`] (literals with [`quote_literal`]); catalog lookups pass
//! names as bind parameters.
//!
//! # Layout
//! - [`platform`]: managed-platform recognition and the platform's setting names (pure).
//! - [`server`]: server-wide checks: version, wal_level, role, slots, senders, publication,
//!   watermarks table.
//! - [`tables`]: per-table checks: existence, SELECT, publication membership, replica
//!   identity, row-level security, UNLOGGED, partitioning, TOAST advice.
//! - [`publication`]: what the publication lets through: its actions, and column lists and
//!   row filters on the bound tables (PostgreSQL 15+).
//! - [`keys`]: backfill keys: a keyed backfill pages by NOT NULL columns that exist.
//! - [`objects`]: what `apply` and the capture create.

pub mod keys;
pub mod objects;
pub mod platform;
pub mod publication;
pub mod server;
pub mod tables;
pub mod watermarks;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::{BackfillMode, Config, ResourceConfig};
use crate::error::Error;
use crate::pg::{quote_identifier, quote_literal};
use crate::protocol::responses::ValidatedBinding;
use crate::protocol::{Apply, CaptureSpec, Validate};
use platform::{Platform, PlatformHints};

pub use objects::{ensure_capture_objects, ensure_watermarks_table};
use server::check_server;
use tables::check_tables;

/// Statement timeout of the connections validation and apply open.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a whole `validate` or `apply` request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// At most this many problems are listed in the message (all fixes are kept).
const MAX_LISTED_PROBLEMS: usize = 20;

/// Where a remediation statement goes in the script: statements run in this order, so
/// that each finds what it needs (the schema before the table, the publication before its
/// members, the replica identity before the table is published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// `-- as <admin>, connected to database "<db>":`
    Connect,
    /// `ALTER SYSTEM` or the platform's equivalent.
    ServerSetting,
    /// The restart that `ALTER SYSTEM` of a restart-only setting needs.
    Restart,
    Role,
    Slot,
    CreateSchema,
    SchemaGrant,
    CreateTable,
    TableGrant,
    TableSetting,
    CreatePublication,
    AlterPublication,
    PublicationAddTable,
}

/// One line of the remediation script: a statement, or a `--` comment for what is done
/// outside SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fix {
    pub step: Step,
    pub sql: String,
}

/// One unmet prerequisite and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub message: String,
    pub fixes: Vec<Fix>,
}

impl Problem {
    /// A problem that no SQL fixes (the fix is a change to the capture's specification).
    pub fn without_fix(message: impl Into<String>) -> Problem {
        Problem { message: message.into(), fixes: Vec::new() }
    }
}

/// The error for a set of problems: the problems sorted and listed the way the Go
/// connector does, and a hint with the remediation script, ordered by [`Step`].
pub fn report(problems: &[Problem]) -> Error {
    let mut sorted = problems.to_vec();
    sorted.sort();
    sorted.dedup_by(|a, b| a.message == b.message);
    let mut message = String::from("the capture cannot run due to the following error(s):");
    for problem in sorted.iter().take(MAX_LISTED_PROBLEMS) {
        message.push_str("\n - ");
        message.push_str(&problem.message);
    }
    if sorted.len() > MAX_LISTED_PROBLEMS {
        message.push_str(&format!("\n - additional {} errors omitted", sorted.len() - MAX_LISTED_PROBLEMS));
    }
    let fixes: BTreeSet<&Fix> = sorted.iter().flat_map(|p| &p.fixes).collect();
    if fixes.iter().all(|fix| fix.step == Step::Connect) {
        return Error::user(message, "");
    }
    let mut hint = String::from("run this in order (lines starting with -- are steps to take by hand):");
    for fix in fixes {
        hint.push('\n');
        hint.push_str(&fix.sql);
    }
    Error::user(message, hint)
}

/// The remediation script of a report's hint, as lines (for tests and tools).
pub fn script_of(hint: &str) -> Vec<&str> {
    hint.lines().skip(1).collect()
}

/// Who runs the checks, where, and on which platform: what every fix needs to know.
#[derive(Debug, Clone)]
pub struct Context {
    /// `current_user` (which is not the configured user on Azure Single Server, `u@server`).
    pub user: String,
    pub database: String,
    pub server_version: i32,
    pub platform: Platform,
    pub is_superuser: bool,
    pub bypasses_rls: bool,
    /// CREATE on the database: the user may create the publication.
    pub can_create_publication: bool,
}

impl Context {
    /// Ask the server who we are, and recognize the platform.
    pub async fn load(client: &Client, config: &Config) -> Result<Context, Error> {
        let settings: Vec<&str> = platform::HINT_SETTINGS.to_vec();
        let roles: Vec<&str> = platform::HINT_ROLES.to_vec();
        let row = client
            .query_one(
                "SELECT current_user::text, current_database()::text,
                        current_setting('server_version_num')::int,
                        ARRAY(SELECT s FROM unnest($1::text[]) AS s WHERE current_setting(s, true) IS NOT NULL ORDER BY s),
                        ARRAY(SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($2::text[]) ORDER BY 1),
                        COALESCE(r.rolsuper, false), COALESCE(r.rolbypassrls, false),
                        pg_catalog.has_database_privilege(current_database(), 'CREATE')
                 FROM (SELECT 1) AS one
                 LEFT JOIN pg_catalog.pg_roles r ON r.rolname = current_user",
                &[&settings, &roles],
            )
            .await?;
        let hints = PlatformHints { settings: row.get(3), roles: row.get(4) };
        Ok(Context {
            user: row.get(0),
            database: row.get(1),
            server_version: row.get(2),
            platform: Platform::detect(&config.host, &hints),
            is_superuser: row.get(5),
            bypasses_rls: row.get::<_, bool>(6) || row.get::<_, bool>(5),
            can_create_publication: row.get(7),
        })
    }

    /// The user, quoted for SQL.
    pub fn quoted_user(&self) -> String {
        quote_identifier(&self.user)
    }

    /// A problem with fixes; the script's first line says who runs it and where.
    pub fn problem(&self, message: impl Into<String>, fixes: Vec<(Step, String)>) -> Problem {
        let mut fixes: Vec<Fix> = fixes.into_iter().map(|(step, sql)| Fix { step, sql }).collect();
        if !fixes.is_empty() {
            fixes.push(Fix {
                step: Step::Connect,
                sql: format!(
                    "-- as {}, connected to database {}:",
                    self.platform.admin(),
                    quote_identifier(&self.database)
                ),
            });
        }
        Problem { message: message.into(), fixes }
    }
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    crate::config::table_name::quoted_table(schema, table)
}

/// `schema.table` for messages, in double quotes like the Go connector (`"public.t"`).
pub fn display_name(schema: &str, table: &str) -> String {
    crate::config::table_name::display_table(schema, table)
}

/// `SELECT pg_drop_replication_slot('slot');`
fn drop_slot_sql(slot: &str) -> String {
    format!("SELECT pg_catalog.pg_drop_replication_slot({});", quote_literal(slot))
}

/// Open the SQL connection that validation and apply use: bounded statements and locks.
pub async fn connect_for_checks(config: &Config) -> Result<Client, Error> {
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = 10000; SET idle_in_transaction_session_timeout = 60000",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .await?;
    Ok(client)
}

/// Run `work` with the request deadline.
async fn with_deadline<T>(what: &str, work: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::user(
            format!("{what} did not finish within {} seconds", REQUEST_TIMEOUT.as_secs()),
            "the server is slow to answer or a lock is held for long (see pg_stat_activity); try again",
        )),
    }
}

fn parse_resources<'a>(bindings: impl Iterator<Item = &'a serde_json::Value>) -> Result<Vec<ResourceConfig>, Error> {
    let mut seen = BTreeSet::new();
    let mut resources = Vec::new();
    for (index, value) in bindings.enumerate() {
        let resource = ResourceConfig::parse(index, value)?;
        if !seen.insert(resource.resource_path()) {
            return Err(Error::user(
                format!("binding {index} captures table {} again", resource.table_name()),
                "each table may be bound once per capture: remove the duplicate binding",
            ));
        }
        resources.push(resource);
    }
    Ok(resources)
}

/// The columns of each binding's collection key, by table: for the bindings whose key
/// pointers all name top-level properties (a key like `/_meta/source/loc` has no columns).
pub fn collection_key_columns<'a>(
    bindings: impl Iterator<Item = (&'a ResourceConfig, &'a [String])>,
) -> BTreeMap<(String, String), Vec<String>> {
    bindings
        .filter_map(|(resource, key)| {
            let columns: Option<Vec<String>> =
                key.iter().map(|pointer| crate::discovery::schema::column_of_pointer(pointer)).collect();
            columns.filter(|c| !c.is_empty()).map(|c| ((resource.namespace.clone(), resource.stream.clone()), c))
        })
        .collect()
}

/// Rules about changing a binding between publications of the capture, and about keys.
fn check_binding_rules(
    resources: &[ResourceConfig],
    bindings: &[crate::protocol::ValidateBinding],
    last: Option<&CaptureSpec>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (index, (resource, binding)) in resources.iter().zip(bindings).enumerate() {
        let table = resource.table_name();
        let keyless = binding.collection.key.iter().map(String::as_str).eq(crate::discovery::FALLBACK_KEY);
        let scans_by_key = !matches!(resource.mode, BackfillMode::WithoutPrimaryKey | BackfillMode::OnlyChanges);
        if keyless && scans_by_key && resource.primary_key.is_none() {
            problems.push(Problem::without_fix(format!(
                "output collection for stream {table} (binding {index}) has the fallback key, which can't be used for a backfill: set the binding's mode to \"Without Primary Key\""
            )));
        }
        let Some(last) = last else { continue };
        let previous = last.bindings.iter().find_map(|b| {
            let r = serde_json::from_value::<ResourceConfig>(b.resource_config.clone()).ok()?;
            (r.namespace == resource.namespace && r.stream == resource.stream).then_some((r, b.backfill))
        });
        let Some((previous, previous_backfill)) = previous else {
            continue;
        };
        if binding.backfill != previous_backfill {
            continue;
        }
        if previous.mode != resource.mode {
            problems.push(Problem::without_fix(format!(
                "must re-backfill when changing backfill mode: table {table} changed from {:?} to {:?}: increment the binding's backfill counter",
                mode_name(previous.mode),
                mode_name(resource.mode)
            )));
        }
        let filter = &resource.advanced.additional_backfill_filter;
        if filter.is_some() && *filter != previous.advanced.additional_backfill_filter {
            problems.push(Problem::without_fix(format!(
                "must re-backfill when changing the backfill filter: table {table}: increment the binding's backfill counter"
            )));
        }
    }
    problems
}

fn mode_name(mode: BackfillMode) -> &'static str {
    match mode {
        BackfillMode::Automatic => "",
        BackfillMode::Normal => "Normal",
        BackfillMode::Precise => "Precise",
        BackfillMode::OnlyChanges => "Only Changes",
        BackfillMode::WithoutPrimaryKey => "Without Primary Key",
    }
}

/// Answer `validate`: one binding per request binding, in order, each with a unique
/// `resourcePath` of `[namespace, stream]`.
pub async fn validate(request: &Validate) -> Result<Vec<ValidatedBinding>, Error> {
    let config = Config::parse(&request.config)?;
    config.check_supported()?;
    let resources = parse_resources(request.bindings.iter().map(|b| &b.resource_config))?;
    let mut problems = check_binding_rules(&resources, &request.bindings, request.last_capture.as_ref());
    if config.skips_prerequisites() {
        tracing::warn!("skipping all prerequisite checks because the 'skip_prerequisites' feature flag is set");
    } else {
        let tables: BTreeSet<(String, String)> =
            resources.iter().map(|r| (r.namespace.clone(), r.stream.clone())).collect();
        let keys =
            collection_key_columns(resources.iter().zip(request.bindings.iter().map(|b| b.collection.key.as_slice())));
        problems.extend(
            with_deadline("validation", check_all(&config, &tables, &keys, &resources, &request.bindings)).await?,
        );
    }
    if !problems.is_empty() {
        return Err(report(&problems));
    }
    Ok(resources.iter().map(|r| ValidatedBinding { resource_path: r.resource_path() }).collect())
}

async fn check_all(
    config: &Config,
    tables: &BTreeSet<(String, String)>,
    keys: &BTreeMap<(String, String), Vec<String>>,
    resources: &[ResourceConfig],
    bindings: &[crate::protocol::ValidateBinding],
) -> Result<Vec<Problem>, Error> {
    let client = connect_for_checks(config).await?;
    let ctx = Context::load(&client, config).await?;
    if config.skips_table_prerequisites() {
        tracing::warn!(
            "skipping per-table prerequisite checks because the 'skip_table_prerequisites' feature flag is set"
        );
    }
    let mut problems = check_prerequisites(&client, config, &ctx, tables, keys).await?;
    problems.extend(check_meta_keys(&client, resources, bindings).await?);
    problems.extend(keys::check_backfill_keys(&client, config, &ctx, resources, bindings).await?);
    if problems.is_empty() {
        problems.extend(server::check_replication_connection(config).await);
    }
    Ok(problems)
}

/// What the capture needs of the server and, unless the configuration skips them, of its
/// tables and their publication: the checks `validate` and `open` share.
pub async fn check_prerequisites(
    client: &Client,
    config: &Config,
    ctx: &Context,
    tables: &BTreeSet<(String, String)>,
    keys: &BTreeMap<(String, String), Vec<String>>,
) -> Result<Vec<Problem>, Error> {
    let mut problems = check_server(client, config, ctx).await?;
    if !config.skips_table_prerequisites() {
        problems.extend(check_tables(client, config, ctx, tables, keys).await?);
        problems.extend(check_publication_filters(client, config, ctx, tables).await?);
    }
    Ok(problems)
}

/// Column lists and row filters of the publication on the bound tables (PostgreSQL 15+):
/// with either, changes the capture needs never reach it.
async fn check_publication_filters(
    client: &Client,
    config: &Config,
    ctx: &Context,
    tables: &BTreeSet<(String, String)>,
) -> Result<Vec<Problem>, Error> {
    let shape = publication::PublicationShape::load(client, config, ctx.server_version, tables).await?;
    Ok(publication::filter_problems(ctx, config, &shape))
}

/// Collection keys that name a column `_meta`, `_meta_`, ... the way the Go connector (and
/// earlier versions) wrote it, rather than by its property: such columns get one more
/// trailing underscore (see `docs/types.md`), so the key would point at the document's own
/// `_meta`, or at a property no document carries, and the runtime would fail on the first
/// document with a far less helpful message. Only keys of that family are looked up.
async fn check_meta_keys(
    client: &Client,
    resources: &[ResourceConfig],
    bindings: &[crate::protocol::ValidateBinding],
) -> Result<Vec<Problem>, Error> {
    use crate::discovery::schema::{column_of_property, is_meta_like, key_pointer, property_name};
    let mut problems = Vec::new();
    for (index, (resource, binding)) in resources.iter().zip(bindings).enumerate() {
        let table = resource.table_name();
        for pointer in &binding.collection.key {
            let Some(property) = pointer.strip_prefix('/').filter(|p| is_meta_like(p)) else { continue };
            let column_named_so = has_column(client, resource, property).await?;
            let column_it_names = match column_of_property(property) {
                Some(column) => has_column(client, resource, column).await?,
                None => false,
            };
            if column_named_so && !column_it_names {
                problems.push(Problem::without_fix(format!(
                    "collection key {pointer:?} of binding {index} (table {table}) names the column {property:?}, which is captured as the property {:?}: columns named _meta, _meta_, ... get one more trailing underscore so that none collides with the document's own _meta; re-discover the binding, or change its collection key to {:?}",
                    property_name(property),
                    key_pointer(property),
                )));
            } else if column_of_property(property).is_none() {
                problems.push(Problem::without_fix(format!(
                    "collection key {pointer:?} of binding {index} (table {table}) points at the document's own _meta, not at a column: set the collection key to columns of the table (a column named _meta is the property \"_meta_\")"
                )));
            }
        }
    }
    Ok(problems)
}

/// Whether the bound table has a column of this name (bound parameters: any name is safe).
async fn has_column(client: &Client, resource: &ResourceConfig, column: &str) -> Result<bool, Error> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&resource.namespace, &resource.stream, &column],
        )
        .await?;
    Ok(row.is_some())
}

/// What `apply` and the capture create, as the prerequisite flags allow (the Go connector
/// creates these objects in its prerequisite checks): nothing with `skip_prerequisites` or
/// `read_only_capture` (which writes nothing: validation then reports what is missing, with
/// the SQL for an administrator), the publication and the watermarks table but no
/// publication membership of the bound tables with `skip_table_prerequisites`.
pub async fn ensure_objects_for(
    client: &Client,
    config: &Config,
    ctx: &Context,
    tables: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, Error> {
    if config.skips_prerequisites() || config.read_only() {
        Ok(Vec::new())
    } else if config.skips_table_prerequisites() {
        ensure_watermarks_table(client, config, ctx).await
    } else {
        ensure_capture_objects(client, config, ctx, tables).await
    }
}

/// Answer `apply`: create what the capture user may create (the publication, the
/// watermarks table, publication membership of the bound tables), and say what was done.
/// Idempotent; never drops anything.
pub async fn apply(request: &Apply) -> Result<String, Error> {
    if request.capture.bindings.is_empty() {
        return Ok(String::new());
    }
    let config = Config::parse(&request.capture.config)?;
    config.check_supported()?;
    let resources = parse_resources(request.capture.bindings.iter().map(|b| &b.resource_config))?;
    if config.skips_prerequisites() || config.read_only() {
        return Ok(String::new());
    }
    let tables: BTreeSet<(String, String)> =
        resources.iter().map(|r| (r.namespace.clone(), r.stream.clone())).collect();
    let actions = with_deadline("apply", async {
        let client = connect_for_checks(&config).await?;
        let ctx = Context::load(&client, &config).await?;
        ensure_objects_for(&client, &config, &ctx, &tables).await
    })
    .await?;
    Ok(actions.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CaptureBinding, CollectionSpec, ValidateBinding};
    use serde_json::json;

    fn fix(step: Step, sql: &str) -> Fix {
        Fix { step, sql: sql.into() }
    }

    #[test]
    fn report_sorts_problems_and_orders_the_script_by_step() {
        let problems = vec![
            Problem {
                message: "publication \"p\" does not exist".into(),
                fixes: vec![
                    fix(Step::PublicationAddTable, "ALTER PUBLICATION \"p\" ADD TABLE \"s\".\"t\";"),
                    fix(Step::CreatePublication, "CREATE PUBLICATION \"p\";"),
                    fix(Step::Connect, "-- as a superuser:"),
                ],
            },
            Problem {
                message: "logical replication isn't enabled".into(),
                fixes: vec![
                    fix(Step::ServerSetting, "ALTER SYSTEM SET wal_level = logical;"),
                    fix(Step::Connect, "-- as a superuser:"),
                ],
            },
            Problem::without_fix("must re-backfill"),
            Problem::without_fix("must re-backfill"),
        ];
        let err = report(&problems);
        let hint = err.hint().unwrap();
        assert_eq!(
            err.to_string(),
            "the capture cannot run due to the following error(s):\n - logical replication isn't enabled\n - must re-backfill\n - publication \"p\" does not exist"
        );
        assert_eq!(
            script_of(&hint),
            [
                "-- as a superuser:",
                "ALTER SYSTEM SET wal_level = logical;",
                "CREATE PUBLICATION \"p\";",
                "ALTER PUBLICATION \"p\" ADD TABLE \"s\".\"t\";"
            ]
        );
    }

    #[test]
    fn report_without_fixes_has_no_hint_and_caps_the_list() {
        let problems: Vec<Problem> = (0..25).map(|i| Problem::without_fix(format!("problem {i:02}"))).collect();
        let err = report(&problems);
        assert!(err.hint().is_none());
        let text = err.to_string();
        assert!(text.ends_with("\n - problem 19\n - additional 5 errors omitted"), "{text}");
    }

    fn validate_binding(resource: serde_json::Value, key: &[&str], backfill: u32) -> ValidateBinding {
        ValidateBinding {
            resource_config: resource,
            collection: CollectionSpec { key: key.iter().map(|k| k.to_string()).collect(), ..Default::default() },
            backfill,
        }
    }

    #[test]
    fn mode_and_filter_changes_need_a_backfill_bump() {
        let last = CaptureSpec {
            bindings: vec![CaptureBinding {
                resource_config: json!({"namespace": "public", "stream": "t"}),
                backfill: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let changed = json!({"namespace": "public", "stream": "t", "mode": "Normal", "advanced": {"additional_backfill_filter": "id > 3"}});
        let resources = vec![ResourceConfig::parse(0, &changed).unwrap()];
        let same_counter = [validate_binding(changed.clone(), &["/id"], 1)];
        let problems = check_binding_rules(&resources, &same_counter, Some(&last));
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with(
            "must re-backfill when changing backfill mode: table \"public.t\" changed from \"\" to \"Normal\""
        ));
        assert!(messages[1].starts_with("must re-backfill when changing the backfill filter"));
        let bumped = [validate_binding(changed, &["/id"], 2)];
        assert!(check_binding_rules(&resources, &bumped, Some(&last)).is_empty());
    }

    #[test]
    fn fallback_keys_need_a_keyless_mode() {
        let keyless = json!({"namespace": "public", "stream": "t"});
        let resources = vec![ResourceConfig::parse(0, &keyless).unwrap()];
        let bindings = [validate_binding(keyless, &crate::discovery::FALLBACK_KEY, 0)];
        let problems = check_binding_rules(&resources, &bindings, None);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("has the fallback key"));
        let ok = json!({"namespace": "public", "stream": "t", "mode": "Without Primary Key"});
        let resources = vec![ResourceConfig::parse(0, &ok).unwrap()];
        let bindings = [validate_binding(ok, &crate::discovery::FALLBACK_KEY, 0)];
        assert!(check_binding_rules(&resources, &bindings, None).is_empty());
    }

    #[test]
    fn duplicate_bindings_are_refused() {
        let t = json!({"namespace": "public", "stream": "t"});
        let err = parse_resources([t.clone(), t].iter()).unwrap_err();
        assert_eq!(err.to_string(), "binding 1 captures table \"public.t\" again");
    }

    #[test]
    fn names_in_messages_and_sql_are_quoted() {
        assert_eq!(qualified("we\"ird", "t;x"), "\"we\"\"ird\".\"t;x\"");
        assert_eq!(display_name("s", "t\"q"), "\"s.t\\\"q\"");
        assert_eq!(drop_slot_sql("it's"), "SELECT pg_catalog.pg_drop_replication_slot('it''s');");
    }
}
