//! The native-histogram chunk codec's SQL twin: `promgres.histogram_samples` returns, to the
//! bit, what the Rust decoder returns for histograms Rust encoded (both kinds, layout changes,
//! resets, custom buckets, NaN payloads, -0.0, counts past 2^63), and
//! `promgres.histogram_buckets` gives Prometheus's bucket bounds.

mod common;

use common::*;
use promgres::decode::{BucketSpan, Histogram, HistogramCounts, ResetHint};
use promgres::engine::histogram_codec;
use std::time::Instant;

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// One row of `histogram_samples`, floats as bits.
#[derive(Debug, PartialEq)]
struct Row {
    ms: i64,
    is_float: bool,
    count: u64,
    sum: u64,
    schema: i32,
    zero_threshold: u64,
    zero_count: u64,
    negative_spans: Vec<i32>,
    negative_buckets: Vec<u64>,
    positive_spans: Vec<i32>,
    positive_buckets: Vec<u64>,
    reset_hint: String,
    custom_values: Vec<u64>,
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn flat(spans: &[BucketSpan]) -> Vec<i32> {
    spans
        .iter()
        .flat_map(|s| [s.offset, s.length as i32])
        .collect()
}

/// What SQL must return for `h`: integer counts as `u64 as f64`.
fn expected(h: &Histogram) -> Row {
    let as_float = |v: &[u64]| v.iter().map(|&c| (c as f64).to_bits()).collect();
    let (is_float, count, zero_count, negative_buckets, positive_buckets) = match &h.counts {
        HistogramCounts::Integer {
            count,
            zero_count,
            negative,
            positive,
        } => (
            false,
            (*count as f64).to_bits(),
            (*zero_count as f64).to_bits(),
            as_float(negative),
            as_float(positive),
        ),
        HistogramCounts::Float {
            count,
            zero_count,
            negative,
            positive,
        } => (
            true,
            count.to_bits(),
            zero_count.to_bits(),
            bits(negative),
            bits(positive),
        ),
    };
    Row {
        ms: h.timestamp,
        is_float,
        count,
        sum: h.sum.to_bits(),
        schema: h.schema,
        zero_threshold: h.zero_threshold.to_bits(),
        zero_count,
        negative_spans: flat(&h.negative_spans),
        negative_buckets,
        positive_spans: flat(&h.positive_spans),
        positive_buckets,
        reset_hint: h.reset_hint.name().to_string(),
        custom_values: bits(&h.custom_values),
    }
}

fn sql_rows(c: &mut postgres::Client, encoded: &histogram_codec::EncodedHistograms) -> Vec<Row> {
    c.query(
        "SELECT (extract(epoch FROM sample_time) * 1000)::int8, is_float, count, sum, schema,
                zero_threshold, zero_count, negative_spans, negative_buckets, positive_spans,
                positive_buckets, reset_hint, custom_values
           FROM promgres.histogram_samples($1, $2)",
        &[&encoded.data, &encoded.floats],
    )
    .expect("histogram_samples")
    .iter()
    .map(|r| Row {
        ms: r.get(0),
        is_float: r.get(1),
        count: r.get::<_, f64>(2).to_bits(),
        sum: r.get::<_, f64>(3).to_bits(),
        schema: r.get(4),
        zero_threshold: r.get::<_, f64>(5).to_bits(),
        zero_count: r.get::<_, f64>(6).to_bits(),
        negative_spans: r.get(7),
        negative_buckets: bits(&r.get::<_, Vec<f64>>(8)),
        positive_spans: r.get(9),
        positive_buckets: bits(&r.get::<_, Vec<f64>>(10)),
        reset_hint: r.get(11),
        custom_values: bits(&r.get::<_, Vec<f64>>(12)),
    })
    .collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn float(&mut self) -> f64 {
        match self.below(12) {
            0 => f64::from_bits(STALE),
            1 => -0.0,
            2 => f64::INFINITY,
            3 => f64::from_bits(self.next()),
            _ => self.below(1 << 20) as f64 / 64.0,
        }
    }
}

fn random_spans(rng: &mut Rng) -> Vec<BucketSpan> {
    (0..rng.below(4))
        .map(|_| BucketSpan {
            offset: rng.below(11) as i32 - 5,
            length: rng.below(5) as u32,
        })
        .collect()
}

fn buckets(spans: &[BucketSpan]) -> usize {
    spans.iter().map(|s| s.length as usize).sum()
}

/// A new layout and counts: integer (sometimes past 2^63) or float, exponential or custom.
fn fresh(rng: &mut Rng, timestamp: i64) -> Histogram {
    let custom = rng.below(5) == 0;
    let negative_spans = if custom {
        Vec::new()
    } else {
        random_spans(rng)
    };
    let positive_spans = random_spans(rng);
    let (n_neg, n_pos) = (buckets(&negative_spans), buckets(&positive_spans));
    let counts = if rng.below(3) == 0 {
        HistogramCounts::Float {
            count: rng.float(),
            zero_count: rng.float(),
            negative: (0..n_neg).map(|_| rng.float()).collect(),
            positive: (0..n_pos).map(|_| rng.float()).collect(),
        }
    } else {
        let count = |rng: &mut Rng| match rng.below(10) {
            0 => rng.next(),
            _ => rng.below(1 << 30),
        };
        HistogramCounts::Integer {
            count: count(rng),
            zero_count: count(rng),
            negative: (0..n_neg).map(|_| count(rng)).collect(),
            positive: (0..n_pos).map(|_| count(rng)).collect(),
        }
    };
    Histogram {
        timestamp,
        schema: if custom {
            -53
        } else {
            rng.below(13) as i32 - 4
        },
        zero_threshold: if custom { 0.0 } else { rng.float() },
        sum: rng.float(),
        reset_hint: ResetHint::from_wire(rng.below(4) as i32),
        counts,
        negative_spans,
        positive_spans,
        custom_values: if custom {
            (0..rng.below(6)).map(|k| k as f64 * 0.5).collect()
        } else {
            Vec::new()
        },
    }
}

/// The previous histogram a scrape later: counts grow (or reset), the sum moves or not.
fn grown(rng: &mut Rng, prev: &Histogram, timestamp: i64) -> Histogram {
    let mut h = prev.clone();
    h.timestamp = timestamp;
    let reset = rng.below(20) == 0;
    match &mut h.counts {
        HistogramCounts::Integer {
            count,
            zero_count,
            negative,
            positive,
        } => {
            for c in [count, zero_count]
                .into_iter()
                .chain(negative.iter_mut())
                .chain(positive.iter_mut())
            {
                *c = if reset {
                    rng.below(5)
                } else {
                    c.wrapping_add(rng.below(100))
                };
            }
        }
        HistogramCounts::Float { positive, .. } => {
            positive.iter_mut().for_each(|c| *c = rng.float());
        }
    }
    if rng.below(3) != 0 {
        h.sum = rng.float();
    }
    h
}

fn random_series(rng: &mut Rng, n: usize) -> Vec<Histogram> {
    let mut out: Vec<Histogram> = Vec::with_capacity(n);
    let mut t = 1_765_000_000_000i64 - rng.below(1 << 40) as i64;
    for _ in 0..n {
        t += 1 + rng.below(30_000) as i64;
        let h = match out.last() {
            Some(prev) if rng.below(8) != 0 => grown(rng, prev, t),
            _ => fresh(rng, t),
        };
        out.push(h);
    }
    out
}

#[test]
fn sql_decodes_what_rust_encodes_to_the_bit() {
    let db = TestDb::new("histcodec");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut histograms = 0;
    for round in 0..12 {
        let n = if round == 0 {
            1
        } else {
            rng.below(80) as usize
        };
        let series = random_series(&mut rng, n);
        let encoded = histogram_codec::encode(&series);
        let decoded = histogram_codec::decode(&encoded.data, &encoded.floats).expect("decodes");
        let want: Vec<Row> = decoded.iter().map(expected).collect();
        assert_eq!(want, series.iter().map(expected).collect::<Vec<_>>());
        assert_eq!(sql_rows(&mut c, &encoded), want, "round {round}");
        histograms += n;
    }
    assert!(histograms > 300, "{histograms}");
    let empty = histogram_codec::encode(&[]);
    assert!(sql_rows(&mut c, &empty).is_empty());
}

#[test]
fn sql_rejects_cut_chunks_with_a_clear_error() {
    let db = TestDb::new("histcut");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    let mut rng = Rng(99);
    let encoded = histogram_codec::encode(&random_series(&mut rng, 30));
    for cut in 0..encoded.data.len() {
        let cut_data = histogram_codec::EncodedHistograms {
            data: encoded.data[..cut].to_vec(),
            floats: encoded.floats.clone(),
        };
        let err = c
            .query(
                "SELECT * FROM promgres.histogram_samples($1, $2)",
                &[&cut_data.data, &cut_data.floats],
            )
            .expect_err("a cut chunk is an error");
        let message = err.as_db_error().map(|e| e.message().to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.starts_with("corrupt histogram chunk")),
            "cut at {cut}: {err:?}"
        );
    }
    for cut in 0..encoded.floats.len() {
        let err = c
            .query(
                "SELECT * FROM promgres.histogram_samples($1, $2)",
                &[&encoded.data, &encoded.floats[..cut].to_vec()],
            )
            .expect_err("missing floats are an error");
        assert!(format!("{err:?}").contains("corrupt histogram chunk: cut short"));
    }
}

