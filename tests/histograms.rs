//! Native histograms and exemplars, remote write 1.0 and 2.0, over real HTTP into a real
//! PostgreSQL: stored exactly once, bit-exact, before and after compaction, read back through
//! SQL and remote read (SAMPLES and STREAMED), refused whole when malformed, and reported in
//! the `X-Prometheus-Remote-Write-*-Written` headers, also when HA keeps them back.

mod common;

use common::*;
use promgres::proto::{
    self, v2, BucketSpan, ChunkedReadResponse, HistogramCount, LabelMatcher, Query, ReadRequest,
    ReadResponse, TimeSeries,
};
use prost::Message;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// An integer histogram of schema 0: zero bucket, buckets 0, 1 and 5 positive, -1 negative,
/// counts growing with `base`.
fn int_histogram(t: i64, base: u64) -> proto::Histogram {
    let positive = [base + 1, base + 2, base + 1];
    let negative = [1u64];
    let zero = 2 + base;
    let count = zero + positive.iter().sum::<u64>() + negative.iter().sum::<u64>();
    proto::Histogram {
        count: Some(HistogramCount::Int(count)),
        sum: 10.5 + base as f64,
        schema: 0,
        zero_threshold: 0.001,
        zero_count: Some(HistogramCount::Int(zero)),
        negative_spans: vec![BucketSpan {
            offset: -1,
            length: 1,
        }],
        negative_deltas: deltas(&negative),
        negative_counts: vec![],
        positive_spans: vec![
            BucketSpan {
                offset: 0,
                length: 2,
            },
            BucketSpan {
                offset: 3,
                length: 1,
            },
        ],
        positive_deltas: deltas(&positive),
        positive_counts: vec![],
        reset_hint: 2,
        timestamp: t,
        custom_values: vec![],
        start_timestamp: 0,
    }
}

fn deltas(counts: &[u64]) -> Vec<i64> {
    let mut prev = 0i64;
    counts
        .iter()
        .map(|&c| {
            let d = c as i64 - prev;
            prev = c as i64;
            d
        })
        .collect()
}

/// A float histogram of schema 3 (a gauge histogram), sum -0.0; `stale` makes its sum the
/// stale marker, as Prometheus writes when the series disappears.
fn float_histogram(t: i64, stale: bool) -> proto::Histogram {
    proto::Histogram {
        count: Some(HistogramCount::Float(4.25)),
        sum: if stale {
            f64::from_bits(STALE_NAN)
        } else {
            -0.0
        },
        schema: 3,
        zero_threshold: 0.0,
        zero_count: Some(HistogramCount::Float(0.5)),
        negative_spans: vec![],
        negative_deltas: vec![],
        negative_counts: vec![],
        positive_spans: vec![BucketSpan {
            offset: 1,
            length: 2,
        }],
        positive_deltas: vec![],
        positive_counts: vec![1.5, 2.25],
        reset_hint: 3,
        timestamp: t,
        custom_values: vec![],
        start_timestamp: 0,
    }
}

fn exemplar(trace: &str, value: f64, t: i64) -> proto::Exemplar {
    proto::Exemplar {
        labels: labels(&[("trace_id", trace)]),
        value,
        timestamp: t,
    }
}

fn ts(pairs: &[(&str, &str)]) -> TimeSeries {
    TimeSeries {
        labels: labels(pairs),
        ..TimeSeries::default()
    }
}

/// A 1.0 request like Prometheus sends with `send_native_histograms` and `send_exemplars`:
/// histogram series, a float series with exemplars, and exemplars in a series of their own.
fn v1_request(t0: i64) -> proto::WriteRequest {
    let mut latency = ts(&[("__name__", "rpc_latency_seconds"), ("job", "api")]);
    latency.histograms = (0..3)
        .map(|i| int_histogram(t0 + i * 15_000, i as u64))
        .collect();
    let mut queue = ts(&[("__name__", "queue_depth_histogram"), ("job", "api")]);
    queue.histograms = vec![
        float_histogram(t0, false),
        float_histogram(t0 + 15_000, true),
    ];
    let mut requests = ts(&[("__name__", "rpc_requests_total"), ("job", "api")]);
    requests.samples = vec![
        proto::Sample {
            value: 7.0,
            timestamp: t0,
        },
        proto::Sample {
            value: 9.0,
            timestamp: t0 + 15_000,
        },
    ];
    let mut requests_exemplars = ts(&[("__name__", "rpc_requests_total"), ("job", "api")]);
    requests_exemplars.exemplars = vec![
        exemplar("4bf92f3577b34da6", 1.0, t0 + 1),
        exemplar("00f067aa0ba902b7", 1.0, t0 + 15_001),
    ];
    let mut no_labels = ts(&[("__name__", "rpc_latency_seconds"), ("job", "api")]);
    no_labels.exemplars = vec![proto::Exemplar {
        labels: vec![],
        value: 0.25,
        timestamp: t0 + 2,
    }];
    proto::WriteRequest {
        timeseries: vec![latency, queue, requests, requests_exemplars, no_labels],
        metadata: vec![],
    }
}

