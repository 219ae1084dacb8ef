//! Decoding of pgoutput logical replication messages, protocol versions 1 to 4.
//!
//! Each `XLogData` frame of a logical replication stream carries exactly one message of
//! the `pgoutput` plugin, in the formats of the PostgreSQL manual's chapter "Logical
//! Replication Message Formats". [`decode_message`] turns one such payload into a
//! [`LogicalMessage`] whose fields mirror that chapter field for field.
//!
//! # Why a pure function
//!
//! The decoder does no IO, keeps no state and does not log: bytes in, a typed message or a
//! typed [`DecodeError`] out. That keeps it trivially unit-testable from byte fixtures,
//! lets it be fuzzed (see the `fuzz/` crate), and leaves the interpretation of messages
//! (transaction assembly, relation caching, the checks that a Commit matches its Begin)
//! to the stateful layers that drive it. Messages borrow names, tuple values and message
//! contents from the frame instead of copying them, so a large row costs no extra copy
//! before it is transcoded.
//!
//! # Input is untrusted
//!
//! A frame comes from the network, so nothing in it is believed before it is checked.
//! Counts and lengths are read as the signed integers the protocol defines, negatives are
//! rejected, and every count is compared with the bytes that are actually left before
//! anything is allocated for it. Names must be NUL-terminated valid UTF-8. A message that
//! ends early, or that is followed by bytes it does not account for, is an error: the
//! server sends one complete message per frame, so either would mean we misread the
//! format. Errors carry the byte offset (from the message tag at offset 0) and the name
//! of the field being read, so a bad frame can be diagnosed from the error text alone.
//!
//! # Streamed transactions
//!
//! With `streaming` enabled (protocol version 2 or later) the server may send a large
//! in-progress transaction as several blocks, each opened by Stream Start and closed by
//! Stream Stop, and finally settled by Stream Commit or Stream Abort (or Stream Prepare):
//!
//! ```text
//!   S(xid, first) R? I U D ... E   S(xid) ... E   ...   c(xid) | A(xid, subxid) | p(xid)
//!   └──── a streamed block ────┘
//! ```
//!
//! Inside a block, Relation, Type, Insert, Update, Delete, Truncate and Message carry the
//! XID of their (sub)transaction as an extra `Int32` right after the tag. Nothing in the
//! message itself says whether that field is present, so the caller, which sees the
//! Stream Start and Stream Stop messages go by, says so through
//! [`DecodeContext::in_streamed_block`]. Those messages then have `xid: Some(..)`.
//!
//! # Version gates
//!
//! The caller negotiates `proto_version` with the server and passes it in
//! [`DecodeContext::protocol_version`]. A message that the negotiated version cannot
//! produce is reported as [`DecodeError::UnsupportedInProtocolVersion`] rather than decoded:
//!
//! | protocol | adds |
//! |---|---|
//! | 1 (PostgreSQL 10+) | Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate (11+), Message (14+) |
//! | 2 (PostgreSQL 14+) | streamed transactions: Stream Start/Stop/Commit/Abort and the in-block XID |
//! | 3 (PostgreSQL 15+) | two-phase commit: Begin Prepare, Prepare, Commit Prepared, Rollback Prepared, Stream Prepare |
//! | 4 (PostgreSQL 16+) | the abort LSN and time of Stream Abort, sent when `streaming = parallel` |
//!
//! The last row has one wrinkle: under protocol version 4 the server appends the abort LSN
//! and time only if the subscriber asked for `streaming = parallel`, which the context does
//! not record. The decoder therefore accepts a version 4 Stream Abort either without them
//! or with both, and rejects anything in between.

use std::fmt;

use crate::lsn::Lsn;

/// The lowest pgoutput protocol version this decoder understands.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The highest pgoutput protocol version this decoder understands.
pub const MAX_PROTOCOL_VERSION: u32 = 4;

/// Streamed transactions (Stream Start/Stop/Commit/Abort, the in-block XID).
const STREAMING_PROTOCOL_VERSION: u32 = 2;
/// Two-phase commit messages.
const TWO_PHASE_PROTOCOL_VERSION: u32 = 3;
/// The abort LSN and time in Stream Abort (`streaming = parallel`).
const PARALLEL_STREAMING_PROTOCOL_VERSION: u32 = 4;

/// What the caller knows about the stream that the message bytes do not say themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// The `proto_version` negotiated in `START_REPLICATION` (1 to 4).
    pub protocol_version: u32,
    /// Whether the message arrives between a Stream Start and the matching Stream Stop,
    /// where data and schema messages carry a leading XID. Requires protocol version 2.
    pub in_streamed_block: bool,
}

