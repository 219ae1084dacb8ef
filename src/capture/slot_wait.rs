//! What a replication slot being created is waiting for.
//!
//! `CREATE_REPLICATION_SLOT ... LOGICAL` returns only once decoding can start at a
//! consistent point, which is after every transaction that had a transaction ID when the
//! slot was requested has ended, prepared transactions included. A session left idle in a
//! transaction, a long batch job or a forgotten `PREPARE TRANSACTION` therefore keeps a new
//! capture waiting, silently and for as long as it lasts (the Go connector waits without a
//! word). While the creation waits, the session reports what it waits for: the transactions
//! that began before the request, from `pg_stat_activity` and `pg_prepared_xacts`, with what
//! ends them. The query is advisory: if it fails, the wait goes on and is reported without
//! names.
//!
//! The formatting is pure ([`describe`]); only [`blockers`] talks to the server.

use std::fmt::Write as _;

use tokio_postgres::Client;

/// A session whose open transaction began before the slot was requested. Without
/// `pg_read_all_stats`, `pg_stat_activity` shows the capture user only who runs another
/// user's session (user, database, application), not what it does: `state`, the age and
/// the statement are then unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTransaction {
    pub pid: i32,
    pub user: Option<String>,
    pub database: Option<String>,
    pub application: Option<String>,
    /// `active`, `idle in transaction`, …; `None` when hidden from the capture user.
    pub state: Option<String>,
    /// Seconds since the transaction began.
    pub age_seconds: Option<i64>,
    /// The start of its current or last statement.
    pub query: Option<String>,
}

impl RunningTransaction {
    fn hidden(&self) -> bool {
        self.state.is_none()
    }
}

/// A transaction prepared for two-phase commit, which only `COMMIT PREPARED` or
/// `ROLLBACK PREPARED` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedTransaction {
    pub gid: String,
    pub owner: Option<String>,
    pub database: Option<String>,
    pub age_seconds: i64,
}

/// What the server shows of the transactions a slot creation may be waiting for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blockers {
    pub running: Vec<RunningTransaction>,
    pub prepared: Vec<PreparedTransaction>,
}

/// How many of each kind a report names; the rest are counted.
const NAMED: usize = 5;
/// How much of a statement a report quotes.
const QUERY_CHARS: usize = 80;

/// The sessions holding a transaction ID whose transaction began more than `waited_seconds`
/// ago (so before the slot was requested; hidden ones, whose start is unknown, too), oldest
/// first, and the prepared transactions. The session asking is left out.
pub async fn blockers(client: &Client, waited_seconds: i64) -> Result<Blockers, tokio_postgres::Error> {
    let interval = format!("{waited_seconds} seconds");
    let query_chars = i32::try_from(QUERY_CHARS).unwrap_or(i32::MAX);
    let running = client
        .query(
            "SELECT pid, usename::text, datname::text, application_name, state,
                    floor(extract(epoch FROM now() - xact_start))::int8,
                    CASE WHEN state IS NULL THEN NULL ELSE left(query, $2) END
             FROM pg_catalog.pg_stat_activity
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
               AND (xact_start IS NULL OR xact_start < now() - $1::text::interval)
             ORDER BY xact_start NULLS LAST, pid",
            &[&interval, &query_chars],
        )
        .await?;
    let prepared = client
        .query(
            "SELECT gid, owner::text, database::text, floor(extract(epoch FROM now() - prepared))::int8
             FROM pg_catalog.pg_prepared_xacts
             ORDER BY prepared, gid",
            &[],
        )
        .await?;
    Ok(Blockers {
        running: running
            .iter()
            .map(|row| RunningTransaction {
                pid: row.get(0),
                user: row.get(1),
                database: row.get(2),
                application: row.get(3),
                state: row.get(4),
                age_seconds: row.get(5),
                query: row.get(6),
            })
            .collect(),
        prepared: prepared
            .iter()
            .map(|row| PreparedTransaction {
                gid: row.get(0),
                owner: row.get(1),
                database: row.get(2),
                age_seconds: row.get(3),
            })
            .collect(),
    })
}

/// The warning for a slot creation that has waited `waited_seconds`: the message and its hint.
pub fn describe(slot: &str, waited_seconds: i64, blockers: Option<&Blockers>) -> (String, String) {
    let mut message = format!(
        "creating replication slot {slot:?} has waited {waited_seconds} s for transactions that were running when it was requested to end"
    );
    let mut hint = String::from(
        "a new logical slot starts decoding only after every transaction that held a transaction ID when it was requested has ended; ",
    );
    let Some(blockers) = blockers else {
        hint.push_str("end long-running or idle-in-transaction sessions (see pg_stat_activity) and prepared transactions (see pg_prepared_xacts)");
        return (message, hint);
    };
    if !blockers.running.is_empty() {
        message.push_str(": ");
        let named: Vec<String> = blockers.running.iter().take(NAMED).map(running_text).collect();
        message.push_str(&named.join("; "));
        if blockers.running.len() > NAMED {
            let _ = write!(message, "; and {} more", blockers.running.len() - NAMED);
        }
    }
    if !blockers.prepared.is_empty() {
        message.push_str(if blockers.running.is_empty() { ": " } else { "; " });
        let named: Vec<String> = blockers.prepared.iter().take(NAMED).map(prepared_text).collect();
        message.push_str(&named.join("; "));
        if blockers.prepared.len() > NAMED {
            let _ = write!(message, "; and {} more prepared", blockers.prepared.len() - NAMED);
        }
    }
    let mut remedies = Vec::new();
    if let Some(oldest) = blockers.running.first() {
        remedies.push(format!(
            "commit or roll back the sessions named, or end one with SELECT pg_terminate_backend({})",
            oldest.pid
        ));
    }
    if let Some(oldest) = blockers.prepared.first() {
        remedies.push(format!(
            "finish prepared transactions with COMMIT PREPARED {} or ROLLBACK PREPARED {}",
            sql_literal(&oldest.gid),
            sql_literal(&oldest.gid)
        ));
    }
    if blockers.running.iter().any(RunningTransaction::hidden) {
        remedies.push(
            "grant pg_read_all_stats to the capture user to see what other users' sessions are doing".to_string(),
        );
    }
    if blockers.running.is_empty() && blockers.prepared.is_empty() {
        remedies.push("end long-running or idle-in-transaction sessions (see pg_stat_activity)".to_string());
    }
    hint.push_str(&remedies.join("; "));
    (message, hint)
}

