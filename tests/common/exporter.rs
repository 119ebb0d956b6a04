//! A test exporter serving the protobuf exposition format (varint-delimited
//! `io.prometheus.client.MetricFamily` messages) that Prometheus asks for with
//! `--enable-feature=native-histograms`: two native histograms (schemas 0 and 3, with zero,
//! positive and negative buckets), a counter with an exemplar and a gauge, all growing
//! deterministically with the number of scrapes served, so what a scrape served can be told
//! from its count alone.
//!
//! Field numbers follow prometheus/client_model `io/prometheus/client/metrics.proto`.
//! Prometheus 2.42 parses native histograms from the integer (delta) fields only when
//! `sample_count_float` and `zero_count_float` are 0, and takes a native histogram's
//! exemplar from the classic `bucket` list (one per scrape), so the histograms carry one
//! classic bucket holding nothing but an exemplar.
#![allow(dead_code)]

use prost::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    /// COUNTER 0, GAUGE 1, SUMMARY 2, UNTYPED 3, HISTOGRAM 4, GAUGE_HISTOGRAM 5.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

pub const COUNTER: i32 = 0;
pub const GAUGE: i32 = 1;
pub const HISTOGRAM: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
    #[prost(int64, tag = "6")]
    pub timestamp_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(message, optional, tag = "2")]
    pub exemplar: Option<Exemplar>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "4")]
    pub sample_count_float: f64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(double, tag = "8")]
    pub zero_count_float: f64,
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    #[prost(double, repeated, tag = "11")]
    pub negative_count: Vec<f64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
    #[prost(double, repeated, tag = "14")]
    pub positive_count: Vec<f64>,
    /// Newer client_model only; Prometheus 2.42 ignores it (exemplars come from `bucket`).
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<Exemplar>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The native histogram families' name; its two series differ by the `schema` label.
pub const HISTOGRAM_NAME: &str = "test_latency_seconds";
pub const COUNTER_NAME: &str = "test_requests_total";
pub const GAUGE_NAME: &str = "test_temperature_celsius";
/// The schemas served, one series each.
pub const SCHEMAS: [i32; 2] = [0, 3];

/// One native histogram as served: absolute bucket counts, spans as (offset, length).
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub negative_spans: Vec<(i32, u32)>,
    pub negative: Vec<u64>,
    pub positive_spans: Vec<(i32, u32)>,
    pub positive: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// The histogram of `schema` served at scrape `n` (from 1). Every bucket count is at least 1
/// and the spans are compact (no empty span, no zero gap between spans), so Prometheus'
/// `Compact(0)` leaves them as they are and they must be stored exactly so.
pub fn served_histogram(schema: i32, n: u64) -> Served {
    let (zero_threshold, negative_spans, negative, positive_spans, positive) = match schema {
        0 => (
            0.001,
            vec![(0, 2)],
            vec![n, 2 * n + 1],
            vec![(-2, 3), (2, 2)],
            vec![n + 1, 3 * n, 2 * n + 2, n + 3, 5 * n],
        ),
        _ => (
            0.0001,
            vec![(5, 2)],
            vec![n, n + 4],
            vec![(-8, 4), (3, 3)],
            vec![n, 2 * n, 3 * n, n + 1, 4 * n + 1, n + 2, 2 * n + 3],
        ),
    };
    let zero_count = n;
    let count = zero_count + negative.iter().sum::<u64>() + positive.iter().sum::<u64>();
    Served {
        schema,
        zero_threshold,
        zero_count,
        negative_spans,
        negative,
        positive_spans,
        positive,
        count,
        sum: n as f64 * 0.1 + 1.5 + f64::from(schema),
    }
}

/// The scrape that served `schema`'s histogram with this count, if any did.
pub fn scrape_of_count(schema: i32, count: u64) -> Option<u64> {
    (1..100_000).find(|&n| served_histogram(schema, n).count == count)
}

/// The counter's value at scrape `n`.
pub fn counter_value(n: u64) -> f64 {
    10.0 * n as f64 + 0.5
}

/// The gauge's value at scrape `n`.
pub fn gauge_value(n: u64) -> f64 {
    20.0 + n as f64 * 0.25
}

/// The counter exemplar's trace id at scrape `n`.
pub fn trace_id(n: u64) -> String {
    format!("{n:016x}")
}

