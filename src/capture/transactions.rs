//! Transaction assembly: which pgoutput messages belong to which transaction, and what the
//! session must do with each.
//!
//! The replication stream interleaves two shapes (see [`crate::replication::pgoutput`]):
//!
//! ```text
//!   B  R? I U D ...  C                       a transaction, sent whole at its commit
//!   S(x) R? I U D ... E   S(y) ... E   ...   c(x) | A(x, sub)    streamed (protocol 2 and up)
//! ```
//!
//! A transaction between BEGIN and COMMIT is applied as it arrives: its changes become
//! documents at once, and its COMMIT ends it (the checkpoint after it makes them durable).
//! A streamed transaction arrives in blocks while it is still running, interleaved with
//! blocks of other streamed transactions, and only later commits or aborts. Its messages are
//! buffered per top-level XID (the session's spill) and replayed at its Stream Commit as one
//! transaction with the commit's LSN and time; a Stream Abort discards the whole transaction
//! or one subtransaction's messages.
//!
//! [`TransactionAssembler`] is that bookkeeping as a state machine with no IO: each decoded
//! message goes in, and a [`Step`] comes out that says what the session must do (apply a
//! change in transaction T, spill the raw message for XID X, replay X, discard, commit).
//! Invariants it keeps:
//!
//! - A transaction is never split: a change is applied only inside BEGIN..COMMIT or inside
//!   the replay of a committed streamed transaction, and a COMMIT ends exactly the
//!   transaction its BEGIN opened (the LSNs must match).
//! - Nothing of a streamed transaction is applied before its Stream Commit: every data or
//!   schema message inside a block is spilled, under the XID its (sub)transaction carries.
//! - Events out of place (a nested BEGIN, a COMMIT without BEGIN, a change outside a
//!   transaction, a Stream Stop without Stream Start, ...) are [`TransactionError`]s: the
//!   server never sends them, so the bookkeeping (ours or the server's) is wrong, and the
//!   capture fails rather than guess which transaction a change belongs to.

use std::fmt;

use crate::error::Error;
use crate::lsn::Lsn;
use crate::replication::pgoutput::{DecodeContext, LogicalMessage};

/// The transaction whose changes are being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transaction {
    /// The commit's LSN (BEGIN's final LSN, or Stream Commit's commit LSN).
    pub(super) final_lsn: Lsn,
    /// Commit time, microseconds since the PostgreSQL epoch.
    pub(super) commit_time_us: i64,
    pub(super) xid: u32,
}

/// What the session does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing: a BEGIN opened a transaction, a streamed block started or stopped, or the
    /// message carries nothing the capture uses (Type, Origin, a logical decoding message).
    Nothing,
    /// A Relation message, live outside a streamed block or replayed: update the relation
    /// cache.
    Relation,
    /// A TRUNCATE, live outside a streamed block or replayed (not captured: the session
    /// warns or fails).
    Truncate,
    /// An insert, update or delete of this transaction: apply it now.
    Change(Transaction),
    /// Buffer the message's raw bytes for streamed transaction `top_xid`, as belonging to
    /// (sub)transaction `xid`.
    Spill { top_xid: u32, xid: u32 },
    /// Forget what was buffered for subtransaction `subxid` of streamed transaction `xid`
    /// (all of it when `subxid == xid`).
    Discard { xid: u32, subxid: u32 },
    /// Streamed transaction `.0.xid` committed: replay its buffered messages, each through
    /// [`TransactionAssembler::step`] (which applies them in this transaction), then call
    /// [`TransactionAssembler::finish_replay`] and commit.
    Replay(Transaction),
    /// The transaction committed: the stream is complete up to `end_lsn`.
    Commit { end_lsn: Lsn },
}

/// A message that cannot occur where it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TransactionError {
    NestedBegin {
        xid: u32,
    },
    BareCommit,
    CommitMismatch {
        commit_lsn: Lsn,
        begin_final_lsn: Lsn,
    },
    ChangeOutsideTransaction,
    /// A Stream Start, Stream Commit or Stream Abort inside BEGIN..COMMIT.
    StreamEventInTransaction {
        event: &'static str,
    },
    /// A BEGIN, COMMIT, Stream Start, Stream Commit or Stream Abort inside a streamed block.
    EventInStreamedBlock {
        event: &'static str,
        top_xid: u32,
    },
    StreamStopWithoutStart,
    /// A message other than a Relation, a change or a TRUNCATE in a replayed transaction
    /// (only those are buffered), or a replay finished that was not started.
    Replay {
        what: String,
    },
    /// A message the capture does not ask for (two-phase commit messages).
    Unexpected {
        message: String,
    },
}

