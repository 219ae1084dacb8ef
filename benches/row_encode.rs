//! Connector CPU spent encoding one row of the backfill benchmark's table (benches/backfill.sh:
//! int8 key, text, int4, numeric, timestamptz, bool, jsonb, float8), value by value, the way a
//! chunk reads it: the five fixed-width columns from their binary send form, the rest from
//! their text. Prints nanoseconds per value and per row (best of five runs), so
//! a change to an encoder can be weighed without a server. Run: `cargo bench --bench
//! row_encode` (or `scripts/bench.sh encode`).

use std::hint::black_box;
use std::time::Instant;

use source_postgres::value::{BinaryCodec, ColumnEncoder, PgType, ValueFormats};

/// Distinct rows (few enough to stay in cache: the encoders are timed, not memory) and how
/// many times each is encoded per run.
const ROWS: usize = 4096;
const PASSES: usize = 50;

enum Cell {
    Text(ColumnEncoder<'static>),
    Binary(BinaryCodec, &'static PgType),
}

fn builtin(name: &str) -> &'static PgType {
    Box::leak(Box::new(PgType::Builtin { name: name.into(), typmod: -1 }))
}

/// The columns of row `g` as the server sends them (the same values as `wide_rows_sql` in
/// benches/common.sh).
fn row(g: i64) -> Vec<Vec<u8>> {
    let micros = (g + 1_704_067_200 - 946_684_800) * 1_000_000;
    vec![
        format!("customer {:032x}", (g as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes(),
        ((g % 1000) as i32).to_be_bytes().to_vec(),
        format!("{}.{:02}", (g % 100_000) / 100, (g % 100_000) % 100).into_bytes(),
        micros.to_be_bytes().to_vec(),
        vec![u8::from(g % 3 == 0)],
        format!(r#"{{"k": {}, "ok": {}, "tag": "tag{}"}}"#, g % 97, g % 2 == 0, g % 13).into_bytes(),
        (g as f64 * 0.001).to_be_bytes().to_vec(),
    ]
}

fn main() {
    let formats = ValueFormats::default();
    let binary = |name: &str, oid: u32| {
        let ty = builtin(name);
        Cell::Binary(BinaryCodec::for_column(ty, oid, false).expect("a binary type"), ty)
    };
    let columns: Vec<(&str, Cell)> = vec![
        ("text", Cell::Text(ColumnEncoder::new(builtin("text"), false, &formats))),
        ("int4 (binary)", binary("int4", 23)),
        ("numeric", Cell::Text(ColumnEncoder::new(builtin("numeric"), false, &formats))),
        ("timestamptz (binary)", binary("timestamptz", 1184)),
        ("bool (binary)", binary("bool", 16)),
        ("jsonb", Cell::Text(ColumnEncoder::new(builtin("jsonb"), false, &formats))),
        ("float8 (binary)", binary("float8", 701)),
    ];
    let rows: Vec<Vec<Vec<u8>>> = (1..=ROWS as i64).map(row).collect();
    let mut out = Vec::with_capacity(1 << 20);
    let mut total = 0.0;
    println!(
        "== encoding the backfill table's values, ns per value (best of 5 runs of {PASSES} passes over {ROWS} rows)"
    );
    for (i, (name, cell)) in columns.iter().enumerate() {
        let best = (0..5)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..PASSES {
                    for row in &rows {
                        out.clear();
                        let result = match cell {
                            Cell::Text(encoder) => encoder.encode(&row[i], &mut out),
                            Cell::Binary(codec, ty) => codec.encode(ty, &row[i], &mut out),
                        };
                        if let Err(err) = result {
                            panic!("{name}: {err}");
                        }
                        black_box(&out);
                    }
                }
                start.elapsed().as_secs_f64() * 1e9 / (ROWS * PASSES) as f64
            })
            .fold(f64::INFINITY, f64::min);
        total += best;
        println!("  {name:<24} {best:>8.1}");
    }
    println!("  {:<24} {total:>8.1}", "row (sum)");
}