fn written(reply: &Reply) -> (String, String, String) {
    let h = |n: &str| {
        reply
            .header(&format!("X-Prometheus-Remote-Write-{n}-Written"))
            .unwrap_or("missing")
            .to_string()
    };
    (h("Samples"), h("Histograms"), h("Exemplars"))
}

fn counts(s: usize, h: usize, e: usize) -> (String, String, String) {
    (s.to_string(), h.to_string(), e.to_string())
}

/// Every stored histogram as (metric, ms, proto form), from the SQL view, sorted.
fn sql_histograms(client: &mut postgres::Client) -> Vec<(String, i64, proto::Histogram)> {
    let rows = client
        .query(
            "SELECT s.metric, (extract(epoch FROM h.time) * 1000)::int8, h.is_float, h.count,
                    h.sum, h.schema, h.zero_threshold, h.zero_count, h.negative_spans,
                    h.negative_buckets, h.positive_spans, h.positive_buckets, h.reset_hint,
                    h.custom_values
               FROM prom_histograms h JOIN prom_series s USING (series_id)
              ORDER BY 1, 2",
            &[],
        )
        .expect("prom_histograms");
    rows.iter()
        .map(|r| {
            let is_float: bool = r.get(2);
            let spans = |v: Vec<i32>| -> Vec<BucketSpan> {
                v.chunks(2)
                    .map(|p| BucketSpan {
                        offset: p[0],
                        length: p[1] as u32,
                    })
                    .collect()
            };
            let count = |v: f64| {
                if is_float {
                    HistogramCount::Float(v)
                } else {
                    HistogramCount::Int(v as u64)
                }
            };
            let neg: Vec<f64> = r.get(9);
            let pos: Vec<f64> = r.get(11);
            let as_deltas = |v: &[f64]| deltas(&v.iter().map(|&x| x as u64).collect::<Vec<u64>>());
            let hint = match r.get::<_, String>(12).as_str() {
                "yes" => 1,
                "no" => 2,
                "gauge" => 3,
                _ => 0,
            };
            let h = proto::Histogram {
                count: Some(count(r.get(3))),
                sum: r.get(4),
                schema: r.get(5),
                zero_threshold: r.get(6),
                zero_count: Some(count(r.get(7))),
                negative_spans: spans(r.get(8)),
                negative_deltas: if is_float { vec![] } else { as_deltas(&neg) },
                negative_counts: if is_float { neg.clone() } else { vec![] },
                positive_spans: spans(r.get(10)),
                positive_deltas: if is_float { vec![] } else { as_deltas(&pos) },
                positive_counts: if is_float { pos.clone() } else { vec![] },
                reset_hint: hint,
                timestamp: r.get(1),
                custom_values: r.get(13),
                start_timestamp: 0,
            };
            (r.get(0), r.get(1), h)
        })
        .collect()
}

/// Bits of every float in a histogram, so NaN payloads and -0.0 compare as what they are.
fn bits(h: &proto::Histogram) -> Vec<u64> {
    let c = |x: &Option<HistogramCount>| match x {
        Some(HistogramCount::Float(f)) => f.to_bits(),
        Some(HistogramCount::Int(i)) => *i,
        None => 0,
    };
    let mut out = vec![
        c(&h.count),
        h.sum.to_bits(),
        h.zero_threshold.to_bits(),
        c(&h.zero_count),
    ];
    out.extend(h.negative_counts.iter().map(|f| f.to_bits()));
    out.extend(h.positive_counts.iter().map(|f| f.to_bits()));
    out.extend(h.custom_values.iter().map(|f| f.to_bits()));
    out
}