impl fmt::Display for TransactionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionError::NestedBegin { xid } => write!(f, "BEGIN of transaction {xid} inside another transaction"),
            TransactionError::BareCommit => write!(f, "COMMIT without BEGIN"),
            TransactionError::CommitMismatch { commit_lsn, begin_final_lsn } => {
                write!(f, "COMMIT at {commit_lsn} does not match BEGIN's {begin_final_lsn}")
            }
            TransactionError::ChangeOutsideTransaction => write!(f, "a change arrived outside of a transaction"),
            TransactionError::StreamEventInTransaction { event } => write!(f, "{event} inside a transaction"),
            TransactionError::EventInStreamedBlock { event, top_xid } => {
                write!(f, "{event} inside the streamed block of transaction {top_xid}")
            }
            TransactionError::StreamStopWithoutStart => write!(f, "STREAM STOP without STREAM START"),
            TransactionError::Replay { what } => write!(f, "replaying a streamed transaction: {what}"),
            TransactionError::Unexpected { message } => write!(f, "unexpected pgoutput message {message}"),
        }
    }
}

impl std::error::Error for TransactionError {}

impl From<TransactionError> for Error {
    /// The server never produces these: an invariant of the capture is broken.
    fn from(err: TransactionError) -> Error {
        Error::Internal(err.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between transactions (streamed transactions may be pending in the spill).
    Idle,
    /// Between BEGIN and COMMIT.
    InTransaction(Transaction),
    /// Between Stream Start and Stream Stop of top-level transaction `.0`.
    InStreamedBlock(u32),
    /// Replaying a committed streamed transaction that ends at `end_lsn`.
    Replaying { transaction: Transaction, end_lsn: Lsn },
}

/// Where the stream is: in a transaction, in a streamed block, replaying, or between them.
#[derive(Debug)]
pub(super) struct TransactionAssembler {
    state: State,
}

impl Default for TransactionAssembler {
    fn default() -> Self {
        TransactionAssembler { state: State::Idle }
    }
}

impl TransactionAssembler {
    /// The transaction being applied (BEGIN..COMMIT, or a streamed one being replayed).
    pub(super) fn current(&self) -> Option<Transaction> {
        match self.state {
            State::InTransaction(transaction) | State::Replaying { transaction, .. } => Some(transaction),
            State::Idle | State::InStreamedBlock(_) => None,
        }
    }

    /// Neither in a transaction nor in a streamed block: nothing of ours is in flight, so a
    /// keepalive's position can become the cursor.
    pub(super) fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// How to decode the next live message: inside a streamed block, data and schema
    /// messages carry their (sub)transaction's XID.
    pub(super) fn decode_context(&self, protocol_version: u32) -> DecodeContext {
        DecodeContext { protocol_version, in_streamed_block: matches!(self.state, State::InStreamedBlock(_)) }
    }

    /// The context buffered messages were decoded with, to decode them again at replay.
    pub(super) fn replay_context(protocol_version: u32) -> DecodeContext {
        DecodeContext { protocol_version, in_streamed_block: true }
    }

    /// Take in one message (live, or replayed from the spill) and say what to do with it.
    pub(super) fn step(&mut self, message: &LogicalMessage<'_>) -> Result<Step, TransactionError> {
        match self.state {
            State::InStreamedBlock(top_xid) => Self::step_in_block(&mut self.state, top_xid, message),
            State::Replaying { transaction, .. } => Self::step_in_replay(transaction, message),
            State::Idle | State::InTransaction(_) => self.step_outside_block(message),
        }
    }

    /// End the replay of a streamed transaction: its commit's end LSN.
    pub(super) fn finish_replay(&mut self) -> Result<Lsn, TransactionError> {
        match self.state {
            State::Replaying { end_lsn, .. } => {
                self.state = State::Idle;
                Ok(end_lsn)
            }
            _ => Err(TransactionError::Replay { what: "finished a replay that was not started".into() }),
        }
    }

    fn step_in_block(state: &mut State, top_xid: u32, message: &LogicalMessage<'_>) -> Result<Step, TransactionError> {
        let in_block = |event| Err(TransactionError::EventInStreamedBlock { event, top_xid });
        match message {
            LogicalMessage::StreamStop => {
                *state = State::Idle;
                Ok(Step::Nothing)
            }
            LogicalMessage::Relation(_)
            | LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)
            | LogicalMessage::Truncate(_) => Ok(Step::Spill { top_xid, xid: message_xid(message).unwrap_or(top_xid) }),
            LogicalMessage::Type(_) | LogicalMessage::Origin { .. } | LogicalMessage::Message(_) => Ok(Step::Nothing),
            LogicalMessage::Begin(_) => in_block("BEGIN"),
            LogicalMessage::Commit(_) => in_block("COMMIT"),
            LogicalMessage::StreamStart { .. } => in_block("STREAM START"),
            LogicalMessage::StreamCommit(_) => in_block("STREAM COMMIT"),
            LogicalMessage::StreamAbort(_) => in_block("STREAM ABORT"),
            other => Err(TransactionError::Unexpected { message: format!("{other:?}") }),
        }
    }

    fn step_in_replay(transaction: Transaction, message: &LogicalMessage<'_>) -> Result<Step, TransactionError> {
        match message {
            LogicalMessage::Relation(_) => Ok(Step::Relation),
            LogicalMessage::Truncate(_) => Ok(Step::Truncate),
            LogicalMessage::Insert(_) | LogicalMessage::Update(_) | LogicalMessage::Delete(_) => {
                Ok(Step::Change(transaction))
            }
            other => Err(TransactionError::Replay { what: format!("unexpected buffered message {other:?}") }),
        }
    }

    fn step_outside_block(&mut self, message: &LogicalMessage<'_>) -> Result<Step, TransactionError> {
        let open = self.current();
        let in_transaction = |event| match open {
            Some(_) => Err(TransactionError::StreamEventInTransaction { event }),
            None => Ok(()),
        };
        match message {
            LogicalMessage::Begin(begin) => {
                if open.is_some() {
                    return Err(TransactionError::NestedBegin { xid: begin.xid });
                }
                self.state = State::InTransaction(Transaction {
                    final_lsn: begin.final_lsn,
                    commit_time_us: begin.commit_time_us,
                    xid: begin.xid,
                });
                Ok(Step::Nothing)
            }
            LogicalMessage::Commit(commit) => {
                let transaction = open.ok_or(TransactionError::BareCommit)?;
                if transaction.final_lsn != commit.commit_lsn {
                    return Err(TransactionError::CommitMismatch {
                        commit_lsn: commit.commit_lsn,
                        begin_final_lsn: transaction.final_lsn,
                    });
                }
                self.state = State::Idle;
                Ok(Step::Commit { end_lsn: commit.end_lsn })
            }
            LogicalMessage::Relation(_) => Ok(Step::Relation),
            LogicalMessage::Truncate(_) => Ok(Step::Truncate),
            LogicalMessage::Insert(_) | LogicalMessage::Update(_) | LogicalMessage::Delete(_) => {
                open.map(Step::Change).ok_or(TransactionError::ChangeOutsideTransaction)
            }
            LogicalMessage::StreamStart { xid, .. } => {
                in_transaction("STREAM START")?;
                self.state = State::InStreamedBlock(*xid);
                Ok(Step::Nothing)
            }
            LogicalMessage::StreamStop => Err(TransactionError::StreamStopWithoutStart),
            LogicalMessage::StreamAbort(abort) => {
                in_transaction("STREAM ABORT")?;
                Ok(Step::Discard { xid: abort.xid, subxid: abort.subxid })
            }
            LogicalMessage::StreamCommit(commit) => {
                in_transaction("STREAM COMMIT")?;
                let transaction = Transaction {
                    final_lsn: commit.commit_lsn,
                    commit_time_us: commit.commit_time_us,
                    xid: commit.xid,
                };
                self.state = State::Replaying { transaction, end_lsn: commit.end_lsn };
                Ok(Step::Replay(transaction))
            }
            LogicalMessage::Type(_) | LogicalMessage::Origin { .. } | LogicalMessage::Message(_) => Ok(Step::Nothing),
            other => Err(TransactionError::Unexpected { message: format!("{other:?}") }),
        }
    }
}

/// The (sub)transaction XID a message inside a streamed block carries.
fn message_xid(message: &LogicalMessage<'_>) -> Option<u32> {
    match message {
        LogicalMessage::Relation(r) => r.xid,
        LogicalMessage::Insert(m) => m.xid,
        LogicalMessage::Update(m) => m.xid,
        LogicalMessage::Delete(m) => m.xid,
        LogicalMessage::Truncate(m) => m.xid,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::spill::Spill;
    use crate::replication::pgoutput::{
        self, Begin, Commit, Insert, StreamAbort, StreamCommit, Truncate, TupleData, TypeMessage,
    };

    fn begin(xid: u32, final_lsn: u64) -> LogicalMessage<'static> {
        LogicalMessage::Begin(Begin { final_lsn: Lsn(final_lsn), commit_time_us: 1_000 + i64::from(xid), xid })
    }

    fn commit(commit_lsn: u64, end_lsn: u64) -> LogicalMessage<'static> {
        let (commit_lsn, end_lsn) = (Lsn(commit_lsn), Lsn(end_lsn));
        LogicalMessage::Commit(Commit { flags: 0, commit_lsn, end_lsn, commit_time_us: 0 })
    }