/// Decodes one pgoutput message: the payload of one `XLogData` frame.
///
/// The whole of `buf` must be exactly one message.
///
/// # Errors
///
/// Any [`DecodeError`]: the message is truncated, has trailing bytes, has a malformed
/// field, or cannot occur under `ctx`. The message cannot be skipped safely after an
/// error, since the stream's meaning (transaction boundaries, relation shapes) depends on
/// every message.
pub fn decode_message<'a>(buf: &'a [u8], ctx: &DecodeContext) -> Result<LogicalMessage<'a>, DecodeError> {
    if !(MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&ctx.protocol_version) {
        return Err(DecodeError::UnsupportedProtocolVersion { protocol_version: ctx.protocol_version });
    }
    if ctx.in_streamed_block && ctx.protocol_version < STREAMING_PROTOCOL_VERSION {
        // The server cannot have opened a streamed block, so the caller's bookkeeping is
        // wrong; decoding would misread the first field of every data message as an XID.
        return Err(DecodeError::UnsupportedInProtocolVersion {
            what: "a streamed transaction block",
            protocol_version: ctx.protocol_version,
            minimum: STREAMING_PROTOCOL_VERSION,
        });
    }

    let mut reader = Reader::new(buf);
    let tag = reader.read_u8("message tag")?;
    let message = match tag {
        b'B' => LogicalMessage::Begin(decode_begin(&mut reader)?),
        b'C' => LogicalMessage::Commit(decode_commit(&mut reader)?),
        b'O' => LogicalMessage::Origin {
            commit_lsn: reader.read_lsn("origin commit LSN")?,
            name: reader.read_str("origin name")?,
        },
        b'R' => LogicalMessage::Relation(decode_relation(&mut reader, ctx)?),
        b'Y' => LogicalMessage::Type(decode_type(&mut reader, ctx)?),
        b'I' => LogicalMessage::Insert(decode_insert(&mut reader, ctx)?),
        b'U' => LogicalMessage::Update(decode_update(&mut reader, ctx)?),
        b'D' => LogicalMessage::Delete(decode_delete(&mut reader, ctx)?),
        b'T' => LogicalMessage::Truncate(decode_truncate(&mut reader, ctx)?),
        b'M' => LogicalMessage::Message(decode_logical_decoding_message(&mut reader, ctx)?),
        b'S' => {
            require_protocol_version(ctx, "Stream Start", STREAMING_PROTOCOL_VERSION)?;
            LogicalMessage::StreamStart {
                xid: reader.read_u32("xid")?,
                first_segment: reader.read_bool("first segment flag")?,
            }
        }
        b'E' => {
            require_protocol_version(ctx, "Stream Stop", STREAMING_PROTOCOL_VERSION)?;
            LogicalMessage::StreamStop
        }
        b'c' => {
            require_protocol_version(ctx, "Stream Commit", STREAMING_PROTOCOL_VERSION)?;
            LogicalMessage::StreamCommit(decode_stream_commit(&mut reader)?)
        }
        b'A' => {
            require_protocol_version(ctx, "Stream Abort", STREAMING_PROTOCOL_VERSION)?;
            LogicalMessage::StreamAbort(decode_stream_abort(&mut reader, ctx)?)
        }
        b'b' => {
            require_protocol_version(ctx, "Begin Prepare", TWO_PHASE_PROTOCOL_VERSION)?;
            LogicalMessage::BeginPrepare(decode_begin_prepare(&mut reader)?)
        }
        b'P' => {
            require_protocol_version(ctx, "Prepare", TWO_PHASE_PROTOCOL_VERSION)?;
            LogicalMessage::Prepare(decode_prepare(&mut reader)?)
        }
        b'K' => {
            require_protocol_version(ctx, "Commit Prepared", TWO_PHASE_PROTOCOL_VERSION)?;
            LogicalMessage::CommitPrepared(decode_commit_prepared(&mut reader)?)
        }
        b'r' => {
            require_protocol_version(ctx, "Rollback Prepared", TWO_PHASE_PROTOCOL_VERSION)?;
            LogicalMessage::RollbackPrepared(decode_rollback_prepared(&mut reader)?)
        }
        b'p' => {
            require_protocol_version(ctx, "Stream Prepare", TWO_PHASE_PROTOCOL_VERSION)?;
            LogicalMessage::StreamPrepare(decode_prepare(&mut reader)?)
        }
        other => return Err(DecodeError::UnknownMessageTag { tag: other }),
    };
    reader.finish()?;
    Ok(message)
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage<'a> {
    /// `B`: the start of a (non-streamed) transaction.
    Begin(Begin),
    /// `C`: the end of a (non-streamed) transaction.
    Commit(Commit),
    /// `O`: the transaction originated on another node (sent when replication origins are
    /// in use).
    Origin {
        /// The LSN of the commit on the origin server.
        commit_lsn: Lsn,
        /// Name of the origin.
        name: &'a str,
    },
    /// `R`: the shape of a relation, sent before the first change to it in a session and
    /// again after its definition changes.
    Relation(Relation<'a>),
    /// `Y`: a non-builtin data type used by a subsequent Relation message.
    Type(TypeMessage<'a>),
    /// `I`: a row was inserted.
    Insert(Insert<'a>),
    /// `U`: a row was updated.
    Update(Update<'a>),
    /// `D`: a row was deleted.
    Delete(Delete<'a>),
    /// `T`: relations were truncated.
    Truncate(Truncate),
    /// `M`: a message written with `pg_logical_emit_message` (option `messages`).
    Message(LogicalDecodingMessage<'a>),
    /// `S`: the start of a block of a streamed transaction.
    StreamStart {
        /// XID of the transaction.
        xid: u32,
        /// Whether this is the first stream segment for this XID.
        first_segment: bool,
    },
    /// `E`: the end of a block of a streamed transaction.
    StreamStop,
    /// `c`: a streamed transaction committed.
    StreamCommit(StreamCommit),
    /// `A`: a streamed transaction or one of its subtransactions aborted.
    StreamAbort(StreamAbort),
    /// `b`: the start of a transaction prepared for two-phase commit.
    BeginPrepare(BeginPrepare<'a>),
    /// `P`: a transaction was prepared for two-phase commit.
    Prepare(Prepare<'a>),
    /// `K`: a prepared transaction was committed.
    CommitPrepared(CommitPrepared<'a>),
    /// `r`: a prepared transaction was rolled back.
    RollbackPrepared(RollbackPrepared<'a>),
    /// `p`: a streamed transaction was prepared for two-phase commit. Same fields as
    /// Prepare.
    StreamPrepare(Prepare<'a>),
}

/// `B`: Begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The final LSN of the transaction.
    pub final_lsn: Lsn,
    /// Commit timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub commit_time_us: i64,
    /// XID of the transaction.
    pub xid: u32,
}

/// `C`: Commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags; currently unused by the server (always 0).
    pub flags: u8,
    /// The LSN of the commit.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub commit_time_us: i64,
}

/// `R`: Relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation<'a> {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// OID of the relation.
    pub oid: u32,
    /// Namespace (empty string for `pg_catalog`).
    pub namespace: &'a str,
    /// Relation name.
    pub name: &'a str,
    /// Replica identity setting for the relation (same as `relreplident` in `pg_class`).
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order tuples list their values.
    pub columns: Vec<RelationColumn<'a>>,
}

/// The replica identity of a relation: which old values Update and Delete carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Whether the column is part of the replica identity key.
    pub is_key: bool,
    /// Name of the column.
    pub name: &'a str,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier of the column (`atttypmod`); -1 when there is none.
    pub type_modifier: i32,
}

/// `Y`: Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage<'a> {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// OID of the data type.
    pub oid: u32,
    /// Namespace (empty string for `pg_catalog`).
    pub namespace: &'a str,
    /// Name of the data type.
    pub name: &'a str,
}

/// `I`: Insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert<'a> {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// OID of the relation corresponding to the ID in the Relation message.
    pub relation_oid: u32,
    /// The new row.
    pub new: TupleData<'a>,
}

/// `U`: Update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// OID of the relation corresponding to the ID in the Relation message.
    pub relation_oid: u32,
    /// The old key (when the replica identity key changed) or the old row (replica
    /// identity FULL); absent otherwise.
    pub old: Option<OldTuple<'a>>,
    /// The new row.
    pub new: TupleData<'a>,
}

/// `D`: Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete<'a> {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// OID of the relation corresponding to the ID in the Relation message.
    pub relation_oid: u32,
    /// The old key or the old row.
    pub old: OldTuple<'a>,
}

/// The old values of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: the replica identity key columns; the other columns are sent as NULL.
    Key(TupleData<'a>),
    /// `O`: the whole old row (replica identity FULL).
    Full(TupleData<'a>),
}

/// The values of one row, one per column of the relation, in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleData<'a> {
    /// The column values.
    pub values: Vec<TupleValue<'a>>,
}

/// One column value of a [`TupleData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    /// `n`: NULL.
    Null,
    /// `u`: an unchanged TOASTed value; the actual value is not sent.
    UnchangedToast,
    /// `t`: the value in text format.
    Text(&'a [u8]),
    /// `b`: the value in binary format (option `binary`).
    Binary(&'a [u8]),
}

/// `T`: Truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
    /// OIDs of the truncated relations.
    pub relation_oids: Vec<u32>,
}

/// `M`: a logical decoding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalDecodingMessage<'a> {
    /// XID of the transaction, present only inside a streamed block.
    pub xid: Option<u32>,
    /// Whether the message was emitted as part of a transaction.
    pub transactional: bool,
    /// The LSN of the logical decoding message.
    pub lsn: Lsn,
    /// The prefix of the logical decoding message.
    pub prefix: &'a str,
    /// The content of the logical decoding message.
    pub content: &'a [u8],
}

/// `c`: Stream Commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// XID of the transaction.
    pub xid: u32,
    /// Flags; currently unused by the server (always 0).
    pub flags: u8,
    /// The LSN of the commit.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub commit_time_us: i64,
}

/// `A`: Stream Abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// XID of the transaction.
    pub xid: u32,
    /// XID of the subtransaction (the same as `xid` for the top-level transaction).
    pub subxid: u32,
    /// The LSN of the abort; sent only under protocol version 4 with `streaming = parallel`.
    pub abort_lsn: Option<Lsn>,
    /// Abort timestamp, in microseconds since 2000-01-01 00:00 UTC; sent only under
    /// protocol version 4 with `streaming = parallel`.
    pub abort_time_us: Option<i64>,
}

/// `b`: Begin Prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare<'a> {
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub prepare_time_us: i64,
    /// XID of the transaction.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// `P`: Prepare, and `p`: Stream Prepare, which has the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare<'a> {
    /// Flags; currently unused by the server (always 0).
    pub flags: u8,
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub prepare_time_us: i64,
    /// XID of the transaction.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// `K`: Commit Prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared<'a> {
    /// Flags; currently unused by the server (always 0).
    pub flags: u8,
    /// The LSN of the commit of the prepared transaction.
    pub commit_lsn: Lsn,
    /// The end LSN of the commit of the prepared transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub commit_time_us: i64,
    /// XID of the transaction.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// `r`: Rollback Prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared<'a> {
    /// Flags; currently unused by the server (always 0).
    pub flags: u8,
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback of the prepared transaction.
    pub rollback_end_lsn: Lsn,
    /// Prepare timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub prepare_time_us: i64,
    /// Rollback timestamp of the transaction, in microseconds since 2000-01-01 00:00 UTC.
    pub rollback_time_us: i64,
    /// XID of the transaction.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// Why a pgoutput message could not be decoded. Offsets count bytes from the message tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended inside a fixed-width field.
    #[error(
        "pgoutput message ends at offset {offset} while reading {field}: \
         {needed} bytes needed, {remaining} remain"
    )]
    UnexpectedEnd { offset: usize, field: &'static str, needed: usize, remaining: usize },
    /// A NUL-terminated string has no NUL before the end of the message.
    #[error("unterminated string at offset {offset} while reading {field}")]
    UnterminatedString { offset: usize, field: &'static str },
    /// A name is not valid UTF-8; `offset` is that of the first invalid byte.
    #[error("invalid UTF-8 at offset {offset} in {field}")]
    InvalidUtf8 { offset: usize, field: &'static str },
    /// A count or length field is negative.
    #[error("negative {field} {value} at offset {offset}")]
    NegativeLength { offset: usize, field: &'static str, value: i64 },
    /// A count or length field promises more data than the message holds.
    #[error(
        "{field} {length} at offset {offset} needs at least {needed} bytes, \
         but only {remaining} remain"
    )]
    OversizedLength { offset: usize, field: &'static str, length: usize, needed: usize, remaining: usize },
    /// The first byte names no pgoutput message.
    #[error("unknown pgoutput message tag {}", ByteLiteral(*.tag))]
    UnknownMessageTag { tag: u8 },
    /// A tuple column is not `n`, `u`, `t` or `b`.
    #[error("unknown tuple value kind {} at offset {offset}", ByteLiteral(*.kind))]
    UnknownTupleValueKind { offset: usize, kind: u8 },
    /// The byte that introduces a tuple in Insert, Update or Delete is not one allowed there.
    #[error(
        "unexpected tuple kind {} at offset {offset}: expected {expected}",
        ByteLiteral(*.kind)
    )]
    UnexpectedTupleKind { offset: usize, kind: u8, expected: &'static str },
    /// The replica identity of a Relation is not `d`, `n`, `f` or `i`.
    #[error("unknown replica identity {} at offset {offset}", ByteLiteral(*.value))]
    UnknownReplicaIdentity { offset: usize, value: u8 },
    /// A flags field has bits set that the protocol does not define.
    #[error("unknown bits in {field} 0x{value:02x} at offset {offset}")]
    UnknownFlags { offset: usize, field: &'static str, value: u8 },
    /// The message was complete before the end of the frame.
    #[error("{count} trailing bytes at offset {offset} after a complete pgoutput message")]
    TrailingBytes { offset: usize, count: usize },
    /// The message (or the streamed-block context) needs a newer protocol version than the
    /// one negotiated.
    #[error(
        "{what} is not supported in pgoutput protocol version {protocol_version} \
         (requires version {minimum} or later)"
    )]
    UnsupportedInProtocolVersion { what: &'static str, protocol_version: u32, minimum: u32 },
    /// The context names a protocol version outside 1 to 4.
    #[error(
        "unsupported pgoutput protocol version {protocol_version} \
         (supported: {MIN_PROTOCOL_VERSION} to {MAX_PROTOCOL_VERSION})"
    )]
    UnsupportedProtocolVersion { protocol_version: u32 },
}