fn assert_same(got: &[(String, i64, proto::Histogram)], want: &[(String, i64, proto::Histogram)]) {
    assert_eq!(
        got.len(),
        want.len(),
        "histogram count\n got {got:?}\nwant {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.0, g.1), (&w.0, w.1));
        assert_eq!(bits(&g.2), bits(&w.2), "bits of {} at {}", g.0, g.1);
        let (mut g2, mut w2) = (g.2.clone(), w.2.clone());
        g2.sum = 0.0;
        w2.sum = 0.0;
        assert_eq!(g2, w2, "{} at {}", g.0, g.1);
    }
}

/// What `v1_request` sent, as the SQL view should show it, sorted like it.
fn expected(req: &proto::WriteRequest) -> Vec<(String, i64, proto::Histogram)> {
    let mut out: Vec<(String, i64, proto::Histogram)> = req
        .timeseries
        .iter()
        .flat_map(|s| {
            let metric = s
                .labels
                .iter()
                .find(|l| l.name == "__name__")
                .map(|l| l.value.clone())
                .unwrap_or_default();
            s.histograms
                .iter()
                .map(move |h| (metric.clone(), h.timestamp, h.clone()))
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn exemplars(client: &mut postgres::Client) -> Vec<(String, i64, u64, String)> {
    client
        .query(
            "SELECT s.metric, (extract(epoch FROM e.time) * 1000)::int8, e.value,
                    e.exemplar_labels::text
               FROM prom_exemplars e JOIN prom_series s USING (series_id) ORDER BY 1, 2",
            &[],
        )
        .expect("prom_exemplars")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, f64>(2).to_bits(), r.get(3)))
        .collect()
}

fn read_body(start: i64, end: i64, metric: &str, streamed: bool) -> Vec<u8> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: metric.into(),
            }],
        }],
        accepted_response_types: if streamed { vec![1, 0] } else { vec![0] },
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

const READ_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

/// Remote read of one metric (streamed or SAMPLES): the answer's body, after a 200.
fn read_answer(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    metric: &str,
    streamed: bool,
) -> Vec<u8> {
    let r = exchange(
        addr,
        "POST",
        "/read",
        READ_HEADERS,
        &read_body(start, end, metric, streamed),
        None,
    )
    .expect("read");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.body
}

/// Remote read (SAMPLES) of one metric: the series of the answer.
fn read_samples_answer(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    metric: &str,
) -> Vec<TimeSeries> {
    let body = read_answer(addr, start, end, metric, false);
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("snappy");
    ReadResponse::decode(raw.as_slice())
        .expect("ReadResponse")
        .results
        .into_iter()
        .flat_map(|q| q.timeseries)
        .collect()
}

/// Remote read (SAMPLES) of one metric's float samples, as (ms, value bits).
fn read_float_samples(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    metric: &str,
) -> Vec<(i64, u64)> {
    read_samples_answer(addr, start, end, metric)
        .into_iter()
        .flat_map(|s| s.samples)
        .map(|x| (x.timestamp, x.value.to_bits()))
        .collect()
}

/// Remote read (SAMPLES) of one metric's histograms, as (metric, ms, histogram).
fn read_histograms(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    metric: &str,
) -> Vec<(String, i64, proto::Histogram)> {
    read_samples_answer(addr, start, end, metric)
        .into_iter()
        .flat_map(|s| s.histograms)
        .map(|h| (metric.to_string(), h.timestamp, h))
        .collect()
}

/// A streamed chunk's encoding, min and max time, and sample count.
type ChunkInfo = (i32, i64, i64, u16);

