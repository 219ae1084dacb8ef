//! What the two randomized differential harnesses ([`crate::differential`] for the CDC
//! connector, [`crate::differential_batch`] for the batch one) share: the text and SQL
//! helpers their generators use, the seed plan read from the environment, and running one
//! case in its own task so that a panic or a hang is that case's failure, not the test's.
//!
//! The generators themselves stay apart: the two connectors cover different spaces (replica
//! identities and streaming faults on one side, cursors, templates and poll schedules on the
//! other).

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// An environment variable parsed as `T`, if set and parseable.
pub fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Text of `len` characters drawn from an alphabet that exercises quoting and encoding:
/// quotes, backslashes, multi-byte characters, control characters, LIKE wildcards.
pub fn random_text(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[char] =
        &['a', 'b', 'Z', ' ', '\'', '"', '\\', '/', '~', 'é', 'ß', '中', '😀', '\n', '\t', '%', '_', '0', '9', '-'];
    (0..len).map(|_| *ALPHABET.choose(rng).expect("alphabet")).collect()
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(rng: &mut StdRng, bytes: usize) -> String {
    (0..bytes).fold(String::new(), |mut s, _| {
        let _ = write!(s, "{:02x}", rng.gen::<u8>());
        s
    })
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table of the `test` schema, quoted.
pub fn qualified(table: &str) -> String {
    format!("test.{}", quote_ident(table))
}

/// `text` cut to about 300 bytes (on a character boundary), for failure messages.
pub fn cut(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_string();
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &text[..end], text.len())
}

/// The seeds to run, from variables named after `prefix`: one (`<prefix>_SEED`), fresh ones
/// for `<prefix>_MINUTES` (the budget is returned), or the range of `<prefix>_SEEDS` seeds
/// (default `default_count`) from `<prefix>_SEED_BASE` (default 1).
pub fn seed_plan(prefix: &str, default_count: u64) -> (Vec<u64>, Option<Duration>) {
    if let Some(seed) = env_parse::<u64>(&format!("{prefix}_SEED")) {
        return (vec![seed], None);
    }
    if let Some(minutes) = env_parse::<f64>(&format!("{prefix}_MINUTES")) {
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_secs());
        let seeds = (0..100_000u64).map(|i| start.wrapping_mul(1_000).wrapping_add(i)).collect();
        return (seeds, Some(Duration::from_secs_f64(minutes * 60.0)));
    }
    let base = env_parse(&format!("{prefix}_SEED_BASE")).unwrap_or(1);
    let count = env_parse(&format!("{prefix}_SEEDS")).unwrap_or(default_count);
    ((base..base + count).collect(), None)
}

/// Runs one case in its own task, within `limit`: a panic anywhere in it, or its not
/// finishing in time, is its failure (a message), and the next case still runs.
pub async fn run_guarded<T: Send + 'static>(
    case: impl Future<Output = Result<T, String>> + Send + 'static,
    limit: Duration,
) -> Result<T, String> {
    let task = tokio::spawn(case);
    match tokio::time::timeout(limit, task).await {
        Err(_) => Err(format!("the case did not finish within {} s", limit.as_secs())),
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => {
            let panic = join.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(a panic without a message)".into());
            Err(format!("panicked: {message}"))
        }
        Ok(Err(join)) => Err(format!("the case's task ended: {join}")),
    }
}