#[test]
fn sql_decodes_a_realistic_chunk_fast_enough() {
    let db = TestDb::new("histrate");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    // Two hours at 15 s of a 20-bucket latency histogram, ~150 observations a scrape.
    let mut rng = Rng(42);
    let spans = vec![
        BucketSpan {
            offset: -6,
            length: 12,
        },
        BucketSpan {
            offset: 1,
            length: 8,
        },
    ];
    let mut positive = vec![0u64; 20];
    let (mut count, mut sum) = (0u64, 0.0);
    let mut t = 1_765_000_000_000i64;
    let mut series = Vec::new();
    for _ in 0..480 {
        t += 15_000 + rng.below(5) as i64 - 2;
        for (i, b) in positive.iter_mut().enumerate() {
            let weight = 20 - (i as i64 - 9).unsigned_abs();
            let add = rng.below(weight * weight / 8 + 1);
            *b += add;
            count += add;
            sum += add as f64 * 0.0123 * (i + 1) as f64;
        }
        series.push(Histogram {
            timestamp: t,
            schema: 3,
            zero_threshold: 2.938735877055719e-39,
            sum,
            reset_hint: ResetHint::No,
            counts: HistogramCounts::Integer {
                count,
                zero_count: 0,
                negative: Vec::new(),
                positive: positive.clone(),
            },
            negative_spans: Vec::new(),
            positive_spans: spans.clone(),
            custom_values: Vec::new(),
        });
    }
    let encoded = histogram_codec::encode(&series);
    let bytes = encoded.data.len() + 8 * encoded.floats.len();
    assert_eq!(
        sql_rows(&mut c, &encoded),
        series.iter().map(expected).collect::<Vec<_>>()
    );
    // Printed for reference only: speed is measured by `make bench`, never asserted.
    let rounds = 10;
    let started = Instant::now();
    for _ in 0..rounds {
        let n: i64 = c
            .query_one(
                "SELECT count(positive_buckets) FROM promgres.histogram_samples($1, $2)",
                &[&encoded.data, &encoded.floats],
            )
            .expect("decode")
            .get(0);
        assert_eq!(n, 480);
    }
    let rate = (rounds * 480) as f64 / started.elapsed().as_secs_f64();
    println!(
        "480 histograms of 20 buckets: {bytes} bytes ({:.1} a histogram); SQL decodes {rate:.0} histograms/s",
        bytes as f64 / 480.0
    );
}

