//! Which kind of server we are talking to, so that a fix can name the platform's own
//! setting instead of a `postgresql.conf` line the user cannot edit.
//!
//! The address decides first (a managed service's host names are distinctive); otherwise
//! the server gives itself away by settings and roles only the platform creates
//! (`rds.extensions`, `cloudsql.iam_authentication`, `azure_pg_admin`, ...). Detection is
//! pure: [`PlatformHints`] are gathered by one query in the caller.

/// Where the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    SelfHosted,
    /// Amazon RDS for PostgreSQL and Aurora PostgreSQL.
    AmazonRds,
    GoogleCloudSql,
    Azure,
    Supabase,
    Neon,
}

/// Server-side signs of a managed platform: names of platform-only settings and roles
/// that exist on this server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformHints {
    pub settings: Vec<String>,
    pub roles: Vec<String>,
}

/// Settings whose mere existence identifies a platform.
pub(crate) const HINT_SETTINGS: [&str; 5] =
    ["rds.extensions", "cloudsql.iam_authentication", "azure.extensions", "neon.tenant_id", "neon.timeline_id"];

/// Roles whose existence identifies a platform.
pub(crate) const HINT_ROLES: [&str; 6] =
    ["rds_superuser", "rds_replication", "cloudsqlsuperuser", "azure_pg_admin", "supabase_admin", "neon_superuser"];

impl Platform {
    /// Recognize the platform from the configured host name and the server's hints.
    pub fn detect(host: &str, hints: &PlatformHints) -> Platform {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let by_host = [
            (".rds.amazonaws.com", Platform::AmazonRds),
            (".rds.amazonaws.com.cn", Platform::AmazonRds),
            (".postgres.database.azure.com", Platform::Azure),
            (".supabase.co", Platform::Supabase),
            (".supabase.com", Platform::Supabase),
            (".neon.tech", Platform::Neon),
            (".cloudsql.goog", Platform::GoogleCloudSql),
        ];
        if let Some((_, platform)) = by_host.iter().find(|(suffix, _)| host.ends_with(suffix)) {
            return *platform;
        }
        if host.starts_with("/cloudsql/") {
            return Platform::GoogleCloudSql;
        }
        let setting = |name: &str| hints.settings.iter().any(|s| s == name);
        let role = |name: &str| hints.roles.iter().any(|r| r == name);
        if setting("rds.extensions") || role("rds_superuser") {
            Platform::AmazonRds
        } else if setting("cloudsql.iam_authentication") || role("cloudsqlsuperuser") {
            Platform::GoogleCloudSql
        } else if setting("azure.extensions") || role("azure_pg_admin") {
            Platform::Azure
        } else if role("supabase_admin") {
            Platform::Supabase
        } else if setting("neon.tenant_id") || setting("neon.timeline_id") || role("neon_superuser") {
            Platform::Neon
        } else {
            Platform::SelfHosted
        }
    }

