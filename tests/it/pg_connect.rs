//! Connections: authentication (SCRAM, MD5, cleartext), how failures are reported, TLS under
//! each sslmode, and the replication client from slot creation to standby status updates.
//!
//! Most tests use the shared cluster of [`harness`]. Those that need server settings the
//! shared cluster must not have (`ssl=on`, `hostssl`-only and `md5` lines in pg_hba.conf)
//! use a second cluster of their own, [`tls_cluster`], started once on first use with a
//! throwaway CA and server certificate made by the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use source_postgres::lsn::Lsn;
use source_postgres::pg::replication::{ReplicationClient, ReplicationFrame, ReplicationStream};
use source_postgres::pg::tunnel::SshTunnel;
use source_postgres::pg::{connect_sql, quote_identifier, ConnectParams, PgError, SslMode};

use crate::harness::{self, TestDb};

const WAIT: Duration = Duration::from_secs(30);

/// Parameters for the capture role of the shared cluster, in `database`.
pub async fn capture_params(database: &str) -> ConnectParams {
    let cluster = harness::cluster().await;
    ConnectParams {
        host: cluster.host.clone(),
        port: cluster.port,
        user: cluster.capture_user.clone(),
        password: Some(cluster.capture_password.clone()),
        database: database.to_string(),
        sslmode: SslMode::Disable,
        sslrootcert: None,
        application_name: "source-postgres-tests".into(),
        connect_timeout: Duration::from_secs(10),
        tunnel: None,
    }
}

/// The session settings both kinds of connection must pin. The shared cluster runs with
/// `timezone=PST8PDT`, so a forgotten TimeZone shows up here.
const PINNED: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("lc_monetary", "C"),
];

#[tokio::test]
async fn scram_login_pins_the_session_on_both_connections() {
    let db = TestDb::create("scram_login_pins_the_session_on_both_connections").await;
    let params = capture_params(&db.name).await;

    let sql = connect_sql(&params).await.expect("SQL connection");
    let mut replication = ReplicationClient::connect(&params).await.expect("replication connection");
    assert!(replication.server_version_num() >= 100_000, "{}", replication.server_version_num());

    for (name, value) in PINNED {
        let row = sql.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), *value, "SQL connection: {name}");
        let rows = replication.simple_query(&format!("SHOW {name}")).await.unwrap();
        assert_eq!(rows, vec![vec![Some(value.to_string())]], "replication connection: {name}");
    }
    let row = sql.query_one("SELECT current_setting('server_version_num')::int", &[]).await.unwrap();
    assert_eq!(u32::try_from(row.get::<_, i32>(0)).unwrap(), replication.server_version_num());
}

