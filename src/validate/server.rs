//! Server-wide prerequisites: version, `wal_level`, the replication privilege, free slots
//! and WAL senders, the replication slot, the publication and the watermarks table.
//!
//! [`ServerFacts::load`] reads what the catalog says (a handful of queries, names passed as
//! parameters); [`server_problems`] turns the facts into problems and fixes without IO, so
//! that every rule is unit-tested.

use tokio_postgres::Client;

use super::watermarks::watermarks_problems;
pub use super::watermarks::WatermarksFacts;
use super::{drop_slot_sql, Context, Problem, Step};
use crate::config::Config;
use crate::error::Error;
use crate::pg::quote_identifier;

/// The oldest supported major version (as `server_version_num`).
pub const MIN_SERVER_VERSION: i32 = 130_000;

/// The replication slot, when it exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotFacts {
    pub slot_type: String,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub wal_status: Option<String>,
    pub active: bool,
}

/// The publication, when it exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicationFacts {
    pub all_tables: bool,
    pub via_root: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    /// The user is (a member of) its owner.
    pub owned: bool,
}

/// What the server says about itself and the capture user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    pub version: i32,
    pub wal_level: String,
    pub wal_level_pending_restart: bool,
    pub max_replication_slots: i32,
    pub slot_count: i32,
    pub max_wal_senders: i32,
    pub wal_sender_count: i32,
    pub has_replication: bool,
    pub in_rds_replication: bool,
    pub slot: Option<SlotFacts>,
    pub publication: Option<PublicationFacts>,
    pub watermarks: WatermarksFacts,
}

/// SQL that is true when relation `relation` (an oid expression) is published by the
/// publication named by parameter `publication`: directly, through a partition ancestor, by
/// `FOR ALL TABLES`, or (PostgreSQL 15+) by `FOR TABLES IN SCHEMA`.
pub fn published_sql(server_version: i32, relation: &str, publication: &str) -> String {
    // pg_partition_ancestors lists nothing for a table that is not a partition: add the
    // table itself.
    let ancestors =
        format!("SELECT {relation} UNION ALL SELECT relid FROM pg_catalog.pg_partition_ancestors({relation})");
    let by_schema = if server_version >= 150_000 {
        format!(
            " OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_namespace pn \
               JOIN pg_catalog.pg_class a ON a.relnamespace = pn.pnnspid \
               WHERE pn.pnpubid = p.oid AND a.oid IN ({ancestors}))"
        )
    } else {
        String::new()
    };
    format!(
        "({relation} IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication p \
           WHERE p.pubname = {publication} AND (p.puballtables \
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr \
                        WHERE pr.prpubid = p.oid AND pr.prrelid IN ({ancestors})){by_schema})))"
    )
}

impl ServerFacts {
    pub async fn load(client: &Client, config: &Config, ctx: &Context) -> Result<ServerFacts, Error> {
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'),
                        COALESCE((SELECT pending_restart FROM pg_catalog.pg_settings WHERE name = 'wal_level'), false),
                        current_setting('max_replication_slots')::int,
                        (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
                        current_setting('max_wal_senders')::int,
                        (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int,
                        COALESCE((SELECT rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user), false),
                        EXISTS (SELECT 1 FROM pg_catalog.pg_roles
                                WHERE rolname = 'rds_replication' AND pg_catalog.pg_has_role(oid, 'MEMBER'))",
                &[],
            )
            .await?;
        let mut facts = ServerFacts {
            version: ctx.server_version,
            wal_level: row.get(0),
            wal_level_pending_restart: row.get(1),
            max_replication_slots: row.get(2),
            slot_count: row.get(3),
            max_wal_senders: row.get(4),
            wal_sender_count: row.get(5),
            has_replication: row.get(6),
            in_rds_replication: row.get(7),
            ..ServerFacts::default()
        };
        if facts.version < MIN_SERVER_VERSION {
            return Ok(facts);
        }
        facts.slot = client
            .query_opt(
                "SELECT slot_type::text, plugin::text, database::text, wal_status::text, active
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&config.slot_name()],
            )
            .await?
            .map(|row| SlotFacts {
                slot_type: row.get(0),
                plugin: row.get(1),
                database: row.get(2),
                wal_status: row.get(3),
                active: row.get(4),
            });
        facts.publication = client
            .query_opt(
                "SELECT puballtables, pubviaroot, pubinsert, pubupdate, pubdelete, pubtruncate,
                        pg_catalog.pg_has_role(pubowner, 'USAGE')
                 FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&config.publication_name()],
            )
            .await?
            .map(|row| PublicationFacts {
                all_tables: row.get(0),
                via_root: row.get(1),
                insert: row.get(2),
                update: row.get(3),
                delete: row.get(4),
                truncate: row.get(5),
                owned: row.get(6),
            });
        facts.watermarks = WatermarksFacts::load(client, config, ctx.server_version).await?;
        Ok(facts)
    }
}

