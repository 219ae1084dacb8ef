//! A real PostgreSQL server for the integration tests, and helpers to drive the binary.
//!
//! # The server
//!
//! All tests of this binary share one throwaway cluster, started lazily by the first
//! [`cluster()`] call:
//!
//! * `initdb` into a fresh temporary directory (superuser `postgres`, local connections trusted,
//!   TCP connections authenticated with SCRAM-SHA-256, UTF8, locale C);
//! * `postgres` runs with `wal_level=logical`, 100 replication slots and WAL senders,
//!   `wal_sender_timeout=10s`, `timezone=PST8PDT` (a non-UTC zone on purpose, like the reference
//!   connector's test server, so a connector that forgets to pin its session time zone shows up in
//!   snapshots), listening on `127.0.0.1` on a free port, with its unix socket in the temporary
//!   directory;
//! * the superuser gets a password and a capture role is created:
//!   `CREATE ROLE flow_capture LOGIN REPLICATION PASSWORD 'secret1234'` (stored as SCRAM).
//!
//! PostgreSQL refuses to run as root. When the tests run as root, `initdb` and `postgres` run as
//! the `postgres` OS user (the temporary directory is handed over to it).
//!
//! # Teardown, even when the test process crashes
//!
//! `postgres` is not daemonized with `pg_ctl`. It is started by a small `sh` wrapper, a child of
//! the test process, whose stdin is a pipe only the test process holds:
//!
//! ```text
//!   test process ──(pipe, never written)──► sh wrapper ──► postgres -D <dir>/data ...
//!                                             │ cat >/dev/null   (blocks until EOF)
//!                                             │ kill -INT postgres (fast shutdown;
//!                                             │   QUIT after 15 s, KILL after 5 s more)
//!                                             │ wait; rm -rf <dir>
//! ```
//!
//! The kernel closes the pipe whenever the test process ends, however it ends (normal exit, a
//! panic, `SIGKILL`), so the wrapper then stops the server and deletes its directory. The
//! wrapper runs in its own process group and ignores HUP, INT and TERM, so a signal sent to the
//! tests' process group (Ctrl-C, a CI timeout) cannot kill it before it has cleaned up.
//!
//! # Using an existing server instead
//!
//! If `TEST_PG_HOST` is set, no cluster is started and the tests use that server:
//!
//! | variable            | meaning                                        | default    |
//! |---------------------|------------------------------------------------|------------|
//! | `TEST_PG_HOST`      | host name or IP address (TCP)                  | (required) |
//! | `TEST_PG_PORT`      | port                                           | `5432`     |
//! | `TEST_PG_SUPERUSER` | a superuser role                               | `postgres` |
//! | `TEST_PG_PASSWORD`  | its password                                   | `postgres` |
//!
//! The server must run with `wal_level=logical`; the role `flow_capture` is created (or its
//! password and attributes reset). Two test runs against the same server must not overlap: the
//! database and slot names are derived from test names only.
//!
//! Other variables: `TEST_PG_BINDIR` picks the PostgreSQL binaries (default: `pg_config
//! --bindir`, then the newest `/usr/lib/postgresql/*/bin`; the server needs only `initdb` and
//! `postgres` there, see `scripts/test-versions.sh`); `TEST_CONNECTOR_TIMEOUT_SECS` bounds
//! each [`run_connector`] call (default 120).
//!
//! # Per-test isolation
//!
//! Each test works in its own database ([`TestDb`]), named after the test, with its own
//! publication and replication slot name, so tests run in parallel.

#![allow(dead_code)] // Not every test module uses every helper.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

/// The capture role created on every test cluster.
pub const CAPTURE_USER: &str = "flow_capture";
/// Its password.
pub const CAPTURE_PASSWORD: &str = "secret1234";
/// The superuser password set on a cluster started by the harness.
const MANAGED_SUPERUSER_PASSWORD: &str = "postgres-test-password";

/// Connection facts of the server the tests run against.
pub struct TestCluster {
    pub host: String,
    pub port: u16,
    pub superuser: String,
    pub superuser_password: String,
    pub capture_user: String,
    pub capture_password: String,
    /// PostgreSQL's binaries (`psql`, `pg_recvlogical`, ...). For an external server this is the
    /// local installation, which may differ in version from the server.
    pub bindir: PathBuf,
    /// Holds the write end of the wrapper's stdin pipe for the life of the process.
    server: Option<Child>,
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

/// The shared test server, started on first use.
pub async fn cluster() -> &'static TestCluster {
    let cluster = match CLUSTER.get() {
        Some(cluster) => cluster,
        // Starting takes a few seconds of blocking work, and it builds its own runtime:
        // connections made during startup must not belong to the runtime of whichever test
        // came first.
        None => tokio::task::spawn_blocking(start_cluster_once).await.expect("starting the test cluster panicked"),
    };
    unwrap_cluster(cluster)
}

/// [`cluster()`] for code that is not async (not to be called on a runtime's thread).
pub fn cluster_blocking() -> &'static TestCluster {
    unwrap_cluster(start_cluster_once())
}

fn start_cluster_once() -> &'static Result<TestCluster, String> {
    CLUSTER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        runtime.block_on(start_cluster())
    })
}

