//! Backfill reads integers, floats, `bool`, `date`, timestamps and `uuid` in their binary
//! send form (`value::BinaryCodec`), every other type as text. Documents must not change
//! for it: for each of those types, a real server is asked for both forms of many values —
//! the binary send form of `$1::type` and its `::text` output, in the connector's pinned
//! session settings — and the two encodings must be byte-identical, as values and as
//! collection-key values; where the connector computes a value's text from its send form
//! (a resume key read in binary), that text must be the server's `::text` byte for byte.
//!
//! Values are sent as raw binary parameters, so any bit pattern the server accepts can be
//! tried: random ones (uniform over the whole range, not just "nice" values: float
//! mantissas with 17 significant digits, subnormals, NaN payloads), plus the edges (±0,
//! ±infinity, NaN, the extreme finite floats, 4713 BC, 0001-01-01 BC, 294276 AD,
//! 5874897 AD, the first and last microsecond of a day, ...).

use rand::{Rng, SeedableRng};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

use source_postgres::value::{BinaryCodec, ColumnEncoder, PgType, ValueFormats};

use crate::harness::cluster;

/// A parameter sent as the given raw bytes in binary format, whatever its type.
#[derive(Debug)]
struct Raw(Vec<u8>);

impl ToSql for Raw {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A result cell's raw bytes (binary format: a text column's UTF-8 bytes).
struct Cell(Vec<u8>);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Microseconds since 2000-01-01 of PostgreSQL's first and one past its last timestamp
/// (4714-11-24 BC 00:00 and 294277-01-01 00:00).
const TIMESTAMP_MIN: i64 = -211_813_488_000_000_000;
const TIMESTAMP_END: i64 = 9_223_371_331_200_000_000;
/// Days since 2000-01-01 of the first and last date (4714-11-24 BC and 5874897-12-31).
const DATE_MIN: i32 = -2_451_545;
const DATE_MAX: i32 = 2_145_031_948;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The values to try of one type: the edges, then `random` random ones.
fn values(name: &str, rng: &mut rand::rngs::StdRng, random: usize) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    match name {
        "bool" => values.extend([vec![0], vec![1]]),
        "int2" => {
            values.extend([i16::MIN, -1, 0, 1, i16::MAX].map(|v| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen::<i16>().to_be_bytes().to_vec()));
        }
        "int4" => {
            values.extend([i32::MIN, -1, 0, 1, i32::MAX].map(|v| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen::<i32>().to_be_bytes().to_vec()));
        }
        "int8" => {
            values.extend([i64::MIN, -1, 0, 1, i64::MAX].map(|v| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| (rng.gen::<i64>() >> rng.gen_range(0..63)).to_be_bytes().to_vec()));
        }
        "oid" => {
            values.extend([0, 1, u32::MAX].map(|v: u32| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen::<u32>().to_be_bytes().to_vec()));
        }
        "float4" => {
            let edges = [
                0.0,
                -0.0,
                f32::MAX,
                f32::MIN,
                f32::MIN_POSITIVE,
                -f32::MIN_POSITIVE,
                f32::from_bits(1),
                f32::from_bits(0x8000_0001),
                f32::from_bits(0x007f_ffff),
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::from_bits(0xffc0_0001),
                1e-6,
                9.999_999e-7,
                1e21,
                9.999_999e20,
                0.1,
                16_777_216.0,
                16_777_217.0,
                123_456.79,
            ];
            values.extend(edges.iter().map(|v| v.to_be_bytes().to_vec()));
            // Every bit pattern is a float4: uniform bits cover every exponent.
            values.extend((0..random).map(|_| rng.gen::<u32>().to_be_bytes().to_vec()));
            // Integers and decimals of everyday sizes.
            values.extend((0..random / 4).map(|_| (rng.gen_range(-1e7f32..1e7) as i32 as f32).to_be_bytes().to_vec()));
        }
        "float8" => {
            let edges = [
                0.0,
                -0.0,
                f64::MAX,
                f64::MIN,
                f64::MIN_POSITIVE,
                -f64::MIN_POSITIVE,
                f64::from_bits(1),
                f64::from_bits(0x8000_0000_0000_0001),
                f64::from_bits(0x000f_ffff_ffff_ffff),
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                f64::from_bits(0xfff8_0000_0000_0001),
                1e-4,
                9.999_999_999_999_999e-5,
                1e-6,
                1e15,
                999_999_999_999_999.9,
                1e16,
                1e21,
                0.1,
                0.3,
                0.1 + 0.2,
                1.0 / 3.0,
                123_456_789_012_345_680.0,
                9_007_199_254_740_993.0,
                2.0f64.powi(60),
                500.0 * 0.001,
                299_792.458,
            ];
            values.extend(edges.iter().map(|v| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen::<u64>().to_be_bytes().to_vec()));
            // The plain-decimal range, where the text path copies the server's digits
            // (1e-4 to 1e15): random mantissas at random exponents, and the bench's kind of
            // values (integers times 0.001).
            values.extend((0..random).map(|_| {
                let value = rng.gen::<f64>() * 10f64.powi(rng.gen_range(-4..16));
                let value = if rng.gen() { -value } else { value };
                value.to_be_bytes().to_vec()
            }));
            values.extend(
                (0..random / 4).map(|_| (f64::from(rng.gen_range(0..2_000_000)) * 0.001).to_be_bytes().to_vec()),
            );
            // Few fraction bits below 1e15 (eighths, sixteenths, ...): where two shortest
            // candidates can be equally near, and PostgreSQL rounds to even.
            values.extend((0..random / 4).map(|_| {
                let bits = rng.gen_range(1..8);
                let scaled = rng.gen_range(100_000_000_000_000i64 << bits..1_000_000_000_000_000i64 << bits);
                (scaled as f64 / f64::from(1u32 << bits)).to_be_bytes().to_vec()
            }));
        }
        "date" => {
            let edges =
                [i32::MIN, i32::MAX, DATE_MIN, DATE_MAX, -730_485, -730_486, -730_120, 0, -1, 2_921_939, 2_921_940];
            values.extend(edges.iter().map(|v| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen_range(DATE_MIN..=DATE_MAX).to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen_range(-800_000..3_000_000i32).to_be_bytes().to_vec()));
        }
        "timestamp" | "timestamptz" => {
            let year_0 = -730_485 * MICROS_PER_DAY;
            let year_10000 = 2_921_940 * MICROS_PER_DAY;
            let edges = [
                i64::MIN,
                i64::MAX,
                TIMESTAMP_MIN,
                TIMESTAMP_END - 1,
                year_0,
                year_0 - 1,
                year_0 + 1,
                year_10000 - 1,
                year_10000,
                0,
                -1,
                1,
                MICROS_PER_DAY - 1,
                120_000,
                100_000,
                999_999,
            ];
            values.extend(edges.iter().map(|v| v.to_be_bytes().to_vec()));
            values.extend((0..random).map(|_| rng.gen_range(TIMESTAMP_MIN..TIMESTAMP_END).to_be_bytes().to_vec()));
            values.extend(
                (0..random).map(|_| {
                    rng.gen_range(year_0 - MICROS_PER_DAY..year_10000 + MICROS_PER_DAY).to_be_bytes().to_vec()
                }),
            );
            // Whole seconds and milliseconds, whose fractions are trimmed.
            values.extend(
                (0..random / 4)
                    .map(|_| (rng.gen_range(-5_000_000_000i64..5_000_000_000) * 1000).to_be_bytes().to_vec()),
            );
        }
        "uuid" => {
            values.extend([vec![0; 16], vec![0xff; 16]]);
            values.extend((0..random).map(|_| rng.gen::<[u8; 16]>().to_vec()));
        }
        other => panic!("no values for {other}"),
    }
    values
}