/// Server-wide prerequisites: version, wal_level, replication privilege, slot, senders,
/// publication, watermarks table. Changes nothing.
pub async fn check_server(client: &Client, config: &Config, ctx: &Context) -> Result<Vec<Problem>, Error> {
    let facts = ServerFacts::load(client, config, ctx).await?;
    for advice in server_advice(config, &facts) {
        tracing::warn!(advice = %advice, "capture advice");
    }
    Ok(server_problems(ctx, config, &facts))
}

/// `server_version_num` as text: 120017 → "12.17", 90624 → "9.6.24".
fn version_text(version: i32) -> String {
    if version >= 100_000 {
        format!("{}.{}", version / 10_000, version % 10_000)
    } else {
        format!("{}.{}.{}", version / 10_000, version / 100 % 100, version % 100)
    }
}

/// The rules, without IO.
pub fn server_problems(ctx: &Context, config: &Config, facts: &ServerFacts) -> Vec<Problem> {
    if facts.version < MIN_SERVER_VERSION {
        return vec![Problem::without_fix(format!(
            "PostgreSQL {} is not supported: the minimum version is 13",
            version_text(facts.version)
        ))];
    }
    let mut settings = SettingFixes::default();
    let mut problems = Vec::new();
    problems.extend(wal_level_problem(ctx, facts, &mut settings));
    problems.extend(replication_role_problem(ctx, facts));
    problems.extend(slot_problem(ctx, config, facts, &mut settings));
    problems.extend(wal_sender_problem(ctx, facts, &mut settings));
    if settings.restart_needed {
        attach_restart(&mut problems);
    }
    problems.extend(publication_problems(ctx, config, facts));
    // A read-only capture writes no watermarks: it needs no watermarks table.
    if !config.read_only() {
        problems.extend(watermarks_problems(ctx, config, facts));
    }
    problems
}

/// Fixes that change server settings, remembering whether one needs a server restart.
#[derive(Default)]
struct SettingFixes {
    restart_needed: bool,
}

impl SettingFixes {
    fn fixes(&mut self, (statements, restart): (Vec<String>, bool)) -> Vec<(Step, String)> {
        self.restart_needed |= restart;
        statements.into_iter().map(|sql| (Step::ServerSetting, sql)).collect()
    }
}

/// `wal_level` must be `logical`.
fn wal_level_problem(ctx: &Context, facts: &ServerFacts, settings: &mut SettingFixes) -> Option<Problem> {
    if facts.wal_level == "logical" {
        return None;
    }
    let message = if facts.wal_level_pending_restart {
        format!(
            "logical replication isn't enabled: current wal_level = {:?} (a changed setting is waiting for a server restart)",
            facts.wal_level
        )
    } else {
        format!("logical replication isn't enabled: current wal_level = {:?}", facts.wal_level)
    };
    Some(ctx.problem(message, settings.fixes(ctx.platform.enable_logical_replication())))
}

/// The replication privilege (a superuser, or `rds_replication` on RDS, is enough).
fn replication_role_problem(ctx: &Context, facts: &ServerFacts) -> Option<Problem> {
    let can_replicate = ctx.is_superuser || facts.has_replication || facts.in_rds_replication;
    (!can_replicate).then(|| {
        ctx.problem(
            format!("user {:?} must have the REPLICATION role (or 'rds_replication' on RDS)", ctx.user),
            vec![(Step::Role, ctx.platform.grant_replication(&ctx.quoted_user()))],
        )
    })
}