/// Remote read (STREAMED) of one metric: each chunk's (encoding, min, max, sample count) and
/// its histograms, decoded as Prometheus's chunk iterators do.
fn read_streamed_chunks(
    addr: std::net::SocketAddr,
    start: i64,
    end: i64,
    metric: &str,
) -> (Vec<ChunkInfo>, Vec<proto::Histogram>) {
    let body = read_answer(addr, start, end, metric, true);
    let mut out = Vec::new();
    let mut decoded = Vec::new();
    let mut rest = body.as_slice();
    while !rest.is_empty() {
        let (mut len, mut shift, mut used) = (0usize, 0, 0);
        for &b in rest {
            used += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        let message = &rest[used + 4..used + 4 + len];
        let frame = ChunkedReadResponse::decode(message).expect("frame");
        for s in frame.chunked_series {
            for c in s.chunks {
                let chunk = promgres::histogram_chunk::decode_chunk(c.r#type, &c.data)
                    .expect("a histogram chunk Prometheus can read");
                decoded.extend(chunk.histograms.iter().map(proto::Histogram::from));
                out.push((
                    c.r#type,
                    c.min_time_ms,
                    c.max_time_ms,
                    u16::from_be_bytes([c.data[0], c.data[1]]),
                ));
            }
        }
        rest = &rest[used + 4 + len..];
    }
    (out, decoded)
}

#[test]
fn remote_write_1_histograms_and_exemplars_round_trip_through_sql_and_remote_read() {
    // This test runs its own compaction passes.
    let run = Running::start_with("hist_v1", |c| c.compaction = false);
    // Older than the compaction cutoff (10-20 minutes back), as a sender catching up sends.
    let t0 = now_ms() - 40 * 60_000;
    let req = v1_request(t0);
    let reply = run.write(&req);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(written(&reply), counts(2, 5, 3));
    let mut c = run.db.client();
    let want = expected(&req);
    assert_same(&sql_histograms(&mut c), &want);
    let want_exemplars = vec![
        (
            "rpc_latency_seconds".to_string(),
            t0 + 2,
            0.25f64.to_bits(),
            "{}".to_string(),
        ),
        (
            "rpc_requests_total".to_string(),
            t0 + 1,
            1f64.to_bits(),
            r#"{"trace_id": "4bf92f3577b34da6"}"#.to_string(),
        ),
        (
            "rpc_requests_total".to_string(),
            t0 + 15_001,
            1f64.to_bits(),
            r#"{"trace_id": "00f067aa0ba902b7"}"#.to_string(),
        ),
    ];
    assert_eq!(exemplars(&mut c), want_exemplars);
    // The buckets with Prometheus's bounds: schema 0 buckets are powers of two.
    let buckets: Vec<(f64, f64, f64)> = c
        .query(
            "SELECT b.lower, b.upper, b.count FROM prom_histogram_buckets b
               JOIN prom_series s USING (series_id)
              WHERE s.metric = 'rpc_latency_seconds'
                AND b.time = timestamptz 'epoch' + $1::int8 * interval '1 millisecond'",
            &[&t0],
        )
        .expect("buckets")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        buckets,
        [
            (-0.5, -0.25, 1.0),
            (-0.001, 0.001, 2.0),
            (0.5, 1.0, 1.0),
            (1.0, 2.0, 2.0),
            (16.0, 32.0, 1.0)
        ]
    );
    let read = |metric| read_histograms(run.addr, t0 - 1, t0 + 60_000, metric);
    let mut from_read = read("queue_depth_histogram");
    from_read.extend(read("rpc_latency_seconds"));
    assert_same(&from_read, &want);

    // A resend is written (headers) and stored once.
    let again = run.write(&req);
    assert_eq!(again.status, 204, "{}", again.body);
    assert_eq!(written(&again), counts(2, 5, 3));
    assert_same(&sql_histograms(&mut c), &want);
    assert_eq!(exemplars(&mut c), want_exemplars);

    // Compaction folds every head histogram into its window's chunk; nothing changes to a reader.
    let folded = promgres::engine::histograms::compact(
        &mut c,
        promgres::engine::cutoff_ms(now_ms()),
        &mut || true,
    )
    .expect("compact");
    assert_eq!(folded.histograms, 5);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM promgres.histogram_head"),
        0
    );
    assert!(count(&mut c, "SELECT count(*) FROM promgres.histogram_chunks") >= 2);
    assert_same(&sql_histograms(&mut c), &want);
    let mut from_read = read("queue_depth_histogram");
    from_read.extend(read("rpc_latency_seconds"));
    assert_same(&from_read, &want);

    // After compaction a resend (same values) and a conflicting value for a stored time are
    // both dropped by the insert: the first value stays, each time once.
    assert_eq!(run.write(&req).status, 204);
    let mut conflict = ts(&[("__name__", "rpc_latency_seconds"), ("job", "api")]);
    conflict.histograms = vec![int_histogram(t0, 40), int_histogram(t0 + 45_000, 3)];
    let reply = run.write(&proto::WriteRequest {
        timeseries: vec![conflict],
        metadata: vec![],
    });
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(written(&reply), counts(0, 2, 0));
    let mut want_more = want.clone();
    want_more.push((
        "rpc_latency_seconds".into(),
        t0 + 45_000,
        int_histogram(t0 + 45_000, 3),
    ));
    want_more.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_same(&sql_histograms(&mut c), &want_more);
    // Folding the new one merges it into the existing chunk.
    let folded = promgres::engine::histograms::compact(
        &mut c,
        promgres::engine::cutoff_ms(now_ms()),
        &mut || true,
    )
    .expect("compact");
    assert_eq!(folded.histograms, 1);
    assert_same(&sql_histograms(&mut c), &want_more);

    // STREAMED: integer histograms in HISTOGRAM chunks, float ones in FLOAT_HISTOGRAM chunks.
    let (chunks, decoded) =
        read_streamed_chunks(run.addr, t0 - 1, t0 + 60_000, "rpc_latency_seconds");
    // Chunks carry a counter-reset header, not each histogram's hint: Prometheus's iterators
    // give "unknown" for a chunk's first histogram and "no" for the rest of a counter chunk.
    let streamed: Vec<(String, i64, proto::Histogram)> = decoded
        .into_iter()
        .map(|mut h| {
            h.reset_hint = 2;
            ("rpc_latency_seconds".to_string(), h.timestamp, h)
        })
        .collect();
    let latency: Vec<_> = want_more
        .iter()
        .filter(|w| w.0 == "rpc_latency_seconds")
        .cloned()
        .collect();
    assert_same(&streamed, &latency);
    assert_eq!(
        chunks.iter().map(|c| c.3 as usize).sum::<usize>(),
        4,
        "{chunks:?}"
    );
    assert!(chunks.iter().all(|c| c.0 == 2), "{chunks:?}");
    assert_eq!(chunks.first().map(|c| c.1), Some(t0));
    assert_eq!(chunks.last().map(|c| c.2), Some(t0 + 45_000));
    let (chunks, decoded) =
        read_streamed_chunks(run.addr, t0 - 1, t0 + 60_000, "queue_depth_histogram");
    assert!(chunks.iter().all(|c| c.0 == 3), "{chunks:?}");
    assert_eq!(chunks.iter().map(|c| c.3 as usize).sum::<usize>(), 2);
    // The live one as sent; the stale marker as Prometheus's iterator gives it: the sum only.
    assert_eq!(decoded.len(), 2);
    assert_eq!(bits(&decoded[0]), bits(&float_histogram(t0, false)));
    assert_eq!(decoded[1].sum.to_bits(), STALE_NAN);
}

