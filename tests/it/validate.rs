//! The setup assistant: for each failing prerequisite, validation prints the SQL that fixes
//! it; the tests run that SQL exactly as printed, then validate again and expect success.
//!
//! Scenarios that need a server of their own (a fresh install with `wal_level=replica`,
//! restarted mid-test) use a [`ScratchCluster`]; the rest use the shared cluster of
//! [`harness`] with a database per test. The readable, reviewed outputs are insta snapshots.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::harness::{self, describe_pg_error, run_connector, ConnectorOutput, TestDb};

// ---------------------------------------------------------------------------------------
// Driving the connector.

/// A `validate` request for bindings `(namespace, stream)`, each keyed by `/id`.
fn validate_line(config: &Value, tables: &[(&str, &str)]) -> String {
    let bindings: Vec<Value> = tables
        .iter()
        .map(|(namespace, stream)| {
            json!({
                "resourceConfig": {"namespace": namespace, "stream": stream},
                "collection": {"name": format!("tests/{stream}"), "key": ["/id"]},
                "backfill": 0
            })
        })
        .collect();
    json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": config, "bindings": bindings}})
        .to_string()
}

fn apply_line(config: &Value, tables: &[(&str, &str)]) -> String {
    let bindings: Vec<Value> = tables
        .iter()
        .map(|(namespace, stream)| {
            json!({
                "resourceConfig": {"namespace": namespace, "stream": stream},
                "resourcePath": [namespace, stream],
                "collection": {"name": format!("tests/{stream}"), "key": ["/id"]},
                "stateKey": format!("{namespace}%2F{stream}")
            })
        })
        .collect();
    json!({"apply": {"capture": {"name": "tests/capture", "config": config, "bindings": bindings}, "version": "v1"}})
        .to_string()
}

fn run_line(line: &str) -> ConnectorOutput {
    run_connector(&[], &format!("{line}\n"), &[])
}

/// The `msg` of the last stderr line, which must be a JSON error line.
fn error_text(output: &ConnectorOutput) -> String {
    assert_eq!(
        output.exit_code, 1,
        "expected a failure\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout, output.stderr
    );
    let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty()).expect("an error line");
    let line: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {last}"));
    assert_eq!(line["level"], "error", "{last}");
    line["msg"].as_str().expect("msg").to_string()
}

/// The remediation script from an error text: the lines after the hint's first line.
fn script_of(error: &str) -> Vec<String> {
    let (_, hint) = error.split_once("\nHINT: ").unwrap_or_else(|| panic!("no hint in: {error}"));
    hint.lines().skip(1).map(str::to_string).collect()
}

fn assert_validated(output: &ConnectorOutput, tables: &[(&str, &str)]) {
    assert_eq!(
        output.exit_code, 0,
        "validation failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout, output.stderr
    );
    let response: Value = serde_json::from_str(output.stdout.trim()).expect("one JSON response");
    let expected: Vec<Value> = tables.iter().map(|(n, s)| json!({"resourcePath": [n, s]})).collect();
    assert_eq!(response, json!({"validated": {"bindings": expected}}));
}

/// Runs each statement of `script` separately (as psql would), as `client`'s user.
/// Comment lines are skipped; none may ask for a restart (the shared cluster stays up).
async fn run_script(client: &tokio_postgres::Client, script: &[String]) {
    for line in script {
        if line.starts_with("--") {
            assert!(!line.contains("restart PostgreSQL"), "no restart expected: {line}");
            continue;
        }
        if let Err(e) = client.batch_execute(line).await {
            panic!("the printed statement failed: {line}\n{}", describe_pg_error(&e));
        }
    }
}

/// Validation fails with `expected` problems; running the printed script as superuser
/// makes it pass. Returns the error text for a snapshot.
async fn fix_and_revalidate(db: &TestDb, config: &Value, tables: &[(&str, &str)]) -> String {
    let error = error_text(&run_line(&validate_line(config, tables)));
    let script = script_of(&error);
    let admin = db.superuser_client().await;
    run_script(&admin, &script).await;
    assert_validated(&run_line(&validate_line(config, tables)), tables);
    harness::normalize(&error)
}

// ---------------------------------------------------------------------------------------
// A server of its own.