/// The slot: present in this database with pgoutput, or creatable.
fn slot_problem(ctx: &Context, config: &Config, facts: &ServerFacts, settings: &mut SettingFixes) -> Option<Problem> {
    let slot = config.slot_name();
    let problem = match &facts.slot {
        Some(found) if found.slot_type != "logical" => ctx.problem(
            format!("replication slot {slot:?} is a {} slot, but the capture needs a logical one: use a different slot name or remove the existing slot", found.slot_type),
            vec![
                (Step::Slot, "-- drop the slot only if no standby uses it, or set advanced.slotName to another name instead".to_string()),
                (Step::Slot, drop_slot_sql(slot)),
            ],
        ),
        Some(found) if found.database.as_deref() != Some(ctx.database.as_str()) => ctx.problem(
            format!(
                "replication slot {slot:?} exists in database {:?}, but the configured database is {:?}: consider using a different slot name or removing the existing slot",
                found.database.clone().unwrap_or_default(),
                ctx.database
            ),
            vec![
                (Step::Slot, format!(
                    "-- drop the slot only if no capture of database {} uses it, or set advanced.slotName to another name instead",
                    quote_identifier(found.database.as_deref().unwrap_or_default())
                )),
                (Step::Slot, drop_slot_sql(slot)),
            ],
        ),
        Some(found) if found.plugin.as_deref() != Some("pgoutput") => ctx.problem(
            format!(
                "replication slot {slot:?} uses the output plugin {:?}, but the capture needs \"pgoutput\": use a different slot name or remove the existing slot",
                found.plugin.clone().unwrap_or_default()
            ),
            vec![
                (Step::Slot, "-- drop the slot only if nothing else reads from it, or set advanced.slotName to another name instead".to_string()),
                (Step::Slot, drop_slot_sql(slot)),
            ],
        ),
        Some(found) if found.wal_status.as_deref() == Some("lost") => ctx.problem(
            format!("replication slot {slot:?} was invalidated: the server removed WAL it still needed (wal_status = \"lost\")"),
            vec![
                (Step::Slot, "-- after dropping it, re-backfill every binding (increment each binding's backfill counter): the capture recreates the slot".to_string()),
                (Step::Slot, drop_slot_sql(slot)),
            ],
        ),
        Some(_) => return None,
        // As in the Go connector: the flag leaves the slot to the user, so it must exist.
        None if !config.creates_replication_slot() => ctx.problem(
            format!("replication slot {slot:?} does not exist and the 'no_create_replication_slot' feature flag is set"),
            vec![(
                Step::Slot,
                format!("SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput');", crate::pg::quote_literal(slot)),
            )],
        ),
        None if facts.slot_count >= facts.max_replication_slots => {
            let wanted = i64::from(facts.slot_count) + 1;
            ctx.problem(
                format!(
                    "replication slot {slot:?} does not exist and cannot be created: all {} replication slots are in use (max_replication_slots = {})",
                    facts.slot_count, facts.max_replication_slots
                ),
                settings.fixes(ctx.platform.raise_setting("max_replication_slots", wanted)),
            )
        }
        None => return None,
    };
    Some(problem)
}

/// A WAL sender for the replication connection (a running instance of this capture holds
/// one already, which its replacement takes over).
fn wal_sender_problem(ctx: &Context, facts: &ServerFacts, settings: &mut SettingFixes) -> Option<Problem> {
    let slot_in_use = facts.slot.as_ref().is_some_and(|s| s.active);
    if slot_in_use || facts.wal_sender_count < facts.max_wal_senders {
        return None;
    }
    let wanted = i64::from(facts.wal_sender_count) + 1;
    Some(ctx.problem(
        format!(
            "no WAL sender is free for the replication connection: {} of max_wal_senders = {} are in use",
            facts.wal_sender_count, facts.max_wal_senders
        ),
        settings.fixes(ctx.platform.raise_setting("max_wal_senders", wanted)),
    ))
}