/// Builds a 2.0 request's symbol table.
#[derive(Default)]
struct Symbols(Vec<String>);

impl Symbols {
    fn new() -> Self {
        Symbols(vec![String::new()])
    }
    fn r(&mut self, s: &str) -> u32 {
        if let Some(i) = self.0.iter().position(|x| x == s) {
            return i as u32;
        }
        self.0.push(s.to_string());
        (self.0.len() - 1) as u32
    }
    fn refs(&mut self, pairs: &[(&str, &str)]) -> Vec<u32> {
        pairs
            .iter()
            .flat_map(|(n, v)| [self.r(n), self.r(v)])
            .collect()
    }
}

const V2_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

fn post_v2_bytes(addr: std::net::SocketAddr, raw: &[u8], content_type: &str) -> Reply {
    let body = snap::raw::Encoder::new().compress_vec(raw).expect("snappy");
    request(
        addr,
        "POST",
        "/api/v1/write",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", content_type),
            ("User-Agent", "Prometheus/3.9.0"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ],
        &body,
    )
    .expect("write")
}

fn post_v2(addr: std::net::SocketAddr, req: &v2::Request) -> Reply {
    post_v2_bytes(addr, &req.encode_to_vec(), V2_TYPE)
}

/// A 2.0 request with every message and field: samples (one with a start timestamp), an
/// integer histogram (with a start timestamp), a float histogram, exemplars with and without
/// labels, metadata with help and unit, and the 2.54-3.8 created timestamp.
fn v2_request(t0: i64, extra: &[(&str, &str)]) -> v2::Request {
    let mut sym = Symbols::new();
    let with = |base: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = base
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        all.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        all.sort();
        all
    };
    let mut refs = |pairs: Vec<(String, String)>| -> Vec<u32> {
        let p: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        sym.refs(&p)
    };
    let requests_refs = refs(with(&[("__name__", "rpc_requests_total"), ("job", "api")]));
    let latency_refs = refs(with(&[("__name__", "rpc_latency_seconds"), ("job", "api")]));
    let queue_refs = refs(with(&[
        ("__name__", "queue_depth_histogram"),
        ("job", "api"),
    ]));
    let trace = sym.refs(&[("trace_id", "4bf92f3577b34da6")]);
    let help = sym.r("Requests served.");
    let unit = sym.r("requests");
    let lat_help = sym.r("RPC latency.");
    let seconds = sym.r("seconds");
    let mut int_h = int_histogram(t0, 0);
    int_h.start_timestamp = t0 - 3_600_000;
    v2::Request {
        symbols: Vec::new(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: requests_refs,
                samples: vec![
                    v2::Sample {
                        value: 7.0,
                        timestamp: t0,
                        start_timestamp: t0 - 3_600_000,
                    },
                    v2::Sample {
                        value: f64::from_bits(STALE_NAN),
                        timestamp: t0 + 15_000,
                        start_timestamp: 0,
                    },
                ],
                histograms: vec![],
                exemplars: vec![v2::Exemplar {
                    labels_refs: trace,
                    value: 1.0,
                    timestamp: t0 + 1,
                }],
                metadata: Some(v2::Metadata {
                    r#type: 1,
                    help_ref: help,
                    unit_ref: unit,
                }),
                created_timestamp: 0,
            },
            v2::TimeSeries {
                labels_refs: latency_refs,
                samples: vec![],
                histograms: vec![int_h, int_histogram(t0 + 15_000, 1)],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![],
                    value: 0.25,
                    timestamp: t0 + 2,
                }],
                metadata: Some(v2::Metadata {
                    r#type: 3,
                    help_ref: lat_help,
                    unit_ref: seconds,
                }),
                // Prometheus 2.54-3.8 put the created timestamp here.
                created_timestamp: t0 - 3_600_000,
            },
            v2::TimeSeries {
                labels_refs: queue_refs,
                samples: vec![],
                histograms: vec![
                    float_histogram(t0, false),
                    float_histogram(t0 + 15_000, true),
                ],
                exemplars: vec![],
                metadata: None,
                created_timestamp: 0,
            },
        ],
    }
    .with_symbols(sym.0)
}