#[tokio::test]
async fn replication_connection_answers_commands_and_queries() {
    let db = TestDb::create("replication_connection_answers_commands_and_queries").await;
    let mut client = ReplicationClient::connect(&capture_params(&db.name).await).await.unwrap();

    let identity = client.identify_system().await.unwrap();
    assert_eq!(identity.dbname.as_deref(), Some(db.name.as_str()));
    assert!(identity.timeline >= 1);
    assert!(identity.xlog_pos > Lsn::ZERO);
    assert!(identity.system_id.parse::<u64>().is_ok(), "{identity:?}");

    let rows = client.simple_query("SELECT 1, NULL::text UNION ALL SELECT 2, 'ünï'").await.unwrap();
    assert_eq!(rows, vec![vec![Some("1".into()), None], vec![Some("2".into()), Some("ünï".into())]]);

    let err = client.simple_query("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("42P01"), "{err:?}");
    assert_eq!(err.to_string(), "relation \"no_such_table\" does not exist (SQLSTATE 42P01)");
    // The session is still usable after an error.
    assert_eq!(client.simple_query("SELECT 3").await.unwrap(), vec![vec![Some("3".into())]]);

    let err = client.simple_query("SELECT '\0'").await.unwrap_err();
    assert!(matches!(err, PgError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn wrong_password_is_reported_without_the_password() {
    let db = TestDb::create("wrong_password_is_reported_without_the_password").await;
    let params = ConnectParams { password: Some("not-the-password".into()), ..capture_params(&db.name).await };
    let sql_err = connect_sql(&params).await.unwrap_err();
    let replication_err = ReplicationClient::connect(&params).await.unwrap_err();
    for err in [sql_err, replication_err] {
        assert!(matches!(err, PgError::AuthFailed { .. }), "{err:?}");
        assert_eq!(err.to_string(), "password authentication failed for user \"flow_capture\"");
        assert_eq!(err.hint().unwrap(), "check the user and password in the endpoint configuration");
        assert_eq!(err.sqlstate(), Some("28P01"));
        assert!(!err.is_transient());
        assert!(!format!("{err:?}{err}").contains("not-the-password"));
    }

    let params = ConnectParams { password: None, ..params };
    for err in [connect_sql(&params).await.unwrap_err(), ReplicationClient::connect(&params).await.unwrap_err()] {
        assert!(matches!(err, PgError::PasswordMissing { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn missing_database_and_missing_connect_privilege_are_named() {
    let db = TestDb::create("missing_database_and_missing_connect_privilege_are_named").await;
    let params = ConnectParams { database: "no_such_database".into(), ..capture_params(&db.name).await };
    for err in [connect_sql(&params).await.unwrap_err(), ReplicationClient::connect(&params).await.unwrap_err()] {
        assert_eq!(err.to_string(), "database \"no_such_database\" does not exist", "{err:?}");
        assert_eq!(err.sqlstate(), Some("3D000"));
    }

    db.execute(&format!("REVOKE CONNECT ON DATABASE {} FROM PUBLIC", quote_identifier(&db.name))).await;
    let params = capture_params(&db.name).await;
    for err in [connect_sql(&params).await.unwrap_err(), ReplicationClient::connect(&params).await.unwrap_err()] {
        assert!(matches!(err, PgError::NoConnectPrivilege { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("user \"flow_capture\" does not have CONNECT privilege on database \"{}\"", db.name)
        );
        assert!(err.hint().unwrap().contains("GRANT CONNECT ON DATABASE"));
    }
}

#[tokio::test]
async fn closed_port_is_unreachable_and_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let params = ConnectParams { port, ..capture_params("postgres").await };
    for err in [connect_sql(&params).await.unwrap_err(), ReplicationClient::connect(&params).await.unwrap_err()] {
        assert!(matches!(err, PgError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("could not connect to server at \"127.0.0.1\" port {port}: ")));
        assert!(err.is_transient());
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    // The kernel completes the TCP handshake for the listener; nobody ever answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let params =
        ConnectParams { port, connect_timeout: Duration::from_millis(300), ..capture_params("postgres").await };
    for err in [connect_sql(&params).await.unwrap_err(), ReplicationClient::connect(&params).await.unwrap_err()] {
        assert!(matches!(err, PgError::Timeout { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("timed out after 300ms connecting to server at \"127.0.0.1\" port {port}"));
        assert!(err.is_transient());
    }
    drop(listener);
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_refused() {
    let params = ConnectParams { sslmode: SslMode::Require, ..capture_params("postgres").await };
    for err in [connect_sql(&params).await.unwrap_err(), ReplicationClient::connect(&params).await.unwrap_err()] {
        assert!(matches!(err, PgError::TlsUnsupported { .. }), "{err:?}");
        assert!(err.to_string().ends_with("does not support TLS, but sslmode is \"require\""), "{err}");
    }
    // prefer falls back to plaintext.
    let params = ConnectParams { sslmode: SslMode::Prefer, ..params };
    connect_sql(&params).await.unwrap();
    ReplicationClient::connect(&params).await.unwrap();
}

/// Table `test.items`, published by the harness's `flow_publication`.
async fn create_items_table(db: &TestDb) {
    db.execute("CREATE TABLE test.items (id INTEGER PRIMARY KEY, label TEXT)").await;
}

/// pgoutput message tags of the XLogData received until a Commit; the Commit's end LSN.
async fn receive_transaction(stream: &mut ReplicationStream) -> (Vec<char>, Lsn) {
    let mut tags = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), stream.recv())
            .await
            .expect("a transaction within the time limit")
            .expect("recv")
            .expect("the stream is open");
        if let ReplicationFrame::XLogData { data, .. } = frame {
            let tag = char::from(data[0]);
            tags.push(tag);
            if tag == 'C' {
                // Commit: tag, flags (1), commit LSN (8), end LSN (8), timestamp (8).
                let end = u64::from_be_bytes(data[10..18].try_into().unwrap());
                return (tags, Lsn(end));
            }
        }
    }
}

async fn confirmed_flush_lsn(db: &TestDb, slot: &str) -> Option<Lsn> {
    let client = db.superuser_client().await;
    let row = client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0).map(|text| text.parse().unwrap())
}

async fn stream_one_insert(db: &TestDb, slot: &str, options: &[(&str, String)]) {
    let params = capture_params(&db.name).await;
    let mut client = ReplicationClient::connect(&params).await.unwrap();
    let consistent_point = client.create_logical_slot(slot).await.unwrap();
    assert!(consistent_point > Lsn::ZERO);

    let mut stream = client.start_replication(slot, consistent_point, options).await.unwrap();
    db.execute("INSERT INTO test.items VALUES (1, 'one')").await;
    let (tags, end) = receive_transaction(&mut stream).await;
    assert_eq!(tags, vec!['B', 'R', 'I', 'C'], "options {options:?}");

    // Confirm the transaction and ask for an immediate keepalive.
    stream.send_standby_status(end, end, end, true).await.unwrap();
    let keepalive = tokio::time::timeout(WAIT, async {
        loop {
            if let ReplicationFrame::Keepalive { wal_end, .. } = stream.recv().await.unwrap().unwrap() {
                return wal_end;
            }
        }
    })
    .await
    .expect("a keepalive in reply");
    assert!(keepalive >= end);
    let deadline = Instant::now() + WAIT;
    while confirmed_flush_lsn(db, slot).await < Some(end) {
        assert!(Instant::now() < deadline, "confirmed_flush_lsn did not reach {end}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // While streaming, the slot is busy for everyone else.
    let mut other = ReplicationClient::connect(&params).await.unwrap();
    let err = other.drop_slot(slot, false).await.unwrap_err();
    assert!(matches!(err, PgError::SlotActive { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("replication slot \"{slot}\" is active for PID ")), "{err}");
    assert!(err.is_transient());

    drop(stream);
    other.drop_slot(slot, true).await.unwrap();
    assert_eq!(confirmed_flush_lsn(db, slot).await, None, "the slot is gone");
}

#[tokio::test]
async fn slot_stream_confirm_and_drop_with_protocol_version_1() {
    let db = TestDb::create("slot_stream_confirm_and_drop_with_protocol_version_1").await;
    create_items_table(&db).await;
    let options = [("proto_version", "1".to_string()), ("publication_names", quote_identifier("flow_publication"))];
    stream_one_insert(&db, &db.slot_name(), &options).await;
}

#[tokio::test]
async fn slot_stream_confirm_and_drop_with_protocol_version_2_and_streaming() {
    let db = TestDb::create("slot_stream_confirm_and_drop_with_protocol_version_2_and_streaming").await;
    create_items_table(&db).await;
    let options = [
        ("proto_version", "2".to_string()),
        ("publication_names", quote_identifier("flow_publication")),
        ("streaming", "on".to_string()),
    ];
    stream_one_insert(&db, &db.slot_name(), &options).await;
}

#[tokio::test]
async fn slot_errors_are_classified() {
    let db = TestDb::create("slot_errors_are_classified").await;
    let slot = db.slot_name();
    let params = capture_params(&db.name).await;
    let mut client = ReplicationClient::connect(&params).await.unwrap();

    let err = client.drop_slot(&slot, false).await.unwrap_err();
    assert!(matches!(err, PgError::SlotMissing { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("replication slot \"{slot}\" does not exist"));

    client.create_logical_slot(&slot).await.unwrap();
    let err = client.create_logical_slot(&slot).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("42710"), "{err:?}");
    client.drop_slot(&slot, false).await.unwrap();

    let options = [("proto_version", "1".to_string()), ("publication_names", quote_identifier("flow_publication"))];
    let err = client.start_replication(&slot, Lsn::ZERO, &options).await.unwrap_err();
    assert!(matches!(err, PgError::SlotMissing { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("pg_create_logical_replication_slot"));
}

/// Forwards one TCP connection to `port`, passing the server's bytes on in chunks of at most
/// 4 kB, one chunk per millisecond, so that large messages arrive over many reads.
async fn start_trickling_proxy(port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
        let mut chunk = vec![0u8; 4096];
        while let Ok(read @ 1..) = server_read.read(&mut chunk).await {
            if client_write.write_all(&chunk[..read]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    proxy_port
}

/// `recv` is polled once at a time and dropped whenever it is not ready. Messages of
/// ~200 kB arrive in 4 kB pieces, so it is dropped in the middle of each; every message
/// must still arrive whole.
#[tokio::test]
async fn recv_survives_cancellation_in_the_middle_of_messages() {
    let db = TestDb::create("recv_survives_cancellation_in_the_middle_of_messages").await;
    create_items_table(&db).await;
    let slot = db.slot_name();
    let params = capture_params(&db.name).await;
    let params = ConnectParams { port: start_trickling_proxy(params.port).await, ..params };
    let mut client = ReplicationClient::connect(&params).await.unwrap();
    let start = client.create_logical_slot(&slot).await.unwrap();
    let options = [("proto_version", "1".to_string()), ("publication_names", quote_identifier("flow_publication"))];
    let mut stream = client.start_replication(&slot, start, &options).await.unwrap();

    const ROWS: usize = 10;
    db.execute(&format!(
        "INSERT INTO test.items SELECT i, repeat(md5(i::text), 6000) FROM generate_series(1, {ROWS}) AS i"
    ))
    .await;

    let mut inserts = 0;
    let mut cancelled = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "gave up after {inserts} inserts");
        // A zero timeout polls `recv` once, then drops it if it is pending.
        let Ok(frame) = tokio::time::timeout(Duration::ZERO, stream.recv()).await else {
            cancelled += 1;
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        };
        if let ReplicationFrame::XLogData { data, .. } = frame.unwrap().unwrap() {
            match data[0] {
                b'I' => {
                    assert!(data.len() > 192_000, "insert of {} bytes", data.len());
                    inserts += 1;
                }
                b'C' => break,
                _ => {}
            }
        }
    }
    assert_eq!(inserts, ROWS);
    assert!(cancelled >= ROWS * 10, "recv was cancelled only {cancelled} times; the test proved little");
}

/// While a fast stream catches up, its socket wakes the reader only once a batch has
/// arrived (the receive low-water mark, src/pg/read_coalescing.rs). A lone change far under
/// that mark must still arrive (within the coalescing deadline, not when more data happens
/// to come), the mark must then drop, and a burst read under a raised mark arrives whole.
#[tokio::test]
async fn a_raised_low_water_mark_neither_holds_back_a_lone_change_nor_loses_a_burst() {
    let db = TestDb::create("a_raised_low_water_mark_neither_holds_back_a_lone_change").await;
    create_items_table(&db).await;
    let slot = db.slot_name();
    let params = capture_params(&db.name).await;
    let mut client = ReplicationClient::connect(&params).await.unwrap();
    let start = client.create_logical_slot(&slot).await.unwrap();
    let options = [("proto_version", "1".to_string()), ("publication_names", quote_identifier("flow_publication"))];
    let mut stream = client.start_replication(&slot, start, &options).await.unwrap();
    assert_eq!(stream.read_low_water_mark(), 1, "a new stream reads as data arrives");

    // One small transaction, a few hundred bytes under a 32 KiB mark. Without the deadline
    // it would wait for the walsender's next keepalive (half of wal_sender_timeout).
    assert!(stream.force_read_low_water_mark(32 * 1024), "a TCP connection coalesces reads");
    assert_eq!(stream.read_low_water_mark(), 32 * 1024);
    let started = Instant::now();
    db.execute("INSERT INTO test.items VALUES (1, 'one')").await;
    let (tags, _) = receive_transaction(&mut stream).await;
    let waited = started.elapsed();
    assert_eq!(tags, vec!['B', 'R', 'I', 'C']);
    assert!(waited < Duration::from_secs(3), "a lone change under the mark took {waited:?}");
    assert_eq!(stream.read_low_water_mark(), 1, "the deadline lowered the mark");

    // A caller that polls `recv` once at a time and drops it, long before any deadline of
    // one call could pass, still gets the change (the deadline counts from the first read
    // that waited, whoever drops it).
    assert!(stream.force_read_low_water_mark(32 * 1024));
    db.execute("INSERT INTO test.items VALUES (2, 'two')").await;
    let started = Instant::now();
    let mut tags = Vec::new();
    while tags.last() != Some(&'C') {
        assert!(started.elapsed() < Duration::from_secs(3), "a change under the mark, recv always dropped: {tags:?}");
        match tokio::time::timeout(Duration::ZERO, stream.recv()).await {
            Ok(frame) => {
                if let ReplicationFrame::XLogData { data, .. } = frame.unwrap().unwrap() {
                    tags.push(char::from(data[0]));
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_micros(500)).await,
        }
    }
    assert_eq!(tags, vec!['B', 'I', 'C']);

    // A burst of about 1.5 MB under the mark: every change, in order.
    assert!(stream.force_read_low_water_mark(32 * 1024));
    const ROWS: usize = 5_000;
    db.execute(&format!(
        "INSERT INTO test.items SELECT i, repeat(md5(i::text), 8) FROM generate_series(3, {}) AS i",
        ROWS + 2
    ))
    .await;
    let (tags, _) = receive_transaction(&mut stream).await;
    // The Relation went out with the first transaction of the session.
    assert_eq!(tags.len(), ROWS + 2, "Begin, {ROWS} inserts, Commit");
    assert_eq!((tags[0], tags[ROWS + 1]), ('B', 'C'));
    assert!(tags[1..=ROWS].iter().all(|tag| *tag == 'I'), "{tags:?}");
}

// ---------------------------------------------------------------------------------------------
// A cluster of our own, for TLS and for password methods other than SCRAM.

/// Roles on [`tls_cluster`]: `tls_user` may only connect with TLS (scram-sha-256),
/// `md5_user` uses md5 and `cleartext_user` the `password` method, both without TLS.
const TLS_USER: (&str, &str) = ("tls_user", "tls-secret");
const MD5_USER: (&str, &str) = ("md5_user", "md5-secret");
const CLEARTEXT_USER: (&str, &str) = ("cleartext_user", "cleartext-secret");

struct TlsCluster {
    port: u16,
    /// PEM of the CA that issued the server certificate (valid for `localhost` only).
    ca_pem: String,
    ca_path: PathBuf,
    /// PEM of an unrelated CA.
    other_ca_pem: String,
    /// Closing its stdin (at process exit) stops the server and deletes its directory.
    _server: Child,
}

static TLS_CLUSTER: OnceLock<TlsCluster> = OnceLock::new();

async fn tls_cluster() -> &'static TlsCluster {
    tokio::task::spawn_blocking(|| TLS_CLUSTER.get_or_init(start_tls_cluster)).await.unwrap()
}

fn tls_params(cluster: &TlsCluster, (user, password): (&str, &str), host: &str, sslmode: SslMode) -> ConnectParams {
    ConnectParams {
        host: host.into(),
        port: cluster.port,
        user: user.into(),
        password: Some(password.into()),
        database: "postgres".into(),
        sslmode,
        sslrootcert: Some(cluster.ca_pem.clone()),
        application_name: "source-postgres-tests".into(),
        connect_timeout: Duration::from_secs(10),
        tunnel: None,
    }
}

/// Connect both ways; return whether the SQL session is encrypted, or the two errors.
async fn connect_both(params: &ConnectParams) -> Result<bool, (PgError, PgError)> {
    let sql = connect_sql(params).await;
    let replication = ReplicationClient::connect(params).await;
    match (sql, replication) {
        (Ok(sql), Ok(mut replication)) => {
            let query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
            let sql_ssl: bool = sql.query_one(query, &[]).await.unwrap().get(0);
            let rows = replication.simple_query(query).await.unwrap();
            let replication_ssl = rows[0][0].as_deref() == Some("t");
            assert_eq!(sql_ssl, replication_ssl, "both connections negotiate alike");
            Ok(sql_ssl)
        }
        (Err(sql), Err(replication)) => Err((sql, replication)),
        (sql, replication) => {
            panic!("the connections disagree: SQL {:?}, replication {:?}", sql.map(|_| ()), replication.map(|_| ()))
        }
    }
}

#[tokio::test]
async fn sslmodes_verify_what_libpq_verifies() {
    let cluster = tls_cluster().await;
    let params = |host: &str, sslmode| tls_params(cluster, TLS_USER, host, sslmode);

    // Without a root certificate, require and prefer accept the self-signed chain.
    for sslmode in [SslMode::Require, SslMode::Prefer, SslMode::Allow] {
        let params = ConnectParams { sslrootcert: None, ..params("127.0.0.1", sslmode) };
        assert_eq!(connect_both(&params).await.map_err(|e| format!("{e:?}")), Ok(true), "{sslmode}");
    }
    // verify-ca checks the chain only: 127.0.0.1 is not in the certificate, and that is fine.
    assert_eq!(connect_both(&params("127.0.0.1", SslMode::VerifyCa)).await.map_err(|e| format!("{e:?}")), Ok(true));
    // verify-full also checks the name.
    assert_eq!(connect_both(&params("localhost", SslMode::VerifyFull)).await.map_err(|e| format!("{e:?}")), Ok(true));
    let (sql, replication) = connect_both(&params("127.0.0.1", SslMode::VerifyFull)).await.unwrap_err();
    for err in [sql, replication] {
        assert!(matches!(err, PgError::TlsFailed { .. }), "{err:?}");
        assert!(err.to_string().starts_with("TLS handshake with \"127.0.0.1\" failed: "), "{err}");
        assert!(err.hint().unwrap().contains("not valid for this host name"), "{err:?}");
        assert!(!err.is_transient());
    }

    // The root certificate may be a file path.
    let from_file = ConnectParams {
        sslrootcert: Some(cluster.ca_path.to_str().unwrap().into()),
        ..params("localhost", SslMode::VerifyFull)
    };
    assert_eq!(connect_both(&from_file).await.map_err(|e| format!("{e:?}")), Ok(true));

    // A chain to another CA fails under verify-ca, and under require once sslrootcert is
    // given (libpq then verifies too); without sslrootcert, the public roots do not know it.
    for (sslmode, rootcert) in [
        (SslMode::VerifyCa, Some(cluster.other_ca_pem.clone())),
        (SslMode::Require, Some(cluster.other_ca_pem.clone())),
        (SslMode::VerifyFull, None),
    ] {
        let params = ConnectParams { sslrootcert: rootcert, ..params("localhost", sslmode) };
        let (sql, replication) = connect_both(&params).await.unwrap_err();
        for err in [sql, replication] {
            assert!(matches!(err, PgError::TlsFailed { .. }), "{sslmode}: {err:?}");
            assert!(err.hint().unwrap().contains("CA"), "{sslmode}: {err:?}");
        }
    }

    // pg_hba.conf has only hostssl lines for this user.
    let (sql, replication) = connect_both(&params("127.0.0.1", SslMode::Disable)).await.unwrap_err();
    for err in [sql, replication] {
        assert!(matches!(err, PgError::TlsRequired { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "the server at \"127.0.0.1\" port {} only accepts encrypted connections, but sslmode is \"disable\"",
                cluster.port
            )
        );
        assert!(err.hint().unwrap().contains("verify-full"));
    }
}

#[tokio::test]
async fn replication_over_tls_streams_changes() {
    let cluster = tls_cluster().await;
    let params = tls_params(cluster, TLS_USER, "localhost", SslMode::VerifyFull);
    let sql = connect_sql(&params).await.unwrap();
    sql.batch_execute(
        "CREATE TABLE tls_items (id INTEGER PRIMARY KEY, label TEXT);
         CREATE PUBLICATION tls_publication FOR TABLE tls_items;",
    )
    .await
    .unwrap();

    let mut client = ReplicationClient::connect(&params).await.unwrap();
    let start = client.create_logical_slot("tls_slot").await.unwrap();
    let options = [("proto_version", "1".to_string()), ("publication_names", quote_identifier("tls_publication"))];
    let mut stream = client.start_replication("tls_slot", start, &options).await.unwrap();
    sql.batch_execute("INSERT INTO tls_items VALUES (1, 'over TLS')").await.unwrap();
    let (tags, end) = receive_transaction(&mut stream).await;
    assert_eq!(tags, vec!['B', 'R', 'I', 'C']);
    stream.send_standby_status(end, end, end, false).await.unwrap();
    drop(stream);

    let mut client = ReplicationClient::connect(&params).await.unwrap();
    client.drop_slot("tls_slot", true).await.unwrap();
}

#[tokio::test]
async fn md5_and_cleartext_passwords_authenticate() {
    let cluster = tls_cluster().await;
    for user in [MD5_USER, CLEARTEXT_USER] {
        let params = tls_params(cluster, user, "127.0.0.1", SslMode::Disable);
        assert_eq!(connect_both(&params).await.map_err(|e| format!("{e:?}")), Ok(false), "{}", user.0);
        let mut client = ReplicationClient::connect(&params).await.unwrap();
        assert!(client.identify_system().await.unwrap().xlog_pos > Lsn::ZERO);

        let wrong = ConnectParams { password: Some("wrong".into()), ..params };
        let (sql, replication) = connect_both(&wrong).await.unwrap_err();
        for err in [sql, replication] {
            assert!(matches!(err, PgError::AuthFailed { .. }), "{}: {err:?}", user.0);
            assert_eq!(err.to_string(), format!("password authentication failed for user \"{}\"", user.0));
        }
    }
}

/// When running as root, the `postgres` OS user's uid and gid: the server refuses to run as root.
fn postgres_owner() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").expect("stat /proc/self").uid() != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id").args([flag, "postgres"]).output().expect("run id");
        assert!(output.status.success(), "running as root, but there is no postgres OS user");
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    command
}

/// A CA (EC P-256) and, when `issue_server_cert`, a server certificate for `localhost` only.
fn make_certificates(dir: &Path, ca_name: &str, issue_server_cert: bool) {
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    let ca_key = format!("{ca_name}.key");
    let ca_crt = format!("{ca_name}.crt");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-days",
        "3650",
        "-subj",
        &format!("/CN={ca_name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    if !issue_server_cert {
        return;
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
    ]);
}

/// Stops the server when our stdin closes (the test process ended), then deletes `$1`.
const WRAPPER: &str = r#"
dir=$1
shift
"$@" >"$dir/postgres.log" 2>&1 </dev/null &
pid=$!
cat >/dev/null
kill -INT "$pid"
wait "$pid"
rm -rf "$dir"
"#;

fn start_tls_cluster() -> TlsCluster {
    let bindir = harness::cluster_blocking().bindir.clone();
    let owner = postgres_owner();
    let dir = tempfile::Builder::new().prefix("source-postgres-tls-").tempdir().unwrap().keep();
    make_certificates(&dir, "test-ca", true);
    make_certificates(&dir, "other-ca", false);
    if let Some((uid, gid)) = owner {
        // initdb, running as the owner, creates the data directory in here.
        run(Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(&dir));
    }
    // The server insists on a private key only its owner can read.
    run(Command::new("chmod").arg("600").arg(dir.join("server.key")));
    let data = dir.join("data");
    run(as_owner(
        Command::new(bindir.join("initdb")).arg("-D").arg(&data).args([
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]),
        owner,
    )
    .env_remove("PGDATA"));
    // Replaces the file initdb wrote; the owner can still read it.
    std::fs::write(
        data.join("pg_hba.conf"),
        format!(
            "local all all trust\n\
             host all {md5} 127.0.0.1/32 md5\n\
             host all {cleartext} 127.0.0.1/32 password\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
            md5 = MD5_USER.0,
            cleartext = CLEARTEXT_USER.0,
        ),
    )
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut wrapper = Command::new("sh");
    wrapper.arg("-c").arg(WRAPPER).arg("sh").arg(&dir).arg(bindir.join("postgres")).arg("-D").arg(&data);
    wrapper.args(["-p", &port.to_string()]).arg("-k").arg(&dir);
    for setting in [
        "listen_addresses=127.0.0.1".to_string(),
        "wal_level=logical".to_string(),
        "max_replication_slots=10".to_string(),
        "max_wal_senders=20".to_string(),
        "fsync=off".to_string(),
        "ssl=on".to_string(),
        format!("ssl_cert_file={}", dir.join("server.crt").display()),
        format!("ssl_key_file={}", dir.join("server.key").display()),
    ] {
        wrapper.arg("-c").arg(setting);
    }
    wrapper.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).current_dir(&dir);
    let server = as_owner(&mut wrapper, owner).spawn().expect("start postgres");

    let psql = |sql: &str| {
        Command::new(bindir.join("psql"))
            .arg("-h")
            .arg(&dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-XqAtc", sql])
            .output()
            .expect("run psql")
    };
    let deadline = Instant::now() + WAIT;
    while !psql("SELECT 1").status.success() {
        let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        // The probe itself may be told "the database system is starting up": not a failure.
        let failed = log.lines().any(|l| l.contains("FATAL") && !l.contains("the database system is starting up"));
        assert!(Instant::now() < deadline && !failed, "the TLS test cluster did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let setup = format!(
        "SET password_encryption = 'md5';
         CREATE ROLE {} LOGIN REPLICATION PASSWORD '{}';
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE {} LOGIN REPLICATION PASSWORD '{}';
         CREATE ROLE {} LOGIN REPLICATION PASSWORD '{}';
         GRANT pg_read_all_data, pg_read_all_settings, pg_read_all_stats TO {};
         GRANT CREATE ON SCHEMA public TO {};
         GRANT CREATE ON DATABASE postgres TO {};",
        MD5_USER.0,
        MD5_USER.1,
        CLEARTEXT_USER.0,
        CLEARTEXT_USER.1,
        TLS_USER.0,
        TLS_USER.1,
        TLS_USER.0,
        TLS_USER.0,
        TLS_USER.0,
    );
    let output = psql(&setup);
    assert!(output.status.success(), "setting up roles: {}", String::from_utf8_lossy(&output.stderr));
    // Otherwise the md5 line would quietly run SCRAM.
    let output = psql(&format!("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = '{}'", MD5_USER.0));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "md5", "the md5 role's password is stored as MD5");

    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    TlsCluster {
        port,
        ca_pem: read("test-ca.crt"),
        ca_path: dir.join("test-ca.crt"),
        other_ca_pem: read("other-ca.crt"),
        _server: server,
    }
}

/// TLS runs end to end through an SSH tunnel: the bastion only relays bytes, both kinds of
/// connection are encrypted (pg_stat_ssl), and verify-full still checks the configured host
/// name, not the bastion's (so 127.0.0.1, absent from the certificate, is refused).
#[tokio::test]
async fn tls_verify_full_runs_end_to_end_through_the_ssh_tunnel() {
    let cluster = tls_cluster().await;
    let bastion = harness::ssh_bastion();
    let tunnel = SshTunnel::new(&bastion.endpoint(), &bastion.authorized_key).expect("the test key parses");
    let tunnel = Some(std::sync::Arc::new(tunnel));
    let forwards = || bastion.log().lines().filter(|l| l.contains("server_request_direct_tcpip")).count();
    let before = forwards();
    let params =
        ConnectParams { tunnel: tunnel.clone(), ..tls_params(cluster, TLS_USER, "localhost", SslMode::VerifyFull) };
    assert_eq!(connect_both(&params).await.map_err(|e| format!("{e:?}")), Ok(true));
    assert!(forwards() >= before + 2, "the connections did not go through the bastion:\n{}", bastion.log());

    let params = ConnectParams { tunnel, ..tls_params(cluster, TLS_USER, "127.0.0.1", SslMode::VerifyFull) };
    let (sql, replication) = connect_both(&params).await.unwrap_err();
    for err in [sql, replication] {
        assert!(err.to_string().starts_with("TLS handshake with \"127.0.0.1\" failed: "), "{err}");
    }
}