/// (lower, upper, count) of every bucket `histogram_buckets` returns.
fn sql_buckets(c: &mut postgres::Client, h: &Histogram) -> Vec<(f64, f64, f64)> {
    let row = expected(h);
    c.query(
        "SELECT lower, upper, count FROM promgres.histogram_buckets($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &h.schema,
            &h.zero_threshold,
            &f64::from_bits(row.zero_count),
            &row.negative_spans,
            &row.negative_buckets.iter().map(|&b| f64::from_bits(b)).collect::<Vec<_>>(),
            &row.positive_spans,
            &row.positive_buckets.iter().map(|&b| f64::from_bits(b)).collect::<Vec<_>>(),
            &h.custom_values,
        ],
    )
    .expect("histogram_buckets")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn integer_histogram(
    schema: i32,
    zero_threshold: f64,
    zero_count: u64,
    negative: (&[BucketSpan], Vec<u64>),
    positive: (&[BucketSpan], Vec<u64>),
) -> Histogram {
    Histogram {
        timestamp: 0,
        schema,
        zero_threshold,
        sum: 0.0,
        reset_hint: ResetHint::Unknown,
        counts: HistogramCounts::Integer {
            count: 0,
            zero_count,
            negative: negative.1,
            positive: positive.1,
        },
        negative_spans: negative.0.to_vec(),
        positive_spans: positive.0.to_vec(),
        custom_values: Vec::new(),
    }
}