fn unwrap_cluster(cluster: &'static Result<TestCluster, String>) -> &'static TestCluster {
    match cluster {
        Ok(cluster) => cluster,
        Err(message) => panic!("the test PostgreSQL cluster is unavailable: {message}"),
    }
}

impl TestCluster {
    /// A superuser connection to `database` over TCP with a password. The connection task runs on
    /// the caller's runtime.
    pub async fn superuser_client(&self, database: &str) -> tokio_postgres::Client {
        self.connect(database, &self.superuser, &self.superuser_password)
            .await
            .unwrap_or_else(|e| panic!("connect to database {database:?} as superuser: {e}"))
    }

    /// A connection to `database` over TCP as `user` with `password`.
    pub async fn connect(
        &self,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .application_name("source-postgres-tests")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // Errors surface on the client's next call; nothing to report here.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// `host:port` as the connector's `address` setting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

async fn start_cluster() -> Result<TestCluster, String> {
    let bindir = find_bindir();
    if let Ok(host) = std::env::var("TEST_PG_HOST") {
        return use_external_cluster(host, bindir?).await;
    }
    let bindir = bindir?;
    // The port is picked by binding port 0 and releasing it, so another process can take it
    // before postgres binds it. Retry with a new port in that case.
    let mut last_error = String::new();
    for _ in 0..3 {
        match start_managed_cluster(&bindir).await {
            Ok(cluster) => return Ok(cluster),
            Err(StartError::PortTaken(message)) => last_error = message,
            Err(StartError::Failed(message)) => return Err(message),
        }
    }
    Err(last_error)
}

async fn use_external_cluster(host: String, bindir: PathBuf) -> Result<TestCluster, String> {
    let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let port = env_or("TEST_PG_PORT", "5432").parse().map_err(|e| format!("TEST_PG_PORT: {e}"))?;
    let cluster = TestCluster {
        host,
        port,
        superuser: env_or("TEST_PG_SUPERUSER", "postgres"),
        superuser_password: env_or("TEST_PG_PASSWORD", "postgres"),
        capture_user: CAPTURE_USER.into(),
        capture_password: CAPTURE_PASSWORD.into(),
        bindir,
        server: None,
    };
    let client = cluster
        .connect("postgres", &cluster.superuser, &cluster.superuser_password)
        .await
        .map_err(|e| format!("connect to {} as {}: {e}", cluster.address(), cluster.superuser))?;
    // Several test binaries may run this at once: tolerate a concurrent CREATE ROLE.
    let sql = format!(
        "SET password_encryption = 'scram-sha-256';
         DO $$ BEGIN
           CREATE ROLE {CAPTURE_USER} LOGIN REPLICATION;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$;
         ALTER ROLE {CAPTURE_USER} LOGIN REPLICATION PASSWORD '{CAPTURE_PASSWORD}';"
    );
    client.batch_execute(&sql).await.map_err(|e| format!("create role {CAPTURE_USER}: {}", describe_pg_error(&e)))?;
    Ok(cluster)
}

enum StartError {
    PortTaken(String),
    Failed(String),
}

/// The shell wrapper that owns the server and its directory. Arguments: the directory, the
/// PostgreSQL bin directory, then `postgres` options. It runs `initdb` itself, so that a test
/// process killed during `initdb` leaves nothing behind either.
const WRAPPER_SCRIPT: &str = r#"
# Only the end of stdin stops the server: a signal meant for the tests must not kill this
# shell before it has cleaned up (initdb and postgres install their own handlers).
trap '' HUP INT TERM
dir=$1
bindir=$2
shift 2
pid=
if "$bindir/initdb" -D "$dir/data" --username=postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1 </dev/null; then
  "$bindir/postgres" -D "$dir/data" "$@" >"$dir/postgres.log" 2>&1 </dev/null &
  pid=$!
else
  touch "$dir/initdb.failed"
fi
# The test process holds the write end of our stdin and never writes: EOF means it is gone.
cat >/dev/null
# Whether postgres still runs (an exited child stays a zombie until `wait`, so `kill -0` can't tell).
alive() {
  case "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" in
    "" | Z | X) return 1 ;;
  esac
}
# Send signal $1 every tenth of a second while postgres runs, for at most $2 tenths. Repeating it
# matters: a postgres that has just started still ignores SIGINT until it installs its handlers.
stop() {
  n=0
  while alive && [ "$n" -lt "$2" ]; do
    kill -"$1" "$pid" 2>/dev/null
    sleep 0.1
    n=$((n + 1))
  done
}
if [ -n "$pid" ]; then
  stop INT 150
  stop QUIT 50
  stop KILL 50
  wait "$pid"
fi
# What explains a connection the server closed, for the test run's output (the log goes
# with the directory): crashes, walsenders that timed out, a full disk, memory.
notable=$(grep -E 'PANIC|was terminated by signal|terminating walsender process due to replication timeout|No space left|out of memory' \
  "$dir/postgres.log" 2>/dev/null | tail -n 40)
if [ -n "$notable" ]; then
  printf '%s\n%s\n' "--- the shared test server's log, notable lines ---" "$notable"
fi
rm -rf "$dir"
"#;

async fn start_managed_cluster(bindir: &Path) -> Result<TestCluster, StartError> {
    let (server, _dir, port) =
        // Its stdout is the test run's: it prints the server log's notable lines on exit.
        spawn_cluster(bindir, "source-postgres-it-", WRAPPER_SCRIPT, &[], Stdio::inherit(), None).await?;
    Ok(local_cluster(bindir, port, server))
}

/// Settings of every cluster the harness starts.
const CLUSTER_SETTINGS: [&str; 10] = [
    "listen_addresses=127.0.0.1",
    "wal_level=logical",
    "max_replication_slots=100",
    "max_wal_senders=100",
    "wal_sender_timeout=10s",
    "max_connections=200",
    "timezone=PST8PDT",
    "fsync=off",
    "full_page_writes=off",
    "password_encryption=scram-sha-256",
];

/// Start a server through `script` (a wrapper: [`WRAPPER_SCRIPT`] or
/// [`PRIVATE_WRAPPER_SCRIPT`]) in a new temporary directory, with [`CLUSTER_SETTINGS`] then
/// `extra_settings`, wait until it accepts connections, and set up the superuser password
/// and the capture role. Returns the wrapper (its stdin still open: closing it stops the
/// server and deletes the directory), the directory and the port.
async fn spawn_cluster(
    bindir: &Path,
    prefix: &str,
    script: &str,
    extra_settings: &[&str],
    stdout: Stdio,
    primary: Option<(&Path, u16)>,
) -> Result<(std::process::Child, PathBuf, u16), StartError> {
    let failed = StartError::Failed;
    let owner = server_owner().map_err(failed)?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| failed(format!("create a temporary directory: {e}")))?
        // The wrapper deletes it, after the server has stopped.
        .keep();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| failed(format!("chown {}: {e}", dir.display())))?;
    }

    let port = free_port().map_err(failed)?;
    let mut wrapper = Command::new("sh");
    wrapper.arg("-c").arg(script).arg("sh").arg(&dir).arg(bindir).arg("-p").arg(port.to_string()).arg("-k").arg(&dir);
    for setting in CLUSTER_SETTINGS.iter().chain(extra_settings) {
        wrapper.arg("-c").arg(setting);
    }
    wrapper
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::null())
        .env_remove("PGDATA")
        .current_dir(&dir)
        // Its own process group: Ctrl-C, or a timeout that signals the tests' process group,
        // must reach the server only through the wrapper, which then stops it and cleans up.
        .process_group(0);
    if let Some((primary_dir, primary_port)) = primary {
        // PRIVATE_WRAPPER_SCRIPT then copies the primary with pg_basebackup instead of initdb.
        wrapper.env("PRIMARY_SOCKET_DIR", primary_dir).env("PRIMARY_PORT", primary_port.to_string());
    }
    run_as(&mut wrapper, owner);
    let server = wrapper.spawn().map_err(|e| failed(format!("start the postgres wrapper: {e}")))?;
    // Closing its stdin makes the wrapper stop whatever runs and delete the directory.
    let abandon = |mut server: std::process::Child| {
        drop(server.stdin.take());
        let _ = server.wait();
    };

    let log_path = dir.join("postgres.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        let mut config = tokio_postgres::Config::new();
        config.host_path(&dir).port(port).user("postgres").dbname("postgres");
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                break client;
            }
            Err(error) => {
                if dir.join("initdb.failed").exists() {
                    let log = fs::read_to_string(dir.join("initdb.log")).unwrap_or_default();
                    abandon(server);
                    return Err(failed(format!("initdb failed:\n{log}")));
                }
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                // Connecting too early makes the server log "FATAL: the database system is
                // starting up" for our own attempt: that one is not a failed start.
                let fatal = log.lines().any(|line| {
                    (line.contains("FATAL") && !line.contains("the database system is starting up"))
                        || line.contains("PANIC")
                });
                if fatal || Instant::now() > deadline {
                    abandon(server);
                    let message = format!(
                        "postgres did not start on port {port} (last connection error: {error}); its log:\n{log}"
                    );
                    return Err(if log.contains("could not bind") {
                        StartError::PortTaken(message)
                    } else {
                        failed(message)
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let setup = format!(
        "ALTER ROLE postgres PASSWORD '{MANAGED_SUPERUSER_PASSWORD}';
         CREATE ROLE {CAPTURE_USER} LOGIN REPLICATION PASSWORD '{CAPTURE_PASSWORD}';"
    );
    // A standby has the primary's roles, and cannot be written.
    if primary.is_some() {
        return Ok((server, dir, port));
    }
    if let Err(e) = client.batch_execute(&setup).await {
        abandon(server);
        return Err(failed(format!("set up roles: {}", describe_pg_error(&e))));
    }
    Ok((server, dir, port))
}

/// A cluster the harness started on this host, reached over TCP.
fn local_cluster(bindir: &Path, port: u16, server: std::process::Child) -> TestCluster {
    TestCluster {
        host: "127.0.0.1".into(),
        port,
        superuser: "postgres".into(),
        superuser_password: MANAGED_SUPERUSER_PASSWORD.into(),
        capture_user: CAPTURE_USER.into(),
        capture_password: CAPTURE_PASSWORD.into(),
        bindir: bindir.to_path_buf(),
        server: Some(server),
    }
}

/// When running as root, the uid and gid of the `postgres` OS user, which will own the server.
fn server_owner() -> Result<Option<(u32, u32)>, String> {
    let uid = fs::metadata("/proc/self").map_err(|e| format!("stat /proc/self: {e}"))?.uid();
    if uid != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id").args([flag, "postgres"]).output().map_err(|e| format!("run id: {e}"))?;
        if !output.status.success() {
            return Err("running as root, but there is no `postgres` OS user to run the server".into());
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("parse the output of id {flag} postgres: {e}"))
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn run_as(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        // Dropping from root also clears the supplementary groups.
        command.uid(uid).gid(gid).env("HOME", "/tmp").env("USER", "postgres");
    }
}

pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a free port: {e}"))?;
    listener.local_addr().map(|address| address.port()).map_err(|e| format!("local address: {e}"))
}

fn find_bindir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TEST_PG_BINDIR") {
        // The server needs only these two (the PostgreSQL 13 of scripts/pg-versions.sh has
        // nothing else); psql is used by the TLS tests alone.
        let dir = PathBuf::from(dir);
        for program in ["initdb", "postgres"] {
            if !dir.join(program).exists() {
                let dir = dir.display();
                return Err(format!("TEST_PG_BINDIR={dir}: no {program} there"));
            }
        }
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    // Debian installs each major version side by side; take the newest.
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL binaries found: set TEST_PG_BINDIR or put pg_config on PATH".into())
}

/// A database of its own for one test.
pub struct TestDb {
    /// The database name: derived from the test name only, so snapshots are stable.
    pub name: String,
    /// The identifier shared by the database and slot names.
    stem: String,
}

impl TestDb {
    /// Creates (or re-creates) the test's database, ready for a capture:
    /// schema `test`, read grants for the capture role on `test` and `public` (plus CREATE on
    /// `public`, where a connector may keep its watermarks table, as in the reference
    /// connector's test setup), and `flow_publication FOR ALL TABLES` with
    /// `publish_via_partition_root`. Leftover slots of this test from an earlier run are dropped.
    pub async fn create(test_name: &str) -> TestDb {
        let stem = identifier_stem(test_name);
        let db = TestDb { name: format!("it_{stem}"), stem };
        let cluster = cluster().await;
        let admin = cluster.superuser_client("postgres").await;
        drop_leftover_slots(&admin, &db.slot_name(), &db.name).await;
        // Separate statements: neither may run inside the implicit transaction of a batch.
        for statement in [
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name),
            format!("CREATE DATABASE \"{}\"", db.name),
        ] {
            if let Err(e) = admin.batch_execute(&statement).await {
                panic!("{statement}\nfailed: {}", describe_pg_error(&e));
            }
        }
        db.execute(&format!(
            "CREATE SCHEMA test;
             GRANT USAGE ON SCHEMA test, public TO {CAPTURE_USER};
             GRANT CREATE ON SCHEMA public TO {CAPTURE_USER};
             GRANT SELECT ON ALL TABLES IN SCHEMA test, public TO {CAPTURE_USER};
             ALTER DEFAULT PRIVILEGES IN SCHEMA test, public GRANT SELECT ON TABLES TO {CAPTURE_USER};
             CREATE PUBLICATION flow_publication FOR ALL TABLES
               WITH (publish_via_partition_root = true);"
        ))
        .await;
        db
    }

    /// A superuser connection to this database (the connection task runs on the caller's runtime).
    pub async fn superuser_client(&self) -> tokio_postgres::Client {
        cluster().await.superuser_client(&self.name).await
    }

    /// Runs `sql` (one or more statements) as superuser in this database; panics with the
    /// server's error on failure.
    pub async fn execute(&self, sql: &str) {
        let client = self.superuser_client().await;
        if let Err(e) = client.batch_execute(sql).await {
            panic!("SQL failed in database {}: {}\n--- SQL ---\n{sql}", self.name, describe_pg_error(&e));
        }
    }

    /// Drop this database's replication slots (terminating a walsender still on one): for
    /// tests that make many databases, since the server's slots are shared by every test.
    pub async fn drop_slots(&self) {
        let admin = cluster().await.superuser_client("postgres").await;
        drop_leftover_slots(&admin, &self.slot_name(), &self.name).await;
    }

    /// The replication slot name the connector should use for this test.
    pub fn slot_name(&self) -> String {
        format!("slot_{}", self.stem)
    }

    /// The connector's endpoint configuration for this database, as the capture role.
    pub fn endpoint_config(&self) -> serde_json::Value {
        let cluster = cluster_blocking_if_ready();
        json!({
            "address": cluster.address(),
            "user": cluster.capture_user,
            "credentials": {"auth_type": "UserPassword", "password": cluster.capture_password},
            "database": self.name,
            "advanced": {"slotName": self.slot_name(), "sslmode": "disable"},
        })
    }
}