/// The restart line, attached to the first problem whose fix is an `ALTER SYSTEM`
/// (`report` keeps one copy).
fn attach_restart(problems: &mut [Problem]) {
    let restart = "-- now restart PostgreSQL: these settings take effect only at server start".to_string();
    if let Some(problem) = problems
        .iter_mut()
        .find(|p| p.fixes.iter().any(|f| f.step == Step::ServerSetting && f.sql.starts_with("ALTER SYSTEM")))
    {
        problem.fixes.push(super::Fix { step: Step::Restart, sql: restart });
    }
}

/// The publication: present with every kind of change the capture needs, or creatable.
fn publication_problems(ctx: &Context, config: &Config, facts: &ServerFacts) -> Vec<Problem> {
    let mut problems = Vec::new();
    let publication = config.publication_name();
    let quoted_publication = quote_identifier(publication);
    let via_root = !config.raw.advanced.capture_as_partitions;
    match &facts.publication {
        // Created by apply, or by the capture, unless it may write nothing.
        None if ctx.can_create_publication && !config.read_only() => {}
        None => problems.push(ctx.problem(
            format!("publication {publication:?} does not exist"),
            vec![(
                Step::CreatePublication,
                if via_root {
                    format!("CREATE PUBLICATION {quoted_publication} WITH (publish_via_partition_root = true);")
                } else {
                    format!("CREATE PUBLICATION {quoted_publication};")
                },
            )],
        )),
        Some(found) => {
            if !(found.insert && found.update && found.delete) {
                problems.push(ctx.problem(
                    format!("publication {publication:?} does not publish every insert, update and delete"),
                    vec![(Step::AlterPublication, super::publication::publish_all_sql(publication))],
                ));
            } else if !found.truncate && config.raw.advanced.fail_on_truncate {
                problems.push(ctx.problem(
                    format!("publication {publication:?} does not publish TRUNCATE, so advanced.fail_on_truncate cannot notice one"),
                    vec![(Step::AlterPublication, super::publication::publish_all_sql(publication))],
                ));
            }
            if config.raw.advanced.capture_as_partitions && found.via_root {
                problems.push(ctx.problem(
                    format!("publication {publication:?} has publish_via_partition_root enabled, which can't be used with capture_as_partitions: changes of partitions would arrive under the partitioned table's name"),
                    vec![(Step::AlterPublication, format!("ALTER PUBLICATION {quoted_publication} SET (publish_via_partition_root = false);"))],
                ));
            }
        }
    }
    problems
}

/// Advice that does not stop the capture: a publication without TRUNCATE hides truncates
/// even from the warning the capture logs for each one.
pub fn server_advice(config: &Config, facts: &ServerFacts) -> Vec<String> {
    let publication = config.publication_name();
    match &facts.publication {
        Some(found) if !found.truncate && !config.raw.advanced.fail_on_truncate => vec![format!(
            "publication {publication:?} does not publish TRUNCATE: a truncated table's rows stay in the collection and nothing is logged. \
             To be warned (or, with advanced.fail_on_truncate, stopped), run: {}",
            super::publication::publish_all_sql(publication)
        )],
        _ => Vec::new(),
    }
}