fn span(offset: i32, length: u32) -> BucketSpan {
    BucketSpan { offset, length }
}

fn assert_buckets(got: Vec<(f64, f64, f64)>, want: &[(f64, f64, f64)]) {
    let as_bits = |v: &[(f64, f64, f64)]| -> Vec<(u64, u64, u64)> {
        v.iter()
            .map(|(a, b, c)| (a.to_bits(), b.to_bits(), c.to_bits()))
            .collect()
    };
    assert_eq!(as_bits(&got), as_bits(want), "{got:?} vs {want:?}");
}

#[test]
fn buckets_have_prometheus_bounds() {
    let db = TestDb::new("histbuckets");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();

    // Schema 0: bucket i is (2^(i-1), 2^i]; negative ones mirrored, most negative first.
    let h = integer_histogram(
        0,
        0.001,
        7,
        (&[span(-1, 2)], vec![1, 2]),
        (&[span(0, 2), span(1, 1)], vec![3, 4, 5]),
    );
    assert_buckets(
        sql_buckets(&mut c, &h),
        &[
            (-1.0, -0.5, 2.0),
            (-0.5, -0.25, 1.0),
            (-0.001, 0.001, 7.0),
            (0.5, 1.0, 3.0),
            (1.0, 2.0, 4.0),
            (4.0, 8.0, 5.0),
        ],
    );

    // Schema 3: bounds 2^(i/8) from Prometheus's table (generic.go, exponentialBounds[3]);
    // a zero bucket with count 0 is left out, and a bound inside it moves to its edge.
    const SCHEMA3: [f64; 8] = [
        0.5,
        0.5452538663326288,
        0.5946035575013605,
        0.6484197773255048,
        0.7071067811865475,
        0.7711054127039704,
        0.8408964152537144,
        0.9170040432046711,
    ];
    let bound = |i: i32| SCHEMA3[i.rem_euclid(8) as usize] * 2f64.powi(i.div_euclid(8) + 1);
    let h = integer_histogram(
        3,
        0.0,
        0,
        (&[span(7, 1)], vec![9]),
        (&[span(-9, 2), span(8, 1), span(10, 1)], vec![1, 2, 3, 4]),
    );
    assert_buckets(
        sql_buckets(&mut c, &h),
        &[
            (-bound(7), -bound(6), 9.0),
            (bound(-10), bound(-9), 1.0),
            (bound(-9), bound(-8), 2.0),
            (bound(0), bound(1), 3.0),
            (bound(11), bound(12), 4.0),
        ],
    );
    assert_eq!(bound(1), 1.0905077326652577);
    let mut clamped = h.clone();
    clamped.zero_threshold = 0.45;
    let got = sql_buckets(&mut c, &clamped);
    assert_eq!(got[1], (0.45, bound(-9), 1.0));
    assert_eq!(got[2].0, bound(-9));

    // Custom buckets: bucket i is (custom[i-1], custom[i]], from -Inf and to +Inf.
    let mut h = integer_histogram(
        -53,
        0.0,
        0,
        (&[], Vec::new()),
        (&[span(0, 2), span(1, 2)], vec![5, 6, 7, 8]),
    );
    h.custom_values = vec![0.1, 0.5, 1.0, 2.5];
    assert_buckets(
        sql_buckets(&mut c, &h),
        &[
            (f64::NEG_INFINITY, 0.1, 5.0),
            (0.1, 0.5, 6.0),
            (1.0, 2.5, 7.0),
            (2.5, f64::INFINITY, 8.0),
        ],
    );

    // The last finite bucket ends at the largest float, as Prometheus has it.
    let h = integer_histogram(0, 0.0, 0, (&[], Vec::new()), (&[span(1023, 2)], vec![1, 1]));
    assert_buckets(
        sql_buckets(&mut c, &h),
        &[
            (2f64.powi(1022), 2f64.powi(1023), 1.0),
            (2f64.powi(1023), f64::MAX, 1.0),
        ],
    );
}