fn running_text(t: &RunningTransaction) -> String {
    let mut text = format!("pid {}", t.pid);
    let who: Vec<String> = [
        t.user.as_ref().map(|u| format!("user {u:?}")),
        t.database.as_ref().map(|d| format!("database {d:?}")),
        t.application.as_ref().filter(|a| !a.is_empty()).map(|a| format!("application {a:?}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !who.is_empty() {
        let _ = write!(text, " ({})", who.join(", "));
    }
    match (&t.state, t.age_seconds) {
        (None, _) => text.push_str(", details hidden from the capture user"),
        (Some(state), Some(age)) => {
            let _ = write!(text, ", {state} for {age} s");
        }
        (Some(state), None) => {
            let _ = write!(text, ", {state}");
        }
    }
    if let Some(query) = t.query.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let one_line: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = write!(text, ", last statement: {one_line}");
    }
    text
}

fn prepared_text(t: &PreparedTransaction) -> String {
    let mut text = format!("prepared transaction {}", sql_literal(&t.gid));
    if let Some(owner) = &t.owner {
        let _ = write!(text, " (owner {owner:?})");
    }
    let _ = write!(text, ", prepared {} s ago", t.age_seconds);
    text
}

/// A SQL string literal of `text`: how a gid is written in `COMMIT PREPARED`.
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: i32, age_seconds: i64) -> RunningTransaction {
        RunningTransaction {
            pid,
            user: Some("app".into()),
            database: Some("shop".into()),
            application: Some("nightly job".into()),
            state: Some("idle in transaction".into()),
            age_seconds: Some(age_seconds),
            query: Some("UPDATE orders\n   SET total = 0\n WHERE id = 1".into()),
        }
    }

    #[test]
    fn without_details_the_hint_says_where_to_look() {
        let (message, hint) = describe("flow_slot", 5, None);
        assert_eq!(
            message,
            "creating replication slot \"flow_slot\" has waited 5 s for transactions that were running when it was requested to end"
        );
        assert!(hint.contains("pg_stat_activity") && hint.contains("pg_prepared_xacts"), "{hint}");
    }

    #[test]
    fn running_and_prepared_transactions_are_named_oldest_first_with_their_remedies() {
        let blockers = Blockers {
            running: vec![running(4242, 3600), running(77, 12)],
            prepared: vec![PreparedTransaction {
                gid: "tx'1".into(),
                owner: Some("app".into()),
                database: Some("shop".into()),
                age_seconds: 86_400,
            }],
        };
        let (message, hint) = describe("flow_slot", 35, Some(&blockers));
        assert!(
            message.ends_with(
                ": pid 4242 (user \"app\", database \"shop\", application \"nightly job\"), idle in transaction for 3600 s, \
                 last statement: UPDATE orders SET total = 0 WHERE id = 1; pid 77 (user \"app\", database \"shop\", \
                 application \"nightly job\"), idle in transaction for 12 s, last statement: UPDATE orders SET total = 0 \
                 WHERE id = 1; prepared transaction 'tx''1' (owner \"app\"), prepared 86400 s ago"
            ),
            "{message}"
        );
        assert!(hint.contains("SELECT pg_terminate_backend(4242)"), "{hint}");
        assert!(hint.contains("COMMIT PREPARED 'tx''1' or ROLLBACK PREPARED 'tx''1'"), "{hint}");
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let blockers = Blockers { running: (1..=8).map(|pid| running(pid, 60)).collect(), ..Blockers::default() };
        let (message, _) = describe("s", 5, Some(&blockers));
        assert!(message.contains("pid 5 ") && !message.contains("pid 6 "), "{message}");
        assert!(message.ends_with("; and 3 more"), "{message}");
    }

    #[test]
    fn sessions_hidden_from_the_capture_user_are_named_with_what_shows_them() {
        let hidden = RunningTransaction {
            pid: 9,
            user: Some("postgres".into()),
            database: Some("shop".into()),
            application: Some(String::new()),
            state: None,
            age_seconds: None,
            query: None,
        };
        let blockers = Blockers { running: vec![hidden], ..Blockers::default() };
        let (message, hint) = describe("s", 5, Some(&blockers));
        assert!(
            message.ends_with(": pid 9 (user \"postgres\", database \"shop\"), details hidden from the capture user"),
            "{message}"
        );
        assert!(hint.contains("SELECT pg_terminate_backend(9)") && hint.contains("grant pg_read_all_stats"), "{hint}");
        let (_, hint) = describe("s", 5, Some(&Blockers { running: vec![running(1, 5)], ..Blockers::default() }));
        assert!(!hint.contains("pg_read_all_stats"), "{hint}");
    }
}