/// Shows a tag byte as the character the manual uses for it, or in hex if unprintable.
struct ByteLiteral(u8);

impl fmt::Display for ByteLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

fn require_protocol_version(ctx: &DecodeContext, what: &'static str, minimum: u32) -> Result<(), DecodeError> {
    if ctx.protocol_version < minimum {
        return Err(DecodeError::UnsupportedInProtocolVersion {
            what,
            protocol_version: ctx.protocol_version,
            minimum,
        });
    }
    Ok(())
}

/// The XID that data and schema messages carry inside a streamed block.
fn read_streamed_xid(reader: &mut Reader<'_>, ctx: &DecodeContext) -> Result<Option<u32>, DecodeError> {
    if ctx.in_streamed_block {
        reader.read_u32("streamed transaction xid").map(Some)
    } else {
        Ok(None)
    }
}

fn decode_begin(reader: &mut Reader<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: reader.read_lsn("final LSN")?,
        commit_time_us: reader.read_i64("commit timestamp")?,
        xid: reader.read_u32("xid")?,
    })
}

fn decode_commit(reader: &mut Reader<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: reader.read_u8("commit flags")?,
        commit_lsn: reader.read_lsn("commit LSN")?,
        end_lsn: reader.read_lsn("end LSN")?,
        commit_time_us: reader.read_i64("commit timestamp")?,
    })
}

/// Bytes a Relation column takes at the least: flags, an empty name's NUL, type OID and
/// type modifier. Used to bound the column count before allocating.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

fn decode_relation<'a>(reader: &mut Reader<'a>, ctx: &DecodeContext) -> Result<Relation<'a>, DecodeError> {
    let xid = read_streamed_xid(reader, ctx)?;
    let oid = reader.read_u32("relation OID")?;
    let namespace = reader.read_str("relation namespace")?;
    let name = reader.read_str("relation name")?;
    let identity_offset = reader.offset();
    let replica_identity = match reader.read_u8("replica identity")? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        value => return Err(DecodeError::UnknownReplicaIdentity { offset: identity_offset, value }),
    };
    let column_count = reader.read_count_i16("relation column count", MIN_RELATION_COLUMN_LEN)?;
    let mut columns = Vec::with_capacity(column_count);
    for _ in 0..column_count {
        let flags_offset = reader.offset();
        let flags = reader.read_u8("column flags")?;
        // Bit 1 marks a key column; no other bit is defined, and one appearing would mean
        // a format we do not know rather than something safe to ignore.
        if flags & !1 != 0 {
            return Err(DecodeError::UnknownFlags { offset: flags_offset, field: "column flags", value: flags });
        }
        columns.push(RelationColumn {
            is_key: flags & 1 != 0,
            name: reader.read_str("column name")?,
            type_oid: reader.read_u32("column type OID")?,
            type_modifier: reader.read_i32("column type modifier")?,
        });
    }
    Ok(Relation { xid, oid, namespace, name, replica_identity, columns })
}

fn decode_type<'a>(reader: &mut Reader<'a>, ctx: &DecodeContext) -> Result<TypeMessage<'a>, DecodeError> {
    Ok(TypeMessage {
        xid: read_streamed_xid(reader, ctx)?,
        oid: reader.read_u32("type OID")?,
        namespace: reader.read_str("type namespace")?,
        name: reader.read_str("type name")?,
    })
}

fn decode_insert<'a>(reader: &mut Reader<'a>, ctx: &DecodeContext) -> Result<Insert<'a>, DecodeError> {
    let xid = read_streamed_xid(reader, ctx)?;
    let relation_oid = reader.read_u32("relation OID")?;
    let offset = reader.offset();
    match reader.read_u8("tuple kind")? {
        b'N' => Ok(Insert { xid, relation_oid, new: read_tuple_data(reader)? }),
        kind => Err(DecodeError::UnexpectedTupleKind { offset, kind, expected: "'N'" }),
    }
}

fn decode_update<'a>(reader: &mut Reader<'a>, ctx: &DecodeContext) -> Result<Update<'a>, DecodeError> {
    let xid = read_streamed_xid(reader, ctx)?;
    let relation_oid = reader.read_u32("relation OID")?;
    let offset = reader.offset();
    let old = match reader.read_u8("tuple kind")? {
        b'K' => Some(OldTuple::Key(read_tuple_data(reader)?)),
        b'O' => Some(OldTuple::Full(read_tuple_data(reader)?)),
        b'N' => None,
        kind => return Err(DecodeError::UnexpectedTupleKind { offset, kind, expected: "'K', 'O' or 'N'" }),
    };
    // After an old tuple, the new one must follow with its own 'N'; without one, the 'N'
    // was the byte just read.
    if old.is_some() {
        let offset = reader.offset();
        let kind = reader.read_u8("new tuple kind")?;
        if kind != b'N' {
            return Err(DecodeError::UnexpectedTupleKind { offset, kind, expected: "'N'" });
        }
    }
    Ok(Update { xid, relation_oid, old, new: read_tuple_data(reader)? })
}

fn decode_delete<'a>(reader: &mut Reader<'a>, ctx: &DecodeContext) -> Result<Delete<'a>, DecodeError> {
    let xid = read_streamed_xid(reader, ctx)?;
    let relation_oid = reader.read_u32("relation OID")?;
    let offset = reader.offset();
    let old = match reader.read_u8("tuple kind")? {
        b'K' => OldTuple::Key(read_tuple_data(reader)?),
        b'O' => OldTuple::Full(read_tuple_data(reader)?),
        kind => return Err(DecodeError::UnexpectedTupleKind { offset, kind, expected: "'K' or 'O'" }),
    };
    Ok(Delete { xid, relation_oid, old })
}

/// Truncate option bits.
const TRUNCATE_CASCADE: u8 = 1;
const TRUNCATE_RESTART_IDENTITY: u8 = 2;

fn decode_truncate(reader: &mut Reader<'_>, ctx: &DecodeContext) -> Result<Truncate, DecodeError> {
    let xid = read_streamed_xid(reader, ctx)?;
    // The relation count comes before the options but the OIDs after them, so account for
    // the options byte when bounding the count.
    let count_offset = reader.offset();
    let count = reader.read_length_i32("truncated relation count")?;
    let needed = count.saturating_mul(4).saturating_add(1);
    let remaining = reader.remaining();
    if needed > remaining {
        return Err(DecodeError::OversizedLength {
            offset: count_offset,
            field: "truncated relation count",
            length: count,
            needed,
            remaining,
        });
    }
    let options_offset = reader.offset();
    let options = reader.read_u8("truncate options")?;
    if options & !(TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY) != 0 {
        return Err(DecodeError::UnknownFlags { offset: options_offset, field: "truncate options", value: options });
    }
    let mut relation_oids = Vec::with_capacity(count);
    for _ in 0..count {
        relation_oids.push(reader.read_u32("truncated relation OID")?);
    }
    Ok(Truncate {
        xid,
        cascade: options & TRUNCATE_CASCADE != 0,
        restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
        relation_oids,
    })
}

fn decode_logical_decoding_message<'a>(
    reader: &mut Reader<'a>,
    ctx: &DecodeContext,
) -> Result<LogicalDecodingMessage<'a>, DecodeError> {
    let xid = read_streamed_xid(reader, ctx)?;
    let flags_offset = reader.offset();
    let flags = reader.read_u8("message flags")?;
    // 1 means transactional; the manual defines no other value.
    let transactional = match flags {
        0 => false,
        1 => true,
        value => return Err(DecodeError::UnknownFlags { offset: flags_offset, field: "message flags", value }),
    };
    let lsn = reader.read_lsn("message LSN")?;
    let prefix = reader.read_str("message prefix")?;
    let length = reader.read_length_i32("message content length")?;
    let content = reader.read_bytes(length, "message content")?;
    Ok(LogicalDecodingMessage { xid, transactional, lsn, prefix, content })
}

fn decode_stream_commit(reader: &mut Reader<'_>) -> Result<StreamCommit, DecodeError> {
    Ok(StreamCommit {
        xid: reader.read_u32("xid")?,
        flags: reader.read_u8("commit flags")?,
        commit_lsn: reader.read_lsn("commit LSN")?,
        end_lsn: reader.read_lsn("end LSN")?,
        commit_time_us: reader.read_i64("commit timestamp")?,
    })
}