const TYPES: &[(&str, u32)] = &[
    ("bool", 16),
    ("int2", 21),
    ("int4", 23),
    ("int8", 20),
    ("oid", 26),
    ("float4", 700),
    ("float8", 701),
    ("date", 1082),
    ("timestamp", 1114),
    ("timestamptz", 1184),
    ("uuid", 2950),
];

#[tokio::test]
async fn binary_cells_encode_exactly_as_the_servers_text_output() {
    let random: usize = std::env::var("BINARY_VALUES").ok().and_then(|n| n.parse().ok()).unwrap_or(4000);
    let seed: u64 = std::env::var("BINARY_VALUES_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("BINARY_VALUES_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let client = cluster().await.superuser_client("postgres").await;
    for (setting, value) in source_postgres::pg::SESSION_SETTINGS {
        client.batch_execute(&format!("SET {setting} = '{value}'")).await.unwrap();
    }
    let mut compared = 0;
    let mut exact_texts = 0;
    for (name, oid) in TYPES {
        let ty = PgType::Builtin { name: (*name).into(), typmod: -1 };
        let param_type = Type::from_oid(*oid).unwrap();
        // The text exactly as a chunk query selects it (`backfill::text_expression`).
        let sql = format!("SELECT $1::pg_catalog.{name}, ($1::pg_catalog.{name})::text");
        let statement = client.prepare_typed(&sql, &[param_type]).await.unwrap();
        let values = values(name, &mut rng, random);
        // Pipelined: all sent before the first answer is read.
        let answers = futures::future::join_all(values.iter().map(|raw| {
            let param = Raw(raw.clone());
            let client = &client;
            let statement = &statement;
            async move { client.query_one(statement, &[&param]).await }
        }))
        .await;
        for (raw, answer) in values.iter().zip(answers) {
            let row = answer.unwrap_or_else(|err| panic!("{name} {raw:02x?}: the server refused it: {err}"));
            let Cell(binary) = row.get(0);
            let Cell(text) = row.get(1);
            assert_eq!(row.columns()[0].type_().oid(), *oid);
            for key in [false, true] {
                let codec = BinaryCodec::for_column(&ty, *oid, key).unwrap();
                let (mut from_binary, mut from_text) = (Vec::new(), Vec::new());
                codec
                    .encode(&ty, &binary, &mut from_binary)
                    .unwrap_or_else(|err| panic!("{name} {binary:02x?}: {err}"));
                ColumnEncoder::new(&ty, key, &ValueFormats::default())
                    .encode(&text, &mut from_text)
                    .unwrap_or_else(|err| panic!("{name} {:?}: {err}", String::from_utf8_lossy(&text)));
                assert_eq!(
                    String::from_utf8_lossy(&from_binary),
                    String::from_utf8_lossy(&from_text),
                    "{name} key={key}: binary {binary:02x?} and text {:?} (seed {seed})",
                    String::from_utf8_lossy(&text)
                );
            }
            // A resume key taken from the binary cell (`backfill::KeyCell`) must be the text
            // the server prints, or the next chunk would start elsewhere.
            let codec = BinaryCodec::for_column(&ty, *oid, true).unwrap();
            if let Some(key_text) = codec.text_output(&ty, &binary).unwrap() {
                assert_eq!(key_text.as_bytes(), &text[..], "{name}: text output of {binary:02x?} (seed {seed})");
                exact_texts += 1;
            }
            compared += 1;
        }
        println!("{name}: {} values compared", values.len());
    }
    assert!(compared > 10 * random, "{compared} values compared");
    // int2, int4, int8, oid and uuid.
    assert!(exact_texts > 4 * random, "{exact_texts} text outputs compared");
}