/// The cluster, which exists once any [`TestDb`] does.
fn cluster_blocking_if_ready() -> &'static TestCluster {
    unwrap_cluster(CLUSTER.get().expect("the test cluster is started by TestDb::create"))
}

/// Lowercase ASCII letters, digits and `_`, at most 50 bytes, so that `it_<stem>` and
/// `slot_<stem>` fit PostgreSQL's 63-byte identifiers. Long names keep a prefix plus a hash of the
/// whole name.
fn identifier_stem(test_name: &str) -> String {
    let mut stem = String::new();
    for c in test_name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            stem.push(c);
        } else if !stem.is_empty() && !stem.ends_with('_') {
            stem.push('_');
        }
    }
    let stem = stem.trim_end_matches('_').to_string();
    assert!(!stem.is_empty(), "test name {test_name:?} has no usable characters");
    const LIMIT: usize = 50;
    if stem.len() <= LIMIT {
        return stem;
    }
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let hash = test_name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{}_{:08x}", &stem[..LIMIT - 9], hash as u32)
}

/// Drops slots left by an earlier run of this test: the test's slot and any logical slot in its
/// database (which would block DROP DATABASE; a test's extra slots live there too). An active
/// slot's walsender, say from a connector that was killed with the previous test process, is
/// terminated first. Never by name prefix: one test's slot name can begin another's
/// (`slot_chaos_failpoint_mid_chunk` and `slot_chaos_failpoint_mid_chunk_read_only`), and a
/// prefix match had one test terminate and drop the slot of another while it ran.
async fn drop_leftover_slots(admin: &tokio_postgres::Client, slot: &str, database: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = admin
            .query(
                "SELECT slot_name::text, active_pid FROM pg_replication_slots
                 WHERE slot_name = $1 OR database = $2",
                &[&slot, &database],
            )
            .await
            .unwrap_or_else(|e| panic!("list replication slots: {}", describe_pg_error(&e)));
        if rows.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "could not drop the leftover replication slots of database {database}");
        for row in rows {
            let slot: String = row.get(0);
            let active_pid: Option<i32> = row.get(1);
            // Races with a walsender that is exiting are expected; the loop re-checks.
            let _ = match active_pid {
                Some(pid) => admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await,
                None => admin.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server error with its detail, hint and position, which `Display` leaves out.
pub fn describe_pg_error(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        return error.to_string();
    };
    let mut text = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("\nDETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("\nHINT: {hint}"));
    }
    if let Some(position) = db.position() {
        text.push_str(&format!("\nPOSITION: {position:?}"));
    }
    text
}

/// What the connector printed, and how it exited.
#[derive(Debug)]
pub struct ConnectorOutput {
    pub stdout: String,
    pub stderr: String,
    /// The exit code, or 128 + the signal number if a signal ended the process.
    pub exit_code: i32,
}

/// The path of the connector binary the tests run: the one built with them, or the one
/// `TEST_CONNECTOR_BIN` names (to run the same tests against another build, e.g. an older
/// commit's binary to show that a new test fails there).
pub fn connector_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("TEST_CONNECTOR_BIN")
            .ok()
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_source-postgres").to_string())
    })
}

