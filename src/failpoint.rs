//! Named failpoints for fault-injection tests.
//!
//! `SOURCE_POSTGRES_FAILPOINT=<name>[:<n>]` makes the process exit abruptly the `n`-th time
//! (default: the first) the named point is reached: stdout is flushed first where the point
//! says so, then the process exits with [`EXIT_CODE`] without running destructors, closing
//! connections cleanly or writing anything more. That reproduces the moments a crash hurts
//! most, deterministically, which random SIGKILLs only hit by chance.
//!
//! Unset (always, in production) a failpoint costs one relaxed atomic load.
//!
//! | name | where |
//! |---|---|
//! | `after_documents` | documents written and flushed, their checkpoint not yet written |
//! | `after_checkpoint` | a checkpoint written and flushed, its acknowledgement not yet read |
//! | `mid_chunk` | after each backfill row (with `:n`, after the n-th row of the session) |
//! | `mid_transaction` | after each document of a source transaction, before its commit |
//! | `after_watermark` | a fence set (a watermark committed, or read-only, the WAL position read), the stream not yet at it |

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

/// The exit status of a process stopped by a failpoint.
pub const EXIT_CODE: i32 = 86;

/// The failpoints, as named in `SOURCE_POSTGRES_FAILPOINT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    AfterDocuments,
    AfterCheckpoint,
    MidChunk,
    MidTransaction,
    AfterWatermark,
}

impl Failpoint {
    const ALL: [Failpoint; 5] = [
        Failpoint::AfterDocuments,
        Failpoint::AfterCheckpoint,
        Failpoint::MidChunk,
        Failpoint::MidTransaction,
        Failpoint::AfterWatermark,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failpoint::AfterDocuments => "after_documents",
            Failpoint::AfterCheckpoint => "after_checkpoint",
            Failpoint::MidChunk => "mid_chunk",
            Failpoint::MidTransaction => "mid_transaction",
            Failpoint::AfterWatermark => "after_watermark",
        }
    }
}

/// The configured failpoint and its remaining count.
struct Armed {
    point: Failpoint,
    hits_left: AtomicU64,
}

/// 0: not yet read from the environment; 1: none armed; 2: armed.
static STATE: AtomicU8 = AtomicU8::new(0);
static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Parse `name[:n]`. Unknown names and bad counts are errors, so a typo in a test does not
/// silently disarm the fault.
pub fn parse(text: &str) -> Result<(Failpoint, u64), String> {
    let (name, count) = match text.split_once(':') {
        Some((name, count)) => {
            let count: u64 = count
                .parse()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| format!("failpoint count {count:?} is not a positive integer"))?;
            (name, count)
        }
        None => (text, 1),
    };
    let point = Failpoint::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
        let known: Vec<&str> = Failpoint::ALL.iter().map(|p| p.name()).collect();
        format!("unknown failpoint {name:?} (known: {})", known.join(", "))
    })?;
    Ok((point, count))
}

fn armed() -> Option<&'static Armed> {
    match STATE.load(Ordering::Relaxed) {
        1 => None,
        _ => {
            let armed = ARMED.get_or_init(|| {
                let text = std::env::var("SOURCE_POSTGRES_FAILPOINT").ok().filter(|t| !t.is_empty())?;
                match parse(&text) {
                    Ok((point, count)) => Some(Armed { point, hits_left: AtomicU64::new(count) }),
                    Err(err) => {
                        tracing::error!("SOURCE_POSTGRES_FAILPOINT: {err}");
                        std::process::exit(2);
                    }
                }
            });
            STATE.store(if armed.is_some() { 2 } else { 1 }, Ordering::Relaxed);
            armed.as_ref()
        }
    }
}

/// Whether `point` fires now (counting this hit). The caller then flushes what the point
/// promises and calls [`exit`].
pub fn fires(point: Failpoint) -> bool {
    match armed() {
        Some(armed) if armed.point == point => armed.hits_left.fetch_sub(1, Ordering::Relaxed) == 1,
        _ => false,
    }
}

/// Stop the process at once, as a crash would.
pub fn exit(point: Failpoint) -> ! {
    tracing::warn!(failpoint = point.name(), "failpoint reached: exiting");
    std::process::exit(EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts() {
        assert_eq!(parse("mid_chunk").unwrap(), (Failpoint::MidChunk, 1));
        assert_eq!(parse("after_checkpoint:7").unwrap(), (Failpoint::AfterCheckpoint, 7));
        for point in Failpoint::ALL {
            assert_eq!(parse(point.name()).unwrap().0, point);
        }
        assert!(parse("mid-chunk").unwrap_err().contains("known: after_documents"));
        assert!(parse("mid_chunk:0").is_err());
        assert!(parse("mid_chunk:x").is_err());
    }
}
