//! SSH tunnels (`networkTunnel.sshForwarding`) against a real OpenSSH server
//! ([`harness::ssh_bastion`]): discovery and a capture (backfill, then a streamed change)
//! through the tunnel, and the single error line of each way a tunnel fails — a key the
//! bastion refuses, a bastion that is not listening, key text that is no key, a database
//! address the bastion cannot reach. No output may contain the private key.
//!
//! The bastion and the database both listen on 127.0.0.1, so the proof that the traffic
//! went through the tunnel is the bastion's own log: one `direct-tcpip` forward to the
//! database's port per connection.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::driver::{binding, merge_patch, Event, Session};
use crate::harness::{self, cluster, run_connector, ConnectorOutput, TestDb};

/// A configuration for the tests that fail at the tunnel, before any database is reached.
fn offline_config() -> Value {
    json!({
        "address": "127.0.0.1:5432",
        "user": harness::CAPTURE_USER,
        "credentials": {"auth_type": "UserPassword", "password": harness::CAPTURE_PASSWORD},
        "database": "postgres",
        "advanced": {"sslmode": "disable"},
    })
}

/// `config` with the tunnel through the test bastion, logging in with `key`.
fn tunneled(mut config: Value, key: &str) -> Value {
    let bastion = harness::ssh_bastion();
    config["networkTunnel"] = json!({"sshForwarding": {"sshEndpoint": bastion.endpoint(), "privateKey": key}});
    config
}

fn discover_output(config: &Value) -> ConnectorOutput {
    let request = json!({"discover": {"connectorType": "IMAGE", "config": config}});
    run_connector(&[], &format!("{request}\n"), &[])
}

fn validate_output(config: &Value) -> ConnectorOutput {
    let request = json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": config, "bindings": [
        {"resourceConfig": {"namespace": "test", "stream": "items"}, "collection": {"name": "tests/items", "key": ["/id"]}, "backfill": 0}
    ]}});
    run_connector(&[], &format!("{request}\n"), &[])
}

/// The request failed with exit code 1, its error is the last stderr line, and no output
/// holds any line of the private key's body. Returns the error's `msg`.
fn error_text(output: &ConnectorOutput, key: &str) -> String {
    assert_eq!(
        output.exit_code, 1,
        "expected a failure\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout, output.stderr
    );
    for line in key.lines().map(str::trim).filter(|l| l.len() > 16 && !l.starts_with("-----")) {
        assert!(
            !output.stdout.contains(line) && !output.stderr.contains(line),
            "the output holds the private key\n{}\n{}",
            output.stdout,
            output.stderr
        );
    }
    let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty()).expect("an error line");
    let line: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {last}"));
    assert_eq!(line["level"], "error", "{last}");
    line["msg"].as_str().expect("msg").to_string()
}

/// Forwards the bastion logged to the database's port so far.
pub(crate) fn forwards_to(port: u16) -> usize {
    let needle = format!("target 127.0.0.1 port {port}");
    harness::ssh_bastion()
        .log()
        .lines()
        .filter(|l| l.contains("server_request_direct_tcpip") && l.contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_capture_run_through_the_tunnel() {
    let db = TestDb::create("ssh_tunnel_capture").await;
    db.execute("CREATE TABLE test.items (id int PRIMARY KEY, label text); INSERT INTO test.items VALUES (1, 'one'), (2, 'two');")
        .await;
    let bastion = harness::ssh_bastion();
    let config = tunneled(db.endpoint_config(), &bastion.authorized_key);
    let pg_port = cluster().await.port;

    let before = forwards_to(pg_port);
    let request = json!({"discover": {"connectorType": "IMAGE", "config": config}});
    let output = run_connector(&[], &format!("{request}\n"), &[]);
    assert_eq!(output.exit_code, 0, "discovery failed:\n{}", output.stderr);
    assert!(output.stdout.contains("\"items\""), "test.items was not discovered:\n{}", output.stdout);
    assert!(forwards_to(pg_port) > before, "discovery did not go through the bastion:\n{}", bastion.log());

    let before = forwards_to(pg_port);
    let mut state = json!({});
    let mut session =
        Session::open_capturing_stderr(&config, vec![binding("items", &["/id"])], &state, &[("LOG_LEVEL", "debug")])
            .await;
    let mut ids = Vec::new();
    let mut inserted = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ids.contains(&3) {
        match session.next(deadline.saturating_duration_since(Instant::now())).await {
            Event::SourcedSchema { .. } => {}
            Event::Captured { doc } => ids.push(doc["id"].as_i64().expect("id")),
            Event::Checkpoint { patch } => {
                merge_patch(&mut state, &patch);
                session.acknowledge().await;
                // The backfill is done once both rows are in: the third row can only
                // arrive by replication.
                if !inserted && ids.contains(&1) && ids.contains(&2) {
                    db.execute("INSERT INTO test.items VALUES (3, 'three')").await;
                    inserted = true;
                }
            }
            Event::Timeout => panic!("row 3 did not arrive; captured {ids:?}"),
            Event::Exited(status) => panic!("the connector exited: {status}"),
        }
    }
    let stderr = session.stderr_lines().await.join("\n");
    session.kill().await;
    assert_eq!(ids, [1, 2, 3], "backfilled 1 and 2, then streamed 3");
    // Even at debug level the key shows nowhere; the session and its host key are logged.
    assert!(stderr.contains("SSH tunnel session open"), "{stderr}");
    for line in bastion.authorized_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!stderr.contains(line) && !output.stderr.contains(line), "the private key was logged");
    }
    // The capture's SQL connections and its replication connection, each its own channel.
    assert!(forwards_to(pg_port) >= before + 2, "the capture did not go through the bastion:\n{}", bastion.log());
}