/// A throwaway PostgreSQL server with default settings (`wal_level=replica`), for tests
/// that restart it.
///
/// `pg_ctl` starts and restarts it (with its output in a log file: a server that inherited
/// a pipe of ours would keep it open). A watchdog shell, whose stdin is a pipe only this
/// process holds, stops the server and deletes its directory when the pipe closes: on
/// drop, or when the test process dies however it dies.
struct ScratchCluster {
    dir: PathBuf,
    port: u16,
    bindir: PathBuf,
    owner: Option<(u32, u32)>,
    password: String,
    watchdog: std::process::Child,
}

const WATCHDOG_SCRIPT: &str = r#"
cat >/dev/null
"$0" -D "$1/data" -m immediate -w stop >/dev/null 2>&1
rm -rf "$1"
"#;

impl ScratchCluster {
    /// Starts a server with `settings` (`name=value`) on top of the defaults.
    async fn start(settings: &[&str]) -> ScratchCluster {
        let bindir = harness::cluster().await.bindir.clone();
        let owner = postgres_owner();
        let dir = tempfile::Builder::new().prefix("validate-scratch-").tempdir().expect("temporary directory").keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the scratch directory");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg(bindir.join("pg_ctl"))
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        as_owner(&mut watchdog, owner);
        let watchdog = watchdog.spawn().expect("start the watchdog");
        let cluster = ScratchCluster { dir, port, bindir, owner, password: "scratch-superuser".into(), watchdog };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "--username=postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", cluster.port, cluster.dir.display());
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        cluster
            .run("pg_ctl", &["-D", &cluster.data(), "-l", &cluster.log(), "-o", &options, "-w", "-t", "60", "start"]);
        let mut config = tokio_postgres::Config::new();
        config.host_path(&cluster.dir).port(port).user("postgres").dbname("postgres");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("connect over the socket");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{}'", cluster.password))
            .await
            .expect("set the password");
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_string()
    }

    fn log(&self) -> String {
        self.dir.join("postgres.log").to_str().unwrap().to_string()
    }

    /// Runs a PostgreSQL program as the server's owner; its output goes to the log file.
    fn run(&self, program: &str, args: &[&str]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).expect("open the log");
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(self.log(), Some(uid), Some(gid));
        }
        let mut command = Command::new(self.bindir.join(program));
        command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        as_owner(&mut command, self.owner);
        let status = command.status().unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            status.success(),
            "{program} failed ({status}):\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// `pg_ctl restart` keeps the command-line options of the running server.
    fn restart(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-l", &self.log(), "-w", "-t", "60", "-m", "fast", "restart"]);
    }

    async fn superuser(&self, database: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(self.port).user("postgres").password(&self.password).dbname(database);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the scratch cluster: {}", describe_pg_error(&e)));
        tokio::spawn(connection);
        client
    }

    /// Runs a printed script as a user would in psql: statement by statement, as superuser
    /// in `database`, restarting the server (and reconnecting) where it says so. Returns the
    /// number of restarts.
    async fn run_script(&self, database: &str, script: &[String]) -> usize {
        let mut restarts = 0;
        let mut client = None;
        for line in script {
            if line.starts_with("--") {
                if line.contains("restart PostgreSQL") {
                    drop(client.take());
                    self.restart();
                    restarts += 1;
                }
                continue;
            }
            if client.is_none() {
                client = Some(self.superuser(database).await);
            }
            if let Err(e) = client.as_ref().unwrap().batch_execute(line).await {
                panic!("the printed statement failed: {line}\n{}", describe_pg_error(&e));
            }
        }
        restarts
    }

    fn endpoint_config(&self, database: &str, user: &str, password: &str) -> Value {
        json!({
            "address": format!("127.0.0.1:{}", self.port),
            "user": user,
            "credentials": {"auth_type": "UserPassword", "password": password},
            "database": database,
            "advanced": {"sslmode": "disable"},
        })
    }

    /// Hides this cluster's port in text for snapshots.
    fn normalize(&self, text: &str) -> String {
        harness::normalize(&text.replace(&self.port.to_string(), "<port>"))
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid).env("HOME", "/tmp").env("USER", "postgres");
    }
}