/// Open a replication connection and run `IDENTIFY_SYSTEM`, the way the capture will.
/// Catches what the catalog cannot show: pg_hba.conf rules, and poolers that silently drop
/// the `replication` parameter.
pub async fn check_replication_connection(config: &Config) -> Vec<Problem> {
    let params = config.connect_params();
    let attempt = async {
        let mut client = crate::pg::replication::ReplicationClient::connect(&params).await?;
        client.identify_system().await.map(|_| ())
    };
    let result = match tokio::time::timeout(super::STATEMENT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => {
            return vec![Problem::without_fix(format!(
                "opening a replication connection did not finish within {} seconds",
                super::STATEMENT_TIMEOUT.as_secs()
            ))]
        }
    };
    let Err(err) = result else { return Vec::new() };
    // A pooler either refuses the `replication` startup parameter (PgBouncer) or drops it,
    // and then the server sees IDENTIFY_SYSTEM as plain SQL: a syntax error.
    let pooler = err.sqlstate() == Some("42601") || err.to_string().contains("unsupported startup parameter");
    let message = if pooler {
        format!(
            "the server at {:?} does not accept replication commands ({err}): the address is probably a connection pooler (PgBouncer, Supavisor, RDS Proxy); use the database's direct address",
            config.host
        )
    } else {
        match err.hint() {
            Some(hint) => format!("a replication connection to the server failed: {err} ({hint})"),
            None => format!("a replication connection to the server failed: {err}"),
        }
    };
    vec![Problem::without_fix(message)]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::validate::platform::Platform;
    use crate::validate::{report, script_of};
    use serde_json::json;

    pub(crate) fn context(platform: Platform) -> Context {
        Context {
            user: "flow_capture".into(),
            database: "shop".into(),
            server_version: 150_004,
            platform,
            is_superuser: false,
            bypasses_rls: false,
            can_create_publication: false,
        }
    }

    pub(crate) fn config() -> Config {
        Config::parse(&json!({"address": "db.example.com", "database": "shop", "credentials": {"auth_type": "UserPassword", "password": "pw"}})).unwrap()
    }

    /// A server where everything is in place.
    pub(crate) fn ready() -> ServerFacts {
        ServerFacts {
            version: 150_004,
            wal_level: "logical".into(),
            wal_level_pending_restart: false,
            max_replication_slots: 10,
            slot_count: 1,
            max_wal_senders: 10,
            wal_sender_count: 1,
            has_replication: true,
            in_rds_replication: false,
            slot: None,
            publication: Some(PublicationFacts {
                insert: true,
                update: true,
                delete: true,
                truncate: true,
                via_root: true,
                ..Default::default()
            }),
            watermarks: WatermarksFacts {
                schema_exists: true,
                schema_usage: true,
                schema_create: true,
                exists: true,
                owned: true,
                select: true,
                insert: true,
                update: true,
                unique_slot: true,
                published: true,
            },
        }
    }

    pub(crate) fn outcome(ctx: &Context, facts: &ServerFacts) -> (String, Vec<String>) {
        let problems = server_problems(ctx, &config(), facts);
        if problems.is_empty() {
            return (String::new(), Vec::new());
        }
        let err = report(&problems);
        let hint = err.hint().unwrap_or_default();
        (err.to_string(), script_of(&hint).into_iter().map(str::to_string).collect())
    }

    #[test]
    fn a_ready_server_has_no_problems() {
        assert!(server_problems(&context(Platform::SelfHosted), &config(), &ready()).is_empty());
    }

    #[test]
    fn a_fresh_self_hosted_server_gets_the_whole_script_in_order() {
        let facts = ServerFacts {
            wal_level: "replica".into(),
            has_replication: false,
            publication: None,
            watermarks: WatermarksFacts { schema_exists: true, ..Default::default() },
            ..ready()
        };
        let (message, script) = outcome(&context(Platform::SelfHosted), &facts);
        assert_eq!(
            message,
            "the capture cannot run due to the following error(s):\n \
             - logical replication isn't enabled: current wal_level = \"replica\"\n \
             - publication \"flow_publication\" does not exist\n \
             - the watermarks table \"public.flow_watermarks\" is not in publication \"flow_publication\" and couldn't be added automatically\n \
             - user \"flow_capture\" cannot create the watermarks table \"public.flow_watermarks\"\n \
             - user \"flow_capture\" must have the REPLICATION role (or 'rds_replication' on RDS)"
        );
        assert_eq!(
            script,
            [
                "-- as a superuser, connected to database \"shop\":",
                "ALTER SYSTEM SET wal_level = logical;",
                "-- now restart PostgreSQL: these settings take effect only at server start",
                "ALTER ROLE \"flow_capture\" WITH REPLICATION;",
                "GRANT USAGE ON SCHEMA \"public\" TO \"flow_capture\";",
                "CREATE TABLE IF NOT EXISTS \"public\".\"flow_watermarks\" (slot TEXT PRIMARY KEY, watermark TEXT);",
                "GRANT SELECT, INSERT, UPDATE ON TABLE \"public\".\"flow_watermarks\" TO \"flow_capture\";",
                "CREATE PUBLICATION \"flow_publication\" WITH (publish_via_partition_root = true);",
                "ALTER PUBLICATION \"flow_publication\" ADD TABLE \"public\".\"flow_watermarks\";",
            ]
        );
    }

    #[test]
    fn managed_platforms_get_their_own_settings_and_no_restart_line() {
        let facts = ServerFacts { wal_level: "replica".into(), has_replication: false, ..ready() };
        let (_, script) = outcome(&context(Platform::AmazonRds), &facts);
        assert_eq!(script.len(), 3, "{script:?}");
        assert!(script[0].contains("the master user"));
        assert!(script[1].contains("rds.logical_replication = 1"));
        assert_eq!(script[2], "GRANT rds_replication TO \"flow_capture\";");
        let (_, script) = outcome(&context(Platform::GoogleCloudSql), &facts);
        assert!(script[1].contains("cloudsql.logical_decoding = on"), "{script:?}");
        assert_eq!(script[2], "ALTER ROLE \"flow_capture\" WITH REPLICATION;");
    }

    #[test]
    fn rds_replication_membership_or_superuser_is_enough() {
        let facts = ServerFacts { has_replication: false, in_rds_replication: true, ..ready() };
        assert!(server_problems(&context(Platform::AmazonRds), &config(), &facts).is_empty());
        let superuser = Context { is_superuser: true, ..context(Platform::SelfHosted) };
        let facts = ServerFacts { has_replication: false, ..ready() };
        assert!(server_problems(&superuser, &config(), &facts).is_empty());
    }

    #[test]
    fn old_servers_are_refused_without_further_checks() {
        let facts = ServerFacts { version: 120_017, wal_level: "minimal".into(), ..ready() };
        let problems = server_problems(&context(Platform::SelfHosted), &config(), &facts);
        assert_eq!(problems, [Problem::without_fix("PostgreSQL 12.17 is not supported: the minimum version is 13")]);
    }

    #[test]
    fn slots_elsewhere_or_unusable_are_dropped_only_by_hand() {
        let ctx = context(Platform::SelfHosted);
        let elsewhere = SlotFacts {
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            database: Some("other".into()),
            ..Default::default()
        };
        let (message, script) = outcome(&ctx, &ServerFacts { slot: Some(elsewhere.clone()), ..ready() });
        assert!(
            message.contains(
                "replication slot \"flow_slot\" exists in database \"other\", but the configured database is \"shop\""
            ),
            "{message}"
        );
        assert_eq!(script[1], "-- drop the slot only if no capture of database \"other\" uses it, or set advanced.slotName to another name instead");
        assert_eq!(script[2], "SELECT pg_catalog.pg_drop_replication_slot('flow_slot');");
        let wal2json =
            SlotFacts { plugin: Some("wal2json".into()), database: Some("shop".into()), ..elsewhere.clone() };
        let (message, _) = outcome(&ctx, &ServerFacts { slot: Some(wal2json), ..ready() });
        assert!(message.contains("uses the output plugin \"wal2json\""), "{message}");
        let lost = SlotFacts { database: Some("shop".into()), wal_status: Some("lost".into()), ..elsewhere.clone() };
        let (message, _) = outcome(&ctx, &ServerFacts { slot: Some(lost), ..ready() });
        assert!(message.contains("was invalidated"), "{message}");
        let fine = SlotFacts { database: Some("shop".into()), wal_status: Some("reserved".into()), ..elsewhere };
        assert!(server_problems(&ctx, &config(), &ServerFacts { slot: Some(fine), ..ready() }).is_empty());
    }

    #[test]
    fn a_missing_slot_is_a_problem_only_when_the_user_manages_slots() {
        let ctx = context(Platform::SelfHosted);
        assert!(server_problems(&ctx, &config(), &ready()).is_empty());
        let mut cfg = config();
        cfg.flags.create_replication_slot = false;
        let problems = server_problems(&ctx, &cfg, &ready());
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].message,
            "replication slot \"flow_slot\" does not exist and the 'no_create_replication_slot' feature flag is set"
        );
        assert!(problems[0]
            .fixes
            .iter()
            .any(|f| f.sql == "SELECT pg_catalog.pg_create_logical_replication_slot('flow_slot', 'pgoutput');"));
    }

    #[test]
    fn full_slots_and_senders_ask_for_one_more() {
        let facts =
            ServerFacts { slot_count: 4, max_replication_slots: 4, wal_sender_count: 4, max_wal_senders: 4, ..ready() };
        let (message, script) = outcome(&context(Platform::SelfHosted), &facts);
        assert!(message.contains("all 4 replication slots are in use (max_replication_slots = 4)"), "{message}");
        assert!(message.contains("no WAL sender is free"), "{message}");
        assert_eq!(
            script[1..],
            [
                "ALTER SYSTEM SET max_replication_slots = 5;",
                "ALTER SYSTEM SET max_wal_senders = 5;",
                "-- now restart PostgreSQL: these settings take effect only at server start",
            ]
        );
        // An existing, active slot means this capture already holds a sender.
        let active = SlotFacts {
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            database: Some("shop".into()),
            active: true,
            ..Default::default()
        };
        let facts = ServerFacts { slot: Some(active), wal_sender_count: 4, max_wal_senders: 4, ..ready() };
        assert!(server_problems(&context(Platform::SelfHosted), &config(), &facts).is_empty());
    }

    #[test]
    fn a_publication_the_user_may_create_is_not_a_problem() {
        let ctx = Context { can_create_publication: true, ..context(Platform::SelfHosted) };
        let facts = ServerFacts {
            publication: None,
            watermarks: WatermarksFacts { published: false, ..ready().watermarks },
            ..ready()
        };
        assert!(server_problems(&ctx, &config(), &facts).is_empty());
    }

    #[test]
    fn a_read_only_capture_needs_no_watermarks_table_and_creates_no_publication() {
        let read_only = Config::parse(&json!({"address": "db.example.com", "database": "shop",
            "credentials": {"auth_type": "UserPassword", "password": "pw"}, "advanced": {"read_only_capture": true}}))
        .unwrap();
        let ctx = context(Platform::SelfHosted);
        // No watermarks table, and no right to create one: fine when nothing is written.
        let facts = ServerFacts { watermarks: WatermarksFacts::default(), ..ready() };
        assert!(!server_problems(&ctx, &config(), &facts).is_empty(), "a writing capture needs the table");
        assert!(server_problems(&ctx, &read_only, &facts).is_empty());
        // A missing publication is a problem even for a user who may create it.
        let ctx = Context { can_create_publication: true, ..ctx };
        let facts = ServerFacts { publication: None, ..facts };
        let problems = server_problems(&ctx, &read_only, &facts);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].message, "publication \"flow_publication\" does not exist");
        assert_eq!(
            problems[0].fixes[0].sql,
            "CREATE PUBLICATION \"flow_publication\" WITH (publish_via_partition_root = true);"
        );
    }

    #[test]
    fn publication_options_must_fit_the_capture() {
        let ctx = context(Platform::SelfHosted);
        let inserts_only = PublicationFacts { insert: true, truncate: true, ..Default::default() };
        let (_, script) = outcome(&ctx, &ServerFacts { publication: Some(inserts_only), ..ready() });
        assert_eq!(
            script[1],
            "ALTER PUBLICATION \"flow_publication\" SET (publish = 'insert, update, delete, truncate');"
        );
        let no_truncate = PublicationFacts { truncate: false, ..ready().publication.unwrap() };
        let facts = ServerFacts { publication: Some(no_truncate), ..ready() };
        assert!(server_problems(&ctx, &config(), &facts).is_empty());
        assert_eq!(server_advice(&config(), &facts).len(), 1);
        let mut strict = config();
        strict.raw.advanced.fail_on_truncate = true;
        let problems = server_problems(&ctx, &strict, &facts);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("does not publish TRUNCATE"), "{}", problems[0].message);
        assert!(server_advice(&strict, &facts).is_empty());
        let mut cfg = config();
        cfg.raw.advanced.capture_as_partitions = true;
        let problems = server_problems(&ctx, &cfg, &ready());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("capture_as_partitions"));
        assert!(problems[0]
            .fixes
            .iter()
            .any(|f| f.sql == "ALTER PUBLICATION \"flow_publication\" SET (publish_via_partition_root = false);"));
    }

    #[test]
    fn published_sql_covers_schema_publications_from_15_on() {
        assert!(published_sql(150_000, "c.oid", "$3").contains("pg_publication_namespace"));
        assert!(!published_sql(140_000, "c.oid", "$3").contains("pg_publication_namespace"));
    }
}