fn decode_stream_abort(reader: &mut Reader<'_>, ctx: &DecodeContext) -> Result<StreamAbort, DecodeError> {
    let xid = reader.read_u32("xid")?;
    let subxid = reader.read_u32("subtransaction xid")?;
    // Whether the abort LSN and time follow depends on `streaming = parallel`, which the
    // context does not record; the frame holds exactly one message, so the bytes left
    // decide. Before version 4 they are trailing bytes, and `finish` rejects them.
    let (abort_lsn, abort_time_us) =
        if ctx.protocol_version >= PARALLEL_STREAMING_PROTOCOL_VERSION && reader.remaining() > 0 {
            (Some(reader.read_lsn("abort LSN")?), Some(reader.read_i64("abort timestamp")?))
        } else {
            (None, None)
        };
    Ok(StreamAbort { xid, subxid, abort_lsn, abort_time_us })
}

fn decode_begin_prepare<'a>(reader: &mut Reader<'a>) -> Result<BeginPrepare<'a>, DecodeError> {
    Ok(BeginPrepare {
        prepare_lsn: reader.read_lsn("prepare LSN")?,
        end_lsn: reader.read_lsn("end LSN")?,
        prepare_time_us: reader.read_i64("prepare timestamp")?,
        xid: reader.read_u32("xid")?,
        gid: reader.read_str("GID")?,
    })
}

fn decode_prepare<'a>(reader: &mut Reader<'a>) -> Result<Prepare<'a>, DecodeError> {
    Ok(Prepare {
        flags: reader.read_u8("prepare flags")?,
        prepare_lsn: reader.read_lsn("prepare LSN")?,
        end_lsn: reader.read_lsn("end LSN")?,
        prepare_time_us: reader.read_i64("prepare timestamp")?,
        xid: reader.read_u32("xid")?,
        gid: reader.read_str("GID")?,
    })
}

fn decode_commit_prepared<'a>(reader: &mut Reader<'a>) -> Result<CommitPrepared<'a>, DecodeError> {
    Ok(CommitPrepared {
        flags: reader.read_u8("commit prepared flags")?,
        commit_lsn: reader.read_lsn("commit LSN")?,
        end_lsn: reader.read_lsn("end LSN")?,
        commit_time_us: reader.read_i64("commit timestamp")?,
        xid: reader.read_u32("xid")?,
        gid: reader.read_str("GID")?,
    })
}

fn decode_rollback_prepared<'a>(reader: &mut Reader<'a>) -> Result<RollbackPrepared<'a>, DecodeError> {
    Ok(RollbackPrepared {
        flags: reader.read_u8("rollback prepared flags")?,
        prepare_end_lsn: reader.read_lsn("prepare end LSN")?,
        rollback_end_lsn: reader.read_lsn("rollback end LSN")?,
        prepare_time_us: reader.read_i64("prepare timestamp")?,
        rollback_time_us: reader.read_i64("rollback timestamp")?,
        xid: reader.read_u32("xid")?,
        gid: reader.read_str("GID")?,
    })
}

fn read_tuple_data<'a>(reader: &mut Reader<'a>) -> Result<TupleData<'a>, DecodeError> {
    // Every column takes at least its one kind byte.
    let count = reader.read_count_i16("tuple column count", 1)?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = reader.offset();
        let value = match reader.read_u8("tuple value kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => {
                let length = reader.read_length_i32("text value length")?;
                TupleValue::Text(reader.read_bytes(length, "text value")?)
            }
            b'b' => {
                let length = reader.read_length_i32("binary value length")?;
                TupleValue::Binary(reader.read_bytes(length, "binary value")?)
            }
            kind => return Err(DecodeError::UnknownTupleValueKind { offset, kind }),
        };
        values.push(value);
    }
    Ok(TupleData { values })
}