    /// The platform's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Platform::SelfHosted => "self-hosted PostgreSQL",
            Platform::AmazonRds => "Amazon RDS / Aurora",
            Platform::GoogleCloudSql => "Google Cloud SQL",
            Platform::Azure => "Azure Database for PostgreSQL",
            Platform::Supabase => "Supabase",
            Platform::Neon => "Neon",
        }
    }

    /// Who should run the remediation SQL.
    pub fn admin(self) -> &'static str {
        match self {
            Platform::SelfHosted => "a superuser",
            Platform::AmazonRds => "the master user (a member of rds_superuser)",
            Platform::GoogleCloudSql => "the postgres user (a member of cloudsqlsuperuser)",
            Platform::Azure => "the server admin (a member of azure_pg_admin)",
            Platform::Supabase => "the postgres user",
            Platform::Neon => "the project's owner role (a member of neon_superuser)",
        }
    }

    /// The statements (SQL or SQL comments) that enable logical decoding here. The second
    /// value says whether a restart (that the user performs) must follow `ALTER SYSTEM`.
    pub fn enable_logical_replication(self) -> (Vec<String>, bool) {
        let comment = |text: &str| (vec![format!("-- {text}")], false);
        match self {
            Platform::SelfHosted => (vec!["ALTER SYSTEM SET wal_level = logical;".to_string()], true),
            Platform::AmazonRds => comment(
                "Amazon RDS / Aurora: set rds.logical_replication = 1 in the DB parameter group \
                 (the DB cluster parameter group on Aurora), then reboot the instance",
            ),
            Platform::GoogleCloudSql => comment(
                "Google Cloud SQL: set the database flag cloudsql.logical_decoding = on \
                 (the instance restarts)",
            ),
            Platform::Azure => comment(
                "Azure Database for PostgreSQL: set the server parameter wal_level = logical \
                 (azure.replication_support = logical on Single Server), then restart the server",
            ),
            Platform::Supabase => comment(
                "Supabase: logical replication is on for the direct database address; \
                 connect to db.<project>.supabase.co:5432, not a pooler",
            ),
            Platform::Neon => comment(
                "Neon: enable logical replication in the project settings \
                 (Settings > Logical Replication); this cannot be undone",
            ),
        }
    }

    /// How to raise a server setting that needs a restart (`max_replication_slots`,
    /// `max_wal_senders`) to `value`. The bool says whether a restart must follow.
    pub fn raise_setting(self, name: &str, value: i64) -> (Vec<String>, bool) {
        let comment = |text: String| (vec![format!("-- {text}")], false);
        match self {
            Platform::SelfHosted => (vec![format!("ALTER SYSTEM SET {name} = {value};")], true),
            Platform::AmazonRds => comment(format!(
                "Amazon RDS / Aurora: set {name} = {value} in the DB parameter group, then reboot the instance"
            )),
            Platform::GoogleCloudSql => {
                comment(format!("Google Cloud SQL: set the database flag {name} = {value} (the instance restarts)"))
            }
            Platform::Azure => comment(format!(
                "Azure Database for PostgreSQL: set the server parameter {name} = {value}, then restart the server"
            )),
            Platform::Supabase | Platform::Neon => comment(format!(
                "{}: {name} cannot be raised here; drop replication slots that are no longer used \
                 (see pg_replication_slots)",
                self.name()
            )),
        }
    }

    /// The statement that gives `role` the right to stream logical replication.
    pub fn grant_replication(self, quoted_role: &str) -> String {
        match self {
            Platform::AmazonRds => format!("GRANT rds_replication TO {quoted_role};"),
            _ => format!("ALTER ROLE {quoted_role} WITH REPLICATION;"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(settings: &[&str], roles: &[&str]) -> PlatformHints {
        PlatformHints {
            settings: settings.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn platforms_are_recognized_by_address_first() {
        let none = PlatformHints::default();
        for (host, platform) in [
            ("mydb.abc123.us-east-1.rds.amazonaws.com", Platform::AmazonRds),
            ("c.cluster-abc.eu-west-1.rds.amazonaws.com.", Platform::AmazonRds),
            ("my-server.postgres.database.azure.com", Platform::Azure),
            ("db.abcdefgh.supabase.co", Platform::Supabase),
            ("ep-cool-name-123.us-east-2.aws.neon.tech", Platform::Neon),
            ("/cloudsql/project:region:instance", Platform::GoogleCloudSql),
            ("db.internal", Platform::SelfHosted),
            ("10.0.0.5", Platform::SelfHosted),
        ] {
            assert_eq!(Platform::detect(host, &none), platform, "{host}");
        }
        // The address wins over server hints.
        assert_eq!(Platform::detect("x.neon.tech", &hints(&["rds.extensions"], &[])), Platform::Neon);
    }

    #[test]
    fn platforms_are_recognized_by_server_settings_and_roles() {
        for (hints, platform) in [
            (hints(&["rds.extensions"], &[]), Platform::AmazonRds),
            (hints(&[], &["rds_superuser", "rds_replication"]), Platform::AmazonRds),
            (hints(&["cloudsql.iam_authentication"], &[]), Platform::GoogleCloudSql),
            (hints(&[], &["cloudsqlsuperuser"]), Platform::GoogleCloudSql),
            (hints(&[], &["azure_pg_admin"]), Platform::Azure),
            (hints(&[], &["supabase_admin"]), Platform::Supabase),
            (hints(&["neon.tenant_id"], &[]), Platform::Neon),
            (hints(&[], &[]), Platform::SelfHosted),
        ] {
            assert_eq!(Platform::detect("10.1.2.3", &hints), platform, "{hints:?}");
        }
    }

    #[test]
    fn fixes_use_the_platforms_own_setting_names() {
        let text = |platform: Platform| platform.enable_logical_replication().0.join("\n");
        assert_eq!(
            Platform::SelfHosted.enable_logical_replication(),
            (vec!["ALTER SYSTEM SET wal_level = logical;".to_string()], true)
        );
        assert!(text(Platform::AmazonRds).contains("rds.logical_replication = 1"));
        assert!(text(Platform::GoogleCloudSql).contains("cloudsql.logical_decoding = on"));
        assert!(text(Platform::Azure).contains("azure.replication_support = logical"));
        assert!(text(Platform::Neon).contains("Logical Replication"));
        assert!(text(Platform::Supabase).contains("db.<project>.supabase.co:5432"));
        for platform in
            [Platform::AmazonRds, Platform::GoogleCloudSql, Platform::Azure, Platform::Supabase, Platform::Neon]
        {
            assert!(text(platform).starts_with("-- "), "managed platforms get comments, not ALTER SYSTEM");
        }
        assert_eq!(Platform::AmazonRds.grant_replication("\"u\""), "GRANT rds_replication TO \"u\";");
        assert_eq!(Platform::Azure.grant_replication("\"u\""), "ALTER ROLE \"u\" WITH REPLICATION;");
        assert_eq!(
            Platform::SelfHosted.raise_setting("max_wal_senders", 11),
            (vec!["ALTER SYSTEM SET max_wal_senders = 11;".to_string()], true)
        );
    }
}