#[test]
fn a_key_the_bastion_does_not_authorize_is_refused_by_name() {
    let bastion = harness::ssh_bastion();
    let config = tunneled(offline_config(), &bastion.unauthorized_key);
    for output in [discover_output(&config), validate_output(&config)] {
        let text = error_text(&output, &bastion.unauthorized_key);
        assert_eq!(
            text,
            format!(
                "SSH server \"127.0.0.1\" port {} refused public-key authentication for user \"{}\" with the configured \
                 networkTunnel.sshForwarding.privateKey\nHINT: add the public key of networkTunnel.sshForwarding.privateKey \
                 to the authorized_keys of user \"{}\" on the SSH server (ssh-keygen -y -f <key file> prints it), or fix \
                 the user in sshEndpoint",
                bastion.port, bastion.user, bastion.user
            )
        );
    }
}

/// A pinned host key (`hostKeyFingerprint`): the bastion's own fingerprint, as ssh-keygen
/// prints it, lets discovery through; any other is one error line with both fingerprints,
/// before the private key is offered (the bastion's log shows no authentication attempt).
#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_host_key_is_checked() {
    let db = TestDb::create("ssh_tunnel_host_key").await;
    db.execute("CREATE TABLE test.items (id int PRIMARY KEY)").await;
    let bastion = harness::ssh_bastion();
    let mut config = tunneled(db.endpoint_config(), &bastion.authorized_key);
    config["networkTunnel"]["sshForwarding"]["hostKeyFingerprint"] = json!(bastion.host_key_fingerprint);
    let output = discover_output(&config);
    assert_eq!(output.exit_code, 0, "discovery with the right host key failed:\n{}", output.stderr);
    assert!(output.stdout.contains("\"items\""), "{}", output.stdout);

    // Another valid fingerprint: the SHA-256 of nothing.
    let other = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    config["networkTunnel"]["sshForwarding"]["hostKeyFingerprint"] = json!(other);
    let logins = bastion.log().matches("userauth-request").count();
    assert!(logins > 0, "sshd's log shows no login, so it cannot show the absence of one:\n{}", bastion.log());
    let text = error_text(&discover_output(&config), &bastion.authorized_key);
    assert_eq!(
        text.lines().next().unwrap_or_default(),
        format!(
            "SSH server \"127.0.0.1\" port {} presented the host key {}, not the {other} of \
             networkTunnel.sshForwarding.hostKeyFingerprint",
            bastion.port, bastion.host_key_fingerprint
        )
    );
    assert!(text.contains("HINT: if the SSH server's host key was replaced on purpose"), "{text}");
    assert_eq!(bastion.log().matches("userauth-request").count(), logins, "the key was offered to an unknown host");

    config["networkTunnel"]["sshForwarding"]["hostKeyFingerprint"] = json!("SHA256:not-a-fingerprint");
    let text = error_text(&discover_output(&config), &bastion.authorized_key);
    assert!(text.contains("networkTunnel.sshForwarding.hostKeyFingerprint"), "{text}");
}

#[test]
fn a_bastion_that_is_not_listening_is_named() {
    let bastion = harness::ssh_bastion();
    let closed = harness::free_port().expect("a free port");
    let mut config = tunneled(offline_config(), &bastion.authorized_key);
    config["networkTunnel"]["sshForwarding"]["sshEndpoint"] =
        json!(format!("ssh://{}@127.0.0.1:{closed}", bastion.user));
    let text = error_text(&discover_output(&config), &bastion.authorized_key);
    assert_eq!(
        text,
        format!(
            "could not connect to SSH server \"127.0.0.1\" port {closed} (networkTunnel.sshForwarding.sshEndpoint): \
             Connection refused (os error 111)\nHINT: check the host and port of networkTunnel.sshForwarding.sshEndpoint \
             (ssh://user@host[:port]), and that the SSH server accepts connections from this network"
        )
    );
}