trait WithSymbols {
    fn with_symbols(self, symbols: Vec<String>) -> Self;
}

impl WithSymbols for v2::Request {
    fn with_symbols(mut self, symbols: Vec<String>) -> Self {
        self.symbols = symbols;
        self
    }
}

#[test]
fn remote_write_2_every_message_and_field_round_trips() {
    let run = Running::start("hist_v2");
    let t0 = now_ms() - 5 * 60_000;
    let req = v2_request(t0, &[]);
    let reply = post_v2(run.addr, &req);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(written(&reply), counts(2, 4, 2));
    let mut c = run.db.client();
    // Float samples, bit-exact (the stale marker too).
    let samples = stored_samples(&mut c);
    assert_eq!(
        samples.iter().map(|s| (s.1 - t0, s.2)).collect::<Vec<_>>(),
        [(0, 7f64.to_bits()), (15_000, STALE_NAN)]
    );
    assert_eq!(
        read_float_samples(run.addr, t0 - 1, t0 + 60_000, "rpc_requests_total"),
        [(t0, 7f64.to_bits()), (t0 + 15_000, STALE_NAN)]
    );
    // Histograms as sent (the start timestamp is accepted, not stored).
    let mut want = vec![
        (
            "queue_depth_histogram".to_string(),
            t0,
            float_histogram(t0, false),
        ),
        (
            "queue_depth_histogram".to_string(),
            t0 + 15_000,
            float_histogram(t0 + 15_000, true),
        ),
        ("rpc_latency_seconds".to_string(), t0, int_histogram(t0, 0)),
        (
            "rpc_latency_seconds".to_string(),
            t0 + 15_000,
            int_histogram(t0 + 15_000, 1),
        ),
    ];
    want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_same(&sql_histograms(&mut c), &want);
    let mut from_read = read_histograms(run.addr, t0 - 1, t0 + 60_000, "queue_depth_histogram");
    from_read.extend(read_histograms(
        run.addr,
        t0 - 1,
        t0 + 60_000,
        "rpc_latency_seconds",
    ));
    assert_same(&from_read, &want);
    assert_eq!(
        exemplars(&mut c),
        vec![
            (
                "rpc_latency_seconds".to_string(),
                t0 + 2,
                0.25f64.to_bits(),
                "{}".to_string()
            ),
            (
                "rpc_requests_total".to_string(),
                t0 + 1,
                1f64.to_bits(),
                r#"{"trace_id": "4bf92f3577b34da6"}"#.to_string()
            ),
        ]
    );
    // Metadata lands where 1.0's does.
    let metadata: Vec<(String, String, String, String)> = c
        .query(
            "SELECT metric, type, help, unit FROM prom_metadata ORDER BY metric",
            &[],
        )
        .expect("metadata")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        metadata,
        [
            (
                "rpc_latency_seconds".to_string(),
                "histogram".to_string(),
                "RPC latency.".to_string(),
                "seconds".to_string()
            ),
            (
                "rpc_requests_total".to_string(),
                "counter".to_string(),
                "Requests served.".to_string(),
                "requests".to_string()
            ),
        ]
    );
    // A resend: everything written again, nothing stored twice.
    let again = post_v2(run.addr, &req);
    assert_eq!(again.status, 204, "{}", again.body);
    assert_eq!(written(&again), counts(2, 4, 2));
    assert_eq!(stored_samples(&mut c).len(), 2);
    assert_same(&sql_histograms(&mut c), &want);
}