/// Runs the connector binary with `args`, feeding it `stdin` (then EOF), with `env` added to the
/// environment. Panics, with whatever was printed, if it runs longer than the timeout
/// (`TEST_CONNECTOR_TIMEOUT_SECS`, default 120 s); the process and its children are killed.
pub fn run_connector(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> ConnectorOutput {
    let timeout = std::env::var("TEST_CONNECTOR_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120));
    let mut command = Command::new(connector_path());
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also kills the connectors `preview` starts.
        .process_group(0);
    let mut child = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", connector_path()));
    let group = child.id();

    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_owned();
    // A connector may exit without reading everything: a broken pipe is its business.
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(input.as_bytes());
    });
    let stdout_reader = spawn_reader(child.stdout.take().expect("piped stdout"));
    let stderr_reader = spawn_reader(child.stderr.take().expect("piped stderr"));

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the connector") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let timed_out = status.is_none();
    if timed_out {
        kill_group(group);
    }
    let status = match status {
        Some(status) => status,
        None => child.wait().expect("wait for the killed connector"),
    };
    // Children that outlive the connector would keep the pipes open: give them a moment.
    let pipes_deadline = Instant::now() + Duration::from_secs(10);
    while !(stdout_reader.is_finished() && stderr_reader.is_finished()) {
        if Instant::now() > pipes_deadline {
            kill_group(group);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writer.join();
    let output = ConnectorOutput {
        stdout: stdout_reader.join().expect("stdout reader"),
        stderr: stderr_reader.join().expect("stderr reader"),
        exit_code: status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    };
    if timed_out {
        panic!(
            "the connector (args {args:?}) did not exit within {timeout:?} and was killed\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            output.stdout, output.stderr
        );
    }
    output
}

fn spawn_reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn kill_group(group: u32) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
}

/// Replaces values that change from run to run, so output can be compared with a snapshot:
///
/// * LSNs `X/Y` (uppercase hex) → `<lsn>`;
/// * JSON `"ts_ms":N` → `"ts_ms":"<ts>"`, `"txid":N` → `"txid":"<xid>"`, `"pid":N` →
///   `"pid":"<pid>"`;
/// * JSON `"loc":[a,b,c]` → `"loc":"<loc>"`, except backfill locations `[-1,n,0]`, which are
///   deterministic and kept;
/// * timestamps of log lines: a leading RFC 3339 timestamp, and `"ts"`/`"timestamp"`/`"time"`
///   in a JSON line that has a `"level"` key (captured documents keep their timestamps) → `<ts>`;
/// * ports after `127.0.0.1:`, `localhost:`, `]:`, and the test cluster's port after `port ` or
///   `port=` → `<port>`;
/// * process ids after `PID `, `pid ` or `process ` → `<pid>`.
///
/// Everything else is kept byte for byte.
pub fn normalize(text: &str) -> String {
    let mut text = replace_json_number(text, "ts_ms", "\"<ts>\"");
    text = replace_json_number(&text, "txid", "\"<xid>\"");
    text = replace_json_number(&text, "pid", "\"<pid>\"");
    text = replace_loc(&text);
    text = replace_lsns(&text);
    text = text.split_inclusive('\n').map(replace_log_timestamps).collect();
    for prefix in ["127.0.0.1:", "localhost:", "]:"] {
        text = replace_number_after(&text, prefix, "<port>", |_| true);
    }
    if let Some(Ok(cluster)) = CLUSTER.get() {
        let port = u64::from(cluster.port);
        for prefix in ["port ", "port="] {
            text = replace_number_after(&text, prefix, "<port>", |n| n == port);
        }
    }
    for prefix in ["PID ", "pid ", "process "] {
        text = replace_number_after(&text, prefix, "<pid>", |_| true);
    }
    text
}

/// Replaces the (integer) value of every `"key":N` with `replacement`.
fn replace_json_number(text: &str, key: &str, replacement: &str) -> String {
    let needle = format!("\"{key}\":");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let (before, after) = rest.split_at(at + needle.len());
        out.push_str(before);
        let digits = after.strip_prefix('-').unwrap_or(after).bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(replacement);
            rest = &after[digits + usize::from(after.starts_with('-'))..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `"loc":[a,b,c]` → `"loc":"<loc>"`, keeping backfill locations (`a == -1`).
fn replace_loc(text: &str) -> String {
    const NEEDLE: &str = "\"loc\":[";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(NEEDLE) {
        out.push_str(&rest[..at]);
        let after = &rest[at + NEEDLE.len()..];
        let Some(end) = after.find(']') else {
            out.push_str(NEEDLE);
            rest = after;
            continue;
        };
        let parts: Vec<&str> = after[..end].split(',').map(str::trim).collect();
        let numeric = parts.len() == 3 && parts.iter().all(|p| p.parse::<i64>().is_ok());
        if numeric && parts[0] != "-1" {
            out.push_str("\"loc\":\"<loc>\"");
        } else {
            out.push_str(NEEDLE);
            out.push_str(&after[..=end]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `X/Y` with 1–8 uppercase hex digits on each side, not inside a longer word or path.
fn replace_lsns(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'/' || b == b'.';
    let hex_run = |from: usize| bytes[from..].iter().take_while(|&&b| is_hex(b)).count();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_word(bytes[i - 1]);
        if at_word_start && is_hex(bytes[i]) {
            let high = hex_run(i);
            let slash = i + high;
            if (1..=8).contains(&high) && bytes.get(slash) == Some(&b'/') {
                let low = hex_run(slash + 1);
                let end = slash + 1 + low;
                let at_word_end = end == bytes.len() || !is_word(bytes[end]);
                if (1..=8).contains(&low) && at_word_end {
                    out.push_str(&text[copied..i]);
                    out.push_str("<lsn>");
                    copied = end;
                    i = end;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Redacts the timestamp of one log line (see [`normalize`]).
fn replace_log_timestamps(line: &str) -> String {
    let mut line = match rfc3339_prefix_len(line) {
        Some(len) => format!("<ts>{}", &line[len..]),
        None => line.to_string(),
    };
    if line.trim_start().starts_with('{') && line.contains("\"level\":") {
        for key in ["ts", "timestamp", "time"] {
            let needle = format!("\"{key}\":\"");
            if let Some(at) = line.find(&needle) {
                let value_start = at + needle.len();
                if let Some(len) = rfc3339_prefix_len(&line[value_start..]) {
                    if line[value_start + len..].starts_with('"') {
                        line.replace_range(value_start..value_start + len, "<ts>");
                    }
                }
            }
        }
    }
    line
}

/// The length of an RFC 3339 date-time (`T` or space separator, optional fraction, `Z` or offset)
/// at the start of `text`.
fn rfc3339_prefix_len(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| b.len() >= from + n && b[from..from + n].iter().all(u8::is_ascii_digit);
    let ok = digits(0, 4)
        && b.get(4) == Some(&b'-')
        && digits(5, 2)
        && b.get(7) == Some(&b'-')
        && digits(8, 2)
        && matches!(b.get(10), Some(b'T' | b' '))
        && digits(11, 2)
        && b.get(13) == Some(&b':')
        && digits(14, 2)
        && b.get(16) == Some(&b':')
        && digits(17, 2);
    if !ok {
        return None;
    }
    let mut end = 19;
    if b.get(end) == Some(&b'.') {
        end += 1;
        end += b[end..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    match b.get(end) {
        Some(b'Z') => end += 1,
        Some(b'+' | b'-') if digits(end + 1, 2) && b.get(end + 3) == Some(&b':') && digits(end + 4, 2) => end += 6,
        _ => {}
    }
    Some(end)
}

/// Replaces the decimal number right after each `prefix` with `replacement` when `accept(n)`.
fn replace_number_after(text: &str, prefix: &str, replacement: &str, accept: impl Fn(u64) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let (before, after) = rest.split_at(at + prefix.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let followed_by_word = after[digits..].bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        match after[..digits].parse::<u64>() {
            Ok(n) if !followed_by_word && accept(n) => {
                out.push_str(replacement);
                rest = &after[digits..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn harness_cluster_is_logical_and_capture_role_can_connect() {
    let cluster = cluster().await;
    let admin = cluster.superuser_client("postgres").await;
    let wal_level: String = admin.query_one("SHOW wal_level", &[]).await.expect("SHOW wal_level").get(0);
    assert_eq!(wal_level, "logical");

    let stored: String = admin
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&cluster.capture_user])
        .await
        .expect("read the capture role's password")
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "not a SCRAM verifier: {stored}");

    let capture = cluster
        .connect("postgres", &cluster.capture_user, &cluster.capture_password)
        .await
        .unwrap_or_else(|e| panic!("the capture role cannot log in: {}", describe_pg_error(&e)));
    let row = capture
        .query_one("SELECT current_user::text, rolreplication FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .expect("query as the capture role");
    assert_eq!(row.get::<_, String>(0), cluster.capture_user);
    assert!(row.get::<_, bool>(1), "the capture role lacks REPLICATION");

    // Password authentication is enforced over TCP, not trusted.
    let wrong = cluster.connect("postgres", &cluster.capture_user, "not-the-password").await;
    assert!(wrong.is_err(), "a wrong password was accepted");
}

#[tokio::test]
async fn harness_test_db_is_isolated_and_ready_for_capture() {
    let db = TestDb::create("harness_test_db_is_isolated_and_ready_for_capture").await;
    assert_eq!(db.name, "it_harness_test_db_is_isolated_and_ready_for_capture");
    assert_eq!(db.slot_name(), "slot_harness_test_db_is_isolated_and_ready_for_capture");
    db.execute("CREATE TABLE test.t (id int PRIMARY KEY); INSERT INTO test.t VALUES (1);").await;

    let cluster = cluster().await;
    let capture = cluster
        .connect(&db.name, &cluster.capture_user, &cluster.capture_password)
        .await
        .expect("the capture role connects to the test database");
    let count: i64 = capture
        .query_one("SELECT count(*) FROM test.t", &[])
        .await
        .expect("the capture role reads tables created after the grants")
        .get(0);
    assert_eq!(count, 1);
    let published: i64 = capture
        .query_one(
            "SELECT count(*) FROM pg_publication_tables
             WHERE pubname = 'flow_publication' AND schemaname = 'test' AND tablename = 't'",
            &[],
        )
        .await
        .expect("query pg_publication_tables")
        .get(0);
    assert_eq!(published, 1);

    let config = db.endpoint_config();
    assert_eq!(config["address"], cluster.address().as_str());
    assert_eq!(config["database"], db.name.as_str());
    assert_eq!(config["advanced"]["slotName"], db.slot_name().as_str());

    // Re-creating drops the old database, its tables and the test's leftover slots.
    capture
        .simple_query(&format!("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", db.slot_name()))
        .await
        .map_err(|e| describe_pg_error(&e))
        .expect("the capture role creates a slot");
    drop(capture);
    let db = TestDb::create("harness_test_db_is_isolated_and_ready_for_capture").await;
    let admin = db.superuser_client().await;
    let leftovers: i64 = admin
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&db.slot_name()])
        .await
        .expect("count slots")
        .get(0);
    assert_eq!(leftovers, 0);
    let tables: i64 = admin
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'test'", &[])
        .await
        .expect("count tables")
        .get(0);
    assert_eq!(tables, 0);
}

#[test]
fn normalize_redacts_volatile_values_only() {
    let input = concat!(
        r#"{"_meta":{"source":{"loc":[22837304,22837368,0],"ts_ms":1714564800123,"txid":771}},"cursor":"0/15D6A58","lsn":"1A/FF00"}"#,
        "\n",
        r#"{"_meta":{"source":{"loc":[-1,12,0],"snapshot":true}},"path":"a/b","hex":"AB/CD/EF","ts":"2024-05-01T12:00:00Z"}"#,
        "\n",
        r#"{"ts":"2024-05-01T12:00:00.123456Z","level":"error","msg":"replication slot \"s\" is active for PID 4242","pid":99}"#,
        "\n",
        "2024-05-01T12:00:00.123Z  INFO connecting to 127.0.0.1:54321\n",
    );
    insta::assert_snapshot!(normalize(input), @r#"
    {"_meta":{"source":{"loc":"<loc>","ts_ms":"<ts>","txid":"<xid>"}},"cursor":"<lsn>","lsn":"<lsn>"}
    {"_meta":{"source":{"loc":[-1,12,0],"snapshot":true}},"path":"a/b","hex":"AB/CD/EF","ts":"2024-05-01T12:00:00Z"}
    {"ts":"<ts>","level":"error","msg":"replication slot \"s\" is active for PID <pid>","pid":"<pid>"}
    <ts>  INFO connecting to 127.0.0.1:<port>
    "#);
}

#[test]
fn identifier_stems_are_short_stable_and_safe() {
    assert_eq!(identifier_stem("transcript::Discover-Simple"), "transcript_discover_simple");
    let long = "a_really_long_test_name_that_goes_on_and_on_well_past_the_limit_of_identifiers";
    let stem = identifier_stem(long);
    assert_eq!(stem.len(), 50);
    assert_eq!(stem, identifier_stem(long));
    assert_ne!(stem, identifier_stem(&format!("{long}_2")));
}

// -------------------------------------------------------------------------------------------
// Private clusters
// -------------------------------------------------------------------------------------------

/// The wrapper of a [`PrivateCluster`]: [`WRAPPER_SCRIPT`]'s lifecycle (`initdb`, `postgres`,
/// and on the end of stdin: stop the server, delete the directory), plus commands read from
/// stdin, one per line, each answered with one line on stdout:
///
/// * `restart`: stop the server as `pg_ctl stop -m immediate` does (SIGQUIT to the
///   postmaster: every session is cut, no shutdown checkpoint, crash recovery at the next
///   start), start it again on the same port and directory, answer `restarted`.
///
/// It prints `started` (or `failed`) once, after `initdb`.
const PRIVATE_WRAPPER_SCRIPT: &str = r#"
trap '' HUP INT TERM
dir=$1
bindir=$2
shift 2
pid=
start() {
  "$bindir/postgres" -D "$dir/data" "$@" >>"$dir/postgres.log" 2>&1 </dev/null &
  pid=$!
}
alive() {
  case "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" in
    "" | Z | X) return 1 ;;
  esac
}
stop() {
  n=0
  while alive && [ "$n" -lt "$2" ]; do
    kill -"$1" "$pid" 2>/dev/null
    sleep 0.1
    n=$((n + 1))
  done
}
if [ -n "${PRIMARY_PORT:-}" ]; then
  # A hot standby of the primary whose socket is in $PRIMARY_SOCKET_DIR.
  init() {
    # Not -R: the connection string it writes may name options the server's libpq lacks.
    "$bindir/pg_basebackup" -D "$dir/data" -h "$PRIMARY_SOCKET_DIR" -p "$PRIMARY_PORT" -U postgres \
      -X stream -c fast --no-sync &&
      touch "$dir/data/standby.signal" &&
      echo "primary_conninfo = 'host=$PRIMARY_SOCKET_DIR port=$PRIMARY_PORT user=postgres'" \
        >>"$dir/data/postgresql.auto.conf" &&
      chmod 700 "$dir/data"
  }
else
  init() {
    "$bindir/initdb" -D "$dir/data" --username=postgres --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync
  }
fi
if init >"$dir/initdb.log" 2>&1 </dev/null; then
  start "$@"
  echo started
else
  touch "$dir/initdb.failed"
  echo failed
fi
while read -r command; do
  case "$command" in
    restart)
      if [ -n "$pid" ]; then
        kill -QUIT "$pid" 2>/dev/null
        wait "$pid"
        start "$@"
      fi
      echo restarted
      ;;
  esac
done
if [ -n "$pid" ]; then
  stop INT 150
  stop QUIT 50
  stop KILL 50
  wait "$pid"
fi
rm -rf "$dir"
"#;

/// A cluster of one test's own, set up like the shared one (same settings, superuser
/// password and capture role), for faults that would disturb every other test: restarting
/// the server. Always started locally (even with `TEST_PG_HOST`), from `TEST_PG_BINDIR` or
/// the local installation. Dropping it stops the server and deletes its directory (the
/// wrapper does it when its stdin closes, also if the test process dies).
pub struct PrivateCluster {
    pub cluster: TestCluster,
    /// Its directory (data in `data/`, the server log in `postgres.log`).
    pub dir: PathBuf,
    control: std::sync::Arc<std::sync::Mutex<PrivateControl>>,
}

struct PrivateControl {
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl PrivateCluster {
    /// Start a private cluster; `extra_settings` (`name=value`) come after the shared
    /// cluster's settings, so they may override them. Panics if it cannot start.
    pub async fn start(extra_settings: &[&str]) -> PrivateCluster {
        let bindir = find_bindir().unwrap_or_else(|e| panic!("a private cluster needs local PostgreSQL binaries: {e}"));
        let mut last_error = String::new();
        for _ in 0..3 {
            match start_private_cluster(&bindir, extra_settings, None).await {
                Ok(cluster) => return cluster,
                Err(StartError::PortTaken(message)) => last_error = message,
                Err(StartError::Failed(message)) => panic!("the private cluster did not start: {message}"),
            }
        }
        panic!("the private cluster did not start: {last_error}")
    }

    /// A hot standby of this cluster, copied with `pg_basebackup` and streaming from it,
    /// with [`CLUSTER_SETTINGS`] then `extra_settings`; it has this cluster's roles and
    /// passwords. Panics if it cannot start.
    pub async fn start_standby(&self, extra_settings: &[&str]) -> PrivateCluster {
        let bindir = self.cluster.bindir.clone();
        let mut last_error = String::new();
        for _ in 0..3 {
            match start_private_cluster(&bindir, extra_settings, Some((&self.dir, self.cluster.port))).await {
                Ok(mut standby) => {
                    standby.cluster.superuser_password.clone_from(&self.cluster.superuser_password);
                    return standby;
                }
                Err(StartError::PortTaken(message)) => last_error = message,
                Err(StartError::Failed(message)) => panic!("the standby did not start: {message}"),
            }
        }
        panic!("the standby did not start: {last_error}")
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Stop the server as `pg_ctl stop -m immediate` would, start it again, and return once it
    /// accepts connections (after crash recovery). Sessions of the old server are cut.
    pub async fn restart_immediate(&self) {
        let control = self.control.clone();
        let answer = tokio::task::spawn_blocking(move || -> Result<(), String> {
            use std::io::BufRead;
            let mut control = control.lock().map_err(|_| "the control pipe is poisoned".to_string())?;
            writeln!(control.stdin, "restart")
                .and_then(|()| control.stdin.flush())
                .map_err(|e| format!("send restart: {e}"))?;
            loop {
                let mut line = String::new();
                match control.stdout.read_line(&mut line) {
                    Ok(0) => return Err("the cluster's wrapper exited".into()),
                    Ok(_) if line.trim() == "restarted" => return Ok(()),
                    // `started` from the first start, if it was never read.
                    Ok(_) => {}
                    Err(e) => return Err(format!("read the wrapper's answer: {e}")),
                }
            }
        })
        .await
        .expect("the restart task panicked");
        if let Err(message) = answer {
            panic!("restarting the private cluster failed: {message}\n--- server log ---\n{}", self.log());
        }
        self.wait_ready(Duration::from_secs(60)).await;
    }

    /// Wait until the superuser can connect over TCP.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.cluster.connect("postgres", &self.cluster.superuser, &self.cluster.superuser_password).await {
                Ok(_) => return,
                Err(error) if Instant::now() > deadline => panic!(
                    "the private cluster does not accept connections {within:?} after its restart: {}\n--- server log ---\n{}",
                    describe_pg_error(&error),
                    self.log()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Create (or re-create) database `it_<stem of name>` set up as [`TestDb::create`] sets up
    /// its databases (schema `test`, grants, `flow_publication FOR ALL TABLES` with
    /// `publish_via_partition_root`); returns its name.
    pub async fn create_db(&self, name: &str) -> String {
        let database = format!("it_{}", identifier_stem(name));
        let admin = self.cluster.superuser_client("postgres").await;
        for statement in
            [format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"), format!("CREATE DATABASE \"{database}\"")]
        {
            if let Err(e) = admin.batch_execute(&statement).await {
                panic!("{statement}\nfailed: {}", describe_pg_error(&e));
            }
        }
        let setup = format!(
            "CREATE SCHEMA test;
             GRANT USAGE ON SCHEMA test, public TO {CAPTURE_USER};
             GRANT CREATE ON SCHEMA public TO {CAPTURE_USER};
             GRANT SELECT ON ALL TABLES IN SCHEMA test, public TO {CAPTURE_USER};
             ALTER DEFAULT PRIVILEGES IN SCHEMA test, public GRANT SELECT ON TABLES TO {CAPTURE_USER};
             CREATE PUBLICATION flow_publication FOR ALL TABLES
               WITH (publish_via_partition_root = true);"
        );
        let client = self.cluster.superuser_client(&database).await;
        if let Err(e) = client.batch_execute(&setup).await {
            panic!("setting up database {database} failed: {}", describe_pg_error(&e));
        }
        database
    }

    /// The connector's endpoint configuration for `database` of this cluster, as the capture
    /// role, with replication slot `slot`.
    pub fn endpoint_config(&self, database: &str, slot: &str) -> serde_json::Value {
        json!({
            "address": self.cluster.address(),
            "user": self.cluster.capture_user,
            "credentials": {"auth_type": "UserPassword", "password": self.cluster.capture_password},
            "database": database,
            "advanced": {"slotName": slot, "sslmode": "disable"},
        })
    }
}

async fn start_private_cluster(
    bindir: &Path,
    extra_settings: &[&str],
    primary: Option<(&Path, u16)>,
) -> Result<PrivateCluster, StartError> {
    let (mut server, dir, port) = spawn_cluster(
        bindir,
        "source-postgres-private-",
        PRIVATE_WRAPPER_SCRIPT,
        extra_settings,
        Stdio::piped(),
        primary,
    )
    .await?;
    let (Some(stdin), Some(stdout)) = (server.stdin.take(), server.stdout.take()) else {
        return Err(StartError::Failed("the private wrapper has no piped stdin and stdout".into()));
    };
    let control = PrivateControl { stdin, stdout: std::io::BufReader::new(stdout) };
    Ok(PrivateCluster {
        cluster: local_cluster(bindir, port, server),
        dir,
        control: std::sync::Arc::new(std::sync::Mutex::new(control)),
    })
}

// ---------------------------------------------------------------------------------------
// A private SSH server, the bastion of the SSH tunnel tests.

/// A private `sshd` on a free port of 127.0.0.1, with its own host key and one authorized
/// key, logging at DEBUG1 to a file (the `direct-tcpip` lines show what it forwarded).
/// Shared by all tests of the process, and stopped (its directory removed) when the test
/// process ends, however it ends: like the PostgreSQL server, it runs under a `sh` wrapper
/// that waits for EOF on a pipe only this process holds.
pub struct SshBastion {
    pub port: u16,
    /// The login user (the user the tests run as).
    pub user: String,
    /// The private key whose public key is authorized (RSA in PEM form, what Estuary's
    /// setup instructions generate with `ssh-keygen -m PEM -t rsa`).
    pub authorized_key: String,
    /// A valid private key that is not authorized (Ed25519, OpenSSH format).
    pub unauthorized_key: String,
    /// The server's host key fingerprint, `SHA256:...`, as `ssh-keygen -l` prints it.
    pub host_key_fingerprint: String,
    dir: PathBuf,
    /// Holds the write end of the wrapper's stdin pipe for the life of the process.
    _server: Child,
}

/// Where the OpenSSH server is installed by Debian's openssh-server package.
const SSHD: &str = "/usr/sbin/sshd";

impl SshBastion {
    /// `ssh://user@127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

static BASTION: OnceLock<Result<SshBastion, String>> = OnceLock::new();

/// The shared private SSH server, started on first use. Panics with how to install
/// openssh-server when `sshd` is missing: the tunnel tests must not pass by skipping.
pub fn ssh_bastion() -> &'static SshBastion {
    match BASTION.get_or_init(start_bastion) {
        Ok(bastion) => bastion,
        Err(message) => panic!("{message}"),
    }
}

fn start_bastion() -> Result<SshBastion, String> {
    if !Path::new(SSHD).exists() {
        return Err(format!(
            "{SSHD} is not installed; the SSH tunnel tests need it. Install the openssh-server package \
             (as root: apt-get install -y openssh-server; scripts/test.sh and .ci/run do this when run as root)"
        ));
    }
    let dir = std::env::temp_dir().join(format!("source-postgres-sshd-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let keygen = |file: &str, args: &[&str]| -> Result<String, String> {
        let path = dir.join(file);
        let output = Command::new("ssh-keygen")
            .args(args)
            .args(["-q", "-N", "", "-C", "source-postgres-test", "-f"])
            .arg(&path)
            .output()
            .map_err(|e| format!("run ssh-keygen (from openssh-client): {e}"))?;
        if !output.status.success() {
            return Err(format!("ssh-keygen {args:?} failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))
    };
    keygen("host_ed25519", &["-t", "ed25519"])?;
    let authorized_key = keygen("client_rsa", &["-t", "rsa", "-b", "2048", "-m", "PEM"])?;
    let unauthorized_key = keygen("other_ed25519", &["-t", "ed25519"])?;
    let public = fs::read_to_string(dir.join("client_rsa.pub")).map_err(|e| format!("read client_rsa.pub: {e}"))?;
    fs::write(dir.join("authorized_keys"), public).map_err(|e| format!("write authorized_keys: {e}"))?;
    // Privilege separation needs this directory when sshd runs as root.
    if fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
        fs::create_dir_all("/run/sshd").map_err(|e| format!("create /run/sshd: {e}"))?;
    }
    let port = free_port()?;
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_ed25519\nPidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
         AllowTcpForwarding yes\nLogLevel DEBUG1\n",
        dir = dir.display()
    );
    fs::write(dir.join("sshd_config"), config).map_err(|e| format!("write sshd_config: {e}"))?;
    let script = format!(
        "trap '' HUP INT TERM; {SSHD} -D -e -f {dir}/sshd_config 2>>{dir}/sshd.log & pid=$!; \
         cat >/dev/null; kill $pid; wait; rm -rf {dir}",
        dir = dir.display()
    );
    let server = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start sshd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            return Err(format!("sshd did not listen on port {port} within 20 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let output = Command::new("id").arg("-un").output().expect("run id -un");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    });
    // The host key's fingerprint as an operator would take it, from OpenSSH's own tool.
    let listed = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.join("host_ed25519.pub"))
        .output()
        .map_err(|e| format!("run ssh-keygen -lf: {e}"))?;
    let host_key_fingerprint = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .ok_or_else(|| format!("ssh-keygen -lf printed no fingerprint: {}", String::from_utf8_lossy(&listed.stderr)))?
        .to_string();
    Ok(SshBastion { port, user, authorized_key, unauthorized_key, host_key_fingerprint, dir, _server: server })
}