/// When running as root, the uid and gid of the `postgres` OS user.
fn postgres_owner() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id").args([flag, "postgres"]).output().expect("run id");
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("running as root needs a postgres OS user")
    };
    Some((id("-u"), id("-g")))
}

/// Runs `source-postgres preview` over a one-binding catalog; returns stdout.
fn preview(work: &Path, config: &Value, namespace: &str, stream: &str) -> String {
    let catalog = json!({
        "captures": {"tests/capture": {
            "endpoint": {"local": {"command": [harness::connector_path()], "config": config}},
            "bindings": [{"resource": {"namespace": namespace, "stream": stream}, "target": format!("tests/{stream}")}],
        }}
    });
    let path = work.join("catalog.json");
    std::fs::write(&path, catalog.to_string()).unwrap();
    let state = work.join("state.json");
    let output = run_connector(
        &["preview", "--source", path.to_str().unwrap(), "--state-file", state.to_str().unwrap(), "--until-idle"],
        "",
        &[],
    );
    assert_eq!(
        output.exit_code, 0,
        "the capture failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout, output.stderr
    );
    output.stdout
}

// ---------------------------------------------------------------------------------------
// The acceptance test.

/// On a server set up with nothing (a fresh `initdb`: `wal_level=replica`, a login role
/// with no privileges, no publication), the printed SQL, executed in order, is all a user
/// needs before the capture runs.
#[tokio::test]
async fn a_fresh_server_needs_only_the_printed_sql() {
    let cluster = ScratchCluster::start(&[]).await;
    let admin = cluster.superuser("postgres").await;
    for statement in ["CREATE ROLE flow_capture LOGIN PASSWORD 'secret1234'", "CREATE DATABASE shop"] {
        admin.batch_execute(statement).await.expect("set up the role and database");
    }
    let shop = cluster.superuser("shop").await;
    shop.batch_execute(
        "CREATE SCHEMA \"Sales\";
         CREATE TABLE \"Sales\".\"Orders\" (id int PRIMARY KEY, item text);
         INSERT INTO \"Sales\".\"Orders\" VALUES (1, 'apple'), (2, 'pear');",
    )
    .await
    .expect("create the table");
    let config = cluster.endpoint_config("shop", "flow_capture", "secret1234");
    let tables = [("Sales", "Orders")];

    let output = run_line(&validate_line(&config, &tables));
    let error = error_text(&output);
    assert!(!output.stderr.contains("secret1234"), "the password was logged");
    insta::assert_snapshot!("fresh_server_error", cluster.normalize(&error));

    drop(shop);
    assert_eq!(cluster.run_script("shop", &script_of(&error)).await, 1, "one restart");

    assert_validated(&run_line(&validate_line(&config, &tables)), &tables);
    let applied = run_line(&apply_line(&config, &tables));
    assert_eq!(applied.exit_code, 0, "{}", applied.stderr);
    assert_eq!(applied.stdout.trim(), r#"{"applied":{}}"#, "nothing is left for apply to do");

    let work = tempfile::tempdir().unwrap();
    let backfill = preview(work.path(), &config, "Sales", "Orders");
    assert!(backfill.contains(r#""item":"apple""#) && backfill.contains(r#""item":"pear""#), "{backfill}");
    let shop = cluster.superuser("shop").await;
    shop.batch_execute("INSERT INTO \"Sales\".\"Orders\" VALUES (3, 'plum')").await.unwrap();
    let changes = preview(work.path(), &config, "Sales", "Orders");
    assert!(changes.contains(r#""item":"plum""#) && !changes.contains("apple"), "{changes}");
}

/// When every replication slot is taken, validation asks for one more (a restart-only
/// setting); after the printed SQL and the restart, validation passes.
#[tokio::test]
async fn full_replication_slots_are_raised_by_one() {
    // Set in postgresql.auto.conf, not on the command line, which ALTER SYSTEM can't override.
    let cluster = ScratchCluster::start(&[]).await;
    let admin = cluster.superuser("postgres").await;
    for statement in ["ALTER SYSTEM SET wal_level = logical", "ALTER SYSTEM SET max_replication_slots = 1"] {
        admin.batch_execute(statement).await.expect("configure");
    }
    drop(admin);
    cluster.restart();
    let admin = cluster.superuser("postgres").await;
    admin
        .batch_execute(
            "CREATE ROLE flow_capture LOGIN REPLICATION PASSWORD 'secret1234';
             GRANT CREATE ON SCHEMA public TO flow_capture;
             CREATE TABLE public.items (id int PRIMARY KEY);
             GRANT SELECT ON public.items TO flow_capture;
             CREATE PUBLICATION flow_publication FOR ALL TABLES;",
        )
        .await
        .expect("set up");
    admin
        .batch_execute("SELECT pg_create_logical_replication_slot('someone_elses', 'pgoutput')")
        .await
        .expect("take the only slot");
    let config = cluster.endpoint_config("postgres", "flow_capture", "secret1234");
    let tables = [("public", "items")];
    let error = error_text(&run_line(&validate_line(&config, &tables)));
    insta::assert_snapshot!("full_replication_slots", cluster.normalize(&error));
    assert_eq!(cluster.run_script("postgres", &script_of(&error)).await, 1);
    assert_validated(&run_line(&validate_line(&config, &tables)), &tables);
}

/// A server that looks like Amazon RDS (it has the `rds_superuser` and `rds_replication`
/// roles) gets RDS wording: the master user, the parameter group, no `ALTER SYSTEM`, and
/// membership in `rds_replication` counts as the replication privilege.
#[tokio::test]
async fn an_rds_like_server_gets_parameter_group_advice() {
    let cluster = ScratchCluster::start(&[]).await;
    let admin = cluster.superuser("postgres").await;
    admin
        .batch_execute(
            "CREATE ROLE rds_superuser; CREATE ROLE rds_replication;
             CREATE ROLE flow_capture LOGIN PASSWORD 'secret1234';
             CREATE TABLE public.items (id int PRIMARY KEY);
             GRANT SELECT ON public.items TO flow_capture;
             CREATE PUBLICATION flow_publication FOR ALL TABLES;
             CREATE TABLE public.flow_watermarks (slot TEXT PRIMARY KEY, watermark TEXT);
             GRANT SELECT, INSERT, UPDATE ON public.flow_watermarks TO flow_capture;",
        )
        .await
        .expect("set up");
    let config = cluster.endpoint_config("postgres", "flow_capture", "secret1234");
    let tables = [("public", "items")];
    let error = error_text(&run_line(&validate_line(&config, &tables)));
    insta::assert_snapshot!("rds_like_server", cluster.normalize(&error));
    admin.batch_execute("GRANT rds_replication TO flow_capture").await.unwrap();
    let error = error_text(&run_line(&validate_line(&config, &tables)));
    assert!(!error.contains("REPLICATION role"), "rds_replication membership counts: {error}");
}

// ---------------------------------------------------------------------------------------
// Failing prerequisites on the shared cluster.

#[tokio::test]
async fn a_user_without_replication_is_told_to_get_it() {
    let db = TestDb::create("validate_user_without_replication").await;
    db.execute(
        "DO $$ BEGIN
           IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'validate_norepl') THEN
             DROP OWNED BY validate_norepl; DROP ROLE validate_norepl;
           END IF;
         END $$;
         CREATE ROLE validate_norepl LOGIN PASSWORD 'norepl-password';
         CREATE TABLE test.items (id int PRIMARY KEY);",
    )
    .await;
    let mut config = db.endpoint_config();
    config["user"] = json!("validate_norepl");
    config["credentials"]["password"] = json!("norepl-password");
    let error = fix_and_revalidate(&db, &config, &[("test", "items")]).await;
    insta::assert_snapshot!("user_without_replication", error.replace(&db.name, "<db>"));
    db.execute("DROP OWNED BY validate_norepl").await;
}

#[tokio::test]
async fn a_slot_in_another_database_is_reported_with_its_drop() {
    let other = TestDb::create("validate_slot_elsewhere_other").await;
    let db = TestDb::create("validate_slot_elsewhere").await;
    db.execute("CREATE TABLE test.items (id int PRIMARY KEY);").await;
    other
        .superuser_client()
        .await
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&db.slot_name()])
        .await
        .expect("create the slot in the other database");
    let error = fix_and_revalidate(&db, &db.endpoint_config(), &[("test", "items")]).await;
    insta::assert_snapshot!(
        "slot_in_another_database",
        error.replace(&other.name, "<other db>").replace(&db.name, "<db>").replace(&db.slot_name(), "<slot>")
    );
}

#[tokio::test]
async fn missing_privileges_tables_and_publication_membership_are_fixed_in_order() {
    let db = TestDb::create("validate_privileges_and_membership").await;
    db.execute(
        "DROP PUBLICATION flow_publication;
         CREATE PUBLICATION flow_publication;
         REVOKE CREATE ON SCHEMA public FROM flow_capture;
         CREATE SCHEMA \"Odd \"\"Schema\"\"; x\";
         CREATE TABLE \"Odd \"\"Schema\"\"; x\".\"Tåble; DROP TABLE y\" (id int PRIMARY KEY);
         CREATE TABLE test.keyless (id int, note text);
         CREATE UNLOGGED TABLE test.scratch (id int PRIMARY KEY);
         CREATE TABLE test.secret (id int PRIMARY KEY);
         ALTER TABLE test.secret ENABLE ROW LEVEL SECURITY;
         REVOKE SELECT ON test.secret FROM flow_capture;",
    )
    .await;
    let tables = [
        ("Odd \"Schema\"; x", "Tåble; DROP TABLE y"),
        ("test", "keyless"),
        ("test", "scratch"),
        ("test", "secret"),
        ("test", "missing"),
    ];
    let config = db.endpoint_config();
    let error = error_text(&run_line(&validate_line(&config, &tables)));
    insta::assert_snapshot!("privileges_and_membership", harness::normalize(&error).replace(&db.name, "<db>"));
    // Everything but the missing table is fixed by the script.
    let admin = db.superuser_client().await;
    run_script(&admin, &script_of(&error)).await;
    let tables = &tables[..4];
    assert_validated(&run_line(&validate_line(&config, tables)), tables);
    // The user never got BYPASSRLS for good: the script's ALTER ROLE is shared cluster state.
    admin.batch_execute("ALTER ROLE flow_capture NOBYPASSRLS").await.unwrap();
}

/// No publication, and a capture user that may create one (and the watermarks table) and
/// owns its one table `test.mine`.
async fn with_nothing_the_user_cannot_create(db: &TestDb) {
    db.execute(
        "DROP PUBLICATION flow_publication;
         DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO flow_capture', current_database()); END $$;
         CREATE TABLE test.mine (id int PRIMARY KEY);
         ALTER TABLE test.mine OWNER TO flow_capture;",
    )
    .await;
}

#[tokio::test]
async fn apply_creates_what_the_user_may_and_is_idempotent() {
    let db = TestDb::create("validate_apply_is_idempotent").await;
    with_nothing_the_user_cannot_create(&db).await;
    let config = db.endpoint_config();
    let tables = [("test", "mine")];
    // Nothing is missing that the user cannot create itself.
    assert_validated(&run_line(&validate_line(&config, &tables)), &tables);
    let first = run_line(&apply_line(&config, &tables));
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    let described: Value = serde_json::from_str(first.stdout.trim()).unwrap();
    assert_eq!(
        described["applied"]["actionDescription"],
        "created publication \"flow_publication\"\n\
         created watermarks table \"public\".\"flow_watermarks\"\n\
         added \"public\".\"flow_watermarks\" to publication \"flow_publication\"\n\
         added \"test\".\"mine\" to publication \"flow_publication\""
    );
    let second = run_line(&apply_line(&config, &tables));
    assert_eq!(second.exit_code, 0, "{}", second.stderr);
    assert_eq!(second.stdout.trim(), r#"{"applied":{}}"#);
    assert_validated(&run_line(&validate_line(&config, &tables)), &tables);
    let admin = db.superuser_client().await;
    let published: i64 = admin
        .query_one("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'flow_publication'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 2);
}

/// The twin of [`apply_creates_what_the_user_may_and_is_idempotent`] with
/// `advanced.read_only_capture`: apply creates nothing although the user may, validation says
/// what an administrator must create instead, and needs no watermarks table.
#[tokio::test]
async fn read_only_apply_creates_nothing_and_validation_needs_no_watermarks_table() {
    let db = TestDb::create("validate_read_only_apply").await;
    with_nothing_the_user_cannot_create(&db).await;
    let mut config = db.endpoint_config();
    config["advanced"]["read_only_capture"] = json!(true);
    let tables = [("test", "mine")];
    let message = error_text(&run_line(&validate_line(&config, &tables)));
    assert!(message.contains("publication \"flow_publication\" does not exist"), "{message}");
    assert!(!message.contains("watermarks"), "{message}");
    let applied = run_line(&apply_line(&config, &tables));
    assert_eq!(applied.exit_code, 0, "{}", applied.stderr);
    assert_eq!(applied.stdout.trim(), r#"{"applied":{}}"#, "a read-only apply did something");
    let admin = db.superuser_client().await;
    let created: (bool, bool) = {
        let row = admin
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = 'flow_publication'),
                        to_regclass('public.flow_watermarks') IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(created, (false, false), "(publication, watermarks table) created by a read-only apply");
    // Once an administrator publishes the table, the read-only capture validates.
    db.execute("CREATE PUBLICATION flow_publication FOR TABLE test.mine WITH (publish_via_partition_root = true);")
        .await;
    assert_validated(&run_line(&validate_line(&config, &tables)), &tables);
    let watermarks = db.endpoint_config();
    let message = error_text(&run_line(&validate_line(&watermarks, &tables)));
    assert!(message.contains("flow_watermarks"), "a writing capture still needs its watermarks table: {message}");
}

#[tokio::test]
async fn toasted_tables_get_advice_but_pass() {
    let db = TestDb::create("validate_toast_advice").await;
    db.execute(
        "CREATE TABLE test.docs (id int PRIMARY KEY, body text);
         ALTER TABLE test.docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO test.docs SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 500) AS i;",
    )
    .await;
    let tables = [("test", "docs")];
    let output = run_line(&validate_line(&db.endpoint_config(), &tables));
    assert_validated(&output, &tables);
    assert!(
        output.stderr.contains(
            r#"To capture every column on every update, run: ALTER TABLE \"test\".\"docs\" REPLICA IDENTITY FULL;"#
        ),
        "{}",
        output.stderr
    );
}

#[tokio::test]
async fn partitioned_tables_need_publish_via_partition_root() {
    let db = TestDb::create("validate_partition_root").await;
    db.execute(
        "DROP PUBLICATION flow_publication;
         CREATE PUBLICATION flow_publication FOR ALL TABLES;
         CREATE TABLE test.events (id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE test.events_1 PARTITION OF test.events FOR VALUES FROM (0) TO (100);",
    )
    .await;
    let error = fix_and_revalidate(&db, &db.endpoint_config(), &[("test", "events")]).await;
    insta::assert_snapshot!("partition_root", error.replace(&db.name, "<db>"));
    // The opposite: capturing partitions needs the option off.
    let mut config = db.endpoint_config();
    config["advanced"]["capture_as_partitions"] = json!(true);
    let error = fix_and_revalidate(&db, &config, &[("test", "events_1")]).await;
    assert!(error.contains("SET (publish_via_partition_root = false);"), "{error}");
}

#[tokio::test]
async fn connection_failures_are_named() {
    let db = TestDb::create("validate_connection_failures").await;
    let tables = [("test", "t")];
    let mut wrong_password = db.endpoint_config();
    wrong_password["credentials"]["password"] = json!("not-the-password");
    let mut no_database = db.endpoint_config();
    no_database["database"] = json!("no_such_database");
    let mut unreachable = db.endpoint_config();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    unreachable["address"] = json!(format!("127.0.0.1:{closed_port}"));
    let mut tls_refused = db.endpoint_config();
    tls_refused["advanced"]["sslmode"] = json!("require");
    let mut report = String::new();
    for (name, config) in [
        ("wrong password", wrong_password),
        ("no such database", no_database),
        ("unreachable", unreachable),
        ("sslmode=require, server without TLS", tls_refused),
    ] {
        let output = run_line(&validate_line(&config, &tables));
        let error = error_text(&output);
        assert!(
            !output.stderr.contains("not-the-password") && !output.stderr.contains("secret1234"),
            "{}",
            output.stderr
        );
        report
            .push_str(&format!("{name}: {}\n", harness::normalize(&error).replace(&closed_port.to_string(), "<port>")));
    }
    insta::assert_snapshot!("connection_failures", report);
}