/// A cursor over one message. Every read is bounds-checked and fails with the offset and
/// field name; nothing here can panic.
struct Reader<'a> {
    buf: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, rest: buf }
    }

    /// Offset of the next unread byte from the start of the message.
    fn offset(&self) -> usize {
        // `rest` is always a suffix of `buf`.
        self.buf.len().saturating_sub(self.rest.len())
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn read_array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(*head)
            }
            None => {
                Err(DecodeError::UnexpectedEnd { offset: self.offset(), field, needed: N, remaining: self.remaining() })
            }
        }
    }

    fn read_u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let [byte] = self.read_array::<1>(field)?;
        Ok(byte)
    }

    /// An `Int8` that the manual defines as 0 or 1.
    fn read_bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let offset = self.offset();
        match self.read_u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::UnknownFlags { offset, field, value }),
        }
    }

    fn read_i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.read_array(field).map(i16::from_be_bytes)
    }

    fn read_i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.read_array(field).map(i32::from_be_bytes)
    }

    fn read_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.read_array(field).map(u32::from_be_bytes)
    }

    fn read_i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.read_array(field).map(i64::from_be_bytes)
    }

    fn read_lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.read_array(field).map(|bytes| Lsn(u64::from_be_bytes(bytes)))
    }

    /// An `Int32` length, which the protocol defines as signed.
    fn read_length_i32(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let offset = self.offset();
        let value = self.read_i32(field)?;
        usize::try_from(value).map_err(|_| DecodeError::NegativeLength { offset, field, value: i64::from(value) })
    }

    /// An `Int16` count of items that each take at least `min_item_len` bytes, checked
    /// against the bytes left so that the caller may allocate `count` items.
    fn read_count_i16(&mut self, field: &'static str, min_item_len: usize) -> Result<usize, DecodeError> {
        let offset = self.offset();
        let value = self.read_i16(field)?;
        let count = usize::try_from(value).map_err(|_| DecodeError::NegativeLength {
            offset,
            field,
            value: i64::from(value),
        })?;
        let needed = count.saturating_mul(min_item_len);
        if needed > self.remaining() {
            return Err(DecodeError::OversizedLength {
                offset,
                field,
                length: count,
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    /// `length` raw bytes, where `length` came from the wire.
    fn read_bytes(&mut self, length: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        match self.rest.split_at_checked(length) {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => Err(DecodeError::OversizedLength {
                offset: self.offset(),
                field,
                length,
                needed: length,
                remaining: self.remaining(),
            }),
        }
    }

    /// A NUL-terminated UTF-8 string.
    fn read_str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let offset = self.offset();
        let mut parts = self.rest.splitn(2, |&byte| byte == 0);
        let (Some(text), Some(after)) = (parts.next(), parts.next()) else {
            return Err(DecodeError::UnterminatedString { offset, field });
        };
        let text = std::str::from_utf8(text)
            .map_err(|error| DecodeError::InvalidUtf8 { offset: offset.saturating_add(error.valid_up_to()), field })?;
        self.rest = after;
        Ok(text)
    }

    /// Succeeds only if the whole message was consumed.
    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { offset: self.offset(), count: self.remaining() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test-only encoder that writes messages the way the server's `proto.c` does.
    struct Frame(Vec<u8>);

    impl Frame {
        fn new(tag: u8) -> Self {
            Frame(vec![tag])
        }

        fn u8(mut self, value: u8) -> Self {
            self.0.push(value);
            self
        }

        fn i16(mut self, value: i16) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn i32(mut self, value: i32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn u32(mut self, value: u32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn i64(mut self, value: i64) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn lsn(mut self, value: Lsn) -> Self {
            self.0.extend_from_slice(&value.0.to_be_bytes());
            self
        }

        fn str(mut self, value: &str) -> Self {
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(0);
            self
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn length(self, length: usize) -> Self {
            self.i32(i32::try_from(length).expect("test length fits in Int32"))
        }

        fn xid(self, xid: Option<u32>) -> Self {
            match xid {
                Some(xid) => self.u32(xid),
                None => self,
            }
        }

        fn tuple(mut self, tuple: &TupleData<'_>) -> Self {
            let count = i16::try_from(tuple.values.len()).expect("test tuple fits in Int16");
            self = self.i16(count);
            for value in &tuple.values {
                self = match value {
                    TupleValue::Null => self.u8(b'n'),
                    TupleValue::UnchangedToast => self.u8(b'u'),
                    TupleValue::Text(bytes) => self.u8(b't').length(bytes.len()).raw(bytes),
                    TupleValue::Binary(bytes) => self.u8(b'b').length(bytes.len()).raw(bytes),
                };
            }
            self
        }

        fn old_tuple(self, old: &OldTuple<'_>) -> Self {
            match old {
                OldTuple::Key(tuple) => self.u8(b'K').tuple(tuple),
                OldTuple::Full(tuple) => self.u8(b'O').tuple(tuple),
            }
        }
    }

    struct Fixture {
        name: String,
        bytes: Vec<u8>,
        expected: LogicalMessage<'static>,
    }

    fn context(protocol_version: u32, in_streamed_block: bool) -> DecodeContext {
        DecodeContext { protocol_version, in_streamed_block }
    }

    /// Every context the server can produce: a streamed block needs protocol version 2.
    fn all_contexts() -> Vec<DecodeContext> {
        let mut contexts = Vec::new();
        for version in MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION {
            contexts.push(context(version, false));
            if version >= STREAMING_PROTOCOL_VERSION {
                contexts.push(context(version, true));
            }
        }
        contexts
    }

    fn sample_tuple() -> TupleData<'static> {
        TupleData {
            values: vec![
                TupleValue::Text(b"42"),
                TupleValue::Null,
                TupleValue::UnchangedToast,
                TupleValue::Text(b""),
                TupleValue::Binary(&[0, 0, 0, 7]),
                TupleValue::Text("naïve ☃".as_bytes()),
            ],
        }
    }

    fn key_tuple() -> TupleData<'static> {
        TupleData {
            values: vec![
                TupleValue::Text(b"41"),
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null,
                TupleValue::Null,
            ],
        }
    }

    const LSN: Lsn = Lsn(0x16_B374_D848);
    const END_LSN: Lsn = Lsn(0x16_B374_D900);
    /// 2024-01-01 00:00:00.123456 UTC
    const TIME: i64 = 757_382_400_123_456;

    /// The fixtures of one decode context, collected by the builders below (one per kind
    /// of message).
    struct Fixtures {
        ctx: DecodeContext,
        /// The transaction id that messages inside a streamed block carry.
        xid: Option<u32>,
        out: Vec<Fixture>,
    }

    impl Fixtures {
        fn add(&mut self, name: &str, frame: Frame, expected: LogicalMessage<'static>) {
            self.out.push(Fixture {
                name: format!("{name} (v{}, streamed {})", self.ctx.protocol_version, self.ctx.in_streamed_block),
                bytes: frame.0,
                expected,
            });
        }
    }

    /// One fixture per message kind (and per interesting variant of it) that the server
    /// can send in `ctx`, with the message it must decode to.
    fn fixtures(ctx: DecodeContext) -> Vec<Fixture> {
        let mut f = Fixtures { ctx, xid: ctx.in_streamed_block.then_some(0x2e7), out: Vec::new() };
        if !ctx.in_streamed_block {
            transaction_fixtures(&mut f);
        }
        relation_fixtures(&mut f);
        row_fixtures(&mut f);
        truncate_fixtures(&mut f);
        message_fixtures(&mut f);
        if ctx.protocol_version >= STREAMING_PROTOCOL_VERSION {
            streaming_fixtures(&mut f);
        }
        if ctx.protocol_version >= PARALLEL_STREAMING_PROTOCOL_VERSION {
            parallel_streaming_fixtures(&mut f);
        }
        if ctx.protocol_version >= TWO_PHASE_PROTOCOL_VERSION {
            two_phase_fixtures(&mut f);
        }
        f.out
    }

    /// Begin, Commit and Origin (never inside a streamed block).
    fn transaction_fixtures(f: &mut Fixtures) {
        f.add(
            "begin",
            Frame::new(b'B').lsn(LSN).i64(TIME).u32(731),
            LogicalMessage::Begin(Begin { final_lsn: LSN, commit_time_us: TIME, xid: 731 }),
        );
        f.add(
            "commit",
            Frame::new(b'C').u8(0).lsn(LSN).lsn(END_LSN).i64(TIME),
            LogicalMessage::Commit(Commit { flags: 0, commit_lsn: LSN, end_lsn: END_LSN, commit_time_us: TIME }),
        );
        f.add(
            "origin",
            Frame::new(b'O').lsn(Lsn(0xAB)).str("upstream"),
            LogicalMessage::Origin { commit_lsn: Lsn(0xAB), name: "upstream" },
        );
    }

    /// Relation (each replica identity, and one without columns) and Type.
    fn relation_fixtures(f: &mut Fixtures) {
        let xid = f.xid;
        for (byte, replica_identity) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ] {
            f.add(
                &format!("relation with replica identity {}", char::from(byte)),
                Frame::new(b'R')
                    .xid(xid)
                    .u32(16389)
                    .str("public")
                    .str("t")
                    .u8(byte)
                    .i16(3)
                    .u8(1)
                    .str("id")
                    .u32(23)
                    .i32(-1)
                    .u8(0)
                    .str("prix")
                    .u32(1700)
                    .i32(0x000a_0006)
                    .u8(0)
                    .str("")
                    .u32(25)
                    .i32(-1),
                LogicalMessage::Relation(Relation {
                    xid,
                    oid: 16389,
                    namespace: "public",
                    name: "t",
                    replica_identity,
                    columns: vec![
                        RelationColumn { is_key: true, name: "id", type_oid: 23, type_modifier: -1 },
                        RelationColumn { is_key: false, name: "prix", type_oid: 1700, type_modifier: 0x000a_0006 },
                        RelationColumn { is_key: false, name: "", type_oid: 25, type_modifier: -1 },
                    ],
                }),
            );
        }
        f.add(
            "relation without columns in pg_catalog",
            Frame::new(b'R').xid(xid).u32(1).str("").str("empty").u8(b'n').i16(0),
            LogicalMessage::Relation(Relation {
                xid,
                oid: 1,
                namespace: "",
                name: "empty",
                replica_identity: ReplicaIdentity::Nothing,
                columns: vec![],
            }),
        );
        f.add(
            "type",
            Frame::new(b'Y').xid(xid).u32(16385).str("public").str("mood"),
            LogicalMessage::Type(TypeMessage { xid, oid: 16385, namespace: "public", name: "mood" }),
        );
    }

    /// Insert, Update and Delete, with each kind of old tuple.
    fn row_fixtures(f: &mut Fixtures) {
        let xid = f.xid;
        f.add(
            "insert",
            Frame::new(b'I').xid(xid).u32(16389).u8(b'N').tuple(&sample_tuple()),
            LogicalMessage::Insert(Insert { xid, relation_oid: 16389, new: sample_tuple() }),
        );
        f.add(
            "insert of an empty tuple",
            Frame::new(b'I').xid(xid).u32(16389).u8(b'N').i16(0),
            LogicalMessage::Insert(Insert { xid, relation_oid: 16389, new: TupleData { values: vec![] } }),
        );
        for old in [None, Some(OldTuple::Key(key_tuple())), Some(OldTuple::Full(sample_tuple()))] {
            let name = match &old {
                None => "update without old tuple",
                Some(OldTuple::Key(_)) => "update with old key",
                Some(OldTuple::Full(_)) => "update with old row",
            };
            let mut frame = Frame::new(b'U').xid(xid).u32(16389);
            if let Some(old) = &old {
                frame = frame.old_tuple(old);
            }
            f.add(
                name,
                frame.u8(b'N').tuple(&sample_tuple()),
                LogicalMessage::Update(Update { xid, relation_oid: 16389, old, new: sample_tuple() }),
            );
        }
        for old in [OldTuple::Key(key_tuple()), OldTuple::Full(sample_tuple())] {
            let name = match &old {
                OldTuple::Key(_) => "delete with old key",
                OldTuple::Full(_) => "delete with old row",
            };
            f.add(
                name,
                Frame::new(b'D').xid(xid).u32(16389).old_tuple(&old),
                LogicalMessage::Delete(Delete { xid, relation_oid: 16389, old }),
            );
        }
    }

    /// Truncate with each combination of options.
    fn truncate_fixtures(f: &mut Fixtures) {
        let xid = f.xid;
        f.add(
            "truncate with cascade and restart identity",
            Frame::new(b'T').xid(xid).i32(2).u8(3).u32(16389).u32(16396),
            LogicalMessage::Truncate(Truncate {
                xid,
                cascade: true,
                restart_identity: true,
                relation_oids: vec![16389, 16396],
            }),
        );
        f.add(
            "truncate with restart identity only",
            Frame::new(b'T').xid(xid).i32(1).u8(2).u32(16389),
            LogicalMessage::Truncate(Truncate {
                xid,
                cascade: false,
                restart_identity: true,
                relation_oids: vec![16389],
            }),
        );
        f.add(
            "truncate without options",
            Frame::new(b'T').xid(xid).i32(1).u8(0).u32(16389),
            LogicalMessage::Truncate(Truncate {
                xid,
                cascade: false,
                restart_identity: false,
                relation_oids: vec![16389],
            }),
        );
    }

    /// Logical decoding messages, transactional or not.
    fn message_fixtures(f: &mut Fixtures) {
        let xid = f.xid;
        for (flags, content) in [(1, b"in a transaction".as_slice()), (0, b"".as_slice())] {
            f.add(
                &format!("message with flags {flags}"),
                Frame::new(b'M').xid(xid).u8(flags).lsn(LSN).str("flow").length(content.len()).raw(content),
                LogicalMessage::Message(LogicalDecodingMessage {
                    xid,
                    transactional: flags == 1,
                    lsn: LSN,
                    prefix: "flow",
                    content,
                }),
            );
        }
    }

    /// Stream Start, Stop, Commit and Abort (protocol 2 on).
    fn streaming_fixtures(f: &mut Fixtures) {
        for first_segment in [true, false] {
            f.add(
                &format!("stream start, first segment {first_segment}"),
                Frame::new(b'S').u32(741).u8(u8::from(first_segment)),
                LogicalMessage::StreamStart { xid: 741, first_segment },
            );
        }
        f.add("stream stop", Frame::new(b'E'), LogicalMessage::StreamStop);
        f.add(
            "stream commit",
            Frame::new(b'c').u32(741).u8(0).lsn(LSN).lsn(END_LSN).i64(TIME),
            LogicalMessage::StreamCommit(StreamCommit {
                xid: 741,
                flags: 0,
                commit_lsn: LSN,
                end_lsn: END_LSN,
                commit_time_us: TIME,
            }),
        );
        f.add(
            "stream abort",
            Frame::new(b'A').u32(741).u32(743),
            LogicalMessage::StreamAbort(StreamAbort { xid: 741, subxid: 743, abort_lsn: None, abort_time_us: None }),
        );
    }

    /// Stream Abort with its LSN and time (protocol 4 on).
    fn parallel_streaming_fixtures(f: &mut Fixtures) {
        f.add(
            "stream abort with abort LSN and time",
            Frame::new(b'A').u32(741).u32(741).lsn(LSN).i64(TIME),
            LogicalMessage::StreamAbort(StreamAbort {
                xid: 741,
                subxid: 741,
                abort_lsn: Some(LSN),
                abort_time_us: Some(TIME),
            }),
        );
    }

    /// Two-phase commit messages (protocol 3 on); only Stream Prepare inside a streamed block.
    fn two_phase_fixtures(f: &mut Fixtures) {
        if !f.ctx.in_streamed_block {
            f.add(
                "begin prepare",
                Frame::new(b'b').lsn(LSN).lsn(END_LSN).i64(TIME).u32(739).str("gid-commit"),
                LogicalMessage::BeginPrepare(BeginPrepare {
                    prepare_lsn: LSN,
                    end_lsn: END_LSN,
                    prepare_time_us: TIME,
                    xid: 739,
                    gid: "gid-commit",
                }),
            );
            f.add(
                "prepare",
                Frame::new(b'P').u8(0).lsn(LSN).lsn(END_LSN).i64(TIME).u32(739).str("gid-commit"),
                LogicalMessage::Prepare(Prepare {
                    flags: 0,
                    prepare_lsn: LSN,
                    end_lsn: END_LSN,
                    prepare_time_us: TIME,
                    xid: 739,
                    gid: "gid-commit",
                }),
            );
            f.add(
                "commit prepared",
                Frame::new(b'K').u8(0).lsn(LSN).lsn(END_LSN).i64(TIME).u32(739).str("gid-commit"),
                LogicalMessage::CommitPrepared(CommitPrepared {
                    flags: 0,
                    commit_lsn: LSN,
                    end_lsn: END_LSN,
                    commit_time_us: TIME,
                    xid: 739,
                    gid: "gid-commit",
                }),
            );
            f.add(
                "rollback prepared",
                Frame::new(b'r').u8(0).lsn(LSN).lsn(END_LSN).i64(TIME).i64(TIME + 1).u32(740).str(""),
                LogicalMessage::RollbackPrepared(RollbackPrepared {
                    flags: 0,
                    prepare_end_lsn: LSN,
                    rollback_end_lsn: END_LSN,
                    prepare_time_us: TIME,
                    rollback_time_us: TIME + 1,
                    xid: 740,
                    gid: "",
                }),
            );
        }
        f.add(
            "stream prepare",
            Frame::new(b'p').u8(0).lsn(LSN).lsn(END_LSN).i64(TIME).u32(741).str("gid-stream"),
            LogicalMessage::StreamPrepare(Prepare {
                flags: 0,
                prepare_lsn: LSN,
                end_lsn: END_LSN,
                prepare_time_us: TIME,
                xid: 741,
                gid: "gid-stream",
            }),
        );
    }

    fn decode(bytes: &[u8], protocol_version: u32, in_streamed_block: bool) -> Result<LogicalMessage<'_>, DecodeError> {
        decode_message(bytes, &context(protocol_version, in_streamed_block))
    }

    #[test]
    fn every_message_kind_decodes_in_every_protocol_version_and_context() {
        let mut decoded_tags = std::collections::BTreeSet::new();
        for ctx in all_contexts() {
            for fixture in fixtures(ctx) {
                let message =
                    decode_message(&fixture.bytes, &ctx).unwrap_or_else(|error| panic!("{}: {error}", fixture.name));
                assert_eq!(message, fixture.expected, "{}", fixture.name);
                decoded_tags.insert(fixture.bytes[0]);
            }
        }
        let all_tags: std::collections::BTreeSet<u8> = b"BMCORYIUDTSEcAbPKrp".iter().copied().collect();
        assert_eq!(decoded_tags, all_tags, "a message kind has no fixture");
    }

    #[test]
    fn every_strict_prefix_of_every_fixture_is_rejected() {
        for ctx in all_contexts() {
            for fixture in fixtures(ctx) {
                for length in 0..fixture.bytes.len() {
                    let prefix = &fixture.bytes[..length];
                    match decode_message(prefix, &ctx) {
                        Err(_) => {}
                        // The one ambiguity of the format: a version 4 Stream Abort cut right
                        // before its optional abort LSN and time is a complete Stream Abort
                        // without them (see the module documentation).
                        Ok(LogicalMessage::StreamAbort(abort)) if ctx.protocol_version >= 4 && length == 9 => {
                            assert_eq!(abort.abort_lsn, None);
                        }
                        Ok(message) => panic!("{}: prefix of {length} bytes decoded to {message:?}", fixture.name),
                    }
                }
            }
        }
    }

    #[test]
    fn every_fixture_with_an_extra_byte_is_rejected() {
        for ctx in all_contexts() {
            for fixture in fixtures(ctx) {
                let mut bytes = fixture.bytes.clone();
                bytes.push(0);
                assert!(decode_message(&bytes, &ctx).is_err(), "{}", fixture.name);
            }
        }
    }

    #[test]
    fn trailing_bytes_after_a_complete_message_are_reported_with_their_offset() {
        let bytes = Frame::new(b'B').lsn(Lsn(1)).i64(2).u32(3).raw(b"xy").0;
        assert_eq!(decode(&bytes, 1, false), Err(DecodeError::TrailingBytes { offset: 21, count: 2 }));
    }

    #[test]
    fn an_empty_message_is_an_unexpected_end_at_the_tag() {
        let error = decode(b"", 2, false).unwrap_err();
        assert_eq!(error, DecodeError::UnexpectedEnd { offset: 0, field: "message tag", needed: 1, remaining: 0 });
        assert_eq!(
            error.to_string(),
            "pgoutput message ends at offset 0 while reading message tag: 1 bytes needed, 0 remain"
        );
    }

    #[test]
    fn a_truncated_fixed_width_field_reports_its_offset_and_name() {
        let bytes = Frame::new(b'C').u8(0).lsn(Lsn(1)).raw(&[0, 0, 0]).0;
        assert_eq!(
            decode(&bytes, 1, false),
            Err(DecodeError::UnexpectedEnd { offset: 10, field: "end LSN", needed: 8, remaining: 3 })
        );
    }

    #[test]
    fn unknown_message_tags_are_rejected() {
        for tag in [b'Z', b'k', b'w', 0, 0xff] {
            assert_eq!(decode(&[tag], 4, false), Err(DecodeError::UnknownMessageTag { tag }));
        }
        assert_eq!(DecodeError::UnknownMessageTag { tag: b'Z' }.to_string(), "unknown pgoutput message tag 'Z'");
        assert_eq!(DecodeError::UnknownMessageTag { tag: 0 }.to_string(), "unknown pgoutput message tag 0x00");
    }

    #[test]
    fn streaming_messages_need_protocol_version_2() {
        for tag in [b'S', b'E', b'c', b'A'] {
            assert!(
                matches!(
                    decode(&[tag], 1, false),
                    Err(DecodeError::UnsupportedInProtocolVersion { protocol_version: 1, minimum: 2, .. })
                ),
                "{}",
                char::from(tag)
            );
        }
    }

    #[test]
    fn two_phase_messages_need_protocol_version_3() {
        for version in [1, 2] {
            for tag in [b'b', b'P', b'K', b'r', b'p'] {
                let error = decode(&[tag], version, false).unwrap_err();
                assert!(
                    matches!(error, DecodeError::UnsupportedInProtocolVersion { minimum: 3, .. }),
                    "{}: {error}",
                    char::from(tag)
                );
            }
        }
        assert_eq!(
            decode(b"K", 2, false).unwrap_err().to_string(),
            "Commit Prepared is not supported in pgoutput protocol version 2 \
             (requires version 3 or later)"
        );
    }

    #[test]
    fn the_abort_lsn_and_time_are_read_only_from_protocol_version_4() {
        let bytes = Frame::new(b'A').u32(741).u32(741).lsn(Lsn(5)).i64(6).0;
        assert_eq!(decode(&bytes, 3, true), Err(DecodeError::TrailingBytes { offset: 9, count: 16 }));
        assert!(matches!(
            decode(&bytes, 4, true),
            Ok(LogicalMessage::StreamAbort(StreamAbort { abort_lsn: Some(Lsn(5)), abort_time_us: Some(6), .. }))
        ));
        // Only part of the optional fields is a truncated message.
        assert!(matches!(
            decode(&bytes[..17], 4, true),
            Err(DecodeError::UnexpectedEnd { offset: 17, field: "abort timestamp", .. })
        ));
    }

    #[test]
    fn a_streamed_block_context_needs_protocol_version_2() {
        let bytes = Frame::new(b'E').0;
        assert_eq!(
            decode(&bytes, 1, true),
            Err(DecodeError::UnsupportedInProtocolVersion {
                what: "a streamed transaction block",
                protocol_version: 1,
                minimum: 2
            })
        );
    }

    #[test]
    fn protocol_versions_outside_1_to_4_are_rejected() {
        for protocol_version in [0, 5, u32::MAX] {
            assert_eq!(
                decode(b"E", protocol_version, false),
                Err(DecodeError::UnsupportedProtocolVersion { protocol_version })
            );
        }
    }

    #[test]
    fn the_streamed_xid_is_read_only_when_the_caller_is_in_a_streamed_block() {
        let streamed = Frame::new(b'I').u32(0x2e7).u32(16389).u8(b'N').i16(0).0;
        assert!(decode(&streamed, 2, false).is_err());
        let plain = Frame::new(b'I').u32(16389).u8(b'N').i16(0).0;
        assert!(decode(&plain, 2, true).is_err());
        assert!(matches!(
            decode(&streamed, 2, true),
            Ok(LogicalMessage::Insert(Insert { xid: Some(0x2e7), relation_oid: 16389, .. }))
        ));
    }

    #[test]
    fn unknown_tuple_value_kinds_are_reported_with_their_offset() {
        let bytes = Frame::new(b'I').u32(1).u8(b'N').i16(2).u8(b'n').u8(b'x').0;
        assert_eq!(decode(&bytes, 1, false), Err(DecodeError::UnknownTupleValueKind { offset: 9, kind: b'x' }));
    }

    #[test]
    fn tuples_must_be_introduced_by_the_kinds_the_message_allows() {
        let insert_with_key = Frame::new(b'I').u32(1).u8(b'K').i16(0).0;
        assert_eq!(
            decode(&insert_with_key, 1, false),
            Err(DecodeError::UnexpectedTupleKind { offset: 5, kind: b'K', expected: "'N'" })
        );
        let update_without_new = Frame::new(b'U').u32(1).u8(b'K').i16(0).u8(b'O').i16(0).0;
        assert_eq!(
            decode(&update_without_new, 1, false),
            Err(DecodeError::UnexpectedTupleKind { offset: 8, kind: b'O', expected: "'N'" })
        );
        let update_with_unknown = Frame::new(b'U').u32(1).u8(b'X').0;
        assert_eq!(
            decode(&update_with_unknown, 1, false),
            Err(DecodeError::UnexpectedTupleKind { offset: 5, kind: b'X', expected: "'K', 'O' or 'N'" })
        );
        let delete_with_new = Frame::new(b'D').u32(1).u8(b'N').i16(0).0;
        assert_eq!(
            decode(&delete_with_new, 1, false),
            Err(DecodeError::UnexpectedTupleKind { offset: 5, kind: b'N', expected: "'K' or 'O'" })
        );
    }

    #[test]
    fn invalid_utf8_in_a_name_is_reported_at_the_first_bad_byte() {
        let bytes = Frame::new(b'Y').u32(1).str("public").raw(b"mo\xffd\0").0;
        let error = decode(&bytes, 1, false).unwrap_err();
        assert_eq!(error, DecodeError::InvalidUtf8 { offset: 14, field: "type name" });
        assert_eq!(error.to_string(), "invalid UTF-8 at offset 14 in type name");
    }

    #[test]
    fn a_string_without_its_nul_is_unterminated() {
        let bytes = Frame::new(b'O').lsn(Lsn(1)).raw(b"upstream").0;
        assert_eq!(decode(&bytes, 1, false), Err(DecodeError::UnterminatedString { offset: 9, field: "origin name" }));
    }

    #[test]
    fn unknown_replica_identities_are_rejected() {
        let bytes = Frame::new(b'R').u32(1).str("s").str("t").u8(b'x').i16(0).0;
        assert_eq!(decode(&bytes, 1, false), Err(DecodeError::UnknownReplicaIdentity { offset: 9, value: b'x' }));
    }

    #[test]
    fn undefined_flag_bits_are_rejected() {
        let column = Frame::new(b'R').u32(1).str("s").str("t").u8(b'd').i16(1).u8(3).str("c").u32(23).i32(-1).0;
        assert_eq!(
            decode(&column, 1, false),
            Err(DecodeError::UnknownFlags { offset: 12, field: "column flags", value: 3 })
        );
        let truncate = Frame::new(b'T').i32(1).u8(4).u32(1).0;
        assert_eq!(
            decode(&truncate, 1, false),
            Err(DecodeError::UnknownFlags { offset: 5, field: "truncate options", value: 4 })
        );
        let message = Frame::new(b'M').u8(2).lsn(Lsn(1)).str("p").i32(0).0;
        assert_eq!(
            decode(&message, 1, false),
            Err(DecodeError::UnknownFlags { offset: 1, field: "message flags", value: 2 })
        );
        let stream_start = Frame::new(b'S').u32(1).u8(2).0;
        assert_eq!(
            decode(&stream_start, 2, false),
            Err(DecodeError::UnknownFlags { offset: 5, field: "first segment flag", value: 2 })
        );
    }

    #[test]
    fn corrupted_counts_and_lengths_are_rejected_before_anything_is_allocated() {
        // Each count is checked against the bytes left before any `Vec` is sized from it,
        // so none of these can make the decoder allocate more than the frame's length.
        let huge_tuple = Frame::new(b'I').u32(1).u8(b'N').i16(i16::MAX).u8(b'n').0;
        assert_eq!(
            decode(&huge_tuple, 1, false),
            Err(DecodeError::OversizedLength {
                offset: 6,
                field: "tuple column count",
                length: 32767,
                needed: 32767,
                remaining: 1
            })
        );
        let negative_tuple = Frame::new(b'I').u32(1).u8(b'N').i16(-1).0;
        assert_eq!(
            decode(&negative_tuple, 1, false),
            Err(DecodeError::NegativeLength { offset: 6, field: "tuple column count", value: -1 })
        );
        let huge_relation =
            Frame::new(b'R').u32(1).str("s").str("t").u8(b'd').i16(i16::MAX).u8(0).str("c").u32(23).i32(-1).0;
        assert!(matches!(
            decode(&huge_relation, 1, false),
            Err(DecodeError::OversizedLength {
                field: "relation column count",
                length: 32767,
                needed: 327_670,
                remaining: 11,
                ..
            })
        ));
        let negative_relation = Frame::new(b'R').u32(1).str("s").str("t").u8(b'd').i16(i16::MIN).0;
        assert!(matches!(decode(&negative_relation, 1, false), Err(DecodeError::NegativeLength { value: -32768, .. })));
        let huge_truncate = Frame::new(b'T').i32(i32::MAX).u8(0).u32(1).0;
        assert_eq!(
            decode(&huge_truncate, 1, false),
            Err(DecodeError::OversizedLength {
                offset: 1,
                field: "truncated relation count",
                length: 2_147_483_647,
                needed: 8_589_934_589,
                remaining: 5
            })
        );
        let negative_truncate = Frame::new(b'T').i32(-2).u8(0).0;
        assert!(matches!(
            decode(&negative_truncate, 1, false),
            Err(DecodeError::NegativeLength { offset: 1, value: -2, .. })
        ));
        for (kind, field) in [(b't', "text value length"), (b'b', "binary value length")] {
            let negative_value = Frame::new(b'I').u32(1).u8(b'N').i16(1).u8(kind).i32(-1).0;
            assert_eq!(
                decode(&negative_value, 1, false),
                Err(DecodeError::NegativeLength { offset: 9, field, value: -1 })
            );
        }
        let huge_value = Frame::new(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(i32::MAX).raw(b"ab").0;
        assert_eq!(
            decode(&huge_value, 1, false),
            Err(DecodeError::OversizedLength {
                offset: 13,
                field: "text value",
                length: 2_147_483_647,
                needed: 2_147_483_647,
                remaining: 2
            })
        );
        let huge_message = Frame::new(b'M').u8(1).lsn(Lsn(1)).str("p").i32(i32::MAX).0;
        assert!(matches!(
            decode(&huge_message, 1, false),
            Err(DecodeError::OversizedLength { field: "message content", remaining: 0, .. })
        ));
        let negative_message = Frame::new(b'M').u8(1).lsn(Lsn(1)).str("p").i32(i32::MIN).0;
        assert_eq!(
            decode(&negative_message, 1, false),
            Err(DecodeError::NegativeLength { offset: 12, field: "message content length", value: -2_147_483_648 })
        );
    }

    /// xorshift64*: a fixed-seed generator, so that a failure replays exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
        }
    }

    /// Applies a few random edits biased towards what breaks parsers: boundary values in
    /// length fields, cut or doubled bytes.
    fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len());
            match rng.below(6) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
                1 if !bytes.is_empty() => bytes[at] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)],
                2 => bytes.insert(at, rng.below(256).try_into().unwrap()),
                3 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                4 => bytes.truncate(at),
                _ => {
                    let end = (at + rng.below(8)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
            }
        }
    }

    #[test]
    fn randomly_mutated_fixtures_never_panic() {
        let mut rng = Rng(0x5EED_F00D_F1A5);
        let contexts: Vec<_> = (0..=5).flat_map(|v| [context(v, false), context(v, true)]).collect();
        let seeds: Vec<Vec<u8>> = all_contexts().into_iter().flat_map(fixtures).map(|fixture| fixture.bytes).collect();
        for _ in 0..50 {
            for seed in &seeds {
                let mut bytes = seed.clone();
                mutate(&mut rng, &mut bytes);
                for ctx in &contexts {
                    // Only the absence of a panic matters; errors are expected.
                    let _ = decode_message(&bytes, ctx);
                }
            }
        }
    }

    fn parse_hex_lines(text: &str) -> Vec<Vec<u8>> {
        text.lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                assert!(line.len() % 2 == 0, "odd-length hex line");
                (0..line.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex digit"))
                    .collect()
            })
            .collect()
    }

    /// Decodes a captured session the way the capture loop does: tracking the streamed
    /// block from Stream Start to Stream Stop.
    fn decode_captured(frames: &[Vec<u8>], protocol_version: u32) -> Vec<LogicalMessage<'_>> {
        let mut in_streamed_block = false;
        frames
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                let message = decode(frame, protocol_version, in_streamed_block)
                    .unwrap_or_else(|error| panic!("frame {i}: {error}"));
                match message {
                    LogicalMessage::StreamStart { .. } => in_streamed_block = true,
                    LogicalMessage::StreamStop => in_streamed_block = false,
                    _ => {}
                }
                message
            })
            .collect()
    }

    /// Every Commit closes the transaction of the Begin before it.
    fn assert_commits_match_begins(messages: &[LogicalMessage<'_>]) {
        let mut open = None;
        for message in messages {
            match message {
                LogicalMessage::Begin(begin) => {
                    assert_eq!(open.replace(begin.final_lsn), None, "nested Begin");
                }
                LogicalMessage::Commit(commit) => {
                    assert_eq!(open.take(), Some(commit.commit_lsn), "Commit without its Begin");
                }
                _ => {}
            }
        }
        assert_eq!(open, None, "unterminated transaction");
    }

    #[test]
    fn messages_captured_from_postgres_15_with_protocol_version_1_decode() {
        let frames = parse_hex_lines(include_str!("../../tests/fixtures/pgoutput/pg15-proto1.hex"));
        let messages = decode_captured(&frames, 1);
        assert_commits_match_begins(&messages);

        let LogicalMessage::Relation(relation) = &messages[1] else {
            panic!("expected a Relation, got {:?}", messages[1]);
        };
        assert_eq!((relation.namespace, relation.name), ("public", "t"));
        assert_eq!(relation.replica_identity, ReplicaIdentity::Default);
        let columns: Vec<_> = relation
            .columns
            .iter()
            .map(|column| (column.is_key, column.name, column.type_oid, column.type_modifier))
            .collect();
        assert_eq!(columns, [(true, "id", 23, -1), (false, "name", 25, -1), (false, "big", 25, -1)]);

        assert!(messages
            .iter()
            .any(|message| matches!(message, LogicalMessage::Update(Update { old: Some(OldTuple::Key(_)), .. }))));
        assert!(messages
            .iter()
            .any(|message| matches!(message, LogicalMessage::Update(Update { old: Some(OldTuple::Full(_)), .. }))));
        assert!(messages.iter().any(|message| matches!(
            message,
            LogicalMessage::Update(Update { new, .. })
                if new.values.get(2) == Some(&TupleValue::UnchangedToast)
        )));
        assert!(messages.iter().any(|message| matches!(
            message,
            LogicalMessage::Type(TypeMessage { namespace: "public", name: "mood", .. })
        )));
        assert!(messages.iter().any(|message| matches!(
            message,
            LogicalMessage::Truncate(Truncate { cascade: true, restart_identity: true, relation_oids, .. })
                if relation_oids.len() == 2
        )));
        assert!(messages.iter().any(|message| matches!(
            message,
            LogicalMessage::Message(LogicalDecodingMessage {
                transactional: true,
                prefix: "flow",
                content: b"in a transaction",
                ..
            })
        )));
        assert!(messages.iter().any(|message| matches!(
            message,
            LogicalMessage::Message(LogicalDecodingMessage { transactional: false, content: b"outside", .. })
        )));
        assert!(messages
            .iter()
            .any(|message| matches!(message, LogicalMessage::Origin { commit_lsn: Lsn(0xAB), name: "upstream" })));
    }

    #[test]
    fn messages_captured_from_postgres_15_with_streaming_and_two_phase_decode() {
        let frames = parse_hex_lines(include_str!("../../tests/fixtures/pgoutput/pg15-proto3-streaming.hex"));
        let messages = decode_captured(&frames, 3);
        assert_commits_match_begins(&messages);

        let gids: Vec<_> = messages
            .iter()
            .filter_map(|message| match message {
                LogicalMessage::BeginPrepare(m) => Some(("b", m.gid)),
                LogicalMessage::Prepare(m) => Some(("P", m.gid)),
                LogicalMessage::CommitPrepared(m) => Some(("K", m.gid)),
                LogicalMessage::RollbackPrepared(m) => Some(("r", m.gid)),
                _ => None,
            })
            .collect();
        assert_eq!(
            gids,
            [
                ("b", "gid-commit"),
                ("P", "gid-commit"),
                ("K", "gid-commit"),
                ("b", "gid-rollback"),
                ("P", "gid-rollback"),
                ("r", "gid-rollback"),
            ]
        );

        // The savepoint's changes were streamed and then rolled back: a Stream Abort for
        // the subtransaction, after which the top-level transaction goes on and commits.
        let starts: Vec<_> = messages
            .iter()
            .filter_map(|message| match message {
                LogicalMessage::StreamStart { xid, first_segment } => Some((*xid, *first_segment)),
                _ => None,
            })
            .collect();
        let top_xid = starts[0].0;
        assert_eq!(starts, [(top_xid, true), (top_xid, false), (top_xid, false)]);
        let aborts: Vec<_> = messages
            .iter()
            .filter_map(|message| match message {
                LogicalMessage::StreamAbort(abort) => Some(*abort),
                _ => None,
            })
            .collect();
        assert_eq!(aborts.len(), 1);
        assert_eq!(aborts[0].xid, top_xid);
        assert_ne!(aborts[0].subxid, top_xid);
        assert_eq!((aborts[0].abort_lsn, aborts[0].abort_time_us), (None, None));
        assert!(matches!(
            messages.last(),
            Some(LogicalMessage::StreamCommit(StreamCommit { xid, .. })) if *xid == top_xid
        ));

        // Inside the blocks every data message carries an XID; outside, none does.
        let mut in_block = false;
        let mut streamed_inserts = 0;
        for message in &messages {
            match message {
                LogicalMessage::StreamStart { .. } => in_block = true,
                LogicalMessage::StreamStop => in_block = false,
                LogicalMessage::Insert(insert) => {
                    assert_eq!(insert.xid.is_some(), in_block);
                    streamed_inserts += usize::from(in_block);
                }
                LogicalMessage::Relation(relation) => assert_eq!(relation.xid.is_some(), in_block),
                LogicalMessage::Update(update) => assert_eq!(update.xid.is_some(), in_block),
                _ => {}
            }
        }
        assert_eq!(streamed_inserts, 600);

        // Protocol version 1 cannot have produced these frames.
        assert!(frames
            .iter()
            .any(|frame| matches!(decode(frame, 1, false), Err(DecodeError::UnsupportedInProtocolVersion { .. }))));
    }

    #[test]
    fn binary_tuple_values_captured_from_postgres_15_decode() {
        let frames = parse_hex_lines(include_str!("../../tests/fixtures/pgoutput/pg15-proto2-binary.hex"));
        let messages = decode_captured(&frames, 2);
        assert_commits_match_begins(&messages);
        let inserts: Vec<_> = messages
            .iter()
            .filter_map(|message| match message {
                LogicalMessage::Insert(insert) => Some(insert),
                _ => None,
            })
            .collect();
        assert_eq!(inserts.len(), 1);
        let values = &inserts[0].new.values;
        assert_eq!(values[0], TupleValue::Binary(&[0, 0, 0, 1]));
        assert_eq!(values[1], TupleValue::Binary(b"happy"));
        assert!(matches!(values[2], TupleValue::Binary(numeric) if numeric.len() == 12));
    }

    #[test]
    fn every_prefix_of_every_captured_frame_is_rejected() {
        for (file, version) in [
            (include_str!("../../tests/fixtures/pgoutput/pg15-proto1.hex"), 1),
            (include_str!("../../tests/fixtures/pgoutput/pg15-proto3-streaming.hex"), 3),
        ] {
            let frames = parse_hex_lines(file);
            let mut in_streamed_block = false;
            // The streamed transaction repeats one Insert shape hundreds of times; the first
            // 120 frames cover every distinct message kind in these files.
            for frame in frames.iter().take(120) {
                for length in 0..frame.len() {
                    assert!(
                        decode(&frame[..length], version, in_streamed_block).is_err(),
                        "prefix of {length} bytes of {frame:02x?}"
                    );
                }
                match decode(frame, version, in_streamed_block) {
                    Ok(LogicalMessage::StreamStart { .. }) => in_streamed_block = true,
                    Ok(LogicalMessage::StreamStop) => in_streamed_block = false,
                    _ => {}
                }
            }
        }
    }
}