    /// An insert whose relation OID identifies the change in the tests.
    fn change(id: u32, xid: Option<u32>) -> LogicalMessage<'static> {
        LogicalMessage::Insert(Insert { xid, relation_oid: id, new: TupleData { values: Vec::new() } })
    }

    fn stream_start(xid: u32) -> LogicalMessage<'static> {
        LogicalMessage::StreamStart { xid, first_segment: false }
    }

    fn stream_commit(xid: u32, commit_lsn: u64, end_lsn: u64) -> LogicalMessage<'static> {
        let (commit_lsn, end_lsn) = (Lsn(commit_lsn), Lsn(end_lsn));
        LogicalMessage::StreamCommit(StreamCommit { xid, flags: 0, commit_lsn, end_lsn, commit_time_us: 7 })
    }

    /// A streamed block of top-level transaction `top_xid` with changes `(id, xid)`.
    fn block(top_xid: u32, changes: &[(u32, u32)]) -> Vec<LogicalMessage<'static>> {
        let changes = changes.iter().map(|(id, xid)| change(*id, Some(*xid)));
        [stream_start(top_xid)].into_iter().chain(changes).chain([LogicalMessage::StreamStop]).collect()
    }

    fn stream_abort(xid: u32, subxid: u32) -> LogicalMessage<'static> {
        LogicalMessage::StreamAbort(StreamAbort { xid, subxid, abort_lsn: None, abort_time_us: None })
    }

    /// What the session would do, recorded: changes applied (their id and transaction) and
    /// commits. Streamed messages go through a real [`Spill`], their payload naming the
    /// message by its index in `buffered`.
    #[derive(Default)]
    struct Driver {
        assembler: TransactionAssembler,
        spill: Spill,
        buffered: Vec<LogicalMessage<'static>>,
        applied: Vec<Applied>,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Applied {
        Change { id: u32, xid: u32, final_lsn: Lsn },
        Commit { end_lsn: Lsn },
    }

    impl Driver {
        fn feed(&mut self, message: LogicalMessage<'static>) -> Result<Step, TransactionError> {
            let step = self.assembler.step(&message)?;
            match step {
                Step::Spill { top_xid, xid } => {
                    let index = u32::try_from(self.buffered.len()).unwrap();
                    self.buffered.push(message);
                    self.spill.push(top_xid, Lsn(0), xid, &index.to_le_bytes()).unwrap();
                }
                Step::Discard { xid, subxid } => self.spill.abort(xid, subxid),
                Step::Commit { end_lsn } => self.applied.push(Applied::Commit { end_lsn }),
                Step::Change(transaction) => self.apply(&message, transaction),
                Step::Replay(transaction) => {
                    let mut replay = self.spill.take(transaction.xid).unwrap();
                    while let Some(spilled) = replay.next_message().unwrap() {
                        let index = u32::from_le_bytes(spilled.payload.try_into().unwrap());
                        let message = self.buffered[index as usize].clone();
                        match self.assembler.step(&message)? {
                            Step::Change(replayed) => self.apply(&message, replayed),
                            other => panic!("replay gave {other:?}"),
                        }
                    }
                    let end_lsn = self.assembler.finish_replay()?;
                    self.applied.push(Applied::Commit { end_lsn });
                }
                Step::Nothing | Step::Relation | Step::Truncate => {}
            }
            Ok(step)
        }

        fn feed_all(&mut self, messages: impl IntoIterator<Item = LogicalMessage<'static>>) {
            for message in messages {
                let shown = format!("{message:?}");
                self.feed(message).unwrap_or_else(|err| panic!("{shown}: {err}"));
            }
        }

        fn apply(&mut self, message: &LogicalMessage<'_>, transaction: Transaction) {
            let LogicalMessage::Insert(insert) = message else { panic!("not a test change: {message:?}") };
            let (id, xid, final_lsn) = (insert.relation_oid, transaction.xid, transaction.final_lsn);
            self.applied.push(Applied::Change { id, xid, final_lsn });
        }
    }

    fn applied_change(id: u32, xid: u32, final_lsn: u64) -> Applied {
        Applied::Change { id, xid, final_lsn: Lsn(final_lsn) }
    }

    fn applied_commit(end_lsn: u64) -> Applied {
        Applied::Commit { end_lsn: Lsn(end_lsn) }
    }

    #[test]
    fn a_transaction_applies_its_changes_as_they_come_and_commits_at_its_end() {
        let mut driver = Driver::default();
        assert!(driver.assembler.is_idle());
        assert_eq!(driver.feed(begin(5, 100)), Ok(Step::Nothing));
        assert!(!driver.assembler.is_idle());
        let transaction = Transaction { final_lsn: Lsn(100), commit_time_us: 1_005, xid: 5 };
        assert_eq!(driver.assembler.current(), Some(transaction));
        let frame: &'static [u8] = relation_frame(None).leak();
        let relation = pgoutput::decode_message(frame, &driver.assembler.decode_context(1)).unwrap();
        assert_eq!(driver.feed(relation.clone()), Ok(Step::Relation));
        let type_message = TypeMessage { xid: None, oid: 9, namespace: "public", name: "mood" };
        assert_eq!(driver.feed(LogicalMessage::Type(type_message)), Ok(Step::Nothing));
        assert_eq!(driver.feed(change(1, None)), Ok(Step::Change(transaction)));
        let truncate = Truncate { xid: None, cascade: false, restart_identity: false, relation_oids: vec![1] };
        assert_eq!(driver.feed(LogicalMessage::Truncate(truncate)), Ok(Step::Truncate));
        assert_eq!(driver.feed(change(2, None)), Ok(Step::Change(transaction)));
        assert_eq!(driver.feed(commit(100, 120)), Ok(Step::Commit { end_lsn: Lsn(120) }));
        assert!(driver.assembler.is_idle());
        assert_eq!(driver.assembler.current(), None);
        assert_eq!(driver.applied, [applied_change(1, 5, 100), applied_change(2, 5, 100), applied_commit(120)]);
    }

    #[test]
    fn nested_bare_and_misplaced_events_are_errors() {
        let fails = |script: Vec<LogicalMessage<'static>>| -> String {
            let mut driver = Driver::default();
            let (last, before) = script.split_last().unwrap();
            driver.feed_all(before.iter().cloned());
            driver.feed(last.clone()).expect_err("an error").to_string()
        };
        // The messages of the errors a server could never cause, kept from before.
        assert_eq!(fails(vec![begin(1, 10), begin(2, 20)]), "BEGIN of transaction 2 inside another transaction");
        assert_eq!(fails(vec![commit(10, 11)]), "COMMIT without BEGIN");
        assert_eq!(fails(vec![begin(1, 10), commit(10, 11), commit(10, 11)]), "COMMIT without BEGIN");
        assert_eq!(fails(vec![begin(1, 0x10), commit(0x20, 0x21)]), "COMMIT at 0/20 does not match BEGIN's 0/10");
        assert_eq!(fails(vec![change(1, None)]), "a change arrived outside of a transaction");
        assert_eq!(
            fails(vec![begin(1, 10), commit(10, 11), change(1, None)]),
            "a change arrived outside of a transaction"
        );
        assert_eq!(fails(vec![begin(1, 10), stream_commit(2, 5, 6)]), "STREAM COMMIT inside a transaction");
        assert_eq!(fails(vec![begin(1, 10), stream_start(2)]), "STREAM START inside a transaction");
        assert_eq!(fails(vec![begin(1, 10), stream_abort(2, 2)]), "STREAM ABORT inside a transaction");
        assert_eq!(fails(vec![LogicalMessage::StreamStop]), "STREAM STOP without STREAM START");
        assert_eq!(
            fails(vec![stream_start(2), LogicalMessage::StreamStop, LogicalMessage::StreamStop]),
            "STREAM STOP without STREAM START"
        );
        for (message, event) in [
            (begin(3, 30), "BEGIN"),
            (commit(30, 31), "COMMIT"),
            (stream_start(3), "STREAM START"),
            (stream_commit(2, 5, 6), "STREAM COMMIT"),
            (stream_abort(2, 2), "STREAM ABORT"),
        ] {
            assert_eq!(
                fails(vec![stream_start(2), message]),
                format!("{event} inside the streamed block of transaction 2")
            );
        }
        let gid = "g";
        let prepare = pgoutput::BeginPrepare { prepare_lsn: Lsn(1), end_lsn: Lsn(2), prepare_time_us: 0, xid: 4, gid };
        let prepare = LogicalMessage::BeginPrepare(prepare);
        assert!(fails(vec![prepare.clone()]).starts_with("unexpected pgoutput message BeginPrepare"));
        assert!(fails(vec![stream_start(2), prepare]).starts_with("unexpected pgoutput message BeginPrepare"));
        // A replay takes only what the spill holds, and ends only once started.
        let mut assembler = TransactionAssembler::default();
        assert!(matches!(assembler.finish_replay(), Err(TransactionError::Replay { .. })));
        assert_eq!(
            assembler.step(&stream_commit(2, 5, 6)),
            Ok(Step::Replay(Transaction { final_lsn: Lsn(5), commit_time_us: 7, xid: 2 }))
        );
        assert!(matches!(assembler.step(&begin(3, 9)), Err(TransactionError::Replay { .. })));
        assert!(matches!(assembler.step(&stream_start(3)), Err(TransactionError::Replay { .. })));
        // The error reaches the user as an internal error with the same words.
        let error: Error = TransactionError::BareCommit.into();
        assert_eq!(error.to_string(), "internal error: COMMIT without BEGIN");
    }

    #[test]
    fn streamed_blocks_of_several_transactions_interleave_and_settle_independently() {
        let mut driver = Driver::default();
        // Subtransaction 11 of 10 writes change 2.
        driver.feed_all(block(10, &[(1, 10), (2, 11)]));
        driver.feed_all(block(20, &[(3, 20)]));
        driver.feed_all(block(30, &[(4, 30)]));
        // Nothing of a streamed transaction is applied before its commit.
        assert_eq!(driver.applied, []);
        assert!(driver.assembler.is_idle());
        // A regular transaction between the blocks is applied at once, on its own.
        driver.feed_all([begin(40, 400), change(5, None), commit(400, 401)]);
        driver.feed_all(block(10, &[(6, 12), (7, 10)]));
        driver.feed_all([stream_abort(10, 11), stream_abort(30, 30), stream_commit(20, 200, 201)]);
        driver.feed_all(block(10, &[(8, 10)]));
        driver.feed_all([stream_commit(10, 100, 101)]);
        assert_eq!(
            driver.applied,
            [
                applied_change(5, 40, 400),
                applied_commit(401),
                applied_change(3, 20, 200),
                applied_commit(201),
                // Subtransaction 11 aborted; 12 and the top level committed with 10.
                applied_change(1, 10, 100),
                applied_change(6, 10, 100),
                applied_change(7, 10, 100),
                applied_change(8, 10, 100),
                applied_commit(101),
            ]
        );
        // The aborted transaction left nothing behind: a commit of it would replay nothing.
        driver.applied.clear();
        driver.feed_all([stream_commit(30, 300, 301)]);
        assert_eq!(driver.applied, [applied_commit(301)]);
    }

    #[test]
    fn a_streamed_message_without_its_xid_belongs_to_the_top_level_transaction() {
        let mut assembler = TransactionAssembler::default();
        assert_eq!(assembler.step(&stream_start(10)), Ok(Step::Nothing));
        assert_eq!(assembler.step(&change(1, None)), Ok(Step::Spill { top_xid: 10, xid: 10 }));
        let truncate = Truncate { xid: None, cascade: false, restart_identity: false, relation_oids: vec![] };
        assert_eq!(assembler.step(&LogicalMessage::Truncate(truncate)), Ok(Step::Spill { top_xid: 10, xid: 10 }));
    }

    /// A generator of server-like streams: regular transactions whole, streamed ones in
    /// blocks interleaved with everything else, settled by commit or (sub)abort.
    struct Script {
        seed: u64,
        next_xid: u32,
        next_id: u32,
        next_lsn: u64,
        messages: Vec<LogicalMessage<'static>>,
        /// What a correct assembly applies, in order.
        expected: Vec<Applied>,
        /// Streamed transactions in progress.
        open: Vec<OpenStream>,
    }

    struct OpenStream {
        top_xid: u32,
        /// Changes (id, subtransaction) not aborted.
        changes: Vec<(u32, u32)>,
        /// Aborted subtransactions, which write nothing after their abort.
        aborted: Vec<u32>,
    }

    impl Script {
        fn random(&mut self, below: u64) -> u64 {
            self.seed = self.seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.seed >> 33) % below
        }

        fn lsn(&mut self) -> u64 {
            self.next_lsn += 16;
            self.next_lsn
        }

        fn generate(seed: u64, length: usize) -> Script {
            let mut script = Script {
                seed,
                next_xid: 100,
                next_id: 1,
                next_lsn: 0,
                messages: Vec::new(),
                expected: Vec::new(),
                open: Vec::new(),
            };
            while script.messages.len() < length {
                match script.random(4) {
                    0 => script.regular(),
                    1 | 2 => script.block(),
                    _ => script.settle(),
                }
            }
            while !script.open.is_empty() {
                script.settle();
            }
            script
        }

        fn regular(&mut self) {
            let xid = self.next_xid;
            self.next_xid += 10;
            let final_lsn = self.lsn();
            self.messages.push(begin(xid, final_lsn));
            for _ in 0..self.random(4) {
                let id = self.next_id;
                self.next_id += 1;
                self.messages.push(change(id, None));
                self.expected.push(applied_change(id, xid, final_lsn));
            }
            let end_lsn = self.lsn();
            self.messages.push(commit(final_lsn, end_lsn));
            self.expected.push(applied_commit(end_lsn));
        }

        fn block(&mut self) {
            let index = if self.open.is_empty() || self.random(3) == 0 {
                self.open.push(OpenStream { top_xid: self.next_xid, changes: Vec::new(), aborted: Vec::new() });
                self.next_xid += 10;
                self.open.len() - 1
            } else {
                self.random(self.open.len() as u64) as usize
            };
            let top_xid = self.open[index].top_xid;
            self.messages.push(stream_start(top_xid));
            for _ in 0..self.random(4) {
                let id = self.next_id;
                self.next_id += 1;
                let xid = top_xid + self.random(3) as u32; // the top level or subtransaction 1 or 2
                if self.open[index].aborted.contains(&xid) {
                    continue;
                }
                self.messages.push(change(id, Some(xid)));
                self.open[index].changes.push((id, xid));
            }
            self.messages.push(LogicalMessage::StreamStop);
        }

        fn settle(&mut self) {
            if self.open.is_empty() {
                return;
            }
            let index = self.random(self.open.len() as u64) as usize;
            let top_xid = self.open[index].top_xid;
            match self.random(4) {
                0 => {
                    self.messages.push(stream_abort(top_xid, top_xid));
                    self.open.remove(index);
                }
                1 => {
                    let subxid = top_xid + 1 + self.random(2) as u32;
                    self.messages.push(stream_abort(top_xid, subxid));
                    self.open[index].changes.retain(|(_, xid)| *xid != subxid);
                    self.open[index].aborted.push(subxid);
                }
                _ => {
                    let (commit_lsn, end_lsn) = (self.lsn(), self.lsn());
                    self.messages.push(stream_commit(top_xid, commit_lsn, end_lsn));
                    for (id, _) in self.open.remove(index).changes {
                        self.expected.push(applied_change(id, top_xid, commit_lsn));
                    }
                    self.expected.push(applied_commit(end_lsn));
                }
            }
        }
    }

    #[test]
    fn interleaved_streams_apply_every_committed_transaction_whole_and_nothing_else() {
        for seed in 0..200 {
            let script = Script::generate(seed, 60);
            let mut driver = Driver::default();
            driver.feed_all(script.messages.iter().cloned());
            assert_eq!(driver.applied, script.expected, "seed {seed}");
            assert!(driver.assembler.is_idle(), "seed {seed}");
            // Never split: between two commits, every change belongs to one transaction.
            for group in driver.applied.split(|a| matches!(a, Applied::Commit { .. })) {
                let xids: std::collections::BTreeSet<u32> = group
                    .iter()
                    .filter_map(|a| match a {
                        Applied::Change { xid, .. } => Some(*xid),
                        Applied::Commit { .. } => None,
                    })
                    .collect();
                assert!(xids.len() <= 1, "seed {seed}: {group:?}");
            }
        }
    }

    /// A raw pgoutput message, as the server sends it: the tag, then big-endian fields.
    fn frame(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut frame = vec![tag];
        fields.iter().for_each(|field| frame.extend_from_slice(field));
        frame
    }

    /// A streamed block's data messages carry their XID right after the tag.
    fn xid_field(xid: Option<u32>) -> Vec<u8> {
        xid.map(|xid| xid.to_be_bytes().to_vec()).unwrap_or_default()
    }

    /// Relation 16384 `public.t (id int4)`, the key.
    fn relation_frame(xid: Option<u32>) -> Vec<u8> {
        let (oid, columns, int4, typmod) =
            (16_384u32.to_be_bytes(), 1u16.to_be_bytes(), 23u32.to_be_bytes(), [0xFF; 4]);
        frame(b'R', &[&xid_field(xid), &oid, b"public\0t\0d", &columns, b"\x01id\0", &int4, &typmod])
    }

    /// An insert of one text value `1` into relation 16384.
    fn insert_frame(xid: Option<u32>) -> Vec<u8> {
        frame(b'I', &[&xid_field(xid), &16_384u32.to_be_bytes(), b"N\0\x01t", &1u32.to_be_bytes(), b"1"])
    }

    /// Decode `frames` as the session does (the context from the assembler) and assemble them.
    fn assemble(protocol_version: u32, frames: &[Vec<u8>]) -> Result<Vec<Step>, String> {
        let mut assembler = TransactionAssembler::default();
        let mut steps = Vec::new();
        for frame in frames {
            let context = assembler.decode_context(protocol_version);
            let message = pgoutput::decode_message(frame, &context).map_err(|err| err.to_string())?;
            steps.push(assembler.step(&message).map_err(|err| err.to_string())?);
        }
        Ok(steps)
    }

    #[test]
    fn every_protocol_version_assembles_transactions_and_streaming_needs_version_2() {
        let time = 757_382_400_123_456u64;
        let regular = [
            frame(b'B', &[&0x100u64.to_be_bytes(), &time.to_be_bytes(), &7u32.to_be_bytes()]),
            relation_frame(None),
            insert_frame(None),
            frame(b'C', &[&[0], &0x100u64.to_be_bytes(), &0x180u64.to_be_bytes(), &time.to_be_bytes()]),
        ];
        let transaction = Transaction { final_lsn: Lsn(0x100), commit_time_us: time as i64, xid: 7 };
        for version in 1..=4 {
            assert_eq!(
                assemble(version, &regular),
                Ok(vec![
                    Step::Nothing,
                    Step::Relation,
                    Step::Change(transaction),
                    Step::Commit { end_lsn: Lsn(0x180) }
                ]),
                "protocol {version}"
            );
        }
        let mut streamed = vec![
            frame(b'S', &[&9u32.to_be_bytes(), &[1]]),
            relation_frame(Some(9)),
            insert_frame(Some(10)),
            frame(b'E', &[]),
            frame(b'A', &[&9u32.to_be_bytes(), &10u32.to_be_bytes()]),
            frame(
                b'c',
                &[&9u32.to_be_bytes(), &[0], &0x200u64.to_be_bytes(), &0x280u64.to_be_bytes(), &time.to_be_bytes()],
            ),
        ];
        let expected = vec![
            Step::Nothing,
            Step::Spill { top_xid: 9, xid: 9 },
            Step::Spill { top_xid: 9, xid: 10 },
            Step::Nothing,
            Step::Discard { xid: 9, subxid: 10 },
            Step::Replay(Transaction { final_lsn: Lsn(0x200), commit_time_us: time as i64, xid: 9 }),
        ];
        assert!(assemble(1, &streamed).unwrap_err().contains("Stream Start"));
        for version in 2..=4 {
            assert_eq!(assemble(version, &streamed).as_ref(), Ok(&expected), "protocol {version}");
        }
        // Protocol 4 (streaming = parallel) adds the abort's LSN and time.
        let abort_lsn = 0x1F0u64.to_be_bytes();
        streamed[4] = frame(b'A', &[&9u32.to_be_bytes(), &10u32.to_be_bytes(), &abort_lsn, &time.to_be_bytes()]);
        assert_eq!(assemble(4, &streamed), Ok(expected));
        // Buffered messages are decoded again with their XIDs.
        let context = TransactionAssembler::replay_context(2);
        let replayed = pgoutput::decode_message(&streamed[2], &context).unwrap();
        assert!(matches!(replayed, LogicalMessage::Insert(Insert { xid: Some(10), .. })));
    }
}