#[test]
fn malformed_or_unsupported_2_0_requests_are_refused_whole() {
    let run = Running::start("hist_v2_bad");
    let t0 = now_ms() - 60_000;
    let good = v2_request(t0, &[]);
    let cases: Vec<(&str, v2::Request, u16)> = vec![
        (
            "first symbol not empty",
            {
                let mut r = good.clone();
                r.symbols[0] = "x".into();
                r
            },
            400,
        ),
        (
            "label ref out of range",
            {
                let mut r = good.clone();
                r.timeseries[0].labels_refs[1] = r.symbols.len() as u32;
                r
            },
            400,
        ),
        (
            "odd label refs",
            {
                let mut r = good.clone();
                r.timeseries[0].labels_refs.pop();
                r
            },
            400,
        ),
        (
            "exemplar ref out of range",
            {
                let mut r = good.clone();
                r.timeseries[0].exemplars[0].labels_refs[0] = 1_000_000;
                r
            },
            400,
        ),
        (
            "help ref out of range",
            {
                let mut r = good.clone();
                if let Some(m) = r.timeseries[0].metadata.as_mut() {
                    m.help_ref = u32::MAX;
                }
                r
            },
            400,
        ),
        (
            "no symbols",
            {
                let mut r = good.clone();
                r.symbols.clear();
                r
            },
            400,
        ),
        (
            "bucket counts and spans disagree",
            {
                let mut r = good.clone();
                r.timeseries[1].histograms[0].positive_deltas.pop();
                r
            },
            400,
        ),
    ];
    for (name, req, status) in cases {
        let reply = post_v2(run.addr, &req);
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        assert!(!reply.body.is_empty(), "{name}: an error says why");
    }
    // Unknown messages and media types: 415, naming what is supported.
    let raw = good.encode_to_vec();
    for content_type in [
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/json",
    ] {
        let reply = post_v2_bytes(run.addr, &raw, content_type);
        assert_eq!(reply.status, 415, "{content_type}: {}", reply.body);
        assert!(
            reply.body.contains("io.prometheus.write.v2.Request"),
            "{}",
            reply.body
        );
    }
    // A 2.0 body sent as 1.0 is not mistaken for samples.
    let reply = post_v2_bytes(run.addr, &raw, "application/x-protobuf");
    assert!(reply.status == 400 || reply.status == 204, "{}", reply.body);
    // Oversized: over --max-request-bytes decoded.
    let mut huge = good.clone();
    huge.symbols.push("x".repeat(40 << 20));
    let reply = post_v2(run.addr, &huge);
    assert_eq!(reply.status, 413, "{}", reply.body);
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_histograms"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_exemplars"), 0);
    // The 1.0 attempt above may have stored a series or two of garbage-free labels, but no
    // 2.0 refusal stored samples.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_samples p JOIN prom_series s USING (series_id)
              WHERE s.metric = 'rpc_requests_total'"
        ),
        0
    );
}