#[test]
fn key_text_that_is_no_key_names_the_accepted_formats() {
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nNOTAKEYNOTAKEYNOTAKEYNOTAKEY\n-----END OPENSSH PRIVATE KEY-----\n";
    let config = tunneled(offline_config(), key);
    let text = error_text(&discover_output(&config), key);
    assert!(
        text.starts_with(
            "endpoint configuration field \"networkTunnel.sshForwarding.privateKey\" is invalid: cannot be parsed as a \
             private key; expected an unencrypted private key in OpenSSH format"
        ),
        "{text}"
    );
    assert!(
        text.contains("BEGIN RSA PRIVATE KEY") && text.contains("BEGIN EC PRIVATE KEY") && text.contains("PKCS#8"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_address_the_bastion_cannot_reach_is_named() {
    let db = TestDb::create("ssh_tunnel_forward_refused").await;
    let bastion = harness::ssh_bastion();
    let closed = harness::free_port().expect("a free port");
    let mut config = tunneled(db.endpoint_config(), &bastion.authorized_key);
    config["address"] = json!(format!("127.0.0.1:{closed}"));
    let text = error_text(&discover_output(&config), &bastion.authorized_key);
    assert!(
        text.starts_with(&format!(
            "SSH server \"127.0.0.1\" port {} could not forward a connection to the database at \"127.0.0.1\" port \
             {closed}: the SSH server could not connect to it\nHINT: \"address\" is connected to from the SSH server",
            bastion.port
        )),
        "{text}"
    );
}

/// Parameters of a plain (no TLS) connection as the capture user to `cluster`'s `postgres`
/// database, through `tunnel`.
fn through_tunnel(
    cluster: &harness::TestCluster,
    tunnel: source_postgres::pg::tunnel::SshTunnel,
) -> source_postgres::pg::ConnectParams {
    source_postgres::pg::ConnectParams {
        host: cluster.host.clone(),
        port: cluster.port,
        user: cluster.capture_user.clone(),
        password: Some(cluster.capture_password.clone()),
        database: "postgres".into(),
        sslmode: source_postgres::pg::SslMode::Disable,
        sslrootcert: None,
        application_name: "source-postgres-tests".into(),
        connect_timeout: Duration::from_secs(10),
        tunnel: Some(std::sync::Arc::new(tunnel)),
    }
}

/// A connection whose reader pauses must not stall the others. The capture does exactly
/// that: it leaves the replication stream unread while a backfill query runs. Here one
/// connection holds a 200 MB result unread while another connects and queries.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_is_not_read_does_not_stall_the_others() {
    use source_postgres::pg::connect_sql;
    use source_postgres::pg::tunnel::SshTunnel;
    let cluster = cluster().await;
    let bastion = harness::ssh_bastion();
    let tunnel = SshTunnel::new(&bastion.endpoint(), &bastion.authorized_key).expect("the test key parses");
    let params = through_tunnel(cluster, tunnel);
    let paused = connect_sql(&params).await.expect("the first connection");
    let unread = paused
        .query_raw("SELECT repeat('x', 1000) FROM generate_series(1, 200000)", std::iter::empty::<i32>())
        .await
        .expect("the big query starts");
    // Let the server fill whatever buffers there are.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = tokio::time::timeout(Duration::from_secs(20), async {
        let client = connect_sql(&params).await.expect("the second connection");
        client.query_one("SELECT 41 + 1", &[]).await.expect("the second query").get::<_, i32>(0)
    })
    .await
    .expect("the second connection stalled behind the unread first one");
    assert_eq!(other, 42);
    drop(unread);
}

/// A tunnel that goes away under an open connection is named as the tunnel, not as the
/// database: the bastion is reached through a TCP relay, which the test then cuts.
#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_lost_under_a_connection_is_named() {
    use source_postgres::pg::replication::ReplicationClient;
    use source_postgres::pg::tunnel::SshTunnel;
    use source_postgres::pg::PgError;
    let cluster = cluster().await;
    let bastion = harness::ssh_bastion();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
    let relay_port = relay.local_addr().expect("relay address").port();
    let (cut, cut_seen) = tokio::sync::watch::channel(false);
    let bastion_port = bastion.port;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = relay.accept().await {
            let mut cut_seen = cut_seen.clone();
            tokio::spawn(async move {
                let mut outbound =
                    tokio::net::TcpStream::connect(("127.0.0.1", bastion_port)).await.expect("relay to the bastion");
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut_seen.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    let endpoint = format!("ssh://{}@127.0.0.1:{relay_port}", bastion.user);
    let tunnel = SshTunnel::new(&endpoint, &bastion.authorized_key).expect("the test key parses");
    let params = through_tunnel(cluster, tunnel);
    let mut client = ReplicationClient::connect(&params).await.expect("connect through the relay");
    client.identify_system().await.expect("IDENTIFY_SYSTEM through the tunnel");
    cut.send(true).expect("cut the relay");
    // The session notices the closed connection and ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = client.identify_system().await.expect_err("the tunnel is gone");
    assert!(matches!(err, PgError::SshLost { .. }) && err.is_transient(), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("the SSH tunnel to \"127.0.0.1\" port {relay_port} was lost: the connection to the SSH server ended")
    );
}