/// The histogram exemplar's trace id at scrape `n`.
pub fn histogram_trace_id(n: u64) -> String {
    format!("h{n:015x}")
}

fn deltas(absolute: &[u64]) -> Vec<i64> {
    let mut previous = 0i64;
    absolute
        .iter()
        .map(|&c| {
            let c = c as i64;
            let d = c - previous;
            previous = c;
            d
        })
        .collect()
}

fn spans(spans: &[(i32, u32)]) -> Vec<BucketSpan> {
    spans
        .iter()
        .map(|&(offset, length)| BucketSpan { offset, length })
        .collect()
}

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.into(),
        value: value.into(),
    }
}

fn now_timestamp() -> Timestamp {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    // Whole milliseconds: Prometheus keeps exemplar times in ms.
    Timestamp {
        seconds: now.as_secs() as i64,
        nanos: (now.subsec_millis() * 1_000_000) as i32,
    }
}

/// The body of scrape `n`: the families, each varint-length-delimited.
pub fn scrape_body(n: u64) -> Vec<u8> {
    let histograms = SCHEMAS
        .iter()
        .map(|&schema| {
            let s = served_histogram(schema, n);
            Metric {
                label: vec![label("schema", &schema.to_string())],
                histogram: Some(Histogram {
                    sample_count: s.count,
                    sample_sum: s.sum,
                    schema,
                    zero_threshold: s.zero_threshold,
                    zero_count: s.zero_count,
                    negative_span: spans(&s.negative_spans),
                    negative_delta: deltas(&s.negative),
                    positive_span: spans(&s.positive_spans),
                    positive_delta: deltas(&s.positive),
                    bucket: vec![Bucket {
                        cumulative_count: s.count,
                        upper_bound: f64::INFINITY,
                        exemplar: Some(Exemplar {
                            label: vec![label("trace_id", &histogram_trace_id(n))],
                            value: 0.5 + f64::from(schema),
                            timestamp: Some(now_timestamp()),
                        }),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let families = [
        MetricFamily {
            name: HISTOGRAM_NAME.into(),
            help: "Latency as native histograms.".into(),
            r#type: HISTOGRAM,
            metric: histograms,
        },
        MetricFamily {
            name: COUNTER_NAME.into(),
            help: "Requests, with a trace exemplar.".into(),
            r#type: COUNTER,
            metric: vec![Metric {
                label: vec![label("code", "200")],
                counter: Some(Counter {
                    value: counter_value(n),
                    exemplar: Some(Exemplar {
                        label: vec![label("trace_id", &trace_id(n))],
                        value: 0.001 * n as f64 + 0.25,
                        timestamp: Some(now_timestamp()),
                    }),
                }),
                ..Default::default()
            }],
        },
        MetricFamily {
            name: GAUGE_NAME.into(),
            help: "A gauge.".into(),
            r#type: GAUGE,
            metric: vec![Metric {
                gauge: Some(Gauge {
                    value: gauge_value(n),
                }),
                ..Default::default()
            }],
        },
    ];
    let mut body = Vec::new();
    for family in &families {
        family
            .encode_length_delimited(&mut body)
            .expect("encode into a Vec");
    }
    body
}

/// The exporter: one thread on 127.0.0.1, one request per connection; stopped on drop.
pub struct Exporter {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    refused: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const PROTOBUF_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

impl Exporter {
    pub fn start() -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the exporter");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("exporter addr");
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (s, n, r) = (stop.clone(), scrapes.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: a test that forgets to stop it does not leave it running forever.
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &n, &r),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Exporter {
            addr,
            stop,
            scrapes,
            refused,
            thread: Some(thread),
        }
    }

    /// How many scrapes were served.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }

    /// The Accept headers of requests refused for not asking for the protobuf format.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().expect("refused").clone()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, scrapes: &AtomicU64, refused: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => head.extend_from_slice(&buf[..k]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let accept = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let answer = if accept.contains("application/vnd.google.protobuf") {
        let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let body = scrape_body(n);
        let mut a = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(&body);
        a
    } else {
        refused.lock().expect("refused").push(accept);
        b"HTTP/1.1 406 Not Acceptable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    };
    let _ = stream.write_all(&answer);
    let _ = stream.flush();
}
