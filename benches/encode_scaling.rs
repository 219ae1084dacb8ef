//! How value encoding scales with a value's size: 1 MB and 10 MB values of the types whose
//! encoders walk their input piece by piece (text escapes, bytea hex, JSON, arrays), timed
//! (best of three), with the ratio. Linear is about 10x; quadratic would be about 100x.
//!
//! A timing is a benchmark, not a test: the unit test
//! `value::tests::encoding_work_grows_linearly_with_the_value` counts allocations instead,
//! which a loaded machine cannot disturb; this one also shows an encoder that re-reads its
//! input without allocating. Run: `cargo bench --bench encode_scaling` (or
//! `scripts/bench.sh encode`).

use std::time::{Duration, Instant};

use source_postgres::value::{encode_value, PgType};

const MEGABYTE: usize = 1 << 20;

fn builtin(name: &str) -> PgType {
    PgType::Builtin { name: name.into(), typmod: -1 }
}

fn values(size: usize) -> Vec<(&'static str, PgType, Vec<u8>)> {
    vec![
        ("text", builtin("text"), "a\"é\n".repeat(size / 5).into_bytes()),
        ("bytea", builtin("bytea"), format!("\\x{}", "0f".repeat(size / 2)).into_bytes()),
        ("json", builtin("json"), format!("[{}1]", "{\"k\": \"\\ud83d v\"}, ".repeat(size / 20)).into_bytes()),
        (
            "text[]",
            PgType::Array { element: Box::new(builtin("text")) },
            format!("{{{}x}}", "\"a b\",NULL,".repeat(size / 11)).into_bytes(),
        ),
    ]
}

fn best_time(ty: &PgType, text: &[u8]) -> Duration {
    let mut out = Vec::with_capacity(text.len() * 2);
    (0..3)
        .map(|_| {
            out.clear();
            let start = Instant::now();
            if let Err(err) = encode_value(ty, text, &mut out) {
                panic!("{ty}: {err}");
            }
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    println!("{:<8} {:>10} {:>10} {:>7} {:>10}", "type", "1 MB", "10 MB", "ratio", "MB/s (10)");
    for ((name, ty, small), (_, _, large)) in values(MEGABYTE).iter().zip(&values(10 * MEGABYTE)) {
        let small_time = best_time(ty, small);
        let large_time = best_time(ty, large);
        let ratio = large_time.as_secs_f64() / small_time.as_secs_f64().max(1e-9);
        let rate = large.len() as f64 / MEGABYTE as f64 / large_time.as_secs_f64().max(1e-9);
        println!("{name:<8} {small_time:>10.2?} {large_time:>10.2?} {ratio:>7.1} {rate:>10.0}");
    }
}