#[test]
fn ha_deduplicated_2_0_requests_report_everything_written() {
    let run = Running::start_with("hist_v2_ha", |c| {
        c.ha = Some(promgres::ha::HaConfig {
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            failover_timeout_ms: 30_000,
            interval_ms: 10_000,
            buffer_bytes: 1 << 20,
        })
    });
    let t0 = now_ms() - 60_000;
    let a = v2_request(t0, &[("__replica__", "a"), ("cluster", "prod")]);
    let b = v2_request(t0, &[("__replica__", "b"), ("cluster", "prod")]);
    let first = post_v2(run.addr, &a);
    assert_eq!(first.status, 204, "{}", first.body);
    assert_eq!(written(&first), counts(2, 4, 2));
    // The standby's identical request stores nothing and reports everything written.
    let standby = post_v2(run.addr, &b);
    assert_eq!(standby.status, 202, "{}", standby.body);
    assert_eq!(written(&standby), counts(2, 4, 2));
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_histograms"), 4);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_exemplars"), 2);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), 2);
    // One series per metric: the replica label is gone, the cluster label kept.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_series WHERE labels ? '__replica__' OR NOT labels ? 'cluster'"
        ),
        0
    );
}

#[test]
fn retention_deletes_old_histograms_and_exemplars_and_keeps_their_series_while_they_last() {
    let run = Running::start_with("hist_retention", |c| {
        c.compaction = false;
        c.retention = Some(std::time::Duration::from_secs(3 * 86_400));
        c.max_sample_age = std::time::Duration::from_secs(3 * 86_400);
    });
    let t0 = now_ms() - 40 * 60_000;
    assert_eq!(run.write(&v1_request(t0)).status, 204);
    let mut c = run.db.client();
    promgres::engine::histograms::compact(
        &mut c,
        promgres::engine::cutoff_ms(now_ms()),
        &mut || true,
    )
    .expect("compact");
    let mut late = ts(&[("__name__", "rpc_latency_seconds"), ("job", "api")]);
    late.histograms = vec![int_histogram(now_ms() - 60_000, 9)];
    assert_eq!(
        run.write(&proto::WriteRequest {
            timeseries: vec![late],
            metadata: vec![],
        })
        .status,
        204
    );
    let recent = |c: &mut postgres::Client| {
        [
            count(c, "SELECT count(*) FROM promgres.histogram_head"),
            count(c, "SELECT count(*) FROM promgres.histogram_chunks"),
            count(c, "SELECT count(*) FROM promgres.exemplars"),
        ]
    };
    let before = recent(&mut c);
    assert_eq!(before, [1, 2, 3]);
    // Rows from ten days ago (beyond the three days kept), and every series made old.
    c.batch_execute(
        "INSERT INTO promgres.histogram_head
              SELECT series_id, time - interval '10 days', data, floats FROM promgres.histogram_head;
         INSERT INTO promgres.histogram_chunks
              SELECT series_id, start_time - interval '10 days', end_time - interval '10 days',
                     samples, data, floats FROM promgres.histogram_chunks;
         INSERT INTO promgres.exemplars
              SELECT series_id, time - interval '10 days', value, labels FROM promgres.exemplars;
         UPDATE promgres.series SET created_at = now() - interval '30 days';",
    )
    .expect("age");
    let series = count(&mut c, "SELECT count(*) FROM prom_series");
    run.server().apply_retention_now();
    assert_eq!(
        recent(&mut c),
        before,
        "the old rows are gone, the recent stay"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_series"),
        series,
        "series with histograms or exemplars left are kept"
    );
    // A series whose histograms are all gone is removed like a float series.
    c.batch_execute(
        "DELETE FROM promgres.histogram_chunks c USING promgres.series s
          WHERE s.id = c.series_id AND s.labels->>'__name__' = 'queue_depth_histogram'",
    )
    .expect("delete");
    run.server().apply_retention_now();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_series"),
        series - 1
    );
}
